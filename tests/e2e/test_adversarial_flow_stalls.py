"""Flow control across access-mode switches, with the host's reads held at every switch point
(EC2x, TCP via AT+QIOPEN and SSL via AT+QSSLOPEN, end to end over the pty).

The race a stress run can only hope for is made deterministic here: before each switch the
host stops reading until the port's output backlog has gone above the transport's HIGH_WATER
(so pushing and flushing wait for its one "output_drained", at LOW_WATER) and
the socket has stopped reading the network (push: its inbox past ssl.recv_buffer; transparent:
OnlineDelivery.flush held it for the port), then writes the switch ("+++", ATO,
AT+QISWTMD=<id>,0/1/2) and waits until the modem has read it -- so the switch always acts
while the producer is paused and the only way on is the transport's one "output_drained".
Then the host reads everything in odd sizes: every byte of the server's stream must arrive
once, in order, and the socket must end neither paused nor holding data.

What this file pins came out of a 1-in-200 "stall" of
test_qiswtmd_marathon_while_tcp_server_streams (read_exactly(30000) got 23,247 bytes, then
nothing for 20 s).  It was no emulator stall: Demux.poll() takes push URCs for as long as
more keep coming, so push_until(n) (a lower bound checked only between polls) can swallow
hundreds of kilobytes when the host reads as fast as the modem pushes (seen: 795 KB taken for
a 50 KB target); the 2 MB stream then runs out before the last transparent leg, and the
emulator -- all 2,000,000 bytes received, inbox empty, backlog 0, reading on -- has nothing
left to send.  The emulator paths the stall was blamed on (a drain event while the link is
not the port's, the push/online drain handlers on one event, the inbox-limit pause) are
driven here to their worst ordering and keep every byte.

One real bug on the way (fixed; the test says "Was a bug"): after "+++" a socket whose network
OnlineDelivery.flush paused while its inbox held between half of ssl.recv_buffer and all of it
stayed paused, so the peer's close was not reported in command mode although docs/behaviour.md
says the socket reads on up to ssl.recv_buffer after the escape.
"""
from __future__ import annotations

import time

import pytest

from emulator.io.transport import HIGH_WATER
from emulator.sockets.service import ssl_service
from emulator.sockets.tcpip import tcpip_service
from tests.e2e.test_adversarial_data_integrity import (
    SSL, SSL_HOST, SSL_PORT, TCP, TCP_HOST, TCP_PORT, Demux, RawStreamServer, no_cr_payload, ssl_open,
    streaming_tls_server, tcp_open)

OK, CONNECT = b"\r\nOK\r\n", b"\r\nCONNECT\r\n"
CID = 3
STREAM = 700_000
ODD = (1, 7, 333, 1499, 4096, 65536, 13)


