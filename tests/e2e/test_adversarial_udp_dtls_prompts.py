"""Adversarial tests of the UDP / DTLS paths and the data prompts (EC2x): DTLS handshakes on a
lossy, duplicating, reordering network (a programmable loopback relay), the retransmission
timer on manual time, a server that answers from another port, one AT+QSSLSEND = one DTLS
record = one datagram; plain UDP sockets (one AT+QISEND = one datagram, AT+QIRD one datagram
and its sender, a UDP SERVICE talking to many peers, ICMP errors, empty datagrams); the
"> " prompts (Ctrl+Z / ESC, binary data, lengths, a host that hangs up, echo, ATV0, two
prompts back to back, SEND FAIL on a blackholed link).  Every check is on exact bytes, on the
pty and on the server side."""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, UdpEchoServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import CT_APP, CT_CCS, CT_HANDSHAKE, is_client_hello, records
from tests.e2e.socket_support import RESULT, UDP_HOST, UDP_PORT, free_port, qiopen, qird, qisend, wait_for
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, open_ssl, recv_all


# -- helpers (the relay: emulator/testing/peers/udp_relay.py UdpMiddlebox) ----------------------
def has_ccs(d: bytes) -> bool:
    return any(r.type == CT_CCS for r in records(d, whole=True))


@pytest.fixture
def dtls_server(pki):
    servers = []

    def start(*extra: str) -> OpenSslServer:
        cert, key = pki.server.load_args
        server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0", *extra])
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


def dtls_open(host, emulator, address, client_id: int = 0, timeout: float = 20) -> int:
    emulator.router.add_map(HOST, PORT, "127.0.0.1", address[1])
    cfg(host, "dtls", 0, 1)
    return open_ssl(host, 0, client_id, timeout=timeout)


def udp_sink(emulator, host_name: str = UDP_HOST, port: int = UDP_PORT) -> UdpEchoServer:
    server = UdpEchoServer(echo=False)
    emulator.router.add_map(host_name, port, "127.0.0.1", server.port)
    return server


def peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


