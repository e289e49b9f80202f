"""Adversarial review of the changes d2c4b90..2542bc4 on main:

1. emulator/at/interpreter.py: host input dropped behind a pending answer (past
   MAX_WAITING_INPUT) is logged once per pending answer, with the total, when the answer comes
   or the pending answer is abandoned (hang-up, restart, an interpreter recovery) -- attacked
   with two pending answers in a row and in one line, a hang-up and a new host, the control
   API's reboot, a slow AT+CFUN=1,1, AT+IFC=<x>,2, and the order of what the first 1 MiB
   carried;
2. AT+ICF on both profiles (read / test / write, AT&W / ATZ / AT&F / restarts, settings.json
   hand edits) against AT+IFC / AT+IPR;
3. docs/behaviour.md: a URC raised while the host is still typing a line is written at once,
   between the echoed characters (echo off, S5 editing after it, a custom S3, a URC raised as
   the line starts to run).
"""
from __future__ import annotations

import json
import logging

import pytest

from emulator.at.interpreter import MAX_WAITING_INPUT
from emulator.at.mode import Event, Mode
from emulator.testing.host import Host
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CSQ = b"\r\n+CSQ: 24,99\r\n"
URC = '+QIURC: "x"'
URC_BYTES = b'\r\n+QIURC: "x"\r\n'


def busy(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "port busy" in r.getMessage()]


def dropped(n: int) -> str:
    return f"port busy: {n} input bytes dropped (more than {MAX_WAITING_INPUT} waiting)"


def flood(emulator, port, host, data: bytes, received_before: int = 0) -> None:
    """Write `data` and wait until the modem has read all of it (and `received_before`
    bytes earlier hosts wrote)."""
    host.write(data)
    host.ser.flush()
    emulator.wait_received(port, received_before + host.written)


def slow_csq(emulator, open_modem, profile: str = "ec2x", ms: int = 1000):
    host, port = open_modem(profile, manual_time=True)
    assert emulator.control("slow", command="+CSQ", ms=ms)["ok"]
    return host, port


def reopen(host: Host, emulator, port) -> Host:
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 10, "the close seen by the port")
    again = Host(port.path)
    emulator.run(port.port.look_for_host)
    return again


# =========================================================================================
# 1. input dropped behind a pending answer: one warning per pending answer
# =========================================================================================

@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_two_pending_answers_in_a_row_give_two_warnings_with_their_own_counts(
        emulator, open_modem, caplog, profile):
    host, port = slow_csq(emulator, open_modem, profile)
    advance = emulator.advancer(port, host)
    it = port.modem.interpreter
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 123))
    assert busy(caplog) == []
    advance(1.0)
    csq = host.read_until(OK)
    assert csq.startswith(b"\r\n+CSQ: ") and csq.endswith(OK) and csq.count(b"\r\n") == 4, csq
    assert busy(caplog) == [dropped(123)]
    assert emulator.run(lambda: (it._dropped, len(it._inbox), it.mode)) == (0, 0, Mode.COMMAND)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"y" * (MAX_WAITING_INPUT + 45))
    assert busy(caplog) == [dropped(123)]                    # (the second: when its answer comes)
    advance(1.0)
    assert host.read_until(OK) == csq
    assert host.at("AT") == OK
    assert busy(caplog) == [dropped(123), dropped(45)]


