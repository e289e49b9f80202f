"""Adversarial: what host programs do to the pty's line discipline and file handles.

Real users open the port with plain open(), `cat`, `echo AT > /dev/ttyX`, shell scripts after
`stty sane`, leave it cooked for the next program, change termios mid-session, send breaks,
try modem-control ioctls, hold the port from two processes, fork with the fd inherited...

The rule applied in every test: the emulated module sees what a module on a real UART would
see from such a host (a host tty with ECHO on sends the module's own output back into it; a
host's tcflow(TCIOFF) puts an XOFF byte on the wire; the pty carries 8 bits whatever c_cflag
says), the emulator never dies, loops unboundedly, hangs or drops the host's data, logs no
traceback, and the next well-behaved host (pyserial: raw mode) gets exact answers.

Defects found, fixed (emulator/io/transport.py _reset_line at each hang-up):
 - A line discipline left on the slave by a departed host (TIOCSETD; pppd/ldattach/slattach
   killed before restoring N_TTY) stays for every later host: the port is dead until the
   emulator restarts (pyserial cannot even open it).  On a real UART the tty is released at the
   final close and the next open starts with N_TTY.
 - Output stopped by an XOFF byte in the modem's output (binary TLS data read by a host whose
   tty has IXON) stays stopped after that host left: the next program's writes never reach the
   modem.  On a real UART the next open starts with a fresh, unstopped tty.
"""
from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest
import serial

from emulator.at.mode import Mode
from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"


# -- helpers ---------------------------------------------------------------------------------
def plain_open(path: str, nonblock: bool = True) -> int:
    """open() as a C program or a shell does it (no termios changes)."""
    return os.open(path, os.O_RDWR | os.O_NOCTTY | (os.O_NONBLOCK if nonblock else 0))


def make_cooked(fd: int, echo: bool = True, opost: bool = True) -> None:
    """`stty sane` (optionally -echo / -opost): canonical, ICRNL, IXON, ISIG, OPOST+ONLCR."""
    a = termios.tcgetattr(fd)
    a[0] = termios.BRKINT | termios.ICRNL | termios.IXON | termios.IMAXBEL
    a[1] = (termios.OPOST | termios.ONLCR) if opost else 0
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD | termios.HUPCL
    a[3] = (termios.ISIG | termios.ICANON | termios.IEXTEN | termios.ECHOE | termios.ECHOK
            | termios.ECHOCTL | termios.ECHOKE | (termios.ECHO if echo else 0))
    termios.tcsetattr(fd, termios.TCSANOW, a)


def make_raw(fd: int) -> None:
    a = termios.tcgetattr(fd)
    a[0] = 0
    a[1] = 0
    a[2] = (a[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8 | termios.CREAD
    a[3] = 0
    a[6][termios.VMIN] = 1
    a[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, a)


def write_all(fd: int, data: bytes, timeout: float = 5) -> None:
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view:
        assert time.monotonic() < deadline, f"host write stuck with {len(view)} bytes left"
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 0.05)


def _collect(fd: int, done, deadline: float) -> bytes:
    """What the fd gives until done(got) or the deadline."""
    got = b""
    while not done(got) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.02)[0]:
            try:
                got += os.read(fd, 65536)
            except (BlockingIOError, InterruptedError):
                pass
    return got


def read_until(fd: int, end: bytes | re.Pattern, timeout: float = 5) -> bytes:
    regex = end if isinstance(end, re.Pattern) else re.compile(re.escape(end))
    got = _collect(fd, regex.search, time.monotonic() + timeout)
    if not regex.search(got):
        raise AssertionError(f"timed out waiting for {regex.pattern!r}; got {got!r}")
    return got


def quiet(fd: int, seconds: float = 0.3) -> bytes:
    return _collect(fd, lambda got: False, time.monotonic() + seconds)


def received(emulator, port) -> int:
    return emulator.run(lambda: port.port.received)


