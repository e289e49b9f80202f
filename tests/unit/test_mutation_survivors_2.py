"""Tests from a second manual mutation-testing pass (the first: tests/e2e/test_mutation_survivors.py),
over the sans-IO AT layer -- the command-line lexer, the "+++" escape detector, the data phase --
and the SSL context's settings.  Each test pins a behaviour that a small change to the
emulator (the mutant named in its docstring) left the unit tests passing on -- most of them
also every in-process e2e test of that area (docs/behaviour.md-level checks); the expected
values come from docs/behaviour.md and the EC2x / ML302 manuals, not from the emulator's
current output.  No pty, no loop, no timing: the modem clock is a number passed in."""
from __future__ import annotations

import logging

import pytest

from emulator.at.data_phase import DataPhase
from emulator.at.escape import EscapeDetector
from emulator.at.lexer import CommandLine, CommandLineLexer, Echo, RepeatLast
from emulator.at.responses import DataRequest, ok
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.sockets.context import SetupError, SslContext, parse_cipher_list, to_tls_settings


@pytest.fixture
def sans_io_modem():
    """An EC2x Modem with no port (ATE0 sent); .run(bytes) feeds them and returns the output."""
    out = bytearray()
    m = Modem(load_profile("ec2x"))
    m.interpreter.strict = True
    m.attach(out.extend)

    def run(data: bytes) -> bytes:
        out.clear()
        m.feed(data)
        return bytes(out)
    m.run = run
    assert run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    return m


# -- command-line lexer (emulator/at/lexer.py) ---------------------------------------------------
def test_a_fresh_ports_first_byte_lf_is_echoed():
    """Mutant: lexer.CommandLineLexer starting as if an S3 had just come (`_last_was_s3 =
    True`).  docs/behaviour.md: echo returns every byte received in command state except the
    LF of a CR LF ending; no line has ended yet on a fresh port, so an LF there is echoed
    (and tells nothing about how the host ends its lines)."""
    lexer = CommandLineLexer()
    assert lexer.feed(b"\n") == [Echo(b"\n")]
    assert lexer.crlf is None
    assert lexer.feed(b"AT\r") == [Echo(b"AT\r"), CommandLine(b"")]
    assert lexer.crlf is None                      # still unknown: no byte after a CR yet


def test_a_half_typed_line_does_not_survive_a_hang_up(sans_io_modem):
    """Mutant: lexer.reset() not going back to idle.  docs/behaviour.md: the host closing the
    device is seen by the pty and the next host to open it meets command state; only with
    --uart does a half-typed line go on with the next host's bytes.  "AT+CG", a hang-up, then
    "MM\\r" runs nothing (the bytes are outside a command line), and the next line works."""
    m = sans_io_modem
    assert m.run(b"AT+CG") == b""
    m.host_hangup()
    assert m.run(b"MM\r") == b""
    assert m.run(b"AT\r") == b"\r\nOK\r\n"


def test_an_lf_from_the_next_host_is_echoed_after_a_hang_up(sans_io_modem):
    """Mutant: lexer.reset() keeping `_last_was_s3`.  The last host's line ended with CR and
    it closed the port: the next host's first byte LF is no ending of that line, so with ATE1
    it is echoed like any other byte in command state."""
    m = sans_io_modem
    assert m.run(b"ATE1\r") == b"\r\nOK\r\n"          # (the line came while echo was off)
    m.host_hangup()
    assert m.run(b"\n") == b"\n"
    assert m.run(b"AT\r") == b"AT\r\r\nOK\r\n"


def test_backspace_deletes_the_prefix_characters_too():
    """Mutants: lexer._step's S5 handling before the line's text (an S5 right after "AT" not
    going back to "A", an S5 after "A" not going back to idle).  docs/behaviour.md: S5 deletes
    the previous character, the prefix's T included: "AT<BS>T+CSQ" is AT+CSQ; "A<BS>T+CSQ" has
    no prefix left (its bytes are outside a command line); "AT<BS><BS>AT" is a bare AT."""
    lexer = CommandLineLexer()
    lexer.echo = False
    assert lexer.feed(b"AT\x08T+CSQ\r") == [CommandLine(b"+CSQ")]
    assert lexer.feed(b"A\x08T+CSQ\r") == []
    assert lexer.feed(b"AT\x08\x08AT\r") == [CommandLine(b"")]
    for byte in b"AT\x08T+CSQ\r":                                   # byte by byte: the same
        events = lexer.feed(bytes([byte]))
    assert events == [CommandLine(b"+CSQ")]


