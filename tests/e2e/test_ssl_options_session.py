"""AT+QSSLCFG "session_cache", "negotiatetime", "closetimemode" (with AT+QSSLCLOSE's
<close_timeout>) and "renegotiation" through the pty, judged by the server: OpenSSL's
session_reused, a server that never answers the handshake, a server that ignores
close_notify, and `openssl s_server` renegotiating on "r"."""
from __future__ import annotations

import re
import threading

import pytest

from emulator.testing.peers import OpenSslServer, TlsServer
from tests.e2e.ssl_options_support import HOST, cfg, close, open_ssl, opened, s_server_round_trip


def socket_state(modem, client_id: int) -> int | None:
    m = re.search(rb'\+QSSLSTATE: %d,"SSLClient","[^"]*",\d+,\d+,(\d+),' % client_id,
                  modem.at(f"AT+QSSLSTATE={client_id}"))
    return int(m.group(1)) if m else None


# -- session_cache ---------------------------------------------------------------------------------
@pytest.mark.needs_native
def test_session_cache_resumes_on_the_same_context(ec2x, net, pki):
    with TlsServer(pki.server) as server:
        net(server)
        for _ in range(2):
            assert open_ssl(ec2x, 0) == 0
            server.wait_handshake()
            close(ec2x)
        assert [c.session_reused for c in server.connections] == [False, True]
        assert open_ssl(ec2x, 1) == 0                  # another context: its own sessions
        assert server.wait_handshake().session_reused is False
        close(ec2x)


@pytest.mark.needs_native
def test_session_cache_0_means_full_handshakes(ec2x, net, pki):
    with TlsServer(pki.server) as server:
        net(server)
        cfg(ec2x, "session_cache", 0, 0)
        for _ in range(2):
            assert open_ssl(ec2x, 0) == 0
            server.wait_handshake()
            close(ec2x)
        assert [c.session_reused for c in server.connections] == [False, False]


@pytest.mark.needs_native
def test_changing_the_context_forgets_its_sessions(ec2x, net, pki):
    with TlsServer(pki.server) as server:
        net(server)
        assert open_ssl(ec2x, 0) == 0
        close(ec2x)
        cfg(ec2x, "sni", 0, 1)                         # any AT+QSSLCFG write on context 0
        for _ in range(2):
            assert open_ssl(ec2x, 0) == 0
            server.wait_handshake()
            close(ec2x)
        assert [c.session_reused for c in server.connections] == [False, False, True]


