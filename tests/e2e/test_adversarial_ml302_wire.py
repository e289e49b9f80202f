"""Adversarial round on the ML302's wire bytes (OneMO ML302 SSL AT manual, §2.1-§2.10 and §3),
aimed at what the other ML302 files (test_ml302_ssl.py, test_stateful_ml302.py,
test_ssl_options_ml302.py, test_adversarial_ml302_{chaos,drivers,hostile_host,paths,store}.py)
leave out:

- V.250 command-line handling of the ML302's own commands: lower and mixed case command and
  option names, an unquoted option name, spaces around every separator, leading zeros up to
  the 12-character bound, ';' concatenation -- AT+QSSLCFG writes and queries in one line, a
  data prompt (AT+QSECWRITE, AT+QSSLSEND) ending a line whose rest never runs, a refused
  prompt ending the line before a later AT+QSECDEL, two AT+QSSLRECV answers in one line (and
  one followed by an error: the data already printed are not read again), AT+QSSLOPEN's URC
  after the line's final result even when a later command of the line failed, two
  AT+QSSLCLOSE in one line.
- §2.2's XOR checksum computed here independently (big-endian 16-bit words, an odd last byte
  as the HIGH byte of a word padded with 0x00), against the two mistakes a host makes
  (little-endian words, padding on the wrong side); sizes 1, 2, 3, 16383 and 16384 (the
  limit, docs/behaviour.md "ML302 certificate store") uploaded in odd chunks, 16385 refused
  with +CME ERROR: 20 and nothing stored; AT+QSECREAD agrees with AT+QSECWRITE every time.
- AT+QSSLRECV (§2.8) asked for less, exactly, more, 0 and 1501 bytes of a payload full of
  look-alikes of the module's own framing ("\\r\\nOK\\r\\n", "+QSSLURC: ..."): each answer's
  <actuallength> is what it carries, the invalid lengths consume nothing, one "recv" URC per
  arrival into an empty buffer, a bare OK once it is empty (§2.8 "如果无数据，直接返回 OK").
- A byte-at-a-time CR LF host with echo on (ATE1) typing protocol look-alikes into the
  AT+QSSLSEND prompt: echoed exactly, sent exactly, nothing runs.
- A UART (`--uart`, no hang-up line) where one program leaves in the middle of an
  AT+QSECWRITE or AT+QSSLSEND data phase and the next program finishes it: the data phase
  spans both (docs/behaviour.md "Command line and result codes", `--uart`).
- ATS3 / ATS4 changed: the ML302's prompt, +QSECWRITE / +QSECREAD lines, URCs, the
  +QSSLRECV block and `<ssid>,CLOSE OK` are framed with S3 S4 (V.250 6.2.1/6.2.2).
- A server that closes while its data are still unread and the host is in the AT+QSSLSEND
  prompt typing byte by byte: the data stay readable once, the send is ERROR, the URC
  follows the answer; AT+QSSLOPEN on the ssid is -2 until AT+QSSLCLOSE.  Unread data of a
  closed ssid never reach the ssid's next connection.
- Files that do not exist: an empty CA slot, a cacert path naming no slot, empty client
  slots at seclevel 2 -- "+QSSLOPEN: <ssid>,-1" before any TCP connection, the ssid free
  again at once; the manual's " /caCrt.pem" (with its stray blank) works.
- `A/` repeating AT+QSSLRECV, AT+QSSLSEND (an LF right after it is data) and AT+QSECWRITE
  (its slot now filled: +CME ERROR: 3); S5 (backspace) editing a length and an option name.
- A host that writes command, data (starting with LF), Ctrl+Z and another command in one
  write and closes without reading: stored / sent once, no answer left for the next host.
- --uart: the next program's first-byte LF at an AT+QSECWRITE prompt the departed program
  opened is data (docs/behaviour.md's late-LF table).

No test here found the emulator departing from the manual or docs/behaviour.md.
"""
from __future__ import annotations

import hashlib
import re
import time

import pytest

from emulator.testing.host import Host
from emulator.sockets.service import ssl_service
from emulator.testing.peers import default_pki
from tests.e2e.ml302_support import HOST, HOST_IP, routed_servers
from tests.e2e.socket_support import wait_for

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"


# -- helpers -------------------------------------------------------------------------------
def manual_checksum(data: bytes) -> int:
    """§2.2, written from the manual's formula, word by word (not emulator code):
    (d[0]<<8 | d[1]) ^ (d[2]<<8 | d[3]) ^ ... ^ (d[n-1]<<8 | 0x00)."""
    value = 0
    for i in range(0, len(data), 2):
        hi = data[i]
        lo = data[i + 1] if i + 1 < len(data) else 0x00
        value ^= (hi << 8) | lo
    return value


