"""Sans-IO tests of the AT lexer, parser and interpreter: no pty, no loop."""
from __future__ import annotations

import random

import pytest

from emulator.at.lexer import CommandLine, CommandLineLexer, Echo, LineTooLong, RepeatLast
from emulator.at.parser import EXEC, READ, TEST, WRITE, Arg, Malformed, parse_line
from emulator.modem.modem import Modem
from emulator.modem.profile import ProfileError, load_profile


def lines(events):
    return [e for e in events if not isinstance(e, Echo)]


class TestLexer:
    def test_prefix_terminator_and_lf(self):
        lx = CommandLineLexer()
        assert lines(lx.feed(b"AT+CSQ\r\nat\r\n")) == [CommandLine(b"+CSQ"), CommandLine(b"")]

    def test_backspace_edits_line(self):
        lx = CommandLineLexer()
        assert lines(lx.feed(b"AT+CSX\x08Q\r")) == [CommandLine(b"+CSQ")]

    def test_text_before_prefix_ignored(self):
        lx = CommandLineLexer()
        assert lines(lx.feed(b"hello\rxxAT\r")) == [CommandLine(b"")]

    def test_custom_s3(self):
        lx = CommandLineLexer()
        lx.s3 = ord("!")
        assert lines(lx.feed(b"ATE0!")) == [CommandLine(b"E0")]

    @pytest.mark.parametrize("s3", [ord("A"), ord("a"), ord("T"), ord("t")])
    def test_s3_set_to_a_prefix_letter_still_takes_a_line(self, s3):
        """ATS3=65 (or 84): the prefix comes first -- an 'A' between lines starts one and
        its 'T' goes on -- so a line ended by the new S3 can set it back (was: deaf)."""
        lx = CommandLineLexer()
        lx.s3 = s3
        end = bytes([s3])
        assert lines(lx.feed(b"ATS3=13" + end)) == [CommandLine(b"S3=13")]
        assert lines(lx.feed(b"zzat+csq" + end)) == [CommandLine(b"+csq")]
        assert lines(lx.feed(b"AAT" + end)) == [CommandLine(b"")]

    @pytest.mark.parametrize("s5", [ord("A"), ord("T")])
    def test_s5_set_to_a_prefix_letter_still_takes_a_line(self, s5):
        """ATS5=65: 'A' between lines starts one; inside the line it rubs out."""
        lx = CommandLineLexer()
        lx.s5 = s5
        assert lines(lx.feed(b"ATS5=8\r")) == [CommandLine(b"S5=8")]
        assert lines(lx.feed(b"ATE0x" + bytes([s5]) + b"\r")) == [CommandLine(b"E0")]

    def test_repeat(self):
        lx = CommandLineLexer()
        assert lines(lx.feed(b"a/")) == [RepeatLast()]

    def test_echo_is_every_byte(self):
        lx = CommandLineLexer()
        data = b"zzAT+CSQ\r"
        assert b"".join(e.data for e in lx.feed(data) if isinstance(e, Echo)) == data
        lx.echo = False
        assert not [e for e in lx.feed(data) if isinstance(e, Echo)]

    def test_overlong_line_reported_at_terminator_then_recovers(self):
        lx = CommandLineLexer(max_line=16)
        assert lines(lx.feed(b"AT" + b"X" * 40)) == []
        assert lines(lx.feed(b"\r")) == [LineTooLong()]
        assert lines(lx.feed(b"AT\r")) == [CommandLine(b"")]

    def test_any_bytes_never_raise(self):
        rnd = random.Random(7)
        lx = CommandLineLexer(max_line=64)
        for _ in range(2000):
            lx.feed(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40))))


