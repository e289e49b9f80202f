"""make soak: the emulator under sustained abuse.  Prints its figures; exits 1 if a check fails.

Four parts, each against the emulator started as a user starts it (a subprocess of
`python -m emulator --offline --route ... --state-dir ...`), driven through the pty with pyserial:

  fuzz   fuzzed command lines (random bytes and grammar-built AT commands with wrong types,
         out-of-range and non-ASCII digits, unbalanced quotes, long lines; CR LF ended; some
         written one byte at a time), on an EC2x and an ML302.  Every grammar line must get
         exactly one final result, a probe (ATE0V1Q0...S7=<n>;&W;S7?) after every batch must answer,
         and the process must stay alive and stop with exit status 0.
  races  AT+QSSLOPEN immediately followed by AT+QSSLCLOSE against a loopback TLS echo server,
         alternating with AT+QIOPEN "TCP" / AT+QICLOSE against a plain echo server, in four
         timings; every command answered, no socket left, the emulator's fd count and RSS flat
         from the first hundred cycles to the end, no connection left at either server.
  kills  kill -9 of the emulator during AT+QFUPL (EC2x), AT+QSECWRITE (ML302) and AT&W (both),
         timed anywhere in the transfer or around its end; then a restart on the same state
         dir: the store holds the old or the new content, never a torn one, an unrelated
         file/slot is untouched, half-written temp files are gone after the restart, and the
         restarted modem answers with what the store holds.
  bulk   MiB through buffer mode (AT+QSSLSEND=0,1460 / AT+QSSLRECV=0,1500) to a TLS echo server;
         SHA-256 of what the host sent = what the server got, and of what the server sent =
         what the host read.

Sizes: --lines/--races/--kills/--mib or SOAK_LINES, SOAK_RACES, SOAK_KILLS, SOAK_MIB
(defaults 100000, 2000, 20 per kind, 64).  --parts fuzz,races picks parts.  --seed makes a
run repeatable (SOAK_SEED); the seed is printed.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import re
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import serial

ROOT = Path(__file__).resolve().parent.parent
FINAL = re.compile(rb"(?:^|\r\n)(OK|ERROR|\+CME ERROR: [^\r\n]*|SEND OK|SEND FAIL|NO CARRIER)\r\n")


class CheckFailed(Exception):
    pass


# -- the emulator process -------------------------------------------------------------
class EmulatorProcess:
    def __init__(self, profile: str, state_dir: Path, log_path: Path, routes=(), level="WARNING") -> None:
        args = [sys.executable, "-m", "emulator", "--profile", profile, "--offline",
                "--state-dir", str(state_dir), "--log-level", level]
        for route in routes:
            args += ["--route", route]
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self._log)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("/dev/"):
            self.proc.kill()
            raise CheckFailed(f"{profile}: no device path; log {log_path}")
        self.path = line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc.stdout.close()
        self._log.close()

    def stop(self) -> int:
        """SIGTERM; the exit status (0 expected)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.proc.stdout.close()
            self._log.close()

    def tracebacks(self) -> int:
        return self.log_path.read_bytes().count(b"Traceback")


# -- the host side: pyserial on the pty ------------------------------------------------
class Port:
    """pyserial opens and configures the device (raw, no flow control); reads and writes go
    through its fd with select so that neither side can stall the other."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.fd = self.ser.fileno()
        self.pending = bytearray()
        self.history: collections.deque = collections.deque(maxlen=40)   # ("w"/"r", bytes)

    def close(self) -> None:
        self.ser.close()

    def _note(self, kind: str, data: bytes) -> None:
        if self.history and self.history[-1][0] == kind and len(self.history[-1][1]) < 400:
            self.history[-1] = (kind, self.history[-1][1] + data[:400])
        else:
            self.history.append((kind, bytes(data[:400])))

    def transcript(self) -> str:
        return "\n".join(f"    {'host ->' if k == 'w' else 'modem ->'} {d!r}" for k, d in self.history)

    def _read_some(self, wait: float) -> None:
        if select.select([self.fd], [], [], wait)[0]:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            self.pending += data
            self._note("r", data)

    def write(self, data: bytes) -> None:
        self._note("w", data)
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                n = 0
            if view:
                r, _, _ = select.select([self.fd], [self.fd], [], 1)
                if r:
                    self._read_some(0)

    def write_bytewise(self, data: bytes) -> None:
        for i in range(len(data)):
            self.write(data[i:i + 1])

    def expect(self, pattern: re.Pattern, timeout: float = 10, what: str = "") -> re.Match:
        """Wait for pattern in pending; return the match (pending still holds everything).
        The match is on a snapshot: a match on the bytearray would change as it is consumed."""
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(bytes(self.pending))
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"no {what or pattern.pattern!r} within {timeout:.1f} s; "
                                  f"last bytes each way:\n{self.transcript()}")
            self._read_some(min(left, 0.5))

    def take(self, end: int) -> bytes:
        out = bytes(self.pending[:end])
        del self.pending[:end]
        return out

    def command(self, line: bytes, timeout: float = 10) -> bytes:
        """Send a line, return everything up to and including its final result."""
        self.write(line + b"\r")
        return self.take(self.expect(FINAL, timeout, f"final result for {line[:60]!r}").end())

    def settle(self, quiet: float = 0.05, limit: float = 2) -> bytes:
        """Read until nothing arrives for `quiet` seconds; return and drop it."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = len(self.pending)
            self._read_some(quiet)
            if len(self.pending) == before:
                break
        return self.take(len(self.pending))


