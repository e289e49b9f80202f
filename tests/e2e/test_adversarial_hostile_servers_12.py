"""Hostile servers, twelfth round: what rounds 1-11 (test_adversarial_hostile_servers*.py),
test_adversarial_open_answer.py and the DTLS files do not do.

Peers: test_adversarial_hostile_servers_6's hand-made TLS 1.2 server (raw socket, RSA key
exchange, AES-128-GCM, RFC 5077 tickets), its RESUMED (abbreviated) flight -- where the
server's Finished comes before the modem's -- rewritten per test; `openssl s_server
-dtls1_2` behind a UdpMiddlebox.  Covered (EC2x unless said):

* a resumed handshake whose server Finished is corrupted (one bit): 566 once (transparent:
  ERROR, QIGETERROR 566), the session forgotten -- the next open is a full handshake and
  carries data;
* right behind the resumed server's Finished, in the same segment, before the modem's own
  Finished: data then an encrypted FATAL alert (seclevel 0 and 1, each access mode): the
  open answered once (0 / CONNECT), the data, one end, the modem's Finished on the wire, the
  emulator's FIN; the next open a full handshake (RFC 5246 7.2.2: a session a fatal alert
  ended is forgotten);
* an encrypted HelloRequest then data right behind the resumed Finished (renegotiation 0):
  the modem's warning no_renegotiation alert, the data, the session up;
* a second (replayed) CCS + Finished right behind the resumed Finished: a protocol
  violation after the open -- open 0, "closed" once, state 4;
* the resumed flight one byte per TCP segment with data behind it (seclevel 0 and 1);
* a 200 KB flood and a fatal alert behind the resumed Finished (held back by flow control);
* ten sockets resuming one session at once, half of them meeting a corrupted Finished, the
  others data and close_notify: one answer each, each socket's own bytes once;
* renegotiation 1: a HelloRequest and data behind the resumed Finished: the modem's
  renegotiating ClientHello after its Finished, the data, the session left waiting;
* (a bug, fixed) an RST right behind the resumed flight: the modem's own CCS +
  Finished (the abbreviated handshake's last flight) can never leave, yet the open is
  answered 0 then "closed" -- an Mbed TLS client fails the handshake on that write (566);
  a FIN there (the server still reading and verifying that Finished) opens, as it should;
* ML302: the Finished, data and a broken record / clear fatal alert in one segment
  (test_adversarial_open_answer has the EC2x only), connectmode 0 and 1;
* DTLS (`openssl s_server -dtls1_2 -keylogfile` behind a UdpMiddlebox, records sealed with
  test_adversarial_hostile_servers_3's DtlsSealer): the server's close_notify / fatal alert
  while the host sits at the AT+QSSLSEND prompt (ERROR 567 after the data, then "closed");
  after data in push and transparent mode; after "+++" (the buffer-mode fall-back); while
  the host streams online; a resumed DTLS handshake whose last flight (the modem's) is
  lost once and resent on the server's retransmission; a Certificate past Mbed TLS's 16 KiB
  reassembly limit: 569 at negotiatetime on the modem clock, at seclevel 0 and 1 alike.

Checked each time from the host's side: exact bytes, one answer per open, one end report,
every byte once, no ERROR log record or traceback (ec2x_strict / ml302_strict)."""
from __future__ import annotations

import re
import threading
import time

import pytest

from emulator.testing.peers import default_pki
from tests.e2e.hostile_support import open_answer, recv
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
from tests.e2e.test_adversarial_hostile_servers_6 import (CT_ALERT, CT_CCS, CT_HANDSHAKE, HandServer,
                                                          hs, open_count, pattern, qigeterror, read_all,
                                                          record, round_trip_and_close, state)

NAME = "www.iottest.work"          # in the shared PKI's server certificate (seclevel 1)
CA_FILE = "UFS:hostile12ca.pem"
OK = b"\r\nOK\r\n"
URCS_THEN_OK = re.compile(rb'(\r\n\+QSSLOPEN: \d+,-?\d+\r\n|\r\n\+QSSLURC: "(?:recv|closed)",\d+\r\n)*\r\nOK\r\n')


@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    return ec2x_strict


def seclevel_1(host) -> None:
    if CA_FILE.encode() not in host.at('AT+QFLST="*"'):
        assert host.upload(CA_FILE, default_pki().ca.cert_pem).endswith(b"OK\r\n")
    assert host.at(f'AT+QSSLCFG="cacert",1,"{CA_FILE}"') == OK
    assert host.at('AT+QSSLCFG="seclevel",1,1') == OK


def ssl_open(host, cid: int, mode: int = 0) -> None:
    line = f'AT+QSSLOPEN=1,1,{cid},"{NAME}",443,{mode}'
    if mode == 2:
        host.write(line.encode() + b"\r")
    else:
        assert host.at(line) == OK


def full_open_then_close(host, server, cid: int) -> None:
    """A full handshake (a ticket issued), a round trip, the close."""
    n = len(server.conns)
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    round_trip_and_close(host, cid)
    assert not server.conns[n].resumed


def next_open_is_full(host, server, cid: int) -> None:
    """The next open: a full handshake (no ticket offered), data both ways."""
    wait_for(lambda: tcp_fds_to(server.port) == 0, what="connections released")
    n = len(server.conns)
    server.policy.pop("resume_tail", None)
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    round_trip_and_close(host, cid, b"after the hostile flight")
    conn = server.conns[n]
    assert not conn.resumed and conn.hello.ticket is None, "a ticket offered again"


def flip_resumed_finished(c) -> None:
    real = c._finished

    def finished(master, label):
        rec = real(master, label)
        if c.resumed and label == b"server finished":
            rec = rec[:-1] + bytes([rec[-1] ^ 0x01])            # the GCM tag's last bit
        return rec
    c._finished = finished


