"""A socket's receive buffer outgrows its limit (tcpip.recv_buffer / ssl.recv_buffer, 64 KiB on
the EC2x) by at most one network read (NETWORK_READ, 64 KiB) before reading pauses, as a
module's TCP window closes at its buffer: asyncio's own read size, 256 KiB, let the buffer hold
five times its limit when the kernel had that much queued."""
from __future__ import annotations

import re
import threading

from emulator.io.network import NETWORK_READ
from emulator.sockets.tcpip import tcpip_service
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, ec2x_with_pdp, wait_for

OK = b"\r\nOK\r\n"


def _socket(emulator, port, fn):
    return emulator.run(lambda: fn(tcpip_service(port.modem).sockets[0]))


def _read(host, size: int) -> bytes:
    got = host.at(f"AT+QIRD=0,{size}")
    m = re.search(rb"\r\n\+QIRD: (\d+)\r\n", got)          # (after a "recv" URC, if one)
    assert m, got
    n = int(m.group(1))
    assert got[m.end() + n:] == b"\r\n" + OK, got[-20:]
    return got[m.end():m.end() + n]


def test_a_resumed_buffer_mode_socket_reads_one_network_read_past_its_limit_at_most(
        open_modem, peer_factory, emulator):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.seen(b"+QIOPEN: 0,0\r\n")
    limit = _socket(emulator, port, lambda s: s.recv_limit)
    flood = bytes(range(256)) * (3 * 1024 * 1024 // 256)         # far more than the kernel holds
    flooder = threading.Thread(target=peer.send, args=(flood,), daemon=True)
    flooder.start()
    wait_for(lambda: _socket(emulator, port, lambda s: s._paused and len(s.inbox) >= limit),
             timeout=20, what="reading paused at the limit")
    most = 0
    got = bytearray()
    # The host reads the buffer down below half its limit, the socket reads on, and so on:
    # each time it resumes with the kernel's queue full, one read comes in whole.
    for _ in range(4):
        before = _socket(emulator, port, lambda s: s.bytes_received)
        while _socket(emulator, port, lambda s: s.bytes_received) == before:
            got += _read(host, 1500)
        wait_for(lambda: _socket(emulator, port, lambda s: s._paused), timeout=10, what="paused again")
        most = max(most, _socket(emulator, port, lambda s: len(s.inbox)))
    assert limit < most <= limit + NETWORK_READ, (limit, most)
    while len(got) < 300_000:                                    # every byte once, in order
        got += _read(host, 1500)
    assert bytes(got) == flood[:len(got)]
