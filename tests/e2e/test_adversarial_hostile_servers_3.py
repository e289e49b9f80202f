"""Hostile servers, third round: what test_adversarial_hostile_servers.py / _2.py,
test_adversarial_open_answer.py, test_adversarial_tls_options.py and the DTLS files do not do.

TLS (the servers of test_adversarial_hostile_servers_2: OpenSSL over memory BIOs for the
handshake, records sealed by the test after it):
* the server's whole first flight in ONE handshake record (legal, several messages per
  record), or its ServerHello alone then the rest in one record;
* a HelloRequest in clear before the ServerHello;
* one byte flipped inside the server's handshake messages (ServerHello random / suite, the
  certificate's body and signature, the ServerKeyExchange key and signature, the CCS value,
  the encrypted Finished): never an open, exactly one answer, the id reusable;
* a handshake drip-fed a byte per modem second: negotiatetime bounds the whole handshake,
  not the silence between bytes;
* 30000 application records of one byte each; a record of exactly 16384 plaintext bytes and
  one of 16385 (RFC 5246 6.2.1: record_overflow); records of an unknown content type
  (heartbeat 24, 255) under the session's keys;
* close_notify followed by more VALID records on a TCP connection left open;
* a record failing its MAC in the middle of a flood held back by flow control: exactly the
  records before it reach the host, not a byte of it or after;
* renegotiation 1: a server that asks for a renegotiation then stalls it, or answers the new
  ClientHello with a fatal alert; `openssl s_server` writing data right behind its
  HelloRequest (application data interleaved with the renegotiation, RFC 5246 allows it);

DTLS (`openssl s_server -dtls1_2`, a UdpMiddlebox in front):
* a Certificate fragmented by a 256-byte MTU, verified at seclevel 1, in order and with the
  server's flights reversed;
* two of the server's records coalesced into one datagram;
* the server's close_notify, sealed by the test under the session's keys ("closed", the
  data before kept; a forged one in clear before it ignored);
* a server demanding a client certificate (-Verify) from a modem configured with none;
* a server-initiated renegotiation (renegotiation 1): ends the socket as any fatal alert
  (Mbed TLS 2.28's DTLS renegotiation does not interoperate with OpenSSL 3; behaviour.md);

ML302: a flipped Finished (-1); a handshake drip-fed past its <timeout> (-1).

Checked each time from the host's side: the exact codes and URCs, every byte once, one
+QSSLOPEN per open, AT answering, the id reusable, no ERROR log record or traceback
(ec2x_strict / ml302_strict)."""
from __future__ import annotations

import re
import socket
import ssl
import threading
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import records as dtls_records
from tests.e2e.hostile_support import open_answer, recv
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_servers_2 import (CT_ALERT, CT_APP, CT_CCS, CT_HANDSHAKE, FATAL,
                                                          WARNING, Conn, Server, handshake_messages,
                                                          pattern, read_all, record, split_records,
                                                          ssl_open, state, still_usable)

NAME = "hostile2.example"          # (the name Server routes by default)
DTLS_NAME = "dtls3.example"
ML302_SUITES = "AES128-SHA:AES256-SHA"    # (the ML302 offers only its manual's six suites)
DTLS_PORT = 4444


def qigeterror(host) -> int:
    return int(re.search(rb"\+QIGETERROR: (\d+),", host.at("AT+QIGETERROR")).group(1))


def answer_or_timeout(host, advance, cid: int, wait: float = 8) -> int:
    """The open's one answer; when none came within `wait` s (the handshake stalled), the
    modem clock is moved past negotiatetime (set to 10 s) and the answer must come then."""
    try:
        code = open_answer(host, cid, timeout=wait)
    except (AssertionError, TimeoutError):
        advance(11)
        code = open_answer(host, cid, timeout=10)
    host.quiet_for(0.1)
    assert host.transcript.count(b"+QSSLOPEN: %d," % cid) == 1, bytes(host.transcript)[-300:]
    return code


def echo_four(c: Conn) -> None:
    got = c.wait_plaintext(4)
    c.sock.sendall(c.app(got[:4]))
    c.server.stall()


# == the shape of the first flight =================================================================
def _coalesce(how: str):
    def reshape(flight: bytes) -> bytes:
        msgs = handshake_messages(flight)
        assert [m[0] for m in msgs] == [2, 11, 12, 14], [m[0] for m in msgs]
        if how == "one_record":
            return record(CT_HANDSHAKE, b"".join(msgs))
        return record(CT_HANDSHAKE, msgs[0]) + record(CT_HANDSHAKE, b"".join(msgs[1:]))
    return reshape


