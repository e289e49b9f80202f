"""The EC2x TCP/IP sockets (AT+QIOPEN & co.) against impolite hosts and hostile servers:
hosts that never wait for the URC they should, close the port mid-phase, send bad
parameters; servers that reset, half-close, never read, flood.  Checked: byte-exact data,
no lost or split answers, bounded memory, the right AT+QIGETERROR, no traceback, fds freed."""
from __future__ import annotations

import hashlib
import os
import re
import socket
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, UdpEchoServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, escape, free_port,
                                      error_code, fds, qiopen, qird, qisend, wait_for)


@pytest.fixture
def modem(ec2x_strict):
    host = ec2x_strict[0]
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): these
    # tests are about other things than the module's packet wait, and run on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    return ec2x_strict


def tcpip(emulator, port):
    from emulator.sockets.tcpip import tcpip_service
    return emulator.run(tcpip_service, port.modem)


# -- impolite hosts ------------------------------------------------------------------------
def test_two_qiopen_on_one_id_back_to_back(modem, tcp_echo):
    host, _, _ = modem
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r'.encode() * 2)
    out = host.read_until(b"\r\nOK\r\n") + host.read_until(b"\r\nOK\r\n")
    host.seen(b"+QIOPEN: 0,563\r\n")
    host.seen(b"+QIOPEN: 0,0\r\n")
    assert b"ERROR" not in out
    assert qisend(host, 0, b"still works") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert qird(host, 0)[1] == b"still works"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_qisend_before_the_qiopen_urc(modem, emulator, tcp_echo):
    host, _, _ = modem
    assert emulator.control("handshake_stall")["ok"]
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    assert host.at("AT+QISEND=0,5") == b"\r\nERROR\r\n"
    assert error_code(host) == 567
    assert host.at('AT+QISENDEX=0,"41"') == b"\r\nERROR\r\n"
    assert host.at("AT+QIRD=0,10") == b"\r\nERROR\r\n"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_qiopen_on_an_id_an_ssl_socket_is_opening(modem, emulator, echo, pki):
    host, _, _ = modem
    assert emulator.control("handshake_stall")["ok"]
    assert host.at('AT+QSSLOPEN=1,1,3,"echo.example",443,0') == b"\r\nOK\r\n"
    assert host.at(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
    host.seen(b"+QIOPEN: 3,563\r\n")
    assert host.at('AT+QIOPEN=1,4,"TCP LISTENER","127.0.0.1",0,0,0') == b"\r\nERROR\r\n"   # port 0
    qiopen(host, 4, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    assert host.at('AT+QSSLOPEN=1,1,4,"echo.example",443,0') == b"\r\nERROR\r\n"
    assert error_code(host) == 563
    assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
    assert host.at("AT+QICLOSE=4") == b"\r\nOK\r\n"


def test_qisendex_edges(modem, tcp_sink):
    host, _, _ = modem
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert host.at('AT+QISENDEX=0,"0a0B1f"') == b"\r\nSEND OK\r\n"          # lowercase, mixed
    big = bytes(range(256)) * 2
    assert host.at(f'AT+QISENDEX=0,"{big.hex()}"') == b"\r\nSEND OK\r\n"     # 512 bytes
    assert conn.wait_received(515) == b"\x0a\x0b\x1f" + big
    for bad in ('"0a0"', '"0g"', '""', f'"{"41" * 513}"', '"41 42"', '"41",1'):
        assert host.at(f"AT+QISENDEX=0,{bad}") == b"\r\nERROR\r\n", bad
        assert error_code(host) == 552, bad
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


def test_qisend_lengths_and_escape(modem, tcp_sink):
    host, _, _ = modem
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert host.at("AT+QISEND=0,1461") == b"\r\nERROR\r\n"
    assert error_code(host) == 552
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    data = bytes([0x1a, 0x1b]) * 730                                            # Ctrl+Z / ESC as data
    assert qisend(host, 0, data) == b"\r\nSEND OK\r\n"
    assert conn.wait_received(1460) == data
    host.write(b"AT+QISEND=0\r")
    host.read_until(b"> ")
    host.write(b"abc\x1b")                                                      # ESC: not sent
    assert host.read_until(RESULT) == b"\r\nERROR\r\n"
    assert error_code(host) == 571
    assert qisend(host, 0, b"x" * 1460, fixed=False) == b"\r\nSEND OK\r\n"
    assert conn.wait_received(2920)[1460:] == b"x" * 1460
    host.write(b"AT+QISEND=0\r")
    host.read_until(b"> ")
    host.write(b"y" * 1461 + b"\x1a")
    assert host.read_until(RESULT) == b"\r\nERROR\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 2920,2920,0\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


# -- listeners ------------------------------------------------------------------------------
def test_twelve_incoming_at_once_and_one_more(modem, emulator):
    host, _, port = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    before = fds()
    clients = [socket.create_connection(("127.0.0.1", lport)) for _ in range(12)]
    try:
        for i in range(1, 12):
            host.seen(re.compile(rb'\+QIURC: "incoming",%d,0,"127\.0\.0\.1",\d+\r\n' % i))
        host.seen(b'+QIURC: "incoming full"\r\n')
        # exactly one was refused: it reads EOF/RST
        refused = 0
        for c in clients:
            c.settimeout(0.5)
            try:
                if c.recv(1) == b"":
                    refused += 1
            except socket.timeout:
                pass
            except ConnectionResetError:
                refused += 1
        assert refused == 1
        for i, c in enumerate(clients):
            try:
                c.sendall(b"hello %d" % i)
            except OSError:
                pass
        for i in range(1, 12):
            host.seen(b'+QIURC: "recv",%d\r\n' % i)
        got = sorted(qird(host, i)[1] for i in range(1, 12))
        assert len(got) == 11 and all(g.startswith(b"hello ") for g in got)
        assert host.at("AT+QIOPEN=1,5,\"TCP\",\"x\",1") == b"\r\nOK\r\n"
        host.seen(b"+QIOPEN: 5,563\r\n")
    finally:
        for c in clients:
            c.close()
    for i in range(1, 12):
        host.seen(b'+QIURC: "closed",%d\r\n' % i)
        assert host.at(f"AT+QICLOSE={i}").endswith(b"\r\nOK\r\n")
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    wait_for(lambda: fds() <= before - 0)


def test_client_closes_before_the_host_reads(modem, emulator):
    host, _, _ = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=0)
    data = os.urandom(100_000)
    with socket.create_connection(("127.0.0.1", lport)) as c:
        c.sendall(data)
    host.seen(b'+QIURC: "incoming",1,0,')
    host.seen(b'+QIURC: "recv",1\r\n')
    got = bytearray()
    closed = False
    while True:           # past the 64 KiB receive buffer the FIN is seen as the host reads
        chunk = qird(host, 1)[1]
        got += chunk
        closed = closed or b'+QIURC: "closed",1\r\n' in host.transcript
        if not chunk and closed:
            break
        if not chunk:
            time.sleep(0.01)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"
    # a client that connects and goes at once, in push mode: the listener's mode
    qiopen(host, 2, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port(), mode=1)
    lport2 = tcpip(emulator, modem[2]).listeners[2].shown_local_port
    with socket.create_connection(("127.0.0.1", lport2)) as c:
        c.sendall(b"bye")
    host.seen(b'+QIURC: "incoming",1,2,')
    host.seen(b'+QIURC: "recv",1,3\r\nbye\r\n')
    host.seen(b'+QIURC: "closed",1\r\n')
    for i in (1, 0, 2):
        assert host.at(f"AT+QICLOSE={i}").endswith(b"\r\nOK\r\n")


def test_many_listeners_and_fds_released(modem, emulator, tcp_echo):
    host, _, _ = modem
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", free_port(socket.SOCK_DGRAM))
    qiopen(host, 0)
    assert qisend(host, 0, b"warm") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    qird(host, 0)
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    base = fds()
    for _ in range(3):
        # (each port free for its own protocol: a port free for TCP may be a UDP client's
        # ephemeral port from the round before -- the full run once met one)
        ports = [free_port(socket.SOCK_STREAM if i % 3 else socket.SOCK_DGRAM) for i in range(12)]
        for i, p in enumerate(ports):
            qiopen(host, i, "TCP LISTENER" if i % 3 else "UDP SERVICE", "127.0.0.1", 0, local_port=p)
        for i in range(12):
            assert host.at(f"AT+QICLOSE={i}") == b"\r\nOK\r\n"
        for i in range(12):
            qiopen(host, i, "TCP" if i % 2 else "UDP", TCP_HOST if i % 2 else UDP_HOST, TCP_PORT if i % 2 else UDP_PORT)
        for i in range(12):
            assert host.at(f"AT+QICLOSE={i},0") == b"\r\nOK\r\n"
    wait_for(lambda: fds() <= base)


# -- floods and memory ----------------------------------------------------------------------
def flood_server(emulator, size: int, chunk: int = 65536, reads: bool = False):
    """A server that sends `size` random bytes as soon as a client connects, then closes
    (reads: it takes what the client sends, into state["got"], until the client's FIN);
    returns (server socket, the data, a thread-safe dict with 'sent')."""
    data = os.urandom(size)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    state = {"sent": 0, "got": bytearray()}

    def run():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        if reads:
            def reader():
                while True:
                    try:
                        got = conn.recv(65536)
                    except OSError:
                        return
                    if not got:
                        return
                    state["got"] += got
            t = threading.Thread(target=reader, daemon=True)
            t.start()
        with conn:
            if reads:
                try:
                    conn.sendall(data)
                except OSError:
                    pass
                t.join()
                return
            try:
                for i in range(0, size, chunk):
                    conn.sendall(data[i:i + chunk])
                    state["sent"] = i + chunk
            except OSError:
                pass
    threading.Thread(target=run, daemon=True).start()
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.getsockname()[1])
    return srv, data, state


