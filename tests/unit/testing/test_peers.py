"""The test peers themselves (emulator.testing.peers), checked with plain Python ssl clients
and `openssl s_client`."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
import warnings

import pytest
from cryptography import x509

from emulator.tools.demo_peer import IOTTEST_BODY, IOTTEST_RESPONSE, DemoHttpSession, start_demo_peer
from emulator.testing.peers import (OpenSslClient, OpenSslServer, TlsServer, UdpDropRelay,
                                    parse_client_hello, utc)

MANUAL_REQUEST = (b"GET https://www.iottest.work/test.html HTTP/1.1\r\n"
                  b"Host: www.iottest.work\r\nConnection: keep-alive\r\n\r\n")


def client_context(pki, *, max_version=None, min_version=None, ciphers=None, alpn=None,
                   cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=pki.ca.cert_pem.decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if min_version:
            ctx.minimum_version = min_version
        if max_version:
            ctx.maximum_version = max_version
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert:
        ctx.load_cert_chain(*cert.load_args)
    return ctx


def connect(server, ctx, hostname="www.iottest.work", session=None, timeout=5.0):
    raw = socket.create_connection(server.address, timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=hostname, session=session)


def recv_exactly(tls, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = tls.recv(size - len(data))
        assert chunk, f"connection closed after {len(data)} bytes"
        data += chunk
    return data


# --- PKI -------------------------------------------------------------------------------------
def test_pki_material(pki):
    server = x509.load_pem_x509_certificate(pki.server.cert_pem)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "www.iottest.work" in sans.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "220.180.239.212"}
    assert pki.chained.chain_pem.count(b"BEGIN CERTIFICATE") == 2
    intermediate = x509.load_pem_x509_certificate(pki.intermediate.cert_pem)
    chained = x509.load_pem_x509_certificate(pki.chained.cert_pem)
    assert chained.issuer == intermediate.subject != x509.load_pem_x509_certificate(
        pki.ca.cert_pem).subject
    assert pki.wrong_ca.cert_pem != pki.ca.cert_pem
    for files in (pki.server, pki.client, pki.chained):
        assert files.cert_path.read_bytes() == files.cert_pem
        assert files.key_path.read_bytes() == files.key_pem
    windowed = pki.issue_window("w2019", utc(2019, 1, 1), utc(2019, 12, 31))
    cert = x509.load_pem_x509_certificate(windowed.cert_pem)
    assert (cert.not_valid_before_utc, cert.not_valid_after_utc) == (utc(2019, 1, 1),
                                                                      utc(2019, 12, 31))


def test_expired_window_cert_is_rejected_by_a_client(pki):
    expired = pki.issue_window("expired", utc(2019, 1, 1), utc(2019, 12, 31))
    with TlsServer(expired) as server:
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            connect(server, client_context(pki))


# --- TlsServer modes ---------------------------------------------------------------------------
def test_echo_records_bytes_and_version(pki):
    payload = bytes(range(256)) * 300
    with TlsServer(pki.server, mode="echo") as server:
        with connect(server, client_context(pki)) as tls:
            tls.sendall(payload)
            assert recv_exactly(tls, len(payload)) == payload
            tls.unwrap()                  # Python only sends close_notify when asked to
        conn = server.wait_handshake()
        assert conn.version == "TLSv1.3"
        server.wait_received(len(payload))
        assert conn.sha256() == hashlib.sha256(payload).hexdigest()
        server.wait_for(lambda: conn.closed, what="close")
        assert conn.close_notify_received and conn.close_reason == "client sent close_notify"


def test_http_mode_serves_the_manual_page(pki):
    assert len(IOTTEST_RESPONSE) == 434 and len(IOTTEST_BODY) == 114
    head, body = IOTTEST_RESPONSE.split(b"\r\n\r\n", 1)
    assert body == IOTTEST_BODY and b"\r\nContent-Length: 114\r\n" in head + b"\r\n"
    with TlsServer(pki.server, mode="http") as server:
        with connect(server, client_context(pki)) as tls:
            tls.sendall(MANUAL_REQUEST)
            assert recv_exactly(tls, 434) == IOTTEST_RESPONSE
            tls.sendall(b"GET /test.html HTTP/1.1\r\nHost: x\r\n\r\n")   # keep-alive
            assert recv_exactly(tls, 434) == IOTTEST_RESPONSE
            tls.sendall(b"GET /other HTTP/1.1\r\n\r\n")
            assert tls.recv(4096).startswith(b"HTTP/1.1 404 Not Found\r\n")


def test_demo_http_session_parsing():
    session = DemoHttpSession()
    # Split across feeds, bare-CR line ends (a terminal's Enter), trailing spaces as printed.
    assert session.feed(b"GET https://www.iottest.work/test.html HTTP/1.1 \r") == b""
    assert session.feed(b"Host: www.iottest.work\r\r") == IOTTEST_RESPONSE
    assert session.feed(b"GET /test.html HTTP/1.1\n\nGET /test.html HTTP/1.1\r\n\r\n") == (
        IOTTEST_RESPONSE * 2)
    assert session.feed(b"POST /test.html HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert not session.should_close
    assert session.feed(b"GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").startswith(
        b"HTTP/1.1 404")
    assert session.should_close
    endless = DemoHttpSession()
    assert endless.feed(b"x" * 20000).startswith(b"HTTP/1.1 400") and endless.should_close


def test_clienthello_fields_sni_alpn_cipher_order(pki):
    ciphers = "ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA"
    with TlsServer(pki.server, alpn=["x-test", "http/1.1"]) as server:
        ctx = client_context(pki, max_version=ssl.TLSVersion.TLSv1_2, ciphers=ciphers,
                             alpn=["http/1.1", "x-test"])
        with connect(server, ctx) as tls:
            assert tls.selected_alpn_protocol() == "x-test"
        conn = server.wait_handshake()
        assert conn.version == "TLSv1.2"
        assert conn.cipher == "ECDHE-RSA-AES128-GCM-SHA256" and conn.cipher_id == 0xC02F
        # OpenSSL appends the renegotiation SCSV (0x00FF) after the configured suites.
        assert conn.cipher_suites == [0xC02F, 0x0035, 0x00FF]
        assert conn.sni == conn.client_hello.sni == "www.iottest.work"
        assert conn.alpn_offered == [b"http/1.1", b"x-test"]
        assert conn.alpn_selected == "x-test"
        assert conn.client_cert_subject is None


def test_sni_absent_is_none(pki):
    ctx = client_context(pki)
    ctx.check_hostname = False
    with TlsServer(pki.server) as server:
        connect(server, ctx, hostname=None).close()
        conn = server.wait_handshake()
        assert conn.handshake_done and conn.sni is None and conn.client_hello.sni is None
        assert conn.alpn_offered is None


def test_tls10_needs_seclevel0_and_works(pki):
    with TlsServer(pki.server, min_version="TLSv1") as server:
        assert server.ciphers.endswith(":@SECLEVEL=0")
        ctx = client_context(pki, min_version=ssl.TLSVersion.TLSv1,
                             max_version=ssl.TLSVersion.TLSv1, ciphers="DEFAULT:@SECLEVEL=0")
        with connect(server, ctx) as tls:
            tls.sendall(b"old")
            assert recv_exactly(tls, 3) == b"old"
        assert server.wait_handshake().version == "TLSv1"
        assert server.conn.client_hello.client_version == 0x0301


def test_version_mismatch_records_handshake_error(pki):
    with TlsServer(pki.server, min_version="TLSv1.2") as server:
        ctx = client_context(pki, min_version=ssl.TLSVersion.TLSv1,
                             max_version=ssl.TLSVersion.TLSv1_1, ciphers="DEFAULT:@SECLEVEL=0")
        with pytest.raises(ssl.SSLError):
            connect(server, ctx)
        conn = server.wait_handshake()
        assert not conn.handshake_done
        assert conn.handshake_error_reason == "UNSUPPORTED_PROTOCOL"


def test_client_certificate_required(pki):
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True,
                   max_version="TLSv1.2") as server:
        with connect(server, client_context(pki, cert=pki.client)):
            pass
        assert server.wait_handshake(0).client_cert_subject.startswith("CN=modem client,")
        with pytest.raises(ssl.SSLError):
            connect(server, client_context(pki))
        conn = server.wait_handshake(1)
        assert conn.handshake_error_reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE"


def test_client_certificate_optional_and_chain(pki):
    with TlsServer(pki.chained, client_ca=str(pki.ca.cert_path)) as server:
        connect(server, client_context(pki)).close()       # root only: intermediate is sent
        conn = server.wait_handshake()
        assert conn.handshake_done and conn.client_cert_subject is None


@pytest.mark.parametrize("tickets", [True, False])
def test_session_reuse(pki, tickets):
    with TlsServer(pki.server, max_version="TLSv1.2", tickets=tickets) as server:
        ctx = client_context(pki)
        with connect(server, ctx) as first:
            session = first.session
        with connect(server, ctx, session=session) as second:
            assert second.session_reused
        assert [server.wait_handshake(i).session_reused for i in (0, 1)] == [False, True]
        hello = server.connections[1].client_hello
        # A ticket resumption carries the ticket; a session-ID one the ID.
        assert hello.has_extension(35) if tickets else hello.session_id == session.id


def test_no_session_cache_means_no_reuse(pki):
    with TlsServer(pki.server, max_version="TLSv1.2", session_cache=False) as server:
        ctx = client_context(pki)
        with connect(server, ctx) as first:
            session = first.session
        with connect(server, ctx, session=session) as second:
            assert not second.session_reused
        assert server.wait_handshake(1).session_reused is False


def test_silent_mode_times_out_the_client_handshake(pki):
    with TlsServer(pki.server, mode="silent") as server:
        with pytest.raises((TimeoutError, socket.timeout)):
            connect(server, client_context(pki), timeout=0.5)
        conn = server.wait_for(lambda: server.connections and server.connections[0].client_hello
                               and server.connections[0])
        assert not conn.handshake_done and conn.client_hello.sni == "www.iottest.work"


def test_send_then_close_sends_close_notify(pki):
    with TlsServer(pki.server, mode="send_then_close", payload=b"goodbye") as server:
        raw = socket.create_connection(server.address, timeout=5)
        with client_context(pki).wrap_socket(raw, server_hostname="www.iottest.work",
                                             suppress_ragged_eofs=False) as tls:
            assert recv_exactly(tls, 7) == b"goodbye"
            assert tls.recv(100) == b""           # close_notify: a clean end of stream
        server.wait_for(lambda: server.conn.closed)


def test_close_mode_ends_without_close_notify(pki):
    with TlsServer(pki.server, mode="close") as server:
        raw = socket.create_connection(server.address, timeout=5)
        with client_context(pki).wrap_socket(raw, server_hostname="www.iottest.work",
                                             suppress_ragged_eofs=False) as tls:
            with pytest.raises(ssl.SSLEOFError):
                tls.recv(100)


def test_test_side_send_and_close(pki, tmp_path):
    keylog = tmp_path / "keys.log"
    with TlsServer(pki.server, mode="sink", keylog=keylog) as server:
        with connect(server, client_context(pki)) as tls:
            tls.sendall(b"to server")
            conn = server.wait_handshake()
            assert server.wait_received(9) == b"to server"
            conn.send(b"from test")
            assert recv_exactly(tls, 9) == b"from test"
            conn.close()
            assert tls.recv(100) == b""
        server.wait_for(lambda: conn.closed)
        assert conn.close_reason == "closed by test"
    assert b"CLIENT_HANDSHAKE_TRAFFIC_SECRET" in keylog.read_bytes()


def test_clienthello_parser_edges(pki):
    with TlsServer(pki.server) as server:
        connect(server, client_context(pki)).close()
        hello = server.wait_handshake().client_hello
    message = hello.raw
    # The same ClientHello fragmented over two records parses the same.
    records = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
                       for part in (message[:50], message[50:]))
    again = parse_client_hello(records)
    assert again.cipher_suites == hello.cipher_suites and again.sni == hello.sni
    assert 0x0304 in again.supported_versions
    assert parse_client_hello(records[:60]) is None
    with pytest.raises(ValueError):
        parse_client_hello(b"GET / HTTP/1.1\r\n\r\n")


def test_close_ends_idle_and_handshaking_connections(pki):
    server = TlsServer(pki.server, mode="echo")
    idle = socket.create_connection(server.address)            # never starts TLS
    tls = connect(server, client_context(pki))
    server.wait_connections(2)
    server.close()
    assert all(not c.thread.is_alive() for c in server.connections)
    idle.close()
    tls.close()


# --- openssl s_server / s_client ------------------------------------------------------------
PSK = ["-psk", "1a2b3c4d5e6f", "-psk_identity", "Client_identity"]


def test_openssl_psk_handshake_and_data():
    with OpenSslServer([*PSK, "-nocert", "-tls1_2", "-cipher", "PSK"]) as server:
        with OpenSslClient(server.address, [*PSK, "-tls1_2", "-cipher", "PSK"]) as client:
            client.wait_for_output(rb"Cipher is \S*PSK")
            client.write(b"psk hello\n")
            server.wait_for_output(rb"CIPHER is \S*PSK")
            server.wait_for_output(rb"psk hello")
            server.write(b"psk reply\n")
            client.wait_for_output(rb"psk reply")


def test_openssl_session_reuse_is_reported(pki, tmp_path):
    session_file = tmp_path / "session.pem"
    args = ["-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path), "-tls1_2"]
    with OpenSslServer(args) as server:
        with OpenSslClient(server.address, ["-tls1_2", "-sess_out", str(session_file)]) as c:
            c.wait_for_output(rb"Verify return code")
            server.wait_for_output(rb"CIPHER is")
        mark = server.mark()
        with OpenSslClient(server.address, ["-tls1_2", "-sess_in", str(session_file)]) as c:
            c.wait_for_output(rb"Reused, TLSv1\.2")
            server.wait_for_output(rb"Reused session-id", since=mark)


def test_openssl_server_initiated_renegotiation(pki):
    args = ["-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path), "-tls1_2"]
    with OpenSslServer(args) as server, OpenSslClient(server.address, ["-tls1_2"]):
        server.wait_for_output(rb"CIPHER is")
        mark = server.mark()
        server.write("r\n")          # s_server: "r" renegotiates, "R" also asks for a cert
        server.wait_for_output(rb"SSL_do_handshake -> 1", since=mark)


def test_dtls_through_relay_with_first_server_datagram_dropped(pki):
    args = ["-dtls1_2", "-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path)]
    with OpenSslServer(args) as server, UdpDropRelay(server.address, drop=[("s2c", 0)]) as relay:
        assert server.udp
        with OpenSslClient(relay.address, ["-dtls1_2"]) as client:
            client.wait_for_output(rb"Cipher is", timeout=10)
            client.write(b"dtls hello\n")
            server.wait_for_output(rb"dtls hello")
    assert [(d.direction, d.index) for d in relay.dropped()] == [("s2c", 0)]
    # DTLS handshake header after the 13-byte record header: type(1) length(3) message_seq(2).
    first_hellos = [d for d in relay.log if d.direction == "c2s" and d.data[0] == 22
                    and d.data[13] == 1 and d.data[17:19] == b"\x00\x00"]
    assert len(first_hellos) >= 2, "the client never retransmitted its first ClientHello"


def test_servers_hold_the_port_they_report(pki):
    """Ports come from the listening socket itself (bound to port 0 and kept), so nothing
    else can take one between a probe and the bind."""
    args = ["-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path)]
    with TlsServer(pki.server) as tls, OpenSslServer(args) as tcp, \
            OpenSslServer([*args, "-dtls1_2"]) as udp:
        assert udp.udp and not tcp.udp
        for server, kind in ((tls, socket.SOCK_STREAM), (tcp, socket.SOCK_STREAM),
                             (udp, socket.SOCK_DGRAM)):
            assert 1024 <= server.port <= 65535
            with socket.socket(socket.AF_INET, kind) as probe, pytest.raises(OSError):
                probe.bind(server.address)           # EADDRINUSE: the server holds it


# --- the demo peer ----------------------------------------------------------------------------
def test_demo_peer_routes_answer(tmp_path):
    async def scenario() -> None:
        peer = await start_demo_peer()
        try:
            assert set(peer.routes) == {"220.180.239.212:8010", "220.180.239.212:8011",
                                        "220.180.239.212:8009", "www.iottest.work:443"}
            reader, writer = await asyncio.open_connection(*peer.routes["220.180.239.212:8009"])
            writer.write(b"plain")                              # the TCP(IP) notes' echo
            assert await reader.readexactly(5) == b"plain"
            writer.close()
            await writer.wait_closed()
            cert, key = tmp_path / "client.pem", tmp_path / "client.key"
            cert.write_bytes(peer.client_cert_pem)
            key.write_bytes(peer.client_key_pem)
            ctx = ssl.create_default_context(cadata=peer.ca_pem.decode())
            ctx.load_cert_chain(cert, key)
            for route in ("220.180.239.212:8010", "220.180.239.212:8011"):
                reader, writer = await asyncio.open_connection(
                    *peer.routes[route], ssl=ctx, server_hostname="220.180.239.212")
                writer.write(b"Test data from SSL")
                assert await reader.readexactly(18) == b"Test data from SSL"
                writer.close()
                await writer.wait_closed()
            old = client_context_from_pem(peer.ca_pem)
            reader, writer = await asyncio.open_connection(
                *peer.routes["www.iottest.work:443"], ssl=old, server_hostname="www.iottest.work")
            assert writer.get_extra_info("ssl_object").version() == "TLSv1"
            writer.write(MANUAL_REQUEST)
            assert await reader.readexactly(434) == IOTTEST_RESPONSE
            writer.write(MANUAL_REQUEST)                      # keep-alive
            assert await reader.readexactly(434) == IOTTEST_RESPONSE
            # Left open on purpose: close() must end it.
        finally:
            await peer.close()
        assert await reader.read() == b""
        writer.close()

    asyncio.run(asyncio.wait_for(scenario(), 20))


def client_context_from_pem(ca_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.0-only client: the demo peer must accept the modules' oldest version."""
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def test_tcp_server_behave_read_record_reset_and_gone():
    """TcpServer(behave=...): a test's own server per connection (one TLS record read, then
    an RST); "sink" connections report the client's end (gone)."""
    from emulator.testing.peers.plain import TcpServer

    def behave(conn):
        conn.read_record()
        conn.reset()

    record = b"\x16\x03\x01" + struct.pack(">H", 4) + b"abcd"
    with TcpServer(behave=behave) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(record[:3])
            client.sendall(record[3:] + b"tail")
            try:
                assert client.recv(10) == b""              # (an RST may also say so)
            except ConnectionResetError:
                pass
        assert server.wait_connection(0).received[:len(record)] == record
    with TcpServer("sink") as server:
        client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        client.sendall(b"x")
        server.wait_connection(0).wait_received(1)
        assert not server.gone(0, timeout=0.1)
        client.close()
        assert server.gone(0)


def test_a_tls_connections_handler_calls_refuse_a_tests_thread():
    """recv / sendall / send_close_notify drive the connection's one SSL object from its own
    thread; from a test's thread they would race it (a random BufferError): a clear error."""
    import ssl as _ssl

    from emulator.testing.peers import default_pki

    pki = default_pki()
    with TlsServer(pki.server, mode="sink") as server:
        ctx = _ssl.create_default_context(cafile=str(pki.ca.cert_path))
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with ctx.wrap_socket(raw):
                conn = server.wait_handshake()
                for call in (lambda: conn.sendall(b"x"), lambda: conn.recv(1, timeout=0.1),
                             conn.send_close_notify):
                    with pytest.raises(RuntimeError, match="handler"):
                        call()
