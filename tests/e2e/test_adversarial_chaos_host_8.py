"""Adversarial: a hostile / careless host, round 8 -- the V.250 registers and line editing
against live SSL sockets (Python ssl servers on 127.0.0.1).

Rounds 1-7 (test_adversarial_chaos_host*.py, test_adversarial_ml302_chaos.py) closed the port
at every point of an exchange, chunked streams every way, toggled ATE/ATV/ATQ around prompts,
mistimed "+++" at the default guard time and pulsed DTR.  Here the host changes what V.250
lets it change and keeps a TLS session busy meanwhile:

- S3 and S4 set to other characters ('#', '$') in the middle of a session: every answer, the
  `> ` prompt, SEND OK, the "recv" URC, an AT+QSSLRECV answer around its binary data, ATV0's
  digits, AT+QFUPL's CONNECT, a transparent session's CONNECT / OK / NO CARRIER, the ML302's
  formats (+QSECWRITE, `0,CLOSE OK`) -- each framed with the registers as they are, lines typed
  one byte at a time and ended with the new S3, data full of the old and new framing bytes;
- the port closed inside such a URC: no tail for the next program;
- a `;` chain that turns echo on, numeric results and a new S3 and ends in a send prompt;
- S5 set to DEL: DEL edits a command line (echoed as received under ATE1), while DEL and BS at
  the `> ` prompt are data;
- a whole SSL session in lower case (`at+...`, `a/` repeating a send line), one byte a write,
  CR LF endings -- both profiles;
- 8-bit "AT" (parity bit set), NUL between the prefix letters: no command;
- S12 changed: "+++" with the new guard times inside AT+QSSLSEND's prompt is data, online it
  escapes at the new guard time, and a "+++" after the old guard time is data;
- the port closed at a prompt while S3 is '#': the next program meets command state with the
  register kept, the abandoned data never sent, the socket's data readable once;
- AT+IFC toggled again and again while a direct-push socket streams 200 KB and the host reads
  in odd chunks: every push whole, once, in order, every command answered once;
- ATQ1 while reading: the information text and data without OK, URCs kept, errors hidden.

Checked against V.250 (S3/S4/S5 6.2.1-6.2.3, 5.2.4 "A/"), the EC2x SSL note and
docs/behaviour.md ("Command line and result codes").  The round's bug, fixed: a `;` chain
whose first command's answer is pending (a lingering AT+QSSLCLOSE) lost the rest of its line
when the host closed the port, though the line was whole and "a command line is run whole
once started" (now the rest runs after it, unanswered).
"""
from __future__ import annotations

import random
import re
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import OddHost, conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_chaos_host import OK, SSL_HOST, SSL_PORT, Rig, payload, state_re
from tests.e2e.test_adversarial_chaos_host_3 import HOST_IP, Rig as Rig3

CTRL_Z = b"\x1a"


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    r.caplog = strict_log
    yield r
    r.close_all()


def typed(host: Host, data: bytes) -> None:
    """One byte a write, as firmware that flushes per character does."""
    for b in data:
        host.write(bytes([b]))


def take(host: Host, want: bytes, timeout: float = 10) -> None:
    """The next bytes on the port are exactly `want`."""
    got = host.read_exactly(len(want), timeout)
    assert got == want, got


def expect(host: Host, data: bytes, answer: bytes, bytewise: bool = True, timeout: float = 10) -> None:
    """Write data and read exactly `answer` (nothing else before it)."""
    (typed if bytewise else Host.write)(host, data)
    got = host.read_exactly(len(answer), timeout)
    assert got == answer, (data, got)


