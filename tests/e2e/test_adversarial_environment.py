"""Adversarial HOSTILE ENVIRONMENT: what field and CI machines do to a running modem-emulator
CLI, changed while it runs and then put right again.

* the disk fills up -- simulated without root by lowering the process's RLIMIT_FSIZE with
  prlimit(2) while it runs (0: no regular file may grow; Python ignores SIGXFSZ, so writes
  fail with EFBIG "File too large") and raising it again ("space freed");
* the state dir's ufs/ made read-only / unreadable, secstore/device.key or secstore/ made
  unreadable while it runs (chmod binds a normal user as it is; root runs the CLI under
  setpriv without CAP_DAC_OVERRIDE: cli_support.modes_bind; skipped only for root without
  setpriv);
* the state dir deleted, or replaced by a plain file, while it runs (a CI clean-up job);
* the --link's directory removed while it runs, and another emulator started on that link;
* the file-descriptor limit (RLIMIT_NOFILE) lowered to what is open already: AT+QIOPEN /
  AT+QSSLOPEN sockets, AT+QFREAD of an open AT+QFOPEN handle, AT+QFUPL, AT&W; control-socket
  clients beyond the limit;
* the pty's other side opened by two hosts at once.

For each: the host gets the answer a module gives for a storage or resource failure (the
FILE table's +CME ERROR codes, ERROR for AT&W, +CME ERROR: 23 for the ML302 store,
+QIOPEN/+QSSLOPEN <err> for a socket), never a traceback, a hang or a dead process; what was
stored stays (read back once the condition is lifted and after a restart); the emulator
works again once the condition is gone; the log names the cause.

Not repeated here (test_adversarial_cli_lifecycle.py): a state dir read-only from the start,
AT&W on a read-only dir, a full tmpfs at AT+QFUPL, --count exhausting descriptors at start-up,
a dead emulator's pty number reused by another program; (test_adversarial_crash_consistency.py)
kills at random points.

Log level note: a command's storage failure is logged at INFO by the AT interpreter ("+CME
ERROR: 409 for the data of AT+QFUPL=...: ... File too large"), which the CLI's default level
(INFO) shows; NV and socket failures at WARNING.  The tests ask for one line naming the cause
and no traceback.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emulator.storage.checksum import format_checksum, xor16
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, modes_bind, needs_file_modes
from tests.e2e.socket_support import wait_for

INF = resource.RLIM_INFINITY
FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n")
CONNECT_OR_FINAL = re.compile(rb"\r\nCONNECT\r\n|" + FINAL.pattern)
PROMPT_OR_FINAL = re.compile(rb"\r\n> |" + FINAL.pattern)

# -- the process ---------------------------------------------------------------------------------
class Emu:
    """`python -m emulator --offline --state-dir S --link L <args>`; stderr read by a thread
    (a file could not take the log while RLIMIT_FSIZE is 0)."""

    def __init__(self, tmp: Path, state: Path, *args: str, profile: str = "ec2x",
                 link: Path | None = None, pre: list[str] | None = None) -> None:
        self.link = str(link or tmp / "modem")
        self.proc = subprocess.Popen(
            [*(pre or []), sys.executable, "-m", "emulator", "--offline", "--profile", profile,
             "--state-dir", str(state), "--link", self.link, "--log-level", "INFO", *args],
            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # a full disk is lowered *here*, not inherited: every child starts unlimited
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (INF, INF)))
        self._err: list[str] = []
        self._reader = threading.Thread(target=lambda: self._err.extend(self.proc.stderr), daemon=True)
        self._reader.start()
        line = self.proc.stdout.readline().strip()
        if line != self.link:
            self.proc.kill()
            self._reader.join(5)
            raise AssertionError(f"no start: {line!r}; log:\n{self.log()[-3000:]}")
        self.hosts: list[Host] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return "".join(self._err)

    def wait_log(self, pattern: str, timeout: float = 10) -> None:
        wait_for(lambda: re.search(pattern, self.log()), timeout, f"log line {pattern!r}")

    def host(self) -> Host:
        host = Host(self.link)
        self.hosts.append(host)
        assert host.at("ATE0").endswith(b"\r\nOK\r\n")
        return host

    def disk_full(self, full: bool = True) -> None:
        """RLIMIT_FSIZE of the running process: 0 (no file may grow) or unlimited."""
        resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (0, INF) if full else (INF, INF))

    def stop(self) -> str:
        """SIGTERM: exit 0, no traceback in the log; returns the log."""
        for host in self.hosts:
            host.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        finally:
            self.proc.kill()
        self._reader.join(10)
        log = self.log()
        assert rc == 0, f"exit status {rc}; log:\n{log[-3000:]}"
        assert "Traceback" not in log, log[-4000:]
        return log

    def kill(self) -> None:
        for host in self.hosts:
            host.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def emus(tmp_path):
    started: list[Emu] = []

    def start_emu(*args, **kw) -> Emu:
        emu = Emu(tmp_path, *args, **kw)
        started.append(emu)
        return emu
    yield start_emu
    for emu in started:
        emu.kill()


@pytest.fixture(scope="module", autouse=True)
def fsize_limit_works():
    """The simulation itself: a child whose RLIMIT_FSIZE is lowered by prlimit(2) after it
    started gets EFBIG (not a SIGXFSZ death) and writes again once it is raised."""
    code = ("import os,sys\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush(); sys.stdin.readline()\n"
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)\n"
            "try:\n    os.write(fd, b'x'); print('wrote')\n"
            "except OSError as e:\n    print(e.errno)\n"
            "sys.stdout.flush(); sys.stdin.readline(); os.write(fd, b'x'); print('wrote')\n")
    target = Path(f"/tmp/fsize-probe-{os.getpid()}")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == "ready\n"
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (0, INF))
        child.stdin.write("\n")
        child.stdin.flush()
        first = child.stdout.readline().strip()
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (INF, INF))
        child.stdin.write("\n")
        child.stdin.flush()
        second = child.stdout.readline().strip()
        child.wait(10)
    finally:
        child.kill()
        target.unlink(missing_ok=True)
    if (first, second) != ("27", "wrote"):                  # 27 EFBIG
        pytest.skip(f"RLIMIT_FSIZE via prlimit does not simulate a full disk here: {first!r} {second!r}")


# -- host side helpers ---------------------------------------------------------------------------
def data_cmd(host: Host, line: str, data: bytes, prompt: re.Pattern = CONNECT_OR_FINAL) -> bytes:
    """A command with a data phase: its prompt, the data, then the final answer (or the
    refusal before the prompt)."""
    host.write(line + "\r")
    got = host.read_until(prompt)
    if FINAL.fullmatch(got) or FINAL.search(got) and not got.endswith((b"CONNECT\r\n", b"> ")):
        return got
    host.write(data)
    return host.read_until(FINAL)


def upload(host: Host, name: str, data: bytes) -> bytes:
    return data_cmd(host, f'AT+QFUPL="{name}",{len(data)}', data)


def secwrite(host: Host, slot: int, data: bytes) -> bytes:
    return data_cmd(host, f"AT+QSECWRITE={slot}", data + b"\x1a", PROMPT_OR_FINAL)


def qfupl_ok(data: bytes) -> bytes:
    return f"\r\n+QFUPL: {len(data)},{format_checksum(xor16(data), pad=False)}\r\n\r\nOK\r\n".encode()


def qsecread_good(data: bytes) -> bytes:
    return f"\r\n+QSECREAD: 1,{format_checksum(xor16(data))}\r\n\r\nOK\r\n".encode()


def download(host: Host, name: str) -> bytes:
    host.write(f'AT+QFDWL="{name}"\r')
    got = host.read_until(re.compile(rb"\+QFDWL: \d+,[0-9a-f]+\r\n\r\nOK\r\n|" + FINAL.pattern))
    m = re.match(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: ", got, re.S)
    return m.group(1) if m else got


def no_temp_files(state: Path) -> list[str]:
    return [str(p) for p in state.rglob("..tmp-*")]


def chmod(path: Path, mode: int) -> None:
    if path.exists():
        path.chmod(mode)


# -- a full disk ---------------------------------------------------------------------------------
def test_disk_fills_while_running_files_and_settings_fail_cleanly_and_recover(emus, tmp_path):
    """EC2x with the disk full mid-session: every write to UFS answers the FILE table's 409
    ("fail to write the file") after its data, the open handle's position and the file stay
    as they were, a rename (needs no room, behaviour.md) and RAM still work, AT&W is ERROR
    (ATZ keeps the last saved set), an NV change holds in the running modem (behaviour.md:
    "keeps the change until the next start (logged)") and reaches nv.json with the next NV
    write once there is room again.  Nothing half-written is left; space freed, the same
    commands work; a restart shows exactly what was committed."""
    state = tmp_path / "st"
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7=21;&W") == b"\r\nOK\r\n"
    assert upload(host, "keep.bin", b"0123456789") == qfupl_ok(b"0123456789")
    opened = host.at('AT+QFOPEN="doc.txt",0')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", opened).group(1))
    assert data_cmd(host, f"AT+QFWRITE={handle},5", b"hello") == b"\r\n+QFWRITE: 5,5\r\n\r\nOK\r\n"

    emu.disk_full()
    assert upload(host, "new.bin", b"n" * 300) == b"\r\n+CME ERROR: 409\r\n"
    assert data_cmd(host, f"AT+QFWRITE={handle},6", b" world") == b"\r\n+CME ERROR: 409\r\n"
    assert host.at(f"AT+QFPOSITION={handle}") == b"\r\n+QFPOSITION: 5\r\n\r\nOK\r\n"
    assert host.at(f"AT+QFSEEK={handle},2;+QFTUCAT={handle}") == b"\r\n+CME ERROR: 409\r\n"
    assert host.at('AT+QFMOV="keep.bin","copy.bin",1') == b"\r\n+CME ERROR: 409\r\n"
    assert host.at('AT+QFMOV="keep.bin","moved.bin"') == b"\r\nOK\r\n"
    assert upload(host, "RAM:r.bin", b"r" * 300) == qfupl_ok(b"r" * 300)
    assert host.at("ATS7=44;&W") == b"\r\nERROR\r\n"
    assert host.at("ATZ;S7?") == b"\r\n021\r\n\r\nOK\r\n"
    assert host.at("AT+CTZU=0;+CTZU?") == b"\r\n+CTZU: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QGDCNT=1") == b"\r\nERROR\r\n"
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "doc.txt",5\r\n+QFLST: "moved.bin",10\r\n\r\nOK\r\n'
    assert host.at(f"AT+QFSEEK={handle},0") == b"\r\nOK\r\n"
    assert host.at(f"AT+QFREAD={handle}") == b"\r\nCONNECT 5\r\nhello\r\nOK\r\n"
    assert no_temp_files(state) == []
    emu.wait_log(r"AT\+QFUPL=\"new.bin\".*File too large")
    emu.wait_log(r"WARNING .*nv.json: NV settings not saved: File too large")
    assert re.search(r"AT&W.*File too large", emu.log())

    emu.disk_full(False)                                     # space freed
    assert data_cmd(host, f"AT+QFWRITE={handle},6", b" world") == b"\r\n+QFWRITE: 6,11\r\n\r\nOK\r\n"
    assert upload(host, "new.bin", b"n" * 300) == qfupl_ok(b"n" * 300)
    assert host.at("ATS7=44;&W") == b"\r\nOK\r\n"
    assert host.at("AT+QSCLK=1") == b"\r\nOK\r\n"          # the next NV write
    assert host.at("AT+QGDCNT=1") == b"\r\nOK\r\n"
    emu.stop()

    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7?") == b"\r\n044\r\n\r\nOK\r\n"
    assert host.at("AT+CTZU?;+QSCLK?") == b"\r\n+CTZU: 0\r\n\r\n+QSCLK: 1\r\n\r\nOK\r\n"
    assert host.at("AT+QFLST") == (b'\r\n+QFLST: "doc.txt",11\r\n+QFLST: "moved.bin",10\r\n'
                                   b'+QFLST: "new.bin",300\r\n\r\nOK\r\n')
    assert host.at('AT+QFLST="RAM:*"') == b"\r\nOK\r\n"
    assert download(host, "doc.txt") == b"hello world"
    assert download(host, "moved.bin") == b"0123456789"
    emu.stop()
    assert sorted(p.name for p in (state / "ufs").iterdir()) == ["doc.txt", "moved.bin", "new.bin"]


def test_disk_full_ml302_store_answers_memory_failure_and_keeps_its_slots(emus, tmp_path):
    """ML302, the disk full from the very first AT+QSECWRITE (the device key cannot be made
    either): +CME ERROR: 23 (memory failure, the code emulator/commands/secstore.py documents
    for a host storage failure), the slot stays empty; space freed, the write works; full
    again, another slot's write is 23 and the stored one still reads good, also after a
    restart."""
    state = tmp_path / "st"
    emu = emus(state, profile="ml302")
    host = emu.host()
    cert = b"-----BEGIN CERTIFICATE-----\r\nMIIB" + b"A" * 200 + b"\r\n-----END CERTIFICATE-----\r\n"
    emu.disk_full()
    assert secwrite(host, 0, cert) == b"\r\n+CME ERROR: 23\r\n"
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert host.at("ATS7=33;&W") == b"\r\nERROR\r\n"
    emu.disk_full(False)
    assert secwrite(host, 0, cert).endswith(b"\r\nOK\r\n")
    emu.disk_full()
    assert secwrite(host, 1, b"other") == b"\r\n+CME ERROR: 23\r\n"
    assert host.at("AT+QSECREAD=0") == qsecread_good(cert)
    assert host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")
    assert no_temp_files(state) == []
    emu.wait_log(r"File too large")
    emu.disk_full(False)
    emu.stop()

    emu = emus(state, profile="ml302")
    host = emu.host()
    assert host.at("AT+QSECREAD=0") == qsecread_good(cert)
    assert host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    emu.stop()


# -- permissions changed while running -------------------------------------------------------------
@needs_file_modes
def test_ufs_made_read_only_then_unreadable_while_running_then_given_back(emus, tmp_path):
    """ufs/ made read-only mid-session: an upload takes its data and answers 409, QFDEL 418,
    a rename 409 (FILE table: write / delete failed), listing and downloading still work;
    the state dir read-only: AT&W ERROR; ufs/ unreadable: a download is 411 (read failed).
    Permissions given back: everything works again, and a restart shows what was
    committed."""
    state = tmp_path / "st"
    ufs = state / "ufs"
    emu = emus(state, pre=modes_bind())
    host = emu.host()
    assert host.at("ATS7=21;&W") == b"\r\nOK\r\n"
    assert upload(host, "keep.bin", b"keep") == qfupl_ok(b"keep")
    try:
        ufs.chmod(0o500)
        assert upload(host, "new.bin", b"abc") == b"\r\n+CME ERROR: 409\r\n"
        assert host.at('AT+QFDEL="keep.bin"') == b"\r\n+CME ERROR: 418\r\n"
        assert host.at('AT+QFMOV="keep.bin","moved.bin"') == b"\r\n+CME ERROR: 409\r\n"
        assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",4\r\n\r\nOK\r\n'
        assert download(host, "keep.bin") == b"keep"
        state.chmod(0o500)
        assert host.at("ATS7=44;&W") == b"\r\nERROR\r\n"
        ufs.chmod(0o000)
        assert download(host, "keep.bin") == b"\r\n+CME ERROR: 411\r\n"
        assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")
        emu.wait_log(r"AT\+QFUPL=\"new.bin\".*Permission denied")
        emu.wait_log(r"AT\+QFDWL=\"keep.bin\".*Permission denied")
    finally:
        chmod(state, 0o700)
        chmod(ufs, 0o700)
    assert upload(host, "new.bin", b"abc") == qfupl_ok(b"abc")
    assert host.at('AT+QFMOV="keep.bin","moved.bin"') == b"\r\nOK\r\n"
    assert host.at("ATS7=44;&W") == b"\r\nOK\r\n"
    assert download(host, "moved.bin") == b"keep"
    emu.stop()
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7?") == b"\r\n044\r\n\r\nOK\r\n"
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "moved.bin",4\r\n+QFLST: "new.bin",3\r\n\r\nOK\r\n'
    emu.stop()


@needs_file_modes
# Was a bug, fixed: an unreadable device.key (EACCES for a moment) was taken for a corrupt one and
# replaced at the next AT+QSECWRITE (OK, no log line): every slot written before was lost for
# good.  An unreadable key is now a host storage failure (+CME ERROR: 23), the key untouched.
def test_device_key_unreadable_for_a_moment_never_costs_the_stored_slots(emus, tmp_path):
    """ML302: a slot is stored; device.key loses its read permission for a moment (a backup
    tool, a user's chmod) and the host writes another slot meanwhile.  The module user
    expects a failed write (memory failure, 23) and the stored certificate intact once the
    key is readable again -- an unreadable key is not a damaged one."""
    state = tmp_path / "st"
    emu = emus(state, profile="ml302", pre=modes_bind())
    host = emu.host()
    cert = b"-----BEGIN CERTIFICATE-----\r\nSLOT-ZERO\r\n-----END CERTIFICATE-----\r\n"
    assert secwrite(host, 0, cert).endswith(b"\r\nOK\r\n")
    key = state / "secstore" / "device.key"
    try:
        key.chmod(0o000)
        during = secwrite(host, 1, b"other")
    finally:
        chmod(key, 0o600)
    assert host.at("AT+QSECREAD=0") == qsecread_good(cert)          # stored slot intact
    assert during == b"\r\n+CME ERROR: 23\r\n", during
    emu.stop()


@needs_file_modes
# Was a bug, fixed: an unreadable secstore/ made every slot look filled and damaged: AT+QSECWRITE
# answered +CME ERROR: 3 ('AT+QSECDEL first') and nothing was logged.  Now 23, with the reason.
def test_unreadable_cert_store_is_a_memory_failure_not_a_filled_slot(emus, tmp_path):
    """ML302: secstore/ loses its permissions while the modem runs.  A write to an empty
    slot must fail as the store's host failure (+CME ERROR: 23, memory failure), not tell
    the host the slot is filled (3), and the log must say why; permissions given back, the
    write works."""
    state = tmp_path / "st"
    emu = emus(state, profile="ml302", pre=modes_bind())
    host = emu.host()
    assert secwrite(host, 0, b"zero").endswith(b"\r\nOK\r\n")
    store = state / "secstore"
    try:
        store.chmod(0o000)
        during = secwrite(host, 2, b"two")
    finally:
        chmod(store, 0o700)
    assert secwrite(host, 2, b"two").endswith(b"\r\nOK\r\n")
    assert host.at("AT+QSECREAD=0") == qsecread_good(b"zero")
    assert during == b"\r\n+CME ERROR: 23\r\n", during
    emu.wait_log(r"Permission denied")     # (stderr is read by a thread: the line may lag the answer)
    emu.stop()


# -- the state dir deleted or replaced -------------------------------------------------------------
def test_state_dir_deleted_then_a_file_then_restored_while_running(emus, tmp_path):
    """A CI clean-up deletes the state dir under a running modem, then something writes a
    plain file at its path: uploads answer 409 after their data, AT&W ERROR (ATZ keeps the
    saved set), an NV change holds with a WARNING, the modem keeps answering.  The dir put
    back (from a copy): writes work again at once.  A start on the path while it is a file
    is one line, exit 1 (README: "a state dir that cannot be made"); restored, the start
    shows everything committed."""
    state = tmp_path / "st"
    backup = tmp_path / "backup"
    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7=21;&W") == b"\r\nOK\r\n"
    assert upload(host, "keep.bin", b"keep") == qfupl_ok(b"keep")
    shutil.copytree(state, backup)

    shutil.rmtree(state)
    assert upload(host, "new.bin", b"abc") == b"\r\n+CME ERROR: 409\r\n"
    assert host.at("ATS7=44;&W") == b"\r\nERROR\r\n"
    assert host.at("ATZ;S7?") == b"\r\n021\r\n\r\nOK\r\n"
    assert host.at("AT+CTZU=0;+CTZU?") == b"\r\n+CTZU: 0\r\n\r\nOK\r\n"
    assert download(host, "keep.bin") == b"\r\n+CME ERROR: 405\r\n"       # it is gone
    emu.wait_log(r"AT\+QFUPL=\"new.bin\".*No such file or directory")
    emu.wait_log(r"WARNING .*NV settings not saved: No such file or directory")

    state.write_text("not a directory")
    assert upload(host, "new.bin", b"abc") == b"\r\n+CME ERROR: 409\r\n"
    assert host.at("ATS7=44;&W") == b"\r\nERROR\r\n"
    assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")
    emu.wait_log(r"AT&W.*Not a directory")

    state.unlink()
    shutil.copytree(backup, state)                          # put back
    assert download(host, "keep.bin") == b"keep"
    assert upload(host, "new.bin", b"abc") == qfupl_ok(b"abc")
    assert host.at("ATS7=45;&W") == b"\r\nOK\r\n"
    emu.stop()

    shutil.move(state, tmp_path / "aside")
    state.write_text("not a directory")
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--state-dir", str(state),
                             "--link", str(tmp_path / "modem")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, out) == (1, ""), (proc.returncode, out, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(state) in err, err
    assert not os.path.lexists(tmp_path / "modem")
    state.unlink()
    shutil.move(tmp_path / "aside", state)

    emu = emus(state)
    host = emu.host()
    assert host.at("ATS7?") == b"\r\n045\r\n\r\nOK\r\n"
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",4\r\n+QFLST: "new.bin",3\r\n\r\nOK\r\n'
    emu.stop()


# Was a bug, fixed: the file system, made at the first file command, let an OSError escape the
# handler (state dir a file, gone, unreadable, EMFILE): a bare ERROR and a traceback.  Now
# +CME ERROR: 419, and the next command tries again.
def test_state_dir_replaced_by_a_file_before_the_first_file_command(emus, tmp_path):
    """The state dir (holding a committed UFS file) is moved away and replaced by a plain file
    before the host's first file command.  A module user expects a file-system error
    (+CME ERROR from Quectel's FILE table, 4xx) for AT+QFLST / AT+QFUPL, never a bare ERROR
    that looks like a syntax error, and no traceback; the dir back, the file is listed."""
    state = tmp_path / "st"
    (state / "ufs").mkdir(parents=True)
    (state / "ufs" / "keep.bin").write_bytes(b"keep")
    emu = emus(state)
    host = emu.host()
    shutil.move(state, tmp_path / "aside")
    state.write_text("not a directory")
    listing = host.at("AT+QFLST")
    refused = upload(host, "new.bin", b"abc")
    state.unlink()
    shutil.move(tmp_path / "aside", state)
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.bin",4\r\n\r\nOK\r\n'    # recovers
    assert re.fullmatch(rb"\r\n\+CME ERROR: 4\d\d\r\n", listing), listing
    assert re.fullmatch(rb"\r\n\+CME ERROR: 4\d\d\r\n", refused), refused
    assert "Traceback" not in emu.log(), emu.log()[-3000:]
    emu.stop()


# -- the --link's directory removed ---------------------------------------------------------------
def start_on_link_whose_dir_was_removed(emus, tmp_path):
    """Emulator A on links/modem; links/ removed while A runs (its link and lock with it);
    B started on the same --link.  Returns (A, A's host, B)."""
    links = tmp_path / "links"
    link = links / "modem"
    a = emus(tmp_path / "st-a", link=link)
    host_a = a.host()
    shutil.rmtree(links)
    assert host_a.at("AT+CSQ").endswith(b"\r\nOK\r\n")      # the open port does not care
    b = emus(tmp_path / "st-b", link=link)
    return a, host_a, b


def test_link_directory_removed_while_running(emus, tmp_path):
    """The --link's directory removed under a running emulator (a CI job cleaning /tmp):
    the host that has the port open keeps working; a second emulator may now take the
    link; the first one's clean stop exits 0 without a traceback and never removes the
    second one's link (it points to another pty), which keeps answering."""
    a, host_a, b = start_on_link_whose_dir_was_removed(emus, tmp_path)
    link = Path(b.link)
    b_target = os.readlink(link)
    assert host_a.at("ATI").endswith(b"\r\nOK\r\n")
    a.stop()
    assert os.readlink(link) == b_target
    host_b = b.host()
    assert host_b.at("AT+CSQ").endswith(b"\r\nOK\r\n")
    b.stop()
    assert not os.path.lexists(link)


# Was a bug, fixed: a clean stop removed the link's lock file whatever it was: after the link's
# directory was removed and made again by a second emulator, the first one's SIGTERM deleted the
# second's lock.  Only the lock file it holds (same inode) goes now.
def test_stopping_emulator_never_removes_another_running_emulators_link_lock(emus, tmp_path):
    a, host_a, b = start_on_link_whose_dir_was_removed(emus, tmp_path)
    lock = Path(b.link).with_name(".modem.lock")
    assert lock.read_text().strip() == str(b.pid)
    a.stop()
    assert lock.exists() and lock.read_text().strip() == str(b.pid)
    b.stop()


# -- few file descriptors ---------------------------------------------------------------------------
def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn):
        with conn:                                 # the modem's close gets a FIN back
            try:
                for data in iter(lambda: conn.recv(4096), b""):
                    conn.sendall(data)
            except OSError:
                pass
    threading.Thread(target=serve, daemon=True).start()
    return srv


def open_fds(pid: int) -> list[int]:
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def no_fd_left(pid: int, spare: int = 0) -> None:
    """RLIMIT_NOFILE of a running process lowered so that the next new descriptor fails
    (the lowest free number is the one the kernel would give), `spare` more allowed."""
    fds = set(open_fds(pid))
    lowest = next(n for n in range(len(fds) + 1) if n not in fds)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest + spare, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def fd_limit_back(pid: int) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(hard, 4096), hard))


