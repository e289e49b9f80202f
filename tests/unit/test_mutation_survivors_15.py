"""Mutation survivors, round 15: behaviour of this session's changes (emulator/tools/stderr_log.py,
the to_tls_settings memo, the teardown's reset, the engine's pinned-version naming, the
native self-check on the importing thread, the state dir sweep's EMFILE) that the suite did
not pin -- each test here fails on a small mutation of that code that every other test let
pass."""
from __future__ import annotations

import asyncio
import errno
import fcntl
import io
import logging
import os
import re
import socket
import struct
import threading
import time

import pytest

from emulator.modem import modem as modem_module
from emulator.modem.profile import load_profile
from emulator.sockets.context import SslContext, to_tls_settings
from emulator.tools import stderr_log
from emulator.tools.stderr_log import NOTICE, StderrLog
from tests.e2e import test_adversarial_hostile_servers_10 as h10
from tests.pipes import F_SETPIPE_SZ, read_until_idle
from tls_engine import TlsClientSession, TlsFailure, TlsSettings
from tls_engine.native import selfcheck, wrapper
from tls_engine.native.layout import LayoutError

DROPPED = re.compile(rb"modem-emulator: (\d+) log lines dropped \(stderr was not read\)\n")


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


_made: list[StderrLog] = []


def bare(stream) -> StderrLog:
    log = StderrLog(stream)
    log.setFormatter(logging.Formatter("%(message)s"))
    _made.append(log)
    return log


@pytest.fixture(autouse=True)
def _close_own_descriptions():
    """The handlers' own descriptions of the test's pipes are closed after each test."""
    yield
    while _made:
        log = _made.pop()
        if log._fd is not None:
            try:
                os.close(log._fd)
            except OSError:
                pass
            log._fd = None


class Writes:
    """stderr_log's `os` with write() counted (and optionally cut short / hooked)."""

    def __init__(self, hook=None, cut=None) -> None:
        self.calls: list[int] = []
        self.hook, self.cut = hook, cut

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd, data):
        if self.cut is not None and len(self.calls) == 0:
            data = data[:self.cut]
        n = os.write(fd, data)
        self.calls.append(n)
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return n


# == stderr_log ======================================================================================
def test_stderr_waiting_holds_at_most_max_waiting_lines(small_pipe):
    """MAX_WAITING is the bound: with the pipe full, the deque never holds more lines
    (mutant: `>` for `>=` kept one more)."""
    r, stream = small_pipe
    log = bare(stream)
    log.MAX_WAITING = 5
    log.emit(record("F" * 8000))                  # the pipe takes 4 KiB: the tail is kept apart
    for i in range(20):
        log.emit(record(f"line {i}"))
    assert len(log._waiting) == 5
    got = read_until_idle(r, 0.2, tick=lambda: log.drain(0.01))
    lines = [x for x in got.split(b"\n") if x.startswith(b"line ")]
    assert lines == [f"line {i}".encode() for i in range(5)]
    assert [int(n) for n in DROPPED.findall(got)] == [15]


def test_stderr_the_dropped_count_goes_first_when_the_pipe_moves(small_pipe):
    """The module: "the count first, when the pipe moves again" -- right after the partly
    written line's tail, before the lines that waited (mutant: appended after them)."""
    r, stream = small_pipe
    log = bare(stream)
    log.MAX_WAITING = 3
    big = "B" * 10_000
    log.emit(record(big))
    for i in range(6):
        log.emit(record(f"line {i}"))
    got = read_until_idle(r, 0.2, tick=lambda: log.drain(0.01))
    assert got == big.encode() + b"\n" + NOTICE.format(3).encode() + b"line 0\nline 1\nline 2\n"


def test_stderr_the_stream_encoding_is_kept(small_pipe):
    """The lines are encoded as the stream says (sys.stderr's encoding: PYTHONIOENCODING,
    the locale), what it cannot take as escapes (mutant: always UTF-8)."""
    r, w = small_pipe
    stream = io.TextIOWrapper(os.fdopen(os.dup(w.fileno()), "wb"), encoding="latin-1")
    try:
        log = bare(stream)
        assert log.mode == "nonblocking"
        log.emit(record("caf\u00e9 \u20ac"))
        assert read_until_idle(r, 0.2, tick=lambda: log.drain(0.01)) == b"caf\xe9 \\u20ac\n"
    finally:
        stream.close()


