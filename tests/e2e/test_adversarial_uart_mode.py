"""Adversarial review of --uart (add_modem(hangup_on_close=False), commit 00f0b21): a port with
no hang-up line.  The host closing the pty is not seen by the modem (Modem.
host_closed_without_hangup); the transport (PtyPort._hangup) still detaches, drops what the
host had not read and what is written while nobody holds the port, and attaches the next host.

Each test holds what a real module on a UART with no DTR wired would do; the bugs it found are
fixed ("Was a bug, fixed" comments say where and why)."""
from __future__ import annotations

import errno
import os
import re
import threading
import time

import pytest

from emulator.sockets.tcpip import tcpip_service
from emulator.testing.host import Host
from emulator.testing.peers import TcpServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, ec2x_with_pdp, wait_for

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"


# -- helpers -----------------------------------------------------------------------------------
def wait_detached(emulator, port, timeout: float = 10) -> None:
    wait_for(lambda: not emulator.run(lambda: port.port.attached), timeout, "the close seen by the port")


def reopen(host: Host, emulator, port) -> Host:
    """Close the port, wait until the emulator has seen the close, open it again."""
    host.close()
    wait_detached(emulator, port)
    return attach(emulator, port)


def attach(emulator, port) -> Host:
    again = Host(port.path)
    emulator.run(port.port.look_for_host)
    return again


def mode(emulator, port) -> str:
    return emulator.run(lambda: port.modem.interpreter.mode.name)


def open_online(host) -> None:
    host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == CONNECT


def write_and_close_unseen(emulator, port, data: bytes) -> None:
    """A host that opens the port, writes and closes between two of the emulator's looks for a
    host (`echo -e 'AT...\\r' > /dev/ttyS0` takes microseconds; the looks are 50 ms apart):
    done on the emulator's loop thread, so no look can fall in between."""
    def quick() -> None:
        fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY)
        try:
            os.write(fd, data)
            # The kernel hands a pty write to the master from a worker: on a loaded machine
            # the bytes could land after the emulator's look had found no host, and a later
            # host would get them (what this test is about is bytes written *before* the close).
            deadline = time.monotonic() + 5
            while port.port.input_waiting() < len(data) and time.monotonic() < deadline:
                time.sleep(0.0005)
        finally:
            os.close(fd)
    emulator.run(quick)


def upload(host: Host, name: str, data: bytes) -> None:
    host.write(f'AT+QFUPL="{name}",{len(data)}\r')
    assert host.read_until(CONNECT) == CONNECT
    host.write(data)
    assert host.read_until(OK, timeout=60).startswith(f"\r\n+QFUPL: {len(data)},".encode())


# == the half of --uart the modem sees: nothing ====================================================
# Was a bug, fixed: a host that opened, wrote and closed between two looks was dropped even with
# --uart (PtyPort._attach_if_present dropped 'a host that closed before it was seen' whatever the
# wiring); a UART module receives every byte on its RX line, so `echo -e 'ATS0=3\r' > /dev/ttyS0`
# (a Pi HAT's usual one-liner) must run. With hangup_on_close=False those bytes are handed on.
@pytest.mark.parametrize("hangup_on_close,s0", [(False, b"003"), (True, b"000")])
def test_echo_style_one_shot_write_reaches_the_modem(hangup_on_close, s0, open_modem, emulator,
                                                     strict_log):
    """--uart runs it; the default (a close is a hang-up) keeps its documented rule: bytes of a
    host that opened, wrote and closed before the emulator saw it are not run for the next."""
    host, port = open_modem("ec2x", hangup_on_close=hangup_on_close)
    host.close()
    wait_detached(emulator, port)
    write_and_close_unseen(emulator, port, b"ATS0=3\r")
    # (the emulator has taken the bytes, whatever it did with them, before the next host comes)
    wait_for(lambda: emulator.run(port.port.input_waiting) == 0, what="the one-shot bytes taken")
    host = attach(emulator, port)
    try:
        assert host.at("ATS0?") == b"\r\n" + s0 + b"\r\n" + OK
    finally:
        host.close()


