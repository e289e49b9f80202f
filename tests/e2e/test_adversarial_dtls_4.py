"""Adversarial round 4 on the EC2x's DTLS client (AT+QSSLCFG "dtls" / "dtlsversion", PSK and
certificate suites) through the pty, against `openssl s_server -dtls1_2` (PSK and certificates),
hand-made UDP "servers" and the UdpMiddlebox (emulator/testing/peers/udp_relay.py).

Ground not covered by the other DTLS files (test_adversarial_dtls_3 / _dtls_psk / _dtls_paths /
_dtls_cert_review / _psk_dtls_openssl / _udp_dtls_prompts / test_ssl_options_keylog_psk_dtls,
hostile_servers_3 / _5 / _9 / _12 / _13):
  * the handshake's whole retransmission schedule on the modem's manual time (Mbed TLS 2.28:
    hs_timeout 1 s doubling to 60 s): ClientHellos at 0, 1, 3, 7, 15, 31, 63 s and none in
    between, each the same message (same random, message_seq 0) in a fresh record number, and
    `+QSSLOPEN: 0,569` at 123 s (docs/behaviour.md "SSL sockets"), not before;
  * a HelloVerifyRequest answering the third ClientHello: the cookie-carrying ClientHello is a
    new flight, so its timer starts again at 1 s (mbedtls_ssl_send_flight_completed), not 4 s;
  * the client's last flight (ClientKeyExchange, CCS, Finished) resent at 1 s then 2 s of modem
    time while the server's CCS/Finished is lost twice, the handshake then completes and data
    flows;
  * the same schedule run by one 130 s jump of the clock (seven hellos, one 569); two sockets
    each on its own timer; AT+CCLK moved decades either way does not move the timer;
  * a retransmission by the server of its previous flight makes the modem resend its own at
    once on a frozen clock (a replay of the same record numbers does not); a mutual-auth
    flight spread over several datagrams is resent whole; a 700 ms `net` link (round trip
    over the 1 s timer) still opens, and delays data on modem time both ways;
  * after the handshake: an application record repeated inside one datagram (the anti-replay
    window within a datagram), valid server records sent from another source port mid-session
    (a connected socket never hears them; later ones from the right port all arrive),
    a datagram the server sent before its close_notify delivered after it (never reaches the
    host), AT+QSSLCLOSE (one encrypted close_notify datagram, nothing heard afterwards, the id
    opens again), AT+QSSLSEND + AT+QSSLCLOSE in one write (two datagrams in order), forged
    records under the session's keys back to back with genuine ones, an invalid record in
    the middle of a datagram (Mbed TLS drops the rest of that datagram only), the server's old
    final flight coalesced with new data, a DTLS HelloRequest with renegotiation 0 (one
    no_renegotiation warning, decrypted), close_notify behind 75 KiB the host has not read,
    transparent mode dribbling (one record per datagram), a 30 % lossy link (whole datagrams
    lost, never reordered or doubled).
Two bugs the round found, fixed: a `net` link with loss but no delay held every datagram until
the manual clock moved; AT+QSSLCLOSE dropped the datagrams (a SEND OK line, the close_notify)
still on a `net` latency link.
Every check is on exact bytes on the pty and on the wire.
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpEchoServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import (CT_ALERT, CT_APP, CT_CCS, CT_HANDSHAKE, hello_verify_request,
                                              is_client_hello, records)
from tests.e2e.socket_support import wait_for
from tests.e2e.ssl_options_support import HOST, PORT, cfg, recv_all
from tests.e2e.test_adversarial_psk_dtls_openssl import (OK, answers, close, one_answer, psk_ctx, psk_server,
                                                         round_trip, route, start_open, state_of)
from tests.e2e.test_adversarial_psk_dtls_openssl import crlf_host, servers  # noqa: F401 (fixtures)

GCM = 8 + 16                      # explicit nonce + tag of an AES-GCM record
RECV_URC = b'+QSSLURC: "recv",0\r\n'
CLOSED_URC = b'+QSSLURC: "closed",0\r\n'


def hello_body(datagram: bytes) -> bytes:
    """The handshake message of a ClientHello datagram (header and body, record header off)."""
    return records(datagram)[0].payload


def record_seq(datagram: bytes) -> int:
    return int.from_bytes(datagram[5:11], "big")


def count_after(server: UdpEchoServer) -> int:
    time.sleep(0.25)                      # (a resend the timer just made has time to land)
    return len(server.log)


def read_all(host, client_id: int = 0) -> bytes:
    """AT+QSSLRECV=<id>,1500 until it gives 0 bytes; everything it gave (each answer framed
    exactly: the count, that many bytes, CR LF, OK; a "recv" URC may come first)."""
    got = b""
    for _ in range(100):
        answer = host.at(f"AT+QSSLRECV={client_id},1500")
        m = re.search(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
        assert m and answer[:m.start()] in (b"", b'\r\n+QSSLURC: "recv",%d\r\n' % client_id), answer
        n = int(m.group(1))
        assert answer[m.end() + n:] == (b"\r\nOK\r\n" if n == 0 else b"\r\n\r\nOK\r\n"), answer
        if n == 0:
            return got
        got += answer[m.end():m.end() + n]
    raise AssertionError("AT+QSSLRECV never ran dry")


def types_of(datagram: bytes) -> list[int]:
    return [r.type for r in records(datagram, whole=True)]


# == the retransmission schedule on manual time ===================================================
def test_silent_server_client_hellos_at_1_3_7_15_31_63_s_and_569_at_123_s(ec2x_strict, emulator):
    """A server that never answers, default negotiatetime (300 s): Mbed TLS resends the
    ClientHello when its timer (1, 2, 4, 8, 16, 32 s, then 60 s) runs out on the modem's clock,
    so the datagrams leave at 0, 1, 3, 7, 15, 31, 63 s -- never a moment early -- and the open
    ends 60 s after the last one (123 s) with 569.  Each resend is the same ClientHello (same
    random and session, message_seq 0) in the next record number."""
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", silent.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        silent.wait_datagrams(1, 5)
        now = 0.0
        for n, at in enumerate((1, 3, 7, 15, 31, 63), start=2):
            advance(at - 0.15 - now)
            assert count_after(silent) == n - 1, f"resent before {at} s"
            advance(0.3)
            now = at + 0.15
            silent.wait_datagrams(n, 3)
            assert count_after(silent) == n, f"more than one resend at {at} s"
        advance(123 - 0.2 - now)
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
        assert len(silent.log) == 7
        advance(0.4)
        host.seen(b"+QSSLOPEN: 0,569\r\n", 5)
        assert host.quiet_for(0.3) == b""
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        grams = [d for _, d in silent.log]
        assert all(is_client_hello(d) for d in grams)
        assert len({hello_body(d) for d in grams}) == 1            # the very same message
        assert [record_seq(d) for d in grams] == list(range(record_seq(grams[0]), record_seq(grams[0]) + 7))
        advance(200)
        assert count_after(silent) == 7                            # nothing after the failure
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert state_of(host, 0) is None


def test_one_130_s_jump_of_the_modem_clock_runs_the_whole_schedule_once(ec2x_strict, emulator):
    """The same silent server, but the modem's clock is moved 130 s in one step: the time in
    between passes as time (the six resends, then the 60 s wait), so exactly seven ClientHellos
    and one +QSSLOPEN: 0,569 -- no burst of resends, no second answer after more time."""
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", silent.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        silent.wait_datagrams(1, 5)
        advance(130)
        host.seen(b"+QSSLOPEN: 0,569\r\n", 5)
        advance(300)
        assert host.quiet_for(0.5) == b""
        assert len(silent.log) == 7 and all(is_client_hello(d) for _, d in silent.log)
        assert bytes(host.transcript).count(b"+QSSLOPEN") == 1
        assert host.at("AT+QSSLCLOSE=0") == OK


def test_hello_verify_request_after_two_resends_restarts_the_timer_at_1_s(ec2x_strict, emulator):
    """A hand-made server ignores the ClientHello and its two resends (t = 0, 1, 3 s), then
    answers the third with a HelloVerifyRequest: the ClientHello with the cookie goes at once
    and, being a new flight, is resent after 1 s and then 2 s of modem time (Mbed TLS resets
    its timer for each new flight), not after the 4 s the old flight had reached."""
    host, advance, _ = ec2x_strict
    cookie = bytes(range(1, 33))
    with UdpEchoServer(echo=False) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        srv.wait_datagrams(1, 5)
        advance(1.1)
        srv.wait_datagrams(2, 3)
        advance(2.1)
        got = srv.wait_datagrams(3, 3)
        assert count_after(srv) == 3
        addr = got[-1][0]
        srv.sock.sendto(hello_verify_request(cookie), addr)
        got = srv.wait_datagrams(4, 3)                              # at once, no clock moved
        with_cookie = got[3][1]
        assert is_client_hello(with_cookie) and cookie in hello_body(with_cookie)
        advance(0.8)
        assert count_after(srv) == 4, "the cookie ClientHello resent before 1 s"
        advance(0.4)                                                # 1.2 s after it
        got = srv.wait_datagrams(5, 3)
        assert hello_body(got[4][1]) == hello_body(with_cookie)
        advance(1.7)                                                # 2.9 s after it
        assert count_after(srv) == 5
        advance(0.4)                                                # 3.3 s: 1 + 2
        got = srv.wait_datagrams(6, 3)
        assert hello_body(got[5][1]) == hello_body(with_cookie)
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)


def test_client_last_flight_resent_at_1_then_2_s_while_the_servers_finished_is_lost(
        ec2x_strict, emulator, servers, pki):
    """Certificate suite (ECDHE-RSA), s_server -dtls1_2 behind a middlebox that drops the
    server's CCS/Finished datagram twice: the modem's ClientKeyExchange/CCS/Finished flight is
    resent 1 s, then 2 s more of modem time later (none earlier), the plain ClientKeyExchange
    the same each time in fresh record numbers; the third copy of the server's answer passes,
    the open answers 0 and data flows both ways."""
    host, advance, _ = ec2x_strict
    cert, key = pki.server.load_args
    server = servers(OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2",
                                    "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]))
    dropped = [0]

    def rule(direction, index, data):
        if direction == "s2c" and CT_CCS in types_of(data) and dropped[0] < 2:
            dropped[0] += 1
            return []
        return [data]

    def flights(box):
        return [d for d in box.sent("c2s") if CT_CCS in types_of(d)]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        start_open(host)
        box.wait_for(lambda: dropped[0] == 1, 10)
        assert len(flights(box)) == 1
        advance(0.8)
        time.sleep(0.3)
        assert len(flights(box)) == 1, "resent before 1 s"
        advance(0.4)
        box.wait_for(lambda: dropped[0] == 2, 5)
        assert len(flights(box)) == 2
        advance(1.6)
        time.sleep(0.3)
        assert len(flights(box)) == 2, "second resend before 2 s"
        assert b"+QSSLOPEN" not in host.quiet_for(0.1)
        advance(0.6)
        assert one_answer(host) == 0
        sent = flights(box)
        assert len(sent) == 3
        cke = [[r for r in records(d, whole=True) if r.type == CT_HANDSHAKE and r.epoch == 0] for d in sent]
        assert all(c for c in cke) and len({c[0].payload for c in cke}) == 1
        seqs = [c[0].seq for c in cke]
        assert seqs == sorted(set(seqs))
        server.wait_for_output(rb"CIPHER is", 10)
        round_trip(host, server, b"after two lost finished\n", b"down ok\n")
        close(host)


# == after the handshake ==========================================================================
def test_a_record_repeated_inside_one_datagram_is_delivered_once(ec2x_strict, emulator, servers):
    """PSK: the middlebox turns each server application datagram D into D + D (the same record,
    same record number, twice in one datagram).  Mbed TLS's anti-replay window drops the second
    copy: each line reaches the host once, in order, and nothing else."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    armed = [False]

    def rule(direction, index, data):
        if armed[0] and direction == "s2c" and types_of(data) == [CT_APP]:
            return [data + data]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        armed[0] = True
        lines = [b"one\n", b"two two\n", b"three three three\n"]
        for line in lines:
            server.write(line)
            time.sleep(0.1)
        want = b"".join(lines)
        assert recv_all(host, 0, len(want)) == want
        time.sleep(0.3)
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert state_of(host, 0) == 2
        round_trip(host, server, b"still fine\n", b"yes\n")
        close(host)