def test_only_an_lf_right_after_s3_is_ignored():
    """Mutants: lexer._step ignoring every LF (`after_s3` dropped from its LF test), and
    _whole_line looking for the "T" at data[2] instead of data[1].  docs/behaviour.md: LF right
    after CR is ignored and not echoed (a host sees AT<CR><CR><LF>OK whether it writes
    AT<CR><LF> at once or one byte at a time); any other LF is a byte like the others: between
    "A" and "T" it breaks the prefix, and it is echoed."""
    lexer = CommandLineLexer()
    assert lexer.feed(b"AT\r\n") == [Echo(b"AT\r"), CommandLine(b"")]
    assert lexer.crlf is True
    for byte in b"AT\r":
        lexer.feed(bytes([byte]))
    assert lexer.feed(b"\n") == []                                   # its ending: not echoed
    assert lexer.feed(b"\n") == [Echo(b"\n")]                        # a second LF is echoed
    assert lexer.feed(b"\x0b") == [Echo(b"\x0b")]                    # (VT after an LF: echoed)
    assert lexer.feed(b"A\nT\r") == [Echo(b"A\nT\r")]                # no "AT": nothing runs
    events = lexer.feed(b"AT\r")
    assert events == [Echo(b"AT\r"), CommandLine(b"")]
    assert lexer.feed(b"\x0b") == [Echo(b"\x0b")]                    # VT after S3 is echoed


def test_a_slash_repeats_at_once_and_ends_there():
    """Mutant: lexer._step leaving "A/" with the prefix's "A" still open (`_state = "idle"`
    deleted).  docs/behaviour.md: "A/" repeats the previous line at once, without CR; it has no
    terminator, so "A/T+CSQ<CR>" is one repetition and then bytes outside a command line."""
    lexer = CommandLineLexer()
    lexer.echo = False
    assert lexer.feed(b"A/T+CSQ\r") == [RepeatLast()]
    assert lexer.feed(b"a/") == [RepeatLast()]
    assert lexer.feed(b"T\r") == []


def test_a_line_over_2048_bytes_is_error_however_it_is_written(sans_io_modem):
    """Mutants: lexer._whole_line's length bound (`len(data) - 3 > max_line` with 3 -> 4, `>`
    -> `<`, or dropped) and _step's (`>=` -> `>`).  docs/behaviour.md: a line longer than 2048
    bytes (profile serial.line_max) is answered ERROR when its terminator arrives, and the
    interpreter carries on.  Trailing spaces are ignored (V.250 5.1), so AT+CMEE=2 padded to
    2048 bytes after "AT" runs, and one space more is ERROR -- written at once or byte by byte."""
    m = sans_io_modem
    at_limit = b"AT+CMEE=2" + b" " * (2048 - 7) + b"\r"
    over = b"AT+CMEE=0" + b" " * (2048 - 6) + b"\r"
    assert m.run(at_limit) == b"\r\nOK\r\n"
    assert m.run(over) == b"\r\nERROR\r\n"
    assert m.run(b"AT+CMEE?\r") == b"\r\n+CMEE: 2\r\n\r\nOK\r\n"
    assert b"".join(m.run(bytes([b])) for b in over) == b"\r\nERROR\r\n"
    assert b"".join(m.run(bytes([b])) for b in at_limit) == b"\r\nOK\r\n"
    assert m.run(b"AT+CMEE?\r") == b"\r\n+CMEE: 2\r\n\r\nOK\r\n"


