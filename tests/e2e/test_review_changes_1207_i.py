"""Adversarial review of 1f5c0e3 + fae5563 (a shaped link keeps a TCP receive window; the
teardown's reference cycle), b189010 (EscapeDetector: late-read held '+'), ffe41ce (an empty
datagram ends a DTLS session / fails its open 566).

The window holds: floods behind latency + kbps + loss in buffer / push / transparent mode,
the host reading to the resume mark, not at all, or switching modes (AT+QISWTMD, "+++" / ATO)
while the link is window-paused, the peer's FIN / RST while paused, lingering closes (TCP and
SSL), `net` cleared / changed / per-socket mid-flood: every byte once, in order, the buffer
within recv_buffer + one read, one "closed".  The escape detector's late reads (sans-IO) and
AT+QFUPL's "+++", and empty datagrams at each DTLS handshake step / online, hold too.

Two bugs, both memory, both fixed (a closed socket was kept for the cyclic GC; the technique of
test_adversarial.py::test_a_closed_socket_is_freed_without_the_cyclic_gc):
* emulator/modem/timers.py Timers._fire left a fired handle's callback and its loop_handle
  (whose args hold the handle back): a cycle per fired timer; a shaped link's _Pipe._due timers
  keep the _Pipe and, through its conditions (SslSocket._conditions), the closed socket -- shaped
  TCP, UDP and DTLS sockets whatever closed them (clearing callback and loop_handle in _fire
  frees them all);
* emulator/sockets/tcpip.py TcpipService.open's `connect` closure captures `sock` and is kept as
  sock._connect: every AT+QIOPEN TCP / UDP socket, shaped or not (now taken once and cleared
  at the teardown)."""
from __future__ import annotations

import gc
import re
import socket
import struct
import threading
import time
import weakref

import pytest

from emulator.at.escape import EscapeDetector
from emulator.io.network import NETWORK_READ
from emulator.sockets.tcpip import tcpip_service
from emulator.testing.peers import UdpMiddlebox
from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, ec2x_with_pdp, qiopen,
                                      read_pushes, udp_peer, wait_for)
from tests.e2e.test_adversarial_psk_dtls_openssl import (one_answer, psk_ctx, psk_server, route, servers,
                                                         start_open, state_of)

__all__ = ["servers"]

OK = b"\r\nOK\r\n"
DATA = bytes((i * 31 + (i >> 8)) & 0xFF for i in range(1 << 20))      # 1 MiB, no period of 256


def _sock(emulator, port, fn, cid=0):
    return emulator.run(lambda: fn(tcpip_service(port.modem).sockets[cid]))


def _qird(host, n=1500) -> tuple[bytes, bytes]:
    """(data, the text before +QIRD) of one AT+QIRD=0,n."""
    host.write(f"AT+QIRD=0,{n}\r")
    chunk = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"), timeout=10)
    k = int(re.search(rb"\+QIRD: (\d+)\r\n", chunk).group(1))
    data = host.read_exactly(k) if k else b""
    assert host.read_until(OK, timeout=5).endswith(OK)
    return data, chunk


def _link_state(t):
    if t is None:
        return None
    return dict(type=type(t).__name__, owner=getattr(t, "_owner_paused", None), rp=getattr(t, "_reading_paused", None),
                inner_reading=t.inner.is_reading() if hasattr(t, "inner") else t.is_reading(),
                closing=t.is_closing(), queued=getattr(getattr(t, "_incoming", None), "queued", None),
                win=getattr(t, "receive_window", 0) and t.receive_window())


def _read_all_buffer(host, total, timeout=15, size=1500) -> tuple[bytes, int]:
    got, closed, end = bytearray(), 0, time.monotonic() + timeout
    while len(got) < total:
        assert time.monotonic() < end, f"stalled at {len(got)} of {total}"
        data, chunk = _qird(host, size)
        closed += chunk.count(b'"closed",0')
        if not data:
            time.sleep(0.02)
        got += data
    return bytes(got), closed


