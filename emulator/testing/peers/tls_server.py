"""TlsServer: a Python ssl (OpenSSL) server in threads that records what each client did.

Each accepted client becomes a TlsConnection (tls_connection.py) with its own thread; the
server keeps the list and lets tests wait on it. What a connection does after the handshake
is a mode (MODES) or a handler, a function given the TlsConnection that reads and writes
through it (recv / sendall / send_close_notify) in the connection's thread.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import warnings
from pathlib import Path
from typing import Callable

from emulator.testing.peers.tls_connection import TlsConnection

MODES = ("echo", "http", "silent", "send_then_close", "close", "sink")
_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.0": ssl.TLSVersion.TLSv1,
             "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
             "TLSv1.3": ssl.TLSVersion.TLSv1_3}


def tls_version(value: ssl.TLSVersion | str | None) -> ssl.TLSVersion | None:
    return _VERSIONS[value] if isinstance(value, str) else value


class TlsServer:
    """A TLS server on 127.0.0.1:<ephemeral>; see MODES. Use as a context manager.

    cert: CertFiles (peers.pki), (certfile, keyfile), or anything with configure_cert(ctx)
    (pki.ServerIdentity, a trustme LeafCert); default: the shared PKI's RSA server
    certificate. ciphers defaults to OpenSSL's DEFAULT list (wider than Python's, which
    drops RSA key exchange and SHA-1 suites that the modules' tables use); ":@SECLEVEL=0" is
    appended when min_version allows TLS 1.0/1.1, which OpenSSL 3 refuses otherwise.
    legacy=True serves what the modules' engine can speak and nothing newer: TLS 1.0 to 1.2
    and every OpenSSL suite (min_version / max_version / ciphers given override it).
    client_ca (PEM bytes, a path, or anything with configure_trust(ctx): pki.CaFiles) asks
    for a client certificate, required if require_client_cert. session_cache=False gives
    every connection a fresh SSLContext (no session-ID or ticket resumption); tickets=False
    leaves only session-ID resumption. handler(conn) replaces the mode after the handshake;
    when it returns the server closes TCP (no close_notify unless the handler sent one).
    """

    def __init__(self, cert=None, *, mode: str = "echo",
                 handler: Callable[[TlsConnection], None] | None = None, legacy: bool = False,
                 min_version: ssl.TLSVersion | str | None = None,
                 max_version: ssl.TLSVersion | str | None = None, ciphers: str | None = None,
                 client_ca=None, require_client_cert: bool = False,
                 alpn: list[str] | None = None, keylog: str | Path | None = None,
                 session_cache: bool = True, tickets: bool = True, payload: bytes = b"",
                 handshake_timeout: float = 10.0,
                 context_hook: Callable[[ssl.SSLContext], None] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if cert is None:
            from emulator.testing.peers.pki import default_pki
            cert = default_pki().server
        self.cert = cert
        self.mode, self.handler, self.payload = mode, handler, payload
        self.handshake_timeout = handshake_timeout
        if legacy:
            min_version = min_version or "TLSv1"
            max_version = max_version or "TLSv1.2"
            ciphers = ciphers or "ALL"
        self.min_version, self.max_version = tls_version(min_version), tls_version(max_version)
        self.ciphers = ciphers or "DEFAULT"
        if (self.min_version is not None and self.min_version < ssl.TLSVersion.TLSv1_2
                and "@SECLEVEL" not in self.ciphers):
            self.ciphers += ":@SECLEVEL=0"
        self.client_ca, self.require_client_cert = client_ca, require_client_cert
        self.alpn, self.keylog, self.context_hook = alpn, keylog, context_hook
        self.session_cache, self.tickets = session_cache, tickets
        self.context = self.make_context()
        self.connections: list[TlsConnection] = []
        self._cond = threading.Condition()
        self._local = threading.local()
        self._cipher_ids: dict[str, int] = {}
        self._closed = False
        # Bound to port 0 and kept: the port is ours from the start (no probe-then-bind race).
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True,
                                               name="tls-accept")
        self._accept_thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def make_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # TLS 1.0/1.1 are wanted here
            if self.min_version is not None:
                ctx.minimum_version = self.min_version
            if self.max_version is not None:
                ctx.maximum_version = self.max_version
        ctx.set_ciphers(self.ciphers)
        if hasattr(self.cert, "configure_cert"):
            self.cert.configure_cert(ctx)
        else:
            ctx.load_cert_chain(*map(str, self.cert))
        if self.client_ca is not None:
            if hasattr(self.client_ca, "configure_trust"):
                self.client_ca.configure_trust(ctx)
            elif isinstance(self.client_ca, bytes):
                ctx.load_verify_locations(cadata=self.client_ca.decode())
            else:
                ctx.load_verify_locations(cafile=str(self.client_ca))
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        elif self.require_client_cert:
            raise ValueError("require_client_cert needs client_ca")
        if self.alpn:
            ctx.set_alpn_protocols(self.alpn)
        if self.keylog:
            ctx.keylog_filename = str(self.keylog)
        if not self.tickets:
            ctx.options |= ssl.OP_NO_TICKET
        ctx.sni_callback = self._on_sni
        if self.context_hook:
            self.context_hook(ctx)
        return ctx

    def _on_sni(self, ssl_object, server_name: str | None, ctx: ssl.SSLContext) -> None:
        # Runs in the connection's own thread, during its handshake.
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.sni_callback_called = True
            conn.sni = server_name

    def _cipher_id(self, name: str) -> int | None:
        if not self._cipher_ids:
            self._cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in self.context.get_ciphers()}
        return self._cipher_ids.get(name)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _accept_loop(self) -> None:
        while True:
            readable, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in readable:
                return
            try:
                sock, address = self._listener.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            context = self.context if self.session_cache else self.make_context()
            conn = TlsConnection(sock, address, len(self.connections), context, mode=self.mode,
                                 payload=self.payload, handshake_timeout=self.handshake_timeout,
                                 handler=self.handler, on_change=self._notify,
                                 cipher_id=self._cipher_id, sni_registry=self._local)
            with self._cond:
                self.connections.append(conn)
                self._cond.notify_all()
            conn.thread.start()

    # --- waiting ------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], object], timeout: float = 5.0,
                 what: str = "condition"):
        """Wait until predicate() is truthy (re-checked at every change); returns its value."""
        with self._cond:
            value = self._cond.wait_for(predicate, timeout)
        if not value:
            raise TimeoutError(f"TlsServer: timed out waiting for {what}; "
                               f"connections: {self.connections}")
        return value

    def wait_connections(self, count: int = 1, timeout: float = 5.0) -> list[TlsConnection]:
        self.wait_for(lambda: len(self.connections) >= count, timeout, f"{count} connection(s)")
        return self.connections[:count]

    def wait_handshake(self, index: int = -1, timeout: float = 5.0) -> TlsConnection:
        """The connection (default: latest) once its handshake succeeded, failed or it closed."""
        self.wait_connections(1 if index < 0 else index + 1, timeout)
        conn = self.connections[index]
        self.wait_for(lambda: conn.handshake_done or conn.handshake_error or conn.closed,
                      timeout, "handshake")
        return conn

    def wait_done(self, index: int = -1, timeout: float = 5.0) -> TlsConnection:
        """The connection (default: latest) once its exchange is over (conn.done)."""
        self.wait_connections(1 if index < 0 else index + 1, timeout)
        conn = self.connections[index]
        self.wait_for(conn.done.is_set, timeout, f"connection #{conn.index} to end")
        return conn

    def wait_received(self, size: int, index: int = -1, timeout: float = 5.0) -> bytes:
        """Wait until a connection (default: latest) has received `size` decrypted bytes."""
        self.wait_connections(1 if index < 0 else index + 1, timeout)
        conn = self.connections[index]
        self.wait_for(lambda: len(conn.received) >= size, timeout, f"{size} bytes")
        return bytes(conn.received)

    @property
    def conn(self) -> TlsConnection:
        """The latest connection (waits briefly for one)."""
        return self.wait_connections(1)[-1] if not self.connections else self.connections[-1]

    @property
    def errors(self) -> list[str]:
        """Every connection's error (handshake, handler, socket), in order."""
        return [conn.error for conn in self.connections if conn.error]

    # --- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_w.send(b"x")
        self._accept_thread.join(5)
        for closable in (self._listener, self._wake_r, self._wake_w):
            closable.close()
        for conn in self.connections:
            conn.stop()
        for conn in self.connections:
            conn.thread.join(5)
        if self.keylog:
            self.context.keylog_filename = None   # (an SSLContext keeps its key log file open)

    def __enter__(self) -> TlsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def reply_after(n: int, payload: bytes) -> Callable[[TlsConnection], None]:
    """A handler: read n bytes, then answer payload, then echo until the client's EOF
    (the EC2x note's §3 server: 36 bytes in, "Test data from SSL" back)."""
    def handler(conn: TlsConnection) -> None:
        while len(conn.received) < n and conn.recv():
            pass
        conn.sendall(payload)
        while data := conn.recv():
            conn.sendall(data)
    return handler