def settled(emulator, port, still: float = 0.3, timeout: float = 4) -> int:
    """The count of host bytes the port has read, once it stopped changing for `still` s."""
    deadline = time.monotonic() + timeout
    last, since = received(emulator, port), time.monotonic()
    while time.monotonic() - since < still:
        assert time.monotonic() < deadline, "the port never stopped receiving"
        time.sleep(0.02)
        now = received(emulator, port)
        if now != last:
            last, since = now, time.monotonic()
    return last


def inq(fd: int) -> int:
    """FIONREAD: bytes the host could read now (canonical mode: of complete lines only)."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def wait_detached(emulator, port) -> None:
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 3, "the port to see the hang-up")


def wait_mode(emulator, port, mode: Mode) -> None:
    wait_for(lambda: emulator.run(lambda: port.modem.interpreter.mode) is mode, 3, f"mode {mode}")


def fresh_host_answers(path: str, line: str = "AT", expected: bytes = OK) -> None:
    host = Host(path)
    try:
        assert host.at(line, timeout=5) == expected
    finally:
        host.close()


def open_echo_socket(host: Host, cid: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{cid},"echo.example",443,0') == OK
    host.read_until(f"\r\n+QSSLOPEN: {cid},0\r\n".encode())


def cs(data: bytes) -> str:
    return f"{xor16(data):x}"          # AT+QFUPL / QFDWL: no leading zeros


def canonical(answer: bytes) -> bytes:
    """What a canonical-mode host with ICRNL reads of the modem's `answer`."""
    return answer.replace(b"\r", b"\n")


