"""Adversarial tests of two new features, over the pty as host software (and hostile hosts)
drive them:

* the EC2x open-file commands AT+QFOPEN / QFOPEN? / QFREAD / QFWRITE / QFSEEK / QFPOSITION /
  QFTUCAT / QFCLOSE (docs/behaviour.md, "Files");
* the staggered start-up URCs after AT+CFUN=1,1 or the control API's reboot, the SIM
  answering +CME ERROR: 14 until +CPIN: READY (docs/behaviour.md, "Identity, network, clock").

Chained lines, CR LF and byte-at-a-time hosts, ATV0/ATQ1/CMEE/S3/S4, data that looks like
commands, large paced reads a host reads late or in odd pieces, hang-ups and reboots in the
middle of a transfer, the RAM drive, the file limits, odd drive-name case, two reboots in a
row, commands between RDY and +CPIN: READY, the ML302.  Every test runs with a log that may
carry no traceback or error (strict_log / ec2x_strict / ml302_strict).

Three bugs found here were fixed in the working tree while this file was written (their five
tests failed on 45a44d2 and pass now; the comments above them say what was wrong); tests of
a bug not fixed yet would be marked xfail(strict=True)."""
from __future__ import annotations

import os
import random
import re
import time

from emulator.testing.host import Host
from tests.e2e.answer_support import answer_is

OK = b"\r\nOK\r\n"
BUSY = b"\r\n+CME ERROR: 14\r\n"
H = 1027                                  # the EC2x profile's files.first_handle
BOOT = (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
        b"\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n")


def cme(code: int) -> bytes:
    return b"\r\n+CME ERROR: %d\r\n" % code


def urc(line: bytes) -> bytes:
    return b"\r\n" + line + b"\r\n"


def qfopen(host: Host, name: str, mode: int | None = None) -> int:
    answer = host.at(f'AT+QFOPEN="{name}"' + ("" if mode is None else f",{mode}"))
    m = re.fullmatch(rb"\r\n\+QFOPEN: (\d+)\r\n\r\nOK\r\n", answer)
    assert m, answer
    return int(m.group(1))


def qfwrite(host: Host, handle: int, data: bytes, end: bytes = b"\r") -> bytes:
    host.write(f"AT+QFWRITE={handle},{len(data)}".encode() + end)
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(data)
    return host.read_until(OK, timeout=10)


def read_answer(host: Host, line: str, timeout: float = 10) -> bytes:
    """A QFREAD answer read by its count: (data), the OK after it checked."""
    host.write(line + "\r")
    head = host.read_until(re.compile(rb"\r\nCONNECT (\d+)\r\n|\r\n\+CME ERROR: \d+\r\n"), timeout=timeout)
    m = re.search(rb"CONNECT (\d+)\r\n$", head)
    assert m, head
    data = host.read_exactly(int(m.group(1)), timeout=timeout)
    assert host.read_exactly(len(OK), timeout=timeout) == OK
    return data


def fill(host: Host, name: str, data: bytes) -> int:
    """Open `name` (emptied) and write `data` through the handle; returns the handle."""
    h = qfopen(host, name, 1)
    assert qfwrite(host, h, data) == f"\r\n+QFWRITE: {len(data)},{len(data)}\r\n".encode() + OK
    return h


def wait_boot(host: Host, timeout: float = 5) -> bytes:
    return host.read_until(b"+QIND: PB DONE\r\n", timeout=timeout)


# -- open files: chains, names, limits ------------------------------------------------------

def test_chained_open_then_read_opens_the_file_and_ends_the_line_at_402(ec2x, strict_log):
    # The brief's example: the QFOPEN's line is out before the error, which ends the line.
    assert ec2x.at('AT+QFOPEN="a";+QFREAD=1027;+QFOPEN="b"') == b"\r\n+QFOPEN: 1027\r\n" + cme(402)
    assert ec2x.at("AT+QFOPEN?") == b'\r\n+QFOPEN: "a",1027,0\r\n' + OK      # b never ran
    assert qfwrite(ec2x, H, b"hello") == b"\r\n+QFWRITE: 5,5\r\n" + OK
    # reads chained with other commands: the data run into the next command's text, one OK
    ec2x.write(f"AT+QFSEEK={H},0;+QFREAD={H},2;+QFPOSITION={H};+QFREAD={H}\r")
    assert ec2x.read_until(OK, timeout=5) == (b"\r\nCONNECT 2\r\nhe\r\n+QFPOSITION: 2\r\n"
                                              b"\r\nCONNECT 3\r\nllo" + OK)
    assert ec2x.at(f"AT+QFCLOSE={H};+QFCLOSE={H}") == cme(416)              # closed by the first