@pytest.mark.parametrize("mode", [0, 1])
def test_ten_megabytes_while_the_host_never_reads(modem, emulator, mode):
    host, _, port = modem
    srv, data, state = flood_server(emulator, 10 * 1024 * 1024)
    with srv:
        qiopen(host, 0, mode=mode)
        # The host reads nothing: wait until the server is held back (its sends stall),
        # so the bounds below are checked with the buffers full, not before data came.
        last, deadline = -1, time.monotonic() + 60
        while state["sent"] != last:
            assert time.monotonic() < deadline, state
            last = state["sent"]
            time.sleep(0.3)
        svc = tcpip(emulator, port)
        held = emulator.run(lambda: len(svc.sockets[0].inbox))
        backlog = emulator.run(port.modem.output_backlog)
        assert held <= svc.recv_buffer + 262144 and backlog <= 1024 * 1024, (held, backlog)
        assert held > 0 and state["sent"] > svc.recv_buffer, (held, state)
        assert state["sent"] < len(data)
        got = bytearray()
        if mode == 0:
            while len(got) < len(data):
                chunk = qird(host, 0)[1]
                if not chunk:
                    host.seen(b'+QIURC: "recv",0\r\n')
                got += chunk
        else:
            buf = host.pending
            push = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
            deadline = time.monotonic() + 120
            while len(got) < len(data):
                assert time.monotonic() < deadline
                m = push.match(buf)
                if m and len(buf) >= m.end() + int(m.group(1)) + 2:
                    got += buf[m.end():m.end() + int(m.group(1))]
                    assert buf[m.end() + int(m.group(1)):m.end() + int(m.group(1)) + 2] == b"\r\n"   # the push's end
                    del buf[:m.end() + int(m.group(1)) + 2]
                    continue
                assert m or len(buf) < 30, bytes(buf[:100])
                host._fill()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        host.seen(b'+QIURC: "closed",0\r\n')
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


