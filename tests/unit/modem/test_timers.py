"""The modem's Timers (emulator/modem/timers.py): manual time fires in order, and
asyncio waits on it time out only when advanced."""
from __future__ import annotations

import asyncio

import pytest

from emulator.modem.timers import Timers


def test_manual_timers_fire_in_time_order_only_when_advanced():
    t = Timers(None)
    fired = []
    t.call_later(2, fired.append, "b")
    t.call_later(1, fired.append, "a")
    cancelled = t.call_later(1.5, fired.append, "x")
    cancelled.cancel()
    t.call_later(5, fired.append, "late")
    assert t.advance(0.5) == 0 and fired == []
    assert t.advance(1.6) == 2 and fired == ["a", "b"]
    assert t.monotonic() == pytest.approx(1002.1)


def test_a_timer_started_by_a_timer_fires_within_the_same_advance():
    t = Timers(None)
    fired = []
    t.call_later(1, lambda: t.call_later(1, fired.append, "second"))
    t.advance(3)
    assert fired == ["second"]


def test_wait_for_on_manual_time():
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)
        never = loop.create_future()
        waiter = asyncio.ensure_future(t.wait_for(never, 10))
        await asyncio.sleep(0.01)
        assert not waiter.done()                 # real time passes, modem time does not
        t.advance(9.9)
        await asyncio.sleep(0)
        assert not waiter.done()
        t.advance(0.2)
        with pytest.raises(asyncio.TimeoutError):
            await waiter
        assert never.cancelled()
        quick = loop.create_future()
        loop.call_soon(quick.set_result, 7)
        assert await t.wait_for(quick, 1) == 7
    asyncio.run(main())


def test_real_timers_use_the_loop():
    async def main():
        t = Timers(asyncio.get_running_loop())
        with pytest.raises(asyncio.TimeoutError):
            await t.wait_for(asyncio.get_running_loop().create_future(), 0.01)
        await t.sleep(0.001)
    asyncio.run(main())


def test_wait_for_runs_the_awaitable_in_the_calling_task():
    """No task of its own (each costs loop turns on an open's critical path), and a
    cancel from outside still reaches the awaitable and is not mistaken for a timeout."""
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop)
        seen = []

        async def step():
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)
            return 5

        assert await t.wait_for(step(), 10) == 5
        assert seen == [asyncio.current_task()]

        never = loop.create_future()
        waiter = asyncio.ensure_future(t.wait_for(never, 10))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert never.cancelled()
        # A timeout that fell due after the result came is not an error.
        quick = loop.create_future()
        quick.set_result(3)
        assert await t.wait_for(quick, 0) == 3
        await asyncio.sleep(0.01)              # the expired timer, if any, fires into nothing
    asyncio.run(main())


def test_a_cancelled_manual_timer_lets_go_of_what_its_callback_holds():
    """Manual time keeps a cancelled handle in its heap until the clock passes it (every
    open's 150 s connect limit, on a modem whose clock a test never moves that far): what
    the callback held -- a task, its closures -- must not live on with it."""
    import gc
    import weakref

    class Held:
        pass
    timers = Timers(None)
    held = Held()
    gone = weakref.ref(held)
    handle = timers.call_later(150, lambda h=held: h)
    del held
    handle.cancel()
    gc.collect()
    assert gone() is None
    assert timers.advance(200) == 0                  # and it never fires
