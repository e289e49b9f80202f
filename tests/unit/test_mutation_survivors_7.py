"""Tests from a manual mutation-testing pass over the EC2x TCP/IP sockets
(emulator/sockets/tcpip.py: TcpipSocket, TcpListener, TcpipService -- service types, incoming
connections, the shared id pool, the PDP context's loss) and their AT commands
(emulator/commands/tcpip.py: AT+QIOPEN, AT+QICLOSE, AT+QISTATE, AT+QISEND / AT+QISENDEX,
AT+QIRD, AT+QISWTMD).  Each test pins a behaviour that a small change to those modules (the
mutant named in its docstring) left the TCP/IP e2e tests passing on; the expected values come
from docs/behaviour.md ("TCP/UDP sockets (EC2x)") and the BG96/BG95 TCP/IP notes quoted
there, not from the emulator's current output.  Sans-IO where the behaviour is the service's
own (test_mutation_survivors_3's Bench: a Modem with no pty and no network, sockets put in
their state by hand, the network's bytes handed in as it would); where a real listener or
UDP socket is needed, a Modem on a Router inside asyncio.run, with loopback peers and no pty."""
from __future__ import annotations

import asyncio
import socket

import pytest

from emulator.io.network import Router
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.sockets.tcpip import LISTENING, TcpipSocket, TcpListener, tcpip_service
from tests.unit.test_mutation_survivors_3 import Bench


@pytest.fixture
def bench() -> Bench:
    return Bench()


def listener(bench: Bench, connect_id: int, *, announced: bool = True, local_port: int = 5000) -> TcpListener:
    """A TCP LISTENER on `connect_id` (context 1, buffer mode) in the listening state, its
    server left out (nothing connects to it here); announced: "+QIOPEN: <id>,0" written."""
    svc = tcpip_service(bench.modem)
    lis = TcpListener(svc, connect_id, 1, local_port, svc.deliveries["buffer"])
    lis.state = LISTENING
    lis.held = None if announced else []
    lis.announced = announced
    svc.listeners[connect_id] = lis
    return lis


def incoming(bench: Bench, connect_id: int, server_id: int, *, state: str = "opening") -> TcpipSocket:
    """A TCP INCOMING socket its listener `server_id` accepted on `connect_id`: "opening" (the
    transport not made yet: the host has not heard of it) or "connected"."""
    svc = tcpip_service(bench.modem)
    sock = TcpipSocket(svc, connect_id, pdp_id=1, host="127.0.0.1", port=0, delivery=svc.deliveries["buffer"],
                       recv_limit=svc.recv_buffer, timers=bench.modem.timers, service_type="TCP INCOMING",
                       shown_local_port=5000, server_id=server_id)
    sock._go("open")
    if state == "connected":
        sock._go("established")
    svc.sockets[connect_id] = sock
    return sock


# -- AT+QICFG="recvind",1 (TcpipDialect.recv) --------------------------------------------------
def test_recvind_reports_the_length_waiting_not_the_socket_total(bench):
    """Mutant: TcpipDialect.recv appending the socket's bytes_received (all it ever received)
    instead of what waits in it.  docs/behaviour.md, AT+QICFG `recvind 1`: the buffer-mode URC
    carries the length of what arrived -- after the host read the first 3 bytes, 2 more are
    `+QIURC: "recv",1,2`, not 5."""
    assert bench.run(b'AT+QICFG="recvind",1\r') == b"\r\nOK\r\n"
    sock = bench.connected(1, "buffer", tcp=True)
    sock._received(b"abc")
    assert bench.run() == b'\r\n+QIURC: "recv",1,3\r\n'
    assert bench.run(b"AT+QIRD=1\r") == b"\r\n+QIRD: 3\r\nabc\r\n\r\nOK\r\n"
    sock._received(b"de")
    assert bench.run() == b'\r\n+QIURC: "recv",1,2\r\n'
    assert bench.run(b"AT+QIRD=1,0\r") == b"\r\n+QIRD: 5,3,2\r\n\r\nOK\r\n"