def test_a_command_written_just_before_the_close_still_runs(open_modem, emulator, strict_log):
    """A host seen by the port writes a command and closes at once: the module ran it (its
    answer is lost), the next host sees its effect and no stale answer."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.write(b"ATS0=7\r")
    host.close()
    wait_detached(emulator, port)
    host = attach(emulator, port)
    try:
        assert host.at("ATS0?") == b"\r\n007\r\n" + OK
        assert host.quiet_for(0.1) == b""
    finally:
        host.close()


# == pending answers ===============================================================================
def test_a_pending_answer_reaches_the_host_that_reopened(open_modem, emulator, strict_log):
    """A slow AT+CSQ; the host closes before its answer, reopens and types AT meanwhile: the
    module answers AT+CSQ to whoever listens now, then the AT (queued behind it), once each."""
    host, port = open_modem("ec2x", hangup_on_close=False, manual_time=True)
    assert emulator.control("slow", command="+CSQ", ms=2000)["ok"]
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    host = reopen(host, emulator, port)
    try:
        host.write(b"AT\r")
        wait_for(lambda: emulator.run(lambda: port.port.received) >= 7 + 3, what="the AT read")
        assert host.quiet_for(0.1) == b""
        emulator.advance(port, 2.1)
        assert host.read_until(OK) == b"\r\n+CSQ: 24,99\r\n" + OK
        assert host.read_until(OK) == OK
        assert host.quiet_for(0.2) == b""
        assert mode(emulator, port) == "COMMAND"
    finally:
        host.close()


def test_a_pending_answer_due_while_closed_is_lost_not_kept_for_the_next_host(open_modem, emulator,
                                                                              strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False, manual_time=True)
    assert emulator.control("slow", command="+CSQ", ms=2000)["ok"]
    host.write(b"AT+CSQ\r")
    emulator.wait_received(port, host.written)
    host.close()
    wait_detached(emulator, port)
    emulator.advance(port, 2.1)
    assert mode(emulator, port) == "COMMAND"
    host = attach(emulator, port)
    try:
        assert host.at("AT") == OK                       # not the +CSQ nobody listened to
        assert host.quiet_for(0.1) == b""
    finally:
        host.close()


def test_a_slow_qsslopen_in_transparent_mode_goes_online_for_the_reopened_host(open_modem, emulator,
                                                                              strict_log):
    """A transparent AT+QIOPEN whose answer is slow; the host closes and reopens meanwhile: the
    CONNECT reaches the new host, which is online with the server (no hang-up to leave it)."""
    with TcpServer("echo") as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        host, port = ec2x_with_pdp(open_modem, hangup_on_close=False, manual_time=True)
        assert emulator.control("slow", command="+QIOPEN", ms=3000)["ok"]
        host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        emulator.wait_received(port, host.written)
        written = host.written
        host = reopen(host, emulator, port)
        host.written = written                   # (wait_received counts every host's bytes)
        try:
            emulator.advance(port, 3.1)
            assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == CONNECT
            host.write(b"hello")
            emulator.wait_received(port, host.written)
            emulator.advance(port, 0.5)                  # (transwaittm: on the modem's time)
            assert host.read_until(b"hello") == b"hello"
            assert mode(emulator, port) == "ONLINE"
        finally:
            host.close()


# == data prompts ==================================================================================
def test_many_close_reopen_cycles_inside_one_upload(open_modem, emulator, strict_log):
    """AT+QFUPL of 12 bytes fed one byte per session over 12 close/reopen cycles: every byte
    counts, once, in order; the answer reaches the last host."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    data = b"0123456789ab"
    host.write(f'AT+QFUPL="UFS:cycles.txt",{len(data)}\r')
    assert host.read_until(CONNECT) == CONNECT
    try:
        for i, byte in enumerate(data):
            host.write(bytes([byte]))
            if i < len(data) - 1:
                emulator.wait_received(port, host.written)
                written = host.written
                host = reopen(host, emulator, port)
                host.written = written
        assert host.read_until(OK).startswith(f"\r\n+QFUPL: {len(data)},".encode())
        host.write(b'AT+QFDWL="UFS:cycles.txt"\r')
        assert host.read_until(OK).startswith(CONNECT + data + b"\r\n+QFDWL: 12,")
    finally:
        host.close()