# == a corrupted server Finished in a resumed handshake ==============================================
@pytest.mark.parametrize("level", [0, 1], ids=["seclevel0", "seclevel1"])
@pytest.mark.parametrize("mode", [0, 2], ids=["buffer", "transparent"])
def test_resumed_handshake_with_a_corrupted_server_finished(modem, emulator, mode, level):
    """The server resumes the session (ServerHello echoing the ticket's session, CCS, Finished
    first) but its Finished fails its GCM tag.  The modem must never open: one "+QSSLOPEN:
    <id>,566" (transparent: ERROR, QIGETERROR 566), the modem's own Finished never sent (it
    comes after the server's in an abbreviated handshake), the id free, and the session the
    failure came with forgotten: the next open is a full handshake that carries data."""
    host, advance, port = modem
    if level:
        seclevel_1(host)

    def script(c):
        flip_resumed_finished(c)
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 3)
        forget_answers(host, 3)
        mark = len(host.transcript)
        ssl_open(host, 3, mode)
        if mode == 2:
            assert host.read_until(b"ERROR\r\n", timeout=8) == b"\r\nERROR\r\n"
        else:
            assert open_answer(host, 3) == 566
        assert qigeterror(host) == 566
        conn = server.conns[1]
        assert conn.resumed
        wait_for(lambda: conn.alerts, 5, "the modem's alert")
        assert conn.alerts == [b"\x02\x14"], conn.alerts         # bad_record_mac, in clear
        wait_for(lambda: tcp_fds_to(server.port) == 0, 5, "the failed connection released")
        assert host.quiet_for(0.2) == b""
        assert open_count(host, 3, mark) == (0 if mode == 2 else 1)
        assert b"CONNECT" not in host.transcript[mark:]
        assert state(host, 3) is None
        next_open_is_full(host, server, 3)


