"""A third adversarial pass over the EC2x TCP/IP sockets (AT+QIOPEN & co.): datagram
semantics and hostile peers, where test_adversarial_tcpip.py, _tcpip_2.py,
test_adversarial_hostile_peers_tcpip.py, test_adversarial_files_cfg_tcpip.py and
test_adversarial_packets_sim.py do not already go.

UDP datagrams (docs/behaviour.md "TCP/UDP sockets (EC2x)": "One UDP datagram per read; a
shorter read leaves the rest of that datagram, with its sender, for the next AT+QIRD")
* a "UDP" client in buffer mode gets datagrams of 0, 1, 1460, 1500, 1501 and 4000 bytes:
  each AT+QIRD returns at most one datagram, a read shorter than a datagram leaves its rest
  for the next read, nothing is merged across datagrams, AT+QIRD=<id>,0 counts every byte;
* a UDP SERVICE hears 8 peers x 8 datagrams interleaved (sizes 1..1600) and the host reads
  them with AT+QIRD of changing lengths: every answer's "<ip>",<port> is the sender of the
  bytes in it, each datagram is read whole, in its sender's order, never mixed with another;
* a push-mode "UDP" client gets 60 datagrams in a burst (most arriving in one loop turn):
  exactly one "recv",<id>,<len> URC per datagram (two for 1501 bytes: 1500 + 1), none merged;
* a peer floods a buffer-mode "UDP" client past its receive buffer while the host does not
  read: one "recv" URC, then every read is one whole datagram, sequence numbers only rising,
  none twice; once the buffer is read empty, reading resumed: the next datagram arrives with
  a fresh "recv" URC;
* ICMP port unreachable after a "UDP" client's sends (the server's port is closed): SEND OK,
  no "closed", state 2 in AT+QISTATE, the counters right, the id closes and opens again;
* AT+QISEND to a UDP SERVICE without a destination (variable and fixed length) is ERROR 552
  before any prompt, nothing sent; with one, 1460 bytes are one datagram and 1461 is 552;
  AT+QISENDEX on a UDP SERVICE is 572 and on a "UDP" client one datagram per command, odd or
  non-hex strings (odd length, "0x", spaces inside, a trailing odd nibble) 552 with nothing sent;
TCP LISTENER
* clients that connect and reset at once, more of them than there are free ids: each one
  reported "incoming" has its "closed" after it, the rest are "incoming full", every id closes
  and is taken again by a well-behaved client;
* clients that send (and close) the moment they connect, before the host heard "incoming", in
  buffer and push mode: per id "incoming" first, then the data (exact), then "closed";
* AT+QICLOSE of a listener in the same command line as the connections it accepted:
  OK, no URC about any of them afterwards, every id free again, the port free to listen again;
DNS and ping
* a "UDP" client to a name that resolves to nothing: +QIOPEN: <id>,565, AT+QIGETERROR 565, the
  id free; to a routed name with its own --dns answer: AT+QISTATE shows the DNS answer, the
  datagrams go where the route says, AT+QIDNSGIP gives the same address;
* a name whose resolver answers ::1 first, then 127.0.0.1 (the server), on an IPv4 ("IP")
  context: AT+QIDNSGIP says 127.0.0.1, so AT+QIOPEN "UDP"/"TCP" must dial 127.0.0.1, AT+QISTATE
  show it, the data arrive (xfail: BUG, the first answer of any family is dialled);
* AT+QPING with bad parameters not tried elsewhere (context 0 and 17, an unquoted or
  over-long host, numbers past 32 bits, a sign): +CME ERROR: 552, nothing pinged, a good ping
  works after.

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback); the port
answers AT afterwards and ids are reusable.  A test marked xfail(strict) reproduces a bug
(its reason has the evidence)."""
from __future__ import annotations

import os
import re
import socket
import struct
import time

import pytest

from emulator.testing.peers import UdpEchoServer
from tests.e2e.socket_support import (UDP_HOST, UDP_PORT, answer_ipv6_first, error_code, free_port, qiopen, qird,
                                      qisend, udp_peer, wait_for)

