"""Adversarial: a hostile, impatient host, round 14 (EC2x, ML302 where it applies, over the pty).

Rounds 1-13 (test_adversarial_chaos_host*.py) closed the port at every point of an exchange,
chunked streams, pipelined and flooded, toggled E/V/Q, changed S3/S4 to printable characters,
abused termios online and mid-answer.  Here the host:

- reopens the port dozens of times in a tight loop (close and open with no pause, not waiting
  for the modem to see the hang-up) while a buffer-mode SSL socket's server streams: every
  host reads one AT+QSSLRECV of an odd length whole and leaves; the hosts' reads joined are the
  stream once, in order, and no host ever sees a stale byte before its answer; the same with a
  direct-push socket (pushes whole from a URC boundary, each host's part a later piece of the
  stream than the last one's, nothing twice, the tail whole);
- is two processes: a second program holds the pty open too, so the first one leaving at a
  `> ` prompt is no hang-up (a USB port's DTR drops at the last close): the other completes
  the data and gets SEND OK (EC2x fixed length, ML302 Ctrl+Z); when both have left it is one
  (the prompt abandoned); two programs opening at the same instant after a hang-up meet
  command state, nothing stale; a TIOCEXCL host's hang-up clears the flag for the next;
- is 30 programs in a row that each write a whole send with its data and close at once, the
  next opening the instant after: sends go whole or not at all, never twice, in order;
- sets S3 to LF (ATS3=10): every answer, the prompt, SEND OK, the "recv" URC and an
  AT+QSSLRECV answer are framed with LF; lines end with LF; data starting with LF right behind
  such a line (pipelined, a few ms later, byte by byte) are data (the late-LF rule is about a
  CR line's LF); ATV0's results are digit + LF;
- saves S3/S4 = '#'/'$' with AT&W, then AT&F / ATZ / AT&W flip them while a direct-push socket
  streams: each push is framed entirely with the registers of one moment, the stream whole;
- writes 64 KiB of garbage (NUL, 0xFF, CR, LF, BS, ESC, Ctrl+Z, "+++", stray 'A's) with valid
  commands embedded in one write, read in odd chunks, under ATE0 and ATE1;
- writes commands (and "+++", and A/) while an AT+QSSLRECV answer is half read;
- types a 3016-byte line (past serial.line_max) in 13-byte writes under ATE1 while a "recv"
  URC comes: the URC once between echoed characters, the echo exact, one ERROR;
- sprinkles "+++" (guarded by silence, or not) between command lines while a transparent
  socket waits escaped: no answer to it, every line exact, ATO then carries data both ways;
- switches its tty to cooked mode (ICANON, ICRNL, IXON, ECHO, OPOST/ONLCR) and back between
  commands: the answers arrive CR -> NL translated, the echo the tty sends back is dropped by
  the modem (ATE0: no "AT" in it), raw again the next answer is exact.

Checked byte for byte against docs/behaviour.md ("Command line and result codes") and the EC2x
SSL note; no traceback or ERROR log record (strict_log).  No bug found this round.
"""
from __future__ import annotations

import os
import random
import re
import termios
import threading
import time

import pytest

from emulator.testing.host import Host
from tests.e2e.socket_support import OddHost, conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_chaos_host import (  # noqa: F401  (rig: a fixture)
    PUSH_HEAD, RECV_HEAD, SSL_URC, Rig, payload, read_pushes_strictly, rig, sha, state_re)

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


def no_xoff(data: bytes) -> bytes:
    return data.replace(b"\x13", b"\x14").replace(b"\x11", b"\x12")


def fresh_host(rig: Rig, cls=Host) -> Host:
    """Open the port again at once (no wait for the modem to see the hang-up)."""
    rig.host = cls(rig.port.path)
    rig.hosts.append(rig.host)
    return rig.host


