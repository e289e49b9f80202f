"""What the hostile-server tests share (test_adversarial_hostile_servers.py, _2.py): the server
side of one accepted TCP connection driven by hand -- OpenSSL (Python ssl) over memory BIOs,
so a test decides what goes on the wire and when -- and the EC2x host's open answer and
AT+QSSLRECV read."""
from __future__ import annotations

import re
import socket
import ssl
import threading


class BioPeer:
    def __init__(self, ctx: ssl.SSLContext, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(20)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=True)
        self.raw_in = bytearray()          # every byte the client sent
        self.eof = threading.Event()

    def feed(self) -> None:
        """One read from the client into the TLS object; EOFError at its end."""
        data = self.sock.recv(65536)
        if not data:
            self.eof.set()
            raise EOFError
        self.raw_in += data
        self.inc.write(data)

    def first_flight(self) -> bytes:
        """Read the ClientHello; return the server's first flight (not sent)."""
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                pending = self.out.read()
                if pending:
                    return pending
                self.feed()

    def last_flight(self) -> bytes:
        """Read the client's flight; return the server's CCS + Finished (not sent)."""
        while True:
            try:
                self.tls.do_handshake()
                return self.out.read()
            except ssl.SSLWantReadError:
                self.feed()


def open_answer(host, cid: int, timeout: float = 10) -> int:
    """The <err> of "+QSSLOPEN: <cid>,<err>"."""
    line = host.seen(re.compile(rb"\+QSSLOPEN: %d,(-?\d+)\r\n" % cid), timeout)
    return int(re.search(rb",(-?\d+)\r\n", line).group(1))


def recv(host, cid: int, n: int = 1500) -> bytes:
    """One AT+QSSLRECV=<cid>,<n>: its data, the answer's framing checked."""
    answer = host.at(f"AT+QSSLRECV={cid},{n}")
    # URCs of other sockets may come first (seen() finds them in the transcript)
    m = re.match(rb'(?:\r\n\+QSSLURC: "(?:recv|closed)",\d+\r\n)*\r\n\+QSSLRECV: (\d+)\r\n', answer)
    assert m, answer
    size = int(m.group(1))
    data = answer[m.end():m.end() + size]
    assert answer[m.end() + size:] == (b"\r\n\r\nOK\r\n" if size else b"\r\nOK\r\n"), answer[-40:]
    return data