OK = b"\r\nOK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def rst(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def udp_client(host, emulator, cid: int, mode: int = 0) -> tuple[UdpEchoServer, tuple]:
    """A "UDP" client on `cid` to a silent loopback peer; returns (peer, the modem's address
    as the peer sees it) after one datagram up."""
    server = UdpEchoServer(echo=False).__enter__()
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
    qiopen(host, cid, "UDP", UDP_HOST, UDP_PORT, mode=mode)
    assert qisend(host, cid, b"hi") == b"\r\nSEND OK\r\n"
    (me, data), = server.wait_datagrams(1)
    assert data == b"hi"
    return server, me


def still_usable(host, emulator, cid: int) -> None:
    """The id opens again as a "UDP" client and carries a datagram each way."""
    server, me = udp_client(host, emulator, cid)
    try:
        server.sock.sendto(b"back", me)
        host.seen(b'+QIURC: "recv",%d\r\n' % cid)
        assert qird(host, cid) == (b"\r\n+QIRD: 4\r\n", b"back")
        assert host.at(f"AT+QICLOSE={cid}") == OK
    finally:
        server.__exit__(None, None, None)
    assert host.at("AT") == OK


# == UDP datagram sizes ================================================================================
def test_udp_client_datagram_sizes_and_reads_shorter_than_a_datagram(modem, emulator):
    host, _, _ = modem
    server, me = udp_client(host, emulator, 3)
    try:
        sizes = [0, 1, 1460, 1500, 0, 1501, 4000, 1]
        grams = [os.urandom(n) for n in sizes]
        for g in grams:
            server.sock.sendto(g, me)
        total = sum(sizes)
        host.seen(b'+QIURC: "recv",3\r\n')
        wait_for(lambda: host.at("AT+QIRD=3,0") == b"\r\n+QIRD: %d,0,%d\r\n\r\nOK\r\n" % (total, total),
                 what="every datagram in")
        live = [g for g in grams if g]
        # 1 byte, read with 1500: one datagram only
        assert qird(host, 3) == (b"\r\n+QIRD: 1\r\n", live[0])
        # 1460 bytes read as 1000 + 1500: the rest of the same datagram, not the next one's start
        assert qird(host, 3, 1000) == (b"\r\n+QIRD: 1000\r\n", live[1][:1000])
        assert qird(host, 3) == (b"\r\n+QIRD: 460\r\n", live[1][1000:])
        # 1500 exactly: one read
        assert qird(host, 3) == (b"\r\n+QIRD: 1500\r\n", live[2])
        # 1501: 1500 + 1
        assert qird(host, 3) == (b"\r\n+QIRD: 1500\r\n", live[3][:1500])
        assert qird(host, 3, 7) == (b"\r\n+QIRD: 1\r\n", live[3][1500:])
        # 4000 in 1-byte, 1499-byte and 1500-byte reads
        assert qird(host, 3, 1) == (b"\r\n+QIRD: 1\r\n", live[4][:1])
        assert qird(host, 3, 1499) == (b"\r\n+QIRD: 1499\r\n", live[4][1:1500])
        assert qird(host, 3) == (b"\r\n+QIRD: 1500\r\n", live[4][1500:3000])
        mid = 1 + 1460 + 1500 + 1501 + 3000
        assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: %d,%d,%d\r\n\r\nOK\r\n" % (total, mid, total - mid)
        assert qird(host, 3) == (b"\r\n+QIRD: 1000\r\n", live[4][3000:])
        assert qird(host, 3) == (b"\r\n+QIRD: 1\r\n", live[5])
        assert host.at("AT+QIRD=3") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: %d,%d,0\r\n\r\nOK\r\n" % (total, total)
        assert b"recv" not in host.quiet_for(0.2)
        assert host.at("AT+QICLOSE=3") == OK
    finally:
        server.__exit__(None, None, None)
    still_usable(host, emulator, 3)


