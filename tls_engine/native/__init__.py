"""tls_engine.native — the ONE place that depends on this exact python-mbedtls wheel.

Everything below the wrapper's public API lives in this package and nowhere else in
tls_engine/ (tests/tls_engine/test_boundary.py checks it, over emulator/ too): ctypes
into the Mbed TLS library bundled in the python-mbedtls 2.10.1 wheel, the Cython
objects' memory layout, and the wrapper's private names. The rest of the engine
imports ``tls_engine.native`` and uses only what this file exports.

Why it exists
    python-mbedtls has no public API for things the emulated modems do: TLS session
    resumption (AT+QSSLCFG="session"), an NSS key log (SSLKEYLOGFILE-style), offering an
    exact ordered cipher-suite list by IANA id including the RC4 and 3DES suites that
    Mbed TLS 2.28 compiles in but leaves out of its default list, honouring a
    server-initiated renegotiation, and reading the raw X.509 verify flags. The C
    functions exist and are exported by the wheel's own ``python_mbedtls.libs/
    libmbedtls-*.so.14``; what they need is the address of the ``mbedtls_ssl_config`` /
    ``mbedtls_ssl_context`` that the Cython objects embed.

What it touches
    * ``mbedtls_ssl_config`` embedded in the ``MbedTLSConfiguration`` object that a
      ``ClientContext``/``ServerContext`` owns (object + 32). Written only through the
      library's own setters: ``mbedtls_ssl_conf_ciphersuites``,
      ``mbedtls_ssl_conf_arc4_support``, ``mbedtls_ssl_conf_renegotiation``,
      ``mbedtls_ssl_conf_legacy_renegotiation``, ``mbedtls_ssl_conf_authmode``,
      ``mbedtls_ssl_conf_export_keys_ext_cb``.
    * ``mbedtls_ssl_context`` embedded in the ``MbedTLSBuffer`` (= TLSWrappedBuffer)
      object (object + 24), passed to ``mbedtls_ssl_get_session``/``set_session``/
      ``get_verify_result``, and to ``mbedtls_ssl_set_timer_cb`` (DTLS: the retransmission
      timer on the caller's clock; the setter cancels the running timer through the new
      callback, which use_clock checks).
    * ``mbedtls_ssl_session`` structs this package allocates and frees itself.
    * Private Python names of the wrapper (wrapper.py): ``TLSWrappedBuffer.
      _input_buffer`` / ``_output_buffer`` / ``_handshake_state`` and
      ``mbedtls._tls._get_ciphersuite_id/_name``, behind feed / take_outgoing /
      handshake_over / ciphersuite_id / ciphersuite_name. The engine needs these on
      every connection, so each uses the private name only once the self-check proved
      it and otherwise falls back to the public API (never raises for a missing name).
    The library is opened with RTLD_NOLOAD, i.e. it is the very copy python-mbedtls
    loaded (a second copy would have its own globals).

Self-check (once, when the package is first imported; a few ms)
    First the wrapper's private names (selfcheck.wrapper_check, an in-memory PSK
    handshake; on failure wrapper.py uses its fallbacks and the ctypes layer is not
    tried). Then version pins, symbols, the Cython types' sizes, where the structs sit,
    that each setter flips the byte expected, and an in-memory PSK handshake proving
    the key-export callback and the session layout — details in selfcheck.py and
    layout.py. Only memory inside objects of known size is read before a check
    passes; nothing is written to an address before it was confirmed. The engine imports this package
    lazily (inside functions), so ``import tls_engine`` does not run the check.

Resumption detection
    ``NativeSsl.session_reused()`` compares the master secret of the session now in use
    with the one that was loaded: an abbreviated handshake (session id or RFC 5077
    ticket) keeps it, a full handshake derives a new one. No handshake-internal struct
    is read.

Files
    __init__.py (this public surface and the self-check's driver), wrapper.py (the
    wrapper's private names and their public fallbacks), handles.py (NativeConf /
    NativeSsl / NativeSession over ctypes), layout.py (offsets, library loading,
    structural checks), selfcheck.py (the functional checks and the in-memory
    handshake pump).

When it fails
    ``available()`` returns False and ``unavailable_reason()`` says which check failed and
    what was found; constructing NativeConf/NativeSsl/NativeSession then raises
    NativeUnavailable. Nothing here raises at import. Callers check ``available()`` and
    degrade: the engine keeps working without resumption, key log, RC4/3DES and
    renegotiation (see config.py, resumption.py and the README); feed / take_outgoing /
    handshake_over keep working through their public fallbacks.
"""
from __future__ import annotations

