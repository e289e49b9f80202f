"""Adversarial tests of the pty's output ordering, written against output batching
("corking") in PtyPort: everything the modem wrote while one read of host input was handed on
(PtyPort._deliver) gathered and written with one write(2) when that returned, or at 16 KiB.
The cork was reverted (it made buffer mode slower: SEND OK waited behind the work that
followed it in the same read, halving AT+QSSLSEND throughput, with no gain for AT+QSSLRECV);
these tests stay as regression tests of what any batching of the output must keep.

Judged from the host's side, as independent host software would see it: byte-wise typing
with echo, thousands of pipelined commands, odd-sized reads, answers over 16 KiB, AT+IFC=2,2
holds, closes mid-answer, URCs (control API, scenario steps, the network) between answers,
AT+QPOWD / AT+CFUN=1,1, data prompts with their data in the same write, transparent mode,
uart_noise and --baud pacing.  Nothing may be reordered, duplicated or lost, and nothing a
closed host was owed may reach the next one.

Defects the cork had, kept as regression tests (they pass without it):
 - --baud: AT+IPR and a restart (AT+CFUN=1,1, AT+QPOWD) switch the pace "after what is
   queued" (set_baud(after_queued=True)); the answer in the cork was not queued yet, so the
   switch was immediate and the answer left at the new rate
   (test_pipelined_answers_before_ipr_leave_at_the_old_rate,
   test_restart_answer_leaves_at_the_rate_it_was_given);
 - a reboot by a scenario step `after` a command (run while that read is handled) dropped
   the port's queue but not the cork: an answer still going out at --baud or through
   uart_noise arrived whole after the restart
   (test_scenario_reboot_after_a_command_cuts_its_unsent_answer), and with an unpaced port
   whose host reads late the answers that had no room in the pty came through the restart
   (test_scenario_reboot_drops_the_answers_a_slow_reader_had_no_room_for).
"""
from __future__ import annotations

import os
import re
import select
import threading
import time

import pytest

from emulator.storage.checksum import format_checksum, xor16
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, escape, raw_open, raw_read_until, wait_for

OK = b"\r\nOK\r\n"
CGMI = b"\r\nQuectel\r\n\r\nOK\r\n"
CSQ = b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"
CORK_LIMIT = 16 * 1024
ODD_SIZES = (1, 7, 4093, 2, 13, 511, 3, 16385, 5)


# -- helpers -------------------------------------------------------------------------------
def ati_answer(emulator, port) -> bytes:
    revision = emulator.run(lambda: port.modem.profile["identity.revision"])
    return b"\r\nQuectel\r\nEC25\r\nRevision: " + revision.encode() + b"\r\n\r\nOK\r\n"


def cgmr_answer(emulator, port) -> bytes:
    revision = emulator.run(lambda: port.modem.profile["identity.revision"])
    return b"\r\n" + revision.encode() + b"\r\n\r\nOK\r\n"


def download(data: bytes) -> bytes:
    """AT+QFDWL's answer in ATV1: CONNECT, the bytes, CR LF, +QFDWL: <size>,<checksum>, OK."""
    return (b"\r\nCONNECT\r\n" + data + b"\r\n+QFDWL: " + str(len(data)).encode() + b","
            + format_checksum(xor16(data), pad=False).encode() + b"\r\n\r\nOK\r\n")


def read_odd(host: Host, n: int, timeout: float = 30, sizes=ODD_SIZES) -> bytes:
    """Exactly n bytes (what Host already holds first), read from the tty in odd-sized
    read(2)s, as a host with its own buffer sizes does."""
    got = bytearray(host.pending[:n])
    del host.pending[:n]
    fd = host.ser.fd
    deadline = time.monotonic() + timeout
    i = 0
    while len(got) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {len(got)} of {n} bytes; tail {bytes(got[-200:])!r}")
        if not select.select([fd], [], [], 0.05)[0]:
            continue
        try:
            piece = os.read(fd, min(sizes[i % len(sizes)], n - len(got)))
        except BlockingIOError:
            continue
        i += 1
        got += piece
        host.transcript += piece
    return bytes(got)


def read_some(host: Host, turn: int, timeout: float = 10) -> bytes:
    """Whatever is there (waiting up to `timeout` for a first byte), in one read(2) of an
    odd size."""
    if host.pending:
        out = bytes(host.pending)
        host.pending.clear()
        return out
    fd = host.ser.fd
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                piece = os.read(fd, ODD_SIZES[turn % len(ODD_SIZES)])
            except BlockingIOError:
                continue
            host.transcript += piece
            return piece
    raise AssertionError("nothing came")