# == S3 / S4 changed in the middle of a session ==================================================
def test_custom_s3_s4_frame_prompt_send_ok_urc_and_reads_of_an_ssl_session(rig):
    """ATS3=35 ('#'), ATS4=36 ('$'): from that line's own OK on, every <CR> is '#' and every
    <LF> '$' -- the prompt `#$> `, `#$SEND OK#$`, the "recv" URC, +QSSLRECV's head, the data's
    closing pair and OK; ATV0 ends a result with S3 alone.  The data carry CR LF, '#', '$' and
    Ctrl+Z (fixed length) untouched; only S3 ends a command line, so CR inside a typed line
    is no terminator."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        expect(h, b"ATS3=35\r", b"#\nOK#\n")
        expect(h, b"ATS4=36#", b"#$OK#$")
        conn.send(b"hello world")
        take(h, b'#$+QSSLURC: "recv",0#$')
        expect(h, b"AT+QSSLRECV=0,5#", b"#$+QSSLRECV: 5#$hello#$#$OK#$")
        expect(h, b"AT+QSSLSEND=0,6#", b"#$> ")
        expect(h, b"\r\n#$\x1a\r", b"#$SEND OK#$")
        expect(h, b"AT+QSSLSEND=0#", b"#$> ")
        expect(h, b"ab#$\r\n" + CTRL_Z, b"#$SEND OK#$")
        # a CR typed into a line is a character of it now: no answer until the '#'
        typed(h, b"AT\r")
        assert h.quiet_for(0.3) == b""
        typed(h, b"\x08#")               # (S5 deletes the CR again)
        take(h, b"#$OK#$")
        expect(h, b"ATV0#", b"0#")
        expect(h, b"AT+QSSLRECV=0,1500#", b"+QSSLRECV: 6#$ world#$0#")
        expect(h, b"AT+FOO#", b"4#")
        expect(h, b"ATV1;S3=13;S4=10#", OK)
        assert h.at("AT") == OK
        assert h.quiet_for(0.2) == b""
        assert wait_received(conn, 12) == b"\r\n#$\x1a\rab#$\r\n"
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))


def test_custom_s3_and_numeric_answers_for_an_upload_and_download(rig):
    """AT+QFUPL / AT+QFDWL (the CONNECT data mode) under S3='#': CONNECT, +QFUPL and OK framed
    with '#' LF; ATV0's CONNECT is `1#`; the file holds what was uploaded (CR, LF, '#' in it),
    downloaded byte-exact -- while an SSL socket's URC waits for the port to be idle."""
    h = rig.host
    blob = b"#\r\n" + bytes(range(256)) + b"#"
    with rig.ssl_conn(0) as conn:
        expect(h, b"ATS3=35\r", b"#\nOK#\n")
        expect(h, b'AT+QFUPL="RAM:c8.bin",%d#' % len(blob), b"#\nCONNECT#\n")
        conn.send(b"news")                     # its URC waits for the upload's answer
        time.sleep(0.2)
        h.write(blob)
        got = h.read_until(b'"recv",0#\n', 10)
        assert re.fullmatch(rb"#\n\+QFUPL: %d,[0-9a-f]+#\n#\nOK#\n#\n\+QSSLURC: \"recv\",0#\n" % len(blob),
                            got), got
        expect(h, b"ATV0#", b"0#")
        expect(h, b'AT+QFDWL="RAM:c8.bin"#', b"1#" + blob + b"#\n")
        assert re.fullmatch(rb"\+QFDWL: %d,[0-9a-f]+#\n0#" % len(blob), h.read_until(b"0#", 10))
        expect(h, b"AT+QSSLRECV=0,10#", b"+QSSLRECV: 4#\nnews#\n0#")
        expect(h, b"ATV1S3=13#", OK)
        assert h.quiet_for(0.2) == b""


def test_ml302_custom_s3_s4_and_v0_frame_open_send_reads_secwrite_and_close(emulator, open_modem, strict_log):
    """The ML302 (OneMO SSL manual formats) under S3='#', S4='$': the open's OK and
    +QSSLOPEN line, the prompt, SEND OK, the "recv",1,<ssid> URC, +QSSLRECV's head and data;
    then ATV0: `0#` results, the bare `> `, AT+QSECWRITE's answer line, AT+QSSLCLOSE's `0#`
    and its trailing `0,CLOSE OK#$`.  The server gets the data (CR LF inside) once."""
    r = Rig3(emulator, open_modem, "ml302")
    try:
        h = r.host
        srv = r.server("sink")
        expect(h, b"ATS3=35;S4=36\r", b"#$OK#$")
        typed(h, r.open_line(0).encode() + b"#")
        got = h.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+#\$"), 20)
        assert got == b"#$OK#$#$+QSSLOPEN: 0,0#$", got
        conn = conn_of(srv)
        expect(h, b"AT+QSSLSEND=0#", b"#$> ")
        expect(h, b"ab\r\n#" + CTRL_Z, b"#$SEND OK#$")
        conn.send(b"xyz")
        take(h, b'#$+QSSLURC: "recv",1,0#$')
        expect(h, b"AT+QSSLRECV=1,0,10#", b"#$+QSSLRECV: %s:443,TCP,3#$xyz#$#$OK#$" % HOST_IP.encode())
        expect(h, b"ATV0#", b"0#")
        expect(h, b"AT+QSSLSEND=0#", b"> ")
        expect(h, b"cd" + CTRL_Z, b"SEND OK#$")
        expect(h, b"AT+QSECWRITE=2#", b"> ")
        expect(h, b"abc" + CTRL_Z, b"+QSECWRITE: 3,0262#$0#")
        expect(h, b"AT+QSSLCLOSE=0#", b"0#0,CLOSE OK#$", timeout=20)
        expect(h, b"ATV1S3=13S4=10#", OK)
        assert h.quiet_for(0.2) == b""
        assert bytes(conn.received) == b"ab\r\n#cd"
    finally:
        for host in r.hosts:
            host.close()
        for s in r.servers:
            s.close()


