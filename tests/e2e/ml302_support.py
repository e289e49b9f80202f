"""The ML302 manual's server (§3: www.iottest.work, which the modem's DNS answers as
106.12.79.254) played by loopback TLS servers, shared by the ML302 test files."""
from __future__ import annotations

from emulator.testing.peers import TlsServer

HOST = "www.iottest.work"
HOST_IP = "106.12.79.254"          # what the manual's §3 shows for HOST


def routed_servers(emulator, default_cert, **defaults):
    """The body of a fixture: yields start(name=HOST, cert=None, **kwargs) -> a TlsServer
    (TlsServer's kwargs over `defaults`) routed as <name>:443, the name resolving to
    HOST_IP; every server started is closed at the end."""
    servers: list[TlsServer] = []

    def start(name: str = HOST, cert=None, **kwargs) -> TlsServer:
        srv = TlsServer(cert or default_cert, **{**defaults, **kwargs})
        servers.append(srv)
        emulator.router.add_map(name, 443, "127.0.0.1", srv.port)
        emulator.router.add_dns(name, HOST_IP)
        return srv
    yield start
    for srv in servers:
        srv.close()