# -- "+++" escape detector (emulator/at/escape.py, sans-IO) -------------------------------------
# docs/behaviour.md, "Transparent access mode", Leaving: "+++" with at least the guard time of
# silence before it, its three characters within the guard time, and the guard time of silence
# after it; a "+" that may begin an escape is held back until it is known to be data, then sent
# in order: a host never loses or reorders a byte.
def test_escape_after_exactly_the_guard_time_of_silence_on_both_sides():
    """Mutants: escape.feed's fast path taking "+" as data when the silence before is exactly
    the guard time (`<` -> `<=`), the general path asking for more than it (`>=` -> `>`), and
    expire() asking for more than the guard time after (`<` -> `<=`).  "At least the guard
    time": 1 s of silence before and after is enough."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+++", 1.0) == b""
    assert detector.deadline() == 2.0
    assert detector.expire(2.0) == (b"", True)
    assert detector.deadline() is None
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"x", 0.5) == b"x"
    assert detector.feed(b"+", 1.5) == b""                        # 1 s after the last byte
    assert detector.feed(b"++", 1.7) == b""
    assert detector.expire(2.7) == (b"", True)


def test_plus_without_the_silence_before_is_data_at_once():
    """Mutants: escape.feed not restarting the silence at a data byte (fast path and general
    path, `self.last_rx = now` deleted).  "+++" 0.5 s after the last data byte has no guard time
    before it: it is data, passed on at once, and no escape timer runs."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"payload", 5.0) == b"payload"
    assert detector.feed(b"+++", 5.5) == b"+++"
    assert detector.deadline() is None
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 5.0) == b""                        # held after silence ...
    assert detector.feed(b"a", 5.2) == b"+a"                      # ... data once "a" follows
    assert detector.feed(b"+++", 5.6) == b"+++"                   # 0.4 s after "a": data
    assert detector.deadline() is None


def test_held_plus_then_another_byte_is_data_in_order():
    """Mutants: escape.feed taking its fast path while "+" are held (`not self.held` -> True),
    not continuing a held "+" (`if self.held` -> False), or dropping the held "+" when a
    byte breaks the pattern.  No byte is lost or reordered: "+" then "a" is "+a", "++" then
    "ab" is "++ab"."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""
    assert detector.feed(b"a", 2.1) == b"+a"
    assert detector.deadline() is None
    assert detector.feed(b"++", 4.0) == b""
    assert detector.feed(b"ab", 4.2) == b"++ab"
    assert detector.deadline() is None
    assert detector.expire(9.0) == (b"", False)


def test_plus_plus_plus_then_a_byte_within_the_guard_time_is_data():
    """Mutants: escape.feed's `held == 3` branch (a byte after "+++" before the guard time
    after it ended) dropping the "+++", or `start = 0` changed (losing the byte).  The "+++"
    and the byte go on as data, in order, and no escape follows."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+++", 2.0) == b""
    assert detector.feed(b"x", 2.5) == b"+++x"
    assert detector.deadline() is None
    assert detector.expire(3.5) == (b"", False)
    assert detector.feed(b"yz", 2.6) == b"yz"
    # a one-byte "+" after "+++" is data too (four "+", not an escape)
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+++", 2.0) == b""
    assert detector.feed(b"+", 2.5) == b"++++"
    assert detector.expire(9.0) == (b"", False)


def test_the_three_pluses_may_come_in_separate_writes_within_the_guard_time():
    """Mutants: escape.feed's continuation of a held "+" (the `3 - self.held` limit, the
    `<` guard check (_within), `self.held += n`, `start = n`).  "+" then "++" 0.3 s later (both within
    the guard time of the first) is "+++": nothing is data, and the silence after counts
    from the last "+"."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""
    assert detector.deadline() == 3.0                             # the first "+"'s guard time
    assert detector.feed(b"++", 2.3) == b""
    assert detector.deadline() == 3.3
    assert detector.expire(3.2) == (b"", False)                   # not yet: held on
    assert detector.expire(3.3) == (b"", True)
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"++", 2.0) == b""
    assert detector.feed(b"+", 2.999) == b""                      # just inside the guard time after the first
    assert detector.expire(3.999) == (b"", True)
    # (exactly the guard time after the first is late: "within" is strictly less, the moment
    # expire() makes the held "+" data -- docs/behaviour.md, Leaving; b4bbe95)
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"++", 2.0) == b""
    assert detector.feed(b"+", 3.0) == b"++"                      # (and this "+", after 1 s of
    assert detector.held == 1                                     # silence, may start one anew)


def test_a_held_plus_followed_by_too_many_or_by_data_in_one_write():
    """Mutants: escape.feed's continuation releasing the held "+" when more follows in the
    same write (`start < len(data)` flipped or forced, the release deleted).  "+" then "++x"
    is "+++x" at once; "+" then "+++" is "++++" at once (four "+" are no escape)."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""
    assert detector.feed(b"++x", 2.2) == b"+++x"
    assert detector.deadline() is None
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""
    assert detector.feed(b"+++", 2.2) == b"++++"
    assert detector.deadline() is None
    assert detector.expire(9.0) == (b"", False)