def write_in_thread(host: Host, data: bytes) -> threading.Thread:
    """The host writes `data` in one write() call without waiting to read (it may block in
    the pty while the modem holds it back)."""
    writer = threading.Thread(target=host.write, args=(data,), daemon=True)
    writer.start()
    return writer


def detached(emulator, port) -> None:
    wait_for(lambda: not emulator.run(lambda: port.port.attached), what="the port saw the hang-up")


def with_pdp(host: Host) -> None:
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK


def qiopen(host: Host, mode: int = 0) -> None:
    line = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,{mode}'
    if mode == 2:
        host.write(line + "\r")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        return
    assert host.at(line) == OK
    assert host.read_until(b"\r\n+QIOPEN: 0,", timeout=10) == b"\r\n+QIOPEN: 0,"
    assert host.read_until(b"\r\n") == b"0\r\n"


def unread(emulator, port) -> int:
    state = emulator.control("state")
    return next(s["unread"] for s in state["sockets"] if s["id"] == 0)


# == 1. echo of a host typing byte by byte ====================================================
def test_each_typed_byte_is_echoed_before_the_next_is_typed(emulator, open_modem, strict_log):
    """minicom: a person types one character and sees it before typing the next.  Each
    byte's echo must come on its own (nothing waits for the line's end or a final result)."""
    host, port = open_modem("ec2x", echo=True)
    for line in (b"AT+CGMI\r", b"at+csq\r"):
        for i in range(len(line)):
            host.write(line[i:i + 1])
            assert host.read_exactly(1, timeout=5) == line[i:i + 1], (line, i)
        expected = CGMI if line == b"AT+CGMI\r" else CSQ
        assert host.read_exactly(len(expected), timeout=5) == expected
    # a CR LF host typing byte by byte: the LF after the CR is not echoed (the answer is out)
    for b in b"AT+CSQ\r":
        host.write(bytes([b]))
        assert host.read_exactly(1, timeout=5) == bytes([b])
    assert host.read_exactly(len(CSQ), timeout=5) == CSQ
    host.write(b"\n")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.2) == b""
    # backspace (S5) edits are echoed as typed, byte by byte too
    for b in b"AT+CGMX\x08I\r":
        host.write(bytes([b]))
        assert host.read_exactly(1, timeout=5) == bytes([b])
    assert host.read_exactly(len(CGMI), timeout=5) == CGMI
    assert host.quiet_for(0.2) == b""


def test_each_byte_typed_into_a_data_prompt_is_echoed_before_the_next(emulator, open_modem, tcp_echo,
                                                                      strict_log):
    """In a "> " prompt (AT+QISEND, ATE1 with AT+QISDE=1) the data are echoed too, byte by
    byte as they come; SEND OK follows the last one."""
    host, port = open_modem("ec2x", echo=True)
    assert host.at("ATE0") == b"ATE0\r" + OK
    with_pdp(host)
    qiopen(host)
    assert host.at("ATE1") == b"\r\nOK\r\n"
    line = b"AT+QISEND=0,6\r"
    for i in range(len(line)):
        host.write(line[i:i + 1])
        assert host.read_exactly(1, timeout=5) == line[i:i + 1]
    assert host.read_until(b"> ", timeout=5) == b"\r\n> "
    for b in b"hello!":
        host.write(bytes([b]))
        assert host.read_exactly(1, timeout=5) == bytes([b])
    assert host.read_until(b"\r\nSEND OK\r\n", timeout=5) == b"\r\nSEND OK\r\n"
    assert host.read_until(b'\r\n+QIURC: "recv",0\r\n', timeout=10) == b'\r\n+QIURC: "recv",0\r\n'


# == 2. pipelining: thousands of commands in one write, read in odd chunks =====================
@pytest.mark.parametrize("echo", [False, True], ids=["ATE0", "ATE1"])
def test_thousands_of_pipelined_ati_come_back_exact_in_odd_reads(emulator, open_modem, strict_log, echo):
    """4096 ATI in one write (16 KiB of input, ~250 KiB of output: the cork fills and is
    written many times over within one read): every answer once, in order, nothing torn."""
    host, port = open_modem("ec2x", echo=echo)
    one = (b"ATI\r" if echo else b"") + ati_answer(emulator, port)
    count = 4096
    writer = write_in_thread(host, b"ATI\r" * count)
    got = read_odd(host, len(one) * count)
    writer.join(10)
    assert got == one * count
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CGMI") == (b"AT+CGMI\r" if echo else b"") + CGMI


