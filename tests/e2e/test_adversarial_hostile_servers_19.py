"""Hostile servers, nineteenth round: what rounds 1-18 (test_adversarial_hostile_servers*.py)
and test_ssl_flow_control.py do not do.

Peers: test_adversarial_hostile_servers_2's server (OpenSSL over memory BIOs for the
handshake, the server's records sealed by the test, the modem's decrypted -- a record of the
modem out of sequence fails its AEAD check), its bytes cut into TCP segments at chosen places
with real pauses; the same server made deaf (a 4 KiB receive window, its reader held: a server
that never reads until the test says so); test_adversarial_hostile_servers_10's hand-made
server (AES-128-GCM for the EC2x, AES128-SHA for the ML302) with its Finished's segment
reshaped; `openssl s_server -dtls1_2` behind a UdpMiddlebox with records sealed by
test_adversarial_hostile_servers_3's DtlsSealer.  Covered (EC2x unless said):

* a record's 5-byte header held apart from its body for a second, the body then dripped in
  growing segments with its last byte held, while the host works on the socket (AT+QSSLRECV:
  +QSSLRECV: 0, AT+QSSLSEND: the bytes reach the server, AT+QSSLSTATE: 2): no "recv" and no
  byte before the record is whole; a HelloRequest (renegotiation 0) cut after 3 bytes and
  held: no alert until its last byte, then exactly one no_renegotiation; a warning
  user_canceled and the next record glued across segments; one "recv" per arrival into an
  empty buffer -- EC2x buffer mode and ML302; direct push (no push, no empty push, while the
  record is cut) and transparent mode (the host's online bytes go up meanwhile);
* the first data record cut in the segment of the server's Finished (inside its header, or
  after header + nonce), the rest a second later, each access mode: the open answered at once,
  nothing while the record is cut, then the bytes once;
* RFC 5246 7.2.1's abort sequence -- warning user_canceled, close_notify -- then a valid record
  in the same segment, later another and bare junk, the TCP connection left open: direct push,
  transparent, ML302 buffer: the data once, one end report, nothing after, state 4, the
  emulator's FIN, no alert of the modem;
* a deaf server, buffer / push mode: SEND FAIL (EC2x and ML302, the manual's SEND FAIL) while
  the server's 100 KB still read byte-exact with AT+QSSLRECV; the server's half-close (bare FIN
  / close_notify + FIN) with the send buffer full: "closed" once, ERROR after it, every SEND OK
  byte at the server before the FIN; a HelloRequest arriving then: the data reach the host at
  once, the modem's no_renegotiation alert sealed after every SEND OK byte (sequence order);
* a deaf server, transparent mode (EC2x, ML302 connectmode 1): the host streams until its
  writes block (flow control, ~3 MB) while the server's data reach it exactly; then the
  server reads (every byte the host wrote, in order; "+++" OK), or half-closes (NO CARRIER
  alone, a byte-exact prefix > ssl.online_buffer at the server, the FIN), or resets, or sends
  a HelloRequest (the alert in sequence behind the held stream); AT&D2 and a DTR drop then:
  NO CARRIER; a server that then reads gets a prefix, close_notify, FIN; one that never reads
  is aborted (RST, never a FIN) when the 10 modem seconds of the close's linger run out;
* DTLS: 50 empty application records, one per datagram, between two data records (each
  access mode): nothing for them, both pieces once, the socket up.  (Not asserted: over DTLS,
  a datagram holding a fourth empty record in a row is dropped whole, data behind the empty
  records included -- Mbed TLS's nb_zero check and datagram dismissal, so also a module's.)

No bug found this round.  Checked each time: exact bytes on the pty, one end report, no ERROR
log record or traceback (ec2x_strict / ml302_strict), AT answering afterwards.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from tests.e2e import test_adversarial_hostile_servers_2 as h2
from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e import test_adversarial_hostile_servers_10 as h10
from tests.e2e.hostile_support import open_answer, recv
from tests.e2e.socket_support import wait_for

CT_APP, CT_ALERT = h2.CT_APP, h2.CT_ALERT
WARNING = h2.WARNING
NAME = h2.NAME
OK = b"\r\nOK\r\n"
NO_RENEGOTIATION = b"\x01\x64"
pattern = h2.pattern
Server, ssl_open, read_all, state, log_text = h2.Server, h2.ssl_open, h2.read_all, h2.state, h2.log_text


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def _drip(sock, data: bytes, pause: float = 0.002) -> None:
    """data in growing TCP segments (1, 2, 3 ... bytes), a pause between them."""
    pos, size = 0, 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while pos < len(data):
        sock.sendall(data[pos:pos + size])
        pos += size
        size += 1
        time.sleep(pause)


def _push_read(host, cid: int, want: int, timeout: float = 10) -> bytes:
    push = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % cid)
    got = bytearray()
    while len(got) < want:
        chunk = host.read_until(push, timeout=timeout)
        m = push.search(chunk)
        assert m.start() == 0, chunk[:200]
        n = int(m.group(1))
        assert 0 < n <= 1500
        got += host.read_exactly(n, timeout=timeout)
        assert host.read_exactly(2, timeout=timeout) == b"\r\n"
    return bytes(got)


# == records cut at odd places, long pauses, the host busy on the socket ============================
def test_held_record_header_split_hello_request_and_glued_records_buffer_mode(modem, emulator, caplog):
    host, advance, port = modem
    a, b = pattern(3000, 191), pattern(700, 192)
    steps = [threading.Event() for _ in range(6)]
    marks = [threading.Event() for _ in range(6)]

    def script(c) -> None:
        c.handshake()
        ra, hr, wa, rb = c.app(a), c.hello_request(), c.alert(WARNING, 90), c.app(b)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        steps[0].wait(10)
        c.sock.sendall(ra[:5])                       # the header alone
        marks[0].set()
        steps[1].wait(10)
        _drip(c.sock, ra[5:-1])                      # the body but its last byte
        marks[1].set()
        steps[2].wait(10)
        c.sock.sendall(ra[-1:] + hr[:3])             # record A whole; 3 bytes of the request
        marks[2].set()
        steps[3].wait(10)
        c.sock.sendall(hr[3:-1])                     # all of the request but its last byte
        marks[3].set()
        steps[4].wait(10)
        c.sock.sendall(hr[-1:] + wa[:7])             # the request whole; the alert cut
        time.sleep(0.3)
        c.sock.sendall(wa[7:] + rb[:13])             # the alert whole; B's header + nonce
        time.sleep(0.3)
        _drip(c.sock, rb[13:])
        marks[4].set()
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        conn = server.conns[0]
        steps[0].set()
        assert marks[0].wait(5)
        time.sleep(1.0)                               # the header alone, for a second
        assert recv(host, 1) == b""
        assert host.send_data(1, b"while the header waits") == b"\r\nSEND OK\r\n"
        assert conn.wait_plaintext(22) == b"while the header waits"
        assert state(host, 1) == 2
        steps[1].set()
        assert marks[1].wait(10)
        time.sleep(0.5)                               # all but the last byte, held
        assert recv(host, 1) == b""
        assert b'"recv"' not in bytes(host.transcript)
        steps[2].set()
        assert marks[2].wait(5)
        host.seen(b'+QSSLURC: "recv",1\r\n', 5)
        assert read_all(host, 1, len(a), sizes=(1, 7, 1500)) == a
        assert recv(host, 1) == b""                   # +QSSLRECV: 0: the buffer empty
        steps[3].set()
        assert marks[3].wait(5)
        time.sleep(0.5)
        assert conn.alerts() == []                    # the request is not whole yet
        steps[4].set()
        assert marks[4].wait(10)
        wait_for(lambda: conn.alerts() == [NO_RENEGOTIATION], 5, "one no_renegotiation alert")
        host.seen(b'+QSSLURC: "recv",1\r\n', 5)
        assert read_all(host, 1, len(b)) == b
        assert recv(host, 1) == b""
        assert host.send_data(1, b"after") == b"\r\nSEND OK\r\n"
        assert conn.wait_plaintext(27) == b"while the header waitsafter"
        time.sleep(0.2)
        assert conn.alerts() == [NO_RENEGOTIATION]
        assert state(host, 1) == 2
        assert host.transcript.count(b'+QSSLURC: "recv",1') == 2
        assert b'"closed"' not in bytes(host.transcript)
        assert host.at("AT+QSSLCLOSE=1,0") == OK
    assert host.at("AT") == OK


@pytest.mark.parametrize("mode", [1, 2])
def test_held_record_header_and_last_byte_push_and_transparent(modem, emulator, mode):
    host, advance, port = modem
    a = pattern(5000, 193)
    steps = [threading.Event() for _ in range(3)]
    marks = [threading.Event() for _ in range(3)]

    def script(c) -> None:
        c.handshake()
        ra = c.app(a)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        steps[0].wait(10)
        c.sock.sendall(ra[:5])
        marks[0].set()
        steps[1].wait(10)
        _drip(c.sock, ra[5:-1], 0.001)
        marks[1].set()
        steps[2].wait(10)
        c.sock.sendall(ra[-1:])
        marks[2].set()
        c.server.stall()

    with Server(script, emulator) as server:
        if mode == 1:
            ssl_open(host, 2, mode=1)
            assert open_answer(host, 2) == 0
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        steps[0].set()
        assert marks[0].wait(5)
        assert host.quiet_for(1.0) == b""
        if mode == 1:
            assert host.send_data(2, b"up while held") == b"\r\nSEND OK\r\n"
        else:
            host.write(b"up while held")
        assert conn.wait_plaintext(13) == b"up while held"
        steps[1].set()
        assert marks[1].wait(15)
        assert host.quiet_for(0.5) == b""             # nothing, not an empty push
        steps[2].set()
        assert marks[2].wait(5)
        if mode == 1:
            assert _push_read(host, 2, len(a)) == a
        else:
            assert host.read_exactly(len(a), timeout=5) == a
        assert host.quiet_for(0.3) == b""
        if mode == 2:
            assert h2.escape(host, advance) == OK
        assert state(host, 2) == 2
        assert host.at("AT+QSSLCLOSE=2,0") == OK


# == the abort sequence (user_canceled, close_notify), then more bytes on the open TCP connection ==
@pytest.mark.parametrize("mode", [1, 2])
def test_user_canceled_close_notify_then_records_and_junk_push_and_transparent(modem, emulator, caplog, mode):
    host, advance, port = modem
    before = pattern(6000, 194)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before) + c.alert(WARNING, 90) + c.alert(WARNING, 0)
                       + c.app(b"ghost record behind close_notify"))
        time.sleep(0.3)
        try:
            c.sock.sendall(c.app(b"ghost record later") + b"HTTP/1.1 400 ghost junk\r\n\r\n")
        except OSError:
            pass
        c.server.stall()

    with Server(script, emulator) as server:
        if mode == 1:
            ssl_open(host, 3, mode=1)
            assert open_answer(host, 3) == 0
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,3,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        go.set()
        if mode == 1:
            assert _push_read(host, 3, len(before)) == before
            end = b'\r\n+QSSLURC: "closed",3\r\n'
        else:
            assert host.read_exactly(len(before), timeout=10) == before
            end = b"\r\nNO CARRIER\r\n"
        assert host.read_until(end, timeout=5) == end
        wait_for(conn.eof.is_set, 5, "the emulator's FIN")
        assert host.quiet_for(0.6) == b""
        assert b"ghost" not in bytes(host.transcript)
        assert state(host, 3) == 4
        assert host.transcript.count(end.strip()) == 1
        if mode == 2:
            assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert conn.alerts() == []                   # it cannot answer close_notify (documented)
        assert conn.plaintext() == b""
        assert host.at("AT+QSSLCLOSE=3,0") == OK
        assert "close_notify" in log_text(caplog)
    assert host.at("AT") == OK


# == a server that never reads while it sends ===================================================
def test_never_reading_server_send_fail_while_its_data_still_reads(modem, emulator):
    host, advance, port = modem
    down = pattern(100_000, 195)
    go, drain = threading.Event(), threading.Event()
    got = bytearray()

    def script(c) -> None:
        c.handshake(seal=True)
        # the reader thread of Conn reads the client: stop it by not starting the drain here --
        go.wait(10)
        c.sock.sendall(c.app(down))
        c.server.stall()

    class Deaf(Server):
        """The client's bytes are not read until `drain` (the reader thread waits on it)."""
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        def make_conn(self, sock):
            conn = super().make_conn(sock)
            orig = conn._reader

            def held(pending):
                drain.wait(30)
                orig(pending)
            conn._reader = held
            return conn

    with Deaf(script, emulator) as server:
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        conn = server.conns[0]
        go.set()
        host.seen(b'+QSSLURC: "recv",4\r\n', 5)
        sent, results, fails = bytearray(), [], 0
        deadline = time.monotonic() + 12
        chunk_no = 0
        while fails < 2:
            assert time.monotonic() < deadline, f"no SEND FAIL after {len(sent)} bytes"
            chunk = pattern(1460, 1000 + chunk_no)
            chunk_no += 1
            r = host.send_data(4, chunk)
            results.append(r)
            if r == b"\r\nSEND OK\r\n":
                sent += chunk
            else:
                assert r == b"\r\nSEND FAIL\r\n", r
                fails += 1
                assert state(host, 4) == 2
                # the server's data still flow while the send path is full
                got.extend(read_all(host, 4, 50_000 if fails == 1 else len(down) - len(got)))
        assert bytes(got) == down
        assert len(sent) >= 16384 - 1460
        drain.set()
        assert conn.wait_plaintext(len(sent), timeout=10) == bytes(sent)
        wait_for(lambda: host.send_data(4, b"again") == b"\r\nSEND OK\r\n", 5, "SEND OK after the drain")
        assert conn.wait_plaintext(len(sent) + 5)[len(sent):len(sent) + 5] == b"again"
        assert state(host, 4) == 2
        assert host.at("AT+QSSLCLOSE=4,0") == OK
    assert host.at("AT") == OK


