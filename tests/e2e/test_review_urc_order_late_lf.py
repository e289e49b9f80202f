"""Review of two changes, attacked the way an independent tester would:

1. 0ccfc7a -- an answer's trailing lines (Response.after: AT+CGEREP=2,1 flushing its buffered
   +CGEV codes after the OK; the ML302's "+QSSLOPEN: <ssid>,<err>" refusal and "<ssid>,CLOSE OK")
   merged with the URCs queued while the port was busy, by order: a trailing line behind the
   URCs raised before its command started, ahead of those raised after.  Attacked with long
   chained lines (several CGEREP flushes and URCs in one line), a "slow" (control API) command
   in the middle of a chain with a network event during its delay, ML302 lingering closes
   with another socket's news arriving meanwhile, a refused open's trailing line next to a
   close that drops the ssid's queued URCs (drop_urcs), A/ repeating such a line, ATV0
   framing, a data prompt (AT+QFUPL) in the line, a hang-up and a --uart close while the line
   is pending, and a restart (AT+CFUN=1,1) at the end of the line.
   Invariant: bytes in the order the events happened, the final result before the trailing
   lines, nothing lost or duplicated.

2. 9bc4827 -- the late-LF rule after a data prompt / CONNECT for a host seen ending its lines
   with CR alone (within the 50 ms window while the prompt is unread: the line's; past it, or
   once read: data), and Interpreter.host_changed() (--uart) forgetting the pending rule.
   Attacked sans-IO (exact modem time, exact "has the host read the prompt"), at the window's
   edge, with LF alone and LF joined to data, after ATS3 changes, at every prompt kind through
   the pty on manual time (AT+QFUPL CONNECT, AT+QISEND, AT+QIOPEN transparent CONNECT, ML302
   AT+QSECWRITE and AT+QSSLSEND), and across a --uart close/reopen -- including a prompt that
   only opens after the program that wrote its line has gone.

Expected bytes come from docs/behaviour.md ("Command line and result codes", AT+CGEREP, the ML302
SSL section, AT+CFUN=1,1).  The bugs found are fixed (the tests say what they were).
"""
from __future__ import annotations

import re
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, default_pki
from tests.e2e.ml302_support import HOST, routed_servers
from tests.e2e.socket_support import wait_for
from tests.e2e.test_hardening_at import host_reading, sans_io_modem

OK = b"\r\nOK\r\n"
PROMPT = b"\r\n> "
CONNECT = b"\r\nCONNECT\r\n"
SEND_OK = b"\r\nSEND OK\r\n"
SINK_NAME, SINK_PORT = "review.example", 7100


def urcs(*lines: str) -> bytes:
    return b"".join(b"\r\n" + line.encode() + b"\r\n" for line in lines)


def act(cid: int, who: str = "ME") -> str:
    return f"+CGEV: {who} PDN ACT {cid}"


def deact(cid: int, who: str = "ME") -> str:
    return f"+CGEV: {who} PDN DEACT {cid}"


# No log record may carry a traceback or be an error (conftest's strict_log, every test).
pytestmark = pytest.mark.usefixtures("strict_log")


def sans_io(profile: str = "ec2x"):
    """A sans-IO modem (ATE0, CR-only host so far) and line(bytes) -> the output it caused."""
    modem, out, clock = sans_io_modem(profile)

    def line(data: bytes) -> bytes:
        out.clear()
        modem.feed(data)
        return bytes(out)
    return modem, line, clock


# =========================================================================================
# 1. Trailing lines among queued URCs
# =========================================================================================
APN = b'AT+QICSGP=1,1,"UNINET","","",1;+QICSGP=2,1,"B","","",1\r'


