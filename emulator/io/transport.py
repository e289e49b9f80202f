"""The pty a host opens as its serial port.

A pty master sees EIO/POLLHUP while no process holds the slave side open.  The
port treats that as the host hanging up: reading stops, pending output is
dropped (a UART with nothing attached loses it too), the modem abandons any
half-entered data prompt, and a poll every 50 ms notices the next open.  So the
host may close and reopen the device any number of times and always meets a
modem in command state, never stale bytes from a previous session.

Output is written non-blocking; what the pty cannot take yet waits in a buffer.
`backlog` and the on_drain callback let producers (direct-push sockets) hold
back instead of growing that buffer without bound.  Past `max_backlog` (a host
that never reads while echo or URCs keep coming) the oldest bytes are dropped, as
a UART whose receiver stalls loses them, with one warning per stall.

Pacing (`baud`, the CLI's --baud): output leaves no faster than a UART at that
rate sends it, 10 bits a byte, in slices of about PACE_SLICE seconds on the
loop's (real) time.  The bytes not sent yet wait in the same buffer, so
`backlog`, on_drain and the max_backlog bound see them.  With uart_noise too,
fragments are the noise's sizes and the next one starts after this one has gone
out at the rate plus the noise's gap.  set_baud(rate, after_queued=True) (AT+IPR)
switches once the bytes queued now have gone out at the old rate.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import random
import select
import stat
import struct
import termios
import tty
import weakref
from pathlib import Path
from typing import Callable

from emulator.logsafe import get_logger

log = get_logger("emulator.pty")

POLL_INTERVAL = 0.05
HIGH_WATER = 64 * 1024            # backlog above this ...
LOW_WATER = 16 * 1024             # ... then below this: on_drain()
MAX_BACKLOG = 1 << 20             # default bound of unread output (profile serial.output_backlog)
READ_BATCH = 64 * 1024            # host bytes taken in one wake-up at most (then the loop's
                                  # other work: sockets, timers)
SLICE = 16 * 1024                 # ... handed to the modem in slices of this size (one TLS
                                  # record); between two pty reads, a look whether another
                                  # port's host is waiting (fairness between modems)
SHORT_READ = 2048                 # a read shorter than this emptied the pty (it gives ~4 KiB)
NOISE_MAX = 16                    # uart_noise: fragments of 1..16 bytes ...
NOISE_GAP = (0.001, 0.005)        # ... 1-5 ms apart
PACE_SLICE = 0.01                 # pacing: at most this long's worth of bytes per write


class LinkError(Exception):
    pass


class _LoopPorts:
    """The ports on one loop in an epoll of their own, which says without a loop turn
    whether another port's host has written (a streaming modem then lets it go first).

    One-shot entries: a port is reported once, then not looked at again until it is armed
    anew, after a wake-up of its own that emptied its pty (or when it attaches / reads
    again).  So a streaming port's look costs ~1 us however busy its own pty is (polling a
    pty that is being written to waits for its buffer work: ~50 us a look when the own port
    stayed in the set)."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.ports: dict[int, PtyPort] = {}

    def others_ready(self, me: "PtyPort") -> bool:
        ready = False
        for fd, events in self.epoll.poll(0):
            if fd != me.master and events & select.EPOLLIN:
                port = self.ports.get(fd)
                if port is not None and port.wants_input():
                    ready = True          # (the others reported stay disarmed until they
        return ready                      # run: the loop's own poll serves them anyway)

    def arm(self, port: "PtyPort") -> None:
        # A port alone on its loop is looked at by nobody (_join arms it when a second comes).
        if len(self.ports) > 1 and self.ports.get(port.master) is port:
            try:
                self.epoll.modify(port.master, _ONE_SHOT)
            except OSError:
                pass


_ONE_SHOT = select.EPOLLIN | select.EPOLLONESHOT


_LOOP_PORTS: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPorts]" = weakref.WeakKeyDictionary()


def _join(port: "PtyPort") -> _LoopPorts:
    ports = _LOOP_PORTS.get(port.loop)
    if ports is None:
        ports = _LOOP_PORTS[port.loop] = _LoopPorts()
    ports.epoll.register(port.master, _ONE_SHOT)
    ports.ports[port.master] = port
    if len(ports.ports) == 2:            # the first port was alone: it was never re-armed
        for other in list(ports.ports.values()):
            ports.arm(other)
    return ports