def test_stderr_waiting_lines_leave_in_one_write(small_pipe, monkeypatch):
    """Lines that waited are joined into one write(2) (up to MAX_WRITE), not one call each
    (mutant: MAX_WRITE 1)."""
    r, stream = small_pipe
    log = bare(stream)
    log.emit(record("X" * 5000))                  # 4 KiB taken, the tail waits
    for i in range(50):
        log.emit(record(f"line {i:02d}"))
    os.read(r, 1 << 16)                           # the pipe moves: room for all of it
    writes = Writes()
    monkeypatch.setattr(stderr_log, "os", writes)
    with log._lock:
        assert log._flush()
    monkeypatch.setattr(stderr_log, "os", os)
    assert len(writes.calls) == 2                 # the tail, then the 50 lines at once
    rest = read_until_idle(r, 0.2, tick=lambda: log.drain(0.01))
    assert rest.endswith(b"".join(f"line {i:02d}\n".encode() for i in range(50)))


def test_stderr_a_line_from_a_signal_handler_during_a_partial_write(small_pipe, monkeypatch):
    """A signal handler logging right after a write(2) that took only part of a line:
    the new line must neither land inside the cut line nor be lost (mutant: no
    _flushing guard -- the inner flush writes it in the middle, or its partial tail is
    overwritten by the outer one's)."""
    r, stream = small_pipe
    log = bare(stream)
    writes = Writes(hook=lambda: log.emit(record("from a signal handler")), cut=10)
    monkeypatch.setattr(stderr_log, "os", writes)
    log.emit(record("first " + "f" * 50))
    monkeypatch.setattr(stderr_log, "os", os)
    assert read_until_idle(r, 0.2, tick=lambda: log.drain(0.01)) == ("first " + "f" * 50 + "\nfrom a signal handler\n").encode()


def test_stderr_a_loop_watches_the_pipe_only_while_lines_wait(small_pipe):
    """A line the pipe takes at once leaves no writer on the loop (mutant: _watch()
    after every line)."""
    r, stream = small_pipe
    log = bare(stream)

    async def main():
        log.emit(record("taken at once"))
        assert log._watched is None
        log.emit(record("W" * 10_000))            # this one waits: the loop watches
        assert log._watched is asyncio.get_running_loop()
        os.set_blocking(r, False)
        got = bytearray()
        for _ in range(200):
            try:
                got.extend(os.read(r, 1 << 16))
            except BlockingIOError:
                pass
            if got.endswith(b"W\n"):
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        assert log._watched is None               # written: the writer is gone
        assert not asyncio.get_running_loop().remove_writer(log._fd)
        log.emit(record("V" * 10_000))            # a second backlog: watched again, and leaves
        for _ in range(200):
            try:
                got.extend(os.read(r, 1 << 16))
            except BlockingIOError:
                pass
            if got.endswith(b"V\n"):
                break
            await asyncio.sleep(0.01)
        return bytes(got)
    got = asyncio.run(main())
    assert got == b"taken at once\n" + b"W" * 10_000 + b"\n" + b"V" * 10_000 + b"\n"


def test_stderr_lines_adding_up_to_max_write_exactly_leave_in_one_write(monkeypatch):
    """MAX_WRITE is the largest joined write, itself included (mutant: `<`)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 256 * 1024)
    stream = os.fdopen(w, "w")
    try:
        log = bare(stream)
        half = stderr_log.MAX_WRITE // 2
        parts = [b"a" * (half - 1) + b"\n", b"b" * (half - 1) + b"\n", b"c\n"]
        log._waiting.extend(parts)
        writes = Writes()
        monkeypatch.setattr(stderr_log, "os", writes)
        with log._lock:
            assert log._flush()
        monkeypatch.setattr(stderr_log, "os", os)
        assert writes.calls == [stderr_log.MAX_WRITE, 2]
        assert read_until_idle(r, 0.2, tick=lambda: log.drain(0.01)) == b"".join(parts)
    finally:
        stream.close()
        os.close(r)


def test_stderr_a_reader_gone_while_lines_wait_keeps_none_of_them():
    """The pipe full, more than one write's worth waiting, then the reader goes: the next
    line's write fails (EPIPE) and nothing is kept waiting -- no writer left spinning on
    the loop, nothing for drain() (mutant: only the batch in hand was dropped)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    with os.fdopen(w, "w") as stream:
        log = bare(stream)
        for i in range(3_000):                    # ~200 KB: far more than the pipe and MAX_WRITE
            log.emit(record(f"line {i:04d} " + "q" * 60))
        assert sum(map(len, log._waiting)) > stderr_log.MAX_WRITE
        os.close(r)
        log.emit(record("after the reader went"))
        assert not log._waiting and not log._partial