# == a ; chain that changes the port's settings and ends in a prompt ===========================
def test_chain_turning_echo_v0_and_s3_on_then_a_send_prompt(rig):
    """`ATE1;V0;S3=35;+QSSLSEND=0,3` CR: the line itself came with echo off (nothing echoed),
    the prompt is ATV0's bare `> `, the data go, SEND OK keeps its words framed `#` LF; the
    next line must end with '#' and is echoed; `ATE0V1S3=13#` brings CR back for its own
    OK."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        expect(h, b"ATE1;V0;S3=35;+QSSLSEND=0,3\r", b"> ", bytewise=False)
        expect(h, b"x#y", b"x#ySEND OK#\n", bytewise=False)        # (echo at the prompt is on)
        typed(h, b"AT\r")
        assert h.read_exactly(3, 10) == b"AT\r"               # echoed, no answer: CR is no S3
        typed(h, b"\x08#")
        take(h, b"\x08#0#")
        expect(h, b"ATE0V1S3=13#", b"ATE0V1S3=13#" + OK)
        assert h.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
        assert wait_received(conn, 3) == b"x#y"
        time.sleep(0.2)
        assert bytes(conn.received) == b"x#y"


# == S5: DEL as backspace ========================================================================
def test_s5_set_to_del_edits_lines_but_del_and_bs_at_the_prompt_are_data(rig):
    """ATS5=127: DEL deletes the previous character of a command line (the send length, a read
    length), echoed as received under ATE1; at the `> ` prompt DEL and BS are data, echoed and
    sent; BS (8) no longer edits: it is a character of the line, so no valid command."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        assert h.at("ATS5=127;E1") == OK
        expect(h, b"AT+QSSLSEND=0,9\x7f4\r", b"AT+QSSLSEND=0,9\x7f4\r\r\n> ")
        expect(h, b"a\x7fb\x08", b"a\x7fb\x08\r\nSEND OK\r\n")
        conn.send(b"0123456789")
        take(h, b'\r\n+QSSLURC: "recv",0\r\n')
        expect(h, b"AT+QSSLRECV=0,99\x7f\x7f3\r", b"AT+QSSLRECV=0,99\x7f\x7f3\r\r\n+QSSLRECV: 3\r\n012\r\n" + OK)
        # DEL back over the prefix's T and A: nothing left, the line is no command
        expect(h, b"AT\x7f\x7f\r", b"AT\x7f\x7f\r")
        assert h.quiet_for(0.2) == b""
        # the prefix's T deleted and typed again
        expect(h, b"AT\x7fT+QSSLRECV=0,7\r", b"AT\x7fT+QSSLRECV=0,7\r\r\n+QSSLRECV: 7\r\n3456789\r\n" + OK)
        expect(h, b"ATS5=8;E0\r", b"ATS5=8;E0\r" + OK)
        assert h.at("AT+QSSLRECV=0,20") == b"\r\n+QSSLRECV: 0\r\n" + OK
        assert wait_received(conn, 4) == b"a\x7fb\x08"