# == data then a fatal alert behind the resumed server's Finished ====================================
@pytest.mark.parametrize("level", [0, 1], ids=["seclevel0", "seclevel1"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_data_then_fatal_alert_behind_the_resumed_finished(modem, emulator, mode, level):
    """In ONE segment: the resumed ServerHello, CCS, Finished, 900 bytes and an encrypted fatal
    alert (internal_error), before the modem has sent its Finished.  The abbreviated handshake
    is over once the modem's Finished leaves, so the open succeeded: one "+QSSLOPEN: <id>,0"
    (transparent: CONNECT), then the 900 bytes, then one end (buffer: "recv", "closed";
    push: the bytes pushed, "closed"; transparent: NO CARRIER), state 4, the emulator's FIN;
    the session a fatal alert ended is forgotten (RFC 5246 7.2.2)."""
    host, advance, port = modem
    if level:
        seclevel_1(host)
    data = pattern(900, 12)
    with HandServer(emulator, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 5)
        server.policy["resume_tail"] = lambda c: c.app(data) + c.tx.seal(CT_ALERT, b"\x02\x50")
        forget_answers(host, 5)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,5,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=8)
            assert got == b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n", got[-100:]
        else:
            out = host.read_until(b'+QSSLURC: "closed",5\r\n', timeout=8)
            urc = (b'\r\n+QSSLURC: "recv",5\r\n' if mode == 0
                   else b'\r\n+QSSLURC: "recv",5,%d\r\n' % len(data) + data + b"\r\n")
            assert out.endswith(OK + b"\r\n+QSSLOPEN: 5,0\r\n" + urc + b'\r\n+QSSLURC: "closed",5\r\n'), out
            if mode == 0:
                assert read_all(host, 5, len(data), n=700) == data
                assert recv(host, 5) == b""
        assert state(host, 5) == 4
        conn = server.conns[1]
        assert conn.resumed                       # (and _client_finished checked the modem's Finished)
        wait_for(conn.eof.is_set, 5, "the emulator's FIN")
        assert host.at("AT+QSSLSEND=5,1") == b"\r\nERROR\r\n"
        assert qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=5") == OK
        assert host.quiet_for(0.2) == b""
        t = bytes(host.transcript[mark:])
        assert open_count(host, 5, mark) == (0 if mode == 2 else 1)
        assert t.count(b'"closed",5') + t.count(b"NO CARRIER") == 1
        next_open_is_full(host, server, 5)


# == an encrypted HelloRequest then data behind the resumed Finished =================================
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_hello_request_then_data_behind_the_resumed_finished(modem, emulator, mode):
    """renegotiation 0.  Behind the resumed server's Finished, in the same segment: an
    encrypted HelloRequest, then 300 bytes.  The open answered once, the modem refuses the
    renegotiation with a warning no_renegotiation alert (encrypted, after its Finished), the
    300 bytes reach the host once, the session stays up and carries data both ways."""
    host, advance, port = modem
    data = pattern(300, 44)
    with HandServer(emulator, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 6)
        server.policy["resume_tail"] = lambda c: c.tx.seal(CT_HANDSHAKE, hs(0, b"")) + c.app(data)
        forget_answers(host, 6)
        host.write(f'AT+QSSLOPEN=1,1,6,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            assert host.read_exactly(len(b"\r\nCONNECT\r\n") + len(data), timeout=8) == b"\r\nCONNECT\r\n" + data
        else:
            urc = (b'\r\n+QSSLURC: "recv",6\r\n' if mode == 0
                   else b'\r\n+QSSLURC: "recv",6,%d\r\n' % len(data) + data + b"\r\n")
            want = OK + b"\r\n+QSSLOPEN: 6,0\r\n" + urc
            assert host.read_exactly(len(want), timeout=8) == want
            if mode == 0:
                assert read_all(host, 6, len(data)) == data
        conn = server.conns[1]
        assert conn.resumed
        wait_for(lambda: conn.alerts, 5, "the modem's answer to the HelloRequest")
        assert conn.alerts == [b"\x01\x64"], conn.alerts       # warning no_renegotiation
        if mode == 2:
            host.write(b"online echo")
            assert host.read_exactly(11, timeout=5) == b"online echo"
            assert host.quiet_for(0.1) == b""
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            assert host.read_until(OK, timeout=5) == OK
            assert host.at("AT+QSSLCLOSE=6,0") == OK
        else:
            assert state(host, 6) == 2
            if mode == 0:
                round_trip_and_close(host, 6, b"still up")
            else:
                assert host.send_data(6, b"still up") == b"\r\nSEND OK\r\n"
                assert host.read_exactly(len(b'\r\n+QSSLURC: "recv",6,8\r\nstill up\r\n'), timeout=5) == \
                    b'\r\n+QSSLURC: "recv",6,8\r\nstill up\r\n'
                assert host.at("AT+QSSLCLOSE=6,0") == OK
        assert b'"closed",6' not in host.transcript
        assert host.quiet_for(0.1) == b""


# == a replayed CCS + Finished behind the resumed Finished ===========================================
@pytest.mark.parametrize("what", ["ccs", "finished", "ccs_and_finished"])
def test_second_ccs_or_finished_behind_the_resumed_finished(modem, emulator, what):
    """Behind the resumed flight, in the same segment: 200 bytes, then a second CCS (in
    clear, as a replayed one would be) and/or a second Finished (sealed under the session's
    keys).  Mbed TLS takes a CCS / handshake message after the handshake as an unexpected
    message (a fatal error on an open connection): the open answered 0 once, the 200 bytes
    readable, one "closed", state 4, the emulator's FIN."""
    host, advance, port = modem
    data = pattern(200, 3)

    def tail(c):
        out = c.app(data)
        if what in ("ccs", "ccs_and_finished"):
            out += record(CT_CCS, b"\x01")
        if what in ("finished", "ccs_and_finished"):
            out += c.tx.seal(CT_HANDSHAKE, hs(20, bytes(12)))
        return out

    with HandServer(emulator, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 7)
        server.policy["resume_tail"] = tail
        forget_answers(host, 7)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,7,"{NAME}",443,0\r'.encode())
        out = host.read_until(b'+QSSLURC: "closed",7\r\n', timeout=8)
        assert out == b'\r\nOK\r\n\r\n+QSSLOPEN: 7,0\r\n\r\n+QSSLURC: "recv",7\r\n\r\n+QSSLURC: "closed",7\r\n', out
        assert read_all(host, 7, len(data)) == data
        assert recv(host, 7) == b""
        assert state(host, 7) == 4
        conn = server.conns[1]
        wait_for(conn.eof.is_set, 5, "the emulator's FIN")
        assert host.at("AT+QSSLCLOSE=7") == OK
        assert host.quiet_for(0.2) == b""
        assert open_count(host, 7, mark) == 1
        assert bytes(host.transcript[mark:]).count(b'"closed",7') == 1


# == the resumed flight one byte per segment ===========================================================
@pytest.mark.parametrize("level", [0, 1], ids=["seclevel0", "seclevel1"])
def test_resumed_flight_and_data_one_byte_per_segment(modem, emulator, level):
    """The resumed ServerHello, CCS, Finished and 2 records of data behind them, written one
    byte per TCP segment: one answer, the data once, in order, the session up."""
    host, advance, port = modem
    if level:
        seclevel_1(host)
    data = pattern(1000, 9)

    def script(c):
        if c is not c.server.conns[0]:
            raw = c.sock.sendall

            def bytewise(buf):
                for i in range(len(buf)):
                    raw(buf[i:i + 1])
                    time.sleep(0.0003)
            c.sock = _Wrapped(c.sock, bytewise)
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 8)
        server.policy["resume_tail"] = lambda c: c.app(data, 600)
        forget_answers(host, 8)
        ssl_open(host, 8)
        assert open_answer(host, 8, timeout=15) == 0
        host.seen(b'+QSSLURC: "recv",8\r\n', 10)
        assert read_all(host, 8, len(data)) == data
        assert recv(host, 8) == b""
        assert server.conns[1].resumed
        round_trip_and_close(host, 8, b"bytewise done")
        assert host.transcript.count(b"+QSSLOPEN: 8,") == 2


class _Wrapped:
    """A socket whose sendall() writes through `sendall`; everything else the socket's."""

    def __init__(self, sock, sendall) -> None:
        self._sock, self.sendall = sock, sendall

    def __getattr__(self, name):
        return getattr(self._sock, name)


# == a flood and a fatal alert behind the resumed Finished ==========================================
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_flood_then_fatal_alert_behind_the_resumed_finished(modem, emulator, mode):
    """In ONE sendall: the resumed flight, 200 KB (past ssl.recv_buffer, so flow control holds
    the server back before it reaches the alert) and an encrypted fatal alert.  The open
    answered once, every byte once and in order, then one end; nothing lost behind the
    held-back reading, no hang."""
    host, advance, port = modem
    data = pattern(200_000, 77)
    with HandServer(emulator, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 4)
        server.policy["resume_tail"] = lambda c: c.app(data) + c.tx.seal(CT_ALERT, b"\x02\x50")
        forget_answers(host, 4)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,4,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            assert host.read_exactly(11, timeout=8) == b"\r\nCONNECT\r\n"
            assert host.read_exactly(len(data), timeout=15) == data
            assert host.read_exactly(14, timeout=8) == b"\r\nNO CARRIER\r\n"
        elif mode == 1:
            assert host.read_until(b"\r\n+QSSLOPEN: 4,0\r\n", timeout=8).endswith(OK + b"\r\n+QSSLOPEN: 4,0\r\n")
            got, sizes = push_read(host, 4, len(data))
            assert got == data
            assert host.read_exactly(len(b'\r\n+QSSLURC: "closed",4\r\n'), timeout=8) == b'\r\n+QSSLURC: "closed",4\r\n'
        else:
            assert host.read_until(b"\r\n+QSSLOPEN: 4,0\r\n", timeout=8).endswith(OK + b"\r\n+QSSLOPEN: 4,0\r\n")
            host.seen(b'+QSSLURC: "recv",4\r\n', 5)
            assert read_all(host, 4, len(data), n=1500) == data
            host.seen(b'+QSSLURC: "closed",4\r\n', 8)
            assert recv(host, 4) == b""
        assert state(host, 4) == 4
        assert host.at("AT+QSSLCLOSE=4") == OK
        assert host.quiet_for(0.2) == b""
        t = bytes(host.transcript[mark:])
        assert open_count(host, 4, mark) == (0 if mode == 2 else 1)
        assert t.count(b'"closed",4') + t.count(b"NO CARRIER") == 1


def push_read(host, cid: int, want: int, timeout: float = 15) -> tuple[bytes, list[int]]:
    push = re.compile(rb'\r\n\+QSSLURC: "recv",%d,(\d+)\r\n' % cid)
    got, sizes = bytearray(), []
    while len(got) < want:
        chunk = host.read_until(push, timeout=timeout)
        assert push.fullmatch(chunk), chunk[:200]
        sizes.append(int(push.fullmatch(chunk).group(1)))
        assert 0 < sizes[-1] <= 1500
        got += host.read_exactly(sizes[-1], timeout=timeout)
        assert host.read_exactly(2, timeout=timeout) == b"\r\n"        # the pushed data's end
    return bytes(got), sizes


# == ten sockets resuming at once, half of them meeting a hostile flight =============================
def test_ten_sockets_resume_at_once_half_meet_a_hostile_flight(modem, emulator):
    """One session resumed by ten sockets at once (the server's tickets reusable).  The even
    connections get a corrupted server Finished, the odd ones 500 bytes of their own and a
    close_notify behind the resumed Finished.  Each id answered exactly once (even 566, odd
    0), each odd id's bytes once and its own, one "closed" per odd id, none for an even one;
    AT answering throughout; every id reusable."""
    host, advance, port = modem
    order = []
    lock = threading.Lock()

    hostile = [True]

    def script(c):
        if c is not c.server.conns[0] and hostile[0]:
            with lock:
                order.append(c)
                if len(order) % 2 == 1:
                    flip_resumed_finished(c)
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 0)

        def tail(c):
            i = order.index(c) + 1
            return c.app(b"%02d" % i + pattern(498, 1000 * i)) + c.tx.seal(CT_ALERT, b"\x01\x00")
        server.policy["resume_tail"] = tail
        forget_answers(host, 0)
        mark = len(host.transcript)
        for cid in range(10):
            out = host.at(f'AT+QSSLOPEN=1,1,{cid},"{NAME}",443,0')
            assert URCS_THEN_OK.fullmatch(out), out
        answers = {}
        deadline = time.monotonic() + 15
        while len(answers) < 10:
            assert time.monotonic() < deadline, answers
            assert URCS_THEN_OK.fullmatch(host.at("AT"))
            for m in re.finditer(rb"\+QSSLOPEN: (\d+),(-?\d+)\r\n", bytes(host.transcript[mark:])):
                answers.setdefault(int(m.group(1)), int(m.group(2)))
        assert sorted(answers) == list(range(10))
        host.quiet_for(0.5)
        t = bytes(host.transcript[mark:])
        for cid in range(10):
            assert t.count(b"+QSSLOPEN: %d," % cid) == 1, cid
        good = [cid for cid, err in answers.items() if err == 0]
        bad = [cid for cid, err in answers.items() if err != 0]
        assert all(answers[cid] == 566 for cid in bad)
        # a failure forgets the session: an open that connects after it makes a full handshake
        flipped = [c for c in order if c.resumed and c._finished.__name__ == "finished"]
        with_data = [c for c in order if c.resumed and c not in flipped]
        assert len(bad) == len(flipped) >= 1, (answers, len(flipped))
        assert len(good) == 10 - len(flipped)
        assert len(with_data) >= 1
        seen_i = []
        for cid in good:
            if cid in bad:
                continue
            if state(host, cid) == 2:                 # a full handshake: nothing behind it
                assert b'"closed",%d\r\n' % cid not in host.transcript[mark:]
                assert b'"recv",%d\r\n' % cid not in host.transcript[mark:]
                assert URCS_THEN_OK.fullmatch(host.at(f"AT+QSSLCLOSE={cid},0"))
                continue
            host.seen(b'+QSSLURC: "closed",%d\r\n' % cid, 5)
            got = read_all(host, cid, 500)
            i = int(got[:2])
            assert got == b"%02d" % i + pattern(498, 1000 * i), cid
            seen_i.append(i)
            assert recv(host, cid) == b""
            assert URCS_THEN_OK.fullmatch(host.at(f"AT+QSSLCLOSE={cid}"))
        assert sorted(seen_i) == sorted(order.index(c) + 1 for c in with_data)
        t = bytes(host.transcript[mark:])
        for cid in range(10):
            assert t.count(b'"closed",%d\r\n' % cid) <= (1 if cid in good else 0), cid
        for cid in bad:
            assert state(host, cid) is None
        server.policy.pop("resume_tail")
        hostile[0] = False
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connections released")
        for cid in range(10):
            forget_answers(host, cid)
            assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{NAME}",443,0') == OK
            assert open_answer(host, cid) == 0
            round_trip_and_close(host, cid, b"id %d again" % cid)


