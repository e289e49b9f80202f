"""NativeConf / NativeSsl / NativeSession: handles on the Mbed TLS structs that the
python-mbedtls objects embed. Private to tls_engine.native (import the package, not this
file): only the package's self-check (``_init`` in __init__.py) binds the library here,
and every constructor refuses with NativeUnavailable until it has.

Offsets and C signatures come from layout.py; nothing here guesses an address.
"""
from __future__ import annotations

import ctypes
import sys
import weakref
from typing import Callable, Sequence

from . import layout as L

RC4_SUITES = frozenset({0x0004, 0x0005, 0xC002, 0xC007, 0xC011, 0xC00C})  # need arc4 support
EMPTY_RENEGOTIATION_INFO_SCSV = 0x00FF  # mbedtls appends it to every initial ClientHello


class NativeError(RuntimeError):
    """A native call failed (message has the Mbed TLS error code)."""


class NativeUnavailable(NativeError):
    """The self-check failed; see unavailable_reason()."""


# Set by the package's self-check: bind() after the structural checks passed (the
# functional check then runs through these classes), unbind() on any failure.
_lib: ctypes.CDLL | None = None
_reason = "self-check not run"
_tls_cy = None


def bind(lib: ctypes.CDLL, tls_cy) -> None:
    global _lib, _reason, _tls_cy
    _lib, _tls_cy, _reason = lib, tls_cy, ""


def unbind(reason: str) -> None:
    global _lib, _reason
    _lib, _reason = None, reason


def is_bound() -> bool:
    return _lib is not None


def reason() -> str:
    """Empty when bound; otherwise the failed check and what was found."""
    return "" if _lib is not None else _reason


def _require() -> ctypes.CDLL:
    if _lib is None:
        raise NativeUnavailable(_reason)
    return _lib


def _conf_address(context) -> int:
    confobj = L.config_object(context, _tls_cy)
    return id(confobj) + L.CONF_OFFSET


