"""The two-port rig of the fairness tests: a host streams into one PtyPort while another
host, on a second PtyPort of the same loop, writes a command at an exact moment (between two
of the streamer's pty reads, by wrapping transport's os.read).  Real ptys."""
from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from typing import Callable

import pytest

from emulator.io import transport
from emulator.io.transport import PtyPort
from tests.unit.io.test_transport_paused import until

OS_READ = os.read                        # (the rig wraps transport's os.read itself)


async def attach(port: PtyPort) -> int:
    fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
    await until(lambda: port.attached)
    return fd


async def command_beside_a_stream(total: int, at_read: int = 1,
                                  read: Callable[[int, int], bytes] = OS_READ) -> tuple[bytes, dict[str, int]]:
    """`total` bytes streamed into one port; the other port's host writes "AT\\r" right after
    the streamer's `at_read`-th pty read that returned data (`read`: how that read is made).
    Returns what the quiet port got and the marks: "written" and "answered", each the
    streamed byte count handed on at that moment."""
    loop = asyncio.get_running_loop()
    streamed, quiet = bytearray(), bytearray()
    marks: dict[str, int] = {}

    def on_quiet(data: bytes) -> None:
        quiet.extend(data)
        marks.setdefault("answered", len(streamed))

    busy = PtyPort(loop, streamed.extend)
    calm = PtyPort(loop, on_quiet)
    busy_fd, calm_fd = await attach(busy), await attach(calm)
    announced = select.epoll()
    announced.register(calm.master, select.EPOLLIN)
    reads = 0

    def hooked(fd: int, n: int) -> bytes:
        nonlocal reads
        data = read(fd, n)
        if fd == busy.master and data and "written" not in marks:
            reads += 1
            if reads == at_read:        # the quiet host writes now, mid-stream
                os.write(calm_fd, b"AT\r")
                # The kernel hands a pty write to the other side from a worker, which
                # stores the bytes (a select or a read sees them) and then wakes the
                # waiters: only then do epolls (the loop's, the ports') report them.
                # The moment counts from that wake-up, seen by an epoll of the rig's
                # own (newest waiter, woken first: the others follow under the same
                # lock, hence the short pause).
                assert announced.poll(2)
                time.sleep(0.002)
                marks["written"] = len(streamed)
        return data

    writer = threading.Thread(target=lambda: os.write(busy_fd, b"x" * total), daemon=True)
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(transport.os, "read", hooked)
        writer.start()
        await until(lambda: len(streamed) == total and quiet)
    finally:
        monkeypatch.undo()
        writer.join(5)
        announced.close()
        os.close(busy_fd)
        os.close(calm_fd)
        busy.close()
        calm.close()
    return bytes(quiet), marks