def test_transparent_deaf_server_blocks_the_host_while_its_own_data_still_flow(modem, emulator):
    host, advance, port = modem
    down = pattern(200_000, 196)
    go, drain = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(down))
        c.server.stall()

    class Deaf(Server):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

        def make_conn(self, sock):
            conn = super().make_conn(sock)
            orig = conn._reader

            def held(pending):
                drain.wait(30)
                orig(pending)
            conn._reader = held
            return conn

    with Deaf(script, emulator) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        go.set()
        up = pattern(6 << 20, 197)
        written, blocked_since, got = 0, None, bytearray()
        deadline = time.monotonic() + 12
        while True:
            assert time.monotonic() < deadline, (written, len(got))
            try:
                n = os.write(host.ser.fd, up[written:written + 16384])
                written += n
                host.written += n            # (advance() waits until the modem has read them)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
            host._fill()
            got += host.pending
            host.pending.clear()
            if len(got) >= len(down) and blocked_since and time.monotonic() - blocked_since > 1.0:
                break
            assert written < len(up), "the host's writes never blocked"
        assert bytes(got) == down                    # the server's data, while the host is held
        assert written > 256 << 10
        drain.set()
        # the rest of the host's chunk, now that the modem reads again
        assert conn.wait_plaintext(written, timeout=15)[:written] == up[:written]
        time.sleep(0.3)
        assert len(conn.plaintext()) == written
        advance(1.1)
        assert h2.escape(host, advance) == OK
        assert state(host, 5) == 2
        assert host.at("AT+QSSLCLOSE=5,0") == OK
    assert host.at("AT") == OK