class NativeConf:
    """Settings of the mbedtls_ssl_config of a ClientContext/ServerContext.

    Apply before ``wrap_buffers()``; the config is shared by every buffer of the context.
    Everything the C side points to (suite array, callback) is kept alive by this object
    AND by the context (stored in its ``__dict__``), so dropping the NativeConf is safe.
    """

    def __init__(self, context) -> None:
        lib = _require()
        self._context = context
        self._conf = _conf_address(context)
        L.check_conf(self._conf)
        self._keepalive: dict[str, object] = {}
        try:
            context.__dict__.setdefault("_native_keepalive", {})
            self._keepalive = context.__dict__["_native_keepalive"]
        except AttributeError:  # a bare _BaseContext has no __dict__; self holds them
            pass
        self._lib = lib

    @property
    def address(self) -> int:
        return self._conf

    def set_ciphersuites(self, ids: Sequence[int]) -> None:
        """Offer exactly `ids`, in order (mbedtls adds 0x00FF to an initial ClientHello).

        Suites the library does not know raise ValueError (mbedtls would drop them
        silently). RC4 ids also turn RC4 support on. Mbed TLS still skips suites that
        do not fit the configured version range (e.g. SHA-256 suites under TLS 1.1).
        """
        ids = [int(i) for i in ids]
        if not ids:
            raise ValueError("empty cipher-suite list")
        unknown = [i for i in ids if not self._lib.mbedtls_ssl_ciphersuite_from_id(i)]
        if unknown:
            raise ValueError("not in this Mbed TLS build: " + ", ".join(f"0x{i:04X}" for i in unknown))
        arr = (ctypes.c_int * (len(ids) + 1))(*ids, 0)
        self._lib.mbedtls_ssl_conf_ciphersuites(self._conf, ctypes.addressof(arr))
        self._keepalive["ciphersuites"] = arr  # (replacing, and so freeing, any previous one)
        if RC4_SUITES.intersection(ids):
            self.set_arc4(True)

    def set_arc4(self, enabled: bool) -> None:
        self._lib.mbedtls_ssl_conf_arc4_support(
            self._conf, bytes([L.ARC4_ENABLED if enabled else L.ARC4_DISABLED])
        )

    def set_renegotiation(self, enabled: bool, *, allow_legacy: bool = False) -> None:
        """Accept (or refuse) renegotiation, e.g. a server's HelloRequest.

        Against peers doing RFC 5746 secure renegotiation (OpenSSL and every current
        stack) nothing else is needed. `allow_legacy=True` also renegotiates with peers
        that lack RFC 5746 (MBEDTLS_SSL_LEGACY_ALLOW_RENEGOTIATION; insecure, CVE-2009-3555).
        Disabled (the python-mbedtls default): a client answers a HelloRequest with a
        warning alert no_renegotiation(100) and keeps the old session.
        """
        self._lib.mbedtls_ssl_conf_renegotiation(
            self._conf, L.RENEGOTIATION_ENABLED if enabled else L.RENEGOTIATION_DISABLED
        )
        self._lib.mbedtls_ssl_conf_legacy_renegotiation(
            self._conf,
            L.LEGACY_ALLOW_RENEGOTIATION if (enabled and allow_legacy) else L.LEGACY_NO_RENEGOTIATION,
        )

    def set_verify_none(self, none: bool) -> None:
        """MBEDTLS_SSL_VERIFY_NONE (True) or VERIFY_OPTIONAL (False, python-mbedtls's
        validate_certificates=False): with NONE, Mbed TLS 2.28's client still parses the
        server's Certificate message but never walks the chain (ssl_parse_certificate_verify
        returns at once), so no chain is too long for it."""
        self._lib.mbedtls_ssl_conf_authmode(self._conf, L.VERIFY_NONE if none else L.VERIFY_OPTIONAL)

    def set_keylog(self, callback: Callable[[str], None] | None) -> None:
        """Call `callback("CLIENT_RANDOM <client random hex> <master secret hex>")` for
        every key derivation (each handshake, resumed or not, and each renegotiation).
        Exceptions from the callback are swallowed (printed once via sys.unraisablehook).
        None removes it.
        """
        if callback is None:
            self._lib.mbedtls_ssl_conf_export_keys_ext_cb(self._conf, L.EXPORT_KEYS_EXT_CB(), None)
            self._keepalive.pop("keylog", None)
            return

        def export_keys(_p, ms, _kb, _maclen, _keylen, _ivlen, client_random, _server_random, _prf):
            try:
                callback(keylog_line(ctypes.string_at(client_random, 32), ctypes.string_at(ms, 48)))
            except BaseException as exc:  # noqa: BLE001 - must not unwind into C
                sys.unraisablehook(_Unraisable(exc, callback))
            return 0

        cfunc = L.EXPORT_KEYS_EXT_CB(export_keys)
        self._lib.mbedtls_ssl_conf_export_keys_ext_cb(self._conf, cfunc, None)
        self._keepalive["keylog"] = cfunc  # (replacing, and so freeing, any previous one)


class _Unraisable:
    def __init__(self, exc: BaseException, obj: object) -> None:
        self.exc_type, self.exc_value, self.exc_traceback = type(exc), exc, exc.__traceback__
        self.err_msg, self.object = "Exception ignored in native key-log callback", obj


def keylog_line(client_random: bytes, master: bytes) -> str:
    """NSS key-log format, exactly as OpenSSL writes it (lower-case hex)."""
    return f"CLIENT_RANDOM {client_random.hex()} {master.hex()}"


def _free_session(lib: ctypes.CDLL, buf: ctypes.Array) -> None:
    lib.mbedtls_ssl_session_free(ctypes.addressof(buf))


