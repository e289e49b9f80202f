"""Events the session emits, and the failure kinds the emulator maps to AT results."""
from __future__ import annotations

from dataclasses import dataclass

# TlsFailure.kind values.
UNSUPPORTED_VERSION = "unsupported_version"
UNSUPPORTED_CIPHER = "unsupported_cipher"
BAD_CONFIG = "bad_config"
VERIFY_FAILED = "verify_failed"
HANDSHAKE_FAILED = "handshake_failed"
PROTOCOL_ERROR = "protocol_error"
TIMED_OUT = "timeout"      # a DTLS handshake nobody answered: Mbed TLS's retransmissions ran out
FAILURE_KINDS = (UNSUPPORTED_VERSION, UNSUPPORTED_CIPHER, BAD_CONFIG, VERIFY_FAILED, HANDSHAKE_FAILED,
                 PROTOCOL_ERROR, TIMED_OUT)


@dataclass
class HandshakeComplete:
    version: str            # "TLSv1.2", "DTLSv1.2", ...
    cipher_id: int          # IANA id
    cipher_name: str        # IANA style, TLS_...
    alpn: str | None
    resumed: bool


@dataclass
class AppData:
    data: bytes


@dataclass
class PeerClosed:
    """close_notify received (TLS or DTLS)."""


@dataclass
class TlsFailure:
    kind: str
    reason: str


class EngineConfigError(Exception):
    """Raised inside the engine while turning TlsSettings into an Mbed TLS
    configuration; start() converts it into a TlsFailure event."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# TLS alert descriptions (RFC 5246 §7.2, RFC 7301, RFC 8446 for 116/120), used to
# name the alert a server sent in clear during the handshake.
ALERT_NAMES = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
    22: "record_overflow", 40: "handshake_failure", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired",
    46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name",
    115: "unknown_psk_identity", 116: "certificate_required",
    120: "no_application_protocol",
}

# What a failed alert usually means for a modem user, to make reasons actionable.
ALERT_HINTS = {
    40: "no shared cipher suite or parameters",
    70: "the server does not accept the offered TLS version",
    48: "the server does not trust the client certificate",
    42: "the server rejected the client certificate",
    116: "the server requires a client certificate (seclevel 2)",
    115: "the server does not know the PSK identity",
    51: "wrong PSK key or bad signature",
    120: "the server supports none of the offered ALPN protocols",
    112: "the server does not know the SNI name",
    71: "the server requires a stronger cipher suite",
}


# The same alerts answering a ClientHello that did not carry the extension they are about:
# SNI off for the context, SNI for an IP address (RFC 6066 has none), no ALPN offered.
ALERT_HINTS_WITHOUT = {
    "sni off": "the server requires a name and none was sent (SNI is off for this context)",
    "sni ip": "the server requires a name and none was sent (the server address is an IP "
              "address, which SNI never carries)",
    "alpn": "the server requires an ALPN protocol and none was offered",
}


def describe_alert(description: int, without: str | None = None) -> str:
    """without: what the ClientHello lacked that the alert is about (ALERT_HINTS_WITHOUT's
    keys: unrecognized_name's SNI, no_application_protocol's ALPN); None: the usual hint."""
    name = ALERT_NAMES.get(description, "unknown")
    hint = ALERT_HINTS_WITHOUT[without] if without is not None else ALERT_HINTS.get(description)
    text = f"server sent fatal alert {name}({description})"
    return f"{text}: {hint}" if hint else text


# Mbed TLS 2.28 error codes python-mbedtls reports as TLSError.err (absolute value).
MBEDTLS_FATAL_ALERT = 0x7780
MBEDTLS_PEER_CLOSE_NOTIFY = 0x7880
MBEDTLS_BAD_VERSION = 0x6E80
MBEDTLS_BAD_MAC = 0x7180
MBEDTLS_INVALID_RECORD = 0x7200
MBEDTLS_TIMEOUT = 0x6800
MBEDTLS_FEATURE_UNAVAILABLE = 0x7080
MBEDTLS_BAD_SERVER_HELLO = 0x7980
MBEDTLS_BAD_CERTIFICATE_MSG = 0x7A00       # (MBEDTLS_ERR_SSL_BAD_HS_CERTIFICATE)

_ERROR_SENTENCES = {
    MBEDTLS_FATAL_ALERT: "the server sent a fatal alert",
    MBEDTLS_BAD_VERSION: "server chose a TLS version outside the configured sslversion",
    MBEDTLS_BAD_MAC: "record MAC check failed (data corrupted or wrong keys)",
    MBEDTLS_INVALID_RECORD: "invalid TLS record received",
    MBEDTLS_TIMEOUT: "DTLS handshake timed out (no answer to retransmissions)",
    0x7980: "bad ServerHello (unsupported cipher suite, version or extension chosen)",
}


def describe_mbedtls_error(err: int, message: str = "") -> str:
    code = abs(int(err))
    base = _ERROR_SENTENCES.get(code) or (message.strip() or "TLS error")
    return f"{base} (mbedtls -0x{code:04X})"
