"""A second adversarial pass over the EC2x TCP/IP commands (docs/behaviour.md, "TCP/UDP
sockets (EC2x)" and "DNS, ping, NTP"): the AT+QISEND / AT+QIRD query forms after partial
sends, partial reads and peer closes; a UDP SERVICE's destinations and senders (bad
addresses, datagrams longer than a read, empty datagrams, push URCs with the address);
SSL and TCP/IP commands on the one id pool; listeners closed with clients still connected,
clients that come and go while the port is busy and ids held by closed sockets; AT+QISDE's
echo; AT+QIDNSGIP with several answers; AT+QPING at the timeout boundary; host hang-ups.
Exact bytes; nothing lost or duplicated; the modem answers after."""
from __future__ import annotations

import asyncio
import os
import re
import socket
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, UdpEchoServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, error_code, free_port, qiopen, qird,
                                      qisend, udp_peer, wait_for)

OK = b"\r\nOK\r\n"
PING_END = re.compile(rb"\+QPING: 0,\d+,\d+,\d+,\d+,\d+,\d+\r\n")


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def udp_service(host, connect_id: int, mode: int = 0) -> int:
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, connect_id, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=mode)
    return lport


# -- AT+QISEND=<id>,0 -------------------------------------------------------------------------
def test_qisend_query_after_partial_sends_and_a_peer_close(modem, emulator):
    """sent/acked/unacked after fixed, variable and hex sends, then after the peer closed
    (state 4): the counts stay; extra arguments are 552; a closed id is 572."""
    host, _, _ = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
        assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
        assert qisend(host, 0, b"abc", fixed=False) == b"\r\nSEND OK\r\n"
        assert host.at('AT+QISENDEX=0,"00ff"') == b"\r\nSEND OK\r\n"
        conn = server.wait_connection()
        assert conn.wait_received(10) == b"12345abc\x00\xff"
        wait_for(lambda: host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 10,10,0\r\n\r\nOK\r\n",
                 what="10 bytes acked")
        for bad in ("AT+QISEND=0,0,1", 'AT+QISEND=0,0,"127.0.0.1",5'):
            assert host.at(bad) == b"\r\nERROR\r\n", bad
            assert error_code(host) == 552, bad
        conn.close()
        host.seen(b'+QIURC: "closed",0\r\n')
        assert re.search(rb',4,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,0"))
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 10,10,0\r\n\r\nOK\r\n"
        assert host.at('AT+QISENDEX=0,"41"') == b"\r\nERROR\r\n"              # closing: 567
        assert error_code(host) == 567
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 10,10,0\r\n\r\nOK\r\n"   # nothing counted
        assert host.at("AT+QICLOSE=0") == OK
        assert host.at("AT+QISEND=0,0") == b"\r\nERROR\r\n"
        assert error_code(host) == 572


def test_qisend_query_of_a_udp_service_counts_only_what_left(modem):
    """A SEND FAIL (unroutable destination) and a refused line count nothing; a listener's
    id has no send counters (572)."""
    host, _, _ = modem
    udp_service(host, 2)
    peer = udp_peer()
    me = peer.getsockname()[1]
    assert qisend(host, 2, b"four", extra=f',"127.0.0.1",{me}') == b"\r\nSEND OK\r\n"
    assert peer.recvfrom(100)[0] == b"four"
    assert qisend(host, 2, b"lost", extra=',"192.0.2.1",53') == b"\r\nSEND FAIL\r\n"
    assert host.at('AT+QISEND=2,3,"127.0.0.1",0') == b"\r\nERROR\r\n"
    assert host.at("AT+QISEND=2,0") == b"\r\n+QISEND: 4,4,0\r\n\r\nOK\r\n"
    qiopen(host, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    assert host.at("AT+QISEND=5,0") == b"\r\nERROR\r\n"
    assert error_code(host) == 572
    peer.close()
    assert host.at("AT+QICLOSE=2") == OK and host.at("AT+QICLOSE=5") == OK


# -- a UDP SERVICE's destinations --------------------------------------------------------------
@pytest.mark.parametrize("extra", [',"127.0.0.1",0', ',"127.0.0.1",65536', ',"127.0.0.1",-1',
                                   ',"127.0.0.1","5000"', ',"127.0.0.1"', ',"127.0.0.1",5000,1', ',"",5000',
                                   ', ,5000', ",,5000"])
def test_udp_service_bad_destination_is_552_before_the_prompt(modem, extra):
    host, _, _ = modem
    udp_service(host, 3)
    assert host.at(f"AT+QISEND=3,3{extra}") == b"\r\nERROR\r\n"
    assert error_code(host) == 552
    assert host.at("AT+QISEND=3,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=3") == OK


@pytest.mark.parametrize("dest", ["999.1.1.1", "nohost.example", "0.0.0.0", "255.255.255.255", "10.0.0.1"])
def test_udp_service_unreachable_destination_is_send_fail_after_the_data(modem, dest):
    """Offline, only loopback or a route is reachable: the prompt, then SEND FAIL; the socket
    stays and the next datagram to a good address goes."""
    host, _, _ = modem
    udp_service(host, 3)
    assert qisend(host, 3, b"abc", extra=f',"{dest}",5000') == b"\r\nSEND FAIL\r\n"
    peer = udp_peer()
    assert qisend(host, 3, b"ok", extra=f',"127.0.0.1",{peer.getsockname()[1]}') == b"\r\nSEND OK\r\n"
    assert peer.recvfrom(10)[0] == b"ok"
    assert host.at("AT+QISEND=3,0") == b"\r\n+QISEND: 2,2,0\r\n\r\nOK\r\n"
    peer.close()
    assert host.at("AT+QICLOSE=3") == OK


def test_udp_service_sends_to_a_routed_name_bracketed_and_unquoted_literals(modem, emulator):
    host, _, _ = modem
    lport = udp_service(host, 4)
    peer = udp_peer()
    me = peer.getsockname()[1]
    emulator.router.add_map("peer.example", 5000, "127.0.0.1", me)
    assert qisend(host, 4, b"routed", extra=',"peer.example",5000') == b"\r\nSEND OK\r\n"
    assert qisend(host, 4, b"bracket", extra=f',"[127.0.0.1]",{me}') == b"\r\nSEND OK\r\n"
    assert qisend(host, 4, b"bare", extra=f",127.0.0.1,{me}") == b"\r\nSEND OK\r\n"
    assert [peer.recvfrom(100) for _ in range(3)] == [(d, ("127.0.0.1", lport))
                                                      for d in (b"routed", b"bracket", b"bare")]
    peer.close()
    assert host.at("AT+QICLOSE=4") == OK


# Was a bug, fixed: a UDP SERVICE (bound to 127.0.0.1) answered SEND OK to an IPv6 destination
# and the datagram was lost (asyncio's error went to error_received, ignored as an ICMP
# error); an IPv6 destination is now out of reach: SEND FAIL, nothing counted.
def test_udp_service_send_to_ipv6_loopback_is_not_silently_lost(modem):
    host, _, _ = modem
    try:
        peer6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        peer6.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    peer6.settimeout(1)
    udp_service(host, 3)
    answer = qisend(host, 3, b"abc", extra=f',"::1",{peer6.getsockname()[1]}')
    try:
        assert answer == b"\r\nSEND FAIL\r\n"
        assert host.at("AT+QISEND=3,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    finally:
        peer6.close()
        host.at("AT+QICLOSE=3")


# -- a UDP SERVICE's senders ------------------------------------------------------------------
def test_udp_service_long_and_empty_datagrams_buffer_then_push(modem):
    """Buffer mode: a 2000-byte datagram is read as 1500 + 500, both with its sender, then the
    next sender's; empty datagrams are neither URC nor read; AT+QIRD=<id>,0 counts bytes.
    Switched to push: one URC per <=1500 bytes, each with the sender, data exact."""
    host, _, _ = modem
    lport = udp_service(host, 3)
    a, b = udp_peer(), udp_peer()
    pa, pb = a.getsockname()[1], b.getsockname()[1]
    big = os.urandom(2000)
    a.sendto(b"", ("127.0.0.1", lport))
    a.sendto(big, ("127.0.0.1", lport))
    b.sendto(b"", ("127.0.0.1", lport))
    b.sendto(b"xyz", ("127.0.0.1", lport))
    host.seen(b'+QIURC: "recv",3\r\n')
    wait_for(lambda: host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 2003,0,2003\r\n\r\nOK\r\n", what="2003 bytes in")
    head, data = qird(host, 3)
    assert head == f'\r\n+QIRD: 1500,"127.0.0.1",{pa}\r\n'.encode() and data == big[:1500]
    assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 2003,1500,503\r\n\r\nOK\r\n"
    head, data = qird(host, 3)
    assert head == f'\r\n+QIRD: 500,"127.0.0.1",{pa}\r\n'.encode() and data == big[1500:]
    assert host.at("AT+QIRD=3,1") == f'\r\n+QIRD: 1,"127.0.0.1",{pb}\r\nx\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=3") == f'\r\n+QIRD: 2,"127.0.0.1",{pb}\r\nyz\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=3") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 2003,2003,0\r\n\r\nOK\r\n"
    assert b"recv" not in host.quiet_for(0.2)

    assert host.at("AT+QISWTMD=3,1") == OK
    a.sendto(big, ("127.0.0.1", lport))
    b.sendto(b"", ("127.0.0.1", lport))
    b.sendto(b"q", ("127.0.0.1", lport))
    want = (f'\r\n+QIURC: "recv",3,1500,"127.0.0.1",{pa}\r\n'.encode() + big[:1500] + b"\r\n"
            + f'\r\n+QIURC: "recv",3,500,"127.0.0.1",{pa}\r\n'.encode() + big[1500:] + b"\r\n"
            + f'\r\n+QIURC: "recv",3,1,"127.0.0.1",{pb}\r\n'.encode() + b"q\r\n")
    assert host.read_exactly(len(want)) == want
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 4004,4004,0\r\n\r\nOK\r\n"    # works in push mode
    assert host.at("AT+QIRD=3") == b"\r\nERROR\r\n" and error_code(host) == 572
    a.close()
    b.close()
    assert host.at("AT+QICLOSE=3") == OK


def test_qird_query_on_tcp_after_partial_reads_and_peer_close(modem, emulator):
    host, _, _ = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 1)
        conn = server.wait_connection()
        assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 0,0,0\r\n\r\nOK\r\n"
        conn.send(b"0123456789")
        conn.close()
        host.seen(b'+QIURC: "recv",1\r\n')
        host.seen(b'+QIURC: "closed",1\r\n')
        assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 10,0,10\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=1,3") == b"\r\n+QIRD: 3\r\n012\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 10,3,7\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=1,0,0") == b"\r\nERROR\r\n"
        assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 7\r\n3456789\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 10,10,0\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=1") == OK
        assert host.at("AT+QIRD=1,0") == b"\r\nERROR\r\n" and error_code(host) == 572


# -- SSL and TCP/IP on one id pool --------------------------------------------------------------
def test_each_command_set_sees_only_its_own_sockets(modem, emulator, echo, tcp_echo):
    """A TCP socket on 0, an SSL socket on 1: each list shows its own; every TCP/IP command on
    the SSL id and every SSL data command on the TCP id is 572; both keep working."""
    host, _, _ = modem
    qiopen(host, 0)
    assert host.at('AT+QSSLOPEN=1,1,1,"echo.example",443,0') == OK
    host.seen(b"+QSSLOPEN: 1,0\r\n")
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP",[^\r]*\r\n\r\nOK\r\n', host.at("AT+QISTATE?"))
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","echo\.example",443,[^\r]*\r\n\r\nOK\r\n',
                        host.at("AT+QSSLSTATE"))
    assert host.at("AT+QISTATE=1,1") == OK and host.at("AT+QSSLSTATE=0") == OK
    for line in ("AT+QIRD=1", "AT+QIRD=1,0", "AT+QISEND=1,0", "AT+QISEND=1,3", 'AT+QISENDEX=1,"41"',
                 "AT+QICLOSE=1", "AT+QSSLRECV=0,10", "AT+QSSLSEND=0,3"):
        assert host.at(line) == b"\r\nERROR\r\n", line
        assert error_code(host) == 572, line
    assert qisend(host, 0, b"tcp!") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert qird(host, 0)[1] == b"tcp!"
    assert host.send_data(1, b"ssl!") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "recv",1\r\n')
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 4\r\nssl!\r\n\r\nOK\r\n"
    # AT+QSSLCLOSE on the TCP id: not an SSL socket's, 572 as AT+QICLOSE on the SSL id (it was
    # OK, closing nothing); the TCP socket carries on
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nERROR\r\n"
    assert error_code(host) == 572
    assert host.at("AT+QISTATE=1,0").startswith(b'\r\n+QISTATE: 0,"TCP",')
    assert qisend(host, 0, b"still") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert qird(host, 0)[1] == b"still"
    assert host.at("AT+QSSLCLOSE=1") == OK
    assert host.at("AT+QICLOSE=0") == OK
    assert host.at("AT+QISTATE?") == OK and host.at("AT+QSSLSTATE") == OK


# -- listeners ----------------------------------------------------------------------------------
def test_a_listener_closed_with_clients_connected(modem):
    """The TCP INCOMING sockets it accepted keep working (push mode: the listener's), still
    naming it as serverID; new connections are refused; a new listener on the same id and port
    accepts again, on the next free id."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    a = socket.create_connection(("127.0.0.1", lport))
    host.seen(re.compile(rb'\+QIURC: "incoming",1,0,"127\.0\.0\.1",%d\r\n' % a.getsockname()[1]))
    b = socket.create_connection(("127.0.0.1", lport))
    host.seen(re.compile(rb'\+QIURC: "incoming",2,0,"127\.0\.0\.1",%d\r\n' % b.getsockname()[1]))
    assert host.at("AT+QICLOSE=0") == OK
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", lport), timeout=2)
    assert host.at("AT+QISTATE?") == (
        f'\r\n+QISTATE: 1,"TCP INCOMING","127.0.0.1",{a.getsockname()[1]},{lport},2,1,0,1,"usbmodem"\r\n'
        f'+QISTATE: 2,"TCP INCOMING","127.0.0.1",{b.getsockname()[1]},{lport},2,1,0,1,"usbmodem"\r\n'
        "\r\nOK\r\n").encode()
    a.sendall(b"hello")
    host.seen(b'+QIURC: "recv",1,5\r\nhello\r\n')
    assert qisend(host, 2, b"to-b") == b"\r\nSEND OK\r\n"
    b.settimeout(5)
    assert b.recv(10) == b"to-b"
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=0)
    c = socket.create_connection(("127.0.0.1", lport))
    host.seen(re.compile(rb'\+QIURC: "incoming",3,0,"127\.0\.0\.1",%d\r\n' % c.getsockname()[1]))
    for s, i in ((a, 1), (b, 2), (c, 3)):
        s.close()
        host.seen(b'+QIURC: "closed",%d\r\n' % i)
    for i in (1, 2, 3, 0):
        assert host.at(f"AT+QICLOSE={i}") == OK
    assert host.at("AT+QISTATE?") == OK


def test_clients_that_come_and_go_while_the_port_is_busy_hold_their_ids(modem, tcp_sink):
    """Three ids free; four clients connect, send and close while the host sits in a data
    prompt: after SEND OK, each of the first three is incoming/recv/closed in order, the fourth
    is "incoming full"; their data stay readable; a closed but not AT+QICLOSEd socket holds its
    id until the host closes it."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    for i in range(5, 12):
        qiopen(host, i, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    qiopen(host, 4)                                               # to the sink: ids 1-3 free
    host.write("AT+QISEND=4,5\r")
    host.read_until(b"> ")
    ports = []
    for k in range(4):
        c = socket.create_connection(("127.0.0.1", lport))
        ports.append(c.getsockname()[1])
        c.sendall(b"c%d" % k)
        c.close()
    time.sleep(0.5)                                               # all four reached the modem
    host.write(b"12345")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    urcs = [b'+QIURC: "incoming full"'] + [u % args for i in (1, 2, 3) for u, args in (
        (b'+QIURC: "incoming",%d,0,"127.0.0.1",%d', (i, ports[i - 1])), (b'+QIURC: "recv",%d', (i,)),
        (b'+QIURC: "closed",%d', (i,)))]
    got = host.read_exactly(sum(len(u) + 4 for u in urcs))
    lines = re.findall(rb"\r\n([^\r]*)\r\n", got)
    assert sorted(lines) == sorted(urcs), got                     # each once, nothing else
    for i in (1, 2, 3):                                           # per socket in order
        mine = [u for u in lines if re.search(rb'",%d(,|$)' % i, u)]
        assert mine == urcs[3 * i - 2:3 * i + 1], got
    assert host.quiet_for(0.3) == b""
    for i in (1, 2, 3):
        assert host.at(f"AT+QIRD={i}") == b"\r\n+QIRD: 2\r\nc%d\r\n\r\nOK\r\n" % (i - 1)
    assert re.search(rb',4,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,2"))
    c = socket.create_connection(("127.0.0.1", lport))            # still full
    assert host.read_until(b'+QIURC: "incoming full"\r\n') == b'\r\n+QIURC: "incoming full"\r\n'
    c.close()
    assert host.at("AT+QICLOSE=2") == OK
    c = socket.create_connection(("127.0.0.1", lport))
    want = b'\r\n+QIURC: "incoming",2,0,"127.0.0.1",%d\r\n' % c.getsockname()[1]
    assert host.read_until(want) == want
    c.close()
    assert host.read_until(b'+QIURC: "closed",2\r\n') == b'\r\n+QIURC: "closed",2\r\n'
    for i in range(12):
        assert host.at(f"AT+QICLOSE={i},0") == OK, i
    assert host.at("AT+QISTATE?") == OK


# -- AT+QISDE -----------------------------------------------------------------------------------
def test_qisde_echo_of_variable_length_data_and_cancel_and_reboot(open_modem, tcp_echo):
    """ATE1 + AT+QISDE=1: the data are echoed as typed (a backspace is data), not the Ctrl+Z;
    an ESC-cancelled send echoes what came and is ERROR 571; AT+QISENDEX echoes only its line;
    AT+QISDE=0 survives nothing past a reboot (back to 1)."""
    host, _ = open_modem("ec2x", echo=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(OK)
    line = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,1'
    assert host.at(line) == line.encode() + b"\r\r\nOK\r\n"
    host.seen(b"+QIOPEN: 0,0\r\n")
    host.write(b"AT+QISEND=0\r")
    assert host.read_until(b"> ") == b"AT+QISEND=0\r\r\n> "
    host.write(b"ab\x08c\x1a")
    assert host.read_until(RESULT) == b"ab\x08c\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0,4\r\nab\x08c\r\n') == b'\r\n+QIURC: "recv",0,4\r\nab\x08c\r\n'
    host.write(b"AT+QISEND=0\r")
    assert host.read_until(b"> ") == b"AT+QISEND=0\r\r\n> "
    host.write(b"xy\x1b")
    assert host.read_until(RESULT) == b"xy\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"AT+QIGETERROR\r\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n"
    assert host.at('AT+QISENDEX=0,"4142"') == b'AT+QISENDEX=0,"4142"\r\r\nSEND OK\r\n'
    assert host.read_until(b'+QIURC: "recv",0,2\r\nAB\r\n') == b'\r\n+QIURC: "recv",0,2\r\nAB\r\n'
    assert host.at("AT+QISDE=0") == b"AT+QISDE=0\r\r\nOK\r\n"
    assert host.at("AT+CFUN=1,1") == b"AT+CFUN=1,1\r\r\nOK\r\n"
    host.read_until(b"+QIND: PB DONE\r\n")
    assert host.at("AT+QISDE?") == b"AT+QISDE?\r\r\n+QISDE: 1\r\n\r\nOK\r\n"


# -- AT+QIDNSGIP / AT+QPING ---------------------------------------------------------------------
def test_qidnsgip_several_answers_deduplicated(monkeypatch, tmp_path):
    """The resolver (patched: nothing leaves this machine) answers four addresses with a
    duplicate: one "dnsgip",0,3,600 head, then each address once, in order."""
    from emulator.io.app import BackgroundEmulator

    async def resolver(self, host, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, 0))
                for a in ("192.0.2.1", "192.0.2.2", "192.0.2.1", "198.51.100.7")]
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", resolver)
    with BackgroundEmulator(offline=False) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK)
            assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert host.at('AT+QIDNSGIP=1,"multi.example"') == OK
            assert host.read_until(b'"198.51.100.7"\r\n', timeout=5) == (
                b'\r\n+QIURC: "dnsgip",0,3,600\r\n\r\n+QIURC: "dnsgip","192.0.2.1"\r\n'
                b'\r\n+QIURC: "dnsgip","192.0.2.2"\r\n\r\n+QIURC: "dnsgip","198.51.100.7"\r\n')
            assert host.quiet_for(0.2) == b""
        finally:
            host.close()


def test_qping_reply_at_exactly_the_timeout_and_ten_replies(emulator, ec2x_on):
    """An RTT equal to <timeout> is a reply, 1 ms more is 569; pingnum 10 gives ten lines and
    the summary; <timeout> 255 with a 2 s RTT is a reply."""
    host, port = ec2x_on
    emulator.router.add_ping("edge.example", 2000)
    emulator.router.add_ping("over.example", 2001)
    emulator.router.add_ping("fast.example", 7)
    shown = {n: emulator.router.display_address(n) for n in ("edge.example", "fast.example")}
    assert host.at('AT+QPING=1,"edge.example",2,1') == OK
    emulator.advance(port, 3)
    assert host.read_until(PING_END, timeout=3) == (
        f'\r\n+QPING: 0,"{shown["edge.example"]}",32,2000,255\r\n'
        "\r\n+QPING: 0,1,1,0,2000,2000,2000\r\n").encode()
    assert host.at('AT+QPING=1,"over.example",2,2') == OK
    emulator.advance(port, 5)
    assert host.read_until(PING_END, timeout=3) == \
        b"\r\n+QPING: 569\r\n\r\n+QPING: 569\r\n\r\n+QPING: 0,2,0,2,0,0,0\r\n"
    assert host.at('AT+QPING=1,"fast.example",1,10') == OK
    emulator.advance(port, 1)
    assert host.read_until(PING_END, timeout=3) == (
        f'\r\n+QPING: 0,"{shown["fast.example"]}",32,7,255\r\n'.encode() * 10
        + b"\r\n+QPING: 0,10,10,0,7,7,7\r\n")
    assert host.at('AT+QPING=1,"edge.example",255,1') == OK
    emulator.advance(port, 3)
    assert host.read_until(PING_END, timeout=3).endswith(b"\r\n+QPING: 0,1,1,0,2000,2000,2000\r\n")
    assert host.quiet_for(0.2) == b""


# -- host hang-ups ------------------------------------------------------------------------------
def test_hangup_while_a_udp_service_receives_then_the_next_host_reads_everything(modem):
    """Buffer mode: datagrams from two senders arrive while no host has the port open; the next
    host reads each one once, with its sender, and the counters agree."""
    host, _, port = modem
    lport = udp_service(host, 6)
    a, b = udp_peer(), udp_peer()
    host.close()
    wait_for(lambda: not port.port.attached, what="the modem saw the hang-up")
    for i in range(6):
        (a if i % 2 == 0 else b).sendto(b"d%d" % i, ("127.0.0.1", lport))
    time.sleep(0.3)
    host = Host(port.path)
    try:
        host.quiet_for(0.2)
        assert host.at("AT").endswith(OK)
        wait_for(lambda: host.at("AT+QIRD=6,0") == b"\r\n+QIRD: 12,0,12\r\n\r\nOK\r\n", what="12 bytes")
        for i in range(6):
            sender = (a if i % 2 == 0 else b).getsockname()[1]
            assert host.at("AT+QIRD=6") == \
                f'\r\n+QIRD: 2,"127.0.0.1",{sender}\r\nd{i}\r\n\r\nOK\r\n'.encode()
        assert host.at("AT+QIRD=6") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=6,0") == b"\r\n+QIRD: 12,12,0\r\n\r\nOK\r\n"
        a.sendto(b"after", ("127.0.0.1", lport))
        host.seen(b'+QIURC: "recv",6\r\n')
        assert host.at("AT+QICLOSE=6") == OK
    finally:
        host.close()
        a.close()
        b.close()


def test_hangup_in_a_udp_service_prompt_sends_nothing(modem):
    """The host leaves in the middle of AT+QISEND=<id>,<len>,"<ip>",<port>'s data: no
    datagram (not a short one), the next host gets a working socket."""
    host, _, port = modem
    udp_service(host, 7)
    peer = udp_peer()
    me = peer.getsockname()[1]
    host.write(f'AT+QISEND=7,10,"127.0.0.1",{me}\r')
    host.read_until(b"> ")
    host.write(b"half!")
    time.sleep(0.2)
    host.close()
    wait_for(lambda: not port.port.attached, what="the modem saw the hang-up")
    host = Host(port.path)
    try:
        host.quiet_for(0.2)
        assert host.at("AT").endswith(OK)
        assert host.at("AT+QISEND=7,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
        assert qisend(host, 7, b"whole", extra=f',"127.0.0.1",{me}') == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(100)[0] == b"whole"                # the first datagram it ever got
        assert host.at("AT+QICLOSE=7") == OK
    finally:
        host.close()
        peer.close()


def test_hangup_with_a_listener_and_a_client_arriving_meanwhile(modem, emulator):
    """A client connects while no host is there: its "incoming" URC goes to nobody, but the
    socket exists; the next host sees it in AT+QISTATE and reads its data."""
    host, _, port = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    host.close()
    wait_for(lambda: not port.port.attached, what="the modem saw the hang-up")
    c = socket.create_connection(("127.0.0.1", lport))
    c.sendall(b"while away")
    wait_for(lambda: any(s["id"] == 1 and s["unread"] == 10 for s in emulator.control("state")["sockets"]),
             what="the client accepted and its data buffered")
    host = Host(port.path)
    try:
        host.quiet_for(0.2)
        assert host.at("AT").endswith(OK)
        assert host.at("AT+QISTATE=1,1") == (
            f'\r\n+QISTATE: 1,"TCP INCOMING","127.0.0.1",{c.getsockname()[1]},{lport},2,1,0,0,"usbmodem"\r\n'
            "\r\nOK\r\n").encode()
        assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 10\r\nwhile away\r\n\r\nOK\r\n"
        c.close()
        host.seen(b'+QIURC: "closed",1\r\n')
        assert host.at("AT+QICLOSE=1") == OK and host.at("AT+QICLOSE=0") == OK
    finally:
        host.close()


# -- a UDP SERVICE's replies from routed destinations (docs/behaviour.md, "Routing") ----------
def test_udp_service_names_a_routed_reply_by_the_address_the_host_sent_to(modem, emulator):
    """A reply from a routed destination reads as from "8.8.8.8",53; once the host sends to
    the route's target itself, that sender reads as itself again; a socket reopened on the
    id remembers nothing.  (From a review: the name stayed after a direct send.)"""
    modem, _, _ = modem

    def read_one(cid: int) -> bytes:
        modem.seen(b'+QIURC: "recv",%d\r\n' % cid)
        return modem.at(f"AT+QIRD={cid}")
    with UdpEchoServer() as udp:
        emulator.router.add_map("8.8.8.8", 53, "127.0.0.1", udp.port)
        local = free_port(socket.SOCK_DGRAM)
        qiopen(modem, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=local)
        assert qisend(modem, 2, b"one", extra=',"8.8.8.8",53') == b"\r\nSEND OK\r\n"
        assert read_one(2) == b'\r\n+QIRD: 3,"8.8.8.8",53\r\none\r\n\r\nOK\r\n'
        assert qisend(modem, 2, b"two", extra=f',"127.0.0.1",{udp.port}') == b"\r\nSEND OK\r\n"
        assert read_one(2) == f'\r\n+QIRD: 3,"127.0.0.1",{udp.port}\r\ntwo\r\n\r\nOK\r\n'.encode()
        assert qisend(modem, 2, b"six", extra=',"8.8.8.8",53') == b"\r\nSEND OK\r\n"
        assert read_one(2) == b'\r\n+QIRD: 3,"8.8.8.8",53\r\nsix\r\n\r\nOK\r\n'
        assert modem.at("AT+QICLOSE=2") == OK
        qiopen(modem, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=local)
        udp.sock.sendto(b"x", ("127.0.0.1", local))
        assert read_one(2) == f'\r\n+QIRD: 1,"127.0.0.1",{udp.port}\r\nx\r\n\r\nOK\r\n'.encode()