def test_no_file_descriptor_left_sockets_and_files_fail_cleanly_then_recover(emus, tmp_path):
    """EC2x with its descriptors used up (the fd limit lowered to what is open): AT+QIOPEN
    (TCP and UDP) and AT+QSSLOPEN answer OK then their URC with a failure code -- 566, what
    the emulator reports for any socket that cannot be made (network.py: "EMFILE, ENOBUFS:
    566 too"; Quectel's 554 "create socket failed" would do as well for a driver, which only
    tells 0 from not 0) -- AT+QIGETERROR agrees, the id is free again; AT+QFREAD of an open
    handle is 411 (read failed) with its position kept; AT+QFUPL 409; AT&W ERROR; the log
    names "Too many open files".  Limit back: the same ids open and carry data, the handle
    reads, the upload and AT&W work."""
    srv = echo_server()
    port = srv.getsockname()[1]
    emu = emus(tmp_path / "st", "--route", f"tcp.example:7000=127.0.0.1:{port}")
    host = emu.host()
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert upload(host, "doc.txt", b"hello") == qfupl_ok(b"hello")
    handle = int(re.search(rb"\+QFOPEN: (\d+)", host.at('AT+QFOPEN="doc.txt",2')).group(1))
    try:
        no_fd_left(emu.pid)
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,0') == b"\r\nOK\r\n"
        assert host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n")) == b"+QIOPEN: 0,566\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,1,"UDP","tcp.example",7000,0,0') == b"\r\nOK\r\n"
        assert host.seen(re.compile(rb"\+QIOPEN: 1,\d+\r\n")) == b"+QIOPEN: 1,566\r\n"
        assert host.at('AT+QSSLOPEN=1,1,4,"tcp.example",7000,0') == b"\r\nOK\r\n"
        assert host.seen(re.compile(rb"\+QSSLOPEN: 4,\d+\r\n")) == b"+QSSLOPEN: 4,566\r\n"
        assert host.at(f"AT+QFREAD={handle},3") == b"\r\n+CME ERROR: 411\r\n"
        assert host.at(f"AT+QFPOSITION={handle}") == b"\r\n+QFPOSITION: 0\r\n\r\nOK\r\n"
        assert upload(host, "new.bin", b"abc") == b"\r\n+CME ERROR: 409\r\n"
        assert host.at("ATS7=44;&W") == b"\r\nERROR\r\n"
        assert host.at("AT+QISTATE").endswith(b"\r\nOK\r\n") and b"+QISTATE:" not in host.at("AT+QISTATE")
        emu.wait_log(r"WARNING .*TCP/IP open 0 .*Too many open files")
        emu.wait_log(r"AT\+QFREAD=\d+,3.*Too many open files")
    finally:
        fd_limit_back(emu.pid)
    assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,1') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n")) == b"+QIOPEN: 0,0\r\n"
    host.write("AT+QISEND=0,4\r")
    assert host.read_until(re.compile(rb"> |" + FINAL.pattern)).endswith(b"> ")
    host.write(b"ping")
    assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0,4\r\nping\r\n')               # (direct push: the echo came back)
    assert host.at(f"AT+QFREAD={handle},3") == b"\r\nCONNECT 3\r\nhel\r\nOK\r\n"
    assert upload(host, "new.bin", b"abc") == qfupl_ok(b"abc")
    assert host.at("ATS7=44;&W") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")
    emu.stop()
    srv.close()


