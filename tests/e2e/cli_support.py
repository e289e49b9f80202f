"""The CLI as a user starts it: a subprocess of `python -m emulator`, its first
stdout line (the device path), and a signal to stop it."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


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


def refused(*args: str) -> tuple[int, str, str]:
    """Start the CLI with args it must refuse: (exit code, stdout, stderr)."""
    proc = start(*args)
    out, err = proc.communicate(timeout=20)
    return proc.returncode, out, err