# == tight reopen loops =========================================================================
def test_tight_reopen_loop_each_host_one_read_joined_is_the_stream_once(rig):
    """40 programs in a row, each opening the port the instant the last one closed it, reads
    one AT+QSSLRECV of an odd length whole (URCs may come before its head, nothing else) and
    leaves; the server streams meanwhile.  The reads joined are the stream, once, in order."""
    stream = payload(90_000, 14)
    rnd = random.Random(1414)
    with rig.ssl_conn(0) as conn:
        conn.send(stream[:30_000])
        got = bytearray()
        fed = 30_000
        for i in range(40):
            rig.host.close()
            host = fresh_host(rig, OddHost if i % 3 == 0 else Host)
            if fed < len(stream) and i % 4 == 1:
                conn.send(stream[fed:fed + 15_000])
                fed += 15_000
            host.write(f"AT+QSSLRECV=0,{rnd.choice([1, 7, 333, 1499, 1500, 977])}\r")
            before = host.read_until(RECV_HEAD, 20)
            m = RECV_HEAD.search(before)
            assert SSL_URC.sub(b"", before[:m.start()]) == b"", (i, before[:200])
            size = int(m.group(1))
            if size:
                got += host.read_exactly(size, 20)
                assert host.read_exactly(8, 20) == b"\r\n\r\nOK\r\n"
            else:
                assert host.read_exactly(len(OK), 20) == OK
            assert stream.startswith(bytes(got)), (i, len(got))
        conn.send(stream[fed:])
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        fresh_host(rig)
        rig.emulator.run(rig.port.port.look_for_host)
        rest = rig.recv_all(0, len(stream) - len(got))
        assert sha(bytes(got) + rest) == sha(stream)
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))


def test_tight_reopen_loop_with_direct_push_each_host_gets_later_whole_pushes(rig):
    """Direct push: 30 programs in a row, no pause between close and open, each reads 1-3 whole
    pushes and leaves (unread pushes of a departed host are discarded, docs).  Each host's data
    start at a URC boundary and are a piece of the stream after the last host's piece (nothing
    twice, nothing reordered); the last host gets the stream's tail whole."""
    stream = payload(120_000, 140)
    rnd = random.Random(77)
    with rig.ssl_server() as server:
        rig.ssl_open(0, mode=1)
        conn = conn_of(server)
        pos = 0
        took_any: list[int] = []
        for i in range(30):
            conn.send(stream[i * 3000:(i + 1) * 3000])
            took = 0
            host = rig.host
            for _ in range(rnd.randint(1, 3)):
                deadline = time.monotonic() + 1.0      # (a push may have gone with a host
                while len(host.pending) < 40 and not PUSH_HEAD.match(bytes(host.pending)):
                    if time.monotonic() > deadline:     # that left: fine, nothing came)
                        break
                    host._fill()
                if not host.pending:
                    break
                m = PUSH_HEAD.match(bytes(host.pending[:40]))
                assert m, (i, bytes(host.pending[:80]))
                del host.pending[:m.end()]
                data = host.read_exactly(int(m.group(1)), 20)
                assert host.read_exactly(2, 20) == b"\r\n"
                at = stream.find(data, pos)
                assert at >= pos, (i, pos, len(data))
                pos = at + len(data)
                took += 1
            took_any.append(took)
            host.close()
            fresh_host(rig)
        conn.send(stream[90_000:])
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        host = fresh_host(rig)
        rig.emulator.run(rig.port.port.look_for_host)
        tail = read_pushes_strictly(host, stream[-64:])
        assert stream.endswith(tail) and len(stream) - len(tail) >= pos, (len(tail), pos)
        assert sum(took_any) >= 20, took_any
        assert host.quiet_for(0.2) == b""