class TestParser:
    def test_forms(self):
        assert [(c.name, c.kind) for c in parse_line(b"+X=?;+X?;+X=1;+X")] == [
            ("+X", TEST), ("+X", READ), ("+X", WRITE), ("+X", EXEC)]

    def test_quoted_strings_are_data(self):
        (cmd,) = parse_line(b'+QSSLCFG="alpn",1,"a;b,c"')
        assert cmd.args == (Arg("alpn", True), Arg("1"), Arg("a;b,c", True))

    def test_omitted_parameters(self):
        (cmd,) = parse_line(b"+X=1,,3,")
        assert cmd.args == (Arg("1"), None, Arg("3"), None)

    def test_basic_commands_chain(self):
        assert [(c.name, c.args) for c in parse_line(b"E0V1&FS3?")] == [
            ("E", (Arg("0"),)), ("V", (Arg("1"),)), ("&F", ()), ("S3", ())]

    @pytest.mark.parametrize("body", [b'+X="open', b'+X="a"b', b"+X?junk", b"\xff", b"+"])
    def test_malformed(self, body):
        assert isinstance(parse_line(body)[-1], Malformed)

    def test_random_bytes_never_raise(self):
        rnd = random.Random(11)
        for _ in range(3000):
            parse_line(bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 60))))


@pytest.fixture
def modem():
    out = bytearray()
    m = Modem(load_profile("ec2x"))
    m.interpreter.strict = True          # an illegal mode transition raises here
    m.attach(out.extend)
    m.out = out

    def run(data: bytes) -> bytes:
        out.clear()
        m.feed(data)
        return bytes(out)
    m.run = run
    return m


class TestInterpreter:
    def test_ok_framing_and_echo(self, modem):
        assert modem.run(b"AT\r") == b"AT\r\r\nOK\r\n"
        assert modem.run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
        assert modem.run(b"AT\r") == b"\r\nOK\r\n"

    def test_numeric_and_quiet(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"ATV0\r") == b"0\r"
        assert modem.run(b"AT+NOPE\r") == b"4\r"
        assert modem.run(b"AT+CSQ\r") == b"+CSQ: 24,99\r\n0\r"
        assert modem.run(b"ATV1Q1\r") == b""
        assert modem.run(b"AT+CSQ\r") == b"\r\n+CSQ: 24,99\r\n"
        assert modem.run(b"ATQ0\r") == b"\r\nOK\r\n"

    def test_cmee_modes(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+CMEE=0;+CFUN=3\r") == b"\r\nERROR\r\n"
        assert modem.run(b"AT+CMEE=1;+CFUN=3\r") == b"\r\n+CME ERROR: 50\r\n"
        assert modem.run(b"AT+CMEE=2;+CFUN=3\r") == b"\r\n+CME ERROR: incorrect parameters\r\n"

    def test_concatenation_stops_at_first_error(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+CSQ;+NOPE;+CGMI\r") == b"\r\n+CSQ: 24,99\r\n\r\nERROR\r\n"
        assert modem.run(b"AT+CMEE=2;+CSQ\r") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"

    def test_repeat_last_line(self, modem):
        modem.run(b"ATE0\r")
        first = modem.run(b"AT+CGMM\r")
        assert modem.run(b"A/") == first == b"\r\nEC25\r\n\r\nOK\r\n"

    def test_overlong_line(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"AT" + b"A" * 3000 + b"\r") == b"\r\nERROR\r\n"
        assert modem.run(b"AT\r") == b"\r\nOK\r\n"

    def test_s_registers(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"ATS3?\r") == b"\r\n013\r\n\r\nOK\r\n"
        assert modem.run(b"ATS5=127\r") == b"\r\nOK\r\n"
        assert modem.run(b"ATS5?\r") == b"\r\n127\r\n\r\nOK\r\n"
        assert modem.run(b"ATS3=200\r") == b"\r\nERROR\r\n"
        assert modem.run(b"ATS99?\r") == b"\r\nERROR\r\n"

    def test_factory_and_saved_settings(self, modem):
        modem.run(b"ATE0V0\r")
        assert modem.run(b"AT&F\r") == b"\r\nOK\r\n"          # V1 is back at once
        assert modem.run(b"AT\r") == b"AT\r\r\nOK\r\n"       # so is echo
        modem.run(b"ATE0\r")
        modem.run(b"AT&W\r")
        modem.run(b"ATE1\r")
        assert modem.run(b"ATZ\r") == b"ATZ\r\r\nOK\r\n"       # echoed before Z took effect
        assert modem.run(b"AT\r") == b"\r\nOK\r\n"

    def test_command_of_other_profile_is_error(self, modem):
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+QSECREAD=0\r") == b"\r\nERROR\r\n"
        assert modem.run(b"AT+CCID\r") == b"\r\nERROR\r\n"

    def test_random_input_never_raises_and_recovers(self, modem):
        rnd = random.Random(3)
        for _ in range(500):
            modem.feed(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200))))
        modem.run(b"\x1b\r\r")
        modem.settings.echo = False
        modem.settings.verbose = True
        modem.settings.quiet = False
        modem.settings.sreg[3] = 13
        assert modem.run(b"AT\r").endswith(b"OK\r\n")