def _leave(port: "PtyPort") -> None:
    ports = _LOOP_PORTS.get(port.loop)
    if ports is None or ports.ports.get(port.master) is not port:
        return
    del ports.ports[port.master]
    try:
        ports.epoll.unregister(port.master)
    except OSError:
        pass
    if not ports.ports:                  # the last port of this loop: no fd left behind
        ports.epoll.close()
        del _LOOP_PORTS[port.loop]


class PtyPort:
    def __init__(self, loop: asyncio.AbstractEventLoop, on_data: Callable[[bytes], None],
                 link: Path | None = None, on_hangup: Callable[[], None] | None = None,
                 on_drain: Callable[[], None] | None = None, max_backlog: int = MAX_BACKLOG,
                 hangup_on_close: bool = True, on_attach: Callable[[], None] | None = None) -> None:
        self.loop = loop
        # False (--uart): a UART with no hang-up line -- the module gets every byte on its RX
        # line whoever sent it and whenever the sender left, so nothing the host wrote is
        # dropped at or after its close (on_hangup still tells the modem the port closed).
        self.hangup_on_close = hangup_on_close
        self.on_data = on_data
        self.on_hangup = on_hangup
        self.on_attach = on_attach        # a host opened the port (before its first bytes)
        self.on_drain = on_drain
        try:
            self.master, slave = os.openpty()
        except OSError as exc:
            # (ENOSPC once kernel.pty.max ptys are open: not a full disk -- say which file)
            raise OSError(exc.errno, f"no pseudo-terminal left: {exc.strerror} (the kernel's pty "
                                     f"limit, /proc/sys/kernel/pty/max, or /dev/pts)", "/dev/ptmx") from None
        tty.setraw(slave)                 # kept by the pty while the master is open
        # The master side raw too: its line discipline then passes the host's bytes on
        # without per-byte processing (a quarter more throughput on this machine).
        tty.setraw(self.master)
        self.device = os.ttyname(slave)
        os.close(slave)                   # holding it would hide the host's hang-ups
        os.set_blocking(self.master, False)
        self._poll = select.poll()
        self._poll.register(self.master, select.POLLHUP)
        self.link = Path(link) if link else None
        self.attached = False
        self.reading = True               # False: host bytes stay in the pty (set_reading)
        self.received = 0                 # bytes read from the host so far (tests sync on it)
        self.accepted = 0                 # bytes write() took for the host so far (host_has_read)
        self._out = bytearray()
        self.max_backlog = max(max_backlog, HIGH_WATER)
        self._dropped = 0                 # bytes dropped in the current stall (0: not stalled)
        # Told of output given to write() that never reaches a host: (back, count, why) --
        # the lost run starts `back` bytes before the end of all output so far (a trace
        # marks it; None: nobody listens).
        self.on_output_lost = None
        self._writing = False
        self._above_high_water = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        # UART noise (the control API's "uart_noise"): output leaves in random-sized
        # fragments with small gaps, so a host that assumes one read = one line fails.
        self.noise: random.Random | None = None
        self._noise_timer: asyncio.TimerHandle | None = None   # the next fragment (noise or pacing)
        # Pacing (--baud): None = unpaced.  _line_free: loop.time() when the bytes
        # written so far have left at the rate; _switch: [bytes still to go at the old
        # rate, new rate] of an AT+IPR change.
        self.baud: int | None = None
        self._line_free = 0.0
        self._switch: list | None = None
        self._link_lock: int | None = None
        if self.link:
            self._link_lock = make_link(self.link, self.device)
        self._peers = _join(self)
        self._held = b""                  # read, not yet handed on (stepped aside meanwhile)
        self._hangup_due = False          # write() saw the host gone: _hangup_if_gone is queued
        self._hup_watch: select.epoll | None = None    # the hang-up, while reading is off
        self._hup_watching = False
        self._watch_for_host()

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.device

    @property
    def backlog(self) -> int:
        return len(self._out)

    # -- host presence ---------------------------------------------------------
    def _watch_for_host(self) -> None:
        if self._closed or self.attached:
            return                        # (a write during the hang-up may have attached a new host)
        if not self._attach_if_present():
            self._timer = self.loop.call_later(POLL_INTERVAL, self._watch_for_host)

    def look_for_host(self) -> bool:
        """Look for a host now rather than at the next poll (POLL_INTERVAL): for an in-process
        user that has just opened the port (tests call it through BackgroundEmulator.run),
        whose first bytes would otherwise wait up to 50 ms.  True when a host is attached."""
        if self._closed:
            return False
        return self.attached or self._attach_if_present()

    def host_holds(self) -> bool:
        """Output written now reaches a host: one holds the port open (looked for now if not
        attached yet; a close whose hang-up is not handled yet counts as gone -- what is
        written now would be dropped), or the port is a UART with no hang-up (--uart), whose
        output goes to the wire whoever listens."""
        if not self.hangup_on_close:
            return True
        return self.look_for_host() and not self._host_gone()

    def _host_gone(self) -> bool:
        """Nobody holds the slave side open (POLLHUP on the master)."""
        for _, ev in self._poll.poll(0):      # (one fd registered: asked on every write)
            return bool(ev & select.POLLHUP)
        return False

    def _attach_if_present(self) -> bool:
        """Attach when a host holds the slave side open (no POLLHUP); False: nobody there.
        What the pty holds is read *before* the look: read after a look that found nobody,
        it could be a host's that opened the port and wrote in between (the look and the
        read are two syscalls; another thread may run between them), and be dropped as the
        departed host's.  Read first, it is the departed host's only if nobody is there
        after; otherwise it is handed on first."""
        early = self._read_all() if self.reading else b""
        if self._host_gone():
            if not self.hangup_on_close:
                if self.reading and (self._held or early):   # (a UART: they reached the module;
                    # held back, they wait for the reading to resume) -- after what a step
                    # aside read before them, in the order the host wrote them
                    self._hand_on_later(self._held + early)
                    self._held = b""
            else:
                self._drop_departed(early if self.reading else self._read_all())
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.attached = True
        log.debug("host opened %s", self.device)
        if self.on_attach is not None:
            self.on_attach()
        if early:
            self._held += early           # (first in line, a loop turn later)
        if self.reading:
            self.loop.add_reader(self.master, self._readable)
            self._peers.arm(self)
            if self._held:
                self.loop.call_soon(self._hand_on_held)
        else:
            self._watch_paused()          # (held back before this host came)
        return True

    def set_reading(self, on: bool) -> None:
        """Flow control towards the host: while off, its bytes stay in the pty (whose
        buffer then blocks the host's writes), as a UART holds a sender back with RTS."""
        if on == self.reading:
            return
        self.reading = on
        if self._closed or not self.attached:
            return
        if on:
            self._stop_hangup_watch()
            self.loop.add_reader(self.master, self._readable)
            self._peers.arm(self)
            if self._held:                # (a loop turn later: never inside the caller)
                self.loop.call_soon(self._resume_reading)
        else:
            self.loop.remove_reader(self.master)
            self._watch_paused()

    def _watch_paused(self) -> None:
        """While the host's bytes are held back nothing reads the pty, so its hang-up (an EIO
        on read) would go unseen, and a host opening the port right after would be taken
        for the one that left (its unread answers, its queued commands): an epoll of the
        port's own on the master, asking for nothing, reports the hang-up (EPOLLHUP always
        is, level-triggered: one already there fires on the next loop turn, never inside
        the caller that paused) as a reader of the loop."""
        if self._closed or not self.attached or self.reading or self._hup_watching:
            return
        if self._hup_watch is None:
            self._hup_watch = select.epoll()
            self._hup_watch.register(self.master, 0)
        self.loop.add_reader(self._hup_watch.fileno(), self._hangup_if_gone)
        self._hup_watching = True

    def _stop_hangup_watch(self) -> None:
        if self._hup_watching:
            self._hup_watching = False
            self.loop.remove_reader(self._hup_watch.fileno())

    def _hangup_if_gone(self) -> None:
        self._hangup_due = False
        if not (self.attached and not self._closed and self._host_gone()):
            return
        if self.reading:
            # (write() saw the hang-up first.)  What the host wrote before it closed is
            # still in the pty -- the kernel keeps it readable until drained, then says
            # EIO -- and reached the module as on a USB port: read and handed on first,
            # as the reader does, whose EIO then hangs up.
            self._readable()
            return
        if self.hangup_on_close:
            # Held back (flow control: a full transparent connection, AT+IFC): what the host
            # wrote before it closed is still in the pty, and reached the module all the
            # same (a USB port's close waits for its output to drain): read to its end and
            # handed on first -- beyond the modem's wish for input, a pty's worth at most --
            # then the hang-up.  (A UART's wait in the pty for the reading to resume.)
            # Read first, then look again (as _attach_if_present): a host that opened the port
            # and wrote between the look above and the read is one close-and-reopen in the
            # same instant -- its bytes must not run for the one that left.
            rest = self._read_all()
            if not self._host_gone():
                self._held += rest        # (first in line when the reading resumes)
                return
            rest, self._held = self._held + rest, b""
            if rest:
                self._deliver(rest)
            if not (self.attached and not self._closed):
                return                    # (handing on hung up or closed the port itself)
        self._hangup()

    def _hangup(self) -> None:
        self._stop_hangup_watch()
        if self._held and not self.hangup_on_close:
            if self.reading:                      # (a UART: they reached the module; held
                self._hand_on_later(self._held)   # back, they wait for the next host's attach)
                self._held = b""
        elif self._held:                  # read before a step aside: the next host's they are not
            log.info("%s: %d bytes of the host that left, not handed on, dropped", self.device, len(self._held))
            self._held = b""
        self.loop.remove_reader(self.master)
        self.reading = True               # the next host starts with nothing held back
        if self._writing:
            self.loop.remove_writer(self.master)
            self._writing = False
        self.attached = False
        dropped = 0
        if not self._paces_into_void():
            dropped = len(self._out)
            self._out.clear()
            self._dropped = 0
            self._above_high_water = False    # (no drain to report to the next host)
            if self._switch is not None:
                self._apply_switch()
        # (--uart --baud: what the UART has not sent yet goes on leaving at the rate -- to
        # nobody, or to a host that opens the port meanwhile: _flush's timer carries on)
        unread = self._discard_unread_output()
        self._lost(unread + dropped + len(self._out), unread + dropped, "the host closed the port")
        log.info("host closed %s%s", self.device, f" ({dropped} output bytes dropped)" if dropped else "")
        if self.on_hangup is not None:
            self.on_hangup()
        self._watch_for_host()

    def _paces_into_void(self) -> bool:
        """A UART with no hang-up line and a rate (--uart --baud): output goes on leaving at
        the rate while nobody holds the port, and is lost, as a UART's with no listener."""
        return not self.hangup_on_close and self.baud is not None

    def _hand_on_later(self, data: bytes) -> None:
        """Bytes of a host that has gone, for a modem that does not see hang-ups (--uart):
        handed on a loop turn later (never inside write(), which looks for a host)."""
        self.loop.call_soon(lambda: None if self._closed else self._deliver(data))

    def _read_all(self) -> bytes:
        """Everything the pty holds from the host side now."""
        pieces = []
        while True:
            try:
                piece = os.read(self.master, 65536)
            except OSError:               # EAGAIN (nothing), EIO (the usual hung-up answer)
                break
            if not piece:
                break
            pieces.append(piece)
        return b"".join(pieces)

    def _drop_departed(self, data: bytes) -> None:
        """Bytes a host wrote and then closed the port before it was ever seen (between two
        looks for a host): nobody is there to answer, and the next host must not have them
        run for it."""
        if data:
            log.info("%s: %d bytes from a host that closed before it was seen, dropped", self.device, len(data))

    def _discard_unread_output(self) -> int:
        """What the departed host never read stays queued on the slave side and
        would greet the next host: flush it through a brief open of the slave, which
        also resets what a UART's last close resets (_reset_line).  Returns how many
        bytes were flushed (0 when that is not known)."""
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return 0
        unread = 0
        try:
            # (before the reset: a line discipline a departed host left may refuse it.  Only
            # what the line discipline holds is seen, 4095 bytes at most: the rest waits in the
            # pty's buffers, and reading it through to count it would have a departed host's
            # ECHO send it back to the modem as a newcomer's input -- it is flushed uncounted;
            # in canonical mode whole lines only are counted -- documented limits)
            try:
                unread = _ioctl_int(fd, termios.FIONREAD)
            except OSError:
                pass
            _reset_line(fd)
            termios.tcflush(fd, termios.TCIFLUSH)
        except (termios.error, OSError):
            pass
        finally:
            os.close(fd)
        return unread

    def _lost(self, back: int, count: int, why: str) -> None:
        if count > 0 and self.on_output_lost is not None:
            self.on_output_lost(back, count, why)

    # -- data ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self._closed or not data:
            return
        # A host that opened the port since the last look (the watch polls every
        # POLL_INTERVAL) gets what is written now: a URC right after a reopen is not lost.
        if not self.attached and not self._attach_if_present():
            if not self._paces_into_void():
                self._lost(len(data), len(data), "no host has the port open")
                return
            # (--uart --baud: the module's UART sends it at the rate, to nobody for now)
        elif self._host_gone():
            # The host closed the port after writing and before this answer (its bytes were
            # read, the hang-up not yet): written now, the answer would wait in the pty and
            # greet the next host.  Dropped, as unread output is at a hang-up; the reader
            # sees the hang-up next.
            if not self._hangup_due:
                self._hangup_due = True
                self.loop.call_soon(self._hangup_if_gone)
            self._lost(len(data), len(data), "the host closed the port")
            return
        self.accepted += len(data)
        if (not self._out and not self._writing and self._noise_timer is None
                and self.noise is None and self.baud is None):
            # Nothing queued, unpaced: straight to the pty (an answer is one write(2),
            # without a trip through the backlog); what it does not take goes the
            # general way below, which also handles EAGAIN and a hang-up's EIO.
            try:
                n = os.write(self.master, data)
            except OSError:
                n = 0
            if n == len(data):
                return
            data = data[n:]
        self._out += data
        if len(self._out) > HIGH_WATER:
            self._above_high_water = True
        if len(self._out) > self.max_backlog:
            excess = len(self._out) - self.max_backlog
            self._lost(len(self._out), excess, "the host did not read: the backlog was full")
            del self._out[:excess]
            if self._switch is not None:
                self._switch[0] -= excess
                if self._switch[0] <= 0:
                    self._apply_switch()
            if not self._dropped:
                log.warning("host is not reading %s: output past %d unread bytes is dropped, "
                            "oldest first", self.device, self.max_backlog)
            self._dropped += excess
        if not self._writing and self._noise_timer is None:
            self._flush()

    def input_waiting(self) -> int:
        """The host's bytes not handed on yet: read and held, or still in the pty (FIONREAD
        on the master; one ioctl)."""
        try:
            self._poll.poll(0)                    # (what _flushed does, with the port's own poll)
            queued = _ioctl_int(self.master, termios.FIONREAD)
        except OSError:
            queued = 0
        return len(self._held) + queued

    def host_has_read(self, upto: int) -> bool | None:
        """Whether the host has read the output up to `upto` (an `accepted` count): none of
        it waits in this port's buffer nor on the slave side.  None when the pty cannot tell
        (the slave cannot be opened: a host's TIOCEXCL).  For rare questions only -- the
        kernel is asked through a brief open of the slave side (FIONREAD)."""
        behind = self.accepted - upto             # bytes written after the mark
        if len(self._out) > behind:
            return False                          # part of it is still in the buffer
        try:
            fd = os.open(self.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            _flushed(fd)
            waiting = _ioctl_int(fd, termios.FIONREAD)
        except OSError:
            return None
        finally:
            os.close(fd)
        return len(self._out) + waiting <= behind

    def set_noise(self, on: bool, seed: int = 0) -> None:
        """Fragments of 1..NOISE_MAX bytes, NOISE_GAP seconds apart (seeded: the same
        fragments every run); off: the rest goes out at once."""
        self.noise = random.Random(seed) if on else None
        if not on and self._noise_timer is not None:
            self._noise_timer.cancel()
            self._noise_timer = None
            if not self._writing:
                self._flush()

    def set_baud(self, rate: int | None, after_queued: bool = False) -> None:
        """Pace output at `rate` baud (10 bits a byte); None or 0: unpaced.
        after_queued: only once the bytes queued now have gone out (at the old rate)."""
        rate = rate or None
        if after_queued and self._out and self.baud is not None:
            self._switch = [len(self._out), rate]
            return
        self._switch = None
        self.baud = rate
        if self._noise_timer is not None:          # re-time the next fragment at the new rate
            self._noise_timer.cancel()
            self._noise_timer = None
            if not self._closed and not self._writing:
                self._flush()

    def _apply_switch(self) -> None:
        _, self.baud = self._switch
        self._switch = None
        log.info("%s now paced at %s", self.device, f"{self.baud} baud" if self.baud else "full speed")

    def _schedule_next(self, delay: float) -> None:
        self._noise_timer = self.loop.call_later(max(delay, 0.0), self._noise_due)

    def _noise_due(self) -> None:
        self._noise_timer = None
        if not self._closed and not self._writing:
            self._flush()

    def discard_output(self) -> None:
        """The module lost power (the control API's reboot): what its UART had not sent yet
        is never sent -- an answer still going out at --baud (or to a host not reading) is
        cut where the restart found it.  (AT+CFUN=1,1 answers OK first: not through here.)"""
        if not self._out:
            return
        log.info("%s: the modem restarted, %d unsent output bytes dropped", self.device, len(self._out))
        self._lost(len(self._out), len(self._out), "the modem restarted before they left")
        self._out.clear()
        self._dropped = 0
        self._above_high_water = False    # (no drain to report: what waited for one is gone)
        if self._switch is not None:
            self._apply_switch()
        self._flush()                     # (the writer off)

    def _flush(self) -> None:
        noise = self.noise
        while self._out:
            baud = self.baud
            if baud is not None:
                wait = self._line_free - self.loop.time()
                if wait > 0:               # the line is still sending earlier bytes
                    self._schedule_next(wait)
                    break
            size = noise.randint(1, NOISE_MAX) if noise else 65536
            if baud is not None:
                size = min(size, max(1, int(baud / 10 * PACE_SLICE)))
                if self._switch is not None:
                    size = min(size, self._switch[0])
            try:
                if self.attached:
                    n = os.write(self.master, self._out[:size])
                else:                      # (only --uart --baud: the slice leaves for nobody)
                    n = min(size, len(self._out))
                    self._lost(len(self._out), n, "no host had the port open (it left at the rate)")
            except BlockingIOError:
                break                      # the pty is full: add_writer below
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                break                      # hung up: the reader side notices
            del self._out[:n]
            if baud is not None:
                self._line_free = max(self._line_free, self.loop.time()) + n * 10 / baud
                if self._switch is not None:
                    self._switch[0] -= n
                    if self._switch[0] <= 0:
                        self._apply_switch()
            if noise is not None and self._out:
                busy = self._line_free - self.loop.time() if baud is not None else 0.0
                self._schedule_next(busy + noise.uniform(*NOISE_GAP))
                break
        if self._dropped and not self._out:
            log.info("host caught up on %s: %d output bytes were dropped", self.device, self._dropped)
            self._dropped = 0
        want = bool(self._out) and self._noise_timer is None
        if want and not self._writing:
            self.loop.add_writer(self.master, self._flush)
        elif not want and self._writing:
            self.loop.remove_writer(self.master)
        self._writing = want
        if self._above_high_water and len(self._out) < LOW_WATER:
            self._above_high_water = False
            if self.on_drain is not None:
                self.on_drain()

    def read_now(self) -> None:
        """Take what the host has written so far, before an event it caused after writing
        (a DTR drop): a read that finds nothing yet has the kernel hand over the pty input
        still on its way (n_tty_read flushes the port's buffer work), which the loop's poll
        would report only later."""
        if not self._closed and self.attached and self.reading:
            self._readable()

    def _readable(self) -> None:
        drained = True
        try:
            drained = self._read_some()
        finally:
            if drained:                   # other ports see this one's next input again (a
                self._peers.arm(self)     # port with more to read comes back to it anyway)

    def _read_some(self) -> bool:
        """One wake-up's reading; False when it stopped with more in the pty."""
        # A pty read returns at most ~4 KiB: take what is there, up to READ_BATCH, in one
        # wake-up, handed on SLICE bytes at a time, so a host writing fast costs one feed
        # (one TLS record, one socket write) per slice rather than per 4 KiB.  Between two
        # reads, when another port's host has written (another modem's AT), this one steps
        # aside for a loop turn (what it read waits in _held, first in line) so that one is
        # served first, whatever order the poll reports: one busy host cannot starve the
        # other modems for longer than one slice's work.
        chunks: list[bytes] = []
        size = taken = 0
        if self._held:
            chunks.append(self._held)
            size = len(self._held)
            self._held = b""
        hung_up = False
        while True:
            more = False
            # Never more than the slice lacks: a pty read returns ~4 KiB, but 64 KiB when
            # the reader fell behind (a loaded machine), which would pass a neighbour's turn.
            want = SLICE - size if size < SLICE else SLICE
            try:
                piece = os.read(self.master, want)
            except BlockingIOError:
                piece = None
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                piece = b""
            if piece:
                chunks.append(piece)
                size += len(piece)
                # A read shorter than SHORT_READ emptied the pty: the next would only say
                # EAGAIN (and the reader is level-triggered: bytes that come now wake it again).
                more = len(piece) >= min(SHORT_READ, want)
            elif piece is not None:
                hung_up = True
            if size and (size >= SLICE or not more):
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                taken += size
                size = 0
                self._deliver(data)
                if not more or not self.wants_input():
                    break
                if self._peers.others_ready(self):
                    self._step_aside()
                    return False
                if taken >= READ_BATCH:   # (after the look: the loop's next turn may serve
                    return False          # this port before one that is waiting)
            elif not more:
                break
            elif self._peers.others_ready(self):
                self._held = b"".join(chunks)
                self._step_aside()
                return False
        if hung_up and not self._closed and self.attached:
            self._hangup()
        return True

    def wants_input(self) -> bool:
        """A host is attached and its bytes are being read (not held back, not closed)."""
        return self.attached and self.reading and not self._closed

    def _step_aside(self) -> None:
        """Stop reading for one loop turn (reader removed, re-added by call_soon): the
        ports that became ready meanwhile are served before this one's next slice."""
        self.loop.remove_reader(self.master)
        self.loop.call_soon(self._resume_reading)

    def _resume_reading(self) -> None:
        if self.reading and self.attached and not self._closed:
            self.loop.add_reader(self.master, self._readable)
            if self._held:
                # What the step aside held may have been all the pty had (a piece of
                # SHORT_READ or more emptied it too): the level-triggered reader would not
                # fire again before the host writes more.  Handed on, first in line, but a
                # loop turn later: the ports this one stepped aside for were reported by
                # this turn's poll and run after this callback; reading here would take a
                # whole READ_BATCH before them (their one-shot report is already used).
                self.loop.call_soon(self._hand_on_held)

    def _hand_on_held(self) -> None:
        if self._held and self.wants_input():
            self._readable()

    def _deliver(self, data: bytes) -> None:
        self.received += len(data)
        try:
            self.on_data(data)
        except Exception:                 # nothing the host sends may stop the port
            log.exception("modem failed on %d input bytes", len(data))   # they may be key material

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer:
            self._timer.cancel()
        if self._noise_timer is not None:
            self._noise_timer.cancel()
        self._stop_hangup_watch()
        if self._hup_watch is not None:
            self._hup_watch.close()
        self._held = b""
        if self.attached:
            self.loop.remove_reader(self.master)
        if self._writing:
            self.loop.remove_writer(self.master)
        if self.link:
            remove_link(self.link, self.device, self._link_lock)
            self._link_lock = None
        _leave(self)
        os.close(self.master)


def _flushed(fd: int) -> None:
    """Bytes written to one side of a pty reach the other side's read buffer a moment
    later, moved by a kernel worker from the pty's flip buffer: until then FIONREAD does not
    count them.  A poll of the reading side waits for that move when the read buffer is
    empty (n_tty_poll flushes only then): FIONREAD after it counts every byte whose write has
    returned, when none was waiting before -- the questions asked here (is the host's next
    byte there yet, has it read the prompt) are about such a buffer."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    poller.poll(0)


def link_lock_path(link: Path) -> Path:
    """The lock its owner holds beside a --link (".<name>.lock", holding the owner's pid)."""
    return link.with_name(f".{link.name}.lock")


def make_link(link: Path, target: str) -> int | None:
    """Create link -> target; returns the fd of the link's lock, held while the link is ours
    (remove_link releases it).  The lock beside the link (link_lock_path) tells a link of a
    running emulator (locked: refused) from one whose emulator died (kill -9: its lock is
    free, its pid still written): that one is taken over, whatever pty its number now
    names (another program may have the freed /dev/pts/N by then).  A link without such a
    lock is replaced only when stale: to a vanished pty, or to this very pty (the kernel
    gave the freed number to us)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    lock_path = link_lock_path(link)
    lock = _take_link_lock(link, lock_path)
    owner_died = lock is not None and os.pread(lock, 32, 0).strip().isdigit()
    made = False
    try:
        if link.is_symlink():
            current = os.readlink(link)
            if current.startswith("/dev/pts/") and (owner_died or current == target or not os.path.exists(current)):
                link.unlink()
            else:
                raise LinkError(f"{link} exists and points to {current}: not replacing it")
        elif link.exists():
            raise LinkError(f"{link} exists and is not a link: not replacing it")
        if lock is not None:
            # The pid first, then the link: killed in between, the lock names a dead
            # emulator and no link is left; never a link beside an empty lock, which no
            # later start could tell from another program's link.
            os.ftruncate(lock, 0)
            os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
        os.symlink(target, link)
        made = True
    except BaseException:
        if made:
            _unlink_quietly(link)
        if lock is not None:
            if not owner_died:
                _unlink_quietly(lock_path)    # (made just now: not left behind)
            os.close(lock)
        raise
    return lock


def _take_link_lock(link: Path, lock_path: Path) -> int | None:
    """The link's lock, opened without following a symlink (a planted one would have the
    pid written over its target), a regular file, flock'd; the file on disk, not one a
    stopping emulator unlinked meanwhile.  None: no lock can be made here (a directory we
    cannot write: the link fails too); LinkError: a running emulator holds it, or the
    path is not a plain file."""
    for _ in range(5):
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                           | os.O_NONBLOCK, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LinkError(f"{lock_path} is a symbolic link: not using it as {link}'s lock") from None
            if exc.errno in (errno.EISDIR, errno.ENXIO):   # (a directory, a unix socket: no file, as a FIFO is)
                raise LinkError(f"{lock_path} is not a plain file: not using it as {link}'s lock") from None
            return None
        try:
            info = os.fstat(lock)
            if not stat.S_ISREG(info.st_mode):
                raise LinkError(f"{lock_path} is not a plain file: not using it as {link}'s lock")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(lock, 32, 0).decode("ascii", "replace").strip()
                raise LinkError(f"{link} is the link of a running modem-emulator"
                                f"{f' (pid {holder})' if holder.isdigit() else ''}: not replacing it") from None
            try:
                on_disk = os.stat(lock_path, follow_symlinks=False)
            except FileNotFoundError:
                on_disk = None
            if on_disk is not None and (on_disk.st_dev, on_disk.st_ino) == (info.st_dev, info.st_ino):
                return lock
        except BaseException:
            os.close(lock)
            raise
        os.close(lock)                 # unlinked by a stopping emulator: take the new one
    return None


def remove_link(link: Path, target: str, lock: int | None = None) -> None:
    try:
        if link.is_symlink() and os.readlink(link) == target:
            link.unlink()
    except OSError as exc:
        log.warning("could not remove %s: %s", link, exc)
    if lock is not None:
        # Only the lock file this emulator holds: after the link's directory was removed and
        # made again, the lock on that path is another running emulator's.
        lock_path = link_lock_path(link)
        try:
            held, on_disk = os.fstat(lock), os.stat(lock_path, follow_symlinks=False)
            if (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino):
                _unlink_quietly(lock_path)
        except OSError:
            pass                        # (gone already: nothing of ours to remove)
        os.close(lock)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _ioctl_int(fd: int, request: int) -> int:
    """An ioctl that reads one int (FIONREAD, TIOCGETD); OSError as the ioctl raises it."""
    return struct.unpack("i", fcntl.ioctl(fd, request, b"\0" * 4))[0]


def _reset_line(fd: int) -> None:
    """A real UART's tty is released at its last close and the next open starts afresh; a
    pty's slave lives as long as the emulator holds the master, so what a departed host left
    in it would stay for every later one.  Reset what the next open of a UART would not see;
    its termios, which a UART keeps, stay as they are and are never written here (a rewrite
    raced with a host opening at that instant: the departed host's settings, put back, undid
    the new host's -- a cooked host's ICRNL came back on the next one):
    - exclusive mode (TIOCEXCL) and output stopped with tcflow(TCOOFF);
    - a line discipline other than N_TTY (pppd, slattach, ldattach killed before restoring
      it): with it the port is dead (tcgetattr EINVAL, the modem's answers swallowed);
    - output stopped by an XOFF that the host's IXON took from the modem's output (binary
      socket data): the next host's writes would never leave.  tcflow(TCOOFF) then TCOON
      restarts it (TCOON alone undoes only a TCOOFF; after one, output stopped either way)."""
    try:
        if _ioctl_int(fd, termios.TIOCGETD) != termios.N_TTY:
            fcntl.ioctl(fd, termios.TIOCSETD, struct.pack("i", termios.N_TTY))
            log.info("%s: a line discipline the host left was reset to N_TTY", os.ttyname(fd))
    except OSError:
        pass
    try:
        fcntl.ioctl(fd, termios.TIOCNXCL)    # TIOCEXCL (Qt, gpsd) left set: EBUSY for others
    except OSError:
        pass
    try:
        termios.tcflow(fd, termios.TCOOFF)
        termios.tcflow(fd, termios.TCOON)
    except termios.error:
        pass
