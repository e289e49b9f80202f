"""Adversarial review of every place where bytes wait, after 605fd17 (PtyPort._held stranded
until the host wrote more): for each hold point, do the bytes get out again without a new
external event (more host bytes, more network bytes), in order, once, and are they dropped
exactly when the module would drop them?

Hold points reviewed (what releases them), each with a test below where practical:
- PtyPort._held (transport.py): _resume_reading, also queued by set_reading(True)
  (605fd17: unit tests in tests/unit/io/test_transport_paused.py).
- PtyPort pty input while set_reading(False) ("pending" with AT+IFC=<x>,2, "output", "online"):
  resume_input -> set_reading(True) -> add_reader, level-triggered on bytes still in the pty.
- PtyPort._out above HIGH_WATER: on_drain -> "output_drained" -> PushDelivery.push,
  OnlineDelivery._drained, Interpreter._output_drained, Modem.drained() (paced answers).
- Interpreter._inbox while PENDING: _pending_done -> _pump.
- EscapeDetector held "+" / "+++": the escape timer (expire), the next host byte, DTR / hang-up
  (_release_held).
- SslSocket.inbox + paused transport (recv_buffer): read() resumes below half; the peer's last
  bytes and FIN wait in the kernel until then.
- OnlineDelivery.flush: network paused while the host's output is above HIGH_WATER; resumed by
  "output_drained" while online, by ATO (SocketLink.started) -- and not on leaving online mode:
  BUG 1 below.
- SslSocket._deferred (transmit_soon): FLUSH_AFTER timer, data_prompt, peer FIN, close.
- ShapedLink / ShapedTransport / _Pipe (network.py, control API "net"): outgoing packets wait
  on the modem's timers; the peer's FIN closes the real transport at once and drops them:
  BUG 2.  The writer's resume_writing after the shaped backlog went above high: BUG 3.
"""
from __future__ import annotations

import os
import re
import threading
import time

from emulator.io.network import NetConditions, ShapedTransport, _Pipe
from emulator.modem.timers import Timers
from emulator.sockets.tcpip import tcpip_service
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, ec2x_with_pdp, escape, read_pushes, wait_for

CLOSED = b'\r\n+QIURC: "closed",0\r\n'


def _open(host, mode: int) -> None:
    line = f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,{mode}'
    if mode == 2:
        host.write(line + "\r")
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
    else:
        assert host.at(line) == b"\r\nOK\r\n"
        assert host.seen(b"+QIOPEN: 0,") + host.read_until(b"\r\n") == b"+QIOPEN: 0,0\r\n"


def _sock(emulator, port):
    return emulator.run(lambda: tcpip_service(port.modem).sockets.get(0))


def _paused(emulator, port) -> bool:
    return emulator.run(lambda: bool(tcpip_service(port.modem).sockets[0]._paused))


# == direct push: a burst while the host does not read, then it reads all and goes quiet ==========
def test_push_burst_held_above_high_water_comes_out_when_the_host_reads_once(open_modem, peer_factory,
                                                                           emulator, strict_log):
    """The server sends 400 KB while the host reads nothing (the output goes above HIGH_WATER,
    the inbox past recv_buffer pauses TCP); then the host reads everything and sends nothing.
    output_drained must push the rest; a second burst sent with its FIN while reading is
    paused comes out whole, then "closed"."""
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open(host, 1)
    first, second = os.urandom(400_000), os.urandom(300_000)
    peer.send(first)
    wait_for(lambda: _paused(emulator, port), what="TCP reading paused behind a host that does not read")
    time.sleep(0.3)
    assert read_pushes(host, len(first)) == first
    # now: last bytes and FIN while the host is not reading again
    peer.send(second)
    peer.shutdown_wr()
    wait_for(lambda: _paused(emulator, port), what="paused again")
    time.sleep(0.3)
    assert read_pushes(host, len(second)) == second
    assert host.read_until(CLOSED, timeout=10) == CLOSED
    assert host.quiet_for(0.2) == b""


