"""Review of bf8abe7: direct-push (access mode 1) data wait for a host when no program holds the
pty (Modem.host_present, PushDelivery._host_keeps_up, "host_attached" a loop turn after a
program opens the port).  SSL sockets (AT+QSSLOPEN ...,1 -> +QSSLURC: "recv",<id>,<len>) and
TCP/UDP sockets (AT+QIOPEN ...,1 -> +QIURC: "recv",...) against real peers on 127.0.0.1
(emulator.testing.peers: Python ssl, plain sockets) routed with emulator.router.add_map.

Every wait is on bytes or on emulator state (inbox sizes, attached, paused), never a sleep
racing the emulator; quiet_for() only shows that nothing more comes.

Found, and fixed (the four tests failed before): Modem.host_present() asked
port.look_for_host(), which is True while `attached` -- also after the host closed the pty and
before the hang-up is handled.  A push made in that loop turn (data arriving, or port_idle after
a prompt's SEND OK when the host wrote its data and closed in one go) was written to nobody:
PtyPort.write saw _host_gone() and dropped it, the bytes already taken from the inbox (lost,
counted read).  host_present() now asks PtyPort.host_holds() (attached and not gone).
"""
from __future__ import annotations

import random
import re
import socket
import threading
import time

import pytest

from emulator.sockets.service import ssl_service
from emulator.sockets.ssl_socket import CLOSING
from emulator.sockets.tcpip import tcpip_service
from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import free_port, udp_peer, wait_for

OK = b"\r\nOK\r\n"
SSL_NAME, SSL_PORT = "review-h-ssl.example", 4477
TCP_NAME, TCP_PORT = "review-h-tcp.example", 7377
RECV_MAX = 1500          # ec2x.toml: ssl.recv_max and tcpip.recv_max
RECV_BUFFER = 65536      # ec2x.toml: ssl.recv_buffer and tcpip.recv_buffer
KINDS = ["SSL", "TCP"]


def pattern(n: int) -> bytes:
    """n seeded random bytes (no period: a tail is found once)."""
    return random.Random(n).randbytes(n)


class Rig:
    """One EC2x with PDP 1 up, a sink TLS server and a sink TCP server routed."""

    def __init__(self, emulator, open_modem, tls, tcp, **modem_kw) -> None:
        self.emulator, self.tls, self.tcp = emulator, tls, tcp
        self.host, self.port = open_modem("ec2x", **modem_kw)
        assert self.host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QSSLCFG="seclevel",1,0') == OK
        emulator.router.add_map(TCP_NAME, TCP_PORT, "127.0.0.1", tcp.port)
        emulator.router.add_map(SSL_NAME, SSL_PORT, "127.0.0.1", tls.port)
        self.extra_hosts: list[Host] = []

    def open(self, kind: str, cid: int, mode: int = 1):
        """Open socket cid (kind SSL or TCP) in access mode `mode`; the server's connection."""
        if kind == "SSL":
            n = len(self.tls.connections)
            assert self.host.at(f'AT+QSSLOPEN=1,1,{cid},"{SSL_NAME}",{SSL_PORT},{mode}') == OK
            assert self.host.read_until(b"+QSSLOPEN: %d,0\r\n" % cid, 20) == b"\r\n+QSSLOPEN: %d,0\r\n" % cid
            return self.tls.wait_handshake(n, timeout=20)
        n = len(self.tcp.connections)
        assert self.host.at(f'AT+QIOPEN=1,{cid},"TCP","{TCP_NAME}",{TCP_PORT},0,{mode}') == OK
        assert self.host.read_until(b"+QIOPEN: %d,0\r\n" % cid, 10) == b"\r\n+QIOPEN: %d,0\r\n" % cid
        return self.tcp.wait_connection(n)

    def svc(self, kind: str):
        return ssl_service(self.port.modem) if kind == "SSL" else tcpip_service(self.port.modem)

    def inbox(self, kind: str, cid: int) -> int:
        def look():
            sock = self.svc(kind).sockets.get(cid)
            return -1 if sock is None else len(sock.inbox)
        return self.emulator.run(look)

    def wait_inbox(self, kind: str, cid: int, n: int, timeout: float = 10) -> None:
        wait_for(lambda: self.inbox(kind, cid) == n, timeout, f"{kind} {cid} holds {n}")

    def state(self, kind: str, cid: int):
        return self.emulator.run(lambda: self.svc(kind).sockets[cid].state)

    def paused(self, kind: str, cid: int) -> bool:
        return self.emulator.run(lambda: self.svc(kind).sockets[cid]._paused)

    def attached(self) -> bool:
        return self.emulator.run(lambda: self.port.port.attached)

    def detach(self) -> None:
        self.host.close()
        wait_for(lambda: not self.attached(), 10, "hang-up seen")

    def reattach(self, look: bool = True) -> Host:
        self.host = Host(self.port.path)
        self.extra_hosts.append(self.host)
        if look:
            self.emulator.run(self.port.port.look_for_host)
        return self.host

    def close_all(self) -> None:
        for h in self.extra_hosts:
            h.close()