def test_valid_server_records_from_another_source_port_are_never_heard(ec2x_strict, emulator, servers):
    """PSK, mid-session the server's genuine application datagrams leave from another source
    port (a NAT rebinding) for two lines, then from the right port again: the two lines never
    reach the host (a connected UDP socket, as Mbed TLS's mbedtls_net_connect makes), the
    following lines all do, in order, once (their higher record numbers are fine after the
    gap), and the socket stays open."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    side.bind(("127.0.0.1", 0))
    diverted: list[bytes] = []
    state = {"divert": 0}
    box_ref: list[UdpMiddlebox] = []

    def rule(direction, index, data):
        if direction == "s2c" and state["divert"] and types_of(data) == [CT_APP]:
            state["divert"] -= 1
            diverted.append(data)
            side.sendto(data, box_ref[0]._client)
            return []
        return [data]

    try:
        with UdpMiddlebox(server.address, rule) as box:
            box_ref.append(box)
            route(emulator, box.port)
            psk_ctx(host)
            start_open(host)
            assert one_answer(host) == 0
            server.wait_for_output(rb"CIPHER is", 10)
            round_trip(host, server, b"before\n", b"first\n")
            host.transcript.clear()
            host._consumed.clear()
            state["divert"] = 2
            server.write(b"rebound A\n")
            wait_for(lambda: len(diverted) == 1, 5, "the first diverted datagram")
            server.write(b"rebound B\n")
            wait_for(lambda: len(diverted) == 2, 5, "the two diverted datagrams")
            time.sleep(0.4)
            assert RECV_URC not in host.quiet_for(0.2)
            assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
            server.write(b"back C\n")
            host.seen(RECV_URC, 5)
            server.write(b"back D\n")
            time.sleep(0.3)
            assert read_all(host) == b"back C\nback D\n"
            time.sleep(0.2)
            assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
            assert b"rebound" not in bytes(host.transcript)
            assert state_of(host, 0) == 2
            close(host)
    finally:
        side.close()


def test_a_datagram_from_before_the_close_notify_arriving_after_it_is_not_delivered(
        ec2x_strict, emulator, servers):
    """PSK, DTLS 1.0 (s_server -dtls1 sends its close_notify on "q"; with -dtls1_2 it closes
    its socket first): the server's line "held" is delayed by the middlebox until after its
    close_notify: the host gets "recv" for the line before, exactly one "closed", and the
    held line -- still a genuine, never-seen record number -- never appears (Mbed TLS stops
    reading at the close_notify); the id opens again."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-dtls1"))
    held: list[bytes] = []
    armed = [False]

    def rule(direction, index, data):
        if armed[0] and direction == "s2c" and types_of(data) == [CT_APP] and not held:
            held.append(data)
            return []
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        cfg(host, "dtlsversion", 0, 0)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"seen\n")
        assert recv_all(host, 0, 5) == b"seen\n"
        armed[0] = True
        server.write(b"held back\n")
        wait_for(lambda: held, 5, "the held datagram")
        server.write(b"q\n")
        host.seen(CLOSED_URC, 10)
        assert any(types_of(d) == [CT_ALERT] for d in box.sent("s2c"))
        box.inject(held[0])
        box.inject(held[0])
        time.sleep(0.5)
        host.quiet_for(0.2)
        t = bytes(host.transcript)
        assert t.count(CLOSED_URC) == 1
        assert t.count(RECV_URC) == 1 and t.index(RECV_URC) < t.index(CLOSED_URC)
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert b"held back" not in bytes(host.transcript)
        assert state_of(host, 0) == 4
        close(host)
    second = servers(psk_server(version="-dtls1"))
    route(emulator, second.port)
    start_open(host)
    assert one_answer(host) == 0
    round_trip(host, second, b"again\n", b"fine\n")
    close(host)


