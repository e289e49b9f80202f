"""The CLI runs its modems on one thread -- logging at INFO to a pipe or a file, opening and
closing TLS sockets -- until a large send starts the offload worker (docs/behaviour.md,
README "Benchmarks"): a process that has ever had a second thread pays glibc's arena lock
on every calloc, ~7,800 of them in each Mbed TLS handshake (~8% of an AT+QSSLOPEN)."""
from __future__ import annotations

import os
import subprocess
import threading

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.cli_support import first_line, start, stop


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def open_send_close(host: Host, data: bytes) -> None:
    assert host.at('AT+QSSLOPEN=1,1,0,"srv.example",443,0') == b"\r\nOK\r\n"
    assert host.seen(b"\r\n+QSSLOPEN: 0,0\r\n", 15)
    assert host.send_data(0, data) == b"\r\nSEND OK\r\n"
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("stderr", ["pipe", "file"])
def test_info_logging_and_tls_opens_keep_one_thread(tmp_path, stderr):
    server = TlsServer(mode="sink")
    err = open(tmp_path / "err.log", "w") if stderr == "file" else subprocess.PIPE
    proc = start("--offline", "--log-level", "INFO", "--state-dir", str(tmp_path / "s"),
                 "--route", f"srv.example:443=127.0.0.1:{server.port}", stderr=err)
    collected: list[str] = []
    reader = None
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0;+QIACT=1") == b"ATE0;+QIACT=1\r\r\nOK\r\n"
            for _ in range(3):
                open_send_close(host, b"x" * 100)
            assert threads(proc.pid) == 1
        finally:
            host.close()
        if stderr == "pipe":
            reader = threading.Thread(target=lambda: collected.append(proc.stderr.read()))
            reader.start()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        server.close()
        if stderr == "file":
            err.close()
    if reader is not None:
        reader.join(10)
    log = collected[0] if stderr == "pipe" else (tmp_path / "err.log").read_text()
    assert log.count("SSL socket 0 connected to srv.example:443") == 3      # the INFO lines came out


def test_a_large_send_starts_the_offload_worker(tmp_path):
    """The one thread the emulator starts on its own: the seal worker, at the first send of
    4 KiB or more (transparent mode here; tls_engine/sealing.py); MODEM_EMULATOR_OFFLOAD=0
    keeps it away.  Counted once the server has every byte (they went through the sealing)."""
    server = TlsServer(mode="sink")
    counts = {}
    try:
        for offload in ("1", "0"):
            proc = start("--offline", "--log-level", "WARNING", "--state-dir", str(tmp_path / f"s{offload}"),
                         "--route", f"srv.example:443=127.0.0.1:{server.port}",
                         env={**os.environ, "MODEM_EMULATOR_OFFLOAD": offload})
            try:
                host = Host(first_line(proc))
                try:
                    assert host.at("ATE0;+QIACT=1") == b"ATE0;+QIACT=1\r\r\nOK\r\n"
                    open_send_close(host, b"y" * 1460)
                    server.wait_received(1460)
                    before = threads(proc.pid)
                    host.write('AT+QSSLOPEN=1,1,0,"srv.example",443,2\r')
                    host.read_until(b"CONNECT\r\n")
                    data = os.urandom(256 * 1024)
                    host.write(data)                               # transparent mode: large reads
                    assert server.wait_received(len(data), timeout=30) == data
                    counts[offload] = (before, threads(proc.pid))
                finally:
                    host.close()
                assert stop(proc) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        server.close()
    assert counts["1"] == (1, 2)
    assert counts["0"] == (1, 1)