# Test forms ("AT+X=?") of the basic, general and PDP commands, as declared with their
# command (@command(..., test=...)); a command without one answers a bare OK.
TEST_FORMS = {
    "ec2x": {
        "+CMEE": "+CMEE: (0-2)", "+CSQ": "+CSQ: (0-31,99),(0-7,99)", "+CREG": "+CREG: (0-2)",
        "+CGREG": "+CGREG: (0-2)", "+CEREG": "+CEREG: (0-2)", "+CFUN": "+CFUN: (0,1,4),(0-1)",
        "+COPS": '+COPS: (2,"CHN-UNICOM","CHN-UNICOM","46001",7),,(0-4),(0-2)',
        "+IPR": "+IPR: (0,4800,9600,19200,38400,57600,115200,230400,460800,921600,3000000),(0)",
        "+IFC": "+IFC: (0,2),(0,2)", "+CCLK": None, "+CGMI": None, "S3": "(0-127)",
        "S5": "(0-127)", "+QICSGP": "+QICSGP: (1-16),(1-3),<APN>,<username>,<password>,(0-3)",
        "+QIACT": "+QIACT: (1-16)", "+QIDEACT": "+QIDEACT: (1-16)",
        "+CGATT": "+CGATT: (0,1)", "+CGACT": "+CGACT: (0,1)",
        "+QIDNSGIP": "+QIDNSGIP: (1-16),<hostname>", "+QPING": "+QPING: (1-16),<host>,(1-255),(1-10)",
        "+QNTP": "+QNTP: (1-16),<server>,(1-65535),(0,1)",
    },
    "ml302": {
        "+COPS": '+COPS: (2,"CHINA MOBILE","CHINA MOBILE","46004",7),,(0-4),(0-2)',
        "+IPR": "+IPR: (0,9600,19200,38400,57600,115200,230400,460800,921600),(0)",
        "+CGDCONT": '+CGDCONT: (1-7),("IP","IPV6","IPV4V6"),,,(0-2),(0-4)',
        "+CGACT": "+CGACT: (0,1)", "+CCID": None,
    },
}


@pytest.mark.parametrize("profile,name,line", [(p, n, line) for p, forms in TEST_FORMS.items()
                                                for n, line in forms.items()])
def test_declared_test_forms(profile, name, line):
    m = Modem(load_profile(profile))
    out = bytearray()
    m.attach(out.extend)
    m.feed(b"ATE0\r")
    out.clear()
    m.feed(f"AT{name}=?\r".encode())
    assert bytes(out) == (f"\r\n{line}\r\n\r\nOK\r\n" if line else "\r\nOK\r\n").encode()
    if name == "S3":
        out.clear()
        m.feed(b"ATS99=?\r")                   # not a register of the module
        assert bytes(out) == b"\r\nERROR\r\n"