def test_drive_prefix_case_and_names(ec2x, strict_log):
    assert qfopen(ec2x, "ram:x") == H
    for other in ("RAM:x", "Ram:x", "rAm:x"):
        assert ec2x.at(f'AT+QFOPEN="{other}",2') == cme(426), other       # the same file
    assert qfopen(ec2x, "uFs:y") == H + 1
    assert ec2x.at('AT+QFOPEN="y"') == cme(426)
    assert qfopen(ec2x, "RAM:X") == H + 2                                 # the name keeps its case
    assert qfopen(ec2x, "RAM:a;b,c") == H + 3                              # ';' and ',' in quotes
    for bad in ("UFS:", "ram:", "ram :z", "RAMX:z", ":z", "a:b:c", " x", "x ", "ufs:*", "RAM:x?",
                "../x", "x" * 81):
        assert ec2x.at(f'AT+QFOPEN="{bad}"') == cme(406), bad
    assert ec2x.at("AT+QFOPEN?") == (b'\r\n+QFOPEN: "RAM:x",1027,0\r\n+QFOPEN: "y",1028,0\r\n'
                                     b'+QFOPEN: "RAM:X",1029,0\r\n+QFOPEN: "RAM:a;b,c",1030,0\r\n' + OK)
    assert ec2x.at('AT+QFDEL="ram:?"') == cme(426)                        # a pattern matching one
    assert ec2x.at('AT+QFLST="RAM:*"') == (b'\r\n+QFLST: "RAM:X",0\r\n+QFLST: "RAM:a;b,c",0\r\n'
                                           b'+QFLST: "RAM:x",0\r\n' + OK)
    ec2x.write('AT+QFDWL="ufs:y"\r')
    assert ec2x.read_until(b"\r\n+CME ERROR: 426\r\n", timeout=5) == cme(426)


def test_file_count_and_open_limits(ec2x, strict_log):
    for i in range(64):                                                   # the drive's 64 files
        h = qfopen(ec2x, f"f{i}", 1)
        assert ec2x.at(f"AT+QFCLOSE={h}") == OK
    assert ec2x.at('AT+QFOPEN="one-more"') == cme(403)                    # cannot create a 65th
    assert ec2x.at('AT+QFOPEN="one-more",1') == cme(403)
    assert ec2x.at('AT+QFOPEN="one-more",2') == cme(405)
    handles = [qfopen(ec2x, f"f{i}", 2) for i in range(10)]               # existing ones open
    assert handles == list(range(H, H + 10))
    assert ec2x.at('AT+QFOPEN="f10"') == cme(413)
    assert ec2x.at('AT+QFOPEN="RAM:new"') == cme(413)
    assert ec2x.at('AT+QFLST="RAM:*"') == OK                               # 413 created nothing
    assert ec2x.at(f"AT+QFCLOSE={H + 4}") == OK
    assert qfopen(ec2x, "RAM:new") == H + 4                               # the lowest free one


def test_huge_and_malformed_numbers(ec2x, strict_log):
    h = fill(ec2x, "n.bin", b"0123456789")
    for line, answer in ((f"AT+QFREAD={h},2147483648", cme(400)), ("AT+QFREAD=2147483648", cme(400)),
                         ("AT+QFREAD=99999999999999999999", cme(400)), ("AT+QFREAD=2147483647", cme(416)),
                         (f"AT+QFSEEK={h},2147483647", cme(401)), (f"AT+QFSEEK={h},2147483647,2", cme(401)),
                         (f"AT+QFWRITE={h},2147483647", cme(403)), (f"AT+QFWRITE={h},11000000", cme(403)),
                         (f"AT+QFWRITE={h},1,65536", cme(400)), (f'AT+QFREAD="{h}"', cme(400)),
                         (f"AT+QFREAD={h},-1", cme(400)), ("AT+QFREAD=,1", cme(400)),
                         ("AT+QFREAD", b"\r\nERROR\r\n"), ("AT+QFCLOSE", b"\r\nERROR\r\n")):
        assert ec2x.at(line) == answer, line
    assert ec2x.at(f"AT+QFSEEK= {h} , 4 ;+QFPOSITION={h}") == b"\r\n+QFPOSITION: 4\r\n" + OK
    assert read_answer(ec2x, f"AT+QFREAD={h},2147483647") == b"456789"  # a length past the end


