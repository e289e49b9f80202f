"""UDP relays on 127.0.0.1 between one client (the emulator) and a server, for DTLS and UDP
path tests: the network between them, made lossy or hostile on purpose.

UdpMiddlebox is the programmable one.  Every datagram, either way, goes through
rule(direction, index, data) -> what to forward, each item either the bytes to send at once
or (delay_s, bytes): [] drops it, two items duplicate it, a delay lets later datagrams
overtake it, other bytes rewrite it (damage, re-fragment, prepend forged records).
direction is "c2s" (client to server) or "s2c"; index counts the datagrams of that
direction from 0, as they reach the middlebox.

    def rule(direction, index, data):
        if direction == "s2c" and index == 0:
            return [(0.4, data)]            # the server's first datagram overtaken
        return [data]
    with UdpMiddlebox(server.address, rule) as box:
        ... route the emulator to box.port ...
        assert box.sent("c2s")             # what the client sent, before the rule

What an attacker sends: inject(data) sends a datagram to the client from the middlebox's own
address, which the client's connected socket accepts as the server's; inject_first=[...]
does so just before the client's first datagram goes on, so the forged datagrams reach the
client ahead of the server's first flight with no timing needed (an off-path spoofer's best
case).  other_port=True sends the server's datagrams from a second socket (another source
port), which a connected socket does not hear.

UdpDropRelay is the common case: the datagrams chosen by (direction, index) dropped.
Every datagram is logged as it arrived (Datagram: direction, index, data, dropped); delayed
copies still pending when the relay closes are never sent.
"""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass
class Datagram:
    direction: str      # "c2s" (client to server) or "s2c"
    index: int          # 0-based count within its direction
    data: bytes         # as it arrived, before the rule
    dropped: bool       # the rule forwarded nothing of it


# What a rule returns, item by item: bytes (sent at once) or (delay_s, bytes).
Forward = bytes | tuple[float, bytes]
Rule = Callable[[str, int, bytes], Iterable[Forward]]

_DIRECTIONS = {"c2s": "c2s", "client->server": "c2s", "to_server": "c2s",
               "s2c": "s2c", "server->client": "s2c", "to_client": "s2c"}


def forward_all(direction: str, index: int, data: bytes) -> list[Forward]:
    """The default rule: every datagram goes on at once, unchanged."""
    return [data]


class UdpMiddlebox:
    """A UDP relay on 127.0.0.1 between one client (the first sender) and `target` that
    forwards, drops, delays, duplicates, rewrites or injects datagrams (see the module's
    docstring for rule, inject_first and other_port).

    address / port: where the client is to send (the emulator is routed there).  rule runs on
    the relay's thread, one datagram at a time, so it may keep state without a lock.
    """

    def __init__(self, target: tuple[str, int], rule: Rule | None = None, *,
                 inject_first: Iterable[bytes] = (), other_port: bool = False) -> None:
        self.target = target
        self.rule = rule or forward_all
        self._inject_first = list(inject_first)
        self.log: list[Datagram] = []
        self._counts = {"c2s": 0, "s2c": 0}
        self._cond = threading.Condition()
        self._timers: list[threading.Timer] = []
        self._client: tuple[str, int] | None = None
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self.address = self._front.getsockname()
        self.port = self.address[1]
        self._side: socket.socket | None = None     # other_port: the server's datagrams leave here
        if other_port:
            self._side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._side.bind(("127.0.0.1", 0))
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._back.connect(target)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-middlebox")
        self._thread.start()

    # -- what a test does -----------------------------------------------------------------------
    def inject(self, data: bytes) -> None:
        """Send `data` to the client from the middlebox's address (as if from the server)."""
        if self._client is None:
            raise AssertionError(f"{type(self).__name__}: no client yet to inject into")
        self._front.sendto(data, self._client)

    def sent(self, direction: str) -> list[bytes]:
        """Every datagram that side sent, as it arrived (whatever the rule did with it)."""
        direction = _DIRECTIONS[direction]
        with self._cond:
            return [d.data for d in self.log if d.direction == direction]

    def passed(self, direction: str | None = None) -> list[Datagram]:
        """The datagrams the rule forwarded (at least one copy), of one direction or both."""
        with self._cond:
            return [d for d in self.log if not d.dropped
                    and (direction is None or d.direction == _DIRECTIONS[direction])]

    def dropped(self) -> list[Datagram]:
        with self._cond:
            return [d for d in self.log if d.dropped]

    def wait_for(self, predicate, timeout: float = 5.0):
        """Wait until predicate() (re-checked at each logged datagram) is true; its value."""
        with self._cond:
            value = self._cond.wait_for(predicate, timeout)
        if not value:
            raise TimeoutError(f"{type(self).__name__}: condition not met; log: {self.log}")
        return value

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(5)
        for timer in self._timers:
            timer.cancel()
        for sock in (self._front, self._side, self._back, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> UdpMiddlebox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the relay's thread ---------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._front, self._back, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            if self._front in readable:
                try:
                    data, self._client = self._front.recvfrom(65536)
                except OSError:
                    continue
                self._handle("c2s", data)
            if self._back in readable:
                try:
                    data = self._back.recv(65536)
                except OSError:
                    continue   # ICMP: the server is not (or no longer) listening
                if self._client is not None:
                    self._handle("s2c", data)

    def _handle(self, direction: str, data: bytes) -> None:
        """Log one datagram, then forward what the rule makes of it (injections first)."""
        index = self._counts[direction]          # (only this thread counts)
        if direction == "c2s" and index == 0:
            for forged in self._inject_first:
                self.inject(forged)
        out = [item if isinstance(item, tuple) else (0, item)
               for item in self.rule(direction, index, data)]
        with self._cond:
            self._counts[direction] += 1
            self.log.append(Datagram(direction, index, data, dropped=not out))
            self._cond.notify_all()
        for delay, copy in out:
            if delay:
                timer = threading.Timer(delay, self._send, (direction, copy))
                self._timers.append(timer)
                timer.start()
            else:
                self._send(direction, copy)

    def _send(self, direction: str, data: bytes) -> None:
        try:
            if direction == "c2s":
                self._back.send(data)
            else:
                (self._side or self._front).sendto(data, self._client)
        except OSError:
            pass   # the server gone (ICMP), or a delayed copy after close()


class UdpDropRelay(UdpMiddlebox):
    """A UDP relay on 127.0.0.1 between one client and `target`, dropping chosen datagrams.

    drop: (direction, index) pairs, e.g. [("s2c", 0)] drops the server's first datagram, so
    the DTLS client has to retransmit. Every datagram is logged (passed and dropped).
    """

    def __init__(self, target: tuple[str, int], drop=()) -> None:
        self._drop = {(_DIRECTIONS[direction], index) for direction, index in drop}
        super().__init__(target, self._drop_chosen)

    def _drop_chosen(self, direction: str, index: int, data: bytes) -> list[Forward]:
        return [] if (direction, index) in self._drop else [data]
