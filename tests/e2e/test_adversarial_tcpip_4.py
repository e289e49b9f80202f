"""A fourth adversarial pass over the EC2x TCP/IP commands (AT+QIOPEN & co.), driven by a
hostile HOST rather than hostile peers, where test_tcpip.py, test_adversarial_tcpip.py,
_tcpip_2.py, _tcpip_3.py, test_adversarial_hostile_peers_tcpip.py, test_review_tcpip_*.py and
test_qicfg_spec.py do not already go (docs/behaviour.md "TCP/UDP sockets (EC2x)", "Transparent
access mode", the CR LF / hang-up rules of "Command line and result codes").

Transparent mode
* a CR LF host writing every byte on its own enters transparent mode three ways (AT+QIOPEN
  mode 2, ATO, AT+QISWTMD=<id>,2): the LF after each line's CR is the line's, never data;
  data starting with LF written after CONNECT are data;
* "+++" split over three writes inside the guard time escapes (nothing of it sent); "+++"
  glued to data before it, a byte right after it, "++" then silence, three "+" each between
  silences, five "+" between silences, "+++" CR LF are data, sent in order, never an escape
  (no OK);
* the host closes the port while online with bytes waiting for transwaittm, with "++" held
  as a possible escape, and inside the guard time after a whole "+++": every byte reaches
  the server in order, no OK is left for the next host, whose ATO returns to the connection;
* AT+QICLOSE of a TCP INCOMING switched to transparent mode, after "+++", with the client's
  data waiting: the client gets its FIN and nothing else, no data or "closed" URC is
  written, ATO is NO CARRIER, the id goes to the next incoming; the incoming skips the id
  of an AT+QSSLOPEN socket and AT+QSSLOPEN on the incoming's id is 563;
* ATO after AT+QICLOSE of the escaped socket and a new buffer-mode socket on the same id:
  NO CARRIER, the new socket untouched;
* a push listener's client connecting and speaking while the port is online on another
  socket: nothing but the online bytes until "+++"; then OK, "incoming", its pushed data, in
  that order; AT+QISWTMD takes the incoming online and ATO returns to it;
* a "UDP" client switched online with three datagrams waiting: CONNECT, their bytes; with
  transpktsize 1 each typed byte is a datagram; the escape sends nothing; AT+QISWTMD to push
  pushes what waited once, a second switch pushes nothing again;
* transparent "UDP" with transpktsize 100 / transwaittm 2 s and writes of odd sizes: packets
  of exactly 100 bytes across the writes, the rest at the escape (once), then after the wait.
Buffer / push mode and AT+QISWTMD
* AT+QISWTMD cycling one socket through buffer, push and transparent mode (with "+++") three
  times while the server streams: every byte arrives exactly once, in order;
* push to buffer while the host has read none of the pushes: pushes, OK, then AT+QIRD give
  the 600 000 bytes exactly, AT+QIRD=<id>,0 counts them all read;
* a push stream read in 1, 3, 7, 4095-byte reads while a CR LF byte writer sends status
  commands: no push URC ever lands inside an answer, the stream arrives whole;
* a UDP SERVICE hearing 24 peers x 6 datagrams while the host flips it between push and
  buffer: every datagram once, whole, with its own sender, in each sender's order.
The port closed mid-phase
* an AT+QIRD answer cut by the host closing the port after reading part of it: the read
  happened, the next host's AT+QIRD=<id>,0 counts it, the next read continues after it;
* the port closed right after a fixed send's data / a variable send's Ctrl+Z: sent once;
* the port closed while AT+QICLOSE lingers (a peer that never closes): the next host's
  AT+QIOPEN waits behind it, gets its own OK only (never the close's), the id opens again.
Lengths, hex, listeners
* hex dataformat: a fixed-length send of 1460 bytes is 2920 digits of mixed case in odd
  writes (1461 is 552 before the prompt); a bad digit in a fixed-length send takes exactly
  2 x length digits (the next command line is not eaten) and sends nothing; a variable-length
  hex send of 1460 bytes works, 1461 is ERROR; a hex prompt abandoned by the port closing
  sends nothing, the next host's stray digits and Ctrl+Z are not data;
* hex reads: AT+QIRD=<id>,1501 is ERROR; 1500 binary bytes (NUL, CR LF, 0xff) are 3000
  lower-case digits, a read of 7 counts bytes, the rest and +QIRD: 0 follow;
* 14 clients reaching a listener while the host sits in an AT+QISEND prompt: nothing is
  written inside the prompt, SEND OK, then ten "incoming" (ids 2-11) and four "incoming full";
  each accepted client reaches its own id;
* two listeners (buffer and push) filling the pool: each "incoming" names its listener,
  AT+QISTATE? lists all twelve in id order with the right serverID and access mode;
* a UDP SERVICE used by a CR LF byte writer: AT+QISEND=<id>,<len>,"<ip>",<port> with data
  starting with LF (one datagram of a single LF too), pushes naming each of three senders.

Every test runs on ec2x_strict (manual clock, no ERROR log record, no traceback)."""
from __future__ import annotations

import re
import select
import socket
import threading
import time

import pytest

from emulator.testing.host import FINAL, Host
from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, error_code, free_port, qiopen, qird, qisend,
                                      wait_for)

OK = b"\r\nOK\r\n"
ONLINE_END = re.compile(rb"\r\n(OK|ERROR|NO CARRIER)\r\n")


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def crlf_bytewise(host: Host, line: str) -> None:
    """Write `line` CR LF, one byte per write (a firmware host)."""
    for b in (line + "\r\n").encode():
        host.write(bytes([b]))


def start_in_pieces(host: Host, advance) -> None:
    """The host's first line "AT" CR LF, one byte per write, the "A" read by the modem on its
    own before the rest: it has seen this host write a line in pieces.  (Written without the
    wait, a loaded machine's lagging read can take each line whole -- the emulator then
    takes the host for a whole-line writer, and an LF read together with the data after
    CONNECT for data: docs/behaviour.md, "Command line and result codes".)"""
    host.write(b"A")
    advance(0)
    for b in b"T\r\n":
        host.write(bytes([b]))


