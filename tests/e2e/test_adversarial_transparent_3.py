"""Adversarial tests of EC2x transparent access mode (AT+QSSLOPEN <access_mode> 2) played
by a hostile host together with the field tools: the "+++" escape held when the host hangs
up, ATO / AT+QISWTMD answers held back by the control API's `slow`, `send_fail`, `drop`
(rst, close, blackhole) and `pdp_deact` while online or escaped, two sockets taking turns
in transparent mode, ATV0 / ATE1 framing, S12 changed between sessions, CR LF hosts that
write byte by byte, `uart_noise` on a stream that ends in NO CARRIER.

OpenSSL (Python ssl) servers record every byte they decrypt: what the host wrote outside
an escape reaches them once and in order, what they send reaches the host once and in
order, and the port answers AT afterwards.  Guard times run on the modem's manual clock.
Also: parked sockets drained past their buffer through ATO, AT+QSSLRECV and push mode, TCP
and SSL transparent sockets sharing ATO, traces with hang-ups replayed, and the escape
detector fuzzed against the note's three conditions.

Bug found, fixed since: a byte-by-byte CR LF host's late LF, dropped as the ATO line's
ending, was not counted as input before "+++" -- "\\n+++" after a second of silence was taken
as an escape (test_late_lf_read_with_plus_plus_plus_is_input_before_it)."""
from __future__ import annotations

import hashlib
import os
import random
import re
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e import replay_support as rs
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, OddHost

# (the transparent-escape round's address, open line and helpers)
from tests.e2e.test_adversarial_transparent_escape import (CONNECT_OR_ERROR, FINAL, HOST, OPEN, PORT,  # noqa: F401
                                                          connect, escape)

HOST_B, PORT_B = "220.180.239.213", 8012


# -- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture
def sink(emulator, ec2x_strict):
    """(host, advance, port, server): an EC2x (strict, manual time) online on socket 4
    with an OpenSSL server that only reads (it sends when the test says so)."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        yield host, advance, port, server


@pytest.fixture
def echo_online(emulator, ec2x_strict):
    """(host, advance, port, server): as `sink`, with an echo server."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        yield host, advance, port, server


def received(server, n: int, index: int = -1, timeout: float = 10) -> bytes:
    """Exactly what the server's connection got once it has n bytes (then a short grace
    to catch extra)."""
    server.wait_received(n, index=index, timeout=timeout)
    time.sleep(0.05)
    return bytes(server.connections[index].received)


def wait_unread(emulator, client_id: int, n: int, timeout: float = 5) -> None:
    """Until socket client_id holds n bytes the host has not had (control `state`)."""
    deadline = time.monotonic() + timeout
    while True:
        socks = {s["id"]: s for s in emulator.control("state")["sockets"]}
        if socks[client_id]["unread"] >= n:
            return
        assert time.monotonic() < deadline, socks[client_id]
        time.sleep(0.01)


def alive(host) -> None:
    assert host.at("AT") == b"\r\nOK\r\n"
    assert host.at("AT+QSSLSTATE=?").endswith(b"OK\r\n")


# -- the escape and the host hanging up ------------------------------------------------------
def test_plus_plus_plus_held_when_the_host_hangs_up_is_data_and_ato_returns(emulator, sink):
    """"+++" after a second of silence, then the host closes the device before the guard
    time after it has passed: it never was an escape -- the three "+" are data and reach
    the server; the connection stays, and the next program returns with ATO."""
    host, advance, port, server = sink
    host.write(b"before")
    assert received(server, 6) == b"before"
    advance(1.1)
    host.write(b"+++")
    advance(0.5)                                   # (read by the modem; half the guard time)
    total = host.written
    host.close()
    assert received(server, 9, timeout=3) == b"before+++"
    again = Host(port.path)
    try:
        time.sleep(0.1)
        assert again.at("AT") == b"\r\nOK\r\n"       # command mode: the hang-up left online mode
        again.write(b"ATO\r")
        assert again.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        again.write(b"after")
        assert received(server, 14) == b"before+++after"
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        again.write(b"+++")
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        assert again.read_until(FINAL) == b"\r\nOK\r\n"
        assert received(server, 14) == b"before+++after"
    finally:
        again.close()


def test_escape_written_byte_by_byte_with_crlf_ato_then_payload_starting_with_lf(sink):
    """A CR LF host that writes every byte on its own: "+++" one "+" at a time within the
    guard time is an escape; "ATO\\r\\n" byte by byte -- its LF is the line's, not data;
    a payload that starts with LF then keeps that LF."""
    host, advance, port, server = sink
    host.write(b"abc")
    assert received(server, 3) == b"abc"
    advance(1.1)
    for b in b"+++":
        host.write(bytes([b]))
        advance(0.2)
    advance(1.0)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    for b in b"AT+QSSLSTATE=4\r\n":
        host.write(bytes([b]))
        time.sleep(0.002)
    state = host.read_until(FINAL)
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d+,2,1,4,2,"usbmodem",1'
                        rb"\r\n\r\nOK\r\n", state), state
    for b in b"ATO\r\n":
        host.write(bytes([b]))
        time.sleep(0.002)
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    for b in b"\nline\r\n":
        host.write(bytes([b]))
    assert received(server, 3 + 7) == b"abc\nline\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert received(server, 10) == b"abc\nline\r\n"


# -- ATO / AT+QISWTMD answers held back (control `slow`) ---------------------------------------
def test_slow_ato_keeps_peer_data_and_host_bytes_behind_its_connect(emulator, sink):
    """`slow` on ATO: its CONNECT comes 500 ms (modem time) late.  The server sends meanwhile,
    and the host writes its payload right after "ATO\\r" without waiting: the port shows
    CONNECT first, then the server's bytes; the payload goes into the connection after it."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert emulator.control("slow", command="O", ms=500) == {"ok": True}
    host.write(b"ATO\r")
    advance(0.1)
    server.conn.send(b"peer-while-pending")
    host.write(b"payload")
    time.sleep(0.2)
    assert host.quiet_for(0.05) == b""            # nothing before CONNECT
    assert len(server.conn.received) == 0
    advance(0.5)
    assert host.read_until(b"pending") == b"\r\nCONNECT\r\npeer-while-pending"
    assert received(server, 7) == b"payload"
    assert host.quiet_for(0.05) == b""
    assert escape(host, advance) == b"\r\nOK\r\n"
    alive(host)


def test_slow_qiswtmd_to_transparent_with_buffered_data(emulator, sink):
    """AT+QISWTMD=4,0 after "+++", the server's bytes wait ("recv"), then AT+QISWTMD=4,2
    answered late (`slow`): CONNECT, the waiting bytes, then what came during the delay, in
    order, once each; AT+QSSLRECV found nothing to take meanwhile (transparent again)."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    server.conn.send(b"first;")
    host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
    assert emulator.control("slow", command="+QISWTMD", ms=300) == {"ok": True}
    host.write(b"AT+QISWTMD=4,2\r")
    advance(0.1)
    server.conn.send(b"second;")
    time.sleep(0.1)
    assert host.quiet_for(0.05) == b""
    advance(0.3)
    assert host.read_until(b"second;") == b"\r\nCONNECT\r\nfirst;second;"
    server.conn.send(b"third")
    assert host.read_exactly(5) == b"third"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.quiet_for(0.05) == b""


