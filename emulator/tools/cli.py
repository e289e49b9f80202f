"""modem-emulator: open a pty that answers like the chosen module.

The first line of stdout is the device path (the --link path when given), so
scripts can read it; everything meant for people goes to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import fcntl
import logging
import os
import signal
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from emulator import stop_signals
from emulator.io.app import Emulator
from emulator.logsafe import get_logger
from emulator.io.network import MAX_LATENCY_MS, Router, parse_dns, parse_ping
from emulator.modem.profile import ProfileError, load_profile, load_settings_toml
from emulator.tools.scenario import ScenarioError
from emulator.tools.stderr_log import StderrLog
from emulator.tools import OneLineParser, shown_path
from emulator.io.transport import LinkError, link_lock_path

log = get_logger("emulator")


class Refused(Exception):
    """An argument or input file the emulator will not start with: one line, exit 2 (as
    argparse's own refusals, a bad profile or scenario).  Exit 1 is a start-up that failed
    on the machine (a --link taken, a state dir that cannot be created)."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="modem-emulator", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="ec2x",
                   help="ec2x, ml302 or a path to a profile .toml (default: ec2x)")
    p.add_argument("--link", help="create this symlink to the pty device; with --count, a pattern "
                                  "with {n} (the modem's index from 0), e.g. /tmp/modem-{n}")
    p.add_argument("--state-dir", help="where UFS files, certificates and saved settings live "
                                       "(default: ~/.local/state/modem-emulator/<profile>; "
                                       "with --count N > 1, modem n uses <state-dir>/<n>)")
    p.add_argument("--count", type=_positive, default=1, metavar="N",
                   help="run N independent modems in one process; the first N lines of stdout "
                        "are their device paths, in index order (default: 1)")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--route", action="append", default=[], metavar="HOST:PORT=ADDR:PORT",
                   help="connect to ADDR:PORT when the host dials HOST:PORT (repeatable)")
    p.add_argument("--listen", action="append", default=[], metavar="LOCAL_PORT=127.0.0.1:PORT",
                   help="an AT+QIOPEN \"TCP LISTENER\"/\"UDP SERVICE\" on the module's LOCAL_PORT "
                        "binds 127.0.0.1:PORT (loopback only; without one it binds "
                        "127.0.0.1:LOCAL_PORT; a [listen] table of the --config file does the same; "
                        "repeatable)")
    p.add_argument("--dns", action="append", default=[], metavar="NAME=IP",
                   help="the address the modem's DNS answers for NAME, shown to the host "
                        "(ML302 <ipaddr>); where the emulator connects is unchanged (repeatable)")
    p.add_argument("--ping", action="append", default=[], metavar="HOST=RTT_MS",
                   help="AT+QPING replies from HOST (a name or an IP address) come after RTT_MS "
                        "milliseconds; a routed or --dns host without one answers after 20 ms "
                        "(repeatable)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML file with [routes], [listen], [dns] and [ping] tables and optional "
                        "offline = true (any other key is refused)")
    p.add_argument("--offline", action="store_true",
                   help="unrouted names fail as DNS errors instead of using the real network")
    p.add_argument("--demo", action="store_true",
                   help="start the built-in loopback TLS peer and route the manuals' hosts to it")
    p.add_argument("--trace", metavar="FILE",
                   help="write every byte each way, each command with its answer and each socket's "
                        "TLS events and plaintext as JSON lines to FILE (created 0600; with --count, "
                        "one file, each record naming its modem's index); read it with "
                        "'modem-emulator trace show FILE', replay it with 'modem-emulator replay FILE'")
    p.add_argument("--control", metavar="PATH",
                   help="listen on this unix socket for JSON-line requests (state, faults; "
                        "\"modem\": <index> picks one of --count's modems); removed at exit")
    p.add_argument("--scenario", metavar="FILE",
                   help="a TOML file of control operations scheduled by time or by the host's "
                        "commands (a field bug as a file; emulator/tools/scenario.py); a bad "
                        "file stops start-up")
    p.add_argument("--keylog", metavar="FILE", help="append NSS key-log lines of every TLS session to this file "
                                    "(default: $SSLKEYLOGFILE)")
    p.add_argument("--baud", type=_positive, metavar="N",
                   help="pace output to the host at N baud, 10 bits a byte (115200: 11520 bytes/s), "
                        "as a real UART; AT+IPR=<rate> then switches the pace after its OK "
                        "(default: unpaced)")
    p.add_argument("--latency", type=_latency, default=0.0, metavar="MS",
                   help="one-way network latency of every modem's sockets from the start, as the "
                        "control op net's latency_ms (a TCP connect then takes 2 x MS before its "
                        "+QIOPEN/+QSSLOPEN); a cellular link has 20-100 ms, and a driver that reads "
                        "the open's OK and then waits for the URC in a later read needs some "
                        "(default: 0, loopback speed)")
    p.add_argument("--uart", action="store_true",
                   help="the port is a UART with no DTR or hang-up line: a host closing it is "
                        "not seen by the modem, which carries on (a data prompt keeps waiting "
                        "for its bytes; output while nobody holds the port is lost). Default: "
                        "a close is a hang-up and the next host meets command state")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_LATENCY_MS:    # (NaN fails too; the control op net's range)
        raise argparse.ArgumentTypeError(f"expected milliseconds from 0 to {MAX_LATENCY_MS}, got {text!r}")
    return value


