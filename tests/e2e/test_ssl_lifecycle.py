"""Socket lifecycle edges over the pty: closing a socket that never connected,
and a reboot (AT+CFUN=1,1) with sockets open or opening."""
from __future__ import annotations

import re
import socket

from emulator.testing.peers import TlsServer, default_pki


def _silent_listener(emulator, host: str) -> socket.socket:
    """Accepts TCP (the kernel does) and never answers the handshake."""
    listener = socket.create_server(("127.0.0.1", 0))
    emulator.router.add_map(host, 443, "127.0.0.1", listener.getsockname()[1])
    return listener


def test_close_of_a_socket_still_opening_answers_at_once(ec2x, emulator):
    listener = _silent_listener(emulator, "silent.example")
    try:
        ec2x.at("AT+QIACT=1")
        assert ec2x.at('AT+QSSLOPEN=1,0,2,"silent.example",443') == b"\r\nOK\r\n"
        assert re.search(rb",1,1,2,0,", ec2x.at("AT+QSSLSTATE=2"))        # opening
        # Answered well before the default 10 s close timeout (which would fail at()).
        assert ec2x.at("AT+QSSLCLOSE=2", timeout=5) == b"\r\nOK\r\n"
        assert ec2x.at("AT+QSSLSTATE") == b"\r\nOK\r\n"
        assert b"+QSSLOPEN: 2" not in ec2x.quiet_for(0.3)
    finally:
        listener.close()


def test_reboot_drops_sockets_without_urcs(ec2x, emulator):
    listener = _silent_listener(emulator, "silent.example")
    with TlsServer(default_pki().server) as server:
        emulator.router.add_map("echo.example", 443, "127.0.0.1", server.address[1])
        try:
            ec2x.at("AT+QIACT=1")
            ec2x.at('AT+QSSLOPEN=1,0,0,"echo.example",443')
            ec2x.seen(b"+QSSLOPEN: 0,0")
            ec2x.at('AT+QSSLOPEN=1,0,1,"silent.example",443')           # stays opening
            assert ec2x.at("AT+CFUN=1,1") == b"\r\nOK\r\n"
            after = ec2x.read_until(b"+QIND: PB DONE\r\n", 5) + ec2x.quiet_for(0.3)
            assert b"+QSSLURC" not in after and b"+QSSLOPEN" not in after, after
            # the reboot restored the factory settings: echo is on again
            assert ec2x.at("AT+QSSLSTATE") == b"AT+QSSLSTATE\r\r\nOK\r\n"
            assert ec2x.at("AT+QIACT?") == b"AT+QIACT?\r\r\nOK\r\n"
        finally:
            listener.close()
