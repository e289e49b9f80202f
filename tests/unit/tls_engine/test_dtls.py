"""DTLS against `openssl s_server -dtls` (Python's ssl module has no DTLS server).

The driver honours next_timeout()/handle_timeout() like the emulator's event loop.
"""
from __future__ import annotations

import dataclasses
import select
import socket
import time

import pytest

from emulator.testing.peers import OpenSslServer, parse_client_hello
from tls_engine import AppData, HandshakeComplete, TlsClientSession, TlsFailure, TlsSettings


@pytest.fixture
def dtls_server(rsa_leaf):
    """Start `openssl s_server` for DTLS clients; returns (port, OpenSslServer)."""
    cert, key = rsa_leaf.load_args
    servers = []

    def start(*extra: str):
        server = OpenSslServer(["-cert", cert, "-key", key, "-cipher", "ALL:@SECLEVEL=0", *extra])
        servers.append(server)
        return server.port, server

    yield start
    for server in servers:
        server.stop()


class DtlsDriver:
    """One connected UDP socket per session, as the emulator would keep."""

    def __init__(self, session: TlsClientSession, port: int) -> None:
        self.session = session
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.events: list = []

    def run(self, until, limit: float = 5.0, first=()) -> list:
        for datagram in first:
            self.sock.send(datagram)
        if self.session.state == "idle":
            self.session.start()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for datagram in self.session.outgoing():
                self.sock.send(datagram)
            self.events += self.session.events()
            if until(self.events) or self.session.state in ("failed", "closed"):
                break
            timeout = self.session.next_timeout()
            wait = 0.2 if timeout is None else min(timeout, 0.2)
            ready, _, _ = select.select([self.sock], [], [], wait)
            if ready:
                self.session.receive(self.sock.recv(65536))
            elif timeout is not None and self.session.next_timeout() == 0:
                self.session.handle_timeout()
        return self.events


def drive(session: TlsClientSession, port: int, until, limit: float = 5.0, first=()) -> list:
    return DtlsDriver(session, port).run(until, limit, first)


def _settings(ca, **overrides) -> TlsSettings:
    values = dict(server_name="localhost", dtls=True, seclevel=1, ca_pem=ca.cert_pem,
                  ca_label="RAM:cacert.pem")
    values.update(overrides)
    return TlsSettings(**values)


def completed(events):
    return any(isinstance(e, (HandshakeComplete, TlsFailure)) for e in events)


@pytest.mark.parametrize("dtls_version, flag, expected", [(1, "-dtls1_2", "DTLSv1.2"),
                                                          (0, "-dtls1", "DTLSv1.0")])
def test_dtls_handshake_and_data(dtls_server, ca, dtls_version, flag, expected):
    port, proc = dtls_server(flag)
    session = TlsClientSession(_settings(ca, dtls_version=dtls_version))
    driver = DtlsDriver(session, port)
    events = driver.run(completed)
    assert isinstance(events[-1], HandshakeComplete), events
    assert events[-1].version == expected
    proc.write(b"from the server\n")
    driver.run(lambda ev: any(isinstance(e, AppData) for e in ev))
    assert b"".join(e.data for e in driver.events if isinstance(e, AppData)) == b"from the server\n"
    session.send(b"hello over dtls\n")
    session.close()
    driver.run(lambda ev: True)
    proc.wait_for_output(rb"hello over dtls")


def test_dtls_verify_failure(dtls_server, other_ca):
    port, _ = dtls_server("-dtls1_2")
    session = TlsClientSession(_settings(other_ca))
    events = drive(session, port, completed)
    assert isinstance(events[-1], TlsFailure) and events[-1].kind == "verify_failed"


def test_dtls_client_hello_is_retransmitted_after_timeout(dtls_server, ca):
    session = TlsClientSession(_settings(ca, alpn=("coap",)))
    session.start()
    [lost] = session.outgoing()                 # pretend the network dropped it
    assert parse_client_hello(lost, dtls=True).extension(16).endswith(b"coap")
    assert 0 < session.next_timeout() <= 1.0
    time.sleep(session.next_timeout() + 0.01)   # RFC 6347 initial timer: 1 s
    session.handle_timeout()
    resent = session.outgoing()
    while not resent:                           # Mbed TLS's own timer may lag by a few ms
        time.sleep(session.next_timeout())
        session.handle_timeout()
        resent = session.outgoing()
    assert resent[0][13] == 1                   # a ClientHello again
    assert session.next_timeout() > 1.0         # doubled
    port, _ = dtls_server("-dtls1_2")
    events = drive(session, port, completed, first=resent)
    assert isinstance(events[-1], HandshakeComplete), events


def test_dtls_no_timer_once_established(dtls_server, ca):
    port, _ = dtls_server("-dtls1_2")
    session = TlsClientSession(_settings(ca))
    drive(session, port, completed)
    assert session.state == "established" and session.next_timeout() is None


@pytest.mark.needs_native
def test_dtls_retransmission_follows_the_settings_clock(dtls_server, ca):
    """TlsSettings.monotonic (the modem's time, moved by hand): the session's deadline and
    Mbed TLS's own timer both read it, so the ClientHello is resent when that clock says
    1 s passed, at once in real time, and not before; the timer doubles, on that clock too.
    (Without the native timer hook Mbed TLS would wait for a real second.)"""
    now = [1000.0]
    session = TlsClientSession(dataclasses.replace(_settings(ca), monotonic=lambda: now[0]))
    session.start()
    [first] = session.outgoing()
    assert session.next_timeout() == pytest.approx(1.0)
    now[0] += 0.9
    session.handle_timeout()
    assert session.outgoing() == [] and session.next_timeout() == pytest.approx(0.1)
    now[0] += 0.11
    session.handle_timeout()
    resent = session.outgoing()
    # The same flight again: a new record sequence number (bytes 5-10), the same message.
    assert len(resent) == 1 and resent[0][13] == 1 and resent[0][11:] == first[11:]
    assert session.next_timeout() == pytest.approx(2.0)           # doubled, on the same clock
    now[0] += 2.01
    session.handle_timeout()
    again = session.outgoing()
    assert len(again) == 1 and again[0][11:] == first[11:]
    port, _ = dtls_server("-dtls1_2")                              # and it still completes
    events = drive(session, port, completed, first=again)
    assert isinstance(events[-1], HandshakeComplete), events