def test_udp_flood_larger_than_the_buffers(modem, emulator):
    host, _, port = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport)
    sent = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        me = peer.getsockname()
        peer.sendto(b"", ("127.0.0.1", lport))                      # a zero-length datagram
        big = os.urandom(65507)
        peer.sendto(big, ("127.0.0.1", lport))
        sent.append(big)
        for i in range(3000):
            d = i.to_bytes(4, "big") + os.urandom(996)
            sent.append(d)
            peer.sendto(d, ("127.0.0.1", lport))
        time.sleep(0.5)
        svc = tcpip(emulator, port)
        held = emulator.run(lambda: len(svc.sockets[0].inbox))
        assert held <= svc.recv_buffer + 65507, held
        host.seen(b'+QIURC: "recv",0\r\n')
        got = []
        current = bytearray()
        while True:
            head, chunk = qird(host, 0)
            if not chunk:
                break
            assert head.lstrip() == f'+QIRD: {len(chunk)},"127.0.0.1",{me[1]}\r\n'.encode()
            current += chunk
            if len(chunk) < 1500 or bytes(current) in sent:
                got.append(bytes(current))
                current = bytearray()
        # whole datagrams, in order, none duplicated (the tail past the buffers is dropped)
        assert got[0] == big
        idx = [sent.index(g) for g in got]
        assert idx == sorted(set(idx)), idx[:20]
    assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


