"""One modem port's AT state machine: lexer -> parser -> dispatcher -> framing.

Bytes from the host enter feed().  What happens to them depends on the port's
mode (emulator/at/mode.py, one table of transitions): in COMMAND they go through
the lexer; in DATA (a handler returned a DataRequest) to its DataPhase until the
length is reached, Ctrl+Z / ESC or the idle timeout; in PENDING (a handler's
answer comes later) they wait in the inbox, nothing is lost.  URCs raised while
the port is not idle are queued and written when it is idle again, and at that
moment the modem emits "port_idle" (see idle).
Nothing here touches a file descriptor or the event loop: output leaves through
modem.write() (bytes made by emulator/at/framing.py only), and timers and
pending commands are scheduled by the modem (modem.call_later, modem.spawn), so
the interpreter runs in unit tests as is.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import TYPE_CHECKING, Callable

from emulator.at import framing
from emulator.at.data_phase import DataPhase
from emulator.at.escape import EscapeDetector
from emulator.at.lexer import CommandLine, CommandLineLexer, Echo, LineTooLong, RepeatLast
from emulator.at.mode import Event, IllegalTransition, Mode, next_mode
from emulator.at.parser import Command, Malformed, parse_line
from emulator.at.registry import TABLE
from emulator.at.responses import Cme, CommandError, DataRequest, OnlineLink, Response, Text, cme_code
from emulator.io.transport import HIGH_WATER
from emulator.logsafe import get_logger, loggable, redact
from emulator.modem.profile import command_name

if TYPE_CHECKING:
    from emulator.modem.modem import Modem

log = get_logger("emulator.at")
_S_REGISTER = re.compile(r"^S\d+$")
MAX_WAITING_INPUT = 1 << 20      # host bytes held while a command is pending
PACED_PIECE = 64 * 1024          # what a paced answer writes at a time
LF_UNREAD_WINDOWS = 5            # a late LF while the prompt is unread: the line's up to 5 windows


@dataclasses.dataclass(slots=True)
class LateLf:
    """After a prompt or CONNECT: whether the host's first byte, if it is an LF, is the
    command line's ending rather than data (Interpreter._drop_late_lf says how each counts)."""
    until: float               # it comes before this (modem time; -inf: never, inf: always)
    unread_until: float        # or before this while the host has not read the prompt (mark)
    mark: int | None           # output_mark() after the prompt: the host has not read that far
    waiting: int               # the host's bytes in the pty before the prompt was written


class _Pending:
    """The PENDING mode's state: which answer is awaited (a stale one is ignored)."""

    def __init__(self, after_line: bool, raw: str) -> None:
        self.after_line = after_line
        self.raw = raw
        self.orphaned = False      # the host that asked closed the port: nobody to answer
        self.rest: list = []       # (orphaned) the rest of its line, run after it unanswered
        self.task = None           # what computes the answer (cancelled by a restart)


