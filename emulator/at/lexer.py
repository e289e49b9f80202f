"""Sans-IO command-line lexer: raw bytes from the host in, command-line events out.

It knows only V.250 line discipline: the "AT"/"at" prefix, the S3 terminator, S5
editing, LF after CR (neither echoed nor part of the next line), "A/" repetition, echo and the 2 KiB line limit. It never
interprets a command and never raises on any byte: anything that is not part of
a command line is dropped (and echoed, as a real module echoes every byte it
receives in command state).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

MAX_LINE = 2048


@dataclass(frozen=True)
class Echo:
    data: bytes


@dataclass(frozen=True)
class CommandLine:
    """A complete line; `body` is what follows the AT prefix (b"" for a bare AT)."""
    body: bytes


@dataclass(frozen=True)
class RepeatLast:
    """The host typed A/ : run the previous command line again."""


@dataclass(frozen=True)
class LineTooLong:
    """The line exceeded the limit; reported at its terminator, its bytes dropped."""


class CommandLineLexer:
    """Assembles command lines.  `s3`/`s5` (terminator, backspace) and `echo`
    are read from the owner on every byte, so ATS3=... and ATE0 take effect at
    once, as on a module."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.s3 = 13
        self.s5 = 8
        self.echo = True
        self._buf = bytearray()
        self._state = "idle"        # idle -> got_a -> in_line; "overflow" until S3
        self._last_was_s3 = False
        # How this host ends its lines: True CR LF, False CR alone, None not seen yet
        # (the byte after a line's S3 in command state tells).
        self.crlf: bool | None = None
        # The last line came in one piece, "AT...<S3>" and nothing after (a host that
        # writes whole lines: had it ended this one with CR LF, the LF would have come
        # with it), rather than byte by byte or in parts.
        self.last_line_whole = False
        # This host writes its lines in pieces: a line's CR and its LF apart (the LF first
        # in a later write), or a line's text over several writes -- a byte-by-byte writer,
        # whose late LF may be read together with what follows.
        self.piecewise = False

    def reset(self) -> None:
        self._buf.clear()
        self._state = "idle"
        self._last_was_s3 = False

    def forget_line_end(self) -> None:
        """Bytes went elsewhere (a data prompt): an LF now no longer follows S3."""
        self._last_was_s3 = False

    @property
    def mid_line(self) -> bool:
        """Part of a command line ("A", "AT...") has come, its S3 not yet."""
        return self._state in ("got_a", "in_line")

    @property
    def after_line_end(self) -> bool:
        """The last byte taken was S3 (an LF now would end that line)."""
        return self._last_was_s3

    def feed(self, data: bytes) -> list[object]:
        line = self._whole_line(data)
        if line is not None:
            return line
        events: list[object] = []
        echo = bytearray()
        i, end = 0, len(data)
        while i < end:
            if not self._last_was_s3 and self._state in ("idle", "overflow"):
                # Between lines (or past the limit) only 'A'/'a' and S3 (only S3 past
                # the limit) change anything: skip the rest in one go, echoed, so bytes
                # that are no command (a host's binary garbage) cost no per-byte step.
                stop = _interesting(self._state, self.s3).search(data, i)
                j = stop.start() if stop else end
                if j > i:
                    if self.echo:
                        echo += data[i:j]
                    i = j
                    continue
            byte = data[i]
            i += 1
            # The LF of a CR LF ending is part of the terminator the line was run on:
            # echoing it would put a stray "\n" after the command's final result.
            if self.echo and not (byte == 10 and self._last_was_s3):
                echo.append(byte)
            event = self._step(byte)
            if event is not None:
                if echo:
                    events.append(Echo(bytes(echo)))
                    echo.clear()
                events.append(event)
        if echo:
            events.append(Echo(bytes(echo)))
        return events

    def _whole_line(self, data: bytes) -> list[object] | None:
        """The common case in one go: a whole command line, "AT...<S3>", from command
        state with nothing to edit (no S5, no other S3).  The events and the state after
        are exactly what _step gives byte by byte; anything else returns None."""
        s3 = self.s3
        if (self._state != "idle" or len(data) < 3 or data[0] not in (0x41, 0x61)
                or data[1] not in (0x54, 0x74) or data.find(s3) != len(data) - 1
                or data.find(self.s5) >= 0 or len(data) - 3 > self.max_line):
            return None
        if self._last_was_s3:
            self.crlf = False                 # the byte after the last S3 was an 'A'
        self._last_was_s3 = True
        self._buf.clear()
        self.last_line_whole = True
        line = CommandLine(bytes(data[2:-1]))
        return [Echo(bytes(data)), line] if self.echo else [line]

    def _step(self, byte: int) -> object | None:
        state = self._state
        if byte in _PREFIX.get(state, b""):
            # The prefix first: between lines 'A' starts one and 'T' (or '/': A/) after it goes
            # on, whatever S3 and S5 are -- set to 'A', 'T' or '/' (V.250 allows 0-127) they
            # would otherwise leave no line that could set them back, or no A/ (docs/behaviour.md,
            # command line).
            if self._last_was_s3:
                self.crlf = False
            self._last_was_s3 = False
            if state == "got_a" and byte == 0x2F:            # "A/"
                self._state = "idle"
                return RepeatLast()
            if state == "got_a" and byte in (0x54, 0x74):
                self._state = "in_line"
                self._buf.clear()
            else:
                self._state = "got_a"
            return None
        after_s3 = self._last_was_s3
        self._last_was_s3 = byte == self.s3
        if after_s3:
            self.crlf = byte == 10
        if byte == self.s3:
            return self._end_of_line()
        if byte == 10 and after_s3:          # LF following CR: part of the line ending
            return None
        if self._state == "overflow":
            return None
        if byte == self.s5:
            if self._state == "in_line":
                if self._buf:
                    self._buf.pop()
                else:
                    self._state = "got_a"     # it deletes the prefix's T: "AT<BS>T+CSQ" is AT+CSQ
            elif self._state == "got_a":
                self._state = "idle"
            return None
        if self._state == "idle":             # (not 'A'/'a': taken above)
            return None
        if self._state == "got_a":            # (not 'A'/'a'/'T'/'t'/'/': taken above)
            self._state = "idle"
            return None
        # in_line
        if len(self._buf) >= self.max_line:
            self._state = "overflow"        # answered with ERROR at the terminator
            self._buf.clear()
            return None
        self._buf.append(byte)
        return None

    def _end_of_line(self) -> object | None:
        state, self._state = self._state, "idle"
        self.last_line_whole = False
        if state == "overflow":
            return LineTooLong()
        if state == "in_line":
            body = bytes(self._buf)
            self._buf.clear()
            return CommandLine(body)
        return None


# What a byte in each state is first of all: the command prefix ("AAT" starts a line too).
_PREFIX = {"idle": b"Aa", "got_a": b"AaTt/"}


@functools.lru_cache(maxsize=16)
def _interesting(state: str, s3: int) -> re.Pattern:
    """The bytes that matter in `state` ("idle": 'A', 'a', S3; "overflow": S3)."""
    chars = re.escape(bytes([s3])) + (b"Aa" if state == "idle" else b"")
    return re.compile(b"[" + chars + b"]")
