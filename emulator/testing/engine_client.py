"""ClientDriver: the engine's sans-IO TlsClientSession on a real TCP socket, for tests and
bench/ that drive tls_engine without the emulator (the emulator's event loop does the same
job in emulator/sockets/)."""
from __future__ import annotations

import socket
from typing import Callable

from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsFailure


class ClientDriver:
    """Moves bytes between a TCP socket and a TlsClientSession, collecting events."""

    def __init__(self, session, port: int) -> None:
        self.session = session
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.events: list[object] = []
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        for chunk in self.session.outgoing():
            try:
                self.sock.sendall(chunk)
            except OSError:
                pass
        self.events.extend(self.session.events())

    def pump(self, until: Callable[[list], bool], timeout: float = 5.0) -> list:
        self.sock.settimeout(timeout)
        self.flush()
        while not until(self.events) and not self.eof:
            if self.session.state in ("failed", "closed"):
                break
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break  # nothing more came: not an EOF
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
            self.session.receive(data)
            self.flush()
        return self.events

    def handshake(self) -> object:
        self.session.start()
        self.pump(lambda ev: any(isinstance(e, (HandshakeComplete, TlsFailure)) for e in ev))
        return next(e for e in self.events if isinstance(e, (HandshakeComplete, TlsFailure)))

    def received(self) -> bytes:
        return b"".join(e.data for e in self.events if isinstance(e, AppData))

    def exchange(self, payload: bytes, timeout: float = 5.0) -> bytes:
        """Send payload, wait for as many bytes back (an echo server)."""
        start = len(self.received())
        self.session.send(payload)
        self.pump(lambda ev: len(self.received()) - start >= len(payload), timeout)
        return self.received()[start:]

    def failure(self) -> TlsFailure | None:
        return next((e for e in self.events if isinstance(e, TlsFailure)), None)

    def peer_closed(self) -> bool:
        return any(isinstance(e, PeerClosed) for e in self.events)
