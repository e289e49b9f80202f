"""The command state of one modem port: lexer -> parser -> dispatcher -> framing.

Bytes from the host enter feed().  In command state they go through the lexer;
after a handler asks for data (DataRequest) they go to a collector until the
length is reached or Ctrl+Z / ESC; while a handler's answer is pending the port
is busy and input waits in the inbox (nothing is lost).  URCs raised meanwhile
are queued and written when the port is back in command state.
Nothing here touches a file descriptor or the event loop: output leaves through
modem.write(), and timers and pending commands are scheduled by the modem
(modem.call_later, modem.spawn), so the interpreter runs in unit tests as is.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from emulator.at.lexer import CommandLine, CommandLineLexer, Echo, LineTooLong, RepeatLast
from emulator.at.parser import Command, Malformed, parse_line
from emulator.at.cme import cme_text
from emulator.logsafe import get_logger, loggable, redact
from emulator.at.registry import TABLE
from emulator.at.responses import RESULT_CODES, Cme, CommandError, DataRequest, Raw, Response, Text

if TYPE_CHECKING:
    from emulator.modem.modem import Modem

log = get_logger("emulator.at")
_S_REGISTER = re.compile(r"^S\d+$")
CTRL_Z, ESC = 0x1A, 0x1B
MAX_WAITING_INPUT = 1 << 20      # host bytes held while a command is pending


class _Collector:
    def __init__(self, request: DataRequest) -> None:
        self.request = request
        self.buf = bytearray()
        self.overflow = False
        self.timer = None                # handle from modem.call_later
        self.lf_until: float | None = None   # a first byte LF before this time ends the line


class Interpreter:
    def __init__(self, modem: "Modem") -> None:
        self.modem = modem
        self.lexer = CommandLineLexer(modem.profile["serial.line_max"])
        self._inbox = bytearray()
        self._queue: list[Command | Malformed] = []
        self._after: list[str] = []
        self._collector: _Collector | None = None
        self._busy = False
        self._executing = False          # inside a handler: its URCs go after its answer
        self._fresh_line = False         # the next data prompt directly follows a command line
        self._urcs: list[bytes] = []
        self._last_line: bytes | None = None
        self._line_end = float("-inf")   # modem.monotonic() when the last command line's S3 came
        self._lf_window = modem.profile.get("serial.lf_window_ms", 50) / 1000

    # -- input ---------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self._busy and self._collector is None and not self._executing

    def feed(self, data: bytes) -> None:
        if self._busy and len(self._inbox) + len(data) > MAX_WAITING_INPUT:
            room = max(0, MAX_WAITING_INPUT - len(self._inbox))
            log.warning("port busy: %d input bytes dropped (more than %d waiting)",
                        len(data) - room, MAX_WAITING_INPUT)
            data = data[:room]
        self._inbox += data
        self._pump()

    def hangup(self) -> None:
        """The host closed the port: whatever it was in the middle of is abandoned
        (a half-entered data prompt sends or stores nothing), so the next host to
        open the port starts in command state."""
        if self._collector is not None:
            if self._collector.timer is not None:
                self._collector.timer.cancel()
            log.info("host closed the port during a data prompt: %d bytes discarded",
                     len(self._collector.buf))
            self._collector = None
        self._inbox.clear()
        self._queue.clear()
        self._after.clear()
        self._urcs.clear()
        self.lexer.reset()

    def _pump(self) -> None:
        while self._inbox and not self._busy:
            if self._collector is not None:
                self._feed_collector()
            else:
                self._lex_some()
        if self.idle:
            self._flush_urcs()

    def _lex_some(self) -> None:
        s = self.modem.settings
        self.lexer.s3, self.lexer.s5, self.lexer.echo = s.sreg[3], s.sreg[5], s.echo
        # Up to the next line end or '/': at most one line event per chunk, so a
        # command that switches to data mode sees the following bytes as data.
        cut = len(self._inbox)
        for stop in (bytes([s.sreg[3]]), b"/"):
            i = self._inbox.find(stop)
            if 0 <= i < cut:
                cut = i + 1
        chunk = bytes(self._inbox[:cut])
        del self._inbox[:cut]
        for event in self.lexer.feed(chunk):
            if isinstance(event, Echo):
                self.modem.write(event.data)
            elif isinstance(event, CommandLine):
                self._last_line = event.body
                self._line_end = self.modem.monotonic()
                self._start_line(event.body)
            elif isinstance(event, RepeatLast):
                if self._last_line is not None:
                    self._start_line(self._last_line)
            elif isinstance(event, LineTooLong):
                log.info("command line longer than %d bytes: ERROR", self.lexer.max_line)
                self._write_final("ERROR")

    # -- command execution ---------------------------------------------------
    def _start_line(self, body: bytes) -> None:
        self._fresh_line = True
        try:
            self._queue = list(parse_line(body))
        except Exception:     # the parser never raises by design; if it does, the line still ends
            log.exception("cannot parse AT%s", loggable(body.decode("latin-1")))
            self._queue = [Malformed(body.decode("latin-1"), "parser failure")]
        self._after = []
        self._run_queue()

    def _run_queue(self) -> None:
        while self._queue:
            item = self._queue.pop(0)
            response = self._dispatch(item)
            if not self._handle(response):
                return
        self._write_final("OK")
        self._write_after()

    def _dispatch(self, item: Command | Malformed) -> Response:
        if isinstance(item, Malformed):
            log.info("ERROR: malformed command AT%s (%s)", loggable(item.raw), item.reason)
            return Response([], "ERROR")
        profile = self.modem.profile
        name = "S" if _S_REGISTER.match(item.name) else item.name
        variant = profile.command_variant(name)
        if variant is None:
            log.info("ERROR: AT%s is not a command of profile %s", loggable(item.raw), profile.name)
            return Response([], "ERROR")
        entry = TABLE.lookup(name, item.kind, variant)
        if entry is None:
            if item.kind == "test" and TABLE.knows(name, variant):
                return Response([], "OK")
            log.info("ERROR: AT%s (%s form) not supported", loggable(item.raw), item.kind)
            return Response([], "ERROR")
        self._executing = True
        try:
            return entry.func(self.modem, item)
        except CommandError as exc:
            if exc.log:
                log.info("%s for AT%s: %s", _final_name(exc.final), loggable(item.raw),
                         exc.log.replace(item.raw, redact(item.raw)))
            return Response([], exc.final)
        except Exception:     # a handler bug must never take the emulator down
            log.exception("handler for AT%s failed", loggable(item.raw))
            return Response([], "ERROR")
        finally:
            self._executing = False

    def _handle(self, response: Response) -> bool:
        """Write a response; True when the line may go on with its next command."""
        self._write_lines(response.lines)
        self._after.extend(response.after)
        if response.pending is not None:
            self._await(response.pending)
            return False
        if response.data is not None:
            self._queue.clear()                  # the rest of the line is data now
            self._start_collector(response.data)
            return False
        if response.final == "OK":
            return True
        self._queue.clear()
        if response.final is not None:
            self._write_final(response.final)
        self._write_after()
        return False

    def _await(self, awaitable) -> None:
        self._busy = True
        self.modem.spawn(awaitable, self._pending_done)

    def _pending_done(self, outcome) -> None:
        """outcome() returns the pending command's Response or raises its exception."""
        self._busy = False
        try:
            response = outcome()
        except CommandError as exc:
            response = Response([], exc.final)
        except Exception:
            log.exception("pending command failed")
            response = Response([], "ERROR")
        if self._handle(response):
            self._run_queue()
        self._pump()

    # -- data collection -----------------------------------------------------
    def _start_collector(self, request: DataRequest) -> None:
        self._collector = collector = _Collector(request)
        if request.prompt:
            self.modem.write(request.prompt)
        # A host ending its lines with CR LF: the LF that came with the CR belongs to the
        # command line, not to the data (which the host sends only after the prompt) --
        # also when it arrives just after the prompt, from a host writing byte by byte.
        if self._fresh_line and self.lexer.s3 == 13:
            if self._inbox[:1] == b"\n":
                del self._inbox[:1]
                self.lexer.forget_line_end()
            elif not self._inbox and self.lexer.crlf is not False:
                # (a host known to end its lines with CR alone sends no LF: a first byte
                # LF from it is data, however soon it comes)
                collector.lf_until = self._line_end + self._lf_window
        self._fresh_line = False
        if request.timeout is not None:
            collector.timer = self.modem.call_later(
                request.timeout, self._finish_collector, collector, "timeout")
        if request.length == 0:
            self._finish_collector(collector, "done")

    def _feed_collector(self) -> None:
        c = self._collector
        req = c.request
        if c.lf_until is not None:               # the first byte after the prompt
            late_lf = self._inbox[:1] == b"\n" and self.modem.monotonic() <= c.lf_until
            c.lf_until = None
            self.lexer.forget_line_end()
            if late_lf:
                del self._inbox[:1]
                return
        if req.length is not None:
            take = bytes(self._inbox[:req.length - len(c.buf)])
            del self._inbox[:len(take)]
            c.buf += take
            self._echo_data(take, req)
            if len(c.buf) == req.length:
                self._finish_collector(c, "done")
            return
        ends = [i for i in (self._inbox.find(CTRL_Z),
                            self._inbox.find(ESC) if req.escape_cancels else -1) if i >= 0]
        end = min(ends) if ends else len(self._inbox)
        data = bytes(self._inbox[:end])
        self._echo_data(data, req)
        terminator = self._inbox[end] if end < len(self._inbox) else None
        del self._inbox[:end + (terminator is not None)]
        room = (req.max_length - len(c.buf)) if req.max_length is not None else len(data)
        if len(data) > room:
            c.overflow = True
        c.buf += data[:max(room, 0)]
        if terminator == CTRL_Z:
            self._finish_collector(c, "overflow" if c.overflow else "done")
        elif terminator == ESC:
            self._finish_collector(c, "cancel")

    def _echo_data(self, data: bytes, request: DataRequest) -> None:
        if data and request.echo and self.modem.settings.echo:
            self.modem.write(data)

    def _finish_collector(self, collector: _Collector, reason: str) -> None:
        if self._collector is not collector:
            return                               # a late timer
        self._collector = None
        if collector.timer is not None:
            collector.timer.cancel()
        self._executing = True
        try:
            response = collector.request.on_done(bytes(collector.buf), reason)
        except CommandError as exc:
            response = Response([], exc.final)
        except Exception:
            log.exception("data handler failed")
            response = Response([], "ERROR")
        finally:
            self._executing = False
        if self._handle(response):
            self._write_final("OK")
            self._write_after()
        if reason == "timeout":              # from a timer, outside _pump
            self._pump()

    # -- output --------------------------------------------------------------
    def urc(self, line: str | bytes, raw: bytes = b"") -> None:
        """An unsolicited line (+ optional raw bytes after it, e.g. direct push data)."""
        text = line.encode("latin-1") if isinstance(line, str) else line
        framed = (b"\r\n" + text + b"\r\n" if self.modem.settings.verbose else text + b"\r\n") + raw
        if self.idle:
            self.modem.write(framed)
        else:
            self._urcs.append(framed)

    def _flush_urcs(self) -> None:
        while self._urcs:
            self.modem.write(self._urcs.pop(0))

    def _write_lines(self, lines) -> None:
        if not lines:
            return
        verbose = self.modem.settings.verbose
        out = bytearray(b"\r\n" if verbose else b"")
        for line in lines:
            out += line.data if isinstance(line, Raw) else line.encode("latin-1")
            out += b"\r\n"
        self.modem.write(bytes(out))

    def _write_after(self) -> None:
        """The end of a line's answer: its trailing lines, then URCs that waited."""
        after, self._after = self._after, []
        for line in after:
            self.urc(line)
        if self.idle:
            self._flush_urcs()

    def _write_final(self, final) -> None:
        s = self.modem.settings
        if isinstance(final, Text):
            text = final.text
        elif isinstance(final, Cme):
            if s.quiet:
                return
            if s.cmee == 0:
                final, text = "ERROR", None
            elif s.cmee == 1:
                text = f"+CME ERROR: {final.code}"
            else:
                text = f"+CME ERROR: {cme_text(final.code, self.modem.profile)}"
            if text is not None:
                self.modem.write((f"\r\n{text}\r\n" if s.verbose else f"{text}\r\n").encode("latin-1"))
                return
        if isinstance(final, str):
            if s.quiet:
                return
            if not s.verbose:
                self.modem.write(f"{RESULT_CODES[final]}\r".encode())
                return
            text = final
        self.modem.write((f"\r\n{text}\r\n" if s.verbose else f"{text}\r\n").encode("latin-1"))


def _final_name(final) -> str:
    if isinstance(final, Cme):
        return f"+CME ERROR: {final.code}"
    return final.text if isinstance(final, Text) else str(final)
