"""The SSL sockets of one modem: contexts, sockets, last error, session cache.

One factory, ssl_service(modem), creates them for every module family, with the
defaults of the profile's dialect (ssl.dialect: URC wording, context defaults,
emulator/sockets/dialects.py) and its AT+QSSLCFG option set (ssl.options); how
received data reach the host is each socket's delivery strategy
(emulator/sockets/delivery.py).
"""
from __future__ import annotations

import asyncio

from tls_engine import SessionCache
from tls_engine.errors import FAILURE_KINDS

from emulator.at.cme import CME_TEXT
from emulator.logsafe import get_logger

from emulator.io.network import NETWORK_FAILURES, NetworkError, dial_now, net_faults
from emulator.sockets.context import SetupError, SslContext, to_tls_settings, verify_hostname
from emulator.sockets.delivery import DELIVERIES, Delivery
from emulator.sockets.dialects import DIALECTS
from emulator.sockets.ssl_socket import CLOSING, CONNECTED, SslSocket

log = get_logger("emulator.ssl")

ONLINE_BUFFER = 256 * 1024       # ssl.online_buffer (and tcpip.'s) when the profile has none
AT_PORT = "usbmodem"             # ssl.at_port / tcpip.at_port likewise (the state lines' <at_port>)

# Why an open fails (the kinds an [ssl.errors] table maps to codes): the network's
# (io.network.NetworkError), the open's own, and the TLS engine's (tls_engine.errors).
OPEN_FAILURES = frozenset({*NETWORK_FAILURES, "pdp", "unknown", *FAILURE_KINDS})   # ("timeout": TIMED_OUT)
# EC2x note §5; AT+QIGETERROR prints the text.
# AT+QIGETERROR's texts: the +CME ERROR table's TCP/IP and SSL codes (one table), and 0.
ERROR_TEXT = {0: "operate successfully", **{code: text for code, text in CME_TEXT.items() if 550 <= code <= 574}}


def ssl_service(modem) -> "SslService":
    """The modem's SSL state, created on first use (whichever command asks first)."""
    return modem.feature("ssl", SslService)


