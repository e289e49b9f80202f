"""The key log (BackgroundEmulator(keylog=...), the CLI's --keylog / SSLKEYLOGFILE) checked
against OpenSSL's own key log of the same session, and AT+QSSLCFG "psk", "dtls",
"dtlsversion" through the pty against `openssl s_server` (PSK, DTLS 1.0/1.2, a lost
datagram dropped by a loopback relay)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, TlsServer, UdpDropRelay
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, recv_all, s_server_round_trip, trust

ROOT = Path(__file__).resolve().parents[2]
PSK_HEX = "00112233445566778899aabbccddeeff"


def server_lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.startswith("CLIENT_RANDOM ")]


def echo_session(modem, server) -> None:
    """One TLS session through the pty: open, 5 bytes echoed, close."""
    assert modem.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert open_ssl(modem, 0) == 0
    assert modem.send_data(0, b"hello") == b"\r\nSEND OK\r\n"
    assert recv_all(modem, 0, 5) == b"hello"
    close(modem)
    server.wait_for(lambda: server.conn.closed, 5, "the close")


# -- key log ------------------------------------------------------------------------------------
@pytest.mark.needs_native
def test_keylog_callback_matches_the_servers_keylog(pki, tmp_path):
    lines: list[str] = []
    server_log = tmp_path / "server.keylog"
    with TlsServer(pki.server, keylog=server_log) as server, \
            BackgroundEmulator(offline=True, keylog=lines.append) as emu:
        emu.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        modem = Host(emu.add_modem("ec2x", state_dir=tmp_path / "s").path)
        try:
            modem.at("ATE0")
            echo_session(modem, server)
            cfg(modem, "session_cache", 0, 0)          # a second, full handshake
            assert open_ssl(modem, 0) == 0
            close(modem)
            server.wait_for(lambda: len(server.connections) == 2 and server.conn.closed, 5)
        finally:
            modem.close()
    assert len(lines) == 2 and lines == server_lines(server_log)


@pytest.mark.needs_native
@pytest.mark.parametrize("how", ["--keylog", "SSLKEYLOGFILE"])
def test_cli_keylog_file_matches_the_servers_keylog(pki, tmp_path, how):
    ours, theirs = tmp_path / "emulator.keylog", tmp_path / "server.keylog"
    with TlsServer(pki.server, keylog=theirs) as server:
        args = [sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "s"),
                "--route", f"{HOST}:{PORT}=127.0.0.1:{server.port}"]
        env = dict(os.environ)
        env.pop("SSLKEYLOGFILE", None)
        if how == "--keylog":
            args += ["--keylog", str(ours)]
        else:
            env["SSLKEYLOGFILE"] = str(ours)
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            path = proc.stdout.readline().strip()
            assert path.startswith("/dev/pts/"), proc.stderr.read() if proc.poll() is not None else path
            modem = Host(path)
            modem.at("ATE0")
            echo_session(modem, server)
            modem.close()
        finally:
            proc.terminate()
            assert proc.wait(10) == 0
    assert ours.read_text().splitlines() == server_lines(theirs)
    assert len(server_lines(theirs)) == 1


# -- psk ------------------------------------------------------------------------------------------
def test_psk_identity_and_hex_key_against_s_server(ec2x, net):
    with OpenSslServer(["-nocert", "-psk", PSK_HEX, "-psk_identity", "modem-1",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        net(server)
        cfg(ec2x, "psk", 0, '"modem-1"', f'"{PSK_HEX}"')
        assert open_ssl(ec2x, 0) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK")
        s_server_round_trip(ec2x, server, b"psk up\n", b"psk down\n")
        close(ec2x)
        cfg(ec2x, "psk", 0, '"modem-1"', '"ffeeddccbbaa99887766554433221100"')
        assert open_ssl(ec2x, 0) == 566                # wrong key: the server refuses


@pytest.mark.needs_native
def test_psk_session_at_seclevel_1_renegotiates_with_no_certificate_to_recheck(ec2x, net, pki):
    """A PSK session has no server certificate; at seclevel 1 with renegotiation on, the
    server's renegotiation (s_server 'r') completes and data flow after it: there is no chain
    to verify again (the renegotiation check's "no leaf: nothing to check"), so nothing
    fails, whatever the CA, with dates checked (ignorelocaltime 0).  (A mutation pass found
    no test of that case.)"""
    with OpenSslServer(["-nocert", "-psk", PSK_HEX, "-psk_identity", "modem-1",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        net(server)
        trust(ec2x, 0, pki.ca.cert_pem)
        cfg(ec2x, "psk", 0, '"modem-1"', f'"{PSK_HEX}"')
        cfg(ec2x, "renegotiation", 0, 1)
        cfg(ec2x, "ignorelocaltime", 0, 0)             # dates checked (none to check)
        assert open_ssl(ec2x, 0) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK")
        mark = server.mark()
        server.write(b"r\n")
        server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)
        s_server_round_trip(ec2x, server, b"after psk renegotiation\n", b"fine\n", since=mark)
        assert b'+QSSLURC: "closed"' not in bytes(ec2x.transcript)
        close(ec2x)


# -- dtls / dtlsversion ---------------------------------------------------------------------------------
@pytest.fixture
def dtls_server(pki):
    servers = []

    def start(flag: str) -> OpenSslServer:
        cert, key = pki.server.load_args
        server = OpenSslServer(["-cert", cert, "-key", key, flag, "-cipher", "ALL:@SECLEVEL=0"])
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


@pytest.mark.parametrize("dtlsversion, flag", [(0, "-dtls1"), (1, "-dtls1_2")])
def test_dtls_datagrams_up_and_down(ec2x, net, dtls_server, dtlsversion, flag):
    server = dtls_server(flag)
    net(server)
    cfg(ec2x, "dtls", 0, 1)
    cfg(ec2x, "dtlsversion", 0, dtlsversion)
    assert open_ssl(ec2x, 0) == 0
    server.wait_for_output(rb"CIPHER is")
    s_server_round_trip(ec2x, server, b"datagram up\n", b"datagram down\n")
    close(ec2x)


def test_dtls_handshake_survives_a_lost_datagram(ec2x, net, dtls_server):
    server = dtls_server("-dtls1_2")
    with UdpDropRelay(server.address, drop=[("s2c", 0)]) as relay:
        net(relay)
        cfg(ec2x, "dtls", 0, 1)
        assert open_ssl(ec2x, 0, timeout=30) == 0      # after Mbed TLS's 1 s retransmission
        hellos = [d for d in relay.passed("c2s") if d.data[0] == 22 and d.data[13] == 1]
        assert len(relay.dropped()) == 1 and len(hellos) >= 2
        assert ec2x.send_data(0, b"after the loss\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"after the loss")
        close(ec2x)
