"""The plain TCP/UDP sockets of one modem (the EC2x TCP(IP) AT commands, AT+QIOPEN & co.).

The same socket layer as SSL (emulator/sockets/ssl_socket.py: states, deliveries, flow
control, faults, counters, trace) with a PlainSession underneath instead of TLS
(emulator/sockets/plain_session.py); this service gives it the TCP/IP wording
(+QIOPEN, +QIURC) and the service types:

    "TCP"           a client connection (open_tcp through the Router)
    "UDP"           a connected UDP socket (open_udp); one AT+QISEND = one datagram
    "TCP LISTENER"  a server on 127.0.0.1 (TcpListener below); each connection it
                    accepts is a "TCP INCOMING" socket on the lowest free id
    "UDP SERVICE"   an unconnected UDP socket bound on 127.0.0.1; datagrams keep their
                    sender, AT+QISEND names the destination

Listeners bind router.listen_address(<local_port>): a --listen mapping, else
127.0.0.1:<local_port> itself.

One id space: AT+QIOPEN connectIDs and AT+QSSLOPEN clientIDs are one pool of sockets
(ids_in_use); an id either uses is "socket identity has been used" (563) to the other.
AT+QIGETERROR is one store for both (the SSL service's set_error/last_error).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

from emulator.io.network import NetworkError, bind_udp, listen_tcp, net_faults, open_tcp, open_udp
from emulator.logsafe import get_logger
from emulator.sockets.delivery import RECV_NEWS
from emulator.sockets.dialects import Dialect
from emulator.sockets.plain_session import PlainSession, PlainSettings
from emulator.sockets.qicfg import QicfgSettings
from emulator.sockets.service import AT_PORT, ONLINE_BUFFER, SocketService, ssl_service
from emulator.sockets.ssl_socket import CLOSING, CONNECT_TIMEOUT, INITIAL, OPENING, SslSocket

log = get_logger("emulator.tcpip")

SERVICE_TYPES = ("TCP", "UDP", "TCP LISTENER", "UDP SERVICE")
LISTENING = 3                 # <socket_state> of a TCP LISTENER (the manual's "listening")

# What +QIOPEN: <id>,<err> reports for each failure (the manual's error table, §4).
ERRORS = {"dns": 565, "connect": 566, "timeout": 569, "pdp": 570, "bind": 556, "unknown": 550,
          "protocol_error": 566, "bad_config": 552}


@dataclass(frozen=True)
class TcpipDialect(Dialect):
    """The TCP/IP wording: the SSL dialect's fields plus what only listeners say (a
    SIMCom-style family would be another instance with its own words)."""
    incoming_urc: str = '+QIURC: "incoming",{id},{server},"{ip}",{port}'
    incoming_full_urc: str = '+QIURC: "incoming full"'

    def incoming(self, sock, ip: str, port: int) -> str:
        return self.incoming_urc.format(id=sock.client_id, server=sock.server_id, ip=ip, port=port)

    def recv(self, sock) -> str:
        line = super().recv(sock)
        qicfg = getattr(sock.owner, "qicfg", None)
        if qicfg is not None and qicfg.recv_length_in_urc:      # AT+QICFG="recvind",1
            line += f",{len(sock.inbox)}"
        return line

    def push(self, sock, n: int) -> str:
        line = super().push(sock, n)
        if getattr(sock, "service_type", "") == "UDP SERVICE" and sock.last_from:
            line += f',"{sock.last_from[0]}",{sock.last_from[1]}'
        return line


TCPIP = TcpipDialect(name="tcpip", options=(), opened_urc="+QIOPEN: {id},{code}",
                     recv_urc='+QIURC: "recv",{id}', push_urc='+QIURC: "recv",{id},{n}',
                     closed_urc='+QIURC: "closed",{id}')


class TcpipSocket(SslSocket):
    """An AT+QIOPEN socket: the SSL socket's machine with the TCP/IP service's fields."""

    def __init__(self, *args, service_type: str, shown_local_port: int = 0, server_id: int | None = None,
                 **kwargs) -> None:
        super().__init__(*args, ctx_id=0, **kwargs)
        self.service_type = service_type
        self.shown_local_port = shown_local_port      # the host's <local_port> (0: chosen by the stack)
        self.server_id = self.client_id if server_id is None else server_id
        self.keep_datagrams = service_type in ("UDP", "UDP SERVICE")


class TcpListener:
    """A "TCP LISTENER": a server socket on loopback; what it accepts become TCP INCOMING
    sockets with the listener's access mode."""

    service_type = "TCP LISTENER"
    host = "127.0.0.1"
    port = 0

    def __init__(self, svc: "TcpipService", connect_id: int, pdp_id: int, local_port: int, delivery) -> None:
        self.svc = svc
        self.client_id = connect_id
        self.server_id = connect_id
        self.pdp_id = pdp_id
        self.ctx_id = 0
        self.shown_local_port = local_port
        self.delivery = delivery
        self.state = INITIAL
        self.held: list | None = None         # accepted before "+QIOPEN: <id>,0" was written
        self.server: asyncio.AbstractServer | None = None
        self.lost: str | None = None          # the bearer went before the open's answer (why)
        self.announced = False                # "+QIOPEN: <id>,0" written: the host knows it

    async def start(self) -> int:
        try:
            self.server = await listen_tcp(self.svc.modem.network, self.shown_local_port, self._protocol)
        except NetworkError as exc:
            log.warning("TCP LISTENER %d: %s", self.client_id, exc.reason)
            return ERRORS["bind"]
        return 0

    async def serve(self) -> None:
        """Accept connections from now on; their "incoming" URCs wait until the host has
        been told the listener is up (announce()), none is misreported as "incoming full"
        while the listener starts, and a client connecting as soon as the host saw
        "+QIOPEN: <id>,0" finds it listening."""
        self.state = LISTENING
        self.held = []
        await self.server.start_serving()

    def announce(self, urc: str) -> None:
        """"+QIOPEN: <id>,0", then the connections accepted while it was due."""
        self.announced = True
        self.svc.modem.urc(urc, about=self.svc.news(self.client_id))
        held, self.held = self.held or [], None
        for sock in held:
            self.svc.on_accepted(sock)

    def _protocol(self):
        return self.svc.incoming(self)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        # Connections accepted while "+QIOPEN: <id>,0" was due and never announced: the
        # host never heard of them, so they go without a word and free their ids.
        held, self.held = self.held or [], None
        for sock in held:
            if self.svc.holds(sock):
                del self.svc.sockets[sock.client_id]
            sock.abort()

    def bearer_lost(self, reason: str) -> None:
        """The PDP context went away: no more connections; "closed" as for a socket; one
        whose "+QIOPEN: <id>,0" is still due (binding, or a loop turn from listening)
        fails with 570 as an open does (TcpipService.listen): never "closed" before the
        open's answer."""
        self.stop()
        self.lost = reason
        if self.state == LISTENING and self.announced:
            self.state = CLOSING
            self.svc.modem.urc(self.svc.dialect.closed(self), about=self.svc.news(self.client_id))

    def abort(self) -> None:
        self.stop()
        self.state = INITIAL


