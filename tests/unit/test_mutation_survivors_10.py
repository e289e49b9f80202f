"""Tests from a manual mutation-testing pass over the pty transport (emulator/io/transport.py:
PtyPort's write / _flush / backlog and the HIGH_WATER / LOW_WATER drain callback, the
max_backlog bound, host attach and hang-up detection, reading and the hand-on of held bytes,
input holds, pacing with a baud rate and uart_noise, set_baud(after_queued), discard_output,
input_waiting, host_has_read) and the modem's events that hang on it (emulator/modem/modem.py:
output_drained, drained(), host_hangup).  Each test pins a behaviour that a small change to
those modules (the mutant named in its docstring) left the transport's unit tests and the
pty e2e tests passing on; the expected values come from the module docstrings of
transport.py and modem.py and docs/architecture.md, not from the emulator's current output.
Real ptys (PtyPort on the test's own loop, the host side opened with os.open); timing is only
ever asserted as a lower bound (paced bytes cannot arrive *earlier* than the rate allows), so
a loaded machine can only make those tests pass more easily.  (The pass ran out of time
before the suite was run on five of the mutants: _read_some going on after a hold,
_hand_on_held without wants_input, _wake_drain_waiters on cancelled futures, write()
flushing during a noise gap, a 10x paced slice; their tests pin documented behaviour and
were checked to fail on them.)

Equivalent mutants (no behaviour a host or a caller could see changes):
- PtyPort._flush `_line_free = self.loop.time() + ...` instead of max(_line_free, now): _flush
  writes only once `wait` <= 0, i.e. now >= _line_free, so the max is always `now`.
- PtyPort.write's fast path without `not self._out`: unpaced and noiseless, bytes queued in
  _out always mean the writer is registered (_flush sets _writing = bool(_out)), which the
  condition still checks.
- PtyPort.write without `self._dropped += excess` / _hangup without `self._dropped = 0`: the
  count feeds only the "host caught up" log line.
- PtyPort.set_reading without its `on == self.reading` early return: a repeated call re-adds
  the same reader / finds the hang-up watch already on.
- PtyPort.set_reading(True) without `_stop_hangup_watch()`: the watch's epoll reports only a
  hang-up, which the reader sees too; _hangup_if_gone then finds the port already detached.
- PtyPort._hangup_if_gone without `self._hangup_due = False`: the flag only spares a second
  call_soon; a reading port's reader (EIO) and a paused port's hang-up watch see the
  hang-up anyway.
- PtyPort._watch_for_host without the `self.attached` guard: _attach_if_present on an attached
  port re-reads nothing new (_held += early) -- see test_transport_paused's reopen test.
- PtyPort._flush `if noise is not None and self._out` without `and self._out`: a timer for
  an empty buffer just fires and writes nothing; a write meanwhile waits at most one noise
  gap, which noise allows anyway.
- set_baud(after_queued) without `self.baud is not None`, set_baud without after_queued
  deferring, set_baud without re-timing a pending fragment: the app's only caller (_pace in
  io/app.py) paces from the start, never sets None, and always switches with
  after_queued=True; the pending fragment's time is when the bytes already sent at the old
  rate have left, the right time either way.
- The drain-contract mutants that only raise on_drain more often than the contract says
  (_hangup / discard_output not clearing _above_high_water): the next drain is one more
  "output_drained", whose every listener re-checks the backlog (PushDelivery._host_keeps_up,
  OnlineDelivery.flush, Interpreter._output_drained, _write_paced's loop) -- pinned for the
  flush itself below (test_the_drain_callback_comes_once_per_episode_above_high_water) only
  because there it would run on every later write.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import random
import select
import struct
import termios
import threading

import pytest

from emulator.io import transport
from emulator.io.transport import HIGH_WATER, NOISE_GAP, NOISE_MAX, PACE_SLICE, SLICE, PtyPort
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from tests.unit.io.test_transport_paused import until


# -- helpers -------------------------------------------------------------------------------------
class Hosted:
    """A PtyPort on the running loop with a host holding its slave side open (non-blocking)."""

    def __init__(self, **kw) -> None:
        self.got = bytearray()
        self.hangups: list[int] = []
        self.drains: list[int] = []
        self.port = PtyPort(asyncio.get_running_loop(), self.got.extend,
                            on_hangup=lambda: self.hangups.append(1),
                            on_drain=lambda: self.drains.append(1), **kw)
        self.fd = self.open_host()

    def open_host(self) -> int:
        fd = os.open(self.port.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        assert self.port.look_for_host()
        return fd

    def unread(self) -> int:
        """What the modem wrote that waits on the host's side of the pty."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.poll(0)
        return struct.unpack("i", fcntl.ioctl(self.fd, termios.FIONREAD, b"\0" * 4))[0]

    def read(self) -> bytes:
        """Everything there now (the host reads)."""
        out = bytearray()
        while True:
            try:
                piece = os.read(self.fd, 65536)
            except BlockingIOError:
                return bytes(out)
            if not piece:
                return bytes(out)
            out += piece

    async def read_exactly(self, n: int, timeout: float = 1.5) -> bytes:
        out = bytearray()

        def more() -> bool:
            out.extend(self.read())
            return len(out) >= n
        await until(more, timeout)
        return bytes(out)

    async def read_all_output(self, timeout: float = 1.5) -> bytes:
        """Read until the port's backlog is gone and nothing more comes."""
        out = bytearray()

        def done() -> bool:
            out.extend(self.read())
            return self.port.backlog == 0 and self.unread() == 0
        await until(done, timeout)
        return bytes(out)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.port.close()


