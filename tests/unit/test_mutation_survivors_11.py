"""Tests from a manual mutation-testing pass over what test_mutation_survivors_10's pass left
unrun in the pty transport (emulator/io/transport.py: host attach, hang-up and the 50 ms look
for a host; the read side -- READ_BATCH, SLICE, stepping aside; fairness between the ports of
one loop -- _LoopPorts' one-shot entries) and over the SSL socket's open path
(emulator/sockets/ssl_socket.py: open, _dial, _open_steps, _link_made, _start_early,
_established, _fail_open, _pump; emulator/io/network.py: dial_now, _dial_ipv4,
_connect_started, open_tcp, _connect_dialled).  Each test pins a behaviour a small change
(the mutant named in its docstring) left the existing tests passing on; the expected values
come from the module docstrings and comments of transport.py, ssl_socket.py and network.py
and from docs/behaviour.md, not from the emulator's current output.  Real ptys (PtyPort on
the test's own loop, the host side opened with os.open) and loopback sockets (a raw server
socket of the test's own, test_dial's SslSocket set-up); no timing is asserted except as a
generous guard for something that must happen at all.

Mutants applied: 28 in transport.py, 38 in the open path (66).  Killed by existing tests (42),
equivalent (11), killed by the new tests (13), not run (0).
Killed by existing tests:
- transport (16): no re-poll for a host; no read before the look for a host; no hand-on of
  what the attach read; no hang-up watch for a host that came while input was held; --uart:
  the attach's early bytes dropped; _hangup keeping reading off / keeping unread output
  queued for the next host / no _watch_for_host / clearing --uart --baud output; write()
  not looking for a newly opened host; a full SLICE asked of every read; `size > SLICE`;
  no step aside after a slice; no hand-on after _resume_reading; _hangup leaving the reader
  registered (uart e2e; a test below pins its USB side too); EIO never taken for a hang-up.
- open path (26): a DTLS open waiting a TCP round trip; dialling despite an injected fault;
  one latency instead of a round trip; the first flight out at the dial despite network
  conditions; _dialled not kept; _link_made not aborting a transport made after the close,
  losing the pending first flight, not pausing reading before the session; the dial's
  session failure swallowed; no pause_network(False); _established without
  _deliver_pending; _fail_open without its teardown; _pump not answering the handshake in
  its callback, not counting sent bytes (QGDCNT), answering on a dead socket; _open_steps
  starting the session in _link_made despite a round trip due, not aborting a transport
  made after the close; _pump not arming the DTLS retransmission timer, sending a UDP
  SERVICE's datagram to the connected address instead of _dest (DTLS / TCP/IP e2e);
  dial_now with a blocking socket (a hang: the unit tests' connect to a pending server never
  returns); a pending connect taken for a complete one (test_adversarial_dial's full accept
  queue); ECONNRESET at the dial taken for a failure (its server that resets right after
  accept); a connect error at the dial ignored; dial_now's error kind; open_tcp through
  loop.create_connection for names (the same reset fails the open); open_tcp without the
  injected fault of an undialled open.
Equivalent (no behaviour a host or a caller could see changes):
- _hangup's --uart branch without `_hand_on_later(self._held)`: unreachable with reading on
  -- every _hangup of a reading port comes from _read_some, which took `_held` first (the
  paused port's _hangup comes from _hangup_if_gone with reading off).
- _read_some's `more = len(piece) >= SHORT_READ` without min(.., want): a read that filled
  the slice's last few bytes ends the wake-up; the level-triggered reader takes the rest on
  the next loop turn, in order -- only the wake-up boundary moves.
- _LoopPorts.others_ready without `port.wants_input()`: a port holding its host back (or
  without one) may make a streaming neighbour step aside once for nothing (its one-shot
  entry then stays disarmed until it reads again): one loop turn, nothing reordered.
- _link_made without `_no_delay(transport)`, network._dial_ipv4 / open_tcp without their
  TCP_NODELAY: asyncio's _SelectorSocketTransport sets TCP_NODELAY on every TCP socket it
  makes (base_events._set_nodelay), and what leaves before -- the first flight through the
  Dialled -- is one write on an idle connection, which Nagle never holds back.
- _open_steps answering although `_dead` (the `self._dead or` of its last check): every path
  that makes a socket dead without answering it (leave, abort, bearer_lost:
  _stop_opening) cancels the open's task, whose wait then raises CancelledError.
- _fail_open taking "open_failed" in any state but INITIAL: the only other state it can meet
  is OPENING -- a close of a socket that never connected goes OPENING -> CLOSING -> INITIAL
  within one step of close(), and an answered open never comes here.
- _connect_dialled without `dialled.taken = True`: a Dialled closed by _teardown while
  asyncio's sock_connect has its fd belongs to a cancelled task, whose clean-up (the
  writer's removal, scheduled when its future is cancelled) runs before any later
  registration could reuse the fd number; the socket's later close() is a no-op.
- _connect_dialled without its `sock.fileno() < 0` check: a Dialled is closed only by
  _teardown, and every teardown that can come before the task took it cancels the task.
- _pump writing to a transport that is closing (`or self._transport.is_closing()` dropped):
  no path found where the session has output while the transport closes -- asyncio closes
  it after the peer's FIN (the socket is then CLOSING and close() pumps nothing) or after
  _close_after_fatal (Mbed TLS has nothing more to send after a fatal alert); the full SSL,
  TCP/IP and DTLS e2e files pass on it.
Killed by the new tests below (13): transport -- _attach_if_present not arming the port;
_hangup_if_gone hanging up without reading what the host wrote first; _hangup keeping
`_held` for the next host; write() without its look for a hang-up; READ_BATCH's bound
dropped and taken as `>`; no step aside inside a slice; _readable never re-arming; _join not
arming the first port (and _hangup leaving its reader registered, killed by the uart e2e
too); the open path -- _dial not recording the remote address; _open_steps not restoring
the dial's phase; dial_now dialling IPv6 with an IPv4 socket; _connect_dialled not taking
ECONNRESET for a connect that was made.  No bug in the original code was found."""
from __future__ import annotations

