"""Review of two changes: AT+QISEND=<id>,0's <ackedbytes> as what the peer's TCP
acknowledged (SIOCOUTQ; emulator/io/network.tcp_unacked, SslSocket.acked), and the CLI's
--latency MS (every modem's sockets start with the control op net's latency_ms)."""
from __future__ import annotations

import os
import re
import socket
import struct
import time

import pytest

from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, DrivenPeer, escape, free_port,
                                      qiopen, qisend, wait_for)
from tests.e2e.socket_support import acks_settled as settled
from tests.e2e.socket_support import qisend_counts as query
from tests.e2e.socket_support import rx_queued as queued

@pytest.fixture
def modem(emulator, ec2x_strict):
    """(host, advance, port): an EC2x on manual time, PDP context 1 up, a strict log."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    return host, advance, port


def stalled_peer(emulator, rcvbuf: int = 2048) -> DrivenPeer:
    peer = DrivenPeer(hold_reading=True, rcvbuf=rcvbuf)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
    return peer


def fill(host, cid: int, n: int = 4) -> bytes:
    data = os.urandom(n * 1460)
    for i in range(0, len(data), 1460):
        assert qisend(host, cid, data[i:i + 1460]) == b"\r\nSEND OK\r\n"
    return data


def window_shut(host, peer, cid: int = 0, mode: int = 0) -> tuple[bytes, int, int]:
    """Open `cid` to the stalled peer, send 4 x 1460 bytes, wait until the counts settle:
    (the bytes, held by the server, sent), the query showing exactly the held ones acked."""
    qiopen(host, cid, mode=mode)
    assert peer.accepted.wait(10)
    data = fill(host, cid)
    held, sent, acked, unacked = settled(host, peer.conn, cid)
    assert acked == held < sent and unacked == sent - held, (held, acked, unacked)
    return data, held, sent


# -- AT+QISEND=<id>,0 ------------------------------------------------------------------
# Was a bug, fixed: after the peer's FIN asyncio closed the emulator's socket and the query
# read the kernel's count as 0 (+QISEND: 5840,5840,0 with the server holding 2048); the count
# is now taken as the connection ends and frozen there.
def test_a_peer_half_close_acknowledges_nothing(modem, emulator):
    """A server that stopped reading half-closes (FIN) and keeps its window shut: its TCP
    acknowledged what it holds and nothing more, so the query must go on showing the rest
    unacked -- the driver that polls for unacked 0 before it closes must not be told the
    server has everything.  (Once the server reads, the bytes still reach it.)"""
    host, _, _ = modem
    peer = stalled_peer(emulator)
    try:
        data, held, sent = window_shut(host, peer)
        peer.shutdown_wr()
        host.seen(b'+QIURC: "closed",0\r\n')
        time.sleep(0.3)
        held_now, answer = queued(peer.conn), query(host)
        peer.release_reading()                  # the bytes were still on their way: all arrive
        wait_for(lambda: bytes(peer.got) == data, what="every byte at the server")
        assert held_now == held < sent
        assert answer == (sent, held, sent - held), f"server held {held_now} of {sent}, query said {answer}"
    finally:
        peer.close()
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# Was a bug, fixed: once a peer's RST closed the emulator's socket, every byte read as acked;
# the count is now taken as the connection ends (SIOCOUTQ still holds it) and frozen there.
def test_a_reset_does_not_acknowledge_what_the_peer_never_took(modem, emulator):
    host, _, _ = modem
    peer = stalled_peer(emulator)
    try:
        _, held, sent = window_shut(host, peer)
        peer.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.conn.close()                                  # RST, its queue discarded
        host.seen(b'+QIURC: "closed",0\r\n')
        time.sleep(0.2)
        assert query(host) == (sent, held, sent - held)
    finally:
        peer.close()
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# Was a bug, fixed (found by a review): a connection the emulator itself ended (AT+QIDEACT, a
# reboot, AT+QICLOSE's abort) was torn down before its count was read, so a host that had not
# queried before saw nothing acked (+QISEND: 5,0,5 with the server holding all 5).
def test_the_bearers_loss_keeps_what_the_peer_had_acknowledged(modem, emulator, tcp_sink):
    host, _, _ = modem
    qiopen(host, 0)
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    assert tcp_sink.wait_connection().wait_received(5) == b"12345"
    time.sleep(0.2)                                    # (the server's ACK on its way back)
    # (the network's deactivation: the host's AT+QIDEACT frees the id, counts and all)
    assert emulator.control("pdp_deact", cid=1)["ok"]
    host.seen(b'+QIURC: "pdpdeact",1\r\n')
    host.seen(b'+QIURC: "closed",0\r\n')
    assert query(host) == (5, 5, 0)
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_acked_never_decreases_and_all_turn_acked_once_the_server_reads(modem, emulator):
    host, _, _ = modem
    peer = stalled_peer(emulator)
    try:
        qiopen(host, 0)
        assert peer.accepted.wait(10)
        last_acked = 0
        data = b""
        for _ in range(6):
            chunk = os.urandom(1460)
            assert qisend(host, 0, chunk) == b"\r\nSEND OK\r\n"
            data += chunk
            sent, acked, unacked = query(host)
            assert sent == len(data) and acked >= last_acked
            last_acked = acked
        assert unacked > 0
        peer.release_reading()
        deadline = time.monotonic() + 10
        while True:
            sent, acked, unacked = query(host)
            assert sent == len(data) and acked >= last_acked, (acked, last_acked)
            last_acked = acked
            if unacked == 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        wait_for(lambda: bytes(peer.got) == data, what="every byte at the server")
    finally:
        peer.close()
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\nERROR\r\n"


def poll_until_acked(host, cid: int, sent: int, timeout: float = 10) -> None:
    """Query until unacked is 0, acked never decreasing meanwhile."""
    deadline = time.monotonic() + timeout
    last = 0
    while True:
        got = query(host, cid)
        assert got[0] == sent and got[1] >= last, (got, last)
        last = got[1]
        if got[2] == 0:
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.01)


def test_udp_client_and_udp_service_count_every_datagram_acked_once_it_left(modem, udp_echo):
    """UDP has no acknowledgement: acked = sent once the datagram left (docs/behaviour.md);
    the query takes no <remoteIP>,<remote_port>, even on a UDP SERVICE."""
    host, _, _ = modem
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    assert query(host, 1) == (0, 0, 0)
    for n in (1, 100, 1460):
        assert qisend(host, 1, b"u" * n) == b"\r\nSEND OK\r\n"
    poll_until_acked(host, 1, 1561)
    port = free_port(socket.SOCK_DGRAM)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=port)
    assert query(host, 2) == (0, 0, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        me = peer.getsockname()[1]
        for n in (5, 700):
            assert qisend(host, 2, b"r" * n, extra=f',"127.0.0.1",{me}') == b"\r\nSEND OK\r\n"
        poll_until_acked(host, 2, 705)
        assert host.at(f'AT+QISEND=2,0,"127.0.0.1",{me}') == b"\r\nERROR\r\n"
        assert qisend(host, 2, b"lost", extra=',"8.8.8.8",53') == b"\r\nSEND FAIL\r\n"   # unrouted
        assert query(host, 2) == (705, 705, 0)
    for cid in (1, 2):
        assert host.at(f"AT+QICLOSE={cid}") == b"\r\nOK\r\n"


def test_a_listener_is_refused_and_its_incoming_connection_counts_its_clients_acks(modem):
    """The TCP LISTENER's id is ERROR (572) as before; a TCP INCOMING connection whose
    client stopped reading shows what the client holds acked and the rest unacked."""
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 3, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    assert host.at("AT+QISEND=3,0") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    try:
        client.connect(("127.0.0.1", lport))
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",(\d+),3,"127\.0\.0\.1",\d+\r\n'))
        cid = int(re.search(rb'"incoming",(\d+)', urc).group(1))
        data = fill(host, cid)
        held, sent, acked, unacked = settled(host, client, cid)
        assert sent == len(data) and acked == held < sent and unacked == sent - held, (held, acked, unacked)
        got = bytearray()
        while len(got) < len(data):
            got += client.recv(65536)
        assert bytes(got) == data
        poll_until_acked(host, cid, len(data))
    finally:
        client.close()
    host.seen(f'+QIURC: "closed",{cid}\r\n'.encode())
    assert host.at(f"AT+QICLOSE={cid}") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"
    assert host.at("AT+QISEND=3,0") == b"\r\nERROR\r\n"


@pytest.mark.parametrize("mode", [0, 1])
def test_buffer_and_push_mode_show_a_stalled_servers_window(modem, emulator, mode):
    host, _, _ = modem
    peer = stalled_peer(emulator)
    try:
        _, held, sent = window_shut(host, peer, 4, mode=mode)
        assert host.at("AT+QICLOSE=4,0") == b"\r\nOK\r\n"
    finally:
        peer.close()


def test_transparent_mode_bytes_count_after_the_escape(modem, emulator):
    """Bytes written in transparent mode are sent bytes; after +++ the query shows the
    stalled server's window (acked what it holds) and, once it reads, everything acked."""
    host, advance, _ = modem
    peer = stalled_peer(emulator)
    try:
        host.write(f'AT+QIOPEN=1,5,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        assert peer.accepted.wait(10)
        data = os.urandom(5000).replace(b"+", b"-")
        host.write(data)
        wait_for(lambda: queued(peer.conn) > 0, what="bytes at the server")
        assert escape(host, advance) == b"\r\nOK\r\n"
        held, sent, acked, unacked = settled(host, peer.conn, 5)
        assert sent == len(data) and acked == held < sent, (held, sent, acked, unacked)
        peer.release_reading()
        wait_for(lambda: bytes(peer.got) == data, what="every byte at the server")
        poll_until_acked(host, 5, len(data))
    finally:
        peer.close()
    host.seen(b'+QIURC: "closed",5\r\n')
    assert host.at("AT+QICLOSE=5") == b"\r\nOK\r\n"


def test_opening_send_fail_close_reboot_and_unopened_ids(modem, emulator, tcp_echo):
    host, advance, _ = modem
    assert host.at("AT+QISEND=0,0") == b"\r\nERROR\r\n"                 # never opened
    assert emulator.control("handshake_stall", count=1)["ok"]
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    assert query(host) == (0, 0, 0)                                          # still opening
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\nERROR\r\n"
    qiopen(host, 0)
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    poll_until_acked(host, 0, 5)
    assert emulator.control("send_fail", socket=0, count=1)["ok"]
    assert qisend(host, 0, b"xx") == b"\r\nSEND FAIL\r\n"
    assert query(host) == (5, 5, 0)                                          # nothing counted
    assert host.at("AT+QISEND=0,0,1") == b"\r\nERROR\r\n"
    assert host.at("AT+QISEND=0,00") == host.at("AT+QISEND=0,0")
    assert host.at("AT+CFUN=1,1") == b"\r\nOK\r\n"
    advance(0.05)                                                            # (the port reads from RDY on)
    assert host.read_until(b"RDY\r\n", timeout=3) == b"\r\nRDY\r\n"
    assert host.at("AT+QISEND=0,0").endswith(b"\r\nERROR\r\n")       # (ATE1 again after the reboot)


def test_a_blackhole_adds_every_later_send_to_unacked(modem, emulator, tcp_echo):
    host, _, _ = modem
    qiopen(host, 0)
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    poll_until_acked(host, 0, 5)
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    for _ in range(3):
        assert qisend(host, 0, b"abcdefgh") == b"\r\nSEND OK\r\n"
    time.sleep(0.2)
    assert query(host) == (29, 5, 24)
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


# Was a bug, fixed: on a blackholed link acked kept growing (the kernel's queue still reached
# the server); the count is now frozen when the blackhole starts.
def test_nothing_is_acknowledged_through_a_blackhole(modem, emulator):
    host, _, _ = modem
    peer = stalled_peer(emulator)
    try:
        _, held, sent = window_shut(host, peer)
        assert emulator.control("drop", socket=0, how="blackhole")["ok"]
        peer.release_reading()
        time.sleep(0.5)
        assert query(host) == (sent, held, sent - held), f"the server got {len(peer.got)} of {sent} bytes"
    finally:
        peer.close()
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


def test_latency_holds_the_ack_a_one_way_trip_and_kbps_paces_it(modem, emulator, tcp_sink):
    """On manual time: with net latency 300 ms nothing is acked before the bytes crossed the
    link (the clock moved 0.2 s: still all unacked); with kbps the acked count grows, never
    shrinks, as the link drains."""
    host, advance, _ = modem
    qiopen(host, 0)
    assert emulator.control("net", socket=0, latency_ms=300)["ok"]
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    assert query(host) == (5, 0, 5)
    advance(0.2)
    assert query(host) == (5, 0, 5)
    advance(0.15)
    poll_until_acked(host, 0, 5)
    assert emulator.control("net", socket=0, kbps=8)["ok"]            # 1000 bytes/s
    for _ in range(3):
        assert qisend(host, 0, b"k" * 500) == b"\r\nSEND OK\r\n"
    last = 5
    seen = []
    for _ in range(8):
        sent, acked, unacked = query(host)
        assert sent == 1505 and acked >= last
        seen.append(acked)
        last = acked
        advance(0.25)
        time.sleep(0.05)
    poll_until_acked(host, 0, 1505)
    assert seen[0] < 1505 and len(set(seen)) > 1, seen
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


# -- --latency MS ---------------------------------------------------------------------------
DEMO_ECHO = "220.180.239.212"      # --demo: 8009 plain TCP and UDP echo (the TCP(IP) notes' server)


def timed_open(host, line: str, answer: bytes, urc: bytes) -> float:
    """Seconds from the open's command to its URC (the command's answer must be `answer`)."""
    begin = time.monotonic()
    assert host.at(line) == answer
    host.seen(urc, 20)
    return time.monotonic() - begin


def cli_modems(tmp_path, *args: str, count: int = 1):
    from emulator.testing.host import Host
    from tests.e2e.cli_support import first_line, start
    proc = start("--offline", "--demo", "--state-dir", str(tmp_path / "state"), "--link",
                 str(tmp_path / "modem-{n}"), "--count", str(count), *args)
    hosts = [Host(first_line(proc)) for _ in range(count)]
    return proc, hosts


def test_every_modem_of_count_connects_a_round_trip_late_and_echoes_two_ways_late(tmp_path):
    """--count 2 --latency 200: modem 0's TCP open (buffer mode), modem 1's transparent open
    (CONNECT) both take the 400 ms round trip; UDP has no connect, but an echo crosses the link
    twice (>= 400 ms) -- on each modem."""
    from tests.e2e.cli_support import stop
    proc, hosts = cli_modems(tmp_path, "--latency", "200", count=2)
    try:
        for host in hosts:
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
        for host in hosts:
            qiopen(host, 1, "UDP", DEMO_ECHO, 8009)          # no connect to wait for
            begin = time.monotonic()
            assert qisend(host, 1, b"dgram") == b"\r\nSEND OK\r\n"
            host.seen(b'+QIURC: "recv",1\r\n', 20)
            assert time.monotonic() - begin >= 0.4
            assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 5\r\ndgram\r\n\r\nOK\r\n"
        h0, h1 = hosts
        assert timed_open(h0, f'AT+QIOPEN=1,0,"TCP","{DEMO_ECHO}",8009,0,0', b"\r\nOK\r\n",
                          b"+QIOPEN: 0,0\r\n") >= 0.4
        begin = time.monotonic()
        h1.write(f'AT+QIOPEN=1,3,"TCP","{DEMO_ECHO}",8009,0,2\r')
        assert h1.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 20) == b"\r\nCONNECT\r\n"
        assert time.monotonic() - begin >= 0.4
        begin = time.monotonic()
        h1.write(b"ping")
        assert h1.read_exactly(4) == b"ping"
        assert time.monotonic() - begin >= 0.4
        for host in hosts:
            host.close()
    finally:
        assert stop(proc) == 0


