"""Hostile servers, fifth round: the DTLS renegotiation timer (commit 9a3fe89) and what is
around it, attacked as a hostile server, a lossy path and an impatient host would.

Since 9a3fe89 a server-initiated DTLS renegotiation runs on Mbed TLS's retransmission timer,
on modem time (TlsClientSession.next_timeout / handle_timeout, SslSocket._arm_timer /
_on_timer): a lost flight is resent after 1, 2, 4 ... 32, 60 s and after the last interval
(123 s in all) the socket ends as after any fatal error -- one `+QSSLURC: "closed",<id>`,
what came before readable, AT+QSSLSTATE 4 (docs/behaviour.md, renegotiation; a DTLS
renegotiation never completes with OpenSSL 3 servers).  Covered here, against
`openssl s_server -dtls1_2` behind a UdpMiddlebox:

* an established DTLS socket left idle for ten modem minutes arms no timer at all;
* the renegotiation's first two ClientHellos lost, then the path recovers: resent on the
  timer, the server answers, the socket then ends as documented, and nothing (no timer, no
  datagram, no URC) follows the end;
* everything after the HelloRequest lost: not ended at 122 s, ended in the next jump, with
  exactly one datagram per interval and one timer callback per interval, also when the
  clock moves in one large jump;
* the same at a modem clock that does not sit on a whole second (the timer's arithmetic on
  fractional times): no timer callback spinning at one instant, the socket ends;
* the clock not moved at all: no retransmission, no timer callback, the socket open;
* the HelloRequest duplicated on the path and replayed later: one renegotiation, one
  ClientHello (RFC 6347 4.1.2.6 replay detection), the timer's intervals unchanged;
* renegotiation 0 (the default) over DTLS, the HelloRequest duplicated: one alert answers
  it, no timer, OpenSSL ends the connection, "closed" once;
* AT+QSSLSEND during the stalled renegotiation (SEND OK: the data wait, behaviour.md), no
  application record leaves under the old keys, then the end; AT+QSSLSEND after it is ERROR;
* AT+QSSLCLOSE during the stalled renegotiation: OK at once, no URC, no timer callback and
  no datagram after it, the id opens again;
* three DTLS sockets, one renegotiating into a black hole: only that one ends, the others
  carry data both ways;
* direct push (access mode 1) and transparent (access mode 2) sockets during the stalled
  renegotiation: the data before it reach the host once, then one "closed" URC / NO CARRIER;
* the server's lines written right behind its HelloRequest while the modem's flights are
  lost: each reaches the host once, in order, and the timer keeps its intervals;
* TLS (TCP) keeps its documented behaviour: a stalled renegotiation has no timer of its own
  (no timer callback over 300 modem seconds, the socket still connected).

Timer callbacks are counted by wrapping SslSocket._on_timer (a count, never a wall-clock
speed); the wrapper stops calling through after a cap, so a callback re-arming itself at
the same modem instant shows as a failed count instead of hanging the emulator's loop.
Every test runs on ec2x_strict (no ERROR log record, no traceback)."""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager

import pytest

from emulator.sockets import ssl_socket
from emulator.testing.peers import UdpMiddlebox
from emulator.testing.peers.dtls_wire import records as dtls_records
from tests.e2e.hostile_support import open_answer, recv
from tests.e2e.test_adversarial_hostile_servers_2 import (CT_ALERT, CT_APP, CT_HANDSHAKE, Server, read_all,
                                                          ssl_open, state)
from tests.e2e.test_adversarial_hostile_servers_3 import (DTLS_NAME, DTLS_PORT, _dtls_server, _dtls_still_usable,
                                                          _renegotiating_server)

LIMIT = 1 + 2 + 4 + 8 + 16 + 32 + 60      # the DTLS renegotiation gives up after 123 modem s
RESENT_AT = (1, 3, 7, 15, 31, 63)         # modem seconds after the HelloRequest
SPIN_CAP = 200                            # timer callbacks: past it the wrapper stops calling


