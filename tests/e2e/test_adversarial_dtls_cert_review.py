"""Review of commit 48c7b39 (DTLS certificate checks against forged datagrams).

Over DTLS the sniffer (tls_engine/records.py HandshakeSniffer) checks every Certificate
message it reassembles and TlsClientSession._sniff keeps ONE verdict per leaf (the first
chain seen for that leaf wins, self._checked); at the handshake's end Mbed TLS's peer
certificate (getpeercert(binary_form=True)) must be a checked, passing leaf.  The claim
(tls_engine/README.md, docs/behaviour.md): "a forged Certificate datagram can neither pass an
untrusted server nor make a trusted one fail".

What an off-path attacker (one spoofed datagram, sent before the server's flight, no timing
needed) can still do, because the sniffer takes datagrams Mbed TLS discards (a message_seq
beyond Mbed TLS's buffering window, a record whose version Mbed TLS refuses):
* give the genuine server's leaf a failing verdict (the real chain is then skipped: "first
  wins") -> a trusted server is refused;
* mark the Certificate's message_seq as done with a message Mbed TLS never saw -> the real
  Certificate is never checked -> a trusted server is refused;
* give an untrusted server's leaf a passing verdict with a chain the server never sent (its
  missing intermediate) -> a server the modem refuses on its own is accepted.

The rest checks that legitimate opens still work (regressions) and what python-mbedtls
2.10.1's getpeercert(binary_form=True) returns (unit-style, TlsClientSession driven over a
real socket against `openssl s_server`, loopback only).
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import CT_HANDSHAKE, cert_body, der, fragment, handshake, record, records
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, trust

OPENED = re.compile(rb"\+QSSLOPEN: (\d+),(-?\d+)\r\n")
PSK_HEX = "00112233445566778899aabbccddeeff"
GARBAGE_CERT = b"\x30\x82\x00\x04junk"      # an entry that is no certificate


@pytest.fixture
def servers():
    started: list[OpenSslServer] = []

    def start(*args: str) -> OpenSslServer:
        server = OpenSslServer(list(args))
        started.append(server)
        return server
    yield start
    for server in started:
        server.stop()


def dtls_args(cert_path, key_path, *extra: str) -> list[str]:
    return ["-cert", str(cert_path), "-key", str(key_path), "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0", *extra]


def serve_args(pki, files, proto: str = "-dtls1_2") -> list[str]:
    """s_server's -cert sends the FIRST certificate of the file only: the chained leaf's
    intermediate goes with -cert_chain."""
    args = ["-cert", str(files.cert_path), "-key", str(files.key_path), proto, "-cipher", "ALL:@SECLEVEL=0"]
    if files is pki.chained:
        args += ["-cert_chain", str(pki.intermediate.cert_path)]
    return args


# -- pty helpers -----------------------------------------------------------------------------------
def answers(host) -> list[int]:
    return [int(m.group(2)) for m in OPENED.finditer(bytes(host.transcript)) if m.group(1) == b"0"]


def dtls_open(host, emulator, port: int, ca_pem: bytes | None, timeout: float = 25) -> int:
    emulator.router.add_map(HOST, PORT, "127.0.0.1", port)
    if ca_pem is not None:
        trust(host, 0, ca_pem)
    cfg(host, "dtls", 0, 1)
    host.transcript.clear()
    host._consumed.clear()
    assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == b"\r\nOK\r\n"
    deadline = time.monotonic() + timeout
    while not answers(host):
        assert time.monotonic() < deadline, "no +QSSLOPEN"
        host._fill()
        time.sleep(0.02)
    host.quiet_for(0.3)
    got = answers(host)
    assert len(got) == 1, got
    return got[0]


def open_through(host, emulator, server, ca_pem, forged: list[bytes]) -> int:
    """An open through a middlebox that sends the forged datagrams to the modem before its
    ClientHello goes on (an off-path attacker needs no timing for this: Mbed TLS would not
    take them anyway)."""
    with UdpMiddlebox(server.address, inject_first=forged) as box:
        code = dtls_open(host, emulator, box.port, ca_pem)
        if code == 0:
            close(host)
        else:
            assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        return code


# == Q1: an off-path attacker and the verdict kept by leaf ========================================
# Was a bug, fixed: tls_engine/session.py TlsClientSession._sniff (DTLS branch): verdicts are
# keyed by the leaf alone and the first chain seen for a leaf wins (`chain[0] not in
# self._checked`); the sniffer (records.HandshakeSniffer._dtls_fragments) takes a Certificate with
# a message_seq beyond Mbed TLS's buffering window that Mbed TLS ignores, so one spoofed datagram
# carrying the trusted server's public leaf with a failing chain makes the real chain be skipped
# and _on_handshake_over refuse the trusted server (566): the README's 'nor make a trusted one
# fail' is false
@pytest.mark.parametrize("which", ["leaf_plus_garbage", "chained_leaf_without_its_intermediate"])
def test_forged_chain_for_the_real_leaf_cannot_fail_a_trusted_server(ec2x, net, emulator, servers, pki, which):
    if which == "leaf_plus_garbage":
        ident = pki.server
        forged_body = cert_body(der(ident.cert_pem), GARBAGE_CERT)
    else:
        ident = pki.chained                    # the server sends leaf + intermediate: trusted
        forged_body = cert_body(der(ident.cert_pem))   # the leaf alone: issuer not found
    server = servers(*serve_args(pki, ident))
    forged = record(CT_HANDSHAKE, handshake(11, forged_body, 40), seq=20)
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, [forged]) == 0


# Was a bug, fixed: tls_engine/records.py HandshakeSniffer._feed_datagram checks only the record
# version's first byte (0xFE) while Mbed TLS drops a record whose minor version it does not
# support; a spoofed epoch-0 Certificate with the real Certificate's message_seq in such a record
# completes first in the sniffer, _dtls_done then skips the real Certificate, it is never checked,
# and TlsClientSession._on_handshake_over refuses the trusted server (566, 'not the one that was
# checked')
def test_forged_same_message_seq_in_a_record_mbedtls_drops_cannot_fail_a_trusted_server(
        ec2x, net, emulator, servers, pki):
    server = servers(*dtls_args(pki.server.chain_path, pki.server.key_path))
    body = cert_body(der(pki.wrong_server.cert_pem))
    # message_seq 1 (no HelloVerifyRequest) and 2 (after one): whichever the Certificate has
    forged = record(CT_HANDSHAKE, handshake(11, body, 1) + handshake(11, body, 2), seq=5, version=b"\xfe\xfc")
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, [forged]) == 0


def test_control_same_forgery_in_a_valid_record_is_inherent_dtls_dos_not_a_pass(ec2x, net, emulator, servers, pki):
    """Control for the previous test: the same forgery in a record Mbed TLS accepts is taken by
    Mbed TLS too (the handshake cannot complete: inherent to DTLS, not the sniffer); whatever
    happens, the untrusted certificate is never accepted."""
    server = servers(*dtls_args(pki.server.chain_path, pki.server.key_path))
    body = cert_body(der(pki.wrong_server.cert_pem))
    forged = record(CT_HANDSHAKE, handshake(11, body, 1) + handshake(11, body, 2), seq=5)
    code = open_through(ec2x, emulator, server, pki.ca.cert_pem, [forged])
    assert code in (0, 566, 569)


def test_untrusted_server_missing_intermediate_is_refused_without_forgery(ec2x, net, emulator, servers, pki):
    """Control for the next test: a server sending the chained leaf WITHOUT its intermediate
    is refused (the modem cannot build the path)."""
    server = servers(*dtls_args(pki.chained.cert_path, pki.chained.key_path))
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, []) == 566


# Was a bug, fixed: tls_engine/session.py TlsClientSession._sniff (DTLS branch): the verdict of a
# leaf is that of the first chain seen with it, not of the chain Mbed TLS used; a spoofed
# Certificate (message_seq beyond Mbed TLS's window, ignored by Mbed TLS) carrying the server's
# leaf plus the intermediate the server does NOT send makes _on_handshake_over accept a server
# that fails on its own (0 instead of 566): the README's 'cannot pass an untrusted server' is
# false
def test_forged_chain_cannot_complete_an_untrusted_servers_chain(ec2x, net, emulator, servers, pki):
    server = servers(*dtls_args(pki.chained.cert_path, pki.chained.key_path))
    forged = record(CT_HANDSHAKE, handshake(11, cert_body(der(pki.chained.cert_pem),
                                                          der(pki.intermediate.cert_pem)), 40), seq=20)
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, [forged]) == 566


def test_forged_trusted_leaf_still_cannot_pass_an_untrusted_server(ec2x, net, emulator, servers, pki):
    """The fixed bug stays fixed, in the record form Mbed TLS drops too: a forged trusted
    certificate (other leaf) never passes the wrong server."""
    server = servers(*dtls_args(pki.wrong_server.chain_path, pki.wrong_server.key_path))
    body = cert_body(der(pki.server.cert_pem))
    forged = [record(CT_HANDSHAKE, handshake(11, body, 40), seq=20),
              record(CT_HANDSHAKE, handshake(11, body, 1) + handshake(11, body, 2), seq=5, version=b"\xfe\xfc")]
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, forged) == 566


# == Q2: legitimate DTLS opens (regressions) =====================================================
@pytest.mark.parametrize("kind", ["ecdsa", "chained", "leaf_repeated"])
def test_legitimate_dtls_servers_open(ec2x, net, emulator, servers, pki, kind):
    if kind == "ecdsa":
        args = dtls_args(pki.server_ec.chain_path, pki.server_ec.key_path)
    elif kind == "chained":
        args = serve_args(pki, pki.chained)
    else:
        args = dtls_args(pki.server.cert_path, pki.server.key_path, "-cert_chain", str(pki.server.cert_path))
    server = servers(*args)
    assert open_through(ec2x, emulator, server, pki.ca.cert_pem, []) == 0


class Refragmenter:
    """The server's Certificate is sent twice: once re-fragmented (three overlapping
    fragments, fresh record numbers) just before the datagram that completes it, then as the
    server sent it (whole or in fragments)."""

    def __init__(self) -> None:
        self.parts: dict[int, tuple[int, bytearray, set]] = {}
        self.done = 0

    def __call__(self, data: bytes) -> list[bytes]:
        extra = []
        for ctype, _epoch, seq, payload in records(data):
            if ctype != CT_HANDSHAKE or payload[:1] != b"\x0b" or len(payload) < 12:
                continue
            total = int.from_bytes(payload[1:4], "big")
            msg_seq = int.from_bytes(payload[4:6], "big")
            off = int.from_bytes(payload[6:9], "big")
            flen = int.from_bytes(payload[9:12], "big")
            _, body, got = self.parts.setdefault(msg_seq, (total, bytearray(total), set()))
            body[off:off + flen] = payload[12:12 + flen]
            got.update(range(off, off + flen))
            if len(got) == total and not self.done:
                self.done += 1
                a, b = total // 3, (2 * total) // 3
                extra = [record(CT_HANDSHAKE, fragment(11, bytes(body), msg_seq, b, total - b), seq=seq + 40),
                         record(CT_HANDSHAKE, fragment(11, bytes(body), msg_seq, 0, b), seq=seq + 41),
                         record(CT_HANDSHAKE, fragment(11, bytes(body), msg_seq, a, b - a + 10), seq=seq + 42)]
        return extra + [data]


@pytest.mark.parametrize("ident", ["server", "chained"])
def test_certificate_sent_twice_with_other_fragmentation_opens(ec2x, net, emulator, servers, pki, ident):
    server = servers(*serve_args(pki, getattr(pki, ident)))
    refrag = Refragmenter()

    def rule(direction, index, data):
        return refrag(data) if direction == "s2c" else [data]
    with UdpMiddlebox(server.address, rule) as box:
        code = dtls_open(ec2x, emulator, box.port, pki.ca.cert_pem)
        assert refrag.done == 1
        assert code == 0
        close(ec2x)


def test_dtls_name_check_and_ignore_flags(ec2x, net, emulator, servers, pki):
    """A wrong name is refused; ignorelocaltime=0 with a valid chain opens; a chain to another
    CA is refused, and passes with ignoremulticertchainverify=1 (the leaf's issuer was sent).
    (s_server serves one DTLS peer at a time and stays with a failed one: a server per open.)"""
    serve = lambda: servers(*serve_args(pki, pki.chained))       # noqa: E731
    server = serve()
    emulator.router.add_map("nomatch.example", PORT, "127.0.0.1", server.address[1])
    trust(ec2x, 0, pki.ca.cert_pem)
    cfg(ec2x, "dtls", 0, 1)
    assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"nomatch.example",{PORT}') == b"\r\nOK\r\n"
    ec2x.seen(b"+QSSLOPEN: 0,566\r\n", 25)
    assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    cfg(ec2x, "ignorelocaltime", 0, 0)
    assert dtls_open(ec2x, emulator, serve().address[1], None) == 0
    close(ec2x)
    cfg(ec2x, "ignorelocaltime", 0, 1)
    ec2x.upload("UFS:wrong.pem", pki.wrong_ca.cert_pem)
    cfg(ec2x, "cacert", 0, '"UFS:wrong.pem"')
    assert dtls_open(ec2x, emulator, serve().address[1], None) == 566
    assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    cfg(ec2x, "ignoremulticertchainverify", 0, 1)
    assert dtls_open(ec2x, emulator, serve().address[1], None) == 0
    close(ec2x)


# == unit-style: TlsClientSession over a real socket, getpeercert ================================
def _session(pki, *, dtls: bool, **kw):
    from tls_engine.settings import TlsSettings
    base = dict(server_name=HOST, seclevel=1, ca_pem=pki.ca.cert_pem, dtls=dtls, session_cache=False)
    base.update(kw)
    return TlsSettings(**base)


def drive(settings, address, *, cache=None, key=None, forged=(), timeout=20.0):
    """Run one handshake of a TlsClientSession against address; returns (session, events, sock)."""
    from tls_engine.session import TlsClientSession
    session = TlsClientSession(settings, cache, key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if settings.dtls else socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(address)
    sock.settimeout(0.05)
    session.start()
    for d in forged:
        session.receive(d)
    events: list[object] = []
    deadline = time.monotonic() + timeout
    while session.state == "handshaking" and time.monotonic() < deadline:
        for out in session.outgoing():
            sock.send(out)
        events += session.events()
        try:
            data = sock.recv(65536)
        except (socket.timeout, BlockingIOError):
            session.handle_timeout()
            continue
        session.receive(data)
    for out in session.outgoing():
        sock.send(out)
    events += session.events()
    return session, events, sock


def _finish(session, sock):
    try:
        session.close()
        for out in session.outgoing():
            sock.send(out)
    except OSError:
        pass
    sock.close()


@pytest.mark.parametrize("dtls", [False, True], ids=["tls", "dtls"])
@pytest.mark.parametrize("ident", ["server", "chained", "server_ec"])
def test_getpeercert_is_the_leaf_mbedtls_used(servers, pki, dtls, ident):
    files = getattr(pki, ident)
    server = servers(*serve_args(pki, files, "-dtls1_2" if dtls else "-tls1_2"))
    session, events, sock = drive(_session(pki, dtls=dtls), server.address)
    try:
        assert session.state == "established", events
        leaf = session._buffer.getpeercert(binary_form=True)
        assert leaf == der(files.cert_pem)
        assert session.peer_chain[0] == leaf and len(session.peer_chain) == (2 if ident == "chained" else 1)
        assert list(session._checked) == [leaf]
    finally:
        _finish(session, sock)


@pytest.mark.parametrize("dtls", [False, True], ids=["tls", "dtls"])
def test_psk_suite_at_seclevel_1_opens_and_has_no_peer_cert(servers, pki, dtls):
    proto = "-dtls1_2" if dtls else "-tls1_2"
    server = servers("-nocert", "-psk", PSK_HEX, "-psk_identity", "modem-1", proto, "-cipher", "PSK:@SECLEVEL=0")
    settings = _session(pki, dtls=dtls, psk_identity=b"modem-1", psk_key=bytes.fromhex(PSK_HEX))
    session, events, sock = drive(settings, server.address)
    try:
        assert session.state == "established", events
        assert "PSK" in str(session._buffer.cipher())
        assert not session._buffer.getpeercert(binary_form=True)
    finally:
        _finish(session, sock)


@pytest.mark.needs_native
@pytest.mark.parametrize("dtls", [False, True], ids=["tls", "dtls"])
def test_resumed_session_opens_and_getpeercert(servers, pki, dtls):
    """session_cache on: the second handshake resumes (no Certificate message); the end check
    must not refuse it.  python-mbedtls 2.10.1 returns the cached session's leaf then."""
    from tls_engine.resumption import SessionCache
    proto = "-dtls1_2" if dtls else "-tls1_2"
    server = servers("-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path), proto,
                     "-cipher", "ALL:@SECLEVEL=0")
    cache = SessionCache()
    settings = _session(pki, dtls=dtls, session_cache=True)
    resumed = []
    for _ in range(2):
        session, events, sock = drive(settings, server.address, cache=cache, key=("k", 0))
        try:
            assert session.state == "established", events
            done = [e for e in events if type(e).__name__ == "HandshakeComplete"]
            resumed.append(done[0].resumed)
            leaf = session._buffer.getpeercert(binary_form=True)
            if done[0].resumed:
                assert not session._cert_seen and not session._checked
            assert leaf == der(pki.server.cert_pem)
        finally:
            _finish(session, sock)
        time.sleep(0.2)
    assert resumed == [False, True]


@pytest.mark.parametrize("dtls", [False, True], ids=["tls", "dtls"])
def test_seclevel_2_open(servers, pki, dtls):
    proto = "-dtls1_2" if dtls else "-tls1_2"
    server = servers("-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path), proto,
                     "-cipher", "ALL:@SECLEVEL=0", "-Verify", "1", "-CAfile", str(pki.ca.cert_path))
    settings = _session(pki, dtls=dtls, seclevel=2, client_cert_pem=pki.client.cert_pem,
                        client_key_pem=pki.client.key_pem)
    session, events, sock = drive(settings, server.address)
    try:
        assert session.state == "established", events
        assert session._buffer.getpeercert(binary_form=True) == der(pki.server.cert_pem)
    finally:
        _finish(session, sock)


# Was a bug, fixed: tls_engine/session.py TlsClientSession._sniff/_on_handshake_over with
# records.HandshakeSniffer: a spoofed Certificate datagram that Mbed TLS ignores (message_seq 40
# beyond its window; or a record version FE FC it drops, carrying the real message_seq) is checked
# by the sniffer and either fixes the genuine leaf's verdict (first chain wins) or marks the
# message_seq done; Mbed TLS completes the handshake with the genuine certificate, and
# _on_handshake_over refuses it
@pytest.mark.parametrize("forgery", ["far_seq_leaf_garbage", "bad_version_same_seq"])
def test_unit_forged_datagram_does_not_fail_a_trusted_dtls_server(servers, pki, forgery):
    """The two off-path forgeries, fed to TlsClientSession before the server's flight: Mbed TLS
    ignores them and completes with the genuine certificate; the open must succeed."""
    server = servers(*dtls_args(pki.server.chain_path, pki.server.key_path))
    if forgery == "far_seq_leaf_garbage":
        forged = [record(CT_HANDSHAKE, handshake(11, cert_body(der(pki.server.cert_pem), GARBAGE_CERT), 40), seq=20)]
    else:
        body = cert_body(der(pki.wrong_server.cert_pem))
        forged = [record(CT_HANDSHAKE, handshake(11, body, 1) + handshake(11, body, 2), seq=5, version=b"\xfe\xfc")]
    from tls_engine import native
    session, events, sock = drive(_session(pki, dtls=True), server.address, forged=forged)
    try:
        # Mbed TLS itself finished the handshake, with the genuine leaf
        assert native.handshake_over(session._buffer), events
        assert session._buffer.getpeercert(binary_form=True) == der(pki.server.cert_pem)
        assert session.state == "established", events
    finally:
        _finish(session, sock)


# == Q3: TLS (TCP): the early check and the end check =============================================
def test_tls_empty_certificate_list_is_refused_early(pki):
    """A TLS server whose Certificate message is empty: refused when it arrives, as Mbed TLS 2.28
    refuses it (ssl_parse_certificate_chain: shorter than one certificate, decode_error,
    -0x7A00) -- the sniffer's verdict is held until Mbed TLS has taken the message, which it
    never does; the end check never runs."""
    from tls_engine.session import TlsClientSession
    session = TlsClientSession(_session(pki, dtls=False))
    session.start()
    session.outgoing()
    hello = bytes([2]) + (38).to_bytes(3, "big") + b"\x03\x03" + bytes(32) + b"\x00" + \
        b"\xc0\x2f" + b"\x00"
    cert = bytes([11]) + (3).to_bytes(3, "big") + b"\x00\x00\x00"
    hs = hello + cert
    session.receive(bytes([22, 3, 3]) + len(hs).to_bytes(2, "big") + hs)
    events = session.events()
    assert session.state == "failed"
    assert events and events[-1].kind == "handshake_failed" and "0x7A00" in events[-1].reason, events
    assert session.outgoing() == [bytes([21, 3, 3, 0, 2, 2, 50])]
