"""Hostile servers, ninth round: what rounds 1-8 (test_adversarial_hostile_servers*.py),
test_adversarial_hostile_peers_tcpip.py, test_adversarial_dtls_*.py, test_ssl_flow_control.py
and test_adversarial_transparent_escape.py do not do.

Peers: test_adversarial_hostile_servers_6's hand-made TLS 1.2 server (raw socket, RSA key
exchange, AES-128-GCM / CBC, session ids and RFC 5077 tickets), with its flights rewritten
on the wire here; test_adversarial_hostile_servers_2's OpenSSL-over-memory-BIO server whose
records the test seals itself; `openssl s_server -dtls1_2` behind a UdpMiddlebox; hand-made
UDP "DTLS servers".  Covered (EC2x unless said):

* RFC 5077 tickets gone wrong: the session_ticket extension acknowledged but no
  NewSessionTicket sent; a NewSessionTicket never announced; an empty ticket (the server
  "changed its mind", 3.3); a 16370-byte ticket that no later ClientHello can carry (one
  566 with Mbed TLS's BUFFER_TOO_SMALL, then a full handshake);
* the first flight reshaped: a second Certificate message (seclevel 0 and 1, the second
  one an untrusted chain), a ServerHelloDone with a body, a CertificateRequest where the
  Certificate belongs: Mbed TLS's own alert, never a certificate verdict on a message Mbed
  TLS never verified; the same and a suite / version the context forbids in transparent
  mode (ERROR, QIGETERROR 566) and on the ML302 (-1; connectmode 1: -1 then ERROR);
* resumption declined by a server whose certificate changed (seclevel 1, TLS and DTLS): a
  full handshake that fails its check, 566 once, the session forgotten;
* data phase: 16 KiB and one-byte records interleaved with a close_notify and records after
  it (direct push and transparent); close_notify followed by junk then an RST; records
  Mbed TLS refuses after data (another record version, empty handshake / alert records, a
  ciphertext past 2^14 + 2048); the end racing a pipelined run of AT+QSSLRECV (one-byte and
  odd reads; EC2x and ML302; an RST only once every byte was acknowledged);
* a server that stops reading: SEND FAIL then the server's end with the backlog unsent; the
  close's linger behind such a backlog (on modem time); another socket unaffected;
  transparent mode held back by flow control, then drained byte-exact; the server's end,
  a DTR drop (AT&D1 / AT&D2) or the host leaving while the host's stream is held back
  (also AT+QIOPEN "TCP" and the ML302); an escape and a send queued behind online bytes;
* DTLS: HelloVerifyRequests whose cookie changes (each ClientHello echoes the newest, its
  retransmission too, a stale replay ignored); a stale HelloVerifyRequest slipped behind
  s_server's ServerHello; a server's Certificate in split / reversed / overlapping DTLS
  fragments (seclevel 1, the right and a wrong CA); a server silent after its first flight
  while a transparent open waits (retransmissions on modem time, ERROR / 569).

One BUG (strict xfail): the bytes an attached host wrote online before closing the port are
dropped when the close comes while the pty reading is paused by flow control (a server that
does not read) -- docs/behaviour.md: "a transparent connection gets every byte".

Checked each time from the host's side: the exact answers and codes, one +QSSLOPEN per open,
one "closed" per socket, every byte once, AT+QSSLSTATE, AT answering, no ERROR log record
or traceback (ec2x_strict / ml302_strict).  Timers run on the modem's manual clock."""
from __future__ import annotations

import re
import socket
import struct
import threading
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import (CT_HANDSHAKE as D_HANDSHAKE, fragment,
                                              hello_verify_request, is_client_hello, records)
from emulator.testing.peers.dtls_wire import record as drecord
from tests.e2e import test_adversarial_hostile_servers_2 as h2
from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e.hostile_support import open_answer, recv, send_rst
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_dtls_paths import HostileServer
from tests.e2e.test_adversarial_hostile_peers_tcpip import outq
from emulator.sockets.service import ssl_service
from emulator.sockets.ssl_socket import CLOSING
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23
NAME = "www.iottest.work"           # a name the shared PKI's server certificate carries
OK = b"\r\nOK\r\n"