# -- hostile servers ------------------------------------------------------------------------
def banner_server(emulator, banner: bytes, then: str = "close", udp: bool = False):
    """A server that speaks first, as soon as it accepts (SMTP, FTP, a telnet prompt), then
    "close"s (FIN), "rst"s or "stay"s open."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    kept = []

    def run():
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        conn.sendall(banner)
        if then == "rst":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            conn.close()
        elif then == "close":
            conn.close()
        else:
            kept.append(conn)
    threading.Thread(target=run, daemon=True).start()
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.getsockname()[1])
    return srv, kept


@pytest.mark.parametrize("mode", [0, 1])
def test_server_that_speaks_first_loses_nothing(modem, emulator, mode):
    """A server's greeting sent the moment it accepts (before the module has even reported
    +QIOPEN) reaches the host whole: the first bytes were dropped (the socket had no
    session yet when the transport delivered them)."""
    host, _, _ = modem
    banner = b"220 smtp.example ESMTP ready\r\n" + os.urandom(200_000)
    for _ in range(5):
        srv, kept = banner_server(emulator, banner, then="stay")
        with srv:
            qiopen(host, 0, mode=mode)
            got = bytearray()
            deadline = time.monotonic() + 20
            if mode == 0:
                while len(got) < len(banner):
                    assert time.monotonic() < deadline, len(got)
                    chunk = qird(host, 0)[1]
                    if not chunk:
                        time.sleep(0.01)
                    got += chunk
            else:
                push = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
                buf = host.pending
                while len(got) < len(banner):
                    assert time.monotonic() < deadline, len(got)
                    m = push.match(buf)
                    if m and len(buf) >= m.end() + int(m.group(1)) + 2:
                        got += buf[m.end():m.end() + int(m.group(1))]
                        assert buf[m.end() + int(m.group(1)):m.end() + int(m.group(1)) + 2] == b"\r\n"   # the push's end
                        del buf[:m.end() + int(m.group(1)) + 2]
                        continue
                    host._fill()
            assert hashlib.sha256(got).digest() == hashlib.sha256(banner).digest()
            assert host.at("AT+QICLOSE=0,0").endswith(b"\r\nOK\r\n")
            for c in kept:
                c.close()
        host.quiet_for(0.05)


@pytest.mark.parametrize("then", ["close", "rst"])
def test_server_that_greets_and_goes_at_once(modem, emulator, then):
    """A server that sends a line and closes (or resets) the moment it accepts: the host
    sees +QIOPEN: 0,0 and, for a FIN, the line; then "closed" either way (it never came:
    the end was lost with the early data and the socket stayed "connected")."""
    host, _, _ = modem
    srv, _ = banner_server(emulator, b"421 too busy\r\n", then=then)
    with srv:
        time.sleep(0.05)
        assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nOK\r\n"
        result = host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))
        if then == "rst" and result == b"+QIOPEN: 0,566\r\n":
            return                   # the reset came before the connect was seen complete
        assert result == b"+QIOPEN: 0,0\r\n"
        host.seen(b'+QIURC: "closed",0\r\n')
        if then == "close":
            got = bytearray()
            while chunk := qird(host, 0)[1]:
                got += chunk
            assert got == b"421 too busy\r\n"
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


# -- transparent mode and mode switches -------------------------------------------------------
def test_transparent_plus_in_data_ato_after_peer_close(modem, emulator):
    host, advance, _ = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        data = b"a+++b" + b"+++" + os.urandom(5000) + b"+++"       # no guard times: data
        host.write(data)
        assert conn.wait_received(len(data)) == data
        assert escape(host, advance) == b"\r\nOK\r\n"
        conn.send(b"while away")
        conn.close()
        # the peer's last data are not lost: buffer mode, "recv" then "closed", AT+QIRD
        assert host.read_until(b'"closed",1\r\n') == b'\r\n+QIURC: "recv",1\r\n\r\n+QIURC: "closed",1\r\n'
        assert host.at("AT+QIRD=1") == b"\r\n+QIRD: 10\r\nwhile away\r\n\r\nOK\r\n"
        assert b',"usbmodem"' in host.at("AT+QISTATE=1,1") and b",4,1,1,0," in host.at("AT+QISTATE=1,1")
        host.write(b"ATO\r")
        out = host.read_until(re.compile(rb"\r\n(NO CARRIER|ERROR)\r\n"))
        assert b"CONNECT" not in out and out.endswith(b"NO CARRIER\r\n"), out
        assert host.at("AT+QICLOSE=1").endswith(b"\r\nOK\r\n")
        assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("path", [(0, 1, 0), (1, 0, 2), (0, 2, 1), (1, 2, 0)])
def test_qiswtmd_with_data_waiting(modem, emulator, path):
    """Data that waited in one access mode come out whole, once, in order, in the next."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, mode=path[0])
        conn = server.wait_connection()
        sent = bytearray()
        got = bytearray()
        svc = tcpip(emulator, port)

        def drain(mode: int) -> None:
            deadline = time.monotonic() + 20
            while len(got) < len(sent):
                assert time.monotonic() < deadline, (mode, len(got), len(sent))
                if mode == 0:
                    got.extend(qird(host, 0)[1])
                elif mode == 1:
                    buf = host.pending
                    m = re.compile(rb'(?:\r\n)?\+QIURC: "recv",0,(\d+)\r\n').match(buf)
                    if m and len(buf) >= m.end() + int(m.group(1)) + 2:
                        got.extend(buf[m.end():m.end() + int(m.group(1))])
                        assert buf[m.end() + int(m.group(1)):m.end() + int(m.group(1)) + 2] == b"\r\n"   # the push's end
                        del buf[:m.end() + int(m.group(1)) + 2]
                        continue
                    host._fill()
                else:
                    host._fill()
                    got.extend(host.pending)
                    host.pending.clear()
        for i, mode in enumerate(path):
            if i:
                if path[i - 1] == 2:
                    assert escape(host, advance) == b"\r\nOK\r\n"
                piece = os.urandom(3000 + i)
                conn.send(piece)
                sent += piece
                wait_for(lambda: emulator.run(lambda: svc.sockets[0].bytes_received) >= len(sent))
                if path[i - 1] == 1:
                    drain(1)                       # direct push does not wait for the switch
                if mode == 2:
                    host.write(b"AT+QISWTMD=0,2\r")
                    host.read_until(b"\r\nCONNECT\r\n")
                else:
                    assert host.at(f"AT+QISWTMD=0,{mode}").endswith(b"\r\nOK\r\n")
            drain(mode)
            piece = os.urandom(2000)
            conn.send(piece)
            sent += piece
            drain(mode)
            if mode == 0:
                host.transcript.clear()
                host._consumed.clear()
        if path[-1] == 2:
            assert escape(host, advance) == b"\r\nOK\r\n"
        text = bytes(got)
        assert hashlib.sha256(text).digest() == hashlib.sha256(sent).digest()
        assert host.at("AT+QICLOSE=0,0").endswith(b"\r\nOK\r\n")


