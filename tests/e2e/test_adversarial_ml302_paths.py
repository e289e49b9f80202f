"""Adversarial paths through the ML302 SSL commands, as host firmware written from the
OneMO ML302 SSL AT manual drives them (and as a careless one does): every ssid busy,
the same ssid twice, AT+QSSLOPEN's <timeout> against servers that accept and stall
(on the modem's manual time), connectmode 1 entered, left and ended, AT+CGACT=0 and
AT+CFUN=1,1 with sockets in every state, AT+QSSLCLOSE in every state, pipelined lines.

Answers are compared byte for byte with the manual (§2.5-§2.10) or, where it is silent,
with docs/behaviour.md ("ML302 SSL commands", "Transparent access mode")."""
from __future__ import annotations

import re
import select
import socket
import threading
import time

import pytest

from emulator.testing.peers import default_pki
from tests.e2e.answer_support import collect
from tests.e2e.ml302_support import HOST, HOST_IP, routed_servers
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"


def initial(i: int) -> str:
    return f'+QSSLSTATE: {i},"TCP","",0,"INITIAL",1'


def state(lines: dict[int, str], ip_state: str = "IP PROCESSING") -> bytes:
    """AT+QSSLSTATE's whole answer; lines: ssid -> '"<ip>",<port>,"<status>"'."""
    body = [f'+QSSLSTATE: "{ip_state}"']
    for i in range(6):
        body.append(f'+QSSLSTATE: {i},"TCP",{lines[i]},1' if i in lines else initial(i))
    return ("\r\n" + "\r\n".join(body) + "\r\n" + "\r\nOK\r\n").encode()


def st(status: str, ip: str = HOST_IP, port: int = 443) -> str:
    return f'"{ip}",{port},"{status}"'


@pytest.fixture
def ml(ml302_strict):
    """(host, advance, port): an ML302 on manual time, PDP context 1 active, strict log."""
    return ml302_strict


@pytest.fixture
def server(emulator):
    """server(**kwargs) -> TlsServer routed as www.iottest.work:443 (DNS 106.12.79.254)."""
    yield from routed_servers(emulator, default_pki().server, mode="echo", ciphers="DEFAULT:@SECLEVEL=0")


@pytest.fixture
def hanging(emulator):
    """hanging(name) routes name:443 to a listener whose accept queue is full: the
    modem's TCP connect gets no SYN-ACK and hangs (until the modem gives up)."""
    held: list[socket.socket] = []

    def make(name: str) -> None:
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=2)   # fills the queue
        held.extend((lst, filler))
        probe = socket.socket()
        probe.setblocking(False)
        probe.connect_ex(("127.0.0.1", port))
        held.append(probe)
        _, writable, _ = select.select([], [probe], [], 0.1)
        assert not writable, "the accept queue is not full: the connect would not hang"
        emulator.router.add_map(name, 443, "127.0.0.1", port)
        emulator.router.add_dns(name, "203.0.113.9")
    yield make
    for s in held:
        s.close()


def opened(host, ssid: int, code: int = 0, timeout: float = 15) -> None:
    urc = f"\r\n+QSSLOPEN: {ssid},{code}\r\n".encode()
    assert host.read_until(urc, timeout=timeout) == urc


def open_ssl(host, ssid: int = 0, code: int = 0, name: str = HOST, extra: str = "") -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{name}",443,0{extra}') == OK
    opened(host, ssid, code)


def close_ssl(host, ssid: int) -> None:
    host.write(f"AT+QSSLCLOSE={ssid}\r")
    expected = f"\r\nOK\r\n\r\n{ssid},CLOSE OK\r\n".encode()
    assert host.read_until(f"{ssid},CLOSE OK\r\n".encode()) == expected


def send(host, ssid: int, data: bytes) -> None:
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"


def recv(host, ssid: int, data: bytes, ip: str = HOST_IP) -> None:
    assert host.at(f"AT+QSSLRECV=1,{ssid},1500") == \
        f"\r\n+QSSLRECV: {ip}:443,TCP,{len(data)}\r\n".encode() + data + b"\r\n" + OK


# == AT+QSSLOPEN <timeout> against a TCP connect that never completes ============================
def test_timeout_10_bounds_a_hanging_tcp_connect(ml, hanging):
    """§2.5 <timeout> 10-300 s; behaviour.md: it bounds name lookup, TCP connect and the
    handshake together.  No SYN-ACK ever comes: CONNECTING (no address yet) until 10 s,
    then -1 and CLOSED."""
    host, advance, _ = ml
    hanging("hang.test")
    assert host.at('AT+QSSLOPEN=3,0,"hang.test",443,0,10') == OK
    advance(9.9)
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+QSSLSTATE") == state({3: '"",443,"CONNECTING"'})
    advance(0.1)
    opened(host, 3, -1)
    assert host.at("AT+QSSLSTATE") == state({3: '"",443,"CLOSED"'}, "IP STATUS")