# -- the port's mode (emulator/at/mode.py) and its "port_idle" event ------------------
from emulator.at import framing                                      # noqa: E402
from emulator.at.mode import TRANSITIONS, Event, IllegalTransition, Mode, next_mode  # noqa: E402
from emulator.at.registry import TABLE, Entry                        # noqa: E402
from emulator.at.responses import (CONNECT, Cme, DataRequest, Prompt, Raw,  # noqa: E402
                                   Response, Text, ok)
from emulator.modem.settings import Settings                         # noqa: E402
from emulator.storage.checksum import xor16                          # noqa: E402
from emulator.storage.secstore import SecStoreError                  # noqa: E402
from emulator.storage.vfs import FileError                           # noqa: E402


def idle_events(modem) -> list[bytes]:
    """Each "port_idle" the modem emits, as the output written before it."""
    seen: list[bytes] = []
    modem.on("port_idle", lambda: seen.append(bytes(modem.out)))
    return seen


def handler_for(monkeypatch, name: str, kind: str, func) -> None:
    """Answer `name` (a command both profiles have) with `func` for this test."""
    lookup = TABLE.lookup

    def patched(n, k, variant):
        return Entry(n, k, variant, func) if (n, k) == (name, kind) else lookup(n, k, variant)
    monkeypatch.setattr(TABLE, "lookup", patched)


