"""Adversarial hunt for ordering and callback-reentrancy bugs on the event loop (the class of
ae39740: a resume callback doing its work inline, ahead of I/O callbacks already due).

What a host can observe is checked as a host sees it: lines end with CR LF, commands are
sometimes written one byte at a time, answers are read in odd-sized pieces, and nobody waits
politely for a URC before the next command.  Timeouts are only upper bounds for "never came".

Reviewed, with a test below where the order is subtle:
- TCP LISTENER: the "incoming" URC comes from the accepted transport's connection_made, and
  asyncio calls data_received only after it, so "incoming" < "recv" < "closed" for a client that
  connects, sends and closes at once (the "held" list of TcpListener.serve cannot fill: the
  task's wake-up after start_serving's sleep(0) is queued before the first accept callback).
  Passes.  But the accepted socket sits in svc.sockets in state OPENING for one loop turn (the
  protocol factory runs a turn before connection_made): the bearer's loss in that turn
  leaves a phantom "TCP INCOMING" on an id nobody was told of.  Was a bug, fixed.  The
  listener itself has such a turn too (LISTENING, its "+QIOPEN: <id>,0" not yet written): the
  bearer's loss then reports its "closed" before the answer to its open.  Was a bug, fixed.
- TLS: data and close_notify (or FIN) with the server's first flight after the handshake:
  "+QSSLOPEN: 0,0", "recv", "closed" / push then "closed" / CONNECT, data, NO CARRIER.  Passes.
- Direct push never writes inside an answer: push runs on "port_idle", after the whole answer
  and the URCs queued meanwhile, also between pipelined commands.  Passes.
- A peer close during a "> " prompt: the prompt's result first, then "recv"/"closed".  Passes.
- AT+QISWTMD to transparent with data waiting, then data + FIN: CONNECT, old bytes, new bytes,
  NO CARRIER.  Passes.
- Control "drop" on a shaped link (control "net"): the drop is reported at once, but what the
  server sent before it is still on its way through the link's incoming pipe (ShapedTransport.abort
  clears the outgoing pipe only) and is fed to a session that was never closed: a direct-push
  "recv" URC after "closed".  Was a bug, fixed.
"""
from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest

from emulator.sockets.ssl_socket import OPENING
from emulator.sockets.tcpip import LISTENING, tcpip_service
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import (TCP_HOST, TCP_PORT, DrivenPeer, ec2x_with_pdp, free_port,
                                      wait_for)

ODD = (1, 7, 3, 13, 2, 29, 5)          # read sizes of a host reading in odd pieces


def _odd_read_until(host, pattern: bytes | re.Pattern, timeout: float = 10) -> bytes:
    """Like Host.read_until, but reads the port a few odd-sized bytes at a time."""
    regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
    deadline = time.monotonic() + timeout
    i = 0
    while True:
        m = regex.search(host.pending)
        if m:
            out = bytes(host.pending[:m.end()])
            del host.pending[:m.end()]
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {regex.pattern!r}; got {bytes(host.pending)!r}")
        chunk = host.ser.read(ODD[i % len(ODD)])
        i += 1
        host.pending += chunk
        host.transcript += chunk


def _bytewise(host, line: str) -> None:
    """A driver that flush()es every byte: the line, CR LF, one write(2) per byte."""
    for b in (line + "\r\n").encode():
        host.write(bytes([b]))


def _open_tcp(host, connect_id: int, mode: int, addr: str = TCP_HOST, port: int = TCP_PORT) -> None:
    _bytewise(host, f'AT+QIOPEN=1,{connect_id},"TCP","{addr}",{port},0,{mode}')
    assert _odd_read_until(host, b"\r\nOK\r\n") == b"\r\nOK\r\n"
    want = b"\r\n+QIOPEN: %d,0\r\n" % connect_id
    assert _odd_read_until(host, want) == want


