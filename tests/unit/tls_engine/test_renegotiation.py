"""Server-initiated renegotiation (openssl s_server renegotiates on an "r" line)."""
from __future__ import annotations

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import OpenSslServer
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings

pytestmark = pytest.mark.needs_native       # renegotiation needs tls_engine.native


@pytest.fixture
def reneg_server(rsa_leaf):
    cert, key = rsa_leaf.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-cipher", "ALL:@SECLEVEL=0"]) as server:
        yield server


def test_renegotiation_enabled_keeps_the_connection(reneg_server):
    driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost", renegotiation=True)),
                          reneg_server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    reneg_server.write(b"r\n")          # HelloRequest, then a full handshake in the data phase
    driver.pump(lambda ev: False, timeout=0.5)
    reneg_server.write(b"after renegotiation\n")
    driver.pump(lambda ev: b"after renegotiation" in driver.received(), timeout=3)
    driver.close()
    assert driver.received() == b"after renegotiation\n"
    assert driver.session.state == "established"


def test_renegotiation_disabled_refuses(reneg_server):
    driver = ClientDriver(TlsClientSession(TlsSettings(server_name="localhost")), reneg_server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    reneg_server.write(b"r\n")          # client answers no_renegotiation; OpenSSL then gives up
    driver.pump(lambda ev: any(isinstance(e, TlsFailure) for e in ev), timeout=3)
    driver.close()
    assert isinstance(driver.failure(), TlsFailure)
    reneg_server.wait_for_output(rb"no renegotiation", stream="stderr")
