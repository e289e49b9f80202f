"""Adversarial: hostile HOST software against the ML302 profile, aimed at what the other
ML302 files (test_adversarial_ml302_{chaos,store,paths,drivers}.py, test_ml302_ssl.py) leave
out.

- An EC2x driver thrown at an ML302: its whole start-up (AT+QICSGP, AT+QIACT, the EC2x forms
  of AT+QSSLOPEN / QSSLSEND / QSSLRECV / QSSLSTATE / QSSLCLOSE, AT+QFUPL with its file bytes,
  AT+QIGETERROR, AT+QISWTMD) pipelined in one write with AT+CMEE=2: each line a plain ERROR
  (docs/behaviour.md: commands the profile lacks are always plain ERROR), the payloads
  written after refused prompts run nothing, nothing is opened; and every other EC2x-only
  command alone.
- AT+QSSLSEND pipelined behind AT+QSSLOPEN (the socket still opening): ERROR (docs: "a
  socket not connected is ERROR"), the payload and its Ctrl+Z never reach the server nor run
  as a command; an impatient host that types commands into a `> ` prompt: they are data
  (ESC: nothing sent; Ctrl+Z: sent verbatim, the "close" in them never runs).
- Hang-ups in the instant after Ctrl+Z / ESC of AT+QSECWRITE and AT+QSSLSEND: what the host
  wrote before its close counts (stored / sent once), its answer is never written to the
  next host; ESC then hang-up stores and sends nothing.
- AT+QSECWRITE in the EC2x's AT+QFUPL style (`=<crtflag>,<size>`) and into a filled slot,
  the host writing its certificate without waiting for `>`: +CME ERROR 50 / 3, the bytes
  that follow are no data and run nothing, the slot keeps its content (§2.3 checksum).
- connectmode 1 (§2.5 "透出", docs "Transparent access mode"), on the modem's clock: "+++"
  with no guard before, "+++x", "++++", "+++" whose third "+" comes after the guard time,
  "+++" followed by a command line at once -- all data, byte-exact at the server; "+ + +"
  byte by byte within the guard time -- the escape; the host hanging up between "++" and
  "+" or right after "+++" -- the held "+"s are data, the next host meets command state and
  ATO returns; AT+QSSLCLOSE and ATO pipelined.
- "+++" pipelined behind a pending connectmode 1 open: data; after a real escape AT+QSSLSEND
  and AT+QSECWRITE work, the waiting bytes raise no URC, "ATO" CR with data behind it.
- The ML302's default ATE1 with a CR LF host writing one byte at a time through a
  connectmode 1 open, "+++" and ATO: echo exactly as docs say, the LFs never go online.
- An escape while the server streams: the bytes before `OK` and after ATO's `CONNECT` are the
  stream exactly.
- Six sockets whose servers stream past ssl.recv_buffer while the host holds its reads; the
  host (reading the port 1/3/7/4095 bytes at a time) then pipelines AT+QSSLRECV of odd
  lengths round robin: per socket SHA-256 equal, every +QSSLRECV framed as §2.8, nothing
  crosses sockets, every URC §2.10's form.
- Huge lines: a command body of 2048 bytes (serial.line_max) written whole or one byte at a
  time still reads its data; 2049 is ERROR and takes no byte from the socket; 100 KB with
  no CR, then the next line works.

Every test runs under the strict log fixture (no traceback, no ERROR record)."""
from __future__ import annotations

import hashlib
import random
import re
import time

import pytest

from emulator.storage.checksum import xor16
from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.socket_support import OddHost, conn_of, wait_received
from tests.e2e.test_adversarial_ml302_chaos import URC, Rig, state_answer, wait_unread

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"
RECV_URC = re.compile(rb'\r\n\+QSSLURC: "recv",1,(\d)\r\n')


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def noise(n: int, seed: int) -> bytes:
    """n random bytes with no "a"/"A" (so no "AT" that would start a command line), no CR,
    "+", Ctrl+Z, ESC, and nothing of the modem's own framing ("OK", "CONNECT")."""
    rnd = random.Random(seed)
    return bytes(rnd.choice(b"0123456789bcdefghijklmnopqrstuvwxyzBCDFGH\x00\xff\x80\n-=/") for _ in range(n))