def reopen(host: Host) -> Host:
    """The host closes the port and a new one opens it (ATE0 again, answers AT)."""
    host.close()
    time.sleep(0.05)
    again = Host(host.path)
    for _ in range(50):
        if again.at("AT").endswith(OK):
            break
    assert again.at("ATE0").endswith(OK)
    return again


def reopen_timed(emulator, port, host: Host, before: int):
    """reopen() on manual time: (the new host, its advance() -- which waits until the modem
    has read everything every host wrote --, the bytes all hosts so far wrote)."""
    before += host.written
    again = reopen(host)
    return again, emulator.advancer(port, again, before=before), before


def escape(host: Host, advance) -> bytes:
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    return host.read_until(ONLINE_END)


def sink(emulator) -> TcpServer:
    server = TcpServer("sink").__enter__()
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
    return server


def received_now(conn, settle: float = 0.3) -> bytes:
    """What the server holds once nothing more arrived for `settle` s (to show nothing came)."""
    last = -1
    while len(conn.received) != last:
        last = len(conn.received)
        time.sleep(settle)
    return bytes(conn.received)


# -- entering transparent mode, byte by byte, CR LF -----------------------------------------
def test_crlf_byte_writer_enters_transparent_mode_three_ways_and_no_lf_is_data(modem, emulator):
    host, advance, _ = modem
    server = sink(emulator)
    try:
        start_in_pieces(host, advance)
        assert host.read_until(FINAL) == OK
        crlf_bytewise(host, 'AT+QICFG="transwaittm",0')
        assert host.read_until(FINAL) == OK
        crlf_bytewise(host, f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        for b in b"one":
            host.write(bytes([b]))
        assert conn.wait_received(3) == b"one"
        assert escape(host, advance) == OK
        crlf_bytewise(host, "ATO")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"two")
        assert conn.wait_received(6) == b"onetwo"
        assert escape(host, advance) == OK
        crlf_bytewise(host, "AT+QISWTMD=0,2")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        host.write(b"\nthree")                   # data that start with LF, written after CONNECT
        assert conn.wait_received(12) == b"onetwo\nthree"
        assert escape(host, advance) == OK
        assert received_now(conn) == b"onetwo\nthree"          # no LF of a command line, no "+"
        crlf_bytewise(host, "AT+QICLOSE=0,0")
        assert host.read_until(FINAL) == OK
        assert server.gone(0, timeout=10)
    finally:
        server.close()


