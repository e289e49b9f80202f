"""Adversarial tests of EC2x transparent access mode, round 8: angles rounds 1-7
(test_transparent.py, test_adversarial_transparent_3/4/5/6/7/_escape/_drivers.py) leave out.

* The host's own flow control while online: AT+IFC=2,2 (the module may hold the host back
  once 64 KiB of its output wait unread) must not hold the host's upload back in online
  mode while the server streams and the host reads nothing; after an escape with that
  backlog unread, commands written without reading wait (CTS) and run in order: the prefix,
  OK, the command's answer, CONNECT, exactly the rest; a pipelined ATO held so meets a peer
  close that came after it was written (the buffer fall-back, NO CARRIER), where without
  the hold it resumes first (CONNECT, the rest, NO CARRIER).
* The emulator's own flow control (a server that reads nothing, the pty no longer read):
  "+++" written after a silence while the host's earlier bytes still sit unread in the pty
  reaches the module right behind them -- no silence, so it is data (the module's clock
  sees the bytes arrive; the host's pause happened inside its own buffer); a DTR drop
  (AT&D1 / AT&D2) there is not stuck behind the full connection: OK / NO CARRIER at once,
  the port answers AT while the server still reads nothing, and the server gets an exact
  prefix of the host's bytes (then the close_notify under AT&D2).
* DTR under AT&D0 toggled many times while data flow both ways: nothing changes; ATO while
  DTR is still low after an AT&D1 drop: online again, the line rising is no escape, the next
  fall is.
* A server streaming without pause while the host walks the socket (SSL 4 or plain TCP 2)
  through "+++", AT+QISWTMD=<id>,1 (push), <id>,0 (buffer, AT+QSSLRECV / AT+QIRD), <id>,2
  (transparent), "+++", ATO: what the host reassembles from the raw stream, the pushes and
  the reads is the server's stream, byte for byte; the same for an ML302 across three
  escapes, and on the wall clock (S12=25) with the server sending flat out.
* An unread push backlog (400 KB, the network held back), AT+QISWTMD=4,0 behind it (with
  and without AT+IFC=2,2), AT+QSSLRECV, then AT+QISWTMD=4,2 or ATO: exactly the rest.
* ATZ while parked restores the AT&W set (S12, &D) for the next session and keeps the
  connection; AT&F brings the factory guard time back.
* Two modems online at once, each escape on its own manual clock.
* Another socket's direct pushes held while the port is online survive the host closing the
  port: the next program gets them all, then ATO.
* A parked connection ended by the peer with close_notify alone, FIN alone or RST, with
  and without bytes waiting: "recv"/"closed", state 4, the bytes once, ATO NO CARRIER.
* Guard-time edges at the default S12 (1 s) on the modem's clock: 0.98 s of silence before
  is not enough, exactly 1.00 s is; a byte 0.98 s after "+++" makes it data; three "+"
  spread over 0.98 s escape.
* A binary stream with every byte value and "+++" runs (each with a short pause before it,
  shorter than the guard time) in mid-stream: all data, both ways, exactly.

Exact bytes both ways; guard times on the modem's manual clock (ec2x_strict's advance) except
where a test says otherwise.

Bug found (strict xfail, an edge): three "+" spanning exactly the guard time ("+", 0.5 s,
"+", 0.5 s, "+" at S12 50) are data, though the silences before and after count at exactly
the guard time and EscapeDetector.feed reads "within" as <= -- the held "+"s' expiry timer
(deadline first_at + guard, fires at now >= deadline) runs before the third "+" is read at
that instant (emulator/at/escape.py EscapeDetector.deadline/expire).  Round 3's fuzz model
took "within" as < and kept its gaps off the edge.
"""
import os
import re
import threading
import time

import pytest

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT
from emulator.testing.host import Host
from tests.e2e.test_adversarial_transparent_3 import HOST_B, PORT_B, received, sink, wait_unread  # noqa: F401
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, PORT,  # noqa: F401
                                                          ato, connect, escape)

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"
NO_CARRIER = b"\r\nNO CARRIER\r\n"


def letters(n: int, seed: int = 0) -> bytes:
    """n bytes of a numbered text stream with no CR, LF, "+", "A"/"a" (nothing a parser or
    the escape detector could take for anything but data)."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += b"<%07d|xyz>" % i
        i += 1
    return bytes(out[:n])


def wait_backlog(emulator, port, size: int, timeout: float = 10) -> None:
    """Until more than `size` bytes of the modem's output wait unread for the host."""
    deadline = time.monotonic() + timeout
    while emulator.run(lambda: port.port.backlog) <= size:
        assert time.monotonic() < deadline, emulator.run(lambda: port.port.backlog)
        time.sleep(0.02)