# -- faults injected while online or escaped ------------------------------------------------
def test_send_fail_armed_while_online_spares_transparent_bytes(emulator, sink):
    """`send_fail` counts AT+QSSLSEND only: armed while online, the host's transparent bytes
    still go; after "+++" the next AT+QSSLSEND answers SEND FAIL (nothing sent), the one
    after SEND OK; ATO and the stream goes on -- the server has each byte once, in order."""
    host, advance, port, server = sink
    host.write(b"one,")
    assert received(server, 4) == b"one,"
    assert emulator.control("send_fail", socket=4, count=1) == {"ok": True}
    host.write(b"two,")
    assert received(server, 8) == b"one,two,"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.send_data(4, b"LOST") == b"\r\nSEND FAIL\r\n"
    assert host.send_data(4, b"ok,") == b"\r\nSEND OK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    host.write(b"three")
    assert received(server, 16) == b"one,two,ok,three"


def test_rst_drop_while_streaming_online_gives_an_exact_prefix_then_no_carrier(emulator, sink):
    """The server streams 200 KiB; the control API resets the connection mid-stream: the
    host gets an exact prefix of the stream (nothing duplicated or reordered), then
    NO CARRIER; the socket is closing (state 4) until AT+QSSLCLOSE; ATO: NO CARRIER."""
    host, advance, port, server = sink
    blob = os.urandom(200 * 1024)
    server.conn.send(blob)
    got = host.read_exactly(20000)
    assert emulator.control("drop", socket=4, how="rst") == {"ok": True}
    rest = host.read_until(b"\r\nNO CARRIER\r\n", timeout=10)
    got += rest[:-len(b"\r\nNO CARRIER\r\n")]
    assert blob.startswith(got), (len(got), hashlib.sha256(got).hexdigest())
    assert host.quiet_for(0.1) == b""
    state = host.at("AT+QSSLSTATE=4")
    assert b",4,1,4,2," in state, state
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    alive(host)


