"""Adversarial review of the line discipline at the edges of data modes, through the pty.

What was attacked (emulator/at/interpreter.py _late_lf_rule / _take_late_lf / _drop_late_lf /
_abandon, emulator/at/lexer.py, emulator/io/transport.py PtyPort and the hang-up path), judged
against docs/behaviour.md "Command line and result codes", V.250 and the Quectel manuals:

- hosts mixing CR-only and CR LF lines, written whole or one byte at a time, in command state
  (each line answered once, echo of the line without the LF of its CR LF);
- the LF of a line that opens a data prompt arriving in a separate write 0 / 1 / 50 / 600 ms
  after its CR, for a host that writes whole CR LF lines, one that writes byte by byte and one
  that has ended its lines with CR alone; AT+QISEND (fixed length) to a loopback TCP server,
  AT+QFUPL upload, AT+QIOPEN access mode 2 (transparent, CONNECT), AT+QSSLSEND to a Python ssl
  server -- what reaches the peer must be byte-exact and the host must see exactly one
  SEND OK / OK;
- payloads that themselves start with LF or CR LF, after each kind of line ending;
- ATS3 / ATS4 changed to other characters, then data prompts (prompt and result framing, the
  LF after the terminator); S5 backspace inside a line that opens a prompt; A/ repeating a
  send (no terminator: what follows is data); ATE1 echo around prompts;
- the host closing the port in every state (half a line, after CR before LF, at the prompt,
  at CONNECT of an upload, online), and a new program opening it and sending; the same on a
  port with no hang-up line (--uart);
- a CPU-starved emulator (two busy-looping shells) under hosts of every kind.

The two bugs found here are fixed (the tests say what they were). Load-only: a host that
writes its line's CR and LF apart and its payload at once may have the emulator read the
LF together with the payload after it read the prompt: that LF is then data, as documented
(test_starved_emulator_reads_the_late_lf_together_with_the_payload).
"""
from __future__ import annotations

import contextlib
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"
PROMPT = b"\r\n> "
SEND_OK = b"\r\nSEND OK\r\n"
RESULT = re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")
TCP_NAME, TCP_PORT = "lines.example", 7000


# -- helpers -------------------------------------------------------------------------------------
def byte_writer(host: Host, data: bytes, gap: float = 0.002) -> None:
    """A host that writes (and flushes) one byte at a time: firmware, per-byte drivers."""
    for b in data:
        host.write(bytes([b]))
        host.ser.flush()
        if gap:
            time.sleep(gap)


def wait_unread(host: Host, n: int, timeout: float = 10) -> None:
    """Wait until at least n bytes of output wait in the pty for the host, without reading
    them (the host has not read its prompt yet)."""
    wait_for(lambda: host.ser.in_waiting >= n, timeout, f"{n} unread output bytes",
             every=0.005)                  # (well inside the 50 ms late-LF window)


def learn(host: Host, kind: str) -> None:
    """Show the emulator how this host ends its lines: 'crlf' whole CR LF lines, 'cr' CR
    alone, 'bytes' CR LF written one byte at a time."""
    if kind == "crlf":
        host.write(b"AT\r\n")
        assert host.read_until(OK).endswith(OK)
    elif kind == "cr":
        host.write(b"AT\r")
        assert host.read_until(OK).endswith(OK)
    else:
        # (its CR, the answer, then its LF: the emulator sees this line's CR and LF come apart
        # however its reads fall -- "AT\r\n" byte by byte may be read in one piece on a loaded
        # machine, and a host never seen writing in pieces has a late LF read with its data,
        # or past the window after it read the prompt, taken as data: docs/behaviour.md)
        byte_writer(host, b"AT\r")
        assert host.read_until(OK).endswith(OK)
        byte_writer(host, b"\n")
    assert host.quiet_for(0.06) == b""                 # (past the 50 ms window, nothing stray)


@contextlib.contextmanager
def sink_server(emulator):
    with TcpServer("sink") as server:
        emulator.router.add_map(TCP_NAME, TCP_PORT, "127.0.0.1", server.port)
        yield server


def pdp_up(host: Host) -> None:
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(OK)