def _flood_then(peer, data, after="fin"):
    def run():
        peer.send(data)
        if after == "fin":
            peer.shutdown_wr()
        elif after == "rst":
            peer.conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.conn.close()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


NETS = {"lat_kbps_loss": dict(latency_ms=20, kbps=40000, loss=0.2, seed=3),
        "latency": dict(latency_ms=40)}


# == buffer mode: window, bound, every byte once, no stall ==============================================

@pytest.mark.parametrize("net", list(NETS), ids=list(NETS))
def test_buffer_mode_slow_reader_at_the_resume_mark_every_byte_once_then_closed(open_modem, peer_factory,
                                                                                emulator, net):
    """The host waits until the socket pauses, then reads exactly down to half the buffer
    (the resume mark: not below it), waits, then reads on: the bound holds, nothing stalls,
    every byte once, one "closed"."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", **NETS[net])["ok"]
    qiopen(host, 0)
    limit = _sock(emulator, port, lambda s: s.recv_limit)
    _flood_then(peer, DATA)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    held = _sock(emulator, port, lambda s: len(s.inbox))
    assert limit <= held <= limit + NETWORK_READ
    got = bytearray()
    to_mark = held - limit // 2
    while to_mark > 0:
        data, _ = _qird(host, min(1500, to_mark))
        got += data
        to_mark -= len(data)
    time.sleep(0.3)
    assert _sock(emulator, port, lambda s: len(s.inbox)) <= limit + NETWORK_READ
    rest, closed = _read_all_buffer(host, len(DATA) - len(got))
    got += rest
    assert bytes(got) == DATA
    if not closed:
        assert host.read_until(b'"closed",0\r\n', timeout=5).endswith(b'+QIURC: "closed",0\r\n')
    else:
        assert closed == 1
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 0\r\n" + OK
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("after", ["fin", "rst"])
def test_peer_end_while_window_paused_is_reported_once_the_host_reads(open_modem, peer_factory, emulator, after):
    """Latency, the host reads nothing while 400 KB come then the peer's FIN / RST: once the
    host reads, "closed" comes once; what it read is a prefix of the stream (all of it after
    a FIN); nothing stalls."""
    peer = peer_factory(hold_reading=after == "rst")   # (a close() under a blocked recv sends nothing)
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=30)["ok"]
    qiopen(host, 0)
    data = DATA[:400_000]
    t = _flood_then(peer, data, after)
    t.join(15)
    time.sleep(0.5)
    got, closed, end = bytearray(), 0, time.monotonic() + 15
    while not closed:
        assert time.monotonic() < end, (len(got), bytes(host.transcript).count(b'"closed"'),
                                        _sock(emulator, port, lambda s: (s.state, len(s.inbox), s._paused, _link_state(s._transport))))
        d, chunk = _qird(host, 1500)
        closed += chunk.count(b'"closed",0')
        got += d
        if not d and not closed:
            closed += host.quiet_for(0.05).count(b'"closed",0')
    while True:
        d, chunk = _qird(host, 1500)
        closed += chunk.count(b'"closed",0')
        if not d:
            break
        got += d
    assert data.startswith(bytes(got))
    if after == "fin":
        assert bytes(got) == data
    assert closed == 1
    assert host.quiet_for(0.3) == b""


def test_lingering_close_while_window_paused_ends_with_the_peers_fin(open_modem, peer_factory, emulator):
    """Latency + kbps, the window paused (host reads nothing, 1 MB coming); AT+QICLOSE=0,10:
    the link reads to the end, the peer sees our FIN, closes, and OK comes well before 10 s."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=20, kbps=80000)["ok"]
    qiopen(host, 0)

    def flood_then_close_on_eof():
        try:
            peer.send(DATA)
        except OSError:
            pass
        if peer.eof.wait(15):
            peer._close_conn()
    threading.Thread(target=flood_then_close_on_eof, daemon=True).start()
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    start = time.monotonic()
    assert host.at("AT+QICLOSE=0,10", timeout=12).endswith(OK)
    assert time.monotonic() - start < 8
    assert host.quiet_for(0.3) == b""
    assert emulator.control("state")["sockets"] == []


