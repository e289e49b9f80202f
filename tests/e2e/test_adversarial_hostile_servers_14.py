"""Hostile servers, fourteenth round: what rounds 1-13 (test_adversarial_hostile_servers*.py)
do not do.

Peers: test_adversarial_hostile_servers_2's server (OpenSSL over memory BIOs for the handshake,
the server's records sealed by the test under the session's keys, the modem's decrypted);
test_adversarial_hostile_servers_6 / _10's hand-made TLS 1.2 server (RSA, AES-128-GCM / CBC,
RFC 5077 tickets) with its NewSessionTicket or its Finished's record reshaped; `openssl
s_server -tls1_2 -msg -msgfile` renegotiating for real ("r").  Covered (EC2x unless said):

* several HelloRequests packed in ONE handshake record (legal), renegotiation 0: one warning
  no_renegotiation alert per request, the data around them once, in order (buffer, direct
  push; ML302 buffer; ML302 transparent among 3000 one-byte records, empty records and
  warning alerts, ended by close_notify: the bytes, NO CARRIER, REMOTE CLOSING);
* renegotiation 1, two HelloRequests in one record: Mbed TLS 2.28 takes the second for a bad
  ServerHello (decode_error, "closed" once; RFC 5246 7.4.1.1 would ignore it) -- the same
  happens when `s_server` is told "r" twice before the modem answered; the log's reason
  named a ServerHello the server never sent (a bug, fixed since);
* a HelloRequest cut across two handshake records: the data before kept, one "closed";
* a HelloRequest in the very record of the server's Finished (renegotiation 0 and 1, each
  access mode): one open answer, the data behind it at once, the alert / ClientHello;
* 100 x (three empty records + a HelloRequest): no guard trips, 100 alerts;
* close_notify at FATAL level vs warning level: the next open resumes after the warning only;
* 100 KB then a record cut in its middle by a FIN or an RST, each access mode: exactly the
  whole records, one end report; half a record then the end after the host drained
  everything (buffer, push): "closed" alone, no "recv" URC or empty push;
* renegotiation 1 with a stalled renegotiation: close_notify (TCP left open) behind data
  records, each access mode; warning alerts among data records (not counted by Mbed TLS);
  the host streaming online (nothing sealed under the old keys), "+++" and close working;
* completed renegotiations (`s_server` "r"): five while the host streams 300 KB online
  (every byte at the server in order), server lines around them (push, transparent), a
  re-open after one (tickets / session ids: resumed), a resumed session renegotiated at
  seclevel 1 (the same leaf: kept up; the next open resumed), "R" (a CertificateRequest in
  the renegotiation): seclevel 2 sends its certificate and CertificateVerify, seclevel 0 an
  empty Certificate, the session up;
* RFC 5077 tickets of odd sizes (1 .. 16000 bytes) and lifetime hints (0, 1, 2^32-1): each
  ClientHello offers exactly the newest ticket and resumes (session_cache 0: none offered,
  none resumed); malformed NewSessionTickets (length
  field +-1, a 5-byte body, cut across two records): 566 once, nothing kept, a full handshake
  next.

Checked each time: exact bytes on the pty, one answer per open, one end report, no ERROR log
record or traceback (ec2x_strict / ml302_strict), AT answering afterwards.
"""
from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest

from tests.e2e import test_adversarial_hostile_servers_2 as h2
from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e import test_adversarial_hostile_servers_10 as h10
from tests.e2e.hostile_support import open_answer, recv

Server, Conn, pattern = h2.Server, h2.Conn, h2.pattern
NAME, CT_APP, CT_ALERT, CT_HANDSHAKE = h2.NAME, h2.CT_APP, h2.CT_ALERT, h2.CT_HANDSHAKE
ssl_open, read_all, state = h2.ssl_open, h2.read_all, h2.state
OK = b"\r\nOK\r\n"
HELLO_REQUEST = b"\x00\x00\x00\x00"
NO_RENEGOTIATION = b"\x01\x64"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def read_pushed(host, cid: int, size: int, timeout: float = 10) -> bytes:
    urc = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % cid)
    data = bytearray()
    while len(data) < size:
        line = host.read_until(urc, timeout=timeout)
        m = urc.fullmatch(line)
        assert m, line[:120]
        n = int(m.group(1))
        assert 0 < n <= 1500, n
        data += host.read_exactly(n, timeout=timeout)
        assert host.read_exactly(2, timeout=timeout) == b"\r\n"
    return bytes(data)


def client_hellos(conn: Conn) -> list[bytes]:
    return [p for ct, p in conn.records if ct == CT_HANDSHAKE and p[:1] == b"\x01"]


# == several HelloRequests in one handshake record ================================================
@pytest.mark.parametrize("count", [2, 5])
def test_hello_requests_packed_in_one_record_are_refused_one_by_one(modem, emulator, count):
    """renegotiation 0: data, ONE handshake record carrying `count` HelloRequests, data.  Mbed
    TLS reads the messages of a record one by one: one warning no_renegotiation(100) per
    request, the data once and in order, the session up, a send reaching the server."""
    host, advance, port = modem
    a, b = pattern(3000, 1), pattern(2000, 2)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.seal(CT_HANDSHAKE, HELLO_REQUEST * count) + c.app(b))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        go.set()
        host.seen(b'+QSSLURC: "recv",3\r\n')
        assert read_all(host, 3, len(a) + len(b), sizes=(1500, 7)) == a + b
        conn = server.conns[0]
        with conn.changed:
            conn.changed.wait_for(lambda: len(conn.alerts()) >= count, 5)
        time.sleep(0.2)
        assert conn.alerts() == [NO_RENEGOTIATION] * count
        assert client_hellos(conn) == []
        assert state(host, 3) == 2
        assert b"closed" not in bytes(host.transcript)
        assert host.send_data(3, b"still here") == b"\r\nSEND OK\r\n"
        assert conn.wait_plaintext(10) == b"still here"
        assert host.at("AT+QSSLCLOSE=3,0") == OK
    assert host.at("AT") == OK