def test_qsslclose_sends_one_encrypted_close_notify_and_nothing_is_heard_after(ec2x_strict, emulator, servers):
    """PSK: AT+QSSLCLOSE answers OK and puts exactly one datagram on the wire: one alert record
    in epoch 1 (encrypted, so longer than the 2 clear bytes); s_server takes it as the end of
    the session.  A line the server sends afterwards reaches nothing on the pty, and the id
    opens again to a fresh handshake."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        round_trip(host, server, b"bye soon\n", b"ok\n")
        host.transcript.clear()
        host._consumed.clear()
        before = len(box.sent("c2s"))
        mark = server.mark()
        assert host.at("AT+QSSLCLOSE=0") == OK
        box.wait_for(lambda: len(box.sent("c2s")) > before, 5)
        time.sleep(0.5)
        after = box.sent("c2s")[before:]
        assert len(after) == 1, after
        recs = records(after[0], whole=True)
        assert [(r.type, r.epoch) for r in recs] == [(CT_ALERT, 1)]
        assert len(recs[0].payload) > 2
        server.wait_for_output(rb"DONE|shutting down|CONNECTION CLOSED", 10, since=mark)
        box.inject(b"\x17\xfe\xfd\x00\x01" + b"\x00" * 5 + b"\x09\x00\x10" + b"\x00" * 16)
        time.sleep(0.3)
        assert host.quiet_for(0.3) == b""
        assert state_of(host, 0) is None
    again = servers(psk_server())
    route(emulator, again.port)
    start_open(host)
    assert one_answer(host) == 0
    round_trip(host, again, b"reopened\n", b"hi\n")
    close(host)


@pytest.mark.parametrize("how", ["", ",0"], ids=["default_linger", "close_timeout_0"])
def test_send_then_close_in_one_write_each_its_own_datagram(ec2x_strict, emulator, servers, how):
    """PSK: "AT+QSSLSEND=0,12" + its data and AT+QSSLCLOSE written to the pty at once: SEND OK
    then OK; on the wire the data's record and the close_notify travel as two datagrams, in
    that order (one AT+QSSLSEND is one datagram of one record, docs/behaviour.md `dtls` row),
    and s_server prints the 12 bytes."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        before, mark = len(box.sent("c2s")), server.mark()
        data = b"last data!!\n"
        host.write(b"AT+QSSLSEND=0,12\r" + data + f"AT+QSSLCLOSE=0{how}\r".encode())
        got = host.read_until(b"\r\nOK\r\n", 10)
        assert got.endswith(b"\r\nSEND OK\r\n\r\nOK\r\n"), got
        box.wait_for(lambda: len(box.sent("c2s")) >= before + 2, 5)
        time.sleep(0.3)
        after = [[(r.type, r.epoch) for r in records(d, whole=True)] for d in box.sent("c2s")[before:]]
        assert after == [[(CT_APP, 1)], [(CT_ALERT, 1)]], after
        server.wait_for_output(re.escape(data), 10, since=mark)
        assert state_of(host, 0) is None