# -- ECHO on the slave: the module's own output comes back as input --------------------------
def test_cooked_slave_with_echo_gets_each_answer_once_and_the_echoed_answer_is_ignored(
        emulator, open_modem, strict_log):
    """ATE0 module, host tty after `stty sane`: the kernel echoes every answer back into the
    modem (CR -> LF by ICRNL, then LF -> CR LF by ONLCR).  A real module drops that text (it
    does not start with AT): one answer per command, nothing else, no ping-pong."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        make_cooked(fd, echo=True)
        base = received(emulator, port)
        for line, answer in ((b"AT+CGMI\r", b"\r\nQuectel\r\n\r\nOK\r\n"),
                             (b"AT+CSQ\r", b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"),
                             (b"AT\r", OK)):
            os.write(fd, line)
            assert read_until(fd, b"OK\n\n") == canonical(answer)
            # the modem read the line and the kernel's echo of its answer, then nothing more
            echo = answer.replace(b"\r", b"\n").replace(b"\n", b"\r\n")
            base += len(line) + len(echo)
            emulator.wait_received(port, base)
            assert settled(emulator, port) == base
            assert quiet(fd) == b""
        make_raw(fd)                       # a well-behaved program leaves the port raw
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    fresh_host_answers(port.path, "AT+CGMM", b"\r\nEC25\r\n\r\nOK\r\n")


def test_echo_pingpong_with_ate1_is_bounded_and_starves_no_other_modem(emulator, open_modem, strict_log):
    """Judgement call, as a real module does: ATE1 (the factory default) plus a host tty with
    ECHO on is the classic endless ping-pong (the module echoes every byte it receives in
    command state, the host's tty echoes that back).  What must hold: the loop only runs
    while the host reads (a stalled reader stalls it: bounded), other modems on the loop are
    served exactly meanwhile, it stops when the host turns ECHO off, no log flood, and the
    next host is answered exactly."""
    looping_host, port = open_modem("ec2x", echo=True)
    looping_host.close()
    other, _ = open_modem("ec2x")
    wait_detached(emulator, port)
    records_before = len(strict_log.records)
    fd = plain_open(port.path)
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            if select.select([fd], [], [], 0.02)[0]:
                try:
                    os.read(fd, 65536)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    return

    try:
        make_cooked(fd, echo=True)
        os.write(fd, b"AT\r")
        # a host that does not read: the tty's buffer fills, the echo stops, so does the loop
        first = settled(emulator, port, still=0.4)
        assert first > 3 and emulator.run(lambda: port.port.backlog) <= 64 * 1024
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            wait_for(lambda: received(emulator, port) > first + 10_000, 5, "the ping-pong to run")
            during = received(emulator, port)
            for _ in range(20):
                assert other.at("AT+CGMM", timeout=5) == b"\r\nEC25\r\n\r\nOK\r\n"
            # the other modem was served while the loop kept running (not because it stopped)
            wait_for(lambda: received(emulator, port) > during, 5, "the ping-pong to go on")
            a = termios.tcgetattr(fd)
            a[3] &= ~termios.ECHO
            termios.tcsetattr(fd, termios.TCSANOW, a)
            settled(emulator, port, still=0.4)      # the loop ended with the echo
        finally:
            stop.set()
            t.join(2)
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    fresh_host_answers(port.path, "AT", b"AT\r\r\nOK\r\n")
    assert other.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert len(strict_log.records) - records_before < 20, [r.getMessage() for r in strict_log.records]


def test_cooked_host_leaving_unread_lines_next_plain_opener_gets_no_stale_line(
        emulator, open_modem, strict_log):
    """A script leaves the port cooked with unread answers in the tty's line buffer and exits;
    the next program opens it plainly (inherits cooked mode, as stty settings persist on a
    real serial port) and must read only its own answer."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    make_cooked(fd, echo=False)
    base = received(emulator, port)
    os.write(fd, b"AT+CGMR;+CGSN;+CIMI\r")
    emulator.wait_received(port, base + 20)
    answer = b"\r\nEC25EFAR06A06M4G\r\n\r\n867698041234567\r\n\r\n460011234567890\r\n\r\nOK\r\n"
    # canonical mode: FIONREAD counts the bytes of complete lines waiting to be read
    wait_for(lambda: inq(fd) >= len(answer), 3, "the answer's lines to wait in the tty")
    assert inq(fd) == len(answer)
    os.close(fd)                                # unread: the answer's lines wait in the tty
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        assert termios.tcgetattr(fd)[3] & termios.ICANON     # cooked, as left
        os.write(fd, b"AT\r")
        assert read_until(fd, b"OK\n\n") == b"\n\nOK\n\n"
        assert quiet(fd) == b""
        make_raw(fd)
    finally:
        os.close(fd)


def test_cat_and_echo_shell_script_reads_the_answers_exactly(emulator, open_modem, strict_log):
    """`stty -F $P sane -echo; cat $P & echo AT+CGMI > $P`: the reader holds the port, each
    `echo` opens, writes 'AT+CGMI\\n' (ONLCR makes it CR LF) and closes.  The writers' closes
    are no hang-up; the reader gets every answer once."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        make_cooked(fd, echo=False)
        for cmd, answer in (("AT+CGMI", b"\r\nQuectel\r\n\r\nOK\r\n"),
                            ("AT+CSQ", b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"),
                            ("AT+CGMM", b"\r\nEC25\r\n\r\nOK\r\n")):
            subprocess.run(["sh", "-c", f"echo {cmd} > {shlex.quote(port.path)}"], check=True, timeout=5)
            assert read_until(fd, b"OK\n\n") == canonical(answer)
        assert quiet(fd) == b""
        assert emulator.run(lambda: port.port.attached)
        make_raw(fd)
    finally:
        os.close(fd)


def test_echo_redirect_on_a_raw_port_runs_nothing_and_leaves_no_half_line(emulator, open_modem,
                                                                          strict_log):
    """`echo AT+CGMR > $P` on the raw port writes 'AT+CGMR\\n': no CR, so a module runs
    nothing.  The half line must not stick to the next host's command (its 'AT\\r' is a plain
    AT).  (A real `echo` opens, writes and closes within the emulator's host poll, so its
    bytes are dropped unseen, as from a host that closed before it was seen; the writer here
    stays until the modem has read its line, then closes: the same bytes, surely read.)"""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    for _ in range(3):
        base = received(emulator, port)
        fd = plain_open(port.path)
        try:
            make_raw(fd)
            os.write(fd, b"AT+CGMR\n")
            emulator.wait_received(port, base + 8)
            assert quiet(fd, 0.2) == b""        # no line end: nothing ran
        finally:
            os.close(fd)
        wait_detached(emulator, port)
    host = Host(port.path)
    try:
        assert host.at("AT") == OK
        assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
        assert b"EC25EFAR" not in bytes(host.transcript)
    finally:
        host.close()


# -- control characters, XON/XOFF, ISIG --------------------------------------------------------
def test_control_bytes_from_a_cooked_host_reach_the_tls_peer_and_unread_data_waits(
        emulator, ec2x_strict, echo):
    """A cooked host (ISIG, IXON, ICANON, -echo) sends every byte value but LF (ONLCR would
    double it) through AT+QSSLSEND: ^C ^Z ^S ^Q ^\\ ^D ^U are data in the slave's output
    direction, the peer gets them exactly.  The same host then reads part of the echo with
    AT+QSSLRECV: its tty eats ^C/^S/^Q and mangles the rest (host-side, as on a real UART); it
    gives up.  The next raw host reads the rest exactly: nothing lost in the
    modem."""
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    host.close()
    wait_detached(emulator, port)
    payload = bytes(b for b in range(256) if b != 10) * 2
    fd = plain_open(port.path)
    try:
        make_cooked(fd, echo=False)
        os.write(fd, f"AT+QSSLSEND=0,{len(payload)}\r".encode())
        wait_mode(emulator, port, Mode.DATA)
        write_all(fd, payload)
        # canonical: the prompt line is only complete with SEND OK's line end
        assert read_until(fd, b'"recv",0\n\n') == canonical(
            b'\r\n> \r\nSEND OK\r\n\r\n+QSSLURC: "recv",0\r\n')
        assert echo.wait_received(len(payload)) == payload
        os.write(fd, b"AT+QSSLRECV=0,200\r")
        # what it reads is mangled by its own tty (^C flushes, ^U kills the line, ^S/^Q
        # vanish; the ^S stops this tty's output to the modem -- IXANY is off, so no later
        # byte but ^Q restarts it; make_raw's clearing IXON does), but the answer ends in OK;
        # it gives up
        read_until(fd, b"OK\n\n")
        make_raw(fd)
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    host = Host(port.path)
    try:
        rest = payload[200:]
        assert host.at("AT+QSSLRECV=0,1500") == (f"\r\n+QSSLRECV: {len(rest)}\r\n".encode() + rest
                                                 + b"\r\n\r\nOK\r\n")
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    finally:
        host.close()


def test_prompt_echoed_back_by_a_cooked_host_is_data_as_on_a_module(emulator, ec2x_strict, echo):
    """Judgement call, as a real module does: a host tty with ECHO on sends the module's
    '\\r\\n> ' straight back (ICRNL+ONLCR: '\\r\\n\\r\\n> '), and that arrives first, in the data
    prompt: it is the send's data (the first byte is CR, not a line-ending LF)."""
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        make_cooked(fd, echo=True)
        os.write(fd, b"AT+QSSLSEND=0,5\r")
        assert echo.wait_received(5) == b"\r\n\r\n>"
        # the "recv" URC goes to this host, before it leaves
        assert read_until(fd, b'+QSSLURC: "recv",0\n\n') == canonical(
            b'\r\n> \r\nSEND OK\r\n\r\n+QSSLURC: "recv",0\r\n')
        make_raw(fd)
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    host = Host(port.path)
    try:
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 5\r\n\r\n\r\n>\r\n\r\nOK\r\n"
        assert len(echo.conn.received) == 5
    finally:
        host.close()


