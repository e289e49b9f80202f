"""Adversarial tests: hostile DTLS peers and lossy / hostile UDP paths (EC2x, through the pty).

Small UDP middleboxes on 127.0.0.1 sit between the emulator (routed with
emulator.router.add_map) and a real `openssl s_server -dtls1_2`, and drop, duplicate,
reorder, truncate, corrupt or inject datagrams; hostile UDP "servers" answer the ClientHello
with garbage, an endless HelloVerifyRequest loop, a fatal alert, a wrong record version, or
never.  What is checked, with the module's rules (docs/behaviour.md, the EC2x SSL note):
one +QSSLOPEN answer per open (0, 566 or 569 at negotiatetime), records that fail their
checks dropped silently (RFC 6347 4.1.2.7), data delivered exactly once and byte-exact, a
certificate check that an injected datagram cannot fool, the id reusable afterwards, no fd
leak, the port still answering AT, no error or traceback in the log.  Plain UDP sockets
(AT+QIOPEN "UDP") facing duplicates, reordering and oversized datagrams: each datagram is
delivered whole, as received, once per copy received.

Not repeated here (tests/e2e/test_adversarial_udp_dtls_prompts.py has them): a lost flight,
duplicated or reordered application datagrams from a well-behaved path, a server answering
from another port, the ClientHello retransmission on manual time, SEND FAIL on a blackhole."""
from __future__ import annotations

import re
import select
import socket
import threading
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import (CT_ALERT, CT_APP, CT_HANDSHAKE, certificate_message,
                                              handshake, hello_verify_request, is_client_hello, record,
                                              records)
from tests.e2e.socket_support import UDP_HOST, UDP_PORT, fds, qiopen, qird, qisend, wait_for
from tests.e2e.ssl_options_support import HOST, PORT, cfg, close, recv_all, trust

OPENED = re.compile(rb"\+QSSLOPEN: (\d+),(-?\d+)\r\n")


# -- wire helpers (the rest: emulator/testing/peers/dtls_wire.py) -------------------------------
def is_app(d: bytes) -> bool:
    recs = records(d)
    return bool(recs) and all(r.type == CT_APP for r in recs)


# -- hostile servers (the middlebox: emulator/testing/peers/udp_relay.py UdpMiddlebox) ------------
class HostileServer:
    """A UDP "DTLS server" that answers each datagram with answer(index, data) -> datagrams."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="hostile-udp")
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            if not select.select([self.sock], [], [], 0.05)[0]:
                continue
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                return
            self.received.append(data)
            for out in self.answer(len(self.received) - 1, data):
                try:
                    self.sock.sendto(out, addr)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def dtls_server(pki):
    servers = []

    def start(certs=None, *extra: str) -> OpenSslServer:
        cert, key = (certs or pki.server).load_args
        server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0", *extra])
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


# -- pty helpers ---------------------------------------------------------------------------------
def route(emulator, port: int) -> None:
    emulator.router.add_map(HOST, PORT, "127.0.0.1", port)


def start_open(host, client_id: int = 0, ctx: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{client_id},"{HOST}",{PORT}') == b"\r\nOK\r\n"


def answers(host, client_id: int = 0) -> list[int]:
    """Every +QSSLOPEN result for client_id the host has received so far."""
    return [int(m.group(2)) for m in OPENED.finditer(bytes(host.transcript)) if int(m.group(1)) == client_id]


def one_answer(host, client_id: int = 0, timeout: float = 20) -> int:
    """Wait for the open's answer, then make sure no second one follows."""
    wait_for(lambda: host._fill() or answers(host, client_id), timeout, "+QSSLOPEN")
    host.quiet_for(0.3)
    got = answers(host, client_id)
    assert len(got) == 1, got
    host.transcript.clear()     # (the next open on this id is counted afresh)
    host._consumed.clear()
    return got[0]


def alive(host) -> None:
    assert host.at("AT") == b"\r\nOK\r\n"


def read_all(host, client_id: int, want: int, timeout: float = 10) -> bytes:
    return recv_all(host, client_id, want, timeout)


