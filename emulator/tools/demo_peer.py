"""Built-in TLS peers for `modem-emulator --demo`: the servers the manuals' examples talk to.

The manuals' examples connect to 220.180.239.212:8010/8011 (EC2x, an echo service) and to
https://www.iottest.work/test.html (ML302). With `--demo` the emulator routes those
addresses to the local services started here, so a newcomer can paste the examples into a
terminal with no network. The peers are deliberately an independent TLS implementation
(Python `ssl`, i.e. OpenSSL) from the emulator's client side (python-mbedtls).

Everything lives in memory for one run: a throw-away CA, a server certificate and a client
certificate are generated at start-up with `cryptography`.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import re
import ssl
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from emulator.logsafe import get_logger

log = get_logger(__name__)

# --- The ML302 manual's page, byte for byte -------------------------------------------------
# Headers exactly as printed in the manual (its sample is dated 2019; the Date stays as printed).
# The body is the printed 10 lines (95 visible bytes). The manual says Content-Length: 114 and
# ETag "72-..." (0x72 = 114), and a total of 434 bytes; the headers with CRLF plus the blank
# line are 320 bytes, so the body must be 114 = 95 + 19 line-ending bytes. Only a mix gives 19:
# nine CRLF and one bare LF (all-LF gives 105, all-CRLF 115). Which line has the bare LF is not
# recoverable from the print; we put it after the final </html> (a CRLF file whose last newline
# was added by a Unix tool). Total: 320 + 114 = 434, as the manual's +QSSLRECV reports.
_IOTTEST_BODY_LINES = (b"<html>", b"<head>", b"<title>", b"IOTTEST", b"</title>", b"</head>",
                       b"<body>", b"Hello!This is an IOT test webpage!", b"</body>", b"</html>")
IOTTEST_BODY = b"".join(line + b"\r\n" for line in _IOTTEST_BODY_LINES[:-1]) + b"</html>\n"
IOTTEST_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Sat, 12 Oct 2019 01:05:55 GMT\r\n"
    b"Server: Apache/2.4.6 (CentOS) OpenSSL/1.0.2k-fips\r\n"
    b"Last-Modified: Fri, 22 Feb 2019 07:38:30 GMT\r\n"
    b'ETag: "72-58276ad682560"\r\n'
    b"Accept-Ranges: bytes\r\n"
    b"Content-Length: 114\r\n"
    b"Keep-Alive: timeout=300, max=200\r\n"
    b"Connection: Keep-Alive\r\n"
    b"Content-Type: text/html; charset=UTF-8\r\n"
    b"\r\n"
)
IOTTEST_RESPONSE = IOTTEST_HEADERS + IOTTEST_BODY
assert len(IOTTEST_BODY) == 114 and len(IOTTEST_RESPONSE) == 434
IOTTEST_PATH = "/test.html"

# The end of a request head: two line ends in a row. People paste requests from terminals, so
# accept CRLF, LF or a bare CR; the lookahead stops "\r\n" counting as two line ends.
_LINE_END = rb"(?:\r\n|\n|\r(?!\n))"
_HEAD_END = re.compile(_LINE_END + _LINE_END)
_LINE_SPLIT = re.compile(_LINE_END)
_MAX_HEAD = 16384


def _simple_response(status: bytes, text: bytes, close: bool) -> bytes:
    body = b"<html><body>" + text + b"</body></html>\n"
    return (b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode()
            + b"\r\nContent-Type: text/html; charset=UTF-8\r\nConnection: "
            + (b"close" if close else b"Keep-Alive") + b"\r\n\r\n" + body)


class DemoHttpSession:
    """Sans-IO HTTP/1.1 server side of one connection, shared by the demo and the test servers.

    feed() the decrypted bytes as they arrive; it returns the bytes to send back. After a
    response that ends the connection, `should_close` is True.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self.should_close = False
        self.requests: list[str] = []   # request lines seen, for logs and tests

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while not self.should_close:
            # Leading empty lines are allowed before a request (RFC 9112 section 2.2).
            self._buffer = self._buffer.lstrip(b"\r\n")
            end = _HEAD_END.search(self._buffer)
            if end is None:
                if len(self._buffer) > _MAX_HEAD:   # not HTTP, or never ending: stop buffering
                    self.should_close = True
                    out += _simple_response(b"400 Bad Request", b"Bad Request", True)
                break
            head, self._buffer = self._buffer[:end.start()], self._buffer[end.end():]
            out += self._respond(_LINE_SPLIT.split(head))
        return out

    def _respond(self, lines: list[bytes]) -> bytes:
        request_line = lines[0].decode("latin-1")
        self.requests.append(request_line)
        parts = request_line.split()   # lenient: the manual's print has trailing spaces
        headers = {}
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        self.should_close = headers.get("connection") == "close"
        if len(parts) < 2 or len(parts) > 3:
            self.should_close = True
            return _simple_response(b"400 Bad Request", b"Bad Request", True)
        method, target = parts[0], parts[1]
        # The manual sends the absolute form "GET https://www.iottest.work/test.html HTTP/1.1".
        path = urlsplit(target).path if "://" in target else target.split("?")[0]
        if method != "GET":
            return _simple_response(b"405 Method Not Allowed", b"Method Not Allowed",
                                    self.should_close)
        if path == IOTTEST_PATH:
            return IOTTEST_RESPONSE
        return _simple_response(b"404 Not Found", b"Not Found", self.should_close)


