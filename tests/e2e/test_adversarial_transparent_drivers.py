"""Transparent access mode driven the way public host code drives a Quectel EC2x/EC20/EG25
(and an ML302): the exact byte sequences and delays of MCU drivers and serial scripts,
replayed against loopback peers.

Sequences taken from public code (paraphrased, not copied):
- STM32 "EC20Send_ChangeMode" drivers: 500 ms pause, "+++", 1.6 s pause; back with
  "AT+QISWTMD=0,2\\r\\n" and a busy-wait for "CONNECT".
- STM32 Cat-1 "send_msg_cat1_tcp_server": AT+QIOPEN=1,<id>,"TCP",...,0,2\\r\\n, then the
  message after a fixed delay without waiting for CONNECT, "+++", AT+QICLOSE.
- "ecxxx" driver (ec_tcp_mode_switch): a 100 ms DTR pulse, then "AT&D2\\r\\n" expecting OK,
  back with "ATO0\\r\\n" expecting OK, close with AT+QICLOSE=0.
- "recv_touchuan" (RT-Thread port): matches the text "NO CARRIER" byte by byte in the
  transparent stream to learn that the server closed.
- Python / Qt serial tools: "+++" with time.sleep() guards, or "+++\\r\\n" written as a line;
  ATS12=1 ("set guard time small", uucp dialers and Wi-Fi module drivers).

Each test asserts exact bytes both ways.  Where a driver assumes something an EC2x does not
do, the test asserts what the module does (the driver's assumption is named in the test).
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager

import pytest

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.answer_support import collect
from tests.e2e.socket_support import TCP_HOST, TCP_PORT

HOST, PORT = "220.180.239.212", 8011
FINAL = re.compile(rb"\r\n(OK|ERROR|NO CARRIER|CONNECT)\r\n")
QIOPEN2 = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r\n'


def wait_for(cond, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def settle(conn_received, n: int, timeout: float = 5.0) -> bytes:
    """Wait until the peer has n bytes, then a short grace so that extra bytes show."""
    wait_for(lambda: len(conn_received) >= n, timeout, f"{n} bytes at the peer")
    time.sleep(0.1)
    return bytes(conn_received)


# -- fixtures -----------------------------------------------------------------------------------
@contextmanager
def online_to_sink(emulator, host):
    """(server, conn): connectID 0 transparent to a TCP sink, opened with the drivers' CR LF
    line end."""
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host.write(QIOPEN2)
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        yield server, server.wait_connection()


@pytest.fixture
def tcp_online(emulator, ec2x_strict):
    """(host, advance, port, server, conn): EC2x on manual time, online_to_sink()."""
    host, advance, port = ec2x_strict
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): these
    # tests are about other things than the module's packet wait, and run on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    with online_to_sink(emulator, host) as (server, conn):
        yield host, advance, port, server, conn


@pytest.fixture
def realtime(emulator, open_modem, strict_log):
    """(host, port): an EC2x on the wall clock with PDP context 1 up and S12=5 (100 ms)."""
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at("ATS12=5") == b"\r\nOK\r\n"
    assert host.at("ATS12?") == b"\r\n005\r\n\r\nOK\r\n"
    return host, port


# -- EC20Send_ChangeMode: 500 ms, "+++", 1.6 s; AT+QISWTMD=0,2\r\n ------------------------------------
def test_changemode_driver_escape_and_qiswtmd_back_with_crlf(tcp_online):
    host, advance, port, server, conn = tcp_online
    host.write(b"hello")
    settle(conn.received, 5)
    advance(1.1)                       # the application was idle a while
    advance(0.5)                       # LL_mDelay(500)
    host.write(b"+++")
    advance(1.6)                       # LL_mDelay(800) twice
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    conn.send(b"X1-while-escaped")
    assert host.quiet_for(0.2) == b""
    host.write(b"AT+QISWTMD=0,2\r\n")  # the driver's line, CR LF at once
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(16) == b"X1-while-escaped"
    host.write(b"more")
    assert settle(conn.received, 9) == b"hellomore"   # neither the LF nor a "+" leaked
    assert host.quiet_for(0.05) == b""


def test_changemode_driver_right_after_data_keeps_everything_as_data(tcp_online):
    """The same driver calling ChangeMode 500 ms after its last data: with S12 at its 1 s
    default there was no guard time before "+++", so "+++" and the AT+QISWTMD line that
    follows are payload (the driver assumes 500 ms is enough; an EC2x needs 1 s)."""
    host, advance, port, server, conn = tcp_online
    host.write(b"hello")
    advance(0.5)
    host.write(b"+++")
    advance(1.6)
    host.write(b"AT+QISWTMD=0,2\r\n")
    advance(1.1)
    expected = b"hello+++AT+QISWTMD=0,2\r\n"
    assert settle(conn.received, len(expected)) == expected
    assert host.quiet_for(0.1) == b""                      # no OK, no CONNECT: still online
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    host.write(b"AT+QICLOSE=0\r\n")
    assert conn.eof.wait(5)                  # FIN when the command runs; OK after its linger
    advance(10.5)                            # the sink never closes: the 10 s default
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert bytes(conn.received) == expected


def test_changemode_driver_with_s12_shortened_to_fit_its_500_ms(tcp_online):
    """ATS12=20 (400 ms): the driver's 500 ms / 1.6 s delays are then valid guard times
    even right after data."""
    host, advance, port, server, conn = tcp_online
    host.write(b"data")
    settle(conn.received, 4)
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert host.at("ATS12=20") == b"\r\nOK\r\n"
    host.write(b"ATO\r\n")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    host.write(b"more")
    advance(0.5)
    host.write(b"+++")
    advance(0.5)                      # more than 400 ms: the escape is complete
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert settle(conn.received, 8) == b"datamore"


# -- Cat-1 "send_msg_cat1_tcp_server": the message does not wait for CONNECT ------------------------
def test_payload_written_before_connect_goes_into_the_connection(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): these
    # tests are about other things than the module's packet wait, and run on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        msg = b"{\"t\":21.5,\"id\":7}\r\n"
        host.write(QIOPEN2.encode() + msg)          # one burst: HAL_Delay shorter than the open
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        assert settle(conn.received, len(msg)) == msg
        advance(1.1)
        host.write(b"+++")
        advance(1.1)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        host.write(b"AT+QICLOSE=0\r\n")
        assert conn.eof.wait(5)
        advance(10.5)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        assert bytes(conn.received) == msg
        assert host.quiet_for(0.1) == b""


def test_payload_written_during_the_tls_handshake_goes_after_connect(emulator, ec2x_strict):
    """AT+QSSLOPEN=...,2 and the payload in one write: the handshake takes a while; the
    payload must reach the TLS server whole, after CONNECT, and nothing must reach the host
    before CONNECT."""
    host, advance, port = ec2x_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        payload = bytes(range(256)) + b"+++AT\r\n"
        host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",{PORT},2\r\n'.encode() + payload)
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        assert host.read_exactly(len(payload)) == payload     # echoed
        assert server.wait_received(len(payload)) == payload
        assert host.quiet_for(0.1) == b""


# -- "recv_touchuan": NO CARRIER inside the stream -------------------------------------------------
def test_no_carrier_text_from_the_server_is_data_and_the_link_stays(tcp_online):
    """A driver that scans the stream for "NO CARRIER" is fooled by a server sending that
    text; the module is not: it passes it on and stays online. Only the real close ends it."""
    host, advance, port, server, conn = tcp_online
    fake = b"\r\nNO CARRIER\r\n\r\nOK\r\n+QIURC: \"closed\",0\r\n"
    conn.send(fake)
    assert host.read_exactly(len(fake)) == fake
    host.write(b"still-online")
    assert settle(conn.received, 12) == b"still-online"
    conn.send(b"bye")
    conn.close()
    assert host.read_until(b"\r\nNO CARRIER\r\n") == b"bye\r\nNO CARRIER\r\n"
    assert host.quiet_for(0.1) == b""
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# -- "ecxxx" ec_tcp_mode_switch: DTR pulse, AT&D2, ATO0 -----------------------------------------------
def test_dtr_pulse_with_the_default_and_d2_closes_then_driver_lines(emulator, tcp_online):
    """EC2x default AT&D2: the driver's DTR pulse ends the connection (NO CARRIER, socket
    freed, the server sees the close). Its "AT&D2\\r\\n" gets OK; its "ATO0" gets NO CARRIER (the
    driver expects OK); its AT+QICLOSE=0 then finds nothing open: OK."""
    host, advance, port, server, conn = tcp_online
    host.write(b"payload")
    settle(conn.received, 7)
    emulator.wait_received(port, host.written)
    emulator.run(port.modem.set_dtr, 0)
    emulator.run(port.modem.set_dtr, 1)
    assert host.read_until(FINAL) == b"\r\nNO CARRIER\r\n"
    assert conn.eof.wait(5)
    assert bytes(conn.received) == b"payload"
    host.write(b"AT&D2\r\n")
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    host.write(b"ATO0\r\n")
    assert host.read_until(FINAL) == b"\r\nNO CARRIER\r\n"
    host.write(b"AT+QICLOSE=0\r\n")
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert host.quiet_for(0.1) == b""


def test_dtr_pulse_with_and_d1_then_ato0_crlf(emulator, tcp_online):
    """With AT&D1 the pulse is an escape (OK, the link stays); "ATO0\\r\\n" returns with
    CONNECT (the driver's "OK" expectation is wrong) and the LF is not data; server data
    sent meanwhile come first."""
    host, advance, port, server, conn = tcp_online
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    host.write(b"AT&D1\r\n")
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    host.write(b"ATO0\r\n")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    host.write(b"a+")                     # a "+" right at the end of what came before the pulse
    settle(conn.received, 2)
    advance(1.1)
    host.write(b"+")                      # held: it may begin "+++"
    emulator.wait_received(port, host.written)
    emulator.run(port.modem.set_dtr, 0)
    emulator.run(port.modem.set_dtr, 1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    conn.send(b"queued")
    time.sleep(0.1)
    host.write(b"ATO0\r\n")
    assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
    assert host.read_exactly(6) == b"queued"
    host.write(b"z")
    assert settle(conn.received, 4) == b"a++z"


# -- Python / Qt serial scripts ----------------------------------------------------------------------
def test_plus_plus_plus_written_as_a_line_is_data(tcp_online):
    """Conf2modem-style tools write "+++\\r\\n": the CR LF follows within the guard time,
    so on an EC2x it is all payload and the port stays online."""
    host, advance, port, server, conn = tcp_online
    advance(1.1)
    host.write(b"+++\r\n")
    advance(1.1)
    assert host.quiet_for(0.1) == b""
    host.write(b"ATH0\r\n")              # lb_force_disconnect's next line: data too
    advance(1.1)
    assert settle(conn.received, 11) == b"+++\r\nATH0\r\n"
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert bytes(conn.received) == b"+++\r\nATH0\r\n"


def test_pyserial_script_with_sleep_guards_on_the_wall_clock(emulator, realtime):
    """A pyserial script: time.sleep() around "+++" (S12=5, 100 ms), reads OK, ATO, more
    data; the server streams meanwhile. Real time, no manual clock."""
    host, port = realtime
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host.write(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},2\r'.encode())
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        host.write(b"first")
        assert host.read_exactly(5) == b"first"
        time.sleep(0.3)
        host.write(b"+++")
        time.sleep(0.3)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        host.write(b"ATO\r")
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        host.write(b"second")
        assert host.read_exactly(6) == b"second"
        time.sleep(0.3)
        # "+++" with bytes right behind it, well inside the 100 ms guard time: data.  (Written
        # together: as two writes 20 ms apart, a test thread or an emulator loop held up 80 ms
        # on a loaded machine puts the guard time between them, and the "+++" escapes.)
        host.write(b"+++" + b"ATO\r")
        assert host.read_exactly(7) == b"+++ATO\r"
        assert server.wait_received(18) == b"firstsecond+++ATO\r"
        time.sleep(0.3)
        host.write(b"+++")
        time.sleep(0.3)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_escape_while_the_server_keeps_streaming(emulator, realtime):
    """A telemetry server sends a numbered line every 5 ms while the host escapes (S12=5),
    runs a command and returns with ATO: every line arrives once, in order; the OK and the
    command's answer sit between two whole lines or inside the stream, never lost."""
    host, port = realtime
    stop = threading.Event()
    sent = bytearray()

    def streamer(conn):
        i = 0
        while not stop.is_set():
            line = b"<%05d>" % i
            conn.sendall(line)
            sent.extend(line)
            i += 1
            time.sleep(0.005)
        conn.recv(1, timeout=10)
    with TlsServer(handler=streamer, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        host.write(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},2\r'.encode())
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        time.sleep(0.3)
        host.write(b"+++")
        before = host.read_until(b"\r\nOK\r\n", timeout=5)[:-6]
        stream = bytearray(before)
        assert host.at("AT+QSSLSTATE=0").endswith(b',2,"usbmodem",1\r\n\r\nOK\r\n')
        time.sleep(0.2)                     # lines pile up in the socket meanwhile
        assert host.quiet_for(0.05) == b""
        host.write(b"ATO\r")
        assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
        stop.set()
        time.sleep(0.2)
        total = len(sent)
        stream += host.read_exactly(total - len(stream), timeout=10)
        assert host.quiet_for(0.1) == b""
        assert bytes(stream) == bytes(sent)


# -- the guard time is the host's silence, not the emulator's timer ------------------------------------
# Was a bug, fixed (Interpreter._escape_overdue):  escape decided by when the guard timer runs,
# not by the host's silence: '+++' followed by 300 ms of silence (S12=5: 100 ms) and then 'AT\r'
# is sent to the server as '+++AT\r' when the loop was busy across the guard deadline
# (EscapeDetector.feed with held==3 never checks now - last_rx >= guard; the pty read runs
# before the overdue timer), instead of OK + OK
def test_escape_completed_while_the_loop_was_busy(emulator, realtime):
    host, port = realtime
    with online_to_sink(emulator, host) as (server, conn):
        time.sleep(0.3)
        host.write(b"+++")
        emulator.wait_received(port, host.written)
        busy = threading.Thread(target=emulator.run, args=(time.sleep, 0.6))   # e.g. TLS work
        busy.start()
        time.sleep(0.3)                     # the guard time after "+++" passes in silence
        host.write(b"AT\r")
        busy.join()
        time.sleep(0.3)
        answers = collect(host, lambda got: got.count(b"OK\r\n") >= 2, settle=0.1)   # (however late)
        assert (answers, bytes(conn.received)) == (b"\r\nOK\r\n\r\nOK\r\n", b"")


# -- Conf2modem-style retry: "+++" again when no answer came quickly -------------------------------------
def test_impatient_escape_retry_makes_both_data(tcp_online):
    """The tool writes "+++", waits 0.5 s for an answer (none: the guard time after it is
    1 s), writes "+++" again: six "+" within the guard time are payload, no OK ever comes
    for them. Only a "+++" after a full second of silence escapes."""
    host, advance, port, server, conn = tcp_online
    advance(1.1)
    host.write(b"+++")
    advance(0.5)
    assert host.quiet_for(0.05) == b""
    host.write(b"+++")
    advance(1.1)
    advance(1.1)
    assert host.quiet_for(0.1) == b""
    assert settle(conn.received, 6) == b"++++++"
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(FINAL) == b"\r\nOK\r\n"
    assert bytes(conn.received) == b"++++++"


# -- writing faster than the link: the escape does not wait for the link, nothing is lost ----------------
def test_escape_and_close_while_a_slow_link_still_sends(emulator, realtime):
    """64 kbit/s link (control `net`): the host writes 6 KiB at once, escapes (S12=5) while
    most of it is still on the way, and closes with AT+QICLOSE: OK comes after the guard
    time, and the server still gets every byte, in order, before the end of the stream."""
    host, port = realtime
    with online_to_sink(emulator, host) as (server, conn):
        assert emulator.control("net", kbps=64)["ok"]
        blob = bytes((i * 31 + 7) & 0xFF for i in range(6144))
        host.write(blob)
        time.sleep(0.25)
        host.write(b"+++")
        assert host.read_until(FINAL, timeout=3) == b"\r\nOK\r\n"
        assert len(conn.received) < len(blob)          # the link is still sending
        host.write(b"AT+QICLOSE=0,2\r\n")     # the sink never closes: a 2 s linger
        assert conn.eof.wait(10)
        assert host.read_until(FINAL, timeout=10) == b"\r\nOK\r\n"
        assert bytes(conn.received) == blob
        assert emulator.control("net", kbps=0)["ok"]


# -- ML302 connectmode 1 the same way -----------------------------------------------------------------------
def test_ml302_payload_before_connect_then_dtr_escape_and_ato(emulator, ml302_strict):
    """ML302: AT+QSSLOPEN=0,0,"host",port,1 and the payload in one burst, CR LF line ends;
    AT&D1 and a DTR pulse to leave; server data meanwhile; ATO\\r\\n back; all exact."""
    host, advance, port = ml302_strict
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert host.at("AT&D1") == b"\r\nOK\r\n"
        payload = b"GET / HTTP/1.0\r\n\r\n+++\x1a\x1b"
        host.write(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1\r\n'.encode() + payload)
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        assert server.wait_received(len(payload)) == payload
        emulator.wait_received(port, host.written)
        emulator.run(port.modem.set_dtr, 0)
        emulator.run(port.modem.set_dtr, 1)
        assert host.read_until(FINAL) == b"\r\nOK\r\n"
        server.conn.send(b"HTTP/1.0 200 OK\r\n\r\nbody")
        time.sleep(0.2)
        assert host.quiet_for(0.05) == b""
        host.write(b"ATO\r\n")
        assert host.read_until(FINAL) == b"\r\nCONNECT\r\n"
        assert host.read_exactly(23) == b"HTTP/1.0 200 OK\r\n\r\nbody"
        host.write(b"!")
        time.sleep(0.1)
        assert server.wait_received(len(payload) + 1) == payload + b"!"
        assert host.quiet_for(0.05) == b""
