"""Adversarial tests of EC2x transparent access mode, round 7: angles the earlier rounds
(test_transparent.py, test_adversarial_transparent_3/4/5/6/_escape/_drivers.py,
test_stateful_access_modes.py) leave out.

* "++++" after a silence (four "+" in one write, or "+++" then a fourth within the guard
  time after): data, never an escape, and no OK; a later proper escape still works.
* A DTR drop under AT&D0 in the middle of a started escape ("++" held, drop, "+"): ignored,
  so it neither releases the held "+" nor breaks the pattern -- the escape completes (OK).
* A socket opened in buffer mode (never online): ATO is NO CARRIER and leaves its unread
  data; AT+QSSLRECV part of it, AT+QISWTMD=<id>,2 gives exactly the rest after CONNECT; it
  is then ATO's connection; NO CARRIER at its peer's close after the bytes.
* A buffer-mode socket's "recv"/"closed" URCs raised while another socket is online, during
  the guard time after a "+++" that a later byte turns into data: never in the stream, one
  "recv" and one "closed" after the real escape's OK; its bytes read once.
* AT&D2 DTR drop while the host has not read a backlog of the peer's bytes: a contiguous
  prefix of them, NO CARRIER, nothing after; the id freed; ATO NO CARRIER.
* A peer that sends a megabyte and closes while the host is not reading: the host, reading
  late in odd chunks, gets exactly the megabyte, then NO CARRIER.
* A socket escaped, switched to buffer mode with AT+QISWTMD, whose peer then sends and
  closes: ATO is NO CARRIER (closed since) and the bytes stay readable once.

* A TCP INCOMING connection (accepted by a TCP LISTENER) switched to transparent with
  AT+QISWTMD: its waiting bytes after CONNECT, a second client's "incoming" URC held for the
  escape's OK, ATO, NO CARRIER at the client's close.
* A direct-push socket's data and close while another socket is online: after the OK, the
  pushes (every byte once) then "closed"; S12 set on the ATO line itself; a "recv" raised
  while a (slow) transparent open is pending waits for the escape, not behind CONNECT.
* A shaped link (control `net`, wall clock): both ways at once, host reading in odd chunks,
  escape, data parked, ATO, peer close.
* Bytes written a few ms before a DTR drop (AT&D1 / AT&D2) reach the server first.  (Limit,
  not asserted: a drop made within ~1 ms of the write can overtake the bytes inside the
  kernel's pty, which hands them to the master side asynchronously; they then arrive in
  command state, where the lexer drops them as junk before the next "AT".)
* ML302 connectmode 1: another ssid's URCs held while online, AT+QSSLSEND on the parked ssid,
  -2 for an ssid in use, ATO to the last one online, a peer close inside the guard time,
  AT&D2 freeing the ssid.

Bugs found here, fixed (Interpreter.settle_overdue_escape, called by the hang-up, a DTR drop
and OnlineDelivery's data_arrived / peer_closed), one root: an escape whose guard time after "+++" ran out while the
loop was busy (its timer not yet run) loses to events handled before that timer -- the
interpreter checks _escape_overdue() only when host bytes are read (_feed_online):
* the host closing the port: Interpreter._hangup -> _release_held sends the "+++" to the
  server as data;
* the peer's data and/or close arriving after the escape completed: written online before
  the OK / NO CARRIER instead of OK and then ATO's data / the "recv"/"closed" URCs.
behaviour.md ("Transparent access mode") takes a read after the deadline as after the escape
"even when the emulator was too busy to act at the deadline itself", and makes held "+" data
only "when online mode ends before the guard time has told".

Exact bytes both ways; guard times on the modem's manual clock (ec2x_strict's advance) except
where a test says wall clock (the `realtime` fixture: S12=5, 100 ms)."""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import free_port
from tests.e2e.test_adversarial_transparent_3 import HOST_B, PORT_B, alive, received, sink, wait_unread  # noqa: F401
from tests.e2e.test_adversarial_transparent_drivers import realtime  # noqa: F401
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, PORT,  # noqa: F401
                                                          ato, connect, escape)

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"
NO_CARRIER = b"\r\nNO CARRIER\r\n"