@pytest.mark.parametrize("how", ["one_record", "hello_then_rest"])
def test_first_flight_coalesced_into_one_record_opens(ec2x_strict, emulator, how):
    """ServerHello, Certificate, ServerKeyExchange and ServerHelloDone in one handshake record
    (several whole messages per record: RFC 5246 6.2.1, what Mbed TLS reads): the open
    succeeds, at seclevel 1 too (the sniffer finds the Certificate inside the record)."""
    host, advance, port = ec2x_strict
    from emulator.testing.peers import default_pki
    from tests.e2e.ssl_options_support import trust
    trust(host, 1, default_pki().ca.cert_pem)
    assert host.at('AT+QSSLCFG="sni",1,1') == b"\r\nOK\r\n"

    def script(c: Conn) -> None:
        c.handshake(_coalesce(how))
        echo_four(c)

    # the shared PKI's server certificate names www.iottest.work
    with Server(script, emulator, "www.iottest.work"):
        ssl_open(host, 3, "www.iottest.work")
        assert open_answer(host, 3) == 0
        assert host.send_data(3, b"ping") == b"\r\nSEND OK\r\n"
        assert read_all(host, 3, 4) == b"ping"
        assert host.at("AT+QSSLCLOSE=3,0") == b"\r\nOK\r\n"


def test_hello_request_in_clear_before_the_server_hello_is_answered_once(ec2x_strict, emulator, caplog):
    """A HelloRequest (clear, epoch 0) in front of the ServerHello.  RFC 5246 7.4.1.1 says a
    client in a negotiation ignores it; Mbed TLS 2.28 (the ML302's library) takes it for a
    bad ServerHello and fails, and so does the emulator (behaviour.md, "Empty records and
    split handshake messages"): exactly one answer, 566 with a reason in the log, the
    connection released, the id reusable."""
    host, advance, port = ec2x_strict

    def script(c: Conn) -> None:
        c.handshake(lambda flight: record(CT_HANDSHAKE, b"\x00\x00\x00\x00") + flight)
        echo_four(c)

    with Server(script, emulator) as server:
        ssl_open(host, 4)
        assert open_answer(host, 4) == 566
        assert host.quiet_for(0.1) == b""
        assert qigeterror(host) == 566
        assert [r for r in caplog.records if "SSL open 4" in r.getMessage()]
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    still_usable(host, emulator, 4)


# == one byte flipped in the server's handshake ====================================================
def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


def _flip_in_message(flight: bytes, msg_type: int, where) -> bytes:
    """The flight re-made (one message per record) with one byte of message msg_type's
    body flipped at where(body) (an offset in the body)."""
    out = b""
    for m in handshake_messages(flight):
        if m[0] == msg_type:
            body = m[4:]
            m = m[:4] + _flip(body, where(body))
        out += record(CT_HANDSHAKE, m)
    return out