class _Refused:
    """The protocol of a connection no id is free for: dropped as it comes."""

    def connection_made(self, transport) -> None:
        transport.abort()

    def connection_lost(self, exc) -> None:
        pass

    def data_received(self, data) -> None:
        pass

    def eof_received(self) -> None:
        pass


def tcpip_service(modem) -> "TcpipService":
    """The modem's TCP/IP state, created on first use (a profile with a [tcpip] table)."""
    return modem.feature("tcpip", TcpipService)


def has_tcpip(modem) -> bool:
    return modem.profile.get("tcpip.sockets") is not None


def socket_services(modem) -> list:
    """The modem's socket services: SSL, and TCP/IP where the profile has it (one id pool)."""
    return [ssl_service(modem)] + ([tcpip_service(modem)] if has_tcpip(modem) else [])


def ids_in_use(modem) -> set[int]:
    """The socket ids taken in the one pool AT+QIOPEN and AT+QSSLOPEN share."""
    ids = set(ssl_service(modem).sockets)
    if has_tcpip(modem):
        svc = tcpip_service(modem)
        ids |= set(svc.sockets) | set(svc.listeners)
    return ids


class TcpipService(SocketService):
    kind = "TCP/IP"
    session_factory = PlainSession

    def __init__(self, modem) -> None:
        self.modem = modem
        profile = modem.profile
        self.dialect = TCPIP
        self.max_sockets = profile["tcpip.sockets"]
        self.send_max = profile["tcpip.send_max"]
        self.recv_max = profile["tcpip.recv_max"]
        self.sendex_max = profile["tcpip.sendex_max"]
        self.send_buffer = profile["tcpip.send_buffer"]
        self.recv_buffer = profile["tcpip.recv_buffer"]
        self.online_buffer = profile.get("tcpip.online_buffer", profile.get("ssl.online_buffer", ONLINE_BUFFER))
        self.at_port = profile.get("tcpip.at_port", profile.get("ssl.at_port", AT_PORT))
        self.errors = dict(ERRORS)
        self.listeners: dict[int, TcpListener] = {}
        self.data_echo = 1                    # AT+QISDE
        self.qicfg = QicfgSettings()          # AT+QICFG (not saved: a restart resets it)
        self._reset_ids: set[int] = set()     # ids AT+QIDEACT freed (_reuse)
        self._start()
        modem.on("pdp_reset", self.pdp_reset)

    # AT+QIGETERROR: one store with the SSL commands.
    def set_error(self, code: int) -> None:
        ssl_service(self.modem).set_error(code)

    def _reboot(self) -> None:
        self.abort_all()
        self._reset_ids.clear()
        self.data_echo = 1
        self.qicfg.reset()

    def abort_all(self) -> None:
        for listener in list(self.listeners.values()):
            listener.abort()
        self.listeners.clear()
        super().abort_all()

    def pdp_reset(self, cid: int) -> None:
        """The host's AT+QIDEACT=<cid>, before it takes the context down: it "close[s] all
        TCP/IP connections set up in this context" (TCP(IP) note).  They end as the context's
        loss ends them -- what SEND OK accepted leaves first, a connected socket's or listener's
        "closed" -- and then go: every AT+QIOPEN socket, listener and UDP SERVICE on the
        context, also one whose connection had ended already (the network's deactivation, a
        peer's close), leaves its id free for the next AT+QIOPEN, what it held unread gone.
        Its "closed" still comes (the host's AT+QICLOSE after it is OK) unless the id is
        opened again first (_reuse); a "recv" for data now gone does not."""
        self.pdp_lost(cid)
        # (an open not answered yet answers as the context's loss makes it -- 570 -- and goes
        # by itself, as without AT+QIDEACT)
        for connect_id, listener in list(self.listeners.items()):
            if listener.pdp_id == cid and listener.announced:
                del self.listeners[connect_id]
                listener.abort()
                self._reset_ids.add(connect_id)
        for connect_id, sock in list(self.sockets.items()):
            if sock.pdp_id == cid and sock.state is not OPENING:
                del self.sockets[connect_id]
                for delivery in self.deliveries.values():
                    delivery.report_close_now(sock)     # (its push data, held back, gone)
                self._release(sock)
                sock.abort()
                self._reset_ids.add(connect_id)
                # its buffer-mode "recv" still waiting for a busy port announces data gone now
                self.modem.drop_urcs(self.news(connect_id), kind=RECV_NEWS)

    def _reuse(self, connect_id: int) -> None:
        """A new socket or listener on an id AT+QIDEACT freed: what still waits to be said
        about the one before (its "closed", an "incoming" it accepted) would read as news of
        the new one -- as after AT+QICLOSE, it is not said."""
        if connect_id in self._reset_ids:
            self._reset_ids.discard(connect_id)
            self.drop_news(connect_id)

    def pdp_lost(self, cid: int) -> None:
        # Connections a listener accepted that the host has not heard of ("incoming" a loop
        # turn away, or waiting behind the listener's "+QIOPEN: <id>,0") go without a word
        # and free their ids, as when the listener closes; the rest report as sockets do.
        for sock in list(self.sockets.values()):
            if sock.pdp_id == cid and sock.service_type == "TCP INCOMING" and sock.state is OPENING:
                del self.sockets[sock.client_id]
                sock.abort()
        for listener in self.listeners.values():
            if listener.pdp_id == cid and not listener.announced:
                listener.stop()
        super().pdp_lost(cid)
        for listener in list(self.listeners.values()):
            if listener.pdp_id == cid:
                listener.bearer_lost(f"PDP context {cid} deactivated")

    def entry(self, connect_id: int):
        """The socket or listener on an id (None: free)."""
        return self.sockets.get(connect_id) or self.listeners.get(connect_id)

    # -- opening ---------------------------------------------------------------------
    def open(self, connect_id: int, *, pdp_id: int, service_type: str, host: str, port: int,
             local_port: int, delivery) -> SslSocket:
        """A "TCP"/"UDP" client or a "UDP SERVICE": the result comes through on_opened."""
        modem = self.modem
        udp = service_type != "TCP"
        self._reuse(connect_id)
        sock = TcpipSocket(self, connect_id, pdp_id=pdp_id, host=host, port=port, delivery=delivery,
                           recv_limit=self.recv_buffer, timers=modem.timers, service_type=service_type,
                           shown_local_port=local_port)
        sock.faults = net_faults(modem)
        self.sockets[connect_id] = sock
        router = modem.network
        if service_type == "UDP SERVICE":            # binds the local port, connects nowhere
            connect = lambda factory, fault: bind_udp(router, local_port, factory)  # noqa: E731
        else:
            opener = open_udp if udp else open_tcp

            def connect(factory, fault):
                # The control API's "handshake_stall": with no handshake to stall, the
                # server never answers the connect (+QIOPEN: <id>,569 after 150 s).
                if fault == "stall":
                    return asyncio.get_running_loop().create_future()
                return opener(router, host, port, factory, fault=fault, family=sock.name_family())
        sock.open(router, PlainSettings(dtls=udp), CONNECT_TIMEOUT, connect=connect)
        return sock

    def port_taken(self, service_type: str, local_port: int) -> bool:
        """A "TCP LISTENER" / "UDP SERVICE" of this module already has <local_port>."""
        if service_type == "TCP LISTENER":
            return any(lst.shown_local_port == local_port for lst in self.listeners.values())
        return any(sock.service_type == "UDP SERVICE" and sock.shown_local_port == local_port
                   for sock in self.sockets.values())

    def listen(self, connect_id: int, *, pdp_id: int, local_port: int, delivery) -> TcpListener:
        """A "TCP LISTENER": +QIOPEN: <id>,0 once bound (556 when the port cannot be)."""
        self._reuse(connect_id)
        listener = TcpListener(self, connect_id, pdp_id, local_port, delivery)
        self.listeners[connect_id] = listener

        async def start() -> None:
            code = await listener.start()
            if not code and listener.lost is None and self.listeners.get(connect_id) is listener:
                await listener.serve()            # (a loop turn: the bearer may go in it)
            if self.listeners.get(connect_id) is not listener:
                listener.stop()                   # closed meanwhile
                return
            if listener.lost is not None and not code:
                # The context went before the answer (AT+QIDEACT in the same line, while
                # binding or in serve()'s turn): no listener on a context that is gone, the
                # open fails as a socket's does.
                log.info("TCP LISTENER %d: %s while starting", connect_id, listener.lost)
                listener.stop()
                listener.state = INITIAL
                code = ERRORS["pdp"]
            if code:
                del self.listeners[connect_id]
                self.set_error(code)
                self.modem.urc(self.dialect.opened(listener, code), about=self.news(connect_id))
                return
            listener.announce(self.dialect.opened(listener, 0))
        asyncio.ensure_future(start())
        return listener

    def incoming(self, listener: TcpListener):
        """A connection arrives at a listener: a TCP INCOMING socket on the lowest free id
        of the shared pool, or "incoming full" and the connection is dropped."""
        taken = ids_in_use(self.modem)
        free = next((i for i in range(self.max_sockets) if i not in taken), None)
        if self.listeners.get(listener.client_id) is not listener or listener.state != LISTENING:
            return _Refused()                     # closed or lost meanwhile: nothing to report
        if free is None:
            log.info("TCP LISTENER %d: no free connectID for an incoming connection", listener.client_id)
            self.modem.urc(self.dialect.incoming_full_urc)
            return _Refused()
        sock = TcpipSocket(self, free, pdp_id=listener.pdp_id, host="127.0.0.1", port=0,
                           delivery=listener.delivery, recv_limit=self.recv_buffer, timers=self.modem.timers,
                           service_type="TCP INCOMING", shown_local_port=listener.shown_local_port,
                           server_id=listener.client_id)
        sock.faults = net_faults(self.modem)
        self.sockets[free] = sock
        return sock.accept(PlainSettings(dtls=False, incoming=True))

    def on_accepted(self, sock: SslSocket) -> None:
        if not self.holds(sock):
            return
        listener = self.listeners.get(sock.server_id)
        if listener is not None and listener.held is not None:
            listener.held.append(sock)            # after the listener's +QIOPEN
            return
        ip, port = sock.remote or ("0.0.0.0", 0)
        sock.host, sock.port = ip, port
        self.modem.urc(self.dialect.incoming(sock, ip, port), about=self.news(sock.client_id))

    # -- closing ---------------------------------------------------------------------
    def close(self, client_id: int, timeout: float) -> "asyncio.Future[None]":
        """SocketService.close for listeners too (a listener's id holds no socket: the
        task ends at once)."""
        listener = self.listeners.pop(client_id, None)
        if listener is not None:
            listener.abort()
        return super().close(client_id, timeout)
