"""Adversarial review of 78bb2f5: what piece boundaries teach the line discipline.

Interpreter.feed learns that a host writes its lines in pieces (lexer.piecewise) from where
one pty read ends and the next begins; since 78bb2f5 a boundary counts only when the piece
read before it held no earlier line's S3 (Interpreter._host_cut).  docs/behaviour.md: for a
line ended by CR that opens a data prompt, an LF after the prompt is the line's ending
(dropped) for a "byte by byte" CR LF host at any time, data in the other cases once the
host has read the prompt and the 50 ms window is over.

Read boundaries are made deterministic: each piece is written and taken by the modem
(wait_received) before the next is written; a burst is coalesced by pausing the port's
reading (PtyPort.set_reading(False)) while it is written, so the reader hands it on in its
16 KiB slices.  The 50 ms window runs on the modem's manual clock (emulator.advance).
"""
from __future__ import annotations

import threading
import time

import pytest

from emulator.testing.peers import TlsServer, default_pki
from tests.e2e.ml302_support import HOST as ML_HOST, HOST_IP as ML_HOST_IP
from tests.e2e.socket_support import conn_of, wait_received
from tests.e2e.test_adversarial_line_discipline import (OK, PROMPT, RESULT, SEND_OK, byte_writer,
                                                        exactly, open_buffered, pdp_up, reopen,
                                                        sink_server)

CTRL_Z = b"\x1a"
SLICE = 16 * 1024


# -- helpers -------------------------------------------------------------------------------------
def pieces(host, emulator, port, *parts: bytes, before: int = 0) -> None:
    """Each part written on its own and read by the modem before the next is written: one
    pty read per part (the host's own cuts)."""
    for part in parts:
        host.write(part)
        host.ser.flush()
        emulator.wait_received(port, before + host.written)


def coalesced(host, emulator, port, data: bytes, before: int = 0) -> None:
    """`data` written while the port does not read: the reader then takes it in 16 KiB
    slices (cut wherever the slice size falls, not where the host wrote)."""
    assert len(data) <= 18000                       # (what a pty holds: the write never blocks)
    emulator.run(lambda: port.port.set_reading(False))
    try:
        writer = threading.Thread(target=lambda: (host.write(data), host.ser.flush()), daemon=True)
        writer.start()
        writer.join(5)
        time.sleep(0.05)
    finally:
        emulator.run(lambda: port.port.set_reading(True))
    emulator.wait_received(port, before + len(data) + host.written - len(data))


def piecewise(emulator, port) -> bool:
    return emulator.run(lambda: port.modem.interpreter.lexer.piecewise)


def setup_ec2x(open_modem, emulator, server, **kw):
    host, port = open_modem("ec2x", manual_time=True, **kw)
    pdp_up(host)
    conn = open_buffered(host, server)
    host.write(b"AT\r\n")                           # a host that ends lines with CR LF
    assert host.read_until(OK) == OK
    return host, port, conn


def late_lf_then(host, emulator, port, payload: bytes, before: int = 0) -> bytes:
    """The prompt read, 600 ms of modem time gone, an LF written alone (read alone), then
    `payload`: returns the send's result line."""
    assert host.read_until(b"> ").endswith(PROMPT)
    emulator.advance(port, 0.6)
    pieces(host, emulator, port, b"\n", before=before)
    host.write(payload)
    return host.read_until(RESULT, timeout=3)


def lf_payload_after_cr_only_line(host, emulator, port, before: int = 0) -> bytes:
    """A whole CR-only AT+QISEND, its prompt read, 600 ms, then "\\nabcd" in one write."""
    pieces(host, emulator, port, b"AT+QISEND=0,5\r", before=before)
    assert host.read_until(b"> ").endswith(PROMPT)
    emulator.advance(port, 0.6)
    host.write(b"\nabcd")
    return host.read_until(RESULT, timeout=3)


BURST = b"AT+CMEE=2\r\n" * 1600      # 17,600 bytes of whole CR LF lines