class NativeSession:
    """An owned mbedtls_ssl_session (deep copy: peer certificate, ticket). Reusable for
    any number of later connections; freed with mbedtls_ssl_session_free."""

    def __init__(self) -> None:
        self._lib = _require()
        self._buf = (ctypes.c_uint64 * ((L.SESSION_SIZE + 7) // 8))()
        self._lib.mbedtls_ssl_session_init(self.address)
        # The finalizer holds the struct's memory itself, so it is valid whenever it runs.
        self._finalizer = weakref.finalize(self, _free_session, self._lib, self._buf)

    @property
    def address(self) -> int:
        return ctypes.addressof(self._buf)

    @property
    def ciphersuite(self) -> int:
        return L.i32(self.address + L.SS_CIPHERSUITE)

    @property
    def session_id(self) -> bytes:
        n = min(L.word(self.address + L.SS_ID_LEN), 32)
        return ctypes.string_at(self.address + L.SS_ID, n)

    @property
    def master_secret(self) -> bytes:
        return ctypes.string_at(self.address + L.SS_MASTER, 48)

    def free(self) -> None:
        """Free now (otherwise done when the object is collected); idempotent."""
        self._finalizer()


class NativeSsl:
    """Per-connection calls on the mbedtls_ssl_context of a TLSWrappedBuffer."""

    def __init__(self, buffer) -> None:
        self._lib = _require()
        if not isinstance(buffer, _tls_cy.MbedTLSBuffer):
            raise TypeError(f"expected a TLSWrappedBuffer, got {buffer!r}")
        self._buffer = buffer
        self._ssl = id(buffer) + L.SSL_OFFSET
        conf = _conf_address(buffer.context)
        if L.word(self._ssl + L.SC_CONF) != conf:
            raise NativeError("ssl->conf does not point at the context's mbedtls_ssl_config")
        self._loaded_master: bytes | None = None
        self._timer: _DelayTimer | None = None      # use_clock's (its callbacks live here)

    @property
    def address(self) -> int:
        return self._ssl

    HANDSHAKE_OVER = L.HANDSHAKE_OVER

    def _state(self) -> int:
        return L.i32(self._ssl + L.SC_STATE)

    def handshake_state(self) -> int:
        """ssl->state: HANDSHAKE_OVER once the handshake (or a renegotiation) is done."""
        return self._state()

    def save_session(self) -> NativeSession:
        """After the handshake (client side): a copy of the negotiated session."""
        session = NativeSession()
        rc = self._lib.mbedtls_ssl_get_session(self._ssl, session.address)
        if rc != 0:
            raise NativeError(f"mbedtls_ssl_get_session failed: -0x{-rc:04X}")
        name = self._lib.mbedtls_ssl_get_ciphersuite(self._ssl)
        if name and self._lib.mbedtls_ssl_get_ciphersuite_id(name) != session.ciphersuite:
            raise NativeError("session layout check failed: ciphersuite field mismatch")
        return session

    def load_session(self, saved: NativeSession) -> None:
        """Before the handshake (client side): offer `saved` for resumption (session id
        and/or ticket). The server may still refuse; see session_reused()."""
        if not isinstance(saved, NativeSession):
            raise TypeError("load_session expects what save_session returned")
        if self._state() != 0:
            raise NativeError("load_session must be called before the handshake starts")
        rc = self._lib.mbedtls_ssl_set_session(self._ssl, saved.address)
        if rc != 0:
            raise NativeError(f"mbedtls_ssl_set_session failed: -0x{-rc:04X}")
        self._loaded_master = saved.master_secret

    def session_reused(self) -> bool:
        """After the handshake: True iff the server accepted the loaded session (an
        abbreviated handshake keeps the old master secret; a full one makes a new one)."""
        if self._loaded_master is None or self._state() != L.HANDSHAKE_OVER:
            return False
        current = NativeSession()
        if self._lib.mbedtls_ssl_get_session(self._ssl, current.address) != 0:
            return False
        return current.master_secret == self._loaded_master

    def write_nogil(self, data: bytes, start: int, length: int) -> int:
        """mbedtls_ssl_write of data[start:start + length], read in place, with the GIL
        released (a ctypes call), so another thread runs Python meanwhile: what
        python-mbedtls' own write() never allows.  Returns what the library returns: bytes
        taken (> 0) or a negative error (MBEDTLS_ERR_SSL_WANT_READ/WANT_WRITE: the output
        ring is full, or a renegotiation needs input).  Unlike the wrapper's write() it does
        not reset the context on an error: the caller ends the session.  The records land in
        the buffer's output ring (its BIO is C code that needs no GIL).  The caller
        guarantees that nothing else uses the buffer while this runs."""
        if not isinstance(data, bytes) or start < 0 or length <= 0 or start + length > len(data):
            raise ValueError("write_nogil: a slice of a bytes object")
        base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
        return int(self._lib.mbedtls_ssl_write(self._ssl, base + start, length))

    def check_pending(self) -> bool:
        """mbedtls_ssl_check_pending: Mbed TLS holds received bytes it has not processed
        yet (DTLS: more records of the datagram it read whole; a record's data not all
        read)."""
        return bool(self._lib.mbedtls_ssl_check_pending(self._ssl))

    def verify_result(self) -> int:
        """mbedtls_ssl_get_verify_result after the handshake: 0 = verified, else the
        MBEDTLS_X509_BADCERT_* flags (0x08 not trusted, 0x04 CN mismatch, 0x01 expired...);
        readable with validate_certificates=False (VERIFY_OPTIONAL). Meaningless (0)
        before the server's certificate was processed."""
        return int(self._lib.mbedtls_ssl_get_verify_result(self._ssl))

    def use_clock(self, monotonic: Callable[[], float]) -> None:
        """The DTLS retransmission timer on `monotonic` (seconds) instead of Mbed TLS's
        gettimeofday: installed with the library's own setter, mbedtls_ssl_set_timer_cb,
        which cancels the running timer through the new callback at once (checked).  The
        callbacks live as long as this handle: keep it as long as the buffer is used."""
        timer = _DelayTimer(monotonic)
        self._lib.mbedtls_ssl_set_timer_cb(self._ssl, None, timer.set_cb, timer.get_cb)
        self._timer = timer
        if timer.calls != 1 or timer.fin_ms != 0:
            raise NativeError("mbedtls_ssl_set_timer_cb did not reset the timer through its callback")

    def timer(self) -> tuple[float, float] | None:
        """After use_clock: the running retransmission timer as (armed at, seconds left,
        0.0 once expired) on that clock; None while Mbed TLS has it cancelled (or use_clock
        was not called)."""
        return None if self._timer is None else self._timer.running()


class _DelayTimer:
    """timing.c's mbedtls_timing_set_delay / get_delay, on a clock of the caller's (the
    modem's time, which tests and the control API move by hand).  Never raises into C:
    a clock that fails reads as "no time passed" (the session's own deadline still ends
    the handshake)."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._now = monotonic
        self.start = 0.0
        self.int_ms = self.fin_ms = 0           # fin_ms 0: cancelled
        self.calls = 0
        self.set_cb = L.SET_TIMER_CB(self._set)
        self.get_cb = L.GET_TIMER_CB(self._get)

    def _elapsed_ms(self) -> float:
        # Rounded to the microsecond: (now - start) of two clock readings off the whole second
        # (1031.1 - 1015.1) is a hair under the interval (15999.9999999 ms), which would leave
        # a remainder below the clock's resolution -- a timer re-armed for "1e-13 s later"
        # lands on the same instant and fires for ever.  Mbed TLS (_get) and the session
        # (running) read the same rounded figure, so "expired" means the same to both.
        try:
            return round((self._now() - self.start) * 1000.0, 3)
        except Exception:
            return 0.0

    def _set(self, _p, int_ms: int, fin_ms: int) -> None:
        self.calls += 1
        self.int_ms, self.fin_ms = int_ms, fin_ms
        if fin_ms:
            try:
                self.start = self._now()
            except Exception:
                pass

    def running(self) -> tuple[float, float] | None:
        if not self.fin_ms:
            return None
        return self.start, max(0.0, (self.fin_ms - self._elapsed_ms()) / 1000.0)

    def _get(self, _p) -> int:
        if not self.fin_ms:
            return -1
        elapsed = self._elapsed_ms()
        return 2 if elapsed >= self.fin_ms else 1 if elapsed >= self.int_ms else 0