def test_mixed_pipeline_with_lines_split_across_writes(emulator, open_modem, strict_log):
    """A host that writes a long pipeline in pieces cut anywhere (mid-command, mid-CR LF):
    the answers are those of the whole pipeline, in order."""
    host, port = open_modem("ec2x")
    lines = [b"AT+CGMI\r\n", b"AT+CSQ\r\n", b"ATI\r\n", b"AT+CGMR\r\n", b"AT+QSSLCFG=?\r\n"]
    answers = [CGMI, CSQ, ati_answer(emulator, port), cgmr_answer(emulator, port), None]
    qsslcfg = host.at("AT+QSSLCFG=?")
    answers[4] = qsslcfg
    stream = b"".join(lines) * 300
    expected = b"".join(answers) * 300
    pieces, pos, k = [], 0, 0
    while pos < len(stream):
        size = ODD_SIZES[k % len(ODD_SIZES)]
        pieces.append(stream[pos:pos + size])
        pos += size
        k += 1

    def write_all() -> None:
        for piece in pieces:
            host.write(piece)
    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    got = read_odd(host, len(expected), timeout=40, sizes=(4096, 1, 333, 65536))
    writer.join(10)
    assert got == expected
    assert host.quiet_for(0.2) == b""


# == 3. answers bigger than the cork ==========================================================
def test_download_over_16k_and_the_next_command_in_the_same_write(emulator, open_modem, strict_log):
    """AT+QFDWL of files around and above the cork's limit (one answer written in one piece,
    and a paced one of 300 KB), each between AT+CSQ and AT+CGMI in the same write: AT+CSQ's
    answer, the file exact, its trailer, OK, then AT+CGMI's answer."""
    host, port = open_modem("ec2x")
    for name, size in (("a.bin", CORK_LIMIT - 1), ("b.bin", CORK_LIMIT), ("c.bin", 40000),
                       ("d.bin", 300_000)):
        data = os.urandom(size)
        assert host.upload(name, data).endswith(OK)
        expected = CSQ + download(data) + CGMI
        host.write(f'AT+CSQ\rAT+QFDWL="{name}"\rAT+CGMI\r'.encode())
        assert read_odd(host, len(expected)) == expected, name
    assert host.quiet_for(0.2) == b""


def test_pipelined_ati_with_ifc_hold_and_a_late_reader(emulator, open_modem, strict_log):
    """AT+IFC=2,2, 6000 pipelined ATI written while the host reads nothing: the modem stops
    taking input past 64 KiB of unread output; then the host reads in odd chunks: all
    6000 answers, once and in order (~370 KB, more than fits the output hold)."""
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == OK
    one = ati_answer(emulator, port)
    count = 6000
    writer = write_in_thread(host, b"ATI\r" * count)
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("output")), what="the hold")
    # held once more than 64 KiB waited: at most one answer past that (the cork counts)
    assert emulator.run(lambda: port.port.backlog) <= 64 * 1024 + len(one)
    got = read_odd(host, len(one) * count, timeout=40)
    writer.join(10)
    assert got == one * count
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+IFC?") == b"\r\n+IFC: 2,2\r\n\r\nOK\r\n"


def test_pipelined_qird_reads_with_ifc_hold_and_recv_urcs_between_answers(emulator, open_modem,
                                                                          peer_factory, strict_log):
    """A TCP socket in buffer mode holds 60000 bytes; behind AT+IFC=2,2 the host pipelines
    2000 ATI then 50 AT+QIRD=0,1500 (more than it needs) and reads late, in odd chunks,
    while the peer sends a second batch during the hold.  Every answer is framed exactly;
    the data concatenate to what the peer sent; a "recv" URC comes only between two
    answers, never inside one."""
    host, port = open_modem("ec2x")
    ati = ati_answer(emulator, port)
    peer = peer_factory()
    with_pdp(host)
    qiopen(host)
    first, second = os.urandom(60000), os.urandom(9000)
    peer.send(first)
    urc = b'\r\n+QIURC: "recv",0\r\n'
    assert host.read_until(urc) == urc
    wait_for(lambda: unread(emulator, port) == len(first), what="all data buffered")
    assert host.at("AT+IFC=2,2") == OK
    writer = write_in_thread(host, b"ATI\r" * 2000 + b"AT+QIRD=0,1500\r" * 50)
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("output")), what="the hold")
    peer.send(second)
    got, data = bytearray(), bytearray()
    atis = reads = urcs = turn = 0
    answer = re.compile(rb"\r\n\+QIRD: (\d+)\r\n")
    deadline = time.monotonic() + 30
    while reads < 50:
        assert time.monotonic() < deadline, (atis, reads, bytes(got[:300]))
        got += read_some(host, turn)
        turn += 1
        while True:
            if got.startswith(urc):
                urcs += 1
                del got[:len(urc)]
                continue
            if got.startswith(ati):
                assert reads == 0
                atis += 1
                del got[:len(ati)]
                continue
            m = answer.match(got)
            if m is None:
                assert ati.startswith(bytes(got[:len(ati)])) or urc.startswith(bytes(got[:len(urc)])) \
                    or len(got) < 20, bytes(got[:200])
                break
            n = int(m.group(1))
            tail = b"\r\n" + OK if n else OK
            end = m.end() + n + len(tail)
            if len(got) < end:
                break
            assert got[m.end() + n:end] == tail, bytes(got[:end + 20])
            data += got[m.end():m.end() + n]
            del got[:end]
            reads += 1
    writer.join(10)
    assert atis == 2000
    rest = bytes(got) + host.quiet_for(0.3)
    # what the 50 reads did not take of the second batch: announced once, still readable
    while rest.startswith(urc):
        urcs += 1
        rest = rest[len(urc):]
    assert rest == b""
    while len(data) < len(first) + len(second):
        host.write(b"AT+QIRD=0,1500\r")
        head = host.read_until(answer, timeout=10)
        m = answer.search(head)
        assert head[:m.start()] in (b"", urc), head
        n = int(m.group(1))
        data += host.read_exactly(n)
        assert host.read_until(OK) == (b"\r\n" if n else b"") + OK
    assert bytes(data) == first + second


