"""SntpServer: a UDP SNTP server (RFC 4330 §5-6) on 127.0.0.1 that reports a fixed time.

    with SntpServer(utc(2019, 6, 1, 12)) as ntp:
        emu.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        ... AT+QNTP=1,"ntp.example" ...
        assert ntp.requests          # the raw 48-byte client requests it got

answer=False makes it silent (the client times out); kiss=True answers with a
kiss-o'-death (stratum 0), which an RFC 4330 client must not use.
"""
from __future__ import annotations

import datetime
import socket
import struct
import threading

NTP_EPOCH = 2_208_988_800          # 1900-01-01 -> 1970-01-01, seconds


def ntp_stamp(when: datetime.datetime) -> bytes:
    seconds = when.timestamp() + NTP_EPOCH
    whole = int(seconds)
    return struct.pack("!II", whole, int((seconds - whole) * 2**32))


class SntpServer:
    def __init__(self, when: datetime.datetime, *, answer: bool = True, kiss: bool = False) -> None:
        self.when = when
        self.answer = answer
        self.kiss = kiss
        self.requests: list[bytes] = []
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

    def reply(self, request: bytes) -> bytes:
        """The server's answer to a client request: LI 0, the request's version, mode 4,
        stratum 1 ("GPS"), originate = the request's transmit timestamp, receive = transmit
        = the fixed time."""
        version = (request[0] >> 3) & 7 or 4
        stamp = ntp_stamp(self.when)
        stratum, ref = (0, b"DENY") if self.kiss else (1, b"GPS\0")
        return (bytes([(version << 3) | 4, stratum, request[2], 0xEC]) + bytes(8) + ref
                + stamp + request[40:48] + stamp + stamp)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self._sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            self.requests.append(data)
            if self.answer and len(data) >= 48:
                self._sock.sendto(self.reply(data), addr)