def test_hello_requests_packed_in_one_record_direct_push(modem, emulator):
    """Direct push: 1-byte records, one record of three HelloRequests, an empty record, a
    4000-byte record: every push framed, the bytes once and in order, three alerts."""
    host, advance, port = modem
    small = pattern(40, 5)
    big = pattern(4000, 6)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        wire = b"".join(c.seal(CT_APP, small[i:i + 1]) for i in range(len(small)))
        wire += c.seal(CT_HANDSHAKE, HELLO_REQUEST * 3) + c.seal(CT_APP, b"") + c.app(big)
        c.sock.sendall(wire)
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 1, mode=1)
        assert open_answer(host, 1) == 0
        go.set()
        assert read_pushed(host, 1, len(small) + len(big)) == small + big
        assert host.quiet_for(0.3) == b""
        conn = server.conns[0]
        assert conn.alerts() == [NO_RENEGOTIATION] * 3
        assert state(host, 1) == 2
        assert host.at("AT+QSSLCLOSE=1,0") == OK


def _two_hello_requests_renegotiation_1(host, emulator):
    """Run the scene; returns (server conn, the data the host could read)."""
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    a, b = pattern(1000, 8), pattern(900, 9)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.seal(CT_HANDSHAKE, HELLO_REQUEST * 2) + c.app(b))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        go.set()
        host.seen(b'+QSSLURC: "closed",2\r\n', timeout=5)
        got = read_all(host, 2, len(a), timeout=5)
        assert recv(host, 2) == b""
        conn = server.conns[0]
        assert conn.eof.wait(5), "the emulator did not close its side"
        assert host.at("AT+QSSLCLOSE=2,0").endswith(OK)
    return conn, a, got


def test_two_hello_requests_in_one_record_with_renegotiation_1(modem, emulator):
    """renegotiation 1: ONE record with two HelloRequests, then a data record.  The first
    starts a renegotiation (the modem's ClientHello, encrypted); the second arrives where Mbed
    TLS 2.28 wants the ServerHello -- it does not ignore it (RFC 5246 7.4.1.1 says a client
    negotiating ignores a HelloRequest) but fails the handshake (BAD_HS_SERVER_HELLO, a fatal
    decode_error alert), as an Mbed TLS based module does: one ClientHello, the modem's one
    alert, the data before the requests readable once, one "closed", state 4."""
    host, advance, port = modem
    conn, a, got = _two_hello_requests_renegotiation_1(host, emulator)
    assert got == a
    assert len(client_hellos(conn)) == 1
    assert conn.alerts() == [b"\x02\x32"]
    assert bytes(host.transcript).count(b'+QSSLURC: "closed",2') == 1
    assert host.at("AT") == OK


def test_two_hello_requests_with_renegotiation_1_log_names_the_hello_request(modem, emulator, caplog):
    """The same scene: the logged reason must not claim the server chose a suite, version or
    extension -- it sent a HelloRequest where the ServerHello was due."""
    host, advance, port = modem
    _two_hello_requests_renegotiation_1(host, emulator)
    text = "\n".join(r.getMessage() for r in caplog.records if "TLS failure" in r.getMessage())
    assert text, "no failure logged"
    assert "chosen" not in text and "HelloRequest" in text, text


def test_hello_request_cut_across_two_records_ends_the_session(modem, emulator):
    """A HelloRequest's 4 bytes in two handshake records (2 + 2): Mbed TLS 2.28 does not
    reassemble TLS handshake messages (a 2-byte handshake record is too short): the data
    before it readable once, one "closed", state 4, nothing of the data behind it."""
    host, advance, port = modem
    a = pattern(1234, 10)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.seal(CT_HANDSHAKE, b"\x00\x00") + c.seal(CT_HANDSHAKE, b"\x00\x00")
                       + c.app(b"never"))
        c.server.stall()

    with Server(script, emulator):
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        go.set()
        host.seen(b'+QSSLURC: "closed",4\r\n', timeout=5)
        assert read_all(host, 4, len(a), timeout=5) == a
        assert recv(host, 4) == b""
        assert bytes(host.transcript).count(b'+QSSLURC: "closed",4') == 1
        assert state(host, 4) == 4
        assert host.at("AT+QSSLCLOSE=4,0").endswith(OK)
    assert host.at("AT") == OK


