"""Adversarial tests of output flow control (AT+IFC=<x>,2 holding host input while more than
64 KiB of output wait unread) and of AT+QFDWL streaming a file over 64 KiB piece by piece
(docs/behaviour.md: "AT+IFC=<x>,2", "An answer that would put more than 64 KiB").

Bugs found and fixed (tests marked "Was a bug, fixed" and the reboot / small-bound tests): a
control-API reboot let a download stream on and answer OK after the boot URCs; a profile bound
of 100000 or 4096 bytes lost download data and disabled the hold (the minimum is 256 KiB now);
a held port missed a close and reopen within 50 ms (its hang-up was polled)."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest

from emulator.at.mode import Mode
from emulator.modem.profile import load_profile
from emulator.storage.checksum import format_checksum, xor16
from emulator.testing.host import Host
from tests.e2e.socket_support import wait_for

HIGH_WATER = 64 * 1024
BIG = os.urandom(1_300_000)                 # more than serial.output_backlog (1 MiB)
MID = os.urandom(300_000)


def trailer(data: bytes) -> bytes:
    return f"+QFDWL: {len(data)},{format_checksum(xor16(data), pad=False)}".encode()


def atv1_download(data: bytes) -> bytes:
    return b"\r\nCONNECT\r\n" + data + b"\r\n" + trailer(data) + b"\r\n\r\nOK\r\n"


def _mode(emulator, port):
    return emulator.run(lambda: port.modem.interpreter.mode)


def _held(emulator, port) -> bool:
    return emulator.run(lambda: port.modem.input_held("output"))


def _answered(emulator, port, host) -> None:
    """Wait until the modem read all the host wrote and answered it (back in command mode,
    nothing left to run): its answer is out, however slow the machine."""
    emulator.wait_received(port, host.written)
    wait_for(lambda: _mode(emulator, port) is Mode.COMMAND and not
             emulator.run(lambda: bool(port.modem.interpreter._inbox)), what="answered")


def _start_held(emulator, port, host, count: int = 3000):
    """AT+IFC=2,2 then ~100 KB of pipelined ATI answers the host does not read: the modem
    stops taking input past 64 KiB.  Returns the writer thread (it may block in the pty)."""
    writer = threading.Thread(target=host.write, args=(b"ATI\r" * count,), daemon=True)
    writer.start()
    wait_for(lambda: _held(emulator, port), what="input held for output")
    return writer


def start_download(host) -> None:
    """BIG uploaded as big.bin and its AT+QFDWL under way: CONNECT read, the rest unread."""
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin"\r')
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"


def _ati(emulator, port) -> bytes:
    return b"\r\nQuectel\r\nEC25\r\nRevision: " + emulator.run(
        lambda: port.modem.profile["identity.revision"]).encode() + b"\r\n\r\nOK\r\n"


# == 1. the hold itself: every pipelined answer arrives, once, in order ============================
def test_held_port_delivers_every_pipelined_answer_then_takes_input_again(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = _start_held(emulator, port, host)
    time.sleep(0.1)
    assert emulator.run(lambda: port.port.backlog) < HIGH_WATER + len(one) + 1
    got = host.read_exactly(3000 * len(one), timeout=30)
    writer.join(10)
    assert got == one * 3000
    assert host.quiet_for(0.2) == b""
    assert not _held(emulator, port)
    assert host.at("AT+IFC?") == b"\r\n+IFC: 2,2\r\n\r\nOK\r\n"


def test_ifc_back_to_0_0_after_a_hold_no_longer_holds(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = _start_held(emulator, port, host, 2500)
    assert host.read_exactly(2500 * len(one), timeout=30) == one * 2500
    writer.join(10)
    assert host.at("AT+IFC=0,0") == b"\r\nOK\r\n"
    host.write(b"ATI\r" * 2500)                 # ~85 KB: past HIGH_WATER, under the 1 MiB bound
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="all input read")
    assert not _held(emulator, port)
    assert host.read_exactly(2500 * len(one), timeout=30) == one * 2500


# == 2. URCs while held ============================================================================
def test_urc_raised_while_held_comes_after_the_queued_answers_and_input_resumes(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    # the first answer past 64 KiB stops the input: how many went out is fixed by then
    writer = _start_held(emulator, port, host)
    answered = emulator.run(lambda: port.port.backlog)
    assert emulator.control("urc", text="+QIURC: \"held\"") == {"ok": True}
    got = host.read_until(b'+QIURC: "held"\r\n', timeout=30)
    before = got[:-len(b'\r\n+QIURC: "held"\r\n')]
    assert len(before) % len(one) == 0 and before == one * (len(before) // len(one))
    assert len(before) >= answered
    rest = host.read_exactly(3000 * len(one) - len(before), timeout=30)
    writer.join(10)
    assert rest == one * (3000 - len(before) // len(one))
    assert host.at("AT") == b"\r\nOK\r\n"


# == 3. the control API on a held modem ============================================================
def test_reboot_of_a_held_modem_leaves_it_answering(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    writer = _start_held(emulator, port, host)
    assert emulator.control("reboot", ms=10) == {"ok": True}
    # the module lost power: what the host still had to say is gone, what was out stays out
    host.quiet_for(0.5)
    writer.join(10)
    host.seen(b"+QIND: PB DONE\r\n")                           # the whole boot (on real time)
    host.quiet_for(0.3)
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"                # factory ATE1 again
    assert host.at("AT+IFC?") == b"\r\n+IFC: 0,0\r\n\r\nOK\r\n"    # not AT&W'd
    assert not _held(emulator, port)


def test_dtr_drop_of_a_held_modem_changes_nothing(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2;&D2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = _start_held(emulator, port, host)
    assert emulator.control("dtr", level=0) == {"ok": True}
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert host.read_exactly(3000 * len(one), timeout=30) == one * 3000
    writer.join(10)
    assert host.at("AT") == b"\r\nOK\r\n"


# == 4. a held host closes, the next one opens soon after ==========================================
# Was a bug, fixed: a held port (AT+IFC=2,2 hold) had its reader off and PtyPort._watch_paused
# looked for a hang-up only every 50 ms (POLL_INTERVAL), so a host that closed and a new one
# that opened 10 ms later was never seen as a hang-up (modem.epoch stayed 0): the new host got
# the first host's unread output (~64 KiB) and, once it read, the answers to the first host's
# pipelined ATI commands still in the interpreter's inbox (8 runs of 8: 81139 bytes).  A paused
# port now has the hang-up reported by an epoll of its own (EPOLLHUP), as a reading port sees
# the EIO at once.
def test_held_host_closes_and_the_next_opens_after_10_ms_gets_no_answer_of_the_first(open_modem, emulator):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    writer = _start_held(emulator, port, host, 2000)   # ~100 KB of answers: held before the end
    writer.join(5)                      # every byte is in the pty (the host is not mid-write)
    assert not writer.is_alive()
    # tens of KB of unread answers wait (the hold came past HIGH_WATER; the pty may take a
    # few KiB more afterwards, when the kernel moves its buffer on to the line discipline)
    assert emulator.run(lambda: port.port.backlog) > HIGH_WATER // 2
    assert emulator.run(lambda: len(port.modem.interpreter._inbox)) > 0  # and unrun commands
    epoch = emulator.run(lambda: port.modem.epoch)
    host.close()
    time.sleep(0.01)
    nxt = Host(port.path)
    try:
        assert nxt.quiet_for(0.5) == b""
        assert nxt.at("AT") == b"\r\nOK\r\n"
        assert emulator.run(lambda: port.modem.epoch) == epoch + 1       # the hang-up was seen
    finally:
        nxt.close()


def test_unheld_host_closes_and_the_next_opens_after_10_ms_gets_no_answer_of_the_first(open_modem, emulator):
    """The same without AT+IFC (the reader on, ~100 KB of answers unread): the hang-up is seen
    at once, the next host meets none of it."""
    host, port = open_modem("ec2x")
    host.write(b"ATI\r" * 2000)
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="all read")
    assert emulator.run(lambda: port.port.backlog) > HIGH_WATER
    host.close()
    time.sleep(0.01)
    nxt = Host(port.path)
    try:
        assert nxt.quiet_for(0.3) == b""
        assert nxt.at("AT") == b"\r\nOK\r\n"
    finally:
        nxt.close()


# == 5. AT+QFDWL streaming: framing in every result-code form =====================================
@pytest.mark.parametrize("settings", ["ATV1", "ATV0", "ATQ1", "ATE1"])
def test_big_download_framed_as_a_small_one(open_modem, emulator, strict_log, settings):
    host, port = open_modem("ec2x")
    small = os.urandom(1000)
    assert host.upload("small.bin", small).endswith(b"\r\nOK\r\n")
    assert host.upload("mid.bin", MID).endswith(b"\r\nOK\r\n")
    host.write(settings + "\r")
    _answered(emulator, port, host)
    host.quiet_for(0.2)
    host.write('AT+QFDWL="small.bin"\r')
    _answered(emulator, port, host)                  # (COMMAND alone: also before it was read)
    small_answer = host.quiet_for(0.3)
    assert small in small_answer
    head, tail = small_answer.split(small)
    head = head.replace(b"small.bin", b"mid.bin")
    tail = tail.replace(trailer(small), trailer(MID))
    host.write('AT+QFDWL="mid.bin"\r')
    expected = head + MID + tail
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


# == 6. what happens around a download =============================================================
def test_urc_during_a_download_comes_after_its_ok(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    start_download(host)
    assert _mode(emulator, port) is Mode.PENDING
    assert emulator.control("urc", text="+CMTI: \"SM\",1") == {"ok": True}
    expected = BIG + b"\r\n" + trailer(BIG) + b"\r\n\r\nOK\r\n\r\n+CMTI: \"SM\",1\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


def test_commands_written_during_a_download_run_after_it(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    start_download(host)
    host.write("AT+CGMI\rATE1\rAT\r")
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="read")
    assert _mode(emulator, port) is Mode.PENDING
    expected = (BIG + b"\r\n" + trailer(BIG) + b"\r\n\r\nOK\r\n"
                + b"\r\nQuectel\r\n\r\nOK\r\n" + b"\r\nOK\r\n" + b"AT\r\r\nOK\r\n")
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


def test_download_pipelined_twice_by_a_late_reader_arrives_twice_whole(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin";+QFDWL="big.bin"\r')
    time.sleep(0.5)                             # nothing read meanwhile
    assert emulator.run(lambda: port.port.backlog) <= 2 * HIGH_WATER + 64
    one = b"\r\nCONNECT\r\n" + BIG + b"\r\n" + trailer(BIG) + b"\r\n"
    expected = one + one + b"\r\nOK\r\n"
    assert host.read_exactly(len(expected), timeout=60) == expected
    assert host.quiet_for(0.2) == b""


def test_pdp_loss_during_a_download_reported_after_its_ok(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    start_download(host)
    assert emulator.control("pdp_deact", cid=1)["ok"] is True
    expected = BIG + b"\r\n" + trailer(BIG) + b"\r\n\r\nOK\r\n" + b'\r\n+QIURC: "pdpdeact",1\r\n'
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


def test_dtr_drop_during_a_download_changes_nothing(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT&D2") == b"\r\nOK\r\n"
    start_download(host)
    assert emulator.control("dtr", level=0) == {"ok": True}
    expected = BIG + b"\r\n" + trailer(BIG) + b"\r\n\r\nOK\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert emulator.control("dtr", level=1) == {"ok": True}
    assert host.at("AT") == b"\r\nOK\r\n"


def test_two_modems_download_at_once(open_modem, emulator, strict_log):
    a, pa = open_modem("ec2x")
    b, pb = open_modem("ec2x")
    other = os.urandom(1_100_000)
    assert a.upload("f.bin", BIG).endswith(b"\r\nOK\r\n")
    assert b.upload("f.bin", other).endswith(b"\r\nOK\r\n")
    a.write('AT+QFDWL="f.bin"\r')
    b.write('AT+QFDWL="f.bin"\r')
    ea, eb = atv1_download(BIG), atv1_download(other)
    got_a, got_b = bytearray(), bytearray()
    deadline = time.monotonic() + 60
    while (len(got_a) < len(ea) or len(got_b) < len(eb)) and time.monotonic() < deadline:
        for h, got, e in ((a, got_a, ea), (b, got_b, eb)):
            if len(got) < len(e):
                got += h.read_exactly(min(50_000, len(e) - len(got)), timeout=30)
    assert bytes(got_a) == ea
    assert bytes(got_b) == eb


def test_download_on_manual_time(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", manual_time=True)
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin"\r')
    expected = atv1_download(BIG)
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.at("AT") == b"\r\nOK\r\n"


def test_download_when_the_host_pipelined_more_than_the_hold(open_modem, emulator, strict_log):
    """AT+IFC=2,2 and a download behind ~100 KB of unread answers: it waits for the hold, then
    streams; every byte once."""
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    host_bytes = b"ATI\r" * 3000 + b'AT+QFDWL="big.bin"\rAT\r'
    writer = threading.Thread(target=host.write, args=(host_bytes,), daemon=True)
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    expected = one * 3000 + atv1_download(BIG) + b"\r\nOK\r\n"
    assert host.read_exactly(len(expected), timeout=60) == expected
    writer.join(10)
    assert host.quiet_for(0.2) == b""


def test_slow_qfdwl_streams_whole(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    assert emulator.control("slow", command="AT+QFDWL", ms=200) == {"ok": True}
    host.write('AT+QFDWL="big.bin"\r')
    expected = atv1_download(BIG)
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


# == 7. a reboot during a download ================================================================
def test_reboot_during_a_download_ends_it(open_modem, emulator):
    """The control API's reboot: "whatever the port was doing ... ends without an answer, as
    when the module's power goes"."""
    host, port = open_modem("ec2x")
    start_download(host)
    host.read_exactly(100_000)
    assert emulator.control("reboot", ms=10) == {"ok": True}
    got = host.read_until(b"\r\nRDY\r\n", timeout=5)   # (the port reads from RDY on)
    host.write("AT\r")
    got += host.read_until(b"\r\nOK\r\n", timeout=5)   # the module after its restart answers
    assert trailer(BIG) not in got                      # ... and the old download is over
    assert len(got) < 400_000


