"""TlsSettings -> python-mbedtls configuration (public API only), plus what only
tls_engine.native can do for this connection: build_plan() decides it, and
apply_native_conf() applies it to the ClientContext before wrap_buffers().

Every problem becomes an EngineConfigError(kind, reason); TlsClientSession.start()
turns it into a TlsFailure event, never an exception.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import ciphers as cs
from .errors import BAD_CONFIG, UNSUPPORTED_CIPHER, UNSUPPORTED_VERSION, EngineConfigError
from .settings import DTLS1_0, DTLS1_2, SSL3_0, TLS1_0, TLS1_1, TLS1_2, TLS_ALL, TlsSettings


@dataclass
class EnginePlan:
    configuration: object                 # mbedtls TLSConfiguration / DTLSConfiguration
    sni_hostname: str | None              # what to give wrap_buffers (SNI only)
    native_suites: tuple[int, ...] | None  # exact id list needing native (RC4/3DES)
    notes: list[str] = field(default_factory=list)  # degraded features, for logs


def _tls_versions(settings: TlsSettings):
    from mbedtls.tls import TLSVersion

    version = settings.ssl_version
    if version == SSL3_0:
        raise EngineConfigError(UNSUPPORTED_VERSION,
                                "SSL 3.0 is not compiled into this TLS build (Mbed TLS 2.28)")
    pinned = {TLS1_0: TLSVersion.TLSv1, TLS1_1: TLSVersion.TLSv1_1, TLS1_2: TLSVersion.TLSv1_2}
    if version in pinned:
        return pinned[version], pinned[version]
    if version == TLS_ALL:
        return TLSVersion.TLSv1, TLSVersion.TLSv1_2  # TLS 1.3 is not in this build
    raise EngineConfigError(BAD_CONFIG, f"sslversion {version} is not one of 0-4")


def _dtls_versions(settings: TlsSettings):
    from mbedtls.tls import DTLSVersion

    if settings.dtls_version == DTLS1_0:
        return DTLSVersion.DTLSv1_0, DTLSVersion.DTLSv1_0
    if settings.dtls_version == DTLS1_2:
        return DTLSVersion.DTLSv1_2, DTLSVersion.DTLSv1_2
    raise EngineConfigError(BAD_CONFIG, f"dtlsversion {settings.dtls_version} is not 0 or 1")


def _psk_suites() -> list[str]:
    """Library PSK suites appended to the table default when a PSK is configured:
    the EC2x table has none, and a PSK that can never be used would be pointless."""
    import mbedtls.tls

    return [n for n in mbedtls.tls.ciphers_available()
            if n.startswith(("TLS-PSK-", "TLS-ECDHE-PSK-", "TLS-DHE-PSK-"))]


def _suites(settings: TlsSettings, notes: list[str]) -> tuple[tuple[str, ...] | None, tuple[int, ...] | None]:
    """(names for the public API, or exact ids for native).

    Without native, suites only native can offer (RC4/3DES) are left out with a note,
    so a table-wide list still works; a list of nothing but such suites is refused."""
    requested = settings.cipher_suites
    if requested in ((), (cs.ALL_SUITES_CODE,)):
        requested = cs.default_offer()
        extra = _psk_suites() if settings.psk_key else []
    else:
        extra = []
    for suite_id in requested:
        if cs.suite_name(suite_id) is None:
            raise EngineConfigError(UNSUPPORTED_CIPHER, f"cipher suite 0x{suite_id:04X} is unknown")
    if all(cs.suite_available(s) for s in requested):
        names = tuple(cs.mbedtls_name_for(cs.suite_name(s)) for s in requested) + tuple(extra)
        return names, None
    missing = [s for s in requested if not cs.suite_available(s)]
    from . import native  # lazy: the first import runs native's self-check

    if not native.available():
        why = native.unavailable_reason() or "tls_engine.native missing"
        kept = tuple(s for s in requested if cs.suite_available(s))
        if not kept:
            raise EngineConfigError(
                UNSUPPORTED_CIPHER,
                f"cipher suite {cs.describe(missing[0])} not available in this TLS build ({why})")
        notes.append(f"not offered, need tls_engine.native ({why}): "
                     + ", ".join(cs.describe(s) for s in missing))
        names = tuple(cs.mbedtls_name_for(cs.suite_name(s)) for s in kept) + tuple(extra)
        return names, None
    extra_ids = tuple(native.ciphersuite_id(n) for n in extra)
    return None, tuple(requested) + extra_ids


def _client_chain(settings: TlsSettings):
    import mbedtls.pk
    import mbedtls.x509
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for data, what in ((settings.client_cert_pem, "client certificate"), (settings.client_key_pem, "client key")):
        if data is None:
            raise EngineConfigError(BAD_CONFIG, f"seclevel 2 needs a client certificate and key; {what} is missing")
        if not data:
            raise EngineConfigError(BAD_CONFIG, f"seclevel 2: the {what} is empty")
    from .verify import _ca_walk
    # (read as the CA file is, as mbedtls_x509_crt_parse reads both: PEM when a
    # "-----BEGIN CERTIFICATE-----" comes before the first NUL, else one DER certificate;
    # a block it refuses fails the open as in the CA file)
    ders, refused = _ca_walk(settings.client_cert_pem)
    if refused or not ders:
        raise EngineConfigError(BAD_CONFIG, "cannot parse client certificate: "
                                f"{refused or 'no certificate Mbed TLS reads'}")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in ders]
    except ValueError as exc:
        raise EngineConfigError(BAD_CONFIG, f"cannot parse client certificate: {exc}") from None
    key = _client_key(settings.client_key_pem, settings.client_key_password or None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
        raise EngineConfigError(BAD_CONFIG, "client key does not belong to the client certificate")
    der_key = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    if isinstance(key, rsa.RSAPrivateKey):
        mbed_key = mbedtls.pk.RSA.from_DER(der_key)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        mbed_key = mbedtls.pk.ECC.from_DER(der_key)
    else:
        raise EngineConfigError(BAD_CONFIG, f"client key type {type(key).__name__} not supported")
    mbed_certs = tuple(mbedtls.x509.CRT.from_DER(c.public_bytes(serialization.Encoding.DER)) for c in certs)
    return mbed_certs, mbed_key


def _is_der(data: bytes) -> bool:
    """No PEM header before the first NUL: Mbed TLS's parsers take the buffer as DER."""
    return b"-----BEGIN" not in data.split(b"\0", 1)[0]


