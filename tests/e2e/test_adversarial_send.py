"""Adversarial tests of the deferred transmit after SEND OK (SslSocket.transmit_soon,
commit 61c809f): the bytes a SEND OK accepted must reach the peer, in order, as the same
datagrams, whatever the host does next (close, another socket, a file upload's prompt,
transparent mode, a peer's half-close).  Most tests make FLUSH_AFTER long ("held") so the
0.5 ms timer cannot hide a missing trigger."""
from __future__ import annotations

import re
import socket
import time

import pytest

import emulator.sockets.ssl_socket as ssl_socket
from emulator.testing.peers.plain import wait_until
from tests.e2e.socket_support import UDP_HOST, UDP_PORT, qiopen, qird, qisend

OK = b"\r\nOK\r\n"
SEND_OK = b"\r\nSEND OK\r\n"


@pytest.fixture
def held(monkeypatch):
    monkeypatch.setattr(ssl_socket, "FLUSH_AFTER", 30.0)


def _qisendex(host, connect_id: int, data: bytes) -> bytes:
    return host.at(f"AT+QISENDEX={connect_id},\"{data.hex().upper()}\"")


# -- TCP (AT+QISEND / AT+QISENDEX) ---------------------------------------------------------
def test_mixed_tcp_sends_then_close_timeout_0_keep_order(emulator, ec2x_on, tcp_sink, held):
    """Fixed, Ctrl+Z and hex sends, then AT+QICLOSE=0,0: SEND OK accepted every byte, so
    all of them leave, in order, before the abort."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"fixed|") == SEND_OK
    assert qisend(host, 0, b"ctrlz|", fixed=False) == SEND_OK
    assert _qisendex(host, 0, b"hex|") == SEND_OK
    assert qisend(host, 0, b"last", byte_at_a_time=True) == SEND_OK
    assert host.at("AT+QICLOSE=0,0") == OK
    assert conn.wait_received(20, timeout=3) == b"fixed|ctrlz|hex|last"


def test_query_right_after_send_ok_adds_up(emulator, ec2x_on, tcp_sink, held):
    """AT+QISEND=<id>,0 right after SEND OK: total = acked + unacked, total counts the
    bytes at once; once they are out (a later prompt), unacked drops to 0."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"12345") == SEND_OK
    answer = host.at("AT+QISEND=0,0")
    total, acked, unacked = map(int, re.search(rb"\+QISEND: (\d+),(\d+),(\d+)", answer).groups())
    assert total == 5 and acked + unacked == 5
    host.write("AT+QISEND=0,3\r")
    assert host.read_until(re.compile(rb"> ")).endswith(b"> ")        # the prompt flushes "12345"
    conn.wait_received(5, timeout=3)
    host.write(b"678")
    assert host.read_until(re.compile(rb"\r\nSEND OK\r\n")).endswith(SEND_OK)
    assert host.at("AT+QICLOSE=0,0") == OK
    assert conn.wait_received(8, timeout=3) == b"12345678"


def test_interleaved_sends_on_two_sockets_stay_apart_and_in_order(emulator, ec2x_on, tcp_sink, held):
    host, _ = ec2x_on
    qiopen(host, 0)
    first = tcp_sink.wait_connection(0)
    qiopen(host, 1)
    second = tcp_sink.wait_connection(1)
    for i in range(5):
        assert qisend(host, 0, f"a{i}".encode()) == SEND_OK
        assert qisend(host, 1, f"b{i}".encode(), fixed=bool(i % 2)) == SEND_OK
    assert _qisendex(host, 0, b"A") == SEND_OK
    assert host.at("AT+QICLOSE=1,0") == OK
    assert host.at("AT+QICLOSE=0,0") == OK
    assert first.wait_received(11, timeout=3) == b"a0a1a2a3a4A"
    assert second.wait_received(10, timeout=3) == b"b0b1b2b3b4"


