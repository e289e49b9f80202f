"""EC2x open-file commands over the pty: AT+QFOPEN / QFREAD / QFWRITE / QFSEEK /
QFPOSITION / QFTUCAT / QFCLOSE, as host drivers use them (Twilio's existence check,
Quectel's own ql_file.c reads, LooUQ's writes), and what they refuse."""
from __future__ import annotations

import os

import pytest

OK = b"\r\nOK\r\n"
H = 1027                                           # the EC2x profile's files.first_handle
# Every byte value a naive data path could mangle, and look-alikes of what frames it.
BINARY = bytes(range(256)) + b"\r\nOK\r\n+QFWRITE: 1,2\r\nAT+QFCLOSE=1027\r\n\x1a\x1b+++" + os.urandom(200)


def cme(code: int) -> bytes:
    return b"\r\n+CME ERROR: %d\r\n" % code


def qfopen(host, name: str, mode: int | None = None) -> int:
    line = f'AT+QFOPEN="{name}"' + ("" if mode is None else f",{mode}")
    answer = host.at(line)
    assert answer.startswith(b"\r\n+QFOPEN: ") and answer.endswith(b"\r\n" + OK), answer
    return int(answer[len(b"\r\n+QFOPEN: "):].split(b"\r\n")[0])


def qfwrite(host, handle: int, data: bytes) -> bytes:
    host.write(f"AT+QFWRITE={handle},{len(data)}\r")
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(data)
    return host.read_until(OK, timeout=5)


def qfread(host, handle: int, length: int | None = None) -> bytes:
    host.write(f"AT+QFREAD={handle}" + ("" if length is None else f",{length}") + "\r")
    head = host.read_until(b"\r\n", timeout=5)
    if head == b"\r\n":
        head += host.read_until(b"\r\n", timeout=5)
    assert head.startswith(b"\r\nCONNECT "), head
    n = int(head[len(b"\r\nCONNECT "):-2])
    data = host.read_exactly(n, timeout=5)
    assert host.read_exactly(len(OK), timeout=5) == OK         # the data run into OK
    return data


def test_write_read_seek_position_truncate_close(ec2x):
    h = qfopen(ec2x, "blob.bin", 0)
    assert h == H
    assert qfwrite(ec2x, h, BINARY) == f"\r\n+QFWRITE: {len(BINARY)},{len(BINARY)}\r\n".encode() + OK
    assert ec2x.at(f"AT+QFPOSITION={h}") == f"\r\n+QFPOSITION: {len(BINARY)}\r\n".encode() + OK
    assert ec2x.at(f"AT+QFREAD={h},10") == cme(402)              # at the end: "read zero byte"
    assert ec2x.at(f"AT+QFSEEK={h},0,0") == OK
    assert qfread(ec2x, h, 100) == BINARY[:100]
    assert qfread(ec2x, h) == BINARY[100:]                        # no length: the rest
    assert ec2x.at(f"AT+QFSEEK={h},5,2") == OK                    # 5 back from the end
    assert qfread(ec2x, h, 100) == BINARY[-5:]                     # a short read: CONNECT 5
    # overwrite in the middle: the size stays, the written bytes replace
    assert ec2x.at(f"AT+QFSEEK={h},10") == OK
    assert qfwrite(ec2x, h, b"XYZ") == f"\r\n+QFWRITE: 3,{len(BINARY)}\r\n".encode() + OK
    assert ec2x.at(f"AT+QFSEEK={h},2,1") == OK                    # 2 on from the current position
    assert ec2x.at(f"AT+QFPOSITION={h}") == b"\r\n+QFPOSITION: 15\r\n" + OK
    assert ec2x.at(f"AT+QFTUCAT={h}") == OK
    assert ec2x.at('AT+QFLST="blob.bin"') == b'\r\n+QFLST: "blob.bin",15\r\n' + OK
    assert ec2x.at(f"AT+QFCLOSE={h}") == OK
    ec2x.write('AT+QFDWL="blob.bin"\r')
    want = BINARY[:10] + b"XYZ" + BINARY[13:15]
    assert ec2x.read_until(b"OK\r\n", timeout=5).startswith(b"\r\nCONNECT\r\n" + want + b"\r\n+QFDWL: 15,")
    assert ec2x.at(f"AT+QFCLOSE={h}") == cme(416)                 # released
    assert ec2x.at(f"AT+QFREAD={h}") == cme(416)