FIRST_FLIGHT_FLIPS = {
    "server_hello_random": (2, lambda b: 2 + 17),
    "server_hello_suite": (2, lambda b: 35 + b[34] + 1),
    "certificate_body": (11, lambda b: len(b) // 2),
    "certificate_signature": (11, lambda b: len(b) - 1),
    "ske_public_key": (12, lambda b: 10),
    "ske_signature": (12, lambda b: len(b) - 1),
}
FLIPS = sorted(FIRST_FLIGHT_FLIPS) + ["ccs_value", "encrypted_finished"]


def _flipping_script(kind: str):
    def script(c: Conn) -> None:
        first = c.first_flight()
        if kind in FIRST_FLIGHT_FLIPS:
            msg_type, where = FIRST_FLIGHT_FLIPS[kind]
            first = _flip_in_message(first, msg_type, where)
        c.sock.sendall(first)
        try:
            last = c.last_flight()
        except (ssl.SSLError, EOFError, OSError):
            try:
                c.sock.sendall(c.out.read())        # OpenSSL's own alert, if any
            except OSError:
                pass
            c.sock.close()                          # as a real server ends a failed handshake
            return
        recs, rest = split_records(last)
        assert not rest and [ct for ct, _ in recs] == [CT_CCS, CT_HANDSHAKE], recs
        ccs, fin = record(CT_CCS, recs[0][1]), record(CT_HANDSHAKE, recs[1][1])
        if kind == "ccs_value":
            ccs = record(CT_CCS, b"\x02")
        else:
            fin = _flip(fin, len(fin) - 1)
        c.sock.sendall(ccs + fin)
        c.server.stall()
    return script


@pytest.mark.parametrize("kind", FLIPS)
def test_a_byte_flipped_in_the_servers_handshake_never_opens(ec2x_strict, emulator, kind):
    """seclevel 0 (nothing verified): a damaged ServerHello, certificate, key exchange,
    ChangeCipherSpec or Finished still cannot give a session -- the signatures over the
    randoms and the Finished MACs over the transcript see to it.  Exactly one answer, 566
    (or 569 at negotiatetime if the damage leaves the client waiting), never 0; the id is
    free at once and opens again."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    with Server(_flipping_script(kind), emulator) as server:
        ssl_open(host, 5)
        code = answer_or_timeout(host, advance, 5)
        assert code in (566, 569), code
        assert qigeterror(host) == code
        assert state(host, 5) is None
        assert host.at("AT+QSSLSTATE") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    still_usable(host, emulator, 5)


# == negotiatetime against a server that never stops sending =========================================
def _drip_feeder():
    """(script, drip): a server script that sends its first flight one byte each time drip
    asks; drip(host, advance, urc) feeds ten bytes a modem second apart (the open's answer
    `urc` must not come meanwhile), then an eleventh and one more second."""
    ask = threading.Semaphore(0)
    sent = []

    def script(c: Conn) -> None:
        flight = c.first_flight()
        for i in range(len(flight)):
            while not ask.acquire(timeout=0.2):
                if c.server.release.is_set():
                    return
            c.sock.sendall(flight[i:i + 1])
            sent.append(i)
        c.server.stall()

    def drip(host, advance, urc: bytes) -> None:
        for step in range(10):
            ask.release()
            wait_for(lambda: len(sent) > step, what="a byte sent")
            time.sleep(0.05)                              # (the emulator reads it)
            advance(0.95)
            assert urc not in host.quiet_for(0.05), step
        ask.release()
        wait_for(lambda: len(sent) > 10, what="a byte sent")
        advance(1.0)
    return script, drip


def test_drip_fed_handshake_times_out_at_negotiatetime(ec2x_strict, emulator):
    """The server sends its first flight one byte per modem second: traffic never stops, the
    handshake never ends.  negotiatetime (10 s) bounds the handshake, not the silence between
    bytes: +QSSLOPEN: <id>,569 at 10 s, once; the connection is aborted."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    script, drip = _drip_feeder()

    with Server(script, emulator) as server:
        ssl_open(host, 6)
        wait_for(lambda: server.conns and len(server.conns[0].raw_in) > 0, what="ClientHello")
        drip(host, advance, b"+QSSLOPEN")
        assert open_answer(host, 6) == 569
        assert qigeterror(host) == 569
        assert host.quiet_for(0.2) == b""
        assert state(host, 6) is None
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
    still_usable(host, emulator, 6)


# == odd records after the handshake ================================================================
def test_thirty_thousand_one_byte_records(ec2x_strict, emulator):
    """30000 application records of one byte each (870 KB on the wire): one "recv" URC, every
    byte once in order, AT answering throughout, the session still up."""
    host, advance, port = ec2x_strict
    data = pattern(30000, 17)
    go = threading.Event()
    done = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        wire = c.app(data, size=1)
        for i in range(0, len(wire), 29 * 1000):
            c.sock.sendall(wire[i:i + 29 * 1000])
        done.set()
        got = c.wait_plaintext(3)
        c.sock.sendall(c.app(got[:3]))
        c.server.stall()

    with Server(script, emulator):
        ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        go.set()
        while not done.is_set():
            assert host.at("AT", timeout=5).endswith(b"\r\nOK\r\n")
        host.seen(b'+QSSLURC: "recv",2\r\n')
        time.sleep(0.3)
        assert host.transcript.count(b'+QSSLURC: "recv",2') == 1
        assert read_all(host, 2, len(data)) == data
        assert recv(host, 2) == b""
        assert state(host, 2) == 2
        assert host.send_data(2, b"end") == b"\r\nSEND OK\r\n"
        assert read_all(host, 2, 3) == b"end"
        assert host.at("AT+QSSLCLOSE=2,0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("size", [16384, 16385])
def test_record_plaintext_at_and_over_the_16384_limit(ec2x_strict, emulator, size):
    """A correctly sealed record of 16384 plaintext bytes (the limit) is data; one of 16385
    is a record_overflow (RFC 5246 6.2.1/6.2.3, Mbed TLS: "bad message length"), a fatal error:
    the data before it readable, one "closed", nothing of the big record delivered, the
    emulator ends the connection."""
    host, advance, port = ec2x_strict
    before, big = pattern(3000, 5), pattern(size, 6)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(before))
        go.wait(10)
        c.sock.sendall(c.seal(CT_APP, big) + c.app(b"after"))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 7)
        assert open_answer(host, 7) == 0
        host.seen(b'+QSSLURC: "recv",7\r\n')
        go.set()
        if size == 16384:
            want = before + big + b"after"
            assert read_all(host, 7, len(want)) == want
            assert state(host, 7) == 2
            assert b"closed" not in bytes(host.transcript)
            assert host.at("AT+QSSLCLOSE=7,0") == b"\r\nOK\r\n"
            return
        host.seen(b'+QSSLURC: "closed",7\r\n')
        assert read_all(host, 7, len(before)) == before
        assert recv(host, 7) == b""
        assert state(host, 7) == 4
        conn = server.conns[0]
        wait_for(conn.eof.is_set, 5, "the emulator ends the connection")
        assert all(a[0] == FATAL for a in conn.alerts()), conn.alerts()
        assert host.at("AT+QSSLCLOSE=7") == b"\r\nOK\r\n"
        assert host.transcript.count(b'+QSSLURC: "closed",7') == 1
    still_usable(host, emulator, 7)