# == ML302: the Finished, data and a broken record / clear alert in one segment ======================
@pytest.mark.parametrize("junk", ["bad_record", "clear_fatal_alert"])
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "transparent"])
def test_ml302_finished_data_then_broken_record_in_one_segment(ml302_strict, emulator, mode, junk):
    """ML302 (test_adversarial_open_answer covers only the EC2x here): the server's Finished,
    700 bytes and then a record that fails its tag (or a fatal alert in clear, garbage under
    the session's keys) in ONE segment, the TCP connection held open.  The handshake is over,
    so the open succeeded: connectmode 0 -- OK, "+QSSLOPEN: 2,0", one "recv", one "close",
    the 700 bytes readable, REMOTE CLOSING; connectmode 1 -- CONNECT, the bytes, NO CARRIER.
    The emulator ends the TCP connection by itself; the ssid opens again."""
    from tests.e2e.test_adversarial_hostile_servers_4 import ml302_close, ml302_recv, server_got_fin
    from tests.e2e.test_adversarial_open_answer import FlightServer, bytewise, route
    host, advance, port = ml302_strict
    data = pattern(700, 8)
    raw = {"bad_record": b"\x17\x03\x03\x00\x28" + bytes(range(40)),
           "clear_fatal_alert": b"\x15\x03\x03\x00\x02\x02\x50"}[junk]
    with FlightServer(tail=[data, ("raw", raw)], after="hold") as server:
        route(emulator, server)
        bytewise(host, f'AT+QSSLOPEN=2,0,"flight.example",443,{mode}')
        if mode == 1:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=8) == want
            assert host.at("AT") == OK
        else:
            out = host.read_until(b'+QSSLURC: "close",2\r\n', timeout=8)
            assert out == (b'\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "recv",1,2\r\n'
                           b'\r\n+QSSLURC: "close",2\r\n'), out
            got = ml302_recv(host, 2, 500) + ml302_recv(host, 2, 500)
            assert got == data
            assert ml302_recv(host, 2, 500) == b""
        wait_for(lambda: server_got_fin(server.port) or tcp_fds_to(server.port) == 0, 5, "the emulator's end")
        assert re.search(rb'\+QSSLSTATE: 2,"TCP","[0-9.]+",443,"REMOTE CLOSING",1\r\n', host.at("AT+QSSLSTATE"))
        assert host.at("AT+QSSLSEND=2").endswith(b"ERROR\r\n")
        ml302_close(host, 2)
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 2,") == (0 if mode else 1)
        assert host.transcript.count(b'"close",2') + host.transcript.count(b"NO CARRIER") == 1
    with FlightServer(tail=[b"again"], after="echo") as again:
        route(emulator, again)
        host.write(b'AT+QSSLOPEN=2,0,"flight.example",443,0\r')
        want = b'\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "recv",1,2\r\n'
        assert host.read_until(b'"recv",1,2\r\n', timeout=8) == want
        assert ml302_recv(host, 2, 100) == b"again"
        ml302_close(host, 2)