# == buffer mode: last bytes + FIN behind a paused TCP reading ======================================
def test_buffer_mode_last_bytes_and_fin_behind_paused_reading_reach_the_host(open_modem, peer_factory,
                                                                           emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open(host, 0)
    data = os.urandom(150_000)
    peer.send(data)
    peer.shutdown_wr()
    wait_for(lambda: _paused(emulator, port), what="TCP reading paused at recv_buffer")
    assert host.seen(b'+QIURC: "recv",0') == b'+QIURC: "recv",0'
    got = bytearray()
    for _ in range(400):
        host.write(b"AT+QIRD=0,1500\r")
        head = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
        n = int(re.search(rb"\+QIRD: (\d+)", head).group(1))
        if n:
            got += host.read_exactly(n)
        assert host.read_until(b"\r\nOK\r\n").endswith(b"\r\nOK\r\n")
        if n == 0 and len(got) == len(data):
            break
    assert bytes(got) == data
    assert host.seen(b'+QIURC: "closed",0', timeout=10) == b'+QIURC: "closed",0'


# == transparent mode: network held back for the host's output ======================================
def test_transparent_burst_and_fin_held_for_a_slow_host_come_out_then_no_carrier(open_modem, peer_factory,
                                                                                emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open(host, 2)
    data = os.urandom(500_000)
    peer.send(data)
    wait_for(lambda: _paused(emulator, port), what="network paused for the host's output")
    peer.shutdown_wr()                             # last bytes sent, FIN, while paused
    time.sleep(0.3)
    assert host.read_exactly(len(data), timeout=30) == data
    assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=10) == b"\r\nNO CARRIER\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"


def test_bytes_that_came_after_plus_plus_plus_go_out_first_on_ato(open_modem, peer_factory, emulator,
                                                                  strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, manual_time=True)
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): this
    # test is about other things than the module's packet wait, and runs on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"

    def advance(s):
        emulator.wait_received(port, host.written)
        emulator.advance(port, s)
    _open(host, 2)
    assert escape(host, advance) == b"\r\nOK\r\n"
    waiting = os.urandom(20_000)
    peer.send(waiting)
    wait_for(lambda: emulator.run(lambda: len(tcpip_service(port.modem).sockets[0].inbox)) == len(waiting),
             what="bytes waiting in the socket")
    assert host.quiet_for(0.1) == b""
    host.write(b"ATO\r")
    assert host.read_until(b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(len(waiting)) == waiting      # with no new host or network byte
    peer.send(b"after")
    assert host.read_exactly(5) == b"after"
    host.write(b"up")
    wait_for(lambda: bytes(peer.got) == b"up", what="host bytes after ATO at the server")


# Was a bug, fixed: BUG 1: emulator/sockets/delivery.py OnlineDelivery.flush pauses the socket's
# network reading (SslSocket.pause_network(True)) while the host's output is above HIGH_WATER;
# only OnlineDelivery._drained (while still online) or SocketLink.started (ATO) resumes it. When
# the host leaves online mode with +++ (SocketLink.escaped; also AT&D1 DTR drop and a hang-up)
# nothing resumes it although the inbox is below recv_buffer: the peer's later bytes and its FIN
# stay in the kernel, so the 'recv'/'closed' URCs of the buffer fall-back
# (OnlineDelivery.peer_closed) never come until the host happens to send ATO
def test_peer_close_after_escape_from_a_network_held_for_output_is_reported(open_modem, peer_factory,
                                                                            emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, manual_time=True)

    def advance(s):
        emulator.wait_received(port, host.written)
        emulator.advance(port, s)
    _open(host, 2)
    # Small pieces until the modem holds the network back: what waits then (the inbox, the
    # pieces still in the kernel) is far below recv_buffer, so nothing but that pause keeps
    # the modem from reading the peer's end.
    sent = bytearray()
    deadline = time.monotonic() + 30
    while not _paused(emulator, port):
        assert time.monotonic() < deadline, "the network was never held back"
        piece = os.urandom(4096)
        peer.send(piece)
        sent += piece
        time.sleep(0.003)
    data = bytes(sent)
    peer.shutdown_wr()                             # its FIN waits behind the pause
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    got = host.read_until(b"\r\nOK\r\n", timeout=30)[:-len(b"\r\nOK\r\n")]
    assert data.startswith(got)
    # The host is in command mode, has read everything and sends nothing: the peer's close
    # must be reported (a "recv" for what waits, then "closed"), as docs/behaviour.md says.
    assert host.seen(b'+QIURC: "closed",0', timeout=5) == b'+QIURC: "closed",0'
    rest = bytearray()
    while True:
        host.write(b"AT+QIRD=0,1500\r")
        head = host.read_until(re.compile(rb"\+QIRD: \d+\r\n"))
        n = int(re.search(rb"\+QIRD: (\d+)", head).group(1))
        rest += host.read_exactly(n) if n else b""
        host.read_until(b"\r\nOK\r\n")
        if not n:
            break
    assert got + bytes(rest) == data


def test_a_held_plus_goes_to_the_server_when_its_guard_time_passes(open_modem, peer_factory, emulator,
                                                                   strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, manual_time=True)
    # transparent mode sends what the host writes at once (AT+QICFG="transwaittm",0): this
    # test is about other things than the module's packet wait, and runs on manual time
    assert host.at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"

    def advance(s):
        emulator.wait_received(port, host.written)
        emulator.advance(port, s)
    _open(host, 2)
    advance(1.1)
    host.write(b"++")                               # may begin an escape: held back
    emulator.wait_received(port, host.written)
    time.sleep(0.1)
    assert bytes(peer.got) == b""
    advance(1.1)                                    # the third never came: data, no new byte needed
    wait_for(lambda: bytes(peer.got) == b"++", what="held '++' at the server")
    assert host.quiet_for(0.1) == b""


# == host input waiting behind a pending command ====================================================
def test_input_queued_behind_a_lingering_close_runs_when_the_close_ends(open_modem, peer_factory, emulator,
                                                                        strict_log):
    peer_factory()                                  # never closes: AT+QICLOSE lingers its 10 s
    host, port = ec2x_with_pdp(open_modem, manual_time=True)
    _open(host, 0)
    host.write(b"AT+QICLOSE=0,10\rAT+CGMM\rAT+QISTATE=1,0\r")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.1) == b""
    emulator.advance(port, 10.5)                    # the host writes nothing more
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nEC25\r\n\r\nOK\r\n"
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"      # no socket left on id 0


