"""Issue 9, items 8 and 10: the command line survives a closed terminal cleanly and
keeps TLS secrets private."""
from __future__ import annotations

import fcntl
import os
import pty
import signal
import stat
import subprocess
import sys
import termios
import time

from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, first_line, start

def finish(proc: subprocess.Popen, timeout: float = 10) -> int:
    try:
        return proc.wait(timeout)
    finally:
        proc.kill()
        proc.wait()


def test_sighup_removes_the_link_and_exits_0(tmp_path):
    link = tmp_path / "modem"
    proc = start("--link", str(link), "--state-dir", str(tmp_path / "s"))
    assert first_line(proc) == str(link)
    proc.send_signal(signal.SIGHUP)
    assert finish(proc) == 0
    assert not link.is_symlink()


def test_closing_the_terminal_of_make_run_removes_the_link(tmp_path):
    """What `make run` sees: the emulator runs in a terminal (its controlling tty) and
    the terminal window is closed, so the kernel hangs up the session."""
    link = tmp_path / "modem"
    master, slave = pty.openpty()

    def own_terminal():                    # session leader with the pty as controlling tty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--link", str(link),
                             "--state-dir", str(tmp_path / "s")], cwd=ROOT,
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=own_terminal)
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        while b"Ctrl+C" not in seen and time.monotonic() < deadline:
            seen += os.read(master, 4096)
        assert link.is_symlink(), seen
    finally:
        os.close(master)                   # the terminal goes away: SIGHUP to the session
    assert finish(proc) == 0
    assert not link.is_symlink()


def test_keylog_is_created_private(tmp_path):
    keylog = tmp_path / "keys.log"
    old = os.umask(0o022)
    try:
        proc = start("--keylog", str(keylog), "--state-dir", str(tmp_path / "s"))
    finally:
        os.umask(old)
    try:
        first_line(proc)
        assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    finally:
        proc.terminate()
        assert finish(proc) == 0


def test_existing_wider_keylog_is_kept_appended_and_warned_about(tmp_path):
    """A key log the user made readable on purpose (a shared SSLKEYLOGFILE) keeps its
    mode and content; the log says once that TLS secrets are readable by others."""
    keylog = tmp_path / "keys.log"
    keylog.write_text("CLIENT_RANDOM old line\n")
    keylog.chmod(0o644)
    proc = start("--keylog", str(keylog), "--state-dir", str(tmp_path / "s"))
    try:
        Host(first_line(proc)).close()
    finally:
        proc.terminate()
        assert finish(proc) == 0
    err = proc.stderr.read()
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o644
    assert keylog.read_text() == "CLIENT_RANDOM old line\n"
    warnings = [line for line in err.splitlines() if "WARNING" in line and str(keylog) in line]
    assert len(warnings) == 1 and "0644" in warnings[0], err
