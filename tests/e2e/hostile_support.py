"""What the hostile-server tests share (test_adversarial_hostile_servers.py, _2.py, _6.py): the
scripted server's skeleton (ScriptedServer: listen, accept, one script thread a connection),
the server side of one accepted TCP connection driven by hand -- OpenSSL (Python ssl) over
memory BIOs, so a test decides what goes on the wire and when -- and the EC2x host's open
answer and AT+QSSLRECV read."""
from __future__ import annotations

import re
import socket
import struct
import ssl
import threading


class ScriptedServer:
    """A server on 127.0.0.1: script(conn) runs on each accepted connection, in a thread of
    its own.  The connection ending under it (OSError, EOFError, ssl.SSLError) is the test's
    subject, passed to on_end(); anything else a script raises is its own failed assertion,
    which fails the test on leaving the with-block.  Subclasses make the connection object
    (make_conn) and say whether its socket is closed when the script returns
    (close_when_done; else it stays open until close()).  emulator/name/port: a route to it."""

    close_when_done = False
    stall_limit = 30.0

    def __init__(self, script, emulator=None, name: str | None = None, port: int = 443) -> None:
        self.script = script
        self.conns: list = []
        self.failures: list[str] = []
        self.release = threading.Event()          # stalled scripts wait on it
        self.accepted = threading.Event()
        self.done = threading.Semaphore(0)        # one release per script that ended
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        if emulator is not None:
            emulator.router.add_map(name, port, "127.0.0.1", self.port)

    def make_conn(self, sock: socket.socket):
        raise NotImplementedError

    def on_end(self, exc: BaseException) -> None:
        """The connection ended under the script (the client's close, a reset, a TLS error)."""

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            conn = self.make_conn(sock)
            self.conns.append(conn)
            self.accepted.set()
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn) -> None:
        try:
            self.script(conn)
        except (OSError, EOFError, ssl.SSLError) as exc:
            self.on_end(exc)
        except Exception as exc:                  # a script's own assertion, a bug in it
            self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            if self.close_when_done:
                _close_quietly(conn.sock)
            self.done.release()

    def stall(self) -> None:
        """A script that answers nothing more, until the test ends."""
        self.release.wait(self.stall_limit)

    def close(self) -> None:
        self.release.set()
        self.listener.close()
        for conn in self.conns:
            _close_quietly(conn.sock)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close()
        if exc_type is None:
            # What a server script asserted must fail the test, not a thread's warning.
            assert not self.failures, f"server script failed: {self.failures}"


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


def send_rst(sock: socket.socket) -> None:
    """End a TCP connection with an RST now: SO_LINGER 0, and the read side shut first -- a
    thread blocked in recv() on it would keep the socket alive past close(), and no RST would
    leave until that recv returned."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    sock.close()


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
