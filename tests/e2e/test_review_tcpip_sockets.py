"""Review of the EC2x TCP/UDP sockets (emulator/sockets/tcpip.py, delivery.py, qicfg.py,
emulator/commands/tcpip.py) through the pty, against the Quectel TCP(IP) notes (BG96 TCP/IP AN,
BG95&BG77&BG600L TCP/IP AN, the EC2x TCP(IP) manual's command set) and docs/behaviour.md.

What earlier files (test_tcpip.py, test_adversarial_tcpip*.py, test_qicfg_spec.py,
test_adversarial_files_cfg_tcpip.py) do not already pin: a UDP SERVICE past its receive buffer
with many senders, hex dataformat on a UDP SERVICE, close-and-reopen of one UDP port in one
line, the id pool full for a listener and an id freed again, SEND OK then AT+QICLOSE in one
write, ATO after AT+QISWTMD moved a transparent socket to buffer mode (back to transparent), clients that reset right
after connecting.  A test marked xfail(strict) reproduces a confirmed bug."""
from __future__ import annotations

import re
import socket
import struct

import pytest

from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, error_code, escape, free_port, qiopen,
                                      udp_peer, wait_for)

OK = b"\r\nOK\r\n"
QIRD_HEAD = re.compile(rb'\r\n\+QIRD: (\d+)(?:,"([\d.]+)",(\d+))?\r\n')


@pytest.fixture
def modem(ec2x_strict):
    """(host, advance(s), port): EC2x on manual time, PDP context 1 up, no error logged."""
    return ec2x_strict


URC_LINE = re.compile(rb'\r\n\+QIURC: "[a-z ]+"[^\r]*\r\n')


def answer(host, line: str) -> bytes:
    """A command's answer without the buffer-mode URC lines that came in the middle (those
    stay in host.transcript for seen())."""
    return URC_LINE.sub(b"", host.at(line))


def qird_query(host, connect_id: int) -> tuple[int, int, int]:
    out = answer(host, f"AT+QIRD={connect_id},0")
    m = re.fullmatch(rb"\r\n\+QIRD: (\d+),(\d+),(\d+)\r\n\r\nOK\r\n", out)
    assert m, out
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def read_all_udp_service(host, connect_id: int) -> list[tuple[int, bytes]]:
    """AT+QIRD until +QIRD: 0; each read is (sender port, data)."""
    got = []
    while True:
        host.write(f"AT+QIRD={connect_id},1500\r")
        m = QIRD_HEAD.search(host.read_until(QIRD_HEAD))
        n = int(m.group(1))
        if n == 0:
            assert host.read_until(OK) == OK
            return got
        assert m.group(2) == b"127.0.0.1", m.group(0)
        data = host.read_exactly(n)
        assert host.read_until(OK) == b"\r\n\r\nOK\r\n"
        got.append((int(m.group(3)), data))


# -- confirmed bugs ------------------------------------------------------------------------------
# Was a bug, fixed: AT+QICFG? / AT+QICFG / AT+QISWTMD? / AT+QISWTMD answered ERROR but left
# AT+QIGETERROR at its previous value (0 after a good command), where every other TCP/IP form
# the module lacks (AT+QIOPEN?, AT+QIRD?, AT+QISDE) says 552 (ssl_common.no_such_form).
def test_forms_qicfg_and_qiswtmd_lack_set_qigeterror_552_like_the_other_tcpip_commands(modem):
    host, _, _ = modem
    assert host.at("AT+QIOPEN?") == b"\r\nERROR\r\n" and error_code(host) == 552     # the rule
    for line in ("AT+QICFG?", "AT+QICFG", "AT+QISWTMD?", "AT+QISWTMD"):
        assert host.at("AT+QISDE?") == b"\r\n+QISDE: 1\r\n\r\nOK\r\n" and error_code(host) == 0
        assert host.at(line) == b"\r\nERROR\r\n", line
        assert error_code(host) == 552, line