def test_close_drop_while_escaped_with_data_falls_back_to_buffer_mode(emulator, sink):
    """After "+++" the server sends 5000 bytes, then the control API closes the connection:
    "recv" then "closed"; AT+QSSLRECV reads each byte once; ATO: NO CARRIER."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    blob = os.urandom(5000)
    server.conn.send(blob)
    wait_unread(emulator, 4, 5000)                    # (in the socket's inbox)
    assert host.quiet_for(0.05) == b""
    assert emulator.control("drop", socket=4, how="close") == {"ok": True}
    assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
    got = b""
    while True:
        host.write(b"AT+QSSLRECV=4,1500\r")
        head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
        if n == 0:
            assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
            break
        got += host.read_exactly(n)
        assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
    assert got == blob
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    alive(host)


def test_blackhole_while_online_then_escape_still_works(emulator, sink):
    """A blackholed link (no packet moves): the host's transparent bytes stop reaching the
    server, but the port still reads them -- "+++" with its guard times answers OK and the
    socket stays connected in access mode 2."""
    host, advance, port, server = sink
    host.write(b"pre")
    assert received(server, 3) == b"pre"
    assert emulator.control("drop", socket=4, how="blackhole") == {"ok": True}
    host.write(b"x" * 4000)
    assert escape(host, advance) == b"\r\nOK\r\n"
    state = host.at("AT+QSSLSTATE=4")
    assert b",2,1,4,2," in state, state
    assert bytes(server.conn.received) == b"pre"
    alive(host)


def test_pdp_deact_while_online_is_no_carrier_then_the_urc(emulator, sink):
    """The bearer goes (control `pdp_deact`) while online: the server's last bytes, then
    NO CARRIER, and only then the held +QIURC: "pdpdeact",1 (URCs wait while online);
    no "closed" URC for the online socket (NO CARRIER was its report)."""
    host, advance, port, server = sink
    server.conn.send(b"last")
    assert host.read_exactly(4) == b"last"
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n')
    assert got == b'\r\nNO CARRIER\r\n\r\n+QIURC: "pdpdeact",1\r\n', got
    assert host.quiet_for(0.2) == b""
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    alive(host)


# -- two sockets, one online at a time ---------------------------------------------------------
def test_two_sockets_take_turns_online_and_the_parked_one_keeps_its_bytes(emulator, ec2x_strict):
    """Socket 4 online, "+++"; socket 5 opened transparent too (CONNECT) -- only it is online
    now: 4's server sends and closes meanwhile, its URCs wait behind 5's escape OK.  ATO then
    returns to 5 (the one that left last), AT+QISWTMD=4,2 is refused (closed), and 4's bytes
    come once each through AT+QSSLRECV.  Both servers have every host byte once, in order."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as a, TlsServer(mode="echo", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        connect(host)
        a.wait_handshake()
        host.write(b"to-A-1;")
        assert received(a, 7) == b"to-A-1;"
        assert escape(host, advance) == b"\r\nOK\r\n"
        connect(host, f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},2')
        b.wait_handshake()
        blob = os.urandom(3000)
        a.conn.send(blob)
        host.write(b"to-B-1;")
        assert host.read_exactly(7) == b"to-B-1;"        # (B's echo only, nothing of A's)
        time.sleep(0.2)
        a.conn.close()
        time.sleep(0.2)
        host.write(b"to-B-2;")
        assert host.read_exactly(7) == b"to-B-2;"
        assert host.quiet_for(0.05) == b""
        got = escape(host, advance)
        assert got == b"\r\nOK\r\n", got
        assert host.read_until(b'"closed",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n'
        state5 = host.at("AT+QSSLSTATE=5")
        assert b",5,1,4,2," in state5 or b',2,1,5,2,' in state5, state5
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        host.write(b"to-B-3")
        assert host.read_exactly(6) == b"to-B-3"
        assert escape(host, advance) == b"\r\nOK\r\n"
        assert host.at("AT+QISWTMD=4,2") == b"\r\nERROR\r\n"
        got = b""
        for _ in range(5):
            host.write(b"AT+QSSLRECV=4,1500\r")
            head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
            n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
            if n == 0:
                assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
                break
            got += host.read_exactly(n)
            assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
        assert got == blob
        assert received(b, 20) == b"to-B-1;to-B-2;to-B-3"
        assert bytes(a.connections[0].received) == b"to-A-1;"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_qiswtmd_hands_the_port_back_and_forth_with_data_waiting_on_both(emulator, ec2x_strict):
    """Sockets 4 and 5 both transparent, each parked with server bytes waiting; the host
    switches with AT+QISWTMD=<id>,2 four times: each CONNECT is followed by exactly that
    socket's waiting bytes, never the other's."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as a, TlsServer(mode="sink", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        connect(host)
        a.wait_handshake()
        assert escape(host, advance) == b"\r\nOK\r\n"
        connect(host, f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},2')
        b.wait_handshake()
        assert escape(host, advance) == b"\r\nOK\r\n"
        expected = {4: b"", 5: b""}
        for turn, (cid, server) in enumerate([(4, a), (5, b), (4, a), (5, b)]):
            for other, srv in ((4, a), (5, b)):
                chunk = b"[%d->%d]" % (turn, other) * 50
                srv.conn.send(chunk)
            time.sleep(0.2)
            assert host.quiet_for(0.05) == b""
            host.write(f"AT+QISWTMD={cid},2\r")
            assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
            # everything sent to cid since it was last online (the turns alternate)
            want = b"".join(b"[%d->%d]" % (t, cid) * 50 for t in range(turn + 1)
                            if t > (turn - 2 if turn >= 2 else -1))
            assert host.read_exactly(len(want)) == want
            assert host.quiet_for(0.05) == b""
            host.write(b"host%d" % turn)
            expected[cid] += b"host%d" % turn
            assert escape(host, advance) == b"\r\nOK\r\n"
        assert received(a, len(expected[4])) == expected[4]
        assert received(b, len(expected[5])) == expected[5]


# -- framing and settings ----------------------------------------------------------------------
def test_atv0_transparent_result_codes_are_digits(emulator, ec2x_strict):
    """ATV0: CONNECT is "1<CR>", the escape's OK "0<CR>", NO CARRIER "3<CR>"; ATO with
    nothing to return to "3<CR>"."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host.write(b"ATV0\r")
        assert host.read_until(b"\r") == b"0\r"
        host.write(OPEN + "\r")
        assert host.read_until(b"\r") == b"1\r"
        server.wait_handshake()
        host.write(b"v0 data")
        assert received(server, 7) == b"v0 data"
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(b"\r") == b"0\r"
        host.write(b"ATO\r")
        assert host.read_until(b"\r") == b"1\r"
        server.conn.send(b"bye")
        server.conn.close()
        assert host.read_until(b"3\r") == b"bye3\r"
        assert host.quiet_for(0.1) == b""
        host.write(b"AT+QSSLCLOSE=4\r")
        assert host.read_until(b"\r") == b"0\r"
        host.write(b"ATO\r")
        assert host.read_until(b"\r") == b"3\r"
        host.write(b"ATV1\r")
        assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"


def test_echo_on_does_not_echo_online_data_nor_the_escape(emulator, ec2x_strict):
    """ATE1: the open's command line is echoed, then nothing of what the host writes online
    (data, "+++") comes back -- only CONNECT's and the escape's result codes."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert host.at("ATE1") == b"\r\nOK\r\n"
        host.write(OPEN + "\r")
        assert host.read_until(CONNECT_OR_ERROR) == OPEN.encode() + b"\r\r\nCONNECT\r\n"
        server.wait_handshake()
        host.write(b"AT\r+data\r\n")
        assert received(server, 10) == b"AT\r+data\r\n"
        assert host.quiet_for(0.1) == b""
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        assert host.at("AT") == b"AT\r\r\nOK\r\n"


def test_s12_changed_while_escaped_rules_the_next_session(sink):
    """ATS12=5 (100 ms) while parked, then ATO: 0.11 s of silence either side is an escape
    now; 0.09 s after "+++" followed by a byte is not (data)."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("ATS12=5") == b"\r\nOK\r\n"
    assert host.at("ATS12?") == b"\r\n005\r\n\r\nOK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    advance(0.11)
    host.write(b"+++")
    advance(0.09)
    host.write(b"z")
    advance(0.11)
    assert host.quiet_for(0.05) == b""
    assert received(server, 4) == b"+++z"
    host.write(b"+++")
    advance(0.11)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert received(server, 4) == b"+++z"


def test_ato_with_a_nonzero_argument_is_an_error_and_changes_nothing(sink):
    """ATO1 is not the EC2x's (ATO[0] only): ERROR, still parked; ATO0 then returns."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("ATO1") == b"\r\nERROR\r\n"
    server.conn.send(b"kept")
    time.sleep(0.1)
    host.write(b"ATO0\r")
    assert host.read_until(b"kept") == b"\r\nCONNECT\r\nkept"


def test_ato_after_the_id_was_closed_and_reopened_in_buffer_mode(emulator, sink):
    """The transparent socket 4 parked, closed by AT+QSSLCLOSE, and id 4 opened again in
    buffer mode: ATO must not take the new connection online (it never was): NO CARRIER."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    assert host.at(f'AT+QSSLOPEN=1,1,4,"{HOST}",{PORT},0') == b"\r\nOK\r\n"
    host.seen(b"\r\n+QSSLOPEN: 4,0\r\n")
    server.wait_connections(2)
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    state = host.at("AT+QSSLSTATE=4")
    assert b",2,1,4,0," in state, state
    assert host.send_data(4, b"buffered") == b"\r\nSEND OK\r\n"
    assert received(server, 8, index=1) == b"buffered"


def recv_all(host, cid: int) -> bytes:
    """AT+QSSLRECV=<cid>,1500 until +QSSLRECV: 0: every byte that waited."""
    got = b""
    for _ in range(1000):
        host.write(f"AT+QSSLRECV={cid},1500\r")
        head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
        if n == 0:
            assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
            return got
        got += host.read_exactly(n)
        assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
    raise AssertionError("AT+QSSLRECV never ran dry")


# -- switching with data buffered ------------------------------------------------------------
def test_partial_qsslrecv_then_qiswtmd_to_transparent_gives_exactly_the_rest(sink):
    """Parked, switched to buffer mode; the server sends 7000 bytes; the host reads 1000 of
    them with AT+QSSLRECV, then AT+QISWTMD=4,2: CONNECT and exactly the other 6000, once."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    blob = os.urandom(7000)
    server.conn.send(blob)
    host.seen(b'\r\n+QSSLURC: "recv",4\r\n')
    time.sleep(0.2)
    first = b""
    while len(first) < 1000:
        host.write(f"AT+QSSLRECV=4,{1000 - len(first)}\r")
        head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
        first += host.read_exactly(n)
        assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
    assert first == blob[:1000]
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    assert host.read_exactly(6000) == blob[1000:]
    assert host.quiet_for(0.1) == b""
    assert escape(host, advance) == b"\r\nOK\r\n"


def test_push_mode_then_back_to_transparent_nothing_pushed_twice(emulator, sink):
    """Parked with 3000 bytes waiting, AT+QISWTMD=4,1 pushes them (framed "recv" URCs);
    AT+QISWTMD=4,2: CONNECT and nothing again; what comes after it arrives unframed."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    a = os.urandom(3000)
    server.conn.send(a)
    wait_unread(emulator, 4, 3000)
    assert host.quiet_for(0.05) == b""
    host.write(b"AT+QISWTMD=4,1\r")
    out = host.read_until(b"\r\nOK\r\n")
    pushed = b""
    framed = bytes(out) + host.quiet_for(0.3)
    pos = 0
    for m in re.finditer(rb'\+QSSLURC: "recv",4,(\d+)\r\n', framed):
        if m.start() < pos:
            continue
        n = int(m.group(1))
        pushed += framed[m.end():m.end() + n]
        pos = m.end() + n
    assert pushed == a, (len(pushed), framed[:80])
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    assert host.quiet_for(0.1) == b""
    server.conn.send(b"after")
    assert host.read_exactly(5) == b"after"


# -- hang-ups around transparent mode ----------------------------------------------------------
def test_host_hangs_up_during_a_slow_ato_and_the_next_host_returns(emulator, sink):
    """ATO answered late (`slow`), the host closes the device before its CONNECT: the next
    program sees no stray CONNECT (the answer was not for it), reads AT's OK, and its own
    ATO returns to the connection with the bytes that waited."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert emulator.control("slow", command="O", ms=400) == {"ok": True}
    host.write(b"ATO\r")
    advance(0.1)
    total = host.written
    host.close()
    time.sleep(0.3)
    server.conn.send(b"waited")
    emulator.advance(port, 0.5)
    time.sleep(0.1)
    again = Host(port.path)
    try:
        time.sleep(0.1)
        assert again.at("AT") == b"\r\nOK\r\n"
        assert emulator.control("slow", command="O", ms=0) == {"ok": True}
        again.write(b"ATO\r")
        assert again.read_until(b"waited") == b"\r\nCONNECT\r\nwaited"
        again.write(b"second host")
        assert received(server, 11) == b"second host"
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        again.write(b"+++")
        emulator.wait_received(port, total + again.written)
        emulator.advance(port, 1.1)
        assert again.read_until(FINAL) == b"\r\nOK\r\n"
    finally:
        again.close()


def test_host_hangs_up_mid_stream_then_ato_gets_a_clean_continuation(emulator, sink):
    """The server streams 1 MiB; the host reads part, closes the device, a new program
    returns with ATO and reads to the end: what it gets after CONNECT is the stream's exact
    tail (unread output of the first program may be lost, nothing doubled or reordered)."""
    host, advance, port, server = sink
    blob = hashlib.sha256(b"seed").digest() * (1 << 15)          # 1 MiB
    blob = bytes(b ^ (i & 0xFF) for i, b in enumerate(blob[:1 << 20]))
    server.conn.send(blob)
    first = host.read_exactly(100_000)
    assert first == blob[:100_000]
    host.close()
    time.sleep(0.3)
    again = Host(port.path)
    try:
        time.sleep(0.1)
        junk = again.quiet_for(0.1)
        assert junk == b"", junk[:80]
        assert again.at("AT") == b"\r\nOK\r\n"
        again.write(b"ATO\r")
        assert again.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        time.sleep(0.5)
        rest = b""
        while True:
            chunk = again.quiet_for(0.3)
            if not chunk:
                break
            rest += chunk
        assert len(first) + len(rest) <= len(blob)
        assert rest and blob.endswith(rest), (len(rest), rest[:40])
    finally:
        again.close()


# -- peers that end the link in other ways -----------------------------------------------------
@pytest.mark.parametrize("how", ["close_notify_no_fin", "fin_no_close_notify"])
def test_peer_ending_the_tls_or_tcp_side_alone_is_no_carrier(sink, how):
    """The server sends its last bytes and ends with a close_notify but keeps TCP open, or
    drops TCP without a close_notify: the host gets the bytes, then NO CARRIER; AT works."""
    host, advance, port, server = sink
    server.conn.send(b"final bytes")
    if how == "close_notify_no_fin":
        server.conn.close(close_notify=True, fin=False)
    else:
        server.conn.close(close_notify=False, fin=True)
    assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=10) == b"final bytes\r\nNO CARRIER\r\n"
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    alive(host)


def test_uart_noise_on_a_stream_ending_in_no_carrier(emulator, open_modem):
    """uart_noise splits the port's output into random small pieces: the server's 3000 bytes,
    then NO CARRIER, arrive whole and in order (wall clock: the noise's pauses run)."""
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        assert emulator.control("uart_noise", on=True, seed=11) == {"ok": True}
        blob = os.urandom(3000)
        server.conn.send(blob)
        server.conn.close()
        got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=15)
        assert got == blob + b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert emulator.control("uart_noise", on=False) == {"ok": True}
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


# -- trace / replay ----------------------------------------------------------------------------
def test_two_sockets_taking_turns_online_replays(open_modem, emulator, tmp_path, capsys):
    """A traced session: socket 4 online, "+++", socket 5 opened transparent, data both ways
    on each, AT+QISWTMD back to 4 with the bytes that waited, ATO to 4 again, closes.  It
    replays with no difference."""
    path = tmp_path / "turns.trace"
    with TlsServer(mode="echo", legacy=True) as a, TlsServer(mode="echo", legacy=True) as b:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;S12=5') == b"\r\nOK\r\n"

        def esc():
            advance(0.2)
            host.write(b"+++")
            advance(0.2)
            assert host.read_until(FINAL) == b"\r\nOK\r\n"
        connect(host)
        host.write(b"A1;")
        assert host.read_exactly(3) == b"A1;"
        esc()
        connect(host, f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},2')
        host.write(b"B1;")
        assert host.read_exactly(3) == b"B1;"
        esc()
        assert host.send_data(4, b"A-parked;") == b"\r\nSEND OK\r\n"
        a.wait_received(12)
        host.write(b"AT+QISWTMD=4,2\r")
        assert host.read_until(b"A-parked;") == b"\r\nCONNECT\r\nA-parked;"
        host.write(b"A2;")
        assert host.read_exactly(3) == b"A2;"
        esc()
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        host.write(b"A3;")
        assert host.read_exactly(3) == b"A3;"
        esc()
        assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        emulator.stop()
    rs.replays(capsys, path)


# -- big backlogs across a mode change ----------------------------------------------------------
def _escape_with_unread_backlog(host, advance, server, size: int) -> tuple[bytes, int]:
    """The server sends `size` bytes while online and the host reads none; "+++" then: what
    the port wrote before the OK is an exact prefix of the stream.  (blob, its length)."""
    blob = os.urandom(size)
    server.conn.send(blob)
    time.sleep(0.5)
    assert escape_raw(host, advance) is None
    got = host.read_until(b"\r\nOK\r\n", timeout=10)
    k = len(got) - 6
    assert got[:k] == blob[:k], k
    return blob, k


def escape_raw(host, advance) -> None:
    advance(1.1)
    host.write(b"+++")
    advance(1.1)


def test_unread_backlog_then_escape_then_ato_gives_the_exact_rest_and_no_carrier(sink):
    """300 KiB from the server, unread while online (the port holds the network back), then
    "+++": an exact prefix, OK; the server closes; ATO: CONNECT, exactly the rest, then
    NO CARRIER (the close could not be seen past the socket's full buffer)."""
    host, advance, port, server = sink
    blob, k = _escape_with_unread_backlog(host, advance, server, 300 * 1024)
    server.conn.close()
    time.sleep(0.3)
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    rest = host.read_until(b"\r\nNO CARRIER\r\n", timeout=10)
    assert rest[:-14] == blob[k:], (len(rest), k)
    alive(host)


def test_unread_backlog_then_escape_then_buffer_mode_reads_the_rest_once(sink):
    """As above, but after "+++" the host switches to buffer mode and reads with AT+QSSLRECV:
    exactly the rest, one "recv" and one "closed" URC, then state 4 in access mode 0."""
    host, advance, port, server = sink
    blob, k = _escape_with_unread_backlog(host, advance, server, 300 * 1024)
    server.conn.close()
    time.sleep(0.3)
    assert host.at("AT+QSSLRECV=4,1500") == b"\r\nERROR\r\n"     # transparent: not readable
    mark = len(host.transcript)
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    rest = recv_all(host, 4)
    assert rest == blob[k:], (len(rest), k)
    host.seen(b'+QSSLURC: "closed",4\r\n')
    tail = bytes(host.transcript[mark:])
    assert tail.count(b'+QSSLURC: "recv",4\r\n') == 1 and tail.count(b'"closed",4') == 1
    state = host.at("AT+QSSLSTATE=4")
    assert b",4,1,4,0," in state, state
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


# -- more fault timing, framing ---------------------------------------------------------------
def test_drop_during_the_guard_time_after_plus_plus_plus_wins(emulator, sink):
    """"+++" with silence before, then the control API closes the connection before the
    guard time after it ends: NO CARRIER, never an OK, and the "+++" is not sent."""
    host, advance, port, server = sink
    host.write(b"head")
    assert received(server, 4) == b"head"
    advance(1.1)
    host.write(b"+++")
    advance(0.5)
    assert emulator.control("drop", socket=4, how="close") == {"ok": True}
    assert host.read_until(FINAL) == b"\r\nNO CARRIER\r\n"
    advance(1.0)
    assert host.quiet_for(0.2) == b""
    assert bytes(server.conn.received) == b"head"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    alive(host)


def test_escape_as_the_first_bytes_after_ato_from_crlf_and_cr_hosts(sink):
    """Right after CONNECT the first bytes the host writes are a guarded "+++" (nothing sent
    in between): an escape, nothing reaches the server -- from a CR host ("ATO\\r") and from
    a CR LF host writing "ATO\\r\\n" byte by byte."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    for b in b"ATO\r\n":
        host.write(bytes([b]))
        time.sleep(0.01)
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    time.sleep(0.1)
    assert bytes(server.conn.received) == b""


def test_s3_hash_frames_connect_ok_and_no_carrier(sink):
    """ATS3=35 ('#'): "ATO#" ends the line; CONNECT, the escape's OK and NO CARRIER are all
    framed <S3><S4> ("#\\n...#\\n"); the '#' line end is not sent as data."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"ATS3=35\r")
    assert host.read_until(b"OK#\n") == b"#\nOK#\n"
    host.write(b"ATO#")
    assert host.read_until(b"CONNECT#\n") == b"#\nCONNECT#\n"
    host.write(b"x#y")
    assert received(server, 3) == b"x#y"
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"OK#\n") == b"#\nOK#\n"
    host.write(b"ATO#")
    assert host.read_until(b"CONNECT#\n") == b"#\nCONNECT#\n"
    server.conn.send(b"end")
    server.conn.close()
    assert host.read_until(b"NO CARRIER#\n") == b"end#\nNO CARRIER#\n"
    host.write(b"ATS3=13#")
    assert host.read_until(b"OK\r\n") == b"\r\nOK\r\n"