def test_forged_datagrams_back_to_back_with_genuine_ones_lose_nothing(ec2x_strict, emulator, pki, tmp_path):
    """s_server -dtls1_2 (ECDHE-RSA-AES128-GCM, its key log): after the handshake 20 pairs of
    datagrams are injected with no pause -- a record under the session's keys whose tag is
    broken, then a genuine one with the next record number -- and the forged one each time
    first (record numbers a little ahead of the server's own, so its next ones stay inside the
    64-record anti-replay window).  RFC 6347 4.1.2.7 / Mbed TLS: an invalid record drops its
    own datagram only; every genuine line reaches the host once, in order; the socket stays
    open and the server's own next line arrives too."""
    from tests.e2e.test_adversarial_hostile_servers_3 import DtlsSealer, _dtls_server
    host, advance, _ = ec2x_strict
    keylog = tmp_path / "dtls.keys"
    server = _dtls_server(pki, "-keylogfile", str(keylog))
    try:
        with UdpMiddlebox(server.address) as box:
            route(emulator, box.port)
            cfg(host, "dtls", 0, 1)
            cfg(host, "ciphersuite", 0, "0XC02F")
            start_open(host)
            assert one_answer(host) == 0
            server.wait_for_output(rb"CIPHER is ECDHE-RSA-AES128-GCM-SHA256", 10)
            sealer = DtlsSealer(str(keylog), box)
            last = max(r.seq for d in box.sent("s2c") for r in records(d) if r.epoch == 1)
            sealer.seq = last + 10          # ahead of the server, within the 64-record window
            lines = [b"genuine %02d " % i + b"x" * (i * 13) + b"\n" for i in range(20)]
            for line in lines:
                forged = bytearray(sealer.seal(CT_APP, b"FORGED " + line))
                forged[-1] ^= 0x01                    # the tag
                sealer.seq -= 1                       # the genuine one takes the same number
                box.inject(bytes(forged))
                box.inject(sealer.seal(CT_APP, line))
            want = b"".join(lines)
            time.sleep(0.5)
            assert read_all(host) == want
            assert b"FORGED" not in bytes(host.transcript)
            assert bytes(host.transcript).count(RECV_URC) == 1
            assert state_of(host, 0) == 2
            server.write(b"server still here\n")
            time.sleep(0.3)
            assert read_all(host) == b"server still here\n"
            close(host)
    finally:
        server.stop()