def open_buffered(host: Host, server, cid: int = 0):
    """AT+QIOPEN (buffer access mode) to the sink; returns its server-side connection."""
    before = len(server.connections)
    assert host.at(f'AT+QIOPEN=1,{cid},"TCP","{TCP_NAME}",{TCP_PORT},0,0').endswith(OK)
    assert host.seen(f"+QIOPEN: {cid},0".encode()) == f"+QIOPEN: {cid},0".encode()
    wait_for(lambda: len(server.connections) > before, what="the server's accept")
    host.quiet_for(0.02)                      # (the URC's trailing CR LF)
    return server.connections[before]


def exactly(conn, expected: bytes, settle: float = 0.15) -> bytes:
    """What the peer received, once it has at least `expected`'s length and a moment more
    passed (so an extra byte would show)."""
    wait_for(lambda: len(conn.received) >= len(expected), 5, f"{len(expected)} bytes at the peer")
    time.sleep(settle)
    return bytes(conn.received)


def modem_and_socket(open_modem, emulator, server, **kw):
    host, port = open_modem("ec2x", **kw)
    pdp_up(host)
    conn = open_buffered(host, server)
    return host, port, conn


def download(host: Host, name: str) -> bytes:
    host.write(f'AT+QFDWL="{name}"\r'.encode())
    got = host.read_until(OK)
    m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: (\d+),[0-9a-f]+\r\n\r\nOK\r\n", got, re.S)
    assert m, got
    assert len(m.group(1)) == int(m.group(2))
    return m.group(1)


def detached(emulator, port) -> bool:
    return not emulator.run(lambda: port.port.attached)


def reopen(host: Host, emulator, port) -> Host:
    """The host program exits (closes the port); once the emulator has seen that, the next
    program opens it."""
    host.close()
    wait_for(lambda: detached(emulator, port), what="the close seen by the port")
    again = Host(port.path)
    emulator.run(port.port.look_for_host)
    return again


def mode(emulator, port) -> str:
    return emulator.run(lambda: port.modem.interpreter.mode.name)


@contextlib.contextmanager
def cpu_hogs(n: int = 2):
    """n busy-looping shells: the emulator's loop thread is starved of CPU meanwhile."""
    procs = [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(n)]
    try:
        time.sleep(0.05)
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# == command state: CR and CR LF mixed =============================================================
@pytest.mark.parametrize("bytewise", [False, True])
def test_mixed_cr_and_crlf_lines_are_each_answered_once_and_echoed_without_their_lf(open_modem, bytewise):
    host, _ = open_modem("ec2x", echo=True)
    lines = [b"AT\r", b"AT\r\n", b"AT+CMEE?\r", b"AT+CMEE?\r\n", b"AT\r"]
    expected = b""
    for line in lines:
        if bytewise:
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        answer = b"\r\n+CMEE: 1\r\n\r\nOK\r\n" if b"CMEE" in line else OK
        expected += line.rstrip(b"\n") + answer
        host.read_until(OK)
    host.write(b"AT\r")
    host.read_until(OK)
    assert bytes(host.transcript).endswith(expected + b"AT\r" + OK)
    assert host.quiet_for(0.1) == b""                       # no "\n" after any OK


def test_crlf_lines_in_one_write_with_blank_lines_and_stray_lfs_answer_each_at_once(ec2x):
    """Blank CR / LF between lines are bytes outside a command line: dropped, nothing answered."""
    ec2x.write(b"AT\r\n\r\n\nAT+CMEE?\r\r\n\n\rAT\r")
    got = ec2x.read_until(re.compile(rb"(OK\r\n.*){3}", re.S))
    assert got == OK + b"\r\n+CMEE: 1\r\n" + OK + OK
    assert ec2x.quiet_for(0.1) == b""


