"""Review of today's commits on main (c83f4e3..e289e95), chiefly 15ace69: the AT lexer takes
the command prefix before S3 and S5 (docs/behaviour.md "Command line and result codes": between
lines an `A`/`a` starts a line and a `T`/`t` after it goes on, whatever S3 and S5 are).

Checked here: S3/S5 set to `A`, `a`, `T`, `t`, `/`, the same letter for both; the whole-line
fast path and the between-lines skip against the byte-by-byte step with those registers, and
any cut of the input into pieces; echo under ATE1 with S3 `A`; AT&W / ATZ / AT&F and a hang-up
with S3 `A`; a data prompt opened by a line ended with S3 `A` (its data full of `A`s, an LF in
front of them); EC2x and ML302.  V.250 (6.2.1-6.2.3: S3/S5 0-127; 5.2.4: "A/" or "a/" repeats
the previous command line) is the reference where behaviour.md is silent.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.at.lexer import CommandLine, CommandLineLexer, RepeatLast
from emulator.testing.host import Host
from tests.e2e.answer_support import answer_is, collect
from tests.e2e.socket_support import wait_for
from tests.e2e.test_adversarial_ml302_hostile_host_2 import checksum
from tests.unit.at.test_lexer_fast_paths import merged, state, stepwise

PROFILES = ["ec2x", "ml302"]
A, a, T, t = ord("A"), ord("a"), ord("T"), ord("t")
REGISTERS = [A, a, T, t, ord("/"), 10, 0, 13, 8, 0x7F, ord("\\"), ord("^"), ord("-"), ord("]")]


def nl(s3: int) -> bytes:
    return bytes([s3, 10])


def ok(s3: int = 13) -> bytes:
    return nl(s3) + b"OK" + nl(s3)


# == the lexer alone ===========================================================================
PIECES = st.sampled_from([b"A", b"a", b"T", b"t", b"AT", b"at", b"aT", b"/", b"\r", b"\n", b"\x00",
                          b"\x08", b"E0", b"x", b"ATE0A", b"ATE0a", b"atE0T", b"ATS3=13A",
                          b"AAT", b"A/", b"\\", b"^", b"-", b"]", b"\x7f"])
STREAM = st.lists(PIECES, max_size=24).map(b"".join)


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(STREAM, max_size=6), st.booleans(), st.sampled_from(REGISTERS), st.sampled_from(REGISTERS),
       st.sampled_from([3, 2048]))
def test_bulk_paths_match_the_step_with_prefix_letters_as_s3_and_s5(chunks, echo, s3, s5, max_line):
    """tests/unit/at/test_lexer_fast_paths.py's property with S3/S5 set to the prefix's
    letters (and '/', LF, NUL, regex metacharacters): the whole-line fast path and the
    between-lines skip give exactly the step's events and state."""
    fast, slow = CommandLineLexer(max_line), CommandLineLexer(max_line)
    for lexer in (fast, slow):
        lexer.echo, lexer.s3, lexer.s5 = echo, s3, s5
    for chunk in chunks:
        assert merged(fast.feed(chunk)) == merged(stepwise(slow, chunk)), chunk
        assert state(fast) == state(slow)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(STREAM, st.lists(st.integers(0, 200), max_size=6), st.booleans(), st.sampled_from(REGISTERS),
       st.sampled_from(REGISTERS))
def test_any_cut_of_the_input_gives_the_same_lines(data, cuts, echo, s3, s5):
    """The same bytes fed whole, cut anywhere, or one at a time: the same lines, the same
    echo, the same state (the interpreter's _lex_some cuts at S3 and '/')."""
    def run(pieces):
        lexer = CommandLineLexer()
        lexer.echo, lexer.s3, lexer.s5 = echo, s3, s5
        events = [e for p in pieces for e in lexer.feed(p)]
        return merged(events), state(lexer)
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[i:j] for i, j in zip([0] + points, points + [len(data)])]
    whole = run([data])
    assert run(pieces) == whole
    assert run([data[i:i + 1] for i in range(len(data))]) == whole