def written(data: bytes) -> bytes:
    return f"\r\n+QSECWRITE: {len(data)},{xor16(data):04x}\r\n\r\nOK\r\n".encode()


def sockets(emulator) -> dict[int, dict]:
    return {s["id"]: s for s in emulator.control("state")["sockets"]}


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    yield r
    r.close_all()


def bytewise(host, data: bytes) -> None:
    for i in range(len(data)):
        host.write(data[i:i + 1])


# == an EC2x host on an ML302 =====================================================================
EC2X_ONLY = ['AT+QICSGP=1,1,"UNINET","","",1', "AT+QIACT=1", "AT+QIACT?", "AT+QIDEACT=1",
             'AT+QIOPEN=1,0,"TCP","220.180.239.212",8009,0,0', "AT+QISTATE", "AT+QICLOSE=0",
             "AT+QISEND=0,5", "AT+QIRD=0,1500", "AT+QISDE=0", 'AT+QICFG="dataformat",0,0',
             "AT+QISWTMD=4,2", "AT+QIGETERROR", 'AT+QIDNSGIP=1,"www.iottest.work"',
             'AT+QPING=1,"www.iottest.work"', 'AT+QNTP=1,"ntp.example"', 'AT+QFUPL="UFS:ca.pem",5,100',
             'AT+QFLST="*"', 'AT+QFDEL="*"', 'AT+QENG="servingcell"', "AT+QGPS=1", "AT+QCCID",
             "AT+QNWINFO", "AT+QCSQ", "AT+QSPN", "AT+QLTS=2", 'AT+QCFG="urc/ri/ring"',
             'AT+QURCCFG="urcport","uart1"', "AT+QSCLK=1", "AT+QSSLSTATE=4", "AT+QSSLSTATE=1,4",
             "AT+QSSLCLOSE=4,10", "AT+QSSLRECV=4,1500", "AT+QSSLSEND=4,18", "AT+QSSLSENDEX=4,5",
             'AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0', 'AT+QSSLCFG="sni",1,1',
             'AT+QSSLCFG="negotiatetime",1,300', 'AT+QSSLCFG="checkhost",1,1', 'AT+QSSLCFG="alpn",1,"h2"']


def test_ec2x_only_commands_are_plain_error_with_cmee_2_and_change_nothing(rig):
    """Every EC2x command (TCP/IP, files, GNSS, the EC2x forms of the SSL commands, EC2x-only
    AT+QSSLCFG options) on the ML302 with AT+CMEE=2: a plain ERROR (docs: "commands the
    profile lacks are always a plain ERROR"), never an EC2x answer (+QIOPEN, CONNECT, `> `,
    +QIGETERROR), and the module's state is untouched."""
    assert rig.host.at("AT+CMEE=2") == OK
    before = rig.host.at('AT+QSSLCFG="ctxindex",1')
    for line in EC2X_ONLY:
        assert rig.host.at(line) == ERROR, line
    assert rig.host.quiet_for(0.3) == b""
    assert rig.host.at('AT+QSSLCFG="ctxindex",1') == before
    assert rig.state() == state_answer({}, "IP STATUS")
    assert sockets(rig.emulator) == {}