# -- the bearer and the module going away mid-transfer ------------------------------------------
def test_pdp_lost_while_a_listener_is_starting(modem, emulator):
    """AT+QIDEACT in the same line as the listener's AT+QIOPEN (before it is bound): the
    listener must not come up on a context that is gone (it reported +QIOPEN: 0,0 after
    "pdpdeact" and accepted connections)."""
    host, _, port = modem
    lport = free_port()
    out = host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0;+QIDEACT=1')
    assert out.endswith(b"\r\nOK\r\n"), out
    result = host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))
    host.quiet_for(0.3)
    if result == b"+QIOPEN: 0,0\r\n":
        host.seen(b'+QIURC: "closed",0\r\n')        # it was up first: then closed with the bearer
    else:
        assert result == b"+QIOPEN: 0,570\r\n", result
        assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", lport), timeout=1).close()
    host.at("AT+QICLOSE=0")


def test_reboot_and_pdp_loss_mid_transfer(modem, emulator):
    host, advance, port = modem
    base = fds()                        # before any listener, server or connection exists
    for how in ("cfun", "pdp", "cfun"):
        srv, data, state = flood_server(emulator, 4 * 1024 * 1024)
        with srv:
            qiopen(host, 1, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
            qiopen(host, 0, mode=1)
            host.read_until(b'+QIURC: "recv",0,')             # the push has started
            if how == "cfun":
                host.write(b"AT+CFUN=1,1\r")
                host.read_until(b"\r\nOK\r\n")
                advance(30)
                time.sleep(0.3)
                assert host.at("AT").endswith(b"OK\r\n")
                host.at("ATE0")
                assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"OK\r\n")
            else:
                assert emulator.control("pdp_deact", cid=1)["ok"]
                host.seen(b'+QIURC: "pdpdeact",1\r\n')
                deadline = time.monotonic() + 20
                while b'+QIURC: "closed",0\r\n' not in host.transcript:
                    assert time.monotonic() < deadline
                    host.quiet_for(0.05)
                host.seen(b'+QIURC: "closed",1\r\n')
                assert host.at("AT+QICLOSE=0").endswith(b"OK\r\n")
                assert host.at("AT+QICLOSE=1").endswith(b"OK\r\n")
                assert host.at("AT+QIACT=1").endswith(b"OK\r\n")
            host.quiet_for(0.2)
            assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    wait_for(lambda: fds() <= base)


def reopen(host: Host) -> Host:
    host.close()
    time.sleep(0.05)
    again = Host(host.path)
    for _ in range(50):
        if again.at("AT").endswith(b"OK\r\n"):
            break
    again.at("ATE0")
    return again


def test_port_closed_and_reopened_mid_phase(modem, emulator):
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        conn = server.wait_connection()
        host.write(b"AT+QISEND=0,10\r")
        host.read_until(b"> ")
        host.write(b"12345")                                 # half the data, then the port goes
        host = reopen(host)
        assert qisend(host, 0, b"whole") == b"\r\nSEND OK\r\n"
        assert conn.wait_received(5) == b"whole"
        # mid transparent open, then mid online data
        host.write(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
        host = reopen(host)
        host.quiet_for(0.2)
        server.wait_connection(1)
        state = host.at("AT+QISTATE=1,1")
        assert b'+QISTATE: 1,"TCP"' in state, state
        assert host.at("AT+QICLOSE=1,0").endswith(b"\r\nOK\r\n")
        host.write(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"online bytes")
        conn2 = server.wait_connection(2)
        assert conn2.wait_received(12) == b"online bytes"
        host = reopen(host)
        host.write(b"ATO\r")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"more")
        assert conn2.wait_received(16) == b"online bytesmore"
        host = reopen(host)
        assert host.at("AT+QICLOSE=2,0").endswith(b"\r\nOK\r\n")
        assert host.at("AT+QICLOSE=0,0").endswith(b"\r\nOK\r\n")
        assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
        host.close()


