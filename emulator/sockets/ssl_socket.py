"""One SSL client socket: its state machine, its TLS session and its buffers.

The socket alone owns its state; it changes only through TRANSITIONS, by the
socket's own methods (open, close, abort, bearer_lost and the network callbacks):

    state      event          next        when
    INITIAL    open           OPENING     AT+QSSLOPEN: DNS, TCP connect, TLS handshake
    OPENING    established    CONNECTED   handshake done ("+QSSLOPEN: <id>,0")
    OPENING    open_failed    INITIAL     DNS/TCP/TLS failure, timeout, bearer lost (URC with error)
    CONNECTED  peer_closed    CLOSING     close_notify, FIN, RST, TLS failure ("closed" URC)
    CONNECTED  bearer_lost    CLOSING     the PDP context went away ("closed" URC)
    CLOSING    bearer_lost    CLOSING     (already reported)
    OPENING    close          CLOSING     AT+QSSLCLOSE: the host's close (a +QSSLOPEN never comes)
    CONNECTED  close          CLOSING     AT+QSSLCLOSE: close_notify, linger
    CLOSING    close          CLOSING     AT+QSSLCLOSE after the peer's close
    CLOSING    closed         INITIAL     the host's close is over
    any        abort          INITIAL     reboot, shutdown

The numbers are the EC2x's <socket_state> (AT+QSSLSTATE prints them).  Races the
code expects (a peer close while still opening, a close while the connect completes)
are checked before an event is raised; an event the table does not allow is a bug:
with MODEM_EMULATOR_STRICT=1 (the test suite sets it) it raises IllegalTransition; otherwise
it is logged as an error and ignored (the socket keeps its state), so a running
emulator keeps serving the host.

The asyncio transport only moves bytes; the sans-IO TlsClientSession does TLS.
The owner (the per-modem SSL service) receives callbacks and turns them into
URCs in the imitated module's format.  Received plaintext waits in `inbox`
until the host reads it (or the socket's delivery strategy pushes it); past the
profile's receive buffer the socket stops reading from the network (TCP flow
control) instead of dropping data.  Every timeout (connect, open bound, handshake,
close linger, DTLS retransmission) runs on the modem's Timers, so tests advance it.

Every open ends in exactly one owner.on_opened() (an unexpected exception included:
it becomes a failure kind, with its traceback in the log) unless the host closed the
socket first; no transport outlives its socket (one that connects after close() or
abort() is aborted at once).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
from collections import deque
from functools import partial
from typing import Callable, Protocol

from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsClientSession, TlsFailure, TlsSettings

from emulator.logsafe import get_logger
from emulator.modem.pdp import DataCounter, data_counter
from emulator.io import offload
from emulator.io.network import (Dialled, NetworkError, Router, ShapedTransport, cap_reads, dial_now, open_tcp,
                                 open_udp, reset_on_close, tcp_unacked)

log = get_logger("emulator.ssl")


class State(enum.IntEnum):
    INITIAL = 0
    OPENING = 1
    CONNECTED = 2
    CLOSING = 4


INITIAL, OPENING, CONNECTED, CLOSING = State.INITIAL, State.OPENING, State.CONNECTED, State.CLOSING

# s: AT+QSSLCLOSE's and AT+QICLOSE's default <timeout> (the EC2x notes), also AT&D2's hang-up's
CLOSE_TIMEOUT_DEFAULT = 10

# (state, event) -> next state: the only way a socket's state changes.
TRANSITIONS: dict[tuple[State, str], State] = {
    (INITIAL, "open"): OPENING,
    (OPENING, "established"): CONNECTED,
    (OPENING, "open_failed"): INITIAL,
    (CONNECTED, "peer_closed"): CLOSING,
    (CONNECTED, "bearer_lost"): CLOSING,
    (CLOSING, "bearer_lost"): CLOSING,
    (OPENING, "close"): CLOSING,
    (CONNECTED, "close"): CLOSING,
    (CLOSING, "close"): CLOSING,
    (CLOSING, "closed"): INITIAL,
    **{(state, "abort"): INITIAL for state in State},
}

STRICT_ENV = "MODEM_EMULATOR_STRICT"


class IllegalTransition(RuntimeError):
    """An event the socket's transition table does not allow in its state: a bug."""


def strict_states() -> bool:
    """Raise on an illegal transition (the test suite sets it) rather than log and ignore it."""
    return os.environ.get(STRICT_ENV) == "1"


CONNECT_TIMEOUT = 150.0          # the notes: "maximum network response time of 150 s" (SSL and TCP/IP)
FLUSH_AFTER = 0.0005             # transmit_soon(): bytes after SEND OK leave at most this late

# How the peer ended the connection, as the log says it.
CLOSE_NOTIFY = "peer sent close_notify"
FIN = "peer closed TCP without close_notify (FIN)"
RST = "connection reset by peer (RST)"


def _lost_reason(exc: Exception | None) -> str:
    if exc is None:
        return FIN
    if isinstance(exc, ConnectionResetError):
        return RST
    return f"connection lost: {exc}"