class Driver:
    """One socket, the host's view of its mode, everything it got in order (`got`)."""

    def __init__(self, d: Demux, emulator, port, advance, stream: bytes, ssl: bool) -> None:
        self.d, self.emulator, self.port, self.advance = d, emulator, port, advance
        self.stream, self.ssl = stream, ssl
        self.got = bytearray()
        self.answers: list[bytes] = []      # written while held, not read yet, in order
        self.mode = None

    # -- the emulator's side, read on its loop -------------------------------------------
    def _sock(self):
        svc = ssl_service(self.port.modem) if self.ssl else tcpip_service(self.port.modem)
        return svc.sockets.get(CID)

    def state(self) -> dict:
        def look() -> dict:
            sock = self._sock()
            port = self.port.port
            return dict(backlog=port.backlog, waits_for_drain=port._above_high_water,
                        paused=sock._paused, inbox=len(sock.inbox), delivery=sock.delivery.name)
        return self.emulator.run(look)

    # -- holding and switching -------------------------------------------------------
    def hold(self) -> dict:
        """Read nothing until the port's backlog has gone above HIGH_WATER (the producers
        wait for its "output_drained", at LOW_WATER) and the socket has stopped reading the
        network."""
        deadline = time.monotonic() + 5
        while True:
            st = self.state()
            if st["waits_for_drain"] and st["paused"]:
                return st
            assert time.monotonic() < deadline, st
            time.sleep(0.005)

    def switch(self, op: str) -> dict:
        """Write a switch without reading; return the state once the modem has acted on it."""
        host = self.d.host
        if op == "+++":
            self.advance(1.1)
            host.write(b"+++")
            self.advance(1.1)                # the guard time after: OK is queued behind the data
            self.answers.append(b"+++")
            self.mode = "command"
        else:
            host.write(op.encode() + b"\r")
            self.emulator.wait_received(self.port, host.written)
            if op == "ATO" or op.endswith(",2"):
                self.answers.append(CONNECT)
                self.mode = "online"
            else:
                self.answers.append(OK)
                self.mode = {"0": "buffer", "1": "push"}[op[-1]]
        return self.state()

    # -- reading ------------------------------------------------------------------------
    def _check(self) -> None:
        assert self.got == self.stream[:len(self.got)], len(self.got)

    def answers_read(self) -> None:
        """What the held switches answered, in order, with the data that came before each."""
        d = self.d
        for answer in self.answers:
            if answer == b"+++":             # transparent data, then OK (no CR in the stream)
                tail = d.host.read_until(OK, timeout=10)[:-len(OK)]
                assert b"\r" not in tail
                self.got += tail
            else:
                d.expect(answer, timeout=10)         # push URCs before it are taken first
                self.got += d.pushed.pop(CID, b"")
            self._check()
        self.answers.clear()

    def take(self, n: int | None) -> None:
        """At least n more bytes in the current mode (None: the rest of the stream), read
        in odd sizes."""
        self.answers_read()
        d, want = self.d, len(self.stream) if n is None else len(self.got) + n
        deadline = time.monotonic() + 10
        i = 0
        while len(self.got) < want:
            assert time.monotonic() < deadline, (self.mode, len(self.got), self.state())
            if self.mode == "online":
                size = min(ODD[i % len(ODD)], want - len(self.got))
                try:
                    self.got += d.host.read_exactly(size, timeout=3)
                except AssertionError as exc:         # a stall: say where everything is
                    raise AssertionError(f"{exc}: got {len(self.got)} of {len(self.stream)}, {self.state()}, "
                                         f"server sent {self.emulator.run(lambda: self._sock().bytes_received)}") from None
            elif self.mode == "push":        # one URC at a time: never more than asked + 1500
                if not d._urc():
                    d.host._fill()
                self.got += d.pushed.pop(CID, b"")
            else:
                self.got += d.read(CID, ODD[i % 4])
            i += 1
        self._check()

    def finish(self) -> None:
        """The rest of the stream in transparent mode, every byte; then nothing held."""
        self.take(None)
        assert self.got == self.stream
        deadline = time.monotonic() + 5
        while (st := self.state())["paused"] or st["inbox"]:
            assert time.monotonic() < deadline, st
            time.sleep(0.005)
        self.switch("+++")
        self.answers_read()
        assert self.d.host.pending == b""


@pytest.fixture
def modem(ec2x_strict):
    """(host, advance, port) as test_adversarial_data_integrity's: transparent mode sends what
    the host writes at once (AT+QICFG="transwaittm",0)."""
    assert ec2x_strict[0].at('AT+QICFG="transwaittm",0') == b"\r\nOK\r\n"
    return ec2x_strict


@pytest.fixture(params=["tcp", "ssl"])
def driver(request, modem, emulator, pki):
    host, advance, port = modem
    stream = no_cr_payload(STREAM, 11)
    ssl = request.param == "ssl"
    if ssl:
        server = streaming_tls_server(pki, stream, [16384, 1, 4000, 16383, 1500])
        kind, open_, route = SSL, ssl_open, (SSL_HOST, SSL_PORT)
    else:
        server = RawStreamServer(stream)
        kind, open_, route = TCP, tcp_open, (TCP_HOST, TCP_PORT)
    with server:
        emulator.router.add_map(*route, "127.0.0.1", server.port)
        d = Demux(host, kind)
        open_(d, CID, 0)
        d.send(CID, b"g")                    # the server streams from now on
        drv = Driver(d, emulator, port, advance, stream, ssl)
        drv.mode = "buffer"
        yield drv
        d.command(f"AT+QSSLCLOSE={CID}" if ssl else f"AT+QICLOSE={CID}")


