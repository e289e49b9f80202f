"""Adversarial: a chaotic host program, round 11 (EC2x and ML302 over the pty).

Rounds 1-10 (test_adversarial_chaos_host*.py, test_adversarial_ml302_chaos.py,
test_adversarial_host_termios.py) closed the port at the usual points, chunked streams and
abused the tty.  Here the host:

- closes the port between AT+QSSLOPEN's OK and its +QSSLOPEN URC (a slow network makes the
  handshake outlast the OK), on both profiles: the socket is connected (or, when the open
  failed, the id free) for the next program, no stale URC greets it, data go through once;
  pipelines reads, sends, a second open and a context write into that gap and leaves;
- writes whole SSL sessions one byte at a time with random tiny delays (CR, or CR LF with the
  LF sometimes 60-120 ms late and payloads starting with LF) while reading the port in odd
  chunks (1, 3, 7, 4095), also in transparent mode, uploads (AT+QFUPL / AT+QSECWRITE) included;
- pipelines 50 (and 600) mixed commands (AT+QSSLSTATE, AT+QSSLCFG queries, `;` chains, A/,
  sends with their data) in one write, under ATE0 and ATE1, and checks every answer in order,
  byte for byte, against the same commands' answers taken one at a time; leaves half-way
  through reading those answers; is cut off at seeded bytes of a session (uploads and sends:
  exactly the completed ones count);
- floods NUL / 0xFF / ESC sequences / lines longer than serial.line_max between valid commands
  (also under ATE1, while a slow answer is pending -- past the 1 MiB input bound -- and while
  a direct-push socket streams 48 KB to an odd-chunk reader) and checks the next valid command
  answers exactly and socket data are whole; an arrow key's escape sequence at a send prompt;
- uses A/ in odd places: first thing of a new program after a hang-up that cut a line, after a
  slow answer or a prompt or a half-read AT+QSSLRECV the last program left, inside a data
  prompt (data), pipelined behind lines, after a line past line_max, after an abandoned upload;
- sends a BREAK, drops DTR with TIOCMBIC, clears HUPCL, sets B0, changes the baud rate or to
  CS7 with parity, or switches to canonical mode with ICRNL / IXON: online in transparent mode
  (both profiles), in the middle of an AT+QSSLRECV answer, between OK and the open's URC; and
  drops DTR (control API, AT&D1 / AT&D2) at those points.

After every sequence: AT answers OK, no traceback / ERROR record (strict_log), the server got
exactly the bytes the host completed, the host read back exactly the echo, once.

A DTR drop in AT+QFUPL's CONNECT data phase, under AT&D1 or AT&D2, is no escape (a decision,
docs/behaviour.md DTR: AT&D acts on an online socket; the FILE manual's only way out of the
data is a guarded "+++"): the upload goes on counting.
"""
from __future__ import annotations

import random
import re
import termios
import time

import pytest

from emulator.testing.host import Host
from tests.e2e.socket_support import OddHost, conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_chaos_host import (SSL_HOST, SSL_PORT, SSL_URC, Rig, payload,
                                                    state_re)
from tests.e2e.test_adversarial_ml302_chaos import URC as ML_URC
from tests.e2e.test_adversarial_ml302_chaos import Rig as MlRig

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z = b"\x1a"
SEND_OK = b"\r\nSEND OK\r\n"


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    r.caplog = strict_log
    yield r
    r.close_all()


@pytest.fixture
def ml(emulator, open_modem, strict_log):
    r = MlRig(emulator, open_modem)
    yield r
    r.close_all()


def jitter_write(host: Host, data: bytes, rnd: random.Random, max_delay: float = 0.002) -> None:
    """One byte a write, a random tiny pause (0 - max_delay s) after some of them."""
    for b in data:
        host.write(bytes([b]))
        if rnd.random() < 0.3:
            time.sleep(rnd.random() * max_delay)


def settle_written(r) -> None:
    """Wait until the modem has read every byte the rig's hosts wrote."""
    r.emulator.wait_received(r.port, sum(h.written for h in r.hosts))


def ec_recv_all(r: Rig, cid: int, want: int, timeout: float = 20) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want}"
        chunk = r.recv_once(cid)
        got += chunk
        if not chunk:
            time.sleep(0.02)
    assert r.recv_once(cid) == b""
    return bytes(got)


def ml_recv_all(r: MlRig, ssid: int, want: int, timeout: float = 20) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want}"
        r.host.write(f"AT+QSSLRECV=1,{ssid},1500\r")
        chunk = r.recv_answer()
        got += chunk
        if not chunk:
            r.advance(0.05)
            time.sleep(0.02)
    r.host.write(f"AT+QSSLRECV=1,{ssid},1500\r")
    assert r.recv_answer() == b""
    return bytes(got)


def wait_connected(emulator, cid: int) -> None:
    wait_for(lambda: any(s["id"] == cid and s["state"] == "CONNECTED"
                         for s in emulator.control("state")["sockets"]), 15, f"socket {cid} connected")


def ec_send(r: Rig, cid: int, data: bytes) -> None:
    r.host.write(f"AT+QSSLSEND={cid},{len(data)}\r")
    assert SSL_URC.sub(b"", r.host.read_until(b"> ")) == b"\r\n> "
    r.host.write(data)
    assert SSL_URC.sub(b"", r.host.read_until(SEND_OK)) == SEND_OK


# == closing between AT+QSSLOPEN's OK and its URC ===============================================
def test_ec2x_close_between_open_ok_and_its_urc_next_program_finds_it_connected(rig):
    with rig.ssl_server(mode="echo") as server:
        assert rig.emulator.control("net", latency_ms=250)["ok"]
        assert rig.host.at(f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0') == OK
        rig.host.close()                                   # before +QSSLOPEN: 0,0
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        conn = conn_of(server)
        wait_for(lambda: any(s["id"] == 0 and s.get("state") in ("connected", 2, "2")
                             for s in rig.emulator.control("state")["sockets"])
                 or b"" == b"x", 0.01, "") if False else None
        time.sleep(1.5)                                     # the client's side of the handshake
        assert rig.emulator.control("net", latency_ms=0)["ok"]
        host = Host(rig.port.path)
        rig.hosts.append(host)
        rig.host = host
        rig.emulator.run(rig.port.port.look_for_host)
        assert host.quiet_for(0.3) == b""                  # no stale +QSSLOPEN URC
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0)), "socket 0 not connected"
        data = payload(900, 11)
        ec_send(rig, 0, data)
        assert wait_received(conn, len(data)) == data
        assert ec_recv_all(rig, 0, len(data)) == data
        assert host.at("AT") == OK


def test_ml302_close_between_open_ok_and_its_urc_next_program_finds_it_connected(ml):
    srv = ml.server(mode="echo")
    assert ml.emulator.control("net", latency_ms=250)["ok"]
    assert ml.host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == OK
    ml.away()
    for _ in range(30):
        ml.advance(0.1)
        time.sleep(0.02)
    conn = conn_of(srv)
    assert ml.emulator.control("net", latency_ms=0)["ok"]
    host = ml.back()
    assert host.quiet_for(0.3) == b""
    st = ml.state()
    assert b'+QSSLSTATE: 0,"TCP","106.12.79.254",443,"CONNECTED",1' in st, st
    data = payload(700, 12).replace(CTRL_Z, b"z").replace(b"\x1b", b"e")
    host.write("AT+QSSLSEND=0\r")
    assert ML_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
    host.write(data + CTRL_Z)
    assert ML_URC.sub(b"", host.read_until(SEND_OK)) == SEND_OK
    assert wait_received(conn, len(data)) == data
    assert ml_recv_all(ml, 0, len(data)) == data
    assert host.at("AT") == OK


