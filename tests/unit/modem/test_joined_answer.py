"""An answer's text and its final result code leave in one write (Modem.write_joined): a
UART sends them back to back, and a host that reads between two writes sees the text alone
-- for milliseconds when the host shares the emulator's process and GIL, longer on a loaded
machine -- which public drivers' models took for the whole answer.  Sans-IO: a Modem with a
recording sink on a running loop, no pty."""
from __future__ import annotations

import asyncio

from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile


def run(body) -> None:
    async def main():
        modem = Modem(load_profile("ec2x"))
        writes: list[bytes] = []
        modem.attach(writes.append, loop=asyncio.get_running_loop())
        modem.feed(b"ATE0\r")
        await asyncio.sleep(0)
        writes.clear()
        await body(modem, writes)
    asyncio.run(main())


def test_a_command_with_text_is_answered_in_one_write():
    async def body(modem, writes):
        modem.feed(b"AT+CSQ\r")
        assert len(writes) == 1 and writes[0].startswith(b"\r\n+CSQ: ") and writes[0].endswith(b"\r\n\r\nOK\r\n")
        writes.clear()
        modem.feed(b"AT+CSQ;+CGMR\r")                 # two commands' text, one final result
        assert len(writes) == 1 and writes[0].count(b"\r\n\r\n") == 2 and writes[0].endswith(b"OK\r\n")
    run(body)


def test_text_kept_for_the_final_result_leaves_before_anything_written_after_it():
    """What write_joined() keeps goes first in the next write (order is never changed), and on
    the next loop turn at the latest when no final result follows in this one."""
    async def body(modem, writes):
        modem.write_joined(b"\r\n+TEXT: 1\r\n")
        assert writes == []
        modem.write(b"\r\n+URC\r\n")
        assert writes == [b"\r\n+TEXT: 1\r\n\r\n+URC\r\n"]
        writes.clear()
        modem.write_joined(b"\r\n+TEXT: 2\r\n")
        await asyncio.sleep(0)                            # the next loop turn
        assert writes == [b"\r\n+TEXT: 2\r\n"]
        writes.clear()
        modem.write_joined(b"\r\n+TEXT: 3\r\n")
        modem.drop_held()                                 # a power cut (the control op reboot)
        await asyncio.sleep(0)
        assert writes == []
    run(body)


def test_without_a_running_loop_text_is_written_at_once():
    modem = Modem(load_profile("ec2x"))
    writes: list[bytes] = []
    modem.attach(writes.append)
    modem.write_joined(b"\r\n+TEXT\r\n")
    assert writes == [b"\r\n+TEXT\r\n"]