def urc(kind: str, cid: int, n: int) -> bytes:
    tag = b"+QSSLURC" if kind == "SSL" else b"+QIURC"
    return b'\r\n%s: "recv",%d,%d\r\n' % (tag, cid, n)


def closed(kind: str, cid: int) -> bytes:
    tag = b"+QSSLURC" if kind == "SSL" else b"+QIURC"
    return b'\r\n%s: "closed",%d\r\n' % (tag, cid)


def pushes(kind: str, cid: int, data: bytes) -> bytes:
    """What pushing `data` held in one inbox looks like: recv_max-sized URCs, CR LF after each."""
    return b"".join(urc(kind, cid, len(data[i:i + RECV_MAX])) + data[i:i + RECV_MAX] + b"\r\n"
                    for i in range(0, len(data), RECV_MAX))


PUSH = re.compile(rb'\r\n\+(QSSLURC|QIURC): "recv",(\d+),(\d+)\r\n')


def read_pushes(host: Host, want: dict[int, int], timeout: float = 20) -> dict[int, bytearray]:
    """Parse push URCs (each whole: header, exactly <len> bytes, CR LF) until want[cid] bytes of
    every socket came; anything else in between fails."""
    got = {cid: bytearray() for cid in want}
    deadline = time.monotonic() + timeout
    while any(len(got[c]) < want[c] for c in want):
        while len(host.pending) < 40 and time.monotonic() < deadline:
            before = len(host.pending)
            host._fill()
            if PUSH.match(bytes(host.pending)) or len(host.pending) == before:
                break
        m = PUSH.match(bytes(host.pending[:60]))
        if not m:
            assert time.monotonic() < deadline, (want, {c: len(g) for c, g in got.items()}, bytes(host.pending[:120]))
            host._fill()
            continue
        n = int(m.group(3))
        assert 0 < n <= RECV_MAX, m.group(0)
        del host.pending[:m.end()]
        body = host.read_exactly(n + 2, max(0.1, deadline - time.monotonic()))
        assert body[-2:] == b"\r\n", body[-10:]
        got[int(m.group(2))] += body[:-2]
    return got


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    with TcpServer("sink") as tcp, TlsServer(mode="sink", session_cache=False, tickets=False) as tls:
        r = Rig(emulator, open_modem, tls, tcp)
        yield r
        r.close_all()


