"""Hostile servers, tenth round: what rounds 1-9 (test_adversarial_hostile_servers*.py),
test_adversarial_hostile_peers_tcpip.py and the DTLS files do not do.

Peers: test_adversarial_hostile_servers_6's hand-made TLS 1.2 server (raw socket, RSA key
exchange, AES-128-GCM / CBC), its writes reshaped per test; `openssl s_server -dtls1_2`
behind a UdpMiddlebox.  Covered (EC2x unless said):

* renegotiation 1 and a HelloRequest (plus data) in the very flight of the server's
  Finished, before the modem has answered the open: the open is answered once (buffer:
  +QSSLOPEN 0; transparent: CONNECT), the data behind the request reach the host, the
  modem's renegotiating ClientHello is on the wire, the stalled renegotiation never turns
  into a 569, the close works;
* a ServerHello filling a whole 16384-byte record (an unknown 16 KiB extension, which Mbed
  TLS ignores): opens; one byte more (record_overflow): 566 / ML302 -1 once;
* a server answering TLS 1.2 to a ClientHello pinned to TLS 1.0 (sslversion 1), as a
  misconfigured terminator does: 566 / -1 once, no data, the id reusable; the log reason
  should name the version the server chose, as it does when the record layer says 1.0;
* a server that half-closes (bare FIN, no close_notify) in the middle of the host's sends
  and keeps reading slowly: "closed" once, 567 after it, and every SEND OK byte reaches the
  server before the emulator's own FIN, without the host's AT+QSSLCLOSE;
* one hostile server among good ones (EC2x five sockets, buffer and push; ML302 three): a
  server dripping 1-byte records, warning alerts and empty records a byte per TCP segment,
  one resetting mid-record, one announcing a 16 MiB handshake message; the good sockets'
  echoes byte-exact, each end reported on its own id only;
* DTLS: after the handshake the server's application datagrams reordered (reversed), a
  replay of its first handshake flight (epoch 0), garbage, datagrams of 32 and 64 KiB, a
  replayed application record: each line once, the socket still open, data both ways;
* the host's own close meeting a server that never took its backlog: the server resets,
  or reads everything and closes, during AT+QSSLCLOSE's linger (OK with the connection's
  end, every SEND OK byte then the close_notify); the linger running out, or a close after
  the server's half-close: must be an abort (RST), never a FIN behind half a TLS record;
* a CertificateRequest filling a whole record (~300 CA names), seclevel 0 (empty
  Certificate) and 2 (the client's certificate and CertificateVerify); one byte more: 566;
* a renegotiation answered with a ServerHello whose renegotiation_info (RFC 5746) is
  empty, wrong or missing: the modem's fatal alert, "closed" once; the right one: it waits;
* 48 records each cut into two TCP segments at a different byte (header, nonce, body,
  tag), warning alerts cut the same way, direct push: only whole records ever pushed;
* a half-close (bare FIN) while the host streams 1 MiB online (EC2x and ML302): NO
  CARRIER alone, a byte-exact prefix at the server then the emulator's FIN;
* one single-use RFC 5077 ticket offered by two sockets opened on one command line: one
  resumed, one full handshake, both carry data, the next open resumed.

Two bugs found, both fixed since: a TLS 1.2 answer to a TLS 1.0-pinned offer was logged as an
invalid record, not as the version the server chose; AT+QSSLCLOSE's abort behind an unsent
backlog ended the TCP connection with a FIN after a TLS record cut in the middle, not an RST.

Checked each time from the host's side: the exact answers and codes, one answer per open,
one end per socket, every byte once, AT answering, no ERROR log record or traceback
(ec2x_strict / ml302_strict).  Timers run on the modem's manual clock."""
from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e.hostile_support import open_answer, send_rst
from tests.e2e.socket_support import escape, tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23
NAME = "hostile10.example"
OK = b"\r\nOK\r\n"
pattern = h6.pattern