# == lower case, byte by byte, CR LF, a/ =========================================================
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_lowercase_bytewise_crlf_session_with_a_slash_repeating_the_send(emulator, open_modem, strict_log,
                                                                        profile):
    """A host that writes every command in lower case, one byte a write, ending lines with
    CR LF: the open, sends (the EC2x fixed length, the ML302's Ctrl+Z), `a/` repeating the
    send line (V.250 5.2.4: "A/" or "a/"; no terminator, so the prompt comes at once), reads
    and the close all work; the server gets each send once, in order."""
    r = Rig3(emulator, open_modem, profile)
    try:
        h = r.host
        srv = r.server("sink")
        ec = r.ec
        typed(h, r.open_line(0).lower().encode() + b"\r\n")
        got = h.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 20)
        assert r.urc.sub(b"", got) == OK + b"\r\n+QSSLOPEN: 0,0\r\n", got
        conn = conn_of(srv)
        send = b"at+qsslsend=0,5\r\n" if ec else b"at+qsslsend=0\r\n"
        end = b"" if ec else CTRL_Z
        typed(h, send)
        assert h.read_until(b"> ", 10) == b"\r\n> "
        typed(h, b"first" + end)
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\nSEND OK\r\n"
        h.write(b"a/")
        assert h.read_until(b"> ", 10) == b"\r\n> "
        h.write(b"again" + end)
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\nSEND OK\r\n"
        typed(h, b"aT+qSsLsTaTe" + (b"=0" if ec else b"") + b"\r\n")
        state = h.read_until(OK, 10)
        assert (b'"SSLClient"' if ec else b'"CONNECTED"') in state, state
        assert wait_received(conn, 10) == b"firstagain"
        conn.send(b"reply")
        if ec:
            h.seen(b'+QSSLURC: "recv",0', 10)
        else:
            h.seen(b'+QSSLURC: "recv",1,0', 10)
        typed(h, r.recv_line(0, 100).lower().replace(b"\r", b"\r\n"))
        head = r.recv_head()
        got = h.read_until(OK, 10)
        m = head.search(got)
        assert m and got[m.end():] == b"reply\r\n" + OK, got
        typed(h, b"at+qsslclose=0\r\n")
        closed = h.read_until(OK if ec else b"0,CLOSE OK\r\n", 20)
        assert r.urc.sub(b"", closed) in (OK, OK + b"\r\n0,CLOSE OK\r\n"), closed
        assert h.at("at") == OK
        time.sleep(0.2)
        assert bytes(conn.received) == b"firstagain"
    finally:
        for host in r.hosts:
            host.close()
        for s in r.servers:
            s.close()