def test_qisend_prompt_survives_a_close_with_a_cr_lf_host_then_a_cr_only_host(open_modem, peer_factory,
                                                                              emulator, strict_log):
    """Host A ends its lines with CR LF and closes at '>'; host B (another program, CR only)
    writes the 4 payload bytes, the first an LF: all 4 are data (it wrote them after it could
    see the prompt, long after A's line), the server gets them exactly."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, hangup_on_close=False)
    host.write('AT+QIOPEN=1,0,"TCP","%s",%d,0,0\r\n' % (TCP_HOST, TCP_PORT))
    assert host.read_until(OK) == OK
    assert host.seen(b"+QIOPEN: 0,0")
    host.write(b"AT+QISEND=0,4\r\n")
    assert host.read_until(b"> ").endswith(b"> ")
    host = reopen(host, emulator, port)
    try:
        time.sleep(0.1)                                  # (past the 50 ms late-LF window)
        host.write(b"\nabc")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
        wait_for(lambda: len(peer.got) >= 4, what="the payload at the server")
        assert bytes(peer.got) == b"\nabc"
    finally:
        host.close()


# Was a bug, fixed: what the emulator learnt of the previous program's line endings outlived its
# close under --uart (lexer crlf/piecewise were reset only in Interpreter._hangup): a second
# program writing whole CR-only lines inherited the first one's "writes its CR and LF apart", and
# the LF its AT+QISEND payload started with was eaten (no SEND OK, ever). They are guesses about
# the program on the port, not module state: Interpreter.host_changed() forgets them at every close.
@pytest.mark.parametrize("hangup_on_close", [True, False])
def test_a_new_programs_lf_first_payload_is_data_whatever_the_last_program_did(
        hangup_on_close, open_modem, peer_factory, emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, hangup_on_close=hangup_on_close, manual_time=True)
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0').endswith(OK)
    assert host.seen(b"+QIOPEN: 0,0")
    host.write(b"AT\r")                                  # program A: CR, then its LF apart
    assert host.read_until(OK).endswith(OK)              # (after the URC's trailing CR LF)
    host.write(b"\n")
    emulator.wait_received(port, host.written)
    host = reopen(host, emulator, port)                  # program B: whole lines, CR only
    try:
        host.write(b"AT+QISEND=0,4\r")
        assert host.read_until(b"> ").endswith(b"> ")
        host.write(b"\nabc")
        assert host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"), timeout=3) == b"\r\nSEND OK\r\n"
        wait_for(lambda: len(peer.got) >= 4, what="the payload at the server")
        assert bytes(peer.got) == b"\nabc"
    finally:
        host.close()


# == downloads and pacing ==========================================================================
def test_a_close_mid_way_through_a_big_download_leaves_a_responsive_modem(open_modem, emulator, strict_log):
    """AT+QFDWL of 300 KB (a paced answer: 64 KiB whenever the host has read down); the host
    reads 10 KB and closes: the rest goes nowhere (nobody listens), the modem does not wait for
    ever for a drain, and the next host is answered at once."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    data = bytes(range(256)) * 1200
    upload(host, "UFS:big.bin", data)
    host.write(b'AT+QFDWL="UFS:big.bin"\r')
    host.read_exactly(10_000)
    host.close()
    wait_detached(emulator, port)
    wait_for(lambda: mode(emulator, port) == "COMMAND", what="the download's end")
    host = attach(emulator, port)
    try:
        assert host.at("AT") == OK
        host.write(b'AT+QFDWL="UFS:big.bin"\r')           # and a whole one for this host
        assert host.read_until(OK, timeout=60) .startswith(CONNECT + data + b"\r\n+QFDWL: 307200,")
    finally:
        host.close()