def _client_key(pem: bytes, password: bytes | None):
    """The client key, decrypted with `password` when it is encrypted (a password given
    for a clear key is not needed: ignored, as OpenSSL's PEM reader does)."""
    from cryptography.hazmat.primitives import serialization

    try:
        if _is_der(pem):                  # (mbedtls_pk_parse_key reads DER keys as well)
            return serialization.load_der_private_key(pem, password=password)
        return serialization.load_pem_private_key(pem, password=password)
    except TypeError:
        if password is not None:      # "Password was given but private key is not encrypted"
            return _client_key(pem, None)
        raise EngineConfigError(BAD_CONFIG, "client key is encrypted and no key password is set") from None
    except (ValueError, Exception) as exc:  # a wrong password, UnsupportedAlgorithm too
        raise EngineConfigError(BAD_CONFIG, f"cannot parse client key: {exc}") from None


# The PSK length python-mbedtls 2.10.1's Mbed TLS 2.28 takes (its MBEDTLS_PSK_MAX_LEN, a
# build-time limit; RFC 4279 5.3 asks for 64 octets): a longer key cannot be offered.
PSK_MAX_LEN = 32


def _psk(settings: TlsSettings):
    if settings.psk_key is None and settings.psk_identity is None:
        return None
    if not settings.psk_key:
        raise EngineConfigError(BAD_CONFIG, "PSK configured with an empty key")
    if len(settings.psk_key) > PSK_MAX_LEN:
        # (Mbed TLS would refuse the configuration as "Bad input parameters": say why)
        raise EngineConfigError(BAD_CONFIG, f"a PSK of {len(settings.psk_key)} bytes: this TLS library "
                                            f"takes at most {PSK_MAX_LEN} (MBEDTLS_PSK_MAX_LEN)")
    from .native import psk_identity  # the wrapper's str-only identity, bytes kept exact

    return psk_identity(bytes(settings.psk_identity or b"")), bytes(settings.psk_key)


