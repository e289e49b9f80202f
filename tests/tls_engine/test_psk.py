"""PSK against `openssl s_server -psk` (Python 3.11's ssl module has no server PSK)."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings

from .servers import ClientDriver

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

KEY_HEX = "00112233445566778899aabbccddeeff"


@pytest.fixture
def psk_server():
    procs = []

    def start():
        probe = socket.create_server(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-nocert", "-psk", KEY_HEX,
             "-psk_identity", "modem-1", "-cipher", "PSK:@SECLEVEL=0", "-tls1_2",
             "-naccept", "2", "-quiet"],  # 2: one for the readiness probe below
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        for _ in range(100):  # ready once it accepts a TCP connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.02)
        return port, proc

    yield start
    for proc in procs:
        proc.kill()
        proc.communicate()


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
    time.sleep(0.2)
    driver.close()
    proc.kill()
    out, _ = proc.communicate()
    assert b"psk data" in out


def test_wrong_psk_key_fails_the_handshake(psk_server):
    port, _ = psk_server()
    settings = TlsSettings(server_name="localhost", psk_identity=b"modem-1", psk_key=b"wrong key")
    driver = ClientDriver(TlsClientSession(settings), port)
    result = driver.handshake()
    driver.close()
    assert isinstance(result, TlsFailure) and result.kind == "handshake_failed", result
