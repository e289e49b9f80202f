"""Adversarial: the pty's life cycle as real hosts live it (open/close/reopen at the worst
moments, two hosts on one device, a host that never reads, paced output with AT+IPR) and
several modems on one loop that must stay isolated while one of them is flooded."""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import struct
import termios
import threading
import time

import pytest

from emulator.modem.profile import load_profile
from emulator.testing.host import Host
from tests.e2e import cli_support
from tests.e2e.socket_support import raw_open, raw_read_until, wait_for


# -- helpers ---------------------------------------------------------------------------------
def raw_drain(fd: int, quiet: float = 0.3) -> bytes:
    got = b""
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        if select.select([fd], [], [], 0.02)[0]:
            try:
                piece = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if piece:
                got += piece
                last = time.monotonic()
    return got


def small_backlog_profile(size: int = 128 * 1024):
    profile = load_profile("ec2x")
    profile.data["serial"]["output_backlog"] = size
    profile._found.clear()
    return profile


def fresh_at(path: str, line: str = "AT+CGMI") -> bytes:
    host = Host(path)
    try:
        return host.at(line, timeout=5)
    finally:
        host.close()


# -- rapid open/close/reopen ----------------------------------------------------------------
# Was a bug, fixed: A host that writes a command and closes the device at once (open, write
# 'AT+CGMR\r', close) has its answer delivered to the NEXT host, which opens 0.2 s later: 30 of 30
# runs. Linux lets the master read the departed host's bytes after the slave closed, the modem
# answers (PtyPort.write: still 'attached', os.write to the master succeeds), then the EIO is seen
# and _discard_unread_output's tcflush(TCIFLUSH) through a fresh slave open does not remove those
# bytes: they greet the next host. docs/behaviour.md: 'output the host never read is discarded'.
def test_answer_to_a_host_that_wrote_and_closed_at_once_does_not_greet_the_next_host(
        open_modem, strict_log):
    host, port = open_modem("ec2x")
    host.close()
    time.sleep(0.2)
    fd = raw_open(port.path)
    os.write(fd, b"AT+CGMR\r")
    os.close(fd)                            # gone before the answer is written
    time.sleep(0.2)                         # long after: a new session
    fd = raw_open(port.path)
    try:
        os.write(fd, b"AT+CGMI\r")
        got = raw_read_until(fd, b"Quectel\r\n\r\nOK\r\n")
        assert b"EC25EFAR06A06M4G" not in got, got
    finally:
        os.close(fd)


# Was a bug, fixed: A host that opens a never-yet-attached port, writes 'AT+CGMR\r' and closes
# within the 50 ms attach poll is never seen: its bytes stay in the pty and are run when the next
# host opens (0.3 s later), whose first read is the departed host's echo and answer
# (PtyPort._watch_for_host/_attach_if_present only look for POLLHUP; nothing discards input left
# by a host that came and went unseen).
def test_bytes_of_a_host_that_came_and_went_unseen_are_not_run_for_the_next(emulator, strict_log, tmp_path):
    port = emulator.add_modem("ec2x", state_dir=tmp_path / "s")
    time.sleep(0.1)
    fd = raw_open(port.path)
    os.write(fd, b"AT+CGMR\r")
    os.close(fd)
    time.sleep(0.3)
    fd = raw_open(port.path)
    try:
        os.write(fd, b"AT+CGMI\r")
        got = raw_read_until(fd, b"Quectel\r\n\r\nOK\r\n")
        assert b"CGMR" not in got and b"EC25EFAR06A06M4G" not in got, got
    finally:
        os.close(fd)


def test_rapid_open_close_with_half_lines_then_the_modem_still_answers(open_modem, emulator, strict_log):
    host, port = open_modem("ec2x")
    host.close()
    for i in range(40):
        fd = raw_open(port.path)
        os.write(fd, [b"AT+CG", b"AT+CGMR\r", b"\xff\x00AT", b"AT+QFUPL=\"x.bin\",10,5\r", b"ATE1\r"][i % 5])
        os.close(fd)
        if i % 7 == 0:
            time.sleep(0.12)
    # (the last program's hang-up seen before the next opens: else, on a loaded machine, its
    # half line or QFUPL data phase carries on into the new host's AT, as on a UART)
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the hang-up seen")
    host = Host(port.path)                  # pyserial flushes stale input on open
    try:
        host.quiet_for(0.2)
        assert host.at("AT").endswith(b"\r\nOK\r\n")
        assert host.at("ATE0").endswith(b"\r\nOK\r\n")
        assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
    finally:
        host.close()


