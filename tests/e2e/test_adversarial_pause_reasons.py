"""Every reason a socket stops reading the network, against every way out of it (EC2x, TCP
via AT+QIOPEN and SSL via AT+QSSLOPEN, end to end over the pty) -- an audit for siblings of
d639df2 (a resume that used the condition of another pause reason and left the socket paused).

SslSocket has one flag (_paused) for four reasons:
  R1 inbox limit  -- _received pauses at >= ssl.recv_buffer; read() resumes below half of it
                     (AT+QIRD / AT+QSSLRECV, PushDelivery.push, OnlineDelivery.flush).
  R2 port hold    -- OnlineDelivery.flush pauses while the port's backlog is above HIGH_WATER;
                     lifted by flush itself (inbox written out: "output_drained" while online,
                     SocketLink.started on CONNECT / ATO / AT+QISWTMD=<id>,2, ended() before
                     NO CARRIER) and by SocketLink.escaped() below the inbox limit
                     (port_hold_only) on every way out of online mode that keeps the
                     connection: "+++", DTR drop with AT&D1, the host closing the port, an
                     orphaned transparent open, a reboot (then aborted anyway).
  R3 no session   -- _link_made pauses a transport made before the open's session;
                     _open_steps resumes it (inbox empty then).
  R4 close        -- _end_tcp (the peer's close_notify) and _linger (AT+QSSLCLOSE /
                     AT+QICLOSE, AT&D2's close) resume unconditionally so the FIN is seen; the
                     session is closed by then and ignores data, so R1 cannot pause it again.

Transitions audited (the table is in the audit report); the ones a regression could break
and no other file pins are tested here, with the host's reads held until the state is
reached (checked on the socket objects), then the action:
  - R2 with the inbox between half of ssl.recv_buffer and all of it, left by DTR (AT&D1)
    and by the host closing the port (TCP and SSL), and by "+++" (SSL; TCP is
    test_adversarial_flow_stalls.py's): the socket reads on, the peer's close is reported
    ("recv", "closed"; to the next host after a hang-up) and AT+QIRD / AT+QSSLRECV read every
    byte.
  - R1 (inbox past ssl.recv_buffer, the peer still sending), then AT+QICLOSE / AT+QSSLCLOSE
    with a close timeout that never expires (manual time): the linger reads through the
    rest and the peer's close ends it (R4 is not undone by R1).
  - R1 after "+++" (command mode, the peer's FIN unseen behind the pause, as documented),
    then ATO / AT+QISWTMD=<id>,2: CONNECT, every byte, then NO CARRIER.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import pytest

from emulator.io.transport import HIGH_WATER
from emulator.sockets.service import ssl_service
from emulator.sockets.tcpip import tcpip_service
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import DrivenPeer
from tests.e2e.test_adversarial_data_integrity import (
    SSL, SSL_HOST, SSL_PORT, TCP, TCP_HOST, TCP_PORT, Demux, RawStreamServer, no_cr_payload, ssl_open,
    streaming_tls_server, tcp_open)

OK, CONNECT, NO_CARRIER = b"\r\nOK\r\n", b"\r\nCONNECT\r\n", b"\r\nNO CARRIER\r\n"
PEER_HOST, PEER_PORT = "peer.example", 7001
A, B = 3, 4
READS = 150                      # pipelined reads of B, unread: ~230 KB of answers


@pytest.fixture
def modem(ec2x_strict):
    host = ec2x_strict[0]
    assert host.at('AT+QICFG="transwaittm",0') == OK
    assert host.at("AT&D1") == OK
    return ec2x_strict


class Peer:
    """A's server, driven by the test: send(data), close() (TCP: FIN; TLS: close_notify +
    FIN)."""

    def __init__(self, kind: str, emulator, pki) -> None:
        self.kind = kind
        if kind == "tcp":
            self.server = DrivenPeer()
        else:
            self.server = TlsServer(pki.server, mode="sink", session_cache=False, tickets=False)
            self.server.__enter__()
        emulator.router.add_map(PEER_HOST, PEER_PORT, "127.0.0.1", self.server.port)

    def send(self, data: bytes) -> None:
        if self.kind == "tcp":
            self.server.send(data)
        else:
            self.server.wait_connections(1)[0].send(data)

    def close(self) -> None:
        if self.kind == "tcp":
            self.server.shutdown_wr()
        else:
            self.server.wait_connections(1)[0].close(close_notify=True, fin=True)

    def peer_saw_close(self) -> bool:
        if self.kind == "tcp":
            return self.server.eof.is_set()
        conn = self.server.connections[0]
        return conn.close_notify_received or conn.client_eof

    def stop(self) -> None:
        if self.kind == "tcp":
            self.server.close()
        else:
            self.server.__exit__(None, None, None)


class Rig:
    def __init__(self, kind: str, modem, emulator, pki) -> None:
        self.kind, self.emulator = kind, emulator
        self.host, self.advance, self.port = modem
        self.k = SSL if kind == "ssl" else TCP
        self.d = Demux(self.host, self.k)
        self.peer = Peer(kind, emulator, pki)

    def open(self, cid: int, mode: int, host: str, port: int) -> None:
        (ssl_open if self.kind == "ssl" else tcp_open)(self.d, cid, mode, host=host, port=port)

    def svc(self):
        modem = self.port.modem
        return ssl_service(modem) if self.kind == "ssl" else tcpip_service(modem)

    def look(self, cid: int = A) -> dict:
        def f():
            sock = self.svc().sockets.get(cid)
            out = dict(backlog=self.port.port.backlog, online=self.port.modem.interpreter.online_link is not None)
            if sock is not None:
                out.update(inbox=len(sock.inbox), paused=sock._paused, delivery=sock.delivery.name,
                           state=int(sock.state))
            return out
        return self.emulator.run(f)

    def wait(self, pred, what: str, cid: int = A, timeout: float = 5) -> dict:
        deadline = time.monotonic() + timeout
        while not pred(st := self.look(cid)):
            assert time.monotonic() < deadline, (what, st)
            self.d.poll(0.005)
        return st

    def read_all(self, d: Demux, cid: int = A) -> bytes:
        got = bytearray()
        while chunk := d.read(cid, 1500):
            got += chunk
        return bytes(got)

    def close_cmd(self, cid: int) -> str:
        return f"AT+QSSLCLOSE={cid}" if self.kind == "ssl" else f"AT+QICLOSE={cid}"


@pytest.fixture(params=["tcp", "ssl"])
def rig(request, modem, emulator, pki):
    r = Rig(request.param, modem, emulator, pki)
    try:
        yield r
    finally:
        r.peer.stop()


@contextmanager
def streaming_b(rig: Rig, pki):
    """Socket B (buffer mode) whose server streams 1 MB: pipelined reads of it, unread, put
    the port's backlog above HIGH_WATER when the test wants."""
    stream = no_cr_payload(1_000_000, 6)
    if rig.kind == "ssl":
        server, route = streaming_tls_server(pki, stream), (SSL_HOST, SSL_PORT)
    else:
        server, route = RawStreamServer(stream), (TCP_HOST, TCP_PORT)
    with server:
        rig.emulator.router.add_map(*route, "127.0.0.1", server.port)
        rig.open(B, 0, *route)
        rig.d.send(B, b"g")
        yield


