"""PlainSession: the sans-IO session of plain TCP/UDP sockets (the TlsClientSession
interface the socket machine drives), without a network."""
from __future__ import annotations

import pytest

from emulator.sockets.plain_session import PlainSession, PlainSettings
from tls_engine import AppData, HandshakeComplete, PeerClosed


def started(datagram: bool) -> PlainSession:
    session = PlainSession(PlainSettings(dtls=datagram))
    session.start()
    return session


@pytest.mark.parametrize("datagram, version", [(False, "TCP"), (True, "UDP")])
def test_start_is_established_at_once(datagram, version):
    session = PlainSession(PlainSettings(dtls=datagram))
    assert session.state == "idle" and session.settings.dtls is datagram
    session.start()
    assert session.state == "established"
    (event,) = session.events()
    assert isinstance(event, HandshakeComplete) and event.version == version and not event.resumed
    assert session.outgoing() == [] and session.events() == []
    assert session.next_timeout() is None
    session.handle_timeout()                                  # nothing to retransmit
    with pytest.raises(RuntimeError):
        session.start()


def test_stream_bytes_pass_unchanged_and_coalesce():
    session = started(False)
    session.events()
    session.send(b"ab")
    session.send(b"")
    session.send(b"\x00\xff")
    assert session.outgoing() == [b"ab\x00\xff"]
    assert session.outgoing() == []
    session.receive(b"xyz")
    session.receive(b"\r\n")
    assert session.events() == [AppData(b"xyz"), AppData(b"\r\n")]


def test_stream_eof_is_peer_closed_once():
    session = started(False)
    session.events()
    session.receive(b"")
    assert session.events() == [PeerClosed()] and session.state == "closed"
    session.receive(b"late")                                  # after the end: ignored
    session.receive(b"")
    assert session.events() == []
    with pytest.raises(RuntimeError):
        session.send(b"x")


def test_datagrams_keep_their_boundaries():
    session = started(True)
    session.events()
    session.send(b"one")
    session.send(b"two")
    assert session.outgoing() == [b"one", b"two"]             # one send = one datagram
    session.receive(b"a")
    session.receive(b"")                                      # an empty datagram is not an end
    session.receive(b"bc")
    assert session.events() == [AppData(b"a"), AppData(b"bc")]
    assert session.state == "established"


def test_close_ends_it():
    session = started(False)
    session.close()
    assert session.state == "closed" and session.outgoing() == []
    session.receive(b"data")
    assert session.events() == [HandshakeComplete("TCP", 0, "", None, False)]
