"""Issue 9, what independent hosts broke in the AT core: a late LF of a CR LF
written one byte at a time, non-ASCII digits, a host that never reads, and log
lines a host could forge or fill with secrets."""
from __future__ import annotations

import logging
import threading
import re
import time

import pytest

from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.testing.peers import TlsServer
from emulator.testing.port import StubPort


def slow_write(host, data: bytes, gap: float = 0.003) -> None:
    """A host that flush()es every byte (firmware, per-byte Python drivers)."""
    for b in data:
        host.write(bytes([b]))
        host.ser.flush()
        time.sleep(gap)


# -- item 1: the LF of a CR LF belongs to the command line --------------------------
def crlf_host(host) -> None:
    """The fixtures typed ATE0<CR>; from here on this host ends its lines with CR LF."""
    host.write(b"AT\r\n")
    host.read_until(b"\r\nOK\r\n")


def test_late_lf_is_not_upload_data(ec2x):
    crlf_host(ec2x)
    slow_write(ec2x, b'AT+QFUPL="UFS:late.txt",5\r\n')
    ec2x.read_until(b"\r\nCONNECT\r\n")
    slow_write(ec2x, b"HELLO")
    assert ec2x.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")).startswith(b"\r\n+QFUPL: 5,")
    ec2x.write('AT+QFDWL="UFS:late.txt"\r\n')
    assert ec2x.read_until(b"\r\nOK\r\n").startswith(b"\r\nCONNECT\r\nHELLO")