# == two processes on the pty ===================================================================
def test_second_process_holding_the_pty_finishes_a_prompt_the_first_left(rig):
    with rig.ssl_conn(0) as conn:
        a = rig.host
        b = Host(rig.port.path)
        rig.hosts.append(b)
        a.write(b"AT+QSSLSEND=0,10\r")
        assert a.read_until(b"> ", 5) == b"\r\n> "
        a.write(b"01234")
        time.sleep(0.2)
        a.close()                                # b still holds the slave: no hang-up
        time.sleep(0.3)
        assert rig.port.port.attached
        b.write(b"56789")
        assert b.read_until(b"SEND OK\r\n", 5) == b"\r\nSEND OK\r\n"
        assert wait_received(conn, 10) == b"0123456789"
        # both leave at a prompt: that is the hang-up, the prompt is abandoned
        c = Host(rig.port.path)
        rig.hosts.append(c)
        b.write(b"AT+QSSLSEND=0,6\r")
        assert b.read_until(b"> ", 5) == b"\r\n> "
        b.write(b"abc")
        time.sleep(0.2)
        b.close()
        c.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        rig.host = d = Host(rig.port.path)
        rig.hosts.append(d)
        rig.emulator.run(rig.port.port.look_for_host)
        d.write(b"def\r")                        # command state: garbage, dropped
        assert d.at("AT") == OK
        time.sleep(0.3)
        assert bytes(conn.received) == b"0123456789"