@pytest.mark.parametrize("s3", [A, a, T, t])
@pytest.mark.parametrize("s5", [A, a, T, t, 8])
@pytest.mark.parametrize("prefix", [b"AT", b"at", b"At", b"aT", b"AAT", b"aaAt"])
def test_every_prefix_letter_pair_leaves_a_line_that_sets_both_back(s3, s5, prefix):
    """Whatever letters S3 and S5 are, any spelling of the prefix starts a line (not deaf):
    the prefix goes on, then S3 (over S5) ends the line."""
    lexer = CommandLineLexer()
    lexer.s3, lexer.s5, lexer.echo = s3, s5, False
    assert lexer.feed(b"zz" + prefix + b"S3=13;S5=8" + bytes([s3])) == [CommandLine(b"S3=13;S5=8")]
    assert lexer.feed(prefix + bytes([s3])) == [CommandLine(b"")]


def test_s3_t_ends_a_bare_at_and_aat_still_starts_a_line():
    lexer = CommandLineLexer()
    lexer.s3, lexer.echo = T, False
    assert lexer.feed(b"ATT") == [CommandLine(b"")]
    assert lexer.feed(b"AATE0T") == [CommandLine(b"E0")]
    assert lexer.feed(b"TTT") == []                  # (a T between lines is S3: ends nothing)
    assert lexer.feed(b"A/") == [RepeatLast()]


# == over the pty ==============================================================================
@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("s3", [a, T, t])
def test_s3_set_to_another_prefix_letter_takes_lines_and_is_set_back(open_modem, profile, s3):
    host, _ = open_modem(profile)
    end = bytes([s3])
    host.write(b"ATS3=%d\r" % s3)
    answer_is(host, ok(s3))
    prefix = b"AT" if s3 in (a, t) else b"at"
    host.write(prefix + b"S3?" + end)
    answer_is(host, nl(s3) + b"%03d" % s3 + nl(s3) + ok(s3))
    host.write(prefix + end)                          # a bare AT
    answer_is(host, ok(s3))
    host.write(b"zz" + prefix + b"S3=13" + end)
    answer_is(host, ok())
    assert host.at("ATS3?") == b"\r\n013\r\n" + ok()


@pytest.mark.parametrize("profile", PROFILES)
def test_s3_and_s5_both_a(open_modem, profile):
    """ATS5=65 then ATS3=65: S3 wins over S5 inside a line, the prefix over both between
    lines; ATS5=8A then ATS3=13A put them back."""
    host, _ = open_modem(profile)
    host.write(b"ATS5=65\r")
    answer_is(host, ok())
    host.write(b"ATS3=65\r")
    answer_is(host, ok(A))
    host.write(b"AAATS5?A")
    answer_is(host, nl(A) + b"065" + nl(A) + ok(A))
    host.write(b"ATS5=8A")
    answer_is(host, ok(A))
    host.write(b"ATS3=1A3A")                        # (S5 8 again: this 'A' ends "S3=1")
    answer_is(host, ok(1))
    host.write(b"ATS3=13\x01")                     # ('3A' before it: an A left, then AAT...)
    answer_is(host, ok())
    assert host.at("ATS5?;S3?") == b"\r\n008\r\n\r\n013\r\n" + ok()


@pytest.mark.parametrize("profile", PROFILES)
def test_s3_a_with_echo_every_byte_comes_back_as_received(open_modem, profile):
    host, _ = open_modem(profile, echo=True)
    host.write(b"ATS3=65\r")
    answer_is(host, b"ATS3=65\r" + ok(A))
    stream = b"zz\rT\nAx" + b"ATS3?A" + b"\nat+cmee?A"
    host.write(stream)
    # the LF right after an S3 (the 'A' of ATS3?A) is no echo (behaviour.md: the LF of the
    # line ending); everything else is, as received
    want = (b"zz\rT\nAx" + b"ATS3?A" + nl(A) + b"065" + nl(A) + ok(A) + b"at+cmee?A"
            + nl(A) + b"+CMEE: 1" + nl(A) + ok(A))
    assert collect(host, lambda g: len(g) >= len(want)) == want


@pytest.mark.parametrize("profile", PROFILES)
def test_s3_a_saved_restored_by_atz_kept_over_a_hangup_and_undone_by_at_f(open_modem, profile):
    host, port = open_modem(profile)
    host.write(b"ATS3=65;&W\r")
    answer_is(host, ok(A))
    host.write(b"ATS3=13A")
    answer_is(host, ok())
    host.write(b"ATZ\r")                              # the saved set: S3 'A' again
    answer_is(host, ok(A))
    host.close()                                      # a hang-up: settings are the module's
    wait_for(lambda: not port.port.attached, 10, "the hang-up")
    nxt = Host(port.path)
    try:
        nxt.write(b"AT\r")                            # CR is no terminator now: nothing
        assert nxt.quiet_for(0.3) == b""
        nxt.write(b"A")                               # ("AT\r" was a line; this A ends it)
        answer_is(nxt, nl(A) + b"ERROR" + nl(A))
        nxt.write(b"ATS3?A")
        answer_is(nxt, nl(A) + b"065" + nl(A) + ok(A))
        nxt.write(b"AT&FA")                           # factory: S3 13 (and E1)
        answer_is(nxt, ok())
        assert nxt.at("ATS3?") == b"ATS3?\r\r\n013\r\n" + ok()
    finally:
        nxt.close()


