"""Flow control of EC2x SSL sockets, both ways, over the pty against OpenSSL servers
(Python ssl, emulator.testing.peers.TlsServer) on loopback, judged byte for byte (SHA-256):

 - down, direct push (access mode 1): a host that stops reading must not make the
   emulator hold the stream in memory; the data wait in the TCP connection (the socket
   stops reading) and all of it arrives, once and in order, when the host reads again;
   nothing is pushed while the host is inside a "> " prompt, and a peer close that came
   meanwhile is reported after the data;
 - up: a server that stops reading fills the send buffer until AT+QSSLSEND answers
   SEND FAIL; the server then receives exactly the chunks that got SEND OK.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time

import pytest

from emulator.sockets.service import SslService
from emulator.testing.peers import TlsServer

HOST = "220.180.239.212"
OK = b"\r\nOK\r\n"
STREAM_BYTES = int(os.environ.get("FLOW_TEST_BYTES", 8 << 20))
BOUND = 1 << 20               # what the emulator may hold for a host that does not read
SEND_FAIL_LIMIT = 64 << 20    # give up on SEND FAIL after this much data
PUSH_URC = re.compile(rb'\r\n\+QSSLURC: "recv",(\d+),(\d+)\r\n')


@pytest.fixture
def server_cert(pki):
    return pki.server             # its names include HOST


def connect(emulator, open_modem, server: TlsServer, access_mode: int):
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    emulator.router.add_map(HOST, 8010, "127.0.0.1", server.port)
    assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",8010,{access_mode}') == OK
    line = host.seen(re.compile(rb"\r\n\+QSSLOPEN: 0,(-?\d+)\r\n"))
    assert line == b"\r\n+QSSLOPEN: 0,0\r\n"
    return host, port


def test_direct_push_holds_the_server_back_while_the_host_does_not_read(emulator, open_modem, server_cert):
    stream = os.urandom(STREAM_BYTES)

    def streamer(conn) -> None:
        conn.recv(1)                      # the host's go
        conn.sendall(stream)              # the host stalls: sendall blocks meanwhile
        while conn.recv(65536):           # until the host closes
            pass

    with TlsServer(server_cert, legacy=True, handler=streamer) as server:
        host, port = connect(emulator, open_modem, server, access_mode=1)
        svc = emulator.run(lambda: port.modem.feature("ssl", SslService))
        assert host.send_data(0, b"!") == b"\r\nSEND OK\r\n"

        # The host reads nothing for a while: the emulator must not take in the stream
        # (unchecked, loopback would hand it the whole stream in a few milliseconds).
        held = []
        for _ in range(8):
            time.sleep(0.1)
            held.append(emulator.run(lambda: (port.port.backlog, len(svc.sockets[0].inbox))))
        assert all(backlog < BOUND and inbox < BOUND for backlog, inbox in held), held
        assert held[-1][0] > 0, "the stall should leave output waiting for the host"

        # Now the host reads: back-to-back URCs, each followed by exactly <len> bytes and CR LF.
        received = bytearray()
        urcs = 0
        while len(received) < len(stream):
            header = host.read_until(PUSH_URC, timeout=30)
            m = PUSH_URC.fullmatch(header)
            assert m, f"bytes before a push URC: {header[:80]!r}"
            assert int(m.group(1)) == 0
            n = int(m.group(2))
            assert 1 <= n <= 1500
            received += host.read_exactly(n, timeout=30)
            assert host.read_exactly(2, timeout=30) == b"\r\n"     # the pushed data's end
            urcs += 1
        assert hashlib.sha256(received).hexdigest() == hashlib.sha256(stream).hexdigest()
        assert urcs >= len(stream) // 1500
        assert host.quiet_for(0.3) == b""                       # exactly once: nothing more
        assert host.at("AT+QSSLCLOSE=0") == OK
        server.conn.done.wait(10)
    assert server.conn.error is None, server.conn.error


def test_push_waits_for_a_pending_command_and_the_close_comes_after_the_data(
        emulator, open_modem, server_cert):
    payload = os.urandom(20_000)
    go = threading.Event()

    def send_then_close(conn) -> None:
        go.wait(30)
        conn.sendall(payload)
        conn.send_close_notify()          # (the emulator need not answer it)

    with TlsServer(server_cert, legacy=True, handler=send_then_close) as server:
        host, port = connect(emulator, open_modem, server, access_mode=1)
        svc = emulator.run(lambda: port.modem.feature("ssl", SslService))
        # The host is inside a "> " prompt: nothing may be pushed into the middle of it.
        host.write(b"AT+QSSLSEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        go.set()
        deadline = time.monotonic() + 10
        while emulator.run(lambda: svc.sockets[0].state) != 4:         # the peer's close arrived
            assert time.monotonic() < deadline, "the server's close never reached the emulator"
            time.sleep(0.02)
        assert host.quiet_for(0.2) == b""
        host.write(b"\x1b")                                           # ESC: the send is cancelled
        assert host.read_until(b"\r\nERROR\r\n") == b"\r\nERROR\r\n"
        # Then the data, then the close: in the order they came from the server.
        received = bytearray()
        event = re.compile(PUSH_URC.pattern + rb'|\r\n\+QSSLURC: "closed",0\r\n')
        while True:
            header = host.read_until(event, timeout=10)
            assert event.fullmatch(header), f"bytes before a URC: {header[:80]!r}"
            if b'"closed"' in header:
                break
            received += host.read_exactly(int(PUSH_URC.fullmatch(header).group(2)))
            assert host.read_exactly(2) == b"\r\n"                   # the pushed data's end
        assert received == payload
        assert re.search(rb",4,1,0,1,", host.at("AT+QSSLSTATE=0"))         # closing, access mode 1
        assert host.at("AT+QSSLCLOSE=0") == OK


def test_send_fail_when_the_server_stops_reading_and_only_send_ok_data_arrive(
        emulator, open_modem, server_cert):
    release = threading.Event()

    def stalled_reader(conn) -> None:
        release.wait(120)                 # accepts TLS, then reads nothing until told
        while conn.recv(65536, timeout=30):   # until the host's close_notify (conn.received)
            pass

    with TlsServer(server_cert, legacy=True, handler=stalled_reader) as server:
        try:
            host, _ = connect(emulator, open_modem, server, access_mode=0)
            accepted, results, total = [], [], 0
            while not results or results[-1] != b"\r\nSEND FAIL\r\n":
                assert total < SEND_FAIL_LIMIT, f"no SEND FAIL after {total} bytes to a stalled server"
                chunk = os.urandom(1460)
                results.append(host.send_data(0, chunk))
                if results[-1] == b"\r\nSEND OK\r\n":
                    accepted.append(chunk)
                    total += len(chunk)
            # A few more: whatever they answer, only SEND OK data may reach the server.
            for _ in range(3):
                chunk = os.urandom(1460)
                results.append(host.send_data(0, chunk))
                if results[-1] == b"\r\nSEND OK\r\n":
                    accepted.append(chunk)
            assert set(results) <= {b"\r\nSEND OK\r\n", b"\r\nSEND FAIL\r\n"}
            assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
        finally:
            release.set()
        # The server reads everything; the close (close_notify + FIN) ends its read loop.
        assert host.at("AT+QSSLCLOSE=0,30") == OK
        assert server.conn.done.wait(30)
    assert server.conn.error is None, server.conn.error
    expected = b"".join(accepted)
    assert len(server.conn.received) == len(expected)
    assert hashlib.sha256(server.conn.received).hexdigest() == hashlib.sha256(expected).hexdigest()