def test_servers_final_flight_replayed_with_new_data_in_one_datagram(ec2x_strict, emulator, servers):
    """PSK, full handshake: the middlebox keeps the server's CCS/Finished datagram; after the
    open it is sent again with the server's next application record behind it in the SAME
    datagram (a late retransmission a server coalesced with new data).  Mbed TLS skips the
    stale CCS (epoch 0) and the old Finished (a handshake message after the handshake, dropped
    over DTLS), then reads the record behind them: the line reaches the host once, at once,
    no "closed"; a replay of that whole datagram adds nothing."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(cipher="PSK-AES128-GCM-SHA256:@SECLEVEL=0"))
    final: list[bytes] = []
    armed = [False]
    merged: list[bytes] = []

    def rule(direction, index, data):
        types = types_of(data)
        if direction == "s2c" and CT_CCS in types and not final:
            final.append(data)
        if armed[0] and direction == "s2c" and types == [CT_APP] and not merged:
            merged.append(final[0] + data)
            return [merged[0]]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        assert final
        armed[0] = True
        server.write(b"behind the old finished\n")
        wait_for(lambda: merged, 5, "the merged datagram")
        host.seen(RECV_URC, 5)
        assert read_all(host) == b"behind the old finished\n"
        box.inject(merged[0])
        time.sleep(0.4)
        assert host.quiet_for(0.2) == b""
        assert read_all(host) == b""
        assert b"closed" not in bytes(host.transcript)
        round_trip(host, server, b"up after\n", b"down after\n")
        close(host)


def test_an_invalid_record_discards_the_rest_of_its_datagram_only(ec2x_strict, emulator, pki, tmp_path):
    """One datagram of three records under the session's keys: A (good), B (tag broken), C
    (good).  Mbed TLS 2.28 over DTLS reads A, then drops B and with it the rest of the datagram
    ("invalid records cause dismissal of the whole datagram"): the host gets A only -- C was
    never accepted, so a later datagram with C's record number is still taken -- then D in its
    own datagram; no "closed"."""
    from tests.e2e.test_adversarial_hostile_servers_3 import DtlsSealer, _dtls_server
    host, advance, _ = ec2x_strict
    keylog = tmp_path / "dtls.keys"
    server = _dtls_server(pki, "-keylogfile", str(keylog))
    try:
        with UdpMiddlebox(server.address) as box:
            route(emulator, box.port)
            cfg(host, "dtls", 0, 1)
            cfg(host, "ciphersuite", 0, "0XC02F")
            start_open(host)
            assert one_answer(host) == 0
            server.wait_for_output(rb"CIPHER is ECDHE-RSA-AES128-GCM-SHA256", 10)
            sealer = DtlsSealer(str(keylog), box)
            sealer.seq = max(r.seq for d in box.sent("s2c") for r in records(d) if r.epoch == 1) + 5
            a = sealer.seal(CT_APP, b"record A\n")
            b = bytearray(sealer.seal(CT_APP, b"record B\n"))
            b[-1] ^= 0x80
            c_seq = sealer.seq + 1
            c = sealer.seal(CT_APP, b"record C\n")
            box.inject(a + bytes(b) + c)
            host.seen(RECV_URC, 5)
            time.sleep(0.3)
            assert read_all(host) == b"record A\n"
            sealer.seq = c_seq - 1
            box.inject(sealer.seal(CT_APP, b"record C again\n"))
            box.inject(sealer.seal(CT_APP, b"record D\n"))
            time.sleep(0.4)
            assert read_all(host) == b"record C again\nrecord D\n"
            assert b"closed" not in bytes(host.transcript)
            assert state_of(host, 0) == 2
            close(host)
    finally:
        server.stop()


def test_transparent_dribble_each_datagram_one_record_nothing_lost(ec2x_strict, emulator, servers):
    """Access mode 2 over DTLS + PSK (AES-GCM): the host dribbles 120 writes of 7 bytes a few
    ms apart.  docs/behaviour.md (`dtls` row): in transparent mode the host's bytes go in
    datagrams of at most 1460 data bytes, ONE record each -- never several records packed
    into one datagram; s_server prints all 840 bytes in order."""
    from tests.e2e.socket_support import escape
    host, advance, _ = ec2x_strict
    server = servers(psk_server(cipher="PSK-AES128-GCM-SHA256:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT},2') == b"\r\nCONNECT\r\n"
        server.wait_for_output(rb"CIPHER is", 10)
        mark, before = server.mark(), len(box.sent("c2s"))
        chunks = [b"%05d\r\n" % i for i in range(120)]
        for chunk in chunks:
            host.write(chunk)
            time.sleep(0.002)
        want = b"".join(chunks).replace(b"\r\n", b"\n")
        wait_for(lambda: len(server.stdout) - mark >= len(want) - 5, 10, "the dribble at the server")
        time.sleep(0.3)
        ups = box.sent("c2s")[before:]
        per = [[r.type for r in records(d, whole=True)] for d in ups]
        sizes = [len(r.payload) - GCM for d in ups for r in records(d) if r.type == CT_APP]
        assert escape(host, advance) == OK
        close(host)
    assert sum(sizes) == 840
    assert all(p == [CT_APP] for p in per), per
    got = server.stdout[mark:].replace(b"\r\n", b"\n")
    assert got.startswith(want[:-8]), got[:80]


@pytest.mark.parametrize("gap", [0.4, 0.7])
def test_two_handshakes_each_on_its_own_retransmission_clock(ec2x_strict, emulator, gap):
    """Two DTLS sockets to two silent servers, the second opened `gap` s of modem time after
    the first: each resends its ClientHello 1 s and 3 s after ITS open (a timer per session,
    no shared one), nothing crosses over (each server gets only its own socket's hellos)."""
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as one, UdpEchoServer(echo=False) as two:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", one.port)
        emulator.router.add_map(HOST, PORT + 1, "127.0.0.1", two.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        one.wait_datagrams(1, 5)
        advance(gap)
        assert host.at(f'AT+QSSLOPEN=1,0,1,"{HOST}",{PORT + 1}') == OK
        two.wait_datagrams(1, 5)
        now = gap
        times = sorted([(1, one), (3, one), (1 + gap, two), (3 + gap, two)], key=lambda t: t[0])
        counts = {id(one): 1, id(two): 1}
        for at, srv in times:
            advance(at - 0.1 - now)
            time.sleep(0.25)
            assert (len(one.log), len(two.log)) == (counts[id(one)], counts[id(two)]), f"early at {at}"
            counts[id(srv)] += 1
            advance(0.2)
            now = at + 0.1
            srv.wait_datagrams(counts[id(srv)], 3)
        time.sleep(0.25)
        assert (len(one.log), len(two.log)) == (3, 3)
        assert len({hello_body(d) for _, d in one.log}) == 1 and len({hello_body(d) for _, d in two.log}) == 1
        assert hello_body(one.log[0][1]) != hello_body(two.log[0][1])
        assert len({a for a, _ in one.log}) == 1 and len({a for a, _ in two.log}) == 1
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.at("AT+QSSLCLOSE=1") == OK
        advance(100)
        assert (len(one.log), len(two.log)) == (3, 3)
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)


@pytest.mark.parametrize("cclk", ['"40/06/01,12:00:00+32"', '"01/01/01,00:00:00+32"'], ids=["forward", "back"])
def test_setting_the_modem_clock_does_not_move_the_retransmission_timer(ec2x_strict, emulator, cclk):
    """AT+CCLK (the modem's calendar clock) moved decades forward or back while a DTLS
    handshake waits: the retransmission timer runs on elapsed time, so no ClientHello goes
    at the write, the next still goes after 1 s of elapsed modem time, the one after at 3 s,
    and negotiatetime (10 s) still ends the open at 10 s with 569 -- not at once, not never."""
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", silent.port)
        cfg(host, "dtls", 0, 1)
        cfg(host, "negotiatetime", 0, 10)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT}') == OK
        silent.wait_datagrams(1, 5)
        advance(0.5)
        assert host.at(f"AT+CCLK={cclk}") == OK
        assert count_after(silent) == 1
        assert b"+QSSLOPEN" not in host.quiet_for(0.2)
        advance(0.4)
        assert count_after(silent) == 1
        advance(0.2)
        silent.wait_datagrams(2, 3)
        advance(1.8)
        assert count_after(silent) == 2
        advance(0.2)
        silent.wait_datagrams(3, 3)
        advance(6.8)                                               # 9.9 s
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
        advance(0.2)
        host.seen(b"+QSSLOPEN: 0,569\r\n", 5)
        assert host.at("AT+QSSLCLOSE=0") == OK


