"""A TLS flight bigger than the wrapper's 32 KiB output ring still leaves whole.

python-mbedtls says "want read" (not "want write") when a handshake step finds its output
ring full; the session takes a TLS flight from the ring only when the handshake waits, so
after a big flight it must empty the ring and try the step again rather than wait for a
server that has nothing to answer yet.  No real handshake has such a flight today (Mbed
TLS refuses a client chain long before), so the wrapper is stood in for here: a buffer with
the wrapper's ring and the same answers."""
from __future__ import annotations

from mbedtls.tls import WantReadError

from tls_engine import TlsClientSession, TlsSettings

RING = 32 * 1024


class RingBuffer:
    """The parts of TLSWrappedBuffer the session touches: a flight of messages written
    into a 32 KiB output ring one step at a time; a full ring -> WantReadError, as the
    wrapper does; the flight done -> WantReadError (waiting for the server)."""

    def __init__(self, flight: list[int]) -> None:
        self._output_buffer = bytearray()        # (the private name tls_engine.native reads)
        self._handshake_state = None             # never HANDSHAKE_OVER here
        self.flight = [bytes([i + 1]) * n for i, n in enumerate(flight)]

    def do_handshake(self) -> None:
        if not self.flight:
            raise WantReadError()
        if RING - len(self._output_buffer) < len(self.flight[0]):
            raise WantReadError()                # the ring is full: the step is not taken
        self._output_buffer += self.flight.pop(0)

    def peek_outgoing(self, n: int) -> bytes:
        return bytes(self._output_buffer[:n])

    def consume_outgoing(self, n: int) -> None:
        del self._output_buffer[:n]


def start_with(monkeypatch, flight: list[int]) -> TlsClientSession:
    buffer = RingBuffer(flight)
    monkeypatch.setattr(TlsClientSession, "_wrap", lambda self, plan: buffer)
    session = TlsClientSession(TlsSettings(server_name="h.test", ssl_version=3, session_cache=False))
    session.start()
    return session


def test_a_flight_bigger_than_the_ring_leaves_whole(monkeypatch):
    session = start_with(monkeypatch, [16000, 16000, 8000])
    out = b"".join(session.outgoing())
    assert out == b"\x01" * 16000 + b"\x02" * 16000 + b"\x03" * 8000
    assert session.state == "handshaking" and session.events() == []


def test_a_small_flight_is_one_chunk(monkeypatch):
    session = start_with(monkeypatch, [300, 200])
    assert session.outgoing() == [b"\x01" * 300 + b"\x02" * 200]
