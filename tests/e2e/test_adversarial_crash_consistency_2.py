"""Adversarial CRASH CONSISTENCY, round 2: the emulator killed in the field and restarted on
the SAME --state-dir / --trace / --control, with what a crash, a power cut or a careless user
leaves in the state dir.  Not repeated from test_adversarial_crash_consistency.py (seeded
SIGKILL/SIGTERM/SIGINT cuts of QFUPL/QFWRITE/QSECWRITE/AT&W streams, start-up kills, a live
unrelated pid in the locks, a symlinked state dir) nor test_adversarial_cli_lifecycle.py
(kill -9 mid upload with --control, a second emulator after the first is up, full and
read-only disks, planted symlink locks):

* settings.json left empty / garbage / a directory / unreadable (root without DAC) / a FIFO;
  nv.json, qgdcnt.json, a UFS file, the ML302 device.key as FIFOs;
* UFS entries turned into a directory, a FIFO, an unreadable file, a symlink, emptied;
* ML302 secstore: device.key emptied / garbage, a slot emptied / garbage / a directory, the
  store a plain file;
* <state-dir>/.lock left with a dead pid, garbage, nothing; .lock a directory;
* two emulators started at the same instant on one state dir;
* SIGHUP inside AT+QFWRITE's and AT+QSECWRITE's data, a stray SIGPIPE inside AT+QFUPL;
* SIGKILL with a --trace recording: trace show / replay of the stop-less trace, the restart
  on the same --trace, and a replay of a trace recorded after the restart with AT&W settings;
* SIGKILL with a --control client mid-request: the restart binds the stale socket while the
  dead client's fd is open, or says in one line why it cannot (its directory read-only);
* SIGKILL right after AT&W / QFUPL failed on a full tmpfs, restart on the still-full disk;
  a --trace torn by the full disk, then killed;
* a --count 2 restart meeting a live single emulator on its modem 1's dir.

Were bugs, fixed (each test failed before): settings.json / nv.json / qgdcnt.json a FIFO froze
the one event loop (at start-up / at the first AT+CTZU? / AT+QGDCNT?) and SIGTERM no longer
stopped the process (now read non-blocking, a plain file only: storage.atomic_file.read_plain);
a .lock that is a directory let a second emulator run on the same state dir (EISDIR was taken
for a read-only dir: now refused as "not a plain file"); a trace recorded after a restart on a
state dir with AT&W settings did not replay (the replaying modem started from factory
settings: the start record's material now carries the state files, trace.STATE_FILES).
"""
from __future__ import annotations

import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, modes_bind, needs_file_modes, start
from tests.e2e.test_adversarial_cli_lifecycle import control, tiny_tmpfs  # noqa: F401
from tests.e2e.test_adversarial_crash_consistency import (  # noqa: F401
    FINAL, HANDLE, TEMP, emus, observe_s7, observe_ufs, payload, pem_like, qfupl, run_whole,
)

SEED = 0x0C0FFEE2
OK = b"\r\nOK\r\n"


def cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emulator", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def start_as(prefix: list[str], *args: str, stderr) -> subprocess.Popen:
    """The CLI under a command prefix (modes_bind()), stderr to a file."""
    return subprocess.Popen([*prefix, sys.executable, "-m", "emulator", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=stderr)


def first_line_within(proc: subprocess.Popen, seconds: float) -> str:
    """The device path, or "" when none came within `seconds` (a hang or a refusal)."""
    ready, _, _ = select.select([proc.stdout], [], [], seconds)
    return proc.stdout.readline().strip() if ready else ""


def end(proc: subprocess.Popen, sig=signal.SIGTERM, wait: float = 5) -> int | None:
    """Send sig; the exit code, or None when it did not end within `wait` (then SIGKILLed)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


def upload(host: Host, name: str, data: bytes) -> None:
    run_whole(host, qfupl(name, data))


def secwrite(host: Host, slot: int, data: bytes) -> bytes:
    host.write(f"AT+QSECWRITE={slot}\r")
    got = host.read_until(re.compile(rb"\r\n> |" + FINAL.pattern))
    if got != b"\r\n> ":
        return got
    host.write(data + b"\x1a")
    return host.read_until(re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n"))


# -- settings.json and the other small state files -----------------------------------------------
@pytest.mark.parametrize("damage", ["empty", "garbage", "directory", "unreadable"])
def test_a_damaged_settings_json_starts_factory_settings_and_the_next_atw_is_whole(tmp_path, emus, damage):
    """AT&W made settings.json; after a kill it is found emptied (a power cut before the data
    reached the disk), garbage, a directory, or unreadable.  The restart answers with the
    factory values, one warning naming the file and no traceback; AT&W then saves the new
    values whole (a directory in the way: ERROR, and the directory is left as it is)."""
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7=42;+CMEE=2;&W") == OK
    upload(host, "keep.bin", b"k" * 300)
    emu.end(signal.SIGKILL)
    saved = state / "settings.json"
    saved.unlink()
    prefix: list[str] = []
    if damage == "empty":
        saved.write_bytes(b"")
    elif damage == "garbage":
        saved.write_bytes(bytes(random.Random(SEED).randrange(256) for _ in range(700)))
    elif damage == "directory":
        saved.mkdir()
    else:
        if shutil.which("setpriv") is None and os.geteuid() == 0:
            pytest.skip("root without setpriv: chmod 000 does not bind it")
        saved.write_text('{"echo": false, "cmee": 2}')
        saved.chmod(0)
        prefix = modes_bind()
    with open(tmp_path / "restart.log", "w") as log:
        proc = start_as(prefix, "--offline", "--state-dir", str(state), "--link", str(tmp_path / "m"), stderr=log)
    try:
        path = first_line_within(proc, 10)
        assert path == str(tmp_path / "m"), (tmp_path / "restart.log").read_text()
        host = Host(path)
        assert host.at("AT") == b"AT\r\r\nOK\r\n"                       # factory echo
        assert host.at("ATE0;S7?;+CMEE?") == b"ATE0;S7?;+CMEE?\r\r\n000\r\n\r\n+CMEE: 1\r\n\r\nOK\r\n"
        assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",300\r\n\r\nOK\r\n'
        answer = host.at("ATS7=77;&W")
        host.close()
    finally:
        assert end(proc) == 0
    log = (tmp_path / "restart.log").read_text()
    assert "Traceback" not in log, log
    warnings = [line for line in log.splitlines() if " WARNING " in line]
    assert len(warnings) == 1 and str(saved) in warnings[0], log
    if damage == "directory":
        assert answer == b"\r\nERROR\r\n" and saved.is_dir() and not any(saved.iterdir())
    else:
        saved.chmod(0o600)
        assert answer == OK
        assert json.loads(saved.read_text())["sreg"]["7"] == 77
    assert not list(state.glob(f"{TEMP}*"))


FIFO_PLACES = [
    # (were bugs: a blocking read of the FIFO froze the loop -- at start-up, at the first
    # AT+CTZU?, at the first AT+QGDCNT? -- and SIGTERM no longer ended the process)
    pytest.param("settings.json", "ec2x", [("AT", OK)]),
    pytest.param("nv.json", "ec2x", [("AT+CTZU?", b"\r\n+CTZU: 1\r\n\r\nOK\r\n")]),
    pytest.param("qgdcnt.json", "ec2x", [("AT+QGDCNT?", b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n")]),
    pytest.param("ufs/a.bin", "ec2x", [("AT+QFLST", OK), ('AT+QFDWL="a.bin"', b"\r\n+CME ERROR: 405\r\n"),
                                       ("AT+QFLDS", b"\r\n+QFLDS: 0,0\r\n\r\nOK\r\n")]),
    pytest.param("secstore/device.key", "ml302", [("AT+QSECREAD=0", b"\r\n+CME ERROR: 22\r\n"),
                                                  ("AT+QSECWRITE=0", b"\r\n+QSECWRITE: 3,0262\r\n\r\nOK\r\n")]),
    pytest.param("secstore/slot0.bin", "ml302", [("AT+QSECREAD=0", b"\r\n+QSECREAD: 0,0000\r\n\r\nOK\r\n"),
                                                 ("AT+QSECDEL=0", OK),
                                                 ("AT+QSECWRITE=0", b"\r\n+QSECWRITE: 3,0262\r\n\r\nOK\r\n")]),
]


@pytest.mark.parametrize("place, profile, exchange", FIFO_PLACES)
def test_a_fifo_where_a_state_file_was_never_blocks_the_restarted_modem(tmp_path, place, profile, exchange):
    """A state file replaced by a FIFO (nobody writes it) while the emulator was down: the
    restart comes up, the commands that use that file answer at once, AT still answers and
    SIGTERM ends it with exit 0 (behaviour.md: a FIFO in the state "reads as ..., never a
    read that blocks"; README: SIGTERM exits 0 at any moment)."""
    state = tmp_path / "st"
    (state / "ufs").mkdir(parents=True)
    (state / "secstore").mkdir(parents=True)
    os.mkfifo(state / place)
    with open(tmp_path / "err.log", "w") as log:
        proc = start("--offline", "--profile", profile, "--state-dir", str(state), "--link",
                     str(tmp_path / "m"), stderr=log)
    answers: list = []
    try:
        path = first_line_within(proc, 6)
        if path:
            host = Host(path)
            try:
                answers.append(host.at("ATE0", timeout=3))
                for line, _ in exchange:
                    host.write(line + "\r")
                    got = host.read_until(re.compile(rb"\r\n> |" + FINAL.pattern), timeout=3)
                    if got == b"\r\n> ":
                        host.write(b"abc\x1a")
                        got = host.read_until(FINAL, timeout=3)
                    answers.append(got)
                answers.append(host.at("AT", timeout=3))
            except AssertionError as exc:          # (no answer within 3 s)
                answers.append(str(exc))
            finally:
                host.close()
    finally:
        rc = end(proc, signal.SIGTERM, wait=3)
    log = (tmp_path / "err.log").read_text()
    assert path == str(tmp_path / "m"), f"no start within 6 s; exit after SIGTERM: {rc}; log: {log[-800:]}"
    assert answers == [b"ATE0\r" + OK] + [answer for _, answer in exchange] + [OK], (answers, rc)
    assert rc == 0 and "Traceback" not in log, (rc, log)


# -- UFS entries damaged while the emulator was down ------------------------------------------------
@needs_file_modes
def test_ufs_entries_damaged_after_a_kill_are_listed_consistently_and_never_block(tmp_path, emus):
    """Files uploaded, kill -9; then on disk: one emptied, one made unreadable, one replaced by
    a directory, one by a FIFO, one by a symlink to a system file.  The restart lists only
    regular files, AT+QFLDS agrees with the listing, every AT+QFDWL answers at once (405 for
    what is not a file, 411 unreadable), the intact file is whole."""
    rng = random.Random(SEED + 1)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    files = {name: payload(rng, 400 + 100 * i) for i, name in
             enumerate(["keep.bin", "zero.bin", "locked.bin", "dir.bin", "fifo.bin", "link.bin"])}
    for name, data in files.items():
        upload(host, name, data)
    emu.end(signal.SIGKILL)
    ufs = state / "ufs"
    (ufs / "zero.bin").write_bytes(b"")
    (ufs / "locked.bin").chmod(0)
    (ufs / "dir.bin").unlink()
    (ufs / "dir.bin").mkdir()
    (ufs / "fifo.bin").unlink()
    os.mkfifo(ufs / "fifo.bin")
    (ufs / "link.bin").unlink()
    os.symlink("/etc/passwd", ufs / "link.bin")
    with open(tmp_path / "restart.log", "w") as log:
        proc = start_as(modes_bind(), "--offline", "--state-dir", str(state), "--link", str(tmp_path / "m"),
                        stderr=log)
    try:
        host = Host(first_line_within(proc, 10))
        assert host.at("ATE0").endswith(OK)
        listing = host.at("AT+QFLST", timeout=3)
        assert listing == (b'\r\n+QFLST: "keep.bin",400\r\n+QFLST: "locked.bin",600\r\n'
                           b'+QFLST: "zero.bin",0\r\n\r\nOK\r\n'), listing
        assert host.at("AT+QFLDS", timeout=3) == b"\r\n+QFLDS: 1000,3\r\n\r\nOK\r\n"
        free, total = map(int, re.search(rb"(\d+),(\d+)", host.at('AT+QFLDS="UFS"', timeout=3)).groups())
        assert total - free == 1000
        for name, code in (("dir.bin", 405), ("fifo.bin", 405), ("link.bin", 405), ("locked.bin", 411)):
            assert host.at(f'AT+QFDWL="{name}"', timeout=3) == f"\r\n+CME ERROR: {code}\r\n".encode(), name
        host.write('AT+QFDWL="keep.bin"\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        assert host.read_exactly(400) == files["keep.bin"]
        assert host.read_until(FINAL) == f"\r\n+QFDWL: 400,{xor16(files['keep.bin']):x}\r\n\r\nOK\r\n".encode()
        host.write('AT+QFDWL="zero.bin"\r')
        assert host.read_until(FINAL, timeout=3) == b"\r\nCONNECT\r\n\r\n+QFDWL: 0,0\r\n\r\nOK\r\n"
        upload(host, "new.bin", b"n" * 10)                       # the drive still takes files
        assert host.at("AT", timeout=3) == OK
        host.close()
    finally:
        assert end(proc) == 0
        (ufs / "locked.bin").chmod(0o600)
    log = (tmp_path / "restart.log").read_text()
    assert "Traceback" not in log, log
    assert os.readlink(ufs / "link.bin") == "/etc/passwd" and (ufs / "new.bin").read_bytes() == b"n" * 10


# -- the ML302 certificate store damaged while the emulator was down ---------------------------------
@pytest.mark.parametrize("damage", ["key-empty", "key-garbage", "slot-empty", "slot-garbage",
                                    "slot-directory", "store-a-file"])
def test_a_damaged_secstore_after_a_kill_reads_as_damaged_and_recovers(tmp_path, emus, damage):
    """Slots 0 and 1 written, kill -9, then the store damaged on disk.  The restart answers
    AT; a slot whose key or file was damaged reads "+QSECREAD: 0,..." (never 1 with other
    bytes), an untouched slot with an untouched key reads "1,<its checksum>", a store that is
    a plain file is the memory failure 23; where the slot can be deleted and written again
    the new certificate reads good after another kill -9."""
    rng = random.Random(SEED + 2)
    state = tmp_path / "st"
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    certs = [pem_like(rng, 400 + 50 * slot) for slot in range(2)]
    for slot, data in enumerate(certs):
        assert secwrite(host, slot, data).endswith(OK)
    emu.end(signal.SIGKILL)
    store = state / "secstore"
    thing, how = damage.split("-", 1)
    target = store / ("device.key" if thing == "key" else "slot0.bin")
    if thing == "store":
        shutil.rmtree(store)
        store.write_bytes(b"not a directory")
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "garbage":
        target.write_bytes(rng.randbytes(target.stat().st_size))
    else:
        target.unlink()
        target.mkdir()
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    reads = [host.at(f"AT+QSECREAD={slot}", timeout=3) for slot in range(3)]
    good = [f"\r\n+QSECREAD: 1,{xor16(c):04x}\r\n\r\nOK\r\n".encode() for c in certs]
    bad = re.compile(rb"\r\n\+QSECREAD: 0,[0-9a-f]{4}\r\n\r\nOK\r\n")
    if thing == "store":
        assert reads == [b"\r\n+CME ERROR: 23\r\n"] * 3
    elif thing == "key":
        assert all(bad.fullmatch(r) for r in reads[:2]) and reads[2] == b"\r\n+CME ERROR: 22\r\n", reads
    else:
        assert bad.fullmatch(reads[0]) and reads[1:] == [good[1], b"\r\n+CME ERROR: 22\r\n"], reads
    assert host.at("AT", timeout=3) == OK
    if damage in ("store-a-file", "slot-directory"):
        emu.end(signal.SIGTERM)
        return
    new = pem_like(rng, 333)
    assert host.at("AT+QSECDEL=0") == OK
    assert secwrite(host, 0, new) == f"\r\n+QSECWRITE: {len(new)},{xor16(new):04x}\r\n\r\nOK\r\n".encode()
    emu.end(signal.SIGKILL)
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    assert host.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{xor16(new):04x}\r\n\r\nOK\r\n".encode()
    slot1 = host.at("AT+QSECREAD=1")
    assert slot1 == good[1] if thing == "slot" else bad.fullmatch(slot1), slot1
    assert sorted(p.name for p in store.iterdir()) == ["device.key", "slot0.bin", "slot1.bin"]
    emu.end(signal.SIGTERM)


# -- the state dir's lock -------------------------------------------------------------------------
def test_a_stale_lock_with_a_dead_pid_garbage_or_nothing_never_stops_the_restart(tmp_path, emus):
    """After each kill -9 the .lock is left holding a dead pid, 200 bytes of garbage with no
    line end, or nothing: the restart takes it, writes exactly its own pid, and a second
    start is refused naming that pid (not the stale content)."""
    state = tmp_path / "st"
    emu = emus(state)
    upload(emu.host(), "keep.bin", b"k" * 123)
    for stale in (b"4194000\n", bytes(range(1, 201)), b""):
        emu.end(signal.SIGKILL)
        (state / ".lock").write_bytes(stale)
        emu = emus(state)
        assert (state / ".lock").read_text() == f"{emu.proc.pid}\n"
        second = start("--offline", "--state-dir", str(state), "--link", str(tmp_path / "second"))
        out, err = second.communicate(timeout=20)
        assert (out, second.returncode) == ("", 1), (out, err)
        assert err == f"modem-emulator: --state-dir: {state} is in use by another modem-emulator (pid {emu.proc.pid})\n"
        host = emu.host()
        assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",123\r\n\r\nOK\r\n'
    emu.end(signal.SIGTERM)


def test_a_lock_that_is_a_directory_still_keeps_a_second_emulator_out(tmp_path):
    state = tmp_path / "st"
    (state / ".lock").mkdir(parents=True)
    first = start("--offline", "--state-dir", str(state), "--link", str(tmp_path / "a"))
    second = None
    try:
        line = first_line_within(first, 10)
        second = start("--offline", "--state-dir", str(state), "--link", str(tmp_path / "b"))
        second_line = first_line_within(second, 10)
    finally:
        for proc in (first, second):
            if proc is not None:
                end(proc)
    # the one plain-file rule of lock_state_dir: refuse (as for a FIFO), or at most one runs
    assert not (line and second_line), (line, second_line, second.stderr.read())


def test_two_emulators_started_at_the_same_instant_on_one_state_dir(tmp_path):
    """Three rounds (a state dir not made yet, then one with a file and AT&W settings) of two
    starts at the same instant: exactly one comes up, the other is refused in one line,
    exit 1; the winner has every file and setting."""
    state = tmp_path / "st"
    for rnd in range(3):
        before = [os.readlink(tmp_path / f"m{i}") if os.path.lexists(tmp_path / f"m{i}") else None
                  for i in range(2)]                   # (a SIGKILLed winner's stale link)
        logs = [open(tmp_path / f"r{rnd}-{i}.log", "w") for i in range(2)]
        procs = [start("--offline", "--state-dir", str(state), "--link", str(tmp_path / f"m{i}"), stderr=logs[i])
                 for i in range(2)]
        try:
            lines = [first_line_within(p, 10) for p in procs]
            assert sorted(bool(x) for x in lines) == [False, True], lines
            winner = 0 if lines[0] else 1
            loser = procs[1 - winner]
            assert loser.wait(10) == 1
            err = (tmp_path / f"r{rnd}-{1 - winner}.log").read_text()
            assert err.count("\n") == 1 and f"{state} is in use by another modem-emulator" in err, err
            link = tmp_path / f"m{1 - winner}"           # the loser made or replaced no link
            assert (os.readlink(link) if os.path.lexists(link) else None) == before[1 - winner]
            host = Host(lines[winner])
            assert host.at("ATE0").endswith(OK)
            if rnd == 0:
                assert host.at("AT+QFLST") == OK
                upload(host, "a.bin", b"a" * 777)
                assert host.at("ATS7=61;&W") == OK
            else:
                assert host.at("AT+QFLST;S7?") == b'\r\n+QFLST: "a.bin",777\r\n\r\n061\r\n\r\nOK\r\n'
            host.close()
            assert end(procs[winner], signal.SIGKILL if rnd < 2 else signal.SIGTERM) in (0, -9)
        finally:
            for p in procs:
                end(p, signal.SIGKILL)
            for f in logs:
                f.close()
        assert "Traceback" not in (tmp_path / f"r{rnd}-{winner}.log").read_text()


# -- signals a field user's terminal / supervisor sends -------------------------------------------
def test_sighup_inside_a_qfwrite_keeps_the_old_file_and_exits_0(tmp_path, emus):
    """The terminal is closed (SIGHUP) while AT+QFWRITE has half its data: exit 0, the link
    removed, the restart shows the file as it was before the write (no answer was given)."""
    rng = random.Random(SEED + 3)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    old = payload(rng, 1500)
    upload(host, "f.bin", old)
    assert host.at('AT+QFOPEN="f.bin",0') == f"\r\n+QFOPEN: {HANDLE}\r\n\r\nOK\r\n".encode()
    assert host.at(f"AT+QFSEEK={HANDLE},100") == OK
    host.write(f"AT+QFWRITE={HANDLE},800,60\r")
    assert host.read_until(re.compile(rb"\r\nCONNECT\r\n|" + FINAL.pattern)) == b"\r\nCONNECT\r\n"
    host.write(payload(rng, 500))
    time.sleep(0.2)
    emu.end(signal.SIGHUP)
    assert not os.path.lexists(emu.link)
    emu = emus(state)
    assert observe_ufs(emu.host(), state / "ufs") == {"f.bin": old}
    emu.end(signal.SIGTERM)


def test_sighup_at_the_qsecwrite_prompt_leaves_the_slot_empty(tmp_path, emus):
    rng = random.Random(SEED + 4)
    state = tmp_path / "st"
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    kept = pem_like(rng, 600)
    assert secwrite(host, 1, kept).endswith(OK)
    host.write("AT+QSECWRITE=0\r")
    assert host.read_until(re.compile(rb"\r\n> |" + FINAL.pattern)) == b"\r\n> "
    host.write(pem_like(rng, 900))
    time.sleep(0.2)
    emu.end(signal.SIGHUP)
    emu = emus(state, "--profile", "ml302")
    host = emu.host()
    assert [host.at(f"AT+QSECREAD={s}") for s in range(3)] == [
        b"\r\n+CME ERROR: 22\r\n", f"\r\n+QSECREAD: 1,{xor16(kept):04x}\r\n\r\nOK\r\n".encode(),
        b"\r\n+CME ERROR: 22\r\n"]
    emu.end(signal.SIGTERM)


def test_a_stray_sigpipe_inside_an_upload_changes_nothing(tmp_path, emus):
    """SIGPIPE (a dead pipe somewhere in a supervisor's plumbing, or `kill -PIPE`) in the
    middle of AT+QFUPL: the process carries on, the upload completes with its checksum."""
    rng = random.Random(SEED + 5)
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    data = payload(rng, 3000)
    host.write(f'AT+QFUPL="p.bin",{len(data)},60\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(data[:1000])
    time.sleep(0.1)
    emu.proc.send_signal(signal.SIGPIPE)
    time.sleep(0.2)
    assert emu.proc.poll() is None
    host.write(data[1000:])
    assert host.read_until(FINAL) == f"\r\n+QFUPL: 3000,{xor16(data):x}\r\n\r\nOK\r\n".encode()
    emu.end(signal.SIGKILL)
    emu = emus(state)
    assert observe_ufs(emu.host(), state / "ufs") == {"p.bin": data}
    emu.end(signal.SIGTERM)


# -- --trace across a kill -------------------------------------------------------------------------
def test_a_trace_killed_mid_upload_shows_replays_and_the_restart_traces_again(tmp_path, emus):
    """kill -9 with a --trace recording and an upload half sent: `trace show` and `replay` of
    the stop-less trace exit 0 with no traceback; the restart on the same --trace is not
    refused (the dead writer's lock is gone), its trace begins with the committed file as
    material and replays too."""
    rng = random.Random(SEED + 6)
    state, trace = tmp_path / "st", tmp_path / "field.trace"
    emu = emus(state, "--trace", str(trace))
    host = emu.host()
    upload(host, "a.bin", payload(rng, 900))
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "a.bin",900\r\n\r\nOK\r\n'
    host.write('AT+QFUPL="b.bin",2000,60\r')
    host.read_until(b"CONNECT\r\n")
    host.write(payload(rng, 700))
    time.sleep(0.3)
    emu.end(signal.SIGKILL)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["kind"] == "start" and "stop" not in {r["kind"] for r in records}
    shown = cli("trace", "show", str(trace))
    assert shown.returncode == 0 and "Traceback" not in shown.stderr, shown.stderr
    replayed = cli("replay", str(trace))
    assert replayed.returncode == 0 and "no difference" in replayed.stdout, (replayed.stdout, replayed.stderr)
    assert "Traceback" not in replayed.stderr
    emu = emus(state, "--trace", str(trace))
    host = emu.host()
    assert host.at("AT+QFLST;+CGMI") == b'\r\n+QFLST: "a.bin",900\r\n\r\nQuectel\r\n\r\nOK\r\n'
    emu.end(signal.SIGKILL)
    start_record = json.loads(trace.read_text().splitlines()[0])
    assert start_record["material"] == {"files": {"a.bin": 900}}
    replayed = cli("replay", str(trace))
    assert replayed.returncode == 0 and "no difference" in replayed.stdout, (replayed.stdout, replayed.stderr)


def test_a_trace_recorded_after_a_restart_with_saved_settings_replays(tmp_path, emus):
    """ATE0, S7=42, AT+CMEE=2 saved with AT&W; kill -9; the restart (same state dir) records
    a trace of an unchanged modem; `replay` of it must find no difference (README: exit 0
    "the modem still answers the same")."""
    state, trace = tmp_path / "st", tmp_path / "field.trace"
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7=42;+CMEE=2;&W") == OK
    emu.end(signal.SIGKILL)
    emu = emus(state, "--trace", str(trace))
    host = Host(emu.paths[0])
    emu.hosts.append(host)
    assert host.at("ATS7?;+CMEE?") == b"\r\n042\r\n\r\n+CMEE: 2\r\n\r\nOK\r\n"
    assert host.at('AT+QFDEL="nope.bin"') == b"\r\n+CME ERROR: file not found\r\n"
    emu.end(signal.SIGKILL)
    replayed = cli("replay", str(trace))
    assert replayed.returncode == 0 and "no difference" in replayed.stdout, (replayed.stdout, replayed.stderr)


# -- --control across a kill ----------------------------------------------------------------------
def test_control_socket_left_by_a_kill_with_its_client_still_connected(tmp_path, emus):
    """kill -9 while a control client has sent half a request and holds its connection: the
    restart on the same --control binds the stale socket (the dead client's fd still open),
    the old client sees the end of its stream, a new client is answered.  Then, with the
    stale socket in a directory the emulator may not write, the restart is refused in one
    line naming the path (exit 1), never a traceback."""
    state, ctl_dir = tmp_path / "st", tmp_path / "ctl-dir"
    ctl_dir.mkdir()
    ctl = ctl_dir / "ctl"
    emu = emus(state, "--control", str(ctl))
    upload(emu.host(), "keep.bin", b"c" * 55)
    old = socket.socket(socket.AF_UNIX)
    old.connect(str(ctl))
    old.sendall(b'{"op": "sta')
    time.sleep(0.1)
    emu.end(signal.SIGKILL)
    assert ctl.is_socket()
    try:
        emu = emus(state, "--control", str(ctl))
        old.settimeout(3)
        assert old.recv(100) == b""
        assert control(ctl, {"op": "state"})["ok"] is True
        assert emu.host().at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",55\r\n\r\nOK\r\n'
    finally:
        old.close()
    emu.end(signal.SIGKILL)
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return
    ctl_dir.chmod(0o500)
    try:
        with open(tmp_path / "refused.log", "w") as log:
            proc = start_as(modes_bind(), "--offline", "--state-dir", str(state), "--control", str(ctl),
                            "--link", str(tmp_path / "m2"), stderr=log)
        try:
            line = first_line_within(proc, 10)
            rc = proc.wait(10) if not line else None
        finally:
            end(proc, signal.SIGKILL)
    finally:
        ctl_dir.chmod(0o700)
    err = (tmp_path / "refused.log").read_text()
    if line:                                  # it may bind anyway: then it must work
        pytest.fail(f"started over a stale socket it cannot replace: {err}")
    assert rc == 1 and err.count("\n") == 1 and str(ctl) in err and "Traceback" not in err, (rc, err)
    assert not os.path.lexists(tmp_path / "m2")


# -- a full disk across a kill ------------------------------------------------------------------------
def test_kill_after_failures_on_a_full_disk_and_restart_while_still_full(tiny_tmpfs, emus):  # noqa: F811
    """On a tiny tmpfs: a file and S7=21 saved; the disk fills; AT&W S7=99 answers ERROR,
    an upload 409; kill -9 at once; the restart on the still-full disk comes up with S7=21
    and the one file, no temp file; once space is back AT&W and uploads work and persist."""
    state = tiny_tmpfs / "st"
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7=21;&W") == OK
    upload(host, "keep.bin", b"k" * 1000)
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as f:
        with pytest.raises(OSError):
            f.write(b"z" * 400_000)
            f.flush()
    assert host.at("ATS7=99;&W") == b"\r\nERROR\r\n"
    host.write('AT+QFUPL="new.bin",4000,60\r')
    host.read_until(b"CONNECT\r\n")
    host.write(b"n" * 4000)
    assert host.read_until(FINAL) == b"\r\n+CME ERROR: 409\r\n"
    emu.end(signal.SIGKILL)
    emu = emus(state)
    host = emu.host()
    assert observe_s7(host) == 21
    assert observe_ufs(host, state / "ufs") == {"keep.bin": b"k" * 1000}
    assert not [p for p in state.rglob(f"{TEMP}*")]
    filler.unlink()
    assert host.at("ATS7=98;&W") == OK
    upload(host, "new.bin", b"m" * 3000)
    emu.end(signal.SIGKILL)
    emu = emus(state)
    host = emu.host()
    assert observe_s7(host) == 98
    assert observe_ufs(host, state / "ufs") == {"keep.bin": b"k" * 1000, "new.bin": b"m" * 3000}
    emu.end(signal.SIGTERM)


def test_a_trace_torn_by_a_full_disk_then_killed_replays_and_the_restart_traces(tiny_tmpfs, emus):  # noqa: F811
    """--trace on a tiny tmpfs that fills up mid-session: tracing stops (the modem goes on),
    kill -9; `trace show` and `replay` of the torn file say what they left out (no
    traceback, exit 0); the restart on the same --trace, disk still full, records again."""
    rng = random.Random(SEED + 7)
    state, trace = tiny_tmpfs / "st", tiny_tmpfs / "field.trace"
    emu = emus(state, "--trace", str(trace))
    host = emu.host()
    assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
    filler = tiny_tmpfs / "filler"
    with open(filler, "wb") as f:
        with pytest.raises(OSError):
            f.write(b"z" * 400_000)
            f.flush()
    data = payload(rng, 3000)
    host.write(f'AT+QFUPL="RAM:big.bin",{len(data)},60\r')          # RAM: the disk is full
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(data)
    assert host.read_until(FINAL) == f"\r\n+QFUPL: 3000,{xor16(data):x}\r\n\r\nOK\r\n".encode()
    assert host.at("AT+CSQ").endswith(OK)
    emu.end(signal.SIGKILL)
    assert "tracing stops" in emu.log_path.read_text()
    text = trace.read_bytes()
    assert not text.endswith(b"\n")                                 # torn at the full disk
    for tool in (("trace", "show"), ("replay",)):
        done = cli(*tool, str(trace))
        assert done.returncode == 0 and "Traceback" not in done.stderr, (tool, done.stdout, done.stderr)
        assert "the last line is cut short (an interrupted recording): left out" in done.stderr, done.stderr
    emu = emus(state, "--trace", str(trace))
    assert emu.host().at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
    emu.end(signal.SIGTERM)
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[0]["kind"] == "start" and records[-1]["kind"] == "stop"
    filler.unlink()


@pytest.mark.parametrize("name, change, read, saved, default", [
    ("nv.json", "AT+CTZU=3", "AT+CTZU?", b"+CTZU: 3", b"+CTZU: 1"),
    ("qgdcnt.json", "AT+QGDCNT=1", "AT+QGDCNT?", b"+QGDCNT: 0,0", b"+QGDCNT: 0,0"),
])
def test_a_damaged_nv_file_after_a_kill_gives_defaults_and_the_next_save_is_whole(tmp_path, emus, name, change,
                                                                                   read, saved, default):
    """A saved NV file (AT+CTZU / AT+QGDCNT=1) found emptied, garbage or a directory after a
    kill: the restart answers the default, no traceback; the next change saves whole (a
    directory in the way: the answer says it was kept, or ERROR, and the directory stays)."""
    state = tmp_path / "st"
    emu = emus(state)
    assert emu.host().at(change) == OK
    for damage in ("empty", "garbage", "directory"):
        emu.end(signal.SIGKILL)
        path = state / name
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
        if damage == "empty":
            path.write_bytes(b"")
        elif damage == "garbage":
            path.write_bytes(b'{"ctzu": 3, "sent": 1' + bytes(range(200)))
        else:
            path.mkdir()
        emu = emus(state)
        host = emu.host()
        assert host.at(read) == b"\r\n" + default + b"\r\n\r\nOK\r\n", damage
        answer = host.at(change)
        if damage == "directory":
            assert answer in (OK, b"\r\nERROR\r\n") and path.is_dir()
        else:
            assert answer == OK and json.loads(path.read_text())
        assert host.at(read) == b"\r\n" + saved + b"\r\n\r\nOK\r\n"
        assert host.at("AT") == OK
    emu.end(signal.SIGTERM)


def test_a_count_start_meeting_a_live_emulator_on_one_modems_dir_leaves_nothing(tmp_path, emus):
    """A single emulator runs on <S>/1 (what a --count 2 run on <S> gives modem 1) when the
    --count 2 run is restarted: refused in one line naming <S>/1, no path printed, modem 0's
    link made and removed again, the single one undisturbed; once it is killed -9 the
    --count 2 run starts and modem 1 has its file."""
    root = tmp_path / "S"
    single = emus(root / "1", link=str(tmp_path / "single"))
    host = single.host()
    upload(host, "one.bin", b"1" * 111)
    pattern = str(tmp_path / "m{n}")
    proc = start("--offline", "--count", "2", "--state-dir", str(root), "--link", pattern)
    out, err = proc.communicate(timeout=20)
    assert (proc.returncode, out) == (1, ""), err
    assert err == (f"modem-emulator: --state-dir: {root / '1'} is in use by another modem-emulator "
                   f"(pid {single.proc.pid})\n")
    assert not os.path.lexists(pattern.format(n=0)) and not os.path.lexists(tmp_path / ".m0.lock")
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "one.bin",111\r\n\r\nOK\r\n'
    single.end(signal.SIGKILL)
    both = emus(root, "--count", "2", count=2, link=pattern)
    assert both.host(1).at("AT+QFLST") == b'\r\n+QFLST: "one.bin",111\r\n\r\nOK\r\n'
    assert both.host(0).at("AT+QFLST") == OK
    both.end(signal.SIGTERM)


def test_a_scenario_reboot_inside_an_upload_then_a_kill_and_the_same_scenario_again(tmp_path, emus):
    """--scenario reboots the modem 1 s in, while an AT+QFUPL has 400 of its 1000 bytes:
    the half file is dropped, RAM is emptied, UFS and AT&W kept; kill -9 then; the restart
    with the same scenario does it all again from its start, with the same result."""
    scenario = tmp_path / "reboot.toml"
    scenario.write_text('[[step]]\nat = 1.0\nop = "reboot"\n')
    state = tmp_path / "st"
    urcs = b"\r\nRDY\r\n"
    for rnd in range(2):
        emu = emus(state, "--scenario", str(scenario))
        host = emu.host()
        if rnd == 0:
            upload(host, "a.bin", b"a" * 100)
            assert host.at("ATS7=33;&W") == OK
        upload(host, "RAM:r.bin", b"r" * 50)
        host.write('AT+QFUPL="half.bin",1000,60\r')
        assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        host.write(b"h" * 400)
        assert host.read_until(b"+QIND: PB DONE\r\n", timeout=5).startswith(urcs)
        assert host.at('AT+QFLST="*"') == b'\r\n+QFLST: "a.bin",100\r\n\r\nOK\r\n'
        assert observe_s7(host) == 33
        emu.end(signal.SIGKILL)
        assert "Traceback" not in emu.log_path.read_text()
        assert sorted(p.name for p in (state / "ufs").iterdir()) == ["a.bin"]