class DeafServer(Server):
    """h2's server whose receive window is small and whose reader of the client's records
    waits for `self.drain`: a server that never reads until the test says so."""

    def __init__(self, *a, **kw):
        self.drain = threading.Event()
        super().__init__(*a, **kw)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    def make_conn(self, sock):
        conn = super().make_conn(sock)
        orig = conn._reader

        def held(pending):
            self.drain.wait(30)
            orig(pending)
        conn._reader = held
        return conn


@pytest.mark.parametrize("ending", ["fin", "close_notify_fin"])
def test_deaf_server_half_closes_with_a_full_send_buffer(modem, emulator, caplog, ending):
    """Buffer mode: the host sends until SEND FAIL to a server that never reads; the server
    then half-closes (bare FIN, or close_notify + FIN) and reads only a second later.  Every
    byte answered SEND OK reaches it, in order, then the emulator's FIN (behaviour.md: what
    SEND OK accepted before the FIN reached the modem still leaves first); "closed" once."""
    host, advance, port = modem
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        if ending == "close_notify_fin":
            c.sock.sendall(c.alert(WARNING, 0))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with DeafServer(script, emulator) as server:
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        conn = server.conns[0]
        sent = bytearray()
        deadline = time.monotonic() + 10
        i = 0
        while True:
            assert time.monotonic() < deadline, f"no SEND FAIL after {len(sent)} bytes"
            chunk = pattern(1460, 3000 + 365 * i)
            i += 1
            r = host.send_data(4, chunk)
            if r != b"\r\nSEND OK\r\n":
                assert r == b"\r\nSEND FAIL\r\n", r
                break
            sent += chunk
        go.set()
        host.seen(b'+QSSLURC: "closed",4\r\n', 5)
        assert state(host, 4) == 4
        assert host.send_data(4, b"late") == b"\r\nERROR\r\n"
        time.sleep(1.0)
        server.drain.set()
        wait_for(conn.eof.is_set, 10, "the emulator's FIN")
        got = conn.plaintext()
        assert len(got) == len(sent), (len(got), len(sent))
        assert got == bytes(sent)
        assert host.transcript.count(b'+QSSLURC: "closed",4') == 1
        assert host.at("AT+QSSLCLOSE=4,0") == OK
    assert host.at("AT") == OK