# == genuine pieces after a burst are still learnt ====================================================
@pytest.mark.parametrize("how", ["text-in-two", "byte-by-byte"])
def test_genuine_pieces_after_a_sliced_burst_are_learnt(open_modem, emulator, how):
    """A burst of whole lines (coalesced, read in 16 KiB slices: cut mid-line) teaches
    nothing; the same host then writing its send line in pieces is learnt, so its LF, alone,
    600 ms after the prompt was read, is the line's: the peer gets exactly "abcde"."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        coalesced(host, emulator, port, BURST)
        assert host.read_exactly(len(OK) * 1600, timeout=20) == OK * 1600
        assert piecewise(emulator, port) is False
        if how == "byte-by-byte":
            byte_writer(host, b"AT+QISEND=0,5\r", 0.001)
            emulator.wait_received(port, host.written)
        else:
            pieces(host, emulator, port, b"AT+QISE", b"ND=0,5\r")
        assert piecewise(emulator, port) is True
        assert late_lf_then(host, emulator, port, b"abcde") == SEND_OK
        assert exactly(conn, b"abcde") == b"abcde"
        assert host.at("AT") == OK


def test_sliced_burst_alone_keeps_a_later_lf_payload_as_data(open_modem, emulator):
    """Control: after the same sliced burst, a whole CR-only send line and "\\nabcd" written
    after the prompt was read: the LF is data (behaviour.md), the peer gets "\\nabcd"."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        coalesced(host, emulator, port, BURST)
        assert host.read_exactly(len(OK) * 1600, timeout=20) == OK * 1600
        assert lf_payload_after_cr_only_line(host, emulator, port) == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert host.at("AT") == OK


# == a whole earlier line plus the start of the next ==================================================
def test_whole_line_plus_start_of_next_then_lf_at_once_is_the_lines(open_modem, emulator):
    """"AT\\r\\nAT+QISE" | "ND=0,5\\r" | "\\n" (a chunking writer: its LF right behind the CR,
    before the prompt was read, within the window): the LF is the line's; "hello" is sent."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        pieces(host, emulator, port, b"AT\r\nAT+QISE", b"ND=0,5\r", b"\n")
        assert piecewise(emulator, port) is True        # (learnt from the LF that came alone)
        assert host.read_until(b"> ") == OK + PROMPT
        host.write(b"hello")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"hello") == b"hello"
        assert host.at("AT") == OK


def test_whole_line_plus_start_of_next_teaches_nothing_so_a_late_lf_is_data(open_modem, emulator):
    """behaviour.md: a read that held an earlier line's end teaches nothing, so the cut
    "AT\\r\\nAT+QISE" | "ND=0,5\\r" does not make the host piecewise; an LF alone 600 ms after
    the prompt was read is then data: the peer gets "\\nabcd" (the "e" falls into command
    state and is dropped)."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        pieces(host, emulator, port, b"AT\r\nAT+QISE", b"ND=0,5\r")
        assert piecewise(emulator, port) is False
        assert host.read_until(OK) == OK
        assert late_lf_then(host, emulator, port, b"abcde") == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert host.at("AT") == OK
        assert host.quiet_for(0.05) == b""


# == text, then CR LF, written apart =================================================================
@pytest.mark.parametrize("ending", [b"\r\n", b"\r"])
def test_text_then_line_end_in_a_separate_write_is_not_byte_by_byte(open_modem, emulator, ending):
    """A host writing each line as its text, then its ending, in two writes: a piece that
    starts with S3 teaches nothing.  Its payload "\\nabcd", written whole after it read the
    prompt (600 ms later), is data whether the send line ended with CR LF or CR alone."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        for _ in range(3):
            pieces(host, emulator, port, b"AT+CMEE=2", b"\r\n")
            assert host.read_until(OK) == OK
        pieces(host, emulator, port, b"AT+QISEND=0,5", ending)
        assert piecewise(emulator, port) is False
        assert host.read_until(b"> ") == PROMPT
        emulator.advance(port, 0.6)
        host.write(b"\nabcd")
        assert host.read_until(RESULT, timeout=3) == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert host.at("AT") == OK


def test_text_cr_lf_in_three_writes_is_learnt_and_its_late_lf_is_the_lines(open_modem, emulator):
    """A host writing "text", "\\r", "\\n" as three writes: its CR and LF come apart (the piece
    before held no earlier S3): learnt piecewise; the send line's LF alone 600 ms after the
    prompt was read is the line's -> the peer gets exactly "abcde"."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        pieces(host, emulator, port, b"AT+CMEE=2", b"\r")
        assert host.read_until(OK) == OK
        pieces(host, emulator, port, b"\n")
        assert piecewise(emulator, port) is True
        pieces(host, emulator, port, b"AT+QISEND=0,5", b"\r")
        assert late_lf_then(host, emulator, port, b"abcde") == SEND_OK
        assert exactly(conn, b"abcde") == b"abcde"
        assert host.at("AT") == OK