def test_write_to_the_ram_drive_up_to_its_capacity(ec2x, strict_log):
    h = qfopen(ec2x, "RAM:full")
    assert ec2x.at(f"AT+QFWRITE={h},2000001") == cme(403)                 # ram_capacity 2,000,000
    data = os.urandom(2_000_000)
    ec2x.write(f"AT+QFWRITE={h},{len(data)},10\r")
    assert ec2x.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    ec2x.write(data)
    assert ec2x.read_until(OK, timeout=20) == b"\r\n+QFWRITE: 2000000,2000000\r\n" + OK
    assert ec2x.at('AT+QFLDS="RAM"') == b"\r\n+QFLDS: 0,2000000\r\n" + OK
    assert ec2x.at(f"AT+QFWRITE={h},1") == cme(403)                       # at the end: no room
    assert ec2x.at(f"AT+QFSEEK={h},1,2") == OK
    assert qfwrite(ec2x, h, b"Z") == b"\r\n+QFWRITE: 1,2000000\r\n" + OK  # overwriting fits
    assert ec2x.at(f"AT+QFSEEK={h},1000000;+QFTUCAT={h}") == OK
    assert ec2x.at('AT+QFLDS="RAM"') == b"\r\n+QFLDS: 1000000,2000000\r\n" + OK
    assert read_answer(ec2x, f"AT+QFSEEK={h},3,2;+QFREAD={h}") == data[999_997:1_000_000]


# -- QFWRITE data that look like everything else ---------------------------------------------

def test_qfwrite_data_that_look_like_commands_escapes_and_line_ends(ec2x, strict_log):
    h = qfopen(ec2x, "RAM:w.bin")
    assert ec2x.at("ATE1") == OK                                           # echo from the next line
    data = (b"\r\nAT+CFUN=1,1\r\n+++\x1a\x1bAT+QFCLOSE=1027\rAT\r\n\r\nOK\r\nA/"
            b"+QFWRITE: 9,9\r\n" + bytes(range(256)))
    ec2x.write(f"AT+QFWRITE={h},{len(data)}\r\n")                          # a CR LF host
    assert ec2x.read_until(b"CONNECT\r\n", timeout=5) == f"AT+QFWRITE={h},{len(data)}\r\r\nCONNECT\r\n".encode()
    time.sleep(0.1)                                                        # +++ with guard times
    assert data[15:18] == b"+++"
    ec2x.write(data[:15])
    time.sleep(1.1)
    ec2x.write(data[15:18])                                                # "+++" alone
    time.sleep(1.1)
    ec2x.write(data[18:])
    # never echoed (data mode), nothing run (the handle and the RAM file are still there)
    assert ec2x.read_until(OK, timeout=5) == f"\r\n+QFWRITE: {len(data)},{len(data)}\r\n".encode() + OK
    assert ec2x.at("AT+QFOPEN?") == b'AT+QFOPEN?\r\r\n+QFOPEN: "RAM:w.bin",1027,0\r\n' + OK
    ec2x.write(f"AT+QFSEEK={h},0\r\n")
    assert ec2x.read_until(OK, timeout=5) == f"AT+QFSEEK={h},0\r".encode() + OK
    assert read_answer(ec2x, f"AT+QFREAD={h}")[-len(data):] == data


def test_qfwrite_crlf_host_data_starting_with_lf_and_trailing_commands(ec2x, strict_log):
    h = qfopen(ec2x, "lf.bin")
    # the line's LF written with it is the line's; the data may then start with LF
    assert qfwrite(ec2x, h, b"\n\nab", end=b"\r\n") == b"\r\n+QFWRITE: 4,4\r\n" + OK
    # bytes past the length are the next command, in the same write
    ec2x.write(f"AT+QFWRITE={h},3\r\n")
    ec2x.read_until(b"CONNECT\r\n", timeout=5)
    ec2x.write(f"xyzAT+QFPOSITION={h}\r\n")
    assert ec2x.read_until(b"+QFPOSITION: 7\r\n" + OK, timeout=5) == (
        b"\r\n+QFWRITE: 3,7\r\n" + OK + b"\r\n+QFPOSITION: 7\r\n" + OK)
    # the rest of a line whose command opens a data prompt is neither data nor run
    ec2x.write(f"AT+QFWRITE={h},2;+QFCLOSE={h}\r")
    ec2x.read_until(b"CONNECT\r\n", timeout=5)
    ec2x.write(b"!!")
    assert ec2x.read_until(OK, timeout=5) == b"\r\n+QFWRITE: 2,9\r\n" + OK
    assert read_answer(ec2x, f"AT+QFSEEK={h},0;+QFREAD={h}") == b"\n\nabxyz!!"