def socket_log(**kw):
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stream = a.makefile("w")
    log = bare(stream)
    assert log.mode == "thread"
    return a, b, stream, log


def test_stderr_thread_mode_counts_what_it_drops_and_says_so():
    """A socket nobody reads: the thread's queue holds MAX_WAITING lines, the rest are
    counted and the count is written when it moves again (mutant: the count never
    written); every line is written or counted."""
    a, b, stream, log = socket_log()
    try:
        log.MAX_WAITING = 5
        total = 300
        for i in range(total):
            log.emit(record(f"line {i:03d} " + "s" * 1000))
        b.settimeout(0.5)
        got = bytearray()
        while True:
            try:
                chunk = b.recv(1 << 16)
            except socket.timeout:
                break
            if not chunk:
                break
            got += chunk
        log.drain(5.0)
    finally:
        stream.close()
        a.close()
        b.close()
    lines = [x for x in bytes(got).split(b"\n") if x.startswith(b"line ")]
    dropped = sum(int(n) for n in DROPPED.findall(bytes(got)))
    assert dropped > 0
    assert len(lines) + dropped == total


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_stderr_thread_mode_survives_a_closed_stream_and_drain_returns():
    """The thread's stream closed under it (ValueError on write): the lines go nowhere, the
    thread lives on, every line is marked done so drain() returns at once (mutants: only
    OSError caught -- the thread dies and the next line waits forever; no task_done)."""
    a, b, stream, log = socket_log()
    try:
        log.emit(record("one"))
        log.drain(5.0)
        assert b.recv(100) == b"one\n"
        stream.close()
        for i in range(3):
            log.emit(record(f"into a closed stream {i}"))
        log.drain(2.0)
        assert log._thread.is_alive()
        assert log._lines.unfinished_tasks == 0
    finally:
        a.close()
        b.close()


def test_stderr_which_character_devices_are_reopened():
    """/dev/null, /dev/tty, /dev/console, pty slaves (136-143) and the terminals and serial
    ports of major 4 are opened again through /proc/self/fd; a pty master (/dev/ptmx, 5:2)
    and anything unknown are not (mutant: major 4 left out)."""
    yes = [(1, 3), (5, 0), (5, 1), (136, 0), (143, 7), (4, 0), (4, 64)]
    no = [(5, 2), (1, 5), (1, 8), (128, 0), (144, 0), (3, 0)]
    assert [stderr_log._reopens_itself(os.makedev(*d)) for d in yes] == [True] * len(yes)
    assert [stderr_log._reopens_itself(os.makedev(*d)) for d in no] == [False] * len(no)


def test_stderr_none_is_mode_none():
    """sys.stderr None (2>&-): mode "none" (mutant: reported as "thread")."""
    assert bare(None).mode == "none"


def test_stderr_a_closed_regular_file_takes_nothing_and_raises_nothing(tmp_path):
    """A regular file closed under the handler: the line is dropped, the logging call
    raises nothing (mutant: only OSError caught, ValueError reaches the caller)."""
    stream = open(tmp_path / "err.log", "w")
    log = bare(stream)
    assert log.mode == "direct"
    stream.close()
    log.emit(record("into a closed file"))
    log.say("a hint\n")


def test_stderr_drain_stops_once_everything_is_written(small_pipe, monkeypatch):
    """drain() returns as soon as nothing waits -- it does not sit in select() until its
    timeout (every exit waits for it; mutant: the flush's answer ignored)."""
    r, stream = small_pipe
    log = bare(stream)
    log.emit(record("G" * 6000))                  # the tail waits
    os.set_blocking(r, False)
    selects = []
    real = stderr_log.select.select

    class Select:
        @staticmethod
        def select(*args):
            selects.append(args)
            got.extend(os.read(r, 1 << 16))       # (the reader moves while drain waits)
            return real(*args)
    got = bytearray(os.read(r, 1 << 16))
    monkeypatch.setattr(stderr_log, "select", Select)
    log.drain(30.0)
    assert len(selects) <= 1
    got.extend(os.read(r, 1 << 16))
    assert bytes(got) == b"G" * 6000 + b"\n"


