"""The host side of the tests: pyserial on the pty, exactly as host software."""
from __future__ import annotations

import re
import time

import serial

FINAL = re.compile(rb"(?:^|\r\n)(OK|ERROR|\+CME ERROR: [^\r\n]*|SEND OK|SEND FAIL|CONNECT|NO CARRIER)\r\n")


class Host:
    line_end = b"\r"                  # what at() ends a command line with (a subclass: CR LF)

    def __init__(self, path: str, baudrate: int = 115200) -> None:
        self.path = path
        self.ser = serial.Serial(path, baudrate, timeout=0.02)
        self.written = 0               # bytes written to the device in all
        self.pending = bytearray()     # bytes read but not yet consumed by an expectation
        self.transcript = bytearray()  # every byte ever received, for URCs that arrive anywhere
        self._consumed: set[int] = set()   # transcript offsets of URCs seen() already returned

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes | str) -> None:
        raw = data.encode("latin-1") if isinstance(data, str) else data
        self.ser.write(raw)
        self.written += len(raw)

    def _fill(self) -> None:
        # read() returns at the timeout unless `size` bytes came: ask for what is there
        chunk = self.ser.read(max(1, self.ser.in_waiting))
        if chunk:
            self.pending += chunk
            self.transcript += chunk

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

    def seen(self, pattern: bytes | re.Pattern, timeout: float = 10) -> bytes:
        """Wait for the first occurrence of `pattern` not returned by an earlier
        seen(), whether or not an at() call consumed it (URCs arrive between and
        inside answers, and in no guaranteed order across sockets)."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = next((m for m in regex.finditer(self.transcript) if m.start() not in self._consumed), None)
            if m:
                self._consumed.add(m.start())
                found = m.group(0)
                at = self.pending.find(found)
                if at >= 0:                       # not yet consumed: take it out of the way,
                    start = at - 2 if not found.startswith(b"\r\n") and self.pending[at - 2:at] == b"\r\n" else at
                    del self.pending[max(start, 0):at + len(found)]   # with its framing CR LF
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {regex.pattern!r}; transcript tail "
                                     f"{bytes(self.transcript[-300:])!r}")
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
        """Send a command line and return the answer (echo included) up to its final
        result; URCs that follow stay pending for the next read."""
        raw = line.encode("latin-1") if isinstance(line, str) else line
        self.write(raw + self.line_end)
        deadline = time.monotonic() + timeout
        while True:
            m = FINAL.search(self.pending)
            if m:
                out = bytes(self.pending[:m.end()])
                del self.pending[:m.end()]
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"no final result for {raw!r}; got {bytes(self.pending)!r}")
            self._fill()

    def upload(self, name: str, data: bytes, extra: str = "") -> bytes:
        """AT+QFUPL as a driver does it: wait for CONNECT, send the bytes, read the answer."""
        self.write(f'AT+QFUPL="{name}",{len(data)}{extra}\r')
        self.read_until(b"\r\nCONNECT\r\n")
        self.write(data)
        return self.read_until(b"\r\nOK\r\n")

    def send_data(self, client_id: int, data: bytes, fixed: bool = True) -> bytes:
        """AT+QSSLSEND: fixed length, or variable length ended by Ctrl+Z; returns the result line."""
        self.write(f"AT+QSSLSEND={client_id},{len(data)}\r" if fixed else f"AT+QSSLSEND={client_id}\r")
        if self.read_until(re.compile(rb"> |\r\nERROR\r\n")).endswith(b"ERROR\r\n"):
            return b"\r\nERROR\r\n"
        self.write(data if fixed else data + b"\x1a")
        return self.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"))

    def quiet_for(self, seconds: float) -> bytes:
        """Whatever arrives in the next `seconds` (to show that nothing does)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._fill()
        out = bytes(self.pending)
        self.pending.clear()
        return out
