"""Tests from a manual mutation-testing pass over the sans-IO TLS/DTLS engine
(tls_engine/session.py: TlsClientSession's receive / send / close / outgoing / events /
next_timeout / handle_timeout, the handshake driver, _pump_read, the renegotiation checks, the
DTLS retransmission timer and the established-state renegotiation timer, _fail_from_tls_error's
reasons; tls_engine/records.py, datagrams.py, resumption.py, sealing.py).  Each test pins a
behaviour that a small change to those modules (the mutant named in its docstring) left the
tls_engine unit tests and the SSL / DTLS e2e tests passing on; the expected values come from
tls_engine/README.md, docs/behaviour.md and the RFCs they cite (RFC 5246, RFC 6347), not from
the engine's current output.  Sans-IO throughout: the session is driven by hand, against an
independent peer where one is needed -- OpenSSL through Python's ssl module over MemoryBIOs
(MemPeer), or emulator.testing.peers.TlsServer / `openssl s_server -dtls` where a real socket
is simpler -- and DTLS timers run on a clock the test moves (TlsSettings.monotonic)."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import hmac
import os
import select
import ssl
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import OpenSslServer, TlsServer
from tls_engine import (AppData, HandshakeComplete, PeerClosed, TlsClientSession, TlsFailure,
                        TlsSettings)
from tls_engine import session as session_module
from tls_engine.datagrams import pack_datagrams
from tls_engine.records import HandshakeSniffer, parse_certificate_list
from tls_engine.resumption import SessionCache, settings_fingerprint
from tests.unit.tls_engine.test_dtls import DtlsDriver, completed

needs_native = pytest.mark.needs_native


def tls_settings(pki, **overrides) -> TlsSettings:
    """seclevel 1 against the run's CA, dialled as localhost (tests/unit/tls_engine/conftest's
    base_settings, which this directory does not see)."""
    values = dict(server_name="localhost", seclevel=1, ca_pem=pki.ca.cert_pem, ca_label="RAM:cacert.pem")
    values.update(overrides)
    return TlsSettings(**values)


class Clock:
    """The modem's monotonic time, moved by hand (TlsSettings.monotonic)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class MemPeer:
    """An OpenSSL TLS server (Python ssl) over MemoryBIOs: the test moves every byte."""

    def __init__(self, cert, *, version: ssl.TLSVersion | None = None, ciphers: str = "ALL:@SECLEVEL=0") -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers(ciphers)
        if version is not None:
            ctx.minimum_version = ctx.maximum_version = version
        else:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        cert.configure_cert(ctx)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.error: ssl.SSLError | None = None
        self.done = False
        self.received = bytearray()

    def take(self, data: bytes) -> None:
        """The client's bytes in; handshake on, application data into .received."""
        self.inc.write(data)
        try:
            if not self.done:
                self.tls.do_handshake()
                self.done = True
            while True:
                self.received += self.tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        except ssl.SSLError as exc:
            self.error = exc

    def pending(self) -> bytes:
        return self.out.read()


def run(session: TlsClientSession, peer: MemPeer, rounds: int = 20) -> list:
    """Move bytes both ways until neither side has anything more; the session's events."""
    events = []
    if session.state == "idle":
        session.start()
    for _ in range(rounds):
        moved = False
        for chunk in session.outgoing():
            peer.take(chunk)
            moved = True
        data = peer.pending()
        if data and session.state in ("handshaking", "established"):
            session.receive(data)
            moved = True
        events += session.events()
        if not moved:
            break
    return events


def established(session: TlsClientSession, peer: MemPeer) -> HandshakeComplete:
    events = run(session, peer)
    done = [e for e in events if isinstance(e, (HandshakeComplete, TlsFailure))]
    assert done and isinstance(done[0], HandshakeComplete), events
    return done[0]


# == DTLS handshake retransmission timer (session.py) ==========================================
def dtls_settings(pki, clock: Clock, **overrides) -> TlsSettings:
    return tls_settings(pki, dtls=True, monotonic=clock, **overrides)


