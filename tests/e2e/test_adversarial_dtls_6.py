"""Adversarial round 6 on the EC2x's DTLS + PSK options (AT+QSSLCFG "psk"/"dtls"), against
`openssl s_server -dtls1_2 -nocert -psk ...`.

Not repeated from test_adversarial_dtls_3/_4/_5/_psk/_paths/_cert_review,
test_adversarial_psk_dtls_openssl, test_ssl_options_keylog_psk_dtls,
test_adversarial_udp_dtls_prompts.  New here:
  * an identity of non-ASCII bytes (E9, FF) with a comma: the query echoes the bytes exactly
    and s_server receives exactly them (docs/behaviour.md: "never re-encoded as UTF-8");
  * key text forms: upper-case hex is hex (its bytes); an odd number of hex digits is the
    host's ASCII bytes;
  * the note's 0-255 length limits: a 256-character identity or key is refused at the write
    and leaves the stored PSK as it was;
  * "dtls" out of range, and "dtls" switched off while a DTLS socket is open: the open socket
    stays DTLS, the next open on the context is TLS over TCP.
"""
from __future__ import annotations

import os

import pytest

from tests.e2e.ssl_options_support import PORT as PORT_
from tests.e2e.test_adversarial_psk_dtls_openssl import (OK, PSK_HEX, close, one_answer, psk_ctx,
                                                         psk_server, round_trip, route, servers,
                                                         start_open, state_of)

__all__ = ["servers"]   # (the fixture, imported)

E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"


@pytest.fixture(autouse=True)
def crlf_host(request):
    if "ec2x_strict" in request.fixturenames:
        request.getfixturevalue("ec2x_strict")[0].line_end = b"\r\n"


def psk_query(host, ctx: int = 0) -> bytes:
    return host.at(f'AT+QSSLCFG="psk",{ctx}')


def test_non_ascii_identity_bytes_echo_and_reach_the_server_exactly(ec2x_strict, emulator, servers):
    host, advance, _ = ec2x_strict
    ident = b"d\xe9v\xff,1 \xc3"
    server = servers(psk_server(identity="expected"))
    route(emulator, server.port)
    assert host.at(b'AT+QSSLCFG="dtls",0,1') == OK
    assert host.at(b'AT+QSSLCFG="psk",0,"' + ident + b'","' + PSK_HEX.encode() + b'"') == OK
    assert psk_query(host) == b'\r\n+QSSLCFG: "psk",0,"' + ident + b'","' + PSK_HEX.encode() + b'"\r\n\r\nOK\r\n'
    start_open(host)
    assert one_answer(host) == 0
    got = server.wait_for_output(rb"got '([^']*)' expected 'expected'", 10)
    assert got.group(1) == ident
    round_trip(host, server, b"bytes id\n", b"ok\n")
    close(host)


def test_non_ascii_identity_matching_the_servers_opens_without_warning(ec2x_strict, emulator, servers):
    host, advance, _ = ec2x_strict
    ident = b"\xe9\xe8-id"
    server = servers(psk_server(identity=os.fsdecode(ident)))
    route(emulator, server.port)
    assert host.at(b'AT+QSSLCFG="dtls",0,1') == OK
    assert host.at(b'AT+QSSLCFG="psk",0,"' + ident + b'","' + PSK_HEX.encode() + b'"') == OK
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is \S*PSK", 10)
    assert b"PSK warning" not in server.stdout
    close(host)


@pytest.mark.parametrize("text, server_hex", [
    (PSK_HEX.upper(), PSK_HEX),                       # upper-case hex digits: still hex
    ("aBcD", "abcd"),                                 # mixed case
    ("abc", b"abc".hex()),                            # odd length: the ASCII bytes
    ("00112233445566778899aabbccddeef", b"00112233445566778899aabbccddeef".hex()),
], ids=["upper", "mixed", "odd3", "odd31"])
def test_key_case_and_odd_length(ec2x_strict, emulator, servers, text, server_hex):
    host, advance, _ = ec2x_strict
    server = servers(psk_server(key=server_hex))
    route(emulator, server.port)
    psk_ctx(host, key=text)
    assert psk_query(host) == f'\r\n+QSSLCFG: "psk",0,"modem-1","{text}"\r\n\r\nOK\r\n'.encode()
    start_open(host)
    assert one_answer(host) == 0
    round_trip(host, server, b"key form\n", b"ok\n")
    close(host)