# Was a bug, fixed: --uart --baud: output the UART had not sent yet was dropped at the close, as if
# it had gone out (PtyPort._hangup cleared _out on every close); nothing happened to the module,
# so its UART goes on sending at the rate and a host that reopens while the answer is still on
# the line gets its tail. PtyPort now keeps pacing _out while detached (the bytes leave for
# nobody) when the port has no hang-up line and a rate.
def test_baud_paced_answer_keeps_leaving_at_the_rate_across_a_close(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False, baud=300)      # 30 bytes a second
    host.write(b"ATI\r")
    first = host.read_exactly(3)                                          # ~0.1 s of the answer
    host = reopen(host, emulator, port)                                   # ~2 s still to go
    try:
        tail = host.read_until(OK, timeout=6)
        assert (first + tail).endswith(OK)
    finally:
        host.close()


def test_baud_paced_bytes_sent_while_nobody_holds_the_port_are_lost(open_modem, emulator, strict_log):
    """The other half: what the UART sent while the port was closed reached nobody -- the
    reopened host gets the answer's tail, not the bytes of the second it was away."""
    host, port = open_modem("ec2x", hangup_on_close=False, baud=300)      # 30 bytes a second
    whole = host.at("ATI")                                                # (paced too: ~2 s)
    host.write(b"ATI\r")
    first = host.read_exactly(3)
    host.close()
    wait_detached(emulator, port)
    time.sleep(1.0)                                                       # ~30 bytes to nobody
    host = attach(emulator, port)
    try:
        tail = host.read_until(OK, timeout=6)
        assert (first + tail).endswith(OK)
        assert len(first + tail) <= len(whole) - 20, (first + tail, whole)
        assert whole.endswith(tail)                                       # its tail, in order
    finally:
        host.close()


def test_baud_paced_modem_answers_normally_after_a_close(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False, baud=9600)
    host.write(b"ATI\r")
    host.read_exactly(3)
    host.close()
    wait_detached(emulator, port)
    wait_for(lambda: emulator.run(lambda: port.port.backlog) == 0, what="the paced answer gone")
    host = attach(emulator, port)
    try:
        # (whatever tail of ATI a real UART would still send, the next answer comes whole)
        assert host.at("AT+CSQ").endswith(b"\r\n+CSQ: 24,99\r\n" + OK)
    finally:
        host.close()