def test_qfwrite_one_byte_at_a_time_crlf(ec2x, strict_log):
    h = qfopen(ec2x, "bw.bin")
    # A test descheduled between two one-byte writes sends its LF more than 50 ms after the CR
    # (a loaded machine): the modem first sees a CR LF host writing in pieces (CR, its OK, then
    # the LF), whose line LF is then the line's however late it comes (docs/behaviour.md).
    ec2x.write(b"AT\r")
    assert ec2x.read_until(OK, timeout=5) == OK
    ec2x.write(b"\n")
    for byte in f"AT+QFWRITE={h},6\r\n".encode():
        ec2x.write(bytes([byte]))
    assert ec2x.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    time.sleep(0.1)                                                        # past the LF window
    for byte in b"\nA\rT\x1a\n":
        ec2x.write(bytes([byte]))
    assert ec2x.read_until(OK, timeout=5) == b"\r\n+QFWRITE: 6,6\r\n" + OK
    for byte in f"AT+QFSEEK={h},0;+QFREAD={h}\r\n".encode():
        ec2x.write(bytes([byte]))
    assert ec2x.read_until(OK, timeout=5) == b"\r\nCONNECT 6\r\n\nA\rT\x1a\n" + OK
    assert ec2x.quiet_for(0.2) == b""                                     # no stray LF


# -- framing settings --------------------------------------------------------------------------

def test_qfread_and_qfwrite_under_atv0_cmee_and_atq1(ec2x, strict_log):
    h = fill(ec2x, "v.bin", b"\r\n0\r")                                   # data that look like codes
    ec2x.write(f"ATV0;+QFSEEK={h},0;+QFREAD={h},3;+QFREAD={h}\r")
    answer_is(ec2x, b"1\r\r\n01\r\r0\r")
    ec2x.write(f"AT+QFREAD={h}\r")
    answer_is(ec2x, b"+CME ERROR: 402\r\n")                  # +CME keeps its words
    ec2x.write(f"AT+QFWRITE={h},2\r")
    answer_is(ec2x, b"1\r")
    ec2x.write(b"ok")
    answer_is(ec2x, b"+QFWRITE: 2,6\r\n0\r")
    ec2x.write(f"AT+CMEE=2;+QFREAD={h}\r")
    answer_is(ec2x, b"+CME ERROR: read zero byte\r\n")
    ec2x.write(f"ATV1;+CMEE=0;+QFREAD={h}\r")
    answer_is(ec2x, b"\r\nERROR\r\n")
    ec2x.write(b"AT+CMEE=1;+QFCLOSE=5\r")
    answer_is(ec2x, cme(416))
    # ATQ1: no CONNECT, no OK, no +CME ERROR; information text stays
    ec2x.write(f"ATQ1;+QFWRITE={h},1\r")
    assert ec2x.quiet_for(0.3) == b""
    ec2x.write(b"!")
    answer_is(ec2x, b"\r\n+QFWRITE: 1,7\r\n")
    ec2x.write(f"AT+QFREAD={h}\r")
    assert ec2x.quiet_for(0.3) == b""
    ec2x.write(f"AT+QFPOSITION={h}\r")
    answer_is(ec2x, b"\r\n+QFPOSITION: 7\r\n")
    ec2x.write(b"ATQ0\r")
    answer_is(ec2x, OK)


def test_qfread_and_qfwrite_with_s3_and_s4_changed(ec2x, strict_log):
    h = fill(ec2x, "s.bin", b"ab")
    ec2x.write(b"ATS3=35\r")
    answer_is(ec2x, b"#\nOK#\n")
    ec2x.write(f"AT+QFWRITE={h},2#".encode())
    answer_is(ec2x, b"#\nCONNECT#\n")
    ec2x.write(b"#\r")                                                    # S3 and CR: data
    answer_is(ec2x, b"#\n+QFWRITE: 2,4#\n#\nOK#\n")
    ec2x.write(f"AT+QFSEEK={h},0;+QFREAD={h}#".encode())
    answer_is(ec2x, b"#\nCONNECT 4#\nab#\r#\nOK#\n")
    ec2x.write(b"ATS3=13;S4=64#")
    answer_is(ec2x, b"\r@OK\r@")
    ec2x.write(f"AT+QFSEEK={h},1;+QFREAD={h},2\r".encode())
    answer_is(ec2x, b"\r@CONNECT 2\r@b#\r@OK\r@")
    ec2x.write(b"ATS4=10\r")
    answer_is(ec2x, OK)


# -- large reads: paced, read late, read in odd pieces, pipelined ------------------------------

def test_large_qfread_read_late_and_in_odd_pieces(ec2x, strict_log):
    data = os.urandom(700_000)
    h = fill(ec2x, "RAM:big", data)
    ec2x.write(f"AT+QFSEEK={h},0;+QFREAD={h};+QFPOSITION={h}\r")
    time.sleep(1.0)                                                        # the host reads late
    assert ec2x.read_until(b"CONNECT 700000\r\n", timeout=5) == b"\r\nCONNECT 700000\r\n"
    tail = b"\r\n+QFPOSITION: 700000\r\n" + OK
    rnd = random.Random(5)
    got = bytearray(ec2x.pending)
    ec2x.pending.clear()
    deadline = time.monotonic() + 20
    while len(got) < len(data) + len(tail) and time.monotonic() < deadline:
        got += ec2x.ser.read(rnd.choice((1, 7, 333, 4095, 65537)))       # odd-sized reads
        if rnd.random() < 0.05:
            time.sleep(0.05)                                               # and pauses
    assert bytes(got[:len(data)]) == data
    assert bytes(got[len(data):]) == tail
    assert ec2x.quiet_for(0.2) == b""
    assert ec2x.at(f"AT+QFREAD={h}") == cme(402)


