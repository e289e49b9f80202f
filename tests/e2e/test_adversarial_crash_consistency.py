"""Adversarial CRASH CONSISTENCY of the --state-dir: the modem-emulator process is killed
(SIGKILL, and SIGTERM / SIGINT) at seeded random points -- after N bytes of a data phase, at
a random byte of a whole command stream, during start-up -- and restarted on the SAME
--state-dir, as field users do.  What test_adversarial_cli_lifecycle.py and
test_hardening_cli.py do not already do (they cover one kill -9 in one upload, a second
emulator on the very same path, planted symlink locks, full and read-only disks):

EC2x files
* AT+QFUPL (ack mode, so the kill lands after the modem took exactly N bytes) cut at seeded
  byte counts, right after CONNECT, and with every byte sent but the answer unread: the file
  is absent or whole, the files committed before are intact;
* AT+QFOPEN / QFSEEK / QFWRITE / QFTUCAT cut in their data at seeded points over several
  kill/restart rounds: the file is exactly what the last acknowledged write made;
* a seeded mixed workload (uploads to UFS and RAM, QFDEL, QFMOV rename / copy / RAM->UFS,
  QFWRITE, QFOPEN mode 1, QFTUCAT, AT&W) killed at a random byte of its byte stream: after the
  restart the state is the model's state before the cut command or after it, nothing else;
  the old host keeps the dead modem's pty open across the restart (the new start takes its
  link over), and once the lock files name a live, unrelated pid;
* three modems of one --count 3 process killed while each is inside its own upload;
after every restart: AT+QFLST sizes = AT+QFDWL bytes = AT+QFOPEN/QFREAD bytes, the +QFDWL
checksum is the XOR of the bytes read, AT+QFLDS free/used/count agree with the listing, RAM is
empty, nothing but the modem's files is listed, the ufs/ directory holds exactly them and no
"..tmp-" file once the file system is up;
ML302 certificate store
* AT+QSECDEL / QSECWRITE / AT&W workload killed at a random byte (inside the certificate,
  right after "> ", with Ctrl+Z sent but the answer unread, before the first device key
  exists): every slot is empty (+CME ERROR: 22) or "+QSECREAD: 1,<XOR of what was written>";
start-up and locks
* SIGKILL / SIGTERM / SIGINT at seeded moments of start-up while a host keeps opening the
  link, with a crashed writer's temp files planted: the next start works and keeps everything;
* SIGKILL just before a seeded sample of the start-up's own state-changing os calls (the CLI
  run with os.mkdir/open/ftruncate/pwrite/symlink/... counted, SIGSTOP at the n-th, then
  SIGKILL), the dead pty's number then taken by another program: the next start works;
* a second live emulator through a symlink to the first one's state dir: refused, the first
  finishes its AT+QFWRITE undisturbed;
* xfail (BUG): a SIGKILL between making the --link and writing its pid into the link's lock
  blocks every later start once another program has that pty number; temp files of a crashed writer are not removed "at the next start" as the
  README says (only when the file system / cert store is first used; never for the EC2x's
  secstore/); a SIGINT or SIGTERM while the CLI still imports its modules ends it with
  -2 / KeyboardInterrupt traceback or -15, not the README's exit 0 "at any moment of start-up".
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, start
from tests.e2e.socket_support import wait_for

SEED = 0x5EED_C0DE
TEMP = "..tmp-"
FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")
CONNECT_OR_FINAL = re.compile(rb"\r\nCONNECT\r\n|" + FINAL.pattern)
NO_PLUS = bytes(b for b in range(256) if b != ord("+"))   # "+++" could end an AT+QFUPL early


def payload(rng: random.Random, n: int) -> bytes:
    return bytes(rng.choice(NO_PLUS) for _ in range(n))


def pem_like(rng: random.Random, n: int) -> bytes:
    """Certificate-ish text: no Ctrl+Z / ESC (they end AT+QSECWRITE's data)."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n-"
    return b"-----BEGIN CERTIFICATE-----\r\n" + bytes(rng.choice(alphabet) for _ in range(n))


# -- the process ---------------------------------------------------------------------------------
class Emu:
    """One `python -m emulator --offline --state-dir S --link L` process (stderr in a file)."""

    runs = 0

    def __init__(self, tmp: Path, state: Path, *args: str, count: int = 1, link: str | None = None) -> None:
        Emu.runs += 1
        self.log_path = tmp / f"emulator-{Emu.runs}.log"
        self._log = open(self.log_path, "w")
        self.link = link or str(tmp / ("modem-{n}" if count > 1 else "modem"))
        self.proc = start("--offline", "--state-dir", str(state), "--link", self.link,
                          "--log-level", "INFO", *args, stderr=self._log)
        self.paths = [self.proc.stdout.readline().strip() for _ in range(count)]
        expected = [self.link.format(n=n) for n in range(count)] if count > 1 else [self.link]
        if self.paths != expected:
            self.proc.kill()
            raise AssertionError(f"no start: {self.paths!r}; log:\n{self.log()[-3000:]}")
        self.hosts: list[Host] = []

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def host(self, n: int = 0) -> Host:
        host = Host(self.paths[n])
        self.hosts.append(host)
        assert host.at("ATE0").endswith(b"OK\r\n")
        return host

    def end(self, sig: int, close_hosts: bool = True) -> None:
        """Send `sig`, wait for the exit: SIGKILL -9; SIGTERM / SIGINT a clean exit 0."""
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(20)
        finally:
            self.proc.kill()
        if close_hosts:
            self.close_hosts()
        log = self.log()
        self._log.close()
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL
        else:
            assert rc == 0, f"exit {rc} after {signal.Signals(sig).name}; log:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-4000:]

    def close_hosts(self) -> None:
        for host in self.hosts:
            host.close()
        self.hosts.clear()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close_hosts()
        if not self._log.closed:
            self._log.close()


@pytest.fixture
def emus(tmp_path):
    started: list[Emu] = []

    def make(state: Path, *args: str, **kw) -> Emu:
        emu = Emu(tmp_path, state, *args, **kw)
        started.append(emu)
        return emu
    yield make
    for emu in started:
        emu.kill()


# -- reading the state back through the AT interface ---------------------------------------------
LISTED = re.compile(rb'\+QFLST: "([^"\r\n]*)",(\d+)\r\n')


def qfread_all(host: Host, name: str, size: int) -> bytes:
    opened = host.at(f'AT+QFOPEN="{name}",2')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", opened).group(1))
    host.write(f"AT+QFREAD={handle}\r")
    if size == 0:
        assert host.read_until(FINAL) == b"\r\n+CME ERROR: 402\r\n"
        data = b""
    else:
        count = int(host.read_until(re.compile(rb"\r\nCONNECT (\d+)\r\n")).split(b" ")[-1])
        assert count == size, (name, count, size)
        data = host.read_exactly(count)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert host.at(f"AT+QFCLOSE={handle}") == b"\r\nOK\r\n"
    return data


def observe_ufs(host: Host, ufs_dir: Path) -> dict[str, bytes]:
    """UFS as the host sees it, every way of looking agreeing; RAM empty (just restarted)."""
    listing = host.at("AT+QFLST")
    assert listing.endswith(b"\r\nOK\r\n"), listing
    entries = [(n.decode(), int(s)) for n, s in LISTED.findall(listing)]
    assert len(entries) == listing.count(b"+QFLST:"), listing
    files: dict[str, bytes] = {}
    for name, size in entries:
        assert TEMP not in name and not name.startswith("."), listing
        host.write(f'AT+QFDWL="{name}"\r')
        assert host.read_until(CONNECT_OR_FINAL) == b"\r\nCONNECT\r\n", name
        data = host.read_exactly(size)
        tail = host.read_until(FINAL)
        assert tail == f"\r\n+QFDWL: {size},{xor16(data):x}\r\n\r\nOK\r\n".encode(), (name, tail)
        assert qfread_all(host, name, size) == data, name
        files[name] = data
    used = sum(len(d) for d in files.values())
    free, total = map(int, re.fullmatch(rb"\r\n\+QFLDS: (\d+),(\d+)\r\n\r\nOK\r\n",
                                        host.at('AT+QFLDS="UFS"')).groups())
    assert free == total - used
    assert host.at("AT+QFLDS") == f"\r\n+QFLDS: {used},{len(files)}\r\n\r\nOK\r\n".encode()
    assert host.at('AT+QFLST="RAM:*"') == b"\r\nOK\r\n"
    ram_free, ram_total = map(int, re.search(rb"(\d+),(\d+)", host.at('AT+QFLDS="RAM"')).groups())
    assert ram_free == ram_total
    on_disk = {p.name: p.read_bytes() for p in ufs_dir.iterdir()} if ufs_dir.is_dir() else {}
    assert on_disk == files, sorted(on_disk)          # (no temp file left once UFS is up)
    return files


def observe_s7(host: Host) -> int:
    return int(re.fullmatch(rb"\r\n(\d{3})\r\n\r\nOK\r\n", host.at("ATS7?")).group(1))


# -- a command stream that can be cut at any byte ----------------------------------------------
@dataclass
class Op:
    line: bytes                       # the command line, CR included
    data: bytes | None                # what follows CONNECT / "> " (None: no data phase)
    answer: bytes | re.Pattern        # the final answer when it runs whole
    apply: Callable[[dict], dict]     # the model after it
    prompt: bytes = b"\r\nCONNECT\r\n"

    @property
    def wire(self) -> int:
        return len(self.line) + len(self.data or b"")


def run_whole(host: Host, op: Op) -> None:
    host.write(op.line)
    if op.data is not None:
        assert host.read_until(re.compile(re.escape(op.prompt) + b"|" + FINAL.pattern)) == op.prompt, op.line
        host.write(op.data)
    got = host.read_until(FINAL)
    if isinstance(op.answer, bytes):
        assert got == op.answer, (op.line, got)
    else:
        assert op.answer.fullmatch(got), (op.line, got)


def run_cut(host: Host, op: Op, n: int) -> bool:
    """The op's first n bytes; True when every byte of it went (it may or may not have run)."""
    if n < len(op.line):
        host.write(op.line[:n])
        return False
    host.write(op.line)
    if op.data is None:
        return True
    assert host.read_until(re.compile(re.escape(op.prompt) + b"|" + FINAL.pattern)) == op.prompt, op.line
    host.write(op.data[:n - len(op.line)])
    return n == op.wire


def drive_and_cut(host: Host, ops: list[Op], model: dict, cut: int) -> list[dict]:
    """Run ops whole until byte `cut` of the stream falls in one: cut it there.  The states
    the restart may show: before that op, or after it too when all its bytes went."""
    for op in ops:
        if cut >= op.wire and cut != op.wire:
            run_whole(host, op)
            model = op.apply(model)
            cut -= op.wire
            continue
        whole = run_cut(host, op, cut)
        return [model, op.apply(model)] if whole else [model]
    return [model]


def edge_cut(rng: random.Random, ops: list[Op], model: dict) -> int:
    """A cut just after the last byte of a command that changes the state (its answer
    unread): the kill races the commit."""
    ends, total = [], 0
    for op in ops:
        total += op.wire
        if after_restart(op.apply(model)) != after_restart(model):
            ends.append(total)
        model = op.apply(model)
    return rng.choice(ends or [total])


def with_(model: dict, **changes) -> dict:
    new = dict(model)
    for key, value in changes.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    return new


# -- EC2x ---------------------------------------------------------------------------------------
HANDLE = 1027            # profiles/ec2x.toml files.first_handle; one file open at a time here


def qfupl(name: str, data: bytes, ack: bool = False) -> Op:
    return Op(f'AT+QFUPL="{name}",{len(data)},60{",1" if ack else ""}\r'.encode(), data,
              f"\r\n+QFUPL: {len(data)},{xor16(data):x}\r\n\r\nOK\r\n".encode(),
              lambda m: with_(m, **{name: data}))


def ec2x_ops(rng: random.Random, model: dict, count: int) -> list[Op]:
    """A seeded workload on UFS names a-d and RAM:r, generated against the model."""
    ops: list[Op] = []
    names = ["a.bin", "b.pem", "c.key", "d.bin"]
    for _ in range(count):
        present = sorted(n for n in model if not n.startswith("&"))
        ufs = [n for n in present if not n.startswith("RAM:")]
        absent = [n for n in names if n not in model]
        kind = rng.choice(["upload", "upload", "write", "write", "delete", "move", "copy",
                           "ram_move", "empty", "truncate", "atw"])
        if kind == "upload" and absent or kind != "atw" and not ufs:
            name = rng.choice(absent or names)
            if name in model:
                ops.append(Op(f'AT+QFDEL="{name}"\r'.encode(), None, b"\r\nOK\r\n",
                              lambda m, name=name: with_(m, **{name: None})))
                model = ops[-1].apply(model)
            op = qfupl(name, payload(rng, rng.randrange(1, 4000)))
        elif kind == "write":
            name = rng.choice(ufs)
            old = model[name]
            pos = rng.randrange(len(old) + 1)
            data = payload(rng, rng.randrange(1, 2500))
            new = old[:pos] + data + old[pos + len(data):]
            ops += [Op(f'AT+QFOPEN="{name}",0\r'.encode(), None, f"\r\n+QFOPEN: {HANDLE}\r\n\r\nOK\r\n".encode(),
                       lambda m: m),
                    Op(f"AT+QFSEEK={HANDLE},{pos}\r".encode(), None, b"\r\nOK\r\n", lambda m: m)]
            for op in ops[-2:]:
                model = op.apply(model)
            op = Op(f"AT+QFWRITE={HANDLE},{len(data)},60\r".encode(), data,
                    f"\r\n+QFWRITE: {len(data)},{len(new)}\r\n\r\nOK\r\n".encode(),
                    lambda m, name=name, new=new: with_(m, **{name: new}))
            ops.append(op)
            model = op.apply(model)
            op = Op(f"AT+QFCLOSE={HANDLE}\r".encode(), None, b"\r\nOK\r\n", lambda m: m)
        elif kind == "truncate":
            name = rng.choice(ufs)
            pos = rng.randrange(len(model[name]) + 1)
            for op in (Op(f'AT+QFOPEN="{name}",0\r'.encode(), None, re.compile(rb"\r\n\+QFOPEN: \d+\r\n\r\nOK\r\n"),
                          lambda m: m),
                       Op(f"AT+QFSEEK={HANDLE},{pos}\r".encode(), None, b"\r\nOK\r\n", lambda m: m),
                       Op(f"AT+QFTUCAT={HANDLE}\r".encode(), None, b"\r\nOK\r\n",
                          lambda m, name=name, pos=pos: with_(m, **{name: m[name][:pos]}))):
                ops.append(op)
                model = op.apply(model)
            op = Op(f"AT+QFCLOSE={HANDLE}\r".encode(), None, b"\r\nOK\r\n", lambda m: m)
        elif kind == "empty":                 # QFOPEN mode 1 empties the file at once
            name = rng.choice(ufs)
            ops.append(Op(f'AT+QFOPEN="{name}",1\r'.encode(), None, f"\r\n+QFOPEN: {HANDLE}\r\n\r\nOK\r\n".encode(),
                          lambda m, name=name: with_(m, **{name: b""})))
            model = ops[-1].apply(model)
            op = Op(f"AT+QFCLOSE={HANDLE}\r".encode(), None, b"\r\nOK\r\n", lambda m: m)
        elif kind == "delete":
            name = rng.choice(ufs)
            op = Op(f'AT+QFDEL="{name}"\r'.encode(), None, b"\r\nOK\r\n", lambda m, name=name: with_(m, **{name: None}))
        elif kind in ("move", "copy"):
            src = rng.choice(ufs)
            dst = rng.choice([n for n in names if n != src])
            copy = kind == "copy"
            op = Op(f'AT+QFMOV="{src}","{dst}",{int(copy)},1\r'.encode(), None, b"\r\nOK\r\n",
                    lambda m, s=src, d=dst, c=copy: with_(m, **{d: m[s], s: m[s] if c else None}))
        elif kind == "ram_move":
            data = payload(rng, rng.randrange(1, 3000))
            dst = rng.choice(names)
            ops.append(qfupl("RAM:r.bin", data))
            model = ops[-1].apply(model)
            op = Op(f'AT+QFMOV="RAM:r.bin","{dst}",0,1\r'.encode(), None, b"\r\nOK\r\n",
                    lambda m, d=dst: with_(m, **{d: m["RAM:r.bin"], "RAM:r.bin": None}))
        else:
            value = rng.randrange(256)
            op = Op(f"ATS7={value};&W\r".encode(), None, b"\r\nOK\r\n", lambda m, v=value: with_(m, **{"&S7": v}))
        ops.append(op)
        model = op.apply(model)
    return ops


def ec2x_state(host: Host, state: Path) -> dict:
    seen: dict = dict(observe_ufs(host, state / "ufs"))
    seen["&S7"] = observe_s7(host)
    return seen


def after_restart(model: dict) -> dict:
    return {k: v for k, v in model.items() if not k.startswith("RAM:")}


def matching(seen: dict, candidates: list[dict], what: str) -> dict:
    allowed = [after_restart(c) for c in candidates]
    if seen in allowed:
        return seen
    raise AssertionError(f"{what}: state after the restart is none of the allowed ones:\n"
                         f"seen {describe(seen)}\nallowed {[describe(a) for a in allowed]}")


def describe(model: dict) -> dict:
    return {k: (len(v), xor16(v)) if isinstance(v, bytes) else v for k, v in sorted(model.items())}


def test_qfupl_cut_at_seeded_byte_counts_keeps_nothing_or_the_whole_file(tmp_path, emus):
    """Ack mode: after each 1024-byte block the modem writes "A", so when the kill comes it
    has taken at least the blocks acknowledged.  Cut points: right after CONNECT, inside
    blocks, on a block edge, one byte short, and every byte sent with the answer unread."""
    rng = random.Random(SEED)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    kept = payload(rng, 1500)
    run_whole(host, qfupl("kept.bin", kept))
    size = 5000
    cuts = [0, 1024, size - 1, size] + sorted(rng.sample(range(1, size), 4))
    signals = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT,
               signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]
    expected = {"kept.bin": kept}
    for i, (cut, sig) in enumerate(zip(cuts, signals)):
        name, data = f"up{i}.bin", payload(rng, size)
        host.write(f'AT+QFUPL="{name}",{size},60,1\r')
        host.read_until(b"\r\nCONNECT\r\n")
        sent = 0
        while sent < cut:
            block = min(1024, cut - sent)
            host.write(data[sent:sent + block])
            sent += block
            if sent % 1024 == 0 and sent < size:
                assert host.read_exactly(1) == b"A"
        emu.end(sig)
        emu = emus(state)
        host = emu.host()
        seen = observe_ufs(host, state / "ufs")
        if cut == size and name in seen:
            expected[name] = data                 # every byte went: it may have committed
        assert seen == expected, (i, cut, signal.Signals(sig).name, describe(seen))
    emu.end(signal.SIGTERM)