class TestModes:
    def test_the_table(self):
        assert set(TRANSITIONS) == set(Mode)
        for mode in Mode:                     # the host may close the port in any mode
            assert Event.HANGUP in TRANSITIONS[mode]
            assert next_mode(mode, Event.RESET) is Mode.COMMAND      # a restart ends them all
        assert next_mode(Mode.COMMAND, Event.PROMPT) is Mode.DATA
        assert next_mode(Mode.DATA, Event.DONE) is Mode.COMMAND
        assert next_mode(Mode.PENDING, Event.HANGUP) is Mode.PENDING   # the answer still comes
        reach_online = [(m, e) for m, t in TRANSITIONS.items() for e, n in t.items() if n is Mode.ONLINE]
        assert reach_online == [(Mode.COMMAND, Event.ONLINE)]
        with pytest.raises(IllegalTransition):
            next_mode(Mode.COMMAND, Event.DONE)
        with pytest.raises(IllegalTransition):
            next_mode(Mode.DATA, Event.PROMPT)          # a chained prompt goes through COMMAND

    def test_port_idle_once_per_return_to_idle_not_per_byte(self, modem):
        seen = idle_events(modem)
        modem.run(b"ATE0\r")
        assert seen == [b"ATE0\r\r\nOK\r\n"]              # after the answer is out
        for b in b"AT+CSQ":
            modem.run(bytes([b]))
        assert len(seen) == 1                             # half a line: still idle
        modem.run(b"\r")
        assert seen[-1] == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n" and len(seen) == 2
        modem.run(b"AT+NOPE\r")                           # no handler ran: never left idle
        assert len(seen) == 2
        modem.run(b"AT+CSQ;+CSQ;+CGMM\r")                 # one line, one return
        assert len(seen) == 3

    def test_data_prompt_then_idle_with_queued_urcs_first(self, modem):
        seen = idle_events(modem)
        modem.run(b"ATE0\r")
        assert modem.run(b'AT+QFUPL="RAM:a",3\r') == b"\r\nCONNECT\r\n"
        assert modem.interpreter.mode is Mode.DATA and not modem.interpreter.idle
        modem.urc("+URC: 1")                              # waits for the data phase to end
        assert modem.run(b"ab") == b"" and len(seen) == 1
        assert modem.run(b"c") == (f"\r\n+QFUPL: 3,{xor16(b'abc'):x}\r\n\r\nOK\r\n"
                                   "\r\n+URC: 1\r\n").encode()
        assert modem.interpreter.mode is Mode.COMMAND and len(seen) == 2
        assert seen[-1].endswith(b"\r\n+URC: 1\r\n")      # the queue is written, then the event
        modem.urc("+URC: 2")                              # idle: at once
        assert modem.out.endswith(b"\r\n+URC: 2\r\n")

    def test_hangup_in_a_data_prompt_is_idle_again(self, modem):
        seen = idle_events(modem)
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:h",10\r')
        modem.run(b"abc")
        modem.interpreter.hangup()
        assert modem.interpreter.mode is Mode.COMMAND and len(seen) == 2
        assert modem.run(b"AT+QFLST=\"RAM:*\"\r") == b"\r\nOK\r\n"   # nothing stored

    def test_pending_answer(self, modem, monkeypatch):
        spawned = []
        monkeypatch.setattr(modem, "spawn", lambda awaitable, done: spawned.append((awaitable, done)))

        async def later():
            return ok("+CSQ: later")
        handler_for(monkeypatch, "+CSQ", "exec", lambda m, cmd: Response([], None, pending=later()))
        seen = idle_events(modem)
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+CSQ;+CGMM\r") == b""
        assert modem.interpreter.mode is Mode.PENDING
        modem.urc("+URC: queued")
        assert modem.run(b"AT+CGMI\r") == b""             # input waits in the inbox
        awaitable, done = spawned.pop()
        awaitable.close()
        done(lambda: ok("+CSQ: later"))
        assert modem.out == (b"\r\n+CSQ: later\r\n\r\nEC25\r\n\r\nOK\r\n\r\n+URC: queued\r\n"
                             b"\r\nQuectel\r\n\r\nOK\r\n")
        assert modem.interpreter.mode is Mode.COMMAND
        assert len(seen) == 3           # ATE0, the pending line, then AT+CGMI from the inbox

    def test_illegal_transition_raises_when_strict_and_recovers_otherwise(self, modem, monkeypatch, caplog):
        interp = modem.interpreter
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:x",10\r')
        monkeypatch.setattr(interp, "_feed_data", lambda: interp._enter(Event.ESCAPE))
        with pytest.raises(IllegalTransition):
            modem.run(b"a")
        interp.strict = False
        seen = idle_events(modem)
        modem.run(b"a")                                  # logged, back to command mode
        assert "interpreter bug" in caplog.text
        assert interp.mode is Mode.COMMAND and seen
        monkeypatch.undo()
        assert modem.run(b"\rAT+CGMM\r") == b"\r\nEC25\r\n\r\nOK\r\n"


    def test_a_transparent_answer_abandoned_by_a_recovery_leaves_its_link_escaped(self, modem, monkeypatch):
        """A recovery (an emulator bug, non-strict) abandons a pending transparent open: its
        CONNECT is never written, and its link is told so (escaped(), as after a hang-up),
        or a close it kept for the CONNECT would never be reported."""
        spawned, escaped = [], []

        class Link:
            def escaped(self):
                escaped.append(True)

        async def later():
            return Response([], None, online=Link())
        handler_for(monkeypatch, "+CSQ", "exec", lambda m, cmd: Response([], None, pending=later()))
        monkeypatch.setattr(modem, "spawn", lambda awaitable, done: spawned.append((awaitable, done)))
        interp = modem.interpreter
        modem.run(b"ATE0\r")
        modem.run(b"AT+CSQ\r")
        assert interp.mode is Mode.PENDING
        interp.strict = False

        def bug():
            raise IllegalTransition(Mode.PENDING, Event.PROMPT)
        interp._guarded(bug)                             # the recovery: command mode again
        awaitable, done = spawned.pop()
        awaitable.close()
        link = Link()
        done(lambda: Response([], None, online=link))
        assert escaped == [True] and interp.mode is Mode.COMMAND


    @pytest.mark.parametrize("via", ["feed", "escape_timer"])
    def test_a_send_that_ends_the_connection_leaves_online_mode_cleanly(self, modem, monkeypatch, via):
        """The link's send() ends the connection in the same call (a DTLS sendto refused at
        once reports the loss synchronously): NO CARRIER, command mode, and the rest of the
        turn does not touch the escape detector that went with online mode (it raised
        AttributeError, which skipped the port's settle)."""
        interp = modem.interpreter
        sent = []

        class Link:
            def started(self):
                pass

            def send(self, data, arrived=None):
                sent.append(data)
                interp.leave_online(self)

            def escaped(self):
                pass
        handler_for(monkeypatch, "+CSQ", "exec", lambda m, cmd: Response([], None, online=Link()))
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+CSQ\r") == b"\r\nCONNECT\r\n"
        if via == "feed":
            assert modem.run(b"data") == b"\r\nNO CARRIER\r\n"
        else:
            modem.run(b"+")                              # held: maybe the start of "+++"
            modem.timers.advance(1.5)                    # not followed: it is data after all
            assert bytes(modem.out) == b"\r\nNO CARRIER\r\n"
        assert sent == [b"data" if via == "feed" else b"+"]
        assert interp.mode is Mode.COMMAND
        assert modem.run(b"AT+CGMM\r") == b"\r\nEC25\r\n\r\nOK\r\n"

