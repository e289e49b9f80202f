"""Test peers for tests/tls_engine/test_native.py (tls_engine.native against servers).

* SansIO: drives a python-mbedtls TLSWrappedBuffer over a real TCP socket the way the
  engine's session does (receive_from_network / peek_outgoing / consume_outgoing /
  do_handshake / write / readinto), never through TLSWrappedSocket.
* PySslServer: a Python `ssl` (OpenSSL) TLS 1.2 server thread that records, per
  connection, what OpenSSL itself saw (session_reused, cipher, data).
* capture_client_hello: a raw TCP listener returning the first ClientHello's suites.
* OpenSslServer: `openssl s_server` driven through its stdin (for renegotiation).
* MbedtlsServer / mbedtls_server_context: a python-mbedtls server, the only peer here
  with RC4/3DES (also used by tests/test_ssl_options_wire.py).
"""
from __future__ import annotations

import os
import queue
import select
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field

import mbedtls.pk as mpk
import mbedtls.tls as mtls
import mbedtls.x509 as mx509
from mbedtls.exceptions import TLSError

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

    def handshake(self) -> None:
        over = mtls.HandshakeStep.HANDSHAKE_OVER
        deadline = time.monotonic() + DEADLINE
        while self.buffer._handshake_state is not over:
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


@dataclass
class Seen:
    """What the OpenSSL server observed on one connection."""

    session_reused: bool | None = None
    cipher: str | None = None
    received: bytes = b""
    error: str | None = None


@dataclass
class PySslServer:
    """Python ssl TLS 1.2 server: handshake, echo one message, close; one thread."""

    context: ssl.SSLContext
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.results: queue.Queue[Seen] = queue.Queue()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                raw, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            seen = Seen()
            try:
                raw.settimeout(DEADLINE)
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    seen.session_reused = conn.session_reused
                    seen.cipher = conn.cipher()[0]
                    seen.received = conn.recv(65536)
                    conn.sendall(seen.received)
                    try:
                        conn.unwrap()
                    except (OSError, ssl.SSLError):
                        pass
            except Exception as exc:  # noqa: BLE001 - reported to the test
                seen.error = f"{type(exc).__name__}: {exc}"
            self.seen.append(seen)
            self.results.put(seen)

    def next_result(self) -> Seen:
        return self.results.get(timeout=DEADLINE)

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        self.thread.join(DEADLINE)


def capture_client_hello(send_client_hello) -> list[int]:
    """Listen on a raw TCP socket, let `send_client_hello(port)` connect, and return the
    cipher_suites vector of the first ClientHello exactly as it crossed the wire."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got: dict[str, bytes] = {}

    def accept() -> None:
        listener.settimeout(DEADLINE)
        conn, _ = listener.accept()
        conn.settimeout(DEADLINE)
        with conn:
            while True:  # MSG_PEEK until the whole first record is there
                data = conn.recv(65536, socket.MSG_PEEK)
                if len(data) >= 5 and len(data) >= 5 + struct.unpack("!H", data[3:5])[0]:
                    break
                time.sleep(0.005)
            got["record"] = data[: 5 + struct.unpack("!H", data[3:5])[0]]

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        send_client_hello(port)
    finally:
        t.join(DEADLINE)
        listener.close()
    return parse_client_hello_suites(got["record"])


def parse_client_hello_suites(record: bytes) -> list[int]:
    ctype, _version, length = struct.unpack("!BHH", record[:5])
    assert ctype == 22, "not a handshake record"
    body = record[5 : 5 + length]
    assert body[0] == 1, "not a ClientHello"
    p = 4 + 2 + 32  # handshake header, client_version, random
    p += 1 + body[p]  # session_id
    (n,) = struct.unpack("!H", body[p : p + 2])
    return list(struct.unpack(f"!{n // 2}H", body[p + 2 : p + 2 + n]))


class OpenSslServer:
    """`openssl s_server -tls1_2 -msg` on a free port; stdin lines are commands ("r" =
    renegotiate) or data for the client; stdout is collected."""

    def __init__(self, cert_file: str, key_file: str, *extra: str) -> None:
        probe = socket.create_server(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-tls1_2", "-msg", "-naccept", "1",
             "-accept", f"127.0.0.1:{self.port}", "-cert", cert_file, "-key", key_file, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.wait_for(b"ACCEPT")

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            with self._lock:
                self.output += chunk

    def text(self) -> str:
        with self._lock:
            return self.output.decode("latin-1")

    def wait_for(self, needle: bytes, count: int = 1) -> str:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            with self._lock:
                if self.output.count(needle) >= count:
                    return self.output.decode("latin-1")
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise TimeoutError(f"s_server never printed {needle!r} x{count}:\n{self.text()}")

    def command(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(DEADLINE)
        self._reader.join(DEADLINE)


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
        except Exception as exc:  # noqa: BLE001
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()

    def join(self) -> None:
        self.thread.join(DEADLINE)
        self.listener.close()


def mbedtls_server_context(pki, suites=None) -> mtls.ServerContext:
    """`pki` = (ca, trustme leaf); `suites` = exact id list set through tls_engine.native."""
    _, cert = pki
    chain = (
        tuple(mx509.CRT.from_PEM(p.bytes().decode()) for p in cert.cert_chain_pems),
        mpk.RSA.from_PEM(cert.private_key_pem.bytes().decode()),
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