def _count_timer_calls(monkeypatch, port) -> list[tuple[float, int]]:
    """Every SslSocket._on_timer call as (modem time, socket id).  Past SPIN_CAP calls the
    original is no longer called (a spinning timer would otherwise hold the loop forever)."""
    calls: list[tuple[float, int]] = []
    original = ssl_socket.SslSocket._on_timer

    def counting(self):
        calls.append((port.modem.timers.monotonic(), self.client_id))
        if len(calls) > SPIN_CAP:
            self._timer = None
            return None
        return original(self)

    monkeypatch.setattr(ssl_socket.SslSocket, "_on_timer", counting)
    return calls


class Path:
    """A UdpMiddlebox rule switched on at the HelloRequest: from `on` the first `lose_c2s`
    datagrams of the modem are dropped (None: all of them), and with `deaf` every datagram
    of the server after the first (its HelloRequest; OpenSSL retransmits it on its own
    real-time timer, which would otherwise reach the modem at moments no test controls)."""

    def __init__(self, lose_c2s: int | None = None, deaf: bool = False, copies: int = 1,
                 keep_app: bool = False) -> None:
        self.on = threading.Event()
        self.keep_app = keep_app          # deaf, but the server's application data still pass
        self.lose_c2s = lose_c2s
        self.deaf = deaf
        self.copies = copies              # of the server's HelloRequest datagram
        self.lost = 0
        self.s2c_after = 0
        self.hello_request: bytes | None = None

    def rule(self, direction, index, data):
        if not self.on.is_set():
            return [data]
        if direction == "c2s":
            if self.lose_c2s is None or self.lost < self.lose_c2s:
                self.lost += 1
                return []
            return [data]
        self.s2c_after += 1
        if self.s2c_after == 1:
            self.hello_request = data
            return [data] * self.copies
        if self.keep_app and _is_app_datagram(data):
            return [data]
        return [] if self.deaf else [data]


def _kinds(datagram: bytes) -> list[tuple[int, int]]:
    return [(r.type, r.epoch) for r in dtls_records(datagram)]


def _c2s_since(box: UdpMiddlebox, mark: int) -> list[bytes]:
    return [d.data for d in box.log[mark:] if d.direction == "c2s"]


def _c2s_count(box: UdpMiddlebox, mark: int, n: int) -> list[bytes]:
    """The modem's datagrams since mark once at least n came (the relay logs them on its own
    thread, a little after the emulator sent them), and a moment later for any extra one."""
    box.wait_for(lambda: len(_c2s_since(box, mark)) >= n, 10)
    time.sleep(0.2)
    return _c2s_since(box, mark)


@contextmanager
def _dtls_path(pki, rule=None):
    """`openssl s_server -dtls1_2` behind a UdpMiddlebox with `rule`: yields (server, box);
    the server is stopped however the test ends."""
    server = _dtls_server(pki)
    try:
        with UdpMiddlebox(server.address, rule) as box:
            yield server, box
    finally:
        server.stop()


def _open_dtls(host, emulator, box: UdpMiddlebox, cid: int = 1, mode: int = 0,
               name: str = DTLS_NAME, renegotiation: int = 1) -> None:
    emulator.router.add_map(name, DTLS_PORT, "127.0.0.1", box.port)
    assert host.at('AT+QSSLCFG="dtls",2,1') == b"\r\nOK\r\n"
    assert host.at(f'AT+QSSLCFG="renegotiation",2,{renegotiation}') == b"\r\nOK\r\n"
    if mode == 2:
        assert host.at(f'AT+QSSLOPEN=1,2,{cid},"{name}",{DTLS_PORT},2', timeout=20) == b"\r\nCONNECT\r\n"
        return
    assert host.at(f'AT+QSSLOPEN=1,2,{cid},"{name}",{DTLS_PORT},{mode}') == b"\r\nOK\r\n"
    assert open_answer(host, cid, timeout=20) == 0