def _alpn(settings: TlsSettings) -> tuple[bytes, ...] | None:
    """Protocol ids are opaque bytes (RFC 7301): bytes pass unchanged, str must be ASCII."""
    if not settings.alpn:
        return None
    try:
        protos = tuple(p.encode("ascii") if isinstance(p, str) else bytes(p) for p in settings.alpn)
    except (UnicodeEncodeError, TypeError, ValueError):
        raise EngineConfigError(BAD_CONFIG, f"ALPN protocol names must be bytes or ASCII text, "
                                            f"got {settings.alpn!r}") from None
    if any(not 1 <= len(p) <= 255 for p in protos):
        raise EngineConfigError(BAD_CONFIG, "ALPN protocol names must be 1-255 bytes")
    if any(b"\0" in p for p in protos):  # Mbed TLS takes C strings: a NUL would cut the name
        raise EngineConfigError(BAD_CONFIG, "ALPN protocol names cannot contain a NUL byte")
    if len(protos) > 8:  # the wrapper keeps room for 8 protocols only
        raise EngineConfigError(BAD_CONFIG, "at most 8 ALPN protocol names are supported")
    return protos


def build_plan(settings: TlsSettings) -> EnginePlan:
    """The plan for one connection.  Its configuration part is built once per distinct set
    of the settings that shape it (_config_key) and shared; the SNI name is per connection."""
    key = _config_key(settings)
    built = _PLANS.get(key)
    if built is None:
        built = _build_configuration(settings)
        _remember(_PLANS, key, built)
    configuration, native_ids, notes = built
    # SNI only for DNS names (RFC 6066 forbids IP literals) and only when enabled;
    # Mbed TLS would also name-check it, which VERIFY_OPTIONAL ignores.
    host = settings.server_name
    sni = host if settings.sni and host and _ip_literal(host) is None else None
    return EnginePlan(configuration, sni, native_ids, list(notes))


def _ip_literal(host: str):
    from .verify import parse_ip      # (verify imports cryptography: not before an open)

    return parse_ip(host)


_NATIVE = None


def _native():
    """tls_engine.native, imported at the first open (its first import runs the self-check);
    then a global's read -- an import statement in a function runs importlib's Python code
    each time, and these two run on every open before its ClientHello leaves."""
    global _NATIVE
    if _NATIVE is None:
        from . import native
        _NATIVE = native
    return _NATIVE


def _config_key(settings: TlsSettings) -> tuple:
    """Every TlsSettings field _build_configuration reads, by value (the client certificate
    and key by their bytes -- a file replaced with AT+QFUPL is another key -- and the key
    password), and the native layer's self-check run and availability it was built under
    (the table default's suites and RC4/3DES depend on them)."""
    native = _native()     # the default offer depends on its self-check's outcome

    chain = ((settings.client_cert_pem, settings.client_key_pem, settings.client_key_password)
             if settings.seclevel == 2 else None)
    anchors = settings.ca_pem if settings.seclevel >= 1 else None
    return (native.generation(), native.available(), settings.seclevel, settings.dtls, settings.ssl_version, settings.dtls_version,
            tuple(settings.cipher_suites), settings.psk_identity, settings.psk_key,
            tuple(settings.alpn), chain, anchors)


def _trust_store(settings: TlsSettings):
    """The CA file's certificates as Mbed TLS's trust store (seclevel >= 1), or None.

    Under VERIFY_OPTIONAL its verdict is only flags (tls_engine.verify decides), but its
    chain walk still stops at a trusted certificate: without one it walks a sent chain to
    its end and fails at MBEDTLS_X509_MAX_INTERMEDIATE_CA (8) with MBEDTLS_ERR_X509_FATAL_ERROR
    -- a chain of 10+ that reaches the CA, which the real module (its CA in the trust
    store) takes.  The certificates are the ones verify.load_anchors reads (the file as
    Mbed TLS reads it: verify._ca_walk)."""
    if settings.seclevel < 1 or not settings.ca_pem:
        return None
    import mbedtls.tls as tls
    import mbedtls.x509 as x509

    from .verify import _ca_walk      # (verify imports cryptography: not before an open)

    ders, _ = _ca_walk(settings.ca_pem)
    if not ders:
        return None
    store = tls.TrustStore()       # (add(): the constructor leaves its certificates unlinked --
    for der in ders:               # Mbed TLS would see only the first)
        store.add(x509.CRT.from_DER(der))
    return store


