"""One SSL client socket: its state machine, its TLS session and its buffers.

    INITIAL --open()--> OPENING --handshake done--> CONNECTED --peer close--> CLOSING
        ^                  |  failure (URC with error)       |                   |
        +------------------+---------- close() --------------+-------------------+

The asyncio transport only moves bytes; the sans-IO TlsClientSession does TLS.
The owner (the per-modem SSL service) receives callbacks and turns them into
URCs in the imitated module's format.  Received plaintext waits in `inbox`
until the host reads it; past the profile's receive buffer the socket stops
reading from the network (TCP flow control) instead of dropping data.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsClientSession, TlsFailure, TlsSettings

from ..network import NetworkError, Router, open_tcp, open_udp

log = logging.getLogger("emulator.ssl")

INITIAL, OPENING, CONNECTED, CLOSING = 0, 1, 2, 4
CONNECT_TIMEOUT = 150.0          # the note: "maximum network response time of 150 s"


class SocketOwner(Protocol):
    def on_opened(self, sock: "SslSocket", error_kind: str | None, reason: str) -> None: ...
    def on_data(self, sock: "SslSocket", was_empty: bool) -> None: ...
    def on_closed(self, sock: "SslSocket", reason: str) -> None: ...


class _Link(asyncio.Protocol):
    """asyncio protocol feeding a socket (TCP stream or DTLS datagrams)."""

    def __init__(self, sock: "SslSocket") -> None:
        self.sock = sock

    def data_received(self, data: bytes) -> None:
        self.sock._from_network(data)

    def datagram_received(self, data: bytes, addr) -> None:
        self.sock._from_network(data)

    def error_received(self, exc: Exception) -> None:
        self.sock._network_lost(f"UDP error: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.sock._network_lost(f"connection lost: {exc}" if exc else "peer closed the TCP connection")


class SslSocket:
    def __init__(self, owner: SocketOwner, client_id: int, *, pdp_id: int, ctx_id: int,
                 host: str, port: int, access_mode: int, recv_limit: int) -> None:
        self.owner = owner
        self.client_id = client_id
        self.pdp_id = pdp_id
        self.ctx_id = ctx_id
        self.host = host
        self.port = port
        self.access_mode = access_mode
        self.state = INITIAL
        self.local_port = 0
        self.remote = None              # the routed (IP, port) really connected to
        self.inbox = bytearray()        # plaintext the host has not read yet
        self.recv_limit = recv_limit
        self.handshake: HandshakeComplete | None = None
        self.session: TlsClientSession | None = None
        self._transport = None
        self._paused = False
        self._task: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._opened: asyncio.Future | None = None
        self._closed_event = asyncio.Event()
        self._peer_gone = False

    # -- opening ----------------------------------------------------------------
    def open(self, router: Router, settings: TlsSettings, negotiate_timeout: float,
             cache=None, cache_key=None, total_timeout: float | None = None) -> None:
        """total_timeout bounds name resolution + TCP connect + handshake together
        (the ML302's AT+QSSLOPEN <timeout>); None = the EC2x's separate limits."""
        self.state = OPENING
        self._task = asyncio.ensure_future(
            self._open(router, settings, negotiate_timeout, cache, cache_key, total_timeout))

    async def _open(self, router, settings, negotiate_timeout, cache, cache_key, total_timeout) -> None:
        loop = asyncio.get_running_loop()
        connect_timeout = CONNECT_TIMEOUT if total_timeout is None else min(CONNECT_TIMEOUT, total_timeout)
        deadline = loop.time() + (total_timeout if total_timeout is not None else float("inf"))
        try:
            if settings.dtls:
                link = open_udp(router, self.host, self.port, lambda: _Link(self))
            else:
                link = open_tcp(router, self.host, self.port, lambda: _Link(self), connect_timeout)
            # wait_for also bounds the name lookup, which open_tcp's own timeout does not cover.
            transport, _, self.remote = await asyncio.wait_for(link, connect_timeout)
        except asyncio.TimeoutError:
            self._fail_open("timeout", f"no connection to {self.host}:{self.port} within {connect_timeout:g} s")
            return
        except NetworkError as exc:
            self._fail_open(exc.kind, exc.reason)
            return
        self._transport = transport
        sockname = transport.get_extra_info("sockname")
        self.local_port = sockname[1] if sockname else 0
        peername = transport.get_extra_info("peername")
        if peername:                   # the IP really dialled, even when a route names a host
            self.remote = (peername[0], peername[1])
        negotiate_timeout = max(0.0, min(negotiate_timeout, deadline - loop.time()))
        self._opened = asyncio.get_running_loop().create_future()
        self.session = TlsClientSession(settings, cache, cache_key)
        self.session.start()
        self._pump()
        try:
            kind, reason = await asyncio.wait_for(asyncio.shield(self._opened), negotiate_timeout)
        except asyncio.TimeoutError:
            kind, reason = "timeout", f"TLS handshake not finished within {negotiate_timeout:g} s"
        if kind is not None:
            self._fail_open(kind, reason)
            return
        self.state = CONNECTED
        hs = self.handshake
        log.info("SSL socket %d connected to %s:%d (%s, %s%s%s)", self.client_id, self.host, self.port,
                 hs.version, hs.cipher_name, f", ALPN {hs.alpn}" if hs.alpn else "",
                 ", resumed" if hs.resumed else "")
        self.owner.on_opened(self, None, "")
        self._deliver_pending()

    def _fail_open(self, kind: str, reason: str) -> None:
        self._teardown()
        self.state = INITIAL
        self.owner.on_opened(self, kind, reason)

    # -- data path --------------------------------------------------------------
    def _from_network(self, data: bytes) -> None:
        if self.session is None:
            return
        self.session.receive(data)
        self._pump()

    def _network_lost(self, reason: str) -> None:
        self._closed_event.set()
        if self.session is not None and self.state in (OPENING, CONNECTED):
            self.session.receive(b"")      # EOF: lets the engine report what it knows
            self._pump()
        if self.state == OPENING and self._opened is not None and not self._opened.done():
            self._opened.set_result(("connect", f"server closed the connection during the handshake ({reason})"))
        elif self.state == CONNECTED:
            self._peer_closed(reason)

    def _pump(self) -> None:
        """Move the session's output to the network and its events to the owner."""
        session = self.session
        if session is None:
            return
        for chunk in session.outgoing():
            if self._transport is None or self._transport.is_closing():
                break
            if session.settings.dtls:
                self._transport.sendto(chunk)
            else:
                self._transport.write(chunk)
        for event in session.events():
            if isinstance(event, HandshakeComplete):
                self.handshake = event
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result((None, ""))
            elif isinstance(event, AppData):
                self._received(event.data)
            elif isinstance(event, PeerClosed):
                self._peer_closed("peer sent close_notify")
            elif isinstance(event, TlsFailure):
                if self._opened is not None and not self._opened.done():
                    self._opened.set_result((event.kind, event.reason))
                elif self.state == CONNECTED:
                    self._peer_closed(f"TLS failure: {event.reason}")
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.session.next_timeout() if self.session else None
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.session is not None:
            self.session.handle_timeout()
            self._pump()

    def _received(self, data: bytes) -> None:
        was_empty = not self.inbox
        self.inbox += data
        if len(self.inbox) >= self.recv_limit and self._transport is not None and not self._paused:
            if hasattr(self._transport, "pause_reading"):
                self._transport.pause_reading()
                self._paused = True
        if self.state == CONNECTED:
            self.owner.on_data(self, was_empty)

    def _deliver_pending(self) -> None:
        """Data that arrived with the last handshake flight."""
        if self.inbox:
            self.owner.on_data(self, True)
        if self._peer_gone:
            self.owner.on_closed(self, "peer closed right after the handshake")

    def read(self, n: int) -> bytes:
        data = bytes(self.inbox[:n])
        del self.inbox[:n]
        if self._paused and len(self.inbox) < self.recv_limit // 2 and self._transport is not None:
            self._transport.resume_reading()
            self._paused = False
        return data

    def send(self, data: bytes) -> None:
        self.session.send(data)
        self._pump()

    def send_backlog(self) -> int:
        """Bytes accepted but not yet taken by the kernel (what "send buffer full" measures)."""
        if self._transport is None:
            return 0
        return self._transport.get_write_buffer_size()

    def _peer_closed(self, reason: str) -> None:
        if self.state != CONNECTED:
            if self.state == OPENING:
                self._peer_gone = True
            return
        self.state = CLOSING
        log.info("SSL socket %d: %s", self.client_id, reason)
        self.owner.on_closed(self, reason)

    # -- closing ----------------------------------------------------------------
    async def close(self, timeout: float) -> None:
        """Host-initiated close: close_notify, then wait up to timeout for the
        TCP close to complete (0 = abort at once).  A socket that never connected
        is dropped at once: the note's advice for a +QSSLOPEN that never comes."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        was_connected = self.state == CONNECTED
        self.state = CLOSING              # the TCP close that follows is ours, not the peer's
        if self.session is not None and was_connected:
            self.session.close()
            self._pump()
        transport = self._transport
        if (was_connected and transport is not None and timeout > 0 and not transport.is_closing()
                and not self.session.settings.dtls):
            # Linger: send FIN after close_notify and wait up to timeout for the peer's own
            # close (its FIN -> connection_lost).  transport.close() would call
            # connection_lost itself at once, so the wait would end before the peer did anything.
            if self._paused:
                transport.resume_reading()     # or the peer's FIN would never be seen
                self._paused = False
            transport.write_eof()
            try:
                await asyncio.wait_for(self._closed_event.wait(), timeout)
            except asyncio.TimeoutError:
                log.info("SSL socket %d: peer still open after the close timeout: aborted", self.client_id)
        self._teardown()
        self.state = INITIAL

    def abort(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._teardown()
        self.state = INITIAL

    def _teardown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        if self.session is not None and self.session.state in ("handshaking", "established"):
            self.session.close()
