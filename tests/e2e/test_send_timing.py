"""When the bytes of AT+QSSLSEND / AT+QISEND leave (SslSocket.transmit_soon): SEND OK says
they are in the send buffer; they are encrypted and written when the port next waits for
the host (the next data prompt is out) or FLUSH_AFTER later, so the host's next command is
not read behind them.  Here FLUSH_AFTER is made long, so only the other triggers act, and
the order of everything a socket sends must hold."""
from __future__ import annotations

import re

import pytest

import emulator.sockets.ssl_socket as ssl_socket
from emulator.testing.peers.plain import wait_until
from tests.e2e.socket_support import qiopen, qisend

OK = b"\r\nOK\r\n"


@pytest.fixture
def held(monkeypatch):
    monkeypatch.setattr(ssl_socket, "FLUSH_AFTER", 30.0)


@pytest.fixture
def sink(pki, emulator):
    """A TLS server that only records (an echo's answers would raise "recv" URCs that race
    the answers these tests read)."""
    from emulator.testing.peers import TlsServer
    with TlsServer(pki.server, mode="sink") as server:
        emulator.router.add_map("sink.example", 443, "127.0.0.1", server.address[1])
        yield server


def _open(host) -> None:
    assert host.at('AT+QSSLOPEN=1,1,1,"sink.example",443,0') == OK
    host.seen(b"+QSSLOPEN: 1,0\r\n", timeout=5)


def test_accepted_bytes_leave_when_the_next_prompt_is_out(emulator, ec2x_on, sink, held):
    host, _ = ec2x_on
    _open(host)
    conn = sink.wait_handshake()
    assert host.send_data(1, b"first ") == b"\r\nSEND OK\r\n"
    assert host.quiet_for(0.2) == b"" and conn.received == b""     # held: no prompt yet
    host.write("AT+QSSLSEND=1,7\r")
    assert host.read_until(re.compile(rb"> ")) == b"\r\n> "
    sink.wait_received(6, timeout=3)                                 # out with the prompt
    host.write(b"second ")
    assert host.read_until(re.compile(rb"\r\nSEND OK\r\n")) == b"\r\nSEND OK\r\n"
    assert host.send_data(1, b"third", fixed=False) == b"\r\nSEND OK\r\n"
    assert host.at("AT+QSSLCLOSE=1") == OK                           # close_notify after them
    wait_until(lambda: conn.closed, timeout=3)
    assert conn.received == b"first second third"


def test_accepted_bytes_go_before_what_transparent_mode_sends_at_once(emulator, ec2x_on, tcp_sink, held):
    """Online data mode writes the host's bytes at once: those an earlier SEND OK holds go
    first (AT+QISWTMD to transparent mode, on a TCP socket)."""
    host, _ = ec2x_on
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): this
    # test is about other things than the module's packet wait, and runs on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"held ") == b"\r\nSEND OK\r\n"
    host.write("AT+QISWTMD=0,2\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"now")
    assert conn.wait_received(8) == b"held now"