# == close_notify at fatal level: the session must not be resumed =================================
@pytest.mark.parametrize("level", [1, 2], ids=["warning", "fatal"])
def test_close_notify_level_decides_whether_the_session_is_resumed(modem, emulator, level):
    """Data then close_notify (level 1 or 2) then FIN; the next open to the same server
    (session_cache 1, session ids): resumed after a warning close_notify; after a FATAL one
    (RFC 5246 7.2.2: "the session identifier MUST be invalidated") a full handshake."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="session_cache",1,1') == OK
    a = pattern(700, 11)

    def script(c: Conn) -> None:
        c.handshake()
        if len(c.server.conns) == 1:
            c.sock.sendall(c.app(a) + c.alert(level, 0))
            c.sock.shutdown(socket.SHUT_WR)
        else:
            got = c.wait_plaintext(4)
            c.sock.sendall(c.app(got[:4]))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 5)
        assert open_answer(host, 5) == 0
        host.seen(b'+QSSLURC: "closed",5\r\n', timeout=5)
        assert read_all(host, 5, len(a)) == a
        assert host.at("AT+QSSLCLOSE=5,0").endswith(OK)
        assert server.conns[0].tls.session_reused is False
        ssl_open(host, 5)
        assert open_answer(host, 5) == 0
        assert host.send_data(5, b"ping") == b"\r\nSEND OK\r\n"
        assert read_all(host, 5, 4) == b"ping"
        assert host.at("AT+QSSLCLOSE=5,0").endswith(OK)
        second = server.conns[1]
        assert second.tls.session_reused is (level == 1)


# == a record cut by the server's end, each access mode ============================================
@pytest.mark.parametrize("end", ["fin", "rst"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_download_cut_in_the_middle_of_a_record(modem, emulator, mode, end):
    """100 KB in whole 4000-byte records, then the first half of a 1000-byte record and a FIN
    (no close_notify) or an RST: exactly the whole records' bytes, nothing of the cut record,
    then one end report ("closed" / NO CARRIER); state 4; AT answers."""
    host, advance, port = modem
    data = pattern(100_000, 12)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        wire = c.app(data, size=4000)
        cut = c.app(b"X" * 1000)
        c.sock.sendall(wire + cut[:len(cut) // 2])
        time.sleep(0.3)
        if end == "fin":
            c.sock.shutdown(socket.SHUT_WR)
        else:
            c.rst()
        c.server.stall()

    with Server(script, emulator):
        if mode == 2:
            host.write(f'AT+QSSLOPEN=1,1,6,"{NAME}",443,2\r'.encode())
            assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
            go.set()
            assert host.read_exactly(len(data), timeout=15) == data
            assert host.read_until(b"NO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        elif mode == 1:
            ssl_open(host, 6, mode=1)
            assert open_answer(host, 6) == 0
            go.set()
            assert read_pushed(host, 6, len(data), timeout=15) == data
            assert host.read_until(b'+QSSLURC: "closed",6\r\n') == b'\r\n+QSSLURC: "closed",6\r\n'
        else:
            ssl_open(host, 6)
            assert open_answer(host, 6) == 0
            go.set()
            assert read_all(host, 6, len(data)) == data       # (past the receive buffer:
            host.seen(b'+QSSLURC: "closed",6\r\n', timeout=10)  # the end seen as it drains)
            assert recv(host, 6) == b""
        assert host.quiet_for(0.2) == b""
        assert bytes(host.transcript).count(b'"closed",6') == (0 if mode == 2 else 1)
        assert state(host, 6) == 4
        assert host.at("AT+QSSLCLOSE=6") == OK
    assert host.at("AT") == OK


# == RFC 5077 tickets of odd sizes and lifetimes ===================================================
class TicketConn(h6.Conn):
    def _ticket(self, issue: bool, master: bytes, suite: int) -> bytes:
        if not issue:
            return b""
        size, lifetime = self.server.shapes[len(self.server.issued) % len(self.server.shapes)]
        ticket = os.urandom(size)
        self.server.tickets[ticket] = (master, suite)
        self.server.issued.append(ticket)
        msg = h6.hs(4, struct.pack(">IH", lifetime, len(ticket)) + ticket)
        self.transcript.append(msg)
        return h6.record(CT_HANDSHAKE, msg)


class TicketServer(h6.HandServer):
    def __init__(self, emulator, shapes) -> None:
        self.shapes = shapes
        self.issued: list[bytes] = []
        super().__init__(emulator, tickets=True)

    def make_conn(self, sock: socket.socket) -> TicketConn:
        return TicketConn(self, sock)


SHAPES = [(1, 300), (2, 0), (255, 0xFFFFFFFF), (256, 1), (257, 300), (1000, 0), (8191, 7200), (16000, 300)]


def test_tickets_of_odd_sizes_and_lifetimes_each_resumed(modem, emulator):
    """Each handshake (full or resumed) issues a ticket of the next odd size / lifetime hint:
    every later ClientHello offers exactly the newest ticket, byte for byte, and resumes; each
    open carries data."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    with TicketServer(emulator, SHAPES) as server:
        for i in range(len(SHAPES) + 1):
            h6.ssl_open(host, 0)
            assert open_answer(host, 0) == 0, i
            h6.round_trip_and_close(host, 0, b"round %d" % i)
            h6.wait_for(lambda: len(server.hellos) == i + 1, 5, "the ClientHello")
            hello = server.hellos[i]
            if i:
                assert hello.ticket == server.issued[i - 1], (i, SHAPES[i - 1])
                assert server.conns[i].resumed, (i, SHAPES[i - 1])
            else:
                assert hello.ticket is None
    assert host.at("AT") == OK


# == renegotiation 1: what comes while the modem waits for the ServerHello =========================
def _asked(c: Conn) -> None:
    """Wait for the modem's renegotiating ClientHello (under the old keys)."""
    with c.changed:
        assert c.changed.wait_for(lambda: client_hellos(c), 10), c.records


@pytest.mark.needs_native
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_close_notify_while_the_modem_waits_for_the_renegotiation(modem, emulator, mode):
    """renegotiation 1: data, a HelloRequest; once the modem's ClientHello is in, data records
    (still under the old keys: fewer than Mbed TLS's 16), then close_notify with the TCP
    connection LEFT OPEN.  Every byte once, in order, then one end report ("closed" / NO
    CARRIER), state 4, and the emulator ends the TCP connection itself."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    a, b = pattern(1500, 20), pattern(3000, 21)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(a) + c.hello_request())
        _asked(c)
        c.sock.sendall(c.app(b, size=1000) + c.alert(1, 0))
        c.server.stall()

    with Server(script, emulator) as server:
        if mode == 2:
            host.write(f'AT+QSSLOPEN=1,1,7,"{NAME}",443,2\r'.encode())
            assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
            go.set()
            assert host.read_exactly(len(a + b), timeout=10) == a + b
            assert host.read_until(b"NO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        else:
            ssl_open(host, 7, mode=mode)
            assert open_answer(host, 7) == 0
            go.set()
            if mode == 1:
                assert read_pushed(host, 7, len(a + b)) == a + b
                assert host.read_until(b'+QSSLURC: "closed",7\r\n') == b'\r\n+QSSLURC: "closed",7\r\n'
            else:
                host.seen(b'+QSSLURC: "closed",7\r\n', timeout=10)
                assert read_all(host, 7, len(a + b), sizes=(1500, 3)) == a + b
                assert recv(host, 7) == b""
        assert host.quiet_for(0.2) == b""
        conn = server.conns[0]
        assert conn.eof.wait(5), "the emulator did not end the TCP connection"
        assert len(client_hellos(conn)) == 1
        assert state(host, 7) == 4
        assert host.at("AT+QSSLCLOSE=7,0") == OK
        assert bytes(host.transcript).count(b'"closed",7') == (0 if mode == 2 else 1)
    assert host.at("AT") == OK


@pytest.mark.needs_native
def test_warning_alerts_and_data_while_the_modem_waits_for_the_renegotiation(modem, emulator):
    """renegotiation 1: a HelloRequest; behind the modem's ClientHello 60 warning alerts
    (user_canceled) and empty-free data records interleaved -- ten data records, fewer than
    Mbed TLS's renego_max_records (16); warning alerts are not records it counts.  Every byte
    once, in order, no "closed", the modem sends no alert, the socket connected."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    pieces = [pattern(700 + i, 30 + i) for i in range(10)]
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.hello_request())
        _asked(c)
        c.sock.sendall(b"".join(b"".join(c.alert(1, 90) for _ in range(6)) + c.app(p) for p in pieces))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        go.set()
        host.seen(b'+QSSLURC: "recv",8\r\n', timeout=10)
        want = b"".join(pieces)
        try:
            assert read_all(host, 8, len(want), sizes=(1500, 11), timeout=10) == want
            time.sleep(0.2)
            assert b"closed" not in bytes(host.transcript)
            conn = server.conns[0]
            assert conn.alerts() == []
            assert len(client_hellos(conn)) == 1
            assert state(host, 8) == 2
        finally:
            assert host.at("AT+QSSLCLOSE=8,0").endswith(OK)
    assert host.at("AT") == OK