@pytest.mark.parametrize("ctype", [24, 255], ids=["heartbeat", "type_255"])
def test_record_of_an_unknown_content_type_ends_the_session(ec2x_strict, emulator, ctype):
    """A record of content type 24 (heartbeat: Mbed TLS has no such extension, none was
    negotiated) or 255, under the session's keys, between data records: the data before it
    stay readable once, "closed", state 4, nothing after it delivered."""
    host, advance, port = ec2x_strict
    before = pattern(2000, 9)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(before))
        go.wait(10)
        c.sock.sendall(c.seal(ctype, b"\x01\x00\x10" + bytes(16)) + c.app(b"never"))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        host.seen(b'+QSSLURC: "recv",8\r\n')
        go.set()
        host.seen(b'+QSSLURC: "closed",8\r\n')
        assert read_all(host, 8, len(before)) == before
        assert recv(host, 8) == b""
        assert state(host, 8) == 4
        wait_for(server.conns[0].eof.is_set, 5, "the emulator ends the connection")
        assert host.at("AT+QSSLCLOSE=8") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
    still_usable(host, emulator, 8)


def test_close_notify_then_valid_records_with_tcp_left_open(ec2x_strict, emulator):
    """Data, close_notify, then more VALID application records, the TCP connection left
    open: what came before the close_notify is read once; nothing after it ever reaches the
    host (RFC 5246 7.2.1); one "closed"; the emulator closes its side."""
    host, advance, port = ec2x_strict
    before = pattern(4000, 12)
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before) + c.alert(WARNING, 0) + c.app(b"ghost data after close_notify"))
        time.sleep(0.2)
        c.sock.sendall(c.app(b"and later ghost data"))
        c.server.stall()

    with Server(script, emulator) as server:
        ssl_open(host, 9)
        assert open_answer(host, 9) == 0
        go.set()
        host.seen(b'+QSSLURC: "closed",9\r\n')
        assert read_all(host, 9, len(before)) == before
        time.sleep(0.3)
        assert recv(host, 9) == b""
        assert b"ghost" not in bytes(host.transcript)
        assert state(host, 9) == 4
        wait_for(server.conns[0].eof.is_set, 5, "the emulator closes its side")
        assert host.at("AT+QSSLCLOSE=9") == b"\r\nOK\r\n"
        assert host.transcript.count(b'+QSSLURC: "closed",9') == 1


def test_bad_mac_in_the_middle_of_a_held_back_flood(ec2x_strict, emulator):
    """13 full records (208 KiB) sent at once, the 7th with one ciphertext byte flipped; the
    host reads nothing at first, so flow control holds the server back with the bad record
    still in the network.  Then the host reads: exactly the six records before the bad one
    (98304 bytes), in order, then "closed" -- not a byte of the bad record or after it."""
    host, advance, port = ec2x_strict
    data = pattern(13 * 16384, 23)
    progress = {}

    def script(c: Conn) -> None:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
        c.handshake()
        recs, _ = split_records(c.app(data))
        wire = [record(ct, p) for ct, p in recs]
        wire[6] = _flip(wire[6], 5 + 8 + 100)           # (past the explicit nonce)
        for i, rec in enumerate(wire):
            c.sock.sendall(rec)
            progress["sent"] = i + 1
        c.server.stall()

    with Server(script, emulator):
        ssl_open(host, 10)
        assert open_answer(host, 10) == 0
        host.seen(b'+QSSLURC: "recv",10\r\n')
        time.sleep(0.5)
        got = bytearray()
        deadline = time.monotonic() + 30
        while True:
            assert time.monotonic() < deadline, len(got)
            chunk = recv(host, 10)
            got += chunk
            if not chunk:
                if b'+QSSLURC: "closed",10' in bytes(host.transcript):
                    if recv(host, 10) == b"":
                        break
                    continue
                host.read_until(re.compile(rb'\+QSSLURC: "(recv|closed)",10\r\n'), timeout=10)
        assert len(got) == 6 * 16384, len(got)
        assert bytes(got) == data[:6 * 16384]
        assert state(host, 10) == 4
        assert host.at("AT+QSSLCLOSE=10") == b"\r\nOK\r\n"
        assert host.transcript.count(b'+QSSLURC: "closed",10') == 1


# == renegotiation 1 against hostile servers (needs the native layer) ===============================
def _renegotiating_server(ending: str, before: bytes, asked: threading.Event, go: threading.Event):
    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(before))
        go.wait(10)
        c.sock.sendall(c.hello_request())
        with c.changed:                       # the modem's new ClientHello, under the old keys
            assert c.changed.wait_for(lambda: any(ct == CT_HANDSHAKE and p[:1] == b"\x01"
                                                  for ct, p in c.records), 10), c.records
        asked.set()
        if ending == "fatal_alert":
            c.sock.sendall(c.alert(FATAL, 40))     # handshake_failure, under the old keys
        c.server.stall()
    return script


