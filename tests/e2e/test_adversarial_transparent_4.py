"""Adversarial tests of EC2x transparent access mode, round 4: what the earlier rounds
(test_transparent.py, test_adversarial_transparent_escape/_drivers/_3.py) left out.

* A plain TCP transparent socket (AT+QIOPEN ...,2) whose server bursts while the host does
  not read, walked through escape, buffer mode (AT+QIRD), push mode and back to transparent
  mode with AT+QISWTMD, then NO CARRIER: every byte once, in order.
* The port's output still full of socket A's stream while the host escapes and switches to
  socket B (AT+QISWTMD) without reading: A's prefix, OK, CONNECT, B's data, A's rest later.
* Every byte value (CR, LF, Ctrl+Z, ESC, NUL, 0xFF, "+++" without guard, "NO CARRIER"
  text) both ways over TCP and UDP transparent sockets; a megabyte echoed through a TCP
  transparent socket while the host writes in one thread and reads in odd chunks.
* UDP transparent: transpktsize/transwaittm datagram boundaries, an empty datagram, a
  datagram that arrives while escaped comes after ATO's CONNECT.
* Framing: ATV0 when the peer closes while "++" is held (3<CR>, the "+"s never sent);
  ATQ1 (CONNECT, OK and NO CARRIER all silent, data still flow).
* Guard times at the exact S12 boundaries; a DTR drop (AT&D1) during the guard time after
  "+++" (the "+++" is data, one OK only); AT+QISDE=1 does not echo online data; failed
  transparent opens leave ATO to the parked socket; AT&D2 with "++" held; "+" split
  across writes that carry data; a random walk over two SSL and two TCP transparent sockets.

Bug found (fixed): AT+QISWTMD=<id>,0 and AT+QISWTMD=<id>,2 (or O) on one command line: the
"recv" URC the first raised was held through the online session and written after the next
escape's OK, for data already delivered after CONNECT, on a socket in transparent mode
(AT+QSSLRECV / AT+QIRD: ERROR).  Now a held "recv" goes when another access mode delivers
its data.

Guard times run on the modem's manual clock (ec2x_strict's advance)."""
from __future__ import annotations

import os
import random
import re
import socket
import threading
import time

import pytest

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, OddHost, free_port
from tests.e2e.test_adversarial_transparent_3 import (alive, received, sink,  # noqa: F401 (fixture)
                                                     wait_unread)
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, OPEN, PORT,
                                                          connect, escape)

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"
NO_CARRIER = b"\r\nNO CARRIER\r\n"
PUSH = re.compile(rb'\r\n\+QIURC: "recv",(\d+),(\d+)\r\n')


def topen(cid: int, kind: str = "TCP", addr: str = TCP_HOST, port: int = TCP_PORT) -> str:
    return f'AT+QIOPEN=1,{cid},"{kind}","{addr}",{port},0,2'


def text_blob(n: int, seed: int) -> bytes:
    """n random bytes without CR (so that a framed result code in the port's stream can be
    found by its CR LF), with LF, Ctrl+Z, ESC, NUL, 0xFF and "+" among them."""
    rng = random.Random(seed)
    alphabet = bytes(b for b in range(256) if b != 0x0D)
    return bytes(rng.choice(alphabet) for _ in range(n))


def sender(conn, data: bytes) -> threading.Thread:
    """Send data from the server in a thread (sendall may block while the host is held)."""
    t = threading.Thread(target=conn.send, args=(data,), daemon=True)
    t.start()
    return t


def read_push(host, cid: int, want: int) -> bytes:
    """Direct-push URCs of socket cid until `want` bytes: their data, concatenated."""
    out = bytearray()
    while len(out) < want:
        head = host.read_until(PUSH)
        assert head == PUSH.search(head).group(0), head           # nothing but pushes
        m = PUSH.search(head)
        assert int(m.group(1)) == cid
        out += host.read_exactly(int(m.group(2)))
        assert host.read_exactly(2) == b"\r\n"
    return bytes(out)