def test_a_chunk_with_more_than_the_pluses_after_silence_is_data():
    """Mutants: escape.feed's start of an escape holding a write that is not only "+"
    (`n == len(data)` forced, `and` -> `or`, the limit 3 -> 4).  After silence, "+++a" and
    "++++" in one write are data at once, never held."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+++a", 2.0) == b"+++a"
    assert detector.deadline() is None
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"++++", 2.0) == b"++++"
    assert detector.deadline() is None
    assert detector.expire(9.0) == (b"", False)


def test_incomplete_pluses_become_data_when_their_guard_time_passes():
    """Mutants: escape.expire / deadline for a "+" or "++" that never became "+++" (the
    release of the held "+" deleted or miscounted, the deadline from the last byte instead
    of the first "+", `held = 0` deleted).  The note: the three characters must come within
    the guard time; once it has passed since the first, the held "+" are data, once."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"++", 2.0) == b""
    assert detector.deadline() == 3.0
    assert detector.expire(2.99) == (b"", False)
    assert detector.expire(3.0) == (b"++", False)
    assert detector.deadline() is None
    assert detector.expire(5.0) == (b"", False)                   # given once
    assert detector.feed(b"a", 5.1) == b"a"
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""
    assert detector.feed(b"+", 2.6) == b""
    assert detector.deadline() == 3.0                             # still the first "+"'s
    assert detector.expire(3.0) == (b"++", False)


def test_release_gives_the_held_pluses_as_data_once():
    """Mutants: escape.release not giving (or not forgetting) the held "+".  docs/behaviour.md:
    when online mode ends before the guard time has told (a DTR drop, the host closing the
    port) the held "+" are data and go into the connection first -- once."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"++", 2.0) == b""
    assert detector.release() == b"++"
    assert detector.release() == b""
    assert detector.deadline() is None
    assert detector.expire(9.0) == (b"", False)
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+++", 2.0) == b""
    assert detector.release() == b"+++"
    assert detector.deadline() is None


def test_an_empty_read_is_no_byte_and_breaks_no_silence():
    """Mutant: escape.feed without its empty-data guard (an empty read then releases a held
    "+++" as data, or fails on data[0]).  An empty read brings no character: it neither
    breaks the guard time after "+++" nor counts as data."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"", 0.5) == b""
    assert detector.feed(b"+++", 2.0) == b""
    assert detector.feed(b"", 2.5) == b""
    assert detector.expire(3.0) == (b"", True)


# -- the data phase (emulator/at/data_phase.py, sans-IO) ---------------------------------------
def _done(data, reason):
    return ok()


def test_variable_length_data_end_at_ctrl_z_or_esc_whichever_comes_first():
    """Mutants: data_phase.take's search for the terminator (min of Ctrl+Z / ESC, the ESC
    search dropped, the terminator not consumed).  docs/behaviour.md: AT+QSSLSEND's variable
    length ends at Ctrl+Z and ESC cancels; what follows the terminator is command input
    again, the terminator itself is neither data nor command."""
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"ab\x1bcd\x1aAT\r")
    assert phase.take(inbox, echo=False) == (b"", "cancel")
    assert (bytes(phase.buf), bytes(inbox)) == (b"ab", b"cd\x1aAT\r")
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"ab\x1acd\x1bAT\r")
    assert phase.take(inbox, echo=False) == (b"", "done")
    assert (bytes(phase.buf), bytes(inbox)) == (b"ab", b"cd\x1bAT\r")
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"\x1a")
    assert phase.take(inbox, echo=False) == (b"", "done")          # (empty: the handler's ERROR)
    assert (bytes(phase.buf), bytes(inbox)) == (b"", b"")


def test_variable_length_data_without_a_terminator_wait_for_more():
    """Mutant: data_phase.take ending the phase with no terminator.  Bytes without Ctrl+Z
    are data and the prompt goes on; the echo (ATE1, a "> " prompt) returns them."""
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"hello ")
    assert phase.take(inbox, echo=True) == (b"hello ", None)
    inbox += b"world\x1a"
    assert phase.take(inbox, echo=True) == (b"world", "done")
    assert bytes(phase.buf) == b"hello world" and not inbox


def test_esc_is_data_where_it_does_not_cancel():
    """Mutant: data_phase.take searching for ESC whatever request.escape_cancels says.  A
    prompt whose ESC does not cancel takes it as data up to Ctrl+Z."""
    phase = DataPhase(DataRequest(_done, max_length=10, escape_cancels=False), "+X")
    inbox = bytearray(b"a\x1bb\x1a")
    assert phase.take(inbox, echo=False) == (b"", "done")
    assert bytes(phase.buf) == b"a\x1bb"


