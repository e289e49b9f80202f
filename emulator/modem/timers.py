"""A modem's sense of elapsed time: monotonic(), call_later(), sleep(), wait_for().

Every timeout a host can observe (upload inactivity, SSL open and handshake limits,
close linger, retransmission, boot delay) runs on the modem's Timers, never on the
event loop directly.  In real mode the timers are the loop's own; in manual mode
(tests) time stands still until advance() moves it, so a test of a 10 s timeout
takes milliseconds and never races the machine's load:

    port = emu.add_modem("ml302", manual_time=True)
    ...
    emu.advance(port, 10)          # runs every timer due within the next 10 s, in order

The loop still moves bytes (pty, sockets) in real time; only timers wait for advance().
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import numbers
from typing import Any, Awaitable, Callable


EPSILON = 1e-9                  # manual time: due within a nanosecond of the end is due
MAX_ADVANCE = 1e9               # one advance(): ~31 years (the clock then still counts microseconds)


def _nothing() -> None:
    pass


class TimerHandle:
    __slots__ = ("when", "callback", "args", "cancelled", "loop_handle")

    def __init__(self, when: float, callback: Callable, args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False
        self.loop_handle: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        self.cancelled = True
        # (On manual time a cancelled handle stays in the heap until the clock passes it:
        # what its callback holds -- a task, its closures -- goes now.)
        self.callback, self.args = _nothing, ()
        if self.loop_handle is not None:
            self.loop_handle.cancel()


class Timers:
    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, manual: bool = False) -> None:
        self.loop = loop
        # Without a loop (sans-IO unit tests) nothing could fire real timers: manual.
        self.manual = manual or loop is None
        self._now = 1000.0                      # manual time (an arbitrary origin)
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        if not self.manual:
            # (read several times per command: the loop's own clock, without a call between)
            self.monotonic = loop.time

    def monotonic(self) -> float:
        if self.manual:
            return self._now
        return self.loop.time()

    def call_later(self, delay: float, callback: Callable, *args: Any) -> TimerHandle:
        handle = TimerHandle(self.monotonic() + max(0.0, delay), callback, args)
        if self.manual:
            heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        else:
            handle.loop_handle = self.loop.call_later(max(0.0, delay), self._fire, handle)
        return handle

    @staticmethod
    def _fire(handle: TimerHandle) -> None:
        if not handle.cancelled:
            handle.cancelled = True             # fired: a late cancel() is harmless
            # (what the callback holds goes with the call, and so does the loop's handle,
            # whose args hold this one: a fired timer kept by its owner is no cycle that
            # keeps a closed socket, its link and TLS context for the cyclic GC)
            callback, args = handle.callback, handle.args
            handle.callback, handle.args, handle.loop_handle = _nothing, (), None
            callback(*args)

    def advance(self, seconds: float) -> int:
        """Manual mode: move time on by `seconds`, firing every timer that falls due
        (including ones the fired callbacks start within the span), in time order.
        Returns how many fired.  Call it on the loop's thread."""
        if not self.manual:
            raise RuntimeError("advance() needs manual time (add_modem(..., manual_time=True))")
        # A real number (not a bool, a string, None): time never runs back (NaN fails too),
        # nor so far that the float clock stops counting milliseconds (1e300: every timer
        # due at once).
        if (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)
                or not 0 <= seconds <= MAX_ADVANCE):
            raise ValueError(f"advance({seconds!r}): seconds must be a number 0..{MAX_ADVANCE:.0e}")
        end = self._now + seconds
        fired = 0
        # (A timer due "at" the end fires even when float rounding put it a hair later:
        # advance(0.05) then advance(0.36) reaches what was set 0.41 s ahead.)
        while self._heap and self._heap[0][0] <= end + EPSILON:
            when, _, handle = heapq.heappop(self._heap)
            if handle.cancelled:
                continue
            self._now = max(self._now, when)
            self._fire(handle)
            fired += 1
        self._now = max(self._now, end)      # (a timer fired within EPSILON past it)
        return fired

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        handle = self.call_later(delay, lambda: future.done() or future.set_result(None))
        try:
            await future
        finally:
            handle.cancel()

    async def wait_for(self, awaitable: Awaitable, timeout: float | None):
        """asyncio.wait_for on the modem's time: TimeoutError after `timeout` s (None: no
        limit); the awaitable is cancelled then, as asyncio.wait_for does.  The awaitable
        runs in the calling task (asyncio.timeout, whose deadline this modem's timer sets
        when it expires): no task of its own, so no loop turn to start it and none to
        hand its result back (the connect of an open, the wait for its handshake)."""
        if timeout is None:
            return await awaitable
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(None) as limit:
            handle = self.call_later(timeout, lambda: limit.reschedule(loop.time()))
            try:
                return await awaitable
            finally:
                handle.cancel()