def control(path: Path, request: bytes, timeout: float = 5) -> bytes:
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(timeout)
        c.connect(str(path))
        c.sendall(request)
        return c.makefile("rb").readline()


# Was a bug, fixed: a listener that could not accept (EMFILE) had asyncio log a traceback per
# pending connection (~100 within a millisecond).  Now one WARNING line per listener and retry.
def test_control_clients_beyond_the_fd_limit_are_one_log_line_and_served_later(emus, tmp_path):
    """More control-socket clients than descriptors left: the modem keeps answering its
    host, the clients that did not fit are served once descriptors are free again (asyncio
    retries accept after a second), and the log says it in one line, not a traceback
    flood."""
    ctl = tmp_path / "ctl"
    emu = emus(tmp_path / "st", "--control", str(ctl))
    host = emu.host()
    clients = []
    try:
        no_fd_left(emu.pid, spare=2)
        for _ in range(6):
            c = socket.socket(socket.AF_UNIX)
            c.connect(str(ctl))                 # the kernel queues them; accept() fails
            clients.append(c)
        emu.wait_log(r"Too many open files")
        assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")
    finally:
        for c in clients:
            c.close()
        fd_limit_back(emu.pid)
    assert b'"ok": true' in control(ctl, b'{"op": "state", "modem": 0}\n', timeout=10)
    assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")
    log = emu.log()
    assert "Traceback" not in log, f"{log.count('Traceback')} tracebacks; first:\n{log[log.find('Traceback') - 200:][:1200]}"
    assert len(re.findall(r"Too many open files|out of system resource", log)) <= 2, log[-2000:]
    emu.stop()