# -- the PDP context's loss (TcpipService.pdp_lost, TcpListener.bearer_lost) ------------------
def test_a_listener_not_yet_announced_never_reports_closed_when_the_context_goes(bench):
    """Mutant: TcpListener.bearer_lost reporting "closed" for any listening listener, without
    `self.announced`.  docs/behaviour.md: a TCP LISTENER whose context goes before its
    `+QIOPEN: <id>,0` is written (in the loop turn it starts listening) reports
    `+QIOPEN: <id>,570`; it never reports "closed" before the answer to its open."""
    lis = listener(bench, 3, announced=False)
    tcpip_service(bench.modem).pdp_lost(1)
    assert bench.run() == b""
    assert lis.lost and lis.server is None
    announced = listener(bench, 4)
    tcpip_service(bench.modem).pdp_lost(1)
    assert bench.run() == b'\r\n+QIURC: "closed",4\r\n' and announced.server is None


def test_a_connection_the_host_was_not_told_of_goes_without_a_word_with_the_context(bench):
    """Mutant: TcpipService.pdp_lost without its first loop (TCP INCOMING sockets still
    opening reported as sockets are: `+QIOPEN: 0,570` for an id the host never opened).
    docs/behaviour.md: connections a listener accepted that the host has not been told of yet
    go without a word when the context goes, and free their ids."""
    listener(bench, 3)
    incoming(bench, 0, 3, state="opening")
    svc = tcpip_service(bench.modem)
    svc.pdp_lost(1)
    assert bench.run() == b'\r\n+QIURC: "closed",3\r\n'
    assert 0 not in svc.sockets


class Net:
    """An EC2x Modem on a Router (offline: loopback only), no pty, inside a running loop;
    .run(bytes) feeds them and returns the output since the last call, .wait(until) collects
    output until `until` shows (or `timeout` seconds)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.router = Router(offline=True)
        self.modem = Modem(load_profile("ec2x"), network=self.router)
        self.modem.interpreter.strict = True
        self.modem.attach(self.out.extend)
        self.svc = tcpip_service(self.modem)
        assert self.run(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"

    def run(self, data: bytes = b"") -> bytes:
        if data:
            self.modem.feed(data)
        out = bytes(self.out)
        self.out.clear()
        return out

    async def wait(self, until: bytes, timeout: float = 5.0) -> bytes:
        got = bytearray(self.run())
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while until not in got and loop.time() < end:
            await asyncio.sleep(0.005)
            got += self.run()
        return bytes(got)

    async def at(self, line: str) -> bytes:
        """A command line and its answer (up to OK / ERROR)."""
        got = bytearray(self.run(line.encode() + b"\r"))
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        while not (got.endswith(b"\r\nOK\r\n") or got.endswith(b"\r\nERROR\r\n")) and loop.time() < end:
            await asyncio.sleep(0.005)
            got += self.run()
        return bytes(got)

    async def active(self) -> None:
        assert await self.at("AT+QIACT=1") == b"\r\nOK\r\n"

    def listen_anywhere(self, local_port: int) -> None:
        """A listener on the module's `local_port` binds any free loopback port."""
        self.router.add_listen(local_port, "127.0.0.1", 0)

    def bound_port(self, connect_id: int) -> int:
        """The real loopback port of the listener or UDP SERVICE on `connect_id`."""
        entry = self.svc.entry(connect_id)
        if entry.service_type == "TCP LISTENER":
            return entry.server.sockets[0].getsockname()[1]
        return entry._transport.get_extra_info("sockname")[1]


def test_a_listener_whose_context_went_while_binding_never_starts_serving(monkeypatch):
    """Mutant: TcpipService.listen's start() calling listener.serve() without checking
    `listener.lost` (a listener whose context went while it was binding starts accepting,
    then is stopped).  docs/behaviour.md: a TCP LISTENER whose context goes before its
    `+QIOPEN: <id>,0` is written (still binding) reports `+QIOPEN: <id>,570` and is not
    started -- its server never accepts a connection."""
    import emulator.sockets.tcpip as tcpip
    served = []
    real_listen = tcpip.listen_tcp

    async def listen_tcp(router, local_port, factory):
        server = await real_listen(router, local_port, factory)
        start = server.start_serving

        async def start_serving():
            served.append(local_port)
            await start()
        server.start_serving = start_serving
        return server
    monkeypatch.setattr(tcpip, "listen_tcp", listen_tcp)

    async def main():
        net = Net()
        await net.active()
        net.listen_anywhere(5001)
        out = await net.at('AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,5001,0;+QIDEACT=1')
        out += await net.wait(b"+QIOPEN: 0,")
        assert out.endswith(b"\r\nOK\r\n\r\n+QIOPEN: 0,570\r\n"), out
        assert served == [] and net.svc.entry(0) is None
        assert (await net.at("AT+QIGETERROR")).startswith(b"\r\n+QIGETERROR: 570,")
    asyncio.run(main())