# == DTLS =====================================================================================
# Was a bug, fixed: DTLS retransmission ran on the system clock (the session's deadline on
# time.monotonic(), Mbed TLS's timer on gettimeofday), so advancing the modem's manual time
# resent nothing; both now read the modem's time (TlsSettings.monotonic, NativeSsl.use_clock).
def test_dtls_client_hello_retransmitted_on_manual_time(ec2x_strict, emulator):
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", silent.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
        silent.wait_datagrams(1, 5)
        advance(1.1)                                        # RFC 6347 / Mbed TLS: 1 s
        silent.wait_datagrams(2, 3)
        advance(2.1)                                        # doubled: 2 s
        got = silent.wait_datagrams(3, 3)
        assert all(is_client_hello(d) for _, d in got)
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_dtls_negotiatetime_ends_a_silent_handshake_with_569(ec2x_strict, emulator):
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", silent.port)
        cfg(host, "dtls", 0, 1)
        cfg(host, "negotiatetime", 0, 10)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
        silent.wait_datagrams(1, 5)
        advance(9.5)
        assert b"+QSSLOPEN" not in host.quiet_for(0.2)
        advance(1)
        host.seen(b"+QSSLOPEN: 0,569\r\n", 5)
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_dtls_server_answering_from_another_port_is_not_heard(ec2x_strict, emulator, dtls_server):
    """A connected UDP socket: the server's flight from another source port never reaches the
    client, so the open times out (569) without a crash."""
    host, advance, _ = ec2x_strict
    server = dtls_server()
    with UdpMiddlebox(server.address, other_port=True) as relay:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", relay.port)
        cfg(host, "dtls", 0, 1)
        cfg(host, "negotiatetime", 0, 10)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
        wait_for(lambda: relay.sent("s2c"), 5, "a server answer")
        advance(10.5)
        host.seen(b"+QSSLOPEN: 0,569\r\n", 5)
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("lost", ["server_finished", "client_finished", "first_flight", "server_hello"])
def test_dtls_handshake_survives_a_lost_flight(ec2x, net, emulator, dtls_server, lost):
    """Real time: the datagram carrying a flight is dropped once; the retransmission timer
    recovers and data flow both ways afterwards."""
    server = dtls_server()
    state = {"done": False}

    def rule(direction, index, data):
        if state["done"]:
            return [(0, data)]
        hit = {"server_finished": direction == "s2c" and has_ccs(data),
               "client_finished": direction == "c2s" and has_ccs(data),
               "first_flight": direction == "c2s" and index == 0,
               "server_hello": direction == "s2c" and data[0] == CT_HANDSHAKE and data[13] == 2}[lost]
        if hit:
            state["done"] = True
            return []
        return [(0, data)]

    with UdpMiddlebox(server.address, rule) as relay:
        assert dtls_open(ec2x, emulator, relay.address, timeout=20) == 0
        assert state["done"], relay.log
        server.wait_for_output(rb"CIPHER is", 10)
        assert ec2x.send_data(0, b"up after loss\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"up after loss", 10)
        server.write(b"down after loss\n")
        assert recv_all(ec2x, 0, 16) == b"down after loss\n"
        close(ec2x)


def test_dtls_duplicated_server_datagrams_are_delivered_once(ec2x, net, emulator, dtls_server):
    """Every server datagram arrives twice (handshake and data): the handshake completes and
    each application record reaches the host once (DTLS anti-replay)."""
    server = dtls_server()
    twice = lambda d, i, data: [(0, data), (0, data)] if d == "s2c" else [(0, data)]   # noqa: E731
    with UdpMiddlebox(server.address, twice) as relay:
        assert dtls_open(ec2x, emulator, relay.address) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"one\n")
        wait_for(lambda: sum(1 for d in relay.sent("s2c")
                             if records(d, whole=True)[0].type == CT_APP) >= 1, 5, "one")
        server.write(b"two\n")
        got = recv_all(ec2x, 0, 8)
        time.sleep(0.3)
        more = ec2x.at("AT+QSSLRECV=0,1500")
        assert got == b"one\ntwo\n", got
        assert more == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n", more
        assert ec2x.send_data(0, b"still alive\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"still alive", 10)
        close(ec2x)


def test_dtls_reordered_server_datagrams_each_delivered_once(ec2x, net, emulator, dtls_server):
    """The first application datagram overtaken by the second: both reach the host, once each
    (DTLS does not reorder; the host sees them in arrival order)."""
    server = dtls_server()
    seen_app = {"n": 0}

    def rule(direction, index, data):
        if direction == "s2c" and records(data, whole=True)[0].type == CT_APP:
            seen_app["n"] += 1
            if seen_app["n"] == 1:
                return [(0.4, data)]
        return [(0, data)]

    with UdpMiddlebox(server.address, rule) as relay:
        assert dtls_open(ec2x, emulator, relay.address) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"first\n")
        wait_for(lambda: seen_app["n"] >= 1, 5, "first")
        server.write(b"second\n")
        ec2x.seen(b'+QSSLURC: "recv",0\r\n', 10)
        time.sleep(0.8)
        answer = ec2x.at("AT+QSSLRECV=0,1500")
        m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
        data = answer[m.end():m.end() + int(m.group(1))]
        if len(data) < 13:
            answer = ec2x.at("AT+QSSLRECV=0,1500")
            m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
            data += answer[m.end():m.end() + int(m.group(1))]
        assert data in (b"second\nfirst\n", b"first\nsecond\n"), data
        assert data.count(b"first\n") == 1 and data.count(b"second\n") == 1
        close(ec2x)