def qird_data(host, cid: int, n: int) -> bytes:
    host.write(f"AT+QIRD={cid},{n}\r")
    head = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
    assert re.fullmatch(rb"\r\n\+QIRD: \d+\r\n", head), head
    length = int(re.search(rb"\d+", head).group(0))
    data = host.read_exactly(length)
    assert host.read_until(OK) == b"\r\n" + OK
    return data


# -- a TCP transparent socket's backlog through all three access modes -----------------------
def test_tcp_backlog_walks_transparent_buffer_push_and_back_exactly_once(emulator, ec2x_strict):
    """AT+QIOPEN ...,2; the server sends 300 KB while the host does not read; "+++" (the
    port's output is still full); the host reads up to OK, AT+QISWTMD=2,0 and reads 30 KB
    with AT+QIRD, AT+QISWTMD=2,1 pushes the rest, the server sends 40 KB more (pushed),
    AT+QISWTMD=2,0 parks 20 KB, AT+QISWTMD=2,2 gives them after CONNECT, then the server's
    FIN gives NO CARRIER.  The concatenation is the server's stream, byte for byte."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(topen(2) + "\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        conn = server.wait_connection()
        stream = text_blob(410_000, 1)
        # a: the burst; b: 40 KB while pushing; c: the last 70 KB (parked then transparent)
        a, b, c = stream[:300_000], stream[300_000:340_000], stream[340_000:]
        t = sender(conn, a)
        wait_unread_or_held(emulator, 2, 100_000)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        got = bytearray(host.read_until(OK, timeout=15))
        assert got.endswith(OK)
        got = got[:-len(OK)]
        t.join(10)
        assert not t.is_alive()
        assert bytes(got) == a[:len(got)]
        # buffer mode: a "recv" URC (data wait), then AT+QIRD
        host.write(b"AT+QISWTMD=2,0\r")
        assert host.read_until(b'+QIURC: "recv",2\r\n') == OK + b'\r\n+QIURC: "recv",2\r\n'
        for _ in range(20):
            got += qird_data(host, 2, 1500)
        assert bytes(got) == a[:len(got)]
        # push mode: the rest of the burst at once, then what the server sends meanwhile
        host.write(b"AT+QISWTMD=2,1\r")
        assert host.read_until(OK) == OK
        got += read_push(host, 2, len(a) - len(got))
        assert bytes(got) == a
        conn.send(b)
        got += read_push(host, 2, len(b))
        assert bytes(got) == a + b
        # buffer mode again: c waits, then transparent mode gives it after CONNECT
        assert host.at("AT+QISWTMD=2,0") == OK
        t = sender(conn, c)
        wait_unread(emulator, 2, 20_000)
        host.write(b"AT+QISWTMD=2,2\r")
        assert host.read_until(CONNECT_OR_ERROR)[-len(CONNECT):] == CONNECT
        t.join(10)
        time.sleep(0.2)
        conn.close()
        rest = host.read_until(NO_CARRIER, timeout=15)
        got += rest[:-len(NO_CARRIER)]
        assert len(got) == len(stream)
        assert bytes(got) == stream
        assert host.quiet_for(0.2) == b""                         # no "closed" URC after it
        assert host.at("AT+QICLOSE=2") == OK
        alive(host)


def wait_unread_or_held(emulator, cid: int, n: int, timeout: float = 10) -> None:
    """Until socket cid has taken n bytes from the network (bytes_received)."""
    deadline = time.monotonic() + timeout
    while True:
        socks = {s["id"]: s for s in emulator.control("state")["sockets"]}
        if socks[cid]["bytes_received"] >= n:
            return
        assert time.monotonic() < deadline, (n, socks[cid])
        time.sleep(0.01)


# -- switching sockets while the port's output is still full ---------------------------------
def test_switch_to_another_socket_while_the_first_ones_output_is_unread(emulator, ec2x_strict):
    """SSL socket 4 online; its server sends 200 KB and the host reads nothing; "+++" and
    AT+QISWTMD=2,2 (a TCP transparent socket parked with 5 KB waiting) written without
    reading; then the host reads: 4's prefix, OK, CONNECT, 2's bytes -- nothing of 4 after
    OK; ATO-less return to 4 with AT+QISWTMD=4,2 later gives 4's rest, exactly."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    with TlsServer(mode="sink", legacy=True) as tls, TcpServer("sink") as tcp:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", tls.port)
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", tcp.port)
        host.write(topen(2) + "\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        tconn = tcp.wait_connection()
        assert escape(host, advance) == OK
        connect(host)                                              # SSL socket 4 online
        tls.wait_handshake()
        four = text_blob(200_000, 2)
        two = text_blob(5_000, 3)
        tconn.send(two)
        wait_unread(emulator, 2, len(two))
        t = sender(tls.conn, four)
        wait_unread_or_held(emulator, 4, 80_000)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        host.write(b"AT+QISWTMD=2,2\r")
        got = host.read_until(OK, timeout=15)
        prefix = got[:-len(OK)]
        assert prefix == four[:len(prefix)]
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        assert host.read_exactly(len(two)) == two
        assert host.quiet_for(0.2) == b""                          # nothing of socket 4 here
        host.write(b"to two")
        assert tconn.wait_received(6) == b"to two"
        t.join(10)
        assert escape(host, advance) == OK
        host.write(b"AT+QISWTMD=4,2\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        rest = host.read_exactly(len(four) - len(prefix), timeout=15)
        assert prefix + rest == four
        host.write(b"to four")
        assert received(tls, 7) == b"to four"
        assert escape(host, advance) == OK
        host.write(b"ATO\r")                                       # ATO: the last one (4)
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        host.write(b"!")
        assert received(tls, 8) == b"to four!"
        assert tconn.received == bytearray(b"to two")


# -- every byte value, both ways ---------------------------------------------------------------
SPECIAL = (b"\r\n\x1a\x1b\x00\xff+++\r\nNO CARRIER\r\n\r\nOK\r\nAT\r+++ATO\r\x1b[0m\x00\x00"
           b"\r\n+QIURC: \"closed\",2\r\n")


def test_every_byte_value_both_ways_through_a_tcp_transparent_socket(emulator, ec2x_strict, tcp_echo):
    """All 256 byte values, result-code and URC look-alikes, "+++" with no guard time:
    the echo server returns exactly what went up; the port stays online (escape works)."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    host.write(topen(2) + "\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    conn = tcp_echo.wait_connection()
    data = bytes(range(256)) * 8 + SPECIAL + bytes(range(255, -1, -1)) * 8
    host.write(data)
    assert host.read_exactly(len(data)) == data
    assert conn.wait_received(len(data)) == data
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == OK
    time.sleep(0.05)
    assert bytes(conn.received) == data                        # no "+" of the escape went
    assert host.at("AT+QISTATE=1,2").startswith(b'\r\n+QISTATE: 2,"TCP"')


def test_megabyte_echoed_while_the_host_writes_in_a_thread_and_reads_in_odd_chunks(emulator, ec2x_strict):
    """A TCP transparent socket to an echo server; one thread writes 1 MiB (in 1-4096 byte
    writes, "+++" among the bytes, no guard time) while the host reads in 1, 3, 7, 4095
    byte chunks: the host reads the same MiB, the server got it once; then a clean escape."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    host.close()
    odd = OddHost(port.path)
    try:
        with TcpServer("echo") as server:
            emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
            before = host.written
            odd.write(topen(2) + "\r")
            assert odd.read_until(CONNECT_OR_ERROR) == CONNECT
            rng = random.Random(4)
            data = bytearray(os.urandom(1 << 20))
            for at in range(0, len(data) - 3, 4099):
                data[at:at + 3] = b"+++"
            data = bytes(data)
            cuts = []
            at = 0
            while at < len(data):
                n = rng.randint(1, 4096)
                cuts.append(data[at:at + n])
                at += n

            def write_all():
                for piece in cuts:
                    odd.write(piece)
            t = threading.Thread(target=write_all, daemon=True)
            t.start()
            got = odd.read_exactly(len(data), timeout=18)
            t.join(5)
            assert not t.is_alive()
            assert got == data
            conn = server.wait_connection()
            assert conn.wait_received(len(data)) == data
            emulator.wait_received(port, before + odd.written)
            emulator.advance(port, 1.1)
            odd.write(b"+++")
            emulator.wait_received(port, before + odd.written)
            emulator.advance(port, 1.1)
            assert odd.read_until(FINAL) == OK
            assert len(conn.received) == len(data)
    finally:
        odd.close()


def test_udp_transparent_datagrams_every_byte_and_one_that_waits_for_ato(emulator, ec2x_strict):
    """AT+QIOPEN "UDP" ...,2 with transpktsize 5 / transwaittm 5: 8 bytes go up as "abcde"
    then "fgh" (500 ms later, on the modem's clock); datagrams down come unframed, an empty
    one adds nothing, "\\r\\nNO CARRIER\\r\\n" is data; one sent while escaped comes after
    ATO's CONNECT; all 256 byte values go up in one packet."""
    host, advance, port = ec2x_strict
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    try:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", peer.getsockname()[1])
        assert host.at('AT+QICFG="transpktsize",5;+QICFG="transwaittm",5') == OK
        host.write(topen(3, "UDP", UDP_HOST, UDP_PORT) + "\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        host.write(b"abcdefgh")
        first, addr = peer.recvfrom(2000)
        assert first == b"abcde"
        advance(0.6)
        assert peer.recvfrom(2000)[0] == b"fgh"
        for d in (b"\r\nNO CARRIER\r\n", b"", b"+++", b"\x00\xff\x1a\x1b"):
            peer.sendto(d, addr)
        want = b"\r\nNO CARRIER\r\n+++\x00\xff\x1a\x1b"
        assert host.read_exactly(len(want)) == want
        assert host.quiet_for(0.1) == b""
        assert escape(host, advance) == OK
        peer.sendto(b"parked", addr)
        time.sleep(0.2)
        assert host.quiet_for(0.1) == b""                       # no URC while parked
        assert host.at('AT+QICFG="transpktsize",1460') == OK
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        assert host.read_exactly(6) == b"parked"
        every = bytes(range(256))
        host.write(every)
        advance(0.6)
        assert peer.recvfrom(2000)[0] == every
    finally:
        peer.close()


# -- framing -----------------------------------------------------------------------------------
def test_atv0_peer_close_while_two_plus_are_held(sink):
    """ATV0; after a second of silence "++" (held: it may become an escape); the server
    closes: "3<CR>" alone, the "++" never sent (the connection is gone); the port then
    takes "+" and "AT<CR>" as a command line: "0<CR>"; ATO: "3<CR>"."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    host.write(b"ATV0\r")
    assert host.read_until(b"\r") == b"0\r"
    host.write(b"ATO\r")
    assert host.read_until(b"\r") == b"1\r"
    host.write(b"pre")
    assert received(server, 3) == b"pre"
    advance(1.1)
    host.write(b"++")
    advance(0.3)
    server.conn.close()
    assert host.read_until(b"\r") == b"3\r"
    assert host.quiet_for(0.2) == b""
    host.write(b"+")
    advance(1.1)
    host.write(b"AT\r")
    assert host.read_until(b"\r") == b"0\r"
    host.write(b"ATO\r")
    assert host.read_until(b"\r") == b"3\r"
    assert bytes(server.conn.received) == b"pre"
    host.write(b"AT+QSSLCLOSE=4;V1\r")
    assert host.read_until(OK) == OK


def test_atq1_online_session_has_no_result_codes_but_data_flow(sink):
    """ATQ1 while escaped: AT+QISWTMD=4,2 answers nothing (no CONNECT) yet the port is
    online; the escape has no OK; the peer's close has no NO CARRIER; ATO afterwards is
    silent too; ATQ0 brings "OK" back and ATO answers NO CARRIER."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    host.write(b"ATQ1\r")
    assert host.quiet_for(0.2) == b""
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.quiet_for(0.2) == b""
    host.write(b"q1 data")
    assert received(server, 7) == b"q1 data"
    server.conn.send(b"down")
    assert host.read_exactly(4) == b"down"
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.quiet_for(0.2) == b""
    host.write(b"ATO\r")
    assert host.quiet_for(0.2) == b""
    server.conn.send(b"bye")
    server.conn.close()
    assert host.read_exactly(3) == b"bye"
    assert host.quiet_for(0.3) == b""
    host.write(b"ATQ0\r")
    assert host.read_until(FINAL) == OK
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == NO_CARRIER
    assert bytes(server.conn.received) == b"q1 data"


# -- guard times, DTR, echo --------------------------------------------------------------------
def test_guard_times_at_the_exact_s12_boundaries(sink):
    """ATS12=25 (0.5 s): exactly 0.5 s of silence before and after "+++" is an escape;
    0.48 s before is not (the "+++" is data, released after its guard time)."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("ATS12=25") == OK
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    host.write(b"a")
    assert received(server, 1) == b"a"
    advance(0.5)
    host.write(b"+++")
    advance(0.5)
    assert host.read_until(FINAL) == OK
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    host.write(b"b")
    assert received(server, 2) == b"ab"
    advance(0.48)
    host.write(b"+++")
    advance(0.5)
    assert received(server, 5) == b"ab+++"
    assert host.quiet_for(0.1) == b""
    advance(0.5)
    host.write(b"+++")
    advance(0.5)
    assert host.read_until(FINAL) == OK
    assert bytes(server.conn.received) == b"ab+++"


def test_dtr_drop_with_and_d1_during_the_guard_time_after_plus_plus_plus(emulator, sink):
    """AT&D1; "+++" after a second of silence, then DTR drops half a second later: the
    "+++" was no escape yet -- it is data and reaches the server, the DTR drop gives the
    only OK (the guard timer gives no second one); ATO carries on."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("AT&D1") == OK
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    advance(1.1)
    host.write(b"+++")
    advance(0.5)
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert host.read_until(FINAL) == OK
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert received(server, 3) == b"+++"
    advance(1.1)
    assert host.quiet_for(0.2) == b""
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    host.write(b"x")
    assert received(server, 4) == b"+++x"


def test_qisde_1_does_not_echo_transparent_data(emulator, ec2x_strict, tcp_sink):
    """AT+QISDE=1 echoes AT+QISEND's data only: online data are never echoed."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0;+QISDE=1') == OK
    host.write(topen(2) + "\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    conn = tcp_sink.wait_connection()
    host.write(b"hello")
    assert conn.wait_received(5) == b"hello"
    assert host.quiet_for(0.3) == b""
    assert escape(host, advance) == OK


def test_failed_transparent_opens_leave_ato_to_the_parked_socket(emulator, sink):
    """Socket 4 parked with data waiting; a transparent AT+QIOPEN and a transparent
    AT+QSSLOPEN to a refused port both fail (ERROR, 566): ATO still returns to 4, its
    waiting bytes first."""
    host, advance, port, server = sink
    host.write(b"A1")
    assert received(server, 2) == b"A1"
    assert escape(host, advance) == OK
    server.conn.send(b"waiting")
    wait_unread(emulator, 4, 7)
    emulator.router.add_map("refused.example", 9, "127.0.0.1", free_port())
    host.write(b'AT+QIOPEN=1,2,"TCP","refused.example",9,0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 566,")
    host.write(b'AT+QSSLOPEN=1,1,5,"refused.example",9,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    assert host.read_exactly(7) == b"waiting"
    host.write(b"B2")
    assert received(server, 4) == b"A1B2"


# -- four sockets, a random walk -----------------------------------------------------------------
URC = re.compile(rb'\r\n\+(?:QSSLURC|QIURC): "recv",(\d+)\r\n')
HOST_B, PORT_B = "220.180.239.213", 8012
TCP_HOST_B, TCP_PORT_B = "tcp-b.example", 7002


@pytest.mark.parametrize("seed", [int(x) for x in os.environ.get("H4_SEEDS", "11,12").split(",")])
def test_random_walk_over_two_ssl_and_two_tcp_transparent_sockets(emulator, ec2x_strict, seed):
    """SSL sockets 4 and 5, TCP sockets 2 and 3, all opened transparent and parked; then
    random steps: a server sends (while its socket is online, parked, in buffer mode, or
    another one holds the port), AT+QISWTMD=<id>,2 or ATO (the last one online) -- CONNECT
    and exactly what waited --, host bytes up, "+++", AT+QISWTMD=<id>,0 and reads with
    AT+QSSLRECV / AT+QIRD.  Each host stream is each server's stream, byte for byte; each
    server got exactly its socket's online bytes; "recv" URCs only for buffer-mode sockets,
    never inside online data."""
    host, advance, port = ec2x_strict
    rng = random.Random(seed)
    assert host.at('AT+QICFG="transwaittm",0') == OK
    with TlsServer(mode="sink", legacy=True) as t4, TlsServer(mode="sink", legacy=True) as t5, \
            TcpServer("sink") as p2, TcpServer("sink") as p3:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", t4.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", t5.port)
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", p2.port)
        emulator.router.add_map(TCP_HOST_B, TCP_PORT_B, "127.0.0.1", p3.port)
        lines = {4: OPEN, 5: f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},2',
                 2: topen(2), 3: topen(3, "TCP", TCP_HOST_B, TCP_PORT_B)}
        conns = {}
        servers = {4: t4, 5: t5, 2: p2, 3: p3}
        for cid in (4, 5, 2, 3):
            host.write(lines[cid] + "\r")
            assert host.read_until(CONNECT_OR_ERROR) == CONNECT, cid
            conns[cid] = ({4: t4, 5: t5}[cid].wait_handshake() if cid in (4, 5)
                          else {2: p2, 3: p3}[cid].wait_connection())
            assert escape(host, advance) == OK
        last = 3
        mode = {cid: "parked" for cid in conns}
        waiting = {cid: b"" for cid in conns}                   # sent by the server, not yet read
        sent = {cid: b"" for cid in conns}                      # what each server sent
        got = {cid: b"" for cid in conns}                       # what the host read of it
        up = {cid: b"" for cid in conns}                        # what the host sent online
        urcs = []
        buffered = set()                                        # ids AT+QISWTMD=<id>,0 had

        def strip(out: bytes) -> bytes:
            for m in URC.finditer(out):
                urcs.append(int(m.group(1)))
            return URC.sub(b"", out)

        def server_send(cid: int) -> bytes:
            # (what waits stays below recv_buffer, 64 KiB: past it the socket stops reading)
            size = min(rng.choice([1, 50, 700, 3000, 20_000]), 60_000 - len(waiting[cid]))
            chunk = text_blob(max(size, 0), rng.randrange(1 << 30))
            conns[cid].send(chunk)
            sent[cid] += chunk
            return chunk

        def settle(cid: int) -> None:
            wait_unread_or_held(emulator, cid, len(sent[cid]))

        for step in range(45):
            action = rng.choice(["send", "send", "online", "online", "buffer", "read"])
            cid = rng.choice(list(conns))
            if action == "send":
                chunk = server_send(cid)
                waiting[cid] += chunk
                settle(cid)
            elif action == "online":
                use_ato = cid == last and rng.random() < 0.5
                host.write(b"ATO\r" if use_ato else f"AT+QISWTMD={cid},2\r".encode())
                head = strip(host.read_until(CONNECT_OR_ERROR))
                assert head == CONNECT, (step, cid, head)
                data = host.read_exactly(len(waiting[cid]), timeout=10)
                assert data == waiting[cid], (step, cid)
                got[cid] += data
                waiting[cid] = b""
                mode[cid] = "parked"
                for _ in range(rng.randint(0, 3)):
                    other = rng.choice(list(conns))
                    chunk = server_send(other)
                    if other == cid:
                        assert host.read_exactly(len(chunk), timeout=10) == chunk, (step, cid)
                        got[cid] += chunk
                    else:
                        waiting[other] += chunk
                        settle(other)
                    mine = text_blob(rng.choice([1, 30, 900]), rng.randrange(1 << 30))
                    host.write(mine)
                    up[cid] += mine
                assert host.quiet_for(0.02) == b""                 # no URC inside online data
                advance(1.1)
                host.write(b"+++")
                advance(1.1)
                assert strip(host.read_until(FINAL)) == OK, (step, cid)
                last = cid
            elif action == "buffer":
                host.write(f"AT+QISWTMD={cid},0\r".encode())
                assert strip(host.read_until(FINAL)) == OK
                mode[cid] = "buffer"
                buffered.add(cid)
            elif action == "read":
                cmd = f"AT+QSSLRECV={cid},1500" if cid in (4, 5) else f"AT+QIRD={cid},1500"
                host.write(cmd + "\r")
                out = host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))
                if mode[cid] != "buffer":
                    assert strip(out) == b"\r\nERROR\r\n", (step, cid, out)
                    continue
                out = strip(out)
                m = re.fullmatch(rb"\r\n\+(?:QSSLRECV|QIRD): (\d+)\r\n(.*)\r\n\r\nOK\r\n", out, re.S) \
                    or re.fullmatch(rb"\r\n\+(?:QSSLRECV|QIRD): 0\r\n\r\nOK\r\n()", out)
                assert m, (step, cid, out)
                data = m.group(2) if m.lastindex == 2 else b""
                assert data == waiting[cid][:len(data)], (step, cid)
                assert len(data) == min(1500, len(waiting[cid])), (step, cid, len(data))
                got[cid] += data
                waiting[cid] = waiting[cid][len(data):]
        assert strip(host.quiet_for(0.1)) == b""
        for cid in conns:
            assert got[cid] + waiting[cid] == sent[cid], cid
            if up[cid]:
                (servers[cid] if cid in (4, 5) else conns[cid]).wait_received(len(up[cid]))
            time.sleep(0.02)
            assert bytes(conns[cid].received) == up[cid], cid
        assert set(urcs) <= buffered, (urcs, buffered)
        alive(host)


# -- a command line that switches to buffer mode and back to transparent mode ---------------------
@pytest.mark.parametrize("line", [b"AT+QISWTMD=4,1;+QISWTMD=4,2\r", b"AT+QISWTMD=4,0\rAT+QISWTMD=4,2\r"])
def test_switch_away_and_back_to_transparent_reports_no_stale_data(emulator, sink, line):
    """Socket 4 parked with 4 bytes waiting: switched to push (one line) or to buffer (two
    lines) and back to transparent mode: CONNECT then the bytes; after the next escape no
    URC says that something waits, and AT+QSSLRECV has nothing (ERROR: transparent)."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    server.conn.send(b"DATA")
    wait_unread(emulator, 4, 4)
    host.write(line)
    got = host.read_until(CONNECT_OR_ERROR)
    assert got.endswith(CONNECT)
    assert host.read_exactly(4) == b"DATA"
    assert escape(host, advance) == OK
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLRECV=4,100") == b"\r\nERROR\r\n"


@pytest.mark.parametrize("line", [b"AT+QISWTMD=4,0;+QISWTMD=4,2\r", b"AT+QISWTMD=4,0;O\r"])
def test_buffer_then_transparent_on_one_line_leaves_no_stale_recv_urc(emulator, sink, line):
    """As above with buffer mode and the way back on one line: the data come after CONNECT;
    a "recv" URC for them may come before CONNECT, never after the online session (the host
    would ask AT+QSSLRECV for bytes it already has, and get ERROR)."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    server.conn.send(b"DATA")
    wait_unread(emulator, 4, 4)
    host.write(line)
    got = host.read_until(CONNECT_OR_ERROR)
    assert got.endswith(CONNECT)
    assert host.read_exactly(4) == b"DATA"
    assert escape(host, advance) == OK
    assert host.quiet_for(0.2) == b""                          # actual: +QSSLURC: "recv",4
    assert host.at("AT+QSSLRECV=4,100") == b"\r\nERROR\r\n"


def test_tcp_buffer_then_transparent_on_one_line_leaves_no_stale_recv_urc(emulator, ec2x_strict, tcp_sink):
    """The TCP form of the test above: AT+QIOPEN ...,2 parked, 4 bytes waiting, one line
    AT+QISWTMD=2,0;+QISWTMD=2,2: CONNECT, the bytes; after the next escape no "recv"."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    host.write(topen(2) + "\r")
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    conn = tcp_sink.wait_connection()
    assert escape(host, advance) == OK
    conn.send(b"DATA")
    wait_unread(emulator, 2, 4)
    host.write(b"AT+QISWTMD=2,0;+QISWTMD=2,2\r")
    assert host.read_until(CONNECT_OR_ERROR).endswith(CONNECT)
    assert host.read_exactly(4) == b"DATA"
    assert escape(host, advance) == OK
    assert host.quiet_for(0.2) == b""                          # actual: +QIURC: "recv",2
    assert host.at("AT+QIRD=2") == b"\r\nERROR\r\n"


# -- "+" split across writes, "+++" at a write's start, "+++" in command mode ---------------------
def test_plus_signs_split_across_writes_that_carry_data_are_data(sink):
    """"abc+" (the "+" comes with data), a second later "++", a second later: the "++"
    waited for a third "+" that never came -- all data, no OK.  A write that starts with
    "+++" after a second of silence and goes on is data too.  Then a real escape; "+++"
    typed in command mode does nothing, and "+++AT<CR>" is answered OK."""
    host, advance, port, server = sink
    host.write(b"abc+")
    assert received(server, 4) == b"abc+"
    advance(1.1)
    host.write(b"++")
    advance(1.1)
    assert received(server, 6) == b"abc+++"
    advance(1.1)
    assert host.quiet_for(0.1) == b""
    host.write(b"+++" + b"x" * 5000)
    assert received(server, 5009) == b"abc++++++" + b"x" * 5000
    advance(1.1)
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == OK
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.quiet_for(0.2) == b""
    host.write(b"AT\r")
    assert host.read_until(FINAL) == OK
    host.write(b"+++AT\r")
    assert host.read_until(FINAL) == OK
    assert len(server.conn.received) == 5009


def test_dtr_drop_with_and_d2_while_two_plus_are_held(emulator, sink):
    """AT&D2 (the default); "data", a second of silence, "++" (held), DTR drops: the "++"
    were data and reach the server before the connection closes; NO CARRIER; the id is
    free (AT+QSSLSTATE lists nothing) and ATO answers NO CARRIER."""
    host, advance, port, server = sink
    host.write(b"data")
    assert received(server, 4) == b"data"
    advance(1.1)
    host.write(b"++")
    advance(0.4)
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert host.read_until(FINAL) == NO_CARRIER
    assert emulator.control("dtr", level=1) == {"ok": True}
    server.wait_done()
    assert bytes(server.conn.received) == b"data++"
    advance(1.1)
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+QSSLSTATE") == OK
    assert host.at("ATO") == NO_CARRIER
