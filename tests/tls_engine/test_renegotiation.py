"""Server-initiated renegotiation (openssl s_server renegotiates on an "r" line)."""
from __future__ import annotations

import shutil

import pytest

from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings, native

from .openssl_peer import OpensslServer
from .servers import ClientDriver

pytestmark = [
    pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI"),
    pytest.mark.skipif(not native.available(), reason="renegotiation needs tls_engine.native"),
]


@pytest.fixture
def reneg_server(tmp_path, rsa_leaf):
    pem = tmp_path / "server.pem"
    rsa_leaf.private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = OpensslServer("-cert", str(pem), "-tls1_2")
    yield server
    server.stop()


def test_renegotiation_enabled_keeps_the_connection(reneg_server):
    driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost", renegotiation=True)),
                          reneg_server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    reneg_server.type(b"r\n")           # HelloRequest, then a full handshake in the data phase
    driver.pump(lambda ev: False, timeout=0.5)
    reneg_server.type(b"after renegotiation\n")
    driver.pump(lambda ev: b"after renegotiation" in driver.received(), timeout=3)
    driver.close()
    assert driver.received() == b"after renegotiation\n"
    assert driver.session.state == "established"


def test_renegotiation_disabled_refuses(reneg_server):
    driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost")), reneg_server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    reneg_server.type(b"r\n")           # client answers no_renegotiation; OpenSSL then gives up
    driver.pump(lambda ev: any(isinstance(e, TlsFailure) for e in ev), timeout=3)
    driver.close()
    assert isinstance(driver.failure(), TlsFailure)
    assert b"no renegotiation" in reneg_server.stop()