def open_buffer(host, client_id: int = 5, addr: str = HOST_B, port: int = PORT_B) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{addr}",{port},0') == OK
    assert host.read_until(f"+QSSLOPEN: {client_id},0\r\n".encode()) == f"\r\n+QSSLOPEN: {client_id},0\r\n".encode()


def qsslrecv_all(host, client_id: int, size: int = 1500) -> bytes:
    got = b""
    while True:
        host.write(f"AT+QSSLRECV={client_id},{size}\r")
        head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n|\r\nERROR\r\n"))
        assert b"ERROR" not in head, head
        n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
        if n == 0:
            assert host.read_until(OK) == OK
            return got
        got += host.read_exactly(n)
        assert host.read_until(OK) == b"\r\n" + OK


def no_plus(n: int) -> bytes:
    return os.urandom(n).replace(b"+", b"*")


# -- "++++" -------------------------------------------------------------------------------------
def test_four_plus_in_one_write_after_silence_are_data(sink):
    host, advance, _, server = sink
    advance(1.2)
    host.write(b"++++")
    advance(1.2)
    assert received(server, 4, timeout=5) == b"++++"
    assert host.quiet_for(0.3) == b""
    advance(2.0)
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == OK
    assert bytes(server.conn.received) == b"++++"
    alive(host)


def test_a_fourth_plus_within_the_guard_time_after_makes_all_four_data(sink):
    host, advance, _, server = sink
    advance(1.2)
    host.write(b"+++")
    advance(0.5)
    time.sleep(0.1)
    host.write(b"+")
    advance(1.2)
    assert received(server, 4, timeout=5) == b"++++"
    advance(1.5)
    assert host.quiet_for(0.3) == b""
    host.write(b"end")
    assert received(server, 7) == b"++++end"
    assert escape(host, advance) == OK
    assert bytes(server.conn.received) == b"++++end"