def test_ec2x_driver_start_up_pipelined_in_one_write(rig):
    """An EC2x driver (the note's §3 session) writes everything at once without reading:
    each line is ERROR; the 18 bytes it meant for AT+QSSLSEND=4,18 and the 5 it meant for
    AT+QFUPL are command input, where only "AT"/"at" starts a line (docs): "Test data from
    SSL" has "at" in "data", so that line runs up to the next CR as one line -- ERROR, and
    the AT+QSSLRECV written after it is swallowed by it.  No socket, no file, no prompt."""
    srv = rig.server()
    rig.emulator.router.add_map("220.180.239.212", 8010, "127.0.0.1", srv.port)
    assert rig.host.at("AT+CMEE=2") == OK
    burst = (b'AT+QICSGP=1,1,"UNINET","","",1\r\nAT+QIACT=1\r\nAT+QSSLCFG="seclevel",1,1\r\n'
             b'AT+QSSLCFG="cacert",1,"UFS:cacert.pem"\r\n'
             b'AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0\r\n'
             b"AT+QSSLSEND=4,18\r\nTest data from SSL"
             b"AT+QSSLRECV=4,1500\r\n"
             b'AT+QFUPL="UFS:x.pem",5\r\n\x01\x02\x03\x04\x05'
             b"AT+QIGETERROR\r\nAT+QSSLSTATE=4\r\nAT+QSSLCLOSE=4,10\r\n")
    rig.host.write(burst)
    expected = (ERROR + ERROR + OK + OK        # QICSGP, QIACT; seclevel and a path: ML302 options
                + ERROR                        # the EC2x open form
                + ERROR                        # AT+QSSLSEND=4,18
                + ERROR                        # "ata from SSLAT+QSSLRECV=4,1500": one line
                + ERROR                        # AT+QFUPL
                + ERROR                        # "\x01..\x05AT+QIGETERROR": the bytes dropped, then ERROR
                + ERROR + ERROR)               # QSSLSTATE=4, QSSLCLOSE=4,10
    assert rig.host.read_exactly(len(expected), 20) == expected
    assert rig.host.quiet_for(0.5) == b""
    assert sockets(rig.emulator) == {}
    assert srv.connections == []
    assert rig.state() == state_answer({}, "IP STATUS")
    # the ML302's own session still works after it
    assert rig.host.at('AT+QSSLCFG="cacert",1,"/caCrt.pem"') == OK
    rig.open(4)
    conn = conn_of(srv)
    assert rig.send(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 18) == b"Test data from SSL"
    rig.close(4)


# == AT+QSSLSEND abuse =============================================================================
def test_send_pipelined_behind_the_open_is_error_and_its_payload_goes_nowhere(rig):
    """AT+QSSLOPEN, AT+QSSLSEND with its payload and Ctrl+Z, and AT+QSSLSTATE in one write:
    the socket is still opening when AT+QSSLSEND runs: ERROR (docs); the payload (no "AT"
    in it) and the Ctrl+Z are no command and are dropped, AT+QSSLSTATE answers; the server
    never gets a byte of it; the same send after "+QSSLOPEN: 2,0" works."""
    srv = rig.server()
    body = b"GET /x HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n"
    rig.host.write(f'AT+QSSLOPEN=2,0,"{HOST}",443,0\rAT+QSSLSEND=2\r'.encode() + body + CTRL_Z
                   + b"AT+QSSLSTATE\r")
    raw = rig.host.read_until(b'+QSSLSTATE: 5,"TCP","",0,"INITIAL",1\r\n\r\nOK\r\n', 20)
    opened = b"\r\n+QSSLOPEN: 2,0\r\n"
    got = raw.replace(opened, b"")                       # the URC may come anywhere after the OK
    assert got.startswith(OK + ERROR), got
    assert got[len(OK + ERROR):] in (state_answer({2: "CONNECTING"}).replace(
        f'"{HOST_IP}",443,"CONNECTING"'.encode(), b'"",0,"CONNECTING"'),
        state_answer({2: "CONNECTING"}), state_answer({2: "CONNECTED"})), got
    if opened not in raw:                # (not yet read, or read behind the answer: still pending)
        rig.opened(2)
    conn = conn_of(srv)
    assert rig.host.quiet_for(0.3) == b""
    assert bytes(conn.received) == b""
    assert rig.send(2, body) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, len(body)) == body
    time.sleep(0.2)
    assert bytes(conn.received) == body
    rig.close(2)