def test_lf_arriving_after_the_prompt_is_not_ssl_data(ec2x, emulator, pki):
    with TlsServer(pki.server_ec, legacy=True) as server:          # echoes
        emulator.router.add_map("220.180.239.212", 8010, "127.0.0.1", server.port)
        assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert ec2x.at('AT+QSSLOPEN=1,1,0,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
        ec2x.seen(b"+QSSLOPEN: 0,0")
        # a CR LF host that writes byte by byte, shown so before its late LF matters: a CR, the
        # answer, then the LF apart.  (After crlf_host()'s whole lines the emulator would know a
        # host writing whole lines, whose late LF is data when a loaded machine reads it with
        # the 'H' or past the 50 ms window once the prompt was read: docs/behaviour.md)
        ec2x.write(b"AT\r")
        assert ec2x.read_until(b"\r\nOK\r\n").endswith(b"\r\nOK\r\n")
        ec2x.write(b"\n")
        ec2x.write(b"AT+QSSLSEND=0,5\r")
        ec2x.read_until(b"> ")                       # the prompt is out before the LF comes
        time.sleep(0.005)
        slow_write(ec2x, b"\nHELLO")
        assert ec2x.read_until(re.compile(rb"\r\n(SEND OK|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
        ec2x.seen(b'\r\n+QSSLURC: "recv",0\r\n')
        assert ec2x.at("AT+QSSLRECV=0,100") == b"\r\n+QSSLRECV: 5\r\nHELLO\r\n\r\nOK\r\n"
        assert bytes(server.conn.received) == b"HELLO"
        # nothing of the data fell back into command state: the port answers at once
        assert ec2x.at("AT") == b"\r\nOK\r\n"
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_late_lf_ends_the_line_for_qsecwrite(ml302):
    crlf_host(ml302)
    slow_write(ml302, b"AT+QSECWRITE=0\r\n")
    ml302.read_until(b"> ")
    slow_write(ml302, b"abc\x1a")
    answer = ml302.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))
    assert answer.startswith(b"\r\n+QSECWRITE: 3,"), answer      # 3 bytes: the LF was not stored


def host_reading(modem, out, waiting=lambda: 0):
    """Attach `out` with a host that reads when told: returns read(), which marks all output
    so far as read (the pty's FIONREAD count on the slave side, in the real port);
    waiting(): the host's bytes still in the pty (FIONREAD on the master)."""
    taken = [0]
    modem.attach(out.extend, port=StubPort(accepted=lambda: len(out),
                                           has_read=lambda mark: taken[0] >= mark, waiting=waiting))

    def read() -> None:
        taken[0] = len(out)
    return read


@pytest.mark.parametrize("first,read,later,lines", [
    # a CR LF host writing byte by byte: its LF follows its CR at once on a wire, so the first
    # byte LF after the prompt is the line's however the emulator's reads lag (CI under load)
    (list(b"ATE0\r\n"), False, 5.0, True),
    (list(b"ATE0\r\n"), True, 5.0, True),
    # a CR LF host writing whole lines that ends this one with CR alone, its LF written apart
    # (held up: a loaded machine, a GC pause): the line's while it has not read the prompt, up
    # to LF_UNREAD_WINDOWS windows (a host that never reads prompts, a delay() and then a
    # payload starting with LF, keeps its LF after that); once it read the prompt, data
    ([b"ATE0\r\n", b"AT\r\n"], False, 0.2, True),
    ([b"ATE0\r\n", b"AT\r\n"], False, 1.0, False),
    ([b"ATE0\r\n", b"AT\r\n"], True, 0.2, False),
    # a host seen ending its lines with CR alone: data once it can have seen the prompt (it
    # read it, or the window is over: a host that never reads prompts, a delay() and then a
    # payload starting with LF); within the window with the prompt unread, its line's (hosts
    # mix CR and CR LF: a CR-only init, then a driver writing CR LF lines byte by byte).
    # (An LF in the pty before the prompt went out is the line's however late: the next test.)
    ([b"ATE0\r", b"AT\r"], False, 0.2, False),
    ([b"ATE0\r", b"AT\r"], False, 0.01, True),
    ([b"ATE0\r", b"AT\r"], True, 0.01, False),
])
def test_an_lf_written_before_the_host_read_the_prompt_is_the_lines(first, read, later, lines):
    """Which first-byte LF after a prompt is the command line's late ending."""
    modem, out, clock = sans_io_modem(prime=False)
    host_read = host_reading(modem, out)
    for write in first:                          # the host's writes (ints: one byte each)
        modem.feed(bytes([write]) if isinstance(write, int) else write)
    host_read()
    modem.feed(b'AT+QFUPL="RAM:held",2\r')
    assert out.endswith(b"\r\nCONNECT\r\n")
    if read:
        host_read()
    clock[0] += later
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:held") == (b"ab" if lines else b"\na")


@pytest.mark.parametrize("waiting", [0, 1])
def test_an_lf_already_in_the_pty_when_the_prompt_is_out_is_the_lines(waiting):
    """A host that has ended its lines with CR alone, then writes "AT+QFUPL=...<CR><LF>" byte
    by byte: the emulator read the CR on its own and its LF was already waiting in the pty
    when CONNECT went out -- written before the prompt, it is the line's however late it is
    read (even if the host has read the prompt by then).  Not waiting yet: data, as from any
    CR-only host that has read its prompt."""
    modem, out, clock = sans_io_modem()                 # ATE0<CR> AT<CR>: a CR-only host
    read = host_reading(modem, out, waiting=lambda: waiting)
    modem.feed(b'AT+QFUPL="RAM:early",2\r')
    read()
    clock[0] += 1.0
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:early") == (b"ab" if waiting else b"\na")


def test_an_lf_the_host_wrote_after_the_prompt_went_out_is_data():
    """The pty is asked what waits *before* the prompt is written: a CR-only host quick to
    answer it -- its 1-byte payload an LF, in the pty by the time the write returned -- sent
    data (the full run saw a DTLS AT+QSSLSEND=0,1 of "\\n" wait for ever for its byte)."""
    modem, out, clock = sans_io_modem()                 # ATE0<CR> AT<CR>: a CR-only host
    read = host_reading(modem, out, waiting=lambda: 1 if out.endswith(b"CONNECT\r\n") else 0)
    modem.feed(b'AT+QFUPL="RAM:quick",1\r')
    read()
    modem.feed(b"\n")
    assert modem.files.read("RAM:quick") == b"\n"


@pytest.mark.parametrize("waiting", [1, 3])
def test_an_lf_alone_in_the_pty_when_the_prompt_is_out_is_the_lines_whatever_comes_with_it(waiting):
    """A byte-by-byte CR LF host whose line the lagging emulator read whole up to its CR (so it
    looks like a host writing whole lines); its LF, written on its own, was all the pty held
    when CONNECT went out, and the data it wrote after reading CONNECT are read together with
    that LF (CI saw it: the server got LF CR LF "CRLF first").  The LF is the line's.  Three
    bytes waiting ("\\nab" written in one go before the prompt, by a host that does not wait
    for it, from a host writing whole lines): data, as before."""
    modem, out, clock = sans_io_modem(prime=False)
    modem.feed(b"ATE0\r\n")                          # whole lines, CR LF
    read = host_reading(modem, out, waiting=lambda: waiting)
    modem.feed(b'AT+QFUPL="RAM:alone",2\r')
    read()
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert modem.files.read("RAM:alone") == (b"ab" if waiting == 1 else b"\na")


def test_held_up_lf_through_the_pty_is_not_upload_data(ec2x_on, emulator):
    """The same through the real pty (its slave side's unread bytes): a CR LF host writes its
    line's CR, its clock-stopped modem writes CONNECT, 0.2 s (4 windows) pass on the modem's
    clock, and only then the host writes its LF -- before reading anything."""
    host, port = ec2x_on
    crlf_host(host)
    host.write(b'AT+QFUPL="UFS:held.txt",3\r')
    deadline = time.monotonic() + 10
    while host.ser.in_waiting < len(b"\r\nCONNECT\r\n"):       # CONNECT waits, unread
        assert time.monotonic() < deadline
        time.sleep(0.002)
    emulator.advance(port, 0.2)                                    # 4 windows
    host.write(b"\n")
    emulator.wait_received(port, host.written)
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"abc")
    assert host.read_until(b"\r\nOK\r\n").startswith(b"\r\n+QFUPL: 3,")
    host.write(b'AT+QFDWL="UFS:held.txt"\r\n')
    assert host.read_until(b"\r\nOK\r\n").startswith(b"\r\nCONNECT\r\nabc\r\n+QFDWL: 3,")


