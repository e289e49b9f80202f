"""How received data reach the host: the access modes of the EC2x note §1.3 as
delivery strategies.  A socket holds one (`sock.delivery`); the service keeps one
instance of each per modem (`svc.deliveries`), so a strategy with state of its
own (push flow control) shares it among its sockets.

    name     EC2x <access_mode>  ML302 <connectmode>  data reach the host ...
    buffer   0                   0                    "recv" URC, then AT+QSSLRECV reads
    push     1                   -                    "+QSSLURC: "recv",<id>,<len>" + the data
    online   2                   1                    transparent (issue 11): not yet

A new access mode is a Delivery subclass here, an entry in SslService.deliveries,
and the handler's mapping of its number.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.io.transport import HIGH_WATER
from emulator.logsafe import get_logger
from emulator.sockets.ssl_socket import CLOSING, CONNECTED, SslSocket

if TYPE_CHECKING:
    from emulator.sockets.service import SslService

log = get_logger("emulator.ssl")


class Delivery:
    name = ""
    access_mode = 0              # the number AT+QSSLSTATE prints
    implemented = True           # False: AT+QSSLOPEN refuses the mode (555 / ERROR)
    host_reads = False           # AT+QSSLRECV takes the data

    def __init__(self, svc: "SslService") -> None:
        self.svc = svc

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        """New plaintext is in sock.inbox (was_empty: the inbox had none before)."""
        raise NotImplementedError

    def peer_closed(self, sock: SslSocket) -> None:
        """The peer (or the bearer) ended the connection: report it, after any data the
        strategy still holds."""
        self.svc.modem.urc(self.svc.dialect.closed(sock))

    def forget(self) -> None:
        """Every socket is gone (reboot, shutdown): drop what is held for them."""


class BufferDelivery(Delivery):
    """Buffer access mode: a "recv" URC when data arrive into an empty receive buffer;
    the host reads with AT+QSSLRECV until it is empty."""
    name = "buffer"
    access_mode = 0
    host_reads = True

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        if was_empty:
            self.svc.modem.urc(self.svc.dialect.recv(sock))


class PushDelivery(Delivery):
    """Direct push access mode: the data go out with the URC, at most recv_max bytes each.

    Flow control: a push URC is written whole, and only while the port is in command
    state with nothing pending (URCs would pile up in the interpreter's queue until the
    answer is written) and at most HIGH_WATER bytes of output wait for the host; otherwise
    the data wait in the socket's inbox, whose limit (ssl.recv_buffer) pauses the TCP
    reading, which holds the server back.  Pushing resumes on the modem's events:
    "port_idle" (the port is back in command state), "output_drained" (the backlog fell
    from above HIGH_WATER to the transport's low water; the transport raises it exactly
    when the backlog went above HIGH_WATER, so a stop on the backlog always has its event),
    and "hangup" (the host left; its unread output is gone)."""
    name = "push"
    access_mode = 1

    def __init__(self, svc: "SslService") -> None:
        super().__init__(svc)
        self._close_after_push: list[SslSocket] = []    # "closed" URCs waiting for held data
        self._pushing = False
        for event in ("port_idle", "output_drained", "hangup"):
            svc.modem.on(event, self.push)

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        self.push()

    def peer_closed(self, sock: SslSocket) -> None:
        """The "closed" URC, after any push data still held back (they came first)."""
        if sock.inbox:
            if sock not in self._close_after_push:
                self._close_after_push.append(sock)
            self.push()
        else:
            super().peer_closed(sock)

    def forget(self) -> None:
        self._close_after_push.clear()

    def _host_keeps_up(self) -> bool:
        modem = self.svc.modem
        return modem.interpreter.idle and modem.output_backlog() <= HIGH_WATER

    def _holding(self) -> list[SslSocket]:
        return [s for s in self.svc.sockets.values()
                if s.delivery is self and s.inbox and s.state in (CONNECTED, CLOSING)]

    def push(self, **_event) -> None:
        """Push the held data of every direct-push socket, one whole URC (at most recv_max
        bytes) per socket in turn, while the host keeps up; the rest stays in the inboxes
        until the next event."""
        if self._pushing:          # re-entered from a URC write (a drain callback): already at it
            return
        self._pushing = True
        try:
            svc = self.svc
            limit = svc.modem.profile["ssl.recv_max"]
            while (ready := self._holding()) and self._host_keeps_up():
                for sock in ready:
                    if not self._host_keeps_up():
                        break
                    if sock.inbox:
                        chunk = sock.read(limit)       # may resume the paused TCP reading
                        svc.modem.urc(svc.dialect.push(sock, len(chunk)), raw=chunk)
            for sock in list(self._close_after_push):
                if svc.sockets.get(sock.client_id) is not sock:
                    self._close_after_push.remove(sock)     # the host closed it meanwhile
                elif not sock.inbox:
                    self._close_after_push.remove(sock)
                    svc.modem.urc(svc.dialect.closed(sock))
        finally:
            self._pushing = False


class OnlineDelivery(Delivery):
    """Transparent access mode (EC2x 2, ML302 connectmode 1), declared for issue 11 and
    refused until then.  What it will need: AT+QSSLOPEN answers CONNECT once the
    handshake is done (the interpreter's online-data mode, not a URC); the peer's bytes
    go to the port unframed and the host's bytes into the connection; "+++" with guard
    times and ATO leave and re-enter it; other sockets' URCs are held meanwhile; a peer
    close delivers the data still held, then NO CARRIER (peer_closed)."""
    name = "online"
    access_mode = 2
    implemented = False

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        raise NotImplementedError("transparent access mode (issue 11)")

    def peer_closed(self, sock: SslSocket) -> None:
        raise NotImplementedError("transparent access mode (issue 11)")


DELIVERIES = (BufferDelivery, PushDelivery, OnlineDelivery)