# == flow control ==================================================================================
def test_ifc_output_hold_is_released_by_the_close(open_modem, emulator, strict_log):
    """AT+IFC=2,2 and a host that stopped reading with three 40 KB downloads queued: past 64 KiB
    unread the module takes no more input; the host closes (its unread output is gone): the
    module goes on, and the next host's AT is answered."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    data = b"z" * 40_000
    upload(host, "UFS:mid.bin", data)
    assert host.at("AT+IFC=2,2") == OK
    host.write(b'AT+QFDWL="UFS:mid.bin"\r' * 4)
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("output")), what="the output hold")
    host.close()
    wait_detached(emulator, port)
    wait_for(lambda: not emulator.run(lambda: port.modem.input_held("output")), what="the hold released")
    wait_for(lambda: mode(emulator, port) == "COMMAND" and emulator.run(port.port.input_waiting) == 0,
             what="the queued downloads done")
    host = attach(emulator, port)
    try:
        got = host.at("AT+CSQ")
        assert got.endswith(b"\r\n+CSQ: 24,99\r\n" + OK), got[-200:]
    finally:
        host.close()


# Was a bug, fixed: bytes the host wrote while the module held it back (a full transparent
# connection's 'online' hold) were dropped at a --uart close (_attach_if_present ->
# _drop_departed). On a UART with RTS/CTS the host's close() waits until CTS lets them out and
# the module, which saw no hang-up, sends them on; with hangup_on_close=False they now stay in the
# pty until the modem reads again.
def test_bytes_held_back_by_a_full_transparent_connection_survive_the_close(open_modem, peer_factory,
                                                                            emulator, strict_log):
    peer = peer_factory(hold_reading=True, rcvbuf=4096)
    host, port = ec2x_with_pdp(open_modem, hangup_on_close=False)
    open_online(host)
    fd = os.open(port.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    sent = bytearray()
    chunk = b"0123456789abcdef" * 4096                    # (no "+": nothing like an escape)
    deadline = time.monotonic() + 60
    try:
        while True:
            assert time.monotonic() < deadline, "the port never held the host back"
            try:
                n = os.write(fd, chunk)
                sent += chunk[:n]
                continue
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
            if emulator.run(port.modem.input_held, "online") and emulator.run(port.port.input_waiting) > 0:
                break
            time.sleep(0.005)
    finally:
        os.close(fd)
    waiting = emulator.run(port.port.input_waiting)
    assert waiting > 0
    host = reopen(host, emulator, port)
    try:
        peer.release_reading()
        # (what the modem had read before the close arrives in any case; then the rest, which
        # waited in the pty behind the hold)
        # (what the modem had read before the close arrives in any case -- all but at most the
        # pty's buffer, ~64 KiB; then the rest, which waited in the pty behind the hold)
        wait_for(lambda: len(peer.got) >= len(sent) - (64 << 10), 30, "the bytes read before the close")
        wait_for(lambda: len(peer.got) >= len(sent), 5, "the bytes held in the pty at the close")
        assert bytes(peer.got) == bytes(sent), (len(peer.got), len(sent))
    finally:
        host.close()


# == transparent mode ==============================================================================
def test_escape_split_across_a_close_leaves_online_mode(open_modem, peer_factory, emulator, strict_log):
    """Online, the guard time of silence, "++" from one host, a close, "+" from the next within
    the guard time, then silence: the module saw "+++" framed by silence -- OK, command state,
    and no "+" reaches the server."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, hangup_on_close=False, manual_time=True)
    open_online(host)
    host.write(b"data")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.5)                          # (transwaittm: on the modem's time)
    wait_for(lambda: bytes(peer.got) == b"data", what="the data at the server")
    emulator.advance(port, 1.1)
    host.write(b"++")
    emulator.wait_received(port, host.written)
    written = host.written
    host = reopen(host, emulator, port)
    host.written = written
    try:
        host.write(b"+")
        emulator.wait_received(port, host.written)
        emulator.advance(port, 1.1)
        assert host.read_until(OK) == OK
        assert mode(emulator, port) == "COMMAND"
        assert host.at("AT") == OK
        assert bytes(peer.got) == b"data"
    finally:
        host.close()