def hold_a_half_full_for_the_port(rig: Rig, payload: bytes) -> None:
    """A holds `payload` (between half of ssl.recv_buffer and all of it) in buffer mode; the
    port's backlog goes above HIGH_WATER (B's answers, unread); AT+QISWTMD=A,2: its CONNECT
    flush holds the network back for the port with the payload still in A (R2)."""
    rig.open(A, 0, PEER_HOST, PEER_PORT)
    rig.peer.send(payload)
    rig.wait(lambda st: st["inbox"] == len(payload), "A's payload")
    rig.wait(lambda st: st["paused"], "B at its inbox limit", cid=B)
    rig.reads = 0
    deadline = time.monotonic() + 5
    while rig.look()["backlog"] <= HIGH_WATER:          # (B's server may lag: more reads)
        assert time.monotonic() < deadline and rig.reads < 1500, rig.look()
        rig.host.write(rig.k.read_cmd(B, 1500) * READS)
        rig.reads += READS
        rig.emulator.wait_received(rig.port, rig.host.written)
    rig.host.write(f"AT+QISWTMD={A},2\r".encode())
    rig.emulator.wait_received(rig.port, rig.host.written)
    st = rig.look()
    assert st["backlog"] > HIGH_WATER and st["paused"] and st["inbox"] == len(payload), st
    assert st["delivery"] == "online" and st["online"], st


LEAVE = [("+++", "ssl"), ("dtr", "tcp"), ("dtr", "ssl"), ("hangup", "tcp"), ("hangup", "ssl")]