# -- verified behaviour (regression guards) ------------------------------------------------------
def test_udp_service_many_senders_past_the_receive_buffer_keep_boundaries_and_senders(modem):
    """8 senders, 80 datagrams (~88 KB: past tcpip.recv_buffer, so reading pauses and the rest
    waits in the kernel): every AT+QIRD is one whole datagram with its own sender, nothing lost,
    duplicated or merged; the ,0 query counts bytes."""
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    peers = [udp_peer() for _ in range(8)]
    sent: list[tuple[int, bytes]] = []
    total = 0
    for r in range(10):
        for i, p in enumerate(peers):
            data = (b"<%d.%d>" % (i, r)) * (180 + 3 * r + i)        # distinct, ~1100 bytes
            p.sendto(data, ("127.0.0.1", lport))
            sent.append((p.getsockname()[1], data))
            total += len(data)
        if total < 65536:                       # the kernel never holds more than a round
            wait_for(lambda: qird_query(host, 0)[0] == total, what=f"{total} bytes in")
    assert total > 65536 + 8000
    host.seen(b'\r\n+QIURC: "recv",0\r\n')
    got = read_all_udp_service(host, 0)
    assert len(got) == len(sent)
    assert sorted(got) == sorted(sent)
    for port in {p for p, _ in sent}:           # each sender's datagrams in the order sent
        assert [d for p, d in got if p == port] == [d for p, d in sent if p == port]
    assert qird_query(host, 0) == (total, total, 0)
    for p in peers:
        p.close()
    assert host.at("AT+QICLOSE=0") == OK


def test_hex_dataformat_on_a_udp_service_sends_bytes_and_reads_hex_with_the_sender(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 4, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    assert host.at('AT+QICFG="dataformat",1,1') == OK
    peer = udp_peer()
    me = peer.getsockname()[1]
    host.write(f'AT+QISEND=4,3,"127.0.0.1",{me}\r')
    assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "
    host.write(b"00fF1a")                       # 3 bytes, 6 digits (Ctrl+Z's byte is data)
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    assert peer.recvfrom(100) == (b"\x00\xff\x1a", ("127.0.0.1", lport))
    peer.sendto(b"\r\nOK\r\n", ("127.0.0.1", lport))
    host.seen(b'\r\n+QIURC: "recv",4\r\n')
    assert host.at("AT+QIRD=4,2") == f'\r\n+QIRD: 2,"127.0.0.1",{me}\r\n0d0a\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=4") == f'\r\n+QIRD: 4,"127.0.0.1",{me}\r\n4f4b0d0a\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=4") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=4,0") == b"\r\n+QISEND: 3,3,0\r\n\r\nOK\r\n"        # bytes, not digits
    peer.close()
    assert host.at("AT+QICLOSE=4") == OK


def test_udp_service_closed_and_reopened_on_the_same_port_in_one_line(modem):
    """The port is free again by the time the line's next AT+QIOPEN binds (not 556), and the
    new socket starts empty: no datagram, counter or sender of the old one."""
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    peer = udp_peer()
    peer.sendto(b"old", ("127.0.0.1", lport))
    host.seen(b'\r\n+QIURC: "recv",0\r\n')
    line = f'AT+QICLOSE=0;+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,{lport},0'
    assert host.at(line) == OK
    assert host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n")) == b"+QIOPEN: 0,0\r\n"
    assert qird_query(host, 0) == (0, 0, 0)
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    peer.sendto(b"new", ("127.0.0.1", lport))
    host.seen(b'\r\n+QIURC: "recv",0\r\n')
    me = peer.getsockname()[1]
    assert host.at("AT+QIRD=0") == f'\r\n+QIRD: 3,"127.0.0.1",{me}\r\nnew\r\n\r\nOK\r\n'.encode()
    peer.close()
    assert host.at("AT+QICLOSE=0") == OK