def test_tcflow_tcioff_puts_xoff_xon_on_the_wire_as_bytes(emulator, ec2x_strict, echo):
    """tcflow(TCIOFF/TCION) sends the STOP/START characters to the modem.  The EC2x has no
    software flow control (AT+IFC 0 or 2): between commands they are garbage (dropped),
    inside a data prompt they are data, in place."""
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    fd = host.ser.fd
    termios.tcflow(fd, termios.TCIOFF)
    termios.tcflow(fd, termios.TCION)
    assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    host.write(b"AT+QSSLSEND=0,6\r")
    host.read_until(b"> ")
    host.write(b"ab")
    termios.tcflow(fd, termios.TCIOFF)
    host.write(b"cd")
    termios.tcflow(fd, termios.TCION)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert echo.wait_received(6) == b"ab\x13cd\x11"
    host.seen(b'+QSSLURC: "recv",0\r\n')
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 6\r\nab\x13cd\x11\r\n\r\nOK\r\n"


# -- termios and ioctls mid-session ------------------------------------------------------------
def _baud(fd):
    a = termios.tcgetattr(fd)
    a[4] = a[5] = termios.B9600
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _cs7_parity(fd):
    a = termios.tcgetattr(fd)
    a[2] = (a[2] & ~termios.CSIZE) | termios.CS7 | termios.PARENB | termios.PARODD
    termios.tcsetattr(fd, termios.TCSADRAIN, a)


