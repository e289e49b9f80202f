"""The CLI's log handler: lines to stderr that never block the event loop, and no thread.

A stderr nobody reads (a parent's pipe that filled up) must not stall the modems.  Where
stderr is a pipe, a tty or a pty, the handler writes through an open file description of
its own, non-blocking (/proc/self/fd/2: the parent's description keeps its flags); what the
pipe does not take waits -- at most MAX_WAITING lines; past that new ones are dropped and
counted, and the count is written when the pipe moves again -- and leaves when the event
loop sees the pipe writable again, or at exit (drain).  A regular file takes its lines
at once.  Anything else (a socket: /proc/self/fd cannot open it; a pty master, whose path
would open a new pty) gets a thread of its own, started by the first line; no stderr at all
(2>&-) takes nothing.  The CLI's start-up hints go the same way (say()).

Why not simply a thread: a process that has ever had a second thread pays glibc's arena
lock on every calloc() from then on (calloc has no per-thread cache), and Mbed TLS's bignum
code calls it ~7,800 times per ECDHE handshake: every AT+QSSLOPEN ~8% slower (measured:
README "Benchmarks").
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
        self._partial = b""                  # the unwritten tail of what a write took in part
        self._flushing = False               # (a line logged while a flush writes: it waits)
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None    # the loop seen last
        self._watched: asyncio.AbstractEventLoop | None = None  # the loop watching the fd
        self._fd, self._direct = _own_description(stream)
        self._lines: queue.Queue[str] | None = None           # the thread's (a socket)
        self._thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        """"nonblocking" (a pipe, FIFO, tty or pty slave), "direct" (a regular file), "none"
        (no stderr: 2>&-), "thread" (else: a socket, a pty master)."""
        if self.stream is None:
            return "none"
        return "nonblocking" if self._fd is not None else "direct" if self._direct else "thread"

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop that writes what waits (a line another thread logs asks it)."""
        self._loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.say(line)

    def say(self, text: str) -> None:
        """Text for stderr as it is (the CLI's start-up hints), the way log lines go."""
        if self.stream is None:
            return                           # stderr closed: the lines have nowhere to go
        if self._fd is not None:
            self._queue(text.encode(self._encoding, "backslashreplace"))
        elif self._direct:
            with self._lock:
                try:
                    self.stream.write(text)
                    self.stream.flush()
                except (OSError, ValueError):
                    pass                     # stderr closed: the lines have nowhere to go
        else:
            self._to_thread(text)

    # -- a pipe, a tty, a pty: non-blocking writes, the loop watching -------------------
    def _queue(self, data: bytes) -> None:
        try:
            self._loop = asyncio.get_running_loop()     # (the one a worker's lines will ask)
        except RuntimeError:
            pass
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
        nothing is left.  What a write leaves is kept apart (_partial) and goes first, so
        nothing -- the dropped count, a later line -- lands inside a line; a line logged
        while this writes (a signal handler on this thread) only waits: the loop here, or
        the writer callback it asks for, takes it."""
        if self._flushing:
            return False
        self._flushing = True
        try:
            waiting = self._waiting
            while True:
                if self._partial:
                    data, self._partial = self._partial, b""
                else:
                    if self._dropped:        # (the count first, when the pipe moves again)
                        waiting.appendleft(NOTICE.format(self._dropped).encode())
                        self._dropped = 0
                    if not waiting:
                        return True
                    parts, size = [], 0
                    while waiting and (not size or size + len(waiting[0]) <= MAX_WRITE):
                        item = waiting.popleft()
                        parts.append(item)
                        size += len(item)
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                try:
                    written = os.write(self._fd, data)
                except (BlockingIOError, InterruptedError):
                    self._partial = data
                    return False
                except OSError:
                    waiting.clear()          # the reader went (EPIPE): nowhere to go
                    return True
                if written < len(data):
                    self._partial = data[written:]
                    return False
        finally:
            self._flushing = False

    def _watch(self) -> None:
        """Have the event loop write the rest when the pipe is writable (a line logged
        on another thread asks the loop attach() gave, or the loop seen last; before or
        after any loop, the lines wait for the next line or for drain())."""
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
            done = self._flush() and not self._waiting and not self._partial
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
            except Exception:                # (closed, gone: the lines have nowhere to go)
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
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):
        return None, False
    if stat.S_ISREG(st.st_mode):
        return None, True
    if not (stat.S_ISFIFO(st.st_mode) or (stat.S_ISCHR(st.st_mode) and _reopens_itself(st.st_rdev))):
        return None, False
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return None, False
    return own, False


def _reopens_itself(rdev: int) -> bool:
    """A character device whose /proc/self/fd path opens the same device again: /dev/null,
    a pty slave, a terminal (/dev/tty, the consoles, serial ports) -- not /dev/ptmx (a pty
    MASTER: opening it makes a new pty pair) nor anything unknown."""
    major, minor = os.major(rdev), os.minor(rdev)
    return (major, minor) in ((1, 3), (5, 0), (5, 1)) or 136 <= major <= 143 or major == 4
