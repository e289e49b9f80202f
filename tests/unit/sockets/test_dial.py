"""An open's TCP connect starts in the command's own loop turn (emulator/io/network.py
dial_now, SslSocket._dial): to a server on this machine the connect is complete at once,
and the ClientHello leaves before the command's OK is even written.  These tests hold the
server side themselves (a raw listening socket) and look at it without giving the loop a
turn, then at every way such an open can end: refused, aborted before its task ran, a
session that cannot start, network conditions that must delay the first flight."""
from __future__ import annotations

import asyncio
import os
import socket

from emulator.io.network import Dialled, NetFaults, Router
from emulator.modem.timers import Timers
from emulator.sockets.ssl_socket import CONNECTED, INITIAL, SslSocket
from tls_engine import TlsClientSession, TlsSettings


class Owner:
    def __init__(self, session_factory=TlsClientSession) -> None:
        self.opened: list[tuple[str | None, str]] = []
        self.session_factory = session_factory

    def on_opened(self, sock, kind, reason, exc=None) -> None:
        self.opened.append((kind, reason))

    def on_data(self, sock, was_empty) -> None:
        pass

    def on_closed(self, sock, reason) -> None:
        pass


class FakeModem:
    def __init__(self, timers) -> None:
        self.timers = timers


def listener() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    return server


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def settings() -> TlsSettings:
    return TlsSettings(server_name="h.test", ssl_version=3, cipher_suites=(0xC02F,), session_cache=False)


def make(owner: Owner, port: int, faults=None, manual_time: bool = False,
         timers: Timers | None = None) -> tuple[SslSocket, Router]:
    """manual_time: the socket's timers (negotiatetime, ...) fire only on sock._timers.advance().
    timers: the socket's (a modem's sockets and its network conditions share one)."""
    loop = asyncio.get_running_loop()
    sock = SslSocket(owner, 0, pdp_id=1, ctx_id=0, host="h.test", port=443, delivery=None,
                     recv_limit=4096, timers=timers or Timers(loop, manual=manual_time))
    sock.faults = faults
    return sock, Router({"h.test:443": f"127.0.0.1:{port}"})


def test_the_client_hello_leaves_in_the_commands_turn():
    async def main():
        server = listener()
        sock, router = make(Owner(), server.getsockname()[1])
        sock.open(router, settings(), 10)
        # No await since open(): the connection is there and the first flight in it.
        conn, _ = server.accept()
        conn.settimeout(5)
        head = conn.recv(5)
        assert head[:2] == b"\x16\x03"                    # a TLS handshake record
        assert isinstance(sock._transport, Dialled)       # asyncio's transport comes a turn later
        for _ in range(20):
            await asyncio.sleep(0)
        assert not isinstance(sock._transport, Dialled)
        sock.abort()
        conn.close()
        server.close()
    asyncio.run(main())


def test_an_open_closed_before_its_task_ran_closes_the_connection():
    async def main():
        server = listener()
        owner = Owner()
        sock, router = make(owner, server.getsockname()[1])
        sock.open(router, settings(), 10)
        dialled = sock._transport
        assert isinstance(dialled, Dialled)
        sock.abort()                                      # the host's close, same command line
        assert dialled.sock.fileno() == -1                # not left to the garbage collector
        conn, _ = server.accept()
        conn.settimeout(5)
        got = b""
        while chunk := conn.recv(4096):
            got += chunk
        assert got[:2] == b"\x16\x03"                     # the ClientHello, then the end
        for _ in range(20):
            await asyncio.sleep(0)
        assert sock.state is INITIAL and owner.opened == []
        conn.close()
        server.close()
    asyncio.run(main())


def test_a_refused_connect_is_answered_after_the_command():
    async def main():
        owner = Owner()
        sock, router = make(owner, closed_port())
        sock.open(router, settings(), 10)
        assert owner.opened == []                         # the command's OK goes first
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(owner.opened) == 1
        kind, reason = owner.opened[0]
        assert kind == "connect" and "refused" in reason.lower()
        assert sock.state is INITIAL
    asyncio.run(main())


def test_a_session_that_cannot_start_at_the_dial_fails_the_open_as_setup():
    def broken(settings, cache, key):
        raise ValueError("no such curve")

    async def main():
        server = listener()
        owner = Owner(session_factory=broken)
        sock, router = make(owner, server.getsockname()[1])
        sock.open(router, settings(), 10)
        assert owner.opened == []
        for _ in range(20):
            await asyncio.sleep(0)
        assert owner.opened == [("bad_config", "unexpected ValueError while setting up TLS: no such curve")]
        conn, _ = server.accept()
        conn.settimeout(5)
        assert conn.recv(4096) == b""                     # dropped without a byte
        conn.close()
        server.close()
    asyncio.run(main())