# Was a bug, fixed: the EC2x's 150 s TCP connect limit cut the ML302's <timeout> (10-300 s)
# short: -1 came at 150 s for a timeout of 200 or 300.
@pytest.mark.parametrize("timeout", [200, 300])
def test_timeout_above_150_bounds_a_hanging_tcp_connect(ml, hanging, timeout):
    host, advance, _ = ml
    hanging("hang.test")
    assert host.at(f'AT+QSSLOPEN=3,0,"hang.test",443,0,{timeout}') == OK
    advance(timeout - 0.1)
    assert host.quiet_for(0.1) == b""
    advance(0.1)
    opened(host, 3, -1)


# == the same ssid twice, every ssid busy =========================================================
def test_same_ssid_opened_twice_while_the_first_is_still_connecting(ml, server):
    """§2.5 <connectcode> -2 "Socket 已被占用": a second open of an ssid still CONNECTING
    (buffer or transparent) is refused and leaves the first alone: one TCP connection, one
    answer for it when its <timeout> ends."""
    host, advance, _ = ml
    srv = server("stall.test", mode="silent")
    assert host.at('AT+QSSLOPEN=0,0,"stall.test",443,0,20') == OK
    srv.wait_for(lambda: srv.connections and srv.conn.client_hello, 5, "ClientHello")
    assert host.at(f'AT+QSSLOPEN=0,1,"{HOST}",443,0') == OK
    opened(host, 0, -2)
    assert host.at(f'AT+QSSLOPEN=0,1,"{HOST}",443,1') == b"\r\n+QSSLOPEN: 0,-2\r\n" + ERROR
    assert host.at("AT+QSSLSTATE") == state({0: st("CONNECTING")})
    assert host.at("AT+QSSLRECV=1,0,10") == ERROR          # not connected yet
    assert host.at("AT+QSSLSEND=0") == ERROR
    advance(19.9)
    assert host.quiet_for(0.1) == b""
    advance(0.1)
    opened(host, 0, -1)
    assert host.quiet_for(0.2) == b""
    assert len(srv.connections) == 1
    assert host.transcript.count(b"+QSSLOPEN: 0,") == 3


def test_same_ssid_twice_in_one_write(ml, server):
    """A careless host writes two opens of ssid 1 without waiting: the second is -2 (its
    own OK first), the first connects; one answer each, the socket works."""
    host, _, _ = ml
    srv = server()
    line = f'AT+QSSLOPEN=1,0,"{HOST}",443,0\r'
    host.write(line + line)
    host.seen(b"+QSSLOPEN: 1,-2\r\n")
    host.seen(b"+QSSLOPEN: 1,0\r\n")
    assert host.read_until(OK) == OK and host.read_until(OK) == OK
    assert host.quiet_for(0.2) == b""
    assert len(srv.connections) == 1
    send(host, 1, b"one")
    host.seen(b'+QSSLURC: "recv",1,1\r\n')
    recv(host, 1, b"one")
    close_ssl(host, 1)


def test_all_six_busy_then_a_seventh_and_every_ssid_again(ml, server):
    """Six sockets (pipelined opens); a 7th ssid is outside §2.5's 0-5: ERROR; each busy
    ssid opened again in one write: OK and -2 each, nothing disturbed."""
    host, _, _ = ml
    srv = server()
    host.write("".join(f'AT+QSSLOPEN={i},{i},"{HOST}",443,0\r' for i in range(6)))
    for i in range(6):
        host.seen(f"+QSSLOPEN: {i},0\r\n".encode(), timeout=20)
    for i in range(6):
        assert host.read_until(OK) == OK
    assert host.at(f'AT+QSSLOPEN=6,0,"{HOST}",443,0') == ERROR
    host.write("".join(f'AT+QSSLOPEN={i},0,"{HOST}",443,0\r' for i in range(6)))
    expected = b"".join(OK + f"\r\n+QSSLOPEN: {i},-2\r\n".encode() for i in range(6))
    assert host.read_exactly(len(expected)) == expected
    assert len(srv.connections) == 6
    assert host.at("AT+QSSLSTATE") == state({i: st("CONNECTED") for i in range(6)})
    send(host, 5, b"still fine")
    host.seen(b'+QSSLURC: "recv",1,5\r\n')
    recv(host, 5, b"still fine")
    for i in range(6):
        close_ssl(host, i)
    assert host.at("AT+QSSLSTATE") == state({i: st("CLOSED") for i in range(6)}, "IP STATUS")