# == the hand-made server, its writes reshaped =======================================================
class _Glued:
    """A connection's socket whose n-th sendall(data) goes out as server.glue(n, conn, data)."""

    def __init__(self, sock, conn) -> None:
        self._sock, self._conn, self.calls = sock, conn, 0

    def sendall(self, data: bytes) -> None:
        n, self.calls = self.calls, self.calls + 1
        glue = self._conn.server.glue
        self._sock.sendall(glue(n, self._conn, data) if glue else data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class Hand(h6.HandServer):
    """h6's hand-made TLS 1.2 server routed from `name`:443; glue(n, conn, data) reshapes the
    n-th write of each connection (0: ServerHello .. ServerHelloDone; 1: CCS + Finished)."""

    def __init__(self, emulator, script=None, *, glue=None, name: str = NAME, **kw) -> None:
        self.glue = glue
        super().__init__(emulator, script, name=name, **kw)

    def make_conn(self, sock):
        conn = h6.Conn(self, sock)
        conn.sock = _Glued(sock, conn)
        return conn


def client_records(c, into: list) -> None:
    """The client's records after the handshake, decrypted, as (type, plaintext) into `into`,
    until its end."""
    try:
        while True:
            ct, payload = c.read_record()
            into.append((ct, c.rx.open(ct, payload)))
    except (OSError, EOFError):
        pass
    c.eof.set()


# == host side ======================================================================================
@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    return ec2x_strict


@pytest.fixture
def ml(ml302_strict):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    return ml302_strict


_URCS = re.compile(rb'^(\r\n\+QSSL(?:URC: "(?:recv|closed)",\d+|OPEN: \d+,\d+)\r\n)+')


def at(host, line: str) -> bytes:
    """host.at() with the URCs of other sockets written just before the answer taken out
    (they stay in the transcript for seen())."""
    return _URCS.sub(b"", host.at(line))


def ssl_open(host, cid: int, mode: int = 0, name: str = NAME) -> None:
    assert at(host, f'AT+QSSLOPEN=1,1,{cid},"{name}",443,{mode}') == OK


_ML_URCS = re.compile(rb'^(\r\n\+QSSL(?:URC: "(?:recv",1|close"),\d+|OPEN: \d+,-?\d+)\r\n)+')


def ml_at(host, line: str) -> bytes:
    return _ML_URCS.sub(b"", host.at(line))


def ml_open(host, ssid: int, name: str = NAME) -> None:
    assert ml_at(host, f'AT+QSSLOPEN={ssid},0,"{name}",443,0') == OK


def ml_answer(host, ssid: int) -> int:
    line = host.seen(re.compile(rb"\+QSSLOPEN: %d,(-?\d+)\r\n" % ssid), 10)
    return int(re.search(rb",(-?\d+)\r\n", line).group(1))


def ml_recv(host, ssid: int, n: int = 1500) -> bytes:
    """One AT+QSSLRECV=1,<ssid>,<n> (a "recv" URC written just before it taken out of the way)."""
    answer = ml_at(host, f"AT+QSSLRECV=1,{ssid},{n}")
    if answer == OK:
        return b""
    m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
    assert m, answer
    size = int(m.group(1))
    assert 0 < size <= n and answer[m.end() + size:] == b"\r\n\r\nOK\r\n", answer[-40:]
    return answer[m.end():m.end() + size]


def ml_send(host, ssid: int, data: bytes) -> bytes:
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert _ML_URCS.sub(b"", host.read_until(b"> ")) == b"\r\n> "
    host.write(data + b"\x1a")
    return _ML_URCS.sub(b"", host.read_until(re.compile(rb"\r\n(SEND OK|ERROR)\r\n")))


def ml_read_all(host, ssid: int, want: int, timeout: float = 20) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < want:
        assert time.monotonic() < deadline, f"only {len(data)} of {want} bytes"
        chunk = ml_recv(host, ssid)
        if chunk:
            data += chunk
        else:
            host.seen(b'+QSSLURC: "recv",1,%d\r\n' % ssid, 5)
    return bytes(data)


def ml_close(host, ssid: int) -> None:
    assert ml_at(host, f"AT+QSSLCLOSE={ssid}") == OK
    want = b"\r\n%d,CLOSE OK\r\n" % ssid
    assert host.read_until(want, timeout=5) == want


def ml_state(host, ssid: int) -> str:
    for m in re.finditer(rb'\+QSSLSTATE: (\d),"TCP","[0-9.]*",\d+,"([A-Z ]+)",\d\r\n', host.at("AT+QSSLSTATE")):
        if int(m.group(1)) == ssid:
            return m.group(2).decode()
    raise AssertionError(f"no line for {ssid}")




def recv(host, cid: int, n: int = 1500) -> bytes:
    """One AT+QSSLRECV=<cid>,<n>: its data, the answer's framing checked (URCs of other
    sockets written just before the answer are left in the transcript for seen())."""
    answer = at(host, f"AT+QSSLRECV={cid},{n}")
    m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
    assert m, answer
    size = int(m.group(1))
    assert answer[m.end() + size:] == (b"\r\n\r\nOK\r\n" if size else b"\r\nOK\r\n"), answer[-40:]
    return answer[m.end():m.end() + size]


def push_read(host, cid: int, want: int, timeout: float = 20) -> tuple[bytes, list[int]]:
    """Direct push: the bytes of +QSSLURC: "recv",<id>,<len> URCs (each push's data then CR LF)
    until `want` bytes came (other sockets' URCs between them let pass), and the pushes' sizes."""
    push = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % cid)
    got, sizes = bytearray(), []
    while len(got) < want:
        chunk = host.read_until(push, timeout=timeout)
        m = push.search(chunk)
        assert _URCS.sub(b"", chunk[:m.start()]) == b"", chunk[:200]
        sizes.append(int(m.group(1)))
        assert 0 < sizes[-1] <= 1500
        got += host.read_exactly(sizes[-1], timeout=timeout)
        assert host.read_exactly(2, timeout=timeout) == b"\r\n"     # the push's end
    return bytes(got), sizes


def read_all(host, cid: int, want: int, timeout: float = 20) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < want:
        assert time.monotonic() < deadline, f"only {len(data)} of {want} bytes"
        chunk = recv(host, cid)
        if chunk:
            data += chunk
        else:
            host.seen(b'+QSSLURC: "recv",%d\r\n' % cid, 5)
    return bytes(data)


def reopen_works(host, server, cid: int) -> None:
    """The id opens again on the (now well-behaved) server: a round trip, a close."""
    server.glue = None
    server.policy.clear()
    server.script = lambda c: (c.handshake(), c.echo())
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    h6.round_trip_and_close(host, cid)


def ml_reopen_works(host, server, ssid: int) -> None:
    server.glue = None
    server.policy.clear()
    server.script = lambda c: (c.handshake(), c.echo(), c.sock.close())
    forget_answers(host, ssid)
    ml_open(host, ssid)
    assert ml_answer(host, ssid) == 0
    assert ml_send(host, ssid, b"ml302 again") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "recv",1,%d\r\n' % ssid)
    assert ml_recv(host, ssid) == b"ml302 again"
    ml_close(host, ssid)