def test_ml302_ssl_open_takes_the_connect_and_a_tls_round_trip(tmp_path):
    """--profile ml302 --latency 150: AT+QSSLOPEN's +QSSLOPEN comes after the TCP round trip
    and at least one TLS one (>= 4 x 150 ms), never with the OK."""
    from tests.e2e.cli_support import stop
    proc, (host,) = cli_modems(tmp_path, "--profile", "ml302", "--latency", "150")
    try:
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
        assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
        assert timed_open(host, 'AT+QSSLOPEN=0,0,"www.iottest.work",443,0', b"\r\nOK\r\n",
                          b"\r\n+QSSLOPEN: 0,0\r\n") >= 0.6
        assert host.at("AT+QSSLCLOSE=0").endswith(b"OK\r\n")
        host.close()
    finally:
        assert stop(proc) == 0


def test_latency_survives_a_reboot_and_a_scenario_net_replaces_it(tmp_path):
    """--latency 100 is the modem's own conditions: AT+CFUN=1,1 and the control op reboot keep
    it (the open after each still takes >= 200 ms); a --scenario net at 0 s replaces it (400 ms
    one way: the open takes >= 800 ms)."""
    from tests.e2e.cli_support import stop
    proc, (host,) = cli_modems(tmp_path, "--latency", "100", "--control", str(tmp_path / "ctl"))
    try:
        for reboot in (None, "AT+CFUN=1,1", "control"):
            if reboot == "AT+CFUN=1,1":
                assert host.at("AT+CFUN=1,1") == b"\r\nOK\r\n"
            elif reboot == "control":
                with socket.socket(socket.AF_UNIX) as control:
                    control.connect(str(tmp_path / "ctl"))
                    control.sendall(b'{"op": "reboot", "ms": 0}\n')
                    assert b'"ok": true' in control.recv(4096)
            if reboot:
                host.seen(b"+QIND: PB DONE\r\n", 10)
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
            assert timed_open(host, f'AT+QIOPEN=1,0,"TCP","{DEMO_ECHO}",8009,0,0', b"\r\nOK\r\n",
                              b"+QIOPEN: 0,0\r\n") >= 0.2, reboot
        host.close()
    finally:
        assert stop(proc) == 0
    scenario = tmp_path / "net.toml"
    scenario.write_text('[[step]]\nat = 0\nop = "net"\nlatency_ms = 400\n')
    proc, (host,) = cli_modems(tmp_path, "--latency", "100", "--scenario", str(scenario))
    try:
        assert host.at("ATE0").endswith(b"OK\r\n")
        assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
        assert timed_open(host, f'AT+QIOPEN=1,0,"TCP","{DEMO_ECHO}",8009,0,0', b"\r\nOK\r\n",
                          b"+QIOPEN: 0,0\r\n") >= 0.8
        host.close()
    finally:
        assert stop(proc) == 0


