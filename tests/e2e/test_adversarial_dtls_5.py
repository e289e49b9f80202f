"""Adversarial round 5 on the EC2x's DTLS (+ PSK) path, through the pty, against
`openssl s_server -dtls1_2 / -dtls1 -nocert -psk ...` behind UdpMiddleboxes that forge,
hold back, replay or cut datagrams, and hand-made UDP peers.

Not repeated from test_adversarial_dtls_3/_4/_psk/_paths/_cert_review,
test_adversarial_psk_dtls_openssl, test_adversarial_udp_dtls_prompts,
test_ssl_options_keylog_psk_dtls (lost / duplicated / reordered handshake flights, cookies,
hints, ICMP in buffer mode, 1460/1461 sends, close during a stalled handshake).  New here:
  * a server "restarted" behind the same address that answers in the clear (epoch 0): a fatal
    alert, a HelloRequest, a HelloVerifyRequest, a new ServerHello -- Mbed TLS discards
    records of another epoch (RFC 6347 4.1: they cannot be authenticated), so the open socket
    must neither close nor lose the genuine record that shares the datagram;
  * a record of a future epoch (2) mid-session: discarded;
  * the anti-replay window (RFC 6347 4.1.2.6, Mbed TLS: 64 records): a datagram overtaken by
    10 later ones is still delivered (late), one overtaken by 70 is not;
  * the closed port (ICMP) while the socket is online in transparent mode and in push mode,
    on one of two sockets, and after AT+QSSLCLOSE's close_notify;
  * timers left behind: 569 between two retransmissions, a close right after a resumed open
    whose last flight was lost (the server's resent flight draws nothing);
  * s_server -listen's HelloVerifyRequest lost or doubled (same random and offer throughout);
  * 1460-byte sends over CBC / CCM8 suites (one record, one datagram; 1461 sends nothing);
  * AT+QGDCNT against the datagrams a middlebox saw (retransmissions, duplicates).
  * bytes after a datagram's last record (fewer than a header: fatal in Mbed TLS 2.28, -0x6C00,
    even behind a forged record of another epoch; more: dropped);
  * a zero-length datagram, which Mbed TLS's transport turns into CONN_EOF: the session ends (was a bug).
"""
from __future__ import annotations

import os
import re
import time

import pytest

from emulator.testing.peers import UdpMiddlebox
from emulator.testing.peers.dtls_wire import (CT_ALERT, CT_APP, CT_CCS, CT_HANDSHAKE, handshake,
                                              hello_verify_request, is_client_hello, record, records)
from tests.e2e.ssl_options_support import cfg, recv_all
from tests.e2e.test_adversarial_psk_dtls_openssl import (OK, close, one_answer, psk_ctx, psk_server,
                                                         route, servers, start_open, state_of)
from tests.e2e.socket_support import escape, udp_peer, wait_for

__all__ = ["servers"]   # (the fixture, imported)


@pytest.fixture(autouse=True)
def crlf_host(request):
    for name in ("ec2x_strict",):
        if name in request.fixturenames:
            request.getfixturevalue(name)[0].line_end = b"\r\n"


def app_records(box: UdpMiddlebox) -> list[int]:
    """Record sequence numbers of the server's application datagrams as they reached the box."""
    return [r.seq for d in box.sent("s2c") for r in records(d) if r.type == CT_APP]


def open_psk(host, emulator, box, server, dtlsversion: int = 1) -> None:
    route(emulator, box.port)
    psk_ctx(host)
    if dtlsversion != 1:
        cfg(host, "dtlsversion", 0, dtlsversion)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)


def forged_clear(kind: str, seq: int) -> bytes:
    """What a restarted server (no keys, so epoch 0) might send the modem."""
    if kind == "fatal_alert":
        return record(CT_ALERT, b"\x02\x28", seq=seq)                      # handshake_failure
    if kind == "close_notify":
        return record(CT_ALERT, b"\x01\x00", seq=seq)
    if kind == "hello_request":
        return record(CT_HANDSHAKE, handshake(0, b"", 0), seq=seq)
    if kind == "hello_verify_request":
        return hello_verify_request(os.urandom(20), rec_seq=seq)
    if kind == "server_hello":
        body = b"\xfe\xfd" + os.urandom(32) + b"\x00" + b"\x00\xa8" + b"\x00"
        return (record(CT_HANDSHAKE, handshake(2, body, 0), seq=seq)
                + record(CT_HANDSHAKE, handshake(14, b"", 1), seq=seq + 1))
    raise ValueError(kind)


