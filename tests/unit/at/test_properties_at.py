"""Property tests of the AT lexer and interpreter (sans-IO: no pty, no loop).

What independent hosts and fuzzers do to a modem, generated: random bytes, commands
with wrong types, out-of-range and non-ASCII digits, unbalanced quotes, embedded NUL /
Ctrl+Z / ESC, CR LF split at every byte.  The properties: no exception escapes,
every complete command line gets exactly one final result, and no byte of a data
prompt is lost or added.
"""
from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.at.lexer import CommandLineLexer, Echo
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile

PROFILES = {name: load_profile(name) for name in ("ec2x", "ml302")}
FAST = settings(max_examples=int(__import__("os").environ.get("HYPOTHESIS_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
FINAL = re.compile(rb"(?:^|\r\n)(OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")


def make_modem(profile: str = "ec2x", ending: bytes = b"\r"):
    """ending: how this host ends its lines (it has typed ATE0 and AT so far)."""
    clock = [1000.0]
    modem = Modem(PROFILES[profile])              # no state dir: nothing touches the disk
    modem.interpreter.strict = True               # an illegal mode transition raises
    modem.monotonic = lambda: clock[0]
    out = bytearray()
    modem.attach(out.extend)
    modem.feed(b"ATE0" + ending + b"AT" + ending)
    assert bytes(out) == b"ATE0\r\r\nOK\r\n\r\nOK\r\n"
    out.clear()
    return modem, out, clock


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


# -- generators ---------------------------------------------------------------------
# Commands whose answers are complete at once without a loop and that leave the port's
# framing alone (no ATE/ATV/ATQ/S3/S5/&F/Z, no data prompts, no sockets).
NAMES = ["", "+CMEE", "+CSQ", "+CREG", "+CGREG", "+CEREG", "+CCLK", "+CFUN", "+CGMR", "+GSN",
         "+QSSLCFG", "+QSSLSTATE", "+QSSLRECV", "+QSSLCLOSE", "+QIGETERROR", "+QICSGP",
         "+QIACT", "+QIDEACT", "+QFLST", "+QFDEL", "+QFLDS", "+CGDCONT", "+CGACT", "+QSECREAD",
         "+QSECDEL", "+IPR", "+IFC", "&C", "&D", "S0", "S7", "S10", "S12", "I", "+NOSUCH",
         "S\u00b2", "S\u0663", "E\u00b9", "&D\u00b2", "+CMEE\u00b2"]
DIGITS = st.sampled_from(["0", "1", "2", "5", "99", "-1", "+3", "65536", "4294967296", "1" * 30,
                          "\u00b2", "\u00b9", "\u0663", "\uff11", "1\u00b2", "0x10", "", " 1 "])
TEXTS = st.sampled_from(['"sni"', '"seclevel"', '"psk"', '"UFS:a.pem"', '"', '"unbalanced', '""',
                         '"a,b"', '"a;b"', "\x00", "\x1a", "\x1b", "\n", '"\x1b[31m"', "\xe9",
                         '"\xe9\xff"', "=", "?", ";", ",", "AT"])
# Free text without letters (a ";V0" or ";Q1" would change the framing being counted).
_FREE = "".join(chr(c) for c in range(256) if chr(c) != "\r" and not chr(c).isalpha()) + "\xe9\xff"
PARAM = st.one_of(DIGITS, TEXTS, st.text(alphabet=_FREE, max_size=6))


@st.composite
def command_lines(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(NAMES))
        form = draw(st.sampled_from(["", "?", "=?", "=", "=?x"]))
        params = ",".join(draw(st.lists(PARAM, max_size=4))) if form == "=" else ""
        parts.append(name + form + params)
    body = ";".join(parts).encode("latin-1", "replace")
    return b"AT" + body.replace(b"\r", b"")


# -- properties ------------------------------------------------------------------
@FAST
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=12))
def test_random_bytes_never_raise_and_the_port_recovers(data, cuts):
    modem, out, _ = make_modem()
    for chunk in chunked(data, cuts):
        modem.feed(chunk)                        # no exception may escape
    # Whatever state the garbage left (a data prompt, half a line): the host's way out.
    modem.interpreter.hangup()
    out.clear()
    modem.feed(b"\rATE0V1Q0;+CMEE=1\r")
    modem.feed(b"AT\r")
    assert bytes(out).endswith(b"\r\nOK\r\n")


@FAST
@given(st.lists(command_lines(), min_size=1, max_size=6), st.sampled_from([b"\r", b"\r\n"]),
       st.lists(st.integers(0, 2000), max_size=20), st.sampled_from(["ec2x", "ml302"]), st.booleans())
def test_every_complete_line_gets_exactly_one_final_result(lines, ending, cuts, profile, echo):
    modem, out, _ = make_modem(profile, ending)
    if echo:
        modem.feed(b"ATE1\r")
        out.clear()
    stream = b"".join(line + ending for line in lines)
    for chunk in chunked(stream, cuts):
        modem.feed(chunk)
    # CR LF split at any byte, several lines per write or one byte at a time: one final each.
    finals = FINAL.findall(bytes(out))
    assert len(finals) == len(lines), (stream, bytes(out))
    assert bytes(out).endswith(finals[-1] + b"\r\n")
    assert b"\r\nOK\r\n\n" not in bytes(out)


@FAST
@given(st.binary(min_size=1, max_size=3000), st.lists(st.integers(0, 3000), max_size=16),
       st.booleans(), st.sampled_from([0.0, 0.01, 0.049]))
def test_no_byte_of_an_upload_is_lost_or_added(data, cuts, crlf, lf_delay):
    """AT+QFUPL=...,<n>: exactly the n bytes after CONNECT are the file, whatever they are
    (NUL, Ctrl+Z, ESC, CR, LF, "AT") and however the host splits them -- including the
    LF of its CR LF coming late, after CONNECT, and a CR-only host's data starting with LF."""
    modem, out, clock = make_modem(ending=b"\r\n" if crlf else b"\r")
    modem.feed(b'AT+QFUPL="RAM:p.bin",%d\r' % len(data))
    assert bytes(out) == b"\r\nCONNECT\r\n"
    clock[0] += lf_delay
    if crlf:
        modem.feed(b"\n")                        # the LF of the CR LF, late but within the window
    for chunk in chunked(data, cuts):
        modem.feed(chunk)
        clock[0] += 0.001
    assert bytes(out).endswith(b"\r\nOK\r\n"), bytes(out)
    assert modem.files.read("RAM:p.bin") == data


@FAST
@given(st.binary(max_size=1500).filter(lambda d: b"\x1a" not in d and b"\x1b" not in d),
       st.lists(st.integers(0, 1500), max_size=16))
def test_no_byte_of_a_ctrl_z_prompt_is_lost_or_added(data, cuts):
    """ML302 AT+QSECWRITE: everything up to Ctrl+Z is the certificate."""
    modem, out, _ = make_modem("ml302", b"\r\n")
    modem.feed(b"AT+QSECWRITE=1\r\n")
    assert bytes(out).endswith(b"> ")
    out.clear()
    for chunk in chunked(data + b"\x1a", cuts):
        modem.feed(chunk)
    if not data:
        assert FINAL.search(bytes(out))
        return
    assert re.match(rb"\r\n\+QSECWRITE: %d," % len(data), bytes(out)), bytes(out)
    assert modem.secstore.load(1) == data


LEXER_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"A", b"T", b"a", b"t", b"/", b"\x08", b"+", b"E",
                              b"x", b"\x00", b"\xb2", b"\x1a", b"\x1b"]), max_size=60).map(b"".join))


