"""Trace and replay (issue 12): what a modem did, as JSON lines, and a fresh modem driven
with the host side of it.

Writing a trace
    Emulator.add_modem(..., trace=PATH_OR_WRITER) attaches a TraceWriter to the modem
    (app.py wraps the modem's feed and its output sink; nothing else changes).  Hooks in
    the interpreter and the SSL socket call `modem.trace(kind, **fields)`, a no-op when
    no trace is attached.  One JSON object per line, every one with
        "t"      seconds since the trace began (monotonic clock; a modem on manual time: its
                 own clock from its first record on), "modem" (index), "kind":
    kinds:
        start        profile, name, wall (UTC, ISO 8601), version (of this format: 1), dns
                     (the names the modem's DNS answers, --dns: the ML302 shows them)
        io           dir "in" (host -> modem) | "out" (modem -> host), data
        cmd          line (the command line as the host sent it, "AT..."), answer (every
                     byte the modem wrote from the line's start to its final result, a
                     data prompt included; URCs queued meanwhile come after it), done
                     (false: the next line came before a final result)
        open         socket, host, port, dtls          (AT+QSSLOPEN / AT+QIOPEN starts connecting)
                     an AT+QIOPEN socket also: service "tcpip", type ("TCP", "UDP",
                     "UDP SERVICE" with local_port); SSL sockets have no "service"
        accepted     socket, remote ("ip:port"), service "tcpip", type "TCP INCOMING",
                     server (the TCP LISTENER's id), local_port (its <local_port>)
        connected    socket                            (an SSL socket's TCP connect, TLS over
                     TCP only: its handshake starts; replay's connect completes then)
        handshake    socket, version, cipher, alpn, resumed  (a plain socket: version "TCP" or
                     "UDP", cipher "": it is connected; `trace show` says so, not "handshake")
        tls_failure  socket, failure (kind), reason    (alerts, verification, ...)
        open_result  socket, code (what the host is told), failure (kind or null), reason;
                     connected: shown (the server address the host is shown for the name)
        sent         socket, data (plaintext the host sent on the socket)
        received     socket, data (plaintext the server sent)
        peer_closed  socket, how ("close_notify" | "fin" | "rst" | "other"), reason
        close        socket                            (AT+QSSLCLOSE)
        hangup                                         (the host closed the port)
        stop                                           (the modem stopped: the recording ends;
                     a trace without one was cut short)
        scenario     step, op, ok, error?, args        (a scenario step ran: tools/scenario.py)
        control      op, args                          (a control API op was done: a fault, a
                     reboot; not "state".  Replay does not repeat it: a --scenario does)
        dns, ping    host, code, reason / addresses    (AT+QIDNSGIP / AT+QPING lookups: replay
                     answers them again, failures by their place among the name's lookups)
        registration, cgev_discarded                   (network registration; a +CGEV line dropped)
    Every "data"/"answer"/"line" is the bytes as a JSON string of code points 0-255
    (bytes.decode("latin-1")): lossless, and readable for AT text.  Each record carries
    "in"/"out": how many bytes the host had sent / been sent so far (replay syncs on them).
    The file is created 0600: it holds the plaintext of every connection.

Reading one
    show_main(argv) -> int     `modem-emulator trace show FILE [--socket N] [--modem N]`
    replay_main(argv) -> int   `modem-emulator replay FILE [--profile P] [--modem N]
                                [--max-gap S] [--ignore REGEX]... [--scenario FILE]`: 0 no difference, 1 a difference
                                (printed), 2 unusable input
    (emulator/tools/cli.py dispatches to them; python -m emulator.tools.trace show|replay
    FILE ... is the same)

Replay drives a fresh offline modem (BackgroundEmulator) through its pty with the host's
bytes, each chunk once the modem has written as many bytes as it had before that chunk in
the trace (and not sooner after the previous chunk than recorded: "+++" guard times). The
network side is a loopback TCP server on the emulator's loop standing in for every server
the trace connected to: the replayed sockets use a plaintext stand-in of the TLS session
(ReplaySession: the server's first line says how the handshake ended, as recorded, then the
connection carries the recorded plaintext), and the server sends each recorded "received"
once the host has sent, and the modem written, as many bytes as they had then, and expects
each recorded "sent".
AT+QIOPEN sockets have stand-ins without TLS: a plain TCP server per recorded destination,
whose first line (JSON) says the connect ended, when it did (ReplayPlainSession); a UDP server that expects each recorded datagram whole and
sends each received one back to where the modem's came from; a client that connects to the
replaying modem's TCP LISTENER once the host has sent and the modem written as much as when
the recorded client came (the listeners bind any free port, not the recorded <local_port>).
A refused open (566, SSL too), and one whose name did not resolve (565), fails again by its
place among the trace's opens when the recorded answer came (_ReplayFaults.failure_wait: over
a slow network a round trip after the command, the socket opening meanwhile), with no
connection to any stand-in and no route for its name. A DTLS socket's stand-in is
a UDP server: the session's first datagram is a hello that tells it where the modem is, it
answers with the recorded handshake's end, then each record is one datagram each way (all
tagged: DTLS_HELLO/HEAD/DATA/END), and the server's end of the session (its close_notify or
a failure) is a datagram too. (Syncing on the modem's output too keeps data the server sent
in two bursts while the host was idle two pushes, as recorded.) A "hangup" record (the host
closed the port) is replayed by closing the serial port and opening it again. The server's
close (FIN/RST)
comes once the host has sent as much as it had then. It then compares the command answers
in order, then the whole output, and prints the first difference (then what a socket sent
that the recording did not). A plain AT log (">> AT..." / "<< OK" lines, or a miniterm
capture with echo: lines starting "AT" are commands) is replayed command by command,
answers compared line by line (no network side: it has no plaintext).

Limits of replay: TLS itself is not redone (the handshake ends as recorded: version,
cipher, failure kind), so it needs no server key (DTLS too: its records are datagrams of
plaintext; a DTLS server's end is replayed as a close, whatever ended it); an open that failed before reaching a server (dns, pdp) is replayed by
leaving its name unrouted, which fails as a DNS error (a refused connect is routed to a
port nobody listens on); text that differs from run to run by nature (AT+CCLK, AT+QLTS)
needs --ignore REGEX (AT+QSSLSTATE's and AT+QISTATE's local ports and AT+QISEND=<id>,0's
acked/unacked split are ignored already); chunks of received
data may arrive joined where the recorded ones did not, which changes nothing a host sees
unless it counted "recv" URCs between reads. TCP/IP: a "UDP SERVICE" is not replayed (the
trace does not record who sent each datagram); a UDP server that sent before the modem did
cannot be replayed (its address is learnt from the modem's first datagram); an open that
got no answer (569) is left unrouted (565 for a name, 566 for an address) unless --scenario
makes it stall; a listener's client's address and port ("incoming" URC, AT+QISTATE) are not
compared; a LISTENER that failed to bind (556) replays as bound.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import ipaddress
import io
import json
import os
import re
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from emulator.io.network import NetFaults, Router, is_ip, is_port, name_key, reset_on_close
from emulator.logsafe import get_logger
from emulator.sockets.plain_session import NoSealJobs, PlainSession
from emulator.storage.atomic_file import read_plain
from emulator.tools import OneLineParser

FORMAT_VERSION = 1
log = get_logger("emulator.trace")


def _s(data: bytes) -> str:
    return bytes(data).decode("latin-1")


def _b(text: str) -> bytes:
    return text.encode("latin-1")


def close_kind(reason: str) -> str:
    from emulator.sockets.ssl_socket import CLOSE_NOTIFY, FIN, RST
    for marker, kind in ((CLOSE_NOTIFY, "close_notify"), (FIN, "fin"), (RST, "rst")):
        if reason.startswith(marker):
            return kind
    return "other"


# -- writing ------------------------------------------------------------------------
class TraceBusy(Exception):
    """The trace file is another writer's (a running modem-emulator's): not truncated."""


class TraceWriter:
    """JSON lines to `path` (created 0600), or kept in `records` when path is None.

    A regular file is locked (flock, held while the writer is open) before it is truncated:
    a second emulator started by mistake with the same --trace is refused (TraceBusy) instead
    of emptying the running one's trace under it (its later records would follow a hole of
    NUL bytes at their old offset)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = path
        self.records: list[dict] = []
        self._file = None
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if stat.S_ISREG(os.fstat(fd).st_mode):   # (not /dev/null, which all may share)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        raise TraceBusy("in use by another trace writer (a running "
                                        "modem-emulator's): not truncating it") from None
                    except OSError:
                        pass                 # (a file system without locks: as before)
                    os.ftruncate(fd, 0)
            except BaseException:
                os.close(fd)
                raise
            self._file = os.fdopen(fd, "w", encoding="ascii")
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the trace began, on the monotonic clock."""
        return time.monotonic() - self._t0

    def write(self, record: dict, t: float | None = None) -> None:
        """t: the record's time in seconds since the trace began (None: now)."""
        record = {"t": round(self.elapsed() if t is None else t, 6), **record}
        if self._file is not None:
            try:
                self._file.write(json.dumps(record, default=str) + "\n")
                self._file.flush()
            except (OSError, ValueError) as exc:  # a full disk must not stop the modem
                log.error("trace %s: %s; tracing stops", self.path, exc)
                self.close()
        elif self.path is None:
            self.records.append(record)

    def attach(self, modem, index: int = 0) -> "ModemTrace":
        tracer = ModemTrace(self, index, modem)
        modem.tracer = tracer
        self.write({"modem": index, "kind": "start", "profile": modem.profile.name, "name": modem.name,
                    "wall": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                    "version": FORMAT_VERSION, "dns": dict(getattr(modem.network, "dns", None) or {}),
                    "material": material_of(modem), "in": 0, "out": 0})
        return tracer

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None


class ModemTrace:
    """One modem's side of a writer: counts bytes each way, pairs lines with answers."""

    def __init__(self, writer: TraceWriter, index: int, modem=None) -> None:
        self.writer = writer
        self.index = index
        self.modem = modem
        self.in_total = 0
        self.out_total = 0
        self._line: bytes | None = None
        self._answer = bytearray()
        self._manual_origin: tuple[float, float] | None = None   # (trace time, modem time) at the first record
        self.hangups = 0                 # "hangup" records so far
        self._dialled: dict = {}         # socket id -> the name its last open dialled
        self.received_total = 0          # plaintext bytes of the "received" records so far
        self.handshakes = 0              # "handshake" records so far (connects and TLS handshakes ended)
        self.connects = 0                # "connected" records so far (SSL sockets' TCP connects)

    def _now(self) -> float | None:
        """A record's time for a modem on manual time (add_modem(manual_time=True)): its own
        clock, which only advance() moves -- the silences its timers saw (a guard time, a
        timeout) are the ones a replay must keep, and the wall clock's are not them.  None
        (the writer's clock) for a modem on real time."""
        modem = self.modem
        if modem is None or not getattr(modem, "manual_time", False):
            return None
        now = modem.monotonic()
        if self._manual_origin is None:
            self._manual_origin = (self.writer.elapsed(), now)
        at, origin = self._manual_origin
        return at + (now - origin)

    def _write(self, kind: str, fields: dict) -> None:
        self.writer.write({"modem": self.index, "kind": kind, **fields, "in": self.in_total, "out": self.out_total},
                          self._now())

    def host_bytes(self, data: bytes) -> None:
        self.in_total += len(data)
        self._write("io", {"dir": "in", "data": _s(data)})

    def modem_bytes(self, data: bytes) -> None:
        self.out_total += len(data)
        if self._line is not None:
            self._answer += data
        self._write("io", {"dir": "out", "data": _s(data)})

    def output_lost(self, back: int, count: int, why: str) -> None:
        """PtyPort.on_output_lost: `count` bytes of the output recorded so far, from `back`
        bytes before its end, never reached a host (a hang-up, a restart, a full backlog)."""
        self._write("lost", {"from": max(0, self.out_total - back), "bytes": count, "why": why})

    def _cmd(self, done: bool) -> None:
        self._write("cmd", {"line": _s(b"AT" + self._line), "answer": _s(self._answer), "done": done})
        self._line = None
        self._answer = bytearray()

    def event(self, kind: str, fields: dict) -> None:
        if kind == "line":
            if self._line is not None:
                self._cmd(False)
            self._line = bytes(fields["line"])
            return
        if kind == "final":
            if self._line is not None:
                self._cmd(True)
            return
        fields = {k: _s(v) if isinstance(v, (bytes, bytearray, memoryview)) else v for k, v in fields.items()}
        if "kind" in fields:                     # a failure kind ("verify", "dns", ...)
            fields["failure"] = fields.pop("kind")
        if kind == "peer_closed":
            fields["how"] = close_kind(fields.get("reason", ""))
        if kind in ("open", "accepted"):
            fields.update(self._tcpip_fields(fields.get("socket")))
            if kind == "open":
                self._dialled[fields.get("socket")] = fields.get("host")
        elif kind == "open_result" and (fields.get("code") == 0 or fields.get("failure") == "connect"):
            # the server address the host is shown for the name (the ML302's +QSSLRECV, the
            # EC2x's AT+QISTATE, also while a connect it refuses is under way): the real DNS's
            # answer on a real network, which a replay (offline) has to give again
            name, network = self._dialled.get(fields.get("socket")), getattr(self.modem, "network", None)
            if not isinstance(name, str) or not hasattr(network, "display_address"):
                pass
            elif fields.get("code") == 0:
                fields["shown"] = network.display_address(name)
            elif (answered := network.answered_address(name)) is not None:
                fields["shown"] = answered       # (a refusal: only a name that was resolved)
        elif kind == "hangup":
            self.hangups += 1
        elif kind == "received":
            self.received_total += len(fields.get("data", ""))
        if kind == "handshake" or (kind == "open_result" and _refusal(fields | {"kind": kind})):
            self.handshakes += 1
        elif kind == "connected":
            self.connects += 1
        self._write(kind, fields)

    def _tcpip_fields(self, sid) -> dict:
        """An AT+QIOPEN socket's open/accepted record says so: service "tcpip", its type
        ("TCP", "UDP", "UDP SERVICE", "TCP INCOMING"), an incoming one its listener's id and
        <local_port> (replay connects to that listener). SSL sockets: nothing added."""
        svc = _tcpip_if_any(self.modem)
        sock = svc.sockets.get(sid) if svc is not None else None
        kind = getattr(sock, "service_type", None)
        if not kind:
            return {}
        extra = {"service": "tcpip", "type": kind}
        if kind == "TCP INCOMING":
            extra.update(server=sock.server_id, local_port=sock.shown_local_port)
        elif kind == "UDP SERVICE":
            extra.update(local_port=sock.shown_local_port)
        return extra