def test_qfwrite_cut_in_its_data_keeps_what_the_last_acknowledged_write_made(tmp_path, emus):
    """Rounds on one state dir: a few whole AT+QFWRITEs (inside the file, across its end,
    after a QFTUCAT), then one cut at a seeded byte of its data (0: right after CONNECT) and
    a kill; the restart shows exactly the last acknowledged content."""
    rng = random.Random(SEED + 1)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    content = payload(rng, 3000)
    run_whole(host, qfupl("f.bin", content))
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGKILL):
        run_whole(host, Op(b'AT+QFOPEN="f.bin",0\r', None, f"\r\n+QFOPEN: {HANDLE}\r\n\r\nOK\r\n".encode(), None))
        for step in range(rng.randrange(1, 4)):
            pos = rng.randrange(len(content) + 1)
            data = payload(rng, rng.randrange(1, 1500))
            run_whole(host, Op(f"AT+QFSEEK={HANDLE},{pos}\r".encode(), None, b"\r\nOK\r\n", None))
            if step == 1:
                run_whole(host, Op(f"AT+QFTUCAT={HANDLE}\r".encode(), None, b"\r\nOK\r\n", None))
                content = content[:pos]
            content = content[:pos] + data + content[pos + len(data):]
            run_whole(host, Op(f"AT+QFWRITE={HANDLE},{len(data)},60\r".encode(), data,
                               f"\r\n+QFWRITE: {len(data)},{len(content)}\r\n\r\nOK\r\n".encode(), None))
        pos = rng.randrange(len(content) + 1)
        length = rng.randrange(2, 2000)
        cut = rng.choice([0, rng.randrange(1, length)])
        run_whole(host, Op(f"AT+QFSEEK={HANDLE},{pos}\r".encode(), None, b"\r\nOK\r\n", None))
        host.write(f"AT+QFWRITE={HANDLE},{length},60\r")
        host.read_until(b"\r\nCONNECT\r\n")
        host.write(payload(rng, cut))
        emu.end(sig)
        emu = emus(state)
        host = emu.host()
        seen = observe_ufs(host, state / "ufs")
        assert seen == {"f.bin": content}, (signal.Signals(sig).name, cut, describe(seen))
    emu.end(signal.SIGTERM)