def test_a_sockets_own_net_replaces_the_modems_latency_only_when_not_all_zero(modem, emulator, tcp_sink):
    """What --latency sets (the modem's net, here on manual time): a socket's own net of all
    zeros leaves it in force (docs/behaviour.md); a socket's own kbps replaces it (latency 0:
    the bytes are acked after 10 ms of the clock, not 300)."""
    host, advance, _ = modem
    assert emulator.control("net", latency_ms=300)["ok"]               # as --latency 300
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    advance(0.5)
    assert host.quiet_for(0.1) == b""                                  # a round trip: 0.6 s
    advance(0.2)
    host.seen(b"+QIOPEN: 0,0\r\n")
    assert emulator.control("net", socket=0, latency_ms=0)["ok"]
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    time.sleep(0.2)
    assert query(host) == (5, 0, 5)                                    # still the modem's 300 ms
    advance(0.35)
    poll_until_acked(host, 0, 5)
    assert emulator.control("net", socket=0, kbps=10_000)["ok"]
    assert qisend(host, 0, b"67890") == b"\r\nSEND OK\r\n"
    advance(0.01)                                                      # (5 bytes' pacing, not 300 ms)
    poll_until_acked(host, 0, 10)
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


def _replays_alike(capsys, path) -> None:
    """The trace at `path` replays with no difference."""
    from emulator.tools.trace import replay_main
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