@needs_native
def test_a_datagram_that_brings_no_flight_does_not_restart_the_timer(pki):
    """Mutant: receive() re-arming the retransmission timer when its datagram produced no
    new output (`_output_pending() >= produced_before`).  RFC 6347 4.2.4: the timer is set
    when a flight is sent; a datagram that makes no flight (here junk, which Mbed TLS and the
    sniffer drop, RFC 6347 4.1.2.7) leaves it running -- the ClientHello goes again 1 s after
    it was first sent, not 1 s after the junk arrived."""
    clock = Clock()
    session = TlsClientSession(dtls_settings(pki, clock))
    session.start()
    [hello] = session.outgoing()
    clock.now += 0.6
    session.receive(b"\x17\x01\x02" + b"\x00" * 30)             # not a DTLS record
    assert session.outgoing() == [] and session.state == "handshaking"
    assert session.next_timeout() == pytest.approx(0.4)
    clock.now += 0.4
    session.handle_timeout()
    [again] = session.outgoing()
    assert again[13] == 1 and again[11:] == hello[11:]          # the ClientHello, resent


@needs_native
def test_the_flight_is_resent_when_the_clock_reaches_the_deadline_exactly(pki):
    """Mutant: handle_timeout() waiting while `now <= deadline` (was `<`).  RFC 6347 4.2.4.1:
    the initial timer is 1 s; when 1 s has passed the timer has expired (Mbed TLS's own
    timer, on the same clock, says so at elapsed >= 1000 ms) and the flight goes again."""
    clock = Clock()
    session = TlsClientSession(dtls_settings(pki, clock))
    session.start()
    [hello] = session.outgoing()
    clock.now += 1.0
    assert session.next_timeout() == 0.0
    session.handle_timeout()
    resent = session.outgoing()
    assert len(resent) == 1 and resent[0][11:] == hello[11:]
    assert session.next_timeout() == pytest.approx(2.0)


def test_a_deadline_already_past_reads_as_zero_seconds_left(pki):
    """Mutant: next_timeout() returning `deadline - now` without max(0.0, ...), a negative
    number once the event loop is late.  README: next_timeout() is the seconds until
    handle_timeout() is due -- 0 when it is overdue, never negative (a negative delay is a
    caller's error: asyncio's call_later, select() timeouts)."""
    clock = Clock()
    session = TlsClientSession(dtls_settings(pki, clock))
    session.start()
    assert session.outgoing()
    clock.now += 1.75
    assert session.next_timeout() == 0.0


@needs_native
def test_the_retransmission_interval_stops_doubling_at_60_s_then_the_handshake_fails(pki):
    """Mutant: handle_timeout() doubling the interval without the 60 s cap.  README "DTLS
    timers" / docs/behaviour.md: the flight is resent after 1, 2, 4 ... 32, 60 s (RFC 6347
    4.2.4.1 allows a 60 s maximum, Mbed TLS's default), and after the last interval (123 s in
    all) Mbed TLS reports a timeout -> the "timeout" failure (569 / -1 for the host, as when
    negotiatetime runs out first: a silent server is a timeout either way)."""
    clock = Clock()
    session = TlsClientSession(dtls_settings(pki, clock))
    session.start()
    [hello] = session.outgoing()
    intervals = []
    start = clock.now
    for _ in range(20):                                        # (bounded: a stuck timer fails)
        if session.state != "handshaking":
            break
        wait = session.next_timeout()
        intervals.append(wait)
        clock.now += wait
        session.handle_timeout()
        for datagram in session.outgoing():
            assert datagram[11:] == hello[11:]
    assert intervals == pytest.approx([1, 2, 4, 8, 16, 32, 60])
    assert clock.now - start == pytest.approx(123)
    [failure] = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failure.kind == "timeout" and "no answer to retransmissions" in failure.reason, failure
    assert session.next_timeout() is None