@pytest.mark.parametrize("chain, expected", [
    # the fixed bug, and the same twice in one line: ACT, DEACT, ACT, DEACT in event order
    ("+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1", [act(1), deact(1)]),
    ("+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1;+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=1,1",
     [act(1), deact(1), act(1), deact(1)]),
    # a flush, then live URCs of later commands, then another flush
    ("+CGEREP=0;+QIACT=1;+CGEREP=2,1;+QIACT=2;+CGEREP=0;+QIDEACT=2;+QIDEACT=1;+CGEREP=2,1",
     [act(1), act(2), deact(2), deact(1)]),
    # a flush with <bfr> 0 drops the buffered codes: nothing of them, the live ones in order
    ("+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,0;+QIACT=2", [act(1), act(2)]),
    # a flush behind a flush: two trailing groups in their commands' order
    ("+CGEREP=0;+QIACT=1;+CGEREP=2,1;+CGEREP=0;+QIACT=2;+CGEREP=2,1", [act(1), act(2)]),
])
def test_chained_flushes_and_live_urcs_come_in_event_order(chain, expected):
    modem, line, _ = sans_io()
    assert line(APN) == OK
    assert line(b"AT+CGEREP=2\r") == OK
    assert line(f"AT{chain}\r".encode()) == OK + urcs(*expected)
    assert line(b"AT\r") == OK                          # nothing left over, nothing repeated


def test_a_slash_repeats_a_line_with_trailing_lines_without_old_ones():
    """A/ runs the line again: its own trailing lines and URCs in order, none of the last
    run's a second time."""
    modem, line, _ = sans_io()
    assert line(APN) == OK
    assert line(b"AT+CGEREP=2;+QIACT=1\r") == OK + urcs(act(1))
    body = b"AT+CGEREP=0;+QIDEACT=1;+QIACT=1;+CGEREP=2,1;+QIACT=2;+QIDEACT=2\r"
    assert line(body) == OK + urcs(deact(1), act(1), act(2), deact(2))
    assert line(b"A/") == OK + urcs(deact(1), act(1), act(2), deact(2))
    assert line(b"A/") == OK + urcs(deact(1), act(1), act(2), deact(2))


def test_atv0_frames_the_final_and_every_trailing_line_and_urc_as_v0():
    modem, line, _ = sans_io()
    assert line(APN) == OK
    assert line(b"ATV0;+CGEREP=2\r") == b"0\r"
    got = line(b"AT+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1;+QIACT=2\r")
    assert got == b"0\r" + b"".join(f"{t}\r\n".encode() for t in (act(1), deact(1), act(2)))
    # V0 switched on in the middle of the line: the final and what follows it are V0
    assert line(b"ATV1\r") == OK
    got = line(b"AT+CGEREP=0;+QIDEACT=2;V0;+CGEREP=2,1\r")
    assert got == b"0\r" + f"{deact(2)}\r\n".encode()


# Was a bug, fixed: Interpreter._rebooted cleared the queued URCs but not the trailing lines
# of the line the restart ended, so AT+CGEREP=2;+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1;
# +CFUN=1,1 gave OK then '+CGEV: ME PDN DEACT 1' without the older ACT 1, framed with the
# restarted module's settings.
def test_a_restart_at_the_end_of_the_line_keeps_no_trailing_line_the_older_urcs_lost():
    modem, line, _ = sans_io()
    assert line(APN) == OK
    got = line(b"AT+CGEREP=2;+QIACT=1;+CGEREP=0;+QIDEACT=1;+CGEREP=2,1;+CFUN=1,1\r")
    # either both (in order) or neither, never the DEACT without its ACT
    assert got in (OK, OK + urcs(act(1), deact(1))), got
    assert line(b"ATE0\r") == b"ATE0\r" + OK
    assert line(APN) == OK
    assert line(b"ATV0\r") == b"0\r"
    got = line(b"AT+CGEREP=0;+QIACT=1;+CGEREP=2,1;+CFUN=1,1\r")
    assert got in (b"0\r", b"0\r" + f"{act(1)}\r\n".encode()), got