# == what holds ======================================================================================
@pytest.mark.parametrize("kind", KINDS)
def test_bursts_while_detached_pushed_whole_in_order_at_most_recv_max(rig, kind):
    """Three bursts (700, 1200, 2600 bytes) reach the socket while nobody holds the port; the next
    host gets the 4500 bytes as three whole 1500-byte pushes, in order, CR LF after each, nothing
    else; AT then answers OK alone."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(4500)
    at = 0
    for size in (700, 1200, 2600):
        peer.send(data[at:at + size])
        at += size
        rig.wait_inbox(kind, 1, at)
    host = rig.reattach()
    expected = pushes(kind, 1, data)
    assert host.read_exactly(len(expected), 10) == expected
    assert host.at("AT") == OK
    assert host.quiet_for(0.2) == b""
    assert rig.inbox(kind, 1) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_peer_close_while_detached_closed_once_after_all_held_data(rig, kind):
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(3333)
    peer.send(data)
    rig.wait_inbox(kind, 1, len(data))
    peer.close()
    wait_for(lambda: rig.state(kind, 1) == CLOSING, 10, "closing")
    host = rig.reattach()
    expected = pushes(kind, 1, data) + closed(kind, 1)
    assert host.read_exactly(len(expected), 10) == expected
    assert host.at("AT") == OK
    assert host.quiet_for(0.3) == b""


@pytest.mark.parametrize("kind", KINDS)
def test_two_push_sockets_held_both_pushed_whole(rig, kind):
    p1 = rig.open(kind, 1)
    p2 = rig.open(kind, 2)
    rig.detach()
    d1, d2 = pattern(4000), pattern(2222)[::-1]
    p1.send(d1)
    p2.send(d2)
    rig.wait_inbox(kind, 1, len(d1))
    rig.wait_inbox(kind, 2, len(d2))
    host = rig.reattach()
    got = read_pushes(host, {1: len(d1), 2: len(d2)})
    assert bytes(got[1]) == d1 and bytes(got[2]) == d2
    assert host.at("AT") == OK
    assert host.quiet_for(0.2) == b""


@pytest.mark.parametrize("kind", KINDS)
def test_recv_buffer_full_while_detached_pauses_network_nothing_lost(rig, kind):
    """200 000 bytes while nobody holds the port: the inbox stops at ssl.recv_buffer / tcpip's
    (the network paused), the rest waits at the server; the next host gets every byte once."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(200_000)
    sender = threading.Thread(target=peer.send, args=(data,), daemon=True)
    sender.start()
    wait_for(lambda: rig.inbox(kind, 1) >= RECV_BUFFER, 15, "inbox full")
    wait_for(lambda: rig.paused(kind, 1), 5, "network paused")
    held = rig.inbox(kind, 1)
    assert RECV_BUFFER <= held <= RECV_BUFFER + 256 * 1024, held   # (one read past it: documented)
    assert held < len(data)
    host = rig.reattach()
    got = read_pushes(host, {1: len(data)}, timeout=18)
    assert bytes(got[1]) == data
    sender.join(5)
    assert host.at("AT") == OK
    assert host.quiet_for(0.2) == b""


SEND = {"SSL": "AT+QSSLSEND", "TCP": "AT+QISEND"}


@pytest.mark.parametrize("kind", KINDS)
def test_new_host_writes_a_send_at_once_push_never_inside_the_prompt(rig, kind):
    """Held push data; a new host opens the port and at once writes AT+QSSLSEND=1,5 / AT+QISEND=1,5
    (no look_for_host: the emulator finds it by its poll or its bytes).  The push must come whole
    before the prompt or after SEND OK, never between the prompt and SEND OK.  Five rounds."""
    peer = rig.open(kind, 1)
    for rnd in range(5):
        rig.detach()
        data = pattern(100 + rnd)
        peer.send(data)
        rig.wait_inbox(kind, 1, len(data))
        host = rig.reattach(look=False)
        host.write(f"{SEND[kind]}=1,5\r".encode())
        host.read_until(b"> ", 5)
        before_prompt = host.transcript[:-4]
        host.write(b"hello")
        out = host.read_until(b"\r\nSEND OK\r\n", 5)
        assert out == b"\r\nSEND OK\r\n", (rnd, out)
        push = pushes(kind, 1, data)
        if bytes(before_prompt) == push:
            assert host.quiet_for(0.2) == b""
        else:
            assert bytes(before_prompt) == b"", (rnd, bytes(before_prompt))
            assert host.read_exactly(len(push), 5) == push
            assert host.quiet_for(0.2) == b""
        wait_for(lambda: len(peer.received) == 5 * (rnd + 1), 5, "server got the send")
        assert bytes(peer.received).endswith(b"hello")


