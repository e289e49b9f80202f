"""Adversarial tests of transparent (online) data mode, EC2x access mode 2: the "+++"
escape with guard times attacked the way host firmware and hostile servers do (split,
pipelined, inside binary data, at the end of a big write, with the peer talking during
the guard time and while escaped), ATO / AT+QISWTMD / AT+QSSLCLOSE while escaped, the pty
closed and reopened online, DTR drops, and large flows both ways with a host that stops
reading.  Exact bytes: what the server sends reaches the host once and in order, what the
host writes outside an escape reaches the server once and in order.

Guard times run on the modem's manual clock (ec2x_strict's advance); no wall-clock speed
is asserted anywhere."""
from __future__ import annotations

import hashlib
import os
import re
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT

HOST, PORT = "220.180.239.212", 8011
OPEN = f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2'
CONNECT_OR_ERROR = re.compile(rb"\r\n(CONNECT|ERROR|NO CARRIER)\r\n")
FINAL = re.compile(rb"\r\n(OK|ERROR|NO CARRIER|CONNECT)\r\n")


# -- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture
def online(emulator, ec2x_strict):
    """(host, advance, port, server): an EC2x (strict, manual time) online on socket 4 with
    an OpenSSL echo server; server.conn is the connection."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        yield host, advance, port, server


@pytest.fixture
def quiet_peer(emulator, ec2x_strict):
    """Like `online`, but the server only reads (it sends when the test says so):
    (host, advance, port, server)."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        yield host, advance, port, server


def connect(host, line: str = OPEN) -> None:
    host.write(line + "\r")
    got = host.read_until(CONNECT_OR_ERROR)
    assert got == b"\r\nCONNECT\r\n", got


def escape(host, advance) -> bytes:
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    return host.read_until(FINAL)


def ato(host) -> bytes:
    host.write(b"ATO\r")
    return host.read_until(CONNECT_OR_ERROR)


def received(server, n: int, timeout: float = 10) -> bytes:
    """Exactly what the server got once it has n bytes (then a short grace to catch extra)."""
    server.wait_received(n, timeout=timeout)
    time.sleep(0.05)
    return bytes(server.conn.received)


# -- the escape sequence itself -------------------------------------------------------------
def test_escape_split_into_three_writes_within_the_guard_time(online):
    host, advance, port, server = online
    host.write(b"before")
    assert host.read_exactly(6) == b"before"
    advance(1.1)
    host.write(b"+")
    advance(0.3)
    host.write(b"+")
    advance(0.3)
    host.write(b"+")
    assert host.quiet_for(0.05) == b""
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert received(server, 6) == b"before"                  # no "+" leaked
    assert ato(host) == b"\r\nCONNECT\r\n"
    host.write(b"after")
    assert host.read_exactly(5) == b"after"
    assert received(server, 11) == b"beforeafter"


def test_escape_whose_three_plus_take_longer_than_the_guard_time_is_data(online):
    host, advance, port, server = online
    advance(1.1)
    host.write(b"+")
    advance(0.6)
    host.write(b"+")
    advance(0.6)                    # the first "+" is 1.2 s old: the pattern failed
    host.write(b"+")
    advance(1.1)
    advance(1.1)
    assert host.read_exactly(3) == b"+++"                      # echoed: data
    assert host.quiet_for(0.05) == b""                         # no OK
    assert received(server, 3) == b"+++"
    assert escape(host, advance) == b"\r\nOK\r\n"


def test_data_just_before_the_escape_makes_it_data(online):
    host, advance, port, server = online
    advance(1.1)
    host.write(b"x")
    advance(0.5)                    # only 0.5 s of silence before "+++"
    host.write(b"+++")
    advance(1.1)
    assert host.read_exactly(4) == b"x+++"
    assert host.quiet_for(0.05) == b""
    assert received(server, 4) == b"x+++"
    assert escape(host, advance) == b"\r\nOK\r\n"


def test_data_right_after_the_escape_within_the_guard_time_makes_it_data(online):
    host, advance, port, server = online
    advance(1.1)
    host.write(b"+++")
    advance(0.9)
    host.write(b"y")                # before the guard time after "+++" ran out
    advance(1.1)
    assert host.read_exactly(4) == b"+++y"
    assert host.quiet_for(0.05) == b""
    assert received(server, 4) == b"+++y"