def test_pipelined_reads_of_a_host_that_reads_late_lose_nothing(ec2x, strict_log):
    data = os.urandom(400_000)
    h = fill(ec2x, "p.bin", data)
    assert ec2x.at(f"AT+QFSEEK={h},0") == OK
    ec2x.write(f"AT+QFREAD={h},50000\r\n".encode() * 9)                   # 450 KB asked for
    time.sleep(0.8)
    out = bytearray()
    for _ in range(8):
        head = ec2x.read_until(re.compile(rb"\r\nCONNECT \d+\r\n"), timeout=10)
        n = int(re.search(rb"CONNECT (\d+)", head).group(1))
        out += ec2x.read_exactly(n, timeout=10)
        assert ec2x.read_exactly(len(OK), timeout=10) == OK
    assert bytes(out) == data
    assert ec2x.read_until(cme(402), timeout=10) == cme(402)              # the ninth: at the end


def test_a_urc_during_a_paced_read_comes_after_its_ok(emulator, ec2x, strict_log):
    data = os.urandom(300_000)
    h = fill(ec2x, "u.bin", data)
    ec2x.write(f"AT+QFSEEK={h},0;+QFREAD={h}\r")
    time.sleep(0.3)                                                        # paced, not read yet
    assert emulator.control("urc", text="+QIURC: \"test\"")["ok"]
    head = ec2x.read_until(b"CONNECT 300000\r\n", timeout=5)
    assert head == b"\r\nCONNECT 300000\r\n"
    assert ec2x.read_exactly(len(data), timeout=10) == data
    assert ec2x.read_until(b'"test"\r\n', timeout=5) == OK + b'\r\n+QIURC: "test"\r\n'


# -- hang-ups and reboots in the middle of a transfer -----------------------------------------

def test_hangup_in_a_qfwrites_data_stores_nothing(open_modem, strict_log):
    host, port = open_modem("ec2x")
    h = fill(host, "keep.bin", b"original")
    assert host.at(f"AT+QFSEEK={h},0") == OK
    host.write(f"AT+QFWRITE={h},20\r")
    host.read_until(b"CONNECT\r\n", timeout=5)
    host.write(b"half-")
    time.sleep(0.2)
    host.close()
    time.sleep(0.3)                                    # (a reopen in the same instant is no close)
    host = Host(port.path)
    try:
        host.write(b"AT+QFCLOSE=9\r")                                       # command state again
        assert host.read_until(cme(416), timeout=5).endswith(cme(416))
        assert host.at(f"AT+QFPOSITION={h}").endswith(b"\r\n+QFPOSITION: 0\r\n" + OK)
        assert host.at("ATE0").endswith(OK)
        assert read_answer(host, f"AT+QFREAD={h}") == b"original"
    finally:
        host.close()


def test_hangup_in_a_paced_qfread_leaves_the_next_host_in_command_state(open_modem, strict_log):
    host, port = open_modem("ec2x")
    data = os.urandom(500_000)
    h = fill(host, "RAM:h.bin", data)
    host.write(f"AT+QFSEEK={h},0;+QFREAD={h}\r")
    time.sleep(0.2)
    host.read_exactly(1000, timeout=5)
    host.close()
    time.sleep(0.3)                                    # (a reopen in the same instant is no close)
    host = Host(port.path)
    try:
        assert host.quiet_for(0.3) == b""                                  # none of the old answer
        assert host.at("AT") == OK
        # the module read the file to its end (as it sent it to a UART nobody read)
        assert host.at(f"AT+QFPOSITION={h}") == b"\r\n+QFPOSITION: 500000\r\n" + OK
        assert read_answer(host, f"AT+QFSEEK={h},0;+QFREAD={h},10") == data[:10]
    finally:
        host.close()


def test_control_reboot_in_a_qfwrites_data(emulator, ec2x, strict_log):
    h = fill(ec2x, "u.bin", b"UFS stays")
    r = qfopen(ec2x, "RAM:r.bin")
    ec2x.write(f"AT+QFWRITE={h},100\r")
    ec2x.read_until(b"CONNECT\r\n", timeout=5)
    ec2x.write(b"12345")
    time.sleep(0.1)
    assert emulator.control("reboot", ms=50) == {"ok": True}
    assert wait_boot(ec2x) == BOOT                                         # no answer, one boot
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT+QFOPEN?") == OK                                     # every handle closed
    assert ec2x.at(f"AT+QFREAD={h};+QFREAD={r}") == cme(416)
    assert ec2x.at('AT+QFLST="RAM:*"') == OK
    assert ec2x.at('AT+QFLST="u.bin"') == b'\r\n+QFLST: "u.bin",9\r\n' + OK   # nothing stored


