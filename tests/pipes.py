"""Pipes for the tests of the CLI's log and stdout writers (emulator/tools/stderr_log.py):
a reader that takes what comes until the writer goes quiet, a pipe full before the child
starts, a process's thread count (tests/conftest.py has the small_pipe fixture)."""
from __future__ import annotations

import fcntl
import os
import time
from typing import Callable

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def read_until_idle(fd: int, idle: float = 0.3, tick: Callable[[], None] | None = None) -> bytes:
    """What a pipe's reader gets until nothing comes for `idle` s or the writers are gone;
    `tick()` runs before every read (a StderrLog's drain, when the test is its loop)."""
    os.set_blocking(fd, False)
    got = bytearray()
    last = time.monotonic()
    while time.monotonic() - last < idle:
        if tick is not None:
            tick()
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.005)
            continue
        if not chunk:
            break
        got += chunk
        last = time.monotonic()
    return bytes(got)


def full_pipe() -> tuple[int, int]:
    """A pipe already full (a parent or CI log collector that stopped reading); its write
    end blocking again, as a child inherits it."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return r, w


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))