def test_close_notify_behind_75_kib_the_host_has_not_read(ec2x_strict, emulator, servers):
    """DTLS 1.0 + PSK: 75 lines of 1000 bytes (one datagram each, past the socket's 64 KiB
    recv_buffer, so the rest waits in the UDP socket) then the server's close_notify, while
    the host reads nothing.  Then the host reads: every byte, in order, once; exactly one
    "closed" (after the "recv"), never before the data it follows was taken in; state 4; no
    byte after the close_notify."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-dtls1"))
    route(emulator, server.port)
    psk_ctx(host)
    cfg(host, "dtlsversion", 0, 0)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    lines = [b"%03d:" % i + bytes([0x41 + i % 26]) * 995 + b"\n" for i in range(75)]
    for line in lines:
        server.write(line)
        time.sleep(0.004)
    time.sleep(0.3)
    server.write(b"q\n")
    time.sleep(1.0)
    want = b"".join(lines)
    got = b""
    deadline = time.monotonic() + 15
    while len(got) < len(want) and time.monotonic() < deadline:
        answer = host.at("AT+QSSLRECV=0,1500")
        m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
        assert m, answer
        n = int(m.group(1))
        got += answer[m.end():m.end() + n]
        if n == 0:
            time.sleep(0.05)
    assert got == want
    host.seen(CLOSED_URC, 5)
    host.quiet_for(0.3)
    t = bytes(host.transcript)
    assert t.count(CLOSED_URC) == 1 and t.count(RECV_URC) == 1
    assert t.index(RECV_URC) < t.index(CLOSED_URC)
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    assert state_of(host, 0) == 4
    close(host)


def test_renegotiation_0_answers_a_dtls_hello_request_with_one_no_renegotiation_warning(
        ec2x_strict, emulator, pki, tmp_path):
    """AT+QSSLCFG "renegotiation" 0 (the default), DTLS 1.2, s_server 'r' (a HelloRequest under
    the session's keys): the modem sends exactly one datagram -- one epoch-1 alert record whose
    plaintext, decrypted with the client's key from s_server's key log, is 01 64 (warning,
    no_renegotiation) -- and no ClientHello.  OpenSSL answers that with a fatal alert, so the
    socket ends as documented: "recv" for the line before, one "closed", the line readable,
    state 4, the id opens again."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from tests.e2e.test_adversarial_hostile_servers_2 import prf_sha256
    from tests.e2e.test_adversarial_hostile_servers_3 import _dtls_server
    host, advance, _ = ec2x_strict
    keylog = tmp_path / "dtls.keys"
    server = _dtls_server(pki, "-keylogfile", str(keylog))
    try:
        with UdpMiddlebox(server.address) as box:
            route(emulator, box.port)
            cfg(host, "dtls", 0, 1)
            cfg(host, "ciphersuite", 0, "0XC02F")
            start_open(host)
            assert one_answer(host) == 0
            server.wait_for_output(rb"CIPHER is ECDHE-RSA-AES128-GCM-SHA256", 10)
            server.write(b"before\n")
            host.seen(RECV_URC, 10)
            before = len(box.sent("c2s"))
            server.write(b"r\n")
            host.seen(CLOSED_URC, 10)
            time.sleep(0.3)
            ups = box.sent("c2s")[before:]
            assert len(ups) == 1 and not any(is_client_hello(d) for d in ups), ups
            (alert,) = records(ups[0], whole=True)
            assert (alert.type, alert.epoch, len(alert.payload)) == (CT_ALERT, 1, 2 + GCM)

            def hello_random(direction, hs_type):
                for d in box.sent(direction):
                    for r in records(d):
                        if r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == bytes([hs_type]):
                            return r.payload[14:46]
            client_random, server_random = hello_random("c2s", 1), hello_random("s2c", 2)
            master = next(bytes.fromhex(p[2].decode()) for p in map(bytes.split, keylog.read_bytes().splitlines())
                          if len(p) == 3 and p[0] == b"CLIENT_RANDOM" and bytes.fromhex(p[1].decode()) == client_random)
            block = prf_sha256(master, b"key expansion", server_random + client_random, 40)
            explicit = alert.payload[:8]
            aad = (1).to_bytes(2, "big") + alert.seq.to_bytes(6, "big") + bytes([CT_ALERT]) + b"\xfe\xfd\x00\x02"
            assert AESGCM(block[0:16]).decrypt(block[32:36] + explicit, alert.payload[8:], aad) == b"\x01\x64"
        host.quiet_for(0.2)
        t = bytes(host.transcript)
        assert t.count(CLOSED_URC) == 1 and t.index(RECV_URC) < t.index(CLOSED_URC)
        assert read_all(host) == b"before\n"
        assert state_of(host, 0) == 4
        close(host)
    finally:
        server.stop()


def renumber(datagram: bytes, offset: int) -> bytes:
    """The datagram with every record's sequence_number moved by `offset` (epoch 0 records are
    not authenticated: what a genuine retransmission by the server looks like)."""
    out, pos = b"", 0
    for r in records(datagram, whole=True):
        n = 13 + len(r.payload)
        rec = datagram[pos:pos + n]
        out += rec[:5] + (r.seq + offset).to_bytes(6, "big") + rec[11:]
        pos += n
    return out


def test_servers_retransmitted_flight_makes_the_modem_resend_at_once_on_frozen_time(
        ec2x_strict, emulator, servers, pki):
    """Certificate suite, s_server -dtls1_2: the server's CCS/Finished is lost once; instead of
    waiting for its 1 s timer, the modem hears the server's previous flight again (the
    datagram ending in ServerHelloDone, re-sent with new record numbers as a retransmitting
    server would): RFC 6347 4.2.4 / Mbed TLS -- a retransmission of the peer's last flight
    makes the client resend its own at once.  With the modem's clock frozen the client's
    flight goes a second time, the server answers again, the open is 0; a replay of the very
    same datagram (same record numbers) resends nothing."""
    host, advance, _ = ec2x_strict
    cert, key = pki.server.load_args
    server = servers(OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2",
                                    "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]))
    last_of_flight: list[bytes] = []
    dropped = [0]

    def rule(direction, index, data):
        recs = records(data)
        if direction == "s2c" and any(r.type == CT_HANDSHAKE and r.epoch == 0 and r.payload[:1] == b"\x0e"
                                      for r in recs):
            last_of_flight.append(data)                      # ServerHelloDone
        if direction == "s2c" and CT_CCS in types_of(data) and not dropped[0]:
            dropped[0] = 1
            return []
        return [data]

    def flights():
        return [d for d in box.sent("c2s") if CT_CCS in types_of(d)]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        start_open(host)
        box.wait_for(lambda: dropped[0] == 1, 10)
        time.sleep(0.3)
        assert len(flights()) == 1 and last_of_flight
        box.inject(last_of_flight[0])                        # a replay: same record numbers
        time.sleep(0.4)
        assert len(flights()) == 1, "a replayed record made the modem resend"
        assert b"+QSSLOPEN" not in host.quiet_for(0.1)
        # a genuine-looking retransmission: new record numbers, a little ahead of the server's
        # (inside Mbed TLS's 64-record anti-replay window, so its real answer is still taken)
        box.inject(renumber(last_of_flight[0], 30))
        assert one_answer(host, timeout=5) == 0
        assert len(flights()) == 2
        server.wait_for_output(rb"CIPHER is", 10)
        round_trip(host, server, b"frozen clock\n", b"still ok\n")
        close(host)


def test_dtls_over_a_700_ms_link_on_manual_time(ec2x_strict, emulator, servers):
    """Control `net` latency 700 ms each way (on the modem's timers): a round trip (1.4 s) is
    longer than the first retransmission timer (1 s), so the ClientHello goes twice before the
    server's answer is in -- DTLS copes, the open answers 0 (the clock moved in 0.1 s steps).
    After it, the link's delay holds both ways on modem time: a line sent up reaches s_server
    only after 0.7 s, a line down reaches the host (its "recv") only after 0.7 s, each once."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        assert emulator.control("net", latency_ms=700)["ok"]
        try:
            start_open(host)
            for _ in range(150):
                advance(0.1)
                time.sleep(0.01)
                if answers(host) or (host._fill() or answers(host)):
                    break
            assert answers(host) == [0]
            hellos = [d for d in box.sent("c2s") if is_client_hello(d)]
            assert len(hellos) >= 3                # (HVR round trip included) at least one resend
            server.wait_for_output(rb"CIPHER is", 10)
            host.quiet_for(0.1)
            mark = server.mark()
            assert host.send_data(0, b"slow up\n") == b"\r\nSEND OK\r\n"
            time.sleep(0.4)
            assert b"slow up" not in server.stdout[mark:]
            advance(0.6)
            time.sleep(0.3)
            assert b"slow up" not in server.stdout[mark:]
            advance(0.2)
            server.wait_for_output(rb"slow up", 5, since=mark)
            host.transcript.clear()
            host._consumed.clear()
            server.write(b"slow down\n")
            wait_for(lambda: any(types_of(d) == [CT_APP] for d in box.sent("s2c")[-1:]), 5, "the server's line")
            time.sleep(0.3)
            assert RECV_URC not in host.quiet_for(0.1)
            advance(0.6)
            assert RECV_URC not in host.quiet_for(0.3)
            advance(0.2)
            host.seen(RECV_URC, 5)
            assert read_all(host) == b"slow down\n"
        finally:
            assert emulator.control("net", latency_ms=0)["ok"]
        close(host)


def test_mutual_auth_flight_over_several_datagrams_resent_whole(ec2x_strict, emulator, servers, pki):
    """seclevel 2 with the client certificate, s_server -dtls1_2 -Verify 1: the modem's
    flight (Certificate, ClientKeyExchange, CertificateVerify, CCS, Finished) is the biggest
    a client sends.  The server's CCS/Finished is lost once: after 1 s of modem time the whole
    flight goes again -- the same clear handshake messages (Certificate, ClientKeyExchange,
    CertificateVerify byte for byte), each record in fresh numbers, no datagram over 1500
    bytes unless it is one record alone -- the server takes it, names the client certificate,
    the open answers 0, data flows."""
    from tests.e2e.ssl_options_support import trust
    host, advance, _ = ec2x_strict
    server = servers(OpenSslServer(["-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path),
                                    "-dtls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
                                    "-Verify", "1", "-CAfile", str(pki.ca.cert_path)]))
    dropped = [0]

    def rule(direction, index, data):
        if direction == "s2c" and CT_CCS in types_of(data) and not dropped[0]:
            dropped[0] = 1
            return []
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        assert host.upload("UFS:cli.pem", pki.client.cert_pem).endswith(b"OK\r\n")
        assert host.upload("UFS:cli.key", pki.client.key_pem).endswith(b"OK\r\n")
        cfg(host, "dtls", 0, 1)
        cfg(host, "clientcert", 0, '"UFS:cli.pem"')
        cfg(host, "clientkey", 0, '"UFS:cli.key"')
        trust(host, 0, pki.ca.cert_pem, seclevel=2)
        start_open(host)
        box.wait_for(lambda: dropped[0] == 1, 10)
        time.sleep(0.3)
        first = len(box.sent("c2s"))
        advance(1.2)
        assert one_answer(host) == 0
        ups = box.sent("c2s")
        hello_at = max(i for i, d in enumerate(ups) if is_client_hello(d))
        flight1, flight2 = ups[hello_at + 1:first], ups[first:]

        def clear_messages(flight):
            return sorted(r.payload for d in flight for r in records(d, whole=True)
                          if r.type == CT_HANDSHAKE and r.epoch == 0)
        m1, m2 = clear_messages(flight1), clear_messages(flight2)
        assert sorted(p[0] for p in m1) == [11, 15, 16], [p[0] for p in m1]   # Certificate, CertVerify, CKE
        assert m1 == m2
        assert [len(records(d)) for d in flight1] == [len(records(d)) for d in flight2]
        seqs = [r.seq for d in flight1 + flight2 for r in records(d) if r.epoch == 0]
        assert len(seqs) == len(set(seqs))
        assert all(len(d) <= 1500 or len(records(d)) == 1 for d in ups)
        server.wait_for_output(rb"CIPHER is", 10)
        assert b"modem client" in server.stdout
        round_trip(host, server, b"mutual up\n", b"mutual down\n")
        close(host)


def test_lossy_link_loses_whole_datagrams_never_reorders_or_doubles(ec2x_strict, emulator, servers):
    """Control `net` loss 30 % (DTLS: a lost datagram is gone) on manual time: the handshake
    gets through on retransmissions (the clock moved in 0.25 s steps); then 30 numbered lines
    each way, one datagram each.  What arrives -- at s_server, and on the pty through
    AT+QSSLRECV -- is a subsequence of what was sent: every line whole, in order, none twice;
    some lost (the loss is real), most not.  The socket stays open throughout."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    assert emulator.control("net", loss=0.3, seed=7)["ok"]
    try:
        start_open(host)
        for _ in range(400):
            advance(0.25)
            time.sleep(0.005)
            if host._fill() or answers(host):
                break
        assert answers(host) == [0]
        server.wait_for_output(rb"CIPHER is", 10)
        host.transcript.clear()
        host._consumed.clear()
        mark = server.mark()
        ups = [b"up %02d %s\n" % (i, b"u" * i) for i in range(30)]
        for line in ups:
            assert host.send_data(0, line) == b"\r\nSEND OK\r\n"
            advance(0.01)                 # (a shaped link's packets leave on the modem's timers)
        downs = [b"down %02d %s\n" % (i, b"d" * i) for i in range(30)]
        for line in downs:
            server.write(line)
            time.sleep(0.02)
            advance(0.01)
        time.sleep(0.3)
        advance(0.01)
        time.sleep(0.2)
        got_down = read_all(host)
        got_up = server.stdout[mark:]
        assert state_of(host, 0) == 2
    finally:
        assert emulator.control("net", loss=0)["ok"]

    def subsequence(got: bytes, sent: list[bytes]) -> int:
        lines = got.splitlines(keepends=True)
        it = iter(sent)
        assert all(any(line == s for s in it) for line in lines), got   # in order, once, whole
        return len(lines)
    n_up, n_down = subsequence(got_up, ups), subsequence(got_down, downs)
    assert 10 <= n_up < 30 and 10 <= n_down < 30, (n_up, n_down)
    server.write(b"after the loss\n")
    time.sleep(0.3)
    advance(0.01)
    time.sleep(0.2)
    assert read_all(host) == b"after the loss\n"
    close(host)



@pytest.mark.parametrize("conditions", [
    pytest.param({}, id="no_conditions"),
    pytest.param({"loss": 1e-6}, id="loss_only"),
])
def test_a_link_with_no_delay_moves_datagrams_without_the_clock(ec2x_strict, emulator, servers, conditions):
    """Manual time, an open DTLS + PSK socket, then control `net` with no latency and no rate
    limit (only a loss rate so small nothing is lost): nothing delays a datagram, so -- as on
    a link with no conditions at all -- a line sent up reaches s_server and a line sent down
    is reported ("recv") and readable without the modem's clock moving."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    if conditions:
        assert emulator.control("net", **conditions)["ok"]
    try:
        mark = server.mark()
        assert host.send_data(0, b"no delay up\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"no delay up", 3, since=mark)
        server.write(b"no delay down\n")
        host.seen(RECV_URC, 3)
        assert read_all(host) == b"no delay down\n"
    finally:
        if conditions:
            assert emulator.control("net", loss=0)["ok"]
            advance(0.01)
    close(host)


@pytest.mark.parametrize("closing", [
    pytest.param(False, id="socket_left_open"),
    pytest.param(True, id="qsslclose_at_once"),
])
def test_send_then_close_over_a_500_ms_link_both_still_arrive(ec2x_strict, emulator, servers, closing):
    """Control `net` latency 500 ms (modem time) on an open DTLS + PSK socket: AT+QSSLSEND
    (SEND OK), then -- at once -- AT+QSSLCLOSE (OK).  The datagrams were on their way when the
    socket closed: on a module they left the UART side at SEND OK, a UDP datagram is not
    recalled by a close; so after 0.5 s of modem time s_server has the line, then the
    close_notify, in that order, each once.  (Control: the socket left open, the line arrives
    after the same 0.5 s.)"""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        assert emulator.control("net", latency_ms=500)["ok"]
        try:
            before, mark = len(box.sent("c2s")), server.mark()
            assert host.send_data(0, b"in flight\n") == b"\r\nSEND OK\r\n"
            if closing:
                assert host.at("AT+QSSLCLOSE=0") == OK
            time.sleep(0.3)
            assert len(box.sent("c2s")) == before                   # still on the link
            advance(0.6)
            time.sleep(0.3)
            advance(2)
            want = [[(CT_APP, 1)], [(CT_ALERT, 1)]] if closing else [[(CT_APP, 1)]]
            box.wait_for(lambda: len(box.sent("c2s")) >= before + len(want), 5)
            time.sleep(0.3)
            after = [[(r.type, r.epoch) for r in records(d, whole=True)] for d in box.sent("c2s")[before:]]
            assert after == want, after
            server.wait_for_output(rb"in flight", 5, since=mark)
        finally:
            assert emulator.control("net", latency_ms=0)["ok"]
            advance(0.01)
    if not closing:
        close(host)
