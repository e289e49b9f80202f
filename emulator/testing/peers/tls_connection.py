"""TlsConnection: one accepted client of TlsServer, served in its own thread.

It runs sans-IO (ssl.SSLObject over memory BIOs) on the raw socket, so that
 - the raw ClientHello is seen before OpenSSL consumes it (what the client *offered*),
 - "silent" can hold a TCP connection without ever answering the handshake,
 - a test can send / close from its own thread without two threads touching one SSL object
   (OpenSSL objects are not thread-safe; the test's requests go through a queue),
 - close_notify is sent without waiting for the client's reply,
 - a handler reads only when it asks to, so a handler that does not read leaves the
   client's data in TCP (back-pressure), as a stalled real server would.
"""

from __future__ import annotations

import hashlib
import queue
import select
import socket
import ssl
import struct
import threading
import time
from typing import Callable

from cryptography import x509

from emulator.testing.peers.clienthello import ClientHello, parse_client_hello
from emulator.tools.demo_peer import DemoHttpSession

_LINGER = 2.0       # after our FIN, how long we keep reading before closing (see _finish)


class ServerStopped(Exception):
    """Raised inside a handler's recv / sendall when TlsServer.close() ends the connection."""


class TlsConnection:
    """What one accepted client did, filled in as the connection progresses. The test's
    thread: send(), close() and the fields; a handler (in the connection's own thread, after
    the handshake): recv(), sendall(), send_close_notify()."""

    def __init__(self, sock: socket.socket, address, index: int, context: ssl.SSLContext, *,
                 mode: str, payload: bytes, handshake_timeout: float,
                 handler: Callable[[TlsConnection], None] | None,
                 on_change: Callable[[], None], cipher_id: Callable[[str], int | None],
                 sni_registry: threading.local) -> None:
        self.index, self.address = index, address
        self.client_hello: ClientHello | None = None
        self.sni: str | None = None                     # as seen by OpenSSL's SNI callback
        self.sni_callback_called = False
        self.version: str | None = None                 # "TLSv1.2"
        self.cipher: str | None = None                  # OpenSSL name
        self.cipher_id: int | None = None               # IANA id, e.g. 0xC02F
        self.alpn_selected: str | None = None
        self.client_cert: dict | None = None            # getpeercert(): only when verified
        self.client_cert_subject: str | None = None     # RFC 4514 string
        self.client_cert_der: bytes | None = None
        self.session_reused: bool | None = None
        self.handshake_done = False
        self.handshake_error: str | None = None
        self.handshake_error_reason: str | None = None  # OpenSSL reason, e.g. NO_SHARED_CIPHER
        self.error: str | None = None                   # handshake, handler or socket error
        self.raw_received = bytearray()                 # every byte off the wire
        self.received = bytearray()                     # decrypted application data
        self.close_notify_received = False
        self.client_eof = False                         # the client closed its side of TCP
        self.close_reason: str | None = None
        self.done = threading.Event()                   # the exchange is over (close_reason set)
        self.closed = False                             # ... and the socket is closed
        self._mode, self._payload, self._handler = mode, payload, handler
        self._handshake_timeout = handshake_timeout
        self._on_change, self._cipher_id, self._sni_registry = on_change, cipher_id, sni_registry
        self._sock, self._context = sock, context
        self._sock.setblocking(False)
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._close_request: dict | None = None         # set by close()
        self._stopping = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._out = bytearray()                         # ciphertext waiting for the socket
        self._unread = bytearray()                      # decrypted, not yet taken by recv()
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

    def close(self, close_notify: bool = True, fin: bool = True, reset: bool = False) -> None:
        """End the connection as a test chooses: close_notify (or not), then our TCP FIN at
        once (fin) or only once the client closed its side; reset: an RST (SO_LINGER 0),
        nothing else. The connection then reads until the client closes (client_eof)."""
        self._close_request = {"close_notify": close_notify, "fin": fin, "reset": reset}
        self._wake()

    def stop(self) -> None:
        """End the connection's thread soon, whatever it is doing (TlsServer.close())."""
        self._stopping = True
        self._wake()

    def __repr__(self) -> str:
        return (f"<TlsConnection #{self.index} {self.version} {self.cipher} "
                f"error={self.error!r} closed={self.closed}>")

    # --- a handler's side (in the connection's thread) -------------------------------------
    def _handler_only(self, what: str) -> None:
        # (one SSL object, one thread: from a test's thread these would race the connection's
        # own loop and fail at random, e.g. BufferError on the shared output buffer)
        if threading.current_thread() is not self.thread:
            raise RuntimeError(f"TlsConnection.{what}() runs in the connection's handler; "
                               f"a test's thread uses send() / close()")

    def recv(self, size: int = 65536, timeout: float | None = None) -> bytes:
        """Decrypted bytes, 1 to `size` of them; b"" once the client sent close_notify or
        closed TCP. TimeoutError after `timeout` seconds without data."""
        self._handler_only("recv")
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._unread:
            if self.close_notify_received or self.client_eof:
                return b""
            if self._stopping:
                raise ServerStopped
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no data from the client within {timeout} s")
            if self._wait(deadline):
                data = self._recv()
                if data:
                    self._incoming.write(data)
                    self._unread += self._decrypt()
        chunk = bytes(self._unread[:size])
        del self._unread[:size]
        return chunk

    def sendall(self, data: bytes) -> None:
        """Encrypt and send `data`; returns once the kernel took all of it."""
        self._handler_only("sendall")
        self._write(data)
        self._drain()

    def send_close_notify(self) -> None:
        """Send a TLS close_notify (not waiting for the client's)."""
        self._handler_only("send_close_notify")
        self._queue_close_notify()
        self._drain()

    # --- the connection thread --------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass   # the connection has already finished

    def _end(self, reason: str) -> None:
        """The exchange is over: record why (the first reason wins) and tell the waiters."""
        if self.close_reason is None:
            self.close_reason = reason
        self.done.set()
        self._on_change()

    def _fail(self, error: str) -> None:
        """The exchange ended in an error (recorded in `error`, and as the close reason)."""
        self.error = self.error or error
        self._end(error)

    def _run(self) -> None:
        self._sni_registry.conn = self      # for the server's SNI callback, in this thread
        try:
            if self._handshake():
                self._serve()
        except (OSError, ssl.SSLError) as exc:
            self._fail(f"error: {exc!r}")
        finally:
            for closable in (self._sock, self._wake_r, self._wake_w):
                closable.close()
            self.closed = True
            self._end("closed")

    def _wait(self, deadline: float | None) -> bool:
        """Wait for input, a wake-up or the deadline, sending queued ciphertext meanwhile.

        Returns True when the socket is readable."""
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        writers = [self._sock] if self._out else []
        readable, writable, _ = select.select([self._sock, self._wake_r], writers, [], timeout)
        if writable:
            self._send_some()
        if self._wake_r in readable:
            self._wake_r.recv(4096)
        return self._sock in readable

    def _send_some(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            return
        del self._out[:sent]

    def _drain(self) -> None:
        """Block until every queued byte is sent (no reading meanwhile, as a blocking
        sendall() would not read either)."""
        while self._out:
            if self._stopping:
                raise ServerStopped
            _, writable, _ = select.select([self._wake_r], [self._sock], [])
            if writable:
                self._send_some()

    def _recv(self) -> bytes | None:
        """Bytes from the client, or None at EOF / reset."""
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return b""
        except ConnectionResetError:
            data = b""
        if not data:
            self.client_eof = True
            return None
        self.raw_received += data
        return data

    def _queue_tls_output(self) -> None:
        self._out += self._outgoing.read()

    def _handshake(self) -> bool:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        silent = self._mode == "silent"
        deadline = None if silent else time.monotonic() + self._handshake_timeout
        while True:
            readable = self._wait(deadline)
            if self._stopping or self._close_request is not None:
                self._end("server stopped" if self._stopping else "closed by test")
                return False
            if deadline is not None and time.monotonic() >= deadline:
                self.handshake_error = "handshake timeout"
                self._fail(self.handshake_error)
                return False
            if not readable:
                continue
            data = self._recv()
            if data is None:
                self.handshake_error = "client closed during handshake"
                self._fail(self.handshake_error)
                return False
            if self.client_hello is None:
                try:
                    self.client_hello = parse_client_hello(bytes(self.raw_received))
                except ValueError as exc:
                    self.handshake_error = f"unparsable ClientHello: {exc}"
                if self.client_hello is not None:
                    self._on_change()
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
                self.handshake_error = str(exc)
                self.handshake_error_reason = getattr(exc, "reason", None)
                self._fail(self.handshake_error)
                return False
            self._queue_tls_output()
            self._record_session()
            return True

    def _record_session(self) -> None:
        tls = self._tls
        self.version = tls.version()
        self.cipher, _, _ = tls.cipher()
        self.cipher_id = self._cipher_id(self.cipher)
        self.alpn_selected = tls.selected_alpn_protocol()
        self.session_reused = tls.session_reused
        self.client_cert = tls.getpeercert() or None
        der = tls.getpeercert(binary_form=True)
        if der:
            self.client_cert_der = der
            self.client_cert_subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
        self.handshake_done = True
        self._on_change()

    def _serve(self) -> None:
        mode = self._mode
        if self._handler is not None:
            self._run_handler()
            return
        if mode == "close":
            self._finish(close_notify=False, reason="server closed (mode close)")
            return
        if mode == "send_then_close":
            self._write(self._payload)
            self._finish(close_notify=True, reason="server closed (mode send_then_close)")
            return
        app = DemoHttpSession() if mode == "http" else None
        self._answer(app, self._decrypt())  # data may have come with the client's Finished
        while not self.close_notify_received:
            while not self._commands.empty():
                self._write(self._commands.get())
            if self._close_request is not None:
                self._close_as_asked(**self._close_request)
                return
            if self._stopping:
                self._end("server stopped")
                return
            if app is not None and app.should_close:
                self._finish(close_notify=True, reason="http: Connection: close")
                return
            if self._wait(None):
                data = self._recv()
                if data is None:
                    # A half-closed client may still read: send what is queued.
                    self._flush_out(time.monotonic() + _LINGER)
                    self._end("client closed TCP without close_notify")
                    return
                self._incoming.write(data)
                self._answer(app, self._decrypt())
        self._finish(close_notify=True, reason="client sent close_notify")

    def _run_handler(self) -> None:
        try:
            self._drain()                      # our last handshake flight, before the handler
            # Application data that came with the client's last flight (its Finished and a
            # first record in one segment, as after a resumed handshake) are already in
            # the TLS object: recv() must find them, not wait for bytes that never come.
            self._unread += self._decrypt()
            self._handler(self)
        except ServerStopped:
            self._end("server stopped")
            return
        except Exception as exc:  # recorded: tests assert on it
            self._fail(f"{type(exc).__name__}: {exc}")
            return
        self._finish(close_notify=False, reason="handler returned")

    def _decrypt(self) -> bytes:
        """Decrypt what has arrived (recorded in `received`); notes the client's close_notify."""
        out = bytearray()
        try:
            while True:
                data = self._tls.read(65536)
                if not data:
                    raise ssl.SSLZeroReturnError
                out += data
        except ssl.SSLWantReadError:
            self._queue_tls_output()           # e.g. a renegotiation answer
        except ssl.SSLZeroReturnError:
            self.close_notify_received = True
        if out:
            self.received += out
        if out or self.close_notify_received:
            self._on_change()
        return bytes(out)

    def _answer(self, app: DemoHttpSession | None, data: bytes) -> None:
        if not data:
            return
        if self._mode == "echo":
            self._write(data)
        elif app is not None and (reply := app.feed(data)):
            self._write(reply)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._tls.write(view[:16384])
            view = view[written:]
            self._queue_tls_output()

    def _queue_close_notify(self) -> None:
        try:
            self._tls.unwrap()
        except ssl.SSLError:
            pass   # close_notify is queued; we do not wait for the client's reply
        self._queue_tls_output()

    def _flush_out(self, deadline: float) -> None:
        while self._out and time.monotonic() < deadline and not self._stopping:
            self._wait(deadline)

    def _finish(self, close_notify: bool, reason: str, fin: bool = True,
                linger: float | None = _LINGER) -> None:
        """close_notify if asked, FIN (or leave the TCP close to the client), then read until
        the client closes, for `linger` s (None: however long it takes): closing a socket with
        unread input makes Linux send RST, which can destroy data the client has not read."""
        if close_notify:
            self._queue_close_notify()
        self._flush_out(time.monotonic() + _LINGER)
        self._end(reason)
        if fin:
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                return
        self._read_until_eof(None if linger is None else time.monotonic() + linger)

    def _close_as_asked(self, close_notify: bool, fin: bool, reset: bool) -> None:
        if reset:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self._sock.close()
            self._end("reset by test")
        else:                           # the client's close is what the test waits for
            self._finish(close_notify, "closed by test", fin=fin, linger=None)

    def _read_until_eof(self, deadline: float | None) -> None:
        while not self.client_eof and not self._stopping:
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self._wait(deadline) and (data := self._recv()):
                try:
                    self._incoming.write(data)
                    self._decrypt()              # notes the client's close_notify
                except ssl.SSLError:
                    pass                         # after our close_notify OpenSSL may refuse
