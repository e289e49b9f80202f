"""PSK against `openssl s_server -psk` (Python 3.11's ssl module has no server PSK)."""
from __future__ import annotations

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import OpenSslServer
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings

KEY_HEX = "00112233445566778899aabbccddeeff"


@pytest.fixture
def psk_server():
    servers = []

    def start():
        server = OpenSslServer(["-nocert", "-psk", KEY_HEX, "-psk_identity", "modem-1",
                                "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"])
        servers.append(server)
        return server.port, server

    yield start
    for server in servers:
        server.stop()


def test_psk_handshake_with_table_default_plus_psk_suites(psk_server):
    port, proc = psk_server()
    settings = TlsSettings(server_name="localhost", psk_identity=b"modem-1",
                           psk_key=bytes.fromhex(KEY_HEX))
    driver = ClientDriver(TlsClientSession(settings), port)
    result = driver.handshake()
    assert isinstance(result, HandshakeComplete), result
    assert "PSK" in result.cipher_name
    driver.session.send(b"psk data\n")
    driver.flush()
    proc.wait_for_output(rb"psk data")
    driver.close()


def test_wrong_psk_key_fails_the_handshake(psk_server):
    port, _ = psk_server()
    settings = TlsSettings(server_name="localhost", psk_identity=b"modem-1", psk_key=b"wrong key")
    driver = ClientDriver(TlsClientSession(settings), port)
    result = driver.handshake()
    driver.close()
    assert isinstance(result, TlsFailure) and result.kind == "handshake_failed", result