@pytest.mark.parametrize("kind", KINDS)
def test_quick_open_close_then_next_host_gets_every_byte(rig, kind):
    """Held push data; a program opens and closes the port 5 times without reading, the
    emulator looking for it in between (in-process look); then a host that reads.  Whatever a
    quick program was never given is the next host's: the bytes the quick ones read (none)
    plus what the last one gets are all the data, once, in order."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(3000)
    peer.send(data)
    rig.wait_inbox(kind, 1, len(data))
    for _ in range(5):
        h = Host(rig.port.path)
        h.close()
        rig.emulator.run(rig.port.port.look_for_host)
        wait_for(lambda: not rig.attached(), 5, "quick host gone")
    host = rig.reattach()
    expected = pushes(kind, 1, data)
    assert host.read_exactly(len(expected), 10) == expected
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_qiswtmd_to_buffer_right_after_reattach(rig, kind):
    """Held push data; the new host's first command switches the socket to buffer mode.  Either
    the push came first (then OK, an empty buffer) or the OK then one "recv" URC and the data
    read with AT+QSSLRECV / AT+QIRD; every byte once either way."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(900)
    peer.send(data)
    rig.wait_inbox(kind, 1, len(data))
    host = rig.reattach(look=False)
    host.write(b"AT+QISWTMD=1,0\r")
    first = host.read_until(OK, 5)
    push = pushes(kind, 1, data)
    if first == push + OK:
        got = data
        assert host.quiet_for(0.2) == b""
    else:
        assert first == OK, first
        tag = b"+QSSLURC" if kind == "SSL" else b"+QIURC"
        assert host.read_until(b"\r\n", 5) + host.read_until(b"\r\n", 5) == b'\r\n%s: "recv",1\r\n' % tag
        read = "AT+QSSLRECV=1,1500" if kind == "SSL" else "AT+QIRD=1,1500"
        ans = host.at(read)
        head = b"\r\n+QSSLRECV: 900\r\n" if kind == "SSL" else b"\r\n+QIRD: 900\r\n"
        assert ans == head + data + b"\r\n" + OK
        got = data
    assert got == data
    assert rig.inbox(kind, 1) == 0


def test_udp_service_push_held_while_detached_keeps_sender_address(rig):
    lport = free_port(socket.SOCK_DGRAM)
    assert rig.host.at(f'AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,{lport},1') == OK
    assert rig.host.read_until(b"+QIOPEN: 2,0\r\n", 5) == b"\r\n+QIOPEN: 2,0\r\n"
    rig.detach()
    with udp_peer() as s:
        s.sendto(b"dgram-one", ("127.0.0.1", lport))
        rig.wait_inbox("TCP", 2, 9)
        s.sendto(b"dgram-two!", ("127.0.0.1", lport))
        rig.wait_inbox("TCP", 2, 19)
        sport = s.getsockname()[1]
    host = rig.reattach()
    want = (b'\r\n+QIURC: "recv",2,9,"127.0.0.1",%d\r\ndgram-one\r\n' % sport
            + b'\r\n+QIURC: "recv",2,10,"127.0.0.1",%d\r\ndgram-two!\r\n' % sport)
    assert host.read_exactly(len(want), 5) == want
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_buffer_mode_recv_urc_while_detached_unchanged(rig, kind):
    """Buffer mode is not held for a host: its "recv" URC went to nobody (lost with the port),
    the next host gets nothing unasked and reads the data."""
    peer = rig.open(kind, 0, mode=0)
    rig.detach()
    peer.send(b"buffered-data")
    rig.wait_inbox(kind, 0, 13)
    host = rig.reattach()
    assert host.at("AT") == OK
    assert host.quiet_for(0.3) == b""
    read = "AT+QSSLRECV=0,1500" if kind == "SSL" else "AT+QIRD=0,1500"
    head = b"\r\n+QSSLRECV: 13\r\n" if kind == "SSL" else b"\r\n+QIRD: 13\r\n"
    assert host.at(read) == head + b"buffered-data\r\n" + OK