def _crtscts(fd):
    a = termios.tcgetattr(fd)
    a[2] |= termios.CRTSCTS
    termios.tcsetattr(fd, termios.TCSAFLUSH, a)


def _modem_lines_noop_on_pty(fd):
    """DTR/RTS ioctls: a pty has no modem lines, Linux refuses them (ENOTTY, ignored), so
    this is a no-op: only that the calls do no harm is tested."""
    for req, bits in ((termios.TIOCMBIC, termios.TIOCM_DTR), (termios.TIOCMSET, 0),
                      (termios.TIOCMBIS, termios.TIOCM_DTR | termios.TIOCM_RTS)):
        try:
            fcntl.ioctl(fd, req, struct.pack("i", bits))
        except OSError:
            pass                               # a pty has no modem lines


def _break_noop_on_pty(fd):
    """tcsendbreak and TIOCSBRK/TIOCCBRK: a pty has no break, Linux accepts them and does
    nothing (an OSError elsewhere is ignored), so this is a no-op: only that the calls do no
    harm is tested."""
    termios.tcsendbreak(fd, 0)
    for req in (0x5427, 0x5428):               # TIOCSBRK, TIOCCBRK (Linux)
        try:
            fcntl.ioctl(fd, req)
        except OSError:
            pass


def _drain_flush_in(fd):
    termios.tcdrain(fd)
    termios.tcflush(fd, termios.TCIFLUSH)      # (what the modem sent and the host did not read)


def _stop_start_output(fd):
    termios.tcflow(fd, termios.TCOOFF)
    termios.tcflow(fd, termios.TCOON)


def _nonblock_toggle(fd):
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags ^ os.O_NONBLOCK)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)


@pytest.mark.parametrize("op", [_baud, _cs7_parity, _crtscts, _modem_lines_noop_on_pty, _break_noop_on_pty,
                                _drain_flush_in, _stop_start_output, _nonblock_toggle],
                         ids=lambda f: f.__name__.strip("_"))
def test_termios_and_ioctls_mid_data_prompt_leave_the_data_exact(emulator, ec2x_strict, echo, op):
    """Baud, CS7/parity, CRTSCTS (with TCSAFLUSH), DTR/RTS ioctls, a break (those two are
    no-ops on a pty: they only show the calls do no harm), tcdrain + tcflush(TCIFLUSH),
    output stop/start, O_NONBLOCK toggled, all between two halves of an AT+QSSLSEND's data.
    Judgement: a pty has no line coding, baud or modem lines (a real UART at 9600 or CS7 would
    garble, which the emulator cannot know); the 8-bit data reach the peer exactly and the
    modem answers on."""
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    data = bytes(range(256))
    host.write(f"AT+QSSLSEND=0,{len(data)}\r".encode())
    host.read_until(b"> ")
    host.write(data[:100])
    op(host.ser.fd)
    host.write(data[100:])
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert echo.wait_received(len(data)) == data
    host.seen(b'+QSSLURC: "recv",0\r\n')
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 256\r\n" + data + b"\r\n\r\nOK\r\n"
    make_raw(host.ser.fd)
    assert host.at("AT") == OK


