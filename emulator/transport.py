"""The pty a host opens as its serial port.

The emulator keeps its own handle on the slave side open, so the master never
sees EIO/HUP while no host holds the device: the host may close and reopen it
any number of times (pyserial flushes stale input on open).  Should the master
report EIO/HUP anyway, reading pauses and resumes by polling.
Output is written non-blocking; what the pty cannot take yet waits in a buffer,
and `backlog` lets producers (sockets) hold back instead of losing data.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import tty
from pathlib import Path
from typing import Callable

log = logging.getLogger("emulator.pty")


class LinkError(Exception):
    pass


class PtyPort:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_data: Callable[[bytes], None],
                 link: Path | None = None) -> None:
        self.loop = loop
        self.on_data = on_data
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self._slave)
        self.link = Path(link) if link else None
        self._out = bytearray()
        self._writing = False
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        if self.link:
            make_link(self.link, self.device)
        loop.add_reader(self.master, self._readable)

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.device

    @property
    def backlog(self) -> int:
        return len(self._out)

    def write(self, data: bytes) -> None:
        if self._closed or not data:
            return
        self._out += data
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.master, self._out[:65536])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.EAGAIN):
                    break
                raise
            del self._out[:n]
        want = bool(self._out)
        if want and not self._writing:
            self.loop.add_writer(self.master, self._flush)
        elif not want and self._writing:
            self.loop.remove_writer(self.master)
        self._writing = want

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:                      # no slave holder: wait for the next open
            self.loop.remove_reader(self.master)
            self._retry = self.loop.call_later(0.1, self._resume_reading)
            return
        try:
            self.on_data(data)
        except Exception:                 # nothing the host sends may stop the port
            log.exception("modem failed on input %r", data[:64])

    def _resume_reading(self) -> None:
        if not self._closed:
            self.loop.add_reader(self.master, self._readable)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry:
            self._retry.cancel()
        self.loop.remove_reader(self.master)
        if self._writing:
            self.loop.remove_writer(self.master)
        if self.link:
            remove_link(self.link, self.device)
        os.close(self.master)
        os.close(self._slave)


def make_link(link: Path, target: str) -> None:
    """Create link -> target, replacing only a stale link to a vanished pty."""
    if link.is_symlink():
        current = os.readlink(link)
        if current.startswith("/dev/pts/") and not os.path.exists(current):
            link.unlink()
        else:
            raise LinkError(f"{link} exists and points to {current}: not replacing it")
    elif link.exists():
        raise LinkError(f"{link} exists and is not a link: not replacing it")
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def remove_link(link: Path, target: str) -> None:
    try:
        if link.is_symlink() and os.readlink(link) == target:
            link.unlink()
    except OSError as exc:
        log.warning("could not remove %s: %s", link, exc)