class TestUploadTimerAndAck:
    def test_idle_timeout_is_exact_on_the_modem_clock(self, modem):
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:t",100,2\r')
        modem.timers.advance(1.5)
        modem.run(b"ab")                                 # restarts the 2 s
        assert modem.timers.advance(1.99) == 0 and modem.interpreter.mode is Mode.DATA
        modem.out.clear()
        modem.timers.advance(0.02)
        assert bytes(modem.out) == f"\r\n+QFUPL: 2,{xor16(b'ab'):x}\r\n\r\nOK\r\n".encode()
        assert modem.files.read("RAM:t") == b"ab"

    def test_no_data_at_all_is_421(self, modem):
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:n",10,1\r')
        modem.out.clear()
        modem.timers.advance(1)
        assert bytes(modem.out) == b"\r\n+CME ERROR: 421\r\n"
        assert modem.run(b'AT+QFLST="RAM:*"\r') == b"\r\nOK\r\n"

    def test_plus_escape_overdue_when_the_next_bytes_come_is_still_an_escape(self, modem):
        """"+++" then its guard time of silence, but the loop reads the host's next line
        before the escape timer runs: the escape came first (as a UART would have seen the
        silence), the upload ends with what came before, and the line is a command."""
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:e",100,5\r')
        modem.run(b"abc")
        modem.timers.advance(1.1)
        assert modem.run(b"+++") == b""
        modem.timers._now += 1.1                          # the timer has not fired yet
        assert modem.run(b"AT\r") == (f"\r\n+QFUPL: 3,{xor16(b'abc'):x}\r\n\r\nOK\r\n"
                                      "\r\nOK\r\n").encode()
        assert modem.files.read("RAM:e") == b"abc" and modem.interpreter.mode is Mode.COMMAND
        assert modem.timers.advance(2) == 0               # the escape timer was cancelled

    def test_ack_after_every_block_but_the_last_however_the_bytes_come(self, modem):
        seen = idle_events(modem)
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:k",2500,5,1\r')
        data = bytes(range(256)) * 10
        assert modem.run(data[:1000]) == b""
        assert modem.run(data[1000:2100]) == b"AA"       # two block ends in one write
        assert len(seen) == 1 and modem.interpreter.mode is Mode.DATA
        assert modem.run(data[2100:2500]) == f"\r\n+QFUPL: 2500,{xor16(data[:2500]):x}\r\n\r\nOK\r\n".encode()
        assert modem.files.read("RAM:k") == data[:2500]
        assert len(seen) == 2