@pytest.mark.needs_native
def test_transparent_host_stream_during_a_stalled_renegotiation_then_escape(modem, emulator):
    """renegotiation 1, access mode 2: the server's HelloRequest, the modem's ClientHello, then
    the server says nothing.  The host writes 12 KB online: none of it may leave under the
    old keys (Mbed TLS's write drives the pending handshake).  "+++" with its guard times: OK,
    no "+" sent; AT answers; AT+QSSLSTATE 2; AT+QSSLCLOSE OK and the server sees no
    application byte at all, only the close."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    data = pattern(12_000, 40)
    asked = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.hello_request())
        _asked(c)
        asked.set()
        c.server.stall()

    with Server(script, emulator) as server:
        host.write(f'AT+QSSLOPEN=1,1,9,"{NAME}",443,2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
        assert asked.wait(10)
        for i in range(0, len(data), 1000):
            host.write(data[i:i + 1000])
        time.sleep(0.3)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        assert host.at("AT") == OK
        assert state(host, 9) == 2
        conn = server.conns[0]
        assert conn.plaintext() == b""
        assert host.at("AT+QSSLCLOSE=9,0") == OK
        time.sleep(0.2)
        assert conn.plaintext() == b""
        assert all(ct != CT_APP for ct, _ in conn.records)
    assert host.at("AT") == OK


# == renegotiation 1: real renegotiations while the host streams online ============================
S_SERVER_NOISE = re.compile(rb"SSL_renegotiate -> \d+\r?\n|SSL_do_handshake -> \d+\r?\n|read R BLOCK\r?\n|Read BLOCK\r?\n|Write BLOCK\r?\n")


def _lines(n: int) -> bytes:
    return b"".join(b"%09d\n" % i for i in range(n))


def _client_finished_count(path: str) -> int:
    try:
        text = open(path, "rb").read()
    except OSError:
        return 0
    return len(re.findall(rb"<<< TLS 1\.2, Handshake \[length [0-9a-f]+\], Finished", text))


@pytest.mark.needs_native
def test_server_renegotiates_repeatedly_while_the_host_streams_online(modem, emulator, pki, tmp_path):
    """renegotiation 1, access mode 2, `openssl s_server -tls1_2`: the host streams 300 KB
    online (numbered lines) while the server renegotiates five times ("r"), each waited for
    until the modem's new Finished is in (s_server -msg), before the host writes on.  Records
    sealed before a renegotiation leave before its ClientHello, those after under the new
    keys: s_server gets every byte once, in order, the host never sees NO CARRIER; a last
    server line reaches the host; escape, AT+QSSLSTATE 2, close.
    (A second "r" before the modem answered the first puts two HelloRequests on the wire;
    Mbed TLS 2.28 takes the second for a bad ServerHello -- see
    test_two_hello_requests_in_one_record_with_renegotiation_1.)"""
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    data = _lines(30_000)
    cert, key = pki.server.load_args
    msgs = str(tmp_path / "msg.txt")
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-msg", "-msgfile", msgs]) as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.port)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
        assert host.at(f'AT+QSSLOPEN=1,1,6,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        server.wait_for_output(rb"CIPHER is")
        start = server.mark()
        chunk = 4000
        done = 0
        for i in range(0, len(data), chunk):
            host.write(data[i:i + chunk])
            if i // chunk % 15 == 7 and done < 5:
                before = _client_finished_count(msgs)
                server.write(b"r\n")
                h2.wait_for(lambda: _client_finished_count(msgs) > before, 10, "the renegotiation's end")
                done += 1
        assert done == 5
        server.wait_for_output(rb"%09d\n" % 29_999, 15, since=start)
        said = S_SERVER_NOISE.sub(b"", server.stdout[start:])
        assert said == data, (len(said), len(data), set(re.findall(rb"[^0-9\n][^\n]*\n", said)))
        server.write(b"the end\n")
        assert host.read_exactly(8, timeout=5) == b"the end\n"
        assert b"NO CARRIER" not in bytes(host.transcript)
        assert h2_escape(host, advance) == OK
        assert state(host, 6) == 2
        assert host.at("AT+QSSLCLOSE=6,0") == OK
    assert host.at("AT") == OK


def h2_escape(host, advance) -> bytes:
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    return host.read_until(re.compile(rb"\r\n(OK|ERROR|NO CARRIER)\r\n"))


# == a NewSessionTicket Mbed TLS cannot take =======================================================
class BadTicketConn(h6.Conn):
    def _ticket(self, issue: bool, master: bytes, suite: int) -> bytes:
        if not issue:
            return b""
        ticket = os.urandom(100)
        kind = self.server.kinds.pop(0) if self.server.kinds else "good"
        self.server.tickets[ticket] = (master, suite)
        body = struct.pack(">IH", 300, len(ticket)) + ticket
        if kind == "length_plus_one":
            body = struct.pack(">IH", 300, len(ticket) + 1) + ticket
        elif kind == "length_minus_one":
            body = struct.pack(">IH", 300, len(ticket) - 1) + ticket
        elif kind == "five_bytes":
            body = body[:5]
        msg = h6.hs(4, body)
        self.transcript.append(msg)
        if kind == "split":
            return h6.record(CT_HANDSHAKE, msg[:10]) + h6.record(CT_HANDSHAKE, msg[10:])
        return h6.record(CT_HANDSHAKE, msg)


class BadTicketServer(h6.HandServer):
    def __init__(self, emulator, kinds) -> None:
        self.kinds = list(kinds)
        super().__init__(emulator, script=self._script, tickets=True)

    @staticmethod
    def _script(c) -> None:
        try:
            c.handshake()
        except (OSError, EOFError):
            return
        c.reader() if c.server.kinds_done() else c.echo()

    def kinds_done(self) -> bool:
        return len(self.conns) == 1

    def make_conn(self, sock: socket.socket) -> BadTicketConn:
        return BadTicketConn(self, sock)


@pytest.mark.parametrize("kind", ["length_plus_one", "length_minus_one", "five_bytes", "split"])
def test_new_session_ticket_mbedtls_cannot_take(modem, emulator, kind):
    """A full handshake whose NewSessionTicket is malformed (ticket length one more / one less
    than the message carries, a 5-byte body) or cut across two handshake records (Mbed TLS
    2.28: no TLS handshake reassembly): the open fails once with 566 (QIGETERROR 566) after the
    modem's own Finished went out; no ticket kept -- the next open offers none, is a full
    handshake and carries data; the modem sent no application byte to the failed server."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    with BadTicketServer(emulator, [kind]) as server:
        mark = len(host.transcript)
        h6.ssl_open(host, 3)
        assert open_answer(host, 3) == 566
        assert h6.qigeterror(host) == 566
        assert host.quiet_for(0.3) == b""
        assert h6.open_count(host, 3, mark) == 1
        first = server.conns[0]
        assert first.eof.wait(5)
        assert first.plain == b""
        if kind != "split":
            assert first.alerts == [b"\x02\x32"], first.alerts          # decode_error
        h6.ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        h6.round_trip_and_close(host, 3, b"after the bad ticket")
        assert server.hellos[1].ticket is None
        assert not server.conns[1].resumed
    assert host.at("AT") == OK


