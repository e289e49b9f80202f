"""The `openssl` command line as a TLS/DTLS peer, a lossy UDP relay, and free ports.

`openssl s_server` covers what Python's ssl cannot: PSK suites, DTLS, server-initiated
renegotiation ("R" on its stdin). Its output is captured continuously so tests can wait for
lines such as "CIPHER is", "Reused session-id" or the data the client sent.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass

import pytest


def free_port(kind: str = "tcp") -> int:
    """A port that was free on 127.0.0.1 a moment ago (kind: "tcp" or "udp")."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def openssl_binary() -> str:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl command is not installed (make openssl)")
    return binary


class OpenSslProcess:
    """An `openssl` subprocess whose stdout/stderr are collected by threads as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._output = {"stdout": bytearray(), "stderr": bytearray()}
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._collect, args=(name, pipe), daemon=True)
                         for name, pipe in (("stdout", self.proc.stdout),
                                            ("stderr", self.proc.stderr))]
        for reader in self._readers:
            reader.start()

    def _collect(self, name: str, pipe) -> None:
        # os.read, not readline: received data need not end with a newline.
        while chunk := os.read(pipe.fileno(), 65536):
            with self._cond:
                self._output[name] += chunk
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self) -> bytes:
        with self._cond:
            return bytes(self._output["stdout"])

    @property
    def stderr(self) -> bytes:
        with self._cond:
            return bytes(self._output["stderr"])

    def mark(self, stream: str = "stdout") -> int:
        """The current length of a stream, to wait for output produced after this point."""
        with self._cond:
            return len(self._output[stream])

    def wait_for_output(self, pattern: bytes | str, timeout: float = 5.0,
                        stream: str = "stdout", since: int = 0) -> re.Match:
        """Wait until the regex `pattern` appears in the stream at or after offset `since`."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = regex.search(self._output[stream], since)
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None
                                      and not any(r.is_alive() for r in self._readers)):
                    raise TimeoutError(
                        f"{pattern!r} not in openssl {stream} within {timeout}s.\n"
                        f"argv: {self.argv}\nstdout: {bytes(self._output['stdout'])[-2000:]!r}"
                        f"\nstderr: {bytes(self._output['stderr'])[-2000:]!r}")
                self._cond.wait(min(remaining, 0.5))

    def write(self, data: bytes | str) -> None:
        """Write to openssl's stdin (s_server/s_client send it; "R\\n" renegotiates)."""
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def stop(self, timeout: float = 3.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                pipe.close()
            except OSError:
                pass   # stdin of a dead process: its buffer cannot be flushed
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class OpenSslServer(OpenSslProcess):
    """`openssl s_server -accept 127.0.0.1:<free port> <args>`, ready once it prints ACCEPT.

    UDP (DTLS) is assumed when args hold -dtls / -dtls1 / -dtls1_2, unless udp= says otherwise.
    s_server stops at EOF on stdin, so stdin stays an open pipe until stop().
    """

    def __init__(self, args: list[str], *, udp: bool | None = None,
                 ready_timeout: float = 10.0, attempts: int = 3) -> None:
        binary = openssl_binary()
        if udp is None:
            udp = any(arg.startswith("-dtls") for arg in args)
        self.udp = udp
        for attempt in range(attempts):
            self.port = free_port("udp" if udp else "tcp")
            super().__init__([binary, "s_server", "-accept", f"127.0.0.1:{self.port}", *args])
            try:
                self.wait_for_output(rb"ACCEPT", ready_timeout)
                return
            except TimeoutError:
                self.stop()
                # Someone took the port between free_port() and the bind: try another.
                in_use = b"in use" in self.stderr or b"bind" in self.stderr.lower()
                if attempt == attempts - 1 or not in_use:
                    raise

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


class OpenSslClient(OpenSslProcess):
    """`openssl s_client -connect host:port <args>`; write() sends, output is captured."""

    def __init__(self, address: tuple[str, int], args: list[str]) -> None:
        host, port = address
        super().__init__([openssl_binary(), "s_client", "-connect", f"{host}:{port}", *args])


@dataclass
class Datagram:
    direction: str      # "c2s" (client to server) or "s2c"
    index: int          # 0-based count within its direction
    data: bytes
    dropped: bool


_DIRECTIONS = {"c2s": "c2s", "client->server": "c2s", "to_server": "c2s",
               "s2c": "s2c", "server->client": "s2c", "to_client": "s2c"}


class UdpDropRelay:
    """A UDP relay on 127.0.0.1 between one client and `target`, dropping chosen datagrams.

    drop: (direction, index) pairs, e.g. [("s2c", 0)] drops the server's first datagram, so
    the DTLS client has to retransmit. Every datagram is logged (passed and dropped).
    """

    def __init__(self, target: tuple[str, int], drop=()) -> None:
        self.target = target
        self._drop = {(_DIRECTIONS[direction], index) for direction, index in drop}
        self.log: list[Datagram] = []
        self._counts = {"c2s": 0, "s2c": 0}
        self._cond = threading.Condition()
        self._client: tuple[str, int] | None = None
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self.address = self._front.getsockname()
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._back.connect(target)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-relay")
        self._thread.start()

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._front, self._back, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            if self._front in readable:
                data, self._client = self._front.recvfrom(65536)
                if not self._record("c2s", data):
                    self._back.send(data)
            if self._back in readable:
                try:
                    data = self._back.recv(65536)
                except ConnectionRefusedError:
                    continue   # ICMP: the server is not (or no longer) listening
                if self._client is not None and not self._record("s2c", data):
                    self._front.sendto(data, self._client)

    def _record(self, direction: str, data: bytes) -> bool:
        """Log a datagram; True if it is to be dropped."""
        with self._cond:
            index = self._counts[direction]
            self._counts[direction] += 1
            dropped = (direction, index) in self._drop
            self.log.append(Datagram(direction, index, data, dropped))
            self._cond.notify_all()
        return dropped

    def passed(self, direction: str | None = None) -> list[Datagram]:
        with self._cond:
            return [d for d in self.log if not d.dropped
                    and (direction is None or d.direction == _DIRECTIONS[direction])]

    def dropped(self) -> list[Datagram]:
        with self._cond:
            return [d for d in self.log if d.dropped]

    def wait_for(self, predicate, timeout: float = 5.0):
        with self._cond:
            value = self._cond.wait_for(predicate, timeout)
        if not value:
            raise TimeoutError(f"UdpDropRelay: condition not met; log: {self.log}")
        return value

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(5)
        for sock in (self._front, self._back, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> UdpDropRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
