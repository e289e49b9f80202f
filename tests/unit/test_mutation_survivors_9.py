"""Tests from a manual mutation-testing pass over the EC2x SSL socket layer
(emulator/sockets/ssl_socket.py: SslSocket's state machine, its open and handshake answer,
_pump, timers, send back-pressure, peer close, fatal-alert close, the bearer's loss and the
network faults; emulator/sockets/context.py: AT+QSSLCFG contexts into TlsSettings;
emulator/sockets/service.py; emulator/commands/ssl_ec2x.py and ssl_common.py: the answers and
error codes of AT+QSSLOPEN / SEND / RECV / CLOSE / STATE).  Each test pins a behaviour that a
small change to those modules (the mutant named in its docstring) left the SSL e2e, unit and
earlier mutation tests passing on; the expected values come from docs/behaviour.md ("SSL
sockets (EC2x)", "AT+QSSLCFG (EC2x)", "Faults") and the EC2x SSL Application Note, not from
the emulator's current output.  Sans-IO where the behaviour is the socket's or the service's
own (test_mutation_survivors_3's Bench: a Modem with no pty and no network on manual time,
sockets put in their state by hand, the network's events handed in as it would); where a
real handshake is needed, an OpenSSL server (emulator.testing.peers.TlsServer) on 127.0.0.1
reached through a Router inside asyncio.run, no pty."""
from __future__ import annotations

import asyncio
import logging
import socket

from emulator.sockets.context import to_tls_settings
from emulator.sockets.ssl_socket import CLOSING, CONNECTED, INITIAL, OPENING, SslSocket
from tests.unit.test_mutation_survivors_3 import Bench
from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsFailure, TlsSettings