# == the LF of the prompt line, delayed ============================================================
@pytest.mark.parametrize("delay, kind, payload_at_peer", [
    # a host that writes whole CR LF lines: its LF written (and read) on its own is the line's
    # within the 50 ms window, and while it has not read the prompt up to 5 windows (250 ms);
    # later it is data (a host that never reads prompts: a delay() and a payload)
    (0.0, "crlf", b"hello"),
    (0.001, "crlf", b"hello"),
    (0.05, "crlf", b"hello"),
    (0.6, "crlf", b"\nhell"),
    # a byte-by-byte CR LF host: its LF is the line's however late it comes
    (0.0, "bytes", b"hello"),
    (0.001, "bytes", b"hello"),
    (0.05, "bytes", b"hello"),
    (0.6, "bytes", b"hello"),
])
def test_lf_written_apart_from_the_prompt_lines_cr(open_modem, emulator, delay, kind, payload_at_peer):
    # (the delay on the modem's manual clock, after the line was read: under CI's load a real
    # 50 ms sleep overran the 250 ms window and the LF was data)
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server, manual_time=True)
        learn(host, kind)
        line = b"AT+QISEND=0,5\r"
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        if delay:
            emulator.wait_received(port, host.written)
            emulator.advance(port, delay)
        host.write(b"\n")                                   # the line's LF, apart ...
        emulator.wait_received(port, host.written)          # ... and read apart from the data
        assert host.read_until(b"> ") == PROMPT
        host.write(b"hello")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, payload_at_peer) == payload_at_peer
        # whatever was left of the payload fell into command state: dropped, no answer
        assert host.at("AT") == OK
        assert host.quiet_for(0.05) == b""


def stall(emulator, seconds: float) -> None:
    """Keep the emulator's loop thread busy for `seconds` from now (a starved emulator: the
    host's writes meanwhile wait in the pty and are read together)."""
    started = threading.Event()

    def block() -> None:
        started.set()
        time.sleep(seconds)
    emulator.loop.call_soon_threadsafe(block)
    assert started.wait(5)


@pytest.mark.parametrize("kind, payload_at_peer", [
    # documented (behaviour.md: "for a host that writes whole lines, a late LF written on its
    # own and data written right after it can be read together, and are then data"): the LF a
    # whole-line CR LF host wrote 1 ms after its CR -- before it read the prompt -- becomes the
    # first data byte and the payload's last byte falls into command state
    ("crlf", b"\nhell"),
    # a byte-by-byte writer keeps its window however the reads join its bytes
    ("bytes", b"hello"),
])
def test_starved_emulator_reads_the_late_lf_together_with_the_payload(open_modem, emulator, kind,
                                                                       payload_at_peer):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, kind)
        line = b"AT+QISEND=0,5\r"
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        wait_unread(host, len(PROMPT))                 # the prompt is out, unread
        stall(emulator, 0.3)                            # the emulator is starved from here
        host.write(b"\n")                               # the line's LF, 1 ms late
        assert host.read_until(b"> ") == PROMPT
        host.write(b"hello")                            # the payload, right after the prompt
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, payload_at_peer) == payload_at_peer
        assert host.at("AT") == OK
        assert host.quiet_for(0.05) == b""


@pytest.mark.parametrize("kind", ["crlf", "cr", "bytes"])
def test_payload_starting_with_lf_and_crlf_after_a_line_whose_lf_came_with_it(open_modem, emulator, kind):
    """The line's own ending arrives before the prompt (with the line, or byte by byte right
    behind its CR); the payload, written after the prompt was read, starts with LF and CR LF:
    every byte of it is data."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, kind)
        sent = b""
        for payload in (b"\nab", b"\r\nab", b"\n", b"\r\n\r\n"):
            line = b"AT+QISEND=0,%d\r\n" % len(payload)
            if kind == "bytes":
                byte_writer(host, line, 0.001)
            else:
                host.write(line)
            assert host.read_until(b"> ") == PROMPT
            host.write(payload)
            assert host.read_until(RESULT, timeout=3) == SEND_OK
            sent += payload
            assert host.quiet_for(0.03) == b""
        assert exactly(conn, sent) == sent


@pytest.mark.parametrize("kind", ["crlf", "cr"])
def test_cr_only_send_line_then_payload_starting_with_lf_in_one_write_is_data(open_modem, emulator, kind):
    """ghuvrons/quectel-ec25: AT+QISEND ended with CR alone, the payload (starting with LF, as a
    protobuf message does) written whole after '>' was read."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, kind)
        host.write(b"AT+QISEND=0,4\r")
        assert host.read_until(b"> ") == PROMPT
        host.write(b"\n\x08\x01z")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"\n\x08\x01z") == b"\n\x08\x01z"