def run(coro_fn) -> None:
    asyncio.run(coro_fn())


# -- the output bound (max_backlog) --------------------------------------------------------------
@pytest.mark.parametrize("bound,kept", [(100_000, 100_000), (10, HIGH_WATER)])
def test_a_host_that_never_reads_keeps_exactly_the_bound_of_newest_output(bound, kept):
    """Mutants: write's `len(self._out) > self.max_backlog` with slack (max_backlog + 4096),
    and __init__'s bound doubled.  transport.py: "Past `max_backlog` ... the oldest bytes are
    dropped" -- exactly the profile's serial.output_backlog is kept, no more (RSS bound), but
    never less than HIGH_WATER (the drain protocol needs that much).  What the host reads
    when it comes back: what the pty took before the stall, then the newest `kept` bytes."""
    async def main():
        h = Hosted(max_backlog=bound)
        try:
            data = bytes(range(256)) * 1400                  # 358,400 bytes, position-coded
            for i in range(0, len(data), 4096):
                h.port.write(data[i:i + 4096])
            assert h.port.backlog == kept
            got = await h.read_all_output()
            head = len(got) - kept
            assert head > 0 and got == data[:head] + data[-kept:]
        finally:
            h.close()
    run(main)


# -- the drain callback --------------------------------------------------------------------------
def test_the_drain_callback_comes_once_per_episode_above_high_water():
    """Mutant: _flush not clearing `_above_high_water` when it reports the drain: from then on
    every flush (every later write the pty did not take at once) raised on_drain again.
    delivery.py relies on the transport raising it "exactly when the backlog went above
    HIGH_WATER" and back below LOW_WATER."""
    async def main():
        h = Hosted()
        try:
            h.port.write(b"a" * (HIGH_WATER + 30_000))        # the host is not reading
            assert h.drains == []
            await h.read_all_output()
            assert h.drains == [1]
            for _ in range(3):                                # queued, below HIGH_WATER
                h.port.write(b"b" * 20_000)
                assert 0 < h.port.backlog < HIGH_WATER
                await h.read_all_output()
            assert h.drains == [1]
        finally:
            h.close()
    run(main)


# -- what the host has read ----------------------------------------------------------------------
def test_accepted_counts_every_byte_written_for_the_host_and_marks_what_it_read():
    """Mutant: write() not counting `accepted` (moved below the fast path's return).
    HostPort.accepted: "Bytes written for the host so far (the marks of host_has_read)"; the
    late-LF rule asks whether the host has read up to the prompt's mark."""
    async def main():
        h = Hosted()
        try:
            h.port.write(b"> ")
            mark = h.port.accepted
            h.port.write(b"more")
            assert h.port.accepted == 6 and mark == 2
            await until(lambda: h.unread() == 6)
            assert os.read(h.fd, 2) == b"> "         # the host reads up to the mark
            assert h.port.host_has_read(mark) is True
            assert h.port.host_has_read(h.port.accepted) is False
        finally:
            h.close()
    run(main)