# -- UDP SERVICE ---------------------------------------------------------------------------------
async def udp_service(net: Net, connect_id: int, local_port: int, mode: int = 0) -> int:
    """AT+QIOPEN of a UDP SERVICE on the module's `local_port` (bound to any free loopback
    port); returns that port."""
    net.listen_anywhere(local_port)
    out = await net.at(f'AT+QIOPEN=1,{connect_id},"UDP SERVICE","127.0.0.1",0,{local_port},{mode}')
    out += await net.wait(b"+QIOPEN: %d," % connect_id)
    assert out == b"\r\nOK\r\n\r\n+QIOPEN: %d,0\r\n" % connect_id, out
    return net.bound_port(connect_id)


def test_a_udp_service_cannot_be_switched_to_transparent_mode():
    """Mutant: AT+QISWTMD without its UDP SERVICE check (a UDP SERVICE switched to mode 2:
    CONNECT, and the host's bytes would go nowhere -- it has no destination).
    docs/behaviour.md, Listeners: a UDP SERVICE cannot be switched to mode 2 (572); modes 0
    and 1 it can."""
    async def main():
        net = Net()
        await net.active()
        await udp_service(net, 2, 5002)
        assert await net.at("AT+QISWTMD=2,2") == b"\r\nERROR\r\n"
        assert (await net.at("AT+QIGETERROR")).startswith(b"\r\n+QIGETERROR: 572,")
        assert net.svc.sockets[2].delivery.name == "buffer"
        assert await net.at("AT+QISWTMD=2,1") == b"\r\nOK\r\n"
        assert net.svc.sockets[2].delivery.name == "push"
        assert await net.at("AT+QICLOSE=2") == b"\r\nOK\r\n"
    asyncio.run(main())


def test_connections_held_behind_an_unannounced_listener_go_without_closed_with_the_context(bench):
    """Mutant: TcpipService.pdp_lost not stopping the listeners whose `+QIOPEN: <id>,0` is
    still due before the sockets report (their held TCP INCOMING connections, already
    connected, then say `+QIURC: "closed",0` of an id the host never heard of).
    docs/behaviour.md: connections a listener accepted that the host has not been told of yet
    (waiting behind the listener's `+QIOPEN: <id>,0`) go without a word when the context goes,
    and free their ids, as when the listener is closed."""
    lis = listener(bench, 3, announced=False)
    held = incoming(bench, 0, 3, state="connected")
    lis.held.append(held)
    svc = tcpip_service(bench.modem)
    svc.pdp_lost(1)
    assert bench.run() == b""
    assert 0 not in svc.sockets and lis.held is None


