"""python-mbedtls as a peer: the only server here with RC4/3DES (OpenSSL 3 has neither),
and the sans-IO pump both it and the native-layer tests drive a TLSWrappedBuffer with.

* SansIO / connect(): a python-mbedtls TLSWrappedBuffer on a real TCP socket, pumped by
  hand (receive_from_network / peek_outgoing / consume_outgoing / do_handshake / write /
  readinto) the way the engine's session does, never through TLSWrappedSocket.
* MbedtlsServer / mbedtls_server_context(): one connection, handshake, echo 4 bytes, wait
  for the client's close; it records the suite it negotiated and any error.
"""

from __future__ import annotations

import select
import socket
import threading
import time

import mbedtls.pk as mpk
import mbedtls.tls as mtls
import mbedtls.x509 as mx509
from mbedtls.exceptions import TLSError

from emulator.testing.peers.pki import CertFiles
from tls_engine import native

DEADLINE = 5.0  # seconds; generous upper bound for any single exchange on loopback


class SansIO:
    """A TLSWrappedBuffer on a connected socket, pumped by hand."""

    def __init__(self, sock: socket.socket, buffer) -> None:
        self.sock, self.buffer = sock, buffer
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(DEADLINE)
        self.eof = False

    def flush(self) -> None:
        while True:
            data = self.buffer.peek_outgoing(16384)
            if not data:
                return
            self.sock.sendall(data)
            self.buffer.consume_outgoing(len(data))

    def feed(self, timeout: float = DEADLINE) -> None:
        """Read what the socket has (waiting up to `timeout`) into the buffer."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            raise TimeoutError("peer sent nothing")
        data = self.sock.recv(16384)
        if not data:
            self.eof = True
            raise ConnectionError("peer closed the TCP connection")
        self.buffer.receive_from_network(data)

    def start_handshake(self) -> None:
        """Send the first flight (a client's ClientHello), up to where an answer is needed."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                self.buffer.do_handshake()      # one handshake step per call
            except mtls.WantReadError:
                break
            except mtls.WantWriteError:
                pass
            self.flush()
        self.flush()

    def handshake(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while not native.handshake_over(self.buffer):
            if time.monotonic() > deadline:
                raise TimeoutError("handshake did not finish")
            try:
                self.buffer.do_handshake()
            except mtls.WantWriteError:
                pass
            except mtls.WantReadError:
                self.flush()
                self.feed()
                continue
            self.flush()
        self.flush()

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = self.buffer.write(view[:16384])
            except mtls.WantWriteError:
                n = 0
            except mtls.WantReadError:
                self.flush()
                self.feed()
                continue
            view = view[n:]
            self.flush()

    def read_available(self) -> bytes:
        """Decrypt whatever is in the buffer (flushing anything mbedtls wants to send,
        e.g. an alert or a renegotiation ClientHello)."""
        out = bytearray()
        chunk = bytearray(16384)
        while True:
            try:
                n = self.buffer.readinto(chunk, len(chunk))
            except (mtls.WantReadError, mtls.WantWriteError):
                break
            except TLSError as exc:
                if exc.err != 0x7880:  # MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY
                    raise
                self.eof = True
                break
            finally:
                self.flush()
            if n == 0:
                break
            out += chunk[:n]
        return bytes(out)

    def recv_exactly(self, n: int) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + DEADLINE
        while len(out) < n:
            out += self.read_available()
            if len(out) >= n:
                break
            if self.eof:
                raise ConnectionError(f"peer closed after {len(out)} of {n} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"got {len(out)} of {n} bytes")
            self.feed()
        return bytes(out)

    def wait_eof(self) -> None:
        """Until the peer closes (close_notify or TCP EOF); data read meanwhile is dropped."""
        deadline = time.monotonic() + DEADLINE
        while not self.eof and time.monotonic() < deadline:
            self.read_available()
            if not self.eof:
                try:
                    self.feed()
                except ConnectionError:
                    return

    def close(self) -> None:
        try:
            self.buffer.shutdown()
            self.flush()
        except Exception:
            pass
        self.sock.close()


def connect(port: int, buffer) -> SansIO:
    return SansIO(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE), buffer)


class MbedtlsServer:
    """python-mbedtls ServerContext on a socket (sans-IO, one connection, echo once)."""

    def __init__(self, ctx: mtls.ServerContext) -> None:
        self.ctx = ctx
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cipher = self.error = None
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def _serve(self) -> None:
        self.listener.settimeout(DEADLINE)
        raw, _ = self.listener.accept()
        conn = SansIO(raw, self.ctx.wrap_buffers())
        try:
            conn.handshake()
            self.cipher = conn.buffer.cipher()
            self.received = conn.recv_exactly(4)
            conn.send(self.received)
            conn.wait_eof()  # close only after the client did
        except Exception as exc:  # noqa: BLE001 - reported to the test
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def join(self) -> None:
        self.thread.join(DEADLINE)
        self.listener.close()


def mbedtls_server_context(cert: CertFiles, suites=None) -> mtls.ServerContext:
    """A TLS 1.2 server context for an RSA `cert`; `suites` = exact id list set through
    tls_engine.native (RC4/3DES included), else python-mbedtls' defaults."""
    chain = (
        tuple(mx509.CRT.from_PEM(p.bytes().decode()) for p in cert.leaf.cert_chain_pems),
        mpk.RSA.from_PEM(cert.key_pem.decode()),
    )
    ctx = mtls.ServerContext(
        mtls.TLSConfiguration(
            certificate_chain=chain, validate_certificates=False,
            highest_supported_version=mtls.TLSVersion.TLSv1_2,
        )
    )
    if suites:
        native.NativeConf(ctx).set_ciphersuites(suites)
    return ctx