from . import layout
from .handles import (EMPTY_RENEGOTIATION_INFO_SCSV, RC4_SUITES, NativeConf, NativeError,
                      NativeSession, NativeSsl, NativeUnavailable, keylog_line)
from . import handles as _handles
from . import wrapper as _wrapper
from .wrapper import ciphersuite_id, ciphersuite_name, feed, handshake_over, input_pending, take_outgoing

__all__ = [
    "available",
    "generation",
    "unavailable_reason",
    "NativeConf",
    "NativeSsl",
    "NativeSession",
    "NativeError",
    "NativeUnavailable",
    "EMPTY_RENEGOTIATION_INFO_SCSV",
    "RC4_SUITES",
    "keylog_line",
    "ciphersuite_name",
    "ciphersuite_id",
    "handshake_over",
    "feed",
    "input_pending",
    "take_outgoing",
    "psk_identity",
]


def available() -> bool:
    """True when the self-check passed and NativeConf/NativeSsl/NativeSession work."""
    return _handles.is_bound()


def unavailable_reason() -> str:
    """Empty when available(); otherwise the failed check and what was found."""
    return _handles.reason()


class _RawPskIdentity(str):
    """A PSK identity that is not UTF-8, for a wrapper that only takes str identities."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


def psk_identity(raw: bytes) -> str:
    """What to give TLSConfiguration(pre_shared_key=(identity, key)) so that the identity
    on the wire is exactly `raw`. The wrapper (2.10.1, _set_pre_shared_key) takes a str
    and calls its .encode("utf8"): UTF-8 bytes round-trip through a plain str; any other
    bytes (a host's latin-1 byte such as E9) go in a str whose encode() answers them."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        identity = _RawPskIdentity(raw.decode("latin-1"))
        identity.raw = bytes(raw)
        return identity
    return text


# --- the self-check ------------------------------------------------------------------------


_generation = 0


def generation() -> int:
    """How many times the self-check ran: what was built from its outcome (which suites a
    default offer holds, ...) is stale once this changes (tls_engine.config's caches)."""
    return _generation


def _init() -> None:
    """Run (or re-run) the self-check. First the wrapper's private Python names
    (wrapper.py: used on success, public fallbacks otherwise), then the ctypes layer,
    which also needs them; binds the library into handles.py on success."""
    global _generation
    _generation += 1
    _handles.unbind("self-check not run")
    _wrapper.unbind("self-check not run")
    try:
        import mbedtls.tls as tls

        from .selfcheck import wrapper_check

        wrapper_check(tls)
        _wrapper.bind()
    except Exception as exc:  # noqa: BLE001 - any failure means "use the fallbacks", with why
        _wrapper.unbind(f"wrapper's private names unusable: {type(exc).__name__}: {exc}")
    try:
        if not _wrapper.private_names_usable():
            raise layout.LayoutError(_wrapper.reason())
        from importlib.metadata import version

        got = version("python-mbedtls")
        if got != layout.EXPECTED_PY_MBEDTLS:
            raise layout.LayoutError(
                f"python-mbedtls is {got}, this module knows only {layout.EXPECTED_PY_MBEDTLS}")
        import mbedtls._tls as tls_cy
        import mbedtls.tls as tls
        import mbedtls.version as mversion

        from .selfcheck import functional_check

        lib = layout.load_libmbedtls(tls_cy)
        layout.self_check(lib, tls, tls_cy, mversion.version_info)
        _handles.bind(lib, tls_cy)
        functional_check(tls)
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable", with why
        _handles.unbind(f"tls_engine.native self-check failed: {type(exc).__name__}: {exc}")


_init()