def test_handshake_stall_on_a_transparent_open_is_error_569_then_the_next_opens(emulator, ec2x_strict):
    """`handshake_stall`: the transparent open waits its negotiate time, then ERROR (no
    CONNECT), AT+QIGETERROR 569; the id is free and the next open gets CONNECT."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert emulator.control("handshake_stall", count=1) == {"ok": True}
        host.write(OPEN + "\r")
        advance(100)
        assert host.quiet_for(0.1) == b""
        advance(250)
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLSTATE=4") == b"\r\nOK\r\n"
        connect(host)
        host.write(b"works")
        assert host.read_exactly(5) == b"works"


def test_push_mode_drains_a_full_parked_socket_and_its_close_in_order(sink):
    """Parked with 300 KiB waiting (past the socket's buffer: the network held back) and the
    server closed behind them: AT+QISWTMD=4,1 answers OK, then pushes every byte once, in
    order, in framed "recv" URCs (each ending CR LF), and only then "closed"."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    blob = os.urandom(300 * 1024)
    server.conn.send(blob)
    time.sleep(0.3)
    server.conn.close()
    time.sleep(0.3)
    assert host.quiet_for(0.1) == b""
    host.write(b"AT+QISWTMD=4,1\r")
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    pat = re.compile(rb'\r\n\+QSSLURC: "recv",4,(\d+)\r\n|\r\n\+QSSLURC: "closed",4\r\n')
    got = b""
    while True:
        head = host.read_until(pat)
        m = pat.search(head)
        assert m.start() == 0, head[:80]              # nothing between the pushes
        if m.group(1) is None:
            break
        got += host.read_exactly(int(m.group(1)))
        assert host.read_exactly(2) == b"\r\n"      # (a push ends with CR LF)
    assert got == blob, len(got)
    assert host.quiet_for(0.1) == b""
    state = host.at("AT+QSSLSTATE=4")
    assert b",4,1,4,1," in state, state
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_repeat_last_line_re_enters_transparent_mode(sink):
    """"A/" repeats the last command line: after "ato\\r" (lower case) it is ATO again, after
    AT+QISWTMD=4,2 that again -- CONNECT each time; "A/" is never data."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"ato\r")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"A/")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"A/")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    host.write(b"!")
    assert received(server, 1) == b"!"


def test_ssl_and_tcp_transparent_sockets_share_ato_and_qiswtmd(emulator, sink, tcp_echo):
    """SSL socket 4 parked; AT+QIOPEN TCP id 1 in mode 2 (CONNECT) goes online and echoes;
    "+++"; AT+QISWTMD=4,2 returns to the SSL socket with its waiting bytes; "+++"; ATO goes
    to the SSL one (it left last); AT+QISWTMD=1,2 back to TCP.  Nothing crosses over."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    host.write(b"tcp-1;")
    advance(0.3)                                   # (transwaittm: the packet leaves)
    assert host.read_exactly(6) == b"tcp-1;"
    server.conn.send(b"ssl-waiting")
    time.sleep(0.2)
    assert host.quiet_for(0.05) == b""
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"AT+QISWTMD=4,2\r")
    assert host.read_until(b"waiting") == b"\r\nCONNECT\r\nssl-waiting"
    host.write(b"ssl-1;")
    assert received(server, 6) == b"ssl-1;"
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    host.write(b"ssl-2;")
    assert received(server, 12) == b"ssl-1;ssl-2;"
    assert escape(host, advance) == b"\r\nOK\r\n"
    host.write(b"AT+QISWTMD=1,2\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    host.write(b"tcp-2;")
    advance(0.3)
    assert host.read_exactly(6) == b"tcp-2;"
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert bytes(server.conn.received) == b"ssl-1;ssl-2;"
    assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"


def test_ato_inside_command_chains(sink):
    """ATO ends a chain or sits among basic commands: "AT+CSQ;O" answers +CSQ then CONNECT,
    "ATE0O", "ATS12=50O0", "ATO;", "AT O" all CONNECT; each session carries data."""
    host, advance, port, server = sink
    sent = b""
    for n, line in enumerate([b"AT+CSQ;O\r", b"ATE0O\r", b"ATS12=50O0\r", b"ATO;\r", b"AT O\r"]):
        assert escape(host, advance) == b"\r\nOK\r\n"
        host.write(line)
        got = host.read_until(CONNECT_OR_ERROR)
        assert re.fullmatch(rb"(\r\n\+CSQ: \d+,\d+\r\n)?\r\nCONNECT\r\n", got), (line, got)
        assert (b"+CSQ" in got) == (n == 0)
        host.write(b"<%d>" % n)
        sent += b"<%d>" % n
        assert received(server, len(sent)) == sent


def test_registration_loss_while_online_no_carrier_then_held_urcs_in_order(emulator, sink):
    """While online: an injected URC (control `urc`) waits; then registration is lost
    (control `register` stat 0, AT+CREG/CGREG/CEREG=1): the bearer and the connection go --
    NO CARRIER first, then every held URC in the order raised (the injected one, +CREG: 0,
    +CGREG: 0, +CEREG: 0, "pdpdeact"); the socket is closing in access mode 2; ATO: NO CARRIER."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+CREG=1;+CGREG=1;+CEREG=1") == b"\r\nOK\r\n"
    host.write(b"ATO\r")
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    assert emulator.control("urc", text='+QIURC: "x"') == {"ok": True}
    assert host.quiet_for(0.1) == b""
    server.conn.send(b"abc")
    assert host.read_exactly(3) == b"abc"
    assert emulator.control("register", stat=0) == {"ok": True}
    got = host.read_until(b'"pdpdeact",1\r\n')
    assert got == (b'\r\nNO CARRIER\r\n\r\n+QIURC: "x"\r\n\r\n+CREG: 0\r\n\r\n+CGREG: 0\r\n'
                   b'\r\n+CEREG: 0\r\n\r\n+QIURC: "pdpdeact",1\r\n'), got
    assert host.quiet_for(0.1) == b""
    state = host.at("AT+QSSLSTATE=4")
    assert b",4,1,4,2," in state, state
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_pdp_deact_while_parked_with_data_falls_back_to_buffer_mode(emulator, sink):
    """Parked with bytes waiting, the bearer goes (control `pdp_deact`): "pdpdeact", then
    "recv" and "closed" for the socket; AT+QSSLRECV reads the bytes once; ATO: NO CARRIER."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    server.conn.send(b"waiting bytes")
    wait_unread(emulator, 4, 13)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.read_until(b'"closed",4\r\n') == (b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "recv",4\r\n'
                                                   b'\r\n+QSSLURC: "closed",4\r\n')
    assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 13\r\nwaiting bytes\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_open_result_urc_of_another_socket_waits_behind_online_mode(emulator, sink):
    """A buffer-mode open of socket 5 over a 300 ms network (control `net`), then ATO to the
    parked socket 4: the handshake completes while online -- its +QSSLOPEN: 5,0 waits and
    comes right after the escape's OK."""
    host, advance, port, server = sink
    with TlsServer(mode="echo", legacy=True) as b:
        emulator.router.add_map(HOST_B, PORT_B, "127.0.0.1", b.port)
        assert escape(host, advance) == b"\r\nOK\r\n"
        assert emulator.control("net", latency_ms=300) == {"ok": True}
        assert host.at(f'AT+QSSLOPEN=1,1,5,"{HOST_B}",{PORT_B},0') == b"\r\nOK\r\n"
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        for _ in range(10):
            advance(0.5)
            time.sleep(0.03)
        b.wait_handshake()
        assert host.quiet_for(0.2) == b""
        assert escape(host, advance) == b"\r\nOK\r\n"
        assert host.read_until(b"\r\n+QSSLOPEN: 5,0\r\n") == b"\r\n+QSSLOPEN: 5,0\r\n"
        assert host.send_data(5, b"five") == b"\r\nSEND OK\r\n"


# -- slow opens, hang-ups and odd readers ------------------------------------------------------
@pytest.mark.parametrize("size", [1000, 200 * 1024])
def test_slow_open_server_sends_and_closes_before_connect(emulator, ec2x_strict, size):
    """The transparent open's answer is held 2 s (`slow`); the server sends (past the
    socket's 64 KiB buffer in the larger case) and closes meanwhile: CONNECT, every byte
    once, NO CARRIER -- never a "closed" URC; the socket closing, access mode 2."""
    host, advance, port = ec2x_strict
    blob = os.urandom(size)
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert emulator.control("slow", command="+QSSLOPEN", ms=2000) == {"ok": True}
        host.write(OPEN + "\r")
        conn = server.wait_handshake()
        conn.send(blob)
        conn.close()
        time.sleep(0.4)
        assert host.quiet_for(0.1) == b""
        advance(2.1)
        got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=10)
        assert got[:11] == b"\r\nCONNECT\r\n" and got[11:-14] == blob, len(got)
        assert host.quiet_for(0.1) == b""
        state = host.at("AT+QSSLSTATE=4")
        assert b",4,1,4,2," in state, state
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