CLEAR = ["fatal_alert", "close_notify", "hello_request", "hello_verify_request", "server_hello"]


# == a restarted server answering in the clear =====================================================
@pytest.mark.parametrize("kind", CLEAR)
def test_clear_epoch_0_records_mid_session_are_discarded(ec2x_strict, emulator, servers, kind):
    """After the handshake (epoch 1) the peer's address sends an epoch-0 record, alone in a
    datagram and then in front of a genuine application record: the socket stays connected
    (no URC, AT+QSSLSTATE 2), the genuine line behind it is delivered, data still go up."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    forged: list[bytes] = []

    def rule(direction, index, data):
        if forged and direction == "s2c" and records(data)[0].type == CT_APP:
            return [forged.pop() + data]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        open_psk(host, emulator, box, server)
        box.inject(forged_clear(kind, 7))
        time.sleep(0.5)
        assert host.quiet_for(0.3) == b""
        assert state_of(host, 0) == 2
        forged.append(forged_clear(kind, 9))
        server.write(b"behind the forgery\n")
        assert recv_all(host, 0, 19) == b"behind the forgery\n"
        assert not forged
        assert b"closed" not in bytes(host.transcript)
        mark = server.mark()
        assert host.send_data(0, b"still here\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"still here", 10, since=mark)
        assert state_of(host, 0) == 2
        close(host)


def test_future_epoch_record_mid_session_is_discarded(ec2x_strict, emulator, servers):
    """An epoch-2 record (no renegotiation ever happened) of any type, then the genuine line:
    the forgery is dropped, the line delivered once, the socket stays connected."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server)
        for ctype in (CT_ALERT, CT_APP, CT_HANDSHAKE):
            box.inject(record(ctype, os.urandom(40), epoch=2, seq=3))
        time.sleep(0.5)
        assert host.quiet_for(0.3) == b""
        server.write(b"after epoch 2\n")
        assert recv_all(host, 0, 14) == b"after epoch 2\n"
        assert state_of(host, 0) == 2
        close(host)