class TestFraming:
    @pytest.mark.parametrize("verbose,quiet,data,connect", [
        (True, False, b"\r\n> ", b"\r\nCONNECT\r\n"), (False, False, b"> ", b"1\r"),
        (True, True, b"\r\n> ", b""), (False, True, b"> ", b"")])
    def test_prompts(self, verbose, quiet, data, connect):
        s = Settings(verbose=verbose, quiet=quiet)
        assert framing.prompt(Prompt.DATA, s) == data          # information text: ATQ1 keeps it
        assert framing.prompt(Prompt.CONNECT, s) == connect    # a result code
        assert framing.prompt(None, s) == b""

    @pytest.mark.parametrize("verbose,quiet,expected", [
        (True, False, b"\r\nCONNECT\r\nxy\r\n+QFDWL: 2\r\n"), (False, False, b"1\rxy\r\n+QFDWL: 2\r\n"),
        (True, True, b"\r\nxy\r\n+QFDWL: 2\r\n"), (False, True, b"xy\r\n+QFDWL: 2\r\n")])
    def test_connect_among_lines(self, verbose, quiet, expected):
        s = Settings(verbose=verbose, quiet=quiet)
        assert framing.lines([CONNECT, Raw(b"xy"), "+QFDWL: 2"], s) == expected

    def test_finals(self):
        v1, v0 = Settings(), Settings(verbose=False)
        assert framing.final(Text("SEND OK"), Settings(quiet=True)) == b"\r\nSEND OK\r\n"
        assert framing.final(Cme(50), Settings(cmee=2, verbose=False)) == b"+CME ERROR: incorrect parameters\r\n"
        assert framing.final(Cme(50), Settings(cmee=0, verbose=False)) == b"4\r"
        assert framing.final("OK", v0) == b"0\r" and framing.final("OK", v1) == b"\r\nOK\r\n"
        assert framing.final(None, v1) == b""

    def test_qfdwl_and_qfupl_with_atq1(self, modem):
        modem.run(b"ATE0\r")
        modem.run(b'AT+QFUPL="RAM:q",2\rxy')
        modem.run(b"ATQ1\r")
        assert modem.run(b'AT+QFUPL="RAM:r",1\r') == b""              # no CONNECT
        assert modem.run(b"z") == f"\r\n+QFUPL: 1,{xor16(b'z'):x}\r\n".encode()
        assert modem.run(b'AT+QFDWL="RAM:q"\r') == f"\r\nxy\r\n+QFDWL: 2,{xor16(b'xy'):x}\r\n".encode()
        modem.run(b"ATV0\r")
        assert modem.run(b'AT+QFDWL="RAM:q"\r') == f"xy\r\n+QFDWL: 2,{xor16(b'xy'):x}\r\n".encode()


class TestStorageErrors:
    """A storage error a handler lets through is answered as the +CME ERROR it carries."""

    @pytest.mark.parametrize("exc,answer", [
        (FileError(405, "x"), b"\r\n+CME ERROR: 405\r\n"),
        (SecStoreError("disk gone"), b"\r\n+CME ERROR: 23\r\n"),
        (ValueError("a bug"), b"\r\nERROR\r\n")])
    def test_mapped_by_the_interpreter(self, modem, monkeypatch, exc, answer):
        def handler(m, cmd):
            raise exc
        handler_for(monkeypatch, "+CGMM", "exec", handler)
        modem.run(b"ATE0\r")
        assert modem.run(b"AT+CGMM\r") == answer

    def test_in_a_data_handler_too(self, modem, monkeypatch):
        modem = Modem(load_profile("ml302"))
        modem.interpreter.strict = True
        out = bytearray()
        modem.attach(out.extend)
        modem.feed(b"ATE0\rAT+QSECWRITE=0\r")
        modem.secstore.write(0, b"meanwhile")             # filled while the host typed
        out.clear()
        modem.feed(b"cert\x1a")
        assert bytes(out) == b"\r\n+CME ERROR: 3\r\n"
        modem.feed(b"AT+QSECWRITE=1\r")

        def broken(slot, data):
            raise SecStoreError("cannot store slot 1: disk full")
        monkeypatch.setattr(modem.secstore, "write", broken)
        out.clear()
        modem.feed(b"cert\x1a")
        assert bytes(out) == b"\r\n+CME ERROR: 23\r\n"
        out.clear()
        modem.feed(b"AT+CMEE=2;+QSECREAD=1\r")
        assert bytes(out) == b"\r\n+CME ERROR: not found\r\n"


