"""Plain TCP/UDP sockets of the EC2x (TCP(IP) AT Commands Manual): AT+QIOPEN, AT+QISEND,
AT+QISENDEX, AT+QIRD, AT+QISTATE, AT+QICLOSE, AT+QISDE, AT+QISWTMD over the pty against
loopback peers (emulator.testing.peers.plain), in each access mode."""
from __future__ import annotations

import hashlib
import logging
import os
import re
import socket

import pytest
import serial

from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, acks_settled, escape,
                                      free_port, qiopen, qird, qisend, qisend_counts)


@pytest.fixture
def modem(emulator, ec2x_on):
    """(host, advance(s)): an EC2x on manual time, PDP context 1 up."""
    host, port = ec2x_on
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): these
    # tests are about other things than the module's packet wait, and run on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"

    advance = emulator.advancer(port, host)
    return host, advance


def read_buffer(host, connect_id: int, n: int) -> bytes:
    """Buffer mode: AT+QIRD until n bytes came, waiting for "recv" URCs when empty."""
    got = bytearray()
    while len(got) < n:
        chunk = qird(host, connect_id)[1]
        if not chunk:
            host.seen(f'+QIURC: "recv",{connect_id}\r\n'.encode())
            continue
        got += chunk
    return bytes(got)


PUSH = re.compile(rb'\r\n\+QIURC: "recv",(\d+),(\d+)(?:,"([\d.]+)",(\d+))?\r\n')
PROMPT = re.compile(rb"\r\n> ")


class PushStream:
    """The port's output in direct push mode, unit by unit: push URCs (their data are
    collected in .data) and whatever the host waits for, never cutting into pushed data."""

    def __init__(self, host, connect_id: int) -> None:
        self.host = host
        self.connect_id = connect_id
        self.data = bytearray()

    def until(self, want: re.Pattern, timeout: float = 20) -> bytes:
        import time
        deadline = time.monotonic() + timeout
        buf = self.host.pending
        while True:
            m = PUSH.match(buf)
            if m and len(buf) >= m.end() + int(m.group(2)) + 2:   # the data, then their CR LF
                n = int(m.group(2))
                assert int(m.group(1)) == self.connect_id and 0 < n <= 1500, m.group(0)
                assert buf[m.end() + n:m.end() + n + 2] == b"\r\n", bytes(buf[:m.end() + n + 2][-200:])
                self.data += buf[m.end():m.end() + n]
                del buf[:m.end() + n + 2]
                continue
            if not m:
                w = want.match(buf)
                if w:
                    found = bytes(w.group(0))
                    del buf[:w.end()]
                    return found
            if time.monotonic() >= deadline:
                raise PushTimeout(f"waiting for {want.pattern!r}: {bytes(buf[:200])!r}")
            self.host._fill()

    def send(self, data: bytes) -> bytes:
        self.host.write(f"AT+QISEND={self.connect_id},{len(data)}\r")
        self.until(PROMPT)
        self.host.write(data)
        return self.until(RESULT)

    def read(self, n: int) -> bytes:
        """Until n bytes in all were pushed; returns them all."""
        never = re.compile(rb"(?!)")
        import time
        deadline = time.monotonic() + 20
        while len(self.data) < n:
            assert time.monotonic() < deadline, f"pushed {len(self.data)} of {n}"
            try:
                self.until(never, timeout=0.05)
            except PushTimeout:                 # (a malformed push URC still fails at once)
                pass
        return bytes(self.data)


class PushTimeout(AssertionError):
    """PushStream.until found no match in time (a malformed URC is a plain AssertionError)."""


def read_push(host, connect_id: int, n: int) -> bytes:
    return PushStream(host, connect_id).read(n)


def blob(size: int) -> bytes:
    data = bytearray(os.urandom(size))
    data[100:120] = b"+++\x1a\x1b\r\nAT\r\n\x00OK\r\n\xff+++"     # bytes a parser might stumble on
    return bytes(data)


