"""Adversarial review of 05cf077 (emulator/io/transport.py PtyPort._hangup_if_gone): the host
closing the port while its input is held back (set_reading(False): a transparent connection
whose server stopped reading, AT+IFC=<x>,2's hold behind a pending answer or unread output)
now has what is still in the pty -- and PtyPort._held -- read to its end and handed to the
modem before the hang-up (docs/behaviour.md, "The host closing the device is seen by the pty").

Checked from the host's and the server's side: every byte the departed host wrote online
reaches the server once, in order ("+++" and "AT" text inside it are data), the connection
stays; in command state (the output hold, the pending hold) nothing the departed host left
runs and nothing greets the next host (answers, echo, a half line); a quick reopen; several
modems; the modem raising on the bytes; the control API's view; `--trace` and its replay;
`--uart` (hangup_on_close False) keeps the bytes until the modem reads again.

Two strict xfails marked what was wrong (fixed in transport.py: the held-back hang-up reads before its second look; a UART's step-aside bytes go first).
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time

from emulator.io.transport import PtyPort
from emulator.modem.profile import load_profile
from emulator.tools.trace import read_trace, replay_records
from emulator.testing.host import Host
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, DrivenPeer, raw_open, wait_for

OK = b"\r\nOK\r\n"
QISTATE_ONLINE = re.compile(rb'\+QISTATE: 0,"TCP","[^"]+",%d,\d+,2,1,\d+,2,' % TCP_PORT)


def data_pattern(n: int, seed: int = 0) -> bytes:
    """n bytes of numbered lines ("00000123\\n"): no '+', no "AT", every byte's place known."""
    out = bytearray()
    i = seed
    while len(out) < n:
        out += b"%08d\n" % i
        i += 1
    return bytes(out[:n])


def small_buffer_profile(name: str = "ec2x"):
    """The profile with a 4 KiB online buffer: the port holds the host back soon."""
    profile = load_profile(name)
    profile.data["ssl"]["online_buffer"] = 4096
    profile._found.clear()
    return profile


def reading(emulator, port) -> bool:
    return emulator.run(lambda: port.port.reading)


def write_until_held(emulator, port, fd: int, chunk_of, timeout: float = 15) -> bytes:
    """Write chunk_of(i) (non-blocking, partial writes kept) until the port stops reading the
    host; returns every byte the pty took."""
    taken = bytearray()
    deadline = time.monotonic() + timeout
    i = 0
    while reading(emulator, port):
        assert time.monotonic() < deadline, "the port never held the host back"
        chunk = chunk_of(i)
        try:
            n = os.write(fd, chunk)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        taken += chunk[:n]
        i += 1
    return bytes(taken)


def write_all_now(fd: int, data: bytes) -> None:
    """data into the pty at once (it has room: the port stopped reading just now)."""
    assert os.write(fd, data) == len(data)


def waiting_in_pty(emulator, port) -> int:
    return emulator.run(port.port.input_waiting)


def stalled_online(emulator, open_modem, profile="ec2x", transwaittm: int = 0, **kw):
    """A transparent AT+QIOPEN "TCP" socket 0 to a peer that reads nothing; a second opener
    (raw fd) writes numbered lines until the port holds it back.
    Returns (host, port, peer, fd, bytes the pty took)."""
    host, port = open_modem(small_buffer_profile(profile), **kw)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    peer = DrivenPeer(hold_reading=True, rcvbuf=4096)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
    assert host.at(f'AT+QICFG="transwaittm",{transwaittm}') == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2') == b"\r\nCONNECT\r\n"
    fd = raw_open(port.path)
    taken = write_until_held(emulator, port, fd, lambda i: data_pattern(8192, i * 1000))
    return host, port, peer, fd, taken


def leave(emulator, port, fd: int, host: Host) -> None:
    """Both openers close the device; until the modem has seen the hang-up."""
    os.close(fd)
    host.close()
    wait_for(lambda: emulator.run(lambda: port.modem.interpreter.online_link) is None, 10,
             "the hang-up seen (online mode left)")


def peer_gets(peer: DrivenPeer, want: bytes, timeout: float = 20) -> bytes:
    peer.release_reading()
    wait_for(lambda: len(peer.got) >= len(want), timeout, "the bytes at the peer", every=0.02)
    time.sleep(0.2)                                  # (nothing more comes)
    return bytes(peer.got)


