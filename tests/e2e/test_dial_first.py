"""An open's TCP connect starts before its socket and settings are made when nothing can
refuse the open after it (SslService._dial_first: a seclevel 0 context whose options built
the last settings, no fault, no network conditions).  What must not change: every open the
module refuses before any packet still makes no connection, a fault or a slow link still
applies to the open that follows a good one, and the context's new options are used."""
from __future__ import annotations

import pytest

from emulator.testing.host import Host

OK = b"\r\nOK\r\n"


def opened(host: Host, client: int, name: str) -> bytes:
    assert host.at(f'AT+QSSLOPEN=1,1,{client},"{name}",443,0').endswith(OK)
    return host.read_until(b"\r\n", timeout=5) + host.read_until(b"\r\n", timeout=5)


def first_good_open(host: Host, name: str, server) -> None:
    """ATE0, the PDP up, one open and close on context 1 (seclevel 0): its settings built."""
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+QIACT=1") == OK
    assert opened(host, 0, name) == b"\r\n+QSSLOPEN: 0,0\r\n"
    server.wait_handshake()
    assert host.at("AT+QSSLCLOSE=0") == OK


@pytest.fixture
def server(tls_server):
    return tls_server.server              # (the TlsServer: connections, wait_*)


@pytest.fixture
def host(modem):
    h = Host(modem.path)
    yield h
    h.close()


@pytest.mark.parametrize("op, code", [("connect_refuse", 566), ("dns_fail", 565)])
def test_a_fault_after_a_good_open_still_makes_no_connection(modem, tls_server, server, host, op, code):
    first_good_open(host, tls_server.host, server)
    assert len(tls_server.connections) == 1
    assert modem.control(op, count=1)["ok"]
    assert opened(host, 1, tls_server.host) == f"\r\n+QSSLOPEN: 1,{code}\r\n".encode()
    assert host.quiet_for(0.3) == b""
    assert len(tls_server.connections) == 1                   # the refused open dialled nothing
    assert opened(host, 2, tls_server.host) == b"\r\n+QSSLOPEN: 2,0\r\n"
    server.wait_handshake()
    assert len(tls_server.connections) == 2


@pytest.mark.modem_manual_time
def test_a_handshake_stall_after_a_good_open_is_a_stall(modem, tls_server, server, host):
    first_good_open(host, tls_server.host, server)
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    assert modem.control("handshake_stall")["ok"]
    assert host.at(f'AT+QSSLOPEN=1,1,1,"{tls_server.host}",443,0').endswith(OK)
    server.wait_connections(2)                                 # accepted, then nothing answered
    assert host.quiet_for(0.3) == b""
    modem.advance(10.5)
    assert host.read_until(b"+QSSLOPEN: 1,569\r\n", timeout=5).endswith(b"+QSSLOPEN: 1,569\r\n")


def test_a_context_moved_to_seclevel_1_without_its_ca_dials_nothing(tls_server, server, host):
    first_good_open(host, tls_server.host, server)
    assert host.at('AT+QSSLCFG="seclevel",1,1') == OK
    assert host.at('AT+QSSLCFG="cacert",1,"UFS:none.pem"') == OK
    assert opened(host, 1, tls_server.host) == b"\r\n+QSSLOPEN: 1,552\r\n"
    assert host.quiet_for(0.3) == b""
    assert len(tls_server.connections) == 1


def test_an_option_changed_after_a_good_open_is_in_the_next_handshake(tls_server, server, host):
    first_good_open(host, tls_server.host, server)
    assert server.connections[0].version == "TLSv1.2"
    assert host.at('AT+QSSLCFG="sslversion",1,2') == OK       # TLS 1.1 only from now on
    answer = opened(host, 1, tls_server.host)
    server.wait_connections(2)
    # the default peer takes TLS 1.2 and newer: TLS 1.1 alone is refused -- by the new options
    assert answer == b"\r\n+QSSLOPEN: 1,566\r\n", answer
    assert host.at('AT+QSSLCFG="sslversion",1,4') == OK
    assert opened(host, 2, tls_server.host) == b"\r\n+QSSLOPEN: 2,0\r\n"


@pytest.mark.modem_manual_time
def test_a_slow_link_after_a_good_open_delays_the_next_connect(modem, tls_server, server, host):
    first_good_open(host, tls_server.host, server)
    assert modem.control("net", latency_ms=400)["ok"]          # the whole modem's links
    assert host.at(f'AT+QSSLOPEN=1,1,1,"{tls_server.host}",443,0').endswith(OK)
    assert host.quiet_for(0.3) == b""                          # the connect's round trip: 0.8 s
    modem.advance(0.7)
    assert b"+QSSLOPEN" not in host.quiet_for(0.3)
    for _ in range(20):                                         # then the flights, each 0.4 s a way
        modem.advance(0.4)
        got = host.quiet_for(0.05)
        if got:
            break
    assert got == b"\r\n+QSSLOPEN: 1,0\r\n"


def test_a_seclevel_1_ca_deleted_after_a_good_open_dials_nothing(tls_server, server, host):
    """The options stay the same but the file goes: seclevel 1 and 2 never dial first (their
    settings depend on files read at the open)."""
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+QIACT=1") == OK
    assert host.upload("UFS:ca.pem", tls_server.ca_pem).endswith(OK)
    assert host.at('AT+QSSLCFG="seclevel",1,1') == OK
    assert host.at('AT+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK
    assert opened(host, 0, tls_server.host) == b"\r\n+QSSLOPEN: 0,0\r\n"
    server.wait_handshake()
    assert host.at("AT+QSSLCLOSE=0") == OK
    assert host.at('AT+QFDEL="UFS:ca.pem"') == OK
    assert opened(host, 1, tls_server.host) == b"\r\n+QSSLOPEN: 1,552\r\n"
    assert host.quiet_for(0.3) == b""
    assert len(tls_server.connections) == 1