def test_two_pending_answers_of_one_line_each_count_their_own_drops(emulator, open_modem, caplog):
    """AT+CSQ;+CSQ, both slow: the inbox is still full when the first answer comes, so every
    byte written during the second is dropped -- counted for the second answer alone."""
    host, port = slow_csq(emulator, open_modem)
    advance = emulator.advancer(port, host)
    host.write(b"AT+CSQ;+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 7))
    advance(1.0)
    assert host.read_exactly(len(CSQ)) == CSQ
    assert busy(caplog) == [dropped(7)]
    flood(emulator, port, host, b"z" * 10)
    advance(1.0)
    assert host.read_until(OK) == CSQ + OK
    assert host.at("AT") == OK
    assert busy(caplog) == [dropped(7), dropped(10)]


def test_a_hang_up_while_dropping_reports_once_and_the_next_host_starts_from_zero(
        emulator, open_modem, caplog):
    """The host closes the port behind a slow answer it flooded: the answer is orphaned (not
    written), the drops are reported once when it comes; the next host's pending answer
    counts only its own drops."""
    host, port = slow_csq(emulator, open_modem)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 100))
    first = host.written
    host = reopen(host, emulator, port)
    it = port.modem.interpreter
    assert emulator.run(lambda: (it.mode, len(it._inbox), it._dropped)) == (Mode.PENDING, 0, 100)
    emulator.advance(port, 1.0)
    wait_for(lambda: emulator.run(lambda: it.mode) is Mode.COMMAND, 5, "the orphaned answer")
    assert busy(caplog) == [dropped(100)]
    assert host.quiet_for(0.2) == b""                        # (not for this host)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"y" * (MAX_WAITING_INPUT + 5), received_before=first)
    emulator.advance(port, 1.0)
    assert host.read_until(OK) == CSQ + OK
    assert busy(caplog) == [dropped(100), dropped(5)]


def test_a_control_reboot_while_dropping_reports_once_at_once_and_nothing_stale_after(
        emulator, open_modem, caplog):
    host, port = slow_csq(emulator, open_modem)
    advance = emulator.advancer(port, host)
    it = port.modem.interpreter
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 77))
    assert emulator.control("reboot", ms=0)["ok"]
    assert busy(caplog) == [dropped(77)]                     # the pending answer is gone: now
    assert emulator.run(lambda: (it.mode, it._dropped, len(it._inbox))) == (Mode.COMMAND, 0, 0)
    advance(5.0)                                             # (the start-up URCs)
    host.read_until(b"+QIND: PB DONE\r\n")
    advance(1.0)
    assert host.quiet_for(0.2) == b""                        # (the cancelled answer: never)
    assert host.at("ATE0").endswith(OK)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"y" * (MAX_WAITING_INPUT + 3))
    advance(1.0)
    assert host.read_until(OK) == CSQ + OK
    assert busy(caplog) == [dropped(77), dropped(3)]


def test_a_slow_cfun_1_1_flooded_reports_once_then_restarts(emulator, open_modem, caplog):
    host, port = open_modem("ec2x", manual_time=True)
    assert emulator.control("slow", command="+CFUN", ms=1000)["ok"]
    advance = emulator.advancer(port, host)
    host.write(b"AT+CFUN=1,1\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 9))
    advance(1.0)
    assert host.read_exactly(len(OK)) == OK
    advance(5.0)
    host.read_until(b"+QIND: PB DONE\r\n")
    assert busy(caplog) == [dropped(9)]
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT") == OK
    assert busy(caplog) == [dropped(9)]


def test_a_lingering_qsslclose_flooded_reports_once_with_the_total_when_its_ok_comes(
        emulator, open_modem, pki, caplog):
    """The docs' own case: AT+QSSLCLOSE=0,5 to a server that ignores close_notify lingers 5 s
    (the modem's clock); 1 MiB + 33 behind it: one warning, 33, with its OK."""
    import threading
    from emulator.testing.peers import TlsServer
    from tests.e2e.ssl_options_support import HOST, PORT, open_ssl
    release = threading.Event()
    with TlsServer(pki.server, legacy=True, handler=lambda conn: release.wait(30)) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert open_ssl(host, 0) == 0
        host.write(b"AT+QSSLCLOSE=0,5\r")
        flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT - 13) + b"AT+QSSLSTATE\r" + b"y" * 33)
        advance(4.9)
        assert host.quiet_for(0.1) == b""
        assert busy(caplog) == []
        advance(0.2)
        assert host.read_until(OK + OK) == OK + OK              # its OK, then AT+QSSLSTATE's (none)
        release.set()
    assert host.quiet_for(0.1) == b""
    assert busy(caplog) == [dropped(33)]


