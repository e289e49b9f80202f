"""TlsClientSession: a sans-IO (D)TLS client over python-mbedtls' TLSWrappedBuffer.

No sockets, threads or asyncio: the emulator feeds inbound bytes with receive(),
sends what outgoing() returns and reacts to events(). Rules this module keeps
(python-mbedtls 2.10.1 behaviour, see tls_engine/README.md "Driving the wrapper"):
* the first fatal Mbed TLS error ends the session (the wrapper silently resets its
  context, which would otherwise start a new ClientHello on the next call);
* decrypted data is drained with readinto() until WantReadError, never read();
* the wrapper's 32 KiB ring buffers are never overfilled: input is fed in pieces
  no larger than the free space (native.feed), writes are <= 16 KiB and output is
  drained after each one (native.take_outgoing);
* nothing below the wrapper's public API is touched here: what needs its private
  names goes through tls_engine.native, which falls back to the public API when a
  wheel lacks them;
* a handshake flight is coalesced into one outgoing chunk (TLS), since flushing
  per step costs a Nagle/delayed-ACK round trip.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Hashable

from . import ciphers as cs
from .config import EnginePlan, build_plan, client_context
from .errors import (BAD_CONFIG, HANDSHAKE_FAILED, MBEDTLS_BAD_CERTIFICATE_MSG, MBEDTLS_BAD_SERVER_HELLO,
                     MBEDTLS_BAD_VERSION, MBEDTLS_FEATURE_UNAVAILABLE,
                     MBEDTLS_INVALID_RECORD,
                     MBEDTLS_PEER_CLOSE_NOTIFY, MBEDTLS_TIMEOUT, TIMED_OUT,
                     PROTOCOL_ERROR, VERIFY_FAILED, AppData, EngineConfigError,
                     HandshakeComplete, PeerClosed, TlsFailure, describe_alert,
                     describe_mbedtls_error)
from .datagrams import pack_datagrams
from .resumption import Resumption, SessionCache, settings_fingerprint
from .records import (DTLS_MAX_DATAGRAM, HS_CERTIFICATE, HS_SERVER_HELLO, HandshakeSniffer, chain_mbedtls_keeps,
                      dtls_record_versions, parse_certificate_list)
from .sealing import WANT_READ, WANT_WRITE, SealJob
from .settings import DTLS1_0, SSL3_0, TLS1_2, TlsSettings

WRITE_CHUNK = 16 * 1024          # one TLS record's worth of plaintext per write()
DTLS_WRITE_CHUNK = 1460          # DTLS: one record per datagram, within a path MTU of 1500 (RFC
                                 # 6347 4.1.1), as AT+QSSLSEND's largest send is
OFFLOAD_MIN = 4096               # with offload: a send this large (or one behind a job) is
                                 # sealed by a job, a smaller one at once
JOB_MAX = 64 * 1024              # plaintext per job (bounds how long settle() may wait)
DTLS_TIMEOUT_MIN = 1.0           # Mbed TLS defaults (RFC 6347 §4.2.4.1): 1 s doubling to 60 s
DTLS_TIMEOUT_MAX = 60.0
_RECHECK = 0.02                  # Mbed TLS's own timer not yet expired: look again soon
_MIN_WAIT = 0.001                # the shortest wait for a timer that has not expired
_RING_RETRY = 16 * 1024          # a flight this big may have filled the wrapper's output ring
_UNSNIFFED_MAX = 64 * 1024       # server bytes put aside unread (see _sniff) before they are read
_MAX_HANDSHAKE_MESSAGE = 16384 - 4   # Mbed TLS's input record content less the message header

_VERSION_NAMES = {"TLSv1": "TLSv1.0", "TLSv1_1": "TLSv1.1", "TLSv1_2": "TLSv1.2",
                  "TLSv1_3": "TLSv1.3", "DTLSv1_0": "DTLSv1.0", "DTLSv1_2": "DTLSv1.2"}
_WIRE_VERSIONS = {b"\x03\x00": "SSLv3.0", b"\x03\x01": "TLSv1.0", b"\x03\x02": "TLSv1.1",
                  b"\x03\x03": "TLSv1.2", b"\x03\x04": "TLSv1.3", b"\xfe\xff": "DTLSv1.0",
                  b"\xfe\xfd": "DTLSv1.2"}
_TLS1_3 = b"\x03\x04"

# The library's names, bound by the first start() (importing mbedtls and running the
# native self-check takes tens of ms, which the emulator's start-up must not pay); plain
# globals after that, so the hot paths (every handshake step, receive, send, output
# collection) do not run an import statement each time.
TLSError = WantReadError = WantWriteError = RaggedEOF = None
feed = take_outgoing = handshake_over = input_pending = None


def _bind_library() -> None:
    global TLSError, WantReadError, WantWriteError, RaggedEOF, feed, take_outgoing, handshake_over, input_pending
    from mbedtls.exceptions import TLSError
    from mbedtls.tls import RaggedEOF, WantReadError, WantWriteError

    from .native import feed, handshake_over, input_pending, take_outgoing


@functools.lru_cache(maxsize=64)
def _records_draw_no_random(cipher: str, version: str) -> bool:
    """Whether Mbed TLS seals this suite's records without its random generator: AEAD
    (GCM, CCM, ChaCha20-Poly1305: the explicit nonce is the record counter), stream and
    NULL ciphers, and CBC under TLS 1.0 (implicit IV).  CBC under TLS 1.1/1.2 draws a fresh
    IV per record from python-mbedtls' one module-wide CTR_DRBG, which has no lock of its
    own (the bundled library is built without MBEDTLS_THREADING_C): only the GIL keeps two
    users apart, so those records are never sealed by a job, whose write runs without it."""
    name = cipher.upper()
    if any(mark in name for mark in ("-GCM-", "-CCM", "CHACHA20", "-RC4-", "-NULL-")):
        return True
    return "-CBC-" in name and version == "TLSv1"


# Mbed TLS 2.28's client handshake states (ssl->state: the step it does next): past
# SERVER_CERTIFICATE it has taken the server's Certificate message (or skipped it: PSK)
MBEDTLS_SERVER_CERTIFICATE = 3
# The one failure Mbed TLS's own chain check gives under VERIFY_OPTIONAL at that step (a
# chain it parsed and walked, too long: MBEDTLS_ERR_X509_FATAL_ERROR) -- the chain's verdict;
# its other failures there (X.509 parse errors, a message it cannot take) are its own
MBEDTLS_X509_FATAL_ERROR = 0x3000


def _certificate_less(suite: str | None) -> bool:
    """A PSK suite whose server sends no Certificate (PSK, DHE-PSK, ECDHE-PSK; RSA-PSK has one)."""
    return bool(suite) and suite.startswith(("TLS_PSK_", "TLS_DHE_PSK_", "TLS_ECDHE_PSK_"))


def _suite_at(body: bytes) -> int:
    """Where a ServerHello body's cipher suite starts (after version 2, random 32, session_id
    length 1 + id); len(body) if the body ends before that."""
    return 35 + body[34] if len(body) >= 35 else len(body)


def _chosen_suite(body: bytes) -> str | None:
    """The suite a ServerHello body names (IANA name; None: cut short or unknown)."""
    at = _suite_at(body)
    if len(body) < at + 2:
        return None
    return cs.suite_name(int.from_bytes(body[at:at + 2], "big"))


def _chosen_version(body: bytes) -> bytes:
    """The version a ServerHello body chose: its supported_versions extension's (TLS 1.3, RFC
    8446 4.2.1: the legacy field then says 3.3; a HelloRetryRequest too), else its version."""
    at = _suite_at(body) + 3                                     # suite 2, compression 1
    end = min(len(body), at + 2 + int.from_bytes(body[at:at + 2], "big"))
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(body[at:at + 2], "big"), int.from_bytes(body[at + 2:at + 4], "big")
        if kind == 0x002B and size == 2 and at + 6 <= end:
            return bytes(body[at + 4:at + 6])
        at += 4 + size
    return bytes(body[:2])


class _Pieces:
    """Bytes send() accepted behind a seal job: the pieces as given, copied only when a job
    takes more than one of them (a bytearray would copy each piece in, then out again)."""
    __slots__ = ("pieces", "size")

    def __init__(self) -> None:
        self.pieces: list[bytes] = []
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        if data:
            self.pieces.append(data)
            self.size += len(data)

    def clear(self) -> None:
        self.pieces.clear()
        self.size = 0

    def take(self, n: int | None = None) -> bytes:
        """The first n bytes (all of them by default), removed."""
        pieces = self.pieces
        if n is None or n >= self.size:
            out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            self.clear()
            return out
        taken, size = [], 0
        while size < n:
            piece = pieces[0]
            if size + len(piece) <= n:
                taken.append(pieces.pop(0))
                size += len(piece)
            else:
                cut = n - size
                taken.append(piece[:cut])
                pieces[0] = piece[cut:]
                size = n
        self.size -= n
        return taken[0] if len(taken) == 1 else b"".join(taken)


class TlsClientSession:
    def __init__(self, settings: TlsSettings, cache: SessionCache | None = None,
                 cache_key: Hashable = None) -> None:
        self.settings = settings
        self.cache = cache
        self.cache_key = cache_key
        self.state = "idle"
        self.notes: list[str] = []        # features degraded for this session (for logs)
        self._peer_chain: list[bytes] = []  # DER chain the server sent (seclevel >= 1 or not)
        self._events: list[object] = []
        self._tls_out = bytearray()
        self._datagrams: list[bytes] = []
        self._buffer = None
        self._plan: EnginePlan | None = None
        self._sniffer = HandshakeSniffer(settings.dtls, dtls_record_versions(settings.dtls_version == DTLS1_0)
                                         if settings.dtls else None)
        self._lazy_sniff = False          # TLS with no verifier: the sniffer reads later (_sniff)
        self._unsniffed = bytearray()     # what it has still to read then
        self._verifier = None             # a verify.ChainVerifier at seclevel >= 1
        self._cert_seen = False
        self._checked: dict[bytes, list[tuple[list[bytes], object]]] = {}   # leaf -> [(chain, problem)]
        self._fed = 0                    # bytes the last feed() gave the input (_pump_read)
        self._write_chunk = DTLS_WRITE_CHUNK if settings.dtls else WRITE_CHUNK   # plaintext per record
        self._server_version: bytes | None = None      # the ServerHello's version field
        self._server_chose: bytes | None = None         # and the version it chose (TLS 1.3: 3.4)
        self._fatal_alert: int | None = None
        self._server_suite: str | None = None   # IANA name of the suite in the ServerHello
        # TLS at seclevel >= 1: a Certificate the sniffer judged bad, (kind, reason, alert),
        # applied once Mbed TLS has taken that Certificate (_judge_certificate); where this
        # receive()'s output began (what goes when it is applied: the next flight)
        self._cert_problem: tuple[str, str, int | None] | None = None
        self._state_ssl = None       # native.NativeSsl reading Mbed TLS's handshake state
        self._step_state: int | None = None   # ssl->state before the step under way
        self._cert_step_seen = False # a step began at SERVER_CERTIFICATE (a resumption never has one)
        self._out_mark = 0
        resumable = settings.session_cache and cache is not None and cache_key is not None
        self._resumption = Resumption(settings.session_cache, cache, cache_key, self.notes,
                                      settings_fingerprint(settings) if resumable else None)
        self._scratch = bytearray(WRITE_CHUNK + 2048)
        self._unsent = bytearray()   # accepted by send() while a renegotiation was running
        self._rx: list[bytes] = []  # decrypted in this receive(), not yet an event
        self._retransmit = DTLS_TIMEOUT_MIN
        self._deadline: float | None = None
        self._now = settings.monotonic or time.monotonic
        self._clock_ssl = None       # native.NativeSsl: Mbed TLS's DTLS timer on self._now
        self._timer_fired = None     # when the expired timer last read was armed
        self._reneg_ssl = None       # native.NativeSsl when renegotiations must be checked
        self._renegotiating = False
        self._first_leaf: bytes | None = None   # the leaf (DER) the handshake ended with
        # Offload (sealing.py): True when the owner runs the jobs take_job() hands out.
        self.offload = False
        self._job = None             # sealing.SealJob in flight (the buffer is its meanwhile)
        self._queued = _Pieces()     # accepted by send() behind the job, not yet in one
        self._sealer = None          # native.NativeSsl that jobs write through
        self._sealable = False       # the suite's records need no random bytes (see below)

    # --- public API ----------------------------------------------------------

    @property
    def peer_chain(self) -> list[bytes]:
        """The DER certificates the server sent, leaf first ([] before its Certificate)."""
        self._catch_up()
        return self._peer_chain

    def start(self) -> None:
        if self.state != "idle":
            raise RuntimeError(f"start() called in state {self.state!r}")
        self.state = "handshaking"
        try:
            if feed is None:
                _bind_library()
            self._plan = build_plan(self.settings)
            self.notes.extend(self._plan.notes)
            if self.settings.seclevel >= 1:
                from .verify import ChainVerifier, load_anchors   # (cryptography: at the first use)

                self._verifier = ChainVerifier(self.settings, load_anchors(self.settings))
            self._lazy_sniff = self._verifier is None and not self.settings.dtls
            self._buffer = self._wrap(self._plan)
        except EngineConfigError as exc:
            self._fail(exc.kind, exc.reason)
            return
        except Exception as exc:   # input nobody foresaw: a failure event, never an exception
            self._fail(BAD_CONFIG, f"cannot set up TLS: {type(exc).__name__}: {exc}")
            return
        self._resumption.attach(self._buffer)
        if self.settings.dtls and self.settings.monotonic is not None:
            self._follow_clock()
        if self._verifier is not None and self.settings.renegotiation:
            self._watch_renegotiations()
        self._advance_handshake()
        self._arm_timer_for_new_flight()

    def receive(self, data: bytes) -> None:
        # What send() accepted before these bytes came is sealed before they are read (the
        # context is the job's until then): a close_notify or the end in them must not end
        # the session with the host's bytes still queued behind the job.
        self.seal_all()
        if self.state not in ("handshaking", "established"):
            return  # nothing to do with bytes after the end; never touch a reset context
        if not data:
            self._on_transport_eof()
            return
        if self.settings.dtls and len(data) > DTLS_MAX_DATAGRAM:
            # Mbed TLS reads a datagram into its input buffer: the rest of a longer one is
            # cut off, as by the module's UDP receive (fed whole, it would be read as
            # another datagram).
            data = data[:DTLS_MAX_DATAGRAM]
        self._out_mark = len(self._tls_out)
        if self.state == "handshaking" and not self._sniff(data):
            return
        produced_before = self._output_pending()
        view = memoryview(bytes(data))
        while view and self.state in ("handshaking", "established"):
            taken = feed(self._buffer, view)
            if taken <= 0:
                self._fail(PROTOCOL_ERROR, "TLS input buffer full without progress")
                return
            view = view[taken:]
            self._fed = taken
            self._process()
        if self._cert_problem is not None and self.state == "handshaking":
            self._judge_certificate()
        self._flush_rx()
        if self.settings.dtls and self.state == "handshaking" and self._output_pending() > produced_before:
            self._arm_timer_for_new_flight()

    def send(self, data: bytes) -> None:
        if self.state != "established":
            raise RuntimeError(f"send() called in state {self.state!r}")
        if self._job is not None:        # behind the job in flight: the next job's
            self._queued.append(data)
            return
        if self._unsent:                 # behind bytes a renegotiation holds: keep the order
            self._unsent += data
            self._write_unsent()
            return
        if len(data) >= OFFLOAD_MIN and self._offloadable():
            self._queued.append(data)    # (a job of these very bytes: no copy)
            self._next_job()
            return
        self._send_now(data)

    # --- offload: records sealed by jobs the owner runs (sealing.py) ---------------

    def take_job(self):
        """The job to run now (on any thread; call settle() after it), or None.  Each job
        is handed out once; its records are in outgoing() after settle()."""
        job = self._job
        if job is None or job.submitted:
            return None
        if self.state != "established":
            self._drop_job()             # (made before the session ended: never run)
            return None
        job.submitted = True
        return job

    def _drop_job(self) -> None:
        """A job nobody has started, on a session that ended (python-mbedtls may have reset
        its context: a write would start a new handshake): dropped with what was queued."""
        job = self._job
        if job is not None and job.claim():
            self._job = None
            self._queued.clear()

    def settle(self, job=None) -> None:
        """Take in the job in flight: its records into outgoing(), its failure into
        events(); waits for it when it runs, runs it here when nobody has started it.
        Then the next job is made of what send() queued behind it.  Every method that
        needs the TLS context calls this first.  With `job`: only if that one is still
        the job in flight (the owner's "it ran" may come after the session took it in
        and made the next, which is then left to the worker)."""
        if job is not None and job is not self._job:
            return
        job = self._job
        if job is None:
            return
        if self.state != "established" and not job.submitted:
            self._drop_job()             # (the session ended before anyone took it)
            return
        if job.claim():
            job.work()                   # (not started by the owner's worker: here)
        else:
            job.wait()
        self._job = None
        if self._tls_out:
            for records in job.out:
                self._tls_out += records
        else:                            # (one copy, no growth: outgoing() hands it on whole)
            self._tls_out = bytearray().join(job.out)
        if self.state != "established":
            self._queued.clear()
            return
        if job.exc is not None:
            self._queued.clear()
            self._fail(PROTOCOL_ERROR, f"write failed: unexpected {type(job.exc).__name__}: {job.exc}")
            return
        if job.rc is not None:
            if job.rc in (WANT_READ, WANT_WRITE):
                # The library wants input first (a renegotiation): the rest waits in
                # _unsent as send() would have left it, retried from receive().
                self._unsent += job.data[job.taken:]
                self._unsent += self._queued.take()
                self._write_unsent()
                return
            self._queued.clear()
            self._fail(PROTOCOL_ERROR, f"write failed: {describe_mbedtls_error(job.rc)}")
            return
        self._next_job()

    def unsealed(self) -> int:
        """Bytes send() accepted that are not yet records in outgoing() (a job's, queued)."""
        return len(self._queued) + (len(self._job.data) if self._job is not None else 0)

    def _offloadable(self) -> bool:
        # (renegotiation on: a write may start a handshake, which draws random bytes; the
        # watch of renegotiations only exists with it on)
        if not self.offload or not self._sealable or self.settings.dtls or self.settings.renegotiation:
            return False
        if self._sealer is None:
            from . import native

            try:
                self._sealer = native.NativeSsl(self._buffer)
            except Exception as exc:     # noqa: BLE001 - no native layer: encrypt here
                self.offload = False
                self.notes.append(f"records sealed on the caller's thread: {exc}")
                return False
        return True

    def _next_job(self) -> None:
        """What send() queued: a job, or (too little for one) records now."""
        queued = self._queued
        if not queued or self.state != "established":
            return
        if len(queued) < OFFLOAD_MIN:
            self._send_queued()
            return
        data = queued.take(JOB_MAX)
        self._job = SealJob(self._sealer, self._buffer, data, take_outgoing, WRITE_CHUNK)

    def _send_queued(self) -> None:
        """What send() queued, into records now (on this thread)."""
        self._send_now(self._queued.take())

    def _send_now(self, data: bytes) -> None:
        # Straight from the caller's buffer, WRITE_CHUNK (DTLS: DTLS_WRITE_CHUNK) at a time (no copy into _unsent);
        # what the library does not take now is queued as _write_unsent would.
        view = memoryview(data)
        while view and self.state == "established":
            chunk = view[:self._write_chunk]
            try:
                self._buffer.write(chunk)
            except (WantReadError, WantWriteError):
                self._unsent += view
                self._collect_output()
                return
            except TLSError as exc:
                self._collect_output()
                self._fail(PROTOCOL_ERROR, f"write failed: {describe_mbedtls_error(getattr(exc, 'err', 0), str(exc))}")
                return
            view = view[len(chunk):]
            self._collect_output()

    def _write_unsent(self) -> None:
        """Encrypt what send() accepted.  While a server-initiated renegotiation runs,
        Mbed TLS's write drives that handshake and answers WANT_READ without taking
        the data: it stays queued (same bytes retried, as the API wants) until the
        server's next flight has been read."""
        while self._unsent and self.state == "established":
            chunk = bytes(self._unsent[:self._write_chunk])
            try:
                self._buffer.write(chunk)
            except (WantReadError, WantWriteError):
                self._collect_output()
                return
            except TLSError as exc:
                self._collect_output()
                self._fail(PROTOCOL_ERROR, f"write failed: {describe_mbedtls_error(getattr(exc, 'err', 0), str(exc))}")
                return
            del self._unsent[:len(chunk)]
            self._collect_output()

    def seal_all(self) -> None:
        """Every byte send() accepted into records in outgoing() now, on this thread: the
        job in flight (waited for or run here), then what was queued behind it."""
        while self._job is not None:     # (each settle may make the next job of the queue)
            self.settle()
        if self._queued and self.state == "established":
            self._send_queued()

    def close(self) -> None:
        self.seal_all()                  # accepted before the close: records before close_notify
        if self.state in ("established", "handshaking"):
            if self.state == "established":
                self._buffer.shutdown()  # queues close_notify (then resets the context)
                self._collect_output()
            else:
                # A handshake abandoned (negotiatetime ran out, the host closed): the session
                # it offered is not offered again, as after a failure -- a path that swallows
                # ClientHellos carrying a ticket would otherwise time out every open.
                self._resumption.forget()
        if self.state != "failed":
            self.state = "closed"
        self._deadline = None

    def outgoing(self) -> list[bytes]:
        if self.settings.dtls:
            out, self._datagrams = self._datagrams, []
            return out
        if not self._tls_out:
            return []
        # (handed on as it is, not copied: the session writes into a new one from now on)
        out, self._tls_out = [self._tls_out], bytearray()
        return out

    def events(self) -> list[object]:
        if self._unsniffed and self.state == "handshaking":
            self._catch_up()         # (outgoing() has taken the flight these bytes made)
        out, self._events = self._events, []
        return out

    def next_timeout(self) -> float | None:
        if self.state == "established":
            # (asked after every send: no renegotiation timer, no calls)
            return None if self._clock_ssl is None else self._renegotiation_timeout()
        if self._deadline is None or self.state != "handshaking":
            return None
        return max(0.0, self._deadline - self._now())

    def handle_timeout(self) -> None:
        if self._job is not None:
            self.settle()
        if self.state == "established":
            self._renegotiation_timer_expired()
            return
        if self._deadline is None or self.state != "handshaking":
            return
        if self._now() < self._deadline:
            return
        before = self._output_pending()
        self._advance_handshake()  # Mbed TLS resends the flight if its timer expired
        if self.state != "handshaking":
            return
        if self._output_pending() > before:
            self._retransmit = min(self._retransmit * 2, DTLS_TIMEOUT_MAX)
            self._deadline = self._now() + self._retransmit
        else:
            self._deadline = self._now() + _RECHECK

    # --- setup -----------------------------------------------------------------

    def _wrap(self, plan: EnginePlan):
        context, notes = client_context(plan, self.settings)   # built once per configuration
        self.notes.extend(notes)
        try:
            return context.wrap_buffers(plan.sni_hostname)
        except (TLSError, ValueError) as exc:
            raise EngineConfigError(BAD_CONFIG, f"cannot set up TLS for {self.settings.server_name!r}: {exc}") from None

    # --- handshake -------------------------------------------------------------

    def _sniff(self, data: bytes) -> bool:
        """Look at the clear-text handshake before Mbed TLS does. False = session over.
        With no certificate to verify (TLS), nothing read there is needed before Mbed TLS
        answers: the bytes are put aside and read by _catch_up() -- after the flight they
        make is taken (events()), when a failure needs their alert or version for its
        reason, or when peer_chain is asked for -- and never, once the handshake is over,
        on the way to the open's answer.  (The server's first flight read in Python before
        Mbed TLS had it cost 2-3% of an open, measured through the pty.)"""
        if self._lazy_sniff:
            self._unsniffed += data
            if len(self._unsniffed) > _UNSNIFFED_MAX:
                return self._catch_up()
            return True
        return self._sniff_now(data)

    def _catch_up(self, before_certificate: bool = False) -> bool:
        """What _sniff put aside, read now (the same reading, later). False = session over.
        before_certificate: Mbed TLS failed before it took any Certificate (_sniff_now)."""
        if not self._unsniffed:
            return True
        data = bytes(self._unsniffed)
        self._unsniffed.clear()
        return self._sniff_now(data, before_certificate)

    def _sniff_now(self, data: bytes, before_certificate: bool = False) -> bool:
        msgs, alerts = self._sniffer.feed(data)
        for alert in alerts:
            if alert.level == 2 and self._fatal_alert is None:   # (Mbed TLS stops at the first)
                self._fatal_alert = alert.description
        for msg in msgs:
            if msg.msg_type == HS_SERVER_HELLO and len(msg.body) >= 2:
                self._server_version = msg.body[:2]          # (its records' version, too)
                self._server_chose = _chosen_version(msg.body)
                self._server_suite = _chosen_suite(msg.body)
            if msg.msg_type != HS_CERTIFICATE or (self._cert_seen and not self.settings.dtls):
                continue
            if self.settings.dtls:
                # Any datagram reaches the sniffer, forged ones too, and the Certificate
                # Mbed TLS takes is known only at the end: each one is checked and kept by
                # its leaf, and _on_handshake_over judges the one the handshake used.
                try:
                    chain = chain_mbedtls_keeps(parse_certificate_list(msg.body))
                except ValueError:
                    continue
                seen = self._checked.setdefault(chain[0], []) if chain else None
                if seen is not None and all(chain != c for c, _ in seen):
                    self._cert_seen = True
                    problem = (self._verify(self._verifier.verify, chain, self._server_suite)
                               if self._verifier else None)
                    seen.append((chain, problem))
                    self._peer_chain = self._peer_chain or chain   # (the one used: at the end)
                continue
            self._cert_seen = True
            if _certificate_less(self._server_suite):
                continue        # (a PSK suite has no server certificate: Mbed TLS refuses the message)
            try:
                self._peer_chain = chain_mbedtls_keeps(parse_certificate_list(msg.body))
            except ValueError as exc:
                if self.state != "handshaking":
                    continue                   # (read late: Mbed TLS took it, the handshake is over)
                reason = f"malformed server Certificate message: {exc}"
                if self._verifier is None:     # (seclevel 0: read after Mbed TLS failed on it)
                    if before_certificate:
                        continue
                    self._fail(PROTOCOL_ERROR, reason)
                    return False
                if not self._hold_verdict(PROTOCOL_ERROR, reason, None):
                    return False
                continue
            if self._verifier is not None:
                problem = self._verify(self._verifier.verify, self._peer_chain, self._server_suite)
                if self._peer_chain:
                    self._checked[self._peer_chain[0]] = [(self._peer_chain, problem)]
                if problem is not None and not self._hold_verdict(VERIFY_FAILED, problem.reason, problem.alert):
                    return False
        return True

    def _hold_verdict(self, kind: str, reason: str, alert: int | None) -> bool:
        """A Certificate judged bad (TLS): the open fails so once Mbed TLS has taken that
        Certificate (_judge_certificate) -- not when Mbed TLS fails before it would (a
        ServerHello it refuses, a message it cannot take: split across records, over 16
        KiB): then its failure and its alert (or none) are the open's, as at seclevel 0.
        Without the native layer (no handshake state to read) the open fails at once.
        False: the session is over."""
        if self._cert_problem is None:
            self._cert_problem = (kind, reason, alert)
        if self._handshake_state() is not None:
            return True
        self._cert_problem = None
        if alert is not None:
            self._queue_clear_alert(alert)
        self._fail(kind, reason)
        return False

    def _handshake_state(self) -> int | None:
        """Mbed TLS's ssl->state (None: the native layer cannot read it)."""
        if self._state_ssl is None:
            try:
                from . import native

                self._state_ssl = native.NativeSsl(self._buffer) if native.available() else False
            except Exception:
                self._state_ssl = False
        return self._state_ssl.handshake_state() if self._state_ssl else None

    def _judge_certificate(self, state: int | None = None) -> bool:
        """The held verdict, once Mbed TLS is past the Certificate (it took the message):
        the open fails as the verdict says; what Mbed TLS queued since this receive()
        began (its next flight, or its alert for a later message) never leaves.  `state`:
        Mbed TLS's (default: now).  True: it was applied."""
        state = self._handshake_state() if state is None else state
        if state is None or not self._cert_step_seen or state <= MBEDTLS_SERVER_CERTIFICATE:
            return False             # (not taken: a resumed handshake jumps past it, never taking one)
        kind, reason, alert = self._cert_problem
        self._cert_problem = None
        take_outgoing(self._buffer)                    # (what the wrapper still holds)
        del self._tls_out[self._out_mark:]
        if alert is not None:
            self._queue_clear_alert(alert)
        self._fail(kind, reason)
        return True

    def _queue_clear_alert(self, description: int) -> None:
        """A fatal alert in clear, as Mbed TLS would send (TLS only: DTLS would need
        the client's record sequence number, which the wrapper does not expose; the
        DTLS peer just sees silence)."""
        if self.settings.dtls or self._server_version is None:
            return
        self._tls_out += bytes([21]) + self._server_version + b"\x00\x02" + bytes([2, description])

    def _process(self) -> None:
        if self.state == "handshaking":
            self._advance_handshake()
        if self.state == "established":
            self._pump_read()
            self._write_unsent()
            if self._reneg_ssl is not None and self.state == "established":
                self._check_renegotiation()
        self._collect_output()

    # --- DTLS renegotiation timer ------------------------------------------------
    # A renegotiation the server asks for (HelloRequest) runs inside mbedtls_ssl_read on the
    # established session, on Mbed TLS's retransmission timer (the modem clock: use_clock):
    # a lost flight is sent again only when a read finds the timer expired, and after the
    # last interval (1+2+...+32+60 s) the read fails with MBEDTLS_ERR_SSL_TIMEOUT, which ends
    # the session.  Without a read at those moments a server that stays silent (OpenSSL
    # drops a flight it cannot decrypt) would hold the socket open forever.  The timer is
    # cancelled while no renegotiation runs (read_timeout 0), so this costs nothing then.

    def _mbedtls_timer(self) -> tuple[float, float] | None:
        """(armed at, seconds left) of Mbed TLS's timer on the modem clock; None: not running."""
        return self._clock_ssl.timer() if self._clock_ssl is not None else None

    def _renegotiation_timeout(self) -> float | None:
        running = self._mbedtls_timer()
        if running is None or (running[1] == 0.0 and running[0] == self._timer_fired):
            return None                  # (expired, read once already: input moves it on)
        left = running[1]
        return left if left == 0.0 else max(left, _MIN_WAIT)   # (never "now" again by a hair)

    def _renegotiation_timer_expired(self) -> None:
        running = self._mbedtls_timer()
        if running is None or running[1] > 0.0:
            return
        self._timer_fired = running[0]
        self._process()                  # Mbed TLS resends its flight, or gives up
        self._flush_rx()

    # --- renegotiation (seclevel >= 1) -------------------------------------------
    # A renegotiation's Certificate travels encrypted: the sniffer cannot see its chain, and
    # Mbed TLS runs VERIFY_OPTIONAL.  So the server must keep the certificate it was verified
    # with (as NSS insists too), and that chain is verified again, at the modem clock of the
    # renegotiation.  Seen through ssl->state: away from HANDSHAKE_OVER while one runs (it
    # takes round trips, so at least one receive() sees it running), back when it is done.

    def _follow_clock(self) -> None:
        """DTLS: Mbed TLS's retransmission timer reads settings.monotonic (the modem's time,
        moved by hand in tests) as next_timeout/handle_timeout do; without native it keeps
        the system clock, and a retransmission waits for that too."""
        from . import native

        try:
            ssl = native.NativeSsl(self._buffer)
            ssl.use_clock(self._now)
        except Exception as exc:
            self.notes.append(f"DTLS retransmission on the system clock: {exc}")
            return
        self._clock_ssl = ssl

    def _watch_renegotiations(self) -> None:
        from . import native

        try:
            self._reneg_ssl = native.NativeSsl(self._buffer)
        except Exception as exc:      # (renegotiation itself needs native: it is off then)
            self.notes.append(f"renegotiations not watched: {exc}")

    def _check_renegotiation(self) -> None:
        if self._reneg_ssl.handshake_state() != self._reneg_ssl.HANDSHAKE_OVER:
            self._renegotiating = True
            return
        if not self._renegotiating:
            return
        self._renegotiating = False
        leaf = self._buffer.getpeercert(binary_form=True) or None
        if leaf != self._first_leaf:
            self._fail(VERIFY_FAILED, "the server changed its certificate in a renegotiation (the new "
                                      "chain travels encrypted and cannot be verified)")
            return
        if leaf is None:
            return                      # a PSK session, and still no certificate: nothing to check
        # The chain of the full handshake; a resumed session had none in clear: its leaf (the
        # one the cache keeps), dated at the modem clock, as far as it can be checked.
        cipher = self._buffer.cipher()          # (the renegotiation may have changed the suite)
        suite = cs.iana_name_for(cipher.decode() if isinstance(cipher, bytes) else str(cipher))
        problem = (self._verify(self._verifier.verify, self._peer_chain, suite) if self._peer_chain
                   else self._verify(self._verifier.check_dates_of, leaf))
        if problem is not None:
            self._fail(VERIFY_FAILED, f"renegotiation: {problem.reason}")

    @staticmethod
    def _verify(check, *args):
        """A verifier call; what it raises (an exotic key type, the clock failing) is a
        problem too: a failure, never an exception."""
        try:
            return check(*args)
        except Exception as exc:
            from .verify import ALERT_CERT_UNKNOWN, VerifyProblem

            return VerifyProblem(f"cannot verify server certificate: {exc}", ALERT_CERT_UNKNOWN)

    def _advance_handshake(self) -> None:
        # TLS: a flight is taken from the wrapper once, when the handshake waits or is over,
        # not after every step -- ~3 us a step, a dozen steps a handshake.  The wrapper says
        # "want read" also when its 32 KiB output ring is full: after a flight of
        # _RING_RETRY bytes or more the step is tried again with the ring emptied.  DTLS
        # takes each step's records apart, as before (pack_datagrams keeps them in that
        # step's datagrams).
        per_step = self.settings.dtls
        while self.state == "handshaking":
            if self._cert_problem is not None:
                # (the step's state, read before it: the wrapper resets the context when a
                # step fails, and _judge_certificate asks how far the failed one was)
                self._step_state = state = self._handshake_state()
                if state == MBEDTLS_SERVER_CERTIFICATE:
                    self._cert_step_seen = True
                elif self._judge_certificate(state):
                    return           # (taken: no further step -- no key exchange, no key log)
            try:
                self._buffer.do_handshake()
            except WantReadError:
                if not per_step and self._collect_output() >= _RING_RETRY:
                    continue
                break
            except WantWriteError:
                self._collect_output()
                continue
            except TLSError as exc:
                self._collect_output()  # the alert Mbed TLS queued, if any
                self._fail_from_tls_error(exc)
                return
            except ValueError as exc:
                # "handshake already over": the step after the last one says so (the facts
                # file: do_handshake() after completion raises ValueError), so the state is
                # read once a handshake, not after each of its ~12 steps (~2 us a read: the
                # wrapper makes an enum of it)
                if not handshake_over(self._buffer):
                    self._collect_output()  # what earlier steps queued (no per-step collection)
                    self._fail(PROTOCOL_ERROR, f"handshake step failed: {exc}")
                    return
                self._on_handshake_over()
                continue
            if per_step:
                self._collect_output()
        self._collect_output()

    def _on_handshake_over(self) -> None:
        self._deadline = None
        cipher = self._buffer.cipher()
        cipher = cipher.decode() if isinstance(cipher, bytes) else str(cipher)
        resumed = self._resumption.reused()
        if self._verifier is not None and not resumed and not _certificate_less(cs.iana_name_for(cipher)):
            # (RSA-PSK: the server sends a Certificate, checked as for any other suite)
            # The certificate the handshake used must be one that was checked: the sniffer
            # and Mbed TLS read the same bytes on TCP, but a DTLS sniffer also sees forged
            # datagrams that Mbed TLS drops (and the reverse).
            if not self._cert_seen:
                self._fail(VERIFY_FAILED, "server did not present a certificate")
                return
            leaf = self._buffer.getpeercert(binary_form=True) or b""
            seen = self._checked.get(leaf)
            if not seen:
                self._fail(VERIFY_FAILED, "the certificate the handshake used is not the one that was "
                                          "checked (a forged or damaged Certificate message)")
                return
            # The leaf Mbed TLS used, with a chain that passed: the server's, or (DTLS) a
            # forged datagram's that proves the same leaf -- its signatures are genuine.
            chain = next((c for c, problem in seen if problem is None), None)
            if chain is None:
                self._fail(VERIFY_FAILED, seen[0][1].reason)
                return
            # (a DTLS Certificate may have been judged before its ServerHello came: the
            # leaf's usage, for the suite really negotiated, is judged now)
            problem = self._verify(self._verifier.check_usage, leaf, cs.iana_name_for(cipher))
            if problem is not None:
                self._fail(VERIFY_FAILED, problem.reason)
                return
            self._peer_chain = chain
        self.state = "established"
        self._resumption.save()
        if self._reneg_ssl is not None:        # what a renegotiation must keep (None: PSK)
            self._first_leaf = self._buffer.getpeercert(binary_form=True) or None
        version = self._buffer.negotiated_tls_version()
        version_name = getattr(version, "name", "")
        self._sealable = _records_draw_no_random(cipher, version_name)
        self._events.append(HandshakeComplete(
            version=_VERSION_NAMES.get(version_name) or str(version),
            cipher_id=cs.suite_id_for_mbedtls_name(cipher),
            cipher_name=cs.iana_name_for(cipher),
            alpn=self._buffer.negotiated_protocol() or None,
            resumed=resumed,
        ))

    # --- data ------------------------------------------------------------------

    def _pump_read(self) -> None:
        closed = False
        empty = 0
        held = input_pending(self._buffer)
        progressed = False
        # (without the private names the input's fill is unknown: each ignored alert takes at
        # least a 7-byte record of what was just fed, so as many retries as that allows)
        blind, blind_cap = 0, 1 + self._fed // 7
        self._fed = 0
        while True:
            try:
                n = self._buffer.readinto(self._scratch, len(self._scratch))
            except WantReadError:
                # Mbed TLS 2.28 also says WANT_READ for a warning alert it has just read and
                # ignored ("ignoring non-fatal non-closure alert": no_renegotiation, any
                # warning past the handshake), with the records behind it still in the input
                # (TLS) or in its own buffer (the rest of a DTLS datagram): read on while a
                # read takes bytes or gives data (a partial record does neither the second
                # time).  An alert record is not empty: Mbed TLS's count of empty records
                # starts again, as this one does.
                # DTLS: Mbed TLS read the datagram whole at the first read, so the input does
                # not shrink as its records are read; whether records of it are left is its
                # own word (mbedtls_ssl_check_pending), retried as often as blind ones.
                now = input_pending(self._buffer)
                if now is None or (now == held and not progressed):
                    if now is not None and not (self._clock_ssl and self._clock_ssl.check_pending()):
                        break
                    blind += 1
                    if blind > blind_cap:
                        break
                held, progressed = now, False
                empty = 0
                continue
            except WantWriteError:
                self._collect_output()
                continue
            except RaggedEOF:
                # mbedtls_ssl_read returned 0.  Over these memory buffers the transport never
                # ends (its end is receive(b"")): an empty application record -- Mbed TLS
                # skips one alone, returns 0 for the second in a row, and itself fails the
                # fourth (a DoS guard).  The record is consumed: read on.  (Bounded all the
                # same: a library that said 0 without taking a record must not spin the loop --
                # counted while the input does not shrink: empty records between alerts, which
                # Mbed TLS reads inside the call, are consumed records.)
                now = input_pending(self._buffer)
                if now is None or now == held:
                    empty += 1
                else:
                    held, empty = now, 0
                if empty > 64:
                    self._fail(PROTOCOL_ERROR, "the TLS library keeps reading empty records")
                    return
                continue
            except TLSError as exc:
                if getattr(exc, "err", 0) == MBEDTLS_PEER_CLOSE_NOTIFY:
                    closed = True
                    break
                self._collect_output()
                self._fail_from_tls_error(exc)
                return
            if n > 0:
                empty = 0
                progressed = True
                if self._renegotiating:
                    # A renegotiation was running: the read may have finished it and returned
                    # what the server sent after its Finished.  Judged first: data from a peer
                    # whose new handshake fails the check never reach the host (Mbed TLS
                    # VERIFY_REQUIRED stops at that Certificate and never decrypts them).
                    self._check_renegotiation()
                    if self.state != "established":
                        return
                self._rx.append(bytes(self._scratch[:n]))
        if closed:
            self._flush_rx()  # data first: it arrived before the close_notify
            self._events.append(PeerClosed())
            self.state = "closed"

    def _flush_rx(self) -> None:
        """Everything decrypted by one receive() becomes one AppData event."""
        if self._rx:
            self._events.append(AppData(b"".join(self._rx)))
            self._rx.clear()

    def _on_transport_eof(self) -> None:
        # DTLS: an empty datagram from the server, which Mbed TLS's own UDP transport reads as
        # the connection's end (mbedtls_ssl_fetch_input: f_recv() == 0 ->
        # MBEDTLS_ERR_SSL_CONN_EOF), as it takes a closed port's ICMP for a failed read.
        if not self.settings.dtls:
            self._catch_up()         # (an alert before the end says why)
        if self.state == "established":
            # TCP FIN without close_notify: reported as a close too (a truncation
            # attack is not something the modem user could act on).
            self._events.append(PeerClosed())
            self.state = "closed"
        elif self.settings.dtls:
            self._fail(HANDSHAKE_FAILED, "server sent an empty datagram during the handshake "
                                         "(Mbed TLS's end of the connection, CONN_EOF)")
        else:
            reason = "server closed the connection during the handshake"
            if self._fatal_alert is not None:
                reason = self._alert_reason()
            self._fail(HANDSHAKE_FAILED, reason)

    def _alert_reason(self) -> str:
        """The server's fatal alert as a reason, knowing what the ClientHello lacked."""
        without = None
        if self._fatal_alert == 112 and self._plan is not None and self._plan.sni_hostname is None:
            without = "sni ip" if self.settings.sni else "sni off"
        elif self._fatal_alert == 120 and not self.settings.alpn:
            without = "alpn"
        return describe_alert(self._fatal_alert, without)

    # --- plumbing --------------------------------------------------------------

    def _output_pending(self) -> int:
        return len(self._datagrams) if self.settings.dtls else len(self._tls_out)

    def _collect_output(self) -> int:
        """Take what the wrapper has queued for the network; returns how many bytes."""
        if self._buffer is None:
            return 0
        data = take_outgoing(self._buffer)
        if not data:
            return 0
        if self.settings.dtls:
            self._datagrams.extend(pack_datagrams(data))
        else:
            self._tls_out += data
        return len(data)

    def _arm_timer_for_new_flight(self) -> None:
        if self.settings.dtls and self.state == "handshaking":
            self._retransmit = DTLS_TIMEOUT_MIN
            self._deadline = self._now() + self._retransmit

    def _fail_from_tls_error(self, exc: Exception) -> None:
        err = abs(int(getattr(exc, "err", 0) or 0))
        if self._cert_problem is not None and self.state == "handshaking":
            state = self._step_state
            kind, reason, _ = self._cert_problem
            if kind == PROTOCOL_ERROR and state == MBEDTLS_SERVER_CERTIFICATE:
                # Mbed TLS failed on that very message, which the sniffer could not read
                # either: the sniffer says why (as at seclevel 0); Mbed TLS's alert stays
                self._cert_problem = None
                self._fail(kind, reason)
                return
            if state == MBEDTLS_SERVER_CERTIFICATE and err == MBEDTLS_X509_FATAL_ERROR:
                state += 1           # (it walked the chain and its own check failed: the chain's verdict)
            if self._judge_certificate(state):
                return               # (Mbed TLS failed past a Certificate judged bad: that is why)
        # (the alert, version, message sizes its reason names; Mbed TLS failed on the
        # ServerHello slot: a Certificate the sniffer reads late there, at seclevel 0, is not
        # why -- Mbed TLS's reason is the open's, as at seclevel 1)
        self._catch_up(before_certificate=err == MBEDTLS_BAD_SERVER_HELLO and self.state == "handshaking")
        if self._fatal_alert is not None and self.state == "handshaking":
            self._fail(HANDSHAKE_FAILED, self._alert_reason())
            return
        kind = HANDSHAKE_FAILED if self.state == "handshaking" else PROTOCOL_ERROR
        if err == MBEDTLS_TIMEOUT and self.state == "handshaking":
            # Silence to the last retransmission is the open's timeout, as when negotiatetime
            # runs out first: the host sees one answer for a server that never answered.
            kind = TIMED_OUT
        reason = describe_mbedtls_error(err, getattr(exc, "msg", "") or str(exc))
        chose = self._server_chose
        if chose is not None and (err == MBEDTLS_BAD_VERSION or (
                err == MBEDTLS_INVALID_RECORD and self._above_pinned(chose))
                or (chose == _TLS1_3 and self.state == "handshaking")):
            # (a server answering TLS 1.2 to a pinned TLS 1.0 puts its ServerHello in a 3.3
            # record, as every TLS 1.2 server does: Mbed TLS refuses the record before the
            # message -- INVALID_RECORD -- but the version is what a person must be told; a TLS
            # 1.3 answer -- a HelloRetryRequest, a ServerHello whose supported_versions says
            # 3.4 -- fails in Mbed TLS 2.28 as bad input or an unexpected message)
            reason = (f"server chose {_WIRE_VERSIONS.get(chose, chose.hex())}, outside the configured "
                      f"sslversion (mbedtls -0x{err:04X})")
        largest = self._sniffer.largest_message()
        if err == MBEDTLS_BAD_SERVER_HELLO and self.state == "established":
            # A renegotiation (its messages are encrypted: nothing here saw them): Mbed TLS
            # 2.28 takes any handshake message where the ServerHello is due for one -- a
            # second HelloRequest too, which RFC 5246 7.4.1.1 says to ignore.
            reason = ("in a renegotiation the server's answer to the module's ClientHello was no "
                      "ServerHello Mbed TLS takes (a second HelloRequest, or a bad ServerHello) "
                      f"(mbedtls -0x{err:04X})")
        elif (err == MBEDTLS_BAD_CERTIFICATE_MSG and self.state == "handshaking" and not self.settings.dtls
              and not self._cert_seen and self._sniffer.encrypted):
            # (Mbed TLS wanted the Certificate and got the server's ChangeCipherSpec: the
            # abbreviated flight of a resumption its ServerHello did not confirm -- another
            # session id, or none -- never a Certificate it failed on)
            reason = ("the server sent ChangeCipherSpec where its Certificate was due: a resumed "
                      "handshake's flight for a session its ServerHello did not resume "
                      f"(mbedtls -0x{err:04X})")
        elif err == MBEDTLS_FEATURE_UNAVAILABLE and largest > _MAX_HANDSHAKE_MESSAGE:
            reason = (f"a server handshake message of {largest} bytes (its certificate chain?) is more "
                      f"than Mbed TLS takes ({_MAX_HANDSHAKE_MESSAGE}: it reassembles none larger "
                      f"than one record) (mbedtls -0x{err:04X})")
        elif err == MBEDTLS_FEATURE_UNAVAILABLE and self._sniffer.fragmented:
            reason = (f"the server split a handshake message across TLS records (legal, RFC 5246 "
                      f"6.2.1; Mbed TLS 2.28 reassembles none: \"TLS handshake fragmentation not "
                      f"supported\") (mbedtls -0x{err:04X})")
        self._fail(kind, reason)

    def _above_pinned(self, wire: bytes) -> bool:
        """A ServerHello version above the one TLS version sslversion pins (0-3)."""
        pinned = self.settings.ssl_version      # (SSL3_0..TLS1_2: 0-3, the wire's minor byte)
        return (not self.settings.dtls and SSL3_0 <= pinned <= TLS1_2 and wire[:1] == b"\x03"
                and wire > bytes((3, pinned)))

    def forget_resumption(self) -> None:
        """The transport lost the handshake's last flight after the library called it over
        (a resumed handshake reset before the module's Finished left): the session it saved
        is not offered again, as after any failed handshake."""
        self._resumption.forget()

    def _fail(self, kind: str, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self._flush_rx()
        self.state = "failed"
        self._deadline = None
        self._events.append(TlsFailure(kind, reason))
        self._resumption.forget()