def test_control_reboot_in_a_paced_qfreads_output(emulator, ec2x, strict_log):
    data = os.urandom(500_000)
    h = fill(ec2x, "RAM:big", data)
    ec2x.write(f"AT+QFSEEK={h},0;+QFREAD={h}\r")
    time.sleep(0.2)
    head = ec2x.read_until(b"CONNECT 500000\r\n", timeout=5)
    assert head == b"\r\nCONNECT 500000\r\n"
    assert emulator.control("reboot", ms=50) == {"ok": True}
    got = wait_boot(ec2x)
    assert got.endswith(BOOT) and len(got) < len(data)                     # cut, then the boot
    assert data.startswith(got[:-len(BOOT)])                               # what came is the file's
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at(f"AT+QFREAD={h}") == cme(416)
    assert ec2x.at('AT+QFOPEN="RAM:big",2') == cme(405)                   # RAM is gone


# -- the staggered boot ------------------------------------------------------------------------

def test_commands_between_rdy_and_cpin_ready(ec2x_strict):
    host, advance, _ = ec2x_strict
    h = fill(host, "RAM:gone", b"x")
    assert host.at("AT+CMEE=2;+CFUN=1,1;+CPIN?") == OK                     # the rest never ran
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == urc(b"RDY")
    assert host.at("ATE0") == b"ATE0\r" + OK
    for line in ("AT+CPIN?", "AT+CIMI", "AT+QCCID", "AT+CGMM;+CPIN?"):   # CMEE back to 1
        answer = host.at(line)
        assert answer.endswith(BUSY), (line, answer)
    assert host.at("AT+CGMM").endswith(OK)                                 # the module's own
    assert host.at(f"AT+QFREAD={h}") == cme(416)                           # files work at once
    assert host.at("AT+CMEE=0;+CIMI") == b"\r\nERROR\r\n"
    assert host.at("AT+CMEE=2;+QCCID") == b"\r\n+CME ERROR: SIM busy\r\n"
    host.write(b"ATV0;+CMEE=1;+CPIN?\r")
    assert host.read_until(b"14\r\n", timeout=3) == b"+CME ERROR: 14\r\n"
    host.write(b"ATV1;Q1;+CPIN?\r")
    assert host.quiet_for(0.2) == b""                                      # ATQ1: no +CME ERROR
    advance(0.14)                                      # 140 ms after RDY
    assert host.read_until(b"+CFUN: 1\r\n", timeout=3) == urc(b"+CFUN: 1")
    host.write(b"AT+CPIN?\r")
    assert host.quiet_for(0.2) == b""
    advance(0.23)                                      # 370 ms
    assert host.read_until(b"READY\r\n", timeout=3) == urc(b"+CPIN: READY")
    host.write(b"ATQ0;+CPIN?\r")
    assert host.read_until(OK, timeout=3) == b"\r\n+CPIN: READY\r\n" + OK
    advance(0.3)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == (urc(b"+QUSIM: 1") + urc(b"+QIND: SMS DONE")
                                                         + urc(b"+QIND: PB DONE"))


def test_cfun_reset_written_one_byte_at_a_time_by_a_crlf_host(ec2x, strict_log):
    for byte in b"AT+CFUN=1,1\r\n":
        ec2x.write(bytes([byte]))
        time.sleep(0.002)
    # ATE0 before: the OK alone; echo is back on after it, but the line's LF is not echoed
    assert wait_boot(ec2x) == OK + BOOT
    assert ec2x.quiet_for(0.2) == b""
    ec2x.write(b"AT+CFUN=1,1\r\nAT+CIMI\r\n")                               # a line right behind it
    assert wait_boot(ec2x) == b"AT+CFUN=1,1\r" + OK + BOOT                # is lost with the restart