# == AT+CGACT=0 / AT+CFUN with sockets in every state ================================================
def every_state(host, server):
    """ssid 1 CONNECTED with 8 unread bytes, 2 REMOTE CLOSING with 5 unread bytes,
    3 CLOSED by the host, 0 CONNECTING (a server that never answers the ClientHello),
    4 and 5 never used.  Returns the servers (echo, stalled)."""
    srv = server()
    stalled = server("stall.test", mode="silent")
    open_ssl(host, 1)
    send(host, 1, b"unread-1")
    host.seen(b'+QSSLURC: "recv",1,1\r\n')
    open_ssl(host, 2)
    srv.conn.send(b"bye-2")
    srv.conn.close()
    host.seen(b'+QSSLURC: "recv",1,2\r\n')
    host.seen(b'+QSSLURC: "close",2\r\n')
    open_ssl(host, 3)
    close_ssl(host, 3)
    assert host.at('AT+QSSLOPEN=0,0,"stall.test",443,0,60') == OK
    stalled.wait_for(lambda: stalled.connections and stalled.conn.client_hello, 5, "ClientHello")
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+QSSLSTATE") == state({0: st("CONNECTING"), 1: st("CONNECTED"),
                                             2: st("REMOTE CLOSING"), 3: st("CLOSED")})
    return srv, stalled


def test_cgact_0_with_sockets_in_every_state(ml, server):
    """behaviour.md: the bearer's loss fails an open (-1) and reports each connected socket
    "close" (after the command's OK); a socket already REMOTE CLOSING is not reported again;
    received data stay readable; AT+QSSLSTATE says "PDP DEACT" until the host closed them."""
    host, advance, _ = ml
    srv, stalled = every_state(host, server)
    host.write("AT+CGACT=0,1\r")
    assert host.read_until(OK) == OK
    after = collect(host, lambda got: b'"close",1\r\n' in got and b"+QSSLOPEN: 0,-1\r\n" in got)
    assert sorted(after.split(b"\r\n\r\n")) == sorted([b'\r\n+QSSLURC: "close",1', b"+QSSLOPEN: 0,-1\r\n"]), after
    assert host.at("AT+QSSLSTATE") == state({0: st("CLOSED"), 1: st("REMOTE CLOSING"),
                                             2: st("REMOTE CLOSING"), 3: st("CLOSED")}, "PDP DEACT")
    stalled.wait_done(0)
    srv.wait_done(0)
    recv(host, 1, b"unread-1")
    recv(host, 2, b"bye-2")
    assert host.at("AT+QSSLRECV=1,1,1500") == OK
    assert host.at("AT+QSSLSEND=1") == ERROR
    open_ssl(host, 1, code=-2)                          # still the host's to close
    open_ssl(host, 4, code=-1)                          # no bearer
    advance(61)
    assert host.quiet_for(0.1) == b""                   # the failed open's timer is gone
    close_ssl(host, 1)
    close_ssl(host, 2)
    assert host.at("AT+QSSLSTATE") == state({0: st("CLOSED"), 1: st("CLOSED"), 2: st("CLOSED"),
                                             3: st("CLOSED")}, "IP INITIAL")
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
    open_ssl(host, 1)
    send(host, 1, b"again")
    host.seen(b'+QSSLURC: "recv",1,1\r\n')
    recv(host, 1, b"again")
    assert host.transcript.count(b'"close",1') == 1 and host.transcript.count(b'"close",2') == 1


def test_cfun_1_1_with_sockets_in_every_state(ml, server):
    """behaviour.md: AT+CFUN=1,1 is a reboot: sockets dropped without URCs (no +QSSLOPEN
    for the one opening, no "close"), PDP contexts down, RDY-style start-up URC; then every
    ssid reads INITIAL (the ML302 forgets what it dialled) and nothing is readable."""
    host, advance, _ = ml
    srv, stalled = every_state(host, server)
    assert host.at("AT+CFUN=1,1") == OK
    advance(1)
    assert host.read_until(b"+CPIN: READY\r\n") == b"\r\n+CPIN: READY\r\n"
    assert host.at("ATE0") == b"ATE0\r" + OK            # echo back to the profile's default
    stalled.wait_done(0)
    for i in range(3):
        srv.wait_done(i)
    advance(61)
    assert host.quiet_for(0.3) == b""
    assert b"+QSSLURC" not in host.transcript.split(b"+CPIN: READY")[-1]
    assert host.transcript.count(b"+QSSLOPEN: 0,") == 0
    assert host.at("AT+QSSLSTATE") == state({}, "IP INITIAL")
    for i in range(6):
        assert host.at(f"AT+QSSLRECV=1,{i},1500") == ERROR
    open_ssl(host, 1, code=-1)                          # no PDP context after the reboot
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
    open_ssl(host, 1)
    open_ssl(host, 0)