class SocketService:
    """What a per-modem socket service shares, TLS or plain underneath (SslService here,
    TcpipService in emulator/sockets/tcpip.py): its sockets by id, the access modes
    (deliveries), the SocketOwner callbacks, close, the bearer's loss.  A subclass sets
    modem, dialect, max_sockets, recv_max, online_buffer, errors and calls _start()."""
    kind = "SSL"                       # in log lines

    def _start(self) -> None:
        self.sockets: dict[int, SslSocket] = {}
        # Closed by the host, their connection still lingering (close_notify sent, the
        # peer's FIN awaited): no id, but a reboot or the bearer's loss drops them too.
        self.lingering: set[SslSocket] = set()
        self.deliveries: dict[str, Delivery] = {d.name: d(self) for d in DELIVERIES}
        modem = self.modem
        modem.on("pdp_deactivated", self.pdp_lost)
        modem.on("data_prompt", self._flush_deferred)
        modem.on("reset", self._reboot)
        modem.on("restart", self._send_accepted)
        modem.on("shutdown", self.abort_all)

    def holds(self, sock: SslSocket) -> bool:
        """sock is still this service's socket on its id (not closed by the host, not
        failed, not replaced by a newer one on the same id)."""
        return self.sockets.get(sock.client_id) is sock

    def delivery(self, access_mode: int) -> Delivery:
        """The strategy of an EC2x <access_mode> number (0 buffer, 1 push, 2 online)."""
        return next(d for d in self.deliveries.values() if d.access_mode == access_mode)

    def code(self, kind: str) -> int:
        return self.errors.get(kind, self.errors.get("unknown", 550))

    def set_error(self, code: int) -> None:
        raise NotImplementedError

    def _reboot(self) -> None:
        self.abort_all()

    # -- SocketOwner callbacks -----------------------------------------------------
    def on_opened(self, sock: SslSocket, kind: str | None, reason: str,
                  exc: BaseException | None = None) -> None:
        """exc: the unexpected exception behind a failure; the log line carries its traceback."""
        if not self.holds(sock):
            if exc is not None:                      # no answer is due, but never silence
                log.warning("%s open %d to %s:%d, closed meanwhile: %s", self.kind, sock.client_id, sock.host,
                            sock.port, reason, exc_info=exc)
            return                                   # closed by the host meanwhile
        self.modem.trace("open_result", socket=sock.client_id, code=0 if kind is None else self.code(kind),
                         kind=kind, reason=reason)
        if kind is None:
            sock.delivery.opened(sock, 0)
            return
        code = self.code(kind)
        log.warning("%s open %d to %s:%d failed (%d %s): %s", self.kind, sock.client_id, sock.host, sock.port,
                    code, ERROR_TEXT.get(code, kind), reason, exc_info=exc)
        del self.sockets[sock.client_id]
        if code > 0:
            self.set_error(code)
        sock.delivery.opened(sock, code)
        self._release(sock)

    def on_data(self, sock: SslSocket, was_empty: bool) -> None:
        if self.holds(sock):   # (closed by the host: no more URCs)
            sock.delivery.data_arrived(sock, was_empty)

    def on_closed(self, sock: SslSocket, reason: str) -> None:
        if self.holds(sock):
            sock.delivery.peer_closed(sock)

    # -- host commands ----------------------------------------------------------------
    def connected(self, client_id: int) -> SslSocket | None:
        sock = self.sockets.get(client_id)
        return sock if sock is not None and sock.state == CONNECTED else None

    def close(self, client_id: int, timeout: float) -> "asyncio.Future[None]":
        """The host's close: the socket leaves the service at once, in the command's own
        turn, so nothing its open or its connection does from now on reaches the host (an
        open refused at once would otherwise answer "+QSSLOPEN: <id>,566" after the OK of
        "AT+QSSLOPEN=...;+QSSLCLOSE=<id>").  The returned task closes the connection
        (close_notify, linger) and always ends without an error: the close's answer follows
        it.  A task, not a bare coroutine: the connection is closed even if nobody awaits
        it (an answer dropped with its port)."""
        sock = self._take(client_id)
        if sock is not None:
            self.lingering.add(sock)              # (a reboot or the bearer's loss drops it)
            sock.leave()                          # no more open steps
        return asyncio.ensure_future(self._close(client_id, sock, timeout))

    def _take(self, client_id: int) -> SslSocket | None:
        """The socket on `client_id` leaves the service (None: there was none): its id is free
        from now on, no access mode keeps anything for it, and the URCs about it still waiting
        for a busy port are dropped (drop_news)."""
        self.drop_news(client_id)
        sock = self.sockets.pop(client_id, None)
        if sock is not None:
            self._release(sock)
        return sock

    def news(self, client_id: int) -> tuple:
        """What a URC about this service's id `client_id` is about (Interpreter.drop_urcs)."""
        return (self, client_id)

    def drop_news(self, client_id: int) -> None:
        """The host closed `client_id`: URCs about it still waiting for a busy port (its
        open's answer, "recv", "closed") would read as news of the next socket on the id."""
        self.modem.drop_urcs(self.news(client_id))

    async def _close(self, client_id: int, sock: SslSocket | None, timeout: float) -> None:
        if sock is None:
            return
        try:
            await sock.close(timeout)
        except Exception:
            log.exception("%s close %d: unexpected error (connection dropped)", self.kind, client_id)
            try:
                sock.abort()
            except Exception:
                log.exception("%s close %d: abort failed too", self.kind, client_id)
        finally:
            self.lingering.discard(sock)

    def _flush_deferred(self, **_event) -> None:
        """The port waits for the host's data (a prompt is out): the bytes earlier SEND OKs
        accepted go now, while the host writes (SslSocket.transmit_soon)."""
        for sock in list(self.sockets.values()):
            sock.flush_deferred()

    def _send_accepted(self, **_event) -> None:
        """The host asked for a restart (AT+CFUN=1,1, AT+QPOWD): what SEND OK accepted
        leaves before the sockets go (it was in the send buffer before the command was read)."""
        for sock in list(self.sockets.values()):
            if sock.state == CONNECTED:
                sock.send_accepted()

    def _release(self, sock: SslSocket) -> None:
        """The socket is gone from the service: no access mode keeps anything for it."""
        for delivery in self.deliveries.values():
            delivery.release(sock)

    def abort_all(self) -> None:
        for sock in [*self.sockets.values(), *self.lingering]:
            sock.abort()
        self.sockets.clear()
        for delivery in self.deliveries.values():
            delivery.forget()

    def pdp_lost(self, cid: int) -> None:
        """The bearer went away: open sockets report "closed" (the host still has
        to close them), sockets still opening fail."""
        for sock in list(self.sockets.values()):
            if sock.pdp_id == cid:
                sock.bearer_lost(f"PDP context {cid} deactivated")
        for sock in list(self.lingering):        # closed by the host: dropped, unreported
            if sock.pdp_id == cid:
                sock.abort()