@pytest.mark.parametrize("leave,kind", LEAVE)
def test_leaving_online_with_a_half_full_inbox_held_for_the_port_reads_on_and_reports_the_close(
        leave, kind, modem, emulator, pki):
    """R2 with 48 KiB in A (ssl.recv_buffer 64 KiB), then online mode ends with the
    connection kept -- "+++", a DTR drop with AT&D1, the host closing the port -- while the
    backlog is still above HIGH_WATER: the socket must read on (not paused), so the peer's
    close is reported in command mode ("recv", then "closed": the buffer fall-back) and every
    byte is read with AT+QIRD / AT+QSSLRECV -- by the next host after a hang-up."""
    rig = Rig(kind, modem, emulator, pki)
    payload = no_cr_payload(48 * 1024, 5)
    host = rig.host
    try:
        with streaming_b(rig, pki):
            hold_a_half_full_for_the_port(rig, payload)
            if leave == "+++":
                rig.advance(1.1)
                host.write(b"+++")
                rig.advance(1.1)
            elif leave == "dtr":
                emulator.run(rig.port.modem.set_dtr, 0)
                emulator.run(rig.port.modem.set_dtr, 1)
            else:
                epoch = emulator.run(lambda: rig.port.modem.epoch)
                host.close()
                deadline = time.monotonic() + 5
                while emulator.run(lambda: rig.port.modem.epoch) == epoch:
                    assert time.monotonic() < deadline, "the hang-up was not seen"
                    time.sleep(0.005)
            st = rig.look()
            assert not st["online"] and st["delivery"] == "online", st
            assert not st["paused"] and st["inbox"] == len(payload), st       # reads on
            if leave == "hangup":
                host = Host(rig.port.path)
                emulator.run(rig.port.port.look_for_host)
                d = Demux(host, rig.k)
            else:
                d = rig.d
            rig.peer.close()
            if leave != "hangup":
                for _ in range(rig.reads):
                    d.read_answer(1500)
                d.expect(CONNECT)
                d.expect(OK)                     # the escape / DTR drop: no A data before it
            deadline = time.monotonic() + 5
            while A not in d.closed:
                assert time.monotonic() < deadline, ("no closed URC", rig.look())
                d.poll(0.01)
            assert d.recv_urcs[A] >= 1
            assert rig.read_all(d) == payload
            d.command(rig.close_cmd(A))
            d.command(rig.close_cmd(B))
    finally:
        if host is not rig.host:
            host.close()
        rig.peer.stop()


def test_host_close_of_a_socket_paused_at_its_inbox_limit_ends_with_the_peers_close(rig):
    """R1: A (buffer mode) has stopped reading past ssl.recv_buffer with ~190 KB more in
    the kernel; the host closes it with a close timeout that never expires (manual time).
    The linger resumes reading (R4) to see the peer's close: the rest is read and dropped
    (the session is closed, so R1 does not pause it again) and the peer's close, after our
    FIN / close_notify, ends the close: OK at once."""
    payload = no_cr_payload(256 * 1024, 9)
    rig.open(A, 0, PEER_HOST, PEER_PORT)
    rig.peer.send(payload)
    st = rig.wait(lambda st: st["paused"], "A at its inbox limit")
    assert 64 * 1024 <= st["inbox"] < len(payload), st
    deadline = time.monotonic() + 5
    while not rig.d.recv_urcs[A]:                        # buffer mode's one "recv"
        assert time.monotonic() < deadline
        rig.d.poll(0.005)
    rig.host.write(f"{rig.close_cmd(A)},10\r".encode())
    deadline = time.monotonic() + 5
    while not rig.peer.peer_saw_close():                 # our FIN / close_notify
        assert time.monotonic() < deadline, ("no close from the modem", rig.look())
        time.sleep(0.005)
    rig.peer.close()
    rig.d.expect(OK, timeout=5)          # the linger ended on the peer's close, not its timeout
    assert rig.look() == dict(backlog=0, online=False)


@pytest.mark.parametrize("back", ["ATO", "QISWTMD"])
def test_peer_close_behind_the_inbox_limit_after_escape_comes_as_no_carrier_on_return(rig, back):
    """R1 in command mode after "+++": the inbox past ssl.recv_buffer, the peer's last bytes
    and its close behind the pause (unseen, as docs/behaviour.md says: "seen only once the
    host has read the buffer down, or at ATO").  ATO / AT+QISWTMD=A,2: CONNECT, every byte,
    then NO CARRIER; the socket is closing (state 4)."""
    payload = no_cr_payload(200 * 1024, 13)
    rig.open(A, 2, PEER_HOST, PEER_PORT)
    rig.advance(1.1)
    rig.host.write(b"+++")
    rig.advance(1.1)
    rig.d.expect(OK)
    rig.peer.send(payload)
    st = rig.wait(lambda st: st["paused"], "A at its inbox limit")
    assert 64 * 1024 <= st["inbox"] < len(payload) and not st["online"], st
    rig.peer.close()
    time.sleep(0.1)
    st = rig.look()
    assert st["paused"] and st["state"] == 2, st          # the close waits behind the pause
    assert rig.host.quiet_for(0.05) == b""
    rig.host.write(b"ATO\r" if back == "ATO" else f"AT+QISWTMD={A},2\r".encode())
    rig.d.expect(CONNECT)
    got = rig.host.read_exactly(len(payload), timeout=10)
    assert got == payload
    rig.d.expect(NO_CARRIER)
    assert rig.look()["state"] == 4
    rig.d.command(rig.close_cmd(A))