# -- DTR under AT&D0 -----------------------------------------------------------------------------
def test_dtr_drop_under_andd0_leaves_a_started_escape_alone(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("AT&D0") == OK
    assert ato(host) == CONNECT
    host.write(b"payload")
    assert received(server, 7) == b"payload"
    advance(1.2)
    host.write(b"++")
    advance(0.2)
    time.sleep(0.1)
    assert emulator.control("dtr", level=0) == {"ok": True}
    time.sleep(0.1)
    assert emulator.control("dtr", level=1) == {"ok": True}
    time.sleep(0.1)
    assert host.quiet_for(0.1) == b""
    host.write(b"+")
    advance(1.2)
    assert host.read_until(FINAL) == OK
    time.sleep(0.2)
    assert bytes(server.conn.received) == b"payload"
    state = host.at("AT+QSSLSTATE=4")
    assert b',"SSLClient",' in state and b",2," in state, state


# -- a socket opened in buffer mode ---------------------------------------------------------------
def test_ato_with_only_a_buffer_socket_is_no_carrier_and_keeps_its_data(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        open_buffer(host)
        b.wait_handshake()
        blob = os.urandom(2500)
        b.conn.send(blob)
        assert host.read_until(b'"recv",5\r\n') == b'\r\n+QSSLURC: "recv",5\r\n'
        assert host.at("ATO") == NO_CARRIER
        assert host.at("ATO0") == NO_CARRIER
        state = host.at("AT+QSSLSTATE=5")
        assert re.search(rb'\+QSSLSTATE: 5,"SSLClient","220\.180\.239\.213",8012,\d+,2,1,5,0,', state), state
        assert qsslrecv_all(host, 5) == blob
        assert host.quiet_for(0.1) == b""


def test_buffer_opened_socket_partly_read_then_transparent_then_ato_and_no_carrier(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        open_buffer(host)
        b.wait_handshake()
        first = no_plus(3000)
        b.conn.send(first)
        assert host.read_until(b'"recv",5\r\n') == b'\r\n+QSSLURC: "recv",5\r\n'
        wait_unread(emulator, 5, len(first))
        host.write(b"AT+QSSLRECV=5,100\r")
        assert host.read_until(b"+QSSLRECV: 100\r\n").endswith(b"+QSSLRECV: 100\r\n")
        assert host.read_exactly(100) == first[:100]
        assert host.read_until(OK) == b"\r\n" + OK
        host.write(b"AT+QISWTMD=5,2\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        assert host.read_exactly(len(first) - 100) == first[100:]
        host.write(b"up-1")
        assert received(b, 4) == b"up-1"
        assert escape(host, advance) == OK
        second = no_plus(700)
        b.conn.send(second)
        wait_unread(emulator, 5, len(second))
        assert host.quiet_for(0.1) == b""
        assert ato(host) == CONNECT
        assert host.read_exactly(len(second)) == second
        third = no_plus(900)
        b.conn.send(third)
        time.sleep(0.1)
        b.conn.close()
        assert host.read_until(FINAL) == third + NO_CARRIER
        state = host.at("AT+QSSLSTATE=5")
        assert re.search(rb',\d+,4,1,5,2,"usbmodem",', state), state     # closing, access mode 2
        assert host.at("ATO") == NO_CARRIER
        assert host.at("AT+QSSLCLOSE=5") == OK
        assert received(b, 4) == b"up-1"


# -- another socket's URCs around a failed and a real escape ------------------------------------------
def test_buffer_socket_urcs_during_a_spoilt_escape_wait_for_the_real_ones_ok(emulator, sink):
    host, advance, _, a = sink
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        assert escape(host, advance) == OK
        open_buffer(host)
        b.wait_handshake()
        assert ato(host) == CONNECT
        advance(1.2)
        host.write(b"+++")
        advance(0.5)                     # inside the guard time after "+++"
        first = os.urandom(500)
        b.conn.send(first)
        wait_unread(emulator, 5, 500)
        host.write(b"x")                 # spoils it: "+++x" is data
        assert received(a, 4) == b"+++x"
        advance(1.5)
        assert host.quiet_for(0.2) == b""   # nothing of B's URC inside the online stream
        a.conn.send(b"from-A")
        assert host.read_exactly(6) == b"from-A"
        second = os.urandom(800)
        b.conn.send(second)
        wait_unread(emulator, 5, 1300)
        b.conn.close()
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        got = escape(host, advance)
        assert got == OK, got
        tail = host.read_until(b'"closed",5\r\n')
        assert tail == b'\r\n+QSSLURC: "recv",5\r\n\r\n+QSSLURC: "closed",5\r\n', tail
        assert host.quiet_for(0.1) == b""
        assert qsslrecv_all(host, 5) == first + second
        assert bytes(a.conn.received) == b"+++x"
        assert ato(host) == CONNECT
        host.write(b"again")
        assert received(a, 9) == b"+++xagain"


# -- DTR AT&D2 with a backlog towards the host ---------------------------------------------------
def test_andd2_drop_with_an_unread_backlog_gives_a_prefix_then_no_carrier(emulator, sink):
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("AT&D2") == OK
    assert ato(host) == CONNECT
    blob = no_plus(400_000)
    server.conn.send(blob)
    time.sleep(1.0)                      # the host does not read; the emulator holds the network
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert emulator.control("dtr", level=1) == {"ok": True}
    got = host.read_until(NO_CARRIER, timeout=15)
    data = got[:-len(NO_CARRIER)]
    assert data == blob[:len(data)]
    assert host.quiet_for(0.5) == b""
    assert host.at("ATO") == NO_CARRIER
    assert host.at("AT+QSSLSTATE=4") == OK
    alive(host)


# -- a megabyte then the peer's close while the host is not reading ----------------------------------
def test_megabyte_then_close_while_the_host_reads_late_in_odd_chunks(emulator, sink):
    host, advance, _, server = sink
    blob = no_plus(1_000_000)
    server.conn.send(blob)
    time.sleep(0.3)
    server.conn.close()
    time.sleep(1.0)
    got = bytearray()
    sizes = [1, 7, 4093, 65537, 13, 100_003]
    i = 0
    deadline = time.monotonic() + 15
    while len(got) < len(blob):
        assert time.monotonic() < deadline, len(got)
        n = min(sizes[i % len(sizes)], len(blob) - len(got))
        got += host.read_exactly(n, timeout=10)
        i += 1
    assert bytes(got) == blob
    assert host.read_until(FINAL) == NO_CARRIER
    assert host.quiet_for(0.2) == b""
    assert host.at("ATO") == NO_CARRIER


# -- escaped, switched to buffer mode, then the peer sends and closes ----------------------------------
def test_escaped_switched_to_buffer_then_peer_closes_ato_is_no_carrier(emulator, sink):
    host, advance, _, server = sink
    host.write(b"hello")
    assert received(server, 5) == b"hello"
    assert escape(host, advance) == OK
    assert host.at("AT+QISWTMD=4,0") == OK
    blob = os.urandom(1800)
    server.conn.send(blob)
    assert host.read_until(b'"recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
    wait_unread(emulator, 4, len(blob))
    server.conn.close()
    assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "closed",4\r\n'
    assert host.at("ATO") == NO_CARRIER
    assert host.at("AT+QISWTMD=4,2") == b"\r\nERROR\r\n"
    assert qsslrecv_all(host, 4) == blob
    assert host.at("AT+QSSLCLOSE=4") == OK


# -- a TCP INCOMING connection (accepted by a TCP LISTENER) made transparent ---------------------------
def test_incoming_connection_switched_to_transparent_and_back(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",0') == OK
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,11,"TCP LISTENER","127.0.0.1",0,{lport},0') == OK
    assert host.read_until(b"+QIOPEN: 11,0\r\n").endswith(b"+QIOPEN: 11,0\r\n")
    client = socket.create_connection(("127.0.0.1", lport), timeout=5)
    try:
        urc = host.read_until(re.compile(rb'"incoming",(\d+),11,"127\.0\.0\.1",\d+\r\n'))
        inc = int(re.search(rb'"incoming",(\d+)', urc).group(1))
        client.sendall(b"waiting-1")
        assert host.read_until(f'"recv",{inc}\r\n'.encode()) == f'\r\n+QIURC: "recv",{inc}\r\n'.encode()
        time.sleep(0.1)
        host.write(f"AT+QISWTMD={inc},2\r")
        got = host.read_until(CONNECT_OR_ERROR)
        assert got == CONNECT, got
        assert host.read_exactly(9) == b"waiting-1"
        host.write(b"to-client")
        buf = b""
        while len(buf) < 9:
            buf += client.recv(100)
        assert buf == b"to-client"
        # a second client while online: its "incoming" URC waits for the escape's OK
        second = socket.create_connection(("127.0.0.1", lport), timeout=5)
        try:
            time.sleep(0.3)
            assert host.quiet_for(0.1) == b""
            client.sendall(b"online-2")
            assert host.read_exactly(8) == b"online-2"
            got = escape(host, advance)
            assert got == OK, got
            urc2 = host.read_until(re.compile(rb'"incoming",(\d+),11,"127\.0\.0\.1",\d+\r\n'))
            assert urc2.startswith(b'\r\n+QIURC: "incoming",'), urc2
            client.sendall(b"parked-3")
            time.sleep(0.3)
            assert host.quiet_for(0.1) == b""
            assert ato(host) == CONNECT
            assert host.read_exactly(8) == b"parked-3"
            client.close()
            assert host.read_until(FINAL) == NO_CARRIER
            assert host.at("ATO") == NO_CARRIER
            assert host.at(f"AT+QICLOSE={inc}") == OK
        finally:
            second.close()
    finally:
        client.close()


# -- a direct-push socket's data while another socket is online ---------------------------------------
def test_push_socket_data_and_close_while_another_is_online_come_after_ok(emulator, sink):
    host, advance, _, a = sink
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        assert escape(host, advance) == OK
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},1') == OK
        assert host.read_until(b"+QSSLOPEN: 5,0\r\n") == b"\r\n+QSSLOPEN: 5,0\r\n"
        b.wait_handshake()
        assert ato(host) == CONNECT
        first, second = no_plus(1000), no_plus(2200)
        b.conn.send(first)
        time.sleep(0.2)
        b.conn.send(second)
        time.sleep(0.2)
        b.conn.close()
        time.sleep(0.3)
        a.conn.send(b"A-online")
        assert host.read_exactly(8) == b"A-online"
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK
        out = host.read_until(b'"closed",5\r\n')
        pushed = b""
        for m in re.finditer(rb'\r\n\+QSSLURC: "recv",5,(\d+)\r\n', out):
            n = int(m.group(1))
            pushed += out[m.end():m.end() + n]
        assert pushed == first + second, (len(pushed), out[:200])
        assert out.endswith(b'\r\n+QSSLURC: "closed",5\r\n')
        assert host.quiet_for(0.1) == b""
        assert bytes(a.conn.received) == b""
        assert ato(host) == CONNECT
        host.write(b"back")
        assert received(a, 4) == b"back"


# -- S12 set on the ATO line itself ---------------------------------------------------------------------
def test_s12_set_on_the_ato_line_rules_that_session(sink):
    host, advance, _, server = sink
    assert escape(host, advance) == OK
    host.write(b"ATS12=5O\r")                        # 100 ms guard times from this CONNECT on
    assert host.read_until(CONNECT_OR_ERROR) == CONNECT
    advance(0.15)
    host.write(b"+++")
    advance(0.15)
    assert host.read_until(FINAL) == OK
    assert host.at("ATS12?") == b"\r\n005\r\n\r\nOK\r\n"
    assert bytes(server.conn.received) == b""


# -- ML302: a second ssid's URCs and AT+QSSLSEND around a parked transparent ssid ------------------------
def test_ml302_other_ssid_urcs_wait_and_qsslsend_on_the_parked_ssid(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as a, TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        assert host.at(f'AT+QSSLOPEN=1,0,"{HOST_B}",{PORT_B},0') == OK
        assert host.read_until(b"+QSSLOPEN: 1,0\r\n") == b"\r\n+QSSLOPEN: 1,0\r\n"
        b.wait_handshake()
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        a.wait_handshake()
        host.write(b"one;")
        assert received(a, 4) == b"one;"
        blob = b"ssid-1 data\r\n+QSSLURC: fake\r\n"
        b.conn.send(blob)
        time.sleep(0.2)
        b.conn.close()
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        assert escape(host, advance) == OK
        assert host.read_until(b'"close",1\r\n') == b'\r\n+QSSLURC: "recv",1,1\r\n\r\n+QSSLURC: "close",1\r\n'
        host.write(b"AT+QSSLSEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"two;\x1a")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
        assert received(a, 8) == b"one;two;"
        assert ato(host) == CONNECT
        host.write(b"three")
        assert received(a, 13) == b"one;two;three"
        assert escape(host, advance) == OK
        got = host.at("AT+QSSLRECV=1,1,1500")
        assert got == f"\r\n+QSSLRECV: {HOST_B}:{PORT_B},TCP,{len(blob)}\r\n".encode() + blob + b"\r\n\r\nOK\r\n", got
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"
        assert host.at("ATO") == NO_CARRIER


def test_ml302_andd2_dtr_drop_frees_the_ssid_and_it_opens_again(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    assert host.at("AT&D2") == OK
    with TlsServer(mode="echo", legacy=True) as a:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        a.wait_handshake()
        host.write(b"ping")
        assert host.read_exactly(4) == b"ping"
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert emulator.control("dtr", level=1) == {"ok": True}
        assert host.read_until(FINAL) == NO_CARRIER
        a.wait_done(timeout=5)
        assert host.at("ATO") == NO_CARRIER
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        a.wait_handshake()
        host.write(b"pong")
        assert host.read_exactly(4) == b"pong"
        assert escape(host, advance) == OK
        assert host.at("AT+QSSLCLOSE=0") == OK



# -- a shaped link (control `net`), both ways at once, an escape in the middle, the peer's close --------
def _text(n: int, seed: int) -> bytes:
    import random
    rnd = random.Random(seed)
    alphabet = bytes(b for b in range(32, 127) if b != 0x2B)        # no "+", no CR / LF
    return bytes(rnd.choice(alphabet) for _ in range(n))


def test_shaped_link_both_ways_escape_ato_then_peer_close(emulator, realtime):
    host, port = realtime
    assert emulator.control("net", latency_ms=30, kbps=6000) == {"ok": True}
    up, down = _text(150_000, 1), _text(250_000, 2)
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()

        def writer(data: bytes) -> None:
            for at in range(0, len(data), 4093):
                host.write(data[at:at + 4093])

        t = threading.Thread(target=writer, args=(up[:100_000],))
        t.start()
        server.conn.send(down[:150_000])
        got = bytearray()
        sizes = [1, 999, 7, 16384, 3, 40_000]
        i = 0
        while len(got) < 150_000:
            got += host.read_exactly(min(sizes[i % 6], 150_000 - len(got)), timeout=15)
            i += 1
        t.join(15)
        assert bytes(got) == down[:150_000]
        server.wait_received(100_000, timeout=15)
        time.sleep(0.3)                   # S12=5: 100 ms guard times, wall clock
        host.write(b"+++")
        time.sleep(0.3)
        server.conn.send(down[150_000:])  # arrives while escaped: waits for ATO
        assert host.read_until(FINAL, timeout=10) == OK
        time.sleep(0.5)
        assert host.quiet_for(0.1) == b""
        assert bytes(server.conn.received) == up[:100_000]
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        t = threading.Thread(target=writer, args=(up[100_000:],))
        t.start()
        rest = host.read_exactly(100_000, timeout=15)
        assert rest == down[150_000:]
        t.join(15)
        server.wait_received(len(up), timeout=15)
        time.sleep(0.2)
        assert bytes(server.conn.received) == up
        server.conn.close()
        assert host.read_until(FINAL, timeout=10) == NO_CARRIER
        assert host.at("AT+QSSLCLOSE=4") == OK
    assert emulator.control("net", latency_ms=0, kbps=0) == {"ok": True}


# -- another socket's "recv" raised while a transparent open is pending ------------------------------------
def test_recv_urc_raised_during_a_pending_transparent_open_waits_for_the_escape(emulator, ec2x_strict):
    """Socket 5 in buffer mode; AT+QSSLOPEN of socket 4 in mode 2 with its answer held 2 s
    (`slow`); 5's server sends meanwhile: its "recv" must not be written between CONNECT and
    4's bytes, nor inside the online stream -- right after the escape's OK."""
    host, advance, _ = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as a, TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        open_buffer(host)
        b.wait_handshake()
        assert emulator.control("slow", command="+QSSLOPEN", ms=2000) == {"ok": True}
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2\r')
        conn = a.wait_handshake()
        b.conn.send(b"for-five")
        wait_unread(emulator, 5, 8)
        conn.send(b"a-early")
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        advance(2.1)
        assert host.read_until(CONNECT_OR_ERROR) == CONNECT
        assert host.read_exactly(7) == b"a-early"
        conn.send(b"a-online")
        assert host.read_exactly(8) == b"a-online"
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK
        assert host.read_until(b'"recv",5\r\n') == b'\r\n+QSSLURC: "recv",5\r\n'
        assert host.at("AT+QSSLRECV=5,100") == b"\r\n+QSSLRECV: 8\r\nfor-five\r\n\r\nOK\r\n"


# -- bytes written just before a DTR drop --------------------------------------------------------------
@pytest.mark.parametrize("andd", [1, 2])
def test_bytes_written_before_a_dtr_drop_go_into_the_connection_first(emulator, sink, andd):
    """The host writes, then drops DTR a few milliseconds later: AT&D1 -- the bytes reach the
    server, then OK (ATO goes on); AT&D2 -- the bytes, then the close (NO CARRIER).
    (A drop right after the write: the test below.)"""
    host, advance, _, server = sink
    assert escape(host, advance) == OK
    assert host.at(f"AT&D{andd}") == OK
    sent = b""
    for i in range(8 if andd == 1 else 1):
        assert ato(host) == CONNECT
        msg = b"<%d:%s>" % (i, b"x" * (i * 37))
        host.write(msg)
        sent += msg
        time.sleep(0.005)
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert emulator.control("dtr", level=1) == {"ok": True}
        assert host.read_until(FINAL) == (OK if andd == 1 else NO_CARRIER)
        assert received(server, len(sent)) == sent
    if andd == 2:
        server.wait_done(timeout=12)
        assert bytes(server.conn.received) == sent
        assert host.at("ATO") == NO_CARRIER
    alive(host)


# Was a limit, fixed: a drop made right after the write could overtake the bytes inside the kernel's pty
# (3-5 of 30 rounds lost them); Modem.set_dtr now reads the pty first (PtyPort.read_now).
def test_bytes_written_right_before_a_dtr_drop_are_not_overtaken(emulator, sink):
    """AT&D1: the host's write and its DTR drop in one step of the emulator's loop (the write
    made on the loop thread, the drop right behind it: the loop's poll cannot read the pty in
    between) -- the bytes reach the server before the OK, none is taken as a command."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at("AT&D1") == OK
    sent = b""
    for i in range(5):
        assert ato(host) == CONNECT
        msg = b"<%d:%s>" % (i, b"y" * (i * 23))
        sent += msg

        def write_then_drop(msg=msg):
            os.write(host.ser.fileno(), msg)
            port.modem.set_dtr(0)
            port.modem.set_dtr(1)
        emulator.run(write_then_drop)
        assert host.read_until(FINAL) == OK
        assert received(server, len(sent)) == sent
    alive(host)


# -- ML302: the escape's guard time ended by the peer, and a parked ssid no ATO reaches ---------------------
def test_ml302_peer_close_inside_the_guard_time_after_plus_plus_plus(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as a:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        a.wait_handshake()
        host.write(b"data")
        assert received(a, 4) == b"data"
        advance(1.2)
        host.write(b"+++")
        advance(0.4)
        a.conn.send(b"last words")
        time.sleep(0.1)
        a.conn.close()
        assert host.read_until(FINAL) == b"last words" + NO_CARRIER
        advance(2)
        assert host.quiet_for(0.2) == b""
        a.wait_done(timeout=5)
        assert bytes(a.conn.received) == b"data"
        state = host.at("AT+QSSLSTATE")
        assert b'+QSSLSTATE: 0,"TCP","%s",%d,"REMOTE CLOSING",1' % (HOST.encode(), PORT) in state, state
        assert host.at("ATO") == NO_CARRIER
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"


def test_ml302_two_transparent_ssids_ato_goes_to_the_last(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as a, TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        a.wait_handshake()
        host.write(b"A1")
        assert escape(host, advance) == OK
        host.write(f'AT+QSSLOPEN=0,0,"{HOST_B}",{PORT_B},1\r')       # ssid 0 in use
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\n+QSSLOPEN: 0,-2\r\n\r\nERROR\r\n"
        assert ato(host) == CONNECT                                    # still ssid 0
        host.write(b"A2")
        assert received(a, 4) == b"A1A2"
        assert escape(host, advance) == OK
        connect(host, f'AT+QSSLOPEN=3,0,"{HOST_B}",{PORT_B},1')
        b.wait_handshake()
        a.conn.send(b"to-zero")                                        # waits in parked ssid 0
        host.write(b"B1")
        assert received(b, 2) == b"B1"
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK
        assert ato(host) == CONNECT                                    # ssid 3: the last online
        b.conn.send(b"to-three")
        assert host.read_exactly(8) == b"to-three"
        assert escape(host, advance) == OK
        assert bytes(a.conn.received) == b"A1A2"
        a.conn.close()                                                 # parked ssid 0 falls back
        assert host.read_until(b'"close",0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n\r\n+QSSLURC: "close",0\r\n'
        assert host.at("AT+QSSLRECV=1,0,100") == \
            f"\r\n+QSSLRECV: {HOST}:{PORT},TCP,7\r\n".encode() + b"to-zero\r\n\r\nOK\r\n"
        assert ato(host) == CONNECT
        host.write(b"B2")
        assert received(b, 4) == b"B1B2"


# -- an escape whose guard time ran out while the loop was busy, then the host's close / the peer's close ----
def _escape_then_busy_loop(emulator, host, port, server) -> threading.Thread:
    """Online with S12=5 (100 ms, wall clock): "data", 300 ms of silence, "+++" (read by the
    emulator), then the loop is kept busy 500 ms (emulator.run(time.sleep)): the guard time
    after "+++" passes 100 ms into it.  Returns the busy thread."""
    connect(host)
    server.wait_handshake()
    host.write(b"data")
    server.wait_received(4)
    time.sleep(0.3)
    host.write(b"+++")
    emulator.wait_received(port, host.written)       # held by the escape detector now
    busy = threading.Thread(target=emulator.run, args=(time.sleep, 0.5))
    busy.start()
    time.sleep(0.25)                                 # the escape is complete (100 ms ago)
    return busy


# Was a bug, fixed: Interpreter.settle_overdue_escape (see the module docstring).
def test_host_close_after_a_complete_escape_on_a_busy_loop_sends_no_plus(emulator, realtime):
    from emulator.testing.host import Host
    host, port = realtime
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        busy = _escape_then_busy_loop(emulator, host, port, server)
        host.close()                                  # 150 ms after the escape completed
        busy.join()
        time.sleep(0.5)
        again = Host(port.path)
        try:
            time.sleep(0.2)
            assert again.at("ATO") == CONNECT          # the connection stayed (either way)
            again.write(b"!")
            server.wait_received(5, timeout=5)
            time.sleep(0.1)
            assert bytes(server.conn.received) == b"data!"      # actual: b"data+++!"
        finally:
            again.close()


# Was a bug, fixed: Interpreter.settle_overdue_escape (see the module docstring).
@pytest.mark.parametrize("data", [b"", b"late"], ids=["close", "data_then_close"])
def test_peer_close_after_a_complete_escape_on_a_busy_loop_is_after_the_ok(emulator, realtime, data):
    host, port = realtime
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        busy = _escape_then_busy_loop(emulator, host, port, server)
        if data:
            server.conn.send(data)
            time.sleep(0.02)
        server.conn.close()                           # 150 ms after the escape completed
        busy.join()
        expect = OK + (b'\r\n+QSSLURC: "recv",4\r\n' if data else b"") + b'\r\n+QSSLURC: "closed",4\r\n'
        got = host.read_until(re.compile(rb'"closed",4\r\n|NO CARRIER\r\n'), timeout=5)
        assert got == expect, got                     # actual: data + NO CARRIER
        assert bytes(server.conn.received) == b"data"


# Was a bug, fixed: Interpreter.settle_overdue_escape (see the module docstring).
def test_peer_data_after_a_complete_escape_on_a_busy_loop_wait_for_ato(emulator, realtime):
    host, port = realtime
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        busy = _escape_then_busy_loop(emulator, host, port, server)
        server.conn.send(b"late")                     # 150 ms after the escape completed
        busy.join()
        got = host.read_until(FINAL, timeout=5)
        assert got == OK, got                         # actual: b"late\r\nOK\r\n"
        assert host.at("ATO") == CONNECT
        assert host.read_exactly(4) == b"late"