@pytest.mark.parametrize("which", ["identity", "key"])
def test_256_characters_are_refused_and_the_psk_stays(ec2x_strict, which):
    host, advance, _ = ec2x_strict
    psk_ctx(host, ctx=2)
    before = psk_query(host, 2)
    long = "a" * 256
    ident, key = (long, PSK_HEX) if which == "identity" else ("modem-1", long)
    assert host.at(f'AT+QSSLCFG="psk",2,"{ident}","{key}"') == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == E552
    assert psk_query(host, 2) == before
    ok255 = "b" * 255
    assert host.at(f'AT+QSSLCFG="psk",2,"{ok255}","{ok255}"') == OK
    assert psk_query(host, 2) == f'\r\n+QSSLCFG: "psk",2,"{ok255}","{ok255}"\r\n\r\nOK\r\n'.encode()


@pytest.mark.parametrize("value", ["2", "-1", "", '"1"'])
def test_dtls_out_of_range_is_refused(ec2x_strict, value):
    host, advance, _ = ec2x_strict
    assert host.at('AT+QSSLCFG="dtls",3') == b'\r\n+QSSLCFG: "dtls",3,0\r\n\r\nOK\r\n'
    answer = host.at(f'AT+QSSLCFG="dtls",3,{value}')
    if value == "":
        # "<opt>",<ctx>, with the value omitted is the query form (emulator decision)
        assert answer == b'\r\n+QSSLCFG: "dtls",3,0\r\n\r\nOK\r\n'
    else:
        assert answer == b"\r\nERROR\r\n"
    assert host.at('AT+QSSLCFG="dtls",3') == b'\r\n+QSSLCFG: "dtls",3,0\r\n\r\nOK\r\n'


def test_dtls_switched_off_while_a_dtls_socket_is_open(ec2x_strict, emulator, servers):
    host, advance, _ = ec2x_strict
    dserver = servers(psk_server())
    route(emulator, dserver.port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    dserver.wait_for_output(rb"CIPHER is", 10)
    assert host.at('AT+QSSLCFG="dtls",0,0') == OK
    round_trip(host, dserver, b"still dtls\n", b"yes\n")
    close(host)
    tserver = servers(psk_server(version="-tls1_2"))
    route(emulator, tserver.port)
    start_open(host)
    assert one_answer(host) == 0
    tserver.wait_for_output(rb"CIPHER is \S*PSK", 10)
    round_trip(host, tserver, b"now tls\n", b"tcp\n")
    close(host)


# == variable-length AT+QSSLSEND (Ctrl+Z) on a DTLS socket ========================================
def test_variable_length_send_1460_one_datagram_1461_error_esc_and_empty_send_nothing(
        ec2x_strict, emulator, servers):
    """docs/behaviour.md: variable length ends at Ctrl+Z, at most 1460 bytes (more is
    ERROR/552), ESC cancels (ERROR, 571), an empty send is ERROR/552.  On DTLS: 1460 bytes
    before the Ctrl+Z are one record in one datagram; the three refused sends put nothing on
    the wire; the socket still works afterwards."""
    from emulator.testing.peers import UdpMiddlebox
    from emulator.testing.peers.dtls_wire import CT_APP, records
    from tests.e2e.test_adversarial_dtls_5 import open_psk
    import re
    import time
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server)
        n = len(box.sent("c2s"))
        payload = bytes((0x41 + i % 26) for i in range(1459)) + b"\n"
        mark = server.mark()
        assert host.send_data(0, payload, fixed=False) == b"\r\nSEND OK\r\n"
        server.wait_for_output(re.escape(payload[-200:-1]), 10, since=mark)
        assert payload[:-1] in server.stdout[mark:]
        up = box.sent("c2s")[n:]
        assert [[r.type for r in records(d)] for d in up] == [[CT_APP]], up
        n += 1
        assert host.send_data(0, payload + b"Z", fixed=False) == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == E552
        host.write(b"AT+QSSLSEND=0\r")
        host.read_until(b"> ")
        host.write(b"cancel me\x1b")
        assert host.read_until(re.compile(rb"\r\n(ERROR|SEND OK|OK)\r\n")).endswith(b"ERROR\r\n")
        assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 571,")
        assert host.send_data(0, b"", fixed=False) == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == E552
        time.sleep(0.3)
        assert len(box.sent("c2s")) == n
        round_trip(host, server, b"after refusals\n", b"fine\n")
        close(host)


