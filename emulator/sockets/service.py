"""The SSL sockets of one modem: contexts, sockets, last error, session cache,
and the module-specific wording of their URCs (a "dialect" chosen by the
profile's variant of AT+QSSLOPEN)."""
from __future__ import annotations

import asyncio

from tls_engine import SessionCache

from emulator.logsafe import get_logger

from emulator.sockets.context import SetupError, SslContext, to_tls_settings
from emulator.sockets.ssl_socket import CLOSING, CONNECTED, INITIAL, OPENING, SslSocket

log = get_logger("emulator.ssl")

# Direct push (access mode 1) flow control: a push URC is written only while the pty output
# backlog (bytes the host has not taken yet) is below this; otherwise the data wait in the
# socket's inbox, whose limit (ssl.recv_buffer) pauses the TCP reading, which holds the server
# back.  Pushing resumes on the modem's "output_drained" event (backlog back under 16 KiB),
# and, as a fallback, every PUSH_RETRY seconds while data are held back: the interpreter's own
# URC queue (host inside a command or a "> " prompt) is not part of the backlog and sends no
# event when it empties.
PUSH_HIGH_WATER = 64 * 1024
PUSH_RETRY = 0.02

# EC2x note §5; AT+QIGETERROR prints the text.
ERROR_TEXT = {
    0: "operation successful", 550: "unknown error", 551: "operation blocked",
    552: "invalid parameter", 553: "memory not enough", 554: "create socket failed",
    555: "operation not supported", 556: "socket bind failed", 557: "socket listen failed",
    558: "socket write failed", 559: "socket read failed", 560: "socket accept failed",
    561: "open PDP context failed", 562: "close PDP context failed",
    563: "socket identity has been used", 564: "DNS busy", 565: "DNS parse failed",
    566: "socket connect failed", 567: "socket has been closed", 568: "operation busy",
    569: "operation timeout", 570: "PDP context break down", 571: "cancel send",
    572: "operation not allowed", 573: "APN not configured", 574: "port busy",
}


class Ec2xDialect:
    def opened(self, sock: SslSocket, code: int) -> str:
        return f"+QSSLOPEN: {sock.client_id},{code}"

    def recv(self, sock: SslSocket) -> str:
        return f'+QSSLURC: "recv",{sock.client_id}'

    def push(self, sock: SslSocket, n: int) -> str:
        return f'+QSSLURC: "recv",{sock.client_id},{n}'

    def closed(self, sock: SslSocket) -> str:
        return f'+QSSLURC: "closed",{sock.client_id}'


class Ml302Dialect(Ec2xDialect):
    def recv(self, sock: SslSocket) -> str:
        return f'+QSSLURC: "recv",1,{sock.client_id}'        # <cid> is reserved: always 1

    def closed(self, sock: SslSocket) -> str:
        return f'+QSSLURC: "close",{sock.client_id}'


DIALECTS = {"ec2x": Ec2xDialect, "ml302": Ml302Dialect}


