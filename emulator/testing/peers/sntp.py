"""SntpServer: a UDP SNTP server (RFC 4330 §5-6) on 127.0.0.1 that reports a fixed time.

    with SntpServer(utc(2019, 6, 1, 12)) as ntp:
        emu.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        ... AT+QNTP=1,"ntp.example" ...
        assert ntp.requests          # the raw 48-byte client requests it got

answer=False makes it silent (the client times out); kiss=True answers with a
kiss-o'-death (stratum 0), which an RFC 4330 client must not use.  A hostile server is
respond=f: f(request) returns the datagrams to send back (none, several, malformed),
built with server.reply(request, field=value...) or by hand; it runs on the server's
thread, so it may also wait (an answer held back until the test lets it go).

Timestamps are NTP era-aware (RFC 4330 §3): a time from 2036-02-07 on wraps into era 1
(the seconds field starts again at 0), as a real server sends it.
"""
from __future__ import annotations

import datetime
import socket
import struct
import threading
from typing import Callable, Iterable

NTP_EPOCH = 2_208_988_800          # 1900-01-01 -> 1970-01-01, seconds


def ntp_stamp(when: datetime.datetime | float) -> bytes:
    """The 64-bit NTP timestamp of `when` (an aware datetime or Unix seconds), the
    seconds taken modulo 2**32 (the era is not carried, RFC 4330 §3)."""
    seconds = (when.timestamp() if isinstance(when, datetime.datetime) else when) + NTP_EPOCH
    whole = int(seconds // 1)
    return struct.pack("!II", whole % 2**32, int((seconds - whole) * 2**32) % 2**32)


class SntpServer:
    def __init__(self, when: datetime.datetime, *, answer: bool = True, kiss: bool = False,
                 respond: Callable[[bytes], Iterable[bytes]] | None = None) -> None:
        self.when = when
        self.answer = answer
        self.kiss = kiss
        self.respond = respond
        self.requests: list[bytes] = []
        self.clients: list[tuple[str, int]] = []     # where each request came from
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.address = ("127.0.0.1", self.port)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sntp-server", daemon=True)
        self._thread.start()

    def __enter__(self) -> "SntpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def reply(self, request: bytes, *, li: int = 0, mode: int = 4, stratum: int | None = None,
              originate: bytes | None = None, receive: bytes | None = None,
              transmit: bytes | None = None, when: datetime.datetime | None = None) -> bytes:
        """The server's answer to a client request: LI 0, the request's version, mode 4,
        stratum 1 ("GPS"), originate = the request's transmit timestamp, receive = transmit
        = the fixed time (`when` or a keyword overrides one field, for hostile answers)."""
        version = (request[0] >> 3) & 7 or 4
        stamp = ntp_stamp(when or self.when)
        kiss_stratum, ref = (0, b"DENY") if self.kiss else (1, b"GPS\0")
        stratum = kiss_stratum if stratum is None else stratum
        return (bytes([(li << 6) | (version << 3) | mode, stratum, request[2], 0xEC]) + bytes(8) + ref
                + stamp + (request[40:48] if originate is None else originate)
                + (stamp if receive is None else receive) + (stamp if transmit is None else transmit))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self.requests.append(data)
            self.clients.append(addr)
            if self.respond is not None:
                for datagram in self.respond(data):
                    self._sock.sendto(datagram, addr)
            elif self.answer and len(data) >= 48:
                self._sock.sendto(self.reply(data), addr)