def test_pipelined_qsslrecv_answers_over_the_cork_limit(emulator, open_modem, pki, strict_log):
    """AT+QSSLRECV=<id>,1500 x 30 in one write against 40000 bytes buffered: the answers
    (~46 KB, three cork fills) are each `+QSSLRECV: <n>` CR LF data CR LF, then OK."""
    blob = os.urandom(40000)
    host, port = open_modem("ec2x")
    with_pdp(host)

    def handler(conn) -> None:
        while len(conn.received) < 1 and conn.recv():
            pass
        conn.sendall(blob)
        while conn.recv():
            pass
    with TlsServer(handler=handler, legacy=True) as server:
        emulator.router.add_map("blob.example", 443, "127.0.0.1", server.port)
        assert host.at('AT+QSSLOPEN=1,1,2,"blob.example",443,0') == OK
        assert host.read_until(b"\r\n+QSSLOPEN: 2,0\r\n", timeout=15) == b"\r\n+QSSLOPEN: 2,0\r\n"
        assert host.send_data(2, b"!") == b"\r\nSEND OK\r\n"
        assert host.read_until(b'\r\n+QSSLURC: "recv",2\r\n', timeout=10) == b'\r\n+QSSLURC: "recv",2\r\n'
        wait_for(lambda: next(s["unread"] for s in emulator.control("state")["sockets"]) == len(blob),
                 what="all data buffered")
        host.write(b"AT+QSSLRECV=2,1500\r" * 30)
        expected = bytearray()
        for k in range(30):
            piece = blob[k * 1500:(k + 1) * 1500]
            expected += b"\r\n+QSSLRECV: %d\r\n" % len(piece) + piece + (b"\r\n" if piece else b"") + OK
        assert read_odd(host, len(expected)) == bytes(expected)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLCLOSE=2") == OK


