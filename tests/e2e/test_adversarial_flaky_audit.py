"""Flake audit: emulator behaviour that depends on how the kernel splits the host's writes.

The audit looked for tests whose outcome depends on timing or on how the pty splits reads
(the CI failure of test_review_perf_trims: one 1 MiB write read as two pieces gave two "port
busy" lines).  Most findings were test races (reported, not changed here).  One is the
emulator's: the line discipline learns "this host writes its lines in pieces" (lexer.piecewise,
Interpreter.feed) from the boundaries of the pieces the pty hands over.  A host that writes
whole CR LF lines in one big write -- more than the pty holds, so the kernel hands it over in
several reads, cut at its ~2 KB tty buffers or wherever the reader caught up, mostly
mid-line (under load even a 2.2 KB write was seen cut) -- is then taken for a
byte-by-byte writer for the rest of the session ("CR LF lines written byte by byte: an LF
after a prompt is the line's, any time", docs/behaviour.md).  A payload that starts with LF,
written whole after the host read the prompt of a line it ended with CR alone (documented as
data: ghuvrons/quectel-ec25's protobuf payloads), then loses its LF, and the send waits for a
byte the host never meant to send.  Whether it happens depends only on where the kernel cut a
write that came minutes earlier.

All on manual modem time (no 50 ms window runs out on a loaded machine); the burst's split is
not left to chance: 48 KB is several times what the pty takes in one go.
"""
from __future__ import annotations


from tests.e2e.test_adversarial_line_discipline import (OK, PROMPT, RESULT, SEND_OK, exactly,
                                                        open_buffered, pdp_up, sink_server)

LINE = b"AT+CMEE=2\r\n"          # 11 bytes: no pty buffer size is a multiple of it
COUNT = 4400                     # 48,400 bytes of whole CR LF lines


def _crlf_host_with_socket(open_modem, emulator, server):
    host, port = open_modem("ec2x", manual_time=True)
    pdp_up(host)
    conn = open_buffered(host, server)
    host.write(b"AT\r\n")                       # a host that writes whole CR LF lines
    assert host.read_until(OK) == OK
    return host, port, conn


def _lf_payload_after_a_cr_only_send_line(host) -> bytes:
    """ghuvrons/quectel-ec25: AT+QISEND ended with CR alone, the payload (starting with LF)
    written whole once '>' was read; returns the send's result."""
    host.write(b"AT+QISEND=0,5\r")
    assert host.read_until(b"> ") == PROMPT
    host.write(b"\nabcd")
    return host.read_until(RESULT, timeout=3)


def _every_line_answered_then_the_payload_keeps_its_lf(host, conn) -> None:
    assert host.read_exactly(len(OK) * COUNT, timeout=30) == OK * COUNT
    assert _lf_payload_after_a_cr_only_send_line(host) == SEND_OK
    assert exactly(conn, b"\nabcd") == b"\nabcd"
    assert host.at("AT") == OK


def test_whole_line_burst_written_in_line_aligned_pieces_keeps_the_payload_lf(open_modem, emulator):
    """The same 48,400 bytes of whole lines, written 100 lines (1,100 bytes: less than one of
    the kernel's tty buffers, ~2 KB, which a pty moves whole) at a time, each piece taken
    before the next: every piece the emulator sees ends at a line's end.  The later payload's
    leading LF is data, as documented."""
    with sink_server(emulator) as server:
        host, port, conn = _crlf_host_with_socket(open_modem, emulator, server)
        for _ in range(COUNT // 100):
            host.write(LINE * 100)
            host.ser.flush()
            emulator.wait_received(port, host.written)
        _every_line_answered_then_the_payload_keeps_its_lf(host, conn)


# Was a bug, fixed (Interpreter._host_cut): a cut inside a piece that held an earlier line's
# S3 is the pty's or the reader's, not the host's; it no longer makes the host "piecewise".
def test_whole_line_burst_in_one_write_split_by_the_pty_keeps_the_payload_lf(open_modem, emulator):
    """One pyserial write() of 48,400 bytes of whole CR LF lines: the pty moves it in tty
    buffers of ~2 KB and takes at most ~12 KB at a time, so the emulator reads it in pieces
    cut mid-line.  Each line is answered; then the host
    does exactly what the test above does -- and "\\nabcd" must reach the peer, SEND OK."""
    with sink_server(emulator) as server:
        host, port, conn = _crlf_host_with_socket(open_modem, emulator, server)
        host.write(LINE * COUNT)
        host.ser.flush()
        emulator.wait_received(port, host.written)
        _every_line_answered_then_the_payload_keeps_its_lf(host, conn)