# -- over the pty, manual time --------------------------------------------------------------
@pytest.fixture
def ec2x_two(open_modem, emulator):
    """(host, advance, port): an EC2x on manual time, AT+CGEREP=2, contexts 1 and 2 up (their
    ACT codes read)."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+CGEREP=2;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;'
                   '+QICSGP=2,1,"B","","",1;+QIACT=2') == OK
    assert host.read_until(b"ACT 2\r\n") == urcs(act(1), act(2))

    advance = emulator.advancer(port, host)
    return host, advance, port


def pending(emulator, port) -> None:
    wait_for(lambda: emulator.run(lambda: port.modem.interpreter.mode.name) == "PENDING",
             what="the line pending")


def test_slow_command_in_a_chain_with_a_network_event_during_its_delay(ec2x_two, emulator):
    """AT+QIDEACT=1 slow (its answer 300 ms late, its work at once) between a CGEREP=0 and a
    CGEREP=2,1; the network takes context 2 down during the delay (its +CGEV buffered by mode 0,
    its +QIURC queued behind the busy port).  The host gets the OK, the +QIURC (written when it
    came, held by the busy port) and then the buffered codes in the order they were raised."""
    host, advance, port = ec2x_two
    assert emulator.control("slow", command="+QIDEACT", ms=300)["ok"]
    host.write("AT+CGEREP=0;+QIDEACT=1;+CGEREP=2,1\r")
    emulator.wait_received(port, host.written)
    pending(emulator, port)
    assert emulator.control("pdp_deact", cid=2)["ok"]
    assert host.quiet_for(0.1) == b""
    advance(0.3)
    want = OK + urcs('+QIURC: "pdpdeact",2', deact(1), deact(2, "NW"))
    assert host.read_exactly(len(want)) == want
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+CGEREP?") == urcs("+CGEREP: 2,1") + OK


def test_data_prompt_in_the_line_trailing_lines_wait_and_keep_their_place(ec2x_two, emulator):
    """A flush earlier in the line and an AT+QFUPL prompt ending it: nothing before CONNECT
    (the prompt is the answer in progress), then after the upload's OK the buffered DEACT 1
    first, then what the network did during the upload (NW DEACT 2, then its +QIURC)."""
    host, advance, port = ec2x_two
    host.write('AT+CGEREP=0;+QIDEACT=1;+CGEREP=2,1;+QFUPL="RAM:t.txt",3\r')
    assert host.read_until(CONNECT) == CONNECT
    assert emulator.control("pdp_deact", cid=2)["ok"]
    assert host.quiet_for(0.1) == b""
    host.write(b"abc")
    got = host.read_until(b'"pdpdeact",2\r\n')
    m = re.fullmatch(rb"\r\n\+QFUPL: 3,[0-9a-f]+\r\n\r\nOK\r\n(.*)", got, re.S)
    assert m, got
    assert m.group(1) == urcs(deact(1), deact(2, "NW"), '+QIURC: "pdpdeact",2')
    assert host.quiet_for(0.1) == b""


def test_hang_up_while_the_line_is_pending_drops_its_trailing_lines_and_urcs(open_modem, emulator):
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+CGEREP=0;+QICSGP=1,1,"UNINET","","",1') == OK
    assert emulator.control("slow", command="+QIDEACT", ms=300)["ok"]
    host.write("AT+QIACT=1;+CGEREP=2,1;+QIDEACT=1\r")       # ACT 1 trailing, DEACT 1 queued
    emulator.wait_received(port, host.written)
    pending(emulator, port)
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the close seen")
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        emulator.advance(port, 0.3)
        again.write("AT\r")
        assert again.read_until(OK) == OK
        assert again.quiet_for(0.2) == b""
    finally:
        again.close()


def test_uart_close_while_pending_the_next_program_gets_the_whole_answer_in_order(open_modem, emulator):
    """--uart: the modem carries on; the next program reads the line's OK, the trailing ACT 1
    and the DEACT 1 raised after it, once each."""
    host, port = open_modem("ec2x", manual_time=True, hangup_on_close=False)
    assert host.at('AT+CGEREP=0;+QICSGP=1,1,"UNINET","","",1') == OK
    assert emulator.control("slow", command="+QIDEACT", ms=300)["ok"]
    host.write("AT+QIACT=1;+CGEREP=2,1;+QIDEACT=1\r")
    emulator.wait_received(port, host.written)
    pending(emulator, port)
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the close seen")
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        emulator.advance(port, 0.3)
        want = OK + urcs(act(1), deact(1))
        assert again.read_exactly(len(want)) == want
        assert again.quiet_for(0.2) == b""
    finally:
        again.close()


def test_paced_answer_in_the_line_trailing_lines_follow_its_ok_ahead_of_later_news(ec2x_two, emulator):
    """A flush, then AT+QFDWL of a file larger than the 64 KiB high water (a paced answer: the
    port pending while the host has not read it); the network takes context 1 down meanwhile.
    The file whole, +QFDWL, OK, the buffered DEACT 2, then NW DEACT 1 and its +QIURC -- each
    once."""
    host, advance, port = ec2x_two
    data = bytes(range(256)) * 1600                     # 409600 bytes: more than the pty holds
    host.write(f'AT+QFUPL="RAM:big",{len(data)}\r'.encode())
    assert host.read_until(CONNECT) == CONNECT
    host.write(data)
    assert host.read_until(OK).startswith(b"\r\n+QFUPL: 409600,")
    host.write('AT+CGEREP=0;+QIDEACT=2;+CGEREP=2,1;+QFDWL="RAM:big"\r')
    emulator.wait_received(port, host.written)
    pending(emulator, port)
    assert emulator.control("pdp_deact", cid=1)["ok"]
    got = host.read_until(b'"pdpdeact",1\r\n', timeout=20)
    m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: 409600,[0-9a-f]+\r\n\r\nOK\r\n(.*)", got, re.S)
    assert m, got[-300:]
    assert m.group(1) == data
    assert m.group(2) == urcs(deact(2), deact(1, "NW"), '+QIURC: "pdpdeact",1')
    assert host.quiet_for(0.1) == b""


# -- ML302: CLOSE OK, the refused open's line, drop_urcs ------------------------------------------
@pytest.fixture
def ml(ml302_strict):
    return ml302_strict


@pytest.fixture
def tls(emulator):
    """tls(name, **kw) -> TlsServer routed as name:443."""
    yield from routed_servers(emulator, default_pki().server, mode="echo", ciphers="DEFAULT:@SECLEVEL=0")


def deaf(tls, hold: threading.Event, name: str):
    """A server that never answers the modem's close_notify nor closes (a 10 s linger)."""
    def handler(conn) -> None:
        while conn.recv():
            pass
        hold.wait(30)
    return tls(name, handler=handler)