def _build_configuration(settings: TlsSettings) -> tuple[object, tuple[int, ...] | None, tuple[str, ...]]:
    import mbedtls.tls as tls

    if settings.seclevel not in (0, 1, 2):
        raise EngineConfigError(BAD_CONFIG, f"seclevel {settings.seclevel} is not 0, 1 or 2")
    lowest, highest = _dtls_versions(settings) if settings.dtls else _tls_versions(settings)
    notes: list[str] = []
    names, native_ids = _suites(settings, notes)
    # seclevel 2 with no client pair at all: none offered (an empty Certificate if asked)
    with_pair = settings.seclevel == 2 and (settings.client_cert_pem is not None
                                            or settings.client_key_pem is not None)
    chain = _client_chain(settings) if with_pair else None
    common = dict(
        validate_certificates=False,  # VERIFY_OPTIONAL: tls_engine.verify decides
        trust_store=_trust_store(settings),
        certificate_chain=chain,
        ciphers=names,
        inner_protocols=_alpn(settings),
        lowest_supported_version=lowest,
        highest_supported_version=highest,
        pre_shared_key=_psk(settings),
    )
    try:
        if settings.dtls:
            configuration = tls.DTLSConfiguration(**common)
        else:
            configuration = tls.TLSConfiguration(**common)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise EngineConfigError(BAD_CONFIG, f"TLS configuration rejected: {exc}") from None
    return configuration, native_ids, tuple(notes)


def client_context(plan: EnginePlan, settings: TlsSettings) -> tuple[object, tuple[str, ...]]:
    """The mbedtls ClientContext for a plan, with apply_native_conf applied, and the notes
    that produced: built once per (configuration, native settings) and shared by every
    connection that has them (an Mbed TLS ssl_config serves any number of ssl contexts;
    each wrap_buffers() is a fresh session, and a shared context never resumes one).
    The key: the configuration object (the entry holds it, so its id stays unique), what
    apply_native_conf sets (exact suite list, renegotiation, the key-log callable itself)
    and whether the native layer can set it now."""
    native = _native()
    key = (id(plan.configuration), plan.native_suites, settings.renegotiation, settings.keylog,
           native.generation(), native.available())
    entry = _CONTEXTS.get(key)
    if entry is not None and entry[0] is plan.configuration:
        return entry[1], entry[2]
    import mbedtls.tls as tls
    from mbedtls.exceptions import TLSError

    try:
        context = tls.ClientContext(plan.configuration)
    except (TLSError, ValueError, TypeError, NotImplementedError) as exc:
        raise EngineConfigError(BAD_CONFIG, f"TLS configuration rejected: {exc}") from None
    notes: list[str] = []
    apply_native_conf(context, plan, settings, notes)
    _remember(_CONTEXTS, key, (plan.configuration, context, tuple(notes)))
    return context, tuple(notes)


# Built configurations (by _config_key) and contexts (see client_context), oldest first; a few dozen distinct SSL contexts
# at most in practice (6 per modem, mostly alike), bounded anyway.
_PLANS: dict[tuple, tuple] = {}
_CONTEXTS: dict[tuple, tuple] = {}
_CACHE_MAX = 64


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_MAX:
        del cache[next(iter(cache))]
    cache[key] = value


def apply_native_conf(context, plan: EnginePlan, settings: TlsSettings, notes: list[str]) -> None:
    """Exact cipher-suite list (RC4/3DES), renegotiation, key log and seclevel 0's
    VERIFY_NONE, through native."""
    no_auth = settings.seclevel == 0
    wanted = plan.native_suites or settings.renegotiation or settings.keylog
    if not (wanted or no_auth):
        return
    from . import native

    if not native.available():
        # build_plan already refused suites that need native; what is left are
        # optional features, so degrade with a note.  (Seclevel 0 stays VERIFY_OPTIONAL:
        # only a chain too long for Mbed TLS's walk tells the difference.)
        if wanted:
            notes.append("tls_engine.native unavailable: no renegotiation / key log")
        return
    try:
        conf = native.NativeConf(context)
        if plan.native_suites:
            conf.set_ciphersuites(plan.native_suites)
    except Exception as exc:
        if plan.native_suites:
            raise EngineConfigError(UNSUPPORTED_CIPHER, f"cannot offer the configured cipher suites: {exc}") from None
        # (only optional features wanted: they degrade, as without the native layer)
        notes.append(f"tls_engine.native failed: {exc}: no renegotiation / key log / VERIFY_NONE")
        return
    if no_auth:
        # Seclevel 0, no authentication: Mbed TLS does not walk the server's chain at all
        # (VERIFY_OPTIONAL would, and fails a chain of 10+ untrusted certificates with
        # MBEDTLS_ERR_X509_FATAL_ERROR, which OPTIONAL does not forgive).
        conf.set_verify_none(True)
    if settings.renegotiation:
        try:
            conf.set_renegotiation(True)
        except Exception as exc:
            notes.append(f"renegotiation not enabled: {exc}")
    if settings.keylog:
        try:
            conf.set_keylog(settings.keylog)
        except Exception as exc:
            notes.append(f"key log not enabled: {exc}")