def test_s3_a_data_prompt_takes_its_as_as_data(ec2x):
    """AT+QFUPL ended by S3 'A', its data written with the line: 'A's and 'AT...A' are data,
    not lines; an LF right after the line is data too (the late-LF rule is for S3 13 only,
    behaviour.md's table)."""
    ec2x.write(b"ATS3=65\r")
    answer_is(ec2x, ok(A))
    ec2x.write(b'AT+QFUPL="f",6A\nATE1A')
    want = nl(A) + b"CONNECT" + nl(A)
    assert ec2x.read_until(b"CONNECT" + nl(A)) == want
    checksum = 0
    data = b"\nATE1A"
    for i in range(0, len(data), 2):
        checksum ^= int.from_bytes(data[i:i + 2].ljust(2, b"\0"), "big")
    answer_is(ec2x, nl(A) + b"+QFUPL: 6,%x" % checksum + nl(A) + ok(A))
    ec2x.write(b'AT+QFDWL="f"A')
    out = collect(ec2x, lambda g: g.endswith(ok(A)))
    assert data in out and b"+QFDWL: 6," in out
    ec2x.write(b"ATE0?A")                              # echo still off: E1 was data
    assert b"ATE0" not in collect(ec2x, lambda g: g.endswith(nl(A)), settle=0.3)


# V.250 5.2.4: "If the prefix "A/" or "a/" is received, the DCE shall immediately execute once
# again the body of the preceding command line."  15ace69 makes the prefix come before S3 and
# S5 for "AT"; "A/" is the other prefix V.250 defines, and with S3 or S5 set to '/' it is
# swallowed: with S3 '/' the '/' was taken as an empty line's terminator, with S5 '/' as a
# rub-out of the 'A' (lexer._step checked S3/S5 before the got_a state's '/').  Was a bug, fixed:
# "A/" is part of the prefix taken first.
@pytest.mark.parametrize("profile", ["ec2x"])
def test_a_slash_repeats_with_s3_slash(open_modem, profile):
    host, _ = open_modem(profile)
    host.write(b"ATS3=47\r")
    answer_is(host, ok(ord("/")))
    host.write(b"AT+CMEE?/")
    first = nl(ord("/")) + b"+CMEE: 1" + nl(ord("/")) + ok(ord("/"))
    answer_is(host, first)
    host.write(b"A/")
    answer_is(host, first, timeout=1.5)


@pytest.mark.parametrize("profile", ["ec2x"])
def test_a_slash_repeats_with_s5_slash(open_modem, profile):
    host, _ = open_modem(profile)
    assert host.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + ok()
    assert host.at("ATS5=47") == ok()
    host.write(b"A/")
    answer_is(host, ok(), timeout=1.5)                 # ATS5=47 again


# Not from today's commits (found on the way): a data prompt (AT+QFUPL here) whose data came
# in the same write as its line leaves the lexer's "the last byte was S3" set through the whole
# data phase (interpreter._late_lf_rule returns None without lexer.forget_line_end() when the
# inbox already holds the data, or when S3 is not 13), so after the upload's OK the host's
# next LF is taken for that long-gone line's CR LF ending: not echoed (behaviour.md: echo
# returns every byte received in command state, except the LF of a CR LF ending), and
# lexer.crlf is learnt from it (a CR-only host taken for a CR LF one).  Was a bug, fixed:
# _late_lf_rule forgets the line's end whenever it leaves no late-LF rule.
@pytest.mark.parametrize("s3", [13, A])
def test_lf_after_an_upload_whose_data_came_with_the_line_is_echoed(open_modem, s3):
    host, _ = open_modem("ec2x", echo=True)
    end = bytes([s3])
    if s3 != 13:
        host.write(b"ATS3=%d\r" % s3)
        answer_is(host, b"ATS3=%d\r" % s3 + ok(s3))
    host.write(b'AT+QFUPL="f",3' + end + b"abc")
    assert host.read_until(ok(s3)).endswith(b"+QFUPL: 3,262" + nl(s3) + ok(s3))
    host.write(b"\nAT" + end)
    answer_is(host, b"\nAT" + end + ok(s3), timeout=1.5)