def test_listener_with_the_pool_full_reports_incoming_full_then_reuses_a_freed_id(modem, tcp_echo):
    """A listener on 0, clients on 1-11: a connection is "incoming full" and dropped (BG96
    §2.3.3); once AT+QICLOSE frees 5, the next connection is TCP INCOMING on 5 and works."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    for i in range(1, 12):
        qiopen(host, i)
    refused = socket.create_connection(("127.0.0.1", lport))
    host.seen(b'\r\n+QIURC: "incoming full"\r\n')
    refused.settimeout(5)
    try:
        assert refused.recv(10) == b""        # dropped: EOF or reset, never data
    except ConnectionResetError:
        pass
    refused.close()
    assert host.at("AT+QICLOSE=5") == OK
    client = socket.create_connection(("127.0.0.1", lport))
    me = client.getsockname()[1]
    assert host.seen(re.compile(rb'\+QIURC: "incoming",\d+,[^\r]*\r\n')) == \
        f'+QIURC: "incoming",5,0,"127.0.0.1",{me}\r\n'.encode()
    client.sendall(b"to-five")
    host.seen(b'\r\n+QIURC: "recv",5\r\n')
    assert host.at("AT+QIRD=5") == b"\r\n+QIRD: 7\r\nto-five\r\n\r\nOK\r\n"
    assert host.at("AT+QISTATE=1,5") == (
        f'\r\n+QISTATE: 5,"TCP INCOMING","127.0.0.1",{me},{lport},2,1,0,0,"usbmodem"\r\n\r\nOK\r\n').encode()
    client.close()
    host.seen(b'\r\n+QIURC: "closed",5\r\n')
    for i in range(12):
        assert host.at(f"AT+QICLOSE={i},0") == OK
    assert host.at("AT+QISTATE?") == OK


def test_send_ok_then_qiclose_in_the_same_write_still_delivers_the_data(modem, peer_factory):
    """SEND OK's bytes leave a moment later (transmit_soon); an AT+QICLOSE the host wrote with
    the data -- even with <timeout> 0 -- must send them before the connection goes."""
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0)
    host.write(b"AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"helloAT+QICLOSE=0,0\r")
    assert host.read_until(OK) == b"\r\nSEND OK\r\n\r\nOK\r\n"
    wait_for(peer.eof.is_set, what="the peer sees the end")
    assert bytes(peer.got) == b"hello"
    assert host.at("AT+QISEND=0,0") == b"\r\nERROR\r\n" and error_code(host) == 572


def test_ato_after_qiswtmd_moved_the_transparent_socket_to_buffer_mode(modem, emulator):
    """Transparent, "+++", data arrive, AT+QISWTMD=<id>,0: the "recv" URC and AT+QIRD get them;
    ATO then returns to that connection all the same -- the note: "ATO will change the access
    mode of connection that exits transparent access mode lately" -- CONNECT, transparent
    again (AT+QISTATE access mode 2), data flow; after "+++" AT+QISWTMD=<id>,2 does the same."""
    host, advance, _ = modem
    assert host.at('AT+QICFG="transwaittm",0') == OK
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        assert escape(host, advance) == OK
        conn.send(b"while-away")
        wait_for(lambda: qird_query(host, 3)[0] == 10, what="the bytes in")
        assert host.at("AT+QISWTMD=3,0") == OK
        host.seen(b'\r\n+QIURC: "recv",3\r\n')
        assert host.at("AT+QIRD=3") == b"\r\n+QIRD: 10\r\nwhile-away\r\n\r\nOK\r\n"
        assert re.fullmatch(rb'\r\n\+QISTATE: 3,"TCP","[\d.]+",7000,\d+,2,1,3,0,"usbmodem"\r\n\r\nOK\r\n',
                            host.at("AT+QISTATE=1,3"))
        host.write(b"ATO\r")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"via-ato")
        assert conn.wait_received(7) == b"via-ato"
        assert escape(host, advance) == OK
        assert re.fullmatch(rb'\r\n\+QISTATE: 3,"TCP","[\d.]+",7000,\d+,2,1,3,2,"usbmodem"\r\n\r\nOK\r\n',
                            host.at("AT+QISTATE=1,3"))
        host.write(b"AT+QISWTMD=3,2\r")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"online-again")
        assert conn.wait_received(19) == b"via-atoonline-again"
        assert escape(host, advance) == OK
        assert host.at("AT+QICLOSE=3,0") == OK


def test_incoming_clients_that_reset_at_once_each_get_incoming_data_and_closed(modem):
    """Five clients connect and reset (RST) at once, odd ones after sending: each is a TCP
    INCOMING on the next id with "incoming", then "closed" (state 4); what the odd ones sent
    stays readable; no traceback."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    ports = []
    for k in range(1, 6):
        c = socket.create_connection(("127.0.0.1", lport))
        ports.append(c.getsockname()[1])
        if k % 2:
            c.sendall(b"data%d" % k)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    for k in range(1, 6):
        host.seen(f'\r\n+QIURC: "closed",{k}\r\n'.encode())
    incoming = re.findall(rb'\+QIURC: "incoming",(\d+),0,"127\.0\.0\.1",(\d+)\r\n', bytes(host.transcript))
    assert sorted((int(i), int(p)) for i, p in incoming) == list(zip(range(1, 6), ports))
    for k in range(1, 6):
        want = b"\r\n+QIRD: 5\r\ndata%d\r\n\r\nOK\r\n" % k if k % 2 else b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert answer(host, f"AT+QIRD={k}") == want
        assert b",4,1,0,0," in answer(host, f"AT+QISTATE=1,{k}")
    for k in range(6):
        assert host.at(f"AT+QICLOSE={k}") == OK
    assert host.at("AT+QISTATE?") == OK
