"""Tests from a fourth manual mutation-testing pass, the second over emulator/sockets/delivery.py
(the first: tests/unit/test_mutation_survivors_3.py, buffer mode, push flow control, packets and
reboot).  This one mutated the transparent (online) side: OnlineDelivery's flush and drain of
the peer's bytes to the host, the fall-back to buffer mode, the open's bookkeeping
(wait_open / opened / take_connecting / release / forget), and SocketLink's resume (ATO),
started / ended / escaped, send back-pressure and flush_unsent.  Each test pins a behaviour a
small change to that module (the mutant named in its docstring) left the transparent-mode,
flow-control and socket e2e tests passing on; the expected values come from docs/behaviour.md
("Transparent access mode", "SSL sockets (EC2x)") and the EC2x SSL note, not from the
emulator's current output.  Sans-IO, with test_mutation_survivors_3's Bench: a Modem on a
StubPort whose output backlog the test sets, sockets put in the CONNECTED state by hand, the
network's bytes handed in as it would (manual clock); a test that needs a running loop (an
open's future, a close's task) runs its Bench inside asyncio.run."""
from __future__ import annotations

import asyncio
import weakref

import pytest

from emulator.io.transport import HIGH_WATER
from emulator.sockets.ssl_socket import SslSocket
from tests.unit.test_mutation_survivors_3 import Bench, gone, online_socket


@pytest.fixture
def bench() -> Bench:
    return Bench()


def opening(bench: Bench, client_id: int) -> SslSocket:
    """An SSL socket whose open (transparent access mode) is under way: AT+QSSLOPEN=...,2 has
    made it, the handshake has not ended."""
    svc = bench.svc
    sock = SslSocket(svc, client_id, pdp_id=1, ctx_id=1, host="h.test", port=443,
                     delivery=svc.deliveries["online"],
                     recv_limit=bench.modem.profile["ssl.recv_buffer"], timers=bench.modem.timers)
    sock._go("open")
    svc.sockets[client_id] = sock
    return sock


async def transparent_open(bench: Bench, client_id: int) -> SslSocket:
    """AT+QIACT=1, then AT+QSSLOPEN=1,1,<id>,...,2 answered by nothing yet: the port waits for the handshake
    (SslSocket.open is made a no-op by the `no_dial` fixture); the test ends the handshake
    with handshake_done(), as the network would."""
    assert bench.run(b"AT+QIACT=1\r") == b"\r\nOK\r\n"
    assert bench.run(b'AT+QSSLOPEN=1,1,%d,"h.test",443,2\r' % client_id) == b""
    await turns()
    return bench.svc.sockets[client_id]


def handshake_done(bench: Bench, sock: SslSocket) -> None:
    sock._go("open")
    sock._go("established")
    sock.sent, sock.unsent = [], 0
    sock.send = lambda data, to=None: sock.sent.append(bytes(data))
    sock.send_backlog = lambda: sock.unsent
    bench.svc.on_opened(sock, None, "")


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def first_output(bench, n: int = 10) -> bytes:
    """What the port writes in the first of the next n loop turns that writes anything."""
    for _ in range(n):
        await asyncio.sleep(0)
        out = bench.run()
        if out:
            return out
    return b""


@pytest.fixture
def no_dial(monkeypatch):
    monkeypatch.setattr(SslSocket, "open", lambda self, *args, **kwargs: None)


# -- the open's bookkeeping ------------------------------------------------------------------------
# docs/behaviour.md, "SSL sockets (EC2x)": a close (AT+QSSLCLOSE, AT+QICLOSE, AT&D2) takes effect
# when the command runs ... from then on nothing about that socket reaches the host (its open's
# late answer ...); a transparent open whose CONNECT was not written because its host hung up:
# the connection stays for ATO -- so the next host may close it while the open still waits.
def test_closing_a_socket_whose_transparent_open_waits_ends_the_open_command():
    """Mutant: OnlineDelivery.release not answering the open's future (the AT+QSSLOPEN=...,2
    pending command then waits for ever: its socket is gone, so no handshake result will come
    -- SslService.on_opened ignores a socket it no longer holds).  The host that sent the open
    hung up (the command's answer is orphaned), the next one closes the socket: the open's
    pending answer must end, as a failure (no CONNECT for a closed socket), never stay."""
    async def main():
        bench = Bench()
        online = bench.svc.deliveries["online"]
        sock = opening(bench, 1)
        answer = online.wait_open(sock)
        await bench.svc.close(1, 0)
        assert answer.done() and answer.result() != 0
    asyncio.run(main())