# == a jittery one-byte writer and an odd-chunk reader ===========================================
@pytest.mark.parametrize("seed", [1101, 1102])
def test_ec2x_jittery_bytewise_session_read_in_odd_chunks(rig, seed):
    rnd = random.Random(seed)
    rig.host.close()
    wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
    host = OddHost(rig.port.path)
    rig.hosts.append(host)
    rig.host = host
    rig.emulator.run(rig.port.port.look_for_host)
    with rig.ssl_server(mode="echo") as server:
        jitter_write(host, f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0\r'.encode(), rnd)
        got = host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 20)
        assert got == OK + b"\r\n+QSSLOPEN: 0,0\r\n", got
        conn = conn_of(server)
        sent = bytearray()
        for i in range(4):
            data = payload(rnd.randint(1, 1460), seed * 10 + i)
            if i % 2:
                jitter_write(host, f"AT+QSSLSEND=0,{len(data)}\r".encode(), rnd)
                assert SSL_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
                jitter_write(host, data, rnd, 0.0005)
            else:
                data = data.replace(CTRL_Z, b"z").replace(b"\x1b", b"e")
                jitter_write(host, b"AT+QSSLSEND=0\r", rnd)
                assert SSL_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
                jitter_write(host, data + CTRL_Z, rnd, 0.0005)
            assert SSL_URC.sub(b"", host.read_until(SEND_OK, 20)) == SEND_OK
            sent += data
            jitter_write(host, b'AT+QSSLCFG="sslversion",1\r', rnd)
            assert SSL_URC.sub(b"", host.read_until(OK)) == b'\r\n+QSSLCFG: "sslversion",1,4\r\n' + OK
        assert wait_received(conn, len(sent)) == bytes(sent)
        back = bytearray()
        deadline = time.monotonic() + 20
        while len(back) < len(sent):
            assert time.monotonic() < deadline
            n = rnd.choice((1, 3, 7, 1500))
            jitter_write(host, f"AT+QSSLRECV=0,{n}\r".encode(), rnd)
            back += rig.recv_answer(n)
        assert bytes(back) == bytes(sent)
        jitter_write(host, b"AT+QSSLRECV=0,1500\r", rnd)
        assert rig.recv_answer() == b""
        jitter_write(host, b"AT+QSSLCLOSE=0\r", rnd)
        assert SSL_URC.sub(b"", host.read_until(OK)) == OK
        assert host.at("AT") == OK


def test_ml302_jittery_bytewise_session_read_in_odd_chunks(ml):
    rnd = random.Random(1103)
    ml.away()
    host = ml.back(OddHost)
    srv = ml.server(mode="echo")
    jitter_write(host, b'AT+QSSLOPEN=1,0,"www.iottest.work",443,0\r', rnd)
    assert host.read_until(OK) == OK
    ml.opened(1)
    conn = conn_of(srv)
    sent = bytearray()
    for i in range(3):
        data = payload(rnd.randint(1, 1400), 1103 + i).replace(CTRL_Z, b"z").replace(b"\x1b", b"e")
        jitter_write(host, b"AT+QSSLSEND=1\r", rnd)
        assert ML_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
        jitter_write(host, data + CTRL_Z, rnd, 0.0005)
        assert ML_URC.sub(b"", host.read_until(SEND_OK, 20)) == SEND_OK
        sent += data
    assert wait_received(conn, len(sent)) == bytes(sent)
    back = bytearray()
    deadline = time.monotonic() + 20
    while len(back) < len(sent):
        assert time.monotonic() < deadline
        n = rnd.choice((1, 3, 7, 1500))
        jitter_write(host, f"AT+QSSLRECV=1,1,{n}\r".encode(), rnd)
        back += ml.recv_answer(n)
        ml.advance(0.01)
    assert bytes(back) == bytes(sent)
    assert host.at("AT") == OK


# == profile adapters for the pipelines and floods ================================================
class Ec:
    urc = SSL_URC

    def __init__(self, rig: Rig) -> None:
        self.r = rig
        self.server = rig.ssl_server(mode="echo")
        self.server.__enter__()
        rig.ssl_open(0)
        self.conn = conn_of(self.server)
        self.queries = ['AT+QSSLSTATE=0', 'AT+QSSLCFG="sslversion",1', 'AT+QSSLCFG="ciphersuite",1',
                        'AT+QSSLCFG="seclevel",1', 'AT+QSSLCFG="negotiatetime",1', "AT",
                        'AT+QSSLCFG="sslversion",1;+QSSLSTATE=0', 'AT+QSSLCFG="nosuch",1', "ATI"]

    def send_line(self, data: bytes, fixed: bool) -> bytes:
        return f"AT+QSSLSEND=0,{len(data)}\r".encode() + data if fixed else b"AT+QSSLSEND=0\r" + data + CTRL_Z

    def send_answer(self, fixed: bool) -> bytes:
        return b"\r\n> " + SEND_OK

    def read_back(self, want: int) -> bytes:
        return ec_recv_all(self.r, 0, want)

    def close(self) -> None:
        self.server.__exit__(None, None, None)


class Ml:
    urc = ML_URC

    def __init__(self, rig: MlRig) -> None:
        self.r = rig
        self.server = rig.server(mode="echo")
        rig.open(0)
        self.conn = conn_of(self.server)
        self.queries = ["AT+QSSLSTATE", 'AT+QSSLCFG="sslversion",0', 'AT+QSSLCFG="ciphersuite",0',
                        'AT+QSSLCFG="seclevel",0', 'AT+QSSLCFG="ignorertctime",0', "AT",
                        'AT+QSSLCFG="sslversion",0;+QSSLSTATE', 'AT+QSSLCFG="nosuch",0', "ATI"]

    def send_line(self, data: bytes, fixed: bool) -> bytes:
        if fixed:                           # the ML302 has no fixed-length form: ERROR, no prompt
            return f"AT+QSSLSEND=0,{len(data)}\r".encode()
        return b"AT+QSSLSEND=0\r" + data + CTRL_Z

    def send_answer(self, fixed: bool) -> bytes:
        return ERROR if fixed else b"\r\n> " + SEND_OK

    def read_back(self, want: int) -> bytes:
        return ml_recv_all(self.r, 0, want)

    def close(self) -> None:
        pass


@pytest.fixture(params=["ec2x", "ml302"])
def side(request, emulator, open_modem, strict_log):
    if request.param == "ec2x":
        r = Rig(emulator, open_modem)
        s = Ec(r)
    else:
        r = MlRig(emulator, open_modem)
        s = Ml(r)
    s.name = request.param
    yield s
    s.close()
    r.close_all()


def safe_data(rnd: random.Random, n: int) -> bytes:
    """n random bytes with no Ctrl+Z / ESC, not starting with LF (an LF right behind a prompt's
    line may be that line's ending: docs/behaviour.md's table)."""
    data = rnd.randbytes(n).replace(CTRL_Z, b"z").replace(b"\x1b", b"e")
    return b"D" + data[1:]


def read_answers(host: Host, urc: re.Pattern, want: int, timeout: float = 20) -> bytes:
    """Read until `want` bytes of answers (URCs taken out) came, then 0.3 s of quiet."""
    deadline = time.monotonic() + timeout
    while len(urc.sub(b"", bytes(host.pending))) < want:
        assert time.monotonic() < deadline, (want, bytes(host.pending)[-300:])
        host._fill()
    rest = host.quiet_for(0.3)
    return urc.sub(b"", rest)


# == 50 mixed commands in one write ==============================================================
@pytest.mark.parametrize("seed,count", [(1111, 50), (1112, 50), (1113, 600)])
def test_fifty_mixed_commands_pipelined_in_one_write_answer_in_order(side, seed, count):
    rnd = random.Random(seed)
    r = side.r
    single = {q: side.urc.sub(b"", r.host.at(q)) for q in side.queries}
    for q, a in single.items():
        assert a.endswith(OK) or a.endswith(ERROR), (q, a)
    assert single[side.queries[-2]] == ERROR
    blob, expected, sent = bytearray(), bytearray(), bytearray()
    for i in range(count):
        if rnd.random() < 0.3:
            fixed = rnd.random() < 0.5
            data = safe_data(rnd, rnd.randint(1, 300))
            blob += side.send_line(data, fixed)
            expected += side.send_answer(fixed)
            if side.name == "ec2x" or not fixed:
                sent += data
        else:
            q = rnd.choice(side.queries)
            blob += q.encode() + b"\r"
            expected += single[q]
    r.hosts.remove(r.host)
    r.host.close()
    wait_for(lambda: not r.port.port.attached, 10, "the hang-up")
    r.host = OddHost(r.port.path)
    r.hosts.append(r.host)
    r.emulator.run(r.port.port.look_for_host)
    r.host.write(bytes(blob))
    read_answers(r.host, side.urc, len(expected))
    got = side.urc.sub(b"", bytes(r.host.transcript))
    assert got == bytes(expected)
    assert wait_received(side.conn, len(sent)) == bytes(sent)
    assert side.read_back(len(sent)) == bytes(sent)
    assert r.host.at("AT") == OK


