"""PtyPort's two questions to the kernel -- what the host has written and the port not read
(input_waiting), whether the host has read the output (host_has_read) -- count bytes still in
the pty's flip buffer: a write to one side of a pty reaches the other side's read buffer a
moment later (a kernel worker moves it), and FIONREAD alone misses it meanwhile.  The late-LF
rule asks both right around a prompt, within microseconds of the writes.  Without the poll
that waits for the move, a few of every thousand answers here were wrong."""
from __future__ import annotations

import asyncio
import os

from emulator.io.transport import PtyPort

ROUNDS = 3000


async def _attached_port():
    port = PtyPort(asyncio.get_running_loop(), lambda data: None)
    fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while not port.look_for_host():
        assert loop.time() < deadline
        await asyncio.sleep(0.005)
    return port, fd


def test_output_just_written_is_unread_until_the_host_reads_it():
    async def main():
        port, fd = await _attached_port()
        try:
            wrong = 0
            for _ in range(ROUNDS):
                port.write(b"> ")                       # (straight to the pty: nothing queued)
                mark = port.accepted                    # (the interpreter's mark: after the prompt)
                if port.host_has_read(mark) is not False:
                    wrong += 1
                got = b""
                while len(got) < 2:
                    got += os.read(fd, 2 - len(got))
                assert got == b"> "
                assert port.host_has_read(mark) is True
            assert wrong == 0, f"{wrong} of {ROUNDS} prompts taken for read before the host read them"
        finally:
            os.close(fd)
            port.close()
    asyncio.run(main())


def test_a_host_byte_whose_write_returned_is_counted_as_waiting():
    async def main():
        port, fd = await _attached_port()
        port.loop.remove_reader(port.master)            # (nothing reads: the count is asked)
        try:
            missed = 0
            for _ in range(ROUNDS):
                os.write(fd, b"\n")
                if port.input_waiting() != 1:
                    missed += 1
                while port.input_waiting():
                    os.read(port.master, 16)
            assert missed == 0, f"{missed} of {ROUNDS} written bytes not counted"
        finally:
            os.close(fd)
            port.close()
    asyncio.run(main())