# == DTLS: the server's end while the host is at the AT+QSSLSEND prompt / online ====================
DTLS_ALERTS = {"close_notify": b"\x01\x00", "fatal_internal_error": b"\x02\x50"}


def _dtls_session(host, emulator, pki, tmp_path, cid: int, mode: int):
    """`openssl s_server -dtls1_2 -keylogfile` behind a UdpMiddlebox, AES-128-GCM; the open
    (buffer / push: answered 0; transparent: CONNECT).  Returns (server, box, sealer)."""
    from emulator.testing.peers import UdpMiddlebox
    from tests.e2e.test_adversarial_hostile_servers_3 import DTLS_NAME, DTLS_PORT, DtlsSealer, _dtls_server
    keylog = tmp_path / "dtls.keys"
    server = _dtls_server(pki, "-keylogfile", str(keylog))
    box = UdpMiddlebox(server.address).__enter__()
    emulator.router.add_map(DTLS_NAME, DTLS_PORT, "127.0.0.1", box.port)
    assert host.at('AT+QSSLCFG="ciphersuite",2,0XC02F') == OK
    assert host.at('AT+QSSLCFG="dtls",2,1') == OK
    line = f'AT+QSSLOPEN=1,2,{cid},"{DTLS_NAME}",{DTLS_PORT},{mode}'
    if mode == 2:
        host.write(line.encode() + b"\r")
        assert host.read_until(b"\r\nCONNECT\r\n", timeout=20) == b"\r\nCONNECT\r\n"
    else:
        assert host.at(line) == OK
        assert open_answer(host, cid, timeout=20) == 0
    server.wait_for_output(rb"CIPHER is ECDHE-RSA-AES128-GCM-SHA256", 10)
    wait_for(lambda: keylog.exists() and keylog.stat().st_size > 0, 5, "the key log")
    return server, box, DtlsSealer(str(keylog), box)