# == garbage between valid commands =============================================================
ESC_SEQS = [b"\x1b[2J", b"\x1b[H", b"\x1b[?25l", b"\x1bOA", b"\x1b]0;title\x07", b"\x1b[6n", b"\x1bc",
            b"\x1b[38;5;196m"]


def garbage(rnd: random.Random, n: int, allow_cr: bool = True) -> bytes:
    """Bytes that never start a command line: no 'A'/'a', no LF (a CR LF outside a line)."""
    pieces = [b"\x00" * rnd.randint(1, 600), b"\xff" * rnd.randint(1, 600), *ESC_SEQS,
              b"\x08\x08\x7f", b"+++", b"\x1a", b"/", b"\xc1\xd4\r" if allow_cr else b"\xc1\xd4"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(pieces) if rnd.random() < 0.5 else rnd.randbytes(rnd.randint(1, 50))
    bad = b"aA\n" + (b"" if allow_cr else b"\r\x08")     # (inside a line BS would edit it)
    return bytes(b for b in out if b not in bad)


def test_garbage_floods_between_valid_commands_leave_exact_answers_and_unread_data(side):
    rnd = random.Random(1121)
    r = side.r
    st_q = side.queries[0]
    state = side.urc.sub(b"", r.host.at(st_q))
    data = safe_data(rnd, 1000)
    blob = side.send_line(data, False)
    r.host.write(blob)
    assert side.urc.sub(b"", r.host.read_until(SEND_OK)) == b"\r\n> " + SEND_OK
    wait_received(side.conn, len(data))
    for i in range(6):
        r.host.write(garbage(rnd, 8000))
        # a line far past serial.line_max, with garbage inside: one ERROR
        r.host.write(b"AT" + garbage(rnd, 5000, allow_cr=False) + b"\r")
        assert side.urc.sub(b"", r.host.read_until(ERROR)) == ERROR
        r.host.write(garbage(rnd, 3000))
        r.host.write(st_q.encode() + b"\r")
        got = side.urc.sub(b"", r.host.read_until(OK))
        assert got == state, (i, got)
    assert side.urc.sub(b"", r.host.quiet_for(0.2)) == b""
    assert side.read_back(len(data)) == data
    assert r.host.at("AT") == OK


def test_garbage_under_ate1_comes_back_as_received_then_exact_answers(side):
    rnd = random.Random(1122)
    r = side.r
    st_q = side.queries[0]
    state = side.urc.sub(b"", r.host.at(st_q))
    assert r.host.at("ATE1") == OK
    for i in range(4):
        junk = garbage(rnd, 3000)
        r.host.write(junk + st_q.encode() + b"\r")
        got = side.urc.sub(b"", r.host.read_until(state))
        assert got == junk + st_q.encode() + b"\r" + state, (i, len(got), len(junk))
    assert r.host.at("ATE0") == b"ATE0\r" + OK


@pytest.mark.parametrize("extra", [0, 1])
def test_a_line_whose_body_is_line_max_runs_and_one_byte_more_is_error(side, extra):
    """serial.line_max (2048) counts the body behind the "AT" prefix (V.250's "command line
    body"; emulator/at/lexer.py): a 2050-byte line with trailing spaces still runs."""
    r = side.r
    q = side.queries[1]
    single = side.urc.sub(b"", r.host.at(q))
    line = q.encode() + b" " * (2050 - len(q) + extra)
    assert len(line) - 2 == 2048 + extra
    r.host.write(line + b"\r")
    got = side.urc.sub(b"", r.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
    assert got == (single if extra == 0 else ERROR)
    assert r.host.at("AT") == OK


# == BREAK, DTR, HUPCL, B0, baud, framing, canonical mode at awkward points =====================
from tests.e2e.test_adversarial_host_termios import (_baud, _break_noop_on_pty, _cs7_parity,  # noqa: E402
                                                      _modem_lines_noop_on_pty)


def _b0(fd):
    """Baud 0: "hang up" on a real UART's termios; a pty has no lines to drop."""
    a = termios.tcgetattr(fd)
    a[2] = (a[2] & ~termios.CBAUD) | termios.B0
    a[4] = a[5] = termios.B0
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _hupcl_off(fd):
    a = termios.tcgetattr(fd)
    a[2] &= ~termios.HUPCL
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _cooked(fd):
    """Canonical mode with ICRNL, IXON, ISIG (no echo, no output processing)."""
    a = termios.tcgetattr(fd)
    a[0] = termios.ICRNL | termios.IXON | termios.BRKINT
    a[1] = 0
    a[3] = termios.ICANON | termios.ISIG | termios.IEXTEN
    termios.tcsetattr(fd, termios.TCSANOW, a)


OPS = [_baud, _cs7_parity, _modem_lines_noop_on_pty, _break_noop_on_pty, _b0, _hupcl_off]


def tty_op(host: Host, op) -> list:
    fd = host.ser.fd
    saved = termios.tcgetattr(fd)
    op(fd)
    return saved


def tty_restore(host: Host, saved: list) -> None:
    termios.tcsetattr(host.ser.fd, termios.TCSANOW, saved)


@pytest.mark.parametrize("op", OPS + [_cooked], ids=lambda f: f.__name__.strip("_"))
def test_tty_ops_while_online_then_the_host_leaves_mid_stream(rig, op):
    """Online (transparent) with half the data written, the host's tty is changed, the other
    half written, the tty left changed (HUPCL off, B0...) and the port closed: the server got
    every byte once, the next program meets command state with the socket parked."""
    with rig.ssl_server(mode="sink") as server:
        rig.ssl_open(0, mode=2)
        conn = conn_of(server)
        data = payload(6000, 1131)
        rig.host.write(data[:2500])
        tty_op(rig.host, op)
        rig.host.write(data[2500:])
        assert wait_received(conn, len(data)) == data
        settle_written(rig)
        host = rig.reopen()
        assert host.at("AT") == OK
        assert state_re(0, 2, 2).fullmatch(rig.ssl_state(0)), rig.ssl_state(0)
        assert host.quiet_for(0.2) == b""
        assert bytes(conn.received) == data


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__.strip("_"))
def test_tty_ops_with_a_qsslrecv_answer_half_read(side, op):
    r = side.r
    data = b"D" + payload(1400, 1132).replace(CTRL_Z, b"z").replace(b"\x1b", b"e")[1:]
    r.host.write(b"AT+QSSLSEND=0\r" + data + CTRL_Z)
    assert side.urc.sub(b"", r.host.read_until(SEND_OK)) == b"\r\n> " + SEND_OK
    wait_received(side.conn, len(data))
    wait_for(lambda: any(s["id"] == 0 and s["unread"] == len(data)
                         for s in r.emulator.control("state")["sockets"]), 10, "echo back")
    r.host.write(b"AT+QSSLRECV=0,1500\r" if side.name == "ec2x" else b"AT+QSSLRECV=1,0,1500\r")
    head = r.host.read_until(re.compile(rb"\+QSSLRECV: [^\r]*\r\n"))
    assert side.urc.sub(b"", head).endswith(b"1400\r\n"), head
    first = r.host.read_exactly(300)
    saved = tty_op(r.host, op)
    rest = r.host.read_exactly(1100 + 8)
    tty_restore(r.host, saved)
    assert first + rest == data + b"\r\n\r\nOK\r\n"
    assert side.read_back(0) == b""
    assert r.host.at("AT") == OK


@pytest.mark.parametrize("op", OPS, ids=lambda f: f.__name__.strip("_"))
def test_tty_ops_between_open_ok_and_its_urc(rig, op):
    with rig.ssl_server(mode="echo") as server:
        assert rig.emulator.control("net", latency_ms=150)["ok"]
        assert rig.host.at(f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0') == OK
        saved = tty_op(rig.host, op)
        got = rig.host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 20)
        tty_restore(rig.host, saved)
        assert got == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert rig.emulator.control("net", latency_ms=0)["ok"]
        conn = conn_of(server)
        data = payload(500, 1133)
        ec_send(rig, 0, data)
        assert wait_received(conn, len(data)) == data
        assert ec_recv_all(rig, 0, len(data)) == data


# == A/ in odd places ===========================================================================
def test_a_slash_first_thing_after_a_hangup_that_cut_a_line_repeats_the_last_whole_line(side):
    r = side.r
    chain = side.queries[6]                              # a `;` chain: query;state
    answer = side.urc.sub(b"", r.host.at(chain))
    assert answer.endswith(OK) and answer.count(b"\r\n") > 4
    r.host.write(b"A/")
    assert side.urc.sub(b"", r.host.read_until(OK)) == answer
    r.host.write(side.queries[1][:9].encode())           # half a line, then the host leaves
    settle_written(r)
    if side.name == "ec2x":
        host = r.reopen()
    else:
        r.away()
        host = r.back()
    host.write(b"A/")
    got = side.urc.sub(b"", host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
    assert got == answer
    assert host.at("AT") == OK


def test_a_slash_in_a_prompt_is_data_and_behind_pipelined_lines_repeats_each_in_turn(side):
    r = side.r
    st = side.queries[0]
    state = side.urc.sub(b"", r.host.at(st))
    cfg = side.queries[1]
    cfg_answer = side.urc.sub(b"", r.host.at(cfg))
    # A/ inside a Ctrl+Z send: data (also the one right behind the line's CR)
    data = b"A/A/xA/\r\nA/"
    r.host.write(b"AT+QSSLSEND=0\rA/" + data + CTRL_Z)
    assert side.urc.sub(b"", r.host.read_until(SEND_OK)) == b"\r\n> " + SEND_OK
    assert wait_received(side.conn, 2 + len(data)) == b"A/" + data
    # pipelined: a line, A/ twice, a lower case a/, another line, A/ -- all in one write
    r.host.write(st.encode() + b"\rA/A/a/" + cfg.encode() + b"\rA/")
    got = read_answers(r.host, side.urc, 4 * len(state) + 2 * len(cfg_answer))
    assert got == 4 * state + 2 * cfg_answer
    # "A" and "/" in writes 0.2 s apart still repeat
    r.host.write(b"A")
    assert side.urc.sub(b"", r.host.quiet_for(0.2)) == b""
    r.host.write(b"/")
    assert side.urc.sub(b"", r.host.read_until(OK)) == cfg_answer
    assert side.read_back(2 + len(data)) == b"A/" + data


def test_a_slash_after_a_line_past_line_max(side):
    r = side.r
    q = side.queries[1]
    answer = side.urc.sub(b"", r.host.at(q))
    r.host.write(b"AT" + b"X" * 3000 + b"\r")
    assert side.urc.sub(b"", r.host.read_until(ERROR)) == ERROR
    r.host.write(b"A/")
    got = side.urc.sub(b"", r.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
    assert got == answer


# == a pipeline left half read ==================================================================
@pytest.mark.parametrize("seed", [1141, 1142, 1143])
def test_host_leaves_inside_the_answers_to_a_fifty_line_pipeline(side, seed):
    """The host writes 50 mixed lines at once, reads a random part of the answers in odd chunks
    and leaves.  The sends it saw SEND OK for reached the server; the server got whole sends,
    in order (a prefix of the pipeline's); the next program meets no stale answer and reads
    every echoed byte once."""
    rnd = random.Random(seed)
    r = side.r
    single = {q: side.urc.sub(b"", r.host.at(q)) for q in side.queries}
    r.hosts.remove(r.host)
    r.host.close()
    wait_for(lambda: not r.port.port.attached, 10, "the hang-up")
    r.host = OddHost(r.port.path)
    r.hosts.append(r.host)
    r.emulator.run(r.port.port.look_for_host)
    blob, expected, sends = bytearray(), bytearray(), []
    for i in range(50):
        if rnd.random() < 0.35:
            data = safe_data(rnd, rnd.randint(1, 400))
            blob += side.send_line(data, False)
            expected += side.send_answer(False)
            sends.append(data)
        else:
            q = rnd.choice(side.queries)
            blob += q.encode() + b"\r"
            expected += single[q]
    r.host.write(bytes(blob))
    cut = rnd.randint(0, len(expected) - 1)
    while len(side.urc.sub(b"", bytes(r.host.transcript))) < cut:
        r.host._fill()
    seen = side.urc.sub(b"", bytes(r.host.transcript))
    assert expected.startswith(seen[:cut])
    oks = seen.count(SEND_OK)
    settle_written(r)
    if side.name == "ec2x":
        host = r.reopen()
    else:
        r.away()
        host = r.back()
    assert host.at("AT") == OK
    time.sleep(0.3)
    got = bytes(side.conn.received)
    k = next((k for k in range(len(sends) + 1) if b"".join(sends[:k]) == got), None)
    assert k is not None, f"the server holds no whole prefix of the sends ({len(got)} bytes)"
    assert k >= oks
    assert side.urc.sub(b"", host.quiet_for(0.2)) == b""
    assert side.read_back(len(got)) == got
    assert host.at(side.queries[0]) == single[side.queries[0]]


# == A/ after a hang-up in an upload's data phase ================================================
def test_ml302_a_slash_after_a_hangup_mid_secwrite_opens_the_prompt_again(ml):
    from tests.e2e.test_adversarial_ml302_chaos import checksum
    blob = bytes(range(256)).replace(CTRL_Z, b"").replace(b"\x1b", b"") * 2 + b"\x01\x02\x03"
    assert ml.host.at("AT+QSECDEL=2") == OK
    ml.host.write(b"AT+QSECWRITE=2\r")
    assert ml.host.read_until(b"> ") == b"\r\n> "
    ml.host.write(blob[:200])
    settle_written(ml)
    ml.away()
    host = ml.back(OddHost)
    assert host.at("AT+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"     # nothing stored
    host.write(b"A/")                                                 # AT+QSECREAD=2 again
    assert host.read_until(re.compile(rb"\r\n\+CME ERROR: 22\r\n")) == b"\r\n+CME ERROR: 22\r\n"
    host.write(b"AT+QSECWRITE=2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"\x1b")                                               # ESC: cancelled, OK
    assert host.read_until(OK) == OK
    host.write(b"A/")                                                 # the write line again
    assert host.read_until(b"> ") == b"\r\n> "
    jitter_write(host, blob + CTRL_Z, random.Random(1151), 0.0003)
    assert host.read_until(OK, 20) == f"\r\n+QSECWRITE: {len(blob)},{checksum(blob)}\r\n\r\nOK\r\n".encode()
    assert host.at("AT+QSECREAD=2") == f"\r\n+QSECREAD: 1,{checksum(blob)}\r\n\r\nOK\r\n".encode()


def test_ec2x_a_slash_after_a_hangup_mid_qfupl_uploads_again(rig):
    from tests.e2e.test_adversarial_chaos_host_6 import xor_hex
    blob = bytes(range(256)) * 3 + b"\xab\xcd\x0e"
    rig.host.write(f'AT+QFUPL="UFS:c11.pem",{len(blob)}\r')
    assert rig.host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    rig.host.write(blob[:333])
    settle_written(rig)
    host = rig.reopen()
    assert host.at('AT+QFLST="UFS:c11.pem"') == b"\r\n+CME ERROR: 417\r\n"
    host.write(b"A/")                                      # repeats AT+QFLST: still 417
    assert host.read_until(re.compile(rb"\r\n\+CME ERROR: \d+\r\n")) == b"\r\n+CME ERROR: 417\r\n"
    host.write(f'AT+QFUPL="UFS:c11.pem",{len(blob)}\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(blob)
    done = f"\r\n+QFUPL: {len(blob)},{xor_hex(blob)}\r\n\r\nOK\r\n".encode()
    assert host.read_until(OK) == done
    assert host.at('AT+QFDEL="UFS:c11.pem"') == OK
    host.write(b"A/")                                      # repeats the delete: 405 now
    assert host.read_until(re.compile(rb"\r\n\+CME ERROR: \d+\r\n")) == b"\r\n+CME ERROR: 405\r\n"
    host.write(f'AT+QFUPL="UFS:c11.pem",{len(blob)}\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    jitter_write(host, blob, random.Random(1152), 0.0003)
    assert host.read_until(OK, 20) == done
    host.write(b'AT+QFDWL="UFS:c11.pem"\r')
    got = host.read_until(OK, 20)
    assert got == b"\r\nCONNECT\r\n" + blob + f"\r\n+QFDWL: {len(blob)},{xor_hex(blob)}\r\n\r\nOK\r\n".encode()


# == transparent mode, one jittery byte a write, read in odd chunks ==============================
def test_ec2x_transparent_jittery_bytewise_writer_odd_reader_echo_exact(rig):
    rnd = random.Random(1161)
    rig.host.close()
    wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
    rig.host = OddHost(rig.port.path)
    rig.hosts.append(rig.host)
    rig.emulator.run(rig.port.port.look_for_host)
    with rig.ssl_server(mode="echo") as server:
        rig.ssl_open(0, mode=2)
        conn = conn_of(server)
        data = payload(2500, 1161)
        jitter_write(rig.host, data, rnd, 0.0005)
        assert wait_received(conn, len(data)) == data
        back = rig.host.read_exactly(len(data), 20)
        assert back == data
        time.sleep(1.1)
        rig.host.write(b"+++")
        assert rig.host.read_until(OK, 5) == OK
        assert rig.host.quiet_for(0.1) == b""
        assert rig.host.at("AT") == OK
        assert bytes(conn.received) == data


# == DTR drops (AT&D1 / AT&D2) where nothing is online ==========================================
@pytest.mark.parametrize("andd", [1, 2])
def test_dtr_drop_between_open_ok_and_its_urc_and_mid_recv_answer_changes_nothing(rig, andd):
    assert rig.host.at(f"AT&D{andd}") == OK
    with rig.ssl_server(mode="echo") as server:
        assert rig.emulator.control("net", latency_ms=150)["ok"]
        assert rig.host.at(f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0') == OK
        assert rig.emulator.control("dtr", level=0)["ok"]
        assert rig.emulator.control("dtr", level=1)["ok"]
        got = rig.host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 20)
        assert got == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert rig.emulator.control("net", latency_ms=0)["ok"]
        conn = conn_of(server)
        data = payload(1400, 1171)
        ec_send(rig, 0, data)
        wait_received(conn, len(data))
        wait_for(lambda: any(s["id"] == 0 and s["unread"] == len(data)
                             for s in rig.emulator.control("state")["sockets"]), 10, "echo back")
        rig.host.write("AT+QSSLRECV=0,1500\r")
        head = rig.host.read_until(re.compile(rb"\+QSSLRECV: \d+\r\n"))
        assert SSL_URC.sub(b"", head) == b"\r\n+QSSLRECV: 1400\r\n"
        first = rig.host.read_exactly(100)
        assert rig.emulator.control("dtr", level=0)["ok"]
        rest = rig.host.read_exactly(1300 + 8)
        assert first + rest == data + b"\r\n\r\nOK\r\n"
        assert rig.host.quiet_for(0.2) == b""
        assert rig.emulator.control("dtr", level=1)["ok"]
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))
        ec_send(rig, 0, data[:10])
        assert wait_received(conn, len(data) + 10) == data + data[:10]


# == a session cut at seeded bytes, the next program checks what was completed ===================
def _ec_script(rnd: random.Random, blob: bytes):
    """(bytes, kind, payload) items of one EC2x session written in one go."""
    d1, d2 = safe_data(rnd, 200), safe_data(rnd, 300)
    return [
        (f'AT+QFUPL="UFS:cut.pem",{len(blob)}\r'.encode() + blob, "file", blob),
        (b"AT+QSSLSTATE=0\r", "q", None),
        (f"AT+QSSLSEND=0,{len(d1)}\r".encode() + d1, "send", d1),
        (b'AT+QSSLCFG="sslversion",1\r', "q", None),
        (b"AT+QSSLSEND=0\r" + d2 + CTRL_Z, "send", d2),
        (b"A/", "q", None),
    ]


def _ml_script(rnd: random.Random, blob: bytes):
    d1, d2 = safe_data(rnd, 200), safe_data(rnd, 300)
    return [
        (b"AT+QSECWRITE=2\r" + blob + CTRL_Z, "file", blob),
        (b"AT+QSSLSTATE\r", "q", None),
        (b"AT+QSSLSEND=0\r" + d1 + CTRL_Z, "send", d1),
        (b'AT+QSSLCFG="sslversion",0\r', "q", None),
        (b"AT+QSSLSEND=0\r" + d2 + CTRL_Z, "send", d2),
        (b"A/", "q", None),
    ]


@pytest.mark.parametrize("seed", [1181, 1182])
def test_session_cut_at_seeded_bytes_next_program_finds_exactly_what_was_completed(side, seed):
    from tests.e2e.test_adversarial_ml302_chaos import checksum
    rnd = random.Random(seed)
    r = side.r
    blob = bytes(b for b in rnd.randbytes(400) if b not in b"\x1a\x1b") + b"\x01\x02\x03"
    blob = b"B" + blob
    delivered = bytearray()
    for round_ in range(6):
        script = (_ec_script if side.name == "ec2x" else _ml_script)(rnd, blob)
        stream = b"".join(item[0] for item in script)
        cut = rnd.randint(1, len(stream) - 1)
        if side.name == "ec2x":
            assert r.host.at('AT+QFDEL="UFS:cut.pem"') in (OK, b"\r\n+CME ERROR: 405\r\n")
        else:
            assert r.host.at("AT+QSECDEL=2") == OK
        r.host.write(stream[:cut])
        settle_written(r)
        done_file, pos = False, 0
        for raw, kind, data in script:
            pos += len(raw)
            if pos <= cut:
                if kind == "send":
                    delivered += data
                elif kind == "file":
                    done_file = True
        if side.name == "ec2x":
            host = r.reopen()
        else:
            r.away()
            host = r.back(OddHost if round_ % 2 else Host)
        assert side.urc.sub(b"", host.at("AT")) == OK, (round_, cut)
        time.sleep(0.2)
        assert bytes(side.conn.received) == bytes(delivered), (round_, cut)
        if side.name == "ec2x":
            got = host.at('AT+QFLST="UFS:cut.pem"')
            want = (f'\r\n+QFLST: "cut.pem",{len(blob)}\r\n\r\nOK\r\n'.encode() if done_file
                    else b"\r\n+CME ERROR: 417\r\n")
        else:
            got = host.at("AT+QSECREAD=2")
            want = (f"\r\n+QSECREAD: 1,{checksum(blob)}\r\n\r\nOK\r\n".encode() if done_file
                    else b"\r\n+CME ERROR: 22\r\n")
        assert side.urc.sub(b"", got) == want, (round_, cut, got)
        assert side.urc.sub(b"", host.quiet_for(0.1)) == b""
    assert side.read_back(len(delivered)) == bytes(delivered)


# == the pipeline again, under ATE1 ==============================================================
@pytest.mark.parametrize("seed", [1191, 1192])
def test_fifty_mixed_commands_pipelined_under_ate1_echo_and_answers_in_order(side, seed):
    rnd = random.Random(seed)
    r = side.r
    single = {q: side.urc.sub(b"", r.host.at(q)) for q in side.queries}
    assert r.host.at("ATE1") == OK
    blob, expected, sent = bytearray(), bytearray(), bytearray()
    last = None                           # the last line's answer if a query (A/ repeats it)
    for i in range(50):
        if rnd.random() < 0.3:
            data = safe_data(rnd, rnd.randint(1, 200))
            blob += side.send_line(data, False)
            expected += b"AT+QSSLSEND=0\r" + b"\r\n> " + data + SEND_OK
            sent += data
            last = None
        elif last is not None and rnd.random() < 0.3:
            blob += b"A/"
            expected += b"A/" + last
        else:
            q = rnd.choice(side.queries)
            blob += q.encode() + b"\r"
            expected += q.encode() + b"\r" + single[q]
            last = single[q]
    r.host.transcript.clear()
    r.host.pending.clear()
    r.host.write(bytes(blob))
    read_answers(r.host, side.urc, len(expected))
    got = side.urc.sub(b"", bytes(r.host.transcript))
    if got != bytes(expected):
        i = next((i for i in range(min(len(got), len(expected))) if got[i] != expected[i]), None)
        raise AssertionError(f"first difference at {i}: got {got[i-40:i+60]!r} want {bytes(expected[i-40:i+60])!r}")
    assert r.host.at("ATE0") == b"ATE0\r" + OK
    assert wait_received(side.conn, len(sent)) == bytes(sent)
    assert side.read_back(len(sent)) == bytes(sent)


# == more of the gap between AT+QSSLOPEN's OK and its URC ========================================
def test_ec2x_open_failing_while_nobody_holds_the_port_frees_the_id_silently(rig):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()                                           # nothing listens there: refused
    rig.emulator.router.add_map("dead.example", 4449, "127.0.0.1", dead)
    assert rig.emulator.control("net", latency_ms=200)["ok"]
    assert rig.host.at('AT+QSSLOPEN=1,1,0,"dead.example",4449,0') == OK
    rig.host.close()
    wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
    wait_for(lambda: not rig.emulator.control("state")["sockets"], 10, "the open to fail")
    assert rig.emulator.control("net", latency_ms=0)["ok"]
    host = Host(rig.port.path)
    rig.hosts.append(host)
    rig.host = host
    rig.emulator.run(rig.port.port.look_for_host)
    assert host.quiet_for(0.3) == b""                  # the failure's URC went to nobody
    assert host.at("AT+QSSLSTATE=0") == OK
    with rig.ssl_server(mode="echo") as server:
        rig.ssl_open(0)
        conn = conn_of(server)
        ec_send(rig, 0, b"after the gap")
        assert wait_received(conn, 13) == b"after the gap"
        assert ec_recv_all(rig, 0, 13) == b"after the gap"


def test_ec2x_lines_pipelined_into_the_handshake_then_the_host_leaves(rig):
    """Behind AT+QSSLOPEN's OK, in the same write: the state (1: opening), a read, sends and a
    second open of the id (ERROR, 563), a context write; the host then leaves before the URC.
    The next program finds the socket connected, nothing stale, nothing sent."""
    with rig.ssl_server(mode="echo") as server:
        assert rig.emulator.control("net", latency_ms=300)["ok"]
        rig.host.write(f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0\rAT+QSSLSTATE=0\r'
                       f'AT+QSSLRECV=0,10\rAT+QSSLSEND=0,5\rhelloAT+QSSLSEND=0\rworld\x1a'
                       f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0\rAT+QIGETERROR\r'
                       f'AT+QSSLCFG="sslversion",1,3\r')
        got = rig.host.read_until(b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
                                  b"\r\nOK\r\n", 5)
        assert got == (OK + b'\r\n+QSSLSTATE: 0,"SSLClient","%s",%d,0,1,1,0,0,"usbmodem",1\r\n'
                       % (SSL_HOST.encode(), SSL_PORT) + OK + ERROR + ERROR + ERROR + ERROR
                       + b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK + OK), got
        settle_written(rig)
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        conn = conn_of(server)
        wait_connected(rig.emulator, 0)
        assert rig.emulator.control("net", latency_ms=0)["ok"]
        host = Host(rig.port.path)
        rig.hosts.append(host)
        rig.host = host
        rig.emulator.run(rig.port.port.look_for_host)
        assert host.quiet_for(0.3) == b""
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0)), rig.ssl_state(0)
        assert bytes(conn.received) == b""
        ec_send(rig, 0, b"late")
        assert wait_received(conn, 4) == b"late"
        assert ec_recv_all(rig, 0, 4) == b"late"


def test_ml302_lines_pipelined_into_the_handshake_second_open_is_minus_2_and_close_cancels(ml):
    srv = ml.server(mode="echo")
    assert ml.emulator.control("net", latency_ms=300)["ok"]
    ml.host.write('AT+QSSLOPEN=0,0,"www.iottest.work",443,0\rAT+QSSLRECV=1,0,10\rAT+QSSLSEND=0\r'
                  'AT+QSSLOPEN=0,0,"www.iottest.work",443,0\rAT+QSSLSTATE\rAT+QSSLCLOSE=0\r')
    got = ml.host.read_until(b"0,CLOSE OK\r\n", 5)
    state = ('\r\n+QSSLSTATE: "IP PROCESSING"\r\n+QSSLSTATE: 0,"TCP","",443,"CONNECTING",1\r\n'
             + "".join(f'+QSSLSTATE: {i},"TCP","",0,"INITIAL",1\r\n' for i in range(1, 6))
             + "\r\nOK\r\n").encode()
    assert got == OK + ERROR + ERROR + OK + b"\r\n+QSSLOPEN: 0,-2\r\n" + state + OK \
        + b"\r\n0,CLOSE OK\r\n", got
    for _ in range(20):
        ml.advance(0.1)
    assert ml.host.quiet_for(0.3) == b""                # no late +QSSLOPEN for the closed id
    assert ml.emulator.control("net", latency_ms=0)["ok"]
    ml.open(0)
    conn = conn_of(srv, -1)
    ml.host.write(b"AT+QSSLSEND=0\rok\x1a")
    assert ML_URC.sub(b"", ml.host.read_until(SEND_OK)) == b"\r\n> " + SEND_OK
    assert wait_received(conn, 2) == b"ok"
    assert ml_recv_all(ml, 0, 2) == b"ok"


# == a CR LF host typing one byte at a time, its LF sometimes late ==============================
def crlf_jitter(host: Host, line: bytes, rnd: random.Random) -> None:
    """`line` + CR LF one byte a write with tiny pauses; the LF sometimes 60-120 ms late."""
    jitter_write(host, line + b"\r", rnd)
    if rnd.random() < 0.4:
        time.sleep(0.06 + rnd.random() * 0.06)
    host.write(b"\n")


@pytest.mark.parametrize("seed", [1201, 1202])
def test_crlf_bytewise_host_with_late_lfs_and_data_starting_with_lf(side, seed):
    rnd = random.Random(seed)
    r = side.r
    r.host.close()
    r.hosts.remove(r.host)
    wait_for(lambda: not r.port.port.attached, 10, "the hang-up")
    r.host = OddHost(r.port.path)
    r.hosts.append(r.host)
    r.emulator.run(r.port.port.look_for_host)
    host = r.host
    q = side.queries[1].encode()
    crlf_jitter(host, q, rnd)
    answer = side.urc.sub(b"", host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
    assert answer.endswith(OK)
    sent = bytearray()
    for i in range(6):
        data = rnd.choice([b"\n", b"\r\n", b"\nAT\r\n", b""]) + safe_data(rnd, rnd.randint(1, 300))
        if i == 0:
            data = b"x" + data
        crlf_jitter(host, b"AT+QSSLSEND=0", rnd)
        assert side.urc.sub(b"", host.read_until(b"> ")) == b"\r\n> ", i
        jitter_write(host, data + CTRL_Z, rnd, 0.0005)
        assert side.urc.sub(b"", host.read_until(SEND_OK, 20)) == SEND_OK, i
        sent += data
        crlf_jitter(host, q, rnd)
        assert side.urc.sub(b"", host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))) == answer, i
    blob = b"\n-----BEGIN-----\r\n" + bytes(b for b in rnd.randbytes(300) if b not in b"\x1a\x1b")
    if side.name == "ec2x":
        from tests.e2e.test_adversarial_chaos_host_6 import xor_hex
        crlf_jitter(host, f'AT+QFUPL="UFS:lf.pem",{len(blob)}'.encode(), rnd)
        assert side.urc.sub(b"", host.read_until(b"\r\nCONNECT\r\n")) == b"\r\nCONNECT\r\n"
        jitter_write(host, blob, rnd, 0.0003)
        assert side.urc.sub(b"", host.read_until(OK, 20)) == \
            f"\r\n+QFUPL: {len(blob)},{xor_hex(blob)}\r\n\r\nOK\r\n".encode()
    else:
        from tests.e2e.test_adversarial_ml302_chaos import checksum
        crlf_jitter(host, b"AT+QSECWRITE=2", rnd)
        assert side.urc.sub(b"", host.read_until(b"> ")) == b"\r\n> "
        jitter_write(host, blob + CTRL_Z, rnd, 0.0003)
        assert side.urc.sub(b"", host.read_until(OK, 20)) == \
            f"\r\n+QSECWRITE: {len(blob)},{checksum(blob)}\r\n\r\nOK\r\n".encode()
    assert wait_received(side.conn, len(sent)) == bytes(sent)
    assert side.read_back(len(sent)) == bytes(sent)


# == a flood while an answer is pending =========================================================
def test_flood_past_the_pending_input_bound_while_a_slow_answer_waits(rig):
    """1.5 MiB of garbage (no 'A') written while a slow AT+QSSLSTATE's answer waits: input
    waits up to 1 MiB, the rest is dropped (docs/behaviour.md); the answer comes once, whole,
    and the next line is answered exactly; the socket's unread data stay."""
    rnd = random.Random(1211)
    with rig.ssl_server(mode="echo") as server:
        rig.ssl_open(0)
        conn = conn_of(server)
        data = payload(1000, 1211)
        ec_send(rig, 0, data)
        wait_received(conn, len(data))
        state = SSL_URC.sub(b"", rig.ssl_state(0))
        assert rig.emulator.control("slow", command="+QSSLSTATE", ms=800)["ok"]
        rig.host.write("AT+QSSLSTATE=0\r")
        junk = garbage(rnd, 1_500_000)
        rig.host.ser.write_timeout = 20
        rig.host.write(junk)
        got = SSL_URC.sub(b"", rig.host.read_until(OK, 20))
        assert got == state
        assert any("input bytes dropped" in rec.getMessage() for rec in rig.caplog.records)
        assert rig.emulator.control("slow", command="+QSSLSTATE", ms=0)["ok"]
        assert SSL_URC.sub(b"", rig.host.at("AT+QSSLSTATE=0")) == state
        assert SSL_URC.sub(b"", rig.host.quiet_for(0.2)) == b""
        assert ec_recv_all(rig, 0, len(data)) == data
        assert rig.host.at("AT") == OK


# == a terminal program's arrow key at a data prompt ===========================================
@pytest.mark.parametrize("seq", [b"\x1b[A", b"\x1bOB", b"\x1b[1;5C"])
def test_escape_sequence_at_a_send_prompt_cancels_and_its_tail_is_dropped(side, seq):
    """ESC cancels a Ctrl+Z send (EC2x ERROR, ML302 OK -- docs/behaviour.md); the rest of an
    arrow key's escape sequence falls into command state, where it is no command: the next
    line is answered exactly, nothing reached the server, the prompt after works."""
    r = side.r
    q = side.queries[0]
    state = side.urc.sub(b"", r.host.at(q))
    r.host.write(b"AT+QSSLSEND=0\r")
    assert side.urc.sub(b"", r.host.read_until(b"> ")) == b"\r\n> "
    r.host.write(b"typed" + seq + b"more")
    cancel = ERROR if side.name == "ec2x" else OK
    assert side.urc.sub(b"", r.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))) == cancel
    assert side.urc.sub(b"", r.host.quiet_for(0.2)) == b""
    assert side.urc.sub(b"", r.host.at(q)) == state
    r.host.write(b"AT+QSSLSEND=0\r")
    assert side.urc.sub(b"", r.host.read_until(b"> ")) == b"\r\n> "
    r.host.write(b"real" + CTRL_Z)
    assert side.urc.sub(b"", r.host.read_until(SEND_OK)) == SEND_OK
    assert wait_received(side.conn, 4) == b"real"
    assert side.read_back(4) == b"real"