def _no_delay(transport) -> None:
    """TCP_NODELAY before the first flight (open_tcp sets it too, once it returns)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def _failed(exc: BaseException):
    raise exc


async def _after(wait, link):
    """The coroutine `link`, run once the awaitable `wait` is done (NetFaults.failure_wait)."""
    try:
        await wait
    except BaseException:
        close = getattr(link, "close", None)       # (a coroutine never awaited: closed, no warning)
        if close is not None:
            close()
        raise
    return await link


def _no_trace(kind: str, /, **fields) -> None:
    pass


class SocketOwner(Protocol):
    def on_opened(self, sock: "SslSocket", error_kind: str | None, reason: str,
                  exc: BaseException | None = None) -> None: ...
    def on_data(self, sock: "SslSocket", was_empty: bool) -> None: ...
    def on_closed(self, sock: "SslSocket", reason: str) -> None: ...


class _Link(asyncio.Protocol):
    """asyncio protocol feeding a socket (TCP stream or DTLS datagrams) through the
    callbacks the socket hands it (made, received, lost, writable, eof)."""

    def __init__(self, made: Callable, received: Callable[[bytes], None], lost: Callable[[str], None],
                 writable: Callable[[], None], eof: Callable[[], None] | None = None,
                 ending: Callable[[], None] | None = None) -> None:
        self.made = made
        self.received = received
        self.lost = lost
        self.writable = writable
        self.eof = eof
        self.ending = ending or (lambda: None)   # the connection ends now (its socket still open)

    def eof_received(self) -> None:
        """The peer's FIN: the socket's last word before asyncio closes the transport
        (which still sends what is written now); connection_lost follows."""
        if self.eof is not None:
            self.eof()

    def resume_writing(self) -> None:
        self.writable()

    def connection_made(self, transport) -> None:
        self.made(transport)

    def data_received(self, data: bytes) -> None:
        self.received(data)

    def datagram_received(self, data: bytes, addr) -> None:
        self.received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.lost(f"UDP error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.ending()
        self.lost(_lost_reason(exc))


class SslSocket:
    def __init__(self, owner: SocketOwner, client_id: int, *, pdp_id: int, ctx_id: int,
                 host: str, port: int, delivery, recv_limit: int, timers) -> None:
        """delivery: how received data reach the host (emulator/sockets/delivery.py);
        timers: the modem's Timers (emulator/modem/timers.py)."""
        self.owner = owner
        modem = getattr(owner, "modem", None)
        self._counter = data_counter(modem) if modem is not None else DataCounter()   # (AT+QGDCNT)
        self.client_id = client_id
        self.pdp_id = pdp_id
        self.ctx_id = ctx_id
        self.host = host
        self.port = port
        self.delivery = delivery
        self._state = INITIAL
        self._timers = timers
        self.local_port = 0
        self.remote = None              # the routed (IP, port) really connected to
        self.inbox = bytearray()        # plaintext the host has not read yet
        self.recv_limit = recv_limit
        self.handshake: HandshakeComplete | None = None
        self.session: TlsClientSession | None = None
        self._transport = None
        self._paused = False
        self._task: asyncio.Task | None = None
        self._timer = None              # DTLS retransmission (a Timers handle)
        self._opened: asyncio.Future | None = None
        self._closed_event = asyncio.Event()
        self._peer_gone: str | None = None     # the peer's close while still opening (why)
        self._phase = "connect"         # how far _open got: connect, setup, handshake
        self._open_exc: BaseException | None = None    # behind a data-path failure while opening
        self._dead = False              # closed or aborted: a transport connecting now is dropped
        self._answered = False          # owner.on_opened() called
        self._awaiting = False          # the open's task waits for the handshake's end
        self._eof_reason: str | None = None     # how the transport ended (FIN / RST / ...)
        self._session_closed = False            # session.close() tried
        # Called when the kernel has taken the connection's write backlog down again
        # (online data mode holds the pty back meanwhile).
        self.on_writable: Callable[[], None] | None = None
        self._send_limit = 0            # set_send_limit's (0: none)
        self._acked = 0                 # bytes the peer's TCP acknowledged, as last measured
        self._acks_frozen = False       # the connection ended or went dark: no more ACKs seen
        # Faults (emulator/tools/control.py): plaintext counters for "state"; the
        # modem's open faults (io/network.NetFaults); a blackholed link moves no packet
        # (sent records pile up as an unsent backlog); SEND FAILs still due.
        self.bytes_sent = 0
        self.bytes_received = 0
        self.faults = None
        self.blackholed = False
        self._void = 0
        self.send_failures = 0
        self.net = None                 # this socket's NetConditions (None: the modem's)
        self._trace = getattr(getattr(owner, "modem", None), "trace", _no_trace)   # tools/trace.py
        self.kind = getattr(owner, "kind", "SSL")       # in log lines: SSL, TCP/IP
        # Plain sockets (emulator/sockets/plain_session.py) use the same machine: a UDP one
        # keeps its datagrams apart (keep_datagrams: read() returns at most one, and
        # last_from says who sent it); connect: how it reaches the network instead of
        # open_tcp/open_udp (a UDP SERVICE binds a local port); an accepted connection
        # (a TCP LISTENER's) is given its transport by the listener (accept()).
        self.keep_datagrams = False
        self._records: deque[list] = deque()     # [bytes left, sender] per datagram in inbox
        self._from = None                        # the sender of the datagram being received
        self.last_from = None                    # the sender of the datagram read last
        # A routed destination's real address -> the one the host sent to: a datagram from
        # it is shown as from there (the host never sees a route; UDP SERVICE, AT+QISEND).
        self.peer_names: dict[tuple, tuple[str, int]] = {}
        self._dest = None                        # where the datagram being sent goes (None: connected)
        self._connect = None
        self._fault_wait = None                  # what an injected refusal waits for (NetFaults)
        self._incoming = None                    # the settings of an accepted connection
        self._early = None                       # (settings, cache, key): start the session in _link_made
        self._early_exc: BaseException | None = None    # what starting it there raised
        self._dialled = None                     # the connect open() started (network.Dialled)
        self._round_trip_due: float | None = None   # a connect over latency is complete then
        self._reset_at_end = False               # the teardown resets the TCP connection (RST)
        self._deferred: deque[bytes] = deque()  # accepted bytes transmit_soon() holds
        self._deferred_bytes = 0
        self._flush_timer: asyncio.TimerHandle | None = None

    # -- state ------------------------------------------------------------------
    @property
    def state(self) -> State:
        """Read only: it changes through the socket's own methods (TRANSITIONS)."""
        return self._state

    def _go(self, event: str) -> bool:
        """Take the transition `event` from the current state; False when the table
        has none (a bug: raised under test, else logged and ignored)."""
        target = TRANSITIONS.get((self._state, event))
        if target is None:
            what = f"{self.kind} socket {self.client_id}: event {event!r} is not allowed in state {self._state.name}"
            if strict_states():
                raise IllegalTransition(what)
            log.error("%s (a bug: event ignored, state kept)", what)
            return False
        self._state = target
        return True

    def _link(self) -> _Link:
        return _Link(self._link_made, self._from_network, self._network_lost, self._writable,
                     self._peer_fin, self._freeze_acks)

    def _peer_fin(self) -> None:
        """The peer's FIN (asyncio closes the transport when this returns; connection_lost
        follows a loop turn later).  What SEND OK accepted -- or online mode read -- leaves
        first, the records the seal worker has still to make too (a half-closed TCP
        connection takes them), then the socket learns of the end at once: a send read in the
        same loop turn (the host's bytes right behind the FIN) is refused as after any peer
        close (567), not answered SEND OK and then dropped with the transport."""
        self.send_accepted()
        self._network_lost(FIN)

    def _link_factory(self, datagram: bool) -> Callable[[], asyncio.Protocol]:
        """The protocol factory of this socket's connection, with the network conditions
        (control API "net": this socket's, else the modem's) on the way when faults exist."""
        if self.faults is None:
            return self._link
        return self.faults.shaped(self._link, self._conditions, datagram)

    def _conditions(self):
        """The network conditions in force for this socket (with faults): its own, else
        the modem's."""
        return self.net or self.faults.conditions

    def _writable(self) -> None:
        if self.on_writable is not None:
            self.on_writable()

    # -- opening ----------------------------------------------------------------
    def open(self, router: Router, settings: TlsSettings, negotiate_timeout: float,
             cache=None, cache_key=None, total_timeout: float | None = None, connect=None) -> None:
        """total_timeout bounds name resolution + TCP connect + handshake together
        (the ML302's AT+QSSLOPEN <timeout>); None = the EC2x's separate limits.
        connect(protocol_factory, fault): an awaitable of (transport, protocol, remote)
        instead of open_tcp/open_udp (a UDP SERVICE's local bind)."""
        if not self._go("open"):
            return
        self._connect = connect
        self._trace("open", socket=self.client_id, host=self.host, port=self.port, dtls=settings.dtls)
        fault = self.faults.take_open(self.host) if self.faults is not None else None
        self._fault_wait = None
        if fault in ("refuse", "dns"):
            self._fault_wait = self.faults.failure_wait()
        elif fault is None and self.faults is not None and not settings.dtls:
            self._fault_wait = self.faults.connect_wait()
        # A TCP connect over a link with latency (control API "net") takes its round trip, the
        # SYN out and the SYN-ACK back, counted from the command: the open's answer and the
        # first flight wait for it.  (The real connect, on loopback, is made at once: the peer's
        # first bytes wait on the shaped link, the host cannot tell the difference.)  Decided
        # here, in the command's turn, as _dial decides whether the first flight leaves now.
        latency = self._conditions().latency_ms / 1000 if not settings.dtls and self._shaping() else 0
        self._round_trip_due = self._timers.monotonic() + 2 * latency if latency else None
        dialled = None
        if connect is None and fault is None and not settings.dtls:
            dialled = self._dial(router, settings, cache, cache_key)
        self._task = asyncio.ensure_future(
            self._open(router, settings, negotiate_timeout, cache, cache_key, total_timeout, fault, dialled))

    def name_family(self) -> int:
        """The address family the host name resolves to: its PDP context's (A records only
        on an IPv4 context, as AT+QIDNSGIP shows); any without a modem (unit tests)."""
        modem = getattr(self.owner, "modem", None)
        context = modem.pdp.find(self.pdp_id) if modem is not None else None
        return context.name_family if context is not None else socket.AF_UNSPEC

    def dialled_first(self, dialled: Dialled | None) -> None:
        """A connect the owner started for this socket before making it (SslService.
        _dial_first): open() takes it instead of dialling; closed with the socket if no
        open comes."""
        self._dialled = dialled

    def _dial(self, router, settings, cache, cache_key) -> Dialled | NetworkError | None:
        """The TCP connect started now, in the command's own turn, when no name has to be
        looked up (dial_now); when it is complete already and the link has no conditions
        to apply, the session starts too and its ClientHello leaves at once: the open's
        task, a loop turn later, only makes the transport.  (What starting the session
        raises, _open_steps raises after the connect, as from _link_made.)"""
        dialled = self._dialled                 # (dialled_first's, else none yet)
        try:
            if dialled is None:
                dialled = dial_now(router, self.host, self.port)
        except NetworkError as exc:
            return exc                          # answered by the open's task, after the OK
        self._dialled = dialled                 # closed with the socket until open_tcp has it
        if dialled is not None and dialled.done and not self._shaping() and self._fault_wait is None:
            # connected now (not a loop turn later) -- unless the modem's connect comes later:
            # a link with latency (its round trip), a replay's recorded moment; the address
            # is known (the ML302's AT+QSSLSTATE) when that connect is
            self.remote = dialled.address
            self._transport = dialled
            self._start_early(settings, cache, cache_key)
        return dialled

    def _shaping(self) -> bool:
        """Network conditions (the control API's "net") apply to this socket's packets now."""
        return self.faults is not None and self._conditions().active()

    def refuse(self, kind: str, reason: str, exc: BaseException | None = None) -> None:
        """An open that fails before any connection (a context that cannot be used): the
        failure answer comes on the next loop turn, after the command's OK."""
        if not self._go("open"):
            return
        asyncio.get_running_loop().call_soon(self._fail_open, kind, reason, exc)

    async def _open(self, router, settings, negotiate_timeout, cache, cache_key, total_timeout,
                    fault, dialled) -> None:
        # What an unexpected exception becomes, by how far the open got: EC2x 566 while
        # connecting, 552 (invalid parameter) while the TLS session is set up from the
        # context's settings, 566 during the handshake; the ML302's -1 for all.
        try:
            await self._open_steps(router, settings, negotiate_timeout, cache, cache_key, total_timeout,
                                   fault, dialled)
        except Exception as exc:
            if self._answered:         # after "+QSSLOPEN: <id>,0": it ends as a peer close would
                self._internal_error(exc)
                return
            kind = {"connect": "connect", "setup": "bad_config"}.get(self._phase, "protocol_error")
            what = {"connect": "connecting", "setup": "setting up TLS"}.get(self._phase, "in the handshake")
            self._fail_open(kind, f"unexpected {type(exc).__name__} while {what}: {exc}", exc)

    async def _open_steps(self, router, settings, negotiate_timeout, cache, cache_key, total_timeout,
                          fault, dialled) -> None:
        timers = self._timers
        # The EC2x's TCP connect gives up after 150 s; the ML302's <timeout> (10-300 s) bounds
        # lookup, connect and handshake together, and nothing else does.
        connect_timeout = CONNECT_TIMEOUT if total_timeout is None else total_timeout
        deadline = timers.monotonic() + (total_timeout if total_timeout is not None else float("inf"))
        factory = self._link_factory(settings.dtls)
        started = self.session is not None     # at the dial (open()): its first flight is out
        if started:                            # failures until the connect is done are the connect's
            resume_phase, self._phase = self._phase, "connect"
        due = self._round_trip_due             # (open(): the connect's round trip, if any)
        if not started and self._connect is None and fault is None and not settings.dtls and due is None:
            # A plain TCP connect: the session starts in _link_made, as soon as asyncio
            # has the transport (what _open_steps does after the connect, done earlier).
            self._early = (settings, cache, cache_key)
        try:
            if isinstance(dialled, NetworkError):
                if due is None:
                    raise dialled
                link = _failed(dialled)        # (the refusal, too, comes back a round trip later)
            elif self._connect is not None:
                # (taken once: the closure refers to this socket -- kept, it was a cycle)
                connect, self._connect = self._connect, None
                link = connect(factory, fault)
            elif settings.dtls:
                link = open_udp(router, self.host, self.port, factory, fault=fault, family=self.name_family())
            else:
                link = open_tcp(router, self.host, self.port, factory, fault=fault, dialled=dialled,
                                family=self.name_family())
            if self._fault_wait is not None:
                link = _after(self._fault_wait, link)
                self._fault_wait = None
            if due is not None:
                link = self._round_trip_after(link, due)
            # Name lookup and connect together, on the modem's time.
            transport, protocol, self.remote = await timers.wait_for(link, connect_timeout)
            transport = getattr(protocol, "shaped", None) or transport
        except asyncio.TimeoutError:
            self._fail_open("timeout", f"no connection to {self.host}:{self.port} within {connect_timeout:g} s")
            return
        except NetworkError as exc:
            self._fail_open(exc.kind, exc.reason)
            return
        self._dialled = None                   # open_tcp has made the transport on it
        if started:
            self._phase = resume_phase
        if self._dead:
            # Closed by the host while the connect completed (a wait can return the
            # result although its task was cancelled): the connection must not outlive it.
            transport.abort()
            return
        self._transport = transport
        if isinstance(settings, TlsSettings) and not settings.dtls:
            self._trace("connected", socket=self.client_id)     # (the handshake's start: replay)
        if fault == "stall":           # the server accepts TCP and then answers nothing
            self.blackholed = True
            self._freeze_acks()
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if sockname else 0
        peername = transport.get_extra_info("peername")
        if peername:                   # the IP really dialled, even when a route names a host
            self.remote = (peername[0], peername[1])
        negotiate_timeout = max(0.0, min(negotiate_timeout, deadline - timers.monotonic()))
        if self._early is not None or started:
            # The session started at the dial, or when the transport was made
            # (_link_made): the ClientHello left then, not loop turns later when this resumed.
            self._early = None
            exc, self._early_exc = self._early_exc, None
            if exc is not None:
                raise exc                      # as if raised here (_phase says how far it got)
        else:
            self._start_session(settings, cache, cache_key)
        self.pause_network(False)          # what the peer sent meanwhile (see _link_made)
        self._awaiting = True              # from now on _pump answers a finished handshake
        try:
            kind, reason = await timers.wait_for(asyncio.shield(self._opened), negotiate_timeout)
        except asyncio.TimeoutError:
            kind, reason = "timeout", f"TLS handshake not finished within {negotiate_timeout:g} s"
        finally:
            self._awaiting = False
        if self._dead or self._answered:
            return                             # (answered by _pump already, timer or not)
        if kind is not None:
            self._fail_open(kind, reason, self._open_exc)
            return
        self._established()

    async def _round_trip_after(self, link, due: float):
        """The connect `link` (open_tcp), complete at `due` on the modem's time (the command's
        time + the round trip) however long the loopback connect itself took; a connection
        made meanwhile goes with a cancelled open (timeout, close).  A refusal (the peer's
        RST) or a failed lookup comes back at `due` too."""
        try:
            result = await link
        except NetworkError:
            await self._wait_until(due)
            raise
        try:
            await self._wait_until(due)
        except BaseException:
            result[0].abort()
            raise
        return result

    async def _wait_until(self, due: float) -> None:
        left = due - self._timers.monotonic()
        if left > 0:                           # (a manual clock fires a timer only when moved)
            await self._timers.sleep(left)

    def _established(self) -> None:
        """The open's success answer ("+QSSLOPEN: <id>,0", CONNECT).  Given by _pump, in
        the network callback that finished the handshake, when the open's task already
        waits for it: the task itself would resume two loop turns later (the shield's
        callback, then its own wake-up), each a poll of the loop before the host hears."""
        self._go("established")
        hs = self.handshake
        self._trace("handshake", socket=self.client_id, version=hs.version, cipher=hs.cipher_name,
                    alpn=hs.alpn, resumed=hs.resumed)
        if log.isEnabledFor(logging.INFO):     # (the line on the way to the open's answer)
            # (a plain socket's "handshake" has a version, "TCP"/"UDP", and no cipher)
            detail = ", ".join(x for x in (hs.version, hs.cipher_name, hs.alpn and f"ALPN {hs.alpn}",
                                           hs.resumed and "resumed") if x)
            log.info("%s socket %d connected to %s:%d (%s)", self.kind, self.client_id, self.host, self.port,
                     detail)
        self._answered = True
        self.owner.on_opened(self, None, "")
        self._deliver_pending()

    def _fail_open(self, kind: str, reason: str, exc: BaseException | None = None) -> None:
        """The one failure answer of an open (exc: an unexpected exception; the owner logs
        it with its traceback).  A socket the host closed or aborted meanwhile keeps the
        state that close gave it; the owner ignores the answer then."""
        try:
            self._teardown()
        finally:
            if self._state is OPENING:
                self._go("open_failed")
            if not self._answered:
                self._answered = True
                self.owner.on_opened(self, kind, reason, exc)

    def _link_made(self, transport) -> None:
        """asyncio connected a transport for this socket (before open_tcp returns it)."""
        if self._dead:
            log.debug("%s socket %d: connected after it was closed: dropped", self.kind, self.client_id)
            transport.abort()
            return
        first, self._transport = self._transport, transport
        cap_reads(transport)
        if isinstance(transport, ShapedTransport) and not transport.datagram:
            # (a link with conditions: its bytes in flight count against the inbox limit, as
            # a TCP window closes at the buffer's free space)
            transport.receive_window = self._receive_window
        if isinstance(first, Dialled):         # the first flight's bytes the socket did not take
            pending, first.pending = first.pending, b""
            if pending:
                transport.write(pending)
        elif self._incoming is not None:
            self._accepted()
        elif self._early is not None:
            _no_delay(transport)
            self._start_early(*self._early)
        elif self.session is None and hasattr(transport, "pause_reading"):
            # The open's coroutine makes the session a loop turn later: until then the
            # kernel keeps what the peer sends (a server that speaks first, a FIN right
            # after accept), or those bytes and the peer's end would go to no session.
            transport.pause_reading()
            self._paused = True

    def _start_early(self, settings, cache, cache_key) -> None:
        """_start_session ahead of the open's task (at the dial, or in the transport's
        callback): what it raises, _open_steps raises after the connect."""
        try:
            self._start_session(settings, cache, cache_key)
        except Exception as exc:
            self._early_exc = exc

    def _start_session(self, settings, cache, cache_key) -> None:
        """The open's TLS (or plain) session on the connected transport, its first flight out."""
        self._opened = asyncio.get_running_loop().create_future()
        self._phase = "setup"
        self.session = getattr(self.owner, "session_factory", TlsClientSession)(settings, cache, cache_key)
        self.session.offload = offload.ENABLED      # (records sealed by the worker: _seal)
        self.session.start()
        self._phase = "handshake"
        self._pump()

    def accept(self, settings) -> asyncio.Protocol:
        """An incoming connection a listener accepts for this socket: the protocol to hand
        asyncio (the modem's network conditions apply as to any socket).  The socket is
        CONNECTED, and owner.on_accepted() called, when the transport is made."""
        if not self._go("open"):
            raise IllegalTransition(f"socket {self.client_id}: accept in state {self._state.name}")
        self._incoming = settings
        self._answered = True
        return self._link_factory(settings.dtls)()

    def _accepted(self) -> None:
        transport = self._transport
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if sockname else 0
        peername = transport.get_extra_info("peername")
        if peername:
            self.remote = (peername[0], peername[1])
        try:
            self.session = self.owner.session_factory(self._incoming, None, None)
            self.session.start()
            self._pump()
        except Exception as exc:
            log.error("socket %d: accepting failed: %s", self.client_id, exc, exc_info=exc)
            transport.abort()
            self._go("open_failed")
            self.owner.on_opened(self, "unknown", f"accepting failed: {exc}", exc)
            return
        self._go("established")
        self._trace("accepted", socket=self.client_id, remote=f"{self.remote[0]}:{self.remote[1]}"
                    if self.remote else "")
        self.owner.on_accepted(self)

    # -- data path --------------------------------------------------------------
    def _from_network(self, data: bytes, addr=None) -> None:
        if self.session is None or self.blackholed:
            return
        self._counter.received += len(data)
        if self._deferred:
            self.flush_deferred()      # what SEND OK accepted leaves before the peer's news
        self._from = addr
        try:
            self.session.receive(data)
            self._pump()
        except Exception as exc:
            self._internal_error(exc)

    def _network_lost(self, reason: str) -> None:
        if self.keep_datagrams and reason.startswith("UDP error"):
            # A plain UDP socket has no connection to lose: an ICMP error (port unreachable)
            # is only a datagram that went nowhere.
            log.debug("socket %d: %s (ignored: UDP)", self.client_id, reason)
            return
        if self.blackholed:
            # Nothing reaches the module on a blackholed link, not even the server's
            # FIN or RST: the host's timeouts (negotiatetime, close linger) decide.
            log.debug("%s socket %d: %s, unseen (blackhole)", self.kind, self.client_id, reason)
            return
        self._closed_event.set()
        if self._eof_reason is None:
            self._eof_reason = reason
        try:
            if self.session is not None and self._state in (OPENING, CONNECTED):
                self.session.receive(b"")      # EOF: lets the engine report what it knows
                self._pump()
        except Exception as exc:
            self._internal_error(exc)
        if self._state is OPENING and self._opened is not None and not self._opened.done():
            self._opened.set_result(("connect", f"server closed the connection during the handshake ({reason})"))
        elif self._state is CONNECTED:
            self._peer_closed(reason)

    def _internal_error(self, exc: Exception) -> None:
        """An unexpected exception on the data path (the TLS engine, a callback): handled
        as a TLS failure, logged once with its traceback.  While opening, the open fails
        (the owner logs it); an open socket reports closed."""
        reason = f"unexpected {type(exc).__name__}: {exc}"
        if self._opened is not None and not self._opened.done():
            self._open_exc = exc
            self._opened.set_result(("protocol_error", reason))
        else:
            log.error("%s socket %d: %s", self.kind, self.client_id, reason, exc_info=exc)
            self._peer_closed(reason)
        if self._transport is not None:
            self._transport.abort()

    def _pump(self) -> None:
        """Move the session's output to the network and its events to the owner."""
        session = self.session
        if session is None:
            return
        # Output that cannot leave: the connection was reset (a write failed, the transport
        # closes) -- a handshake that ends with the module's own flight (a resumed one: its
        # CCS and Finished come last) has failed then, as mbedtls_ssl_handshake's write does.
        unsent = False
        for chunk in session.outgoing():
            if self._transport is None or self._transport.is_closing():
                unsent = True
                break
            if self.blackholed:
                continue                       # (counted as plaintext: _transmit_now)
            self._counter.sent += len(chunk)
            if session.settings.dtls:
                if self._dest is not None:
                    self._transport.sendto(chunk, self._dest)
                else:
                    self._transport.sendto(chunk)
            else:
                self._transport.write(chunk)
                unsent = unsent or self._transport.is_closing()
        for event in session.events():
            if isinstance(event, HandshakeComplete):
                self.handshake = event
                if self._opened is not None and not self._opened.done():
                    if unsent and self._state is OPENING:
                        session.forget_resumption()
                        self._opened.set_result(("connect", "the connection was reset before the module's "
                                                            "last handshake flight left"))
                        continue
                    self._opened.set_result((None, ""))
                    if self._awaiting and not self._dead:
                        self._established()    # data after it in these bytes: news of an open socket
            elif isinstance(event, AppData):
                self._received(event.data)
            elif isinstance(event, PeerClosed):
                # The engine reports a bare TCP end as PeerClosed too: say which it was.
                if self._eof_reason is None:
                    self._end_tcp()
                self._peer_closed(self._eof_reason or CLOSE_NOTIFY)
            elif isinstance(event, TlsFailure):
                self._trace("tls_failure", socket=self.client_id, kind=event.kind, reason=event.reason)
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result((event.kind, event.reason))
                else:       # connected, or the handshake's success not yet answered (then
                    self._peer_closed(f"TLS failure: {event.reason}")   # reported right after it)
                    self._close_after_fatal()
        self._arm_timer()

    def _close_after_fatal(self) -> None:
        """A fatal TLS error on an open connection (an alert received or sent, a record
        that fails its MAC): both sides close at once (RFC 5246 7.2.2).  The alert Mbed TLS
        queued leaves first, then the FIN; what the host has not read stays readable."""
        transport = self._transport
        if transport is not None and not isinstance(transport, Dialled) and not transport.is_closing():
            transport.close()

    def _end_tcp(self) -> None:
        """After the peer's close_notify the TLS session is over: nothing more can be sent
        or received on it (python-mbedtls resets its context when it reads the alert, so
        not even our close_notify).  Send our FIN now rather than leave the connection
        open until the host's AT+QSSLCLOSE; the peer's own FIN then ends it (a peer that
        never closes is dropped by AT+QSSLCLOSE)."""
        transport = self._transport
        if (transport is not None and not transport.is_closing() and not self.session.settings.dtls
                and transport.can_write_eof()):
            self._read_to_the_end(transport)
            try:
                transport.write_eof()
            except OSError as exc:             # reset right after its close_notify: gone already
                log.debug("%s socket %d: no FIN after the peer's close_notify: %s", self.kind, self.client_id, exc)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.session.next_timeout() if self.session else None
        if delay is not None:
            self._timer = self._timers.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is not None:
            try:
                self.session.handle_timeout()
                self._pump()
            except Exception as exc:
                self._internal_error(exc)

    def _received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        was_empty = not self.inbox
        self.inbox += data
        if self.keep_datagrams:
            self._records.append([len(data), self.peer_names.get(self._from, self._from)])
        self._trace("received", socket=self.client_id, data=data)
        if len(self.inbox) >= self.recv_limit:
            self.pause_network(True)
        if self._state is CONNECTED:
            self.owner.on_data(self, was_empty)

    def _deliver_pending(self) -> None:
        """Data that arrived with the last handshake flight."""
        if self.inbox:
            self.owner.on_data(self, True)
        if self._peer_gone is not None:
            self._peer_closed(f"{self._peer_gone} right after the handshake")

    def _read_to_the_end(self, transport) -> None:
        """Reading goes on whatever the inbox holds (our FIN is out or going: the peer's own
        must be seen), a shaped link's receive window included."""
        if isinstance(transport, ShapedTransport):
            transport.receive_window = None
        if self._paused:
            transport.resume_reading()
            self._paused = False
        elif isinstance(transport, ShapedTransport):
            transport.window_check()

    def _receive_window(self) -> int:
        """What the inbox still takes (a shaped link's window: ShapedTransport)."""
        return self.recv_limit - len(self.inbox)

    def read(self, n: int) -> bytes:
        if self.keep_datagrams and self._records:
            record = self._records[0]        # one datagram at most (the rest of it stays)
            self.last_from = record[1]
            n = min(n, record[0])
            record[0] -= n
            if record[0] <= 0:
                self._records.popleft()
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        self.pause_network(False)                # resumes once the inbox is half empty
        if not self._paused and isinstance(self._transport, ShapedTransport):
            self._transport.window_check()       # (the read opened the link's window)
        return data

    def send(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        """to: the destination of a datagram from an unconnected socket (UDP SERVICE)."""
        self.account_send(data)
        self.transmit(data, to)

    def account_send(self, data: bytes) -> None:
        """The first half of send(): the bytes are the socket's now (its counters, the
        trace); transmit() encrypts and writes them."""
        self.bytes_sent += len(data)
        self._trace("sent", socket=self.client_id, data=data)

    def transmit(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        """The second half of send(): into the session and out to the network (after
        what transmit_soon() still holds: the bytes keep their order)."""
        if self._deferred:
            self.flush_deferred()
        self._transmit_now(data, to)

    def _transmit_now(self, data: bytes, to: tuple[str, int] | None = None) -> None:
        if self.blackholed:
            # Never acknowledged: it stays "unsent", counted as the host's bytes, as the send
            # buffer is (TLS and DTLS records add different overheads: SEND FAIL must come at
            # the same point on every kind of socket).
            self._void += len(data)
        self.session.send(data)
        self._dest = to
        try:
            self._pump()
        finally:
            self._dest = None
        self._seal()

    def _seal(self) -> None:
        """A seal job the session made (a big send: transparent mode's slices) to the
        worker thread, which encrypts while the loop reads on (emulator/io/offload.py);
        its records leave from _sealed."""
        session = self.session
        job = session.take_job() if session is not None else None
        if job is not None:
            offload.WORKER.submit(job.run, asyncio.get_running_loop(), partial(self._sealed, session, job))

    def _sealed(self, session, job) -> None:
        if session is not self.session:
            return
        try:
            session.settle(job)            # (a no-op when the session took it in already)
            self._pump()
            self._seal()                   # what was queued behind it
        except Exception as exc:
            self._internal_error(exc)
            return
        # Online flow control: the link paused the pty when send_backlog() passed the limit,
        # and only the transport's resume_writing resumes it -- which comes only if the
        # transport's own buffer went above the limit.  With the job's bytes counted in the
        # backlog, the sum can pass it while neither part does: with no job left and the
        # backlog within the limit (the transport not above its high water, so no
        # resume_writing will come), the link reads again now.
        limit = self._send_limit
        if limit and session.unsealed() == 0 and self.send_backlog() <= limit:
            self._writable()

    def transmit_soon(self, data: bytes) -> None:
        """transmit() a little later: after "SEND OK" the host turns round with its next
        command, and encrypting and writing these bytes at once would make that command
        wait.  They leave when the port next waits for the host (a data prompt is out:
        flush_deferred() from the service) or after FLUSH_AFTER, whichever comes first.
        Anything else this socket writes (transmit, close_notify) sends them first;
        send_backlog() counts them.  (On a shaped link -- network conditions -- at once:
        the link's own pacing decides when they arrive, on the modem's time.)"""
        if self._shaping():
            self.transmit(data)
            return
        self._deferred.append(data)
        self._deferred_bytes += len(data)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(FLUSH_AFTER, self.flush_deferred)

    def flush_deferred(self) -> None:
        """What transmit_soon() holds, out now (in order)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._deferred:
            self._flush_deferred()

    def _flush_deferred(self) -> None:
        while self._deferred:
            data = self._deferred.popleft()
            self._deferred_bytes -= len(data)
            if self.session is None or self.session.state != "established":
                log.info("%s socket %d: %d bytes accepted (SEND OK) but the connection ended before "
                         "they left: dropped", self.kind, self.client_id, len(data) + self._deferred_bytes)
                self._deferred.clear()
                self._deferred_bytes = 0
                return
            try:
                self._transmit_now(data)
            except Exception as exc:           # (from a loop callback: never an unhandled error)
                self._internal_error(exc)
                return

    def send_accepted(self) -> None:
        """What SEND OK accepted leaves now, in order, when the connection is about to end
        otherwise than by the host's close (a fault, the bearer's loss): the bytes
        transmit_soon() holds and the records the seal worker has still to make.  On a
        module they were in the TCP send buffer, sent as the window allowed, before the
        command or the event that ends the connection was even read."""
        if self._deferred:
            self.flush_deferred()
        if self.session is not None and self.session.unsealed():
            self.session.seal_all()
            self._pump()

    def take_send_failure(self) -> bool:
        """A SEND FAIL injected by the control API is due (counts it down)."""
        if self.send_failures > 0:
            self.send_failures -= 1
            return True
        return False

    def drop(self, how: str) -> bool:
        """A network fault on a connected socket (the control API's "drop"): "close" the
        server ends the connection (close_notify + FIN), "rst" it is reset, "blackhole"
        packets silently stop both ways (sends pile up unacknowledged until the send
        buffer is full).  The first two reach the host as any peer close does (the
        dialect's "closed" URC, NO CARRIER when online).  False: not connected."""
        if self._state is not CONNECTED:
            return False
        self._freeze_acks()            # (the packets stop, or the connection ends, now)
        if how == "blackhole":
            # What the host sent before the fault left before it, as when it was encrypted
            # at once: the bytes transmit_soon() holds, the seal jobs still out.
            self.send_accepted()
            self.blackholed = True
            log.info("%s socket %d: network fault: packets stop (blackhole)", self.kind, self.client_id)
            return True
        reason = CLOSE_NOTIFY if how == "close" else RST
        self._eof_reason = reason
        self.send_accepted()          # it was answered: a reset cannot take it back
        if self._transport is not None:
            self._abort_transport(reset=how == "rst")
        self._peer_closed(f"{reason} (fault injected)")
        return True

    def set_send_limit(self, limit: int) -> None:
        """Past `limit` unsent bytes the transport reports pause/resume_writing (online data
        mode stops reading the pty until on_writable)."""
        self._send_limit = limit
        if self._transport is not None and hasattr(self._transport, "set_write_buffer_limits"):
            self._transport.set_write_buffer_limits(high=limit, low=limit // 4)

    def pause_network(self, paused: bool, port_hold_only: bool = False) -> None:
        """Stop (or resume) reading from the network: past the inbox limit (ssl.recv_buffer,
        resumed below half of it as the host reads -- empty, for a limit of one byte), and while the host does not read its port
        (online data mode).  port_hold_only: the resume lifts a hold for the port alone (the
        host left online mode), so the socket reads on up to the inbox limit itself rather
        than waiting for the reads' half-way mark, which in command mode might never come
        before the host reads (a peer's close unseen)."""
        transport = self._transport
        if transport is None or not hasattr(transport, "pause_reading") or transport.is_closing():
            return
        if paused and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif not paused and self._paused and len(self.inbox) < (self.recv_limit if port_hold_only
                                                                  else max(1, self.recv_limit // 2)):
            transport.resume_reading()
            self._paused = False

    def send_backlog(self) -> int:
        """Bytes accepted but not yet taken by the kernel (what "send buffer full" measures)."""
        held = self._void + self._deferred_bytes
        if self.session is not None and not self.blackholed:
            held += self.session.unsealed()    # (with a seal job in flight, behind it; on a
                                               # blackholed link _void counts them already)
        if self._transport is None:
            return held
        return self._transport.get_write_buffer_size() + held

    def acked(self) -> int:
        """Bytes of the SEND OKs the peer's TCP has acknowledged (AT+QISEND=<id>,0): measured
        (SIOCOUTQ) while the connection lives, never going back, and frozen at its end --
        the peer's FIN or RST, a drop or blackhole fault, the emulator's own teardown --
        where the module's own count stops too.  A datagram socket: what left (the kernel
        took).  (The kernel's bytes and SEND OK's are the same count on a plain socket only.)"""
        if not self._acks_frozen:
            self._measure_acks()
        return self._acked

    def _measure_acks(self) -> None:
        kernel = tcp_unacked(self._transport)
        if kernel is None and (self.session is None or not self.session.settings.dtls):
            return                          # TCP closed already, or not yet connected: kept
        live = self.bytes_sent - self.send_backlog() - (kernel or 0)
        self._acked = max(self._acked, min(live, self.bytes_sent))

    def _freeze_acks(self) -> None:
        """The connection ends (or goes dark) now: its last acknowledgement count stays.
        (Called from the transport's end too: whatever goes wrong, the end goes on.)"""
        if self._acks_frozen:
            return
        self._acks_frozen = True
        try:
            self._measure_acks()
        except Exception:
            log.exception("%s socket %d: cannot read the acknowledged count", self.kind, self.client_id)

    def _peer_closed(self, reason: str) -> None:
        if self._state is not CONNECTED:
            # Expected races, not transitions: still opening (the close is reported right
            # after the handshake), or closed already (the later report of the same end).
            if self._state is OPENING and self._peer_gone is None:
                self._peer_gone = reason
            return
        self._go("peer_closed")
        self._trace("peer_closed", socket=self.client_id, reason=reason)
        log.info("%s socket %d: %s", self.kind, self.client_id, reason)
        self.owner.on_closed(self, reason)

    def bearer_lost(self, reason: str) -> None:
        """The PDP context went away: the connection is dropped.  An open fails ("pdp");
        a connected socket reports closed and waits for the host's AT+QSSLCLOSE.  What
        SEND OK accepted leaves first (a host's AT+CFUN=0 pipelined behind its data)."""
        if self._state is CONNECTED and not self.blackholed:
            self.send_accepted()
        self._stop_opening()
        self._teardown(let_go=True)
        if self._state is OPENING:
            self._fail_open("pdp", reason)
        elif self._state in (CONNECTED, CLOSING):
            was_connected = self._state is CONNECTED
            self._go("bearer_lost")
            if was_connected:
                log.info("%s socket %d: %s", self.kind, self.client_id, reason)
                self.owner.on_closed(self, reason)

    # -- closing ----------------------------------------------------------------
    async def close(self, timeout: float) -> None:
        """Host-initiated close: close_notify, then wait up to timeout for the
        TCP close to complete (0 = abort at once).  A socket that never connected
        is dropped at once: the note's advice for a +QSSLOPEN that never comes; so
        is one the peer closed already (after its close_notify we sent our FIN).
        Whatever goes wrong, the connection is dropped and the call returns: the
        host's AT+QSSLCLOSE always gets its answer."""
        if self._state is CONNECTED:
            self.flush_deferred()              # what SEND OK accepted leaves before close_notify
        self._stop_opening()
        was_connected = self._state is CONNECTED
        self._trace("close", socket=self.client_id)
        if self._state is not INITIAL:
            self._go("close")             # the TCP close that follows is ours, not the peer's
        try:
            if self.session is not None and was_connected:
                self._close_session()
                self._pump()
                await self._linger(timeout)
        except Exception:
            log.exception("%s socket %d: error while closing (connection dropped)", self.kind, self.client_id)
        finally:
            self._teardown(let_go=True)
            if self._state is CLOSING:
                self._go("closed")

    async def _linger(self, timeout: float) -> None:
        transport = self._transport
        if transport is None or self.session.settings.dtls:
            return
        if timeout <= 0:
            # AT+QSSLCLOSE's `0` = abort at once (docs/behaviour.md: RST); a plain socket's
            # AT+QICLOSE=<id>,0 closes at once, with its FIN
            self._reset_at_end = isinstance(self.session.settings, TlsSettings)
            return
        if transport.is_closing() and not self.blackholed:     # (a blackhole hides the end)
            if transport.get_write_buffer_size() and not self._closed_event.is_set():
                # A close under way with bytes still to leave (a shaped link's queue behind
                # the peer's half-close): they go first, then the connection ends; the
                # teardown's abort would drop them.
                try:
                    await self._timers.wait_for(self._closed_event.wait(), timeout)
                except asyncio.TimeoutError:
                    log.info("%s socket %d: unsent bytes still waiting after the close timeout: aborted",
                             self.kind, self.client_id)
                    self._reset_at_end = True
            return
        # Linger: send FIN after close_notify and wait up to timeout for the peer's own
        # close (its FIN -> connection_lost).  transport.close() would call
        # connection_lost itself at once, so the wait would end before the peer did anything.
        self._read_to_the_end(transport)
        if not self.blackholed:            # a blackholed FIN never arrives: the full linger
            try:
                transport.write_eof()
            except OSError as exc:         # (reset meanwhile, its RST not read yet: nothing to wait for)
                log.debug("%s socket %d: no FIN at the close: %s", self.kind, self.client_id, exc)
                return
        try:
            await self._timers.wait_for(self._closed_event.wait(), timeout)
        except asyncio.TimeoutError:
            log.info("%s socket %d: peer still open after the close timeout: aborted", self.kind, self.client_id)
            self._reset_at_end = True

    def _close_session(self) -> None:
        """session.close() once (close_notify when established), however it ends."""
        if self.session is None or self._session_closed:
            return
        self._session_closed = True
        self.session.close()

    def abort(self) -> None:
        self._stop_opening()
        # The modem's own end of the connection (the bearer lost under a close's linger, a
        # restart): the linger is over, whatever the link hides -- on a blackholed link no
        # connection_lost reaches _network_lost's event.
        self._closed_event.set()
        self._teardown()
        self._go("abort")

    def leave(self) -> None:
        """The host closed this socket (its linger follows, close()): no more open steps."""
        self._stop_opening()

    def _stop_opening(self) -> None:
        """No more open steps: a transport that connects from now on is dropped."""
        self._dead = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        # The task's CancelledError keeps its frames, and they this socket: a cycle the
        # cyclic GC collects late, with the TLS session's C memory in it (soak RSS).
        self._task = None

    def _abort_transport(self, reset: bool, let_go: bool = False) -> None:
        """The transport dropped now.  Reset (RST) when asked -- an abort: the close timeout
        run out, RST by docs/behaviour.md, the control op drop rst -- or when bytes are
        dropped unsent: never a FIN after the part of a record the kernel held (the server
        would take a cut stream for a clean end).  let_go: a close or the bearer's loss, not
        an abort (a reboot): datagrams still on a shaped link arrive."""
        if not reset and let_go and getattr(self._transport, "datagram", False):
            self._transport.let_go()           # (a shaped link, "net": datagrams on their way
            return                             # still arrive; an abort -- a reboot -- loses them)
        if reset or self._transport.get_write_buffer_size():
            reset_on_close(self._transport)
        self._transport.abort()

    def _teardown(self, let_go: bool = False) -> None:
        self._dead = True
        self._connect = None                   # (a closure referring to this socket)
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._deferred.clear()                 # accepted, never sent: the connection is gone
        self._deferred_bytes = 0
        if self._dialled is not None:
            self._dialled.abort()              # a connect open() started that no task took over
            self._dialled = None               # (a no-op once open_tcp has it: it closes it)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._freeze_acks()                # (while its socket is open: connection_lost is later)
            self._abort_transport(reset=self._reset_at_end, let_go=let_go)
        if self.session is not None and self.session.state in ("handshaking", "established"):
            try:
                self._close_session()
            except Exception:
                log.exception("%s socket %d: error while closing the TLS session", self.kind, self.client_id)
        # The shaped transport (control API "net") refers back to this socket through the
        # protocol's callbacks: drop it, or every closed socket and its TLS context (~50 KiB
        # of C memory) waited for the cyclic garbage collector (the soak saw RSS grow); so
        # does its receive window (a method of this socket).
        if isinstance(self._transport, ShapedTransport):
            self._transport.receive_window = None
        self._transport = None