# -- TCP echo in each access mode -------------------------------------------------------
def test_tcp_buffer_mode_echo_sha256(modem, tcp_echo):
    host, _ = modem
    qiopen(host, 0)
    data = blob(300 * 1024)
    got = bytearray()
    for start in range(0, len(data), 32 * 1024):
        block = data[start:start + 32 * 1024]
        for i in range(0, len(block), 1460):
            assert qisend(host, 0, block[i:i + 1460]) == b"\r\nSEND OK\r\n"
        got += read_buffer(host, 0, len(block))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    conn = tcp_echo.wait_connection()
    assert hashlib.sha256(conn.wait_received(len(data))).digest() == hashlib.sha256(data).digest()
    assert host.at("AT+QIRD=0,0") == f"\r\n+QIRD: {len(data)},{len(data)},0\r\n\r\nOK\r\n".encode()
    assert host.at("AT+QISEND=0,0") == f"\r\n+QISEND: {len(data)},{len(data)},0\r\n\r\nOK\r\n".encode()
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_tcp_push_mode_echo_sha256(modem, tcp_echo):
    host, _ = modem
    qiopen(host, 1, mode=1)
    data = blob(300 * 1024)
    stream = PushStream(host, 1)
    for i in range(0, len(data), 1460):
        assert stream.send(data[i:i + 1460]) == b"\r\nSEND OK\r\n"
    got = stream.read(len(data))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert host.at("AT+QIRD=1") == b"\r\nERROR\r\n"             # push mode: nothing to read
    assert host.at("AT+QIRD=1,0") == f"\r\n+QIRD: {len(data)},{len(data)},0\r\n\r\nOK\r\n".encode()
    assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"


def online_echo(host, data: bytes, timeout: float = 60) -> bytes:
    import time
    got = bytearray()
    view, sent = memoryview(data), 0
    host.ser.write_timeout = 0
    deadline = time.monotonic() + timeout
    while len(got) < len(data):
        assert time.monotonic() < deadline, f"echoed {len(got)} of {len(data)}, sent {sent}"
        if sent < len(data):
            try:
                sent += host.ser.write(view[sent:sent + 16384]) or 0
            except serial.SerialTimeoutException:
                pass                             # the pty is full: read first
        got += host.ser.read(min(host.ser.in_waiting or 1, 4093))
    host.written += len(data)
    return bytes(got)