# == TCP LISTENER: "incoming" before "recv" before "closed" =========================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_listener_client_that_connects_sends_and_closes_at_once_is_incoming_recv_closed(
        open_modem, emulator, strict_log, mode):
    """The suspected "recv" before "incoming": a client that connects, writes and half-closes
    in one go, many times over; the host sees each connection's URCs in order and whole."""
    host, _ = ec2x_with_pdp(open_modem)
    lport = free_port()
    _bytewise(host, f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},{mode}')
    assert _odd_read_until(host, b"\r\n+QIOPEN: 0,0\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n"
    for i in range(8):
        payload = b"hello-%d" % i
        c = socket.create_connection(("127.0.0.1", lport))
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = _odd_read_until(host, b'+QIURC: "closed",1\r\n')
        cport = c.getsockname()[1]
        recv = (b'\r\n+QIURC: "recv",1\r\n' if mode == 0 else
                b'\r\n+QIURC: "recv",1,%d\r\n%s\r\n' % (len(payload), payload))
        assert got == (b'\r\n+QIURC: "incoming",1,0,"127.0.0.1",%d\r\n' % cport + recv
                       + b'\r\n+QIURC: "closed",1\r\n'), got
        if mode == 0:
            assert host.at("AT+QIRD=1,1500") == b"\r\n+QIRD: %d\r\n%s\r\n\r\nOK\r\n" % (len(payload), payload)
        assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"
        c.close()
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# == TCP LISTENER: the bearer lost in the accepted connection's first loop turn ======================
def _on_the_loop_when(emulator, predicate, action, timeout: float = 5.0) -> threading.Event:
    """Look at predicate() once per loop iteration (a callback that requeues itself) and run
    action() in the first turn it holds: a network event landing in that very turn."""
    loop = emulator.loop
    fired = threading.Event()

    def start() -> None:
        deadline = loop.time() + timeout

        def tick() -> None:
            if predicate():
                action()
                fired.set()
            elif loop.time() < deadline:
                loop.call_soon(tick)
        tick()
    loop.call_soon_threadsafe(start)
    return fired


# Was a bug, fixed: a TCP LISTENER's accepted connection is put in svc.sockets in state OPENING by
# the protocol factory (TcpipService.incoming), one loop turn before connection_made announces it.
# The bearer's loss in that turn (pdp_deact, AT+QIDEACT, deregistration) runs
# SslSocket.bearer_lost -> _fail_open, which does not call owner.on_opened because accept() set
# _answered=True, so the socket is never removed: a phantom 'TCP INCOMING' (state 0) holds the id
# (AT+QISTATE lists it, AT+QIOPEN on it is 563) although the host never heard of it
def test_bearer_lost_between_accept_and_connection_made_leaves_no_phantom_socket(
        open_modem, emulator):
    host, port = ec2x_with_pdp(open_modem)
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{lport},0') == b"\r\nOK\r\n"
    assert host.read_until(b"\r\n+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    svc = emulator.run(lambda: tcpip_service(port.modem))

    def accepted_not_announced() -> bool:
        return any(s.state is OPENING and getattr(s, "service_type", "") == "TCP INCOMING"
                   for s in svc.sockets.values())
    fired = _on_the_loop_when(emulator, accepted_not_announced,
                              lambda: emulator.emulator.control("pdp_deact", 0, cid=1))
    client = socket.create_connection(("127.0.0.1", lport))
    try:
        assert fired.wait(10), "the bearer's loss did not land between accept and connection_made"
        want = b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",0\r\n'
        assert host.read_until(want) == want                 # the listener's end, nothing about id 1
        assert host.quiet_for(0.3) == b""
        client.settimeout(10)
        try:
            assert client.recv(1) == b""                     # the connection went with the bearer
        except ConnectionResetError:
            pass
        state = host.at("AT+QISTATE?")
        assert b"TCP INCOMING" not in state, f"a phantom socket the host never heard of: {state!r}"
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
        assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,%d,0' % free_port()) == b"\r\nOK\r\n"
        assert host.read_until(b"+QIOPEN: 1,") + host.read_until(b"\r\n") == b"\r\n+QIOPEN: 1,0\r\n"
    finally:
        client.close()


# Was a bug, fixed: TcpipService.listen's start() sets the listener LISTENING in
# TcpListener.serve() and announces '+QIOPEN: <id>,0' only after start_serving()'s sleep(0), a
# loop turn later, without looking again at listener.lost; TcpListener.bearer_lost in that turn
# writes '+QIURC: "closed",<id>' at once (state LISTENING), so the host hears of the listener's
# end before the answer to its open: '"closed",0' then '+QIOPEN: 0,0'
def test_bearer_lost_while_a_listener_is_announced_never_reports_closed_before_the_open(
        open_modem, emulator):
    host, port = ec2x_with_pdp(open_modem)
    svc = emulator.run(lambda: tcpip_service(port.modem))

    def serving_not_announced() -> bool:
        listener = svc.listeners.get(0)
        return listener is not None and listener.state == LISTENING and listener.held is not None
    fired = _on_the_loop_when(emulator, serving_not_announced,
                              lambda: emulator.emulator.control("pdp_deact", 0, cid=1))
    _bytewise(host, f'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,{free_port()},0')
    assert fired.wait(10), "the bearer's loss did not land between serving and announcing"
    got = _odd_read_until(host, re.compile(rb'\+QIOPEN: 0,\d+\r\n'))
    assert b'"closed",0' not in got, f"the listener's end before the answer to its open: {got!r}"
    if got.endswith(b"+QIOPEN: 0,0\r\n"):               # announced: its end follows
        want = b'\r\n+QIURC: "closed",0\r\n'
        assert _odd_read_until(host, want) == want
    else:                                                 # or the open failed as while binding
        assert got.endswith(b"+QIOPEN: 0,570\r\n"), got
    assert host.quiet_for(0.2) == b""


# == TLS: data and the end with the handshake's last flights ========================================
@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "fin"])
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_tls_server_that_speaks_and_closes_at_once_is_answered_in_order(
        open_modem, emulator, pki, strict_log, mode, close_notify):
    def handler(conn):
        conn.sendall(b"greeting-and-bye")
        conn.close(close_notify=close_notify)
    host, _ = ec2x_with_pdp(open_modem)
    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", server.address[1])
        for _ in range(2):
            _bytewise(host, f'AT+QSSLOPEN=1,1,0,"tls.example",443,{mode}')
            if mode == 2:
                got = _odd_read_until(host, b"NO CARRIER\r\n")
                assert got == b"\r\nCONNECT\r\ngreeting-and-bye\r\nNO CARRIER\r\n", got
            else:
                got = _odd_read_until(host, b'+QSSLURC: "closed",0\r\n')
                recv = (b'\r\n+QSSLURC: "recv",0\r\n' if mode == 0
                        else b'\r\n+QSSLURC: "recv",0,16\r\ngreeting-and-bye\r\n')
                assert got == (b"\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n" + recv
                               + b'\r\n+QSSLURC: "closed",0\r\n'), got
            if mode == 0:                                     # still readable after "closed"
                assert host.at("AT+QSSLRECV=0,1500") == \
                    b"\r\n+QSSLRECV: 16\r\ngreeting-and-bye\r\n\r\nOK\r\n"
                assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
            assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
            assert host.quiet_for(0.1) == b""