def test_network_conditions_hold_the_first_flight_back():
    async def main():
        server = listener()
        timers = Timers(asyncio.get_running_loop(), manual=True)
        faults = NetFaults(FakeModem(timers))
        faults.conditions.latency_ms = 500
        sock, router = make(Owner(), server.getsockname()[1], faults, timers=timers)
        sock.open(router, settings(), 10)
        for _ in range(20):
            await asyncio.sleep(0)
        conn, _ = server.accept()
        conn.setblocking(False)
        try:
            early = conn.recv(5)
        except BlockingIOError:
            early = None
        assert early is None                              # still on the shaped link
        # The connect's round trip (2 x 500 ms) first, then the ClientHello's 500 ms.
        timers.advance(1.0)
        for _ in range(20):
            await asyncio.sleep(0)                        # (the open's task goes on at 1.0 s)
        timers.advance(0.4)
        for _ in range(20):
            await asyncio.sleep(0)
        try:
            early = conn.recv(5)
        except BlockingIOError:
            early = None
        assert early is None                              # 1.4 s: not yet
        timers.advance(0.2)
        conn.settimeout(5)
        assert conn.recv(5)[:2] == b"\x16\x03"
        assert sock.state is not CONNECTED
        sock.abort()
        conn.close()
        server.close()
    asyncio.run(main())


def test_a_refusal_over_a_link_with_latency_comes_back_after_the_round_trip():
    """The peer's RST to the SYN travels the link too: 2 x 300 ms on the modem's time."""
    async def main():
        owner = Owner()
        timers = Timers(asyncio.get_running_loop(), manual=True)
        faults = NetFaults(FakeModem(timers))
        faults.conditions.latency_ms = 300
        sock, router = make(owner, closed_port(), faults, timers=timers)
        sock.open(router, settings(), 10)
        for _ in range(20):
            await asyncio.sleep(0)
        timers.advance(0.55)
        for _ in range(20):
            await asyncio.sleep(0)
        assert owner.opened == []
        timers.advance(0.1)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(owner.opened) == 1 and owner.opened[0][0] == "connect"
    asyncio.run(main())


def test_a_close_during_the_connects_round_trip_ends_the_connection():
    """Closed by the host while the SYN-ACK is on its way back (latency): the connection made
    on loopback goes with it, no session ever starts, no answer comes."""
    async def main():
        owner = Owner()
        server = listener()
        timers = Timers(asyncio.get_running_loop(), manual=True)
        faults = NetFaults(FakeModem(timers))
        faults.conditions.latency_ms = 500
        sock, router = make(owner, server.getsockname()[1], faults, timers=timers)
        sock.open(router, settings(), 10)
        for _ in range(20):
            await asyncio.sleep(0)
        timers.advance(0.5)                               # half the round trip
        for _ in range(20):
            await asyncio.sleep(0)
        assert sock.session is None
        sock.abort()
        for _ in range(20):
            await asyncio.sleep(0)
        conn, _ = server.accept()
        conn.settimeout(5)
        assert conn.recv(4096) == b""                     # the end, no ClientHello
        timers.advance(2)
        for _ in range(20):
            await asyncio.sleep(0)
        assert owner.opened == [] and sock.session is None
        conn.close()
        server.close()
    asyncio.run(main())


def test_an_open_closed_while_its_first_flight_waits_for_the_link_closes_the_connection():
    """With network conditions the session waits for the task; the dialled connect is the
    socket's all the same: closed by the host's close, not left to the garbage collector."""
    async def main():
        server = listener()
        timers = Timers(asyncio.get_running_loop(), manual=True)
        faults = NetFaults(FakeModem(timers))
        faults.conditions.latency_ms = 500
        sock, router = make(Owner(), server.getsockname()[1], faults)
        sock.open(router, settings(), 10)
        sock.abort()
        conn, _ = server.accept()
        conn.settimeout(5)
        assert conn.recv(4096) == b""                     # the end, not a live connection
        conn.close()
        server.close()
    asyncio.run(main())


def test_no_descriptor_left_for_the_connect_is_answered_566_after_the_command():
    """EMFILE at the dial: the open fails as a connect failure after the command's OK
    (it escaped the handler as a traceback and left the id OPENING)."""
    import resource

    async def main():
        owner = Owner()
        server = listener()
        sock, router = make(owner, server.getsockname()[1])
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8, hard))
        filler = []
        try:
            while True:                                   # every descriptor below the limit
                filler.append(os.dup(0))
        except OSError:
            pass
        try:
            sock.open(router, settings(), 10)
        finally:
            for fd in filler:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert owner.opened == []
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(owner.opened) == 1
        kind, reason = owner.opened[0]
        assert kind == "connect" and "Too many open files" in reason, reason
        assert sock.state is INITIAL
        server.close()
    asyncio.run(main())