# --- Throw-away PKI ----------------------------------------------------------------------------
# Wide validity window: the modem clock (AT+CCLK) may be set to the manual's 2019 dates or to
# anything else, and the demo should verify at seclevel 1/2 regardless. 2049 keeps UTCTime.
_VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
_VALID_UNTIL = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)
DEMO_SERVER_NAMES = ("www.iottest.work", "localhost", "220.180.239.212", "127.0.0.1")


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _issue(subject_cn: str, key: rsa.RSAPrivateKey, issuer: x509.Certificate | None,
           issuer_key: rsa.RSAPrivateKey, extensions: list[tuple[x509.ExtensionType, bool]]
           ) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "modem-emulator demo"),
                         x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(_VALID_FROM)
               .not_valid_after(_VALID_UNTIL)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_usage(eku) -> list[tuple[x509.ExtensionType, bool]]:
    return [(x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False,
                           crl_sign=False, encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([eku]), False)]


def make_demo_pki() -> dict[str, bytes]:
    """CA, server and client certificates as PEM. RSA keys so every RSA suite of the tables works."""
    def new_key() -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    ca_key, server_key, client_key = new_key(), new_key(), new_key()
    ca_usage = x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                             content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False,
                             encipher_only=False, decipher_only=False)
    ca = _issue("modem-emulator demo CA", ca_key, None, ca_key,
                [(x509.BasicConstraints(ca=True, path_length=0), True), (ca_usage, True)])
    sans = []
    for name in DEMO_SERVER_NAMES:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    server = _issue("www.iottest.work", server_key, ca, ca_key,
                    _leaf_usage(ExtendedKeyUsageOID.SERVER_AUTH)
                    + [(x509.SubjectAlternativeName(sans), False)])
    client = _issue("modem-emulator demo client", client_key, ca, ca_key,
                    _leaf_usage(ExtendedKeyUsageOID.CLIENT_AUTH))
    pem = serialization.Encoding.PEM
    return {"ca_pem": ca.public_bytes(pem),
            "server_cert_pem": server.public_bytes(pem), "server_key_pem": _pem_key(server_key),
            "client_cert_pem": client.public_bytes(pem), "client_key_pem": _pem_key(client_key)}


def make_demo_server_context(pki: dict[str, bytes]) -> ssl.SSLContext:
    """TLS 1.0-1.3 server context; asks for a client certificate but does not insist on one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # TLSv1 is deprecated, and wanted
        context.minimum_version = ssl.TLSVersion.TLSv1
    # OpenSSL 3 refuses TLS 1.0/1.1 below security level 0.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=pki["ca_pem"].decode())
    # load_cert_chain only reads files: write them to a private temp dir that is gone at once.
    with tempfile.TemporaryDirectory(prefix="demo-peer-") as tmp:
        cert_file, key_file = Path(tmp, "server.pem"), Path(tmp, "server.key")
        cert_file.write_bytes(pki["server_cert_pem"])
        key_file.write_bytes(pki["server_key_pem"])
        context.load_cert_chain(cert_file, key_file)
    return context


# --- The services --------------------------------------------------------------------------
ECHO_ROUTES = ("220.180.239.212:8010", "220.180.239.212:8011")
HTTPS_ROUTE = "www.iottest.work:443"
# The TCP(IP) notes' example server (AT+QIOPEN=1,0,"TCP","220.180.239.212",8009,0,0): a
# plain echo, TCP and UDP on the same loopback port number.
PLAIN_ECHO_ROUTE = "220.180.239.212:8009"
_HANDSHAKE_TIMEOUT = 30.0


class _EchoApp:
    should_close = False

    def feed(self, data: bytes) -> bytes:
        return data


class _PlainEcho(asyncio.Protocol):
    """TCP: every byte back."""

    def __init__(self, peer: "DemoPeer") -> None:
        self.peer = peer

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.peer.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc) -> None:
        self.peer.connections.discard(self)


class _UdpEcho(asyncio.DatagramProtocol):
    """UDP: every datagram back to its sender."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


