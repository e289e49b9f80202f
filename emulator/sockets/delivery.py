"""How received data reach the host: the access modes of the EC2x note §1.3 as
delivery strategies.  A socket holds one (`sock.delivery`); the service keeps one
instance of each per modem (`svc.deliveries`), so a strategy with state of its
own (push flow control) shares it among its sockets.

    name     EC2x <access_mode>  ML302 <connectmode>  data reach the host ...
    buffer   0                   0                    "recv" URC, then AT+QSSLRECV reads
    push     1                   -                    "+QSSLURC: "recv",<id>,<len>" + the data
    online   2                   1                    CONNECT, then the port is the connection's

A new access mode is a Delivery subclass here, an entry in DELIVERIES (below; each
service makes its instances, SocketService._start), and the handler's mapping of its number.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from emulator.io.transport import HIGH_WATER
from emulator.logsafe import get_logger
from emulator.sockets.ssl_socket import CLOSE_TIMEOUT_DEFAULT, CLOSING, CONNECTED, SslSocket

# The kind of a buffer-mode "recv" URC (modem.urc's `kind`): what drop_urcs() takes back
# when the data it announced went another way.
RECV_NEWS = "recv"

if TYPE_CHECKING:
    from emulator.sockets.service import SslService

log = get_logger("emulator.ssl")


class Delivery:
    name = ""
    access_mode = 0              # the number AT+QSSLSTATE prints
    host_reads = False           # AT+QSSLRECV takes the data

    def __init__(self, svc: "SslService") -> None:
        self.svc = svc

    def opened(self, sock: SslSocket, code: int) -> None:
        """The open ended (0 = connected, else the module's error code)."""
        self.svc.modem.urc(self.svc.dialect.opened(sock, code), about=self.svc.news(sock.client_id))

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        """New plaintext is in sock.inbox (was_empty: the inbox had none before)."""
        raise NotImplementedError

    def adopt(self, sock: SslSocket) -> None:
        """AT+QISWTMD switched sock to this strategy: deliver what already waits."""
        sock.delivery = self
        if sock.inbox:
            self.drop_held_recv(sock)
            self.data_arrived(sock, True)

    def drop_held_recv(self, sock: SslSocket) -> None:
        """A buffer-mode "recv" about sock still waiting for a busy port (raised earlier in
        the command line now running) is no news once another access mode delivers the data
        it announced: written after them it would send the host to read what is gone."""
        self.svc.modem.drop_urcs(self.svc.news(sock.client_id), kind=RECV_NEWS)

    def peer_closed(self, sock: SslSocket) -> None:
        """The peer (or the bearer) ended the connection: report it, after any data the
        strategy still holds."""
        self.svc.modem.urc(self.svc.dialect.closed(sock), about=self.svc.news(sock.client_id))

    def forget(self) -> None:
        """Every socket is gone (reboot, shutdown): drop what is held for them."""

    def release(self, sock: SslSocket) -> None:
        """sock is gone (the host closed it, or its open failed): drop what is held for it."""

    def report_close_now(self, sock: SslSocket) -> None:
        """sock goes now (AT+QIDEACT) with what it still held undelivered: a "closed" this
        mode held back behind that data is said at once, as the data will never come."""


class BufferDelivery(Delivery):
    """Buffer access mode: a "recv" URC when data arrive into an empty receive buffer;
    the host reads with AT+QSSLRECV until it is empty."""
    name = "buffer"
    access_mode = 0
    host_reads = True

    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        if was_empty:
            self.svc.modem.urc(self.svc.dialect.recv(sock), about=self.svc.news(sock.client_id), kind=RECV_NEWS)


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
    and "hangup" (the host left; its unread output is gone), "host_attached" (a program
    opened the port).  A port nobody holds (between a hang-up and the next open) takes no
    push: the data wait in the inbox for the next host, as for a host that does not keep
    up (with --uart the module pushes to the wire whoever listens)."""
    name = "push"
    access_mode = 1

    def __init__(self, svc: "SslService") -> None:
        super().__init__(svc)
        self._close_after_push: list[SslSocket] = []    # "closed" URCs waiting for held data
        self._pushing = False
        for event in ("port_idle", "output_drained", "hangup", "host_attached"):
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

    def release(self, sock: SslSocket) -> None:
        if sock in self._close_after_push:
            self._close_after_push.remove(sock)

    def report_close_now(self, sock: SslSocket) -> None:
        if sock in self._close_after_push:
            self._close_after_push.remove(sock)
            self.svc.modem.urc(self.svc.dialect.closed(sock), about=self.svc.news(sock.client_id))

    def _host_keeps_up(self) -> bool:
        modem = self.svc.modem
        return (modem.interpreter.idle and modem.output_backlog() <= HIGH_WATER
                and modem.host_present())

    def _holding(self) -> list[SslSocket]:
        return [s for s in self.svc.sockets.values()
                if s.delivery is self and s.inbox and s.state in (CONNECTED, CLOSING)]

    def push(self, **_event) -> None:
        """Push the held data of every direct-push socket, one whole URC (at most recv_max
        bytes) per socket in turn, while the host keeps up; the rest stays in the inboxes
        until the next event."""
        if self._pushing:          # re-entered from a URC write (a drain callback): already at it
            return
        if not self.svc.sockets and not self._close_after_push:
            return                 # (every port_idle asks: most often nothing to push)
        self._pushing = True
        try:
            svc = self.svc
            limit = svc.recv_max
            while (ready := self._holding()) and self._host_keeps_up():
                for sock in ready:
                    if not self._host_keeps_up():
                        break
                    if sock.inbox:
                        chunk = sock.read(limit)       # may resume the paused TCP reading
                        svc.modem.urc(svc.dialect.push(sock, len(chunk)), raw=chunk, about=svc.news(sock.client_id))
            for sock in list(self._close_after_push):
                if not svc.holds(sock):
                    self._close_after_push.remove(sock)     # the host closed it meanwhile
                elif not sock.inbox:
                    self._close_after_push.remove(sock)
                    svc.modem.urc(svc.dialect.closed(sock), about=svc.news(sock.client_id))
        finally:
            self._pushing = False


class OnlineDelivery(Delivery):
    """Transparent access mode (EC2x <access_mode> 2, ML302 <connectmode> 1).

    AT+QSSLOPEN is answered CONNECT once the handshake is done (or ERROR), and the port
    enters the interpreter's online data mode with the socket's SocketLink: the host's
    bytes go into the connection unchanged, the peer's bytes to the port unframed.
    "+++" with guard times (or a DTR drop with AT&D1) leaves it with the connection
    open: the peer's bytes then wait in the socket (past ssl.recv_buffer the TCP reading
    pauses) until ATO or AT+QISWTMD=<id>,2 returns -- CONNECT, the waiting bytes first.
    A peer close while online: the data received before it, then NO CARRIER; while the
    port is in command mode: the "closed" URC like the other modes.

    Flow control both ways: when the connection has more than ssl.online_buffer bytes
    the kernel has not taken, the port stops reading the pty (the host is held back by
    the pty's own buffer); when more than the port's high water of output waits for the
    host, the socket stops reading from the network (the server is held back)."""
    name = "online"
    access_mode = 2

    def __init__(self, svc: "SslService") -> None:
        super().__init__(svc)
        self._opening: dict[SslSocket, "asyncio.Future[int]"] = {}
        self._links: dict[SslSocket, SocketLink] = {}
        # Opened, their CONNECT not written yet (the open's answer comes a turn later): a
        # peer close meanwhile is the link's to report once online (NO CARRIER).
        self._connecting: set[SslSocket] = set()
        svc.modem.on("output_drained", self._drained)
        svc.modem.on("hangup", self._drained)

    # -- opening ------------------------------------------------------------------
    def wait_open(self, sock: SslSocket) -> "asyncio.Future[int]":
        """A future for the open's result code (0 = connected): the AT+QSSLOPEN answer."""
        future = asyncio.get_running_loop().create_future()
        self._opening[sock] = future
        return future

    def opened(self, sock: SslSocket, code: int) -> None:
        future = self._opening.pop(sock, None)
        if future is None:
            super().opened(sock, code)
        elif not future.done():
            future.set_result(code)
            if code == 0:
                self._connecting.add(sock)

    def take_connecting(self, sock: SslSocket) -> bool:
        """The open's CONNECT went out, or never will (its host hung up first): True when
        it was still on its way (a peer close since then was kept for the caller)."""
        if sock not in self._connecting:
            return False
        self._connecting.discard(sock)
        return True

    def link(self, sock: SslSocket) -> "SocketLink":
        link = self._links.get(sock)
        if link is None:
            link = self._links[sock] = SocketLink(self, sock)
        return link

    def online(self, sock: SslSocket) -> bool:
        """The port is this socket's now (online data mode)."""
        link = self._links.get(sock)
        return link is not None and self.svc.modem.interpreter.online_link is link

    # -- data ---------------------------------------------------------------------
    def data_arrived(self, sock: SslSocket, was_empty: bool) -> None:
        self.svc.modem.interpreter.settle_overdue_escape()    # (an escape before these bytes)
        if self.online(sock):
            self.flush(sock)
        # else: the host left with +++; the bytes wait for ATO / AT+QISWTMD

    def flush(self, sock: SslSocket, everything: bool = False) -> None:
        """The socket's waiting bytes to the port while the host keeps up (everything:
        regardless, before NO CARRIER); else hold the network back until it drains.
        Nothing while no host holds the port: in the loop turn the host closed it (its
        hang-up not handled yet) the bytes would go to nobody; they wait for ATO, as they
        do once the hang-up has taken the port offline."""
        modem = self.svc.modem
        if not modem.host_present():
            return
        while sock.inbox:
            if not everything and modem.output_backlog() > HIGH_WATER:
                sock.pause_network(True)
                return
            modem.write(sock.read(65536))
        sock.pause_network(False)

    def _drained(self, **_event) -> None:
        for sock in list(self._links):
            if not self.svc.holds(sock):
                self._links.pop(sock, None)              # the host closed it
            elif self.online(sock):
                self.flush(sock)

    def peer_closed(self, sock: SslSocket) -> None:
        if sock in self._connecting:
            return                      # CONNECT is on its way: SocketLink.started reports it
        self.svc.modem.interpreter.settle_overdue_escape()    # (an escape before the close)
        if self.online(sock):
            self._links[sock].ended()
        elif sock.inbox:
            # The host left with +++ and the peer has closed since: ATO can only answer
            # NO CARRIER, so what the peer sent meanwhile would be lost. The socket falls
            # back to buffer mode: a "recv" URC, then "closed"; AT+QIRD/QSSLRECV read it.
            self.release(sock)
            buffer = self.svc.deliveries["buffer"]
            buffer.adopt(sock)
            buffer.peer_closed(sock)
        else:
            super().peer_closed(sock)

    def adopt(self, sock: SslSocket) -> None:
        sock.delivery = self            # the bytes wait for CONNECT (SocketLink.started)

    def release(self, sock: SslSocket) -> None:
        """The socket's link and any open still waiting for it: without this every closed
        transparent socket stayed here (with its buffers and TLS context) until the port's
        output happened to drain from above its high water."""
        self._connecting.discard(sock)
        link = self._links.pop(sock, None)
        if link is not None and self.svc.modem.interpreter.online_link is not link:
            link.release_input()        # never leave the port's input paused for it
        future = self._opening.pop(sock, None)
        if future is not None and not future.done():
            future.set_result(self.svc.code("unknown"))     # an answer nobody waits for any more

    def forget(self) -> None:
        self._links.clear()
        self._connecting.clear()
        for future in self._opening.values():
            if not future.done():
                # An answer, not a cancel: the transparent open's pending command must
                # end (ERROR), or the port would stay waiting for it (a reboot meanwhile).
                future.set_result(self.svc.code("unknown"))
        self._opening.clear()


class SocketLink:
    """A socket as the interpreter's online link (emulator.at.responses.OnlineLink)."""

    def __init__(self, delivery: OnlineDelivery, sock: SslSocket) -> None:
        self.delivery = delivery
        self.sock = sock
        self.limit = delivery.svc.online_buffer
        self._input_paused = False
        sock.on_writable = self._writable
        # AT+QICFG="transpktsize"/"transwaittm" (TCP/IP sockets; an SSL socket sends at once):
        # the host's bytes go out in packets of that size, fewer once the oldest has waited.
        self._qicfg = getattr(delivery.svc, "qicfg", None)
        self._unsent = bytearray()
        self._unsent_timer = None
        self._end_unheard = False        # the peer closed as the host left (ended())

    def resume(self) -> bool:
        """ATO: back to this connection if it is still open -- in transparent access mode
        again when AT+QISWTMD gave it another since (the note: "ATO will change the access
        mode of connection that exits transparent access mode lately"); what waits in it
        goes out after CONNECT.  False: closed since (NO CARRIER)."""
        svc = self.delivery.svc
        if not (svc.holds(self.sock) and self.sock.state is CONNECTED):
            return False
        if self.sock.delivery is not self.delivery:
            self.delivery.adopt(self.sock)
        return True

    def started(self) -> None:
        delivery = self.delivery
        delivery.take_connecting(self.sock)
        self.sock.set_send_limit(self.limit)
        delivery.drop_held_recv(self.sock)       # (the data go out after CONNECT now)
        delivery.flush(self.sock)
        if self.sock.state is not CONNECTED:
            # The peer closed with the handshake's last flight, before CONNECT went out:
            # what it sent is written above; now NO CARRIER (a turn later: the interpreter
            # is still entering online mode).
            asyncio.get_running_loop().call_soon(self._ended_before_start)

    def _ended_before_start(self) -> None:
        delivery, sock = self.delivery, self.sock
        if delivery.online(sock):
            self.ended()
        elif delivery.svc.holds(sock):
            # The port left online mode in the same turn (a hang-up, a DTR drop): the
            # close is reported as one after "+++" is ("closed", or the buffer fall-back).
            delivery.peer_closed(sock)

    def ended(self) -> None:
        """The connection ended while the port was its: what the peer sent, NO CARRIER,
        command mode, and the host's input read again (no drain will come from a closed
        connection to resume it).  In the loop turn the host closed the port (its hang-up
        not handled yet) NO CARRIER and the data would go to nobody: the hang-up takes the
        port offline first (escaped()), and the close is then one after "+++" is."""
        if not self.delivery.svc.modem.host_present():
            self._end_unheard = True
            return
        self.delivery.flush(self.sock, everything=True)
        self.delivery.svc.modem.interpreter.leave_online(self)
        self.release_input()

    def send(self, data: bytes, arrived: float | None = None) -> None:
        if self.sock.state is not CONNECTED:
            log.info("%s socket %d: %d bytes from the host after the connection ended: dropped",
                     self.delivery.svc.kind, self.sock.client_id, len(data))
            return
        if self._qicfg is None:
            self._send(data)
            return
        size, wait = self._qicfg.transparent_packets
        unsent = self._unsent
        unsent += data
        if len(unsent) >= size:
            for at in range(0, len(unsent) - size + 1, size):
                self._send(bytes(unsent[at:at + size]))
            del unsent[:len(unsent) - len(unsent) % size]
            self._stop_unsent_timer()     # what is left came now: its wait starts now
        if arrived is not None and unsent and self._unsent_timer is None:
            # (bytes that came earlier -- "+"s held for their guard time -- waited since then:
            # transwaittm counts from the oldest byte, as for any other)
            wait -= self.delivery.svc.modem.monotonic() - arrived
        if unsent and (wait <= 0 or self.sock.state is not CONNECTED):
            self.flush_unsent()
        elif unsent and self._unsent_timer is None:
            self._unsent_timer = self.delivery.svc.modem.call_later(wait, self.flush_unsent)

    def flush_unsent(self) -> None:
        """Fewer bytes than a packet waited transwaittm (or the host left online mode with
        "+++"): they go now, as one packet."""
        self._stop_unsent_timer()
        if self._unsent:
            data = bytes(self._unsent)
            self._unsent.clear()
            if self.sock.state is CONNECTED and self.delivery.svc.holds(self.sock):
                self._send(data)

    def _stop_unsent_timer(self) -> None:
        if self._unsent_timer is not None:
            self._unsent_timer.cancel()
            self._unsent_timer = None

    def _send(self, data: bytes) -> None:
        self.sock.send(data)
        if self.sock.send_backlog() > self.limit and not self._input_paused:
            self._input_paused = True
            self.delivery.svc.modem.pause_input("online")

    def _writable(self) -> None:
        if self._input_paused:
            self._input_paused = False
            self.delivery.svc.modem.resume_input("online")

    def release_input(self) -> None:
        """The port reads again if this link paused it (the link is going away)."""
        self.power_lost()                # (what waited for a packet goes with the link)
        self._writable()

    def escaped(self) -> None:
        self.flush_unsent()              # what came before the "+++" is not held back
        self._writable()                 # the port reads again (commands now)
        sock = self.sock
        if self.delivery.svc.holds(sock):
            # The network may be held back for the port's output (OnlineDelivery.flush):
            # in command mode the socket reads on into its inbox (up to ssl.recv_buffer, not
            # only once it is below half of it), so a peer's close is seen and reported
            # ("recv", "closed") without waiting for ATO.
            sock.pause_network(False, port_hold_only=True)
        # (Also an open whose CONNECT was never written, its host gone: a peer close kept
        # for the CONNECT is reported now, as after "+++".)
        if (self.delivery.take_connecting(sock) and sock.state is not CONNECTED
                and self.delivery.svc.holds(sock)):
            self.delivery.peer_closed(sock)
        elif self._end_unheard:
            # (a turn later: the hang-up that called this clears what the port queued)
            self._end_unheard = False
            asyncio.get_running_loop().call_soon(self._closed_offline)

    def _closed_offline(self) -> None:
        """The close ended() kept for the hang-up: reported as after "+++" (the data read
        since fall back to buffer mode, else "closed")."""
        delivery, sock = self.delivery, self.sock
        if delivery.svc.holds(sock) and not delivery.online(sock):
            delivery.peer_closed(sock)

    def power_lost(self) -> None:
        """A restart in online mode (the interpreter, before escaped()): the bytes waiting for
        a packet went with the power."""
        self._stop_unsent_timer()
        self._unsent.clear()

    def hang_up(self) -> None:
        """AT&D2: the connection is closed and the socket freed -- as AT+QSSLCLOSE / AT+QICLOSE
        with their default <timeout> (10 s): what the host wrote leaves first, then the
        close_notify and FIN, and the peer has that long to take them.  (A 0 aborted TLS
        connections at once: a slow reader lost the end of the stream and the close_notify.)"""
        self.release_input()             # (what waited for a packet is not sent)
        svc = self.delivery.svc
        svc.close(self.sock.client_id, CLOSE_TIMEOUT_DEFAULT)       # (a task: it runs on its own)


DELIVERIES = (BufferDelivery, PushDelivery, OnlineDelivery)