def test_cfun_0_then_1_with_sockets(ml, server):
    """behaviour.md: AT+CFUN=0 deactivates every PDP context: sockets report "close" after
    its OK; AT+CFUN=1 brings no bearer back by itself."""
    host, _, _ = ml
    server()
    open_ssl(host, 4)
    assert host.at("AT+CFUN=0") == OK
    assert host.read_until(b'"close",4\r\n') == b'\r\n+QSSLURC: "close",4\r\n'
    assert host.at("AT+QSSLSTATE") == state({4: st("REMOTE CLOSING")}, "PDP DEACT")
    assert host.at("AT+CFUN=1") == OK
    assert host.read_until(b"READY\r\n") == b"\r\n+CPIN: READY\r\n"     # (the SIM AT+CFUN=0 switched off)
    assert host.at("AT+QSSLSTATE") == state({4: st("REMOTE CLOSING")}, "PDP DEACT")
    open_ssl(host, 5, code=-1)
    close_ssl(host, 4)
    assert host.at("AT+QSSLSTATE") == state({4: st("CLOSED")}, "IP INITIAL")


# == AT+QSSLCLOSE in each state ======================================================================
def deaf_server(server, hold: threading.Event, name: str = HOST):
    """A server that never answers the modem's close_notify nor closes TCP (until hold)."""
    def handler(conn) -> None:
        while conn.recv():                 # until the modem's close_notify
            pass
        hold.wait(30)
    return server(name, handler=handler)


def test_close_of_a_server_that_never_closes_lingers_on_modem_time(ml, server):
    """§2.6: "OK" then "<ssid>,CLOSE OK".  behaviour.md: close_notify + FIN, then the
    server's close is awaited (10 s, the modem's time) and the port is busy meanwhile: a
    command pipelined behind it waits and then sees the socket CLOSED."""
    host, advance, _ = ml
    hold = threading.Event()
    try:
        srv = deaf_server(server, hold)
        open_ssl(host, 2)
        conn = srv.wait_handshake()
        host.write("AT+QSSLCLOSE=2\rAT+QSSLSTATE\r")
        advance(9.9)
        wait_for(lambda: conn.close_notify_received, what="close_notify")
        assert host.quiet_for(0.2) == b""
        advance(0.1)
        expected = OK + b"\r\n2,CLOSE OK\r\n" + state({2: st("CLOSED")}, "IP STATUS")
        assert host.read_exactly(len(expected)) == expected
    finally:
        hold.set()


def test_urc_of_another_socket_raised_during_a_lingering_close_follows_close_ok(ml, server, emulator):
    """behaviour.md: URCs raised while a command runs follow its final result; the
    "<ssid>,CLOSE OK" line belongs to the close's answer (§2.6, §3), so socket 1's news
    comes after it, never between OK and CLOSE OK."""
    host, advance, _ = ml
    hold = threading.Event()
    try:
        deaf = deaf_server(server, hold, "deaf.test")
        echo = server()
        open_ssl(host, 1)
        echo_conn = echo.wait_handshake()
        open_ssl(host, 0, name="deaf.test")
        deaf.wait_handshake()
        host.write("AT+QSSLCLOSE=0\r")
        advance(1)
        echo_conn.send(b"news")
        echo_conn.close()
        wait_for(lambda: echo_conn.done.is_set(), what="the echo server's close")

        def socket_1():
            return next(s for s in emulator.control("state")["sockets"] if s["id"] == 1)
        wait_for(lambda: socket_1()["unread"] == 4 and socket_1()["state"] == "CLOSING",
                 what="socket 1 holding the news and the peer's close")
        assert host.quiet_for(0.1) == b""
        advance(9)
        expected = (OK + b"\r\n0,CLOSE OK\r\n" + b'\r\n+QSSLURC: "recv",1,1\r\n'
                    + b'\r\n+QSSLURC: "close",1\r\n')
        assert host.read_exactly(len(expected)) == expected
        recv(host, 1, b"news")
        close_ssl(host, 1)
    finally:
        hold.set()