def _before_then_hello_request(host, server, box: UdpMiddlebox, path: Path, cid: int = 1) -> int:
    """The server sends a line (read back by the host in buffer mode), then asks for a
    renegotiation with the path's losses on; returns the log mark at the HelloRequest."""
    server.wait_for_output(rb"CIPHER is", 10)
    server.write(b"before\n")
    host.seen(b'+QSSLURC: "recv",%d\r\n' % cid, timeout=10)
    assert read_all(host, cid, 7) == b"before\n"
    mark = len(box.log)
    path.on.set()
    server.write(b"r\n")
    box.wait_for(lambda: any(d.direction == "c2s" for d in box.log[mark:]), 10)   # the ClientHello
    return mark


def _advance_until(host, advance, what: bytes, step: float, most: float) -> float:
    """advance(step) until `what` is in the host's transcript; the modem seconds it took."""
    moved = 0.0
    while what not in bytes(host.transcript):
        assert moved < most, (moved, bytes(host.transcript)[-300:])
        advance(step)
        moved += step
        host.quiet_for(0.1)
    return moved


def _ended_as_documented(host, cid: int) -> None:
    """behaviour.md: one "closed" URC, nothing more to read, AT+QSSLSTATE 4, AT+QSSLCLOSE OK."""
    host.quiet_for(0.2)
    assert host.transcript.count(b'+QSSLURC: "closed",%d' % cid) == 1, bytes(host.transcript)[-300:]
    assert recv(host, cid) == b""
    assert state(host, cid) == 4
    assert host.send_data(cid, b"too late") == b"\r\nERROR\r\n"
    assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"
    assert state(host, cid) is None


# == idle: no timer =================================================================================
def test_idle_established_dtls_socket_arms_no_timer(ec2x_strict, emulator, pki, monkeypatch):
    """An established DTLS socket (renegotiation 1) with nothing to do: ten modem minutes in
    jumps of 1 s and one of 600 s call no timer callback (tls_engine/README.md: the timer is
    armed only while a renegotiation runs), and the socket still carries data both ways."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    with _dtls_path(pki) as (server, box):
        _open_dtls(host, emulator, box)
        server.wait_for_output(rb"CIPHER is", 10)
        assert host.send_data(1, b"hello\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"hello", 10)
        server.write(b"back\n")
        assert read_all(host, 1, 5) == b"back\n"
        for _ in range(20):
            advance(1)
        advance(600)
        host.quiet_for(0.3)
        assert calls == []
        assert state(host, 1) == 2
        assert host.send_data(1, b"still\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"still", 10)
        server.write(b"yes\n")
        assert read_all(host, 1, 4) == b"yes\n"
        assert calls == []
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"


# == partial loss, then recovery ====================================================================
@pytest.mark.needs_native
def test_renegotiation_client_hellos_lost_then_path_recovers(ec2x_strict, emulator, pki, monkeypatch):
    """The renegotiation's ClientHello and its first resend are lost, then the path carries
    everything again: the modem resends on the timer (modem time), the server hears the third
    copy and answers, and the renegotiation ends the socket as documented (it never completes
    with OpenSSL 3).  After the end nothing follows: no timer callback, no datagram of the
    modem, no second URC over 300 more modem seconds; the id opens again."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=2)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        moved = _advance_until(host, advance, b'+QSSLURC: "closed",1', 1, LIMIT + 20)
        sent = _c2s_since(box, mark)
        hellos = [d for d in sent if _kinds(d)[:1] == [(CT_HANDSHAKE, 1)]]
        assert len(hellos) >= 3, [_kinds(d) for d in sent]          # resent until one got through
        assert path.lost == 2 and len(box.passed("c2s")) > 0
        assert moved >= 3                                            # (resends at 1 s and 3 s)
        assert 2 <= len(calls) <= 10, calls
        _ended_as_documented(host, 1)
        n_calls, n_log = len(calls), len(box.log)
        advance(300)
        host.quiet_for(0.3)
        assert len(calls) == n_calls, calls[n_calls:]
        assert _c2s_since(box, n_log) == []
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
    _dtls_still_usable(host, emulator, pki, 1)