# == 8-bit and NUL bytes around the prefix ====================================================
def test_eight_bit_at_and_nul_inside_the_prefix_are_no_command(rig):
    """"AT" with the parity bit set (0xC1 0xD4), "A" NUL "T", "A" 0xD4: no command line starts,
    nothing answers (V.250: a command line starts at "AT"/"at"); the socket's unread data and
    its state are untouched; at the prompt the same bytes are data, sent exactly."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        conn.send(b"kept")
        take(h, b'\r\n+QSSLURC: "recv",0\r\n')
        h.write(b"\xc1\xd4+QSSLRECV=0,4\r")
        typed(h, b"A\x00T+QSSLRECV=0,4\r")
        h.write(b"A\xd4\r\xe1\xf4\r\x80\r")
        assert h.quiet_for(0.3) == b""
        h.write(b"AT+QSSLSEND=0,8\r")
        assert h.read_until(b"> ", 10) == b"\r\n> "
        h.write(b"\xc1\xd4\r\x00\xe1\xf4\r\n")
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\nSEND OK\r\n"
        assert rig.recv_once(0, 100) == b"kept"
        assert wait_received(conn, 8) == b"\xc1\xd4\r\x00\xe1\xf4\r\n"
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))


# == S12 changed: the escape's guard time =========================================================
def test_new_guard_time_plus_plus_plus_in_a_send_prompt_is_data_online_it_escapes(rig):
    """ATS12=5 (0.1 s): "+++" with 0.3 s of silence around it inside AT+QSSLSEND's Ctrl+Z prompt
    is data (the escape belongs to online data mode and AT+QFUPL); online (transparent, access
    mode 2) the same "+++" escapes -- OK, the connection kept; ATS12=100 (2 s): a "+++" with
    1.2 s of silence is data; ATO, and every byte went once, in order."""
    h = rig.host
    with rig.ssl_server() as server:
        rig.ssl_open(0)
        conn = conn_of(server)
        assert h.at("ATS12=5") == OK
        h.write(b"AT+QSSLSEND=0\r")
        assert h.read_until(b"> ", 10) == b"\r\n> "
        h.write(b"a")
        time.sleep(0.3)
        h.write(b"+++")
        time.sleep(0.3)
        assert h.quiet_for(0.01) == b""
        h.write(b"b" + CTRL_Z)
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\nSEND OK\r\n"
        assert wait_received(conn, 5) == b"a+++b"
        assert h.at("AT+QSSLCLOSE=0") == OK
    with rig.ssl_server() as server:
        rig.ssl_open(1, mode=2)
        conn = conn_of(server)
        h.write(b"on1")
        time.sleep(0.3)
        h.write(b"+++")
        assert h.read_until(OK, 5) == OK
        assert wait_received(conn, 3) == b"on1"
        assert h.at("ATS12=100") == OK
        assert h.at("ATO") == b"\r\nCONNECT\r\n"
        h.write(b"on2")
        time.sleep(1.2)
        h.write(b"+++")
        time.sleep(1.2)
        assert h.quiet_for(0.01) == b""               # 1.2 s < 2 s: data
        h.write(b"on3")
        time.sleep(2.3)
        h.write(b"+++")
        time.sleep(2.3)
        assert h.read_until(OK, 5) == OK
        assert wait_received(conn, 12) == b"on1on2+++on3"
        time.sleep(0.2)
        assert bytes(conn.received) == b"on1on2+++on3"
        assert h.at("ATS12=50;+QSSLCLOSE=1") == OK


# == close at a prompt while S3 is '#' =============================================================
def test_close_at_a_prompt_with_custom_s3_next_program_keeps_the_register(rig):
    """S3='#'; the host leaves at `#\\n> ` with half its data typed; the server sends while
    nobody holds the port.  The next program meets command state and the kept register (a CR
    line gets no answer, its S3 does), the abandoned data were never sent, the data that came
    meanwhile are read once, and S3 goes back with `ATS3=13#`."""
    with rig.ssl_conn(0) as conn:
        h = rig.host
        expect(h, b"ATS3=35\r", b"#\nOK#\n")
        expect(h, b"AT+QSSLSEND=0,10#", b"#\n> ")
        h.write(b"12345")
        time.sleep(0.1)
        rig.host.close()
        wait_for(lambda: not rig.port.port.attached, 10, "the hang-up")
        conn.send(b"while away")
        time.sleep(0.3)
        h = Host(rig.port.path)
        rig.hosts.append(h)
        rig.host = h
        rig.emulator.run(rig.port.port.look_for_host)
        h.write(b"AT\r")
        assert h.quiet_for(0.3) == b""                   # CR is no terminator now
        h.write(b"\x08#")
        assert h.read_until(b"OK#\n", 10) == b"#\nOK#\n"
        expect(h, b"AT+QSSLRECV=0,100#", b"#\n+QSSLRECV: 10#\nwhile away#\n#\nOK#\n")
        expect(h, b"ATS3=13#", OK)
        assert h.quiet_for(0.2) == b""
        assert bytes(conn.received) == b""
        assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))


def test_close_inside_a_custom_framed_urc_leaves_no_tail_for_the_next_program(rig):
    """S3='#', S4='$'.  A "recv" URC arrives; the program reads 7 of its bytes and leaves.  The
    next program gets nothing of the URC's tail (output the host never read goes with it), its
    first line's answer comes alone, the data are read once, and the server that sent a second
    piece meanwhile gives a fresh URC."""
    with rig.ssl_conn(0) as conn:
        h = rig.host
        expect(h, b"ATS3=35;S4=36\r", b"#$OK#$")
        conn.send(b"part one ")
        take(h, b'#$+QSSL')
        h = rig.reopen()
        assert h.quiet_for(0.2) == b""
        expect(h, b"AT#", b"#$OK#$")
        expect(h, b"AT+QSSLRECV=0,100#", b"#$+QSSLRECV: 9#$part one #$#$OK#$")
        conn.send(b"part two")
        take(h, b'#$+QSSLURC: "recv",0#$')
        expect(h, b"AT+QSSLRECV=0,100#", b"#$+QSSLRECV: 8#$part two#$#$OK#$", bytewise=False)
        expect(h, b"ATS3=13;S4=10#", OK)
        assert h.quiet_for(0.2) == b""


def test_transparent_session_framed_with_custom_s3_s4_then_v0_no_carrier(rig):
    """S3='#', S4='$': a transparent open's CONNECT is `#$CONNECT#$`; online data carry '#',
    CR, LF untouched both ways (an echo server); "+++" with its guard times gives `#$OK#$`;
    under ATV0 ATO is `1#`, the peer's close `3#` (NO CARRIER), and a second ATO `3#`; the
    socket is left closing (state 4, access mode 2)."""
    h = rig.host
    with rig.ssl_server(mode="echo") as server:
        expect(h, b"ATS3=35;S4=36\r", b"#$OK#$")
        typed(h, f'AT+QSSLOPEN=1,1,1,"{SSL_HOST}",{SSL_PORT},2#'.encode())
        take(h, b"#$CONNECT#$", 20)
        conn = conn_of(server)
        expect(h, b"ping#\r\n$", b"ping#\r\n$", bytewise=False)
        time.sleep(1.1)
        h.write(b"+++")
        take(h, b"#$OK#$", 5)
        expect(h, b"ATV0#", b"0#")
        expect(h, b"ATO#", b"1#")
        expect(h, b"pong", b"pong", bytewise=False)
        conn.close()
        take(h, b"3#", 10)
        expect(h, b"ATO#", b"3#")
        typed(h, b"AT+QSSLSTATE=1#")
        state = h.read_until(b"0#", 10)
        assert re.fullmatch(rb'\+QSSLSTATE: 1,"SSLClient","%s",%d,\d+,4,1,1,2,"usbmodem",1#\$0#'
                            % (SSL_HOST.encode(), SSL_PORT), state), state
        expect(h, b"AT+QSSLCLOSE=1;V1S3=13S4=10#", OK)
        assert h.quiet_for(0.2) == b""


# == ATQ1 while reading ============================================================================
def test_atq1_reads_give_text_and_data_only_urcs_stay_errors_vanish(rig):
    """ATQ1 (V.250 6.2.5): no result codes -- a read answers its +QSSLRECV head, data and their
    CR LF, no OK; an unknown command and a refused read answer nothing; the "recv" URC and the
    send's prompt and SEND OK stay; ATQ0 typed one byte a write brings OK back."""
    h = rig.host
    with rig.ssl_conn(0) as conn:
        h.write(b"ATQ1\r")
        assert h.quiet_for(0.2) == b""
        conn.send(b"abcdef")
        take(h, b'\r\n+QSSLURC: "recv",0\r\n')
        h.write(b"AT+QSSLRECV=0,4\rAT+BOGUS\rAT+QSSLRECV=7,4\r")
        take(h, b"\r\n+QSSLRECV: 4\r\nabcd\r\n")
        assert h.quiet_for(0.3) == b""
        h.write(b"AT+QSSLSEND=0,2\r")
        take(h, b"\r\n> ")
        h.write(b"zz")
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\nSEND OK\r\n"
        typed(h, b"ATQ0\r")
        take(h, OK)
        assert rig.recv_once(0, 100) == b"ef"
        assert wait_received(conn, 2) == b"zz"