@pytest.mark.parametrize("kind", KINDS)
def test_push_while_attached_and_at_a_prompt_waits_for_send_ok(rig, kind):
    peer = rig.open(kind, 1)
    host = rig.host
    host.write(f"{SEND[kind]}=1,4\r".encode())
    assert host.read_until(b"> ", 5) == b"\r\n> "
    peer.send(b"during-prompt")
    rig.wait_inbox(kind, 1, 13)
    assert host.quiet_for(0.2) == b""
    host.write(b"abcd")
    want = b"\r\nSEND OK\r\n" + pushes(kind, 1, b"during-prompt")
    assert host.read_exactly(len(want), 5) == want


@pytest.mark.parametrize("kind", KINDS)
def test_uart_mode_pushes_to_the_wire_with_no_host_documented_lost(emulator, open_modem, strict_log, kind):
    """--uart (hangup_on_close=False): the module pushes whoever listens, so data arriving while
    nobody holds the port are gone (behaviour.md); the socket's inbox is empty, the next host
    gets nothing for them, and later data are pushed to it as usual."""
    with TcpServer("sink") as tcp, TlsServer(mode="sink", session_cache=False, tickets=False) as tls:
        r = Rig(emulator, open_modem, tls, tcp, hangup_on_close=False)
        try:
            peer = r.open(kind, 1)
            r.host.close()
            wait_for(lambda: not r.attached(), 10, "close seen")
            peer.send(b"into-the-void")
            wait_for(lambda: r.emulator.run(lambda: r.svc(kind).sockets[1].bytes_received) == 13, 5, "received")
            wait_for(lambda: r.inbox(kind, 1) == 0, 5, "pushed to the wire")
            host = r.reattach()
            assert host.at("AT") == OK
            assert host.quiet_for(0.2) == b""
            if kind == "TCP":
                assert host.at("AT+QIRD=1,0") == b"\r\n+QIRD: 13,13,0\r\n" + OK
            peer.send(b"after")
            want = pushes(kind, 1, b"after")
            assert host.read_exactly(len(want), 5) == want
        finally:
            r.close_all()


