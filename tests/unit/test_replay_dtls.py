"""Replay's DTLS stand-in (emulator/tools/trace.py), without a modem: the session's tagged
datagrams each way, and the stand-in server's side of one recorded DTLS socket, including
the server's end of the session, which no DTLS peer here can record (`openssl s_server`
sends no close_notify over DTLS)."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from tls_engine import AppData, HandshakeComplete, PeerClosed, TlsFailure
from emulator.tools.trace import (DTLS_DATA, DTLS_END, DTLS_HEAD, DTLS_HELLO, ReplayPeer, ReplaySession,
                                  Script, _UdpStandIn, scripts_of)

DTLS = SimpleNamespace(dtls=True)
OK_HEAD = {"ok": True, "version": "DTLSv1.2", "cipher": "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
           "alpn": None, "resumed": False}


def test_the_session_says_hello_then_reads_the_recorded_end_of_the_handshake():
    session = ReplaySession(DTLS)
    session.start()
    assert session.outgoing() == [DTLS_HELLO]
    session.receive(DTLS_DATA + b"early")             # before the head: dropped, as DTLS drops it
    assert session.events() == []
    session.receive(DTLS_HEAD + json.dumps(OK_HEAD).encode())
    [done] = session.events()
    assert isinstance(done, HandshakeComplete) and done.version == "DTLSv1.2"
    session.send(b"up")
    assert session.outgoing() == [DTLS_DATA + b"up"]
    session.receive(DTLS_DATA + b"down")
    session.receive(DTLS_HEAD + b"{}")                  # a late head: not data
    assert [e.data for e in session.events() if isinstance(e, AppData)] == [b"down"]
    session.receive(DTLS_END + b"close_notify")
    assert [type(e) for e in session.events()] == [PeerClosed]
    session.receive(DTLS_DATA + b"after")               # nothing after the end
    assert session.events() == []


def test_a_recorded_failure_fails_the_handshake_and_junk_is_ignored():
    session = ReplaySession(DTLS)
    session.start()
    session.receive(b"")                                 # (no EOF in UDP: nothing)
    session.receive(DTLS_HEAD + b"not json")
    assert session.events() == []
    session.receive(DTLS_HEAD + json.dumps({"fail": "verify_failed", "reason": "bad CA"}).encode())
    [failed] = session.events()
    assert isinstance(failed, TlsFailure) and failed.kind == "verify_failed"


def test_a_tls_session_stays_a_stream():
    session = ReplaySession(SimpleNamespace(dtls=False))
    session.start()
    session.send(b"up")
    assert session.outgoing() == [b"up"]


def test_scripts_know_a_dtls_socket_from_a_udp_one():
    records = [
        {"kind": "open", "socket": 1, "host": "h", "port": 5684, "dtls": True},
        {"kind": "open", "socket": 2, "host": "h", "port": 5683, "dtls": False, "service": "tcpip", "type": "UDP"},
        {"kind": "open", "socket": 3, "host": "h", "port": 443, "dtls": False},
    ]
    dtls, udp, tls = scripts_of(records)
    assert dtls.dtls and dtls.datagram and not dtls.plain
    assert udp.datagram and udp.plain and not udp.dtls
    assert not tls.datagram and not tls.dtls


class Transport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr) -> None:
        self.sent.append(data)


def test_the_stand_in_answers_the_hello_carries_records_and_ends_where_the_server_did():
    script = Script(1, "h", 5684, header=OK_HEAD, connected=True, dtls=True,
                    steps=[("expect", b"up"), ("send", b"down", 0), ("end", "close_notify", 0)])

    async def run() -> tuple[ReplayPeer, Transport]:
        peer, transport, inbox = ReplayPeer([script], lambda: 1 << 40), Transport(), asyncio.Queue()
        for datagram in (DTLS_HELLO, DTLS_DATA + b"UP"):
            inbox.put_nowait(datagram)
        await asyncio.wait_for(peer.play_datagrams(script, transport, inbox, ("127.0.0.1", 1)), 5)
        return peer, transport
    peer, transport = asyncio.run(run())
    assert transport.sent == [DTLS_HEAD + json.dumps(OK_HEAD).encode(), DTLS_DATA + b"down",
                              DTLS_END + b"close_notify"]
    assert peer.differences == ["socket 1 sent the datagram 'UP', recorded 'up'"]


def test_a_failed_handshake_is_all_the_stand_in_says():
    head = {"fail": "handshake_failed", "reason": "alert"}
    script = Script(1, "h", 5684, header=head, connected=True, dtls=True, steps=[("send", b"never", 0)])

    async def run() -> Transport:
        transport, inbox = Transport(), asyncio.Queue()
        inbox.put_nowait(DTLS_HELLO)
        await asyncio.wait_for(ReplayPeer([script], lambda: 0).play_datagrams(script, transport, inbox, None), 5)
        return transport
    assert asyncio.run(run()).sent == [DTLS_HEAD + json.dumps(head).encode()]


def test_a_udp_and_a_dtls_socket_to_one_destination_each_get_their_own_script():
    """The stand-in of one destination gives a new sender the next script of its kind: the
    DTLS socket (opened second) says its hello at the open, before the UDP socket (opened
    first) sends.  (From a review: they got each other's script.)"""
    records = [
        {"kind": "open", "socket": 0, "host": "h", "port": 5684, "service": "tcpip", "type": "UDP"},
        {"kind": "handshake", "socket": 0, "version": "UDP", "cipher": ""},
        {"kind": "open", "socket": 1, "host": "h", "port": 5684, "dtls": True},
        {"kind": "handshake", "socket": 1, "version": "DTLSv1.2", "cipher": "X"},
        {"kind": "sent", "socket": 1, "data": "up"},
        {"kind": "sent", "socket": 0, "data": "q"},
        {"kind": "received", "socket": 0, "data": "a", "in": 0},
    ]
    scripts = scripts_of(records)
    udp_sender, dtls_sender = ("127.0.0.1", 1000), ("127.0.0.1", 2000)

    class Sent(Transport):
        def sendto(self, data: bytes, addr) -> None:
            self.sent.append((addr, data))

    async def run() -> tuple[ReplayPeer, Sent]:
        peer, transport = ReplayPeer(scripts, lambda: 1 << 40), Sent()
        stand_in = _UdpStandIn(peer, list(scripts))
        stand_in.connection_made(transport)
        stand_in.datagram_received(DTLS_HELLO, dtls_sender)
        stand_in.datagram_received(DTLS_DATA + b"up", dtls_sender)
        stand_in.datagram_received(b"q", udp_sender)
        await asyncio.gather(*peer._tasks)         # both scripts end by themselves
        return peer, transport
    peer, transport = asyncio.run(asyncio.wait_for(run(), 5))
    assert sorted(transport.sent) == sorted([(dtls_sender, DTLS_HEAD + json.dumps(scripts[1].header).encode()),
                                             (udp_sender, b"a")])
    assert peer.differences == []


def _beyond(complete: bool, dtls: bool, extra_in_inbox: bool) -> list[str]:
    """One script played to its end through _UdpStandIn, then one datagram more from the
    same sender (in the inbox before the script ended, or after)."""
    head = OK_HEAD if dtls else {}
    script = Script(4, "h", 5684, header=head, connected=True, dtls=dtls, plain=not dtls, type="" if dtls else "UDP",
                    steps=[("expect", b"up"), ("send", b"down", 0)])
    tag = DTLS_DATA if dtls else b""
    sender = ("127.0.0.1", 4000)

    async def run() -> ReplayPeer:
        peer = ReplayPeer([script], lambda: 1 << 40)
        peer.complete = complete
        stand_in = _UdpStandIn(peer, [script])
        stand_in.connection_made(Transport())
        if dtls:
            stand_in.datagram_received(DTLS_HELLO, sender)
        stand_in.datagram_received(tag + b"up", sender)
        if extra_in_inbox:
            stand_in.datagram_received(tag + b"more", sender)
        await asyncio.gather(*peer._tasks)
        if not extra_in_inbox:
            stand_in.datagram_received(tag + b"more", sender)
            stand_in.datagram_received(tag + b"again", sender)      # named once
        return peer
    return asyncio.run(asyncio.wait_for(run(), 5)).differences


def test_a_datagram_beyond_the_script_is_named_once_unless_the_recording_was_cut_short():
    for dtls in (False, True):
        for early in (False, True):
            assert _beyond(True, dtls, early) == ["socket 4 sent the datagram 'more' beyond the recording"], (dtls, early)
            assert _beyond(False, dtls, early) == [], (dtls, early)
