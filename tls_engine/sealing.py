"""SealJob: a session's outgoing plaintext encrypted into TLS records off the caller's thread.

python-mbedtls holds the GIL in every call, so a program that reads a pty and encrypts in
one thread does one after the other; Mbed TLS's own ``mbedtls_ssl_write`` called through
ctypes (tls_engine.native: ``NativeSsl.write_nogil``, the only place that knows how)
releases it.  A SealJob is that call
-- WRITE_CHUNK bytes at a time, the output ring drained after each record -- packaged so
that the session's owner can run it on a worker thread while its loop goes on reading.

The engine stays sans-IO: TlsClientSession makes the jobs and hands them out
(``take_job``); where one runs is the owner's choice.  A job runs once: whoever claims it
first (the worker, or the session itself when it needs its context back before the worker
got to it: ``settle``).  Nothing else touches the session's TLSWrappedBuffer while a job
is in flight -- the session's own methods settle first.
"""
from __future__ import annotations

import threading

WANT_READ = -0x6900               # MBEDTLS_ERR_SSL_WANT_READ: output ring full, or a
WANT_WRITE = -0x6880              # renegotiation wants input (WANT_WRITE: likewise)


class SealJob:
    __slots__ = ("data", "taken", "out", "rc", "exc", "submitted",
                 "_ssl", "_buffer", "_take", "_chunk", "_claim", "_done")

    def __init__(self, ssl, buffer, data: bytes, take, chunk: int) -> None:
        self.data = data                  # plaintext (kept alive: the C call reads it in place)
        self.taken = 0                    # bytes of data the library took
        self.out: list[bytes] = []        # the records, in order
        self.rc: int | None = None        # the library's answer when it stopped early (<= 0)
        self.exc: BaseException | None = None
        self.submitted = False            # take_job() handed it out
        self._ssl = ssl                   # tls_engine.native.NativeSsl of the buffer
        self._buffer = buffer
        self._take = take                 # native.take_outgoing
        self._chunk = chunk
        self._claim = threading.Lock()    # held by whoever runs it: it runs once
        self._done = threading.Event()

    def claim(self) -> bool:
        """True for the one caller that is to run it (the others wait())."""
        return self._claim.acquire(blocking=False)

    def run(self) -> None:
        """Encrypt, on any thread; returns at once when someone else claimed it first.
        Never raises (what failed is in rc / exc)."""
        if not self.claim():
            return
        self.work()

    def work(self) -> None:
        """The encryption itself (the caller holds the claim)."""
        try:
            data = self.data
            size = len(data)
            while self.taken < size:
                rc = self._ssl.write_nogil(data, self.taken, min(self._chunk, size - self.taken))
                if rc <= 0:
                    self.rc = rc
                    break
                self.taken += rc
                self.out.append(self._take(self._buffer))
        except BaseException as exc:      # noqa: BLE001 - reported by the session, never lost
            self.exc = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self) -> None:
        self._done.wait()
