"""StubPort: a stand-in for the pty port a Modem is attached to (emulator.modem.modem.HostPort),
for driving a modem sans-IO -- no pty, no loop: Modem.attach(out.extend, port=StubPort(...))
and modem.feed(bytes).  Each answer comes from a callable the test gives (defaults: no
backlog, nothing waiting, cannot tell what the host has read); set_reading's calls are
recorded in .reading (False: the modem holds the host back)."""
from __future__ import annotations

from typing import Callable


class StubPort:
    def __init__(self, backlog: Callable[[], int] = lambda: 0,
                 accepted: Callable[[], int] = lambda: 0,
                 has_read: Callable[[int], bool | None] = lambda upto: None,
                 waiting: Callable[[], int] = lambda: 0) -> None:
        self._backlog, self._accepted = backlog, accepted
        self._has_read, self._waiting = has_read, waiting
        self.reading: list[bool] = []

    @property
    def backlog(self) -> int:
        return self._backlog()

    @property
    def accepted(self) -> int:
        return self._accepted()

    def set_reading(self, on: bool) -> None:
        self.reading.append(on)

    def host_has_read(self, upto: int) -> bool | None:
        return self._has_read(upto)

    def input_waiting(self) -> int:
        return self._waiting()

    def look_for_host(self) -> bool:
        return True                       # (a sans-IO host is always there)

    def host_holds(self) -> bool:
        return True
