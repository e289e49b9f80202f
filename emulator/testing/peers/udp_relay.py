"""A lossy UDP relay between one client and a server, for DTLS retransmission tests."""

from __future__ import annotations

import select
import socket
import threading
from dataclasses import dataclass


@dataclass
class Datagram:
    direction: str      # "c2s" (client to server) or "s2c"
    index: int          # 0-based count within its direction
    data: bytes
    dropped: bool


_DIRECTIONS = {"c2s": "c2s", "client->server": "c2s", "to_server": "c2s",
               "s2c": "s2c", "server->client": "s2c", "to_client": "s2c"}


class UdpDropRelay:
    """A UDP relay on 127.0.0.1 between one client and `target`, dropping chosen datagrams.

    drop: (direction, index) pairs, e.g. [("s2c", 0)] drops the server's first datagram, so
    the DTLS client has to retransmit. Every datagram is logged (passed and dropped).
    """

    def __init__(self, target: tuple[str, int], drop=()) -> None:
        self.target = target
        self._drop = {(_DIRECTIONS[direction], index) for direction, index in drop}
        self.log: list[Datagram] = []
        self._counts = {"c2s": 0, "s2c": 0}
        self._cond = threading.Condition()
        self._client: tuple[str, int] | None = None
        self._front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._front.bind(("127.0.0.1", 0))
        self.address = self._front.getsockname()
        self._back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._back.bind(("127.0.0.1", 0))
        self._back.connect(target)
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, daemon=True, name="udp-relay")
        self._thread.start()

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self._front, self._back, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            if self._front in readable:
                data, self._client = self._front.recvfrom(65536)
                if not self._record("c2s", data):
                    self._back.send(data)
            if self._back in readable:
                try:
                    data = self._back.recv(65536)
                except ConnectionRefusedError:
                    continue   # ICMP: the server is not (or no longer) listening
                if self._client is not None and not self._record("s2c", data):
                    self._front.sendto(data, self._client)

    def _record(self, direction: str, data: bytes) -> bool:
        """Log a datagram; True if it is to be dropped."""
        with self._cond:
            index = self._counts[direction]
            self._counts[direction] += 1
            dropped = (direction, index) in self._drop
            self.log.append(Datagram(direction, index, data, dropped))
            self._cond.notify_all()
        return dropped

    def passed(self, direction: str | None = None) -> list[Datagram]:
        with self._cond:
            return [d for d in self.log if not d.dropped
                    and (direction is None or d.direction == _DIRECTIONS[direction])]

    def dropped(self) -> list[Datagram]:
        with self._cond:
            return [d for d in self.log if d.dropped]

    def wait_for(self, predicate, timeout: float = 5.0):
        with self._cond:
            value = self._cond.wait_for(predicate, timeout)
        if not value:
            raise TimeoutError(f"UdpDropRelay: condition not met; log: {self.log}")
        return value

    def close(self) -> None:
        if self._thread.is_alive():
            self._wake_w.send(b"x")
            self._thread.join(5)
        for sock in (self._front, self._back, self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> UdpDropRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