def _stalled_recording(open_modem, emulator, path):
    """(host, peer): a modem tracing to `path`, its context up, and a server that stops reading."""
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    return host, stalled_peer(emulator)


def test_a_session_recorded_with_latency_replays(tmp_path, capsys):
    from emulator.testing.peers import TcpServer
    from emulator.testing.host import Host
    from tests.e2e.cli_support import Cli
    path = tmp_path / "latency.trace"
    with TcpServer("echo") as server:
        cli = Cli(tmp_path, "--latency", "150", "--trace", str(path),
                  "--route", f"{TCP_HOST}:{TCP_PORT}=127.0.0.1:{server.port}")
        try:
            host = Host(cli.dev)
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
            assert timed_open(host, f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0', b"\r\nOK\r\n",
                              b"+QIOPEN: 0,0\r\n") >= 0.3
            assert qisend(host, 0, b"hello") == b"\r\nSEND OK\r\n"
            host.seen(b'+QIURC: "recv",0\r\n')
            assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
            assert query(host) == (5, 5, 0)
            assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
            host.close()
        finally:
            cli.stop()
    _replays_alike(capsys, path)


# Was a bug, fixed: replay compared AT+QISEND=<id>,0's acked/unacked split, which depends on
# the peer's TCP (its window, its pace) that the trace does not record (recorded 5840,2048,3792,
# replayed 5840,4380,1460); replay now compares <sent> only (trace.VARIABLE).
def test_a_session_that_polled_a_stalled_server_replays(open_modem, emulator, tmp_path, capsys):
    path = tmp_path / "stalled.trace"
    host, peer = _stalled_recording(open_modem, emulator, path)
    try:
        data, held, sent = window_shut(host, peer)
        peer.release_reading()
        wait_for(lambda: bytes(peer.got) == data, what="every byte at the server")
        poll_until_acked(host, 0, len(data))
        # (the host closes: where a server's own close falls between the host's polls is
        # timing the replay's stand-in does not reproduce)
        assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        peer.close()
    emulator.run(lambda: None)                  # (the trace's last records written)
    _replays_alike(capsys, path)


