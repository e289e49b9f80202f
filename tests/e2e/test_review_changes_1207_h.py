"""Review of 2026-12-07's changes on main (8d87464..): network reads capped at 64 KiB
(emulator/io/network.py cap_reads, 7fb9e97), certificate validity compared in whole seconds
(tls_engine/verify.py _dated, c6e235f), and SslSocket.abort() ending a close's linger (a
lingering AT+QSSLCLOSE / AT+QICLOSE on a blackholed link answers when the modem aborts the
socket: the bearer's loss, a restart).

Adversarial: lingering closes cut by pdp_deact / reboot / AT+QIDEACT with and without the
blackhole fault (the close answers exactly once, no late URC, the id reusable at once),
3 MB floods through buffer / push / transparent sockets behind shaped links, a 65507-byte UDP
datagram, and notBefore / notAfter at the second in other time zones.

Was a bug, fixed (the link now keeps a receive window: ShapedTransport.window_check), one root
cause: behind a control `net` link (latency / kbps) a socket's reading never paused in effect -- ShapedLink's incoming _Pipe goes on taking 64 KiB reads from
the kernel while the socket is paused, and delivers them all (emulator/io/network.py ShapedLink,
_Pipe; SslSocket.pause_network pauses only the asyncio transport).  So
* a buffer-mode socket whose host reads nothing holds the whole 3 MB flood against its 64 KiB
  recv_buffer (behaviour.md: one 64 KiB read past it at most, "memory stays bounded");
* transparent mode (TCP and SSL), 3 MB then the peer's FIN: OnlineDelivery.flush(everything=True)
  writes the whole buffer before NO CARRIER, past the port's 1 MiB output backlog, which drops
  the oldest -- ~2 MB of the stream never reach the host, although it reads all the while."""
from __future__ import annotations

import re
import threading
import time

import pytest

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, qiopen

OK = b"\r\nOK\r\n"
BOOT = (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n"
        b"\r\n+QIND: PB DONE\r\n")
SSL_HOST, SSL_PORT = "ssl.example", 8443
FINAL = re.compile(rb"\r\n(OK|ERROR|NO CARRIER|CONNECT)\r\n")


def _ssl_open(host, cid: int = 0, mode: int = 0) -> None:
    line = f'AT+QSSLOPEN=1,1,{cid},"{SSL_HOST}",{SSL_PORT},{mode}'
    if mode == 2:
        host.write(line + "\r")
        got = host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"))
        assert got == b"\r\nCONNECT\r\n", got
        return
    assert host.at(line) == OK
    got = host.read_until(re.compile(rb"\+QSSLOPEN: \d+,-?\d+\r\n"))
    assert got == f"\r\n+QSSLOPEN: {cid},0\r\n".encode(), got


def _states(emulator) -> list:
    return emulator.control("state")["sockets"]


# -- (3) a lingering close ended by the modem's own abort -----------------------------------

@pytest.fixture
def tls_sink(emulator):
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(SSL_HOST, SSL_PORT, "127.0.0.1", server.port)
        yield server


@pytest.fixture
def tls_silent(emulator):
    """A TLS server that never reads after its handshake (ignores close_notify and FIN)."""
    done = threading.Event()
    with TlsServer(handler=lambda conn: done.wait(20), legacy=True) as server:
        emulator.router.add_map(SSL_HOST, SSL_PORT, "127.0.0.1", server.port)
        yield server
        done.set()


@pytest.fixture
def plain_sink(emulator):
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        yield server


def _open(host, kind: str, server) -> None:
    if kind == "ssl":
        _ssl_open(host)
        server.wait_handshake()
    else:
        qiopen(host, 0)


CLOSE = {"ssl": "AT+QSSLCLOSE=0,10", "tcp": "AT+QICLOSE=0,10"}


@pytest.mark.parametrize("blackhole", [True, False], ids=["blackhole", "open_link"])
@pytest.mark.parametrize("kind", ["ssl", "tcp"])
def test_pdp_deact_during_lingering_close_answers_once_then_the_urc(emulator, ec2x_strict, tls_silent, plain_sink,
                                                                    kind, blackhole):
    """The bearer goes while AT+Q(SSL|I)CLOSE=0,10 lingers (a server that never closes, or a
    blackholed link): the close's OK at once, then +QIURC: "pdpdeact",1 -- no "closed" for the
    closed id, no second OK when the 10 s run out, and the id opens again at once."""
    host, advance, port = ec2x_strict
    server = tls_silent if kind == "ssl" else plain_sink
    _open(host, kind, server)
    if blackhole:
        assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write(CLOSE[kind] + "\r")
    advance(2)
    assert host.quiet_for(0.2) == b""                          # lingering
    if kind == "tcp" and blackhole:
        assert not plain_sink.wait_connection(0).eof.is_set()  # (a blackholed FIN never arrives)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n', timeout=5)
    assert got == OK + b'\r\n+QIURC: "pdpdeact",1\r\n', got
    if kind == "tcp":
        assert plain_sink.wait_connection(0).eof.wait(3)      # the server sees the end now
    advance(10)
    assert host.quiet_for(0.3) == b""
    assert _states(emulator) == []
    assert host.at("AT+QIACT=1") == OK
    _open(host, kind, server)
    assert len(_states(emulator)) == 1


