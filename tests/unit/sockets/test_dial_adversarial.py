"""Timers.wait_for in the calling task (asyncio.timeout, deadline set by the modem's timer)
attacked where its callers depend on it: the same task keeps awaiting after a timeout (the
ping probe sleeps, the open answers), a cancel from outside and the timeout falling due in
one turn, a timeout due after the result came, nested limits, a timer that fires when the
task is already elsewhere."""
from __future__ import annotations

import asyncio

import pytest

from emulator.modem.timers import Timers


def run(coro_fn):
    asyncio.run(coro_fn())


def test_after_a_timeout_the_same_task_awaits_normally():
    """The ping probe: a timed-out connect, then timers.sleep() in the same task.  A
    cancel left over from the timeout would end the task instead."""
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)

        async def probe():
            with pytest.raises(asyncio.TimeoutError):
                await t.wait_for(loop.create_future(), 2)
            assert asyncio.current_task().cancelling() == 0
            await t.sleep(3)
            await asyncio.sleep(0)
            return "slept"

        task = asyncio.ensure_future(probe())
        await asyncio.sleep(0)
        t.advance(2.5)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()                     # sleeping on modem time now
        t.advance(3)
        assert await asyncio.wait_for(task, 1) == "slept"
    run(main)


def test_a_timer_due_after_the_result_never_cancels_a_later_await():
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)
        later = loop.create_future()

        async def body():
            ready = loop.create_future()
            loop.call_soon(ready.set_result, 1)
            assert await t.wait_for(ready, 5) == 1
            return await later                      # the 5 s timer must not reach this

        task = asyncio.ensure_future(body())
        for _ in range(3):
            await asyncio.sleep(0)
        t.advance(10)
        for _ in range(3):
            await asyncio.sleep(0)
        assert not task.done()
        later.set_result("ok")
        assert await task == "ok"
    run(main)


def test_outside_cancel_and_timeout_in_one_turn_is_a_cancel():
    """_stop_opening cancels the open's task in the turn its connect timeout fell due:
    the task must end cancelled (it is gone), not carry on as a timeout."""
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)
        never = loop.create_future()
        after = []

        async def body():
            try:
                await t.wait_for(never, 1)
            except asyncio.TimeoutError:
                after.append("timeout")
                await asyncio.sleep(0)
                after.append("went on")

        task = asyncio.ensure_future(body())
        await asyncio.sleep(0)
        t.advance(1)                                 # the deadline is now
        task.cancel()                                # ... and the socket is closed
        with pytest.raises(asyncio.CancelledError):
            await task
        assert after == [] and never.cancelled()
    run(main)


def test_nested_limits_report_the_one_that_expired():
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)

        async def inner():
            try:
                await t.wait_for(loop.create_future(), 5)
            except asyncio.TimeoutError:
                return "inner timed out"
            return "inner done"

        outer = asyncio.ensure_future(t.wait_for(inner(), 2))
        await asyncio.sleep(0)
        t.advance(2)
        with pytest.raises(asyncio.TimeoutError):     # the outer limit, not swallowed inside
            await outer

        outer = asyncio.ensure_future(t.wait_for(inner(), 9))
        await asyncio.sleep(0)
        t.advance(5)
        assert await outer == "inner timed out"
    run(main)


def test_a_wait_that_outlives_a_shielded_future_leaves_it_alone():
    """The handshake wait is wait_for(shield(opened)): its timeout must cancel the wait,
    never the future the socket resolves later (a late result must not raise)."""
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)
        opened = loop.create_future()
        waiter = asyncio.ensure_future(t.wait_for(asyncio.shield(opened), 3))
        await asyncio.sleep(0)
        t.advance(3)
        with pytest.raises(asyncio.TimeoutError):
            await waiter
        assert not opened.done()
        opened.set_result(("late", ""))             # InvalidStateError if it had been cancelled
    run(main)


def test_many_waits_on_one_task_leave_no_timers_behind():
    """An open's connect wait and handshake wait run one after the other in one task,
    hundreds of opens a run: finished waits leave nothing on the modem's timer heap to
    fire (their handles are cancelled)."""
    async def main():
        loop = asyncio.get_running_loop()
        t = Timers(loop, manual=True)
        for _ in range(200):
            done = loop.create_future()
            done.set_result(None)
            await t.wait_for(done, 150)
            await t.wait_for(asyncio.shield(done), 300)
        assert t.advance(1000) == 0                   # nothing fired
        assert asyncio.current_task().cancelling() == 0
    run(main)


# -- SslSocket's dial: a first flight the socket cannot take at once ------------------------
import hashlib  # noqa: E402
import socket  # noqa: E402

from emulator.io.network import Dialled, Router  # noqa: E402
from emulator.sockets.plain_session import PlainSession, PlainSettings  # noqa: E402
from emulator.sockets.ssl_socket import CONNECTED, SslSocket  # noqa: E402
from tests.unit.sockets.test_dial import Owner  # noqa: E402

BIG = bytes(range(256)) * (6 * 4096)        # 6 MiB: far past the loopback socket buffers


class BigHello(PlainSession):
    """A session whose first flight is huge (the dial writes it before asyncio's transport
    exists: Dialled.write keeps what the socket did not take)."""

    def start(self) -> None:
        super().start()
        self._out.append(BIG)


def test_a_first_flight_larger_than_the_socket_buffer_arrives_whole_and_in_order():
    async def main():
        loop = asyncio.get_running_loop()
        server = socket.create_server(("127.0.0.1", 0))
        owner = Owner(session_factory=BigHello)
        sock = SslSocket(owner, 0, pdp_id=1, ctx_id=0, host="h.test", port=443, delivery=None,
                         recv_limit=4096, timers=Timers(loop))
        router = Router({"h.test:443": f"127.0.0.1:{server.getsockname()[1]}"})
        sock.open(router, PlainSettings(), 10)
        dialled = sock._transport
        assert isinstance(dialled, Dialled) and dialled.pending     # the socket took only part
        got = bytearray()

        def reader():
            conn, _ = server.accept()
            conn.settimeout(5)
            while len(got) < len(BIG):
                chunk = conn.recv(1 << 16)
                if not chunk:
                    break
                got.extend(chunk)
            return conn

        conn = await asyncio.wait_for(loop.run_in_executor(None, reader), 10)
        assert len(got) == len(BIG)
        assert hashlib.sha256(got).digest() == hashlib.sha256(BIG).digest()
        for _ in range(5):
            await asyncio.sleep(0)
        assert owner.opened == [(None, "")] and sock.state is CONNECTED
        sock.abort()
        conn.close()
        server.close()
    asyncio.run(main())