# == DTLS renegotiation timer (session.py _renegotiation_timeout / _renegotiation_timer_expired) ==
@needs_native
def test_a_dtls_renegotiation_whose_flights_are_lost_is_resent_on_the_timer_then_ends(pki):
    """Mutant: _renegotiation_timeout() answering None once Mbed TLS's timer has expired
    (`running[1] == 0.0` alone, not "expired and already read"): an owner that asks again
    after the moment passed (the emulator re-arms after every pump) never learns that
    handle_timeout() is due, and the flight is never resent.  README "DTLS timers" / docs/behaviour.md: once established
    the timer is armed while a renegotiation the server asked for runs; next_timeout()
    reports its time left and handle_timeout() reads once it has expired, so Mbed TLS resends
    the flight after 1, 2, 4 ... 32 s and, after the last 60 s interval, fails
    (protocol_error).  The server (s_server -dtls1_2, 'r') hears nothing from the modem once
    it has asked."""
    clock = Clock()
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"]) as server:
        session = TlsClientSession(dtls_settings(pki, clock, renegotiation=True))
        driver = DtlsDriver(session, server.port)
        events = driver.run(completed)
        assert isinstance(events[-1], HandshakeComplete), events
        assert session.next_timeout() is None                  # no renegotiation: no timer
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"r\n")                                   # HelloRequest
        ready, _, _ = select.select([driver.sock], [], [], 10)
        assert ready
        session.receive(driver.sock.recv(65536))
        assert session.state == "established" and session.outgoing()   # its ClientHello: lost
        assert session.next_timeout() == pytest.approx(1.0)
        clock.now += 1.5                                       # the owner comes late: due now
        assert session.next_timeout() == 0.0
        session.handle_timeout()
        intervals, resent = [1.0], int(bool(session.outgoing()))
        for _ in range(20):                                    # (bounded: a stuck timer fails)
            wait = session.next_timeout()
            if wait is None or session.state != "established":
                break
            intervals.append(wait)
            clock.now += wait
            session.handle_timeout()
            resent += bool(session.outgoing())                 # lost again
        driver.sock.close()
    assert intervals == pytest.approx([1, 2, 4, 8, 16, 32, 60])
    assert resent == 6
    [failure] = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failure.kind == "protocol_error" and session.state == "failed"
    assert session.next_timeout() is None


# == offload (session.py send / settle) ========================================================
@pytest.fixture
def sink():
    with TlsServer(mode="sink", legacy=True) as server:
        yield server