# == push URCs never inside an answer, also between pipelined commands ===============================
def test_push_urcs_of_a_streaming_socket_never_split_pipelined_qird_answers(
        open_modem, emulator, strict_log):
    """Socket 1 (direct push) streams while the host pipelines thirty AT+QIRD on socket 0
    (buffer) in one write, without waiting: every answer must be "+QIRD: n" CR LF, n bytes,
    CR LF, CR LF OK CR LF in one piece; push URCs only between them; every byte once, in order."""
    reader_peer, push_peer = DrivenPeer(), DrivenPeer()
    try:
        emulator.router.add_map("buf.example", 7100, "127.0.0.1", reader_peer.port)
        emulator.router.add_map("push.example", 7101, "127.0.0.1", push_peer.port)
        host, port = ec2x_with_pdp(open_modem)
        _open_tcp(host, 0, 0, "buf.example", 7100)
        _open_tcp(host, 1, 1, "push.example", 7101)
        buffered = os.urandom(20_000)
        reader_peer.send(buffered)
        assert _odd_read_until(host, b'\r\n+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        wait_for(lambda: emulator.run(lambda: len(tcpip_service(port.modem).sockets[0].inbox)) == len(buffered),
                 what="all buffered")
        streamed = os.urandom(120_000)
        stop = threading.Event()

        def stream() -> None:
            for i in range(0, len(streamed), 1000):
                push_peer.send(streamed[i:i + 1000])
                if stop.is_set():
                    return
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        host.write(b"AT+QIRD=0,700\r\n" * 30)
        got_buffered, got_pushed = bytearray(), bytearray()
        answers = 0
        item = re.compile(rb'\r\n\+QIRD: (\d+)\r\n|\r\n\+QIURC: "recv",1,(\d+)\r\n')
        deadline = time.monotonic() + 60
        while answers < 30 or len(got_pushed) < len(streamed):
            assert time.monotonic() < deadline, (answers, len(got_pushed))
            head = _odd_read_until(host, item, timeout=30)
            m = item.search(head)
            assert m.start() == 0, head[:200]                 # nothing between two items
            if m.group(1) is not None:
                n = int(m.group(1))
                body = host.read_exactly(n + 8) if n else host.read_exactly(6)
                assert body[n:] == (b"\r\n\r\nOK\r\n" if n else b"\r\nOK\r\n"), body[-40:]   # in one piece
                got_buffered += body[:n]
                answers += 1
            else:
                got_pushed += host.read_exactly(int(m.group(2)))
                assert host.read_exactly(2) == b"\r\n"        # the push's end, in one piece
        t.join(10)
        assert bytes(got_buffered) == buffered[:len(got_buffered)] and len(got_buffered) == 20_000
        assert bytes(got_pushed) == streamed
        assert host.quiet_for(0.2) == b""
    finally:
        reader_peer.close()
        push_peer.close()