def ml_open(host, ssid: int, name: str) -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{name}",443,0') == OK
    urc = f"\r\n+QSSLOPEN: {ssid},0\r\n".encode()
    assert host.read_until(urc, timeout=15) == urc


def ml_unread(emulator, ssid: int) -> int:
    return next(s for s in emulator.control("state")["sockets"] if s["id"] == ssid)["unread"]


def test_ml302_lingering_close_then_a_flush_around_another_sockets_news(ml, tls, emulator):
    """AT+QSSLCLOSE=0 lingers (deaf server); socket 1's peer sends meanwhile; the same line then
    flushes a +CGEV buffered before.  OK, "0,CLOSE OK" (the close's answer), socket 1's "recv"
    (raised during the linger), then the buffered ACT 2 (written by the flush after it)."""
    host, advance, port = ml
    hold = threading.Event()
    try:
        deaf(tls, hold, "deaf.test")
        echo = tls(HOST)
        assert host.at('AT+CGEREP=0;+CGDCONT=2,"IP","CMNET2"').endswith(OK)
        assert host.at("AT+CGACT=1,2").endswith(OK)
        ml_open(host, 1, HOST)
        conn = echo.wait_handshake()
        ml_open(host, 0, "deaf.test")
        host.write("AT+QSSLCLOSE=0;+CGEREP=2,1\r")
        pending(emulator, port)
        conn.send(b"news")
        wait_for(lambda: ml_unread(emulator, 1) == 4, what="socket 1's news")
        assert host.quiet_for(0.1) == b""
        advance(10)
        # (mode 0 since the start: the fixture's AT+CGACT=1,1 is in the buffer too)
        want = OK + urcs("0,CLOSE OK", '+QSSLURC: "recv",1,1', act(1), act(2))
        assert host.read_exactly(len(want)) == want
        assert host.quiet_for(0.2) == b""
    finally:
        hold.set()


