"""The `openssl` command line as a TLS/DTLS peer: s_server and s_client in a subprocess.

`openssl s_server` covers what Python's ssl cannot: PSK suites, DTLS, server-initiated
renegotiation ("r" on its stdin). Its output is captured continuously so tests wait for
lines such as "CIPHER is", "Reused session-id" or the data the client sent; readiness is
its "ACCEPT <addr>:<port>" line, never a sleep. The server binds port 0 itself and reports
the port it got there, so no other process can take the port between a probe and the bind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time


def openssl_binary() -> str:
    """The openssl command; under pytest a missing one skips the test (make openssl)."""
    binary = shutil.which("openssl")
    if binary is None:
        import pytest   # a test-only dependency: imported where a test is running
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
    """`openssl s_server -accept 127.0.0.1:0 <args>`, ready once it prints ACCEPT.

    UDP (DTLS) is assumed when args hold -dtls / -dtls1 / -dtls1_2 (s_server decides that by
    itself). s_server stops at EOF on stdin, so stdin stays an open pipe until stop().
    -quiet is refused: it hides the ACCEPT line that tells the port.
    """

    def __init__(self, args: list[str], *, ready_timeout: float = 10.0) -> None:
        if "-quiet" in args or "-accept" in args or "-port" in args:
            raise ValueError("OpenSslServer chooses -accept itself and needs the ACCEPT line "
                             "(no -quiet, -accept or -port)")
        self.udp = any(arg.startswith("-dtls") for arg in args)
        super().__init__([openssl_binary(), "s_server", "-accept", "127.0.0.1:0", *args])
        try:
            accept = self.wait_for_output(rb"ACCEPT (\S+):(\d+)\r?\n", ready_timeout)
        except TimeoutError:
            self.stop()
            raise
        self.host, self.port = accept.group(1).decode(), int(accept.group(2))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


class OpenSslClient(OpenSslProcess):
    """`openssl s_client -connect host:port <args>`; write() sends, output is captured."""

    def __init__(self, address: tuple[str, int], args: list[str]) -> None:
        host, port = address
        super().__init__([openssl_binary(), "s_client", "-connect", f"{host}:{port}", *args])