def test_dtls_one_qsslsend_is_one_record_in_one_datagram(ec2x, net, emulator, dtls_server):
    """1460 bytes (the maximum, over the 1400-byte packing budget), 1 byte, a variable-length
    send with Ctrl+Z, and two sends written back to back: one application record each, each
    in its own datagram, in order; the server prints exactly the bytes."""
    server = dtls_server()
    with UdpMiddlebox(server.address) as relay:
        assert dtls_open(ec2x, emulator, relay.address) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        before = len(relay.sent("c2s"))
        big = (b"0123456789abcdef" * 92)[:1459] + b"\n"
        assert ec2x.send_data(0, big) == b"\r\nSEND OK\r\n"
        assert ec2x.send_data(0, b"\n") == b"\r\nSEND OK\r\n"
        assert ec2x.send_data(0, b"var\n", fixed=False) == b"\r\nSEND OK\r\n"
        ec2x.write(b"AT+QSSLSEND=0,3\r")
        ec2x.read_until(b"> ")
        ec2x.write(b"ab\nAT+QSSLSEND=0,3\r")
        ec2x.read_until(b"SEND OK\r\n")
        ec2x.read_until(b"> ")
        ec2x.write(b"cd\n")
        ec2x.read_until(b"SEND OK\r\n")
        wait_for(lambda: len(relay.sent("c2s")) >= before + 5, 10, "five datagrams")
        time.sleep(0.2)
        app = relay.sent("c2s")[before:]
        assert len(app) == 5, [len(d) for d in app]
        for d in app:
            recs = records(d, whole=True)
            assert len(recs) == 1 and recs[0].type == CT_APP, [(r.type, len(r.payload)) for r in recs]
        server.wait_for_output(rb"cd\n", 10)
        close(ec2x)


# Was a bug, fixed: DTLS SEND FAIL counted ciphertext (a blackholed link's records, ~1497 bytes for
# 1460 of the host's with the DTLS header, nonce and tag), so the 11th 1460-byte AT+QSSLSEND was
# SEND FAIL where TLS and plain TCP/UDP say SEND OK and fail the 12th.
def test_dtls_send_fail_when_blackholed(ec2x, net, emulator, dtls_server):
    """A blackholed DTLS link: SEND OK until ssl.send_buffer (16384) bytes wait, then SEND FAIL."""
    server = dtls_server()
    assert dtls_open(ec2x, emulator, server.address) == 0
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    results = [ec2x.send_data(0, b"q" * 1460) for _ in range(12)]
    assert results[:11] == [b"\r\nSEND OK\r\n"] * 11, results
    assert results[11] == b"\r\nSEND FAIL\r\n", results
    assert ec2x.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"


def test_dtls_escape_cancels_and_sends_nothing(ec2x, net, emulator, dtls_server):
    server = dtls_server()
    with UdpMiddlebox(server.address) as relay:
        assert dtls_open(ec2x, emulator, relay.address) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        before = len(relay.sent("c2s"))
        ec2x.write(b"AT+QSSLSEND=0\r")
        ec2x.read_until(b"> ")
        ec2x.write(b"never\x1b")
        assert ec2x.read_until(RESULT) == b"\r\nERROR\r\n"
        assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n" or \
            b"571" in ec2x.at("AT+QIGETERROR")
        ec2x.write(b"AT+QSSLSEND=0\r")
        ec2x.read_until(b"> ")
        ec2x.write(b"\x1a")
        assert ec2x.read_until(RESULT) == b"\r\nERROR\r\n"              # empty: 552
        time.sleep(0.2)
        assert len(relay.sent("c2s")) == before
        assert ec2x.send_data(0, b"\x1a\x1b\r\nbinary\n") == b"\r\nSEND OK\r\n"
        wait_for(lambda: len(relay.sent("c2s")) == before + 1, 5, "one datagram")
        server.wait_for_output(rb"binary", 10)
        close(ec2x)