def test_input_held_in_the_pty_behind_a_pending_close_with_ifc_comes_in_afterwards(open_modem, peer_factory,
                                                                                   emulator, strict_log):
    """AT+IFC=2,2: past HIGH_WATER of input behind a pending answer the port stops reading (the
    rest waits in the pty); when the close ends, every queued AT is answered, once, in order,
    though the host writes nothing more."""
    peer_factory()
    host, port = ec2x_with_pdp(open_modem, manual_time=True)
    assert host.at("AT+IFC=2,2") == b"\r\nOK\r\n"
    _open(host, 0)
    count = 30_000                                  # 90 KB of "AT\r"
    writer = threading.Thread(target=host.write, args=(b"AT+QICLOSE=0,10\r" + b"AT\r" * count,), daemon=True)
    writer.start()
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("pending")), what="input held (pending)")
    emulator.advance(port, 10.5)
    got = host.read_exactly(len(b"\r\nOK\r\n") * (count + 1), timeout=30)
    writer.join(10)
    assert got == b"\r\nOK\r\n" * (count + 1)
    assert host.quiet_for(0.2) == b""
    assert not emulator.run(lambda: port.modem.input_held("pending"))


def test_tls_close_with_queued_input_answers_both(open_modem, echo, emulator, strict_log):
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLOPEN=1,1,4,"echo.example",443,0') == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 4,") + host.read_until(b"\r\n") == b"+QSSLOPEN: 4,0\r\n"
    host.write(b"AT+QSSLCLOSE=4,10\rAT+CGMM\r")
    assert host.read_until(b"\r\nOK\r\n", timeout=15) == b"\r\nOK\r\n"
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nEC25\r\n\r\nOK\r\n"


# == transparent mode: host input held back by a full connection ===================================
def test_host_bytes_held_in_the_pty_by_a_full_connection_all_reach_a_server_that_reads_late(
        open_modem, peer_factory, emulator, strict_log):
    peer = peer_factory(hold_reading=True, rcvbuf=16384)
    host, port = ec2x_with_pdp(open_modem)
    _open(host, 2)
    data = os.urandom(6_000_000)
    writer = threading.Thread(target=host.write, args=(data,), daemon=True)
    writer.start()
    wait_for(lambda: emulator.run(lambda: port.modem.input_held("online")), timeout=30,
             what="host input held by the connection's send backlog")
    peer.release_reading()
    wait_for(lambda: len(peer.got) >= len(data), timeout=60, what="every host byte at the server")
    writer.join(10)
    assert bytes(peer.got) == data
    assert not emulator.run(lambda: port.modem.input_held("online"))


