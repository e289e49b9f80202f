"""AT+QSSLCFG "sslversion", "ciphersuite", "sni", "alpn" through the pty, seen from the
server: the version OpenSSL negotiated, the raw ClientHello (offered suites in order, SNI,
ALPN list) and, for RC4/3DES which this OpenSSL lacks, an Mbed TLS server."""
from __future__ import annotations

import logging
import re

import pytest

from emulator.modem.profile import load_profile
from emulator.testing.peers import TlsServer
from emulator.testing.peers.mbedtls_peer import MbedtlsServer, mbedtls_server_context
from tests.e2e.ssl_options_support import HOST, cfg, close, last_error, open_ssl, recv_all
from tls_engine.ciphers import suite_offerable

SCSV = 0x00FF          # TLS_EMPTY_RENEGOTIATION_INFO_SCSV, added by Mbed TLS to every offer


def offered(conn) -> list[int]:
    suites = conn.cipher_suites
    assert suites is not None and suites[-1] == SCSV, suites
    return suites[:-1]


def handshake(ec2x, net, server: TlsServer, *settings: tuple[str, object], host: str = HOST):
    """What `server` saw of one AT+QSSLOPEN on context 0 (which succeeds, then is closed)
    with these AT+QSSLCFG (option, value) settings written first."""
    with server:
        net(server, host=host)
        for option, value in settings:
            cfg(ec2x, option, 0, value)
        assert open_ssl(ec2x, 0, host=host) == 0
        conn = server.wait_handshake()
        close(ec2x)
    return conn


# -- sslversion -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, version", [(1, "TLSv1"), (2, "TLSv1.1"), (3, "TLSv1.2")])
def test_sslversion_pins_exactly_that_version(ec2x, net, pki, value, version):
    conn = handshake(ec2x, net, TlsServer(pki.server, min_version="TLSv1", max_version="TLSv1.2"),
                     ("sslversion", value))
    assert conn.version == version
    # the ClientHello itself carries the pinned version (legacy_version, no TLS 1.3 extension)
    assert conn.client_hello.client_version == {1: 0x0301, 2: 0x0302, 3: 0x0303}[value]


def test_sslversion_pinned_refuses_a_server_that_wants_another(ec2x, net, pki):
    with TlsServer(pki.server, min_version="TLSv1.2", max_version="TLSv1.2") as server:
        net(server)
        cfg(ec2x, "sslversion", 0, 1)                 # TLS 1.0 only: OpenSSL refuses
        assert open_ssl(ec2x, 0) == 566
        assert server.wait_handshake().handshake_error


def test_sslversion_4_is_tls12_against_a_modern_server(ec2x, net, pki):
    # OpenSSL defaults: TLS 1.2 and 1.3; sslversion 4 is the default
    conn = handshake(ec2x, net, TlsServer(pki.server))
    assert conn.version == "TLSv1.2"
    assert conn.client_hello.client_version == 0x0303


def test_sslversion_0_ssl3_is_not_supported(ec2x, net, pki, caplog):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    with TlsServer(pki.server) as server:
        net(server)
        cfg(ec2x, "sslversion", 0, 0)
        assert open_ssl(ec2x, 0) == 555
        assert last_error(ec2x) == 555
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 555,operation not supported\r\n\r\nOK\r\n"
    assert any("SSL 3.0 is not compiled" in r.getMessage() for r in caplog.records
               if r.name == "emulator.ssl"), caplog.text


# -- ciphersuite -------------------------------------------------------------------------------
def test_one_cipher_suite_is_offered_alone(ec2x, net, pki):
    conn = handshake(ec2x, net, TlsServer(pki.server), ("ciphersuite", "0X002F"))
    assert offered(conn) == [0x002F]
    assert conn.cipher_id == 0x002F


@pytest.mark.parametrize("value", ['"0XC02F:0X0035:0X009C"', "0XC02F:0X0035:0X009C"],
                         ids=["quoted", "unquoted"])
def test_cipher_list_is_offered_in_order(ec2x, net, pki, value):
    with TlsServer(pki.server) as server:
        net(server)
        cfg(ec2x, "ciphersuite", 0, value)
        assert ec2x.at('AT+QSSLCFG="ciphersuite",0') == \
            b'\r\n+QSSLCFG: "ciphersuite",0,0XC02F:0X0035:0X009C\r\n\r\nOK\r\n'
        assert open_ssl(ec2x, 0) == 0
        conn = server.wait_handshake()
        close(ec2x)
    assert offered(conn) == [0xC02F, 0x0035, 0x009C]
    assert conn.cipher_id in (0xC02F, 0x0035, 0x009C)


def test_0xffff_offers_the_profile_table(ec2x, net, pki):
    table = [int(x, 16) for x in load_profile("ec2x")["ssl.cipher_suites"]]
    conn = handshake(ec2x, net, TlsServer(pki.server), ("ciphersuite", "0XFFFF"))
    assert offered(conn) == [s for s in table if suite_offerable(s)]


