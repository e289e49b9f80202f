"""EC2x file commands over the pty, as host software drives them."""
from __future__ import annotations

import os

import pytest

from emulator.at.mode import Mode
from emulator.storage.checksum import xor16

# Every byte value a naive data path could mangle: NUL, CR, LF, Ctrl+Z, ESC,
# a would-be "AT" command line and a "+++" escape.
BINARY = bytes(range(256)) + b"\r\nAT+QFDEL=\"*\"\r\n\x1a\x1b\x00+++" + os.urandom(300)


def cs(data: bytes) -> str:
    return f"{xor16(data):x}"          # AT+QFUPL / QFDWL: no leading zeros


def test_upload_binary_checksum_list_download(ec2x):
    answer = ec2x.upload("blob.bin", BINARY)
    assert answer == f"\r\n+QFUPL: {len(BINARY)},{cs(BINARY)}\r\n\r\nOK\r\n".encode()
    assert ec2x.at('AT+QFLST="*"') == f'\r\n+QFLST: "blob.bin",{len(BINARY)}\r\n\r\nOK\r\n'.encode()
    assert ec2x.at("AT+QFLST") == f'\r\n+QFLST: "blob.bin",{len(BINARY)}\r\n\r\nOK\r\n'.encode()
    ec2x.write('AT+QFDWL="blob.bin"\r')
    expected = (b"\r\nCONNECT\r\n" + BINARY
                + f"\r\n+QFDWL: {len(BINARY)},{cs(BINARY)}\r\n\r\nOK\r\n".encode())
    assert ec2x.read_exactly(len(expected)) == expected
    assert ec2x.at('AT+QFDEL="blob.bin"') == b"\r\nOK\r\n"
    assert ec2x.at("AT+QFLST") == b"\r\nOK\r\n"
    assert ec2x.at('AT+QFDWL="blob.bin"') == b"\r\n+CME ERROR: 405\r\n"
    assert ec2x.at('AT+QFDEL="blob.bin"') == b"\r\n+CME ERROR: 405\r\n"


def test_odd_length_checksum_and_existing_file(ec2x):
    data = b"\x12\x34\x56"                      # 0x1234 ^ 0x5600 = 0x4434
    assert ec2x.upload("odd.txt", data) == b"\r\n+QFUPL: 3,4434\r\n\r\nOK\r\n"
    # An existing name is refused before CONNECT: the bytes stay commands.
    assert ec2x.at('AT+QFUPL="odd.txt",3') == b"\r\n+CME ERROR: 407\r\n"


def test_ram_and_ufs_drives(ec2x):
    ec2x.upload("RAM:r.pem", b"ram data")
    ec2x.upload("u.pem", b"ufs")
    assert ec2x.at('AT+QFLST="RAM:*"') == b'\r\n+QFLST: "RAM:r.pem",8\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QFLST="*"') == b'\r\n+QFLST: "u.pem",3\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QFLDS="RAM"') == b"\r\n+QFLDS: 1999992,2000000\r\n\r\nOK\r\n"
    assert ec2x.at('AT+QFLDS="UFS"') == b"\r\n+QFLDS: 10999997,11000000\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QFLDS") == b"\r\n+QFLDS: 3,1\r\n\r\nOK\r\n"
    assert ec2x.at('AT+QFDEL="RAM:*"') == b"\r\nOK\r\n"
    assert ec2x.at('AT+QFLST="RAM:*"') == b"\r\nOK\r\n"
    assert ec2x.at('AT+QFDEL="*"') == b"\r\nOK\r\n"
    assert ec2x.at("AT+QFLDS") == b"\r\n+QFLDS: 0,0\r\n\r\nOK\r\n"


def test_ufs_survives_restart_ram_does_not(open_modem, tmp_path):
    state = tmp_path / "shared-state"
    host, _ = open_modem("ec2x", state_dir=state)
    host.upload("keep.pem", b"persistent")
    host.upload("RAM:gone.pem", b"volatile")
    assert host.at("AT+CFUN=1,1").endswith(b"OK\r\n")
    host.read_until(b"+QIND: PB DONE\r\n")
    assert host.at("ATE0").endswith(b"OK\r\n")      # the reboot restored echo on
    assert host.at('AT+QFLST="RAM:*"') == b"\r\nOK\r\n"
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "keep.pem",10\r\n\r\nOK\r\n'
    host2, _ = open_modem("ec2x", state_dir=state)
    assert host2.at("AT+QFLST") == b'\r\n+QFLST: "keep.pem",10\r\n\r\nOK\r\n'
    host2.write('AT+QFDWL="keep.pem"\r')
    assert host2.read_until(b"OK\r\n") == (b"\r\nCONNECT\r\npersistent\r\n"
                                          b"+QFDWL: 10," + cs(b"persistent").encode()
                                          + b"\r\n\r\nOK\r\n")