def test_two_processes_opening_at_once_after_a_hangup_meet_command_state_and_no_stale_bytes(rig):
    with rig.ssl_conn(0) as conn:
        conn.send(b"x" * 300)
        rig.host.read_until(b'+QSSLURC: "recv",0\r\n', 10)
        rig.host.write(b"AT+QSSLRECV=0,100\r")         # answer never read
        time.sleep(0.2)
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        hosts: list[Host] = []
        gate = threading.Barrier(2)

        def opener():
            gate.wait()
            hosts.append(Host(rig.port.path))
        ts = [threading.Thread(target=opener) for _ in range(2)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        rig.hosts += hosts
        a, b = hosts
        rig.emulator.run(rig.port.port.look_for_host)
        a.write(b"AT+CGMM\r")
        assert a.read_exactly(len(b"\r\nEC25\r\n\r\nOK\r\n"), 5) == b"\r\nEC25\r\n\r\nOK\r\n"
        assert b.quiet_for(0.3) == b"" and a.quiet_for(0.1) == b""
        rig.host = b
        assert rig.recv_once(0, 1500) == b"x" * 200   # 100 went to the departed host
        a.close()
        assert b.at("AT") == OK


# == S3 = LF ==================================================================================
def test_s3_set_to_lf_frames_everything_and_data_starting_with_lf_are_data(rig):
    with rig.ssl_conn(0) as conn:
        h = rig.host
        h.write(b"ATS3=10\r")
        assert h.read_exactly(6, 5) == b"\n\nOK\n\n"
        # pipelined, with the line in one write
        h.write(b"AT+QSSLSEND=0,5\n\nab\rc")
        assert h.read_exactly(len(b"\n\n> \n\nSEND OK\n\n"), 5) == b"\n\n> \n\nSEND OK\n\n"
        assert wait_received(conn, 5) == b"\nab\rc"
        # right behind the prompt
        h.write(b"AT+QSSLSEND=0,3\n")
        assert h.read_exactly(4, 5) == b"\n\n> "
        h.write(b"\nXY")
        assert h.read_exactly(len(b"\n\nSEND OK\n\n"), 5) == b"\n\nSEND OK\n\n"
        assert wait_received(conn, 8) == b"\nab\rc\nXY"
        # byte by byte, the LF a moment later alone
        for c in b"AT+QSSLSEND=0,2\n":
            h.write(bytes([c]))
            time.sleep(0.002)
        h.write(b"\n")
        assert h.read_exactly(4, 5) == b"\n\n> "
        h.write(b"Z")
        assert h.read_exactly(len(b"\n\nSEND OK\n\n"), 5) == b"\n\nSEND OK\n\n"
        assert wait_received(conn, 10) == b"\nab\rc\nXY\nZ"
        # a CR is no line end now: a control byte in the command, ERROR
        h.write(b"AT+CSQ\r\n")
        assert h.read_exactly(9, 5) == b"\n\nERROR\n\n"
        conn.send(b"hi\r\n")
        assert h.read_exactly(len(b'\n\n+QSSLURC: "recv",0\n\n'), 5) == b'\n\n+QSSLURC: "recv",0\n\n'
        h.write(b"AT+QSSLRECV=0,10\n")
        want = b"\n\n+QSSLRECV: 4\n\nhi\r\n\n\n\n\nOK\n\n"
        assert h.read_exactly(len(want), 5) == want
        h.write(b"ATV0\nAT+QSSLSEND=0,1\n")
        assert h.read_exactly(4, 5) == b"0\n> "
        h.write(b"\n")
        assert h.read_exactly(len(b"SEND OK\n\n"), 5) == b"SEND OK\n\n"
        assert wait_received(conn, 11)[-1:] == b"\n"
        h.write(b"AT+NOPE\nATV1;S3=13\n")
        assert h.read_exactly(8, 5) == b"4\n" + b"\r\nOK\r\n"     # the chain's OK with the new S3
        assert h.at("AT") == OK
        assert h.quiet_for(0.2) == b""


# == AT&W / AT&F / ATZ flipping S3/S4 while pushes stream =========================================
PUSH_ANY = re.compile(rb'([\r#])([\n$])\+QSSLURC: "recv",0,(\d+)([\r#])([\n$])')


def test_at_w_atf_atz_flip_s3_s4_while_direct_push_streams_each_push_framed_whole(rig):
    """ATS3=35;S4=36 saved by AT&W; then AT&F / ATZ / AT&F ... pipelined while the server
    streams in direct push: every push is framed with one moment's registers throughout (its
    head and its closing pair), answers come between pushes only, the data whole once."""
    stream = no_xoff(payload(60_000, 1414)).replace(b"#", b"%").replace(b"$", b"%")
    h = rig.host
    with rig.ssl_server() as server:
        rig.ssl_open(0, mode=1)
        conn = conn_of(server)
        h.write(b"ATS3=35;S4=36\r")
        assert h.read_exactly(6, 5) == b"#$OK#$"          # the line's own OK: the new registers
        h.write(b"AT&W#")
        assert h.read_until(b"#$OK#$", 5) == b"#$OK#$"
        for i in range(12):
            conn.send(stream[i * 5000:(i + 1) * 5000])
            h.write(b"AT&F#" if i % 2 == 0 else b"ATZ\r")     # ended by the S3 of the moment
            time.sleep(0.02)
        got = bytearray()
        oks = echoes = 0
        buf = bytearray()
        deadline = time.monotonic() + 20
        while len(got) < len(stream) or oks < 12:
            assert time.monotonic() < deadline, (len(got), oks)
            h._fill()
            buf += h.pending
            h.pending.clear()
            while True:
                if buf[:4] == b"ATZ\r":          # AT&F turned echo on (factory E1), ATZ off (saved E0)
                    del buf[:4]
                    echoes += 1
                    continue
                if buf[:6] in (b"\r\nOK\r\n", b"#$OK#$"):
                    del buf[:6]
                    oks += 1
                    continue
                m = PUSH_ANY.match(bytes(buf[:40]))
                if not m:
                    assert len(buf) < 40, bytes(buf[:80])       # only pushes and OKs
                    break
                cr, lf, n, cr2, lf2 = m.group(1), m.group(2), int(m.group(3)), m.group(4), m.group(5)
                assert (cr, lf) == (cr2, lf2) and (cr + lf) in (b"\r\n", b"#$"), m.group(0)
                if len(buf) < m.end() + n + 2:
                    break
                got += buf[m.end():m.end() + n]
                assert bytes(buf[m.end() + n:m.end() + n + 2]) == cr + lf, bytes(buf[m.end() + n:][:20])
                del buf[:m.end() + n + 2]
        assert bytes(got) == stream and oks == 12 and echoes == 6 and not buf
        h.write(b"ATS3?#")                       # the last was ATZ: the saved '#' 
        assert h.read_until(b"OK#$", 5).endswith(b"#$035#$#$OK#$")


# == 64 KiB of garbage with commands inside, one write ============================================
GARBAGE = bytes(b for b in range(256) if b not in b"Tt/")


def garbage(rnd: random.Random, n: int) -> bytes:
    out = bytes(rnd.choice(GARBAGE) for _ in range(n))
    return out if rnd.random() < 0.5 else out + b"+++"


def echoed(data: bytes, after_cr: bool) -> tuple[bytes, bool]:
    """ATE1's echo of command-state bytes: as received, but an LF right after a CR is ignored
    (docs/behaviour.md, "LF right after CR is ignored"; test_adversarial_chaos_host_11's
    garbage leaves LF out for this reason)."""
    out = bytearray()
    for b in data:
        if not (b == 0x0A and after_cr):
            out.append(b)
        after_cr = b == 0x0D
    return bytes(out), after_cr


@pytest.mark.parametrize("echo", [0, 1])
def test_64k_garbage_with_embedded_commands_in_one_write_answers_each_once_in_order(rig, echo):
    """One write of 64 KiB: garbage (every byte but 'T', 't', '/': NUL, 0xFF, CR, LF, BS, ESC,
    Ctrl+Z, "+++", stray 'A's right before a command's "AT") with 40 commands inside, read in
    odd chunks: each command answers once, in order, exactly; a socket's unread data are read
    7 bytes a time by the embedded reads, in order."""
    rnd = random.Random(64 + echo)
    data = b"0123456789" * 10
    with rig.ssl_conn(0) as conn:
        conn.send(data)
        rig.host.read_until(b'+QSSLURC: "recv",0\r\n', 10)
        assert rig.host.at(f"ATE{echo}").endswith(OK)
        cmds = [(b"AT+CGMM\r", b"\r\nEC25\r\n\r\nOK\r\n"), (b"AT+CMEE?\r", b"\r\n+CMEE: 1\r\n\r\nOK\r\n"),
                (b"AT+QSSLRECV=0,7\r", None), (b"ATS3?\r", b"\r\n013\r\n\r\nOK\r\n"),
                (b"AT+NOPE\r", ERROR), (b"at\r", OK)]
        blob = bytearray(garbage(rnd, 20_000))
        want = bytearray()
        after_cr = False
        if echo:
            e, after_cr = echoed(bytes(blob), False)
            want += e
        taken = 0
        for i in range(40):
            c, ans = cmds[i % len(cmds)]
            if ans is None:
                part = data[taken:taken + 7]
                taken += len(part)
                ans = b"\r\n+QSSLRECV: %d\r\n%s\r\n\r\nOK\r\n" % (len(part), part)
            seg = garbage(rnd, rnd.randint(200, 1200)) + c
            blob += seg
            if echo:
                e, after_cr = echoed(seg, after_cr)
                want += e
            want += ans
        assert len(blob) >= 40_000
        while len(blob) < 65536:                      # pad to 64 KiB with garbage, no command
            g = garbage(rnd, min(3000, 65536 - len(blob)))
            blob += g
            if echo:
                e, after_cr = echoed(g, after_cr)
                want += e
        odd = OddHost(rig.port.path)               # a second reader only opened: holds nothing back
        rig.host.write(bytes(blob))
        got = bytearray()
        sizes = (1, 3, 7, 4095, 13)
        k = 0
        deadline = time.monotonic() + 15
        while len(got) < len(want) and time.monotonic() < deadline:
            got += rig.host.ser.read(min(sizes[k % 5], len(want) - len(got)))
            k += 1
        odd.close()
        if bytes(got) != bytes(want):
            n = min(len(got), len(want))
            k = next((i for i in range(n) if got[i] != want[i]), n)
            raise AssertionError((len(got), len(want), k, bytes(want[max(0, k - 40):k + 40]),
                                  bytes(got[max(0, k - 40):k + 40])))
        assert rig.host.quiet_for(0.3) == b""
        assert rig.host.at("ATE0").endswith(OK)
        assert rig.recv_all(0, len(data) - taken) == data[taken:]


# == commands written while an AT+QSSLRECV answer is half read ====================================
def test_commands_plus_plus_plus_and_a_slash_written_while_a_read_answer_is_half_read(rig):
    """The host reads 701 bytes of a 1500-byte AT+QSSLRECV answer, then writes a command, a
    guarded "+++", A/ and another command before reading on: the answer's rest comes whole,
    then each line's answer in order (A/ repeats the read), "+++" answers nothing."""
    stream = no_xoff(payload(20_000, 1401))
    h = rig.host
    with rig.ssl_conn(0) as conn:
        conn.send(stream)
        h.read_until(b'+QSSLURC: "recv",0\r\n', 10)
        time.sleep(0.3)
        h.write(b"AT+QSSLRECV=0,1500\r")
        head = b"\r\n+QSSLRECV: 1500\r\n"
        assert h.read_exactly(len(head), 5) == head
        first = h.read_exactly(701 - len(head), 5)
        h.write(b"AT+CGMM\r")
        time.sleep(1.1)
        h.write(b"+++")
        time.sleep(1.1)
        h.write(b"A/")
        h.write(b"AT+QSSLSTATE=0\r")
        rest = h.read_exactly(1500 - len(first), 5)
        assert first + rest == stream[:1500]
        assert h.read_exactly(8, 5) == b"\r\n\r\nOK\r\n"
        assert h.read_exactly(len(b"\r\nEC25\r\n\r\nOK\r\n"), 5) == b"\r\nEC25\r\n\r\nOK\r\n"
        # A/ repeats the last line: AT+CGMM (the read was the line before it)
        assert h.read_exactly(len(b"\r\nEC25\r\n\r\nOK\r\n"), 5) == b"\r\nEC25\r\n\r\nOK\r\n"
        assert state_re(0, 2, 0).fullmatch(h.read_until(OK, 5))
        assert h.quiet_for(0.3) == b""
        assert rig.recv_all(0, len(stream) - 1500, n=1499) == stream[1500:]


# == "+++" between command lines, a transparent socket parked ======================================
def test_plus_plus_plus_sprinkled_in_command_mode_answers_nothing_then_ato_carries(rig):
    rnd = random.Random(314)
    h = rig.host
    assert h.at("ATS12=10") == OK                    # guard time 0.2 s
    with rig.ssl_server(mode="echo") as server:
        rig.ssl_open(0, mode=2)
        conn = conn_of(server)
        h.write(b"ping")
        assert h.read_exactly(4, 5) == b"ping"
        time.sleep(0.3)
        h.write(b"+++")
        time.sleep(0.3)
        assert h.read_exactly(len(OK), 5) == OK
        lines = [(b"AT+CGMM", b"\r\nEC25\r\n\r\nOK\r\n"), (b"AT", OK), (b"AT+NOPE", ERROR),
                 (b"ATS12?", b"\r\n010\r\n\r\nOK\r\n")]
        for i in range(16):
            how = rnd.choice(["guarded", "glued", "split", "none"])
            if how == "guarded":
                time.sleep(0.3)
                h.write(b"+++")
                time.sleep(0.3)
            elif how == "glued":
                h.write(b"+++")
            elif how == "split":
                for c in b"+++":
                    h.write(bytes([c]))
                    time.sleep(0.05)
            line, ans = lines[i % 4]
            for c in line + b"\r\n":
                h.write(bytes([c]))
            assert h.read_exactly(len(ans), 5) == ans, (i, how)
            assert h.quiet_for(0.05) == b"", (i, how)
        conn.send(b"while-away")
        time.sleep(0.3)
        assert h.quiet_for(0.2) == b""
        h.write(b"ATO\r\n")
        assert h.read_exactly(len(b"\r\nCONNECT\r\n"), 5) == b"\r\nCONNECT\r\n"
        assert h.read_exactly(10, 5) == b"while-away"
        h.write(b"pong+++x")
        assert h.read_exactly(8, 5) == b"pong+++x"
        assert bytes(conn.received) == b"pingpong+++x"


# == cooked mode between commands =================================================================
def _cooked(fd: int) -> list:
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[0] |= termios.ICRNL | termios.IXON
    new[1] |= termios.OPOST | termios.ONLCR
    new[3] |= termios.ICANON | termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, new)
    return old