@pytest.mark.parametrize("ending", ["fin", "close_notify_fin"])
def test_transparent_deaf_server_half_closes_while_the_host_is_held(modem, emulator, ending):
    """Transparent mode: the host streams to a server that never reads until the emulator
    stops reading the pty (ssl.online_buffer); the server then half-closes and reads a second
    later.  The host: NO CARRIER alone; the server: a byte-exact prefix of the stream that
    holds at least what the emulator had taken beyond the kernel (more than the online
    buffer), then the emulator's FIN."""
    host, advance, port = modem
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        if ending == "close_notify_fin":
            c.sock.sendall(c.alert(WARNING, 0))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with DeafServer(script, emulator) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        up = pattern(6 << 20, 198)
        written = _stream_until_held(host, up)
        assert host.quiet_for(0.1) == b""
        go.set()
        assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
        time.sleep(1.0)
        server.drain.set()
        wait_for(conn.eof.is_set, 10, "the emulator's FIN")
        got = conn.plaintext()
        assert got == up[:len(got)]
        assert len(got) > 256 << 10, (len(got), written)
        assert host.quiet_for(0.3) == b""
        assert state(host, 5) == 4
        assert host.at("AT+QSSLCLOSE=5,0") == OK
    assert host.at("AT") == OK


# == ML302 (AES128-SHA, test_adversarial_hostile_servers_6's hand-made server) =====================
@pytest.fixture
def ml(ml302_strict):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    return ml302_strict