def test_ifc_0_2_holds_the_host_back_nothing_dropped_no_warning_every_line_runs(
        emulator, open_modem, caplog):
    """AT+IFC=0,2 (only <DTE_by_DCE>, the CTS direction): the hold path, not the drop path;
    the line at the very end of 1 MiB + 1000 runs after the answer."""
    import threading
    host, port = slow_csq(emulator, open_modem)
    assert host.at("AT+IFC=0,2") == OK
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    blob = b"x" * (MAX_WAITING_INPUT + 1000) + b"ATS12=41\r"
    writer = threading.Thread(target=lambda: (host.ser.write(blob), host.ser.flush()), daemon=True)
    writer.start()
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("pending")), 5, "input held")
    emulator.advance(port, 1.0)
    assert host.read_until(OK) == CSQ + OK
    writer.join(10)
    assert not writer.is_alive()
    assert host.read_until(OK, timeout=10) == OK              # ATS12=41's
    assert host.at("ATS12?") == b"\r\n041\r\n" + OK
    assert busy(caplog) == []


def test_ifc_2_0_is_not_the_hold_direction_input_past_1_mib_is_dropped(emulator, open_modem, caplog):
    host, port = slow_csq(emulator, open_modem)
    assert host.at("AT+IFC=2,0") == OK
    advance = emulator.advancer(port, host)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 11))
    advance(1.0)
    assert host.read_until(OK) == CSQ + OK
    assert host.at("AT") == OK
    assert busy(caplog) == [dropped(11)]


def test_the_first_mib_runs_in_order_after_the_answer_and_the_rest_is_gone(emulator, open_modem, caplog):
    """Behind a slow answer: the first MAX_WAITING_INPUT bytes (lines among filler) run in the
    order written once the answer is out; the excess, lines and all, never runs."""
    host, port = slow_csq(emulator, open_modem)
    advance = emulator.advancer(port, host)
    head = b"ATS12=40\r"
    tail = b"ATS12=41\r" + b"AT+CGMI\r"
    kept = head + b"x" * (MAX_WAITING_INPUT - len(head) - len(tail)) + tail
    assert len(kept) == MAX_WAITING_INPUT
    excess = b"ATS12=42\r" + b"y" * 50 + b"ATS12=43\r"
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, kept + excess)
    advance(1.0)
    assert host.read_until(b"Quectel\r\n" + OK) == CSQ + OK + OK + OK + b"\r\nQuectel\r\n" + OK
    assert host.quiet_for(0.2) == b""
    assert host.at("ATS12?") == b"\r\n041\r\n" + OK
    assert busy(caplog) == [dropped(len(excess))]


def test_a_urc_raised_behind_a_flooded_pending_answer_comes_after_it_before_the_waiting_lines(
        emulator, open_modem, caplog):
    host, port = slow_csq(emulator, open_modem)
    advance = emulator.advancer(port, host)
    host.write(b"AT+CSQ\r")
    kept = b"x" * (MAX_WAITING_INPUT - 8) + b"AT+CGMI\r"
    flood(emulator, port, host, kept + b"AT+CGMI\r")
    assert emulator.control("urc", text=URC)["ok"]
    assert host.quiet_for(0.1) == b""
    advance(1.0)
    assert host.read_until(b"Quectel\r\n" + OK) == CSQ + OK + URC_BYTES + b"\r\nQuectel\r\n" + OK
    assert host.quiet_for(0.2) == b""
    assert busy(caplog) == [dropped(8)]


def _recovered(emulator, open_modem, caplog):
    """An interpreter bug (an illegal transition, made here on purpose) in production (strict
    off) while a flooded slow answer is pending, with AT+CGMI among the kept bytes."""
    caplog.set_level(logging.INFO)
    host, port = slow_csq(emulator, open_modem)
    it = port.modem.interpreter
    it.strict = False
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT - 8) + b"AT+CGMI\r" + b"z" * 21)
    assert emulator.run(lambda: it.mode) is Mode.PENDING
    emulator.run(lambda: it._guarded(it._enter, Event.PROMPT))    # (PROMPT while pending)
    return host, port, it