def test_a_session_with_a_stalled_server_that_answers_later_replays(open_modem, emulator, tmp_path, capsys):
    """The stand-in server's reply waits for the modem's output as recorded; the replay's
    AT+QISEND=<id>,0 answers are shorter (its stand-in reads at once), so that wait must
    allow for them (_CommandWatch.delta) -- without it the reply came only after a 10 s
    patience (not timed here: the replay must simply match)."""
    path = tmp_path / "stalled2.trace"
    host, peer = _stalled_recording(open_modem, emulator, path)
    try:
        data, held, sent = window_shut(host, peer)
        for _ in range(3):
            query(host)
        peer.release_reading()
        wait_for(lambda: bytes(peer.got) == data, what="every byte at the server")
        poll_until_acked(host, 0, len(data))
        peer.send(b"reply")
        host.seen(b'+QIURC: "recv",0\r\n')
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 5\r\nreply\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        peer.close()
    emulator.run(lambda: None)                  # (the trace's last records written)
    _replays_alike(capsys, path)


@pytest.mark.parametrize("value", ["1e309", "-0.001", "600000.001", "0x10", "-inf"])
def test_more_bad_latencies_are_refused(value):
    from tests.e2e.cli_support import refused
    code, out, err = refused("--profile", "ec2x", "--offline", "--latency", value)
    assert code == 2 and out == "" and "--latency" in err and "Traceback" not in err, err