def _fits_the_limits(count: int) -> None:
    """--count against what the machine can give before anything is built: each modem holds
    at least two files (its pty and its state dir's lock) and one pty."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and 2 * count + 16 > soft:
        raise Refused(f"--count {count}: each modem holds at least two files (its pty, its state "
                      f"dir's lock); the file limit (ulimit -n) is {soft}")
    try:
        ptys = int(Path("/proc/sys/kernel/pty/max").read_text())
    except (OSError, ValueError):
        return
    if count > ptys:
        raise Refused(f"--count {count}: more modems than the kernel's ptys (kernel.pty.max = {ptys})")


def modem_places(args: argparse.Namespace, profile_name: str) -> list[tuple[str | None, Path]]:
    """(link, state dir) of each modem.  One modem: --link and --state-dir as given.
    Several: --link must be a pattern with {n} (each modem its own link) and modem n keeps
    its state in <state-dir>/<n>, so no two modems share a file."""
    base = Path(args.state_dir) if args.state_dir else (
        Path.home() / ".local" / "state" / "modem-emulator" / profile_name)
    link = args.link
    if link is not None and "{n}" not in link and args.count > 1:
        raise Refused(f"--link: with --count {args.count} the link must be a "
                         f"pattern with {{n}} (e.g. /tmp/modem-{{n}}), got {link!r}")
    if link is not None and "{n}" in link:
        try:
            link.format(n=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise Refused(f"--link: bad pattern {link!r}: {exc}")
    _fits_the_limits(args.count)
    places = []
    for n in range(args.count):
        one_link = link.format(n=n) if link is not None and "{n}" in link else link
        places.append((one_link, base if args.count == 1 else base / str(n)))
    return places


# What --route/--listen/--dns/--ping and the --config tables of the same names add to the
# Router: (option / table, what a table maps, add(router, key, value) for a table entry,
# add_spec(router, "KEY=VALUE") for an option).
ROUTER_ENTRIES = (
    ("route", "HOST:PORT = \"ADDR:PORT\"", lambda r, k, v: r.add(f"{k}={v}"), lambda r, s: r.add(s)),
    ("listen", "LOCAL_PORT = \"127.0.0.1:PORT\"", lambda r, k, v: r.add_listen_spec(f"{k}={v}"),
     lambda r, s: r.add_listen_spec(s)),
    ("dns", "NAME = \"IP\"", lambda r, k, v: r.add_dns(k, v), lambda r, s: r.add_dns(*parse_dns(s))),
    ("ping", "HOST = RTT_MS", lambda r, k, v: r.add_ping(k, v), lambda r, s: r.add_ping(*parse_ping(s))),
)


def add_router_options(args: argparse.Namespace, router: Router) -> None:
    """--route, --listen, --dns and --ping (each repeatable) into the Router."""
    for name, _, _, add_spec in ROUTER_ENTRIES:
        for spec in getattr(args, name):
            try:
                add_spec(router, spec)
            except ValueError as exc:
                raise Refused(f"--{name}: {exc}")


def load_config(path: str | None, router: Router) -> None:
    """--config: TOML tables [routes], [listen], [dns], [ping] and offline = true."""
    if not path:
        return
    try:
        data = load_settings_toml(path)
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise Refused(f"config {shown_path(path)}: {exc}")
    tables = {("routes" if name == "route" else name): (shape, add) for name, shape, add, _ in ROUTER_ENTRIES}
    unknown = sorted(set(data) - set(tables) - {"offline"})
    if unknown:
        raise Refused(f"config {path}: unknown key {unknown[0]!r} "
                      f"(known: {', '.join(sorted([*tables, 'offline']))})")
    for table, (shape, add) in tables.items():
        entries = data.get(table, {})
        if not isinstance(entries, dict):
            raise Refused(f"config {path}: {table}: expected a table of {shape}")
        for key, value in entries.items():
            if key == "offline":                # (inside a table it would be a route "offline")
                raise Refused(f"config {path}: {table}: offline is a top-level key: "
                              f"put offline = true before the first table")
            if table == "routes" and not isinstance(value, str):
                raise Refused(f"config {path}: {table}: {key!r}: expected a string ({shape}), got {value!r}")
            try:
                add(router, key, value)
            except ValueError as exc:
                raise Refused(f"config {path}: {table}: {exc}")
    offline = data.get("offline", False)
    if not isinstance(offline, bool):       # (offline = "no" would read as true)
        raise Refused(f"config {path}: offline: expected true or false, got {offline!r}")
    if offline:
        router.offline = True


def make_keylog(path: str | None):
    """Open the key-log file once, at start-up, so a bad path is reported at once."""
    path = path or os.environ.get("SSLKEYLOGFILE")
    if not path:
        return None
    try:
        # TLS secrets: a new file is private (0600).  An existing one keeps its mode (a
        # shared SSLKEYLOGFILE may be readable on purpose) but the log says so.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        st = os.fstat(fd)
        stream = os.fdopen(fd, "a", buffering=1)   # line-buffered: Wireshark reads it live
    except OSError as exc:
        raise Refused(f"key log {path}: {exc.strerror or exc}")
    if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        log.warning("key log %s has mode %04o: TLS session secrets are readable by others "
                    "(chmod 600 it to keep them private)", path, stat.S_IMODE(st.st_mode))

    def write(line: str) -> None:
        stream.write(line + "\n")
    return write


UNIX_PATH_MAX = 107                  # bytes of a unix socket's path (sun_path, its NUL aside)


def check_distinct_paths(args: argparse.Namespace, places: list) -> None:
    """--trace, --keylog (or $SSLKEYLOGFILE), --control and each modem's --link must name
    different files: one file named twice would have one option's writes overwrite (or
    replace) the other's -- a user's file truncated to a trace before --link refused it,
    key-log lines lost under trace records.  Compared by resolved path and, for files that
    exist, by inode (a hard link, a symlink); a --link is its own name and, when it is a
    symlink already, its target (which the trace would open through it).  /dev/null may be
    named more than once (no other device: a stale link to a live pty is no sink to share)."""
    keylog = args.keylog or os.environ.get("SSLKEYLOGFILE") or None
    keylog_label = f"--keylog {keylog}" if args.keylog else f"SSLKEYLOGFILE={keylog}"
    named = [(opt, value, label) for opt, value, label in (
        ("--trace", args.trace, f"--trace {args.trace}"), ("--keylog", keylog, keylog_label),
        ("--control", args.control, f"--control {args.control}")) if value]
    for link, state in places:                   # (and the files the emulator makes for them)
        if link:
            if "\0" not in link and os.path.basename(link.rstrip("/")) in ("", ".", ".."):
                raise Refused(f"--link {link}: names a directory, not a file the link could be")
            named.append(("--link", link, f"--link {link}"))
            if "\0" not in link:
                named.append(("lock", str(link_lock_path(Path(link))), f"--link {link}'s lock file"))
        named.append(("state", str(state), f"the state dir {state}"))
        named.append(("lock", str(Path(state) / ".lock"), f"the state dir {state}'s lock file"))
    seen: dict[tuple, str] = {}
    for opt, value, label in named:
        if "\0" in value:
            raise Refused(f"{shown_path(label)}: a NUL byte in a path")
        keys = _file_keys(value, link=opt == "--link")
        if keys is None:
            continue
        for key in keys:
            if key in seen:
                raise Refused(f"{seen[key]} and {label} name the same file: give each its own")
        for key in keys:
            seen[key] = label


def _file_keys(path: str, link: bool) -> set | None:
    """What identifies the file `path` names (None: /dev/null, which any may share)."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        try:
            if st.st_rdev == os.stat("/dev/null").st_rdev:
                return None
        except OSError:
            pass
    if link:
        # (the link itself is replaced; a symlink already there also names its target, which
        # an option naming the link would open through it.  Its directory resolved as the
        # kernel walks it: "alias/../m" is m beside alias's target, not beside alias)
        head, tail = os.path.split(path)
        own = (os.path.join(os.path.realpath(head or "."), tail) if tail not in ("", ".", "..")
               else os.path.realpath(path))
        keys = {("path", own)}
        if os.path.islink(path):
            keys.add(("path", os.path.realpath(path)))
    else:
        keys = {("path", os.path.realpath(path))}
    if st is not None:
        keys.add(("inode", st.st_dev, st.st_ino))
    return keys


