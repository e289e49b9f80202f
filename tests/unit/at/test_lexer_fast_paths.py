"""The lexer's bulk paths (a whole "AT...<S3>" line at once; bytes between lines or past
the line limit skipped in one go) give exactly what its byte-by-byte step gives: the same
events, the same echo, the same state after; the parser's separator search is its
quote-aware scan (issue 13: speed without another behaviour)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.at.lexer import CommandLineLexer, Echo

PIECES = st.sampled_from([b"\r", b"\n", b"\r\n", b"A", b"T", b"a", b"t", b"AT", b"at", b"/", b"\x08",
                          b"+", b"E", b"x", b"\x00", b"\xb2", b"AT+QSSLSEND=0,1460\r", b"ATE0\r",
                          b"\x7f", b"ATS3=10\r", b"zzzzzzzz"])
CHUNKS = st.lists(st.one_of(st.binary(max_size=40), st.lists(PIECES, max_size=12).map(b"".join)),
                  max_size=8)


def stepwise(lexer: CommandLineLexer, data: bytes) -> list[object]:
    """The byte-by-byte reference (the lexer's feed before its bulk paths)."""
    events: list[object] = []
    echo = bytearray()
    for byte in data:
        if lexer.echo and not (byte == 10 and lexer._last_was_s3):
            echo.append(byte)
        event = lexer._step(byte)
        if event is not None:
            if echo:
                events.append(Echo(bytes(echo)))
                echo.clear()
            events.append(event)
    if echo:
        events.append(Echo(bytes(echo)))
    return events


def merged(events: list[object]) -> list[object]:
    """Adjacent Echo events as one (a bulk skip may cut the echo elsewhere)."""
    out: list[object] = []
    for event in events:
        if isinstance(event, Echo) and out and isinstance(out[-1], Echo):
            out[-1] = Echo(out[-1].data + event.data)
        else:
            out.append(event)
    return out


def state(lexer: CommandLineLexer) -> tuple:
    return lexer._state, bytes(lexer._buf), lexer._last_was_s3, lexer.crlf


@settings(max_examples=400, deadline=None)
@given(CHUNKS, st.booleans(), st.sampled_from([13, 10, 65, 0x7f]), st.sampled_from([8, 0x7f, 13]),
       st.sampled_from([4, 16, 2048]))
def test_bulk_paths_match_the_byte_by_byte_step(chunks, echo, s3, s5, max_line):
    fast, slow = CommandLineLexer(max_line), CommandLineLexer(max_line)
    for lexer in (fast, slow):
        lexer.echo, lexer.s3, lexer.s5 = echo, s3, s5
    for chunk in chunks:
        assert merged(fast.feed(chunk)) == merged(stepwise(slow, chunk)), chunk
        assert state(fast) == state(slow)


def test_a_megabyte_of_garbage_is_echoed_and_runs_nothing():
    lexer = CommandLineLexer()
    garbage = bytes(b ^ 0x41 for b in range(256)).replace(b"A", b"").replace(b"a", b"").replace(b"\r", b"")
    events = lexer.feed(garbage * 4096)
    assert merged(events) == [Echo(garbage * 4096)]
    assert lexer.feed(b"AT\r")[-1].body == b""


def _skip_reference(text: str, i: int) -> int:
    quoted = False
    while i < len(text):
        if text[i] == '"':
            quoted = not quoted
        elif text[i] == ";" and not quoted:
            return i
        i += 1
    return i


@given(st.text(alphabet='";a,=', max_size=30), st.integers(0, 30))
def test_the_separator_search_matches_the_quote_aware_scan(text, start):
    from emulator.at.parser import _skip_to_separator
    start = min(start, len(text))
    assert _skip_to_separator(text, start) == _skip_reference(text, start)