def test_impatient_host_types_commands_into_the_send_prompt(rig):
    """At `> ` the host believes the prompt failed and types AT+QSSLSTATE, then gives up
    with ESC: OK, nothing sent (§2.7 "通过ESC取消发送").  Next time it types
    "AT+QSSLCLOSE=0" CR LF at the prompt and Ctrl+Z: those bytes are data, sent verbatim
    (SEND OK), and the socket is not closed."""
    conn = rig.connect(0)
    rig.host.write(b"AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    time.sleep(0.1)
    bytewise(rig.host, b"AT+QSSLSTATE\r\n")
    assert rig.host.quiet_for(0.3) == b""
    rig.host.write(ESC)
    assert rig.host.read_until(OK) == OK
    rig.host.write(b"AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    time.sleep(0.1)
    rig.host.write(b"AT+QSSLCLOSE=0\r\n")
    assert rig.host.quiet_for(0.3) == b""
    rig.host.write(CTRL_Z)
    assert rig.host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 16) == b"AT+QSSLCLOSE=0\r\n"
    time.sleep(0.2)
    assert bytes(conn.received) == b"AT+QSSLCLOSE=0\r\n"
    assert rig.state() == state_answer({0: "CONNECTED"})
    rig.close(0)


# == hang-ups in the instant after the end of the data ==========================================
@pytest.mark.parametrize("end", ["ctrl_z", "esc"])
def test_hangup_right_after_the_end_of_secwrite_and_send_data(rig, end):
    """The host writes the data and its Ctrl+Z (or ESC) and closes the port at once, without
    reading.  docs: what an attached host wrote before its close reaches the modem first, and
    no answer is written after the close.  Ctrl+Z: the slot holds the bytes (§2.3's checksum
    of them) and the server got the payload once; ESC: nothing stored, nothing sent.  The
    next host's first answer is its own, nothing stale in front."""
    conn = rig.connect(1)
    cert = noise(3001, 5)
    mark = CTRL_Z if end == "ctrl_z" else ESC
    rig.host.write(b"AT+QSECWRITE=1\r")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.write(cert + mark)
    rig.reopen()
    assert rig.host.at("AT") == OK
    if end == "ctrl_z":
        assert rig.host.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{xor16(cert):04x}\r\n\r\nOK\r\n".encode()
    else:
        assert rig.host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    body = noise(1460, 6)
    rig.host.write(b"AT+QSSLSEND=1\r")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.write(body + mark)
    rig.reopen()
    assert rig.host.at("AT") == OK
    if end == "ctrl_z":
        assert wait_received(conn, len(body)) == body
    time.sleep(0.3)
    assert bytes(conn.received) == (body if end == "ctrl_z" else b"")
    assert rig.host.quiet_for(0.2) == b""
    assert rig.state() == state_answer({1: "CONNECTED"})
    assert b"SEND OK" not in rig.host.transcript and b"+QSECWRITE" not in rig.host.transcript
    rig.close(1)


# == AT+QSECWRITE in forms the ML302 does not have ================================================
def test_secwrite_refused_before_the_prompt_and_the_host_writes_its_data_anyway(rig):
    """AT+QSECWRITE=0,<size> (the EC2x's AT+QFUPL habit) is +CME ERROR: 50 (§2.2: one
    parameter), AT+QSECWRITE into a filled slot +CME ERROR: 3 (docs); the host does not wait
    for `>` and writes its data and Ctrl+Z behind the line: no prompt, the bytes (no "AT" in
    them) run nothing, the slots keep what they held (§2.3: +QSECREAD checksum); the next
    AT+QSECWRITE after AT+QSECDEL takes the data whole."""
    data = noise(2000, 7).replace(b"\r", b"")
    rig.host.write(b"AT+QSECWRITE=0,%d\r" % len(data) + data + CTRL_Z + b"AT+QSECREAD=0\r")
    expected = b"\r\n+CME ERROR: 50\r\n" + b"\r\n+CME ERROR: 22\r\n"
    assert rig.host.read_exactly(len(expected)) == expected
    first = b"-----first-----\n"
    assert rig.secwrite(2, first) == written(first)
    rig.host.write(b"AT+QSECWRITE=2\r" + data + CTRL_Z + b"AT+QSECREAD=2\r")
    expected = b"\r\n+CME ERROR: 3\r\n" + f"\r\n+QSECREAD: 1,{xor16(first):04x}\r\n\r\nOK\r\n".encode()
    assert rig.host.read_exactly(len(expected)) == expected
    assert rig.host.quiet_for(0.3) == b""
    assert rig.secwrite(2, data) == written(data)
    assert rig.host.at("AT+QSECREAD=2") == f"\r\n+QSECREAD: 1,{xor16(data):04x}\r\n\r\nOK\r\n".encode()


# == "+++" in connectmode 1 =======================================================================
def online(rig, ssid: int = 0, name: str = HOST):
    srv = rig.server(name)
    rig.host.write(f'AT+QSSLOPEN={ssid},0,"{name}",443,1\r'.encode())
    assert rig.host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 20) == b"\r\nCONNECT\r\n"
    return conn_of(srv)