def fill_pty(host, emulator, port, chunk: bytes, timeout: float = 30) -> int:
    """Write `chunk`s without blocking until the emulator has stopped reading the pty (the
    connection is full) and the pty itself takes no more: returns how many bytes went in."""
    fd = host.ser.fd
    written = 0
    deadline = time.monotonic() + timeout
    refused_since = None
    while True:
        assert time.monotonic() < deadline, "the pty never filled"
        try:
            n = os.write(fd, chunk)
            written += n
            refused_since = None
        except BlockingIOError:
            if refused_since is None:
                refused_since = time.monotonic()
            paused = not emulator.run(lambda: port.port.reading)
            if paused and time.monotonic() - refused_since > 0.3:
                host.written += written
                return written
            time.sleep(0.01)


def settle(got: bytearray, quiet: float = 0.5, timeout: float = 20) -> None:
    """Until `got` has not grown for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if len(got) != last:
            last, since = len(got), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.02)
    raise AssertionError(f"still growing: {len(got)}")


def stuck_server(release: threading.Event, got: bytearray, done: threading.Event):
    def handler(conn):
        release.wait(60)
        try:
            while True:
                data = conn.recv(65536, timeout=20)
                if not data:
                    break
                got.extend(data)
        finally:
            done.set()
        conn.close()
    return handler


# -- AT+IFC=2,2: the host's flow control while online -------------------------------------------
def test_ifc_hold_does_not_stop_the_online_upload_while_the_download_is_unread(emulator, ec2x_strict):
    """AT+IFC=2,2, online; the server sends 600 KB the host does not read (more than 64 KiB
    of output wait), and the host uploads 300 KB meanwhile: online mode is no command input,
    the upload must reach the server whole.  Then the host reads the download: exact."""
    host, advance, port = ec2x_strict
    assert host.at("AT+IFC=2,2") == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        down = letters(600_000, seed=1)
        server.conn.send(down)
        wait_backlog(emulator, port, 64 * 1024)
        up = letters(300_000, seed=7)
        done = threading.Event()
        threading.Thread(target=lambda: (host.write(up), done.set()), daemon=True).start()
        assert done.wait(15), "the host's upload is held back by the unread download"
        assert received(server, len(up), timeout=15) == up
        assert host.read_exactly(len(down), timeout=20) == down
        assert escape(host, advance) == OK
        assert host.at("AT+IFC?") == b"\r\n+IFC: 2,2\r\n" + OK


def _ifc_escape_backlog(emulator, host, advance, port, server):
    down = letters(700_000, seed=3)
    server.conn.send(down)
    wait_backlog(emulator, port, 64 * 1024)
    time.sleep(0.2)
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    host.write(b"AT+QSSLSTATE=4\r")
    host.write(b"ATO\r")
    time.sleep(0.3)
    host.write(b"payload-after-ato")
    first = host.read_until(OK, timeout=20)
    prefix = first[:-len(OK)]
    assert down.startswith(prefix), len(prefix)
    state = host.read_until(OK, timeout=10)
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d+,2,1,4,2,"usbmodem",1\r\n'
                        + re.escape(OK), state), state
    assert host.read_until(CONNECT_OR_ERROR, timeout=10) == CONNECT
    assert host.read_exactly(len(down) - len(prefix), timeout=20) == down[len(prefix):]
    assert received(server, 17) == b"payload-after-ato"
    assert host.quiet_for(0.2) == b""
    assert escape(host, advance) == OK


@pytest.mark.parametrize("ifc", ["2,2", "0,0"])
def test_escape_with_an_unread_backlog_then_pipelined_commands(emulator, ec2x_strict, ifc):
    """AT+IFC=<ifc>; the server sends 700 KB the host does not read; "+++" with its guard
    times; AT+QSSLSTATE=4, ATO and a payload written without reading anything.  Then the
    host reads: a prefix of the stream, OK, the state line (access mode 2), OK, CONNECT,
    exactly the rest; the payload reached the server (after CONNECT: online data)."""
    host, advance, port = ec2x_strict
    assert host.at(f"AT+IFC={ifc}") == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        _ifc_escape_backlog(emulator, host, advance, port, server)


@pytest.mark.parametrize("ifc", ["2,2", "0,0"])
def test_pipelined_ato_held_by_the_ifc_hold_meets_a_peer_close(emulator, ec2x_strict, ifc):
    """150 KB from the server, unread; "+++"; "ATO" written at once without reading; then the
    server closes.  AT+IFC=0,0: the ATO ran before the close -- CONNECT, exactly the rest,
    NO CARRIER.  AT+IFC=2,2: the ATO waits behind the unread output (CTS), so the close came
    first: the buffer fall-back ("recv", "closed"), the ATO's NO CARRIER, and AT+QSSLRECV
    reads exactly the rest.  Either way every byte once, in order."""
    host, advance, port = ec2x_strict
    assert host.at(f"AT+IFC={ifc}") == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        down = letters(150_000, seed=3)
        server.conn.send(down)
        wait_backlog(emulator, port, 64 * 1024)
        time.sleep(0.2)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        host.write(b"ATO\r")
        time.sleep(0.3)
        server.conn.close()
        time.sleep(0.5)
        prefix = host.read_until(OK, timeout=20)[:-len(OK)]
        assert down.startswith(prefix) and len(prefix) < len(down)
        if ifc == "0,0":
            assert host.read_until(CONNECT_OR_ERROR) == CONNECT
            assert host.read_exactly(len(down) - len(prefix), timeout=10) == down[len(prefix):]
            assert host.read_until(FINAL) == NO_CARRIER
        else:
            assert host.read_until(FINAL) == (b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
                                              + NO_CARRIER)
            state = host.at("AT+QSSLSTATE=4")
            assert re.search(rb",4,1,4,0,\"usbmodem\",1\r\n", state), state
            r = Reader(host)
            while True:
                host.write(b"AT+QSSLRECV=4,1500\r")
                before = len(r.data)
                r.until("OK", allowed=("read",))
                if len(r.data) == before:
                    break
            assert prefix + bytes(r.data) == down
        assert host.quiet_for(0.2) == b""
        assert ato(host) == NO_CARRIER


# -- the emulator's flow control: the pty not read ------------------------------------------
def test_plus_plus_plus_behind_a_full_connection_is_data(emulator, ec2x_strict):
    """The server reads nothing; the host writes until the emulator stops reading the pty
    and the pty is full; then it keeps silent 1.5 s (modem clock), writes "+++" (queued
    behind its earlier bytes, as behind CTS) and keeps silent again.  The module sees the
    "+++" arrive right behind those bytes -- no silence before it: data.  The server, once
    it reads, gets every byte and the "+++"; no OK.  A real escape then works."""
    host, advance, port = ec2x_strict
    release, done, got = threading.Event(), threading.Event(), bytearray()
    with TlsServer(handler=stuck_server(release, got, done), legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        n = fill_pty(host, emulator, port, b"x" * 65536)
        assert host.written - emulator.run(lambda: port.port.received) > 0
        emulator.advance(port, 1.5)
        writer = threading.Thread(target=host.write, args=(b"+++",), daemon=True)
        writer.start()
        time.sleep(0.2)
        emulator.advance(port, 1.5)
        release.set()
        writer.join(20)
        assert not writer.is_alive()
        emulator.wait_received(port, host.written, timeout=20)
        advance(1.5)
        deadline = time.monotonic() + 20
        while len(got) < n + 3:
            assert time.monotonic() < deadline, len(got)
            time.sleep(0.02)
        time.sleep(0.1)
        assert bytes(got) == b"x" * n + b"+++"
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK
        assert len(got) == n + 3


@pytest.mark.parametrize("andd", [1, 2])
def test_dtr_drop_while_the_pty_waits_behind_a_full_connection(emulator, ec2x_strict, andd):
    """AT&D<andd>; the server reads nothing; the host writes until the pty is full and the
    emulator no longer reads it; DTR drops.  The drop is not stuck behind the full
    connection: OK (&D1) / NO CARRIER (&D2) at once, and the port answers AT while the server
    still reads nothing.  The server then gets an exact prefix of the host's bytes (what the
    emulator read online), &D2: then the connection's clean end (close_notify)."""
    host, advance, port = ec2x_strict
    assert host.at(f"AT&D{andd}") == OK
    release, done, got = threading.Event(), threading.Event(), bytearray()
    with TlsServer(handler=stuck_server(release, got, done), legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        base = emulator.run(lambda: port.port.received)
        n = fill_pty(host, emulator, port, b"x" * 65536)
        online = emulator.run(lambda: port.port.received) - base     # read online before the drop
        assert 0 < online < n
        time.sleep(0.1)
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert host.read_until(FINAL, timeout=5) == (OK if andd == 1 else NO_CARRIER)
        assert emulator.control("dtr", level=1) == {"ok": True}
        # the rest of the pty is command-state input now (no "AT": junk, dropped)
        host.write(b"\r")
        host.quiet_for(0.3)
        assert host.at("AT", timeout=5) == OK
        release.set()
        if andd == 2:
            assert done.wait(20)
        else:
            settle(got)
        # every byte the emulator read online reached the server, none of the rest (read
        # after the drop: command-state input, as behind CTS on a module)
        assert bytes(got) == b"x" * online, (len(got), online, n)
        if andd == 1:
            assert ato(host) == CONNECT
            host.write(b"TAIL-AFTER-ATO")
            deadline = time.monotonic() + 10
            while len(got) < online + 14:
                assert time.monotonic() < deadline, bytes(got[-40:])
                time.sleep(0.02)
            settle(got, quiet=0.2)
            assert bytes(got) == b"x" * online + b"TAIL-AFTER-ATO"
        else:
            assert server.conn.close_notify_received           # a clean end, not a reset
            assert host.at("AT+QSSLSTATE") == OK
            assert ato(host) == NO_CARRIER


# -- DTR toggling ------------------------------------------------------------------------------
def test_andd0_dtr_toggled_while_data_flow_both_ways_changes_nothing(emulator, ec2x_strict):
    """AT&D0: DTR dropped and raised twenty times while the host uploads and the server
    sends: no OK, no NO CARRIER, every byte once in order both ways; "+++" then escapes."""
    host, advance, port = ec2x_strict
    assert host.at("AT&D0") == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        up, down = bytearray(), bytearray()
        for i in range(20):
            u, d = letters(3000, seed=i * 1000), letters(2000, seed=50000 + i * 1000)
            host.write(u)
            up += u
            server.conn.send(d)
            down += d
            assert emulator.control("dtr", level=0) == {"ok": True}
            assert emulator.control("dtr", level=1) == {"ok": True}
        assert host.read_exactly(len(down), timeout=15) == bytes(down)
        assert received(server, len(up)) == bytes(up)
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK


def test_ato_while_dtr_is_still_low_then_rise_and_fall(emulator, ec2x_strict):
    """AT&D1; DTR drops: OK.  ATO while DTR is still low: CONNECT, data flow; DTR rising is
    no escape (data still flow); the next fall is (OK); ATO again; every byte once."""
    host, advance, port = ec2x_strict
    assert host.at("AT&D1") == OK
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        host.write(b"one")
        assert host.read_exactly(3) == b"one"
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert host.read_until(FINAL) == OK
        assert ato(host) == CONNECT
        host.write(b"two")
        assert host.read_exactly(3) == b"two"
        assert emulator.control("dtr", level=1) == {"ok": True}
        host.write(b"three")
        assert host.read_exactly(5) == b"three"
        assert host.quiet_for(0.2) == b""
        assert emulator.control("dtr", level=0) == {"ok": True}
        assert host.read_until(FINAL) == OK
        assert emulator.control("dtr", level=1) == {"ok": True}
        assert ato(host) == CONNECT
        host.write(b"four")
        assert host.read_exactly(4) == b"four"
        assert received(server, 15) == b"onetwothreefour"


# -- a server that never pauses, walked through every access mode ---------------------------------
KINDS = {
    "ssl": dict(cid=4, urc=b'+QSSLURC: "recv",4', read=b"+QSSLRECV", cmd="AT+QSSLRECV=4,1500"),
    "tcp": dict(cid=2, urc=b'+QIURC: "recv",2', read=b"+QIRD", cmd="AT+QIRD=2,1500"),
    "ssl5": dict(cid=5, urc=b'+QSSLURC: "recv",5', read=b"+QSSLRECV", cmd="AT+QSSLRECV=5,1500"),
}


class Reader:
    """Parses the port's output in command mode (pushes, "recv" URCs, AT+QSSLRECV / AT+QIRD
    answers, results): `data` collects the socket's bytes in the order they came."""

    def __init__(self, host, kind: str = "ssl"):
        k = KINDS[kind]
        self.host = host
        self.data = bytearray()
        self.header = re.compile(rb"\r\n(?:" + re.escape(k["urc"]) + rb",(\d+)\r\n|" + re.escape(k["urc"])
                                 + rb"\r\n|" + re.escape(k["read"]) + rb": (\d+)\r\n"
                                 rb"|(OK|CONNECT|ERROR|NO CARRIER)\r\n)")
        self.recv_urcs = 0

    def token(self, timeout: float = 10):
        got = self.host.read_until(self.header, timeout=timeout)
        m = self.header.search(got)
        assert m.start() == 0 and m.end() == len(got), got[:200]
        if m.group(1) is not None:
            self.data += self.host.read_exactly(int(m.group(1)), timeout=timeout)
            assert self.host.read_exactly(2) == b"\r\n"
            return "push"
        if m.group(2) is not None:
            n = int(m.group(2))
            if n:
                self.data += self.host.read_exactly(n, timeout=timeout)
                assert self.host.read_exactly(2) == b"\r\n"
            return "read"
        if m.group(3) is not None:
            return m.group(3).decode()
        self.recv_urcs += 1
        return "recv"

    def until(self, final: str, allowed=("push", "recv", "read")):
        while True:
            t = self.token()
            if t == final:
                return
            assert t in allowed, t

    def online_until_ok(self, timeout: float = 20):
        got = self.host.read_until(OK, timeout=timeout)
        self.data += got[:-len(OK)]


def _first_difference(a: bytes, b: bytes):
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))


