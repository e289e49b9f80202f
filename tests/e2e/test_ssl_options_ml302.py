"""The ML302's AT+QSSLCFG "sslversion" and "ciphersuite" on the wire (the rest of its
subset — seclevel, certificate slots, ignorertctime — is in tests/test_ml302_ssl.py):
the server records the negotiated version and the raw ClientHello."""
from __future__ import annotations

import pytest

from emulator.testing.peers import TlsServer, default_pki
from tests.e2e.ssl_options_support import HOST, PORT, opened

SCSV = 0x00FF


@pytest.fixture
def ml302_net(emulator, ml302):
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert ml302.at("AT+CGACT=1,1").endswith(b"OK\r\n")

    def route(server) -> None:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    return route


def open_close(modem) -> int:
    assert modem.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == b"\r\nOK\r\n"
    code = opened(modem, 0)
    if code == 0:
        assert modem.at("AT+QSSLCLOSE=0").startswith(b"\r\nOK\r\n")
        modem.seen(b"0,CLOSE OK\r\n")
    return code


@pytest.mark.parametrize("value, version", [(1, "TLSv1"), (2, "TLSv1.1"), (3, "TLSv1.2")])
def test_ml302_sslversion_pins_the_version(ml302, ml302_net, value, version):
    with TlsServer(default_pki().server, min_version="TLSv1", max_version="TLSv1.2") as server:
        ml302_net(server)
        assert ml302.at(f'AT+QSSLCFG="sslversion",0,{value}') == b"\r\nOK\r\n"
        assert open_close(ml302) == 0
        assert server.wait_handshake().version == version


def test_ml302_ciphersuite_list_is_offered_in_order(ml302, ml302_net):
    with TlsServer(default_pki().server) as server:
        ml302_net(server)
        assert ml302.at('AT+QSSLCFG="ciphersuite",0,"0X003D:0X002F:0X0035"') == b"\r\nOK\r\n"
        assert open_close(ml302) == 0
        conn = server.wait_handshake()
    assert conn.cipher_suites == [0x003D, 0x002F, 0x0035, SCSV]
    assert ml302.at('AT+QSSLCFG="ciphersuite",0,"0XC02F"') == b"\r\nERROR\r\n"   # not an ML302 suite