# == the anti-replay window ===============================================================================
@pytest.mark.parametrize("later, delivered", [(10, True), (70, False)])
def test_a_datagram_overtaken_by_many_later_ones(ec2x_strict, emulator, servers, later, delivered):
    """The server's first application datagram is held while `later` more pass, then
    released: within Mbed TLS's 64-record window it is delivered after them (DTLS does not
    reorder); behind it, it is discarded.  Every other line arrives once, in order."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    armed, held = [False], []

    def rule(direction, index, data):
        if armed[0] and direction == "s2c" and records(data)[0].type == CT_APP:
            if not held:
                held.append(data)
                return []
            if len(held) == later:
                held.append(data)
                return [data, (0.05, held[0])]
            held.append(data)
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        open_psk(host, emulator, box, server)
        armed[0] = True
        lines = [b"L%03d\n" % i for i in range(later + 1)]
        for i, line in enumerate(lines):
            server.write(line)
            wait_for(lambda: len(held) > i, 5, "the server's datagram")
        time.sleep(0.4)
        want = b"".join(lines[1:]) + (lines[0] if delivered else b"")
        got = recv_all(host, 0, len(want))
        time.sleep(0.2)
        rest = host.at("AT+QSSLRECV=0,1500")
        assert got == want
        assert rest == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert state_of(host, 0) == 2
        close(host)


# == the server's port closes (ICMP port unreachable) while the socket is online or pushing ============
def test_closed_port_while_online_in_transparent_mode_ends_with_no_carrier(ec2x_strict, emulator, servers):
    """Access mode 2: data flow, then s_server exits.  The host's next bytes leave as a
    datagram that draws ICMP port unreachable: the DTLS socket ends (docs/behaviour.md, UDP:
    a closed port on the server's side ends a DTLS socket) -- online mode ends with
    NO CARRIER, once, no "closed" URC, AT+QSSLSTATE 4, AT+QSSLCLOSE OK, the port answers AT."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    assert host.at('AT+QSSLOPEN=1,0,0,"{}",{},2'.format(*_dialled())) == b"\r\nCONNECT\r\n"
    server.wait_for_output(rb"CIPHER is", 10)
    host.write(b"online up\n")
    server.wait_for_output(rb"online up", 10)
    server.write(b"online down\n")
    assert host.read_until(b"online down\n", 10) == b"online down\n"
    server.stop()
    host.write(b"anyone there?\n")
    assert host.read_until(b"\r\nNO CARRIER\r\n", 10) == b"\r\nNO CARRIER\r\n"
    host.write(b"more after the end\n")
    time.sleep(0.3)
    tail = host.quiet_for(0.3)
    assert b"NO CARRIER" not in tail and b'"closed"' not in tail + bytes(host.transcript), tail
    assert state_of(host, 0) == 4
    assert host.at("AT+QSSLCLOSE=0") == OK
    assert state_of(host, 0) is None


def test_closed_port_in_push_mode_gives_one_closed_after_the_pushed_data(ec2x_strict, emulator, servers):
    """Access mode 1: a pushed line, then s_server exits; two sends each answer SEND OK or
    (after the socket ended) ERROR, and exactly one "closed" URC comes, after the pushed line."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    assert host.at('AT+QSSLOPEN=1,0,0,"{}",{},1'.format(*_dialled())) == OK
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    server.write(b"pushed\n")
    host.seen(b'+QSSLURC: "recv",0,7\r\npushed\n\r\n', 10)
    server.stop()
    assert host.send_data(0, b"anyone?\n") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "closed",0\r\n', 10)
    assert host.send_data(0, b"anyone?\n") == b"\r\nERROR\r\n"
    host.quiet_for(0.3)
    t = bytes(host.transcript)
    assert t.count(b'+QSSLURC: "closed",0\r\n') == 1
    assert t.index(b"pushed\n") < t.index(b'"closed",0')
    assert state_of(host, 0) == 4
    assert host.at("AT+QSSLCLOSE=0") == OK


def _dialled():
    from tests.e2e.ssl_options_support import HOST, PORT
    return HOST, PORT


# == timers left behind ===================================================================================
def test_after_569_mid_schedule_no_retransmission_and_a_late_flight_is_not_heard(ec2x_strict, emulator):
    """negotiatetime 10 (its minimum) against a silent peer: ClientHellos at 0, 1, 3, 7 s of
    modem time, 569 at 10 s -- between two retransmissions (the next would be at 15 s).  The pending retransmission timer must die with the
    open: the clock moved on to 200 s sends no further ClientHello, and a HelloVerifyRequest
    the peer sends afterwards draws nothing (no datagram, no second +QSSLOPEN).  AT+QGDCNT
    counted the four ClientHellos sent and nothing received."""
    host, advance, _ = ec2x_strict
    sock = udp_peer()
    sock.settimeout(0.5)
    got: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except OSError:
                return
            got.append(data)
            drain.addr = addr
    try:
        route(emulator, sock.getsockname()[1])
        cfg(host, "dtls", 0, 1)
        cfg(host, "negotiatetime", 0, 10)
        assert host.at("AT+QGDCNT=0") == OK
        start_open(host)
        drain()
        for step in (1.05, 2.05, 4.05):
            advance(step)
            time.sleep(0.2)
            drain()
        assert len(got) == 4 and all(is_client_hello(d) for d in got), len(got)
        advance(2.5)                                     # 9.65 s
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
        advance(0.5)                                     # 10.15 s
        assert one_answer(host) == 569
        for _ in range(6):
            advance(33)
            time.sleep(0.05)
        drain()
        assert len(got) == 4, "a ClientHello after the open ended"
        sock.sendto(hello_verify_request(b"c" * 16), drain.addr)
        time.sleep(0.5)
        drain()
        assert len(got) == 4
        assert host.quiet_for(0.3) == b"" and state_of(host, 0) is None
        assert qgdcnt(host) == (sum(map(len, got)), 0)      # each retransmission went out
    finally:
        sock.close()


def test_close_right_after_a_resumed_open_whose_last_flight_was_lost(ec2x_strict, emulator, servers):
    """A resumed DTLS PSK handshake ends with the modem's CCS/Finished, which is lost; the
    host closes at once.  The server resends its flight (its 1 s timer): the closed socket
    must not answer it -- after AT+QSSLCLOSE only the close_notify (one alert datagram)
    leaves, and nothing reaches the host."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    lose = {"armed": False, "done": False}

    def rule(direction, index, data):
        if lose["armed"] and not lose["done"] and direction == "c2s" \
                and any(r.type == CT_CCS for r in records(data)):
            lose["done"] = True
            return []
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        close(host)
        server.wait_for_output(rb"DONE", 10)
        lose["armed"] = True
        n_s2c = len(box.sent("s2c"))
        start_open(host)
        assert one_answer(host) == 0
        assert lose["done"]
        close(host)
        n = len(box.sent("c2s"))
        # the server resends its flight (ServerHello, CCS, Finished) on its own timer
        box.wait_for(lambda: sum(any(r.type == CT_CCS for r in records(d.data))
                                 for d in box.log[:] if d.direction == "s2c") >= 3, 10)
        for _ in range(3):
            advance(1.1)
            time.sleep(0.3)
        assert len(box.sent("s2c")) > n_s2c
        kinds = [[r.type for r in records(d)] for d in box.sent("c2s")[n:]]
        assert all(k == [CT_ALERT] for k in kinds), kinds
        assert len(kinds) <= 1, kinds
        assert host.quiet_for(0.3) == b""
        assert state_of(host, 0) is None


def test_two_dtls_sockets_one_servers_port_closes_the_other_flows_on(ec2x_strict, emulator, servers):
    """Two DTLS PSK sockets (ids 0 and 1) to two s_servers; one server exits and the modem's
    next datagram to it draws ICMP port unreachable: only that socket reports "closed"; the
    other keeps sending and receiving, and no URC names it."""
    from tests.e2e.ssl_options_support import HOST, PORT
    host, advance, _ = ec2x_strict
    a, b = servers(psk_server()), servers(psk_server())
    emulator.router.add_map(HOST, PORT, "127.0.0.1", a.port)
    emulator.router.add_map("other.example", PORT, "127.0.0.1", b.port)
    psk_ctx(host)
    start_open(host, 0)
    assert one_answer(host, 0) == 0
    start_open(host, 1, name="other.example")
    assert one_answer(host, 1) == 0
    a.wait_for_output(rb"CIPHER is", 10)
    b.wait_for_output(rb"CIPHER is", 10)
    a.stop()
    assert host.send_data(0, b"to the dead one\n") == b"\r\nSEND OK\r\n"
    host.seen(b'+QSSLURC: "closed",0\r\n', 10)
    mark = b.mark()
    assert host.send_data(1, b"to the live one\n") == b"\r\nSEND OK\r\n"
    b.wait_for_output(rb"to the live one", 10, since=mark)
    b.write(b"alive\n")
    assert recv_all(host, 1, 6) == b"alive\n"
    host.quiet_for(0.3)
    t = bytes(host.transcript)
    assert b'"closed",1' not in t and t.count(b'"closed",0') == 1
    assert state_of(host, 0) == 4 and state_of(host, 1) == 2
    close(host, 0)
    close(host, 1)


# == the cookie exchange (s_server -listen) =================================================================
def hello_fields(datagram: bytes) -> tuple[bytes, bytes, bytes]:
    """(random, cookie, everything after the cookie) of a ClientHello datagram."""
    body = records(datagram)[0].payload[12:]
    random = body[2:34]
    pos = 34 + 1 + body[34]
    cookie = body[pos + 1:pos + 1 + body[pos]]
    return random, cookie, body[pos + 1 + body[pos]:]


@pytest.mark.parametrize("mangle", ["lose_hvr", "double_hvr"])
def test_psk_cookie_exchange_with_the_hello_verify_request_lost_or_doubled(ec2x_strict, emulator, servers, mangle):
    """`s_server -listen` (stateless HelloVerifyRequest) with PSK: its HelloVerifyRequest is
    lost (the modem resends its cookie-less ClientHello at 1 s of modem time) or arrives
    twice.  RFC 6347 4.2.1: every ClientHello of the exchange carries the same random and
    offer, the one after the HelloVerifyRequest its cookie; the open answers 0 once and
    data flow both ways."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server("-listen"))
    hvrs: list[bytes] = []

    def rule(direction, index, data):
        if direction == "s2c" and records(data)[0].type == CT_HANDSHAKE and records(data)[0].payload[:1] == b"\x03":
            hvrs.append(data)
            if mangle == "lose_hvr" and len(hvrs) == 1:
                return []
            if mangle == "double_hvr" and len(hvrs) == 1:
                return [data, (0.05, data)]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        box.wait_for(lambda: hvrs, 10)
        if mangle == "lose_hvr":
            time.sleep(0.2)
            advance(1.1)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        hellos = [hello_fields(d) for d in box.sent("c2s") if is_client_hello(d)]
        cookie = records(hvrs[-1])[0].payload[12 + 3:]
        assert len({h[0] for h in hellos}) == 1, "the random changed"
        assert len({h[2] for h in hellos}) == 1, "the offer changed"
        if mangle == "lose_hvr":
            assert [h[1] for h in hellos] == [b"", b"", cookie]
        else:
            assert [h[1] for h in hellos][:2] == [b"", cookie]
        mark = server.mark()
        assert host.send_data(0, b"cookie ok\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"cookie ok", 10, since=mark)
        server.write(b"down\n")
        assert recv_all(host, 0, 5) == b"down\n"
        close(host)


def test_close_to_a_server_gone_sends_close_notify_and_its_icmp_reaches_no_one(ec2x_strict, emulator, servers):
    """s_server exits while the socket idles; AT+QSSLCLOSE answers OK at once, its
    close_notify draws ICMP port unreachable, which must not surface (no "closed" URC, no
    error for the next socket); the id opens again at once to a new server."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    server.stop()
    time.sleep(0.2)
    close(host)
    time.sleep(0.5)
    assert host.quiet_for(0.3) == b""
    assert b'"closed"' not in bytes(host.transcript)
    again = servers(psk_server())
    route(emulator, again.port)
    start_open(host)
    assert one_answer(host) == 0
    mark = again.mark()
    assert host.send_data(0, b"new socket\n") == b"\r\nSEND OK\r\n"
    again.wait_for_output(rb"new socket", 10, since=mark)
    time.sleep(0.3)
    assert b'"closed"' not in bytes(host.transcript) + host.quiet_for(0.2)
    close(host)


# == the largest send over the suites with the largest record expansion ====================================
@pytest.mark.parametrize("dtlsversion, version, cipher", [
    (0, "-dtls1", "PSK-AES256-CBC-SHA"),
    (1, "-dtls1_2", "PSK-AES256-CBC-SHA384"),
    (1, "-dtls1_2", "PSK-AES128-CCM8"),
])
def test_1460_byte_send_is_one_record_in_one_datagram_1461_sends_nothing(ec2x_strict, emulator, servers,
                                                                       dtlsversion, version, cipher):
    """AT+QSSLSEND=0,1460 over a CBC (explicit IV, MAC, padding) or CCM8 suite: SEND OK, one
    datagram holding one application record, s_server prints the 1460 bytes exactly;
    AT+QSSLSEND=0,1461 is ERROR with no prompt and nothing leaves."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version=version, cipher=f"{cipher}:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server, dtlsversion)
        server.wait_for_output(re.escape(cipher).encode(), 5)
        n = len(box.sent("c2s"))
        payload = bytes((0x41 + i % 26) for i in range(1459)) + b"\n"
        mark = server.mark()
        assert host.send_data(0, payload) == b"\r\nSEND OK\r\n"
        server.wait_for_output(re.escape(payload[-200:-1]), 10, since=mark)
        assert payload[:-1] in server.stdout[mark:]
        up = box.sent("c2s")[n:]
        assert [[r.type for r in records(d)] for d in up] == [[CT_APP]], up
        assert host.at("AT+QSSLSEND=0,1461") == b"\r\nERROR\r\n"
        time.sleep(0.3)
        assert len(box.sent("c2s")) == n + 1
        close(host)


@pytest.mark.parametrize("mode", [1, 2])
@pytest.mark.parametrize("kind", ["fatal_alert", "close_notify"])
def test_clear_alerts_mid_session_end_neither_push_nor_online_mode(ec2x_strict, emulator, servers, mode, kind):
    """The epoch-0 forgeries again, on a push-mode socket (access mode 1) and online in
    transparent mode (2): no "closed" URC, no NO CARRIER; the server's next line arrives
    (pushed, or as raw bytes online) and the host's bytes still go up."""
    from tests.e2e.ssl_options_support import HOST, PORT
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        answer = host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT},{mode}')
        if mode == 2:
            assert answer == b"\r\nCONNECT\r\n"
        else:
            assert answer == OK and one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        box.inject(forged_clear(kind, 11))
        time.sleep(0.4)
        server.write(b"next line\n")
        if mode == 2:
            assert host.read_until(b"next line\n", 10) == b"next line\n"
        else:
            host.seen(b'+QSSLURC: "recv",0,10\r\nnext line\n\r\n', 10)
        time.sleep(0.2)
        t = bytes(host.transcript) + host.quiet_for(0.3)
        assert b"NO CARRIER" not in t and b'"closed"' not in t, t
        mark = server.mark()
        if mode == 2:
            host.write(b"online still\n")
        else:
            assert host.send_data(0, b"online still\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"online still", 10, since=mark)
        if mode == 2:
            assert escape(host, advance) == OK
        close(host)


# == AT+QGDCNT over DTLS ===================================================================================
def qgdcnt(host) -> tuple[int, int]:
    m = re.search(rb"\+QGDCNT: (\d+),(\d+)\r\n", host.at("AT+QGDCNT?"))
    return int(m.group(1)), int(m.group(2))


@pytest.mark.parametrize("path", ["clean", "duplicating"])
def test_qgdcnt_counts_every_dtls_datagram_as_it_went(ec2x_strict, emulator, servers, path):
    """docs/behaviour.md: AT+QGDCNT counts what the sockets wrote to and read from the network,
    records as they went.  Over DTLS that is every datagram's bytes: the handshake's flights,
    the application records, the close_notify -- compared with the datagrams a middlebox saw
    (a datagram duplicated on the way is read, and counted, twice)."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    copies = 2 if path == "duplicating" else 1

    def rule(direction, index, data):
        return [data] * (copies if direction == "s2c" else 1)

    with UdpMiddlebox(server.address, rule) as box:
        assert host.at("AT+QGDCNT=0") == OK
        assert qgdcnt(host) == (0, 0)
        open_psk(host, emulator, box, server)
        mark = server.mark()
        assert host.send_data(0, b"x" * 99 + b"\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"x{99}", 10, since=mark)
        server.write(b"y" * 49 + b"\n")
        assert recv_all(host, 0, 50) == b"y" * 49 + b"\n"
        time.sleep(0.3)
        down = copies * sum(len(d) for d in box.sent("s2c"))     # (s_server's close_notify answer comes
        close(host)                                     #  to a closed socket: not read)
        box.wait_for(lambda: any(records(d.data)[0].type == CT_ALERT for d in box.log if d.direction == "c2s"), 5)
        time.sleep(0.2)
        up = sum(len(d) for d in box.sent("c2s"))
        assert qgdcnt(host) == (up, down)


# == bytes after the last record of a datagram ===============================================================
# Mbed TLS 2.28 (ssl_msg.c): after a record it took -- or one it skipped as "unexpected" (another
# epoch), which skips the record but not the datagram -- the rest of the datagram is parsed as
# the next record; fewer bytes than a record header (13) left there reach mbedtls_ssl_fetch_input's
# "should never happen" branch: MBEDTLS_ERR_SSL_INTERNAL_ERROR (-0x6C00), fatal.  13 or more
# bytes are a header Mbed TLS refuses: the rest of the datagram is dropped, nothing more.
@pytest.mark.parametrize("tail", [1, 5, 12, 13, 40])
def test_bytes_after_a_genuine_record_fail_the_session_as_mbedtls_does(ec2x_strict, emulator, servers, caplog,
                                                                       tail):
    """The server's application datagram with `tail` junk bytes after its record: the line is
    delivered either way; under 13 bytes the session then ends as Mbed TLS's does (one
    "closed" after "recv", the line still readable, AT+QSSLSTATE 4, the log names -0x6C00);
    from 13 bytes on the junk is dropped and the next line arrives, no "closed"."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    armed = [False]

    def rule(direction, index, data):
        if armed[0] and direction == "s2c" and records(data)[0].type == CT_APP:
            armed[0] = False
            return [data + b"\x17" * tail]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        open_psk(host, emulator, box, server)
        armed[0] = True
        server.write(b"first\n")
        host.seen(b'+QSSLURC: "recv",0\r\n', 10)
        time.sleep(0.3)
        server.write(b"second\n")
        time.sleep(0.5)
        host.quiet_for(0.2)
        t = bytes(host.transcript)
        if tail < 13:
            assert t.count(b'+QSSLURC: "closed",0\r\n') == 1, t
            assert t.index(b'"recv",0') < t.index(b'"closed",0')
            assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 6\r\nfirst\n\r\n\r\nOK\r\n"
            assert state_of(host, 0) == 4
            assert any("-0x6C00" in r.getMessage() for r in caplog.records)
        else:
            assert b'"closed"' not in t
            assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 13\r\nfirst\nsecond\n\r\n\r\nOK\r\n"
            assert state_of(host, 0) == 2
        close(host)