def little_endian_mistake(data: bytes) -> int:
    value = 0
    for i in range(0, len(data), 2):
        lo = data[i]
        hi = data[i + 1] if i + 1 < len(data) else 0x00
        value ^= (hi << 8) | lo
    return value


def low_pad_mistake(data: bytes) -> int:
    """An odd last byte taken as the LOW byte of its word."""
    value = 0
    for i in range(0, len(data) - 1, 2):
        value ^= (data[i] << 8) | data[i + 1]
    if len(data) % 2:
        value ^= data[-1]
    return value


def written(data: bytes) -> bytes:
    return f"\r\n+QSECWRITE: {len(data)},{manual_checksum(data):04x}\r\n\r\nOK\r\n".encode()


def read_back(data: bytes, good: int = 1) -> bytes:
    return f"\r\n+QSECREAD: {good},{manual_checksum(data):04x}\r\n\r\nOK\r\n".encode()


def dribble(host, data: bytes) -> None:
    """One byte per write(), as firmware that flushes per byte."""
    for i in range(len(data)):
        host.write(data[i:i + 1])


def chunks(host, data: bytes, sizes=(1, 7, 97, 3, 1024, 13)) -> None:
    """Odd-sized writes, cycling through `sizes`."""
    i = k = 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        host.write(data[i:i + n])
        i += n
        k += 1