async def turns(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def plain_settings() -> TlsSettings:
    return TlsSettings(server_name="h.test", ssl_version=4, cipher_suites=(0xC02F,), session_cache=False)


def opening_socket(bench: Bench, client_id: int, mode: str = "buffer") -> SslSocket:
    """An SSL socket the service holds on `client_id`, not opened yet (AT+QSSLOPEN makes it so)."""
    svc = bench.svc
    sock = SslSocket(svc, client_id, pdp_id=1, ctx_id=1, host="h.test", port=443, delivery=svc.deliveries[mode],
                     recv_limit=bench.modem.profile["ssl.recv_buffer"], timers=bench.modem.timers)
    svc.sockets[client_id] = sock
    return sock


# -- the open's TCP connect (SslSocket._open_steps) ----------------------------------------------
def test_a_tcp_connect_that_never_completes_is_569_after_150_s():
    """Mutant: _open_steps answering a connect over its time limit as a "connect" failure
    (566) instead of "timeout".  docs/behaviour.md, +QSSLOPEN error codes: TCP connect over
    150 s ... 569 (the notes' "maximum network response time of 150 s"); refused/reset is 566."""
    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock.open(None, plain_settings(), 300, connect=lambda factory, fault: asyncio.get_running_loop().create_future())
        await turns()
        bench.modem.timers.advance(149.9)
        await turns()
        assert bench.run() == b"" and sock.state is OPENING
        bench.modem.timers.advance(0.2)
        await turns()
        assert bench.run() == b'\r\n+QSSLOPEN: 1,569\r\n'
        assert bench.run(b"AT+QIGETERROR\r") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        assert 1 not in bench.svc.sockets
    asyncio.run(main())


class FakeTransport:
    """An asyncio transport stand-in that records what the socket did to it."""

    def __init__(self) -> None:
        self.aborted = self.closed = self.eof = self.paused = False
        self.written: list[bytes] = []

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.aborted or self.closed

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return default


def test_a_connect_that_completes_as_the_host_closes_is_aborted_at_once():
    """Mutant: _open_steps returning on a socket closed meanwhile (`_dead`) without
    transport.abort().  docs/behaviour.md: "Open then close at once: a TCP connection that
    completes after AT+QSSLCLOSE is aborted at once. No connection outlives its socket." --
    here a connect whose result comes back although the open's task was cancelled (the wait
    returned its result)."""
    transport = FakeTransport()

    async def connect(factory, fault):
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            pass                                # the connect completed all the same
        return transport, None, ("127.0.0.1", 443)

    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock.open(None, plain_settings(), 300, connect=connect)
        await turns()
        await bench.svc.close(1, 10)
        await turns()
        assert transport.aborted
        assert bench.run() == b"" and sock.state is INITIAL
    asyncio.run(main())


def test_a_server_that_closes_before_the_session_starts_fails_the_open_at_once():
    """Mutant: _link_made not pausing the reads of a transport made before the open's session
    exists (a connect the open's task completes itself: network conditions, a UDP SERVICE's
    bind, ...): a FIN right after accept then reaches no session and the open waits for its
    negotiatetime instead.  docs/behaviour.md, +QSSLOPEN error codes: TCP refused/reset (the
    server closing the connection during the handshake) is 566, answered when it happens."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)

    async def connect(factory, fault):
        transport, protocol = await asyncio.get_running_loop().create_connection(
            factory, "127.0.0.1", server.getsockname()[1])
        conn, _ = server.accept()
        conn.close()                                       # the server's FIN, at once
        await asyncio.sleep(0.05)                          # (the loop has seen it, or would have)
        return transport, protocol, ("127.0.0.1", server.getsockname()[1])

    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock.open(None, plain_settings(), 300, connect=connect)
        out = await wait_output(bench, b"+QSSLOPEN:")
        assert out == b'\r\n+QSSLOPEN: 1,566\r\n'
    with server:
        asyncio.run(main())


async def wait_output(bench: Bench, until: bytes, timeout: float = 5.0) -> bytes:
    """The port's output until `until` shows (or `timeout` seconds of real time)."""
    got = bytearray(bench.run())
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while until not in got and loop.time() < end:
        await asyncio.sleep(0.005)
        got += bench.run()
    return bytes(got)


class FakeSession:
    """A TLS session stand-in for a connected socket: what it is given comes back as
    plaintext (AppData), nothing goes out."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.sent: list[bytes] = []
        self._events: list = []
        self.state = "established"
        self.settings = plain_settings()
        self.closed = False

    def receive(self, data: bytes) -> None:
        self.received.append(data)
        if data:
            self._events.append(AppData(data))

    def send(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def outgoing(self):
        return []

    def events(self):
        events, self._events = self._events, []
        return events

    def next_timeout(self):
        return None

    def unsealed(self) -> int:
        return 0

    def take_job(self):
        return None

    def close(self) -> None:
        self.closed = True
        self.state = "closed"


def session_socket(bench: Bench, client_id: int, mode: str = "buffer") -> SslSocket:
    """A CONNECTED SSL socket on `client_id` with a FakeSession and no transport."""
    sock = opening_socket(bench, client_id, mode)
    sock._go("open")
    sock._go("established")
    sock.session = FakeSession()
    return sock


# -- network faults (SslSocket.drop, the blackhole) ---------------------------------------------
def test_nothing_reaches_a_blackholed_socket():
    """Mutant: _from_network handing the network's bytes to the session on a blackholed link.
    docs/behaviour.md, Faults: `blackhole`: no packet moves either way -- what the server sends
    then never reaches the host (no "recv" URC, nothing to read)."""
    bench = Bench()
    sock = session_socket(bench, 1)
    assert sock.drop("blackhole")
    sock._from_network(b"\x17\x03\x03 a record")
    assert sock.session.received == [] and sock.inbox == b""
    assert bench.run() == b""


class FailingSession(FakeSession):
    """A session whose engine raises on the next bytes (an unexpected error on the data path)."""

    def receive(self, data: bytes) -> None:
        raise RuntimeError("engine broke")


# -- an unexpected error on the data path (SslSocket._internal_error) ---------------------------
def test_an_internal_error_on_an_open_connection_drops_it_and_reports_closed():
    """Mutant: _internal_error not aborting the transport.  The error is "handled as a TLS
    failure" (docs/behaviour.md: a fatal TLS error on an open connection ends it fully, at once;
    "closed" as for a peer close): the host hears "closed" and the connection is dropped now, not
    left open until the host's AT+QSSLCLOSE."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock.session = FailingSession()
    transport = FakeTransport()
    sock._transport = transport
    sock._from_network(b"\x17\x03\x03\x00\x05hello")
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
    assert sock.state is CLOSING and transport.aborted


# -- the handshake's answer (SslSocket._pump) ---------------------------------------------------
def test_a_handshake_ending_as_the_host_closes_the_socket_is_not_an_open_connection(caplog):
    """Mutant: _pump answering a finished handshake (`_established`) while the open's task
    still waits, without `not self._dead` (the host's AT+QSSLCLOSE came in the same loop turn).
    docs/behaviour.md: a close takes effect when the command runs; from then on nothing about
    that socket reaches the host (its open's late answer) -- and the socket, closing, is never
    made "connected" again (an event its transition table does not allow: a bug, logged as an
    error)."""
    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock._go("open")
        session = FakeSession()
        session._events.append(HandshakeComplete("TLSv1.2", 0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                                 None, False))
        sock.session = session
        sock._opened = asyncio.get_running_loop().create_future()
        sock._awaiting = True                       # the open's task waits for the handshake
        closing = bench.svc.close(1, 0)             # AT+QSSLCLOSE=1,0 ...
        sock._from_network(b"\x16\x03\x03 Finished")    # ... and the server's last flight, same turn
        assert sock.state is not CONNECTED
        await closing
        assert sock.state is INITIAL and bench.run() == b""
    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


