"""The handshake sniffer reads the server's bytes late when nothing has to be checked before
Mbed TLS sees them (TLS with no verifier, seclevel 0): the next flight leaves first, and the
server's last flight is never read on the way to HandshakeComplete.  What it learns is the
same, read when it is needed: peer_chain, a fatal alert's name in a failure's reason.  With
a verifier (seclevel >= 1) or over DTLS it reads at once, before Mbed TLS.

Sans-IO, against an in-memory OpenSSL server (ssl.MemoryBIO)."""
from __future__ import annotations

import ssl

import pytest

from emulator.testing.peers.memory import MemoryTlsServer
from tls_engine import HandshakeComplete, TlsClientSession, TlsFailure
from tls_engine.errors import HANDSHAKE_FAILED
from tls_engine.records import HandshakeSniffer


class Server(MemoryTlsServer):
    """OpenSSL, TLS 1.2 at most, in memory."""

    def __init__(self, leaf, ciphers: str | None = None) -> None:
        super().__init__(leaf, ciphers=ciphers)

    step = MemoryTlsServer.take


class FeedSpy:
    """Records each HandshakeSniffer.feed() of one session (the bytes it was given)."""

    def __init__(self, monkeypatch) -> None:
        self.fed: list[bytes] = []
        original = HandshakeSniffer.feed
        spy = self

        def feed(sniffer, data):
            spy.fed.append(bytes(data))
            return original(sniffer, data)
        monkeypatch.setattr(HandshakeSniffer, "feed", feed)


def first_flight(session: TlsClientSession, server: Server) -> bytes:
    session.start()
    return server.step(b"".join(session.outgoing()))


def test_seclevel_0_first_flight_goes_to_mbedtls_before_python_reads_it(rsa_leaf, base_settings, monkeypatch):
    spy = FeedSpy(monkeypatch)
    server = Server(rsa_leaf)
    session = TlsClientSession(base_settings(seclevel=0))
    flight = first_flight(session, server)
    session.receive(flight)
    assert spy.fed == []                           # not read yet ...
    reply = b"".join(session.outgoing())
    assert reply[:1] == b"\x16"                    # ... while the ClientKeyExchange flight is out
    assert session.events() == []
    assert spy.fed == [flight]                     # read once that flight was taken
    der = ssl.PEM_cert_to_DER_cert(rsa_leaf.cert_pem.decode())
    assert session.peer_chain[0] == der
    final = server.step(reply)
    session.receive(final)
    events = session.events()
    assert [type(e) for e in events] == [HandshakeComplete]
    assert spy.fed == [flight]                     # the last flight: not read on the way
    assert session.peer_chain[0] == der and session.state == "established"


def test_peer_chain_asked_before_events_reads_what_was_put_aside(rsa_leaf, base_settings, monkeypatch):
    spy = FeedSpy(monkeypatch)
    server = Server(rsa_leaf)
    session = TlsClientSession(base_settings(seclevel=0))
    flight = first_flight(session, server)
    session.receive(flight)
    assert len(session.peer_chain) >= 1 and spy.fed == [flight]
    assert session.events() == [] and spy.fed == [flight]      # (read once)


def test_with_a_verifier_the_first_flight_is_read_before_mbedtls(rsa_leaf, base_settings, monkeypatch):
    spy = FeedSpy(monkeypatch)
    server = Server(rsa_leaf)
    session = TlsClientSession(base_settings(seclevel=1))
    flight = first_flight(session, server)
    session.receive(flight)
    assert spy.fed == [flight]                     # checked before Mbed TLS had the Certificate
    final = server.step(b"".join(session.outgoing()))
    session.receive(final)
    assert [type(e) for e in session.events()] == [HandshakeComplete]


def test_a_fatal_alert_is_named_as_when_read_at_once(rsa_leaf, base_settings):
    """The server's alert to a ClientHello it cannot serve (no shared suite): the failure's
    reason names it, read late (seclevel 0) as read at once (seclevel 1)."""
    reasons = []
    for seclevel in (0, 1):
        server = Server(rsa_leaf, ciphers="AES256-SHA")
        session = TlsClientSession(base_settings(seclevel=seclevel, cipher_suites=(0xC02F,)))
        alert = first_flight(session, server)
        assert alert[:1] == b"\x15"
        session.receive(alert)
        failures = [e for e in session.events() if isinstance(e, TlsFailure)]
        assert len(failures) == 1 and failures[0].kind == HANDSHAKE_FAILED
        reasons.append(failures[0].reason)
    assert reasons[0] == reasons[1] and "handshake_failure" in reasons[0]


def test_a_server_end_after_its_alert_is_named_too(rsa_leaf, base_settings):
    """The alert, then the server's FIN, read late: the end's reason names the alert."""
    server = Server(rsa_leaf, ciphers="AES256-SHA")
    session = TlsClientSession(base_settings(seclevel=0, cipher_suites=(0xC02F,)))
    alert = first_flight(session, server)
    session._sniff(alert)                          # (what receive() does with it first)
    session.receive(b"")                           # the FIN: no Mbed TLS error on the way
    failures = [e for e in session.events() if isinstance(e, TlsFailure)]
    assert len(failures) == 1 and "handshake_failure" in failures[0].reason


@pytest.mark.parametrize("size", [64 * 1024, 64 * 1024 + 1])
def test_what_is_put_aside_is_bounded(base_settings, size):
    session = TlsClientSession(base_settings(seclevel=0))
    session.start()
    assert session._sniff(b"\x16\x03\x03" + bytes(size - 3))
    assert len(session._unsniffed) == (size if size <= 64 * 1024 else 0)