# == renegotiation asked for in the flight of the Finished ===========================================
@pytest.mark.needs_native
@pytest.mark.parametrize("mode", [0, 2])
def test_hello_request_in_the_flight_of_the_finished_with_renegotiation_1(modem, emulator, mode):
    """renegotiation 1.  The server's CCS + Finished, an encrypted HelloRequest and 300 bytes
    of data in ONE TCP segment, then it never answers the renegotiation.  The first
    handshake is complete, so the open is answered at once and once (+QSSLOPEN: 1,0 / CONNECT,
    never a 569 later at negotiatetime), the data behind the request reach the host once, the
    modem's new ClientHello (renegotiation_info carrying its verify_data) is on the wire under
    the session's keys, the socket stays connected (state 2), AT+QSSLCLOSE answers OK."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    behind = pattern(300, 101)
    got: list = []

    def glue(n, c, data):
        if n == 1:
            return data + c.tx.seal(CT_HANDSHAKE, h6.hs(0, b"")) + c.tx.seal(CT_APP, behind)
        return data

    def script(c):
        c.handshake()
        client_records(c, got)

    with Hand(emulator, script, glue=glue) as server:
        mark = len(host.transcript)
        if mode == 0:
            ssl_open(host, 1)
            assert open_answer(host, 1) == 0
            host.seen(b'+QSSLURC: "recv",1\r\n')
            assert read_all(host, 1, len(behind)) == behind
        else:
            host.write(f'AT+QSSLOPEN=1,1,1,"{NAME}",443,2\r')
            assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
            assert host.read_exactly(len(behind)) == behind
        wait_for(lambda: any(ct == CT_HANDSHAKE for ct, _ in got), what="the modem's new ClientHello")
        hello = next(p for ct, p in got if ct == CT_HANDSHAKE)
        assert hello[0] == 1, hello[:4].hex()                       # ClientHello
        ch = h6.ClientHello(hello[4:])
        assert ch.extensions.get(h6.EXT_RENEG, b"")[:1] == b"\x0c"     # 12 bytes: its verify_data
        advance(400)                                                 # past negotiatetime
        assert host.quiet_for(0.3) == b""
        if mode == 2:
            assert escape(host, advance) == OK
        assert h6.state(host, 1) == 2
        assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN") == (1 if mode == 0 else 0)
        assert b"ERROR" not in bytes(host.transcript[mark:])
        assert host.at("AT+QSSLCLOSE=1,0") == OK
        assert h6.state(host, 1) is None
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        reopen_works(host, server, 1)


# == a ServerHello at the record limit ===============================================================
def _big_server_hello(size: int) -> dict:
    """policy for h6: an unknown extension sized so the ServerHello record's payload is `size`
    bytes (h6's ServerHello: version, random, a 32-byte session id, suite, compression,
    renegotiation_info (5 bytes) and this extension)."""
    fixed = 4 + 2 + 32 + 1 + 32 + 2 + 1 + 2 + 5 + 4
    return {"extra_ext": h6.ext(0xFAFA, bytes(size - fixed))}


def test_server_hello_filling_a_whole_record(modem, emulator, caplog):
    """A ServerHello whose record carries exactly 16384 bytes (an unknown extension of ~16 KiB:
    Mbed TLS 2.28 ignores unknown ServerHello extensions) opens and carries data; one byte
    more is past the record limit (RFC 5246 6.2.1): 566 once at once, the id reusable."""
    host, advance, port = modem
    with Hand(emulator, policy=_big_server_hello(16384)) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        h6.round_trip_and_close(host, 1, pattern(1000, 5))
        server.policy.update(_big_server_hello(16385))
        forget_answers(host, 1)
        mark = len(host.transcript)
        ssl_open(host, 1)
        assert open_answer(host, 1) == 566
        assert host.quiet_for(0.1) == b""
        assert h6.open_count(host, 1, mark) == 1
        assert h6.qigeterror(host) == 566
        assert h6.state(host, 1) is None
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        reopen_works(host, server, 1)


def test_ml302_server_hello_filling_a_whole_record(ml, emulator):
    """ML302 (AES128-SHA): the 16384-byte ServerHello record opens (0) and carries data; one
    byte more: -1 once, the ssid CLOSED and free."""
    host, advance, port = ml
    with Hand(emulator, lambda c: (c.handshake(), c.echo(), c.sock.close()), suite=h6.RSA_CBC,
              policy=_big_server_hello(16384)) as server:
        ml_open(host, 2)
        assert ml_answer(host, 2) == 0
        assert ml_send(host, 2, b"big hello") == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",1,2\r\n')
        assert ml_recv(host, 2) == b"big hello"
        ml_close(host, 2)
        server.policy.update(_big_server_hello(16385))
        forget_answers(host, 2)
        mark = len(host.transcript)
        ml_open(host, 2)
        assert ml_answer(host, 2) == -1
        assert host.quiet_for(0.1) == b""
        assert h6.open_count(host, 2, mark) == 1
        assert ml_state(host, 2) == "CLOSED"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        ml_reopen_works(host, server, 2)


# == a version above the one offered ================================================================
def test_server_answering_tls12_to_a_tls10_offer(modem, emulator, caplog):
    """sslversion 1 (TLS 1.0 only, the ClientHello says 3.1 and offers no more) against a
    server that answers with a TLS 1.2 ServerHello in a TLS 1.2 record: 566 once, at once,
    QIGETERROR 566, no socket left, the connection released, the id reusable."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X002F') == OK
    assert host.at('AT+QSSLCFG="sslversion",1,1') == OK
    with Hand(emulator, suite=h6.RSA_CBC) as server:
        mark = len(host.transcript)
        ssl_open(host, 3)
        assert open_answer(host, 3) == 566
        assert server.conns[0].transcript[0][4:6] == b"\x03\x01"
        assert host.quiet_for(0.1) == b""
        assert h6.open_count(host, 3, mark) == 1
        assert h6.qigeterror(host) == 566
        assert h6.state(host, 3) is None
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert host.at('AT+QSSLCFG="sslversion",1,4') == OK
        reopen_works(host, server, 3)