@pytest.mark.parametrize("blackhole", [True, False], ids=["blackhole", "open_link"])
@pytest.mark.parametrize("kind", ["ssl", "tcp"])
def test_control_reboot_during_lingering_close_abandons_it_without_an_answer(emulator, ec2x_strict, tls_silent,
                                                                             plain_sink, kind, blackhole):
    """A reboot (the control op, as a power cut) during the linger: the close is abandoned
    without its OK, one set of start-up URCs, nothing after the 10 s would have run out."""
    host, advance, port = ec2x_strict
    server = tls_silent if kind == "ssl" else plain_sink
    _open(host, kind, server)
    if blackhole:
        assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write(CLOSE[kind] + "\r")
    advance(1)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("reboot")["ok"]
    advance(0.05)
    advance(1)
    got = host.read_until(b"PB DONE\r\n", timeout=5)
    assert got == BOOT, got
    advance(12)
    assert host.quiet_for(0.3) == b""
    assert _states(emulator) == []
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    _open(host, kind, server)


@pytest.mark.parametrize("kind", ["ssl", "tcp"])
def test_restart_typed_behind_a_blackholed_linger_waits_for_the_close(emulator, ec2x_strict, tls_silent,
                                                                      plain_sink, kind):
    """AT+CFUN=1,1 written while the close lingers waits for it (the port is busy): the
    close's one OK after its full 10 s, then the restart's OK and the start-up URCs."""
    host, advance, port = ec2x_strict
    server = tls_silent if kind == "ssl" else plain_sink
    _open(host, kind, server)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write(CLOSE[kind] + "\r")
    advance(1)
    host.write("AT+CFUN=1,1\r")
    advance(8.5)
    assert host.quiet_for(0.2) == b""
    advance(0.6)
    assert host.read_until(OK, timeout=5) == OK
    got = host.read_until(OK, timeout=5)
    assert got == OK, got
    advance(0.05)
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=5) == BOOT
    advance(12)
    assert host.quiet_for(0.3) == b""


def test_transparent_escape_then_lingering_close_cut_by_pdp_deact(emulator, ec2x_strict, tls_sink):
    """Transparent mode (access mode 2), "+++", AT+QSSLCLOSE=0,10 on a blackholed link, then
    the bearer goes: OK once, the "pdpdeact" URC, no NO CARRIER, no "closed"; ATO then has no
    connection and the id opens again."""
    host, advance, port = ec2x_strict
    _ssl_open(host, mode=2)
    tls_sink.wait_handshake()
    host.write(b"abc")
    tls_sink.wait_received(3)
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == OK
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QSSLCLOSE=0,10\r")
    advance(3)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n', timeout=5)
    assert got == OK + b'\r\n+QIURC: "pdpdeact",1\r\n', got
    advance(10)
    assert host.quiet_for(0.3) == b""
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QIACT=1") == OK
    _ssl_open(host, mode=0)


def test_qideact_typed_behind_a_blackholed_linger(emulator, ec2x_strict, plain_sink):
    """AT+QIDEACT=1 queued behind AT+QICLOSE=0,10 on a blackholed link: the close answers
    after its linger (its own timeout, once), then AT+QIDEACT's OK; nothing else."""
    host, advance, port = ec2x_strict
    qiopen(host, 0)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    host.write("AT+QIDEACT=1\r")
    advance(9.5)
    got = host.read_until(OK, timeout=5)
    assert got == OK
    got = host.read_until(OK, timeout=5)
    assert got == OK
    advance(11)
    assert host.quiet_for(0.3) == b""


# -- (2) validity compared in whole seconds ---------------------------------------------------
from datetime import timedelta  # noqa: E402

from emulator.testing.peers import ServerIdentity, make_cert, utc  # noqa: E402
from tests.e2e.hostile_support import open_answer  # noqa: E402
from tests.e2e.test_adversarial_hostile_servers_17 import (HOST as V_HOST, NOT_AFTER, NOT_BEFORE,  # noqa: E402
                                                           PORT as V_PORT, cclk_text, ec2x_verify,
                                                           windowed)  # noqa: F401 (a fixture)

SECOND = timedelta(seconds=1)


def _open_after(host, advance, moment, quarters: int, run_on: float) -> int:
    """AT+CCLK at `moment` (zone `quarters`), the modem clock run on `run_on` s (it runs on
    the computer's clock, also on a manual-time modem: README), then an open: its <err>
    (closed after)."""
    assert host.at(f'AT+CCLK="{cclk_text(moment, quarters)}"') == OK
    if run_on:
        time.sleep(run_on)
    assert host.at(f'AT+QSSLOPEN=1,1,0,"{V_HOST}",{V_PORT},0') == OK
    code = open_answer(host, 0)
    if code == 0:
        assert host.at("AT+QSSLCLOSE=0,0") == OK
    return code