def test_server_that_never_reads(modem, emulator):
    """The send buffer fills: SEND FAIL (never a hang), the unacknowledged bytes in the
    AT+QISEND=<id>,0 query, then AT+QICLOSE waits its timeout and frees the id; also in
    transparent mode, where the port stops taking the host's bytes instead."""
    host, advance, port = modem
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.getsockname()[1])
    with srv:
        qiopen(host, 0)
        results = []
        for _ in range(20000):                 # the kernel's buffers take megabytes first
            results.append(qisend(host, 0, os.urandom(1460)))
            if results[-1] == b"\r\nSEND FAIL\r\n":
                break
        assert results[-1] == b"\r\nSEND FAIL\r\n" and set(results[:-1]) == {b"\r\nSEND OK\r\n"}
        sent, acked, unacked = map(int, re.search(rb"\+QISEND: (\d+),(\d+),(\d+)", host.at("AT+QISEND=0,0")).groups())
        assert sent == 1460 * (len(results) - 1) and unacked > 0 and acked + unacked == sent
        host.write(b"AT+QICLOSE=0\r")
        advance(11)
        assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")).endswith(b"\r\nOK\r\n")
        assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_half_close_by_the_server(modem, emulator):
    """The server shuts its sending side and still reads: "closed" after its data; the
    host reads the rest, and its close completes."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        conn = server.wait_connection()
        conn.send(b"last")
        conn.sock.shutdown(socket.SHUT_WR)
        host.seen(b'+QIURC: "closed",0\r\n')
        assert qird(host, 0)[1] == b"last"
        assert qird(host, 0)[1] == b""
        assert host.at("AT+QISEND=0,4") == b"\r\nERROR\r\n"
        assert error_code(host) == 567
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")
        assert conn.eof.wait(5)


def test_listener_closed_while_binding_and_reopened_at_once(modem, emulator):
    host, _, _ = modem
    for _ in range(10):
        lport = free_port()
        out = host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0;+QICLOSE=0;'
                      f'+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0')
        assert out.endswith(b"\r\nOK\r\n"), out
        assert host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n")) == b"+QIOPEN: 0,0\r\n"
        assert b"+QIOPEN" not in host.quiet_for(0.1)
        with socket.create_connection(("127.0.0.1", lport)) as c:
            c.sendall(b"in")
            host.seen(b'+QIURC: "incoming",1,0,')
            host.seen(b'+QIURC: "recv",1\r\n')
            assert qird(host, 1)[1] == b"in"
        host.seen(b'+QIURC: "closed",1\r\n')
        assert host.at("AT+QICLOSE=1").endswith(b"\r\nOK\r\n")
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


def test_udp_datagram_edges(modem, emulator):
    """Zero-length and 65507-byte datagrams on a connected UDP socket in push mode, mixed with
    small ones: each datagram once, whole, in order; an empty one is no URC."""
    host, _, port = modem
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT, mode=1)
        assert qisend(host, 0, b"hi") == b"\r\nSEND OK\r\n"
        (me, _), = server.wait_datagrams(1)
        big = os.urandom(65507)
        for d in (b"", b"one", big, b"", b"two"):
            server.sock.sendto(d, me)
        want = b"one" + big + b"two"
        got = bytearray()
        sizes = []
        push = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
        buf = host.pending
        deadline = time.monotonic() + 20
        while len(got) < len(want):
            assert time.monotonic() < deadline, len(got)
            m = push.match(buf)
            if m and len(buf) >= m.end() + int(m.group(1)) + 2:
                sizes.append(int(m.group(1)))
                got += buf[m.end():m.end() + int(m.group(1))]
                assert buf[m.end() + int(m.group(1)):m.end() + int(m.group(1)) + 2] == b"\r\n"   # the push's end
                del buf[:m.end() + int(m.group(1)) + 2]
                continue
            assert m or len(buf) < 30, bytes(buf[:60])
            host._fill()
        assert got == want
        assert sizes[0] == 3 and sizes[-1] == 3 and sum(sizes[1:-1]) == 65507
        assert b"recv" not in host.quiet_for(0.2)
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


def test_client_hammering_a_listener_as_it_comes_up(modem, emulator):
    """A client that retries its connect in a tight loop gets in the moment the listener
    binds: an "incoming" socket, never "incoming full" with ids free."""
    host, _, _ = modem
    for round_ in range(15):
        lport = free_port()
        done = threading.Event()
        conns = []

        def hammer():
            while not done.is_set():
                try:
                    c = socket.create_connection(("127.0.0.1", lport), timeout=1)
                except OSError:
                    continue
                conns.append(c)
                return
        t = threading.Thread(target=hammer, daemon=True)
        t.start()
        time.sleep(0.01)
        qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
        host.seen(b'+QIURC: "incoming",1,0,')
        done.set()
        t.join(5)
        assert b"incoming full" not in host.transcript, round_
        opened = host.transcript.rindex(b"+QIOPEN: 0,0\r\n")
        assert opened < host.transcript.rindex(b'+QIURC: "incoming",1,0,'), round_   # never before it
        for c in conns:
            c.close()
        host.seen(b'+QIURC: "closed",1\r\n')
        assert host.at("AT+QICLOSE=1").endswith(b"\r\nOK\r\n")
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")


def test_transparent_open_to_a_server_that_speaks_first(modem, emulator):
    host, advance, _ = modem
    banner = b"220 ready\r\n" + os.urandom(100_000)
    srv, kept = banner_server(emulator, banner, then="stay")
    with srv:
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        got = host.read_exactly(len(banner))
        assert hashlib.sha256(got).digest() == hashlib.sha256(banner).digest()
        assert escape(host, advance) == b"\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0,0").endswith(b"\r\nOK\r\n")
        for c in kept:
            c.close()


@pytest.mark.parametrize("how", ["pdp", "reboot", "rst"])
def test_online_transfer_cut(modem, emulator, how):
    """The bearer, the module or the server goes mid transparent transfer: what was
    received first, then NO CARRIER, and the port answers commands."""
    host, advance, port = modem
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        data = os.urandom(50_000)
        conn.send(data)
        got = host.read_exactly(len(data))
        assert got == data
        host.write(os.urandom(3000))
        conn.wait_received(3000)
        if how == "pdp":
            assert emulator.control("pdp_deact", cid=1)["ok"]
        elif how == "reboot":
            assert emulator.control("reboot")["ok"]
        else:
            assert emulator.control("drop", socket=0, how="rst")["ok"]
        out = host.read_until(b"NO CARRIER\r\n") if how != "reboot" else b""
        assert out in (b"", b"\r\nNO CARRIER\r\n"), out[:100]
        advance(30)
        host.quiet_for(0.3)
        deadline = time.monotonic() + 10
        while not host.at("AT", timeout=2).endswith(b"OK\r\n"):
            assert time.monotonic() < deadline
        host.at("ATE0")
        if how != "reboot":
            assert host.at("AT+QICLOSE=0,0").endswith(b"\r\nOK\r\n")
        assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_fuzzed_parameters_never_raise(modem, emulator, tcp_echo):
    """Random parameter lists to every TCP/IP command: each line gets its final result, no
    handler raises (a traceback in the log), and the modem answers AT afterwards."""
    import random
    host, advance, port = modem
    qiopen(host, 0)
    qiopen(host, 1, "UDP SERVICE", "127.0.0.1", 0, local_port=free_port(socket.SOCK_DGRAM))
    qiopen(host, 2, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    rng = random.Random(1)
    values = ["0", "1", "2", "3", "11", "12", "-1", "65535", "65536", "99999999999999999999", "",
              '""', '"TCP"', '"UDP"', '"TCP LISTENER"', '"UDP SERVICE"', '"tcp"', f'"{TCP_HOST}"',
              '"127.0.0.1"', '"::1"', '"41"', '"4"', '"zz"', "1.5", "0x10", '"' + "a" * 200 + '"', " 1 ",
              '"unterminated', "\x1b", ","]
    names = ["+QIOPEN", "+QICLOSE", "+QISTATE", "+QISEND", "+QISENDEX", "+QIRD", "+QISDE", "+QISWTMD",
             "+QIGETERROR"]
    for _ in range(600):
        name = rng.choice(names)
        form = rng.random()
        if form < 0.1:
            line = f"AT{name}?"
        elif form < 0.15:
            line = f"AT{name}=?"
        elif form < 0.2:
            line = f"AT{name}"
        else:
            line = f"AT{name}=" + ",".join(rng.choice(values) for _ in range(rng.randint(1, 8)))
        if name in ("+QICLOSE", "+QIOPEN") and re.match(r"AT\+QI(CLOSE|OPEN)=[012]\b", line):
            continue                                 # keep the three sockets
        host.write(line.encode() + b"\r")
        out = host.read_until(re.compile(rb"(?:^|\r\n)(OK|ERROR|> |CONNECT|SEND OK|SEND FAIL|NO CARRIER)\r?\n?"),
                              timeout=15)
        if out.endswith(b"> "):
            host.write(b"\x1b")                      # cancel a data prompt
            host.read_until(RESULT)
        elif out.endswith(b"CONNECT\r\n"):
            assert escape(host, advance) == b"\r\nOK\r\n"
        advance(0.01)
    host.quiet_for(0.2)
    assert host.at("AT") == b"\r\nOK\r\n"


def test_closed_transparent_sockets_are_not_kept(modem, emulator, tcp_echo):
    """Open, use and close a transparent socket again and again: the access mode must not
    keep every closed socket (with its buffers; an SSL one with its TLS context) -- its
    link table grew by one a cycle and was pruned only when the port's output backlog had
    gone over its high water."""
    host, advance, port = modem
    svc = tcpip(emulator, port)
    online = svc.deliveries["online"]
    for i in range(30):
        host.write(f'AT+QIOPEN=1,{i % 3},"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"ping %d" % i)
        assert host.read_exactly(len(b"ping %d" % i)) == b"ping %d" % i
        assert escape(host, advance) == b"\r\nOK\r\n"
        assert host.at(f"AT+QICLOSE={i % 3},0").endswith(b"\r\nOK\r\n")
    assert emulator.run(lambda: len(online._links)) <= 1
    # a transparent open the host walked away from (port closed before CONNECT), then closed
    host.write(f'AT+QIOPEN=1,5,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r'.encode())
    host = reopen(host)
    wait_for(lambda: b"+QISTATE: 5" in host.at("AT+QISTATE=1,5"))
    assert host.at("AT+QICLOSE=5,0").endswith(b"\r\nOK\r\n")
    kept = emulator.run(lambda: (len(online._links), len(online._opening)))
    assert kept == (0, 0), kept
    host.close()


@pytest.mark.parametrize("mode", [0, 1])
def test_sends_and_reads_during_a_flood(modem, emulator, mode):
    """The server floods while the host keeps sending (and reading, in buffer mode): no URC
    inside a data prompt or an AT+QIRD answer, every byte once and in order both ways."""
    host, _, port = modem
    srv, data, state = flood_server(emulator, 512 * 1024, reads=True)
    received = bytearray()
    up = os.urandom(200 * 1460)
    with srv:
        qiopen(host, 0, mode=mode)
        buf = host.pending
        push = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
        recv_urc = b'\r\n+QIURC: "recv",0\r\n'
        urc_head = b'\r\n+QIURC: "recv",0'

        def take_urcs() -> None:
            """Consume whole URCs (and push data) at the head of the pending bytes."""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                m = push.match(buf)
                if m and len(buf) >= m.end() + int(m.group(1)) + 2:
                    received.extend(buf[m.end():m.end() + int(m.group(1))])
                    assert buf[m.end() + int(m.group(1)):m.end() + int(m.group(1)) + 2] == b"\r\n"   # the push's end
                    del buf[:m.end() + int(m.group(1)) + 2]
                elif buf.startswith(recv_urc):
                    del buf[:len(recv_urc)]
                elif buf and bytes(buf[:len(urc_head)]) == urc_head[:len(buf)]:
                    host._fill()                         # a URC still coming in
                else:
                    return

        sent = 0
        for i in range(0, len(up), 1460):
            take_urcs()
            host.write(f"AT+QISEND=0,{len(up[i:i + 1460])}\r")
            deadline = time.monotonic() + 10
            while b"> " not in buf:
                assert time.monotonic() < deadline, (i, bytes(buf[:200]))
                host._fill()
                take_urcs()
            head = bytes(buf[:buf.index(b"> ") + 2])
            assert head == b"\r\n> ", head
            del buf[:len(head)]
            host.write(up[i:i + 1460])
            assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
            sent += 1460
            if mode == 0 and i % (10 * 1460) == 0:
                take_urcs()
                head, chunk = qird(host, 0)
                assert re.fullmatch(rb'(\r\n\+QIURC: "recv",0\r\n)?\r\n\+QIRD: %d\r\n' % len(chunk), head), head[:80]
                received.extend(chunk)
        deadline = time.monotonic() + 60
        while len(received) < len(data):
            assert time.monotonic() < deadline, len(received)
            if mode == 0:
                take_urcs()
                head, chunk = qird(host, 0)
                assert re.fullmatch(rb'(\r\n\+QIURC: "recv",0\r\n)?\r\n\+QIRD: %d\r\n' % len(chunk), head), head[:80]
                received.extend(chunk)
            else:
                host._fill()
                take_urcs()
        assert hashlib.sha256(received).digest() == hashlib.sha256(data).digest()
        wait_for(lambda: len(state["got"]) >= len(up))
        assert hashlib.sha256(state["got"]).digest() == hashlib.sha256(up).digest()
        host.quiet_for(0.1)
        host.at("AT+QICLOSE=0,0")


def test_a_connection_reaching_a_listener_that_is_not_listening_is_refused_silently(modem, emulator):
    """A connection the kernel accepted just as the listener was closed (or before it was
    up) is dropped without a word: it was reported as "incoming full" although ids were
    free, a URC no driver can make sense of."""
    host, _, port = modem
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    svc = tcpip(emulator, port)
    listener = svc.listeners[0]
    assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")
    late = emulator.run(svc.incoming, listener)         # the accept that raced the close

    class Transport:
        aborted = False

        def abort(self):
            self.aborted = True
    transport = Transport()
    emulator.run(late.connection_made, transport)
    assert transport.aborted
    assert b"incoming" not in host.quiet_for(0.2) and b"incoming full" not in host.transcript
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_connections_held_for_an_unannounced_listener_go_with_it(modem, emulator):
    """A connection accepted while the listener's +QIOPEN was still due waits for it; when
    the listener goes first (closed or its context lost in that turn), the held connection
    must go too instead of keeping an id the host never heard of."""
    host, _, port = modem
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=free_port())
    svc = tcpip(emulator, port)
    listener = svc.listeners[0]
    with socket.create_connection(("127.0.0.1", listener.shown_local_port)) as client:
        host.seen(b'+QIURC: "incoming",1,0,')
        accepted = svc.sockets[1]
        emulator.run(svc.sockets.pop, 1)
        listener.held = [accepted]                  # as if accepted before the announcement
        emulator.run(svc.sockets.__setitem__, 1, accepted)
        assert host.at("AT+QICLOSE=0").endswith(b"\r\nOK\r\n")
        assert 1 not in svc.sockets and host.at("AT+QISTATE?") == b"\r\nOK\r\n"
        client.settimeout(5)
        try:
            assert client.recv(10) == b""           # the connection was dropped (FIN ...
        except ConnectionResetError:
            pass                                    # ... or RST)