def offload_driver(server, settings) -> ClientDriver:
    session = TlsClientSession(settings)
    session.offload = True
    driver = ClientDriver(session, server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    return driver


@needs_native
def test_a_send_of_exactly_offload_min_bytes_is_sealed_by_a_job(sink, pki):
    """Mutant: send() offloading only sends longer than OFFLOAD_MIN (`>` for `>=`).  README
    "Seal jobs": with offload on, a send() of *at least* OFFLOAD_MIN (4 KiB) bytes is queued
    and made into a SealJob; no records before the job runs."""
    driver = offload_driver(sink, tls_settings(pki))
    session = driver.session
    assert session_module.OFFLOAD_MIN == 4096
    session.send(b"y" * 4096)
    assert session.outgoing() == [] and session.unsealed() == 4096
    job = session.take_job()
    assert job is not None and len(job.data) == 4096
    job.run()
    session.settle(job)
    assert session.unsealed() == 0 and session.outgoing() != []
    driver.close()


@needs_native
def test_a_job_left_when_the_session_ended_is_never_run_by_settle(sink, pki):
    """Mutant: settle() running the job in flight although the session has ended and nobody
    took the job (its `state != "established" and not job.submitted` drop removed).  README
    "Seal jobs": a job made before the session ended is never run (python-mbedtls may have
    reset the context: a write would start a new handshake); what was queued is dropped --
    no record leaves after the end."""
    driver = offload_driver(sink, tls_settings(pki))
    session = driver.session
    session.send(os.urandom(200000))
    first = session.take_job()
    first.run()
    session.receive(b"")                     # settles `first`, makes the next job, then the EOF
    assert session.state == "closed"
    assert any(isinstance(e, PeerClosed) for e in session.events())
    session.outgoing()                       # (the first job's records)
    session.settle()                         # the owner's settle, without take_job() first
    assert session.outgoing() == []
    assert session.unsealed() == 0
    driver.close()


@needs_native
def test_want_write_from_a_jobs_write_leaves_the_rest_to_the_wrapper(sink, pki, monkeypatch):
    """Mutant: settle() treating only WANT_READ as "the library wants input first" (WANT_WRITE
    failing the session as a write error).  README "Seal jobs": WANT_READ / WANT_WRITE (a
    renegotiation wanting input) put the rest into the session's unsent queue, written by the
    wrapper's own write() -- the session stays established and the server gets every byte, in
    order."""
    from tls_engine.sealing import WANT_WRITE

    payload = os.urandom(150000)
    driver = offload_driver(sink, tls_settings(pki))
    session = driver.session
    session.send(payload)
    job = session.take_job()
    real = type(job._ssl).write_nogil
    calls = []

    def busy(self, data, start, n):
        calls.append(start)
        return WANT_WRITE if len(calls) == 2 else real(self, data, start, n)
    monkeypatch.setattr(type(job._ssl), "write_nogil", busy)
    job.run()
    assert job.rc == WANT_WRITE and 0 < job.taken < len(job.data)
    monkeypatch.undo()
    session.settle()
    assert session.state == "established"
    assert not [e for e in session.events() if isinstance(e, TlsFailure)]
    while (job := session.take_job()) is not None:
        job.run()
        session.settle(job)
    driver.flush()
    session.close()
    driver.flush()
    conn = sink.wait_done(timeout=10)
    driver.close()
    assert conn.close_notify_received and bytes(conn.received) == payload


@needs_native
def test_offload_min_bytes_left_behind_a_job_make_the_next_job(sink, pki):
    """Mutant: _next_job() sealing at once what was queued when it is exactly OFFLOAD_MIN
    (`<=` for `<`).  README "Seal jobs": jobs hold up to JOB_MAX; settle() makes the next job
    of what was queued -- a job for anything of at least OFFLOAD_MIN, as send() itself does;
    only less than that is sealed at once."""
    driver = offload_driver(sink, tls_settings(pki))
    session = driver.session
    payload = os.urandom(session_module.JOB_MAX + session_module.OFFLOAD_MIN)
    session.send(payload)
    first = session.take_job()
    assert len(first.data) == session_module.JOB_MAX
    first.run()
    session.settle(first)
    driver.flush()
    assert session.unsealed() == session_module.OFFLOAD_MIN
    second = session.take_job()
    assert second is not None and bytes(second.data) == payload[session_module.JOB_MAX:]
    assert session.outgoing() == []
    second.run()
    session.settle(second)
    driver.flush()
    session.close()
    driver.flush()
    conn = sink.wait_done(timeout=10)
    driver.close()
    assert bytes(conn.received) == payload


class WantReadOnce:
    """A TLSWrappedBuffer whose next write() answers WantReadError without taking the data,
    as Mbed TLS's write does while a server-initiated renegotiation runs (README "Driving
    the wrapper"); everything else is the wrapped buffer's."""

    def __init__(self, buffer) -> None:
        self._real = buffer
        self.refuse = 1

    def write(self, data):
        if self.refuse:
            from mbedtls.tls import WantReadError
            self.refuse -= 1
            raise WantReadError()
        return self._real.write(data)

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_a_send_the_library_defers_keeps_every_byte_in_order(pki):
    """Mutant: _send_now() keeping only the chunk being written when the library answers
    WantReadError (`_unsent += chunk` for `+= view`): the rest of a send larger than one
    record (16 KiB) was lost.  README: send() takes any size; while a renegotiation runs the
    data wait and go, in order, once the library takes them."""
    peer = MemPeer(pki.server)
    session = TlsClientSession(tls_settings(pki))
    established(session, peer)
    session._buffer = WantReadOnce(session._buffer)
    payload = os.urandom(3 * session_module.WRITE_CHUNK + 100)
    session.send(payload)                                       # refused: all of it waits
    session.send(b"and after")                                  # behind it, then written
    run(session, peer)
    assert peer.error is None and session.state == "established"
    assert bytes(peer.received) == payload + b"and after"


# == renegotiation checks (session.py _check_renegotiation) ====================================
def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=datetime.timezone.utc)


