"""TlsServer: a Python ssl (OpenSSL) server in threads that records what each client did.

Each connection runs sans-IO (ssl.SSLObject over memory BIOs) in its own thread, so that
 - the raw ClientHello is seen before OpenSSL consumes it (what the client *offered*),
 - "silent" can hold a TCP connection without ever answering the handshake,
 - a test can send / close from its own thread without two threads touching one SSL object
   (OpenSSL objects are not thread-safe; the test's requests go through a queue),
 - close_notify is sent without waiting for the client's reply.
"""

from __future__ import annotations

import hashlib
import queue
import select
import socket
import ssl
import threading
import time
import warnings
from pathlib import Path
from typing import Callable

from cryptography import x509

from emulator.demo_peer import DemoHttpSession
from tests.peers_clienthello import ClientHello, parse_client_hello
from tests.peers_pki import CertFiles

MODES = ("echo", "http", "silent", "send_then_close", "close", "sink")
_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.0": ssl.TLSVersion.TLSv1,
             "TLSv1.1": ssl.TLSVersion.TLSv1_1, "TLSv1.2": ssl.TLSVersion.TLSv1_2,
             "TLSv1.3": ssl.TLSVersion.TLSv1_3}
_LINGER = 2.0       # after our FIN, how long we keep reading before closing (see _finish)


def tls_version(value: ssl.TLSVersion | str | None) -> ssl.TLSVersion | None:
    return _VERSIONS[value] if isinstance(value, str) else value