# == ML302: HelloRequests packed in one record ====================================================
@pytest.fixture
def ml(ml302_strict):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    return ml302_strict


def test_ml302_hello_requests_packed_in_one_record_are_refused_one_by_one(ml, emulator):
    """ML302 (AES128-SHA, no renegotiation option: refused): data, ONE handshake record with
    three HelloRequests (CBC, under the session's keys), data, in one segment: three warning
    no_renegotiation alerts, both pieces read once and in order, the ssid connected, the host's
    send reaching the server."""
    host, advance, port = ml
    a, b = pattern(2000, 50), pattern(1500, 51)
    sent = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(c.app(a) + c.tx.seal(CT_HANDSHAKE, HELLO_REQUEST * 3) + c.app(b))
        sent.set()
        c.reader()                   # (until the modem's close_notify and FIN)
        c.sock.close()               # (the ML302's close waits for the server's end)

    with h10.Hand(emulator, script, suite=h6.RSA_CBC) as server:
        h10.ml_open(host, 1)
        assert h10.ml_answer(host, 1) == 0
        assert sent.wait(5)
        assert h10.ml_read_all(host, 1, len(a) + len(b)) == a + b
        conn = server.conns[0]
        h6.wait_for(lambda: len(conn.alerts) >= 3, 5, "the modem's alerts")
        assert h10.ml_send(host, 1, b"ml302 still here") == b"\r\nSEND OK\r\n"
        h6.wait_for(lambda: bytes(conn.plain) == b"ml302 still here", 5, "the host's bytes")
        assert conn.alerts == [NO_RENEGOTIATION] * 3
        assert b'"close"' not in bytes(host.transcript)
        h10.ml_close(host, 1)
    assert host.at("AT") == OK