def test_plus_plus_plus_then_ato_at_once_is_all_data(online):
    """A host that writes "+++ATO\\r" without waiting: no silence after "+++", so it is
    data -- all of it reaches the server, and the modem stays online."""
    host, advance, port, server = online
    advance(1.1)
    host.write(b"+++")
    host.write(b"ATO\r")
    advance(1.1)
    assert host.read_exactly(7) == b"+++ATO\r"
    assert received(server, 7) == b"+++ATO\r"
    assert escape(host, advance) == b"\r\nOK\r\n"


def test_escape_then_ato_written_without_waiting_for_ok(online):
    """Guard times respected, but the host writes ATO the moment the guard time is over,
    without reading the OK: OK, then CONNECT, and the next bytes are data again."""
    host, advance, port, server = online
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    host.write(b"ATO\r")
    got = host.read_until(b"\r\nCONNECT\r\n")
    assert got == b"\r\nOK\r\n\r\nCONNECT\r\n", got
    host.write(b"tail")
    assert host.read_exactly(4) == b"tail"
    assert received(server, 4) == b"tail"


def test_escape_then_commands_pipelined_on_one_write(online):
    host, advance, port, server = online
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"AT\rAT+QSSLSTATE=4\rATO\r")
    got = host.read_until(b"\r\nCONNECT\r\n")
    assert re.fullmatch(rb"\r\nOK\r\n\r\n\+QSSLSTATE: 4,.*,2,\"usbmodem\",1\r\n\r\nOK\r\n\r\nCONNECT\r\n",
                        got, re.S), got
    host.write(b"q")
    assert host.read_exactly(1) == b"q"
    assert received(server, 1) == b"q"


def test_plus_plus_plus_inside_binary_data(online):
    host, advance, port, server = online
    blob = bytes(range(256)) * 4
    blob = blob[:300] + b"+++" + blob[300:] + b"\x00+++\x00" + b"+++"
    advance(1.1)
    host.write(blob)
    advance(1.1)            # the chunk ends in "+++" but did not only consist of it
    assert host.read_exactly(len(blob)) == blob
    assert host.quiet_for(0.05) == b""
    assert received(server, len(blob)) == blob


def test_plus_plus_plus_at_the_very_end_of_a_large_write(online):
    """1 MiB ending with "+++": however the emulator's reads split it, no escape (no
    silence before the "+++"), every byte to the server once."""
    host, advance, port, server = online
    blob = os.urandom(1 << 20) + b"+++"
    advance(1.1)
    threading.Thread(target=host.write, args=(blob,), daemon=True).start()
    got = host.read_exactly(len(blob) - 3, timeout=30)
    advance(1.1)
    got += host.read_exactly(3, timeout=10)
    assert got == blob
    assert host.quiet_for(0.05) == b""
    assert hashlib.sha256(received(server, len(blob), timeout=30)).digest() == hashlib.sha256(blob).digest()


def test_lone_plus_after_silence_is_released_in_order(online):
    host, advance, port, server = online
    advance(1.1)
    host.write(b"+")
    assert host.quiet_for(0.05) == b""        # held
    host.write(b"abc")
    assert host.read_exactly(4) == b"+abc"
    advance(1.1)
    host.write(b"++")
    advance(1.1)                              # two "+" and the guard time: data
    assert host.read_exactly(2) == b"++"
    assert received(server, 6) == b"+abc++"


def test_single_byte_writes_at_a_high_rate(online):
    """3000 one-byte writes (with "+" among them) on the modem's frozen clock: every byte
    reaches the server once, in order."""
    host, advance, port, server = online
    blob = bytes((i * 7 + (43 if i % 5 == 0 else 0)) & 0xFF for i in range(3000))
    blob = b"+" + blob                        # the very first after the guard time too
    advance(1.1)
    for b in blob:
        host.write(bytes([b]))
    got = host.read_exactly(len(blob), timeout=30)
    assert got == blob
    assert received(server, len(blob)) == blob


# -- the peer talking around the escape ---------------------------------------------------------
def test_peer_data_during_the_guard_time_after_plus_plus_plus(quiet_peer):
    """The server sends between "+++" and the end of its guard time: still online, so
    the bytes reach the host before the OK; what it sends after the OK waits for ATO.
    Each byte once."""
    host, advance, port, server = quiet_peer
    advance(1.1)
    host.write(b"+++")
    port_wait(host, advance)
    server.conn.send(b"during-guard")
    assert host.read_exactly(12) == b"during-guard"
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    server.conn.send(b"while-escaped")
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QSSLSTATE=4").endswith(b"\r\nOK\r\n")
    assert ato(host) == b"\r\nCONNECT\r\n"
    assert host.read_exactly(13) == b"while-escaped"
    assert host.quiet_for(0.2) == b""                    # nothing twice
    assert bytes(server.conn.received) == b""            # no "+" of the escape