def test_file_upload_prompt_flushes_the_socket(emulator, ec2x_on, tcp_sink, held):
    """The data prompt of AT+QFUPL is a data prompt too: the held bytes leave with it."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"before upload") == SEND_OK
    assert conn.received == b""
    host.write('AT+QFUPL="adv.txt",4\r')
    assert host.read_until(b"CONNECT\r\n").endswith(b"CONNECT\r\n")
    assert conn.wait_received(13, timeout=3) == b"before upload"
    host.write(b"file")
    assert b"+QFUPL: 4," in host.read_until(OK)


def test_flush_timer_runs_on_loop_time_not_the_manual_modem_clock(emulator, ec2x_strict, tcp_sink):
    """ec2x_strict: the modem's clock never moves; FLUSH_AFTER is loop time, so the bytes
    still leave on their own (no prompt, no close)."""
    host, _advance, _ = ec2x_strict
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"on its own") == SEND_OK
    assert conn.wait_received(10, timeout=2) == b"on its own"
    assert host.at("AT+QICLOSE=0,0") == OK


def test_many_single_byte_writes_between_sends(emulator, ec2x_on, tcp_echo):
    """A host writing one byte at a time; the real 0.5 ms timer: echoed back in order."""
    host, _ = ec2x_on
    qiopen(host, 0)
    tcp_echo.wait_connection()
    expected = b""
    for i in range(6):
        chunk = f"<{i}>".encode() * (i + 1)
        expected += chunk
        assert qisend(host, 0, chunk, byte_at_a_time=True).endswith(SEND_OK)
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < len(expected) and time.monotonic() < deadline:
        got += qird(host, 0)[1]
        time.sleep(0.02)
    assert got == expected
    assert host.at("AT+QICLOSE=0,0").endswith(OK)


def test_peer_reset_before_flush_is_quiet(emulator, ec2x_strict, echo, held):
    """Held bytes on a socket the peer resets (control API drop rst): another socket's
    prompt flushes them into a dead connection -- no error logged (ec2x_strict), the other
    socket is unaffected."""
    host, _advance, _ = ec2x_strict
    _ssl_open(host, 1)
    echo.wait_handshake()
    _ssl_open(host, 2)
    assert host.send_data(1, b"lost") == SEND_OK
    assert emulator.control("drop", socket=1, how="rst") == {"ok": True}
    host.seen(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert host.send_data(2, b"fine").endswith(SEND_OK)       # its prompt flushes socket 1
    assert host.send_data(2, b"!").endswith(SEND_OK)          # and this one "fine"
    host.seen(b'+QSSLURC: "recv",2', timeout=5)
    assert host.at("AT+QSSLCLOSE=1,0").endswith(OK)
    assert host.at("AT+QSSLCLOSE=2,0").endswith(OK)


def test_peer_half_close_before_flush_keeps_accepted_bytes(emulator, ec2x_on, tcp_sink, held):
    """The peer shuts down its sending side only (it still reads).  SEND OK came before its
    FIN: the module's TCP stack has the bytes and delivers them (CLOSE_WAIT may send)."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    assert qisend(host, 0, b"request") == SEND_OK
    conn.sock.shutdown(socket.SHUT_WR)
    host.seen(b'+QIURC: "closed",0\r\n', timeout=5)
    answer = host.at("AT+QISEND=0,0")
    assert answer.startswith(b"\r\n+QISEND: 7,"), answer
    assert host.at("AT+QICLOSE=0,0") == OK
    assert conn.wait_received(7, timeout=2) == b"request"