@pytest.mark.parametrize("kind", ["ssl", "tcp"])
def test_streaming_server_through_escape_push_buffer_transparent_and_ato(emulator, ec2x_strict, kind):
    """The server sends numbered text every few ms the whole time (SSL socket 4 or a plain TCP
    socket 2, both opened transparent).  Online read; "+++"; AT+QISWTMD=<id>,1 (pushes);
    AT+QISWTMD=<id>,0 and AT+QSSLRECV / AT+QIRD; AT+QISWTMD=<id>,2 (CONNECT, raw); "+++";
    AT+QISWTMD=<id>,0; ATO (transparent again) -- then the server ends its stream with a
    marker.  Raw bytes, pushes and reads, in the order the host got them, are the stream."""
    host, advance, port = ec2x_strict
    k = KINDS[kind]
    cid = k["cid"]
    stop = threading.Event()
    sent = bytearray()

    def stream(send):
        i = 0
        while not stop.is_set():
            chunk = letters(137 + (i * 61) % 900, seed=i * 100)
            send(chunk)
            sent.extend(chunk)
            i += 1
            time.sleep(0.002)
        send(b"[END]")
        sent.extend(b"[END]")

    def walk():
        r = Reader(host, kind)
        r.data += host.read_exactly(20000, timeout=10)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        r.online_until_ok()
        time.sleep(0.2)
        host.write(f"AT+QISWTMD={cid},1\r")
        r.until("OK")
        mark = len(r.data)
        while len(r.data) < mark + 30000:
            assert r.token() == "push"
        host.write(f"AT+QISWTMD={cid},0\r")
        r.until("OK")
        time.sleep(0.1)
        for _ in range(15):
            host.write(k["cmd"] + "\r")
            r.until("OK")
        host.write(f"AT+QISWTMD={cid},2\r")
        r.until("CONNECT", allowed=("recv",))
        r.data += host.read_exactly(25000, timeout=10)
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        r.online_until_ok()
        host.write(f"AT+QISWTMD={cid},0\r")
        r.until("OK", allowed=("recv",))
        time.sleep(0.2)
        host.write(b"ATO\r")
        r.until("CONNECT", allowed=("recv",))
        stop.set()
        r.data += host.read_until(b"[END]", timeout=20)
        assert host.quiet_for(0.2) == b""
        got, want = bytes(r.data), bytes(sent)
        assert got == want, (len(got), len(want), _first_difference(got, want))
        assert escape(host, advance) == OK
        assert host.quiet_for(0.2) == b""             # no stale "recv" for bytes already had

    if kind == "ssl":
        def handler(conn):
            stream(conn.sendall)
            conn.recv(1, timeout=30)
        with TlsServer(handler=handler, legacy=True) as server:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
            connect(host)
            server.wait_handshake()
            walk()
    else:
        with TcpServer("sink") as server:
            emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
            connect(host, f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2')
            conn = server.wait_connection()
            t = threading.Thread(target=stream, args=(conn.send,), daemon=True)
            t.start()
            try:
                walk()
            finally:
                stop.set()
                t.join(5)


# -- a push backlog the host has not read, then buffer mode and back ---------------------------
@pytest.mark.parametrize("ifc", ["0,0", "2,2"])
@pytest.mark.parametrize("back", ["AT+QISWTMD=4,2", "ATO"])
def test_unread_push_backlog_then_buffer_reads_then_transparent(emulator, sink, back, ifc):
    """Parked; AT+QISWTMD=4,1; the server sends 400 KB the host does not read (the pushes
    wait for it, the network is held back).  AT+QISWTMD=4,0 written behind the unread
    pushes (with AT+IFC=2,2 it waits for the host to read them down): its OK after them,
    then "recv"; five AT+QSSLRECV; then AT+QISWTMD=4,2 or ATO: CONNECT and exactly the rest.
    Pushes + reads + raw = the 400 KB, once, in order."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    assert host.at(f"AT+IFC={ifc}") == OK
    assert host.at("AT+QISWTMD=4,1") == OK
    down = letters(400_000, seed=5)
    server.conn.send(down)
    wait_backlog(emulator, port, 32 * 1024)
    time.sleep(0.3)
    r = Reader(host)
    host.write(b"AT+QISWTMD=4,0\r")
    r.until("OK", allowed=("push",))
    assert r.token() == "recv"
    state = {s["id"]: s for s in emulator.control("state")["sockets"]}[4]
    assert state["access_mode"] == 0 and state["unread"] > 0, state
    for _ in range(5):
        host.write(b"AT+QSSLRECV=4,1500\r")
        r.until("OK", allowed=("read",))
    host.write(back.encode() + b"\r")
    r.until("CONNECT", allowed=())
    r.data += host.read_exactly(len(down) - len(r.data), timeout=20)
    assert bytes(r.data) == down
    assert host.quiet_for(0.2) == b""
    assert escape(host, advance) == OK
    assert host.quiet_for(0.2) == b""


# -- another socket's pushes held while online, then the host leaves -----------------------------
def test_pushes_held_while_online_survive_the_hosts_close_for_the_next_host(emulator, sink):
    """Socket 5 in direct-push mode, socket 4 online: 5's server sends 200 KB (pushes wait:
    the port is online).  The host closes the port; 5's server sends 5 bytes more.  The next
    program gets every pushed byte once, in order (the held pushes are not dropped with the
    departed host's output), then ATO returns to socket 4."""
    host, advance, port, server = sink
    assert escape(host, advance) == OK
    with TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},1') == OK
        assert host.read_until(b"+QSSLOPEN: 5,0\r\n") == b"\r\n+QSSLOPEN: 5,0\r\n"
        b.wait_handshake()
        assert ato(host) == CONNECT
        blob = letters(200_000, seed=9)
        b.conn.send(blob)
        time.sleep(0.5)
        host.close()
        time.sleep(0.3)
        b.conn.send(b"after")
        time.sleep(0.2)
        nxt = Host(host.path)
        try:
            r = Reader(nxt, "ssl5")
            while len(r.data) < len(blob) + 5:
                assert r.token() == "push"
            assert bytes(r.data) == blob + b"after"
            assert nxt.quiet_for(0.2) == b""
            assert ato(nxt) == CONNECT
            nxt.write(b"next-host")
            assert received(server, 9) == b"next-host"
            server.conn.send(b"to-next")
            assert nxt.read_exactly(7) == b"to-next"
            assert escape(nxt, emulator.advancer(port, nxt, before=host.written)) == OK
        finally:
            nxt.close()