def _tcpip_if_any(modem):
    """The modem's TCP/IP service if it has one already (never creates it: a factory
    returning None leaves the feature absent, Modem.feature makes it on its next use)."""
    if modem is None or not hasattr(modem, "feature"):
        return None
    return modem.feature("tcpip", lambda _modem: None)


def attach_trace(trace, modem, index: int):
    """For Emulator.add_modem: (feed, wrap_sink) recording every byte each way."""
    writer = trace if hasattr(trace, "attach") else TraceWriter(trace)   # a writer or a path
    tracer = writer.attach(modem, index)
    modem.on("shutdown", lambda: tracer.event("stop", {}))    # (before a close of the writer)
    if writer is not trace:
        modem.on("shutdown", writer.close)
    feed = modem.feed

    def traced_feed(data: bytes) -> None:
        tracer.host_bytes(data)
        feed(data)
    modem.on("hangup", lambda: tracer.event("hangup", {}))

    def wrap_sink(sink):
        def traced_sink(data: bytes) -> None:
            tracer.modem_bytes(data)
            sink(data)
        return traced_sink
    return traced_feed, wrap_sink


# -- reading --------------------------------------------------------------------------
def read_trace(path: str | os.PathLike, warn=None, data: bytes | None = None) -> list[dict]:
    """The records of a trace file; ValueError naming the line when one is not a record
    this version wrote (a damaged or hand-edited file): show and replay exit 2 on it.  A
    last line cut short (no newline: the recording was killed, the disk filled) is left
    out, with warn(text) saying so.  data: the file's bytes, already read (a pipe, such as
    /dev/stdin or <(zcat trace.gz), can be read only once)."""
    records = []
    with (io.BytesIO(data) if data is not None else open(path, "rb")) as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{n}: not UTF-8 text: {exc}") from None
            if line.strip():
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as exc:   # (JSONDecodeError; a number past 4300 digits)
                    if not line.endswith("\n"):          # (only the last line can lack it)
                        if warn is not None:
                            warn(f"{path}:{n}: the last line is cut short (an interrupted "
                                 f"recording): left out")
                        break
                    raise ValueError(f"{path}:{n}: not a JSON line: {exc}") from None
                problem = _record_problem(record)
                if problem:
                    raise ValueError(f"{path}:{n}: not a trace record: {problem}")
                records.append(record)
    return records


_BYTES_FIELDS = ("data", "line", "answer")       # latin-1 strings: one char per byte
_REQUIRED = {"io": ("data",), "cmd": ("line", "answer")}   # what show and replay read of them


# The state files a modem reads at start-up whose values its answers show: AT&W's
# settings (ATS7?, ATE, AT+CMEE...), the NV items (AT+CTZU?, AT+QCFG...), the data counters
# (AT+QGDCNT?).  A trace carries the values the modem took from them, as the modem would
# save them (never the file's own bytes: whatever stands there -- a symlink to a key, UTF-16,
# padding -- only what was loaded goes in): replayed on a factory modem, a trace recorded
# after an AT&W answered differently from its first command on (crash consistency 2).
STATE_FILES = ("settings.json", "nv.json", "qgdcnt.json")
STATE_FILE_MAX = 1 << 16            # (a start record's state, as JSON: far more than a modem saves)


def _state_forms(modem) -> dict:
    """The values of each state file present in the modem's state dir (STATE_FILES), in the
    form the modem saves them: what it loaded (AT&W's settings, always; the NV items and the
    counters if a command has used them already), else -- their feature not made yet, and
    not made here: no load, no warning the session would not give -- the file's own JSON
    object, its known keys only, which the replaying modem loads as this one would have."""
    directory = modem.state_dir
    if directory is None:
        return {}
    from emulator.commands.device import DeviceConfig
    from emulator.modem.pdp import DataCounter
    loaded = {"settings.json": modem.saved_settings, "nv.json": modem.feature_if_made("device"),
              "qgdcnt.json": modem.feature_if_made("data_counter")}
    known = {"nv.json": DeviceConfig.SAVED_KEYS, "qgdcnt.json": DataCounter.SAVED_KEYS}
    forms = {}
    for name in STATE_FILES:
        try:
            present = (directory / name).is_file()
        except OSError:
            present = False
        if not present:
            continue
        if loaded[name] is not None:
            forms[name] = loaded[name].saved_form()
            continue
        try:
            data = json.loads(read_plain(directory / name))
        except Exception:               # (unreadable, not JSON, nested too deep: loads as none)
            continue
        if isinstance(data, dict):
            forms[name] = {key: value for key, value in data.items() if key in known[name]}
    return forms


def material_of(modem) -> dict:
    """What the modem held before the host's first byte (provisioned at the factory, an
    earlier session, --demo): UFS file names and sizes, certificate slots' sizes and
    checksums -- never their bytes (the trace holds what the host sent, not more).  Replay
    puts placeholders of the same size there (restore_material).  And what it took from
    its state files (_state_forms): replay starts from them (write_state_files)."""
    material: dict = {}
    try:
        state = _state_forms(modem)
        if state and _material_problem({"state": state}):    # (too big: hand-made files)
            log.warning("trace: the modem's saved settings are too big to record")
            state = {}
        if state:
            material["state"] = state
    except Exception as exc:        # (a bug here must not stop the recording)
        log.warning("trace: the modem's saved settings are not recorded: %s", exc)
    try:
        if modem.profile.command_variant("+QFUPL") is not None:
            material["files"] = {name: size for name, size in modem.files.list()}
        if modem.profile.command_variant("+QSECWRITE") is not None:
            from emulator.storage.checksum import xor16
            from emulator.storage.secstore import SLOTS
            slots = {}
            for slot in SLOTS:
                content = modem.secstore.load(slot)  # (None: empty, or damaged and left out)
                if content is not None:
                    slots[str(slot)] = [len(content), xor16(content)]
            material["slots"] = slots
    except Exception as exc:        # (SecStoreError, FileError, OSError: a damaged state dir)
        log.warning("trace: what the modem held at the start is not recorded: %s", exc)
    return material


def restore_material(modem, material: dict) -> None:
    """A start record's material (material_of) as placeholders on a fresh modem: the same
    names, sizes and slot checksums, zero bytes otherwise (an open finds its files; what
    reads their contents differs, and replay says so)."""
    from emulator.storage.secstore import SLOTS
    for name, size in (material.get("files") or {}).items():
        modem.files.write(name, bytes(size))
    for slot, (size, checksum) in (material.get("slots") or {}).items():
        if int(slot) in SLOTS and not modem.secstore.is_filled(int(slot)):
            modem.secstore.write(int(slot), _with_checksum(size, checksum))


def write_state_files(state_dir: Path, material: dict) -> None:
    """A start record's state files (material_of) into the replaying modem's state dir,
    before the modem is made: it starts from the settings the recorded one started from."""
    for name, values in (material.get("state") or {}).items():
        if name in STATE_FILES:
            (state_dir / name).write_text(json.dumps(values), encoding="utf-8")


def _with_checksum(size: int, checksum: int) -> bytes:
    """`size` bytes whose xor16 is `checksum`: the first word carries it, zeros after (one
    byte only: its high half)."""
    if size >= 2:
        return checksum.to_bytes(2, "big") + bytes(size - 2)
    return bytes([checksum >> 8])[:size]


def _material_problem(material) -> str:
    if not isinstance(material, dict):
        return '"material" is not a table'
    files, slots = material.get("files", {}), material.get("slots", {})
    if not isinstance(files, dict) or not all(
            isinstance(n, str) and isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 1 << 30
            for n, s in files.items()):
        return '"material" files are not names and sizes'
    if not isinstance(slots, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and 0 <= v[0] <= 1 << 20 and 0 <= v[1] <= 0xFFFF for v in slots.values()):
        return '"material" slots are not sizes and checksums'
    state = material.get("state", {})
    if not isinstance(state, dict) or not all(n in STATE_FILES and isinstance(v, dict) for n, v in state.items()):
        return '"material" state is not state file names and their values'
    try:
        size = len(json.dumps(state, ensure_ascii=True))        # (what write_state_files writes)
    except (ValueError, RecursionError):                        # (nested as deep as a reader takes)
        size = STATE_FILE_MAX + 1
    if size > STATE_FILE_MAX:
        return '"material" state is larger than any modem saves'
    return ""


def _start_problem(record: dict) -> str:
    """A "start" record's profile name, DNS table and material (replay uses them)."""
    if not isinstance(record.get("profile", ""), str):
        return '"profile" is not a name'
    why = _material_problem(record.get("material", {}))
    if why:
        return why
    dns = record.get("dns", {})
    if not isinstance(dns, dict):
        return '"dns" is not a table of names and addresses'
    router = Router()                                  # (what replay adds the table to)
    for name, address in dns.items():
        try:
            ipaddress.ip_address(address)
        except (TypeError, ValueError):
            return f'"dns" holds {name!r}: {address!r}, not an IP address'
        try:
            router.add_dns(name, address)              # (what replay does with it: an IP as a
        except ValueError as exc:                      # name, an empty name are refused)
            return f'"dns": {exc}'
    return ""


def _record_problem(record) -> str:
    """What makes `record` unusable (empty: nothing)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    t = record.get("t")
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        return 'no time ("t")'
    if not 0 <= t < 1e9:               # (NaN, infinity, a corrupted exponent: no wait can be made of it)
        return f'"t" is not a time in seconds: {t!r}'
    modem = record.get("modem", 0)
    if isinstance(modem, bool) or not isinstance(modem, int):
        return '"modem" is not an index'
    if not isinstance(record.get("kind", ""), str):
        return '"kind" is not a name'
    kind = record.get("kind")
    if kind == "open" and not (isinstance(record.get("host"), str) and is_port(record.get("port"))):
        return 'an "open" record\'s "host" and "port" are not a name and a number 0-65535'
    if kind == "handshake" and not all(isinstance(record.get(k), (str, type(None))) for k in ("version", "cipher")):
        return 'a "handshake" record\'s "version" and "cipher" are not names'
    if kind in ("tls_failure", "open_result") and not isinstance(record.get("failure"), (str, type(None))):
        return f'a "{kind}" record\'s "failure" is not a name'
    if kind == "open_result" and (isinstance(record.get("code"), bool) or not isinstance(record.get("code"), int)):
        return 'an "open_result" record\'s "code" is not a number'
    socket_id = record.get("socket", 0)
    if isinstance(socket_id, bool) or not isinstance(socket_id, int):
        return '"socket" is not an id'
    for key in ("dtls", "resumed"):                    # flags: a string such as "no" is no flag
        if not isinstance(record.get(key, False), bool):
            return f'"{key}" is not true or false'
    if not isinstance(record.get("reason", ""), str):
        return '"reason" is not a text'
    if kind == "lost" and not all(isinstance(record.get(k), int) and not isinstance(record.get(k), bool)
                                  and record.get(k) >= 0 for k in ("from", "bytes")):
        return 'a "lost" record\'s "from" and "bytes" are not byte counts'
    if kind == "io" and record.get("dir") not in ("in", "out"):
        return 'an "io" record\'s "dir" is not "in" or "out"'
    for key in _REQUIRED.get(kind, ()):
        if key not in record:
            return f'a "{kind}" record without "{key}"'
    for key in ("in", "out"):                          # byte counts
        value = record.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f'"{key}" is not a byte count'
    if kind == "start":
        problem = _start_problem(record)
        if problem:
            return problem
    for key in _BYTES_FIELDS:
        if key not in record:
            continue
        value = record[key]                            # (null too: the writers always give a string)
        if not isinstance(value, str):
            return f'"{key}" is not a string'
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            return f'"{key}" holds a character above U+00FF (traces store bytes as U+0000-U+00FF)'
    return ""


def escape(data: bytes) -> str:
    """Bytes for a person: printable ASCII as is, \\r \\n \\t, the rest \\xNN."""
    out = []
    for b in data:
        if b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append({13: "\\r", 10: "\\n", 9: "\\t"}.get(b, f"\\x{b:02x}"))
    return "".join(out)


def hexdump(data: bytes, indent: str = "") -> list[str]:
    lines = []
    for i in range(0, len(data), 16):
        chunk = data[i:i + 16]
        hx = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{indent}{i:08x}  {hx:<47}  |{text}|")
    return lines


def _split_lines(data: bytes) -> list[bytes]:
    """After each LF, so an answer shows one line of text per line of output."""
    parts = re.split(rb"(?<=\n)", data)
    return [p for p in parts if p]


def _plain_handshake(r: dict) -> bool:
    """A plain TCP/UDP socket's "handshake" (emulator/sockets/plain_session.py): no TLS."""
    return r.get("version") in ("TCP", "UDP") and not r.get("cipher")