@pytest.mark.parametrize("seclevel", [1, 2])
@pytest.mark.parametrize("quarters", [-48, 23])
def test_fractions_of_the_edge_seconds_on_the_modem_clock(ec2x_strict, emulator, pki, windowed, quarters,  # noqa: F811
                                                          seclevel):
    """The modem clock run on by fractions inside the edge seconds: notAfter's second + 0.2 s
    valid, notAfter + 1 s expired; notBefore - 1 s + 0.2 s not yet valid, notBefore's second
    valid -- in zones -12 h and +5:45, seclevel 1 and 2 (client certificate presented)."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed, ciphers="DEFAULT:@SECLEVEL=0", client_ca=pki.ca.cert_pem,
                   require_client_cert=seclevel == 2) as server:
        ec2x_verify(host, pki, emulator, server, seclevel=seclevel)
        if seclevel == 2:
            assert host.upload("UFS:h_cl.pem", pki.client.cert_pem).endswith(b"OK\r\n")
            assert host.upload("UFS:h_cl.key", pki.client.key_pem).endswith(b"OK\r\n")
            assert host.at('AT+QSSLCFG="clientcert",1,"UFS:h_cl.pem"') == OK
            assert host.at('AT+QSSLCFG="clientkey",1,"UFS:h_cl.key"') == OK
        # (0.2 s into the edge second, not 0.7: the clock runs on while the open is made, and a
        # loaded full run took more than the 0.3 s left to the next second)
        got = [_open_after(host, advance, NOT_AFTER, quarters, 0.2),
               _open_after(host, advance, NOT_AFTER + SECOND, quarters, 0),
               _open_after(host, advance, NOT_BEFORE - SECOND, quarters, 0.2),
               _open_after(host, advance, NOT_BEFORE, quarters, 0)]
        assert got == [0, 566, 566, 0]
        if seclevel == 2:
            done = [c for c in server.connections if c.handshake_done]
            assert len(done) == 2 and all(c.client_cert_subject for c in done), \
                [c.client_cert_subject for c in done]


RENEW_EDGE = utc(2031, 1, 1, 0, 0, 0)


@pytest.fixture(scope="module")
def renewal():
    """An old CA valid to RENEW_EDGE, its renewal (same name, same key) valid from
    RENEW_EDGE + 1 s, and a leaf for V_HOST it signed: (old, new, leaf)."""
    old = make_cert("h_rev renewed CA", None, ca=True, not_before=utc(2029, 1, 1),
                    not_after=RENEW_EDGE)
    new = make_cert("h_rev renewed CA", None, ca=True, key=old.key, not_before=RENEW_EDGE + SECOND,
                    not_after=utc(2035, 1, 1))
    leaf = make_cert(V_HOST, old, ca=False, names=[V_HOST], not_before=utc(2029, 6, 1),
                     not_after=utc(2034, 1, 1))
    return old, new, leaf


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_expired_ca_and_its_renewal_in_one_ca_file(ec2x_strict, emulator, pki, renewal, order):
    """A CA file with a CA and its renewal (same name and key, back to back in time): at the
    old one's notAfter second (+0.2 s) the old one is valid; one second on only the renewal
    is -- either way the leaf verifies, in both orders of the file (Mbed TLS takes the parent
    valid in time first).  Before the old one's window and after the renewal's: 566."""
    host, advance, port = ec2x_strict
    old, new, leaf = renewal
    pem = old.cert_pem + new.cert_pem if order == "old_first" else new.cert_pem + old.cert_pem
    assert host.upload("UFS:h_ren.pem", pem).endswith(b"OK\r\n")
    with TlsServer(ServerIdentity(leaf)) as server:
        ec2x_verify(host, pki, emulator, server)
        assert host.at('AT+QSSLCFG="cacert",1,"UFS:h_ren.pem"') == OK
        got = [_open_after(host, advance, RENEW_EDGE, 32, 0.2),
               _open_after(host, advance, RENEW_EDGE + SECOND, 32, 0),
               _open_after(host, advance, RENEW_EDGE + SECOND, -20, 0.5),
               _open_after(host, advance, utc(2028, 12, 31, 23, 59, 59), 0, 0.5),
               _open_after(host, advance, utc(2034, 1, 1, 0, 0, 1), 0, 0)]
        assert got == [0, 0, 0, 566, 566]


# -- (1) network reads of 64 KiB at most, behind the control API's shaped links -----------------
from emulator.io.network import NETWORK_READ  # noqa: E402
from emulator.sockets.tcpip import tcpip_service  # noqa: E402
from tests.e2e.socket_support import ec2x_with_pdp, wait_for  # noqa: E402

FLOOD = bytes(range(256)) * (3 * 1024 * 1024 // 256)


def _tcp_socket(emulator, port, fn):
    return emulator.run(lambda: fn(tcpip_service(port.modem).sockets[0]))


def _watch_inbox(emulator, port, seconds: float) -> int:
    """The most the socket's buffer held over `seconds` (the host reading nothing)."""
    most, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        most = max(most, _tcp_socket(emulator, port, lambda s: len(s.inbox)))
        time.sleep(0.02)
    return most


