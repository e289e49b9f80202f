"""The "+++" escape of online data mode, with its guard times (sans-IO).

The EC2x note ("Exit transparent access mode"): no character for at least the guard
time before "+++", the three characters within the guard time, no character for
the guard time after them.  Only then is it an escape; anything else is data and
goes into the connection unchanged.  The guard time is S12 in fiftieths of a
second (default 50 = 1 s).

A "+" that may begin an escape is held back (it cannot be sent before the module
knows it is data): when a byte breaks the pattern, or the "+"s do not complete in
time, the held bytes are released as data, in order, before what follows.

    detector = EscapeDetector(guard=1.0, now=t0)
    data = detector.feed(b"...", now)      # bytes to send into the connection now
    detector.deadline()                    # when to call expire(now) (None: no timer)
    detector.expire(now) -> (data, escaped)
"""
from __future__ import annotations

PLUS = 0x2B


class EscapeDetector:
    def __init__(self, guard: float, now: float, char: int = PLUS) -> None:
        self.guard = guard
        self.char = char
        self.last_rx = now          # the silence before a "+" counts from here
        self.held = 0               # escape characters held back (0-3)
        self.first_at = 0.0         # when the first held one came

    def feed(self, data: bytes, now: float) -> bytes:
        if not data:
            return b""
        out = bytearray()
        if 0 < self.held < 3 and not self._within(now):
            # One or two "+" whose guard time ran out before these bytes were read (the loop
            # was busy past expire()'s deadline): data then, and these bytes are read as
            # after them -- after a silence they may begin an escape of their own.
            out += bytes([self.char]) * self.held
            self.held = 0
        if not self.held and (data[0] != self.char or now - self.last_rx < self.guard):
            self.last_rx = now                          # the common case: plain data, no copy
            return bytes(out) + data if out else data
        start = 0
        if self.held == 3:                              # "+++" then more: all data
            out += bytes([self.char]) * 3
            self.held = 0
        if self.held:
            # Continue a started "+..": more "+" within the guard time, nothing else.
            n = _leading(data, self.char, 3 - self.held)
            # (strictly within: a "+" at first_at + guard is late -- the moment expire()
            # makes the held ones data, whichever of the two the loop runs first)
            if n and self._within(now):
                self.held += n
                start = n
                if start < len(data):                   # something followed at once: data
                    out += bytes([self.char]) * self.held
                    self.held = 0
            else:
                out += bytes([self.char]) * self.held
                self.held = 0
        elif now - self.last_rx >= self.guard:
            # Silence before: a chunk that is only "+", up to three, may be an escape.
            n = _leading(data, self.char, 3)
            if n and n == len(data):
                self.held, self.first_at, start = n, now, n
        out += data[start:]
        self.last_rx = now
        return bytes(out)

    def _within(self, now: float) -> bool:
        """A "+" read at `now` is within the guard time of the first held one: strictly
        before the moment deadline() gives, computed the same way (first_at + guard), so a
        read and the expiry timer agree at that moment whatever the rounding."""
        return now < self.first_at + self.guard

    def deadline(self) -> float | None:
        """When expire() must run: the guard time after "+++" (escape), or after the
        first "+" of an incomplete one (its "+"s become data)."""
        if self.held == 3:
            return self.last_rx + self.guard
        if self.held:
            return self.first_at + self.guard
        return None

    def expire(self, now: float) -> tuple[bytes, bool]:
        """(data to send, escaped) once deadline() has passed with no byte since."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return b"", False
        if self.held == 3:
            self.held = 0
            return b"", True
        out = bytes([self.char]) * self.held
        self.held = 0
        return out, False


    def release(self) -> bytes:
        """The held characters, as data: online mode ends before their guard time has
        told (DTR dropped, the host hung up), so they were never an escape."""
        out = bytes([self.char]) * self.held
        self.held = 0
        return out


def _leading(data: bytes, char: int, limit: int) -> int:
    n = 0
    while n < len(data) and n < limit and data[n] == char:
        n += 1
    return n
