"""Plain TCP and UDP peers (no TLS) for the TCP/IP socket tests (AT+QIOPEN & co.).

TcpServer: a thread per connection on 127.0.0.1:0; mode "echo" returns every byte and
closes after the client's FIN, "sink" only records (and never closes), "close" closes at
once; or behave(conn), a test's own hostile server run on each connection (reset it, answer
garbage, read one ClientHello...).  Each connection is a TcpPeerConnection (received bytes,
send, close, reset, wait_received, its end: eof / gone()).
UdpEchoServer: echoes each datagram to its sender, one for one, and logs them.
"""
from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Callable


class TcpPeerConnection:
    def __init__(self, sock: socket.socket, addr) -> None:
        self.sock = sock
        self.addr = addr
        self.received = bytearray()
        self.eof = threading.Event()
        self._cond = threading.Condition()

    def add(self, data: bytes) -> None:
        with self._cond:
            self.received += data
            self._cond.notify_all()

    def wait_received(self, n: int, timeout: float = 20) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise AssertionError(f"peer received {len(self.received)} of {n} bytes")
            return bytes(self.received)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def reset(self) -> None:
        """Close with an RST instead of a FIN (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.sock.close()

    def read_record(self, timeout: float = 5) -> bytes:
        """One whole TLS record from the client (its ClientHello), also kept in received."""
        self.sock.settimeout(timeout)
        data = b""
        while len(data) < 5 or len(data) < 5 + struct.unpack(">H", data[3:5])[0]:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        self.add(data)
        return data


class TcpServer:
    def __init__(self, mode: str = "echo", behave: Callable[[TcpPeerConnection], None] | None = None,
                 backlog: int = 16) -> None:
        """behave: run on each connection (in its thread) instead of the mode; its
        OSError ends it quietly."""
        assert mode in ("echo", "sink", "close")
        self.mode = mode
        self.behave = behave
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.address = self.listener.getsockname()
        self.port = self.address[1]
        self.connections: list[TcpPeerConnection] = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-peer").start()

    def __enter__(self) -> "TcpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                sock, addr = self.listener.accept()
            except OSError:
                return
            conn = TcpPeerConnection(sock, addr)
            with self._cond:
                self.connections.append(conn)
                self._cond.notify_all()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: TcpPeerConnection) -> None:
        if self.behave is not None:
            try:
                self.behave(conn)
            except OSError:
                pass
            return
        if self.mode == "close":
            conn.close()
            return
        try:
            while True:
                data = conn.sock.recv(65536)
                if not data:
                    break
                conn.add(data)
                if self.mode == "echo":
                    conn.sock.sendall(data)
        except OSError:
            pass
        conn.eof.set()
        if self.mode == "echo":
            conn.close()

    def wait_connection(self, index: int = 0, timeout: float = 10) -> TcpPeerConnection:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) > index, timeout):
                raise AssertionError("no connection came")
            return self.connections[index]

    def gone(self, index: int = 0, timeout: float = 3) -> bool:
        """Connection `index` ended from the client's side (EOF or reset) within timeout
        ("sink" and "echo" modes, which read until then)."""
        return self.wait_connection(index, timeout).eof.wait(timeout)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._cond:
            connections = list(self.connections)
        for conn in connections:
            conn.close()


class UdpEchoServer:
    """Echoes every datagram back to its sender; `log` keeps (sender, data)."""

    def __init__(self, echo: bool = True) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = self.sock.getsockname()
        self.port = self.address[1]
        self.echo = echo
        self.log: list[tuple[tuple[str, int], bytes]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="udp-peer").start()

    def __enter__(self) -> "UdpEchoServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            with self._cond:
                self.log.append((addr, data))
                self._cond.notify_all()
            if self.echo:
                try:
                    self.sock.sendto(data, addr)
                except OSError:
                    pass

    def wait_datagrams(self, n: int, timeout: float = 20) -> list[tuple[tuple[str, int], bytes]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.log) >= n, timeout):
                raise AssertionError(f"UDP peer got {len(self.log)} of {n} datagrams")
            return list(self.log)

    def close(self) -> None:
        self.sock.close()


def wait_until(predicate, timeout: float = 10, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