# Was a bug, fixed (see the module docstring): the link had no receive window, the buffer held the flood
@pytest.mark.parametrize("net", [{"latency_ms": 100}, {"latency_ms": 20, "kbps": 20000}],
                         ids=["latency", "latency_kbps"])
def test_buffer_mode_behind_a_shaped_link_holds_one_read_past_its_limit_at_most(
        open_modem, peer_factory, emulator, net):
    """A buffer-mode socket whose host reads nothing, a 3 MB flood behind a shaped link
    (control `net`): the buffer stays within recv_buffer + one network read (behaviour.md:
    "64 KiB from the network, as a TCP window closing at the buffer") -- a module's window
    bounds what is in flight whatever the latency."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", **net)["ok"]
    qiopen(host, 0)
    limit = _tcp_socket(emulator, port, lambda s: s.recv_limit)
    threading.Thread(target=peer.send, args=(FLOOD,), daemon=True).start()
    most = _watch_inbox(emulator, port, 2.0)
    assert limit <= most <= limit + NETWORK_READ, (limit, most)


from tests.e2e.socket_support import read_pushes, udp_peer, UDP_HOST, UDP_PORT  # noqa: E402
from tests.e2e.test_network_reads import _read  # noqa: E402


@pytest.mark.parametrize("net", [None, {"latency_ms": 15}], ids=["plain_link", "latency"])
def test_buffer_mode_flood_then_fin_every_byte_once_then_one_closed(open_modem, peer_factory, emulator, net):
    """3 MB then the peer's FIN, the host reading with AT+QIRD=0,1500: every byte once and in
    order, one "closed" URC, AT+QIRD then +QIRD: 0."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    if net:
        assert emulator.control("net", **net)["ok"]
    qiopen(host, 0)

    def flood_then_fin():
        peer.send(FLOOD)
        peer.shutdown_wr()
    threading.Thread(target=flood_then_fin, daemon=True).start()
    assert host.read_until(b"\r\n+QIURC: \"recv\",0\r\n") == b"\r\n+QIURC: \"recv\",0\r\n"
    got = bytearray()
    while len(got) < len(FLOOD):
        assert len(got) < len(FLOOD) + 1
        host.write("AT+QIRD=0,1500\r")
        chunk = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
        closed = chunk.count(b'+QIURC: "closed",0')
        m = re.search(rb"\r\n\+QIRD: (\d+)\r\n", chunk)
        n = int(m.group(1))
        if n == 0:
            # (behind latency the buffer may run dry while the link's window is on its way:
            # an empty read, then a new "recv" when the data come)
            assert host.read_until(OK) == OK and not closed
            assert host.read_until(b'\r\n+QIURC: "recv",0\r\n').endswith(b'"recv",0\r\n')
            continue
        got += host.read_exactly(n)
        assert host.read_until(OK) == b"\r\n" + OK
        if closed:
            assert chunk.count(b'"closed"') == 1
            peer.closed_seen = True
    assert bytes(got) == FLOOD
    if not getattr(peer, "closed_seen", False):
        assert host.read_until(b'+QIURC: "closed",0\r\n', timeout=5).endswith(b'"closed",0\r\n')
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("net", [None, {"latency_ms": 15, "kbps": 40000}], ids=["plain_link", "shaped"])
def test_push_mode_flood_then_fin_every_byte_once_then_closed(open_modem, peer_factory, emulator, net):
    """Direct push (access mode 1): a 3 MB flood then FIN -- the pushes carry every byte once,
    in order, and "closed" comes after the last of them, once."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    if net:
        assert emulator.control("net", **net)["ok"]
    qiopen(host, 0, mode=1)

    def flood_then_fin():
        peer.send(FLOOD)
        peer.shutdown_wr()
    threading.Thread(target=flood_then_fin, daemon=True).start()
    assert read_pushes(host, len(FLOOD), timeout=18) == FLOOD
    assert host.read_until(b"\r\n", timeout=5) == b"\r\n"
    assert host.read_until(b"\r\n", timeout=5) == b'+QIURC: "closed",0\r\n'
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("net", [None, pytest.param({"latency_ms": 15}, id="latency")],
                         ids=["plain_link", "latency"])
def test_transparent_flood_then_fin_every_byte_once_then_no_carrier(open_modem, peer_factory, emulator, net):
    """Transparent mode (access mode 2): 3 MB then FIN -- the host gets exactly the 3 MB, then
    NO CARRIER."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    if net:
        assert emulator.control("net", **net)["ok"]
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"

    def flood_then_fin():
        peer.send(FLOOD)
        peer.shutdown_wr()
    threading.Thread(target=flood_then_fin, daemon=True).start()
    got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=15)
    assert len(got) == len(FLOOD) + 14, len(got)
    assert got == FLOOD + b"\r\nNO CARRIER\r\n"
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("net", [None, {"latency_ms": 20}], ids=["plain_link", "latency"])
def test_udp_datagram_of_65507_bytes_arrives_whole(open_modem, emulator, net):
    """The largest IPv4 UDP datagram (65507 bytes) to an AT+QIOPEN "UDP" socket is one datagram
    of 65507 bytes in the socket (the 64 KiB read cap cuts no datagram), read in AT+QIRD
    pieces in order; the next datagram stays apart."""
    peer = udp_peer()
    try:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", peer.getsockname()[1])
        host, port = ec2x_with_pdp(open_modem)
        if net:
            assert emulator.control("net", **net)["ok"]
        qiopen(host, 0, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
        host.write("AT+QISEND=0,2\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"hi")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        data, addr = peer.recvfrom(100)
        assert data == b"hi"
        big = bytes((i * 7) & 0xFF for i in range(65507))
        peer.sendto(big, addr)
        peer.sendto(b"tail", addr)
        wait_for(lambda: _tcp_socket(emulator, port, lambda s: len(s.inbox)) == 65511, timeout=5)
        assert _tcp_socket(emulator, port, lambda s: [r[0] for r in s._records]) == [65507, 4]
        got = bytearray()
        while len(got) < 65507:
            got += _read(host, 1500)
        assert bytes(got) == big
        assert _read(host, 1500) == b"tail"
    finally:
        peer.close()


from emulator.sockets.service import ssl_service  # noqa: E402


def _ssl_socket(emulator, port, fn):
    return emulator.run(lambda: fn(ssl_service(port.modem).sockets[0]))


@pytest.fixture
def tls_flooder(emulator):
    """A TLS server that sends FLOOD then close_notify and its FIN once told (go.set())."""
    go = threading.Event()

    def handler(conn):
        if go.wait(15):
            conn.sendall(FLOOD)
            conn.send_close_notify()
    with TlsServer(handler=handler, legacy=True) as server:
        emulator.router.add_map(SSL_HOST, SSL_PORT, "127.0.0.1", server.port)
        yield server, go
        go.set()


def test_ssl_buffer_mode_flood_bound_then_every_byte_once_then_closed(open_modem, emulator, tls_flooder):
    """An SSL buffer-mode socket, a 3 MB flood (TLS records cut anywhere by the 64 KiB reads)
    then close_notify + FIN, the host first reading nothing: the buffer stays within
    ssl.recv_buffer + one read; then AT+QSSLRECV=0,1500 reads every byte once, in order, and
    one "closed" URC comes."""
    server, go = tls_flooder
    host, port = ec2x_with_pdp(open_modem)
    _ssl_open(host)
    limit = _ssl_socket(emulator, port, lambda s: s.recv_limit)
    go.set()
    assert host.read_until(b'+QSSLURC: "recv",0\r\n') == b'\r\n+QSSLURC: "recv",0\r\n'
    most = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        most = max(most, _ssl_socket(emulator, port, lambda s: len(s.inbox)))
        time.sleep(0.02)
    assert limit <= most <= limit + NETWORK_READ, (limit, most)
    got = bytearray()
    closed = 0
    deadline = time.monotonic() + 15
    while len(got) < len(FLOOD):
        assert time.monotonic() < deadline, len(got)
        host.write("AT+QSSLRECV=0,1500\r")
        chunk = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        closed += chunk.count(b'+QSSLURC: "closed",0')
        n = int(re.search(rb"\+QSSLRECV: (\d+)\r\n", chunk).group(1))
        got += host.read_exactly(n)
        assert host.read_until(OK) == b"\r\n" + OK
    assert bytes(got) == FLOOD
    if not closed:
        assert host.read_until(b'"closed",0\r\n', timeout=5).endswith(b'+QSSLURC: "closed",0\r\n')
    else:
        assert closed == 1
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n" + OK
    assert host.quiet_for(0.2) == b""


def test_pdp_deact_ends_only_the_lingers_on_its_own_context(emulator, ec2x_strict, plain_sink):
    """Socket 0 lingers (blackholed) on context 2, socket 1 is connected on context 1:
    pdp_deact of context 1 reports "pdpdeact",1 and "closed",1 once the close is over, but the
    close on context 2 still waits its full 10 s, then answers OK once."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICSGP=2,1,"CMNET","","",1;+QIACT=2') == OK
    line = f'AT+QIOPEN=2,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0'
    assert host.at(line) == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    qiopen(host, 1)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    advance(8.5)
    assert host.quiet_for(0.3) == b""                        # context 2's linger goes on
    advance(0.6)
    got = host.read_until(b'"closed",1\r\n', timeout=5)
    assert got == OK + b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",1\r\n', got
    advance(10)
    assert host.quiet_for(0.3) == b""
    assert [s["id"] for s in _states(emulator)] == [1]


def test_pdp_deact_during_linger_with_a_second_socket_connected(emulator, ec2x_strict, plain_sink):
    """Socket 0 lingers (blackholed), socket 1 connected, both on context 1: pdp_deact ends
    the linger -- OK, "pdpdeact",1, "closed",1 -- and never a "closed",0; AT+QICLOSE=1 OK and
    both ids open again after AT+QIACT=1."""
    host, advance, port = ec2x_strict
    qiopen(host, 0)
    qiopen(host, 1)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"closed",1\r\n', timeout=5)
    assert got == OK + b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",1\r\n', got
    advance(11)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at("AT+QIACT=1") == OK
    qiopen(host, 0)
    qiopen(host, 1)


def test_reboot_during_transparent_linger_after_escape(emulator, ec2x_strict, plain_sink):
    """AT+QIOPEN transparent (access mode 2), "+++", a blackholed link, AT+QICLOSE=0,10, then
    the control API's reboot: no OK for the close, one boot, and the id opens again."""
    host, advance, port = ec2x_strict
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    host.write(b"xyz")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == OK
    assert plain_sink.wait_connection(0).wait_received(3) == b"xyz"
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(2)
    assert emulator.control("reboot")["ok"]
    advance(0.05)
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=5) == BOOT
    advance(12)
    assert host.quiet_for(0.3) == b""
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)