def test_twilio_existence_check_and_modes(ec2x):
    assert ec2x.at('AT+QFOPEN="ssl_cacert.pem",2') == cme(405)    # read-only needs the file
    assert ec2x.at("AT+QFLST") == OK                              # and makes none
    ec2x.upload("ssl_cacert.pem", b"-----BEGIN CERTIFICATE-----\n")
    h = qfopen(ec2x, "ssl_cacert.pem", 2)
    assert ec2x.at(f"AT+QFWRITE={h},5") == cme(414)               # refused before CONNECT
    assert ec2x.at(f"AT+QFTUCAT={h}") == cme(414)
    assert qfread(ec2x, h, 11) == b"-----BEGIN "
    assert ec2x.at(f"AT+QFCLOSE={h}") == OK
    # mode 1 empties an existing file, mode 0 (and no mode) keeps it or creates an empty one
    h = qfopen(ec2x, "ssl_cacert.pem", 1)
    assert ec2x.at('AT+QFLST="ssl_cacert.pem"') == b'\r\n+QFLST: "ssl_cacert.pem",0\r\n' + OK
    assert qfwrite(ec2x, h, b"abc").startswith(b"\r\n+QFWRITE: 3,3\r\n")
    assert ec2x.at(f"AT+QFCLOSE={h}") == OK
    h = qfopen(ec2x, "ssl_cacert.pem")
    assert qfread(ec2x, h) == b"abc"
    assert ec2x.at(f"AT+QFCLOSE={h}") == OK
    h = qfopen(ec2x, "RAM:new.txt", 0)
    assert ec2x.at('AT+QFLST="RAM:*"') == b'\r\n+QFLST: "RAM:new.txt",0\r\n' + OK
    assert ec2x.at(f"AT+QFREAD={h}") == cme(402)


def test_open_files_are_listed_guarded_and_numbered_from_the_first_free(ec2x):
    a = qfopen(ec2x, "a.txt")
    b = qfopen(ec2x, "RAM:b.txt", 1)
    assert (a, b) == (H, H + 1)
    assert ec2x.at("AT+QFOPEN?") == (b'\r\n+QFOPEN: "a.txt",1027,0\r\n'
                                     b'+QFOPEN: "RAM:b.txt",1028,1\r\n' + OK)
    assert ec2x.at('AT+QFOPEN="a.txt"') == cme(426)               # open already
    assert ec2x.at('AT+QFOPEN="UFS:a.txt",2') == cme(426)         # the same file by its drive name
    assert ec2x.at('AT+QFDEL="a.txt"') == cme(426)
    assert ec2x.at('AT+QFDEL="*"') == cme(426)                    # nothing deleted
    assert ec2x.at('AT+QFDWL="a.txt"') == cme(426)
    assert ec2x.at("AT+QFLST") == b'\r\n+QFLST: "a.txt",0\r\n' + OK
    assert ec2x.at(f"AT+QFCLOSE={a}") == OK
    assert qfopen(ec2x, "c.txt") == H                             # the lowest free handle
    assert ec2x.at('AT+QFDEL="a.txt"') == OK
    for i in range(8):
        qfopen(ec2x, f"RAM:n{i}")
    assert ec2x.at('AT+QFOPEN="RAM:one-too-many"') == cme(413)   # files.max_open = 10


def test_bad_parameters_and_seeks(ec2x):
    h = qfopen(ec2x, "s.bin")
    assert qfwrite(ec2x, h, b"0123456789").startswith(b"\r\n+QFWRITE: 10,10\r\n")
    for line, code in ((f"AT+QFSEEK={h},11", 401), (f"AT+QFSEEK={h},11,2", 401),
                       (f"AT+QFSEEK={h},1,1", 401),               # at the end already
                       (f"AT+QFSEEK={h},-1", 400), (f"AT+QFSEEK={h},1,3", 400),
                       (f"AT+QFSEEK={h}", 400), (f"AT+QFREAD={h},0", 400),
                       (f"AT+QFREAD={h},x", 400), ("AT+QFREAD=99", 416),
                       (f"AT+QFWRITE={h},0", 400), (f"AT+QFWRITE={h},5,0", 400),
                       ('AT+QFOPEN="s2.bin",3', 400), ('AT+QFOPEN="cacert.pem",1,1', 400),
                       ('AT+QFOPEN="../x"', 406), ("AT+QFCLOSE=-1", 400),
                       (f"AT+QFCLOSE={h},1", 400), ("AT+QFPOSITION=", 400)):
        assert ec2x.at(line) == cme(code), line
    assert ec2x.at(f"AT+QFSEEK={h},10") == OK                     # to the very end is fine
    assert ec2x.at(f"AT+QFSEEK={h},10,2") == OK
    assert ec2x.at(f"AT+QFPOSITION={h}") == b"\r\n+QFPOSITION: 0\r\n" + OK
    assert ec2x.at(f"AT+QFWRITE={h},20000000") == cme(403)        # more than the drive holds
    assert ec2x.at("AT+QFPOSITION=?") == b"\r\n+QFPOSITION: <filehandle>\r\n" + OK
    assert ec2x.at("AT+QFOPEN=?") == b"\r\n+QFOPEN: <filename>[,(0-2)]\r\n" + OK
    assert ec2x.at("AT+QFREAD=?") == b"\r\n+QFREAD: <filehandle>[,<length>]\r\n" + OK
    assert ec2x.at("AT+QFWRITE=?") == b"\r\n+QFWRITE: <filehandle>[,<length>[,<timeout>]]\r\n" + OK
    assert ec2x.at("AT+QFCLOSE=?") == b"\r\n+QFCLOSE: <filehandle>\r\n" + OK