def test_stderr_a_worker_line_asks_the_attached_loop(small_pipe):
    """attach(loop) (the CLI, before any line): lines a worker thread leaves waiting are
    written by that loop once the pipe is read, though no line was ever logged on the
    loop thread (mutant: attach() a no-op -- they wait for exit)."""
    r, stream = small_pipe
    log = bare(stream)
    got = bytearray()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log.attach(loop)

        def worker() -> None:
            for i in range(200):
                log.emit(record(f"worker {i:03d} " + "w" * 40))
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        os.set_blocking(r, False)
        deadline = loop.time() + 3
        while got.count(b"\n") < 200 and loop.time() < deadline:
            try:
                got.extend(os.read(r, 1 << 16))
            except BlockingIOError:
                await asyncio.sleep(0.01)
    asyncio.run(main())
    assert got.count(b"\n") == 200
    assert got.endswith(b"worker 199 " + b"w" * 40 + b"\n")


# == the to_tls_settings memo ========================================================================
PROFILE = load_profile("ec2x")


def tls_settings(ctx, files, **kw):
    args = dict(host="a.example", profile=PROFILE, read_material=files.get, clock=CLOCK, monotonic=MONOTONIC)
    args.update(kw)
    return to_tls_settings(ctx, **args)


def CLOCK():
    return None


def MONOTONIC():
    return 0.0


def pair_ctx():
    ctx = SslContext(1)
    ctx["seclevel"], ctx["cacert"] = 2, "UFS:ca.pem"
    ctx["clientcert"], ctx["clientkey"] = "UFS:cli.pem", "UFS:key.pem"
    files = {"UFS:ca.pem": b"CA\n", "UFS:cli.pem": b"CERT ONE", "UFS:key.pem": b"KEY"}
    return ctx, files


def test_memo_a_replaced_client_certificate_is_used_at_the_next_open():
    """The client certificate's bytes are an input (mutant: left out of the memo key --
    the next open presented the old certificate)."""
    ctx, files = pair_ctx()
    one = tls_settings(ctx, files)
    assert one.client_cert_pem == b"CERT ONE"
    files["UFS:cli.pem"] = b"CERT TWO"
    two = tls_settings(ctx, files)
    assert two.client_cert_pem == b"CERT TWO"
    assert tls_settings(ctx, files) is two


def test_memo_the_monotonic_clock_is_an_input():
    """settings.monotonic (DTLS retransmission's clock: the modem's timers) is an input
    (mutant: left out -- another modem's clock kept)."""
    ctx, files = SslContext(1), {}
    first = tls_settings(ctx, files)

    def other():
        return 5.0
    moved = tls_settings(ctx, files, monotonic=other)
    assert moved is not first and moved.monotonic is other


def test_memo_a_key_password_without_a_client_pair_is_not_in_the_settings():
    """The key password goes with a client key only: seclevel 1 (no pair) leaves it out,
    and an open with the pair after that has it."""
    ctx, files = pair_ctx()
    ctx.key_password = "secret"
    ctx["seclevel"] = 1
    assert tls_settings(ctx, files).client_key_password is None
    ctx["seclevel"] = 2
    assert tls_settings(ctx, files).client_key_password == b"secret"


# == the teardown's reset (emulator/sockets/ssl_socket.py) ===========================================
TCP_CLOSE, TCP_CLOSE_WAIT = 7, 8


def tcp_state(sock) -> int:
    return struct.unpack("B", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0]


@pytest.fixture
def hostile_modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == h10.OK
    return ec2x_strict


