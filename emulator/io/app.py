"""Runs modems on one asyncio event loop: each modem gets a pty, its interpreter
and the shared routing layer.  `Emulator` is the in-loop API (the CLI uses it);
`BackgroundEmulator` runs one in a thread for tests and for embedding."""
from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

from emulator.logsafe import get_logger
from emulator.modem.modem import Modem
from emulator.io.network import Router
from emulator.modem.profile import Profile, load_profile
from emulator.io.transport import PtyPort

log = get_logger("emulator.network")


_ACCEPT_TROUBLE = "socket.accept() out of system resource"
_QUIETED: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()


def quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """A listening socket (a TCP LISTENER, the control socket) that cannot accept for lack of
    descriptors or memory: asyncio reports it once per pending connection, with a traceback
    each (a hundred in a millisecond), and retries a second later.  Said here in one WARNING
    line per listener and retry, and the retry of a listener closed since is no error; everything
    else goes to the handler that was there."""
    if loop in _QUIETED:
        return
    previous = loop.get_exception_handler()
    said: dict[object, float] = {}

    def handler(loop, context) -> None:
        exc = context.get("exception")
        if context.get("message") == _ACCEPT_TROUBLE and isinstance(exc, OSError):
            sock = context.get("socket")
            try:
                where = sock.getsockname() if sock is not None else "?"
            except OSError:
                where = "?"
            now = loop.time()
            if now - said.get(where, float("-inf")) >= 1.0:      # (asyncio retries after 1 s)
                said[where] = now
                log.warning("listening socket %s cannot accept a connection: %s (tried again "
                            "in a second)", where or "?", exc.strerror or exc)
            return
        if isinstance(exc, ValueError) and "._start_serving(" in repr(context.get("handle")):
            # asyncio's retry a second later of a listener closed since (the emulator
            # stopping, a TCP LISTENER closed): its socket is gone, nothing to serve.
            log.debug("retry of a closed listening socket ignored: %s", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)
    loop.set_exception_handler(handler)
    _QUIETED.add(loop)


@dataclass
class ModemPort:
    modem: Modem
    port: PtyPort

    @property
    def path(self) -> str:
        return self.port.path


class Emulator:
    def __init__(self, router: Router | None = None, keylog=None) -> None:
        self.router = router or Router()
        self.keylog = keylog               # callable(str) receiving NSS key-log lines, or None
        self.ports: list[ModemPort] = []
        self.demo = None
        self._trace_files: dict[str, object] = {}   # real path -> the TraceWriter writing it

    async def start_demo(self) -> None:
        """The built-in loopback TLS peer; routes the manuals' example hosts to it."""
        from emulator.tools.demo_peer import start_demo_peer
        self.demo = await start_demo_peer()
        for dialled, (addr, port) in self.demo.routes.items():
            host, dport = dialled.rsplit(":", 1)
            self.router.add_map(host, int(dport), addr, port)
        # The ML302 manual's §3 shows the address its DNS returned; a --dns given wins.
        if "www.iottest.work" not in self.router.dns:
            self.router.add_dns("www.iottest.work", "106.12.79.254")

    async def add_modem(self, profile: Profile | str, *, link: str | Path | None = None,
                        state_dir: str | Path | None = None, name: str | None = None,
                        manual_time: bool = False, trace=None, baud: int | None = None,
                        hangup_on_close: bool = True) -> ModemPort:
        """manual_time: the modem's timers wait for advance() (tests of timeouts).
        hangup_on_close=False (the CLI's --uart): the host closing the port is no hang-up
        for the modem, as on a UART with no DTR wired -- it carries on where it was (a data
        prompt keeps waiting for its bytes, online mode stays online) and what it writes
        while nobody holds the port is lost (docs/behaviour.md).
        baud: output to the host paced at this rate, 10 bits a byte (None: unpaced);
        AT+IPR=<rate> then switches the pace after its answer.
        trace: a path or an emulator.tools.trace.TraceWriter (shared by several modems
        if wanted; modems given the same path share its writer, as --count's modems do):
        every byte each way, commands, socket events (JSON lines)."""
        if baud is not None and (not isinstance(baud, int) or isinstance(baud, bool) or baud <= 0):
            raise ValueError(f"baud must be a positive integer, got {baud!r}")
        loop = asyncio.get_running_loop()
        quiet_accept_errors(loop)
        if isinstance(profile, (str, os.PathLike)):       # (a name, or a .toml path as str or Path)
            profile = load_profile(os.fspath(profile))
        modem = Modem(profile, state_dir=state_dir, network=self.router,
                      name=name or f"modem{len(self.ports)}", keylog=self.keylog, manual_time=manual_time)
        if self.demo is not None:       # (before a trace's start record: what the modem holds)
            from emulator.tools.demo_setup import install_demo_material
            modem.demo_note = install_demo_material(modem, self.demo)   # (what was done, in words)
        feed = modem.feed
        if trace is not None:
            from emulator.tools.trace import TraceWriter, attach_trace
            if not hasattr(trace, "attach"):         # a path (a writer: anything with attach())
                key = os.path.realpath(trace)
                if key not in self._trace_files:
                    self._trace_files[key] = TraceWriter(trace)    # (closed with the emulator)
                trace = self._trace_files[key]
            feed, wrap_sink = attach_trace(trace, modem, len(self.ports))
        on_hangup = modem.host_hangup if hangup_on_close else modem.host_closed_without_hangup
        port = PtyPort(loop, feed, link, on_hangup=on_hangup, on_drain=modem.output_drained,
                       on_attach=modem.host_attached if hangup_on_close else None,
                       max_backlog=profile.get("serial.output_backlog", 1 << 20),
                       hangup_on_close=hangup_on_close)
        if baud is not None:
            _pace(modem, port, baud)
        if trace is not None:
            port.on_output_lost = modem.tracer.output_lost
        sink = port.write if trace is None else wrap_sink(port.write)
        modem.attach(sink, loop, port)
        entry = ModemPort(modem, port)
        self.ports.append(entry)
        return entry

    def control(self, op: str, modem: int = 0, **kw) -> dict:
        """A fault or a state query (emulator/tools/control.py): {"ok": True, ...} or
        {"ok": False, "error": "<why>"}, never an exception for bad input.  On the loop."""
        from emulator.tools.control import run
        return run(self, op, modem, kw)

    def run_scenario(self, scenario):
        """Start a scenario (emulator/tools/scenario.py): a TOML path, a dict of the same
        shape or a loaded Scenario, against the modems added so far; its `at` times count
        from now.  Returns the ScenarioRun (.fired, .pending, .cancel()); a bad scenario
        raises ScenarioError with the one-line message.  On the loop."""
        from emulator.tools.scenario import Scenario, ScenarioRun, load_scenario
        if not isinstance(scenario, Scenario):
            scenario = load_scenario(scenario)
        return ScenarioRun(self, scenario).start()

    async def close(self) -> None:
        for entry in self.ports:
            entry.modem.emit("shutdown")
            entry.port.close()
        self.ports.clear()
        for writer in self._trace_files.values():
            writer.close()
        self._trace_files.clear()
        if self.demo is not None:
            await self.demo.close()
            self.demo = None


