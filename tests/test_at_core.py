"""Sans-IO tests of the AT lexer, parser and interpreter: no pty, no loop."""
from __future__ import annotations

import random

import pytest

from emulator.at.lexer import CommandLine, CommandLineLexer, Echo, LineTooLong, RepeatLast
from emulator.at.parser import EXEC, READ, TEST, WRITE, Arg, Malformed, parse_line
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile


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
        assert modem.run(b"AT+CGACT=1,1\r") == b"\r\nERROR\r\n"
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
    },
    "ml302": {
        "+COPS": '+COPS: (2,"CHINA MOBILE","CHINA MOBILE","46001",7),,(0-4),(0-2)',
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