# == the context rewritten while a DTLS handshake waits for its retransmission =====================
def test_psk_and_dtls_rewritten_while_the_handshake_retransmits_use_what_was_read_at_open(
        ec2x_strict, emulator, servers):
    """docs/behaviour.md: the PSK and the other settings are read at open.  The server's first
    flight is lost; while the modem waits (manual clock) for its 1 s retransmission the host
    writes another key, another identity and dtls 0: the resent ClientHello and the key
    exchange still use the settings of the open, which succeeds (+QSSLOPEN: 0,0, once), and
    data flows; the query shows the new values."""
    from emulator.testing.peers import UdpDropRelay
    from tests.e2e.socket_support import wait_for
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpDropRelay(server.address, drop=[("s2c", 0)]) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        wait_for(lambda: box.dropped(), 10, "the server's first flight")
        assert host.at('AT+QSSLCFG="psk",0,"someone-else","ffeeddccbbaa99887766554433221100"') == OK
        assert host.at('AT+QSSLCFG="dtls",0,0') == OK
        assert b"+QSSLOPEN" not in host.quiet_for(0.3)
        advance(1.2)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK", 10)
        assert b"PSK warning" not in server.stdout           # the identity of the open
        round_trip(host, server, b"old settings\n", b"kept\n")
        assert psk_query(host) == (b'\r\n+QSSLCFG: "psk",0,"someone-else","ffeeddccbbaa99887766554433221100"'
                                   b'\r\n\r\nOK\r\n')
        close(host)


# == one context, rewritten between two opens: two DTLS sockets with two PSKs ======================
def test_two_dtls_sockets_opened_under_two_psks_of_one_context_both_flow(ec2x_strict, emulator, servers):
    """Socket 0 opens with (modem-1, key A); the context is rewritten to (other-id, key B) and
    socket 1 opens on it to a second server knowing only B: both open, each server sees its own
    identity, and interleaved data goes to the right server both ways."""
    from tests.e2e.ssl_options_support import PORT, recv_all
    host, advance, _ = ec2x_strict
    key_b = "0f" * 16
    a = servers(psk_server())
    b = servers(psk_server(key=key_b, identity="other-id"))
    route(emulator, a.port)
    emulator.router.add_map("b.example", PORT, "127.0.0.1", b.port)
    psk_ctx(host)
    start_open(host, 0)
    assert one_answer(host, 0) == 0
    psk_ctx(host, identity="other-id", key=key_b)
    start_open(host, 1, name="b.example")
    assert one_answer(host, 1) == 0
    for srv in (a, b):
        srv.wait_for_output(rb"CIPHER is \S*PSK", 10)
        assert b"PSK warning" not in srv.stdout
    for i in range(3):
        ma, mb = a.mark(), b.mark()
        assert host.send_data(0, b"to-a %d\n" % i) == b"\r\nSEND OK\r\n"
        assert host.send_data(1, b"to-b %d\n" % i) == b"\r\nSEND OK\r\n"
        a.wait_for_output(rb"to-a %d" % i, 10, since=ma)
        b.wait_for_output(rb"to-b %d" % i, 10, since=mb)
        assert b"to-b" not in a.stdout and b"to-a" not in b.stdout
        a.write(b"from-a %d\n" % i)
        b.write(b"from-b %d\n" % i)
        assert recv_all(host, 0, 9) == b"from-a %d\n" % i
        assert recv_all(host, 1, 9) == b"from-b %d\n" % i
    close(host, 0)
    close(host, 1)


# == a server whose path MTU is small: its data in many small records, one per datagram ===========
@pytest.mark.parametrize("mode", [0, 1])
def test_server_data_cut_by_a_256_byte_mtu_arrives_whole(ec2x_strict, emulator, servers, mode):
    """`s_server -mtu 256`: a 3000-byte line leaves as many small records, each its own
    datagram; buffer mode (AT+QSSLRECV) or push mode (+QSSLURC: "recv",0,<len><CR><LF><data>)
    gives the host all 3000 bytes, in order."""
    import re
    import time
    from tests.e2e.ssl_options_support import recv_all
    host, advance, _ = ec2x_strict
    server = servers(psk_server("-mtu", "256"))
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host, mode=mode)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    line = bytes((0x61 + i % 26) for i in range(2999)) + b"\n"
    server.write(line)
    if mode == 0:
        assert recv_all(host, 0, len(line)) == line
    else:
        got = b""
        deadline = time.monotonic() + 10
        buf = bytearray()
        while len(got) < len(line) and time.monotonic() < deadline:
            host._fill()
            buf += host.pending
            host.pending.clear()
            got = b""
            pos = 0
            for m in re.finditer(rb'\r\n\+QSSLURC: "recv",0,(\d+)\r\n', bytes(buf)):
                if m.start() < pos:
                    continue
                n = int(m.group(1))
                got += bytes(buf[m.end():m.end() + n])
                pos = m.end() + n
        assert got == line
    close(host)