@pytest.mark.parametrize("change", ["cleared", "changed", "per_socket"])
def test_net_changed_mid_flood_every_byte_once(open_modem, peer_factory, emulator, change):
    """The link's conditions change (modem-wide cleared / changed, or a per-socket `net`
    added) mid-flood while the window is paused: every byte once, in order, then "closed"."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=40, kbps=50000)["ok"]
    qiopen(host, 0)
    _flood_then(peer, DATA)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    first, _ = _read_all_buffer(host, 100_000)
    if change == "cleared":
        assert emulator.control("net", latency_ms=0)["ok"]
    elif change == "changed":
        assert emulator.control("net", latency_ms=5, loss=0.3, seed=9)["ok"]
    else:
        assert emulator.control("net", socket=0, latency_ms=1, kbps=200000)["ok"]
    rest, closed = _read_all_buffer(host, len(DATA) - len(first), timeout=18, size=1500)
    assert first + rest == DATA
    assert _sock(emulator, port, lambda s: len(s.inbox)) == 0
    if not closed:
        assert host.read_until(b'"closed",0\r\n', timeout=5).endswith(b'+QIURC: "closed",0\r\n')


# == push and transparent modes ================================================================

def test_qiswtmd_to_push_while_window_paused_pushes_every_byte_once(open_modem, peer_factory, emulator):
    """Buffer mode, window paused behind latency; AT+QISWTMD=0,1 (direct push): the rest of the
    1 MB is pushed, every byte once after what was buffered, then "closed"."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=30, kbps=60000)["ok"]
    qiopen(host, 0)
    _flood_then(peer, DATA)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    assert host.read_until(b'"recv",0\r\n').endswith(b'+QIURC: "recv",0\r\n')
    first, _ = _read_all_buffer(host, 3000)
    assert host.at("AT+QISWTMD=0,1") == OK
    rest = read_pushes(host, len(DATA) - len(first), timeout=18)
    assert first + rest == DATA
    assert host.read_until(b'"closed",0\r\n', timeout=5).endswith(b'+QIURC: "closed",0\r\n')


@pytest.mark.parametrize("net", [dict(latency_ms=20, kbps=3000, loss=0.1, seed=5), dict(latency_ms=30, kbps=3000)],
                         ids=["latency_kbps_loss", "latency_kbps"])