def render(records: list[dict], socket: int | None = None, modem: int | None = None) -> list[str]:
    lines: list[str] = []
    t0 = records[0]["t"] if records else 0.0
    plain: dict = {}          # (modem, socket id) -> its TCP/IP type while it is an AT+QIOPEN socket
    for r in records:
        key = (r.get("modem", 0), r.get("socket"))
        if r.get("kind") in ("open", "accepted"):
            plain[key] = r.get("type") if r.get("service") == "tcpip" else None
        elif r.get("kind") == "handshake" and _plain_handshake(r):
            plain[key] = plain.get(key) or r.get("version")
        if modem is not None and r.get("modem", 0) != modem:
            continue
        kind = r.get("kind")
        if socket is not None and r.get("socket") != socket:
            continue
        head = f"{r['t'] - t0:+10.3f}s m{r.get('modem', 0)}"
        if kind == "start":
            lines.append(f"{head} start {r.get('profile')} ({r.get('name')}) at {r.get('wall')}")
        elif kind == "io":
            arrow = ">>" if r["dir"] == "in" else "<<"
            for part in _split_lines(_b(r["data"])):
                lines.append(f"{head} {arrow} {escape(part)}")
        elif kind == "cmd":
            state = "" if r.get("done", True) else " (no final result)"
            lines.append(f"{head} == {escape(_b(r['line']))} -> {escape(_b(r['answer']))}{state}")
        elif kind in ("sent", "received"):
            data = _b(r["data"])
            what = "sent" if kind == "sent" else "received"
            lines.append(f"{head} socket {r['socket']} {what} {len(data)} bytes")
            lines.extend(hexdump(data, " " * 14))
        elif kind == "open" and r.get("service") == "tcpip":
            where = f"{r['host']}:{r['port']}" if r.get("type") != "UDP SERVICE" else f"local port {r.get('local_port')}"
            lines.append(f"{head} socket {r['socket']} open {r.get('type')} {where}")
        elif kind == "open":
            lines.append(f"{head} socket {r['socket']} open {r['host']}:{r['port']}{' (DTLS)' if r.get('dtls') else ''}")
        elif kind == "accepted":
            on = (f" by listener {r['server']} (local port {r.get('local_port')})"
                  if r.get("server") is not None else "")
            lines.append(f"{head} socket {r['socket']} accepted from {r.get('remote') or '?'}{on}")
        elif kind == "handshake" and _plain_handshake(r):
            lines.append(f"{head} socket {r['socket']} connected ({plain.get(key) or r['version']}, no TLS)")
        elif kind == "connected":
            lines.append(f"{head} socket {r['socket']} TCP connected (the handshake follows)")
        elif kind == "handshake":
            extra = (f", ALPN {r['alpn']}" if r.get("alpn") else "") + (", resumed" if r.get("resumed") else "")
            lines.append(f"{head} socket {r['socket']} handshake {r['version']} {r['cipher']}{extra}")
        elif kind == "tls_failure":
            lines.append(f"{head} socket {r['socket']} TLS failure ({r['failure']}): {r['reason']}")
        elif kind == "open_result":
            why = f" ({r['failure']}: {r['reason']})" if r.get("code") else ""
            lines.append(f"{head} socket {r['socket']} open result {r['code']}{why}")
        elif kind == "peer_closed" and plain.get(key):
            how = {"fin": "FIN", "rst": "RST"}.get(r["how"], r["how"])
            lines.append(f"{head} socket {r['socket']} peer closed ({how})")
        elif kind == "peer_closed":
            lines.append(f"{head} socket {r['socket']} peer closed ({r['how']}): {r['reason']}")
        elif kind == "close":
            lines.append(f"{head} socket {r['socket']} closed by the host")
        elif kind == "hangup":
            lines.append(f"{head} the host closed the port")
        elif kind == "lost":
            lines.append(f"{head} {r['bytes']} output bytes above (from byte {r['from']}) never reached "
                         f"the host: {r.get('why', '?')}")
        elif kind == "stop":
            lines.append(f"{head} the modem stopped (the recording ends)")
        elif kind == "control":
            lines.append(f"{head} control {r.get('op')} {json.dumps(r.get('args') or {})}")
        else:
            lines.append(f"{head} {kind} {json.dumps({k: v for k, v in r.items() if k not in ('t', 'modem', 'kind')})}")
    return lines


def _missing_modem(path, records: list[dict], modem: int) -> str | None:
    """What `trace show` and `replay` say of a --modem the trace has no record of (None: it has)."""
    have = sorted({r.get("modem", 0) for r in records})
    if modem in have:
        return None
    return f"{path}: no modem {modem} in the trace (it has: {', '.join(map(str, have)) or 'no records'})"


def show_main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="modem-emulator trace show",
                      description="render a trace (--trace FILE) for a person")
    p.add_argument("file")
    p.add_argument("--socket", type=int, help="only this socket's events and data")
    p.add_argument("--modem", type=int, help="only this modem (index)")
    args = p.parse_args(argv)
    try:
        records = read_trace(args.file, warn=lambda text: print(f"modem-emulator trace show: {text}",
                                                                 file=sys.stderr))
    except (OSError, ValueError) as exc:
        print(f"modem-emulator trace show: {exc}", file=sys.stderr)
        return 2
    missing = None if args.modem is None else _missing_modem(args.file, records, args.modem)
    if missing:                                                 # (as replay --modem says it)
        print(f"modem-emulator trace show: {missing}", file=sys.stderr)
        return 2
    try:
        lines = render(records, args.socket, args.modem)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:   # a field of a record
        print(f"modem-emulator trace show: {args.file}: a record is damaged: {exc!r}", file=sys.stderr)
        return 2
    try:
        for line in lines:
            print(line)
    except BrokenPipeError:
        pass
    return 0


# -- replay: the network side -----------------------------------------------------------
@dataclass
class Script:
    """One recorded connection: how its handshake ended and its plaintext, in order."""
    socket: int
    host: str
    port: int
    header: dict = field(default_factory=dict)      # {"ok": true, version, cipher} or {"fail": kind}
    # ("expect", bytes, t) | ("send", bytes, *moment) | ("end", how, *moment): a moment is what
    # had happened when the server did it -- the host's bytes, the modem's, the host's
    # hang-ups, the plaintext the modem had received from every replayed server -- and the
    # stand-in waits for the replay to get as far (see moment())
    steps: list = field(default_factory=list)
    connected: bool = False
    plain: bool = False          # an AT+QIOPEN socket: no TLS, no header line
    type: str = ""               # its service type: "TCP", "UDP", "TCP INCOMING", "UDP SERVICE"
    refused: bool = False        # the connect was refused (the stand-in: a port nobody listens on)
    dns_failed: bool = False     # its name's lookup failed (the replay fails it again: _ReplayFaults)
    server: int | None = None    # TCP INCOMING: the listener's id, its <local_port>, and when the
    local_port: int = 0          # client came (the host's and the modem's byte counts then)
    at: tuple = (0, 0)
    fail_at: tuple = ()          # refused / dns_failed: the moment the recorded answer came
    dtls: bool = False           # an SSL socket over DTLS: its stand-in speaks datagrams
    head_at: tuple = ()          # the moment the handshake ended (the stand-in's header waits for it)
    connect_at: tuple = ()       # an SSL socket's: the moment its TCP connect was made ("connected")
    connect_record: int = 0      # id() of the "connected" record connect_at is from (_connects_before)
    open_number: int = 0         # 1 for the trace's first open (AT+QSSLOPEN / AT+QIOPEN), ...
    answered: bool = False       # its open_result was recorded (a close after it abandons nothing)
    opened_in: int = 0           # the host's bytes when it was opened

    @property
    def datagram(self) -> bool:
        return self.dtls or (self.plain and self.type == "UDP")

    @property
    def can_hold(self) -> bool:
        """Its server can hold an open it never answered ("hold": an SSL socket's handshake,
        TLS or DTLS, or an outgoing TCP socket's connect; not UDP, a listener's client)."""
        return not self.plain or self.type == "TCP"


def scripts_of(records: list[dict]) -> list[Script]:
    current: dict[int, Script] = {}
    scripts: list[Script] = []
    untyped: list[Script] = []       # opened by the command being answered (traces before "service")
    hangups = opens = handshakes = hs_before = 0
    received = _received_before(records)

    def moment(r: dict) -> tuple[int, int, int, int, int, float | None]:
        """When a server did what r records: (host bytes, modem bytes, hang-ups, plaintext
        received before it, connects and handshakes ended before it, its time in the
        recording -- how long a stand-in may wait for the rest: ReplayPeer._wait_host).  The byte counts alone let a stand-in run ahead: a server's
        answer while the host was at a "> " prompt comes in either order with another
        server's, data after a hang-up reach the host that left, a slow handshake ends
        before the AT+QSSLSTATE the host sent meanwhile; and the connects / handshakes that
        had ended: connects ending while the host sat at a prompt, all at the same byte
        counts, end in the recorded order."""
        t = r.get("t")
        return (r.get("in", 0), r.get("out", 0), hangups, received[id(r)], hs_before,
                t if isinstance(t, (int, float)) and not isinstance(t, bool) else None)

    for r in records:
        kind, sid = r.get("kind"), r.get("socket")
        hs_before = handshakes                   # (the ones before r: moment() of r)
        if kind == "handshake" or _refusal(r):
            handshakes += 1
        if kind == "hangup":
            hangups += 1
            continue
        if kind == "open":
            opens += 1
            current[sid] = s = Script(sid, r["host"], r["port"], open_number=opens, opened_in=r.get("in", 0))
            if r.get("service") == "tcpip":
                s.plain, s.type = True, r.get("type") or ("UDP" if r.get("dtls") else "TCP")
            else:
                s.dtls = bool(r.get("dtls"))
                if "service" not in r:
                    untyped.append(s)
            scripts.append(s)
            continue
        if kind == "accepted":
            host, _, rport = str(r.get("remote") or "").rpartition(":")
            current[sid] = s = Script(sid, host, int(rport) if rport.isdigit() else 0, plain=True,
                                      type="TCP INCOMING", connected=True, server=r.get("server"),
                                      local_port=r.get("local_port") or 0, at=(r.get("in", 0), r.get("out", 0)))
            scripts.append(s)
            continue
        if kind == "cmd":
            if "+QIOPEN" in r.get("line", "").upper():
                for s in untyped:
                    s.plain, s.type = True, s.type or ("UDP" if s.dtls else "TCP")
                    s.dtls = False
            untyped = []
            continue
        s = current.get(sid)
        if s is None:
            continue
        if kind == "handshake" and _plain_handshake(r):
            s.connected, s.plain, s.type = True, True, s.type or r["version"]
            s.header = {"ok": True}
            s.head_at = moment(r)              # (a TCP stand-in says "connected" then)
        elif kind == "connected":
            s.connect_at = moment(r)           # (the replay's connect is made then: _ReplayFaults)
            s.connect_record = id(r)
        elif kind == "handshake":
            s.connected = True
            s.header = {"ok": True, "version": r["version"], "cipher": r["cipher"],
                        "alpn": r.get("alpn"), "resumed": r.get("resumed", False)}
            s.head_at = moment(r)
        elif kind == "tls_failure" and not s.header:
            s.connected = True
            s.header = {"fail": r["failure"], "reason": r["reason"]}
            s.head_at = moment(r)
        elif kind == "open_result":
            s.answered = True
            if r["code"] and not s.header:
                if r.get("failure") == "pdp" and s.can_hold and not (s.plain and r.get("in", 0) == s.opened_in):
                    # the context went away while it opened (an inactive one never opens a
                    # socket): the connect had been made -- a replay's is, at once -- and the
                    # recording's server held it; the deactivation fails it again.  (An
                    # AT+QIOPEN's connect starts a loop turn after its command: a deactivation
                    # in the same host bytes came first, in the replay too -- no connect.)
                    s.connected, s.header = True, {"hold": True}
                elif r.get("failure") in ("dns", "connect", "pdp") and not s.connect_at:
                    # never reached a server (a "connect" failure after its TCP connect was
                    # made -- "connected" -- is the server closing it in the handshake before
                    # the engine had a word for it: a TLS-level end, below)
                    s.connected = False
                    s.refused = r.get("failure") == "connect"
                    s.dns_failed = r.get("failure") == "dns"
                    s.fail_at = moment(r)        # (when: a slow network's is a round trip late)
                elif s.plain:                    # no answer to a connect (569): not replayed
                    s.connected = False
                else:                            # a TLS-level failure (timeout, verify, ...)
                    s.connected = True
                    s.header = {"fail": r.get("failure") or "protocol_error", "reason": r.get("reason", "")}
                    s.head_at = moment(r)
            elif r["code"] and s.header.get("ok"):
                s.header = {"fail": r.get("failure") or "protocol_error", "reason": r.get("reason", "")}
        elif (kind == "close" and not s.header and not (s.refused or s.dns_failed) and s.can_hold
              and not (s.plain and s.answered)):
            # the host closed it before its handshake (or a TCP socket's connect) ended: the
            # recording's server held it
            s.connected, s.header = True, {"hold": True}
        elif kind == "sent":
            s.steps.append(("expect", _b(r["data"]), moment(r)[-1]))
        elif kind == "received":
            s.steps.append(("send", _b(r["data"]), *moment(r)))
        elif kind == "peer_closed":
            s.steps.append(("end", r["how"], *moment(r)))
        elif kind == "tls_failure":
            s.steps.append(("end", "rst", *moment(r)))
    # (the host bytes that asked for a restart: the chunk's own record -- its command's record
    # may be written only after the boot)
    restarts = [r.get("in", 0) for r in records if r.get("kind") == "io" and r.get("dir") == "in"
                and _RESTART.search(str(r.get("data", "")))]
    for s in scripts:
        if not s.header and not s.answered and not (s.refused or s.dns_failed) and s.can_hold:
            # an open whose end the recording never saw (a restart took it, the trace was
            # cut): its server held it as far as the recording goes -- unless an AT+QIOPEN
            # met a restart in the host bytes it came in (its connect, a loop turn after
            # the command, never started: the replay's does not either)
            cut = next((n for n in restarts if n >= s.opened_in), None)
            if not (s.plain and cut == s.opened_in):
                s.connected, s.header = True, {"hold": True}
    return scripts


def _refusal(r: dict) -> bool:
    """r is an open's answer that it was refused or its name did not resolve: a connect that
    ended, as a handshake record is (the moments' count: connects ending at the same byte
    counts, the host at a prompt, end in the recorded order)."""
    return r.get("kind") == "open_result" and bool(r.get("code")) and r.get("failure") in ("connect", "dns")


_RESTART = re.compile(r"\+CFUN=\s*\d+\s*,\s*1\b|\+CFUN=\s*[04]\b|\+QPOWD", re.I)   # (the modem restarts / stops)


# The datagrams of a DTLS socket's stand-in (the first byte says what each is): the modem's
# hello (the stand-in learns its address), the handshake's end (JSON, as recorded), plaintext
# one datagram per record, the server's end of the session (its close_notify or failure).
# The hello is long enough that no plain UDP socket's datagram to the same stand-in is taken
# for it (the stand-in gives a new sender a DTLS script only if it says this first).
DTLS_HELLO, DTLS_HEAD, DTLS_DATA, DTLS_END = b"H\0modem-emulator replay: DTLS hello", b"S", b"D", b"E"


