"""At seclevel >= 1 the engine judges the server's certificate itself, from the sniffed
Certificate message, and holds the verdict until Mbed TLS has taken that message.  A
Certificate Mbed TLS 2.28 never takes -- behind a ServerHello it refuses (a version outside
the configured range), in one of its messages split across records -- must not be judged:
the open fails as Mbed TLS fails, as at seclevel 0, never with "verify_failed" and a
bad_certificate alert the module would not send.  (More shapes: tests/e2e/
test_adversarial_hostile_servers_8.py, test_review_changes_1205_c.py.)

The differential test runs the engine and python-mbedtls itself against the same OpenSSL
server (Python ssl over memory BIOs) and compares how each fails and the alert the server got.
"""
from __future__ import annotations

import ssl

import pytest
from mbedtls import tls as mbtls
from mbedtls import x509 as mbx509
from mbedtls.exceptions import TLSError

from emulator.testing.peers.memory import MemoryTlsServer
from tls_engine import TlsClientSession, TlsFailure, TlsSettings
from tls_engine.settings import TLS1_2

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")


def Server(leaf) -> MemoryTlsServer:
    """An OpenSSL server in memory, TLS 1.1 at most (seclevel 0: OpenSSL 3 allows it then)."""
    return MemoryTlsServer(leaf, minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1,
                           ciphers="DEFAULT:@SECLEVEL=0")


def engine_against(server: Server, settings: TlsSettings) -> TlsFailure:
    session = TlsClientSession(settings)
    session.start()
    for _ in range(10):
        out = b"".join(session.outgoing())
        if session.state != "handshaking":
            server.take(out)
            break
        session.receive(server.take(out))
    failures = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failures, session.state
    return failures[0]


def mbedtls_against(server: Server, anchor_pem: bytes, host: str) -> int:
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
        except TLSError as exc:
            server.take(client.peek_outgoing(1 << 16))
            return abs(exc.err)
        out = client.peek_outgoing(1 << 16)
        client.consume_outgoing(len(out))
        client.receive_from_network(server.take(out))
    raise AssertionError("Mbed TLS took the ServerHello")


@pytest.fixture(scope="module")
def older_server_leaf(pki):
    return pki.issue("sniffer-defers", "other.example")       # not the name dialled


def test_a_server_choosing_a_version_below_the_pinned_one_fails_on_the_version_not_the_name(
        pki, older_server_leaf):
    """sslversion pinned to TLS 1.2, a server that answers TLS 1.1 with a certificate for
    another name: Mbed TLS stops at the ServerHello (bad version, protocol_version alert);
    the engine fails the same way -- not verify_failed with bad_certificate."""
    server = Server(older_server_leaf)
    failure = engine_against(server, TlsSettings(server_name="localhost", seclevel=1, ca_pem=pki.ca.cert_pem,
                                                 ca_label="RAM:cacert.pem", ssl_version=TLS1_2))
    reference = Server(older_server_leaf)
    err = mbedtls_against(reference, pki.ca.cert_pem, "localhost")
    assert err == 0x6E80                                   # MBEDTLS_ERR_SSL_BAD_HS_PROTOCOL_VERSION
    assert failure.kind == "handshake_failed", failure
    assert "TLSv1.1" in failure.reason and "sslversion" in failure.reason, failure.reason
    assert server.error == reference.error, (server.error, reference.error)
