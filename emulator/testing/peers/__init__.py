"""TLS peers for tests and bench/, independent of the emulator's TLS (python-mbedtls).

Almost everything here is OpenSSL: Python's ssl module in threads (TlsServer) and the
`openssl` command (OpenSslServer, OpenSslClient); MbedtlsServer is there only for the
RC4/3DES suites OpenSSL 3 lacks. Every listener binds port 0 and keeps its socket (s_server
reports the port it bound), so no port is probed and then reused. One module per concern:
  pki.py             Pki / make_pki / default_pki: CAs, server (RSA, ECDSA) / client /
                     intermediate / date-windowed leaves; make_cert for forged signatures
  tls_server.py      TlsServer: threads, modes or a handler, waiting
  tls_connection.py  TlsConnection: what each client did (version, cipher, SNI, ALPN,
                     client certificate, session reuse, raw ClientHello, data, close)
  clienthello.py     parse_client_hello: the raw (D)TLS ClientHello (offered suites, SNI, ALPN)
  openssl.py         OpenSslServer / OpenSslClient: ready when their output says so
  udp_relay.py       UdpMiddlebox: a UDP relay whose rule drops, delays, duplicates, rewrites
                     datagrams, and that injects its own; UdpDropRelay: one dropping chosen ones
  dtls_wire.py       DTLS records and handshake messages by hand (build, parse), for forgeries
  plain.py           TcpServer (echo/sink/close), UdpEchoServer: plain TCP/UDP peers (AT+QIOPEN)
  memory.py          MemoryTlsServer: OpenSSL over memory BIOs, for sans-IO engine tests
  mbedtls_peer.py    MbedtlsServer, SansIO (imported from there: it loads python-mbedtls)

Typical use:
    pki = default_pki()
    with TlsServer(pki.server, mode="echo", min_version="TLSv1") as server:
        ... point the emulator at server.address ...
        conn = server.wait_handshake()
        assert conn.version == "TLSv1.2" and conn.sni == "www.iottest.work"
        server.wait_received(18); conn.send(b"hi"); conn.close()
"""

from emulator.testing.peers.clienthello import ClientHello, parse_client_hello
from emulator.testing.peers.openssl import OpenSslClient, OpenSslServer, openssl_binary
from emulator.testing.peers.pki import (NOW, SERVER_NAMES, CaFiles, CertFiles, Issued, Pki,
                                        ServerIdentity, default_pki, make_cert, make_pki, utc)
from emulator.testing.peers.tls_connection import TlsConnection
from emulator.testing.peers.tls_server import MODES, TlsServer, reply_after, tls_version
from emulator.testing.peers.udp_relay import Datagram, UdpDropRelay, UdpMiddlebox
from emulator.testing.peers.plain import TcpPeerConnection, TcpServer, UdpEchoServer

__all__ = ["reply_after", "CaFiles", "CertFiles", "ClientHello", "Datagram", "Issued", "MODES", "NOW",
           "OpenSslClient", "OpenSslServer", "Pki", "SERVER_NAMES", "ServerIdentity",
           "TcpPeerConnection", "TcpServer", "TlsConnection", "TlsServer", "UdpDropRelay", "UdpEchoServer",
           "UdpMiddlebox", "default_pki", "make_cert",
           "make_pki", "openssl_binary", "parse_client_hello", "tls_version", "utc"]
