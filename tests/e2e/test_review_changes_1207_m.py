"""Review of b4bbe95 (EscapeDetector.feed: the three "+" strictly within the guard time, on both
the timer's and the read's path) and 22fefed (parser._split_number sees any run of spaces;
cli.check_distinct_paths / _file_keys by resolved path, a --link's target and the inode).

Bugs found, fixed (were strict xfails; EscapeDetector._within compares with first_at + guard as
deadline() does; check_distinct_paths resolves a --link's directory as the kernel walks it,
counts the link's and the state dir's lock files, and refuses a NUL byte in one line):
- escape.EscapeDetector: feed() tests `now - first_at < guard`, expire() tests
  `now >= first_at + guard` (deadline()): in floating point these disagree at the very deadline()
  for about half of all start times (fl(first_at + guard) - first_at < guard), so a third "+"
  read at the deadline the timer uses is still an escape -- the inconsistency b4bbe95 fixed,
  at one ulp.
- cli.check_distinct_paths keys a --link by os.path.abspath, which folds "x/.." lexically:
  --link D/alias/../m (alias -> D/e) is D/m on disk, --trace D/m is not refused; the trace
  file is created, then --link refuses (exit 1) and leaves it.
- the file beside a --link (its lock, ".<name>.lock", README) is one --keylog / --trace may
  name: a user's file there is truncated to the emulator's pid and, at a clean stop, DELETED
  (the key log gone); as the trace it ends in a misleading exit 1 "link of a running
  modem-emulator" with the trace file left behind.
- main(argv) with a NUL byte in a --trace / --keylog / --control path: ValueError traceback
  from _file_keys's os.path.realpath (the os.stat beside it catches ValueError, realpath not).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.at.escape import EscapeDetector
from emulator.testing.peers import TlsServer
from tests.e2e.test_adversarial_field_tools_11 import _start_refused
from tests.e2e.test_adversarial_transparent_3 import received, sink  # noqa: F401 (fixture)
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, PORT,
                                                           ato, connect, escape)

ROOT = Path(__file__).resolve().parents[2]
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CONNECT = b"\r\nCONNECT\r\n"


# == (1) b4bbe95: the span of the three "+" at other S12 values ===================================
@pytest.fixture
def online_s12(emulator, ec2x_strict, request):
    """(host, advance, server, guard): ATS12=<param> set, then online on socket 4 with a sink."""
    host, advance, port = ec2x_strict
    s12 = request.param
    assert host.at(f"ATS12={s12}") == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        yield host, advance, server, s12 / 50


@pytest.mark.parametrize("online_s12", [1, 2, 3, 7, 255], indirect=True)
def test_three_plus_spanning_exactly_s12_are_data_and_just_under_escape(online_s12):
    """S12 = 1, 2, 3, 7, 255: "+", g/2, "+", g/2, "+" (span exactly g) is data; "+", then
    "++" at g - 0.01 (g = 0.02: at 0.01) is an escape -- the rule at every guard time."""
    host, advance, server, g = online_s12
    advance(g * 1.5)
    for _ in range(2):
        host.write(b"+")
        time.sleep(0.05)
        advance(g / 2)
    host.write(b"+")
    time.sleep(0.05)
    advance(g * 1.5)
    assert host.quiet_for(0.2) == b""
    assert received(server, 3) == b"+++"
    advance(g * 1.5)
    host.write(b"+")
    time.sleep(0.05)
    advance(g - 0.01 if g > 0.02 else 0.01)
    host.write(b"++")
    time.sleep(0.05)
    advance(g)
    assert host.read_until(FINAL) == OK
    assert bytes(server.conn.received) == b"+++"
    assert ato(host) == CONNECT


def test_feed_and_expire_agree_at_the_float_deadline():
    """S12=1 (0.02 s), first "+" at t=3019.327513111878: deadline() is t + 0.02 rounded down, so
    deadline() - first_at < guard; a read at deadline() must give what expire(deadline()) gives."""
    t, g = 3019.327513111878, 0.02
    timer = EscapeDetector(g, 0.0)
    assert timer.feed(b"+", t) == b""
    dl = timer.deadline()
    assert timer.expire(dl) == (b"+", False)                 # the timer: data at dl
    read = EscapeDetector(g, 0.0)
    assert read.feed(b"+", t) == b""
    out = read.feed(b"++", dl)                               # the read first, at the same instant
    assert (out, read.held) == (b"+++", 0)


def test_feed_and_expire_agree_at_the_deadline_for_many_start_times():
    """Away from the float edge (deadline() + 1 us, deadline() - 1 us) both paths agree."""
    for i in range(200):
        t = 1000.0 + i * 0.37
        for s12 in (1, 50, 255):
            g = s12 / 50
            for delta, escaped in ((-1e-6, True), (1e-6, False)):
                d = EscapeDetector(g, 0.0)
                d.feed(b"+", t)
                at = d.deadline() + delta
                out = d.feed(b"++", at)
                assert (out == b"" and d.held == 3) is escaped, (t, g, delta, out, d.held)


@pytest.mark.parametrize("span, escaped", [(1.0, False), (0.99, True)])
def test_held_plus_then_peer_close_at_the_deadline(sink, span, escaped):
    """"+", "+" at span/2 ... third "+" at span; then the peer closes.  Span 1.00: the three
    are data (no OK), the close is "closed" in online mode (NO CARRIER); 0.99: an escape."""
    host, advance, _, server = sink
    advance(1.5)
    host.write(b"+")
    time.sleep(0.05)
    advance(span / 2)
    host.write(b"+")
    time.sleep(0.05)
    advance(span / 2)
    host.write(b"+")
    time.sleep(0.05)
    advance(1.0)
    if escaped:
        assert host.read_until(FINAL) == OK
        assert bytes(server.conn.received) == b""
    else:
        assert host.quiet_for(0.2) == b""
        assert received(server, 3) == b"+++"


@pytest.mark.parametrize("gap, escaped", [(0.5, False), (0.49, True)])
def test_qfupl_plus_spanning_exactly_the_guard_time(emulator, ec2x_strict, gap, escaped):
    """AT+QFUPL's "+++" (behaviour.md: the guard times of online data mode): "+", gap, "+",
    gap, "+".  Spanning exactly 1.00 s: data, the upload goes on and the file holds "+++";
    0.98 s: the upload ends, +QFUPL: 0,0."""
    host, advance, _ = ec2x_strict
    host.write(b'AT+QFUPL="edge.txt",6,10\r')
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    advance(1.5)
    for _ in range(2):
        host.write(b"+")
        time.sleep(0.05)
        advance(gap)
    host.write(b"+")
    time.sleep(0.05)
    advance(1.0)
    if escaped:
        assert host.read_until(FINAL) == b"\r\n+QFUPL: 0,0\r\n" + OK
        return
    assert host.quiet_for(0.2) == b""
    host.write(b"abc")
    got = host.read_until(FINAL)
    assert re.fullmatch(rb"\r\n\+QFUPL: 6,[0-9a-f]+\r\n\r\nOK\r\n", got), got
    host.write(b'AT+QFDWL="edge.txt"\r')
    got = host.read_until(OK)
    assert got.startswith(b"\r\nCONNECT\r\n+++abc\r\n+QFDWL: 6,"), got


def test_ml302_three_plus_spanning_exactly_the_guard_time(emulator, ml302_strict):
    """ML302 connectmode 1 (transparent): "+++" spanning exactly 1.00 s is data, as on the EC2x."""
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        server.wait_handshake()
        advance(1.5)
        for _ in range(2):
            host.write(b"+")
            time.sleep(0.05)
            advance(0.5)
        host.write(b"+")
        time.sleep(0.05)
        advance(1.0)
        assert host.quiet_for(0.2) == b""
        assert received(server, 3) == b"+++"
        assert escape(host, advance) == OK


# == (2) 22fefed: space runs inside every basic command's number ==================================
_BASIC = [("E", "0", "1"), ("V", "1", "0"), ("Q", "0", "1"), ("X", "4", "0"), ("&C", "1", "0"),
          ("&D", "2", "1"), ("S7=", "5", "3"), ("S0=", "1", "2"), ("Z", "0", "0"), ("I", "0", "1")]


def _snapshot(host) -> bytes:
    return host.at("ATS0?;S7?") + host.at("AT&V")


@pytest.mark.parametrize("spaces", [1, 15, 16, 17, 40, 200])
def test_space_run_inside_every_basic_number_runs_nothing(ec2x, spaces):
    """"AT<cmd><digit><spaces><digit>": one malformed number -- ERROR and no setting changed
    (S0, S7, AT&V the same before and after); "A/" after it repeats the ERROR."""
    host = ec2x
    assert host.at("ATS0=0;S7=60") == OK
    before = _snapshot(host)
    for name, a, b in _BASIC:
        line = f"AT{name}{a}{' ' * spaces}{b}"
        assert host.at(line) == ERROR, line
        host.write(b"A/")
        assert host.read_until(FINAL) == ERROR, line
        assert _snapshot(host) == before, line


@pytest.mark.parametrize("spaces", [1, 40])
def test_space_run_then_a_letter_is_two_commands(ec2x, spaces):
    """"ATS7=5<spaces>V1" and "ATS0=2<spaces>S7=7<spaces>": spaces end a number before a
    letter -- both run, OK."""
    host = ec2x
    pad = " " * spaces
    assert host.at(f"ATS7=5{pad}V1") == OK
    assert host.at("ATS7?") == b"\r\n005\r\n" + OK
    assert host.at(f"ATS0=2{pad}S7=7{pad}") == OK
    assert host.at("ATS0?;S7?") == b"\r\n002\r\n\r\n007\r\n" + OK


def test_space_run_inside_numbers_with_echo_on(open_modem):
    """ATE1: the line is echoed as typed (every space), then ERROR; echo stays on."""
    host, _ = open_modem("ec2x", echo=True)
    line = "ATE1" + " " * 40 + "0\r"
    host.write(line.encode())
    assert host.read_until(FINAL) == line.encode() + ERROR
    host.write(b"AT\r")
    assert host.read_until(FINAL) == b"AT\r" + OK


def test_extended_command_with_space_runs(ec2x):
    """Extended commands: spaces inside the parameter list around commas are accepted or not
    the same way whatever the run length (a run of 40 as of 1)."""
    host = ec2x
    one = host.at("AT+CMEE= 2")
    forty = host.at("AT+CMEE=" + " " * 40 + "2")
    assert one == forty, (one, forty)
    host.at("AT+CMEE=0")


# == (3) 22fefed: two options on one file ===========================================================
def _nothing_but(tmp_path: Path, keep: set) -> list:
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in keep | {"start.err", "st"})


def test_trailing_slash_and_dotdot_names_of_one_file_are_refused(tmp_path):
    (tmp_path / "d").mkdir()
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "m0") + "/",
                                     "--trace", str(tmp_path / "d" / ".." / "m0"))
    assert (code, line) == (2, "") and "same file" in err and err.count("\n") == 1, (code, err)
    assert _nothing_but(tmp_path, {"d"}) == []


def test_non_utf8_names_of_one_file_are_refused(tmp_path):
    name = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xffm")
    code, line, err = _start_refused(tmp_path, "--link", name, "--keylog", name)
    assert (code, line) == (2, "") and "same file" in err and "Traceback" not in err, (code, err)
    assert _nothing_but(tmp_path, set()) == []


def test_a_trace_name_too_long_is_one_line_exit_2(tmp_path):
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "m0"),
                                     "--trace", str(tmp_path / ("a" * 300)))
    assert (code, line) == (2, "") and err.count("\n") == 1 and "Traceback" not in err, (code, err)


def test_control_on_an_existing_link_symlink_is_refused(tmp_path):
    link = tmp_path / "L"
    link.symlink_to("/dev/pts/9999")
    code, line, err = _start_refused(tmp_path, "--link", str(link), "--control", str(link))
    assert (code, line) == (2, "") and "same file" in err, (code, err)
    assert os.readlink(link) == "/dev/pts/9999"


def test_count_pattern_with_escaped_braces_is_one_link_for_all_and_refused(tmp_path):
    """"m{{n}}" holds "{n}" yet formats to "m{n}" for every n: all modems one link -- refused."""
    code, line, err = _start_refused(tmp_path, "--count", "2", "--link", str(tmp_path / "m{{n}}"))
    assert (code, line) == (2, "") and "Traceback" not in err and err.count("\n") == 1, (code, err)
    assert _nothing_but(tmp_path, set()) == []


def test_link_through_a_symlinked_dir_and_dotdot_meets_the_trace(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "d" / "e")
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "alias" / ".." / "m"),
                                     "--trace", str(tmp_path / "d" / "m"))
    assert not (tmp_path / "d" / "m").exists()
    assert (code, line) == (2, "") and "same file" in err, (code, err)


def test_keylog_on_the_links_lock_file_keeps_the_users_file(tmp_path):
    lock = tmp_path / ".m0.lock"
    lock.write_bytes(b"precious\n")
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "m0"), "--keylog", str(lock))
    assert lock.exists() and lock.read_bytes().startswith(b"precious\n"), (code, line, err)
    assert code == 2, (code, line, err)


def test_trace_on_the_links_lock_file_is_refused_making_nothing(tmp_path):
    lock = tmp_path / ".m0.lock"
    code, line, err = _start_refused(tmp_path, "--link", str(tmp_path / "m0"), "--trace", str(lock))
    assert (code, line) == (2, ""), (code, line, err)
    assert not lock.exists()


def test_nul_byte_in_a_path_given_to_main_is_one_line_exit_2(tmp_path):
    code = ("import sys; from emulator.tools.cli import main; "
            f"sys.exit(main(['--offline', '--state-dir', {str(tmp_path / 'st')!r}, "
            f"'--link', {str(tmp_path / 'm0')!r}, '--trace', {str(tmp_path)!r} + '/a\\x00b']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=20, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (proc.returncode, proc.stderr)





@pytest.mark.parametrize("andd", [1, 2])
@pytest.mark.parametrize("span", [1.0, 0.99])
def test_held_plus_then_dtr_drop_at_and_before_the_deadline(emulator, sink, andd, span):
    """"+", "+" at span/2, then at span DTR drops (AT&D1: command mode, OK; AT&D2: closed, NO
    CARRIER).  At the deadline (the timer ran) or before it (released): the "++" are data,
    sent once, nothing else."""
    host, advance, _, server = sink
    assert escape(host, advance) == OK
    assert host.at(f"AT&D{andd}") == OK
    assert ato(host) == CONNECT
    advance(1.5)
    host.write(b"+")
    time.sleep(0.05)
    advance(span / 2)
    host.write(b"+")
    time.sleep(0.05)
    advance(span / 2)
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert host.read_until(FINAL) == (OK if andd == 1 else b"\r\nNO CARRIER\r\n")
    assert received(server, 2) == b"++"
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert host.quiet_for(0.2) == b""
    state = host.at("AT+QSSLSTATE=4")
    assert (b'"SSLClient"' in state) is (andd == 1), state


@pytest.mark.parametrize("online_s12", [0], indirect=True)
def test_s12_zero_an_escape_is_three_plus_read_together(online_s12):
    """ATS12=0 (accepted, 0..255); modem clock standing still.  The decision (behaviour.md,
    Leaving): with a guard time of 0 the three "+" must come within 0 s of each other -- read
    in one piece; "+", "+", "+" read apart (even at the same clock instant) are data."""
    host, advance, server, _ = online_s12
    host.write(b"+++")
    time.sleep(0.1)
    advance(0.0)
    assert host.quiet_for(0.3) == OK
    assert ato(host) == CONNECT
    for _ in range(3):
        host.write(b"+")
        time.sleep(0.1)
    advance(0.0)
    assert host.quiet_for(0.3) == b""
    assert bytes(server.conn.received).endswith(b"+++"), bytes(server.conn.received)