def test_d2_dtr_drop_linger_then_pdp_deact_only_the_urc(emulator, ec2x_strict, tls_silent):
    """AT&D2, SSL transparent, a blackholed link, DTR dropped: NO CARRIER at once (the close
    lingers in the background); pdp_deact then ends that linger -- only "pdpdeact",1, nothing
    when the 10 s would have run out, and the id opens again."""
    host, advance, port = ec2x_strict
    assert host.at("AT&D2") == OK
    _ssl_open(host, mode=2)
    tls_silent.wait_handshake()
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    assert emulator.control("dtr", level=0)["ok"]
    assert host.read_until(re.compile(rb"\r\n(NO CARRIER|OK)\r\n"), timeout=3) == b"\r\nNO CARRIER\r\n"
    assert emulator.control("dtr", level=1)["ok"]
    advance(2)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.read_until(b'"pdpdeact",1\r\n', timeout=5) == b'\r\n+QIURC: "pdpdeact",1\r\n'
    advance(11)
    assert host.quiet_for(0.3) == b""
    assert _states(emulator) == []
    assert host.at("AT+QIACT=1") == OK
    _ssl_open(host)


def test_listener_accepted_connection_flood_bound_and_order(open_modem, emulator):
    """A TCP LISTENER's accepted connection (buffer mode) gets 3 MB the host does not read:
    its buffer stays within tcpip.recv_buffer + one network read (cap_reads in the accept
    path too); then the first 300 KB read back in order, every byte once."""
    import socket as so
    from tests.e2e.socket_support import free_port
    host, port = ec2x_with_pdp(open_modem)
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=0)
    c = so.create_connection(("127.0.0.1", lport))
    try:
        host.seen(re.compile(rb'\+QIURC: "incoming",1,0,"127\.0\.0\.1",\d+\r\n'))
        threading.Thread(target=lambda: c.sendall(FLOOD), daemon=True).start()
        svc_sock = lambda fn: emulator.run(lambda: fn(tcpip_service(port.modem).sockets[1]))  # noqa: E731
        limit = svc_sock(lambda s: s.recv_limit)
        wait_for(lambda: svc_sock(lambda s: s._paused), timeout=10, what="paused")
        most, end = 0, time.monotonic() + 0.5
        while time.monotonic() < end:
            most = max(most, svc_sock(lambda s: len(s.inbox)))
            time.sleep(0.02)
        assert limit <= most <= limit + NETWORK_READ, (limit, most)
        host.seen(b'+QIURC: "recv",1\r\n')
        got = bytearray()
        while len(got) < 300_000:
            host.write("AT+QIRD=1,1500\r")
            chunk = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
            got += host.read_exactly(int(re.search(rb"\+QIRD: (\d+)\r\n", chunk).group(1)))
            assert host.read_until(OK) == b"\r\n" + OK
        assert bytes(got) == FLOOD[:len(got)]
    finally:
        c.close()