# == AT+IFC toggled while a direct-push socket streams ===========================================
PUSH = re.compile(rb'\r\n\+QSSLURC: "recv",0,(\d+)\r\n')
CSQ = b"\r\n+CSQ: 24,99\r\n" + OK


def split_push_stream(out: bytes) -> tuple[bytes, int, int]:
    """(the pushed data, OKs, +CSQ answers): pushes taken by their length and closing CR LF,
    answers only between them; anything else fails."""
    data, oks, csqs, i = bytearray(), 0, 0, 0
    while i < len(out):
        m = PUSH.match(out, i)
        if m:
            n = int(m.group(1))
            data += out[m.end():m.end() + n]
            assert out[m.end() + n:m.end() + n + 2] == b"\r\n", out[m.end() + n - 10:m.end() + n + 10]
            i = m.end() + n + 2
        elif out.startswith(CSQ, i):
            csqs += 1
            i += len(CSQ)
        elif out.startswith(OK, i):
            oks += 1
            i += len(OK)
        else:
            raise AssertionError(f"not a push or an answer at {i}: {out[i:i + 80]!r}")
    return bytes(data), oks, csqs


def test_ifc_toggled_again_and_again_while_pushes_stream_to_an_odd_chunk_reader(rig):
    """Direct push (access mode 1); the server sends 200 KB in pieces while the host, reading
    in 1/3/7/4095-byte chunks and often not at all for a while, writes AT+IFC=2,2 / AT+IFC=0,0 /
    AT+CSQ lines (some one byte a write, some two in one write).  Every push is whole, at a
    URC boundary, the data are the stream once and in order, each line answered exactly once,
    no traceback (strict_log)."""
    rnd = random.Random(8)
    stream = payload(200_000, 88)
    lines = [b"AT+IFC=2,2\r", b"AT+IFC=0,0\r", b"AT+CSQ\r"]
    with rig.ssl_server() as server:
        rig.ssl_open(0, mode=1)
        conn = conn_of(server)
        odd = OddHost(rig.port.path)
        rig.hosts.append(odd)
        rig.host.close()
        rig.host = odd

        def feed() -> None:
            for k in range(0, len(stream), 7000):
                conn.send(stream[k:k + 7000])
                time.sleep(0.01)
        sender = threading.Thread(target=feed, daemon=True)
        sender.start()
        oks = csqs = 0
        deadline = time.monotonic() + 15
        for step in range(60):
            batch = [rnd.choice(lines) for _ in range(rnd.choice([1, 1, 2]))]
            for line in batch:
                oks += line != b"AT+CSQ\r"
                csqs += line == b"AT+CSQ\r"
            data = b"".join(batch)
            if rnd.random() < 0.4:
                typed(odd, data)
            else:
                odd.write(data)
            if rnd.random() < 0.3:
                time.sleep(0.05)             # not reading for a while
            for _ in range(rnd.randint(1, 8)):
                odd._fill()
        sender.join(10)
        odd.write(b"AT+IFC=0,0\r")
        oks += 1
        while time.monotonic() < deadline:
            odd._fill()
            got, n_ok, n_csq = None, 0, 0
            try:
                got, n_ok, n_csq = split_push_stream(bytes(odd.pending))
            except AssertionError:
                pass                           # (cut inside something: read on)
            if got is not None and len(got) == len(stream) and n_ok == oks and n_csq == csqs:
                break
        whole = odd.quiet_for(0.3)             # (what was pending and what came since)
        got, n_ok, n_csq = split_push_stream(whole)
        assert got == stream, (len(got), len(stream))
        assert (n_ok, n_csq) == (oks, csqs)
        assert odd.at("AT+IFC?") == b"\r\n+IFC: 0,0\r\n" + OK
        assert odd.at("AT+QSSLCLOSE=0") == OK