def test_a_cr_only_host_may_start_its_data_with_lf():
    """A host whose lines end with CR alone sends no LF after them: its data may begin
    with one, however soon after the prompt."""
    modem, out, clock = sans_io_modem()       # sans_io_modem typed ATE0<CR> then AT<CR>
    modem.feed(b'AT+QFUPL="RAM:y",3\r')
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert modem.files.read("RAM:y") == b"\nab"


def test_first_line_of_a_new_host_gets_the_window():
    modem, out, clock = sans_io_modem(prime=False)
    modem.feed(b'AT+QFUPL="RAM:z",2\r')
    clock[0] += 0.01
    modem.feed(b"\n")                          # its own write: the CR LF's LF, late
    modem.feed(b"ab")
    assert modem.files.read("RAM:z") == b"ab"


@pytest.mark.parametrize("first_line", [False, True])
def test_a_whole_cr_only_line_then_lf_written_with_its_data_is_data(first_line):
    """A CR LF host (or one not known yet) writes one line whole with CR alone, then after
    the prompt its payload starting with LF in one write (ghuvrons/quectel-ec25's
    AT+QISEND): the LF is data -- its line's LF would have come with the line.  The same LF
    written on its own is still the line's late ending (a host writing CR and LF apart)."""
    modem, out, clock = sans_io_modem(prime=False)
    if not first_line:
        modem.feed(b"ATE0\r\n")                    # it ends its lines with CR LF
    modem.feed(b'AT+QFUPL="RAM:w",3\r')
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert modem.files.read("RAM:w") == b"\nab"
    modem.feed(b'AT+QFUPL="RAM:v",2\r')
    clock[0] += 0.001
    modem.feed(b"\n")
    modem.feed(b"ab")
    assert modem.files.read("RAM:v") == b"ab"


def test_a_host_seen_writing_cr_and_lf_apart_keeps_the_window_for_lf_with_data():
    """A byte-by-byte CR LF host (its CR and LF in separate writes) whose next line is read
    whole because the emulator lagged, and whose late LF is then read together with the data
    it wrote after the prompt: the LF is still the line's."""
    modem, out, clock = sans_io_modem(prime=False)
    for b in b"ATE0\r\n":                       # byte by byte: CR, then LF apart
        modem.feed(bytes([b]))
    modem.feed(b'AT+QFUPL="RAM:u",2\r')          # (lagging: the whole line in one read)
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert modem.files.read("RAM:u") == b"ab"
    # A late LF dropped after a prompt shows the same: a host that writes whole lines but
    # its LF apart.
    modem, out, clock = sans_io_modem(prime=False)
    modem.feed(b'AT+QFUPL="RAM:s",1\r')
    modem.feed(b"\n")
    modem.feed(b"s")
    modem.feed(b'AT+QFUPL="RAM:t",2\r')
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert (modem.files.read("RAM:s"), modem.files.read("RAM:t")) == (b"s", b"ab")


