"""Adversarial review of 47c29c1 ("Buffer mode: fewer Python steps per AT+QSSLSEND"), which
claims "behaviour unchanged".  Each hunk is attacked through what a host or the control API
can see (and, for the pure functions, against the code as it was before the commit):

1. emulator/at/args.py parse_int's digits-only fast path (leading zeros, 12 / 13 digits,
   range ends, whitespace, unicode digits, signs) -- AT+QSSLSEND / AT+QSSLRECV lengths,
   AT+QSSLCFG numbers, ATS3, AT+QIGETERROR's 552 after a bad SSL parameter (SslArgs' svc);
2. emulator/at/mode.py Mode / Event identity hash (TRANSITIONS, pickle, copy, sets);
3. emulator/modem/timers.py monotonic bound to loop.time (real time) and manual time;
4. emulator/io/transport.py input_waiting / _host_gone on the port's own poll: the late LF
   after a data prompt (whole, apart, byte by byte) and a host closing right after a command;
5. emulator/io/network.py ShapedTransport fast path: conditions set and cleared while packets
   are queued (order), and the send backlog;
6. emulator/sockets/delivery.py PushDelivery.push early return: push data held while the port
   is busy, the "closed" URC behind them;
7. the interpreter: the control API's "slow" still delays, PENDING input limits, AT+IFC=2,2;
   tls_engine next_timeout without a renegotiation clock.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import re
import select
import time

import pytest

from emulator.at.args import Args
from emulator.at.interpreter import MAX_WAITING_INPUT
from emulator.at.mode import TRANSITIONS, Event, Mode, next_mode
from emulator.at.parser import Arg, Command
from emulator.at.responses import CommandError
from emulator.modem.timers import Timers
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
PROMPT = b"\r\n> "
SEND_OK = b"\r\nSEND OK\r\n"
NAME = "trims.example"


# =========================================================================================
# 1. parse_int: the fast path against the code before the commit
# =========================================================================================

def _old_parse_int(text: str, lo: int, hi: int) -> int | str:
    """Args.parse_int as it was at 47c29c1^ (its outcome: the value, or the failure text)."""
    text = text.strip(" ")          # (only 0x20 is a space: 1899ac2 made TAB no space)
    digits = text[1:] if text[:1] == "-" and lo < 0 else text
    if not digits or not digits.isascii() or not digits.isdigit():
        return f"parameter 1 {text!r} is not a number"
    if len(text) > 12:
        return "parameter 1 out of range"
    value = int(text)
    if not lo <= value <= hi:
        return f"parameter 1 {value} not in {lo}-{hi}"
    return value


TEXTS = ["0", "00", "1", "01", "0001460", "1460", "1461", "999999999999", "000000000001",
         "0000000000001", "1000000000000", "9999999999999", "", " ", " 1", "1 ", "\t7", "1\t",
         "+1", "-0", "-1", "-", "--1", "- 1", "1-", "1.0", "1e3", "0x1", "1_0", "²", "١", "１",
         "\u00a01", "12\u00a0", "123456789012", "-123456789012", "-12345678901", " 000000000001 "]
RANGES = [(0, 0), (0, 5), (1, 1460), (0, 2**31 - 1), (-5, 5), (-12, -1), (-(10**13), 10**13),
          (0, 10**12), (5, 5)]


def test_parse_int_fast_path_gives_what_the_old_code_gave():
    """Every text x range: the same value, or a failure where the old code failed (with the
    same reason in the log line)."""
    for text in TEXTS:
        for lo, hi in RANGES:
            old = _old_parse_int(text, lo, hi)
            args = Args(Command(name="+X", kind="write", args=(Arg(text, False),), raw="+X=" + text))
            try:
                new = args.parse_int(text, lo, hi)
            except CommandError as exc:
                assert not isinstance(old, int), (text, lo, hi, old, exc)
                assert exc.log.endswith(old), (text, lo, hi, old, str(exc))
            else:
                assert new == old and type(new) is int, (text, lo, hi, old, new)


@pytest.fixture
def echo_server(pki, emulator):
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.address[1])
        yield server


def _net(open_modem, **kw):
    host, port = open_modem("ec2x", **kw)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return host, port


def _open(host, cid=0, mode=0, name=NAME):
    assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{name}",443,{mode}') == OK
    assert host.read_until(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % cid), 15).endswith(
        b"+QSSLOPEN: %d,0\r\n" % cid)


def _recv_all(host, cid, n, timeout=10):
    """AT+QSSLRECV until n bytes came (the echo may come in parts)."""
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, got
        answer = host.at(f"AT+QSSLRECV={cid},1500")
        m = re.search(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)     # (after a "recv" URC perhaps)
        assert m, answer
        size = int(m.group(1))
        got += answer[m.end():m.end() + size]
        if not size:
            time.sleep(0.02)
    return got


def test_qsslsend_and_qsslrecv_lengths_through_the_pty(open_modem, echo_server):
    """Leading zeros, 12 digits and the range ends are taken; 13 digits, 1461, 0, a sign,
    a unicode digit refused -- each refusal sets AT+QIGETERROR 552 (SslArgs' service)."""
    host, _ = _net(open_modem)
    _open(host)
    host.write(b"AT+QSSLSEND=0,0005\r")
    assert host.read_until(PROMPT) == PROMPT
    host.write(b"hello")
    assert host.read_until(SEND_OK) == SEND_OK
    # the echo's "recv" URC first: written while the next command line is on its way, it
    # would come before that command's prompt (the buffer is unread, so "abc" raises none)
    urc = b'\r\n+QSSLURC: "recv",0\r\n'
    assert host.read_until(urc, 15).endswith(urc)
    host.write(b"AT+QSSLSEND=0,000000000003\r")        # 12 digits: fast path
    assert host.read_until(PROMPT) == PROMPT
    host.write(b"abc")
    assert host.read_until(SEND_OK) == SEND_OK
    for bad in ("0000000000003", "1461", "0", "+3", "-0", "\u0663".encode().decode("latin-1"), "3 3"):
        assert host.at(f"AT+QSSLSEND=0,{bad}") == ERROR, bad
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    # the whole echo, read with 12-digit and leading-zero lengths
    assert host.at("AT+QSSLRECV=0,0000000000008") == ERROR
    assert host.at("AT+QSSLRECV=0,1501") == ERROR
    got = b""
    deadline = time.monotonic() + 10
    while len(got) < 8 and time.monotonic() < deadline:
        answer = host.at("AT+QSSLRECV=0,000000000002")
        m = re.search(rb"\r\n\+QSSLRECV: (\d)\r\n", answer)    # (a second "recv" URC perhaps:
        assert m, answer                                           # the echo in two parts)
        assert int(m.group(1)) <= 2
        got += answer[m.end():m.end() + int(m.group(1))]
    assert got == b"helloabc"
    assert host.at("AT+QSSLCLOSE=0") == OK


def test_qsslcfg_and_s_register_numbers(open_modem):
    """AT+QSSLCFG numeric values and ATS3 as before: leading zeros taken, 13 digits,
    out-of-range, signs and spaces as the old parser had them."""
    host, _ = open_modem("ec2x")
    cases = [('AT+QSSLCFG="seclevel",1, 1', OK), ('AT+QSSLCFG="seclevel",1,\t0', ERROR),
             ('AT+QSSLCFG="seclevel",1,000000000002', OK),
             ('AT+QSSLCFG="seclevel",1,0000000000002', ERROR),
             ('AT+QSSLCFG="seclevel",1,3', ERROR),
             ('AT+QSSLCFG="seclevel",1,-0', ERROR),
             ('AT+QSSLCFG="seclevel",1,+1', ERROR),
             ('AT+QSSLCFG="negotiatetime",1,0300', OK),
             ('AT+QSSLCFG="negotiatetime",1,1001', ERROR),
             ('AT+QSSLCFG="negotiatetime",1,10', OK),
             ('AT+QSSLCFG="negotiatetime",1,9', ERROR),
             ('AT+QSSLCFG="seclevel",1,\xb2', ERROR),
             ("ATS3=0013", OK), ("ATS3=128", ERROR), ("ATS3=-1", ERROR), ("ATS3=0000000000013", ERROR)]
    for line, answer in cases:
        assert host.at(line) == answer, line
    assert host.at('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,2\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="negotiatetime",1') == b'\r\n+QSSLCFG: "negotiatetime",1,10\r\n\r\nOK\r\n'
    assert host.at("ATS3?") == b"\r\n013\r\n\r\nOK\r\n"


# =========================================================================================
# 2. Mode / Event: the identity hash
# =========================================================================================

def test_mode_and_event_members_hash_pickle_copy_as_before():
    """The members are the same four and seven; lookups by member (TRANSITIONS, sets, dicts)
    find them; pickle / copy / deepcopy / a value lookup give the very member back; a member
    is no key for its name or value (an Enum never equalled those)."""
    assert [m.name for m in Mode] == ["COMMAND", "DATA", "PENDING", "ONLINE"]
    assert [e.name for e in Event] == ["PROMPT", "AWAIT", "DONE", "HANGUP", "ONLINE", "ESCAPE", "RESET"]
    for member in [*Mode, *Event]:
        assert pickle.loads(pickle.dumps(member)) is member
        assert copy.copy(member) is member and copy.deepcopy(member) is member
        assert type(member)(member.value) is member and type(member)[member.name] is member
        assert hash(member) == hash(pickle.loads(pickle.dumps(member)))
        assert {member: 1}.get(member) == 1 and member in {member}
        assert {member: 1}.get(member.name) is None and {member: 1}.get(member.value) is None
    assert Mode.ONLINE != Event.ONLINE and len({Mode.ONLINE, Event.ONLINE}) == 2
    assert next_mode(Mode.COMMAND, Event.PROMPT) is Mode.DATA
    assert next_mode(Mode.COMMAND, Event.AWAIT) is Mode.PENDING
    assert all(isinstance(k, Mode) and all(isinstance(e, Event) and isinstance(v, Mode) for e, v in t.items())
               for k, t in TRANSITIONS.items())


# =========================================================================================
# 3. Timers: the loop's clock (real time) and manual time
# =========================================================================================

def test_real_time_monotonic_is_the_loops_clock_and_manual_time_stands_still(emulator, open_modem):
    host, port = open_modem("ec2x")
    diff = emulator.run(lambda: port.modem.timers.monotonic() - port.modem.timers.loop.time())
    assert -0.01 <= diff <= 0
    first = emulator.run(port.modem.monotonic)
    time.sleep(0.05)
    assert emulator.run(port.modem.monotonic) - first >= 0.05
    mhost, mport = open_modem("ec2x", manual_time=True)
    assert emulator.run(lambda: mport.modem.timers.manual)
    t0 = emulator.run(mport.modem.monotonic)
    time.sleep(0.05)
    assert emulator.run(mport.modem.monotonic) == t0
    emulator.advancer(mport, mhost)(2.5)
    assert emulator.run(mport.modem.monotonic) == t0 + 2.5
    assert Timers(None).monotonic() == 1000.0        # (no loop: manual)


# =========================================================================================
# 7a. The control API's "slow" still delays (the delay lookup skipped only without delays)
# =========================================================================================

def test_slow_delays_the_answer_on_manual_time_and_not_after_it_is_cleared(emulator, open_modem):
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert emulator.control("slow", command="+CSQ", ms=1000)["ok"]
    host.write(b"AT+CSQ\r")
    assert host.quiet_for(0.3) == b""
    state = emulator.control("state")
    assert state["mode"] == "PENDING" and json.loads(json.dumps(state))["mode"] == "PENDING"
    advance(0.9)
    assert host.quiet_for(0.1) == b""
    advance(0.1)
    assert host.read_until(OK) == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert emulator.control("state")["mode"] == "COMMAND"
    assert host.at("AT") == OK                               # (another command: no delay)
    assert emulator.control("slow", command="+CSQ", ms=0)["ok"]
    assert host.at("AT+CSQ", timeout=2) == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"


def test_slow_on_real_time_holds_the_answer_its_time(emulator, open_modem):
    host, _ = open_modem("ec2x")
    assert emulator.control("slow", command="+CSQ", ms=400)["ok"]
    start = time.monotonic()
    assert host.at("AT+CSQ;+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert time.monotonic() - start >= 0.8 - 0.02


# =========================================================================================
# 4. The pty: input_waiting on the port's own poll, _host_gone
# =========================================================================================

def _byte_writer(host: Host, data: bytes, gap: float = 0.002) -> None:
    for b in data:
        host.write(bytes([b]))
        host.ser.flush()
        if gap:
            time.sleep(gap)


def _crlf_host(host: Host) -> None:
    host.write(b"AT\r\n")
    assert host.read_until(OK) == OK


@pytest.mark.parametrize("style", ["whole", "lf_alone_prompt_unread", "bytes", "lf_with_the_data"])
def test_the_late_lf_of_a_send_line(open_modem, emulator, echo_server, style):
    """A CR LF host's "AT+QSSLSEND=0,5\r" then "\n" then "hello" (docs/behaviour.md's table):
    written whole, the LF alone while the prompt waits unread, every byte apart -- the LF is
    the line's, the peer gets exactly "hello"; the LF written together with the data after a
    line written whole with CR alone is data: the peer gets "\nhell".  On the modem's manual
    clock: the 250 ms "prompt still unread" window must not run out while this thread waits
    for a CPU (it did under CI's load: "\nhell" for the LF alone)."""
    host, port = _net(open_modem, manual_time=True)
    _crlf_host(host)
    _open(host)
    line = b"AT+QSSLSEND=0,5\r"
    expected = b"hello"
    if style == "whole":
        host.write(line + b"\nhello")
        assert host.read_until(PROMPT) == PROMPT
    elif style == "lf_alone_prompt_unread":
        host.write(line)
        wait_for(lambda: host.ser.in_waiting >= 4, 5, "the prompt", every=0.002)
        host.write(b"\n")
        host.ser.flush()
        emulator.wait_received(port, host.written)
        assert host.read_until(PROMPT) == PROMPT
        host.write(b"hello")
    elif style == "bytes":
        # (each byte read by the modem before the next is written, as a UART delivers them:
        # under a full run's load a 2 ms gap still let one read take the whole line, which
        # then looks like a whole-line host's -- the documented late-LF limit)
        for b in line + b"\n":
            _byte_writer(host, bytes([b]), gap=0)
            emulator.wait_received(port, host.written)
        assert host.read_until(PROMPT) == PROMPT
        _byte_writer(host, b"hello")
    else:
        host.write(line)
        assert host.read_until(PROMPT) == PROMPT
        host.write(b"\nhello")
        expected = b"\nhell"
    assert host.read_until(SEND_OK) == SEND_OK
    wait_for(lambda: bytes(echo_server.connections[0].received) == expected, 5,
             f"{expected!r} at the peer: {bytes(echo_server.connections[0].received)!r}")
    assert host.read_until(b'+QSSLURC: "recv",0\r\n') == b'\r\n+QSSLURC: "recv",0\r\n'
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 5\r\n" + expected + b"\r\n\r\nOK\r\n"
    assert host.quiet_for(0.1) == b""


def test_input_waiting_counts_bytes_just_written_to_an_empty_pty(emulator, open_modem):
    """PtyPort.input_waiting (asked before every prompt): its poll of the master must move
    bytes the host's write() has returned from into the read buffer before FIONREAD -- the
    port's own poll (registered for POLLHUP) has to do what a fresh POLLIN poll did.  Done on
    the loop's thread (nothing reads the pty meanwhile), 300 times over an empty pty."""
    host, port = open_modem("ec2x")
    fd = host.ser.fd

    def probe():
        p = port.port
        wrong = []
        for _ in range(300):
            os.write(fd, b"xy")
            got = p.input_waiting()
            if got != 2:
                wrong.append(got)
            taken = 0
            while taken < 2:                   # (the probe's bytes never reach the modem)
                try:
                    taken += len(os.read(p.master, 16))
                except BlockingIOError:
                    select.select([p.master], [], [], 0.01)
        return wrong
    assert emulator.run(probe) == []
    assert host.at("AT") == OK


def test_a_payload_starting_with_lf_after_a_cr_host(open_modem, echo_server):
    """A CR-only host's data starting with LF, read after the prompt: the LF is data."""
    host, _ = _net(open_modem)
    host.write(b"AT\r")
    assert host.read_until(OK) == OK
    _open(host)
    host.write(b"AT+QSSLSEND=0,5\r")
    assert host.read_until(PROMPT) == PROMPT
    time.sleep(0.1)                                       # (past the late-LF window)
    host.write(b"\nabcd")
    assert host.read_until(SEND_OK) == SEND_OK
    wait_for(lambda: bytes(echo_server.connections[0].received) == b"\nabcd", 5, "the data at the peer")


def _reopen(emulator, port) -> Host:
    """A new host, once the emulator saw the last one go (an open before that would be the
    same host to it: the pty never hung up)."""
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 5, "the hang-up seen")
    host = Host(port.path)
    emulator.run(port.port.look_for_host)
    return host


def test_a_host_closing_right_after_a_slow_command_leaves_its_answer_behind(emulator, open_modem):
    host, port = open_modem("ec2x")
    assert emulator.control("slow", command="+CSQ", ms=300)["ok"]
    host.write(b"AT+CSQ\r")
    host.ser.flush()
    emulator.wait_received(port, host.written)
    host.close()
    other = _reopen(emulator, port)
    try:
        assert other.quiet_for(0.6) == b""
        assert other.at("AT") == OK
    finally:
        other.close()


def test_a_host_closing_at_the_prompt_sends_nothing_and_the_next_host_commands(emulator, open_modem, echo_server):
    host, port = _net(open_modem)
    _open(host)
    host.write(b"AT+QSSLSEND=0,5\r")
    assert host.read_until(PROMPT) == PROMPT
    host.write(b"ab")
    host.ser.flush()
    emulator.wait_received(port, host.written)
    host.close()
    other = _reopen(emulator, port)
    try:
        other.write(b"AT+CSQ\r")
        answer = other.read_until(OK)
        assert answer.endswith(b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"), answer
        assert b"SEND" not in answer
        time.sleep(0.2)
        assert bytes(echo_server.connections[0].received) == b""
    finally:
        other.close()


def test_a_host_closing_with_a_command_written_unanswered_output_is_dropped(emulator, open_modem):
    """The answer of a line a host wrote and left without reading never reaches the next
    host (its hang-up is seen on the write: _host_gone)."""
    host, port = open_modem("ec2x")
    host.write(b"ATI\r")
    host.ser.flush()
    host.close()
    time.sleep(0.3)
    other = _reopen(emulator, port)
    try:
        assert other.quiet_for(0.3) == b""
        assert other.at("AT") == OK
    finally:
        other.close()


# =========================================================================================
# 5. ShapedTransport: conditions set and cleared at run time
# =========================================================================================

def _send(host, cid, data, result=SEND_OK):
    """(a "recv" URC of the echo may come before the prompt)"""
    host.write(f"AT+QSSLSEND={cid},{len(data)}\r".encode())
    assert host.read_until(PROMPT).endswith(PROMPT)
    host.write(data)
    assert host.read_until(re.compile(rb"\r\nSEND (OK|FAIL)\r\n")) == result


@pytest.mark.parametrize("scope", ["modem", "socket"])
def test_packets_queued_on_a_slow_link_keep_their_order_when_it_is_cleared(emulator, open_modem, echo_server, scope):
    """Latency set, two sends queued, the conditions cleared, a third send: nothing reaches
    the peer before the latency passed, then all three in order (the third never overtakes
    the queue: the fast path only when the queue is empty); then an unshaped send at once."""
    host, port = _net(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)
    _open(host)
    where = {"socket": 0} if scope == "socket" else {}
    assert emulator.control("net", latency_ms=200, **where)["ok"]
    _send(host, 0, b"AAAA")
    _send(host, 0, b"BBBB")
    assert emulator.control("net", **where)["ok"]                # cleared: not active
    _send(host, 0, b"CCCC")
    time.sleep(0.2)
    conn = echo_server.connections[0]
    assert bytes(conn.received) == b""
    advance(0.1)
    time.sleep(0.1)
    assert bytes(conn.received) == b""
    advance(0.1)
    wait_for(lambda: bytes(conn.received) == b"AAAABBBBCCCC", 5, f"in order: {bytes(conn.received)!r}")
    _send(host, 0, b"DDDD")                                       # queue empty: at once
    wait_for(lambda: bytes(conn.received) == b"AAAABBBBCCCCDDDD", 5, "DDDD without advancing")
    assert _recv_all(host, 0, 16) == b"AAAABBBBCCCCDDDD"


def test_a_close_while_packets_are_queued_sends_them_first(emulator, open_modem, echo_server):
    host, port = _net(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)
    _open(host)
    assert emulator.control("net", latency_ms=100)["ok"]
    _send(host, 0, b"last words")
    host.write(b"AT+QSSLCLOSE=0\r")
    assert emulator.control("net")["ok"]
    conn = echo_server.connections[0]
    time.sleep(0.1)
    assert bytes(conn.received) == b""
    for _ in range(20):
        advance(0.1)
        if OK in host.pending or host.quiet_for(0.01):
            break
    wait_for(lambda: conn.close_notify_received, 5, "close_notify at the peer")
    assert bytes(conn.received) == b"last words"


def test_a_large_send_on_a_slow_link_is_held_by_the_backlog_and_arrives_whole(emulator, open_modem, echo_server):
    """kbps 100: 1460-byte sends queue on the link (the write buffer's high/low water,
    _go's _resume_if_low) until the send buffer is full (SEND FAIL, nothing sent); as the
    link drains every accepted byte reaches the peer in order, and sends are taken again."""
    host, port = _net(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)
    _open(host)
    assert emulator.control("net", kbps=100)["ok"]
    chunks = [bytes([65 + i]) * 1460 for i in range(12)]
    results = []
    for chunk in chunks:
        host.write(b"AT+QSSLSEND=0,1460\r")
        assert host.read_until(PROMPT).endswith(PROMPT)
        host.write(chunk)
        results.append(host.read_until(re.compile(rb"\r\nSEND (OK|FAIL)\r\n")))
    taken = [c for c, r in zip(chunks, results) if r == SEND_OK]
    assert results == [SEND_OK] * 11 + [b"\r\nSEND FAIL\r\n"], results
    conn = echo_server.connections[0]
    for _ in range(40):
        advance(0.05)
    wait_for(lambda: len(conn.received) == 1460 * 11, 5, f"the payload: {len(conn.received)}")
    assert bytes(conn.received) == b"".join(taken)
    _send(host, 0, b"Z" * 1460)
    for _ in range(4):
        advance(0.05)
    wait_for(lambda: bytes(conn.received).endswith(b"Z" * 1460), 5, "the send after the drain")
    assert emulator.control("net")["ok"]


# =========================================================================================
# 6. PushDelivery.push: held while the port is busy, the "closed" URC behind the data
# =========================================================================================

@pytest.fixture
def answer_then_close(pki, emulator):
    """A server that waits for one byte, answers "pushed!" and closes (close_notify, FIN)."""
    def handler(conn) -> None:
        conn.recv(1, timeout=10)
        conn.sendall(b"pushed!")
        conn.send_close_notify()
    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map(NAME, 443, "127.0.0.1", server.address[1])
        yield server


def test_push_data_and_closed_held_behind_a_slow_answer(emulator, open_modem, answer_then_close):
    """Direct push: the data and the peer's close arrive while AT+CSQ's answer is pending
    (control slow): nothing is written then; once the answer is out, the data URC, then
    "closed"."""
    host, port = _net(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)
    _open(host, mode=1)
    assert emulator.control("slow", command="+CSQ", ms=2000)["ok"]
    assert emulator.control("net", latency_ms=100)["ok"]
    _send(host, 0, b"x")
    host.write(b"AT+CSQ\r")
    advance(0.1)                                   # "x" reaches the server, which answers
    conn = answer_then_close.connections[0]
    wait_for(lambda: conn.done.is_set(), 5, "the server's answer and close")
    time.sleep(0.1)                                # (its bytes reach the emulator)
    advance(0.2)                                   # ... and cross the link: the port is busy
    assert host.quiet_for(0.2) == b""
    advance(1.8)
    out = host.read_until(b'"closed",0\r\n', 5)
    assert out == (b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
                   b'\r\n+QSSLURC: "recv",0,7\r\npushed!\r\n'
                   b'\r\n+QSSLURC: "closed",0\r\n'), out
    assert host.at("AT+QSSLCLOSE=0") == OK


def test_push_data_held_behind_a_slow_answer_go_out_after_it(emulator, open_modem, echo_server):
    """Direct push, no close: the echo arrives while AT+CSQ's answer is pending; once the
    answer is out (port_idle) the data go out -- and the next echo at once."""
    host, port = _net(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)
    _open(host, mode=1)
    assert emulator.control("slow", command="+CSQ", ms=2000)["ok"]
    assert emulator.control("net", latency_ms=100)["ok"]
    _send(host, 0, b"hello")
    host.write(b"AT+CSQ\r")
    advance(0.1)
    conn = echo_server.connections[0]
    wait_for(lambda: bytes(conn.received) == b"hello", 5, "hello at the peer")
    time.sleep(0.1)
    advance(0.2)
    assert host.quiet_for(0.2) == b""
    advance(1.8)
    out = host.read_until(b"hello\r\n", 5)
    assert out == b'\r\n+CSQ: 24,99\r\n\r\nOK\r\n\r\n+QSSLURC: "recv",0,5\r\nhello\r\n', out
    assert emulator.control("net")["ok"]
    _send(host, 0, b"again")
    assert host.read_until(b"again\r\n", 5) == b'\r\n+QSSLURC: "recv",0,5\r\nagain\r\n'
    assert host.at("AT+QSSLCLOSE=0") == OK


def test_push_data_arriving_during_another_sockets_data_prompt_follow_its_send_ok(
        emulator, open_modem, pki, echo_server):
    """Socket 1 (direct push) gets its server's answer and close while the host is in
    socket 0's data prompt (not idle): they follow socket 0's SEND OK, data first."""
    def handler(conn) -> None:
        conn.recv(1, timeout=10)
        conn.sendall(b"pushed!")
        conn.send_close_notify()
    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map("push.example", 443, "127.0.0.1", server.address[1])
        host, port = _net(open_modem, manual_time=True)
        advance = emulator.advancer(port, host)
        _open(host, 0)
        _open(host, 1, mode=1, name="push.example")
        assert emulator.control("net", latency_ms=100)["ok"]
        _send(host, 1, b"x")
        host.write(b"AT+QSSLSEND=0,3\r")
        assert host.read_until(PROMPT) == PROMPT
        advance(0.1)
        conn = server.connections[0]
        wait_for(lambda: conn.done.is_set(), 5, "the server's answer and close")
        time.sleep(0.1)
        advance(0.2)
        assert host.quiet_for(0.2) == b""
        host.write(b"abc")
        out = host.read_until(b'"closed",1\r\n', 5)
        assert out == (b"\r\nSEND OK\r\n"
                       b'\r\n+QSSLURC: "recv",1,7\r\npushed!\r\n'
                       b'\r\n+QSSLURC: "closed",1\r\n'), out
        assert emulator.control("net")["ok"]
        assert host.at("AT+QSSLCLOSE=1") == OK


# =========================================================================================
# 7b. feed(): input behind a pending answer (the restructured PENDING branch)
# =========================================================================================

def _behind_a_slow_csq(emulator, open_modem):
    """A modem on manual time whose AT+CSQ answer is pending (1 s): (host, port, advance)."""
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert emulator.control("slow", command="+CSQ", ms=1000)["ok"]
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    return host, port, advance


def _answer_comes_with_one_warning(host, advance, caplog, dropped: int) -> None:
    advance(1.0)
    assert host.read_until(OK) == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert host.quiet_for(0.3) == b""
    assert host.at("AT") == OK
    assert [r.getMessage() for r in caplog.records if "port busy" in r.getMessage()] == [
        f"port busy: {dropped} input bytes dropped (more than {MAX_WAITING_INPUT} waiting)"]


def test_input_behind_a_pending_answer_is_capped_without_ifc(emulator, open_modem, caplog):
    """More than MAX_WAITING_INPUT bytes behind a slow answer: the excess is dropped (one
    warning with the count); the answer comes, the port then answers again."""
    host, port, advance = _behind_a_slow_csq(emulator, open_modem)
    host.write(b"A" * (MAX_WAITING_INPUT + 1000) + b"\r")
    host.ser.flush()
    emulator.wait_received(port, host.written)
    it = port.modem.interpreter
    assert emulator.run(lambda: (len(it._inbox), it.mode)) == (MAX_WAITING_INPUT, Mode.PENDING)
    _answer_comes_with_one_warning(host, advance, caplog, 1001)


def test_input_dropped_behind_a_pending_answer_is_one_warning_however_it_was_read(
        emulator, open_modem, caplog):
    """The excess comes in three writes the emulator reads apart (as a pty splits one big
    write at its own will): one warning with the total when the answer comes, not one per
    read (CI once read the 1 MiB + 1000 of the test above as 512 + 489)."""
    host, port, advance = _behind_a_slow_csq(emulator, open_modem)
    for piece in (b"B" * (MAX_WAITING_INPUT + 300), b"C" * 200, b"D" * 99 + b"\r"):
        host.write(piece)
        host.ser.flush()
        emulator.wait_received(port, host.written)
    assert not [r for r in caplog.records if "port busy" in r.getMessage()]   # (not yet)
    _answer_comes_with_one_warning(host, advance, caplog, 600)


def test_input_behind_a_pending_answer_is_held_back_with_ifc_2_2(emulator, open_modem, caplog):
    """AT+IFC=2,2: past HIGH_WATER behind a slow answer the port stops reading (the pty holds
    the host back); after the answer every byte is taken, none dropped."""
    import threading
    from emulator.io.transport import HIGH_WATER
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at("AT+IFC=2,2") == OK
    assert emulator.control("slow", command="+CSQ", ms=1000)["ok"]
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    it = port.modem.interpreter
    fed, before = emulator.run(lambda: (it._fed, port.port.received))
    blob = b"A" * (HIGH_WATER + 20000) + b"\r"
    writer = threading.Thread(target=lambda: (host.ser.write(blob), host.ser.flush()), daemon=True)
    writer.start()
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("pending")), 5, "input held")
    time.sleep(0.2)
    inbox, received = emulator.run(lambda: (len(it._inbox), port.port.received))
    assert HIGH_WATER < inbox < len(blob) and received - before < len(blob)    # (the rest: in the pty)
    emulator.advance(port, 1.0)
    assert host.read_until(OK) == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    writer.join(5)
    assert not writer.is_alive()
    wait_for(lambda: emulator.run(lambda: it._fed - fed) == len(blob), 5, "every byte taken")
    assert not emulator.run(lambda: port.modem.input_held("pending"))
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == OK
    assert not [r for r in caplog.records if "port busy" in r.getMessage()]


