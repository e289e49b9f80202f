"""The CLI as a user starts it: a subprocess of `python -m emulator`, its first
stdout line (the device path), and a signal to stop it."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# File modes (chmod 0500, 0000) bind a normal user as they are; root ignores them unless
# CAP_DAC_OVERRIDE and its friends leave its bounding set: setpriv does that for the child.
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]
needs_file_modes = pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                                      reason="root without setpriv: chmod does not bind it")


def modes_bind() -> list[str]:
    """The command prefix under which the emulator obeys file modes: none for a normal
    user, setpriv for root."""
    return NO_DAC if os.geteuid() == 0 else []


def start(*args: str, **kwargs) -> subprocess.Popen:
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([sys.executable, "-m", "emulator", *args], cwd=ROOT, text=True, **kwargs)


def first_line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise AssertionError(f"no device path; stderr: {proc.stderr.read()}")
    return line


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(10)
    finally:
        proc.kill()


def came_up_after_a_stop(script: str, tmp_path: Path) -> tuple[str, int, str]:
    """Run `python -c script <state dir> <link>`, a start-up meant to be stopped by a signal
    it sends itself: (the device path it printed if it came up anyway, else "", its exit
    code, its stderr).  One that came up is stopped cleanly (SIGTERM, the loop's handlers)."""
    out_path, err_path = tmp_path / "out", tmp_path / "err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "state"), str(tmp_path / "modem")],
                                cwd=ROOT, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 40
            while proc.poll() is None and time.monotonic() < deadline:
                if out_path.read_text().strip():          # it came up: the stop was lost
                    break
                time.sleep(0.05)
            started = out_path.read_text().strip()
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)          # (the loop's handlers: a clean stop)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    return started, proc.returncode, err_path.read_text()


def refused(*args: str) -> tuple[int, str, str]:
    """Start the CLI with args it must refuse: (exit code, stdout, stderr)."""
    proc = start(*args)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out, err


class Cli:
    """`python -m emulator --offline --state-dir D --link D/modem <args>`; log in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.dir = tmp_path
        self.dev = str(tmp_path / "modem")
        self.log_path = tmp_path / "emulator.log"
        self._log = open(self.log_path, "w")
        self.proc = start("--offline", "--state-dir", str(tmp_path / "state"), "--link", self.dev,
                          "--log-level", "INFO", *args, stderr=self._log)
        line = self.proc.stdout.readline().strip()
        if line != self.dev:
            self.proc.kill()
            raise AssertionError(f"CLI did not print its link: {line!r}; log: {self.log()}")
        self.stopped = False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM; exit status 0 and a log without a traceback or an ERROR-level record (an
        INFO line may quote a command's ERROR answer)."""
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        finally:
            self.proc.kill()
            self._log.close()
        log = self.log_path.read_text(errors="replace")
        assert rc == 0, f"emulator exit status {rc}; log:\n{log[-4000:]}"
        assert "Traceback" not in log, log[-4000:]
        assert not re.search(r"^\S+ \S+ (ERROR|CRITICAL) ", log, re.M), log[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if not self._log.closed:
            self._log.close()


def cli_factory(tmp_path: Path):
    """The body of a `cli` fixture: yields start(*args) -> Cli (each in tmp_path), killed at
    the end."""
    started: list[Cli] = []

    def start_cli(*args: str) -> Cli:
        emu = Cli(tmp_path, *args)
        started.append(emu)
        return emu
    yield start_cli
    for emu in started:
        emu.kill()