def test_a_recovery_abandoning_a_flooded_pending_answer_reports_once_and_ignores_the_late_answer(
        emulator, open_modem, caplog):
    host, port, it = _recovered(emulator, open_modem, caplog)
    assert busy(caplog) == [dropped(21)]                          # (at the recovery, once)
    assert emulator.run(lambda: (it.mode, it._dropped)) == (Mode.COMMAND, 0)
    assert host.read_until(b"Quectel\r\n" + OK, timeout=5) == b"\r\nQuectel\r\n" + OK
    emulator.advance(port, 1.0)                                   # (the late answer: ignored)
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == OK
    assert busy(caplog) == [dropped(21)]


# Was a bug, fixed (this review): the recovery went back to command mode but left the input
# that waited behind the abandoned answer in the inbox until the host wrote another byte.
def test_after_a_recovery_the_lines_that_waited_behind_the_answer_run_without_more_input(
        emulator, open_modem, caplog):
    host, port, it = _recovered(emulator, open_modem, caplog)
    assert host.read_until(b"Quectel\r\n" + OK, timeout=2) == b"\r\nQuectel\r\n" + OK


def test_a_recovery_whose_waiting_input_hits_the_bug_again_drops_it_and_the_port_answers(
        emulator, open_modem, caplog):
    """The waiting input run by the recovery meets an interpreter bug again: that input is
    dropped (not re-run line by line, one nested recovery per line), the port answers on."""
    caplog.set_level(logging.INFO)
    host, port = slow_csq(emulator, open_modem)
    it = port.modem.interpreter
    it.strict = False
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"AT+CGMI\r" * 50)
    real_lex = it._lex_some

    def broken() -> None:
        it._lex_some = real_lex              # (once: the nested recovery's own input)
        it._enter(Event.DONE)                # an illegal transition in command mode
    it._lex_some = broken
    emulator.run(lambda: it._guarded(it._enter, Event.PROMPT))
    assert emulator.run(lambda: (it.mode, len(it._inbox), it._recovering)) == (Mode.COMMAND, 0, False)
    assert len([r for r in caplog.records if "interpreter bug" in r.getMessage()]) == 2
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CGMI") == b"\r\nQuectel\r\n" + OK


# Was a bug, fixed (this review; introduced by fba3037, which logs drops once per answer):
# drops behind an answer that never came before the emulator stopped were never logged.
def test_drops_behind_an_answer_that_never_comes_are_logged_when_the_emulator_stops(
        emulator, open_modem, caplog):
    host, port = slow_csq(emulator, open_modem, ms=600_000)
    host.write(b"AT+CSQ\r")
    flood(emulator, port, host, b"x" * (MAX_WAITING_INPUT + 50))
    emulator.stop()
    assert busy(caplog) == [dropped(50)]


# =========================================================================================
# 2. AT+ICF
# =========================================================================================