# == the hand-made server, its flights rewritten on the wire =========================================
class Rewriting:
    """A socket whose n-th sendall(data) goes out as rewrite(n, data)."""

    def __init__(self, sock: socket.socket, rewrite) -> None:
        self._sock, self._rewrite, self.calls = sock, rewrite, 0

    def sendall(self, data: bytes) -> None:
        n, self.calls = self.calls, self.calls + 1
        self._sock.sendall(self._rewrite(n, data) if self._rewrite else data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


class TicketConn(h6.Conn):
    """h6.Conn whose NewSessionTicket is chosen by the server's `ticket` policy:
    None -- as h6 (only when announced); "never" -- none, even when announced; "always" --
    one, even when not announced; "empty" -- a zero-length ticket when announced."""

    def _ticket(self, issue: bool, master: bytes, suite: int) -> bytes:
        how = self.server.ticket_policy
        if how is None:
            return super()._ticket(issue, master, suite)
        if how == "never" or (how == "empty" and not issue):
            return b""
        if how == "empty":
            msg = h6.hs(4, struct.pack(">IH", 300, 0))
            self.transcript.append(msg)
            return h6.record(CT_HANDSHAKE, msg)
        return super()._ticket(True, master, suite)


class Hand(h6.HandServer):
    """h6.HandServer routed from NAME:443; rewrite(n, data) reshapes the n-th write of each
    connection (0: the ServerHello flight of a full handshake); ticket: TicketConn's policy."""

    def __init__(self, emulator, script=None, *, rewrite=None, ticket: str | None = None, **kw) -> None:
        self.rewrite, self.ticket_policy = rewrite, ticket
        kw.setdefault("name", NAME)
        super().__init__(emulator, script, **kw)

    def make_conn(self, sock: socket.socket):
        conn = TicketConn(self, sock)
        conn.sock = Rewriting(sock, self.rewrite)
        return conn


def split_records(data: bytes) -> list[bytes]:
    """The whole records of data, each with its header."""
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack(">H", data[pos + 3:pos + 5])[0]
        out.append(data[pos:pos + 5 + size])
        pos += 5 + size
    return out


def cert_msg(*pems: bytes) -> bytes:
    from emulator.testing.peers.dtls_wire import cert_body, der
    return h6.hs(11, cert_body(*map(der, pems)))


# == host side ======================================================================================
@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    return ec2x_strict


def ssl_open(host, cid: int, mode: int = 0, name: str = NAME, ctx: int = 1) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{name}",443,{mode}') == OK


def seclevel_1(host, pki, ctx: int = 1) -> None:
    if b"ca9.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:ca9.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLCFG="seclevel",{ctx},1') == OK
    assert host.at(f'AT+QSSLCFG="cacert",{ctx},"UFS:ca9.pem"') == OK


def refused_once(host, server, cid: int, caplog, mark: int) -> None:
    """566 once at once, QIGETERROR 566, no socket left, the reason logged, TCP released."""
    assert open_answer(host, cid) == 566
    assert host.quiet_for(0.1) == b""
    assert h6.open_count(host, cid, mark) == 1
    assert h6.qigeterror(host) == 566
    assert h6.state(host, cid) is None
    assert f"SSL open {cid}" in h6.log_text(caplog)
    wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")


def reopen_works(host, server, cid: int) -> None:
    """The same id opens again on the (now well-behaved) server: a round trip, a close."""
    server.rewrite, server.ticket_policy = None, None
    server.script = lambda c: (c.handshake(), c.echo())
    server.policy.clear()
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    h6.round_trip_and_close(host, cid)
    assert host.at("AT") == OK


# == RFC 5077 tickets gone wrong ====================================================================
def test_ticket_acknowledged_but_never_sent_fails_with_unexpected_message(modem, emulator, caplog):
    """The ServerHello acknowledges the session_ticket extension (RFC 5077 3.2: the server
    MUST then send a NewSessionTicket) but the server goes straight to ChangeCipherSpec:
    Mbed TLS waits for the ticket and refuses the CCS with unexpected_message (10); the
    host gets one 566, the id opens again."""
    host, advance, port = modem
    with Hand(emulator, tickets=True, ticket="never") as server:
        mark = len(host.transcript)
        ssl_open(host, 2)
        refused_once(host, server, 2, caplog, mark)
        assert server.conns[0].alerts == [b"\x02\x0a"], server.conns[0].alerts
        assure_ticket_offered = server.hellos[0].extensions.get(h6.EXT_TICKET)
        assert assure_ticket_offered == b""             # an empty ticket extension: "I take one"
        reopen_works(host, server, 2)


def test_unannounced_new_session_ticket_fails_with_unexpected_message(modem, emulator, caplog):
    """A NewSessionTicket although the ServerHello did not acknowledge the extension (RFC 5077
    3.2: only after it): Mbed TLS expects the ChangeCipherSpec and refuses the ticket with
    unexpected_message: 566 once, nothing stored -- the next open offers no session id or
    ticket of that connection and is a full handshake."""
    host, advance, port = modem
    with Hand(emulator, ticket="always") as server:
        mark = len(host.transcript)
        ssl_open(host, 3)
        refused_once(host, server, 3, caplog, mark)
        assert server.conns[0].alerts == [b"\x02\x0a"], server.conns[0].alerts
        reopen_works(host, server, 3)
        assert server.hellos[-1].session_id == b"" and server.hellos[-1].ticket is None
        assert not server.conns[-1].resumed


def test_empty_ticket_opens_and_the_next_open_offers_no_ticket(modem, emulator):
    """RFC 5077 3.3: a NewSessionTicket with a zero-length ticket means the server changed its
    mind.  The open succeeds (0); the next open offers an empty session_ticket extension (no
    ticket) and is a full handshake, which also works."""
    host, advance, port = modem
    with Hand(emulator, tickets=True, ticket="empty") as server:
        for i in range(2):
            forget_answers(host, 4)
            ssl_open(host, 4)
            assert open_answer(host, 4) == 0
            h6.round_trip_and_close(host, 4, b"e%d" % i)
        assert [c.resumed for c in server.conns] == [False, False]
        assert server.hellos[1].extensions.get(h6.EXT_TICKET) == b""
        assert host.transcript.count(b"+QSSLOPEN: 4,") == 2


# == the first flight reshaped ========================================================================
def _second_certificate(pem: bytes):
    def rewrite(n: int, data: bytes) -> bytes:
        if n != 0:
            return data
        sh, cert, done = split_records(data)
        return sh + cert + h6.record(CT_HANDSHAKE, cert_msg(pem)) + done
    return rewrite


@pytest.mark.parametrize("seclevel", [0, 1])
def test_second_certificate_message_gets_mbedtls_decode_error(modem, emulator, caplog, pki, seclevel):
    """Certificate, then a second Certificate (an untrusted chain for the same name), then
    ServerHelloDone.  Mbed TLS (RSA key exchange) verifies the first, skips the key
    exchange, takes the second for "not a CertificateRequest" and refuses it where it wants
    the ServerHelloDone: decode_error (50).  The same at seclevel 1: the second chain is
    never a verdict (no unknown_ca); 566 once."""
    host, advance, port = modem
    if seclevel:
        seclevel_1(host, pki)
    with Hand(emulator, rewrite=_second_certificate(pki.wrong_server.cert_pem)) as server:
        mark = len(host.transcript)
        ssl_open(host, 5)
        refused_once(host, server, 5, caplog, mark)
        assert server.conns[0].alerts == [b"\x02\x32"], server.conns[0].alerts
        assert [m[0] for m in server.conns[0].transcript] == [1, 2, 11, 14]
        reopen_works(host, server, 5)


def test_server_hello_done_with_a_body_gets_decode_error(modem, emulator, caplog):
    """A ServerHelloDone carrying one byte (RFC 5246: it is empty): decode_error, 566 once."""
    host, advance, port = modem

    def rewrite(n: int, data: bytes) -> bytes:
        if n != 0:
            return data
        sh, cert, _done = split_records(data)
        return sh + cert + h6.record(CT_HANDSHAKE, h6.hs(14, b"\x00"))

    with Hand(emulator, rewrite=rewrite) as server:
        mark = len(host.transcript)
        ssl_open(host, 6)
        refused_once(host, server, 6, caplog, mark)
        assert server.conns[0].alerts == [b"\x02\x32"], server.conns[0].alerts
        reopen_works(host, server, 6)


def test_certificate_request_before_the_certificate_is_refused(modem, emulator, caplog, pki):
    """A CertificateRequest where the Certificate belongs (seclevel 1): Mbed TLS refuses it as
    a bad Certificate message (decode_error, -0x7A00); no certificate verdict, 566 once."""
    host, advance, port = modem
    seclevel_1(host, pki)
    request = h6.hs(13, b"\x01\x01" + b"\x00\x02\x04\x01" + b"\x00\x00")

    def rewrite(n: int, data: bytes) -> bytes:
        if n != 0:
            return data
        sh, cert, done = split_records(data)
        return sh + h6.record(CT_HANDSHAKE, request) + cert + done

    with Hand(emulator, rewrite=rewrite) as server:
        mark = len(host.transcript)
        ssl_open(host, 7)
        refused_once(host, server, 7, caplog, mark)
        assert server.conns[0].alerts == [b"\x02\x32"], server.conns[0].alerts
        reopen_works(host, server, 7)


def test_declined_resumption_with_a_changed_untrusted_certificate(modem, emulator, caplog, pki, monkeypatch):
    """seclevel 1, session cache on: the first open is verified and cached; the server then
    forgets its sessions and presents a certificate from another CA.  The second open offers
    the cached id, gets a full handshake and must verify it: unknown_ca (48), 566 once; the
    session is forgotten, so the third open (the right certificate again) offers none and is
    a full, verified handshake."""
    host, advance, port = modem
    seclevel_1(host, pki)
    with Hand(emulator) as server:
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        h6.round_trip_and_close(host, 8)
        server.sessions.clear()
        wrong = pki.wrong_server
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        monkeypatch.setattr(h6, "identity", lambda: (
            x509.load_pem_x509_certificate(wrong.cert_pem).public_bytes(serialization.Encoding.DER),
            serialization.load_pem_private_key(wrong.key_pem, None)))
        forget_answers(host, 8)
        mark = len(host.transcript)
        ssl_open(host, 8)
        refused_once(host, server, 8, caplog, mark)
        assert server.hellos[1].session_id == server.conns[0].transcript[1][39:71]
        assert server.conns[1].alerts == [b"\x02\x30"], server.conns[1].alerts
        monkeypatch.undo()
        reopen_works(host, server, 8)
        assert server.hellos[2].session_id == b"" and not server.conns[2].resumed


# == data phase: 16 KiB records, close_notify and what follows it ===================================
Server, Conn, pattern = h2.Server, h2.Conn, h2.pattern
WARNING, FATAL = h2.WARNING, h2.FATAL


def push_collect(host, cid: int, want: int, timeout: float = 20) -> bytes:
    """Direct push: the bytes of +QSSLURC: "recv",<id>,<len> URCs (each <len> bytes, then
    CR LF) until want bytes came."""
    push = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % cid)
    got = bytearray()
    while len(got) < want:
        line = host.read_until(push, timeout=timeout)
        m = push.fullmatch(line)
        assert m, line[:120]
        assert 0 < int(m.group(1)) <= 1500
        got += host.read_exactly(int(m.group(1)), timeout=timeout)
        assert host.read_exactly(2, timeout=timeout) == b"\r\n"     # the push's end
    return bytes(got)


@pytest.mark.parametrize("size", [16384, 1], ids=["16k_records", "1_byte_records"])
@pytest.mark.parametrize("mode", [1, 2], ids=["push", "transparent"])
def test_records_close_notify_then_more_records_never_reach_the_host(ec2x_strict, emulator, mode, size):
    """Full 16384-byte records (49152 bytes) or 3000 one-byte records, then a close_notify,
    then more records (16 KiB ones / one-byte ones, and an empty one) with the TCP connection
    left open: the bytes before the close_notify arrive once and in order (pushed in URCs of
    at most 1500 bytes / unframed online), then one end report ("closed" / NO CARRIER);
    nothing after the close_notify ever reaches the host; state 4; the emulator closes its
    side by itself."""
    host, advance, port = ec2x_strict
    before = pattern(3 * 16384, 90) if size > 1 else pattern(3000, 91)
    ghost = b"GHOST..." * 2048 if size > 1 else b"GHOST..." * 20
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before, size) + c.alert(WARNING, 0) + c.app(ghost + ghost, size)
                       + c.seal(CT_APP, b""))
        c.server.stall()

    with Server(script, emulator) as server:
        if mode == 1:
            h2.ssl_open(host, 9, mode=1)
            assert open_answer(host, 9) == 0
            go.set()
            assert push_collect(host, 9, len(before)) == before
            assert host.read_until(b'+QSSLURC: "closed",9\r\n') == b'\r\n+QSSLURC: "closed",9\r\n'
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,9,"{h2.NAME}",443,2') == b"\r\nCONNECT\r\n"
            go.set()
            got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=20)
            assert got == before + b"\r\nNO CARRIER\r\n"
        wait_for(server.conns[0].eof.is_set, 5, "the emulator closes its side")
        assert host.quiet_for(0.2) == b""
        assert b"GHOST" not in bytes(host.transcript)
        assert h2.state(host, 9) == 4
        if mode == 2:
            assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QSSLCLOSE=9") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",9') == (1 if mode == 1 else 0)
        assert server.conns[0].alerts() == []          # the modem cannot answer it (behaviour.md)


def test_close_notify_then_junk_then_rst(ec2x_strict, emulator, caplog):
    """Data, close_notify, then 300 bytes that are no TLS record at all, then an RST: the data
    are read once, one "closed", no error logged (the junk after the end is never parsed),
    AT+QSSLSEND then ERROR 567, the id opens again."""
    host, advance, port = ec2x_strict
    data = pattern(5000, 4)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(data) + c.alert(WARNING, 0) + b"\xff\x00junk" * 50)
        time.sleep(0.1)
        send_rst(c.sock)

    with Server(script, emulator) as server:
        h2.ssl_open(host, 10)
        assert open_answer(host, 10) == 0
        go.set()
        host.seen(b'+QSSLURC: "closed",10\r\n')
        assert h2.read_all(host, 10, len(data), sizes=(1500, 333)) == data
        assert recv(host, 10) == b""
        assert host.send_data(10, b"late") == b"\r\nERROR\r\n"
        assert h2.qigeterror(host) == 567
        assert h2.state(host, 10) == 4
        assert host.at("AT+QSSLCLOSE=10") == OK
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert host.transcript.count(b'+QSSLURC: "closed",10') == 1
    assert "close_notify" in h2.log_text(caplog)
    forget_answers(host, 10)
    h2.still_usable(host, emulator, 10)


# == the end racing a pipelined run of AT+QSSLRECV ==================================================
def read_pipelined(host, cid: int, count: int) -> tuple[bytes, bytes]:
    """The answers of `count` pipelined AT+QSSLRECV=<cid>,<n> lines: (their data joined, the
    URC text found between them).  Each answer's framing is checked."""
    data, between = bytearray(), bytearray()
    head = re.compile(rb"\r\n\+QSSLRECV: (\d+)\r\n")
    for _ in range(count):
        got = host.read_until(head)
        m = head.search(got)
        between += got[:m.start()]
        n = int(m.group(1))
        if n:
            data += host.read_exactly(n)
            assert host.read_exactly(8) == b"\r\n\r\nOK\r\n"
        else:
            assert host.read_exactly(6) == OK
    return bytes(data), bytes(between)