# -- "+++" split, glued, broken -------------------------------------------------------------
def test_plus_plus_plus_split_over_writes_escapes_glued_or_broken_is_data(modem, emulator):
    host, advance, _ = modem
    server = sink(emulator)
    try:
        assert host.at('AT+QICFG="transwaittm",0') == OK
        host.write(f'AT+QIOPEN=1,3,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        host.write(b"start")
        assert conn.wait_received(5) == b"start"
        # the three "+" in three writes, within the guard time: an escape, nothing sent
        advance(1.1)
        for _ in range(3):
            host.write(b"+")
            time.sleep(0.05)
        advance(1.1)
        assert host.read_until(ONLINE_END) == OK
        assert received_now(conn) == b"start"
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        # glued to the data before it: data
        host.write(b"abc+++")
        advance(1.1)
        assert conn.wait_received(11) == b"startabc+++"
        # after the silence, but a byte follows within the guard time: data
        advance(1.1)
        host.write(b"+++x")
        assert conn.wait_received(15) == b"startabc++++++x"
        # after the silence, "++" then silence: data once the guard time tells
        advance(1.1)
        host.write(b"++")
        advance(1.1)
        assert conn.wait_received(17) == b"startabc++++++x++"
        advance(0.5)
        host.write(b"+end")                     # one "+" glued to data: data at once
        assert conn.wait_received(21) == b"startabc++++++x+++end"
        # three "+", each after more than the guard time of silence: data, no escape
        for _ in range(3):
            advance(1.1)
            host.write(b"+")
        advance(1.1)
        assert conn.wait_received(24) == b"startabc++++++x+++end+++"
        # "+++++" (five) between silences: not an escape either
        advance(1.1)
        host.write(b"+++++")
        advance(1.1)
        assert conn.wait_received(29) == b"startabc++++++x+++end++++++++"
        # "+++" sent as a command line (CR LF after it), as some drivers do: data
        advance(1.1)
        host.write(b"+++\r\n")
        advance(1.1)
        assert conn.wait_received(34) == b"startabc++++++x+++end++++++++" + b"+++\r\n"
        assert host.quiet_for(0.3) == b""       # no OK was ever written for any of them
        assert escape(host, advance) == OK
        assert received_now(conn) == b"startabc++++++x+++end++++++++" + b"+++\r\n"
        assert host.at("AT+QICLOSE=3,0") == OK
    finally:
        server.close()


# -- the host closes the port while online ---------------------------------------------------
def test_port_closed_online_with_a_packet_waiting_and_plus_held_loses_nothing(modem, emulator):
    host, advance, port = modem
    before = 0
    server = sink(emulator)
    try:
        # transwaittm 2 (200 ms, the default): short writes wait for it
        assert host.at('AT+QICFG="transwaittm"') == b'\r\n+QICFG: "transwaittm",2\r\n\r\nOK\r\n'
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        host.write(b"waiting")                  # held for transwaittm ...
        host.close()                            # ... when the host goes
        time.sleep(0.2)
        advance(0.5)
        assert conn.wait_received(7) == b"waiting"
        host, advance, before = reopen_timed(emulator, port, host, before)
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        host.write(b"more")
        advance(0.5)
        assert conn.wait_received(11) == b"waitingmore"
        advance(1.1)
        host.write(b"++")                        # may begin an escape: held ...
        host.close()                             # ... the host goes inside the guard time
        time.sleep(0.2)
        advance(1.5)
        assert conn.wait_received(13) == b"waitingmore++"
        host, advance, before = reopen_timed(emulator, port, host, before)
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        host.write(b"last")
        advance(1.1)
        host.write(b"+++")                       # the whole escape, then the host goes
        host.close()                             # inside the guard time after it: data
        time.sleep(0.2)
        advance(1.5)
        assert conn.wait_received(20) == b"waitingmore++last+++"
        host, advance, before = reopen_timed(emulator, port, host, before)
        assert host.quiet_for(0.2) == b""        # no OK of an escape for the new host
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        host.write(b"end")
        assert escape(host, advance) == OK       # the escape sends what waited first
        assert received_now(conn) == b"waitingmore++last+++end"
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        server.close()


# -- AT+QICLOSE of an escaped TCP INCOMING, ids shared with SSL -------------------------------
def test_qiclose_of_an_escaped_transparent_incoming_beside_an_ssl_socket(modem, emulator, pki):
    from emulator.testing.peers import TlsServer
    host, advance, _ = modem
    port = free_port()
    with TlsServer(pki.server, mode="echo") as tls:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", tls.port)
        assert host.at('AT+QSSLOPEN=1,1,0,"tls.example",443,0') == OK
        host.seen(b"+QSSLOPEN: 0,0\r\n")
        qiopen(host, 2, "TCP LISTENER", "127.0.0.1", 0, local_port=port)
        client = socket.create_connection(("127.0.0.1", port))
        client.settimeout(10)
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,\d+,"[\d.]+",\d+\r\n'))
        assert urc == f'+QIURC: "incoming",1,2,"127.0.0.1",{client.getsockname()[1]}\r\n'.encode()
        assert host.at('AT+QSSLOPEN=1,1,1,"tls.example",443,0') == b"\r\nERROR\r\n"
        assert error_code(host) == 563
        assert host.at('AT+QICFG="transwaittm",0') == OK
        assert host.at("AT+QISWTMD=1,2") == b"\r\nCONNECT\r\n"
        client.sendall(b"to host")
        assert host.read_exactly(7) == b"to host"
        host.write(b"to client")
        got = b""
        while len(got) < 9:
            got += client.recv(100)
        assert got == b"to client"
        assert escape(host, advance) == OK
        client.sendall(b"waits in the socket")
        time.sleep(0.3)
        assert host.at("AT+QISTATE=1,1").startswith(b'\r\n+QISTATE: 1,"TCP INCOMING","127.0.0.1",')
        host.write(b"AT+QICLOSE=1\r")                    # waits for the client's end (10 s)
        assert client.recv(100) == b""                       # the FIN, none of the data
        client.close()
        assert host.read_until(FINAL) == OK
        assert host.quiet_for(0.5) == b""                   # no data, no "closed" URC
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QISTATE=1,1") == OK
        # the id is free for the next incoming (the lowest the SSL socket leaves)
        client2 = socket.create_connection(("127.0.0.1", port))
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,\d+,"[\d.]+",\d+\r\n'))
        assert urc == f'+QIURC: "incoming",1,2,"127.0.0.1",{client2.getsockname()[1]}\r\n'.encode()
        client2.close()
        host.seen(b'+QIURC: "closed",1\r\n')
        assert host.at("AT+QICLOSE=1") == OK
        assert host.at("AT+QICLOSE=2") == OK
        assert host.at("AT+QSSLCLOSE=0") == OK


# -- AT+QISWTMD cycles while the server streams ----------------------------------------------
PUSH = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
RECV = b'\r\n+QIURC: "recv",0\r\n'


def take_until(host: Host, end: re.Pattern, data: bytearray, timeout: float = 20) -> bytes:
    """Consume the port's output up to `end` (an answer), taking push URCs' data into `data`
    (each push's data end with CR LF) and dropping buffer-mode "recv" URCs on the way; returns
    the answer."""
    deadline = time.monotonic() + timeout
    while True:
        p = bytes(host.pending)
        m = PUSH.match(p)
        if m:
            n = int(m.group(1))
            if len(p) >= m.end() + n + 2:
                assert p[m.end() + n:m.end() + n + 2] == b"\r\n", p[:m.end() + n + 2][-200:]
                data += p[m.end():m.end() + n]
                del host.pending[:m.end() + n + 2]
                continue
        elif p.startswith(RECV):
            del host.pending[:len(RECV)]
            continue
        else:
            e = end.match(p)
            if e:
                del host.pending[:e.end()]
                return e.group(0)
            if not p.startswith(b"\r\n"[:len(p)]):           # every URC and answer starts so
                raise AssertionError(f"unexpected output {p[:200]!r}")
        assert time.monotonic() < deadline, f"timed out; pending {p[:200]!r}"
        host._fill()


def test_qiswtmd_cycles_while_the_server_streams_lose_nothing(modem, emulator):
    host, advance, _ = modem
    stream = b"".join(b"%07d\n" % i for i in range(12000))          # 96 000 digits and LFs
    started = threading.Event()

    def behave(conn):
        started.set()
        for i in range(0, len(stream), 400):
            conn.send(stream[i:i + 400])
            time.sleep(0.002)
        time.sleep(60)

    got = bytearray()
    with TcpServer(behave=behave) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        assert started.wait(10)
        for _ in range(3):
            # buffer mode: one read
            host.write(b"AT+QIRD=0,700\r")
            head = take_until(host, re.compile(rb"\r\n\+QIRD: \d+\r\n"), got)
            n = int(re.search(rb"\d+", head).group(0))
            got += host.read_exactly(n)
            assert take_until(host, re.compile(rb"\r\n\r\nOK\r\n|\r\nOK\r\n"), got)
            # push mode for a moment
            host.write(b"AT+QISWTMD=0,1\r")
            take_until(host, re.compile(re.escape(OK)), got)
            time.sleep(0.05)
            # transparent: the raw stream (digits and LFs) until the escape's OK
            host.write(b"AT+QISWTMD=0,2\r")
            take_until(host, re.compile(rb"\r\nCONNECT\r\n"), got)
            time.sleep(0.05)
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            raw = host.read_until(re.compile(rb"\r\nOK\r\n"), timeout=20)
            got += raw[:-len(OK)]
            # back to buffer
            host.write(b"AT+QISWTMD=0,0\r")
            take_until(host, re.compile(re.escape(OK)), got)
        # the rest through AT+QIRD until all came
        deadline = time.monotonic() + 60
        while len(got) < len(stream):
            assert time.monotonic() < deadline, (len(got), len(stream))
            host.write(b"AT+QIRD=0,1500\r")
            head = take_until(host, re.compile(rb"\r\n\+QIRD: \d+\r\n"), got)
            n = int(re.search(rb"\d+", head).group(0))
            if n:
                got += host.read_exactly(n)
                take_until(host, re.compile(rb"\r\n\r\nOK\r\n"), got)
            else:
                take_until(host, re.compile(re.escape(OK)), got)
                time.sleep(0.02)
        assert len(got) == len(stream)
        assert bytes(got) == stream
        assert host.at("AT+QICLOSE=0,0") == OK


# -- an AT+QIRD answer cut by the port closing -----------------------------------------------
def test_qird_answer_cut_by_the_port_closing_then_the_next_host_reads_on(modem, emulator):
    host, _, _ = modem
    payload = bytes((i * 7 + 3) % 256 for i in range(4000))
    with TcpServer(behave=lambda conn: (conn.send(payload), time.sleep(60))) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0)
        host.seen(b'+QIURC: "recv",0\r\n')
        wait_for(lambda: b"+QIRD: 4000,0,4000" in host.at("AT+QIRD=0,0"), what="all 4000 bytes buffered")
        host.write(b"AT+QIRD=0,1500\r")
        assert host.read_until(b"+QIRD: 1500\r\n") == b"\r\n+QIRD: 1500\r\n"
        assert host.read_exactly(11) == payload[:11]          # a few bytes of it, then the port goes
        host = reopen(host)
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 4000,1500,2500\r\n\r\nOK\r\n"
        assert qird(host, 0, 1500) == (b"\r\n+QIRD: 1500\r\n", payload[1500:3000])
        assert qird(host, 0, 1500) == (b"\r\n+QIRD: 1000\r\n", payload[3000:])
        assert qird(host, 0, 1500) == (b"\r\n+QIRD: 0\r\n", b"")
        assert host.at("AT+QICLOSE=0,0") == OK