def test_online_flood_while_closed_then_the_reopened_host_is_online_again(open_modem, peer_factory,
                                                                          emulator, strict_log):
    """The server floods a transparent connection while the host does not read, then the host
    closes: the network flow resumes into the void (no drain will come from a host that left),
    and the reopened host gets the server's later bytes and reaches the server."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, hangup_on_close=False)
    open_online(host)
    wait_for(lambda: peer.accepted.is_set(), what="the connection")
    flood = b"x" * (2 << 20)
    sender = threading.Thread(target=peer.send, args=(flood,), daemon=True)
    sender.start()
    wait_for(lambda: emulator.run(lambda: tcpip_service(port.modem).sockets[0]._paused),
             20, "the network held back for the host")
    host.close()
    wait_detached(emulator, port)
    sender.join(30)
    assert not sender.is_alive(), "the flood never left the server: the network stayed held"
    host = attach(emulator, port)
    try:
        peer.send(b"MARK")
        got = host.read_until(b"MARK", timeout=20)
        assert set(got[:-4]) <= {ord("x")}
        host.write(b"ping")
        wait_for(lambda: bytes(peer.got).endswith(b"ping"), what="the host's bytes at the server")
        assert mode(emulator, port) == "ONLINE"
    finally:
        host.close()


# == URCs, restarts ================================================================================
def test_urcs_while_closed_are_lost_and_later_ones_arrive(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.close()
    wait_detached(emulator, port)
    assert emulator.control("urc", text="+QIURC: \"lost\"")["ok"]
    host = attach(emulator, port)
    try:
        assert emulator.control("urc", text="+QIURC: \"kept\"")["ok"]
        assert host.read_until(b"\r\n+QIURC: \"kept\"\r\n") == b"\r\n+QIURC: \"kept\"\r\n"
        assert host.at("AT") == OK
    finally:
        host.close()


def test_control_reboot_while_closed_during_a_prompt(open_modem, emulator, strict_log):
    """Closed at AT+QFUPL's CONNECT, the module restarts meanwhile: the prompt went with the
    power (no file), the boot URCs went nowhere, the next host meets a fresh command state."""
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.write(b'AT+QFUPL="UFS:reboot.txt",5\r')
    assert host.read_until(CONNECT) == CONNECT
    host.write(b"ab")
    emulator.wait_received(port, host.written)
    host.close()
    wait_detached(emulator, port)
    assert emulator.control("reboot", ms=0)["ok"]
    wait_for(lambda: emulator.run(lambda: port.modem.booted), what="the boot")
    host = attach(emulator, port)
    try:
        assert host.at("ATE0").endswith(OK)              # (ATE0 was not saved: echo is back)
        host.write(b"cde\r")                             # not the prompt's data any more
        host.write(b'AT+QFLST="*"\r')
        got = host.read_until(OK)
        assert b"reboot.txt" not in got
        assert b"RDY" not in host.transcript             # (written while nobody listened)
    finally:
        host.close()


def test_cfun_restart_written_at_the_close(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False)
    host.write(b"AT+CFUN=1,1\r")
    host.close()
    wait_detached(emulator, port)
    wait_for(lambda: emulator.run(lambda: port.modem.epoch) >= 1, what="the restart")
    wait_for(lambda: emulator.run(lambda: port.modem.booted), what="the boot")
    host = attach(emulator, port)
    try:
        assert host.at("AT").endswith(OK)
        assert host.quiet_for(0.1) == b""
    finally:
        host.close()


# == rapid cycles, default wiring ==================================================================
def test_rapid_close_reopen_cycles_answer_every_command_once(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x", hangup_on_close=False)
    try:
        for i in range(25):
            assert host.at(f"ATS0={i % 10}") == OK
            assert host.at("ATS0?") == f"\r\n{i % 10:03d}\r\n".encode() + OK
            host = reopen(host, emulator, port)
        assert host.at("AT") == OK
        assert host.quiet_for(0.1) == b""
    finally:
        host.close()


def test_default_wiring_still_abandons_a_prompt_and_leaves_online_mode(open_modem, peer_factory,
                                                                      emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    host.write(b'AT+QFUPL="UFS:dflt.txt",5\r')
    assert host.read_until(CONNECT) == CONNECT
    host.write(b"ab")
    emulator.wait_received(port, host.written)
    host = reopen(host, emulator, port)
    try:
        host.write(b"cde\r")
        assert host.quiet_for(0.2) == b""
        assert host.at('AT+QFLST="*"').find(b"dflt.txt") < 0
        open_online(host)
        host.write(b"on")
        wait_for(lambda: bytes(peer.got) == b"on", what="online data")
        host = reopen(host, emulator, port)
        assert mode(emulator, port) == "COMMAND"
        assert host.at("AT") == OK
    finally:
        host.close()