def _read_lines(fd: int, n: int, timeout: float = 5) -> bytes:
    """Canonical reads: n lines (NL-ended) of what the modem wrote."""
    out = b""
    deadline = time.monotonic() + timeout
    while out.count(b"\n") < n:
        assert time.monotonic() < deadline, out
        import select
        if select.select([fd], [], [], 0.05)[0]:
            out += os.read(fd, 4096)
    return out


def test_cooked_mode_toggled_between_commands_echo_back_dropped_raw_answers_exact(rig):
    h = rig.host
    fd = h.ser.fd
    data = b"hello socket 1234"
    with rig.ssl_conn(0) as conn:
        conn.send(data * 6)
        h.read_until(b'+QSSLURC: "recv",0\r\n', 10)
        for i in range(6):
            old = _cooked(fd)
            os.write(fd, b"AT+CGMM\n")                # ONLCR: the modem reads AT+CGMM CR LF
            assert _read_lines(fd, 8) == b"\n\nEC25\n\n\n\nOK\n\n", i      # ICRNL: every CR a NL
            os.write(fd, b"AT+QSSLRECV=0,17\n")
            want = b"\n\n+QSSLRECV: 17\n\n" + data + b"\n\n\n\nOK\n\n"
            got = _read_lines(fd, 10)
            assert got == want, (i, got)
            termios.tcsetattr(fd, termios.TCSADRAIN, old)
            time.sleep(0.1)
            # the tty echoed all of it back to the modem (no "AT" in it): dropped, no answer
            assert h.quiet_for(0.2) == b"", i
            assert h.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n\r\nOK\r\n"
            if i == 2:
                assert h.send_data(0, b"mid") == b"\r\nSEND OK\r\n"
        assert wait_received(conn, 3) == b"mid"
        assert rig.recv_once(0) == b""