class _TlsServiceProtocol(asyncio.Protocol):
    """One TLS connection, run sans-IO with ssl.SSLObject over memory BIOs.

    Not asyncio's own TLS (start_server(ssl=...) / start_tls): that hides connections that
    are still in the handshake from us, and in CPython 3.11 a connection lost mid-handshake
    surfaces as an AttributeError. Here every connection is ours from its first byte, so
    DemoPeer.close() can end all of them at once.
    """

    def __init__(self, peer: DemoPeer, context: ssl.SSLContext, make_app, name: str) -> None:
        self._peer, self._context, self._make_app, self._name = peer, context, make_app, name
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._app = self._make_app()
        self._handshaken = False
        self._timer = asyncio.get_running_loop().call_later(_HANDSHAKE_TIMEOUT, transport.abort)
        self._peer.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()
        self._peer.connections.discard(self)

    def eof_received(self) -> bool:
        return False   # TCP FIN without close_notify: just close our side too

    # Flow control: stop reading while the client is not taking what we send (echo of a
    # large upload), so memory stays bounded.
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        try:
            if not self._handshaken:
                self._tls.do_handshake()
                self._handshaken = True
                self._timer.cancel()
                log.debug("demo %s: %s %s", self._name, self._tls.version(),
                          self._tls.cipher()[0])
            self._serve_available()
        except ssl.SSLWantReadError:
            pass   # need more bytes from the client
        except ssl.SSLZeroReturnError:
            self._close_politely()   # the client sent close_notify: answer it and close
            return
        except ssl.SSLError as exc:
            log.debug("demo %s: TLS error: %s", self._name, exc)
            self._flush()   # carries OpenSSL's alert, if it produced one
            self.transport.close()
            return
        self._flush()

    def _serve_available(self) -> None:
        while True:
            data = self._tls.read(65536)   # raises SSLWantReadError when drained
            if not data:
                raise ssl.SSLZeroReturnError
            reply = self._app.feed(data)
            if reply:
                self._tls.write(reply)
            if self._app.should_close:
                raise ssl.SSLZeroReturnError

    def _close_politely(self) -> None:
        try:
            self._tls.unwrap()
        except ssl.SSLError:
            pass   # close_notify is queued; we do not wait for the client's answer
        self._flush()
        self.transport.close()

    def _flush(self) -> None:
        if self._outgoing.pending:
            self.transport.write(self._outgoing.read())


@dataclass
class DemoPeer:
    ca_pem: bytes
    client_cert_pem: bytes
    client_key_pem: bytes
    routes: dict[str, tuple[str, int]]
    server_cert_pem: bytes = b""
    servers: list = field(default_factory=list, repr=False)       # listening asyncio servers
    connections: set = field(default_factory=set, repr=False)     # open connections
    datagram_endpoints: list = field(default_factory=list, repr=False)   # the UDP echo

    async def close(self) -> None:
        for endpoint in self.datagram_endpoints:
            endpoint.close()
        self.datagram_endpoints.clear()
        for server in self.servers:
            server.close()
        for connection in list(self.connections):
            connection.transport.abort()
        for server in self.servers:
            await server.wait_closed()
        self.servers.clear()
        await asyncio.sleep(0)   # let the aborted transports deliver connection_lost


async def _plain_echo_pair(loop, peer: DemoPeer, bind: str, attempts: int = 20):
    """The plain TCP echo and the UDP echo on one port number (one route serves both): the
    TCP server takes an ephemeral port, the UDP echo binds the same number -- which another
    program may already hold for UDP (EADDRINUSE): then both try another port."""
    for attempt in range(attempts):
        server = await loop.create_server(lambda: _PlainEcho(peer), bind, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=(bind, port))
        except OSError as exc:
            server.close()
            await server.wait_closed()
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            continue
        return server, udp, port
    raise AssertionError("unreachable")


async def start_demo_peer(bind: str = "127.0.0.1") -> DemoPeer:
    """Start the echo and HTTPS services on ephemeral ports of `bind`; see DemoPeer.routes."""
    # RSA key generation takes a noticeable fraction of a second: keep it off the event loop.
    pki = await asyncio.to_thread(make_demo_pki)
    context = make_demo_server_context(pki)
    peer = DemoPeer(ca_pem=pki["ca_pem"], client_cert_pem=pki["client_cert_pem"],
                    client_key_pem=pki["client_key_pem"], routes={},
                    server_cert_pem=pki["server_cert_pem"])
    loop = asyncio.get_running_loop()
    try:
        for make_app, name, routes in ((_EchoApp, "echo", ECHO_ROUTES),
                                       (DemoHttpSession, "https", (HTTPS_ROUTE,))):
            server = await loop.create_server(
                lambda make_app=make_app, name=name:
                    _TlsServiceProtocol(peer, context, make_app, name), bind, 0)
            peer.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            for route in routes:
                peer.routes[route] = (bind, port)
        server, udp, port = await _plain_echo_pair(loop, peer, bind)
        peer.servers.append(server)
        peer.datagram_endpoints.append(udp)
        peer.routes[PLAIN_ECHO_ROUTE] = (bind, port)
    except BaseException:
        await peer.close()
        raise
    return peer
