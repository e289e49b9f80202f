"""The demo peer's plain echo: one port number for its TCP and its UDP echo (one route,
220.180.239.212:8009, serves both).  The TCP server takes an ephemeral port and the UDP echo
binds the same number, which another program may hold for UDP already: the demo then picks
another port instead of failing to start (`make run`, and every test module that starts the
emulator with its demo peer, failed with EADDRINUSE when that happened)."""
from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from emulator.tools import demo_peer
from emulator.tools.demo_peer import DemoPeer, _plain_echo_pair


def _free_tcp_port_held_for_udp() -> tuple[int, socket.socket]:
    """A port free for TCP whose UDP number another program holds (the returned socket)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            udp.close()
            continue
        finally:
            probe.close()
        return port, udp
    raise AssertionError("no port free for TCP and taken for UDP")


class _FirstCallOn:
    """A loop whose first create_server binds `port` (what the kernel's pick could be)."""

    def __init__(self, loop, port: int) -> None:
        self._loop, self._port, self.ports = loop, port, []

    def __getattr__(self, name):
        return getattr(self._loop, name)

    async def create_server(self, factory, host, port):
        server = await self._loop.create_server(factory, host, self._port if not self.ports else port)
        self.ports.append(server.sockets[0].getsockname()[1])
        return server


def _peer() -> DemoPeer:
    return DemoPeer(ca_pem=b"", client_cert_pem=b"", client_key_pem=b"", routes={})


def test_a_port_whose_udp_number_is_taken_is_given_up_for_another():
    held_port, held = _free_tcp_port_held_for_udp()

    async def main():
        loop = _FirstCallOn(asyncio.get_running_loop(), held_port)
        server, udp, port = await _plain_echo_pair(loop, _peer(), "127.0.0.1")
        try:
            assert loop.ports[0] == held_port and len(loop.ports) == 2
            assert port == loop.ports[1] != held_port
            assert server.sockets[0].getsockname()[1] == port
            assert udp.get_extra_info("sockname")[1] == port
            # the first TCP server was closed: its port can be bound again
            probe = socket.socket()
            probe.bind(("127.0.0.1", held_port))
            probe.close()
            # both echo: TCP and UDP on the one port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"tcp")
            assert await asyncio.wait_for(reader.readexactly(3), 5) == b"tcp"
            writer.close()
            await writer.wait_closed()
            client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            client.setblocking(False)
            client.sendto(b"udp", ("127.0.0.1", port))
            assert await asyncio.wait_for(loop.sock_recv(client, 16), 5) == b"udp"
            client.close()
        finally:
            udp.close()
            server.close()
            await server.wait_closed()

    try:
        asyncio.run(main())
    finally:
        held.close()


def test_other_bind_errors_and_running_out_of_attempts_still_fail(monkeypatch):
    async def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "not allowed")

    async def main(error):
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "create_datagram_endpoint", refused if error == errno.EACCES
                            else _always(errno.EADDRINUSE))
        with pytest.raises(OSError) as caught:
            await _plain_echo_pair(loop, _peer(), "127.0.0.1", attempts=3)
        return caught.value.errno

    assert asyncio.run(main(errno.EACCES)) == errno.EACCES
    assert asyncio.run(main(errno.EADDRINUSE)) == errno.EADDRINUSE


def _always(code: int):
    async def taken(*args, **kwargs):
        raise OSError(code, "in use")
    return taken


def test_start_demo_peer_uses_the_pair_for_its_plain_echo_route():
    async def main():
        peer = await demo_peer.start_demo_peer()
        try:
            host, port = peer.routes[demo_peer.PLAIN_ECHO_ROUTE]
            assert peer.datagram_endpoints[0].get_extra_info("sockname") == (host, port)
        finally:
            await peer.close()

    asyncio.run(main())
