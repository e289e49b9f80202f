"""The host side of the tests: pyserial on the pty, exactly as host software."""
from __future__ import annotations

import re
import time

import serial

FINAL = re.compile(rb"(?:^|\r\n)(OK|ERROR|\+CME ERROR: [^\r\n]*|SEND OK|SEND FAIL|CONNECT|NO CARRIER)\r\n$")


class Host:
    def __init__(self, path: str, baudrate: int = 115200) -> None:
        self.path = path
        self.ser = serial.Serial(path, baudrate, timeout=0.02)
        self.pending = bytearray()     # bytes read but not yet consumed by an expectation

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes | str) -> None:
        self.ser.write(data.encode("latin-1") if isinstance(data, str) else data)

    def _fill(self) -> None:
        chunk = self.ser.read(65536)
        if chunk:
            self.pending += chunk

    def read_until(self, pattern: bytes | re.Pattern, timeout: float = 10) -> bytes:
        """Consume and return everything up to and including `pattern`."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.pending)
            if m:
                out = bytes(self.pending[:m.end()])
                del self.pending[:m.end()]
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {regex.pattern!r}; got {bytes(self.pending)!r}")
            self._fill()

    def read_exactly(self, n: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.pending) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {n} bytes; got {len(self.pending)}")
            self._fill()
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def at(self, line: str | bytes, timeout: float = 10) -> bytes:
        """Send a command line and return the whole answer (echo included) up to its final result."""
        raw = line.encode("latin-1") if isinstance(line, str) else line
        self.write(raw + b"\r")
        deadline = time.monotonic() + timeout
        while True:
            if FINAL.search(self.pending):
                out = bytes(self.pending)
                self.pending.clear()
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"no final result for {raw!r}; got {bytes(self.pending)!r}")
            self._fill()

    def quiet_for(self, seconds: float) -> bytes:
        """Whatever arrives in the next `seconds` (to show that nothing does)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._fill()
        out = bytes(self.pending)
        self.pending.clear()
        return out