def test_tcp_transparent_echo_sha256_escape_and_ato(modem, tcp_echo):
    host, advance = modem
    host.write(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    data = blob(300 * 1024)
    assert hashlib.sha256(online_echo(host, data)).digest() == hashlib.sha256(data).digest()
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert re.fullmatch(rb'\r\n\+QISTATE: 2,"TCP","[\d.]+",7000,[1-9]\d*,2,1,2,2,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,2"))
    host.write(b"ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert online_echo(host, b"after ATO") == b"after ATO"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=2,0") == b"\r\nOK\r\n"            # transparent -> buffer
    assert qisend(host, 2, b"buffered") == b"\r\nSEND OK\r\n"
    assert read_buffer(host, 2, 8) == b"buffered"
    host.write(b"AT+QISWTMD=2,2\r")                              # and back
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert online_echo(host, b"again") == b"again"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_tcp_transparent_peer_close_is_no_carrier(modem, emulator):
    host, _ = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        conn.send(b"last words")
        conn.close()
        assert host.read_until(b"\r\nNO CARRIER\r\n") == b"last words\r\nNO CARRIER\r\n"
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"


def test_transparent_open_failure_is_error(modem):
    host, _ = modem
    host.write('AT+QIOPEN=1,0,"TCP","nowhere.example",80,0,2\r')    # not routed, offline
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,DNS parse failed\r\n\r\nOK\r\n"


def test_the_log_names_a_plain_sockets_connection_without_an_empty_cipher(modem, tcp_echo, udp_echo, caplog):
    """The INFO line a connected socket logs: a plain one has a type and no cipher -- "(TCP)",
    not "(TCP, )" with an empty field where an SSL socket names its cipher."""
    caplog.set_level(logging.INFO, logger="emulator")
    host, _ = modem
    qiopen(host, 0)
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    lines = [r.getMessage() for r in caplog.records if " connected to " in r.getMessage()]
    assert lines == [f"TCP/IP socket 0 connected to {TCP_HOST}:{TCP_PORT} (TCP)",
                     f"TCP/IP socket 1 connected to {UDP_HOST}:{UDP_PORT} (UDP)"]
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"


# -- UDP echo in each access mode -------------------------------------------------------
def test_udp_buffer_mode_keeps_datagrams_sha256(modem, udp_echo):
    host, _ = modem
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    data = blob(200 * 1024)
    got = bytearray()
    sizes = [1460, 1, 700, 1460, 333]
    pos, k = 0, 0
    while pos < len(data):
        batch = []
        for _ in range(8):
            if pos >= len(data):
                break
            size = sizes[k % len(sizes)]
            k += 1
            batch.append(data[pos:pos + size])
            pos += size
        for dgram in batch:
            assert qisend(host, 0, dgram) == b"\r\nSEND OK\r\n"
        for dgram in batch:                        # one AT+QIRD = one datagram
            chunk = qird(host, 0)[1]
            while not chunk:
                host.seen(b'+QIURC: "recv",0\r\n')
                chunk = qird(host, 0)[1]
            assert chunk == dgram
            got += chunk
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert [len(d) for _, d in udp_echo.log[:5]] == sizes         # one AT+QISEND = one datagram
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_udp_push_mode_echo_sha256(modem, udp_echo):
    host, _ = modem
    qiopen(host, 5, "UDP", UDP_HOST, UDP_PORT, mode=1)
    data = blob(200 * 1024)
    stream = PushStream(host, 5)
    for i in range(0, len(data), 1460):
        assert stream.send(data[i:i + 1460]) == b"\r\nSEND OK\r\n"
        stream.read(min(len(data), i + 1460))          # each datagram comes back whole
    assert hashlib.sha256(bytes(stream.data)).digest() == hashlib.sha256(data).digest()
    assert host.at("AT+QICLOSE=5") == b"\r\nOK\r\n"


def test_udp_transparent_echo(modem, udp_echo):
    host, advance = modem
    host.write(f'AT+QIOPEN=1,6,"UDP","{UDP_HOST}",{UDP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    data = blob(64 * 1024)
    got = bytearray()
    for i in range(0, len(data), 1024):            # small writes: each is a datagram or a few
        got += online_echo(host, data[i:i + 1024])
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=6") == b"\r\nOK\r\n"


# -- AT+QISEND forms, AT+QISENDEX, AT+QISDE ------------------------------------------------
def test_qisend_variable_fixed_query_and_qisendex(modem, tcp_echo):
    host, _ = modem
    qiopen(host, 0)
    assert qisend(host, 0, b"variable length\r\n", fixed=False) == b"\r\nSEND OK\r\n"
    assert qisend(host, 0, b"fixed", byte_at_a_time=True) == b"\r\nSEND OK\r\n"
    # (the echo's "recv" URC may come while this line is sent: before its answer)
    assert host.at('AT+QISENDEX=0,"3132333435"').endswith(b"\r\nSEND OK\r\n")
    conn = tcp_echo.wait_connection()
    assert conn.wait_received(27) == b"variable length\r\nfixed12345"
    assert read_buffer(host, 0, 27) == b"variable length\r\nfixed12345"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 27,27,0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 27,27,0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    host.write("AT+QISEND=0\r")                                 # ESC cancels: ERROR, 571
    host.read_until(b"> ")
    host.write(b"never\x1b")
    assert host.read_until(RESULT) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=?") == b"\r\n+QISEND: (0-11),(0-1460)\r\n\r\nOK\r\n"
    assert host.at("AT+QISENDEX=?") == b"\r\n+QISENDEX: (0-11),<hex_string>\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=?") == b"\r\n+QIRD: (0-11),(0-1500)\r\n\r\nOK\r\n"
    assert host.at(f'AT+QISENDEX=0,"{"41" * 512}"') == b"\r\nSEND OK\r\n"     # 512 bytes: the most


def test_qisend_query_counts_only_what_the_peer_acknowledged(modem, emulator):
    """AT+QISEND=<id>,0: <ackedbytes> are the bytes the peer's TCP acknowledged (TCP(IP)
    manual).  A server that stops reading closes its window: what it has in its receive
    queue is acked, the rest -- in the modem's stack -- unacked, however long it waits (the
    kernel taking the bytes is no ACK); once the server reads, all of it turns acked."""
    import time

    host, _ = modem
    listener = socket.socket()
    listener.settimeout(10)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)     # a small window
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", listener.getsockname()[1])
    try:
        qiopen(host, 0)
        conn, _ = listener.accept()
        data = os.urandom(4 * 1460)
        for i in range(0, len(data), 1460):
            assert qisend(host, 0, data[i:i + 1460]) == b"\r\nSEND OK\r\n"
        held, sent, acked, unacked = acks_settled(host, conn)
        assert sent == len(data) and acked + unacked == sent
        assert acked == held < sent, (held, acked, unacked)
        time.sleep(0.5)                           # waiting acknowledges nothing
        held, sent, acked, unacked = acks_settled(host, conn)
        assert acked == held < sent and unacked == sent - held > 0, (held, acked, unacked)
        got = bytearray()
        while len(got) < len(data):
            got += conn.recv(65536)
        assert bytes(got) == data
        deadline = time.monotonic() + 10
        while qisend_counts(host) != (len(data), len(data), 0):
            assert time.monotonic() < deadline, qisend_counts(host)
            time.sleep(0.02)
        conn.close()
    finally:
        listener.close()
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_qisde_controls_the_echo_of_send_data(open_modem, tcp_echo):
    host, _ = open_modem("ec2x", echo=True)              # ATE1
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"\r\nOK\r\n")
    assert host.at("AT+QISDE?") == b"AT+QISDE?\r\r\n+QISDE: 1\r\n\r\nOK\r\n"
    assert host.at("AT+QISDE=?") == b"AT+QISDE=?\r\r\n+QISDE: (0,1)\r\n\r\nOK\r\n"
    qiopen(host, 0, echo=True)
    host.write("AT+QISEND=0,4\r")
    host.read_until(b"> ")
    host.write(b"echo")
    assert host.read_until(RESULT) == b"echo\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert host.at("AT+QISDE=0") == b"AT+QISDE=0\r\r\nOK\r\n"
    assert host.at("AT+QISDE?") == b"AT+QISDE?\r\r\n+QISDE: 0\r\n\r\nOK\r\n"
    host.write("AT+QISEND=0,5\r")
    host.read_until(b"> ")
    host.write(b"quiet")
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    assert host.at("AT+QISDE=2") == b"AT+QISDE=2\r\r\nERROR\r\n"


