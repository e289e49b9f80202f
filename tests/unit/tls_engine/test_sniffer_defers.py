"""At seclevel >= 1 the engine judges the server's certificate itself, from the sniffed
Certificate message, before Mbed TLS reads it.  A Certificate Mbed TLS 2.28 never reaches --
behind a handshake message split across records (it reassembles none: -0x7080, no alert) or
behind a ServerHello it refuses (a version outside the configured range, a suite it did not
offer) -- must not be judged: the open fails as Mbed TLS fails, as it does at seclevel 0,
never with "verify_failed" and a bad_certificate alert the module would not send.

The sniffer marks a message that began in an earlier record (`split`); the differential
tests run the engine and python-mbedtls itself against the same OpenSSL server (Python
ssl over memory BIOs) and compare how each fails and the alert the server got.
"""
from __future__ import annotations

import ssl

import pytest
from mbedtls import tls as mbtls
from mbedtls import x509 as mbx509
from mbedtls.exceptions import TLSError

from tests.unit.tls_engine.test_records import hs, tls_record
from tls_engine import TlsClientSession, TlsFailure, TlsSettings
from tls_engine.records import HandshakeSniffer
from tls_engine.settings import TLS1_2

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")


def test_a_message_completed_in_its_own_record_is_not_split():
    sniffer = HandshakeSniffer(dtls=False)
    msgs, _ = sniffer.feed(tls_record(22, hs(2, b"h" * 40) + hs(11, b"c" * 30)) + tls_record(22, hs(14, b"")))
    assert [(m.msg_type, m.split) for m in msgs] == [(2, False), (11, False), (14, False)]


def test_a_message_begun_in_an_earlier_record_is_split_and_only_that_one():
    """ServerHello whole; the Certificate's first 10 bytes in record 1, the rest in record 2
    (with ServerHelloDone behind it, whole); then a message across three records."""
    cert = hs(11, b"c" * 30)
    big = hs(12, b"k" * 50)
    sniffer = HandshakeSniffer(dtls=False)
    got = []
    for record in (tls_record(22, hs(2, b"h" * 40) + cert[:10]), tls_record(22, cert[10:] + hs(14, b"")),
                   tls_record(22, big[:2]), tls_record(22, big[2:20]), tls_record(22, big[20:])):
        msgs, _ = sniffer.feed(record)
        got += [(m.msg_type, m.split) for m in msgs]
    assert got == [(2, False), (11, True), (14, False), (12, True)]


class Server:
    """An OpenSSL server in memory, TLS 1.1 at most (seclevel 0: OpenSSL 3 allows it then)."""

    def __init__(self, leaf) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.load_cert_chain(leaf.chain_path, leaf.key_path)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.error: str | None = None

    def take(self, data: bytes) -> bytes:
        self.incoming.write(data)
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            self.error = self.error or exc.reason
        return self.outgoing.read()


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
