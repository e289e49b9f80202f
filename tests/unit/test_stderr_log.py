"""emulator/tools/stderr_log.py: the CLI's log lines reach stderr without blocking the event
loop and without a thread where stderr is a pipe, a tty/pty or a regular file (a thread
makes every Mbed TLS handshake of the process slower: glibc's calloc then locks); a pipe
nobody reads keeps at most MAX_WAITING lines and counts the ones it drops."""
from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time

from emulator.tools.stderr_log import NOTICE, StderrLog
from tests.pipes import read_until_idle

DROPPED = re.compile(NOTICE.replace("{}", r"(\d+)").replace("(stderr", r"\(stderr").replace("read)", r"read\)"))


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)


class Pipe:
    def __init__(self) -> None:
        self.r, w = os.pipe()
        self.stream = os.fdopen(w, "w")

    def close(self) -> None:
        self.stream.close()
        os.close(self.r)


def test_a_pipe_gets_its_own_non_blocking_description_and_no_thread():
    pipe = Pipe()
    try:
        before = threading.active_count()
        log = StderrLog(pipe.stream)
        assert log.mode == "nonblocking"
        assert os.get_blocking(pipe.stream.fileno())          # the parent's description is untouched
        for i in range(3):
            log.emit(record(f"line {i}"))
        assert threading.active_count() == before
        assert read_until_idle(pipe.r) == b"line 0\nline 1\nline 2\n"
    finally:
        pipe.close()


def test_an_unread_pipe_never_blocks_and_every_line_is_written_or_counted():
    pipe = Pipe()
    try:
        log = StderrLog(pipe.stream)
        total = 15_000
        started = time.monotonic()
        for i in range(total):
            log.emit(record(f"line {i:05d} " + "x" * 60))     # ~1 MB: far more than the pipe holds
        assert time.monotonic() - started < 30                 # (it returned: nothing blocked)
        reader = threading.Thread(target=lambda: out.append(read_until_idle(pipe.r, 1.0)))
        out: list[bytes] = []
        reader.start()
        log.drain(10.0)
        reader.join(15)
        text = out[0].decode()
    finally:
        pipe.close()
    lines = [line for line in text.splitlines() if line.startswith("line ")]
    dropped = sum(int(n) for n in DROPPED.findall(text))
    assert dropped > 0
    assert len(lines) + dropped == total
    assert len(lines) >= StderrLog.MAX_WAITING
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == sorted(numbers)                          # in order, none twice
    assert numbers[0] == 0                                     # the oldest wait, the newest go


def test_on_a_loop_the_lines_that_waited_leave_when_the_pipe_is_read():
    pipe = Pipe()
    try:
        log = StderrLog(pipe.stream)
        got = bytearray()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for i in range(2_000):                             # ~150 KB: the pipe fills
                log.emit(record(f"line {i:04d} " + "y" * 60))
            os.set_blocking(pipe.r, False)

            def readable() -> None:
                try:
                    got.extend(os.read(pipe.r, 1 << 16))
                except BlockingIOError:
                    pass
            loop.add_reader(pipe.r, readable)
            deadline = loop.time() + 10
            while got.count(b"\n") < 2_000 and loop.time() < deadline:
                await asyncio.sleep(0.01)                      # (no drain(): the loop writes them)
            loop.remove_reader(pipe.r)
        asyncio.run(main())
    finally:
        pipe.close()
    lines = got.decode().splitlines()
    assert len(lines) == 2_000
    assert lines[0].startswith("line 0000") and lines[-1].startswith("line 1999")


def test_a_line_logged_on_another_thread_is_written_by_the_loop():
    pipe = Pipe()
    try:
        log = StderrLog(pipe.stream)
        got = bytearray()

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for i in range(1_500):                             # the pipe is full, the loop watches
                log.emit(record(f"loop {i:04d} " + "z" * 60))
            worker = threading.Thread(target=lambda: log.emit(record("from a worker")))
            worker.start()
            worker.join()
            os.set_blocking(pipe.r, False)
            deadline = loop.time() + 10
            while b"from a worker\n" not in got and loop.time() < deadline:
                try:
                    got.extend(os.read(pipe.r, 1 << 16))
                except BlockingIOError:
                    await asyncio.sleep(0.01)
        asyncio.run(main())
    finally:
        pipe.close()
    assert got.endswith(b"from a worker\n")
    assert got.count(b"\n") == 1_501


def test_a_regular_file_takes_its_lines_at_once(tmp_path):
    path = tmp_path / "err.log"
    with open(path, "w") as stream:
        log = StderrLog(stream)
        assert log.mode == "direct"
        log.emit(record("one"))
        assert path.read_text() == "one\n"                     # (no flush, no drain needed)


def test_a_socket_gets_a_thread_started_by_the_first_line():
    a, b = socket.socketpair()
    try:
        stream = a.makefile("w")
        log = StderrLog(stream)
        assert log.mode == "thread"
        before = threading.active_count()
        log.emit(record("over a socket"))
        assert threading.active_count() == before + 1
        log.drain(5.0)
        b.settimeout(5)
        assert b.recv(100) == b"over a socket\n"
    finally:
        a.close()
        b.close()


def test_a_reader_that_went_away_costs_nothing():
    pipe = Pipe()
    os.close(pipe.r)
    try:
        log = StderrLog(pipe.stream)
        for i in range(100):
            log.emit(record(f"line {i}"))                      # EPIPE: dropped, no exception
        log.drain(0.5)
    finally:
        pipe.stream.close()