# == 4. a host that leaves mid-answer ==========================================================
@pytest.mark.parametrize("read_first", [0, 3000], ids=["unread", "partly-read"])
def test_host_closing_mid_pipeline_leaves_nothing_for_the_next_host(emulator, open_modem, strict_log,
                                                                     read_first):
    """A host pipelines 4096 ATI and closes having read nothing (or a few KB); the next host
    (after the hang-up was seen) gets exactly its own answer, three times over."""
    host, port = open_modem("ec2x")
    one = ati_answer(emulator, port)
    for _ in range(3):
        host.write(b"ATI\r" * 4096)
        if read_first:
            assert read_odd(host, read_first) == (one * (read_first // len(one) + 1))[:read_first]
        host.close()
        detached(emulator, port)
        fd = raw_open(port.path)
        try:
            os.write(fd, b"AT+CGMI\r")
            got = raw_read_until(fd, CGMI, timeout=10)
            assert got == CGMI, got[:300]
            assert raw_read_until(fd, b"\x00", timeout=0.3) == b""
        finally:
            os.close(fd)
        host = Host(port.path)
        assert host.at("AT") == OK
    host.close()


def test_host_closing_mid_download_leaves_nothing_for_the_next_host(emulator, open_modem, strict_log):
    """AT+QFDWL of 300 KB: the host reads part of it and closes; the next host's AT+CGMI is
    answered alone (no file bytes, no +QFDWL trailer, no stray OK)."""
    host, port = open_modem("ec2x")
    data = os.urandom(300_000)
    assert host.upload("big.bin", data).endswith(OK)
    host.write(b'AT+QFDWL="big.bin"\r')
    assert read_odd(host, 20000) == download(data)[:20000]
    host.close()
    detached(emulator, port)
    fd = raw_open(port.path)
    try:
        os.write(fd, b"AT+CGMI\r")
        assert raw_read_until(fd, CGMI, timeout=10) == CGMI
        assert raw_read_until(fd, b"\x00", timeout=0.3) == b""
    finally:
        os.close(fd)


# == 5. URCs raised while a read is handled, and from the network ============================
def test_scenario_urcs_raised_inside_a_read_keep_their_place(emulator, open_modem, strict_log):
    """A `when` step's URC goes out before that command's answer, an `after` step's after
    it (docs: tools/scenario.py), also when all commands came in one write."""
    host, port = open_modem("ec2x")
    emulator.run_scenario({"step": [
        {"when": {"command": "+CGMR"}, "op": "urc", "text": "+WHEN: 1"},
        {"after": {"command": "+CGMI"}, "op": "urc", "text": "+AFTER: 1"},
    ]})
    host.write(b"AT+CSQ\rAT+CGMR\rAT+CGMI\rAT+CSQ\r")
    expected = CSQ + b"\r\n+WHEN: 1\r\n" + cgmr_answer(emulator, port) + CGMI + b"\r\n+AFTER: 1\r\n" + CSQ
    assert read_odd(host, len(expected), timeout=10) == expected
    assert host.quiet_for(0.2) == b""


def test_network_urcs_land_between_pipelined_answers_whole(emulator, open_modem, peer_factory, strict_log):
    """The peer sends and then closes while the host pipelines 3000 AT+CGMI: "recv" and
    "closed" come once each, whole, between two answers; the answers are all there."""
    host, port = open_modem("ec2x")
    peer = peer_factory()
    with_pdp(host)
    qiopen(host)
    count = 3000
    writer = write_in_thread(host, b"AT+CGMI\r" * count)
    peer.send(b"x" * 100)
    peer.close()
    recv, closed = b'\r\n+QIURC: "recv",0\r\n', b'\r\n+QIURC: "closed",0\r\n'
    total = len(CGMI) * count + len(recv) + len(closed)
    got = read_odd(host, total, timeout=30)
    writer.join(10)
    assert host.quiet_for(0.3) == b""
    seen = []
    pos = 0
    while pos < len(got):
        for token in (CGMI, recv, closed):
            if got.startswith(token, pos):
                seen.append(token)
                pos += len(token)
                break
        else:
            raise AssertionError(f"torn output at {pos}: {got[pos - 40:pos + 60]!r}")
    assert seen.count(CGMI) == count and seen.count(recv) == 1 and seen.count(closed) == 1
    assert seen.index(recv) < seen.index(closed)


def test_direct_push_between_pipelined_answers_keeps_every_byte(emulator, open_modem, peer_factory,
                                                                strict_log):
    """Push mode: data pushed (`+QIURC: "recv",0,<len>` CR LF data CR LF) only between answers,
    never inside one, while the host pipelines commands; all data once, in order."""
    host, port = open_modem("ec2x")
    peer = peer_factory()
    with_pdp(host)
    qiopen(host, mode=1)
    stream = bytes(range(256)) * 400                 # 102400 bytes, CR LF and "OK" inside
    count = 2000
    writer = write_in_thread(host, b"AT+CGMI\r" * count)
    peer.send(stream)
    head = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')
    prefix = b'\r\n+QIURC: "recv",0,'
    got, data = bytearray(), bytearray()
    answers = turn = 0
    deadline = time.monotonic() + 30
    while answers < count or len(data) < len(stream):
        assert time.monotonic() < deadline, (answers, len(data), bytes(got[:200]))
        got += read_some(host, turn)
        turn += 1
        while got:
            if got.startswith(CGMI):
                answers += 1
                del got[:len(CGMI)]
                continue
            m = head.match(got)
            if m and len(got) >= m.end() + int(m.group(1)) + 2:       # the data and their CR LF
                end = m.end() + int(m.group(1))
                assert got[end:end + 2] == b"\r\n", bytes(got[:end + 2][-200:])
                data += got[m.end():end]
                del got[:end + 2]
                continue
            # an incomplete answer or push: wait for more (anything else is torn output)
            assert (CGMI.startswith(bytes(got)) or prefix.startswith(bytes(got[:len(prefix)]))), \
                bytes(got[:200])
            break
    writer.join(10)
    assert answers == count and bytes(data) == stream
    assert host.quiet_for(0.2) == b""


# == 6. answers written just before a power-down or a restart ================================
@pytest.mark.parametrize("echo", [False, True], ids=["ATE0", "ATE1"])
def test_qpowd_pipelined_answers_then_silence_until_power_on(emulator, open_modem, strict_log, echo):
    """AT+QPOWD with commands behind it in the same write: OK, POWERED DOWN, nothing else
    (the rest is never read: the module is off); the start-up URCs a second later."""
    host, port = open_modem("ec2x", echo=echo, manual_time=True)
    host.write(b"ATI\rAT+QPOWD\rAT+CGMI\rAT+CSQ\r")
    expected = ((b"ATI\r" if echo else b"") + ati_answer(emulator, port)
                + (b"AT+QPOWD\r" if echo else b"") + b"\r\nOK\r\n\r\nPOWERED DOWN\r\n")
    assert read_odd(host, len(expected), timeout=10) == expected
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.3) == b""
    emulator.advance(port, 1.0)
    emulator.advance(port, 1.0)
    assert host.read_exactly(len(BOOT), timeout=10) == BOOT
    assert host.at("AT+CGMI") == b"AT+CGMI\r" + CGMI          # restarted: ATE1 again


def test_cfun_reset_answer_then_the_boot_urcs_only(emulator, open_modem, strict_log):
    """ATI;+CFUN=1,1: the line's answer (framed with ATE0, before the restart), then nothing
    but the start-up URCs."""
    host, port = open_modem("ec2x", manual_time=True)
    host.write(b"ATI;+CFUN=1,1\r")
    expected = ati_answer(emulator, port)
    assert read_odd(host, len(expected), timeout=10) == expected
    assert host.quiet_for(0.2) == b""
    for _ in range(4):
        emulator.advance(port, 0.5)
    assert host.read_exactly(len(BOOT), timeout=10) == BOOT
    assert host.quiet_for(0.2) == b""


def test_control_reboot_mid_pipelined_output_cuts_it_cleanly(emulator, open_modem, strict_log):
    """The host pipelined 4000 ATI and has not read; a reboot (control API) drops what was
    not sent: the host reads a prefix of the answers (never a torn or repeated answer after
    the cut), then the start-up URCs, then its next command's answer alone."""
    host, port = open_modem("ec2x")
    one = ati_answer(emulator, port)
    host.write(b"ATI\r" * 4000)
    emulator.wait_received(port, host.written)
    assert emulator.control("reboot", ms=50)["ok"]
    got = host.read_until(b"\r\n+QIND: PB DONE\r\n", timeout=10)
    before, boot = got[:-len(BOOT)], got[-len(BOOT):]
    assert boot == BOOT
    assert before == (one * 4000)[:len(before)]
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CGMI") == b"AT+CGMI\r" + CGMI


# == 7. prompts and their data in the same write ==============================================
def test_prompts_followed_by_their_data_in_one_write(emulator, open_modem, tcp_echo, strict_log):
    host, port = open_modem("ec2x")
    with_pdp(host)
    qiopen(host)
    # AT+QISEND with its data (and the next command) in the same write
    host.write(b"AT+QISEND=0,5\rhelloAT+CSQ\r")
    assert read_odd(host, len(b"\r\n> \r\nSEND OK\r\n") + len(CSQ)) == b"\r\n> \r\nSEND OK\r\n" + CSQ
    assert host.read_until(b'\r\n+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 5\r\nhello\r\n\r\nOK\r\n"
    # a CR LF host: the LF written with the line is the line's, not data
    host.write(b"AT+QISEND=0,4\r\n\nabcAT+CSQ\r\n")
    assert read_odd(host, len(b"\r\n> \r\nSEND OK\r\n") + len(CSQ)) == b"\r\n> \r\nSEND OK\r\n" + CSQ
    assert host.read_until(b'\r\n+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 4\r\n\nabc\r\n\r\nOK\r\n"
    # AT+QFUPL: CONNECT, the data, the next command: one write
    data = b"0123456789" * 3000                            # 30000 bytes
    host.write(b'AT+QFUPL="up.bin",30000\r' + data + b"AT+CGMI\r")
    expected = (b"\r\nCONNECT\r\n\r\n+QFUPL: 30000," + format_checksum(xor16(data), pad=False).encode()
                + b"\r\n" + OK + CGMI)
    assert read_odd(host, len(expected)) == expected
    # with echo: the prompt's data echoed after "> ", then SEND OK
    assert host.at("ATE1") == OK
    host.write(b"AT+QISEND=0,3\rabc")
    expected = b"AT+QISEND=0,3\r\r\n> abc\r\nSEND OK\r\n"
    assert read_odd(host, len(expected)) == expected


def test_transparent_ato_with_data_in_the_same_write(emulator, open_modem, tcp_echo, strict_log):
    """Transparent mode (AT+QIOPEN mode 2): after +++, "ATO" CR and the next data in one
    write: CONNECT, then the data echoed back; the escape's OK never mixes with them."""
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    with_pdp(host)
    assert host.at('AT+QICFG="transwaittm",0') == OK           # packets leave at once
    qiopen(host, mode=2)
    payload = bytes(range(256)) * 80                     # 20480 bytes: more than the cork
    host.write(payload)
    assert read_odd(host, len(payload)) == payload
    assert escape(host, advance) == OK
    host.write(b"ATO\r" + payload)
    assert read_odd(host, len(b"\r\nCONNECT\r\n") + len(payload)) == b"\r\nCONNECT\r\n" + payload
    assert escape(host, advance) == OK
    # AT&D1: a DTR drop after the echoed data leaves online mode with OK, nothing lost
    assert host.at("AT&D1") == OK
    host.write(b"ATO\r" + payload[:3000])
    assert read_odd(host, len(b"\r\nCONNECT\r\n") + 3000) == b"\r\nCONNECT\r\n" + payload[:3000]
    assert emulator.control("dtr", level=0)["ok"]
    assert host.read_until(OK, timeout=10) == OK
    assert emulator.control("dtr", level=1)["ok"]
    assert host.at("AT+QICLOSE=0") == OK


# == 8. uart_noise ===========================================================================
def test_uart_noise_with_pipelined_answers_and_bytewise_echo(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x", echo=True)
    assert emulator.control("uart_noise", on=True, seed=11)["ok"]
    for b in b"AT+CSQ\r":
        host.write(bytes([b]))
        assert host.read_exactly(1, timeout=5) == bytes([b])
    assert host.read_exactly(len(CSQ), timeout=5) == CSQ
    one = b"ATI\r" + ati_answer(emulator, port)
    host.write(b"ATI\r" * 60)
    assert read_odd(host, len(one) * 60) == one * 60
    assert emulator.control("uart_noise", on=False)["ok"]
    assert host.quiet_for(0.2) == b""


# == 9. --baud pacing ========================================================================
@pytest.mark.parametrize("restart", ["+CFUN=1,1", "+QPOWD"])
def test_restart_answer_leaves_at_the_rate_it_was_given(emulator, open_modem, strict_log, restart):
    """docs/behaviour.md: a restart puts the pace back to --baud's rate, but "AT+CFUN=1,1's own
    OK still leaves at the rate it was given" (AT+QPOWD's OK and POWERED DOWN likewise): after
    AT+IPR=9600 on a --baud 115200 modem, the ~1 KB answer of a line ending in the restart
    takes at least its time at 9600 baud.  (A cork holding it outside the port's queue made
    the switch immediate: ~0.09 s.)"""
    host, port = open_modem("ec2x", baud=115200)
    clean = host.at("AT+QSSLCFG=?")
    assert host.at("AT+IPR=9600") == OK
    wait_for(lambda: emulator.run(lambda: port.port.baud) == 9600, what="9600 baud")
    expected = clean + (b"\r\nPOWERED DOWN\r\n" if restart == "+QPOWD" else b"")
    start = time.monotonic()
    host.write(f"AT+QSSLCFG=?;{restart}\r".encode())
    assert host.read_exactly(len(expected), timeout=10) == expected
    elapsed = time.monotonic() - start
    assert host.read_until(b"\r\n+QIND: PB DONE\r\n", timeout=10).endswith(BOOT)
    assert emulator.run(lambda: port.port.baud) == 115200          # the power-on rate again
    assert elapsed >= (len(expected) - 10) / 960, f"{len(expected)} bytes in {elapsed:.3f} s: not 9600 baud"


def test_pipelined_answers_before_ipr_leave_at_the_old_rate(emulator, open_modem, strict_log):
    """AT+IPR=<rate> switches the pace once what is queued has left at the old rate: 20 ATI
    and AT+IPR=115200 in one write on a --baud 9600 modem, ~1.1 KB of answers, take at least
    their time at 9600.  (A cork holding them outside the port's queue made the switch
    immediate: a few ms.)"""
    host, port = open_modem("ec2x", baud=9600)
    one = ati_answer(emulator, port)
    start = time.monotonic()
    host.write(b"ATI\r" * 20 + b"AT+IPR=115200\r")
    expected = one * 20 + OK
    assert host.read_exactly(len(expected), timeout=10) == expected
    elapsed = time.monotonic() - start
    assert emulator.run(lambda: port.port.baud) == 115200
    assert elapsed >= (len(expected) - 10) / 960, f"{len(expected)} bytes in {elapsed:.3f} s"


@pytest.mark.parametrize("fault", ["baud", "uart_noise"])
def test_a_reboot_while_answers_go_out_cuts_the_unsent_ones(emulator, open_modem, strict_log, fault):
    """A reboot (the control op, while the answers of twenty pipelined AT+CGMR are still going
    out at 1200 baud or through uart_noise) loses what was not sent yet: a proper prefix of
    the answers before RDY.  (A cork that discard_output does not empty let them through
    whole.)  A scenario step `after` a command waits for that command's answer to leave the
    port first (docs/behaviour.md; test_adversarial_field_tools_5.py)."""
    host, port = open_modem("ec2x", **({"baud": 1200} if fault == "baud" else {}))
    if fault == "uart_noise":
        assert emulator.control("uart_noise", on=True, seed=3)["ok"]
    full = cgmr_answer(emulator, port) * 20
    host.write(b"AT+CGMR\r" * 20)
    first = host.read_exactly(8, timeout=10)                   # the answers are on their way
    assert emulator.control("reboot", ms=0)["ok"]
    got = first + host.read_until(b"\r\nRDY\r\n", timeout=10)
    before = got[:-len(b"\r\nRDY\r\n")]
    assert full.startswith(before)
    assert len(before) < len(full), f"the whole answer survived the reboot: {before!r}"


# Was a bug of the (reverted) cork: A restart must drop the output
# not sent yet, 'an answer still going out at --baud (or to a host not reading) is cut where the
# restart found it' (PtyPort.discard_output; control op reboot). A scenario step `after` AT+CGMR
# runs the reboot inside PtyPort._deliver, while the answers of that read (290 ATI + AT+CGMR,
# 14816 bytes, below CORK_LIMIT) are still in PtyPort._cork; discard_output empties only
# PtyPort._out, so after the restart _deliver writes the whole cork: the host, whose pty had ~4000
# bytes of room, reads all 14816 bytes, ending with b'\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n', before
# b'\r\nRDY\r\n'. Without the cork (HEAD) the ~4000 bytes that fitted arrive, the rest (AT+CGMR's
# answer included) is cut.
def test_scenario_reboot_drops_the_answers_a_slow_reader_had_no_room_for(emulator, open_modem):
    """docs (PtyPort.discard_output, the control op reboot): a restart cuts 'an answer still
    going out at --baud (or to a host not reading)'.  A slow host has left the pty nearly
    full (about 4000 bytes of room, nothing waiting in the port) when it pipelines 290 ATI
    and AT+CGMR (~14.8 KB of answers), and a scenario step reboots the modem `after`
    AT+CGMR.  What had no room in the pty when the restart came is lost: AT+CGMR's answer,
    the last, never arrives."""
    host, port = open_modem("ec2x")
    backlog = lambda: emulator.run(lambda: port.port.backlog)    # noqa: E731
    fill = "+F: " + "y" * 96                                    # 104 bytes on the wire
    # how much the pty holds: URCs the host does not read, until the port has to keep some
    written = 0
    while backlog() == 0:
        assert emulator.control("urc", text=fill)["ok"]
        written += len(fill) + 4
        assert written < 1 << 20
    capacity = written - backlog()
    assert read_odd(host, written) == (b"\r\n" + fill.encode() + b"\r\n") * (written // 104)
    assert host.quiet_for(0.2) == b"" and backlog() == 0
    # the pty full again but for ~4000 bytes, nothing in the port's queue
    urcs = (capacity - 4000) // 104
    for _ in range(urcs):
        assert emulator.control("urc", text=fill)["ok"]
    assert backlog() == 0
    run = emulator.run_scenario({"step": [{"after": {"command": "+CGMR"}, "op": "reboot"}]})
    host.write(b"ATI\r" * 290 + b"AT+CGMR\r")
    # the host reads on only once the restart happened (it is slow)
    wait_for(lambda: emulator.run(lambda: list(run.fired)), what="the scenario's reboot")
    got = host.read_until(b"\r\n+QIND: PB DONE\r\n", timeout=15)
    assert got.endswith(BOOT)
    before = got[:-len(BOOT)]
    stream = (b"\r\n" + fill.encode() + b"\r\n") * urcs + ati_answer(emulator, port) * 290 \
        + cgmr_answer(emulator, port)
    assert stream.startswith(before), "not a prefix of what was written"
    assert len(before) < len(stream), (
        f"nothing was cut: all {len(stream) - urcs * 104} bytes of answers written after the "
        f"pty was full but for ~4000 bytes came through the restart, AT+CGMR's answer last")


def test_paced_pipelined_answers_keep_order_and_bytes(emulator, open_modem, strict_log):
    """--baud 115200 with 200 pipelined ATI in one write: the paced answers, exact."""
    host, port = open_modem("ec2x", baud=115200)
    one = ati_answer(emulator, port)
    host.write(b"ATI\r" * 200)
    assert read_odd(host, len(one) * 200, timeout=20) == one * 200
    assert host.quiet_for(0.2) == b""