def test_bearer_lost_during_a_lingering_close_ends_it_at_once(ml, server, emulator):
    """behaviour.md: a lingering close's connection is dropped by the bearer's loss; the
    close's answer then comes without waiting for its 10 s (and without a "close" URC)."""
    host, advance, _ = ml
    hold = threading.Event()
    try:
        srv = deaf_server(server, hold)
        open_ssl(host, 3)
        conn = srv.wait_handshake()
        host.write("AT+QSSLCLOSE=3\r")
        wait_for(lambda: conn.close_notify_received, what="close_notify")
        assert host.quiet_for(0.1) == b""
        assert emulator.control("pdp_deact", cid=1)["ok"]
        expected = OK + b"\r\n3,CLOSE OK\r\n"
        assert host.read_exactly(len(expected), timeout=5) == expected
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLSTATE") == state({3: st("CLOSED")}, "IP INITIAL")
    finally:
        hold.set()


def test_close_while_connecting_then_the_timeout_passes(ml, server):
    """AT+QSSLCLOSE of a CONNECTING ssid: answered at once; its open never answers, not
    even when its <timeout> passes; the ssid can be opened again."""
    host, advance, _ = ml
    stalled = server("stall.test", mode="silent")
    srv = server()
    assert host.at('AT+QSSLOPEN=4,0,"stall.test",443,0,10') == OK
    stalled.wait_for(lambda: stalled.connections and stalled.conn.client_hello, 5, "ClientHello")
    close_ssl(host, 4)
    stalled.wait_done(0)
    advance(11)
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLSTATE") == state({4: st("CLOSED")}, "IP STATUS")
    open_ssl(host, 4)
    assert len(srv.connections) == 1
    assert b"+QSSLOPEN: 4,-1" not in host.transcript


# == connectmode 1 (transparent) ===================================================================
BINARY = bytes(range(256)) + b"+++\x1a\x1b\r\nAT+QSSLCLOSE=0\r\n"