# -- UDP ----------------------------------------------------------------------------------
def test_udp_datagrams_stay_datagrams_across_deferral(emulator, ec2x_on, udp_echo, held):
    host, _ = ec2x_on
    qiopen(host, 2, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
    sent = [b"one", b"two-ctrlz", b"three-hex", b"4", b"five"]
    assert qisend(host, 2, sent[0]).endswith(SEND_OK)
    assert qisend(host, 2, sent[1], fixed=False).endswith(SEND_OK)
    assert _qisendex(host, 2, sent[2]).endswith(SEND_OK)
    assert qisend(host, 2, sent[3], byte_at_a_time=True).endswith(SEND_OK)
    assert qisend(host, 2, sent[4]).endswith(SEND_OK)
    assert host.at("AT+QICLOSE=2,0").endswith(OK)
    got = [data for _, data in udp_echo.wait_datagrams(5, timeout=3)]
    assert got == sent


def test_udp_hex_sends_back_to_back_without_prompts(emulator, ec2x_on, udp_echo, held):
    """AT+QISENDEX has no prompt: several held datagrams, then a close flushes them, each
    still its own datagram."""
    host, _ = ec2x_on
    qiopen(host, 2, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
    sent = [bytes([i]) * (i + 1) for i in range(4)]
    for d in sent:
        assert _qisendex(host, 2, d).endswith(SEND_OK)
    assert host.at("AT+QICLOSE=2,0").endswith(OK)
    assert [data for _, data in udp_echo.wait_datagrams(4, timeout=3)] == sent


# -- SSL (AT+QSSLSEND) --------------------------------------------------------------------
def _ssl_open(host, client_id: int = 1) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"echo.example",443,0') == OK
    host.seen(f"+QSSLOPEN: {client_id},0\r\n".encode(), timeout=5)


def test_ssl_send_then_close_timeout_0_delivers(emulator, ec2x_on, echo, held):
    host, _ = ec2x_on
    _ssl_open(host)
    conn = echo.wait_handshake()
    assert host.send_data(1, b"alpha ") == SEND_OK
    assert host.send_data(1, b"beta", fixed=False) == SEND_OK
    assert host.at("AT+QSSLCLOSE=1,0").endswith(OK)
    wait_until(lambda: len(conn.received) >= 10 or conn.closed, timeout=3)
    assert conn.received == b"alpha beta"


def test_ssl_send_then_pdp_deactivation_reports_closed(emulator, ec2x_on, echo, held):
    """Held bytes on a socket whose PDP context goes: no crash, closed URC, then the id is
    free for a fresh open that works."""
    host, _ = ec2x_on
    _ssl_open(host)
    echo.wait_handshake()
    assert host.send_data(1, b"gone") == SEND_OK
    assert host.at("AT+QIDEACT=1").endswith(OK)
    host.seen(b'+QSSLURC: "closed",1', timeout=5)
    assert host.at("AT+QSSLCLOSE=1").endswith(OK)
    assert host.at("AT+QIACT=1") == OK
    _ssl_open(host)
    assert host.send_data(1, b"again") == SEND_OK
    host.write("AT+QSSLSEND=1,1\r")                         # its prompt flushes "again"
    assert host.read_until(re.compile(rb"> ")).endswith(b"> ")
    host.write(b"!")
    assert host.read_until(re.compile(rb"\r\nSEND OK\r\n")).endswith(SEND_OK)
    host.seen(b'+QSSLURC: "recv",1', timeout=5)               # the echo of "again"
    assert host.at("AT+QSSLCLOSE=1").endswith(OK)


# -- the host's next command in the same write as the data --------------------------------
def test_data_and_close_in_one_write(emulator, ec2x_on, tcp_sink, held):
    """The data and "AT+QICLOSE=0,0" arrive together: SEND OK, then the close; the bytes
    SEND OK accepted leave before the abort."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    host.write("AT+QISEND=0,5\r")
    assert host.read_until(re.compile(rb"> ")).endswith(b"> ")
    host.write(b"hello" + b"AT+QICLOSE=0,0\r")
    assert host.read_until(OK).endswith(SEND_OK + OK)
    assert conn.wait_received(5, timeout=3) == b"hello"


def test_data_and_next_sends_in_one_write(emulator, ec2x_on, tcp_sink, held):
    """A host that does not wait for the prompt nor for SEND OK: three sends in one write."""
    host, _ = ec2x_on
    qiopen(host, 0)
    conn = tcp_sink.wait_connection()
    host.write(b"AT+QISEND=0,3\r")
    assert host.read_until(re.compile(rb"> ")).endswith(b"> ")
    host.write(b"abc" + b"AT+QISEND=0,3\r")
    assert host.read_until(re.compile(rb"> ")).endswith(b"> ")
    host.write(b"def" + b'AT+QISENDEX=0,"676869"\r' + b"AT+QICLOSE=0,0\r")
    out = host.read_until(re.compile(rb"OK\r\n\r\nOK\r\n"))
    assert out.count(b"SEND OK") == 2, out
    assert conn.wait_received(9, timeout=3) == b"abcdefghi"


def test_send_fail_with_a_full_buffer_counts_held_bytes(emulator, ec2x_on, tcp_sink, held):
    """send_backlog counts what SEND OK accepted and still holds: a blackholed socket fills
    its send buffer, then SEND FAIL; the figures of AT+QISEND=<id>,0 add up."""
    host, _ = ec2x_on
    qiopen(host, 0)
    tcp_sink.wait_connection()
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    chunk = b"x" * 1460
    results = []
    for _ in range(60):
        results.append(qisend(host, 0, chunk))
        if results[-1].endswith(b"SEND FAIL\r\n"):
            break
    assert results[-1].endswith(b"SEND FAIL\r\n")
    assert sum(r.endswith(SEND_OK) for r in results) == 16384 // 1460      # the profile's buffer
    answer = host.at("AT+QISEND=0,0")
    total, acked, unacked = map(int, re.search(rb"\+QISEND: (\d+),(\d+),(\d+)", answer).groups())
    assert total == acked + unacked and acked == 0
    assert total == 1460 * sum(r.endswith(SEND_OK) for r in results)
    assert host.at("AT+QICLOSE=0,0").endswith(OK)


# -- ML302 ----------------------------------------------------------------------------------
def test_ml302_secwrite_prompt_flushes_and_close_keeps_order(emulator, open_modem, echo, held):
    """ML302: AT+QSSLSEND (Ctrl+Z), then AT+QSECWRITE's prompt flushes the held bytes; a
    second send is held until AT+QSSLCLOSE, which sends it before close_notify."""
    host, _ = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    assert host.at('AT+QSSLOPEN=2,0,"echo.example",443,0') == OK
    assert host.seen(b"+QSSLOPEN: 2,0\r\n", 5)
    conn = echo.wait_handshake()
    host.write("AT+QSSLSEND=2\r")
    assert host.read_until(b"> ").endswith(b"> ")
    host.write(b"one," + b"\x1a")
    assert host.read_until(SEND_OK).endswith(SEND_OK)
    assert host.quiet_for(0.1) == b"" and conn.received == b""        # held
    assert host.at("AT+QSECDEL=0").endswith(OK)
    host.write("AT+QSECWRITE=0\r")
    assert host.read_until(b"> ").endswith(b"> ")
    wait_until(lambda: conn.received == b"one,", timeout=3)            # out with the prompt
    host.write(b"-----BEGIN CERTIFICATE-----\x1b")                       # ESC: cancelled
    host.read_until(OK)
    host.write("AT+QSSLSEND=2\r")
    assert host.read_until(b"> ").endswith(b"> ")
    host.write(b"two\x1a")
    assert host.read_until(SEND_OK).endswith(SEND_OK)
    host.write("AT+QSSLCLOSE=2\r")
    host.read_until(b"CLOSE OK\r\n", timeout=15)
    wait_until(lambda: conn.closed, timeout=5)
    assert conn.received == b"one,two"


# -- incoming connections, and a long mixed run on the real timer ------------------------------
def test_incoming_socket_is_flushed_by_the_next_prompt(emulator, ec2x_on, held):
    """A connection a TCP LISTENER accepted: its held bytes go out with the next data prompt
    (of another socket) like any client socket's, and a close timeout 0 keeps the rest."""
    host, _ = ec2x_on
    from tests.e2e.socket_support import free_port
    port = free_port()
    qiopen(host, 4, "TCP LISTENER", "127.0.0.1", 0, local_port=port)
    client = socket.create_connection(("127.0.0.1", port))
    client.settimeout(3)
    try:
        head = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,4,'))
        cid = int(re.search(rb'"incoming",(\d+),', head).group(1))
        assert qisend(host, cid, b"first;").endswith(SEND_OK)
        host.write(f"AT+QISEND={cid},7\r")
        assert host.read_until(re.compile(rb"> ")).endswith(b"> ")
        assert client.recv(100) == b"first;"                      # out with the prompt
        host.write(b"second;")
        assert host.read_until(re.compile(rb"\r\nSEND OK\r\n")).endswith(SEND_OK)
        assert _qisendex(host, cid, b"third").endswith(SEND_OK)
        assert host.at(f"AT+QICLOSE={cid},0").endswith(OK)
        got = b""
        while True:
            try:
                part = client.recv(100)
            except (ConnectionResetError, socket.timeout):
                break
            if not part:
                break
            got += part
        assert got == b"second;third"
    finally:
        client.close()
        host.at("AT+QICLOSE=4,0")


def test_long_mixed_run_on_two_sockets_real_timer(emulator, ec2x_on, tcp_sink):
    """60 sends of every kind, alternating two sockets, on the real 0.5 ms timer: each peer
    gets exactly its bytes, in order."""
    host, _ = ec2x_on
    qiopen(host, 0)
    first = tcp_sink.wait_connection(0)
    qiopen(host, 1)
    second = tcp_sink.wait_connection(1)
    want = {0: b"", 1: b""}
    for i in range(60):
        cid = i % 2
        data = f"[{i}:{'x' * (i % 17)}]".encode()
        kind = i % 4
        if kind == 0:
            result = qisend(host, cid, data)
        elif kind == 1:
            result = qisend(host, cid, data, fixed=False)
        elif kind == 2:
            result = _qisendex(host, cid, data)
        else:
            result = qisend(host, cid, data, byte_at_a_time=True)
        assert result.endswith(SEND_OK), (i, result)
        want[cid] += data
    assert first.wait_received(len(want[0]), timeout=3) == want[0]
    assert second.wait_received(len(want[1]), timeout=3) == want[1]
    assert host.at("AT+QICLOSE=0,0").endswith(OK)
    assert host.at("AT+QICLOSE=1,0").endswith(OK)



def test_held_bytes_then_network_conditions_keep_order(emulator, ec2x_on, echo, held):
    """Bytes held before network conditions are set leave before those sent on the shaped
    link (which go at once, paced on the modem's clock)."""
    host, port = ec2x_on
    _ssl_open(host, 1)
    conn = echo.wait_handshake()
    assert host.send_data(1, b"held-") == SEND_OK
    assert emulator.control("net", socket=1, latency_ms=300)["ok"]
    assert host.send_data(1, b"shaped").endswith(SEND_OK)
    emulator.advance(port, 0.35)
    echo.wait_received(11, timeout=3)
    assert conn.received == b"held-shaped"
    assert emulator.control("net", socket=1)["ok"]
    assert host.at("AT+QSSLCLOSE=1,0").endswith(OK)


# -- the parser's cache -----------------------------------------------------------------------
def test_parse_line_cache_is_not_shared_mutable_state():
    """parse_line keeps the lines it parsed: the list it returns is the caller's own, a
    cached answer equals a fresh parse, and filling the table past its size changes nothing."""
    from emulator.at import parser
    line = bytearray(b'+QSSLSEND=0,1460;+QISENDEX=1,"4142"')
    first = parser.parse_line(line)
    fresh = parser._parse_line(bytes(line))
    first.clear()                                   # the caller's list: not the cache's
    line[:] = b"+CSQ"                               # the caller's buffer: copied
    again = parser.parse_line(b'+QSSLSEND=0,1460;+QISENDEX=1,"4142"')
    assert again == fresh and len(again) == 2
    for i in range(parser._PARSED_MAX + 3):         # past the table's size: it starts again
        assert parser.parse_line(f"+QISEND={i % 12},{i}".encode()) == parser._parse_line(
            f"+QISEND={i % 12},{i}".encode())
    long = b"+QSSLCFG=" + b'"x",' * 60 + b"1"
    assert parser.parse_line(long) == parser._parse_line(long)
    assert bytes(long) not in parser._PARSED
    assert parser.parse_line(b"+CSQ") == parser._parse_line(b"+CSQ")