@pytest.mark.parametrize("end", ["close_notify_rst", "fatal_alert", "fin"])
def test_end_racing_a_pipelined_run_of_qsslrecv(ec2x_strict, emulator, end):
    """The host writes 120 AT+QSSLRECV lines (lengths 1, 7, 250 in turn) in one go while the
    server pours 30000 more bytes and ends (close_notify + RST / a fatal alert / a bare FIN):
    every answer is whole and framed, the bytes arrive once and in order whatever the answer
    lengths, the only URCs between answers are "recv"/"closed" ones and "closed" comes once,
    after which reads give the rest and then +QSSLRECV: 0; state 4."""
    host, advance, port = ec2x_strict
    first, more = pattern(3000, 1), pattern(30000, 3000 // 4 + 1)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(first))
        go.wait(10)
        for i in range(0, len(more), 1000):
            c.sock.sendall(c.app(more[i:i + 1000]))
        if end != "fin":                 # (sealed last: records carry sequence numbers)
            c.sock.sendall(c.alert(WARNING, 0) if end == "close_notify_rst" else c.alert(FATAL, 80))
        if end == "close_notify_rst":
            # The RST only once the modem's stack acknowledged every byte (an RST discards
            # what the server could not send yet: TCP's loss, not the modem's).
            wait_for(lambda: outq(c.sock) == 0, 10, "every byte acknowledged")
            send_rst(c.sock)
        else:
            c.sock.shutdown(socket.SHUT_WR)
            c.server.stall()

    with Server(script, emulator):
        h2.ssl_open(host, 11)
        assert open_answer(host, 11) == 0
        host.seen(b'+QSSLURC: "recv",11\r\n')
        sizes = [1, 7, 250] * 40
        host.write(b"".join(b"AT+QSSLRECV=11,%d\r" % n for n in sizes))
        go.set()
        got, between = read_pipelined(host, 11, len(sizes))
        assert re.fullmatch(rb'(\r\n\+QSSLURC: "(recv|closed)",11\r\n)*', between), between
        host.seen(b'+QSSLURC: "closed",11\r\n')
        got += h2.read_all(host, 11, len(first) + len(more) - len(got), sizes=(1500,))
        assert got == first + more
        assert recv(host, 11) == b""
        assert host.transcript.count(b'+QSSLURC: "closed",11') == 1
        assert h2.state(host, 11) == 4
        assert host.at("AT+QSSLCLOSE=11") == OK
        assert host.at("AT") == OK


# == a server that stops reading while the host sends ================================================
def fill_until_send_fail(host, cid: int, limit: int = 48 << 20) -> list[bytes]:
    """AT+QSSLSEND 1460-byte chunks until SEND FAIL; the chunks answered SEND OK."""
    accepted, total, i = [], 0, 0
    while True:
        chunk = pattern(1460, 7919 * i)
        i += 1
        result = host.send_data(cid, chunk)
        if result == b"\r\nSEND FAIL\r\n":
            return accepted
        assert result == b"\r\nSEND OK\r\n", result
        accepted.append(chunk)
        total += len(chunk)
        assert total < limit, "no SEND FAIL"


@pytest.mark.parametrize("end", ["fatal_alert_rst", "close_notify_fin"])
def test_send_fail_then_the_stalled_server_ends_with_the_backlog_unsent(modem, emulator, caplog, end):
    """The server reads nothing (a 4 KiB receive buffer), the host sends until SEND FAIL; the
    server then ends the session (a fatal alert + RST, or close_notify + FIN) with the
    modem's backlog still unsent: one "closed" (the end is read although the modem's own
    writes are stuck), AT+QSSLSEND ERROR 567, state 4, AT+QSSLCLOSE answers at once (no
    linger on a dead connection), the id opens again."""
    host, advance, port = modem
    ended = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        if end == "fatal_alert_rst":
            c.sock.sendall(c.tx.seal(CT_ALERT, b"\x02\x50"))
            send_rst(c.sock)
        else:
            c.sock.sendall(c.tx.seal(CT_ALERT, b"\x01\x00"))
            c.sock.shutdown(socket.SHUT_WR)
            ended.set()
            h6.Conn.reader(c)                  # then it reads: whatever comes, then the end
        ended.set()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        accepted = fill_until_send_fail(host, 1)
        assert accepted
        server.release.set()
        assert ended.wait(10)
        host.seen(b'+QSSLURC: "closed",1\r\n')
        assert host.send_data(1, b"x") == b"\r\nERROR\r\n"
        assert h6.qigeterror(host) == 567
        assert h6.state(host, 1) == 4
        assert host.at("AT+QSSLCLOSE=1,30", timeout=5) == OK
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        conn = server.conns[0]
        if end == "close_notify_fin":
            wait_for(conn.eof.is_set, 10, "the modem's end")
            sent = b"".join(accepted)
            assert sent.startswith(bytes(conn.plain)), "bytes the server got are not SEND OK's, in order"
        reopen_works(host, server, 1)


def test_transparent_host_held_back_by_a_stalled_server_then_everything_arrives(modem, emulator):
    """Transparent mode: the host writes 6 MiB while the server reads nothing (a 4 KiB
    receive buffer): the emulator stops reading the pty (the host's write blocks, nothing is
    dropped); the server then reads: every byte arrives once, in order; "+++" then answers OK
    and the connection is still there (AT+QSSLSTATE: state 2, access mode 2)."""
    host, advance, port = modem
    data = pattern(6 << 20, 11)
    written = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    def writer() -> None:
        host.ser.write_timeout = 30
        host.write(data)
        written.set()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        t = threading.Thread(target=writer, daemon=True)
        t.start()
        time.sleep(1.0)
        assert not written.is_set(), "6 MiB vanished into a server that reads nothing"
        server.release.set()
        assert written.wait(30)
        conn = server.conns[0]
        wait_for(lambda: len(conn.plain) >= len(data), 30, "every byte at the server", every=0.05)
        assert bytes(conn.plain) == data
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        assert re.search(rb'\+QSSLSTATE: 2,"SSLClient","%s",443,\d+,2,1,2,2,' % NAME.encode(),
                         host.at("AT+QSSLSTATE=2"))
        assert host.at("AT+QSSLCLOSE=2,0") == OK
        assert len(conn.plain) == len(data)


# == DTLS: HelloVerifyRequests whose cookie changes ===================================================
DTLS_NAME, DTLS_PORT = "www.iottest.work", 5684


def client_hello_fields(datagram: bytes) -> tuple[int, bytes, bytes]:
    """(message_seq, random, cookie) of a ClientHello datagram."""
    rec = records(datagram)[0]
    msg = rec.payload
    msg_seq = int.from_bytes(msg[4:6], "big")
    body = msg[12:]
    random = body[2:34]
    sid = body[34]
    n = body[35 + sid]
    return msg_seq, random, body[36 + sid:36 + sid + n]


def dtls_ctx(host, emulator, port: int, negotiatetime: int = 10, ctx: int = 2) -> None:
    emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", port)
    assert host.at(f'AT+QSSLCFG="dtls",{ctx},1') == OK
    assert host.at(f'AT+QSSLCFG="negotiatetime",{ctx},{negotiatetime}') == OK


def dtls_open(host, cid: int, ctx: int = 2, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{DTLS_NAME}",{DTLS_PORT},{mode}') == OK


def test_dtls_cookie_changed_by_a_second_hello_verify_request(ec2x_strict, emulator):
    """HelloVerifyRequest (cookie A, message_seq 0), then to the ClientHello carrying A a
    second one (cookie B, message_seq 1, as a server whose cookie secret rotated), then a
    replay of the first (message_seq 0, a later record number): each ClientHello echoes the
    newest cookie (A, then B), with the same random (RFC 6347 4.2.1) and the next
    message_seq; the stale replay changes nothing (the retransmission after 1 s of modem
    time still carries B); then silence: 569 once at negotiatetime, and no ClientHello after."""
    host, advance, port = ec2x_strict
    cookie_a, cookie_b = b"A" * 20, b"B" * 32

    def answer(index, data):
        if index == 0:
            return [hello_verify_request(cookie_a, msg_seq=0, rec_seq=0)]
        if index == 1:
            return [hello_verify_request(cookie_b, msg_seq=1, rec_seq=1),
                    hello_verify_request(cookie_a, msg_seq=0, rec_seq=7)]
        return []

    with HostileServer(answer) as hostile:
        dtls_ctx(host, emulator, hostile.port)
        dtls_open(host, 3)
        wait_for(lambda: len(hostile.received) >= 3, 5, "the third ClientHello")
        time.sleep(0.2)
        assert len(hostile.received) == 3, "the stale HelloVerifyRequest was answered"
        advance(1.1)
        wait_for(lambda: len(hostile.received) >= 4, 5, "the retransmission")
        fields = [client_hello_fields(d) for d in hostile.received[:4]]
        assert all(is_client_hello(d) for d in hostile.received[:4])
        assert [f[2] for f in fields] == [b"", cookie_a, cookie_b, cookie_b]
        assert [f[0] for f in fields] == [0, 1, 2, 2]
        assert len({f[1] for f in fields}) == 1, "the random changed"
        assert open_answer_count(host, 3) == 0
        advance(9.5)
        assert open_answer(host, 3) == 569
        time.sleep(0.3)                       # (datagrams the modem sent before it gave up)
        n = len(hostile.received)
        advance(10)
        time.sleep(0.3)
        assert len(hostile.received) == n
        assert open_answer_count(host, 3) == 1
        assert host.at("AT+QSSLCLOSE=3") == OK
        assert host.at("AT") == OK


def open_answer_count(host, cid: int) -> int:
    host._fill()
    return bytes(host.transcript).count(b"+QSSLOPEN: %d," % cid)


def test_dtls_hello_verify_request_after_the_server_hello_is_ignored(ec2x_strict, emulator, pki):
    """`openssl s_server -dtls1_2` (its own cookie exchange first) behind a path that slips a
    HelloVerifyRequest with a new cookie and a message_seq already used right behind the
    datagram of the ServerHello: Mbed TLS drops it as out of sequence (no new ClientHello);
    the open succeeds once and data flow."""
    host, advance, port = ec2x_strict
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    injected = []

    def rule(direction, index, data):
        if direction == "s2c" and not injected and any(
                r.epoch == 0 and r.type == D_HANDSHAKE and r.payload[:1] == b"\x02" for r in records(data)):
            injected.append(data)                  # (the datagram with the ServerHello)
            return [data, hello_verify_request(b"late-cookie", msg_seq=0, rec_seq=50)]
        return [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            dtls_ctx(host, emulator, box.port, negotiatetime=30)
            dtls_open(host, 4)
            assert open_answer(host, 4, timeout=20) == 0
            assert injected
            hellos = [d for d in box.sent("c2s") if is_client_hello(d)]
            assert not any(b"late-cookie" in d for d in hellos), "a ClientHello answered the stale request"
            server.wait_for_output(rb"CIPHER is", 10)
            assert host.send_data(4, b"after the late cookie\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"after the late cookie", 10)
            server.write(b"ok\n")
            assert h2.read_all(host, 4, 3) == b"ok\n"
            assert host.transcript.count(b"+QSSLOPEN: 4,") == 1
            assert host.at("AT+QSSLCLOSE=4,0") == OK
    finally:
        server.stop()


# == DTLS: a Certificate in reversed and overlapping fragments ========================================
def refragment_certificate(counter: dict, style: str):
    """A middlebox rule: every epoch-0 handshake record of the server that carries (part of) a
    Certificate is cut into 60-byte fragments -- in order ("split"), last first ("reversed"),
    or last first with one more fragment overlapping two of them ("reversed_overlapping");
    every epoch-0 record of the server renumbered in order (record sequence numbers must
    stay unique and in Mbed TLS's replay window), encrypted records passed as they came."""
    def rule(direction, index, data):
        try:
            return cut(direction, data)
        except Exception as exc:           # noqa: BLE001 - reported by the test
            counter.setdefault("errors", []).append(repr(exc))
            return [data]

    def cut(direction, data):
        if direction != "s2c":
            return [data]
        out = b""
        for r in records(data, whole=True):
            payload = r.payload
            if r.epoch != 0:                       # encrypted: as it came
                out += drecord(r.type, payload, epoch=r.epoch, seq=r.seq)
                continue
            if r.type != D_HANDSHAKE or payload[0] != 11:
                out += drecord(r.type, payload, seq=counter["seq"])
                counter["seq"] += 1
                continue
            total = int.from_bytes(payload[1:4], "big")
            msg_seq = int.from_bytes(payload[4:6], "big")
            off = int.from_bytes(payload[6:9], "big")
            length = int.from_bytes(payload[9:12], "big")
            whole = bytearray(total)               # only [off, off + length) is known here
            whole[off:off + length] = payload[12:12 + length]
            end = off + length
            pieces = [(o, min(60, end - o)) for o in range(off, end, 60)]
            if style == "reversed_overlapping" and len(pieces) >= 3:
                pieces.insert(1, (pieces[1][0] + 30, min(60, end - pieces[1][0] - 30)))
            counter["frags"] += len(pieces)
            for o, n in (pieces if style == "split" else reversed(pieces)):
                out += drecord(D_HANDSHAKE, fragment(11, bytes(whole), msg_seq, o, n), seq=counter["seq"])
                counter["seq"] += 1
        return [out]
    return rule


@pytest.mark.parametrize("style", ["split", "reversed", "reversed_overlapping"])
def test_dtls_certificate_in_reordered_fragments_is_verified(ec2x_strict, emulator, pki, style):
    """seclevel 1 with the right CA: the server's Certificate arrives cut into 60-byte DTLS
    fragments, in order, last first, or last first with one range sent twice overlapping
    its neighbours (all legal: RFC 6347 4.2.3 lets a client reassemble in any order):
    Mbed TLS reassembles it; the
    emulator's own check of the chain must see the same message -- the open succeeds once
    and data flow.  (The control: the same path with the wrong CA is 566.)"""
    host, advance, port = ec2x_strict
    if b"ca9.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:ca9.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    assert host.upload("UFS:wrongca9.pem", pki.wrong_ca.cert_pem).endswith(b"OK\r\n")
    cert, key = pki.server.load_args
    for cid, ca, want in ((5, "UFS:ca9.pem", 0), (6, "UFS:wrongca9.pem", 566)):
        # (a fresh s_server each time: a ClientHello it misses while it starts listening
        # again would wait for a retransmission on the modem's manual clock)
        server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
        try:
            counter = {"seq": 1000, "frags": 0}
            with UdpMiddlebox(server.address, refragment_certificate(counter, style)) as box:
                dtls_ctx(host, emulator, box.port, negotiatetime=30)
                assert host.at('AT+QSSLCFG="seclevel",2,1') == OK
                assert host.at(f'AT+QSSLCFG="cacert",2,"{ca}"') == OK
                dtls_open(host, cid)
                assert open_answer(host, cid, timeout=20) == want, counter
                assert "errors" not in counter, counter
                assert counter["frags"] > 5, counter
                assert host.quiet_for(0.2) == b""
                assert host.transcript.count(b"+QSSLOPEN: %d," % cid) == 1
                if want == 0:
                    server.wait_for_output(rb"CIPHER is", 10)
                    assert host.send_data(cid, b"reassembled\n") == b"\r\nSEND OK\r\n"
                    server.wait_for_output(rb"reassembled", 10)
                    assert host.at(f"AT+QSSLCLOSE={cid},0") == OK
                else:
                    assert h2.qigeterror(host) == 566
                    assert host.at(f"AT+QSSLCLOSE={cid}") == OK
        finally:
            server.stop()


# == ML302 ==========================================================================================
ML_STATE = re.compile(rb'\+QSSLSTATE: (\d),"TCP","([0-9.]*)",(\d+),"([A-Z ]+)",(\d)\r\n')


def ml_state(host, ssid: int) -> str:
    for m in ML_STATE.finditer(host.at("AT+QSSLSTATE")):
        if int(m.group(1)) == ssid:
            return m.group(4).decode()
    raise AssertionError(f"no line for {ssid}")


def ml_open(host, ssid: int, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{NAME}",443,{mode}') == OK


def ml_close(host, ssid: int) -> None:
    assert host.at(f"AT+QSSLCLOSE={ssid}") == OK
    want = b"\r\n%d,CLOSE OK\r\n" % ssid
    assert host.read_until(want, timeout=5) == want


def ml_recv(host, ssid: int, n: int) -> bytes:
    """One AT+QSSLRECV=1,<ssid>,<n> (a "recv" URC raised just before it taken out of the way)."""
    answer = host.at(f"AT+QSSLRECV=1,{ssid},{n}")
    answer = re.sub(rb'^(\r\n\+QSSLURC: "recv",1,%d\r\n)+' % ssid, b"", answer)
    if answer == OK:
        return b""
    m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
    assert m, answer
    size = int(m.group(1))
    assert 0 < size <= n and answer[m.end() + size:] == b"\r\n\r\nOK\r\n", answer[-40:]
    return answer[m.end():m.end() + size]


@pytest.fixture
def ml(ml302_strict):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    return ml302_strict


def ml_refused_then_usable(host, server, ssid: int) -> None:
    def fix():
        server.rewrite, server.ticket_policy = None, None
    ml_refused_then_usable_with(host, server, ssid, fix)


def ml_refused_then_usable_tail(host, server, ssid: int) -> None:
    """The ssid opens again on the (now well-behaved) server: a round trip, CLOSE OK."""
    server.rewrite, server.ticket_policy = None, None
    server.script = lambda c: (c.handshake(), c.echo(), c.sock.close())   # (no linger)
    ml_open(host, ssid)
    assert host.seen(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % ssid), 10) == b"+QSSLOPEN: %d,0\r\n" % ssid
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"ml302 ok\x1a")
    assert host.read_until(b"\r\nSEND OK\r\n") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "recv",1,%d\r\n' % ssid)
    assert ml_recv(host, ssid, 100) == b"ml302 ok"
    ml_close(host, ssid)


def test_ml302_unannounced_new_session_ticket_is_minus_1_once(ml, emulator):
    """ML302 (AES128-SHA): a NewSessionTicket the ServerHello never announced: Mbed TLS's
    unexpected_message alert, +QSSLOPEN: <ssid>,-1 once, the ssid CLOSED and free."""
    host, advance, port = ml
    with Hand(emulator, suite=h6.RSA_CBC, ticket="always") as server:
        ml_refused_then_usable(host, server, 1)
        assert server.conns[0].alerts == [b"\x02\x0a"], server.conns[0].alerts


def test_ml302_second_certificate_message_is_minus_1_once(ml, emulator, pki):
    """ML302: a second Certificate message before the ServerHelloDone: decode_error, -1 once."""
    host, advance, port = ml
    with Hand(emulator, suite=h6.RSA_CBC, rewrite=_second_certificate(pki.wrong_server.cert_pem)) as server:
        ml_refused_then_usable(host, server, 2)
        assert server.conns[0].alerts == [b"\x02\x32"], server.conns[0].alerts


@pytest.mark.parametrize("end", ["close_notify", "fin"])
def test_ml302_end_racing_a_pipelined_run_of_qsslrecv(ml, emulator, end):
    """ML302: 90 pipelined AT+QSSLRECV=1,<ssid>,<n> (n 1, 13, 400) while the server pours
    20000 bytes in 500-byte records and ends: each answer framed (`+QSSLRECV:
    <ip>:443,TCP,<n>` with its data, or OK alone when empty), the bytes once and in order,
    "close" once; REMOTE CLOSING until AT+QSSLCLOSE, then CLOSE OK."""
    host, advance, port = ml
    data = pattern(20000, 77)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(c.app(data[:500]))
        go.wait(10)
        for i in range(500, len(data), 500):
            c.sock.sendall(c.app(data[i:i + 500]))
        if end == "close_notify":
            c.sock.sendall(c.tx.seal(CT_ALERT, b"\x01\x00"))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with Hand(emulator, script, suite=h6.RSA_CBC):
        ml_open(host, 3)
        assert host.seen(re.compile(rb"\+QSSLOPEN: 3,-?\d+\r\n"), 10) == b"+QSSLOPEN: 3,0\r\n"
        host.seen(b'+QSSLURC: "recv",1,3\r\n')
        sizes = [1, 13, 400] * 30
        host.write(b"".join(b"AT+QSSLRECV=1,3,%d\r" % n for n in sizes))
        go.set()
        got, between = bytearray(), bytearray()
        answer = re.compile(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n|\r\nOK\r\n")
        for _ in sizes:
            chunk = host.read_until(answer)
            m = answer.search(chunk)
            between += chunk[:m.start()]
            if m.group(1):
                got += host.read_exactly(int(m.group(1)))
                assert host.read_exactly(8) == b"\r\n\r\nOK\r\n"
        assert re.fullmatch(rb'(\r\n\+QSSLURC: "(recv",1|close)",3\r\n)*', bytes(between)), bytes(between)
        host.seen(b'+QSSLURC: "close",3\r\n')
        while len(got) < len(data):
            chunk = ml_recv(host, 3, 1500)
            assert chunk, f"only {len(got)} of {len(data)} bytes"
            got += chunk
        assert bytes(got) == data
        assert ml_recv(host, 3, 1500) == b""
        assert host.transcript.count(b'+QSSLURC: "close",3') == 1
        assert ml_state(host, 3) == "REMOTE CLOSING"
        ml_close(host, 3)
        assert ml_state(host, 3) == "CLOSED"


# == the server's end while the host's online bytes are held back ====================================
@pytest.mark.parametrize("end", ["fatal_alert_rst", "close_notify_fin"])
def test_server_ends_while_the_hosts_online_stream_is_held_back(modem, emulator, end):
    """Transparent mode, the server reading nothing (4 KiB receive buffer) while the host
    writes 6 MiB of "x" (no "AT" in it): the emulator stops reading the pty.  The server then
    ends the session: NO CARRIER, and the bytes the host had not got through become command
    input -- junk without "AT", dropped silently (no ERROR for it), so the host's write
    completes, the modem answers AT, the socket is in state 4 and closes with OK."""
    host, advance, port = modem
    data = b"x" * (6 << 20)
    written = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        if end == "fatal_alert_rst":
            c.sock.sendall(c.tx.seal(CT_ALERT, b"\x02\x50"))
            send_rst(c.sock)
        else:
            c.sock.sendall(c.tx.seal(CT_ALERT, b"\x01\x00"))
            c.sock.shutdown(socket.SHUT_WR)
            c.server.stall()

    def writer() -> None:
        host.ser.write_timeout = 30
        host.write(data)
        written.set()

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=1,1,3,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.8)
        assert not written.is_set(), "6 MiB vanished into a server that reads nothing"
        server.release.set()
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        assert written.wait(30), "the host's write never completed"
        time.sleep(0.3)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT") == OK
        assert h6.state(host, 3) == 4
        assert host.at("AT+QSSLCLOSE=3,0") == OK
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert b"ERROR" not in bytes(host.transcript)


def test_ml302_server_ends_while_the_hosts_online_stream_is_held_back(ml, emulator):
    """ML302 connectmode 1, the same: a server that reads nothing, the host's 6 MiB held back,
    then the server's fatal alert and RST: NO CARRIER, the rest of the host's bytes dropped
    as junk, AT answers, REMOTE CLOSING, AT+QSSLCLOSE then CLOSE OK."""
    host, advance, port = ml
    data = b"x" * (6 << 20)
    written = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        c.sock.sendall(c.tx.seal(CT_ALERT, b"\x02\x50"))
        send_rst(c.sock)

    def writer() -> None:
        host.ser.write_timeout = 30
        host.write(data)
        written.set()

    with Hand(emulator, script, suite=h6.RSA_CBC) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=4,0,"{NAME}",443,1') == b"\r\nCONNECT\r\n"
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.8)
        assert not written.is_set()
        server.release.set()
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        assert written.wait(30)
        time.sleep(0.3)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT") == OK
        assert ml_state(host, 4) == "REMOTE CLOSING"
        ml_close(host, 4)
        assert b"ERROR" not in bytes(host.transcript)


# == DTLS: a server silent after its first flight, transparent open ===================================
def test_dtls_transparent_open_to_a_server_silent_after_its_first_flight(ec2x_strict, emulator, pki):
    """`s_server -dtls1_2` behind a path that loses everything the server sends after its
    ServerHelloDone: the modem's flight is resent on its timer (modem time: 1 s, then 2 s
    more), no CONNECT; at negotiatetime (10 s) ERROR, AT+QIGETERROR 569, no socket left,
    no datagram after; AT answers and the id opens again over a clean path."""
    host, advance, port = ec2x_strict
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    state = {"done": False}

    def rule(direction, index, data):
        if direction == "s2c":
            if state["done"]:
                return []
            if any(r.epoch == 0 and r.type == D_HANDSHAKE and r.payload[:1] == b"\x0e" for r in records(data)):
                state["done"] = True
        return [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            dtls_ctx(host, emulator, box.port, negotiatetime=10)
            host.write(f'AT+QSSLOPEN=1,2,5,"{DTLS_NAME}",{DTLS_PORT},2\r')
            wait_for(lambda: state["done"], 10, "the server's first flight")
            up = lambda: len(box.sent("c2s"))                           # noqa: E731
            wait_for(lambda: up() >= 3, 5, "the modem's flight")         # CH, CH+cookie, its flight
            n = up()
            advance(1.1)
            wait_for(lambda: up() > n, 5, "a retransmission after 1 s")
            n = up()
            advance(2.1)
            wait_for(lambda: up() > n, 5, "a retransmission after 2 s more")
            assert host.quiet_for(0.2) == b""
            advance(7)
            assert host.read_until(re.compile(rb"\r\n(ERROR|CONNECT)\r\n"), timeout=5) == b"\r\nERROR\r\n"
            assert h2.qigeterror(host) == 569
            assert h6.state(host, 5) is None
            time.sleep(0.3)                   # (datagrams the modem sent before it gave up)
            n = up()
            advance(20)
            time.sleep(0.3)
            assert up() == n, "datagrams after the open failed"
            assert host.at("AT") == OK
    finally:
        server.stop()
    fresh = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    try:
        emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", fresh.port)
        dtls_open(host, 5)
        assert open_answer(host, 5, timeout=20) == 0
        assert host.at("AT+QSSLCLOSE=5,0") == OK
    finally:
        fresh.stop()


# == records Mbed TLS refuses after the handshake =====================================================
def _bad_record(c, kind: str) -> bytes:
    if kind.startswith("version_"):
        rec = c.seal(CT_APP, b"never delivered")
        return rec[:1] + bytes.fromhex(kind[8:]) + rec[3:]
    if kind == "empty_handshake_record":
        return c.seal(CT_HANDSHAKE, b"")
    if kind == "empty_alert_record":
        return c.seal(CT_ALERT, b"")
    assert kind == "length_past_16k_plus_2048"
    return h2.record(CT_APP, b"\x00" * (16384 + 2048 + 1))


@pytest.mark.parametrize("kind", ["version_0301", "version_0304", "version_fefd", "empty_handshake_record",
                                  "empty_alert_record", "length_past_16k_plus_2048"])
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_record_mbedtls_refuses_after_data(ec2x_strict, emulator, kind, mode):
    """Data, then a record Mbed TLS refuses on an open TLS 1.2 session (another record-layer
    version, a zero-length handshake / alert record, a ciphertext longer than RFC 5246
    allows): fatal on a stream -- the data before it reach the host once (read or pushed),
    then one "closed"; the emulator ends its side of the TCP connection by itself; state 4;
    nothing of the bad record reaches the host."""
    host, advance, port = ec2x_strict
    data = pattern(3000, 55)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(data) + _bad_record(c, kind))
        c.server.stall()

    with Server(script, emulator) as server:
        h2.ssl_open(host, 6, mode=mode)
        assert open_answer(host, 6) == 0
        go.set()
        if mode == 0:
            host.seen(b'+QSSLURC: "closed",6\r\n')
            assert h2.read_all(host, 6, len(data), sizes=(1500, 777)) == data
            assert recv(host, 6) == b""
        else:
            assert push_collect(host, 6, len(data)) == data
            assert host.read_until(b'+QSSLURC: "closed",6\r\n') == b'\r\n+QSSLURC: "closed",6\r\n'
        wait_for(server.conns[0].eof.is_set, 5, "the emulator ends its side")
        assert b"never delivered" not in bytes(host.transcript)
        assert h2.state(host, 6) == 4
        assert host.at("AT+QSSLCLOSE=6") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",6') == 1
        assert host.at("AT") == OK


# == a ticket as large as a record ====================================================================
def test_ticket_too_large_for_the_next_client_hello(modem, emulator, caplog):
    """A NewSessionTicket carrying a 16370-byte ticket (its message fills a record; RFC 5077
    allows up to 65535): the open works.  The next open would offer that ticket, which does
    not fit Mbed TLS's 16 KiB ClientHello: as Mbed TLS, that open fails before any
    ClientHello leaves (BUFFER_TOO_SMALL, 566 once, no error or traceback logged), the
    session is forgotten, and the open after it is a full handshake that works."""
    host, advance, port = modem

    class BigTicketConn(TicketConn):
        def _ticket(self, issue: bool, master: bytes, suite: int) -> bytes:
            if not issue:
                return b""
            ticket = bytes(16370)
            self.server.tickets[ticket] = (master, suite)
            msg = h6.hs(4, struct.pack(">IH", 300, len(ticket)) + ticket)
            self.transcript.append(msg)
            return h6.record(CT_HANDSHAKE, msg)

    class BigTicketServer(Hand):
        def make_conn(self, sock):
            return BigTicketConn(self, sock)

    with BigTicketServer(emulator, tickets=True) as server:
        ssl_open(host, 7)
        assert open_answer(host, 7) == 0
        h6.round_trip_and_close(host, 7)
        codes = []
        for _ in range(2):
            forget_answers(host, 7)
            mark = len(host.transcript)
            ssl_open(host, 7)
            codes.append(open_answer(host, 7))
            assert host.quiet_for(0.2) == b""
            assert h6.open_count(host, 7, mark) == 1
            if codes[-1] == 0:
                h6.round_trip_and_close(host, 7)
                break
        assert codes == [566, 0], codes
        assert "buffer is too small" in h6.log_text(caplog)
        assert [len(h.ticket or b"") for h in server.hellos] == [0, 0]   # (no ClientHello left)
        assert [c.resumed for c in server.conns] == [False, False, False]
        assert host.at("AT") == OK


@pytest.mark.parametrize("kind", ["suite_not_offered", "version_below_the_pinned_one"])
def test_ml302_server_hello_the_context_forbids(ml, emulator, kind):
    """ML302, ciphersuite 0X002F and sslversion 3 (TLS 1.2 only): a ServerHello choosing
    TLS_RSA_WITH_AES_128_GCM_SHA256 (not offered) -- illegal_parameter (47) -- or saying TLS
    1.1 -- protocol_version (70): Mbed TLS's alert in clear, +QSSLOPEN: <ssid>,-1 once,
    CLOSED, the ssid opens again."""
    host, advance, port = ml
    assert host.at('AT+QSSLCFG="sslversion",0,3') == OK
    if kind == "suite_not_offered":
        policy, rewrite, alert = {"suite": h6.RSA_GCM}, None, b"\x02\x2f"
    else:
        policy, rewrite, alert = {}, _sh_version_0302, b"\x02\x46"
    with Hand(emulator, suite=h6.RSA_CBC, rewrite=rewrite, policy=policy) as server:
        ml_refused_then_usable_with(host, server, 5, lambda: server.policy.clear())
        assert server.conns[0].alerts == [alert], server.conns[0].alerts
        assert 0x009C not in server.hellos[0].suites


def ml_refused_then_usable_with(host, server, ssid: int, fix) -> None:
    mark = len(host.transcript)
    ml_open(host, ssid)
    assert host.seen(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % ssid), 10) == b"+QSSLOPEN: %d,-1\r\n" % ssid
    assert host.quiet_for(0.1) == b""
    assert h6.open_count(host, ssid, mark) == 1
    assert ml_state(host, ssid) == "CLOSED"
    wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    fix()
    ml_refused_then_usable_tail(host, server, ssid)


# == AT+QIOPEN TCP, transparent: the server's end while the host's bytes are held back ================
def test_qiopen_transparent_peer_resets_while_the_hosts_stream_is_held_back(ec2x_strict, emulator):
    """AT+QIOPEN "TCP" in transparent mode (transwaittm 0), a peer that reads nothing (4 KiB
    receive buffer) while the host writes 6 MiB of "x": the host's write blocks; the peer
    then resets: NO CARRIER, the rest of the host's bytes are command-mode junk (no "AT":
    dropped, no ERROR), the write completes, AT answers, AT+QISTATE shows the socket
    closing, AT+QICLOSE OK."""
    from tests.e2e.socket_support import DrivenPeer, TCP_HOST, TCP_PORT
    host, advance, port = ec2x_strict
    data = b"x" * (6 << 20)
    written = threading.Event()
    peer = DrivenPeer(hold_reading=True, rcvbuf=4096)
    try:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
        assert host.at('AT+QICFG="transwaittm",0') == OK
        assert host.at(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2') == b"\r\nCONNECT\r\n"

        def writer() -> None:
            host.ser.write_timeout = 30
            host.write(data)
            written.set()

        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.8)
        assert not written.is_set(), "6 MiB vanished into a peer that reads nothing"
        assert peer.accepted.wait(5)
        send_rst(peer.conn)
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
        assert written.wait(30), "the host's write never completed"
        time.sleep(0.3)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT") == OK
        assert re.search(rb'\+QISTATE: 2,"TCP","[0-9.]+",%d,\d+,4,1,2,2,' % TCP_PORT,
                         host.at("AT+QISTATE=1,2"))
        assert host.at("AT+QICLOSE=2") == OK
        assert b"ERROR" not in bytes(host.transcript)
    finally:
        peer.close()


# == more of the stalled server: the close's linger, another socket, the host leaving ===============
def test_close_of_a_socket_whose_backlog_a_stalled_server_never_takes(modem, emulator):
    """SEND FAIL against a server that reads nothing, then AT+QSSLCLOSE=<id>,3 (seconds): the
    close_notify cannot leave behind the backlog, so the close lingers its full 3 s of modem
    time (no OK before), then aborts and answers OK; the server sees the connection end;
    what it read afterwards is SEND OK's bytes in order, never more; the id opens again."""
    host, advance, port = modem

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        accepted = fill_until_send_fail(host, 4)
        host.write(b"AT+QSSLCLOSE=4,3\r")
        assert host.quiet_for(0.3) == b""
        advance(2)
        assert host.quiet_for(0.2) == b""
        advance(1.2)
        assert host.read_until(OK, timeout=5) == OK
        server.release.set()
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 10, "the connection's end at the server")
        assert b"".join(accepted).startswith(bytes(conn.plain))
        assert h6.state(host, 4) is None
        assert host.quiet_for(0.2) == b""
        reopen_works(host, server, 4)