def test_upload_through_a_cooked_nonblocking_port_with_xon_xoff_bytes_is_exact(emulator, open_modem,
                                                                              strict_log):
    """A program with O_NONBLOCK and the tty cooked minus echo/opost (IXON, ISIG, ICANON on)
    uploads 100 KB holding every byte value with AT+QFUPL: IXON/ISIG act on the modem's output
    only, the file is stored exactly (read back by a raw host)."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    blob = (bytes(range(256)) + b"\x11\x13\x03\x1a\x11\x13" * 40) * 200
    fd = plain_open(port.path)
    try:
        make_cooked(fd, echo=False, opost=False)
        os.write(fd, f'AT+QFUPL="x.bin",{len(blob)}\r'.encode())
        got = read_until(fd, b"CONNECT\n")
        write_all(fd, blob)
        got += read_until(fd, b"OK\n\n")
        assert got == canonical(f"\r\nCONNECT\r\n\r\n+QFUPL: {len(blob)},{cs(blob)}\r\n\r\nOK\r\n".encode())
        make_raw(fd)
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    host = Host(port.path)
    try:
        host.write(b'AT+QFDWL="x.bin"\r')
        expected = (b"\r\nCONNECT\r\n" + blob
                    + f"\r\n+QFDWL: {len(blob)},{cs(blob)}\r\n\r\nOK\r\n".encode())
        assert host.read_exactly(len(expected)) == expected
    finally:
        host.close()


# -- several handles on the slave -------------------------------------------------------------
CHILD = r"""
import os, sys, select, time
fd = int(sys.argv[1])
sys.stdin.readline()                      # the parent has closed its own handles
os.write(fd, b"56789")
got = b""
deadline = time.monotonic() + 10
while b'+QSSLURC: "recv",0\r\n' not in got and time.monotonic() < deadline:
    if select.select([fd], [], [], 0.05)[0]:
        got += os.read(fd, 100)
sys.stdout.write(repr(got))
"""


def test_fd_inherited_by_a_child_keeps_the_session_when_the_parent_and_its_dup_close(
        emulator, ec2x_strict, echo):
    """The parent opens the port, starts a send, dups the fd, forks a child that inherits
    it, then closes both its handles: the child still holds the slave, so no hang-up; it
    finishes the data and gets SEND OK.  The peer gets the 10 bytes once; when the child
    exits the next host is answered exactly."""
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path, nonblock=False)
    make_raw(fd)
    os.write(fd, b"AT+QSSLSEND=0,10\r")
    assert read_until(fd, b"> ") == b"\r\n> "
    os.write(fd, b"01234")
    dup = os.dup(fd)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(dup)], pass_fds=[dup],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        os.close(fd)
        os.close(dup)
        assert emulator.run(lambda: port.port.attached)
        out, _ = child.communicate("go\n", timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # (the peer's echo comes back: its URC reaches the child before it exits)
    assert out == repr(b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",0\r\n')
    assert echo.wait_received(10) == b"0123456789"
    wait_detached(emulator, port)
    host = Host(port.path)
    try:
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 10\r\n0123456789\r\n\r\nOK\r\n"
    finally:
        host.close()


def test_one_process_reads_another_writes_with_printf(emulator, open_modem, strict_log):
    """A raw reader holds the port; separate `printf` processes open, write a line and close
    (the classic monitor + sender split).  No hang-up, every answer once, in order."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        make_raw(fd)
        got = b""
        for cmd in ("AT+CGMI", "AT+CSQ", "ATS7=45;S7?", "AT+CGMM"):
            subprocess.run(["sh", "-c", f"printf '{cmd}\\r' > {shlex.quote(port.path)}"], check=True,
                           timeout=5)
            got += read_until(fd, b"OK\r\n")
        assert got == (b"\r\nQuectel\r\n\r\nOK\r\n\r\n+CSQ: 24,99\r\n\r\nOK\r\n\r\n045\r\n\r\nOK\r\n"
                       b"\r\nEC25\r\n\r\nOK\r\n")
        assert quiet(fd) == b""
    finally:
        os.close(fd)