# == ML302: two processes, a Ctrl+Z prompt ========================================================
from tests.e2e.test_adversarial_ml302_chaos import Rig as MlRig  # noqa: E402


@pytest.fixture
def ml(emulator, open_modem, strict_log):
    r = MlRig(emulator, open_modem)
    yield r
    r.close_all()


def test_ml302_second_process_ends_the_ctrl_z_prompt_the_first_left_then_both_leave(ml):
    conn = ml.connect(0)
    a = ml.host
    b = Host(ml.port.path)
    ml.hosts.append(b)
    a.write(b"AT+QSSLSEND=0\r")
    assert a.read_until(b"> ", 5) == b"\r\n> "
    a.write(b"first-half|")
    time.sleep(0.2)
    a.close()                                     # b holds the slave: no hang-up
    time.sleep(0.3)
    b.write(b"second-half\x1a")
    assert b.read_until(b"SEND OK\r\n", 5) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 22) == b"first-half|second-half"
    b.write(b"AT+QSSLSEND=0\r")
    assert b.read_until(b"> ", 5) == b"\r\n> "
    b.write(b"abandoned")
    time.sleep(0.2)
    b.close()                                     # the last one: the hang-up
    wait_for(lambda: not ml.port.port.attached, 10, "the hang-up")
    c = ml.back()
    c.write(b"\x1a")                              # command state: a stray Ctrl+Z, dropped
    assert c.at("AT") == OK
    assert c.quiet_for(0.3) == b""
    assert bytes(conn.received) == b"first-half|second-half"