def test_ml302_held_record_header_and_split_hello_request(ml, emulator):
    """ML302 buffer mode: a CBC record's header alone for a second (AT+QSSLRECV answers no
    data, AT+QSSLSEND reaches the server, no "recv" URC), its body dripped with the last byte
    held; then a HelloRequest cut after 3 bytes and held (no alert yet), then whole glued to
    half a warning user_canceled and the next record: one "recv" per arrival into an empty
    buffer, the bytes once, exactly one no_renegotiation alert."""
    host, advance, port = ml
    a, b = pattern(3000, 199), pattern(700, 200)
    steps = [threading.Event() for _ in range(5)]
    marks = [threading.Event() for _ in range(5)]

    def script(c) -> None:
        c.handshake()
        threading.Thread(target=c.reader, daemon=True).start()
        ra, hr = c.app(a), c.tx.seal(h2.CT_HANDSHAKE, b"\x00\x00\x00\x00")
        wa, rb = c.tx.seal(CT_ALERT, b"\x01\x5a"), c.app(b)
        steps[0].wait(10)
        c.sock.sendall(ra[:5])
        marks[0].set()
        steps[1].wait(10)
        _drip(c.sock, ra[5:-1])
        marks[1].set()
        steps[2].wait(10)
        c.sock.sendall(ra[-1:] + hr[:3])
        marks[2].set()
        steps[3].wait(10)
        c.sock.sendall(hr[3:-1])
        marks[3].set()
        steps[4].wait(10)
        c.sock.sendall(hr[-1:] + wa[:7])
        time.sleep(0.3)
        c.sock.sendall(wa[7:] + rb[:9])
        time.sleep(0.3)
        _drip(c.sock, rb[9:])
        marks[4].set()
        c.eof.wait(30)                   # (the ML302's close waits for the server's end)
        c.sock.close()

    with h10.Hand(emulator, script, suite=h6.RSA_CBC) as server:
        h10.ml_open(host, 1)
        assert h10.ml_answer(host, 1) == 0
        conn = server.conns[0]
        steps[0].set()
        assert marks[0].wait(5)
        time.sleep(1.0)
        assert h10.ml_recv(host, 1) == b""
        assert h10.ml_send(host, 1, b"while the header waits") == b"\r\nSEND OK\r\n"
        h6.wait_for(lambda: bytes(conn.plain) == b"while the header waits", 5, "the host's bytes")
        steps[1].set()
        assert marks[1].wait(10)
        time.sleep(0.5)
        assert h10.ml_recv(host, 1) == b""
        assert b'"recv"' not in bytes(host.transcript)
        steps[2].set()
        assert marks[2].wait(5)
        host.seen(b'+QSSLURC: "recv",1,1\r\n', 5)
        assert h10.ml_read_all(host, 1, len(a)) == a
        assert h10.ml_recv(host, 1) == b""
        steps[3].set()
        assert marks[3].wait(5)
        time.sleep(0.5)
        assert conn.alerts == []
        steps[4].set()
        assert marks[4].wait(10)
        h6.wait_for(lambda: conn.alerts == [NO_RENEGOTIATION], 5, "one no_renegotiation alert")
        host.seen(b'+QSSLURC: "recv",1,1\r\n', 5)
        assert h10.ml_read_all(host, 1, len(b)) == b
        assert h10.ml_recv(host, 1) == b""
        time.sleep(0.2)
        assert conn.alerts == [NO_RENEGOTIATION]
        assert host.transcript.count(b'+QSSLURC: "recv",1,1') == 2
        assert b'"close"' not in bytes(host.transcript)
        h10.ml_close(host, 1)
    assert host.at("AT") == OK


def test_ml302_user_canceled_close_notify_then_records_and_junk(ml, emulator, caplog):
    """ML302 buffer mode: data, warning user_canceled, close_notify, a valid record in the same
    segment, later another record and bare junk, TCP left open: the data once, one "close"
    URC, nothing after the close_notify, the emulator's FIN, no alert of the modem."""
    host, advance, port = ml
    before = pattern(5000, 201)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before) + c.tx.seal(CT_ALERT, b"\x01\x5a") + c.tx.seal(CT_ALERT, b"\x01\x00")
                       + c.app(b"ghost record behind close_notify"))
        time.sleep(0.3)
        try:
            c.sock.sendall(c.app(b"ghost record later") + b"HTTP/1.1 400 ghost junk\r\n\r\n")
        except OSError:
            pass
        c.reader()
        c.server.stall()

    with h10.Hand(emulator, script, suite=h6.RSA_CBC) as server:
        h10.ml_open(host, 2)
        assert h10.ml_answer(host, 2) == 0
        conn = server.conns[0]
        go.set()
        host.seen(b'+QSSLURC: "close",2\r\n', 5)
        assert h10.ml_read_all(host, 2, len(before)) == before
        h6.wait_for(conn.eof.is_set, 5, "the emulator's FIN")
        time.sleep(0.5)
        assert h10.ml_recv(host, 2) == b""
        assert b"ghost" not in bytes(host.transcript)
        assert conn.alerts == [] and conn.plain == b""
        assert host.transcript.count(b'+QSSLURC: "close",2') == 1
        assert host.transcript.count(b'+QSSLURC: "recv",1,2') == 1
        h10.ml_close(host, 2)
    assert host.at("AT") == OK