def test_closing_a_transparent_socket_before_its_connect_went_out_lets_go_of_it():
    """Mutant: OnlineDelivery.release not discarding the socket from the opens whose CONNECT
    is on its way (`_connecting`): the set then keeps every such socket, with its buffers and
    TLS context, for the life of the modem (release's docstring: nothing is held for a socket
    that is gone).  The handshake ended (CONNECT a turn away), the socket is closed meanwhile:
    nothing may keep it."""
    async def main():
        bench = Bench()
        online = bench.svc.deliveries["online"]
        sock = bench.connected(1, "online")
        answer = online.wait_open(sock)
        online.opened(sock, 0)
        assert answer.result() == 0
        ref = weakref.ref(sock)
        await bench.svc.close(1, 0)
        del sock, answer
        assert gone(ref)
    asyncio.run(main())


def test_a_restart_ends_a_transparent_open_still_waiting_for_its_handshake():
    """Mutant: OnlineDelivery.forget not answering the opens still waiting (their pending
    AT+QSSLOPEN=...,2 then waits for ever: the restart dropped the socket, no handshake result
    will come).  docs/behaviour.md: a reboot while a transparent open waits for its handshake
    abandons it without an answer -- the port's own wait is abandoned by the restart; the open
    whose host had hung up before (its answer orphaned, the port already in command mode) is
    ended by the restart as well, as a failure: no CONNECT comes for a socket that is gone."""
    async def main():
        bench = Bench()
        online = bench.svc.deliveries["online"]
        answer = online.wait_open(opening(bench, 1))
        bench.modem.reboot(0)
        assert bench.svc.sockets == {}
        assert answer.done() and answer.result() != 0
    asyncio.run(main())


def test_a_restart_lets_go_of_a_transparent_socket_whose_connect_was_on_its_way():
    """Mutant: OnlineDelivery.forget not clearing the opens whose CONNECT is on its way
    (`_connecting`): every socket whose handshake ended in the turn of a restart stayed there,
    with its buffers and TLS context, for the life of the modem.  docs/behaviour.md: a reboot
    drops connections; nothing may keep the socket afterwards."""
    async def main():
        bench = Bench()
        online = bench.svc.deliveries["online"]
        sock = bench.connected(1, "online")
        answer = online.wait_open(sock)
        online.opened(sock, 0)                      # CONNECT is a turn away ...
        ref = weakref.ref(sock)
        bench.modem.reboot(0)                       # ... and never comes
        assert bench.svc.sockets == {}
        del sock, answer
        assert gone(ref)
    asyncio.run(main())



# -- AT+QISWTMD (Delivery.adopt) --------------------------------------------------------------------
# docs/behaviour.md, "Transparent access mode": AT+QISWTMD=<id>,<mode>: 0 buffer (a "recv" URC IF
# DATA WAIT), 1 direct push (waiting data pushed at once), OK.
def test_switching_to_buffer_mode_reports_recv_only_when_data_wait(bench):
    """Mutant: Delivery.adopt calling data_arrived with nothing in the socket (a "recv" URC
    for an empty receive buffer: the host's AT+QSSLRECV then reads 0 bytes).  A push socket
    with nothing waiting switched to buffer mode: OK and nothing else; with data waiting: the
    "recv" URC."""
    sock = bench.connected(1, "push")
    assert bench.run(b"AT+QISWTMD=1,0\r") == b"\r\nOK\r\n"
    assert sock.delivery is bench.svc.deliveries["buffer"]
    assert bench.run(b"AT+QISWTMD=1,1\r") == b"\r\nOK\r\n"
    bench.backlog = HIGH_WATER + 1                  # the push waits in the socket
    sock._received(b"waiting")
    assert bench.run() == b""
    bench.backlog = 0
    assert bench.run(b"AT+QISWTMD=1,0\r") == b'\r\nOK\r\n\r\n+QSSLURC: "recv",1\r\n'