# == CR-only hosts ====================================================================================
def test_cr_only_host_in_pieces_late_lf_is_data(open_modem, emulator):
    """A host ending its lines with CR alone, written in pieces (learnt piecewise, but it sends
    no LF): an LF alone after it read the prompt is data -> "\\nabcd" at the peer."""
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x", manual_time=True)
        pdp_up(host)
        conn = open_buffered(host, server)
        for _ in range(2):
            pieces(host, emulator, port, b"AT+CM", b"EE=2\r")
            assert host.read_until(OK) == OK
        pieces(host, emulator, port, b"AT+QISE", b"ND=0,5\r")
        assert late_lf_then(host, emulator, port, b"abcde") == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert host.at("AT") == OK


# == S3 changed ======================================================================================
# Was a bug, fixed (this review): _host_cut looked for the CURRENT S3 in the previous piece,
# so a burst whose earlier line was ended by the S3 of then ('@') counted as the host's cut.
def test_s3_at_64_then_burst_back_to_13_cut_by_the_pty_teaches_nothing(open_modem, emulator):
    """A host on ATS3=64 ('@') writes one burst of whole lines "ATS3=13@\\n" + "AT+CMEE=2\\r\\n"
    that the pty cuts after "AT+CM": the piece before the cut held an earlier line's end
    ('@', S3 when it was read) -- the cut is not the host's.  A later whole CR-only send
    line and "\\nabcd" written after the prompt was read: the LF is data."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        pieces(host, emulator, port, b"ATS3=64\r\n")
        assert host.read_until(b"@\nOK@\n") == b"@\nOK@\n"
        pieces(host, emulator, port, b"ATS3=13@\nAT+CM", b"EE=2\r\n")
        assert host.read_until(OK + OK) == OK + OK      # (ATS3=13's OK framed with the new S3)
        assert lf_payload_after_cr_only_line(host, emulator, port) == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"
        assert piecewise(emulator, port) is False


def test_s3_hash_burst_cut_after_an_earlier_hash_line_teaches_nothing(open_modem, emulator):
    """ATS3=35: a burst "AT#\\nAT+CM" | "EE=2#\\n" (cut by the pty) teaches nothing; a later
    ATS3=13 and a whole CR-only send with "\\nabcd" after the prompt: data."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        pieces(host, emulator, port, b"ATS3=35\r\n")
        assert host.read_until(b"#\nOK#\n") == b"#\nOK#\n"
        pieces(host, emulator, port, b"AT#\nAT+CM", b"EE=2#\n")
        assert host.read_until(b"OK#\n#\nOK#\n") == b"#\nOK#\n#\nOK#\n"
        assert piecewise(emulator, port) is False
        pieces(host, emulator, port, b"ATS3=13#\n")
        assert host.read_until(OK) == OK
        assert lf_payload_after_cr_only_line(host, emulator, port) == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"