def test_mixed_file_workload_killed_at_a_random_byte_restarts_before_or_after_the_cut_command(
        tmp_path, emus):
    """Seeded rounds on one state dir.  Each round: the state seen after the restart must be
    the model's before the command the cut fell in, or after it when all its bytes went;
    then a new workload from there.  In some rounds the old host keeps the dead modem's pty
    open through the restart (its number cannot be reused: the link is taken over through its
    lock), and once both lock files are made to name a live process that is no emulator."""
    rng = random.Random(SEED + 2)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    model: dict = {"&S7": observe_s7(host)}
    held: list[Host] = []
    plan = [(signal.SIGKILL, "random"), (signal.SIGKILL, "edge"), (signal.SIGTERM, "random"),
            (signal.SIGKILL, "random"), (signal.SIGINT, "edge"), (signal.SIGKILL, "edge"),
            (signal.SIGKILL, "random")]
    for rnd, (sig, where) in enumerate(plan):
        ops = ec2x_ops(rng, model, 8)
        cut = edge_cut(rng, ops, model) if where == "edge" else rng.randrange(sum(op.wire for op in ops) + 1)
        candidates = drive_and_cut(host, ops, model, cut)
        keep_open = sig == signal.SIGKILL and rnd % 2 == 0
        old_target = os.readlink(emu.link)
        if keep_open:
            emu.hosts.remove(host)
            held.append(host)
        emu.end(sig)
        if rnd == 5:                  # pid reuse: the dead emulator's pid now names a live process
            for lock in (state / ".lock", tmp_path / ".modem.lock"):
                assert lock.read_text().strip().isdigit()
                lock.write_text(f"{os.getpid()}\n")
        emu = emus(state)
        if keep_open:
            assert os.readlink(emu.link) != old_target      # the held pts is still in use
        host = emu.host()
        model = matching(ec2x_state(host, state), candidates,
                         f"round {rnd}, cut at byte {cut}, {signal.Signals(sig).name}")
        for old in held:
            old.close()
        held.clear()
    emu.end(signal.SIGTERM)