# -- a peer that closes with the handshake's last flight -------------------------------------------
# docs/behaviour.md, "Transparent access mode": a server that sends and closes with the
# handshake's last flight, before the open's CONNECT is written: CONNECT, its bytes, then NO
# CARRIER (the close belongs to the online link).  The host closing the device while online:
# the connection stays open (as after "+++"); a peer close while the port is in command mode
# after "+++": the "closed" URC.
def test_a_close_with_the_last_flight_is_reported_after_a_hang_up_in_the_same_turn(bench, no_dial):
    """Mutant: SocketLink._ended_before_start without its second branch (the port left online
    mode -- the host hung up -- in the turn between CONNECT and the NO CARRIER that was due a
    turn later: the peer's close then reported nowhere).  CONNECT and the peer's bytes are out,
    the host closes the device before the NO CARRIER: its close left the connection as "+++"
    would, and the peer's close is then one in command mode: the next host gets the "closed"
    URC -- once (had NO CARRIER come in CONNECT's turn already, it would be the report)."""
    async def main():
        sock = await transparent_open(bench, 4)
        handshake_done(bench, sock)
        sock._received(b"hello")
        sock._peer_closed("peer closed TCP without close_notify (FIN)")
        assert bench.run() == b""                       # CONNECT is turns away
        out = await first_output(bench)                 # the turn CONNECT is written in
        assert out in (b"\r\nCONNECT\r\nhello", b"\r\nCONNECT\r\nhello\r\nNO CARRIER\r\n")
        bench.modem.host_hangup()                       # (NO CARRIER is a turn away)
        await turns()
        closed = b'\r\n+QSSLURC: "closed",4\r\n'
        assert bench.run() == (b"" if out.endswith(b"NO CARRIER\r\n") else closed)
        assert bench.run(b"AT\r") == b"\r\nOK\r\n"            # the next host: command mode
    asyncio.run(main())


def test_a_close_with_the_last_flight_gives_connect_the_bytes_then_no_carrier(bench, no_dial):
    """The same without the hang-up (the unmutated path the test above branches from): CONNECT,
    the peer's bytes, NO CARRIER, command mode; ATO has nothing to return to."""
    async def main():
        sock = await transparent_open(bench, 4)
        handshake_done(bench, sock)
        sock._received(b"hello")
        sock._peer_closed("peer closed TCP without close_notify (FIN)")
        await turns()
        assert bench.run() == b"\r\nCONNECT\r\nhello\r\nNO CARRIER\r\n"
        assert bench.run(b"ATO\r") == b"\r\nNO CARRIER\r\n"
    asyncio.run(main())


def test_host_bytes_after_the_peers_close_are_not_sent_into_it(bench, no_dial):
    """Mutant: SocketLink.send without its state check (the host's bytes handed to a socket
    whose peer has closed).  In the turn between CONNECT and the NO CARRIER of a close that
    came with the handshake's last flight, the port is online for a connection that has ended:
    what the host writes then goes nowhere (the connection is over: NO CARRIER follows; had it
    come in CONNECT's turn already, the bytes would be command input)."""
    async def main():
        sock = await transparent_open(bench, 4)
        handshake_done(bench, sock)
        sock._peer_closed("peer closed TCP without close_notify (FIN)")
        out = await first_output(bench)             # the turn CONNECT is written in
        assert out in (b"\r\nCONNECT\r\n", b"\r\nCONNECT\r\n\r\nNO CARRIER\r\n")
        bench.modem.feed(b"too late")
        await turns()
        assert bench.run() == (b"" if out.endswith(b"NO CARRIER\r\n") else b"\r\nNO CARRIER\r\n")
        assert sock.sent == []
    asyncio.run(main())