def test_a_host_seen_writing_a_line_in_parts_keeps_the_window_for_lf_with_data():
    """Whole lines with CR LF at first, then one command written byte by byte (a UART driver's
    AT+QSSLSEND): after that the host is a piecewise writer, and a later whole-read line whose
    LF comes with the data keeps the window."""
    modem, out, clock = sans_io_modem(prime=False)
    modem.feed(b"ATE0\r\n")                        # whole, CR LF together
    for b in b"AT\r":
        modem.feed(bytes([b]))                      # its text in parts
    modem.feed(b"\n")
    modem.feed(b'AT+QFUPL="RAM:p",2\r')             # (lagging: the whole line in one read)
    clock[0] += 0.001
    modem.feed(b"\nab")
    assert modem.files.read("RAM:p") == b"ab"


def test_lf_after_the_window_is_data():
    """Only a LF right after the CR is the line's; one a host sends later is data."""
    modem, out, clock = sans_io_modem()
    modem.feed(b'AT\r\nAT+QFUPL="RAM:x",2\r')     # a CR LF host ...
    clock[0] += 0.2                          # ... whose LF comes 200 ms later: past the window
    modem.feed(b"\nZ")
    assert modem.files.read("RAM:x") == b"\nZ"


def test_echo_of_the_line_ending_lf_never_follows_the_result(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    slow_write(host, b"AT\r\n")
    got = host.read_until(b"OK\r\n")
    assert got == b"AT\r\r\nOK\r\n"
    assert host.quiet_for(0.1) == b""        # no "\n" after the OK
    host.write(b"AT\r\n")                    # and the same when CR LF come in one write
    assert host.read_until(b"OK\r\n") == b"AT\r\r\nOK\r\n"
    assert host.quiet_for(0.1) == b""


# -- item 5: digits Python's isdigit() accepts but int() refuses -----------------------
@pytest.mark.parametrize("line", ["ATS\u00b2?", "ATS3=\u00b2", "ATE\u00b9", "AT+CMEE=\u00b2",
                                  "AT+QSSLCLOSE=\u00b3", "ATS\u0663?", "AT+CFUN=1,\u00b9"])
def test_non_ascii_digits_are_errors_not_stalls(ec2x, caplog, line):
    caplog.set_level(logging.INFO, logger="emulator")
    ec2x.write(line.encode("latin-1", "replace") + b"\r\nAT\r\n")
    answer = ec2x.read_until(b"OK\r\n", timeout=3)
    assert re.fullmatch(rb"\r\n(ERROR|\+CME ERROR: \d+)\r\n\r\nOK\r\n", answer), answer
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_non_ascii_digits_sans_io():
    modem, out, _ = sans_io_modem()
    for line in (b"ATS\xb2?\r", b"ATS3=\xb2\r", b"AT+CMEE=\xb9\r"):
        out.clear()
        modem.feed(line)
        assert bytes(out) == b"\r\nERROR\r\n", line


# -- item 6: a host that never reads ------------------------------------------------
def test_output_backlog_is_bounded(emulator, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="emulator.pty")
    port = emulator.add_modem("ec2x", state_dir=tmp_path / "s")
    import serial
    ser = serial.Serial(port.path, timeout=0)   # opened, never read: echo piles up
    try:
        limit = port.modem.profile["serial.output_backlog"]
        chunk = b"X" * 65536
        for _ in range(40):                      # 2.5 MiB of echo
            ser.write(chunk)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and emulator.run(lambda: port.port.backlog) < limit:
            time.sleep(0.02)
        time.sleep(0.3)
        assert emulator.run(lambda: port.port.backlog) <= limit
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        # the reader catches up: the modem still answers, and the newest bytes are kept
        ser.reset_input_buffer()
        ser.timeout = 0.05
        got = b""
        deadline = time.monotonic() + 10
        ser.write(b"\rATE0\r")
        while not got.endswith(b"ATE0\r\r\nOK\r\n") and time.monotonic() < deadline:
            got = (got + ser.read(65536))[-200:]
        assert got.endswith(b"ATE0\r\r\nOK\r\n")
    finally:
        ser.close()


# -- item 10: logs escape what the host sent and never show keys ----------------------
def test_rejected_psk_line_is_not_logged_verbatim(ec2x, caplog):
    caplog.set_level(logging.DEBUG, logger="emulator")
    assert ec2x.at('AT+QSSLCFG="psk",99,"ident","00112233445566778899secret"') == b"\r\nERROR\r\n"
    assert ec2x.at('AT+QSSLCFG="psk",1,"ident","00112233445566778899secret",9') == b"\r\nERROR\r\n"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "AT+QSSLCFG" in text                           # the rejection is logged ...
    assert "secret" not in text and "0011223344" not in text   # ... without the key


def test_log_lines_cannot_be_forged(ec2x, caplog):
    caplog.set_level(logging.DEBUG, logger="emulator")
    ec2x.write(b'AT+QSSLCFG="sni",1,"x\nCRITICAL root: forged"\r')
    ec2x.read_until(b"ERROR\r\n")
    ec2x.write(b"AT+QFOO=\x1b[31mred\r")
    ec2x.read_until(b"ERROR\r\n")
    for record in caplog.records:
        message = record.getMessage()
        assert "\n" not in message and "\x1b" not in message, message


# -- sans-IO helpers ----------------------------------------------------------------
def sans_io_modem(profile: str = "ec2x", prime: bool = True):
    """A modem with no loop and no pty; `clock[0]` is its monotonic time.  prime: the
    host has typed ATE0<CR> and AT<CR> (a host ending its lines with CR alone)."""
    clock = [1000.0]
    modem = Modem(load_profile(profile))
    modem.interpreter.strict = True               # an illegal mode transition raises
    modem.monotonic = lambda: clock[0]
    out = bytearray()
    modem.attach(out.extend)
    if prime:
        modem.feed(b"ATE0\rAT\r")
    out.clear()
    return modem, out, clock


# -- QIGETERROR after a form the command does not have -----------------------------------
@pytest.mark.parametrize("line", ["AT+QSSLSEND?", "AT+QSSLOPEN", "AT+QSSLCFG?", "AT+QSSLSTATE?",
                                  "AT+QSSLRECV", "AT+QSSLCLOSE?"])
def test_qigeterror_after_a_form_the_command_lacks(ec2x, line):
    assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"          # a success: QIGETERROR 0
    assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    assert ec2x.at(line) == b"\r\nERROR\r\n"
    assert ec2x.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"


def test_flow_controlled_port_holds_input_then_a_hang_up_frees_it(emulator, tmp_path):
    """AT+IFC=2,2: a host that pipelines commands and does not read is held back (no more
    input taken past 64 KiB of unread output, nothing dropped); when it closes the port,
    the next host is heard at once."""
    from emulator.testing.host import Host
    from tests.e2e.socket_support import wait_for
    port = emulator.add_modem("ec2x", state_dir=tmp_path / "s")
    host = Host(port.path)
    assert host.at("ATE0;+IFC=2,2").endswith(b"\r\nOK\r\n")
    ati = b"ATI\r" * 3000                               # ~150 KB of answers
    writer = threading.Thread(target=host.write, args=(ati,), daemon=True)
    writer.start()
    # (the kernel's pty buffers take up to ~68 KiB of the ~150 KB of answers first; on a
    # loaded machine 3000 commands may take a while: wait on the hold itself, generously)
    try:
        wait_for(lambda: emulator.run(lambda: port.modem.input_held("output")), timeout=60,
                 what="input held for output")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: backlog {emulator.run(lambda: port.port.backlog)}, "
                             f"host wrote {host.written}") from None
    taken = emulator.run(lambda: port.port.received)
    time.sleep(0.2)
    # Stopped at the first answer past 64 KiB; the backlog may shrink below it since, as the
    # kernel's pty buffer makes room late on a loaded machine (one full run saw 62000).
    held = emulator.run(lambda: port.port.backlog)
    assert 0 < held < 64 * 1024 + 200, held
    assert emulator.run(lambda: port.modem.input_held("output"))
    assert emulator.run(lambda: port.port.received) == taken      # no input taken meanwhile
    host.close()
    writer.join(5)
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the modem saw the hang-up")
    nxt = Host(port.path)
    try:
        assert nxt.at("AT", timeout=5) == b"\r\nOK\r\n"
    finally:
        nxt.close()