# -- a host that ended its lines with CR alone, then one CR LF line --------------------------------
# Was a bug, fixed: for a host seen ending its lines with CR alone, _late_lf_rule() made every
# first-byte LF after a prompt data, so a CR-only init sequence followed by a driver writing its
# CR LF lines byte by byte lost its payload's last byte (the LF went in as the first data byte,
# the last one fell into command state) -- docs/behaviour.md said the opposite.  Now such an LF
# is the line's within the late-LF window while the host has not read the prompt.
# Each test lets the emulator take the LF before the host reads the prompt (a real module has
# its LF long before it writes the prompt).  On manual time: for a CR-only host that LF is the
# line's only within the 50 ms window, which a test thread descheduled between seeing the
# prompt arrive and writing its LF (a loaded CI machine) would miss on the real clock.  An LF read *together with* the payload once the
# host has read the prompt stays data: that is exactly what a CR-only host whose payload starts
# with LF looks like (test_cr_only_send_line_then_payload_starting_with_lf_in_one_write_is_data).
def lf_taken(emulator, port, host: Host) -> None:
    """Wait until the modem has read every byte the host wrote."""
    emulator.wait_received(port, host.written)


def test_cr_only_host_then_a_crlf_send_line_whose_lf_comes_before_it_read_the_prompt(open_modem, emulator):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server, manual_time=True)
        learn(host, "cr")
        host.write(b"AT+QISEND=0,5\r")
        wait_unread(host, len(PROMPT))                # the prompt is out, the host has not read it
        host.write(b"\n")                              # ... and writes its line's LF
        lf_taken(emulator, port, host)
        assert host.read_until(b"> ") == PROMPT
        host.write(b"hello")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"hello") == b"hello"


def test_cr_only_host_then_a_crlf_upload_line_whose_lf_comes_before_it_read_connect(open_modem, emulator):
    host, port = open_modem("ec2x", manual_time=True)
    learn(host, "cr")
    host.write(b'AT+QFUPL="UFS:mixed.txt",5\r')
    wait_unread(host, len(CONNECT))
    host.write(b"\n")
    lf_taken(emulator, port, host)
    assert host.read_until(CONNECT) == CONNECT
    host.write(b"hello")
    assert host.read_until(OK).startswith(b"\r\n+QFUPL: 5,")
    assert download(host, "UFS:mixed.txt") == b"hello"


def test_cr_only_host_then_a_crlf_transparent_open_whose_lf_comes_before_it_read_connect(open_modem, emulator):
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x", manual_time=True)
        pdp_up(host)
        assert host.at('AT+QICFG="transwaittm",0') == OK
        learn(host, "cr")
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_NAME}",{TCP_PORT},0,2\r'.encode())
        wait_unread(host, len(CONNECT))
        host.write(b"\n")
        lf_taken(emulator, port, host)
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == CONNECT
        host.write(b"hello")
        wait_for(lambda: server.connections, what="the accept")
        assert exactly(server.connections[0], b"hello") == b"hello"


def test_cr_only_init_then_a_bytewise_crlf_send_keeps_the_payload(open_modem, emulator):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server, manual_time=True)
        learn(host, "cr")
        byte_writer(host, b"AT+QISEND=0,5\r", 0.002)
        wait_unread(host, len(PROMPT))                # (the emulator answered the CR at once)
        byte_writer(host, b"\n", 0)
        lf_taken(emulator, port, host)
        assert host.read_until(b"> ") == PROMPT
        host.write(b"hello")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"hello") == b"hello"


# == payloads starting with LF / CR LF: uploads, transparent mode, TLS ==============================
@pytest.mark.parametrize("kind", ["crlf", "cr", "bytes"])
def test_upload_starting_with_crlf_is_stored_exactly(ec2x, kind):
    learn(ec2x, kind)
    data = b"\r\n\nfirst\r\nsecond\n\r"
    line = b'AT+QFUPL="UFS:lead.txt",%d\r\n' % len(data)
    if kind == "cr":
        line = line[:-1]
    if kind == "bytes":
        byte_writer(ec2x, line, 0.001)
    else:
        ec2x.write(line)
    assert ec2x.read_until(CONNECT) == CONNECT
    ec2x.write(data)
    assert ec2x.read_until(OK).startswith(b"\r\n+QFUPL: %d," % len(data))
    assert download(ec2x, "UFS:lead.txt") == data


