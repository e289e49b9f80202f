"""An eighth adversarial pass over the EC2x TCP/IP commands (AT+QIOPEN & co.), aimed at what
test_tcpip.py, test_adversarial_tcpip*.py, test_review_tcpip_*.py and
test_adversarial_hostile_peers_tcpip.py leave out (docs/behaviour.md "TCP/UDP sockets (EC2x)";
formats from the BG96/BG95 TCP/IP application notes §2.3/§2.4, the EC20 TCPIP manual's set):

* the network deactivating context 1 while five kinds of service run on it (a TCP client and a
  UDP client holding unread data, a TCP LISTENER, its TCP INCOMING, a UDP SERVICE holding a
  datagram): "pdpdeact" once and first, one "closed" per id, what was received still readable,
  sends refused, every id freed by AT+QICLOSE;
* AT+QIDEACT while an open is still pending beside a listener and a UDP SERVICE: OK, the open's
  "+QIOPEN: <id>,570", the others' "closed", no "pdpdeact", all ids free at once;
* two push-mode TCP INCOMING sockets streaming at once to a host that reads in odd chunks: every
  `+QIURC: "recv",<id>,<len>` CR LF <data> CR LF exact, each id's stream whole and in order;
* addresses of loopback other than 127.0.0.1 (127.0.0.2-4): "incoming" names the client's own
  address, a UDP SERVICE names its sender and replies to it, a "TCP" client dials it;
* a UDP SERVICE's AT+QIRD=<id>,0 counters through partly read datagrams, empty ones between;
* a UDP client receiving one 60000-byte datagram, a UDP SERVICE three of them past recv_buffer:
  AT+QIRD pieces of at most 1500, each naming its sender, never spanning two datagrams;
* optional <local_port>/<access_mode> omitted; a UDP SERVICE sending to its own port; the
  network taking the bearer inside a '>' prompt; AT+QIOPEN;+QIDEACT in one line;
* a push backlog (the host not reading the port) when AT+QICLOSE / AT+QIDEACT ends the socket,
  and the id reopened: whole push units, answers between them, no stale pushes, "closed";
  an incoming's URCs behind another socket's backlog; AT+QIRD=<id>,0 of a push socket counting
  exactly what the port showed; a push backlog + FIN switched to buffer mode;
* a buffer-mode "recv" URC still waiting behind a running command line (AT+QICLOSE linger) when
  AT+QIDEACT or AT+QISWTMD=<id>,1 makes it no news, with AT+QICFG="recvind" 0 and 1;
* an "incoming" raised behind a running line when the listener is closed or the context goes;
* a push UDP SERVICE datagram arriving inside its own AT+QISEND prompt.

Bugs this round found, fixed with these tests: AT+QIDEACT lost the "closed" of a push-mode
socket whose data still waited for a busy port (PushDelivery.release dropped the "closed" it
held behind them; report_close_now says it); with AT+QICFG="recvind",1 a waiting buffer-mode
"recv" was not taken back by AT+QIDEACT or AT+QISWTMD=<id>,1 (drop_urcs matched the URC's
text, rebuilt with the buffer's length now; URCs now carry a kind).

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback) and reaches
only loopback addresses."""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, OddHost, free_port, qiopen,
                                      qird, qisend, udp_peer, wait_for)

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SEND_OK = b"\r\nSEND OK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def incoming_line(host) -> bytes:
    return host.read_until(b'"incoming"') + host.read_until(b"\r\n")


def open_listener(host, connect_id: int, lport: int, mode: int = 0) -> None:
    assert host.at(f'AT+QIOPEN=1,{connect_id},"TCP LISTENER","127.0.0.1",0,{lport},{mode}') == OK
    assert host.read_until(f"+QIOPEN: {connect_id},".encode()) + host.read_until(b"\r\n") == \
        f"\r\n+QIOPEN: {connect_id},0\r\n".encode()


def open_service(host, connect_id: int, lport: int, mode: int = 0) -> None:
    assert host.at(f'AT+QIOPEN=1,{connect_id},"UDP SERVICE","127.0.0.1",0,{lport},{mode}') == OK
    assert host.read_until(f"+QIOPEN: {connect_id},".encode()) + host.read_until(b"\r\n") == \
        f"\r\n+QIOPEN: {connect_id},0\r\n".encode()