# == garbage, long lines, queries and A/ while direct push streams ===============================
PUSH_HEAD = re.compile(rb'\r\n\+QSSLURC: "recv",0,(\d+)\r\n')


def test_chaos_lines_while_direct_push_streams_to_an_odd_reader(rig):
    """An EC2x socket in direct push (access mode 1) while the server streams 48 KB in small
    pieces; the host meanwhile writes garbage floods, lines past line_max, queries, `;` chains
    and A/, reading the port in odd chunks.  The transcript must be exactly: whole push URCs
    (header, data, CR LF) and the expected answers in order, nothing else; the pushed data are
    the server's stream, once, in order."""
    rnd = random.Random(1221)
    stream = payload(48_000, 1221)

    def handler(conn) -> None:
        i = 0
        while i < len(stream):
            k = rnd.randint(1, 1500)
            conn.sendall(stream[i:i + k])
            i += k
            time.sleep(0.01)
        conn.recv(65536, timeout=15)

    from emulator.testing.peers import TlsServer
    server = TlsServer(session_cache=False, tickets=False, handler=handler)
    with server:
        rig.emulator.router.add_map(SSL_HOST, SSL_PORT, "127.0.0.1", server.port)
        queries = ['AT+QSSLCFG="sslversion",1', 'AT+QSSLCFG="seclevel",1;+QSSLCFG="negotiatetime",1',
                   "AT", "ATI"]
        single = {q: rig.host.at(q) for q in queries}
        rig.host.close()
        rig.hosts.remove(rig.host)
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        host = rig.host = OddHost(rig.port.path)
        rig.hosts.append(host)
        rig.emulator.run(rig.port.port.look_for_host)
        host.write(f'AT+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},1\r')
        assert host.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == OK + b"\r\n+QSSLOPEN: 0,0\r\n"
        host.transcript = bytearray(host.pending)          # pushes may follow at once
        expected = []
        last = None
        crnd = random.Random(1222)
        for step in range(40):
            what = crnd.choice(("junk", "long", "q", "q", "slash"))
            if what == "junk":
                host.write(garbage(crnd, crnd.randint(1, 5000)))
            elif what == "long":
                host.write(b"AT" + garbage(crnd, 2100 + crnd.randint(0, 900), allow_cr=False) + b"\r")
                expected.append(ERROR)
            elif what == "slash" and last is not None:
                host.write(b"A/")
                expected.append(last)
            else:
                q = crnd.choice(queries)
                jitter_write(host, q.encode() + b"\r", crnd, 0.001) if crnd.random() < 0.3 \
                    else host.write(q.encode() + b"\r")
                expected.append(single[q])
                last = single[q]
            host._fill()
            time.sleep(0.01)
        # read until every answer came and the whole stream was pushed
        deadline = time.monotonic() + 20
        pos, pushed, answers = 0, bytearray(), 0
        while answers < len(expected) or len(pushed) < len(stream):
            assert time.monotonic() < deadline, (answers, len(expected), len(pushed),
                                                 bytes(host.transcript[pos:pos + 200]))
            host._fill()
            t = bytes(host.transcript)
            while True:
                m = PUSH_HEAD.match(t, pos)
                if m:
                    n = int(m.group(1))
                    if len(t) < m.end() + n + 2:
                        break
                    pushed += t[m.end():m.end() + n]
                    assert t[m.end() + n:m.end() + n + 2] == b"\r\n", t[pos:m.end() + n + 10]
                    pos = m.end() + n + 2
                    continue
                if answers < len(expected) and t.startswith(expected[answers], pos):
                    pos += len(expected[answers])
                    answers += 1
                    continue
                rest = t[pos:]          # only the start of a push or of the next answer
                assert (b'\r\n+QSSLURC: "recv",0,'.startswith(rest[:21])
                        or (answers < len(expected) and expected[answers].startswith(rest))), \
                    (answers, rest[:200], expected[answers] if answers < len(expected) else None)
                break
        assert bytes(pushed) == stream
        host.quiet_for(0.3)
        assert bytes(host.transcript[pos:]) == b""       # nothing after the last push / answer
        assert host.at("AT") == OK


