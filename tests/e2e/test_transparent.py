"""Transparent access mode (EC2x <access_mode> 2, ML302 <connectmode> 1) over the pty,
against OpenSSL echo servers: CONNECT, data both ways unchanged, "+++" with guard times
(on the modem's manual clock), ATO, AT+QISWTMD, DTR, NO CARRIER, held URCs."""
from __future__ import annotations

import hashlib
import os
import re

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import escape

HOST, PORT = "220.180.239.212", 8011
NASTY = b"+++\x1a\x1b\r\nAT\r\x00+++AT+QSSLCLOSE=4\r\n\xff"


@pytest.fixture
def online(emulator, open_modem, pki):
    """(host, port, advance(s), server) for an EC2x on manual time whose PDP context is up,
    with HOST:PORT routed to an OpenSSL echo server."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)

        advance = emulator.advancer(port, host)
        yield host, port, advance, server


def connect(host, line: str = f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2') -> None:
    host.write(line + "\r")
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"


def echo(host, server, data: bytes) -> None:
    host.write(data)
    assert host.read_exactly(len(data), timeout=10) == data


def test_note_3_5_transparent_send_and_receive(online):
    host, port, advance, server = online
    connect(host)                                   # §3.5.1: no OK before CONNECT
    echo(host, server, b"Test data from SSL" + NASTY)
    assert server.wait_received(18 + len(NASTY)) == b"Test data from SSL" + NASTY
    assert escape(host, advance) == b"\r\nOK\r\n"
    state = host.at("AT+QSSLSTATE=4")                 # still connected, still mode 2
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d+,2,1,4,2,"usbmodem",1'
                        rb"\r\n\r\nOK\r\n", state), state
    host.write(b"ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    echo(host, server, b"more data, intact")
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_plus_plus_plus_without_guard_times_is_data(online):
    host, port, advance, server = online
    connect(host)
    echo(host, server, b"abc+++def")                # no silence around it
    advance(1.1)
    echo(host, server, b"+++x")                     # silence before, a byte right after
    advance(1.1)
    host.write(b"++")                               # silence before, but only two ...
    advance(0.5)
    host.write(b"+")                                # ... the third within the guard time
    emulator_quiet = host.quiet_for(0.05)
    assert emulator_quiet == b""                    # held back: it may still be an escape
    host.write(b"y")                                # a byte before the silence after: data
    assert host.read_exactly(4) == b"+++y"
    advance(1.1)
    host.write(b"+")                                # a lone "+" that never completes ...
    advance(1.1)
    assert host.read_exactly(1) == b"+"             # ... goes out as data once it cannot be one
    assert server.wait_received(9 + 4 + 4 + 1) == b"abc+++def+++x+++y+"
    assert escape(host, advance) == b"\r\nOK\r\n"


def test_ato_with_nothing_to_return_to(online):
    host, *_ = online
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_peer_close_while_online_gives_the_data_then_no_carrier(online):
    host, port, advance, server = online
    connect(host)
    conn = server.wait_handshake()
    conn.send(b"last words")
    conn.close()
    assert host.read_until(b"\r\nNO CARRIER\r\n") == b"last words\r\nNO CARRIER\r\n"
    state = host.at("AT+QSSLSTATE=4")               # closing until the host closes it
    assert b",4,1,4,2," in state, state
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_data_that_arrive_after_escape_wait_for_ato(online):
    host, port, advance, server = online
    connect(host)
    conn = server.wait_handshake()
    assert escape(host, advance) == b"\r\nOK\r\n"
    conn.send(b"while you were away")
    assert host.quiet_for(0.2) == b""               # no URC: transparent data wait
    host.write(b"ATO\r")
    assert host.read_until(b"away") == b"\r\nCONNECT\r\nwhile you were away"


def test_data_that_arrive_after_escape_survive_the_peer_closing(online):
    """After +++ the peer sends and closes: ATO could only say NO CARRIER, so the socket
    falls back to buffer mode ("recv", then "closed") and the host reads what was sent."""
    host, port, advance, server = online
    connect(host)
    conn = server.wait_handshake()
    assert escape(host, advance) == b"\r\nOK\r\n"
    conn.send(b"parting words")
    conn.close()
    assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
    assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 13\r\nparting words\r\n\r\nOK\r\n"
    assert b",4,1,4,0," in host.at("AT+QSSLSTATE=4")      # buffer access mode now
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_urcs_of_other_sockets_are_held_while_online(online, emulator):
    host, port, advance, server = online
    host.write(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},0\r')
    assert host.read_until(b"\r\nOK\r\n")
    host.seen(b"\r\n+QSSLOPEN: 0,0\r\n")
    connect(host)
    conn0 = server.wait_connections(2)[0]
    conn0.send(b"for socket 0")                     # its "recv" URC must wait
    echo(host, server, b"online")
    assert b"QSSLURC" not in bytes(host.pending)
    assert escape(host, advance) == b'\r\nOK\r\n'
    host.seen(b'\r\n+QSSLURC: "recv",0\r\n')


def test_qiswtmd_switches_between_modes(online):
    host, port, advance, server = online
    assert host.at(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},0') == b"\r\nOK\r\n"
    host.seen(b"\r\n+QSSLOPEN: 4,0\r\n")
    assert host.at("AT+QISWTMD=?") == b"\r\n+QISWTMD: (0-11),(0-2)\r\n\r\nOK\r\n"
    host.write(b"AT+QISWTMD=4,2\r")                 # 0 -> 2
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    echo(host, server, b"switched")
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"   # 2 -> 0 (after +++)
    server.conn.send(b"buffered")
    host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
    assert host.at("AT+QISWTMD=4,1") == b"\r\nOK\r\n"   # 0 -> 1: waiting data are pushed
    host.seen(b'+QSSLURC: "recv",4,8\r\nbuffered')
    server.conn.send(b"more")
    host.seen(b'+QSSLURC: "recv",4,4\r\nmore')
    assert escape_free_switch(host, server, advance)
    assert host.at("AT+QISWTMD=5,2") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"


def escape_free_switch(host, server, advance) -> bool:
    """1 -> 2 with data already waiting: they come first, right after CONNECT."""
    host.at("AT+QISWTMD=4,0")
    server.conn.send(b"waiting")
    host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(b"waiting") == b"\r\nCONNECT\r\nwaiting"
    return escape(host, advance) == b"\r\nOK\r\n"


@pytest.mark.parametrize("dtr_mode, answer, still_open", [(0, None, True), (1, b"\r\nOK\r\n", True),
                                                           (2, b"\r\nNO CARRIER\r\n", False)])
def test_dtr_drop(online, emulator, dtr_mode, answer, still_open):
    host, port, advance, server = online
    assert host.at(f"AT&D{dtr_mode}") == b"\r\nOK\r\n"
    connect(host)
    emulator.wait_received(port, host.written)
    emulator.run(port.modem.set_dtr, 0)
    emulator.run(port.modem.set_dtr, 1)
    if answer is None:
        assert host.quiet_for(0.1) == b""
        echo(host, server, b"still online")
        assert escape(host, advance) == b"\r\nOK\r\n"
    else:
        assert host.read_until(answer) == answer
    state = host.at("AT+QSSLSTATE=4")
    if still_open:
        assert b",2,1,4,2," in state, state
    else:
        assert state == b"\r\nOK\r\n"                # closed and freed
        server.wait_done()


def test_failed_transparent_open_is_error(online, emulator):
    host, *_ = online
    emulator.router.add_map("nowhere.example", 1, "127.0.0.1", 9)     # discard port: refused
    host.write(b'AT+QSSLOPEN=1,1,2,"nowhere.example",1,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLSTATE=2") == b"\r\nOK\r\n"


@pytest.fixture
def ml302_online(emulator, open_modem):
    """(host, advance(s), server): an ML302 on manual time, online with connectmode 1."""
    host, port = open_modem("ml302", manual_time=True)
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')

        advance = emulator.advancer(port, host)
        yield host, advance, server


def test_ml302_connectmode_1(ml302_online):
    host, advance, server = ml302_online
    echo(host, server, b"onemo" + NASTY)
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert b'"CONNECTED"' in host.at("AT+QSSLSTATE")
    host.write(b'AT+QSSLOPEN=0,0,"x",1,1\r')            # ssid in use: the -2 line, then ERROR
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\n+QSSLOPEN: 0,-2\r\n\r\nERROR\r\n"
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    assert host.read_until(b"0,CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"


def test_eight_mib_both_ways_with_a_slow_reader(online):
    """Random bytes with the escape-like runs inside, echoed: SHA-256 equal both ways,
    the host writing as fast as it can while reading in odd-sized chunks."""
    host, port, advance, server = online
    connect(host)
    eight_mib_echo(host, server)


def test_eight_mib_both_ways_ml302(ml302_online):
    host, _, server = ml302_online
    eight_mib_echo(host, server)


def eight_mib_echo(host, server) -> None:
    blob = bytearray(os.urandom(8 << 20))
    for i in range(0, len(blob), 1 << 20):
        blob[i:i + len(NASTY)] = NASTY
    blob = bytes(blob)
    got = bytearray()
    view = memoryview(blob)
    sent = 0
    import time
    deadline = time.monotonic() + 120
    host.ser.write_timeout = 0
    while len(got) < len(blob):
        assert time.monotonic() < deadline, f"stalled at {sent} sent, {len(got)} read"
        if sent < len(blob):
            try:
                sent += host.ser.write(view[sent:sent + 65536]) or 0
            except Exception:
                pass
        chunk = host.ser.read(min(host.ser.in_waiting or 1, 7919))
        got += chunk
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob).hexdigest()
    assert server.conn.sha256() == hashlib.sha256(blob).hexdigest()


def test_flow_control_holds_both_sides_back_with_bounded_memory(emulator, open_modem):
    """A server that reads nothing, a host that writes 16 MiB and reads nothing meanwhile:
    the emulator stops reading the pty once the connection is full (the host's writes
    block); the server then echoes, and the emulator stops reading the network while the
    host does not read; its own buffers stay bounded, other modems are served; then
    everything arrives intact.

    "Full" includes what the kernel takes of the loopback connection (its autotuned send
    buffer, the server's receive buffer: about 4 MiB here), and how long the emulator needs
    to push that through the pty, TLS and TCP depends on the machine's load (2-8 MB/s
    seen on two shared cores). So the server reads nothing until the test has seen the
    pty paused, and each phase waits for its condition, not for a fixed time: a server
    that started reading after a fixed second drained the connection before it was ever
    full on a loaded machine, and the pause was never seen (1 run in 6)."""
    import threading
    import time

    release = threading.Event()

    def held_echo(conn):
        release.wait(120)              # reads nothing until the test has seen the pause
        while data := conn.recv(65536):
            conn.sendall(data)
    host, port = open_modem("ec2x", manual_time=True)
    other, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    with TlsServer(handler=held_echo, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        blob = os.urandom(16 << 20)
        writer = threading.Thread(target=host.ser.write, args=(blob,), daemon=True)
        writer.start()
        profile = port.modem.profile
        # Each limit may be passed by what one read brings before the pause takes effect:
        # asyncio reads up to 256 KiB from the network, the port up to 256 KiB from the pty.
        one_read = 272 << 10
        limits = {"pty backlog": 64 * 1024 + 65536,
                  "socket inbox": profile["ssl.recv_buffer"] + one_read,
                  "unsent to the network": profile.get("ssl.online_buffer", 256 * 1024) + one_read}
        worst = dict.fromkeys(limits, 0)

        def sample():
            sock = next(iter(port.modem.feature("ssl", None).sockets.values()))
            return {"reading pty": port.port.reading, "reading network": not sock._paused,
                    "pty backlog": port.port.backlog, "socket inbox": len(sock.inbox),
                    "unsent to the network": sock.send_backlog()}

        def watch(until, timeout: float) -> bool:
            """Sample every 20 ms (keeping the worst sizes) until `until(state)`."""
            deadline = time.monotonic() + timeout
            while True:
                state = emulator.run(sample)
                for key in limits:
                    worst[key] = max(worst[key], state[key])
                if until(state):
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
        try:
            assert watch(lambda s: not s["reading pty"], 60), "the emulator never stopped reading the pty"
            watch(lambda s: False, 0.3)                     # while the server still reads nothing
            assert writer.is_alive(), "16 MiB went into a connection nobody read: no back-pressure"
            assert other.at("AT") == b"\r\nOK\r\n"      # the loop still serves other modems
        finally:
            release.set()                                   # the echo starts; the host still reads nothing
        assert watch(lambda s: not s["reading network"], 60), \
            "the emulator kept reading the network while the host read nothing"
        watch(lambda s: False, 0.3)
        assert all(worst[k] <= limits[k] for k in limits), (worst, limits)
        got = host.read_exactly(len(blob), timeout=60)
        writer.join(30)
        assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()


def test_crlf_line_endings_never_reach_the_server(online):
    """A host ending lines with CR LF: the LF of AT+QSSLOPEN's and ATO's lines belongs to
    the line, not to the connection, also when it arrives after CONNECT."""
    host, port, advance, server = online
    host.write(b"AT\r\n")
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
    host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},2\r\n'.encode())
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    echo(host, server, b"one")
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"\n")                                 # the LF, after CONNECT, within 50 ms
    advance(0)                                        # read on its own (an LF read together with
    echo(host, server, b"two")                        # data after a whole line is data)
    assert server.wait_received(6) == b"onetwo"
    assert host.quiet_for(0.05) == b""


@pytest.mark.parametrize("offloaded", [True, False], ids=["seal-worker", "loop-thread"])
def test_a_transparent_stream_is_sealed_on_the_worker_thread(emulator, open_modem, monkeypatch, offloaded):
    """The host's stream is encrypted by the seal worker (emulator/io/offload.py), the loop
    reading the pty meanwhile; MODEM_EMULATOR_OFFLOAD=0 (offload.ENABLED) keeps it on the
    loop thread.  Either way the server decrypts exactly what the host wrote."""
    from emulator.io import offload
    monkeypatch.setattr(offload, "ENABLED", offloaded)
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        before = offload.WORKER.jobs_run
        blob = os.urandom(4 << 20)
        host.write(blob)
        conn = server.wait_for(lambda: server.connections and len(server.conn.received) >= len(blob)
                               and server.conn, timeout=60, what="4 MiB at the server")
        assert conn.sha256() == hashlib.sha256(blob).hexdigest()
        jobs = offload.WORKER.jobs_run - before
        if offloaded:
            assert jobs >= (4 << 20) // (64 << 10)   # (a job seals at most 64 KiB)
        else:
            assert jobs == 0