# Was a bug, fixed (2026-12-06): a ServerHello choosing TLS 1.2 in a TLS 1.2 record against sslversion 1 is logged as 'invalid TLS record received (mbedtls -0x7200)', not 'server chose TLSv1.2, outside the configured sslversion' -- tls_engine/session.py _fail_from_tls_error names the version only for MBEDTLS_BAD_VERSION
def test_server_answering_tls12_to_a_tls10_offer_is_named_in_the_log(modem, emulator, caplog):
    """tls_engine/README.md (Failures): a handshake failure names "the version the server
    chose (server chose TLSv1.0, outside the configured sslversion)"; it does when the
    record layer says 3.1 (Mbed TLS's BAD_VERSION), and must as well when the record layer
    says 3.3 as every real TLS 1.2 server's does (Mbed TLS refuses the record first, but the
    ServerHello inside it is what a person must be told about)."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X002F') == OK
    assert host.at('AT+QSSLCFG="sslversion",1,1') == OK
    with Hand(emulator, suite=h6.RSA_CBC):
        ssl_open(host, 3)
        assert open_answer(host, 3) == 566
        line = next(r.getMessage() for r in caplog.records if "SSL open 3" in r.getMessage())
        assert "server chose TLSv1.2" in line, line


def test_ml302_server_answering_tls12_to_a_tls10_offer(ml, emulator):
    """ML302, sslversion 1: the same TLS 1.2 answer: -1 once, CLOSED, the ssid free."""
    host, advance, port = ml
    assert host.at('AT+QSSLCFG="sslversion",0,1') == OK
    with Hand(emulator, suite=h6.RSA_CBC) as server:
        mark = len(host.transcript)
        ml_open(host, 1)
        assert ml_answer(host, 1) == -1
        assert host.quiet_for(0.1) == b""
        assert h6.open_count(host, 1, mark) == 1
        assert ml_state(host, 1) == "CLOSED"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert host.at('AT+QSSLCFG="sslversion",0,4') == OK
        ml_reopen_works(host, server, 1)


# == a half-close in the middle of the host's sends ==================================================
def test_half_closing_server_gets_every_send_ok_byte_before_the_modems_fin(modem, emulator):
    """Buffer mode, the host sending 1460-byte chunks (AT+QSSLSEND fixed length) one after the
    other.  The server reads three, stops reading for a while (the host's next SEND OKs pile
    up in the kernel), sends "bye" and a bare FIN (shutdown(SHUT_WR), no close_notify) and then
    reads on slowly (a 4 KiB receive buffer).  The host: a "closed" URC once, every send after
    it ERROR with QIGETERROR 567, "bye" readable, state 4.  The server, with no AT+QSSLCLOSE
    from the host: every byte of every SEND OK, in order, then the emulator's FIN (no RST) --
    a half-closed TCP connection still takes what the module accepted (behaviour.md: SEND OK
    = in the send buffer; the peer's FIN ends only the peer's direction)."""
    host, advance, port = modem
    state = {"reset": False}

    def script(c):
        c.handshake()
        while len(c.plain) < 3 * 1460:
            ct, payload = c.read_record()
            if ct == CT_APP:
                c.plain += c.rx.open(ct, payload)
        time.sleep(0.4)
        c.sock.sendall(c.tx.seal(CT_APP, b"bye"))
        c.sock.shutdown(socket.SHUT_WR)
        try:
            while True:
                time.sleep(0.001)
                ct, payload = c.read_record()
                plain = c.rx.open(ct, payload)
                if ct == CT_APP:
                    c.plain += plain
                elif ct == CT_ALERT:
                    c.alerts.append(plain)
        except EOFError:
            pass
        except ConnectionResetError:
            state["reset"] = True
        c.eof.set()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        accepted, answers = [], []
        deadline = time.monotonic() + 15
        for i in range(100000):
            assert time.monotonic() < deadline, f"{len(accepted)} sends, never ERROR"
            chunk = pattern(1460, 1000 + i)
            answer = host.send_data(1, chunk)
            answers.append(answer)
            if answer == b"\r\nSEND OK\r\n":
                accepted.append(chunk)
            elif answer == b"\r\nERROR\r\n":
                break
            else:
                assert answer == b"\r\nSEND FAIL\r\n", answer
                time.sleep(0.05)
        assert answers[-1] == b"\r\nERROR\r\n", (answers[-3:], server.failures, state)
        assert len(accepted) > 3
        assert h6.qigeterror(host) == 567
        host.seen(b'+QSSLURC: "closed",1\r\n')
        conn = server.conns[0]
        assert conn.eof.wait(20), "the emulator never closed its side"
        assert not state["reset"], "the connection was reset"
        sent = b"".join(accepted)
        assert len(conn.plain) == len(sent) and bytes(conn.plain) == sent, (len(conn.plain), len(sent))
        assert read_all(host, 1, 3) == b"bye"
        assert recv(host, 1) == b""
        assert h6.state(host, 1) == 4
        assert host.send_data(1, b"late") == b"\r\nERROR\r\n"
        assert h6.qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=1,10") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        reopen_works(host, server, 1)


# == one hostile server among good ones ==============================================================
def _split_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos + 3:pos + 5], "big")
        out.append(data[pos:pos + 5 + size])
        pos += 5 + size
    return out


def _huge_certificate(n, c, data):
    """The first flight's ServerHello, then a Certificate message announcing 2**24 - 1 bytes."""
    if n == 0:
        return _split_records(data)[0] + h6.record(CT_HANDSHAKE, b"\x0b\xff\xff\xff" + bytes(16380))
    return data


def _drip(c, wire: bytes) -> None:
    """wire one byte per TCP segment (TCP_NODELAY), a short pause now and then."""
    for i in range(len(wire)):
        c.sock.sendall(wire[i:i + 1])
        if i % 500 == 499:
            time.sleep(0.002)