def test_a_stalled_socket_does_not_hold_up_another(modem, emulator):
    """Socket 0's server reads nothing and its backlog is full (SEND FAIL); socket 1, to a
    well-behaved server, makes 40 round trips meanwhile; then socket 0's server reads: it
    gets SEND OK's bytes exactly, in order; AT+QSSLSTATE lists both connected."""
    host, advance, port = modem

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with Hand(emulator, script) as stalled, Hand(emulator, name="echo9.example"):
        stalled.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 0)
        assert open_answer(host, 0) == 0
        accepted = fill_until_send_fail(host, 0)
        ssl_open(host, 1, name="echo9.example")
        assert open_answer(host, 1) == 0
        for i in range(40):
            msg = b"round trip %02d" % i
            assert host.send_data(1, msg) == b"\r\nSEND OK\r\n"
            assert h6.read_all(host, 1, len(msg)) == msg
        states = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 0,"SSLClient","%s",443,\d+,2,' % NAME.encode(), states), states
        assert re.search(rb'\+QSSLSTATE: 1,"SSLClient","echo9.example",443,\d+,2,', states), states
        stalled.release.set()
        conn = stalled.conns[0]
        sent = b"".join(accepted)
        wait_for(lambda: len(conn.plain) >= len(sent), 20, "SEND OK's bytes at the server", every=0.05)
        assert bytes(conn.plain) == sent
        assert host.at("AT+QSSLCLOSE=0,0") == OK
        assert host.at("AT+QSSLCLOSE=1,0") == OK