def close_holding_server(host, advance, emulator, close_timeout: int) -> dict:
    """Open, send, AT+QSSLCLOSE=4,<close_timeout> to a server that reads everything (the
    close_notify too) and never closes its side; the linger run out on the modem clock.
    What the server saw: its read's end ("eof" / "rst") and its socket's TCP state after."""
    state = {}

    def script(c):
        c.handshake()
        try:
            while True:
                ct, payload = c.read_record()
                plain = c.rx.open(ct, payload)
                if ct == h10.CT_APP:
                    c.plain += plain
                else:
                    c.alerts.append(plain)
        except EOFError:
            state["end"] = "eof"
        except ConnectionResetError:
            state["end"] = "rst"
        c.eof.set()
        c.server.release.wait(30)
        state["tcp"] = tcp_state(c.sock)

    with h10.Hand(emulator, script) as server:
        h10.ssl_open(host, 4)
        assert h10.open_answer(host, 4) == 0
        assert host.send_data(4, b"all of it") == b"\r\nSEND OK\r\n"
        host.write(b"AT+QSSLCLOSE=4,%d\r" % close_timeout)
        h10.wait_for(lambda: server.conns, what="connection")
        conn = server.conns[0]
        assert conn.eof.wait(10)                  # the close_notify and the FIN came (or the RST)
        if close_timeout:
            assert bytes(conn.plain) == b"all of it" and len(conn.alerts) == 1
            assert host.quiet_for(0.3) == b""     # lingering: the server keeps its side open
            advance(close_timeout + 0.2)
        assert host.read_until(h10.OK, timeout=5) == h10.OK
        time.sleep(0.3)
        server.release.set()
        h10.wait_for(lambda: "tcp" in state, what="the server's look")
    return state


def test_close_linger_run_out_with_nothing_unsent_is_a_reset(hostile_modem, emulator):
    """docs/behaviour.md (closetimemode): AT+QSSLCLOSE sends close_notify + FIN, "then
    lingers until the server closes too, at most <close_timeout>, then aborts (RST)".  A
    server that took every byte (the close_notify too) and keeps its side open: when the
    linger runs out the connection is reset -- the server's socket leaves CLOSE_WAIT
    (mutants: the flag not set when the linger runs out / not looked at -- only a backlog
    reset it, a FIN was all the server saw)."""
    host, advance, port = hostile_modem
    state = close_holding_server(host, advance, emulator, 1)
    assert state == {"end": "eof", "tcp": TCP_CLOSE}, state


# Was a bug, fixed (2026-12-06): AT+QSSLCLOSE=<id>,0 ('0 aborts at once', docs/behaviour.md) ends with close_notify + FIN and no RST: ssl_socket.SslSocket._linger returns at timeout <= 0 without setting _reset_at_end, so _teardown's abort is a plain close
def test_close_timeout_0_is_an_abort_too(hostile_modem, emulator):
    """docs/behaviour.md: "<close_timeout> ... 0 aborts at once", "`0` = abort at once", and
    an abort is an RST ("then aborts (RST)"): the server holding its side open sees its
    connection reset, as after a linger that ran out (1 s: the test above)."""
    host, advance, port = hostile_modem
    state = close_holding_server(host, advance, emulator, 0)
    assert state["tcp"] == TCP_CLOSE, state


# == the engine names the version a server chose (tls_engine/session.py) ==============================
def failure_reason(ssl_version: int, record_version: bytes, hello_version: bytes, then: bytes = b"") -> str:
    """A session pinned to `ssl_version` fed one ServerHello (AES128-SHA, no extensions) in
    a record of `record_version`, then `then`: the failure's reason."""
    session = TlsClientSession(TlsSettings(server_name="x.example", seclevel=0, ssl_version=ssl_version,
                                           cipher_suites=(0x002F,)))
    session.start()
    session.outgoing()
    body = hello_version + bytes(range(32)) + b"\x00" + b"\x00\x2f" + b"\x00"
    message = b"\x02" + len(body).to_bytes(3, "big") + body
    session.receive(b"\x16" + record_version + len(message).to_bytes(2, "big") + message + then)
    failures = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert session.state == "failed" and len(failures) == 1
    return failures[0].reason


def junk_record(version: bytes) -> bytes:
    return b"\x99" + version + b"\x00\x02ab"      # an unknown content type: Mbed TLS -0x7200


@pytest.mark.parametrize("ssl_version", [1, 2])
def test_a_tls12_answer_to_a_pinned_older_version_is_named(ssl_version):
    """sslversion 1 or 2 (TLS 1.0 / 1.1 only), a TLS 1.2 ServerHello in a 3.3 record: the
    reason names TLSv1.2 (mutant: TLS 1.1's pin taken as 3.3 -- 'invalid TLS record')."""
    reason = failure_reason(ssl_version, b"\x03\x03", b"\x03\x03")
    assert reason.startswith("server chose TLSv1.2, outside the configured sslversion"), reason


