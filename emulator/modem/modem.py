"""One emulated module: its profile, port settings, clock, PDP contexts, stores
and per-feature state, and the interpreter that drives them.

The modem never touches a file descriptor: the transport feeds it host bytes
(feed) and gives it a sink for output (attach).  Handlers reach everything a
command may need through the modem; features (SSL sockets, file store...) keep
their state in `modem.feature(key, factory)` so adding one touches no core file.
"""
from __future__ import annotations

import asyncio
import errno
from collections import defaultdict
from pathlib import Path
from typing import Callable, Protocol

from emulator import commands  # noqa: F401  (registers every handler in the table)
from emulator.modem.clock import ModemClock
from emulator.at.interpreter import Interpreter
from emulator.logsafe import get_logger
from emulator.modem.packet_events import packet_events
from emulator.modem.pdp import PdpTable
from emulator.modem.profile import Profile
from emulator.modem.settings import Settings
from emulator.modem.timers import Timers
from emulator.storage.atomic_file import remove_stale_temp_files
from emulator.storage.secstore import DIRECTORY as SECSTORE_DIR, SecStore
from emulator.storage.vfs import DIRECTORY as UFS_DIR, FileStore

log = get_logger("emulator.modem")

SIM_READY_URC = "+CPIN: READY"      # the boot URC from which the SIM answers


class HostPort(Protocol):
    """The port the host talks through, as the modem asks it (emulator.io.transport.PtyPort;
    a sans-IO test gives emulator.testing.port.StubPort)."""

    @property
    def backlog(self) -> int:
        """Output written for the host that it has not taken yet."""

    @property
    def accepted(self) -> int:
        """Bytes written for the host so far (the marks of host_has_read)."""

    def set_reading(self, on: bool) -> None:
        """False: the host's bytes stay in the port (flow control), True: read again."""

    def host_has_read(self, upto: int) -> bool | None:
        """Whether the host has read the output up to `upto` (an `accepted` value); None:
        cannot tell."""

    def input_waiting(self) -> int:
        """The host's bytes in the port, not handed to the modem yet."""

    def look_for_host(self) -> bool:
        """Attach a host that opened the port since the last look (True: one is there)."""

    def host_holds(self) -> bool:
        """Output written now reaches a host (a UART with no hang-up: always)."""


def _sweep_temp_files(state_dir: Path) -> None:
    """What a killed writer left (atomic writes' temp files) goes at the start, in every
    directory of the state dir, not only once the store that wrote it is used again: the
    stores are made at their first command, the ML302's never on an EC2x."""
    for directory in (state_dir, state_dir / UFS_DIR, state_dir / SECSTORE_DIR):
        try:
            if directory.is_dir() and not directory.is_symlink():
                remove_stale_temp_files(directory)
        except OSError as exc:            # unreadable: its store says so when it is used
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise                     # the process is out of descriptors: that is the cause
            log.warning("state dir %s: cannot clear leftover temp files: %s", directory, exc.strerror or exc)