# Was a bug, fixed (the held-back pty is read to its end and handed on before the hang-up): bytes an attached host wrote online before closing the port are dropped when the close comes while the pty reading is paused by flow control (emulator/io/transport.py PtyPort._hangup_if_gone hangs up without reading the pty; _attach_if_present then drops them as 'from a host that closed before it was seen')
def test_host_leaves_while_online_and_held_back_every_written_byte_arrives(modem, emulator):
    """Transparent mode, a server that reads nothing: the host program writes (non-blocking)
    until the pty takes no more, then closes the device while the modem holds its bytes back.
    The server then reads: every byte the host got written arrives, once, in order
    (docs/behaviour.md: what a host wrote before its close reaches the modem first; the
    connection stays open).  A new program finds command mode, ATO returns to the
    connection (CONNECT), "+++" leaves it, AT+QSSLCLOSE OK."""
    import errno
    import os
    from emulator.testing.host import Host
    host, advance, port = modem
    data = pattern(8 << 20, 5)

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        fd = os.open(host.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        sent, idle_since = 0, time.monotonic()
        try:
            while time.monotonic() - idle_since < 0.5 and sent < len(data):
                try:
                    n = os.write(fd, data[sent:sent + 65536])
                    sent += n
                    idle_since = time.monotonic()
                except OSError as exc:
                    assert exc.errno == errno.EAGAIN, exc
                    time.sleep(0.01)
        finally:
            os.close(fd)
            host.close()
        assert 0 < sent < len(data), sent
        wait_for(lambda: emulator.run(lambda: port.modem.interpreter.online_link) is None, 10,
                 "the port left online mode")
        server.release.set()
        conn = server.conns[0]
        wait_for(lambda: len(conn.plain) >= sent, 5, "every written byte at the server", every=0.05)
        time.sleep(0.2)
        assert bytes(conn.plain) == data[:sent]
        again = Host(host.path)
        try:
            again.quiet_for(0.2)
            assert again.at("AT") == OK
            assert again.at("ATO") == b"\r\nCONNECT\r\n"
            adv = emulator.advancer(port, again, before=host.written + sent)
            adv(1.1)
            again.write(b"+++")
            adv(1.1)
            assert again.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
            assert again.at("AT+QSSLCLOSE=5,0") == OK
            assert len(conn.plain) == sent
        finally:
            again.close()


def test_escape_and_a_send_queued_behind_online_bytes_a_stalled_server_holds(modem, emulator):
    """Transparent mode, a server that reads nothing: the host writes 12 KB (less than the
    16 KiB send buffer: however much of it the kernel or the sealing worker has taken by
    then, the next send fits -- 150 KB made SEND OK a race with them), then the escape: OK,
    nothing of "+++" sent.  In command mode AT+QSSLSEND answers SEND OK and its bytes queue
    BEHIND the online ones.  The
    server then reads: the 150 KB, then the send, in that order; ATO goes online again and
    its bytes follow; no "+" of the escapes ever reaches the server."""
    host, advance, port = modem
    data = pattern(12_000, 3)

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=1,1,6,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        host.write(data)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        assert host.send_data(6, b"queued behind") == b"\r\nSEND OK\r\n"
        assert h6.state(host, 6) == 2
        conn = server.conns[0]
        assert len(conn.plain) == 0
        server.release.set()
        wait_for(lambda: len(conn.plain) >= len(data) + 13, 20, "the bytes at the server", every=0.05)
        assert bytes(conn.plain) == data + b"queued behind"
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        host.write(b"online again")
        wait_for(lambda: bytes(conn.plain).endswith(b"online again"), 10, "online bytes")
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        assert host.at("AT+QSSLCLOSE=6,0") == OK
        assert bytes(conn.plain) == data + b"queued behind" + b"online again"




# == DTLS: resumption declined by a server with another certificate ================================
def dtls_offer(datagram: bytes) -> tuple[bytes, bytes | None]:
    """(session id, session_ticket extension data or None) of a DTLS ClientHello datagram."""
    body = records(datagram)[0].payload[12:]
    pos = 34
    sid = body[pos + 1:pos + 1 + body[pos]]
    pos += 1 + body[pos]
    pos += 1 + body[pos]                                   # cookie
    pos += 2 + int.from_bytes(body[pos:pos + 2], "big")    # cipher suites
    pos += 1 + body[pos]                                   # compression methods
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    pos += 2
    ticket = None
    while pos < end:
        kind, size = int.from_bytes(body[pos:pos + 2], "big"), int.from_bytes(body[pos + 2:pos + 4], "big")
        if kind == 0x0023:
            ticket = body[pos + 4:pos + 4 + size]
        pos += 4 + size
    return sid, ticket


def test_dtls_resumption_declined_by_a_server_with_an_untrusted_certificate(ec2x_strict, emulator, pki):
    """DTLS, seclevel 1, session cache on: the first open (the right certificate) is cached.
    The name then leads to a server with a certificate from another CA that knows nothing
    of the session: the modem offers it, gets a full handshake and must verify it -- 566
    once; the session is forgotten: the next open, to the right server again, offers no
    session id and no ticket, and is a full, verified handshake (0)."""
    host, advance, port = ec2x_strict
    if b"ca9.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:ca9.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    assert host.at('AT+QSSLCFG="seclevel",2,1') == OK
    assert host.at('AT+QSSLCFG="cacert",2,"UFS:ca9.pem"') == OK
    offers = []

    def watch(direction, index, data):
        if direction == "c2s" and is_client_hello(data):
            offers.append(dtls_offer(data))
        return [data]

    def serve(files):
        cert, key = files.load_args
        return OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])

    assert host.at('AT+QSSLCFG="dtls",2,1') == OK
    assert host.at('AT+QSSLCFG="negotiatetime",2,30') == OK   # (no AT+QSSLCFG write after this:
    for step, (files, want) in enumerate([(pki.server, 0), (pki.wrong_server, 566), (pki.server, 0)]):
        server = serve(files)                                 # one forgets the sessions)
        try:
            with UdpMiddlebox(server.address, watch) as box:
                emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", box.port)
                before = len(offers)
                forget_answers(host, 7)
                dtls_open(host, 7)
                assert open_answer(host, 7, timeout=20) == want, step
                assert host.quiet_for(0.2) == b""
                mine = offers[before:]
                assert mine, step
                sid, ticket = mine[-1]
                if step == 1:
                    assert sid or ticket, "the cached session was not offered"
                    assert h2.qigeterror(host) == 566
                    assert host.at("AT+QSSLCLOSE=7") == OK
                else:
                    if step == 2:
                        assert sid == b"" and not ticket, (sid.hex(), ticket)
                        server.wait_for_output(rb"CIPHER is", 10)
                    assert host.at("AT+QSSLCLOSE=7,0") == OK
        finally:
            server.stop()