def test_push_to_transparent_while_held_loses_nothing(driver):
    """Push stopped on the backlog and the inbox limit; AT+QISWTMD=<id>,2 then: the push
    URCs already written, CONNECT, the inbox and the rest of the stream unframed."""
    driver.switch(f"AT+QISWTMD={CID},1")
    driver.take(20_000)
    assert driver.hold()["delivery"] == "push"
    st = driver.switch(f"AT+QISWTMD={CID},2")
    assert st["waits_for_drain"] and st["paused"] and st["delivery"] == "online", st
    driver.finish()


def test_escape_then_push_then_transparent_each_while_held(driver):
    """The marathon's last leg, every switch with the producer paused: +++ and
    AT+QISWTMD=<id>,1 written unread behind a full backlog, then AT+QISWTMD=<id>,2 behind
    a backlog of push URCs."""
    driver.switch(f"AT+QISWTMD={CID},2")
    driver.take(50_000)
    driver.hold()
    driver.switch("+++")
    st = driver.switch(f"AT+QISWTMD={CID},1")
    assert st["waits_for_drain"] and st["delivery"] == "push", st
    driver.take(40_000)
    driver.hold()
    st = driver.switch(f"AT+QISWTMD={CID},2")
    assert st["waits_for_drain"] and st["paused"], st
    driver.finish()


def test_escape_and_ato_while_held(driver):
    """+++ and ATO both written behind a full backlog: the data before the escape, OK,
    CONNECT, then what waited in the socket and the rest."""
    driver.switch(f"AT+QISWTMD={CID},2")
    driver.take(30_000)
    driver.hold()
    driver.switch("+++")
    st = driver.switch("ATO")
    assert st["waits_for_drain"] and st["delivery"] == "online", st
    driver.finish()


def test_transparent_to_buffer_to_push_to_transparent_while_held(driver):
    """+++ then AT+QISWTMD=<id>,0 behind a full backlog, odd AT+QIRD/QSSLRECV reads, push
    switched on with the inbox at its limit, transparent again behind pushed data."""
    driver.switch(f"AT+QISWTMD={CID},2")
    driver.take(30_000)
    driver.hold()
    driver.switch("+++")
    driver.switch(f"AT+QISWTMD={CID},0")
    driver.answers_read()
    deadline = time.monotonic() + 5
    while not (st := driver.state())["paused"]:      # buffer mode: the inbox fills to its limit
        assert time.monotonic() < deadline, st
        time.sleep(0.005)
    driver.d.recv_urcs.clear()
    driver.take(3_000)
    driver.switch(f"AT+QISWTMD={CID},1")
    driver.take(10_000)
    driver.hold()
    st = driver.switch(f"AT+QISWTMD={CID},2")
    assert st["waits_for_drain"] and st["paused"], st
    driver.finish()


@pytest.mark.parametrize("via", ["buffer", "ATO", "QISWTMD"])
def test_back_to_transparent_with_the_inbox_full_and_no_drain_to_come(driver, via):
    """The socket stopped reading (its inbox limit) while the port was not its own, and
    the host has read everything since (the port's drain, if any, came while the link was
    not online and was skipped: nothing else will wake it): CONNECT itself must write the
    inbox and resume the network.  via: from buffer mode with AT+QISWTMD=<id>,2, or from
    "+++" (written behind a full backlog) with ATO / AT+QISWTMD=<id>,2."""
    if via != "buffer":
        driver.switch(f"AT+QISWTMD={CID},2")
        driver.take(20_000)
        driver.hold()
        driver.switch("+++")
        driver.answers_read()                # the drain fires now, in command mode
    deadline = time.monotonic() + 5
    # (paused at the inbox limit; after "+++" possibly with less: the xfail test below)
    while not ((st := driver.state())["paused"] and st["inbox"] and st["backlog"] == 0
               and not st["waits_for_drain"]):
        assert time.monotonic() < deadline, st
        time.sleep(0.005)
    while via == "buffer" and not driver.d.recv_urcs[CID]:      # buffer mode's one "recv" URC
        assert time.monotonic() < deadline
        driver.d.poll(0.005)
    driver.d.poll(0.05)
    assert driver.d.host.pending == b"", bytes(driver.d.host.pending)
    driver.switch("ATO" if via == "ATO" else f"AT+QISWTMD={CID},2")
    driver.finish()