class Interpreter:
    # An illegal mode transition is an emulator bug: in production it is logged and the
    # port goes back to command mode; with strict (MODEM_EMULATOR_STRICT=1, which the test
    # suite sets, or set on the instance) it raises.
    strict = os.environ.get("MODEM_EMULATOR_STRICT") == "1"

    def __init__(self, modem: "Modem") -> None:
        self.modem = modem
        self.lexer = CommandLineLexer(modem.profile["serial.line_max"])
        self.mode = Mode.COMMAND
        self._data: DataPhase | None = None    # set exactly in DATA mode
        self._pending: _Pending | None = None        # set exactly in PENDING mode
        self._dropped = 0          # input bytes dropped behind the pending answer (MAX_WAITING_INPUT)
        self._recovering = False   # _guarded's recovery is running the input that waited
        self._last_piece: bytes | None = b""   # the last bytes fed (what a boundary says: _host_cut)
        self._last_piece_s3 = 13                 # S3 when they were fed
        self._online: OnlineLink | None = None       # set exactly in ONLINE mode
        self._escape: EscapeDetector | None = None   # its "+++" detector
        self._escape_timer = None
        self.last_online: OnlineLink | None = None   # the link that left online mode last (ATO)
        # Inside a handler (a call on the stack, never a mode the port waits in): URCs
        # it raises go after its answer, and the port is not idle.
        self._executing = False
        self._mid_line = False          # a command after the first of the line is being dispatched
        self._left_idle = False          # idle went False since the last "port_idle"
        self._inbox = bytearray()
        self._fed = 0                    # bytes ever fed (so _fed - len(_inbox): ever taken)
        self._departed_end = 0           # _fed when the last program closed the port (--uart)
        self._line_end_at = 0            # _fed - len(_inbox) when the last line's S3 was taken
        self._queue: list[Command | Malformed] = []
        # A line's trailing lines (Response.after), each with the count of URCs raised
        # before its command started: they go behind those, ahead of later ones (_write_after).
        self._after: list[tuple[int, str]] = []
        self._then: Callable[[], None] | None = None     # the answer's `then`, run once it is written
        self._raw = ""                   # the command being answered (logs)
        self._urcs: list[tuple] = []   # (framed URC, what it is about, order, its line, its kind)
        self._raised = 0                 # URCs queued so far (their order among trailing lines)
        self._started = 0                # _raised when the command being answered started
        self._last_line: bytes | None = None
        modem.on("reset", self._rebooted)              # (A/ repeats nothing, no stale URCs)
        modem.on("output_drained", self._output_drained)
        modem.on("shutdown", self._report_dropped)     # (an answer that outlives the run)
        self._line_end = float("-inf")   # modem.monotonic() when the last command line's S3 came
        self._lf_window = modem.profile.get("serial.lf_window_ms", 50) / 1000
        # After a prompt or CONNECT, until the host's first byte: whether an LF there is the
        # command line's ending (set from _late_lf_rule, taken by _take_late_lf).
        self._late_lf: LateLf | None = None
        # Command name ("+QSSLOPEN") -> seconds its final answer is held back (the
        # control API's "slow"), on the modem's timers.
        self.delays: dict[str, float] = {}
        # The profile's timing.response_delay_ms, same keys: a real module's latency.
        # With a "slow" on the same command too, the larger of the two counts.
        self.profile_delays: dict[str, float] = {
            command_name(k): ms / 1000
            for k, ms in modem.profile.get("timing.response_delay_ms", {}).items() if ms}

    # -- mode ----------------------------------------------------------------
    def _rebooted(self) -> None:
        """A reboot: A/ repeats nothing, and URCs still queued (news of sockets the reboot
        dropped) are not written after it.  Whatever the port was doing goes with the
        power: a data phase, a pending answer (a "slow" command's: its late outcome is not
        written and its `then` -- a delayed AT+CFUN=1,1's restart -- never runs), online
        mode; the restarted module reads command lines."""
        self._last_line = None
        self._urcs.clear()
        self._after.clear()              # (the trailing lines of the line the restart ended)
        if self.mode is not Mode.COMMAND:
            link, pending = self._online, self._pending
            self._abandon()
            self._enter(Event.RESET)
            self._release_pending_hold(hangup=True)
            if pending is not None and pending.task is not None:
                pending.task.cancel()            # (a "slow" delay: the command never acts)
            self._inbox.clear()                  # the busy module's input went with the power
            self._queue.clear()
            self._then = None
            if link is not None:
                self._power_lost(link)
                link.escaped()

    def drop_input(self) -> None:
        """A restart (Modem.reboot): what the host wrote that no command has taken yet --
        lines behind the restarting one, a half-typed line -- went with the power."""
        self._inbox.clear()
        self._queue.clear()
        self._after.clear()
        self.lexer.reset()

    def settle(self) -> None:
        """After a restart (Modem.reboot, once its sockets are gone): the port is idle, so
        "port_idle" goes out now (scenario steps waiting for it), not at the next command.
        No connection is left for ATO (NO CARRIER): the last online link is let go, or it
        would keep its dead socket until the next online session."""
        self.last_online = None
        self._settle()

    @property
    def idle(self) -> bool:
        """Command mode and no handler running: a URC goes out at once.  When the
        port becomes idle again (an answer, a data phase or a pending command ended,
        queued URCs written) the modem emits "port_idle", once per return."""
        return self.mode is Mode.COMMAND and not self._executing

    def _enter(self, event: Event) -> None:
        """The one place the mode changes (mode.TRANSITIONS)."""
        self.mode = next_mode(self.mode, event)
        if self.mode is not Mode.COMMAND:
            self._left_idle = True

    def _settle(self) -> None:
        """If the port is idle: write the URCs that waited, then tell the modem once."""
        if self.mode is not Mode.COMMAND or self._executing:     # (not self.idle, inline)
            return
        self._flush_urcs()
        if self._left_idle:
            self._left_idle = False
            self.modem.emit("port_idle")

    def _guarded(self, step: Callable, *args) -> None:
        """Run an entry point; an illegal transition (a bug) must not leave the port stuck."""
        try:
            step(*args)
        except IllegalTransition:
            if self.strict:
                raise
            log.exception("interpreter bug; the port goes back to command mode")
            self._abandon()
            self.mode = Mode.COMMAND         # recovery: the one assignment outside _enter
            self._release_pending_hold()
            self._executing = False
            self._queue.clear()
            self._after.clear()
            if self._recovering:             # the input that waited hit the bug again:
                self._inbox.clear()          # dropped, not re-run line by line (recursion)
                return
            self._recovering = True
            try:
                self._guarded(self._pump)    # the host's input that waited (a pending answer's)
            finally:
                self._recovering = False

    def _abandon(self) -> None:
        """Forget the data phase, the pending answer (its late outcome is ignored) or
        the online link (it keeps its connection; ATO may return to it)."""
        if self._data is not None:
            for timer in (self._data.timer, self._data.escape_timer):
                if timer is not None:
                    timer.cancel()
        self._data = None
        self._pending = None
        self._report_dropped()
        self._late_lf = None                     # (the prompt or CONNECT it was for is gone)
        if self._escape_timer is not None:
            self._escape_timer.cancel()
            self._escape_timer = None
        if self._online is not None:
            self.last_online = self._online
        self._online = None
        self._escape = None

    # -- input ---------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        mode = self.mode
        if mode is Mode.PENDING:
            if (self.modem.settings.ifc[1] == 2 and len(self._inbox) + len(data) > HIGH_WATER
                    and not self.modem.input_held("pending")):
                # AT+IFC=<x>,2: a host that writes on behind a pending answer (a paced
                # download) is held back by the pty, as by CTS, instead of having its bytes
                # dropped.
                self.modem.pause_input("pending")
            elif len(self._inbox) + len(data) > MAX_WAITING_INPUT:
                room = max(0, MAX_WAITING_INPUT - len(self._inbox))
                self._dropped += len(data) - room      # (one warning when the wait ends)
                data = data[:room]
        self._fed += len(data)
        if (mode is Mode.ONLINE and not self._inbox and self._late_lf is None
                and not self._escape_overdue()):
            self._guarded(self._send_online, data)     # the fast path: no copy through the inbox
            return
        if (mode is Mode.COMMAND or mode is Mode.PENDING) and not self._inbox and not self.lexer.piecewise:
            lexer = self.lexer
            if (((data[:1] == b"\n" and lexer.after_line_end)     # a line's CR, then its LF apart
                    or (lexer.mid_line and data[:1] != bytes([lexer.s3])))   # its text in parts
                    and self._host_cut()):
                lexer.piecewise = True
        self._last_piece = data
        self._last_piece_s3 = self.lexer.s3
        self._inbox += data
        self._guarded(self._pump)

    def _host_cut(self) -> bool:
        """Whether the boundary between the last piece read and this one is likely the
        host's own (it wrote a line in parts) rather than the pty's or the reader's: a big
        write of whole lines is handed over in pieces cut wherever the kernel's buffers or
        a read's size fell, mostly mid-line.  A piece that held an earlier line's S3 besides
        the one it may end with came from such a write (a host writing a line in parts
        writes part of one line); taking its cut for the host's would make a whole-line
        host a byte-by-byte one for the rest of its session (its payload's leading LF then
        read as its send line's ending)."""
        piece = self._last_piece
        if piece is None:               # (the boundary is a program change: host_changed)
            return False
        # (S3 then and now: the piece may have held the ATS3 that changed it)
        return all(bytes([s3]) not in piece[:-1] for s3 in (self._last_piece_s3, self.lexer.s3))

    def hangup(self, power_lost: bool = False) -> None:
        """The host closed the port: whatever it was in the middle of is abandoned
        (a half-entered data prompt sends or stores nothing), so the next host to
        open the port starts in command mode.  power_lost: the module's power goes too
        (the control API's reboot): what an online link still held is not sent."""
        self._guarded(self._hangup, power_lost)

    def host_changed(self) -> None:
        """The port was closed and the modem carries on (--uart): what was learnt of the
        host's line endings is a guess about that program, not module state -- the next
        program to open the port may end its lines otherwise.  So is the rule for the first
        byte after a prompt the closed program left (a late LF is its line's ending only from
        the program that wrote the line: the next one's LF is data)."""
        self.lexer.crlf = None
        self.lexer.piecewise = False
        self.lexer.last_line_whole = False
        self._last_piece = None          # (the next boundary is the programs', not a host's)
        self._late_lf = None
        self._departed_end = self._fed   # (a line it left in the inbox opens a prompt later)

    @staticmethod
    def _power_lost(link: OnlineLink) -> None:
        """What an online link held for its connection (bytes waiting for a packet) is gone
        with the power (OnlineLink's optional power_lost)."""
        power_lost = getattr(link, "power_lost", None)
        if power_lost is not None:
            power_lost()

    def _hangup(self, power_lost: bool = False) -> None:
        self.modem.resume_input("output")    # (held or not) its unread output goes with the host
        why = "the modem restarted" if power_lost else "host closed the port"
        if self._data is not None:
            log.info("%s during a data prompt: %d bytes discarded", why, len(self._data.buf))
            self._abandon()
        if self._online is not None:
            link = self._online
            log.info("%s in online data mode%s", why, "" if power_lost else ": the connection stays open (ATO)")
            # A "+" the escape held is data -- unless its guard time has passed (the timer
            # not run yet: the loop was busy): then the escape came first, and "+++" is no
            # data (its OK goes to nobody).  With the power gone nothing more leaves.
            if not power_lost and not self._escape_overdue():
                self._release_held()
            self._abandon()
            if power_lost:
                self._power_lost(link)
            link.escaped()
        if self._pending is not None:
            # The answer still comes (the command runs to its end), but not to the next
            # host: it would read an OK it never asked for and be one answer off.  The rest
            # of its line runs after it, unanswered too: a module's parser does not stop a
            # line it started when DTR drops in command state (a restart does stop it).
            if power_lost:
                self._pending.rest = []
            elif not self._pending.orphaned:
                self._pending.rest = list(self._queue)   # (an orphan's rest is its line's already)
            self._pending.orphaned = True
        self._enter(Event.HANGUP)
        self._release_pending_hold(hangup=True)
        self._inbox.clear()
        self._queue.clear()
        self._after.clear()
        self._urcs.clear()
        self.lexer.reset()
        self.host_changed()          # the next host's line ends are not known yet
        self._settle()

    def _report_dropped(self) -> None:
        """One warning per pending answer for the input dropped behind it, however many
        reads of the pty it came in (the host's writes are split as the pty pleases)."""
        if self._dropped:
            log.warning("port busy: %d input bytes dropped (more than %d waiting)",
                        self._dropped, MAX_WAITING_INPUT)
            self._dropped = 0

    def _release_pending_hold(self, hangup: bool = False) -> None:
        """The pending hold ends with the pending answer (or the host: its input is gone)."""
        if self.modem.input_held("pending") and (hangup or self.mode is not Mode.PENDING):
            self.modem.resume_input("pending")

    def _pump(self) -> None:
        self._release_pending_hold()
        while self._inbox:
            if self.mode is Mode.COMMAND:
                if self._output_stalled():
                    break
                self._lex_some()
            elif self.mode is Mode.DATA:
                self._feed_data()
            elif self.mode is Mode.ONLINE:
                self._feed_online()
            else:        # PENDING: input waits for the answer
                break
        self._settle()

    def _output_stalled(self) -> bool:
        """With AT+IFC=<x>,2 the module may hold the host back (CTS): once more than
        HIGH_WATER bytes of its output wait unread, it takes no more command input until
        the host has read them (output_drained), so answers carrying socket or file data
        are never dropped for a host that pipelines commands and reads late.  Without it
        the port behaves as a UART without flow control (serial.output_backlog)."""
        if self.modem.input_held("output"):
            return True
        if self.modem.settings.ifc[1] != 2 or self.modem.output_backlog() <= HIGH_WATER:
            return False
        self.modem.pause_input("output")
        return True

    def _output_drained(self) -> None:
        if self.modem.input_held("output"):
            self.modem.resume_input("output")
            self._guarded(self._pump)

    def _lex_some(self) -> None:
        s = self.modem.settings
        lexer, inbox = self.lexer, self._inbox
        s3 = s.sreg[3]
        lexer.s3, lexer.s5, lexer.echo = s3, s.sreg[5], s.echo
        # Up to the next line end or '/': at most one line event per chunk, so a
        # command that switches to data mode sees the following bytes as data.
        end = inbox.find(s3)
        cut = end + 1 if end >= 0 else len(inbox)
        slash = inbox.find(0x2F, 0, cut)
        if slash >= 0:
            cut = slash + 1
        if cut == len(inbox):
            chunk = bytes(inbox)
            inbox.clear()
        else:
            chunk = bytes(inbox[:cut])
            del inbox[:cut]
        for event in lexer.feed(chunk):
            if isinstance(event, Echo):
                self.modem.write(event.data)
            elif isinstance(event, CommandLine):
                self._last_line = event.body
                self._line_end = self.modem.monotonic()
                self._line_end_at = self._fed - len(inbox)
                self._start_line(event.body)
            elif isinstance(event, RepeatLast):
                if self._last_line is not None:
                    # (no S3 ends "A/": an LF after it is the host's next byte, data too)
                    self._start_line(self._last_line, after_line=False)
            elif isinstance(event, LineTooLong):
                log.info("command line longer than %d bytes: ERROR", self.lexer.max_line)
                self._write_final("ERROR")

    # -- command execution ---------------------------------------------------
    def _start_line(self, body: bytes, after_line: bool = True) -> None:
        self.modem.trace("line", line=body)
        try:
            self._queue = list(parse_line(body))
        except Exception:     # the parser never raises by design; if it does, the line still ends
            log.exception("cannot parse AT%s", loggable(body.decode("latin-1")))
            self._queue = [Malformed(body.decode("latin-1"), "parser failure")]
        self._after = []
        self._mid_line = False
        self._run_queue(after_line)

    def _run_queue(self, after_line: bool) -> None:
        while self._queue:
            item = self._queue.pop(0)
            response = self._dispatch(item)
            self._mid_line = True          # (the line's next command follows an answer)
            if not self._handle(response, after_line):
                return
        self._write_final("OK")
        self._write_after()

    def _dispatch(self, item: Command | Malformed) -> Response:
        self._raw = item.raw
        self._started = self._raised
        if isinstance(item, Malformed):
            log.info("ERROR: malformed command AT%s (%s)", loggable(item.raw), item.reason)
            return Response([], "ERROR")
        profile = self.modem.profile
        name = item.name
        if name[:1] == "S" and _S_REGISTER.match(name):
            name = "S"
        # (scenario triggers) a URC one raises for a command after the first of a ';' chain
        # waits for the line's final result: a module does not break a line's answer
        executing, self._executing = self._executing, self._executing or self._mid_line
        try:
            self.modem.emit("command", name=name, kind=item.kind, args=item.args)
        finally:
            self._executing = executing
        variant = profile.command_variant(name)
        if variant is None:
            log.info("ERROR: AT%s is not a command of profile %s", loggable(item.raw), profile.name)
            return Response([], "ERROR")
        entry = TABLE.lookup(name, item.kind, variant)
        if entry is not None:
            response = self._call(entry.func, self.modem, item, raw=item.raw, what="")
        elif item.kind == "test" and TABLE.knows(name, variant):
            response = Response([], "OK")
        else:
            log.info("ERROR: AT%s (%s form) not supported", loggable(item.raw), item.kind)
            response = Response([], "ERROR")
        # (a delay holds every answer of the command, also a form with no handler of its own)
        if not (self.delays or self.profile_delays):
            return response
        delay = max(self.delays.get(name, 0), self.profile_delays.get(name, 0))
        return _delayed(response, delay, self.modem.timers, self._run_then) if delay else response

    def _call(self, func: Callable, *args, raw: str, what: str) -> Response:
        """Run a handler (or a data handler, or a pending command's outcome) and turn
        whatever it raises into an answer: CommandError its final, an exception
        carrying a +CME code (storage errors, responses.cme_code) that +CME ERROR,
        anything else ERROR with its traceback logged -- nothing a host sends can stop
        the emulator.  what: "" for the command itself, else what ran ("the data of ")."""
        self._executing = True
        self._left_idle = True
        try:
            return func(*args)
        except CommandError as exc:
            if exc.log:
                log.info("%s for %sAT%s: %s", _final_name(exc.final), what, loggable(raw),
                         exc.log.replace(raw, redact(raw)) if raw else exc.log)
            return Response([], exc.final)
        except Exception as exc:     # a handler bug must never take the emulator down
            code = cme_code(exc)
            if code is not None:
                log.info("+CME ERROR: %d for %sAT%s: %s", code, what, loggable(raw), exc)
                return Response([], Cme(code))
            log.exception("handler for %sAT%s failed", what, loggable(raw))
            return Response([], "ERROR")
        finally:
            self._executing = False

    def _handle(self, response: Response, after_line: bool) -> bool:
        """Write a response (in command mode); True when the line may go on with its
        next command.  after_line: the response answers a command line (not a data
        handler), so a data prompt it opens may meet that line's late LF."""
        if response.paced and response.lines:
            assert response.data is None and response.online is None and response.pending is None, \
                "a paced answer ends with a final result"
            framed = framing.lines(response.lines, self.modem.settings)
            if self.modem.output_backlog() + len(framed) > HIGH_WATER:
                self._keep_after(response.after)
                rest = dataclasses.replace(response, lines=[], after=[], paced=False)
                self._await(self._write_paced(framed, rest), after_line)
                return False
            response = dataclasses.replace(response, lines=[], paced=False)
            self.modem.write(framed)
        self._write_lines(response.lines)
        self._keep_after(response.after)
        if response.pending is not None:
            self._await(response.pending, after_line)
            return False
        if response.data is not None:
            self._queue.clear()                  # the rest of the line is data now
            self._start_data(response.data, after_line)
            return False
        if response.online is not None:
            self._queue.clear()                  # the rest of the line is online data now
            self._go_online(response.online, after_line)
            return False
        if response.final == "OK" and not response.ends_line:
            if response.then is not None:        # (the line may go on: no answer yet to wait for)
                self._run_then(response.then)
            return True
        self._queue.clear()
        if response.final is not None:
            self._then = response.then
            self._write_final(response.final)
        elif response.then is not None:
            self._run_then(response.then)
        self._write_after()
        return False

    async def _write_paced(self, framed: bytes, rest: Response) -> Response:
        """A paced answer's bytes, PACED_PIECE at a time whenever no more than HIGH_WATER
        wait unread; then the rest of it (its final result) as a pending command's answer.
        A hang-up or a restart ends it: the rest is not for the host after it."""
        modem, epoch = self.modem, self.modem.epoch
        view = memoryview(framed)
        for start in range(0, len(view), PACED_PIECE):
            while modem.output_backlog() > HIGH_WATER and modem.epoch == epoch:
                await modem.drained()
            if modem.epoch != epoch:
                return Response([], None)         # (after a hang-up it is orphaned anyway)
            modem.write(bytes(view[start:start + PACED_PIECE]))
        return rest

    def _await(self, awaitable, after_line: bool) -> None:
        pending = _Pending(after_line, self._raw)
        self._enter(Event.AWAIT)
        self._pending = pending
        pending.task = self.modem.spawn(
            awaitable, lambda outcome: self._guarded(self._pending_done, pending, outcome))

    def _pending_done(self, pending: _Pending, outcome) -> None:
        """outcome() returns the pending command's Response or raises its exception."""
        if self._pending is not pending:         # abandoned by a recovery: not written, but
            try:                                 # a transparent open's link is left as a
                response = outcome()             # hang-up leaves one (its peer's close is
            except Exception:                    # still reported)
                return
            if isinstance(response, Response) and response.online is not None:
                response.online.escaped()
            return
        self._pending = None
        self._report_dropped()
        self._enter(Event.DONE)
        self._raw = pending.raw
        response = self._call(outcome, raw=pending.raw, what="the answer of ")
        if pending.orphaned:
            self._run_orphaned(response, pending)
            self._pump()
            return
        if self._handle(response, pending.after_line):
            self._run_queue(pending.after_line)
        self._pump()

    def _run_orphaned(self, response: Response, pending: _Pending) -> None:
        """An answer whose host closed the port, and the rest of its line after it: each
        command's own work runs, nothing is written; the line ends where it would (a final
        result other than OK, a prompt, an online answer -- nobody to type the data)."""
        rest = pending.rest
        while True:
            log.info("answer of AT%s not written: the host that sent it closed the port",
                     loggable(self._raw))
            if response.online is not None:
                self.last_online = response.online     # the connection is up: ATO reaches it
                response.online.escaped()              # as a hang-up in online mode leaves it
            if response.then is not None:              # the command's own work still runs (a
                self._run_then(response.then)          # delayed AT+CFUN=1,1 still restarts)
            if (not rest or response.final != "OK" or response.ends_line or response.data is not None
                    or response.online is not None or response.pending is not None):
                break
            response = self._dispatch(rest.pop(0))
            if response.pending is not None:           # (its answer ends this loop's turn)
                self._await(response.pending, pending.after_line)
                self._pending.orphaned, self._pending.rest = True, rest
                return

    # -- data collection -----------------------------------------------------
    def _start_data(self, request: DataRequest, after_line: bool) -> None:
        phase = DataPhase(request, self._raw, self._guard_time(), self.modem.monotonic())
        self._enter(Event.PROMPT)
        self._data = phase
        waiting = self._waiting_before_prompt(after_line)
        self.modem.write(framing.prompt(request.prompt, self.modem.settings))
        self._late_lf = self._late_lf_rule(after_line, waiting)
        self._restart_idle_timer(phase)
        self.modem.emit("data_prompt")          # the port waits for the host: work can go now
        if request.length == 0:
            self._finish_data(phase, "done")

    def _waiting_before_prompt(self, after_line: bool) -> int:
        """The host's bytes in the pty, asked just before a prompt or CONNECT is written:
        written before the host could see it.  (Asked after the write, a host quick to
        answer the prompt -- its data LF -- could already be among them.)"""
        if after_line and not self._inbox and self.lexer.s3 == 13:
            return self.modem.input_waiting()
        return 0

    def _late_lf_rule(self, after_line: bool, waiting: int) -> LateLf | None:
        """A host ending its lines with CR LF: the LF that came with the CR belongs to the
        command line, not to the data that follow a prompt or CONNECT (the host sends them
        only after it) -- also when it arrives just after, from a host writing byte by
        byte.  Drops an LF already waiting; otherwise returns what decides for the host's
        first byte (self._late_lf; None: an LF there is data).  The lexer forgets the line's
        end here, whatever the rule: the bytes go to the data phase (or online), and an LF
        after it is no line's ending, unechoed, nor a lesson in the host's line ends."""
        self.lexer.forget_line_end()
        if not after_line or self.lexer.s3 != 13:
            return None
        # (the line's S3 came from a program that has closed the port since: --uart, a line
        # left behind a slow answer, or one whose answer was slow itself)
        departed = self._line_end_at <= self._departed_end
        if self._inbox[:1] == b"\n" and (not departed
                                         or self._fed - len(self._inbox) < self._departed_end):
            # (written with the line: its ending, whatever the host did before -- data
            # come after the prompt, and a CR-only host may have switched to CR LF)
            del self._inbox[:1]
            return None
        if self._inbox or departed:
            # (a line a closed program left: the next byte is another program's, data)
            if self._inbox and not departed:
                self.lexer.crlf = False      # (the byte after this line's CR came and was no LF)
            return None
        # The host's next byte is still to come.  Bytes `waiting` in the pty before the
        # prompt was written were written before it (the same as an LF in the inbox above);
        # one that comes later while the host has not read the prompt yet cannot answer it.
        mark = self.modem.output_mark()
        # (the window is counted from the prompt when the line's work took longer than it: a
        # stall before the prompt -- a GC pause, a loaded machine -- is not the host's)
        window = max(self._line_end, self.modem.monotonic()) + self._lf_window
        if self.lexer.crlf is False:
            # (a host seen ending its lines with CR alone sends no LF: a first byte LF is data
            # however soon it comes once the host can have seen the prompt -- also from a host
            # that never reads prompts, a delay() and its payload, past the window; within the
            # window, with the prompt unread, it is this line's: hosts mix CR and CR LF, a
            # CR-only init sequence then a driver writing its CR LF lines byte by byte)
            return LateLf(float("-inf"), window, mark, waiting)
        if self.lexer.crlf and self.lexer.piecewise:
            # (a host that ends its lines with CR LF and writes them in pieces -- byte by byte
            # -- sends this line's LF right after its CR: on a UART it follows the CR by a
            # byte time, whatever the emulator's reads make of it under load)
            return LateLf(float("inf"), float("inf"), mark, waiting)
        return LateLf(window, window + (LF_UNREAD_WINDOWS - 1) * self._lf_window, mark, waiting)

    def _take_late_lf(self) -> bool:
        """The host's first byte after a prompt or CONNECT is here: an LF the rule set then
        says is the line's is dropped (True)."""
        late, self._late_lf = self._late_lf, None
        return late is not None and self._drop_late_lf(late)

    def _drop_late_lf(self, late: LateLf) -> bool:
        """The first byte after a prompt or CONNECT: an LF that the host wrote before the
        prompt was out, or before it read the prompt, or that comes before `until` (see
        _late_lf_rule), is the command line's ending and is dropped; True when it was.  After a
        line that came whole ("AT...\r" in one write, no LF with it) only an LF that comes
        alone is its ending (the host wrote its CR and LF apart); an LF written together
        with more bytes was written after the prompt, with the data, and is data (a driver
        that ends this one command with CR alone, whose payload starts with LF)."""
        lexer = self.lexer
        # (a host that writes its lines whole and has never written a CR and its LF apart:
        # only an LF it wrote on its own can be this line's; the lexer has seen no line since)
        alone_only = lexer.last_line_whole and not lexer.piecewise
        until, waiting = late.until, late.waiting
        # (waiting == 1: the LF was all the pty held when the prompt went out -- written on
        # its own, before the prompt: the line's, whatever the read joined to it since)
        if self._inbox[:1] == b"\n" and (waiting == 1 or (
                not (alone_only and len(self._inbox) > 1)
                and (waiting or self.modem.monotonic() <= until or self._unread(late)))):
            del self._inbox[:1]
            lexer.piecewise = True                  # its CR and LF came apart
            return True
        return False

    def _unread(self, late: LateLf) -> bool:
        """The host has not read the output up to the prompt (late.mark) and the LF comes
        before late.unread_until: a CR LF host held up between its CR and its LF (a loaded
        machine, a GC pause) past the window still sent the LF with the line, up to
        LF_UNREAD_WINDOWS windows; a host seen ending lines with CR alone, within the window.
        Bounded: a host that never reads prompts (a delay() and then its payload) may start
        the payload with LF, and later than that it is data."""
        return (late.mark is not None
                and self.modem.monotonic() <= late.unread_until
                and self.modem.host_has_read(late.mark) is False)

    def _restart_idle_timer(self, phase: DataPhase) -> None:
        if phase.request.idle_timeout is None:
            return
        if phase.timer is not None:
            phase.timer.cancel()
        phase.timer = self.modem.call_later(phase.request.idle_timeout,
                                            self._guarded, self._timed_out, phase)

    def _timed_out(self, phase: DataPhase) -> None:
        self._finish_data(phase, "timeout")
        self._pump()                             # from a timer, outside feed()

    def _feed_data(self) -> None:
        phase = self._data
        if phase.escape_timer is not None and phase.escape_expired(self.modem.monotonic()):
            # "+++" and its guard time of silence, the timer not run yet (the loop was
            # busy): as in online mode (_escape_overdue) the escape came first, and these
            # bytes are command-state input.
            self._finish_data(phase, "escape")
            return
        if self._late_lf is not None and self._take_late_lf():     # the first byte after the prompt
            # (the line's LF, but a byte that came now: the silence "+++" needs and the
            # upload's inactivity wait, "restarted by every byte", start again)
            if phase.escape is not None:
                phase.escape.last_rx = self.modem.monotonic()
            self._restart_idle_timer(phase)
            return
        out, reason = phase.take(self._inbox, self.modem.settings.echo, self.modem.monotonic())
        if out:
            self.modem.write(out)
        if reason is None:
            self._restart_idle_timer(phase)
            self._arm_data_escape(phase)
        else:
            self._finish_data(phase, reason)     # (cancels the idle timer)

    def _timer_at(self, old, deadline: float | None, callback, *args):
        """Cancel `old` (a timer handle or None); a guarded call of callback(*args) at
        `deadline` on the modem's clock (None: no timer).  Returns the new handle."""
        if old is not None:
            old.cancel()
        if deadline is None:
            return None
        return self.modem.call_later(max(0.0, deadline - self.modem.monotonic()), self._guarded, callback, *args)

    def _arm_data_escape(self, phase: DataPhase) -> None:
        """A "+" that may start an escape came (AT+QFUPL): check once its guard time ends."""
        phase.escape_timer = self._timer_at(phase.escape_timer, phase.escape_deadline(),
                                            self._data_escape_due, phase)

    def _data_escape_due(self, phase: DataPhase) -> None:
        if self._data is not phase:
            return                               # a late timer
        phase.escape_timer = None
        if phase.escape_expired(self.modem.monotonic()):
            self._finish_data(phase, "escape")
            self._pump()                         # from a timer, outside feed()
        else:
            self._arm_data_escape(phase)

    def _finish_data(self, phase: DataPhase, reason: str) -> None:
        if self._data is not phase:
            return                               # a late timer
        self._abandon()
        self._enter(Event.DONE)
        self._raw = phase.raw
        response = self._call(phase.request.on_done, bytes(phase.buf), reason,
                              raw=phase.raw, what="the data of ")
        if self._handle(response, after_line=False):
            self._write_final("OK")
            self._write_after()

    # -- online data mode (transparent access) ------------------------------------
    def _guard_time(self) -> float:
        return self.modem.settings.sreg[12] / 50        # S12: fiftieths of a second

    def _go_online(self, link: OnlineLink, after_line: bool) -> None:
        waiting = self._waiting_before_prompt(after_line)
        self._write_final("CONNECT")
        self._enter(Event.ONLINE)
        self._online = link
        self.last_online = link
        self._escape = EscapeDetector(self._guard_time(), self.modem.monotonic())
        self._late_lf = self._late_lf_rule(after_line, waiting)
        self.lexer.reset()                       # (keeps what it learnt of the host's line ends)
        link.started()

    def _escape_overdue(self) -> bool:
        """"+++" then the guard time of silence, and its timer has not run yet: the loop was
        busy past the deadline and reads the host's next bytes first (asyncio runs ready
        reads before due timers).  A module's UART would have seen the silence end only
        with those bytes: the escape came first, and they are command-state input."""
        escape = self._escape
        return (escape is not None and escape.held == 3
                and self.modem.monotonic() >= escape.deadline())

    def settle_overdue_escape(self) -> bool:
        """An escape whose guard time has passed, its timer not run yet (the loop was busy),
        completes now (OK, command state) -- before an event that came after it in time is
        handled (the host's bytes, the peer's data or close, a DTR drop).  True when it did."""
        if self.mode is not Mode.ONLINE or not self._escape_overdue():
            return False
        if self._escape_timer is not None:
            self._escape_timer.cancel()
        self._guarded(self._escape_due)
        return True

    def _feed_online(self) -> None:
        if self.settle_overdue_escape():
            return                               # (command state: the pump lexes the inbox)
        if self._late_lf is not None and self._take_late_lf():     # the first byte after CONNECT
            # The LF was the command line's, not data -- but it came now: the silence
            # "+++" needs before it counts from here, as from any byte the host writes.
            self._escape.last_rx = self.modem.monotonic()
        data = bytes(self._inbox)
        self._inbox.clear()
        if data:
            self._send_online(data)

    def _send_online(self, data: bytes) -> None:
        out = self._escape.feed(data, self.modem.monotonic())
        if out:
            self._online.send(out)
            if self._online is None:
                return                  # the send ended the connection (NO CARRIER is out)
        if self._escape.held or self._escape_timer is not None:
            self._arm_escape_timer()

    def _arm_escape_timer(self) -> None:
        deadline = self._escape.deadline() if self._escape is not None else None
        self._escape_timer = self._timer_at(self._escape_timer, deadline, self._escape_due)

    def _escape_due(self) -> None:
        self._escape_timer = None
        if self.mode is not Mode.ONLINE:
            return
        arrived = self._escape.first_at           # (of "+"s held: expire() makes them data)
        out, escaped = self._escape.expire(self.modem.monotonic())
        if out:
            self._online.send(out, arrived)
            if self.mode is not Mode.ONLINE:
                return                  # the send ended the connection
        if escaped:
            self._leave_online("OK", escaped=True)
        else:
            self._arm_escape_timer()

    @property
    def online_link(self) -> OnlineLink | None:
        """The connection the port belongs to in online data mode, else None."""
        return self._online

    def leave_online(self, link: OnlineLink, final: str = "NO CARRIER") -> None:
        """The connection ended while the port was its (the peer closed, the network
        failed): after the data already written, NO CARRIER, back to command mode."""
        if self._online is link:
            self._guarded(self._leave_online, final, False)

    def dtr_drop(self) -> None:
        """DTR ON->OFF (a pty has none: an API call).  AT&D0 ignores it; in online data
        mode AT&D1 leaves it like "+++" (OK, the connection stays), AT&D2 closes the
        connection (NO CARRIER)."""
        mode = self.modem.settings.dtr
        if self.mode is not Mode.ONLINE or mode == 0 or self.settle_overdue_escape():
            return
        self._guarded(self._release_held)          # what the host wrote goes first
        if mode == 1:
            self._guarded(self._leave_online, "OK", True)
        else:
            link = self._online
            self._guarded(self._leave_online, "NO CARRIER", False)
            link.hang_up()

    def _release_held(self) -> None:
        """A "+" the escape detector holds back (its guard time not passed yet) is data
        when online mode ends another way than the escape (DTR, the host hanging up):
        it goes into the connection, after what came before it, never lost."""
        if self._escape is not None and self._online is not None:
            out = self._escape.release()
            if out:
                self._online.send(out)

    def _leave_online(self, final: str, escaped: bool) -> None:
        link = self._online
        self._abandon()
        self._enter(Event.ESCAPE)
        self._write_final(final)
        if escaped:
            link.escaped()
        else:
            self.last_online = None if self.last_online is link else self.last_online
        self._settle()

    # -- output --------------------------------------------------------------
    def urc(self, line: str | bytes, raw: bytes = b"", about: object = None, kind: str | None = None) -> None:
        """An unsolicited line (+ optional raw bytes after it, e.g. direct push data).
        about: what it reports on (a socket), kind: what sort of news it is, for
        drop_urcs()."""
        framed = framing.urc(line, raw, self.modem.settings)
        if self.idle:
            self.modem.write(framed)
        else:
            self._urcs.append((framed, about, self._raised, line, kind))
            self._raised += 1

    def drop_urcs(self, about: object, kind: str | None = None) -> None:
        """Forget the URCs still waiting (the port busy) that report on `about`: the
        host closed that socket, and a late "recv"/"closed" for its id would read as
        news of the next socket the host opens on that id.  kind: only the waiting ones
        of that kind (a buffer-mode "recv" whose data the socket's new access mode has
        taken since, whatever length AT+QICFG="recvind",1 wrote in it)."""
        self._urcs = [entry for entry in self._urcs
                      if entry[1] != about or (kind is not None and entry[4] != kind)]

    def _flush_urcs(self) -> None:
        while self._urcs:
            self.modem.write(self._urcs.pop(0)[0])

    def _write_lines(self, lines) -> None:
        if lines:                   # (with the final result that usually follows at once)
            self.modem.write_joined(framing.lines(lines, self.modem.settings))

    def _keep_after(self, lines) -> None:
        if lines:
            self._after.extend((self._started, line) for line in lines)

    def _write_after(self) -> None:
        """The end of a line's answer: its trailing lines and the URCs that waited, in the
        order they came -- a trailing line behind the URCs raised before its command
        started (AT+QIACT's +CGEV, queued while the line ran, comes before the codes a later
        AT+CGEREP=2,1 of the same line flushes from its buffer), ahead of those raised since
        (the ML302's "<ssid>,CLOSE OK" of a lingering close, before news that came meanwhile)."""
        after, self._after = self._after, []
        for mark, line in after:
            at = 0
            while at < len(self._urcs) and self._urcs[at][2] < mark:
                at += 1
            self._urcs.insert(at, (framing.urc(line, b"", self.modem.settings), None, mark - 0.5, line, None))
        self._settle()

    def _write_final(self, final) -> None:
        self.modem.write(framing.final(final, self.modem.settings, self.modem.profile))
        self.modem.trace("final")
        then, self._then = self._then, None
        if then is not None:
            self._run_then(then)

    def _run_then(self, then: Callable[[], None]) -> None:
        """A response's `then`, as part of its handler: URCs it raises wait for the lines
        after the final (port busy meanwhile); an exception is logged (the answer is out)."""
        executing, self._executing = self._executing, True
        try:
            then()
        except Exception:
            log.exception("work after the answer of AT%s failed", loggable(self._raw))
        finally:
            self._executing = executing


def _delayed(response: Response, delay: float, timers, run_then) -> Response:
    """A slow module (the control API's "slow"): the command's answer (its lines and
    final result; after a data prompt, what follows the data) comes `delay` seconds
    later on the modem's timers; the port is busy meanwhile, as on a module."""
    if response.then is not None and not response.ends_line:   # the work is done now; only
        run_then(response.then)                                  # the answer waits (a reboot
        response = dataclasses.replace(response, then=None)     # waits for its OK: ends_line)
    if response.data is not None:
        done = response.data.on_done
        request = dataclasses.replace(response.data,
                                      on_done=lambda data, reason: _delayed(done(data, reason), delay, timers, run_then))
        return dataclasses.replace(response, data=request)

    async def later() -> Response:
        try:
            await timers.sleep(delay)
        except BaseException:                # cancelled in the delay (a reboot): the command's
            close = getattr(response.pending, "close", None)     # own awaitable never runs
            if close is not None:
                close()
            raise
        if response.pending is not None:
            return await response.pending
        return response
    return Response([], None, pending=later())


def _final_name(final) -> str:
    if isinstance(final, Cme):
        return f"+CME ERROR: {final.code}"
    return final.text if isinstance(final, Text) else str(final)
