"""Adversarial review of three performance commits (8002df8, 8f3da3b, 34389cf):

1. to_tls_settings' memo on the SSL context (emulator/sockets/context.py): an open whose
   inputs are the last open's reuses its TlsSettings -- every input change (the modem clock
   moved by AT+CCLK, a file replaced by AT+QFUPL or deleted, a cached session) must behave
   as freshly built settings would;
2. emulator/tools/stderr_log.py: the CLI's log lines through a non-blocking description of
   stderr of its own, drained by the event loop (a pipe nobody reads, a slow reader, a
   reader gone, stderr closed, huge lines, non-UTF-8 text, lines from another thread or a
   signal handler, SIGTERM while lines wait);
3. one thread in the CLI until a large send: which options and commands still start one
   (facts, not bugs: --demo and a real DNS lookup do).
"""
from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from emulator.commands.ssl_common import service
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from emulator.testing.peers.pki import utc
from emulator.tools import stderr_log
from emulator.tools.stderr_log import StderrLog
from tests.e2e.cli_support import ROOT, first_line, start, stop
from tests.pipes import F_SETPIPE_SZ, full_pipe, read_until_idle, threads

OK = b"\r\nOK\r\n"
DROPPED = re.compile(rb"modem-emulator: \d+ log lines dropped \(stderr was not read\)")


# =========================================================================================
# 1. The TlsSettings memo
# =========================================================================================

def ssl_open(host, cid: int, name: str = "www.iottest.work", ctx: int = 1) -> bytes:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{name}",443,0') == OK
    return host.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,-?\d+\r\n" % cid), 15)


def ssl_close(host, cid: int) -> None:
    assert host.at(f"AT+QSSLCLOSE={cid}") == OK


def memo_of(port, ctx: int = 1):
    memo = service(port.modem).contexts[ctx].memo
    return None if memo is None else memo[1]


@pytest.fixture
def ec2x_net(open_modem):
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return host, port


def test_memo_reused_settings_still_verify_at_the_current_modem_clock(emulator, ec2x_net, pki):
    """settings.clock is the modem clock's bound method: an open with the same inputs gets
    the same TlsSettings object back, and its certificate dates are still judged at the time
    AT+CCLK set last (valid in 2019, expired in 2024, valid again)."""
    host, port = ec2x_net
    cert = pki.issue("memo-2019", "www.iottest.work", not_before=utc(2019), not_after=utc(2020))
    with TlsServer(cert, mode="echo") as srv:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", srv.port)
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        for line in ('"seclevel",1,1', '"cacert",1,"UFS:ca.pem"', '"session_cache",1,0',
                     '"ignorelocaltime",1,0'):
            assert host.at(f"AT+QSSLCFG={line}") == OK
        assert host.at('AT+CCLK="19/06/01,12:00:00+00"') == OK
        assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
        first = memo_of(port)
        ssl_close(host, 0)
        assert host.at('AT+CCLK="24/06/01,12:00:00+00"') == OK
        assert ssl_open(host, 1) == b"\r\n+QSSLOPEN: 1,566\r\n"      # expired now
        assert memo_of(port) is first                                # (the memo was used)
        assert host.at('AT+CCLK="19/07/01,12:00:00+00"') == OK
        assert ssl_open(host, 2) == b"\r\n+QSSLOPEN: 2,0\r\n"
        assert memo_of(port) is first
        ssl_close(host, 2)


