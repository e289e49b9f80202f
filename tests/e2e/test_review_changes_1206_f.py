"""Review of c2e88e2..e69590c: direct push data ending with CR LF (ATV0, S4, ATQ1, hex data
format + viewmode, UDP SERVICE with its sender and over recv_max, a push raised in a prompt, a
peer close right behind data, AT+QISWTMD to push, transparent data untouched, SSL push, trace
replay), routing of the address AT+QIDNSGIP showed (upper case / trailing-dot names, UDP,
AT+QPING, AT+QSSLOPEN by address: no SNI, certificate checked against the address, dns_fail,
--dns names sharing an address and --ping names: bugs found, fixed), <local_port> 556 and ATZ/AT&F pacing (a resumed handshake reset before the module's last
flight in push mode: hostile_servers_12).
Reaches only 127.0.0.1."""
from __future__ import annotations

import re
import socket

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, error_code, free_port,
                                      qiopen, qisend, wait_for)

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def udp_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def dnsgip(host, name: str) -> str:
    assert host.at(f'AT+QIDNSGIP=1,"{name}"') == OK
    assert host.read_until(b"\r\n\r\n") == b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n'
    return re.fullmatch(rb'\+QIURC: "dnsgip","([\d.]+)"\r\n', host.read_until(b"\r\n")).group(1).decode()