# -- ATZ / AT&F while parked ----------------------------------------------------------------------
def test_atz_while_parked_restores_s12_and_andd_for_the_next_session(emulator, sink):
    """Parked: ATS12=5;&D1;&W, then ATS12=50;&D0, then ATZ (the saved set: S12 5, &D1) -- the
    connection stays (ATO: CONNECT, the bytes that waited); 0.11 s guard times escape now;
    a DTR drop escapes (&D1); AT&F (factory &D2, S12 50) and ATO: a 0.11 s "+++" is data."""
    host, advance, port, server = sink
    host.write(b"a")
    assert escape(host, advance) == OK
    assert host.at("ATS12=5;&D1;&W") == OK
    assert host.at("ATS12=50;&D0") == OK
    server.conn.send(b"waiting")
    wait_unread(emulator, 4, 7)
    assert host.at("ATZ") == OK
    assert host.at("ATS12?") == b"\r\n005\r\n" + OK
    assert ato(host) == CONNECT
    assert host.read_exactly(7) == b"waiting"
    advance(0.11)
    host.write(b"+++")
    advance(0.11)
    assert host.read_until(FINAL) == OK
    assert ato(host) == CONNECT
    host.write(b"b")
    assert received(server, 2) == b"ab"
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert host.read_until(FINAL) == OK
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert host.at("ATE0&F") == OK
    assert host.at("ATE0") in (OK, b"ATE0\r" + OK)
    assert host.at("ATS12?") == b"\r\n050\r\n" + OK
    assert ato(host) == CONNECT
    advance(0.11)
    host.write(b"+++")
    advance(0.11)
    host.write(b"c")
    assert received(server, 6) == b"ab+++c"
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == OK
    assert re.search(rb",2,1,4,2,", host.at("AT+QSSLSTATE=4"))