@pytest.mark.parametrize("alert", sorted(DTLS_ALERTS))
def test_dtls_server_ends_while_the_host_is_at_the_send_prompt(modem, emulator, pki, tmp_path, alert):
    """DTLS, buffer mode: a line from the server, then -- while the host sits in the "> "
    prompt of a fixed-length AT+QSSLSEND -- the server's close_notify / fatal alert (sealed
    under the session's keys).  Nothing is written during the prompt; once the 8 bytes are
    in: ERROR (QIGETERROR 567, the connection ended while the prompt took the data), then one
    "closed"; the line stays readable; the 8 bytes never reach the server; state 4."""
    host, advance, port = modem
    server, box, sealer = _dtls_session(host, emulator, pki, tmp_path, 3, 0)
    try:
        server.write(b"before the end\n")
        host.seen(b'+QSSLURC: "recv",3\r\n', 10)
        host.write(b"AT+QSSLSEND=3,8\r")
        assert host.read_until(b"> ", timeout=5) == b"\r\n> "
        c2s = len(box.passed("c2s"))
        box.inject(sealer.seal(CT_ALERT, DTLS_ALERTS[alert]))
        time.sleep(0.5)
        assert host.quiet_for(0.1) == b""
        host.write(b"12345678")
        out = host.read_until(b'+QSSLURC: "closed",3\r\n', timeout=5)
        assert out == b'\r\nERROR\r\n\r\n+QSSLURC: "closed",3\r\n', out
        assert qigeterror(host) == 567
        assert read_all(host, 3, 15) == b"before the end\n"
        assert recv(host, 3) == b""
        assert state(host, 3) == 4
        time.sleep(0.3)
        assert not any(b"12345678" in d.data for d in box.passed("c2s")[c2s:])
        assert b"12345678" not in server.stdout
        assert host.at("AT+QSSLCLOSE=3,0") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",3') == 1
        assert host.quiet_for(0.1) == b""
    finally:
        box.close()
        server.stop()


@pytest.mark.parametrize("alert", sorted(DTLS_ALERTS))
@pytest.mark.parametrize("mode", [1, 2], ids=["push", "transparent"])
def test_dtls_server_ends_after_data_in_push_and_transparent_mode(modem, emulator, pki, tmp_path, mode, alert):
    """DTLS: two lines from the server, then its close_notify / fatal alert (sealed).  Push:
    both lines pushed once, then one "closed"; transparent (online): the lines, then NO
    CARRIER; state 4 either way; AT+QSSLSEND ERROR 567; the close OK."""
    host, advance, port = modem
    server, box, sealer = _dtls_session(host, emulator, pki, tmp_path, 4, mode)
    try:
        lines = b"first line\n", b"second line\n"
        for line in lines:
            server.write(line)
            time.sleep(0.1)
        if mode == 2:
            assert host.read_exactly(sum(map(len, lines)), timeout=5) == b"".join(lines)
        else:
            for line in lines:
                want = b'\r\n+QSSLURC: "recv",4,%d\r\n' % len(line) + line + b"\r\n"
                assert host.read_exactly(len(want), timeout=5) == want
        box.inject(sealer.seal(CT_ALERT, DTLS_ALERTS[alert]))
        end = b"\r\nNO CARRIER\r\n" if mode == 2 else b'\r\n+QSSLURC: "closed",4\r\n'
        assert host.read_exactly(len(end), timeout=5) == end
        assert host.quiet_for(0.2) == b""
        assert state(host, 4) == 4
        assert host.at("AT+QSSLSEND=4,1") == b"\r\nERROR\r\n"
        assert qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=4,0") == OK
        assert host.quiet_for(0.1) == b""
    finally:
        box.close()
        server.stop()


@pytest.mark.parametrize("alert", sorted(DTLS_ALERTS))
def test_dtls_escaped_transparent_socket_falls_back_to_buffer_mode(modem, emulator, pki, tmp_path, alert):
    """DTLS, transparent: the host leaves with "+++" (OK); the server then sends two lines and
    its close_notify / fatal alert.  docs/behaviour.md: ATO could only answer NO CARRIER, so
    the socket falls back to buffer access mode -- "recv", then "closed" -- and the lines
    are read with AT+QSSLRECV, each once; AT+QSSLSTATE shows state 4, access mode 0; ATO
    is NO CARRIER."""
    from tests.e2e.socket_support import escape
    host, advance, port = modem
    server, box, sealer = _dtls_session(host, emulator, pki, tmp_path, 5, 2)
    try:
        host.write(b"up\n")
        server.wait_for_output(rb"up", 10)
        assert escape(host, advance) == OK
        lines = b"waiting one\n", b"waiting two\n"
        for line in lines:
            server.write(line)
            time.sleep(0.1)
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        box.inject(sealer.seal(CT_ALERT, DTLS_ALERTS[alert]))
        want = b'\r\n+QSSLURC: "recv",5\r\n\r\n+QSSLURC: "closed",5\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        assert read_all(host, 5, 24) == b"".join(lines)
        assert recv(host, 5) == b""
        st = host.at("AT+QSSLSTATE=5")
        assert re.search(rb'\+QSSLSTATE: 5,"SSLClient","[^"]+",\d+,\d+,4,1,5,0,', st), st
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QSSLCLOSE=5,0") == OK
        assert host.transcript.count(b'+QSSLURC: "closed",5') == 1
        assert host.quiet_for(0.1) == b""
    finally:
        box.close()
        server.stop()


def test_dtls_fatal_alert_while_the_host_streams_online(modem, emulator, pki, tmp_path):
    """DTLS, transparent: the host streams 15 KB online (datagrams of at most 1460 bytes),
    the server sends a line, and once the stream is in, its fatal alert: the line, then NO
    CARRIER, nothing else, state 4, AT answering, the close OK; each datagram sent once."""
    host, advance, port = modem
    server, box, sealer = _dtls_session(host, emulator, pki, tmp_path, 6, 2)
    try:
        blob = pattern(15_000, 5).replace(b"+", b"-")
        for i in range(0, 15_000, 1000):
            host.write(blob[i:i + 1000])
        server.write(b"server line\n")
        assert host.read_exactly(12, timeout=5) == b"server line\n"
        server.wait_for_output(re.escape(blob[14_000:14_040]), 10)
        box.inject(sealer.seal(CT_ALERT, b"\x02\x50"))
        assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=8) == b"\r\nNO CARRIER\r\n"
        assert host.quiet_for(0.2) == b""
        assert host.at("AT") == OK
        assert state(host, 6) == 4
        assert host.at("AT+QSSLCLOSE=6,0") == OK
        assert host.transcript.count(b"NO CARRIER") == 1
        sent = [d.data for d in box.passed("c2s")]
        assert len(sent) == len(set(sent))
    finally:
        box.close()
        server.stop()


