"""Adversarial, round 4: replay fidelity (emulator/tools/trace.py) for EC2x TCP/IP sessions
over a slow network, and a review of commit f55e3ab (an AT+QIOPEN "TCP" socket's connect
waits for its recorded moment in the replay: ReplayPlainSession, the stand-in's header line).
Earlier rounds (test_adversarial_replay_fidelity.py, _2.py, _3.py,
test_adversarial_blind_spots.py, test_review_replay_changes.py, test_trace.py,
test_adversarial_replay_sessions.py) recorded no TCP/IP socket whose connect took time; the
promise under test is the same: a trace recorded from any real session replays
(`replay_main([path]) == 0`), a deliberately changed one is named as a difference (exit 1).

Sessions are recorded through the pty on manual time (open_modem(..., manual_time=True),
emulator.advancer) against real loopback peers (emulator.testing.peers: TcpServer,
TlsServer, UdpEchoServer, an SNTP server, a bound socket that refuses and later listens);
the slow network is the control API's "net" latency (a TCP connect takes its round trip on
the modem's clock).

Replayed with no difference (and, where cheap, one recorded byte changed -> exit 1):
* a slow connect to a server that speaks first (buffer mode, AT+QISTATE while opening)
  beside a push-mode SSL socket;
* servers that close (FIN) or reset (RST) right after accept, over a slow network;
* a connect refused over a slow network (no poll), then a slow retry that connects;
* two TCP sockets to one destination whose connects complete in the other order;
* connects that complete while the host is at a "> " prompt, while another socket is
  online (transparent mode, "+++"), while nobody holds the port (a hang-up and a new host);
* a slow transparent-mode connect (CONNECT at the round trip), push mode with a banner and
  a FIN that come with the connect;
* AT+QISWTMD / AT+QISEND / AT+QIRD=<id>,0 on a socket still opening (ERROR), its banner
  pushed after AT+QISWTMD;
* one session with an SSL socket, a TCP LISTENER and its client, a slow TCP client, a UDP
  client, AT+QISDE=0, AT+QICFG="dataformat" (hex), AT+QISENDEX, AT+QIRD=<id>,0,
  AT+QISEND=<id>,0;
* a listener's client that connects and speaks while a slow outgoing connect is under way;
* AT+QIDNSGIP, AT+QPING and AT+QNTP while a slow connect is under way.

Bugs found (strict xfails then; all fixed since, their tests say "Was a bug, fixed"):
* AT+QGDCNT? after any TCP exchange replays with 13 more bytes received: the stand-in's
  header line of f55e3ab is counted as network data (a regression of f55e3ab);
* an AT+QIOPEN "TCP" closed by the host (AT+QICLOSE) while its connect is under way: the
  replay fails the open at once with 565 (AT+QISTATE meanwhile shows no socket, AT+QICLOSE
  answers ERROR);
* the same, then a new socket to the same server: the abandoned connect takes the new
  socket's stand-in script, the new socket's open fails (566);
* a refused connect over a slow network, polled with AT+QISTATE: the replay refuses at
  once (the socket is gone when the host asks);
* a connect that took longer than 10 s of host silence: the stand-in says "connected" after
  10 s (ReplayPeer._wait_host's cap), so AT+QISTATE meanwhile says connected;
* several connects that complete while the host is at a "> " prompt (their +QIOPEN URCs
  held until SEND OK): the replay's URCs come in a random order;
* a slow connect ended by AT+QIDEACT (570), then a new socket to the same server: the
  deactivated connect takes the new socket's stand-in script, the new open fails (566).

No timing assertions; manual time wherever the network's latency matters.
"""
from __future__ import annotations

import datetime
import re
import socket
import struct
import threading
import time

import pytest

from emulator.sockets.tcpip import tcpip_service
from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer
from emulator.testing.peers.sntp import SntpServer
from tests.e2e import replay_support as rs

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
HOST = "www.iottest.work"           # a name the shared PKI's server certificate carries
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
QISTATE = re.compile(rb'\r\n\+QISTATE: (\d+),"TCP","[\d.]+",\d+,\d+,(\d),1,\d+,\d,"usbmodem"\r\n\r\nOK\r\n')


# -- helpers -------------------------------------------------------------------------------------
class CrLfHost(Host):
    """A host that ends its command lines with CR LF (most drivers do)."""
    line_end = b"\r\n"


def _state(host, cid: int) -> int:
    """The <socket_state> AT+QISTATE=1,<cid> shows (1 opening, 2 connected, 4 closing)."""
    answer = host.at(f"AT+QISTATE=1,{cid}")
    m = QISTATE.fullmatch(answer)
    assert m and int(m.group(1)) == cid, answer
    return int(m.group(2))


def _advance_until(host, advance, pattern, step: float = 0.5, tries: int = 60) -> bytes:
    """Move the modem's clock by `step` until `pattern` came (a slow link's packets are due
    on the modem's time, counted from when they reached it); what came up to it."""
    for _ in range(tries):
        advance(step)
        try:
            return host.read_until(pattern, timeout=0.3)
        except AssertionError:
            continue
    return host.read_until(pattern)