def port_wait(host, advance) -> None:
    advance(0)          # only waits for the emulator to have read what the host wrote


def test_peer_data_while_escaped_interleaved_with_commands(quiet_peer):
    """Data keep coming while the host runs commands: none of it shows up inside the
    answers; ATO gives all of it, once, in order."""
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    sent = bytearray()
    for i in range(20):
        chunk = f"<{i:03d}>".encode() * 50
        server.conn.send(chunk)
        sent += chunk
        assert host.at("AT") == b"\r\nOK\r\n"
    time.sleep(0.2)
    assert host.quiet_for(0.1) == b""
    assert ato(host) == b"\r\nCONNECT\r\n"
    assert host.read_exactly(len(sent)) == bytes(sent)
    assert host.quiet_for(0.2) == b""


def test_peer_close_while_escaped_without_data(quiet_peer):
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.close()
    assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "closed",4\r\n'
    assert ato(host) == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_peer_data_then_close_while_escaped_then_qsslrecv_reads_each_byte_once(quiet_peer):
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    blob = os.urandom(5000)
    server.conn.send(blob)
    server.conn.close()
    assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
    got = bytearray()
    while True:
        answer = host.at("AT+QSSLRECV=4,1500")
        m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
        assert m, answer
        n = int(m.group(1))
        if n == 0:
            break
        got += answer[m.end():m.end() + n]
    assert bytes(got) == blob
    assert ato(host) == b"\r\nNO CARRIER\r\n"


def test_qsslclose_while_escaped(quiet_peer):
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.send(b"never read")
    time.sleep(0.1)
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    server.wait_done()
    assert ato(host) == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLSTATE=4") == b"\r\nOK\r\n"
    assert host.quiet_for(0.2) == b""                    # no late URC for the closed id