@pytest.mark.parametrize("how", ["control", "cfun"])
@pytest.mark.parametrize("kind", KINDS)
def test_reboot_while_push_data_held_drops_sockets(rig, kind, how):
    """Data held for the next host, then a reboot (the control API's while detached, or the new
    host's first command AT+CFUN=1,1): the sockets are gone (documented), no push of the held
    data after the reboot and no "closed" URC for them."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(2000)
    peer.send(data)
    rig.wait_inbox(kind, 1, len(data))
    booted = lambda: rig.emulator.run(lambda: rig.port.modem.booted and not rig.svc(kind).sockets)
    if how == "control":
        assert rig.emulator.control("reboot")["ok"]
        wait_for(booted, 15, "rebooted, sockets gone")
        host = rig.reattach()
        assert host.at("AT") == b"AT\r" + OK            # (echo on again: the reboot's default)
        assert host.quiet_for(0.3) == b""
    else:
        host = rig.reattach(look=False)
        host.write(b"AT+CFUN=1,1\r")
        out = host.read_until(OK, 5)
        assert out in (OK, pushes(kind, 1, data) + OK), out      # (pushed first if seen first)
        wait_for(booted, 15, "rebooted, sockets gone")
        after = host.read_until(b"+CFUN: 1\r\n", 10)
        assert after.startswith(b"\r\nRDY\r\n"), after
        rest = host.at("AT")
        assert rest.endswith(b"AT\r" + OK), rest          # (echo on again)
        rest += host.quiet_for(0.3)
        assert b'"recv"' not in after + rest and b'"closed"' not in after + rest, after + rest
    assert b'"closed"' not in bytes(host.transcript)


@pytest.mark.parametrize("kind", KINDS)
def test_push_data_arriving_in_the_loop_turn_the_host_closes_survive(rig, kind):
    """The peer's bytes reach the modem's socket, then the host closes the port, both before the
    loop looks (one loop callback does the send and the close, the loop blocked meanwhile: no
    race, the socket is ready first).  In that loop turn the data are handled before the pty's
    hang-up: the port is still `attached`, but nobody holds it.  Nothing was written to the host
    that left, so the bytes must wait for the next host (bf8abe7's promise) -- not be written to
    the pty, dropped by PtyPort.write's _host_gone check, and counted read."""
    peer = rig.open(kind, 1)
    host = rig.host

    def send_then_close():
        peer.send(b"in-the-hangup-turn")
        time.sleep(0.3)                     # (the loop is blocked: the bytes are in its socket)
        host.ser.close()
    rig.emulator.run(send_then_close)
    wait_for(lambda: not rig.attached(), 10, "hang-up seen")
    wait_for(lambda: rig.emulator.run(lambda: rig.svc(kind).sockets[1].bytes_received) == 18, 5, "received")
    host = rig.reattach()
    want = pushes(kind, 1, b"in-the-hangup-turn")
    host.write(b"AT\r")
    out = host.read_until(OK, 5) + host.quiet_for(0.3)
    if kind == "TCP":
        out += host.at("AT+QIRD=1,0")      # (correct: pushed, 18,18,0 after the push)
    assert out in (want + OK, OK + want) or kind == "TCP" and out in (
        want + OK + b"\r\n+QIRD: 18,18,0\r\n" + OK, OK + want + b"\r\n+QIRD: 18,18,0\r\n" + OK), out


@pytest.mark.parametrize("kind", KINDS)
def test_new_host_pipelines_send_line_and_data_in_its_first_write(rig, kind):
    """Held push data; the new host's very first write is the send line with its 5 data bytes
    (no wait for `> `): the push comes whole before the prompt or after SEND OK, never between."""
    peer = rig.open(kind, 1)
    for rnd in range(4):
        rig.detach()
        data = pattern(40 + rnd)
        peer.send(data)
        rig.wait_inbox(kind, 1, len(data))
        host = rig.reattach(look=False)
        host.write(f"{SEND[kind]}=1,5\r".encode() + b"hello")
        out = host.read_until(b"\r\nSEND OK\r\n", 5) + host.quiet_for(0.3)
        push = pushes(kind, 1, data)
        body = b"\r\n> \r\nSEND OK\r\n"
        assert out in (push + body, body + push), (rnd, out)


@pytest.mark.parametrize("kind", KINDS)
def test_new_host_closes_socket_first_no_closed_urc_after_its_ok(rig, kind):
    """Data and the peer's close held for the next host; its first command is AT+QSSLCLOSE=1 /
    AT+QICLOSE=1.  Either the push and the "closed" URC came before OK, or only OK (the host
    closed the socket: what it held is gone with it, and no "closed" URC after the OK)."""
    peer = rig.open(kind, 1)
    rig.detach()
    data = pattern(2000)
    peer.send(data)
    rig.wait_inbox(kind, 1, len(data))
    peer.close()
    wait_for(lambda: rig.state(kind, 1) == CLOSING, 10, "closing")
    host = rig.reattach(look=False)
    host.write(b"AT+QSSLCLOSE=1\r" if kind == "SSL" else b"AT+QICLOSE=1\r")
    out = host.read_until(OK, 10) + host.quiet_for(0.4)
    assert out in (OK, pushes(kind, 1, data) + closed(kind, 1) + OK), out


@pytest.mark.parametrize("kind", KINDS)
def test_host_closes_during_a_slow_command_held_push_goes_to_next_host_alone(rig, kind):
    """The host writes a command the control API slows (500 ms) and closes the port before its
    answer; data arrive meanwhile.  The next host gets the push whole and nothing of the departed
    host's answer."""
    peer = rig.open(kind, 1)
    assert rig.emulator.control("slow", command="+QISTATE", ms=500)["ok"]
    host = rig.host
    host.write(b"AT+QISTATE\r")
    rig.emulator.wait_received(rig.port, host.written, 5)
    host.close()
    wait_for(lambda: not rig.attached(), 10, "hang-up seen")
    peer.send(b"while-slow")
    rig.wait_inbox(kind, 1, 10)
    host = rig.reattach()
    want = pushes(kind, 1, b"while-slow")
    assert host.read_exactly(len(want), 5) == want
    assert host.quiet_for(0.8) == b""
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_backlog_full_host_leaves_the_rest_goes_to_the_next_host(rig, kind):
    """A host that reads nothing while 300 000 bytes arrive: pushes stop at the output high
    water, the inbox fills (past ssl.recv_buffer), the network pauses.  The host leaves (its unread pushes are gone,
    documented); the next host gets the rest: whole URCs, a contiguous tail of the stream up to
    its last byte."""
    peer = rig.open(kind, 1)
    data = pattern(300_000)
    sender = threading.Thread(target=peer.send, args=(data,), daemon=True)
    sender.start()
    wait_for(lambda: rig.paused(kind, 1) and rig.inbox(kind, 1) > 0
             and rig.emulator.run(lambda: rig.port.port.backlog) > 64 * 1024, 15, "paused, backlog high")
    held = rig.inbox(kind, 1)
    rig.detach()
    host = rig.reattach()
    # read pushes until the stream's last byte
    got = bytearray()
    deadline = time.monotonic() + 18
    while not got.endswith(data[-64:]):
        m = PUSH.match(bytes(host.pending[:60]))
        if not m:
            assert time.monotonic() < deadline, (len(got), bytes(host.pending[:100]))
            host._fill()
            continue
        del host.pending[:m.end()]
        n = int(m.group(3))
        assert 0 < n <= RECV_MAX and int(m.group(2)) == 1
        body = host.read_exactly(n + 2, 5)
        assert body.endswith(b"\r\n")
        got += body[:-2]
    assert len(got) >= held
    assert data.endswith(bytes(got)), len(got)
    sender.join(5)
    assert host.at("AT") == OK


def test_udp_client_push_held_datagrams_one_urc_each(rig):
    """AT+QIOPEN "UDP" in push mode to a raw UDP peer; two datagrams (9 and 1400 bytes) reach the
    modem while nobody holds the port: the next host gets one whole URC per datagram, in order."""
    with udp_peer() as peer:
        rig.emulator.router.add_map("review-h-udp.example", 7378, "127.0.0.1", peer.getsockname()[1])
        assert rig.host.at('AT+QIOPEN=1,3,"UDP","review-h-udp.example",7378,0,1') == OK
        assert rig.host.read_until(b"+QIOPEN: 3,0\r\n", 5) == b"\r\n+QIOPEN: 3,0\r\n"
        rig.host.write(b"AT+QISEND=3,2\r")
        assert rig.host.read_until(b"> ", 5) == b"\r\n> "
        rig.host.write(b"hi")
        assert rig.host.read_until(b"SEND OK\r\n", 5) == b"\r\nSEND OK\r\n"
        hello, addr = peer.recvfrom(100)
        assert hello == b"hi"
        rig.detach()
        big = pattern(1400)
        peer.sendto(b"dgram-one", addr)
        rig.wait_inbox("TCP", 3, 9)
        peer.sendto(big, addr)
        rig.wait_inbox("TCP", 3, 1409)
    host = rig.reattach()
    want = urc("TCP", 3, 9) + b"dgram-one\r\n" + urc("TCP", 3, 1400) + big + b"\r\n"
    assert host.read_exactly(len(want), 5) == want
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_peer_close_with_nothing_held_while_detached_is_lost_like_any_urc(rig, kind):
    """Pinned as it is: a push socket's peer closes while nobody holds the port and nothing is
    held: its "closed" URC is written to nobody, lost as everything the modem writes then
    (behaviour.md "Command line"); the socket is closing (4) for the next host.  (With data
    held, the "closed" waits behind them: test_peer_close_while_detached_closed_once_after_all_held_data.)"""
    peer = rig.open(kind, 1)
    rig.detach()
    peer.close()
    wait_for(lambda: rig.state(kind, 1) == CLOSING, 10, "closing")
    host = rig.reattach()
    assert host.at("AT") == OK
    assert host.quiet_for(0.3) == b""
    state = host.at("AT+QSSLSTATE=1" if kind == "SSL" else "AT+QISTATE=1,1")
    assert re.search(rb',4,', state), state


@pytest.mark.parametrize("kind", KINDS)
def test_switched_to_push_before_the_hangup_then_held(rig, kind):
    """A buffer-mode socket switched to push (AT+QISWTMD=0,1), the host leaves, data arrive: held
    and pushed to the next host."""
    peer = rig.open(kind, 0, mode=0)
    assert rig.host.at("AT+QISWTMD=0,1") == OK
    rig.detach()
    data = pattern(1700)
    peer.send(data)
    rig.wait_inbox(kind, 0, len(data))
    host = rig.reattach()
    want = pushes(kind, 0, data)
    assert host.read_exactly(len(want), 5) == want
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_data_held_at_a_prompt_host_closes_at_the_prompt_next_host_gets_them(rig, kind):
    """Push data held while the host is at a `> ` prompt (no URC inside a prompt); the host closes
    the port there.  The next host gets them, whole."""
    peer = rig.open(kind, 1)
    rig.host.write(f"{SEND[kind]}=1,5\r".encode())
    assert rig.host.read_until(b"> ", 5) == b"\r\n> "
    peer.send(b"held-at-prompt")
    rig.wait_inbox(kind, 1, 14)
    rig.detach()
    host = rig.reattach()
    want = pushes(kind, 1, b"held-at-prompt")
    assert host.read_exactly(len(want), 5) == want
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", KINDS)
def test_host_writes_the_prompt_data_and_closes_in_one_go_held_push_survives(rig, kind):
    """Push data held at a `> ` prompt; the host writes the 5 data bytes and closes the port at
    once (both done before the loop looks: one loop callback).  The send completes (the server
    gets the bytes); SEND OK goes to nobody (documented); the held push must wait for the next
    host -- nothing was ever written to a host for it."""
    peer = rig.open(kind, 1)
    host = rig.host
    host.write(f"{SEND[kind]}=1,5\r".encode())
    assert host.read_until(b"> ", 5) == b"\r\n> "
    peer.send(b"held-at-prompt")
    rig.wait_inbox(kind, 1, 14)

    def data_then_close():
        host.write(b"hello")
        host.ser.close()
    rig.emulator.run(data_then_close)
    wait_for(lambda: not rig.attached(), 10, "hang-up seen")
    wait_for(lambda: bytes(peer.received) == b"hello", 5, "the send reached the server")
    host = rig.reattach()
    want = pushes(kind, 1, b"held-at-prompt")
    host.write(b"AT\r")
    out = host.read_until(OK, 5) + host.quiet_for(0.3)
    assert out in (want + OK, OK + want), out
