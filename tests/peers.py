"""TLS peers for the test suite, independent of the emulator's TLS (python-mbedtls).

Everything here is OpenSSL: Python's ssl module in threads (TlsServer) and the `openssl`
command (OpenSslServer, OpenSslClient). Split by topic:
  tests/peers_pki.py          make_pki(): CAs, server/client/intermediate/windowed leaves
  tests/peers_tls_server.py   TlsServer: threads, modes, waiting
  tests/peers_tls_connection.py  TlsConnection: records what each client did
  tests/peers_clienthello.py  parse the raw ClientHello (offered suites, SNI, ALPN)
  tests/peers_openssl.py      OpenSslServer / OpenSslClient, UdpDropRelay, free_port

Typical use:
    pki = make_pki()
    with TlsServer(pki.server, mode="echo", min_version="TLSv1") as server:
        ... point the emulator at server.address ...
        conn = server.wait_handshake()
        assert conn.version == "TLSv1.2" and conn.sni == "www.iottest.work"
        server.wait_received(18); conn.send(b"hi"); conn.close()
"""

from tests.peers_clienthello import ClientHello, parse_client_hello
from tests.peers_openssl import (Datagram, OpenSslClient, OpenSslServer, UdpDropRelay,
                                 free_port, openssl_binary)
from tests.peers_pki import SERVER_NAMES, CaFiles, CertFiles, Pki, default_pki, make_pki, utc
from tests.peers_tls_connection import TlsConnection
from tests.peers_tls_server import MODES, TlsServer, tls_version

__all__ = ["CaFiles", "CertFiles", "ClientHello", "Datagram", "MODES", "OpenSslClient",
           "OpenSslServer", "Pki", "SERVER_NAMES", "TlsConnection", "TlsServer",
           "UdpDropRelay", "default_pki", "free_port", "make_pki", "openssl_binary",
           "parse_client_hello", "tls_version", "utc"]