def test_ml302_transparent_tiny_records_packed_hello_requests_and_empty_records(ml, emulator):
    """ML302 connectmode 1 (AES128-SHA): 3000 one-byte records; every 100th followed by an
    empty record, every 250th by a record of two HelloRequests, every 300th by a warning
    user_canceled; then close_notify and the server's close.  CONNECT, exactly the 3000 bytes
    (NO CARRIER look-alikes among them), then NO CARRIER and nothing else; one
    no_renegotiation alert per HelloRequest (24), nothing else from the modem; the emulator's
    FIN; REMOTE CLOSING; AT+QSSLCLOSE answers."""
    host, advance, port = ml
    data = (b"\r\nNO CARRIER\r\n+QSSLURC: \"close\",4\r\n" * 100)[:3000]
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        wire = bytearray()
        requests = 0
        for i in range(len(data)):
            wire += c.tx.seal(CT_APP, data[i:i + 1])
            if i % 100 == 99:
                wire += c.tx.seal(CT_APP, b"")
            if i % 250 == 249:
                wire += c.tx.seal(CT_HANDSHAKE, HELLO_REQUEST * 2)
                requests += 2
            if i % 300 == 299:
                wire += c.tx.seal(CT_ALERT, b"\x01\x5a")
        assert requests == 24
        for i in range(0, len(wire), 5000):
            c.sock.sendall(bytes(wire[i:i + 5000]))
        time.sleep(0.5)                       # (the modem's alerts in before the end)
        c.sock.sendall(c.tx.seal(CT_ALERT, b"\x01\x00"))
        c.reader()
        c.sock.close()

    with h10.Hand(emulator, script, suite=h6.RSA_CBC) as server:
        host.write(f'AT+QSSLOPEN=4,0,"{h10.NAME}",443,1\r'.encode())
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        go.set()
        assert host.read_exactly(len(data), timeout=15) == data
        assert host.read_until(b"NO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        assert host.quiet_for(0.3) == b""
        conn = server.conns[0]
        h6.wait_for(lambda: conn.eof.is_set(), 5, "the modem's end")
        # (no close_notify answers the server's: behaviour.md, peer close)
        assert conn.alerts == [NO_RENEGOTIATION] * 24, conn.alerts
        assert conn.plain == b""
        assert h10.ml_state(host, 4) == "REMOTE CLOSING"
        h10.ml_close(host, 4)
    assert host.at("AT") == OK


@pytest.mark.needs_native
@pytest.mark.parametrize("tickets", [True, False], ids=["tickets", "session_ids"])
def test_reopen_after_a_completed_renegotiation_resumes(modem, emulator, pki, tmp_path, tickets):
    """renegotiation 1, session_cache 1, `openssl s_server -tls1_2` (RFC 5077 tickets, or
    session ids only): open, data, the server renegotiates (a new session, with its own ticket
    / id), data both ways under the new keys, AT+QSSLCLOSE; the next open offers a session the
    server knows: resumed (s_server: "Reused session-id", no Certificate in that handshake),
    data, close."""
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    cert, key = pki.server.load_args
    msgs = str(tmp_path / "msg.txt")
    extra = [] if tickets else ["-no_ticket"]
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-msg", "-msgfile", msgs, *extra]) as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.port)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
        assert host.at('AT+QSSLCFG="session_cache",1,1') == OK
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        server.wait_for_output(rb"CIPHER is")
        before = _client_finished_count(msgs)
        server.write(b"r\n")
        h2.wait_for(lambda: _client_finished_count(msgs) > before, 10, "the renegotiation's end")
        mark = server.mark()
        assert host.send_data(2, b"after the renegotiation\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"after the renegotiation\n", 10, since=mark)
        server.write(b"to the host\n")
        host.seen(b'+QSSLURC: "recv",2\r\n')
        assert read_all(host, 2, 12) == b"to the host\n"
        assert host.at("AT+QSSLCLOSE=2,1").endswith(OK)
        mark = server.mark()
        certs_before = open(msgs, "rb").read().count(b"Certificate\n")
        assert certs_before == 2                  # (the first handshake and the renegotiation)
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        server.wait_for_output(rb"CIPHER is", 10, since=mark)
        assert b"Reused session-id" in server.stdout[mark:]
        assert open(msgs, "rb").read().count(b"Certificate\n") == certs_before
        mark = server.mark()
        assert host.send_data(2, b"resumed\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"resumed\n", 10, since=mark)
        assert host.at("AT+QSSLCLOSE=2,1").endswith(OK)
    assert host.at("AT") == OK


@pytest.mark.needs_native
def test_renegotiation_of_a_resumed_session_at_seclevel_1(modem, emulator, tmp_path):
    """seclevel 1 (the CA, the certificate valid for the name), renegotiation 1, session_cache
    1, `openssl s_server -tls1_2`: a full open, close; the next open resumed (no Certificate:
    nothing was verified in it); the server renegotiates (a full handshake: its chain,
    encrypted, the same leaf): the socket stays up, data both ways after it; close; the third
    open resumes again."""
    from emulator.testing.peers import OpenSslServer, default_pki
    host, advance, port = modem
    name = "www.iottest.work"
    ca_file = "UFS:hostile14ca.pem"
    assert host.upload(ca_file, default_pki().ca.cert_pem).endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLCFG="cacert",1,"{ca_file}"') == OK
    assert host.at('AT+QSSLCFG="seclevel",1,1') == OK
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    cert, key = default_pki().server.load_args
    msgs = str(tmp_path / "msg.txt")
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-msg", "-msgfile", msgs]) as server:
        emulator.router.add_map(name, 443, "127.0.0.1", server.port)
        for round_ in range(3):
            mark = server.mark()
            ssl_open(host, 3, name=name)
            assert open_answer(host, 3) == 0, round_
            server.wait_for_output(rb"CIPHER is", 10, since=mark)
            assert (b"Reused session-id" in server.stdout[mark:]) is (round_ > 0), round_
            if round_ == 1:
                before = _client_finished_count(msgs)
                server.write(b"r\n")
                h2.wait_for(lambda: _client_finished_count(msgs) > before, 10, "the renegotiation's end")
                server.write(b"renegotiated\n")
                host.seen(b'+QSSLURC: "recv",3\r\n')
                assert read_all(host, 3, 13) == b"renegotiated\n"
                assert state(host, 3) == 2
            m2 = server.mark()
            assert host.send_data(3, b"round %d\n" % round_) == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"round %d\n" % round_, 10, since=m2)
            assert b"closed" not in bytes(host.transcript)
            assert host.at("AT+QSSLCLOSE=3,1").endswith(OK)
    assert host.at("AT") == OK


@pytest.mark.needs_native
@pytest.mark.parametrize("mode", [1, 2], ids=["push", "transparent"])
def test_server_lines_around_completed_renegotiations_push_and_transparent(modem, emulator, pki, tmp_path, mode):
    """renegotiation 1, `openssl s_server -tls1_2`: 40 lines, a renegotiation ("r") with a
    line written right behind its HelloRequest (while the server's renegotiation runs), waited
    for until the modem's Finished is in, 40 lines, another, 40 lines.  Direct push: every push
    framed, the lines once and in order, no "closed"; transparent: exactly the lines, no NO
    CARRIER; then the host's bytes reach the server under the newest keys."""
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    cert, key = pki.server.load_args
    msgs = str(tmp_path / "msg.txt")
    lines = [b"line %04d of the server\n" % i for i in range(120)]
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-msg", "-msgfile", msgs]) as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.port)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
        if mode == 2:
            assert host.at(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        else:
            ssl_open(host, 5, mode=1)
            assert open_answer(host, 5) == 0
        server.wait_for_output(rb"CIPHER is")

        def take(want: bytes) -> bytes:
            return host.read_exactly(len(want), timeout=10) if mode == 2 else read_pushed(host, 5, len(want))

        for part in range(3):
            chunk = b"".join(lines[part * 40:(part + 1) * 40])
            for line in lines[part * 40:(part + 1) * 40]:
                server.write(line)
            assert take(chunk) == chunk           # (s_server has read its stdin: "r" alone)
            if part < 2:
                before = _client_finished_count(msgs)
                mark = server.mark()
                server.write(b"r\n")
                server.wait_for_output(rb"SSL_do_handshake -> 1", 10, since=mark)
                server.write(b"right behind the request\n")
                h2.wait_for(lambda: _client_finished_count(msgs) > before, 10, "the renegotiation's end")
                assert take(b"right behind the request\n") == b"right behind the request\n"
        if mode == 2:
            mark = server.mark()
            host.write(b"from the host\n")
            server.wait_for_output(rb"from the host\n", 10, since=mark)
            assert h2_escape(host, advance) == OK
        else:
            mark = server.mark()
            assert host.send_data(5, b"from the host\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"from the host\n", 10, since=mark)
        assert host.quiet_for(0.2) == b""
        assert b"closed" not in bytes(host.transcript) and b"NO CARRIER" not in bytes(host.transcript)
        assert _client_finished_count(msgs) == 3
        assert state(host, 5) == 2
        assert host.at("AT+QSSLCLOSE=5,1").endswith(OK)
    assert host.at("AT") == OK


# == a HelloRequest in the very record of the server's Finished ====================================
def _glue_finished_with_hello_request(tail: bytes):
    """Write 1 (CCS + Finished) remade: the CCS, then ONE handshake record carrying the
    Finished AND a HelloRequest, then `tail` as an application record -- one segment."""
    def glue(n, conn, data):
        if n != 1:
            return data
        assert data[:6] == h6.record(h6.CT_CCS, b"\x01"), data[:6].hex()
        conn.tx.seq = 0
        out = h6.record(h6.CT_CCS, b"\x01") + conn.tx.seal(CT_HANDSHAKE, conn.transcript[-1] + HELLO_REQUEST)
        return out + conn.tx.seal(CT_APP, tail)
    return glue


@pytest.mark.parametrize("renegotiation", [0, 1])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_hello_request_in_the_record_of_the_servers_finished(modem, emulator, mode, renegotiation):
    """Full handshake; the server's Finished and a HelloRequest in ONE encrypted handshake
    record (legal: several handshake messages in one record), data behind it, one segment.
    The open is answered once (+QSSLOPEN 0 / CONNECT), the data reach the host at once.
    renegotiation 0: the modem's warning no_renegotiation alert, the session carries data both
    ways; renegotiation 1: the modem's renegotiating ClientHello (under the new keys), the
    session waits (no "closed")."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    assert host.at(f'AT+QSSLCFG="renegotiation",1,{renegotiation}') == OK
    tail = b"right behind the Finished and its HelloRequest"
    got: list = []

    def script(c) -> None:
        c.handshake()
        h10.client_records(c, got)

    with h10.Hand(emulator, script, glue=_glue_finished_with_hello_request(tail)) as server:
        mark = len(host.transcript)
        if mode == 2:
            host.write(f'AT+QSSLOPEN=1,1,4,"{h10.NAME}",443,2\r'.encode())
            assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
            assert host.read_exactly(len(tail), timeout=5) == tail
        elif mode == 1:
            assert h10.at(host, f'AT+QSSLOPEN=1,1,4,"{h10.NAME}",443,1') == OK
            assert open_answer(host, 4) == 0
            assert read_pushed(host, 4, len(tail)) == tail
        else:
            assert h10.at(host, f'AT+QSSLOPEN=1,1,4,"{h10.NAME}",443,0') == OK
            assert open_answer(host, 4) == 0
            host.seen(b'+QSSLURC: "recv",4\r\n')
            assert read_all(host, 4, len(tail)) == tail
        assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN: 4,") == (0 if mode == 2 else 1)
        h6.wait_for(lambda: got, 5, "the modem's answer to the HelloRequest")
        time.sleep(0.2)
        if renegotiation == 0:
            assert got == [(CT_ALERT, NO_RENEGOTIATION)], got
            if mode == 2:
                host.write(b"online bytes")
                h6.wait_for(lambda: b"".join(p for ct, p in got if ct == CT_APP) == b"online bytes", 5, "the bytes")
                assert h2_escape(host, advance) == OK
            else:
                assert host.send_data(4, b"both ways") == b"\r\nSEND OK\r\n"
                h6.wait_for(lambda: b"".join(p for ct, p in got if ct == CT_APP) == b"both ways", 5, "the bytes")
        else:
            assert len(got) == 1 and got[0][0] == CT_HANDSHAKE and got[0][1][:1] == b"\x01", got
            if mode == 2:
                assert h2_escape(host, advance) == OK
        assert host.quiet_for(0.1) == b""
        assert b"closed" not in bytes(host.transcript) and b"NO CARRIER" not in bytes(host.transcript)
        assert state(host, 4) == 2
        assert host.at("AT+QSSLCLOSE=4,0") == OK
        assert len(server.conns) == 1
    assert host.at("AT") == OK


# == empty records in threes between HelloRequests ================================================
@pytest.mark.parametrize("segment", [None, 37], ids=["one_segment", "37_byte_segments"])
def test_empty_records_in_threes_between_hello_requests(modem, emulator, segment):
    """renegotiation 0: 100 times three empty application records (Mbed TLS's limit in a row)
    then a HelloRequest (a non-empty record: the count starts again), then 3000 bytes; in one
    segment or cut every 37 bytes.  100 no_renegotiation alerts, the bytes once, the session
    up -- neither Mbed TLS's empty-record guard nor the engine's own trips."""
    host, advance, port = modem
    a = pattern(3000, 3)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        wire = bytearray()
        for _ in range(100):
            wire += c.seal(CT_APP, b"") + c.seal(CT_APP, b"") + c.seal(CT_APP, b"") + c.hello_request()
        wire += c.app(a)
        step = segment or len(wire)
        for i in range(0, len(wire), step):
            c.sock.sendall(bytes(wire[i:i + step]))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        go.set()
        host.seen(b'+QSSLURC: "recv",2\r\n', timeout=10)
        assert read_all(host, 2, len(a), sizes=(1500, 1)) == a
        conn = server.conns[0]
        with conn.changed:
            conn.changed.wait_for(lambda: len(conn.alerts()) >= 100, 5)
        assert conn.alerts() == [NO_RENEGOTIATION] * 100
        assert state(host, 2) == 2
        assert b"closed" not in bytes(host.transcript)
        assert host.send_data(2, b"up") == b"\r\nSEND OK\r\n"
        assert conn.wait_plaintext(2) == b"up"
        assert host.at("AT+QSSLCLOSE=2,0") == OK


# == a renegotiation that asks for the client's certificate ========================================
@pytest.mark.needs_native
@pytest.mark.parametrize("level", [0, 2])
def test_renegotiation_asking_for_a_client_certificate(modem, emulator, pki, tmp_path, level):
    """renegotiation 1, `openssl s_server -tls1_2` and "R" (renegotiate with a
    CertificateRequest, VERIFY_PEER): seclevel 2 with clientcert / clientkey: the modem's
    Certificate and CertificateVerify inside the renegotiation (s_server -msg), the session up,
    data both ways; seclevel 0 (no client identity): an empty Certificate, no
    CertificateVerify, the session up all the same (s_server does not require one)."""
    from emulator.testing.peers import OpenSslServer
    host, advance, port = modem
    name = "www.iottest.work"
    if level == 2:
        assert host.upload("UFS:h14ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
        assert host.upload("UFS:h14cli.pem", pki.client.cert_pem).endswith(b"OK\r\n")
        assert host.upload("UFS:h14cli.key", pki.client.key_pem).endswith(b"OK\r\n")
        assert host.at('AT+QSSLCFG="cacert",1,"UFS:h14ca.pem"') == OK
        assert host.at('AT+QSSLCFG="clientcert",1,"UFS:h14cli.pem"') == OK
        assert host.at('AT+QSSLCFG="clientkey",1,"UFS:h14cli.key"') == OK
        assert host.at('AT+QSSLCFG="seclevel",1,2') == OK
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    cert, key = pki.server.load_args
    msgs = str(tmp_path / "msg.txt")
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2", "-CAfile", str(pki.ca.cert_path),
                        "-msg", "-msgfile", msgs]) as server:
        emulator.router.add_map(name, 443, "127.0.0.1", server.port)
        ssl_open(host, 1, name=name)
        assert open_answer(host, 1) == 0
        server.wait_for_output(rb"CIPHER is")
        before = _client_finished_count(msgs)
        mark = server.mark()
        server.write(b"R\n")
        server.wait_for_output(rb"SSL_do_handshake -> 1", 10, since=mark)
        h2.wait_for(lambda: _client_finished_count(msgs) > before, 10, "the renegotiation's end")
        wire = open(msgs, "rb").read()
        assert b">>> TLS 1.2, Handshake [length" in wire and b"], CertificateRequest" in wire
        client_certs = re.findall(rb"<<< TLS 1\.2, Handshake \[length ([0-9a-f]+)\], Certificate\n", wire)
        assert len(client_certs) == 1, client_certs
        verifies = len(re.findall(rb"<<< TLS 1\.2, Handshake \[length [0-9a-f]+\], CertificateVerify", wire))
        if level == 2:
            assert int(client_certs[0], 16) > 100 and verifies == 1
        else:
            assert int(client_certs[0], 16) == 4 + 3 and verifies == 0   # (header + an empty list)
        m2 = server.mark()
        assert host.send_data(1, b"after R\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"after R\n", 10, since=m2)
        server.write(b"back\n")
        host.seen(b'+QSSLURC: "recv",1\r\n')
        assert read_all(host, 1, 5) == b"back\n"
        assert state(host, 1) == 2
        assert b"closed" not in bytes(host.transcript)
        assert host.at("AT+QSSLCLOSE=1,1").endswith(OK)
    assert host.at("AT") == OK


@pytest.mark.parametrize("end", ["fin", "rst"])
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_half_a_record_then_the_end_after_the_host_drained_everything(modem, emulator, mode, end):
    """The host has read every byte (buffer: +QSSLRECV: 0); then the server writes the first
    half of a record (header included) and ends (FIN / RST).  The host sees exactly
    `\\r\\n+QSSLURC: "closed",<id>\\r\\n` -- no "recv" URC, no push, since no byte came --
    then AT+QSSLRECV answers +QSSLRECV: 0 (buffer), state 4."""
    host, advance, port = modem
    first = pattern(500, 60)
    more = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(first))
        more.wait(10)
        rec = c.app(b"Y" * 400)
        c.sock.sendall(rec[:len(rec) // 2])
        time.sleep(0.3)
        if end == "fin":
            c.sock.shutdown(socket.SHUT_WR)
        else:
            c.rst()
        c.server.stall()

    with Server(script, emulator):
        ssl_open(host, 7, mode=mode)
        assert open_answer(host, 7) == 0
        if mode == 1:
            assert read_pushed(host, 7, len(first)) == first
        else:
            host.seen(b'+QSSLURC: "recv",7\r\n')
            assert read_all(host, 7, len(first)) == first
            assert recv(host, 7) == b""
        assert host.quiet_for(0.2) == b""
        more.set()
        assert host.read_until(b'"closed",7\r\n', timeout=10) == b'\r\n+QSSLURC: "closed",7\r\n'
        assert host.quiet_for(0.3) == b""
        if mode == 0:
            assert recv(host, 7) == b""
        assert state(host, 7) == 4
        assert host.at("AT+QSSLCLOSE=7,0") == OK
    assert host.at("AT") == OK


def test_tickets_of_odd_sizes_are_never_offered_with_session_cache_0(modem, emulator):
    """session_cache 0: the server issues odd-sized tickets on every handshake; no later
    ClientHello carries one (an empty session_ticket extension at most), no open resumes."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    assert host.at('AT+QSSLCFG="session_cache",1,0') == OK
    with TicketServer(emulator, SHAPES[:3]) as server:
        for i in range(3):
            h6.ssl_open(host, 0)
            assert open_answer(host, 0) == 0, i
            h6.round_trip_and_close(host, 0, b"no cache %d" % i)
        h6.wait_for(lambda: len(server.hellos) == 3, 5, "the ClientHellos")
        assert len(server.issued) == 3                       # (each handshake got one)
        assert [h.ticket for h in server.hellos] == [None] * 3
        assert [c.resumed for c in server.conns] == [False] * 3
    assert host.at("AT") == OK