def secwrite(host, slot: int, data: bytes, write=None) -> bytes:
    host.write(f"AT+QSECWRITE={slot}\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    (write or host.write)(data + CTRL_Z)
    return host.read_until(re.compile(rb"OK\r\n|ERROR[^\r]*\r\n"), timeout=20)


def open_ssl(host, ssid: int = 0, code: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{HOST}",443,0') == OK
    urc = f"\r\n+QSSLOPEN: {ssid},{code}\r\n".encode()
    assert host.read_until(urc, timeout=20) == urc


def close_ssl(host, ssid: int = 0) -> None:
    host.write(f"AT+QSSLCLOSE={ssid}\r")
    expected = f"\r\nOK\r\n\r\n{ssid},CLOSE OK\r\n".encode()
    assert host.read_until(b"CLOSE OK\r\n", timeout=20) == expected


def recv_urc(ssid: int) -> bytes:
    return f'\r\n+QSSLURC: "recv",1,{ssid}\r\n'.encode()


def recv_block(data: bytes) -> bytes:
    """§2.8's answer carrying `data` (the manual's §3 framing: header, CR LF, data, then OK)."""
    return f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,{len(data)}\r\n".encode() + data + b"\r\n"


def read_recv(host, line: str, timeout: float = 20) -> bytes:
    """One AT+QSSLRECV read as a careful host does it: the header's <actuallength>, then that
    many bytes (the data may hold anything, "\r\nOK\r\n" included), then the trailer.
    Returns the whole answer; a bare OK when no data wait."""
    host.write(line.encode() + b"\r")
    head = host.read_until(re.compile(rb"\r\n(?:OK|ERROR)\r\n|\r\n\+QSSLRECV: [^\r]*,TCP,(\d+)\r\n"), timeout)
    m = re.search(rb",TCP,(\d+)\r\n$", head)
    if not m:
        return head
    data = host.read_exactly(int(m.group(1)), timeout)
    return head + data + host.read_until(b"\r\n\r\nOK\r\n", timeout)


def state_line(ssid: int, status: str, ip: str = HOST_IP, port: int = 443) -> bytes:
    return f'+QSSLSTATE: {ssid},"TCP","{ip}",{port},"{status}",1\r\n'.encode()


def state_answer(head: str, socks: dict[int, str]) -> bytes:
    body = f'+QSSLSTATE: "{head}"\r\n'.encode()
    for ssid in range(6):
        body += state_line(ssid, socks[ssid]) if ssid in socks else state_line(ssid, "INITIAL", "", 0)
    return b"\r\n" + body + OK


def reopen(host: Host, path: str) -> Host:
    host.close()
    time.sleep(0.3)          # a close and reopen in the same instant is no close at all
    return Host(path)


@pytest.fixture(scope="module")
def pki():
    return default_pki()


@pytest.fixture
def server(pki, emulator):
    """server(**kwargs) -> TlsServer routed as www.iottest.work:443 (DNS 106.12.79.254)."""
    yield from routed_servers(emulator, pki.server, mode="sink", ciphers="DEFAULT:@SECLEVEL=0")


@pytest.fixture
def ml(ml302_strict):
    host, _, port = ml302_strict
    return host, port


# -- AT+QSSLCFG through V.250's command-line rules -----------------------------------------
@pytest.mark.parametrize("line, answer", [
    # lower-case command, mixed-case option: the query names the option as the manual does
    ('at+qsslcfg="SecLevel",2', b'\r\n+QSSLCFG: "seclevel",0\r\n\r\nOK\r\n'),
    # an unquoted option name (string parameters are taken unquoted, docs)
    ("AT+QSSLCFG=sslversion,2", b'\r\n+QSSLCFG: "sslversion",4\r\n\r\nOK\r\n'),
    # spaces around every separator (V.250 5.1)
    ('AT+QSSLCFG = "cacert" , 2', b'\r\n+QSSLCFG: "cacert","/caCrt.pem"\r\n\r\nOK\r\n'),
    # leading zeros: 12 characters at most
    ('AT+QSSLCFG="clientkey",000000000002', b'\r\n+QSSLCFG: "clientkey","/privateKey.pem"\r\n\r\nOK\r\n'),
    ('AT+QSSLCFG="clientkey",0000000000002', ERROR),
    # the global options take no <ctxindex>: a second number is a value
    ('aT+qSsLcFg="IGNORERTCTIME"', b'\r\n+QSSLCFG: "ignorertctime",1\r\n\r\nOK\r\n'),
    ('AT+QSSLCFG="httpsctxi" ', b'\r\n+QSSLCFG: "httpsctxi",0\r\n\r\nOK\r\n'),
    # a context outside 0-5, a negative one, none at all
    ('AT+QSSLCFG="seclevel",6', ERROR),
    ('AT+QSSLCFG="seclevel",-0', ERROR),
    ('AT+QSSLCFG="seclevel"', ERROR),
    # the option name quoted with a quote missing
    ('AT+QSSLCFG="seclevel,2', ERROR),
])
def test_qsslcfg_queries_in_every_spelling(ml, line, answer):
    host, _ = ml
    assert host.at(line) == answer
    assert host.at("AT") == OK                       # the interpreter carries on


def test_qsslcfg_writes_concatenated_apply_in_order_and_stop_at_the_first_error(ml):
    host, _ = ml
    ctx2 = b'\r\n+QSSLCFG: 2,%s,%s,%s,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'
    # three writes and the context's query in one lower-case line: one final OK
    assert host.at('at+qsslcfg="sslversion",2,3;+qsslcfg="SECLEVEL",2,1;'
                   '+QSSLCFG = "ciphersuite" , 2 , "0x002f:0X0035";+QSSLCFG="ctxindex",2') \
        == ctx2 % (b"3", b"1", b"0X002F:0X0035")
    # the same option written twice in a line: the last write wins
    assert host.at('AT+QSSLCFG="seclevel",2,0;+QSSLCFG="seclevel",2,2;+QSSLCFG="seclevel",2') \
        == b'\r\n+QSSLCFG: "seclevel",2\r\n\r\nOK\r\n'
    # an error in the middle: what came before it ran, what follows does not
    assert host.at('AT+QSSLCFG="sslversion",2,1;+QSSLCFG="seclevel",2,3;+QSSLCFG="sslversion",2,2') \
        == ERROR
    assert host.at('AT+QSSLCFG="ctxindex",2') == ctx2 % (b"1", b"2", b"0X002F:0X0035")
    # the other contexts never moved
    for ctx in (0, 1, 3, 4, 5):
        assert host.at(f'AT+QSSLCFG="ctxindex",{ctx}') == (
            f'\r\n+QSSLCFG: {ctx},4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'
            .encode())
    # a query's text is printed even when a later command of the line fails
    assert host.at('AT+QSSLCFG="sslversion",2;+QSSLCFG="sslversion",2,5') \
        == b'\r\n+QSSLCFG: "sslversion",1\r\n' + ERROR


# -- §2.2 / §2.3: the checksum, sizes, concatenation -----------------------------------------
def test_checksum_formula_against_the_hosts_usual_mistakes(ml):
    """Data chosen so that the manual's formula and both wrong ones disagree: a host that
    compares against a wrong formula sees a mismatch, so the module's value must be the
    manual's exactly."""
    host, _ = ml
    cases = [b"\x12\x34\x56", b"A", b"AB", b"ABAB", b"\x00\x01", b"\xff\x00\x00\xff\x80"]
    for slot, data in enumerate(cases[:3]):
        assert manual_checksum(data) != little_endian_mistake(data)
        assert secwrite(host, slot, data) == written(data)
        assert host.at(f"AT+QSECREAD={slot}") == read_back(data)
    # the pinned values: 0x1234 ^ 0x5600, 0x4100 (an odd byte is the HIGH byte), 0x4142
    assert manual_checksum(b"\x12\x34\x56") == 0x4434 != low_pad_mistake(b"\x12\x34\x56")
    assert written(b"\x12\x34\x56").endswith(b"+QSECWRITE: 3,4434\r\n\r\nOK\r\n")
    assert written(b"A") == b"\r\n+QSECWRITE: 1,4100\r\n\r\nOK\r\n"
    for data in cases[3:]:
        assert host.at("AT+QSECDEL=0") == OK
        assert secwrite(host, 0, data) == written(data)      # 0000, 0001: four digits
        assert host.at("AT+QSECREAD=0") == read_back(data)
    assert written(b"ABAB").endswith(b"4,0000\r\n\r\nOK\r\n")


@pytest.mark.parametrize("size", [16383, 16384])
def test_secwrite_sizes_up_to_the_limit_in_odd_chunks(ml, size):
    host, _ = ml
    data = bytes((i * 37 + 11) % 256 for i in range(size)).replace(b"\x1a", b"Z").replace(b"\x1b", b"[")
    assert secwrite(host, 2, data, write=lambda d: chunks(host, d)) == written(data)
    assert host.at("AT+QSECREAD=2") == read_back(data)


def test_secwrite_one_byte_over_the_limit_stores_nothing(ml):
    host, _ = ml
    data = b"x" * 16385
    assert secwrite(host, 1, data, write=lambda d: chunks(host, d)) == b"\r\n+CME ERROR: 20\r\n"
    assert host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    # the slot is still empty: a write of the limit goes in at once
    assert secwrite(host, 1, data[:16384]) == written(data[:16384])


def test_secwrite_prompt_ends_a_concatenated_lower_case_line(ml):
    """`at+qsecdel=0;+qsecwrite=0;+qsecread=0`: the delete runs, the prompt ends the line (its
    rest never runs, nor becomes data); the next line reads the new checksum."""
    host, _ = ml
    assert secwrite(host, 0, b"old") == written(b"old")
    host.write(b"at+qsecdel=0;+qsecwrite=0;+qsecread=0\r\n")
    assert host.read_until(b"> ") == b"\r\n> "          # no +QSECREAD before the prompt
    dribble(host, b"new-data" + CTRL_Z)
    assert host.read_until(b"OK\r\n") == written(b"new-data")
    assert host.at("at+qsecread=0") == read_back(b"new-data")


def test_refused_secwrite_ends_the_line_before_a_later_delete(ml):
    """A filled slot: AT+QSECWRITE is refused before its prompt (+CME ERROR: 3) and the
    AT+QSECDEL after it on the line does not run -- the slot keeps what it had."""
    host, _ = ml
    assert secwrite(host, 2, b"keep me") == written(b"keep me")
    assert host.at("AT+QSECWRITE=2;+QSECDEL=2") == b"\r\n+CME ERROR: 3\r\n"
    assert host.at("AT+QSECREAD=2") == read_back(b"keep me")
    assert host.at("AT+CMEE=0;+QSECWRITE=2;+QSECDEL=2") == ERROR
    assert host.at("AT+CMEE=1;+QSECREAD=2") == read_back(b"keep me")
    # the test forms of §2.2-§2.4 concatenated: one answer each, one OK
    assert host.at("AT+QSECWRITE=?;+QSECREAD=?;+QSECDEL=?") == (
        b"\r\n+QSECWRITE:(0~2)\r\n\r\n+QSECREAD: (0~2)\r\n\r\n+QSECDEL:(0~2)\r\n\r\nOK\r\n")


# -- §2.5 / §2.6: URCs against the final result of a concatenated line --------------------
def test_open_urc_follows_the_lines_final_result_even_after_an_error(ml, server):
    host, _ = ml
    server()
    # the STATE in the same line sees the socket connecting; the URC follows the line's OK
    host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,0;+QSSLSTATE\r'.encode())
    state = state_answer("IP PROCESSING", {0: "CONNECTING"})
    assert host.read_exactly(len(state), timeout=20) == state
    assert host.read_until(b"\r\n+QSSLOPEN: 0,0\r\n", timeout=20) == b"\r\n+QSSLOPEN: 0,0\r\n"
    # AT+QSSLSEND on the still-opening ssid fails the line; the open had started and reports
    host.write(f'AT+QSSLOPEN=1,0,"{HOST}",443,0;+QSSLSEND=1\r'.encode())
    expected = ERROR + b"\r\n+QSSLOPEN: 1,0\r\n"
    assert host.read_exactly(len(expected), timeout=20) == expected
    # two closes in one line: one OK, then each "<ssid>,CLOSE OK" in order
    host.write(b"AT+QSSLCLOSE=0;+QSSLCLOSE=1\r")
    expected = OK + b"\r\n0,CLOSE OK\r\n\r\n1,CLOSE OK\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected
    assert host.at("AT+QSSLSTATE") == state_answer("IP STATUS", {0: "CLOSED", 1: "CLOSED"})


# -- §2.8: AT+QSSLRECV lengths ----------------------------------------------------------------
def test_recv_less_exact_more_and_invalid_lengths(ml, server):
    host, _ = ml
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    lookalike = b'\r\nOK\r\n\r\n+QSSLURC: "recv",1,0\r\n\r\n+QSSLRECV: 1.2.3.4:443,TCP,9\r\n\r\nERROR\r\n'
    payload = (lookalike + bytes(range(256))) * 12          # 3000+ bytes, one TLS record
    payload = payload[:3001]
    conn.send(payload)
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    got = bytearray()
    # 0 and 1501 are out of §2.8's range: ERROR, nothing consumed
    for bad in ("1,0,0", "1,0,1501", "1,0,-1", "2,0,5", "1,6,5", "1,0"):
        assert host.at(f"AT+QSSLRECV={bad}") == ERROR, bad
    for ask in (1, 2, 1, 1460, 1500, 1500, 1500):
        answer = read_recv(host, f"AT+QSSLRECV=0,0,{ask}")
        want = payload[len(got):len(got) + ask]
        if not want:
            assert answer == OK                          # empty: a bare OK (§2.8)
            continue
        assert answer == recv_block(want) + OK, (ask, answer[:80])
        got += want
    assert bytes(got) == payload
    # no "recv" URC came for the partial reads; the next arrival into the now empty buffer
    # reports once
    conn.send(b"z")
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    assert host.at("AT+QSSLRECV=1,0,1500") == recv_block(b"z") + OK
    assert host.at("AT+QSSLRECV=1,0,1500") == OK
    assert recv_urc(0) not in host.transcript[host.transcript.find(recv_block(b"z")):]
    close_ssl(host)


def test_two_recvs_in_one_line_and_an_error_after_one_loses_nothing(ml, server):
    host, _ = ml
    srv = server()
    open_ssl(host, 0)
    open_ssl(host, 1)
    c0, c1 = srv.wait_handshake(0), srv.wait_handshake(1)
    c0.send(b"hello world")
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    c1.send(b"0123456789")
    assert host.read_until(recv_urc(1), timeout=20) == recv_urc(1)
    # two sockets' data in one line: two blocks, one OK
    assert host.at("AT+QSSLRECV=1,0,5;+QSSLRECV=0,1,3") == recv_block(b"hello") + recv_block(b"012") + OK
    # a read then a failing command: the block was printed, so its bytes are gone for good,
    # and the next read goes on right after them
    assert host.at("AT+QSSLRECV=1,0,1;+QSSLRECV=1,0,0") == recv_block(b" ") + ERROR
    assert host.at("AT+QSSLRECV=1,0,1500") == recv_block(b"world") + OK
    assert host.at("AT+QSSLRECV=1,1,1500") == recv_block(b"3456789") + OK
    host.write(b"AT+QSSLCLOSE=0;+QSSLCLOSE=1\r")
    expected = OK + b"\r\n0,CLOSE OK\r\n\r\n1,CLOSE OK\r\n"
    assert host.read_exactly(len(expected), timeout=30) == expected


# -- §2.7: a hostile typist in the send prompt ----------------------------------------------
def test_bytewise_echoing_host_types_protocol_lookalikes_into_the_send_prompt(ml, server):
    host, _ = ml
    srv = server()
    open_ssl(host)
    srv.wait_handshake()
    assert host.at("ATE1") == OK                     # (echo starts after this line)
    data = (b"AT+QSSLCLOSE=0\r\n+++\r\nOK\r\nSEND OK\r\n\x00\xff\x80at+qsecdel=0\r"
            b"AT+QSSLSEND=0\r\n> " + bytes(range(0x20)).replace(b"\x1a", b"").replace(b"\x1b", b""))
    # (CR alone, as this host's other lines: a CR-only host's LF after the prompt is data once
    # the host can have read the prompt -- docs/behaviour.md -- and the test's reader thread
    # reads it at once, so a trailing LF here was data or not by a race)
    dribble(host, b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"AT+QSSLSEND=0\r\r\n> "
    dribble(host, data)
    dribble(host, CTRL_Z)
    # every data byte echoed once, not the Ctrl+Z; then SEND OK alone (§2.7)
    expected = data + b"\r\nSEND OK\r\n"          # (the data hold a "SEND OK" line of their own)
    assert host.read_exactly(len(expected), timeout=20) == expected
    assert bytes(srv.wait_received(len(data), timeout=20)) == data
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    assert host.at("AT+QSSLSTATE") == state_answer("IP PROCESSING", {0: "CONNECTED"})
    close_ssl(host)


def test_server_closes_with_unread_data_while_a_bytewise_send_is_typed(ml, server):
    host, port = ml
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    conn.send(b"last words")
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    dribble(host, b"AT+QSSLSEND=0\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    dribble(host, b"half a req")
    conn.close()
    srv.wait_done(timeout=20)
    # (the modem has read the close before the Ctrl+Z comes: no race with the send)
    wait_for(lambda: ssl_service(port.modem).connected(0) is None, 20, "the peer's close seen")
    dribble(host, b"uest" + CTRL_Z)
    expected = ERROR + b'\r\n+QSSLURC: "close",0\r\n'
    assert host.read_exactly(len(expected), timeout=20) == expected
    # the data that came before the close are still there, once
    assert host.at("AT+QSSLRECV=1,0,4") == recv_block(b"last") + OK
    assert host.at("AT+QSSLRECV=1,0,1500") == recv_block(b" words") + OK
    assert host.at("AT+QSSLRECV=1,0,1500") == OK
    assert host.at("AT+QSSLSTATE") == state_answer("IP PROCESSING", {0: "REMOTE CLOSING"})
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == OK
    assert host.read_until(b"\r\n+QSSLOPEN: 0,-2\r\n", timeout=20) == b"\r\n+QSSLOPEN: 0,-2\r\n"
    close_ssl(host)
    assert host.at("AT+QSSLSTATE") == state_answer("IP STATUS", {0: "CLOSED"})
    assert b"half a request" not in bytes(srv.connections[0].received)


# -- ATS3 / ATS4 --------------------------------------------------------------------------------
def test_s3_s4_frame_the_ml302_prompts_answers_urcs_and_data(ml, server):
    host, _ = ml
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    host.write(b"ATS3=35;S4=64\r")
    assert host.read_until(b"OK#@") == b"#@OK#@"
    host.write(b"AT+QSECWRITE=1#")
    assert host.read_until(b"> ") == b"#@> "
    host.write(b"ab\r\n" + CTRL_Z)                 # CR LF inside the data stay data
    assert host.read_until(b"OK#@") == b"#@+QSECWRITE: 4,%04x#@#@OK#@" % manual_checksum(b"ab\r\n")
    host.write(b"AT+QSECREAD=1#")
    assert host.read_until(b"OK#@") == b"#@+QSECREAD: 1,%04x#@#@OK#@" % manual_checksum(b"ab\r\n")
    host.write(b"AT+QSSLSEND=0#")
    assert host.read_until(b"> ") == b"#@> "
    host.write(b"xy" + CTRL_Z)
    assert host.read_until(b"SEND OK#@") == b"#@SEND OK#@"
    assert bytes(srv.wait_received(2, timeout=20)) == b"xy"
    conn.send(b"hi#@\r\n")
    assert host.read_until(b'"recv",1,0#@', timeout=20) == b'#@+QSSLURC: "recv",1,0#@'
    host.write(b"AT+QSSLRECV=1,0,1500#")
    assert host.read_until(b"#@OK#@") == f"#@+QSSLRECV: {HOST_IP}:443,TCP,6#@".encode() + b"hi#@\r\n#@#@OK#@"
    host.write(b"AT+QSSLCLOSE=0#")
    assert host.read_until(b"CLOSE OK#@", timeout=20) == b"#@OK#@#@0,CLOSE OK#@"
    host.write(b"ATS3=13;S4=10#")
    assert host.read_until(b"OK\r\n") == OK          # the line's answer uses the new S3 S4
    assert host.at("AT") == OK


# -- --uart: a data phase spanning two programs ------------------------------------------------
def test_uart_secwrite_finished_by_the_next_program(open_modem, strict_log):
    host, port = open_modem("ml302", hangup_on_close=False)
    pem = (b"-----BEGIN CERTIFICATE-----\r\nMIIBszCCAVmgAwIBAgIUat+QSSL\r\n"
           b"-----END CERTIFICATE-----\r\n")
    host.write(b"AT+QSECWRITE=0\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(pem[:40])
    host = reopen(host, port.path)
    # the UART has no hang-up: the prompt still counts bytes, so the next program's bytes
    # finish the certificate (docs/behaviour.md, --uart)
    host.write(pem[40:] + CTRL_Z)
    assert host.read_until(b"OK\r\n", timeout=20) == written(pem)
    assert host.at("AT+QSECREAD=0") == read_back(pem)
    host.close()


def test_uart_send_prompt_left_by_one_program_is_filled_by_the_next(open_modem, server, strict_log):
    """Sixfab-style: the program writes the command, reads the `> `, closes, and writes its data
    after reopening the port."""
    host, port = open_modem("ml302", hangup_on_close=False)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    srv = server()
    open_ssl(host)
    srv.wait_handshake()
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host = reopen(host, port.path)
    body = b"\nGET / HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\n\r\n"      # starts with LF
    host.write(body + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n", timeout=20) == b"\r\nSEND OK\r\n"
    assert bytes(srv.wait_received(len(body), timeout=20)) == body
    digest = hashlib.sha256(body).hexdigest()
    assert srv.connections[0].sha256() == digest
    close_ssl(host)
    host.close()


# -- files that do not exist (§2.1 remark, §2.2-§2.4) -------------------------------------------
def test_missing_or_unnamed_material_fails_the_open_before_any_tcp(ml, server, pki):
    """seclevel 1 with an empty CA slot, with a cacert path that names no slot, seclevel 2
    with the client slots empty: "+QSSLOPEN: <ssid>,-1" and the server never sees a
    connection; the ssid is free again at once (CLOSED, the port dialled, no address)."""
    host, _ = ml
    srv = server()
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"      # the slot does not exist
    assert host.at("AT+QSECDEL=0") == OK                                  # deleting it anyway: OK
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    open_ssl(host, 0, code=-1)
    assert srv.connections == []
    assert host.at("AT+QSSLSTATE") == (
        b'\r\n+QSSLSTATE: "IP STATUS"\r\n' + state_line(0, "CLOSED", "") + b"".join(
            state_line(i, "INITIAL", "", 0) for i in range(1, 6)) + OK)
    assert host.at("AT+QSSLRECV=1,0,1500") == ERROR                      # nothing to read on it
    assert secwrite(host, 0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    # a path that names no slot: still -1, the CA slot untouched
    assert host.at('AT+QSSLCFG="cacert",0,"/ca.pem"') == OK
    open_ssl(host, 0, code=-1)
    assert srv.connections == []
    # the manual's own path, with its stray blank (§2.1 remark prints " /clientCrt.pem")
    assert host.at('AT+QSSLCFG="cacert",0," /caCrt.pem"') == OK
    open_ssl(host, 0)                                  # the failed ssid is reused without a close
    srv.wait_handshake()
    close_ssl(host, 0)
    # seclevel 2, client slots empty: -1 before TCP (the ML302 needs the pair)
    assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
    open_ssl(host, 0, code=-1)
    assert len(srv.connections) == 1
    assert host.at("AT+QSECREAD=1;+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"


# -- A/ and backspace on the ML302's commands ----------------------------------------------------
def test_repeat_and_backspace_on_recv_send_and_secwrite(ml, server):
    host, _ = ml
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    conn.send(b"abcdefghi")
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    assert host.at("AT+QSSLRECV=1,0,4\x083") == recv_block(b"abc") + OK     # S5 edits the length
    host.write(b"A/")                                                       # no terminator
    assert host.read_until(b"OK\r\n") == recv_block(b"def") + OK
    host.write(b"a/")
    assert host.read_until(b"OK\r\n") == recv_block(b"ghi") + OK
    host.write(b"A/")
    assert host.read_until(b"OK\r\n") == OK                                 # empty now
    # A/ repeating a send: the prompt again, and an LF right after A/ is data (no CR before)
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"one" + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    host.write(b"A/")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"\ntwo" + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert bytes(srv.wait_received(7, timeout=20)) == b"one\ntwo"
    # A/ repeating AT+QSECWRITE into the slot it just filled: refused before the prompt
    assert secwrite(host, 1, b"crt") == written(b"crt")
    host.write(b"A/")
    assert host.read_until(b"\r\n+CME ERROR: 3\r\n") == b"\r\n+CME ERROR: 3\r\n"
    assert host.at("AT+QSECREAD=1") == read_back(b"crt")
    # backspace inside a quoted option name
    assert host.at('AT+QSSLCFG="seclevelx\x08",0,1;+QSSLCFG="seclevel",0') \
        == b'\r\n+QSSLCFG: "seclevel",1\r\n\r\nOK\r\n'
    close_ssl(host)


# -- a host that writes everything, prompt unseen, and leaves --------------------------------
def test_command_data_and_ctrl_z_in_one_write_then_the_host_leaves(open_modem, server, strict_log):
    """A CR LF host writes the command line, data that begin with LF, the Ctrl+Z and one more
    command in a single write and closes without reading.  What it wrote before its close
    reaches the modem (docs, "Command line and result codes"): the line's LF is the line's,
    the data's own LF is data; the slot is filled / the server gets the bytes once; no
    answer waits for the next host."""
    host, port = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    pem = b"\n-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"
    host.write(b"AT+QSECWRITE=2\r\n" + pem + CTRL_Z + b"AT+QSECREAD=2\r\n")
    host = reopen(host, port.path)
    assert host.at("AT+QSECREAD=2") == read_back(pem)
    host.write(b"AT+QSSLSEND=0\r\n\nping" + CTRL_Z + b"AT+QSSLSTATE\r\n")
    host = reopen(host, port.path)
    assert bytes(srv.wait_received(5, timeout=20)) == b"\nping"
    assert host.at("AT+QSSLSTATE") == state_answer("IP PROCESSING", {0: "CONNECTED"})
    assert bytes(conn.received) == b"\nping"
    assert b"SEND OK" not in host.transcript and b"+QSECWRITE" not in host.transcript
    close_ssl(host)
    host.close()


def test_uart_next_programs_first_lf_at_a_secwrite_prompt_is_data(open_modem, emulator, strict_log):
    """docs/behaviour.md's late-LF table, last-but-one row: the line was written by a program
    that has closed the port since (--uart); the next program's first byte LF is data -- the
    module cannot take it for the departed program's line ending."""
    host, port = open_modem("ml302", hangup_on_close=False)
    host.write(b"AT+QSECWRITE=0\r")                      # CR alone
    assert host.read_until(b"> ") == b"\r\n> "
    host.close()
    wait_for(lambda: not emulator.run(lambda: port.port.attached), 20, "the close seen")
    host = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        before = emulator.run(lambda: port.port.received)
        host.write(b"\n")
        emulator.wait_received(port, before + 1)       # (the LF alone, read on its own)
        host.write(b"key\n" + CTRL_Z)
        assert host.read_until(b"OK\r\n", timeout=20) == written(b"\nkey\n")
        assert host.at("AT+QSECREAD=0") == read_back(b"\nkey\n")
    finally:
        host.close()


def test_unread_data_of_a_closed_ssid_never_reach_its_next_connection(ml, server):
    """The peer sends and closes; the host reads part of it and closes the ssid (the rest is
    discarded with the socket), then opens the same ssid again: the new connection starts
    empty -- a bare OK (§2.8), one "recv" URC for its own first bytes, and only those."""
    host, _ = ml
    srv = server()
    open_ssl(host)
    old = srv.wait_handshake(0)
    old.send(b"old-data-123")
    old.close()
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    assert host.read_until(b'"close",0\r\n', timeout=20) == b'\r\n+QSSLURC: "close",0\r\n'
    assert host.at("AT+QSSLRECV=1,0,3") == recv_block(b"old") + OK
    close_ssl(host)
    assert host.at("AT+QSSLRECV=1,0,3") == ERROR                 # closed: nothing to read
    open_ssl(host)
    new = srv.wait_handshake(1)
    assert host.at("AT+QSSLRECV=1,0,1500") == OK
    new.send(b"new")
    assert host.read_until(recv_urc(0), timeout=20) == recv_urc(0)
    assert host.at("AT+QSSLRECV=1,0,1500") == recv_block(b"new") + OK
    assert b"-data-123" not in host.transcript
    close_ssl(host)