def test_qisendex_on_a_udp_service_is_572_and_sends_nothing():
    """Mutant: AT+QISENDEX on a UDP SERVICE answering 552 (a bad parameter) instead of 572.
    docs/behaviour.md, AT+QISENDEX: an even number of hex digits ... else 552; not on a UDP
    SERVICE (572) -- the line is well formed, the socket has no destination."""
    async def main():
        net = Net()
        await net.active()
        port = await udp_service(net, 4, 5004)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            peer.sendto(b"hi", ("127.0.0.1", port))                 # the service knows a sender now
            assert b'+QIURC: "recv",4' in await net.wait(b'"recv",4')
            assert await net.at('AT+QISENDEX=4,"4142"') == b"\r\nERROR\r\n"
            assert (await net.at("AT+QIGETERROR")).startswith(b"\r\n+QIGETERROR: 572,")
            assert await net.at('AT+QISENDEX=4,"41G2"') == b"\r\nERROR\r\n"       # bad hex first: 552
            assert (await net.at("AT+QIGETERROR")).startswith(b"\r\n+QIGETERROR: 552,")
            await asyncio.sleep(0.05)
            with pytest.raises(BlockingIOError):
                peer.recv(100)
            assert await net.at("AT+QISEND=4,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    asyncio.run(main())


# -- AT+QISEND ---------------------------------------------------------------------------------
def test_a_destination_on_qisend_is_only_for_a_udp_service(bench):
    """Mutant: AT+QISEND without its `len(args) > 2` check (a connected "TCP" socket taking
    `,"<ip>",<port>` and sending to its own peer anyway).  docs/behaviour.md / the BG96 note:
    the `<remoteIP>,<remote_port>` form is the UDP SERVICE's (it names the destination); on
    another socket the line is a bad parameter -- ERROR, 552, no "> " prompt, nothing sent."""
    sock = bench.connected(1, "buffer", tcp=True)
    assert bench.run(b'AT+QISEND=1,5,"127.0.0.1",7000\r') == b"\r\nERROR\r\n"
    assert bench.run(b"AT+QIGETERROR\r").startswith(b"\r\n+QIGETERROR: 552,")
    assert bench.run(b"AT+QISEND=1,5\r") == b"\r\n> "          # the client's own form
    bench.run(b"\x1b")                                          # (ESC: cancelled, nothing sent)
    assert sock.bytes_sent == 0


# -- AT+QIOPEN ---------------------------------------------------------------------------------
@pytest.mark.parametrize("why", ["inactive context", "id in use"])
def test_a_transparent_qiopen_refused_at_once_is_a_plain_error(bench, why):
    """Mutant: AT+QIOPEN's refuse() answering OK and `+QIOPEN: <id>,<err>` in access mode 2
    too.  docs/behaviour.md, AT+QIOPEN: an id in use (563) or an inactive context (561) also
    answers OK and then the URC ...; in mode 2 these are ERROR (the code for AT+QIGETERROR),
    with no URC after it; modes 0/1 keep the OK + URC form."""
    if why == "id in use":
        assert bench.run(b"AT+QIACT=1\r") == b"\r\nOK\r\n"
        bench.connected(0, "buffer", tcp=True)
        code = 563
    else:
        code = 561
    assert bench.run(b'AT+QIOPEN=1,0,"TCP","h.test",7000,0,2\r') == b"\r\nERROR\r\n"
    assert bench.run(b"AT+QIGETERROR\r").startswith(b"\r\n+QIGETERROR: %d," % code)
    assert bench.run(b'AT+QIOPEN=1,0,"TCP","h.test",7000,0,1\r') == b"\r\nOK\r\n\r\n+QIOPEN: 0,%d\r\n" % code


@pytest.mark.parametrize("line", [b"AT+QISEND=3,5\r", b"AT+QISEND=3\r", b'AT+QISENDEX=3,"4142"\r'])
def test_sending_on_a_listener_is_572_not_567(bench, line):
    """Mutant: _sendable without its TCP LISTENER check (a listener, not CONNECTED, then
    answers 567 "socket has been closed").  A listener is up and has no peer: sending on it
    is 572 ("operation not allowed", as AT+QISWTMD on a listener in docs/behaviour.md), not
    567, which would tell the host its listener had closed."""
    listener(bench, 3)
    assert bench.run(line) == b"\r\nERROR\r\n"
    assert bench.run(b"AT+QIGETERROR\r").startswith(b"\r\n+QIGETERROR: 572,")


def test_qisend_query_after_the_peer_closed_still_shows_the_unacked_bytes(bench, monkeypatch):
    """Mutant: AT+QISEND=<id>,0 counting the send backlog only while CONNECTED (after the
    peer's FIN, state 4, everything sent would read as acked).  docs/behaviour.md: `=<id>,0`
    answers `+QISEND: <sent>,<acked>,<unacked>`, acked = acknowledged by the peer's TCP; what
    SEND OK accepted before the FIN still leaves first -- until it has, it is unacked, closed
    or not.  (No network here: the kernel is made to hold nothing unacknowledged, so acked is
    what left the modem.)"""
    import emulator.sockets.ssl_socket as ssl_socket
    monkeypatch.setattr(ssl_socket, "tcp_unacked", lambda transport: 0)
    sock = bench.connected(1, "buffer", tcp=True)
    sock.bytes_sent, sock.unsent = 5, 2                 # SEND OK for 5 bytes, 3 left and acked
    assert bench.run(b"AT+QISEND=1,0\r") == b"\r\n+QISEND: 5,3,2\r\n\r\nOK\r\n"
    sock._go("peer_closed")
    assert int(sock.state) == 4
    assert bench.run(b"AT+QISEND=1,0\r") == b"\r\n+QISEND: 5,3,2\r\n\r\nOK\r\n"