def test_three_modems_of_one_process_killed_inside_their_uploads(tmp_path, emus):
    """--count 3: modem 0 cut right after CONNECT, modem 1 in the middle, modem 2 with every
    byte sent and the answer unread, all at once by one SIGKILL; each had a committed file.
    The restart with --count 3 shows each modem its own whole files only."""
    rng = random.Random(SEED + 3)
    state = tmp_path / "st"
    emu = emus(state, "--count", "3", count=3)
    hosts = [emu.host(n) for n in range(3)]
    committed = []
    for n, host in enumerate(hosts):
        data = payload(rng, 800 + n)
        run_whole(host, qfupl(f"mine{n}.bin", data))
        committed.append({f"mine{n}.bin": data})
    cuts = [0, rng.randrange(1, 6000), 6000]
    bodies = [payload(rng, 6000) for _ in range(3)]
    for host in hosts:
        host.write('AT+QFUPL="new.bin",6000,60\r')
    for host, cut, body in zip(hosts, cuts, bodies):
        host.read_until(b"\r\nCONNECT\r\n")
        host.write(body[:cut])
    emu.end(signal.SIGKILL)
    emu = emus(state, "--count", "3", count=3)
    for n in range(3):
        seen = observe_ufs(emu.host(n), state / str(n) / "ufs")
        allowed = [committed[n]] + ([{**committed[n], "new.bin": bodies[n]}] if n == 2 else [])
        assert seen in allowed, (n, describe(seen))
    emu.end(signal.SIGTERM)


