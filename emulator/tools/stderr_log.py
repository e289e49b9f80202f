"""The CLI's log handler: lines to stderr that never block the event loop, and no thread.

A stderr nobody reads (a parent's pipe that filled up) must not stall the modems.  Where
stderr is a pipe, a tty or a pty, the handler writes through an open file description of
its own, non-blocking (/proc/self/fd/2: the parent's description keeps its flags); what the
pipe does not take waits -- at most MAX_WAITING lines; past that new ones are dropped and
counted, and the count is written when the pipe moves again -- and leaves when the event
loop sees the pipe writable again, or at exit (drain).  A regular file takes its lines
at once.  Anything else (a socket: /proc/self/fd cannot open it) gets a thread of its own,
started by the first line.

Why not simply a thread: a process that has ever had a second thread pays glibc's arena
lock on every calloc() from then on (calloc has no per-thread cache), and Mbed TLS's bignum
code calls it ~7,800 times per ECDHE handshake: every AT+QSSLOPEN ~8% slower (measured:
README "Performance").
"""
from __future__ import annotations

import asyncio
import logging
import os
import queue
import select
import stat
import threading
import time
from collections import deque

MAX_WRITE = 64 * 1024        # waiting lines joined into one write(2) up to this size
NOTICE = "modem-emulator: {} log lines dropped (stderr was not read)\n"


class StderrLog(logging.Handler):
    MAX_WAITING = 10_000

    def __init__(self, stream) -> None:
        super().__init__()
        self.stream = stream
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._lock = threading.RLock()       # emit() may come from any thread, or a signal handler
        self._waiting: deque[bytes] = deque()
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None    # the loop seen last
        self._watched: asyncio.AbstractEventLoop | None = None  # the loop watching the fd
        self._fd, self._direct = _own_description(stream)
        self._lines: queue.Queue[str] | None = None           # the thread's (a socket)
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        """"nonblocking" (a pipe, tty or pty), "direct" (a regular file), "thread" (else)."""
        return "nonblocking" if self._fd is not None else "direct" if self._direct else "thread"

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        if self._fd is not None:
            self._queue(line.encode(self._encoding, "backslashreplace"))
        elif self._direct:
            with self._lock:
                try:
                    self.stream.write(line)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass                     # stderr closed: the lines have nowhere to go
        else:
            self._to_thread(line)

    # -- a pipe, a tty, a pty: non-blocking writes, the loop watching -------------------
    def _queue(self, data: bytes) -> None:
        with self._lock:
            if len(self._waiting) >= self.MAX_WAITING:
                self._dropped += 1
                return
            self._waiting.append(data)
            if self._flush():
                return
        self._watch()

    def _flush(self) -> bool:
        """Write what waits until the pipe takes no more (the lock held); True when
        nothing is left."""
        waiting = self._waiting
        if self._dropped:                    # (the count first, when the pipe moves again)
            waiting.appendleft(NOTICE.format(self._dropped).encode())
            self._dropped = 0
        while waiting:
            if len(waiting) == 1 or len(waiting[0]) >= MAX_WRITE:
                count, data = 1, waiting[0]
            else:
                parts, size = [], 0
                for item in waiting:
                    if size and size + len(item) > MAX_WRITE:
                        break
                    parts.append(item)
                    size += len(item)
                count, data = len(parts), b"".join(parts)
            try:
                written = os.write(self._fd, data)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                waiting.clear()              # the reader went (EPIPE): nowhere to go
                return True
            for _ in range(count):
                waiting.popleft()
            if written < len(data):
                waiting.appendleft(data[written:])
                return False
        return True

    def _watch(self) -> None:
        """Have the event loop write the rest when the pipe is writable (a line logged
        on another thread asks the loop it saw last; before or after any loop, the
        lines wait for the next line or for drain())."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(self._watch_here)
                except RuntimeError:
                    pass                     # (closed meanwhile)
            return
        self._loop = loop
        self._watch_here()

    def _watch_here(self) -> None:
        loop = asyncio.get_running_loop()
        if self._watched is loop and not loop.is_closed():
            return
        try:
            loop.add_writer(self._fd, self._writable)
        except (OSError, ValueError, RuntimeError):
            return                           # (the lines wait for drain())
        self._watched = loop

    def _writable(self) -> None:
        with self._lock:
            done = self._flush()
        if done and self._watched is not None:
            self._watched.remove_writer(self._fd)
            self._watched = None

    # -- a socket (or what /proc/self/fd cannot reopen): a thread --------------------------
    def _to_thread(self, line: str) -> None:
        with self._lock:
            if self._thread is None:
                self._lines = queue.Queue(self.MAX_WAITING)
                self._thread = threading.Thread(target=self._write_lines, name="log-writer", daemon=True)
                self._thread.start()
            try:
                self._lines.put_nowait(line)
            except queue.Full:
                self._dropped += 1

    def _write_lines(self) -> None:
        while True:
            line = self._lines.get()
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            try:
                if dropped:
                    self.stream.write(NOTICE.format(dropped))
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass
            finally:
                self._lines.task_done()

    # -- at exit ----------------------------------------------------------------------------
    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` s for the waiting lines to be written (at exit)."""
        if self._thread is not None:
            done = threading.Event()

            def wait() -> None:
                self._lines.join()
                done.set()
            threading.Thread(target=wait, daemon=True).start()
            done.wait(timeout)
            return
        if self._fd is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._flush():
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                select.select([], [self._fd], [], left)
            except (OSError, ValueError):
                return


def _own_description(stream) -> tuple[int | None, bool]:
    """(fd, direct): a non-blocking description of the stream's pipe, tty or pty of our own
    (fd); direct True for a regular file (its writes do not wait for a reader); (None,
    False): neither (a socket, no file descriptor) -- a thread writes."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return None, False
    if stat.S_ISREG(mode):
        return None, True
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        return None, False
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None, False
    return own, False