def settle(rig, conn, want: bytes) -> None:
    """The server holds exactly `want` (waited for, then 0.2 s more: nothing after it)."""
    assert wait_received(conn, len(want)) == want
    time.sleep(0.2)
    assert bytes(conn.received) == want


def test_plus_runs_that_are_no_escape_are_data_byte_exact(rig):
    """Guard time S12=50 (1 s) on the modem's clock.  No escape (docs: silence before, the
    three within the guard time, silence after -- anything else is data, in order):
    "+++" with no silence before; "+++" then "x" within the guard; "++++" alone; "+", "+"
    and a third "+" after the guard time passed; "+++" followed at once by a command line.
    The server gets every byte; the host sees nothing (no OK, no echo)."""
    conn = online(rig)
    sent = bytearray()

    def put(data: bytes) -> None:
        rig.host.write(data)
        sent.extend(data)
    put(b"head")
    put(b"+++")                                          # no silence before
    rig.advance(1.1)
    settle(rig, conn, bytes(sent))
    put(b"+++")
    rig.advance(0.5)
    put(b"x")                                            # within the guard after it
    rig.advance(1.1)
    put(b"++++")                                         # four alone
    rig.advance(1.1)
    settle(rig, conn, bytes(sent))
    put(b"+")
    rig.advance(0.4)
    put(b"+")
    rig.advance(0.7)                                     # 1.1 s after the first: too late
    put(b"+")
    rig.advance(1.1)
    settle(rig, conn, bytes(sent))
    put(b"+++AT+QSSLSTATE\r")                            # the impatient host's escape
    rig.advance(1.1)
    settle(rig, conn, bytes(sent))
    assert rig.host.quiet_for(0.2) == b""
    # the real one, one byte at a time within the guard time
    rig.host.write(b"+")
    rig.advance(0.3)
    rig.host.write(b"+")
    rig.advance(0.3)
    rig.host.write(b"+")
    rig.advance(0.9)
    assert rig.host.quiet_for(0.2) == b""                # 0.9 s of silence: not yet
    rig.advance(0.2)
    assert rig.host.read_until(OK, 10) == OK
    assert rig.state() == state_answer({0: "CONNECTED"})
    settle(rig, conn, bytes(sent))
    rig.host.write(b"AT+QSSLCLOSE=0\rATO\r")
    expected = OK + b"\r\n0,CLOSE OK\r\n" + b"\r\nNO CARRIER\r\n"
    assert rig.host.read_exactly(len(expected), 30) == expected


@pytest.mark.parametrize("held", [b"++", b"+++"])
def test_hangup_inside_an_escape_makes_the_held_plus_data(rig, held):
    """After a guard time of silence the host writes "++" (or "+++") and closes the port
    before the guard time after it.  docs: online mode ended before the guard time told, so
    the held "+"s are data and go into the connection; the connection stays open (ATO).  The
    next host meets command state, ATO returns to the connection, and its own "+++" with
    guard times is an escape."""
    conn = online(rig, 3)
    rig.host.write(b"abc")
    rig.advance(1.1)
    rig.host.write(held)
    rig.emulator.wait_received(rig.port, sum(h.written for h in rig.hosts))
    rig.away()
    settle(rig, conn, b"abc" + held)
    rig.back()
    assert rig.host.at("AT") == OK
    assert rig.state() == state_answer({3: "CONNECTED"})
    assert rig.host.at("ATO") == b"\r\nCONNECT\r\n"
    rig.host.write(b"+def")
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    settle(rig, conn, b"abc" + held + b"+def")
    rig.close(3)