# == A/ of the next program repeating what the last one left unfinished =========================
def test_a_slash_after_a_host_left_a_slow_answer_and_a_prompt_behind(rig):
    with rig.ssl_server(mode="echo") as server:
        rig.ssl_open(0)
        conn = conn_of(server)
        state = SSL_URC.sub(b"", rig.ssl_state(0))
        # 1: the host leaves while a slow AT+QSSLSTATE's answer is pending
        assert rig.emulator.control("slow", command="+QSSLSTATE", ms=500)["ok"]
        rig.host.write("AT+QSSLSTATE=0\r")
        settle_written(rig)
        host = rig.reopen()
        assert host.quiet_for(0.8) == b""                  # the answer was not for this host
        assert rig.emulator.control("slow", command="+QSSLSTATE", ms=0)["ok"]
        host.write(b"A/")
        assert SSL_URC.sub(b"", host.read_until(OK)) == state
        # 2: the host leaves at a fixed-length prompt with 3 of 5 bytes written
        host.write("AT+QSSLSEND=0,5\r")
        assert SSL_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
        host.write(b"abc")
        settle_written(rig)
        host = rig.reopen()
        host.write(b"A/")                                  # AT+QSSLSEND=0,5 again
        assert SSL_URC.sub(b"", host.read_until(b"> ")) == b"\r\n> "
        host.write(b"VWXYZ")
        assert SSL_URC.sub(b"", host.read_until(SEND_OK)) == SEND_OK
        assert wait_received(conn, 5) == b"VWXYZ"
        time.sleep(0.2)
        assert bytes(conn.received) == b"VWXYZ"
        assert ec_recv_all(rig, 0, 5) == b"VWXYZ"