def test_exactly_max_length_bytes_before_ctrl_z_is_no_overflow():
    """Mutants: data_phase.take's overflow test off by one (`>` -> `>=`, room miscounted).
    docs/behaviour.md: variable length takes at most 1460 bytes, more is ERROR: 1460 bytes
    then Ctrl+Z are sent, 1461 are an overflow (the first 1460 kept, none beyond) -- also
    when the bytes come in several pieces."""
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"x" * 1460 + b"\x1a")
    assert phase.take(inbox, echo=False) == (b"", "done")
    assert len(phase.buf) == 1460 and not phase.overflow
    phase = DataPhase(DataRequest(_done, max_length=1460), "+QSSLSEND=0")
    inbox = bytearray(b"x" * 1000)
    assert phase.take(inbox, echo=False) == (b"", None)
    inbox += b"y" * 461 + b"\x1a"
    assert phase.take(inbox, echo=False) == (b"", "overflow")
    assert bytes(phase.buf) == b"x" * 1000 + b"y" * 460
    phase = DataPhase(DataRequest(_done, max_length=4), "+X")
    for chunk in (b"abcd", b"e", b"f"):                            # full, then more: no growth
        inbox = bytearray(chunk)
        assert phase.take(inbox, echo=False) == (b"", None)
    inbox = bytearray(b"\x1a")
    assert phase.take(inbox, echo=False) == (b"", "overflow")
    assert bytes(phase.buf) == b"abcd"


def test_data_are_echoed_only_with_ate1_on_an_echoing_prompt():
    """Mutant: data_phase.take's `echo and req.echo` -> `or`.  docs/behaviour.md: in a "> "
    data prompt the data are echoed (ATE1); after CONNECT (AT+QFUPL) they are not, and with
    ATE0 never."""
    phase = DataPhase(DataRequest(_done, length=3, echo=False, escape_cancels=False), "+QFUPL")
    assert phase.take(bytearray(b"abc"), echo=True) == (b"", "done")
    phase = DataPhase(DataRequest(_done, max_length=10), "+QSSLSEND=0")
    assert phase.take(bytearray(b"abc\x1a"), echo=False) == (b"", "done")
    phase = DataPhase(DataRequest(_done, length=3), "+QSSLSEND=0,3")
    assert phase.take(bytearray(b"abc"), echo=True) == (b"abc", "done")


def test_fixed_length_takes_exactly_its_bytes_ctrl_z_and_esc_included():
    """Mutants: data_phase.take's fixed-length branch (`want` miscounted, the length test
    flipped, the rest not left in the inbox).  docs/behaviour.md: fixed length takes exactly
    <sendlen> bytes, binary-safe (Ctrl+Z and ESC are data); what follows is command input."""
    phase = DataPhase(DataRequest(_done, length=4, escape_cancels=False), "+QSSLSEND=0,4")
    inbox = bytearray(b"\x1a\x1b")
    assert phase.take(inbox, echo=False) == (b"", None)
    inbox += b"z\x00AT\r"
    assert phase.take(inbox, echo=False) == (b"", "done")
    assert (bytes(phase.buf), bytes(inbox)) == (b"\x1a\x1bz\x00", b"AT\r")


def test_ack_mode_writes_an_ack_after_every_block_but_the_last():
    """Mutants: data_phase.take's ack-mode block arithmetic (`ack_block - len % ack_block`,
    the `% == 0` test).  AT+QFUPL ack mode: after each block but the last the module writes
    "A" and the host sends the next; a take never runs past a block's end, so the host's
    early bytes of the next block stay in the inbox until then."""
    phase = DataPhase(DataRequest(_done, length=10, ack_block=4, echo=False, escape_cancels=False), "+QFUPL")
    inbox = bytearray(b"abc")
    assert phase.take(inbox, echo=True) == (b"", None)
    inbox += b"defgh"
    assert phase.take(inbox, echo=True) == (b"A", None)             # block 1 (abcd) complete
    assert bytes(inbox) == b"efgh"
    assert phase.take(inbox, echo=True) == (b"A", None)             # block 2 (efgh)
    inbox += b"ijAT\r"
    assert phase.take(inbox, echo=True) == (b"", "done")            # the last: no ack
    assert (bytes(phase.buf), bytes(inbox)) == (b"abcdefghij", b"AT\r")
    phase = DataPhase(DataRequest(_done, length=8, ack_block=4, echo=False, escape_cancels=False), "+QFUPL")
    assert phase.take(bytearray(b"abcd"), echo=True) == (b"A", None)
    assert phase.take(bytearray(b"efgh"), echo=True) == (b"", "done")   # ends on a block: done, no "A"