def test_unsafe_names_refused(open_modem, tmp_path):
    state = tmp_path / "jail"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("AT+QFLST") == b"\r\nOK\r\n"     # the store exists (creates ufs/)
    before = set(tmp_path.rglob("*"))
    for name in ("../escape.txt", "UFS:../../escape.txt", "/etc/passwd", "a/b.txt",
                 "..\\\\x", "", "BAD:x", "x" * 81, "UFS:..", "RAM:../x"):
        assert host.at(f'AT+QFUPL="{name}",4') == b"\r\n+CME ERROR: 406\r\n", name
    # The refused command left command state intact: no data was swallowed.
    assert host.at("AT") == b"\r\nOK\r\n"
    assert host.at('AT+QFDWL="../../settings.json"') == b"\r\n+CME ERROR: 406\r\n"
    assert host.at('AT+QFDEL="../*"') == b"\r\n+CME ERROR: 406\r\n"
    assert set(tmp_path.rglob("*")) == before
    assert host.at("AT+CMEE=2") == b"\r\nOK\r\n"
    assert host.at('AT+QFUPL="../x",4') == b"\r\n+CME ERROR: invalid file name\r\n"
    assert host.at("AT+CMEE=0") == b"\r\nOK\r\n"
    assert host.at('AT+QFUPL="../x",4') == b"\r\nERROR\r\n"


def test_too_large_and_bad_parameters(ec2x):
    assert ec2x.at('AT+QFUPL="big.bin",11000001') == b"\r\n+CME ERROR: 403\r\n"
    assert ec2x.at('AT+QFUPL="RAM:big.bin",2000001') == b"\r\n+CME ERROR: 403\r\n"
    assert ec2x.at('AT+QFUPL="x.bin",0') == b"\r\n+CME ERROR: 400\r\n"
    assert ec2x.at('AT+QFUPL="x.bin",10,0') == b"\r\n+CME ERROR: 400\r\n"
    assert ec2x.at('AT+QFUPL="x.bin",10,5,2') == b"\r\n+CME ERROR: 400\r\n"
    assert ec2x.at('AT+QFLDS="SD"') == b"\r\n+CME ERROR: 406\r\n"


@pytest.fixture
def timed(emulator, open_modem):
    """An EC2x on manual time: (host, advance(seconds), mode()), advancing only after the
    modem has read everything the host wrote; mode() is its port's mode now."""
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)

    def mode() -> Mode:
        return emulator.run(lambda: port.modem.interpreter.mode)
    return host, advance, mode


def test_upload_timeout_keeps_partial_data(timed):
    ec2x, advance, mode = timed
    ec2x.write('AT+QFUPL="part.bin",100,1\r')
    ec2x.read_until(b"\r\nCONNECT\r\n")
    part = b"\x1a\x1bpartial"                 # Ctrl+Z and ESC do not end the upload
    ec2x.write(part)
    advance(0.9)
    assert mode() is Mode.DATA                 # the timer has not fired: still taking data
    assert ec2x.quiet_for(0.02) == b""
    advance(0.5)          # 1 s idle since the data came in (an exact timer on the modem clock)
    expected = f"\r\n+QFUPL: 9,{cs(part)}\r\n\r\nOK\r\n".encode()
    assert ec2x.read_until(b"OK\r\n", timeout=5) == expected
    assert ec2x.at('AT+QFLST="part.bin"') == b'\r\n+QFLST: "part.bin",9\r\n\r\nOK\r\n'


def test_timeout_counts_idle_time_not_the_whole_transfer(timed):
    ec2x, advance, mode = timed
    ec2x.write('AT+QFUPL="slow.bin",9,1\r')
    ec2x.read_until(b"\r\nCONNECT\r\n")
    for part in (b"abc", b"def"):               # 1.2 s in all, never 1 s idle
        ec2x.write(part)
        advance(0.6)
        assert mode() is Mode.DATA
        assert ec2x.quiet_for(0.02) == b""
    ec2x.write(b"ghi")
    assert ec2x.read_until(b"OK\r\n") == f"\r\n+QFUPL: 9,{cs(b'abcdefghi')}\r\n\r\nOK\r\n".encode()