# =========================================================================================
# 7c. next_timeout of an established TLS session: no renegotiation clock, no timer
# =========================================================================================

def test_an_established_tls_session_has_no_timeout_and_sends_on(emulator, open_modem, echo_server):
    from emulator.commands.ssl_common import service
    host, port = _net(open_modem)
    _open(host)
    sock = emulator.run(lambda: service(port.modem).sockets[0])
    assert emulator.run(lambda: (sock.session.state, sock.session._clock_ssl, sock.session.next_timeout())) == (
        "established", None, None)
    for i in range(5):
        _send(host, 0, b"%d" % i)
    assert _recv_all(host, 0, 5) == b"01234"


# =========================================================================================
# 4b. --uart (no hang-up line): _host_gone's other users
# =========================================================================================

def test_uart_a_program_that_writes_and_closes_at_once_still_reaches_the_modem(emulator, open_modem):
    """`echo 'AT...' > /dev/ttyS0`: opened, written, closed between two looks for a host --
    the line still runs; the answer is lost with nobody there; the next program sees the
    setting."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 5, "the close seen")
    writer = Host(port.path)
    writer.write(b'AT+QSSLCFG="seclevel",1,2\r')
    writer.ser.flush()
    writer.close()
    time.sleep(0.3)
    other = _reopen(emulator, port)
    try:
        assert other.quiet_for(0.2) == b""
        assert other.at('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,2\r\n\r\nOK\r\n'
    finally:
        other.close()


def test_uart_sixfab_closes_at_the_prompt_and_writes_the_data_after_reopening(emulator, open_modem, echo_server):
    host, port = open_modem("ec2x", hangup_on_close=False)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    _open(host)
    host.write(b"AT+QSSLSEND=0,5\r")
    assert host.read_until(PROMPT) == PROMPT
    host.close()
    other = _reopen(emulator, port)
    try:
        other.write(b"hello")
        assert other.read_until(SEND_OK) == SEND_OK
        wait_for(lambda: bytes(echo_server.connections[0].received) == b"hello", 5, "hello at the peer")
        assert other.read_until(b'+QSSLURC: "recv",0\r\n') == b'\r\n+QSSLURC: "recv",0\r\n'
        assert other.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
    finally:
        other.close()
