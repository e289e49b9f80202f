"""Sans-IO TLS/DTLS client engine for the modem emulator (python-mbedtls 2.10.1).

See tls_engine/README.md for the API, the certificate-verification policy and what
depends on tls_engine.native.
"""
from .ciphers import CIPHER_TABLE, CipherSuite, default_offer, suite_available, suite_offerable
from .errors import (BAD_CONFIG, HANDSHAKE_FAILED, PROTOCOL_ERROR, UNSUPPORTED_CIPHER,
                     UNSUPPORTED_VERSION, VERIFY_FAILED, AppData, HandshakeComplete, PeerClosed,
                     TlsFailure)
from .resumption import SessionCache
from .session import TlsClientSession
from .settings import TlsSettings

__all__ = [
    "TlsSettings", "TlsClientSession", "SessionCache",
    "HandshakeComplete", "AppData", "PeerClosed", "TlsFailure",
    "CIPHER_TABLE", "CipherSuite", "default_offer", "suite_available", "suite_offerable",
    "UNSUPPORTED_VERSION", "UNSUPPORTED_CIPHER", "BAD_CONFIG", "VERIFY_FAILED",
    "HANDSHAKE_FAILED", "PROTOCOL_ERROR",
]