def _tcp_open(host, cid: int, mode: int, name: str = "tcp.example", port: int = 7000) -> None:
    assert host.at(f'AT+QIOPEN=1,{cid},"TCP","{name}",{port},0,{mode}') == OK


def _slow(emulator, ms: int) -> None:
    """The control API's one-way latency (a TCP connect from now on takes 2 x ms)."""
    assert emulator.control("net", latency_ms=ms)["ok"]


def _timed_modem(open_modem, emulator, path, server, slow_ms: int | None = None):
    """An EC2x on manual time tracing to `path`, tcp.example:7000 routed to `server`, the
    context active, and (slow_ms) a modem-wide one-way latency: (host, advance, port)."""
    emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
    host, port = open_modem("ec2x", trace=str(path), manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at(ATTACH) == OK
    if slow_ms is not None:
        _slow(emulator, slow_ms)
    return host, advance, port


def _echo_close(conn) -> None:
    """TcpServer behaviour: echo until the modem's FIN, then close (AT+QICLOSE's linger ends)."""
    while data := conn.sock.recv(4096):
        conn.sock.sendall(data)
    conn.close()


def _changed_named(tmp_path, capsys, path, kind: str, old: str, new: str, shown: str | None = None) -> None:
    """One recorded record of `kind` with data `old` made `new`: the replay names the
    difference (exit 1), `shown` (default: new) in what it got."""
    changed = rs.changed(tmp_path, path, lambda r: r["kind"] == kind and r.get("data") == old,
                         lambda r: {**r, "data": new})
    code, out = rs.replay(capsys, changed)
    assert code == 1 and "got:" in out and (shown or new) in out.split("got:")[1], out


# -- replayed with no difference -----------------------------------------------------------------
def test_a_slow_connect_to_a_server_that_speaks_first_beside_an_ssl_socket_replays(
        open_modem, emulator, pki, tmp_path, capsys):
    """A push-mode SSL socket; then a 0.8 s TCP connect (AT+QISTATE: opening), the server's
    banner read in buffer mode, an SSL echo, an upper-cased TCP answer.  A changed banner is
    named."""
    path = tmp_path / "banner.trace"

    def banner(conn) -> None:
        conn.sock.sendall(b"220 hello\r\n")
        while data := conn.sock.recv(100):
            conn.sock.sendall(data.upper())
        conn.close()

    with TcpServer(behave=banner) as server, TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,1') == OK
        assert host.read_until(b"+QSSLOPEN: 2,0\r\n") == b"\r\n+QSSLOPEN: 2,0\r\n"
        _slow(emulator, 400)
        _tcp_open(host, 0, 0)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b'"recv",0\r\n') == b'\r\n+QIOPEN: 0,0\r\n\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 11\r\n220 hello\r\n\r\n\r\nOK\r\n"
        _slow(emulator, 0)
        assert host.send_data(2, b"tls") == b"\r\nSEND OK\r\n"
        assert host.read_until(b"tls\r\n") == b'\r\n+QSSLURC: "recv",2,3\r\ntls\r\n'
        rs.qisend(host, 0, b"abc")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 3\r\nABC\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0;+QSSLCLOSE=2") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)
    _changed_named(tmp_path, capsys, path, "received", "220 hello\r\n", "221 HELLO\r\n", "221 HELLO")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_server_that_closes_right_after_accept_over_a_slow_network_replays(
        open_modem, emulator, tmp_path, capsys, how):
    """Push mode, a 0.6 s connect polled while opening: +QIOPEN: 0,0 then "closed" (the
    server's FIN, or its RST), AT+QISTATE (closing), AT+QICLOSE; then (FIN) the same on a
    fast network."""
    path = tmp_path / f"close_{how}.trace"

    polled = threading.Event()

    def close_at_once(conn) -> None:
        if how == "rst":
            # (once the host has polled: the modem's own connect is complete by then -- an
            # RST before it would fail the connect itself, 566, on loopback)
            polled.wait(10)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    with TcpServer(behave=close_at_once) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=300)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        polled.set()
        assert _advance_until(host, advance, b'"closed",0\r\n') == \
            b'\r\n+QIOPEN: 0,0\r\n\r\n+QIURC: "closed",0\r\n'
        assert _state(host, 0) == 4
        assert host.at("AT+QICLOSE=0") == OK
        _slow(emulator, 0)
        if how == "fin":       # (an RST on a fast network: the connect and the RST race)
            _tcp_open(host, 1, 1)
            assert host.read_until(b'"closed",1\r\n') == b'\r\n+QIOPEN: 1,0\r\n\r\n+QIURC: "closed",1\r\n'
            assert host.at("AT+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


class _RefusingThenListening:
    """A bound socket that refuses connects (not listening) until listen(); then it echoes
    one connection until the modem closes."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def listen(self) -> None:
        self.sock.listen(1)

        def serve() -> None:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(100):
                    conn.sendall(data)
        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        self.sock.close()


def _refused_then_retried(open_modem, emulator, path, poll: bool) -> None:
    server = _RefusingThenListening()
    try:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=300)
        _tcp_open(host, 0, 0)
        if poll:                                  # the RST comes a round trip later
            assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
        server.listen()
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _slow(emulator, 0)
        rs.qisend(host, 0, b"again")
        assert host.read_until(b"again\r\n") == b'\r\n+QIURC: "recv",0,5\r\nagain\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    finally:
        server.close()


def test_a_refused_connect_then_a_slow_retry_replays(open_modem, emulator, tmp_path, capsys):
    """A connect refused over a slow network (566 a round trip later; the host waits for
    it), the server starts listening, a retry on the same id polled while opening, an echo."""
    path = tmp_path / "refused.trace"
    _refused_then_retried(open_modem, emulator, path, poll=False)
    rs.replays(capsys, path)
    _changed_named(tmp_path, capsys, path, "received", "again", "AGAIN")


def test_two_tcp_sockets_to_one_server_connecting_in_the_other_order_replay(
        open_modem, emulator, tmp_path, capsys):
    """Socket 3 opened first over a 1 s round trip, socket 1 second on a fast network: 1
    connects and talks first, 3 later.  The server answers "you said <first words>".  A
    changed answer on socket 3 is named."""
    path = tmp_path / "two_same.trace"

    def greet(conn) -> None:
        conn.sock.sendall(b"you said " + conn.sock.recv(100))
        _echo_close(conn)

    with TcpServer(behave=greet) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 3, 1)
        _slow(emulator, 0)
        _tcp_open(host, 1, 1)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        assert _state(host, 3) == 1
        rs.qisend(host, 1, b"one")
        assert host.read_until(b"you said one\r\n") == b'\r\n+QIURC: "recv",1,12\r\nyou said one\r\n'
        assert _advance_until(host, advance, b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
        rs.qisend(host, 3, b"three")
        assert host.read_until(b"you said three\r\n") == b'\r\n+QIURC: "recv",3,14\r\nyou said three\r\n'
        assert host.at("AT+QICLOSE=1;+QICLOSE=3") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)
    _changed_named(tmp_path, capsys, path, "received", "you said three", "you said THREE")


def test_a_connect_that_completes_while_the_host_is_at_a_prompt_replays(open_modem, emulator, tmp_path, capsys):
    """Socket 1 (buffer) opening over a 1 s round trip; socket 0 (push) connected; the host
    at socket 0's "> " prompt while the clock passes 1's connect, then types the data a byte
    a write: SEND OK, +QIOPEN: 1,0, the echo."""
    path = tmp_path / "prompt.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 1, 0)
        _slow(emulator, 0)
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        host.write("AT+QISEND=0,5\r")
        assert host.read_until(b"> ") == b"\r\n> "
        advance(1.5)
        for byte in b"hello":
            host.write(bytes([byte]))
        assert host.read_until(b"hello\r\n") == \
            b'\r\nSEND OK\r\n\r\n+QIOPEN: 1,0\r\n\r\n+QIURC: "recv",0,5\r\nhello\r\n'
        rs.qisend(host, 1, b"buffered")
        assert host.read_until(b'"recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
        assert host.at("AT+QIRD=1,100") == b"\r\n+QIRD: 8\r\nbuffered\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0;+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_a_connect_that_completes_while_another_socket_is_online_replays(open_modem, emulator, tmp_path, capsys):
    """Socket 1 opening over a 1 s round trip; socket 0 in transparent mode (CONNECT, data
    echoed) while the clock passes 1's connect; "+++" with its guard times: OK, then
    +QIOPEN: 1,0; socket 1 used in buffer mode."""
    path = tmp_path / "online.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 1, 0)
        _slow(emulator, 0)
        host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"online")
        advance(0.5)                                  # transwaittm
        assert host.read_exactly(6) == b"online"
        advance(1.5)                                  # socket 1 connects; the guard time
        host.write(b"+++")
        advance(1.5)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 1,0\r\n"
        rs.qisend(host, 1, b"buffered")
        assert host.read_until(b'"recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
        assert host.at("AT+QIRD=1,100") == b"\r\n+QIRD: 8\r\nbuffered\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0;+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_a_connect_that_completes_while_nobody_holds_the_port_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN over a 1 s round trip, the host closes the port, the clock passes the
    connect, a new host (CR LF line ends) opens the port: AT+QISTATE connected, an echo in
    push mode."""
    path = tmp_path / "hangup.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        assert host.at(ATTACH) == OK
        _slow(emulator, 500)
        _tcp_open(host, 0, 1)
        emulator.wait_received(port, host.written, 10)
        host.close()
        deadline = time.monotonic() + 10
        while emulator.run(lambda: port.port.attached):
            assert time.monotonic() < deadline, "the modem never saw the hang-up"
            time.sleep(0.01)
        emulator.advance(port, 1.5)
        _slow(emulator, 0)
        host = CrLfHost(port.path)
        try:
            assert _state(host, 0) == 2
            rs.qisend(host, 0, b"back")
            assert host.read_until(b"back\r\n") == b'\r\n+QIURC: "recv",0,4\r\nback\r\n'
            assert host.at("AT+QICLOSE=0") == OK
            rs.flush(emulator)
            emulator.stop()
        finally:
            host.close()
    rs.replays(capsys, path)


def test_a_slow_transparent_mode_connect_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QIOPEN with <access_mode> 2 over a 1 s round trip: nothing for 0.5 s of the
    modem's clock, CONNECT at the round trip, data echoed, "+++", AT+QICLOSE."""
    path = tmp_path / "transparent.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r')
        advance(0.5)
        assert host.quiet_for(0.2) == b""
        advance(1.0)
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        _slow(emulator, 0)
        host.write(b"online")
        advance(0.5)
        assert host.read_exactly(6) == b"online"
        advance(1.5)
        host.write(b"+++")
        advance(1.5)
        assert host.read_until(b"OK\r\n") == OK
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_push_mode_banner_and_fin_with_a_slow_connect_replay(open_modem, emulator, tmp_path, capsys):
    """A server that sends its banner and closes as it accepts, push mode, a 0.6 s connect
    polled while opening: +QIOPEN: 0,0, the banner pushed, "closed"."""
    path = tmp_path / "push_banner.trace"

    def banner_bye(conn) -> None:
        conn.sock.sendall(b"BANNER+FIN")
        conn.close()

    with TcpServer(behave=banner_bye) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=300)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b'"closed",0\r\n') == (
            b'\r\n+QIOPEN: 0,0\r\n\r\n+QIURC: "recv",0,10\r\nBANNER+FIN\r\n\r\n+QIURC: "closed",0\r\n')
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)
    _changed_named(tmp_path, capsys, path, "received", "BANNER+FIN", "BANNER-FIN")