class SslService:
    def __init__(self, modem) -> None:
        self.modem = modem
        profile = modem.profile
        self.contexts = {i: SslContext(i) for i in range(profile["ssl.contexts"])}
        self.max_sockets = profile["ssl.sockets"]
        self.sockets: dict[int, SslSocket] = {}
        self.errors: dict[str, int] = dict(profile.get("ssl.errors", {}))
        self.last_error = 0
        self.cache = SessionCache()
        self.dialect = DIALECTS.get(profile.command_variant("+QSSLOPEN") or "ec2x", Ec2xDialect)()
        self._close_after_push: list[SslSocket] = []    # "closed" URCs waiting for held push data
        self._push_timer: asyncio.TimerHandle | None = None
        self._pushing = False
        modem.on("pdp_deactivated", self._pdp_lost)
        modem.on("output_drained", self._push_all)
        modem.on("reset", self.abort_all)
        modem.on("shutdown", self.abort_all)

    def code(self, kind: str) -> int:
        return self.errors.get(kind, self.errors.get("unknown", 550))

    def set_error(self, code: int) -> None:
        self.last_error = code

    # -- opening ---------------------------------------------------------------
    def open(self, client_id: int, *, pdp_id: int, ctx_id: int, host: str, port: int,
             access_mode: int, read_material, timeout: float | None = None,
             allow_ciphers: tuple[int, ...] | None = None) -> SslSocket:
        """Start connecting; the result arrives as a URC through on_opened.
        timeout: a bound on the whole open (ML302), None = negotiatetime only (EC2x).
        allow_ciphers: what 0XFFFF may expand to (None = the profile's whole table)."""
        modem = self.modem
        sock = SslSocket(self, client_id, pdp_id=pdp_id, ctx_id=ctx_id, host=host, port=port,
                         access_mode=access_mode, recv_limit=modem.profile["ssl.recv_buffer"])
        self.sockets[client_id] = sock
        ctx = self.contexts[ctx_id]
        try:
            settings = to_tls_settings(ctx, host=host, profile=modem.profile, read_material=read_material,
                                       clock=modem.clock.now, keylog=getattr(modem, "keylog", None),
                                       allow_ciphers=allow_ciphers)
        except SetupError as exc:
            sock.state = OPENING
            modem.loop.call_soon(self.on_opened, sock, exc.kind, exc.reason)
            return sock
        except Exception as exc:          # a context nobody foresaw: one answer all the same
            sock.state = OPENING
            modem.loop.call_soon(self.on_opened, sock, "bad_config",
                                 f"unexpected {type(exc).__name__} in the SSL context: {exc}", exc)
            return sock
        sock.open(modem.network, settings, float(ctx["negotiatetime"]),
                  self.cache if ctx["session_cache"] else None, (ctx_id, host.lower(), port),
                  total_timeout=timeout)
        return sock

    # -- SocketOwner callbacks -----------------------------------------------------
    def on_opened(self, sock: SslSocket, kind: str | None, reason: str,
                  exc: BaseException | None = None) -> None:
        """exc: the unexpected exception behind a failure; the log line carries its traceback."""
        if self.sockets.get(sock.client_id) is not sock:
            if exc is not None:                      # no answer is due, but never silence
                log.warning("SSL open %d to %s:%d, closed meanwhile: %s", sock.client_id, sock.host,
                            sock.port, reason, exc_info=exc)
            return                                   # closed by the host meanwhile
        if kind is None:
            self.modem.urc(self.dialect.opened(sock, 0))
            return
        code = self.code(kind)
        log.warning("SSL open %d to %s:%d failed (%d %s): %s", sock.client_id, sock.host, sock.port,
                    code, ERROR_TEXT.get(code, kind), reason, exc_info=exc)
        del self.sockets[sock.client_id]
        sock.state = INITIAL
        self.last_error = code if code > 0 else self.last_error
        self.modem.urc(self.dialect.opened(sock, code))

    def on_data(self, sock: SslSocket, was_empty: bool) -> None:
        if sock.access_mode == 1:                      # direct push: data goes out with the URC
            self._push_all()
        elif was_empty:
            self.modem.urc(self.dialect.recv(sock))

    def on_closed(self, sock: SslSocket, reason: str) -> None:
        if self.sockets.get(sock.client_id) is sock:
            self._report_closed(sock)

    def _report_closed(self, sock: SslSocket) -> None:
        """The "closed" URC, after any push data still held back (they came first)."""
        if sock.access_mode == 1 and sock.inbox:
            if sock not in self._close_after_push:
                self._close_after_push.append(sock)
            self._push_all()
        else:
            self.modem.urc(self.dialect.closed(sock))

    # -- direct push flow control -----------------------------------------------------
    def _host_keeps_up(self) -> bool:
        modem = self.modem
        interpreter = getattr(modem, "interpreter", None)
        if interpreter is not None and not interpreter.idle:
            return False           # URCs would pile up in its queue until the answer is written
        return getattr(modem, "output_backlog", lambda: 0)() < PUSH_HIGH_WATER

    def _holding(self) -> list[SslSocket]:
        return [s for s in self.sockets.values()
                if s.access_mode == 1 and s.inbox and s.state in (CONNECTED, CLOSING)]

    def _push_all(self) -> None:
        """Push the held data of every direct-push socket, one whole URC (at most recv_max
        bytes) per socket in turn, while the host keeps up; the rest stays in the inboxes."""
        if self._pushing:          # re-entered from a URC write (a drain callback): already at it
            return
        self._pushing = True
        try:
            limit = self.modem.profile["ssl.recv_max"]
            while (ready := self._holding()) and self._host_keeps_up():
                for sock in ready:
                    if not self._host_keeps_up():
                        break
                    if sock.inbox:
                        chunk = sock.read(limit)       # may resume the paused TCP reading
                        self.modem.urc(self.dialect.push(sock, len(chunk)), raw=chunk)
            for sock in list(self._close_after_push):
                if self.sockets.get(sock.client_id) is not sock:
                    self._close_after_push.remove(sock)     # the host closed it meanwhile
                elif not sock.inbox:
                    self._close_after_push.remove(sock)
                    self.modem.urc(self.dialect.closed(sock))
        finally:
            self._pushing = False
        if self._push_timer is None and self._holding():
            loop = self.modem.loop or asyncio.get_running_loop()
            self._push_timer = loop.call_later(PUSH_RETRY, self._push_retry)

    def _push_retry(self) -> None:
        self._push_timer = None
        self._push_all()

    # -- host commands ----------------------------------------------------------------
    def connected(self, client_id: int) -> SslSocket | None:
        sock = self.sockets.get(client_id)
        return sock if sock is not None and sock.state == CONNECTED else None

    async def close(self, client_id: int, timeout: float) -> None:
        """Always returns (the AT+QSSLCLOSE answer follows); the socket is gone either way."""
        sock = self.sockets.pop(client_id, None)
        if sock is None:
            return
        try:
            await sock.close(timeout)
        except Exception:
            log.exception("SSL close %d: unexpected error (connection dropped)", client_id)
            try:
                sock.abort()
            except Exception:
                log.exception("SSL close %d: abort failed too", client_id)

    def abort_all(self) -> None:
        for sock in list(self.sockets.values()):
            sock.abort()
        self.sockets.clear()
        self._close_after_push.clear()
        if self._push_timer is not None:
            self._push_timer.cancel()
            self._push_timer = None

    def _pdp_lost(self, cid: int) -> None:
        """The bearer went away: open sockets report "closed" (the host still has
        to close them), sockets still opening fail."""
        for sock in list(self.sockets.values()):
            if sock.pdp_id != cid:
                continue
            before = sock.state
            sock.abort()
            if before == OPENING:
                self.on_opened(sock, "pdp", f"PDP context {cid} deactivated")
                continue
            sock.state = CLOSING
            if before == CONNECTED:
                self._report_closed(sock)