@pytest.mark.needs_native
def test_renegotiation_answered_with_a_fatal_alert_ends_the_session(ec2x_strict, emulator):
    """renegotiation 1: the server's HelloRequest starts a renegotiation, the modem's new
    ClientHello is answered with a fatal handshake_failure alert: the data before stay
    readable, one "closed", state 4, the connection ended; the id opens again."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
    before = pattern(1500, 31)
    asked, go = threading.Event(), threading.Event()
    with Server(_renegotiating_server("fatal_alert", before, asked, go), emulator) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "recv",1\r\n')
        go.set()
        assert asked.wait(10)
        host.seen(b'+QSSLURC: "closed",1\r\n')
        assert read_all(host, 1, len(before)) == before
        assert state(host, 1) == 4
        wait_for(server.conns[0].eof.is_set, 5, "the emulator ends the connection")
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
    still_usable(host, emulator, 1)


@pytest.mark.needs_native
def test_renegotiation_stalled_by_the_server_leaves_the_host_in_control(ec2x_strict, emulator):
    """renegotiation 1: the server asks for a renegotiation and never answers the modem's
    ClientHello.  behaviour.md says nothing of a timer here; what must hold: AT answers, the
    data read before stay readable, a send is answered (SEND OK or SEND FAIL, never a hang),
    AT+QSSLCLOSE answers within its close_timeout and frees the id, no error is logged."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
    before = pattern(1500, 33)
    asked, go = threading.Event(), threading.Event()
    with Server(_renegotiating_server("stall", before, asked, go), emulator) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "recv",1\r\n')
        go.set()
        assert asked.wait(10)
        time.sleep(0.2)
        assert host.at("AT") == b"\r\nOK\r\n"
        assert read_all(host, 1, len(before)) == before
        answer = host.send_data(1, b"during a stalled renegotiation")
        assert answer in (b"\r\nSEND OK\r\n", b"\r\nSEND FAIL\r\n", b"\r\nERROR\r\n"), answer
        advance(300)
        assert host.at("AT") == b"\r\nOK\r\n"
        conn = server.conns[0]
        assert b"during" not in conn.plaintext()          # (never sealed under the old keys)
        host.write(b"AT+QSSLCLOSE=1,1\r")             # 1 s linger: the server never closes
        time.sleep(0.2)
        advance(2)
        assert host.read_until(b"OK\r\n", timeout=10) == b"\r\nOK\r\n"
        assert state(host, 1) is None
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    still_usable(host, emulator, 1)