# == transparent opens refused by what the context forbids ========================================
def _sh_version_0302(n: int, data: bytes) -> bytes:
    return data if n != 0 else data[:9] + b"\x03\x02" + data[11:]


TRANSPARENT_REFUSALS = {
    # kind: (Hand kwargs, AT+QSSLCFG writes on context 1, the modem's alert)
    "suite_not_offered": ({"policy": {"suite": 0xC02F}}, [], b"\x02\x2f"),
    "version_below_sslversion_3": ({"rewrite": _sh_version_0302}, [("sslversion", "3")], b"\x02\x46"),
    "unannounced_ticket": ({"ticket": "always"}, [], b"\x02\x0a"),
    "second_certificate": ({"rewrite": None}, [], b"\x02\x32"),
}


@pytest.mark.parametrize("kind", sorted(TRANSPARENT_REFUSALS))
def test_transparent_open_refused_for_what_the_context_forbids(modem, emulator, caplog, pki, kind):
    """AT+QSSLOPEN in access mode 2 against a server whose first flight the context forbids
    (a suite not offered, TLS 1.1 with sslversion 3, an unannounced NewSessionTicket, a
    second Certificate): no CONNECT, one ERROR (never OK first), AT+QIGETERROR 566, the
    modem's alert at the server, no socket, the port in command mode; the id then goes
    online with a well-behaved server (CONNECT, an echo, "+++", OK)."""
    host, advance, port = modem
    kwargs, writes, alert = TRANSPARENT_REFUSALS[kind]
    kwargs = dict(kwargs)
    if kind == "second_certificate":
        kwargs["rewrite"] = _second_certificate(pki.wrong_server.cert_pem)
    for option, value in writes:
        assert host.at(f'AT+QSSLCFG="{option}",1,{value}') == OK
    with Hand(emulator, **kwargs) as server:
        answer = host.at(f'AT+QSSLOPEN=1,1,8,"{NAME}",443,2')
        assert answer == b"\r\nERROR\r\n", answer
        assert host.quiet_for(0.1) == b""
        assert h6.qigeterror(host) == 566
        assert h6.state(host, 8) is None
        assert server.conns[0].alerts == [alert], server.conns[0].alerts
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        server.rewrite, server.ticket_policy = None, None
        server.policy.clear()
        server.script = lambda c: (c.handshake(), c.echo())
        assert host.at(f'AT+QSSLOPEN=1,1,8,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        host.write(b"echo me")
        assert host.read_exactly(7, timeout=5) == b"echo me"
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        assert host.at("AT+QSSLCLOSE=8,0") == OK
        assert b"CONNECT" not in bytes(host.transcript).split(b"+QIGETERROR")[0]


def settled(conn, quiet: float = 0.5, timeout: float = 20) -> int:
    """What the server has read, once it has read nothing more for `quiet` s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the server never stopped reading"
        now = len(conn.plain)
        if now != last:
            last, since = now, time.monotonic()
        time.sleep(0.02)
    return last


@pytest.mark.parametrize("and_d", [1, 2])
def test_dtr_drop_while_the_hosts_online_stream_is_held_back(modem, emulator, and_d):
    """Transparent mode, a server that reads nothing, the host's 6 MiB of "x" held back (the
    modem stops reading the pty).  DTR drops: AT&D1 -- OK, the connection stays (state 2),
    the bytes still in the pty are command-mode junk (dropped, no ERROR), the server later
    gets an exact prefix of the stream, ATO returns to it; AT&D2 -- NO CARRIER, the socket is
    freed at once (no AT+QSSLSTATE line) and its connection ends after the close's linger (10 s)
    although its backlog could never leave.  Either way the host's write completes and AT answers."""
    host, advance, port = modem
    data = b"x" * (6 << 20)
    written = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    def writer() -> None:
        host.ser.write_timeout = 30
        host.write(data)
        written.set()

    assert host.at(f"AT&D{and_d}") == OK
    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=1,1,9,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.8)
        assert not written.is_set(), "6 MiB vanished into a server that reads nothing"
        emulator.run(lambda: port.modem.set_dtr(0))
        final = b"\r\nOK\r\n" if and_d == 1 else b"\r\nNO CARRIER\r\n"
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=10) == final
        emulator.run(lambda: port.modem.set_dtr(1))
        assert written.wait(30), "the host's write never completed"
        time.sleep(0.3)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT") == OK
        conn = server.conns[0]
        if and_d == 2:
            assert h6.state(host, 9) is None
            # the hang-up closes as AT+QSSLCLOSE's default <timeout> (10 s): the connection
            # lingers for its backlog, then is aborted since it could never leave
            assert tcp_fds_to(server.port) == 1
            advance(10.1)
            wait_for(lambda: tcp_fds_to(server.port) == 0, 10, "the connection ended")
        else:
            assert h6.state(host, 9) == 2
            server.release.set()
            got = settled(conn)
            assert 0 < got < len(data) and bytes(conn.plain) == data[:got]
            assert host.at("ATO") == b"\r\nCONNECT\r\n"
            host.write(b"back")
            wait_for(lambda: bytes(conn.plain).endswith(b"back"), 10, "the bytes after ATO")
            assert len(conn.plain) == got + 4
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
            assert host.at("AT+QSSLCLOSE=9,0") == OK
        assert b"ERROR" not in bytes(host.transcript)