import asyncio
import os
import select
import socket
import struct
import time

import pytest

from emulator.commands.ssl_ml302 import _address as ml302_address
from emulator.io import transport
from emulator.io.network import Dialled, Router
from emulator.io.transport import READ_BATCH, SLICE, PtyPort
from emulator.sockets.plain_session import PlainSession, PlainSettings
from emulator.sockets.ssl_socket import INITIAL
from tests.unit.io.fairness_support import command_beside_a_stream
from tests.unit.io.test_transport_paused import until
from tests.unit.sockets.test_dial import Owner
from tests.unit.sockets.test_dial import listener as dial_listener
from tests.unit.sockets.test_dial import make as make_socket
from tests.unit.sockets.test_dial import settings as tls_settings
from tests.unit.test_mutation_survivors_10 import Hosted, run

OS_READ = os.read                        # (tests below wrap transport's os.read)


class ClosedOwner(Owner):
    """test_dial's Owner that also keeps the "closed" reports."""

    def __init__(self, session_factory) -> None:
        super().__init__(session_factory)
        self.closed: list[str] = []

    def on_closed(self, sock, reason) -> None:
        self.closed.append(reason)


# -- host presence: attach, hang-up, the look for a host ---------------------------------------
def test_a_port_whose_new_host_writes_is_reported_to_its_neighbours_at_once():
    """Mutant: _attach_if_present not arming the port in its loop's epoll (`_peers.arm`).
    _LoopPorts: a port reported once "is not looked at again until it is armed anew, after
    a wake-up of its own that emptied its pty (or when it attaches / reads again)".  A
    port whose host hung up is reported (its hang-up) to a neighbour's look and so
    disarmed; its next host's first command must be seen by the neighbour's next look
    (others_ready), or a streaming neighbour does not step aside for it."""
    async def main():
        loop = asyncio.get_running_loop()
        quiet_got, busy_got = bytearray(), bytearray()
        quiet = PtyPort(loop, quiet_got.extend)
        busy = PtyPort(loop, busy_got.extend)
        quiet_fd = os.open(quiet.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        busy_fd = os.open(busy.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            assert quiet.look_for_host() and busy.look_for_host()
            os.close(quiet_fd)                       # the quiet port's host hangs up
            quiet_fd = -1
            await until(lambda: not quiet.attached)
            busy._peers.others_ready(busy)           # a look of the busy port's: the hang-up
            assert busy._peers.others_ready(busy) is False
            quiet_fd = os.open(quiet.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            assert quiet.look_for_host()             # a new host ...
            os.write(quiet_fd, b"AT\r")              # ... writes its first command
            seen = select.poll()
            seen.register(quiet.master, select.POLLIN)
            assert seen.poll(2000)                   # (the bytes are on the master's side)
            assert busy._peers.others_ready(busy) is True
        finally:
            for fd in (quiet_fd, busy_fd):
                if fd >= 0:
                    os.close(fd)
            quiet.close()
            busy.close()
    run(main)


def test_what_a_host_wrote_before_its_hang_up_reaches_the_modem_when_a_write_sees_it_first():
    """Mutant: _hangup_if_gone hanging up at once on a reading port, without reading what
    the pty still holds (`self._readable(); return` dropped).  When write() is the first
    to see the host gone (a URC between the host's last command and the reader's turn),
    "What the host wrote before it closed is still in the pty ... and reached the module as
    on a USB port: read and handed on first" -- then the hang-up (once), and nothing of it
    for the next host."""
    async def main():
        h = Hosted()
        try:
            os.write(h.fd, b"AT+QPOWD=1\r")          # the host's last command ...
            seen = select.poll()
            seen.register(h.port.master, select.POLLIN)
            assert seen.poll(2000)                   # (on the modem's side of the pty)
            os.close(h.fd)                           # ... then it closes the port
            h.port.write(b"\r\n+QIURC: \"pdpdeact\",1\r\n")   # before the reader's turn
            await until(lambda: not h.port.attached)
            await asyncio.sleep(0.02)
            assert bytes(h.got) == b"AT+QPOWD=1\r"
            assert h.hangups == [1]
        finally:
            h.close()
    run(main)


def test_bytes_held_back_when_the_host_hangs_up_are_not_handed_to_the_next_host():
    """Mutant: _hangup keeping `_held` (bytes read before a step aside, not handed on
    because the modem then held input back) when the port sees hang-ups.  transport.py:
    the host "always meets a modem in command state, never stale bytes from a previous
    session".  (Since the hostile-servers round 9 fix they reach the modem BEFORE the
    hang-up, as a USB port's close waits for the host's output: the departed host's
    session has them, the next host's does not.)"""
    async def main():
        h = Hosted()
        try:
            h.port._held = b"AT+QSSLCLOSE=1\r"         # read, then stepped aside ...
            h.port._step_aside()
            h.port.set_reading(False)                # ... and the modem holds input back
            await asyncio.sleep(0.01)
            os.close(h.fd)                           # the host leaves
            await until(lambda: h.hangups == [1])
            assert bytes(h.got) == b"AT+QSSLCLOSE=1\r"   # handed on before the hang-up
            h.fd = h.open_host()                     # the next host
            os.write(h.fd, b"AT\r")
            await until(lambda: len(h.got) > 15)
            await asyncio.sleep(0.05)
            assert bytes(h.got) == b"AT+QSSLCLOSE=1\rAT\r"
        finally:
            h.close()
    run(main)


def test_output_written_after_the_host_closed_does_not_greet_the_next_host():
    """Mutant: write() without its look for a hang-up (`elif self._host_gone()` dropped).
    The host closed the port and a new one opened it before the reader's turn (a driver's
    quick reopen): the answer written in between was for the host that left.  write():
    "written now, the answer would wait in the pty and greet the next host.  Dropped, as
    unread output is at a hang-up"; transport.py: "never stale bytes from a previous
    session"."""
    async def main():
        h = Hosted()
        try:
            os.close(h.fd)                           # the host leaves ...
            h.port.write(b"\r\nOK\r\n")              # (its answer, after it left)
            # ... and the next host opens it (no look for a host yet)
            h.fd = os.open(h.port.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            h.port.write(b"\r\nRDY\r\n")
            await asyncio.sleep(0.1)
            assert h.read() == b"\r\nRDY\r\n"
        finally:
            h.close()
    run(main)


def test_a_host_that_opens_writes_and_closes_between_two_looks_is_not_answered():
    """Mutant: _hangup leaving the pty's reader registered (`remove_reader` dropped): after
    a hang-up the reader kept waking on the pty's EIO (a busy loop) and handed on whatever
    a host wrote before the next look for a host -- also a host that closed again before it
    was ever seen.  _drop_departed: "nobody is there to answer, and the next host must not
    have them run for it"; transport.py: a poll every 50 ms notices the next open."""
    async def main():
        h = Hosted()
        try:
            os.close(h.fd)
            await until(lambda: h.hangups == [1])
            fd = os.open(h.port.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            os.write(fd, b"AT+QPOWD=1\r")            # opens, writes, leaves: never seen
            os.close(fd)
            await asyncio.sleep(0.2)
            h.fd = h.open_host()                     # the next host
            os.write(h.fd, b"AT\r")
            await until(lambda: h.got)
            await asyncio.sleep(0.05)
            assert bytes(h.got) == b"AT\r"
            assert h.hangups == [1]
        finally:
            h.close()
    run(main)


# -- reading: the batch bound, stepping aside, the neighbours' looks ---------------------------
def test_one_wake_up_takes_at_most_read_batch_of_a_host_that_keeps_writing(monkeypatch):
    """Mutants: _read_some without its READ_BATCH bound (`return False` once `taken`
    reaches it), and the bound taken as `taken > READ_BATCH` (a fifth slice).  transport.py:
    READ_BATCH is the "host bytes taken in one wake-up at most (then the loop's other work:
    sockets, timers)".  The host keeps the pty full (a reader that fell behind: every read
    gets what it asks for); a callback that runs once a loop turn counts what each turn
    handed on."""
    served = 0
    total = 8 * READ_BATCH

    def read(fd, n):
        nonlocal served
        if fd == port_fd and served < total:
            n = min(n, total - served)
            served += n
            return b"x" * n
        return OS_READ(fd, n)

    async def main():
        nonlocal port_fd
        loop = asyncio.get_running_loop()
        h = Hosted()
        port_fd = h.port.master
        turns: list[int] = [0]

        def tick() -> None:
            if len(h.got) < total + 1:
                turns.append(len(h.got))
                loop.call_soon(tick)
        try:
            monkeypatch.setattr(transport.os, "read", read)
            os.write(h.fd, b"y")                     # (wakes the reader)
            loop.call_soon(tick)
            await until(lambda: len(h.got) == total + 1)   # (and the real byte)
        finally:
            monkeypatch.undo()
            h.close()
        turns.append(len(h.got))
        per_turn = [b - a for a, b in zip(turns, turns[1:])]
        assert max(per_turn) <= READ_BATCH, per_turn
    port_fd = -1
    run(main)


def test_a_neighbours_command_goes_before_the_rest_of_a_slice_being_read():
    """Mutant: _read_some without the step aside between two pty reads of an unfinished
    slice (`elif self._peers.others_ready(self)` dropped): the streaming port then read on to
    a whole slice (16 KiB) before the other port's host was served.  SLICE: "between two
    pty reads, a look whether another port's host is waiting"; _read_some: "Between two
    reads, when another port's host has written ..., this one steps aside for a loop turn
    (what it read waits in _held, first in line) so that one is served first"."""
    async def main():
        quiet, marks = await command_beside_a_stream(256 * 1024)   # (AT right after the first read)
        assert quiet == b"AT\r" and marks["written"] == 0
        assert marks["answered"] < SLICE, marks      # (not a whole slice first)
    run(main)


def test_a_port_is_looked_at_again_after_a_wake_up_that_emptied_its_pty():
    """Mutant: _readable never re-arming the port (`if drained: self._peers.arm(self)`
    dropped): a port reported once to a neighbour's look was never reported again, so a
    streaming neighbour stopped stepping aside for its host's later commands.  _LoopPorts:
    one-shot entries, "not looked at again until it is armed anew, after a wake-up of its
    own that emptied its pty"."""
    async def main():
        loop = asyncio.get_running_loop()
        quiet_got, busy_got = bytearray(), bytearray()
        quiet = PtyPort(loop, quiet_got.extend)
        busy = PtyPort(loop, busy_got.extend)
        quiet_fd = os.open(quiet.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        busy_fd = os.open(busy.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        seen = select.poll()
        seen.register(quiet.master, select.POLLIN)
        try:
            assert quiet.look_for_host() and busy.look_for_host()
            for command in (b"AT\r", b"ATI\r", b"AT+CSQ\r"):
                os.write(quiet_fd, command)
                assert seen.poll(2000)
                assert busy._peers.others_ready(busy) is True, command
                await until(lambda: quiet_got.endswith(command))    # its own wake-up
        finally:
            os.close(quiet_fd)
            os.close(busy_fd)
            quiet.close()
            busy.close()
    run(main)


def test_a_port_that_was_alone_on_its_loop_is_looked_at_once_a_second_port_comes():
    """Mutant: _join not arming the ports when the second one comes.  A port alone on its
    loop has its one-shot entry used up by its own looks (others_ready polls the set) and is
    never re-armed ("A port alone on its loop is looked at by nobody (_join arms it when a
    second comes)"): without that, the second port's looks would not see the first one's
    host writing until the first had a wake-up of its own."""
    async def main():
        loop = asyncio.get_running_loop()
        first_got, second_got = bytearray(), bytearray()
        first = PtyPort(loop, first_got.extend)
        first_fd = os.open(first.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        second = second_fd = None
        try:
            assert first.look_for_host()
            os.write(first_fd, b"AT\r")
            seen = select.poll()
            seen.register(first.master, select.POLLIN)
            assert seen.poll(2000)
            assert first._peers.others_ready(first) is False    # (its own look: entry used)
            await until(lambda: first_got == b"AT\r")
            second = PtyPort(loop, second_got.extend)
            second_fd = os.open(second.device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            assert second.look_for_host()
            os.write(first_fd, b"ATI\r")
            assert seen.poll(2000)
            assert second._peers.others_ready(second) is True
        finally:
            for fd in (first_fd, second_fd):
                if fd is not None:
                    os.close(fd)
            first.close()
            if second is not None:
                second.close()
    run(main)


# -- the open path (SslSocket._dial / _open_steps, network.dial_now) ---------------------------
def test_the_ml302s_address_of_a_socket_shows_as_soon_as_tcp_is_connected():
    """Mutant: SslSocket._dial not recording the address of a connect complete at the dial
    (`self.remote = dialled.address` dropped): until the open's task had asyncio's
    transport, a loop turn or more later, the socket looked unconnected.  docs/behaviour.md
    (ML302): "<ipaddr> in QSSLRECV and QSSLSTATE ... appears once TCP is connected"; a routed
    connect is complete in the command's own turn (test_dial: the ClientHello leaves
    before the OK), so an AT+QSSLSTATE right behind the open shows it."""
    class ModemView:
        network = None

    async def main():
        server = dial_listener()
        sock, router = make_socket(Owner(), server.getsockname()[1])
        ModemView.network = router
        try:
            sock.open(router, tls_settings(), 10)
            conn, _ = server.accept()                # connected, no loop turn yet
            assert ml302_address(ModemView, sock) == router.display_address("h.test") != ""
            sock.abort()
            conn.close()
        finally:
            server.close()
    run(main)


def test_a_session_that_fails_to_start_at_the_dial_is_a_setup_failure_after_the_connect():
    """Mutant: _open_steps not restoring the phase the dial reached (`self._phase =
    resume_phase` dropped) once the connect is done: a TLS session made at the dial whose
    start() raised was then answered as a connect failure (EC2x 566) instead of one of
    setting up TLS from the context (552).  SslSocket._open: "EC2x 566 while connecting, 552
    (invalid parameter) while the TLS session is set up from the context's settings";
    _start_early: "what it raises, _open_steps raises after the connect" (as if raised
    there: "_phase says how far it got")."""
    class StartFails:
        def __init__(self, settings, cache, key) -> None:
            self.settings, self.state = settings, "idle"

        def start(self) -> None:
            raise ValueError("no such curve")

    async def main():
        server = dial_listener()
        owner = Owner(session_factory=StartFails)
        sock, router = make_socket(owner, server.getsockname()[1])
        try:
            sock.open(router, tls_settings(), 10)
            assert owner.opened == []                # (the command's OK goes first)
            for _ in range(20):
                await asyncio.sleep(0)
            assert owner.opened == [
                ("bad_config", "unexpected ValueError while setting up TLS: no such curve")]
            assert sock.state is INITIAL
        finally:
            server.close()
    run(main)


def test_an_open_routed_to_an_ipv6_address_connects():
    """Mutant: dial_now dialling every address the router knows at once, IPv6 ones too
    (`not _is_ipv4(known[0])` dropped): its IPv4 socket cannot reach [::1] and the open
    failed as a connect error.  dial_now: "an IPv4 route or literal.  None: open_tcp does it
    all (a DNS name, IPv6)"; network.py: a host:port the host dials "can be mapped to
    another address" (--route), IPv6 ones included."""
    async def main():
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
        server.settimeout(5)
        owner = Owner()
        sock, _ = make_socket(owner, 1)
        router = Router({"h.test:443": f"[::1]:{server.getsockname()[1]}"})
        try:
            sock.open(router, tls_settings(), 10)
            conn = None
            for _ in range(200):
                await asyncio.sleep(0.01)
                if sock._transport is not None:
                    break
            conn, _ = server.accept()
            conn.settimeout(5)
            assert conn.recv(5)[:2] == b"\x16\x03"   # its ClientHello
            assert owner.opened == [] and sock.remote[0] == "::1"
            sock.abort()
            conn.close()
        finally:
            server.close()
    run(main)


def test_a_connect_the_server_accepted_and_reset_before_the_loop_looked_is_an_open_connection():
    """Mutant: _connect_dialled letting the ConnectionResetError of a pending connect out
    (`except ConnectionResetError: pass` gone): the open then failed as a refused connect.
    network.py: "The server accepted and reset the connection before this looked: the
    connect was made (a refusal is ECONNREFUSED), so the open succeeds as on the module,
    and the transport reads the end at once" -- for a plain TCP socket (AT+QIOPEN)
    "+QIOPEN: <id>,0" and then "closed".  The server's accept queue is full at the dial (the
    connect is pending); it makes room, the connect completes in the kernel and the server
    resets it, all while the loop is held, so the loop's first look sees the reset."""
    async def main():
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        fillers = []
        for _ in range(4):                           # the accept queue full: SYNs dropped
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            try:
                filler.connect(server.getsockname())
            except BlockingIOError:
                pass
            fillers.append(filler)
        filler_ports = {f.getsockname()[1] for f in fillers}
        owner = ClosedOwner(session_factory=PlainSession)
        sock, router = make_socket(owner, server.getsockname()[1])
        try:
            sock.open(router, PlainSettings(), 10)
            assert isinstance(sock._dialled, Dialled) and not sock._dialled.done
            for _ in range(5):
                await asyncio.sleep(0)               # the open's task waits for the connect
            server.settimeout(0.1)                   # the server makes room ...
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:       # (the loop held: nobody looks meanwhile)
                try:
                    conn, peer = server.accept()
                except OSError:
                    continue
                if peer[1] in filler_ports:
                    conn.close()
                    continue
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()                         # ... and resets the module's connection
                break
            else:
                pytest.fail("the module's connect never reached the server")
            time.sleep(0.05)                         # (the RST is in)
            await until(lambda: owner.opened, 5)
            assert owner.opened == [(None, "")]      # +QIOPEN: <id>,0 ...
            await until(lambda: owner.closed, 5)
            assert len(owner.closed) == 1            # ... then "closed"
        finally:
            sock.abort()
            for filler in fillers:
                filler.close()
            server.close()
    run(main)