# == online: the departed host's bytes reach the connection ========================================
def test_held_back_online_bytes_with_escape_text_reach_the_server_then_a_quick_reopen(
        emulator, open_modem, strict_log):
    """Transparent mode held back by a peer that reads nothing; the host (after a guard time
    of silence) writes "+++" and closes at once: what it wrote, "+++" included (no guard time
    after it: data, docs "the host closing the port -- the held '+' are data"), reaches the
    server once, in order, after the bytes read before.  A program opening the device right
    after the hang-up meets command state, nothing stale; its own "AT" is answered and never
    reaches the server; the socket stays (AT+QISTATE access mode 2; the control API's
    bytes_sent counts every byte); AT+QICLOSE OK."""
    host, port, peer, fd, taken = stalled_online(emulator, open_modem)
    time.sleep(1.1)                                  # S12's guard time before "+++"
    write_all_now(fd, b"+++")
    assert waiting_in_pty(emulator, port) >= 3       # (the hold is on: they wait in the pty)
    leave(emulator, port, fd, host)
    again = Host(port.path)
    try:
        again.write(b"AT\r")                         # at once, right after the hang-up
        assert again.read_until(OK, timeout=5) == OK
        assert again.quiet_for(0.2) == b""
        want = taken + b"+++"
        assert peer_gets(peer, want) == want
        assert QISTATE_ONLINE.search(again.at("AT+QISTATE=1,0"))
        state = emulator.control("state")
        assert state["mode"] == "COMMAND"
        assert [s["bytes_sent"] for s in state["sockets"] if s["id"] == 0] == [len(want)]
        assert again.at("AT+QICLOSE=0,0") == OK
        assert bytes(peer.got) == want
    finally:
        again.close()
        peer.close()


def test_command_text_after_escape_in_held_bytes_is_data_and_answers_never_reach_next_host(
        emulator, open_modem, strict_log):
    """The held-back tail is "+++" then "AT+QICLOSE=0\\r" then half a line, as a host that
    thought it had escaped writes: all of it is the connection's data (no silence separated
    it from what came before, as on a module whose UART held it), no OK, no echo, no ERROR
    for anybody; the socket is not closed by it."""
    host, port, peer, fd, taken = stalled_online(emulator, open_modem)
    tail = b"+++AT+QICLOSE=0\rATE1\rAT+QSSLC"
    write_all_now(fd, tail)
    assert waiting_in_pty(emulator, port) >= len(tail)
    leave(emulator, port, fd, host)
    again = Host(port.path)
    try:
        assert again.quiet_for(0.3) == b""
        assert again.at("AT") == OK                  # no echo: ATE1 did not run
        want = taken + tail
        assert peer_gets(peer, want) == want
        assert QISTATE_ONLINE.search(again.at("AT+QISTATE=1,0"))
        assert again.at("AT+QICLOSE=0,0") == OK
    finally:
        again.close()
        peer.close()


def test_departed_hosts_bytes_precede_the_next_hosts_after_ato(emulator, open_modem, strict_log):
    """The next program returns with ATO and writes at once: the server gets the departed
    host's held-back bytes first, then the new ones -- never the other way round, never
    one of them twice; the next program's close leaves the connection too (AT+QICLOSE)."""
    host, port, peer, fd, taken = stalled_online(emulator, open_modem)
    tail = b"the departed host's last words"
    write_all_now(fd, tail)
    leave(emulator, port, fd, host)
    b = Host(port.path)
    try:
        assert b.at("ATO") == b"\r\nCONNECT\r\n"
        b.write(b"the next host's first words")
    finally:
        b.close()
    wait_for(lambda: emulator.run(lambda: port.modem.interpreter.online_link) is None, 10, "B's hang-up")
    want = taken + tail + b"the next host's first words"
    try:
        assert peer_gets(peer, want) == want
        c = Host(port.path)
        try:
            assert c.quiet_for(0.2) == b""
            assert c.at("AT+QICLOSE=0,0") == OK
        finally:
            c.close()
    finally:
        peer.close()


