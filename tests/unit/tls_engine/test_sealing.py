"""Seal jobs (tls_engine/sealing.py): with offload on, a big send() is encrypted by a job
the owner runs on another thread (NativeSsl.write_nogil, the GIL released), and every
session method that needs the TLS context takes the job in first.  Peers are OpenSSL
(emulator.testing.peers.TlsServer); the bytes it decrypts are the check."""
from __future__ import annotations

import hashlib
import os
import threading

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsServer
from tls_engine import PROTOCOL_ERROR, HandshakeComplete, TlsClientSession, TlsFailure
from tls_engine import native
from tls_engine import session as session_module
from tls_engine.sealing import WANT_READ

pytestmark = pytest.mark.skipif(not native.available(), reason=native.unavailable_reason())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sink():
    with TlsServer(mode="sink", legacy=True) as server:
        yield server


def connect(server, settings, offload: bool = True) -> ClientDriver:
    session = TlsClientSession(settings)
    session.offload = offload
    driver = ClientDriver(session, server.port)
    assert isinstance(driver.handshake(), HandshakeComplete)
    return driver


def run_on_a_thread(job) -> str:
    """Run a job the way the emulator's worker does; the thread's name it ran on."""
    ran_on = []

    def work():
        ran_on.append(threading.current_thread().name)
        job.run()
    thread = threading.Thread(target=work, name="test-seal")
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return ran_on[0]


def finish(driver, server, payload: bytes) -> None:
    """close_notify after everything; the server must have decrypted exactly `payload`."""
    driver.session.close()
    driver.flush()
    conn = server.wait_done(timeout=10)
    driver.close()
    assert conn.close_notify_received
    assert len(conn.received) == len(payload)
    assert sha(bytes(conn.received)) == sha(payload)


