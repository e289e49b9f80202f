"""TlsConnection: one accepted client of TlsServer, served in its own thread.

It runs sans-IO (ssl.SSLObject over memory BIOs) on the raw socket, so that
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
from typing import TYPE_CHECKING

from cryptography import x509

from emulator.tools.demo_peer import DemoHttpSession
from tests.peers_clienthello import ClientHello, parse_client_hello

if TYPE_CHECKING:
    from tests.peers_tls_server import TlsServer

_LINGER = 2.0       # after our FIN, how long we keep reading before closing (see _finish)


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
                    # A half-closed client may still read: send what is queued.
                    self._flush_out(time.monotonic() + _LINGER)
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