def test_ml302_secwrite_prompt_after_s3_a_takes_as_and_a_line_as_data(ml302):
    """ML302 AT+QSECWRITE (Ctrl+Z ended) opened by a line ended with S3 'A', its data
    ("ATE1A", every byte a prefix letter or S3) written with the line: stored as data."""
    ml302.write(b"ATS3=65\r")
    answer_is(ml302, ok(A))
    data = b"ATE1A"
    ml302.write(b"AT+QSECWRITE=1A" + data + b"\x1a")
    answer_is(ml302, nl(A) + b"> " + nl(A) + b"+QSECWRITE: 5," + checksum(data).encode() + nl(A) + ok(A))
    ml302.write(b"at+qsecread=1A")             # (READ has an A: lower case)
    answer_is(ml302, nl(A) + b"+QSECREAD: 1," + checksum(data).encode() + nl(A) + ok(A))
    ml302.write(b"ATE0?A")                             # (echo still off: E1 was data)
    assert b"ATE0" not in collect(ml302, lambda g: g.endswith(nl(A)))


@pytest.mark.parametrize("profile", PROFILES)
def test_a_slash_and_lowercase_a_slash_repeat_with_s3_a_or_a(open_modem, profile):
    host, _ = open_modem(profile)
    for s3, repeat in ((A, b"a/"), (a, b"A/")):
        host.write(b"ATS3=%d\r" % s3)
        answer_is(host, ok(s3))
        host.write(b"AT+CMEE?" + bytes([s3]))
        first = nl(s3) + b"+CMEE: 1" + nl(s3) + ok(s3)
        answer_is(host, first, settle=0.1)
        host.write(repeat)
        answer_is(host, first, settle=0.1)
        host.write(b"ATS3=13" + bytes([s3]))
        answer_is(host, ok())


@pytest.mark.parametrize("profile", PROFILES)
def test_crlf_host_with_echo_sets_s3_a_and_back(open_modem, profile):
    """A CR LF host with ATE1: the LF after ATS3=65's CR is still that line's ending (not
    echoed, after the OK framed by the new S3); setting it back with 'A' then CR LF: the CR is
    a stray byte between lines (echoed), its LF the ending of... nothing run."""
    host, _ = open_modem(profile, echo=True)
    host.write(b"ATS3=65\r\n")
    answer_is(host, b"ATS3=65\r" + ok(A))
    host.write(b"ATS3=13A\r\n")
    answer_is(host, b"ATS3=13A" + ok() + b"\r")
    host.write(b"AT\r\n")
    answer_is(host, b"AT\r" + ok())


@pytest.mark.parametrize("profile", PROFILES)
def test_restart_with_s3_a_saved_frames_the_boot_urcs_and_takes_lines(open_modem, profile):
    host, port = open_modem(profile)
    host.write(b"ATS3=65;&W\r")
    answer_is(host, ok(A))
    host.write(b"AT+CFUN=1,1A")
    out = collect(host, lambda g: b"+CPIN: READY" + nl(A) in g, settle=1.5, timeout=15)
    assert out.startswith(ok(A)) and nl(A) + b"+CPIN: READY" + nl(A) in out and b"\r" not in out
    host.write(b"ATS3?A")
    answer_is(host, nl(A) + b"065" + nl(A) + ok(A))
    host.write(b"AT&FA")
    answer_is(host, ok())


@pytest.mark.parametrize("profile", PROFILES)
def test_lines_pipelined_in_one_write_with_s3_a(open_modem, profile):
    """Three lines ended by S3 'A' in one write, the middle one ATV0: each answered in order,
    framed by S3 (ATV0: digit + S3)."""
    host, _ = open_modem(profile)
    host.write(b"ATS3=65\r")
    answer_is(host, ok(A))
    host.write(b"ATS3?AATV0AAT+CMEE?A")
    answer_is(host, nl(A) + b"065" + nl(A) + ok(A) + b"0A" + b"+CMEE: 1" + nl(A) + b"0A")
    host.write(b"ATV1;S3=13A")
    answer_is(host, ok())