# -- hex dataformat edges ---------------------------------------------------------------------
def test_hex_send_lengths_bad_digits_and_an_abandoned_hex_prompt(modem, emulator):
    host, _, _ = modem
    server = sink(emulator)
    try:
        assert host.at('AT+QICFG="dataformat",1,1') == OK
        qiopen(host, 0)
        conn = server.wait_connection()
        big = bytes(range(256)) * 5 + bytes(range(180))               # 1460 bytes
        digits = big.hex()
        mixed = "".join(c.upper() if i % 3 == 0 else c for i, c in enumerate(digits))
        host.write(b"AT+QISEND=0,1460\r")
        assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "
        for i in range(0, len(mixed), 333):                           # odd-sized writes
            host.write(mixed[i:i + 333].encode())
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert conn.wait_received(1460) == big
        assert host.at("AT+QISEND=0,1461") == b"\r\nERROR\r\n"
        assert error_code(host) == 552
        # a bad digit in a fixed-length send: exactly 2 x 4 digits are taken, nothing sent
        host.write(b"AT+QISEND=0,4\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"41zz4344")
        assert host.read_until(RESULT) == b"\r\nERROR\r\n"
        assert error_code(host) == 552
        assert host.at("AT") == OK                                    # the next line not eaten
        assert received_now(conn) == big
        # variable length: 1460 bytes of hex work, 1461 do not
        host.write(b"AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(("5a" * 1460).encode() + b"\x1a")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert conn.wait_received(2920)[1460:] == b"Z" * 1460
        host.write(b"AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(("5a" * 1461).encode() + b"\x1a")
        assert host.read_until(RESULT) == b"\r\nERROR\r\n"
        assert host.at("AT") == OK
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 2920,2920,0\r\n\r\nOK\r\n"
        assert received_now(conn) == big + b"Z" * 1460
        # a hex prompt abandoned by the port closing: nothing sent; the setting stays
        host.write(b"AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"414243")
        host = reopen(host)
        host.write(b"44\x1a\r")                 # the next host's bytes: no data (no AT line: no answer)
        assert host.at("AT") == OK
        assert received_now(conn) == big + b"Z" * 1460
        host.write(b"AT+QISEND=0,2\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"4a4B")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert conn.wait_received(2922)[2920:] == b"JK"
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        server.close()


def test_hex_reads_of_binary_data_and_odd_lengths(modem, emulator):
    host, _, _ = modem
    payload = bytes(range(256)) * 6 + b"\r\n\x00\xff" * 10             # 1576 bytes
    with TcpServer(behave=lambda conn: (conn.send(payload), time.sleep(60))) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        assert host.at('AT+QICFG="dataformat",0,1') == OK
        qiopen(host, 0)
        host.seen(b'+QIURC: "recv",0\r\n')
        wait_for(lambda: b"+QIRD: 1576,0,1576" in host.at("AT+QIRD=0,0"), what="all bytes buffered")
        assert host.at("AT+QIRD=0,1501") == b"\r\nERROR\r\n"
        answer = host.at("AT+QIRD=0,1500")
        assert answer == b"\r\n+QIRD: 1500\r\n" + payload[:1500].hex().encode() + b"\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=0,7") == b"\r\n+QIRD: 7\r\n" + payload[1500:1507].hex().encode() + b"\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 1576,1507,69\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 69\r\n" + payload[1507:].hex().encode() + b"\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0,0") == OK


# -- a listener beyond its ids while the host sits in a data prompt ---------------------------
def test_clients_beyond_the_pool_while_the_host_is_in_a_send_prompt(modem, emulator):
    host, _, _ = modem
    server = sink(emulator)
    port = free_port()
    clients = []
    try:
        qiopen(host, 0)
        conn = server.wait_connection()
        qiopen(host, 1, "TCP LISTENER", "127.0.0.1", 0, local_port=port)
        host.write(b"AT+QISEND=0,6\r")
        assert host.read_until(b"> ") == b"\r\n> "
        for _ in range(14):                          # ids 2-11 free: ten fit, four do not
            c = socket.create_connection(("127.0.0.1", port))
            c.settimeout(10)
            clients.append(c)
        full = []

        def ended() -> bool:                         # the four dropped see their end
            for c in clients:
                if c in full:
                    continue
                if select.select([c], [], [], 0)[0]:
                    try:
                        data = c.recv(10)
                    except OSError:
                        data = b""
                    assert data == b"", data
                    full.append(c)
            return len(full) >= 4
        wait_for(ended, timeout=30, what="four clients dropped")
        time.sleep(0.3)
        ended()
        assert len(full) == 4, len(full)
        assert host.quiet_for(0.3) == b""            # nothing written inside the prompt
        host.write(b"\r\nabcd")                      # data: CR LF first
        out = host.read_until(RESULT)
        assert out == b"\r\nSEND OK\r\n"
        assert conn.wait_received(6) == b"\r\nabcd"
        accepted = [c for c in clients if c not in full]
        assert len(accepted) == 10 and len(full) == 4
        want = {c.getsockname()[1] for c in accepted}
        seen_ports, seen_ids = set(), []
        for _ in range(10):
            m = re.fullmatch(rb'\+QIURC: "incoming",(\d+),1,"127\.0\.0\.1",(\d+)\r\n',
                             host.seen(re.compile(rb'\+QIURC: "incoming",\d+,\d+,"[\d.]+",\d+\r\n')))
            seen_ids.append(int(m.group(1)))
            seen_ports.add(int(m.group(2)))
        assert sorted(seen_ids) == list(range(2, 12)) and seen_ports == want
        for _ in range(4):
            host.seen(b'+QIURC: "incoming full"\r\n')
        # each accepted client reaches its own id
        by_port = {c.getsockname()[1]: c for c in accepted}
        text = bytes(host.transcript)
        for m in re.finditer(rb'\+QIURC: "incoming",(\d+),1,"127\.0\.0\.1",(\d+)\r\n', text):
            cid, cport = int(m.group(1)), int(m.group(2))
            by_port[cport].sendall(b"client %d" % cid)
            host.seen(f'+QIURC: "recv",{cid}\r\n'.encode())
            assert qird(host, cid)[1] == b"client %d" % cid
        assert host.at("AT+QICLOSE=1") == OK
        for c in clients:
            c.close()
        for cid in seen_ids:
            host.seen(f'+QIURC: "closed",{cid}\r\n'.encode())
        for cid in seen_ids:
            assert host.at(f"AT+QICLOSE={cid}") == OK
        assert host.at("AT+QICLOSE=0,0") == OK
        assert host.at("AT+QISTATE?") == OK
    finally:
        for c in clients:
            c.close()
        server.close()


# -- a UDP SERVICE, byte by byte, CR LF, remote address form -----------------------------------
def test_udp_service_send_with_address_byte_by_byte_crlf_data_starting_with_lf(modem):
    host, advance, _ = modem
    port = free_port(socket.SOCK_DGRAM)
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for p in peers:
        p.bind(("127.0.0.1", 0))
        p.settimeout(10)
    try:
        start_in_pieces(host, advance)
        assert host.read_until(FINAL) == OK
        crlf_bytewise(host, f'AT+QIOPEN=1,4,"UDP SERVICE","127.0.0.1",0,{port},1')
        assert host.read_until(FINAL) == OK
        host.seen(b"+QIOPEN: 4,0\r\n")
        for i, p in enumerate(peers):
            data = b"\n" + b"%d" % i * (i + 1) + b"\r\n"
            crlf_bytewise(host, f'AT+QISEND=4,{len(data)},"127.0.0.1",{p.getsockname()[1]}')
            assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "
            for b in data:
                host.write(bytes([b]))
            assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
            assert p.recvfrom(100) == (data, ("127.0.0.1", port))
        # a datagram of one LF (after the line's own CR LF)
        crlf_bytewise(host, f'AT+QISEND=4,1,"127.0.0.1",{peers[0].getsockname()[1]}')
        assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")) == b"\r\n> "
        host.write(b"\n")
        assert host.read_until(RESULT) == b"\r\nSEND OK\r\n"
        assert peers[0].recvfrom(100) == (b"\n", ("127.0.0.1", port))
        # every peer answers twice, interleaved: one push per datagram, its own sender
        for round_ in range(2):
            for i, p in enumerate(peers):
                p.sendto(b"r%d p%d" % (round_, i), ("127.0.0.1", port))
        for round_ in range(2):
            for i, p in enumerate(peers):
                body = b"r%d p%d" % (round_, i)
                head = host.read_until(re.compile(rb'\+QIURC: "recv",4,\d+,"[\d.]+",\d+\r\n'))
                assert head.endswith(f'+QIURC: "recv",4,{len(body)},"127.0.0.1",{p.getsockname()[1]}\r\n'
                                     .encode()), head
                assert head.startswith(b'\r\n+QIURC: "recv"'), head        # nothing before it
                assert host.read_exactly(len(body) + 2) == body + b"\r\n"
        crlf_bytewise(host, "AT+QICLOSE=4")
        assert host.read_until(FINAL) == OK
    finally:
        for p in peers:
            p.close()


# -- push URCs never break into an answer ------------------------------------------------------
def test_push_stream_never_splits_an_answer_read_in_odd_sizes(modem, emulator):
    from tests.e2e.socket_support import OddHost
    first, _, _ = modem
    first.close()                        # the port goes to a host that reads 1, 3, 7, 4095 bytes
    time.sleep(0.05)
    host = OddHost(first.path)
    for _ in range(50):
        if host.at("AT").endswith(OK):
            break
    stream = b"".join(b"%06d|" % i for i in range(8000))         # 56 000 bytes
    started = threading.Event()

    def behave(conn):
        started.set()
        for i in range(0, len(stream), 333):
            conn.send(stream[i:i + 333])
            time.sleep(0.003)
        time.sleep(60)

    got = bytearray()
    with TcpServer(behave=behave) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, mode=1)
        assert started.wait(10)
        answers = [
            ("AT+QISTATE=1,0",
             re.compile(rb'\r\n\+QISTATE: 0,"TCP","[\d.]+",7000,\d+,2,1,0,1,"usbmodem"\r\n\r\nOK\r\n')),
            ("AT+QIRD=0,0", re.compile(rb"\r\n\+QIRD: \d+,\d+,\d+\r\n\r\nOK\r\n")),
            ('AT+QICFG="transwaittm"', re.compile(rb'\r\n\+QICFG: "transwaittm",2\r\n\r\nOK\r\n')),
            ("AT+QISDE?", re.compile(rb"\r\n\+QISDE: 1\r\n\r\nOK\r\n")),
            ("AT+QIGETERROR", re.compile(rb"\r\n\+QIGETERROR: \d+,[^\r]*\r\n\r\nOK\r\n")),
            ("AT+QISEND=0,0", re.compile(rb"\r\n\+QISEND: 0,0,0\r\n\r\nOK\r\n")),
        ]
        while len(got) < len(stream) - 2000:
            for line, answer in answers:
                for b in (line + "\r\n").encode():
                    host.write(bytes([b]))
                take_until(host, answer, got, timeout=30)
        deadline = time.monotonic() + 30
        while len(got) < len(stream):
            assert time.monotonic() < deadline, (len(got), len(stream))
            host.write(b"AT\r")
            take_until(host, re.compile(re.escape(OK)), got)
        assert bytes(got) == stream
        assert host.at("AT+QICLOSE=0,0") == OK
    host.close()


# -- transparent UDP: packets across odd-sized writes ------------------------------------------
def test_transparent_udp_packets_span_odd_writes_and_an_escape(modem, emulator):
    from emulator.testing.peers import UdpEchoServer
    host, advance, _ = modem
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map("udp.example", 7001, "127.0.0.1", server.port)
        assert host.at('AT+QICFG="transpktsize",100') == OK
        assert host.at('AT+QICFG="transwaittm",20') == OK           # 2 s: longer than a guard time
        host.write(b'AT+QIOPEN=1,5,"UDP","udp.example",7001,0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        data = bytes(48 + i % 10 for i in range(250))                # digits: no "+"
        sizes = (7, 1, 33, 99, 2, 64, 44)
        i = k = 0
        while i < len(data):
            host.write(data[i:i + sizes[k % len(sizes)]])
            i += sizes[k % len(sizes)]
            k += 1
        assert [d for _, d in server.wait_datagrams(2)] == [data[:100], data[100:200]]
        assert escape(host, advance) == OK                           # the 50 that waited go first
        assert [d for _, d in server.wait_datagrams(3)] == [data[:100], data[100:200], data[200:]]
        time.sleep(0.3)
        advance(4)
        time.sleep(0.3)
        assert len(server.log) == 3                                  # and only once
        assert host.at("ATO") == b"\r\nCONNECT\r\n"
        host.write(b"x" * 100 + b"y")
        assert [d for _, d in server.wait_datagrams(4)][3] == b"x" * 100
        advance(2.1)
        assert [d for _, d in server.wait_datagrams(5)][4] == b"y"
        assert escape(host, advance) == OK
        assert host.at("AT+QICLOSE=5") == OK


# -- the port closed while AT+QICLOSE lingers --------------------------------------------------
def test_port_closed_while_qiclose_lingers_next_host_waits_and_reuses_the_id(modem, emulator):
    host, advance, port = modem
    server = sink(emulator)
    try:
        qiopen(host, 0)
        conn = server.wait_connection()
        assert qisend(host, 0, b"before close") == b"\r\nSEND OK\r\n"
        assert conn.wait_received(12) == b"before close"
        host.write(b"AT+QICLOSE=0\r")              # the sink never closes: 10 s of linger
        assert server.gone(0, timeout=10)          # the modem's FIN went
        before = host.written
        host.close()
        time.sleep(0.2)
        host = Host(host.path)
        advance = emulator.advancer(port, host, before=before)
        # the next host's lines wait behind the pending close; its own answers only
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r'.encode())
        assert host.quiet_for(0.5) == b""
        advance(10.5)
        assert host.read_until(FINAL) == OK         # the QIOPEN's OK; never the QICLOSE's
        host.seen(b"+QIOPEN: 0,0\r\n")
        conn2 = server.wait_connection(1)
        assert qisend(host, 0, b"after") == b"\r\nSEND OK\r\n"
        assert conn2.wait_received(5) == b"after"
        assert host.at("AT+QICLOSE=0,0") == OK
        assert host.at("AT+QISTATE?") == OK
        assert received_now(conn) == b"before close"
    finally:
        server.close()


# -- a "UDP" client switched to transparent mode with datagrams waiting, 1-byte packets --------
def test_udp_client_switched_online_with_datagrams_waiting_and_one_byte_packets(modem, emulator):
    from emulator.testing.peers import UdpEchoServer
    host, advance, _ = modem
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map("udp.example", 7001, "127.0.0.1", server.port)
        assert host.at('AT+QICFG="transpktsize",1') == OK
        qiopen(host, 6, "UDP", "udp.example", 7001)
        assert qisend(host, 6, b"hi") == b"\r\nSEND OK\r\n"
        (me, _), = server.wait_datagrams(1)
        for d in (b"one", b"two", b"three"):
            server.sock.sendto(d, me)
        host.seen(b'+QIURC: "recv",6\r\n')
        wait_for(lambda: b"+QIRD: 11,0,11" in host.at("AT+QIRD=6,0"), what="three datagrams waiting")
        assert host.at("AT+QISWTMD=6,2") == b"\r\nCONNECT\r\n"
        assert host.read_exactly(11) == b"onetwothree"               # the waiting data first
        host.write(b"abc")
        assert [d for _, d in server.wait_datagrams(4)][1:] == [b"a", b"b", b"c"]   # one byte each
        advance(1.1)
        host.write(b"++x")                                            # after silence, broken: data
        assert [d for _, d in server.wait_datagrams(7)][4:] == [b"+", b"+", b"x"]
        server.sock.sendto(b"online", me)
        assert host.read_exactly(6) == b"online"
        assert escape(host, advance) == OK
        time.sleep(0.3)
        assert len(server.log) == 7                                   # the escape sent nothing
        server.sock.sendto(b"waits", me)
        time.sleep(0.3)
        assert host.quiet_for(0.2) == b""                             # no URC while escaped
        assert host.at("AT+QISWTMD=6,1") == b'\r\nOK\r\n'
        assert host.read_until(b"waits\r\n") == b'\r\n+QIURC: "recv",6,5\r\nwaits\r\n'
        assert host.at("AT+QISWTMD=6,1") == OK                        # again: nothing pushed twice
        assert host.quiet_for(0.3) == b""
        assert host.at("AT+QICLOSE=6") == OK


# -- the host closes the port right after a send's data ---------------------------------------
def test_port_closed_right_after_the_data_of_a_send_still_sends_it_once(modem, emulator):
    host, _, _ = modem
    server = sink(emulator)
    try:
        qiopen(host, 0)
        conn = server.wait_connection()
        host.write(b"AT+QISEND=0,5\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"hello")                  # all the data, then the port goes before SEND OK
        host.close()
        assert conn.wait_received(5) == b"hello"
        host = reopen(host)
        host.write(b"AT+QISEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b" world\x1a")             # variable length: Ctrl+Z ends it, then the port goes
        host.close()
        assert conn.wait_received(11) == b"hello world"
        host = reopen(host)
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 11,11,0\r\n\r\nOK\r\n"
        assert received_now(conn) == b"hello world"
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        server.close()


# -- ATO never resumes a new socket on the id of a closed one ---------------------------------
def test_ato_after_qiclose_and_the_id_reopened_is_no_carrier(modem, emulator):
    host, advance, _ = modem
    server = sink(emulator)
    try:
        assert host.at('AT+QICFG="transwaittm",0') == OK
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        first = server.wait_connection()
        host.write(b"first")
        assert first.wait_received(5) == b"first"
        assert escape(host, advance) == OK
        assert host.at("AT+QICLOSE=0,0") == OK
        qiopen(host, 0)                                  # the same id, buffer mode, a new connection
        second = server.wait_connection(1)
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at("AT+QISTATE=1,0").startswith(b'\r\n+QISTATE: 0,"TCP"')
        assert b',2,1,0,0,"usbmodem"' in host.at("AT+QISTATE=1,0")   # still buffer mode
        assert qisend(host, 0, b"second") == b"\r\nSEND OK\r\n"
        assert second.wait_received(6) == b"second"
        assert received_now(first) == b"first"
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        server.close()


# -- push to buffer while the host has not read the port ---------------------------------------
def test_switch_from_push_to_buffer_while_pushes_wait_unread_loses_nothing(modem, emulator):
    host, _, _ = modem
    stream = b"".join(b"%07d," % i for i in range(75000))          # 600 000 bytes
    with TcpServer(behave=lambda conn: (conn.send(stream), time.sleep(60))) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, mode=1)
        time.sleep(1.0)                          # the host reads nothing meanwhile
        host.write(b"AT+QISWTMD=0,0\r")          # written blind, the pushes unread
        got = bytearray()
        take_until(host, re.compile(re.escape(OK)), got, timeout=60)
        assert stream.startswith(bytes(got))
        deadline = time.monotonic() + 120
        while len(got) < len(stream):
            assert time.monotonic() < deadline, (len(got), len(stream))
            host.write(b"AT+QIRD=0,1500\r")
            head = take_until(host, re.compile(rb"\r\n\+QIRD: \d+\r\n"), bytearray())
            n = int(re.search(rb"\d+", head).group(0))
            if n:
                got += host.read_exactly(n)
                take_until(host, re.compile(rb"\r\n\r\nOK\r\n"), bytearray())
            else:
                take_until(host, re.compile(re.escape(OK)), bytearray())
                time.sleep(0.02)
        assert bytes(got) == stream
        assert host.at("AT+QIRD=0,0") == f"\r\n+QIRD: {len(stream)},{len(stream)},0\r\n\r\nOK\r\n".encode()
        assert host.at("AT+QICLOSE=0,0") == OK


# -- a push listener's client arrives and speaks while the port is online on another socket -----
def test_incoming_and_its_pushed_data_while_online_come_after_the_escape_in_order(modem, emulator):
    host, advance, _ = modem
    server = sink(emulator)
    lport = free_port()
    try:
        assert host.at('AT+QICFG="transwaittm",0') == OK
        qiopen(host, 1, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        client = socket.create_connection(("127.0.0.1", lport))
        client.sendall(b"data1")
        conn.send(b"online bytes")                                   # the online socket's peer
        assert host.read_exactly(12) == b"online bytes"             # nothing else in between
        time.sleep(0.5)
        assert host.quiet_for(0.3) == b""                           # the URCs are held
        host.write(b"typed")
        assert conn.wait_received(5) == b"typed"
        assert escape(host, advance) == OK
        want = (f'\r\n+QIURC: "incoming",2,1,"127.0.0.1",{client.getsockname()[1]}\r\n'
                '\r\n+QIURC: "recv",2,5\r\ndata1\r\n').encode()
        assert host.read_exactly(len(want)) == want
        assert host.quiet_for(0.3) == b""
        client.sendall(b"data2")                                    # in command mode: at once
        push2 = b'\r\n+QIURC: "recv",2,5\r\ndata2\r\n'
        assert host.read_exactly(len(push2)) == push2
        assert host.at("AT+QISWTMD=2,2") == b"\r\nCONNECT\r\n"       # the incoming goes online
        client.sendall(b"raw")
        assert host.read_exactly(3) == b"raw"
        host.write(b"back")
        got = b""
        client.settimeout(10)
        while len(got) < 4:
            got += client.recv(10)
        assert got == b"back"
        assert escape(host, advance) == OK
        assert host.at("ATO") == b"\r\nCONNECT\r\n"                 # the incoming: last to leave
        host.write(b"!")
        assert client.recv(10) == b"!"
        assert escape(host, advance) == OK
        assert received_now(conn) == b"typed"
        client.close()
        host.seen(b'+QIURC: "closed",2\r\n')
        for cid in (2, 1):
            assert host.at(f"AT+QICLOSE={cid}") == OK
        assert host.at("AT+QICLOSE=0,0") == OK
    finally:
        server.close()


# -- a UDP SERVICE hearing many peers while the host switches it between push and buffer -------
UPUSH = re.compile(rb'\r\n\+QIURC: "recv",7,(\d+),"127\.0\.0\.1",(\d+)\r\n')
URECV = b'\r\n+QIURC: "recv",7\r\n'


def take_datagrams(host: Host, end: re.Pattern, got: list, timeout: float = 30) -> bytes:
    """take_until for UDP SERVICE 7: each push URC's data (then their CR LF) with its sender
    into `got`."""
    deadline = time.monotonic() + timeout
    while True:
        p = bytes(host.pending)
        m = UPUSH.match(p)
        if m and len(p) >= m.end() + int(m.group(1)) + 2:
            n = int(m.group(1))
            assert p[m.end() + n:m.end() + n + 2] == b"\r\n", p[:m.end() + n + 2][-200:]
            got.append((int(m.group(2)), p[m.end():m.end() + n]))
            del host.pending[:m.end() + n + 2]
            continue
        if p.startswith(URECV):
            del host.pending[:len(URECV)]
            continue
        e = end.match(p)
        if e:
            del host.pending[:e.end()]
            return e.group(0)
        assert time.monotonic() < deadline, f"timed out; pending {p[:200]!r}"
        host._fill()


def test_udp_service_many_peers_while_switched_between_push_and_buffer(modem):
    host, advance, _ = modem
    port = free_port(socket.SOCK_DGRAM)
    peers = []
    try:
        qiopen(host, 7, "UDP SERVICE", "127.0.0.1", 0, local_port=port, mode=1)
        for _ in range(24):
            p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            p.bind(("127.0.0.1", 0))
            peers.append(p)
        sent = {p.getsockname()[1]: [] for p in peers}
        stop = threading.Event()

        def pour():
            for k in range(6):
                for i, p in enumerate(peers):
                    d = b"p%02d-d%d-" % (i, k) + b"x" * ((i * 37 + k * 11) % 300)
                    sent[p.getsockname()[1]].append(d)
                    p.sendto(d, ("127.0.0.1", port))
                    time.sleep(0.004)
            stop.set()
        t = threading.Thread(target=pour, daemon=True)
        t.start()
        got: list = []
        mode = 1
        while not stop.is_set() or mode == 0:
            mode = 1 - mode
            host.write(f"AT+QISWTMD=7,{mode}\r".encode())
            take_datagrams(host, re.compile(re.escape(OK)), got)
            if mode == 0:                     # read a few in buffer mode, one datagram each
                for _ in range(3):
                    host.write(b"AT+QIRD=7,1500\r")
                    head = take_datagrams(host, re.compile(rb'\r\n\+QIRD: (\d+)(?:,"127\.0\.0\.1",(\d+))?\r\n'), got)
                    m = re.match(rb'\r\n\+QIRD: (\d+)(?:,"127\.0\.0\.1",(\d+))?\r\n', head)
                    n = int(m.group(1))
                    if n:
                        got.append((int(m.group(2)), host.read_exactly(n)))
                        take_datagrams(host, re.compile(rb"\r\n\r\nOK\r\n"), got)
                    else:
                        take_datagrams(host, re.compile(re.escape(OK)), got)
        t.join(30)
        total = sum(len(v) for v in sent.values())
        deadline = time.monotonic() + 30
        while len(got) < total:                   # push mode: the rest comes by itself
            assert time.monotonic() < deadline, (len(got), total)
            host.write(b"AT\r")
            take_datagrams(host, re.compile(re.escape(OK)), got)
        assert len(got) == total
        for sender, datagrams in sent.items():
            assert [d for s, d in got if s == sender] == datagrams, sender
        assert host.at("AT+QIRD=7,0") == b"\r\n+QIRD: %d,%d,0\r\n\r\nOK\r\n" % (
            sum(len(d) for v in sent.values() for d in v), sum(len(d) for v in sent.values() for d in v))
        assert host.at("AT+QICLOSE=7") == OK
    finally:
        for p in peers:
            p.close()


# -- two listeners share the pool: each incoming names its own listener ------------------------
def test_two_listeners_fill_the_pool_each_incoming_names_its_listener(modem):
    host, _, _ = modem
    ports = [free_port(), free_port()]
    clients: list = []
    try:
        qiopen(host, 5, "TCP LISTENER", "127.0.0.1", 0, local_port=ports[0])
        qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=ports[1], mode=1)
        urc = re.compile(rb'\+QIURC: "incoming",(\d+),(\d+),"127\.0\.0\.1",(\d+)\r\n')
        by_id = {}
        for k in range(10):                          # one at a time: the ids in order
            listener = (5, 0)[k % 2]
            c = socket.create_connection(("127.0.0.1", ports[k % 2]))
            c.settimeout(10)
            clients.append(c)
            m = urc.fullmatch(host.seen(urc))
            cid, server_id, cport = (int(x) for x in m.groups())
            assert (server_id, cport) == (listener, c.getsockname()[1])
            by_id[cid] = (listener, c)
        assert sorted(by_id) == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
        for k in range(2):                           # the pool is full, on both listeners
            c = socket.create_connection(("127.0.0.1", ports[k]))
            c.settimeout(10)
            host.seen(b'+QIURC: "incoming full"\r\n')
            assert c.recv(10) == b""
            c.close()
        lines = host.at("AT+QISTATE?")
        states = re.findall(rb'\+QISTATE: (\d+),"([A-Z ]+)","127\.0\.0\.1",(\d+),(\d+),(\d),1,(\d+),(\d),"usbmodem"',
                            lines)
        assert [int(s[0]) for s in states] == list(range(12))       # in id order, all twelve
        for s in states:
            cid = int(s[0])
            if cid in (0, 5):
                assert s[1:] == (b"TCP LISTENER", b"0", str(ports[cid == 0]).encode(), b"3",
                                 str(cid).encode(), b"1" if cid == 0 else b"0")
            else:
                listener, c = by_id[cid]
                assert s[1:] == (b"TCP INCOMING", str(c.getsockname()[1]).encode(),
                                 str(ports[listener == 0]).encode(), b"2", str(listener).encode(),
                                 b"1" if listener == 0 else b"0")
        # the push listener's clients push, the buffer listener's wait for AT+QIRD
        for cid, (listener, c) in sorted(by_id.items()):
            c.sendall(b"from %d" % cid)
            body = b"from %d" % cid
            if listener == 0:
                head = host.read_until(re.compile(rb'\+QIURC: "recv",%d,%d\r\n' % (cid, len(body))))
                assert head.endswith(b'\r\n+QIURC: "recv",%d,%d\r\n' % (cid, len(body)))
                assert host.read_exactly(len(body) + 2) == body + b"\r\n"
            else:
                host.seen(b'+QIURC: "recv",%d\r\n' % cid)
                assert qird(host, cid) == (b"\r\n+QIRD: %d\r\n" % len(body), body)
        assert host.at("AT+QICLOSE=5") == OK and host.at("AT+QICLOSE=0") == OK
        for cid, (_, c) in by_id.items():
            c.close()
        for cid in by_id:
            host.seen(b'+QIURC: "closed",%d\r\n' % cid)
        for cid in by_id:
            assert host.at(f"AT+QICLOSE={cid}") == OK
        assert host.at("AT+QISTATE?") == OK
    finally:
        for c in clients:
            c.close()