# -- two hosts on the pty at once -----------------------------------------------------------------
def raw_open(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    import tty
    tty.setraw(fd)
    return fd


def raw_read_until(fd: int, pattern: re.Pattern, timeout: float = 10) -> bytes:
    import select
    got = b""
    deadline = time.monotonic() + timeout
    while not pattern.search(got):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {pattern.pattern!r}; got {got!r}")
        if select.select([fd], [], [], left)[0]:
            try:
                got += os.read(fd, 4096)
            except BlockingIOError:
                pass
    return got


def test_two_hosts_on_the_pty_at_once_share_one_port(emus, tmp_path):
    """Two programs open the device at once (a driver plus a forgotten miniterm): as on a
    real serial port, the modem sees one input stream and its answers go to whichever side
    reads -- a line A writes is answered to B when only B reads.  A closing does not hang
    the modem up while B holds the port (B's next command is answered); both closed, the
    next host starts clean (nothing left over from them)."""
    emu = emus(tmp_path / "st")
    emu.host().close()
    emu.hosts.clear()
    a = raw_open(emu.link)
    b = raw_open(emu.link)
    try:
        os.write(a, b"ATE0\r")
        assert raw_read_until(b, FINAL).endswith(b"\r\nOK\r\n")
        os.write(a, b"AT+CGMM\r")
        assert raw_read_until(b, FINAL) == b"\r\nEC25\r\n\r\nOK\r\n"
        os.write(b, b"AT+CSQ\r")
        assert raw_read_until(b, FINAL).endswith(b"\r\nOK\r\n")
        os.write(b, b"AT+CSQ;+CSQ\r")                    # left unread by B when A goes
        os.close(a)
        a = -1
        time.sleep(0.2)                                   # (the modem's hang-up poll: 50 ms)
        os.write(b, b"AT+CGMM\r")
        got = raw_read_until(b, re.compile(rb"(\r\nOK\r\n.*){2}", re.S))
        assert got == b"\r\n+CSQ: 24,99\r\n\r\n+CSQ: 24,99\r\n\r\nOK\r\n\r\nEC25\r\n\r\nOK\r\n", got
        os.write(b, b"AT+CSQ\r")                          # left unread when B goes too
        time.sleep(0.1)
    finally:
        if a >= 0:
            os.close(a)
        os.close(b)
    wait_for(lambda: "host closed" in emu.log(), 10, "the hang-up")
    c = emu.host()
    assert c.quiet_for(0.3) == b""
    assert c.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    emu.stop()