# == a pending answer's line when its host leaves ================================================
def test_rest_of_a_chain_behind_a_lingering_close_runs_after_the_host_left(rig):
    """docs/behaviour.md: a command still pending when its host left runs to its end (only its
    answer is not written), "a command line is run whole once started", and a close frees its
    id "so the id can be reused in the same line".  A script writes
    `AT+QSSLCLOSE=0,1;+QSSLOPEN=1,1,0,...;+CMEE=0` CR (the close lingers 1 s: the server never
    answers close_notify) and exits.  A module's parser does not stop a line at a DTR drop in
    command state: socket 0 is open again to the new server and AT+CMEE reads 0."""
    hold = threading.Event()
    deaf = TlsServer(session_cache=False, tickets=False, handler=lambda c: hold.wait(20))
    rig.emulator.router.add_map("deaf.example", 4445, "127.0.0.1", deaf.port)
    try:
        with rig.ssl_server() as server:
            h = rig.host
            assert h.at('AT+QSSLOPEN=1,1,0,"deaf.example",4445,0') == OK
            assert h.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 20).endswith(b"+QSSLOPEN: 0,0\r\n")
            conn_of(deaf)
            h.write(f'AT+QSSLCLOSE=0,1;+QSSLOPEN=1,1,0,"{SSL_HOST}",{SSL_PORT},0;+CMEE=0\r'.encode())
            time.sleep(0.2)
            assert h.quiet_for(0.01) == b""          # the close lingers
            h = rig.reopen()
            time.sleep(2.0)
            # (the open's +QSSLOPEN URC, if the fixed modem writes it to the new host, may lead)
            answer = re.sub(rb"\r\n\+QSSLOPEN: 0,-?\d+\r\n", b"", h.at("AT+CMEE?"))
            assert answer == b"\r\n+CMEE: 0\r\n" + OK
            assert server.connections, "the line's AT+QSSLOPEN never ran"
            assert state_re(0, 2, 0).fullmatch(rig.ssl_state(0))
    finally:
        hold.set()
        deaf.close()