# -- a loopback TLS echo server (asyncio in a thread) ------------------------------------
class EchoServer:
    """Echoes every byte; counts connections and hashes each direction."""

    def __init__(self, tls: bool = True) -> None:
        self.ctx = None                  # tls=False: a plain TCP echo (AT+QIOPEN sockets)
        if tls:
            import trustme
            ca = trustme.CA()
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ca.issue_cert("soak.example").configure_cert(self.ctx)
        self.loop = asyncio.new_event_loop()
        self.open = 0
        self.accepted = 0
        self.rx = hashlib.sha256()
        self.tx = hashlib.sha256()
        self.rx_bytes = 0
        self.hashing = False             # hash what passes while set (one connection at a time)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _start(self):
        return await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.ctx, backlog=256)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        self.accepted += 1
        try:
            while data := await reader.read(65536):
                if self.hashing:
                    self.rx.update(data)
                    self.tx.update(data)
                    self.rx_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 5)
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass

    def close(self) -> None:
        async def stop():
            self.server.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


# -- part 1: fuzz ----------------------------------------------------------------------
class Grammar:
    """AT command lines built from the profile's command table, with hostile parameters."""

    # V/Q would change result framing (random bytes still try them); AT+QPOWD switches the
    # module off until a control reboot, so nothing after it would be answered.
    SKIP = {"V", "Q", "+QPOWD"}

    def __init__(self, profile: str, rng: random.Random) -> None:
        from emulator.modem.profile import load_profile
        from emulator.sockets.context import OPTIONS
        self.rng = rng
        self.profile = profile
        self.names = [n for n in load_profile(profile).data["commands"] if n not in self.SKIP]
        self.options = list(OPTIONS) + ["clientcertex", "nosuch", ""]

    def number(self) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.55:
            return str(r.choice([0, 1, 2, 3, 4, 5, 6, 11, 12, 15, 16, 255, 256, 1460, 1461,
                                 1500, 1501, 16384, 65535, 65536, r.randrange(100000)])).encode()
        if choice < 0.65:
            return b"-" + str(r.randrange(1000)).encode()
        if choice < 0.75:
            return str(r.randrange(10 ** r.randrange(10, 30))).encode()
        if choice < 0.85:
            return r.choice([b"\xb2", b"\xc2\xb2", b"1\xb9", b"\xd9\xa3", b"\xef\xbc\x91", b"0x10",
                             b"1e3", b"+5", b" 7", b"1.5", b"", b"0X0035"])
        return bytes(r.choice(b"0123456789abcXYZ") for _ in range(r.randrange(1, 6)))

    def text(self) -> bytes:
        r = self.rng
        n = r.choice([0, 1, 3, 8, 20, 64, 200])
        alphabet = (b"abcdefghijklmnopqrstuvwxyz0123456789.:-_/\\*?,; " + bytes(range(0x80, 0x100)))
        body = bytes(r.choice(alphabet) for _ in range(n))
        choice = r.random()
        if choice < 0.7:
            return b'"' + body.replace(b'"', b"") + b'"'
        if choice < 0.8:
            return b'"' + body                               # unbalanced quote
        # Unquoted, a ';' would start another command: ";v" (V0) or ";q" (Q1) would change the
        # result framing this part reads by (SKIP); random bytes still try those.
        if choice < 0.9:
            return b'"' + body[: n // 2] + b'"' + body[n // 2:].replace(b";", b"") + b'"'
        return body.replace(b";", b"")

    def param(self) -> bytes:
        r = self.rng
        choice = r.random()
        if choice < 0.5:
            return self.number()
        if choice < 0.85:
            return self.text()
        if choice < 0.95:
            return b'"' + r.choice(["UFS:f1.pem", "RAM:f2", "f3.txt", "/caCrt.pem", "/clientCrt.pem",
                                    "www.iottest.work", "220.180.239.212", "127.0.0.1", "a..b",
                                    "."]).encode() + b'"'
        return b""

    def one(self) -> bytes:
        r = self.rng
        name = r.choice(self.names)
        form = r.random()
        if name == "S":
            reg = str(r.choice([0, 6, 7, 8, 10, 12, 1, 2, 9, 99, 256])).encode()
            return b"S" + reg + r.choice([b"?", b"=?", b"=" + self.number(), b""])
        if not name.startswith("+"):                          # E, I, Z, &F, &W, &C, &D
            return name.encode() + r.choice([b"", b"0", b"1", b"2", b"9", self.number()])
        head = name.encode()
        if form < 0.15:
            return head
        if form < 0.3:
            return head + b"?"
        if form < 0.45:
            return head + b"=?"
        if name == "+QSSLCFG":
            params = [b'"' + r.choice(self.options).encode() + b'"', self.number()]
            params += [self.param() for _ in range(r.randrange(0, 4))]
        elif name == "+QFUPL" and r.random() < 0.7:
            # well formed: the fuzzer answers CONNECT with exactly <size> bytes
            fname = r.choice(["RAM:", "UFS:", ""]) + f"fz{r.randrange(8)}"
            params = [f'"{fname}"'.encode(), str(r.randrange(1, 1025)).encode()]
            params += [str(r.choice([1, 2, 5])).encode()] if r.random() < 0.3 else []
        elif name in ("+QSECWRITE", "+QSECDEL", "+QSECREAD") and r.random() < 0.6:
            params = [str(r.randrange(3)).encode()]
        elif name in ("+QIACT", "+CGACT") and r.random() < 0.5:
            params = [b"1"] if name == "+QIACT" else [b"1,1"]
        elif name == "+QSSLOPEN" and r.random() < 0.5:
            host = r.choice([b'"www.iottest.work"', b'"127.0.0.1"', b'"a..b"', b'"."', b'"x' * 40 + b'"'])
            params = [b"1", str(r.randrange(6)).encode(), str(r.randrange(12)).encode(), host,
                      str(r.choice([443, 8010, 0, 65536])).encode(), str(r.randrange(3)).encode()]
        elif name == "+CFUN" and r.random() < 0.8:
            params = [r.choice([b"1", b"4", b"1,0", b"0"])]      # rebooting (1,1) now and then below
        else:
            params = [self.param() for _ in range(r.randrange(0, 7))]
        return head + b"=" + b",".join(params)

    def line(self) -> bytes:
        r = self.rng
        parts = [self.one() for _ in range(1 if r.random() < 0.8 else r.randrange(2, 4))]
        body = r.choice([b"AT", b"at", b"At"]) + b";".join(parts)
        if r.random() < 0.01:
            body += b'"' + b"x" * r.randrange(1900, 2300) + b'"'   # around the 2 KiB line limit
        return body


FINAL_OR_PROMPT = re.compile(FINAL.pattern + rb"|\r\n> $|(?:^|\r\n)CONNECT\r\n")


def fuzz_grammar_line(port: Port, line: bytes, bytewise: bool, stats: dict, rng: random.Random) -> None:
    (port.write_bytewise if bytewise else port.write)(line + b"\r\n")
    deadline = time.monotonic() + 20
    answered_prompt = False
    while True:
        m = port.expect(FINAL_OR_PROMPT, max(0.1, deadline - time.monotonic()),
                        f"final result for {line[:80]!r}")
        port.take(m.end())
        if FINAL.search(m.group(0)):
            stats["finals"] += 1
            stats["ok"] += m.group(0).endswith(b"OK\r\n") and b"SEND" not in m.group(0)
            return
        stats["prompts"] += 1
        if answered_prompt:
            continue
        answered_prompt = True
        if b"CONNECT" in m.group(0):
            upload = re.search(rb'QFUPL=("[^"]*"|[^,"]*)(?:,(\d+))?', line, re.I)
            if upload:                                      # upload: exactly <size> bytes
                port.write(b"x" * int(upload.group(2) or 10240))
            # QFDWL: the data and the result follow by themselves
        elif rng.random() < 0.5:                            # "> ": a certificate ended by Ctrl+Z
            port.write(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\x1a")
        else:                                               # or cancel, else fill and Ctrl+Z
            port.write(b"\x1b")
            try:
                m = port.expect(FINAL, 1.5)
                port.take(m.end())
                stats["finals"] += 1
                return
            except CheckFailed:
                port.write(b"y" * 1500 + b"\x1a")


def probe(port: Port, emu: EmulatorProcess, n: int, stats: dict, after: str) -> None:
    """The probe line must answer <n> (S7's value): the modem is alive and in command state.
    It also puts back, and saves with AT&W, the framing the fuzzer reads results by: random
    bytes may have sent ATV0 and then AT&W, which a later ATZ or reboot would bring back.
    `after`="grammar": nothing but URCs may precede it (no extra final result)."""
    k = n % 255 + 1
    port.write(PROBE % k + b"\r\n")
    marker = re.compile(rb"\r\n%03d\r\n\r\nOK\r\n" % k)
    try:
        m = port.expect(marker, 15, f"probe answer {k:03d}")
    except CheckFailed:
        if not emu.alive():
            raise CheckFailed(f"emulator died (exit {emu.proc.returncode}); log {emu.log_path}")
        raise
    before = port.take(m.end())[:m.start()]
    if after == "grammar" and FINAL.search(before):
        raise CheckFailed(f"extra final result before the probe: {before[-200:]!r}")
    stats["probes"] += 1


PROBE = b"ATE0V1Q0S3=13;S4=10;S5=8;S7=%d;&W;S7?"


def random_line(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 2, 5, 10, 30, 60, 120])
    if rng.random() < 0.3:      # lines that start like commands
        return rng.choice([b"AT", b"at", b"AT+", b"AT+Q", b"ATS", b"AT&"]) + rng.randbytes(n)
    return rng.randbytes(n)


def part_fuzz(work: Path, lines: int, rng: random.Random, figures: list) -> None:
    profiles = ["ec2x", "ml302"]
    for index, profile in enumerate(profiles):
        share = lines // len(profiles) + (lines % len(profiles) if index == 0 else 0)
        emu = EmulatorProcess(profile, work / f"fuzz-{profile}", work / f"fuzz-{profile}.log")
        port = Port(emu.path)
        grammar = Grammar(profile, rng)
        stats = dict(grammar=0, random=0, bytewise=0, finals=0, ok=0, prompts=0, probes=0, reboots=0)
        t0 = time.monotonic()
        probe_no = 0
        port.command(b"ATE0")
        try:
            sent = 0
            while sent < share:
                batch = min(rng.choice([10, 20, 40]), share - sent)
                if rng.random() < 0.5:
                    for _ in range(batch):
                        bytewise = rng.random() < 0.01
                        line = grammar.line()
                        if rng.random() < 0.002 and b"CFUN" not in line:
                            line = b"AT+CFUN=1,1"
                            stats["reboots"] += 1
                        fuzz_grammar_line(port, line, bytewise, stats, rng)
                        stats["grammar"] += 1
                        stats["bytewise"] += bytewise
                    probe(port, emu, probe_no, stats, "grammar")
                else:
                    for _ in range(batch):
                        data = random_line(rng) + b"\r\n"
                        if rng.random() < 0.01:
                            port.write_bytewise(data)
                            stats["bytewise"] += 1
                        else:
                            port.write(data)
                        stats["random"] += 1
                        if len(port.pending) > 1 << 20:
                            port.pending.clear()
                    probe(port, emu, probe_no, stats, "random")
                probe_no += 1
                sent += batch
                if not emu.alive():
                    raise CheckFailed(f"{profile}: emulator died")
        finally:
            port.close()
            status = emu.stop()
        elapsed = time.monotonic() - t0
        figures.append(f"fuzz {profile}: {stats['grammar'] + stats['random']} lines "
                       f"({stats['grammar']} grammar, each answered by one final result, "
                       f"{stats['ok']} of them OK; "
                       f"{stats['random']} random bytes; {stats['bytewise']} written byte by byte; "
                       f"{stats['reboots']} AT+CFUN=1,1), {stats['prompts']} data prompts answered, "
                       f"{stats['probes']} probes OK, exit status {status}, "
                       f"{emu.tracebacks()} tracebacks in the log, {elapsed:.0f} s")
        if status != 0:
            raise CheckFailed(f"fuzz {profile}: exit status {status} after SIGTERM")
        if emu.tracebacks():
            raise CheckFailed(f"fuzz {profile}: tracebacks (unforeseen exceptions) in {emu.log_path}")


# -- part 2: open/close races -----------------------------------------------------------------
OPENED = re.compile(rb"\+QSSLOPEN: (\d+),(-?\d+)\r\n")
TCP_OPENED = re.compile(rb"\+QIOPEN: (\d+),(-?\d+)\r\n")
# The races' two socket kinds: (open line with %d for the id, close line, its open URC).
RACE_KINDS = (
    (b'AT+QSSLOPEN=1,1,%d,"soak.example",4433,0\r', b"AT+QSSLCLOSE=%d\r", OPENED),
    (b'AT+QIOPEN=1,%d,"TCP","soak-tcp.example",4434,0,0\r', b"AT+QICLOSE=%d\r", TCP_OPENED),
)


def part_races(work: Path, races: int, rng: random.Random, figures: list) -> None:
    server, plain = EchoServer(), EchoServer(tls=False)
    emu = EmulatorProcess("ec2x", work / "races", work / "races.log",
                          routes=[f"soak.example:4433=127.0.0.1:{server.port}",
                                  f"soak-tcp.example:4434=127.0.0.1:{plain.port}"])
    port = Port(emu.path)
    outcomes: dict[str, int] = {}
    seen = bytearray()                       # every answer, for the +QSSLOPEN URC tally
    first = last = None
    peak_fds = 0
    t0 = time.monotonic()
    try:
        port.command(b"ATE0")
        port.command(b"AT+QIACT=1")
        for i in range(races):
            cid = i % 12
            timing = i % 4
            open_form, close_form, opened_urc = RACE_KINDS[(i // 4) % 2]
            open_line, close_line = open_form % cid, close_form % cid
            if timing == 0:                       # both lines in one write
                port.write(open_line + close_line)
                opened = port.take(port.expect(FINAL, 15, "QSSLOPEN result").end())
            else:
                port.write(open_line)
                opened = port.take(port.expect(FINAL, 15, "QSSLOPEN result").end())
                if timing == 2:
                    time.sleep(rng.random() * 0.03)
                elif timing == 3 and b"OK" in opened:
                    port.expect(opened_urc, 15, "open URC")
                port.write(close_line)
            closed = port.take(port.expect(FINAL, 30, "QSSLCLOSE result").end())
            if b"OK" not in closed:
                raise CheckFailed(f"race {i}: {close_line.strip().decode()} answered {closed!r}")
            seen.extend(opened + closed)
            key = "open OK" if b"OK" in opened else "open " + opened.strip().decode(errors="replace")
            outcomes[key] = outcomes.get(key, 0) + 1
            if i == min(99, races - 1):
                port.settle(0.2)
                first = (emu.fds(), emu.rss_kib())
            if i % 50 == 0:
                peak_fds = max(peak_fds, emu.fds())
            if not emu.alive():
                raise CheckFailed("races: emulator died")
        # what came in as URCs: each open reported once at most
        seen.extend(port.settle(0.3))
        state = port.command(b"AT+QSSLSTATE") + port.command(b"AT+QISTATE")
        if b"STATE:" in state:
            raise CheckFailed(f"races: sockets left after closing all: {state!r}")
        time.sleep(1.0)
        last = (emu.fds(), emu.rss_kib())
        server_open = server.open + plain.open
    finally:
        port.close()
        status = emu.stop()
        server.close()
        plain.close()
    elapsed = time.monotonic() - t0
    urcs: dict[str, int] = {}
    for _, code in OPENED.findall(bytes(seen)) + TCP_OPENED.findall(bytes(seen)):
        urcs[code.decode()] = urcs.get(code.decode(), 0) + 1
    figures.append(f"races: {races} open+close (AT+QSSLOPEN/QSSLCLOSE and AT+QIOPEN/QICLOSE by turns) "
                   f"in {elapsed:.0f} s; outcomes {outcomes}; open URCs by <err> {urcs} "
                   f"(the others closed before they reported); "
                   f"servers accepted {server.accepted} TLS + {plain.accepted} TCP, still open {server_open}; "
                   f"fds {first[0]} -> {last[0]} (peak {peak_fds}); RSS {first[1]} -> {last[1]} KiB; "
                   f"exit status {status}, {emu.tracebacks()} tracebacks in the log")
    if sum(urcs.values()) > races:
        raise CheckFailed(f"races: {sum(urcs.values())} open URCs for {races} opens")
    if last[0] > first[0] + 2:
        raise CheckFailed(f"races: fd count grew {first[0]} -> {last[0]}")
    rss_margin = max(4096, first[1] // 10)
    if last[1] > first[1] + rss_margin:
        raise CheckFailed(f"races: RSS grew {first[1]} -> {last[1]} KiB (margin {rss_margin})")
    if server_open:
        raise CheckFailed(f"races: {server_open} connections still open at the server")
    if status != 0:
        raise CheckFailed(f"races: exit status {status}")
    if emu.tracebacks():
        raise CheckFailed(f"races: tracebacks (unforeseen exceptions) in {emu.log_path}")


# -- part 3: kill -9 during writes ---------------------------------------------------------------
PACE = 1_000_000            # bytes/s the host writes store data at (a fast UART)
CHUNK = 1024


def write_and_kill(port: Port, emu: EmulatorProcess, data: bytes, rng: random.Random,
                   rate: int = PACE) -> None:
    """Write `data` at `rate` and kill -9 the emulator at a random moment: a third of the
    runs anywhere in the transfer, the rest around its end (from 2 ms before the last byte
    to 10 ms after it), where the store is written.  The kill comes from this thread at
    the chosen time, so thread start-up adds no jitter."""
    last = (max(len(data) - 1, 0) // CHUNK) * CHUNK / rate      # when the last chunk goes
    if rng.random() < 1 / 3:
        kill_at = rng.uniform(0, last + 0.001)
    else:
        kill_at = rng.uniform(max(0.0, last - 0.002), last + 0.010)
    t0 = time.monotonic()
    for i in range(0, len(data), CHUNK):
        if time.monotonic() - t0 >= kill_at:
            break
        port.write(data[i:i + CHUNK])
        ahead = min(t0 + (i + CHUNK) / rate, t0 + kill_at) - time.monotonic()
        if ahead > 0.001:
            time.sleep(ahead - 0.0005)
    while time.monotonic() - t0 < kill_at:          # spin the last bit: ms precision
        pass
    emu.proc.send_signal(signal.SIGKILL)


def _upload(port: Port, name: str, data: bytes) -> bytes:
    port.write(b'AT+QFUPL="%s",%d\r' % (name.encode(), len(data)))
    port.take(port.expect(re.compile(rb"CONNECT\r\n"), 10, "CONNECT").end())
    port.write(data)
    return port.take(port.expect(FINAL, 20).end())


def _secwrite(port: Port, slot: int, data: bytes) -> bytes:
    port.write(b"AT+QSECWRITE=%d\r" % slot)
    port.take(port.expect(re.compile(rb"> "), 10, "> ").end())
    port.write(data + b"\x1a")
    return port.take(port.expect(FINAL, 20).end())


def _restart(profile: str, state: Path, log: Path) -> tuple[EmulatorProcess, Port]:
    emu = EmulatorProcess(profile, state, log)
    port = Port(emu.path)
    port.settle(0.05, 0.5)
    if b"OK" not in port.command(b"ATE0"):
        raise CheckFailed(f"{profile} restarted on {state} does not answer")
    return emu, port


def temp_files(state: Path) -> list[Path]:
    """Half-written files (emulator.storage.atomic_file's temp names) in a state dir."""
    from emulator.storage.atomic_file import TEMP_PREFIX
    return [p for p in state.rglob("*") if p.name.startswith(TEMP_PREFIX)]


def _kills_done(emu, port, what: str, runs: int, counts: dict, old: str) -> str:
    """Stop the last restart cleanly and say how the kills of one command ended."""
    port.close()
    status = emu.stop()
    if status != 0:
        raise CheckFailed(f"{what} kills: exit status {status}")
    return (f"{what} {runs} kills: {counts['old']} old ({old}), {counts['new']} new, 0 torn; "
            f"{counts['temp']} half-written temp files found after a kill, none after the restart")


def _no_temp_left(state: Path, what: str) -> None:
    left = temp_files(state)
    if left:
        raise CheckFailed(f"{what}: temp files still there after the restart: {left}")


def kills_qfupl(work: Path, runs: int, rng: random.Random) -> str:
    state, log = work / "kill-qfupl", work / "kill-qfupl.log"
    ufs = state / "ufs"
    emu, port = _restart("ec2x", state, log)
    bystander = rng.randbytes(5000)
    _upload(port, "UFS:keep.bin", bystander)
    old: bytes | None = None
    counts = {"old": 0, "new": 0, "temp": 0}
    for run in range(runs):
        new = rng.randbytes(rng.choice([20_000, 100_000, 300_000]))
        port.command(b'AT+QFDEL="UFS:soak.bin"')           # the module refuses to overwrite
        old = None
        port.write(b'AT+QFUPL="UFS:soak.bin",%d,5\r' % len(new))
        port.expect(re.compile(rb"CONNECT\r\n"), 10, "CONNECT")
        port.take(len(port.pending))
        write_and_kill(port, emu, new, rng)
        port.close()
        emu.kill9()
        counts["temp"] += len(temp_files(state))
        files = {p.name for p in ufs.iterdir()}
        content = (ufs / "soak.bin").read_bytes() if "soak.bin" in files else None
        if content not in (old, new):
            raise CheckFailed(f"QFUPL kill {run}: soak.bin torn ({len(content)} bytes, "
                              f"old {None if old is None else len(old)}, new {len(new)})")
        if (ufs / "keep.bin").read_bytes() != bystander:
            raise CheckFailed(f"QFUPL kill {run}: an unrelated file changed")
        counts["new" if content == new else "old"] += 1
        emu, port = _restart("ec2x", state, log)
        listing = port.command(b"AT+QFLST")
        want = b'+QFLST: "soak.bin",%d' % len(new) if content == new else None
        if (want is not None and want not in listing) or (want is None and b"soak.bin" in listing) \
                or b"tmp" in listing:
            raise CheckFailed(f"QFUPL kill {run}: AT+QFLST after restart: {listing!r}")
        _no_temp_left(state, f"QFUPL kill {run}")
    return _kills_done(emu, port, "AT+QFUPL", runs, counts, "absent")


def kills_qsecwrite(work: Path, runs: int, rng: random.Random) -> str:
    from emulator.storage.secstore import SecStore
    state, log = work / "kill-qsecwrite", work / "kill-qsecwrite.log"
    emu, port = _restart("ml302", state, log)
    pem = lambda n: b"-----BEGIN CERTIFICATE-----\n" + bytes(  # noqa: E731
        rng.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\n") for _ in range(n)
    ) + b"\n-----END CERTIFICATE-----\n"
    bystander = pem(1200)
    port.command(b"AT+QSECDEL=0")
    _secwrite(port, 0, bystander)
    counts = {"old": 0, "new": 0, "temp": 0}
    for run in range(runs):
        new = pem(rng.choice([1000, 6000, 15000]))
        port.command(b"AT+QSECDEL=1")                      # a filled slot must be deleted first
        port.write(b"AT+QSECWRITE=1\r")
        port.expect(re.compile(rb"> "), 10, "> ")
        port.take(len(port.pending))
        write_and_kill(port, emu, new + b"\x1a", rng, PACE // 10)
        port.close()
        emu.kill9()
        counts["temp"] += len(temp_files(state))
        store = SecStore(state)
        filled, content = store.is_filled(1), store.load(1)
        if filled and content != new:
            raise CheckFailed(f"QSECWRITE kill {run}: slot 1 torn (filled, content "
                              f"{'undecryptable' if content is None else len(content)})")
        if store.load(0) != bystander:
            raise CheckFailed(f"QSECWRITE kill {run}: slot 0 changed")
        counts["new" if filled else "old"] += 1
        emu, port = _restart("ml302", state, log)
        answer = port.command(b"AT+QSECREAD=1")
        if filled != (b"+QSECREAD: 1," in answer):
            raise CheckFailed(f"QSECWRITE kill {run}: AT+QSECREAD=1 after restart: {answer!r}")
        _no_temp_left(state, f"QSECWRITE kill {run}")
    return _kills_done(emu, port, "AT+QSECWRITE", runs, counts, "empty")


def kills_atw(work: Path, runs: int, rng: random.Random, profile: str) -> str:
    state, log = work / f"kill-atw-{profile}", work / f"kill-atw-{profile}.log"
    path = state / "settings.json"
    emu, port = _restart(profile, state, log)
    port.command(b"AT&W")
    old = json.loads(path.read_text())
    counts = {"old": 0, "new": 0, "temp": 0}
    for run in range(runs):
        s7, s10, cmee = rng.randrange(1, 256), rng.randrange(1, 255), rng.randrange(3)
        port.command(b"ATS7=%d;S10=%d;+CMEE=%d" % (s7, s10, cmee))
        write_and_kill(port, emu, b"AT&W\r", rng)
        port.close()
        emu.kill9()
        counts["temp"] += len(temp_files(state))
        try:
            saved = json.loads(path.read_text())
        except ValueError as exc:
            raise CheckFailed(f"AT&W kill {run}: settings.json torn: {exc}") from None
        expect_new = dict(old, sreg={**old["sreg"], "7": s7, "10": s10}, cmee=cmee)
        if saved not in (old, expect_new):
            raise CheckFailed(f"AT&W kill {run}: settings.json is neither old nor new: {saved}")
        counts["new" if saved == expect_new else "old"] += 1
        emu, port = _restart(profile, state, log)
        answer = port.command(b"ATS7?;S10?;+CMEE?")
        want = b"%03d\r\n\r\n%03d\r\n\r\n+CMEE: %d" % (saved["sreg"]["7"], saved["sreg"]["10"], saved["cmee"])
        if want not in answer:
            raise CheckFailed(f"AT&W kill {run}: after restart {answer!r}, file says {saved}")
        _no_temp_left(state, f"AT&W kill {run}")
        old = saved
    port.close()
    status = emu.stop()
    if status != 0:
        raise CheckFailed(f"AT&W kills: exit status {status}")
    warnings = log.read_bytes().count(b"saved settings")
    if warnings:
        raise CheckFailed(f"AT&W kills: {warnings} warnings about the saved settings in {log}")
    return (f"AT&W ({profile}) {runs} kills: {counts['old']} old, {counts['new']} new, 0 torn; "
            f"{counts['temp']} half-written temp files found after a kill, none after the restart")


def part_kills(work: Path, runs: int, rng: random.Random, figures: list) -> None:
    t0 = time.monotonic()
    figures.append(kills_qfupl(work, runs, rng))
    figures.append(kills_qsecwrite(work, runs, rng))
    figures.append(kills_atw(work, (runs + 1) // 2, rng, "ec2x"))
    figures.append(kills_atw(work, runs // 2, rng, "ml302"))
    figures.append(f"kills: {time.monotonic() - t0:.0f} s")


# -- part 4: bulk through buffer mode ------------------------------------------------------------------
RECV = re.compile(rb"\r\n\+QSSLRECV: (\d+)\r\n")


def receive(port: Port, sink, ending: bytes = b"\r") -> int:
    """AT+QSSLRECV=0,1500 until a short read; each piece to sink(bytes); how many bytes."""
    got = 0
    while True:
        port.write(b"AT+QSSLRECV=0,1500" + ending)
        m = port.expect(RECV, 10, "+QSSLRECV")
        n = int(m.group(1))
        port.take(m.end())
        while len(port.pending) < n:
            port._read_some(1)
        sink(port.take(n))
        port.take(port.expect(FINAL, 10, "QSSLRECV OK").end())
        got += n
        if n < 1500:
            return got


def drain_raw(port: Port) -> bytes:
    out = bytearray()
    receive(port, out.extend)
    return bytes(out)


def lf_first(port: Port) -> str | None:
    """A host that ends its lines with CR alone (as the manuals write them) and sends a payload
    whose first byte is LF, as soon as "> " shows: the LF is data, not the end of the line."""
    port.settle(0.05, 0.5)
    drain_raw(port)
    port.write(b"AT+QSSLSEND=0,5\r")
    port.take(port.expect(re.compile(rb"> "), 10, "> ").end())
    port.write(b"\nABCD")
    try:
        port.take(port.expect(re.compile(rb"\r\nSEND OK\r\n"), 2, "SEND OK").end())
    except CheckFailed:
        port.write(b"Z")                                     # let the prompt finish
        port.settle(0.2, 2)
        drain_raw(port)
        return ("bulk: a CR-only host's 5-byte payload starting with LF got no SEND OK: the LF "
                "was taken as the late LF of the command line's CR (issue 9 item 1's window)")
    time.sleep(0.2)
    echoed = drain_raw(port)
    if echoed != b"\nABCD":
        return f"bulk: a payload starting with LF came back as {echoed!r}"
    return None


def part_bulk(work: Path, mib: int, rng: random.Random, figures: list) -> None:
    server = EchoServer()
    emu = EmulatorProcess("ec2x", work / "bulk", work / "bulk.log",
                          routes=[f"soak.example:4433=127.0.0.1:{server.port}"])
    port = Port(emu.path)
    total = mib << 20
    sent_hash, recv_hash = hashlib.sha256(), hashlib.sha256()
    sent = received = fails = 0
    seed = rng.randbytes(1 << 16)
    t0 = time.monotonic()

    def drain() -> int:
        nonlocal received
        got = receive(port, recv_hash.update, b"\r\n")
        received += got
        return got

    try:
        port.command(b"ATE0")
        port.command(b"AT+QIACT=1")
        port.command(b'AT+QSSLOPEN=1,1,0,"soak.example",4433,0')
        m = port.expect(OPENED, 15, "+QSSLOPEN")
        if m.group(2) != b"0":
            raise CheckFailed(f"bulk: open failed {m.group(0)!r}")
        port.take(m.end())
        lf_problem = lf_first(port)                  # this host has ended lines with CR only so far
        server.hashing = True
        t0 = time.monotonic()
        since_drain = 0
        while sent < total:
            off = sent % len(seed)
            chunk = (seed[off:] + seed)[:min(1460, total - sent)]
            port.write(b"AT+QSSLSEND=0,%d\r\n" % len(chunk))        # CR LF: see lf_first()
            port.take(port.expect(re.compile(rb"> "), 10, "> ").end())
            port.write(chunk)
            result = port.take(port.expect(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"), 10,
                                           "SEND OK").end())
            if b"SEND OK" in result:
                sent_hash.update(chunk)
                sent += len(chunk)
                since_drain += len(chunk)
            elif b"SEND FAIL" in result:
                fails += 1
                drain()
                since_drain = 0
                continue
            else:
                raise CheckFailed(f"bulk: AT+QSSLSEND answered {result!r}")
            if since_drain >= 12 * 1460:
                drain()
                since_drain = 0
        deadline = time.monotonic() + 60
        while received < total and time.monotonic() < deadline:
            if not drain():
                time.sleep(0.01)
        up_done = time.monotonic() - t0
        server.hashing = False
        port.command(b"AT+QSSLCLOSE=0")
        time.sleep(0.2)
    finally:
        port.close()
        status = emu.stop()
        server.close()
    mb = total / 1e6
    figures.append(f"bulk: {mib} MiB up and back in {up_done:.0f} s ({mb / up_done:.2f} MB/s each way), "
                   f"{fails} SEND FAIL retried; host sent sha256 {sent_hash.hexdigest()[:16]}… "
                   f"= server received {server.rx.hexdigest()[:16]}… ({server.rx_bytes} bytes); "
                   f"server sent {server.tx.hexdigest()[:16]}… = host read {recv_hash.hexdigest()[:16]}… "
                   f"({received} bytes); exit status {status}")
    if sent_hash.digest() != server.rx.digest() or server.rx_bytes != total:
        raise CheckFailed("bulk: what the server received differs from what the host sent")
    if recv_hash.digest() != server.tx.digest() or received != total:
        raise CheckFailed("bulk: what the host read differs from what the server sent")
    if status != 0:
        raise CheckFailed(f"bulk: exit status {status}")
    if lf_problem:
        raise CheckFailed(lf_problem)


# -- main --------------------------------------------------------------------------------------------------
PARTS = {"fuzz": part_fuzz, "races": part_races, "kills": part_kills, "bulk": part_bulk}


def main(argv: list[str] | None = None) -> int:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0],
                                epilog="Each option's default comes from the environment when set: SOAK_PARTS, "
                                       "SOAK_LINES, SOAK_RACES, SOAK_KILLS, SOAK_MIB, SOAK_SEED.")
    p.add_argument("--parts", default=env("SOAK_PARTS", ",".join(PARTS)))
    p.add_argument("--lines", type=int, default=int(env("SOAK_LINES", 100_000)))
    p.add_argument("--races", type=int, default=int(env("SOAK_RACES", 2000)))
    p.add_argument("--kills", type=int, default=int(env("SOAK_KILLS", 20)))
    p.add_argument("--mib", type=int, default=int(env("SOAK_MIB", 64)))
    p.add_argument("--seed", type=int, default=int(env("SOAK_SEED", random.randrange(1 << 32))))
    p.add_argument("--keep", action="store_true", help="keep the work dir (state dirs and logs)")
    args = p.parse_args(argv)
    sizes = {"fuzz": args.lines, "races": args.races, "kills": args.kills, "bulk": args.mib}
    work = Path(tempfile.mkdtemp(prefix="modem-soak-"))
    print(f"soak: seed {args.seed}; work dir {work}", flush=True)
    failed = []
    for name in args.parts.split(","):
        if name not in PARTS:
            p.error(f"unknown part {name!r} (known: {', '.join(PARTS)})")
        figures: list[str] = []
        rng = random.Random(f"{args.seed}-{name}")
        try:
            PARTS[name](work, sizes[name], rng, figures)
            verdict = "ok"
        except CheckFailed as exc:
            verdict = f"FAILED: {exc}"
            failed.append(name)
        except Exception as exc:                   # the emulator vanished mid-write, ...
            verdict = f"FAILED: {type(exc).__name__}: {exc}"
            failed.append(name)
        for line in figures:
            print(f"  {line}", flush=True)
        print(f"{name}: {verdict}", flush=True)
    if failed:
        print(f"soak: FAILED ({', '.join(failed)}); logs in {work}", flush=True)
        return 1
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("soak: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