# -- AT+QISTATE ----------------------------------------------------------------------------
def test_qistate_all_forms(modem, emulator, tcp_echo, udp_echo):
    host, _ = modem
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    emulator.router.add_map("127.0.0.1", 7000, "127.0.0.1", tcp_echo.port)      # an IP literal, routed
    qiopen(host, 0, addr="127.0.0.1", port=7000)
    qiopen(host, 3, "UDP", UDP_HOST, UDP_PORT, local_port=0, mode=1)
    everything = host.at("AT+QISTATE?")
    assert re.fullmatch(
        rb'\r\n\+QISTATE: 0,"TCP","127\.0\.0\.1",7000,[1-9]\d*,2,1,0,0,"usbmodem"\r\n'
        rb'\+QISTATE: 3,"UDP","198\.1[89]\.\d+\.\d+",7001,[1-9]\d*,2,1,3,1,"usbmodem"\r\n\r\nOK\r\n', everything), everything
    assert host.at("AT+QISTATE=0,1") == everything
    assert host.at("AT+QISTATE=0,2") == b"\r\nOK\r\n"             # nothing on context 2
    one = host.at("AT+QISTATE=1,3")
    assert one.startswith(b'\r\n+QISTATE: 3,"UDP"') and one.count(b"+QISTATE") == 1
    assert host.at("AT+QISTATE=1,7") == b"\r\nOK\r\n"
    assert host.at("AT+QISTATE=2,0") == b"\r\nERROR\r\n"
    assert host.at("AT+QISTATE=1,12") == b"\r\nERROR\r\n"
    assert host.at("AT+QISTATE") == everything                     # the execution form too


# -- listeners ---------------------------------------------------------------------------
def test_tcp_listener_incoming_buffer_mode(modem, emulator):
    host, _ = modem
    real = free_port()
    emulator.run(emulator.router.add_listen, 2020, "127.0.0.1", real)   # the module's 2020
    qiopen(host, 11, "TCP LISTENER", "127.0.0.1", 0, local_port=2020)
    assert host.at("AT+QISTATE=1,11") == \
        b'\r\n+QISTATE: 11,"TCP LISTENER","127.0.0.1",0,2020,3,1,11,0,"usbmodem"\r\n\r\nOK\r\n'
    client = socket.create_connection(("127.0.0.1", real))
    urc = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,\d+,"[\d.]+",\d+\r\n'))
    assert urc == f'+QIURC: "incoming",0,11,"127.0.0.1",{client.getsockname()[1]}\r\n'.encode()
    client.sendall(b"hello module")
    host.seen(b'+QIURC: "recv",0\r\n')
    assert qird(host, 0)[1] == b"hello module"
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP INCOMING","127\.0\.0\.1",\d+,2020,2,1,11,0,"usbmodem"\r\n\r\nOK\r\n',
                        host.at("AT+QISTATE=1,0"))
    assert qisend(host, 0, b"hello client") == b"\r\nSEND OK\r\n"
    assert client.recv(100) == b"hello client"
    client.close()
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=11") == b"\r\nOK\r\n"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", real), timeout=2)


def test_tcp_listener_push_mode_without_mapping_binds_the_port_itself(modem):
    host, _ = modem
    port = free_port()
    qiopen(host, 4, "TCP LISTENER", "127.0.0.1", 0, local_port=port, mode=1)
    client = socket.create_connection(("127.0.0.1", port))
    host.seen(re.compile(rb'\+QIURC: "incoming",0,4,"127\.0\.0\.1",\d+\r\n'))
    data = blob(100 * 1024)
    client.sendall(data)
    assert hashlib.sha256(read_push(host, 0, len(data))).digest() == hashlib.sha256(data).digest()
    client.close()
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=4") == b"\r\nOK\r\n"