def test_commands_on_a_socket_still_opening_replay(open_modem, emulator, tmp_path, capsys):
    """While a slow connect is under way AT+QISWTMD, AT+QISEND and AT+QIRD=<id>,0 answer
    ERROR (the socket is not connected); after +QIOPEN: 0,0 and the banner's "recv",
    AT+QISWTMD=0,1 pushes the banner at once, then an echo is pushed."""
    path = tmp_path / "still_opening.trace"

    def banner(conn) -> None:
        conn.sock.sendall(b"hi there")
        _echo_close(conn)

    with TcpServer(behave=banner) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 0, 0)
        assert host.at("AT+QISWTMD=0,1") == ERROR
        assert host.at("AT+QISEND=0,3") == ERROR
        assert host.at("AT+QIRD=0,0") == ERROR
        assert _advance_until(host, advance, b'"recv",0\r\n') == b'\r\n+QIOPEN: 0,0\r\n\r\n+QIURC: "recv",0\r\n'
        _slow(emulator, 0)
        assert host.at("AT+QISWTMD=0,1") == OK
        assert host.read_until(b"hi there\r\n") == b'\r\n+QIURC: "recv",0,8\r\nhi there\r\n'
        rs.qisend(host, 0, b"bye")
        assert host.read_until(b"bye\r\n") == b'\r\n+QIURC: "recv",0,3\r\nbye\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_ssl_listener_slow_tcp_udp_qisde_and_hex_dataformat_in_one_session_replay(
        open_modem, emulator, pki, tmp_path, capsys):
    """An SSL socket (push), a TCP LISTENER (buffer) and its client, a slow TCP client
    (buffer, polled while opening), a UDP client (push); AT+QISDE=0, AT+QICFG="dataformat"
    1,1 (AT+QISEND in hex, AT+QIRD answering hex), AT+QISENDEX, partial reads,
    AT+QIRD=<id>,0, AT+QISEND=<id>,0, the client's close.  A changed client byte is named."""
    path = tmp_path / "mixed.trace"
    emulator.router.add_listen(2020, "127.0.0.1", 0)
    with (TcpServer(behave=_echo_close) as server, TlsServer(pki.server, mode="echo") as tls,
          UdpEchoServer() as udp):
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        emulator.router.add_map("udp.example", 9000, "127.0.0.1", udp.port)
        emulator.router.add_map(HOST, 443, "127.0.0.1", tls.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{HOST}",443,1') == OK
        assert host.read_until(b"+QSSLOPEN: 5,0\r\n") == b"\r\n+QSSLOPEN: 5,0\r\n"
        assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,0') == OK
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _slow(emulator, 400)
        _tcp_open(host, 0, 0)
        _slow(emulator, 0)
        assert host.at('AT+QIOPEN=1,2,"UDP","udp.example",9000,0,1') == OK
        assert host.read_until(b"+QIOPEN: 2,0\r\n") == b"\r\n+QIOPEN: 2,0\r\n"
        addr = emulator.run(lambda: tcpip_service(port.modem).listeners[1].server.sockets[0].getsockname())
        client = socket.create_connection(addr[:2])
        try:
            host.read_until(re.compile(rb'\+QIURC: "incoming",3,1,"127\.0\.0\.1",\d+\r\n'))
            assert _state(host, 0) == 1
            assert _advance_until(host, advance, b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            assert host.at("AT+QISDE=0") == OK
            assert host.at('AT+QICFG="dataformat",1,1') == OK
            host.write("AT+QISEND=0,3\r")
            assert host.read_until(b"> ") == b"\r\n> "
            host.write(b"414243")
            assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
            assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
            assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 3\r\n414243\r\n\r\nOK\r\n"
            assert host.at('AT+QISENDEX=2,"7564700D0A"') == b"\r\nSEND OK\r\n"
            assert host.read_until(b"udp\r\n\r\n") == b'\r\n+QIURC: "recv",2,5\r\nudp\r\n\r\n'
            client.sendall(b"from client")
            assert host.read_until(b'"recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'
            assert host.send_data(5, b"tls") == b"\r\nSEND OK\r\n"
            assert host.read_until(b"tls\r\n") == b'\r\n+QSSLURC: "recv",5,3\r\ntls\r\n'
            assert host.at('AT+QICFG="dataformat",0,0') == OK
            assert host.at("AT+QIRD=3,4") == b"\r\n+QIRD: 4\r\nfrom\r\n\r\nOK\r\n"
            assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 11,4,7\r\n\r\nOK\r\n"
            assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 3,3,0\r\n\r\nOK\r\n"
            assert re.fullmatch(rb"\r\n\+QISEND: 3,\d+,\d+\r\n\r\nOK\r\n", host.at("AT+QISEND=0,0"))
        finally:
            client.close()
        assert host.read_until(b'"closed",3\r\n') == b'\r\n+QIURC: "closed",3\r\n'
        assert host.at("AT+QICLOSE=3;+QICLOSE=0;+QICLOSE=2;+QICLOSE=1;+QSSLCLOSE=5") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)
    _changed_named(tmp_path, capsys, path, "received", "from client", "FROM client", "FROM")


def test_a_listeners_client_speaking_during_a_slow_connect_replays(open_modem, emulator, tmp_path, capsys):
    """A push-mode TCP LISTENER; a 0.8 s outgoing connect; meanwhile a client connects and
    speaks (its words pushed before +QIOPEN: 0,0); both answered; the client closes."""
    path = tmp_path / "listener_slow.trace"
    emulator.router.add_listen(2020, "127.0.0.1", 0)
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server)
        assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,1') == OK
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        _slow(emulator, 400)
        _tcp_open(host, 0, 1)
        addr = emulator.run(lambda: tcpip_service(port.modem).listeners[1].server.sockets[0].getsockname())
        client = socket.create_connection(addr[:2])
        try:
            client.sendall(b"early words")
            host.read_until(re.compile(rb'\+QIURC: "incoming",2,1,"127\.0\.0\.1",\d+\r\n'))
            assert _advance_until(host, advance, b"early words\r\n", step=0.25) == \
                b'\r\n+QIURC: "recv",2,11\r\nearly words\r\n'
            assert _advance_until(host, advance, b"+QIOPEN: 0,0\r\n", step=0.25) == b"\r\n+QIOPEN: 0,0\r\n"
            _slow(emulator, 0)
            rs.qisend(host, 2, b"to client")
            assert client.recv(100) == b"to client"
            rs.qisend(host, 0, b"to server")
            assert host.read_until(b"to server\r\n") == b'\r\n+QIURC: "recv",0,9\r\nto server\r\n'
        finally:
            client.close()
        assert host.read_until(b'"closed",2\r\n') == b'\r\n+QIURC: "closed",2\r\n'
        assert host.at("AT+QICLOSE=2;+QICLOSE=0;+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_dns_ping_and_ntp_during_a_slow_connect_replay(open_modem, emulator, tmp_path, capsys):
    """A 0.8 s connect in push mode; meanwhile AT+QIDNSGIP of its name and AT+QPING (300 ms
    replies, on the modem's clock); +QIOPEN after the run; AT+QNTP; an echo."""
    path = tmp_path / "netutil.trace"
    emulator.router.add_dns("pinged.example", "106.12.79.254")
    emulator.router.add_ping("pinged.example", 300)
    with (SntpServer(datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)) as ntp,
          TcpServer(behave=_echo_close) as server):
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=400)
        _tcp_open(host, 0, 1)
        assert host.at('AT+QIDNSGIP=1,"tcp.example"') == OK
        host.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'))
        assert host.at('AT+QPING=1,"pinged.example",2,2') == OK
        for _ in range(60):                           # the ping run and the connect, in any order
            if b"+QPING: 0,2,2,0,300,300,300\r\n" in host.transcript and b"+QIOPEN: 0,0\r\n" in host.transcript:
                break
            advance(0.25)
            host.quiet_for(0.1)
        assert b"+QPING: 0,2,2,0,300,300,300\r\n" in host.transcript and b"+QIOPEN: 0,0\r\n" in host.transcript
        _slow(emulator, 0)
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        assert re.search(rb'\+QNTP: 0,"2021/03/04,', host.read_until(re.compile(rb'QNTP: .*\r\n')))
        rs.qisend(host, 0, b"after")
        assert host.read_until(b"after\r\n") == b'\r\n+QIURC: "recv",0,5\r\nafter\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