VHANGUP = r"""
import ctypes, os, signal, sys
signal.signal(signal.SIGHUP, signal.SIG_IGN)
os.setsid()
fd = os.open(sys.argv[1], os.O_RDWR)       # no O_NOCTTY: the port becomes its controlling tty
rc = ctypes.CDLL(None, use_errno=True).vhangup()
print(rc, ctypes.get_errno())
"""


def test_vhangup_by_a_getty_like_host_mid_upload_abandons_it_and_the_next_host_is_answered(
        emulator, open_modem, strict_log):
    """A getty-like program (setsid, opens the port as its controlling tty, vhangup()) while
    another host is inside AT+QFUPL's CONNECT: every handle is hung up, the emulator sees the
    hang-up, abandons the upload (nothing stored) and answers the next host exactly.
    (Judgement, reported: the pty resets its termios to cooked+ECHO at a vhangup, a real UART
    keeps them; pyserial sets its own, so it is unaffected.)"""
    host, port = open_modem("ec2x")
    host.write(b'AT+QFUPL="v.bin",10\r')
    host.read_until(b"CONNECT\r\n")
    host.write(b"abcd")
    emulator.wait_received(port, host.written)
    out = subprocess.run([sys.executable, "-c", VHANGUP, port.path], capture_output=True, text=True,
                         timeout=10)
    if not out.stdout.startswith("0 "):
        pytest.skip(f"vhangup not permitted here: {out.stdout or out.stderr}")
    with pytest.raises((serial.SerialException, OSError)):
        host.write(b"efghij")                   # its handle is dead
    host.close()
    wait_detached(emulator, port)
    host = Host(port.path)
    try:
        assert host.at("AT") == OK
        assert host.at('AT+QFLST="*"') == OK
        assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
    finally:
        host.close()