@FAST
@given(LEXER_BYTES, st.lists(st.integers(0, 200), max_size=10))
def test_lexer_line_content_does_not_depend_on_chunking(data, cuts):
    whole = CommandLineLexer()
    split = CommandLineLexer()
    events_whole = [e for e in whole.feed(data) if not isinstance(e, Echo)]
    events_split = [e for c in chunked(data, cuts) for e in split.feed(c) if not isinstance(e, Echo)]
    assert events_whole == events_split
    # and the echo is every byte but the LFs that end a line after CR
    third = CommandLineLexer()
    echo = b"".join(e.data for c in chunked(data, cuts) for e in third.feed(c) if isinstance(e, Echo))
    assert echo == re.sub(rb"(?<=\r)\n", b"", data)


@given(st.binary(max_size=200))
def test_a_line_parsed_again_comes_from_the_cache_unchanged(body):
    """parse_line keeps what it parsed (host drivers repeat their lines): the second
    answer is the first one's commands, equal to a fresh parse, and a caller changing
    its list changes nothing for the next caller."""
    from emulator.at import parser
    first = parser.parse_line(body)
    first_items = list(first)
    first.append("changed by the caller")
    again = parser.parse_line(bytearray(body))
    assert again == first_items == parser._parse_line(body)
    if len(body) <= parser._PARSED_LINE_MAX:
        assert all(a is b for a, b in zip(again, first_items))