# -- the network takes the bearer from five kinds of service -----------------------------------
def test_network_deactivation_with_five_service_kinds_keeps_what_came_readable(modem, emulator, tcp_echo, udp_echo):
    """Context 1 carries a TCP client (buffer mode, 5 unread bytes), a UDP client (one unread
    datagram), a TCP LISTENER, its TCP INCOMING (7 unread bytes) and a UDP SERVICE (one unread
    datagram with its sender).  The network deactivates context 1 (control op pdp_deact):
    `+QIURC: "pdpdeact",1` exactly once and before every "closed"; one "closed" per id (5);
    AT+QISTATE shows each left socket closing (4); what came before is still read by AT+QIRD
    (the service's with its sender); AT+QISEND is ERROR; AT+QICLOSE frees each id; after
    AT+QIACT every id opens again."""
    host, advance, _ = modem
    qiopen(host, 0)                                               # TCP client -> echo
    assert qisend(host, 0, b"hello") == SEND_OK
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)                    # UDP client -> echo
    assert qisend(host, 1, b"dgram") == SEND_OK
    assert host.read_until(b'+QIURC: "recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    lport, sport = free_port(), free_port(socket.SOCK_DGRAM)
    open_listener(host, 2, lport)
    open_service(host, 3, sport)
    client = socket.create_connection(("127.0.0.1", lport), timeout=5)
    cport = client.getsockname()[1]
    assert incoming_line(host) == f'\r\n+QIURC: "incoming",4,2,"127.0.0.1",{cport}\r\n'.encode()
    client.sendall(b"incomin")
    assert host.read_until(b'+QIURC: "recv",4\r\n') == b'\r\n+QIURC: "recv",4\r\n'
    peer = udp_peer()
    peer.sendto(b"svc-data", ("127.0.0.1", sport))
    assert host.read_until(b'+QIURC: "recv",3\r\n') == b'\r\n+QIURC: "recv",3\r\n'

    assert emulator.control("pdp_deact", cid=1)["ok"]
    head = host.read_until(b'+QIURC: "pdpdeact",1\r\n')
    assert head == b'\r\n+QIURC: "pdpdeact",1\r\n', head
    closed = host.read_exactly(5 * len(b'\r\n+QIURC: "closed",0\r\n'))
    assert sorted(re.findall(rb'\r\n\+QIURC: "closed",(\d)\r\n', closed)) == [b"0", b"1", b"2", b"3", b"4"], closed
    assert host.quiet_for(0.3) == b""
    assert host.transcript.count(b"pdpdeact") == 1
    client.settimeout(5)
    try:
        assert client.recv(10) == b""                             # the incoming's connection went
    except ConnectionResetError:
        pass

    states = host.at("AT+QISTATE?")
    assert re.findall(rb'\+QISTATE: (\d),"([A-Z ]+)","[\d.]+",\d+,\d+,(\d),1,', states) == [
        (b"0", b"TCP", b"4"), (b"1", b"UDP", b"4"), (b"2", b"TCP LISTENER", b"4"),
        (b"3", b"UDP SERVICE", b"4"), (b"4", b"TCP INCOMING", b"4")], states
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 5,0,5\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nhello\r\n" + OK
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 5\r\ndgram\r\n" + OK
    pport = peer.getsockname()[1]
    assert host.at("AT+QIRD=3") == f'\r\n+QIRD: 8,"127.0.0.1",{pport}\r\nsvc-data\r\n'.encode() + OK
    assert host.at("AT+QIRD=4") == b"\r\n+QIRD: 7\r\nincomin\r\n" + OK
    assert host.at("AT+QIRD=4,0") == b"\r\n+QIRD: 7,7,0\r\n" + OK
    host.write("AT+QISEND=0,3\r")
    assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == ERROR
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 567,socket has been closed\r\n" + OK
    assert host.at("AT+QICLOSE=0;+QICLOSE=1;+QICLOSE=2;+QICLOSE=3;+QICLOSE=4") == OK
    assert host.at("AT+QISTATE?") == OK
    assert host.at("AT+QIACT=1") == OK
    open_listener(host, 2, lport)                                 # its port was released
    open_service(host, 3, sport)
    qiopen(host, 4)
    client.close()
    peer.close()


def test_qideact_with_an_open_pending_beside_a_listener_and_a_service(modem, emulator, tcp_echo):
    """A TCP client whose connect is never answered (handshake_stall) is still opening when the
    host sends AT+QIDEACT=1; a listener and a UDP SERVICE run on the context too.  OK comes
    first, then the pending open's `+QIOPEN: 0,570` (the context's loss) and "closed" for the
    listener and the service -- never a "closed" for the id whose open was not answered, no
    "pdpdeact" (the host asked).  Every id is free at once: AT+QISTATE? is empty and the
    listener's and the service's ports open again after AT+QIACT."""
    host, advance, _ = modem
    lport, sport = free_port(), free_port(socket.SOCK_DGRAM)
    open_listener(host, 5, lport)
    open_service(host, 6, sport)
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    advance(1)
    assert b"+QIOPEN" not in host.quiet_for(0.2)
    assert host.at("AT+QIDEACT=1") == OK
    want = {b'+QIOPEN: 0,570', b'+QIURC: "closed",5', b'+QIURC: "closed",6'}
    got = host.read_exactly(sum(len(w) + 4 for w in want))
    assert set(re.findall(rb'\r\n([^\r\n]+)\r\n', got)) == want, got
    advance(200)
    assert host.quiet_for(0.3) == b""
    assert b'"closed",0' not in host.transcript and b"pdpdeact" not in host.transcript
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 570,PDP context break down\r\n" + OK
    assert host.at("AT+QISTATE?") == OK
    assert host.at("AT+QIACT=1") == OK
    open_listener(host, 0, lport)
    open_service(host, 5, sport)
    assert host.at(f'AT+QIOPEN=1,6,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 6,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 6,0\r\n"


# -- two push incoming streams, read in odd chunks ----------------------------------------------
PUSH = re.compile(rb'\r\n\+QIURC: "recv",(\d+),(\d+)\r\n')
CLOSED = re.compile(rb'\r\n\+QIURC: "closed",(\d+)\r\n')


def test_two_push_incoming_streams_at_once_framed_exactly_for_an_odd_chunk_reader(modem):
    """A push-mode listener; two clients each pour 40 KiB (bytes that look like URCs, answers
    and prompts among them) at the same time and close.  The host reads 1/3/7/4095 bytes at a
    time.  The port's output is nothing but `\\r\\n+QIURC: "recv",<id>,<n>\\r\\n<n bytes>\\r\\n`
    units (0 < n <= 1500) and, once each id's data are all out, its "closed"; each id's
    concatenated data are exactly what its client sent."""
    host, advance, _ = modem
    host.__class__ = OddHost
    host._turn = 0
    lport = free_port()
    open_listener(host, 0, lport, mode=1)
    clients = [socket.create_connection(("127.0.0.1", lport), timeout=5) for _ in range(2)]
    heads = incoming_line(host) + incoming_line(host)
    ids = [int(i) for i in re.findall(rb'"incoming",(\d+),0,', heads)]
    assert sorted(ids) == [1, 2], heads
    port_to_id = {int(p): int(i) for i, p in re.findall(rb'"incoming",(\d+),0,"127\.0\.0\.1",(\d+)', heads)}
    datas = {}
    for c in clients:
        blob = bytearray(os.urandom(40 * 1024))
        for at in range(0, len(blob), 997):
            blob[at:at + 30] = b'\r\n+QIURC: "recv",1,5\r\nOK\r\n> '[:30]
        datas[port_to_id[c.getsockname()[1]]] = bytes(blob)

    def pour(c, data):
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
    threads = [threading.Thread(target=pour, args=(c, datas[port_to_id[c.getsockname()[1]]])) for c in clients]
    for t in threads:
        t.start()
    got = {1: bytearray(), 2: bytearray()}
    closed = []
    deadline = time.monotonic() + 15
    buf = host.pending
    while len(closed) < 2:
        assert time.monotonic() < deadline, (closed, {k: len(v) for k, v in got.items()}, bytes(buf[:120]))
        m = PUSH.match(buf)
        if m:
            n = int(m.group(2))
            if len(buf) < m.end() + n + 2:
                host._fill()
                continue
            cid = int(m.group(1))
            assert cid in got and cid not in closed and 0 < n <= 1500, m.group(0)
            assert buf[m.end() + n:m.end() + n + 2] == b"\r\n", bytes(buf[m.end() + n - 20:m.end() + n + 20])
            got[cid] += buf[m.end():m.end() + n]
            del buf[:m.end() + n + 2]
            continue
        m = CLOSED.match(buf)
        if m:
            cid = int(m.group(1))
            assert bytes(got[cid]) == datas[cid], (cid, len(got[cid]))
            closed.append(cid)
            del buf[:m.end()]
            continue
        assert len(buf) < 40 or buf.startswith(b"\r\n+QIURC: "), bytes(buf[:120])
        host._fill()
    for t in threads:
        t.join()
    assert sorted(closed) == [1, 2]
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QICLOSE=1;+QICLOSE=2;+QICLOSE=0") == OK
    for c in clients:
        c.close()


# -- loopback addresses other than 127.0.0.1 ---------------------------------------------------
def test_other_loopback_addresses_are_named_and_reached_as_they_are(modem, emulator):
    """Linux routes all of 127.0.0.0/8 to lo.  A client bound to 127.0.0.2 connecting to a
    listener: "incoming" and AT+QISTATE name 127.0.0.2.  A datagram from 127.0.0.3 to a UDP
    SERVICE reads as from "127.0.0.3", and AT+QISEND=<id>,<len>,"127.0.0.3",<port> reaches
    that peer.  A "TCP" client dialling "127.0.0.4" unrouted is 566 (docs/behaviour.md: an
    unrouted IP address with --offline, loopback or not); routed to itself it reaches a server
    bound there, and AT+QISTATE shows it."""
    host, advance, _ = modem
    lport, sport = free_port(), free_port(socket.SOCK_DGRAM)
    open_listener(host, 0, lport)
    c = socket.socket()
    c.bind(("127.0.0.2", 0))
    c.settimeout(5)
    c.connect(("127.0.0.1", lport))
    cport = c.getsockname()[1]
    assert incoming_line(host) == f'\r\n+QIURC: "incoming",1,0,"127.0.0.2",{cport}\r\n'.encode()
    assert re.fullmatch(rf'\r\n\+QISTATE: 1,"TCP INCOMING","127\.0\.0\.2",{cport},{lport},2,1,0,0,"usbmodem"\r\n'
                        .encode() + OK, host.at("AT+QISTATE=1,1"))
    assert qisend(host, 1, b"to .2") == SEND_OK
    assert c.recv(10) == b"to .2"

    open_service(host, 2, sport)
    p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    p.bind(("127.0.0.3", 0))
    p.settimeout(5)
    pport = p.getsockname()[1]
    p.sendto(b"from .3", ("127.0.0.1", sport))
    assert host.read_until(b'+QIURC: "recv",2\r\n') == b'\r\n+QIURC: "recv",2\r\n'
    assert host.at("AT+QIRD=2") == f'\r\n+QIRD: 7,"127.0.0.3",{pport}\r\nfrom .3\r\n'.encode() + OK
    assert qisend(host, 2, b"back to .3", extra=f',"127.0.0.3",{pport}') == SEND_OK
    assert p.recvfrom(100) == (b"back to .3", ("127.0.0.1", sport))

    srv = socket.socket()
    srv.bind(("127.0.0.4", 0))
    srv.listen(1)
    srv.settimeout(5)
    sport4 = srv.getsockname()[1]
    assert host.at(f'AT+QIOPEN=1,3,"TCP","127.0.0.4",{sport4},0,0') == OK     # --offline, unrouted:
    assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 3,566\r\n"   # (documented)
    emulator.router.add_map("127.0.0.4", sport4, "127.0.0.4", sport4)
    assert host.at(f'AT+QIOPEN=1,3,"TCP","127.0.0.4",{sport4},0,0') == OK
    assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
    conn, _ = srv.accept()
    conn.settimeout(5)
    assert re.fullmatch(rf'\r\n\+QISTATE: 3,"TCP","127\.0\.0\.4",{sport4},\d+,2,1,3,0,"usbmodem"\r\n'.encode() + OK,
                        host.at("AT+QISTATE=1,3"))
    assert qisend(host, 3, b"to .4") == SEND_OK
    assert conn.recv(10) == b"to .4"
    for s in (c, p, srv, conn):
        s.close()


# -- UDP SERVICE counters ------------------------------------------------------------------------
def test_udp_service_qird_counters_through_part_read_datagrams_and_empty_ones(modem):
    """A UDP SERVICE in buffer mode gets 10 bytes from peer A, an empty datagram from B, 4 bytes
    from B, an empty one from A.  AT+QIRD=<id>,0 counts only data (14,0,14); AT+QIRD=<id>,3 reads
    3 bytes of A's datagram (naming A), the next AT+QIRD=<id>,100 the 7 left (naming A still),
    then B's 4; the counters follow (14,3,11 / 14,10,4 / 14,14,0); then "+QIRD: 0"; no empty
    datagram ever shows as a read or a "recv"."""
    host, advance, _ = modem
    sport = free_port(socket.SOCK_DGRAM)
    open_service(host, 0, sport)
    a, b = udp_peer(), udp_peer()
    ap, bp = a.getsockname()[1], b.getsockname()[1]
    a.sendto(b"0123456789", ("127.0.0.1", sport))
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    b.sendto(b"", ("127.0.0.1", sport))
    b.sendto(b"BBBB", ("127.0.0.1", sport))
    a.sendto(b"", ("127.0.0.1", sport))
    wait_for(lambda: host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,0,14\r\n" + OK, 5, "14 bytes buffered")
    assert host.at("AT+QIRD=0,3") == f'\r\n+QIRD: 3,"127.0.0.1",{ap}\r\n012\r\n'.encode() + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,3,11\r\n" + OK
    assert host.at("AT+QIRD=0,100") == f'\r\n+QIRD: 7,"127.0.0.1",{ap}\r\n3456789\r\n'.encode() + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,10,4\r\n" + OK
    assert host.at("AT+QIRD=0") == f'\r\n+QIRD: 4,"127.0.0.1",{bp}\r\nBBBB\r\n'.encode() + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 14,14,0\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.quiet_for(0.2) == b""
    assert host.transcript.count(b'"recv"') == 1
    a.close()
    b.close()


# -- one very long datagram ------------------------------------------------------------------------
def test_udp_client_one_60000_byte_datagram_read_in_pieces_then_the_next(modem, emulator):
    """A UDP client (buffer mode) whose server answers one 60000-byte datagram and then a
    5-byte one.  AT+QIRD (default length 1500) gives 40 pieces of 1500, together the datagram;
    the 41st read is the 5-byte datagram alone; AT+QIRD=<id>,0 counts 60005 in all."""
    host, advance, _ = modem
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", srv.getsockname()[1])
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    assert qisend(host, 0, b"go") == SEND_OK
    _, addr = srv.recvfrom(10)
    big = os.urandom(60000)
    srv.sendto(big, addr)
    srv.sendto(b"small", addr)
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    wait_for(lambda: host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 60005,0,60005\r\n" + OK, 5, "both datagrams buffered")
    got = bytearray()
    for _ in range(40):
        head, data = qird(host, 0)
        assert head.endswith(b"+QIRD: 1500\r\n"), head
        got += data
    assert bytes(got) == big
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nsmall\r\n" + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 60005,60005,0\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
    srv.close()


# -- optional parameters, a service talking to itself, the bearer going in a prompt -------------
def test_qiopen_with_local_port_and_access_mode_omitted_is_buffer_mode(modem, tcp_echo):
    """AT+QIOPEN=<contextID>,<connectID>,<service_type>,<IP_address>/<domain_name>,<remote_port>
    [,<local_port>[,<access_mode>]] (BG96 AN §2.2.4): without the optional two a "TCP" client is
    buffer mode (0) with local port chosen by the stack; with <local_port> alone a UDP SERVICE
    binds it, buffer mode too."""
    host, advance, _ = modem
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT}') == OK
    assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,0,"usbmodem"\r\n' + OK,
                        host.at("AT+QISTATE=1,0"))
    assert qisend(host, 0, b"abc") == SEND_OK
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 3\r\nabc\r\n" + OK
    sport = free_port(socket.SOCK_DGRAM)
    assert host.at(f'AT+QIOPEN=1,1,"UDP SERVICE","127.0.0.1",0,{sport}') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    assert host.at("AT+QISTATE=1,1") == \
        f'\r\n+QISTATE: 1,"UDP SERVICE","127.0.0.1",0,{sport},2,1,1,0,"usbmodem"\r\n'.encode() + OK
    p = udp_peer()
    p.sendto(b"x", ("127.0.0.1", sport))
    assert host.read_until(b'+QIURC: "recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    p.close()


def test_udp_service_sends_to_its_own_port_and_reads_itself_as_the_sender(modem):
    """A UDP SERVICE sends to "127.0.0.1",<its own local port>: the datagram comes back to it,
    AT+QIRD names 127.0.0.1 and that same port, in push mode the URC too; AT+QISEND=<id>,0
    counts the sends (acked = sent for UDP) and AT+QIRD=<id>,0 the reads."""
    host, advance, _ = modem
    sport = free_port(socket.SOCK_DGRAM)
    open_service(host, 0, sport)
    assert qisend(host, 0, b"me, myself", extra=f',"127.0.0.1",{sport}') == SEND_OK
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == f'\r\n+QIRD: 10,"127.0.0.1",{sport}\r\nme, myself\r\n'.encode() + OK
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 10,10,0\r\n" + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 10,10,0\r\n" + OK
    assert host.at("AT+QISWTMD=0,1") == OK
    assert qisend(host, 0, b"again", extra=f',"127.0.0.1",{sport}') == SEND_OK
    assert host.read_until(b"again\r\n") == f'\r\n+QIURC: "recv",0,5,"127.0.0.1",{sport}\r\nagain\r\n'.encode()
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 15,15,0\r\n" + OK


def test_network_takes_the_bearer_while_the_host_is_in_a_send_prompt(modem, emulator, tcp_sink):
    """AT+QISEND=0,5 -> "> "; the network deactivates context 1 before the host types its 5
    bytes.  The bytes are taken as the prompt's data (never read as a command line), the send
    fails (the socket is closed: ERROR or SEND FAIL, never SEND OK) and the server gets none of
    them; `+QIURC: "pdpdeact",1` and `+QIURC: "closed",0` come after that answer (docs: a
    "closed" comes after the answer of a send whose prompt was open), each once."""
    host, advance, _ = modem
    qiopen(host, 0)
    assert qisend(host, 0, b"first") == SEND_OK
    conn = tcp_sink.wait_connection()
    assert conn.wait_received(5) == b"first"
    host.write("AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == b"\r\n> "
    assert emulator.control("pdp_deact", cid=1)["ok"]
    time.sleep(0.2)
    host.write(b"AT\r\n\r")                                      # 5 bytes of data, not a command
    got = host.read_until(b'"closed",0\r\n')
    assert re.fullmatch(rb'\r\n(ERROR|SEND FAIL)\r\n\r\n\+QIURC: "pdpdeact",1\r\n\r\n\+QIURC: "closed",0\r\n', got), got
    assert host.quiet_for(0.3) == b""
    assert host.at("AT") == OK
    assert host.transcript.count(b"pdpdeact") == 1 and host.transcript.count(b'"closed"') == 1
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 5,5,0\r\n" + OK
    time.sleep(0.2)
    assert bytes(conn.received) == b"first"


def test_qiopen_then_qideact_in_one_command_line_answers_570_and_frees_the_id(modem, tcp_echo):
    """AT+QIOPEN=1,0,"TCP",...;+QIDEACT=1: one OK for the line, then `+QIOPEN: 0,570` (the
    context went before the connection was reported; never +QIOPEN: 0,0 then "closed"); the
    id is free and AT+QIOPEN on it answers 561 while the context is down (OK, then the URC),
    0 after AT+QIACT."""
    host, advance, _ = modem
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0;+QIDEACT=1') == OK
    got = host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n")
    assert got == b"\r\n+QIOPEN: 0,570\r\n", got
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QISTATE?") == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,561\r\n"
    assert host.at("AT+QIACT=1") == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 0,0\r\n"


def test_udp_service_three_60000_byte_datagrams_past_the_receive_buffer_stay_whole(modem):
    """Three 60000-byte datagrams from three senders (180000 bytes, past recv_buffer 65536: the
    modem stops reading, the kernel holds the rest) and then a 3-byte one reach a UDP SERVICE
    whose host does not read.  Then AT+QIRD=<id>,1500 reads: each datagram in 40 pieces, every
    piece naming its own sender, no read spanning two datagrams, all in arrival order; the
    3-byte one last; AT+QIRD=<id>,0 ends at 180003,180003,0."""
    host, advance, _ = modem
    sport = free_port(socket.SOCK_DGRAM)
    open_service(host, 0, sport)
    peers = [udp_peer() for _ in range(3)]
    blobs = [os.urandom(60000) for _ in peers]
    for p, b in zip(peers, blobs):
        p.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        p.sendto(b, ("127.0.0.1", sport))
    peers[0].sendto(b"end", ("127.0.0.1", sport))
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    time.sleep(0.3)
    expect = [(p.getsockname()[1], b) for p, b in zip(peers, blobs)] + [(peers[0].getsockname()[1], b"end")]
    for pport, blob in expect:
        got = bytearray()
        while len(got) < len(blob):
            host.write("AT+QIRD=0,1500\r")
            head = host.read_until(re.compile(rb'\+QIRD: \d+[^\r]*\r\n'))
            m = re.search(rb'\+QIRD: (\d+)(?:,"([\d.]+)",(\d+))?\r\n', head)
            n = int(m.group(1))
            assert n > 0, (len(got), head)
            assert m.group(2) == b"127.0.0.1" and int(m.group(3)) == pport, (pport, head)
            assert n <= len(blob) - len(got), (n, len(got), len(blob))          # never two datagrams
            got += host.read_exactly(n)
            assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
        assert bytes(got) == blob
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 180003,180003,0\r\n" + OK
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n" + OK
    for p in peers:
        p.close()


# -- a push stream backed up in the port when the socket goes ----------------------------------
UNIT = re.compile(rb'\r\n(?:\+QIURC: "recv",(\d+),(\d+)\r\n|(OK|ERROR)\r\n|\+QIURC: "closed",(\d+)\r\n'
                  rb'|\+QIOPEN: (\d+),(\d+)\r\n|\+QIURC: "incoming",(\d+),(\d+),"[\d.]+",\d+\r\n|\+QIRD: (\d+),(\d+),(\d+)\r\n)')


def read_units(host, until, timeout: float = 15):
    """Parse the port's output into units -- ("recv", id, data), ("final", word), ("closed", id),
    ("qiopen", id, err) -- failing on anything else, until until(units) is true."""
    units = []
    deadline = time.monotonic() + timeout
    buf = host.pending
    while not until(units):
        assert time.monotonic() < deadline, (units[-3:], bytes(buf[:120]))
        m = UNIT.match(buf)
        if not m:
            assert len(buf) < 40 or buf.startswith(b"\r\n"), bytes(buf[:120])
            if len(buf) >= 40:
                assert UNIT.match(buf) or not buf.startswith(b"\r\n+") or b"\r\n" not in buf[2:40], bytes(buf[:120])
            host._fill()
            continue
        if m.group(1) is not None:
            n = int(m.group(2))
            if len(buf) < m.end() + n + 2:
                host._fill()
                continue
            assert 0 < n <= 1500 and buf[m.end() + n:m.end() + n + 2] == b"\r\n", m.group(0)
            units.append(("recv", int(m.group(1)), bytes(buf[m.end():m.end() + n])))
            del buf[:m.end() + n + 2]
        elif m.group(3) is not None:
            units.append(("final", m.group(3)))
            del buf[:m.end()]
        elif m.group(4) is not None:
            units.append(("closed", int(m.group(4))))
            del buf[:m.end()]
        elif m.group(5) is not None:
            units.append(("qiopen", int(m.group(5)), int(m.group(6))))
            del buf[:m.end()]
        elif m.group(7) is not None:
            units.append(("incoming", int(m.group(7)), int(m.group(8))))
            del buf[:m.end()]
        else:
            units.append(("qird", int(m.group(9)), int(m.group(10)), int(m.group(11))))
            del buf[:m.end()]
    return units


def streaming_server(tag: bytes, size: int):
    from emulator.testing.peers import TcpServer
    stream = b"".join(tag + b"%07d|" % i for i in range(size // (len(tag) + 8)))

    def behave(conn):
        try:
            conn.send(stream)
            time.sleep(30)
        except OSError:
            pass
    return TcpServer(behave=behave), stream


def push_backlog_then_the_socket_goes(host, emulator, how: str) -> None:
    """A push-mode "TCP" client whose server pours 300 KB while the host does not read the port
    for a while (the push URCs back up).  The host then sends AT+QICLOSE=0,0 (or AT+QIDEACT=1
    and, after it, AT+QIACT=1) and reads on: the output is whole push units, the answer between
    units, never inside one; what was pushed for id 0 is a prefix of the first stream; after
    AT+QIDEACT's OK the socket's `+QIURC: "closed",0` (docs/behaviour.md: the host's AT+QIDEACT
    ends the sockets "as the context's loss ends them -- ... a connected socket's or listener's
    "closed""; it comes with no backlog); no more pushes of the old connection come.  Id 0 then
    opened to a second server pushes that server's bytes only, from its first byte."""
    first, stream1 = streaming_server(b"A", 300_000)
    second, stream2 = streaming_server(b"B", 20_000)
    with first, second:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", first.port)
        qiopen(host, 0, mode=1)
        time.sleep(0.6)                                            # the port backs up
        if how == "qiclose":
            host.write("AT+QICLOSE=0,0\r")                      # (no linger: the server never closes)
            units = read_units(host, lambda u: ("final", b"OK") in u)
        else:
            host.write("AT+QIDEACT=1\r")
            units = read_units(host, lambda u: ("final", b"OK") in u and ("closed", 0) in u, timeout=5)
        old = b"".join(u[2] for u in units if u[0] == "recv")
        assert all(u[1] == 0 for u in units if u[0] == "recv")
        assert stream1.startswith(old), len(old)
        assert len(old) < len(stream1)
        assert [u for u in units if u[0] != "recv"] in ([("final", b"OK")], [("final", b"OK"), ("closed", 0)],
                                                       [("closed", 0), ("final", b"OK")]), units[-5:]
        if how == "qideact":
            assert host.at("AT+QIACT=1") == OK
        late = host.quiet_for(0.5)
        assert b'"recv",0' not in late, late[:200]
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", second.port)
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,1\r')
        units = read_units(host, lambda u: sum(len(x[2]) for x in u if x[0] == "recv") >= len(stream2))
        assert units[:2] == [("final", b"OK"), ("qiopen", 0, 0)], units[:3]
        new = b"".join(u[2] for u in units if u[0] == "recv")
        assert new == stream2, (new[:40], len(new))
        assert host.at("AT+QICLOSE=0,0") == OK


def test_push_backlog_then_qiclose_and_the_id_reopened_carries_only_the_new_stream(modem, emulator):
    push_backlog_then_the_socket_goes(modem[0], emulator, "qiclose")


# Was a bug, fixed (see the module docstring).
def test_push_backlog_then_qideact_reports_closed_and_the_id_reopened_carries_only_the_new_stream(modem, emulator):
    push_backlog_then_the_socket_goes(modem[0], emulator, "qideact")


def test_qideact_with_a_small_push_remainder_reports_closed(modem, emulator):
    """The contrast of the test above: a push-mode client whose server sent 3000 bytes the host
    has (mostly) not been shown when AT+QIDEACT=1 comes: OK, and `+QIURC: "closed",0` once."""
    host, advance, _ = modem
    first, stream1 = streaming_server(b"A", 3000)
    with first:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", first.port)
        qiopen(host, 0, mode=1)
        time.sleep(0.3)
        host.write("AT+QIDEACT=1\r")
        units = read_units(host, lambda u: ("final", b"OK") in u and ("closed", 0) in u, timeout=5)
        assert stream1.startswith(b"".join(u[2] for u in units if u[0] == "recv"))
        assert host.quiet_for(0.3) == b""
        assert host.transcript.count(b'"closed",0') == 1



def test_incoming_with_data_and_fin_behind_another_sockets_push_backlog_keeps_its_order(modem, emulator):
    """Socket 0 (push) has a 300 KB backlog the host has not read; meanwhile a client connects
    to a push listener (id 1), sends 10 bytes and closes.  Reading on, the host sees for the
    new id (2): "incoming",2,1 first, then its 10 bytes in push units, then "closed",2 -- never
    data or "closed" before the "incoming" that names the id; socket 0's stream stays whole."""
    host, advance, _ = modem
    first, stream1 = streaming_server(b"A", 300_000)
    lport = free_port()
    with first:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", first.port)
        open_listener(host, 1, lport, mode=1)
        qiopen(host, 0, mode=1)
        time.sleep(0.5)
        c = socket.create_connection(("127.0.0.1", lport), timeout=5)
        c.sendall(b"0123456789")
        c.shutdown(socket.SHUT_WR)
        time.sleep(0.3)
        units = read_units(host, lambda u: ("closed", 2) in u, timeout=15)
        two = [u for u in units if u[1] == 2 or u[0] == "incoming"]
        assert two[0] == ("incoming", 2, 1), two[:3]
        assert b"".join(u[2] for u in two if u[0] == "recv") == b"0123456789"
        assert two[-1] == ("closed", 2)
        zero = b"".join(u[2] for u in units if u[0] == "recv" and u[1] == 0)
        assert stream1.startswith(zero)
        host.write("AT+QICLOSE=0,0;+QICLOSE=2;+QICLOSE=1\r")
        read_units(host, lambda u: ("final", b"OK") in u)
        assert host.quiet_for(0.3) == b""
        c.close()


def test_qird_query_of_a_push_socket_counts_exactly_what_the_port_has_shown_before_it(modem, emulator):
    """A push-mode client streaming 300 KB to a host that reads on while it asks AT+QIRD=0,0
    five times: each answer `+QIRD: <total>,<read>,<unread>` has total = read + unread, and
    <read> equals the push data written on the port before that answer, byte for byte (what
    the host has been given, BG96 AN: "the length of data that has been read")."""
    host, advance, _ = modem
    first, stream1 = streaming_server(b"A", 300_000)
    with first:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", first.port)
        qiopen(host, 0, mode=1)
        time.sleep(0.3)
        shown = 0
        answers = []
        for _ in range(5):
            host.write("AT+QIRD=0,0\r")
            units = read_units(host, lambda u: ("final", b"OK") in u)
            for u in units:
                if u[0] == "recv":
                    shown += len(u[2])
                elif u[0] == "qird":
                    answers.append((u[1:], shown))
            time.sleep(0.05)
        for (total, read, unread), seen in answers:
            assert total == read + unread and read == seen, answers
        host.write("AT+QICLOSE=0,0\r")
        read_units(host, lambda u: ("final", b"OK") in u)


# -- AT+QIDEACT and a "recv" URC still waiting behind a running command line -------------------
def qideact_with_a_recv_urc_waiting(host, advance, emulator, recvind: int, then: str = "+QIDEACT=1") -> bytes:
    """Id 0 (buffer mode) and id 1 to two peers that never close.  The host sends one line,
    AT+QICLOSE=1,5;+QIDEACT=1: while id 1's close lingers (URCs wait while a line runs) peer A
    sends 5 bytes (the "recv" URC is raised and waits) and then 7 more; at 5 s the linger ends
    and AT+QIDEACT=1 runs.  Returns what the port shows from then on."""
    from tests.e2e.socket_support import DrivenPeer
    a, b = DrivenPeer(), DrivenPeer()
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", a.port)
        emulator.router.add_map("b.example", TCP_PORT, "127.0.0.1", b.port)
        assert host.at(f'AT+QICFG="recvind",{recvind}') == OK
        qiopen(host, 0)
        assert host.at(f'AT+QIOPEN=1,1,"TCP","b.example",{TCP_PORT},0,0') == OK
        assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        assert a.accepted.wait(5) and b.accepted.wait(5)
        host.write(f"AT+QICLOSE=1,5;{then}\r")
        time.sleep(0.3)
        a.send(b"hello")
        time.sleep(0.3)
        a.send(b"world!!")
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""                     # (the line still runs)
        advance(5.1)
        out = host.read_until(OK)
        out += host.quiet_for(0.5)
        assert host.at("AT+QIRD=0") == ERROR                   # (free, or push mode: nothing to read)
        return out
    finally:
        a.close()
        b.close()


def test_qideact_drops_a_waiting_recv_urc_for_data_now_gone(modem, emulator):
    """recvind 0: the waiting `+QIURC: "recv",0` is not written (docs/behaviour.md, AT+QIDEACT:
    "a "recv" for data now gone does not [come]"); OK, then "closed",0 only."""
    host, advance, _ = modem
    out = qideact_with_a_recv_urc_waiting(host, advance, emulator, 0)
    assert out == b'\r\nOK\r\n\r\n+QIURC: "closed",0\r\n', out


# Was a bug, fixed (see the module docstring).
def test_qideact_drops_a_waiting_recv_urc_with_its_length_for_data_now_gone(modem, emulator):
    """recvind 1: the waiting URC is `+QIURC: "recv",0,5` (the length when it was raised); 7 more
    bytes came behind it.  AT+QIDEACT discards the 12 bytes: the URC must go as with recvind 0
    (the host would AT+QIRD an id that is free); OK, then "closed",0 only."""
    host, advance, _ = modem
    out = qideact_with_a_recv_urc_waiting(host, advance, emulator, 1)
    assert out == b'\r\nOK\r\n\r\n+QIURC: "closed",0\r\n', out


# Was a bug, fixed (see the module docstring).
def test_qiswtmd_to_push_drops_a_waiting_recv_urc_with_its_length(modem, emulator):
    """The same line with AT+QISWTMD=0,1 instead of AT+QIDEACT: the 12 bytes are pushed
    (`+QIURC: "recv",0,12` CR LF data CR LF) and the waiting buffer-mode `+QIURC: "recv",0,5` is
    no news (docs: a "recv" "written after them would send the host to read what is gone")."""
    host, advance, _ = modem
    out = qideact_with_a_recv_urc_waiting(host, advance, emulator, 1, then="+QISWTMD=0,1")
    assert b'"recv",0,5' not in out, out
    assert b'\r\n+QIURC: "recv",0,12\r\nhelloworld!!\r\n' in out, out


def test_qiswtmd_to_push_drops_a_waiting_recv_urc_without_recvind(modem, emulator):
    """recvind 0 contrast: the waiting `+QIURC: "recv",0` is dropped, the 12 bytes pushed."""
    host, advance, _ = modem
    out = qideact_with_a_recv_urc_waiting(host, advance, emulator, 0, then="+QISWTMD=0,1")
    assert b'"recv",0\r\n' not in out, out
    assert b'\r\n+QIURC: "recv",0,12\r\nhelloworld!!\r\n' in out, out


def test_push_backlog_and_the_peers_fin_then_a_switch_to_buffer_reads_all_then_closed_once(modem, emulator):
    """A push-mode client whose server sends 200 KB and closes while the host reads nothing (the
    "closed" waits behind the held data).  AT+QISWTMD=0,0 (written blind), then AT+QIRD until
    empty: every byte once, in order; `+QIURC: "closed",0` comes exactly once (in buffer mode
    when the FIN is seen -- once reading resumed below recv_buffer -- the rest still readable
    after it, as docs/behaviour.md has it), never while pushes were still being written."""
    from emulator.testing.peers import TcpServer
    host, advance, _ = modem
    stream = b"".join(b"%07d;" % i for i in range(25000))
    with TcpServer(behave=lambda conn: (conn.send(stream), conn.close())) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, mode=1)
        time.sleep(0.6)
        host.write("AT+QISWTMD=0,0\r")
        units = read_units(host, lambda u: ("final", b"OK") in u)
        assert ("closed", 0) not in units
        got = bytearray(b"".join(u[2] for u in units if u[0] == "recv"))
        heads = bytearray()
        deadline = time.monotonic() + 15
        while len(got) < len(stream):
            assert time.monotonic() < deadline, len(got)
            head, data = qird(host, 0)
            heads += head
            got += data
        assert bytes(got) == stream
        tail = host.quiet_for(0.3)
        assert (heads + tail).count(b'+QIURC: "closed",0') == 1, (heads[-200:], tail)
        assert host.at("AT+QIRD=0,0") == f"\r\n+QIRD: {len(stream)},{len(stream)},0\r\n".encode() + OK
        assert host.at("AT+QICLOSE=0") == OK


def test_push_udp_service_datagram_arriving_inside_its_own_send_prompt_waits_for_send_ok(modem):
    """A push-mode UDP SERVICE: the host is in `AT+QISEND=0,10,"127.0.0.1",<port>`'s prompt when
    the same peer's datagram arrives.  Nothing is written inside the prompt; after the 10 bytes:
    SEND OK, then `+QIURC: "recv",0,10,"127.0.0.1",<port>` CR LF data CR LF; the peer got the
    host's datagram; both counters count one datagram each way."""
    host, advance, _ = modem
    sport = free_port(socket.SOCK_DGRAM)
    open_service(host, 0, sport, mode=1)
    p = udp_peer()
    pport = p.getsockname()[1]
    host.write(f'AT+QISEND=0,10,"127.0.0.1",{pport}\r')
    assert host.read_until(b"> ") == b"\r\n> "
    p.sendto(b"incoming!!", ("127.0.0.1", sport))
    assert host.quiet_for(0.3) == b""
    host.write(b"\r\n> OK\x1a\x1b++")
    got = host.read_until(b"incoming!!\r\n")
    assert got == b"\r\nSEND OK\r\n" + f'\r\n+QIURC: "recv",0,10,"127.0.0.1",{pport}\r\n'.encode() + b"incoming!!\r\n", got
    assert p.recvfrom(100) == (b"\r\n> OK\x1a\x1b++", ("127.0.0.1", sport))
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 10,10,0\r\n" + OK
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 10,10,0\r\n" + OK
    p.close()



def incoming_behind_a_running_line(host, advance, emulator, then: str):
    """A listener on id 0 and a client on id 1 (a peer that never closes).  One line:
    AT+QICLOSE=1,5;<then>.  While id 1's close lingers (URCs wait while a line runs) a client
    connects to the listener: it is accepted on the lowest free id (1: a lingering close's id
    is free, docs), its "incoming" URC raised but not written.  At 5 s the linger ends and
    <then> runs.  Returns (what the port shows up to the line's OK and 0.5 s after, the client)."""
    from tests.e2e.socket_support import DrivenPeer
    b = DrivenPeer()
    try:
        emulator.router.add_map("b.example", TCP_PORT, "127.0.0.1", b.port)
        lport = free_port()
        open_listener(host, 0, lport)
        assert host.at(f'AT+QIOPEN=1,1,"TCP","b.example",{TCP_PORT},0,0') == OK
        assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
        assert b.accepted.wait(5)
        host.write(f"AT+QICLOSE=1,5;{then}\r")
        time.sleep(0.3)
        c = socket.create_connection(("127.0.0.1", lport), timeout=5)
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        advance(5.1)
        return host.read_until(OK) + host.quiet_for(0.5), c
    finally:
        b.close()


def test_an_incoming_announced_behind_a_running_line_outlives_its_listeners_close(modem, emulator):
    """<then> = AT+QICLOSE=0 (the listener): OK, then `+QIURC: "incoming",1,0,...` -- the
    connection stays (docs: closing a listener does not close the TCP INCOMING sockets it
    accepted) and carries data both ways."""
    host, advance, _ = modem
    out, c = incoming_behind_a_running_line(host, advance, emulator, "+QICLOSE=0")
    cport = c.getsockname()[1]
    assert out == OK + f'\r\n+QIURC: "incoming",1,0,"127.0.0.1",{cport}\r\n'.encode(), out
    assert qisend(host, 1, b"still") == SEND_OK
    assert c.recv(10) == b"still"
    c.sendall(b"back")
    assert host.read_until(b'+QIURC: "recv",1\r\n') == b'\r\n+QIURC: "recv",1\r\n'
    assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 4\r\nback\r\n" + OK
    assert host.at("AT+QICLOSE=1,0") == OK
    c.close()


def test_an_incoming_raised_during_the_line_is_told_then_closed_at_qideact(modem, emulator):
    """<then> = AT+QIDEACT=1: docs/behaviour.md ("TCP/UDP sockets", PDP): a connection accepted
    while the command line ran, its "incoming" raised and waiting for the line's end, is told:
    OK, its "incoming", its "closed", then the listener's "closed" -- as when the network
    deactivates the context; nothing after, and the client's connection ends."""
    host, advance, _ = modem
    out, c = incoming_behind_a_running_line(host, advance, emulator, "+QIDEACT=1")
    try:
        assert re.fullmatch(rb'\r\nOK\r\n\r\n\+QIURC: "incoming",1,0,"127\.0\.0\.1",\d+\r\n'
                            rb'\r\n\+QIURC: "closed",1\r\n\r\n\+QIURC: "closed",0\r\n', out), out
        c.settimeout(5)
        try:
            assert c.recv(10) == b""                       # ended (FIN) ...
        except ConnectionResetError:
            pass                                            # ... or reset: not left open
    finally:
        c.close()