# Was a bug, fixed: SocketLink.escaped() resumed the network with sock.pause_network(False),
# which resumes only below HALF of ssl.recv_buffer (the AT+QIRD hysteresis): a socket that
# OnlineDelivery.flush paused for the port's backlog while it held between recv_buffer/2 and
# recv_buffer bytes stayed paused after "+++" (output_drained then skipped it: not online), so
# the peer's close was not reported in command mode until ATO / AT+QISWTMD.  The escape now
# lifts the port's hold up to the inbox limit itself (pause_network(False, port_hold_only=True)).
def test_peer_close_after_escape_is_reported_when_the_escape_found_the_inbox_half_full(
        modem, emulator):
    """A's inbox holds 48 KiB (between half of ssl.recv_buffer and all of it); the port's
    backlog is above HIGH_WATER (AT+QIRD answers of socket B, pipelined, unread) when
    AT+QISWTMD=A,2 makes A transparent, so its CONNECT flush pauses A's network with those
    48 KiB still in it; "+++" then; the peer closes.  After "+++" the socket reads on up to
    ssl.recv_buffer: the close is seen and reported as one after "+++" is (the fall-back to
    buffer mode: "recv", then "closed"), and AT+QIRD reads every byte."""
    from tests.e2e.socket_support import DrivenPeer
    host, advance, port = modem
    a, b = 3, 4
    payload = no_cr_payload(48 * 1024, 5)
    peer = DrivenPeer()
    try:
        with RawStreamServer(no_cr_payload(1_000_000, 6)) as stream_server:
            emulator.router.add_map("peer.example", 7001, "127.0.0.1", peer.port)
            emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", stream_server.port)
            d = Demux(host, TCP)
            tcp_open(d, a, 0, host="peer.example", port=7001)
            tcp_open(d, b, 0)
            d.send(b, b"g")
            peer.send(payload)

            def look(cid):
                def f():
                    sock = tcpip_service(port.modem).sockets[cid]
                    return dict(inbox=len(sock.inbox), paused=sock._paused, backlog=port.port.backlog,
                                delivery=sock.delivery.name)
                return emulator.run(f)
            deadline = time.monotonic() + 5
            while not (look(a)["inbox"] == len(payload) and look(b)["paused"]):
                assert time.monotonic() < deadline, (look(a), look(b))
                d.poll(0.005)
            # AT+QIRD answers of B, unread, until the port's backlog is above HIGH_WATER
            # (~230 KB for 150 reads when B's refills from the network keep up; on a
            # loaded machine a burst of reads can outrun them -- the rest answer
            # "+QIRD: 0" -- so more are sent until the backlog is there)
            reads = 0
            deadline = time.monotonic() + 20
            while look(b)["backlog"] <= HIGH_WATER:
                assert time.monotonic() < deadline, look(b)
                host.write(f"AT+QIRD={b},1500\r".encode() * 50)
                reads += 50
                emulator.wait_received(port, host.written)
                settle = time.monotonic() + 0.5
                while look(b)["backlog"] <= HIGH_WATER and time.monotonic() < settle:
                    time.sleep(0.01)
            host.write(f"AT+QISWTMD={a},2\r".encode())
            emulator.wait_received(port, host.written)
            st = look(a)
            assert st["backlog"] > HIGH_WATER and st["paused"] and st["inbox"] == len(payload), st
            advance(1.1)
            host.write(b"+++")
            advance(1.1)
            peer.shutdown_wr()                                       # the peer's FIN
            for _ in range(reads):
                d.read_answer(1500)              # (B's buffer may run dry: "+QIRD: 0")
            d.expect(CONNECT)
            d.expect(OK)                                             # the escape (no data: held)
            deadline = time.monotonic() + 3
            while a not in d.closed:
                assert time.monotonic() < deadline, ("no closed URC", look(a))
                d.poll(0.01)
            assert d.recv_urcs[a] >= 1
            got = bytearray()
            while chunk := d.read(a, 1500):
                got += chunk
            assert got == payload
            d.command(f"AT+QICLOSE={a}")
            d.command(f"AT+QICLOSE={b}")
    finally:
        peer.close()