# == TIOCEXCL: a second program is refused, the hang-up clears it =================================
def test_exclusive_host_refuses_a_second_program_and_its_hangup_lets_the_next_in(rig):
    import errno
    import fcntl
    h = rig.host
    import struct
    TIOCGEXCL = 0x80045440

    def excl(fd: int) -> int:
        return struct.unpack("i", fcntl.ioctl(fd, TIOCGEXCL, b"\0" * 4))[0]
    fcntl.ioctl(h.ser.fd, termios.TIOCEXCL)
    assert excl(h.ser.fd) == 1
    if os.geteuid() != 0:                       # (root is let through TIOCEXCL)
        with pytest.raises(OSError) as err:
            os.close(os.open(rig.port.path, os.O_RDWR | os.O_NOCTTY))
        assert err.value.errno == errno.EBUSY
    h.write(b"AT+CGMM\r")
    assert h.read_exactly(len(b"\r\nEC25\r\n\r\nOK\r\n"), 5) == b"\r\nEC25\r\n\r\nOK\r\n"
    h.write(b"AT+CG")                           # half a line, then away
    nxt = rig.reopen()                          # the emulator cleared TIOCEXCL at the hang-up
    assert excl(nxt.ser.fd) == 0
    nxt.write(b"MM\r")                          # no half line from the last program
    assert nxt.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    other = Host(rig.port.path)                 # and a second program may open it now
    rig.hosts.append(other)
    assert other.quiet_for(0.2) == b"" and nxt.quiet_for(0.1) == b""