from tests.e2e.test_adversarial_hostile_servers_17 import ml_close, ml_verify  # noqa: E402,F401


def _ml_open_after(host, moment, quarters: int, run_on: float) -> bytes:
    assert host.at(f'AT+CCLK="{cclk_text(moment, quarters)}"') == OK
    if run_on:
        time.sleep(run_on)
    assert host.at(f'AT+QSSLOPEN=0,0,"{V_HOST}",{V_PORT},0') == OK
    line = host.seen(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 10)
    code = line[line.rindex(b"+QSSLOPEN"):]
    if code == b"+QSSLOPEN: 0,0\r\n":
        ml_close(host)
    return code


def test_ml302_fractions_of_the_edge_seconds(ml_verify):  # noqa: F811
    """The ML302 (Mbed TLS): notAfter's second + 0.2 s valid, notBefore - 1 s + 0.2 s not yet
    valid, in a -3:30 zone."""
    got = [_ml_open_after(ml_verify, NOT_AFTER, -14, 0.2),
           _ml_open_after(ml_verify, NOT_BEFORE - SECOND, -14, 0.2),
           _ml_open_after(ml_verify, NOT_BEFORE, -14, 0)]
    assert got == [b"+QSSLOPEN: 0,0\r\n", b"+QSSLOPEN: 0,-1\r\n", b"+QSSLOPEN: 0,0\r\n"]