# -- ML302 certificate store -----------------------------------------------------------------
def ml302_state(host: Host) -> dict:
    seen: dict = {}
    for slot in range(3):
        answer = host.at(f"AT+QSECREAD={slot}")
        if answer == b"\r\n+CME ERROR: 22\r\n":
            continue
        good, checksum = re.fullmatch(rb"\r\n\+QSECREAD: ([01]),([0-9a-f]{4})\r\n\r\nOK\r\n", answer).groups()
        assert good == b"1", (slot, answer)
        seen[f"slot{slot}"] = int(checksum, 16)
    seen["&S7"] = observe_s7(host)
    return seen


def ml302_ops(rng: random.Random, model: dict, count: int) -> list[Op]:
    ops: list[Op] = []
    for _ in range(count):
        slot = rng.randrange(3)
        key = f"slot{slot}"
        if rng.random() < 0.15:
            value = rng.randrange(256)
            op = Op(f"ATS7={value};&W\r".encode(), None, b"\r\nOK\r\n", lambda m, v=value: with_(m, **{"&S7": v}))
        elif key in model:
            op = Op(f"AT+QSECDEL={slot}\r".encode(), None, b"\r\nOK\r\n", lambda m, k=key: with_(m, **{k: None}))
        else:
            data = pem_like(rng, rng.randrange(50, 3000))
            op = Op(f"AT+QSECWRITE={slot}\r".encode(), data + b"\x1a",
                    f"\r\n+QSECWRITE: {len(data)},{xor16(data):04x}\r\n\r\nOK\r\n".encode(),
                    lambda m, k=key, c=xor16(data): with_(m, **{k: c}), prompt=b"\r\n> ")
        ops.append(op)
        model = op.apply(model)
    return ops


