"""PtyPort while the host's input is held back (set_reading(False)): the host's hang-up is
still seen at once; what the departed host wrote (still in the pty, or read before a step
aside) reaches the modem before that hang-up -- a USB port's close waits for the host's
output -- and nothing of it after, for the next host."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from emulator.io.transport import PtyPort


async def until(predicate, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline
        await asyncio.sleep(0.005)


async def next_host_hears_only_itself(port: PtyPort, got: bytearray, before: bytes = b"") -> None:
    """A host opening the port now: what reaches the modem after `before` (what it had got
    already) is its own "AT\\r", nothing older."""
    fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
    try:
        await until(lambda: port.attached)
        port.set_reading(True)
        os.write(fd, b"AT\r")
        await until(lambda: len(got) > len(before))
        await asyncio.sleep(0.05)
        assert bytes(got) == before + b"AT\r"
    finally:
        os.close(fd)


def test_paused_before_any_host_the_hang_up_is_still_seen_and_its_bytes_handed_on_first():
    async def main():
        got, hangups = bytearray(), []
        port = PtyPort(asyncio.get_running_loop(), got.extend, on_hangup=lambda: hangups.append(len(got)))
        try:
            port.set_reading(False)                 # held back before any host came
            fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
            await until(lambda: port.attached)
            os.write(fd, b"old host cmd\r")
            os.close(fd)
            await until(lambda: hangups)            # seen, though nothing reads the pty
            assert hangups == [13] and bytes(got) == b"old host cmd\r"    # handed on first
            await next_host_hears_only_itself(port, got, b"old host cmd\r")
        finally:
            port.close()
    asyncio.run(main())


def test_a_hang_up_while_paused_is_seen_without_polling_and_a_quick_reopen_gets_nothing_old():
    async def main():
        got, hangups = bytearray(), []
        port = PtyPort(asyncio.get_running_loop(), got.extend, on_hangup=lambda: hangups.append(len(got)))
        try:
            fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
            await until(lambda: port.attached)
            port.set_reading(False)
            os.write(fd, b"written, then left\r")
            os.close(fd)
            await asyncio.sleep(0.005)              # well inside the old 50 ms poll
            assert hangups == [19] and bytes(got) == b"written, then left\r"   # handed on first
            assert port.reading                     # the next host starts with nothing held back
            await next_host_hears_only_itself(port, got, b"written, then left\r")
        finally:
            port.close()
    asyncio.run(main())


# -- bytes read before a step aside (PtyPort._held) ------------------------------------------
async def _port_with_host():
    got = bytearray()
    port = PtyPort(asyncio.get_running_loop(), got.extend)
    fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
    await until(lambda: port.attached)
    return port, fd, got


def test_bytes_held_by_a_step_aside_go_on_though_the_pty_is_empty():
    """A read that emptied the pty but looked like "more to come" (a piece of SHORT_READ or
    more) while another modem's host had written: the port held it and stepped aside for a
    loop turn.  It must hand it on then, not wait for the host's next write (the
    level-triggered reader never fires on an empty pty): an AT+QFUPL's file sent in one
    write got no answer while a neighbour's host typed (test_adversarial_many_modems_isolation)."""
    async def main():
        port, fd, got = await _port_with_host()
        try:
            port._held = b"A" * 3000                # what _read_some holds before it steps aside
            port._step_aside()
            await until(lambda: len(got) == 3000)
            os.write(fd, b"AT\r")                   # and what comes next follows it
            await until(lambda: len(got) == 3003)
            assert bytes(got) == b"A" * 3000 + b"AT\r"
        finally:
            os.close(fd)
            port.close()
    asyncio.run(main())


def test_bytes_held_when_flow_control_stopped_reading_go_on_when_it_resumes():
    async def main():
        port, fd, got = await _port_with_host()
        try:
            port._held = b"B" * 3000
            port._step_aside()
            port.set_reading(False)                 # held back before the step aside ended
            await asyncio.sleep(0.05)
            assert not got                          # nothing while the modem holds input back
            port.set_reading(True)
            await until(lambda: len(got) == 3000)
            assert bytes(got) == b"B" * 3000
        finally:
            os.close(fd)
            port.close()
    asyncio.run(main())


def test_a_host_that_opens_and_writes_right_after_a_look_found_nobody_keeps_its_bytes():
    """Was a bug, fixed (the full run saw a driver's first AT+QPOWD=0 go unanswered): the
    look for a host found nobody (POLLHUP), then -- another thread running between the two
    syscalls -- a host opened the port and wrote its first command, and the read that
    followed dropped that command as the departed host's.  The pty is now read before the
    look: bytes there are dropped only if nobody is there after."""
    async def main():
        got = bytearray()
        port = PtyPort(asyncio.get_running_loop(), got.extend)
        fds = []
        real_gone = port._host_gone

        def gone_then_a_host_arrives() -> bool:
            answer = real_gone()
            if answer and not fds:           # the look said nobody; the host arrives now
                fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
                fds.append(fd)
                os.write(fd, b"AT+QPOWD=0\r")
            return answer
        port._host_gone = gone_then_a_host_arrives
        try:
            await until(lambda: fds)
            await until(lambda: port.attached)
            await until(lambda: bytes(got) == b"AT+QPOWD=0\r")
        finally:
            for fd in fds:
                os.close(fd)
            port.close()
    asyncio.run(main())


# Was a bug, fixed: PtyPort._hangup calls on_hangup, which may write (--uart:
# Modem.host_closed_without_hangup -> output_drained -> a still-online link's bytes; default:
# emit('hangup') -> PushDelivery.push). write() on the detached port calls _attach_if_present,
# which reads the pty into _held when a new host is there; then _hangup's trailing
# _watch_for_host ran _attach_if_present again on the attached port and `self._held = early`
# overwrote the first read: the new host's first bytes were lost. _watch_for_host now does
# nothing for an attached port, and _attach_if_present appends to _held.
@pytest.mark.parametrize("hangup_on_close", [True, False], ids=["default", "uart"])
def test_a_host_reopening_while_the_modem_writes_at_the_close_keeps_its_first_bytes(hangup_on_close):
    async def main():
        got = bytearray()
        fds: list[int] = []
        port: PtyPort | None = None

        def on_hangup() -> None:
            # Host B opens the port and writes its first command while the modem, told of A's
            # close, writes (flushed socket data / a push URC); B then writes on.
            fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
            fds.append(fd)
            os.write(fd, b"AT1\r")
            time.sleep(0.02)                     # (the pty moves the bytes to the master)
            port.write(b"\r\n+QIURC: data\r\n")
            os.write(fd, b"AT2\r")
            time.sleep(0.02)

        port = PtyPort(asyncio.get_running_loop(), got.extend, on_hangup=on_hangup,
                       hangup_on_close=hangup_on_close)
        try:
            a = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
            assert port.look_for_host()
            os.close(a)                          # host A leaves
            await until(lambda: fds)
            await until(lambda: b"AT2\r" in got)
            await asyncio.sleep(0.1)
            assert bytes(got) == b"AT1\rAT2\r"
        finally:
            port.close()
            for fd in fds:
                os.close(fd)
    asyncio.run(main())