def test_incoming_full_when_the_pool_is_used_up(modem, emulator, tcp_echo, pki):
    from emulator.testing.peers import TlsServer
    host, _ = modem
    port = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=port)
    with TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", tls.port)
        assert host.at('AT+QSSLOPEN=1,1,1,"tls.example",443,0') == b"\r\nOK\r\n"   # an SSL id
        host.seen(b"+QSSLOPEN: 1,0\r\n")
        for i in range(2, 12):
            qiopen(host, i)
        client = socket.create_connection(("127.0.0.1", port))
        host.seen(b'+QIURC: "incoming full"\r\n')
        assert client.recv(10) == b""                              # dropped
        assert host.at("AT+QICLOSE=5") == b"\r\nOK\r\n"
        client2 = socket.create_connection(("127.0.0.1", port))
        host.seen(re.compile(rb'\+QIURC: "incoming",5,0,"127\.0\.0\.1",\d+\r\n'))   # the lowest free id
        client2.close()
        client.close()


def test_udp_service_receives_and_sends_to_an_address(modem):
    host, _ = modem
    port = free_port(socket.SOCK_DGRAM)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=port)
    assert host.at("AT+QISTATE=1,2") == \
        f'\r\n+QISTATE: 2,"UDP SERVICE","127.0.0.1",0,{port},2,1,2,0,"usbmodem"\r\n\r\nOK\r\n'.encode()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(10)
    me = peer.getsockname()[1]
    peer.sendto(b"first", ("127.0.0.1", port))
    peer.sendto(b"second!", ("127.0.0.1", port))
    host.seen(b'+QIURC: "recv",2\r\n')
    for dgram in (b"first", b"second!"):
        host.write("AT+QIRD=2\r")
        expect = f'\r\n+QIRD: {len(dgram)},"127.0.0.1",{me}\r\n'.encode() + dgram + b"\r\n\r\nOK\r\n"
        got = host.read_until(b"\r\nOK\r\n")
        if not got.startswith(b"\r\n+QIRD"):          # the second "recv" URC cannot come; any other
            got = got[got.index(b"\r\n+QIRD"):]       # leading bytes are framing
        assert got == expect
    peer.sendto(b"0123456789", ("127.0.0.1", port))         # read in parts: the rest stays
    host.seen(b'+QIURC: "recv",2\r\n')
    assert host.at("AT+QIRD=2,4") == f'\r\n+QIRD: 4,"127.0.0.1",{me}\r\n0123\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=2") == f'\r\n+QIRD: 6,"127.0.0.1",{me}\r\n456789\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=2") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=2,0") == b"\r\n+QIRD: 22,22,0\r\n\r\nOK\r\n"
    assert qisend(host, 2, b"reply", extra=f',"127.0.0.1",{me}') == b"\r\nSEND OK\r\n"
    assert peer.recvfrom(100) == (b"reply", ("127.0.0.1", port))
    assert host.at("AT+QISEND=2,5") == b"\r\nERROR\r\n"               # no destination
    assert host.at('AT+QISEND=2,5,"",53') == b"\r\nERROR\r\n"           # an empty one: no prompt
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at('AT+QISENDEX=2,"4142"') == b"\r\nERROR\r\n"
    assert qisend(host, 2, b"lost", extra=',"8.8.8.8",53') == b"\r\nSEND FAIL\r\n"   # offline, unrouted
    peer.close()
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"


def test_udp_service_push_mode_shows_the_sender(modem):
    host, _ = modem
    port = free_port(socket.SOCK_DGRAM)
    qiopen(host, 9, "UDP SERVICE", "127.0.0.1", 0, local_port=port, mode=1)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.sendto(b"\x00binary\xff", ("127.0.0.1", port))
    urc = host.seen(re.compile(rb'\+QIURC: "recv",9,8,"127\.0\.0\.1",\d+\r\n'))
    assert urc.endswith(f',{peer.getsockname()[1]}\r\n'.encode())
    assert host.read_exactly(10) == b"\x00binary\xff\r\n"
    peer.close()
    assert host.at("AT+QICLOSE=9") == b"\r\nOK\r\n"


