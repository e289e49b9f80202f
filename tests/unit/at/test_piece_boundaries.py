"""What the boundaries between the pieces fed to the interpreter teach it about the host
(Interpreter._host_cut, lexer.piecewise), sans-IO: a piece that held an earlier line's S3
came from a big write the pty or the reader cut (its cut says nothing of how the host
writes); a piece that was part of one line, or one line and its CR, is the host's own."""
from __future__ import annotations

import pytest

from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile


@pytest.fixture
def modem():
    out = bytearray()
    m = Modem(load_profile("ec2x"))
    m.interpreter.strict = True
    m.attach(out.extend)
    m.out = out
    return m


def feed_all(modem, *pieces: bytes) -> bool:
    for piece in pieces:
        modem.feed(piece)
    return modem.interpreter.lexer.piecewise


@pytest.mark.parametrize("pieces", [
    (b"AT+CMEE=2\r\nAT+CM", b"EE=2\r\n"),                 # a burst cut mid-line
    (b"AT\r\nAT+CMEE=2\r", b"\nAT\r\n"),                   # a burst cut between CR and LF
    (b"AT+CMEE=2\r\n" * 1489 + b"AT+CM", b"EE=2\r\n"),     # a 16 KiB read's cut
])
def test_a_cut_inside_a_burst_of_whole_lines_teaches_nothing(modem, pieces):
    assert feed_all(modem, b"ATE0\r\n") is False
    assert feed_all(modem, *pieces) is False


@pytest.mark.parametrize("pieces", [
    (b"AT+CS", b"Q\r\n"),                                  # a line's text in two writes
    (b"A", b"T", b"\r", b"\n"),                            # byte by byte
    (b"AT+CSQ\r", b"\n"),                                  # a line's CR, then its LF apart
    (b"AT\r\n", b"AT+CS", b"Q\r\n"),                       # after whole lines, one in parts
])
def test_a_line_written_in_parts_is_learnt(modem, pieces):
    assert feed_all(modem, b"ATE0\r\n") is False
    assert feed_all(modem, *pieces) is True


def test_the_terminator_is_s3(modem):
    """ATS3=64 ('@'): a piece holding an earlier '@'-ended line came from a burst."""
    assert feed_all(modem, b"ATE0;S3=64\r") is False
    assert feed_all(modem, b"AT@\nAT+CS", b"Q@\n") is False
    assert feed_all(modem, b"AT+CS", b"Q@\n") is True