def check_control_path(path: str | None) -> None:
    """A --control path that can never be a socket is a refused argument (exit 2), as a bad
    --trace or --keylog path: its directory missing, a file that is not a socket in its
    place, too long for a unix socket.  Another process listening there is the machine's
    refusal (exit 1, when it is bound)."""
    if not path:
        return
    where = Path(path)
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise Refused(f"--control {path}: longer than a unix socket's path may be ({UNIX_PATH_MAX} bytes)")
    if not where.parent.is_dir():
        raise Refused(f"--control {path}: no such directory {where.parent}")
    if (where.exists() or where.is_symlink()) and not where.is_socket():
        raise Refused(f"--control {path}: a file that is not a socket is there")


class _Stopped(Exception):
    """A stop signal while start-up reads its files (nothing to undo yet)."""


def _stop_now(signum, frame) -> None:
    stop_signals.seen.append(signum)     # (noted: an exception a finalizer swallowed is not lost)
    raise _Stopped(signal.Signals(signum).name)


@dataclass
class _Setup:
    """What start-up reads before the event loop runs: every file the options name."""
    profile: object
    scenario: object
    router: Router
    places: list
    keylog: object
    trace: object


def prepare(args: argparse.Namespace) -> _Setup:
    """The profile, scenario, routes and config, the key log and trace files: read (and
    refused: Refused, ProfileError, ScenarioError) before any modem exists.  A read may
    block (a FIFO, a hung file system): main() has SIGINT/SIGTERM/SIGHUP raise _Stopped
    meanwhile, which interrupts it, so a stop signal always ends start-up."""
    profile = load_profile(args.profile)
    scenario = load_cli_scenario(args, profile)
    router = Router(offline=args.offline)
    add_router_options(args, router)
    load_config(args.config, router)
    places = modem_places(args, profile.name)
    check_distinct_paths(args, places)
    keylog = make_keylog(args.keylog)
    check_control_path(args.control)
    return _Setup(profile, scenario, router, places, keylog, make_trace(args.trace))


