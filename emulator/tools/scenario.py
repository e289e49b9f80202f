"""Scenario files (issue 12): the control operations (emulator/tools/control.py) scheduled
by time or by trigger, so a field bug report becomes a file in the user's repository.

    modem-emulator --scenario field-bug.toml ...
    Emulator.run_scenario(path_or_dict) / BackgroundEmulator.run_scenario(...) -> ScenarioRun
    modem.scenario(path)                                     (the pytest plugin's fixture)

The file (TOML) is a list of steps; each is one control operation, its arguments as keys,
and exactly one of `at`, `after`, `when` saying when it happens:

    description = "field log 2026-11-30: the 3rd send fails"   # optional, free text

    [[step]]
    at = 2.5                      # seconds after the scenario starts, on the modem's time
    op = "urc"                    # (a manual-time modem: when advance() passes it)
    text = "+QIURC: \\"pdpdeact\\",1"

    [[step]]
    after = { command = "+QSSLSEND", socket = 1, count = 3 }
    op = "drop"                   # once the answer of the 3rd AT+QSSLSEND on socket 1 was
    socket = 1                    # written (SEND OK / SEND FAIL and the URCs queued with it)
    how = "rst"

    [[step]]
    when = { command = "+QSSLRECV" }   # the 1st AT+QSSLRECV, before the modem answers it
    op = "send_fail"
    socket = 0
    count = 2

Step keys
    op          a control operation: drop, pdp_deact, send_fail, dns_fail, connect_refuse,
                handshake_stall, net, slow, uart_noise, dtr, urc, reboot, register (state is allowed but
                does nothing useful); every other key of the step is its argument, with the
                same name and values as on the control socket
    at          seconds (>= 0) after the scenario started: the CLI starts it with the modems,
                run_scenario() when it is called; on each modem's own timers
    after       { command, socket?, kind?, count? }: once the port is idle again after the
                count-th matching command: its answer (final result, a data prompt's result,
                a pending command's late answer, the URCs that waited) is written.  For a
                ";" chain that is the end of the whole line.
    when        the same table: as the count-th matching command arrives, before its handler
                runs, so the fault applies to that very command ("when AT+QSSLSEND" with
                send_fail: that send fails; "slow": that answer is late; "urc": the line goes
                out before its answer).  reboot cannot be a `when` step (use `after`).
    delay       seconds (>= 0) after the trigger (only with after / when)
    modem       which of --count's modems (default 0); a trigger watches that modem's port
    note        free text (the field log line it comes from), ignored
  trigger table
    command     "+QSSLSEND" or "AT+QSSLSEND" (case does not matter); a command of the profile
    socket      only commands naming this socket: the <clientID>/<ssid> argument (EC2x
                AT+QSSLOPEN's third, ML302 AT+QSSLRECV's second, otherwise the first)
    kind        only this form: "write" (=...), "read" (?), "test" (=?), "exec" (bare)
    count       the count-th match fires the step (default 1); every step fires once

Every command the host sends counts, whatever its answer (an AT+QSSLSEND answered ERROR is
a send); the interpreter tells about each with the modem event "command" (name, kind, args)
as it is dispatched.

A bad file stops start-up (CLI exit 2) with one line: `scenario FILE: step N: key K: what`
(N counts [[step]] tables from 1).  An operation that fails when its time comes (the socket
is not open) is logged as a warning and recorded; the other steps still run.  Each step that
ran is in ScenarioRun.fired ({"step", "op", "ok", "error"?}) and, with --trace, a trace record
of kind "scenario".
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from emulator.io.network import MAX_LATENCY_MS
from emulator.logsafe import get_logger
from emulator.modem.profile import command_name
from emulator.tools import shown_path

log = get_logger("emulator.scenario")

KINDS = ("write", "read", "test", "exec")
SENT_POLL = 0.002        # s between two looks at the output an `after` step waits to leave
SENT_STALL = 0.5         # s without a byte leaving: the step fires all the same
STEP_KEYS = ("op", "at", "after", "when", "delay", "modem", "note")
TRIGGER_KEYS = ("command", "socket", "kind", "count")
# Which argument names the socket, where it is not the first (per profile variant); None:
# no argument does.  AT+QIOPEN=<contextID>,<connectID>,...; AT+QISTATE's second argument is
# a connectID only in its <query_type> 1 form.
SOCKET_ARG = {("+QSSLOPEN", "quectel"): 2, ("+QSSLRECV", "onemo"): 1, ("+QIOPEN", "*"): 1,
              ("+QISTATE", "*"): None}


class ScenarioError(Exception):
    """A file that cannot run; its text is the one line start-up prints."""


# -- argument checks (start-up errors for what the op itself would refuse later) -----
def _int(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be an integer, got {v!r}"
        return None if lo <= v <= hi else f"must be in {lo}..{hi}, got {v}"
    return check


def _num(lo: float, hi: float) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"must be a number, got {v!r}"
        return None if lo <= v <= hi else f"must be in {lo}..{hi}, got {v}"
    return check


def _kbps(v: Any) -> str | None:
    """As the control op takes it: 0 (unpaced) or 0.1 (100 bit/s) up to 10,000,000."""
    bad = _num(0, 10_000_000)(v)
    if bad is None and 0 < v < 0.1:
        return f"must be 0 (unpaced) or at least 0.1 (100 bit/s), got {v}"
    return bad


def _choice(*choices: str) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"
    return check


def _urc_text(v: Any) -> str | None:
    if not isinstance(v, str):
        return f"must be a string, got {v!r}"
    from emulator.tools.control import urc_text_problem
    return urc_text_problem(v)              # (the control op's own check, at load time)


def _command(v: Any) -> str | None:
    if not isinstance(v, str) or not command_name(v):
        return f"must be a command name like \"+QSSLSEND\", got {v!r}"
    return None


def _bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


_SOCKET = _int(0, 63)
_COUNT = (_int(0, 1_000_000), False)
# op -> {argument: (check, required)}.  An op of control.OPS missing here takes any
# arguments (the op checks them when it runs).
ARGS: dict[str, dict[str, tuple[Callable, bool]]] = {
    "state": {},
    "drop": {"socket": (_SOCKET, True), "how": (_choice("close", "rst", "blackhole"), True)},
    "pdp_deact": {"cid": (_int(0, 255), True)},
    "dns_fail": {"count": _COUNT},
    "connect_refuse": {"count": _COUNT},
    "handshake_stall": {"count": _COUNT},
    "send_fail": {"socket": (_SOCKET, True), "count": _COUNT},
    "dtr": {"level": (_int(0, 1), True)},
    "urc": {"text": (_urc_text, True)},
    "reboot": {"ms": (_int(0, 600_000), False)},
    "slow": {"command": (_command, True), "ms": (_int(0, 600_000), True)},
    "net": {"latency_ms": (_num(0, MAX_LATENCY_MS), False), "kbps": (_kbps, False),
            "loss": (_num(0, 1), False), "socket": (_SOCKET, False), "seed": (_int(0, 2**63), False)},
    "uart_noise": {"on": (_bool, True), "seed": (_int(0, 2**63), False)},
    "register": {"stat": (_int(0, 5), True)},
}


@dataclass
class Trigger:
    command: str                      # "+QSSLSEND"
    socket: int | None = None
    kind: str | None = None
    count: int = 1

    def describe(self) -> str:
        where = f" on socket {self.socket}" if self.socket is not None else ""
        form = f" ({self.kind})" if self.kind else ""
        return f"AT{self.command}{form}{where} #{self.count}"


@dataclass
class Step:
    number: int                       # its [[step]] table, from 1
    op: str
    kw: dict
    modem: int = 0
    at: float | None = None
    after: Trigger | None = None
    when: Trigger | None = None
    delay: float = 0.0
    aimed: bool = False               # the step has a `modem` key (for_modem)

    @property
    def trigger(self) -> Trigger | None:
        return self.after or self.when


@dataclass
class Scenario:
    source: str                       # the file (or "<dict>") for messages
    steps: list[Step] = field(default_factory=list)
    description: str = ""

    def for_modem(self, index: int, have: set[int] | None = None) -> "Scenario":
        """What a replay of modem `index`'s trace (a single modem, its 0) runs: the steps
        aimed at that modem (`modem = <index>`, a --count run's scenario) and those aimed at
        none (no `modem` key: the replaying modem's, whichever it replays); the steps aimed
        at other modems are not its.  have: the modems the trace recorded -- a step aimed at
        another is a mistake (ScenarioError), as at start-up."""
        for step in self.steps:
            if have is not None and step.aimed and step.modem not in have:
                raise ScenarioError(f"scenario {self.source}: step {step.number}: key modem: there is no "
                                    f"modem {step.modem} (the trace has {', '.join(map(str, sorted(have)))})")
        return replace(self, steps=[replace(step, modem=0) for step in self.steps
                                    if step.modem == index or not step.aimed])

    def check(self, modem_count: int, profile_of: Callable[[int], Any]) -> None:
        """What needs the running modems: each step's modem exists, each trigger's
        command is one of that modem's profile, and so are the op's own arguments that the
        profile bounds (a socket id, a PDP context id, a command to slow down): a step that
        could never run is refused at start-up, not logged when its time comes.
        ScenarioError otherwise."""
        for step in self.steps:
            if step.modem >= modem_count:
                raise ScenarioError(f"scenario {self.source}: step {step.number}: key modem: "
                                    f"there is no modem {step.modem} (there are {modem_count})")
            profile = profile_of(step.modem)
            trig = step.trigger
            if trig is not None and profile.command_variant(trig.command) is None:
                key = "after" if step.after else "when"
                raise ScenarioError(f"scenario {self.source}: step {step.number}: key {key}.command: "
                                    f"AT{trig.command} is not a command of profile {profile.name}")
            problem = _profile_problem(step, profile)
            if problem:
                raise ScenarioError(f"scenario {self.source}: step {step.number}: {problem}")


def _profile_problem(step: Step, profile) -> str | None:
    """What in a step's op arguments the modem's profile can never take (the control op
    checks the same when it runs: emulator/tools/control.py)."""
    kw, trig = step.kw, step.trigger
    sockets = profile.get("ssl.sockets")
    for key, socket in ((f"{'after' if step.after else 'when'}.socket", trig and trig.socket),
                        ("socket", kw.get("socket"))):
        if socket is not None and sockets is not None and not socket < sockets:
            return f"key {key}: {socket} is not a socket id of profile {profile.name} (0-{sockets - 1})"
    if step.op == "pdp_deact":
        first, last = profile["pdp.first_id"], profile["pdp.last_id"]
        if not first <= kw["cid"] <= last:
            return f"key cid: {kw['cid']} is not a PDP context of profile {profile.name} ({first}-{last})"
    if step.op == "slow" and profile.command_variant(command_name(kw["command"])) is None:
        return f"key command: {kw['command']!r} is not a command of profile {profile.name}"
    return None


def load_scenario(source: str | Path | dict) -> Scenario:
    """Read and check a scenario file (or an already parsed dict of the same shape)."""
    if isinstance(source, dict):
        return parse_scenario(source, "<dict>")
    path = Path(source)
    if "\0" in str(path):
        raise ScenarioError(f"scenario {shown_path(path)}: a NUL byte in a path")
    try:
        from emulator.modem.profile import load_settings_toml
        data = load_settings_toml(path)
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise ScenarioError(f"scenario {path}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(path))


def parse_scenario(data: dict, source: str) -> Scenario:
    def fail(where: str, why: str) -> ScenarioError:
        return ScenarioError(f"scenario {source}: {where}: {why}")

    for key in data:
        if key not in ("step", "description"):
            raise fail(f"key {key}", "unknown key (a scenario has [[step]] tables and a description)")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("key description", f"must be a string, got {description!r}")
    steps = data.get("step")
    if steps is None or steps == []:        # (TOML cannot write an empty array of tables:
        raise fail("key step", "missing: no [[step]] tables")     # `step = []` is the same: none)
    if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        raise fail("key step", "must be an array of tables ([[step]])")
    scenario = Scenario(source, description=description)
    for number, raw in enumerate(steps, 1):
        scenario.steps.append(_parse_step(number, dict(raw), fail))
    return scenario


def _parse_step(number: int, raw: dict, fail) -> Step:
    where = f"step {number}"
    from emulator.tools.control import OPS
    op = raw.pop("op", None)
    if op is None:
        raise fail(f"{where}: key op", "missing")
    if op not in OPS:
        raise fail(f"{where}: key op", f"unknown operation {op!r} (known: {', '.join(sorted(OPS))})")
    timing = [k for k in ("at", "after", "when") if k in raw]
    if len(timing) != 1:
        raise fail(where, "needs exactly one of at, after, when" +
                   (f" (has {', '.join(timing)})" if timing else ""))
    step = Step(number, op, {})
    step.aimed = "modem" in raw
    modem = raw.pop("modem", 0)
    why = _int(0, 10_000)(modem)
    if why:
        raise fail(f"{where}: key modem", why)
    step.modem = modem
    note = raw.pop("note", "")
    if not isinstance(note, str):
        raise fail(f"{where}: key note", f"must be a string, got {note!r}")
    if "at" in raw:
        at = raw.pop("at")
        why = _num(0, 10 * 365 * 86400)(at)
        if why:
            raise fail(f"{where}: key at", f"seconds after the start: {why}")
        step.at = float(at)
        if "delay" in raw:
            raise fail(f"{where}: key delay", "only with after or when (an `at` step says its time itself)")
    else:
        key = timing[0]
        trig = _parse_trigger(raw.pop(key), lambda why, k=None: fail(
            f"{where}: key {key}{'.' + k if k else ''}", why))
        setattr(step, key, trig)
        if key == "when" and op == "reboot":
            raise fail(f"{where}: key when", "reboot cannot run as a command arrives (its answer "
                                             "would come from the rebooted modem): use after")
        delay = raw.pop("delay", 0)
        why = _num(0, 86400)(delay)
        if why:
            raise fail(f"{where}: key delay", why)
        step.delay = float(delay)
    spec = ARGS.get(op)
    if spec is not None:
        for key, value in raw.items():
            if key not in spec:
                known = ", ".join(spec) or "none"
                raise fail(f"{where}: key {key}", f"not an argument of {op} (its arguments: {known}; "
                                                  f"step keys: {', '.join(STEP_KEYS)})")
            why = spec[key][0](value)
            if why:
                raise fail(f"{where}: key {key}", why)
        for key, (_, required) in spec.items():
            if required and key not in raw:
                raise fail(f"{where}: key {key}", f"missing (op {op} needs it)")
    step.kw = raw
    return step


def _parse_trigger(value: Any, fail) -> Trigger:
    if not isinstance(value, dict):
        raise fail(f"must be a table like {{ command = \"+QSSLSEND\", count = 3 }}, got {value!r}")
    for key in value:
        if key not in TRIGGER_KEYS:
            raise fail(f"unknown key {key!r} (known: {', '.join(TRIGGER_KEYS)})")
    command = value.get("command")
    why = _command(command)
    if why:
        raise fail(why, "command")
    trig = Trigger(command_name(command))
    if "socket" in value:
        why = _SOCKET(value["socket"])
        if why:
            raise fail(why, "socket")
        trig.socket = value["socket"]
    if "kind" in value:
        why = _choice(*KINDS)(value["kind"])
        if why:
            raise fail(why, "kind")
        trig.kind = value["kind"]
    count = value.get("count", 1)
    why = _int(1, 1_000_000)(count)
    if why:
        raise fail(why, "count")
    trig.count = count
    return trig


# -- running --------------------------------------------------------------------------
class ScenarioRun:
    """A scenario attached to an Emulator's modems (on the emulator's loop).

    start() checks it against the modems (ScenarioError), arms the timed steps on each
    modem's timers and listens to the modems' "command" and "port_idle" events for the
    triggered ones.  fired: what ran, in order; cancel() stops what has not run yet."""

    def __init__(self, emulator, scenario: Scenario) -> None:
        self.emulator = emulator
        self.scenario = scenario
        self.fired: list[dict] = []
        self.cancelled = False
        self._timers: list = []
        self._seen: dict[int, int] = {}          # step number -> matching commands so far
        self._armed: dict[int, list[Step]] = {}  # modem -> "after" steps waiting for port_idle
        self._done: set[int] = set()

    @property
    def pending(self) -> list[int]:
        """Numbers of the steps that have not run yet."""
        return [s.number for s in self.scenario.steps if s.number not in self._done]

    def start(self) -> "ScenarioRun":
        ports = self.emulator.ports
        self.scenario.check(len(ports), lambda n: ports[n].modem.profile)
        watched: set[int] = set()
        for step in self.scenario.steps:
            modem = ports[step.modem].modem
            if step.at is not None:
                self._timers.append(modem.call_later(step.at, self._fire, step))
            elif step.modem not in watched:
                watched.add(step.modem)
                index = step.modem
                modem.on("command", lambda index=index, **ev: self._command(index, **ev))
                modem.on("port_idle", lambda index=index: self._idle(index))
        return self

    def cancel(self) -> None:
        self.cancelled = True
        for handle in self._timers:
            handle.cancel()

    def _command(self, index: int, name: str, kind: str, args=()) -> None:
        if self.cancelled:
            return
        modem = self.emulator.ports[index].modem
        for step in self.scenario.steps:
            trig = step.trigger
            if (trig is None or step.modem != index or step.number in self._done
                    or self._seen.get(step.number, 0) >= trig.count or trig.command != name
                    or (trig.kind is not None and trig.kind != kind)
                    or (trig.socket is not None and _socket_of(modem, name, args) != trig.socket)):
                continue
            self._seen[step.number] = seen = self._seen.get(step.number, 0) + 1
            if seen < trig.count:
                continue
            if step.when is not None:
                self._due(step)
            else:
                self._armed.setdefault(index, []).append(step)

    def _idle(self, index: int) -> None:
        steps = self._armed.pop(index, [])
        if steps:
            self._once_out(index, steps, None, 0)

    def _once_out(self, index: int, steps: list, last: int | None, still: int) -> None:
        """`after` steps fire once the answer they follow has left the port: output still
        going out (paced at --baud, in uart_noise's pieces) is waited for, so a `reboot` step
        does not cut the very answer it is after; a backlog that stops moving (a host not
        reading) for SENT_STALL seconds is not."""
        if self.cancelled:
            return
        modem = self.emulator.ports[index].modem
        backlog = modem.output_backlog()
        if backlog and modem.loop is not None:
            still = still + 1 if backlog == last else 0
            if still * SENT_POLL < SENT_STALL:
                # (not kept with _timers -- a handle per look piled up over a long paced
                # answer -- a cancelled run's next look ends at the check above)
                modem.loop.call_later(SENT_POLL, self._once_out, index, steps, backlog, still)
                return
        for step in steps:
            if not self.cancelled:
                self._due(step)

    def _due(self, step: Step) -> None:
        if step.delay:
            modem = self.emulator.ports[step.modem].modem
            self._timers.append(modem.call_later(step.delay, self._fire, step))
        else:
            self._fire(step)

    def _fire(self, step: Step) -> None:
        if self.cancelled or step.number in self._done:
            return
        self._done.add(step.number)
        from emulator.tools.control import run
        answer = run(self.emulator, step.op, step.modem, dict(step.kw), record=False)
        record = {"step": step.number, "op": step.op, "ok": answer.get("ok", False)}
        if not record["ok"]:
            record["error"] = answer.get("error")
            log.warning("scenario %s: step %d (%s) failed: %s", self.scenario.source, step.number,
                        step.op, record["error"])
        else:
            when = f"at {step.at:g} s" if step.at is not None else (
                f"{'after' if step.after else 'when'} {step.trigger.describe()}")
            log.info("scenario %s: step %d %s: %s %s", self.scenario.source, step.number, when,
                     step.op, step.kw)
        self.fired.append(record)
        if self.emulator.ports:
            self.emulator.ports[step.modem].modem.trace("scenario", **record, args=dict(step.kw))


def _socket_of(modem, name: str, args) -> int | None:
    """The socket a command names (SOCKET_ARG), or None."""
    index = SOCKET_ARG.get((name, modem.profile.command_variant(name)), 0)
    if index is None or index >= len(args) or args[index] is None:
        return None
    text = str(args[index]).strip()
    return int(text) if text.isascii() and text.isdigit() else None