def test_ml302_store_killed_at_a_random_byte_holds_empty_or_whole_slots(tmp_path, emus):
    """Round 0 cuts the very first AT+QSECWRITE (no device key yet); then seeded cuts of a
    QSECDEL / QSECWRITE / AT&W stream.  After every restart each slot is empty or
    "+QSECREAD: 1,<the XOR of what was written>"; the store holds no temp file."""
    rng = random.Random(SEED + 4)
    state = tmp_path / "st"
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    model: dict = {"&S7": observe_s7(host)}
    for rnd, (sig, where) in enumerate([(signal.SIGKILL, "first"), (signal.SIGKILL, "edge"),
                                        (signal.SIGKILL, "prompt"), (signal.SIGTERM, "random"),
                                        (signal.SIGKILL, "edge"), (signal.SIGINT, "random"),
                                        (signal.SIGKILL, "random")]):
        ops = ml302_ops(rng, model, 6)
        writes = [i for i, op in enumerate(ops) if op.prompt == b"\r\n> "]
        at = writes[0] if writes else len(ops) - 1
        before = sum(op.wire for op in ops[:at])
        if where == "first":                     # inside the first write (no device key yet)
            cut = before + rng.randrange(len(ops[at].line), ops[at].wire)
        elif where == "prompt":                  # right after "> "
            cut = before + len(ops[at].line)
        elif where == "edge":
            cut = edge_cut(rng, ops, model)
        else:
            cut = rng.randrange(sum(op.wire for op in ops) + 1)
        if rnd == 0:
            assert not (state / "secstore" / "device.key").exists()
        candidates = drive_and_cut(host, ops, model, cut)
        emu.end(sig)
        emu = emus(state, "--profile", "ml302")
        host = emu.host()
        model = matching(ml302_state(host), candidates, f"round {rnd}, cut {cut}, {signal.Signals(sig).name}")
        leftovers = [p.name for p in (state / "secstore").iterdir()
                     if p.name != "device.key" and not re.fullmatch(r"slot[0-2]\.bin", p.name)]
        assert leftovers == []
        slots = sorted(p.name for p in (state / "secstore").glob("slot*.bin"))
        assert slots == sorted(f"{k}.bin" for k in model if k.startswith("slot"))
    emu.end(signal.SIGTERM)


# -- start-up and locks ------------------------------------------------------------------------
def test_kills_at_seeded_moments_of_start_up_never_stop_the_next_start(tmp_path, emus):
    """A state with files and AT&W settings and a crashed writer's temp files; then start-ups
    ended by SIGKILL / SIGTERM / SIGINT at seeded moments (before the lock, around the link,
    after the path is printed) while a host keeps opening the link and holding what it got.
    The next start works: files, settings intact, nothing but the files listed."""
    rng = random.Random(SEED + 5)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    files = {"ca.pem": payload(rng, 1200), "client.key": payload(rng, 700)}
    for name, data in files.items():
        run_whole(host, qfupl(name, data))
    assert host.at("ATS7=99;&W") == b"\r\nOK\r\n"
    emu.end(signal.SIGKILL)
    (state / "ufs" / f"{TEMP}crash1").write_bytes(b"half a file")
    (state / f"{TEMP}crash2").write_bytes(b'{"echo": tr')
    link = tmp_path / "modem"
    stop_opening = threading.Event()
    grabbed: list[int] = []

    def keep_opening() -> None:                 # a driver retrying the port all the time
        while not stop_opening.is_set():
            try:
                grabbed.append(os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
            except OSError:
                pass
            time.sleep(0.005)
    opener = threading.Thread(target=keep_opening, daemon=True)
    opener.start()
    try:
        plan = [(signal.SIGKILL, "printed"), (signal.SIGKILL, 0.0), (signal.SIGTERM, "printed")]
        plan += [(rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGTERM, signal.SIGINT]),
                  rng.uniform(0.0, 0.6)) for _ in range(6)]
        for sig, when in plan:
            log = open(tmp_path / "startup.log", "w")
            proc = start("--offline", "--state-dir", str(state), "--link", str(link), stderr=log)
            try:
                if when == "printed":
                    assert proc.stdout.readline().strip() == str(link)
                else:
                    time.sleep(when)
                proc.send_signal(sig)
                rc = proc.wait(20)
            finally:
                proc.kill()
                proc.wait()
                log.close()
            if when == "printed":     # (earlier, the interpreter may not have its handlers yet)
                assert rc == (-9 if sig == signal.SIGKILL else 0), (sig, when, rc)
    finally:
        stop_opening.set()
        opener.join(5)
    try:
        emu = emus(state)
        host = emu.host()
        assert observe_ufs(host, state / "ufs") == files
        assert observe_s7(host) == 99
        assert not list(state.glob(f"{TEMP}*"))
        emu.end(signal.SIGTERM)
    finally:
        for fd in grabbed:
            os.close(fd)
    assert grabbed, "the host never got the port during the start-ups"


