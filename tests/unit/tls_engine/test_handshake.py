"""Handshake, versions, suites, SNI, ALPN and data transfer against OpenSSL servers
(emulator.testing.peers.TlsServer, legacy: TLS 1.0-1.2 and every suite, as the engine)."""
from __future__ import annotations

import hashlib
import os
import socket

import pytest

from emulator.testing.engine_client import ClientDriver
from emulator.testing.peers import TlsConnection, TlsServer, parse_client_hello
from tls_engine import (AppData, HandshakeComplete, PeerClosed, TlsClientSession, TlsFailure,
                        TlsSettings, native)

EXT_SERVER_NAME = 0
EXT_ALPN = 16


def connect(settings: TlsSettings, server: TlsServer) -> tuple[ClientDriver, object]:
    driver = ClientDriver(TlsClientSession(settings), server.port)
    return driver, driver.handshake()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def send_then_close(payload: bytes):
    """Server handler: on the client's first byte, send payload and close_notify (waiting
    keeps them out of the handshake's last read)."""
    def handler(conn: TlsConnection) -> None:
        conn.recv(1)
        conn.sendall(payload)
        conn.send_close_notify()
    return handler


def test_handshake_then_echo(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, result = connect(base_settings(), server)
        assert isinstance(result, HandshakeComplete), result
        assert driver.session.state == "established"
        assert result.version == "TLSv1.2" and not result.resumed
        assert driver.exchange(b"hello modem") == b"hello modem"
        driver.close()


def test_200_kib_each_way_arrives_intact(rsa_leaf, base_settings):
    payload = os.urandom(200 * 1024)
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, result = connect(base_settings(), server)
        assert isinstance(result, HandshakeComplete)
        echoed = driver.exchange(payload, timeout=10)
        driver.session.close()
        driver.flush()
        server.conn.done.wait(5)
        driver.close()
    assert sha256(echoed) == sha256(payload)
    assert sha256(bytes(server.conn.received)) == sha256(payload)


@pytest.mark.parametrize("ssl_version, server_sees, engine_reports", [
    (1, "TLSv1", "TLSv1.0"), (2, "TLSv1.1", "TLSv1.1"), (3, "TLSv1.2", "TLSv1.2"),
    (4, "TLSv1.2", "TLSv1.2"),
])
def test_sslversion_is_what_the_server_negotiates(rsa_leaf, base_settings, ssl_version,
                                                  server_sees, engine_reports):
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, result = connect(base_settings(ssl_version=ssl_version), server)
        assert isinstance(result, HandshakeComplete), result
        assert result.version == engine_reports
        assert driver.exchange(b"x") == b"x"
        driver.close()
    assert server.conn.version == server_sees


def test_pinned_tls12_fails_against_tls10_only_server(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True, max_version="TLSv1") as server:
        driver, result = connect(base_settings(ssl_version=3), server)
        driver.close()
    assert isinstance(result, TlsFailure) and result.kind == "handshake_failed"
    assert result.reason.startswith("server chose TLSv1.0, outside the configured sslversion")


def test_ssl30_is_unsupported_version():
    session = TlsClientSession(TlsSettings(server_name="localhost", ssl_version=0))
    session.start()
    assert session.events() == [TlsFailure("unsupported_version",
                                           "SSL 3.0 is not compiled into this TLS build (Mbed TLS 2.28)")]
    assert session.outgoing() == [] and session.state == "failed"


@pytest.mark.parametrize("suite_id, openssl_name", [
    (0x002F, "AES128-SHA"), (0x0035, "AES256-SHA"), (0x003D, "AES256-SHA256"),
    (0xC013, "ECDHE-RSA-AES128-SHA"), (0xC028, "ECDHE-RSA-AES256-SHA384"),
    (0xC02F, "ECDHE-RSA-AES128-GCM-SHA256"),
])
def test_configured_cipher_suite_is_used(rsa_leaf, base_settings, suite_id, openssl_name):
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, result = connect(base_settings(cipher_suites=(suite_id,)), server)
        driver.close()
    assert isinstance(result, HandshakeComplete), result
    assert server.conn.cipher == openssl_name
    assert result.cipher_id == suite_id
    assert result.cipher_name.startswith("TLS_")


def test_no_shared_cipher_suite_is_a_handshake_failure(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True, ciphers="ECDHE-RSA-AES128-GCM-SHA256") as server:
        driver, result = connect(base_settings(cipher_suites=(0x0035,)), server)
        driver.close()
    assert isinstance(result, TlsFailure) and result.kind == "handshake_failed"
    assert "handshake_failure(40)" in result.reason


def test_rc4_suite_without_native_is_unsupported_cipher(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    session = TlsClientSession(TlsSettings(server_name="localhost", cipher_suites=(0x0005,)))
    session.start()
    [failure] = session.events()
    assert failure.kind == "unsupported_cipher"
    assert "0x0005 TLS_RSA_WITH_RC4_128_SHA not available in this TLS build" in failure.reason


def test_without_native_rc4_is_left_out_of_a_mixed_list(monkeypatch):
    monkeypatch.setattr(native, "available", lambda: False)
    session = TlsClientSession(TlsSettings(server_name="localhost", cipher_suites=(0x0005, 0xC02F, 0x000A)))
    session.start()
    [hello] = session.outgoing()
    assert [s for s in parse_client_hello(hello).cipher_suites if s != 0x00FF] == [0xC02F]
    assert any("0x0005 TLS_RSA_WITH_RC4_128_SHA, 0x000A TLS_RSA_WITH_3DES_EDE_CBC_SHA" in n
               for n in session.notes)


@pytest.mark.parametrize("sni, server_name, expected", [
    (True, "localhost", "localhost"), (False, "localhost", None), (True, "127.0.0.1", None),
])
def test_sni_only_when_enabled_and_a_dns_name(rsa_leaf, base_settings, sni, server_name, expected):
    settings = base_settings(sni=sni, server_name=server_name)
    session = TlsClientSession(settings)
    session.start()
    [hello] = session.outgoing()
    assert parse_client_hello(hello).has_extension(EXT_SERVER_NAME) == (expected is not None)
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, result = connect(settings, server)
        driver.close()
    assert isinstance(result, HandshakeComplete), result
    assert server.conn.sni_callback_called and server.conn.sni == expected


def test_alpn_reaches_server_and_choice_is_reported(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True, alpn=["x-other", "mqtt"]) as server:
        driver, result = connect(base_settings(alpn=("mqtt", "http/1.1")), server)
        driver.close()
    assert isinstance(result, HandshakeComplete), result
    assert server.conn.alpn_selected == "mqtt" and result.alpn == "mqtt"


def test_no_alpn_configured_means_no_extension(rsa_leaf, base_settings):
    session = TlsClientSession(base_settings())
    session.start()
    [hello] = session.outgoing()
    assert not parse_client_hello(hello).has_extension(EXT_ALPN)
    with TlsServer(rsa_leaf, legacy=True, alpn=["mqtt"]) as server:
        driver, result = connect(base_settings(), server)
        driver.close()
    assert result.alpn is None and server.conn.alpn_selected is None


def test_data_and_close_notify_in_one_input_keep_the_data(rsa_leaf, base_settings):
    payload = b"last words " * 300
    with TlsServer(rsa_leaf, legacy=True, handler=send_then_close(payload)) as server:
        driver, result = connect(base_settings(), server)
        assert isinstance(result, HandshakeComplete)
        request(driver)
        rest = read_through_first_alert_record(driver.sock)
        driver.session.receive(rest)             # data records + close_notify at once
        events = driver.session.events()
        driver.close()
    assert events == [AppData(payload), PeerClosed()]
    assert driver.session.state == "closed"


def request(driver: ClientDriver) -> None:
    """The one byte send_then_close() servers wait for."""
    driver.session.send(b"!")
    driver.flush()


def read_through_first_alert_record(sock: socket.socket) -> bytes:
    """Raw TLS bytes up to and including the first (encrypted) alert record."""
    raw = bytearray()
    pos = 0
    while True:
        while len(raw) >= pos + 5 and len(raw) >= pos + 5 + int.from_bytes(raw[pos + 3:pos + 5], "big"):
            is_alert = raw[pos] == 21
            pos += 5 + int.from_bytes(raw[pos + 3:pos + 5], "big")
            if is_alert:
                return bytes(raw)
        chunk = sock.recv(65536)
        assert chunk, "connection closed before an alert record"
        raw += chunk


def test_peer_close_is_reported_once(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True, handler=send_then_close(b"bye")) as server:
        driver, _ = connect(base_settings(), server)
        request(driver)
        driver.pump(lambda ev: any(isinstance(e, PeerClosed) for e in ev))
        driver.session.receive(b"")  # the TCP FIN after close_notify
        driver.events.extend(driver.session.events())
        driver.close()
    assert driver.received() == b"bye"
    assert sum(isinstance(e, PeerClosed) for e in driver.events) == 1


def test_client_close_sends_close_notify(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        driver, _ = connect(base_settings(), server)
        driver.exchange(b"ping")
        driver.session.close()
        driver.flush()
        assert server.conn.done.wait(5)
        driver.close()
    assert server.conn.error is None  # the echo loop ended on close_notify, cleanly
    assert driver.session.state == "closed"


def test_handshake_flights_are_coalesced(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        session = TlsClientSession(base_settings())
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        session.start()
        flights = [session.outgoing()]
        sock.sendall(flights[0][0])
        while session.state == "handshaking":
            session.receive(sock.recv(65536))
            out = session.outgoing()
            if out:
                flights.append(out)
                sock.sendall(out[0])
        sock.close()
    assert all(len(flight) == 1 for flight in flights)
    assert len(flights) == 2  # ClientHello; ClientKeyExchange+CCS+Finished


def test_send_before_handshake_is_a_programming_error(base_settings):
    session = TlsClientSession(base_settings())
    with pytest.raises(RuntimeError):
        session.send(b"too early")


def test_eof_during_handshake_is_a_handshake_failure(base_settings):
    session = TlsClientSession(base_settings())
    session.start()
    session.receive(b"")
    [failure] = session.events()
    assert failure.kind == "handshake_failed" and "closed the connection" in failure.reason


def test_one_receive_larger_than_the_wrappers_32k_buffer(rsa_leaf, base_settings):
    payload = os.urandom(100 * 1024)
    with TlsServer(rsa_leaf, legacy=True, handler=send_then_close(payload)) as server:
        driver, _ = connect(base_settings(), server)
        request(driver)
        blob = read_through_first_alert_record(driver.sock)
        assert len(blob) > 64 * 1024
        driver.session.receive(blob)
        events = driver.session.events()
        driver.close()
    assert [type(e) for e in events] == [AppData, PeerClosed]
    assert len(events[0].data) == len(payload), (len(events[0].data), len(payload), len(blob))
    assert events[0].data == payload


def test_handshake_fed_one_byte_at_a_time(rsa_leaf, base_settings):
    with TlsServer(rsa_leaf, legacy=True) as server:
        session = TlsClientSession(base_settings(seclevel=1))
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        session.start()
        while session.state == "handshaking":
            for chunk in session.outgoing():
                sock.sendall(chunk)
            for i, byte in enumerate(sock.recv(65536)):
                session.receive(bytes([byte]))
        for chunk in session.outgoing():
            sock.sendall(chunk)
        [done] = session.events()
        session.send(b"tiny steps")
        sock.sendall(session.outgoing()[0])
        echoed = sock.recv(65536)
        for byte in echoed:
            session.receive(bytes([byte]))
        sock.close()
    assert isinstance(done, HandshakeComplete)
    assert b"".join(e.data for e in session.events() if isinstance(e, AppData)) == b"tiny steps"