@pytest.mark.parametrize("kind", ["crlf", "cr", "bytes"])
def test_transparent_payload_starting_with_lf_reaches_the_peer_exactly(open_modem, emulator, kind):
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x")
        pdp_up(host)
        assert host.at('AT+QICFG="transwaittm",0') == OK
        learn(host, kind)
        line = f'AT+QIOPEN=1,0,"TCP","{TCP_NAME}",{TCP_PORT},0,2\r\n'.encode()
        if kind == "cr":
            line = line[:-1]
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == CONNECT
        if kind == "bytes":
            time.sleep(0.01)                       # (its LF, if not read yet, is on its way)
        data = b"\n\r\nAT\r\n+++x\n"
        host.write(data)
        wait_for(lambda: server.connections, what="the accept")
        assert exactly(server.connections[0], data) == data
        assert host.quiet_for(0.05) == b""         # no echo, no result code online
        assert mode(emulator, port) == "ONLINE"


@pytest.fixture
def tls_echo(pki, emulator):
    """A Python ssl echo server on 127.0.0.1 that tls.example:443 is routed to; .got holds
    the plaintext it received."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server.cert_path, pki.server.key_path)
    listener = socket.create_server(("127.0.0.1", 0))
    state = {"got": bytearray(), "conn": None}

    def serve() -> None:
        try:
            raw, _ = listener.accept()
        except OSError:
            return
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
            state["conn"] = conn
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                state["got"] += data
                conn.sendall(data)
        except (OSError, ssl.SSLError):
            pass
    threading.Thread(target=serve, daemon=True).start()
    emulator.router.add_map("tls.example", 443, "127.0.0.1", listener.getsockname()[1])
    yield state
    listener.close()
    if state["conn"] is not None:
        state["conn"].close()


@pytest.mark.parametrize("kind", ["crlf", "cr", "bytes"])
def test_qsslsend_payloads_starting_with_lf_reach_a_python_ssl_server_exactly(open_modem, tls_echo, kind):
    host, _ = open_modem("ec2x")
    pdp_up(host)
    assert host.at('AT+QSSLOPEN=1,1,0,"tls.example",443,0') == OK
    assert host.seen(b"+QSSLOPEN: 0,0", timeout=15) == b"+QSSLOPEN: 0,0"
    learn(host, kind)
    sent = b""
    for payload in (b"\nx", b"\r\ny", b"\n"):
        line = b"AT+QSSLSEND=0,%d\r\n" % len(payload)
        if kind == "cr":
            line = line[:-1]
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        assert host.read_until(b"> ").endswith(PROMPT)
        host.write(payload)
        assert host.read_until(RESULT, timeout=3).endswith(SEND_OK)
        sent += payload
    wait_for(lambda: len(tls_echo["got"]) >= len(sent), what="the plaintext at the server")
    time.sleep(0.1)
    assert bytes(tls_echo["got"]) == sent
    # and exactly one SEND OK each: nothing else but "recv" URCs came
    rest = re.sub(rb'\r\n\+QSSLURC: "recv",0\r\n', b"", host.quiet_for(0.1))
    assert rest == b""


# == S3 / S4 / S5 ====================================================================================
def test_s3_hash_frames_the_prompt_and_a_leading_lf_is_data(open_modem, emulator):
    """ATS3=35: '#' ends lines and frames answers (S3 S4); an LF after the prompt is data."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(b"ATS3=35\r")
        assert host.read_until(b"#\nOK#\n") == b"#\nOK#\n"
        host.write(b"AT+QISEND=0,4#")
        assert host.read_until(b"> ") == b"#\n> "
        host.write(b"\nab\r")
        assert host.read_until(b"SEND OK#\n") == b"#\nSEND OK#\n"
        assert exactly(conn, b"\nab\r") == b"\nab\r"
        host.write(b"ATS3?#")
        assert host.read_until(b"OK#\n") == b"#\n035#\n#\nOK#\n"
        host.write(b"ATS3=13#")
        assert host.read_until(OK) == OK          # that line's OK is framed with the new S3