# == total loss: the limit ==========================================================================
@pytest.mark.needs_native
def test_renegotiation_into_a_black_hole_ends_exactly_at_the_limit(ec2x_strict, emulator, pki, monkeypatch):
    """Everything after the HelloRequest is lost, both ways.  One jump of 122 modem s: the
    socket is still connected, the ClientHello went out once and was resent at 1, 3, 7, 15, 31
    and 63 s (seven datagrams, one timer callback per interval); the next jump (1000 s) passes
    123 s: the socket ends, "closed" once, and one more timer callback was all it took."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        t0 = port.modem.timers.monotonic()
        advance(LIMIT - 1)
        host.quiet_for(0.3)
        assert b"closed" not in bytes(host.transcript)
        assert state(host, 1) == 2
        sent = _c2s_count(box, mark, 1 + len(RESENT_AT))
        assert len(sent) == 1 + len(RESENT_AT), [_kinds(d) for d in sent]
        assert all(_kinds(d)[:1] == [(CT_HANDSHAKE, 1)] for d in sent)
        assert [round(t - t0, 6) for t, _ in calls] == list(RESENT_AT), calls
        advance(1000)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert [round(t - t0, 6) for t, _ in calls] == list(RESENT_AT) + [LIMIT], calls
        assert len(_c2s_count(box, mark, 1 + len(RESENT_AT))) == 1 + len(RESENT_AT)
        _ended_as_documented(host, 1)
    _dtls_still_usable(host, emulator, pki, 1)


@pytest.mark.needs_native
# Was a bug, fixed: at a modem time off the whole second (the HelloRequest at 1000.1) the
# timer's expiry left a sub-ULP remainder (~1.1e-13 s at the 16 s interval: (now - start) * 1000
# came out a hair under fin_ms), so _renegotiation_timer_expired did nothing and
# _renegotiation_timeout re-armed the socket's timer with that remainder, which landed on the
# same float instant: _on_timer fired for ever at 1031.1 inside Timers.advance (the loop held).
# _DelayTimer now reads the elapsed time rounded to the microsecond.
def test_renegotiation_timer_at_a_fractional_modem_time_does_not_spin(ec2x_strict, emulator, pki, monkeypatch):
    """As the black-hole test, with the modem clock moved 0.1 s before the HelloRequest (a host
    on manual time, or any real clock, is rarely on a whole second): the timer still fires
    once per interval (1, 2, 4 ... 60 s: at most a few callbacks, never hundreds at one modem
    instant) and the socket ends after 123 s with one "closed"."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        advance(0.1)
        _before_then_hello_request(host, server, box, path)
        advance(LIMIT + 10)
        host.quiet_for(0.3)
        instants = sorted({round(t, 6) for t, _ in calls})
        assert len(calls) <= 2 * len(instants) and len(calls) <= 10, (len(calls), instants)
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1, bytes(host.transcript)[-200:]
        _ended_as_documented(host, 1)


@pytest.mark.needs_native
def test_stalled_renegotiation_with_the_clock_standing_still(ec2x_strict, emulator, pki, monkeypatch):
    """Modem time never moves: nothing is due, so no timer callback runs and no ClientHello is
    resent however long the wall clock runs (the timer is on modem time); the socket stays
    connected and AT answers.  Once the clock moves past 123 s the socket ends."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        for _ in range(6):
            host.quiet_for(0.25)
            assert host.at("AT") == b"\r\nOK\r\n"
        assert calls == []
        assert len(_c2s_since(box, mark)) == 1
        assert state(host, 1) == 2
        assert b"closed" not in bytes(host.transcript)
        advance(LIMIT + 1)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert len(calls) == len(RESENT_AT) + 1, calls
        _ended_as_documented(host, 1)


# == the HelloRequest duplicated and replayed =======================================================
@pytest.mark.needs_native
def test_hello_request_duplicated_and_replayed_starts_one_renegotiation(ec2x_strict, emulator, pki, monkeypatch):
    """The path delivers the server's HelloRequest datagram twice at once and the test replays
    it twice more later (same record sequence number: RFC 6347 4.1.2.6, a replay is
    discarded): one renegotiation, one ClientHello; the timer keeps its intervals (one
    callback each) and the socket ends at the limit with one "closed"."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True, copies=2)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        host.quiet_for(0.3)
        advance(0.5)
        box.inject(path.hello_request)
        host.quiet_for(0.3)
        advance(0.25)
        box.inject(path.hello_request)
        host.quiet_for(0.3)
        assert len(_c2s_since(box, mark)) == 1, [_kinds(d) for d in _c2s_since(box, mark)]
        assert calls == []
        advance(LIMIT - 0.75 - 1)
        host.quiet_for(0.2)
        assert len(calls) == len(RESENT_AT), calls
        assert b"closed" not in bytes(host.transcript)
        advance(2)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert len(calls) == len(RESENT_AT) + 1, calls
        assert len(_c2s_count(box, mark, 1 + len(RESENT_AT))) == 1 + len(RESENT_AT)
        _ended_as_documented(host, 1)