# -- negotiatetime -------------------------------------------------------------------------------------
@pytest.fixture
def timed(emulator, open_modem):
    """An EC2x on manual time with PDP context 1 active: (host, advance(seconds)); the
    clock moves only after the modem has read everything the host wrote."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"

    advance = emulator.advancer(port, host)
    return host, advance


def test_negotiatetime_gives_569_when_the_server_never_answers(timed, emulator, pki):
    ec2x, advance = timed
    with TlsServer(pki.server, mode="silent") as server:   # accepts TCP, reads, never answers
        emulator.router.add_map(HOST, 8443, "127.0.0.1", server.port)
        cfg(ec2x, "negotiatetime", 0, 10)              # the minimum, on the modem's clock
        assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",8443') == b"\r\nOK\r\n"
        server.wait_for(lambda: server.connections and server.conn.client_hello, 5, "ClientHello")
        assert socket_state(ec2x, 0) == 1              # opening
        advance(9.9)
        assert socket_state(ec2x, 0) == 1              # still opening after 9.9 s
        assert b"+QSSLOPEN" not in ec2x.transcript     # nothing before the timeout
        advance(0.1)
        assert opened(ec2x, 0, timeout=60) == 569
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        assert socket_state(ec2x, 0) is None           # the id is free again
        server.wait_for(lambda: server.conn.closed, 5, "the emulator's close")
        assert not server.conn.handshake_done


# -- closetimemode / AT+QSSLCLOSE <close_timeout> -----------------------------------------------------
@pytest.fixture
def deaf_server(pki):
    """Completes the handshake, then neither reads (so close_notify is ignored) nor closes
    the TCP connection until the test sets `release`."""
    release = threading.Event()

    def hold(conn):
        release.wait(60)

    with TlsServer(pki.server, legacy=True, handler=hold) as server:
        yield server, release
        release.set()


def test_closetimemode_1_close_timeout_in_ms(ec2x, net, deaf_server):
    server, release = deaf_server
    net(server)
    cfg(ec2x, "closetimemode", 0, 1)
    assert open_ssl(ec2x, 0) == 0
    # 300 ms: the answer comes although the server still holds the connection.
    assert ec2x.at("AT+QSSLCLOSE=0,300", timeout=30) == b"\r\nOK\r\n"
    assert not server.conn.done.is_set()               # server side: still open, not closed
    assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"


def test_closetimemode_0_close_timeout_in_seconds(timed, emulator, deaf_server):
    ec2x, advance = timed
    server, release = deaf_server
    emulator.router.add_map(HOST, 8443, "127.0.0.1", server.port)
    assert open_ssl(ec2x, 0) == 0                      # closetimemode 0 (default): seconds
    ec2x.write(b"AT+QSSLCLOSE=0,300\r")                # 300 s: the close waits for the server
    advance(299)                                       # on the modem's clock: 300 ms is long over
    assert ec2x.quiet_for(0.05) == b""
    release.set()                                      # the server closes its side
    assert ec2x.read_until(b"\r\nOK\r\n", timeout=30) == b"\r\nOK\r\n"
    assert server.conn.done.wait(5)
    assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"


def test_close_timeout_0_aborts_at_once(ec2x, net, deaf_server):
    server, release = deaf_server
    net(server)
    assert open_ssl(ec2x, 0) == 0
    assert ec2x.at("AT+QSSLCLOSE=0,0", timeout=30) == b"\r\nOK\r\n"
    assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"


# -- renegotiation --------------------------------------------------------------------------------------
@pytest.fixture
def reneg_server(pki):
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"])
    yield server
    server.stop()


@pytest.mark.needs_native
def test_renegotiation_1_accepts_and_data_flows_after(ec2x, net, reneg_server):
    net(reneg_server)
    cfg(ec2x, "renegotiation", 0, 1)
    assert open_ssl(ec2x, 0) == 0
    reneg_server.wait_for_output(rb"CIPHER is")
    mark = reneg_server.mark()
    reneg_server.write(b"r\n")                         # HelloRequest: a new full handshake
    reneg_server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)   # s_server: it completed
    s_server_round_trip(ec2x, reneg_server, b"after renegotiation?\n", b"yes\n", since=mark)
    # Data the host sends while a renegotiation is under way waits for it, then goes out.
    mark = reneg_server.mark()
    reneg_server.write(b"r\n")
    assert ec2x.send_data(0, b"during renegotiation\n") == b"\r\nSEND OK\r\n"
    reneg_server.wait_for_output(rb"during renegotiation", since=mark)
    reneg_server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)
    assert b"no renegotiation" not in reneg_server.stderr
    assert socket_state(ec2x, 0) == 2                  # still connected
    close(ec2x)


@pytest.mark.needs_native
def test_renegotiation_0_refuses(ec2x, net, reneg_server):
    """What the server sees: a no_renegotiation alert ("no renegotiation" in s_server's
    output); OpenSSL then ends the connection and the modem reports it closed."""
    net(reneg_server)
    assert open_ssl(ec2x, 0) == 0                      # renegotiation 0 is the default
    reneg_server.wait_for_output(rb"CIPHER is")
    reneg_server.write(b"r\n")
    ec2x.seen(b'+QSSLURC: "closed",0\r\n', 10)
    reneg_server.wait_for_output(rb"ssl3_read_bytes:no renegotiation", stream="stderr")
    assert socket_state(ec2x, 0) == 4                  # closing: the host still has to close it
    close(ec2x)