def test_two_reboots_in_a_row_give_one_boot(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    assert emulator.control("reboot", ms=300) == {"ok": True}
    advance(0.1)
    host.write(b"AT+CFUN=1,1\r")                                           # before the first RDY:
    assert host.quiet_for(0.2) == b""                                      # lost (the UART is not up)
    assert emulator.control("reboot", ms=100) == {"ok": True}              # and again
    advance(0.095)
    assert host.quiet_for(0.2) == b""
    advance(0.01)
    assert host.read_until(b"RDY\r\n", timeout=3) == urc(b"RDY")
    assert host.at("AT+CPIN?") == b"AT+CPIN?\r" + BUSY
    advance(2)
    got = host.read_until(b"PB DONE\r\n", timeout=3)
    assert got == (urc(b"+CFUN: 1") + urc(b"+CPIN: READY") + urc(b"+QUSIM: 1") + urc(b"+QIND: SMS DONE")
                   + urc(b"+QIND: PB DONE"))
    advance(5)
    assert host.quiet_for(0.2) == b""


def test_boot_urcs_wait_behind_a_qfwrite_started_after_rdy(ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05)
    host.read_until(b"RDY\r\n", timeout=3)
    host.write(b"ATE0\r")
    host.read_until(OK, timeout=3)
    h = qfopen(host, "RAM:boot.bin")
    host.write(f"AT+QFWRITE={h},6,10\r")
    assert host.read_until(b"CONNECT\r\n", timeout=3) == b"\r\nCONNECT\r\n"
    host.write(b"RDY\r\n")
    advance(1)                                                             # every boot URC falls due
    assert host.quiet_for(0.2) == b""                                      # none inside the data
    host.write(b"!")
    assert host.read_until(b"PB DONE\r\n", timeout=3) == (
        b"\r\n+QFWRITE: 6,6\r\n" + OK + urc(b"+CFUN: 1") + urc(b"+CPIN: READY") + urc(b"+QUSIM: 1")
        + urc(b"+QIND: SMS DONE") + urc(b"+QIND: PB DONE"))
    assert host.at("AT+CPIN?") == b"\r\n+CPIN: READY\r\n" + OK


def test_saved_atv0_frames_the_boot_and_a_slash_repeats_nothing_after_it(ec2x_strict):
    host, advance, _ = ec2x_strict
    h = fill(host, "RAM:rep", b"abcd")
    assert read_answer(host, f"AT+QFSEEK={h},0;+QFREAD={h},2") == b"ab"
    host.write(b"A/")                                  # repeats the whole line
    assert host.read_until(OK, timeout=3) == b"\r\nCONNECT 2\r\nab" + OK
    host.write(b"ATV0&W\r")                           # (saves the fixture's ATE0 too)
    assert host.read_until(b"0\r", timeout=3) == b"0\r"
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(b"0\r", timeout=3) == b"0\r"
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == b"RDY\r\n"
    host.write(b"A/")                                  # after a reboot there is no last line
    assert host.quiet_for(0.2) == b""
    host.write(b"AT+CIMI\r")
    answer_is(host, b"+CME ERROR: 14\r\n", 0.2)             # +CME keeps its words
    advance(0.65)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == (b"+CFUN: 1\r\n+CPIN: READY\r\n+QUSIM: 1\r\n"
                                                          b"+QIND: SMS DONE\r\n+QIND: PB DONE\r\n")
    host.write(b"AT+CIMI\r")
    assert host.read_until(b"\r\n0\r", timeout=3) == b"460011234567890\r\n0\r"
    host.write(f"AT+QFREAD={h}\r")
    assert host.read_until(b"\r\n", timeout=3) == b"+CME ERROR: 416\r\n"


def test_ml302_boot_and_no_file_handles(ml302_strict):
    host, advance, _ = ml302_strict
    for line in ('AT+QFOPEN="x"', "AT+QFWRITE=1,1", "AT+QFSEEK=1,0", "AT+QFTUCAT=1", "AT+QFPOSITION=1"):
        assert host.at(line) == b"\r\nERROR\r\n", line
    assert host.at("ATE0;+CFUN=1,1;+ICCID") == OK
    host.write(b"AT+ICCID\r")                                             # before its one URC:
    assert host.quiet_for(0.2) == b""                                      # lost, as the port is down
    advance(0.05)
    assert host.read_until(b"READY\r\n", timeout=3) == urc(b"+CPIN: READY")
    assert host.at("ATE0") == b"ATE0\r" + OK                              # (echo on again)
    assert host.at("AT+CGSN=1").startswith(b"\r\n+CGSN: ")
    assert host.at("AT+ICCID").startswith(b"\r\n+ICCID: ")
    advance(5)
    assert host.quiet_for(0.2) == b""


# -- found here, already fixed in the working tree (they failed on 45a44d2) --------------------

# Was a bug at 45a44d2 (fixed in the working tree since): Modem._boot_urcs chained each boot
# URC's timer on the previous one (call_later((offsets[i]-offsets[i-1])/1000)), so the float
# error of 0.05+0.13+0.23+... added up: past ~1030 s of manual clock (a test that advanced
# 30 s first) +CPIN: READY fell due a hair after RDY+0.36 and +QIND: SMS DONE after RDY+0.6,
# and advance(ms) + advance(0.6) -- what docs/behaviour.md tells manual-time tests -- left
# SMS DONE unsent (advance(0.36) the SIM busy).

def test_sms_done_after_ms_plus_0_6_s_even_after_a_long_manual_advance(ec2x_strict):
    host, advance, _ = ec2x_strict
    advance(30)                                        # e.g. a test that waited for a timeout
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05)                                      # the reboot's ms
    assert host.read_until(b"RDY\r\n", timeout=3) == urc(b"RDY")
    advance(0.6)                                       # + 0.6 s: the EC2x's last boot URC
    assert host.read_until(b"DONE\r\n", timeout=1) == (
        urc(b"+CFUN: 1") + urc(b"+CPIN: READY") + urc(b"+QUSIM: 1") + urc(b"+QIND: SMS DONE"))