@pytest.mark.parametrize("kind", ["unannounced_ticket", "second_certificate", "suite_not_offered"])
def test_ml302_transparent_open_refused_for_what_the_context_forbids(ml, emulator, pki, kind):
    """ML302 connectmode 1 against a first flight Mbed TLS refuses: the manual's
    `+QSSLOPEN: <ssid>,-1` then ERROR, never CONNECT; the modem's alert at the server; the
    ssid CLOSED and free, then online with a well-behaved server (CONNECT, an echo, "+++")."""
    host, advance, port = ml
    kwargs = {"unannounced_ticket": {"ticket": "always"},
              "second_certificate": {"rewrite": _second_certificate(pki.wrong_server.cert_pem)},
              "suite_not_offered": {"policy": {"suite": h6.RSA_GCM}}}[kind]
    alert = {"unannounced_ticket": b"\x02\x0a", "second_certificate": b"\x02\x32",
             "suite_not_offered": b"\x02\x2f"}[kind]
    with Hand(emulator, suite=h6.RSA_CBC, **kwargs) as server:
        answer = host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,1')
        assert answer == b"\r\n+QSSLOPEN: 3,-1\r\n\r\nERROR\r\n", answer
        assert host.quiet_for(0.1) == b""
        assert server.conns[0].alerts == [alert], server.conns[0].alerts
        assert ml_state(host, 3) == "CLOSED"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        server.rewrite, server.ticket_policy = None, None
        server.policy.clear()
        server.script = lambda c: (c.handshake(), c.echo(), c.sock.close())
        assert host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,1') == b"\r\nCONNECT\r\n"
        host.write(b"ml302 online")
        assert host.read_exactly(12, timeout=5) == b"ml302 online"
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(re.compile(rb"\r\n(OK|NO CARRIER)\r\n"), timeout=5) == OK
        ml_close(host, 3)