def test_plus_escape_in_an_upload_removes_the_three_pluses():
    """Mutants: data_phase's "+++" handling (the detector not made for a fixed-length
    request with plus_escape, escape_expired not taking the "+++" out of the data).
    docs/behaviour.md: "+++" with the guard times ends AT+QFUPL early, the bytes before it are
    the file; a "+++" without the guard times is data."""
    request = DataRequest(_done, length=100, echo=False, escape_cancels=False, plus_escape=True)
    phase = DataPhase(request, "+QFUPL", guard=1.0, now=0.0)
    assert phase.escape_deadline() is None
    assert phase.take(bytearray(b"file"), echo=False, now=0.5) == (b"", None)
    assert phase.take(bytearray(b"+++"), echo=False, now=1.0) == (b"", None)    # too soon: data
    assert phase.escape_deadline() is None
    assert phase.take(bytearray(b"+++"), echo=False, now=2.0) == (b"", None)    # after 1 s
    assert phase.escape_deadline() == 3.0
    assert phase.escape_expired(2.5) is False
    assert bytes(phase.buf) == b"file+++" + b"+++"                 # data until the guard time tells
    assert phase.escape_expired(3.0) is True
    assert bytes(phase.buf) == b"file+++"
    # a fixed-length prompt without the escape (AT+QSSLSEND=<id>,<len>): "+++" is data
    phase = DataPhase(DataRequest(_done, length=100, escape_cancels=False), "+QSSLSEND=0,100", now=0.0)
    assert phase.take(bytearray(b"+++"), echo=False, now=2.0) == (b"", None)
    assert phase.escape_deadline() is None and phase.escape_expired(9.0) is False
    assert bytes(phase.buf) == b"+++"


def test_fixed_length_data_are_echoed_as_they_come():
    """Mutant: data_phase.take's fixed-length branch without its `return out, None` (a part
    of the data then falls through to the Ctrl+Z code, which drops its echo).  docs/behaviour.md:
    in a "> " data prompt the data are echoed (ATE1) -- every part, not only the last."""
    phase = DataPhase(DataRequest(_done, length=5, escape_cancels=False), "+QSSLSEND=0,5")
    assert phase.take(bytearray(b"ab"), echo=True) == (b"ab", None)
    assert phase.take(bytearray(b"cde"), echo=True) == (b"cde", "done")


def test_a_hang_up_in_a_data_prompt_abandons_it(caplog):
    """Mutant: DataPhase starting with `timer = 0` instead of None (the interpreter then
    cancels a timer that was never set).  docs/behaviour.md: the host closing the device
    abandons a half-entered data prompt (nothing stored), and the next host meets command
    state.  ML302 AT+QSECWRITE (a "> " prompt with no idle timer)."""
    out = bytearray()
    m = Modem(load_profile("ml302"))
    m.interpreter.strict = True
    m.attach(out.extend)
    m.feed(b"ATE0\r")
    out.clear()
    m.feed(b"AT+QSECWRITE=1\r")
    assert bytes(out) == b"\r\n> "
    m.feed(b"-----BEGIN")
    m.host_hangup()
    out.clear()
    m.feed(b"AT+QSECREAD=1\r")
    assert bytes(out) == b"\r\n+CME ERROR: 22\r\n"             # an empty slot: nothing stored
    out.clear()
    m.feed(b"AT\r")
    assert bytes(out) == b"\r\nOK\r\n"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


# -- SSL contexts (emulator/sockets/context.py) --------------------------------------------------
def test_cipher_ids_are_0x_and_one_to_four_hex_digits():
    """Mutants: context.parse_cipher_list with its digit-count bounds moved (`1 <=` -> `2 <=`
    or `0 <=`) or without the "0X" check.  docs/behaviour.md: each id is `0X` and one to four
    hex digits, in either case of x, joined by ':' (or ';' in quotes); anything else is
    malformed (ERROR at the write)."""
    assert parse_cipher_list("0X5") == (0x0005,)
    assert parse_cipher_list("0x0035") == (0x0035,)
    assert parse_cipher_list("0XC02F:0x9c") == (0xC02F, 0x009C)
    assert parse_cipher_list("0X0035;0XC02F") == (0x0035, 0xC02F)
    for bad in ("0X", "0X:0X0035", "0035", "C02F", "0035:0XC02F", "0XC02F:C02F", "00C02F", ""):
        assert parse_cipher_list(bad) is None, bad