# == 8. a small serial.output_backlog ==============================================================
def _small_backlog(size: int):
    profile = load_profile("ec2x")
    profile.data["serial"]["output_backlog"] = size
    profile._found.clear()
    return profile


def test_download_with_a_small_output_backlog_arrives_whole(open_modem, emulator):
    host, port = open_modem(_small_backlog(256 * 1024))   # the least the profile takes
    assert host.upload("mid.bin", MID).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="mid.bin"\r')
    expected = atv1_download(MID)
    got = host.read_exactly(len(expected), timeout=10)
    assert got == expected


def test_hold_with_a_small_output_backlog_drops_nothing(open_modem, emulator):
    host, port = open_modem(_small_backlog(256 * 1024))   # the least the profile takes
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = threading.Thread(target=host.write, args=(b"ATI\r" * 3000,), daemon=True)
    writer.start()
    time.sleep(0.5)
    got = host.read_exactly(3000 * len(one), timeout=10)
    writer.join(10)
    assert got == one * 3000


# == 9. pipelined upload behind a hold, paced output ===============================================
def test_upload_pipelined_behind_a_hold_stores_exactly_its_bytes(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    payload = b"x" + os.urandom(4999)          # (pipelined: not starting with LF, see section 12)
    writer = threading.Thread(target=host.write, daemon=True, args=(
        b"ATI\r" * 3000 + f'AT+QFUPL="up.bin",{len(payload)}\r'.encode() + payload + b"AT\r",))
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    expected = (one * 3000 + b"\r\nCONNECT\r\n"
                + f"\r\n+QFUPL: {len(payload)},{format_checksum(xor16(payload), pad=False)}\r\n\r\nOK\r\n".encode()
                + b"\r\nOK\r\n")
    assert host.read_exactly(len(expected), timeout=30) == expected
    writer.join(10)
    host.write('AT+QFDWL="up.bin"\r')
    assert host.read_exactly(len(atv1_download(payload))) == atv1_download(payload)


def test_hold_with_paced_output_delivers_every_answer(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", baud=2_000_000)
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = threading.Thread(target=host.write, args=(b"ATI\r" * 3000,), daemon=True)
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    assert host.read_exactly(3000 * len(one), timeout=30) == one * 3000
    writer.join(10)
    assert host.at("AT") == b"\r\nOK\r\n"


def test_noisy_download_arrives_whole(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.upload("mid.bin", MID[:10_000]).endswith(b"\r\nOK\r\n")
    assert emulator.control("uart_noise", on=True)["ok"] is True
    host.write('AT+QFDWL="mid.bin"\r')
    expected = atv1_download(MID[:10_000])
    assert host.read_exactly(len(expected), timeout=60) == expected


# == 10. transparent mode: escape, then commands and ATO behind the output backlog ==================
def test_transparent_escape_then_ato_behind_a_backlog_keeps_every_byte(ec2x_strict, emulator, tcp_echo):
    import random
    host, advance, port = ec2x_strict
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    host.write('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    data = bytes(random.Random(7).choice(b"abcdefghij") for _ in range(200_000))
    host.write(data)
    wait_for(lambda: emulator.run(lambda: port.port.backlog) > HIGH_WATER - 2000, what="a backlog")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    wait_for(lambda: _mode(emulator, port) is Mode.COMMAND, what="escaped")
    host.write(b"ATI\rATO\r")
    part1 = host.read_until(b"\r\nOK\r\n", timeout=30)[:-6]
    assert host.read_until(b"\r\nOK\r\n") == _ati(emulator, port)
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    part2 = host.read_exactly(len(data) - len(part1), timeout=30)
    assert part1 + part2 == data
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"


# == 11. small answers paced behind a backlog (the paced path for any size) =======================
def test_small_download_behind_a_backlog_without_ifc_arrives_whole_and_in_order(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    small = os.urandom(3000)
    assert host.upload("s.bin", small).endswith(b"\r\nOK\r\n")
    one = host.at("ATI")
    host.write(b"ATI\r" * 2000 + b'AT+QFDWL="s.bin"\rAT+QFDWL="s.bin"\rAT+CGMI\r')
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="all read")
    expected = one * 2000 + atv1_download(small) * 2 + b"\r\nQuectel\r\n\r\nOK\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.quiet_for(0.2) == b""


def test_hang_up_while_a_small_answer_waits_for_the_backlog_next_host_gets_none(open_modem, emulator):
    host, port = open_modem("ec2x")
    small = os.urandom(3000)
    assert host.upload("s.bin", small).endswith(b"\r\nOK\r\n")
    host.write(b"ATI\r" * 2000 + b'AT+QFDWL="s.bin"\r')
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="all read")
    wait_for(lambda: _mode(emulator, port) is Mode.PENDING, what="the download waits")
    host.close()
    wait_for(lambda: _mode(emulator, port) is Mode.COMMAND, what="it ended")
    nxt = Host(port.path)
    try:
        assert nxt.at("AT") == b"\r\nOK\r\n"
        assert nxt.quiet_for(0.3) == b""
    finally:
        nxt.close()


def test_ml302_hold_delivers_every_pipelined_answer(open_modem, emulator, strict_log):
    host, port = open_modem("ml302")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"            # (the ML302 profile lists AT+IFC)
    one = host.at("AT+CGMI")
    writer = threading.Thread(target=host.write, args=(b"AT+CGMI\r" * 4000,), daemon=True)
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    assert host.read_exactly(4000 * len(one), timeout=30) == one * 4000
    writer.join(10)
    assert host.at("AT") == b"\r\nOK\r\n"


def test_reboot_while_a_download_waits_for_a_host_that_reads_nothing_frees_the_port(open_modem, emulator):
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    host.write('AT+QFDWL="big.bin"\r')
    wait_for(lambda: emulator.run(lambda: port.port.backlog) > HIGH_WATER, what="a backlog")
    assert emulator.control("reboot", ms=10) == {"ok": True}
    before = host.read_until(b"\r\nRDY\r\n", timeout=5)   # (the port reads from RDY on)
    assert trailer(BIG) not in before
    host.write("AT\r")
    wait_for(lambda: emulator.run(lambda: port.port.received) >= host.written, what="read")
    wait_for(lambda: _mode(emulator, port) is Mode.COMMAND and not
             emulator.run(lambda: bool(port.modem.interpreter._inbox)), what="AT answered")
    got = host.quiet_for(1.0)
    assert got.endswith(b"AT\r\r\nOK\r\n") or b"AT\r\r\nOK\r\n" in got
    assert trailer(BIG) not in got
    assert len(got) < 400_000


# == 12. direct push while the port is held =======================================================
def _parse_stream(stream: bytes, one: bytes, cid: int = 0):
    """Answers and push URCs of a held, pipelined port: (answer tokens, pushed bytes)."""
    tokens, pushed, i = [], bytearray(), 0
    head = re.compile(rb'\r\n\+QIURC: "recv",%d,(\d+)\r\n' % cid)
    fixed = [one, b"\r\n> ", b"\r\nSEND OK\r\n", b"\r\nOK\r\n"]
    while i < len(stream):
        m = head.match(stream, i)
        if m:
            n = int(m.group(1))
            pushed += stream[m.end():m.end() + n]
            i = m.end() + n
            if stream[i:i + 2] != b"\r\n":           # each push's data end with CR LF
                raise AssertionError(f"push data not ended by CR LF at {i}: {stream[i:i + 80]!r}")
            i += 2
            continue
        for tok in fixed:
            if stream.startswith(tok, i):
                tokens.append(tok)
                i += len(tok)
                break
        else:
            raise AssertionError(f"unexpected bytes at {i}: {stream[i:i + 80]!r}")
    return tokens, bytes(pushed)


def test_direct_push_while_held_interleaves_only_between_answers(open_modem, emulator, tcp_echo, strict_log):
    from tests.e2e.socket_support import qiopen
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    qiopen(host, 0, mode=1)
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    # (pipelined before the prompt, a payload's first LF would be taken as the line's CR LF
    # ending, by design: they start with another byte)
    payloads = [b"x" + os.urandom(999) for _ in range(60)]
    script = b"ATI\r" * 2000 + b"".join(b"AT+QISEND=0,1000\r" + p for p in payloads) + b"AT\r"
    writer = threading.Thread(target=host.write, args=(script,), daemon=True)
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    time.sleep(0.3)
    want = [one] * 2000 + [b"\r\n> ", b"\r\nSEND OK\r\n"] * 60 + [b"\r\nOK\r\n"]
    got = bytearray()
    deadline = time.monotonic() + 30
    while True:
        got += host.quiet_for(0.1)
        try:
            tokens, pushed = _parse_stream(bytes(got), one)
        except AssertionError:            # (a token cut by the read: more comes)
            tokens, pushed = [], b""
        if len(tokens) >= len(want) and len(pushed) >= 60_000:
            break
        assert time.monotonic() < deadline, repr((len(tokens), len(pushed), _mode(emulator, port),
                                             _held(emulator, port), emulator.run(port.modem.output_backlog),
                                             emulator.run(lambda: port.port.reading),
                                             emulator.run(lambda: sorted(port.modem._input_holds)),
                                             emulator.run(lambda: len(port.modem.interpreter._inbox)),
                                             host.written - emulator.run(lambda: port.port.received),
                                             bytes(got[-300:])))
    writer.join(10)
    assert tokens == want
    assert pushed == b"".join(payloads)
    assert host.quiet_for(0.2) == b""


# == 13. a restart and settings commands queued behind a hold =====================================
BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"


def test_cfun_reboot_queued_behind_a_hold_runs_once_then_the_next_command(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    one = host.at("ATI")
    writer = threading.Thread(target=host.write, daemon=True,
                              args=(b"ATI\r" * 2000 + b"AT+CFUN=1,1\r",))
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    expected = one * 2000 + b"\r\nOK\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected
    writer.join(10)
    assert host.read_exactly(len(BOOT), timeout=5) == BOOT
    assert host.quiet_for(0.3) == b""
    host.write(b"ATI\r")                                       # the next command, after RDY
    assert host.read_exactly(4 + len(one), timeout=5) == b"ATI\r" + one   # factory ATE1 after the restart
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+IFC?") == b"AT+IFC?\r\r\n+IFC: 0,0\r\n\r\nOK\r\n"


def test_atz_and_at_f_queued_behind_a_hold(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2;&W") == b"\r\nOK\r\n"          # saved: ATE0, IFC=2,2
    one = host.at("ATI")
    writer = threading.Thread(target=host.write, daemon=True,
                              args=(b"ATI\r" * 2000 + b"AT+IFC=0,0\rATZ\rAT+IFC?\rAT&F\rAT+IFC?\r",))
    writer.start()
    wait_for(lambda: _held(emulator, port), what="held")
    expected = (one * 2000 + b"\r\nOK\r\n" + b"\r\nOK\r\n" + b"\r\n+IFC: 2,2\r\n\r\nOK\r\n"
                + b"\r\nOK\r\n" + b"AT+IFC?\r\r\n+IFC: 0,0\r\n\r\nOK\r\n")
    assert host.read_exactly(len(expected), timeout=30) == expected
    writer.join(10)
    assert host.quiet_for(0.3) == b""


# Was a bug, fixed (independent review): with AT+IFC=2,2, host input written behind a paced
# AT+QFDWL was still read and dropped past 1 MiB waiting ("port busy: ... input bytes dropped"):
# 258804 of 400000 pipelined ATs answered.  A pending answer now holds the host back (pty, as
# CTS) once 64 KiB of its input wait.
def test_input_behind_a_paced_download_waits_in_the_pty_with_flow_control(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.upload("big.bin", BIG).endswith(b"\r\nOK\r\n")
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    line = b"AT" + b" " * 2000 + b"\r"                    # a whole line of input, one OK
    n = 800                                                # 1.6 MB behind the download
    writer = threading.Thread(target=host.write, args=(b'AT+QFDWL="big.bin"\r' + line * n,), daemon=True)
    writer.start()
    wait_for(lambda: _mode(emulator, port) is Mode.PENDING, what="the download under way")
    wait_for(lambda: not emulator.run(lambda: port.port.reading), what="the host held back")
    assert emulator.run(lambda: len(port.modem.interpreter._inbox)) < 2 * HIGH_WATER
    expected = atv1_download(BIG)
    assert host.read_exactly(len(expected), timeout=60) == expected
    rest = host.read_exactly(len(b"\r\nOK\r\n") * n, timeout=60)
    assert rest == b"\r\nOK\r\n" * n
    writer.join(10)
    assert not [r for r in strict_log.records if "dropped" in r.getMessage()]
    assert host.quiet_for(0.2) == b"" and emulator.run(lambda: port.port.reading)