def test_bytes_still_in_the_ports_buffer_after_the_mark_do_not_hide_unread_ones_before_it():
    """Mutant: host_has_read comparing only the slave side's count with the bytes after the
    mark (`waiting <= behind`, the port's own buffer left out).  Paced at 100 baud (one byte
    a slice): "> " written, the mark, then "CDEF"; once "> " and "C" have left and "DEF" wait
    in the port, the host has read nothing -- 3 bytes on its side, 3 in the buffer, 4 after
    the mark: not read."""
    async def main():
        h = Hosted()
        try:
            h.port.set_baud(100)                     # (a byte every 100 ms)
            h.port.write(b"> ")
            mark = h.port.accepted
            h.port.write(b"CDEF")
            await until(lambda: h.port.backlog <= 3)
            assert h.port.host_has_read(mark) is False
            await until(lambda: h.unread() >= 2)
            assert os.read(h.fd, 2) == b"> "
            await until(lambda: h.port.backlog <= 2)
            assert h.port.host_has_read(mark) is True
        finally:
            h.close()
    run(main)


def test_input_waiting_counts_bytes_read_and_held_back():
    """Mutant: input_waiting returning only the pty's count, not `_held` (bytes read before a
    step aside or a hold, not handed on).  HostPort.input_waiting: "The host's bytes in the
    port, not handed to the modem yet" -- the late-LF rule asks it right before a prompt."""
    async def main():
        h = Hosted()
        try:
            h.port.set_reading(False)
            h.port._held = b"AT\r"                   # what _read_some holds at a step aside
            os.write(h.fd, b"\n")
            assert h.port.input_waiting() == 4
        finally:
            h.close()
    run(main)


# -- reading and holds ---------------------------------------------------------------------------
def test_a_hold_taken_while_a_slice_is_handed_on_stops_the_reading_there():
    """Mutant: _read_some going on reading after a delivery although the modem stopped taking
    input (`not self.wants_input()` dropped).  set_reading: "while off, its bytes stay in the
    pty ... as a UART holds a sender back with RTS" -- the modem pauses inside on_data (a
    full connection in online mode) and must get nothing more until it resumes; then all of
    it, in order."""
    async def main():
        got = bytearray()
        port: PtyPort | None = None

        def on_data(data: bytes) -> None:
            got.extend(data)
            port.set_reading(False)                  # full: hold the host back

        port = PtyPort(asyncio.get_running_loop(), on_data)
        fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
        data = bytes(range(256)) * 256               # 64 KiB: more than the pty holds
        writer = threading.Thread(target=lambda: os.write(fd, data), daemon=True)
        try:
            assert port.look_for_host()
            writer.start()
            await until(lambda: got)
            await asyncio.sleep(0.1)
            assert len(got) <= SLICE                 # one slice, then held back
            while len(got) < len(data):
                before = len(got)
                port.set_reading(True)
                await until(lambda: len(got) > before)
            assert bytes(got) == data
        finally:
            writer.join(2)
            os.close(fd)
            port.close()
    run(main)


def test_held_bytes_queued_for_hand_on_wait_when_a_hold_comes_first():
    """Mutant: _hand_on_held without `self.wants_input()`: bytes a step aside held, queued to
    go on a loop turn later, went on although the modem held input back meanwhile."""
    async def main():
        h = Hosted()
        try:
            h.port._held = b"C" * 3000               # read, then stepped aside
            h.port._step_aside()
            await asyncio.sleep(0)                   # _resume_reading: hand-on queued
            h.port.set_reading(False)                # the modem holds input before it runs
            await asyncio.sleep(0.05)
            assert bytes(h.got) == b""
            h.port.set_reading(True)
            await until(lambda: len(h.got) == 3000)
        finally:
            h.close()
    run(main)


# -- pacing --------------------------------------------------------------------------------------
async def arrival(h: Hosted, n: int, timeout: float = 10.0) -> tuple[bytes, float]:
    """The host reads n bytes; returns them and the loop time the last came."""
    loop = asyncio.get_running_loop()
    got = await h.read_exactly(n, timeout)
    return got, loop.time()