@pytest.mark.needs_native
def test_renegotiation_off_answers_a_duplicated_hello_request_with_one_alert(ec2x_strict, emulator, pki, monkeypatch):
    """renegotiation 0 (the default) over DTLS, the HelloRequest delivered twice: the modem
    answers with one alert record (no_renegotiation, under the session's keys) and no
    ClientHello, arms no timer; OpenSSL ends the connection ("no renegotiation") with a fatal
    alert and the modem reports "closed" once, the line before read; the id opens again."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=0, copies=2)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box, renegotiation=0)
        mark = _before_then_hello_request(host, server, box, path)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=10)
        server.wait_for_output(rb"no renegotiation", 10, stream="stderr")
        advance(300)
        host.quiet_for(0.3)
        sent = _c2s_count(box, mark, 1)
        assert [_kinds(d) for d in sent] == [[(CT_ALERT, 1)]], [_kinds(d) for d in sent]
        assert calls == []
        _ended_as_documented(host, 1)
    _dtls_still_usable(host, emulator, pki, 1)


# == the host during a stalled renegotiation ========================================================
@pytest.mark.needs_native
def test_sends_during_a_stalled_renegotiation_wait_then_the_socket_ends(ec2x_strict, emulator, pki, monkeypatch):
    """Two lines the server read before its HelloRequest; two AT+QSSLSENDs while the
    renegotiation stalls: SEND OK (the data wait for the renegotiation's end, behaviour.md),
    and no application record leaves under the old keys; the sends change nothing in the
    timer (one callback per interval) and the socket ends at the limit with one "closed";
    a send after that is ERROR."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        server.wait_for_output(rb"CIPHER is", 10)
        assert host.send_data(1, b"first line\n") == b"\r\nSEND OK\r\n"
        assert host.send_data(1, b"second line\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"first line\nsecond line\n", 10)
        mark = _before_then_hello_request(host, server, box, path)
        assert host.send_data(1, b"during one\n") == b"\r\nSEND OK\r\n"
        advance(2)                                       # (a resend between the two)
        assert host.send_data(1, b"during two\n") == b"\r\nSEND OK\r\n"
        host.quiet_for(0.3)
        moved = 2 + _advance_until(host, advance, b'+QSSLURC: "closed",1', 5, LIMIT + 20)
        assert moved >= LIMIT
        sent = _c2s_count(box, mark, 1 + len(RESENT_AT))
        assert all((CT_APP, 1) not in _kinds(d) for d in sent), [_kinds(d) for d in sent]
        assert len(sent) == 1 + len(RESENT_AT), [_kinds(d) for d in sent]
        assert len(calls) == len(RESENT_AT) + 1, calls
        assert b"during" not in server.stdout
        _ended_as_documented(host, 1)


@pytest.mark.needs_native
def test_close_during_a_stalled_renegotiation_leaves_nothing_behind(ec2x_strict, emulator, pki, monkeypatch):
    """AT+QSSLCLOSE while the renegotiation stalls (two resends made already): OK at once (a
    DTLS close has no linger), the id free; over 300 more modem seconds no timer callback, no
    datagram of the modem, no URC; the id opens again and carries data."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        advance(3.5)
        assert len(_c2s_count(box, mark, 3)) == 3
        assert len(calls) == 2, calls
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        assert state(host, 1) is None
        n_log = len(box.log)
        for _ in range(6):
            advance(50)
        host.quiet_for(0.3)
        assert len(calls) == 2, calls
        assert _c2s_since(box, n_log) == []
        assert b"+QSSLURC" not in host.quiet_for(0.1)
        assert b'"closed"' not in bytes(host.transcript)
    _dtls_still_usable(host, emulator, pki, 1)


# == many sockets ===================================================================================
@pytest.mark.needs_native
def test_three_dtls_sockets_only_the_renegotiating_one_ends(ec2x_strict, emulator, pki, monkeypatch):
    """Sockets 0, 1 and 2 on three DTLS servers; only server 1 asks for a renegotiation, into
    a black hole.  Every timer callback is socket 1's, one per interval; at the limit socket 1
    reports "closed" once, and sockets 0 and 2 never report anything but data: both still
    carry a line each way."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    servers = [_dtls_server(pki) for _ in range(3)]
    paths = [Path(lose_c2s=None, deaf=True) for _ in range(3)]
    boxes = []
    try:
        for cid in range(3):
            box = UdpMiddlebox(servers[cid].address, paths[cid].rule)
            boxes.append(box)
            _open_dtls(host, emulator, box, cid=cid, name=f"dtls5-{cid}.example")
        mark = _before_then_hello_request(host, servers[1], boxes[1], paths[1])
        for cid in (0, 2):
            servers[cid].wait_for_output(rb"CIPHER is", 10)
        advance(LIMIT + 1)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert {cid for _, cid in calls} == {1}, calls
        assert len(calls) == len(RESENT_AT) + 1, calls
        assert len(_c2s_count(boxes[1], mark, 1 + len(RESENT_AT))) == 1 + len(RESENT_AT)
        for cid in (0, 2):
            assert host.send_data(cid, b"alive %d\n" % cid) == b"\r\nSEND OK\r\n"
            servers[cid].wait_for_output(b"alive %d" % cid, 10)
            servers[cid].write(b"still %d\n" % cid)
            assert read_all(host, cid, 8) == b"still %d\n" % cid
            assert state(host, cid) == 2
        assert not re.search(rb'"closed",[02]', bytes(host.transcript))
        _ended_as_documented(host, 1)
        for cid in (0, 2):
            assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"
    finally:
        for box in boxes:
            box.close()
        for server in servers:
            server.stop()


# == access modes ===================================================================================
@pytest.mark.needs_native
def test_direct_push_socket_during_a_stalled_renegotiation(ec2x_strict, emulator, pki, monkeypatch):
    """Access mode 1: the line before the HelloRequest is pushed once
    (+QSSLURC: "recv",1,7<CR><LF>before<LF>), then the renegotiation stalls into a black hole
    and at the limit one "closed" follows the pushed data; no timer callback but one per
    interval."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box, mode=1)
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"before\n")
        host.seen(b'+QSSLURC: "recv",1,7\r\nbefore\n', timeout=10)
        mark = len(box.log)
        path.on.set()
        server.write(b"r\n")
        box.wait_for(lambda: any(d.direction == "c2s" for d in box.log[mark:]), 10)
        advance(LIMIT + 1)
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        host.quiet_for(0.2)
        text = bytes(host.transcript)
        assert text.count(b"before\n") == 1
        assert text.index(b"before\n") < text.index(b'+QSSLURC: "closed",1')
        assert text.count(b'+QSSLURC: "closed",1') == 1
        assert len(calls) == len(RESENT_AT) + 1, calls
        assert state(host, 1) == 4
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"


@pytest.mark.needs_native
def test_transparent_socket_during_a_stalled_renegotiation(ec2x_strict, emulator, pki, monkeypatch):
    """Access mode 2: CONNECT, the server's line reaches the host unframed; its HelloRequest
    then stalls into a black hole while the host types data (held: nothing leaves under the
    old keys).  At the limit: NO CARRIER right after the line (no "closed" URC in transparent
    mode, behaviour.md), back to command mode, AT+QSSLSTATE 4, AT+QSSLCLOSE OK."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box, mode=2)
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"before\n")
        assert host.read_exactly(7, timeout=10) == b"before\n"
        mark = len(box.log)
        path.on.set()
        server.write(b"r\n")
        box.wait_for(lambda: any(d.direction == "c2s" for d in box.log[mark:]), 10)
        host.write(b"typed while renegotiating\n")
        host.quiet_for(0.3)
        moved = 0
        while b"NO CARRIER" not in bytes(host.transcript):
            assert moved <= LIMIT + 20, bytes(host.transcript)[-200:]
            advance(10)
            moved += 10
            host.quiet_for(0.1)
        assert moved >= LIMIT
        host.quiet_for(0.2)
        text = bytes(host.transcript)
        assert text.endswith(b"\r\nCONNECT\r\nbefore\n\r\nNO CARRIER\r\n"), text[-120:]
        assert b'"closed"' not in text
        sent = _c2s_since(box, mark)
        assert all((CT_APP, 1) not in _kinds(d) for d in sent), [_kinds(d) for d in sent]
        assert len(calls) == len(RESENT_AT) + 1, calls
        assert state(host, 1) == 4
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"


# == TLS keeps no timer =============================================================================
@pytest.mark.needs_native
def test_tls_renegotiation_stall_still_has_no_timer(ec2x_strict, emulator, monkeypatch):
    """TLS over TCP (behaviour.md): a renegotiation the server starts and then stalls has no
    timer of its own.  300 modem seconds in jumps: no timer callback, the socket connected,
    no "closed"; AT+QSSLCLOSE=1,0 ends it and the id is free."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == b"\r\nOK\r\n"
    before = b"x" * 200
    asked, go = threading.Event(), threading.Event()
    with Server(_renegotiating_server("stall", before, asked, go), emulator):
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "recv",1\r\n')
        go.set()
        assert asked.wait(10)
        for _ in range(3):
            advance(1)
        advance(297)
        host.quiet_for(0.3)
        assert calls == []
        assert state(host, 1) == 2
        assert b'"closed"' not in bytes(host.transcript)
        assert read_all(host, 1, len(before)) == before
        assert host.at("AT+QSSLCLOSE=1,0") == b"\r\nOK\r\n"
        assert state(host, 1) is None


# == server data behind its HelloRequest ============================================================
@pytest.mark.needs_native
def test_server_lines_behind_its_hello_request_reach_the_host_during_the_stall(ec2x_strict, emulator, pki,
                                                                              monkeypatch):
    """The server writes three lines right behind its HelloRequest while the modem's
    renegotiation flights are lost (application data before the new ServerHello: RFC 5246
    7.4.1.1 / RFC 6347 allow it, Mbed TLS delivers up to its renego_max_records): each line
    reaches the host once, in order; the timer keeps its intervals (its expiries are not
    pushed back by the data) and the socket ends at the limit with one "closed"."""
    host, advance, port = ec2x_strict
    calls = _count_timer_calls(monkeypatch, port)
    path = Path(lose_c2s=None, deaf=True, keep_app=True)
    with _dtls_path(pki, path.rule) as (server, box):
        _open_dtls(host, emulator, box)
        mark = _before_then_hello_request(host, server, box, path)
        lines = b"".join(b"behind the request %d\n" % i for i in range(3))
        for i in range(3):
            server.write(b"behind the request %d\n" % i)
            box.wait_for(lambda: sum(_is_app_datagram(d.data) for d in box.log[mark:]
                                     if d.direction == "s2c") > i, 10)
        assert read_all(host, 1, len(lines)) == lines
        host.quiet_for(0.2)
        assert recv(host, 1) == b""
        assert calls == []
        moved = _advance_until(host, advance, b'+QSSLURC: "closed",1', 5, LIMIT + 20)
        assert moved >= LIMIT
        assert len(calls) == len(RESENT_AT) + 1, calls
        _ended_as_documented(host, 1)


def _is_app_datagram(data: bytes) -> bool:
    recs = dtls_records(data)
    return bool(recs) and all(r.type == CT_APP for r in recs)
