"""Review of the late-LF rule and --uart (commits 5236d5d..0129720): defects found (fixed ones
say "Was a bug, fixed")."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from emulator.io.transport import PtyPort


async def _until(predicate, timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline
        await asyncio.sleep(0.005)


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
            await _until(lambda: fds)
            await _until(lambda: b"AT2\r" in got)
            await asyncio.sleep(0.1)
            assert bytes(got) == b"AT1\rAT2\r"
        finally:
            port.close()
            for fd in fds:
                os.close(fd)
    asyncio.run(main())
