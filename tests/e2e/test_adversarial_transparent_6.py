"""A sixth adversarial pass over transparent access mode (EC2x AT+QSSLOPEN/AT+QIOPEN ...,2,
ML302 connectmode 1), where test_transparent.py and test_adversarial_transparent_*.py do not
already go (SSL note §1.3 "Exit / Return to transparent access mode", docs/behaviour.md
"Transparent access mode" and "AT+QICFG" transpktsize / transwaittm):

* TCP transparent with transpktsize 100 / transwaittm 2 s on the modem's manual clock: the
  full packets leave at once, the tail waits the modem's clock (not the wall clock); a short
  S12 escape sends the waiting tail before OK; AT&D1's DTR escape does the same;
* an SSL transparent socket is not held by transwaittm (decision: the SSL note has no QICFG);
* UDP transparent, one 70 000-byte write with transpktsize 1460: every datagram exactly
  1460 bytes across the emulator's pty reads, the tail after transwaittm;
* full duplex over TCP with transpktsize 7: 160 KiB echoed while the host writes in a thread;
* a host that writes 256 KiB before it reads anything of the echo (no deadlock, exact);
* the escape's guard times follow the modem's clock: 1.3 s of wall clock between "+" and "++"
  is still "within 1 s" when the modem's clock stood still;
* a TCP peer that sends and closes while the port is escaped: "recv", "closed", ATO answers
  NO CARRIER, AT+QIRD reads the bytes once;
* the host closes the port online, the server sends and ends the connection before a new host
  opens it: the new host reads nothing stale, ATO is NO CARRIER, the bytes are read once;
* the ML302 has no AT+QISWTMD (ERROR) and no AT+QSSLRECV of a parked transparent socket;
  its ATO gives the bytes that waited; a peer close while parked falls back to its own
  "recv"/"close" URCs, ATO is NO CARRIER, AT+QSSLRECV reads the bytes once, then OK alone;
* dataformat 1,1 / recvind 1 leave transparent bytes raw, convert the buffer-mode read;
* "+"s the escape detector held wait transwaittm from their arrival, not from their
  release (was a bug);
* "+" / "++" whose guard time ran out while the loop was busy do not swallow a real "+++"
  escape read together with them (was a bug: an idle loop escaped, a busy one did not).
Every byte compared; guard times on the modem's manual clock."""
from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer, UdpEchoServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, qird, wait_for
from tests.e2e.answer_support import collect
from tests.e2e.test_adversarial_transparent_drivers import online_to_sink, realtime  # noqa: F401
from tests.e2e.test_adversarial_transparent_escape import (  # noqa: F401
    CONNECT_OR_ERROR, FINAL, HOST, PORT, ato, connect, escape, online, quiet_peer, received)

OK = b"\r\nOK\r\n"