def test_ml302_transparent_held_back_host_leaves_every_byte_arrives(emulator, open_modem, strict_log):
    """ML302 connectmode 1 to a TLS server that reads nothing: the host leaves with bytes
    held back in the pty; the server, reading again, gets every one once, in order; the
    next host meets command state, the connection still there."""
    import socket
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e import test_adversarial_hostile_servers_9 as h9
    host, port = open_modem(small_buffer_profile("ml302"))
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK

    def script(c) -> None:
        c.handshake()
        c.server.release.wait(60)
        h6.Conn.reader(c)

    with h9.Hand(emulator, script, suite=h6.RSA_CBC) as server:
        server.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert host.at(f'AT+QSSLOPEN=4,0,"{h9.NAME}",443,1') == b"\r\nCONNECT\r\n"
        fd = raw_open(port.path)
        taken = write_until_held(emulator, port, fd, lambda i: data_pattern(8192, i * 1000))
        tail = b"+++ then gone"
        write_all_now(fd, tail)
        leave(emulator, port, fd, host)
        server.release.set()
        conn = server.conns[0]
        want = taken + tail
        wait_for(lambda: len(conn.plain) >= len(want), 20, "every byte at the server", every=0.02)
        time.sleep(0.2)
        assert bytes(conn.plain) == want
        again = Host(port.path)
        try:
            assert again.quiet_for(0.2) == b""
            assert again.at("AT") == OK
            assert h9.ml_state(again, 4) == "CONNECTED"      # (the connection stays)
        finally:
            again.close()


def test_held_back_bytes_short_of_a_packet_go_at_the_hang_up_not_after_transwaittm(
        emulator, open_modem, strict_log):
    """transwaittm 20 (2 s) on the modem's manual clock, which never moves here: the
    departed host's held-back tail, handed on at the close, fills no packet -- the hang-up
    sends what waits for one at once (docs: the host closing the port ends online mode; what
    waited behind transwaittm goes), so the server gets every byte without the timer."""
    host, port, peer, fd, taken = stalled_online(emulator, open_modem, transwaittm=20, manual_time=True)
    try:
        tail = b"short"
        write_all_now(fd, tail)
        leave(emulator, port, fd, host)
        want = taken + tail
        assert peer_gets(peer, want, timeout=10) == want
    finally:
        peer.close()


def test_other_modems_are_served_while_one_port_hangs_up_held_back(emulator, open_modem, strict_log):
    """Two more modems in the process: while the stalled one's host leaves with a pty full of
    held-back bytes, they answer every command, and none of its bytes reach them."""
    others = [open_modem(p)[0] for p in ("ec2x", "ml302")]
    host, port, peer, fd, taken = stalled_online(emulator, open_modem)
    try:
        filler = data_pattern(4096, 999_000)
        while True:                                  # the pty full to the brim
            try:
                taken += filler[:os.write(fd, filler)]
            except BlockingIOError:
                break
        assert waiting_in_pty(emulator, port) >= 4095     # (FIONREAD counts the line buffer)
        os.close(fd)
        host.close()
        for _ in range(10):
            assert others[0].at("AT+CGMM", timeout=5) == b"\r\nEC25\r\n\r\nOK\r\n"
            assert others[1].at("AT", timeout=5) == OK
        wait_for(lambda: emulator.run(lambda: port.modem.interpreter.online_link) is None, 10, "hang-up")
        assert peer_gets(peer, taken) == taken
        for other in others:
            assert b"0000" not in bytes(other.transcript)
    finally:
        peer.close()