def test_paced_output_leaves_no_faster_than_ten_bits_a_byte():
    """Mutant: _flush's paced slice ten times PACE_SLICE's worth (20 bytes at 2000 baud): the
    last slice of an answer then came a whole slice early.  transport.py: "output leaves no
    faster than a UART at that rate sends it, 10 bits a byte, in slices of about PACE_SLICE
    seconds".  100 bytes at 2000 baud: the last cannot come before 0.49 s (two bytes a 10 ms
    slice).  (Also kills 8 bits a byte and _line_free without max(.., now), which
    test_timing kills too.)"""
    async def main():
        h = Hosted()
        try:
            h.port.set_baud(2000)
            start = asyncio.get_running_loop().time()
            h.port.write(b"x" * 100)
            got, last = await arrival(h, 100)
            assert got == b"x" * 100
            assert last - start >= 0.48
        finally:
            h.close()
    run(main)


def test_set_baud_zero_means_unpaced():
    """Mutant: set_baud without `rate = rate or None` (0 kept as a rate: a division by zero
    in the first paced slice).  Its docstring: "None or 0: unpaced"."""
    async def main():
        h = Hosted()
        try:
            h.port.set_baud(2000)
            h.port.set_baud(0)
            assert h.port.baud is None
            h.port.write(b"\r\nOK\r\n")
            assert await h.read_exactly(6) == b"\r\nOK\r\n"
        finally:
            h.close()
    run(main)


async def switch_pending(h: Hosted) -> None:
    """1,000,000 baud (1000-byte slices), 5000 bytes written, then a switch to 2000 baud after
    the queued ones (AT+IPR's set_baud(after_queued=True))."""
    h.port.set_baud(1_000_000)
    h.port.write(b"o" * 5000)
    assert h.port.backlog == 4000
    h.port.set_baud(2000, after_queued=True)
    assert h.port.baud == 1_000_000


def test_a_rate_change_queued_behind_output_crosses_no_slice_boundary():
    """Mutant: _flush's slice not cut at the switch (`size = min(size, self._switch[0])`
    dropped): the first bytes written for the new rate left in the old rate's last slice.
    set_baud: "after_queued: only once the bytes queued now have gone out (at the old
    rate)" -- the 100 bytes after it go at 2000 baud: the last no sooner than 0.49 s after
    the old ones have gone."""
    async def main():
        h = Hosted()
        try:
            h.port.set_baud(1_000_000)
            h.port.write(b"o" * 1500)                # one slice out, 500 queued
            h.port.set_baud(2000, after_queued=True)
            start = asyncio.get_running_loop().time()
            h.port.write(b"n" * 100)
            got, last = await arrival(h, 1600)
            assert got == b"o" * 1500 + b"n" * 100
            assert last - start >= 0.45
        finally:
            h.close()
    run(main)


def test_output_discarded_at_a_power_loss_puts_a_queued_rate_change_into_effect():
    """Mutant: discard_output not applying a pending switch: what is written after the
    restart went at the old rate until 4000 more bytes had left.  The dropped bytes are gone
    for good ("never sent"), so the rate the switch waited for them to leave at is over."""
    async def main():
        h = Hosted()
        try:
            await switch_pending(h)
            h.port.discard_output()
            assert h.port.baud == 2000 and h.port.backlog == 0
            h.read()
            start = asyncio.get_running_loop().time()
            h.port.write(b"n" * 40)
            got, last = await arrival(h, 40)
            assert got.endswith(b"n" * 40) and last - start >= 0.17
        finally:
            h.close()
    run(main)


def test_output_dropped_past_the_bound_counts_towards_a_queued_rate_change():
    """Mutant: write's max_backlog drop not taking the dropped bytes off the switch's count:
    bytes that will never leave at the old rate held the new rate back by as many bytes
    (here the whole bound, 100,000 bytes at the old rate for output meant for the new)."""
    async def main():
        h = Hosted(max_backlog=100_000)
        try:
            h.port.set_baud(10_000_000)              # fast, but the host reads nothing
            for _ in range(40):
                h.port.write(b"o" * 4096)
            assert h.port.backlog == 100_000
            h.port.set_baud(2000, after_queued=True)
            assert h.port.baud == 10_000_000
            for _ in range(30):                      # 122,880 more: every queued one dropped
                h.port.write(b"n" * 4096)
            assert h.port.backlog == 100_000
            assert h.port.baud == 2000
        finally:
            h.close()
    run(main)