def test_memo_a_replaced_or_deleted_ca_file_is_used_at_the_next_open(emulator, ec2x_net, pki):
    """The same AT+QSSLOPEN after AT+QFUPL replaced the CA (same name, other bytes) and
    after AT+QFDEL: the wrong CA fails, the right one passes, no file is 552 -- also with
    session_cache on (a cached session is never resumed under another CA)."""
    host, port = ec2x_net
    with TlsServer(pki.server, mode="echo") as srv:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", srv.port)
        assert host.upload("RAM:ca.pem", pki.ca.cert_pem).endswith(OK)
        for line in ('"seclevel",1,1', '"cacert",1,"RAM:ca.pem"', '"session_cache",1,1'):
            assert host.at(f"AT+QSSLCFG={line}") == OK
        assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
        ssl_close(host, 0)
        assert ssl_open(host, 1) == b"\r\n+QSSLOPEN: 1,0\r\n"          # (same inputs: memo)
        ssl_close(host, 1)
        assert host.at('AT+QFDEL="RAM:ca.pem"') == OK
        assert host.upload("RAM:ca.pem", pki.wrong_ca.cert_pem).endswith(OK)
        assert ssl_open(host, 2) == b"\r\n+QSSLOPEN: 2,566\r\n"        # never resumed
        assert memo_of(port).ca_pem == pki.wrong_ca.cert_pem
        assert host.at('AT+QFDEL="RAM:ca.pem"') == OK
        assert ssl_open(host, 3) == b"\r\n+QSSLOPEN: 3,552\r\n"
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        assert host.upload("RAM:ca.pem", pki.wrong_ca.cert_pem).endswith(OK)
        assert host.at('AT+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK      # RAM: -> UFS:
        assert ssl_open(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"
        ssl_close(host, 4)


def test_memo_after_a_reboot_the_defaults_are_used(emulator, ec2x_net, pki):
    """AT+CFUN=1,1 resets the contexts: the same open with seclevel back at 0 connects to a
    server whose CA is not trusted (the memo must not give the seclevel 1 settings)."""
    host, port = ec2x_net
    with TlsServer(pki.wrong_server, mode="echo") as srv:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", srv.port)
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        for line in ('"seclevel",1,1', '"cacert",1,"UFS:ca.pem"', '"session_cache",1,0'):
            assert host.at(f"AT+QSSLCFG={line}") == OK
        assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,566\r\n"
        host.at("AT+CFUN=1,1", timeout=20)
        host.seen(b"+QIND: PB DONE", 20)        # (the boot's last URC: registered, so AT+QIACT can attach)
        deadline = time.monotonic() + 15
        while not host.at("ATE0").endswith(OK) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert memo_of(port).seclevel == 0
        ssl_close(host, 0)


def test_memo_two_contexts_alternating_and_sockets_sharing_one(emulator, ec2x_net, pki):
    """Two contexts on the same files, one trusting the right CA, one the wrong: opens
    alternating between them keep their own verdicts; three sockets open at once on one
    context share its settings object and all connect."""
    host, port = ec2x_net
    with TlsServer(pki.server, mode="echo") as srv:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", srv.port)
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        assert host.upload("UFS:wrong.pem", pki.wrong_ca.cert_pem).endswith(OK)
        for ctx, ca in ((1, "UFS:ca.pem"), (2, "UFS:wrong.pem")):
            for line in (f'"seclevel",{ctx},1', f'"cacert",{ctx},"{ca}"', f'"session_cache",{ctx},0'):
                assert host.at(f"AT+QSSLCFG={line}") == OK
        for _ in range(2):
            assert ssl_open(host, 0, ctx=1) == b"\r\n+QSSLOPEN: 0,0\r\n"
            ssl_close(host, 0)
            assert ssl_open(host, 1, ctx=2) == b"\r\n+QSSLOPEN: 1,566\r\n"
        for cid in range(3):             # (an earlier open's URC may come ahead of an OK)
            assert host.at(f'AT+QSSLOPEN=1,1,{cid},"www.iottest.work",443,0').endswith(OK)
        for cid in range(3):
            assert host.seen(b"\r\n+QSSLOPEN: %d,0\r\n" % cid, 15)
        settings = {id(sock.session.settings) for sock in service(port.modem).sockets.values()
                    if getattr(sock, "session", None) is not None}
        assert len(settings) == 1
        for cid in range(3):
            ssl_close(host, cid)


# =========================================================================================
# 2. StderrLog (unit level)
# =========================================================================================

def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


def bare(stream) -> StderrLog:
    log = StderrLog(stream)
    log.setFormatter(logging.Formatter("%(message)s"))
    return log


def test_stderr_huge_lines_and_non_utf8_arrive_whole_and_in_order(small_pipe):
    """Lines larger than the pipe (and than MAX_WRITE, 64 KiB) go out in pieces but whole,
    in order; lone surrogates / non-UTF-8 text become escapes, never an exception; the
    parent's description stays blocking."""
    r, stream = small_pipe
    log = bare(stream)
    assert log.mode == "nonblocking"
    lines = ["a" * 70_000, "small \udcff \u00e9", "b" * 5_000, "c" * 200_000, "last"]
    for line in lines:
        log.emit(record(line))
    assert os.get_blocking(stream.fileno())
    got = read_until_idle(r, tick=lambda: log.drain(0.01)).decode()
    assert got.split("\n")[:-1] == ["a" * 70_000, "small \\udcff \u00e9", "b" * 5_000, "c" * 200_000, "last"]


# Was a bug, fixed (2026-12-06): stderr_log.StderrLog._flush puts the 'N log lines dropped' notice at the deque's front, before the unwritten tail of a partly written line: the notice lands inside that line
def test_stderr_drop_notice_never_splits_a_partly_written_line(small_pipe):
    r, stream = small_pipe
    log = bare(stream)
    log.MAX_WAITING = 3
    big = "B" * 10_000                     # > the 4 KiB pipe: written in part, the tail waits
    log.emit(record(big))
    for i in range(6):                     # the deque fills: some are dropped and counted
        log.emit(record(f"line {i}"))
    got = read_until_idle(r, tick=lambda: log.drain(0.01))
    assert DROPPED.search(got)
    assert got.split(b"\n")[0] == big.encode()          # the big line whole, nothing inside it


# Was a bug, fixed (2026-12-06): stderr_log.StderrLog._flush is not reentrant: a line logged by a signal handler (same thread, RLock re-entered) right after os.write writes the line again and the outer popleft raises IndexError into the logging call
def test_stderr_a_line_from_a_signal_handler_during_a_write(small_pipe, monkeypatch):
    """The module says emit() may come from a signal handler: one that logs right after the
    handler's os.write returned (simulated: the write itself calls emit, as a Python signal
    handler would run between two bytecodes) must neither raise nor duplicate a line."""
    r, stream = small_pipe
    log = bare(stream)
    real_write = os.write
    fired = []

    class Os:
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            n = real_write(fd, data)
            if not fired:
                fired.append(1)
                log.emit(record("from a signal handler"))
            return n
    monkeypatch.setattr(stderr_log, "os", Os())
    error = None
    try:
        log.emit(record("first"))
    except Exception as exc:               # (what the logging call of the main code would see)
        error = exc
    monkeypatch.setattr(stderr_log, "os", os)
    got = read_until_idle(r, tick=lambda: log.drain(0.01))
    assert error is None
    assert got == b"first\nfrom a signal handler\n"


# Was a bug, fixed (2026-12-06): stderr_log.StderrLog._watch: a line that waits on a non-loop thread (the offload worker) asks self._loop, which is only set when the LOOP thread itself once found the pipe full: with a running loop that never did, the lines wait until the next line or exit
def test_stderr_lines_a_worker_left_waiting_leave_once_the_pipe_is_read(small_pipe):
    r, stream = small_pipe
    log = bare(stream)
    got = bytearray()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        log.emit(record("from the loop"))               # (taken at once: the pipe is empty)

        def worker() -> None:
            for i in range(200):
                log.emit(record(f"worker {i:03d} " + "w" * 40))     # ~10 KB: the pipe fills
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
        os.set_blocking(r, False)
        deadline = loop.time() + 2
        while got.count(b"\n") < 201 and loop.time() < deadline:
            try:
                got.extend(os.read(r, 1 << 16))
            except BlockingIOError:
                await asyncio.sleep(0.01)               # (the loop runs: its writer may fire)
    asyncio.run(main())
    assert got.count(b"\n") == 201
    assert got.endswith(b"worker 199 " + b"w" * 40 + b"\n")


def test_stderr_a_reader_gone_and_dev_null_cost_nothing(tmp_path):
    r, w = os.pipe()
    os.close(r)
    with os.fdopen(w, "w") as stream:
        log = bare(stream)
        for i in range(50):
            log.emit(record(f"line {i}"))              # EPIPE (SIGPIPE ignored): dropped
        log.drain(0.5)
        assert not log._waiting
    with open(os.devnull, "w") as stream:
        log = bare(stream)
        assert log.mode == "nonblocking"              # (a character device)
        before = threading.active_count()
        for i in range(50):
            log.emit(record(f"line {i}"))
        assert threading.active_count() == before and not log._waiting


def test_stderr_a_pty_gets_its_own_non_blocking_description():
    master, slave = os.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as stream:
            log = bare(stream)
            assert log.mode == "nonblocking"
            log.emit(record("on a tty"))
            assert os.get_blocking(slave)             # the parent's description: unchanged
        os.set_blocking(master, False)
        time.sleep(0.1)
        assert os.read(master, 100).replace(b"\r", b"") == b"on a tty\n"
    finally:
        os.close(master)
        os.close(slave)
        if log._fd is not None:
            os.close(log._fd)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
# Was a bug, fixed (2026-12-06): stderr_log._own_description: stderr closed (2>&-, sys.stderr None) falls to 'thread' mode; the writer thread dies on None.write (AttributeError is not caught in _write_lines), the queue is never joined and every exit waits drain's full 1 s
def test_stderr_none_starts_no_thread_and_leaves_nothing_waiting():
    before = threading.active_count()
    log = bare(None)
    log.emit(record("nowhere"))
    log.emit(record("nowhere either"))
    time.sleep(0.1)
    assert threading.active_count() == before
    assert log._lines is None or log._lines.unfinished_tasks == 0


# =========================================================================================
# 2. StderrLog through the CLI
# =========================================================================================

def cli(tmp_path, name: str, *extra: str, **kwargs) -> subprocess.Popen:
    return start("--offline", "--log-level", "DEBUG", "--state-dir", str(tmp_path / name), *extra, **kwargs)


def test_cli_stderr_pipe_nobody_reads_keeps_the_modem_answering_and_exits_0(tmp_path):
    """stderr a 4 KiB pipe nobody reads, a log line for every open: the modem answers
    every command on one thread, the parent's description is still blocking; a reader that
    comes later gets every line, whole and in order (the loop writes what waited); SIGTERM
    ends it with 0."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    proc = cli(tmp_path, "unread", stderr=w)
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0;+QIACT=1").endswith(OK)
            for i in range(80):                  # a WARNING line each (a name no route covers)
                assert host.at(f'AT+QSSLOPEN=1,1,0,"nowhere{i:02d}.example",443,0') == OK
                assert host.seen(re.compile(rb"\+QSSLOPEN: 0,[1-9]\d*\r\n"), 10)
            assert threads(proc.pid) == 1
            assert os.get_blocking(w)
            got = read_until_idle(r, 0.5)          # a late reader: the loop writes the rest
        finally:
            host.close()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(w)
    got += read_until_idle(r)
    os.close(r)
    assert len(got) > 4096
    lines = got.split(b"\n")
    assert lines[-1] == b""
    stamp = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: |modem-emulator: |  )")
    assert all(stamp.match(line) for line in lines[:-1]), [x for x in lines if not stamp.match(x)][:3]
    names = re.findall(rb"SSL open 0 to nowhere(\d\d)\.example", got)
    assert names == [b"%02d" % i for i in range(80)]


def test_cli_stderr_pipe_whose_reader_closed_and_stderr_closed_exit_0(tmp_path):
    r, w = os.pipe()
    os.close(r)
    proc = cli(tmp_path, "gone", stderr=w)
    os.close(w)
    try:
        host = Host(first_line(proc))
        assert host.at("ATI").endswith(OK)
        host.close()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    shell = (f"exec {sys.executable} -m emulator --offline --log-level DEBUG "
             f"--state-dir {tmp_path / 'closed'} 2>&-")
    proc = subprocess.Popen(["sh", "-c", shell], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        host = Host(first_line(proc))
        assert host.at("ATI").endswith(OK)
        host.close()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_stderr_a_socket_gets_the_log_thread_and_every_line(tmp_path):
    """Documented: a socket stderr gets a writer thread (/proc/self/fd cannot reopen it)."""
    a, b = socket.socketpair()
    proc = cli(tmp_path, "sock", stderr=a.fileno())
    a.close()
    try:
        host = Host(first_line(proc))
        assert host.at("ATI").endswith(OK)
        assert threads(proc.pid) == 2
        host.close()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    b.settimeout(5)
    got = b""
    while chunk := b.recv(1 << 16):
        got += chunk
    b.close()
    assert b"connect:" in got and b"host closed" in got


def test_cli_fd_count_does_not_grow_with_count(tmp_path):
    """--count 3: the own stderr description is one descriptor for the process, not one
    per modem (fd count of --count 3 minus --count 1 is what two more modems need, the
    same with stderr a pipe and a regular file)."""
    counts = {}
    for kind in ("pipe", "file"):
        for n in (1, 3):
            err = open(tmp_path / f"{kind}{n}.err", "w") if kind == "file" else subprocess.DEVNULL
            proc = start("--offline", "--count", str(n), "--state-dir", str(tmp_path / f"{kind}{n}"),
                         "--link", str(tmp_path / f"{kind}{n}-{{n}}"), stderr=err)
            try:
                for _ in range(n):
                    first_line(proc)
                time.sleep(0.2)
                counts[kind, n] = len(os.listdir(f"/proc/{proc.pid}/fd"))
                assert stop(proc) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                if kind == "file":
                    err.close()
    assert counts["pipe", 3] - counts["pipe", 1] == counts["file", 3] - counts["file", 1]
    assert counts["pipe", 1] == counts["file", 1] + 1    # (DEVNULL: the one own description)


# =========================================================================================
# 3. Threads in the CLI (facts)
# =========================================================================================

@pytest.fixture
def tls_server():
    with TlsServer(mode="sink") as srv:
        yield srv


def run_cli(tmp_path, name: str, extra: list[str], action, server) -> tuple[int, int]:
    """(threads after start-up, threads after action(host)) of a CLI at INFO to a file."""
    with open(tmp_path / f"{name}.err", "w") as err:
        proc = start("--log-level", "INFO", "--state-dir", str(tmp_path / name),
                     "--route", f"srv.example:443=127.0.0.1:{server.port}", *extra, stderr=err)
        try:
            host = Host(first_line(proc))
            try:
                before = threads(proc.pid)
                assert host.at("ATE0;+QIACT=1").endswith(OK)
                action(host)
                after = threads(proc.pid)
            finally:
                host.close()
            assert stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    return before, after


def tls_open(name: str, port: int = 443):
    def action(host) -> None:
        assert host.at(f'AT+QSSLOPEN=1,1,0,"{name}",{port},0') == OK
        assert host.seen(b"\r\n+QSSLOPEN: 0,0\r\n", 15)
        assert host.send_data(0, b"x" * 1000) == b"\r\nSEND OK\r\n"
        ssl_close(host, 0)
    return action


def test_threads_trace_keylog_control_and_an_ip_literal_stay_at_one(tmp_path, tls_server):
    ctl = tmp_path / "ctl"
    for name, extra, port in (("trace", ["--offline", "--trace", str(tmp_path / "t.jsonl")], 443),
                              ("keylog", ["--offline", "--keylog", str(tmp_path / "k.log")], 443),
                              ("control", ["--offline", "--control", str(ctl)], 443),
                              ("literal", [], tls_server.port)):
        host_name = "127.0.0.1" if name == "literal" else "srv.example"

        def action(host, name=name, host_name=host_name, port=port) -> None:
            tls_open(host_name, port)(host)
            if name == "control":
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(ctl))
                    s.sendall(b'{"op": "state", "modem": 0}\n')
                    assert b'"ok": true' in s.recv(65536)
        assert run_cli(tmp_path, name, extra, action, tls_server) == (1, 1), name


def test_threads_demo_starts_one_at_start_up(tmp_path, tls_server):
    """Fact: --demo runs make_demo_pki through asyncio.to_thread (emulator/tools/demo_peer.py):
    the default executor's thread stays for the whole run."""
    assert run_cli(tmp_path, "demo", ["--offline", "--demo"], lambda host: None, tls_server) == (2, 2)


def test_threads_a_real_dns_lookup_starts_the_executor(tmp_path, tls_server):
    """Fact: without --offline, a name no route covers is resolved with loop.getaddrinfo
    (emulator/io/network.py, commands/netutil.py): asyncio's default executor, a thread that
    stays; a routed name or an IP literal (previous test) starts none."""
    def lookup(host) -> None:
        assert host.at('AT+QIDNSGIP=1,"localhost"') == OK
        host.seen(b'+QIURC: "dnsgip"', 10)
    assert run_cli(tmp_path, "dns", [], lookup, tls_server) == (1, 2)
    assert run_cli(tmp_path, "named", [], tls_open("localhost", tls_server.port), tls_server) == (1, 2)


def test_threads_selfcheck_runs_on_the_importing_thread():
    code = ("import os, threading\n"
            "seen = []\n"
            "real = threading.Thread.start\n"
            "threading.Thread.start = lambda self: (seen.append(self.name), real(self))[1]\n"
            "import tls_engine.native as n\n"
            "print(n.available(), len(os.listdir('/proc/self/task')), seen)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "1", "[]"], out.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_stop_with_lines_waiting_in_a_full_pipe_exits_0(tmp_path, sig):
    """Lines waiting for a pipe nobody reads at a stop signal: drain() gives up after 1 s;
    the process ends with 0, never hangs (stop() waits 10 s)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    proc = cli(tmp_path, f"full{int(sig)}", stderr=w)
    try:
        host = Host(first_line(proc))
        for _ in range(60):
            assert host.at("AT+QSSLCFG=\"sni\",1,1;+CSQ").endswith(OK)
        host.close()
        assert stop(proc, sig) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(w)
        os.close(r)


# Was a bug, fixed (2026-12-06): cli.run prints its start-up hints with _say(sys.stderr) -- a blocking write on the parent's description, bypassing StderrLog: a stderr pipe nobody reads blocks the event loop in write(2) forever; the modem never answers and SIGTERM cannot stop it
def test_cli_stderr_pipe_full_from_the_start_modem_answers_and_stops(tmp_path):
    r, w = full_pipe()
    proc = cli(tmp_path, "prefull", stderr=w)
    try:
        host = Host(first_line(proc))
        try:
            answer = host.at("ATI", timeout=3)
        except AssertionError:
            answer = b""
        host.close()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(3)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(w)
        os.close(r)
    assert answer.endswith(OK)
    assert code == 0


def test_stderr_a_fifo_gets_its_own_non_blocking_description(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    r = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with open(path, "w") as stream:
            log = bare(stream)
            assert log.mode == "nonblocking"
            log.emit(record("through a fifo"))
            assert os.get_blocking(stream.fileno())
            assert read_until_idle(r) == b"through a fifo\n"
            os.close(log._fd)
    finally:
        os.close(r)


# Was a bug, fixed (2026-12-06): stderr_log._own_description reopens /proc/self/fd/2 for every character device: stderr a pty MASTER reopens /dev/ptmx -- a brand-new pty pair; every line goes there and the slave's reader never gets one
def test_stderr_a_pty_master_lines_reach_the_slave():
    master, slave = os.openpty()
    log = None
    try:
        with os.fdopen(master, "w", closefd=False) as stream:
            log = bare(stream)
            log.emit(record("to the slave"))
            log.drain(1.0)
        os.set_blocking(slave, False)
        time.sleep(0.1)
        try:
            got = os.read(slave, 100)
        except BlockingIOError:
            got = b""
        assert got.replace(b"\r", b"") == b"to the slave\n"
    finally:
        os.close(master)
        os.close(slave)
        if log is not None and log._fd is not None:
            os.close(log._fd)


def test_threads_replay_runs_its_emulator_on_a_thread(tmp_path, tls_server):
    """Fact: `modem-emulator replay FILE` starts one thread, the BackgroundEmulator's loop
    ("emulator", emulator/io/app.py); the replay subcommand does not install StderrLog."""
    trace = tmp_path / "t.jsonl"
    run_cli(tmp_path, "rec", ["--offline", "--trace", str(trace)], tls_open("srv.example"), tls_server)
    code = ("import threading\n"
            "seen = []\n"
            "real = threading.Thread.start\n"
            "threading.Thread.start = lambda self: (seen.append(self.name), real(self))[1]\n"
            "from emulator.tools.cli import main\n"
            f"code = main(['replay', {str(trace)!r}])\n"
            "print('RESULT', code, seen)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "RESULT 0 ['emulator']" in out.stdout, out.stdout + out.stderr