@pytest.mark.parametrize("mode", [0, 1])
def test_hello_request_answered_behind_a_full_send_backlog(modem, emulator, mode):
    """renegotiation 0, buffer / direct push: the host sends until SEND FAIL to a server that
    never reads; the server then sends data, an encrypted HelloRequest and more data.  The host
    gets both pieces at once (the receive path does not wait for the send path); the modem's
    warning no_renegotiation alert joins its records in sequence order: once the server reads,
    it decrypts every SEND OK byte in order, then the alert (its sequence number after the
    data's), then the host's next send."""
    host, advance, port = modem
    a, b = pattern(2000, 202), pattern(3000, 203)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.hello_request() + c.app(b))
        c.server.stall()

    with DeafServer(script, emulator) as server:
        ssl_open(host, 3, mode=mode)
        assert open_answer(host, 3) == 0
        conn = server.conns[0]
        sent = bytearray()
        deadline = time.monotonic() + 10
        i = 0
        while True:
            assert time.monotonic() < deadline, f"no SEND FAIL after {len(sent)} bytes"
            chunk = pattern(1460, 5000 + 365 * i)
            i += 1
            r = host.send_data(3, chunk)
            if r != b"\r\nSEND OK\r\n":
                assert r == b"\r\nSEND FAIL\r\n", r
                break
            sent += chunk
        go.set()
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",3\r\n', 5)
            assert read_all(host, 3, len(a) + len(b)) == a + b
        else:
            assert _push_read(host, 3, len(a) + len(b)) == a + b
        assert state(host, 3) == 2
        time.sleep(0.3)
        server.drain.set()
        assert conn.wait_plaintext(len(sent)) == bytes(sent)
        wait_for(lambda: host.send_data(3, b"tail") == b"\r\nSEND OK\r\n", 5, "SEND OK after the drain")
        assert conn.wait_plaintext(len(sent) + 4) == bytes(sent) + b"tail"
        kinds = [(ct, p) for ct, p in conn.records if ct == CT_ALERT or ct == CT_APP]
        alert_at = [k for k, (ct, p) in enumerate(kinds) if ct == CT_ALERT]
        assert [kinds[k][1] for k in alert_at] == [NO_RENEGOTIATION]
        assert b"".join(p for ct, p in kinds[:alert_at[0]]) == bytes(sent)   # after every SEND OK byte
        assert not server.failures
        assert state(host, 3) == 2
        assert host.at("AT+QSSLCLOSE=3,0") == OK
    assert host.at("AT") == OK


def _stream_until_held(host, up: bytes, deadline_s: float = 10, got: bytearray | None = None) -> int:
    """Write `up` online into the pty without blocking until the emulator stops reading it
    (the writes blocked for a second); whatever the modem writes meanwhile goes into got."""
    written, blocked_since = 0, None
    deadline = time.monotonic() + deadline_s
    while not (blocked_since and time.monotonic() - blocked_since > 0.5):
        assert time.monotonic() < deadline, written
        try:
            n = os.write(host.ser.fd, up[written:written + 16384])
            written += n
            host.written += n                # (advance() waits until the modem has read them)
            blocked_since = None
        except BlockingIOError:
            blocked_since = blocked_since or time.monotonic()
            time.sleep(0.01)
        if got is not None:
            host._fill()
            got += host.pending
            host.pending.clear()
        assert written < len(up), "the host's writes never blocked"
    return written


@pytest.mark.parametrize("ending", ["none", "rst"])
def test_transparent_hello_request_behind_a_held_online_stream(modem, emulator, ending):
    """Transparent mode, renegotiation 0: the host streams to a server that never reads until
    its writes block; the server then sends data, an encrypted HelloRequest and more data: the
    host reads both pieces while its own writes stay blocked.  ending "none": the server then
    reads -- every byte the host wrote, in order, the no_renegotiation alert among the modem's
    records in sequence (no AEAD failure at the server), "+++" OK, state 2.  ending "rst": the
    server resets instead: the data, then NO CARRIER alone, state 4."""
    host, advance, port = modem
    a, b = pattern(2000, 204), pattern(3000, 205)
    go, reset = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.hello_request() + c.app(b))
        if ending == "rst":
            reset.wait(10)
            c.rst()
            return
        c.server.stall()

    with DeafServer(script, emulator) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        up = pattern(6 << 20, 206)
        written = _stream_until_held(host, up)
        got = bytearray()
        go.set()
        deadline = time.monotonic() + 5
        while len(got) < len(a) + len(b):
            assert time.monotonic() < deadline, len(got)
            host._fill()
            got += host.pending
            host.pending.clear()
        assert bytes(got) == a + b
        assert host.quiet_for(0.3) == b""
        if ending == "rst":
            reset.set()
            assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
            time.sleep(0.3)
            host.write(b"\r")
            host.quiet_for(0.3)
            assert host.at("AT") == OK
            assert state(host, 5) == 4
        else:
            server.drain.set()
            assert conn.wait_plaintext(written, timeout=15)[:written] == up[:written]
            time.sleep(0.3)
            assert len(conn.plaintext()) == written
            assert [p for ct, p in conn.records if ct == CT_ALERT] == [NO_RENEGOTIATION]
            assert not server.failures
            advance(1.1)
            assert h2.escape(host, advance) == OK
            assert state(host, 5) == 2
        assert host.at("AT+QSSLCLOSE=5,0") == OK
    assert host.at("AT") == OK