class ReplaySession(NoSealJobs):
    """A stand-in for tls_engine.TlsClientSession in replay: no TLS; the server's first
    line (JSON) says how the recorded handshake ended, then the stream is plaintext.  Over
    DTLS the same in datagrams, each tagged (DTLS_*): one record of plaintext a datagram."""

    def __init__(self, settings, cache=None, cache_key=None) -> None:
        self.settings = settings
        self.state = "new"
        self._head = bytearray()
        self._out: list[bytes] = []
        self._events: list = []

    def start(self) -> None:
        self.state = "handshaking"
        if self.settings.dtls:
            self._out.append(DTLS_HELLO)

    def receive(self, data: bytes) -> None:
        from tls_engine import AppData, PeerClosed
        if self.settings.dtls:
            self._datagram(data)
            return
        if not data:
            if self.state == "established":
                self._events.append(PeerClosed())
            self.state = "closed"
            return
        if self.state == "handshaking":
            self._head += data
            if b"\n" not in self._head:
                return
            line, _, data = bytes(self._head).partition(b"\n")
            if not self._head_read(json.loads(line)):
                return
        if data and self.state == "established":
            self._events.append(AppData(bytes(data)))

    def _head_read(self, head: dict) -> bool:
        """The recorded handshake's end; True: established."""
        from tls_engine import HandshakeComplete, TlsFailure
        if head.get("ok"):
            self.state = "established"
            self._events.append(HandshakeComplete(head["version"], 0, head["cipher"],
                                                  head.get("alpn"), bool(head.get("resumed"))))
            return True
        self.state = "failed"
        self._events.append(TlsFailure(head.get("fail", "protocol_error"), head.get("reason", "replayed")))
        return False

    def _datagram(self, data: bytes) -> None:
        """One datagram of a DTLS stand-in; what does not fit the state is dropped, as DTLS
        drops a record it cannot read."""
        from tls_engine import AppData, PeerClosed
        kind, body = data[:1], data[1:]
        if self.state == "handshaking" and kind == DTLS_HEAD:
            try:
                head = json.loads(body)
            except ValueError:
                return
            if isinstance(head, dict):
                self._head_read(head)
        elif self.state == "established" and kind == DTLS_DATA and body:
            self._events.append(AppData(bytes(body)))
        elif self.state == "established" and kind == DTLS_END:
            self.state = "closed"
            self._events.append(PeerClosed())

    def outgoing(self):
        out, self._out = self._out, []
        return out

    def events(self):
        ev, self._events = self._events, []
        return ev

    def send(self, data: bytes) -> None:
        self._out.append(DTLS_DATA + data if self.settings.dtls else bytes(data))

    def close(self) -> None:
        self.state = "closed"

    def next_timeout(self):
        return None

    def handle_timeout(self) -> None:
        pass


class ReplayPlainSession(PlainSession):
    """A stand-in for PlainSession of an AT+QIOPEN "TCP" socket in replay: the loopback
    connect to the stand-in is made at once, so the socket stays opening until the
    stand-in's first line (JSON, the recorded connect's end) comes at the recorded moment;
    then it is a PlainSession.  UDP sockets and the connections a TCP LISTENER accepts
    keep PlainSession (plain_sessions_for_replay)."""

    def __init__(self, settings, cache=None, cache_key=None, counter=None) -> None:
        super().__init__(settings, cache, cache_key)
        self._head = bytearray()
        # The modem's AT+QGDCNT counter: the socket counted the header line as received
        # from the network; it is the replay's, not the recorded server's (taken back)
        self._counter = counter

    def start(self) -> None:
        if self.state != "idle":
            raise RuntimeError(f"start() called in state {self.state!r}")
        self.state = "connecting"

    def receive(self, data: bytes) -> None:
        from tls_engine import TlsFailure
        if self.state != "connecting":
            super().receive(data)
            return
        if not data:                             # the stand-in ended first (a difference)
            self.state = "failed"
            self._events.append(TlsFailure("protocol_error", "the replay's stand-in closed the connection"))
            return
        self._head += data
        if b"\n" not in self._head:
            return
        line, _, rest = bytes(self._head).partition(b"\n")
        self._head.clear()
        if self._counter is not None:
            self._counter.received -= len(line) + 1
        self.state = "idle"
        super().start()
        if rest:
            super().receive(rest)


def plain_sessions_for_replay(modem):
    """The replay modem's TCP/IP session factory: ReplayPlainSession for an outgoing TCP
    socket (with the modem's AT+QGDCNT counter), PlainSession for the others."""
    from emulator.modem.pdp import data_counter
    counter = data_counter(modem)

    def factory(settings, cache=None, cache_key=None) -> PlainSession:
        if settings.dtls or getattr(settings, "incoming", False):
            return PlainSession(settings, cache, cache_key)
        return ReplayPlainSession(settings, cache, cache_key, counter)
    return factory


class _ReplayFaults(NetFaults):
    """The replay modem's network faults: the opens whose connect the recording's server
    refused, or whose name's lookup failed, fail so again, by their place among the trace's
    opens -- a destination refused once and connected later is routed to its stand-in,
    which would take both; a name that failed once (the control API's dns_fail) resolves
    later.  (Every open asks take_open once, right after its "open" record.)  A --scenario's
    fault is taken by the open it falls on all the same, so that it does not fall on the
    next one."""

    def __init__(self, modem, refused: frozenset[int], dns_failed: frozenset[int] = frozenset(),
                 lookups_failed: dict[str, frozenset[int]] | None = None,
                 fail_at: dict[int, tuple] | None = None, moment_reached=None,
                 connect_at: dict[int, tuple] | None = None) -> None:
        super().__init__(modem)
        self.refused = refused
        self.dns_failed = dns_failed
        # open number -> the moment its recorded refusal (or failed lookup) came, and what
        # waits for a moment (ReplayPeer.moment_reached): the replay's comes then too -- over
        # a slow network a round trip after the command, the socket opening meanwhile
        self.fail_at = fail_at or {}
        self.moment_reached = moment_reached
        # open number -> the moment an SSL socket's TCP connect was made in the recording: the
        # replay's (to a stand-in, at once) is complete then -- its negotiatetime runs from
        # there, as the recording's did (a slow network's connect takes its round trip)
        self.connect_at = connect_at or {}
        self._due = None
        self._connect_due = None
        self.opens = 0
        # AT+QIDNSGIP's lookups the same way: a name -> the places, among its lookups, of the
        # ones that failed (the recording's "dns" records, code 565)
        self.lookups_failed = lookups_failed or {}
        self.lookups: dict[str, int] = {}

    def nothing_in_the_way(self) -> bool:
        return False                     # (every open is counted by take_open, its connect timed)

    def take_open(self, host: str) -> str | None:
        self.opens += 1
        fault = super().take_open(host)
        self._due = None
        self._connect_due = self.connect_at.get(self.opens)
        if self.opens in self.refused:
            fault = "refuse"
        elif self.opens in self.dns_failed:
            fault = "dns"
        else:
            return fault
        self._due = self.fail_at.get(self.opens)
        return fault

    def failure_wait(self):
        due, self._due = self._due, None
        if due is None or self.moment_reached is None:
            return None
        return self.moment_reached(due)

    def connect_wait(self):
        due, self._connect_due = self._connect_due, None
        if due is None or self.moment_reached is None:
            return None
        return self.moment_reached(due, timed=True)

    def take_lookup(self, host: str = "", purpose: str = "") -> bool:
        fault = super().take_lookup(host, purpose)
        if purpose != "dnsgip":
            return fault
        key = host.lower()
        self.lookups[key] = self.lookups.get(key, 0) + 1
        return fault or self.lookups[key] in self.lookups_failed.get(key, frozenset())