# -- send back-pressure: the host held back by a full connection ------------------------------------
# docs/behaviour.md, "Transparent access mode", flow control: when the TLS connection has MORE
# than ssl.online_buffer (256 KiB) the kernel has not taken, the emulator stops reading the pty
# (the pty's own buffer then blocks the host's writes, as RTS/CTS would) ... Nothing is dropped.
def test_the_host_is_held_back_only_past_the_online_buffer(bench):
    """Mutant: SocketLink._send's `send_backlog() > limit` -> `>=`.  With exactly
    ssl.online_buffer bytes unsent the port reads on; one byte more and it stops."""
    limit = bench.svc.online_buffer
    sock = online_socket(bench)
    sock.unsent = limit
    bench.modem.feed(b"a")
    assert sock.sent == [b"a"] and not bench.modem.input_held("online")
    sock.unsent = limit + 1
    bench.modem.feed(b"b")
    assert sock.sent == [b"a", b"b"] and bench.modem.input_held("online")
    assert bench.port.reading[-1] is False


def test_the_host_is_held_back_again_each_time_the_connection_fills(bench):
    """Mutant: SocketLink._writable not clearing its own flag (the link believes the port still
    paused after it resumed it, so the next time the connection fills the host is no longer
    held back: its bytes pile up in memory without bound).  Full, the kernel takes the backlog
    (on_writable: the port reads again), full again: held back again."""
    limit = bench.svc.online_buffer
    sock = online_socket(bench)
    for round in range(3):
        sock.unsent = limit + 1
        bench.modem.feed(b"%d" % round)
        assert bench.modem.input_held("online"), round
        sock.unsent = 0
        sock.on_writable()                          # the transport's resume_writing
        assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
    assert sock.sent == [b"0", b"1", b"2"]


def test_an_escape_that_sends_a_waiting_packet_into_a_full_connection_reads_commands(bench):
    """Mutant: SocketLink.escaped resuming the port's input before sending what waited for a
    packet (flush_unsent after _writable): that send finds the connection full and pauses the
    port again -- now in command mode, where nothing online resumes it: the host's commands are
    not read until the server happens to take the backlog.  AT+QIOPEN socket, transwaittm 2 s:
    "tail" waits for its packet, the connection is full, "+++" -> OK ("tail" goes then, as
    docs/behaviour.md says) and the next command is answered."""
    limit = bench.svc.online_buffer
    assert bench.run(b"ATS12=25\r") == b"\r\nOK\r\n"         # guard time 0.5 s
    line = b'AT+QICFG="transpktsize",1024;+QICFG="transwaittm",20\r'
    assert bench.run(line) == b"\r\nOK\r\n"
    sock = online_socket(bench, 3, tcp=True)
    bench.modem.feed(b"tail")
    sock.unsent = limit + 1                         # the server stopped reading
    bench.modem.timers.advance(0.6)
    bench.modem.feed(b"+++")
    bench.modem.timers.advance(0.6)                 # 1.2 s: "tail" still waits for its packet
    assert bench.run() == b"\r\nOK\r\n"
    assert sock.sent == [b"tail"]
    assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
    assert bench.run(b"AT\r") == b"\r\nOK\r\n"


def test_an_atd2_hang_up_of_a_full_connection_reads_the_port_again(bench):
    """Mutant: SocketLink.hang_up without release_input (AT&D2 closes the full connection, and
    the port stays paused for it: a closed socket never reports writable, so the host's
    commands are never read again).  docs/behaviour.md: AT&D2 -> the connection is closed
    (socket freed) and NO CARRIER; the host is in command mode."""
    async def main():
        limit = bench.svc.online_buffer
        assert bench.run(b"AT&D2\r") == b"\r\nOK\r\n"
        sock = online_socket(bench)
        sock.unsent = limit + 1
        bench.modem.feed(b"x")
        assert bench.modem.input_held("online")
        bench.modem.set_dtr(0)
        assert bench.run() == b"\r\nNO CARRIER\r\n"
        await turns()
        assert 1 not in bench.svc.sockets
        assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
        bench.modem.set_dtr(1)
        assert bench.run(b"AT\r") == b"\r\nOK\r\n"
        assert sock.sent == [b"x"]
    asyncio.run(main())