# == the reader's 16 KiB slices ======================================================================
@pytest.mark.parametrize("prefix, last_two", [
    (b"ATE\r\n", b"T\r"),          # the slice ends with a CR: its LF opens the next slice
    (b"ATE0\r\n", b"AT"),          # the slice ends before a CR: the next one opens with it
    (b"AT\r\n", b"\r\n"),          # the slice ends with a line's CR LF
])
def test_slice_boundary_on_cr_lf_teaches_nothing(open_modem, emulator, prefix, last_two):
    """A coalesced burst of "AT\\r\\n" lines whose first 16 KiB slice ends exactly at a CR,
    between a CR and its LF, or after an LF: every line answered once, nothing learnt; a
    later whole CR-only send's "\\nabcd" (after the prompt was read) is data."""
    burst = prefix + b"AT\r\n" * 4400
    assert burst[SLICE - 2:SLICE] == last_two
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        coalesced(host, emulator, port, burst)
        assert host.read_exactly(len(OK) * 4401, timeout=20) == OK * 4401
        assert piecewise(emulator, port) is False
        assert lf_payload_after_cr_only_line(host, emulator, port) == SEND_OK
        assert exactly(conn, b"\nabcd") == b"\nabcd"


# == echo ===========================================================================================
def test_echo_on_burst_then_pieces_exact_echo_and_the_late_lf_is_the_lines(open_modem, emulator):
    """ATE1: a sliced burst of "AT\\r\\n" lines is echoed "AT\\r" (the LF of a CR LF line is not
    echoed) and answered, nothing learnt from its cut; then the send line in pieces: echo "AT+QISEND=0,5\\r", the prompt; the late
    LF (600 ms, prompt read) is the line's and not echoed; the payload is echoed."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server)
        assert host.at("ATE1") == OK
        burst = b"AT\r\n" * 4400
        coalesced(host, emulator, port, burst)
        got = host.read_exactly(len(b"AT\r" + OK) * 4400, timeout=20)
        assert got == (b"AT\r" + OK) * 4400
        pieces(host, emulator, port, b"AT+QISE", b"ND=0,5\r")
        assert host.read_until(b"> ") == b"AT+QISEND=0,5\r" + PROMPT
        emulator.advance(port, 0.6)
        pieces(host, emulator, port, b"\n")
        host.write(b"abcde")
        assert host.read_until(RESULT, timeout=3) == b"abcde" + SEND_OK
        assert exactly(conn, b"abcde") == b"abcde"


# == close and reopen ================================================================================
# Was a bug, fixed (this review; older than 78bb2f5): with --uart the boundary between the
# closed program's last piece and the next program's first write was taken for a host's cut.
@pytest.mark.parametrize("uart", [False, True])
def test_next_program_after_a_half_line_is_a_whole_line_host(open_modem, emulator, uart):
    """Program A writes half a line in pieces ("AT+QI" | "SE") and exits.  Program B writes
    whole lines: its first piece after the close is no cut of its own (nothing of it came
    before): it is not taken for a piecewise writer; its whole CR-only send's "\\nabcd",
    written after it read the prompt, is data."""
    with sink_server(emulator) as server:
        host, port, conn = setup_ec2x(open_modem, emulator, server, hangup_on_close=not uart)
        pieces(host, emulator, port, b"AT+QI", b"SE")
        before = emulator.run(lambda: port.port.received)
        host = reopen(host, emulator, port)
        try:
            pieces(host, emulator, port, b"AT\r\n", before=before)
            # (--uart: no hang-up, A's half line and B's first line are one line: ERROR)
            assert host.read_until(RESULT if uart else OK, timeout=3) == (b"\r\nERROR\r\n" if uart else OK)
            assert lf_payload_after_cr_only_line(host, emulator, port, before=before) == SEND_OK
            assert exactly(conn, b"\nabcd") == b"\nabcd"
            assert piecewise(emulator, port) is False
        finally:
            host.close()


# == byte-by-byte writers: no regression ==============================================================
def test_byte_by_byte_writer_late_lf_is_the_lines_at_any_time(open_modem, emulator):
    """One byte a write, tiny sleeps, whole session: the LF of "AT+QISEND=0,5\\r" coming
    alone 600 ms after the prompt was read is still the line's; twice in a row."""
    with sink_server(emulator) as server:
        host, port = open_modem("ec2x", manual_time=True)
        pdp_up(host)
        conn = open_buffered(host, server)
        byte_writer(host, b"AT\r\n", 0.001)
        assert host.read_until(OK) == OK
        for payload in (b"hello", b"world"):
            byte_writer(host, b"AT+QISEND=0,5\r", 0.001)
            emulator.wait_received(port, host.written)
            assert late_lf_then(host, emulator, port, payload) == SEND_OK
        assert exactly(conn, b"helloworld") == b"helloworld"
        assert host.at("AT") == OK