# == a key of non-ASCII bytes (not hex): the host's bytes, echoed exactly ==========================
def test_non_hex_key_of_non_ascii_bytes_is_those_bytes(ec2x_strict, emulator, servers):
    """docs/behaviour.md: a non-hex key is the host's bytes exactly, never re-encoded as UTF-8:
    key bytes 6B E9 79 FF 2C 20 -- s_server -psk 6be979ff2c20 opens and data flows; the query
    echoes the bytes; out-of-range AT+QSSLRECV lengths (0, 1501) are ERROR and take nothing
    from the datagram waiting."""
    host, advance, _ = ec2x_strict
    key = b"k\xe9y\xff, "
    server = servers(psk_server(key=key.hex()))
    route(emulator, server.port)
    assert host.at(b'AT+QSSLCFG="dtls",0,1') == OK
    assert host.at(b'AT+QSSLCFG="psk",0,"modem-1","' + key + b'"') == OK
    assert psk_query(host) == b'\r\n+QSSLCFG: "psk",0,"modem-1","' + key + b'"\r\n\r\nOK\r\n'
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is \S*PSK", 10)
    server.write(b"waiting datagram\n")
    host.seen(b'+QSSLURC: "recv",0\r\n', 10)
    assert host.at("AT+QSSLRECV=0,0") == b"\r\nERROR\r\n"
    assert host.at("AT+QSSLRECV=0,1501") == b"\r\nERROR\r\n"
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 17\r\nwaiting datagram\n\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    round_trip(host, server, b"latin key\n", b"ok\n")
    close(host)


# == a NUL inside the identity and the key: lengths, not C strings =================================
def test_nul_bytes_in_identity_and_key_go_on_the_wire_whole(ec2x_strict, emulator, servers):
    """mbedtls_ssl_conf_psk takes the identity and key with their lengths (unlike ALPN's C
    strings, which the emulator refuses with a NUL): identity 61 00 62 and key 6B 00 79 are
    echoed by the query, the ClientKeyExchange carries psk_identity length 3 + 61 00 62 in the
    clear (RFC 4279 2), and s_server -psk 6b0079 opens."""
    from emulator.testing.peers import UdpMiddlebox
    host, advance, _ = ec2x_strict
    server = servers(psk_server(identity="expected", key=b"k\x00y".hex()))
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        assert host.at(b'AT+QSSLCFG="dtls",0,1') == OK
        assert host.at(b'AT+QSSLCFG="psk",0,"a\x00b","k\x00y"') == OK
        assert psk_query(host) == b'\r\n+QSSLCFG: "psk",0,"a\x00b","k\x00y"\r\n\r\nOK\r\n'
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK", 10)
        assert any(b"\x00\x03a\x00b" in d for d in box.sent("c2s"))
        round_trip(host, server, b"nul id\n", b"ok\n")
        close(host)


# == a silent DTLS server opened in transparent mode (access mode 2) ===============================
def test_transparent_open_to_a_silent_dtls_server_errors_569_at_123_s(
        ec2x_strict, emulator):
    """A silent server, PSK configured, access mode 2, default negotiatetime: docs/behaviour.md
    says the DTLS schedule (1+2+...+32+60 s = 123 s) ends a silent handshake with 569; in
    transparent mode that is ERROR (no CONNECT), not before 123 s; the 7 ClientHellos offer
    the PSK suites; AT+QIGETERROR 569; the id is free afterwards."""
    from emulator.testing.peers import UdpEchoServer
    from emulator.testing.peers.dtls_wire import is_client_hello
    from tests.e2e.test_adversarial_psk_dtls_openssl import offered
    from tests.e2e.ssl_options_support import HOST
    import time
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        route(emulator, silent.port)
        psk_ctx(host)
        host.write(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT_},2\r'.encode())
        silent.wait_datagrams(1, 5)
        for step in (1.1, 2, 4, 8, 16, 32, 59.5):
            advance(step)
            time.sleep(0.1)
        assert host.quiet_for(0.3) == b""
        assert len(silent.log) == 7
        advance(0.7)
        assert host.read_until(b"\r\nERROR\r\n", 5).endswith(b"\r\nERROR\r\n")
        assert b"CONNECT" not in bytes(host.transcript)
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
        assert all(is_client_hello(d) for _, d in silent.log)
        assert all({0x00A8, 0x008C} & set(offered(d)) for _, d in silent.log)
        assert state_of(host, 0) is None