# == A/ of the next program repeating a read whose answer the last one left half read ===========
def test_a_slash_repeats_a_read_left_half_read_by_the_last_program(side):
    """A read's answer half read when the host left: its data are gone (docs/behaviour.md: a
    hang-up discards output the host never read); the next program's A/ reads on from there,
    once, in order."""
    r = side.r
    data = payload(1200, 1231).replace(CTRL_Z, b"z").replace(b"\x1b", b"e")
    data = b"D" + data[1:]
    r.host.write(b"AT+QSSLSEND=0\r" + data + CTRL_Z)
    assert side.urc.sub(b"", r.host.read_until(SEND_OK)) == b"\r\n> " + SEND_OK
    wait_received(side.conn, len(data))
    wait_for(lambda: any(s["id"] == 0 and s["unread"] == len(data)
                         for s in r.emulator.control("state")["sockets"]), 10, "echo back")
    line = b"AT+QSSLRECV=0,300\r" if side.name == "ec2x" else b"AT+QSSLRECV=1,0,300\r"
    r.host.write(line)
    r.host.read_until(re.compile(rb"\+QSSLRECV: [^\r]*\r\n"))
    assert r.host.read_exactly(100) == data[:100]
    settle_written(r)
    if side.name == "ec2x":
        host = r.reopen(0.1)
    else:
        r.away()
        time.sleep(0.1)
        host = r.back(OddHost)
    assert side.urc.sub(b"", host.quiet_for(0.2)) == b""
    host.write(b"A/")
    head = host.read_until(re.compile(rb"\+QSSLRECV: [^\r]*\r\n"))
    assert head.endswith(b",300\r\n" if side.name == "ml302" else b" 300\r\n"), head
    assert host.read_exactly(300 + 8) == data[300:600] + b"\r\n\r\nOK\r\n"
    assert side.read_back(600) == data[600:]


