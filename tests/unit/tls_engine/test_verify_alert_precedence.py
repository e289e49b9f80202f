"""The alert an OpenSSL server receives when the server certificate has SEVERAL faults.

Mbed TLS 2.28 flags every fault of a chain (x509_crt_verify_chain: the dates of each
certificate on the way up, NOT_TRUSTED where no issuer is found; x509_crt_verify_name;
ssl_check_cert_usage) and sends ONE alert, chosen by precedence in
ssl_parse_certificate_verify: a name mismatch (bad_certificate, 42) before key usage or key
(unsupported_certificate, 43), before expired (certificate_expired, 45), before not trusted
(unknown_ca, 48), before anything else (certificate_unknown, 46 -- a not-yet-valid date).
The host sees 566 / -1 whatever the alert; the server's side (its logs, a backend team's
alarms) sees the alert.  Each case runs both clients in memory against the same OpenSSL
server (Python ssl, SSLObject over MemoryBIO): the emulator's engine at seclevel 1 with the
modem clock at the real time, and python-mbedtls itself (VERIFY_REQUIRED, the same anchor,
the same dialled name); the server's error names the alert it got.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from mbedtls import tls as mbtls
from mbedtls import x509 as mbx509
from mbedtls.exceptions import TLSError

from emulator.testing.peers.memory import MemoryTlsServer
from tests.unit.tls_engine.test_verify_differential import OPENSSL_ALERT_REASONS
from tls_engine import TlsClientSession, TlsFailure, TlsSettings

NOW = datetime.now(timezone.utc)
PAST = (NOW - timedelta(days=800), NOW - timedelta(days=400))      # expired
FUTURE = (NOW + timedelta(days=400), NOW + timedelta(days=800))    # not yet valid

# OpenSSL's names of what it received (TLS 1.2)
BAD_CERT, EXPIRED, UNKNOWN, UNKNOWN_CA = (OPENSSL_ALERT_REASONS[n] for n in (42, 45, 46, 48))

# (case, leaf's names, validity, anchor: the issuing CA or another, dialled name, alert)
CASES = [
    ("expired_and_wrong_name", ("other.example",), PAST, "issuer", "localhost", BAD_CERT),
    ("not_yet_valid_and_wrong_name", ("other.example",), FUTURE, "issuer", "localhost", BAD_CERT),
    ("untrusted_and_wrong_name", ("other.example",), None, "other", "localhost", BAD_CERT),
    ("untrusted_and_expired", ("localhost",), PAST, "other", "localhost", EXPIRED),
    ("untrusted_and_not_yet_valid", ("localhost",), FUTURE, "other", "localhost", UNKNOWN_CA),
    ("untrusted_expired_and_wrong_name", ("other.example",), PAST, "other", "localhost", BAD_CERT),
    # one fault each: the alert of its own
    ("expired_only", ("localhost",), PAST, "issuer", "localhost", EXPIRED),
    ("not_yet_valid_only", ("localhost",), FUTURE, "issuer", "localhost", UNKNOWN),
    ("untrusted_only", ("localhost",), None, "other", "localhost", UNKNOWN_CA),
    ("wrong_name_only", ("other.example",), None, "issuer", "localhost", BAD_CERT),
]


Server = MemoryTlsServer          # OpenSSL, TLS 1.2 at most, in memory


def alert_to_emulator(leaf, anchor_pem: bytes, host: str) -> str | None:
    server = Server(leaf)
    session = TlsClientSession(TlsSettings(server_name=host, seclevel=1, ca_pem=anchor_pem,
                                           ca_label="UFS:ca.pem", ignore_local_time=False,
                                           clock=lambda: datetime.now(timezone.utc)))
    session.start()
    for _ in range(10):
        out = b"".join(session.outgoing())
        if session.state != "handshaking":
            server.take(out)
            break
        session.receive(server.take(out))
    failures = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failures and failures[0].kind == "verify_failed", failures
    return server.error


def alert_to_mbedtls(leaf, anchor_pem: bytes, host: str) -> str | None:
    server = Server(leaf)
    trust = mbtls.TrustStore()
    trust.add(mbx509.CRT.from_PEM(anchor_pem.decode()))
    client = mbtls.ClientContext(mbtls.TLSConfiguration(
        validate_certificates=True, trust_store=trust,
        lowest_supported_version=mbtls.TLSVersion.TLSv1_2,
        highest_supported_version=mbtls.TLSVersion.TLSv1_2)).wrap_buffers(host)
    for _ in range(10):
        try:
            client.do_handshake()
        except (mbtls.WantReadError, mbtls.WantWriteError):
            pass
        except TLSError:
            server.take(client.peek_outgoing(1 << 16))     # the alert it queued
            return server.error
        out = client.peek_outgoing(1 << 16)
        client.consume_outgoing(len(out))
        client.receive_from_network(server.take(out))
    raise AssertionError("Mbed TLS accepted the chain")


@pytest.fixture(scope="module")
def leaves(pki):
    made = {}
    for case, names, window, _, _, _ in CASES:
        validity = dict(not_before=window[0], not_after=window[1]) if window else {}
        made[case] = pki.issue(f"precedence-{case}", *names, **validity)
    return made


@pytest.mark.parametrize("case,names,window,anchor,host,alert", CASES, ids=[c[0] for c in CASES])
def test_the_server_gets_the_alert_mbedtls_would_send(pki, leaves, case, names, window, anchor, host, alert):
    leaf = leaves[case]
    anchor_pem = (pki.ca if anchor == "issuer" else pki.wrong_ca).cert_pem
    assert alert_to_mbedtls(leaf, anchor_pem, host) == alert      # (the rule, as the library applies it)
    assert alert_to_emulator(leaf, anchor_pem, host) == alert
