"""Tests from a fifth manual mutation-testing pass, over the port's data phases and the "+++"
escape: emulator/at/data_phase.py, emulator/at/escape.py and the parts of
emulator/at/interpreter.py that drive them (the prompt's idle timer, the escape timers of
AT+QFUPL and of online data mode, the escape that is overdue when the host's next bytes
are read).  The second pass (tests/unit/test_mutation_survivors_2.py) pinned the sans-IO
pieces; each test here pins a behaviour that a small change (the mutant named in its
docstring) left every unit test and the send / files / secstore / transparent-mode e2e tests
passing on.  The expected values come from docs/behaviour.md ("Files (EC2x, AT+QFUPL & co.)",
"Transparent access mode"), not from the emulator's current output.  Sans-IO: a Modem with
no pty, on manual time (test_mutation_survivors_3's Bench for the online link)."""
from __future__ import annotations

import pytest

from emulator.at.data_phase import DataPhase
from emulator.at.mode import Mode
from emulator.at.responses import DataRequest, ok
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.storage.checksum import xor16
from tests.unit.test_mutation_survivors_3 import Bench, online_socket


@pytest.fixture
def modem():
    """An EC2x Modem with no port (ATE0 sent), on manual time; .run(bytes) feeds them and
    returns the output since the last call."""
    out = bytearray()
    m = Modem(load_profile("ec2x"))
    m.interpreter.strict = True
    m.attach(out.extend)

    def run(data: bytes = b"") -> bytes:
        if data:
            m.feed(data)
        written = bytes(out)
        out.clear()
        return written
    m.run = run
    assert run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    return m


def timers_run_early(modem, by: float = 0.005) -> None:
    """The modem's timers fire `by` seconds before their time, as asyncio runs a callback
    whose time is within its clock resolution of now: a timer of more than 10 ms runs early
    (a short one -- a re-check -- on time)."""
    timers = modem.timers
    call_later = timers.call_later
    timers.call_later = lambda delay, callback, *args: call_later(
        delay - by if delay > 2 * by else delay, callback, *args)