async def run(args: argparse.Namespace, setup: _Setup, out: StderrLog, err: StderrLog) -> int:
    """out, err: main()'s writers of stdout (the device paths) and stderr (log lines, hints):
    neither ever blocks the loop -- a pipe nobody reads must not stop the modems."""
    # The loop's handlers replace main()'s first thing: a signal at any moment, also right
    # after the path is printed, ends the run cleanly (link removed, exit 0), never
    # asyncio's cancel of this task (a KeyboardInterrupt traceback and the link left
    # behind).  SIGHUP is the terminal of `make run` being closed: the same clean stop.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals.handled():
        loop.add_signal_handler(sig, stop.set)
    for writer in (out, err):
        writer.attach(loop)              # (it writes what waits; a worker's line asks it)
    if stop_signals.seen:            # one came while the files were read and its _Stopped was
        log.info("stopped during start-up")       # swallowed on the way: nothing starts
        return 0
    profile, scenario, router, places, trace = (setup.profile, setup.scenario, setup.router,
                                                setup.places, setup.trace)
    emulator = Emulator(router, keylog=setup.keylog)
    if args.demo:
        await emulator.start_demo()
    entries = []
    for n, (link, state_dir) in enumerate(places):
        try:
            lock_state_dir(state_dir)            # (held as long as this process runs)
            entries.append(await emulator.add_modem(profile, link=link, state_dir=state_dir, trace=trace,
                                                   baud=args.baud, hangup_on_close=not args.uart))
        except LinkError as exc:
            await _close(emulator, trace)
            raise SystemExit(f"modem-emulator: --link: {exc}")
        except StateDirBusy as exc:
            await _close(emulator, trace)
            raise SystemExit(f"modem-emulator: --state-dir: {exc}")
        except OSError as exc:                   # state dir not creatable, link dir read-only, ...
            await _close(emulator, trace)
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                raise SystemExit(f"modem-emulator: cannot start modem #{n} of {len(places)}: "
                                 f"{exc.strerror} (the file limit, ulimit -n, is too low for "
                                 f"--count {len(places)})")
            where = exc.filename or state_dir
            raise SystemExit(f"modem-emulator: cannot start: {where}: {exc.strerror or exc}")
        if args.latency:                         # (before the next modem's start lets a host in)
            answer = emulator.control("net", n, latency_ms=args.latency)
            if not answer.get("ok"):             # (the option's own check is the op's range)
                await _close(emulator, trace)
                raise SystemExit(f"modem-emulator: --latency: {answer.get('error')}")
    control = None
    if args.control:
        from emulator.tools.control import ControlServer
        control = ControlServer(emulator, args.control)
        try:
            await control.start()
        except OSError as exc:
            await _close(emulator, trace)
            raise SystemExit(f"modem-emulator: --control {args.control}: {exc.strerror or exc}")
    if scenario is not None:
        emulator.run_scenario(scenario)          # its `at` times count from here
    hints = []
    for n, (entry, (link, state_dir)) in enumerate(zip(entries, places)):
        label = f" #{n}" if len(entries) > 1 else ""
        hints.append(f"modem-emulator: {profile.name}{label} ({profile['identity.model']}) on "
                     f"{entry.port.device}{' -> ' + entry.path if link else ''}; state in {state_dir}")
    # (this interpreter: the one whose environment has pyserial, e.g. the project's .venv)
    hints.append(f"  connect: {sys.executable} -m serial.tools.miniterm {entries[0].path} 115200")
    if control is not None:
        hints.append(f"  control: JSON lines on {args.control}, e.g. {{\"op\": \"state\", \"modem\": 0}}")
    if args.demo:
        from emulator.tools.demo_setup import NOT_INSTALLED, demo_material_hint   # (cryptography: --demo only)
        failed = next((n for e in entries if (n := getattr(e.modem, "demo_note", "")).startswith(NOT_INSTALLED)), None)
        hints.append("  demo peer: 220.180.239.212:8010/8011 (TLS echo), 220.180.239.212:8009 (TCP and UDP\n"
                     "  echo, EC2x AT+QIOPEN) and www.iottest.work:443 (HTTPS) are routed to loopback\n"
                     "  (www.iottest.work shows as 106.12.79.254);\n"
                     f"  {failed or demo_material_hint(profile)}")
    hints.append("  stop with Ctrl+C")
    for entry in entries:
        out.say(entry.path + "\n")
    for line in hints:
        err.say(line + "\n")

    await stop.wait()
    if control is not None:
        await control.close()
    await _close(emulator, trace)
    return 0