# -- uart_noise ----------------------------------------------------------------------------------
class WriteSizes:
    """transport's os with write() recording what each write to the port's master took."""

    def __init__(self) -> None:
        self.master = -1
        self.sizes: list[int] = []

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        n = os.write(fd, data)
        if fd == self.master:
            self.sizes.append(n)
        return n


def noise_plan(seed: int, total: int, baud: int | None = None) -> float:
    """The least time from the first fragment of `total` bytes to the last, as the seeded
    noise draws them (_flush: a size, then a gap when bytes remain), at `baud` if given."""
    rng, left, least = random.Random(seed), total, 0.0
    while left:
        size = rng.randint(1, NOISE_MAX)
        if baud is not None:
            size = min(size, max(1, int(baud / 10 * PACE_SLICE)))
        size = min(size, left)
        left -= size
        if left:
            least += (size * 10 / baud if baud else 0.0) + rng.uniform(*NOISE_GAP)
    return least


def test_noise_fragments_are_small_and_apart(monkeypatch):
    """Mutants: _flush registering the writer while a noise gap's timer is pending (`want`
    without `self._noise_timer is None`), and write() flushing although that timer is
    pending: fragments then went out back to back.  transport.py: "fragments of 1..16 bytes
    ... 1-5 ms apart" -- with a seed the draws are known, so the last byte cannot come
    before the sum of the gaps; and no write is bigger than NOISE_MAX."""
    recorder = WriteSizes()
    monkeypatch.setattr(transport, "os", recorder)

    async def main():
        h = Hosted()
        recorder.master = h.port.master
        try:
            h.port.set_noise(True, seed=7)
            start = asyncio.get_running_loop().time()
            h.port.write(b"z" * 200)
            for _ in range(10):                      # more output while the noise is at it
                h.port.write(b"y" * 10)
            got, last = await arrival(h, 300)
            assert got == b"z" * 200 + b"y" * 100
            assert last - start >= noise_plan(7, 300) - 0.002
            assert max(recorder.sizes) <= NOISE_MAX and len(recorder.sizes) >= 300 // NOISE_MAX
        finally:
            h.close()
    run(main)


def test_noise_at_a_baud_rate_waits_for_the_line_then_the_gap():
    """Mutant: _flush scheduling the next noisy fragment after the gap alone, not after the
    line's busy time plus the gap.  transport.py: "With uart_noise too, ... the next one
    starts after this one has gone out at the rate plus the noise's gap"."""
    async def main():
        h = Hosted()
        try:
            h.port.set_baud(9600)
            h.port.set_noise(True, seed=3)
            start = asyncio.get_running_loop().time()
            h.port.write(b"q" * 200)
            got, last = await arrival(h, 200)
            assert got == b"q" * 200
            assert last - start >= noise_plan(3, 200, 9600) - 0.002
        finally:
            h.close()
    run(main)


def test_noise_turned_off_mid_output_sends_the_rest_at_once():
    """Mutant: set_noise(False) cancelling the pending fragment's timer without flushing:
    the rest of the output waited for the next write -- a stall.  Its docstring: "off: the
    rest goes out at once"."""
    async def main():
        h = Hosted()
        try:
            h.port.set_noise(True, seed=1)
            h.port.write(b"r" * 300)
            assert 0 < h.port.backlog < 300
            h.port.set_noise(False)
            assert await h.read_exactly(300) == b"r" * 300
        finally:
            h.close()
    run(main)


# -- the modem's drain waiters -------------------------------------------------------------------
def test_a_cancelled_drain_wait_does_not_break_the_next_drain_or_hang_up():
    """Mutant: _wake_drain_waiters resolving every future, cancelled ones too
    (InvalidStateError): a paced answer's task cancelled while it waited left its future
    behind, and the next output_drained / host_hangup raised before the others were woken
    and the hang-up reached the interpreter and the "hangup" listeners."""
    async def main():
        modem = Modem(load_profile("ec2x"))
        modem.attach(lambda data: None, asyncio.get_running_loop())
        hangups: list[int] = []
        modem.on("hangup", lambda: hangups.append(1))
        gone = modem.drained()
        gone.cancel()
        waiting = modem.drained()
        modem.output_drained()
        assert waiting.done()
        gone = modem.drained()
        gone.cancel()
        waiting = modem.drained()
        modem.host_hangup()
        assert waiting.done() and hangups == [1]
    run(main)
