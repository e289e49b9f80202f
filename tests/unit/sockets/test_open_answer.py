"""An open's success answer is given in the network callback that finished the handshake
(SslSocket._pump -> _established), not loop turns later when the open's task resumes
from its wait: the host hears "+QSSLOPEN: <id>,0" as soon as the server's last flight is
read.  Data in the same bytes as the last flight is news of an open socket, after the
answer; a negotiate timer due in the same turn cannot take the answer back."""
from __future__ import annotations

import asyncio
import socket

from emulator.io.network import Dialled
from emulator.sockets.plain_session import PlainSession, PlainSettings
from emulator.sockets.ssl_socket import CONNECTED
from tests.unit.sockets.test_dial import Owner, make
from tls_engine import AppData, HandshakeComplete, TlsFailure


class LastFlight(PlainSession):
    """A session whose handshake ends with the first bytes the server sends (everything
    after b"|" in them is application data, as a server's first record after Finished)."""

    def start(self) -> None:
        self.state = "handshaking"

    def receive(self, data: bytes) -> None:
        if self.state == "handshaking" and data:
            self.state = "established"
            self._events.append(HandshakeComplete(version="TLSv1.2", cipher_id=0xC02F,
                                                  cipher_name="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                                  alpn=None, resumed=False))
            data = data.partition(b"|")[2]
            if data:
                self._events.append(AppData(data))
            return
        super().receive(data)


class Recorder(Owner):
    def __init__(self) -> None:
        super().__init__(session_factory=LastFlight)
        self.log: list[str] = []

    def on_opened(self, sock, kind, reason, exc=None) -> None:
        super().on_opened(sock, kind, reason, exc)
        self.log.append(f"opened {kind}")

    def on_data(self, sock, was_empty) -> None:
        self.log.append(f"data {bytes(sock.inbox)!r}")

    def on_closed(self, sock, reason) -> None:
        self.log.append(f"closed {reason}")


async def opened_and_waiting(owner: Recorder, negotiate: float = 10, manual_time: bool = False):
    """An open whose task waits for the handshake, and the server's side of it."""
    server = socket.create_server(("127.0.0.1", 0))
    sock, router = make(owner, server.getsockname()[1], manual_time=manual_time)
    sock.open(router, PlainSettings(), negotiate)
    for _ in range(50):                       # the task makes asyncio's transport, then waits
        await asyncio.sleep(0)
    assert sock._transport is not None and not isinstance(sock._transport, Dialled)
    conn, _ = server.accept()
    server.close()
    return sock, conn


def test_the_answer_comes_in_the_callback_that_read_the_last_flight():
    async def main():
        owner = Recorder()
        sock, conn = await opened_and_waiting(owner)
        protocol = sock._transport.get_protocol()
        protocol.data_received(b"finished")
        # No loop turn since the bytes came: the host has its answer already.
        assert owner.opened == [(None, "")]
        assert sock.state is CONNECTED
        for _ in range(10):                     # the task, resuming, answers nothing more
            await asyncio.sleep(0)
        assert owner.opened == [(None, "")]
        sock.abort()
        conn.close()
    asyncio.run(main())


def test_data_with_the_last_flight_follows_the_answer():
    async def main():
        owner = Recorder()
        sock, conn = await opened_and_waiting(owner)
        sock._transport.get_protocol().data_received(b"finished|hello")
        assert owner.log == ["opened None", "data b'hello'"]
        for _ in range(10):
            await asyncio.sleep(0)
        assert owner.log == ["opened None", "data b'hello'"]
        sock.abort()
        conn.close()
    asyncio.run(main())


def test_a_negotiate_timer_due_in_the_same_turn_does_not_undo_the_answer():
    async def main():
        owner = Recorder()
        # (manual time: on the real clock the timer, armed at the open, fell due turns before
        # a callback scheduled "as late" once the open was waiting -- on a loaded machine the
        # timeout won and the test failed)
        sock, conn = await opened_and_waiting(owner, negotiate=0.05, manual_time=True)
        protocol = sock._transport.get_protocol()

        def same_turn() -> None:
            sock._timers.advance(0.05)        # the negotiate timer fires: the wait's timeout is due
            protocol.data_received(b"finished")   # and the handshake ends in the same callback
        asyncio.get_running_loop().call_soon(same_turn)
        for _ in range(20):
            await asyncio.sleep(0)
        assert owner.opened == [(None, "")]
        assert sock.state is CONNECTED
        sock.abort()
        conn.close()
    asyncio.run(main())


class FailsRightAfter(PlainSession):
    """A session whose handshake succeeds and fails in the same events, before the open's
    task waits (at the dial: start() itself)."""

    def start(self) -> None:
        self.state = "failed"
        self._events.append(HandshakeComplete(version="TLSv1.2", cipher_id=0xC02F,
                                              cipher_name="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                                              alpn=None, resumed=False))
        self._events.append(TlsFailure("protocol_error", "bad record MAC"))


def test_a_failure_right_after_the_handshake_before_the_wait_is_reported_closed():
    """Reported after the open's answer as the peer's end, not lost: the socket must not
    look connected on a failed session."""
    async def main():
        server = socket.create_server(("127.0.0.1", 0))
        owner = Recorder()
        owner.session_factory = FailsRightAfter
        sock, router = make(owner, server.getsockname()[1])
        sock.open(router, PlainSettings(), 10)
        for _ in range(50):
            await asyncio.sleep(0)
        assert owner.log == ["opened None", "closed TLS failure: bad record MAC right after the handshake"]
        sock.abort()
        server.close()
    asyncio.run(main())