def test_second_live_emulator_through_a_symlinked_state_dir_is_refused_mid_qfwrite(tmp_path, emus):
    """The first emulator is inside an AT+QFWRITE when a second one is started on the same
    state dir spelled through a symlink: refused in one line, and the first one's write,
    finished afterwards, is what a restart through the symlink shows."""
    rng = random.Random(SEED + 6)
    state = tmp_path / "st"
    alias = tmp_path / "alias"
    emu = emus(state)
    host = emu.host()
    old = payload(rng, 2000)
    run_whole(host, qfupl("f.bin", old))
    alias.symlink_to(state)
    run_whole(host, Op(b'AT+QFOPEN="f.bin",0\r', None, f"\r\n+QFOPEN: {HANDLE}\r\n\r\nOK\r\n".encode(), None))
    data = payload(rng, 1000)
    host.write(f"AT+QFWRITE={HANDLE},{len(data)},60\r")
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(data[:400])
    second = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--state-dir", str(alias),
                             "--link", str(tmp_path / "other")], cwd=ROOT, capture_output=True, text=True,
                            timeout=30)
    assert second.returncode not in (0, None) and second.stdout == "", second
    assert len(second.stderr.strip().splitlines()) == 1 and "in use" in second.stderr, second.stderr
    host.write(data[400:])
    assert host.read_until(FINAL) == "\r\n+QFWRITE: 1000,2000\r\n\r\nOK\r\n".encode()
    assert host.at(f"AT+QFCLOSE={HANDLE}") == b"\r\nOK\r\n"
    emu.end(signal.SIGKILL)
    emu = emus(alias, link=str(tmp_path / "again"))
    assert observe_ufs(emu.host(), state / "ufs") == {"f.bin": data + old[1000:]}
    emu.end(signal.SIGTERM)


# Was a bug, fixed: README says leftover ..tmp-* files "are removed at the next start", but the
# sweep ran only when a store was first used (both are made lazily): ufs/..tmp-* stayed until
# the first file command, secstore/..tmp-* of an EC2x forever.  The modem sweeps at its start.
def test_crashed_writers_temp_files_are_gone_once_the_restarted_modem_answers(tmp_path, emus):
    state = tmp_path / "st"
    for sub in ("", "ufs", "secstore"):                # (settings.json's own, in the root)
        (state / sub).mkdir(parents=True, exist_ok=True)
        (state / sub / f"{TEMP}a1b2c3").write_bytes(os.urandom(4096))    # a killed atomic_write
    emu = emus(state)
    host = emu.host()
    assert host.at("AT+CSQ").endswith(b"OK\r\n")
    left = sorted(str(p.relative_to(state)) for p in state.rglob(f"{TEMP}*"))
    emu.end(signal.SIGTERM)
    assert left == []


