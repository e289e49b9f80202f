"""An independent adversarial pass over the day's changes: "+++" inside AT+QFUPL, AT+QFMOV,
AT+QFREAD's ranged drive reads, AT+QICFG (hex AT+QISEND / AT+QIRD, viewmode, recvind) and the
QFUPL/QFDWL checksum without leading zeros.  Exact bytes over the pty, manual time where the
guard times matter.  Where the emulator is wrong the test is a strict xfail saying what it does
and what the docs (docs/behaviour.md) or a real module say."""
from __future__ import annotations

import os
import re
import socket

import pytest

from emulator.storage.checksum import xor16
from tests.e2e.socket_support import RESULT, free_port, qiopen, qisend
from tests.e2e.ssl_options_support import HOST as SSL_HOST, PORT as SSL_PORT

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
PROMPT_OR_ERROR = re.compile(rb"> |\r\nERROR\r\n")


def cs(data: bytes) -> str:
    return f"{xor16(data):x}"


def qfupl_answer(data: bytes) -> bytes:
    return f"\r\n+QFUPL: {len(data)},{cs(data)}\r\n\r\nOK\r\n".encode()


def download(host, name: str) -> bytes:
    """AT+QFDWL: the file's bytes (the answer's framing and checksum checked)."""
    host.write(f'AT+QFDWL="{name}"\r')
    out = host.read_until(re.compile(rb"\r\n(OK|\+CME ERROR: \d+)\r\n"))
    m = re.fullmatch(rb"\r\nCONNECT\r\n(.*)\r\n\+QFDWL: (\d+),([0-9a-f]+)\r\n\r\nOK\r\n", out, re.S)
    assert m, out
    data = m.group(1)
    assert int(m.group(2)) == len(data) and m.group(3).decode() == cs(data), out
    return data


def start_upload(host, name: str, size: int, extra: str = ",60") -> None:
    host.write(f'AT+QFUPL="{name}",{size}{extra}\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"


def escape_in_upload(host, advance, before: float = 1.2, after: float = 1.2) -> None:
    advance(before)
    host.write(b"+++")
    advance(after)


# =====================================================================================
# "+++" inside AT+QFUPL
# =====================================================================================

def test_escape_after_a_whole_ack_block_keeps_the_block(ec2x_strict):
    host, advance, _ = ec2x_strict
    block = bytes(range(256)) * 4                         # 1024 bytes: one ack block
    start_upload(host, "ack.bin", 4096, extra=",60,1")
    host.write(block)
    assert host.read_until(b"A") == b"A"                  # the host may send the next block
    escape_in_upload(host, advance)
    assert host.read_until(b"OK\r\n") == qfupl_answer(block)
    assert host.at("AT") == OK
    assert download(host, "ack.bin") == block


def test_escape_straddling_an_ack_block_boundary_keeps_exactly_the_data(ec2x_strict):
    """1023 bytes, silence, "+++": the first "+" fills the block (its "A" may go out), the
    escape still takes the three "+" out and the file is the 1023 bytes."""
    host, advance, _ = ec2x_strict
    data = b"d" * 1023
    start_upload(host, "straddle.bin", 4096, extra=",60,1")
    host.write(data)
    escape_in_upload(host, advance)
    out = host.read_until(b"OK\r\n")
    assert re.fullmatch(rb"A?" + re.escape(qfupl_answer(data)), out), out
    assert download(host, "straddle.bin") == data


def test_escape_filling_an_ack_block_exactly_keeps_the_data_before_it(ec2x_strict):
    host, advance, _ = ec2x_strict
    data = b"e" * 1021
    start_upload(host, "fill.bin", 4096, extra=",60,1")
    host.write(data)
    escape_in_upload(host, advance)
    out = host.read_until(b"OK\r\n")
    assert re.fullmatch(rb"A?" + re.escape(qfupl_answer(data)), out), out
    assert download(host, "fill.bin") == data


@pytest.mark.parametrize("split", [(b"+", b"++"), (b"++", b"+"), (b"+", b"+", b"+")])
def test_escape_split_across_reads_within_the_guard_time(ec2x_strict, split):
    host, advance, port = ec2x_strict
    start_upload(host, "split.bin", 100)
    host.write(b"abc")
    advance(1.2)
    for piece in split:
        host.write(piece)
        advance(0.1)                                     # well within the guard time
    advance(1.2)
    assert host.read_until(b"OK\r\n") == qfupl_answer(b"abc")
    assert download(host, "split.bin") == b"abc"


def test_escape_then_the_host_sends_more_plus_signs_is_data(ec2x_strict):
    """"++++" is no escape: four "+" are data, the upload goes on."""
    host, advance, _ = ec2x_strict
    start_upload(host, "four.bin", 8)
    host.write(b"ab")
    advance(1.2)
    host.write(b"+++")
    advance(0.3)
    host.write(b"+")
    advance(1.5)
    assert host.quiet_for(0.2) == b""
    host.write(b"ZZ")
    assert host.read_until(b"OK\r\n") == qfupl_answer(b"ab++++ZZ")


def test_escape_with_a_urc_queued_during_the_upload(emulator, ec2x_strict):
    """A URC raised while the port collects file data goes out after the upload's answer,
    never inside the file, and the escape still works."""
    host, advance, _ = ec2x_strict
    start_upload(host, "urc.bin", 100)
    host.write(b"hello")
    emulator.wait_received(_port(ec2x_strict), host.written)
    assert emulator.control("urc", text='+QIURC: "pdpdeact",1') == {"ok": True}
    escape_in_upload(host, advance)
    out = host.read_until(b'+QIURC: "pdpdeact",1\r\n')
    assert out == qfupl_answer(b"hello") + b'\r\n+QIURC: "pdpdeact",1\r\n'
    assert download(host, "urc.bin") == b"hello"


def _port(strict):
    return strict[2]


def test_host_hangs_up_inside_the_guard_time_after_the_escape(emulator, open_modem, caplog):
    """The host closes the port after "+++" but before its guard time is over: no answer
    reaches the next host, the port is in command state, no traceback."""
    host, port = open_modem("ec2x", manual_time=True)
    start_upload(host, "hang.bin", 100)
    host.write(b"data")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.2)
    host.write(b"+++")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.3)
    host.close()
    emulator.run(lambda: None)
    emulator.advance(port, 2)                            # the escape's timer, if left, fires now
    from emulator.testing.host import Host
    again = Host(port.path)
    try:
        assert again.quiet_for(0.3) == b""               # no late +QFUPL for the new host
        assert again.at("ATE0").endswith(OK)
        assert again.at("AT") == OK
        files = again.at('AT+QFLST="hang.bin"')
        assert files in (b"\r\n+CME ERROR: 417\r\n", b'\r\n+QFLST: "hang.bin",4\r\n\r\nOK\r\n'), files
    finally:
        again.close()
    assert not [r for r in caplog.records if r.exc_info]