# == plain UDP ================================================================================
def test_udp_qisend_binary_crlf_and_lengths_are_one_datagram_each(ec2x_strict, emulator):
    host, _, _ = ec2x_strict
    with udp_sink(emulator) as sink:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        sends = [b"\r\nAT\r\n", b"\x1a", b"\x1b\x1a\x00\xff", bytes(range(256)) * 5 + b"x" * 180, b"\n"]
        for data in sends:
            assert qisend(host, 0, data) == b"\r\nSEND OK\r\n", data
        assert host.at("AT+QISEND=0,1461") == b"\r\nERROR\r\n"
        assert qisend(host, 0, b"var\r\nlen", fixed=False) == b"\r\nSEND OK\r\n"
        host.write(b"AT+QISEND=0\r")
        host.read_until(b"> ")
        host.write(b"cancelled\x1b")
        assert host.read_until(RESULT) == b"\r\nERROR\r\n"
        host.write(b"AT+QISEND=0\r")
        host.read_until(b"> ")
        host.write(b"\x1a")
        empty = host.read_until(RESULT)
        assert qisend(host, 0, b"last") == b"\r\nSEND OK\r\n"
        got = [d for _, d in sink.wait_datagrams(len(sends) + 2, 5)]
        time.sleep(0.2)
        assert [d for _, d in sink.log] == sends + [b"var\r\nlen", b"last"]
        assert empty == b"\r\nERROR\r\n"
        assert got[3] == sends[3] and len(got[3]) == 1460
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_udp_qird_one_datagram_per_read_with_partial_reads(ec2x_strict, emulator):
    """Connected UDP: a 3000-byte datagram is read in 1500-byte parts; the next datagram
    never joins the tail of the previous one; empty datagrams are nothing."""
    host, _, _ = ec2x_strict
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        assert qisend(host, 0, b"hello") == b"\r\nSEND OK\r\n"
        (me, _), = server.wait_datagrams(1)
        big = bytes(i % 251 for i in range(3000))
        for d in (big, b"", b"small", b"", b"tail1234"):
            server.sock.sendto(d, me)
        host.seen(b'+QIURC: "recv",0\r\n')
        wait_for(lambda: b"+QIRD: 3013" in host.at("AT+QIRD=0,0") or False, 5, "all in")
        reads = [qird(host, 0, 1500)[1] for _ in range(3)]
        assert reads == [big[:1500], big[1500:], b"small"]
        assert qird(host, 0, 3)[1] == b"tai"
        assert qird(host, 0, 1500)[1] == b"l1234"
        assert qird(host, 0)[1] == b""
        assert b"recv" not in host.quiet_for(0.2)
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_udp_service_many_peers_interleaved(ec2x_strict):
    """A UDP SERVICE hears three peers; each AT+QIRD returns one datagram with its own
    sender, in arrival order, a partial read keeps the sender for the rest; replies go to
    the address given per send and nowhere else."""
    host, _, _ = ec2x_strict
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 3, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    a, b, c = peer(), peer(), peer()
    try:
        order = [(a, b"A1" * 1000), (b, b"B1"), (c, b""), (c, b"C1"), (a, b"A2"), (b, b"B2" * 10)]
        for s, d in order:
            s.sendto(d, ("127.0.0.1", lport))
            time.sleep(0.02)
        host.seen(b'+QIURC: "recv",3\r\n')
        wait_for(lambda: b"+QIRD: 2026," in host.at("AT+QIRD=3,0"), 5, "all datagrams")
        expect = [(s, d) for s, d in order if d]
        for s, d in expect:
            if len(d) > 1500:
                parts = [d[:1500], d[1500:]]
            else:
                parts = [d]
            for part in parts:
                head, data = qird(host, 3, 1500)
                assert data == part
                assert head.endswith(f',"127.0.0.1",{s.getsockname()[1]}\r\n'.encode()), head
        assert qird(host, 3)[1] == b""
        for s, msg in ((c, b"to C"), (a, b"to A"), (b, b"to B")):
            assert qisend(host, 3, msg, extra=f',"127.0.0.1",{s.getsockname()[1]}') == b"\r\nSEND OK\r\n"
        for s, msg in ((a, b"to A"), (b, b"to B"), (c, b"to C")):
            assert s.recvfrom(100) == (msg, ("127.0.0.1", lport))
        for s in (a, b, c):
            s.settimeout(0.2)
            with pytest.raises(socket.timeout):
                s.recvfrom(100)
    finally:
        for s in (a, b, c):
            s.close()
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"