def _settings(profile, **values):
    ctx = SslContext(0)
    for name, value in values.items():
        ctx[name] = value
    files = {"UFS:ca.pem": b"CA-PEM\n", "UFS:ex.pem": b"EX-PEM\n", "UFS:cli.pem": b"CLI",
             "UFS:key.pem": b"KEY"}
    return to_tls_settings(ctx, host="a.example", profile=profile, read_material=files.get,
                           clock=lambda: None)


def test_a_context_that_cannot_work_is_refused_before_the_handshake():
    """Mutants: context.to_tls_settings taking a seclevel 1 context without `cacert` (the
    `needed` test forced off, material("cacert", False)), or seclevel 2 without its client
    certificate or key.  docs/behaviour.md: a context that cannot work (seclevel 1 without
    cacert, a configured file that does not exist) fails the open with 552 -- a SetupError
    of kind "bad_config", the one the error table maps to 552."""
    profile = load_profile("ec2x")
    for values in ({"seclevel": 1}, {"seclevel": 1, "cacertex": "UFS:ex.pem"},
                   {"seclevel": 1, "cacert": "UFS:none.pem"},
                   {"seclevel": 2, "cacert": "UFS:ca.pem", "clientkey": "UFS:key.pem"},
                   {"seclevel": 2, "cacert": "UFS:ca.pem", "clientcert": "UFS:cli.pem"},
                   {"seclevel": 2, "cacert": "UFS:ca.pem", "clientcert": "UFS:cli.pem",
                    "clientkey": "UFS:none.pem"}):
        with pytest.raises(SetupError) as failure:
            _settings(profile, **values)
        assert failure.value.kind == "bad_config", values
    # seclevel 0 checks nothing: no file is needed, none is read
    assert _settings(profile, seclevel=0, cacert="UFS:none.pem").ca_pem is None


def test_the_files_a_context_names_are_used_at_its_seclevel():
    """Mutants: context.to_tls_settings's seclevel tests (`>= 1`, `== 2`) and the cacertex
    concatenation.  docs/behaviour.md: seclevel 1 verifies the server against cacert, with
    cacertex's certificates trusted together with it; seclevel 2 adds the client certificate
    and key."""
    profile = load_profile("ec2x")
    one = _settings(profile, seclevel=1, cacert="UFS:ca.pem", cacertex="UFS:ex.pem",
                    clientcert="UFS:cli.pem", clientkey="UFS:key.pem")
    assert one.ca_pem == b"CA-PEM\nEX-PEM\n"
    assert (one.client_cert_pem, one.client_key_pem) == (None, None)
    two = _settings(profile, seclevel=2, cacert="UFS:ca.pem", clientcert="UFS:cli.pem",
                    clientkey="UFS:key.pem")
    assert (two.ca_pem, two.client_cert_pem, two.client_key_pem) == (b"CA-PEM\n", b"CLI", b"KEY")


def test_0xffff_offers_the_profile_table_and_a_list_exactly_its_ids():
    """Mutants: context.to_tls_settings's 0XFFFF expansion (the test flipped, the PSK case, the
    allow_ciphers filter).  docs/behaviour.md: 0XFFFF offers the profile's table (those the TLS
    build has; with a PSK configured, the engine's full offer including the PSK suites); a
    configured list is offered exactly, in order."""
    profile = load_profile("ec2x")
    table = tuple(int(x, 16) for x in profile["ssl.cipher_suites"])
    assert _settings(profile).cipher_suites == table
    assert _settings(profile, ciphersuite=(0xC02F, 0x0035)).cipher_suites == (0xC02F, 0x0035)
    assert _settings(profile, psk=("id", "0011")).cipher_suites == ()
    ctx = SslContext(0)
    narrowed = to_tls_settings(ctx, host="a.example", profile=profile, read_material=lambda p: None,
                               clock=lambda: None, allow_ciphers=table[1:3])
    assert narrowed.cipher_suites == table[1:3]