# -- ML302: a streaming server across escapes ----------------------------------------------------
def test_ml302_streaming_server_across_escapes_and_ato(emulator, ml302_strict):
    """ML302 connectmode 1; the server sends numbered text every few ms; three rounds of:
    read online, "+++" (the bytes before OK are the stream's), a command while the stream
    waits, ATO (CONNECT, then the bytes that waited).  Then the server ends its stream with a
    marker: the host has it all, once, in order."""
    host, advance, _ = ml302_strict
    stop = threading.Event()
    sent = bytearray()

    def handler(conn):
        i = 0
        while not stop.is_set():
            chunk = letters(101 + (i * 37) % 700, seed=i * 100)
            conn.sendall(chunk)
            sent.extend(chunk)
            i += 1
            time.sleep(0.002)
        conn.sendall(b"[END]")
        sent.extend(b"[END]")
        conn.recv(1, timeout=30)
    with TlsServer(handler=handler, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        server.wait_handshake()
        got = bytearray()
        for _ in range(3):
            got += host.read_exactly(15000, timeout=10)
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            got += host.read_until(OK, timeout=20)[:-len(OK)]
            time.sleep(0.1)
            assert host.at("AT+CSQ").endswith(OK)
            assert ato(host) == CONNECT
        stop.set()
        got += host.read_until(b"[END]", timeout=20)
        assert host.quiet_for(0.2) == b""
        assert bytes(got) == bytes(sent), (len(got), len(sent), _first_difference(bytes(got), bytes(sent)))
        assert escape(host, advance) == OK


# -- two modems, each on its own clock ------------------------------------------------------------
def test_two_modems_online_escape_on_their_own_clocks(emulator, open_modem, strict_log):
    """Two EC2x on manual time, both online to one echo server.  Modem A's clock moves on
    around "+++" written to both: A escapes (OK); B's clock stood still, so its "+++" had no
    silence before it -- data, echoed.  Then B escapes on its own clock, both ATO, and every
    byte is where it belongs, once."""
    mods = []
    for _ in range(2):
        host, port = open_modem("ec2x", manual_time=True)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        mods.append((host, emulator.advancer(port, host), port))
    (a, adv_a, _), (b, adv_b, _) = mods
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(a)
        server.wait_handshake(index=0)
        connect(b)
        server.wait_handshake(index=1)
        a.write(b"a1")
        b.write(b"b1")
        assert a.read_exactly(2) == b"a1" and b.read_exactly(2) == b"b1"
        adv_a(1.1)
        a.write(b"+++")
        b.write(b"+++")
        adv_a(1.1)
        assert a.read_until(FINAL) == OK
        assert b.read_exactly(3) == b"+++"
        assert b.quiet_for(0.2) == b""
        assert escape(b, adv_b) == OK
        assert ato(a) == CONNECT and ato(b) == CONNECT
        a.write(b"a2")
        b.write(b"b2")
        assert a.read_exactly(2) == b"a2" and b.read_exactly(2) == b"b2"
        assert received(server, 4, index=0) == b"a1a2"
        assert received(server, 7, index=1) == b"b1+++b2"
        assert escape(a, adv_a) == OK and escape(b, adv_b) == OK


# -- the wall clock: an escape while the server streams at full speed -----------------------------
def test_wall_clock_escape_while_the_server_streams_flat_out(emulator, open_modem, strict_log):
    """Wall clock, S12=25 (0.5 s).  The server sends as fast as TLS goes; the host reads
    everything in a thread, keeps silent 0.6 s, writes "+++", keeps silent 0.6 s: OK comes
    (the loop busy with the stream notwithstanding); AT+QSSLSTATE=4 answers between stream
    bytes and ATO; ATO resumes.  The bytes before OK and after CONNECT are the server's
    stream exactly, and the answers sit in between, whole."""
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at("ATS12=25") == OK
    stop = threading.Event()
    sent = bytearray()

    def handler(conn):
        i = 0
        while not stop.is_set():
            chunk = letters(16384, seed=i * 2000)
            conn.sendall(chunk)
            sent.extend(chunk)
            i += 1
        conn.sendall(b"[END]")
        sent.extend(b"[END]")
        conn.recv(1, timeout=30)
    with TlsServer(handler=handler, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        buf = bytearray(host.pending)
        host.pending.clear()
        done = threading.Event()

        def reader():
            while not done.is_set():
                buf.extend(host.ser.read(65536))
        t = threading.Thread(target=reader, daemon=True)
        t.start()

        def wait_for(pattern: bytes, timeout: float = 10) -> None:
            deadline = time.monotonic() + timeout
            while pattern not in buf:
                assert time.monotonic() < deadline, (pattern, len(buf), bytes(buf[-80:]))
                time.sleep(0.01)
        try:
            time.sleep(0.5)
            time.sleep(0.6)
            host.ser.write(b"+++")
            time.sleep(0.6)
            wait_for(OK)
            time.sleep(0.2)
            host.ser.write(b"AT+QSSLSTATE=4\r")
            wait_for(b",2,\"usbmodem\",1\r\n")
            host.ser.write(b"ATO\r")
            wait_for(CONNECT)
            time.sleep(0.5)
            stop.set()
            wait_for(b"[END]", timeout=20)
            time.sleep(0.2)
        finally:
            stop.set()
            done.set()
            t.join(5)
        data = bytes(buf)
        m = re.fullmatch(rb"(.*?)\r\nOK\r\n(\r\n\+QSSLSTATE: [^\r]*\r\n\r\nOK\r\n)\r\nCONNECT\r\n(.*)", data, re.S)
        assert m, (len(data), data.count(b"\r\n"))
        stream = m.group(1) + m.group(3)
        assert stream == bytes(sent), (len(stream), len(sent), _first_difference(stream, bytes(sent)))
        host.ser.reset_input_buffer()


# -- the peer ends a parked connection by close_notify alone, FIN alone, or RST ----------------------
@pytest.mark.parametrize("how", [dict(close_notify=True, fin=False), dict(close_notify=False, fin=True),
                                 dict(close_notify=False, fin=False, reset=True)],
                         ids=["close_notify-only", "fin-only", "rst"])
@pytest.mark.parametrize("data", [b"", b"xyz"], ids=["no-data", "data"])
def test_peer_ends_a_parked_connection_each_way(sink, how, data):
    """Parked after "+++"; the server (optionally sends 3 bytes, then) ends the connection with
    a close_notify and no FIN, a FIN with no close_notify, or an RST.  Each is the peer's
    close: "closed" (after "recv" when bytes wait); the socket closing (state 4) -- in
    access mode 2 when nothing waits (AT+QSSLRECV: ERROR), else fallen back to buffer mode
    with the bytes readable once; ATO: NO CARRIER either way."""
    host, advance, _, server = sink
    assert escape(host, advance) == OK
    if data:
        server.conn.send(data)
        time.sleep(0.2)
    server.conn.close(**how)
    urcs = (b'\r\n+QSSLURC: "recv",4\r\n' if data else b"") + b'\r\n+QSSLURC: "closed",4\r\n'
    assert host.read_until(b'"closed",4\r\n', timeout=5) == urcs
    state = host.at("AT+QSSLSTATE=4")
    mode = b"0" if data else b"2"
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d+,4,1,4,' + mode
                        + rb',"usbmodem",1\r\n' + re.escape(OK), state), state
    if data:
        assert host.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 3\r\nxyz\r\n" + OK
        assert host.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 0\r\n" + OK
    else:
        assert host.at("AT+QSSLRECV=4,100") == b"\r\nERROR\r\n"
    assert ato(host) == NO_CARRIER
    assert host.quiet_for(0.1) == b""


# -- guard-time edges at the default S12 --------------------------------------------------------
def test_default_guard_time_edges_on_the_modem_clock(sink):
    """S12 50: 0.98 s of silence before "+++" is not enough (data); exactly 1.00 s is (OK);
    after ATO a byte 0.98 s after "+++" makes it data; 1.00 s after it completes the escape."""
    host, advance, _, server = sink
    host.write(b"a")
    assert received(server, 1) == b"a"
    advance(0.98)
    host.write(b"+++")
    advance(1.2)
    assert received(server, 4) == b"a+++"
    assert host.quiet_for(0.2) == b""
    advance(1.0)
    host.write(b"+++")
    advance(1.0)
    assert host.read_until(FINAL) == OK
    assert ato(host) == CONNECT
    advance(1.0)
    host.write(b"+++")
    advance(0.98)
    host.write(b"b")
    assert received(server, 8) == b"a++++++b"
    assert host.quiet_for(0.2) == b""
    advance(1.0)
    host.write(b"+++")
    advance(1.0)
    assert host.read_until(FINAL) == OK
    assert bytes(server.conn.received) == b"a++++++b"


def test_three_plus_spanning_0_98_s_escape(sink):
    """"+", 0.49 s, "+", 0.49 s, "+" (within the guard time), then 1 s: an escape."""
    host, advance, _, server = sink
    advance(1.5)
    for gap in (0.49, 0.49):
        host.write(b"+")
        advance(gap)
    host.write(b"+")
    advance(1.0)
    assert host.read_until(FINAL) == OK
    assert bytes(server.conn.received) == b""


# Was an inconsistency, decided and fixed (escape.EscapeDetector.feed: "within" is strictly less
# than the guard time, as its expiry timer has it): a third "+" at exactly first + guard is late
# whichever of the two the loop runs first -- before, the timer's order made it data and a read
# that came first made it an escape.
def test_three_plus_spanning_exactly_the_guard_time_are_data(sink):
    """"+", 0.5 s, "+", 0.5 s, "+": the three span exactly 1.00 s -- not within the guard
    time (behaviour.md, Leaving): data, no OK; the server gets "+++"."""
    host, advance, _, server = sink
    advance(1.5)
    for gap in (0.5, 0.5):
        host.write(b"+")
        advance(gap)
    host.write(b"+")
    advance(1.0)
    assert host.quiet_for(0.3) == b""
    assert received(server, 3) == b"+++"


@pytest.mark.parametrize("span, escaped", [(0.98, True), (1.0, False)])
def test_the_span_rule_is_the_same_when_the_third_plus_is_read_before_the_timer(span, escaped):
    """The sans-IO detector fed the third "+" at first + span with its timer not run yet
    (a busy loop): the same verdict as the timer's."""
    from emulator.at.escape import EscapeDetector
    d = EscapeDetector(guard=1.0, now=0.0)
    assert d.feed(b"+", 1.5) == b""
    assert d.feed(b"+", 1.5 + span / 2) == b""
    out = d.feed(b"+", 1.5 + span)
    assert (out, d.held) == ((b"", 3) if escaped else (b"+++", 0))


# -- every byte value with short pauses ---------------------------------------------------------
def test_binary_stream_with_paused_plus_runs_is_all_data(emulator, ec2x_strict):
    """An echo server; the host writes 20 pieces, each all 256 byte values shuffled with
    "+++" runs inside, then after a 0.5 s pause (modem clock) a lone "+++", then after
    another 0.5 s the next piece.  No pause reaches the guard time: everything is data and
    comes back exactly; then a real escape."""
    host, advance, port = ec2x_strict
    import random
    rnd = random.Random(8)
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        sent = bytearray()
        for i in range(20):
            vals = list(range(256))
            rnd.shuffle(vals)
            piece = bytes(vals[:100]) + b"+++" + bytes(vals[100:]) + b"+++"
            host.write(piece)
            sent += piece
            advance(0.5)
            host.write(b"+++")
            sent += b"+++"
            advance(0.5)
        host.write(b"end")
        sent += b"end"
        assert host.read_exactly(len(sent), timeout=15) == bytes(sent)
        assert received(server, len(sent)) == bytes(sent)
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == OK
