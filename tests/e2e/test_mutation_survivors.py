"""Tests written from a manual mutation-testing pass: each one pins a host-visible behaviour
that a small, plausible change to the emulator left every other test passing on.  The
mutant each test kills is named in its docstring; the expected values come from the EC2x
SSL note, the ML302 manual or docs/behaviour.md, not from the emulator's current output.

Every peer is on 127.0.0.1 (the conftest fixtures route the tests' host names there)."""
from __future__ import annotations

import re
import time

import pytest

from emulator.at.escape import EscapeDetector
from emulator.storage.checksum import format_checksum, xor16
from emulator.testing.peers import OpenSslServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, qiopen, qisend
from tests.e2e.ssl_options_support import cfg, close, last_error, open_ssl, s_server_round_trip

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SEND_OK = b"\r\nSEND OK\r\n"
SEND_FAIL = b"\r\nSEND FAIL\r\n"


# -- AT lexer and parameters -------------------------------------------------------------------
def test_a_stray_a_before_the_prefix_still_starts_the_line(ec2x):
    """Mutant: lexer.py, a second 'A' after 'A' drops back to idle.  The lexer's V.250 line
    discipline: "AAT" still starts a command (the second A is the prefix's), as a module
    answers a host that sent a stray "A" (an autobaud probe) before its line."""
    assert ec2x.at("AAT") == OK
    assert ec2x.at("AAT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
    assert ec2x.at("aat") == OK


def test_numeric_parameters_have_at_most_12_digits(ec2x):
    """Mutant: args.py without the 12-digit bound.  docs/behaviour.md: "numbers have at most
    12 digits (as every numeric AT parameter)": twelve digits (leading zeros) are a number,
    thirteen are ERROR, and nothing changes."""
    assert ec2x.at("AT+CMEE=000000000002") == OK                     # 12 digits: 2
    assert ec2x.at("AT+CMEE?") == b"\r\n+CMEE: 2\r\n" + OK
    assert ec2x.at("AT+CMEE=0000000000001") == ERROR                 # 13 digits
    assert ec2x.at("AT+CMEE?") == b"\r\n+CMEE: 2\r\n" + OK


# -- AT+QSSLCFG ----------------------------------------------------------------------------------
def test_cipher_suite_id_wider_than_16_bits_is_refused(ec2x):
    """Mutant: context.parse_cipher_list taking ids of 5 hex digits.  A TLS cipher suite id
    is two bytes (ids are written 0X0035, docs/behaviour.md): "0X1C02F" is a bad parameter,
    ERROR / 552, and the context keeps its suites."""
    assert ec2x.at('AT+QSSLCFG="ciphersuite",1,0X1C02F') == ERROR
    assert last_error(ec2x) == 552
    assert ec2x.at('AT+QSSLCFG="ciphersuite",1,"0XC02F:0X1C02F"') == ERROR
    assert ec2x.at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n' + OK


def test_psk_key_with_an_odd_number_of_hex_digits_is_its_bytes(ec2x, net):
    """Mutant: context._psk_key_bytes without its even-length check.  docs/behaviour.md: "a
    key written in hex is used as those bytes ..., anything else as its bytes": "abc" is not
    hex bytes (three digits), so the key is b"abc" (hex 616263) and the handshake works."""
    with OpenSslServer(["-nocert", "-psk", b"abc".hex(), "-psk_identity", "modem-1",
                        "-cipher", "PSK:@SECLEVEL=0", "-tls1_2"]) as server:
        net(server)
        cfg(ec2x, "psk", 0, '"modem-1"', '"abc"')
        assert open_ssl(ec2x, 0) == 0
        server.wait_for_output(rb"CIPHER is \S*PSK")
        s_server_round_trip(ec2x, server, b"odd key up\n", b"odd key down\n")
        close(ec2x)


# -- AT+QSSLSEND / AT+QSSLRECV -------------------------------------------------------------------
def test_qsslsend_with_an_empty_sendlen_is_error_not_a_variable_length_prompt(ec2x, echo):
    """Mutant: ssl_ec2x.qsslsend_write without its empty-<sendlen> check.  The note has two
    forms, AT+QSSLSEND=<id> (Ctrl+Z) and AT+QSSLSEND=<id>,<sendlen> (1-1460): "=0," is
    neither, on a connected socket too -- ERROR, 552, no "> " prompt."""
    assert ec2x.at("AT+QIACT=1") == OK
    assert ec2x.at('AT+QSSLOPEN=1,0,0,"echo.example",443') == OK
    assert ec2x.seen(b"+QSSLOPEN: 0,0\r\n")
    assert ec2x.at("AT+QSSLSEND=0,") == ERROR
    assert last_error(ec2x) == 552
    assert ec2x.quiet_for(0.1) == b""                            # no prompt came after all
    assert ec2x.send_data(0, b"still fine") == SEND_OK
    ec2x.seen(b'+QSSLURC: "recv",0\r\n')     # the echo's URC, before close()'s exact OK
    close(ec2x)


def test_qsslrecv_while_the_handshake_is_pending_is_error(ec2x, net, tcp_sink):
    """Mutant: ssl_ec2x.qsslrecv_write taking an OPENING socket as connected (it answered
    "+QSSLRECV: 0").  The note (§2.2.4): "If the parameters are incorrect or the connection
    cannot be established: ERROR"; AT+QIGETERROR 572.  A TCP peer that never answers the
    ClientHello keeps the socket opening."""
    assert ec2x.at(f'AT+QSSLOPEN=1,0,0,"{TCP_HOST}",{TCP_PORT}') == OK
    conn = tcp_sink.wait_connection()
    conn.wait_received(1)                                        # the ClientHello is out
    assert re.search(rb'\+QSSLSTATE: 0,"SSLClient","tcp.example",7000,\d+,1,', ec2x.at("AT+QSSLSTATE=0"))
    assert ec2x.at("AT+QSSLRECV=0,100") == ERROR
    assert last_error(ec2x) == 572
    close(ec2x)


# -- AT+QIRD / AT+QISEND ---------------------------------------------------------------------
def test_qird_without_a_length_reads_up_to_1500_bytes(net, tcp_echo, ec2x):
    """Mutant: tcpip.qird_write with another default <read_length>.  docs/behaviour.md
    (AT+QIRD): "length 0-1500, default 1500"."""
    qiopen(ec2x, 0)
    data = bytes(range(256)) * 6 + b"#" * 64                     # 1600 bytes
    assert qisend(ec2x, 0, data[:1460]) == SEND_OK
    assert qisend(ec2x, 0, data[1460:]) == SEND_OK
    deadline = time.monotonic() + 10
    while b"+QIRD: 1600,0,1600" not in ec2x.at("AT+QIRD=0,0"):   # all echoed back, none read
        assert time.monotonic() < deadline, "the echo never came back whole"
        time.sleep(0.05)
    ec2x.write(b"AT+QIRD=0\r")
    assert ec2x.read_until(b"\r\n+QIRD: ") + ec2x.read_until(b"\r\n") == b"\r\n+QIRD: 1500\r\n"
    assert ec2x.read_exactly(1500) == data[:1500]
    assert ec2x.read_until(OK) == b"\r\n" + OK
    assert ec2x.at("AT+QIRD=0") == b"\r\n+QIRD: 100\r\n" + data[1500:] + b"\r\n" + OK
    assert ec2x.at("AT+QICLOSE=0,0") == OK


def test_send_fail_only_when_the_backlog_would_exceed_the_send_buffer(emulator, ec2x_on, tcp_sink):
    """Mutant: ssl_common.send_now refusing when backlog + data reaches the buffer.
    docs/behaviour.md: "SEND FAIL when the unsent backlog would pass tcpip.send_buffer"
    (16384): a send that fills it exactly is SEND OK, one byte more is SEND FAIL."""
    host, _ = ec2x_on
    qiopen(host, 0)
    tcp_sink.wait_connection()
    assert emulator.control("drop", socket=0, how="blackhole") == {"ok": True}
    for _ in range(11):
        assert qisend(host, 0, b"x" * 1460) == SEND_OK             # 16060 bytes held
    assert qisend(host, 0, b"y" * (16384 - 11 * 1460)) == SEND_OK  # exactly 16384
    assert qisend(host, 0, b"z") == SEND_FAIL
    assert re.search(rb"\+QISEND: 16384,0,16384\r\n", host.at("AT+QISEND=0,0"))
    assert host.at("AT+QICLOSE=0,0") == OK


# -- AT+QFUPL ----------------------------------------------------------------------------
def test_qfupl_default_inactivity_timeout_is_5_s(ec2x_strict):
    """Mutant: files.DEFAULT_TIMEOUT changed.  The FILE note's parameter table (and
    docs/behaviour.md): <timeout> defaults to 5 s of inactivity; the data that came are kept
    and answered "+QFUPL: <upload_size>,<checksum>"."""
    host, advance, _ = ec2x_strict
    host.write('AT+QFUPL="idle.bin",100\r')
    host.read_until(b"\r\nCONNECT\r\n")
    part = b"0123456789"
    host.write(part)
    advance(4.9)
    assert host.quiet_for(0.05) == b""                           # still taking data
    advance(0.2)                                                 # 5.1 s idle
    assert host.read_until(OK, timeout=5) == \
        f"\r\n+QFUPL: 10,{format_checksum(xor16(part), pad=False)}\r\n\r\nOK\r\n".encode()
    assert host.at('AT+QFLST="idle.bin"') == b'\r\n+QFLST: "idle.bin",10\r\n' + OK


# -- transparent mode: "+++" guard times -----------------------------------------------------
@pytest.fixture
def online(emulator, ec2x_strict):
    """(host, advance, server): an EC2x on manual time online (access mode 2) on socket 4
    with a TLS echo server."""
    host, advance, _ = ec2x_strict
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map("220.180.239.212", 8011, "127.0.0.1", server.port)
        host.write('AT+QSSLOPEN=1,1,4,"220.180.239.212",8011,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n")) == b"\r\nCONNECT\r\n"
        server.wait_handshake()
        yield host, advance, server


def test_guard_time_after_plus_plus_plus_counts_from_the_third_plus(online):
    """Mutant: escape.EscapeDetector.deadline timing the silence after "+++" from the
    first "+".  The EC2x note (docs/behaviour.md, "Leaving"): "+++" needs the guard time
    (S12, 1 s) of silence AFTER it: "+" at 0, 0.4 and 0.9 s, a byte at 1.2 s (only 0.3 s
    after the third "+") makes all four data, no OK."""
    host, advance, server = online
    advance(1.1)
    host.write(b"+")
    advance(0.4)
    host.write(b"+")
    advance(0.5)
    host.write(b"+")
    advance(0.3)
    assert host.quiet_for(0.05) == b""                           # no OK: still online
    host.write(b"z")
    advance(1.1)
    assert host.read_exactly(4) == b"+++z"                       # echoed back: it was data
    server.wait_received(4)
    assert host.quiet_for(0.05) == b""
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")) == OK   # a real escape still works


def test_a_plus_past_the_first_ones_guard_time_is_data_even_before_its_timer_ran():
    """Mutant: escape.EscapeDetector.feed continuing a held "+" without checking that the
    next one comes within the guard time.  docs/behaviour.md: the three "+" must come
    "within the guard time"; silence is measured when the pty is read, also when the loop
    was too busy to run the guard timer (the sans-IO detector, as the interpreter feeds it
    then): a "+" 1.5 s after the first is too late to join it -- the first is data; the
    second, after 1.5 s of silence of its own, may begin another escape (held back), and a
    byte right after it makes it data too."""
    detector = EscapeDetector(guard=1.0, now=0.0)
    assert detector.feed(b"+", 2.0) == b""                       # after silence: held back
    assert detector.feed(b"+", 3.5) == b"+"                      # too late: the first is data
    assert detector.feed(b"x", 3.6) == b"+x"                     # the second too, then
    assert detector.deadline() is None
    assert detector.feed(b"+", 5.0) == b""                       # a fresh start after silence
    assert detector.feed(b"++", 5.5) == b""
    assert detector.expire(6.6) == (b"", True)                   # that one is an escape