# == the first record cut in the segment of the server's Finished ===============================
@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("cut", [3, 13])
def test_first_record_cut_in_the_segment_of_the_finished(modem, emulator, mode, cut):
    """The server's CCS + Finished and the first `cut` bytes of a data record (3: inside the
    record header; 13: header + GCM nonce) in one segment, the rest a second later: the open
    is answered at once (+QSSLOPEN: <id>,0 / CONNECT), nothing else while the record is cut
    (no "recv", no empty push, no byte), then the data once; the host's data reach the
    server."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    a = pattern(1200, 207)
    released = threading.Event()
    got: list = []

    def glue(n, c, data):
        if n == 1:
            rec = c.tx.seal(CT_APP, a)
            c.rest = rec[cut:]
            return data + rec[:cut]
        return data

    def script(c) -> None:
        c.handshake()
        threading.Thread(target=h10.client_records, args=(c, got), daemon=True).start()
        released.wait(10)
        c.sock.sendall(c.rest)
        c.server.stall()

    with h10.Hand(emulator, script, glue=glue):
        t0 = time.monotonic()
        if mode == 2:
            assert host.at(f'AT+QSSLOPEN=1,1,6,"{h10.NAME}",443,2') == b"\r\nCONNECT\r\n"
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,6,"{h10.NAME}",443,{mode}') == OK
            assert open_answer(host, 6) == 0
        assert time.monotonic() - t0 < 3
        assert host.quiet_for(1.0) == b""
        released.set()
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",6\r\n', 5)
            assert read_all(host, 6, len(a)) == a
            assert recv(host, 6) == b""
            assert host.send_data(6, b"up") == b"\r\nSEND OK\r\n"
        elif mode == 1:
            assert _push_read(host, 6, len(a)) == a
            assert host.send_data(6, b"up") == b"\r\nSEND OK\r\n"
        else:
            assert host.read_exactly(len(a), timeout=5) == a
            host.write(b"up")
        h6.wait_for(lambda: b"".join(p for ct, p in got if ct == CT_APP) == b"up", 5, "the host's bytes")
        assert host.quiet_for(0.3) == b""
        if mode == 2:
            advance(1.1)
            assert h2.escape(host, advance) == OK
        assert state(host, 6) == 2
        assert host.at("AT+QSSLCLOSE=6,0") == OK
        assert not [p for ct, p in got if ct == CT_ALERT][:-1]     # at most the close's close_notify
    assert host.at("AT") == OK


@pytest.mark.parametrize("outcome", ["server_drains", "linger_runs_out"])
def test_dtr_drop_under_andd2_with_a_held_online_stream(modem, emulator, outcome):
    """AT&D2, transparent mode, a server that never reads, the host's writes held by flow
    control; then a DTR drop (the control op): the connection is closed as AT+QSSLCLOSE with its
    default <timeout> 10 s (behaviour.md, transparent access mode): NO CARRIER; a server that
    then reads gets a byte-exact prefix of the stream, the modem's close_notify, then its FIN;
    a server that never reads is aborted (RST) when the 10 modem seconds run out -- never a FIN
    behind half a TLS record."""
    host, advance, port = modem
    assert host.at("AT&D2") == OK

    def script(c) -> None:
        c.handshake()
        c.server.stall()

    with DeafServer(script, emulator) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,7,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        up = pattern(6 << 20, 208)
        written = _stream_until_held(host, up)
        assert emulator.control("dtr", level=0)["ok"]
        if outcome == "server_drains":
            time.sleep(0.3)
            server.drain.set()
            wait_for(conn.eof.is_set, 15, "the emulator's FIN")
            got = conn.plaintext()
            assert got == up[:len(got)] and len(got) > 256 << 10, (len(got), written)
            assert conn.records[-1] == (CT_ALERT, b"\x01\x00")      # close_notify, last
            assert not server.failures
            assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
        else:
            time.sleep(0.5)
            advance(10.5)
            assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
            conn.sock.settimeout(5)
            end = None
            try:
                while conn.sock.recv(65536):
                    pass
                end = "fin"
            except ConnectionResetError:
                end = "rst"
            assert end == "rst"
        assert emulator.control("dtr", level=1)["ok"]
        host.write(b"\r")
        host.quiet_for(0.5)
        assert host.at("AT") == OK
        assert host.at("AT+QSSLSTATE=7") == OK                 # the socket is freed
    assert host.at("AT") == OK


# == DTLS: a flood of empty application records =================================================
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_dtls_empty_application_records_each_in_its_own_datagram(modem, emulator, pki, tmp_path, mode):
    """`openssl s_server -dtls1_2` behind a UdpMiddlebox; after a line of data, 50 empty
    application records (sealed under the server's epoch-1 keys), one per datagram, then a
    record of data.  Mbed TLS counts empty records in a row (nb_zero, a fourth is "invalid
    MAC"), and over DTLS an invalid record is discarded with its datagram, never fatal: the
    socket stays up, the host gets exactly the two data pieces, nothing for the empty records
    (no "recv" URC, no empty push), and the host's data still reach the server."""
    from tests.e2e import test_adversarial_hostile_servers_12 as h12
    host, advance, port = modem
    server, box, sealer = h12._dtls_session(host, emulator, pki, tmp_path, 4, mode)
    try:
        first, last = b"first line\n", pattern(900, 209)
        box.inject(sealer.seal(CT_APP, first))
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",4\r\n', 10)
            assert read_all(host, 4, len(first)) == first
            assert recv(host, 4) == b""
        elif mode == 1:
            assert _push_read(host, 4, len(first)) == first
        else:
            assert host.read_exactly(len(first), timeout=10) == first
        for _ in range(50):
            box.inject(sealer.seal(CT_APP, b""))
        assert host.quiet_for(0.5) == b""
        box.inject(sealer.seal(CT_APP, last))
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",4\r\n', 10)
            assert read_all(host, 4, len(last)) == last
            assert recv(host, 4) == b""
            assert host.transcript.count(b'+QSSLURC: "recv",4') == 2
            assert host.send_data(4, b"still up\n") == b"\r\nSEND OK\r\n"
        elif mode == 1:
            assert _push_read(host, 4, len(last)) == last
            assert host.send_data(4, b"still up\n") == b"\r\nSEND OK\r\n"
        else:
            assert host.read_exactly(len(last), timeout=10) == last
            host.write(b"still up\n")
        server.wait_for_output(rb"still up", 10)
        assert host.quiet_for(0.2) == b""
        if mode == 2:
            advance(1.1)
            assert h2.escape(host, advance) == OK
        assert b"closed" not in bytes(host.transcript)
        assert state(host, 4) == 2
        assert host.at("AT+QSSLCLOSE=4,0") == OK
    finally:
        box.__exit__(None, None, None)
        server.stop()


def test_ml302_transparent_deaf_server_holds_the_host_while_its_data_flow(ml, emulator):
    """ML302 connectmode 1 (AES128-SHA): the host streams to a server that does not read until
    the host's writes block (flow control); the server's 100 KB meanwhile reach the host
    exactly; once it reads, every byte the host wrote, in order; "+++" OK, the ssid still
    CONNECTED, the close answered."""
    host, advance, port = ml
    down = pattern(100_000, 210)
    go, drain = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(down))
        drain.wait(30)
        c.reader()
        c.sock.close()

    class Deaf(h10.Hand):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    with Deaf(emulator, script, suite=h6.RSA_CBC) as server:
        host.write(f'AT+QSSLOPEN=4,0,"{h10.NAME}",443,1\r'.encode())
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        conn = server.conns[0]
        up = pattern(6 << 20, 211)
        written = _stream_until_held(host, up)
        go.set()
        assert host.read_exactly(len(down), timeout=10) == down
        assert host.quiet_for(0.2) == b""
        drain.set()
        h6.wait_for(lambda: len(conn.plain) >= written, 15, "the host's stream at the server")
        time.sleep(0.3)
        assert bytes(conn.plain) == up[:written]
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(b"\r\n", timeout=3) + host.quiet_for(0.3) == OK
        assert h10.ml_state(host, 4) == "CONNECTED"
        assert conn.alerts == []
        h10.ml_close(host, 4)
    assert host.at("AT") == OK


def _ml_send(host, ssid: int, data: bytes) -> bytes:
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data + b"\x1a")
    return host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"))