class StateDirBusy(Exception):
    pass


def _private_dirs(path: Path) -> None:
    """mkdir -p with every directory it creates 0700 (Path.mkdir(parents=True) makes the
    parents with the default mode: --count's <state-dir> holding <state-dir>/<n>)."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    path.mkdir(mode=0o700, exist_ok=True)    # (a file there: FileExistsError, as before)


def _plain_or_absent(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return True


def lock_state_dir(state_dir: Path) -> int | None:
    """An exclusive lock on <state_dir>/.lock for as long as this process runs (the fd is
    kept; the kernel drops the lock when the process dies, kill -9 included): a second
    emulator on the same state would read a file index the first one changes under it,
    and sweep its uploads in flight as stale temp files."""
    _private_dirs(state_dir)
    try:                                 # (never through a planted symlink: it would be truncated)
        fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NONBLOCK, 0o600)
    except OSError as exc:               # a read-only state dir still serves what it holds
        if exc.errno == errno.ELOOP:
            raise StateDirBusy(f"{state_dir / '.lock'} is a symbolic link: not using it") from None
        if not _plain_or_absent(state_dir / ".lock"):
            # (a directory, a socket, a device there -- EISDIR, ENXIO...: not a read-only dir,
            # where a second emulator would run beside this one unnoticed)
            raise StateDirBusy(f"{state_dir / '.lock'} is not a plain file: not using it") from None
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            raise                        # out of descriptors: run() names that, in one line
        log.warning("state dir %s: no lock file (%s): another emulator on it would not be "
                    "noticed", state_dir, exc.strerror or exc)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateDirBusy(f"{state_dir / '.lock'} is not a plain file: not using it")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip()
        os.close(fd)
        raise StateDirBusy(f"{state_dir} is in use by another modem-emulator"
                           f"{f' (pid {holder})' if holder.isdigit() else ''}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass                             # (a full disk: the lock holds all the same)
    return fd


def load_cli_scenario(args: argparse.Namespace, profile):
    """--scenario, read and checked before any modem starts (ScenarioError: exit 2)."""
    if not args.scenario:
        return None
    from emulator.tools.scenario import load_scenario
    scenario = load_scenario(args.scenario)
    scenario.check(args.count, lambda n: profile)
    return scenario


async def _close(emulator: Emulator, trace) -> None:
    await emulator.close()
    if trace is not None:
        trace.close()


def make_trace(path: str | None):
    """One TraceWriter for every modem (records carry the modem's index), opened at
    start-up so a bad path is reported at once."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise Refused(f"--trace {path}: {exc.strerror or exc}")
    if st is not None and not stat.S_ISREG(st.st_mode) and not _never_waits(st):
        # A pipe, FIFO or terminal: the trace's writes would wait for its reader on the
        # event loop (a FIFO's open for one), and a reader that stops would stall the modems.
        raise Refused(f"--trace {path}: not a regular file (a pipe or terminal would stall "
                      f"the modems whenever its reader does not read)")
    if st is not None and stat.S_ISREG(st.st_mode):
        # /dev/stdout (or a path to the file stdout or stderr went to, as in a CI job's
        # `> job.log`): the writer's own offset would overwrite what the process writes there
        # (the device path line over the first record) -- never one file for two writers
        for fd, name in ((1, "stdout"), (2, "stderr")):
            try:
                other = os.fstat(fd)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise Refused(f"--trace {path}: is this process's {name} (the "
                              f"{'device paths' if fd == 1 else 'log lines'} go there): give the trace a file of its own")
    from emulator.tools.trace import TraceBusy, TraceWriter
    try:
        writer = TraceWriter(path)
    except TraceBusy as exc:             # (a start-up that failed on the machine: exit 1)
        raise SystemExit(f"modem-emulator: --trace {path}: {exc}")
    except OSError as exc:
        raise Refused(f"--trace {path}: {exc.strerror or exc}")
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & 0o077:
        # (as the key log: an existing file keeps its mode -- shared on purpose, perhaps --
        # but the trace holds plaintext and uploaded keys, so the log says so)
        log.warning("trace %s has mode %04o: the plaintext and keys it records are readable by "
                    "others (chmod 600 it to keep them private)", path, stat.S_IMODE(st.st_mode))
    return writer


def _drain_at_exit(*writers) -> None:
    """The lines still waiting for stdout and stderr, a second at most each: a stop signal
    meanwhile (a second Ctrl+C, a supervisor's repeated SIGTERM) is only noted -- the loop's
    handlers are gone with it, and Python's own would end the exit with a traceback or -15."""
    for sig in stop_signals.handled():
        signal.signal(sig, _noted)
    for writer in writers:
        writer.drain(1.0)


def _noted(signum, frame) -> None:
    stop_signals.seen.append(signum)


def _never_waits(st: os.stat_result) -> bool:
    """A character device whose writes never wait for anyone: /dev/null, /dev/full,
    /dev/zero (the memory devices, major 1)."""
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1


SUBCOMMANDS = ("usage: modem-emulator trace show FILE [--socket N] [--modem N]\n"
               "       modem-emulator replay FILE [--profile P] [--modem N] [--max-gap SECONDS] "
               "[--ignore REGEX]... [--scenario FILE]")


def is_subcommand(argv: list[str]) -> bool:
    """argv runs a tool (`trace ...`, `replay ...`), not a modem."""
    return argv[:1] in (["replay"], ["trace"])


def subcommand(argv: list[str]) -> int | None:
    """`trace show FILE ...` and `replay FILE ...` (emulator/tools/trace.py); None when
    argv is a normal start-up."""
    if argv[:1] == ["replay"]:
        from emulator.tools.trace import replay_main
        return replay_main(argv[1:])
    if argv[:1] == ["trace"]:
        if argv[1:2] == ["show"]:
            from emulator.tools.trace import show_main
            return show_main(argv[2:])
        if argv[1:2] in (["-h"], ["--help"]):       # asked for: the usage on stdout, exit 0
            print(SUBCOMMANDS)
            return 0
        print(SUBCOMMANDS, file=sys.stderr)
        return 2
    return None


def main(argv: list[str] | None = None) -> int:
    """A stop signal noted before main()'s own handlers (emulator/stop_signals.py: the entry
    point's, emulator/__main__.py) is checked once they are in place, so a signal whose exit
    something swallowed on the way (a finalizer running the handler) still ends the run."""
    argv = list(sys.argv[1:] if argv is None else argv)
    code = subcommand(argv)
    if code is not None:
        return code
    args = build_parser().parse_args(argv)
    out, handler = StderrLog(sys.stdout), StderrLog(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    # Until run() installs the loop's handlers, a stop signal raises _Stopped: it breaks a
    # blocking read (open() of a FIFO nobody writes) that a handler which only sets a flag
    # would leave retrying forever (PEP 475).
    for sig in stop_signals.handled():
        signal.signal(sig, _stop_now)
    if stop_signals.seen:
        _drain_at_exit(out, handler)
        return 0
    try:
        setup = prepare(args)
        return asyncio.run(run(args, setup, out, handler))
    except (ProfileError, ScenarioError, Refused) as exc:
        print(f"modem-emulator: {exc}", file=sys.stderr)
        return 2
    except _Stopped as exc:
        log.info("stopped by %s during start-up", exc)
        return 0
    finally:
        _drain_at_exit(out, handler)


if __name__ == "__main__":
    sys.exit(main())