@pytest.mark.parametrize("ssl_version, version", [(1, b"\x03\x01"), (2, b"\x03\x02"), (3, b"\x03\x03"),
                                                  (4, b"\x03\x03"), (4, b"\x03\x01")])
def test_an_invalid_record_after_an_allowed_version_is_not_blamed_on_the_version(ssl_version, version):
    """A ServerHello choosing a version sslversion allows, then a record Mbed TLS refuses
    (-0x7200): the reason is the record, never 'server chose ..., outside the configured
    sslversion' (mutants: `>=` for `>`; sslversion 4 (all) given a pin)."""
    reason = failure_reason(ssl_version, version, version, junk_record(version))
    assert reason == "invalid TLS record received (mbedtls -0x7200)", reason


def test_a_pinned_version_answered_in_a_newer_record_is_the_record():
    """sslversion 1, the ServerHello says TLS 1.0 (as pinned) but sits in a 3.3 record:
    Mbed TLS refuses the record; the version the server chose is inside the pin, so it is
    not named as outside it (mutant: `>=`)."""
    reason = failure_reason(1, b"\x03\x03", b"\x03\x01")
    assert "outside the configured sslversion" not in reason, reason


# == wrapper.handshake_over_private's first use; the self-check's write_nogil answer =================
class _State:
    def __init__(self, step) -> None:
        setattr(self, wrapper.HANDSHAKE_STATE, step)


def test_handshake_over_is_right_on_its_very_first_call(monkeypatch):
    """The HANDSHAKE_OVER step is looked up once, at the first call -- which must answer
    like every later one (mutant: the first call answered False)."""
    from mbedtls.tls import HandshakeStep
    monkeypatch.setattr(wrapper, "_OVER", None)
    assert wrapper.handshake_over_private(_State(HandshakeStep.HANDSHAKE_OVER)) is True
    assert wrapper.handshake_over_private(_State(HandshakeStep.HANDSHAKE_OVER)) is True
    monkeypatch.setattr(wrapper, "_OVER", None)
    assert wrapper.handshake_over_private(_State(HandshakeStep.CLIENT_HELLO)) is False


def test_selfcheck_a_write_nogil_that_takes_nothing_is_a_layout_error():
    """write_nogil answering 0 (nothing taken, no error code) fails the self-check at once
    (mutant: `rc < 0` -- it looped on, taking the output of a write that never was)."""
    calls = []

    class Ssl:
        def write_nogil(self, payload, offset, size):
            calls.append((offset, size))
            if len(calls) > 1:
                raise AssertionError("write_nogil called again after answering 0")
            return 0
    with pytest.raises(LayoutError, match="write_nogil"):
        selfcheck._nogil_write_check(None, object(), object(), Ssl())
    assert calls == [(0, 16384)]


# == the state dir sweep (emulator/modem/modem.py) ===================================================
@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_sweep_out_of_descriptors_is_raised_not_warned(tmp_path, monkeypatch, caplog, code):
    """EMFILE / ENFILE in the start-up sweep propagate (the CLI's one-line 'too many open
    files' answer), with no warning first (mutants: warned and went on; one of the two left
    out)."""
    def out(directory):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(modem_module, "remove_stale_temp_files", out)
    with caplog.at_level(logging.WARNING):
        with pytest.raises(OSError) as info:
            modem_module._sweep_temp_files(tmp_path)
    assert info.value.errno == code
    assert not [r for r in caplog.records if "temp files" in r.getMessage()]


def test_sweep_other_errors_are_warned_per_directory(tmp_path, monkeypatch, caplog):
    """Any other OSError (an unreadable directory) is a warning and the sweep goes on to the
    next directory."""
    seen = []

    def denied(directory):
        seen.append(directory)
        raise PermissionError(errno.EACCES, "Permission denied")
    (tmp_path / modem_module.UFS_DIR).mkdir()
    monkeypatch.setattr(modem_module, "remove_stale_temp_files", denied)
    with caplog.at_level(logging.WARNING):
        modem_module._sweep_temp_files(tmp_path)
    assert seen == [tmp_path, tmp_path / modem_module.UFS_DIR]
    assert len([r for r in caplog.records if "cannot clear leftover temp files" in r.getMessage()]) == 2