@pytest.mark.needs_native
def test_server_data_interleaved_with_its_renegotiation(ec2x_strict, emulator, pki):
    """renegotiation 1, `openssl s_server` writes lines right behind its HelloRequest, before
    the modem's new ClientHello is in (RFC 5246 7.4.1.1: application data may come until the
    new handshake starts): every line reaches the host once and in order, the renegotiation
    completes, data flow both ways after it."""
    host, advance, port = ec2x_strict
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-tls1_2"]) as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.port)
        assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
        ssl_open(host, 0)
        assert open_answer(host, 0) == 0
        server.wait_for_output(rb"CIPHER is")
        # 0.5 s (modem time) each way: the HelloRequest and the lines behind it are all on
        # the way before the modem's new ClientHello can reach the server
        assert emulator.control("net", socket=0, latency_ms=500)["ok"]
        mark = server.mark()
        lines = b"".join(b"line %03d of the interleaved data\n" % i for i in range(20))
        server.write(b"r\n")
        time.sleep(0.3)                 # (s_server's own "SSL_do_handshake ->" line sits in
        server.write(lines)             # its stdio buffer: nothing to wait for)
        time.sleep(0.5)
        for _ in range(12):
            advance(0.5)
            time.sleep(0.05)
        assert emulator.control("net", socket=0)["ok"]
        assert read_all(host, 0, len(lines)) == lines
        time.sleep(0.3)
        assert recv(host, 0) == b""
        assert host.send_data(0, b"after the renegotiation\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"after the renegotiation", since=mark, timeout=10)
        server.write(b"down again\n")
        assert read_all(host, 0, 11) == b"down again\n"
        assert state(host, 0) == 2
        assert b"closed" not in bytes(host.transcript)
        assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"


# == DTLS =========================================================================================
def _dtls_server(pki, *extra: str) -> OpenSslServer:
    cert, key = pki.server.load_args
    return OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0", *extra])


def _dtls_open(host, emulator, port: int, cid: int = 0) -> None:
    emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", port)
    assert host.at('AT+QSSLCFG="dtls",2,1') == b"\r\nOK\r\n"
    assert host.at(f'AT+QSSLOPEN=1,2,{cid},"{DTLS_NAME}",{DTLS_PORT},0') == b"\r\nOK\r\n"


def _dtls_still_usable(host, emulator, pki, cid: int) -> None:
    """The id opens again on a fresh DTLS server, data flow, and it closes."""
    server = _dtls_server(pki)
    try:
        emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=1,2,{cid},"{DTLS_NAME}",{DTLS_PORT},0') == b"\r\nOK\r\n"
        assert open_answer(host, cid, timeout=20) == 0
        assert host.send_data(cid, b"again\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"again", 10)
        assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"
    finally:
        server.stop()


def _is_app(d: bytes) -> bool:
    recs = dtls_records(d)
    return bool(recs) and all(r.type == CT_APP for r in recs)


@pytest.mark.parametrize("path", ["in_order", "flights_reversed"])
def test_dtls_certificate_fragmented_by_a_small_mtu_is_verified(ec2x_strict, emulator, pki, path):
    """`s_server -dtls1_2 -mtu 256`: the Certificate travels in many fragments (DTLS handshake
    fragmentation, which Mbed TLS reassembles); seclevel 1 with the right CA.  Through a path
    that reverses the order of the server's handshake datagrams too: the open succeeds once,
    data flow."""
    host, advance, port = ec2x_strict
    from tests.e2e.ssl_options_support import trust
    trust(host, 2, pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="negotiatetime",2,60') == b"\r\nOK\r\n"
    server = _dtls_server(pki, "-mtu", "256")
    seen = {"frags": 0}

    def rule(direction, index, data):
        if direction == "s2c" and not _is_app(data):
            seen["frags"] += 1
            if path == "flights_reversed" and index < 16:
                return [(0.04 * (16 - index), data)]
        return [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            emulator.router.add_map("www.iottest.work", DTLS_PORT, "127.0.0.1", box.port)
            assert host.at('AT+QSSLCFG="dtls",2,1') == b"\r\nOK\r\n"
            assert host.at(f'AT+QSSLOPEN=1,2,0,"www.iottest.work",{DTLS_PORT},0') == b"\r\nOK\r\n"
            assert open_answer(host, 0, timeout=40) == 0
            host.quiet_for(0.2)
            assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
            assert seen["frags"] > 6, seen                 # the flight really was cut up
            server.wait_for_output(rb"CIPHER is", 10)
            assert host.send_data(0, b"over a small mtu\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"over a small mtu", 10)
            server.write(b"back\n")
            assert read_all(host, 0, 5) == b"back\n"
            assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        server.stop()


def test_dtls_two_records_coalesced_in_one_datagram_both_delivered(ec2x_strict, emulator, pki):
    """The path holds the server's first application datagram and sends it glued in front of
    the second (two DTLS records in one datagram, RFC 6347 4.1.1): both lines reach the host
    once, in order."""
    host, advance, port = ec2x_strict
    server = _dtls_server(pki)
    held: list[bytes] = []

    def rule(direction, index, data):
        if direction == "s2c" and _is_app(data):
            if not held:
                held.append(data)
                return []
            if len(held) == 1:
                held.append(data)
                return [held[0] + data]
        return [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            _dtls_open(host, emulator, box.port)
            assert open_answer(host, 0, timeout=20) == 0
            server.wait_for_output(rb"CIPHER is", 10)
            server.write(b"first\n")
            wait_for(lambda: len(held) == 1, what="first datagram held")
            server.write(b"second\n")
            assert read_all(host, 0, 13) == b"first\nsecond\n"
            time.sleep(0.3)
            assert recv(host, 0) == b""
            assert host.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        server.stop()


class DtlsSealer:
    """Records under the DTLS server's epoch-1 keys (AES-128-GCM), derived from s_server's key
    log and the randoms a UdpMiddlebox saw: what s_server itself never sends on demand (its
    "q" sends no close_notify over DTLS 1.2)."""

    def __init__(self, keylog: str, box: UdpMiddlebox) -> None:
        from tests.e2e.test_adversarial_hostile_servers_2 import prf_sha256
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        def random_of(direction: str, hs_type: int) -> bytes:
            for d in box.passed(direction):
                for r in dtls_records(d.data):
                    if r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == bytes([hs_type]):
                        return r.payload[12 + 2:12 + 34]
            raise AssertionError(f"no handshake message {hs_type} {direction}")
        client_random, server_random = random_of("c2s", 1), random_of("s2c", 2)
        master = None
        for line in open(keylog, "rb").read().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"CLIENT_RANDOM" and bytes.fromhex(parts[1].decode()) == client_random:
                master = bytes.fromhex(parts[2].decode())
        assert master is not None, "no key log line for this session"
        block = prf_sha256(master, b"key expansion", server_random + client_random, 40)
        self.aead, self.iv = AESGCM(block[16:32]), block[36:40]
        self.seq = 1000                         # far ahead of the server's own records

    def seal(self, ct: int, payload: bytes) -> bytes:
        from emulator.testing.peers.dtls_wire import record as dtls_record
        self.seq += 1
        explicit = (1).to_bytes(2, "big") + self.seq.to_bytes(6, "big")
        aad = explicit + bytes([ct]) + b"\xfe\xfd" + len(payload).to_bytes(2, "big")
        return dtls_record(ct, explicit + self.aead.encrypt(self.iv + explicit, payload, aad),
                           epoch=1, seq=self.seq)


def test_dtls_server_close_notify_reports_closed(ec2x_strict, emulator, pki, tmp_path):
    """A DTLS server's close_notify (sealed under the session's keys, epoch 1) after a line of
    data: the line stays readable, one "closed" URC, state 4, a send is ERROR, AT+QSSLCLOSE
    OK, the id opens again.  A forged close_notify in clear (epoch 0) before it changes
    nothing (RFC 6347 4.1.2.7: not of the current epoch)."""
    host, advance, port = ec2x_strict
    keylog = tmp_path / "dtls.keys"
    server = _dtls_server(pki, "-keylogfile", str(keylog))
    try:
        with UdpMiddlebox(server.address) as box:
            assert host.at('AT+QSSLCFG="ciphersuite",2,0XC02F') == b"\r\nOK\r\n"
            _dtls_open(host, emulator, box.port, cid=3)
            assert open_answer(host, 3, timeout=20) == 0
            server.wait_for_output(rb"CIPHER is ECDHE-RSA-AES128-GCM-SHA256", 10)
            sealer = DtlsSealer(str(keylog), box)
            server.write(b"last words\n")
            host.seen(b'+QSSLURC: "recv",3\r\n')
            from emulator.testing.peers.dtls_wire import record as dtls_record
            box.inject(dtls_record(CT_ALERT, b"\x01\x00", epoch=0, seq=900))     # forged, clear
            time.sleep(0.3)
            assert b"closed" not in bytes(host.transcript)
            box.inject(sealer.seal(CT_ALERT, b"\x01\x00"))                       # the real one
            host.seen(b'+QSSLURC: "closed",3\r\n', timeout=10)
            assert read_all(host, 3, 11) == b"last words\n"
            assert recv(host, 3) == b""
            assert state(host, 3) == 4
            assert host.at("AT+QSSLSEND=3,3") == b"\r\nERROR\r\n"
            assert host.at("AT+QSSLCLOSE=3,0") == b"\r\nOK\r\n"
            assert host.transcript.count(b'+QSSLURC: "closed",3') == 1
    finally:
        server.stop()
    _dtls_still_usable(host, emulator, pki, 3)


@pytest.mark.needs_native
def _ended_as_after_a_fatal_alert(host, cid: int, before: bytes) -> None:
    """docs/behaviour.md (renegotiation): what the server sent before stays readable, one
    +QSSLURC "closed", AT+QSSLSTATE 4 until the host closes, which it then does."""
    assert read_all(host, cid, len(before)) == before
    assert recv(host, cid) == b""
    assert state(host, cid) == 4
    assert host.transcript.count(b'+QSSLURC: "closed",%d' % cid) == 1
    assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


def test_dtls_server_initiated_renegotiation_ends_the_socket(ec2x_strict, emulator, pki):
    """A server-initiated DTLS 1.2 renegotiation (s_server -dtls1_2 'r', AT+QSSLCFG
    "renegotiation",<ctx>,1) does not complete: Mbed TLS 2.28's DTLS renegotiation does not
    interoperate with OpenSSL 3 -- python-mbedtls alone, no emulator, fails the same way (the
    new ServerKeyExchange fails its PKCS#1 check, -0x4380; with a CBC suite OpenSSL rejects
    the client's renegotiation flight: bad record mac).  docs/behaviour.md (renegotiation):
    the socket ends as after any fatal alert -- what the server sent before stays readable,
    one +QSSLURC "closed", AT+QSSLSTATE 4 until the host closes, the id opens again; no
    ERROR log record (the strict fixture).  (TLS renegotiation works: test_ssl_options_*.)"""
    host, advance, port = ec2x_strict
    server = _dtls_server(pki)
    try:
        assert host.at('AT+QSSLCFG="renegotiation",2,1') == b"\r\nOK\r\n"
        _dtls_open(host, emulator, server.port, cid=1)
        assert open_answer(host, 1, timeout=20) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"before\n")
        host.seen(b'+QSSLURC: "recv",1\r\n', timeout=10)
        server.write(b"r\n")
        deadline = time.monotonic() + 30
        while b'+QSSLURC: "closed",1' not in bytes(host.transcript):
            assert time.monotonic() < deadline, bytes(host.transcript)[-300:]
            advance(5)                              # (retransmission timers on modem time:
            host.quiet_for(0.2)                     # a stalled one gives up after 123 s)
        _ended_as_after_a_fatal_alert(host, 1, b"before\n")
    finally:
        server.stop()
    _dtls_still_usable(host, emulator, pki, 1)


def test_dtls_renegotiation_whose_flights_are_lost_ends_at_the_retransmission_limit(ec2x_strict, emulator, pki):
    """The server asks for a renegotiation (s_server 'r': HelloRequest) and then hears
    nothing of the modem: every datagram the modem sends from then on is lost.  Mbed TLS
    resends its flight on the DTLS timer, on modem time (1, 2, 4 ... 32, 60 s), and gives up
    after the last interval: the socket ends as after any fatal error (+QSSLURC "closed" once,
    what came before readable, AT+QSSLSTATE 4).  Was a bug, fixed: once established the
    session armed no timer, so nothing read at those moments, nothing was resent, and the
    socket stayed open forever (test_dtls_server_initiated_renegotiation_ends_the_socket
    stalled so about one run in six, when OpenSSL silently dropped the modem's flight)."""
    host, advance, port = ec2x_strict
    server = _dtls_server(pki)
    lost = threading.Event()

    def rule(direction, index, data):
        return [] if direction == "c2s" and lost.is_set() else [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", box.port)
            assert host.at('AT+QSSLCFG="dtls",2,1') == b"\r\nOK\r\n"
            assert host.at('AT+QSSLCFG="renegotiation",2,1') == b"\r\nOK\r\n"
            assert host.at(f'AT+QSSLOPEN=1,2,1,"{DTLS_NAME}",{DTLS_PORT},0') == b"\r\nOK\r\n"
            assert open_answer(host, 1, timeout=20) == 0
            server.wait_for_output(rb"CIPHER is", 10)
            server.write(b"before\n")
            host.seen(b'+QSSLURC: "recv",1\r\n', timeout=10)
            lost.set()
            server.write(b"r\n")
            box.wait_for(lambda: len(box.dropped()) >= 1, 10)     # the renegotiation's ClientHello
            advanced = 0
            deadline = time.monotonic() + 30
            while b'+QSSLURC: "closed",1' not in bytes(host.transcript):
                assert time.monotonic() < deadline, (advanced, len(box.dropped()), bytes(host.transcript)[-300:])
                advance(4)
                advanced += 4
                host.quiet_for(0.1)
            # resent on the timer, and not given up before the intervals are spent
            assert len(box.dropped()) >= 6, len(box.dropped())
            assert advanced >= 1 + 2 + 4 + 8 + 16 + 32 + 60, advanced
            _ended_as_after_a_fatal_alert(host, 1, b"before\n")
    finally:
        server.stop()
    _dtls_still_usable(host, emulator, pki, 1)


def test_dtls_server_demanding_a_client_certificate_the_modem_lacks(ec2x_strict, emulator, pki):
    """`s_server -dtls1_2 -Verify 1`, the modem at seclevel 0 (no client certificate): it
    answers the CertificateRequest with an empty Certificate, the server refuses.  One
    answer, a failure (566, or 569 when the server's alert is not heard and negotiatetime
    ends it), the id free, AT answering."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",2,10') == b"\r\nOK\r\n"
    server = _dtls_server(pki, "-Verify", "1", "-CAfile", str(pki.ca.cert_path))
    try:
        _dtls_open(host, emulator, server.port, cid=4)
        code = answer_or_timeout(host, advance, 4, wait=8)
        assert code in (566, 569), code
        assert state(host, 4) is None
        assert host.at("AT") == b"\r\nOK\r\n"
    finally:
        server.stop()


# == ML302 =========================================================================================
def test_ml302_flipped_finished_is_minus_1_once(ml302_strict, emulator):
    host, advance, port = ml302_strict
    with Server(_flipping_script("encrypted_finished"), emulator, suites=ML302_SUITES) as server:
        assert host.at(f'AT+QSSLOPEN=2,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        assert host.seen(re.compile(rb"\+QSSLOPEN: 2,-?\d+\r\n"), 10) == b"+QSSLOPEN: 2,-1\r\n"
        assert host.quiet_for(0.1) == b""
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    assert host.at("AT") == b"\r\nOK\r\n"


def test_ml302_drip_fed_handshake_ends_at_its_timeout(ml302_strict, emulator):
    """The ML302's <timeout> (10 s here) bounds the whole open: a server drip-feeding its first
    flight a byte per modem second does not keep it alive: +QSSLOPEN: <ssid>,-1 once, at 10 s,
    the connection aborted, AT+QSSLSTATE CLOSED."""
    host, advance, port = ml302_strict
    script, drip = _drip_feeder()

    with Server(script, emulator, suites=ML302_SUITES) as server:
        assert host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,0,10') == b"\r\nOK\r\n"
        wait_for(lambda: server.conns and len(server.conns[0].raw_in) > 0, what="ClientHello")
        drip(host, advance, b"+QSSLOPEN: 3")
        assert host.seen(re.compile(rb"\+QSSLOPEN: 3,-?\d+\r\n"), 10) == b"+QSSLOPEN: 3,-1\r\n"
        assert host.quiet_for(0.2) == b""
        state_ = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 3,"TCP","[0-9.]*",443,"CLOSED",1\r\n', state_), state_
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
        assert host.transcript.count(b"+QSSLOPEN: 3,") == 1
    assert host.at("AT") == b"\r\nOK\r\n"