def test_hangup_mid_answer_then_reopen_gets_only_its_own_answer(open_modem, strict_log):
    host, port = open_modem("ec2x")
    for _ in range(5):
        host.write(b"ATI;+CGMR;+CGSN;+CIMI\r")
        time.sleep(0.15)                   # read by the modem first
        host.close()                       # its answer never read
        time.sleep(0.15)
        fd = raw_open(port.path)
        try:
            os.write(fd, b"AT+CSQ\r")
            got = raw_read_until(fd, b"OK\r\n")
            assert got == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n", got
        finally:
            os.close(fd)
        host = Host(port.path)
    host.close()


def test_hangup_mid_urc_burst_next_host_gets_only_new_urcs(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x")
    for i in range(50):
        assert emulator.control("urc", text=f"+OLD: {i}")["ok"]
    host.close()
    time.sleep(0.2)
    host = Host(port.path)
    try:
        assert emulator.control("urc", text="+NEW: 1")["ok"]
        host.read_until(b"+NEW: 1\r\n", timeout=3)
        assert host.at("AT") .endswith(b"\r\nOK\r\n")
        assert b"+OLD" not in bytes(host.transcript)
    finally:
        host.close()


def test_hangup_mid_qisend_prompt_sends_nothing_and_next_host_is_in_command_state(
        emulator, open_modem, tcp_sink, strict_log):
    from tests.e2e.socket_support import qiopen
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    qiopen(host, 0)
    host.write(b"AT+QISEND=0,10\r")
    host.read_until(b"> ")
    host.write(b"abcd")
    host.close()
    time.sleep(0.2)
    host = Host(port.path)
    try:
        assert host.at("AT") == b"\r\nOK\r\n"
        host.write(b"AT+QISEND=0,3\r")
        host.read_until(b"> ")
        host.write(b"xyz")
        assert host.read_until(re.compile(rb"SEND OK\r\n")).endswith(b"SEND OK\r\n")
        wait_for(lambda: tcp_sink.received == b"xyz" if hasattr(tcp_sink, "received") else True, 3,
                 "the sink to get only xyz")
    finally:
        host.close()


# -- two hosts on one device -----------------------------------------------------------------
def test_two_hosts_on_one_pty_one_leaving_does_not_hang_up_the_other(open_modem, strict_log):
    host, port = open_modem("ec2x")
    second = Host(port.path)
    try:
        host.close()                       # the other still holds the device: no hang-up
        time.sleep(0.2)
        assert second.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n" or second.at("AT") .endswith(b"OK\r\n")
        # a second data prompt host leaving leaves the prompt open for the remaining one
        third = Host(port.path)
        third.close()
        time.sleep(0.2)
        assert second.at("AT+CSQ").endswith(b"+CSQ: 24,99\r\n\r\nOK\r\n")
    finally:
        second.close()
    time.sleep(0.2)
    assert fresh_at(port.path) == b"\r\nQuectel\r\n\r\nOK\r\n"


# -- a host that never reads -----------------------------------------------------------------
def test_never_reading_host_overflows_the_backlog_then_catches_up_without_duplicates(
        emulator, strict_log, tmp_path):
    """Echo of 600 KiB of numbered records to a host that does not read: a 128 KiB backlog
    keeps the newest bytes; what the host reads later is in order, without a duplicate, its
    tail is the last record, and the modem answers afterwards."""
    port = emulator.add_modem(small_backlog_profile(), state_dir=tmp_path / "s")
    fd = raw_open(port.path)
    try:
        os.write(fd, b"ATE1\r")
        time.sleep(0.1)
        records = [b"#%06d;" % i for i in range(75000)]       # 8 bytes each, no AT, no CR
        blob = b"".join(records)
        view = memoryview(blob)
        while view:
            try:
                n = os.write(fd, view[:4096])
                view = view[n:]
            except BlockingIOError:
                time.sleep(0.001)
        emulator.wait_received(port, 5 + len(blob), timeout=10)
        got = raw_drain(fd)
        echoed = got.split(b"ATE1\r", 1)[-1]
        # over the bound: some dropped, at most bound + the pty's own buffer left
        assert len(echoed) < len(blob)
        nums = [int(m) for m in re.findall(rb"#(\d{6});", echoed)]
        assert nums[-1] == 74999
        assert all(a < b for a, b in zip(nums, nums[1:])), "out of order or duplicated"
        assert echoed.endswith(records[-1])
        os.write(fd, b"AT+CSQ\r")
        assert raw_read_until(fd, b"OK\r\n").endswith(b"AT+CSQ\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n")
    finally:
        os.close(fd)
    msgs = [r.getMessage() for r in strict_log.records]
    assert sum("host is not reading" in m for m in msgs) == 1
    assert any("host caught up" in m for m in msgs)


def test_host_writing_while_output_is_full_keeps_its_commands(emulator, strict_log, tmp_path):
    """The host floods URC-less echo, stops reading, then sends commands while the output
    is still full: every command is answered once, in order, after the catch-up."""
    port = emulator.add_modem(small_backlog_profile(), state_dir=tmp_path / "s")
    fd = raw_open(port.path)
    try:
        os.write(fd, b"ATE1\r")
        blob = b"z" * 300_000
        view = memoryview(blob)
        while view:
            try:
                view = view[os.write(fd, view[:4096]):]
            except BlockingIOError:
                time.sleep(0.001)
        for i in range(5):
            os.write(fd, b"\rATS7=%d;S7?\r" % (10 + i))
        emulator.wait_received(port, 5 + len(blob) + sum(len(b"\rATS7=%d;S7?\r" % (10 + i)) for i in range(5)))
        got = raw_drain(fd)
        answers = re.findall(rb"\r\n(\d{3})\r\n\r\nOK\r\n", got)
        assert answers == [b"010", b"011", b"012", b"013", b"014"], got[-400:]
    finally:
        os.close(fd)


def test_unread_output_is_dropped_on_hangup_and_the_next_host_is_not_greeted_by_it(
        emulator, strict_log, tmp_path):
    port = emulator.add_modem(small_backlog_profile(), state_dir=tmp_path / "s")
    fd = raw_open(port.path)
    os.write(fd, b"ATE1\r")
    view = memoryview(b"q" * 200_000)
    while view:
        try:
            view = view[os.write(fd, view[:4096]):]
        except BlockingIOError:
            time.sleep(0.001)
    emulator.wait_received(port, 200_005)
    assert emulator.run(lambda: port.port.backlog) > 0
    os.close(fd)
    time.sleep(0.2)
    assert emulator.run(lambda: port.port.backlog) == 0
    fd = raw_open(port.path)
    try:
        os.write(fd, b"AT+CGMI\r")
        got = raw_read_until(fd, b"OK\r\n")
        assert b"q" not in got and got.endswith(b"Quectel\r\n\r\nOK\r\n"), got[:200]
    finally:
        os.close(fd)


# -- online mode -----------------------------------------------------------------------------
class StuckServer:
    """A TCP server that accepts and never reads (tiny receive buffer)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def go_online_and_stall(emulator, open_modem, server):
    """A transparent TCP socket to a server that never reads, the host writing until the
    port stops reading it (the connection's backlog past ssl.online_buffer, 4 KiB here).
    Returns (host, port)."""
    profile = load_profile("ec2x")
    profile.data["ssl"]["online_buffer"] = 4096
    profile._found.clear()
    host, port = open_modem(profile)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    emulator.router.add_map("stuck.example", 80, "127.0.0.1", server.port)
    host.write(b'AT+QIOPEN=1,0,"TCP","stuck.example",80,0,2\r')
    host.read_until(b"CONNECT\r\n")
    fd = host.ser.fd
    view = memoryview(b"D" * 40_000_000)
    # (until the port has stopped reading, however long the loopback's send buffers take to
    # fill on a loaded machine: 3 s was not always enough under CI's load)
    deadline = time.monotonic() + 30
    while view and time.monotonic() < deadline:
        try:
            view = view[os.write(fd, view[:65536]):]
        except BlockingIOError:
            if not emulator.run(lambda: port.port.reading):
                break
            time.sleep(0.002)
    assert not emulator.run(lambda: port.port.reading), "the port never held the host back"
    return host, port


@pytest.mark.parametrize("how", ["server_rst", "control_drop", "pdp_deact"])
def test_connection_ending_while_the_host_is_held_back_gives_the_port_back(emulator, open_modem, how,
                                                                           strict_log):
    """Transparent mode, the host held back (flow control: the port stopped reading it),
    then the connection ends (the server's RST, the control API's drop, the PDP context
    lost): after NO CARRIER the port reads the host again and answers its commands.
    Was a bug, fixed: nothing resumed the port (only a drain of the closed connection
    would have), so AT went unanswered until the host reopened the device."""
    server = StuckServer()
    try:
        host, port = go_online_and_stall(emulator, open_modem, server)
        assert not emulator.run(lambda: port.port.reading)
        time.sleep(0.2)
        if how == "server_rst":
            conn = server.conns[0]
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        elif how == "control_drop":
            assert emulator.control("drop", socket=0, how="rst")["ok"]
        else:
            assert emulator.control("pdp_deact", cid=1)["ok"]
        host.read_until(b"NO CARRIER\r\n", timeout=10)
        termios.tcflush(host.ser.fd, termios.TCOFLUSH)      # what the host had still queued
        wait_for(lambda: emulator.run(lambda: port.port.reading), 5, "the port reading again")
        host.pending.clear()
        assert host.at("AT", timeout=5).endswith(b"OK\r\n")
        assert host.at("AT+QICLOSE=0", timeout=5).endswith(b"OK\r\n")
    finally:
        server.close()


def test_a_stuck_online_modem_does_not_slow_or_leak_into_the_others(emulator, open_modem, strict_log):
    server = StuckServer()
    others = [open_modem("ec2x")[0] for _ in range(2)]
    try:
        # (the stalled host keeps the port open: a program that closed it and another that
        # reopened it at once may or may not find the link online, by when the hang-up is seen)
        stuck, port = go_online_and_stall(emulator, open_modem, server)
        assert not emulator.run(lambda: port.port.reading)
        for _ in range(20):
            for h in others:
                assert h.at("AT+CGMM", timeout=5) == b"\r\nEC25\r\n\r\nOK\r\n"
        for h in others:
            assert b"D" not in bytes(h.transcript)
        assert not emulator.run(lambda: port.port.reading)      # (still stuck all along)
    finally:
        server.close()


# -- several modems, one flooded --------------------------------------------------------------
def test_flooded_modem_does_not_starve_or_leak_into_the_others(emulator, open_modem, strict_log):
    flood_host, flood_port = open_modem("ec2x", echo=True)
    others = [open_modem(p)[0] for p in ("ec2x", "ml302", "ec2x")]
    stop = threading.Event()
    fd = raw_open(flood_port.path)           # a second opener that writes, nobody reads

    def flood() -> None:
        i = 0
        while not stop.is_set():
            try:
                os.write(fd, b"%%FLOOD%08d" % i * 64)
                i += 1
            except BlockingIOError:
                time.sleep(0.0005)

    def urcs() -> None:
        while not stop.is_set():
            emulator.control("urc", 0, text="+FLOODURC: 1")

    threads = [threading.Thread(target=flood, daemon=True), threading.Thread(target=urcs, daemon=True)]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            for n, h in enumerate(others):
                line = f"ATS7={n + 20};S7?"
                assert h.at(line, timeout=5) == f"\r\n0{n + 20}\r\n\r\nOK\r\n".encode()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        os.close(fd)
    for h in others:
        assert b"FLOOD" not in bytes(h.transcript)
    # the flooded modem itself still answers once its host reads
    flood_host.quiet_for(0.5)
    assert flood_host.at("AT").endswith(b"\r\nOK\r\n")


# -- paced output and AT+IPR ------------------------------------------------------------------
def test_ipr_change_then_hangup_before_the_ok_left_and_reopen(emulator, strict_log, tmp_path):
    port = emulator.add_modem("ec2x", state_dir=tmp_path / "s", baud=1200)
    fresh_at(port.path, "ATE0")             # attached once; echo off
    time.sleep(0.15)
    for rate in (115200, 9600, 115200):
        fd = raw_open(port.path)
        line = f"ATI;+IPR={rate}\r".encode()
        before = emulator.run(lambda: port.port.received)
        os.write(fd, line)
        emulator.wait_received(port, before + len(line))     # the modem has the line (a busy machine)
        time.sleep(0.05)                     # part of ATI's answer out at 120 B/s
        os.close(fd)
        # (the hang-up seen before the next program opens: a fixed 0.2 s was not always
        # enough on a loaded machine, and the next program's line then met the old session)
        wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the hang-up seen")
        fd = raw_open(port.path)
        try:
            os.write(fd, b"AT+IPR?\r")
            got = raw_read_until(fd, b"OK\r\n", timeout=5)
            assert got == f"\r\n+IPR: {rate}\r\n\r\nOK\r\n".encode(), got
        finally:
            os.close(fd)
        time.sleep(0.15)
    assert emulator.run(lambda: port.port.baud) == 115200
    assert emulator.run(lambda: port.port.backlog) == 0


def test_paced_output_never_mixes_sessions(emulator, strict_log, tmp_path):
    port = emulator.add_modem("ec2x", state_dir=tmp_path / "s", baud=2400)
    fresh_at(port.path, "AT")               # attached once
    time.sleep(0.15)
    fd = raw_open(port.path)
    os.write(fd, b"ATI;+CGMR;+CGMM\r")
    time.sleep(0.05)
    os.close(fd)
    time.sleep(0.15)
    fd = raw_open(port.path)
    try:
        os.write(fd, b"AT+CGMI\r")
        assert raw_read_until(fd, b"OK\r\n", timeout=5) == b"AT+CGMI\r\r\nQuectel\r\n\r\nOK\r\n"
    finally:
        os.close(fd)


# -- state dir --------------------------------------------------------------------------------
def test_state_dir_removed_underneath(emulator, strict_log, tmp_path):
    state = tmp_path / "gone"
    port = emulator.add_modem("ec2x", state_dir=state)
    host = Host(port.path)
    try:
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert host.upload("UFS:a.txt", b"hello") .endswith(b"OK\r\n")
        shutil.rmtree(state)
        r = host.at("AT&W")
        assert r.endswith(b"OK\r\n") or b"ERROR" in r
        r = host.at('AT+QFUPL="UFS:b.txt",3,5')
        if r.endswith(b"CONNECT\r\n"):
            host.write(b"abc")
            host.read_until(re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n"))
        host.at("AT+QFLST")
        assert host.at("AT+CSQ").endswith(b"OK\r\n")
    finally:
        host.close()


def test_two_modems_sharing_one_state_dir(emulator, strict_log, tmp_path):
    state = tmp_path / "shared"
    hosts = [Host(emulator.add_modem("ec2x", state_dir=state).path) for _ in range(2)]
    try:
        for n, h in enumerate(hosts):
            h.at("ATE0")
            assert h.at(f"ATS7={30 + n};&W").endswith(b"OK\r\n")
        assert hosts[0].upload("UFS:same.txt", b"one").endswith(b"OK\r\n")
        r = hosts[1].upload("UFS:other.txt", b"two")
        assert r.endswith(b"OK\r\n")
        for h in hosts:
            assert h.at("AT+CSQ").endswith(b"OK\r\n")
    finally:
        for h in hosts:
            h.close()


# -- the CLI with --count ---------------------------------------------------------------------
def test_cli_count_links_removed_on_exit_even_while_hosts_hold_them(tmp_path):
    pattern = str(tmp_path / "modem-{n}")
    proc = cli_support.start("--count", "3", "--link", pattern, "--state-dir", str(tmp_path / "st"),
                             "--offline")
    try:
        paths = [proc.stdout.readline().strip() for _ in range(3)]
        assert all(paths), proc.stderr.read() if proc.poll() is not None else paths
        hosts = [Host(p) for p in paths]
        for n, h in enumerate(hosts):
            h.at("ATE0")
            assert h.at(f"ATS7={40 + n};S7?").endswith(f"0{40 + n}\r\n\r\nOK\r\n".encode())
        # rapid reopen on one link while the others keep talking
        for _ in range(10):
            hosts[1].close()
            hosts[1] = Host(paths[1])
        assert hosts[1].at("AT+CGMI", timeout=5).endswith(b"Quectel\r\n\r\nOK\r\n")
        assert hosts[2].at("AT").endswith(b"OK\r\n")
        hosts[0].write(b"AT+QFUPL=\"x.bin\",100,60\r")   # mid-prompt at exit
        hosts[0].read_until(b"CONNECT\r\n")
        assert cli_support.stop(proc) == 0
        for h in hosts:
            h.close()
    finally:
        proc.kill()
    for p in paths:
        assert not os.path.lexists(p), p
    err = proc.stderr.read()
    assert "Traceback" not in err, err


# A tester's loose end, fixed: while the modem held the host's bytes back (flow control:
# reading the pty off), nothing read it, so a hang-up (seen as EIO on a read) went unseen and
# the next host's AT was never answered until the flow-control pause ended.
def test_a_hangup_while_input_is_held_back_is_seen_and_the_next_host_answered(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x")
    assert host.at("AT") == b"\r\nOK\r\n"
    emulator.run(port.port.set_reading, False)          # as when a connection's buffer is full
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the hang-up seen")
    assert fresh_at(port.path, "AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