def test_variable_length_overflow_is_swallowed_to_ctrl_z_never_run_as_commands(ec2x_strict, emulator, servers):
    """1461 bytes then "ATI" and "AT+QSSLCLOSE=0" lines, then Ctrl+Z, in one variable-length
    AT+QSSLSEND on a DTLS socket: one ERROR, the command-looking bytes after the limit are not
    run (no ATI answer, the socket stays connected), no datagram leaves."""
    from emulator.testing.peers import UdpMiddlebox
    from tests.e2e.test_adversarial_dtls_5 import open_psk
    import time
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        open_psk(host, emulator, box, server)
        n = len(box.sent("c2s"))
        host.write(b"AT+QSSLSEND=0\r")
        host.read_until(b"> ")
        host.write(b"A" * 1461 + b"\r\nATI\r\nAT+QSSLCLOSE=0\r\n\x1a")
        time.sleep(0.5)
        assert host.quiet_for(0.5) == b"\r\nERROR\r\n"
        assert state_of(host, 0) == 2
        assert len(box.sent("c2s")) == n
        round_trip(host, server, b"still here\n", b"yes\n")
        close(host)


@pytest.mark.parametrize("mode", [0, 1])
def test_server_datagram_during_a_send_prompt_reports_after_send_ok(ec2x_strict, emulator, servers, mode):
    """docs/behaviour.md: URCs raised during a data prompt wait until it ends.  On a DTLS
    socket in buffer (0) or push (1) mode, the server's datagram arrives while the host sits
    at AT+QSSLSEND's "> ": nothing is written into the prompt; after SEND OK comes the URC
    ("recv",0 / "recv",0,<len> + data), and the bytes are intact."""
    import time
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host, mode=mode)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    host.write(b"AT+QSSLSEND=0,10\r")
    host.read_until(b"> ")
    server.write(b"in prompt\n")
    time.sleep(0.5)
    assert host.quiet_for(0.3) == b""
    host.write(b"0123456789")
    answer = host.read_until(b"\r\nSEND OK\r\n", 5)
    assert answer.endswith(b"\r\nSEND OK\r\n") and b"QSSLURC" not in answer
    if mode == 0:
        host.seen(b'+QSSLURC: "recv",0\r\n', 5)
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 10\r\nin prompt\n\r\n\r\nOK\r\n"
    else:
        assert host.read_until(b'+QSSLURC: "recv",0,10\r\nin prompt\n\r\n', 5).endswith(b"in prompt\n\r\n")
    server.wait_for_output(rb"0123456789", 10)
    close(host)


def test_close_mid_retransmission_then_the_id_reopens_and_old_timers_stay_dead(ec2x_strict, emulator, servers):
    """A silent server: the ClientHello resent at 1 s; AT+QSSLCLOSE; the same id opens at once
    to a live PSK server.  Moving the clock past the old schedule (3, 7 ... 123 s) sends the
    silent server nothing more, gives no stray +QSSLOPEN (569) and leaves the new socket
    connected with data flowing."""
    from emulator.testing.peers import UdpEchoServer
    import time
    host, advance, _ = ec2x_strict
    with UdpEchoServer(echo=False) as silent:
        route(emulator, silent.port)
        psk_ctx(host)
        start_open(host)
        silent.wait_datagrams(1, 5)
        advance(1.2)
        silent.wait_datagrams(2, 5)
        close(host)
        live = servers(psk_server())
        route(emulator, live.port)
        start_open(host)
        assert one_answer(host) == 0
        live.wait_for_output(rb"CIPHER is", 10)
        for _ in range(13):
            advance(10)
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(silent.log) == 2
        assert b"QSSLOPEN" not in host.quiet_for(0.3)
        assert state_of(host, 0) == 2
        round_trip(host, live, b"new socket\n", b"alive\n")
        close(host)