# == a DTR drop in AT+QFUPL's data phase ========================================================
@pytest.mark.parametrize("d", ["AT&D1", "AT&D2"])
def test_a_dtr_drop_in_a_qfupl_data_phase_is_no_escape(rig, d):
    """docs/behaviour.md (DTR): AT&D acts on an online socket only; AT+QFUPL's data phase is
    left by its byte count, its timeout or a guarded "+++" (the FILE manual names no other
    way out), so a DTR pulse under AT&D1 or AT&D2 leaves the upload counting: the next 60
    bytes complete it."""
    assert rig.host.at(d) == OK
    rig.host.write('AT+QFUPL="UFS:d.pem",100\r')
    assert rig.host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    rig.host.write(b"x" * 40)
    settle_written(rig)
    assert rig.emulator.control("dtr", level=0)["ok"]
    got = rig.host.quiet_for(0.5)
    assert rig.emulator.control("dtr", level=1)["ok"]
    assert got == b""
    rig.host.write(b"y" * 60)
    assert re.fullmatch(rb"\r\n\+QFUPL: 100,[0-9a-f]+\r\n\r\nOK\r\n", rig.host.read_until(OK))
    assert rig.host.at('AT+QFLST="UFS:d.pem"') == b'\r\n+QFLST: "d.pem",100\r\n\r\nOK\r\n'