def test_udp_service_survives_a_send_to_a_closed_port(ec2x_strict):
    host, _, _ = ec2x_strict
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 4, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    dead = free_port(socket.SOCK_DGRAM)
    for _ in range(3):
        assert qisend(host, 4, b"nobody", extra=f',"127.0.0.1",{dead}') == b"\r\nSEND OK\r\n"
    assert b"closed" not in host.quiet_for(0.3)
    p = peer()
    try:
        p.sendto(b"still here", ("127.0.0.1", lport))
        host.seen(b'+QIURC: "recv",4\r\n')
        head, data = qird(host, 4)
        assert data == b"still here"
        assert qisend(host, 4, b"pong", extra=f',"127.0.0.1",{p.getsockname()[1]}') == b"\r\nSEND OK\r\n"
        assert p.recvfrom(100) == (b"pong", ("127.0.0.1", lport))
    finally:
        p.close()
    assert host.at("AT+QICLOSE=4") == b"\r\nOK\r\n"


def test_udp_connected_socket_survives_icmp_then_receives(ec2x_strict, emulator):
    """ICMP port unreachable for a connected UDP socket, then the server comes up on that
    port: the socket still sends and receives."""
    host, _, _ = ec2x_strict
    port = free_port(socket.SOCK_DGRAM)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", port)
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    assert qisend(host, 0, b"void") == b"\r\nSEND OK\r\n"
    time.sleep(0.1)
    assert qisend(host, 0, b"void2") == b"\r\nSEND OK\r\n"
    assert b"closed" not in host.quiet_for(0.2)
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", port))
    srv.settimeout(5)
    try:
        assert qisend(host, 0, b"now") == b"\r\nSEND OK\r\n"
        data, who = srv.recvfrom(100)
        assert data == b"now"
        srv.sendto(b"back", who)
        host.seen(b'+QIURC: "recv",0\r\n')
        assert qird(host, 0)[1] == b"back"
    finally:
        srv.close()
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_udp_send_fail_when_blackholed(ec2x_strict, emulator):
    host, _, _ = ec2x_strict
    with udp_sink(emulator) as sink:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        assert qisend(host, 0, b"ok") == b"\r\nSEND OK\r\n"
        sink.wait_datagrams(1)
        assert emulator.control("drop", socket=0, how="blackhole")["ok"]
        results = [qisend(host, 0, b"z" * 1460) for _ in range(12)]
        assert results[:11] == [b"\r\nSEND OK\r\n"] * 11 and results[11] == b"\r\nSEND FAIL\r\n", results
        time.sleep(0.2)
        assert len(sink.log) == 1
        assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


# == prompts ===================================================================================
def test_prompt_abandoned_by_closing_the_port_sends_nothing(emulator, open_modem):
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    with udp_sink(emulator) as sink:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        host.write(b"AT+QISEND=0,10\r")
        host.read_until(b"> ")
        host.write(b"abcde")
        emulator.wait_received(port, host.written)
        host.close()
        time.sleep(0.2)
        again = Host(port.path)
        try:
            assert again.at("AT") == b"\r\nOK\r\n"
            assert again.at("ATE0") == b"\r\nOK\r\n"
            assert qisend(again, 0, b"after") == b"\r\nSEND OK\r\n"
            sink.wait_datagrams(1)
            time.sleep(0.2)
            assert [d for _, d in sink.log] == [b"after"]
            assert again.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
        finally:
            again.close()