class ClosingSession(FakeSession):
    """A session that reads the peer's close_notify in the next bytes."""

    def receive(self, data: bytes) -> None:
        self._events.append(PeerClosed())
        self.state = "closed"


# -- the peer's close (SslSocket._pump, _end_tcp) -------------------------------------------------
def test_after_the_peers_close_notify_the_module_sends_its_fin_at_once():
    """Mutant: _pump's PeerClosed not calling _end_tcp() (the module's FIN waits for the host's
    AT+QSSLCLOSE).  docs/behaviour.md, SSL sockets: "After the peer's close the emulator closes
    its side of the TCP connection at once (the server sees EOF without waiting for the host's
    AT+QSSLCLOSE)"; the host hears "closed", the socket is in state 4."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock.session = ClosingSession()
    transport = FakeTransport()
    sock._transport = transport
    sock._from_network(b"\x15\x03\x03\x00\x02\x01\x00")        # close_notify
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
    assert sock.state is CLOSING and transport.eof and not transport.aborted


def test_the_log_says_how_the_peer_ended_the_connection(caplog):
    """Mutant: _lost_reason calling a plain end of the connection (no exception: the peer's FIN)
    a reset.  docs/behaviour.md, SSL sockets: "Peer close: the log says how the peer closed
    ("peer sent close_notify", "peer closed TCP without close_notify (FIN)", "connection reset
    by peer (RST)")"; either way the host hears "closed"."""
    bench = Bench()
    fin, rst = session_socket(bench, 1), session_socket(bench, 2)
    with caplog.at_level(logging.INFO, logger="emulator.ssl"):
        fin._link().connection_lost(None)
        rst._link().connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n\r\n+QSSLURC: "closed",2\r\n'
    lines = [r.getMessage() for r in caplog.records]
    assert "SSL socket 1: peer closed TCP without close_notify (FIN)" in lines
    assert "SSL socket 2: connection reset by peer (RST)" in lines


def test_a_socket_that_stopped_reading_still_sees_the_peers_fin_after_a_close_notify():
    """Mutant: _end_tcp not resuming the network's reads (paused: the receive buffer full)
    after the peer's close_notify.  docs/behaviour.md, SSL sockets: after the peer's close the
    emulator closes its side at once and "the peer's own FIN then ends it" -- which the socket
    sees only if it reads again (data before the close stay readable)."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock.session = ClosingSession()
    sock._transport = transport = FakeTransport()
    sock.pause_network(True)                            # (the inbox was full)
    assert transport.paused
    sock.session._events.append(PeerClosed())
    sock._pump()
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
    assert transport.eof and not transport.paused


# -- data that came with the handshake's last flight (SslSocket._received, _deliver_pending) ------
def test_data_with_the_last_handshake_flight_are_reported_after_the_opens_answer():
    """Mutants: _received reporting data to the service whatever the socket's state (not only
    CONNECTED), and _deliver_pending reporting them with was_empty False.  The note's URC
    `+QSSLURC: "recv",<clientID>` is news of an open socket: data the server sent right behind
    its Finished (the open's task not yet resumed) wait until `+QSSLOPEN: <id>,0` is out, then
    the "recv" URC follows (docs/behaviour.md: "recv" is reported when data arrive into an empty
    receive buffer), and the host reads them."""
    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock._go("open")
        session = FakeSession()
        session._events += [HandshakeComplete("TLSv1.2", 0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", None, False),
                            AppData(b"hello early")]
        sock.session = session
        sock._opened = asyncio.get_running_loop().create_future()
        sock._pump()                          # the server's last flight read: the task not waiting yet
        assert bench.run() == b"" and sock.state is OPENING and sock.inbox == b"hello early"
        sock._established()                                      # the task resumes: its answer
        assert bench.run() == b'\r\n+QSSLOPEN: 1,0\r\n\r\n+QSSLURC: "recv",1\r\n'
        assert bench.run(b"AT+QSSLRECV=1,100\r") == b"\r\n+QSSLRECV: 11\r\nhello early\r\n\r\nOK\r\n"
    asyncio.run(main())


# -- sending (SslSocket.transmit, _sealed) --------------------------------------------------------
def test_bytes_a_send_ok_accepted_leave_before_the_next_ones():
    """Mutant: transmit() not flushing what transmit_soon() holds before its own bytes.
    docs/behaviour.md, "When the bytes of a SEND OK leave": they wait at most 0.5 ms, and
    "their order with anything else the socket sends (online data, close_notify) is kept"."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = FakeTransport()
        sock.transmit_soon(b"accepted by SEND OK")
        sock.transmit(b"online data")
        await asyncio.sleep(0.01)
        assert sock.session.sent == [b"accepted by SEND OK", b"online data"]
    asyncio.run(main())


class JobSession(FakeSession):
    def settle(self, job) -> None:
        pass


def test_the_link_reads_again_when_the_backlog_is_back_at_the_limit():
    """Mutant: _sealed resuming the paused online link only when send_backlog() is below the
    limit (`<`), not at it.  The link stops reading the host's port when the backlog passes
    the limit (SocketLink._send: `> limit`) and only the transport's resume_writing would wake
    it: a seal job finished with the backlog exactly at the limit must let it read again, or
    transparent mode stalls for good (docs/behaviour.md, Transparent access mode: the port is
    held back while the connection cannot take more, never longer)."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock.session = JobSession()
    sock._transport = transport = FakeTransport()
    woken = []
    sock.on_writable = lambda: woken.append(True)
    sock.set_send_limit(4096)
    transport.get_write_buffer_size = lambda: 4096
    sock._sealed(sock.session, object())
    assert woken == [True]
    transport.get_write_buffer_size = lambda: 4097
    sock._sealed(sock.session, object())
    assert woken == [True]


class TimingOutSession(FakeSession):
    """A session that fails on its retransmission timer (DTLS: the last interval ran out)."""

    def handle_timeout(self) -> None:
        self.state = "failed"
        self._events.append(TlsFailure("timeout", "retransmission limit reached"))

    def send(self, data: bytes) -> None:
        if self.state != "established":      # as TlsClientSession.send
            raise RuntimeError(f"send() called in state {self.state!r}")
        super().send(data)


def test_bytes_accepted_before_the_session_failed_are_dropped_quietly(caplog):
    """Mutant: _flush_deferred writing what SEND OK accepted into a session that is no longer
    established (the engine refuses: an "unexpected" error with a traceback, the transport
    aborted).  docs/behaviour.md: a fatal TLS error on an open connection ends it ("closed", what
    came before stays readable); bytes accepted but not yet sent are lost with the connection, as
    a reset loses a module's unsent data -- dropped, not an internal error."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock.session = TimingOutSession()
        sock._transport = FakeTransport()
        sock.transmit_soon(b"accepted by SEND OK")
        sock._on_timer()                           # the session fails before they left
        await asyncio.sleep(0.01)
        assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
        assert sock.session.sent == [] and sock.send_backlog() == 0
    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# -- network faults (SslSocket.drop) --------------------------------------------------------------
def test_a_dropped_connection_is_logged_as_the_close_it_imitates(caplog):
    """Mutant: drop() naming the fault "close" a reset and "rst" a close_notify.
    docs/behaviour.md, SSL sockets: "Peer close: the log says how the peer closed ("peer sent
    close_notify", ..., "connection reset by peer (RST)")"; Faults: `drop` close/rst is reported
    like a peer close (the "closed" URC), the server side sees the connection aborted."""
    bench = Bench()
    closed, reset = session_socket(bench, 1), session_socket(bench, 2)
    closed._transport, reset._transport = FakeTransport(), FakeTransport()
    with caplog.at_level(logging.INFO, logger="emulator.ssl"):
        assert closed.drop("close") and reset.drop("rst")
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n\r\n+QSSLURC: "closed",2\r\n'
    assert closed.state is CLOSING and reset.state is CLOSING
    lines = [r.getMessage() for r in caplog.records]
    assert "SSL socket 1: peer sent close_notify (fault injected)" in lines
    assert "SSL socket 2: connection reset by peer (RST) (fault injected)" in lines


class RecordSession(FakeSession):
    """A session that turns each send into one record: a 5-byte header, the data, a 16-byte tag."""

    def __init__(self) -> None:
        super().__init__()
        self._out: list[bytes] = []

    def send(self, data: bytes) -> None:
        super().send(data)
        self._out.append(b"\x17\x03\x03" + (len(data) + 16).to_bytes(2, "big") + data + b"\0" * 16)

    def outgoing(self):
        out, self._out = self._out, []
        return out


def test_qgdcnt_counts_the_records_the_sockets_wrote_and_read():
    """Mutant: _pump not counting what it writes to the network in the data counter.
    docs/behaviour.md, AT+QGDCNT: `+QGDCNT: <bytes_sent>,<bytes_recv>`: what the module's sockets
    (SSL and TCP/IP) wrote to and read from the network -- TLS records as they went."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock.session = RecordSession()
    sock._transport = transport = FakeTransport()
    sock.transmit(b"hello")                              # one 26-byte record
    sock._from_network(b"\x17\x03\x03\x00\x05abcde")   # 10 bytes in
    assert transport.written == [b"\x17\x03\x03\x00\x15hello" + b"\0" * 16]
    assert bench.run() == b'\r\n+QSSLURC: "recv",1\r\n'
    assert bench.run(b"AT+QGDCNT?\r") == b"\r\n+QGDCNT: 26,10\r\n\r\nOK\r\n"


# -- back-pressure (SslSocket.send_backlog, pause_network) ---------------------------------------
def test_bytes_waiting_to_be_encrypted_count_in_the_send_backlog():
    """Mutant: send_backlog() leaving out the bytes transmit_soon() still holds.
    docs/behaviour.md: SEND OK says the bytes are in the send buffer, and they leave when the
    port next waits for the host or 0.5 ms later; meanwhile they are the module's unsent bytes
    (SslSocket.transmit_soon: "send_backlog() counts them"), which SEND FAIL and transparent
    mode's flow control measure."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = FakeTransport()              # (the kernel takes what is written)
        sock.transmit_soon(b"x" * 1460)
        sock.transmit_soon(b"y" * 100)
        assert sock.send_backlog() == 1560
        await asyncio.sleep(0.01)
        assert sock.send_backlog() == 0 and sock.session.sent == [b"x" * 1460, b"y" * 100]
    asyncio.run(main())


def test_the_network_is_read_again_only_below_half_the_receive_buffer():
    """Mutant: pause_network resuming with the inbox at exactly half of ssl.recv_buffer
    (`<=`).  docs/behaviour.md: past ssl.recv_buffer unread bytes the socket stops reading from
    the network (TCP flow control); SslSocket.pause_network: "resumed below half of it as the
    host reads"."""
    bench = Bench()
    sock = session_socket(bench, 1)
    sock._transport = transport = FakeTransport()
    limit = bench.modem.profile["ssl.recv_buffer"]
    sock._received(b"d" * limit)
    assert transport.paused
    sock.read(limit // 2)                          # exactly half left: not below it
    assert transport.paused
    sock.read(1)
    assert not transport.paused


# -- the bearer's loss (SslSocket.bearer_lost) ----------------------------------------------------
def test_a_socket_the_peer_closed_reports_closed_once_when_the_context_goes():
    """Mutant: bearer_lost reporting "closed" for a socket in state 4 as well (not only one
    that was connected).  The transition table: CLOSING -- bearer_lost -> CLOSING "(already
    reported)"; docs/behaviour.md: after a peer close `+QSSLURC: "closed",<id>` follows and the
    socket is in state 4 until AT+QSSLCLOSE -- the context's loss then adds no second URC,
    while a connected socket reports it."""
    bench = Bench()
    gone, live = session_socket(bench, 1), session_socket(bench, 2)
    gone._peer_closed("peer sent close_notify")
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
    bench.svc.pdp_lost(1)
    assert bench.run() == b'\r\n+QSSLURC: "closed",2\r\n'
    assert gone.state is CLOSING and live.state is CLOSING


def test_the_contexts_loss_drops_the_connection_and_what_waits_to_leave():
    """Mutant: bearer_lost not tearing the connection down (_teardown).  SslSocket.bearer_lost: "The PDP context went away: the connection is
    dropped"; docs/behaviour.md, Faults `pdp_deact`: each socket's "closed" URC -- what SEND OK
    accepted leaves first (it was in the send buffer before the loss: docs/behaviour.md "When the
    bytes of a SEND OK leave"), then with no bearer nothing more leaves."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = transport = FakeTransport()
        sock.transmit_soon(b"accepted by SEND OK")
        bench.svc.pdp_lost(1)
        assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
        assert transport.aborted and sock.send_backlog() == 0
        assert sock.session.sent == [b"accepted by SEND OK"]
        await asyncio.sleep(0.01)
        assert sock.session.sent == [b"accepted by SEND OK"]
    asyncio.run(main())


# -- the host's close (SslSocket.close, _linger) ---------------------------------------------------
def test_a_blackholed_close_sends_no_fin_and_lingers_its_full_timeout():
    """Mutant: _linger writing the FIN on a blackholed link too.  docs/behaviour.md, Faults
    `blackhole`: "AT+QSSLCLOSE sends no FIN (nor close_notify) during its linger and answers after
    its full close timeout; then the real socket is torn down"."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = transport = FakeTransport()
        assert sock.drop("blackhole")
        closing = asyncio.ensure_future(sock.close(5))
        await turns()
        assert not transport.eof and transport.written == [] and not closing.done()
        bench.modem.timers.advance(4.9)
        await turns()
        assert not transport.eof and not closing.done()
        bench.modem.timers.advance(0.2)
        await turns()
        assert closing.done() and transport.aborted and not transport.eof
        assert sock.state is INITIAL
    asyncio.run(main())


def test_the_hosts_close_reads_again_to_see_the_peers_fin():
    """Mutant: _linger not resuming the network's reads (paused while the host did not read)
    before it waits for the peer's close.  docs/behaviour.md, AT+QSSLCLOSE: "sends close_notify,
    waits for the TCP close up to <close_timeout>" -- the peer's FIN must be seen, or every such
    close would take its whole timeout."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = transport = FakeTransport()
        sock.pause_network(True)
        closing = asyncio.ensure_future(sock.close(10))
        await turns()
        assert transport.eof and not transport.paused
        sock._link().connection_lost(None)              # the peer's FIN, then the end
        await turns()
        assert closing.done() and sock.state is INITIAL
    asyncio.run(main())


def test_a_transport_made_after_the_host_closed_is_aborted():
    """Mutant: _link_made taking a transport for a socket already closed (`_dead`) instead of
    aborting it.  docs/behaviour.md: "Open then close at once: a TCP connection that completes
    after AT+QSSLCLOSE is aborted at once. No connection outlives its socket." -- here asyncio
    makes the connection (connection_made) as the cancelled connect unwinds."""
    transport = FakeTransport()

    async def connect(factory, fault):
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)                  # the host's close is over meanwhile
            factory().connection_made(transport)      # asyncio connected it all the same
            raise

    async def main():
        bench = Bench()
        sock = opening_socket(bench, 1)
        sock.open(None, plain_settings(), 300, connect=connect)
        await turns()
        await bench.svc.close(1, 10)
        assert not transport.aborted
        await asyncio.sleep(0.2)
        assert transport.aborted and sock._transport is None
        assert bench.run() == b"" and sock.state is INITIAL
    asyncio.run(main())


# -- AT+QSSLCFG contexts into TlsSettings (emulator/sockets/context.py) --------------------------
def settings_of(bench: Bench, ctx_id: int = 1) -> TlsSettings:
    """The settings an AT+QSSLOPEN on context `ctx_id` would use (no file is read)."""
    return to_tls_settings(bench.svc.contexts[ctx_id], host="h.test", profile=bench.modem.profile,
                           read_material=lambda path: None, clock=bench.modem.clock.now)


def test_a_psk_key_of_an_odd_number_of_hex_digits_is_the_hosts_bytes():
    """Mutant: _psk_key_bytes taking any all-hex key as hex (without the even length), so
    "abc" fails the open (bytes.fromhex raises: 552).  docs/behaviour.md, `psk`: "a key of hex
    digits only, even length = its bytes; anything else ... the host's bytes"."""
    bench = Bench()
    assert bench.run(b'AT+QSSLCFG="psk",1,"id","abc"\r') == b"\r\nOK\r\n"
    assert settings_of(bench).psk_key == b"abc"
    assert bench.run(b'AT+QSSLCFG="psk",1,"id","0abc"\r') == b"\r\nOK\r\n"
    assert settings_of(bench).psk_key == b"\x0a\xbc"


# -- the service (emulator/sockets/service.py) ---------------------------------------------------
def test_a_context_going_away_closes_only_its_own_sockets():
    """Mutant: SocketService.pdp_lost reporting every socket "closed", whichever PDP context it
    was opened on.  docs/behaviour.md, Faults `pdp_deact`: `+QIURC: "pdpdeact",<cid>` then each
    socket's "closed" URC -- the sockets of that context (AT+QSSLOPEN's <contextID>); a socket
    on another, still active context stays connected."""
    bench = Bench()
    on_1, on_2 = session_socket(bench, 1), session_socket(bench, 2)
    on_2.pdp_id = 2
    bench.svc.pdp_lost(1)
    assert bench.run() == b'\r\n+QSSLURC: "closed",1\r\n'
    assert on_1.state is CLOSING and on_2.state is CONNECTED


def restart(bench: Bench) -> None:
    """AT+CFUN=1,1, the start-up over, echo off again (ATE0 is not saved)."""
    bench.run(b"AT+CFUN=1,1\r")
    bench.modem.timers.advance(30)
    bench.run(b"ATE0\r")
    bench.run()


def test_a_restart_forgets_the_last_ssl_error():
    """Mutant: SslService._reboot keeping the last error.  After AT+CFUN=1,1 the module starts
    afresh: AT+QIGETERROR reports no error (`+QIGETERROR: 0,operate successfully`, docs/
    behaviour.md), not the 552 of a command before the restart (SslService._reboot: "sessions
    and the last error go")."""
    bench = Bench()
    assert bench.run(b'AT+QSSLCFG="nosuchoption",1,1\r') == b"\r\nERROR\r\n"
    assert bench.run(b"AT+QIGETERROR\r") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    restart(bench)
    assert bench.run(b"AT+QIGETERROR\r") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"


def test_a_restart_forgets_the_tls_sessions():
    """Mutant: SslService._reboot keeping the cached TLS sessions.  The contexts come back with
    their defaults at a restart (the note: "The configurations will not be saved"), and a
    session is resumed only under the settings it was verified under (docs/behaviour.md,
    AT+QSSLCFG): after AT+CFUN=1,1 the next AT+QSSLOPEN is a full, verified handshake --
    SslService._reboot: "sessions and the last error go"."""
    bench = Bench()
    key = (1, "h.test", 443)
    bench.svc.cache.put(key, object())
    assert key in bench.svc.cache
    restart(bench)
    assert key not in bench.svc.cache and len(bench.svc.cache) == 0


def test_a_peer_close_right_after_the_hosts_close_gives_no_urc():
    """Mutant: SocketService.on_closed reporting "closed" for a socket it no longer holds.
    docs/behaviour.md: a close (AT+QSSLCLOSE) takes effect when the command runs, before its
    linger: from then on nothing about that socket reaches the host ("recv"/"closed") -- also
    when the peer's close comes in the same loop turn, before the close's task has run."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = FakeTransport()
        closing = bench.svc.close(1, 0)                 # AT+QSSLCLOSE=1,0
        sock._peer_closed("peer sent close_notify")     # the server's close, same turn
        await closing
        assert bench.run() == b"" and sock.state is INITIAL
    asyncio.run(main())


def test_a_refused_opens_answer_after_the_hosts_close_is_dropped():
    """Mutant: SslService.on_opened answering an open whose socket the host closed meanwhile
    (without `holds`).  docs/behaviour.md: a close takes effect when the command runs: nothing
    about that socket reaches the host from then on, "its open's late answer" included, "so the
    id can be reused in the same line" -- AT+QSSLOPEN=...;+QSSLCLOSE=1 with a context that cannot
    work: no "+QSSLOPEN: 1,552", no 552 for AT+QIGETERROR, and the id's next socket is untouched."""
    async def main():
        bench = Bench()
        first = opening_socket(bench, 1)
        first.refuse("bad_config", "seclevel 1 needs AT+QSSLCFG=\"cacert\" set")   # answered next turn
        closing = bench.svc.close(1, 0)                                           # the same line
        second = session_socket(bench, 1)                                         # the id reused
        await closing
        await turns()
        assert bench.run() == b"" and bench.svc.sockets.get(1) is second
        assert qigeterror(bench) == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    asyncio.run(main())


def test_data_right_after_the_hosts_close_give_no_urc():
    """Mutant: SocketService.on_data reporting data of a socket it no longer holds.
    docs/behaviour.md: a close (AT+QSSLCLOSE) takes effect when the command runs: from then on
    nothing about that socket reaches the host ("recv"/"closed") -- also data read in the same
    loop turn, before the close's task has run."""
    async def main():
        bench = Bench()
        sock = session_socket(bench, 1)
        sock._transport = FakeTransport()
        closing = bench.svc.close(1, 0)
        sock._from_network(b"late data")
        await closing
        assert bench.run() == b""
    asyncio.run(main())


# -- the AT commands' answers (emulator/commands/ssl_ec2x.py, ssl_common.py) ---------------------
def qigeterror(bench: Bench) -> bytes:
    return bench.run(b"AT+QIGETERROR\r")


def sending(bench: Bench, client_id: int) -> SslSocket:
    """Bench.connected(client_id, "buffer"), what SEND OK hands it kept in .sent."""
    sock = bench.connected(client_id, "buffer")
    sock.transmit_soon = lambda data: sock.sent.append(bytes(data))
    return sock


def test_qsslsend_on_a_socket_still_opening_is_572_and_after_the_peers_close_567():
    """Mutant: AT+QSSLSEND answering 567 ("socket has been closed") for a socket that is still
    opening.  docs/behaviour.md, AT+QSSLSEND: on a socket that is not connected the command is
    ERROR: QIGETERROR 572 (operation not allowed) when there is none or it is still opening,
    567 once the peer closed it."""
    bench = Bench()
    sock = opening_socket(bench, 1)
    sock._go("open")
    assert bench.run(b"AT+QSSLSEND=1,5\r") == b"\r\nERROR\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"
    closed = session_socket(bench, 2)
    closed._peer_closed("peer sent close_notify")
    assert bench.run() == b'\r\n+QSSLURC: "closed",2\r\n'
    assert bench.run(b"AT+QSSLSEND=2,5\r") == b"\r\nERROR\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 567,socket has been closed\r\n\r\nOK\r\n"


def test_qsslrecv_on_a_direct_push_socket_is_572():
    """Mutant: AT+QSSLRECV on a socket in direct push mode answering 552 (invalid parameter).
    docs/behaviour.md, Direct push: "AT+QSSLRECV on such a socket is ERROR (QIGETERROR 572; the
    log says why: the data are pushed, nothing to read)" -- the command is well formed."""
    bench = Bench()
    bench.connected(1, "push")
    assert bench.run(b"AT+QSSLRECV=1,100\r") == b"\r\nERROR\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"


def test_0xffff_cannot_be_combined_with_other_suites():
    """Mutant: AT+QSSLCFG="ciphersuite" taking 0XFFFF inside a list.  docs/behaviour.md,
    AT+QSSLCFG (EC2x): "`0XFFFF` cannot be combined with other ids" -- ERROR, QIGETERROR 552, and
    the context keeps its suites."""
    bench = Bench()
    assert bench.run(b'AT+QSSLCFG="ciphersuite",1,0X0035\r') == b"\r\nOK\r\n"
    assert bench.run(b'AT+QSSLCFG="ciphersuite",1,"0XFFFF:0X0035"\r') == b"\r\nERROR\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert bench.run(b'AT+QSSLCFG="ciphersuite",1,0X0035:0XFFFF\r') == b"\r\nERROR\r\n"
    assert bench.run(b'AT+QSSLCFG="ciphersuite",1\r') == b'\r\n+QSSLCFG: "ciphersuite",1,0X0035\r\n\r\nOK\r\n'


def test_qsslcfg_with_the_value_left_empty_after_its_comma_is_the_query():
    """Mutant: AT+QSSLCFG taking `"<option>",<ctx>,` (the value left empty) as a write of an
    empty value (ERROR) instead of the query.  docs/behaviour.md, AT+QSSLCFG (EC2x):
    `AT+QSSLCFG="<option>",<ctx>,` is the query, as when the value is omitted (V.250); two
    empty values are ERROR."""
    bench = Bench()
    assert bench.run(b'AT+QSSLCFG="seclevel",2,1\r') == b"\r\nOK\r\n"
    assert bench.run(b'AT+QSSLCFG="seclevel",2,\r') == b'\r\n+QSSLCFG: "seclevel",2,1\r\n\r\nOK\r\n'
    assert bench.run(b'AT+QSSLCFG="cacert",2,\r') == b'\r\n+QSSLCFG: "cacert",2,""\r\n\r\nOK\r\n'
    assert bench.run(b'AT+QSSLCFG="seclevel",2,,\r') == b"\r\nERROR\r\n"


def test_send_fail_leaves_no_error_for_qigeterror():
    """Mutant: a SEND FAIL leaving AT+QIGETERROR at the previous command's error.  SEND FAIL is
    a result of a command that was carried out (docs/behaviour.md: "No error is +QIGETERROR:
    0,operate successfully"; AT+QIGETERROR reports the last SSL command's error)."""
    bench = Bench()
    sock = bench.connected(1, "buffer")
    assert bench.run(b"AT+QSSLSEND=1,0\r") == b"\r\nERROR\r\n"
    assert qigeterror(bench).startswith(b"\r\n+QIGETERROR: 552,")
    sock.unsent = bench.modem.profile["ssl.send_buffer"]
    assert bench.run(b"AT+QSSLSEND=1,3\r") == b"\r\n> "
    assert bench.run(b"abc") == b"\r\nSEND FAIL\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"


def test_an_empty_send_is_552():
    """Mutant: the send's data phase handing an empty send to the socket (SEND OK for nothing).
    docs/behaviour.md, AT+QSSLSEND: variable length ends at Ctrl+Z ... "an empty send is
    ERROR/552"."""
    bench = Bench()
    sock = sending(bench, 1)
    assert bench.run(b"AT+QSSLSEND=1\r") == b"\r\n> "
    assert bench.run(b"\x1a") == b"\r\nERROR\r\n"
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert sock.sent == []


def test_a_send_whose_socket_the_peer_closed_during_the_prompt_is_567():
    """Mutant: the send's data phase answering 572 when the socket was closed while the host
    entered its data.  docs/behaviour.md, AT+QSSLSEND: on a socket that is not connected the
    command is ERROR: ... 567 (socket has been closed) once the peer closed it; the "closed" URC
    waits for the command's end."""
    bench = Bench()
    sock = sending(bench, 1)
    assert bench.run(b"AT+QSSLSEND=1,5\r") == b"\r\n> "
    sock._peer_closed("peer sent close_notify")
    out = bench.run(b"hello")
    assert out == b'\r\nERROR\r\n\r\n+QSSLURC: "closed",1\r\n' and sock.sent == []
    assert qigeterror(bench) == b"\r\n+QIGETERROR: 567,socket has been closed\r\n\r\nOK\r\n"