# == lines queued behind a slow answer when the host leaves ======================================
def test_lines_and_garbage_queued_behind_a_slow_answer_go_with_the_host(rig):
    """docs/behaviour.md: a pending command's line runs to its end unanswered, "lines behind it
    that no command had taken yet go with the host" -- also behind 300 KB of garbage."""
    rnd = random.Random(1241)
    assert rig.host.at('AT+QSSLCFG="negotiatetime",1') == b'\r\n+QSSLCFG: "negotiatetime",1,300\r\n' + OK
    assert rig.emulator.control("slow", command="+QSSLCFG", ms=600)["ok"]
    rig.host.write(b'AT+QSSLCFG="negotiatetime",1,111;+QSSLCFG="seclevel",1,1\r')
    rig.host.write(garbage(rnd, 300_000))
    rig.host.write(b'AT+QSSLCFG="sslversion",1,1\rAT+QSSLCFG="ciphersuite",1,0X0035\r')
    settle_written(rig)
    host = rig.reopen()
    time.sleep(0.8)
    assert rig.emulator.control("slow", command="+QSSLCFG", ms=0)["ok"]
    assert host.quiet_for(0.2) == b""
    assert host.at('AT+QSSLCFG="negotiatetime",1') == b'\r\n+QSSLCFG: "negotiatetime",1,111\r\n' + OK
    assert host.at('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,1\r\n' + OK
    assert host.at('AT+QSSLCFG="sslversion",1') == b'\r\n+QSSLCFG: "sslversion",1,4\r\n' + OK
    assert host.at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n' + OK


@pytest.mark.parametrize("op", [_break_noop_on_pty, _modem_lines_noop_on_pty, _baud, _hupcl_off, _cooked],
                         ids=lambda f: f.__name__.strip("_"))
def test_ml302_tty_ops_while_online_then_the_host_leaves_mid_stream(ml, op):
    """ML302 connectmode 1 (transparent): half the data, the host's tty changed, the other half,
    the port closed: the server got every byte once; the next program meets command state
    (AT answers, nothing stale) and ATO brings the connection back, both ways."""
    srv = ml.server(mode="sink")
    ml.host.write(b'AT+QSSLOPEN=0,0,"www.iottest.work",443,1\r')
    for _ in range(40):
        if b"CONNECT" in ml.host.transcript:
            break
        ml.advance(0.05)
        ml.host._fill()
    assert ml.host.read_until(b"\r\nCONNECT\r\n", 10) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    data = payload(5000, 1251)
    ml.host.write(data[:2000])
    tty_op(ml.host, op)
    ml.host.write(data[2000:])
    assert wait_received(conn, len(data)) == data
    settle_written(ml)
    ml.away()
    host = ml.back()
    assert host.at("AT") == OK
    assert host.quiet_for(0.2) == b""
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    host.write(b"tail")
    assert wait_received(conn, len(data) + 4) == data + b"tail"
    conn.send(b"back")
    assert host.read_exactly(4, 10) == b"back"


def test_a_slash_repeats_the_edited_line_under_ate1_echoing_only_itself(side):
    """A line typed with backspace edits, CR LF, one byte a write: A/ (and a/) repeat the line
    as edited, echoed as "A/" alone, the answer the same every time."""
    r = side.r
    q = side.queries[1]
    answer = side.urc.sub(b"", r.host.at(q))
    assert r.host.at("ATE1") == OK
    typed = q[:-3].encode() + b"xy\x08\x08" + q[-3:].encode()
    jitter_write(r.host, typed + b"\r\n", random.Random(1261))
    got = side.urc.sub(b"", r.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
    assert got == typed + b"\r" + answer
    for rep in (b"A/", b"a/", b"A/"):
        r.host.write(rep)
        got = side.urc.sub(b"", r.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")))
        assert got == rep + answer
    assert side.urc.sub(b"", r.host.quiet_for(0.2)) == b""
    assert r.host.at("ATE0") == b"ATE0\r" + OK