def test_a_peer_close_while_the_full_connection_holds_the_host_back_reads_the_port_again(bench):
    """Mutant: SocketLink.ended without release_input (the peer closes while the port is paused
    for the full connection: NO CARRIER, and the port stays paused -- a closed connection never
    reports writable -- so the host's next commands, AT+QSSLCLOSE first, are never read).
    docs/behaviour.md: the peer closes while online: its bytes, NO CARRIER, back to command
    mode."""
    limit = bench.svc.online_buffer
    sock = online_socket(bench)
    sock.unsent = limit + 1
    bench.modem.feed(b"x")
    assert bench.modem.input_held("online")
    sock._received(b"last words")
    sock._peer_closed("peer closed TCP without close_notify (FIN)")
    assert bench.run() == b"last words\r\nNO CARRIER\r\n"
    assert not bench.modem.input_held("online") and bench.port.reading[-1] is True
    assert bench.run(b"AT+QSSLSTATE=1\r").endswith(b"\r\nOK\r\n")


@pytest.mark.parametrize("waiting", [b"", b"bye"])
def test_a_peer_close_before_the_connect_of_a_host_that_hung_up_is_reported(bench, no_dial, waiting):
    """Mutant: SocketLink.escaped not reporting the close it kept for the CONNECT (the open's
    handshake ended, the peer closed before the CONNECT was written, and the host that sent
    the open hung up meanwhile: the CONNECT never comes, and the close is reported nowhere).
    docs/behaviour.md: a transparent open whose CONNECT was not written because its host hung
    up stays for ATO like one left by a hang-up while online; a peer close then gives the
    "closed" URC (or the buffer-mode fall-back when data wait: "recv", then "closed")."""
    async def main():
        sock = await transparent_open(bench, 4)
        bench.modem.host_hangup()                   # the open's answer is orphaned
        handshake_done(bench, sock)
        if waiting:
            sock._received(waiting)
        sock._peer_closed("peer closed TCP without close_notify (FIN)")
        await turns()
        recv = b'\r\n+QSSLURC: "recv",4\r\n' if waiting else b""
        assert bench.run() == recv + b'\r\n+QSSLURC: "closed",4\r\n'
        if waiting:
            out = bench.run(b"AT+QSSLRECV=4,100\r")
            assert out.startswith(b"\r\n+QSSLRECV: 3\r\nbye\r\n") and out.endswith(b"\r\nOK\r\n")
    asyncio.run(main())


# -- mutants of this round left without a test: equivalent in every reachable state ---------------
# OnlineDelivery.flush without its final pause_network(False): every loop pass reads the inbox,
#   and SslSocket.read resumes the network under the same condition; the network is paused only
#   while the inbox holds bytes, and only read() empties it.
# OnlineDelivery._drained not dropping the links of sockets no longer held; OnlineDelivery not
#   listening to "hangup"; OnlineDelivery.opened adding a failed open to _connecting;
#   peer_closed's buffer fall-back without release(): every way a socket leaves the service
#   (host close, failed open, reboot) runs release()/forget(), and a hang-up leaves online mode
#   (escaped) before the event, so _drained has nothing to flush.
# OnlineDelivery.link() making a new SocketLink per online session: a link carries nothing from
#   one session to the next (escaped()/ended() empty its packet buffer and input pause).
# SocketLink.resume without svc.holds(): a host close takes the socket out of CONNECTED (its
#   close task) before the host's next command can run, and AT&D2 drops ATO's target.
# SocketLink.escaped resuming the network of a socket no longer held: a closed socket's
#   transport is closing, and pause_network does nothing then.
# SocketLink.started calling _ended_before_start at once instead of a turn later: the same
#   CONNECT, bytes, NO CARRIER (the tests above accept both where the turn matters).
# Release of the port's input: OnlineDelivery.release's release_input() (also with its
#   `online_link is not link` inverted) and SocketLink.hang_up's release_input() cover each
#   other (AT&D2 runs both); test_an_atd2_hang_up_of_a_full_connection_reads_the_port_again
#   kills the pair.  Likewise flush_unsent's CONNECTED/held check and release_input's
#   power_lost() both keep a dropped packet from leaving after AT&D2 or a peer close.