def test_plus_pipelined_behind_a_pending_open_then_commands_while_escaped(rig):
    """The host writes AT+QSSLOPEN=...,1 and "+++" at once, hoping to abort the pending
    open: the "+++" waits behind the pending command (docs) and comes with no guard time
    after CONNECT, so it is data.  After a real escape, with the server's bytes waiting:
    AT+QSSLSEND works on the socket (docs), AT+QSECWRITE works, no URC is raised (the
    bytes wait for ATO), and "ATO" CR with data behind it in one write gives CONNECT, the
    waiting bytes, and sends the data."""
    srv = rig.server()
    rig.host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r+++'.encode())
    assert rig.host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    rig.advance(1.1)
    settle(rig, conn, b"+++")
    assert rig.host.quiet_for(0.1) == b""
    rig.host.write(b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    conn.send(b"waiting for ATO")
    wait_unread(rig.emulator, 0, 15)
    assert rig.send(0, b"from command mode") == b"\r\nSEND OK\r\n"
    assert rig.secwrite(1, b"x") == written(b"x")
    assert rig.host.quiet_for(0.3) == b""
    rig.host.write(b"ATO\rafter ATO")
    assert rig.host.read_until(b"waiting for ATO", 20) == b"\r\nCONNECT\r\nwaiting for ATO"
    settle(rig, conn, b"+++from command modeafter ATO")
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    assert b"+QSSLURC" not in rig.host.transcript
    rig.close(0)


def test_echo_on_bytewise_crlf_host_through_a_transparent_session(rig):
    """ATE1 (the ML302's default) and a host writing CR LF lines one byte at a time: the open
    with connectmode 1 is echoed without its LF and answered CONNECT (§2.5, docs); that LF is
    the line's, never online data, and nothing is echoed online; after "+++" the echo comes
    back, ATO CR LF is echoed "ATO\\r" then CONNECT, and its LF is not data either."""
    srv = rig.server()
    bytewise(rig.host, b"ATE1\r\n")
    assert rig.host.read_until(OK) == OK                # typed while the echo was off
    line = f'AT+QSSLOPEN=5,0,"{HOST}",443,1\r\n'.encode()
    bytewise(rig.host, line)
    assert rig.host.read_until(b"CONNECT\r\n", 20) == line[:-1] + b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    time.sleep(0.1)
    bytewise(rig.host, b"GET / HTTP/1.1\r\n\r\n")
    settle(rig, conn, b"GET / HTTP/1.1\r\n\r\n")
    assert rig.host.quiet_for(0.1) == b""
    rig.advance(1.1)
    bytewise(rig.host, b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    bytewise(rig.host, b"AT+QSSLSTATE\r\n")
    assert URC.sub(b"", rig.host.read_until(b"\r\nOK\r\n")) == b"AT+QSSLSTATE\r" + state_answer({5: "CONNECTED"})
    bytewise(rig.host, b"ATO\r\n")
    assert rig.host.read_until(b"CONNECT\r\n") == b"ATO\r\r\nCONNECT\r\n"
    bytewise(rig.host, b"\nLF-led payload")
    settle(rig, conn, b"GET / HTTP/1.1\r\n\r\n\nLF-led payload")
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    rig.host.write(b"ATE0\r")
    assert rig.host.read_until(OK) == b"ATE0\r" + OK
    rig.close(5)


def test_escape_while_the_server_streams_splits_the_stream_exactly(rig):
    """The server streams 300 KB in connectmode 1 while the host reads slowly; the host
    escapes in the middle.  What it read before `OK` plus what ATO's `CONNECT` brings is the
    stream, byte for byte (docs: the peer's bytes wait in the socket in command mode, ATO
    gives them first); AT+QSSLRECV meanwhile takes nothing (ERROR)."""
    stream = noise(300_000, 9).replace(b"OK", b"ok").replace(b"CONNECT", b"connect")
    conn = online(rig, 2)
    conn.send(stream)
    first = rig.host.read_exactly(50_000, 20)
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    before = rig.host.read_until(OK, 30)
    assert before.endswith(OK)
    got = first + before[:-len(OK)]
    assert rig.host.at("AT+QSSLRECV=1,2,1500") == ERROR
    assert rig.host.at("ATO") == b"\r\nCONNECT\r\n"
    got += rig.host.read_exactly(len(stream) - len(got), 30)
    assert rig.host.quiet_for(0.3) == b""
    assert sha(got) == sha(stream)
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    assert rig.host.read_until(OK, 10) == OK
    rig.close(2)


# == many sockets, the host holding its reads ===================================================
def test_six_streams_past_their_buffers_then_odd_pipelined_reads(rig):
    """Six servers each send 80 KB (past ssl.recv_buffer, 64 KiB: TCP reading pauses, docs)
    while the host reads nothing.  The host, reading the port 1/3/7/4095 bytes at a time,
    then writes one AT+QSSLRECV per socket in one go, lengths 1, 1499, 7, 1500, 733, 2 in
    turn, and reads the answers.  Per socket the bytes read are the stream (SHA-256); every
    answer is §2.8's framing with the dialled name's address; the URCs are §2.10's."""
    rig.away()
    rig.back(OddHost)
    assert rig.host.at("AT") == OK
    conns = {}
    for ssid in range(6):
        srv = rig.server(f"s{ssid}.test")
        rig.open(ssid, f"s{ssid}.test")
        conns[ssid] = conn_of(srv)
    streams = {ssid: noise(80_000, 20 + ssid) for ssid in range(6)}
    for ssid in range(6):
        conns[ssid].send(streams[ssid])
    for ssid in range(6):
        wait_unread(rig.emulator, ssid, 65_536)
    time.sleep(0.3)
    lengths = [1, 1499, 7, 1500, 733, 2]
    got = {ssid: bytearray() for ssid in range(6)}
    turn = 0
    deadline = time.monotonic() + 40
    while any(len(got[s]) < len(streams[s]) for s in range(6)):
        assert time.monotonic() < deadline, {s: len(got[s]) for s in range(6)}
        order = [s for s in range(6) if len(got[s]) < len(streams[s])]
        asks = {s: lengths[(turn + s) % len(lengths)] for s in order}
        turn += 1
        rig.host.write(b"".join(b"AT+QSSLRECV=1,%d,%d\r" % (s, asks[s]) for s in order))
        for s in order:
            got[s] += rig.recv_answer(asks[s])
    for ssid in range(6):
        assert sha(bytes(got[ssid])) == sha(streams[ssid]), ssid
        assert rig.recv_once(ssid) == b""
    urcs = re.findall(rb"\+QSSLURC[^\r]*", bytes(rig.host.transcript))
    assert all(re.fullmatch(rb'\+QSSLURC: "recv",1,[0-5]', u) for u in urcs), urcs
    assert {int(u[-1:]) for u in urcs} == set(range(6))
    assert rig.state() == state_answer({i: "CONNECTED" for i in range(6)})
    rig.host.write(b"".join(b"AT+QSSLCLOSE=%d\r" % s for s in range(6)))
    expected = b"".join(OK + b"\r\n%d,CLOSE OK\r\n" % s for s in range(6))
    assert rig.host.read_exactly(len(expected), 60) == expected


# == huge lines =====================================================================================
def test_line_max_boundary_on_a_data_carrying_command(rig):
    """serial.line_max 2048 (docs: longer is ERROR at its terminator, the interpreter carries
    on): AT+QSSLRECV padded with spaces (ignored next to the syntax, V.250 5.1) to a body of
    2048 bytes reads its 5 bytes, written whole or one byte at a time; 2049 is ERROR and
    takes no byte from the socket; 100 KB with no CR, then CR: ERROR; nothing lost."""
    stream = noise(40, 11)
    conn = rig.connect(0)
    conn.send(stream)
    wait_unread(rig.emulator, 0, len(stream))
    rig.host.read_until(b'\r\n+QSSLURC: "recv",1,0\r\n', 20)

    def padded(body_len: int) -> bytes:
        head = b"+QSSLRECV=1,0,"
        return b"AT" + head + b" " * (body_len - len(head) - 1) + b"5\r"
    got = bytearray()
    for body_len, whole in ((2048, True), (2048, False), (2049, True), (2049, False)):
        line = padded(body_len)
        assert len(line) == body_len + 3
        if whole:
            rig.host.write(line)
        else:
            bytewise(rig.host, line)
        if body_len <= 2048:
            got += rig.recv_answer(5)
        else:
            assert rig.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"), 20) == ERROR
    rig.host.write(b"AT+QSSLRECV=1,0,5" + b"9" * 100_000)
    rig.host.write(b"\r")
    assert rig.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"), 20) == ERROR
    got += rig.recv_all(0, len(stream) - len(got))
    assert bytes(got) == stream
    rig.close(0)