# == shaped links (control API "net") ==============================================================
# Was a bug, fixed: BUG 2: emulator/io/network.py ShapedLink.eof_received lets asyncio close the
# real transport the moment the peer's FIN arrives (it returns None), and
# ShapedLink.connection_lost clears the outgoing _Pipe: bytes that SEND OK accepted and that still
# wait out the link's latency are dropped (ShapedTransport._out's go() skips a closing transport),
# though the peer only half-closed and reads on; unshaped, SslSocket's eof callback sends them
# before the close
def test_bytes_accepted_before_a_half_close_still_reach_the_peer_over_a_slow_link(open_modem, peer_factory,
                                                                                  emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open(host, 0)
    assert emulator.control("net", latency_ms=800) == {"ok": True}
    host.write(b"AT+QISEND=0,7\r")
    assert host.read_until(b"> ").endswith(b"> ")
    host.write(b"payload")
    assert host.read_until(re.compile(rb"SEND (OK|FAIL)\r\n")).endswith(b"SEND OK\r\n")
    peer.shutdown_wr()                              # half-close: the peer still reads
    assert host.seen(b'+QIURC: "closed",0', timeout=10)
    assert peer.eof.wait(10)
    assert bytes(peer.got) == b"payload"


class _Inner:
    """Stands in for asyncio's transport: a write buffer the kernel takes when told."""

    def __init__(self) -> None:
        self.buffered = 0
        self.sent = bytearray()

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        self.high, self.low = high, low

    def write(self, data: bytes) -> None:
        self.sent += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered


def _shaped():
    timers = Timers(None)                            # manual time
    pipe = _Pipe(lambda: NetConditions(latency_ms=100), timers, None, False)
    resumed = []
    inner = _Inner()
    shaped = ShapedTransport(inner, pipe, lambda: resumed.append(True))
    shaped.set_write_buffer_limits(high=1000, low=250)
    return timers, inner, shaped, resumed


def test_shaped_writer_hears_resume_when_its_queue_alone_went_above_high():
    timers, inner, shaped, resumed = _shaped()
    shaped.write(b"x" * 1500)
    assert shaped.get_write_buffer_size() > 1000           # the writer holds back now
    timers.advance(0.2)
    assert bytes(inner.sent) == b"x" * 1500
    assert shaped.get_write_buffer_size() <= 250 and resumed == [True]


# Was a bug, fixed: BUG 3: emulator/io/network.py ShapedTransport._out sets _over only when the
# pipe's own queue exceeds high, but get_write_buffer_size() (what SocketLink.send compares with
# its limit before pausing the host's input) is the pipe plus the real transport's buffer; with
# both below high and their sum above it, the writer holds back and neither go() (_over False) nor
# asyncio (never paused) ever calls resume_writing: transparent-mode host input stays paused in
# the pty for good
def test_shaped_writer_hears_resume_when_pipe_and_transport_together_went_above_high():
    timers, inner, shaped, resumed = _shaped()
    inner.buffered = 600                                    # the kernel is slow for a moment
    shaped.write(b"x" * 600)
    assert shaped.get_write_buffer_size() > 1000           # SocketLink pauses the host's input
    inner.buffered = 0                                      # the kernel took it all
    timers.advance(0.2)
    assert shaped.get_write_buffer_size() <= 250
    assert resumed == [True]


def test_shaped_writer_hears_resume_when_asyncio_drains_what_the_queue_left_above_low():
    """The link's queue has emptied into asyncio's buffer, which is still above `low`: the
    writer hears resume_writing when asyncio's buffer drains (asyncio's own limits are
    `low`, so it reports that), not before, and not never."""
    timers, inner, shaped, resumed = _shaped()
    assert (inner.high, inner.low) == (250, 250)
    inner.buffered = 600
    shaped.write(b"x" * 600)                                # 1200 > high: the writer holds back
    timers.advance(0.2)                                     # the queue went to asyncio ...
    assert shaped.get_write_buffer_size() == 600 and resumed == []   # ... which holds 600 still
    inner.buffered = 250                                    # asyncio: down to low
    shaped.inner_drained()
    assert resumed == [True]
    shaped.inner_drained()                                  # (not over any more: passed on as
    assert resumed == [True, True]                          # asyncio's own resume always was)