# == both ways at once: a server that pushes while it reads nothing ================================
def letters(n: int, seed: int = 0) -> bytes:
    """n bytes of lower-case letters, each 4-letter word its index in base 26 (no byte of
    an AT answer or prompt: '>' ' ' CR LF never occur, so answers can be told apart)."""
    out = bytearray()
    i = seed
    while len(out) < n:
        v = i
        word = bytearray()
        for _ in range(4):
            word.append(97 + v % 26)
            v //= 26
        out += word
        i += 1
    return bytes(out[:n])


def test_push_downstream_flows_while_the_upstream_is_stalled(modem, emulator):
    """Direct push; the server reads nothing (4 KiB receive buffer) but sends 120 KB in
    1000-byte records meanwhile.  The host sends 1460-byte chunks until SEND FAIL: the
    pushes keep coming between its commands (never inside a prompt or an answer), every
    pushed byte once and in order; then the server reads: exactly SEND OK's bytes."""
    host, advance, port = modem
    down = letters(120_000, 7)

    def script(c) -> None:
        c.handshake()
        for i in range(0, len(down), 1000):
            c.sock.sendall(c.app(down[i:i + 1000]))
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with Hand(emulator, script) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 10, mode=1)
        assert open_answer(host, 10) == 0
        # (pushes may follow the open's answer in the same read: count from the answer)
        mark = bytes(host.transcript).index(b"+QSSLOPEN: 10,0\r\n") + len(b"+QSSLOPEN: 10,0\r\n")
        accepted = fill_until_send_fail(host, 10)
        push = re.compile(rb'\r\n\+QSSLURC: "recv",10,(\d+)\r\n')
        got = bytearray()
        deadline = time.monotonic() + 20
        while True:
            host._fill()
            text = bytes(host.transcript[mark:])
            got, rest, pos, ends = bytearray(), bytearray(), 0, []
            for m in push.finditer(text):
                rest += text[pos:m.start()]
                end = m.end() + int(m.group(1))
                got += text[m.end():end]
                ends.append(text[end:end + 2])          # each push's data end with CR LF
                pos = end + 2
            rest += text[pos:]
            if (len(got) >= len(down) and ends[-1] == b"\r\n") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert bytes(got) == down
        assert set(ends) == {b"\r\n"}, [e for e in ends if e != b"\r\n"][:5]
        # what is left between the pushes: only whole answers of the sends
        assert re.fullmatch(rb"(\r\n> (\r\nSEND OK\r\n|\r\nSEND FAIL\r\n))*", bytes(rest)), bytes(rest)[:200]
        server.release.set()
        conn = server.conns[0]
        sent = b"".join(accepted)
        wait_for(lambda: len(conn.plain) >= len(sent), 20, "SEND OK's bytes at the server", every=0.05)
        assert bytes(conn.plain) == sent
        assert host.at("AT+QSSLCLOSE=10,0") == OK


def test_slow_reading_server_gets_exactly_the_send_ok_bytes(modem, emulator):
    """A server that reads 2 KiB every 5 ms (a 4 KiB receive buffer) while the host sends 400
    chunks of 1460 bytes with AT+QSSLSEND as fast as the answers come: whatever mix of SEND
    OK and SEND FAIL that gives, the server receives exactly the SEND OK chunks, in order,
    each once."""
    host, advance, port = modem

    class Slow(TicketConn):
        def read_record(self):
            while True:
                if len(self.buf) >= 5:
                    size = struct.unpack(">H", self.buf[3:5])[0]
                    if len(self.buf) >= 5 + size:
                        ct, payload = self.buf[0], bytes(self.buf[5:5 + size])
                        del self.buf[:5 + size]
                        return ct, payload
                if self.tx is not None:
                    time.sleep(0.005)
                data = self.sock.recv(2048 if self.tx is not None else 65536)
                if not data:
                    self.eof.set()
                    raise EOFError
                self.buf += data

    class SlowServer(Hand):
        def make_conn(self, sock):
            conn = Slow(self, sock)
            conn.sock = Rewriting(sock, None)
            return conn

    with SlowServer(emulator, lambda c: (c.handshake(), h6.Conn.reader(c))) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ssl_open(host, 11)
        assert open_answer(host, 11) == 0
        accepted, results = [], []
        for i in range(400):
            chunk = pattern(1460, 1000 * i)
            results.append(host.send_data(11, chunk))
            assert results[-1] in (b"\r\nSEND OK\r\n", b"\r\nSEND FAIL\r\n"), results[-1]
            if results[-1] == b"\r\nSEND OK\r\n":
                accepted.append(chunk)
        sent = b"".join(accepted)
        conn = server.conns[0]
        wait_for(lambda: len(conn.plain) >= len(sent), 30, "SEND OK's bytes at the server", every=0.05)
        assert bytes(conn.plain) == sent
        assert host.at("AT+QSSLCLOSE=11,0") == OK


def test_host_that_stopped_reading_leaves_then_the_server_ends(ec2x_strict, emulator):
    """Transparent mode; the host reads nothing while the server sends 200 KB and a
    close_notify (the modem holds the server back once 64 KiB wait for the host); the host
    program then closes the device: its unread output is discarded, the connection stays,
    and the socket reads on by itself, so the close_notify is seen.  The next program
    meets command state with nothing stale and the socket in state 4: fallen back to buffer
    mode with a tail of the stream to read (in order, then +QSSLRECV: 0) when bytes were
    still waiting in the socket, else still in access mode 2 with AT+QSSLRECV ERROR (572)
    -- both documented; ATO NO CARRIER; AT+QSSLCLOSE OK."""
    from emulator.testing.host import Host
    host, advance, port = ec2x_strict
    data = pattern(200_000, 17)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(data, 4000) + c.alert(WARNING, 0))
        c.server.stall()

    with Server(script, emulator):
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{h2.NAME}",443,2') == b"\r\nCONNECT\r\n"
        go.set()
        wait_for(lambda: emulator.run(lambda: port.port.backlog) >= 32 << 10, 10, "output waiting for the host")
        time.sleep(0.3)
        host.close()
        wait_for(lambda: emulator.run(lambda: port.modem.interpreter.online_link) is None, 10,
                 "the port left online mode")
        wait_for(lambda: sock_state(emulator, port, 4) is CLOSING, 10, "the close_notify seen")
        waiting = emulator.run(lambda: len(ssl_service(port.modem).sockets[4].inbox))
        again = Host(host.path)
        try:
            assert again.quiet_for(0.3) == b""
            assert again.at("AT") == OK
            assert h6.state(again, 4) == 4
            if waiting:
                got = bytearray()
                while True:
                    chunk = recv(again, 4, 1500)
                    if not chunk:
                        break
                    got += chunk
                assert len(got) == waiting
                assert data.endswith(bytes(got)), "not a tail of the stream"
            else:
                assert again.at("AT+QSSLRECV=4,1500") == b"\r\nERROR\r\n"
                assert h2.qigeterror(again) == 572
            assert again.at("ATO") == b"\r\nNO CARRIER\r\n"
            assert again.at("AT+QSSLCLOSE=4") == OK
        finally:
            again.close()


def sock_state(emulator, port, cid: int):
    return emulator.run(lambda: getattr(ssl_service(port.modem).sockets.get(cid), "state", None))