class TlsConnection:
    """What one accepted client did. Fields are filled in as the connection progresses."""

    def __init__(self, server: TlsServer, sock: socket.socket, address, index: int,
                 context: ssl.SSLContext) -> None:
        self.server, self.index, self.address = server, index, address
        self.client_hello: ClientHello | None = None
        self.sni: str | None = None                     # as seen by OpenSSL's SNI callback
        self.version: str | None = None                 # "TLSv1.2"
        self.cipher: str | None = None                  # OpenSSL name
        self.cipher_id: int | None = None               # IANA id, e.g. 0xC02F
        self.alpn_selected: str | None = None
        self.client_cert_subject: str | None = None     # RFC 4514 string
        self.client_cert_der: bytes | None = None
        self.session_reused: bool | None = None
        self.handshake_done = False
        self.handshake_error: str | None = None
        self.handshake_error_reason: str | None = None  # OpenSSL reason, e.g. NO_SHARED_CIPHER
        self.raw_received = bytearray()                 # every byte off the wire
        self.received = bytearray()                     # decrypted application data
        self.close_notify_received = False
        self.closed = False
        self.close_reason: str | None = None
        self._sock, self._context = sock, context
        self._sock.setblocking(False)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._close_request: bool | None = None         # close_notify wanted, set by close()
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._out = bytearray()                         # ciphertext waiting for the socket
        self._eof = False
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"tls-conn-{index}")

    # --- the test's side ------------------------------------------------------------------
    @property
    def cipher_suites(self) -> list[int] | None:
        return self.client_hello.cipher_suites if self.client_hello else None

    @property
    def alpn_offered(self) -> list[bytes] | None:
        return self.client_hello.alpn if self.client_hello else None

    def sha256(self) -> str:
        return hashlib.sha256(bytes(self.received)).hexdigest()

    def send(self, data: bytes) -> None:
        """Queue application data to send (after the handshake, in order)."""
        self._commands.put(bytes(data))
        self._wake()

    def close(self, close_notify: bool = True) -> None:
        """Close the connection: with close_notify, or a bare TCP close if False."""
        self._close_request = close_notify
        self._wake()

    def __repr__(self) -> str:
        return (f"<TlsConnection #{self.index} {self.version} {self.cipher} "
                f"error={self.handshake_error!r} closed={self.closed}>")

    # --- the connection thread --------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass   # the connection has already finished

    def _changed(self) -> None:
        self.server._notify()

    def _run(self) -> None:
        self.server._local.conn = self      # for the SNI callback
        try:
            if self._handshake():
                self._serve()
        except (OSError, ssl.SSLError) as exc:
            self.close_reason = self.close_reason or f"error: {exc!r}"
        finally:
            for closable in (self._sock, self._wake_r, self._wake_w):
                closable.close()
            self.closed = True
            self._changed()

    def _wait(self, deadline: float | None) -> bool:
        """Wait for input, a wake-up or the deadline, sending queued ciphertext meanwhile.

        Returns True when the socket is readable."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        writers = [self._sock] if self._out else []
        readable, writable, _ = select.select([self._sock, self._wake_r], writers, [], timeout)
        if writable:
            sent = self._sock.send(self._out)
            del self._out[:sent]
        if self._wake_r in readable:
            self._wake_r.recv(4096)
        return self._sock in readable

    def _recv(self) -> bytes | None:
        """Bytes from the client, or None at EOF / reset."""
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return b""
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
            return None
        self.raw_received += data
        return data

    def _queue_tls_output(self) -> None:
        self._out += self._outgoing.read()

    def _handshake(self) -> bool:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        silent = self.server.mode == "silent"
        deadline = None if silent else time.monotonic() + self.server.handshake_timeout
        while True:
            readable = self._wait(deadline)
            if self._stopping or self._close_request is not None:
                self.close_reason = "server stopped" if self._stopping else "closed by test"
                return False
            if deadline is not None and time.monotonic() >= deadline:
                self.handshake_error = self.close_reason = "handshake timeout"
                return False
            if not readable:
                continue
            data = self._recv()
            if data is None:
                self.handshake_error = self.close_reason = "client closed during handshake"
                return False
            if self.client_hello is None:
                try:
                    self.client_hello = parse_client_hello(bytes(self.raw_received))
                except ValueError as exc:
                    self.handshake_error = f"unparsable ClientHello: {exc}"
                if self.client_hello is not None:
                    self._changed()
            if silent:
                continue   # read (to record the ClientHello) but never answer
            self._incoming.write(data)
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._queue_tls_output()
                continue
            except ssl.SSLError as exc:
                self._queue_tls_output()      # the alert OpenSSL produced, if any
                self._flush_out(time.monotonic() + 1.0)
                self.handshake_error = self.close_reason = str(exc)
                self.handshake_error_reason = getattr(exc, "reason", None)
                return False
            self._queue_tls_output()
            self._record_session()
            return True

    def _record_session(self) -> None:
        tls = self._tls
        self.version = tls.version()
        self.cipher, _, _ = tls.cipher()
        self.cipher_id = self.server._cipher_id(self._context, self.cipher)
        self.alpn_selected = tls.selected_alpn_protocol()
        self.session_reused = tls.session_reused
        der = tls.getpeercert(binary_form=True)
        if der:
            self.client_cert_der = der
            self.client_cert_subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        self.handshake_done = True
        self._changed()

    def _serve(self) -> None:
        mode = self.server.mode
        if mode == "close":
            self._finish(close_notify=False, reason="server closed (mode close)")
            return
        if mode == "send_then_close":
            self._write(self.server.payload)
            self._finish(close_notify=True, reason="server closed (mode send_then_close)")
            return
        app = DemoHttpSession() if mode == "http" else None
        client_open = self._read_tls(app)  # data may have come with the client's Finished
        while client_open:
            while not self._commands.empty():
                self._write(self._commands.get())
            if self._close_request is not None:
                self._finish(self._close_request, reason="closed by test")
                return
            if self._stopping:
                self.close_reason = "server stopped"
                return
            if app is not None and app.should_close:
                self._finish(close_notify=True, reason="http: Connection: close")
                return
            if self._wait(None):
                data = self._recv()
                if data is None:
                    self.close_reason = "client closed TCP without close_notify"
                    return
                self._incoming.write(data)
                client_open = self._read_tls(app)
        self._finish(close_notify=True, reason="client sent close_notify")

    def _read_tls(self, app: DemoHttpSession | None) -> bool:
        """Decrypt what has arrived; echo / answer it. False once the client sent close_notify."""
        try:
            while True:
                data = self._tls.read(65536)
                if not data:
                    raise ssl.SSLZeroReturnError
                self.received += data
                if self.server.mode == "echo":
                    self._write(data)
                elif app is not None and (reply := app.feed(data)):
                    self._write(reply)
                self._changed()
        except ssl.SSLWantReadError:
            self._queue_tls_output()           # e.g. a renegotiation answer
            return True
        except ssl.SSLZeroReturnError:
            self.close_notify_received = True
            self._changed()
            return False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view[:16384])
            view = view[written:]
            self._queue_tls_output()

    def _flush_out(self, deadline: float) -> None:
        while self._out and time.monotonic() < deadline and not self._stopping:
            self._wait(deadline)

    def _finish(self, close_notify: bool, reason: str) -> None:
        if close_notify:
            try:
                self._tls.unwrap()
            except ssl.SSLError:
                pass   # close_notify is queued; we do not wait for the client's reply
            self._queue_tls_output()
        self._flush_out(time.monotonic() + _LINGER)
        self.close_reason = reason
        self._changed()
        # Send FIN, then keep reading until the client closes: closing a socket with unread
        # input makes Linux send RST, which can destroy data the client has not read yet.
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        deadline = time.monotonic() + _LINGER
        while not self._eof and not self._stopping and time.monotonic() < deadline:
            if self._wait(deadline):
                self._recv()


class TlsServer:
    """A TLS server on 127.0.0.1:<ephemeral>; see MODES. Use as a context manager.

    cert: CertFiles (from tests.peers_pki) or (certfile, keyfile); default: the shared PKI's
    RSA server certificate. ciphers defaults to OpenSSL's DEFAULT list (wider than Python's,
    which drops RSA key exchange and SHA-1 suites that the modules' tables use);
    ":@SECLEVEL=0" is appended when min_version allows TLS 1.0/1.1, which OpenSSL 3 refuses
    otherwise. client_ca (PEM bytes or path) asks for a client certificate, required if
    require_client_cert. session_cache=False gives every connection a fresh SSLContext (no
    session-ID or ticket resumption); tickets=False leaves only session-ID resumption.
    """

    def __init__(self, cert: CertFiles | tuple[str, str] | None = None, *, mode: str = "echo",
                 min_version: ssl.TLSVersion | str | None = None,
                 max_version: ssl.TLSVersion | str | None = None, ciphers: str | None = None,
                 client_ca: bytes | str | Path | None = None, require_client_cert: bool = False,
                 alpn: list[str] | None = None, keylog: str | Path | None = None,
                 session_cache: bool = True, tickets: bool = True, payload: bytes = b"",
                 handshake_timeout: float = 10.0,
                 context_hook: Callable[[ssl.SSLContext], None] | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if cert is None:
            from tests.peers_pki import default_pki
            cert = default_pki().server
        self.cert = cert.load_args if isinstance(cert, CertFiles) else tuple(map(str, cert))
        self.mode, self.payload, self.handshake_timeout = mode, payload, handshake_timeout
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
        ctx.load_cert_chain(*self.cert)
        if self.client_ca is not None:
            if isinstance(self.client_ca, bytes):
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
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.sni = server_name

    def _cipher_id(self, ctx: ssl.SSLContext, name: str) -> int | None:
        if not self._cipher_ids:
            self._cipher_ids = {c["name"]: c["id"] & 0xFFFF for c in ctx.get_ciphers()}
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
            conn = TlsConnection(self, sock, address, len(self.connections), context)
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
            conn._stopping = True
            conn._wake()
        for conn in self.connections:
            conn.thread.join(5)

    def __enter__(self) -> TlsServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