def test_upload_not_echoed_with_ate1(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    data = b"\r\nOK\r\n\x1a"
    host.write(f'AT+QFUPL="e.bin",{len(data)}\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b'AT+QFUPL="e.bin",7\r\r\nCONNECT\r\n'
    host.write(data)
    assert host.read_until(b"OK\r\n") == f"\r\n+QFUPL: 7,{cs(data)}\r\n\r\nOK\r\n".encode()


def test_upload_timeout_without_data(timed):
    ec2x, advance, mode = timed
    ec2x.write('AT+QFUPL="none.bin",10,1\r')
    ec2x.read_until(b"\r\nCONNECT\r\n")
    advance(0.9)
    assert mode() is Mode.DATA
    assert ec2x.quiet_for(0.02) == b""
    advance(0.2)
    assert ec2x.read_until(b"\r\n+CME ERROR: 421\r\n", timeout=5)
    assert ec2x.at("AT+QFLST") == b"\r\nOK\r\n"


def test_ack_mode(ec2x):
    data = os.urandom(2500)
    ec2x.write(f'AT+QFUPL="ack.bin",{len(data)},5,1\r')
    ec2x.read_until(b"\r\nCONNECT\r\n")
    ec2x.write(data[:1024])
    assert ec2x.read_exactly(1) == b"A"
    ec2x.write(data[1024:2048])
    assert ec2x.read_exactly(1) == b"A"
    ec2x.write(data[2048:])
    assert ec2x.read_until(b"OK\r\n") == f"\r\n+QFUPL: 2500,{cs(data)}\r\n\r\nOK\r\n".encode()


def test_atv0_framing(ec2x):
    data = b"\r\n\x1a\x00"
    ec2x.write("ATV0\r")
    assert ec2x.read_exactly(2) == b"0\r"
    ec2x.write('AT+QFUPL="v0.bin",4\r')
    assert ec2x.read_exactly(2) == b"1\r"
    ec2x.write(data)
    assert ec2x.read_until(b"0\r") == f"+QFUPL: 4,{cs(data)}\r\n0\r".encode()
    ec2x.write('AT+QFDWL="v0.bin"\r')
    assert ec2x.read_until(b"\r\n0\r") == (b"1\r" + data
                                             + f"\r\n+QFDWL: 4,{cs(data)}\r\n0\r".encode())


def test_test_forms(ec2x):
    assert ec2x.at("AT+QFUPL=?") == (b"\r\n+QFUPL: <filename>[,(1-<freesize>)[,(1-65535)[,(0,1)]]]"
                                     b"\r\n\r\nOK\r\n")
    assert ec2x.at("AT+QFDWL=?") == b"\r\n+QFDWL: <filename>\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QFDEL=?") == b"\r\n+QFDEL: <filename>\r\n\r\nOK\r\n"
    assert ec2x.at("AT+QFLST=?") == b"\r\nOK\r\n"
    assert ec2x.at("AT+QFLDS=?") == b"\r\nOK\r\n"


def test_file_commands_absent_on_ml302(ml302):
    assert ml302.at("AT+QFLST") == b"\r\nERROR\r\n"


BIG = os.urandom(1_300_000)           # more than serial.output_backlog (1 MiB)


def test_a_download_larger_than_the_output_bound_arrives_whole_in_atv0_framing(ec2x):
    """AT+QFDWL of a large file goes out piece by piece as the host reads (never cut at the
    output bound), framed as a small one is: ATV0 "1<CR>", data, CR LF, +QFDWL, "0<CR>"."""
    assert ec2x.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    ec2x.write("ATV0\r")
    assert ec2x.read_exactly(2) == b"0\r"
    ec2x.write('AT+QFDWL="big.bin"\r')
    expected = b"1\r" + BIG + f"\r\n+QFDWL: {len(BIG)},{cs(BIG)}\r\n0\r".encode()
    assert ec2x.read_exactly(len(expected), timeout=30) == expected
    assert ec2x.at("ATV1") == b"\r\nOK\r\n"          # (the port was free again)


def test_a_hang_up_during_a_download_ends_it_and_the_next_host_gets_none_of_it(open_modem, emulator):
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin"\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.read_exactly(100_000)                   # some of it, then the host goes away
    host.close()
    from emulator.testing.host import Host
    from tests.e2e.socket_support import wait_for
    wait_for(lambda: emulator.run(lambda: port.modem.interpreter.mode) is Mode.COMMAND,
             what="the download ended")
    nxt = Host(port.path)
    try:
        assert nxt.at("AT") == b"\r\nOK\r\n"            # no piece of the file before it
        assert nxt.quiet_for(0.3) == b""
    finally:
        nxt.close()


def test_a_restart_during_a_download_ends_it(open_modem, emulator):
    """The control API's reboot (the module's power goes) mid-download: the pieces stop, no
    +QFDWL line or OK follows, the start-up URCs come and the port answers again."""
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin"\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.read_exactly(100_000)
    assert emulator.control("reboot", ms=10)["ok"]
    rest = host.read_until(b"+QIND: PB DONE\r\n", timeout=10)
    assert b"+QFDWL" not in rest and len(rest) < len(BIG) - 100_000
    assert rest.endswith(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n"
                         b"\r\n+QIND: PB DONE\r\n")
    assert host.quiet_for(0.3) == b""
    assert host.at("AT") == b"AT\r\r\nOK\r\n"           # echo on again: the AT&W set


# -- "+++" inside AT+QFUPL ----------------------------------------------------------------------
# The BG96 FILE manual: '"+++" sequence will cause TA to end the command and switch to command
# mode. However, the data previously uploaded will be preserved into the file.'  With the guard
# times of online data mode (S12, 1 s); decisions in docs/behaviour.md "Files".

def _upload_started(host, advance, name: str, size: int) -> None:
    host.write(f'AT+QFUPL="{name}",{size},60\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"


def test_plus_plus_plus_with_guard_times_ends_the_upload_keeping_what_came(ec2x_strict):
    host, advance, _ = ec2x_strict
    _upload_started(host, advance, "esc.bin", 100)
    host.write(b"ab\r\n+")                    # a "+" amid data is data
    advance(1.2)                              # silence before
    host.write(b"+++")
    advance(0.5)
    assert host.quiet_for(0.2) == b""         # the guard time after is not over yet
    advance(0.6)
    body = b"ab\r\n+"
    assert host.read_until(b"OK\r\n") == f"\r\n+QFUPL: 5,{xor16(body):x}\r\n\r\nOK\r\n".encode()
    assert host.at("AT") == b"\r\nOK\r\n"     # command state again
    host.write(b'AT+QFDWL="esc.bin"\r')
    assert host.read_until(b"OK\r\n") == (b"\r\nCONNECT\r\n" + body
                                          + f"\r\n+QFDWL: 5,{xor16(body):x}\r\n\r\nOK\r\n".encode())


def test_plus_plus_plus_right_after_connect_stores_an_empty_file(ec2x_strict):
    host, advance, _ = ec2x_strict
    _upload_started(host, advance, "empty.bin", 10)
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 0,0\r\n\r\nOK\r\n"
    assert host.at('AT+QFLST="empty.bin"') == b'\r\n+QFLST: "empty.bin",0\r\n\r\nOK\r\n'


@pytest.mark.parametrize("case", ["no silence before", "a byte within the guard after",
                                  "plus signs sent one by one too slowly"])
def test_plus_plus_plus_without_its_guard_times_is_data(ec2x_strict, case):
    host, advance, _ = ec2x_strict
    _upload_started(host, advance, "data.bin", 8)
    if case == "no silence before":
        host.write(b"xy")
        advance(0.3)
        host.write(b"+++")
        advance(2)
        rest = b"zzz"
    elif case == "a byte within the guard after":
        host.write(b"xy")
        advance(1.5)
        host.write(b"+++")
        advance(0.5)
        host.write(b"z")
        advance(2)
        rest = b"zz"                          # (the "z" above was the 6th byte)
    else:
        host.write(b"xy")
        advance(1.5)
        for _ in range(3):                    # 1.2 s from the first "+" to the third
            host.write(b"+")
            advance(0.6)
        advance(2)
        rest = b"zzz"
    assert host.quiet_for(0.2) == b""         # still collecting
    host.write(rest)
    body = b"xy+++zzz"
    assert host.read_until(b"OK\r\n") == f"\r\n+QFUPL: 8,{xor16(body):x}\r\n\r\nOK\r\n".encode()


def test_plus_plus_plus_that_completes_the_size_is_data(ec2x_strict):
    host, advance, _ = ec2x_strict
    _upload_started(host, advance, "full.bin", 5)
    host.write(b"ab")
    advance(1.5)
    host.write(b"+++")                        # the last three bytes: the upload is complete
    body = b"ab+++"
    assert host.read_until(b"OK\r\n") == f"\r\n+QFUPL: 5,{xor16(body):x}\r\n\r\nOK\r\n".encode()


def test_plus_plus_plus_guard_time_follows_s12(ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at("ATS12=10") == b"\r\nOK\r\n"      # 10/50 s = 0.2 s
    _upload_started(host, advance, "s12.bin", 50)
    host.write(b"q")
    advance(0.3)
    host.write(b"+++")
    advance(0.3)
    assert host.read_until(b"OK\r\n") == f"\r\n+QFUPL: 1,{xor16(b'q'):x}\r\n\r\nOK\r\n".encode()


# -- AT+QFMOV -------------------------------------------------------------------------------

def test_qfmov_moves_copies_and_guards(ec2x):
    assert ec2x.at("AT+QFMOV=?") == b"\r\n+QFMOV: <srcfilename>,<destfilename>[,(0,1)[,(0,1)]]\r\n\r\nOK\r\n"
    ec2x.upload("a.pem", b"AAAA")
    ec2x.upload("RAM:b.pem", b"BB")
    # copy 0 (the default): a move; the source is gone
    assert ec2x.at('AT+QFMOV="a.pem","c.pem"') == b"\r\nOK\r\n"
    assert ec2x.at("AT+QFLST") == b'\r\n+QFLST: "c.pem",4\r\n\r\nOK\r\n'
    # copy 1 keeps the source; across drives
    assert ec2x.at('AT+QFMOV="c.pem","RAM:d.pem",1,0') == b"\r\nOK\r\n"
    assert ec2x.at('AT+QFLST="*"') == b'\r\n+QFLST: "c.pem",4\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QFLST="RAM:*"') == (b'\r\n+QFLST: "RAM:b.pem",2\r\n+QFLST: "RAM:d.pem",4\r\n'
                                          b"\r\nOK\r\n")
    # an existing destination: 407 unless overwrite 1
    assert ec2x.at('AT+QFMOV="RAM:b.pem","c.pem"') == b"\r\n+CME ERROR: 407\r\n"
    assert ec2x.at('AT+QFMOV="RAM:b.pem","c.pem",0,1') == b"\r\nOK\r\n"
    ec2x.write(b'AT+QFDWL="c.pem"\r')
    assert ec2x.read_until(b"OK\r\n").startswith(b"\r\nCONNECT\r\nBB\r\n+QFDWL: 2,")
    assert ec2x.at('AT+QFLST="RAM:*"') == b'\r\n+QFLST: "RAM:d.pem",4\r\n\r\nOK\r\n'
    # onto itself: nothing changes
    assert ec2x.at('AT+QFMOV="c.pem","UFS:c.pem",0,0') == b"\r\nOK\r\n"
    assert ec2x.at('AT+QFLST="c.pem"') == b'\r\n+QFLST: "c.pem",2\r\n\r\nOK\r\n'
    # refusals
    assert ec2x.at('AT+QFMOV="nope.pem","x.pem"') == b"\r\n+CME ERROR: 405\r\n"
    assert ec2x.at('AT+QFMOV="*","RAM:"') == b"\r\n+CME ERROR: 406\r\n"
    assert ec2x.at('AT+QFMOV="c.pem","x.pem",2') == b"\r\n+CME ERROR: 400\r\n"
    assert ec2x.at('AT+QFMOV="c.pem"') == b"\r\n+CME ERROR: 400\r\n"
    handle = ec2x.at('AT+QFOPEN="c.pem",2')
    assert handle.startswith(b"\r\n+QFOPEN: ")
    assert ec2x.at('AT+QFMOV="c.pem","e.pem"') == b"\r\n+CME ERROR: 426\r\n"
    assert ec2x.at('AT+QFMOV="RAM:d.pem","c.pem",1,1') == b"\r\n+CME ERROR: 426\r\n"
    assert ec2x.at('AT+QFLST') == b'\r\n+QFLST: "c.pem",2\r\n\r\nOK\r\n'


def test_qfmov_onto_a_full_drive_keeps_the_source(ec2x):
    free = int(ec2x.at('AT+QFLDS="RAM"').split(b": ")[1].split(b",")[0])
    ec2x.upload("RAM:fill.bin", b"\0" * (free - 10))
    ec2x.upload("big.bin", b"x" * 11)
    assert ec2x.at('AT+QFMOV="big.bin","RAM:big.bin"') == b"\r\n+CME ERROR: 403\r\n"
    assert ec2x.at('AT+QFLST="big.bin"') == b'\r\n+QFLST: "big.bin",11\r\n\r\nOK\r\n'