# -- push framing --------------------------------------------------------------------------
def test_tcp_push_ends_with_crlf_in_atv1(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    peer.send(b"hello")
    want = b'\r\n+QIURC: "recv",0,5\r\nhello\r\n'
    assert host.read_exactly(len(want)) == want
    assert host.at("AT") == OK                  # nothing else was written between


def test_tcp_push_in_atv0_header_and_data_end_with_crlf(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    host.write("ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    peer.send(b"xy\r\nz")
    want = b'+QIURC: "recv",0,5\r\nxy\r\nz\r\n'
    assert host.read_exactly(len(want)) == want
    host.write("AT\r")
    assert host.read_exactly(2) == b"0\r"
    host.write("ATV1\r")
    assert host.read_exactly(6) == b"\r\nOK\r\n"


def test_push_uses_s4_after_the_data(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    host.write("ATS4=33\r")
    assert host.read_exactly(6) == b"\r!OK\r!"
    peer.send(b"abc")
    want = b'\r!+QIURC: "recv",0,3\r!abc\r!'
    assert host.read_exactly(len(want)) == want
    host.write("ATS4=10\r")
    assert host.read_exactly(6) == b"\r\nOK\r\n"


def test_push_with_atq1_still_ends_with_crlf(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    host.write("ATQ1\r")
    peer.send(b"q1")
    want = b'\r\n+QIURC: "recv",0,2\r\nq1\r\n'
    assert host.read_exactly(len(want)) == want
    host.write("ATQ0\r")
    assert host.read_exactly(6) == OK


def test_hex_recv_format_does_not_convert_push_and_crlf_follows(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    assert host.at('AT+QICFG="dataformat",0,1') == OK
    assert host.at('AT+QICFG="viewmode",1') == OK
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    peer.send(b"\x00\x0d")
    want = b'\r\n+QIURC: "recv",0,2\r\n\x00\x0d\r\n'
    assert host.read_exactly(len(want)) == want


def test_push_raised_during_a_command_comes_after_its_ok_with_crlf(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    host.write("AT+QISEND=0,3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    peer.send(b"in-prompt")
    import time
    time.sleep(0.3)
    host.write(b"abc")
    want = b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0,9\r\nin-prompt\r\n'
    assert host.read_exactly(len(want)) == want
    wait_for(lambda: bytes(peer.got) == b"abc", timeout=5, what="abc at the server")


def test_push_larger_than_one_urc_each_chunk_ends_with_crlf(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    data = bytes(range(256)) * 12              # 3072 bytes: more than one URC (recv_max 1500)
    peer.send(data)
    got = bytearray()
    while len(got) < len(data):
        head = host.read_until(re.compile(rb'\+QIURC: "recv",0,\d+\r\n'))
        n = int(re.search(rb",(\d+)\r\n$", head).group(1))
        assert head == b'\r\n+QIURC: "recv",0,' + str(n).encode() + b"\r\n"
        assert 0 < n <= 1500
        got += host.read_exactly(n)
        assert host.read_exactly(2) == b"\r\n"
    assert bytes(got) == data
    assert host.at("AT") == OK


def test_udp_service_push_with_sender_then_crlf(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 3, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=1)
    a = udp_socket()
    a.sendto(b"dg1", ("127.0.0.1", lport))
    want = f'\r\n+QIURC: "recv",3,3,"127.0.0.1",{a.getsockname()[1]}\r\ndg1\r\n'.encode()
    assert host.read_exactly(len(want)) == want
    a.sendto(b"", ("127.0.0.1", lport))        # an empty datagram: never a URC with bare CR LF
    a.sendto(b"z", ("127.0.0.1", lport))
    rest = host.read_until(b"z\r\n")
    assert rest == f'\r\n+QIURC: "recv",3,1,"127.0.0.1",{a.getsockname()[1]}\r\nz\r\n'.encode()
    a.close()
    assert host.at("AT+QICLOSE=3") == OK


def test_udp_service_datagram_over_recv_max_two_urcs_each_with_sender_and_crlf(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 3, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=1)
    a = udp_socket()
    pa = a.getsockname()[1]
    a.sendto(b"x" * 1600 + b"END", ("127.0.0.1", lport))
    want = (f'\r\n+QIURC: "recv",3,1500,"127.0.0.1",{pa}\r\n'.encode() + b"x" * 1500 + b"\r\n"
            + f'\r\n+QIURC: "recv",3,103,"127.0.0.1",{pa}\r\n'.encode() + b"x" * 100 + b"END\r\n")
    assert host.read_exactly(len(want)) == want
    assert host.quiet_for(0.2) == b""
    a.close()
    assert host.at("AT+QICLOSE=3") == OK


def test_ssl_push_ends_with_crlf(modem, emulator, pki):
    host, _, _ = modem
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        assert host.at('AT+QSSLOPEN=1,1,2,"echo.example",443,1') == OK
        assert host.read_until(b"+QSSLOPEN: 2,0\r\n", timeout=10) == b"\r\n+QSSLOPEN: 2,0\r\n"
        host.write("AT+QSSLSEND=2,4\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"ping")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        want = b'\r\n+QSSLURC: "recv",2,4\r\nping\r\n'
        assert host.read_exactly(len(want), timeout=10) == want
        assert host.at("AT+QSSLCLOSE=2") == OK


# -- routing -------------------------------------------------------------------------------
def test_upper_case_trailing_dot_name_shows_same_address_and_it_is_routed(modem, tcp_echo):
    host, _, _ = modem
    ip = dnsgip(host, TCP_HOST)
    assert dnsgip(host, TCP_HOST.upper() + ".") == ip
    qiopen(host, 0, "TCP", ip, TCP_PORT)
    assert qisend(host, 0, b"up") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 2\r\nup\r\n" + OK
    assert host.at("AT+QICLOSE=0") == OK


def test_udp_to_the_dnsgip_address_reaches_the_routed_udp_server(modem, udp_echo):
    host, _, _ = modem
    ip = dnsgip(host, UDP_HOST)
    qiopen(host, 1, "UDP", ip, UDP_PORT, mode=1)
    assert qisend(host, 1, b"dgram") == b"\r\nSEND OK\r\n"
    want = b'\r\n+QIURC: "recv",1,5\r\ndgram\r\n'
    assert host.read_exactly(len(want)) == want
    assert host.at("AT+QICLOSE=1") == OK


def test_dnsgip_address_on_an_unrouted_port_is_not_the_name(modem, tcp_echo):
    """The name is routed for port 7000 only: its shown address on another port has no
    route (offline emulator): 566 for the address, 565 for the name."""
    host, _, _ = modem
    ip = dnsgip(host, TCP_HOST)
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{ip}",7999,0,0') == OK
    got = host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n")
    assert host.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",7999,0,0') == OK
    got2 = host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n")
    assert (got, got2) == (b"\r\n+QIOPEN: 0,566\r\n", b"\r\n+QIOPEN: 1,565\r\n")


def test_qping_of_the_dnsgip_address_uses_the_names_rtt(modem, emulator, tcp_echo):
    host, advance, _ = modem
    emulator.router.ping[TCP_HOST] = 50
    ip = dnsgip(host, TCP_HOST)
    assert host.at(f'AT+QPING=1,"{ip}",1,1') == OK
    advance(0.5)
    want = f'\r\n+QPING: 0,"{ip}",32,50,255\r\n\r\n+QPING: 0,1,1,0,50,50,50\r\n'.encode()
    assert host.read_exactly(len(want)) == want


def test_ssl_open_by_the_dnsgip_address_reaches_the_names_server(modem, emulator, pki):
    """A driver resolves echo.example with AT+QIDNSGIP and opens the address: seclevel 0
    (no check), the TLS server the name is routed to answers."""
    host, _, _ = modem
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        ip = dnsgip(host, "echo.example")
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        assert host.at(f'AT+QSSLOPEN=1,1,0,"{ip}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 0,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 0,0\r\n"
        host.write("AT+QSSLSEND=0,2\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"hi")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert host.read_until(b'+QSSLURC: "recv",0\r\n', timeout=10) == b'\r\n+QSSLURC: "recv",0\r\n'
        assert host.at("AT+QSSLRECV=0,10") == b"\r\n+QSSLRECV: 2\r\nhi\r\n" + OK
        assert host.at("AT+QSSLCLOSE=0") == OK


# -- <local_port> 556 ----------------------------------------------------------------------
def test_second_listener_556_then_free_again_after_close(modem):
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    assert host.at(f'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,556\r\n"
    assert error_code(host) == 556
    assert host.at("AT+QICLOSE=0") == OK
    assert host.at(f'AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 1,0\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    assert host.at("AT+QICLOSE=1") == OK


def _free_for_udp_and_tcp() -> int:
    """A port number free on 127.0.0.1 for UDP and for TCP (other tests run alongside)."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM)
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            probe.close()
    raise AssertionError("no port free for both UDP and TCP")


def test_second_udp_service_556_on_another_context_too(modem):
    host, _, _ = modem
    lport = _free_for_udp_and_tcp()
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    assert host.at(f'AT+QIOPEN=1,1,"UDP SERVICE","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,556\r\n"
    assert error_code(host) == 556
    qiopen(host, 2, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)   # TCP: another port space
    assert host.at("AT+QICLOSE=0") == OK and host.at("AT+QICLOSE=2") == OK


def test_ssl_open_by_address_sends_no_sni_of_the_routed_name(modem, emulator, pki):
    """The host dialled an IP literal: the ClientHello carries no server_name (RFC 6066: no
    IP literal in SNI), never the name the address was routed from."""
    host, _, _ = modem
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        ip = dnsgip(host, "echo.example")
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        assert host.at('AT+QSSLCFG="sni",1,1') == OK
        assert host.at(f'AT+QSSLOPEN=1,1,0,"{ip}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 0,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 0,0\r\n"
        conn = server.wait_connections(1)[0]
        assert conn.sni is None
        assert host.at("AT+QSSLCLOSE=0") == OK


def test_two_names_sharing_a_dns_address_the_address_reaches_the_routed_one(modem, emulator, tcp_echo):
    """a.example and b.example both resolve to 203.0.113.9 (one server, two names); only
    b.example is routed.  Dialling the address (or a.example) reaches that one server."""
    host, _, _ = modem
    emulator.router.add_dns("a.example", "203.0.113.9")
    emulator.router.add_dns("b.example", "203.0.113.9")
    emulator.router.add_map("b.example", 80, "127.0.0.1", tcp_echo.port)
    qiopen(host, 0, "TCP", "b.example", 80)                   # the name itself: reached
    assert host.at("AT+QICLOSE=0") == OK
    assert host.at('AT+QIOPEN=1,1,"TCP","203.0.113.9",80,0,0') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    assert host.at("AT+QICLOSE=1") == OK


def test_a_dns_name_without_route_whose_address_another_name_routes(modem, emulator, tcp_echo):
    host, _, _ = modem
    emulator.router.add_dns("a.example", "203.0.113.9")
    emulator.router.add_dns("b.example", "203.0.113.9")
    emulator.router.add_map("b.example", 80, "127.0.0.1", tcp_echo.port)
    assert host.at('AT+QIOPEN=1,1,"TCP","a.example",80,0,0') == OK
    assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    assert host.at("AT+QICLOSE=1") == OK


def test_ipv6_dns_entry_address_typed_differently_is_the_same_address(modem, emulator, tcp_echo):
    """The --dns entry is kept normalised; the host may type the literal in upper case."""
    router = emulator.router
    router.add_dns("six.example", "2001:DB8:0:0::7")
    router.add_map("six.example", 80, "127.0.0.1", tcp_echo.port)
    assert router.lookup("2001:db8::7", 80) == ("127.0.0.1", tcp_echo.port)
    assert router.lookup("[2001:DB8::7]", 80) == ("127.0.0.1", tcp_echo.port)
    assert router.lookup("2001:db8::7", 81) is None


# -- push framing around other events -------------------------------------------------------
def test_peer_close_right_after_data_push_crlf_then_closed_urc(modem, peer_factory):
    host, _, _ = modem
    peer = peer_factory()
    qiopen(host, 0, mode=1)
    wait_for(lambda: peer.conn is not None, timeout=5, what="connection")
    peer.send(b"bye")
    peer.close()
    want = b'\r\n+QIURC: "recv",0,3\r\nbye\r\n\r\n+QIURC: "closed",0\r\n'
    assert host.read_exactly(len(want)) == want
    assert host.at("AT+QICLOSE=0") == OK


def test_switch_buffer_to_push_pushes_held_data_with_crlf(modem, tcp_echo):
    host, _, _ = modem
    qiopen(host, 0)
    assert qisend(host, 0, b"held") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QISWTMD=0,1") == OK
    want = b'\r\n+QIURC: "recv",0,4\r\nheld\r\n'
    assert host.read_exactly(len(want)) == want
    assert host.at("AT+QICLOSE=0") == OK


def test_transparent_data_get_no_crlf_appended(modem, tcp_echo):
    host, advance, _ = modem
    qiopen(host, 0)
    assert host.at("AT+QISWTMD=0,2") == b"\r\nCONNECT\r\n"
    host.write(b"raw!")
    advance(0.3)                                         # transwaittm 2 x 100 ms
    assert host.read_exactly(4) == b"raw!"
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"\r\nOK\r\n") == OK           # nothing between the data and OK
    assert host.at("AT+QICLOSE=0") == OK



def test_qping_of_the_address_dnsgip_showed_for_a_ping_only_name(modem, emulator):
    """A --ping host (no route, no --dns entry): AT+QIDNSGIP resolves it offline; a driver
    that pings the address it got is answered as the name is."""
    host, advance, _ = modem
    emulator.router.add_ping("pingme.example", 30)
    assert host.at('AT+QPING=1,"pingme.example",1,1') == OK
    advance(0.5)
    first = host.read_until(b"+QPING: 0,1,1,0,30,30,30\r\n")
    ip = re.search(rb'\+QPING: 0,"([\d.]+)",32,30,255', first).group(1).decode()
    assert dnsgip(host, "pingme.example") == ip
    assert host.at(f'AT+QPING=1,"{ip}",1,1') == OK
    advance(1.5)
    want = f'\r\n+QPING: 0,"{ip}",32,30,255\r\n\r\n+QPING: 0,1,1,0,30,30,30\r\n'.encode()
    assert host.read_until(re.compile(rb"\+QPING: 0,1,\d,\d[^\r]*\r\n")) == want


# -- ATZ / AT&F on a paced port ------------------------------------------------------------
@pytest.mark.parametrize("line", ["AT&FZ", "AT&F0", "ATZ0", "AT&F;&W;Z"])
def test_reset_commands_on_a_fresh_baud_port_keep_its_pace(emulator, open_modem, line):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at(line) == OK
    assert emulator.run(lambda: port.port.baud) == 9600
    assert host.at("ATE0") .endswith(OK)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK


def test_ipr_change_then_and_f_moves_back_to_the_factory_rate(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=38400") == OK
    assert emulator.run(lambda: port.port.baud) == 38400
    assert host.at("AT&F") == OK
    assert emulator.run(lambda: port.port.baud) == 115200


# -- the control API's dns_fail with the new routing ---------------------------------------
def test_dns_fail_spares_the_shown_address_and_takes_the_name(modem, emulator, tcp_echo):
    host, _, _ = modem
    ip = dnsgip(host, TCP_HOST)
    assert emulator.control("dns_fail", count=1) == {"ok": True}
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{ip}",{TCP_PORT},0,0') == OK
    first = host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n")
    assert host.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    second = host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n")
    assert (first, second) == (b"\r\n+QIOPEN: 0,0\r\n", b"\r\n+QIOPEN: 1,565\r\n")
    assert host.at("AT+QICLOSE=0") == OK


def test_dns_fail_applies_to_a_dns_entry_name_dialled_at_its_address(modem, emulator, tcp_echo):
    """A --dns name without a route of its own is still a name: an injected DNS failure fails
    its open (565); the next open reaches the address's route."""
    host, _, _ = modem
    emulator.router.add_dns("named.example", "203.0.113.7")
    emulator.router.add_map("203.0.113.7", 80, "127.0.0.1", tcp_echo.port)
    assert emulator.control("dns_fail", count=1) == {"ok": True}
    assert host.at('AT+QIOPEN=1,0,"TCP","named.example",80,0,0') == OK
    first = host.read_until(b"+QIOPEN: 0,") + host.read_until(b"\r\n")
    assert host.at('AT+QIOPEN=1,1,"TCP","named.example",80,0,0') == OK
    second = host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n")
    assert (first, second) == (b"\r\n+QIOPEN: 0,565\r\n", b"\r\n+QIOPEN: 1,0\r\n")
    assert host.at("AT+QICLOSE=1") == OK


def test_ssl_open_of_a_dns_entry_name_routed_by_its_address_sends_the_name_as_sni(modem, emulator, pki):
    host, _, _ = modem
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_dns("named.example", "203.0.113.8")
        emulator.router.add_map("203.0.113.8", 443, "127.0.0.1", server.address[1])
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        assert host.at('AT+QSSLCFG="sni",1,1') == OK
        assert host.at('AT+QSSLOPEN=1,1,0,"named.example",443,1') == OK
        assert host.read_until(b"+QSSLOPEN: 0,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert server.wait_connections(1)[0].sni == "named.example"
        st = host.at("AT+QSSLSTATE=0")
        assert re.search(rb'\+QSSLSTATE: 0,"SSLClient","named\.example",443,', st), st
        host.write("AT+QSSLSEND=0,3\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"sni")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        want = b'\r\n+QSSLURC: "recv",0,3\r\nsni\r\n'
        assert host.read_exactly(len(want), timeout=10) == want
        assert host.at("AT+QSSLCLOSE=0") == OK


def test_verified_open_by_the_shown_address_checks_the_address_not_the_name(modem, emulator, pki):
    """behaviour.md: the name the host dialled is checked against the certificate; an IP
    literal must be in its subjectAltName.  Dialling the address AT+QIDNSGIP showed reaches
    the name's server, whose certificate does not list that address: 566; the name: 0."""
    from tests.e2e.ssl_options_support import HOST, PORT, trust
    host, _, _ = modem
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.address[1])
        ip = dnsgip(host, HOST)
        trust(host, 1, pki.ca.cert_pem)
        assert host.at(f'AT+QSSLOPEN=1,1,0,"{ip}",{PORT},0') == OK
        assert host.read_until(b"+QSSLOPEN: 0,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 0,566\r\n"
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",{PORT},0') == OK
        assert host.read_until(b"+QSSLOPEN: 1,", timeout=10) + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 1,0\r\n"
        assert host.at("AT+QSSLCLOSE=1") == OK


# -- trace + replay ----------------------------------------------------------------------------
def _echo_close(conn) -> None:
    from tests.e2e import replay_support as rs
    rs.echo_close(conn)


def test_trace_of_atv0_pushes_replays(open_modem, emulator, tmp_path, capsys):
    from emulator.testing.peers import TcpServer
    from tests.e2e import replay_support as rs
    path = tmp_path / "atv0_push.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = rs.traced_modem(open_modem, emulator, path)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        rs.tcp_open(host, 0)
        assert rs.advance_until(host, advance, b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.echo_on(host, 0, b"first")
        host.write(b"ATV0\r\n")
        assert host.read_until(b"0\r") == b"0\r"
        host.write(b"AT+QISEND=0,3\r\n")
        assert host.read_until(b"> ") == b"> "
        host.write(b"two")
        want = b'SEND OK\r\n+QIURC: "recv",0,3\r\ntwo\r\n'
        assert host.read_until(b"two\r\n") == want
        host.write(b"ATV1\r\n")
        assert host.read_until(b"\r\nOK\r\n") == OK
        assert host.at("AT+QICLOSE=0") == OK
        rs.finish(emulator)
    rs.replays(capsys, path)


def test_trace_of_an_open_by_the_dnsgip_address_replays(open_modem, emulator, tmp_path, capsys):
    """A driver resolving with AT+QIDNSGIP, then opening the address it got (now routed to
    the name's server): the trace replays without a difference."""
    from emulator.testing.peers import TcpServer
    from tests.e2e import replay_support as rs
    path = tmp_path / "dnsgip_addr.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = rs.traced_modem(open_modem, emulator, path)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        ip = dnsgip(host, "tcp.example")
        rs.tcp_open(host, 0, name=ip)
        assert rs.advance_until(host, advance, b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.echo_on(host, 0, b"by-address")
        assert host.at("AT+QICLOSE=0") == OK
        rs.finish(emulator)
    rs.replays(capsys, path)
