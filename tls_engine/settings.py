"""TlsSettings: everything one AT+QSSLOPEN needs from its SSL context, already
resolved to bytes (the emulator reads the RAM:/UFS: files, the engine never does)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

# <sslversion> values of AT+QSSLCFG="sslversion".
SSL3_0, TLS1_0, TLS1_1, TLS1_2, TLS_ALL = 0, 1, 2, 3, 4
# <dtls_ver> values of AT+QSSLCFG="dtlsversion".
DTLS1_0, DTLS1_2 = 0, 1


@dataclass(frozen=True)
class TlsSettings:
    server_name: str                        # host as dialled (NOT the routed address)
    ssl_version: int = TLS_ALL              # 0 SSL3.0 .. 3 TLS1.2 (pinned), 4 all
    cipher_suites: tuple[int, ...] = ()     # IANA ids in offer order; () = table default
    seclevel: int = 0                       # 0 none, 1 server auth, 2 + client cert
    ca_pem: bytes | None = None             # trust anchors, PEM, concatenated
    ca_label: str = ""                      # e.g. "RAM:cacert.pem", for reasons
    client_cert_pem: bytes | None = None    # leaf first; extra PEM certs = chain
    client_key_pem: bytes | None = None
    client_key_password: bytes | None = None    # an encrypted client key's password
    ignore_local_time: bool = True          # EC2x default 1
    clock: Callable[[], datetime] | None = None  # modem clock (aware); None = system
    sni: bool = False
    ignore_multicert_chain_verify: bool = False
    ignore_invalid_cert_sign: bool = False
    ignore_cert_chain: bool = False         # the server's chain is not verified (leaf dates, name are)
    psk_identity: bytes | None = None
    psk_key: bytes | None = None
    dtls: bool = False
    dtls_version: int = DTLS1_2
    alpn: tuple[str, ...] = ()              # () = no ALPN extension
    session_cache: bool = True
    renegotiation: bool = False
    verify_hostname: bool = True            # seclevel >= 1: check server_name against the cert
    keylog: Callable[[str], None] | None = None   # NSS key-log lines
    monotonic: Callable[[], float] | None = None  # seconds: DTLS retransmission's clock (the
                                                  # modem's time); None = time.monotonic

    @property
    def trust_label(self) -> str:
        return self.ca_label or "the configured CA certificate"
