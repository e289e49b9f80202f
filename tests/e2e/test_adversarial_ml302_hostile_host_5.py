"""Adversarial, fifth round of hostile HOST programs against the ML302 profile: a line-by-line
conformance pass over the OneMO ML302 SSL AT manual (§2.1-§2.10, §3) with docs/behaviour.md
("Command line and result codes", "ML302 SSL commands", "ML302 certificate store",
"TLS options on the wire / ML302 subset") for what the manual leaves open.  Aimed at what
test_adversarial_ml302_*.py (hostile_host 1-4 included), test_ml302_ssl.py,
test_stateful_ml302.py and test_ssl_options_ml302.py leave out.

Every host writes CR LF lines one byte per write() and reads 1/3/7/4095 bytes at a time
(hostile_host_2's Rig / Hostile).

- §3 end to end with echo on (the ML302's default) against a real `openssl s_server`
  (not Python's ssl): the CA written by AT+QSECWRITE byte by byte (§2.2's XOR checksum by
  hand, §2.3's read back), seclevel 1, the manual's request typed byte by byte, the manual's
  434-byte answer written by s_server, §2.8's block, an empty read's bare OK, the peer's
  close as §2.10's "close" URC, §2.6's OK + "0,CLOSE OK".
- Every AT+QSSLCFG form of §2.1 (test, "ctxindex", each option's write / query / range,
  the global ignorertctime / https / httpsctxi with their ranges) and every test / read form
  of §2.2-§2.9, pipelined in ONE write: the answers in order, byte for byte.
- A half-typed command line whose host closes the port: the rest typed by the next program
  never joins it (AT+QSECDEL half typed, and AT+QSECDEL=0 typed whole but for its CR).
- Store commands chained with ';': the prompt ends the line (the rest neither runs nor is
  data), an error before the prompt ends it without a prompt.
- A second (third, ...) command pipelined while a buffer-mode AT+QSSLOPEN waits in its
  handshake: AT+QSSLSEND / AT+QSSLRECV ERROR, the same ssid -2 (§2.5), AT+QSSLSTATE
  CONNECTING, store commands work; exactly one "+QSSLOPEN: 0,0" at the end.
- AT+QSSLRECV's reserved <cid> (§2.8: 0-1, "no effect on the command") and the bearer
  going away under a connected socket.
- The port closed between the CR and the LF of a line that opened a prompt (AT+QSSLSEND,
  AT+QSECWRITE): the next program's "\n..." Ctrl+Z is nothing; its own prompt takes a
  leading LF as data.
- Lines typed while a connectmode 1 open waits: the connection's first bytes after CONNECT.

- §2.1's remark at seclevel 2 against `openssl s_server -Verify 1`: the three slots, the
  client certificate seen by the server, AT+QSECDEL of the client certificate then -1.

BUGs found (strict xfail): the manual's own spelling of the §2.7-§2.9 test / read forms, with
a space after '+' ("AT+ QSSLRECV =?", "AT+ QSSLSTATE?" ...), is ERROR; §2.8's test answer
"+ QSSLRECV: ..." loses its stray space, which docs/behaviour.md allows only for "+ QSSLSEND".
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.peers.openssl import OpenSslServer
from emulator.tools.demo_peer import IOTTEST_RESPONSE
from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.test_adversarial_ml302_hostile_host_2 import (CTRL_Z, ERROR, OK, HeldHandshake, Rig,
                                                              at_state, checksum, written)
from tests.e2e.socket_support import conn_of

REQUEST = (b"GET https://www.iottest.work/test.html HTTP/1.1\r\n"
           b"Host: www.iottest.work\r\nConnection: keep-alive\r\n\r\n")


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    yield r
    r.close_all()


def xor16(data: bytes) -> str:
    """§2.2 written out again, independently of hostile_host_2.checksum: words of
    data[2i] << 8 | data[2i+1], an odd last byte as data[x] << 8 | 0x00."""
    value = 0
    for i in range(0, len(data) - 1, 2):
        value ^= (data[i] << 8) | data[i + 1]
    if len(data) % 2:
        value ^= data[-1] << 8
    return f"{value:04x}"


def echoed(line: str) -> bytes:
    return line.encode() + b"\r"


# == §3 against openssl s_server ==============================================================
def test_manual_section3_end_to_end_against_openssl_s_server(rig):
    pki = rig.pki
    server = OpenSslServer(["-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path),
                            "-cipher", "ALL:@SECLEVEL=0"])
    try:
        rig.emulator.router.add_map(HOST, 443, *server.address)
        rig.emulator.router.add_dns(HOST, HOST_IP)
        h = rig.host
        assert h.at("ATE1") == OK
        ca = pki.ca.cert_pem
        assert xor16(ca) == checksum(ca)
        h.write("AT+QSECDEL=0\r\n")
        assert h.read_until(OK) == echoed("AT+QSECDEL=0") + OK
        h.write("AT+QSECWRITE=0\r\n")
        assert h.read_until(b"> ") == echoed("AT+QSECWRITE=0") + b"\r\n> "
        h.write(ca + CTRL_Z)                                   # byte by byte, echoed
        want = ca + f"\r\n+QSECWRITE: {len(ca)},{xor16(ca)}\r\n\r\nOK\r\n".encode()
        assert h.read_until(b"\r\nOK\r\n", 20) == want
        for line, answer in (("AT+QSECREAD=0", f"\r\n+QSECREAD: 1,{xor16(ca)}\r\n\r\nOK\r\n".encode()),
                             ('AT+QSSLCFG="seclevel",0,1', OK),
                             ('AT+QSSLCFG="seclevel",0', b'\r\n+QSSLCFG: "seclevel",1\r\n\r\nOK\r\n'),
                             ('AT+QSSLOPEN=0,0,"www.iottest.work",443,0', OK)):
            h.write(line + "\r\n")
            assert h.read_until(b"\r\nOK\r\n", 10) == echoed(line) + answer
        assert h.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"
        h.write("AT+QSSLSEND=0\r\n")
        assert h.read_until(b"> ") == echoed("AT+QSSLSEND=0") + b"\r\n> "
        mark = server.mark()
        h.write(REQUEST + CTRL_Z)
        assert h.read_until(b"SEND OK\r\n", 20) == REQUEST + b"\r\nSEND OK\r\n"
        server.wait_for_output(re.escape(REQUEST), 10, since=mark)
        server.write(IOTTEST_RESPONSE)
        assert h.read_until(b'"recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
        time.sleep(0.3)                                        # s_server may hand it over in pieces
        h.write("AT+QSSLRECV=1,0,1460\r\n")
        got = h.read_until(b"\r\nOK\r\n", 20)
        assert got == (echoed("AT+QSSLRECV=1,0,1460")
                       + f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,434\r\n".encode()
                       + IOTTEST_RESPONSE + b"\r\n\r\nOK\r\n")
        h.write("AT+QSSLRECV=1,0,1460\r\n")                     # §2.8: no data, a bare OK
        assert h.read_until(b"\r\nOK\r\n") == echoed("AT+QSSLRECV=1,0,1460") + OK
        h.write("AT+QSSLSTATE\r\n")
        assert h.read_until(b"\r\nOK\r\n") == echoed("AT+QSSLSTATE") + rig.state({0: at_state("CONNECTED")})
        h.write("AT+QSSLCLOSE=0\r\n")
        assert h.read_until(b"0,CLOSE OK\r\n", 20) == echoed("AT+QSSLCLOSE=0") + OK + b"\r\n0,CLOSE OK\r\n"
        assert h.quiet_for(0.3) == b""                          # no "close" URC for the host's own close
        h.write("AT+QSSLSTATE\r\n")
        assert h.read_until(b"\r\nOK\r\n") == echoed("AT+QSSLSTATE") + rig.state(
            {0: at_state("CLOSED")}, "IP STATUS")
    finally:
        server.stop()


def test_peer_close_is_the_close_urc_and_the_data_stay_readable_openssl_peer(rig):
    """§2.10: "+QSSLURC: "close",<ssid>" when the connection ends not by the host; s_server
    told to end the session ("Q") after its answer: "recv", then "close", the bytes readable
    once, REMOTE CLOSING and -2 until AT+QSSLCLOSE, which answers as §2.6."""
    pki = rig.pki
    server = OpenSslServer(["-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path),
                            "-cipher", "ALL:@SECLEVEL=0"])
    try:
        rig.emulator.router.add_map(HOST, 443, *server.address)
        rig.emulator.router.add_dns(HOST, HOST_IP)
        rig.open(2)
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(IOTTEST_RESPONSE)
        h = rig.host
        assert h.read_until(b'"recv",1,2\r\n', 20) == b'\r\n+QSSLURC: "recv",1,2\r\n'
        server.write(b"Q\n")                                   # s_server: close the connection
        assert h.read_until(b'"close",2\r\n', 20) == b'\r\n+QSSLURC: "close",2\r\n'
        assert rig.recv_all(2, 434) == IOTTEST_RESPONSE
        assert h.at("AT+QSSLSTATE") == rig.state({2: at_state("REMOTE CLOSING")})
        assert h.at(f'AT+QSSLOPEN=2,0,"{HOST}",443,0') == OK
        assert h.read_until(b"+QSSLOPEN: 2,-2\r\n", 10) == b"\r\n+QSSLOPEN: 2,-2\r\n"
        assert h.at("AT+QSSLSEND=2") == ERROR
        rig.close(2)
        assert h.quiet_for(0.3) == b""
    finally:
        server.stop()


# == every form of §2.1-§2.9 in one write =====================================================
def ans(*lines: str, final: str = "OK") -> bytes:
    text = "".join(f"\r\n{line}" for line in lines) + ("\r\n" if lines else "")
    return text.encode() + f"\r\n{final}\r\n".encode()


STATE_IDLE = ("+QSSLSTATE: \"IP STATUS\"",) + tuple(f'+QSSLSTATE: {i},"TCP","",0,"INITIAL",1' for i in range(6))
FORMS = [
    # §2.1 test form and "ctxindex" (defaults: sslversion 4, seclevel 0, 0XFFFF, the fixed paths)
    ("AT+QSSLCFG=?", ans('+QSSLCFG: "type",(0-5),"value"')),
    ('AT+QSSLCFG="ctxindex",3', ans('+QSSLCFG: 3,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"')),
    ('AT+QSSLCFG="ctxindex",6', ans(final="ERROR")),
    # sslversion 0-4
    ('AT+QSSLCFG="sslversion",3', ans('+QSSLCFG: "sslversion",4')),
    ('AT+QSSLCFG="sslversion",3,0', ans()),
    ('AT+QSSLCFG="sslversion",3,5', ans(final="ERROR")),
    ('AT+QSSLCFG="sslversion",3', ans('+QSSLCFG: "sslversion",0')),
    # ciphersuite: the six of the table joined by ':', 0XFFFF the default
    ('AT+QSSLCFG="ciphersuite",3,"0X003D:0X002F"', ans()),
    ('AT+QSSLCFG="ciphersuite",3,"0X009C"', ans(final="ERROR")),
    ('AT+QSSLCFG="ciphersuite",3', ans('+QSSLCFG: "ciphersuite",0X003D:0X002F')),
    # seclevel 0-2
    ('AT+QSSLCFG="seclevel",3,2', ans()),
    ('AT+QSSLCFG="seclevel",3,3', ans(final="ERROR")),
    ('AT+QSSLCFG="seclevel",3', ans('+QSSLCFG: "seclevel",2')),
    # the three paths (clientkey's query names "clientkey": docs' decision)
    ('AT+QSSLCFG="cacert",3', ans('+QSSLCFG: "cacert","/caCrt.pem"')),
    ('AT+QSSLCFG="clientcert",3', ans('+QSSLCFG: "clientcert","/clientCrt.pem"')),
    ('AT+QSSLCFG="clientkey",3', ans('+QSSLCFG: "clientkey","/privateKey.pem"')),
    ('AT+QSSLCFG="ctxindex",3', ans('+QSSLCFG: 3,0,2,0X003D:0X002F,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"')),
    # the context-less globals: ignorertctime 0-1 (default 1), https 0-1, httpsctxi 0-5
    ('AT+QSSLCFG="ignorertctime"', ans('+QSSLCFG: "ignorertctime",1')),
    ('AT+QSSLCFG="ignorertctime",2', ans(final="ERROR")),
    ('AT+QSSLCFG="ignorertctime",0', ans()),
    ('AT+QSSLCFG="ignorertctime"', ans('+QSSLCFG: "ignorertctime",0')),
    ('AT+QSSLCFG="https"', ans('+QSSLCFG: "https",0')),
    ('AT+QSSLCFG="https",2', ans(final="ERROR")),
    ('AT+QSSLCFG="https",1', ans()),
    ('AT+QSSLCFG="https"', ans('+QSSLCFG: "https",1')),
    ('AT+QSSLCFG="httpsctxi"', ans('+QSSLCFG: "httpsctxi",0')),
    ('AT+QSSLCFG="httpsctxi",6', ans(final="ERROR")),
    ('AT+QSSLCFG="httpsctxi",5', ans()),
    ('AT+QSSLCFG="httpsctxi"', ans('+QSSLCFG: "httpsctxi",5')),
    # EC2x-only options are no ML302 option
    ('AT+QSSLCFG="ignorelocaltime",3,0', ans(final="ERROR")),
    ('AT+QSSLCFG="sni",3,1', ans(final="ERROR")),
    # §2.2-§2.4 test forms (the manual's spacing), their write forms' ranges
    ("AT+QSECWRITE=?", ans("+QSECWRITE:(0~2)")),
    ("AT+QSECREAD=?", ans("+QSECREAD: (0~2)")),
    ("AT+QSECDEL=?", ans("+QSECDEL:(0~2)")),
    ("AT+QSECWRITE=3", ans(final="+CME ERROR: 50")),
    ("AT+QSECREAD=3", ans(final="+CME ERROR: 50")),
    ("AT+QSECDEL=3", ans(final="+CME ERROR: 50")),
    ("AT+QSECREAD=1", ans(final="+CME ERROR: 22")),
    ("AT+QSECDEL=1", ans()),
    # §2.5-§2.9 test and read forms
    ("AT+QSSLOPEN=?", ans("+QSSLOPEN: <ssid>,<ctxindex>,<ipaddr/domainname>,<port>,<connectmode>[,<timeout>]")),
    ("AT+QSSLOPEN?", ans()),
    ("AT+QSSLCLOSE=?", ans("+QSSLCLOSE: (0-5)[,(0,1)]")),
    ("AT+QSSLCLOSE?", ans()),
    ("AT+QSSLSEND=?", ans("+QSSLSEND: (0-5)")),
    ("AT+QSSLSEND?", ans()),
    ("AT+QSSLRECV=?", ans("+QSSLRECV: (0,1),(0-5),(1,1500)")),
    ("AT+QSSLRECV?", ans()),
    ("AT+QSSLSTATE=?", ans()),
    ("AT+QSSLSTATE?", ans()),
    ("AT+QSSLSTATE", ans(*STATE_IDLE)),
    # idle sockets: §2.6 closes anyway, <closetype> 0-1; nothing to send or read
    ("AT+QSSLCLOSE=5,1", ans() + b"\r\n5,CLOSE OK\r\n"),
    ("AT+QSSLCLOSE=5,2", ans(final="ERROR")),
    ("AT+QSSLCLOSE=6", ans(final="ERROR")),
    ("AT+QSSLSEND=5", ans(final="ERROR")),
    ("AT+QSSLRECV=1,5,1460", ans(final="ERROR")),
    ("AT+QSSLRECV=1,5,0", ans(final="ERROR")),
    # other contexts untouched
    ('AT+QSSLCFG="ctxindex",0', ans('+QSSLCFG: 0,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"')),
]


def test_every_form_of_the_manual_pipelined_in_one_write(rig):
    """All of FORMS written in one go (CR LF, one byte per write), answers read 1/3/7/4095 at a
    time: each line's answer in order, byte for byte, nothing between them."""
    h = rig.host
    h.write("".join(line + "\r\n" for line, _ in FORMS))
    want = b"".join(answer for _, answer in FORMS)
    got = h.read_exactly(len(want), 20)
    for (line, answer), start in zip(FORMS, _offsets(FORMS)):
        assert got[start:start + len(answer)] == answer, line
    assert got == want
    assert h.quiet_for(0.3) == b""
    rig.alive()