def tcp_transparent(host, kind: str = "TCP", addr: str = TCP_HOST, port: int = TCP_PORT) -> None:
    host.write(f'AT+QIOPEN=1,0,"{kind}","{addr}",{port},0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"


def no_plus(n: int, seed: int = 0) -> bytes:
    """n pseudo-random bytes without a '+' (nothing the escape detector could hold)."""
    data = bytearray(os.urandom(n))
    for i, b in enumerate(data):
        if b == 0x2B:
            data[i] = 0x2A
    return bytes(data)


# -- transpktsize / transwaittm on TCP, modem clock ---------------------------------------------
def test_tcp_full_packets_go_at_once_and_the_tail_waits_the_modem_clock(emulator, ec2x_strict, tcp_sink):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",100') == OK
    assert host.at('AT+QICFG="transwaittm",20') == OK          # 2 s
    assert host.at("ATS12=10") == OK                            # 200 ms guard times
    tcp_transparent(host)
    conn = tcp_sink.wait_connection()
    data = no_plus(250)
    host.write(data)
    conn.wait_received(200)
    time.sleep(0.5)                                  # wall clock runs, the modem's does not
    assert bytes(conn.received) == data[:200]
    advance(1.9)
    time.sleep(0.2)
    assert bytes(conn.received) == data[:200]
    advance(0.2)
    assert conn.wait_received(250) == data
    time.sleep(0.1)
    assert len(conn.received) == 250
    # a tail waiting for transwaittm when a short-guard escape completes: sent before OK, once
    host.write(b"tail!")
    advance(0.3)
    host.write(b"+++")
    advance(0.3)                                     # 0.6 s: the 2 s wait is not over
    assert host.read_until(FINAL) == OK
    assert conn.wait_received(255, timeout=3) == data + b"tail!"
    advance(5)
    time.sleep(0.2)
    assert bytes(conn.received) == data + b"tail!"
    assert ato(host) == b"\r\nCONNECT\r\n"
    host.write(b"x" * 100)                           # a full packet again goes at once
    assert conn.wait_received(355) == data + b"tail!" + b"x" * 100


def test_tcp_dtr_escape_with_and_d1_sends_the_waiting_tail(emulator, ec2x_strict, tcp_sink):
    host, advance, port = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",20') == OK
    assert host.at("AT&D1") == OK
    tcp_transparent(host)
    conn = tcp_sink.wait_connection()
    host.write(b"held by transwaittm")
    advance(0.5)
    time.sleep(0.2)
    assert bytes(conn.received) == b""
    emulator.run(port.modem.set_dtr, 0)
    emulator.run(port.modem.set_dtr, 1)
    assert host.read_until(FINAL) == OK
    assert conn.wait_received(19, timeout=3) == b"held by transwaittm"
    advance(3)
    time.sleep(0.2)
    assert bytes(conn.received) == b"held by transwaittm"
    assert ato(host) == b"\r\nCONNECT\r\n"


def test_ssl_transparent_is_not_held_by_transwaittm(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",4') == OK
    assert host.at('AT+QICFG="transwaittm",20') == OK
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host)
        server.wait_handshake()
        host.write(b"abcdefghij")
        assert received(server, 10, timeout=3) == b"abcdefghij"     # no clock advanced


def test_udp_one_big_write_is_cut_into_exact_transpktsize_datagrams(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",1460') == OK
    assert host.at('AT+QICFG="transwaittm",20') == OK
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        tcp_transparent(host, "UDP", UDP_HOST, UDP_PORT)
        data = no_plus(70000)
        full = len(data) // 1460                                     # 47, then 1380 bytes
        host.write(data)
        got = [d for _, d in server.wait_datagrams(full)]
        time.sleep(0.4)
        assert [len(d) for _, d in server.log] == [1460] * full
        assert b"".join(got) == data[:full * 1460]
        advance(2.1)
        got = [d for _, d in server.wait_datagrams(full + 1)]
        assert got[-1] == data[full * 1460:]
        assert b"".join(got) == data


# -- full duplex ------------------------------------------------------------------------------------
def test_tcp_full_duplex_with_seven_byte_packets(emulator, ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transpktsize",7') == OK
    assert host.at('AT+QICFG="transwaittm",0') == OK
    tcp_transparent(host)
    blob = bytearray(os.urandom(160 * 1024))
    for i in range(0, len(blob) - 10, 9973):
        blob[i:i + 3] = b"+++"                        # no silence around them: data
    blob[-1:] = b"!"
    blob = bytes(blob)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            pos, step = 0, 1
            while pos < len(blob):
                host.write(blob[pos:pos + step])
                pos += step
                step = step * 3 % 4093 + 1
        except BaseException as exc:                  # pragma: no cover - reported below
            errors.append(exc)
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = host.read_exactly(len(blob), timeout=18)
    t.join(5)
    assert not errors
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(blob).hexdigest()
    conn = tcp_echo.wait_connection()
    assert bytes(conn.received) == blob
    assert host.quiet_for(0.2) == b""


def test_ssl_host_writes_256_kib_before_reading_the_echo(online):
    host, advance, port, server = online
    blob = no_plus(256 * 1024)
    done = threading.Event()

    def writer() -> None:
        host.write(blob)
        done.set()
    threading.Thread(target=writer, daemon=True).start()
    assert done.wait(15), "the host's write never completed (flow control deadlock)"
    got = host.read_exactly(len(blob), timeout=15)
    assert got == blob
    assert received(server, len(blob)) == blob
    assert host.quiet_for(0.2) == b""


# -- guard times: the modem's clock, not the wall clock ----------------------------------------------
def test_escape_guard_times_follow_the_modem_clock_not_the_wall_clock(online):
    host, advance, port, server = online
    host.write(b"data")
    assert host.read_exactly(4) == b"data"
    advance(1.1)
    host.write(b"+")
    time.sleep(1.3)                 # past 1 s of wall clock; the modem's clock stands still
    host.write(b"++")
    time.sleep(1.3)
    assert host.quiet_for(0.1) == b""                  # its 1 s after has not passed either
    advance(1.1)
    assert host.read_until(FINAL) == OK
    time.sleep(0.1)
    assert bytes(server.conn.received) == b"data"
    assert ato(host) == b"\r\nCONNECT\r\n"
    host.write(b"more")
    assert host.read_exactly(4) == b"more"
    assert received(server, 8) == b"datamore"


# -- peer ends while the port is in command mode ----------------------------------------------------
def test_tcp_peer_sends_and_closes_while_escaped_ato_is_no_carrier(emulator, ec2x_strict, peer_factory):
    host, advance, _ = ec2x_strict
    peer = peer_factory()
    assert host.at('AT+QICFG="transwaittm",0') == OK
    tcp_transparent(host)
    host.write(b"up")
    wait_for(lambda: bytes(peer.got) == b"up", what="the server got 'up'")
    assert escape(host, advance) == OK
    late = b"late\r\nNO CARRIER\r\n+++\r\nOK\r\n"
    peer.send(late)
    peer.close()
    assert host.read_until(b'+QIURC: "closed",0\r\n') == \
        b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n'
    assert ato(host) == b"\r\nNO CARRIER\r\n"
    assert qird(host, 0)[1] == late
    assert qird(host, 0)[1] == b""
    assert host.at("AT+QICLOSE=0") == OK
    assert bytes(peer.got) == b"up"


def test_peer_sends_and_ends_while_no_host_holds_the_port(emulator, quiet_peer):
    host, advance, port, server = quiet_peer
    host.write(b"bye")
    assert received(server, 3) == b"bye"
    host.close()
    time.sleep(0.3)
    server.conn.send(b"nobody listened")
    time.sleep(0.2)
    server.conn.close()
    time.sleep(0.5)
    again = Host(port.path)
    try:
        assert again.quiet_for(0.3) == b""
        assert again.at("AT") == OK
        again.write(b"ATO\r")
        assert again.read_until(CONNECT_OR_ERROR) == b"\r\nNO CARRIER\r\n"
        answer = again.at("AT+QSSLRECV=4,100")
        assert answer == b"\r\n+QSSLRECV: 15\r\nnobody listened\r\n\r\nOK\r\n"
        assert again.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert again.at("AT+QSSLCLOSE=4") == OK
    finally:
        again.close()


# -- ML302 --------------------------------------------------------------------------------------------
def test_ml302_has_no_qiswtmd_and_ato_returns_the_waiting_bytes(emulator, ml302_strict):
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        server.wait_handshake()
        host.write(b"ml302")
        assert received(server, 5) == b"ml302"
        assert escape(host, advance) == OK
        server.conn.send(b"parked bytes")
        time.sleep(0.3)
        assert host.quiet_for(0.1) == b""
        assert host.at("AT+QISWTMD=0,2").endswith(b"ERROR\r\n")
        assert host.at("AT+QISWTMD=0,0").endswith(b"ERROR\r\n")
        assert ato(host) == b"\r\nCONNECT\r\n"
        assert host.read_exactly(12) == b"parked bytes"
        host.write(b"!")
        assert received(server, 6) == b"ml302!"


def test_ml302_peer_close_while_parked_falls_back_to_its_recv_and_close_urcs(emulator, ml302_strict):
    """ML302: "+QSSLURC: "recv",<cid>,<ssid>" and "+QSSLURC: "close",<ssid>" (its manual's
    2.10), ATO then NO CARRIER, AT+QSSLRECV=1,<ssid>,<len> reads the bytes once and, with
    nothing left, answers OK alone (its manual's 2.8 "如果无数据，直接返回 OK")."""
    host, advance, _ = ml302_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        connect(host, f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1')
        server.wait_handshake()
        assert escape(host, advance) == OK
        late = b"late\r\n+QSSLURC: fake\r\n"
        server.conn.send(late)
        time.sleep(0.2)
        assert host.at("AT+QSSLRECV=1,0,100") == b"\r\nERROR\r\n"      # parked: not readable
        server.conn.close()
        assert host.read_until(b'"close",0\r\n') == \
            b'\r\n+QSSLURC: "recv",1,0\r\n\r\n+QSSLURC: "close",0\r\n'
        assert ato(host) == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QSSLRECV=1,0,100") == \
            f"\r\n+QSSLRECV: {HOST}:{PORT},TCP,{len(late)}\r\n".encode() + late + b"\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLRECV=1,0,100") == OK
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"


# -- AT+QICFG formats around transparent mode --------------------------------------------------------
def test_hex_dataformat_and_recvind_leave_transparent_bytes_raw(emulator, ec2x_strict, peer_factory):
    """dataformat 1,1 and recvind 1 change AT+QISEND / AT+QIRD and the buffer URC only:
    online the bytes go raw both ways; parked then switched to buffer mode the URC carries
    the length and AT+QIRD gives hex; push mode pushes raw with its length; the peer's close
    in push mode is "closed" and ATO is NO CARRIER."""
    host, advance, _ = ec2x_strict
    peer = peer_factory()
    for line in ('AT+QICFG="transwaittm",0', 'AT+QICFG="dataformat",1,1', 'AT+QICFG="recvind",1'):
        assert host.at(line) == OK
    tcp_transparent(host)
    host.write(b"4142\x00")
    wait_for(lambda: len(peer.got) >= 5, what="5 bytes at the server")
    assert bytes(peer.got) == b"4142\x00"
    peer.send(b"AB\xff")
    assert host.read_exactly(3) == b"AB\xff"
    assert escape(host, advance) == OK
    peer.send(b"\x00\xffZ")
    time.sleep(0.3)
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+QISWTMD=0,0") == OK
    assert host.read_until(b"\r\n+QIURC: \"recv\",0,3\r\n") == b'\r\n+QIURC: "recv",0,3\r\n'
    host.write(b"AT+QIRD=0,100\r")
    assert host.read_until(b"OK\r\n") == b"\r\n+QIRD: 3\r\n00ff5a\r\n\r\nOK\r\n"
    assert host.at("AT+QISWTMD=0,1") == OK
    peer.send(b"\x01\x02")
    assert host.read_until(b"\x01\x02\r\n") == b'\r\n+QIURC: "recv",0,2\r\n\x01\x02\r\n'
    peer.send(b"xyz")
    peer.close()
    assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "recv",0,3\r\nxyz\r\n\r\n+QIURC: "closed",0\r\n'
    assert ato(host) == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QICLOSE=0") == OK


# -- the escape detector's held "+" and transwaittm ---------------------------------------------------
# Was a bug, fixed: the held "+"s waited a further full transwaittm after their release
def test_held_plus_signs_wait_transwaittm_from_their_arrival(emulator, ec2x_strict, tcp_sink):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QICFG="transwaittm",20') == OK            # 2 s; S12 1 s
    tcp_transparent(host)
    conn = tcp_sink.wait_connection()
    host.write(b"x" * 1024)                                      # one full packet, at once
    conn.wait_received(1024)
    advance(1.1)                                                 # silence: a "+" may be an escape
    host.write(b"++")
    advance(1.5)                                                 # guard time over: "++" are data
    time.sleep(0.3)
    assert bytes(conn.received) == b"x" * 1024                   # 1.5 s < transwaittm
    advance(0.6)                                                 # 2.1 s after they came
    assert conn.wait_received(1026, timeout=2) == b"x" * 1024 + b"++"


# -- the silence before "+++" when the loop was busy (wall clock) --------------------------------------
# Was a bug, fixed: held "+"s whose guard time passed unseen swallowed the "+++" read with them
# (EscapeDetector.feed: they are data, the chunk is read as after them)


@pytest.mark.parametrize("busy", [pytest.param(True, id="busy"),
                                  pytest.param(False, id="idle")])
@pytest.mark.parametrize("first", [b"+", b"++"])
def test_plus_data_after_a_busy_loop_then_a_real_escape(emulator, realtime, first, busy):
    """S12=25 (500 ms).  After silence the host writes "+" or "++" and stops: past the guard
    time they are data.  0.9 s later -- while the emulator's loop is busy (TLS work, another
    modem) -- it writes "+++" after that 0.9 s of silence and then stays silent: an escape by
    the note's three rules, and by docs/behaviour.md's measure too ("silence is measured
    when the emulator reads the pty": read at 1.6 s, 1.6 s after the "+"s).  Expected: the
    server gets the first "+"s only, the host OK -- as with an idle loop."""
    host, port = realtime
    assert host.at('AT+QICFG="transwaittm",0') == OK
    assert host.at("ATS12=25") == OK
    with online_to_sink(emulator, host) as (server, conn):
        time.sleep(0.6)
        host.write(first)
        emulator.wait_received(port, host.written)
        worker = threading.Thread(target=emulator.run, args=(time.sleep, 1.6 if busy else 0))
        worker.start()
        time.sleep(0.9)                     # the "+"s' guard time passes: they are data
        host.write(b"+++")                  # after 0.9 s of silence: an escape begins
        worker.join()
        time.sleep(0.7)                     # the guard time after it, in silence
        answers = collect(host, lambda got: b"OK\r\n" in got, settle=0.1, timeout=2)
        wait_for(lambda: len(conn.received) >= len(first), what="the first '+'s at the server")
        time.sleep(0.1)
        assert (answers, bytes(conn.received)) == (OK, first)