class SslService(SocketService):
    def __init__(self, modem) -> None:
        self.modem = modem
        profile = modem.profile
        self.dialect = DIALECTS[profile["ssl.dialect"]]
        self.options: tuple[str, ...] = tuple(profile["ssl.options"])
        self.contexts = {i: SslContext(i, self._context_defaults(profile)) for i in range(profile["ssl.contexts"])}
        self.globals: dict[str, int] = dict(self.dialect.stored_globals)
        self.max_sockets = profile["ssl.sockets"]
        self.recv_max = profile["ssl.recv_max"]
        self.online_buffer = profile.get("ssl.online_buffer", ONLINE_BUFFER)
        self.at_port = profile.get("ssl.at_port", AT_PORT)
        # The last socket opened on each id: once it has ended, the ML302's AT+QSSLSTATE
        # shows it as CLOSED with its address until the id is used again.
        self.dialled: dict[int, SslSocket] = {}
        self.errors: dict[str, int] = dict(profile.get("ssl.errors", {}))
        self.last_error = 0
        self.cache = SessionCache()
        self._start()
        modem.on("pdp_reset", self.pdp_reset)

    def pdp_reset(self, cid: int) -> None:
        """The host's AT+QIDEACT=<cid>, before it takes the context down (emulator/commands/
        pdp.py): the SSL sockets on the context whose connection had ended (state 4, "closing":
        the network's deactivation, a peer's close) leave their ids, free for the next open;
        what they held unread is gone with them, and so are URCs about them still waiting for
        a busy port (as after AT+QSSLCLOSE).  (AT+QIOPEN's sockets stay until AT+QICLOSE,
        which is ERROR on an id with nothing open: docs/behaviour.md.)"""
        for client_id, sock in list(self.sockets.items()):
            if sock.pdp_id == cid and sock.state is CLOSING:
                self._take(client_id).abort()

    def _context_defaults(self, profile) -> dict[str, object]:
        values = self.dialect.context_values()
        if "checkhost" in self.options:    # (a BG96) the profile's name check is its default
            values["checkhost"] = int(verify_hostname(profile))
        return values

    def set_error(self, code: int) -> None:
        self.last_error = code

    def _reboot(self) -> None:
        """AT+CFUN=1,1: sockets go silently; neither module saves AT+QSSLCFG (the EC2x
        note: "The configurations will not be saved"; the ML302 manual documents no
        saving), so the dialect's defaults come back; sessions and the last error go."""
        self.abort_all()
        for ctx in self.contexts.values():
            ctx.reset()
        self.globals = dict(self.dialect.stored_globals)
        self.dialled.clear()
        self.cache.clear()
        self.set_error(0)

    # -- opening ---------------------------------------------------------------
    def _dial_first(self, ctx, faults, host: str, port: int):
        """The open's TCP connect, started before the socket and its settings are made,
        when nothing can refuse the open after it: a seclevel 0 TLS context whose options
        are the ones its last settings were built from (to_tls_settings' memo: they built,
        so they build again; seclevel 1 and 2 read files first), no fault, no network
        conditions, a route or literal to IPv4 (network.dial_now).  The socket's own
        set-up follows while the server accepts -- the server's time from connect to its
        first flight does not change, the open's answer comes sooner (~25 us of ~75 us
        before the connect, measured through the pty).  None: open() dials as before."""
        if (ctx["seclevel"] != 0 or ctx["dtls"] or not ctx.settings_would_build()
                or not faults.nothing_in_the_way()):
            return None
        try:
            return dial_now(self.modem.network, host, port)
        except NetworkError:
            return None                  # (open() dials again and answers the failure)

    def open(self, client_id: int, *, pdp_id: int, ctx_id: int, host: str, port: int,
             delivery: Delivery, read_material, timeout: float | None = None,
             allow_ciphers: tuple[int, ...] | None = None) -> SslSocket:
        """Start connecting; the result arrives as a URC through on_opened.
        timeout: a bound on the whole open (ML302), None = negotiatetime only (EC2x).
        allow_ciphers: what 0XFFFF may expand to (None = the profile's whole table)."""
        modem = self.modem
        ctx = self.contexts[ctx_id]
        faults = net_faults(modem)
        first = self._dial_first(ctx, faults, host, port)
        sock = SslSocket(self, client_id, pdp_id=pdp_id, ctx_id=ctx_id, host=host, port=port,
                         delivery=delivery, recv_limit=modem.profile["ssl.recv_buffer"], timers=modem.timers)
        sock.dialled_first(first)
        self.sockets[client_id] = self.dialled[client_id] = sock
        sock.faults = faults
        try:
            settings = to_tls_settings(ctx, host=host, profile=modem.profile, read_material=read_material,
                                       clock=modem.clock.now, keylog=getattr(modem, "keylog", None),
                                       monotonic=modem.timers.monotonic,
                                       allow_ciphers=allow_ciphers)
        except SetupError as exc:
            sock.refuse(exc.kind, exc.reason)
            return sock
        except Exception as exc:          # a context nobody foresaw: one answer all the same
            sock.refuse("bad_config", f"unexpected {type(exc).__name__} in the SSL context: {exc}", exc)
            return sock
        sock.open(modem.network, settings, float(ctx["negotiatetime"]),
                  self.cache if ctx["session_cache"] else None, (ctx_id, host.lower(), port),
                  total_timeout=timeout)
        return sock