SYNTAX = [
    # (line, answer, +ICF? after)                       starting from 3,3
    ("AT+ICF= 3 , 1 ", OK, b"3,1"),                     # spaces around the numbers
    ("AT+ICF=03,002", OK, b"3,2"),                       # leading zeros
    ("AT+ICF=3,", OK, b"3,3"),                           # an empty <parity>: kept
    ('AT+ICF="3"', ERROR, b"3,3"),                       # a quoted number
    ('AT+ICF=3,"1"', ERROR, b"3,3"),
    ("AT+ICF=-3", ERROR, b"3,3"),
    ("AT+ICF=3,-1", ERROR, b"3,3"),
    ("AT+ICF=+3", ERROR, b"3,3"),
    ("AT+ICF=3,4294967297", ERROR, b"3,3"),              # (2**32 + 1: no wrap-around to 1)
    ("AT+ICF=99999999999999", ERROR, b"3,3"),
    ("AT+ICF=3.0", ERROR, b"3,3"),
    ("AT+ICF=3,0x1", ERROR, b"3,3"),
    ("AT+ICF=3 1", ERROR, b"3,3"),
    ("AT+ICF=", ERROR, b"3,3"),
    ("AT+ICF=,", ERROR, b"3,3"),
    ("AT+ICF=3,,", ERROR, b"3,3"),
    ("AT+ICF=3,1,", ERROR, b"3,3"),
    ("AT+ICF=0", ERROR, b"3,3"),
    ("AT+ICF=6,0", ERROR, b"3,3"),
    ("at+icf=3,0", OK, b"3,0"),
]


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_icf_write_syntax_oddities(open_modem, profile):
    host, _ = open_modem(profile)
    for line, answer, after in SYNTAX:
        assert host.at("AT+ICF=3,3") == OK
        assert host.at(line) == answer, line
        assert host.at("AT+ICF?") == b"\r\n+ICF: " + after + b"\r\n" + OK, line


def test_icf_in_one_line_with_its_neighbours(open_modem):
    host, _ = open_modem("ml302")
    assert host.at("AT+ICF?;+ICF=3,1;+ICF?") == b"\r\n+ICF: 3,3\r\n\r\n+ICF: 3,1\r\n" + OK
    assert host.at("AT+ICF=?;+IFC=?;+ICF?") == (
        b"\r\n+ICF: (3),(0-3)\r\n\r\n+IFC: (0,2),(0,2)\r\n\r\n+ICF: 3,1\r\n" + OK)
    # an ERROR ends the line: what came before it stays, what follows never runs
    assert host.at("AT+ICF=3,0;+ICF=5;+ICF=3,2") == ERROR
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK
    assert host.at("AT+ICF=3,2;+IFC=2,2;+ICF?;+IFC?") == b"\r\n+ICF: 3,2\r\n\r\n+IFC: 2,2\r\n" + OK


def test_icf_answers_are_framed_like_ifcs_under_atv0_atq1_and_cmee_2(emulator, open_modem):
    host, _ = open_modem("ec2x")

    def raw(line: bytes) -> bytes:
        host.write(line + b"\r")
        return host.quiet_for(0.15)
    assert raw(b"AT+CMEE=2") == OK
    assert raw(b"AT+ICF=5") == raw(b"AT+IFC=1") == ERROR        # (a plain ERROR, as AT+IFC/IPR)
    assert raw(b"AT+IPR=5") == ERROR
    assert raw(b"ATV0") == b"0\r"
    assert raw(b"AT+ICF?") == b"+ICF: 3,3\r\n0\r"
    assert raw(b"AT+IFC?") == b"+IFC: 0,0\r\n0\r"
    assert raw(b"AT+ICF=?") == b"+ICF: (3),(0-3)\r\n0\r"
    assert raw(b"AT+ICF=7") == raw(b"AT+IFC=1") == b"4\r"
    assert raw(b"ATQ1") == b""
    assert raw(b"AT+ICF=3,1;+ICF?") == b"+ICF: 3,1\r\n"
    assert raw(b"AT+ICF=5") == b""
    assert raw(b"ATQ0V1") == OK
    assert raw(b"AT+ICF?") == b"\r\n+ICF: 3,1\r\n" + OK