def test_tight_loop_of_programs_that_write_a_send_and_leave_at_once(rig):
    """30 programs in a row, each writing a whole fixed-length send with its data in one write
    and closing at once, the next opening the instant after: each send goes whole or not at
    all (a program the modem never saw is dropped, docs), never twice, never cut, in order; a
    half-written line of one never joins the next one's bytes into data; the last program
    meets command state with nothing stale."""
    with rig.ssl_conn(0) as conn:
        for i in range(30):
            rig.host.write(b"AT+QSSLSEND=0,4\r" + b"p%03d" % i)
            rig.host.close()
            fresh_host(rig)
            if i % 7 == 3:
                time.sleep(0.08)             # now and then the modem gets a look at the host
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        time.sleep(0.1)
        h = fresh_host(rig)
        rig.emulator.run(rig.port.port.look_for_host)
        time.sleep(0.3)
        assert h.quiet_for(0.2) == b""
        assert h.at("AT") == OK
        assert rig.ssl_state(0).endswith(OK)
        time.sleep(0.3)
        got = bytes(conn.received)
        assert len(got) % 4 == 0, got
        parts = [got[k:k + 4] for k in range(0, len(got), 4)]
        assert all(re.fullmatch(rb"p\d{3}", p) for p in parts), got
        nums = [int(p[1:]) for p in parts]
        assert nums == sorted(set(nums)), nums


def test_overlong_line_in_13_byte_writes_with_a_urc_mid_line_echo_urc_once_then_error(rig):
    """ATE1; a 3016-byte AT+QSSLRECV line (past serial.line_max) in 13-byte writes; the server's
    data raise the "recv" URC while it is typed: the URC is written once, between echoed
    characters (docs: a half-typed line does not hold URCs), the echo otherwise exact, one
    ERROR at the CR; the data wait for the next read, which gets them once."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        h.write(b"ATE1\r")
        assert h.read_exactly(len(OK), 5) == OK          # (that line came with echo off)
        line = b"AT+QSSLRECV=0,5" + b" " * 3000 + b"\r"
        for i in range(0, len(line), 13):
            h.write(line[i:i + 13])
            time.sleep(0.001)
            if i == 1300:
                conn.send(b"hello")
                time.sleep(0.2)
        urc = b'\r\n+QSSLURC: "recv",0\r\n'
        want = len(line) + len(ERROR) + len(urc)
        out = h.read_exactly(want, 10)
        assert out.count(urc) == 1 and out.replace(urc, b"") == line + ERROR, out[-60:]
        assert h.quiet_for(0.2) == b""
        h.write(b"AT+QSSLRECV=0,5\r")
        want = b"AT+QSSLRECV=0,5\r\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
        assert h.read_exactly(len(want), 5) == want