def test_modem_raising_on_the_held_bytes_does_not_stop_the_hang_up(emulator, open_modem, caplog):
    """The modem fails on the bytes handed on at the close (on_data raises): one logged
    failure, the hang-up still happens (the next host meets command state), the port lives."""
    caplog.set_level(logging.INFO)
    host, port, peer, fd, taken = stalled_online(emulator, open_modem)
    real = port.port.on_data
    calls = []

    def boom(data: bytes) -> None:
        calls.append(len(data))
        raise RuntimeError("modem bug")

    try:
        write_all_now(fd, b"tail")
        waiting = waiting_in_pty(emulator, port)
        assert waiting >= 4
        emulator.run(setattr, port.port, "on_data", boom)
        os.close(fd)
        host.close()
        wait_for(lambda: not emulator.run(lambda: port.port.attached), 10, "the hang-up")
        emulator.run(setattr, port.port, "on_data", real)
        # one call with every held byte (at least what the pty showed: under load it may still
        # have been moving the host's earlier bytes to the master side when it was asked)
        assert len(calls) == 1 and calls[0] >= waiting, (calls, waiting)
        failures = [r for r in caplog.records if "modem failed on" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info
        again = Host(port.path)
        try:
            assert again.quiet_for(0.2) == b""
            assert again.at("AT") == OK
            assert emulator.control("state")["mode"] == "COMMAND"
            assert again.at("AT+QICLOSE=0,0") == OK
        finally:
            again.close()
    finally:
        peer.close()


def test_trace_of_a_held_back_hang_up_records_the_bytes_before_it_and_replays(
        emulator, open_modem, tmp_path, strict_log):
    """--trace: the departed host's held-back bytes are an "in" record before the "hangup"
    record (never after it), and the recording replays with no difference."""
    path = tmp_path / "held.trace"
    host, port, peer, fd, taken = stalled_online(emulator, open_modem, trace=str(path))
    try:
        tail = b"written, then left"
        write_all_now(fd, tail)
        leave(emulator, port, fd, host)
        again = Host(port.path)
        try:
            assert again.at("AT") == OK
            want = taken + tail
            assert peer_gets(peer, want) == want
            assert again.at("AT+QICLOSE=0,0") == OK
        finally:
            again.close()
    finally:
        peer.close()
    emulator.run(lambda: None)
    recs = [r for r in read_trace(path) if r.get("kind") in ("io", "hangup")]
    hangup = next(i for i, r in enumerate(recs) if r["kind"] == "hangup")
    before = b"".join(r["data"].encode("latin-1") for r in recs[:hangup] if r["kind"] == "io" and r["dir"] == "in")
    assert before.endswith(taken + tail)
    assert recs[hangup]["in"] == len(before)
    out = []

    class Out:
        def write(self, s):
            out.append(s)

        def flush(self):
            pass
    assert replay_records(read_trace(path), out=Out()) == 0, "".join(out)


# == command state: the departed host's bytes never run, nothing greets the next host ================
def test_output_hold_departed_lines_never_run_and_nothing_greets_the_next_host(emulator, open_modem,
                                                                             strict_log):
    """AT+IFC=2,2 and a host that pipelines ATI without reading: past 64 KiB of unread output
    the modem holds it back (CTS).  It then writes ATE1, AT+IFC=0,0 and half a line and
    closes: none of that runs for anybody (the next host: no echo, its AT+IFC still 2,2), no
    answer, no echo, no half line greets it."""
    host, port = open_modem("ec2x")
    assert host.at("AT+IFC=2,2") == OK
    fd = raw_open(port.path)
    try:
        write_until_held(emulator, port, fd, lambda i: b"ATI\r" * 256)
        assert emulator.run(lambda: port.modem.input_held("output"))
        tail = b"ATE1\rAT+IFC=0,0\rAT+CGM"
        write_all_now(fd, tail)
        assert waiting_in_pty(emulator, port) >= len(tail)
    finally:
        os.close(fd)
    host.close()
    wait_for(lambda: emulator.run(lambda: port.modem.epoch) >= 1, 10, "the hang-up")
    again = Host(port.path)
    try:
        assert again.quiet_for(0.3) == b""
        again.write(b"M\r")                            # the half line "AT+CGM" is gone:
        assert again.at("AT") == OK                     # no AT+CGMM answer first, no echo
        assert again.at("AT+IFC?") == b"\r\n+IFC: 2,2\r\n\r\nOK\r\n"
        assert again.quiet_for(0.2) == b""
    finally:
        again.close()


def test_pending_hold_departed_lines_never_run_and_the_late_answer_is_not_written(
        emulator, open_modem, strict_log):
    """AT+IFC=2,2; a slow AT+CGMM pending; the host writes on behind it until the modem holds
    it back, then ATE1 and closes.  The pending answer, when it comes, is not written; the
    held-back lines never run; the next host meets command state and nothing else."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at("AT+IFC=2,2") == OK
    assert emulator.control("slow", command="+CGMM", ms=5000)["ok"]
    host.write(b"AT+CGMM\r")
    fd = raw_open(port.path)
    try:
        write_until_held(emulator, port, fd, lambda i: b"AT+CGMI\r" * 512)
        assert emulator.run(lambda: port.modem.input_held("pending"))
        tail = b"ATE1\r"
        write_all_now(fd, tail)
        assert waiting_in_pty(emulator, port) >= len(tail)
    finally:
        os.close(fd)
    host.close()
    wait_for(lambda: emulator.run(lambda: port.modem.epoch) >= 1, 10, "the hang-up")
    emulator.advance(port, 6)                       # the slow answer comes: to nobody
    again = Host(port.path)
    try:
        assert again.quiet_for(0.3) == b""
        assert again.at("AT") == OK                  # no echo: ATE1 never ran
        assert again.quiet_for(0.2) == b""
    finally:
        again.close()


def test_paced_download_held_back_by_ifc_then_the_host_leaves(emulator, open_modem, strict_log):
    """AT+IFC=2,2, AT+QFDWL of a 300 KB file that the host does not read (a paced answer),
    more lines written behind it until the modem holds the host back, then ATE1 and the
    close: the rest of the download, its +QFDWL line and OK are not written, the lines
    never run; the next host meets command state and nothing else."""
    host, port = open_modem("ec2x")
    blob = data_pattern(300_000, 77)
    assert host.upload("UFS:held.bin", blob).endswith(b"OK\r\n")
    assert host.at("AT+IFC=2,2") == OK
    host.write(b'AT+QFDWL="UFS:held.bin"\r')
    fd = raw_open(port.path)
    try:
        write_until_held(emulator, port, fd, lambda i: b"AT+CGMR\r" * 512)
        assert emulator.run(lambda: port.modem.input_held("pending"))
        write_all_now(fd, b"ATE1\r")
    finally:
        os.close(fd)
    host.close()
    wait_for(lambda: emulator.run(lambda: port.modem.epoch) >= 1, 10, "the hang-up")
    again = Host(port.path)
    try:
        assert again.quiet_for(0.4) == b""
        assert again.at("AT") == OK                  # no echo
        assert again.quiet_for(0.2) == b""
        assert b"QFDWL" not in bytes(again.transcript)
    finally:
        again.close()


# == --uart: no hang-up line, the bytes wait for the modem to read again ============================
def test_uart_held_back_bytes_stay_until_the_modem_reads_again(emulator, open_modem, strict_log):
    """hangup_on_close False (--uart): the host's close is no hang-up; online mode stays, the
    held-back bytes stay in the pty (not handed on at the close) and reach the server once
    the modem reads again, in order; the next program's bytes follow them."""
    host, port, peer, fd, taken = stalled_online(emulator, open_modem, hangup_on_close=False)
    try:
        write_all_now(fd, b"left behind")
        os.close(fd)
        host.close()
        wait_for(lambda: not emulator.run(lambda: port.port.attached), 10, "the close seen")
        time.sleep(0.2)
        assert emulator.run(lambda: port.modem.interpreter.online_link) is not None
        assert not reading(emulator, port)
        assert waiting_in_pty(emulator, port) >= len(b"left behind")
        want = taken + b"left behind"
        assert peer_gets(peer, want) == want
        again = Host(port.path)
        try:
            again.write(b"next program")
            wait_for(lambda: bytes(peer.got).endswith(b"next program"), 10, "the next program's bytes")
            assert bytes(peer.got) == want + b"next program"
        finally:
            again.close()
    finally:
        peer.close()


async def _until(predicate, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met"
        await asyncio.sleep(0.005)


def _uart_step_aside_then_close(hangup_on_close: bool) -> tuple[bytes, bytes]:
    """PtyPort alone: bytes read before a step aside ("older"), the modem then holding input
    back, the host writing "newer" and closing; the modem (as Modem.host_closed_without_hangup
    does for --uart) holds input back again at the close, then reads again.
    Returns (what the modem got by the close, what it got in all)."""
    async def main():
        got = bytearray()
        at_close: list[bytes] = []
        port = None

        def on_hangup() -> None:
            at_close.append(bytes(got))
            if not hangup_on_close:
                port.set_reading(False)          # (host_closed_without_hangup: still held)
        port = PtyPort(asyncio.get_running_loop(), got.extend, on_hangup=on_hangup,
                       hangup_on_close=hangup_on_close)
        fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
        try:
            await _until(lambda: port.attached)
            port._held = b"older "               # read, then a step aside for another port
            port._step_aside()
            port.set_reading(False)              # the modem holds the host back meanwhile
            await asyncio.sleep(0.02)
            os.write(fd, b"newer")
        finally:
            os.close(fd)
        try:
            await _until(lambda: at_close)
            port.set_reading(True)               # the modem reads again (nobody attached)
            await asyncio.sleep(0.3)             # (several looks for a host)
            return at_close[0], bytes(got)
        finally:
            port.close()
    return asyncio.run(main())


def test_hangup_port_hands_on_step_aside_bytes_then_the_pty_in_order():
    """hangup_on_close True (the commit's path): "older " then "newer", both before the
    hang-up."""
    at_close, total = _uart_step_aside_then_close(True)
    assert at_close == b"older newer"
    assert total == b"older newer"


# Was a bug, fixed (transport.py: read before the second look; a UART's step-aside bytes first): --uart: bytes read before a step aside (PtyPort._held) stay held after the close while the modem reads again with nobody attached; _attach_if_present's UART branch hands on the newer pty bytes first (_hand_on_later(early)) and _held waits for the next host's attach: the host's stream is reordered (emulator/io/transport.py PtyPort._attach_if_present / _hangup)
def test_uart_step_aside_bytes_keep_their_order_when_the_modem_reads_again():
    """hangup_on_close False (--uart): what the host wrote reaches the modem in the order it
    was written, "older " before "newer", once the modem reads again (docs/behaviour.md:
    every byte a host wrote reaches the modem; held back at the close: read when the modem
    reads again)."""
    at_close, total = _uart_step_aside_then_close(False)
    assert at_close == b""                       # (a UART: nothing at the close itself)
    assert total == b"older newer"


# Was a bug, fixed (transport.py: read before the second look; a UART's step-aside bytes first): PtyPort._hangup_if_gone (held-back branch) looks for the host (_host_gone) and only then reads the pty (_read_all): a next host that opens and writes between the two has its bytes handed to the departed host's session before the hang-up (its AT is never answered, online they go into the departed connection) -- the order _attach_if_present's docstring rules out (read first, then look) (emulator/io/transport.py PtyPort._hangup_if_gone)
def test_next_hosts_bytes_read_with_the_departed_ones_never_precede_the_hang_up():
    """The departed host's held-back bytes, then the hang-up, then the next host's -- or, when
    the next host is there before the departed host's bytes were read, no hang-up at all (one
    host, as a close and reopen in the same instant, docs/behaviour.md): never the next
    host's bytes before the departed host's hang-up.  The next host opens and writes in the
    moment between the port's look for the host and its read of the pty."""
    async def main():
        got, hangups = bytearray(), []
        port = PtyPort(asyncio.get_running_loop(), got.extend, on_hangup=lambda: hangups.append(len(got)))
        fd = os.open(port.device, os.O_RDWR | os.O_NOCTTY)
        nxt: list[int] = []
        try:
            await _until(lambda: port.attached)
            port.set_reading(False)                  # held back (a full connection)
            os.write(fd, b"departed\r")
            real = port._read_all

            def read_all_as_the_next_host_comes() -> bytes:
                if not nxt:                          # the next program, in that moment
                    nxt.append(os.open(port.device, os.O_RDWR | os.O_NOCTTY))
                    os.write(nxt[0], b"AT\r")
                return real()
            port._read_all = read_all_as_the_next_host_comes
            os.close(fd)
            fd = -1
            await _until(lambda: nxt)
            await asyncio.sleep(0.1)                 # (the close seen, or the next host taken for it)
            assert port.attached
            port.set_reading(True)                   # (the modem reads again)
            await _until(lambda: len(got) >= len(b"departed\rAT\r"))
            await asyncio.sleep(0.05)
            return bytes(got), list(hangups)
        finally:
            if fd >= 0:
                os.close(fd)
            for b in nxt:
                os.close(b)
            port.close()
    got, hangups = asyncio.run(main())
    assert got == b"departed\rAT\r"
    assert hangups in ([], [len(b"departed\r")]), hangups