@needs_native
def test_no_renegotiation_means_no_second_check_of_the_certificate(pki):
    """Mutant: _check_renegotiation() going on when no renegotiation ran (its `if not
    self._renegotiating: return` removed): every read re-verified the certificate at the
    modem clock.  README "Certificate verification" / the renegotiation notes: the chain is
    checked when its Certificate message arrives, and again only at the modem clock *of a
    renegotiation*; the modem clock passing the certificate's notAfter later, with no
    renegotiation, ends nothing -- the server's data are delivered."""
    windowed = pki.issue_window("survivors8-window", utc(2020, 1, 1), utc(2030, 1, 1))
    now = [utc(2026, 6, 1)]
    peer = MemPeer(windowed)
    session = TlsClientSession(tls_settings(pki, renegotiation=True, ignore_local_time=False,
                                            clock=lambda: now[0]))
    established(session, peer)
    now[0] = utc(2031, 1, 1)                    # past notAfter, at the modem clock
    peer.tls.write(b"still the same session")
    session.receive(peer.pending())
    events = session.events()
    assert [e for e in events if isinstance(e, AppData)] == [AppData(b"still the same session")]
    assert not [e for e in events if isinstance(e, TlsFailure)]
    assert session.state == "established"


# == records.py: HandshakeSniffer ==============================================================
def tls_record(ctype: int, payload: bytes, version: bytes = b"\x03\x03") -> bytes:
    return bytes([ctype]) + version + len(payload).to_bytes(2, "big") + payload


def test_largest_message_counts_a_message_already_complete():
    """Mutant: _split_tls_handshake() not recording the length of the messages it completes
    (`self._largest = max(...)` dropped): largest_message() then saw only a message still being
    reassembled.  Its contract (records.py): the longest handshake message seen so far,
    counting one still being reassembled at its announced length -- a 20000-byte Certificate
    that arrived whole, across two records (RFC 5246 6.2.1 lets a message span records), is
    20000 after it completed too; the session's failure reason rests on it (a message larger
    than Mbed TLS's one-record limit)."""
    message = b"\x0b" + (20000).to_bytes(3, "big") + bytes(20000)
    sniffer = HandshakeSniffer(dtls=False)
    msgs, _ = sniffer.feed(tls_record(22, message[:16000]))
    assert msgs == [] and sniffer.largest_message() == 20000 and sniffer.fragmented
    msgs, _ = sniffer.feed(tls_record(22, message[16000:]))
    assert [(m.msg_type, len(m.body)) for m in msgs] == [(11, 20000)]
    assert sniffer.largest_message() == 20000
    msgs, _ = sniffer.feed(tls_record(22, b"\x0e\x00\x00\x00"))     # ServerHelloDone, small
    assert [m.msg_type for m in msgs] == [14] and sniffer.largest_message() == 20000


# == _pump_read / _fail: records the test seals under the server's keys =======================
GCM = 0xC02F                                    # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256