def test_control_reboot_inside_the_guard_time_after_the_escape(emulator, ec2x_strict):
    host, advance, port = ec2x_strict
    start_upload(host, "RAM:boot.bin", 100)
    host.write(b"data")
    advance(1.2)
    host.write(b"+++")
    advance(0.3)
    assert emulator.control("reboot", ms=0) == {"ok": True}
    advance(3)                                           # the old escape timer must be dead
    out = host.read_until(b"SMS DONE\r\n", timeout=20)
    assert b"+QFUPL" not in out and b"data" not in out, out
    host.quiet_for(0.2)
    host.write(b"ATE0\r")
    assert host.read_until(b"OK\r\n").endswith(b"OK\r\n")
    assert host.at('AT+QFLST="RAM:*"') == OK              # RAM is gone with the restart
    assert host.at("AT") == OK


def test_s12_zero_guard_time_does_not_crash_or_lose_data(ec2x_strict):
    """ATS12=0: whatever counts as an escape then, the bytes before it are kept and the
    port answers (never a hang or a traceback)."""
    host, advance, _ = ec2x_strict
    assert host.at("ATS12=0") == OK
    start_upload(host, "s0.bin", 100)
    host.write(b"xyz")
    advance(0.01)
    host.write(b"+++")
    advance(0.01)
    advance(0.5)
    out = host.quiet_for(0.3)
    if out:
        assert out == qfupl_answer(b"xyz")
    else:
        host.write(b"q" * 94)                            # 3 + 3 + 94 = 100: the upload ends
        assert host.read_until(b"OK\r\n") == qfupl_answer(b"xyz+++" + b"q" * 94)