# -- the data phase (sans-IO) -------------------------------------------------------------------
def test_the_esc_that_cancels_a_prompt_is_not_echoed():
    """Mutant: data_phase.take echoing the ESC that ends a variable-length prompt.
    docs/behaviour.md: in a `> ` data prompt the data are echoed (ATE1), "not the Ctrl+Z or
    ESC that ends the prompt"."""
    phase = DataPhase(DataRequest(lambda data, reason: ok(), max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"ab\x1bAT\r")
    assert phase.take(inbox, echo=True) == (b"ab", "cancel")
    assert bytes(inbox) == b"AT\r"


# -- AT+QFUPL's "+++" ----------------------------------------------------------------------------
def test_an_overdue_escape_right_after_connect_is_an_empty_file_not_421(modem):
    """Mutant: interpreter._feed_data ending the upload whose "+++" guard time passed before
    the host's next bytes were read with reason "timeout" instead of "escape" (an upload
    that had data before the "+++" answers the same either way).  docs/behaviour.md: "+++"
    with the guard times ends AT+QFUPL, `+QFUPL: 0,0` and an empty file when nothing came
    first; the escape came first although its timer had not run, and the line that follows
    is a command."""
    assert modem.run(b'AT+QFUPL="RAM:e",100,5\r') == b"\r\nCONNECT\r\n"
    modem.timers.advance(1.1)                              # silence since CONNECT
    assert modem.run(b"+++") == b""
    modem.timers._now += 1.1                               # the escape timer has not run yet
    assert modem.run(b"AT\r") == b"\r\n+QFUPL: 0,0\r\n\r\nOK\r\n\r\nOK\r\n"
    assert modem.files.read("RAM:e") == b"" and modem.interpreter.mode is Mode.COMMAND
    assert modem.timers.advance(10) == 0                   # no timer left behind


def test_an_upload_escape_whose_timer_runs_a_hair_early_still_escapes(modem):
    """Mutant: interpreter._data_escape_due not arming the escape timer again when it ran
    before the guard time after "+++" had passed (the "+++" then stays data, and the upload
    ends only at its idle timeout with "+++" in the file).  A timer may run a little before
    its time (asyncio runs callbacks due within its clock resolution); the escape must still
    end the upload once the guard time has passed: `+QFUPL: 3,<checksum>`, the file "abc"."""
    timers_run_early(modem)
    assert modem.run(b'AT+QFUPL="RAM:h",100,5\r') == b"\r\nCONNECT\r\n"
    modem.run(b"abc")
    modem.timers.advance(1.1)
    assert modem.run(b"+++") == b""
    modem.timers.advance(1.0)
    assert modem.run() == f"\r\n+QFUPL: 3,{xor16(b'abc'):x}\r\n\r\nOK\r\n".encode()
    assert modem.files.read("RAM:h") == b"abc" and modem.interpreter.mode is Mode.COMMAND


# -- online data mode's "+++" --------------------------------------------------------------------
def test_an_online_escape_whose_timer_runs_a_hair_early_still_escapes():
    """Mutant: interpreter._escape_due not arming the escape timer again when it ran before
    the guard time after "+++" had passed (the escape is then lost: the port stays online
    and the next byte makes "+++" data).  docs/behaviour.md: "+++" with the guard time of
    silence after it -> OK, the connection stays open, nothing of the "+++" is sent."""
    bench = Bench()
    timers_run_early(bench.modem)
    sock = online_socket(bench)
    bench.modem.timers.advance(1.1)
    bench.modem.feed(b"+++")
    bench.modem.timers.advance(1.0)
    assert bench.run() == b"\r\nOK\r\n"
    assert bench.modem.interpreter.mode is Mode.COMMAND and sock.sent == []
    assert bench.run(b"AT\r") == b"\r\nOK\r\n"


def test_plus_plus_plus_within_the_guard_time_after_connect_is_upload_data(modem):
    """Mutant: interpreter._start_data starting the upload's escape detector with the silence
    counted from long before the prompt (`now` 0.0 instead of the modem's clock).  The host's
    last byte before the data was its command line, answered at once by CONNECT: "+++" 0.5 s
    after CONNECT has no guard time of silence before it, so it is data (docs/behaviour.md: a
    `+++` without the guard times is data) -- also when the guard time after it passes."""
    assert modem.run(b'AT+QFUPL="RAM:p",10,5\r') == b"\r\nCONNECT\r\n"
    modem.timers.advance(0.5)
    assert modem.run(b"+++") == b""
    modem.timers.advance(1.5)
    assert modem.run() == b"" and modem.interpreter.mode is Mode.DATA
    assert modem.run(b"abcdefg") == f"\r\n+QFUPL: 10,{xor16(b'+++abcdefg'):x}\r\n\r\nOK\r\n".encode()
    assert modem.files.read("RAM:p") == b"+++abcdefg"


def test_plus_plus_plus_within_the_guard_time_after_connect_is_online_data():
    """Mutant: interpreter._go_online starting the escape detector with the silence counted
    from long before CONNECT (`now` 0.0 instead of the modem's clock).  AT+QISWTMD=1,2 answers
    CONNECT at once; "+++" 0.5 s later has no guard time of silence before it: it is data,
    sent into the connection, and the port stays online (docs/behaviour.md, Transparent
    access mode: "+++" inside data is data)."""
    bench = Bench()
    sock = online_socket(bench)
    bench.modem.timers.advance(0.5)
    bench.modem.feed(b"+++")
    bench.modem.timers.advance(1.5)
    assert bench.run() == b""
    assert bench.modem.interpreter.mode is Mode.ONLINE and b"".join(sock.sent) == b"+++"


def test_bytes_read_exactly_the_guard_time_after_plus_plus_plus_come_after_the_escape():
    """Mutant: interpreter._escape_overdue asking for more than the guard time of silence
    after "+++" (`>=` -> `>`).  docs/behaviour.md: "at least the guard time of silence after
    it"; bytes read once it has passed, before the escape timer ran (a busy loop), come
    after the escape: its OK, then they are a command.  Exactly the guard time is enough:
    the "+++" is not sent and "AT" is answered."""
    bench = Bench()
    sock = online_socket(bench)
    bench.modem.timers.advance(1.1)
    bench.modem.feed(b"+++")
    bench.modem.timers._now += 1.0                       # exactly S12, the timer not run yet
    assert bench.run(b"AT\r") == b"\r\nOK\r\n\r\nOK\r\n"
    assert sock.sent == [] and bench.modem.interpreter.mode is Mode.COMMAND


def test_a_urc_held_during_an_upload_goes_out_right_after_its_answer(modem):
    """Mutant: interpreter._finish_data not writing what waited (`_write_after()` deleted:
    the URCs held while the port was in the data phase then wait for the next command's
    answer).  A URC raised during AT+QFUPL's data is written right after the upload's
    `+QFUPL: ...` OK -- before the answer of the command the host wrote with the data's last
    bytes (docs/behaviour.md: "URCs raised during a data prompt wait until it ends")."""
    assert modem.run(b'AT+QFUPL="RAM:u",4,5\r') == b"\r\nCONNECT\r\n"
    assert modem.run(b"ab") == b""
    modem.interpreter.urc('+QIURC: "pdpdeact",1')
    assert modem.run() == b""                                  # held: the port is in data mode
    assert modem.run(b"cdAT\r") == (f"\r\n+QFUPL: 4,{xor16(b'abcd'):x}\r\n\r\nOK\r\n"
                                    '\r\n+QIURC: "pdpdeact",1\r\n\r\nOK\r\n').encode()


def test_a_hang_up_during_an_upload_stores_nothing_and_its_timer_stays_quiet(modem):
    """Mutant: interpreter._hangup not abandoning the data phase (the port goes to command
    mode, but the upload's idle timer still runs: when it fires the half-sent bytes are
    stored and `+QFUPL: ...` goes to the next host).  docs/behaviour.md: the host closing the
    device abandons a half-entered data prompt -- nothing stored -- and the next host meets
    command state, with no answer it never asked for."""
    assert modem.run(b'AT+QFUPL="RAM:g",100,2\r') == b"\r\nCONNECT\r\n"
    assert modem.run(b"ab") == b""
    modem.host_hangup()
    assert modem.run(b"AT\r") == b"\r\nOK\r\n"
    modem.timers.advance(5)
    assert modem.run() == b""
    assert modem.run(b'AT+QFLST="RAM:*"\r') == b"\r\nOK\r\n"      # no file