def test_one_hostile_server_among_good_ones(modem, emulator):
    """Five sockets on one modem.  Good: id 0 (buffer) and id 5 (direct push), echo servers.
    Hostile, all at once while the host talks to the good ones: id 1's server drips 400
    one-byte records with a warning alert and an empty record between each, a byte per TCP
    segment, then close_notify; id 2's sends 5000 bytes, half a record, then an RST; id 3's
    Certificate announces 16 MiB.  The good sockets' 30 echoes each come back byte-exact and
    in order; id 1's 400 bytes read once and in order, then one "closed"; id 2's 5000 bytes,
    one "closed"; id 3 one 566; no "closed" for the good ones (state 2), AT answering."""
    host, advance, port = modem
    drip = pattern(400, 77)
    burst = pattern(5000, 78)
    go = threading.Event()

    def dripper(c):
        c.handshake()
        go.wait(10)
        wire = b"".join(c.tx.seal(CT_APP, drip[i:i + 1]) + c.tx.seal(CT_ALERT, b"\x01\x5a")
                        + c.tx.seal(CT_APP, b"") for i in range(len(drip)))
        _drip(c, wire + c.tx.seal(CT_ALERT, b"\x01\x00"))
        c.server.stall()

    def resetter(c):
        c.handshake()
        go.wait(10)
        wire = c.app(burst, 1000)
        last = c.tx.seal(CT_APP, b"never whole")
        c.sock.sendall(wire + last[:len(last) // 2])
        time.sleep(0.3)
        send_rst(c.sock._sock)

    echo = lambda c: (c.handshake(), c.echo())      # noqa: E731
    with Hand(emulator, echo, name="good0.example") as good0, \
            Hand(emulator, echo, name="good5.example") as good5, \
            Hand(emulator, dripper, name="drip.example"), \
            Hand(emulator, resetter, name="reset.example"), \
            Hand(emulator, None, name="huge.example", glue=_huge_certificate) as huge:
        ssl_open(host, 0, name="good0.example")
        assert open_answer(host, 0) == 0
        ssl_open(host, 5, 1, name="good5.example")
        assert open_answer(host, 5) == 0
        ssl_open(host, 1, name="drip.example")
        assert open_answer(host, 1) == 0
        ssl_open(host, 2, name="reset.example")
        assert open_answer(host, 2) == 0
        go.set()
        mark = len(host.transcript)
        ssl_open(host, 3, name="huge.example")
        for i in range(30):
            payload = pattern(1 + 47 * i, 200 + i)
            assert host.send_data(0, payload) == b"\r\nSEND OK\r\n"
            assert read_all(host, 0, len(payload)) == payload, i
            payload = pattern(1460 - 13 * i, 300 + i)
            assert host.send_data(5, payload) == b"\r\nSEND OK\r\n"
            assert push_read(host, 5, len(payload))[0] == payload, i
        assert open_answer(host, 3) == 566
        assert h6.open_count(host, 3, mark) == 1
        wait_for(lambda: tcp_fds_to(huge.port) == 0, what="id 3's connection released")
        host.seen(b'+QSSLURC: "closed",2\r\n', 10)
        assert read_all(host, 2, len(burst)) == burst
        assert recv(host, 2) == b""
        host.seen(b'+QSSLURC: "closed",1\r\n', 20)
        assert read_all(host, 1, len(drip)) == drip
        assert recv(host, 1) == b""
        assert host.quiet_for(0.2) == b""
        for cid, want in ((0, 2), (5, 2), (1, 4), (2, 4)):
            assert h6.state(host, cid) == want, cid
        for cid, server, access in ((0, good0, 0), (5, good5, 1)):     # the note's fields, exact
            line = re.search(rb"\+QSSLSTATE: %d,.*\r\n" % cid, host.at(f"AT+QSSLSTATE={cid}")).group(0)
            local = server.conns[0].sock.getpeername()[1]
            assert line == b'+QSSLSTATE: %d,"SSLClient","good%d.example",443,%d,2,1,%d,%d,"usbmodem",1\r\n' % (
                cid, cid, local, cid, access), line
        for cid in (1, 2):
            assert host.transcript.count(b'+QSSLURC: "closed",%d' % cid) == 1
        for cid in (0, 5):
            assert b'+QSSLURC: "closed",%d' % cid not in host.transcript
        for cid in (0, 1, 2, 5):
            assert at(host, f"AT+QSSLCLOSE={cid},0") == OK
        wait_for(lambda: tcp_fds_to(good0.port) == 0 and tcp_fds_to(good5.port) == 0, what="released")



def test_ml302_one_hostile_server_among_good_ones(ml, emulator):
    """ML302 (AES128-SHA), four ssids: 0 an echo server; 1 a server dripping 300 one-byte
    records with a warning alert and an empty record between each, a byte per TCP segment,
    then close_notify; 2 one sending 4000 bytes, half a record, then an RST; 3 one whose
    Certificate announces 16 MiB.  While they do, the host's 20 echoes on ssid 0 come back
    byte-exact; ssid 1's and 2's bytes are read once, each gets one "close" URC, ssid 3 one
    -1; ssid 0 stays CONNECTED."""
    host, advance, port = ml
    drip = pattern(300, 87)
    burst = pattern(4000, 88)
    go = threading.Event()

    def dripper(c):
        c.handshake()
        go.wait(10)
        wire = b"".join(c.tx.seal(CT_APP, drip[i:i + 1]) + c.tx.seal(CT_ALERT, b"\x01\x5a")
                        + c.tx.seal(CT_APP, b"") for i in range(len(drip)))
        _drip(c, wire + c.tx.seal(CT_ALERT, b"\x01\x00"))
        c.server.stall()

    def resetter(c):
        c.handshake()
        go.wait(10)
        wire = c.app(burst, 1000)
        last = c.tx.seal(CT_APP, b"never whole")
        c.sock.sendall(wire + last[:len(last) // 2])
        time.sleep(0.3)
        send_rst(c.sock._sock)

    echo = lambda c: (c.handshake(), c.echo(), c.sock.close())      # noqa: E731
    cbc = {"suite": h6.RSA_CBC}
    with Hand(emulator, echo, name="good0.example", **cbc), \
            Hand(emulator, dripper, name="drip.example", **cbc), \
            Hand(emulator, resetter, name="reset.example", **cbc), \
            Hand(emulator, None, name="huge.example", glue=_huge_certificate, **cbc) as huge:
        for ssid, name in ((0, "good0"), (1, "drip"), (2, "reset")):
            ml_open(host, ssid, f"{name}.example")
            assert ml_answer(host, ssid) == 0
        go.set()
        mark = len(host.transcript)
        ml_open(host, 3, "huge.example")
        for i in range(20):
            payload = pattern(1 + 71 * i, 400 + i).replace(b"\x1a", b"z").replace(b"\x1b", b"e")
            assert ml_send(host, 0, payload) == b"\r\nSEND OK\r\n"
            assert ml_read_all(host, 0, len(payload)) == payload, i
        assert ml_answer(host, 3) == -1
        assert h6.open_count(host, 3, mark) == 1
        wait_for(lambda: tcp_fds_to(huge.port) == 0, what="ssid 3's connection released")
        host.seen(b'+QSSLURC: "close",2\r\n', 10)
        assert ml_read_all(host, 2, len(burst)) == burst
        assert ml_recv(host, 2) == b""
        host.seen(b'+QSSLURC: "close",1\r\n', 20)
        assert ml_read_all(host, 1, len(drip)) == drip
        assert ml_recv(host, 1) == b""
        assert host.quiet_for(0.2) == b""
        assert [ml_state(host, s) for s in range(4)] == ["CONNECTED", "REMOTE CLOSING", "REMOTE CLOSING",
                                                         "CLOSED"]
        for ssid in (1, 2):
            assert host.transcript.count(b'+QSSLURC: "close",%d' % ssid) == 1
        assert b'+QSSLURC: "close",0' not in host.transcript
        for ssid in (0, 1, 2):
            ml_close(host, ssid)


# == DTLS: the path reorders, replays and adds junk after the handshake ================================
DTLS_NAME, DTLS_PORT = "dtls10.example", 4433


def test_dtls_reordered_replayed_and_junk_datagrams_after_the_handshake(modem, emulator, pki):
    """`openssl s_server -dtls1_2` behind a path that, once the session is up, delivers the
    server's first five application datagrams in reverse order (each held back less than the
    one before) and one of them a second time later; the test also slips in a replay of the
    server's first handshake datagrams (epoch 0), a datagram of junk, and a record whose
    header claims epoch 1 but whose body fails its check.  RFC 6347 4.1.2.6-7: out-of-order
    records inside the replay window are taken, a replay and undecryptable or stale datagrams
    are discarded silently.  The host: each line once (in the order they arrived), nothing
    else, no "closed"; the socket still carries data both ways and closes."""
    from emulator.testing.peers import OpenSslServer, UdpMiddlebox
    from emulator.testing.peers.dtls_wire import records as dtls_records
    host, advance, port = modem
    seen = {"app": 0}

    def rule(direction, index, data):
        recs = dtls_records(data)
        if direction == "s2c" and recs and all(r.type == CT_APP for r in recs):
            k, seen["app"] = seen["app"], seen["app"] + 1
            if k < 5:
                out = [(0.8 - 0.15 * k, data)]
                if k == 1:
                    out.append((1.2, data))
                return out
        return [data]

    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2"])
    try:
        with UdpMiddlebox(server.address, rule) as box:
            emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", box.port)
            assert host.at('AT+QSSLCFG="dtls",2,1') == OK
            assert host.at(f'AT+QSSLOPEN=1,2,4,"{DTLS_NAME}",{DTLS_PORT},0') == OK
            assert open_answer(host, 4, timeout=30) == 0
            server.wait_for_output(rb"CIPHER is", 10)
            lines = [b"line %d of five\n" % i for i in range(5)]
            for line in lines:
                server.write(line)
                time.sleep(0.05)
            box.wait_for(lambda: seen["app"] >= 5, 5)
            first = box.sent("s2c")[:2]
            for d in first:                       # the server's handshake flights again (epoch 0)
                box.inject(d)
            box.inject(bytes([CT_APP, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\x00\x20" + bytes(32))
            box.inject(b"\x00junk that is no DTLS record at all" * 3)
            box.inject(bytes([CT_APP, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\xff\xd0" + bytes(65400 - 13))
            box.inject(bytes([CT_APP, 0xFE, 0xFD, 0, 1]) + bytes(6) + b"\x40\x00" + bytes(16384) * 2)
            time.sleep(1.5)                       # the held-back copies and the replay delivered
            got = read_all(host, 4, sum(map(len, lines)))
            assert recv(host, 4) == b""
            assert sorted(got.splitlines(keepends=True)) == lines, got
            assert b'+QSSLURC: "closed",4' not in host.transcript
            assert h6.state(host, 4) == 2
            assert host.send_data(4, b"still here\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"still here", 10)
            server.write(b"and back\n")
            host.seen(b'+QSSLURC: "recv",4\r\n', 10)
            assert read_all(host, 4, 9) == b"and back\n"
            assert host.quiet_for(0.2) == b""
            assert host.at("AT+QSSLCLOSE=4,0") == OK
    finally:
        server.stop()


# == a renegotiation answered with a ServerHello whose renegotiation_info is wrong ====================
def _verify_data(c, label_type: str) -> bytes:
    """The first handshake's Finished verify_data (client: the modem's, server: the server's)."""
    finished = [m for m in c.transcript if m[0] == 20]
    return finished[0 if label_type == "client" else 1][4:]


@pytest.mark.needs_native
@pytest.mark.parametrize("info", ["right", "empty", "wrong", "missing"])
def test_renegotiation_server_hello_with_bad_renegotiation_info(modem, emulator, caplog, info):
    """renegotiation 1.  The server sends 700 bytes, then a HelloRequest; to the modem's new
    ClientHello it answers, under the session's keys, a ServerHello whose renegotiation_info
    (RFC 5746 3.5: client_verify_data + server_verify_data of the first handshake) is right,
    empty, carries a wrong server_verify_data, or is missing.  Right: the modem waits for
    the Certificate (the session open, no alert).  Otherwise an attacker's splice: the modem
    aborts (RFC 5746 3.5: handshake_failure), the 700 bytes stay readable, one "closed",
    state 4, AT+QSSLSEND ERROR 567, the emulator's FIN, AT+QSSLCLOSE OK."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    before = pattern(700, 55)
    got, answered = [], threading.Event()

    def script(c):
        c.handshake()
        c.sock.sendall(c.tx.seal(CT_APP, before) + c.tx.seal(CT_HANDSHAKE, h6.hs(0, b"")))
        ct, payload = c.read_record()
        hello = c.rx.open(ct, payload)
        got.append((ct, hello))
        cvd, svd = _verify_data(c, "client"), _verify_data(c, "server")
        exts = {"right": h6.ext(h6.EXT_RENEG, bytes([24]) + cvd + svd),
                "empty": h6.ext(h6.EXT_RENEG, b"\x00"),
                "wrong": h6.ext(h6.EXT_RENEG, bytes([24]) + cvd + bytes(12)),
                "missing": b""}[info]
        sh = h6.hs(2, b"\x03\x03" + bytes(range(32)) + b"\x20" + bytes(32) + b"\x00\x9c\x00"
                   + len(exts).to_bytes(2, "big") + exts)
        c.sock.sendall(c.tx.seal(CT_HANDSHAKE, sh))
        answered.set()
        client_records(c, got)

    with Hand(emulator, script) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        assert answered.wait(10)
        conn = server.conns[0]
        assert got[0][0] == CT_HANDSHAKE and got[0][1][0] == 1            # the new ClientHello
        if info == "right":
            assert host.quiet_for(0.3).count(b'+QSSLURC: "recv",1') <= 1
            assert read_all(host, 1, len(before)) == before
            assert not conn.eof.is_set() and got[1:] == []
            assert h6.state(host, 1) == 2
            assert host.at("AT+QSSLCLOSE=1,0") == OK
            return
        host.seen(b'+QSSLURC: "closed",1\r\n', 10)
        assert conn.eof.wait(10), "the emulator never closed the connection"
        alerts = [p for ct, p in got[1:] if ct == CT_ALERT]
        assert alerts and alerts[0][0] == 2, got[1:]                      # a fatal alert
        assert not [p for ct, p in got[1:] if ct == CT_APP]
        assert read_all(host, 1, len(before)) == before
        assert recv(host, 1) == b""
        assert host.quiet_for(0.2) == b""
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        assert h6.state(host, 1) == 4
        assert host.send_data(1, b"x") == b"\r\nERROR\r\n"
        assert h6.qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=1,0") == OK
        reopen_works(host, server, 1)


# == the server's end during the modem's own close, a backlog still unsent ============================
@pytest.mark.parametrize("end", ["rst", "reads_then_fin"])
def test_server_ends_during_the_close_linger_with_a_backlog(modem, emulator, end):
    """The server reads nothing (a 4 KiB receive buffer); the host sends until SEND FAIL, then
    AT+QSSLCLOSE=<id>,10 (seconds, on the modem's manual clock, which does not move here):
    the close_notify waits behind the backlog.  The server then resets the connection, or
    reads everything and closes (FIN).  Either way the close ends with the connection: OK
    without the clock moving, no URC of the id (before or after), the id opens again.  When
    the server reads: every SEND OK byte in order, then the modem's close_notify."""
    from tests.e2e.test_adversarial_hostile_servers_9 import fill_until_send_fail
    host, advance, port = modem
    done = threading.Event()

    def script(c):
        c.handshake()
        c.server.release.wait(60)
        if end == "rst":
            send_rst(c.sock._sock)
            done.set()
            return
        try:
            while True:
                ct, payload = c.read_record()
                plain = c.rx.open(ct, payload)
                if ct == CT_APP:
                    c.plain += plain
                elif ct == CT_ALERT:
                    c.alerts.append(plain)
                    if plain == b"\x01\x00":
                        break
        finally:
            done.set()
        c.sock._sock.close()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        accepted = fill_until_send_fail(host, 4)
        mark = len(host.transcript)
        host.write(b"AT+QSSLCLOSE=4,10\r")
        assert host.quiet_for(0.3) == b""
        server.release.set()
        assert done.wait(20)
        assert host.read_until(OK, timeout=10) == OK
        conn = server.conns[0]
        if end == "reads_then_fin":
            assert bytes(conn.plain) == b"".join(accepted)
            assert conn.alerts == [b"\x01\x00"]
        assert h6.state(host, 4) is None
        assert host.quiet_for(0.2) == b""
        assert b"+QSSLURC" not in bytes(host.transcript[mark:])
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        reopen_works(host, server, 4)


# == a half-close while the host streams online ======================================================
def _half_closing_reader(state):
    """A server script: reads the client's records; after 64 KiB a bare FIN (shutdown(SHUT_WR),
    no close_notify), reading on to the client's end (state["end"]: "eof" or "rst")."""
    def script(c):
        c.handshake()
        try:
            while True:
                ct, payload = c.read_record()
                plain = c.rx.open(ct, payload)
                if ct == CT_APP:
                    c.plain += plain
                    if len(c.plain) >= 65536 and state.get("end") is None:
                        state["end"] = "half"
                        c.sock.shutdown(socket.SHUT_WR)
                else:
                    c.alerts.append(plain)
        except EOFError:
            state["end"] = "eof"
        except ConnectionResetError:
            state["end"] = "rst"
        c.eof.set()
    return script


def _stream_until_no_carrier(host, server, state) -> None:
    blob = bytes((i * 7) % 26 + 0x62 for i in range(1 << 20))        # "b".."{" : no "a", no "+"
    host.ser.write_timeout = 30
    writer = threading.Thread(target=lambda: [host.ser.write(blob[i:i + 65536])
                                              for i in range(0, len(blob), 65536)], daemon=True)
    writer.start()
    assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=20) == b"\r\nNO CARRIER\r\n"
    writer.join(30)
    assert not writer.is_alive()
    conn = server.conns[0]
    assert conn.eof.wait(20), "the emulator never closed its side"
    assert state["end"] == "eof", state
    got = bytes(conn.plain)
    assert len(got) >= 65536 and blob.startswith(got), len(got)
    assert host.quiet_for(0.3) == b""
    host.write(b"\r")
    host.quiet_for(0.3)
    assert host.at("AT") == OK


def test_half_close_while_the_host_streams_online(modem, emulator):
    """Transparent mode; the host streams 1 MiB (big writes: the modem seals them in jobs
    off the loop).  After 64 KiB the server half-closes (a bare FIN, no close_notify) and
    reads on to the end.  The host: NO CARRIER and nothing else, its remaining bytes are
    command-mode noise, then AT answers, state 4, AT+QSSLCLOSE OK.  The server: a prefix of
    the stream, in order, byte-exact (no record lost in the middle, none sealed twice), then
    the emulator's FIN, never an RST; no error logged."""
    host, advance, port = modem
    state = {}
    with Hand(emulator, _half_closing_reader(state)) as server:
        host.write(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,2\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        _stream_until_no_carrier(host, server, state)
        assert h6.state(host, 2) == 4
        assert host.at("AT+QSSLCLOSE=2,0") == OK
        reopen_works(host, server, 2)


def test_ml302_half_close_while_the_host_streams_online(ml, emulator):
    """ML302 connectmode 1 (AES128-SHA), the same half-closing server: NO CARRIER alone, a
    byte-exact prefix at the server then the emulator's FIN, REMOTE CLOSING, CLOSE OK."""
    host, advance, port = ml
    state = {}
    with Hand(emulator, _half_closing_reader(state), suite=h6.RSA_CBC) as server:
        host.write(f'AT+QSSLOPEN=4,0,"{NAME}",443,1\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        _stream_until_no_carrier(host, server, state)
        assert ml_state(host, 4) == "REMOTE CLOSING"
        ml_close(host, 4)
        ml_reopen_works(host, server, 4)


# == every record split at every byte boundary ========================================================
def test_records_split_at_every_byte_boundary_push_only_whole_records(modem, emulator):
    """Direct push.  48 application records of 20 bytes (49 bytes on the wire), record k cut
    into two TCP segments after its k-th byte (1..48: inside the header, the explicit nonce,
    the ciphertext, the tag) with a pause between them, each followed by a warning alert cut
    the same way (k modulo its 31 bytes), then a close_notify cut after its 7th byte.  Every
    push carries whole records only (its length a multiple of 20), the 960 bytes arrive once
    and in order, then one "closed"."""
    host, advance, port = modem
    payloads = [b"%03d:" % k + pattern(16, k) for k in range(1, 49)]
    go = threading.Event()

    def script(c):
        c.handshake()
        go.wait(10)
        for k, payload in enumerate(payloads, 1):
            rec = c.tx.seal(CT_APP, payload)
            assert len(rec) == 49
            alert = c.tx.seal(CT_ALERT, b"\x01\x5a")
            cut = 1 + k % (len(alert) - 1)
            for piece in (rec[:k], rec[k:] + alert[:cut], alert[cut:]):
                c.sock.sendall(piece)
                time.sleep(0.006)
        end = c.tx.seal(CT_ALERT, b"\x01\x00")
        c.sock.sendall(end[:7])
        time.sleep(0.05)
        c.sock.sendall(end[7:])
        c.server.stall()

    with Hand(emulator, script) as server:
        ssl_open(host, 3, 1)
        assert open_answer(host, 3) == 0
        go.set()
        want = b"".join(payloads)
        got, sizes = push_read(host, 3, len(want))
        assert got == want
        assert all(size % 20 == 0 for size in sizes), sizes
        assert host.read_until(b'+QSSLURC: "closed",3\r\n') == b'\r\n+QSSLURC: "closed",3\r\n'
        assert host.quiet_for(0.2) == b""
        assert h6.state(host, 3) == 4
        assert at(host, "AT+QSSLCLOSE=3,0") == OK
        assert server.conns[0].alerts == []


# == one single-use ticket offered by two sockets at once =============================================
def test_single_use_ticket_offered_by_two_sockets_at_once(modem, emulator):
    """Session cache on, a server whose RFC 5077 tickets are single-use (a new one in every
    handshake).  After a first open (ticket T issued), ids 1 and 2 are opened on ONE command
    line: both offer T; the server resumes the first to arrive and answers the other with a
    full handshake (T is spent: it "changed its mind" about it).  Both open (0 once each),
    both carry their own data byte-exact at the same time; a later open offers a ticket the
    server still holds and is resumed."""
    host, advance, port = modem
    with Hand(emulator, tickets=True, single_use=True) as server:
        ssl_open(host, 0)
        assert open_answer(host, 0) == 0
        h6.round_trip_and_close(host, 0, b"first")
        mark = len(host.transcript)
        assert at(host, f'AT+QSSLOPEN=1,1,1,"{NAME}",443,0;+QSSLOPEN=1,1,2,"{NAME}",443,0') == OK
        assert open_answer(host, 1) == 0
        assert open_answer(host, 2) == 0
        assert h6.open_count(host, 1, mark) == h6.open_count(host, 2, mark) == 1
        wait_for(lambda: len(server.conns) == 3 and all(c.rx is not None for c in server.conns), what="handshakes")
        t = server.hellos[0].ticket
        assert t is None and server.hellos[1].ticket == server.hellos[2].ticket is not None
        assert sorted(c.resumed for c in server.conns[1:]) == [False, True]
        one, two = pattern(1400, 61), pattern(1300, 62)
        assert host.send_data(1, one) == b"\r\nSEND OK\r\n"
        assert host.send_data(2, two) == b"\r\nSEND OK\r\n"
        assert read_all(host, 2, len(two)) == two
        assert read_all(host, 1, len(one)) == one
        for cid in (1, 2):
            assert at(host, f"AT+QSSLCLOSE={cid},0") == OK
        forget_answers(host, 3)
        ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        assert server.hellos[3].ticket is not None and server.conns[3].resumed
        h6.round_trip_and_close(host, 3)


# == the close's abort behind a backlog a server never took =========================================
# Was a bug, fixed (2026-12-06): AT+QSSLCLOSE's abort (close_timeout run out, or on a socket the peer half-closed) is a graceful FIN, not an RST: the kernel sends the part of the backlog it holds, asyncio's buffered tail is dropped, so the server reads a TLS record cut in the middle followed by a FIN -- emulator/sockets/ssl_socket.py _teardown() aborts the transport without SO_LINGER 0 (network.reset_on_close)
@pytest.mark.parametrize("how", ["close_timeout", "peer_half_closed"])
def test_close_abort_behind_a_backlog_resets_never_cuts_a_record(modem, emulator, how):
    """A server that reads nothing (4 KiB receive buffer); the host sends until SEND FAIL.
    close_timeout: AT+QSSLCLOSE=4,1 -- the close_notify cannot leave, the linger runs out on
    the modem clock, OK; behaviour.md (closetimemode): "then aborts (RST)".  peer_half_closed:
    the server half-closes first (a bare FIN), the host gets "closed" and closes; behaviour.md:
    AT+QSSLCLOSE on a socket the peer closed "drops what is left".  The server then reads:
    what it decrypts is a prefix of the SEND OK bytes, and the connection must end with a
    reset -- a dropped backlog is an abort (for a half-closed peer, delivering everything
    then a FIN would do too) -- never with a FIN right after half a TLS record (which no
    TCP/TLS stack sends: the server cannot tell a cut stream from a clean end)."""
    from tests.e2e.test_adversarial_hostile_servers_9 import fill_until_send_fail
    host, advance, port = modem
    state = {}

    def script(c):
        c.handshake()
        c.server.release.wait(60)
        if how == "peer_half_closed":
            c.sock.shutdown(socket.SHUT_WR)
            c.server.release.clear()
            c.server.release.wait(60)
        try:
            while True:
                ct, payload = c.read_record()
                plain = c.rx.open(ct, payload)
                if ct == CT_APP:
                    c.plain += plain
                else:
                    c.alerts.append(plain)
        except EOFError:
            state["end"] = "eof"
        except ConnectionResetError:
            state["end"] = "rst"
        c.eof.set()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        accepted = fill_until_send_fail(host, 4)
        if how == "close_timeout":
            host.write(b"AT+QSSLCLOSE=4,1\r")
            assert host.quiet_for(0.3) == b""
            advance(1.2)
            assert host.read_until(OK, timeout=5) == OK
        else:
            server.release.set()
            host.seen(b'+QSSLURC: "closed",4\r\n')
            assert host.at("AT+QSSLCLOSE=4,10") == OK
        server.release.set()
        conn = server.conns[0]
        assert conn.eof.wait(20)
        assert b"".join(accepted).startswith(bytes(conn.plain))
        assert h6.state(host, 4) is None
        cut = (state, f"{len(conn.buf)} bytes of a cut record before the FIN")
        if how == "close_timeout":
            assert state["end"] == "rst", cut
        else:           # (an abort, or a graceful close that delivered everything: not half of it)
            assert state["end"] == "rst" or (not conn.buf and bytes(conn.plain) == b"".join(accepted)), cut