def test_prompt_has_no_inactivity_timeout_on_manual_time(ec2x_strict, emulator):
    """Bytes that come with minutes between them (modem time) still make one datagram."""
    host, advance, _ = ec2x_strict
    with udp_sink(emulator) as sink:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        host.write(b"AT+QISEND=0,4\r")
        host.read_until(b"> ")
        for b in b"slow":
            host.write(bytes([b]))
            advance(120)
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        host.write(b"AT+QISEND=0\r")
        host.read_until(b"> ")
        for b in b"var\x1a":
            host.write(bytes([b]))
            advance(120)
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert [d for _, d in sink.wait_datagrams(2)] == [b"slow", b"var"]
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_prompt_echo_atv0_and_qisde(emulator, open_modem):
    """ATE1: the command line and the data are echoed (AT+QISDE=1), not with AT+QISDE=0;
    ATV0: the prompt is "> " and the result keeps its words."""
    host, port = open_modem("ec2x", echo=True)
    assert host.at("ATE1") == b"ATE1\r\r\nOK\r\n"
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"\r\nOK\r\n")
    with udp_sink(emulator) as sink:
        line = f'AT+QIOPEN=1,0,"UDP","{UDP_HOST}",{UDP_PORT},0,0'
        assert host.at(line) == line.encode() + b"\r\r\nOK\r\n"
        host.seen(b"+QIOPEN: 0,0\r\n")
        host.write(b"AT+QISEND=0,6\r")
        assert host.read_until(b"> ") == b"AT+QISEND=0,6\r\r\n> "
        host.write(b"ab\r\ncd")
        assert host.read_until(RESULT) == b"ab\r\ncd\r\nSEND OK\r\n"
        assert host.at("AT+QISDE=0") == b"AT+QISDE=0\r\r\nOK\r\n"
        host.write(b"AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"AT+QISEND=0\r\r\n> "
        host.write(b"quiet\x1a")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        host.write(b"ATV0\r")
        assert host.read_until(b"ATV0\r") == b"ATV0\r"
        assert host.read_until(b"0\r") == b"0\r"
        host.write(b"AT+QISEND=0,2\r")
        assert host.read_until(b"> ") == b"AT+QISEND=0,2\r> "
        host.write(b"v0")
        out = host.read_until(re.compile(rb"SEND OK\r\n|SEND FAIL\r\n|4\r"))
        assert out.endswith(b"SEND OK\r\n"), out
        assert [d for _, d in sink.wait_datagrams(3)] == [b"ab\r\ncd", b"quiet", b"v0"]
        assert host.at("ATV1") == b"ATV1\r\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == b"AT+QICLOSE=0\r\r\nOK\r\n"


def test_two_sockets_prompts_in_one_write(ec2x_strict, emulator):
    """A host that writes both sends (commands and data) in one go, without waiting for the
    prompts: each socket gets exactly its datagram, the host two prompts and two SEND OK."""
    host, _, _ = ec2x_strict
    with udp_sink(emulator) as s0, udp_sink(emulator, "udp2.example", 7002) as s1:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        qiopen(host, 1, "UDP", "udp2.example", 7002)
        host.write(b"AT+QISEND=0,5\r" + b"AT\r\n\x1a" + b"AT+QISEND=1\r" + b"AT+QISEND=0,1\r\n\x1a"
                   + b"AT+QISEND=0,2\r" + b"\r\n")
        out = host.read_until(re.compile(rb"(?:SEND OK\r\n.*){3}", re.S), 10)
        assert out == b"\r\n> \r\nSEND OK\r\n\r\n> \r\nSEND OK\r\n\r\n> \r\nSEND OK\r\n", out
        assert [d for _, d in s0.wait_datagrams(2)] == [b"AT\r\n\x1a", b"\r\n"]
        assert [d for _, d in s1.wait_datagrams(1)] == [b"AT+QISEND=0,1\r\n"]
        time.sleep(0.2)
        assert len(s0.log) == 2 and len(s1.log) == 1
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
        assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"


def test_qsslsend_zero_and_max_lengths_dtls(ec2x, net, emulator, dtls_server):
    server = dtls_server()
    assert dtls_open(ec2x, emulator, server.address) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    assert ec2x.at("AT+QSSLSEND=0,1461") == b"\r\nERROR\r\n"
    zero = ec2x.at("AT+QSSLSEND=0,0")
    assert b"> " not in zero, zero
    ec2x.write(b"AT+QSSLSEND=0\r")
    ec2x.read_until(b"> ")
    ec2x.write(b"y" * 1460 + b"\x1a")
    assert ec2x.read_until(RESULT) == b"\r\nSEND OK\r\n"
    ec2x.write(b"AT+QSSLSEND=0\r")
    ec2x.read_until(b"> ")
    ec2x.write(b"y" * 1461 + b"\x1a")
    assert ec2x.read_until(RESULT) == b"\r\nERROR\r\n"
    assert ec2x.at("AT") == b"\r\nOK\r\n"
    server.wait_for_output(rb"y{1460}", 10)
    close(ec2x)