# == TLS: EC2x AT+QSSLSEND, ML302 AT+QSSLSEND=<ssid> ==================================================
def test_ec2x_qsslsend_sliced_burst_then_byte_writer_late_lf(open_modem, emulator):
    """EC2x over TLS: a sliced burst, then AT+QSSLSEND=0,5 byte by byte with its LF alone
    600 ms after the prompt was read (the line's); then a whole CR-only AT+QSSLSEND=0,5 from
    the same (now piecewise) host: its late LF alone is the line's again.  The TLS
    server gets exactly "abcdefghij"."""
    with TlsServer(default_pki().server, mode="sink") as srv:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", srv.port)
        host, port = open_modem("ec2x", manual_time=True)
        pdp_up(host)
        assert host.at('AT+QSSLOPEN=1,1,0,"tls.example",443,0') == OK
        assert host.seen(b"+QSSLOPEN: 0,0", timeout=15) == b"+QSSLOPEN: 0,0"
        host.quiet_for(0.02)
        conn = conn_of(srv)
        coalesced(host, emulator, port, BURST)
        assert host.read_exactly(len(OK) * 1600, timeout=20) == OK * 1600
        byte_writer(host, b"AT+QSSLSEND=0,5\r", 0.001)
        emulator.wait_received(port, host.written)
        assert late_lf_then(host, emulator, port, b"abcde") == SEND_OK
        pieces(host, emulator, port, b"AT+QSSLSEND=0,5\r")
        assert late_lf_then(host, emulator, port, b"fghij") == SEND_OK
        assert wait_received(conn, 10) == b"abcdefghij"
        time.sleep(0.15)
        assert bytes(conn.received) == b"abcdefghij"


@pytest.mark.parametrize("kind", ["sliced-burst", "byte-by-byte"])
def test_ml302_qsslsend_ssid_late_lf(open_modem, emulator, kind):
    """ML302 AT+QSSLSEND=0 (CTRL-Z ends the data).  After a sliced burst of whole lines, a
    whole CR-only send line and "\\nabc"^Z written after the prompt was read: the LF is data.
    A byte-by-byte writer's LF alone 600 ms after the prompt: the line's."""
    with TlsServer(default_pki().server, mode="sink", session_cache=False,
                   ciphers="DEFAULT:@SECLEVEL=0") as srv:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", srv.port)
        emulator.router.add_dns(ML_HOST, ML_HOST_IP)
        host, port = open_modem("ml302", manual_time=True)
        assert host.at('AT+CGDCONT=1,"IP","CMNET"').endswith(OK)
        assert host.at("AT+CGACT=1,1").endswith(OK)
        assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"
        conn = conn_of(srv)
        if kind == "sliced-burst":
            host.write(b"AT\r\n")
            assert host.read_until(OK) == OK
            coalesced(host, emulator, port, BURST)
            assert host.read_exactly(len(OK) * 1600, timeout=20) == OK * 1600
            pieces(host, emulator, port, b"AT+QSSLSEND=0\r")
            assert host.read_until(b"> ") == PROMPT
            emulator.advance(port, 0.6)
            host.write(b"\nabc" + CTRL_Z)
            expect = b"\nabc"
        else:
            byte_writer(host, b"AT\r\n", 0.001)
            assert host.read_until(OK) == OK
            byte_writer(host, b"AT+QSSLSEND=0\r", 0.001)
            emulator.wait_received(port, host.written)
            assert host.read_until(b"> ") == PROMPT
            emulator.advance(port, 0.6)
            pieces(host, emulator, port, b"\n")
            host.write(b"abc" + CTRL_Z)
            expect = b"abc"
        assert host.read_until(RESULT, timeout=5) == SEND_OK
        assert wait_received(conn, len(expect)) == expect
        time.sleep(0.15)
        assert bytes(conn.received) == expect
