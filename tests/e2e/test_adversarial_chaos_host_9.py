"""Adversarial: a hostile / careless host, round 9 -- close / deactivate / reopen chains.

Rounds 1-8 (test_adversarial_chaos_host*.py) closed the port at every point of an exchange,
chunked streams, mistimed "+++", walked six sockets at random and played with V.250's
registers.  Here one EC2x (loopback Python ssl echo server and plain TCP echo server) gets
`;` chains that close / deactivate and reopen the very ids they close, in one line:

- AT+QICLOSE / AT+QSSLCLOSE followed by AT+QIOPEN / AT+QSSLOPEN of the same ids, the line
  written one byte a write and the next lines (reads of the reopened ids) written before the
  chain's final result, while a direct-push socket's data arrive;
- AT+QIDEACT;+QIACT;+QIOPEN;+QSSLCLOSE;+QSSLOPEN in one line, one byte a write;
- the port closed and reopened between the halves of such a line, and right after a whole one;
- a transparent socket parked by "+++" with data waiting, switched by AT+QISWTMD to buffer and
  then push mode in the same line that closes and reopens another id, closed / deactivated and
  reopened in one line (then ATO: NO CARRIER), switched online at the end of such a line (the
  opens' URCs held until OK after "+++"), a parked SSL transparent socket under AT+QIDEACT;
- open;close;open of one id in a line, a second open of a busy id (563), two pipelined reopen
  lines, A/ repeating a reopen chain, AT+QICLOSE=<id>,<timeout> lingering while the same line
  reopens the id and the next line is already written;
- AT+QISWTMD push <-> buffer in a reopen chain while a peer streams between the line's bytes;
- a driven peer's data arriving while no host holds the port between the halves of a chain.

The port closed and reopened in the same instant (no gap) between a line's halves may join
them -- docs/behaviour.md: "A close and reopen in the very same instant cannot be told apart
from no close at all" -- so those tests leave 0.1 s / 0.3 s between close and open.

Checked: every URC the host sees is about a socket that is in the state it says (no "recv"
for an id with nothing readable, no "closed" for an id the line reopened), the bytes the
servers echoed are read once (bytes of a socket the host closed unread are gone, as
documented), no traceback / ERROR record (strict_log), AT still answers.
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.host import Host
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, DrivenPeer, qird, wait_for

OK = b"\r\nOK\r\n"
SSL = '"echo.example",443'
TCPD = f'"TCP","{TCP_HOST}",{TCP_PORT}'
PUSH = re.compile(rb'\+QIURC: "recv",(\d+),(\d+)\r\n')


def bytewise(host, line: bytes) -> None:
    for b in line:
        host.write(bytes([b]))


def pushed(transcript: bytes, cid: int) -> bytes:
    """The data of every direct-push URC for cid, in order."""
    out = b""
    for m in PUSH.finditer(transcript):
        if int(m.group(1)) == cid:
            out += transcript[m.end():m.end() + int(m.group(2))]
    return out


def setup_three(host) -> None:
    """id 0 TCP buffer, id 1 TCP direct push, SSL id 2 buffer."""
    assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
    assert host.at(f"AT+QIOPEN=1,0,{TCPD},0,0") == OK
    host.read_until(b"+QIOPEN: 0,0\r\n")
    assert host.at(f"AT+QIOPEN=1,1,{TCPD},0,1") == OK
    host.read_until(b"+QIOPEN: 1,0\r\n")
    assert host.at(f"AT+QSSLOPEN=1,1,2,{SSL},0") == OK
    host.read_until(b"+QSSLOPEN: 2,0\r\n", timeout=15)


def after_mark(host, mark: int, pat: bytes, timeout: float = 10) -> None:
    """Wait until pat is in what the host got since transcript offset mark."""
    wait_for(lambda: host._fill() or pat in host.transcript[mark:], timeout=timeout, what=repr(pat))


def send(host, cmd: str, cid: int, data: bytes) -> None:
    host.write(f"AT+{cmd}={cid},{len(data)}\r")
    host.read_until(b"> ")
    host.write(data)
    host.read_until(b"SEND OK\r\n")


def fill_old(host) -> None:
    mark = len(host.transcript)
    send(host, "QISEND", 0, b"old0" * 10)
    send(host, "QSSLSEND", 2, b"old2" * 10)
    after_mark(host, mark, b'+QIURC: "recv",0\r\n')
    after_mark(host, mark, b'+QSSLURC: "recv",2\r\n')
    host.quiet_for(0.1)


def check_new_sockets(host, ssl: bool = True) -> None:
    mark = len(host.transcript)
    send(host, "QISEND", 0, b"new0-payload")
    after_mark(host, mark, b'+QIURC: "recv",0')
    _, data = qird(host, 0)
    assert data == b"new0-payload"
    if not ssl:
        assert host.at("AT") == OK
        return
    mark = len(host.transcript)
    send(host, "QSSLSEND", 2, b"new2-payload")
    after_mark(host, mark, b'+QSSLURC: "recv",2')
    host.write("AT+QSSLRECV=2,1500\r")
    ans = host.read_until(OK)
    assert b"+QSSLRECV: 12\r\nnew2-payload" in ans, ans
    assert host.at("AT") == OK


def test_close_reopen_chain_bytewise_with_next_lines_pipelined(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    send(host, "QISEND", 1, b"push1-a" * 5)
    mark = len(host.transcript)
    host.write(f"AT+QISEND=1,{len(b'push1-b' * 5)}\r")
    host.read_until(b"> ")
    host.write(b"push1-b" * 5)                      # its echo arrives while the chain runs
    chain = (f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;"
             f"+QSSLOPEN=1,1,2,{SSL},0\r").encode()
    bytewise(host, chain)
    host.write(b"AT+QIRD=0,1500\rAT+QSSLRECV=2,1500\r")   # before the chain's final result
    after_mark(host, mark, b"+QIOPEN: 0,0", 15)
    after_mark(host, mark, b"+QSSLOPEN: 2,0", 15)
    wait_for(lambda: pushed(bytes(host.transcript), 1) == b"push1-a" * 5 + b"push1-b" * 5 or
             host._fill() or False, timeout=10, what="pushes of id 1")
    host.quiet_for(0.5)
    after = bytes(host.transcript[mark:])
    assert after.count(b"+QIOPEN: 0,0") == 1 and after.count(b"+QSSLOPEN: 2,0") == 1, after
    for bad in (b'"recv",0', b'"closed",0', b'+QSSLURC: "recv",2', b'"closed",2', b"old0", b"old2"):
        assert bad not in after, (bad, after)
    assert pushed(bytes(host.transcript), 1) == b"push1-a" * 5 + b"push1-b" * 5
    check_new_sockets(host)


def test_qideact_qiact_reopen_chain_bytewise(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    send(host, "QISEND", 1, b"P" * 30)
    wait_for(lambda: host._fill() or pushed(bytes(host.transcript), 1) == b"P" * 30, timeout=10)
    mark = len(host.transcript)
    chain = (f"AT+QIDEACT=1;+QIACT=1;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;"
             f"+QSSLOPEN=1,1,2,{SSL},0\r").encode()
    bytewise(host, chain)
    host.write(b"AT+QISTATE\r")
    after_mark(host, mark, b"+QIOPEN: 0,0", 15)
    after_mark(host, mark, b"+QSSLOPEN: 2,0", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert after.count(b'+QIURC: "closed",1') == 1, after      # id 1 was up: closed once
    for bad in (b'"recv",0', b'"closed",0', b'+QSSLURC: "recv",2', b'"closed",2',
                b'"recv",1', b"old0", b"old2", b"ERROR"):
        assert bad not in after, (bad, after)
    assert pushed(bytes(host.transcript), 1) == b"P" * 30
    assert host.at("AT+QICLOSE=1") == OK
    check_new_sockets(host)


@pytest.mark.parametrize("gap", [0.1, 0.3])
def test_port_closed_between_halves_of_a_reopen_chain(net, tcp_echo, echo, strict_log, ec2x, gap):
    host = ec2x
    setup_three(host)
    fill_old(host)
    path = host.path
    first = f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD[:10]}".encode()
    rest = f"{TCPD[10:]},0,0;+QSSLCLOSE=2\r".encode()
    bytewise(host, first)
    time.sleep(0.2)
    host.close()
    time.sleep(gap)
    h2 = Host(path)
    try:
        bytewise(h2, rest)
        stale = h2.quiet_for(1.0)
        assert b"+QIOPEN" not in stale and b"closed" not in stale, stale
        assert h2.at("AT") == OK
        # nothing of the half line ran: both sockets still hold their data, once
        _, data = qird(h2, 0)
        assert data == b"old0" * 10
        h2.write("AT+QSSLRECV=2,1500\r")
        assert b"old2" * 10 in h2.read_until(OK)
        _, data = qird(h2, 0)
        assert data == b""
    finally:
        h2.close()


def test_port_closed_right_after_a_whole_reopen_chain(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    path = host.path
    bytewise(host, (f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;"
                    f"+QSSLOPEN=1,1,2,{SSL},0\r").encode())
    host.close()
    time.sleep(0.3)
    h2 = Host(path)
    try:
        got = h2.quiet_for(2.0)
        for bad in (b'"recv",0', b'"closed",0', b'"recv",2', b'"closed",2', b"old"):
            assert bad not in got, (bad, got)
        assert h2.at("AT") == OK
        h2.write("AT+QISTATE=1,0\r")
        st = h2.read_until(OK)
        assert b'+QISTATE: 0,"TCP"' in st, st
        h2.write("AT+QSSLSTATE=2\r")
        st = h2.read_until(OK)
        assert b'+QSSLSTATE: 2,"SSLClient"' in st, st
        _, data = qird(h2, 0)
        assert data == b""
        check_new_sockets(h2)
    finally:
        h2.close()


def test_parked_transparent_switched_buffer_then_push_in_a_reopen_chain(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    assert host.at("ATS12=5") == OK
    host.write(f"AT+QIOPEN=1,3,{TCPD},0,2\r")
    host.read_until(b"CONNECT\r\n", timeout=15)
    host.write(b"online3")
    assert host.read_exactly(7) == b"online3"
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    send(host, "QISEND", 3, b"parked3")           # its echo waits in the socket: no URC
    time.sleep(0.5)
    mark = len(host.transcript)
    bytewise(host, f"AT+QISWTMD=3,0;+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QISWTMD=3,1\r".encode())
    after_mark(host, mark, b"+QIOPEN: 0,0", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert pushed(bytes(host.transcript), 3) == b"parked3", after
    # a buffer-mode "recv" for 3 must not follow the push of everything it had
    m = re.search(rb'\+QIURC: "recv",3\r\n', after)
    p = re.search(rb'\+QIURC: "recv",3,7\r\n', after)
    assert not (m and p and m.start() > p.start()), after
    host.write("AT+QISTATE=1,3\r")
    st = host.read_until(OK)
    assert re.search(rb'\+QISTATE: 3,"TCP",[^\r]*,1,"uart1"|\+QISTATE: 3,"TCP",[^\r]*,1,"usbmodem"', st), st
    assert b'"closed",0' not in after and b'"recv",0' not in after, after
    assert host.at("AT") == OK


def test_two_pipelined_reopen_lines_of_one_id_while_its_data_arrive(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    host.write(b"AT+QISEND=0,8\r")
    host.read_until(b"> ")
    host.write(b"late-old")                         # its echo lands around the closes below
    mark = len(host.transcript)
    line = f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0\r".encode()
    bytewise(host, line + line + b"AT+QIRD=0,1500\r")   # no wait for any final result
    wait_for(lambda: host._fill() or host.transcript[mark:].count(b"\r\nOK\r\n") >= 2,
             timeout=15, what="two OKs")
    host.quiet_for(1.0)
    after = bytes(host.transcript[mark:])
    for bad in (b'"recv",0', b'"closed",0', b"old0", b"late-old"):
        assert bad not in after, (bad, after)
    assert after.count(b"\r\nOK\r\n") >= 2 and after.count(b"ERROR") <= 1, after   # (AT+QIRD of an opening id)
    assert 1 <= after.count(b"+QIOPEN: 0,0") <= 2, after
    assert re.findall(rb"\+QIOPEN: 0,\d+", after)[-1] == b"+QIOPEN: 0,0"
    host.write("AT+QISTATE=1,0\r")
    st = host.read_until(OK)
    assert st.count(b"+QISTATE: 0,") == 1, st
    check_new_sockets(host, ssl=False)


def test_parked_ssl_transparent_closed_and_reopened_online_in_one_line(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    assert host.at('AT+QSSLCFG="seclevel",1,0;S12=5') == OK
    host.write(f"AT+QSSLOPEN=1,1,5,{SSL},2\r")
    host.read_until(b"CONNECT\r\n", timeout=15)
    host.write(b"first5")
    assert host.read_exactly(6) == b"first5"
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    send(host, "QSSLSEND", 5, b"stale5")            # echo parked in the old connection
    time.sleep(0.5)
    mark = len(host.transcript)
    bytewise(host, f"AT+QSSLCLOSE=5;+QSSLOPEN=1,1,5,{SSL},2\r".encode())
    host.read_until(b"CONNECT\r\n", timeout=15)
    host.write(b"fresh5")
    got = host.read_exactly(6, timeout=10)
    assert got == b"fresh5", (got, bytes(host.transcript[mark:]))
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    after = bytes(host.transcript[mark:])
    assert b"stale5" not in after and b'"closed",5' not in after and b"recv" not in after, after
    assert host.at("AT+QSSLCLOSE=5") == OK
    assert host.at("AT") == OK


def park_transparent_tcp(host, cid: int, waiting: bytes) -> None:
    """cid: TCP opened transparent, escaped by "+++", `waiting` echoed into it (no URC)."""
    assert host.at("ATS12=5") == OK
    host.write(f"AT+QIOPEN=1,{cid},{TCPD},0,2\r")
    host.read_until(b"CONNECT\r\n", timeout=15)
    host.write(b"online")
    assert host.read_exactly(6) == b"online"
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    send(host, "QISEND", cid, waiting)
    time.sleep(0.5)


@pytest.mark.parametrize("first", ["AT+QISWTMD=3,0;+QICLOSE=3", "AT+QISWTMD=3,0;+QIDEACT=1;+QIACT=1",
                                   "AT+QIDEACT=1;+QIACT=1"])
def test_parked_transparent_data_then_its_id_closed_and_reopened_in_one_line(net, tcp_echo, strict_log,
                                                                               ec2x, first):
    host = ec2x
    park_transparent_tcp(host, 3, b"parked-data")
    mark = len(host.transcript)
    bytewise(host, f"{first};+QIOPEN=1,3,{TCPD},0,0\r".encode())
    after_mark(host, mark, b"+QIOPEN: 3,", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert b"+QIOPEN: 3,0" in after, after
    for bad in (b'"recv",3', b'"closed",3', b"parked-data", b"ERROR"):
        assert bad not in after, (bad, after)
    _, data = qird(host, 3)
    assert data == b""
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"     # the parked connection is gone
    mark = len(host.transcript)
    send(host, "QISEND", 3, b"new3")
    after_mark(host, mark, b'+QIURC: "recv",3')
    _, data = qird(host, 3)
    assert data == b"new3"
    assert host.at("AT") == OK


def test_reopen_chain_ending_in_qiswtmd_to_transparent_holds_the_urcs(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    park_transparent_tcp(host, 3, b"waiting3")
    mark = len(host.transcript)
    bytewise(host, f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;+QSSLOPEN=1,1,2,{SSL},1;"
                   f"+QISWTMD=3,2\r".encode())
    host.read_until(b"\r\nCONNECT\r\n", timeout=15)
    assert host.read_exactly(8) == b"waiting3"
    time.sleep(1.0)                                 # the opens complete while online
    host.write(b"more3")
    online = host.read_exactly(5, timeout=5)
    assert online == b"more3", (online, bytes(host.transcript[mark:]))
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    connect = after.index(b"CONNECT")
    online_part = after[connect:after.index(b"more3") + 5]
    assert b"+Q" not in online_part, after            # no URC inside online data
    for bad in (b'"recv",0', b'"closed",0', b'"recv",2', b'"closed",2', b"old0", b"old2"):
        assert bad not in after, (bad, after)
    assert after.count(b"+QIOPEN: 0,0") == 1 and after.count(b"+QSSLOPEN: 2,0") == 1, after
    assert after.index(b"+QIOPEN: 0,0") > after.index(b"more3"), after
    mark = len(host.transcript)
    send(host, "QSSLSEND", 2, b"push2")
    after_mark(host, mark, b'+QSSLURC: "recv",2,5\r\npush2')
    host.quiet_for(0.2)
    assert bytes(host.transcript[mark:]).count(b"push2") == 1
    assert host.at("AT+QICLOSE=3") == OK
    assert host.at("AT") == OK


@pytest.mark.parametrize("mode", [0, 1])
def test_peer_data_while_no_host_between_halves_of_a_reopen_chain(emulator, net, tcp_echo, echo, strict_log,
                                                                  ec2x, mode):
    """id 4 (buffer or push) to a peer the test drives: its data come while the port is closed
    between the halves of a close/reopen chain about other ids; the next host, after writing the
    whole chain one byte a write, gets them exactly once ("recv" then AT+QIRD, or the push)."""
    host = ec2x
    setup_three(host)
    fill_old(host)
    peer = DrivenPeer()
    try:
        emulator.router.add_map("peer.example", 7100, "127.0.0.1", peer.port)
        assert host.at(f'AT+QIOPEN=1,4,"TCP","peer.example",7100,0,{mode}') == OK
        host.read_until(b"+QIOPEN: 4,0\r\n", timeout=10)
        peer.send(b"before-")
        if mode == 0:
            host.read_until(b'+QIURC: "recv",4\r\n')
        else:
            host.read_until(b'+QIURC: "recv",4,7\r\nbefore-')
        chain = (f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;+QSSLOPEN=1,1,2,{SSL},0\r").encode()
        bytewise(host, chain[:17])
        path = host.path
        time.sleep(0.1)
        host.close()
        time.sleep(0.2)
        peer.send(b"during-")                       # nobody holds the port
        time.sleep(0.3)
        h2 = Host(path)
        try:
            mark = 0
            bytewise(h2, chain)
            after_mark(h2, mark, b"+QIOPEN: 0,0", 15)
            after_mark(h2, mark, b"+QSSLOPEN: 2,0", 15)
            peer.send(b"after")
            if mode == 1:
                wait_for(lambda: h2._fill() or pushed(bytes(h2.transcript), 4).endswith(b"after"), timeout=10)
                h2.quiet_for(0.5)
                got = bytes(h2.transcript)
                assert pushed(got, 4) == b"during-after", got
            else:
                h2.quiet_for(0.8)
                got = bytes(h2.transcript)
                _, data = qird(h2, 4)
                assert data == b"before-during-after", (data, got)
                assert got.count(b'+QIURC: "recv",4') <= 1, got
            for bad in (b'"recv",0', b'"closed",0', b'+QSSLURC: "recv",2', b'"closed",2', b"old0", b"old2"):
                assert bad not in got, (bad, got)
            h2.quiet_for(0.2)
            assert h2.at("AT") == OK
        finally:
            h2.close()
    finally:
        peer.close()


def test_open_close_open_of_one_id_in_one_line_bytewise(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
    mark = len(host.transcript)
    bytewise(host, (f"AT+QIOPEN=1,0,{TCPD},0,0;+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,1;"
                    f"+QSSLOPEN=1,1,2,{SSL},0;+QSSLCLOSE=2;+QSSLOPEN=1,1,2,{SSL},1\r").encode())
    host.write(b"AT\r")
    after_mark(host, mark, b"+QIOPEN: 0,", 15)
    after_mark(host, mark, b"+QSSLOPEN: 2,", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert after.count(b"+QIOPEN: 0,") == 1 and b"+QIOPEN: 0,0" in after, after
    assert after.count(b"+QSSLOPEN: 2,") == 1 and b"+QSSLOPEN: 2,0" in after, after
    assert after.count(b"\r\nOK\r\n") == 2 and b"ERROR" not in after and b"URC" not in after, after
    mark = len(host.transcript)
    send(host, "QISEND", 0, b"zero")                 # both second opens are direct push
    send(host, "QSSLSEND", 2, b"two")
    after_mark(host, mark, b'+QIURC: "recv",0,4\r\nzero')
    after_mark(host, mark, b'+QSSLURC: "recv",2,3\r\ntwo')
    host.quiet_for(0.3)
    assert host.at("AT") == OK


def test_second_open_of_a_busy_id_in_a_chain(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
    mark = len(host.transcript)
    bytewise(host, f"AT+QSSLOPEN=1,1,2,{SSL},0;+QSSLOPEN=1,1,2,{SSL},1\r".encode())
    after_mark(host, mark, b"ERROR", 15)
    after_mark(host, mark, b"+QSSLOPEN: 2,", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert after.count(b"+QSSLOPEN: 2,") == 1 and b"+QSSLOPEN: 2,0" in after, after
    assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 563"), after
    mark = len(host.transcript)
    send(host, "QSSLSEND", 2, b"two")                # the first open (buffer mode) stands
    after_mark(host, mark, b'+QSSLURC: "recv",2\r\n')
    host.quiet_for(0.2)
    host.write("AT+QSSLRECV=2,100\r")
    assert b"+QSSLRECV: 3\r\ntwo" in host.read_until(OK)


@pytest.mark.parametrize("switch", ["+QISWTMD=4,0", "+QISWTMD=4,1;+QISWTMD=4,0", "+QISWTMD=4,0;+QISWTMD=4,1"])
def test_push_buffer_switch_in_a_reopen_chain_while_the_peer_streams(emulator, net, tcp_echo, strict_log,
                                                                     ec2x, switch):
    host = ec2x
    assert host.at(f"AT+QIOPEN=1,0,{TCPD},0,0") == OK
    host.read_until(b"+QIOPEN: 0,0\r\n")
    peer = DrivenPeer()
    try:
        emulator.router.add_map("peer.example", 7100, "127.0.0.1", peer.port)
        assert host.at('AT+QIOPEN=1,4,"TCP","peer.example",7100,0,1') == OK
        host.read_until(b"+QIOPEN: 4,0\r\n", timeout=10)
        mark = len(host.transcript)
        sent = b""
        line = f"AT{switch};+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0\r".encode()
        for i, b in enumerate(line):
            host.write(bytes([b]))
            if i % 6 == 0:
                chunk = b"<%03d>" % i
                peer.send(chunk)
                sent += chunk
                time.sleep(0.002)
        after_mark(host, mark, b"+QIOPEN: 0,0", 15)
        chunk = b"<tail>"
        peer.send(chunk)
        sent += chunk
        host.quiet_for(0.8)
        got = bytes(host.transcript[mark:])
        final_push = switch.endswith("4,1")
        rest = b""
        while True:
            _, data = qird(host, 4) if not final_push else (None, b"")
            rest += data
            if not data:
                break
        host.quiet_for(0.2)
        total = pushed(bytes(host.transcript[mark:]), 4) + rest
        assert total == sent, (total, sent, got)
        if rest == b"" and not final_push:
            assert b'+QIURC: "recv",4\r\n' not in got, got
        assert b'"closed",0' not in got and b'"recv",0' not in got and b"ERROR" not in got, got
        assert host.at("AT") == OK
    finally:
        peer.close()


def test_hangup_mid_chain_then_next_host_switches_parked_socket_online(net, tcp_echo, strict_log, ec2x):
    host = ec2x
    assert host.at(f"AT+QIOPEN=1,0,{TCPD},0,0") == OK
    host.read_until(b"+QIOPEN: 0,0\r\n")
    park_transparent_tcp(host, 3, b"parked-A")
    path = host.path
    line = f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QISWTMD=3,2\r".encode()
    bytewise(host, line[:20])
    host.close()
    time.sleep(0.3)
    h2 = Host(path)
    try:
        assert h2.at("ATE0") == OK
        mark = len(h2.transcript)
        bytewise(h2, line)
        h2.read_until(b"\r\nCONNECT\r\n", timeout=15)
        assert h2.read_exactly(8, timeout=5) == b"parked-A"
        h2.write(b"B-online")
        assert h2.read_exactly(8, timeout=5) == b"B-online"
        time.sleep(0.3)
        h2.write(b"+++")
        h2.read_until(OK, timeout=5)
        h2.quiet_for(0.8)
        after = bytes(h2.transcript[mark:])
        assert after.count(b"parked-A") == 1 and after.count(b"+QIOPEN: 0,0") == 1, after
        assert after.index(b"+QIOPEN: 0,0") > after.index(b"B-online"), after
        for bad in (b'"recv"', b'"closed"', b"ERROR"):
            assert bad not in after, (bad, after)
        assert h2.at("AT+QICLOSE=3") == OK
        assert h2.at("AT") == OK
    finally:
        h2.close()


def park_transparent_ssl(host, cid: int, waiting: bytes) -> None:
    assert host.at('AT+QSSLCFG="seclevel",1,0;S12=5') == OK
    host.write(f"AT+QSSLOPEN=1,1,{cid},{SSL},2\r")
    host.read_until(b"CONNECT\r\n", timeout=15)
    host.write(b"online")
    assert host.read_exactly(6) == b"online"
    time.sleep(0.3)
    host.write(b"+++")
    host.read_until(OK, timeout=5)
    send(host, "QSSLSEND", cid, waiting)
    time.sleep(0.5)


@pytest.mark.parametrize("reopen", [True, False])
def test_qideact_chain_over_a_parked_ssl_transparent_socket_with_data(net, tcp_echo, echo, strict_log, ec2x,
                                                                      reopen):
    host = ec2x
    park_transparent_ssl(host, 5, b"waiting5")
    mark = len(host.transcript)
    tail = f";+QSSLCLOSE=5;+QSSLOPEN=1,1,5,{SSL},0" if reopen else ""
    bytewise(host, f"AT+QIDEACT=1;+QIACT=1{tail}\r".encode())
    if reopen:
        after_mark(host, mark, b"+QSSLOPEN: 5,", 15)
    else:
        after_mark(host, mark, b"OK", 15)
    host.quiet_for(0.8)
    after = bytes(host.transcript[mark:])
    assert b"ERROR" not in after, after
    host.write("AT+QSSLRECV=5,1500\r")
    ans = host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))
    if reopen:
        assert b"+QSSLOPEN: 5,0" in after, after
        for bad in (b'"recv",5', b'"closed",5', b"waiting5"):
            assert bad not in after, (bad, after)
        assert b"+QSSLRECV: 0" in ans, ans
    else:
        # the context's loss ends the parked connection as a peer close would: its data readable once
        readable = b"waiting5" in ans
        assert after.count(b"waiting5") == 0, after
        assert readable, (after, ans)
        assert b'+QSSLURC: "recv",5' in after and after.count(b'"closed",5') == 1, after
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QSSLCLOSE=5") == OK
    assert host.at("AT") == OK


def test_lingering_close_and_reopen_of_an_id_with_the_next_line_written_early(emulator, net, strict_log, ec2x):
    """AT+QICLOSE=4,2 waits for a peer that keeps its side open; the same line reopens id 4 and
    the host writes AT+QIRD=4 before the OK.  The old peer's bytes during the linger are news
    of a closed socket: no "recv",4, nothing of them in the new socket."""
    host = ec2x
    old, new = DrivenPeer(), DrivenPeer()
    try:
        emulator.router.add_map("old.example", 7100, "127.0.0.1", old.port)
        emulator.router.add_map("new.example", 7101, "127.0.0.1", new.port)
        assert host.at('AT+QIOPEN=1,4,"TCP","old.example",7100,0,0') == OK
        host.read_until(b"+QIOPEN: 4,0\r\n", timeout=10)
        old.send(b"old-unread")
        host.read_until(b'+QIURC: "recv",4\r\n')
        mark = len(host.transcript)
        bytewise(host, b'AT+QICLOSE=4,2;+QIOPEN=1,4,"TCP","new.example",7101,0,0\r')
        time.sleep(0.2)
        try:
            old.send(b"old-during-linger")
        except OSError:
            pass
        host.write(b"AT+QIRD=4,1500\r")
        after_mark(host, mark, b"+QIOPEN: 4,", 15)
        wait_for(lambda: host._fill() or re.search(rb"\+QIRD: \d+|ERROR", host.transcript[mark:]), timeout=10,
                 what=repr(bytes(host.transcript[mark:])))
        host.quiet_for(0.5)
        after = bytes(host.transcript[mark:])
        assert b"+QIOPEN: 4,0" in after, after
        assert b"+QIRD: 0\r\n" in after or after.count(b"ERROR") == 1, after  # (read of an opening id)
        for bad in (b'"recv",4', b'"closed",4', b"old-"):
            assert bad not in after, (bad, after)
        assert new.accepted.wait(5)
        mark = len(host.transcript)
        new.send(b"new-data")
        after_mark(host, mark, b'+QIURC: "recv",4\r\n')
        host.quiet_for(0.1)
        _, data = qird(host, 4)
        assert data == b"new-data"
        assert host.at("AT") == OK
    finally:
        old.close()
        new.close()


def test_a_slash_repeats_a_close_reopen_chain(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    bytewise(host, f"AT+QICLOSE=0;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;+QSSLOPEN=1,1,2,{SSL},0\r".encode())
    host.read_until(OK)
    host.read_until(b"+QIOPEN: 0,0\r\n", timeout=15)
    host.read_until(b"+QSSLOPEN: 2,0\r\n", timeout=15)
    host.quiet_for(0.2)
    mark = len(host.transcript)
    for b in b"A/":                                 # V.250 5.2.4: the last command line again
        host.write(bytes([b]))
    after_mark(host, mark, b"+QIOPEN: 0,", 15)
    after_mark(host, mark, b"+QSSLOPEN: 2,", 15)
    host.quiet_for(0.7)
    after = bytes(host.transcript[mark:])
    assert after.count(b"+QIOPEN: 0,0") == 1 and after.count(b"+QSSLOPEN: 2,0") == 1, after
    for bad in (b'"recv"', b'"closed"', b"old", b"ERROR"):
        assert bad not in after, (bad, after)
    check_new_sockets(host)


def test_port_closed_right_after_a_whole_qideact_reopen_chain(net, tcp_echo, echo, strict_log, ec2x):
    host = ec2x
    setup_three(host)
    fill_old(host)
    send(host, "QISEND", 1, b"P" * 20)
    host.read_until(b'+QIURC: "recv",1,20\r\n' + b"P" * 20)
    path = host.path
    bytewise(host, (f"AT+QIDEACT=1;+QIACT=1;+QIOPEN=1,0,{TCPD},0,0;+QSSLCLOSE=2;"
                    f"+QSSLOPEN=1,1,2,{SSL},0\r").encode())
    host.close()
    time.sleep(0.3)
    h2 = Host(path)
    try:
        got = h2.quiet_for(2.0)
        for bad in (b'"recv",0', b'"closed",0', b'"recv",2', b'"closed",2', b'"recv",1', b"old", b"P"):
            assert bad not in got, (bad, got)
        assert got.count(b'"closed",1') <= 1, got
        assert h2.at("AT") == OK
        h2.write("AT+QISTATE\r")
        st = h2.read_until(OK)
        assert re.findall(rb"\+QISTATE: (\d+),", st) == [b"0"], st     # id 1 went with the context
        assert h2.at("AT+QICLOSE=1") == OK
        check_new_sockets(h2)
    finally:
        h2.close()