def test_s3_changed_in_the_line_that_opens_the_prompt(open_modem, emulator):
    """ATS3=35;+QISEND=0,5<CR><LF> in one write: the line ended at a CR (S3 then), its LF is
    the line's; the prompt and the result are framed with the new S3."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(b"ATS3=35;+QISEND=0,5\r\n")
        assert host.read_until(b"> ") == b"#\n> "
        host.write(b"hello")
        assert host.read_until(b"SEND OK#\n") == b"#\nSEND OK#\n"
        assert exactly(conn, b"hello") == b"hello"
        host.write(b"ATS3=13#")
        assert host.read_until(OK) == OK


@pytest.mark.parametrize("bytewise", [False, True])
def test_s4_changed_keeps_the_hosts_crlf_lf_out_of_the_data(open_modem, emulator, bytewise):
    """ATS4 frames the modem's answers only: the host's own LF (0x0A) after its CR is still
    the line's ending, not data."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(b"ATS4=35\r\n")
        assert host.read_until(b"\r#OK\r#") == b"\r#OK\r#"
        learn_line = b"AT+QISEND=0,5\r\n"
        if bytewise:
            byte_writer(host, learn_line, 0.001)
        else:
            host.write(learn_line)
        assert host.read_until(b"> ") == b"\r#> "
        host.write(b"hello")
        assert host.read_until(b"SEND OK\r#") == b"\r#SEND OK\r#"
        assert exactly(conn, b"hello") == b"hello"
        host.write(b"ATS4=10\r\n")
        assert host.read_until(OK) == OK


def test_backspace_edits_the_length_of_a_send_line_and_is_data_after_the_prompt(open_modem, emulator):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, "bytes")
        byte_writer(host, b"AT+QISEND=0,59\x08\r\n", 0.001)      # 59, rubbed out to 5
        assert host.read_until(b"> ") == PROMPT
        host.write(b"\x08\x7f\r\n\x1a")                         # binary-safe: all five are data
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"\x08\x7f\r\n\x1a") == b"\x08\x7f\r\n\x1a"
        host.write(b"ATS5=127\r")
        assert host.read_until(OK) == OK
        host.write(b"AT+QISEND=0,23\x7f\r")                      # DEL now rubs out
        assert host.read_until(b"> ") == PROMPT
        host.write(b"\n\x7f")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"\x08\x7f\r\n\x1a\n\x7f") == b"\x08\x7f\r\n\x1a\n\x7f"


# == A/ =================================================================================================
@pytest.mark.parametrize("kind", ["crlf", "cr", "bytes"])
def test_a_slash_repeat_of_a_send_takes_cr_and_lf_right_behind_it_as_data(open_modem, emulator, kind):
    """A/ has no terminator (V.250 5.2.4): the bytes after it -- CR LF included -- are the data."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, kind)
        line = b"AT+QISEND=0,3\r\n" if kind != "cr" else b"AT+QISEND=0,3\r"
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        assert host.read_until(b"> ") == PROMPT
        host.write(b"abc")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        if kind == "bytes":
            byte_writer(host, b"A/\r\nz", 0.001)
        else:
            host.write(b"A/\r\nz")
        assert host.read_until(b"> ") == PROMPT
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"abc\r\nz") == b"abc\r\nz"
        assert host.at("AT") == OK


# == echo ============================================================================================
@pytest.mark.parametrize("kind", ["crlf", "bytes"])
def test_echo_around_a_prompt_has_no_stray_lf(open_modem, emulator, kind):
    """ATE1, CR LF host: the line is echoed up to its CR, the LF of its ending nowhere (not
    before the prompt, not among the echoed data), the data echoed, one SEND OK."""
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x", echo=True)
        pdp_up(host)
        conn = open_buffered(host, server)
        learn(host, kind)
        line = b"AT+QISEND=0,5\r\n"
        if kind == "bytes":
            byte_writer(host, line, 0.001)
        else:
            host.write(line)
        assert host.read_until(b"> ") == b"AT+QISEND=0,5\r" + PROMPT
        if kind == "bytes":
            time.sleep(0.01)
        host.write(b"\nabcd")                        # the payload itself starts with LF
        assert host.read_until(RESULT, timeout=3) == b"\nabcd" + SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert host.quiet_for(0.1) == b""


# == the host closing the port ==========================================================================
def test_close_after_cr_at_the_prompt_then_a_new_program_starts_in_command_state(open_modem, emulator,
                                                                                 strict_log):
    """Program A writes AT+QISEND=0,4<CR> and exits at '>' (its LF never comes); B opens and
    writes an LF and bytes: nothing is sent, B meets command state and exactly its answers."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, "bytes")
        host.write(b"AT+QISEND=0,4\r")
        assert host.read_until(b"> ") == PROMPT
        host = reopen(host, emulator, port)
        try:
            assert mode(emulator, port) == "COMMAND"
            host.write(b"\nabcd")
            host.write(b"AT\r\n")
            assert host.read_until(OK) == OK
            assert host.quiet_for(0.1) == b""
            time.sleep(0.1)
            assert bytes(conn.received) == b""
            host.write(b"AT+QISEND=0,4\r")
            assert host.read_until(b"> ") == PROMPT
            host.write(b"\nxyz")
            assert host.read_until(RESULT, timeout=3) == SEND_OK
            assert exactly(conn, b"\nxyz") == b"\nxyz"
        finally:
            host.close()