def go_online(host, ssid: int = 0, name: str = HOST) -> None:
    host.write(f'AT+QSSLOPEN={ssid},0,"{name}",443,1\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), timeout=15) == b"\r\nCONNECT\r\n"


def escape(host, advance) -> None:
    """S12 = 10 (0.2 s guard time, set by the tests), on the modem's clock."""
    advance(0.3)
    host.write(b"+++")
    advance(0.3)
    assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")) == OK


def test_transparent_both_ways_then_peer_close_online(ml, server):
    """behaviour.md: every byte both ways unchanged (Ctrl+Z, ESC, "+++" without guard
    times, AT lines are data); the peer's close while online: its last bytes, then NO
    CARRIER, no "close" URC; the ssid is REMOTE CLOSING (in use: -2) until AT+QSSLCLOSE;
    ATO can only answer NO CARRIER."""
    host, advance, _ = ml
    srv = server()
    assert host.at("ATS12=10") == OK
    go_online(host, 2)
    conn = srv.wait_handshake()
    host.write(BINARY)
    assert host.read_exactly(len(BINARY)) == BINARY          # the echo
    assert bytes(srv.wait_received(len(BINARY)))[:len(BINARY)] == BINARY
    conn.send(b"last\x1a\x1b words")
    conn.close()
    expected = b"last\x1a\x1b words\r\nNO CARRIER\r\n"
    assert host.read_exactly(len(expected)) == expected
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLSTATE") == state({2: st("REMOTE CLOSING")})
    assert host.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,1') == b"\r\n+QSSLOPEN: 2,-2\r\n" + ERROR
    assert host.at("AT+QSSLRECV=1,2,1500") == ERROR  # a transparent socket: its bytes went to the port
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    close_ssl(host, 2)
    assert b"QSSLURC" not in host.transcript
    assert host.at("AT+QSSLSTATE") == state({2: st("CLOSED")}, "IP STATUS")


def test_transparent_open_that_times_out_holds_the_port_then_errors(ml, server, hanging):
    """connectmode 1 has no OK: the port waits for the open.  A stalled handshake and a
    hanging TCP connect each end at <timeout> with the manual's "+QSSLOPEN: <ssid>,-1"
    line then ERROR (behaviour.md); a command the host wrote meanwhile runs after it."""
    host, advance, _ = ml
    stalled = server("stall.test", mode="silent")
    hanging("hang.test")
    for name, ssid in (("stall.test", 1), ("hang.test", 5)):
        host.write(f'AT+QSSLOPEN={ssid},0,"{name}",443,1,15\rAT+CSQ\r')
        if name == "stall.test":
            stalled.wait_for(lambda: stalled.connections and stalled.conn.client_hello, 5, "ClientHello")
        advance(14.9)
        assert host.quiet_for(0.1) == b""
        advance(0.1)
        expected = f"\r\n+QSSLOPEN: {ssid},-1\r\n".encode() + ERROR + b"\r\n+CSQ: 26,99\r\n" + OK
        assert host.read_exactly(len(expected)) == expected
    assert host.at("AT+QSSLSTATE") == state({1: st("CLOSED"), 5: '"",443,"CLOSED"'}, "IP STATUS")
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_transparent_left_with_escape_then_bearer_lost(ml, server):
    """After "+++" the peer's bytes wait for ATO; AT+CGACT=0 then ends the connection:
    the socket falls back to buffer mode ("recv" then "close" after the OK), the bytes are
    read with AT+QSSLRECV, ATO answers NO CARRIER, AT+QSSLSTATE says PDP DEACT."""
    host, advance, _ = ml
    srv = server()
    assert host.at("ATS12=10") == OK
    go_online(host, 3)
    conn = srv.wait_handshake()
    escape(host, advance)
    conn.send(b"waiting \x1a for ATO")
    time.sleep(0.3)                 # on the loopback (an escaped socket leaves them in the kernel)
    assert host.quiet_for(0.1) == b""
    host.write("AT+CGACT=0,1\r")
    expected = OK + b'\r\n+QSSLURC: "recv",1,3\r\n\r\n+QSSLURC: "close",3\r\n'
    assert host.read_exactly(len(expected)) == expected
    assert host.at("AT+QSSLSTATE") == state({3: st("REMOTE CLOSING")}, "PDP DEACT")
    recv(host, 3, b"waiting \x1a for ATO")
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    close_ssl(host, 3)
    srv.wait_done(0)


def test_transparent_left_with_escape_then_reboot(ml, server):
    host, advance, _ = ml
    srv = server()
    assert host.at("ATS12=10") == OK
    go_online(host, 0)
    conn = srv.wait_handshake()
    escape(host, advance)
    conn.send(b"lost in the reboot")
    time.sleep(0.2)
    assert host.at("AT+CFUN=1,1") == OK
    advance(1)
    assert host.read_until(b"+CPIN: READY\r\n") == b"\r\n+CPIN: READY\r\n"
    srv.wait_done(0)
    assert host.quiet_for(0.2) == b""
    assert host.at("ATO") == b"ATO\r\r\nNO CARRIER\r\n"     # echo is on again after the reboot
    assert b"QSSLURC" not in host.transcript


def test_bearer_lost_while_online(ml, server, emulator):
    """The network takes the context down while the port is online: NO CARRIER (the
    report of an online connection's end, behaviour.md), no "close" URC afterwards."""
    host, advance, _ = ml
    srv = server()
    go_online(host, 4)
    conn = srv.wait_handshake()
    conn.send(b"before")
    assert host.read_exactly(6) == b"before"
    assert emulator.control("pdp_deact", cid=1)["ok"]
    assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLSTATE") == state({4: st("REMOTE CLOSING")}, "PDP DEACT")
    close_ssl(host, 4)
    assert b"QSSLURC" not in host.transcript


def test_two_transparent_sockets_ato_returns_to_the_last(ml, server):
    """ATO returns to the connection that left online mode last; once that one is closed,
    NO CARRIER, even though another transparent socket is still open (behaviour.md)."""
    host, advance, _ = ml
    a = server()
    b = server("other.test")
    assert host.at("ATS12=10") == OK
    go_online(host, 0)
    ca = a.wait_handshake()
    escape(host, advance)
    go_online(host, 1, "other.test")
    cb = b.wait_handshake()
    escape(host, advance)
    ca.send(b"for zero")
    cb.send(b"for one")
    time.sleep(0.2)
    assert host.quiet_for(0.1) == b""
    host.write("ATO\r")
    assert host.read_until(b"for one") == b"\r\nCONNECT\r\nfor one"
    host.write(b"x1")
    assert bytes(b.wait_received(2))[-2:] == b"x1"
    assert host.read_exactly(2) == b"x1"
    escape(host, advance)
    close_ssl(host, 1)
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLSTATE") == state({0: st("CONNECTED"), 1: st("CLOSED")})
    close_ssl(host, 0)
    assert host.quiet_for(0.2) == b""


# == AT+QSSLSEND: limits, a full send buffer, pipelining ================================================
def test_send_buffer_full_is_send_fail_and_nothing_is_lost_or_duplicated(ml, server, emulator):
    """A slow link (control 'net', 8 kbit/s on the modem's clock) holds the data: SEND OK
    until ssl.send_buffer (16384) bytes wait, then SEND FAIL (§2.7) with nothing of that
    send sent; once the link drained, the server has exactly the accepted sends, in order,
    and sending works again."""
    host, advance, _ = ml
    srv = server(mode="sink")
    open_ssl(host, 0)
    conn = srv.wait_handshake()
    assert emulator.control("net", kbps=8, socket=0)["ok"]
    accepted, results = bytearray(), []
    for i in range(14):
        chunk = bytes([0x41 + i]) * 1460
        host.write("AT+QSSLSEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(chunk + CTRL_Z)
        result = host.read_until(re.compile(rb"\r\nSEND (OK|FAIL)\r\n"))
        results.append(result)
        if result == b"\r\nSEND OK\r\n":
            accepted += chunk
    assert b"\r\nSEND FAIL\r\n" in results, results
    first_fail = results.index(b"\r\nSEND FAIL\r\n")
    assert all(r == b"\r\nSEND FAIL\r\n" for r in results[first_fail:]), results
    assert 9 <= first_fail <= 11, first_fail                   # 16384 / 1460 = 11.2
    advance(60)
    assert bytes(srv.wait_received(len(accepted), timeout=10)) == bytes(accepted)
    assert emulator.control("net", kbps=0, socket=0)["ok"]
    send(host, 0, b"after the drain")
    wait_for(lambda: len(conn.received) == len(accepted) + 15, what="the last send")
    assert bytes(conn.received) == bytes(accepted) + b"after the drain"
    close_ssl(host, 0)


def test_pipelined_sends_then_close_deliver_every_byte_before_close_notify(ml, server):
    """Five 1460-byte sends (bytes 0x1A/0x1B avoided: Ctrl+Z ends, ESC cancels) and the
    close in one write: five SEND OK, OK, CLOSE OK; the server reads all 7300 bytes, in
    order, then the close_notify."""
    host, advance, _ = ml
    srv = server(mode="sink")
    open_ssl(host, 5)
    conn = srv.wait_handshake()
    body = bytes(b for b in range(256) if b not in (0x1A, 0x1B))
    chunks = [(body * 6)[i * 7:i * 7 + 1460] for i in range(5)]
    host.write(b"".join(b"AT+QSSLSEND=5\r" + c + CTRL_Z for c in chunks) + b"AT+QSSLCLOSE=5\r")
    expected = b"\r\n> \r\nSEND OK\r\n" * 5 + OK + b"\r\n5,CLOSE OK\r\n"
    assert host.read_exactly(len(expected), timeout=15) == expected
    wait_for(lambda: conn.close_notify_received, what="close_notify")
    assert bytes(conn.received) == b"".join(chunks)


def test_oversized_send_sends_nothing_and_esc_mid_data_cancels(ml, server):
    """§2.7: Ctrl+Z sends, ESC cancels.  1461 bytes (over ssl.send_max 1460): ERROR and
    nothing sent; ESC in the middle of the data: OK, nothing sent, what follows it in the
    same write is command-state bytes again (dropped: no AT prefix); the next send works."""
    host, advance, _ = ml
    srv = server(mode="sink")
    open_ssl(host, 0)
    conn = srv.wait_handshake()
    host.write("AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"z" * 1461 + CTRL_Z)
    assert host.read_until(b"ERROR\r\n") == ERROR
    host.write("AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"GET /half" + ESC + b"lf of it\x1a")
    assert host.read_until(OK) == OK
    assert host.quiet_for(0.2) == b""
    send(host, 0, b"x" * 1460)
    wait_for(lambda: len(conn.received) >= 1460, what="the good send")
    time.sleep(0.1)
    assert bytes(conn.received) == b"x" * 1460


def test_prompts_have_no_inactivity_timeout_on_the_modem_clock(ml, server):
    """behaviour.md: neither the AT+QSSLSEND nor the AT+QSECWRITE prompt has an inactivity
    timeout: an hour of modem time later the data are still taken."""
    host, advance, _ = ml
    srv = server(mode="sink")
    open_ssl(host, 0)
    conn = srv.wait_handshake()
    host.write("AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"first half, ")
    advance(3600)
    assert host.quiet_for(0.1) == b""
    host.write(b"second half" + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    wait_for(lambda: bytes(conn.received) == b"first half, second half", what="the send")
    assert host.at("AT+QSECDEL=1") == OK
    host.write("AT+QSECWRITE=1\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"\x7f")
    advance(3600)
    assert host.quiet_for(0.1) == b""
    host.write(CTRL_Z)
    assert host.read_until(OK) == b"\r\n+QSECWRITE: 1,7f00\r\n" + OK     # odd tail padded 0x00
    assert host.at("AT+QSECREAD=1") == b"\r\n+QSECREAD: 1,7f00\r\n" + OK
    assert host.at("AT+QSSLSTATE") == state({0: st("CONNECTED")})


# == <timeout> against a slow but progressing handshake; reading a flood after the peer closed =====
def test_timeout_bounds_a_slow_handshake_on_the_modem_clock(ml, server, emulator):
    """2 s one-way latency (control 'net', on the modem's clock): the TCP connect needs a
    round trip and the handshake two more (12 s in all).  <timeout> 11: -1 at exactly 11 s;
    <timeout> 13 on another ssid: connected at 12 s or a little later (the loopback's real
    time), before 13 s."""
    host, advance, _ = ml
    server()
    assert emulator.control("net", latency_ms=2000)["ok"]
    assert host.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,0,11') == OK
    assert host.at(f'AT+QSSLOPEN=3,0,"{HOST}",443,0,13') == OK
    out, elapsed, seen_at = b"", 0.0, {}
    while elapsed < 12.9:
        advance(0.1 if elapsed >= 10.5 else 0.5)
        elapsed += 0.1 if elapsed >= 10.5 else 0.5
        time.sleep(0.15)                # the loopback server's real time to answer each step
        emulator.run(lambda: None)      # (what the step's timers wrote has left the loop: under
        out += host.quiet_for(0.05)     # load a URC due at 11.0 s was read only at the next step)
        for code in (b"+QSSLOPEN: 2,-1", b"+QSSLOPEN: 3,0"):
            if code in out and code not in seen_at:
                seen_at[code] = round(elapsed, 1)
        if len(seen_at) == 2:
            break
    assert out == b"\r\n+QSSLOPEN: 2,-1\r\n\r\n+QSSLOPEN: 3,0\r\n", out
    assert seen_at[b"+QSSLOPEN: 2,-1"] == 11.0
    assert 12.0 <= seen_at[b"+QSSLOPEN: 3,0"] < 13.0
    assert host.at("AT+QSSLSTATE") == state({2: st("CLOSED"), 3: st("CONNECTED")})


def test_flood_then_peer_close_every_byte_read_once_and_one_close(ml, server):
    """The server sends 150 000 bytes (past ssl.recv_buffer: the modem stops reading and
    sees the FIN only as the host reads) and closes: the host reads every byte exactly once
    with AT+QSSLRECV=1,<ssid>,1500 after "recv" URCs; one "close" URC; then OK alone."""
    host, _, _ = ml
    srv = server(mode="sink")
    payload = bytes((i * 31 + i // 977) & 0xFF for i in range(150_000))
    open_ssl(host, 4)
    conn = srv.wait_handshake()
    conn.send(payload)
    conn.close()
    host.seen(b'+QSSLURC: "recv",1,4\r\n', timeout=10)
    got = bytearray()
    head = re.compile(rb"\r\n\+QSSLRECV: 106\.12\.79\.254:443,TCP,(\d+)\r\n")
    deadline = time.monotonic() + 30
    while len(got) < len(payload):
        assert time.monotonic() < deadline, len(got)
        host.write(b"AT+QSSLRECV=1,4,1500\r")
        first = host.read_until(re.compile(rb"\r\n\+QSSLRECV: [^\r]*\r\n|\r\nOK\r\n"))
        for urc in (b'\r\n+QSSLURC: "close",4\r\n', b'\r\n+QSSLURC: "recv",1,4\r\n'):
            if first.startswith(urc):                    # between two answers, never inside one
                first = first[len(urc):]
        m = head.fullmatch(first)
        if not m:
            assert first == OK
            time.sleep(0.01)
            continue
        got += host.read_exactly(int(m.group(1)))
        assert host.read_exactly(8) == b"\r\n\r\nOK\r\n"
    assert bytes(got) == payload
    host.seen(b'+QSSLURC: "close",4\r\n', timeout=10)
    assert host.transcript.index(b'"close",4') > host.transcript.rindex(b'"recv",1,4')
    assert host.at("AT+QSSLRECV=1,4,1500") == OK
    assert host.at("AT+QSSLSTATE") == state({4: st("REMOTE CLOSING")})
    close_ssl(host, 4)
    assert host.transcript.count(b'"close",4') == 1
