"""Where python-mbedtls 2.10.1 keeps its Mbed TLS structs, and the import-time self-check.

Private to tls_engine.native (read the package's __init__.py docstring first).
Everything here is tied to ONE build: python-mbedtls 2.10.1 for CPython 3.11/3.12 on
64-bit Linux, bundling Mbed TLS 2.28.8 in ``python_mbedtls.libs/``.

Memory is only ever *read* inside objects whose size Python reports (``__basicsize__``),
so a wrong guess yields a failed check and a reason string, not a crash. Nothing is
written to an address before that address was confirmed.
"""
from __future__ import annotations

import ctypes
import gc
import glob
import os
import sys

EXPECTED_PY_MBEDTLS = "2.10.1"
EXPECTED_MBEDTLS = (2, 28, 8)

# --- Cython object layouts (64-bit, from src/mbedtls/_tls.pxd of 2.10.1) -------------------
# _BaseContext          : PyObject_HEAD(16) | MbedTLSConfiguration *_conf              = 24
# MbedTLSConfiguration  : PyObject_HEAD(16) | vtab | object | mbedtls_ssl_config _ctx (400)
#                         | _chain | int *_ciphers | ... (6 words)                      = 472
# MbedTLSBuffer         : PyObject_HEAD(16) | _BaseContext *_context | mbedtls_ssl_context
#                         _ctx (472) | 2 RingBuffer | _C_Buffers | timing ctx           = 568
# TLSSession            : PyObject_HEAD(16) | mbedtls_ssl_session _ctx (160)           = 176
BASICSIZE = {
    "_BaseContext": 24,
    "MbedTLSConfiguration": 472,
    "MbedTLSBuffer": 568,
    "TLSSession": 176,
}
CTX_CONFOBJ_PTR = 16  # _BaseContext -> MbedTLSConfiguration*
CONF_OFFSET = 32  # mbedtls_ssl_config embedded in MbedTLSConfiguration
SSL_OFFSET = 24  # mbedtls_ssl_context embedded in MbedTLSBuffer
SESSION_SIZE = BASICSIZE["TLSSession"] - 16  # sizeof(mbedtls_ssl_session) = 160

# --- Mbed TLS 2.28 struct fields (include/mbedtls/ssl.h; 2.28 "reordered" config) --------
# mbedtls_ssl_config: 4 version bytes, then one uint8_t per flag, ..., ciphersuite_list[4]
CF_MAX_MAJOR, CF_MAX_MINOR, CF_MIN_MAJOR, CF_MIN_MINOR = 0, 1, 2, 3
CF_ENDPOINT, CF_TRANSPORT, CF_AUTHMODE, CF_LEGACY_RENEGO = 4, 5, 6, 7
CF_ARC4_DISABLED = 8
CF_RENEGOTIATION = 14  # field "disable_renegotiation", holds MBEDTLS_SSL_RENEGOTIATION_*
CF_CIPHERSUITE_LIST = 56  # const int *ciphersuite_list[4]
# mbedtls_ssl_context: const mbedtls_ssl_config *conf; int state; ...
SC_CONF, SC_STATE = 0, 8
# mbedtls_ssl_session: uchar mfl_code; time_t start; int ciphersuite; int compression;
#                      size_t id_len; uchar id[32]; uchar master[48]; crt *peer_cert; ...
SS_CIPHERSUITE, SS_ID_LEN, SS_ID, SS_MASTER = 16, 24, 32, 64

# Constants from ssl.h
ARC4_ENABLED, ARC4_DISABLED = 0, 1
RENEGOTIATION_DISABLED, RENEGOTIATION_ENABLED = 0, 1
LEGACY_NO_RENEGOTIATION, LEGACY_ALLOW_RENEGOTIATION = 0, 1
VERIFY_NONE, VERIFY_OPTIONAL = 0, 1  # MBEDTLS_SSL_VERIFY_*
HANDSHAKE_OVER = 16  # MBEDTLS_SSL_HANDSHAKE_OVER

_P = ctypes.c_void_p
EXPORT_KEYS_EXT_CB = ctypes.CFUNCTYPE(
    ctypes.c_int,  # return 0
    _P,  # void *p_expkey
    _P,  # const unsigned char *ms (48 bytes)
    _P,  # const unsigned char *kb (key block)
    ctypes.c_size_t,  # maclen
    ctypes.c_size_t,  # keylen
    ctypes.c_size_t,  # ivlen
    _P,  # client_random[32]
    _P,  # server_random[32]
    ctypes.c_int,  # mbedtls_tls_prf_types
)

# mbedtls_ssl_set_timer_t / mbedtls_ssl_get_timer_t (ssl.h): the DTLS retransmission timer.
SET_TIMER_CB = ctypes.CFUNCTYPE(None, _P, ctypes.c_uint32, ctypes.c_uint32)  # (p_timer, int_ms, fin_ms)
GET_TIMER_CB = ctypes.CFUNCTYPE(ctypes.c_int, _P)  # -1 cancelled, 0 running, 1 int_ms, 2 fin_ms passed