def test_ml302_refused_open_line_survives_the_close_that_drops_the_ssids_queued_news(ml, tls, emulator):
    """AT+QSSLCLOSE=1 (lingering);+QSSLOPEN=0,... (ssid 0 in use: OK then "+QSSLOPEN: 0,-2");
    +QSSLCLOSE=0.  Socket 0's peer sends during the linger: its "recv" URC waits for the busy
    port and is dropped by the close of 0 (behaviour.md: nothing about a closed socket reaches
    the host) -- but the refusal's trailing line is the open's one answer and stays, between the
    two CLOSE OKs, each once."""
    host, advance, port = ml
    hold = threading.Event()
    try:
        deaf(tls, hold, "deaf.test")
        echo = tls(HOST)
        ml_open(host, 0, HOST)
        conn = echo.wait_handshake()
        ml_open(host, 1, "deaf.test")
        host.write(f'AT+QSSLCLOSE=1;+QSSLOPEN=0,0,"{HOST}",443,0;+QSSLCLOSE=0\r')
        pending(emulator, port)
        conn.send(b"late")
        wait_for(lambda: ml_unread(emulator, 0) == 4, what="socket 0's data")
        advance(10)
        want = OK + urcs("1,CLOSE OK", "+QSSLOPEN: 0,-2", "0,CLOSE OK")
        assert host.read_exactly(len(want), timeout=10) == want
        assert host.quiet_for(0.3) == b""
        assert host.at("AT") == OK
    finally:
        hold.set()


# =========================================================================================
# 2. The late LF after a prompt
# =========================================================================================
def cr_only_at_prompt(profile: str, prompt_line: bytes):
    """A sans-IO modem whose host has ended its lines with CR alone (ATE0<CR> AT<CR>) and is
    at the prompt `prompt_line` opens; returns (modem, out, clock, read)."""
    modem, out, clock = sans_io_modem(profile, prime=False)
    read = host_reading(modem, out)
    modem.feed(b"ATE0\r")
    modem.feed(b"AT\r")
    read()
    modem.feed(prompt_line)
    return modem, out, clock, read


def stored(modem, out, kind: str) -> bytes:
    if kind == "qfupl":
        return modem.files.read("RAM:x")
    m = re.search(rb"\+QSECWRITE: (\d+),", bytes(out))
    assert m, bytes(out)
    return m.group(1)


PROMPTS = {
    # kind: (profile, line, payload, what is stored with the LF dropped / kept)
    "qfupl": ("ec2x", b'AT+QFUPL="RAM:x",2\r', b"ab", b"ab", b"\na"),
    "qsecwrite": ("ml302", b"AT+QSECWRITE=0\r", b"ab\x1a", b"2", b"3"),
}


@pytest.mark.parametrize("kind", sorted(PROMPTS))
@pytest.mark.parametrize("delay, lines", [(0, True), (0.01, True), (0.05, True), (0.0501, False),
                                         (0.06, False), (0.2, False), (5.0, False)])
def test_cr_only_host_that_never_reads_its_lf_alone_is_the_lines_only_within_the_window(kind, delay, lines):
    """behaviour.md: an LF that comes within the window (50 ms) while the host has not read the
    prompt is the line's; a CR-only host that never reads prompts, a delay() and then a payload
    starting with LF, keeps an LF that comes after the window."""
    profile, prompt_line, payload, dropped, kept = PROMPTS[kind]
    modem, out, clock, _ = cr_only_at_prompt(profile, prompt_line)
    assert out.endswith(CONNECT if kind == "qfupl" else PROMPT)
    clock[0] += delay
    modem.feed(b"\n")
    modem.feed(payload)
    assert stored(modem, out, kind) == (dropped if lines else kept)


@pytest.mark.parametrize("kind", sorted(PROMPTS))
@pytest.mark.parametrize("delay", [0, 0.001, 0.03])
def test_cr_only_host_that_read_the_prompt_keeps_its_lf_however_soon(kind, delay):
    profile, prompt_line, payload, dropped, kept = PROMPTS[kind]
    modem, out, clock, read = cr_only_at_prompt(profile, prompt_line)
    read()
    clock[0] += delay
    modem.feed(b"\n")
    modem.feed(payload)
    assert stored(modem, out, kind) == kept


@pytest.mark.parametrize("kind", sorted(PROMPTS))
def test_cr_only_whole_line_host_lf_joined_to_its_data_is_data_even_unread(kind):
    """After a line that came whole, an LF written together with more bytes is data."""
    profile, prompt_line, payload, dropped, kept = PROMPTS[kind]
    modem, out, clock, _ = cr_only_at_prompt(profile, prompt_line)
    modem.feed(b"\n" + payload)
    assert stored(modem, out, kind) == kept


