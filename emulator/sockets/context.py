"""SSL contexts: what AT+QSSLCFG stores, and how a context becomes the TLS
engine's settings at AT+QSSLOPEN.

Every option of the EC2x note §2.2.1 is declared once in OPTIONS with its
default and range (the note's underlined values); the AT handlers of both
modules read and write through this table, and to_tls_settings() is the one
place where an option meets the TLS engine.  A module family's own defaults
(emulator/sockets/dialects.py) are given to each context it creates.
"""
from __future__ import annotations

import string

from dataclasses import dataclass, field
from typing import Callable

from tls_engine import TlsSettings
from tls_engine.ciphers import ALL_SUITES_CODE


@dataclass(frozen=True)
class Option:
    kind: str            # "int" | "path" | "ciphers" | "psk" | "alpn"
    default: object
    lo: int = 0
    hi: int = 1

    def test_range(self) -> str:
        if self.hi - self.lo == 1:
            return f"({self.lo},{self.hi})"
        return f"({self.lo}-{self.hi})"


OPTIONS: dict[str, Option] = {
    "sslversion": Option("int", 4, 0, 4),
    "ciphersuite": Option("ciphers", (ALL_SUITES_CODE,)),
    "cacert": Option("path", ""),
    "cacertex": Option("path", ""),
    "clientcert": Option("path", ""),
    "clientkey": Option("path", ""),
    "seclevel": Option("int", 0, 0, 2),
    "ignorelocaltime": Option("int", 1, 0, 1),
    "negotiatetime": Option("int", 300, 10, 300),
    "sni": Option("int", 0, 0, 1),
    "closetimemode": Option("int", 0, 0, 1),
    "ignoremulticertchainverify": Option("int", 0, 0, 1),
    "ignoreinvalidcertsign": Option("int", 0, 0, 1),
    "psk": Option("psk", ("", "")),
    "dtls": Option("int", 0, 0, 1),
    "dtlsversion": Option("int", 1, 0, 1),
    "session_cache": Option("int", 1, 0, 1),
    "alpn": Option("alpn", ""),
    "renegotiation": Option("int", 0, 0, 1),
    # Quectel BG96/BG95 options (no EC2x document has them; docs/behaviour.md, "BG96 options"):
    # checkhost 1 = the dialled name must match the server's certificate (0: not checked;
    # its default on such a module is the profile's ssl.verify_hostname, SslService);
    # ignorecertchain 1 = the server's chain is not verified (its leaf's dates and name are).
    "checkhost": Option("int", 0, 0, 1),
    "ignorecertchain": Option("int", 0, 0, 1),
}


def default_values(overrides: dict[str, object] | None = None) -> dict[str, object]:
    """Every option's default (the note's), with a module family's own on top."""
    values = {k: o.default for k, o in OPTIONS.items()}
    values.update(overrides or {})
    return values


@dataclass
class SslContext:
    ctx_id: int
    defaults: dict[str, object] = field(default_factory=default_values)
    values: dict[str, object] = field(init=False)
    # The clientkey's <key_pwd> (a module whose profile has ssl.clientkey_password): the
    # password of an encrypted client key, never shown back by a query.
    key_password: str = field(init=False, default="")
    # to_tls_settings' last (inputs, TlsSettings): an open with the same inputs shares it.
    memo: tuple | None = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.values = dict(self.defaults)

    def __getitem__(self, name: str):
        return self.values[name]

    def __setitem__(self, name: str, value) -> None:
        self.values[name] = value

    def settings_would_build(self) -> bool:
        """Its options are the ones to_tls_settings last built settings from (the memo): a
        build from them raises nothing file-independent again."""
        return self.memo is not None and self.memo[0][1] == tuple(self.values.values())

    def reset(self) -> None:
        """Back to the defaults (a reboot: the settings are not saved)."""
        self.values = dict(self.defaults)
        self.key_password = ""