class Modem:
    def __init__(self, profile: Profile, *, state_dir: Path | None = None,
                 network=None, name: str = "modem0", keylog=None, manual_time: bool = False) -> None:
        self.profile = profile
        self.name = name
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)   # UFS may hold keys
            _sweep_temp_files(self.state_dir)
        self.network = network            # emulator.io.network.Network (routing layer)
        self.keylog = keylog              # callable(str) receiving NSS key-log lines, or None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._manual_time = manual_time
        self.timers = Timers(None)        # manual until attach() gives it a loop
        self.factory_settings = Settings.factory(profile)
        self.saved_settings = Settings.load(self._settings_path, self.factory_settings)
        self.settings = self.saved_settings.copy()
        self.clock = ModemClock(profile["defaults.timezone_quarters"])
        self.cfun = 1
        self.reg_urc = {"+CREG": 0, "+CGREG": 0, "+CEREG": 0}
        self.boot_said: set[str] = set()  # the restart's boot URCs out so far (AT+QINISTAT)
        self._boot = None                 # the start-up URCs' timer while a restart is on
        # The SIM answers (AT+CPIN?, AT+CIMI, the ICCID) from the boot's "+CPIN: READY" on;
        # +CME ERROR: 14 (SIM busy) between a restart and it.  Up at start.
        self.sim_ready = True
        # True from AT+CFUN=0 (minimum functionality: the SIM is switched off) until AT+CFUN=1
        # or 4 starts it again: its commands answer +CME ERROR: 13 (SIM failure) meanwhile.
        self.sim_off = False
        # False after AT+QPOWD's "POWERED DOWN": the module takes no byte and says nothing
        # until it is powered on again (the control API's reboot, as its PWRKEY would).
        self.powered = True
        # True from a restart until its RDY (the first start-up URC): the module's UART is
        # not up yet, so what the host writes meanwhile is lost, as QPOWD's off state.
        self.booting = False
        self.pdp = PdpTable(profile)
        self._features: dict[str, object] = {}
        self._drain_waiters: list = []    # drained() futures
        # Hang-ups and restarts so far: what was under way for the host before one (a paced
        # answer) is not for the host after it.
        self.epoch = 0
        self._input_holds: set[str] = set()    # who holds the host's input back (pause_input)
        self._listeners: dict[str, list[Callable]] = defaultdict(list)
        self._sink: Callable[[bytes], None] | None = None
        self._held = b""                  # write_joined()'s output, until the next write
        self._port: HostPort | None = None       # (attach)
        self.dtr = 1                      # the host's DTR line (set_dtr)
        self.tracer = None                # a trace (emulator/tools/trace.py) when attached
        self.interpreter = Interpreter(self)

    @property
    def _settings_path(self) -> Path | None:
        return self.state_dir / "settings.json" if self.state_dir is not None else None

    # -- wiring ---------------------------------------------------------------
    def attach(self, sink: Callable[[bytes], None], loop: asyncio.AbstractEventLoop | None = None,
               port: HostPort | None = None) -> None:
        """sink(bytes) takes output (the port's write, or a trace's or a test's wrapper of
        it); `port` answers what the modem asks of the host's side (HostPort; None: nothing
        held back, no backlog, cannot tell what the host has read)."""
        self._sink = sink
        self.loop = loop
        self._port = port
        if loop is not None:
            self.timers = Timers(loop, manual=self._manual_time)

    @property
    def manual_time(self) -> bool:
        """Its timers wait for advance() (Emulator.add_modem(manual_time=True))."""
        return self._manual_time

    def monotonic(self) -> float:
        """The modem's monotonic time in seconds (its Timers; manual in tests)."""
        return self.timers.monotonic()

    def trace(self, kind: str, /, **fields) -> None:
        """A trace record (emulator/tools/trace.py); nothing unless a trace is attached."""
        if self.tracer is not None:
            self.tracer.event(kind, fields)

    def call_later(self, delay: float, callback: Callable, *args):
        """A timer on the modem's time (emulator/modem/timers.py)."""
        return self.timers.call_later(delay, callback, *args)

    def spawn(self, awaitable, on_done: Callable[[Callable[[], object]], None]) -> asyncio.Future:
        """Run a pending command's coroutine; on_done(outcome) gets a callable that
        returns its result or raises its exception.  A cancelled one reports nothing."""
        task = asyncio.ensure_future(awaitable, loop=self.loop)
        task.add_done_callback(lambda t: None if t.cancelled() else on_done(t.result))
        return task

    def pause_input(self, owner: str) -> None:
        """Stop reading the host's bytes (owner: "online", a connection that is full;
        "output", a host that must read first): the pty's own buffer then holds the host
        back, as RTS/CTS would on a UART.  Reading goes on when no owner holds it."""
        self._input_holds.add(owner)
        if self._port is not None:
            self._port.set_reading(False)

    def input_held(self, owner: str) -> bool:
        return owner in self._input_holds

    def resume_input(self, owner: str) -> None:
        self._input_holds.discard(owner)
        if self._port is not None and not self._input_holds:
            self._port.set_reading(True)

    def set_dtr(self, level: int) -> None:
        """The host's DTR line (a pty has none: an API call, and the control socket's
        "dtr" later).  ON->OFF acts per AT&D (emulator/at/interpreter.py dtr_drop)."""
        if self._port is not None:
            self._port.look_for_host()    # a program that opened the port raised DTR first
        was, self.dtr = self.dtr, 1 if level else 0
        if was and not self.dtr:
            read_now = getattr(self._port, "read_now", None)
            if read_now is not None:
                read_now()                # what the host wrote before the drop comes first
            self.interpreter.dtr_drop()

    def output_backlog(self) -> int:
        return self._port.backlog if self._port is not None else 0

    def input_waiting(self) -> int:
        """The host's bytes written and not handed to feed() yet (0: none, or cannot tell)."""
        return self._port.input_waiting() if self._port is not None else 0

    def output_mark(self) -> int | None:
        """A mark of the output written so far, for host_has_read(); None: no port to ask."""
        return self._port.accepted if self._port is not None else None

    def host_has_read(self, mark: int) -> bool | None:
        """Whether the host has read the output up to `mark` (output_mark()); None: unknown.
        Asks the kernel: for rare questions (a late LF after a prompt), not per byte."""
        return self._port.host_has_read(mark) if self._port is not None else None

    def host_attached(self) -> None:
        """A program opened the port: its open raises DTR (a tty's open asserts it, as a USB
        CDC port's does), so a drop it makes later acts per AT&D again -- also after an
        earlier program's drop the line never rose from.  "host_attached" is emitted a loop
        turn later (output held for a host -- direct-push data -- goes out then, not from
        inside the write that noticed the host)."""
        self.dtr = 1
        if self.loop is not None:
            self.loop.call_soon(self.emit, "host_attached")

    def host_present(self) -> bool:
        """Whether output reaches a host now: a program holds the port open -- a port nobody
        holds (a USB port's host side closed) takes nothing, so what can wait for the next
        host (direct-push data) waits --, or the port is a UART with no hang-up (--uart: the
        module sends whoever listens, as a real UART does)."""
        return self._port is None or self._port.host_holds()

    def host_hangup(self) -> None:
        """The host closed the port (transport callback)."""
        self.epoch += 1
        self._wake_drain_waiters()
        self.interpreter.hangup()
        self.emit("hangup")

    def host_closed_without_hangup(self) -> None:
        """The host closed a port that carries no hang-up to the module (a UART with no DTR
        wired: Emulator.add_modem(hangup_on_close=False), the CLI's --uart).  The modem
        carries on where it was; the port dropped the output the host had not read and
        drops what comes until a host opens it again, so whatever waited for the host to
        read goes on (as after the host caught up).  Input still held back for other
        reasons (a full connection in online mode) stays held for the next host."""
        self.output_drained()
        if self._input_holds and self._port is not None:
            self._port.set_reading(False)     # (the port cleared its hold at the close)
        self.interpreter.host_changed()

    def output_drained(self) -> None:
        """The host caught up with a large output backlog (transport callback)."""
        self._wake_drain_waiters()
        self.emit("output_drained")

    def drained(self) -> "asyncio.Future[None]":
        """Resolved when the host has read the output backlog down (output_drained), has
        closed the port (its unread output is gone with it) or the module restarted: what
        a paced answer waits for between pieces."""
        future = self.loop.create_future()
        self._drain_waiters.append(future)
        return future

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def feed(self, data: bytes) -> None:
        if not self.powered:
            return                        # a module that is off reads nothing
        if self.booting:                  # nor one restarting, until its RDY
            log.debug("restarting: %d host bytes before RDY lost", len(data))
            return
        self.interpreter.feed(data)

    def write(self, data: bytes) -> None:
        if self._held:                    # (what write_joined() kept goes first, in order)
            data, self._held = self._held + data, b""
        if self._sink is not None and data:
            self._sink(data)

    def write_joined(self, data: bytes) -> None:
        """Output to leave in one write with the modem's next one in this loop turn: an
        answer's text with its final result code, which a UART sends back to back (a host
        reading between two writes would see the text alone -- on a loaded machine, or when
        the host shares this process and its GIL, for milliseconds).  Written on the next
        loop turn at the latest; at once without a running loop (sans-IO use)."""
        if self.loop is None or not self.loop.is_running():
            self.write(data)
            return
        if not self._held:
            self.loop.call_soon(self.flush_held)
        self._held += data

    def flush_held(self) -> None:
        if self._held:
            self.write(b"")

    def drop_held(self) -> None:
        """Output write_joined() kept is lost with what the port had not sent (a power cut)."""
        self._held = b""

    def urc(self, line: str | bytes, raw: bytes = b"", about: object = None, kind: str | None = None) -> None:
        if not self.powered:
            return
        if self.booting:                  # a restarting module's UART is not up before RDY
            log.info("restarting: URC %r before RDY not written", line)
            return
        self.interpreter.urc(line, raw, about, kind)

    def drop_urcs(self, about: object, kind: str | None = None) -> None:
        """Waiting URCs about `about` (a socket the host closed) are not written; kind:
        only those raised with that kind."""
        self.interpreter.drop_urcs(about, kind)

    def feature(self, key: str, factory: Callable[["Modem"], object]):
        """Per-modem state of a feature, created on first use."""
        state = self._features.get(key)
        if state is None:
            state = self._features[key] = factory(self)
        return state

    def feature_if_made(self, key: str):
        """A feature's state if something has used it already, else None (nothing made)."""
        return self._features.get(key)

    @property
    def files(self):
        """The module's file system (UFS persists in the state dir, RAM does not)."""
        return self.feature("files", _make_files)

    @property
    def secstore(self):
        """The ML302 certificate store (encrypted at rest in the state dir)."""
        return self.feature("secstore", lambda m: SecStore(m.state_dir))

    # -- events between features (PDP loss closes sockets, reset clears RAM) --
    def on(self, event: str, callback: Callable[..., None]) -> None:
        """Events: "pdp_deactivated" (cid), "pdp_reset" (cid: the host's AT+QIDEACT, before
        the context goes: its ended SSL connections leave their ids), "reset", "shutdown",
        "hangup" (the host closed the port), "output_drained" (the host caught up with a
        backlog), "port_idle" (the interpreter is idle again after an answer, a data prompt
        or a pending command, its queued URCs written: a URC now goes out at once),
        "restart" (the host asked for a restart or power-down: AT+CFUN=1,1, AT+QPOWD),
        "host_attached" (a program opened the port; a loop turn after it was seen),
        "command" (name, kind, args: a command the host sent, as the interpreter dispatches
        it, before its handler runs; scenario triggers count these)."""
        self._listeners[event].append(callback)

    def emit(self, event: str, **kwargs) -> None:
        listeners = self._listeners.get(event)
        if not listeners:                    # (every command emits; mostly nobody listens)
            return
        for callback in list(listeners):
            try:
                callback(**kwargs)
            except Exception:
                log.exception("listener for %s failed", event)

    # -- lifecycle ------------------------------------------------------------
    def save_settings(self) -> None:
        """AT&W.  OSError (a full or read-only state dir): nothing changed, here or on disk
        (the atomic write left the old file), so ATZ and a restart agree."""
        saved = self.settings.copy()
        saved.save(self._settings_path)
        self.saved_settings = saved

    def restore_saved_settings(self, announce: bool = True) -> None:
        """ATZ (announce: its rate is the port's, see _restore); a restart's (announce False:
        the "reset" event has put the pace back to the power-on rate)."""
        self._restore(self.saved_settings, announce)

    def restore_factory_settings(self) -> None:
        self._restore(self.factory_settings, True)

    def _restore(self, settings, announce: bool) -> None:
        """ATZ / AT&F: a rate they change the AT+IPR setting to is the port's rate too, as
        after AT+IPR (a paced port switches once the answer has gone out).  One that brings
        back the rate the setting held leaves the pace alone: on a fresh `--baud` port (the
        profile's default rate is the setting) and after a restart (--baud's pace, whatever
        AT+IPR? says) the host talks at the port's rate, and ATZ must not move it."""
        before = self.settings.ipr
        self.settings = settings.copy()
        if announce and self.settings.ipr and self.settings.ipr != before:
            self.emit("ipr", rate=self.settings.ipr)

    def deactivate_pdp(self, cid: int) -> None:
        """The host's side takes context `cid` down (AT+QIDEACT, AT+CGACT=0, a detach, the
        radio off): an active one is reported first (AT+CEER's cause; +CGEV with
        AT+CGEREP: emulator/modem/packet_events.py), then each socket on it reports closed."""
        if self.pdp.is_active(cid):
            packet_events(self).deactivated(cid, "host")
        self._drop_pdp(cid)

    def network_deactivated_pdp(self, cid: int) -> None:
        """The network took context `cid` down (not the host): reported as the network's
        (+CGEV: NW PDN DEACT, AT+CEER), then the family's URC (profile pdp.deact_urc), then
        each socket on it reports closed."""
        if self.pdp.is_active(cid):
            packet_events(self).deactivated(cid, "network")
        urc = self.profile.get("pdp.deact_urc")
        if urc:
            self.urc(urc.format(cid=cid))
        self._drop_pdp(cid)

    def _drop_pdp(self, cid: int) -> None:
        """Context `cid` is down (whoever took it): each socket on it reports closed."""
        self.pdp.deactivate(cid)
        self.emit("pdp_deactivated", cid=cid)

    def reboot(self, delay: float) -> None:
        """A restart (AT+CFUN=1,1, the control API's reboot): reset() now, the profile's
        start-up URCs from `delay` s later, each at its `defaults.boot_urc_ms` offset (a real
        EC21: RDY, +CFUN: 1 ~130 ms later, +CPIN: READY ~360 ms, then the SIM's and SMS
        store's).  A restart before the last came abandons that boot: one set of URCs,
        after the last restart."""
        self.reset()
        self.powered = True
        if self.loop is not None:
            # Until RDY the host's bytes are lost (feed), those read before the restart too.
            self.booting = True
            self.interpreter.drop_input()
            self._boot = self.call_later(delay, self._boot_urcs, 0, None)
        else:
            self._sim_up()                # no loop, no boot to wait for (sans-IO tests)
        self.interpreter.settle()         # idle again, its sockets gone: "port_idle" now

    def power_down(self) -> None:
        """AT+QPOWD after its "POWERED DOWN": what a reboot loses, and then nothing until the
        module is powered on (reboot()): by the control API, or by itself after the
        profile's defaults.qpowd_power_on_ms (a board with PWRKEY held low; 0: never)."""
        self.reset()
        self.powered = False
        self.interpreter.hangup()         # a half-typed line or waiting URC is not kept (and
                                          # the port is idle: "port_idle" goes out)
        after = self.profile.get("defaults.qpowd_power_on_ms", 0)
        if after and self.loop is not None:
            self._boot = self.call_later(after / 1000, self.reboot, 0)

    @property
    def booted(self) -> bool:
        """The start-up is over: the SIM is ready and every boot URC is out."""
        return self.sim_ready and self._boot is None

    def _boot_urcs(self, index: int, rdy_at: float | None) -> None:
        """Writes boot URC `index` and every one due at the same offset, then waits for
        the next, due at RDY's time + its offset (not chained offset differences: their
        float error would add up).  The SIM is ready from its "+CPIN: READY" on (or the
        end, without one)."""
        self._boot = None
        self.booting = False              # (RDY: the port reads again)
        if rdy_at is None:
            rdy_at = self.monotonic()
        lines, offsets = self._boot_schedule()
        while index < len(lines):
            self.urc(lines[index])
            self.boot_said.add(lines[index])
            if lines[index] == SIM_READY_URC:
                self._sim_up()
            index += 1
            if index < len(lines) and offsets[index] > offsets[index - 1]:
                delay = rdy_at + offsets[index] / 1000 - self.monotonic()
                self._boot = self.call_later(delay, self._boot_urcs, index, rdy_at)
                return
        self._sim_up()

    def _boot_schedule(self) -> tuple[list[str], list[int]]:
        """The profile's start-up URCs and their offsets after RDY in ms (all 0 without
        defaults.boot_urc_ms)."""
        lines = self.profile.get("defaults.boot_urcs", [])
        return lines, self.profile.get("defaults.boot_urc_ms") or [0] * len(lines)

    def _cancel_boot(self) -> None:
        """The start-up URCs still due are not written (a restart, the SIM switched off)."""
        if self._boot is not None:
            self._boot.cancel()
            self._boot = None

    def sim_power_down(self) -> None:
        """AT+CFUN=0: the SIM is switched off (Quectel's AT+CFUN example: AT+CPIN? then
        answers +CME ERROR: 13).  A start-up still under way ends here: its URCs not out yet
        are not written (the SIM they report is off)."""
        self._cancel_boot()
        self.sim_off = True
        self.sim_ready = False
        self.boot_said.clear()

    def sim_power_up(self) -> None:
        """AT+CFUN=1 (or 4) after AT+CFUN=0: the SIM starts again, busy until its
        "+CPIN: READY", as in Quectel's AT+CFUN example (OK, then +CPIN: READY, +QUSIM: 1,
        the SMS and phonebook DONEs): the start-up URCs from "+CPIN: READY" on, spaced as
        after RDY and as far after this command's OK as they come after the line before
        them ("+CFUN: 1": full functionality).  A profile whose start-up has no such line:
        ready at once."""
        self.sim_off = False
        lines, offsets = self._boot_schedule()
        if SIM_READY_URC not in lines or self.loop is None:
            self._sim_up()
            return
        first = lines.index(SIM_READY_URC)
        start = offsets[first - 1] if first else 0
        rdy_at = self.monotonic() - start / 1000      # (when RDY would have been)
        if offsets[first] == start:
            self._boot_urcs(first, rdy_at)            # (due now: ready for the next command;
            return                                    # the URCs wait behind this one's answer)
        self._boot = self.call_later((offsets[first] - start) / 1000, self._boot_urcs, first, rdy_at)

    def _sim_up(self) -> None:
        """The restart's SIM is read: it answers, and the module registers ("sim_ready")."""
        if not self.sim_ready:
            self.sim_ready = True
            self.emit("sim_ready")

    def reset(self) -> None:
        """AT+CFUN=1,1: what a module loses when it reboots.  Sockets go first and
        silently ("reset"), so taking the PDP contexts down reports nothing more."""
        self._cancel_boot()
        self.sim_ready = False            # until the boot's +CPIN: READY
        self.sim_off = False
        self.boot_said.clear()
        self.epoch += 1
        self._wake_drain_waiters()
        self.emit("reset")
        self.pdp.deactivate_all()
        self.restore_saved_settings(announce=False)
        self.reg_urc = dict.fromkeys(self.reg_urc, 0)     # AT+CREG=<n> & co. are not AT&W's
        self.cfun = 1


def _make_files(modem: Modem) -> FileStore:
    p = modem.profile
    store = FileStore(modem.state_dir, p["files.ufs_capacity"], p["files.ram_capacity"],
                      max_name_len=p["files.max_name_len"])
    modem.on("reset", store.clear_ram)
    return store