@pytest.mark.parametrize("kind", ["ssl", "tcp"])
def test_pdp_deact_during_linger_behind_a_slow_link(emulator, ec2x_strict, tls_silent, plain_sink, kind):
    """The socket's link has 300 ms latency (control `net`, set after the open) and the host
    sent data just before AT+Q(SSL|I)CLOSE=0,10 (still on the link with the FIN behind it):
    pdp_deact ends the linger -- OK once, the "pdpdeact" URC, nothing later."""
    host, advance, port = ec2x_strict
    server = tls_silent if kind == "ssl" else plain_sink
    _open(host, kind, server)
    assert emulator.control("net", socket=0, latency_ms=300)["ok"]
    send = "AT+QSSLSEND=0,5" if kind == "ssl" else "AT+QISEND=0,5"
    host.write(send + "\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"hello")
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    host.write(CLOSE[kind] + "\r")
    advance(0.1)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n', timeout=5)
    assert got == OK + b'\r\n+QIURC: "pdpdeact",1\r\n', got
    advance(11)
    assert host.quiet_for(0.3) == b""
    assert _states(emulator) == []


def test_qpowd_typed_behind_a_blackholed_linger(emulator, ec2x_strict, plain_sink):
    """AT+QPOWD written while AT+QICLOSE=0,10 lingers on a blackholed link: the close's OK
    after its 10 s, then OK and POWERED DOWN, the start-up URCs 1 s later, then nothing."""
    host, advance, port = ec2x_strict
    qiopen(host, 0)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    host.write("AT+QPOWD\r")
    advance(8.5)
    assert host.quiet_for(0.2) == b""
    advance(0.6)
    got = host.read_until(b"POWERED DOWN\r\n", timeout=5)
    assert got == OK + OK + b"\r\nPOWERED DOWN\r\n", got
    advance(1.05)
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=5) == BOOT
    advance(12)
    assert host.quiet_for(0.3) == b""


def test_qpowd_after_d2_dtr_drop_leaves_no_late_output(emulator, ec2x_strict, tls_silent):
    """AT&D2 hang-up of a blackholed transparent SSL socket (NO CARRIER, the close lingering
    in the background), then AT+QPOWD: OK, POWERED DOWN, the boot -- and nothing when the
    linger's 10 s would have run out; the id opens again."""
    host, advance, port = ec2x_strict
    assert host.at("AT&D2") == OK
    _ssl_open(host, mode=2)
    tls_silent.wait_handshake()
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    assert emulator.control("dtr", level=0)["ok"]
    assert host.read_until(re.compile(rb"\r\n(NO CARRIER|OK)\r\n"), timeout=3) == b"\r\nNO CARRIER\r\n"
    assert emulator.control("dtr", level=1)["ok"]
    advance(1)
    host.write("AT+QPOWD=1\r")
    assert host.read_until(b"POWERED DOWN\r\n", timeout=5) == OK + b"\r\nPOWERED DOWN\r\n"
    advance(1.05)
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=5) == BOOT
    advance(12)
    assert host.quiet_for(0.3) == b""
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    _ssl_open(host)


@pytest.fixture(scope="module")
def renewed_intermediate():
    """A root valid 2028-2040, an intermediate valid to RENEW_EDGE and its renewal (same
    name and key) from RENEW_EDGE + 1 s, a leaf for V_HOST under them: (root, old, new, leaf)."""
    root = make_cert("h_rev root", None, ca=True, not_before=utc(2028, 1, 1), not_after=utc(2040, 1, 1))
    old = make_cert("h_rev intermediate", root, ca=True, not_before=utc(2029, 1, 1), not_after=RENEW_EDGE)
    new = make_cert("h_rev intermediate", root, ca=True, key=old.key, not_before=RENEW_EDGE + SECOND,
                    not_after=utc(2035, 1, 1))
    leaf = make_cert(V_HOST, old, ca=False, names=[V_HOST], not_before=utc(2029, 6, 1),
                     not_after=utc(2034, 1, 1))
    return root, old, new, leaf


@pytest.mark.parametrize("order", ["old_first", "new_first"])
def test_server_sends_an_expired_intermediate_and_its_renewal(ec2x_strict, emulator, pki, renewed_intermediate,
                                                              order):
    """The server sends leaf, the old intermediate and its renewal (either order), the root in
    the CA file: at the old one's notAfter second (+0.2 s) and one second later the chain
    verifies (the one valid in time is taken); before both: 566."""
    host, advance, port = ec2x_strict
    root, old, new, leaf = renewed_intermediate
    chain = (old, new) if order == "old_first" else (new, old)
    assert host.upload("UFS:h_root.pem", root.cert_pem).endswith(b"OK\r\n")
    with TlsServer(ServerIdentity(leaf, *chain)) as server:
        ec2x_verify(host, pki, emulator, server)
        assert host.at('AT+QSSLCFG="cacert",1,"UFS:h_root.pem"') == OK
        got = [_open_after(host, advance, RENEW_EDGE, 23, 0.2),
               _open_after(host, advance, RENEW_EDGE + SECOND, 23, 0),
               _open_after(host, advance, utc(2028, 12, 31, 23, 59, 59), 0, 0.5)]
        assert got == [0, 0, 566]