def _pace(modem: Modem, port: PtyPort, baud: int) -> None:
    port.set_baud(baud)
    new_rate: list[int] = []

    def ipr(rate: int) -> None:            # AT+IPR=<rate> answered (its OK not written yet)
        if rate:
            new_rate[:] = [rate]

    def idle() -> None:                    # the answer is queued: switch once it has gone
        if new_rate:
            port.set_baud(new_rate.pop(), after_queued=True)

    def restarted() -> None:               # AT+CFUN=1,1, a reboot: the power-on rate again
        new_rate.clear()                   # (what is queued, AT+CFUN=1,1's OK, at the old one)
        port.set_baud(baud, after_queued=True)
    modem.on("ipr", ipr)
    modem.on("port_idle", idle)
    modem.on("reset", restarted)


class BackgroundEmulator:
    """An Emulator on its own loop in a daemon thread.

        with BackgroundEmulator(routes=[...]) as emu:
            port = emu.add_modem("ec2x", state_dir=tmp)
            serial.Serial(port.path)
    """

    def __init__(self, routes=None, offline: bool = True, demo: bool = False, keylog=None) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="emulator", daemon=True)
        self.emulator = Emulator(Router(routes, offline=offline), keylog=keylog)
        self._demo = demo

    def __enter__(self) -> "BackgroundEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()
        if self._demo:
            self.call(self.emulator.start_demo())

    @property
    def running(self) -> bool:
        """Started and not stopped: its modems exist."""
        return self._thread.is_alive() and not self.loop.is_closed()

    def call(self, coro, timeout: float = 30):
        if not self.running:
            coro.close()                      # (closed unrun: Python warns of no lost coroutine)
            raise RuntimeError("this BackgroundEmulator is stopped (or not started): its modems "
                               "are gone (a pytest `modem` fixture's modem ends with its test)")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, func, *args):
        """Run a plain function on the loop thread (modem state is loop-owned)."""
        async def wrapper():
            return func(*args)
        return self.call(wrapper())

    def add_modem(self, profile="ec2x", **kwargs) -> ModemPort:
        return self.call(self.emulator.add_modem(profile, **kwargs))

    def advance(self, port: ModemPort, seconds: float) -> int:
        """Move a manual_time modem's clock on by `seconds` (its due timers fire)."""
        return self.run(port.modem.timers.advance, seconds)

    def wait_received(self, port: ModemPort, total: int, timeout: float = 10) -> None:
        """Block until the modem has read `total` bytes from its host in all (so a test
        on manual time advances the clock only after its bytes arrived)."""
        import time
        deadline = time.monotonic() + timeout
        while self.run(lambda: port.port.received) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the modem read {self.run(lambda: port.port.received)} of {total} bytes")
            time.sleep(0.002)

    def advancer(self, port: ModemPort, host, before: int = 0, timeout: float = 10):
        """advance(seconds) for a test on manual time: the modem's clock moves only once it
        has read all that `host` (anything with a .written count) wrote -- plus `before`
        bytes earlier hosts wrote, as received counts every host's."""
        def advance(seconds: float) -> int:
            self.wait_received(port, before + host.written, timeout)
            return self.advance(port, seconds)
        return advance

    def control(self, op: str, modem: int = 0, **kw) -> dict:
        """Emulator.control() run on the loop thread."""
        return self.run(lambda: self.emulator.control(op, modem, **kw))

    def run_scenario(self, scenario):
        """Emulator.run_scenario() run on the loop thread.  The ScenarioRun changes on the
        loop: read it there too (emu.run(lambda: run.fired)) when a step may be running."""
        return self.run(self.emulator.run_scenario, scenario)

    @property
    def router(self) -> Router:
        return self.emulator.router

    async def _shutdown(self) -> None:
        """Close the emulator, then end what its modems still run (a close lingering, a
        command's answer not yet started) as asyncio.run() would: cancelled and run to
        their end, so no task or coroutine is left to the garbage collector (a "never
        awaited" warning, a socket closed by nobody)."""
        await self.emulator.close()
        for _ in range(3):                    # (a task's cleanup may start another)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            done, _ = await asyncio.wait(tasks, timeout=5)
            for task in done:                 # (retrieved: no "never retrieved" warning)
                if not task.cancelled():
                    task.exception()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.call(self._shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