def nothing_more(host, client_id: int = 0) -> None:
    time.sleep(0.3)
    assert host.at(f"AT+QSSLRECV={client_id},1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"


def dtls_ready(host, emulator, port: int, *, verify_with=None, negotiatetime: int | None = None) -> None:
    route(emulator, port)
    if verify_with is not None:
        trust(host, 0, verify_with)
    cfg(host, "dtls", 0, 1)
    if negotiatetime is not None:
        cfg(host, "negotiatetime", 0, negotiatetime)


# == the certificate check and what a middlebox injects =========================================
def test_untrusted_dtls_server_is_refused_once_and_the_id_is_reusable(ec2x, net, emulator, dtls_server, pki):
    """The control for the next test: seclevel 1, a server whose chain is from another CA ->
    exactly one +QSSLOPEN: 0,566; the id opens again against the right server."""
    attacker = dtls_server(pki.wrong_server)
    dtls_ready(ec2x, emulator, attacker.address[1], verify_with=pki.ca.cert_pem)
    start_open(ec2x)
    assert one_answer(ec2x) == 566
    assert b"566" in ec2x.at("AT+QIGETERROR")
    assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    good = dtls_server()
    route(emulator, good.address[1])
    start_open(ec2x)
    assert one_answer(ec2x) == 0
    close(ec2x)


# Was a bug, fixed: certificate check bypass: at seclevel 1 a DTLS open to a server with an
# untrusted chain succeeds (+QSSLOPEN: 0,0) when one spoofed epoch-0 datagram carrying the genuine
# server's public certificate (a Certificate message with a far-future message_seq, which Mbed TLS
# ignores) arrives first: tls_engine/session.py TlsClientSession._sniff verifies the FIRST
# Certificate message records.HandshakeSniffer reassembles (self._cert_seen latch), not the one
# Mbed TLS processed (message_seq never matched against the handshake's), and Mbed TLS runs
# VERIFY_OPTIONAL, so the attacker's real certificate is never checked
def test_injected_certificate_cannot_pass_the_check(ec2x, net, emulator, dtls_server, pki):
    attacker = dtls_server(pki.wrong_server)
    # the genuine server's certificate is public: anyone can put it in a datagram
    forged = record(CT_HANDSHAKE, certificate_message(pki.server.cert_pem, msg_seq=40), seq=20)
    # injected before the ClientHello goes on: it comes first
    with UdpMiddlebox(attacker.address, inject_first=[forged]) as box:
        dtls_ready(ec2x, emulator, box.port, verify_with=pki.ca.cert_pem)
        start_open(ec2x)
        assert one_answer(ec2x) == 566
    alive(ec2x)


# Was a bug, fixed: one junk datagram (not a DTLS record: content type/version byte outside the
# DTLS set) that reaches the modem before the server's Certificate makes a seclevel>=1 DTLS open
# fail with 566 'server did not present a certificate', though Mbed TLS discarded it and the
# handshake completed: tls_engine/records.py HandshakeSniffer._feed_datagram raises SnifferError
# for the whole datagram, feed() then sets broken=True for good, the real Certificate is never
# seen and TlsClientSession._on_handshake_over fails on not _cert_seen (an off-path DoS)


@pytest.mark.parametrize("junk", ["not_dtls", "tls_version_record"])
def test_junk_datagram_before_the_servers_flight_does_not_break_verification(
        ec2x, net, emulator, dtls_server, pki, junk):
    """seclevel 1, the trusted server: a junk datagram that reached the modem first (a
    spoofed or stray one; RFC 6347 4.1.2.7: invalid records are discarded silently) must not
    stop the open from succeeding."""
    server = dtls_server()
    bad = {"not_dtls": b"\x00junk" * 20,
           # a record with TLS 1.2's version: Mbed TLS drops it (not DTLS)
           "tls_version_record": record(CT_ALERT, b"\x01\x00", seq=1, version=b"\x03\x03")}[junk]
    with UdpMiddlebox(server.address, inject_first=[bad]) as box:
        dtls_ready(ec2x, emulator, box.port, verify_with=pki.ca.cert_pem)
        start_open(ec2x)
        assert one_answer(ec2x) == 0
        assert ec2x.send_data(0, b"verified\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"verified", 10)
        close(ec2x)


# == records that fail their checks after the handshake: dropped, the socket lives ==============
def _flip_last(d: bytes) -> bytes:
    return d[:-1] + bytes([d[-1] ^ 0x01])


def _set_epoch(d: bytes, epoch: int) -> bytes:
    return d[:3] + epoch.to_bytes(2, "big") + d[5:]


MUTATIONS = {
    "bad_mac": lambda d: [(0, _flip_last(d))],
    "truncated": lambda d: [(0, d[:-5])],
    "header_only": lambda d: [(0, d[:13])],
    "next_epoch": lambda d: [(0, _set_epoch(d, 2))],
    "epoch_0": lambda d: [(0, _set_epoch(d, 0))],
    "tls_version": lambda d: [(0, d[:1] + b"\x03\x03" + d[3:])],
    "length_too_big": lambda d: [(0, d[:11] + (len(d) - 13 + 40).to_bytes(2, "big") + d[13:])],
    # a corrupted copy first, then the real one: the bad one must not burn its sequence number
    "bad_then_good": lambda d: [(0, _flip_last(d)), (0.1, d)],
    "good_then_replayed": lambda d: [(0, d), (0.1, d), (0.2, d)],
}
DELIVERED = {"bad_then_good", "good_then_replayed"}


@pytest.mark.parametrize("how", sorted(MUTATIONS))
def test_damaged_application_datagram_is_dropped_silently(ec2x, net, emulator, dtls_server, how):
    """The server's first application datagram is damaged by the path; the second arrives
    intact.  RFC 6347 4.1.2.7: the damaged record is discarded, the connection goes on: no
    "closed" URC, the second datagram (and a repaired copy, once) reach the host byte-exact,
    and data still go up."""
    server = dtls_server()
    state = {"app": 0}

    def rule(direction, index, data):
        if direction == "s2c" and is_app(data):
            state["app"] += 1
            if state["app"] == 1:
                return MUTATIONS[how](data)
        return [(0, data)]

    with UdpMiddlebox(server.address, rule) as box:
        dtls_ready(ec2x, emulator, box.port)
        start_open(ec2x)
        assert one_answer(ec2x) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"first\n")
        wait_for(lambda: state["app"] >= 1, 5, "the first datagram")
        time.sleep(0.4)
        server.write(b"second\n")
        want = b"first\nsecond\n" if how in DELIVERED else b"second\n"
        assert read_all(ec2x, 0, len(want)) == want
        nothing_more(ec2x)
        assert b"closed" not in bytes(ec2x.transcript)
        assert ec2x.send_data(0, b"still up\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"still up", 10)
        close(ec2x)


def test_oversized_and_forged_datagrams_after_the_handshake(ec2x, net, emulator, dtls_server):
    """Datagrams no MTU carries (65000 bytes of junk; a real record followed by 40000 junk
    bytes) and spoofed clear-text records (a fatal alert, a handshake message in epoch 0) that
    reach an open DTLS socket: the junk is discarded, the real record delivered once, the
    unauthenticated alert ignored (it is not of the current epoch), the socket stays open."""
    server = dtls_server()
    state = {"app": 0}

    def rule(direction, index, data):
        if direction == "s2c" and is_app(data):
            state["app"] += 1
            if state["app"] == 1:
                return [(0, data + bytes(40000))]
        return [(0, data)]

    with UdpMiddlebox(server.address, rule) as box:
        dtls_ready(ec2x, emulator, box.port)
        start_open(ec2x)
        assert one_answer(ec2x) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        box.inject(bytes(range(256)) * 254)                                # 65024 bytes of junk
        box.inject(record(CT_ALERT, b"\x02\x28", seq=50))                  # fatal handshake_failure
        box.inject(record(CT_HANDSHAKE, handshake(0, b"", 9), seq=51))     # HelloRequest in clear
        server.write(b"padded\n")
        assert read_all(ec2x, 0, 7) == b"padded\n"
        server.write(b"after junk\n")
        assert read_all(ec2x, 0, 11) == b"after junk\n"
        nothing_more(ec2x)
        assert b"closed" not in bytes(ec2x.transcript)
        assert ec2x.send_data(0, b"up after junk\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"up after junk", 10)
        close(ec2x)


# == a handshake over a hostile path ==============================================================
def test_handshake_through_duplicating_reordering_path(ec2x, net, emulator, dtls_server):
    """Every client datagram twice; the server's flights arrive in reverse order (each of its
    first 12 datagrams held back less than the one before) and each twice; then data both
    ways, each datagram once and exact."""
    server = dtls_server()

    def rule(direction, index, data):
        if direction == "c2s":
            return [(0, data), (0.02, data)]
        if index < 12 and not is_app(data):
            hold = 0.05 * (12 - index)
            return [(hold, data), (hold + 0.03, data)]
        return [(0, data), (0, data)]

    with UdpMiddlebox(server.address, rule) as box:
        dtls_ready(ec2x, emulator, box.port)
        start_open(ec2x)
        assert one_answer(ec2x, timeout=30) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        blob = bytes(range(256)) * 4 + b"\n"
        assert ec2x.send_data(0, blob) == b"\r\nSEND OK\r\n"
        server.wait_for_output(re.escape(blob[-40:]), 10)
        assert server.stdout.count(blob[:-1]) == 1
        server.write(b"down once\n")
        assert read_all(ec2x, 0, 10) == b"down once\n"
        nothing_more(ec2x)
        close(ec2x)


# == hostile servers ==============================================================================
def _alert(index, data):
    return [record(CT_ALERT, b"\x02\x28", seq=index)]            # fatal handshake_failure, clear


def test_fatal_alert_answer_fails_the_open_at_once_and_leaks_nothing(ec2x_strict, emulator, dtls_server):
    """A server answering the ClientHello with a fatal alert: +QSSLOPEN: 0,566 without the
    modem's clock moving (the alert ended it, not negotiatetime), exactly once; three times
    over, no fd left behind; then the same id opens to a real server."""
    host, advance, _ = ec2x_strict
    with HostileServer(_alert) as hostile:
        dtls_ready(host, emulator, hostile.port, negotiatetime=20)
        start_open(host)
        assert one_answer(host) == 566
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        before = fds()
        for _ in range(3):
            start_open(host)
            assert one_answer(host) == 566
            assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        wait_for(lambda: fds() <= before, 5, "fds back")
        assert len(hostile.received) == 4 and all(is_client_hello(d) for d in hostile.received)
        advance(25)
        assert b"QSSLOPEN" not in host.quiet_for(0.3)
    server = dtls_server()
    route(emulator, server.address[1])
    start_open(host)
    assert one_answer(host) == 0
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_endless_hello_verify_requests_end_at_negotiatetime(ec2x_strict, emulator):
    """A server that answers every ClientHello with a HelloVerifyRequest and a new cookie:
    the open ends once, with 569 when negotiatetime (10 s, the modem's clock) has passed, and
    the cookie exchange stops there; the id is free again."""
    host, advance, _ = ec2x_strict

    def hvr(index, data):
        return [hello_verify_request(index.to_bytes(4, "big") * 4, rec_seq=index)]

    with HostileServer(hvr) as hostile:
        dtls_ready(host, emulator, hostile.port, negotiatetime=10)
        start_open(host)
        wait_for(lambda: len(hostile.received) >= 2, 5, "a second ClientHello")
        for _ in range(4):                       # whatever the loop's pace: the clock ends it
            advance(1.1)
            time.sleep(0.05)
        assert not answers(host)
        advance(6.5)
        assert one_answer(host) == 569
        assert all(is_client_hello(d) for d in hostile.received)
        assert any(len(d) > len(hostile.received[0]) for d in hostile.received[1:]), "no cookie echoed"
        n = len(hostile.received)
        advance(5)
        time.sleep(0.3)
        assert len(hostile.received) == n, "ClientHellos after the open failed"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        alive(host)


HOSTILE_ANSWERS = {
    "garbage": lambda i, d: [b"\xde\xad\xbe\xef" * 30],
    "tls_record_version": lambda i, d: [hello_verify_request(b"c" * 8, rec_seq=i)[:1] + b"\x03\x03"
                                        + hello_verify_request(b"c" * 8, rec_seq=i)[3:]],
    "wrong_epoch": lambda i, d: [_set_epoch(hello_verify_request(b"c" * 8, rec_seq=i), 1)],
    "truncated": lambda i, d: [hello_verify_request(b"c" * 8, rec_seq=i)[:-6]],
    # (an empty datagram is not discarded: Mbed TLS's transport reads it as the end,
    # CONN_EOF -- test_adversarial_dtls_5::test_empty_datagram_before_the_servers_flight_...)
    "jumbo": lambda i, d: [b"\x16\xfe\xfd" + bytes(65000)],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_ANSWERS))
def test_server_answering_nonsense_times_out_with_retransmissions(ec2x_strict, emulator, kind):
    """Answers Mbed TLS must discard (RFC 6347 4.1.2.7): the handshake neither fails nor
    completes; the ClientHello is retransmitted on the modem's timer (1 s, then 2 s) and the
    open ends once with 569 at negotiatetime; the port keeps answering AT meanwhile."""
    host, advance, _ = ec2x_strict
    with HostileServer(HOSTILE_ANSWERS[kind]) as hostile:
        dtls_ready(host, emulator, hostile.port, negotiatetime=10)
        start_open(host)
        wait_for(lambda: len(hostile.received) >= 1, 5, "the ClientHello")
        alive(host)
        advance(1.1)
        wait_for(lambda: len(hostile.received) >= 2, 5, "a retransmission after 1 s")
        advance(2.1)
        wait_for(lambda: len(hostile.received) >= 3, 5, "a retransmission after 2 s more")
        assert all(is_client_hello(d) for d in hostile.received)
        assert not answers(host)
        advance(7)
        assert one_answer(host) == 569
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        alive(host)


def test_dtls10_server_for_a_dtls12_context_is_refused_once(ec2x, net, emulator, pki):
    """dtlsversion 1 (DTLS 1.2 only) against `s_server -dtls1`: one +QSSLOPEN: 0,566, then
    dtlsversion 0 on the same id opens."""
    cert, key = pki.server.load_args
    with OpenSslServer(["-cert", cert, "-key", key, "-dtls1", "-cipher", "ALL:@SECLEVEL=0"]) as server:
        dtls_ready(ec2x, emulator, server.address[1])
        cfg(ec2x, "dtlsversion", 0, 1)
        start_open(ec2x)
        assert one_answer(ec2x) == 566
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        cfg(ec2x, "dtlsversion", 0, 0)
        start_open(ec2x)
        assert one_answer(ec2x) == 0
        close(ec2x)


# == plain UDP sockets: duplicates, reordering, datagrams no MTU carries ==========================
def _udp_peer(emulator):
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", srv.getsockname()[1])
    return srv


def test_udp_buffer_mode_duplicates_and_a_65507_byte_datagram(ec2x_strict, emulator):
    """A connected UDP socket: a datagram duplicated by the path is two datagrams (UDP has no
    replay protection), the largest IPv4 datagram (65507 bytes) is read whole in 1500-byte
    parts, its tail never joined to the next datagram; all byte-exact, in arrival order."""
    host, _, _ = ec2x_strict
    srv = _udp_peer(emulator)
    try:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        assert qisend(host, 0, b"hi") == b"\r\nSEND OK\r\n"
        _, me = srv.recvfrom(100)
        jumbo = bytes((i * 7) % 256 for i in range(65507))
        sent = [b"dup\r\n", b"dup\r\n", b"\x00\x1a\x1b+++\r\nOK\r\n", jumbo, b"tail"]
        for d in sent:
            srv.sendto(d, me)
        host.seen(b'+QIURC: "recv",0\r\n')
        total = sum(map(len, sent))
        wait_for(lambda: f"+QIRD: {total},".encode() in host.at("AT+QIRD=0,0"), 10, "every datagram")
        got = []
        for _ in range(200):
            data = qird(host, 0, 1500)[1]
            if not data:
                break
            got.append(data)
        small = [d for d in got if len(d) < 1500]
        assert got[:3] == sent[:3]
        assert b"".join(got[3:-1]) == jumbo and len(got) == 3 + 44 + 1
        assert got[-1] == b"tail" and small[-2] == jumbo[1500 * 43:]
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    finally:
        srv.close()


def test_udp_push_mode_each_datagram_one_urc_as_received(ec2x_strict, emulator):
    """Push mode (access mode 1): each datagram, duplicated or overtaken on the path, is one
    +QIURC: "recv",0,<len> followed by exactly its bytes, in arrival order, even when the
    bytes look like URCs."""
    host, _, _ = ec2x_strict
    srv = _udp_peer(emulator)
    try:
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT, mode=1)
        assert qisend(host, 0, b"hi") == b"\r\nSEND OK\r\n"
        _, me = srv.recvfrom(100)
        fake = b'\r\n+QIURC: "closed",0\r\n'
        sent = [b"third", b"first", b"first", fake, bytes(range(256)) * 5, b"second"]
        for d in sent:
            srv.sendto(d, me)
            time.sleep(0.01)
        got = []
        for _ in sent:
            head = host.read_until(re.compile(rb'\+QIURC: "recv",0,(\d+)\r\n'), 10)
            n = int(re.search(rb",(\d+)\r\n$", head).group(1))
            got.append(host.read_exactly(n))
        assert got == sent
        assert b"QIURC" not in host.quiet_for(0.3)
        assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
    finally:
        srv.close()
