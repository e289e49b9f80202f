"""One worker thread per process for the TLS engine's seal jobs (tls_engine/sealing.py).

The event loop reads the pty, runs the AT interpreter and writes sockets; encrypting the
host's bytes into TLS records is the one piece of work that can leave it, because the
native write releases the GIL.  In transparent mode that is what lets a stream go as fast
as the pty delivers (make bench, "transparent mode"): the loop reads the next slice while
the worker seals the last.

One thread for every modem of the process: jobs run in the order they came, and each
job's `done` goes back to the loop that submitted it (call_soon_threadsafe).  A job
whose loop has gone (the emulator stopping) is run and dropped.  The thread is a daemon:
a process that ends does not wait for it.

MODEM_EMULATOR_OFFLOAD=0 in the environment keeps all encryption on the loop thread (the
behaviour before this existed; make bench compares both).
"""
from __future__ import annotations

import asyncio
import os
import queue
import threading
from typing import Callable

from emulator.logsafe import get_logger

log = get_logger("emulator.offload")

ENABLED = os.environ.get("MODEM_EMULATOR_OFFLOAD", "1") != "0"


class Worker:
    def __init__(self) -> None:
        self._jobs: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.jobs_run = 0                 # (tests: the work went through this thread)

    def submit(self, run: Callable[[], None], loop: asyncio.AbstractEventLoop,
               done: Callable[[], None]) -> None:
        """run() on the worker, then done() on `loop`."""
        if self._thread is None:
            with self._start:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name="tls-seal", daemon=True)
                    self._thread.start()
        self._jobs.put((run, loop, done))

    def _serve(self) -> None:
        while True:
            run, loop, done = self._jobs.get()
            try:
                run()
            except BaseException:         # noqa: BLE001 - a job reports its own failures
                log.exception("seal job failed")
            self.jobs_run += 1
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:          # the loop is closed: nobody waits for it
                pass


WORKER = Worker()