def test_transparent_escape_while_window_paused_then_ato_every_byte_once(open_modem, peer_factory, emulator, net):
    """Transparent mode behind a shaped link, the peer flooding 1 MB then FIN; the host reads
    300 KB, stops, "+++" while the link is window-paused: OK (after whatever stream bytes
    were on their way); ATO: CONNECT, the rest; then NO CARRIER -- every byte once, in order."""
    assert DATA.find(b"\r\nOK\r\n") == -1 and DATA.find(b"\r\nCONNECT\r\n") == -1
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", **net)["ok"]
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    connected = time.monotonic()
    _flood_then(peer, DATA)
    got = bytearray(host.read_exactly(100_000, timeout=10))
    time.sleep(max(0.0, connected + 1.2 - time.monotonic()))
    host.write(b"+++")
    got += host.read_until(OK, timeout=10)[:-len(OK)]
    assert len(got) < len(DATA) - 200_000, len(got)      # (the flood goes on: the escape came mid-flood)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    time.sleep(0.5)                                       # (window-paused in command mode)
    assert host.quiet_for(0.2) == b""
    host.write("ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    got += host.read_exactly(len(DATA) - len(got), timeout=15)
    assert bytes(got) == DATA
    assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
    assert host.quiet_for(0.2) == b""


# == memory: closed shaped sockets go by reference counting =====================================

def _referrers(emulator, ref):
    """What keeps the object (the failure message): its referrers -- closures by function,
    bound methods by name and, for a shaped link's _Pipe, the fired timer handles holding it."""
    def look():
        import types
        obj = ref()
        out = []
        for r in gc.get_referrers(obj):
            if isinstance(r, types.CellType):
                out += [("closure", f.__qualname__) for t in gc.get_referrers(r) for f in gc.get_referrers(t)
                        if isinstance(f, types.FunctionType)]
            elif isinstance(r, types.MethodType):
                out.append(("method", r.__func__.__qualname__))
                for pipe in (h for h in gc.get_referrers(r) if type(h).__name__ == "_Pipe"):
                    for m in (m for m in gc.get_referrers(pipe) if isinstance(m, types.MethodType)):
                        out.append(("_Pipe._due held by", [(type(x).__name__, "fired" if getattr(x, "cancelled", 0) else "")
                                                           for x in gc.get_referrers(m)]))
            elif isinstance(r, dict) and "open_modem" not in r:
                out.append(("dict of", [type(h).__name__ for h in gc.get_referrers(r)]))
        return out
    return emulator.run(look)


def _drain_until_closed(host, timeout=10):
    end = time.monotonic() + timeout
    while b'"closed",0' not in bytes(host.transcript):
        assert time.monotonic() < end, "no closed URC"
        if not _qird(host, 1500)[0]:
            host.quiet_for(0.05)
    while _qird(host, 1500)[0]:
        pass


# Was a bug, fixed: a fired modem timer kept a cycle with its asyncio handle (Timers._fire)


@pytest.mark.parametrize("shaped", [pytest.param(True, id="shaped"), pytest.param(False, id="plain")])
@pytest.mark.parametrize("how", ["host", "host_linger", "peer", "abort_rst", "abort_close"])
def test_closed_tcp_socket_is_freed_without_the_cyclic_gc(open_modem, peer_factory, emulator, how, shaped):
    """(TcpipService.open's connect closure is dropped by the test once connected -- it is
    a separate cycle, see test_qiopen_socket_connect_closure_keeps_a_cycle -- so this checks
    what 1f5c0e3 / fae5563 added: the window callback and receive_window.)"""
    """A TCP socket behind a shaped link (latency + kbps + loss), window-paused with 200 KB
    unread, closed by the host (with and without linger), the peer (FIN) or a fault (control
    drop rst / close): once another socket on its id has come and gone, it is gone by
    reference counting alone."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    if shaped:
        assert emulator.control("net", latency_ms=5, kbps=50000, loss=0.1, seed=1)["ok"]
    qiopen(host, 0)
    peer.send(DATA[:200_000])
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    _sock(emulator, port, lambda s: setattr(s, "_connect", None))
    first = _sock(emulator, port, lambda s: weakref.ref(s))
    gc.collect()
    gc.disable()
    try:
        if how == "host":
            assert host.at("AT+QICLOSE=0,0").endswith(OK)
        elif how == "host_linger":
            threading.Timer(0.5, peer._close_conn).start()           # (the peer answers our FIN)
            assert host.at("AT+QICLOSE=0,5", timeout=8).endswith(OK)
        elif how == "peer":
            peer._close_conn()
            _drain_until_closed(host)
            assert host.at("AT+QICLOSE=0").endswith(OK)
        else:
            assert emulator.control("drop", socket=0, how=how[6:])["ok"]
            _drain_until_closed(host)
            assert host.at("AT+QICLOSE=0").endswith(OK)
        time.sleep(0.2)
        peer_factory()
        qiopen(host, 0)
        _sock(emulator, port, lambda s: setattr(s, "_connect", None))
        assert host.at("AT+QICLOSE=0,0").endswith(OK)
        time.sleep(1.0)                    # (packets still on the link go first)
        assert emulator.run(first) is None, _referrers(emulator, first)
    finally:
        gc.enable()


# Was a bug, fixed (see the module docstring)
@pytest.mark.parametrize("kind", ["TCP", "UDP"])
def test_qiopen_socket_connect_closure_keeps_a_cycle(open_modem, peer_factory, emulator, kind):
    """A plain AT+QIOPEN socket (no `net`), opened and closed, then another on its id: the
    first must go by reference counting (as test_adversarial's SSL sockets do)."""
    peer_factory()
    udp = udp_peer()
    try:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", udp.getsockname()[1])
        host, port = ec2x_with_pdp(open_modem)
        args = {} if kind == "TCP" else dict(kind="UDP", addr=UDP_HOST, port=UDP_PORT)
        qiopen(host, 0, **args)
        first = _sock(emulator, port, lambda s: weakref.ref(s))
        gc.collect()
        gc.disable()
        try:
            assert host.at("AT+QICLOSE=0,0").endswith(OK)
            if kind == "TCP":
                peer_factory()
            qiopen(host, 0, **args)
            assert host.at("AT+QICLOSE=0,0").endswith(OK)
            time.sleep(0.2)
            assert emulator.run(first) is None, _referrers(emulator, first)
        finally:
            gc.enable()
    finally:
        udp.close()


# Was a bug, fixed (see the module docstring)
def test_closed_shaped_udp_socket_is_freed_without_the_cyclic_gc(open_modem, emulator):
    peer = udp_peer()
    try:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", peer.getsockname()[1])
        host, port = ec2x_with_pdp(open_modem)
        assert emulator.control("net", latency_ms=5, kbps=5000)["ok"]
        qiopen(host, 0, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
        host.write("AT+QISEND=0,2\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"hi")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        _, addr = peer.recvfrom(100)
        for _ in range(5):
            peer.sendto(b"x" * 1000, addr)
        time.sleep(0.3)
        _sock(emulator, port, lambda s: setattr(s, "_connect", None))   # (the closure's cycle: apart)
        first = _sock(emulator, port, lambda s: weakref.ref(s))
        gc.collect()
        gc.disable()
        try:
            assert host.at("AT+QICLOSE=0").endswith(OK)
            qiopen(host, 0, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
            assert host.at("AT+QICLOSE=0").endswith(OK)
            time.sleep(0.2)
            assert emulator.run(first) is None, _referrers(emulator, first)
        finally:
            gc.enable()
    finally:
        peer.close()


# Was a bug, fixed (see the module docstring)
@pytest.mark.parametrize("how", ["host", "empty_datagram"])
def test_closed_shaped_dtls_socket_is_freed_without_the_cyclic_gc(open_modem, emulator, servers, how):
    from emulator.sockets.service import ssl_service
    host, port = ec2x_with_pdp(open_modem)
    host.line_end = b"\r\n"
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        assert emulator.control("net", latency_ms=5)["ok"]
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        svc = emulator.run(lambda: ssl_service(port.modem))
        first = emulator.run(lambda: weakref.ref(svc.sockets[0]))
        gc.collect()
        gc.disable()
        try:
            if how == "empty_datagram":
                box.inject(b"")
                host.seen(b'+QSSLURC: "closed",0\r\n', 5)
            assert host.at("AT+QSSLCLOSE=0") == OK
            with UdpMiddlebox(servers(psk_server()).address) as box2:
                route(emulator, box2.port)
                start_open(host)
                assert one_answer(host) == 0
                assert host.at("AT+QSSLCLOSE=0") == OK
            time.sleep(0.2)
            assert emulator.run(first) is None, _referrers(emulator, first)
        finally:
            gc.enable()


# == DTLS: an empty datagram at every handshake step ======================================================

@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_empty_datagram_before_each_server_flight_datagram_fails_566_once(ec2x_strict, emulator, servers, index):
    """A zero-length datagram just ahead of the server's index-th datagram (during the
    handshake): +QSSLOPEN: 0,566 once, the id free, and it opens again."""
    host, advance, _ = ec2x_strict
    host.line_end = b"\r\n"
    server = servers(psk_server())
    seen = []

    def rule(direction, i, data):
        if direction == "s2c" and i == index and not seen:
            seen.append(i)
            return [b"", (0.05, data)]
        return [data]
    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        got = one_answer(host)
        if not seen:                       # (the handshake had fewer server datagrams)
            assert got == 0
            return
        assert got == 566
        assert state_of(host, 0) is None
        assert host.quiet_for(0.3) == b""


def test_empty_datagram_in_dtls_transparent_mode_ends_with_no_carrier(ec2x_strict, emulator, servers):
    """Established DTLS socket in transparent mode, the server's line then an empty datagram:
    the line reaches the host, then NO CARRIER once; the id is free afterwards."""
    host, advance, _ = ec2x_strict
    host.line_end = b"\r\n"
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        host.write('AT+QSSLOPEN=1,0,0,"%s",%d,2\r' % (
            __import__("tests.e2e.test_adversarial_psk_dtls_openssl", fromlist=["HOST"]).HOST,
            __import__("tests.e2e.test_adversarial_psk_dtls_openssl", fromlist=["PORT"]).PORT))
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), timeout=15) == b"\r\nCONNECT\r\n"
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"hello\n")
        assert host.read_exactly(6, timeout=5) == b"hello\n"
        box.inject(b"")
        assert host.read_until(b"NO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
        assert host.quiet_for(0.5) == b""


# == EscapeDetector: 1, 2, 3 '+' around the guard time, read late (sans-IO) ===========================

G = 1.0


def _drive(events, guard=G):
    """events: (now, bytes) feeds and (now, None) expire() calls honoured only when due.
    Returns (data out, escapes)."""
    d = EscapeDetector(guard=guard, now=0.0)
    out, escapes = bytearray(), 0
    for now, data in events:
        if data is None:
            dl = d.deadline()
            if dl is not None and now >= dl:
                o, e = d.expire(now)
                out += o
                escapes += e
        else:
            out += d.feed(data, now)
    return bytes(out), escapes, d


@pytest.mark.parametrize("pluses", [(2.0,), (2.0, 2.6), (2.0, 2.05)], ids=["one", "two_spread", "two_close"])
@pytest.mark.parametrize("read_at", [3.2, 3.7, 6.0])
def test_late_held_pluses_then_plus_chunk_escape_only_with_its_own_silence(pluses, read_at):
    """'+'s held after a silence (each its own read); their guard time (from the first)
    runs out at 3.0 unseen; '+++' is read at read_at.  It is an escape iff a guard time of
    silence lies between the last '+' and it -- then the held '+'s are data; else all data,
    in order."""
    ev = [(t, b"+") for t in pluses] + [(read_at, b"+++"), (read_at + G + 0.01, None)]
    out, esc, d = _drive(ev)
    if read_at - pluses[-1] >= G:
        assert (out, esc) == (b"+" * len(pluses), 1)
    else:
        assert (out, esc) == (b"+" * (len(pluses) + 3), 0), (out, esc)
    assert d.held == 0


@pytest.mark.parametrize("split", [(b"+", b"++"), (b"++", b"+"), (b"+", b"+", b"+")])
def test_escape_split_across_reads_within_the_guard(split):
    ev, t = [], 2.0
    for part in split:
        ev.append((t, part))
        t += 0.2
    ev.append((t + G, None))
    assert _drive(ev)[:2] == (b"", 1)


def test_late_held_plus_then_data_then_plus_keeps_order():
    out, esc, _ = _drive([(2.0, b"+"), (5.0, b"a+"), (7.0, b"+"), (9.5, b"b")])
    assert (out, esc) == (b"+a++b", 0)


def test_escape_after_late_release_needs_silence_after_the_released_bytes():
    """'+' released late at 5.0 together with 'x' (data) -- '+++' at 5.5 has no silence
    before it: data."""
    out, esc, _ = _drive([(2.0, b"+"), (5.0, b"x"), (5.5, b"+++"), (7.0, None)])
    assert (out, esc) == (b"+x+++", 0)


def test_three_plus_then_data_within_the_guard_is_all_data():
    out, esc, _ = _drive([(2.0, b"+++"), (2.5, b"z"), (5.0, None)])
    assert (out, esc) == (b"+++z", 0)


def test_late_read_exactly_at_the_guard_boundary():
    """'+' at 2.0, '++' read at exactly 3.0: late -- "within the guard time" is strictly less
    (b4bbe95: the expiry timer at 3.0 made them data when it ran first, the read an escape
    when it came first; docs/behaviour.md, Leaving): data, no escape; just before 3.0, an
    escape after 4.0."""
    out, esc, _ = _drive([(2.0, b"+"), (3.0, b"++"), (4.01, None)])
    assert (out, esc) == (b"+++", 0)
    out, esc, _ = _drive([(2.0, b"+"), (2.999, b"++"), (4.01, None)])
    assert (out, esc) == (b"", 1)


# == AT+QFUPL's "+++" (the same detector) ===============================================================

@pytest.mark.parametrize("lead", [b"+", b"++"])
def test_qfupl_held_pluses_expire_as_data_then_a_guarded_escape_keeps_them(open_modem, lead):
    """AT+QFUPL data: "abc", 1.3 s, "+" or "++" (held: may begin an escape), 1.3 s (their
    guard time passes: data), "+++", 1.3 s: an escape -- the file is "abc" + the held ones,
    answered +QFUPL: <size>,... OK."""
    host, port = open_modem()
    host.write('AT+QFUPL="UFS:esc.txt",100,10\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    time.sleep(1.2)
    host.write(b"abc")
    time.sleep(1.3)
    host.write(lead)
    time.sleep(1.3)
    host.write(b"+++")
    got = host.read_until(OK, timeout=5)
    size = 3 + len(lead)
    assert re.fullmatch(rb"\r\n\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK\r\n" % size, got), got
    lst = host.at('AT+QFLST="UFS:esc.txt"')
    assert b'+QFLST: "esc.txt",%d\r\n' % size in lst, lst


def test_ssl_lingering_close_while_window_paused_ends_with_the_servers_close(open_modem, emulator):
    """An SSL socket behind latency + kbps, its host reading nothing while a TLS server
    floods 1 MB then close_notify + FIN; AT+QSSLCLOSE=0,10 while window-paused: the linger
    reads to the end (the window dropped) and OK comes long before 10 s; the id is free."""
    from emulator.sockets.service import ssl_service
    from tests.e2e.test_review_changes_1207_h import SSL_HOST, SSL_PORT, _ssl_open
    from emulator.testing.peers import TlsServer

    def handler(conn):
        try:
            conn.sendall(DATA)
            conn.send_close_notify()
        except OSError:
            pass
    with TlsServer(handler=handler, legacy=True) as server:
        emulator.router.add_map(SSL_HOST, SSL_PORT, "127.0.0.1", server.port)
        host, port = ec2x_with_pdp(open_modem)
        assert emulator.control("net", latency_ms=20, kbps=80000)["ok"]
        _ssl_open(host)
        wait_for(lambda: emulator.run(lambda: ssl_service(port.modem).sockets[0]._paused), timeout=10,
                 what="paused")
        start = time.monotonic()
        got = host.at("AT+QSSLCLOSE=0,10", timeout=12)
        assert got.endswith(OK) and got.count(b"OK") == 1, got
        assert time.monotonic() - start < 8
        assert host.quiet_for(0.3) == b""
        assert emulator.control("state")["sockets"] == []


@pytest.mark.parametrize("net", [None, dict(latency_ms=10)], ids=["plain", "shaped"])
def test_plain_udp_socket_survives_an_empty_datagram(open_modem, emulator, net):
    """ffe41ce's rule is DTLS's (Mbed TLS's CONN_EOF): an AT+QIOPEN "UDP" socket has no
    session to end -- a zero-length datagram must not close it: no "closed", the next
    datagram readable, sends still go."""
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
        _, addr = peer.recvfrom(100)
        peer.sendto(b"", addr)
        time.sleep(0.3)
        peer.sendto(b"after", addr)
        time.sleep(0.3)
        assert b'"closed"' not in bytes(host.transcript) + host.quiet_for(0.2)
        got = b""
        for _ in range(3):
            data, _ = _qird(host, 1500)
            got += data
            if got:
                break
        assert got == b"after"
        host.write("AT+QISEND=0,3\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"bye")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(100)[0] == b"bye"
    finally:
        peer.close()


@pytest.mark.parametrize("net", [dict(latency_ms=30, kbps=40000, loss=0.2, seed=11)], ids=["shaped"])
def test_push_mode_host_not_reading_behind_a_shaped_link_bound_then_every_byte_once(open_modem, peer_factory,
                                                                                   emulator, net):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", **net)["ok"]
    qiopen(host, 0, mode=1)
    limit = _sock(emulator, port, lambda s: s.recv_limit)
    _flood_then(peer, DATA)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    most, end = 0, time.monotonic() + 0.8
    while time.monotonic() < end:
        most = max(most, _sock(emulator, port, lambda s: len(s.inbox)))
        time.sleep(0.02)
    assert most <= limit + NETWORK_READ, (limit, most)
    assert read_pushes(host, len(DATA), timeout=15) == DATA
    assert host.read_until(b'"closed",0\r\n', timeout=5).endswith(b'+QIURC: "closed",0\r\n')


def test_qiswtmd_to_transparent_while_window_paused_then_ato_every_byte_once(open_modem, peer_factory, emulator):
    """Buffer mode, window paused behind latency + loss; AT+QISWTMD=0,2: CONNECT, the
    buffered bytes and the rest of the 1 MB once, in order, then NO CARRIER."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert emulator.control("net", latency_ms=25, kbps=60000, loss=0.1, seed=2)["ok"]
    qiopen(host, 0)
    _flood_then(peer, DATA)
    wait_for(lambda: _sock(emulator, port, lambda s: s._paused), timeout=10, what="paused")
    assert host.read_until(b'"recv",0\r\n').endswith(b'+QIURC: "recv",0\r\n')
    first, _ = _read_all_buffer(host, 5000)
    host.write("AT+QISWTMD=0,2\r")                       # (answered CONNECT: transparent at once)
    assert host.read_until(b"\r\nCONNECT\r\n", timeout=5).endswith(b"\r\nCONNECT\r\n")
    rest = host.read_exactly(len(DATA) - len(first), timeout=15)
    assert first + rest == DATA
    assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"


def test_empty_datagram_in_dtls_push_mode_reports_closed_once_after_the_data(open_modem, emulator, servers):
    """DTLS socket in direct push (mode 1) behind latency, a line then an empty datagram:
    the push of the line, then +QSSLURC: "closed",0 once."""
    host, port = ec2x_with_pdp(open_modem)
    host.line_end = b"\r\n"
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        assert emulator.control("net", latency_ms=20)["ok"]
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host, mode=1)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"line\n")
        host.seen(b"line\n", 5)
        box.inject(b"")
        host.seen(b'+QSSLURC: "closed",0\r\n', 5)
        host.quiet_for(0.4)
        t = bytes(host.transcript)
        assert t.count(b'+QSSLURC: "closed",0\r\n') == 1, t
        assert t.index(b"line\n") < t.index(b'"closed",0'), t