class ReplayPeer:
    """The stand-ins for every server of the trace, on the emulator's loop: a loopback TCP
    server per recorded destination (SSL sockets, whose first line is the recorded
    handshake's end, and plain TCP sockets), a UDP socket per recorded UDP destination, and
    a client per recorded connection to a TCP LISTENER (it connects once the host has sent,
    and the modem written, as much as they had when the recorded one came)."""

    def __init__(self, scripts: list[Script], host_sent, modem_wrote=None, listener_addr=None,
                 hangups=None, received=None, handshakes=None) -> None:
        self.scripts = scripts
        self.host_sent = host_sent            # callable: bytes the replay host has sent so far
        self.modem_wrote = modem_wrote or (lambda: 1 << 62)
        self.hangups = hangups or (lambda: 1 << 62)      # the replay host's hang-ups so far
        self.received = received or (lambda: 1 << 62)    # plaintext the modem has received so far
        self.handshakes = handshakes or (lambda: 1 << 62)   # connects and handshakes ended so far
        # (recorded time, monotonic time) of the replay host's last chunk, and the replay's
        # --max-gap: where a recorded time falls in the replay (None: not known)
        self.anchor: tuple[float, float] | None = None
        self.max_gap: float | None = None
        # False: the recording was cut short -- what the modem sends beyond it is no difference
        self.complete = True
        # True once the replay host is done (its port about to close): the hang-up sends what
        # the modem still held (transwaittm, an escape's "+"s) -- as the recording's did after
        # its end -- which is no difference
        self.ending = False
        # seconds the modem's links may still hold its sends (their latency: a scenario's "net")
        self.link_delay = lambda: 0.0
        self.listener_addr = listener_addr or (lambda server_id: None)   # (ip, port) once listening
        self.differences: list[str] = []
        # waits for the modem's sends: (socket, data, datagram, what of it came so far)
        self._expecting: dict[object, tuple] = {}
        self.routes: list[tuple[str, int, int]] = []     # (host, port, stand-in port) for the router
        self._servers: list = []
        self._tasks: list[asyncio.Future] = []
        self.server = None
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        streams: dict[tuple, list[Script]] = {}
        datagrams: dict[tuple, list[Script]] = {}
        for s in self.scripts:
            if s.type == "UDP SERVICE" and any(step[0] == "expect" for step in s.steps):
                # (its peers are not stood in for: a send the recording has is a difference
                # whatever the replay's datagram met -- a local port may well take it)
                self.differences.append(f"socket {s.socket}: a UDP SERVICE's sends are not replayed")
            if s.type == "TCP INCOMING":
                self.spawn(self._client(s))
            elif s.connected and s.type not in ("UDP SERVICE",):
                # (by the name the router knows it by: "x.example." and "X.example" are one)
                (datagrams if s.datagram else streams).setdefault((name_key(s.host), s.port), []).append(s)
        for dest, queue in streams.items():
            server = await loop.create_server(
                lambda q=queue: asyncio.StreamReaderProtocol(_TapReader(), lambda r, w: self._serve(q, r, w)),
                "127.0.0.1", 0)
            self._servers.append(server)
            self.routes.append((*dest, server.sockets[0].getsockname()[1]))
        for dest, queue in datagrams.items():
            transport, _ = await loop.create_datagram_endpoint(lambda q=queue: _UdpStandIn(self, q),
                                                               local_addr=("127.0.0.1", 0))
            self._servers.append(transport)
            self.routes.append((*dest, transport.get_extra_info("sockname")[1]))
        if self.routes:
            self.port = self.routes[0][2]

    def spawn(self, coroutine) -> asyncio.Future:
        """A task of the replay's network side (cancelled by close)."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.append(task)
        return task

    def moment_reached(self, moment: tuple, timed: bool = False) -> asyncio.Future:
        """Done when the replay is as far as a recorded moment (see _wait_host); timed: and
        its recorded time has come in the replay's schedule (a moment between two of the
        host's chunks, which the byte counts alone would put at the first)."""
        return self.spawn(self._wait_timed(moment) if timed else self._wait_host(*moment))

    async def _wait_timed(self, moment: tuple) -> None:
        await self._wait_host(*moment)
        at = moment[5] if len(moment) > 5 else None
        while (wait := self._scheduled(at) - time.monotonic()) > 0:
            await asyncio.sleep(min(wait, 0.25))     # (re-read: the anchor moves on)

    async def close(self) -> None:
        # What a stand-in still waits for the modem to send when the replay is over (a moment
        # for it to come), then never came: a difference (the recording's modem sent it)
        deadline = time.monotonic() + 1.0 + self.link_delay()
        while self._expecting and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for sid, data, datagram, came in list(self._expecting.values()):
            if came:                 # a stream's send only partly made: what it did send
                self.differences.append(f"socket {sid} sent {escape(bytes(came))!r}, recorded {escape(data)!r}")
                continue
            what = "the datagram " if datagram else ""
            self.differences.append(f"socket {sid} never sent {what}{escape(data)!r}, recorded")
        self._expecting.clear()
        for task in self._tasks:
            task.cancel()
        for server in self._servers:
            server.close()

    async def _wait_host(self, sent: int = 0, wrote: int = 0, hangups: int = 0, received: int = 0,
                         handshakes: int = 0, at: float | None = None, timeout: float | None = 10) -> None:
        """Until the replay is as far as a recorded moment (Script.steps); given up `timeout`
        seconds after the wait began or after the moment's place in the replay's schedule,
        whichever is later (`at`, its recorded time: a slow network's moment may come long
        after the host's last bytes, and the replay keeps the recording's silences)."""
        start = time.monotonic()
        while (self.host_sent() < sent or self.modem_wrote() < wrote or self.hangups() < hangups
               or self.received() < received or self.handshakes() < handshakes):
            if timeout is not None and self._given_up(start, at, timeout):
                return
            await asyncio.sleep(0.002)

    async def _expect(self, script: Script, step: tuple, awaitable, datagram: bool = False,
                      came: bytearray | None = None):
        """What the modem sends for an "expect" step (awaitable's result): TimeoutError 10 s
        after the wait began or after the step's recorded time's place in the replay's
        schedule, whichever is later -- re-read as the replay goes on (a host idle longer
        than 10 s before its next send; --max-gap shortens each pause, not the whole wait).
        `came`: what of a stream's send has come so far (the awaitable fills it), named by
        close() if the rest never comes."""
        at = step[2] if len(step) > 2 else None
        key = object()
        self._expecting[key] = (script.socket, step[1], datagram, came)
        task = asyncio.ensure_future(awaitable)
        start = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=0.25)
                if done:
                    return task.result()
                if self._given_up(start, at):
                    raise asyncio.TimeoutError
        finally:
            self._expecting.pop(key, None)
            if not task.done():
                task.cancel()

    async def host_done(self) -> None:
        """The replay host has sent all and is about to close the port: a moment for what the
        modem has sent already (its answer said so: written to the kernel, maybe not yet read
        on this loop, or still on a shaped link) to reach its stand-in -- bytes beyond the
        recording are a difference -- then what comes is the hang-up's."""
        if self._servers or self._tasks:
            await asyncio.sleep(0.05 + self.link_delay())
        self.ending = True

    def _given_up(self, start: float, at: float | None, timeout: float = 10) -> bool:
        """A wait begun at `start` for what came at recorded time `at` is over: `timeout`
        seconds past the later of the two (the schedule re-read now: --max-gap, the anchor)."""
        return time.monotonic() > max(start, self._scheduled(at)) + timeout

    def _scheduled(self, at: float | None) -> float:
        """When recorded time `at` comes in the replay (the host's last chunk as anchor,
        --max-gap shortening the silence after it); 0 when not known."""
        anchor = self.anchor
        if at is None or anchor is None:
            return 0.0
        last_t, last_sent = anchor
        gap = max(0.0, at - last_t)
        return last_sent + (gap if self.max_gap is None else min(gap, self.max_gap))

    async def _serve(self, queue: list[Script], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if not queue:
            self.differences.append("a connection the trace does not have")
            writer.transport.abort()
            return
        script = queue.pop(0)
        if script.header.get("hold"):            # a handshake the host abandoned: never answered
            try:
                while await reader.read(65536):
                    pass
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            writer.transport.abort()
            return
        # The handshake's end -- or a plain TCP socket's connect (ReplayPlainSession) -- at the
        # moment it came in the recording: a slow network's is not made instant.
        try:
            await self._wait_host(*script.head_at)
        except asyncio.CancelledError:
            writer.transport.abort()             # (the replay is over: quietly, see below)
            return
        writer.write(json.dumps(script.header).encode() + b"\n")
        if not script.header.get("ok"):
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                pass
            writer.close()
            return
        try:
            await self._play(script, reader, writer)
        except asyncio.CancelledError:
            # The replay is over (the emulator stopping cancels every task): end quietly.
            # A stream server's connection task that ends cancelled is reported by asyncio
            # itself as "Exception in callback ..." (its done callback asks task.exception()).
            writer.transport.abort()

    async def _client(self, script: Script) -> None:
        """A recorded connection to one of the modem's TCP LISTENERs, made again."""
        await self._wait_host(script.at[0], timeout=None)
        await self._wait_host(*script.at)
        addr = None
        for _ in range(5000):
            addr = self.listener_addr(script.server)
            if addr is not None:
                break
            await asyncio.sleep(0.002)
        if addr is None:
            self.differences.append(f"socket {script.socket}: listener {script.server} is not listening "
                                    "when the recorded client came")
            return
        try:
            reader, loop = _TapReader(), asyncio.get_running_loop()
            transport, protocol = await loop.create_connection(lambda: asyncio.StreamReaderProtocol(reader), *addr)
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        except OSError as exc:
            self.differences.append(f"socket {script.socket}: connecting to listener {script.server}: {exc}")
            return
        await self._play(script, reader, writer)

    async def _play(self, script: Script, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One stream's recorded plaintext: expect what the modem sent, send what it received."""
        try:
            for step in script.steps:
                if step[0] == "expect":
                    came = bytearray()
                    try:
                        got = await self._expect(script, step, _read_into(reader, len(step[1]), came), came=came)
                    except asyncio.TimeoutError:
                        got = bytes(came)
                    if got != step[1]:
                        self.differences.append(f"socket {script.socket} sent {escape(got)!r}, "
                                                f"recorded {escape(step[1])!r}")
                        if len(got) < len(step[1]):
                            return               # it stopped sending: nothing more to replay
                        # else: go on as recorded, so that what follows still replays
                elif step[0] == "send":
                    await self._wait_host(*step[2:])
                    writer.write(step[1])
                    await writer.drain()
                else:                            # the server ended it, when it had
                    # (what the modem had written then, too: a close recorded after an
                    # escape's OK must not come in its guard time)
                    await self._wait_host(*step[2:])
                    if step[1] == "rst":
                        reset_on_close(writer.transport)
                        writer.transport.abort()
                    else:
                        writer.close()
                    return
            # until the modem closes: what it sends beyond the recording is a difference
            # (not where the recording was cut short: it may have had it)
            beyond = not self.complete           # (True: said, or not to be said)
            while chunk := await reader.read(65536):
                if not beyond and not self.ending:
                    beyond = True
                    self.differences.append(f"socket {script.socket} sent {escape(chunk)!r} "
                                            "beyond the recording")
        except (ConnectionError, OSError):
            pass
        finally:
            if not writer.transport.is_closing():
                writer.close()

    async def play_datagrams(self, script: Script, transport, inbox: "asyncio.Queue[bytes]", addr) -> bool:
        """One UDP socket's recorded datagrams: each "sent" one expected whole, each "received"
        one sent back to where the modem's came from.  A DTLS socket's stand-in (its first
        datagram was the modem's hello) answers with the recorded handshake's end, then
        carries its records tagged (DTLS_*) and ends the session where the server did.
        True: the script played to its end with the session still on (a datagram from the
        modem after that is one the recording does not have)."""
        tag = b""
        if script.dtls:
            await inbox.get()                    # the hello
            if script.header.get("hold"):        # a handshake the host abandoned: never answered
                return False
            await self._wait_host(*script.head_at)
            transport.sendto(DTLS_HEAD + json.dumps(script.header).encode(), addr)
            if not script.header.get("ok"):
                return False
            tag = DTLS_DATA
        for step in script.steps:
            if step[0] == "expect":
                try:
                    got = await self._expect(script, step, inbox.get(), datagram=True)
                except asyncio.TimeoutError:
                    got = b""
                if got != tag + step[1]:
                    got = got[len(tag):] if got.startswith(tag) else got
                    self.differences.append(f"socket {script.socket} sent the datagram {escape(got)!r}, "
                                            f"recorded {escape(step[1])!r}")
            elif step[0] == "send":
                await self._wait_host(*step[2:])
                transport.sendto(tag + step[1], addr)
            elif script.dtls:                    # the server ended the session
                await self._wait_host(*step[2:])
                transport.sendto(DTLS_END + step[1].encode(), addr)
                return False
        return True                              # every step played: what comes now is beyond it


class _TapReader(asyncio.StreamReader):
    """A stand-in's StreamReader that knows what it was given and not yet read: on a reset
    read() raises before handing out the bytes it holds, which the modem did send."""

    def __init__(self) -> None:
        super().__init__()
        self.fed = bytearray()               # given, not yet returned by read()

    def feed_data(self, data: bytes) -> None:
        self.fed += data
        super().feed_data(data)

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        del self.fed[:len(data)]
        return data


async def _read_into(reader: _TapReader, n: int, came: bytearray) -> bytes:
    """readexactly(n) that keeps what has come in `came` (a wait given up, or the replay
    over, can say what of the send the modem did make)."""
    while len(came) < n:
        try:
            chunk = await reader.read(n - len(came))
        except ConnectionError:
            # a reset: the reader raises before handing out what it holds -- what came
            # before the reset is what the modem sent
            came += reader.fed[:n - len(came)]
            break
        if not chunk:
            break                                # the modem closed: what came is what it sent
        came += chunk
    return bytes(came)


class _UdpStandIn(asyncio.DatagramProtocol):
    """The stand-in UDP server of one destination: each new sender is the next recorded socket."""

    def __init__(self, peer: ReplayPeer, queue: list[Script]) -> None:
        self.peer = peer
        self.queue = queue
        self.inboxes: dict = {}
        self.played: dict = {}           # sender -> its script, once played to its end
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        if addr in self.played:
            self._beyond(self.played.pop(addr), data)
            return
        inbox = self.inboxes.get(addr)
        if inbox is None:
            # A new sender: the next recorded socket of its kind (a DTLS socket says its hello
            # at the open, a UDP socket speaks at its first send: their orders may differ),
            # a UDP one whose first datagram is this one first (two sockets to one server
            # need not send in the order they were opened).
            dtls = data == DTLS_HELLO
            mine = [s for s in self.queue if s.dtls == dtls]
            script = next((s for s in mine if not dtls and s.steps and s.steps[0][:2] == ("expect", data)),
                          mine[0] if mine else None)
            if script is None:
                self.peer.differences.append(f"a {'DTLS' if dtls else 'UDP'} socket the trace does not have")
                return
            self.queue.remove(script)
            inbox = self.inboxes[addr] = asyncio.Queue()
            self.peer.spawn(self._play(script, inbox, addr))
        inbox.put_nowait(data)

    async def _play(self, script: Script, inbox: "asyncio.Queue[bytes]", addr) -> None:
        if await self.peer.play_datagrams(script, self.transport, inbox, addr):
            if not inbox.empty():
                self._beyond(script, inbox.get_nowait())
            else:
                self.played[addr] = script

    def _beyond(self, script: Script, data: bytes) -> None:
        """A datagram the modem sent after its script's last step: the recording has none
        (unless it was cut short)."""
        if self.peer.complete and not self.peer.ending:
            body = data[len(DTLS_DATA):] if script.dtls and data.startswith(DTLS_DATA) else data
            self.peer.differences.append(f"socket {script.socket} sent the datagram {escape(body)!r} "
                                         "beyond the recording")


# -- replay: the host side ----------------------------------------------------------------
# What differs from run to run by nature, not by behaviour: the local port the kernel
# chose (EC2x AT+QSSLSTATE's 5th field, AT+QISTATE's of a client), the address and port a client of a TCP LISTENER
# came from (its "incoming" URC, its AT+QISTATE line), what a peer had acknowledged.
VARIABLE = [(re.compile(r'(\+QSSLSTATE: \d+,"SSLClient","[^"]*",\d+,)\d+'), r"\1<local port>"),
            (re.compile(r'(\+QIURC: "incoming",\d+,\d+,)"[^"]*",\d+'), r'\1"<remote>",<port>'),
            (re.compile(r'(\+QISTATE: \d+,"TCP INCOMING",)"[^"]*",\d+'), r'\1"<remote>",<port>'),
            # a client opened with <local_port> 0: the port its stack chose
            (re.compile(r'(\+QISTATE: \d+,"(?:TCP|UDP)","[^"]*",\d+,)\d+'), r"\1<local port>"),
            # AT+QISEND=<id>,0: how much the peer's TCP had acknowledged (its window, its
            # pace); <sent> is the host's own and compared
            (re.compile(r'(\+QISEND: \d+,)\d+,\d+'), r"\1<acked>,<unacked>")]

LISTEN_LINE = re.compile(r'\+QIOPEN=\d+,\d+,"(?:TCP LISTENER|UDP SERVICE)","[^"]*",\d+,(\d+)', re.I)


def _link_delay(modem) -> float:
    """How long the modem's shaped links may hold a send (a scenario's "net": the modem's
    conditions and every socket's own): a round trip of the longest latency."""
    from emulator.io.network import net_faults
    from emulator.sockets.tcpip import socket_services

    conditions = [net_faults(modem).conditions] + [s.net for svc in socket_services(modem)
                                                   for s in svc.sockets.values() if s.net]
    return max(2 * c.latency_ms / 1000 for c in conditions)


def _listen_ports(records: list[dict]) -> set[int]:
    """The <local_port>s the trace's TCP LISTENERs and UDP SERVICEs bound (from their
    AT+QIOPEN lines and accepted records): the replay binds them on any free port."""
    ports = {r.get("local_port") for r in records if r.get("kind") == "accepted"}
    for r in records:
        if r.get("kind") == "cmd":
            ports.update(int(m.group(1)) for m in LISTEN_LINE.finditer(r.get("line", "")))
    return {p for p in ports if isinstance(p, int) and 0 < p < 65536}


def _listening(modem, server_id) -> tuple[str, int] | None:
    """Where the replaying modem's TCP LISTENER <server_id> listens (None: not yet/not now)."""
    from emulator.sockets.tcpip import LISTENING
    svc = _tcpip_if_any(modem)
    listener = svc.listeners.get(server_id) if svc is not None else None
    server = getattr(listener, "server", None)
    if server is None or not server.sockets or listener.state != LISTENING:
        return None
    return tuple(server.sockets[0].getsockname()[:2])


def _norm(text: str, ignore: list[re.Pattern]) -> str:
    for rx, repl in VARIABLE:
        text = rx.sub(repl, text)
    for rx in ignore:
        text = rx.sub("<ignored>", text)
    return text


def _compare_cmds(expected: list[dict], got: list[dict], ignore: list[re.Pattern]) -> str | None:
    def norm(text: str) -> str:
        return _norm(text, ignore)
    for i, exp in enumerate(expected):
        if i >= len(got):
            return (f"command {i + 1} ({escape(_b(exp['line']))}): not answered in the replay\n"
                    f"  expected: {escape(_b(exp['answer']))}")
        g = got[i]
        if g["line"] != exp["line"]:
            return (f"command {i + 1}: the replay ran {escape(_b(g['line']))}, "
                    f"the trace {escape(_b(exp['line']))}")
        if norm(g["answer"]) != norm(exp["answer"]) or g.get("done", True) != exp.get("done", True):
            return (f"command {i + 1} ({escape(_b(exp['line']))}) at {exp['t']:.3f}s:\n"
                    f"  expected: {escape(_b(exp['answer']))}\n"
                    f"  got:      {escape(_b(g['answer']))}")
    if len(got) > len(expected):
        return f"command {len(expected) + 1} ({escape(_b(got[len(expected)]['line']))}): not in the trace"
    return None


def _compare_stream(expected: bytes, got: bytes, ignore: list[re.Pattern], prefix: bool = False) -> str | None:
    """prefix: the expected stream was cut short; only that much of `got` is compared."""
    expected, got = _b(_norm(_s(expected), ignore)), _b(_norm(_s(got), ignore))
    if prefix:
        got = got[:len(expected)]
    if expected == got:
        return None
    i = next((k for k in range(min(len(expected), len(got))) if expected[k] != got[k]), min(len(expected), len(got)))
    lo = max(0, i - 40)
    return (f"the output differs at byte {i} (outside command answers: URCs, data):\n"
            f"  expected: ...{escape(expected[lo:i + 60])}\n"
            f"  got:      ...{escape(got[lo:i + 60])}")


def _drain(ser) -> None:
    n = ser.in_waiting
    if n:
        ser.read(n)


def _reopen(ser, emu, port):
    """The recorded host closed the port here and the next one opened it: close, wait until
    the modem has seen the hang-up, open again.  (A port closed before the modem saw it
    opened is no hang-up to the modem: the first wait is for that; a stand-in server waits
    for the replay's hang-ups to count as many as the recording's.)"""
    deadline = time.monotonic() + 5
    while not emu.run(lambda: port.port.attached) and time.monotonic() < deadline:
        time.sleep(0.002)
    ser.close()
    deadline = time.monotonic() + 5
    while emu.run(lambda: port.port.attached) and time.monotonic() < deadline:
        time.sleep(0.002)
    import serial
    return serial.Serial(port.path, 115200, timeout=0)


# Records the modem answers at once with output of its own (a network event's URC, an
# open's result, a send's SEND OK): a stop-less trace that ends on one was killed in the
# instant between the two.
_ANSWERED_AT_ONCE = frozenset({"open", "accepted", "connected", "handshake", "tls_failure", "open_result",
                               "sent", "received", "peer_closed", "close", "dns", "ping", "registration"})


def _event_unanswered_at_end(records: list[dict]) -> bool:
    """The recording has no "stop" and its last record is one the modem answers at once
    (_ANSWERED_AT_ONCE): a kill -9 in the instant before that output, which a replay writes
    -- no difference.  (A trace ending on an answer, the usual kill, is compared in full.)"""
    if not records or any(r.get("kind") == "stop" for r in records):
        return False
    return records[-1].get("kind") in _ANSWERED_AT_ONCE


def _unanswered_at_end(records: list[dict]) -> bool:
    """The recording stopped between a command line and its answer: host bytes with a line
    end (CR) after the last "cmd" record.  Every record is written whole, so a kill -9
    usually leaves whole lines: this, not a cut line, is how most interrupted traces end."""
    last = max((i for i, r in enumerate(records) if r.get("kind") == "cmd"), default=-1)
    return any(r.get("kind") == "io" and r.get("dir") == "in" and "\r" in r.get("data", "")
               for r in records[last + 1:])


_PING_LINE = re.compile(r'\+QPING=\d+,"([^"]*)"', re.I)
_PING_REPLY = re.compile(r'\+QPING: 0,"([^"]+)",\d+,(\d+),\d+')


def _pings_cut_short(records: list[dict]) -> list[dict]:
    """"ping" records for the AT+QPING runs the trace has none of (one is written when a run
    ends: a trace cut short during one): the host's address and its first reply's time, from
    the reply URCs the recorded output holds after the command."""
    done = {r.get("host") for r in records if r.get("kind") == "ping"}
    output = "".join(r.get("data", "") for r in records if r.get("kind") == "io" and r.get("dir") == "out")
    made = []
    for r in records:
        m = _PING_LINE.search(r.get("line", "")) if r.get("kind") == "cmd" else None
        if m is None or m.group(1) in done or not isinstance(r.get("out"), int):
            continue
        first = output.find("+QPING: ", r["out"])           # the run's first line: a reply?
        reply = _PING_REPLY.match(output, first) if first >= 0 else None   # (565, 569: none)
        if reply is not None:
            made.append({"kind": "ping", "host": m.group(1), "address": reply.group(1),
                         "times": [int(reply.group(2))]})
            done.add(m.group(1))
    return made


def _stand_in_pings(router, records: list[dict]) -> None:
    """The round-trip times AT+QPING met (a `--ping` setting, the default, or the real
    network's): each pinged host answers the replay after its first recorded time; a host
    whose every request timed out never answers.  A pinged name resolves to the address the
    recording showed (unless the start record's DNS table has it already)."""
    decided: set[str] = set()
    for r in records + _pings_cut_short(records):
        host, times, address = r.get("host"), r.get("times"), r.get("address")
        if r.get("kind") != "ping" or not isinstance(host, str) or not isinstance(times, list):
            continue
        try:
            if isinstance(address, str) and not router.knows(host):
                try:
                    router.add_dns(host, address)
                except ValueError:
                    pass                         # (an IP literal was pinged: no entry needed)
            if host.lower() in decided:
                continue
            decided.add(host.lower())
            router.add_ping(host, times[0] if times else None)
        except (ValueError, TypeError):
            pass                                 # (a damaged record: the replay shows it)


def _utc(unix) -> datetime.datetime | None:
    """An aware datetime of a recorded Unix time; None for anything else (a damaged field)."""
    if isinstance(unix, bool) or not isinstance(unix, (int, float)):
        return None
    try:
        return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc)
    except (OverflowError, ValueError, OSError):
        return None


MAX_NTP_STAND_INS = 64      # one thread and socket each: a hand-made trace cannot exhaust fds


def _ntp_outcome(r: dict) -> tuple[int, datetime.datetime | None, float] | None:
    """(code, the server's time, offset) of a recorded AT+QNTP exchange that a stand-in can
    give again: an answer (0: its `server_time`, or for an older trace the offset against the
    replaying modem's clock) or none at all (569).  None: nothing to stand in for (565 and
    the rest need no server) or a damaged record."""
    code, offset = r.get("code"), r.get("offset", 0.0)
    if code == 569:
        return 569, None, 0.0
    if code != 0:
        return None
    given = _utc(r.get("server_time"))
    if given is not None:
        return 0, given, 0.0
    if isinstance(offset, bool) or not isinstance(offset, (int, float)) or not abs(offset) < 1e9:
        return None                              # (NaN fails the comparison too)
    return 0, None, float(offset)


def _stand_in_ntp(router, records: list[dict], modem_now, replayed: list) -> list:
    """An SNTP stand-in for each server AT+QNTP reached, giving each exchange the outcome it
    had, in order: the time the server gave then (`server_time`; a trace without it: the
    replaying modem's clock plus the offset recorded), or no answer at all (569).  Which
    exchange a request belongs to is told by the replaying modem's own `ntp` records so far
    (`replayed`, its trace): the k-th exchange with a server gets the k-th recorded outcome
    (past the last: the last).  Returns the servers (close them)."""
    from emulator.testing.peers.sntp import SntpServer

    outcomes: dict[tuple[str, int], list] = {}
    for r in records:
        server, port = r.get("server"), r.get("port", 123)
        if (r.get("kind") != "ntp" or not isinstance(server, str) or isinstance(port, bool)
                or not isinstance(port, int)):
            continue
        outcome = _ntp_outcome(r)
        if outcome is not None:
            outcomes.setdefault((server, port), []).append(outcome)
    servers = []
    for (server, port), recorded in list(outcomes.items())[:MAX_NTP_STAND_INS]:
        def finished(server=server, port=port) -> int:
            return sum(1 for x in list(replayed) if x.get("kind") == "ntp"
                       and x.get("server") == server and x.get("port") == port)

        try:
            stand_in = SntpServer(modem_now())
        except OSError as exc:                   # (out of descriptors: the rest go unanswered)
            log.warning("replay: no SNTP stand-in for %s:%d: %s", server, port, exc)
            break

        def respond(request: bytes, stand_in=stand_in, recorded=recorded, finished=finished) -> list[bytes]:
            code, when, offset = recorded[min(finished(), len(recorded) - 1)]
            if code != 0:
                return []                        # a server that never answered
            try:
                when = when or modem_now() + datetime.timedelta(seconds=offset)
                return [stand_in.reply(request, when=when)]
            except (ArithmeticError, ValueError):
                return []                        # (no time to give: as if unanswered)
        stand_in.respond = respond
        servers.append(stand_in)
        try:
            router.add_map(server, port, "127.0.0.1", stand_in.port)
        except ValueError:
            pass
    return servers


class _CommandWatch:
    """Compares the replay's command answers with the trace's as they come, so that the
    replay stops at the first one that differs (what follows would wait for answers that
    are not coming).  `records` is the replay's trace, growing on the loop thread."""

    def __init__(self, expected: list[dict], records: list, ignore: list[re.Pattern],
                 complete: bool) -> None:
        self.expected, self.records, self.ignore, self.complete = expected, records, ignore, complete
        self._scanned = 0
        self._got: list[dict] = []
        self._found = False
        # bytes the replay's answers took beyond the trace's (alike but for run-dependent
        # fields of another length: AT+QISEND=<id>,0's acked count): the output the host saw
        # before a chunk is that much more, or less, in the replay
        self.delta = 0

    def differs(self) -> bool:
        """True from the first command that differs on (it stays found)."""
        if not self._found:
            self._found = self._new_differ()
        return self._found

    def _new_differ(self) -> bool:
        start = len(self._got)
        end = len(self.records)
        self._got += [r for r in self.records[self._scanned:end] if r.get("kind") == "cmd"]
        self._scanned = end
        new = self._got[start:]
        if not self.complete:
            new = new[:max(0, len(self.expected) - start)]
        if not new:
            return False
        if start + len(new) > len(self.expected):
            return True                          # a command the trace does not have
        expected = self.expected[start:start + len(new)]
        if _compare_cmds(expected, new, self.ignore) is not None:
            return True
        self.delta += sum(len(_b(g["answer"])) - len(_b(e["answer"])) for g, e in zip(new, expected))
        return False


def replay_records(records: list[dict], profile: str | None = None, modem: int = 0,
                   ignore: list[re.Pattern] | None = None, out=None, max_gap: float | None = None,
                   scenario=None, complete: bool = True) -> int:
    """complete False: the recording was cut short (read_trace left its last line out):
    what the modem says beyond what was recorded is not a difference."""
    out = out or sys.stdout
    import tempfile

    import serial

    from emulator.io.app import BackgroundEmulator
    from emulator.sockets.service import ssl_service
    from emulator.sockets.tcpip import has_tcpip, tcpip_service

    ignore = ignore or []
    records = [r for r in records if r.get("modem", 0) == modem]
    start = next((r for r in records if r.get("kind") == "start"), {})
    profile = profile or start.get("profile") or "ec2x"
    chunks = [r for r in records if r.get("kind") == "io" and r["dir"] == "in"]
    # The host's side in order: its bytes, and its closing the port (the next program opens it).
    host_side = [r for r in records if r.get("kind") == "hangup" or (r.get("kind") == "io" and r["dir"] == "in")]
    expected_out = b"".join(_b(r["data"]) for r in records if r.get("kind") == "io" and r["dir"] == "out")
    expected_cmds = [r for r in records if r.get("kind") == "cmd"]
    writer = TraceWriter(None)
    with (tempfile.TemporaryDirectory(prefix="modem-replay-") as state, BackgroundEmulator(offline=True) as emu,
          contextlib.ExitStack() as stand_ins):
        tracer: list[ModemTrace] = []
        modems: list = []
        watch = _CommandWatch(expected_cmds, writer.records, ignore, complete)
        scripts = scripts_of(records)
        peer = ReplayPeer(scripts, lambda: tracer[0].in_total if tracer else 0,
                          # (the output as the trace counted it: less the answers' other lengths)
                          lambda: tracer[0].out_total - watch.delta if tracer else 0,
                          lambda server_id: _listening(modems[0], server_id) if modems else None,
                          lambda: tracer[0].hangups if tracer else 0,
                          lambda: tracer[0].received_total if tracer else 0,
                          lambda: tracer[0].handshakes if tracer else 0)
        peer.max_gap = max_gap
        peer.complete = complete
        peer.link_delay = lambda: _link_delay(modems[0]) if modems else 0.0
        emu.call(peer.start())
        for name, ip in (start.get("dns") or {}).items():
            emu.router.add_dns(name, ip)
        for name, ip in _dns_answers(records):   # what the recording's DNS answered (a real one)
            try:
                if not emu.router.knows(name):
                    emu.router.add_dns(name, ip)
            except ValueError:
                pass                             # (a damaged record: the replay shows it)
        _stand_in_pings(emu.router, records)
        for server in _stand_in_ntp(emu.router, records, lambda: (
                modems[0].clock.now() if modems else datetime.datetime.now(datetime.timezone.utc)),
                writer.records):
            stand_ins.callback(server.close)     # (closed however the replay ends)
        for host, host_port, stand_in in peer.routes:
            emu.router.add_map(host, host_port, "127.0.0.1", stand_in)
        for local_port in _listen_ports(records):      # any free port, not the recorded one
            emu.router.add_listen(local_port, "127.0.0.1", 0)
        write_state_files(Path(state), start.get("material") or {})
        port = emu.add_modem(profile, state_dir=Path(state), trace=writer)
        refused = frozenset(s.open_number for s in scripts if s.refused)
        dns_failed = frozenset(s.open_number for s in scripts if s.dns_failed)
        fail_at = {s.open_number: s.fail_at for s in scripts if s.fail_at}
        connect_at = {s.open_number: s.connect_at for s in scripts if s.connect_at}
        emu.run(port.modem.feature, "net_faults",
                lambda modem: _ReplayFaults(modem, refused, dns_failed, _lookups_failed(records),
                                            fail_at, peer.moment_reached, connect_at))
        modems.append(port.modem)
        tracer.append(port.modem.tracer)
        if scenario is not None:                 # the faults the trace was recorded with
            emu.run_scenario(scenario)
        emu.run(lambda: setattr(ssl_service(port.modem), "session_factory", ReplaySession))
        if has_tcpip(port.modem):
            emu.run(lambda: setattr(tcpip_service(port.modem), "session_factory",
                                    plain_sessions_for_replay(port.modem)))
        try:
            emu.run(restore_material, port.modem, start.get("material") or {})
        except Exception as exc:             # (a name this profile's file system refuses)
            print(f"replay: what the modem held at the start cannot be put back: {exc}", file=out)
        out_count = lambda: emu.run(lambda: tracer[0].out_total)   # noqa: E731
        in_count = lambda: emu.run(lambda: tracer[0].in_total)     # noqa: E731
        # as far as the host's own chunk: the output before it, and the plaintext the modem had
        # received before it (a buffer-mode read after data that came in pieces takes them all)
        progress = lambda: emu.run(lambda: (tracer[0].out_total, tracer[0].received_total,   # noqa: E731
                                            tracer[0].connects))
        received_before = _received_before(records)
        connects_before = _connects_before(records, scripts)

        def behind(r: dict) -> bool:
            """The replay is not yet as far as the recording was at host-side record r (its
            output, the plaintext it had received, the SSL connects made: a chunk recorded at
            the same time as a connect a manual clock jumped past comes after it)."""
            wrote, received, connects = progress()   # (watch.delta moves as answers are compared)
            return (wrote < r.get("out", 0) + watch.delta or received < received_before.get(id(r), 0)
                    or connects < connects_before.get(id(r), 0))

        ser = serial.Serial(port.path, 115200, timeout=0)
        ended = None                             # the replay's records where the recording ended
        try:
            last_t, last_sent = None, time.monotonic()
            read_target = None                   # the modem's in_total once it has read the last chunk
            patience = 10.0                      # for the output the host saw before this chunk
            for r in host_side:
                deadline = time.monotonic() + patience
                while behind(r) and time.monotonic() < deadline:
                    _drain(ser)
                    time.sleep(0.002)
                    if watch.differs():
                        break
                if watch.differs():
                    break                        # reported below; the rest would only wait
                if behind(r):
                    # The modem said less than recorded: a difference already, reported at the
                    # end; the later chunks need not wait 10 s each for output that is not coming.
                    patience = 1.0
                if read_target is not None and in_count() < read_target:
                    # Each "in" record is one read of the recording's modem: the next chunk
                    # waits until the replaying modem has read the last one, so it reads them
                    # apart as recorded.  On a loaded machine a modem that lags joined them
                    # into one read the recording never had -- a byte-by-byte host's late LF
                    # read together with its data is data (docs/behaviour.md, the late-LF
                    # rule), where the recording had it alone: the line's.
                    until = time.monotonic() + 1.0
                    while in_count() < read_target and time.monotonic() < until:
                        time.sleep(0.0002)
                    read_at = time.monotonic()
                else:
                    read_at = None
                if last_t is not None:
                    gap = r["t"] - last_t if max_gap is None else min(r["t"] - last_t, max_gap)
                    since = last_sent
                    if gap >= 0.1 and read_at is not None and r["kind"] == "io" and r.get("data", "").startswith("+"):
                        # (the silence before a "+++" is the modem's: it counts from when it
                        # READ the last chunk, which on a loaded machine comes later than the
                        # write -- a "+++" written 1.5 s after "defg" was read 0.9 s after it:
                        # data, not the recorded escape)
                        since = read_at
                    wait = gap - (time.monotonic() - since)
                    if wait > 0.02:              # guard times ("+++"), idle timeouts
                        time.sleep(wait)
                if r["kind"] == "hangup":
                    ser = _reopen(ser, emu, port)
                    read_target = None
                else:
                    data = _b(r["data"])
                    read_target = in_count() + len(data)
                    ser.write(data)
                    ser.flush()
                last_t, last_sent = r["t"], time.monotonic()
                peer.anchor = (last_t, last_sent)
            # the rest of the output, until it stops coming -- or, when the recording's last
            # output came later than a second after the host's last byte (a timer of the
            # modem's: an upload's inactivity, negotiatetime), until as long as that has passed
            tail = _output_tail(records, host_side)
            # A recording that says where it ended (its "stop" record) is compared as far as
            # that moment: output the modem wrote later (a timer's, a server's) it never saw.
            span = _stop_tail(records, host_side, max_gap)
            deadline, seen, quiet_since = time.monotonic() + 10 + tail, -1, time.monotonic()
            while not watch.differs() and time.monotonic() < deadline:
                _drain(ser)
                n = out_count()
                if n != seen:
                    seen, quiet_since = n, time.monotonic()
                if n >= len(expected_out) + watch.delta and span is not None and time.monotonic() - last_sent >= span:
                    ended = list(writer.records)
                    break
                if n >= len(expected_out) + watch.delta and time.monotonic() - quiet_since > 0.2:
                    break
                if time.monotonic() - quiet_since > 1.0 and time.monotonic() - last_sent > tail + 1.0:
                    break
                time.sleep(0.005)
        finally:
            emu.call(peer.host_done())
            ser.close()
        emu.call(peer.close())
        got = ended if ended is not None else list(writer.records)
    got_cmds = [r for r in got if r.get("kind") == "cmd"]
    got_out = b"".join(_b(r["data"]) for r in got if r.get("kind") == "io" and r["dir"] == "out")
    if not complete:
        got_cmds = got_cmds[:len(expected_cmds)]
    diff = (_compare_cmds(expected_cmds, got_cmds, ignore)
            or _compare_stream(expected_out, got_out, ignore, prefix=not complete))
    if diff is None and peer.differences:
        diff = peer.differences[0]
    if diff is not None:
        print(f"first difference: {diff}", file=out)
        done = [r for r in records if r.get("kind") == "control"]
        if done and scenario is None:
            t0 = records[0]["t"] if records else 0.0
            ops = ", ".join(f"{r.get('op')} at {r['t'] - t0:+.3f}s" for r in done[:5]) + (", ..." if len(done) > 5 else "")
            print(f"(the recording had control operations a replay does not repeat -- {ops}: give "
                  f"them as a --scenario to replay them too)", file=out)
        return 1
    print(f"replayed {len(expected_cmds)} commands, {sum(len(_b(r['data'])) for r in chunks)} host bytes: "
          "no difference", file=out)
    return 0


def _dns_answers(records: list[dict]) -> list[tuple[str, str]]:
    """(name, address) the recording's DNS gave: AT+QIDNSGIP's first address, the address an
    open's host was shown (open_result "shown"); names only, well-formed ones."""
    answers, dialled = [], {}
    for r in records:
        kind = r.get("kind")
        name = address = None
        if kind == "open":
            dialled[r.get("socket")] = r.get("host")
        elif kind == "dns" and r.get("code") == 0 and isinstance(r.get("addresses"), list) and r["addresses"]:
            name, address = r.get("host"), r["addresses"][0]
        elif kind == "open_result" and (r.get("code") == 0 or r.get("failure") == "connect"):
            name, address = dialled.get(r.get("socket")), r.get("shown")
        if (isinstance(name, str) and isinstance(address, str) and name.strip("[]") and not is_ip(name)
                and is_ip(address)):
            answers.append((name, address))
    return answers


def _lookups_failed(records: list[dict]) -> dict[str, frozenset[int]]:
    """A name -> the places, among its AT+QIDNSGIP lookups (the "dns" records), of those that
    failed (565: the name did not resolve then)."""
    count: dict[str, int] = {}
    failed: dict[str, set[int]] = {}
    for r in records:
        if r.get("kind") != "dns" or not isinstance(r.get("host"), str) or r.get("code") == 561:
            continue                             # (561: no lookup, the context was gone)
        key = r["host"].lower()
        count[key] = count.get(key, 0) + 1
        if r.get("code") == 565:
            failed.setdefault(key, set()).add(count[key])
    return {key: frozenset(places) for key, places in failed.items()}


def _received_before(records: list[dict]) -> dict[int, int]:
    """id(record) -> the plaintext bytes the modem had received before it from the servers a
    replay stands in for (a UDP SERVICE's are not: its data never come).  One count for the
    stand-ins' steps (scripts_of) and the host's chunks (replay_records)."""
    unreplayed: set = set()                      # the ids a UDP SERVICE holds now
    before, total = {}, 0
    for r in records:
        before[id(r)] = total
        kind = r.get("kind")
        if kind == "open":
            (unreplayed.add if r.get("type") == "UDP SERVICE" else unreplayed.discard)(r.get("socket"))
        elif kind == "received" and r.get("socket") not in unreplayed:
            total += len(r.get("data", ""))
    return before


def _connects_before(records: list[dict], scripts: list[Script]) -> dict[int, int]:
    """id(record) -> the connects the replay has made before it: the "connected" records
    scripts_of took for a socket's connect_at (one per TLS-over-TCP open -- a duplicated
    record, one before its open or for a socket never opened is no connect of the replay's,
    and a chunk waiting for it would go on a timer)."""
    made = {s.connect_record for s in scripts if s.connect_at}
    before, total = {}, 0
    for r in records:
        before[id(r)] = total
        if id(r) in made:
            total += 1
    return before


def _after_host(t: float, host_side: list[dict], max_gap: float | None) -> float:
    """Seconds from the host's last byte (or hang-up) to recorded time t (0: none after it),
    shortened to max_gap as the pauses between the host's bytes are."""
    span = max(0.0, t - host_side[-1]["t"]) if host_side else 0.0
    return span if max_gap is None else min(span, max_gap)


def _stop_tail(records: list[dict], host_side: list[dict], max_gap: float | None) -> float | None:
    """_after_host of the recording's end (its "stop" record); None: the trace does not say
    where it ended."""
    stop = next((r for r in reversed(records) if r.get("kind") == "stop"), None)
    return None if stop is None else _after_host(stop["t"], host_side, max_gap)


def _output_tail(records: list[dict], host_side: list[dict]) -> float:
    """_after_host of the recording's last output (0: no output) -- not shortened by --max-gap:
    what the modem wrote after the host's last byte came from its own timers (a ping's, an
    upload's inactivity), which take their whole time in the replay too (the wait ends as soon
    as the output is all there)."""
    last = next((r["t"] for r in reversed(records) if r.get("kind") == "io" and r["dir"] == "out"), None)
    return 0.0 if last is None else _after_host(last, host_side, None)


# -- replay: plain AT logs ---------------------------------------------------------------------
_FINALS = r"OK|ERROR|\+CME ERROR: [^\r\n]*|SEND OK|SEND FAIL|CONNECT|NO CARRIER"   # (a line's text)
FINAL = re.compile(rf"^({_FINALS})$")


_LOG_LINES = re.compile(r"\r\n|\r|\n")
_BOM = ("\xef\xbb\xbf", "\ufeff")          # UTF-8's byte order mark read as latin-1, or decoded


# Commands whose CONNECT starts the host's data (an upload, a transparent connection): in an
# ATV0 log their CONNECT is the result code 1.
_CONNECTING = re.compile(r"(?i)^\s*AT(O\d?\s*$|D|.*\+(QFUPL|QFWRITE|QSSLOPEN|QIOPEN|QISWTMD|QHTTPPOST|QHTTPPUT)\b)")


def _prompt_of(command: str, answers: list[str]) -> str | None:
    """">" or "CONNECT" when `answers` (of `command`) end at a data prompt, else None."""
    last = answers[-1] if answers else None
    if last in (">", "CONNECT"):
        return last
    if last == "1" and _CONNECTING.match(command):
        return "CONNECT"                     # (ATV0: V.250's result code 1)
    return None


# A terminal capture's command echo that URCs interrupted (the modem writes a URC at once,
# between the echoed characters: behaviour.md): "AT+CS" (or just "A"), CR LF framed lines
# that are not a final result, the next piece of the echo, ..., the last piece and its CR --
# a CR alone (its answer's CR LF after it): a whole echo is followed by CR CR LF, never by
# CR LF at once, unless the capture wrote every line with CR LF (then nothing here matches:
# its last piece would end in CR LF).  V1 only: an ATV0 modem writes a URC with no CR LF
# before it, so its text runs on from the echo's piece (README: a limit).
_URC_LINES = rf"(?:\r\n(?!(?:{_FINALS})\r\n)[^\r\n]+\r\n)+"
_TYPED_ACROSS = re.compile(rf"(?<![^\n])(?i:A)[^\r\n]*(?:{_URC_LINES}[^\r\n]+)+(?=\r(?!\n))"
                           rf"|(?<![^\n])(?i:A){_URC_LINES}/(?=\r\n)")   # (A/ runs at its "/": no CR)


def _typed_across_urcs(text: str) -> str:
    """The capture with each interrupted echo made whole, the URCs after it (in their order)."""
    def whole(m: re.Match) -> str:
        tokens = m[0].split("\r\n")        # echo, URC, ["", URC]..., piece, URC, ..., piece
        typed, urcs, urc_next = [tokens[0]], [], True
        for token in tokens[1:]:
            if urc_next:
                urcs.append(token)
                urc_next = False
            elif token == "":
                urc_next = True              # (the blank between two URCs' framing)
            else:
                typed.append(token)          # the next piece of the echo
                urc_next = True
        command = "".join(typed)
        if command[:2].upper() not in ("AT", "A/"):
            return m[0]                      # (not a command: an echoed payload's lines)
        return command + "".join(f"\r\n{u}\r\n" for u in urcs)
    return _TYPED_ACROSS.sub(whole, text)


def parse_at_log(text: str) -> list[tuple[str, list[str]]]:
    """[(what the host sent, [answer lines])]; a sent line after a ">" or CONNECT prompt (an
    ATV0 log's 1 after a command that connects) is
    data (sent as is, no CR; after ">" a Ctrl+Z follows if the modem waits for more), and so
    are the `>>` lines after it before the next answer: one payload, its lines joined by LF
    (at_log_payload gives it its line ends).  Lines end at CR or LF only (a payload's other
    bytes, 0x0b, 0x0c, 0x1c-0x1e, 0x85, are data); a byte order mark at the start is not.  In
    a terminal capture, a command whose echo URCs interrupted is the whole command, the URCs
    the first lines of its answer."""
    for bom in _BOM:
        if text.startswith(bom):
            text = text[len(bom):]
    steps: list[tuple[str, list[str]]] = []
    lines = _LOG_LINES.split(text)
    arrows = any(re.match(r"^\s*(>>|<<)", line) for line in lines)
    if not arrows:
        lines = _LOG_LINES.split(_typed_across_urcs(text))
    for line in lines:
        if arrows:
            m = re.match(r"^\s*(>>|<<) ?(.*)$", line)
            if not m:
                continue
            direction, body = m.groups()
            host = direction == ">>"
            if (host and len(steps) > 1 and not steps[-1][1]
                    and _prompt_of(*steps[-2])):
                steps[-1] = (steps[-1][0] + "\n" + body, [])    # the payload's next line
                continue
        else:                                    # a terminal capture: the modem echoes
            body = line.strip()
            if body[:1] == ">" and steps and not steps[-1][1]:
                steps[-1][1].append(">")         # "> " and the data typed after it, echoed
                if body[1:].strip():
                    steps.append((body[1:].strip(), []))
                continue
            if body and len(steps) > 1 and not steps[-1][1] and steps[-2][1][-1:] == [">"]:
                # the echoed payload's next line: up to the length its command gave (a line
                # that reads "OK" may be data), else up to a result
                size = _declared_length(steps[-2][0])
                so_far = len(steps[-1][0]) + steps[-1][0].count("\n") + 2   # (its lines end CR LF)
                if (so_far < size) if size is not None else not FINAL.match(body):
                    steps[-1] = (steps[-1][0] + "\n" + body, [])
                    continue
            host = bool(re.match(r"(?i)^A[T/]", body)) or bool(steps and _prompt_of(*steps[-1]))
        if host:
            steps.append((body, []))
        elif body.strip() and steps:
            steps[-1][1].append(body.strip())
    return steps


# Which parameter of a command that opens a data prompt is the payload's length (0-based).
_LENGTH_PARAM = {"+QFUPL": 1, "+QSSLSEND": 1, "+QISEND": 1, "+QFWRITE": 1, "+QSECWRITE": 1,
                 "+QHTTPPOST": 0, "+QHTTPPUT": 0}


def at_log_payload(command: str, data: str) -> bytes:
    """The bytes of a logged payload (its lines joined by LF by parse_at_log) as the host sent
    them: a log shows no line ends, so the ones whose total is the length the command gave
    (AT+QFUPL="f",<size>, AT+QSSLSEND=<id>,<len>: _LENGTH_PARAM) -- LF, CR LF or CR after
    each line, or between lines only; else one line as logged, lines with LF after each (a
    PEM file)."""
    lines = data.split("\n")
    candidates = [end.join(lines) + tail for end in ("\n", "\r\n", "\r") for tail in (end, "")]
    if len(lines) == 1:
        candidates.insert(0, data)
    size = _declared_length(command)
    if size is not None:
        for candidate in candidates:
            if len(candidate) == size:
                return _b(candidate)
    return _b(candidates[0])


def _declared_length(command: str) -> int | None:
    """The payload length a data prompt's command gave (_LENGTH_PARAM), None: none given."""
    # (a data prompt's command ends its line where it stands: the first prompt command of a
    # chain, "AT+CMEE=2;+QFUPL=..." as "AT+QFUPL=...;+CMEE=2", whose rest the modem never runs)
    at, rest = None, ""
    for part in re.findall(r'(?:"[^"]*"|[^;"])+', command.strip()):
        name, _, rest = part.strip().partition("=")
        name = name.upper()[2:] if name.upper().startswith("AT") else name.upper()
        at = _LENGTH_PARAM.get(name)
        if at is not None:
            break
    params = [x.strip() for x in re.findall(r'"[^"]*"|[^,]+', rest)]
    if at is not None and at < len(params) and params[at].isdigit():
        return int(params[at])
    return None


def _without(items: list[str], taken: list[str]) -> list[str]:
    """`items` less one occurrence of each of `taken` that it holds, in order."""
    rest = list(items)
    for x in taken:
        if x in rest:
            rest.remove(x)
    return rest


def replay_at_log(text: str, profile: str = "ec2x", out=None, scenario=None,
                  ignore: list[re.Pattern] | None = None) -> int:
    """A host's own AT log (`>> AT` / `<< OK` lines, a terminal capture): its lines written to a
    fresh modem, each answer compared line by line (text matching `ignore` is not compared, as
    for a trace)."""
    out = out or sys.stdout
    ignore = ignore or []
    import tempfile

    import serial

    from emulator.io.app import BackgroundEmulator

    steps = parse_at_log(text)
    if not steps:
        print("modem-emulator replay: no commands found (expected '>> AT...' / '<< OK' lines or a "
              "terminal capture)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="modem-replay-") as state, BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem(profile, state_dir=Path(state))
        if scenario is not None:
            emu.run_scenario(scenario)
        ser = serial.Serial(port.path, 115200, timeout=0)
        modem = port.modem
        # A restart's start-up URCs, which a host's log may not show (it logged answers only).
        boot = set(emu.run(lambda: modem.profile.get("defaults.boot_urcs", [])))

        def up() -> bool:
            """The module is on and its start-up is over (the SIM ready, every URC out) -- or
            AT+CFUN=0 switched its SIM off (nothing more comes until AT+CFUN=1 / 4)."""
            return emu.run(lambda: modem.powered and (modem.booted or (modem.sim_off and not modem.booting)))

        def split(buf: bytearray, sent: str) -> list[str]:
            lines = [x.strip() for x in buf.decode("latin-1").replace("\r", "\n").split("\n")]
            lines = [x for x in lines if x]
            echo = [x.strip() for x in sent.split("\n")]       # (a payload's: its lines)
            if lines[:len(echo)] == echo:
                lines = lines[len(echo):]    # the echo (E1)
            return lines

        def logged_later(n: int) -> set[str]:
            """Start-up URCs the log shows after a later step's final result, up to the next
            restart (before it, the text may be the command's own answer: +CPIN: READY)."""
            seen: set[str] = set()
            for later_sent, later_expected in steps[n:]:
                if _RESTART.search(later_sent):
                    break
                at = next((i for i, x in enumerate(later_expected) if FINAL.match(x)), None)
                if at is not None:
                    seen |= boot.intersection(later_expected[at + 1:])
            return seen

        carried: list[str] = []          # start-up URCs out at a restart, not logged with it
        starting = False                 # a restart's start-up may still be under way
        try:
            prompt = False
            command = ""
            for n, (sent, expected) in enumerate(steps, 1):
                starting = starting and not up()
                if prompt:
                    ser.write(at_log_payload(command, sent))
                else:
                    ser.write(_b(sent) + (b"" if sent.strip() in ("A/", "a/") else b"\r"))   # (A/: no CR)
                    command = sent
                if expected[:1] == [sent.strip()]:
                    expected = expected[1:]          # the log kept the modem's echo (E1)
                # A logger may put a start-up URC after the next command: what came out at the
                # restart is not waited for again (`least`), though the same text may be this
                # step's own answer (the ML302's +CPIN: READY).
                least = _without(expected, carried)
                if n == len(steps) and not expected:
                    # the log ends before this answer (the logger killed): as far as it goes
                    time.sleep(0.2)
                    break
                buf = bytearray()
                deadline = time.monotonic() + 10
                ctrl_z_at = time.monotonic() + 0.3 if prompt == ">" else None
                # an ATV0 log's result codes are digits: a line of one or two digits the step
                # logged ends it (its last line, or one start-up URCs follow)
                v0 = {x for x in expected if re.fullmatch(r"\d{1,2}", x)}

                def final(x: str) -> bool:
                    return bool(FINAL.match(x)) or x in v0
                # lines the log shows after the step's final result (URCs: AT+QPING's replies)
                # are waited for too, not only 20 ms
                after_final = any(final(x) for x in least[:-1])
                # a step that logged no final result (ATQ1: none are sent) ends once its lines came
                no_final = bool(least) and not any(final(x) for x in expected)
                def shown(buf: bytearray) -> list[str]:
                    # (while a start-up runs, its URCs the log does not show are not this step's)
                    lines = split(buf, sent)
                    return [x for x in lines if not (starting and x in boot and x not in expected)]
                while time.monotonic() < deadline:
                    n_wait = ser.in_waiting
                    if n_wait:
                        buf += ser.read(n_wait)
                    lines = shown(buf)
                    if ((expected and lines[-1:] == [">"] and buf.rstrip().endswith(b">")) or
                            any(final(x) for x in lines) or (no_final and len(lines) >= len(least))) \
                            and not (after_final and len(lines) < len(least)):
                        if not any(final(x) for x in expected) or any(final(x) for x in lines):
                            time.sleep(0.02)
                            buf += ser.read(ser.in_waiting or 0)
                            lines = shown(buf)
                            break
                    if ctrl_z_at is not None and time.monotonic() > ctrl_z_at:
                        ser.write(b"\x1a")           # a variable-length send ends with Ctrl+Z
                        ctrl_z_at = None
                    time.sleep(0.002)
                if not starting and not up():
                    # The step restarted the module (AT+CFUN=1,1) or switched it off (AT+QPOWD,
                    # on again by itself).  Its next line was answered, so the host waited: as
                    # far as the start-up URCs this step logged when later steps log others
                    # (they came after that line: a host polling the SIM), else to the start-up's
                    # end.  The URCs it did not record here are not compared.
                    starting = True
                    want = [x for x in expected if x in boot]
                    if logged_later(n):
                        def ready() -> bool:
                            return emu.run(lambda: modem.powered and not modem.booting
                                           and all(x in modem.boot_said for x in want))
                    else:
                        ready = up
                    until = time.monotonic() + 10
                    while not ready() and time.monotonic() < until:
                        time.sleep(0.005)
                    time.sleep(0.02)
                    buf += ser.read(ser.in_waiting or 0)
                    lines, logged = [], list(expected)
                    for x in split(buf, sent):
                        if x in boot and x not in logged:
                            carried.append(x)
                        else:
                            lines.append(x)
                            if x in logged:
                                logged.remove(x)
                got = [_norm(x, ignore) for x in lines]
                if got != [_norm(x, ignore) for x in expected] and got == [_norm(x, ignore) for x in least]:
                    # (the log's late start-up URCs: they came at the restart)
                    carried = _without(carried, _without(expected, least))
                    expected = least
                if got != [_norm(x, ignore) for x in expected]:
                    print(f"first difference: step {n} ({escape(_b(sent))}):\n"
                          f"  expected: {expected}\n  got:      {lines}", file=out)
                    return 1
                prompt = _prompt_of(sent, lines) or False
        finally:
            ser.close()
    print(f"replayed {len(steps)} lines: no difference", file=out)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0") from None
    if not value >= 0:                       # (NaN too)
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def replay_main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="modem-emulator replay",
                      description="drive a fresh modem with the host side of a trace or an AT log "
                                  "and report the first answer that differs (exit 1)")
    p.add_argument("file")
    p.add_argument("--profile", help="the profile to replay on (default: the trace's, else ec2x)")
    p.add_argument("--modem", type=int, help="which modem of a trace (index; default: its first)")
    p.add_argument("--max-gap", type=_seconds, metavar="SECONDS",
                   help="shorten the host's recorded pauses to at most this (default: keep them; "
                        "keep it above the guard time S12 when the trace has +++)")
    p.add_argument("--ignore", action="append", default=[], metavar="REGEX",
                   help="text matching REGEX is not compared (e.g. a local port); repeatable")
    p.add_argument("--scenario", metavar="FILE",
                   help="run this scenario file (emulator/tools/scenario.py) on the replaying modem: "
                        "the faults the field session met, so their answers replay too")
    args = p.parse_args(argv)
    from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile, resolve_profile_path
    from emulator.tools.scenario import ScenarioError, load_scenario
    try:
        with open(args.file, "rb") as f:      # (read once: a pipe gives its bytes only once)
            raw = f.read()
        text = raw.decode("latin-1")          # (its CRs as they are)
        ignore = [re.compile(x) for x in args.ignore]
        loaded = load_scenario(args.scenario) if args.scenario else None
        if args.profile is not None:
            load_profile(args.profile)           # a bad name: one line here, not a traceback later
    except (OSError, re.error, ScenarioError, ProfileError) as exc:
        print(f"modem-emulator replay: {exc}", file=sys.stderr)
        return 2
    try:
        if text.lstrip().startswith("{"):
            cut: list[str] = []

            def warn(text: str) -> None:
                cut.append(text)
                print(f"modem-emulator replay: {text}", file=sys.stderr)
            try:
                records = read_trace(args.file, warn=warn, data=raw)
                if args.modem is None:
                    # (the trace's first modem: 0, or the only one a process's later modem
                    # recorded in a trace file of its own -- the plugin's second modem)
                    indexes = sorted({r.get("modem", 0) for r in records
                                      if isinstance(r.get("modem", 0), int)}) or [0]
                    args.modem = indexes[0]
                    if len(indexes) > 1:         # (a --count trace: say which one is checked)
                        print(f"modem-emulator replay: {args.file} holds {len(indexes)} modems "
                              f"({', '.join(map(str, indexes))}): replaying modem {args.modem} "
                              "(--modem N replays another)", file=sys.stderr)
                mine = [r for r in records if r.get("modem", 0) == args.modem]
                if not mine:
                    raise ValueError(_missing_modem(args.file, records, args.modem))
                try:
                    scripts_of(mine)             # the network side: every field it needs is there
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(f"{args.file}: a record is damaged: {exc!r}") from None
                recorded_on = next((r.get("profile") for r in mine if r.get("kind") == "start"), None)
                if args.profile is None and recorded_on:
                    try:
                        # A trace records its profile's NAME: one naming a path is damaged (or
                        # planted), and reading it could block for ever (a FIFO, /dev/stdin).
                        if resolve_profile_path(recorded_on).parent != PROFILE_DIR:
                            raise ProfileError("not the name of a built-in profile")
                        load_profile(recorded_on)
                    except ProfileError as exc:
                        raise ValueError(f"{args.file} was recorded on profile {recorded_on!r}, which "
                                         f"cannot be loaded here: give it with --profile ({exc})") from None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                print(f"modem-emulator replay: {exc}", file=sys.stderr)
                return 2
            # (a --count run's scenario: the steps aimed at the replayed modem, on the replay's
            # one; a step aimed at a modem the trace does not have is a mistake, said so)
            scenario = None if loaded is None else loaded.for_modem(
                args.modem, {r.get("modem", 0) for r in records})
            return replay_records(records, args.profile, args.modem, ignore, max_gap=args.max_gap,
                                  scenario=scenario, complete=not cut and not _unanswered_at_end(mine)
                                  and not _event_unanswered_at_end(mine))
        scenario = None if loaded is None else loaded.for_modem(args.modem or 0)
        return replay_at_log(text, args.profile or "ec2x", scenario=scenario, ignore=ignore)
    except ScenarioError as exc:                 # a step's modem or command does not fit
        print(f"modem-emulator replay: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["show"]:
        return show_main(argv[1:])
    if argv[:1] == ["replay"]:
        return replay_main(argv[1:])
    print("usage: python -m emulator.tools.trace show FILE [--socket N] | replay FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    from emulator.tools.trace import main as _main   # the module, not this __main__ copy
    sys.exit(_main())