# -- bugs ----------------------------------------------------------------------------------------
# BUG (a regression of f55e3ab): the stand-in of an AT+QIOPEN "TCP" socket now sends a header
# line ('{"ok": true}\n', 13 bytes) before the recorded plaintext.  SslSocket._from_network
# (emulator/sockets/ssl_socket.py:592) counts every byte the network gave into the modem's data
# counter before the session sees them; ReplayPlainSession (emulator/tools/trace.py:821) then
# strips the line.  AT+QGDCNT? (docs/behaviour.md: what the sockets read from the network)
# replays as "+QGDCNT: 5,18" where the recording (and the replay before f55e3ab) said 5,5.
# Was a bug, fixed (the stand-in's header line is taken back from AT+QGDCNT (ReplayPlainSession)):
# the TCP stand-in's header line is counted by AT+QGDCNT in the replay
def test_qgdcnt_after_a_tcp_exchange_replays(open_modem, emulator, tmp_path, capsys):
    """A push-mode echo of 5 bytes: AT+QGDCNT? says 5 sent, 5 received."""
    path = tmp_path / "qgdcnt.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"hello")
        assert host.read_until(b"hello\r\n") == b'\r\n+QIURC: "recv",0,5\r\nhello\r\n'
        assert host.at("AT+QGDCNT?") == b"\r\n+QGDCNT: 5,5\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
    rs.replays(capsys, path)