def test_data_request_defaults_to_the_data_prompt():
    assert DataRequest(lambda d, r: ok()).prompt is Prompt.DATA


def test_data_phase_takes_bytes_and_says_why_it_ended():
    from emulator.at.data_phase import DataPhase
    done = lambda data, reason: ok()              # noqa: E731
    phase = DataPhase(DataRequest(done, max_length=3), "+X")
    inbox = bytearray(b"abcd\x1aAT\r")
    assert phase.take(inbox, echo=True) == (b"abcd", "overflow")
    assert (bytes(phase.buf), bytes(inbox)) == (b"abc", b"AT\r")      # the rest is commands
    phase = DataPhase(DataRequest(done, length=5, ack_block=2, echo=False), "+X")
    inbox = bytearray(b"\x1b\x1a123")
    steps = [phase.take(inbox, echo=True) for _ in range(3)]
    assert steps == [(b"A", None), (b"A", None), (b"", "done")] and not inbox


def test_tcpip_and_ssl_cme_texts_are_the_cme_table_without_any_command_module():
    """+CME ERROR: 566 with AT+CMEE=2 reads "socket connection failed" from the one CME table,
    whatever modules a process imported (they were copied into it by an import side effect
    of commands/netutil.py); AT+QIGETERROR's texts are the same ones."""
    import subprocess
    import sys

    code = ("import sys; from emulator.at.cme import cme_text; "
            "assert 'emulator.commands.netutil' not in sys.modules; "
            "print(cme_text(566), '|', cme_text(552), '|', cme_text(574))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "socket connection failed | invalid parameter | port busy"
    from emulator.at.cme import CME_TEXT
    from emulator.sockets.service import ERROR_TEXT
    assert ERROR_TEXT == {0: "operate successfully", **{c: CME_TEXT[c] for c in range(550, 575)}}


class TestOperatorNumeric:
    """AT+COPS numeric format: the profile's network.plmn (a 3-digit MNC such as T-Mobile US
    310 260 cannot come from the IMSI's first five digits), else IMSI[:5]."""

    @staticmethod
    def user_profile(tmp_path, plmn_line: str):
        text = (load_profile("ec2x").path.read_text()
                .replace('imsi = "460011234567890"', 'imsi = "310260123456789"')
                .replace("reg_stat = 1\n", f"reg_stat = 1\n{plmn_line}\n"))
        path = tmp_path / "us.toml"
        path.write_text(text)
        return str(path)

    def run(self, profile, line: bytes) -> bytes:
        out = bytearray()
        m = Modem(profile)
        m.attach(out.extend)
        m.feed(b"ATE0\r")
        out.clear()
        m.feed(line)
        return bytes(out)

    def test_plmn_gives_the_numeric_name(self, tmp_path):
        profile = load_profile(self.user_profile(tmp_path, 'plmn = "310260"'))
        assert self.run(profile, b"AT+COPS=3,2;+COPS?\r") == b'\r\n+COPS: 0,2,"310260",7\r\n\r\nOK\r\n'
        assert self.run(profile, b'AT+COPS=1,2,"310260"\r') == b"\r\nOK\r\n"
        assert self.run(profile, b'AT+COPS=1,2,"31026"\r') == b"\r\n+CME ERROR: 30\r\n"

    def test_without_plmn_the_imsi_gives_five_digits(self, tmp_path):
        profile = load_profile(self.user_profile(tmp_path, ""))
        assert self.run(profile, b"AT+COPS=3,2;+COPS?\r") == b'\r\n+COPS: 0,2,"31026",7\r\n\r\nOK\r\n'

    @pytest.mark.parametrize("bad", ['"4600"', '"4600123"', '"46O01"', "46001"])
    def test_a_bad_plmn_is_refused_when_the_profile_loads(self, tmp_path, bad):
        with pytest.raises(ProfileError, match="network.plmn"):
            load_profile(self.user_profile(tmp_path, f"plmn = {bad}"))