def test_udp_service_many_senders_each_read_names_its_sender(modem):
    """8 peers x 8 datagrams, interleaved, sizes 1..1600; AT+QIRD lengths cycle through
    1500, 1, 700, 1499, 64: each answer is part of one datagram, named by its sender."""
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 5, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    peers = [udp_peer() for _ in range(8)]
    try:
        sent = []                   # (port, datagram) in arrival order (one sender thread)
        sizes = [1, 1600, 1500, 37, 1501, 700, 2, 1460, 999]
        k = 0
        for r in range(8):                   # (under the 64 KiB receive buffer: none dropped)
            for p in peers:
                n = sizes[k % len(sizes)]
                k += 1
                d = struct.pack(">HH", p.getsockname()[1], r)[:n] + os.urandom(max(0, n - 4))
                p.sendto(d, ("127.0.0.1", lport))
                sent.append((p.getsockname()[1], d))
        total = sum(len(d) for _, d in sent)
        host.seen(b'+QIURC: "recv",5\r\n')
        wait_for(lambda: host.at("AT+QIRD=5,0") == b"\r\n+QIRD: %d,0,%d\r\n\r\nOK\r\n" % (total, total),
                 what="every datagram in")
        lengths = [1500, 1, 700, 1499, 64]
        i = 0
        queue = list(sent)
        current = b""
        while queue:
            port, d = queue[0]
            n = lengths[i % len(lengths)]
            i += 1
            head, chunk = qird(host, 5, n)
            want = d[len(current):len(current) + n]
            assert head == b'\r\n+QIRD: %d,"127.0.0.1",%d\r\n' % (len(want), port), (head, port, len(d))
            assert chunk == want
            current += chunk
            if current == d:
                queue.pop(0)
                current = b""
        assert host.at("AT+QIRD=5") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=5,0") == b"\r\n+QIRD: %d,%d,0\r\n\r\nOK\r\n" % (total, total)
        assert host.at("AT+QICLOSE=5") == OK
    finally:
        for p in peers:
            p.close()
    qiopen(host, 5, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)      # the port is free again
    assert host.at("AT+QICLOSE=5") == OK


def test_udp_push_one_urc_per_datagram_in_a_burst(modem, emulator):
    host, _, _ = modem
    server, me = udp_client(host, emulator, 2, mode=1)
    try:
        sizes = [(i * 97) % 1400 + 1 for i in range(58)] + [1500, 1501]
        grams = [os.urandom(n) for n in sizes]
        for g in grams:
            server.sock.sendto(g, me)
        want = b"".join(b'\r\n+QIURC: "recv",2,%d\r\n' % len(g) + g + b"\r\n" for g in grams[:-1])
        want += (b'\r\n+QIURC: "recv",2,1500\r\n' + grams[-1][:1500] + b"\r\n"
                 + b'\r\n+QIURC: "recv",2,1\r\n' + grams[-1][1500:] + b"\r\n")
        got = host.read_exactly(len(want), timeout=15)
        assert re.findall(rb'\+QIURC: "recv",2,(\d+)\r\n', got)[:5] == re.findall(
            rb'\+QIURC: "recv",2,(\d+)\r\n', want)[:5]
        assert got == want
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QICLOSE=2") == OK
    finally:
        server.__exit__(None, None, None)
    still_usable(host, emulator, 2)


def test_udp_client_flood_while_the_host_holds_its_reads(modem, emulator):
    host, _, port = modem
    server, me = udp_client(host, emulator, 0)
    try:
        count = 6000
        for i in range(count):
            server.sock.sendto(struct.pack(">I", i) + bytes([i & 0xFF]) * 996, me)
        time.sleep(0.5)
        from emulator.sockets.tcpip import tcpip_service
        svc = emulator.run(tcpip_service, port.modem)
        held = emulator.run(lambda: len(svc.sockets[0].inbox))
        assert held <= svc.recv_buffer + 65536, held
        assert host.seen(b'+QIURC: "recv",0\r\n')
        assert b"recv" not in host.quiet_for(0.2)          # one URC while the buffer was not read
        seqs = []
        while True:
            head, chunk = qird(host, 0)
            if not chunk:
                break
            assert head.endswith(b"\r\n+QIRD: 1000\r\n"), head
            n = struct.unpack(">I", chunk[:4])[0]
            assert chunk[4:] == bytes([n & 0xFF]) * 996, n      # one whole datagram, nothing merged
            seqs.append(n)
        assert seqs == sorted(set(seqs)) and seqs[0] == 0, seqs[:10]
        assert len(seqs) * 1000 >= min(svc.recv_buffer, count * 1000) // 2, len(seqs)
        # reading resumed: a new datagram comes, announced into the empty buffer
        server.sock.sendto(b"after", me)
        host.seen(b'+QIURC: "recv",0\r\n')
        # (datagrams the kernel still held when reading resumed come first)
        while True:
            head, chunk = qird(host, 0)
            assert chunk, "the datagram sent after the flood never came"
            if chunk == b"after":
                break
            assert struct.unpack(">I", chunk[:4])[0] > seqs[-1]
        assert host.at("AT+QICLOSE=0") == OK
    finally:
        server.__exit__(None, None, None)
    still_usable(host, emulator, 0)