def test_ml302_send_fail_to_a_deaf_server_and_only_send_ok_bytes_arrive(ml, emulator):
    """ML302 buffer mode: AT+QSSLSEND (Ctrl+Z) to a server that never reads: SEND OK until the
    send buffer is full, then the manual's "SEND FAIL"; the ssid stays CONNECTED; once the
    server reads it gets exactly the SEND OK bytes, in order, and the next send is SEND OK."""
    host, advance, port = ml
    drain = threading.Event()

    def script(c) -> None:
        c.handshake()
        drain.wait(30)
        c.reader()
        c.sock.close()

    class Deaf(h10.Hand):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)

    with Deaf(emulator, script, suite=h6.RSA_CBC) as server:
        h10.ml_open(host, 1)
        assert h10.ml_answer(host, 1) == 0
        conn = server.conns[0]
        sent, i = bytearray(), 0
        deadline = time.monotonic() + 12
        while True:
            assert time.monotonic() < deadline, f"no SEND FAIL after {len(sent)} bytes"
            chunk = bytes(0x41 + (i * 7 + k) % 26 for k in range(1460))
            i += 1
            r = _ml_send(host, 1, chunk)
            if r != b"\r\nSEND OK\r\n":
                assert r == b"\r\nSEND FAIL\r\n", r
                break
            sent += chunk
        assert h10.ml_state(host, 1) == "CONNECTED"
        assert b"+QSSLURC" not in bytes(host.transcript)
        drain.set()
        h6.wait_for(lambda: len(conn.plain) >= len(sent), 15, "the SEND OK bytes")
        time.sleep(0.3)
        assert bytes(conn.plain) == bytes(sent)
        h6.wait_for(lambda: _ml_send(host, 1, b"again") == b"\r\nSEND OK\r\n", 5, "SEND OK after the drain")
        h6.wait_for(lambda: bytes(conn.plain).endswith(b"again"), 5, "the last send")
        assert bytes(conn.plain) == bytes(sent) + b"again"
        h10.ml_close(host, 1)
    assert host.at("AT") == OK