# == a peer's last bytes and FIN while the host is inside a "> " prompt ================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_peer_close_during_a_send_prompt_comes_after_the_prompts_result(
        open_modem, peer_factory, emulator, strict_log, mode):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open_tcp(host, 0, mode)
    _bytewise(host, "AT+QISEND=0,5")
    assert _odd_read_until(host, b"> ") == b"\r\n> "
    peer.send(b"bye")
    peer.shutdown_wr()
    wait_for(lambda: emulator.run(lambda: int(tcpip_service(port.modem).sockets[0].state)) == 4,
             what="the peer's close seen by the modem")
    assert host.quiet_for(0.2) == b""                          # nothing inside the prompt
    host.write(b"hello")
    got = _odd_read_until(host, b'+QIURC: "closed",0\r\n')
    recv = b'\r\n+QIURC: "recv",0\r\n' if mode == 0 else b'\r\n+QIURC: "recv",0,3\r\nbye\r\n'
    assert got == b"\r\nERROR\r\n" + recv + b'\r\n+QIURC: "closed",0\r\n', got
    if mode == 0:
        assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 3\r\nbye\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# == AT+QISWTMD to transparent with data waiting, then data and FIN ====================================
def test_switch_to_transparent_with_bytes_waiting_then_last_bytes_and_fin(
        open_modem, peer_factory, emulator, strict_log):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem)
    _open_tcp(host, 0, 0)
    early = os.urandom(3000)
    peer.send(early)
    assert _odd_read_until(host, b'\r\n+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    wait_for(lambda: emulator.run(lambda: len(tcpip_service(port.modem).sockets[0].inbox)) == len(early),
             what="the early bytes waiting")
    _bytewise(host, "AT+QISWTMD=0,2")
    assert _odd_read_until(host, b"\r\nCONNECT\r\n") == b"\r\nCONNECT\r\n"
    late = os.urandom(5000)
    peer.send(late)
    peer.shutdown_wr()
    got = _odd_read_until(host, b"\r\nNO CARRIER\r\n")
    assert got == early + late + b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 8000,8000,0\r\n\r\nOK\r\n"     # all given, once
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# == control "drop" on a shaped link: nothing after "closed" ===========================================
# Was a bug, fixed: SslSocket.drop() reports the close at once (_peer_closed -> '"closed"' URC)
# and aborts a ShapedTransport, whose abort() clears only the outgoing pipe; the server's bytes
# already in the ShapedLink's incoming pipe are still delivered on the modem's timers to
# _from_network, whose session drop() never closed, into the inbox of a CLOSING socket (no
# on_data), and PushDelivery pushes them at the next port_idle: a '+QIURC: "recv",0,<n>' push
# after '+QIURC: "closed",0'
def test_drop_on_a_slow_link_pushes_nothing_after_closed(open_modem, peer_factory, emulator):
    peer = peer_factory()
    host, port = ec2x_with_pdp(open_modem, manual_time=True)
    _open_tcp(host, 0, 1)
    assert emulator.control("net", socket=0, latency_ms=200) == {"ok": True}
    sock = emulator.run(lambda: tcpip_service(port.modem).sockets[0])
    link = emulator.run(lambda: sock._transport._inner.get_protocol())     # the ShapedLink
    peer.send(b"in flight")
    wait_for(lambda: emulator.run(lambda: link.incoming.queued) == 9, what="the bytes on the link")
    mark = len(host.transcript)
    assert emulator.control("drop", socket=0, how="rst") == {"ok": True}
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.0)                                # the link delivers what was on it
    assert emulator.run(lambda: link.incoming.queued) == 0
    assert host.at("AT+CSQ").endswith(b"\r\nOK\r\n")           # the port goes idle once more
    host.seen(b'+QIURC: "closed",0\r\n', timeout=5)               # (however late it is written)
    host.quiet_for(0.3)
    seen = bytes(host.transcript[mark:])
    closed = seen.find(b'+QIURC: "closed",0\r\n')
    assert closed >= 0, seen
    assert b'+QIURC: "recv",0' not in seen[closed:], f"a push after the close: {seen!r}"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