def test_forged_clear_record_with_a_short_tail_ends_the_session_as_mbedtls_does(ec2x_strict, emulator, servers,
                                                                                caplog):
    """The flip side, reachable by anyone who can send the modem a datagram from the server's
    address: an epoch-0 alert (skipped as another epoch's) followed by 5 bytes ends an
    established Mbed TLS 2.28 DTLS session (-0x6C00).  The emulator does what the module's
    library does: one "closed", AT+QSSLSTATE 4; the id opens again."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server)
        box.inject(forged_clear("fatal_alert", 7) + b"\x00" * 5)
        host.seen(b'+QSSLURC: "closed",0\r\n', 5)
        host.quiet_for(0.3)
        assert bytes(host.transcript).count(b'"closed",0') == 1
        assert state_of(host, 0) == 4
        assert any("-0x6C00" in r.getMessage() for r in caplog.records)
        close(host)
    again = servers(psk_server())
    route(emulator, again.port)
    start_open(host)
    assert one_answer(host) == 0
    close(host)


# == an empty datagram from the server's address =============================================================
# Mbed TLS 2.28, mbedtls_ssl_fetch_input, DTLS branch: `ret = ssl->f_recv(...); if( ret == 0 )
# return( MBEDTLS_ERR_SSL_CONN_EOF );` -- mbedtls_net_recv returns 0 for a zero-length datagram,
# so a module on Mbed TLS's own UDP transport fails the read / the handshake there, exactly as
# docs/behaviour.md reasons for ICMP port unreachable (MBEDTLS_ERR_NET_RECV_FAILED ends the
# socket).  Was a bug, fixed: the emulator dropped it (tls_engine/session.py _on_transport_eof:
# "an empty datagram means nothing"); it ends the session now (docs/behaviour.md, UDP).
def test_empty_datagram_mid_session_ends_the_socket_as_mbedtls_does(ec2x_strict, emulator, servers):
    """Established DTLS PSK socket, an unread line, then a zero-length datagram from the
    server's address: one +QSSLURC: "closed", the line still readable, AT+QSSLSTATE 4."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server)
        server.write(b"before\n")
        host.seen(b'+QSSLURC: "recv",0\r\n', 10)
        box.inject(b"")
        time.sleep(0.5)
        host.quiet_for(0.3)
        t = bytes(host.transcript)
        assert t.count(b'+QSSLURC: "closed",0\r\n') == 1, t
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 7\r\nbefore\n\r\n\r\nOK\r\n"
        assert state_of(host, 0) == 4
        close(host)


def test_empty_datagram_before_the_servers_flight_fails_the_open_at_once(ec2x_strict, emulator, servers):
    """A zero-length datagram reaches the modem just before the server's first flight:
    mbedtls_ssl_handshake fails with MBEDTLS_ERR_SSL_CONN_EOF, so +QSSLOPEN: 0,566 at once
    (as for ICMP during the handshake), one answer, the id free."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address, inject_first=[b""]) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 566
        assert state_of(host, 0) is None