def test_the_rule_is_taken_once_a_second_lf_is_data():
    """Only the first byte after the prompt can be the line's: LF LF within the window, unread,
    gives one LF of data."""
    modem, out, clock, _ = cr_only_at_prompt("ec2x", b'AT+QFUPL="RAM:x",2\r')
    modem.feed(b"\n")
    modem.feed(b"\n")
    modem.feed(b"a")
    assert modem.files.read("RAM:x") == b"\na"


def test_the_window_is_counted_from_the_lines_cr_not_from_an_earlier_line():
    """Two prompts in a row, the second after 1 s: its window starts at its own line."""
    modem, out, clock, _ = cr_only_at_prompt("ec2x", b'AT+QFUPL="RAM:x",2\r')
    clock[0] += 1.0
    modem.feed(b"\nz")                                  # after the window: data
    assert modem.files.read("RAM:x") == b"\nz"
    clock[0] += 1.0
    modem.feed(b'AT+QFUPL="RAM:y",2\r')
    clock[0] += 0.02
    modem.feed(b"\n")                                   # within the new window, unread: its line's
    modem.feed(b"yz")
    assert modem.files.read("RAM:y") == b"yz"


def test_ats3_other_than_cr_makes_every_lf_after_the_prompt_data():
    """With S3 = '#' no LF ends a line: one after the prompt is data however soon."""
    modem, out, clock = sans_io_modem(prime=False)
    read = host_reading(modem, out)
    modem.feed(b"ATE0\r")
    modem.feed(b"ATS3=35\r")
    modem.feed(b'AT+QFUPL="RAM:x",2#')
    assert out.endswith(b"#\nCONNECT#\n")
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:x") == b"\na"
    # back to CR: the host is still one that ends its lines with CR alone
    modem.feed(b"ATS3=13#")
    modem.feed(b"AT\r")
    read()
    modem.feed(b'AT+QFUPL="RAM:y",2\r')
    read()
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:y") == b"\na"


@pytest.mark.parametrize("learn", [b"ATE0\rAT\r", b"ATE0\r\nAT\r\n"])
def test_uart_host_change_at_an_unread_prompt_makes_the_next_programs_lf_data(learn):
    """behaviour.md: with --uart the next program's first byte LF at the prompt the closed
    program left is data -- from a CR-only host as from a CR LF one, however soon it comes."""
    modem, out, clock = sans_io_modem(prime=False)
    host_reading(modem, out)                            # the prompt is never read
    for piece in re.findall(rb"[^\r\n]+\r\n?", learn):
        modem.feed(piece)
    modem.feed(b'AT+QFUPL="RAM:x",2\r')
    assert out.endswith(CONNECT)
    modem.host_closed_without_hangup()
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:x") == b"\na"


# -- through the pty, manual time, every prompt kind ----------------------------------------
def wait_unread(host, n: int) -> None:
    wait_for(lambda: host.ser.in_waiting >= n, what=f"{n} unread bytes")


def _qfupl_stored(host, n: int) -> bytes:
    host.write(f'AT+QFDWL="RAM:f{n}"\r')
    got = host.read_until(OK)
    m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: \d+,[0-9a-f]+\r\n\r\nOK\r\n", got, re.S)
    assert m, got
    return m.group(1)


def run_three(host, port, emulator, kind, measure):
    """The three cases on one CR-only host at `kind`'s prompt: (read, at once) data; (unread,
    after 60 ms of modem time) data; (unread, at once) the line's.  measure(answer, n) -> what
    the case stored / sent (the payload "\\nxy<n>", or "xy<n>" with the LF dropped)."""
    host.write(b"AT\r")
    assert host.read_until(OK) == OK                    # the byte after ATE0<CR> was 'A': CR alone
    lines = {"qisend": lambda n, s: b"AT+QISEND=0,%d\r" % s,
             "qfupl": lambda n, s: b'AT+QFUPL="RAM:f%d",%d\r' % (n, s),
             "qsecwrite": lambda n, s: b"AT+QSECWRITE=0\r",
             "qsslsend": lambda n, s: b"AT+QSSLSEND=0\r"}[kind]
    prompt = CONNECT if kind == "qfupl" else PROMPT
    trailer = b"\x1a" if kind in ("qsecwrite", "qsslsend") else b""
    result = re.compile(rb"\r\n(SEND OK|OK|ERROR|SEND FAIL)\r\n")
    for n, (read, later, lf_is_data) in enumerate([(True, 0, True), (False, 0.06, True),
                                                    (False, 0, False)]):
        body = b"xy%d" % n
        payload = b"\n" + body
        size = len(payload) if lf_is_data else len(body)
        host.write(lines(n, size))
        emulator.wait_received(port, host.written)
        if read:
            assert host.read_until(prompt) == prompt
        else:
            wait_unread(host, len(prompt))
        if later:
            emulator.advance(port, later)
        host.write(b"\n")
        emulator.wait_received(port, host.written)
        host.write(body + trailer)
        if not read:
            assert host.read_until(prompt) == prompt
        answer = host.read_until(result)
        assert measure(answer, n) == (payload if lf_is_data else body), (n, answer)