def _closed_while_connecting(open_modem, emulator, path, reopen: bool) -> None:
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 0, 1)
        advance(0.2)
        assert _state(host, 0) == 1
        assert host.at("AT+QICLOSE=0") == OK         # a socket that never connected: at once
        _slow(emulator, 0)
        advance(2.0)                                  # past the abandoned connect's round trip
        assert host.at("AT+QISTATE=1,0") == OK        # nothing on id 0
        if reopen:
            _tcp_open(host, 1, 1)
            assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
            rs.qisend(host, 1, b"hello")
            assert host.read_until(b"hello\r\n") == b'\r\n+QIURC: "recv",1,5\r\nhello\r\n'
            assert host.at("AT+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()


# BUG: scripts_of (emulator/tools/trace.py:711) gives a socket the host closed before its
# handshake ended a "hold" stand-in (never answered) only if it is not plain -- an AT+QIOPEN
# socket closed while connecting is left out of the stand-ins, its name unrouted: the replay's
# open fails at once (+QIOPEN: 0,565, "not routed"), so the AT+QISTATE=1,0 the host sent while
# it was opening shows no socket (a bare OK), and AT+QICLOSE=0 finds the id free (ERROR).
# (Since f55e3ab a plain stand-in can hold a connect: ReplayPlainSession stays opening until
# the header line, which a "hold" stand-in never sends.)
# Was a bug, fixed (a TCP connect the host abandoned gets a 'hold' stand-in): a TCP open the host
# closes while connecting fails at once (565, unrouted) in the replay
def test_a_tcp_open_closed_by_the_host_while_connecting_replays(open_modem, emulator, tmp_path, capsys):
    """A 1 s connect closed after 0.2 s (AT+QISTATE: opening; AT+QICLOSE=0 OK); no
    +QIOPEN ever; AT+QISTATE=1,0 shows nothing."""
    path = tmp_path / "closed_connecting.trace"
    _closed_while_connecting(open_modem, emulator, path, reopen=False)
    rs.replays(capsys, path)


# BUG: the same cause, another symptom: with a later connection to the same server, the
# destination is routed to its stand-in, whose queue holds only the connected scripts
# (ReplayPeer.start, trace.py:935); the abandoned connect (instant on loopback) takes the new
# socket's script (_serve: queue.pop(0), trace.py:985), and the new socket's connection gets "a
# connection the trace does not have": its open fails with 566 ("the replay's stand-in closed
# the connection"), AT+QISEND=1,5 answers ERROR.
# Was a bug, fixed (a TCP connect the host abandoned gets a 'hold' stand-in, so it takes its own
# script): an abandoned TCP connect takes the next socket's stand-in script; the next open fails
# 566
def test_a_tcp_open_closed_while_connecting_then_a_new_socket_to_the_same_server_replays(
        open_modem, emulator, tmp_path, capsys):
    """As above, then socket 1 to the same server (a fast network): +QIOPEN: 1,0, an echo."""
    path = tmp_path / "closed_then_new.trace"
    _closed_while_connecting(open_modem, emulator, path, reopen=True)
    rs.replays(capsys, path)


# BUG: over a slow network a refused connect is answered a round trip after the command
# (SslSocket._round_trip_after: "a refusal ... comes back at due too"), so AT+QISTATE meanwhile
# shows the socket opening (state 1).  The replay refuses it by its place among the opens
# (_ReplayFaults.take_open, trace.py:887) at once -- the socket is gone (+QIOPEN: 0,566) before
# the host's AT+QISTATE, which answers a bare OK.  The refusal's moment is not in the script
# (a refused script has no head_at); f55e3ab made the successful connect wait, not the refused
# one.  (The same holds for an open whose name lookup failed (dns_fail) over a slow network.)
# Was a bug, fixed (a refused or unresolved connect's stand-in accepts the replay's connect and
# says "refused" at the recorded moment: scripts_of, ReplayPlainSession): a refused connect over a
# slow network is refused at once in the replay (AT+QISTATE shows no socket)
def test_a_refused_connect_polled_over_a_slow_network_replays(open_modem, emulator, tmp_path, capsys):
    """The refused-then-retried session, with AT+QISTATE while the refused connect is under way."""
    path = tmp_path / "refused_polled.trace"
    _refused_then_retried(open_modem, emulator, path, poll=True)
    rs.replays(capsys, path)


def test_an_unresolved_name_polled_over_a_slow_network_replays(open_modem, emulator, tmp_path, capsys):
    """The control API's dns_fail on an AT+QIOPEN over a slow network: the failed lookup
    comes a round trip later (AT+QISTATE meanwhile: opening), +QIOPEN: 0,565; a retry of the
    same name connects and echoes."""
    path = tmp_path / "unresolved_polled.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=300)
        assert emulator.control("dns_fail", count=1)["ok"]
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,565\r\n") == b"\r\n+QIOPEN: 0,565\r\n"
        assert host.at("AT+QISTATE=1,0") == OK
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert _advance_until(host, advance, b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _slow(emulator, 0)
        rs.qisend(host, 0, b"back")
        assert host.read_until(b"back\r\n") == b'\r\n+QIURC: "recv",0,4\r\nback\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


def test_a_refused_ssl_open_polled_over_a_slow_network_replays(open_modem, emulator, tmp_path, capsys):
    """AT+QSSLOPEN refused over a slow network: AT+QSSLSTATE shows it opening until the RST
    comes a round trip later, +QSSLOPEN: 1,566 -- replayed with the same wait."""
    path = tmp_path / "ssl_refused_polled.trace"
    server = _RefusingThenListening()
    try:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        _slow(emulator, 300)
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","[^"]+",443,\d+,1,1,\d+,0,"usbmodem",1\r\n\r\nOK\r\n',
                            host.at("AT+QSSLSTATE=1")), "opening while the connect is under way"
        assert _advance_until(host, advance, b"+QSSLOPEN: 1,566\r\n") == b"\r\n+QSSLOPEN: 1,566\r\n"
        assert host.at("AT+QSSLSTATE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    finally:
        server.close()
    rs.replays(capsys, path)


# BUG: the stand-in waits for the recorded connect's moment with ReplayPeer._wait_host, whose
# timeout is 10 s (trace.py:970, used by _serve at :996).  A replay without --max-gap keeps the
# recording's pauses, so when the host said nothing for more than 10 s while the connect was
# under way (a 12 s round trip: the EC2x waits up to 150 s), the stand-in gives up waiting and
# says "connected" early: the AT+QISTATE sent 11 s after AT+QIOPEN shows state 2 where the
# recording showed 1 (and +QIOPEN: 0,0 comes before it).  (With --max-gap 1 it replays.)
# Was a bug, fixed (a stand-in waits for its moment while the replay's host still plays
# (ReplayPeer.played_at), 10 s after at most): a connect slower than 10 s of host silence
# completes after 10 s in the replay
def test_a_connect_slower_than_ten_seconds_polled_by_the_host_replays(open_modem, emulator, tmp_path, capsys):
    """A 12 s round trip (6 s latency): AT+QISTATE at 11 s says opening, +QIOPEN: 0,0 at
    12 s, AT+QISTATE connected, an echo."""
    path = tmp_path / "very_slow.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=6000)
        _tcp_open(host, 0, 1)
        advance(11.0)
        assert _state(host, 0) == 1
        advance(1.5)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        _slow(emulator, 0)
        assert _state(host, 0) == 2
        rs.qisend(host, 0, b"late")
        assert host.read_until(b"late\r\n") == b'\r\n+QIURC: "recv",0,4\r\nlate\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    code, out = rs.replay(capsys, path, "--max-gap", "1")
    assert code == 0, out                         # shortened pauses: the moment is reached in time
    rs.replays(capsys, path)


# BUG: connects that complete while the host is at a "> " prompt have their "+QIOPEN: <id>,0"
# held until SEND OK, in the order they completed.  Their "handshake" records then carry the
# same moment (host bytes, modem bytes, hang-ups, plaintext received: nothing changed between
# them), so every stand-in sends its header line at once (Script.head_at, _serve trace.py:996)
# and the replaying modem reads them in whatever order the loop wakes the stand-ins' tasks: the
# held URCs come in a random order (eight sockets: one order in 40320 is the recorded one).
# Round 1 fixed the same race for data (the plaintext received counts in the moment); a
# connect's or a handshake's end has no such count.  (Before f55e3ab the replay's connects were
# instant, in the order of the opens -- wrong every time.)
# Was a bug, fixed (a moment counts the connects/handshakes ended before it, so they end in the
# recorded order): connects completing at one moment (host at a prompt) replay their +QIOPEN URCs
# in a random order
def test_connects_completing_while_the_host_is_at_a_prompt_replay_in_the_recorded_order(
        open_modem, emulator, tmp_path, capsys):
    """Sockets 1-8 opened with round trips of 3.2 s down to 0.4 s (8 completes first); socket 0
    connected at once; the host at socket 0's prompt while 4 s pass: after SEND OK, +QIOPEN
    8, 7, ..., 1, then the echo."""
    path = tmp_path / "prompt_order.trace"
    with TcpServer(behave=_echo_close) as server:
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at(ATTACH) == OK
        for cid in range(1, 9):
            emulator.router.add_map(f"tcp{cid}.example", 7000 + cid, "127.0.0.1", server.port)
            _slow(emulator, 1800 - 200 * cid)
            _tcp_open(host, cid, 0, name=f"tcp{cid}.example", port=7000 + cid)
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        _slow(emulator, 0)
        _tcp_open(host, 0, 1)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        host.write("AT+QISEND=0,5\r")
        assert host.read_until(b"> ") == b"\r\n> "
        advance(4.0)
        host.write(b"hello")
        assert host.read_until(b"hello\r\n") == (b"\r\nSEND OK\r\n"
                                             + b"".join(b"\r\n+QIOPEN: %d,0\r\n" % cid for cid in range(8, 0, -1))
                                             + b'\r\n+QIURC: "recv",0,5\r\nhello\r\n')
        assert host.at("AT+QICLOSE=0;" + ";".join(f"+QICLOSE={cid}" for cid in range(1, 9))) == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)


# BUG: an open that fails with "pdp" is taken by scripts_of for one that never reached a server
# (emulator/tools/trace.py:699: failure in ("dns", "connect", "pdp") -> not connected, no
# stand-in script).  That holds for an open refused because its context was not active (the
# replay's is not either), not for a connect under way when the context goes (AT+QIDEACT, the
# network's deactivation).  With a later socket to the same server (this test, a reconnect
# after AT+QIACT) the destination is routed, the deactivated connect reaches the stand-in at
# once and takes the later socket's script (_serve: queue.pop(0)); its 570 replays, but the
# later socket gets "a connection the trace does not have": +QIOPEN: 1,566, AT+QISEND ERROR.
# Without a later socket the name is unrouted and the open fails at once with 565, before the
# AT+QISTATE the host sent while it was opening.  A "hold" stand-in (never answered) would let
# the deactivation fail it as recorded.
# Was a bug, fixed (an open failed by the context's loss gets a 'hold' stand-in): a slow connect
# ended by AT+QIDEACT takes the next socket's stand-in script in the replay (the next open fails
# 566)
def test_a_slow_connect_ended_by_the_contexts_deactivation_replays(open_modem, emulator, tmp_path, capsys):
    """A 1 s connect, AT+QISTATE (opening), AT+QIDEACT=1: +QIOPEN: 0,570; AT+QISTATE empty;
    the context activated again and a new socket to the same server echoes."""
    path = tmp_path / "deact.trace"
    with TcpServer(behave=_echo_close) as server:
        host, advance, port = _timed_modem(open_modem, emulator, path, server, slow_ms=500)
        _tcp_open(host, 0, 1)
        assert _state(host, 0) == 1
        assert host.at("AT+QIDEACT=1") == OK
        assert host.read_until(b"+QIOPEN: 0,570\r\n") == b"\r\n+QIOPEN: 0,570\r\n"
        advance(2.0)                                  # past the connect's round trip
        assert host.at("AT+QISTATE") == OK
        _slow(emulator, 0)
        assert host.at("AT+QIACT=1") == OK
        _tcp_open(host, 1, 1)
        assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        rs.qisend(host, 1, b"again")
        assert host.read_until(b"again\r\n") == b'\r\n+QIURC: "recv",1,5\r\nagain\r\n'
        assert host.at("AT+QICLOSE=1") == OK
        rs.flush(emulator)
        emulator.stop()
    rs.replays(capsys, path)