@pytest.mark.parametrize("line, settle", [
    (b"AT+QISEND=0,4\r\n", "prompt"),
    (b'AT+QFUPL="UFS:gone.txt",4\r\n', "connect"),
    (b"AT+QISEND=0,4\r\nab", "half"),
])
def test_crlf_line_then_close_at_once_leaves_nothing_for_the_next_program(open_modem, emulator, line, settle,
                                                                         strict_log):
    """A writes a CR LF line that opens a prompt (maybe half its data) and closes without
    reading; the next program opens: no prompt, no result of A's reaches it, nothing is sent
    or stored, and its own bytes are command input."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(line)
        host.ser.flush()
        host = reopen(host, emulator, port)
        try:
            assert mode(emulator, port) == "COMMAND"
            host.write(b"cd")                           # would complete A's 4 bytes
            host.write(b"AT+CMEE?\r")
            assert host.read_until(OK) == b"\r\n+CMEE: 1\r\n" + OK
            assert host.quiet_for(0.1) == b""
            assert bytes(conn.received) == b""
            host.write(b'AT+QFLST="*"\r')
            assert b"gone.txt" not in host.read_until(OK)
        finally:
            host.close()


def test_close_while_online_then_a_new_program_returns_with_ato_and_lf_first_data(open_modem, emulator,
                                                                                 strict_log):
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x")
        pdp_up(host)
        assert host.at('AT+QICFG="transwaittm",0') == OK
        learn(host, "bytes")
        byte_writer(host, f'AT+QIOPEN=1,0,"TCP","{TCP_NAME}",{TCP_PORT},0,2\r\n'.encode(), 0.001)
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == CONNECT
        time.sleep(0.01)
        host.write(b"one\n")
        wait_for(lambda: server.connections, what="the accept")
        conn = server.connections[0]
        assert exactly(conn, b"one\n") == b"one\n"
        host = reopen(host, emulator, port)
        try:
            assert mode(emulator, port) == "COMMAND"
            host.write(b"ATO\r")                        # a CR-only program, whole lines
            assert host.read_until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n")) == CONNECT
            host.write(b"\ntwo")                        # its data start with LF
            assert exactly(conn, b"one\n\ntwo") == b"one\n\ntwo"
        finally:
            host.close()


# Was a bug, fixed: --uart, the late-LF verdict of a prompt opened by the previous program
# survived its close (Interpreter.host_changed() forgot crlf/piecewise/last_line_whole but not
# _late_lf, LateLf(until=inf) for a byte-by-byte CR LF writer): the next program's payload LF,
# written 100 ms after it opened the port, was eaten and the peer got b'abcd' for b'\nabc'.
def test_uart_new_program_answering_the_previous_programs_prompt_keeps_its_leading_lf(open_modem, emulator,
                                                                                     strict_log):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server, hangup_on_close=False)
        learn(host, "bytes")                              # program A: byte by byte, CR LF
        byte_writer(host, b"AT+QISEND=0,4\r", 0.001)     # ... this one with CR alone; exits at '>'
        assert host.read_until(b"> ") == PROMPT
        host = reopen(host, emulator, port)                # program B (Sixfab-style: data after reopen)
        try:
            time.sleep(0.1)
            host.write(b"\nabc")
            assert host.read_until(RESULT, timeout=2) == SEND_OK
            assert exactly(conn, b"\nabc") == b"\nabc"
        finally:
            host.close()


# == a starved emulator (two CPU hogs) ===============================================================
def test_cpu_starved_emulator_keeps_every_kind_of_host_byte_exact(open_modem, emulator):
    """Under two busy-looping shells, hosts whose line endings are known and whose LF comes
    with the line (whole CR LF lines, byte-by-byte CR LF lines, CR-only lines) send payloads
    starting with LF and CR LF: the peer gets exactly the payloads, the host one SEND OK each."""
    with sink_server(emulator) as server, cpu_hogs(2):
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        sent = b""
        for kind in ("crlf", "bytes", "cr", "crlf", "bytes", "cr"):
            learn(host, kind)
            for payload in (b"\nab", b"\r\n\n"):
                line = b"AT+QISEND=0,%d\r\n" % len(payload)
                if kind == "cr":
                    line = line[:-1]
                if kind == "bytes":
                    byte_writer(host, line, 0)
                else:
                    host.write(line)
                assert host.read_until(b"> ", timeout=10) == PROMPT
                if kind == "bytes":
                    emulator.wait_received(port, host.written)   # (its LF read before the data)
                host.write(payload)
                assert host.read_until(RESULT, timeout=10) == SEND_OK
                sent += payload
        assert exactly(conn, sent) == sent
        assert host.at("AT") == OK


# == more hang-up states ===============================================================================
def test_close_mid_line_then_the_next_program_does_not_complete_it(open_modem, emulator, strict_log):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(b"AT+QISE")                          # half a line, then the program exits
        emulator.wait_received(port, host.written)
        host = reopen(host, emulator, port)
        try:
            host.write(b"ND=0,4\r\n")                   # not a line of its own: dropped
            host.write(b"abcdAT\r\n")
            assert host.read_until(OK) == OK
            assert host.quiet_for(0.1) == b""
            assert bytes(conn.received) == b""
        finally:
            host.close()


def test_close_while_a_crlf_command_is_pending_gives_the_next_program_only_its_own_answers(
        open_modem, emulator, strict_log):
    """AT+QICLOSE lingers (the sink never closes) -- PENDING; its LF arrives meanwhile; the host
    exits.  The next program's AT gets one OK, never the orphaned AT+QICLOSE's."""
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        host.write(b"AT+QICLOSE=0,1\r")
        wait_for(lambda: mode(emulator, port) == "PENDING", what="the close lingering")
        host.write(b"\n")
        emulator.wait_received(port, host.written)
        host = reopen(host, emulator, port)
        try:
            host.write(b"AT+CMEE?\r\n")
            assert host.read_until(OK, timeout=5) == b"\r\n+CMEE: 1\r\n" + OK
            time.sleep(1.2)                                # the linger's end: no OK for it here
            assert host.quiet_for(0.2) == b""
            host.write(b"AT+QISTATE=1,0\r\n")
            assert host.read_until(OK) == OK                # the socket is gone
        finally:
            host.close()


def test_atv0_prompt_and_a_bytewise_crlf_host(open_modem, emulator):
    with sink_server(emulator) as server:
        host, port, conn = modem_and_socket(open_modem, emulator, server)
        learn(host, "bytes")
        byte_writer(host, b"ATV0\r\n", 0.001)
        assert host.read_until(b"0\r") == b"0\r"
        byte_writer(host, b"AT+QISEND=0,4\r\n", 0.001)
        assert host.read_until(b"> ") == b"> "
        host.write(b"\r\nab")
        assert host.read_until(b"SEND OK\r\n") == b"SEND OK\r\n"
        assert exactly(conn, b"\r\nab") == b"\r\nab"
        byte_writer(host, b"ATV1\r\n", 0.001)
        assert host.read_until(OK) == OK