# -- ATO without a connection -----------------------------------------------------------------
def test_ato_never_online(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("ATO0") == b"\r\nNO CARRIER\r\n"
    assert host.at("ATO1") == b"\r\nERROR\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"


def test_ato_after_peer_close_online(quiet_peer):
    host, advance, port, server = quiet_peer
    server.conn.send(b"bye")
    server.conn.close()
    assert host.read_until(b"\r\nNO CARRIER\r\n") == b"bye\r\nNO CARRIER\r\n"
    assert ato(host) == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert ato(host) == b"\r\nNO CARRIER\r\n"


# -- AT+QISWTMD while data wait -------------------------------------------------------------------
def test_qiswtmd_to_buffer_and_back_with_data_waiting(quiet_peer):
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.send(b"A" * 100)
    time.sleep(0.2)
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    host.seen(b'+QSSLURC: "recv",4\r\n')
    assert host.at("AT+QSSLRECV=4,40") == b"\r\n+QSSLRECV: 40\r\n" + b"A" * 40 + b"\r\n\r\nOK\r\n"
    server.conn.send(b"B" * 10)
    time.sleep(0.2)
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(70) == b"A" * 60 + b"B" * 10
    assert host.quiet_for(0.2) == b""
    host.write(b"up")
    assert received(server, 2) == b"up"


def test_ato_after_qiswtmd_to_buffer_returns_to_transparent(quiet_peer):
    """The note, "Return to transparent access mode": "ATO will change the access mode of
    connection that exits transparent access mode lately" -- also after AT+QISWTMD gave it
    buffer mode: CONNECT, what still waits first, the socket in access mode 2 again."""
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.send(b"A" * 100)
    time.sleep(0.2)
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    host.seen(b'+QSSLURC: "recv",4\r\n')
    assert host.at("AT+QSSLRECV=4,40") == b"\r\n+QSSLRECV: 40\r\n" + b"A" * 40 + b"\r\n\r\nOK\r\n"
    assert b',2,1,4,0,"usbmodem",' in host.at("AT+QSSLSTATE=4")     # buffer access mode now
    assert ato(host) == b"\r\nCONNECT\r\n"
    assert host.read_exactly(60) == b"A" * 60
    host.write(b"up")
    assert received(server, 2) == b"up"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert b',2,1,4,2,"usbmodem",' in host.at("AT+QSSLSTATE=4")     # transparent again


def test_qiswtmd_to_push_while_escaped_pushes_what_waited(quiet_peer):
    host, advance, port, server = quiet_peer
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.send(b"waiting bytes")
    time.sleep(0.2)
    assert host.at("AT+QISWTMD=4,1") == b"\r\nOK\r\n"
    assert host.seen(b'+QSSLURC: "recv",4,13\r\nwaiting bytes\r\n') == b'+QSSLURC: "recv",4,13\r\nwaiting bytes\r\n'
    assert ato(host) == b"\r\nCONNECT\r\n"                 # (ATO changes its access mode back)
    server.conn.send(b"online again")
    assert host.read_exactly(12) == b"online again"


def test_qiswtmd_to_transparent_on_wrong_or_missing_socket(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at("AT+QISWTMD=4,2") == b"\r\nERROR\r\n"
    assert host.at("AT+QISWTMD=12,2") == b"\r\nERROR\r\n"
    assert host.at("AT+QISWTMD=4,3") == b"\r\nERROR\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"


# -- DTR and the pty going away ---------------------------------------------------------------
# Was a bug, fixed: a '+' held back by the escape detector (it may begin '+++') was dropped
# when a DTR drop with AT&D1 left online mode (Interpreter._abandon dropped the detector
# with what it held): the server got b'data', not b'data+'.
def test_dtr_drop_with_a_plus_held_back_sends_it(emulator, online):
    """A "+" after the guard time is held (it may begin "+++"); a DTR drop (AT&D1) then
    leaves online mode. The "+" was not an escape: it is data and must reach the server."""
    host, advance, port, server = online
    escape(host, advance)
    assert host.at("AT&D1") == b"\r\nOK\r\n"
    assert ato(host) == b"\r\nCONNECT\r\n"
    host.write(b"data")
    assert host.read_exactly(4) == b"data"
    advance(1.1)
    host.write(b"+")
    advance(0)
    emulator.run(port.modem.set_dtr, 0)
    emulator.run(port.modem.set_dtr, 1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert received(server, 5, timeout=2) == b"data+"


# Was a bug, fixed: the same '+' was dropped when the host closed the pty online.
def test_host_closes_the_pty_with_a_plus_held_back(emulator, online):
    """The host writes "+" (after the guard time: held) and closes the device. It never
    completed an escape: the byte is data and must reach the server."""
    host, advance, port, server = online
    host.write(b"data")
    assert host.read_exactly(4) == b"data"
    advance(1.1)
    host.write(b"+")
    advance(0)
    host.close()
    time.sleep(0.3)
    assert received(server, 4) == b"data+"


def test_pty_closed_and_reopened_online(emulator, quiet_peer):
    """The host closes the device online; the server sends meanwhile; a new host comes back
    with ATO and gets those bytes once, then the link works both ways."""
    host, advance, port, server = quiet_peer
    host.write(b"first host")
    total = host.written
    server.wait_received(10)
    host.close()
    time.sleep(0.3)
    server.conn.send(b"while nobody listened")
    time.sleep(0.2)
    again = Host(port.path)
    try:
        time.sleep(0.1)
        assert again.at("AT") == b"\r\nOK\r\n"
        again.write(b"ATO\r")
        assert again.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
        assert again.read_exactly(21) == b"while nobody listened"
        again.write(b"+second")
        assert received(server, 17) == b"first host+second"
        server.conn.send(b"more")
        assert again.read_exactly(4) == b"more"
        assert again.quiet_for(0.1) == b""
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        again.write(b"+++")
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        assert again.read_until(FINAL) == b"\r\nOK\r\n"
    finally:
        again.close()


# -- big flows -----------------------------------------------------------------------------------
def test_host_stops_reading_while_the_server_streams(emulator, ec2x_strict):
    """The server pushes 6 MiB while the host reads nothing for a while, then reads in odd
    chunks: every byte once, in order."""
    host, advance, port = ec2x_strict
    blob = os.urandom(6 << 20)

    def pusher(conn):
        conn.sendall(blob)
        conn.recv(1, timeout=60)            # keep the connection until the host is done
    with TlsServer(handler=pusher, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        time.sleep(1.0)                     # the host reads nothing
        got = host.read_exactly(len(blob), timeout=40)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        host.write(b"x")


def test_both_ways_at_once_with_escape_and_ato_in_between(online):
    """4 MiB echoed while the host writes and reads concurrently; then an escape, ATO,
    and another 1 MiB: the SHA-256 of everything matches on both ends."""
    host, advance, port, server = online
    a = os.urandom(4 << 20)
    got = pump(host, a)
    assert got == a
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert ato(host) == b"\r\nCONNECT\r\n"
    b = os.urandom(1 << 20)
    assert pump(host, b) == b
    assert hashlib.sha256(received(server, len(a) + len(b), timeout=30)).digest() == \
        hashlib.sha256(a + b).digest()


def pump(host, blob: bytes, timeout: float = 60) -> bytes:
    got = bytearray()
    view = memoryview(blob)
    sent = 0
    deadline = time.monotonic() + timeout
    old = host.ser.write_timeout
    host.ser.write_timeout = 0
    try:
        while len(got) < len(blob):
            assert time.monotonic() < deadline, f"stalled at {sent} sent, {len(got)} read"
            if sent < len(blob):
                try:
                    sent += host.ser.write(view[sent:sent + 32768]) or 0
                except Exception:
                    pass
            got += host.ser.read(min(host.ser.in_waiting or 1, 6007))
    finally:
        host.ser.write_timeout = old
    host.written += len(blob)
    return bytes(got)


# -- the TCP/IP side shares the machinery --------------------------------------------------------
def test_qiopen_transparent_escape_split_and_peer_data_while_escaped(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): these
    # tests are about other things than the module's packet wait, and run on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        host.write(b"hello+++")
        advance(1.1)
        host.write(b"++")
        advance(0.2)
        host.write(b"+")
        advance(1.1)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        conn.send(b"queued")
        time.sleep(0.2)
        assert host.quiet_for(0.05) == b""
        assert ato(host) == b"\r\nCONNECT\r\n"
        assert host.read_exactly(6) == b"queued"
        host.write(b"!")
        assert conn.wait_received(9) == b"hello+++!"
        time.sleep(0.05)
        assert bytes(conn.received) == b"hello+++!"


def test_qiswtmd_cannot_make_a_listener_transparent(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    from tests.e2e.socket_support import free_port
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
    host.write(b"AT+QISWTMD=3,2\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"


def test_peer_gone_while_the_pty_input_is_paused_by_flow_control(emulator, ec2x_strict):
    """The server reads nothing; the host writes until the emulator stops reading the pty
    (the connection is full); then the server goes away. NO CARRIER, and the port must
    read the host again: the rest of what it wrote (no line end: one junk line), then AT."""
    host, advance, port = ec2x_strict
    release = threading.Event()

    def stuck(conn):
        release.wait(60)                  # returns: the server closes with unread data (RST)
    with TlsServer(handler=stuck, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        blob = b"x" * (12 << 20)
        writer = threading.Thread(target=host.ser.write, args=(blob,), daemon=True)
        writer.start()
        deadline = time.monotonic() + 30
        while emulator.run(lambda: port.port.reading):
            assert time.monotonic() < deadline, "the emulator never paused the pty"
            time.sleep(0.02)
        release.set()
        assert host.read_until(FINAL, timeout=15) == b"\r\nNO CARRIER\r\n"
        writer.join(20)
        assert not writer.is_alive(), "the pty stays paused after NO CARRIER: the host is stuck"
        host.write(b"\r")
        host.quiet_for(0.3)
        assert host.at("AT") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_megabytes_sent_while_escaped_come_once_after_ato(emulator, ec2x_strict):
    """The server pushes 3 MiB while the host is in command mode (the socket's inbox fills,
    TCP reading pauses); commands keep working; ATO gives CONNECT then exactly those bytes."""
    host, advance, port = ec2x_strict
    blob = os.urandom(3 << 20)
    go = threading.Event()

    def pusher(conn):
        go.wait(30)
        conn.sendall(blob)
        conn.recv(1, timeout=60)
    with TlsServer(handler=pusher, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        assert escape(host, advance) == b"\r\nOK\r\n"
        go.set()
        time.sleep(0.5)
        assert host.at("AT+QSSLSTATE=4").endswith(b",2,\"usbmodem\",1\r\n\r\nOK\r\n")
        assert host.quiet_for(0.1) == b""
        assert ato(host) == b"\r\nCONNECT\r\n"
        got = host.read_exactly(len(blob), timeout=30)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
        assert host.quiet_for(0.1) == b""