# == an RST right behind the resumed flight: the modem's Finished can never leave ===================
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_rst_right_behind_the_resumed_flight_fails_the_open(modem, emulator, mode):
    """A resumed handshake: the server's ServerHello, CCS and Finished, then at once an RST
    (SO_LINGER 0), before the modem could send its own CCS and Finished -- the abbreviated
    handshake's LAST flight, which Mbed TLS writes after reading the server's Finished and
    before mbedtls_ssl_handshake returns.  Its write fails on the reset connection, so the
    handshake never completed (the server never saw the modem's Finished): the open fails
    once -- 566 (transparent: ERROR, QIGETERROR 566) -- with no "closed" URC, never a
    success followed by an end.  (A full handshake is different: there the modem's Finished
    left before the server's; test_adversarial_open_answer covers that RST.)"""
    from tests.e2e.hostile_support import send_rst
    host, advance, port = modem

    def script(c):
        if c.server.conns.index(c) == 1:
            real_finished = c._finished

            def finished(master, label):
                # The module's loop is kept busy from before the flight until after the RST:
                # the flight and the reset come in one burst, as on a link where both are in
                # before the module answers (else a fast loop's Finished could leave first,
                # where 0 then "closed" would be right).
                emulator.loop.call_soon_threadsafe(time.sleep, 0.3)
                return real_finished(master, label)
            c._finished = finished

            def rst_instead(master):
                send_rst(c.sock)
                raise EOFError
            c._client_finished = rst_instead
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 2)
        forget_answers(host, 2)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,{mode}\r'.encode())
        time.sleep(1.0)
        out = host.quiet_for(0.3)
        assert server.conns[1].resumed is True
        if mode == 2:
            assert out == b"\r\nERROR\r\n", out
        else:
            assert out == b"\r\nOK\r\n\r\n+QSSLOPEN: 2,566\r\n", out
        assert qigeterror(host) == 566
        assert state(host, 2) is None
        assert b"+QSSLURC" not in host.transcript[mark:]          # no "closed", no push
        next_open_is_full(host, server, 2)          # the failed handshake's session is not kept