# -- shared ids, closes, PDP --------------------------------------------------------------
def test_ids_are_one_pool_with_ssl(modem, emulator, tcp_echo, pki):
    from emulator.testing.peers import TlsServer
    host, _ = modem
    qiopen(host, 0)
    with TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", tls.port)
        assert host.at('AT+QSSLOPEN=1,1,0,"tls.example",443,0') == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
        assert host.at('AT+QSSLOPEN=1,1,1,"tls.example",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 1,0\r\n")
        qiopen(host, 1, code=563)
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
        qiopen(host, 0, code=563)
        # AT+QICLOSE does not close an SSL client's id (AT+QSSLCLOSE does): 572, still open
        assert host.at("AT+QICLOSE=1") == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 572,")
        assert host.send_data(1, b"hi") == b"\r\nSEND OK\r\n"          # still open
        host.seen(b'+QSSLURC: "recv",1\r\n')                          # (the echo's URC: not in the next answer)
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=0,1") == b"\r\nOK\r\n"              # a TCP socket switched too
    assert qisend(host, 0, b"pushed") == b"\r\nSEND OK\r\n"
    assert read_push(host, 0, 6) == b"pushed"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_qiclose_of_an_id_with_nothing_open_is_ok(modem):
    """Host code closes ids it never opened (at start-up, after a failed +QIOPEN: <id>,566)
    and waits for OK (docs/behaviour.md, AT+QICLOSE): OK, no error recorded, and the id then
    opens as usual."""
    host, _ = modem
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=11,0") == b"\r\nOK\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_peer_close_is_the_closed_urc(modem, emulator):
    host, _ = modem
    with TcpServer("close") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        host.seen(b'+QIURC: "closed",0\r\n')
        assert re.search(rb',4,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,0"))      # closing
        assert host.at("AT+QISEND=0,1") == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 567,socket has been closed\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
        assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_pdp_deactivation_closes_sockets_and_listeners(modem, emulator, tcp_echo, udp_echo):
    host, _ = modem
    qiopen(host, 0)
    qiopen(host, 1, "UDP", UDP_HOST, UDP_PORT)
    qiopen(host, 2, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    assert emulator.control("pdp_deact", cid=1)["ok"]
    out = host.read_until(b'+QIURC: "closed",2\r\n')
    assert out.count(b'+QIURC: "pdpdeact",1') == 1
    for i in range(3):
        assert f'+QIURC: "closed",{i}'.encode() in out
    assert host.quiet_for(0.2).count(b"pdpdeact") == 0                  # once per event
    for i in range(3):
        assert host.at(f"AT+QICLOSE={i}") == b"\r\nOK\r\n"
    qiopen(host, 0, code=561)                                            # PDP context down


def test_qideact_and_reboot_drop_sockets(modem, emulator, tcp_echo):
    host, advance = modem
    qiopen(host, 0)
    assert host.at("AT+QIDEACT=1") == b"\r\nOK\r\n"
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
    qiopen(host, 0)
    assert host.at("AT+CFUN=1,1") == b"\r\nOK\r\n"                  # sockets dropped silently
    advance(0.05)
    host.read_until(b"RDY\r\n")                                        # (the port reads from RDY on)
    assert host.at("ATE0;+QISTATE?").endswith(b"\r\nOK\r\n")
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    assert host.transcript.count(b'"closed"') == 1                   # the AT+QIDEACT one only


def test_control_state_and_drop_see_tcp_sockets(modem, emulator, tcp_echo):
    host, _ = modem
    qiopen(host, 0)
    state = emulator.control("state")
    assert [s["id"] for s in state["sockets"]] == [0]
    assert state["sockets"][0]["service_type"] == "TCP"
    assert emulator.control("send_fail", socket=0, count=2)["ok"]
    assert qisend(host, 0, b"x") == b"\r\nSEND FAIL\r\n"
    assert host.at('AT+QISENDEX=0,"41"') == b"\r\nSEND FAIL\r\n"
    assert qisend(host, 0, b"y") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert emulator.control("drop", socket=0, how="rst")["ok"]
    host.seen(b'+QIURC: "closed",0\r\n')
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("line, code", [
    ('AT+QIOPEN=1,0,"TCP","a.example"', 552),              # too few parameters
    ('AT+QIOPEN=1,12,"TCP","a.example",80', 552),          # connectID out of range
    ('AT+QIOPEN=1,0,"SCTP","a.example",80', 552),
    ('AT+QIOPEN=1,0,"TCP","",80', 552),
    ('AT+QIOPEN=1,0,"TCP","a.example",0', 552),
    ('AT+QIOPEN=1,0,"TCP","a.example",80,0,3', 552),
    ('AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,0,0', 552),
    ('AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,5000,2', 552),
    ('AT+QIOPEN=0,0,"TCP","a.example",80', 552),
    ("AT+QIOPEN?", 552),
    ("AT+QICLOSE=3,70000", 552),
    ("AT+QISEND=3,5", 572),
    ("AT+QISEND=0,1461", 552),
    ("AT+QISEND=0,", 552),
    ('AT+QISENDEX=0,"41"', 572),
    ('AT+QISENDEX=0,"4"', 552),
    ('AT+QISENDEX=0,"zz"', 552),
    (f'AT+QISENDEX=0,"{"41" * 513}"', 552),
    ("AT+QIRD=0", 572),
    ("AT+QIRD=0,1501", 552),
    ("AT+QIRD=0,", 552),                                   # as AT+QISEND=0, (not 1500)
    ("AT+QISDE=5", 552),
    ("AT+QISWTMD=0,1", 572),
])
def test_bad_input_is_error_with_the_code(modem, line, code):
    host, _ = modem
    assert host.at(line) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR").startswith(f"\r\n+QIGETERROR: {code},".encode())
    assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("route, code", [
    (None, 565),                                         # not routed, offline: DNS
    ("refused", 566),
])
def test_open_failures_are_reported_in_the_urc(modem, emulator, route, code):
    host, _ = modem
    if route == "refused":
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", free_port())
    qiopen(host, 0, code=code)
    assert host.at("AT+QIGETERROR").startswith(f"\r\n+QIGETERROR: {code},".encode())
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"                 # the id is free again


def test_listener_port_busy_is_556(modem):
    host, _ = modem
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=busy.getsockname()[1], code=556)
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 556,socket bind failed\r\n\r\nOK\r\n"


def test_ml302_has_no_tcpip_commands(open_modem):
    host, _ = open_modem("ml302")
    for line in ('AT+QIOPEN=1,0,"TCP","a.example",80', "AT+QISTATE?", "AT+QIRD=0", "AT+QISDE?",
                 "AT+QISEND=0,1", 'AT+QISENDEX=0,"41"', "AT+QICLOSE=0"):
        assert host.at(line) == b"\r\nERROR\r\n"


def test_crlf_host_writing_byte_at_a_time(open_modem, tcp_echo):
    """A firmware-like host: CR LF line ends, every byte written on its own."""
    from emulator.testing.host import FINAL
    host, _ = open_modem("ec2x", echo=True)

    def at(text: str) -> bytes:
        for b in (text + "\r\n").encode():
            host.write(bytes([b]))
        return host.read_until(FINAL)

    # Its first byte's echo comes back before it writes the rest: the modem has seen this host
    # write a line in pieces.  (Else a loaded machine may read each byte-by-byte line in one
    # piece and the AT+QISEND line's late LF together with the data that start with LF: data,
    # as docs/behaviour.md says for a host seen writing whole lines.)
    host.write(b"A")
    assert host.read_exactly(1) == b"A"
    assert at("TE0").endswith(b"\r\nOK\r\n")
    assert at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
    assert at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    host.seen(b"+QIOPEN: 0,0\r\n")
    assert qisend(host, 0, b"\nstarts with LF", byte_at_a_time=True, eol="\r\n") == b"\r\nSEND OK\r\n"
    assert qisend(host, 0, b"ctrl-z\r\n", fixed=False, byte_at_a_time=True, eol="\r\n") == b"\r\nSEND OK\r\n"
    assert tcp_echo.wait_connection().wait_received(23) == b"\nstarts with LFctrl-z\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    # The server has both sends; its echo of the second may still be on its way back, so
    # the host reads until it has all 23 bytes (each answer framed exactly).
    got = b""
    while len(got) < 23:
        answer = at("AT+QIRD=0,1500")
        # (the second echo's arrival into the emptied buffer may put a "recv" URC first)
        head = re.match(rb'(?:\r\n\+QIURC: "recv",0\r\n)?\r\n\+QIRD: (\d+)\r\n', answer)
        assert head, answer
        n, body = int(head.group(1)), answer[head.end():]
        assert body[n:] == (b"\r\n\r\nOK\r\n" if n else b"\r\nOK\r\n"), answer
        got += body[:n]
    assert got == b"\nstarts with LFctrl-z\r\n"


def test_blackholed_link_fills_the_send_buffer_then_send_fail(modem, emulator):
    """Nothing is acknowledged on a blackholed link: AT+QISEND=<id>,0 shows the bytes as
    unacknowledged, and past tcpip.send_buffer (16 KiB) AT+QISEND answers SEND FAIL."""
    host, _ = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        assert emulator.control("drop", socket=0, how="blackhole")["ok"]
        chunk = b"z" * 1460
        results = [qisend(host, 0, chunk) for _ in range(12)]
        assert results[:11] == [b"\r\nSEND OK\r\n"] * 11 and results[11] == b"\r\nSEND FAIL\r\n"
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 16060,0,16060\r\n\r\nOK\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


def test_udp_to_a_closed_port_stays_open(modem, emulator):
    """A UDP socket has no connection to lose: an ICMP port unreachable is no "closed" URC."""
    host, _ = modem
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", free_port(socket.SOCK_DGRAM))
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    for _ in range(3):
        assert qisend(host, 0, b"anyone?") == b"\r\nSEND OK\r\n"
    assert b"closed" not in host.quiet_for(0.3)
    assert re.search(rb'\+QISTATE: 0,"UDP",.*,2,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 21,21,0\r\n\r\nOK\r\n"


def test_unanswered_connect_is_569_and_pdp_loss_while_opening_570(modem, emulator, tcp_echo):
    """The control API's handshake_stall on a TCP socket: the server never answers the
    connect, so +QIOPEN comes after the manual's 150 s with 569; a PDP context that goes
    away meanwhile ends the open with 570."""
    host, advance = modem
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    advance(149)
    assert b"+QIOPEN" not in host.quiet_for(0.2)
    assert re.search(rb',0,1,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,0"))         # opening
    advance(2)
    assert host.read_until(b"+QIOPEN: 0,569\r\n").endswith(b"\r\n+QIOPEN: 0,569\r\n")
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    assert emulator.control("pdp_deact", cid=1)["ok"]
    assert host.read_until(b"+QIOPEN: 1,570\r\n").endswith(b'+QIURC: "pdpdeact",1\r\n\r\n+QIOPEN: 1,570\r\n')
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 570,PDP context break down\r\n\r\nOK\r\n"
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_close_while_opening_means_no_qiopen(modem, emulator, tcp_echo):
    host, advance = modem
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"        # the manual's advice when +QIOPEN is late
    advance(151)
    assert b"+QIOPEN" not in host.quiet_for(0.3)
    qiopen(host, 2)                                          # the id is free again


# -- AT+QICFG: what the emulator chose where the notes are silent (docs/behaviour.md) --------
# (tests/e2e/test_qicfg_spec.py pins what the public evidence says.)

def test_qicfg_hex_send_with_a_fixed_length_takes_two_digits_a_byte(modem, tcp_echo):
    host, _ = modem
    assert host.at('AT+qicfg="DataFormat",1,1') == b"\r\nOK\r\n"        # the name in any case
    qiopen(host, 0)
    host.write("AT+QISEND=0,3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"00fF0a")                                   # 3 bytes, 6 digits, either case
    assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 3\r\n00ff0a\r\n\r\nOK\r\n"     # lower case
    assert tcp_echo.connections[0].wait_received(3) == b"\x00\xff\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 3,3,0\r\n\r\nOK\r\n"     # bytes, not digits
    # digits that are no hex, or an odd number of them: ERROR, nothing sent, 552
    for typed in (b"0g1", b"abc"):
        host.write("AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(typed + b"\x1a")
        assert host.read_until(RESULT) == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 3,3,0\r\n\r\nOK\r\n"
    # back to text: the bytes as typed
    assert host.at('AT+QICFG="dataformat",0,0') == b"\r\nOK\r\n"
    assert qisend(host, 0, b"0a") == b"\r\nSEND OK\r\n"
    assert tcp_echo.connections[0].wait_received(5) == b"\x00\xff\n0a"


def test_qicfg_viewmode_and_recvind_on_a_udp_service(modem):
    host, _ = modem
    assert host.at('AT+QICFG="viewmode",1;+QICFG="recvind",1') == b"\r\nOK\r\n"
    port = free_port(socket.SOCK_DGRAM)
    qiopen(host, 2, "UDP SERVICE", "127.0.0.1", 0, local_port=port)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    me = peer.getsockname()[1]
    peer.sendto(b"dgram\r\n", ("127.0.0.1", port))
    host.seen(b'+QIURC: "recv",2,7\r\n')                   # the length of what arrived
    assert host.at("AT+QIRD=2") == f'\r\n+QIRD: 7,"127.0.0.1",{me},dgram\r\n\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QIRD=2") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"            # nothing: no comma
    peer.close()


def test_qicfg_errors_restart_and_profiles(modem, ml302):
    host, _ = modem
    assert host.at('AT+QICFG="transpktsize",0') == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at('AT+QICFG="transpktsize"') == b'\r\n+QICFG: "transpktsize",1024\r\n\r\nOK\r\n'
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    for bad in ('AT+QICFG="tcp/keepalive",1', 'AT+QICFG="tcp/keepalive",1,60,30',
                'AT+QICFG="viewmode",1,1', 'AT+QICFG="viewmode",', "AT+QICFG=1", "AT+QICFG?", "AT+QICFG"):
        assert host.at(bad) == b"\r\nERROR\r\n", bad
    assert host.at('AT+QICFG="tcp/keepalive",0') == b"\r\nOK\r\n"
    assert host.at('AT+QICFG="tcp/keepalive"') == b'\r\n+QICFG: "tcp/keepalive",0\r\n\r\nOK\r\n'
    assert ml302.at('AT+QICFG="viewmode",1') == b"\r\nERROR\r\n"             # an EC2x command
