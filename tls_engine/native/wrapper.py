"""The wrapper's private Python names, each behind a function with a public fallback.

Private to tls_engine.native (the package re-exports these functions). The engine
needs them on every connection, so unlike the ctypes features they may not simply
switch off: each function uses the private name only after the self-check proved it
on this wheel (``selfcheck.wrapper_check``), and otherwise the public API, which does
the same job less directly:

=========================  =========================================  ===========================
function                   private name (python-mbedtls 2.10.1)       public fallback
=========================  =========================================  ===========================
feed(buffer, data)         ``TLSWrappedBuffer._input_buffer``          receive_from_network(),
                           (RingBuffer: ``maxlen``, ``len()``)         halving the piece on
                                                                       BufferError (the ring
                                                                       takes all or nothing)
take_outgoing(buffer)      ``TLSWrappedBuffer._output_buffer``         peek_outgoing() in
                           (``len()``)                                 pieces until empty
input_pending(buffer)      ``TLSWrappedBuffer._input_buffer``          None (unknown: the
                           (``len()``)                                 reader retries a few
                                                                       times instead)
handshake_over(buffer)     ``TLSWrappedBuffer._handshake_state``       ``cipher() is not None``
                                                                       (set when the first
                                                                       handshake wraps up)
ciphersuite_name(id)       ``mbedtls._tls._get_ciphersuite_name``      None (unknown)
ciphersuite_id(name)       ``mbedtls._tls._get_ciphersuite_id``        0 (unknown)
=========================  =========================================  ===========================

Without the suite registry only suites outside the EC2x table are affected: such an
id configured explicitly is refused as unknown, and a negotiated one (a library PSK
suite) is reported with cipher_id 0 (its name stays right). Everything else behaves
the same. The names are module constants so a test can make one "missing".
"""
from __future__ import annotations

INPUT_BUFFER = "_input_buffer"
OUTPUT_BUFFER = "_output_buffer"
HANDSHAKE_STATE = "_handshake_state"
SUITE_ID_FN = "_get_ciphersuite_id"
SUITE_NAME_FN = "_get_ciphersuite_name"

_PEEK_CHUNK = 32 * 1024  # the wrapper's ring buffers hold 32 KiB

_usable = False
_reason = "self-check not run"


def bind() -> None:
    """The self-check proved every private name above on this wheel."""
    global _usable, _reason
    _usable, _reason = True, ""


def unbind(reason: str) -> None:
    global _usable, _reason
    _usable, _reason = False, reason


def private_names_usable() -> bool:
    return _usable


def reason() -> str:
    """Empty when the private names are used; otherwise why the fallbacks are."""
    return _reason


# --- private accessors, used by the self-check itself (may raise on another wheel) ----------


def input_free_private(buffer) -> int:
    ring = getattr(buffer, INPUT_BUFFER)
    return int(ring.maxlen) - len(ring)


def output_pending_private(buffer) -> int:
    return len(getattr(buffer, OUTPUT_BUFFER))


_OVER = None        # HandshakeStep.HANDSHAKE_OVER, looked up at the first use


def handshake_over_private(buffer) -> bool:
    global _OVER
    if _OVER is None:   # (not an import statement per call: the open's answer waits for it)
        from mbedtls.tls import HandshakeStep

        _OVER = HandshakeStep.HANDSHAKE_OVER
    return getattr(buffer, HANDSHAKE_STATE) is _OVER


def suite_registry():
    """(name_of(id), id_of(name)) — the wrapper's private id <-> name functions."""
    import mbedtls._tls

    return getattr(mbedtls._tls, SUITE_NAME_FN), getattr(mbedtls._tls, SUITE_ID_FN)


# --- what the engine calls -----------------------------------------------------------------


def feed(buffer, data: bytes | memoryview) -> int:
    """Give `data` (or its head) to the wrapper's input; returns how many bytes were
    taken, 0 when the input buffer is full. Never overfills (BufferError) it; only
    the part taken is copied."""
    if not data:
        return 0
    if _usable:
        n = min(len(data), input_free_private(buffer))
        if n <= 0:
            return 0
        buffer.receive_from_network(bytes(data[:n]))
        return n
    n = len(data)
    while n:
        try:
            buffer.receive_from_network(bytes(data[:n]))
            return n
        except BufferError:
            n //= 2
    return 0


def input_pending(buffer) -> int | None:
    """How many received bytes the wrapper's input still holds, not yet read by Mbed TLS
    (None: unknown without the private name)."""
    if _usable:
        return len(getattr(buffer, INPUT_BUFFER))
    return None


def take_outgoing(buffer) -> bytes:
    """Everything the wrapper has queued for the network, removed from its buffer."""
    if _usable:
        pending = output_pending_private(buffer)
        if not pending:
            return b""
        data = buffer.peek_outgoing(pending)
        buffer.consume_outgoing(pending)
        return data
    pieces = []
    while True:
        data = buffer.peek_outgoing(_PEEK_CHUNK)
        if not data:
            return b"".join(pieces)
        buffer.consume_outgoing(len(data))
        pieces.append(data)


def handshake_over(buffer) -> bool:
    """True once a TLSWrappedBuffer's first handshake is complete (HANDSHAKE_OVER)."""
    if _usable:
        return handshake_over_private(buffer)
    return buffer.cipher() is not None


def ciphersuite_name(suite_id: int) -> str | None:
    """Mbed TLS name of a suite id known to this build ("TLS-RSA-WITH-..."), else None."""
    if not _usable:
        return None
    name = suite_registry()[0](suite_id)
    return None if name == "unknown" else name


def ciphersuite_id(mbedtls_name: str) -> int:
    """Suite id for an Mbed TLS suite name (0 when this build does not know it)."""
    if not _usable:
        return 0
    return int(suite_registry()[1](mbedtls_name))