def test_host_hangs_up_during_a_slow_transparent_open(emulator, ec2x_strict):
    """The host closes the device while its transparent open's answer is held (`slow`); the
    server sends and closes meanwhile.  The next program's AT waits for the busy port, then
    it gets "recv", "closed" (the buffer fall-back), OK; no CONNECT; the bytes via
    AT+QSSLRECV."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert emulator.control("slow", command="+QSSLOPEN", ms=2000) == {"ok": True}
        host.write(OPEN + "\r")
        conn = server.wait_handshake()
        conn.send(b"early data")
        conn.close()
        time.sleep(0.3)
        total = host.written
        host.close()
        time.sleep(0.3)
        again = Host(port.path)
        try:
            time.sleep(0.1)
            again.write(b"AT\r")
            time.sleep(0.1)
            assert again.quiet_for(0.1) == b""          # (the port is busy with the open)
            emulator.wait_received(port, total + again.written)
            emulator.advance(port, 2.1)
            got = again.read_until(FINAL)
            assert got == b'\r\n+QSSLURC: "recv",4\r\n\r\n+QSSLURC: "closed",4\r\n\r\nOK\r\n', got
            assert again.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 10\r\nearly data\r\n\r\nOK\r\n"
            assert again.at("ATO") == b"\r\nNO CARRIER\r\n"
        finally:
            again.close()


def test_second_program_writes_byte_by_byte_and_reads_in_odd_chunks(emulator, echo_online):
    """The first program leaves online mode by closing the device; a second one (reads of
    1, 3, 7, 4095 bytes in turn) returns with ATO, echoes 3000 bytes written one at a time,
    escapes, returns, and reads 50 KB then NO CARRIER when the server ends: exact bytes."""
    host, advance, port, server = echo_online
    host.write(b"first;")
    assert host.read_exactly(6) == b"first;"
    total = host.written
    host.close()
    time.sleep(0.3)
    odd = OddHost(port.path)
    try:
        time.sleep(0.1)
        assert odd.at("AT") == b"\r\nOK\r\n"
        odd.write(b"ATO\r")
        assert odd.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        data = bytes((i * 7 + 1) % 256 for i in range(3000))
        for i in range(len(data)):
            odd.write(data[i:i + 1])
        assert odd.read_exactly(len(data)) == data
        emulator.wait_received(port, total + odd.written)
        emulator.advance(port, 1.1)
        odd.write(b"+++")
        emulator.wait_received(port, total + odd.written)
        emulator.advance(port, 1.1)
        assert odd.read_until(FINAL) == b"\r\nOK\r\n"
        odd.write(b"ATO\r")
        assert odd.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        blob = os.urandom(50_000)
        server.conn.send(blob)
        server.conn.close()
        got = odd.read_until(b"\r\nNO CARRIER\r\n", timeout=10)
        assert got == blob + b"\r\nNO CARRIER\r\n"
        assert received(server, 6 + 3000) == b"first;" + data
        assert odd.at("AT+QSSLCLOSE=4") == b"\r\nOK\r\n"
    finally:
        odd.close()


def test_plus_plus_plus_held_at_a_hang_up_then_ato_replays(open_modem, emulator, tmp_path, capsys):
    """A traced session: online, "+++" held (its guard time after not over) when the host
    closes the device -- the three "+" are data --, a second program returns with ATO,
    sends, escapes.  The trace (with its hang-up) replays with no difference."""
    path = tmp_path / "held.trace"
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path), manual_time=True)
        advance = emulator.advancer(port, host)
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        connect(host)
        server.wait_handshake()
        host.write(b"before")
        server.wait_received(6)
        advance(1.1)
        host.write(b"+++")
        advance(0.5)
        total = host.written
        host.close()
        assert received(server, 9, timeout=3) == b"before+++"
        again = Host(port.path)
        try:
            time.sleep(0.1)
            assert again.at("AT") == b"\r\nOK\r\n"
            again.write(b"ATO\r")
            assert again.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
            again.write(b"after")
            assert received(server, 14) == b"before+++after"
            emulator.wait_received(port, total + again.written)
            emulator.advance(port, 1.1)
            again.write(b"+++")
            emulator.wait_received(port, total + again.written)
            emulator.advance(port, 1.1)
            assert again.read_until(FINAL) == b"\r\nOK\r\n"
        finally:
            again.close()
        emulator.stop()
    rs.replays(capsys, path)


def test_qsslsend_data_and_ato_in_one_write_keep_their_order(sink):
    """Parked: AT+QSSLSEND's data and "ATO\\r" written together, then online bytes at
    once, 30 times: SEND OK, CONNECT; the server has s0;o0;s1;o1;... exactly, in order (the
    send's bytes, encrypted a moment later, never overtaken by the online ones)."""
    host, advance, port, server = sink
    expected = b""
    for i in range(30):
        assert escape(host, advance) == b"\r\nOK\r\n"
        parked, online = b"s%d;" % i, b"o%d;" % i
        host.write(f"AT+QSSLSEND=4,{len(parked)}\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(parked + b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nSEND OK\r\n\r\nCONNECT\r\n"
        host.write(online)
        expected += parked + online
    assert received(server, len(expected)) == expected


def test_qsslclose_after_escape_waits_for_a_slow_links_bytes(emulator, sink):
    """30000 bytes written online over an 80 kbit/s link (control `net`), "+++" at once (OK
    while most are still on their way), AT+QSSLCLOSE=4: its OK comes once they have left;
    the server has all of them, in order, then the close_notify."""
    host, advance, port, server = sink
    assert emulator.control("net", socket=4, kbps=80) == {"ok": True}
    blob = os.urandom(30000)
    host.write(blob)
    assert escape(host, advance) == b"\r\nOK\r\n"
    assert len(server.conn.received) < len(blob)
    host.write(b"AT+QSSLCLOSE=4\r")
    for _ in range(20):                            # (the linger runs on the modem's clock)
        advance(0.5)
        time.sleep(0.02)
        host._fill()
        if b"OK" in host.pending:
            break
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert received(server, len(blob)) == blob
    server.wait_for(lambda: server.conn.client_eof, 5, "the close")
    assert server.conn.close_notify_received
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"


# -- the escape rule, fuzzed against the note's three conditions ---------------------------------
GUARD = 1.0
GAPS = [0, 0.05, 0.25, 0.45, 0.7, 0.97, 1.03, 1.3]      # (no sum of two equals the guard time)


def note_escape(t0: float, steps) -> tuple[int | None, bytes]:
    """The note's rule on (bytes, pause after) steps starting t0 after CONNECT: the index of
    the third "+" of the first escape (silence >= 1 s before, the three within 1 s, silence
    >= 1 s after) and the data before it; (None, everything) when there is none."""
    seq, t = [], t0
    for data, gap in steps:
        seq += [(t, b) for b in data]
        t += gap
    for j in range(2, len(seq)):
        if bytes(b for _, b in seq[j - 2:j + 1]) != b"+++":
            continue
        before = seq[j - 2][0] - (seq[j - 3][0] if j >= 3 else 0.0)
        after = seq[j + 1][0] - seq[j][0] if j + 1 < len(seq) else 99
        if before >= GUARD and seq[j][0] - seq[j - 2][0] < GUARD and after >= GUARD:
            return j, bytes(b for _, b in seq[:j - 2])
    return None, bytes(b for _, b in seq)


def test_escape_detector_matches_the_note_on_random_timings(sink):
    """150 random sessions of "+" and "a" written in 1-3 byte pieces with pauses around the
    guard time (modem clock): the port leaves online mode exactly when the note's rule says,
    and the server has exactly the bytes before the escape (all of them when there is none)."""
    host, advance, port, server = sink
    rng = random.Random(20261207)
    total = 0
    for case in range(150):
        assert escape(host, advance) == b"\r\nOK\r\n", case
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        t0 = rng.choice(GAPS)
        steps = [(bytes(rng.choice(b"+++a") for _ in range(rng.randint(1, 3))), rng.choice(GAPS))
                 for _ in range(rng.randint(1, 6))]
        j, expect = note_escape(t0, steps)
        if j is not None:                           # nothing after the escape's third "+"
            cut, count = [], 0
            for data, gap in steps:
                if count + len(data) > j:
                    cut.append((data[:j + 1 - count], 1.3))
                    break
                cut.append((data, gap))
                count += len(data)
            steps = cut
        advance(t0)
        for data, gap in steps:
            host.write(data)
            advance(gap)
        advance(1.3)
        if j is not None:
            assert host.read_until(FINAL, timeout=3) == b"\r\nOK\r\n", (case, t0, steps)
            host.write(b"ATO\r")
            assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        else:
            assert host.quiet_for(0.01) == b"", (case, t0, steps)
        total += len(expect)
        if expect:
            server.wait_received(total, timeout=3)
        time.sleep(0.01)
        got = bytes(server.conn.received)
        assert len(got) == total and got[total - len(expect):] == expect, (case, t0, steps, got[-20:])


# -- a random walk through the modes --------------------------------------------------------------
def _read_recv(host) -> bytes:
    """AT+QSSLRECV=4,1500 until it runs dry, URCs around the answers allowed."""
    got = b""
    while True:
        host.write(b"AT+QSSLRECV=4,1500\r")
        head = host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        assert re.fullmatch(rb'(\r\n\+QSSLURC: "recv",4\r\n)*\r\n\+QSSLRECV: \d+\r\n', head), head
        n = int(re.search(rb"\+QSSLRECV: (\d+)", head).group(1))
        if n == 0:
            assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
            return got
        got += host.read_exactly(n)
        assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"


def _read_push(host, n: int) -> bytes:
    """n bytes of direct-push frames: +QSSLURC: "recv",4,<len> CR LF, the data, CR LF."""
    got = b""
    while len(got) < n:
        head = host.read_until(re.compile(rb'\+QSSLURC: "recv",4,\d+\r\n'))
        assert re.fullmatch(rb'\r\n\+QSSLURC: "recv",4,\d+\r\n', head), head
        got += host.read_exactly(int(re.search(rb",(\d+)\r\n", head).group(1)))
        assert host.read_exactly(2) == b"\r\n"
    assert len(got) == n
    return got


def test_random_walk_through_online_parked_buffer_and_push_mode(emulator, sink):
    """300 random steps on one connection: the server sends, the host sends (online, or
    AT+QSSLSEND while parked, some failed by the control API's `send_fail`), "+++", ATO,
    AT+QISWTMD=4,0 / 4,1 / 4,2, AT+QSSLRECV, and the host closing the device and a new
    program opening it.  Whatever path the server's bytes take to the host (online, after
    ATO's or AT+QISWTMD's CONNECT, pushed, through AT+QSSLRECV), the hosts have the
    server's stream exactly, with exactly the URCs each mode gives; the server has exactly
    the bytes that were not failed; AT answers at the end."""
    host, _, port, server = sink
    hosts = [host]
    base = 0                               # bytes earlier programs wrote

    def advance(seconds: float) -> None:
        emulator.wait_received(port, base + host.written)
        emulator.advance(port, seconds)
    fails = 0                              # send_fail still armed
    rng = random.Random(7)
    mode = "online"                        # online | parked (transparent) | buffer | push
    waiting = b""                          # server bytes not yet given to the host
    to_host = from_host = b""              # what each side sent
    got = b""                              # what the host received of the server's stream
    recv_urc = b'\r\n+QSSLURC: "recv",4\r\n'
    for step in range(300):
        action = rng.choice(["srv", "srv", "host", "host", "escape", "ato", "buffer", "push",
                             "read", "swtmd2", "fail", "reopen"])
        if action == "srv":
            data = os.urandom(rng.randint(1, 3000))
            to_host += data
            server.conn.send(data)
            if mode == "online":
                got += host.read_exactly(len(data))
            elif mode == "push":
                got += _read_push(host, len(data))
            else:
                if mode == "buffer" and not waiting:
                    assert host.read_until(recv_urc) == recv_urc, step
                waiting += data
                wait_unread(emulator, 4, len(waiting))
        elif action == "host":
            data = bytes(rng.choice(b"ab+\r\n\x00\x1a") for _ in range(rng.randint(1, 1000)))
            if mode == "online":
                host.write(data)
                from_host += data
            elif fails:
                assert host.send_data(4, data) == b"\r\nSEND FAIL\r\n", step
                fails -= 1
            else:
                assert host.send_data(4, data) == b"\r\nSEND OK\r\n", step
                from_host += data
        elif action == "fail":
            assert emulator.control("send_fail", socket=4, count=1) == {"ok": True}
            fails = 1                                      # (a new count replaces the old)
        elif action == "reopen":
            assert host.quiet_for(0.02) == b"", step
            base += host.written
            host.close()
            time.sleep(0.15)                               # (the emulator sees the hang-up)
            host = Host(port.path)
            hosts.append(host)
            time.sleep(0.06)
            assert host.at("AT") == b"\r\nOK\r\n", step
            if mode == "online":
                mode = "parked"                            # the connection stays (ATO)
        elif action == "escape" and mode == "online":
            assert escape(host, advance) == b"\r\nOK\r\n", step
            mode = "parked"
        elif action in ("ato", "swtmd2") and mode != "online":
            host.write(b"ATO\r" if action == "ato" else b"AT+QISWTMD=4,2\r")
            assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n", step
            got += host.read_exactly(len(waiting))
            waiting, mode = b"", "online"
        elif action == "buffer" and mode != "online":
            assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n", step
            if waiting:                                    # (a reminder each time)
                assert host.read_until(recv_urc) == recv_urc, step
            mode = "buffer"
        elif action == "push" and mode != "online":
            assert host.at("AT+QISWTMD=4,1") == b"\r\nOK\r\n", step
            got += _read_push(host, len(waiting))
            waiting, mode = b"", "push"
        elif action == "read" and mode == "buffer":
            got += _read_recv(host)
            waiting = b""
        assert got == to_host[:len(got)], step
    assert host.quiet_for(0.05) == b""
    if mode == "online":
        assert escape(host, advance) == b"\r\nOK\r\n"
    assert host.at("AT+QISWTMD=4,0") == b"\r\nOK\r\n"
    got += _read_recv(host)
    assert got == to_host, (len(got), len(to_host))
    assert received(server, len(from_host)) == from_host
    alive(host)
    if host is not hosts[0]:
        host.close()

# -- the late LF of a byte-by-byte CR LF host and the escape's guard time ------------------------
def test_late_lf_read_with_plus_plus_plus_is_input_before_it(sink):
    """A CR LF host seen writing its lines byte by byte (its LF is its line's however late)
    writes "ATO\\r" without its LF, then, a second later, "\\n+++" in one write and stays
    silent.  Whether the LF is the ATO line's (dropped) or data, it is a character the host
    input together with "+++": no silence before "+++", so no escape -- the port stays
    online and "+++" reaches the server (a real module, with no late-LF rule, sends all four
    bytes)."""
    host, advance, port, server = sink
    assert escape(host, advance) == b"\r\nOK\r\n"
    for b in b"AT\r\n":                             # (learnt: CR LF, written byte by byte)
        host.write(bytes([b]))
        time.sleep(0.01)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    for b in b"ATO\r":
        host.write(bytes([b]))
        time.sleep(0.01)
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    advance(1.1)
    host.write(b"\n+++")
    advance(1.1)
    assert host.quiet_for(0.2) == b""                 # still online: no OK
    time.sleep(0.1)
    assert bytes(server.conn.received) in (b"+++", b"\n+++")