def test_a_big_send_is_sealed_by_a_job_on_another_thread(sink, base_settings):
    payload = os.urandom(1 << 20)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    assert session.outgoing() == []                  # nothing encrypted on this thread
    assert session.unsealed() == len(payload)
    jobs = 0
    while (job := session.take_job()) is not None:
        assert session.take_job() is None            # handed out once
        assert run_on_a_thread(job) == "test-seal"
        assert job.taken == len(job.data) <= session_module.JOB_MAX and job.rc is None
        session.settle()
        driver.flush()
        jobs += 1
    assert jobs == -(-len(payload) // session_module.JOB_MAX)
    assert session.unsealed() == 0
    finish(driver, sink, payload)


def test_sends_behind_a_job_keep_their_order(sink, base_settings):
    """Small and big sends while a job is out: all queued behind it, in order."""
    parts = [os.urandom(n) for n in (70000, 10, 5000, 100, 200000, 3)]
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(parts[0])
    first = session.take_job()
    for part in parts[1:]:
        session.send(part)                           # (the first job has not run yet)
    assert session.unsealed() == sum(map(len, parts))
    run_on_a_thread(first)
    while True:
        session.settle()
        driver.flush()
        job = session.take_job()
        if job is None:
            break
        run_on_a_thread(job)
    finish(driver, sink, b"".join(parts))


def test_a_small_send_is_encrypted_at_once(sink, base_settings):
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(b"x" * (session_module.OFFLOAD_MIN - 1))
    assert session.take_job() is None and session.unsealed() == 0
    records = b"".join(session.outgoing())
    assert len(records) > session_module.OFFLOAD_MIN
    driver.sock.sendall(records)
    finish(driver, sink, b"x" * (session_module.OFFLOAD_MIN - 1))


def test_without_offload_there_are_no_jobs(sink, base_settings):
    payload = os.urandom(300000)
    driver = connect(sink, base_settings(), offload=False)
    driver.session.send(payload)
    assert driver.session.take_job() is None and driver.session.unsealed() == 0
    finish(driver, sink, payload)


def test_a_job_nobody_ran_runs_when_the_session_needs_its_context(sink, base_settings):
    """A method that needs the TLS context (here handle_timeout; receive and close alike)
    takes the job in first: run here when no thread has claimed it yet; the worker that
    comes to it later finds it claimed and does nothing (no record twice: the server
    would fail the MAC or read the bytes twice)."""
    payload = os.urandom(200000)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    job = session.take_job()
    session.handle_timeout()
    assert job.done and job.taken == len(job.data)
    records = b"".join(session.outgoing())
    assert len(records) > len(job.data)
    job.run()                                        # the late worker
    assert job.taken == len(job.data) and session.outgoing() == []
    driver.sock.sendall(records)
    while (job := session.take_job()) is not None:
        run_on_a_thread(job)
        session.settle()
        driver.flush()
    finish(driver, sink, payload)


def test_close_seals_what_is_queued_before_close_notify(sink, base_settings):
    payload = os.urandom(300000)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    job = session.take_job()
    threading.Thread(target=job.run).start()        # in flight while close() comes
    finish(driver, sink, payload)                   # close(): waits, then the queue, then the alert


def test_a_failed_native_write_fails_the_session(sink, base_settings, monkeypatch):
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(os.urandom(100000))
    job = session.take_job()
    monkeypatch.setattr(type(job._ssl), "write_nogil", lambda self, data, start, n: -0x7180)
    run_on_a_thread(job)
    session.settle()
    failures = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert session.state == "failed" and len(failures) == 1
    assert failures[0].kind == PROTOCOL_ERROR and "-0x7180" in failures[0].reason
    assert session.unsealed() == 0 and session.take_job() is None
    driver.close()


def test_an_exception_in_a_job_fails_the_session_instead_of_escaping(sink, base_settings, monkeypatch):
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(os.urandom(100000))
    job = session.take_job()

    def boom(self, data, start, n):
        raise MemoryError("no room")
    monkeypatch.setattr(type(job._ssl), "write_nogil", boom)
    job.run()                                        # never raises
    session.settle()
    failure = next(e for e in session.events() if isinstance(e, TlsFailure))
    assert session.state == "failed" and "MemoryError: no room" in failure.reason
    driver.close()


def test_want_read_from_the_native_write_leaves_the_rest_to_the_wrapper(sink, base_settings, monkeypatch):
    """The library answering WANT_READ (a renegotiation wanting input): what the job did
    not seal waits in the session's unsent queue and goes out through the wrapper's own
    write, in order after what the job sealed."""
    payload = os.urandom(150000)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    job = session.take_job()
    real = type(job._ssl).write_nogil
    calls = []

    def flaky(self, data, start, n):
        calls.append(start)
        return WANT_READ if len(calls) == 3 else real(self, data, start, n)
    monkeypatch.setattr(type(job._ssl), "write_nogil", flaky)
    run_on_a_thread(job)
    assert job.rc == WANT_READ and 0 < job.taken < len(job.data)
    monkeypatch.undo()
    session.settle()
    assert session.state == "established" and session.take_job() is None
    driver.flush()
    finish(driver, sink, payload)


def test_dtls_sessions_make_no_jobs(base_settings):
    session = TlsClientSession(base_settings(dtls=True))
    session.offload = True
    assert not session._offloadable()


def test_settle_of_a_job_already_taken_in_leaves_the_next_to_the_worker(sink, base_settings):
    """The owner's "job ran" can come after receive()/handle_timeout() took that job in and
    made the next one: settle(job) must not run the next one here (the worker will)."""
    payload = os.urandom(200000)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    first = session.take_job()
    run_on_a_thread(first)
    session.handle_timeout()                         # takes `first` in, makes the next job
    second = session.take_job()
    assert second is not None and not second.done
    session.settle(first)                            # the late report of `first`
    assert not second.done                           # not run on this thread
    driver.flush()
    while second is not None:
        run_on_a_thread(second)
        session.settle(second)
        driver.flush()
        second = session.take_job()
    finish(driver, sink, payload)


def test_no_job_runs_once_the_session_has_ended(sink, base_settings):
    """receive() settles the job in flight and makes the next of the queue, then the same
    bytes end the session (here a TCP EOF; a close_notify resets the wrapper's context):
    that next job is dropped, never handed out or run on the ended session."""
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(os.urandom(200000))
    first = session.take_job()
    run_on_a_thread(first)
    session.receive(b"")                             # settles `first`, then the end
    assert session.state == "closed"
    assert session.take_job() is None and session.unsealed() == 0
    session.settle()                                 # nothing left to run
    assert session.unsealed() == 0
    driver.close()


# -- copies (issue 13: fewer copies on the transparent path) --------------------------------------
from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402


def test_a_send_of_one_job_or_less_is_sealed_from_the_callers_bytes(sink, base_settings):
    """A send of OFFLOAD_MIN..JOB_MAX bytes with no job out becomes the job's data itself (no
    copy into a queue and out again); the records come out of outgoing() in one buffer,
    handed on as it is (the session writes into a new one from then on); what the server
    decrypts is exactly the payload."""
    payload = os.urandom(session_module.JOB_MAX)
    driver = connect(sink, base_settings())
    session = driver.session
    session.send(payload)
    job = session.take_job()
    assert job.data is payload
    run_on_a_thread(job)
    session.settle()
    [records] = session.outgoing()
    assert session._tls_out is not records and len(session._tls_out) == 0
    assert len(records) > len(payload)
    driver.sock.sendall(records)
    finish(driver, sink, payload)


@hsettings(max_examples=300, deadline=None)
@given(ops=st.lists(st.one_of(st.binary(max_size=40).map(lambda b: ("append", b)),
                              st.integers(0, 60).map(lambda n: ("take", n)),
                              st.just(("take_all", None)), st.just(("clear", None))), max_size=30))
def test_pieces_take_what_was_appended_in_order(ops):
    """session._Pieces (send()'s queue behind a job) against a plain bytearray model."""
    pieces, model = session_module._Pieces(), bytearray()
    for op, arg in ops:
        if op == "append":
            pieces.append(arg if len(arg) % 2 else bytearray(arg))     # (bytes or a buffer)
            model += arg
        elif op == "take":
            got = pieces.take(arg)
            assert isinstance(got, bytes) and got == bytes(model[:arg])
            del model[:arg]
        elif op == "take_all":
            assert pieces.take() == bytes(model)
            model.clear()
        else:
            pieces.clear()
            model.clear()
        assert len(pieces) == len(model) and bool(pieces) == bool(model)
        assert sum(map(len, pieces.pieces)) == len(model) and all(pieces.pieces)