class SetupError(Exception):
    """A context that cannot be used for a handshake (missing file, ...);
    kind uses the engine's failure kinds so one error table maps both."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


HEX_DIGITS = "0123456789abcdefABCDEF"


def parse_cipher_list(text: str) -> tuple[int, ...] | None:
    """"0X0035", "0x0035:0XC02F" (':' or ';' between ids); None when malformed."""
    parts = [p.strip() for p in text.replace(";", ":").split(":")]
    ids = []
    for p in parts:
        digits = p[2:]
        if not p.upper().startswith("0X") or not 1 <= len(digits) <= 4 or digits.strip(HEX_DIGITS):
            return None                 # (int(p, 16) alone would take "0X_35" and "0X 35")
        ids.append(int(digits, 16))
    return tuple(ids) if ids else None


def format_cipher_list(ids: tuple[int, ...]) -> str:
    return ":".join(f"0X{i:04X}" for i in ids)


class MaterialUnreadable(Exception):
    """read_material(path): the material is there but cannot be read now (the host's
    storage: a directory in its place, no permission); the text says why."""


def to_tls_settings(ctx: SslContext, *, host: str, profile, read_material: Callable[[str], bytes | None],
                    clock: Callable, keylog=None, allow_ciphers: tuple[int, ...] | None = None,
                    monotonic: Callable[[], float] | None = None) -> TlsSettings:
    """Resolve a context into engine settings.  read_material(path) returns the
    bytes stored under a path (EC2x: a UFS/RAM file; ML302: a certificate slot)."""
    seclevel = ctx["seclevel"]

    def material(option: str, needed: bool) -> tuple[bytes | None, str]:
        path = ctx[option]
        if not path:
            if needed:
                raise SetupError("bad_config", f"seclevel {seclevel} needs AT+QSSLCFG=\"{option}\" set")
            return None, ""
        try:
            data = read_material(path)
        except MaterialUnreadable as exc:
            raise SetupError("bad_config", f"{option} file {path} cannot be read: {exc}") from None
        if data is None and needed:
            raise SetupError("bad_config", f"{option} file {path} not found")
        return data, path

    ca_pem = ca_label = None
    if seclevel >= 1:
        ca_pem, ca_label = material("cacert", True)
        extra, extra_label = material("cacertex", False)
        if extra is None and ctx["cacertex"]:        # set, but no such file: as for cacert
            raise SetupError("bad_config", f"cacertex file {ctx['cacertex']} not found")
        if extra:
            ca_pem = ca_pem.rstrip(b"\n") + b"\n" + extra
            ca_label = f"{ca_label} / {extra_label}"
    cert = key = None
    pair_required = bool(profile.get("ssl.client_pair_required", False))
    if seclevel == 2 and (pair_required or ctx["clientcert"] or ctx["clientkey"]):
        # The EC2x note (sec. 4, item 3): the client pair has to be uploaded when the server
        # requires client authentication -- none set, the open goes ahead as at seclevel 1
        # and an empty Certificate answers a CertificateRequest.  The ML302 manual (2.1
        # remark) needs the pair at seclevel 2 (ssl.client_pair_required).  A path that is
        # set must hold its material, and half a pair is no pair.
        cert, _ = material("clientcert", True)
        key, _ = material("clientkey", True)
    # Everything below is a function of these inputs (the files' bytes read above, every
    # option's value): the same inputs as the last open's give its settings again -- built
    # anew they cost an open ~20 us before its TCP connect (measured through the pty), and
    # equal settings also find the engine's configuration by identity.
    inputs = (host, tuple(ctx.values.values()), ctx.key_password, ca_pem, ca_label, cert, key,
              profile, clock, keylog, allow_ciphers, monotonic)
    memo = ctx.memo
    if memo is not None and memo[0] == inputs:
        return memo[1]
    key_password = None
    if cert is not None and ctx.key_password:
        key_password = _host_bytes(ctx.key_password, "client key password")

    identity, psk_key = ctx["psk"]
    identity_bytes = _host_bytes(identity, "PSK identity") if identity else None
    ciphers = tuple(ctx["ciphersuite"])
    if ciphers == (ALL_SUITES_CODE,):
        if identity:
            ciphers = ()     # the engine's full offer: the note's table plus the PSK suites
        else:
            table = tuple(int(x, 16) for x in profile["ssl.cipher_suites"])
            ciphers = tuple(c for c in table if allow_ciphers is None or c in allow_ciphers)
    # ALPN protocol ids are opaque bytes on the wire (RFC 7301): the host's bytes, unchanged.
    alpn = tuple(_host_bytes(p, "ALPN name") for p in str(ctx["alpn"]).split(",") if p)
    settings = TlsSettings(
        server_name=host,
        ssl_version=ctx["sslversion"],
        cipher_suites=ciphers,
        seclevel=seclevel,
        ca_pem=ca_pem,
        ca_label=ca_label or "",
        client_cert_pem=cert,
        client_key_pem=key,
        client_key_password=key_password,
        ignore_local_time=bool(ctx["ignorelocaltime"]),
        clock=clock,
        sni=bool(ctx["sni"]),
        ignore_multicert_chain_verify=bool(ctx["ignoremulticertchainverify"]),
        ignore_invalid_cert_sign=bool(ctx["ignoreinvalidcertsign"]),
        psk_identity=identity_bytes,
        psk_key=_psk_key_bytes(psk_key) if identity else None,
        dtls=bool(ctx["dtls"]),
        dtls_version=ctx["dtlsversion"],
        alpn=alpn,
        session_cache=bool(ctx["session_cache"]),
        renegotiation=bool(ctx["renegotiation"]),
        verify_hostname=_checks_names(ctx, profile),
        ignore_cert_chain=_module_option(ctx, profile, "ignorecertchain"),
        keylog=keylog,
        monotonic=monotonic,
    )
    ctx.memo = (inputs, settings)
    return settings


def _module_option(ctx: SslContext, profile, name: str) -> bool:
    """An option only some modules have (the profile's ssl.options): off on the others."""
    return name in profile["ssl.options"] and bool(ctx[name])


def _checks_names(ctx: SslContext, profile) -> bool:
    """Whether the dialled name is checked against the server's certificate: the context's
    "checkhost" on a module that has the option (its default: ssl.verify_hostname), else
    the profile's ssl.verify_hostname."""
    if "checkhost" in profile["ssl.options"]:
        return bool(ctx["checkhost"])
    return verify_hostname(profile)


def verify_hostname(profile) -> bool:
    """The profile's ssl.verify_hostname (absent: true)."""
    return bool(profile.get("ssl.verify_hostname", True))


def _host_bytes(text: str, what: str) -> bytes:
    """The bytes the host sent: the AT parser decodes parameters as latin-1, so every
    char is one byte of the command line (never re-encoded as UTF-8)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise SetupError("bad_config", f"{what} {text!r} holds characters that are not bytes") from None


def _psk_key_bytes(text: str) -> bytes:
    """The note gives <key> as a string; a hex string is taken as the key bytes
    (what `openssl s_server -psk` expects), anything else as the bytes the host sent."""
    # (only hex digits: bytes.fromhex would also skip spaces, turning "0011 2233 " into 4 bytes)
    if text and len(text) % 2 == 0 and all(c in string.hexdigits for c in text):
        return bytes.fromhex(text)
    return _host_bytes(text, "PSK key")