def prf_sha256(secret: bytes, label: bytes, seed: bytes, n: int) -> bytes:
    """RFC 5246 5: P_SHA256."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < n:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:n]


class ServerSealer:
    """Records as the server would send them after its Finished, AES-128-GCM under TLS 1.2
    (RFC 5246 6.3 key block, RFC 5288 nonce and AAD), from the master secret the session's
    own key log gives (NSS CLIENT_RANDOM line) and the randoms of the two hellos."""

    def __init__(self, keylog_lines: list[str], client_hello: bytes, server_flight: bytes) -> None:
        client_random = client_hello[11:43]
        server_random = server_flight[11:43]
        [master] = [bytes.fromhex(line.split()[2]) for line in keylog_lines
                    if line.split()[1] == client_random.hex()]
        block = prf_sha256(master, b"key expansion", server_random + client_random, 40)
        self.aead, self.iv = AESGCM(block[16:32]), block[36:40]
        self.seq = 1                            # the server's Finished was record 0 of the epoch

    def seal(self, payload: bytes, ct: int = 23) -> bytes:
        explicit = struct.pack(">Q", self.seq)
        self.seq += 1
        aad = explicit + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(payload))
        body = explicit + self.aead.encrypt(self.iv + explicit, payload, aad)
        return bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(body)) + body


def sealed_session(pki) -> tuple[TlsClientSession, ServerSealer]:
    """An established TLS 1.2 GCM session against OpenSSL, and the server's record sealer."""
    lines: list[str] = []
    peer = MemPeer(pki.server, ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    session = TlsClientSession(tls_settings(pki, cipher_suites=(GCM,), keylog=lines.append))
    session.start()
    [hello] = session.outgoing()
    peer.take(hello)
    first = peer.pending()
    session.receive(first)
    done = run(session, peer)
    assert any(isinstance(e, HandshakeComplete) for e in done), done
    return session, ServerSealer(lines, hello, first)


@needs_native
def test_empty_records_in_a_row_short_of_four_are_skipped_and_the_data_after_delivered(pki):
    """Mutant: _pump_read() failing the session after two RaggedEOFs (`empty > 1` for
    `> 64`).  docs/behaviour.md "Empty records": empty application records (legal TLS) are
    skipped and the data after them delivered; only four in a row fail the session, as Mbed
    TLS itself does.  Three in a row (Mbed TLS skips the first, answers 0 for the second and
    the third) then data: the data, no failure."""
    session, server = sealed_session(pki)
    session.receive(b"".join(server.seal(b"") for _ in range(3)) + server.seal(b"after three empty records"))
    events = session.events()
    assert events == [AppData(b"after three empty records")], events
    assert session.state == "established"


@needs_native
def test_a_bad_record_on_an_open_session_is_a_protocol_error_after_the_data_before_it(pki):
    """Mutants: _fail_from_tls_error() calling an error on an established session
    handshake_failed (`else HANDSHAKE_FAILED`), and _fail() not delivering first what this
    receive() decrypted (its `_flush_rx()` dropped).  README: kinds are handshake_failed
    during the handshake, protocol_error after; docs/behaviour.md: a fatal TLS error on an
    open connection (a record that fails its MAC) ends it, and what came before stays
    readable -- the data record, then the failure, in that order."""
    session, server = sealed_session(pki)
    good = server.seal(b"before the bad record")
    bad = bytearray(server.seal(b"forged"))
    bad[-1] ^= 0x01                                     # its GCM tag no longer verifies
    session.receive(good + bytes(bad))
    events = session.events()
    assert len(events) == 2 and events[0] == AppData(b"before the bad record"), events
    assert isinstance(events[1], TlsFailure) and events[1].kind == "protocol_error"
    assert session.state == "failed"


def dtls_fragment(msg_type: int, total: int, seq: int, offset: int, body: bytes, number: int = 0) -> bytes:
    """One DTLS handshake fragment (RFC 6347 4.2.2) in an epoch-0 DTLS 1.2 record numbered
    `number` (Mbed TLS takes a record number once: anti-replay)."""
    hs = (bytes([msg_type]) + total.to_bytes(3, "big") + seq.to_bytes(2, "big") + offset.to_bytes(3, "big")
          + len(body).to_bytes(3, "big") + body)
    return b"\x16\xfe\xfd" + b"\x00\x00" + number.to_bytes(6, "big") + len(hs).to_bytes(2, "big") + hs


def test_overlapping_dtls_fragments_complete_the_message():
    """Mutant: _covers() taking the end of each range as how far the message is covered
    (`reached = end`, not the furthest end so far): a fragment inside one already held pulled
    the mark back and the message never completed.  RFC 6347 4.2.3: fragments may overlap;
    the message is complete once its bytes are all covered -- [0,100) + [10,50) + [100,200)
    is all of a 200-byte message."""
    body = bytes(range(200))
    sniffer = HandshakeSniffer(dtls=True)
    got = []
    for number, (offset, end) in enumerate(((0, 100), (10, 50), (100, 200))):
        msgs, _ = sniffer.feed(dtls_fragment(2, 200, 0, offset, body[offset:end], number))
        got += msgs
    assert [(m.msg_type, m.body) for m in got] == [(2, body)]


def test_a_certificate_list_whose_length_disagrees_is_refused():
    """Mutant: parse_certificate_list() not comparing the certificate_list length with the
    body (its `total != len(body) - 3` check dropped).  RFC 5246 7.4.2: the body is
    certificate_list<0..2^24-1>; a list length that does not span the body exactly is a
    malformed message (the session fails it as such), not a list to read as far as it goes."""
    entry = (3).to_bytes(3, "big") + b"abc"
    assert parse_certificate_list(len(entry).to_bytes(3, "big") + entry) == [b"abc"]
    with pytest.raises(ValueError):
        parse_certificate_list((len(entry) + 5).to_bytes(3, "big") + entry)
    with pytest.raises(ValueError):
        parse_certificate_list((len(entry) - 1).to_bytes(3, "big") + entry)


# == datagrams.py ==============================================================================
def dtls_record(length: int) -> bytes:
    return b"\x17\xfe\xfd" + bytes(8) + length.to_bytes(2, "big") + bytes(length)


def test_records_filling_a_datagram_to_exactly_1400_bytes_share_it():
    """Mutant: pack_datagrams() starting a new datagram when the record would make exactly
    the budget (`>=` for `>`).  README: DTLS outgoing() is one item per datagram, whole
    records packed *up to* 1400 bytes -- two records of 700 bytes fill one datagram; one
    byte more and the second goes alone."""
    first, second = dtls_record(700 - 13), dtls_record(700 - 13)
    assert pack_datagrams(first + second) == [first + second]
    third = dtls_record(701 - 13)
    assert pack_datagrams(first + third) == [first, third]


def test_a_record_larger_than_the_budget_goes_alone_and_no_empty_datagram_is_made():
    """Mutant: pack_datagrams() closing the current datagram even when it is still empty
    (`if current and` dropped): a first record over the budget made an empty datagram before
    it.  README / datagrams.py: one bigger record still goes alone -- one datagram per item,
    never an empty one."""
    big, small = dtls_record(2000), dtls_record(10)
    assert pack_datagrams(big) == [big]
    assert pack_datagrams(big + small) == [big, small]


def test_bytes_after_the_last_whole_record_are_never_dropped():
    """Mutant: pack_datagrams() leaving out a tail too short for a record header.
    datagrams.py: the stream is cut into whole records, and bytes that are not one still go
    (never drop bytes)."""
    record = dtls_record(20)
    assert b"".join(pack_datagrams(record + b"\x17\xfe")) == record + b"\x17\xfe"


# == resumption.py =============================================================================
def test_an_entry_saved_under_other_settings_is_dropped_when_asked_for():
    """Mutant: SessionCache.get() answering None for a fingerprint mismatch but keeping the
    entry.  README "SessionCache": a session is offered again only under the same
    fingerprint, otherwise the entry is dropped (and a full handshake runs)."""
    cache = SessionCache()
    cache.put("ctx0", "saved session", b"fingerprint A")
    assert cache.get("ctx0", b"fingerprint A") == "saved session" and "ctx0" in cache
    assert cache.get("ctx0", b"fingerprint B") is None
    assert "ctx0" not in cache and len(cache) == 0
    assert cache.get("ctx0", b"fingerprint A") is None


def test_the_modem_clock_is_not_part_of_the_settings_fingerprint():
    """Mutant: settings_fingerprint() hashing the `clock` callable too (whose repr differs
    from one callable to the next: no session would ever resume).  README "SessionCache": the
    fingerprint is SHA-256 of every field but clock, keylog, ca_label."""
    base = TlsSettings(server_name="localhost", seclevel=1, ca_pem=b"pem", ca_label="RAM:a.pem")
    other = dataclasses.replace(base, clock=lambda: datetime.datetime(2030, 1, 1), keylog=print,
                                ca_label="UFS:b.pem")
    assert settings_fingerprint(other) == settings_fingerprint(base)
    assert settings_fingerprint(dataclasses.replace(base, ca_pem=b"other pem")) != settings_fingerprint(base)


# == session.py _sniff: alerts in clear during the handshake ===================================
def test_a_warning_alert_is_not_named_as_the_reason_the_handshake_ended(pki):
    """Mutant: _sniff() recording a warning alert as the server's fatal alert
    (`alert.level >= 1`).  README "Failures": handshake failures name the server's *fatal*
    alert when it came in clear; a TCP EOF during the handshake names the alert only if one
    was seen -- a warning (RFC 5246 7.2: the connection goes on) is no reason: the failure
    says the server closed the connection."""
    session = TlsClientSession(tls_settings(pki))
    session.start()
    assert session.outgoing()
    session.receive(tls_record(21, b"\x01\x70"))          # warning unrecognized_name(112)
    session.receive(b"")
    [failure] = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert failure.kind == "handshake_failed"
    assert failure.reason == "server closed the connection during the handshake"


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")
def test_the_clear_alert_of_a_failed_check_carries_the_negotiated_record_version(pki):
    """Mutant: _queue_clear_alert() writing its record with version 3,3 whatever the server
    chose.  README: on a failed check TLS peers get a fatal alert in clear, the one Mbed TLS
    would send; RFC 5246 / RFC 2246 6.2.1: after the ServerHello the record version is the
    negotiated one -- a TLS 1.0 server (OpenSSL) reads unknown_ca, not a wrong version."""
    peer = MemPeer(pki.wrong_server, version=ssl.TLSVersion.TLSv1, ciphers="ALL:@SECLEVEL=0")
    session = TlsClientSession(tls_settings(pki, ssl_version=1))
    events = run(session, peer)
    [failure] = [e for e in events if isinstance(e, TlsFailure)]
    assert failure.kind == "verify_failed"
    assert peer.error is not None and "UNKNOWN_CA" in (peer.error.reason or "").upper(), peer.error


@needs_native
def test_a_failed_connection_takes_its_session_out_of_the_cache(pki):
    """Mutants: _fail() not calling Resumption.forget(), and forget() not discarding.
    resumption.py: after a failure the session is never offered again -- the next open under
    the same key runs a full handshake."""
    cache = SessionCache()
    first = TlsClientSession(tls_settings(pki), cache=cache, cache_key=("ctx", "localhost", 443))
    established(first, MemPeer(pki.server))
    assert ("ctx", "localhost", 443) in cache
    second = TlsClientSession(tls_settings(pki), cache=cache, cache_key=("ctx", "localhost", 443))
    second.start()
    assert second.outgoing()
    second.receive(tls_record(21, b"\x02\x28"))                 # fatal handshake_failure(40)
    assert [e.kind for e in second.events() if isinstance(e, TlsFailure)] == ["handshake_failed"]
    assert ("ctx", "localhost", 443) not in cache