def _offsets(forms):
    at = 0
    for _, answer in forms:
        yield at
        at += len(answer)


# == the port closed mid-line ==================================================================
def test_half_typed_line_dies_with_the_host_that_typed_it(rig):
    """Echo on (the ML302's default).  A program types "AT+QSECDE" and closes the port; the next
    one types "L=0" CR LF: the two halves never make AT+QSECDEL=0 (the slot survives) and the
    echo the first program left unread never reaches the second.  The same with the whole
    line but its CR: the next program's CR LF runs nothing."""
    data = b"-----BEGIN CERTIFICATE-----\nhalf typed\n"
    assert rig.secwrite(0, data) == written(data)
    assert rig.host.at("ATE1") == OK                       # (typed under ATE0: no echo)
    for first, rest in ((b"AT+QSECDE", b"L=0\r\n"), (b"AT+QSECDEL=0", b"\r\n")):
        rig.host.write(first)
        time.sleep(0.2)                       # (the echo waits, unread)
        h = rig.reopen()
        h.write(rest)
        assert h.quiet_for(0.5) == rest[:-1]  # the echo of what this program typed, no answer
        h.write("AT+QSECREAD=0\r\n")
        assert h.read_until(b"\r\nOK\r\n") == (echoed("AT+QSECREAD=0")
                                               + f"\r\n+QSECREAD: 1,{xor16(data)}\r\n\r\nOK\r\n".encode())


