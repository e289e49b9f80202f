"""transport._reset_line (run on the slave at every hang-up) against a host opening at that
instant: whatever the reset does, a new host's tcsetattr landing between any two of its
syscalls stands -- the reset never writes termios back.  (It did: it cleared IXON for a moment
and put the departed host's settings back, so a raw host opening then got a cooked host's
ICRNL: the full runs at 1599dc1 and 34ab1fc read "\\n\\nOK\\n\\n" in chaos_host_11.)"""
from __future__ import annotations

import fcntl
import os
import termios
import time
import tty

import pytest

from emulator.io import transport


class _Interleaved:
    """A module stand-in (termios or fcntl) that runs `between` after its n-th call."""

    def __init__(self, module, calls: list, at: int, between):
        self._module, self._calls, self._at, self._between = module, calls, at, between

    def __getattr__(self, name):
        real = getattr(self._module, name)
        if not callable(real) or isinstance(real, type):
            return real

        def call(*args):
            try:
                return real(*args)
            finally:
                self._calls.append(name)
                if len(self._calls) == self._at:
                    self._between()
        return call


def _cooked_with_ixon(fd: int) -> None:
    a = termios.tcgetattr(fd)
    a[0] |= termios.IXON | termios.ICRNL
    a[3] |= termios.ICANON | termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _count_calls(monkeypatch, fd: int) -> int:
    calls: list = []
    monkeypatch.setattr(transport, "termios", _Interleaved(termios, calls, -1, None))
    monkeypatch.setattr(transport, "fcntl", _Interleaved(fcntl, calls, -1, None))
    transport._reset_line(fd)
    monkeypatch.undo()
    return len(calls)


def test_a_host_setting_raw_between_any_two_of_the_resets_syscalls_keeps_raw(monkeypatch):
    master, slave = os.openpty()
    try:
        _cooked_with_ixon(slave)                      # what the departed host left
        count = _count_calls(monkeypatch, slave)
        assert count >= 3                             # (places for the newcomer to land)
        for at in range(1, count + 1):
            _cooked_with_ixon(slave)
            newcomer = os.open(os.ttyname(slave), os.O_RDWR | os.O_NOCTTY)
            calls: list = []

            def newcomer_sets_raw() -> None:
                tty.setraw(newcomer)
            monkeypatch.setattr(transport, "termios", _Interleaved(termios, calls, at, newcomer_sets_raw))
            monkeypatch.setattr(transport, "fcntl", _Interleaved(fcntl, calls, at, newcomer_sets_raw))
            transport._reset_line(slave)
            monkeypatch.undo()
            attrs = termios.tcgetattr(newcomer)
            os.close(newcomer)
            assert not attrs[0] & termios.ICRNL and not attrs[3] & termios.ICANON, (
                f"the newcomer's raw mode, set after call {at} of {calls}, undone")
    finally:
        os.close(master)
        os.close(slave)


def test_output_stopped_by_an_xoff_is_restarted(monkeypatch):
    """The reset's purpose kept: the slave's output stopped by an XOFF that IXON took from the
    master's side flows again (the next host's writes reach the modem)."""
    master, slave = os.openpty()
    try:
        _cooked_with_ixon(slave)
        tty.setraw(slave)
        a = termios.tcgetattr(slave)
        a[0] |= termios.IXON
        termios.tcsetattr(slave, termios.TCSANOW, a)
        os.write(master, b"\x13")                     # XOFF in the modem's output
        time.sleep(0.1)                               # (the line discipline takes it)
        os.set_blocking(slave, False)
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.write(slave, b"AT\r")                 # stopped: the host's write cannot leave
        transport._reset_line(slave)
        os.write(slave, b"AT\r")
        time.sleep(0.1)
        assert os.read(master, 100) == b"AT\r"
    finally:
        os.close(master)
        os.close(slave)