def test_icf_atw_atz_atf_in_chains_restarts_and_a_new_modem_on_the_saved_dir(
        emulator, open_modem, tmp_path):
    state = tmp_path / "icf-state"
    host, port = open_modem("ec2x", manual_time=True, state_dir=state)
    advance = emulator.advancer(port, host)
    assert host.at("AT+ICF=3,0;&W;+ICF=3,1;Z;+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK
    assert json.loads((state / "settings.json").read_text())["icf"] == [3, 0]
    assert host.at("AT+ICF=3,2") == OK                          # (not saved)
    assert emulator.control("reboot", ms=0)["ok"]
    advance(5.0)
    host.read_until(b"+QIND: PB DONE\r\n")
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK      # the saved set after a restart
    assert host.at("AT&F;+ICF?") == b"\r\n+ICF: 3,3\r\n" + OK
    assert host.at("ATE0").endswith(OK)
    assert host.at("ATZ;+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK
    assert host.at("AT+ICF=3,1;&W") == OK
    host2, _ = open_modem("ec2x", state_dir=state)              # (the next run of the emulator)
    assert host2.at("AT+ICF?") == b"\r\n+ICF: 3,1\r\n" + OK


GOOD = {"echo": False, "verbose": True, "quiet": False, "cmee": 2, "ipr": 9600, "ifc": [2, 2],
        "dcd": 0, "dtr": 1,
        "sreg": {"0": 0, "3": 13, "4": 10, "5": 8, "6": 2, "7": 60, "8": 2, "10": 15, "12": 50}}


HAND_EDITED = [   # (the "icf" value, +ICF? after; None: a warning and the factory 3,3)
    (..., b"3,3"), ([3, 0], b"3,0"), ([3, 3], b"3,3"),
    (True, None), (False, None), (None, None), (3, None), ("3,1", None), ([3.0, 1], None),
    ([3, 1.0], None), ([3, 1.5], None), ([[3], 1], None), ([3, [1]], None), (["3", "1"], None),
    ([3, True], None), ([True, 1], None), ([3, 4], None), ([3, -1], None), ([1, 0], None),
    ({"format": 3, "parity": 1}, None), ([], None), ([3, 2 ** 64 + 1], None),
]


def test_icf_from_hand_edited_settings_json(open_modem, tmp_path, caplog):
    """Each value in a file whose other keys are good: a good one is taken, a missing one
    quietly gives 3,3 (an older AT&W's file), anything else one warning naming icf and 3,3
    -- the other keys kept (echo off, CMEE 2, IFC 2,2)."""
    caplog.set_level(logging.WARNING)
    for n, (value, icf) in enumerate(HAND_EDITED):
        state = tmp_path / f"edited-{n}"
        state.mkdir()
        data = dict(GOOD) if value is ... else {**GOOD, "icf": value}
        (state / "settings.json").write_text(json.dumps(data))
        caplog.clear()
        host, _ = open_modem("ec2x", echo=True, state_dir=state)
        warned = [r.getMessage() for r in caplog.records if "saved settings" in r.getMessage()]
        assert host.at("AT+ICF?;+CMEE?;+IFC?") == (
            b"\r\n+ICF: " + (icf or b"3,3") + b"\r\n\r\n+CMEE: 2\r\n\r\n+IFC: 2,2\r\n" + OK), value
        if icf is not None:
            assert warned == [], value
        else:
            assert len(warned) == 1 and "key icf:" in warned[0] and "using the default (3, 3)" in warned[0], (
                value, warned)
        host.close()


# =========================================================================================
# 3. a URC while the host types a line
# =========================================================================================

def test_a_urc_while_typing_with_echo_off_comes_at_once_and_the_line_runs(emulator, open_modem):
    host, port = open_modem("ec2x")
    host.write(b"AT+CS")
    emulator.wait_received(port, host.written)
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(b"Q\r")
    assert host.read_until(OK) == CSQ + OK
    assert host.quiet_for(0.1) == b""


@pytest.mark.parametrize("s5", [8, 35])
def test_a_urc_then_s5_editing_of_the_typed_line(emulator, open_modem, s5):
    host, port = open_modem("ec2x", echo=True)
    if s5 != 8:
        assert host.at(b"ATS5=%d" % s5) == b"ATS5=%d\r" % s5 + OK
    bs = bytes([s5])
    host.write(b"AT+CSX")
    assert host.read_exactly(6) == b"AT+CSX"
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(bs + b"Q\r")
    assert host.read_until(OK) == bs + b"Q\r" + CSQ + OK
    host.write(b"A")                                          # (the prefix split by a URC)
    assert host.read_exactly(1) == b"A"
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(b"T+CSQ\r")
    assert host.read_until(OK) == b"T+CSQ\r" + CSQ + OK
    host.write(b"AT+CSQ")                                     # (S5 up to the prefix's T, a URC)
    assert host.read_exactly(6) == b"AT+CSQ"
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(bs * 5 + b"T+CGMI\r")                          # (the fifth deletes the T)
    assert host.read_until(OK) == bs * 5 + b"T+CGMI\r" + b"\r\nQuectel\r\n" + OK


def test_a_urc_between_a_lines_cr_and_its_lf_and_after_a_too_long_line(emulator, open_modem):
    host, port = open_modem("ec2x", echo=True)
    host.write(b"AT\r")
    assert host.read_until(OK) == b"AT\r" + OK
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(b"\nAT+CSQ\r\n")                                # (the LF: the last line's, unechoed)
    assert host.read_until(OK) == b"AT+CSQ\r" + CSQ + OK
    host.write(b"AT" + b"9" * 2100)                            # (past the line limit, no CR yet)
    assert host.read_exactly(2102) == b"AT" + b"9" * 2100
    assert emulator.control("urc", text=URC)["ok"]
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    host.write(b"\r")
    assert host.read_until(ERROR) == b"\r" + ERROR


def test_a_urc_while_typing_with_a_custom_s3_and_under_atv0(emulator, open_modem):
    """Framed with the S3/S4 in force (ATS3=64: '@'), under ATV0 as other URCs; the typed
    line still ends at the new S3 and runs."""
    host, port = open_modem("ec2x", echo=True)

    def urc_now() -> bytes:
        assert emulator.control("urc", text=URC)["ok"]
        return host.quiet_for(0.15)
    host.write(b"ATS3=64\r")
    assert host.read_until(b"OK@\n") == b"ATS3=64\r@\nOK@\n"
    host.write(b"AT+CS")
    assert host.read_exactly(5) == b"AT+CS"
    assert urc_now() == b'@\n+QIURC: "x"@\n'
    host.write(b"Q@")
    assert host.read_until(b"OK@\n") == b"Q@@\n+CSQ: 24,99@\n@\nOK@\n"
    host.write(b"ATS3=13;V0@")
    assert host.read_until(b"0\r") == b"ATS3=13;V0@0\r"
    host.write(b"AT+CS")
    assert host.read_exactly(5) == b"AT+CS"
    assert urc_now() == b'+QIURC: "x"\r\n'
    host.write(b"Q\r")
    assert host.read_until(b"0\r") == b"Q\r+CSQ: 24,99\r\n0\r"


def test_a_urc_raised_as_the_line_runs_or_while_it_is_pending(
        emulator, open_modem):
    host, port = open_modem("ec2x", manual_time=True)
    modem = port.modem

    def on_command(name, **_):
        if name == "+CGMI":
            modem.urc(URC)
    emulator.run(lambda: modem.on("command", on_command))
    # (raised as the line's first command is dispatched, its answer not begun: before it,
    # as docs/behaviour.md's scenario triggers say; in a ';' chain's later command: after)
    assert host.at("AT+CGMI") == URC_BYTES + b"\r\nQuectel\r\n" + OK
    assert host.at("AT+CGMR;+CGMI") == b"\r\nEC25EFAR06A06M4G\r\n\r\nQuectel\r\n" + OK
    assert host.read_exactly(len(URC_BYTES)) == URC_BYTES
    assert emulator.control("slow", command="+CSQ", ms=1000)["ok"]
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    assert emulator.control("urc", text=URC)["ok"]
    assert host.quiet_for(0.1) == b""
    emulator.advance(port, 1.0)
    assert host.read_until(URC_BYTES) == CSQ + OK + URC_BYTES
    assert host.quiet_for(0.1) == b""