def test_cpin_ready_at_its_offset_after_rdy_even_after_a_long_manual_advance(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    advance(30)
    assert emulator.control("reboot", ms=50) == {"ok": True}
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == urc(b"RDY")
    advance(0.36)                                      # boot_urc_ms: +CPIN: READY at 360
    assert host.read_until(b"READY\r\n", timeout=1) == urc(b"+CFUN: 1") + urc(b"+CPIN: READY")
    assert host.at("AT+CPIN?") == b"AT+CPIN?\r\r\n+CPIN: READY\r\n" + OK


# Was a bug at 45a44d2 (fixed in the working tree since): Interpreter._pending_done skipped an
# orphaned answer whole, Response.then -- the restart itself -- included, so a delayed
# AT+CFUN=1,1 whose host hung up before its OK never restarted (handles open, RAM kept, no
# start-up URCs), against "runs to its end, but its answer is not written".
def test_a_slow_cfun_reset_still_restarts_when_its_host_hangs_up(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x")
    h = qfopen(host, "RAM:r.bin")
    assert emulator.control("slow", command="+CFUN", ms=300)["ok"]
    host.write(b"AT+CFUN=1,1\r")
    emulator.wait_received(port, host.written)
    host.close()                                       # before its OK (300 ms later)
    time.sleep(0.1)
    host = Host(port.path)
    try:
        host.read_until(b"PB DONE\r\n", timeout=2)    # the restart's URCs reach the next host
        assert host.at("ATE0").endswith(OK)
        assert host.at(f"AT+QFREAD={h}") == cme(416)
        assert host.at('AT+QFLST="RAM:*"') == OK
    finally:
        host.close()


# Was a bug at 45a44d2 (fixed in the working tree since): the control API's reboot while a
# command's answer was pending (a "slow" fault's delay) did not abandon it: control.reboot's
# Interpreter.hangup() only marked the answer orphaned and kept the port PENDING, and nothing
# cancelled _delayed()'s sleep, so the restarted module stayed busy with a command from before
# the power went (RDY and the host's new commands waited until the old delay ended), against
# "whatever the port was doing is abandoned without an answer ... the start-up URCs come from
# ms on".  With only the fix above for a hung-up delayed AT+CFUN=1,1, the abandoned
# AT+CFUN=1,1 of the second test also restarted the module a second time when its delay ended.
def test_control_reboot_abandons_a_slow_commands_pending_answer(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert emulator.control("slow", command="+CGMM", ms=5000)["ok"]
    host.write(b"AT+CGMM\r")                           # its answer 5 s later
    advance(0.1)
    assert emulator.control("reboot", ms=50) == {"ok": True}
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=1) == urc(b"RDY")          # at ms, not in 5 s
    assert host.at("AT+CPIN?", timeout=1) == b"AT+CPIN?\r" + BUSY           # the port is free
    advance(10)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == (
        urc(b"+CFUN: 1") + urc(b"+CPIN: READY") + urc(b"+QUSIM: 1") + urc(b"+QIND: SMS DONE")
        + urc(b"+QIND: PB DONE"))
    assert host.quiet_for(0.2) == b""                  # never the old command's answer


def test_control_reboot_during_a_slow_cfun_reset_restarts_once(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert emulator.control("slow", command="+CFUN", ms=3000)["ok"]
    host.write(b"AT+CFUN=1,1\r")
    advance(0.1)
    assert emulator.control("reboot", ms=50) == {"ok": True}               # the power goes first
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=1) == urc(b"RDY")
    advance(0.65)
    host.read_until(b"PB DONE\r\n", timeout=1)
    assert host.at("ATE0", timeout=1) == b"ATE0\r" + OK
    h = qfopen(host, "RAM:after-boot")
    advance(10)                                        # past the abandoned command's delay
    assert host.quiet_for(0.3) == b""                  # no OK, no second boot
    assert host.at("AT+QFOPEN?") == b'\r\n+QFOPEN: "RAM:after-boot",%d,0\r\n' % h + OK