# -- per-open tty state a departed host leaves behind ------------------------------------------
# Was a bug, fixed (transport._reset_line at the hang-up): A line discipline a departed host set on
# the slave (TIOCSETD, e.g. pppd/slattach killed before restoring N_TTY) stays for every later host:
# the emulator keeps the master open, so the slave tty is never released; pyserial's open then fails
# (tcgetattr EINVAL) and the modem's answers vanish in the ldisc until the emulator restarts. A real
# UART's tty is released at the final close and the next open starts with N_TTY; PtyPort's hang-up
# handling (it opens the slave anyway to flush) does not restore N_TTY.
def test_line_discipline_left_by_a_departed_host_does_not_kill_the_port(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    try:
        for ldisc in (27, 3, 21, 1):            # N_NULL, N_PPP, N_GSM0710, N_SLIP: what the kernel has
            try:
                fcntl.ioctl(fd, termios.TIOCSETD, struct.pack("i", ldisc))
                break
            except OSError:
                continue
        else:
            pytest.skip("no line discipline other than N_TTY available")
        wait_for(lambda: emulator.run(lambda: port.port.attached), 3, "the port to see the host")
    finally:
        os.close(fd)                            # killed before it could restore N_TTY
    wait_detached(emulator, port)
    fresh_host_answers(port.path, "AT+CGMI", b"\r\nQuectel\r\n\r\nOK\r\n")


# Was a bug, fixed (transport._reset_line at the hang-up): An XOFF (0x13) in the modem's output,
# read by a host whose tty has IXON (binary TLS data via AT+QSSLRECV), stops the slave's output;
# after that host closed the port the stop persists (the slave tty lives as long as the emulator's
# master), so the next program that opens the port without touching termios cannot send anything
# (write EAGAIN / blocks forever). A real UART's next open starts with a fresh, unstopped tty; the
# emulator's hang-up handling (its brief slave open) does not restart output (tcflow TCOON does not
# undo an XOFF stop; clearing IXON for a moment does).
def test_xoff_in_data_read_by_a_departed_host_does_not_gag_the_next_host(emulator, ec2x_strict, echo):
    host, advance, port = ec2x_strict
    open_echo_socket(host)
    assert host.send_data(0, b"hi\x13") == b"\r\nSEND OK\r\n"
    assert echo.wait_received(3) == b"hi\x13"
    host.seen(b'+QSSLURC: "recv",0\r\n')
    host.close()
    wait_detached(emulator, port)
    fd = plain_open(port.path)
    a = termios.tcgetattr(fd)
    a[0] |= termios.IXON                        # `stty -icanon -echo`: IXON stays as it was set
    termios.tcsetattr(fd, termios.TCSANOW, a)
    os.write(fd, b"AT+QSSLRECV=0,1500\r")
    assert read_until(fd, b"OK\r\n") == b"\r\n+QSSLRECV: 3\r\nhi\r\n\r\nOK\r\n"    # (the tty ate the XOFF)
    os.close(fd)
    wait_detached(emulator, port)
    fd = plain_open(port.path)                   # the next run of the same program
    try:
        write_all(fd, b"AT+CGMI\r")
        assert read_until(fd, b"OK\r\n") == b"\r\nQuectel\r\n\r\nOK\r\n"
    finally:
        a = termios.tcgetattr(fd)
        a[0] &= ~termios.IXON                   # (releases the stop for the fixtures' teardown)
        termios.tcsetattr(fd, termios.TCSANOW, a)
        os.close(fd)


# From a review of _reset_line: two more per-open states a departed host leaves on the slave.
TIOCGEXCL = 0x80045440                          # _IOR('T', 0x40, int) (Linux >= 3.8)


def departed_host_leaves(emulator, port, leave) -> None:
    """A plain host opens the port, is seen, does leave(fd) and exits without undoing it."""
    fd = plain_open(port.path)
    try:
        wait_for(lambda: emulator.run(lambda: port.port.attached), 3, "the port to see the host")
        leave(fd)
    finally:
        os.close(fd)
    wait_detached(emulator, port)


def test_exclusive_mode_left_by_a_departed_host_is_cleared(emulator, open_modem, strict_log):
    """TIOCEXCL (Qt's QSerialPort and gpsd set it) left by a host that died: every later
    open but root's would fail with EBUSY."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    departed_host_leaves(emulator, port, lambda fd: fcntl.ioctl(fd, termios.TIOCEXCL))
    fd = plain_open(port.path)                  # (root opens an exclusive tty anyway)
    try:
        assert struct.unpack("i", fcntl.ioctl(fd, TIOCGEXCL, b"\0" * 4))[0] == 0
    finally:
        os.close(fd)
    wait_detached(emulator, port)
    fresh_host_answers(port.path, "AT+CGMI", b"\r\nQuectel\r\n\r\nOK\r\n")


def test_output_stopped_with_tcooff_by_a_departed_host_is_restarted(emulator, open_modem, strict_log):
    """tcflow(TCOOFF) left by a host that died: the next program's writes would never reach
    the modem (clearing IXON does not restart a TCOOFF stop; TCOON does)."""
    host, port = open_modem("ec2x")
    host.close()
    wait_detached(emulator, port)
    departed_host_leaves(emulator, port, lambda fd: termios.tcflow(fd, termios.TCOOFF))
    fresh_host_answers(port.path, "AT+CGMI", b"\r\nQuectel\r\n\r\nOK\r\n")