def test_icmp_port_unreachable_after_udp_sends_keeps_the_socket(modem, emulator):
    host, _, _ = modem
    dead = free_port(socket.SOCK_DGRAM)                      # nobody listens there
    emulator.router.add_map("gone.example", 9999, "127.0.0.1", dead)
    qiopen(host, 4, "UDP", "gone.example", 9999, mode=0)
    for k in range(4):
        assert qisend(host, 4, b"x%d" % k) == b"\r\nSEND OK\r\n"
        time.sleep(0.05)                                     # the ICMP error comes back meanwhile
    assert host.at('AT+QISENDEX=4,"ff00"') == b"\r\nSEND OK\r\n"
    assert host.quiet_for(0.3) == b""                        # no "closed"
    state = host.at("AT+QISTATE=1,4")
    assert re.fullmatch(rb'\r\n\+QISTATE: 4,"UDP","[0-9.]+",9999,\d+,2,1,4,0,"usbmodem"\r\n\r\nOK\r\n', state), state
    assert host.at("AT+QISEND=4,0") == b"\r\n+QISEND: 10,10,0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=4") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=4") == OK
    still_usable(host, emulator, 4)


# == AT+QISEND / AT+QISENDEX on UDP ======================================================================
def test_qisend_to_a_udp_service_with_and_without_a_destination(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 6, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    peer = udp_peer()
    me = peer.getsockname()[1]
    try:
        for line in ("AT+QISEND=6", "AT+QISEND=6,5", "AT+QISEND=6,5,", f"AT+QISEND=6,,\"127.0.0.1\",{me}",
                     f'AT+QISEND=6,1461,"127.0.0.1",{me}'):
            assert host.at(line) == b"\r\nERROR\r\n", line          # no "> ": the next line is a command
            assert error_code(host) == 552, line
        big = os.urandom(1460)
        assert qisend(host, 6, big, extra=f',"127.0.0.1",{me}') == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(4000) == (big, ("127.0.0.1", lport))
        assert host.at('AT+QISENDEX=6,"4142"') == b"\r\nERROR\r\n"
        assert error_code(host) == 572
        assert host.at("AT+QISEND=6,0") == b"\r\n+QISEND: 1460,1460,0\r\n\r\nOK\r\n"
        peer.settimeout(0.3)
        with pytest.raises(socket.timeout):
            peer.recvfrom(100)                                  # nothing else was sent
        assert host.at("AT+QICLOSE=6") == OK
    finally:
        peer.close()


@pytest.mark.parametrize("bad", ['"414"', '"0x41"', '"41 42"', '" 4142"', '"4142 "', '"41\t42"', '"4`"',
                                 '"41424"', "41,42", '"4142",'])
def test_qisendex_on_a_udp_client_odd_or_invalid_hex_sends_nothing(modem, emulator, bad):
    host, _, _ = modem
    server, me = udp_client(host, emulator, 1)
    try:
        assert host.at(f"AT+QISENDEX=1,{bad}") == b"\r\nERROR\r\n", bad
        assert error_code(host) == 552, bad
        assert host.at('AT+QISENDEX=1,"00ff"') == b"\r\nSEND OK\r\n"
        assert host.at('AT+QISENDEX=1,"AbCd"') == b"\r\nSEND OK\r\n"
        got = server.wait_datagrams(3)
        assert [d for _, d in got] == [b"hi", b"\x00\xff", b"\xab\xcd"]     # one datagram each, nothing else
        assert host.at("AT+QISEND=1,0") == b"\r\n+QISEND: 6,6,0\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=1") == OK
    finally:
        server.__exit__(None, None, None)