@pytest.mark.needs_native
@pytest.mark.parametrize("suite", ["0X0005", "0X000A"])
def test_rc4_3des_offered_on_the_wire_openssl_has_none(ec2x, net, pki, suite):
    with TlsServer(pki.server, min_version="TLSv1") as server:
        net(server)
        cfg(ec2x, "ciphersuite", 0, suite)
        assert open_ssl(ec2x, 0) == 566               # no shared cipher with OpenSSL 3
        conn = server.wait_handshake()
    assert offered(conn) == [int(suite, 16)]
    assert conn.handshake_error


@pytest.mark.needs_native
@pytest.mark.parametrize("suite, name", [("0X0005", "TLS-RSA-WITH-RC4-128-SHA"),
                                         ("0X000A", "TLS-RSA-WITH-3DES-EDE-CBC-SHA")])
def test_rc4_3des_negotiated_with_an_mbedtls_server(ec2x, net, pki, suite, name):
    server = MbedtlsServer(mbedtls_server_context(pki.server, [0x0005, 0x000A]))
    net(server)
    cfg(ec2x, "ciphersuite", 0, suite)
    assert open_ssl(ec2x, 0) == 0
    assert ec2x.send_data(0, b"rc4?") == b"\r\nSEND OK\r\n"
    assert recv_all(ec2x, 0, 4) == b"rc4?"              # the server echoes its 4 bytes
    close(ec2x)
    server.join()
    assert server.error is None, server.error
    assert server.cipher == name and server.received == b"rc4?"


# -- sni ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sni, host, expected", [(1, HOST, HOST), (0, HOST, None),
                                                 (1, "220.180.239.212", None)],
                         ids=["sni-on", "sni-off", "ip-literal"])
def test_sni_carries_the_dialled_name_only_when_enabled(ec2x, net, pki, sni, host, expected):
    conn = handshake(ec2x, net, TlsServer(pki.server), ("sni", sni), host=host)   # really to 127.0.0.1
    assert conn.client_hello.sni == expected
    assert conn.sni == expected                        # what OpenSSL's SNI callback got
    assert conn.client_hello.has_extension(0) == (expected is not None)


# -- alpn ------------------------------------------------------------------------------------------
def test_alpn_list_reaches_the_server_and_the_choice_is_logged(ec2x, net, pki, caplog):
    caplog.set_level(logging.INFO, logger="emulator.ssl")
    conn = handshake(ec2x, net, TlsServer(pki.server, alpn=["http/1.1"]), ("alpn", '"h2,http/1.1"'))
    assert conn.alpn_offered == [b"h2", b"http/1.1"]
    assert conn.alpn_selected == "http/1.1"
    lines = [r.getMessage() for r in caplog.records
             if r.name == "emulator.ssl" and " connected to " in r.getMessage()]
    # the version, the cipher, the ALPN choice: one field each (a plain socket has only its type)
    assert len(lines) == 1 and re.fullmatch(
        r"SSL socket \d+ connected to \S+:\d+ \(TLSv1\.2, TLS_[A-Z0-9_]+, ALPN http/1\.1\)", lines[0]), lines


def test_empty_alpn_sends_no_extension(ec2x, net, pki):
    conn = handshake(ec2x, net, TlsServer(pki.server, alpn=["http/1.1"]),
                     ("alpn", '"h2"'), ("alpn", '""'))
    assert conn.alpn_offered is None and not conn.client_hello.has_extension(16)
    assert conn.alpn_selected is None


# -- groups (no AT option: what every ClientHello offers) ---------------------------------------
# Mbed TLS 2.28's own order, strongest first (IANA named-group ids): secp521r1, brainpoolP512r1,
# secp384r1, brainpoolP384r1, secp256r1, secp256k1, brainpoolP256r1, secp224r1, secp224k1,
# secp192r1, secp192k1, x25519, x448.
MBEDTLS_GROUPS = [25, 28, 24, 27, 23, 22, 26, 21, 20, 19, 18, 29, 30]


def test_supported_groups_are_mbed_tls_defaults_strongest_first(ec2x, net, pki):
    """behaviour.md (TLS options on the wire): no AT+QSSLCFG option sets the ECDHE groups;
    the ClientHello's supported_groups extension (10) lists Mbed TLS 2.28's defaults in its
    order, secp521r1 first, so a server that follows the client's preference (openssl
    s_server's default) picks P-521 and one that prefers its own (Python ssl) x25519."""
    conn = handshake(ec2x, net, TlsServer(pki.server))
    body = conn.client_hello.extension(10)
    assert body is not None
    size = int.from_bytes(body[:2], "big")
    groups = [int.from_bytes(body[2 + i:4 + i], "big") for i in range(0, size, 2)]
    assert groups == MBEDTLS_GROUPS