# == store lines chained with ';' ================================================================
def test_store_commands_chained_on_one_line(rig):
    """A data prompt ends its command line (docs): after AT+QSECDEL=0;+QSECWRITE=0 the prompt
    takes the upload; the commands after +QSECWRITE on its line neither run nor become data;
    an error before the prompt ends the line with no prompt at all."""
    h = rig.host
    assert rig.secwrite(0, b"old") == written(b"old")
    h.write("AT+QSECDEL=0;+QSECWRITE=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"new" + CTRL_Z)
    assert h.read_until(b"\r\nOK\r\n") == written(b"new")
    h.write("AT+QSECWRITE=1;+QSECDEL=0;+QSECREAD=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"abc" + CTRL_Z)
    assert h.read_until(b"\r\nOK\r\n") == written(b"abc")        # not ";+QSECDEL=0..." + abc
    assert h.quiet_for(0.3) == b""
    assert h.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{xor16(b'new')}\r\n\r\nOK\r\n".encode()
    h.write("AT+QSECREAD=2;+QSECWRITE=2\r\n")                  # empty slot 2: 22, no prompt
    assert h.read_until(b"22\r\n") == b"\r\n+CME ERROR: 22\r\n"
    h.write("AT+QSECWRITE=1;+QSECWRITE=2\r\n")                 # filled slot 1: 3, no prompt
    assert h.read_until(b"3\r\n") == b"\r\n+CME ERROR: 3\r\n"
    assert h.quiet_for(0.3) == b""
    h.write(b"xyz" + CTRL_Z)                                 # (outside any line: dropped)
    rig.alive()
    assert h.at("AT+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"
    assert h.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{xor16(b'abc')}\r\n\r\nOK\r\n".encode()


# == commands while an open waits in its handshake ==============================================
def test_commands_pipelined_while_a_buffer_mode_open_waits_in_its_handshake(rig):
    held = HeldHandshake(rig)
    h = rig.host
    try:
        h.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,0\r\n')
        assert h.read_until(OK) == OK
        assert held.accepted.wait(10)
        lines = [("AT+QSSLSEND=0", ERROR),
                 ("AT+QSSLRECV=1,0,1460", ERROR),
                 (f'AT+QSSLOPEN=0,1,"{HOST}",443,0', OK + b"\r\n+QSSLOPEN: 0,-2\r\n"),
                 ("AT+QSSLSTATE", rig.state({0: at_state("CONNECTING")})),
                 ("AT+QSECWRITE=2", b"\r\n> ")]
        h.write("".join(line + "\r\n" for line, _ in lines))
        for line, answer in lines:
            assert h.read_until(answer, 10) == answer, line
        h.write(b"key" + CTRL_Z)
        assert h.read_until(b"\r\nOK\r\n") == written(b"key")
        assert h.quiet_for(0.3) == b""                       # no +QSSLOPEN: 0,0 yet
        tls = held.release()
        assert h.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert h.at("AT+QSSLSTATE") == rig.state({0: at_state("CONNECTED")})
        assert rig.send(0, b"after") == b"\r\nSEND OK\r\n"
        tls.settimeout(10)
        assert tls.recv(100) == b"after"
        held.closed_by_host(rig, 0)
        assert b"+QSSLOPEN: 0,0" not in h.quiet_for(0.3)
        assert h.transcript.count(b"+QSSLOPEN: 0,0") == 1
    finally:
        held.close()


# == <cid> of AT+QSSLRECV, the bearer going away =================================================
def test_recv_cid_is_reserved_and_the_bearer_going_away_under_a_socket(rig):
    """§2.8: <cid> 0-1 has no effect (0 reads as 1 does; 2 is out of its range: ERROR, nothing
    read).  AT+CGACT=0,1 under a connected socket: "close" (§2.10: not closed by the host),
    "PDP DEACT" with REMOTE CLOSING (docs), what came before readable once, SEND ERROR;
    AT+QSSLCLOSE as §2.6, then "IP INITIAL" and the socket CLOSED."""
    srv = rig.server()
    rig.open(1)
    conn = conn_of(srv)
    h = rig.host
    conn.send(b"0123456789")
    assert h.read_until(b'"recv",1,1\r\n', 20) == b'\r\n+QSSLURC: "recv",1,1\r\n'
    time.sleep(0.2)
    assert h.at("AT+QSSLRECV=2,1,4") == ERROR
    h.write("AT+QSSLRECV=0,1,4\r\n")
    assert rig.recv_answer() == b"0123"
    h.write("AT+QSSLRECV=1,1,4\r\n")
    assert rig.recv_answer() == b"4567"
    assert h.at("AT+CGACT=0,1") == OK
    assert h.read_until(b'"close",1\r\n', 10) == b'\r\n+QSSLURC: "close",1\r\n'
    assert h.at("AT+QSSLSTATE") == rig.state({1: at_state("REMOTE CLOSING")}, "PDP DEACT")
    assert h.at("AT+QSSLSEND=1") == ERROR
    h.write("AT+QSSLRECV=0,1,1500\r\n")
    assert rig.recv_answer() == b"89"
    assert h.at("AT+QSSLRECV=0,1,1500") == OK
    rig.close(1)
    assert h.at("AT+QSSLSTATE") == rig.state({1: at_state("CLOSED")}, "IP INITIAL")
    assert h.at("AT+QSSLRECV=1,1,1500") == ERROR
    assert h.quiet_for(0.3) == b""


# == the manual's own spelling of the test and read forms =====================================
MANUAL_SPELLING = [
    # (§, the command exactly as the syntax table prints it, the answer its unspaced form gets)
    ("2.7", "AT+ QSSLSEND?", ans()),
    ("2.8", "AT+ QSSLRECV =?", ans("+QSSLRECV: (0,1),(0-5),(1,1500)")),
    ("2.8", "AT+ QSSLRECV?", ans()),
    ("2.9", "AT+ QSSLSTATE =?", ans()),
    ("2.9", "AT+ QSSLSTATE?", ans()),
]


def test_unspaced_forms_answer_as_the_manual_prints_them(rig):
    """The control for the test below: the same forms without the space after '+', and with
    the spaces V.250 5.1 lets a host put around '=' and '?' and before '+'."""
    for _, line, answer in MANUAL_SPELLING:
        assert rig.host.at(line.replace("+ ", "+")) == answer, line
        assert rig.host.at(line.replace("AT+ ", "AT +")) == answer, line


def test_the_manuals_own_spelling_of_the_test_and_read_forms_is_error(rig):
    """The syntax tables print AT+ QSSLSEND?, AT+ QSSLRECV =?, AT+ QSSLRECV?, AT+ QSSLSTATE =?,
    AT+ QSSLSTATE? (a space after '+', a typesetting slip): a space inside a command name is
    ERROR (docs/behaviour.md, ML302 decisions; Quectel's rule): the rest of the line does not run."""
    for _, line, _ in MANUAL_SPELLING:
        assert rig.host.at(line + ";+QSSLSTATE=?") == b"\r\nERROR\r\n", line
        assert rig.host.at(line.replace("+ ", "+")) != b"\r\nERROR\r\n", line


# == the port closed between a prompt line's CR and its LF ======================================
def test_port_closed_between_the_cr_and_the_lf_of_a_prompt_line(rig):
    """A program writes AT+QSSLSEND=0 CR (its LF never comes), sees "> " and closes the port.
    The next program's "\\nhello" Ctrl+Z is no data (the prompt went with the first program:
    command state, bytes outside a command line dropped); its own AT+QSSLSEND=0 CR LF then
    "\\nhi" Ctrl+Z sends exactly "\\nhi" (its LF ended its line, the next LF is data).  The
    same for AT+QSECWRITE: nothing stored from the first program."""
    srv = rig.server(mode="sink")
    rig.open(0)
    conn = conn_of(srv)
    h = rig.host
    h.write(b"AT+QSSLSEND=0\r")
    assert h.read_until(b"> ") == b"\r\n> "
    h = rig.reopen()
    h.write(b"\nhello" + CTRL_Z)
    assert h.quiet_for(0.4) == b""
    rig.alive()
    h.write(b"AT+QSSLSEND=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"\nhi" + CTRL_Z)
    assert h.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    time.sleep(0.3)
    assert bytes(conn.received) == b"\nhi"
    h.write(b"AT+QSECWRITE=1\r")
    assert h.read_until(b"> ") == b"\r\n> "
    h = rig.reopen()
    h.write(b"\nkey" + CTRL_Z)
    assert h.quiet_for(0.4) == b""
    assert h.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    h.write(b"AT+QSECWRITE=1\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"\nkey" + CTRL_Z)
    assert h.read_until(b"\r\nOK\r\n") == written(b"\nkey")
    assert bytes(conn.received) == b"\nhi"
    rig.close(0)


# == a transparent open pending, the host typing on ================================================
def test_lines_typed_while_a_transparent_open_waits_are_data_after_connect(rig):
    """connectmode 1 (§2.5): the port waits for the handshake (docs: host input waits behind a
    pending command).  A host that types AT+QSSLSTATE and AT+QSSLCLOSE=0 meanwhile gets no
    answer to them: after CONNECT they are the connection's first bytes, in order, once."""
    held = HeldHandshake(rig)
    h = rig.host
    try:
        h.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r\n')
        assert held.accepted.wait(10)
        h.write(b"AT+QSSLSTATE\r\nAT+QSSLCLOSE=0\r\n")
        assert h.quiet_for(0.4) == b""
        tls = held.release()
        assert h.read_until(b"CONNECT\r\n", 20) == b"\r\nCONNECT\r\n"
        tls.settimeout(10)
        got = b""
        while len(got) < 30:
            got += tls.recv(100)
        assert got == b"AT+QSSLSTATE\r\nAT+QSSLCLOSE=0\r\n"
        tls.sendall(b"pong")
        assert h.read_exactly(4, 10) == b"pong"
        assert h.quiet_for(0.3) == b""
        time.sleep(1.2)
        h.write(b"+++")
        assert h.read_until(OK, 10) == OK
        assert h.at("AT+QSSLSTATE") == rig.state({0: at_state("CONNECTED")})
        held.closed_by_host(rig, 0)
    finally:
        held.close()


# == prompt lines and their data in one write ===================================================
def test_prompt_lines_pipelined_whole_with_data_that_start_with_line_ends(rig):
    """A host that writes each command and its data in one write, never waiting for "> ":
    the LF read with the line is the line's, every byte after it is data -- a second LF, a
    CR LF, a CR after the line's CR; ESC / Ctrl+Z at once cancel (OK) / are an empty send
    (ERROR), and the line behind them runs."""
    srv = rig.server(mode="sink")
    rig.open(0)
    conn = conn_of(srv)
    h = rig.host
    expected = b""
    for whole, data in ((b"AT+QSSLSEND=0\r\n", b"\nhello"), (b"AT+QSSLSEND=0\r\n", b"\r\nhello"),
                        (b"AT+QSSLSEND=0\r", b"\r\nX")):
        h.whole(whole + data + CTRL_Z)
        assert h.read_until(b"SEND OK\r\n", 10) == b"\r\n> \r\nSEND OK\r\n"
        expected += data
    h.whole(b"AT+QSECWRITE=1\r\n\nab" + CTRL_Z)
    assert h.read_until(b"\r\nOK\r\n", 10) == b"\r\n> " + written(b"\nab")
    h.whole(b"AT+QSSLSEND=0\r\n" + b"\x1bAT\r\n")
    assert h.read_until(OK + OK, 10) == b"\r\n> " + OK + OK
    h.whole(b"AT+QSSLSEND=0\r\n" + CTRL_Z + b"AT\r\n")
    assert h.read_until(ERROR + OK, 10) == b"\r\n> " + ERROR + OK
    h.whole(b"AT+QSECWRITE=2\r\n\x1bAT+QSECREAD=2\r\n")
    assert h.read_until(b"22\r\n", 10) == b"\r\n> " + OK + b"\r\n+CME ERROR: 22\r\n"
    time.sleep(0.3)
    assert bytes(conn.received) == expected
    rig.close(0)


def test_qsslrecv_test_form_without_section_2_8s_stray_space(rig):
    """§2.8 prints '+ QSSLRECV: (0,1),(0-5),(1,1500)' (a stray space, as §2.7's '+ QSSLSEND'):
    answered as every other test form names its command (docs/behaviour.md, ML302)."""
    assert rig.host.at("AT+QSSLRECV=?") == ans("+QSSLRECV: (0,1),(0-5),(1,1500)")


# == §2.1's remark, seclevel 2, against openssl s_server -Verify ===============================
def test_seclevel_2_with_all_three_slots_against_openssl_s_server_requiring_a_client_cert(rig):
    """§2.1 remark: server and client authentication need the client certificate, the CA and
    the client key, at the fixed paths; §2.1's own example AT+QSSLCFG="seclevel",0,2.  Written
    byte by byte with §2.2's checksums; `openssl s_server -Verify 1` sees the uploaded client
    certificate and data flows both ways.  Then AT+QSECDEL=1 (§2.4): the next open is -1."""
    pki = rig.pki
    server = OpenSslServer(["-cert", str(pki.server.chain_path), "-key", str(pki.server.key_path),
                            "-cipher", "ALL:@SECLEVEL=0", "-Verify", "1", "-verify_return_error",
                            "-CAfile", str(pki.ca.cert_path)])
    try:
        rig.emulator.router.add_map(HOST, 443, *server.address)
        rig.emulator.router.add_dns(HOST, HOST_IP)
        h = rig.host
        for slot, data in ((0, pki.ca.cert_pem), (1, pki.client.cert_pem), (2, pki.client.key_pem)):
            assert rig.secwrite(slot, data) == f"\r\n+QSECWRITE: {len(data)},{xor16(data)}\r\n\r\nOK\r\n".encode()
        h.write("AT+QSECREAD=0\r\nAT+QSECREAD=1\r\nAT+QSECREAD=2\r\n")
        want = b"".join(f"\r\n+QSECREAD: 1,{xor16(d)}\r\n\r\nOK\r\n".encode()
                        for d in (pki.ca.cert_pem, pki.client.cert_pem, pki.client.key_pem))
        assert h.read_exactly(len(want), 10) == want
        assert h.at('AT+QSSLCFG="seclevel",0,2') == OK              # §2.1's example
        rig.open(0)
        server.wait_for_output(rb"subject=.*modem client", 10, stream="stdout")
        mark = server.mark()
        assert rig.send(0, b"from the module") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"from the module", 10, since=mark)
        server.write(b"from s_server")
        assert h.read_until(b'"recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
        time.sleep(0.2)
        assert rig.recv_all(0, 13) == b"from s_server"
        server.write(b"q\n")                                     # s_server ends this session
        assert h.read_until(b'"close",0\r\n', 20) == b'\r\n+QSSLURC: "close",0\r\n'
        rig.close(0)
        assert h.at("AT+QSECDEL=1") == OK
        rig.open(1, code=-1)
        assert h.at("AT+QSSLSTATE") == rig.state({0: at_state("CLOSED"), 1: at_state("CLOSED", "", 443)},
                                                 "IP STATUS")
    finally:
        server.stop()