# == TCP LISTENER ======================================================================================
def test_listener_clients_that_connect_and_reset_at_once(modem):
    """Ids 4-11 taken by UDP SERVICEs: ids 1-3 free; ten clients connect and reset at once."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    for i in range(4, 12):
        qiopen(host, i, "UDP SERVICE", "127.0.0.1", 0, local_port=free_port(socket.SOCK_DGRAM))
    for _ in range(10):
        rst(socket.create_connection(("127.0.0.1", lport)))
    time.sleep(0.5)
    out = host.quiet_for(0.3)
    lines = re.findall(rb"\r\n([^\r]*)\r\n", out)
    assert out == b"".join(b"\r\n%s\r\n" % ln for ln in lines), out
    incoming = [int(m.group(1)) for ln in lines if (m := re.match(rb'\+QIURC: "incoming",(\d+),0,', ln))]
    full = lines.count(b'+QIURC: "incoming full"')
    assert set(incoming) <= {1, 2, 3} and len(incoming) == len(set(incoming)), lines
    assert len(incoming) + full == 10, lines
    for cid in incoming:                     # each one's "closed" after its "incoming"
        assert lines.index(b'+QIURC: "closed",%d' % cid) > next(
            k for k, ln in enumerate(lines) if ln.startswith(b'+QIURC: "incoming",%d,' % cid)), lines
    assert len(lines) == 2 * len(incoming) + full, lines
    for cid in incoming:
        assert host.at(f"AT+QIRD={cid}") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at(f"AT+QICLOSE={cid}") == OK
    # the ids are free: three good clients take 1, 2, 3
    good = [socket.create_connection(("127.0.0.1", lport)) for _ in range(3)]
    try:
        want = b"".join(b'\r\n+QIURC: "incoming",%d,0,"127.0.0.1",%d\r\n' % (cid, c.getsockname()[1])
                        for cid, c in zip((1, 2, 3), good))
        assert host.read_exactly(len(want)) == want
        for cid, c in zip((1, 2, 3), good):
            c.sendall(b"good %d" % cid)
            host.seen(b'+QIURC: "recv",%d\r\n' % cid)
            assert qird(host, cid)[1] == b"good %d" % cid
    finally:
        for c in good:
            c.close()
    closed = {host.read_until(re.compile(rb'\+QIURC: "closed",\d+\r\n'))[-3:-2] for _ in range(3)}
    assert closed == {b"1", b"2", b"3"}
    for i in range(12):
        assert host.at(f"AT+QICLOSE={i}") == OK
    assert host.at("AT+QISTATE?") == OK


@pytest.mark.parametrize("mode", [0, 1])
def test_listener_clients_that_send_before_the_host_heard_incoming(modem, mode):
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=mode)
    clients = []
    for k in range(5):
        c = socket.create_connection(("127.0.0.1", lport))
        c.sendall(b"early-%d-" % k + bytes([65 + k]) * (200 * k + 1))
        if k % 2:
            c.close()                                       # data + FIN at once
        else:
            rst(c) if k == 4 else c.shutdown(socket.SHUT_WR)
        clients.append(c)
    time.sleep(0.5)
    data = {}
    by_port = {}
    for k, c in enumerate(clients):
        data[k] = b"early-%d-" % k + bytes([65 + k]) * (200 * k + 1)
    out = bytes(host.quiet_for(0.3))
    # every id: "incoming" first, then (push) its data, then "closed"
    for m in re.finditer(rb'\+QIURC: "incoming",(\d+),0,"127\.0\.0\.1",(\d+)\r\n', out):
        by_port[int(m.group(1))] = m.start()
    assert sorted(by_port) == [1, 2, 3, 4, 5], out[:400]
    got = {}
    for cid, at in by_port.items():
        closed = out.index(b'+QIURC: "closed",%d\r\n' % cid)
        assert closed > at, cid
        if mode == 1:
            pushed = [(m.start(), out[m.end():m.end() + int(m.group(1))])
                      for m in re.finditer(rb'\+QIURC: "recv",%d,(\d+)\r\n' % cid, out)]
            assert pushed and all(at < p < closed for p, _ in pushed), cid
            got[cid] = b"".join(d for _, d in pushed)
        else:
            recv = out.find(b'+QIURC: "recv",%d\r\n' % cid)
            if recv >= 0:
                assert at < recv < closed, cid
            got[cid] = b"".join(iter(lambda: qird(host, cid)[1], b""))
    # k == 4 reset: its data may be lost with the RST (the kernel drops what it had), never mangled
    values = sorted(got.values())
    for k in range(4):
        assert data[k] in values, k
    assert len([v for v in values if v]) >= 4
    for cid in range(6):
        assert host.at(f"AT+QICLOSE={cid}") == OK
    assert host.at("AT+QISTATE?") == OK


def test_qiclose_of_a_listener_in_the_line_of_its_clients_closes(modem):
    """AT+QICLOSE of the listener and of its TCP INCOMING sockets in one command line while
    their clients talk: OK, nothing about any of them afterwards, the port listens again."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    clients = []
    for cid in (1, 2, 3):
        c = socket.create_connection(("127.0.0.1", lport))
        host.seen(b'+QIURC: "incoming",%d,0,"127.0.0.1",%d\r\n' % (cid, c.getsockname()[1]))
        clients.append(c)
    for c in clients:
        c.sendall(b"z" * 5000)
    assert host.at("AT+QICLOSE=0;+QICLOSE=1,0;+QICLOSE=2,0;+QICLOSE=3,0").endswith(OK)
    rest = host.quiet_for(0.4)
    assert b"+QIURC" not in rest, rest[:200]
    for c in clients:
        c.settimeout(5)
        try:
            assert c.recv(10) == b""
        except ConnectionResetError:
            pass
        c.close()
    assert host.at("AT+QISTATE?") == OK
    qiopen(host, 3, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    c = socket.create_connection(("127.0.0.1", lport))
    host.seen(b'+QIURC: "incoming",0,3,"127.0.0.1",%d\r\n' % c.getsockname()[1])
    c.close()
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == OK and host.at("AT+QICLOSE=3") == OK


# == DNS and ping ======================================================================================
def test_udp_client_to_a_name_that_resolves_to_nothing(modem, emulator):
    host, _, _ = modem
    qiopen(host, 7, "UDP", "nothing.example", 5000, code=565)
    assert error_code(host) == 565
    assert host.at("AT+QISTATE=1,7") == OK
    assert host.at("AT+QICLOSE=7") == OK                     # nothing open there
    assert host.at('AT+QIDNSGIP=1,"nothing.example"') == OK
    assert host.seen(re.compile(rb'\+QIURC: "dnsgip",[^\r]*\r\n')) == b'+QIURC: "dnsgip",565\r\n'
    still_usable(host, emulator, 7)


def test_udp_client_to_a_routed_name_with_its_own_dns_answer(modem, emulator):
    host, _, _ = modem
    emulator.router.add_dns("multi.example", "203.0.113.9")
    with UdpEchoServer(echo=True) as server:
        emulator.router.add_map("multi.example", 4000, "127.0.0.1", server.port)
        qiopen(host, 8, "UDP", "multi.example", 4000)
        state = host.at("AT+QISTATE=1,8")
        assert re.fullmatch(rb'\r\n\+QISTATE: 8,"UDP","203\.0\.113\.9",4000,\d+,2,1,8,0,"usbmodem"\r\n\r\nOK\r\n',
                            state), state
        assert qisend(host, 8, b"ping") == b"\r\nSEND OK\r\n"
        host.seen(b'+QIURC: "recv",8\r\n')
        assert qird(host, 8) == (b"\r\n+QIRD: 4\r\n", b"ping")
        assert host.at('AT+QIDNSGIP=1,"multi.example"') == OK
        assert host.read_until(b'"203.0.113.9"\r\n') == (b'\r\n+QIURC: "dnsgip",0,1,600\r\n'
                                                       b'\r\n+QIURC: "dnsgip","203.0.113.9"\r\n')
        assert host.at("AT+QICLOSE=8") == OK


@pytest.mark.parametrize("line", ['AT+QPING=0,"p.example"', 'AT+QPING=17,"p.example"', "AT+QPING=1,p.example,1,1x",
                                  f'AT+QPING=1,"{"a" * 300}.example"', 'AT+QPING=1,"p.example",4294967297',
                                  'AT+QPING=1,"p.example",1,4294967297', 'AT+QPING=1,"p.example",+4,-1',
                                  'AT+QPING="1","p.example"', "AT+QPING=,"])
def test_qping_bad_parameters(modem, emulator, line):
    host, advance, _ = modem
    emulator.router.add_ping("p.example", 5)
    assert host.at(line) == b"\r\n+CME ERROR: 552\r\n", line
    assert error_code(host) == 552
    assert host.quiet_for(0.1) == b""
    assert host.at('AT+QPING=1,"p.example",1,1') == OK
    advance(1)
    assert host.read_until(re.compile(rb"\+QPING: 0,1,1,0,5,5,5\r\n")).endswith(b"\r\n+QPING: 0,1,1,0,5,5,5\r\n")


# Was a bug, fixed: AT+QIOPEN (and AT+QSSLOPEN) resolved a name with any address family on an
# IPv4 context and took the first answer (Router.resolve's getaddrinfo had no family), so ::1
# was dialled ("UDP": AT+QISTATE showed "::1" and the datagram was lost; "TCP": 566) while
# AT+QIDNSGIP on the same context asked for IPv4 only and answered 127.0.0.1.  The socket now
# resolves with its context's family (PdpContext.name_family), as AT+QIDNSGIP does.
@pytest.mark.parametrize("kind", ["UDP", "TCP", "SSL"])
def test_a_name_answering_ipv6_first_is_dialled_over_ipv4_on_an_ipv4_context(monkeypatch, tmp_path, strict_log,
                                                                               kind):
    """The resolver (patched: nothing leaves this machine) answers "dual.example" with ::1
    first, then 127.0.0.1, where the server is (IPv4 only).  PDP context 1 is "IP" (AT+QICSGP
    <context_type> 1, IPv4): AT+QIDNSGIP asks for IPv4 only and answers 127.0.0.1, so an
    AT+QIOPEN (or AT+QSSLOPEN) to the same name must reach 127.0.0.1 too -- and AT+QISTATE
    (AT+QSSLSTATE) show it."""
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host
    from emulator.testing.peers import TcpServer, TlsServer

    answer_ipv6_first(monkeypatch, "dual.example")
    server = {"UDP": lambda: UdpEchoServer(echo=True), "TCP": lambda: TcpServer("echo"), "SSL": TlsServer}[kind]()
    with BackgroundEmulator(offline=False) as emu, server:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK)
            assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert host.at('AT+QIDNSGIP=1,"dual.example"') == OK
            assert host.read_until(b'"127.0.0.1"\r\n', timeout=5) == (
                b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","127.0.0.1"\r\n')
            if kind == "SSL":               # (seclevel 0: the test server's certificate unchecked)
                assert host.at(f'AT+QSSLOPEN=1,1,0,"dual.example",{server.port},0') == OK
                assert host.read_until(re.compile(rb"\+QSSLOPEN: 0,\d+\r\n")) == b"\r\n+QSSLOPEN: 0,0\r\n"
                # (AT+QSSLSTATE shows the name as given; the server listens on 127.0.0.1 alone,
                # so the open and the echo are over IPv4)
                state = host.at("AT+QSSLSTATE=0")
                assert state.startswith(b'\r\n+QSSLSTATE: 0,"SSLClient","dual.example",%d,' % server.port), state
                assert host.send_data(0, b"v4") == b"\r\nSEND OK\r\n"
                host.seen(b'+QSSLURC: "recv",0\r\n')
                assert host.at("AT+QSSLRECV=0,10") == b"\r\n+QSSLRECV: 2\r\nv4\r\n\r\nOK\r\n"
                assert host.at("AT+QSSLCLOSE=0") == OK
                return
            assert host.at(f'AT+QIOPEN=1,0,"{kind}","dual.example",{server.port},0,0') == OK
            assert host.read_until(re.compile(rb"\+QIOPEN: 0,\d+\r\n")) == b"\r\n+QIOPEN: 0,0\r\n"
            state = host.at("AT+QISTATE=1,0")
            assert state.startswith(b'\r\n+QISTATE: 0,"%s","127.0.0.1",%d,' % (kind.encode(), server.port)), state
            assert qisend(host, 0, b"v4") == b"\r\nSEND OK\r\n"
            host.seen(b'+QIURC: "recv",0\r\n')
            assert qird(host, 0) == (b"\r\n+QIRD: 2\r\n", b"v4")
            assert host.at("AT+QICLOSE=0") == OK
        finally:
            host.close()