def test_push_mode_flood_over_a_lossy_link_keeps_order(open_modem, peer_factory, emulator):
    """Direct push behind a link with 30 % TCP loss (segments delayed by their RTO, never
    overtaken) and 5 ms latency: 1 MB of 64 KiB reads arrives once, in order, then "closed"."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=5, loss=0.3, seed=7)["ok"]
    qiopen(host, 0, mode=1)
    data = FLOOD[:1 << 20]

    def flood_then_fin():
        peer.send(data)
        peer.shutdown_wr()
    threading.Thread(target=flood_then_fin, daemon=True).start()
    assert read_pushes(host, len(data), timeout=15) == data
    assert host.read_until(b'"closed",0\r\n', timeout=5) == b'\r\n+QIURC: "closed",0\r\n'
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("net", [None, pytest.param({"latency_ms": 15}, id="latency")],
                         ids=["plain_link", "latency"])
def test_ssl_transparent_flood_then_close_every_byte_once_then_no_carrier(open_modem, emulator, tls_flooder, net):
    """SSL transparent mode: the server sends 3 MB then close_notify + FIN -- the host gets
    exactly the 3 MB, then NO CARRIER."""
    server, go = tls_flooder
    host, port = ec2x_with_pdp(open_modem)
    _ssl_open(host, mode=2)
    if net:
        assert emulator.control("net", **net)["ok"]
    go.set()
    got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=15)
    assert len(got) == len(FLOOD) + 14, len(got)
    assert got == FLOOD + b"\r\nNO CARRIER\r\n"


@pytest.mark.parametrize("event", ["pdp_deact", "reboot"])
def test_ml302_blackholed_linger_cut_by_the_bearer_or_a_reboot(emulator, ml302_strict, tls_silent, event):
    """ML302: AT+QSSLCLOSE=0 lingering on a blackholed link; pdp_deact ends it -- OK and
    "0,CLOSE OK" once, no +QSSLURC for the closed ssid; a reboot abandons it (no answer).
    Nothing comes when the linger would have run out; ssid 0 opens again."""
    host, advance, port = ml302_strict
    assert host.at(f'AT+QSSLOPEN=0,0,"{SSL_HOST}",{SSL_PORT},0') == OK
    assert host.seen(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 10).endswith(b"+QSSLOPEN: 0,0\r\n")
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QSSLCLOSE=0\r")
    advance(1)
    assert host.quiet_for(0.2) == b""
    if event == "pdp_deact":
        assert emulator.control("pdp_deact", cid=1) == {"ok": True}
        want = b"\r\nOK\r\n\r\n0,CLOSE OK\r\n"
        assert host.read_exactly(len(want), timeout=5) == want
        advance(20)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT+CGACT=1,1").endswith(OK)
    else:
        assert emulator.control("reboot")["ok"]
        advance(0.05)
        advance(3)
        boot = host.quiet_for(0.5)
        assert b"OK" not in boot and b"CLOSE" not in boot, boot
        advance(20)
        assert host.quiet_for(0.3) == b""
        assert host.at("ATE0").endswith(OK)
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert host.at("AT+CGACT=1,1").endswith(OK)
    assert host.at(f'AT+QSSLOPEN=0,0,"{SSL_HOST}",{SSL_PORT},0') == OK
    assert host.seen(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 10).endswith(b"+QSSLOPEN: 0,0\r\n")


def test_push_mode_host_not_reading_bound_then_every_byte_once(open_modem, peer_factory, emulator):
    """Direct push, the host reading nothing while 3 MB come: the socket's buffer stays within
    recv_buffer + one network read (pushing waits for the pty's output, reading pauses); then
    the host reads every byte once, in order."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    qiopen(host, 0, mode=1)
    limit = _tcp_socket(emulator, port, lambda s: s.recv_limit)
    threading.Thread(target=peer.send, args=(FLOOD,), daemon=True).start()
    wait_for(lambda: _tcp_socket(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    most = _watch_inbox(emulator, port, 0.5)
    assert most <= limit + NETWORK_READ, (limit, most)
    assert read_pushes(host, len(FLOOD), timeout=18) == FLOOD


def test_reboot_during_linger_drops_the_lines_queued_behind_it(emulator, ec2x_strict, plain_sink):
    """AT+QICLOSE=0,10 lingering (blackholed), "AT+QIOPEN=...;+QISTATE" and "AT" typed behind
    it, then the control API's reboot: neither the close nor the queued lines are answered
    (behaviour.md: bytes no command had taken are lost with the restart) -- one boot, then
    silence; no "+QIOPEN"."""
    host, advance, port = ec2x_strict
    qiopen(host, 0)
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    host.write("AT+QICLOSE=0,10\r")
    advance(1)
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0;+QISTATE\rAT\r')
    advance(1)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("reboot")["ok"]
    advance(0.05)
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=5) == BOOT
    advance(12)
    assert host.quiet_for(0.3) == b""
    assert _states(emulator) == []
    assert len(plain_sink.connections) == 1