def test_escape_answer_in_atv0(ec2x_strict):
    host, advance, _ = ec2x_strict
    host.write(b"ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write('AT+QFUPL="v0.bin",50,60\r')
    assert host.read_until(b"1\r") == b"1\r"             # CONNECT in ATV0
    host.write(b"v0")
    escape_in_upload(host, advance)
    assert host.read_until(b"\r\n0\r") == f"+QFUPL: 2,{cs(b'v0')}\r\n0\r".encode()


def test_plus_escape_does_not_apply_to_qfwrite(ec2x_strict):
    host, advance, _ = ec2x_strict
    out = host.at('AT+QFOPEN="w.bin",1')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
    host.write(f"AT+QFWRITE={handle},8,60\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"ab")
    escape_in_upload(host, advance)
    assert host.quiet_for(0.2) == b""                     # "+++" was data
    host.write(b"xyz")
    assert host.read_until(b"OK\r\n") == b"\r\n+QFWRITE: 8,8\r\n\r\nOK\r\n"
    assert host.at(f"AT+QFCLOSE={handle}") == OK
    assert download(host, "w.bin") == b"ab+++xyz"


# =====================================================================================
# AT+QFMOV
# =====================================================================================

def _fill_ram_to_zero(host) -> None:
    free = int(host.at('AT+QFLDS="RAM"').split(b": ")[1].split(b",")[0])
    assert host.upload("RAM:fill.bin", b"\0" * (free - 5)).endswith(OK)
    assert host.upload("RAM:five.bin", b"12345").endswith(OK)
    assert host.at('AT+QFLDS="RAM"') == b"\r\n+QFLDS: 0,2000000\r\n\r\nOK\r\n"


# Was a bug, fixed: FileStore.move() is read + write(destination) + delete(source), and write()
# checks the destination drive's free space with the source still on it: renaming a file within a
# drive with no free bytes left answers +CME ERROR: 403 (drive full), though a rename needs no new
# space on any file system (docs/behaviour.md names 403 only for 'no room', which a same-drive
# rename cannot lack)
def test_qfmov_rename_within_a_full_drive(ec2x):
    _fill_ram_to_zero(ec2x)
    assert ec2x.at('AT+QFMOV="RAM:five.bin","RAM:six.bin"') == OK
    assert ec2x.at('AT+QFLST="RAM:s*"') == b'\r\n+QFLST: "RAM:six.bin",5\r\n\r\nOK\r\n'


def test_qfmov_copy_within_a_full_drive_is_403_and_keeps_everything(ec2x):
    _fill_ram_to_zero(ec2x)
    assert ec2x.at('AT+QFMOV="RAM:five.bin","RAM:copy.bin",1') == b"\r\n+CME ERROR: 403\r\n"
    assert ec2x.at('AT+QFLST="RAM:*"') == (b'\r\n+QFLST: "RAM:fill.bin",1999995\r\n'
                                          b'+QFLST: "RAM:five.bin",5\r\n\r\nOK\r\n')


# Was a bug, fixed: a drive holds at most 64 files (FileStore max_files); AT+QFMOV within that
# drive goes through write() to a new name, which counts one file more: renaming a file on a drive
# holding 64 files answers +CME ERROR: 403 although the file count does not change
def test_qfmov_rename_on_a_drive_at_its_file_count_limit(ec2x):
    for i in range(64):
        out = ec2x.at(f'AT+QFOPEN="RAM:f{i}",1')
        handle = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
        assert ec2x.at(f"AT+QFCLOSE={handle}") == OK
    assert ec2x.at('AT+QFOPEN="RAM:one-more",1') == b"\r\n+CME ERROR: 403\r\n"   # the limit
    assert ec2x.at('AT+QFMOV="RAM:f0","RAM:renamed"') == OK


def test_qfmov_binary_content_across_drives_and_a_restart(open_modem, tmp_path):
    host, _ = open_modem("ec2x", state_dir=tmp_path / "mv")
    blob = bytes(range(256)) + b"+++\r\nAT\r\n\x1a\x1b" + os.urandom(500)
    assert host.upload("RAM:blob", blob) == qfupl_answer(blob)
    assert host.at('AT+QFMOV="RAM:blob","UFS:blob"') == OK
    assert host.at('AT+QFLST="RAM:*"') == OK
    assert host.at("AT+CFUN=1,1").endswith(OK)
    host.read_until(b"+QIND: PB DONE\r\n")          # (the last start-up URC: none lands in an answer)
    assert host.at("ATE0").endswith(OK)
    assert download(host, "blob") == blob
    assert host.at('AT+QFMOV="blob","RAM:blob"') == OK     # and back: a move, not a copy
    assert host.at("AT+QFLST") == OK
    assert download(host, "RAM:blob") == blob


@pytest.mark.parametrize("args,code", [
    ('"a.txt","b*.txt"', 406), ('"a.txt","RAM:b?.txt"', 406), ('"a?.txt","b.txt"', 406),
    ('"a.txt","XYZ:b.txt"', 406), ('"NVM:a.txt","b.txt"', 406), ('"a.txt","RAM:"', 406),
    ('"a.txt","../b.txt"', 406), ('"a.txt","b/c"', 406), ('"a.txt",""', 406),
    ('"a.txt","' + "x" * 81 + '"', 406), ('"a.txt","b.txt",0,1,1', 400),
    ('"a.txt","b.txt",-1', 400), ('"a.txt","b.txt",0,2', 400),
    ('"a.txt"', 400), ("", 400),
])
def test_qfmov_bad_names_and_parameters_are_cme_errors_and_keep_the_source(ec2x_strict, args, code):
    host, _, _ = ec2x_strict
    assert host.upload("a.txt", b"source") == qfupl_answer(b"source")
    out = host.at(f"AT+QFMOV={args}")
    assert re.fullmatch(rb"\r\n\+CME ERROR: \d+\r\n", out), out
    assert out == f"\r\n+CME ERROR: {code}\r\n".encode()
    assert host.at("AT+QFLST") == b'\r\n+QFLST: "a.txt",6\r\n\r\nOK\r\n'
    assert host.at('AT+QFLST="RAM:*"') == OK


def test_qfmov_onto_an_open_destination_by_another_name_is_426(ec2x):
    ec2x.upload("src.pem", b"new")
    ec2x.upload("dst.pem", b"old")
    out = ec2x.at('AT+QFOPEN="UFS:dst.pem",2')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
    assert ec2x.at('AT+QFMOV="src.pem","dst.pem",0,1') == b"\r\n+CME ERROR: 426\r\n"
    assert ec2x.at('AT+QFMOV="src.pem","ufs:dst.pem",1,1') == b"\r\n+CME ERROR: 426\r\n"
    host_read = ec2x.at(f"AT+QFREAD={handle},10")
    assert host_read == b"\r\nCONNECT 3\r\nold\r\nOK\r\n"
    assert ec2x.at(f"AT+QFCLOSE={handle}") == OK
    assert ec2x.at('AT+QFMOV="src.pem","dst.pem",0,1') == OK
    assert download(ec2x, "dst.pem") == b"new"


def test_qfmov_of_a_certificate_an_ssl_context_names(ec2x, net, pki, strict_log):
    """AT+QSSLCFG names a CA file; the file is moved away: the open fails with an error code
    (no traceback); moved back, the same context verifies again."""
    from emulator.testing.peers import TlsServer
    assert ec2x.upload("ca.pem", pki.ca.cert_pem).endswith(OK)
    with TlsServer(pki.server, legacy=True) as server:
        net(server)
        assert ec2x.at('AT+QSSLCFG="seclevel",2,1;+QSSLCFG="cacert",2,"ca.pem"') == OK
        assert ec2x.at('AT+QFMOV="ca.pem","RAM:moved.pem"') == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,2,0,"{SSL_HOST}",{SSL_PORT}') == OK
        line = ec2x.seen(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 30)
        assert line != b"+QSSLOPEN: 0,0\r\n", line
        assert ec2x.at("AT+QSSLCLOSE=0") == OK
        assert ec2x.at('AT+QFMOV="RAM:moved.pem","ca.pem"') == OK
        assert ec2x.at(f'AT+QSSLOPEN=1,2,1,"{SSL_HOST}",{SSL_PORT}') == OK
        assert ec2x.seen(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n"), 30) == b"+QSSLOPEN: 1,0\r\n"
        assert ec2x.at("AT+QSSLCLOSE=1") == OK


# =====================================================================================
# AT+QFREAD: only its range from the drive (the UFS directory drive changed under a handle)
# =====================================================================================

def _open_read_only(host, name: str) -> int:
    out = host.at(f'AT+QFOPEN="{name}",2')
    return int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))


def test_qfread_in_ranges_gives_the_file_byte_for_byte(open_modem, tmp_path):
    host, _ = open_modem("ec2x", state_dir=tmp_path / "r")
    blob = os.urandom(5000)
    assert host.upload("r.bin", blob) == qfupl_answer(blob)
    handle = _open_read_only(host, "r.bin")
    got = b""
    for n in (1, 2, 1000, 7, 4096):
        host.write(f"AT+QFREAD={handle},{n}\r")
        head = host.read_until(re.compile(rb"\r\nCONNECT \d+\r\n|\r\n\+CME ERROR: \d+\r\n"))
        k = int(re.search(rb"CONNECT (\d+)", head).group(1))
        got += host.read_exactly(k)
        assert host.read_until(OK) == OK
    assert got == blob
    assert host.at(f"AT+QFREAD={handle},1") == b"\r\n+CME ERROR: 402\r\n"
    assert host.at(f"AT+QFSEEK={handle},10,2") == OK
    assert host.at(f"AT+QFREAD={handle}") == b"\r\nCONNECT 10\r\n" + blob[-10:] + OK


# Was a bug, fixed: since AT+QFREAD reads only its range (d3212c1) it takes the file's size from
# the drive's index, which a file truncated on the UFS directory under an open handle does not
# update: AT+QFREAD answers 'CONNECT 0' and OK (nothing read, the position unmoved, so a driver
# reading until 402 loops forever); docs/behaviour.md: 'At the end of the file (nothing to read)
# +CME ERROR: 402', which it answered before the change
def test_qfread_of_a_file_truncated_on_the_directory_drive_under_a_handle(open_modem, tmp_path):
    state = tmp_path / "t"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.upload("t.bin", b"0123456789").endswith(OK)
    handle = _open_read_only(host, "t.bin")
    assert host.at(f"AT+QFREAD={handle},4") == b"\r\nCONNECT 4\r\n0123\r\nOK\r\n"
    (state / "ufs" / "t.bin").write_bytes(b"01")              # cut behind the modem's back
    assert host.at(f"AT+QFREAD={handle},4") == b"\r\n+CME ERROR: 402\r\n"


def test_qfread_of_a_file_deleted_on_the_directory_drive_under_a_handle(open_modem, tmp_path, strict_log):
    state = tmp_path / "d"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.upload("d.bin", b"0123456789").endswith(OK)
    handle = _open_read_only(host, "d.bin")
    (state / "ufs" / "d.bin").unlink()
    out = host.at(f"AT+QFREAD={handle},4")
    assert out == b"\r\n+CME ERROR: 405\r\n", out
    assert host.at(f"AT+QFCLOSE={handle}") == OK
    assert host.at("AT") == OK


def test_qfread_of_a_file_replaced_by_a_directory_under_a_handle(open_modem, tmp_path, strict_log):
    state = tmp_path / "dir"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.upload("x.bin", b"0123456789").endswith(OK)
    handle = _open_read_only(host, "x.bin")
    path = state / "ufs" / "x.bin"
    path.unlink()
    path.mkdir()
    out = host.at(f"AT+QFREAD={handle},4")
    assert re.fullmatch(rb"\r\n\+CME ERROR: 4\d\d\r\n", out), out
    assert host.at("AT") == OK


def test_qfread_of_a_file_replaced_by_a_symlink_under_a_handle(open_modem, tmp_path, strict_log):
    state = tmp_path / "ln"
    secret = tmp_path / "secret"
    secret.write_bytes(b"SECRET-HOST-FILE")
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.upload("l.bin", b"0123456789").endswith(OK)
    handle = _open_read_only(host, "l.bin")
    path = state / "ufs" / "l.bin"
    path.unlink()
    path.symlink_to(secret)
    out = host.at(f"AT+QFREAD={handle},4")
    assert b"SECR" not in out
    assert re.fullmatch(rb"\r\n\+CME ERROR: 4\d\d\r\n", out), out


def test_qfread_after_qfwrite_on_ram_sees_the_new_bytes(ec2x):
    out = ec2x.at('AT+QFOPEN="RAM:rw",1')
    handle = int(re.search(rb"\+QFOPEN: (\d+)", out).group(1))
    ec2x.write(f"AT+QFWRITE={handle},6\r")
    assert ec2x.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    ec2x.write(b"abcdef")
    assert ec2x.read_until(OK) == b"\r\n+QFWRITE: 6,6\r\n\r\nOK\r\n"
    assert ec2x.at(f"AT+QFSEEK={handle},2") == OK
    assert ec2x.at(f"AT+QFREAD={handle},3") == b"\r\nCONNECT 3\r\ncde\r\nOK\r\n"
    assert ec2x.at(f"AT+QFTUCAT={handle}") == OK
    assert ec2x.at(f"AT+QFREAD={handle},3") == b"\r\n+CME ERROR: 402\r\n"
    assert ec2x.at(f"AT+QFSEEK={handle},0") == OK
    assert ec2x.at(f"AT+QFREAD={handle}") == b"\r\nCONNECT 5\r\nabcde\r\nOK\r\n"
    assert ec2x.at(f"AT+QFREAD={handle},2147483647") == b"\r\n+CME ERROR: 402\r\n"
    assert ec2x.at(f"AT+QFREAD={handle},2147483648") == b"\r\n+CME ERROR: 400\r\n"
    assert ec2x.at(f"AT+QFREAD={handle},0") == b"\r\n+CME ERROR: 400\r\n"


# =====================================================================================
# AT+QICFG: hex AT+QISEND, hex / viewmode AT+QIRD, recvind
# =====================================================================================

def _hex_send(host, line: str, typed: bytes) -> bytes:
    host.write(line + "\r")
    assert host.read_until(PROMPT_OR_ERROR).endswith(b"> ")
    host.write(typed)
    return host.read_until(RESULT)


# Was a bug, fixed: hex AT+QISEND decodes the typed digits with bytes.fromhex(), which skips ASCII
# whitespace: '41 42' (or '41\r\n' for a fixed length of 2) is SEND OK and sends b'AB' (b'A': one
# byte for <send_length> 2); docs/behaviour.md: 'digits that are no hex, or an odd number, answer
# ERROR (552) and send nothing', and a fixed <length> 'counts the bytes sent'
@pytest.mark.parametrize("line,typed", [("AT+QISEND=0,2", b"41\r\n"), ("AT+QISEND=0", b"41 42\x1a"),
                                        ("AT+QISEND=0", b"\t41\x1a")])
def test_hex_send_whitespace_is_not_a_hex_digit(ec2x_strict, tcp_echo, line, typed):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    assert _hex_send(host, line, typed) == ERROR
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"


@pytest.mark.parametrize("typed", [b"zz", b"4\xff", b"\xc3\xa9", b"4\x1a", b"\x1b\x1b", b"0x"])
def test_hex_send_fixed_length_bad_digits_error_nothing_sent_nothing_left(ec2x_strict, tcp_echo, typed):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    assert _hex_send(host, "AT+QISEND=0,1", typed) == ERROR     # 2 digits for 1 byte
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    assert host.at("AT") == OK                                  # none of the digits was left over


def test_hex_send_with_echo_echoes_the_digits(open_modem, tcp_echo):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(OK)
    assert host.at('AT+QICFG="dataformat",1,0').endswith(OK)
    qiopen(host, 0, echo=True)
    host.write("AT+QISEND=0,3\r")
    assert host.read_until(b"> ") == b"AT+QISEND=0,3\r\r\n> "
    host.write(b"48690a")
    assert host.read_until(RESULT) == b"48690a\r\nSEND OK\r\n"
    assert tcp_echo.wait_connection().wait_received(3) == b"Hi\n"


def test_hex_send_escape_cancels_and_ctrl_z_ends(ec2x_strict, tcp_sink):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    assert _hex_send(host, "AT+QISEND=0", b"4142\x1b") == ERROR
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n"
    assert _hex_send(host, "AT+QISEND=0", b"4142\x1a") == b"\r\nSEND OK\r\n"
    assert _hex_send(host, "AT+QISEND=0", b"\x1a") == ERROR     # nothing to send
    assert tcp_sink.wait_connection().wait_received(2) == b"AB"
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 2,2,0\r\n\r\nOK\r\n"


def test_hex_send_at_the_maximum_length(ec2x_strict, tcp_sink):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    payload = bytes(range(256)) * 5 + bytes(180)                # 1460 bytes: send_max
    assert len(payload) == 1460
    assert _hex_send(host, "AT+QISEND=0,1460", payload.hex().encode()) == b"\r\nSEND OK\r\n"
    assert _hex_send(host, "AT+QISEND=0", payload.hex().upper().encode() + b"\x1a") == b"\r\nSEND OK\r\n"
    assert tcp_sink.wait_connection().wait_received(2920) == payload * 2
    # one byte over the most, counted in bytes, not digits
    assert host.at("AT+QISEND=0,1461") == ERROR
    out = _hex_send(host, "AT+QISEND=0", payload.hex().encode() + b"41\x1a")
    assert out == ERROR
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 2920,2920,0\r\n\r\nOK\r\n"


def test_hex_and_viewmode_on_a_udp_service(ec2x_strict):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,1;+QICFG="viewmode",1') == OK
    port = free_port(socket.SOCK_DGRAM)
    qiopen(host, 3, "UDP SERVICE", "127.0.0.1", 0, local_port=port)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(10)
        me = peer.getsockname()[1]
        peer.sendto(b"\x00ok\r\n", ("127.0.0.1", port))
        host.seen(b'+QIURC: "recv",3\r\n')
        assert host.at("AT+QIRD=3") == f'\r\n+QIRD: 5,"127.0.0.1",{me},006f6b0d0a\r\n\r\nOK\r\n'.encode()
        assert host.at("AT+QIRD=3,0") == b"\r\n+QIRD: 5,5,0\r\n\r\nOK\r\n"
        assert _hex_send(host, f'AT+QISEND=3,2,"127.0.0.1",{me}', b"ff00") == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(100)[0] == b"\xff\x00"
    finally:
        peer.close()


def test_hex_and_viewmode_on_a_tcp_incoming_socket(ec2x_strict):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,1;+QICFG="viewmode",1;+QICFG="recvind",1') == OK
    port = free_port()
    qiopen(host, 11, "TCP LISTENER", "127.0.0.1", 0, local_port=port)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        line = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,11,[^\r]*\r\n'))
        cid = int(re.search(rb'"incoming",(\d+),', line).group(1))
        client.sendall(b"hey")
        assert host.seen(re.compile(rb'\+QIURC: "recv",%d[^\r]*\r\n' % cid)) == \
            b'+QIURC: "recv",%d,3\r\n' % cid
        assert host.at(f"AT+QIRD={cid}") == b"\r\n+QIRD: 3,686579\r\n\r\nOK\r\n"
        assert host.at(f"AT+QIRD={cid},0") == b"\r\n+QIRD: 3,3,0\r\n\r\nOK\r\n"
        assert _hex_send(host, f"AT+QISEND={cid},2", b"6f4B") == b"\r\nSEND OK\r\n"
        assert client.recv(10) == b"oK"
        assert host.at(f"AT+QIRD={cid}") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    finally:
        client.close()


def test_qird_query_and_zero_with_hex_and_viewmode(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",0,1;+QICFG="viewmode",1') == OK
    qiopen(host, 0)
    assert qisend(host, 0, b"abc") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 3,0,3\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,1") == b"\r\n+QIRD: 1,61\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 3,1,2\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 2,6263\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,1501") == ERROR
    assert host.at("AT+QIRD=0,-1") == ERROR


@pytest.mark.parametrize("line", [
    'AT+QICFG="' + "v" * 33 + '",1', 'AT+QICFG="' + "x" * 2000 + '"', 'AT+QICFG="viewmode",-1',
    'AT+QICFG="viewmode",2147483648', 'AT+QICFG="viewmode",99999999999999999999999',
    'AT+QICFG="recv/buffersize",10239', 'AT+QICFG="recv/buffersize",524289',
    'AT+QICFG="dataformat",1', 'AT+QICFG="dataformat",1,1,1', 'AT+QICFG="dataformat",,1',
    'AT+QICFG="dataformat","1","1"', 'AT+QICFG="viewmode",0x1', 'AT+QICFG="viewmode",1.0',
    'AT+QICFG="tcp/keepalive",1,0,25,3', 'AT+QICFG="tcp/keepalive",0,200',
    'AT+QICFG="",1', 'AT+QICFG=""', 'AT+QICFG="view\x01mode",1',
    'AT+QICFG="viewmode,1"', 'AT+QICFG="viewmode",1,', 'AT+QICFG=,1', "AT+QICFG=?1",
])
def test_qicfg_bad_input_is_a_plain_error_and_keeps_the_settings(ec2x_strict, line):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="viewmode",1;+QICFG="dataformat",1,0') == OK
    assert host.at(line) == ERROR
    assert host.at('AT+QICFG="viewmode"') == b'\r\n+QICFG: "viewmode",1\r\n\r\nOK\r\n'
    assert host.at('AT+QICFG="dataformat"') == b'\r\n+QICFG: "dataformat",1,0\r\n\r\nOK\r\n'
    assert host.at('AT+QICFG="recv/buffersize"') == b'\r\n+QICFG: "recv/buffersize",10240\r\n\r\nOK\r\n'
    assert host.at('AT+QICFG="tcp/keepalive"') == b'\r\n+QICFG: "tcp/keepalive",0\r\n\r\nOK\r\n'


def test_qicfg_on_the_ml302_is_error_in_every_form(ml302):
    for line in ('AT+QICFG="viewmode",1', 'AT+QICFG="viewmode"', "AT+QICFG=?", "AT+QICFG?",
                 "AT+QICFG", 'AT+QICFG="dataformat",1,1'):
        assert ml302.at(line) == ERROR, line


def test_qicfg_typed_while_online_is_data_and_works_after_the_escape(ec2x_strict, tcp_echo):
    host, advance, _ = ec2x_strict
    host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    conn = tcp_echo.wait_connection()
    line = b'AT+QICFG="dataformat",1,1\r\n'
    host.write(line)
    advance(0.25)                                                # transwaittm's 200 ms
    assert conn.wait_received(len(line)) == line                 # data, not a command
    assert host.read_exactly(len(line)) == line                  # the echo server's copy
    advance(1.2)
    host.write(b"+++")
    advance(1.2)
    assert host.read_until(OK) == OK
    assert host.at('AT+QICFG="dataformat"') == b'\r\n+QICFG: "dataformat",0,0\r\n\r\nOK\r\n'
    assert host.at('AT+QICFG="dataformat",1,1') == OK
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    host.write(b"4142")                                           # transparent: not converted
    advance(0.25)
    assert conn.wait_received(len(line) + 4) == line + b"4142"


def test_recvind_length_is_what_waits_unread(ec2x_strict, tcp_echo):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="recvind",1') == OK
    qiopen(host, 0)
    assert qisend(host, 0, b"12345") == b"\r\nSEND OK\r\n"
    assert host.seen(re.compile(rb'\+QIURC: "recv",0[^\r]*\r\n')) == b'+QIURC: "recv",0,5\r\n'
    assert host.at("AT+QIRD=0,2") == b"\r\n+QIRD: 2\r\n12\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 3\r\n345\r\n\r\nOK\r\n"
    assert qisend(host, 0, b"abcdefg") == b"\r\nSEND OK\r\n"
    assert host.seen(re.compile(rb'\+QIURC: "recv",0[^\r]*\r\n')) == b'+QIURC: "recv",0,7\r\n'
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 7\r\nabcdefg\r\n\r\nOK\r\n"


def test_qisendex_is_not_decoded_twice_in_hex_send_mode(ec2x_strict, tcp_sink):
    host, _, _ = ec2x_strict
    assert host.at('AT+QICFG="dataformat",1,0') == OK
    qiopen(host, 0)
    assert host.at('AT+QISENDEX=0,"3431"') == b"\r\nSEND OK\r\n"
    assert tcp_sink.wait_connection().wait_received(2) == b"41"


# =====================================================================================
# Checksums without leading zeros (AT+QFUPL / AT+QFDWL)
# =====================================================================================

@pytest.mark.parametrize("data,checksum", [(b"\x00\x05", "5"), (b"\x00\x00", "0"), (b"\x0a", "a00"),
                                           (b"\x00\x10\x00\x01", "11"), (b"\x12\x34", "1234")])
def test_small_checksums_have_no_leading_zeros(ec2x, data, checksum):
    assert ec2x.upload("c.bin", data) == f"\r\n+QFUPL: {len(data)},{checksum}\r\n\r\nOK\r\n".encode()
    ec2x.write(b'AT+QFDWL="c.bin"\r')
    assert ec2x.read_until(b"OK\r\n") == (b"\r\nCONNECT\r\n" + data
                                          + f"\r\n+QFDWL: {len(data)},{checksum}\r\n\r\nOK\r\n".encode())


def test_an_empty_file_from_an_escape_downloads_with_checksum_0(ec2x_strict):
    host, advance, _ = ec2x_strict
    start_upload(host, "RAM:e.bin", 10)
    escape_in_upload(host, advance)
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 0,0\r\n\r\nOK\r\n"
    host.write(b'AT+QFDWL="RAM:e.bin"\r')
    assert host.read_until(b"OK\r\n") == b"\r\nCONNECT\r\n\r\n+QFDWL: 0,0\r\n\r\nOK\r\n"
