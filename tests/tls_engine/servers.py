"""Small TLS peers for the engine tests: Python `ssl` (OpenSSL) servers on 127.0.0.1,
one thread each, plus a client-side driver that moves bytes between a real TCP
socket and a sans-IO TlsClientSession.

What the server saw (version, cipher, SNI, ALPN, client cert, data) is recorded in
`ServerObservation`, so tests assert on what actually went over the wire.
"""
from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from typing import Callable

from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsFailure


@dataclass
class ServerObservation:
    version: str | None = None
    cipher: str | None = None
    sni: str | None = None
    sni_callback_called: bool = False
    alpn: str | None = None
    client_cert: dict | None = None
    session_reused: bool = False
    received: bytearray = field(default_factory=bytearray, repr=False)
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def echo_until_eof(conn: ssl.SSLSocket, obs: ServerObservation) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            break
        obs.received += data
        conn.sendall(data)


def send_then_close(payload: bytes) -> Callable[[ssl.SSLSocket, ServerObservation], None]:
    """On the client's first byte, send payload and close_notify in one go, so they
    reach the client together (waiting keeps them out of the handshake's last read)."""

    def handler(conn: ssl.SSLSocket, obs: ServerObservation) -> None:
        obs.received += conn.recv(1)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        conn.sendall(payload)
        conn.unwrap()

    return handler


def server_context(leaf, *, min_version=None, max_version=None, ciphers=None,
                   alpn=None, require_client_cert_from=None) -> ssl.SSLContext:
    """An OpenSSL server context; SECLEVEL=0 so TLS 1.0/1.1 remain possible."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    with warnings.catch_warnings():  # TLSv1/1.1 are deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = min_version or ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version or ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers((ciphers or "ALL") + ":@SECLEVEL=0")
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if require_client_cert_from is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        require_client_cert_from.configure_trust(ctx)
    return ctx


class TlsTestServer:
    """Accepts connections on 127.0.0.1 and runs `handler` for each in a thread."""

    def __init__(self, ctx: ssl.SSLContext, handler=echo_until_eof) -> None:
        self.ctx = ctx
        self.handler = handler
        self.observations: list[ServerObservation] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(5)
        self.port = self._sock.getsockname()[1]
        ctx.sni_callback = self._on_sni
        self._local = threading.local()
        self._workers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False

    def _on_sni(self, sslobj, server_name, ctx) -> None:
        # The callback runs in the connection's own thread, during its handshake.
        obs = getattr(self._local, "obs", None)
        if obs is not None:
            obs.sni_callback_called = True
            obs.sni = server_name
        return None

    def __enter__(self) -> "TlsTestServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop = True
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            pass
        self._thread.join(5)
        for worker in self._workers:
            worker.join(5)
        self._sock.close()

    @property
    def last(self) -> ServerObservation:
        return self.observations[-1]

    def _serve(self) -> None:
        while not self._stop:
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue                  # idle: keep listening until __exit__
            except OSError:
                return
            if self._stop:
                raw.close()
                return
            obs = ServerObservation()
            self.observations.append(obs)
            # One thread per connection: a modem may hold several sockets open at once.
            worker = threading.Thread(target=self._handle, args=(raw, obs), daemon=True)
            self._workers.append(worker)
            worker.start()

    def _handle(self, raw: socket.socket, obs: ServerObservation) -> None:
        self._local.obs = obs
        raw.settimeout(5)
        try:
            with self.ctx.wrap_socket(raw, server_side=True) as conn:
                obs.version = conn.version()
                obs.cipher = conn.cipher()[0]
                obs.alpn = conn.selected_alpn_protocol()
                obs.client_cert = conn.getpeercert() or None
                obs.session_reused = conn.session_reused
                self.handler(conn, obs)
        except Exception as exc:  # recorded: tests assert on it
            obs.error = f"{type(exc).__name__}: {exc}"
        finally:
            raw.close()
            obs.done.set()


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


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
