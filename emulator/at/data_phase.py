"""The port's DATA mode: one DataRequest being filled from the host's bytes (sans-IO).

The interpreter owns the mode, the prompt and the idle timer; this owns the bytes:
how many the request takes, where Ctrl+Z / ESC end it, the max_length overflow,
the echo, AT+QFUPL's ack byte after each block and its "+++" escape.
"""
from __future__ import annotations

from emulator.at import framing
from emulator.at.escape import EscapeDetector
from emulator.at.responses import DataRequest

CTRL_Z, ESC = 0x1A, 0x1B


class DataPhase:
    def __init__(self, request: DataRequest, raw: str, guard: float = 1.0, now: float = 0.0) -> None:
        self.request = request
        self.raw = raw                   # the command line that asked for the data (logs)
        self.buf = bytearray()
        self.overflow = False
        self.timer = None                # the idle timeout (a modem.call_later handle)
        # "+++" (request.plus_escape): the detector only watches; the "+"s go into buf at
        # once (they are data unless the guard time after them passes) and escaped()
        # takes them out again.  The silence before counts from the prompt.
        self.escape = (EscapeDetector(guard, now)
                       if request.plus_escape and request.length is not None else None)
        self.escape_timer = None         # when the escape's guard time ends

    def escape_deadline(self) -> float | None:
        """When escape_expired() must run (None: no "+" that may be an escape)."""
        return self.escape.deadline() if self.escape is not None else None

    def escape_expired(self, now: float) -> bool:
        """The guard time after "+++" passed with no byte: True, and the "+++" is no
        longer data.  False: no escape (yet); held "+"s stay data."""
        if self.escape is None:
            return False
        _, escaped = self.escape.expire(now)
        if escaped:
            del self.buf[-3:]
        return escaped

    def take(self, inbox: bytearray, echo: bool, now: float = 0.0) -> tuple[bytes, str | None]:
        """Move the request's bytes out of a non-empty inbox (at least one byte goes).
        Returns what to write (echo, ack) and why the phase ended ("done", "cancel",
        "overflow") or None while it goes on.  echo: the port's ATE setting; now: the
        modem's clock (the "+++" guard times)."""
        req = self.request
        echo = echo and req.echo
        if req.length is not None:
            want = req.length - len(self.buf)
            if req.ack_block:                    # up to the end of the current block
                want = min(want, req.ack_block - len(self.buf) % req.ack_block)
            data = bytes(inbox[:want])
            del inbox[:len(data)]
            if self.escape is not None:
                self.escape.feed(data, now)      # (watch only: the bytes are data for now)
            self.buf += data
            out = data if echo else b""
            if len(self.buf) == req.length:
                return out, "done"
            if req.ack_block and len(self.buf) % req.ack_block == 0:
                return out + framing.ACK, None   # the host sends the next block now
            return out, None
        ends = [i for i in (inbox.find(CTRL_Z), inbox.find(ESC) if req.escape_cancels else -1)
                if i >= 0]
        end = min(ends) if ends else len(inbox)
        data = bytes(inbox[:end])
        terminator = inbox[end] if end < len(inbox) else None
        del inbox[:end + (terminator is not None)]
        room = (req.max_length - len(self.buf)) if req.max_length is not None else len(data)
        if len(data) > room:
            self.overflow = True
        self.buf += data[:max(room, 0)]
        out = data if echo else b""
        if terminator == CTRL_Z:
            return out, "overflow" if self.overflow else "done"
        if terminator == ESC:
            return out, "cancel"
        return out, None