def test_pty_qfupl_connect(open_modem, emulator):
    host, port = open_modem("ec2x", manual_time=True)
    run_three(host, port, emulator, "qfupl", lambda answer, n: _qfupl_stored(host, n))


def test_pty_qsecwrite_prompt(open_modem, emulator):
    host, port = open_modem("ml302", manual_time=True)

    def measure(answer, n):
        m = re.search(rb"\+QSECWRITE: (\d+),", answer)
        assert m, answer
        return b"?" * int(m.group(1))
    # (the slot keeps no bytes a test can read back here: the count says whether the LF went in)
    host.write(b"AT\r")
    assert host.read_until(OK) == OK
    for n, (read, later, lf_is_data) in enumerate([(True, 0, True), (False, 0.06, True),
                                                    (False, 0, False)]):
        host.write(b"AT+QSECDEL=0\r")
        assert host.read_until(re.compile(rb"\r\n(OK|\+CME ERROR: \d+)\r\n"))
        host.write(b"AT+QSECWRITE=0\r")
        emulator.wait_received(port, host.written)
        if read:
            assert host.read_until(PROMPT) == PROMPT
        else:
            wait_unread(host, len(PROMPT))
        if later:
            emulator.advance(port, later)
        host.write(b"\n")
        emulator.wait_received(port, host.written)
        host.write(b"-----\x1a")
        answer = host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))
        assert measure(answer, n) == b"?" * (6 if lf_is_data else 5), (n, answer)


@pytest.fixture
def sink(emulator):
    with TcpServer("sink") as server:
        emulator.router.add_map(SINK_NAME, SINK_PORT, "127.0.0.1", server.port)
        yield server


def test_pty_qisend_prompt(open_modem, emulator, sink):
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{SINK_NAME}",{SINK_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n").endswith(b"+QIOPEN: 0,0\r\n")
    wait_for(lambda: sink.connections, what="the accept")
    conn = sink.connections[0]
    seen = [0]

    def measure(answer, n):
        assert answer.endswith(SEND_OK), answer
        want_at_least = seen[0] + 3
        wait_for(lambda: len(conn.received) >= want_at_least, what="the peer's bytes")
        time.sleep(0.05)
        got = bytes(conn.received[seen[0]:])
        seen[0] = len(conn.received)
        return got
    run_three(host, port, emulator, "qisend", measure)


def test_pty_ml302_qsslsend_prompt(ml, tls, emulator):
    host, advance, port = ml
    received = bytearray()

    def reader(conn) -> None:                   # a sink: reads, never answers (no "recv" URCs)
        while data := conn.recv():
            received.extend(data)
    tls(HOST, handler=reader)
    ml_open(host, 0, HOST)
    seen = [0]

    def measure(answer, n):
        assert answer.endswith(SEND_OK), answer
        want_at_least = seen[0] + 3
        wait_for(lambda: len(received) >= want_at_least, what="the peer's bytes")
        time.sleep(0.05)
        got = bytes(received[seen[0]:])
        seen[0] = len(received)
        return got
    run_three(host, port, emulator, "qsslsend", measure)


@pytest.mark.parametrize("read, later, lf_is_data", [(True, 0, True), (False, 0.06, True),
                                                     (False, 0, False)])