# name: (restype, argtypes)
_SIGNATURES = {
    "mbedtls_ssl_set_timer_cb": (None, [_P, _P, SET_TIMER_CB, GET_TIMER_CB]),
    "mbedtls_ssl_conf_ciphersuites": (None, [_P, _P]),
    "mbedtls_ssl_conf_arc4_support": (None, [_P, ctypes.c_char]),
    "mbedtls_ssl_conf_renegotiation": (None, [_P, ctypes.c_int]),
    "mbedtls_ssl_conf_legacy_renegotiation": (None, [_P, ctypes.c_int]),
    "mbedtls_ssl_conf_authmode": (None, [_P, ctypes.c_int]),
    "mbedtls_ssl_conf_export_keys_ext_cb": (None, [_P, EXPORT_KEYS_EXT_CB, _P]),
    # (ctypes.CDLL calls release the GIL: NativeSsl.write_nogil encrypts off the loop thread)
    "mbedtls_ssl_write": (ctypes.c_int, [_P, _P, ctypes.c_size_t]),
    "mbedtls_ssl_get_session": (ctypes.c_int, [_P, _P]),
    "mbedtls_ssl_set_session": (ctypes.c_int, [_P, _P]),
    "mbedtls_ssl_session_init": (None, [_P]),
    "mbedtls_ssl_session_free": (None, [_P]),
    "mbedtls_ssl_get_verify_result": (ctypes.c_uint32, [_P]),
    "mbedtls_ssl_check_pending": (ctypes.c_int, [_P]),
    "mbedtls_ssl_get_ciphersuite": (ctypes.c_char_p, [_P]),
    "mbedtls_ssl_get_ciphersuite_id": (ctypes.c_int, [ctypes.c_char_p]),
    "mbedtls_ssl_list_ciphersuites": (_P, []),
    "mbedtls_ssl_ciphersuite_from_id": (_P, [ctypes.c_int]),
}


class LayoutError(Exception):
    """A check of this module's assumptions failed (reason in the message)."""


def u8(addr: int) -> int:
    return ctypes.c_uint8.from_address(addr).value


def word(addr: int) -> int:
    return ctypes.c_size_t.from_address(addr).value


def i32(addr: int) -> int:
    return ctypes.c_int32.from_address(addr).value


def load_libmbedtls(tls_module) -> ctypes.CDLL:
    """The libmbedtls instance python-mbedtls already loaded (RTLD_NOLOAD: never a 2nd copy)."""
    pkg_dir = os.path.dirname(os.path.abspath(tls_module.__file__))
    libdir = os.path.join(os.path.dirname(pkg_dir), "python_mbedtls.libs")
    found = sorted(glob.glob(os.path.join(libdir, "libmbedtls-*.so.14")))
    if len(found) != 1:
        raise LayoutError(f"expected one libmbedtls-*.so.14 in {libdir}, found {found}")
    try:
        lib = ctypes.CDLL(found[0], mode=os.RTLD_NOLOAD | os.RTLD_NOW)
    except OSError as exc:
        raise LayoutError(f"{found[0]} is not the library loaded by mbedtls._tls: {exc}")
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise LayoutError(f"symbol {name} not exported by {found[0]}") from None
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def config_object(context, tls_cy) -> object:
    """The MbedTLSConfiguration a _BaseContext owns, found via GC and cross-checked."""
    if not isinstance(context, tls_cy._BaseContext):
        raise TypeError(f"expected a mbedtls.tls ClientContext/ServerContext, got {context!r}")
    objs = [o for o in gc.get_referents(context) if type(o) is tls_cy.MbedTLSConfiguration]
    if len(objs) != 1:
        raise LayoutError(f"{type(context).__name__} holds {len(objs)} MbedTLSConfiguration")
    confobj = objs[0]
    if word(id(context) + CTX_CONFOBJ_PTR) != id(confobj):
        raise LayoutError("_BaseContext._conf is not at offset %d" % CTX_CONFOBJ_PTR)
    return confobj


def check_conf(conf: int, *, endpoint: int | None = None) -> None:
    """Plausibility of an mbedtls_ssl_config at `conf` (called on every NativeConf)."""
    vers = [u8(conf + i) for i in range(4)]
    if vers[CF_MAX_MAJOR] != 3 or vers[CF_MIN_MAJOR] != 3 or not (
        0 <= vers[CF_MIN_MINOR] <= vers[CF_MAX_MINOR] <= 4
    ):
        raise LayoutError(f"mbedtls_ssl_config version bytes implausible: {vers}")
    flags = [u8(conf + i) for i in (CF_ENDPOINT, CF_TRANSPORT, CF_ARC4_DISABLED)]
    if any(f > 1 for f in flags) or u8(conf + CF_AUTHMODE) > 3:
        raise LayoutError(f"mbedtls_ssl_config flag bytes implausible: {flags}")
    if endpoint is not None and flags[0] != endpoint:
        raise LayoutError(f"conf->endpoint is {flags[0]}, expected {endpoint}")
    lists = [word(conf + CF_CIPHERSUITE_LIST + 8 * i) for i in range(4)]
    if not lists[0] or len(set(lists)) != 1:
        raise LayoutError(f"conf->ciphersuite_list implausible: {[hex(p) for p in lists]}")