def _maps(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except OSError:
        return ""


# Was a bug, fixed: main() installed its handlers only after `emulator.tools.cli` had imported
# the whole emulator (~0.2 s): a SIGINT then gave a KeyboardInterrupt traceback and exit -2
# (SIGTERM: -15), where README says exit 0 at any moment of start-up.  The entry point
# (emulator/__main__.py) covers the imports.
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_while_the_cli_imports_its_modules_exits_0(tmp_path, sig):
    """The signal goes once the interpreter runs the program's imports (asyncio's C part is
    mapped: `import asyncio` at the top of emulator/tools/cli.py), before main() runs."""
    import _asyncio
    if not getattr(_asyncio, "__file__", None):
        pytest.skip("_asyncio is built in: no mapping shows the imports under way")
    proc = start("--offline", "--state-dir", str(tmp_path / "st"), "--link", str(tmp_path / "modem"))
    try:
        wait_for(lambda: "_asyncio" in _maps(proc.pid) or proc.poll() is not None, 20, "asyncio imported",
                 every=0.001)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert not os.path.lexists(tmp_path / "modem")
    assert (proc.returncode, "Traceback" in err) == (0, False), (proc.returncode, err[-600:])


# The CLI with state-changing os calls counted: CRASH_TRACE=<file> lists them (one name a
# line); CRASH_AT=<name>:<n> stops the process (SIGSTOP) just before the n-th call of os.<name>
# (counted per name: an extra unlink of a stale link shifts no other), so the test can
# open the pty a host would hold, then SIGKILL it there: a kill at an exact point of start-up.
HOOKED = ("open", "mkdir", "symlink", "ftruncate", "pwrite", "replace", "link", "unlink", "fsync")
CRASH_PROGRAM = """
import os, signal, sys
calls = {}
trace = os.environ.get("CRASH_TRACE")
stop_at = os.environ.get("CRASH_AT", ":")
sink = open(trace, "a", buffering=1) if trace else None
def hook(name, real):
    def call(*a, **k):
        calls[name] = calls.get(name, 0) + 1
        if sink is not None:
            sink.write(name + "\\n")
        if f"{name}:{calls[name]}" == stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)
        return real(*a, **k)
    return call
for name in %r:
    setattr(os, name, hook(name, getattr(os, name)))
from emulator.tools.cli import main
sys.exit(main())
""" % (HOOKED,)


def take_pty_number(device: str) -> list[int]:
    """Open ptys until one is `device` (/dev/pts/N: the kernel hands out the lowest free
    number): another program now has the dead emulator's pty number.  Its two fds."""
    spare, mine = [], []
    try:
        for _ in range(64):
            master, slave = os.openpty()
            if os.ttyname(slave) == device:
                mine = [master, slave]
                break
            spare += [master, slave]
    finally:
        for fd in spare:
            os.close(fd)
    return mine


def _stopped(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _start_up_crashes(tmp_path, emus, points_of) -> None:
    """A state dir with a file; the start-up's state-changing calls listed (CRASH_TRACE);
    then for each point points_of(numbered calls) picks: a start SIGKILLed just before that
    call, another program given the pty number the link names, and a plain start that must
    work and keep the file."""
    rng = random.Random(SEED + 7)
    state, link = tmp_path / "st", tmp_path / "modem"
    emu = emus(state)
    files = {"keep.pem": payload(rng, 900)}
    run_whole(emu.host(), qfupl("keep.pem", files["keep.pem"]))
    emu.end(signal.SIGTERM)
    trace = tmp_path / "calls.txt"

    def crash_start(**env) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", CRASH_PROGRAM, "--offline", "--state-dir", str(state),
                                 "--link", str(link)], cwd=ROOT, env={**os.environ, **env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc = crash_start(CRASH_TRACE=str(trace))
    assert proc.stdout.readline().strip() == str(link)
    calls = trace.read_text().split()           # (the start-up's: read before the stop)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert {"symlink", "pwrite", "ftruncate"} <= set(calls), calls
    numbered = [f"{name}:{calls[:i + 1].count(name)}" for i, name in enumerate(calls)]
    held: list[int] = []
    try:
        for point in points_of(rng, calls, numbered):
            proc = crash_start(CRASH_AT=point)
            try:
                wait_for(lambda: _stopped(proc.pid) or proc.poll() is not None, 20, f"stop at call {point}")
                assert proc.poll() is None, f"start-up ended before call {point}"
                proc.kill()
                proc.wait(10)
            finally:
                proc.kill()
                proc.wait()
            if os.path.lexists(link):
                held += take_pty_number(os.readlink(link))
            emu = emus(state)                  # (Emu fails with the start's log if refused)
            assert observe_ufs(emu.host(), state / "ufs") == files, point
            emu.end(signal.SIGKILL)            # (leaves the link and its lock for the next round)
    finally:
        for fd in held:
            os.close(fd)


def _pid_write_after_the_link(calls: list[str], numbered: list[str]) -> str:
    """The last step of making the link: the pid's write when it follows the symlink (the
    old order: killed there, the link stood beside an empty lock), else the symlink itself
    (killed there, the lock names the dead emulator and there is no link yet)."""
    link_at = calls.index("symlink")
    if "pwrite" in calls[link_at:]:
        return numbered[calls.index("pwrite", link_at)]
    return numbered[link_at]


def test_sigkill_just_before_state_changing_calls_of_start_up_never_stops_the_next_start(tmp_path, emus):
    """Seeded sample of the start-up's state-changing os calls (mkdir, open, the state
    lock's truncate and pid, the link, ...): SIGKILLed just before each, with the dead pty's
    number then taken by another program (as a parallel CI job would)."""
    def points(rng, calls, numbered):
        skip = _pid_write_after_the_link(calls, numbered)      # (the xfail below)
        return rng.sample([p for p in numbered if p != skip], min(7, len(numbered) - 1))
    _start_up_crashes(tmp_path, emus, points)


# Was a bug, fixed: make_link created the symlink before it wrote its pid into the link's lock:
# a SIGKILL between them left the link beside an EMPTY lock, which did not count as a dead
# emulator's; once another program had that /dev/pts/N every later start was refused "exists and
# points to /dev/pts/N: not replacing it".  The pid is now written first.
def test_sigkill_between_making_the_link_and_writing_its_pid_does_not_stop_the_next_start(tmp_path, emus):
    _start_up_crashes(tmp_path, emus, lambda rng, calls, numbered: [_pid_write_after_the_link(calls, numbered)])