# == DTLS: a resumed handshake whose last flight (the modem's) is lost ===============================
def test_dtls_resumed_handshake_whose_last_flight_is_lost(modem, emulator, pki, tmp_path):
    """DTLS 1.2 session resumption (`s_server` resumes by session id): in the abbreviated
    handshake the modem's CCS + Finished are the LAST flight; the path drops them once.
    s_server retransmits its ServerHello / CCS / Finished flight; the modem must answer it by
    resending its own last flight (RFC 6347 4.2.4, Mbed TLS keeps that flight for it), so
    the server completes: the open answered 0 once, then data both ways, no "closed"."""
    from emulator.testing.peers.dtls_wire import records as dtls_records
    host, advance, port = modem
    server, box, sealer = _dtls_session(host, emulator, pki, tmp_path, 3, 0)
    seen = {"hellos": 0, "dropped": 0}

    def rule(direction, index, data):
        recs = dtls_records(data)
        if direction == "c2s":
            if any(r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x01" for r in recs):
                seen["hellos"] += 1
            if seen["hellos"] >= 2 and not seen["dropped"] and any(r.type == CT_CCS for r in recs):
                seen["dropped"] += 1
                return []
        return [data]

    try:
        assert host.at("AT+QSSLCLOSE=3") == OK
        time.sleep(0.3)
        box.rule = rule
        forget_answers(host, 3)
        mark = len(host.transcript)
        assert host.at('AT+QSSLOPEN=1,2,3,"dtls3.example",4444,0') == OK
        assert open_answer(host, 3, timeout=10) == 0
        wait_for(lambda: b"Reused session-id" in server.stdout, 8, "the server's resumption to complete")
        assert seen["dropped"] == 1
        server.write(b"after the lost flight\n")
        host.seen(b'+QSSLURC: "recv",3\r\n', 8)
        assert read_all(host, 3, 22) == b"after the lost flight\n"
        assert host.send_data(3, b"up again\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"up again", 8)
        assert b'"closed",3' not in host.transcript[mark:]
        assert host.transcript[mark:].count(b"+QSSLOPEN: 3,") == 1
        assert host.at("AT+QSSLCLOSE=3,0") == OK
    finally:
        box.close()
        server.stop()


# == renegotiation 1: a HelloRequest behind the resumed Finished, before the modem's Finished ========
@pytest.mark.parametrize("mode", [0, 2], ids=["buffer", "transparent"])
def test_hello_request_behind_the_resumed_finished_with_renegotiation_1(modem, emulator, mode):
    """renegotiation 1.  The resumed flight, an encrypted HelloRequest and 400 bytes in one
    segment, before the modem has sent its Finished.  The modem completes the abbreviated
    handshake (its CCS + Finished first), then answers the HelloRequest with a renegotiating
    ClientHello under the session's keys; the open is answered once (0 / CONNECT), the 400
    bytes reach the host once, the stalled renegotiation never turns into an answer or an
    end; the host's close works."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    data = pattern(400, 21)
    got = []

    def script(c):
        c.handshake()
        if c is c.server.conns[0]:
            c.echo()
            return
        try:
            while True:
                ct, payload = c.read_record()
                got.append((ct, c.rx.open(ct, payload)))
        except (OSError, EOFError):
            pass

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 1)
        server.policy["resume_tail"] = lambda c: c.tx.seal(CT_HANDSHAKE, hs(0, b"")) + c.app(data)
        forget_answers(host, 1)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,1,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            assert host.read_exactly(11 + len(data), timeout=8) == b"\r\nCONNECT\r\n" + data
        else:
            want = OK + b'\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1\r\n'
            assert host.read_exactly(len(want), timeout=8) == want
            assert read_all(host, 1, len(data)) == data
        wait_for(lambda: got, 5, "the modem's renegotiating ClientHello")
        assert got[0][0] == CT_HANDSHAKE and got[0][1][:1] == b"\x01", got[0]
        assert server.conns[1].resumed
        time.sleep(0.3)
        assert host.quiet_for(0.2) == b""
        if mode == 2:
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            assert host.read_until(OK, timeout=5) == OK
        else:
            assert state(host, 1) == 2
        assert host.at("AT+QSSLCLOSE=1,0") == OK
        t = bytes(host.transcript[mark:])
        assert t.count(b"+QSSLOPEN: 1,") == (0 if mode == 2 else 1)
        assert b'"closed",1' not in t and b"NO CARRIER" not in t


@pytest.mark.parametrize("mode", [0, 2], ids=["buffer", "transparent"])
def test_fin_right_behind_the_resumed_flight_still_opens(modem, emulator, mode):
    """The contrast to the RST above: the server half-closes (FIN) right behind its resumed
    flight but goes on reading, so the modem's CCS + Finished reach it (checked: the server
    verifies that Finished).  The handshake completed: "+QSSLOPEN: <id>,0" then one
    "closed" (transparent: CONNECT then NO CARRIER), state 4, the emulator's FIN."""
    import socket
    host, advance, port = modem
    checked = []

    def script(c):
        if c is not c.server.conns[0]:
            real = c._client_finished

            def fin_first(master):
                c.sock.shutdown(socket.SHUT_WR)
                real(master)
                checked.append(True)
            c._client_finished = fin_first
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True, name=NAME) as server:
        full_open_then_close(host, server, 2)
        forget_answers(host, 2)
        host.write(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            want = b"\r\nCONNECT\r\n\r\nNO CARRIER\r\n"
        else:
            want = OK + b'\r\n+QSSLOPEN: 2,0\r\n\r\n+QSSLURC: "closed",2\r\n'
        assert host.read_exactly(len(want), timeout=8) == want
        wait_for(lambda: checked, 5, "the server to verify the modem's Finished")
        wait_for(server.conns[1].eof.is_set, 5, "the emulator's FIN")
        assert host.quiet_for(0.2) == b""
        assert state(host, 2) == 4
        assert host.at("AT+QSSLCLOSE=2") == OK


# == DTLS: a Certificate past Mbed TLS's reassembly limit ===========================================
@pytest.mark.parametrize("level", [0, 1], ids=["seclevel0", "seclevel1"])
def test_dtls_certificate_past_the_reassembly_limit_times_out_once(modem, emulator, tmp_path, level):
    """`openssl s_server -dtls1_2` whose leaf carries 1500 SAN names (a ~33 KB Certificate
    message, sent in fragments): Mbed TLS 2.28 reassembles no DTLS handshake message past its
    16 KiB input buffer and drops the fragments, so the handshake never gets past the
    Certificate while the server retransmits.  Both levels alike (the seclevel 1 check never
    turns it into a certificate verdict): no answer before negotiatetime (20 s, modem
    clock), then exactly one "+QSSLOPEN: 3,569", the id free and AT answering."""
    from emulator.testing.peers import OpenSslServer, UdpMiddlebox
    from emulator.testing.peers.pki import make_cert
    host, advance, port = modem
    root = make_cert("hostile12 dtls root", None, ca=True)
    leaf = make_cert("dtls12.example", root, ca=False,
                     names=["dtls12.example"] + [f"n{i}.padding.example" for i in range(1500)])
    (tmp_path / "c.pem").write_bytes(leaf.cert_pem)
    (tmp_path / "k.pem").write_bytes(leaf.key_pem)
    server = OpenSslServer(["-cert", str(tmp_path / "c.pem"), "-key", str(tmp_path / "k.pem"),
                            "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    try:
        with UdpMiddlebox(server.address) as box:
            emulator.router.add_map("dtls12.example", 4444, "127.0.0.1", box.port)
            assert host.at('AT+QSSLCFG="dtls",2,1') == OK
            assert host.at('AT+QSSLCFG="negotiatetime",2,20') == OK
            if level:
                assert host.upload("UFS:h12dtlsroot.pem", root.cert_pem).endswith(b"OK\r\n")
                assert host.at('AT+QSSLCFG="cacert",2,"UFS:h12dtlsroot.pem"') == OK
                assert host.at('AT+QSSLCFG="seclevel",2,1') == OK
            mark = len(host.transcript)
            assert host.at('AT+QSSLOPEN=1,2,3,"dtls12.example",4444,0') == OK
            box.wait_for(lambda: len(box.passed("s2c")) > 20, 5)
            assert host.quiet_for(1.0) == b""
            for _ in range(19):
                advance(1)
                assert host.quiet_for(0.05) == b""
            advance(1.5)
            assert host.read_until(b"\r\n+QSSLOPEN: 3,569\r\n", timeout=5) == b"\r\n+QSSLOPEN: 3,569\r\n"
            assert host.quiet_for(0.3) == b""
            assert qigeterror(host) == 569
            assert state(host, 3) is None
            assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN: 3,") == 1
            assert host.at("AT") == OK
    finally:
        server.stop()