def self_check(lib: ctypes.CDLL, tls, tls_cy, version_info) -> None:
    """Raise LayoutError with a precise reason unless every assumption holds."""
    if tuple(version_info)[:3] != EXPECTED_MBEDTLS:
        raise LayoutError(f"bundled Mbed TLS is {tuple(version_info)}, expected {EXPECTED_MBEDTLS}")
    if ctypes.sizeof(ctypes.c_void_p) != 8 or sys.byteorder != "little":
        raise LayoutError("only 64-bit little-endian layouts are known")
    for name, size in BASICSIZE.items():
        got = getattr(tls_cy, name).__basicsize__
        if got != size:
            raise LayoutError(f"mbedtls._tls.{name}.__basicsize__ is {got}, expected {size}")

    # 1. Locate: the ssl context's `conf` pointer must point into the context's config object.
    ctx = tls.ClientContext(
        tls.TLSConfiguration(
            validate_certificates=False,
            lowest_supported_version=tls.TLSVersion.TLSv1_1,
            highest_supported_version=tls.TLSVersion.TLSv1_2,
        )
    )
    confobj = config_object(ctx, tls_cy)
    buf = ctx.wrap_buffers("selfcheck.invalid")
    lo, hi = id(confobj), id(confobj) + BASICSIZE["MbedTLSConfiguration"]
    hits = [
        (off, word(id(buf) + off) - lo)
        for off in range(16, BASICSIZE["MbedTLSBuffer"], 8)
        if lo <= word(id(buf) + off) < hi
    ]
    if hits != [(SSL_OFFSET, CONF_OFFSET)]:
        raise LayoutError(
            f"pointers from MbedTLSBuffer into MbedTLSConfiguration: {hits}, "
            f"expected [({SSL_OFFSET}, {CONF_OFFSET})]"
        )
    conf = lo + CONF_OFFSET

    # 2. Known field values: versions 3.2..3.3, client, TLS, VERIFY_OPTIONAL, default suites.
    got = [u8(conf + i) for i in range(8)]
    want = [3, 3, 3, 2, 0, 0, 1, 0]
    if got != want:
        raise LayoutError(f"client conf bytes 0..7 are {got}, expected {want}")
    default_list = lib.mbedtls_ssl_list_ciphersuites()
    lists = [word(conf + CF_CIPHERSUITE_LIST + 8 * i) for i in range(4)]
    if lists != [default_list] * 4:
        raise LayoutError("conf->ciphersuite_list is not mbedtls_ssl_list_ciphersuites()")
    if i32(id(buf) + SSL_OFFSET + SC_STATE) != 0:
        raise LayoutError("fresh ssl->state is not MBEDTLS_SSL_HELLO_REQUEST")
    srv = tls.ServerContext(tls.TLSConfiguration(validate_certificates=True))
    check_conf(id(config_object(srv, tls_cy)) + CONF_OFFSET, endpoint=1)
    if u8(id(config_object(srv, tls_cy)) + CONF_OFFSET + CF_AUTHMODE) != 2:
        raise LayoutError("server conf->authmode is not VERIFY_REQUIRED")

    # 3. The setters we use write where we think (then put the defaults back).
    for fn, off, on, off_value in (
        (lib.mbedtls_ssl_conf_arc4_support, CF_ARC4_DISABLED, ARC4_ENABLED, ARC4_DISABLED),
        (lib.mbedtls_ssl_conf_renegotiation, CF_RENEGOTIATION, 1, 0),
        (lib.mbedtls_ssl_conf_legacy_renegotiation, CF_LEGACY_RENEGO, 1, 0),
        (lib.mbedtls_ssl_conf_authmode, CF_AUTHMODE, VERIFY_NONE, VERIFY_OPTIONAL),
    ):
        before = u8(conf + off)
        fn(conf, bytes([on]) if fn is lib.mbedtls_ssl_conf_arc4_support else on)
        after = u8(conf + off)
        fn(conf, bytes([off_value]) if fn is lib.mbedtls_ssl_conf_arc4_support else off_value)
        if (before, after, u8(conf + off)) != (off_value, on, off_value):
            raise LayoutError(f"{fn.__name__} does not toggle conf byte {off}")
    del buf, ctx, srv