def test_pty_transparent_connect(open_modem, emulator, sink, read, later, lf_is_data):
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICFG="transwaittm",0') == OK
    host.write(b"AT\r")
    assert host.read_until(OK) == OK
    host.write(f'AT+QIOPEN=1,0,"TCP","{SINK_NAME}",{SINK_PORT},0,2\r'.encode())
    emulator.wait_received(port, host.written)
    if read:
        assert host.read_until(CONNECT, timeout=10) == CONNECT
    else:
        wait_unread(host, len(CONNECT))
    wait_for(lambda: sink.connections, what="the accept")
    if later:
        emulator.advance(port, later)
    host.write(b"\n")
    emulator.wait_received(port, host.written)
    host.write(b"online")
    conn = sink.connections[0]
    want = b"\nonline" if lf_is_data else b"online"
    wait_for(lambda: len(conn.received) >= len(want), what="the peer's bytes")
    time.sleep(0.1)
    assert bytes(conn.received) == want


def test_pty_uart_close_at_an_unread_prompt_of_a_cr_only_host(open_modem, emulator):
    """--uart through the pty, manual time (the window never passes by itself): a CR-only
    program leaves at an unread CONNECT; the next program writes LF at once, then data: the LF
    is data (behaviour.md), and the file holds exactly the next program's bytes."""
    host, port = open_modem("ec2x", manual_time=True, hangup_on_close=False)
    host.write(b"AT\r")
    assert host.read_until(OK) == OK
    host.write(b'AT+QFUPL="RAM:left",3\r')
    wait_unread(host, len(CONNECT))
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the close seen")
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        again.write(b"\n")
        emulator.wait_received(port, host.written + again.written)   # (the port counts A's bytes too)
        again.write(b"xy")
        assert again.read_until(OK).startswith(b"\r\n+QFUPL: 3,")
        assert _qfupl_stored_named(again, "RAM:left") == b"\nxy"
    finally:
        again.close()


def _qfupl_stored_named(host, name: str) -> bytes:
    host.write(f'AT+QFDWL="{name}"\r')
    got = host.read_until(OK)
    m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: \d+,[0-9a-f]+\r\n\r\nOK\r\n", got, re.S)
    assert m, got
    return m.group(1)


# Was a bug, fixed (a regression of 9bc4827 for a moment): --uart, program A wrote
# 'AT+CSQ<CR>AT+QFUPL=...<CR>' with AT+CSQ slow and closed; the CONNECT for A's second line
# opened after A left, and program B's first-byte LF was dropped as A's line ending.  A line
# whose CR came from a program that has closed the port gets no late-LF rule.
# (The same for one chained line lexed before the close, its AT+QFUPL opening CONNECT after it:
# found re-reading that fix, which judged the line when it was lexed, not when its prompt opened.)
@pytest.mark.parametrize("lines,answer", [
    (b'AT+CSQ\rAT+QFUPL="RAM:late",2\r', b"\r\n+CSQ: 24,99\r\n" + OK + CONNECT),
    (b'AT+CSQ;+QFUPL="RAM:late",2\r', b"\r\n+CSQ: 24,99\r\n" + CONNECT),
])
def test_uart_prompt_opened_after_the_writer_left_treats_the_next_programs_lf_as_data(open_modem, emulator,
                                                                                     lines, answer):
    host, port = open_modem("ec2x", manual_time=True, hangup_on_close=False)
    assert emulator.control("slow", command="+CSQ", ms=300)["ok"]
    host.write(lines)
    emulator.wait_received(port, host.written)
    pending(emulator, port)
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the close seen")
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        emulator.advance(port, 0.3)                     # A's CSQ answer and CONNECT, to B
        wait_unread(again, len(answer))                 # B has not read them
        again.write(b"\n")
        emulator.wait_received(port, host.written + again.written)   # (the port counts A's bytes too)
        again.write(b"ab")
        assert again.read_until(CONNECT) == answer
        assert again.read_until(OK).startswith(b"\r\n+QFUPL: 2,")
        again.write(b'AT+QFDWL="RAM:late"\r')
        got = again.read_until(OK)
        m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: \d+,[0-9a-f]+\r\n\r\nOK\r\n", got, re.S)
        assert m, got
        assert m.group(1) == b"\na"
    finally:
        again.close()
