"""Chaos host round 13 (EC2x): control bytes right after basic commands and inside extended
ones (only 0x20 is a space), 'lost' records for a host that closes with unread output, DTR
drops right after writes.

Found here:
- a hang-up counts the departed host's unread output with FIONREAD on the slave, which sees
  only n_tty's read buffer (<= 4095 bytes), not what still sits in the pty's flip buffer; the
  TCIFLUSH after it discards those bytes uncounted (a host that reads nothing of 30 URCs,
  12120 bytes: 'lost' 4095).  A fix that read the slave empty to count them (25aece1) was
  taken back: the reads pass the bytes through the departed host's line settings (with its
  ECHO they came back to the modem as input; canonical mode stopped the count at a VEOF) --
  test_review_changes_1207_k.py.  A documented limit now (strict xfails DIFFERS below).
- fixed (parser._basic_query checks for a stray byte): "ATS3?<TAB>" (any control / 0x7F-0xFF
  byte after a basic query or =?) wrote the query's answer and then ERROR, where
  "AT+CMEE?<TAB>" and "ATE<TAB>1" run nothing.
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.host import Host
from tests.e2e import replay_support as rs
from tests.e2e.test_adversarial_field_tools_10 import _settle
from tests.e2e.test_review_changes_1207_j import _delivered

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SPECIAL = {0x08, 0x0D}                  # S5 backspace, S3 CR: line editing, not characters
BYTES = [b for b in list(range(0x00, 0x20)) + list(range(0x7F, 0x100)) if b not in SPECIAL]
FORMS = [(b"ATE", b"0"), (b"ATV", b"0"), (b"ATQ", b"1"), (b"AT&D", b"0"), (b"AT&C", b"0"),
         (b"ATS3=", b"35"), (b"ATS3", b"=35"), (b"AT+CMEE=", b"2"), (b"AT+CMEE", b"=2"),
         (b"AT+CMEE=2", b""), (b'AT+QSSLCFG="seclevel",1,', b"2"), (b"ATE", b""),
         (b"AT", b"E0"), (b"ATE0", b"V0"), (b"ATV0", b"&D0"), (b"AT&D0", b"E0"), (b"ATS3=35", b""),
         (b"AT+CMEE=2", b";E0"), (b"AT+CMEE=2", b"+CSQ"), (b"ATQ1", b";+CSQ"),
         (b"AT+CMEE?", b""), (b"AT+CMEE=?", b""), (b"ATI", b""), (b"AT&V", b""),
         (b"ATZ", b""), (b"AT&F", b""), (b"AT&F0", b""), (b"ATZ", b"0"), (b"AT&C0", b""), (b"AT+CMEE=\"2\"", b"")]


@pytest.mark.parametrize("head, tail", FORMS, ids=[(h + t).decode() for h, t in FORMS])
def test_every_control_byte_after_a_command_is_one_error_with_exact_echo_and_no_change(open_modem, head, tail):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    assert host.at("AT+CMEE=0;&D1").endswith(OK)          # not the factory values: ATZ/&F would show
    before = host.at("AT&V")
    cfg = host.at('AT+QSSLCFG="seclevel",1')
    cmee = host.at("AT+CMEE?")
    for b in BYTES:
        line = head + bytes([b]) + tail + b"\r"
        host.write(line)
        want = line + ERROR
        got = host.read_exactly(len(want), 5)
        assert got == want, (hex(b), got)
    assert host.quiet_for(0.2) == b""
    assert host.at("AT&V") == before
    assert host.at('AT+QSSLCFG="seclevel",1') == cfg
    assert host.at("AT+CMEE?") == cmee


@pytest.mark.parametrize("b", [0x00, 0x09, 0x0A, 0x0B, 0x1A, 0x1B, 0x1F, 0x7F, 0xA0, 0xFF])
def test_a_control_byte_after_a_semicolon_stops_the_line_there_what_came_before_ran(open_modem, b):
    """V.250 5.2.1: commands run in order, an error stops the line; those before it ran.
    One ERROR, the echo exact, nothing after the bad byte ran."""
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    line = b"AT+CMEE=2;" + bytes([b]) + b"E0\r"
    host.write(line)
    assert host.read_exactly(len(line) + len(ERROR), 5) == line + ERROR
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 2\r\n\r\nOK\r\n"   # echo still on: E0 never ran


# == 'lost' records: what the hosts read + what is marked lost == what was recorded ====================
from tests.e2e.socket_support import conn_of  # noqa: E402
from tests.e2e.test_adversarial_chaos_host import Rig, loop_held  # noqa: E402


def _read_part(host: Host, total: int, part: int, timeout: float = 10) -> None:
    """Wait until `total` bytes wait unread in the pty, read exactly `part` of them."""
    deadline = time.monotonic() + timeout
    while host.ser.in_waiting < total:
        assert time.monotonic() < deadline, (host.ser.in_waiting, total)
        time.sleep(0.01)
    got = host.ser.read(part)
    assert len(got) == part
    host.transcript += got


def _check(emulator, path, port, first: Host, count_lost: int = 1, in_flight: int = 0) -> tuple[list[dict], bytes]:
    """in_flight: bytes the trace may count as delivered beyond what the host read -- at --baud
    the pacing goes on up to the hang-up, and bytes still on their way through the pty then
    (not yet in the line discipline, where FIONREAD counts) are flushed uncounted: the
    documented limit (behaviour.md, the lost record); a full run saw 9 at 9600 baud."""
    _settle(emulator, path, "hangup")
    with loop_held(emulator):              # (pyserial's open flushes: nothing in between)
        nxt = Host(port.path)
    emulator.run(port.port.look_for_host)
    try:
        time.sleep(0.3)
        nxt.write("ATE0\r")
        nxt.read_until(OK, 5)
    finally:
        nxt.close()
    _settle(emulator, path)
    rs.wait_records(path, "hangup", 2)
    records = rs.records(path)
    recorded, delivered = _delivered(records)
    got = bytes(first.transcript) + bytes(nxt.transcript)
    if in_flight:
        head = bytes(first.transcript)
        assert delivered.startswith(head) and delivered.endswith(bytes(nxt.transcript)), (len(delivered), len(got))
        assert len(got) <= len(delivered) <= len(got) + in_flight, (len(delivered), len(got))
    else:
        assert delivered == got, (len(delivered), len(got))
    lost = [r for r in records if r["kind"] == "lost"]
    assert len(lost) == count_lost if count_lost else lost, lost
    assert len(first.transcript) <= lost[0]["from"] <= len(first.transcript) + in_flight, (
        lost[0], len(first.transcript))
    import subprocess
    import sys
    from pathlib import Path
    cli = Path(sys.executable).with_name("modem-emulator")
    shown = subprocess.run([str(cli), "trace", "show", str(path)], capture_output=True, text=True, timeout=15)
    assert shown.returncode == 0, shown.stderr
    assert len(re.findall(r"never reached the host", shown.stdout)) == len(lost), shown.stdout[-2000:]
    return records, recorded


@pytest.mark.parametrize("baud", [None, 9600])
def test_host_closes_mid_urc_lost_plus_read_is_recorded(emulator, open_modem, tmp_path, baud):
    path = tmp_path / "urc.trace"
    kw = {"baud": baud} if baud else {}
    host, port = open_modem("ec2x", trace=str(path), **kw)
    text = '+QIURC: "' + "u" * 400 + '"'
    assert emulator.control("urc", text=text) == {"ok": True}
    if baud:
        time.sleep(0.1)                               # ~100 of 412 bytes have left at 9600
        host.transcript += host.ser.read(host.ser.in_waiting)
        assert 0 < len(host.transcript) < len(text) + 4, len(host.transcript)
    else:
        _read_part(host, len(text) + 4, 37)
    host.close()
    records, recorded = _check(emulator, path, port, host, in_flight=64 if baud else 0)
    assert (b"\r\n" + text.encode() + b"\r\n") in recorded


@pytest.mark.parametrize("baud", [None, 19200])
def test_host_closes_mid_qsslrecv_data_lost_plus_read_is_recorded(emulator, open_modem, tmp_path, strict_log, baud):
    path = tmp_path / "recv.trace"
    kw = {"baud": baud} if baud else {}
    r = Rig(emulator, lambda name: open_modem(name, trace=str(path), **kw))
    try:
        with r.ssl_server() as server:
            r.ssl_open(0)
            data = bytes(range(256)) * 8
            conn_of(server).send(data)
            r.host.read_until(b'+QSSLURC: "recv",0\r\n', 10)
            time.sleep(0.3)
            r.host.write("AT+QSSLRECV=0,1500\r")
            head = b"\r\n+QSSLRECV: 1500\r\n"
            if baud:
                r.host.read_until(head, 5)
                r.host.read_exactly(300, 5)          # ~0.3 s of the 0.8 s answer at 19200
            else:
                _read_part(r.host, len(head) + 1500 + 8, len(head) + 700)
            r.host.close()
            records, recorded = _check(emulator, path, r.port, r.host, None if baud else 1,
                                       in_flight=64 if baud else 0)
            assert data[:1500] in recorded
    finally:
        r.close_all()


@pytest.mark.parametrize("baud", [None, 19200])
def test_host_closes_in_transparent_mode_with_unread_data(emulator, open_modem, tmp_path, strict_log, baud):
    path = tmp_path / "online.trace"
    kw = {"baud": baud} if baud else {}
    r = Rig(emulator, lambda name: open_modem(name, trace=str(path), **kw))
    try:
        with r.ssl_server() as server:
            r.ssl_open(0, mode=2)
            data = bytes(range(256)) * 6
            conn_of(server).send(data)
            if baud:
                r.host.read_exactly(333, 5)
            else:
                _read_part(r.host, len(data), 333)
            r.host.close()
            records, recorded = _check(emulator, path, r.port, r.host, None if baud else 1,
                                       in_flight=64 if baud else 0)
            assert data in recorded
    finally:
        r.close_all()


@pytest.mark.parametrize("baud", [None, 9600])
def test_two_hosts_in_a_row_leave_their_own_echo_and_answer_unread(emulator, open_modem, tmp_path, baud):
    path = tmp_path / "two.trace"
    kw = {"baud": baud} if baud else {}
    host, port = open_modem("ec2x", trace=str(path), **kw)
    assert host.at("ATE1").endswith(OK)
    hosts = [host]
    for i in range(2):
        h = hosts[-1]
        line = b"ATI;+CGMR;+CSQ;+CREG?\r"
        h.write(line)
        _read_part(h, len(line) + (0 if baud else 30), 5)   # part of its own echo
        h.close()
        _settle(emulator, path, "hangup")
        rs.wait_records(path, "hangup", i + 1)
        time.sleep(0.3 if baud else 0.05)
        with loop_held(emulator):          # (pyserial's open flushes: nothing in between)
            nxt = Host(port.path)
        emulator.run(port.port.look_for_host)
        hosts.append(nxt)
    last = hosts[-1]
    last.write("AT\r")
    last.read_until(OK, 5)
    last.close()
    _settle(emulator, path)
    rs.wait_records(path, "hangup", 3)
    records = rs.records(path)
    recorded, delivered = _delivered(records)
    assert delivered == b"".join(bytes(h.transcript) for h in hosts)
    lost = [r for r in records if r["kind"] == "lost"]
    assert lost and lost[0]["from"] == len(hosts[0].transcript), lost


# == DTR drops right after writes ==========================================================================
from tests.e2e.socket_support import wait_received  # noqa: E402


def _dtr(emulator, level: int) -> None:
    assert emulator.control("dtr", level=level)["ok"]


@pytest.mark.parametrize("d", [0, 1, 2])
def test_dtr_drop_right_after_half_lines_in_command_state_changes_nothing(emulator, open_modem, d):
    host, _ = open_modem("ec2x")
    assert host.at(f"AT&D{d}") == OK
    for i in range(8):
        host.write(f"AT+CMEE={i % 3}\r")
        _dtr(emulator, 0)
        _dtr(emulator, 1)
        assert host.read_until(OK, 5) == OK
        host.write("AT+CM")
        _dtr(emulator, 0)
        host.write("EE?\r")
        _dtr(emulator, 1)
        assert host.read_until(OK, 5) == f"\r\n+CMEE: {i % 3}\r\n".encode() + OK
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("d", [0, 1, 2])
def test_dtr_drop_inside_a_data_prompt_is_ignored_and_the_bytes_are_sent(emulator, open_modem, strict_log, d):
    r = Rig(emulator, open_modem)
    try:
        with r.ssl_server() as server:
            r.ssl_open(0)
            assert r.host.at(f"AT&D{d}") == OK
            conn = conn_of(server)
            sent = b""
            for i in range(5):
                r.host.write("AT+QSSLSEND=0,20\r")
                assert r.host.read_until(b"> ", 5) == b"\r\n> "
                chunk = bytes([0x41 + i]) * 20
                r.host.write(chunk[:7])
                _dtr(emulator, 0)
                r.host.write(chunk[7:])
                _dtr(emulator, 1)
                assert r.host.read_until(b"SEND OK\r\n", 5) == b"\r\nSEND OK\r\n"
                sent += chunk
            assert wait_received(conn, len(sent)) == sent
            assert r.host.quiet_for(0.2) == b""
    finally:
        r.close_all()


@pytest.mark.parametrize("d", [1, 2])
def test_dtr_drop_right_after_online_writes_sends_them_first(emulator, open_modem, strict_log, d):
    r = Rig(emulator, open_modem)
    try:
        with r.ssl_server() as server:
            assert r.host.at(f"AT&D{d}") == OK
            r.ssl_open(0, mode=2)
            conn = conn_of(server)
            sent = b""
            for i in range(4 if d == 1 else 1):
                chunk = bytes([0x61 + i]) * (100 + i)
                r.host.write(chunk)
                _dtr(emulator, 0)
                _dtr(emulator, 1)
                if d == 1:
                    assert r.host.read_until(OK, 5) == OK
                    sent += chunk
                    assert wait_received(conn, len(sent)) == sent
                    assert r.host.at("ATO").endswith(b"CONNECT\r\n")
                else:
                    assert r.host.read_until(b"NO CARRIER\r\n", 15) == b"\r\nNO CARRIER\r\n"
                    sent += chunk
                    assert wait_received(conn, len(sent)) == sent
            assert r.host.quiet_for(0.2) == b""
    finally:
        r.close_all()


# == line editing around control bytes ===================================================================
def test_backspace_over_a_control_byte_leaves_a_good_command(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    for b in (0x00, 0x09, 0x1B, 0x7F, 0xA0):
        line = b"ATV" + bytes([b]) + b"\x080\r"             # the stray byte deleted: ATV0
        host.write(line)
        assert host.read_exactly(len(line) + 2, 5) == line + b"0\r"
        host.write(b"ATV1\r")
        assert host.read_exactly(11, 5) == b"ATV1\r\r\nOK\r\n"


def test_s5_127_makes_del_the_backspace_and_bs_a_malformed_byte(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    assert host.at("ATS5=127") == b"ATS5=127\r" + OK
    host.write(b"AT+CMEE=1\x7f2\r")
    assert host.read_until(OK, 5) == b"AT+CMEE=1\x7f2\r" + OK
    host.write(b"ATV\x08\r")
    assert host.read_until(ERROR, 5) == b"ATV\x08\r" + ERROR
    assert host.at("AT+CMEE?;S5?") == b"AT+CMEE?;S5?\r\r\n+CMEE: 2\r\n\r\n127\r\n" + OK


def test_s3_nul_makes_nul_the_terminator_not_a_malformed_byte(open_modem, strict_log):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    host.write(b"ATS3=0\r")
    assert host.read_until(b"OK\x00\n", 5) == b"ATS3=0\r\x00\nOK\x00\n"
    host.write(b"ATV1\rATE\x00")                                  # CR is a plain byte now
    assert host.read_until(b"\x00\n", 5) == b"ATV1\rATE\x00\x00\n"
    assert host.read_until(b"\x00\n", 5) == b"ERROR\x00\n"
    host.write(b"ATS3=13\x00")
    assert host.read_until(OK, 5) == b"ATS3=13\x00" + OK
    assert host.at("AT&V").count(b"E: 1\r\n") == 1


# == the same under ATV0 / with A/, and the trace of such a session replays ================================
def test_every_byte_under_v0_is_one_numeric_error_and_a_slash_repeats_the_malformed_line(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    host.write(b"ATV0\r")
    assert host.read_exactly(7, 5) == b"ATV0\r0\r"
    for b in BYTES:
        line = b"ATQ" + bytes([b]) + b"1\r"
        host.write(line)
        assert host.read_exactly(len(line) + 2, 5) == line + b"4\r", hex(b)
        host.write(b"A/")
        assert host.read_exactly(4, 5) == b"A/4\r", hex(b)
    assert host.quiet_for(0.2) == b""
    host.write(b"AT&V\r")
    assert b"Q: 0\r\nV: 0\r\n" in host.read_until(b"\r\n0\r", 5)


def test_a_slash_after_a_semicolon_line_stopped_by_a_stray_byte_runs_its_head_again(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE1").endswith(OK)
    host.write(b"AT+CMEE=2;\x00E0\r")
    assert host.read_until(ERROR, 5) == b"AT+CMEE=2;\x00E0\r" + ERROR
    assert host.at("AT+CMEE=0") == b"AT+CMEE=0\r" + OK
    host.write(b"AT+CMEE=2;\x00E0\r")
    host.read_until(ERROR, 5)
    host.write(b"AT+CMEE=0\r")
    host.read_until(OK, 5)
    host.write(b"A/")
    assert host.read_until(OK, 5) == b"A/" + OK              # the last line was AT+CMEE=0
    host.write(b"AT+CMEE=2;\x1fE0\r")
    host.read_until(ERROR, 5)
    host.write(b"AT+CMEE=0\r")
    host.read_until(OK, 5)
    host.write(b"A/")
    host.read_until(OK, 5)
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 0\r\n" + OK


def test_a_session_of_stray_bytes_replays_with_no_difference(emulator, open_modem, tmp_path, capsys):
    path = tmp_path / "stray.trace"
    host, port = open_modem("ec2x", trace=str(path), echo=True)
    assert host.at("ATE1").endswith(OK)
    for b in BYTES + [0x0A]:
        line = b"AT&D" + bytes([b]) + b"0;E0\r"
        host.write(line)
        assert host.read_exactly(len(line) + len(ERROR), 5) == line + ERROR
    host.write(b'AT+QSSLCFG="sni",1,"a\x01\x7f\xff"\r')
    host.read_until(re.compile(rb"OK\r\n|ERROR\r\n"), 5)
    assert host.at("AT&V").count(b"&D: 2\r\n") == 1
    host.close()
    _settle(emulator, path, "hangup")
    rs.replays(capsys, path)


# == a DTR drop and the "+++" escape ========================================================================
import threading  # noqa: E402


@pytest.mark.parametrize("d", [1, 2])
def test_dtr_drop_after_a_complete_escape_on_a_busy_loop_comes_after_its_ok(emulator, open_modem, strict_log, d):
    """The escape's guard time passed while the loop was busy; the DTR drop handled after that
    deadline comes after the escape (behaviour.md): one OK, then the drop in command state is
    ignored under every AT&D -- the connection stays, "+++" was no data."""
    r = Rig(emulator, open_modem)
    try:
        with r.ssl_server() as server:
            assert r.host.at(f"AT&D{d};S12=5") == OK
            r.ssl_open(0, mode=2)
            conn = conn_of(server)
            r.host.write(b"data")
            wait_received(conn, 4)
            time.sleep(0.3)
            r.host.write(b"+++")
            emulator.wait_received(r.port, r.host.written)
            busy = threading.Thread(target=emulator.run, args=(time.sleep, 0.6))
            busy.start()
            time.sleep(0.3)                                 # the escape is complete (200 ms ago)
            drop = threading.Thread(target=_dtr, args=(emulator, 0))
            drop.start()
            busy.join()
            drop.join()
            _dtr(emulator, 1)
            assert r.host.read_until(OK, 5) == OK
            assert r.host.quiet_for(0.4) == b""
            state = r.host.at("AT+QSSLSTATE=0")
            assert b'"SSLClient"' in state and b",2," in state, state
            time.sleep(0.2)
            assert bytes(conn.received) == b"data"
    finally:
        r.close_all()


@pytest.mark.parametrize("d", [1, 2])
def test_dtr_drop_inside_the_escapes_guard_time_sends_the_held_plus_signs(emulator, open_modem, strict_log, d):
    r = Rig(emulator, open_modem)
    try:
        with r.ssl_server() as server:
            assert r.host.at(f"AT&D{d}") == OK
            r.ssl_open(0, mode=2)
            conn = conn_of(server)
            r.host.write(b"data")
            wait_received(conn, 4)
            time.sleep(1.2)
            r.host.write(b"++")
            _dtr(emulator, 0)
            _dtr(emulator, 1)
            final = OK if d == 1 else b"\r\nNO CARRIER\r\n"
            assert r.host.read_until(final, 15) == final
            assert wait_received(conn, 6) == b"data++"
            assert r.host.quiet_for(1.2) == b""
    finally:
        r.close_all()


@pytest.mark.parametrize("d", [1, 2])
def test_dtr_drop_right_after_online_writes_at_baud_sends_them_first(emulator, open_modem, strict_log, d):
    """--baud 2400: the host's 60 bytes take 250 ms on the line; a drop right after the write
    does not overtake them (behaviour.md: as a module's UART sees the bytes first)."""
    r = Rig(emulator, lambda name: open_modem(name, baud=2400))
    try:
        with r.ssl_server() as server:
            assert r.host.at(f"AT&D{d}") == OK
            r.ssl_open(0, mode=2)
            conn = conn_of(server)
            chunk = bytes(range(0x30, 0x6c))
            r.host.write(chunk)
            _dtr(emulator, 0)
            _dtr(emulator, 1)
            final = OK if d == 1 else b"\r\nNO CARRIER\r\n"
            assert r.host.read_until(final, 15) == final
            assert wait_received(conn, len(chunk)) == chunk
            time.sleep(0.3)
            assert bytes(conn.received) == chunk
    finally:
        r.close_all()


def test_dtr_drop_right_after_the_host_closed_is_no_traceback(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x")
    for i in range(5):
        host.write(b"AT+CMEE=2\r")
        host.close()
        _dtr(emulator, 0)
        _dtr(emulator, 1)
        time.sleep(0.1)
        with loop_held(emulator):
            host = Host(port.path)
        emulator.run(port.port.look_for_host)
        assert host.at("AT") == OK
    host.close()


_OVER_4095 = pytest.mark.xfail(strict=True, reason="DIFFERS (docs/behaviour.md, trace: the lost-record limits): "
                               "of a host's unread backlog over 4095 bytes only what the line discipline holds "
                               "(FIONREAD, 4095 at most) is counted lost; the rest, in the pty's buffers, is "
                               "flushed uncounted")


@_OVER_4095
@pytest.mark.parametrize("mode", [1, 2])
def test_host_that_never_reads_a_flood_then_closes_loses_exactly_what_was_recorded(emulator, open_modem, tmp_path,
                                                                                   strict_log, mode):
    """A push-mode (1) or transparent (2) socket floods 120 KB while the host reads nothing
    past the open, then closes: what the trace records past that point is all marked lost."""
    path = tmp_path / f"flood{mode}.trace"
    r = Rig(emulator, lambda name: open_modem(name, trace=str(path)))
    try:
        with r.ssl_server() as server:
            r.ssl_open(0, mode=mode)
            mark = len(r.host.transcript)
            data = bytes(range(256)) * 480
            conn_of(server).send(data)
            time.sleep(1.0)
            r.host.transcript += r.host.ser.read(10)       # a little of it
            r.host.close()
            records, recorded = _check(emulator, path, r.port, r.host, None)
            assert len(r.host.transcript) == mark + 10
    finally:
        r.close_all()


@pytest.mark.parametrize("count", [5, 10, pytest.param(30, marks=_OVER_4095),
                                   pytest.param(150, marks=_OVER_4095)])
def test_host_that_never_reads_urcs_then_closes_every_recorded_byte_is_lost(emulator, open_modem, tmp_path, count):
    """No TLS: `count` URCs of 404 bytes while the raw-mode host reads nothing, then it closes.
    The host got nothing past its last answer: every byte recorded after it must be in a 'lost'
    run (README / behaviour.md: the pty's unread bytes and what waited behind a host not reading)."""
    path = tmp_path / f"urcs{count}.trace"
    host, port = open_modem("ec2x", trace=str(path))
    assert host.at("AT") == OK
    text = '+QIURC: "' + "u" * 390 + '"'
    for _ in range(count):
        assert emulator.control("urc", text=text) == {"ok": True}
    time.sleep(0.5)
    host.close()
    _settle(emulator, path, "hangup")
    records = rs.records(path)
    recorded, delivered = _delivered(records)
    lost = sum(r["bytes"] for r in records if r["kind"] == "lost")
    assert len(recorded) - len(host.transcript) == count * (len(text) + 4)
    assert lost == count * (len(text) + 4), (lost, count * (len(text) + 4))
    assert delivered == bytes(host.transcript)



# Was a bug, fixed: parser._basic_query checks _stray after '?' / '=?'.
@pytest.mark.parametrize("query", [b"ATS3?", b"ATS7?", b"ATS3=?"])
def test_a_stray_byte_after_a_basic_query_runs_nothing(open_modem, query):
    host, _ = open_modem("ec2x", echo=False)
    for b in (0x00, 0x09, 0x1F, 0x7F, 0xA0, 0xFF):
        host.write(query + bytes([b]) + b"\r")
        assert host.read_until(re.compile(rb"(OK|ERROR)\r\n"), 5) == ERROR, hex(b)