def test_write_idle_timeout_keeps_what_came(emulator, open_modem):
    host, port = open_modem("ec2x", manual_time=True)
    h = qfopen(host, "t.bin")
    host.write(f"AT+QFWRITE={h},100,3\r")
    host.read_until(b"CONNECT\r\n", timeout=5)
    host.write(b"\r\nAT\r\n+++")                                  # all data, not commands
    emulator.wait_received(port, host.written)
    emulator.advance(port, 2.9)
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.2)
    assert host.read_until(OK, timeout=5) == b"\r\n+QFWRITE: 9,9\r\n" + OK
    host.write(f"AT+QFWRITE={h},100,1\r")                          # nothing at all: 0 written
    host.read_until(b"CONNECT\r\n", timeout=5)
    emulator.advance(port, 1.1)
    assert host.read_until(OK, timeout=5) == b"\r\n+QFWRITE: 0,9\r\n" + OK
    assert host.at(f"AT+QFSEEK={h},0;+QFREAD={h},3") == b"\r\nCONNECT 3\r\n\r\nA" + OK


def test_one_byte_at_a_time_and_framing_settings(ec2x):
    h = qfopen(ec2x, "b.bin")
    # The fixture's lines end with CR alone, and such a host's LF that comes more than 50 ms
    # after its CR is data (docs/behaviour.md, late-LF table): a test descheduled between two
    # one-byte writes sent it that late.  Show the modem a CR LF host writing in pieces first
    # (CR, its OK, then the LF): this line's LF is then the line's however late it comes.
    ec2x.write(b"AT\r")
    assert ec2x.read_until(OK, timeout=5) == OK
    ec2x.write(b"\n")
    line = f"AT+QFWRITE={h},4\r\n".encode()                        # CR LF host: the LF is no data
    for i in range(len(line)):
        ec2x.write(line[i:i + 1])
    assert ec2x.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    for byte in b"\x00\r\n\x1a":
        ec2x.write(bytes([byte]))
    assert ec2x.read_until(OK, timeout=5) == b"\r\n+QFWRITE: 4,4\r\n" + OK
    assert ec2x.at(f"AT+QFSEEK={h},0") == OK
    ec2x.write(f"ATV0;+QFREAD={h}\r")
    assert ec2x.read_exactly(8, timeout=5) == b"1\r\x00\r\n\x1a0\r"      # numeric: CONNECT is "1"
    assert ec2x.at(f"ATV1;+QFSEEK={h},0;+QFREAD={h},2") == b"\r\nCONNECT 2\r\n\x00\r" + OK


def test_a_restart_closes_every_handle(ec2x):
    h = qfopen(ec2x, "keep.txt")
    qfwrite(ec2x, h, b"kept")
    qfopen(ec2x, "RAM:gone.txt")
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n", timeout=5)
    assert ec2x.at("ATE0").endswith(OK)
    assert ec2x.at("AT+QFOPEN?") == OK
    assert ec2x.at(f"AT+QFREAD={h}") == cme(416)
    assert ec2x.at('AT+QFLST="*"') == b'\r\n+QFLST: "keep.txt",4\r\n' + OK   # written through
    assert ec2x.at('AT+QFLST="RAM:*"') == OK
    assert qfopen(ec2x, "keep.txt", 2) == H


@pytest.mark.parametrize("line", ['AT+QFOPEN="x"', "AT+QFREAD=1", "AT+QFCLOSE=1", "AT+QFOPEN?"])
def test_the_ml302_has_no_file_handles(ml302, line):
    assert ml302.at(line) == b"\r\nERROR\r\n"
