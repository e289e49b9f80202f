"""Independent review of docs/behaviour.md against the running emulator, second part: the
sections "Command line and result codes (both modules)", "SSL sockets (EC2x)", "AT+QSSLCFG
(EC2x)", "ML302 certificate store", "ML302 SSL commands", "Logs and secrets", "Faults
(control API)" and "Scenario files" (the first part, test_review_behaviour_claims.py, took
the identity, device, PDP, files, TCP/UDP and DNS sections).

Each test quotes the claim it checks (section + a short quote) in its docstring.  The claims
chosen are those no earlier test pins byte for byte, or pins only in part: combinations
(ATV0 with a data prompt's CONNECT, a fault with a `;` chain), exact frames, orders, limits at
both ends.  Everything goes through the pty; servers are loopback TLS peers
(emulator.testing.peers, Python's ssl) with every host name routed; timeouts run on the
modem's manual clock, nothing here measures wall time.  A test marked xfail(strict=True)
would record a contradiction."""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import stat

import pytest

from emulator.testing.peers import TlsServer

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
SSL_HOST = "echo.example"
OPENED = re.compile(rb"\r\n\+QSSLOPEN: (\d),(-?\d+)\r\n")


def qigeterror(host) -> bytes:
    return host.at("AT+QIGETERROR")


def err(code: int, text: str) -> bytes:
    return f"\r\n+QIGETERROR: {code},{text}\r\n".encode() + OK


@pytest.fixture
def server(pki, emulator):
    """A Python-ssl echo server that SSL_HOST:443 is routed to (no DNS entry)."""
    with TlsServer(pki.server, mode="echo") as srv:
        emulator.router.add_map(SSL_HOST, 443, "127.0.0.1", srv.port)
        yield srv


def ssl_open(host, cid: int, ctx: int = 1, name: str = SSL_HOST, port: int = 443, mode: int = 0) -> bytes:
    """AT+QSSLOPEN (EC2x) and its +QSSLOPEN line."""
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{name}",{port},{mode}') == OK
    return host.read_until(OPENED)


def ml_open(host, ssid: int, name: str = SSL_HOST, extra: str = "") -> bytes:
    assert host.at(f'AT+QSSLOPEN={ssid},0,"{name}",443,0{extra}') == OK
    return host.read_until(OPENED)


def send(host, cid: int, data: bytes) -> bytes:
    host.write(f"AT+QSSLSEND={cid},{len(data)}\r")
    host.read_until(b"> ")
    host.write(data)
    return host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n"))


# =========================================================================================
# Command line and result codes (both modules)
# =========================================================================================

def test_s5_set_to_another_character_deletes_the_prefixes_t(ec2x):
    """Command line: "S5 (backspace) deletes the previous character, the prefix's `T`
    included" -- S5 is the register, so after ATS5=35 a '#' deletes, and 0x08 is then an
    ordinary (bad) byte."""
    assert ec2x.at("ATS5=35") == OK
    assert ec2x.at("AT#T+CGMM") == b"\r\nEC25\r\n" + OK
    assert ec2x.at("AT+CGM#MR") == b"\r\nEC25EFAR06A06M4G\r\n" + OK
    assert ec2x.at("AT+CGMM\x08R") == ERROR
    assert ec2x.at("ATS5?") == b"\r\n035\r\n" + OK


def test_a_slash_repeats_at_once_in_atv0_on_the_ml302(ml302):
    """Command line: "`A/` repeats the previous line at once, without CR" (both modules);
    ATV0: "information text `text<CR><LF>`, result codes as digits followed by `<CR>`"."""
    ml302.write(b"ATV0\r")
    assert ml302.read_until(b"0\r") == b"0\r"
    ml302.write(b"AT+CGMI\r")
    first = ml302.read_until(b"0\r")
    assert first.endswith(b"\r\n0\r") and not first.startswith(b"\r\n")
    ml302.write(b"A/")
    assert ml302.read_until(b"0\r") == first
    assert ml302.at("ATV1") == OK


def test_a_slash_after_a_reboot_has_nothing_to_repeat(ec2x_timed):
    """Command line: "`A/` repeats the previous line at once ... (after a reboot there is
    none)"; "Bytes outside a command line are dropped"."""
    host, advance, _ = ec2x_timed
    assert host.at("AT+CGMI") == b"\r\nQuectel\r\n" + OK
    assert host.at("AT+CFUN=1,1") == OK
    advance(1)
    host.read_until(b"+QIND: PB DONE\r\n")
    host.write(b"A/")                               # (echo is on again after the restart)
    host.write(b"xyz\r")
    assert host.quiet_for(0.3) == b"A/xyz\r"       # echoed, nothing run
    assert host.at("ATE0") == b"ATE0\r" + OK


def test_atv0_connect_of_a_data_prompt_is_digit_1_and_its_final_result_0(ec2x):
    """Command line: "`ATV0`: information text `text<CR><LF>`, result codes as digits
    followed by `<CR>` (OK 0, CONNECT 1, ...)" -- AT+QFUPL's CONNECT too."""
    ec2x.write(b"ATV0\r")
    assert ec2x.read_until(b"0\r") == b"0\r"
    ec2x.write(b'AT+QFUPL="v0.txt",3\r')
    assert ec2x.read_until(b"1\r") == b"1\r"
    ec2x.write(b"abc")
    assert ec2x.read_until(b"0\r") == b"+QFUPL: 3,262\r\n0\r"
    ec2x.write(b"AT+CMEE=0;+CFUN=7\r")                 # CMEE 0: the +CME error is ERROR: 4
    assert ec2x.read_until(b"4\r") == b"4\r"
    assert ec2x.at("ATV1") == OK


def test_echo_covers_a_prompts_data_but_not_the_data_after_connect(ec2x_strict, server):
    """Command line: "In a `> ` data prompt (AT+QSSLSEND, AT+QSECWRITE) the data are echoed
    too; after `CONNECT` (AT+QFUPL) they are not"."""
    host, _, _ = ec2x_strict
    assert host.at("ATE1") == OK                     # (its own line came with echo off)
    host.write(b'AT+QFUPL="e.txt",3\r')
    assert host.read_until(b"CONNECT\r\n") == b'AT+QFUPL="e.txt",3\r\r\nCONNECT\r\n'
    host.write(b"xyz")
    assert host.read_until(b"OK\r\n") == b"\r\n+QFUPL: 3,279\r\n" + OK
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0').endswith(OK)
    host.read_until(OPENED)
    host.write(b"AT+QSSLSEND=0,3\r")
    assert host.read_until(b"> ") == b"AT+QSSLSEND=0,3\r\r\n> "
    host.write(b"pqr")
    assert host.read_until(b"SEND OK\r\n") == b"pqr\r\nSEND OK\r\n"
    host.read_until(b'+QSSLURC: "recv",0\r\n')
    assert host.at("ATE0") == b"ATE0\r" + OK


def test_ml302_secwrite_prompt_data_are_echoed(ml302):
    """Command line: "In a `> ` data prompt (AT+QSSLSEND, AT+QSECWRITE) the data are echoed
    too" -- on the ML302's certificate prompt."""
    assert ml302.at("ATE1") == OK
    ml302.write(b"AT+QSECWRITE=0\r")
    assert ml302.read_until(b"> ") == b"AT+QSECWRITE=0\r\r\n> "
    ml302.write(b"abc\x1a")
    assert ml302.read_until(b"OK\r\n") == b"abc\r\n+QSECWRITE: 3,0262\r\n" + OK   # (Ctrl+Z: not data)


def test_urcs_raised_by_a_command_follow_its_ok(ec2x_strict, server):
    """Command line: "URCs raised while a command runs (e.g. `AT+QIDEACT` closing sockets)
    are written after that command's final result"."""
    host, _, _ = ec2x_strict
    assert ssl_open(host, 2) == b"\r\n+QSSLOPEN: 2,0\r\n"
    assert ssl_open(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"
    host.write(b"AT+QIDEACT=1\r")
    assert host.read_until(b'"closed",4\r\n') == (
        OK + b'\r\n+QSSLURC: "closed",2\r\n\r\n+QSSLURC: "closed",4\r\n')


def test_urcs_raised_during_a_prompt_wait_for_its_end(ec2x_strict, server):
    """Command line: "URCs raised during a data prompt wait until it ends"."""
    host, _, _ = ec2x_strict
    assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    server.wait_handshake().send(b"late")
    assert host.quiet_for(0.4) == b""                      # data arrived: no URC yet
    host.write(b"ab\x1a")
    assert host.read_until(b'"recv",0\r\n') == b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",0\r\n'
    assert re.fullmatch(rb"\r\n\+QSSLRECV: (4\r\nlate|6\r\nlateab)\r\n\r\nOK\r\n",   # (+ the echo of
                        host.at("AT+QSSLRECV=0,100"))                                # "ab", if back)


def test_ipr_without_atw_is_forgotten_at_a_restart(ec2x_timed):
    """Command line: "`AT+IPR` ... is remembered across restarts only through `AT&W`";
    "without `--baud` AT+IPR changes only the stored setting"."""
    host, advance, _ = ec2x_timed
    assert host.at("AT+IPR=9600;+IPR?") == b"\r\n+IPR: 9600\r\n" + OK
    assert host.at("AT+CGMI") == b"\r\nQuectel\r\n" + OK      # the pty still talks
    assert host.at("AT+CFUN=1,1") == OK
    advance(1)
    host.read_until(b"+QIND: PB DONE\r\n")
    assert host.at("ATE0;+IPR?") == b"ATE0;+IPR?\r\r\n+IPR: 115200\r\n" + OK
    assert host.at("AT+IPR=9600;&W;+CFUN=1,1") == OK
    advance(1)
    host.read_until(b"+QIND: PB DONE\r\n")
    assert host.at("AT+IPR?") == b"\r\n+IPR: 9600\r\n" + OK            # (&W kept ATE0 too)


def test_s_registers_answer_three_digits_on_the_ml302(ml302):
    """Command line: "`ATSn?` answers three digits (`013`), as Quectel modules do" -- the
    ML302 profile too, for S3, S4, S5 and a value set."""
    assert ml302.at("ATS3?;S4?;S5?") == b"\r\n013\r\n\r\n010\r\n\r\n008\r\n" + OK
    assert ml302.at("ATS5=7;S5?") == b"\r\n007\r\n" + OK


def test_send_ok_and_send_fail_are_texts_kept_by_atv0_and_atq1(emulator, ec2x_strict, server):
    """Command line: "`+CME ERROR` and texts such as `SEND OK` keep their words in ATV0";
    "`ATQ1` suppresses result codes (and +CME ERROR), not information text or URCs" -- SEND
    OK / SEND FAIL are such texts (the prompt keeps its ATV0 form `> `)."""
    host, _, _ = ec2x_strict
    ssl_open(host, 0)
    assert emulator.control("send_fail", socket=0, count=1)["ok"]
    host.write(b"ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write(b"AT+QSSLSEND=0,2\r")
    assert host.read_until(b"> ") == b"> "
    host.write(b"ab")
    assert host.read_until(b"SEND FAIL\r\n") == b"SEND FAIL\r\n"
    host.write(b"ATV1Q1\r")
    assert host.quiet_for(0.2) == b""
    assert send(host, 0, b"cd") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'"recv",0\r\n') == b'\r\n+QSSLURC: "recv",0\r\n'   # (the echo: a URC)
    host.write(b"AT+QSSLSEND=7,2\r")                          # ERROR (a result code): none
    assert host.quiet_for(0.3) == b""
    assert host.at("ATQ0") == OK


# =========================================================================================
# SSL sockets (EC2x)
# =========================================================================================

def test_qsslstate_fields_and_clientid_in_use(ec2x_strict, server):
    """SSL sockets: "`<serverID>` is "reserved"; the note's example shows the clientID
    there, so does the emulator. `<at_port>` ... `"usbmodem"`. `<ip_address>` and
    `<remote_port>` are what the host dialled (never the routed address); `<local_port>` is the
    real local port"; "Immediate ERRORs: ... clientID in use (563)"."""
    host, _, _ = ec2x_strict
    assert ssl_open(host, 3, ctx=2) == b"\r\n+QSSLOPEN: 3,0\r\n"
    conn = server.wait_handshake()
    local = conn.address[1]
    assert host.at("AT+QSSLSTATE=3") == (
        b'\r\n+QSSLSTATE: 3,"SSLClient","echo.example",443,%d,2,1,3,0,"usbmodem",2\r\n' % local + OK)
    assert host.at('AT+QSSLOPEN=1,1,3,"echo.example",443,0') == ERROR
    assert qigeterror(host) == err(563, "socket identity has been used")


def test_names_no_dns_query_can_carry_fail_565(ec2x_strict):
    """SSL sockets: "a name no DNS query can carry (an empty or over-63-character label, as
    in `a..b` or `.` ...) ... 565", with AT+QIGETERROR reporting the URC's error."""
    host, _, _ = ec2x_strict
    for name in ("a..b", ".", "a" * 64 + ".example"):
        assert ssl_open(host, 1, name=name) == b"\r\n+QSSLOPEN: 1,565\r\n", name
        assert qigeterror(host) == err(565, "DNS parse failed")
        assert host.at("AT+QSSLCLOSE=1") == OK


def test_recv_is_reported_again_after_a_read_that_emptied_the_buffer_exactly(ec2x_strict, server):
    """SSL sockets: "the next arrival into the empty buffer reports again -- also when the
    host's last read happened to take exactly what was there, without the `+QSSLRECV: 0`";
    "`AT+QSSLRECV` answers `+QSSLRECV: <n><CR><LF><data><CR><LF>` then OK"."""
    host, _, _ = ec2x_strict
    ssl_open(host, 0)
    conn = server.wait_handshake()
    conn.send(b"12345")
    host.read_until(b'\r\n+QSSLURC: "recv",0\r\n')
    assert host.at("AT+QSSLRECV=0,5") == b"\r\n+QSSLRECV: 5\r\n12345\r\n" + OK
    conn.send(b"678")
    assert host.read_until(b'"recv",0\r\n') == b'\r\n+QSSLURC: "recv",0\r\n'
    assert host.at("AT+QSSLRECV=0,2") == b"\r\n+QSSLRECV: 2\r\n67\r\n" + OK
    assert host.at("AT+QSSLRECV=0,2") == b"\r\n+QSSLRECV: 1\r\n8\r\n" + OK
    assert host.at("AT+QSSLRECV=0,2") == b"\r\n+QSSLRECV: 0\r\n" + OK


def test_peer_close_state_4_send_567_data_kept_and_server_sees_eof(ec2x_strict, server):
    """SSL sockets: "Peer close: data received before the close stay readable; `+QSSLURC:
    "closed",<id>` follows; the socket is in state 4 (closing) until `AT+QSSLCLOSE`"; "567
    (socket has been closed) once the peer closed it"; "After the peer's close the emulator
    closes its side of the TCP connection at once (the server sees EOF without waiting for the
    host's AT+QSSLCLOSE)"; "AT+QSSLCLOSE on a socket the peer closed drops what is left"."""
    host, _, _ = ec2x_strict
    ssl_open(host, 1)
    conn = server.wait_handshake()
    conn.send(b"bye!")
    conn.close()
    assert host.read_until(b'"closed",1\r\n') == (b'\r\n+QSSLURC: "recv",1\r\n'
                                                  b'\r\n+QSSLURC: "closed",1\r\n')
    server.wait_for(lambda: conn.client_eof, what="the emulator's FIN")
    assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","echo\.example",443,\d+,4,1,1,0,"usbmodem",1\r\n'
                        rb'\r\nOK\r\n', host.at("AT+QSSLSTATE=1"))
    assert host.at("AT+QSSLSEND=1,3") == ERROR
    assert qigeterror(host) == err(567, "socket has been closed")
    assert host.at("AT+QSSLRECV=1,2") == b"\r\n+QSSLRECV: 2\r\nby\r\n" + OK
    assert host.at("AT+QSSLCLOSE=1") == OK                       # "e!" dropped
    assert host.at("AT+QSSLSTATE=1") == OK


def test_a_socket_still_opening_refuses_sends_and_closes_without_a_qsslopen(emulator, ec2x_strict, server):
    """SSL sockets: "572 (operation not allowed) when there is none or it is still opening";
    "A socket that never connected ... is dropped at once, without a `+QSSLOPEN` URC"."""
    host, advance, _ = ec2x_strict
    assert emulator.control("handshake_stall", count=1)["ok"]
    assert host.at('AT+QSSLOPEN=1,1,2,"echo.example",443,0') == OK
    assert host.at("AT+QSSLSEND=2,3") == ERROR
    assert qigeterror(host) == err(572, "operation not allowed")
    assert host.at("AT+QSSLCLOSE=2") == OK
    advance(400)                                       # past any negotiatetime
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QSSLSTATE") == OK


def test_close_then_reopen_of_the_same_id_on_one_line(ec2x_strict, server):
    """SSL sockets: "A close (AT+QSSLCLOSE ...) takes effect when the command runs ... so the
    id can be reused in the same line"."""
    host, _, _ = ec2x_strict
    ssl_open(host, 5)
    assert host.at('AT+QSSLCLOSE=5;+QSSLOPEN=1,1,5,"echo.example",443,0') == OK
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 5,0\r\n"
    server.wait_connections(2)
    assert send(host, 5, b"hi") == b"\r\nSEND OK\r\n"


def test_direct_push_urcs_carry_at_most_recv_max_and_closed_comes_last(ec2x_strict, server):
    """SSL sockets: "Direct push (access mode 1): `+QSSLURC: "recv",<id>,<len><CR><LF><data><CR><LF>`,
    at most `recv_max` bytes per URC"; "Every byte arrives once,
    in order; a peer close (`"closed"`) is reported after the data received before it"."""
    host, _, _ = ec2x_strict
    assert ssl_open(host, 0, mode=1) == b"\r\n+QSSLOPEN: 0,0\r\n"
    conn = server.wait_handshake()
    payload = bytes(i % 251 for i in range(3200))
    conn.send(payload)
    conn.close()
    got = host.read_until(b'\r\n+QSSLURC: "closed",0\r\n')
    pieces = re.split(rb'\r\n\+QSSLURC: "recv",0,(\d+)\r\n', got[:-len(b'\r\n+QSSLURC: "closed",0\r\n')])
    assert pieces[0] == b""
    sizes = [int(n) for n in pieces[1::2]]
    assert all(d.endswith(b"\r\n") for d in pieces[2::2])       # each push's data, then CR LF
    datas = [d[:-2] for d in pieces[2::2]]
    data = b"".join(datas)
    assert data == payload and all(1 <= n <= 1500 for n in sizes)
    assert [len(d) for d in datas] == sizes


def test_ssl3_is_555(ec2x_strict, server):
    """SSL sockets: "+QSSLOPEN error codes ...: SSL 3.0 or a suite the TLS build lacks
    555"."""
    host, _, _ = ec2x_strict
    assert host.at('AT+QSSLCFG="sslversion",1,0') == OK
    assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,555\r\n"
    assert re.fullmatch(rb"\r\n\+QIGETERROR: 555,[a-z ]+\r\n\r\nOK\r\n", qigeterror(host))
    assert host.at("AT+QSSLCLOSE=0") == OK


# =========================================================================================
# AT+QSSLCFG (EC2x)
# =========================================================================================

@pytest.mark.parametrize("profile, query, answer", [
    ("ec2x", 'AT+QSSLCFG="sslversion",3,', b'\r\n+QSSLCFG: "sslversion",3,4\r\n'),
    ("ec2x", 'AT+QSSLCFG="negotiatetime",0,', b'\r\n+QSSLCFG: "negotiatetime",0,300\r\n'),
    ("ml302", 'AT+QSSLCFG="sslversion",0,', b'\r\n+QSSLCFG: "sslversion",4\r\n'),
    ("ml302", 'AT+QSSLCFG="seclevel",2,', b'\r\n+QSSLCFG: "seclevel",0\r\n'),
])
def test_a_value_left_empty_after_its_comma_is_the_query_on_both_modules(open_modem, profile, query, answer):
    """AT+QSSLCFG: "`AT+QSSLCFG="<option>",<ctx>,` (the value left empty after its comma) is
    the query, as when it is omitted (V.250), on both modules ...; two empty values are
    ERROR"."""
    host, _ = open_modem(profile)
    assert host.at(query) == answer + OK
    assert host.at(query.rstrip(",")) == answer + OK
    assert host.at(query + ",") == ERROR


def test_cipher_ids_are_0x_and_one_to_four_hex_digits(ec2x):
    """AT+QSSLCFG: "Each id is `0X` and one to four hex digits: `0X_35` or `0X 35` (which
    Python's int() would take) is ERROR"; "read back with ':'"."""
    assert ec2x.at('AT+QSSLCFG="ciphersuite",2,0X35:0Xc02f') == OK
    assert ec2x.at('AT+QSSLCFG="ciphersuite",2') == (          # (normalised to four digits)
        b'\r\n+QSSLCFG: "ciphersuite",2,0X0035:0XC02F\r\n' + OK)
    for bad in ("0X_35", '"0X 35"', "0X00035", "0X", "35", "0X0035:", "0XG035"):
        assert ec2x.at(f'AT+QSSLCFG="ciphersuite",3,{bad}') == ERROR, bad
    assert ec2x.at('AT+QSSLCFG="ciphersuite",3') == b'\r\n+QSSLCFG: "ciphersuite",3,0XFFFF\r\n' + OK


def test_alpn_empty_sends_no_extension_and_names_are_the_hosts_bytes(ec2x_strict, server):
    """AT+QSSLCFG: "`alpn` takes one quoted string; several protocols are separated by
    commas inside it (`"h2,http/1.1"`); `""` sends no ALPN extension. The names are the host's
    bytes, sent unchanged ..., non-ASCII included"."""
    host, _, _ = ec2x_strict
    assert host.at(b'AT+QSSLCFG="alpn",1,"h2,x\xe9y"') == OK
    ssl_open(host, 0)
    assert server.wait_handshake().alpn_offered == [b"h2", b"x\xe9y"]
    assert host.at('AT+QSSLCLOSE=0;+QSSLCFG="alpn",1,""') == OK
    ssl_open(host, 0)
    server.wait_connections(2)
    assert server.wait_handshake().alpn_offered is None
    assert host.at('AT+QSSLCFG="alpn",1') == b'\r\n+QSSLCFG: "alpn",1,""\r\n' + OK


# =========================================================================================
# ML302 certificate store
# =========================================================================================

def test_secstore_slots_are_0600_and_a_tampered_slot_reads_0(open_modem, tmp_path):
    """ML302 certificate store: "Slots are stored AES-256-GCM encrypted with a per-modem key
    (`<state-dir>/secstore/`, 0600), atomically; a damaged or tampered slot reads
    `+QSECREAD: 0,<checksum>`"."""
    host, _ = open_modem("ml302", state_dir=tmp_path / "ml")
    secret = b"-----BEGIN CERTIFICATE-----SECRETBYTES-----END CERTIFICATE-----"
    host.write(b"AT+QSECWRITE=0\r")
    host.read_until(b"> ")
    host.write(secret + b"\x1a")
    answer = host.read_until(b"OK\r\n")
    assert re.fullmatch(rb"\r\n\+QSECWRITE: %d,[0-9a-f]{4}\r\n\r\nOK\r\n" % len(secret), answer)
    store = tmp_path / "ml" / "secstore"
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert b"SECRETBYTES" not in p.read_bytes(), p
    slot = max(files, key=lambda p: p.stat().st_size)
    blob = bytearray(slot.read_bytes())
    blob[-1] ^= 0x01
    slot.write_bytes(bytes(blob))
    assert re.fullmatch(rb"\r\n\+QSECREAD: 0,[0-9a-f]{4}\r\n\r\nOK\r\n", host.at("AT+QSECREAD=0"))


def test_secwrite_prompt_has_no_inactivity_timeout(emulator, open_modem):
    """ML302 certificate store: "The prompt has no inactivity timeout ...: a host that stops
    mid-certificate keeps the port in the prompt until Ctrl+Z, ESC or closing the port"."""
    host, port = open_modem("ml302", manual_time=True)
    advance = emulator.advancer(port, host)
    host.write(b"AT+QSECWRITE=1\r")
    host.read_until(b"> ")
    host.write(b"abc")
    advance(3600)
    assert host.quiet_for(0.3) == b""
    host.write(b"AT+CGMI\r\x1a")                            # still data: stored with the rest
    assert re.fullmatch(rb"\r\n\+QSECWRITE: 11,[0-9a-f]{4}\r\n\r\nOK\r\n", host.read_until(b"OK\r\n"))
    assert host.at("AT+QSECREAD=1").startswith(b"\r\n+QSECREAD: 1,")


# =========================================================================================
# ML302 SSL commands
# =========================================================================================

def made_up(name: str) -> str:
    """The doc's rule, computed here independently: 198.18.0.0/15 from SHA-256 of the
    lower-cased name (the emulator's own mapping into the /15: y 1-254)."""
    n = int.from_bytes(hashlib.sha256(name.lower().encode()).digest()[:4], "big")
    return str(ipaddress.ip_address("198.18.0.0") + ((n >> 8) % 512) * 256 + 1 + n % 254)


def test_ml302_states_made_up_address_and_minus_2_while_remote_closing(ml302_strict, server):
    """ML302 SSL commands: "-2 when the ssid is in use (including REMOTE CLOSING until
    AT+QSSLCLOSE)"; `<ipaddr>` of "any other name a made-up address: 198.18.0.0/15 ... from
    SHA-256 of the lower-cased name, the same in every run. It appears once TCP is connected";
    AT+QSSLSTATE "never used -> INITIAL `"",0`; ... CONNECTED; peer closed -> REMOTE CLOSING;
    after the host's close ... CLOSED with the last address"; "`<closetype>` is accepted and
    ignored"."""
    host, _, _ = ml302_strict
    addr = made_up(SSL_HOST)
    assert ipaddress.ip_address(addr) in ipaddress.ip_network("198.18.0.0/15")
    assert ml_open(host, 1, name="ECHO.Example") == b"\r\n+QSSLOPEN: 1,0\r\n"
    line = b'+QSSLSTATE: 1,"TCP","%s",443,"%%s",1\r\n' % addr.encode()
    idle = b"".join(b'+QSSLSTATE: %d,"TCP","",0,"INITIAL",1\r\n' % i for i in range(6))

    def state(first: bytes, one: bytes) -> bytes:
        rows = idle.replace(b'+QSSLSTATE: 1,"TCP","",0,"INITIAL",1\r\n', one)
        return b'\r\n+QSSLSTATE: "%s"\r\n' % first + rows + OK

    assert host.at("AT+QSSLSTATE") == state(b"IP PROCESSING", line % b"CONNECTED")
    server.wait_handshake().close()
    assert host.read_until(b'"close",1\r\n') == b'\r\n+QSSLURC: "close",1\r\n'
    assert host.at("AT+QSSLSTATE") == state(b"IP PROCESSING", line % b"REMOTE CLOSING")
    assert ml_open(host, 1) == b"\r\n+QSSLOPEN: 1,-2\r\n"
    assert host.at("AT+QSSLCLOSE=1,1") == OK
    assert host.read_until(b"CLOSE OK\r\n") == b"\r\n1,CLOSE OK\r\n"
    assert host.at("AT+QSSLSTATE") == state(b"IP STATUS", line % b"CLOSED")
    assert ml_open(host, 1) == b"\r\n+QSSLOPEN: 1,0\r\n"


def test_ml302_open_timeout_range_and_it_bounds_the_handshake(emulator, ml302_strict, server):
    """ML302 SSL commands: "`<timeout>` (10-300 s, default 90) bounds name lookup, TCP
    connect and handshake together"; Faults: handshake_stall "-1 on ML302 (the stall after its
    `<timeout>`)"."""
    host, advance, _ = ml302_strict
    for bad in (9, 301, 0):
        assert host.at(f'AT+QSSLOPEN=2,0,"echo.example",443,0,{bad}') == ERROR, bad
    assert emulator.control("handshake_stall", count=2)["ok"]
    assert host.at('AT+QSSLOPEN=2,0,"echo.example",443,0,10') == OK
    advance(9.9)
    assert host.quiet_for(0.3) == b""
    advance(0.2)
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 2,-1\r\n"
    assert host.at("AT+QSSLCLOSE=2") == OK
    host.read_until(b"CLOSE OK\r\n")
    assert host.at('AT+QSSLOPEN=2,0,"echo.example",443,0') == OK        # default 90 s
    advance(89.9)
    assert host.quiet_for(0.3) == b""
    advance(0.2)
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 2,-1\r\n"


def test_ml302_other_certificate_paths_warn_and_fail_at_seclevel_1(ml302_strict, server, caplog):
    """ML302 SSL commands: "other paths are accepted with a warning and make seclevel 1/2
    opens fail (-1)"."""
    host, _, _ = ml302_strict
    assert host.at('AT+QSSLCFG="cacert",0,"/other.pem"') == OK
    assert any(r.levelno == logging.WARNING and "/other.pem" in r.getMessage() for r in caplog.records)
    assert host.at('AT+QSSLCFG="cacert",0') == b'\r\n+QSSLCFG: "cacert","/other.pem"\r\n' + OK
    assert ml_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"                 # seclevel 0: unused
    assert host.at("AT+QSSLCLOSE=0") == OK
    host.read_until(b"CLOSE OK\r\n")
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    assert ml_open(host, 0) == b"\r\n+QSSLOPEN: 0,-1\r\n"


def test_ml302_recv_length_1_to_1500_send_at_most_1460_and_recv_shows_the_dns_answer(ml302_strict, server):
    """ML302 SSL commands: "AT+QSSLRECV accepts `<length>` 1-1500 ... AT+QSSLSEND still takes
    at most 1460"; "`<ipaddr>` in QSSLRECV and QSSLSTATE is what the modem's DNS answered for
    the host dialled, never the routed address ...; any other name a made-up address";
    "`<port>` is the port dialled"."""
    host, _, _ = ml302_strict
    ml_open(host, 3)
    for n, answer in ((0, ERROR), (1501, ERROR), (1500, OK), (1, OK)):
        assert host.at(f"AT+QSSLRECV=0,3,{n}") == answer, n
    host.write(b"AT+QSSLSEND=3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"z" * 1461 + b"\x1a")
    assert host.read_until(re.compile(rb"\r\n(ERROR|SEND OK)\r\n")) == ERROR
    host.write(b"AT+QSSLSEND=3\r")
    host.read_until(b"> ")
    host.write(b"z" * 1460 + b"\x1a")
    assert host.read_until(re.compile(rb"\r\n(ERROR|SEND OK)\r\n")) == b"\r\nSEND OK\r\n"
    server.wait_received(1460)
    host.read_until(b'\r\n+QSSLURC: "recv",1,3\r\n')
    answer = host.at("AT+QSSLRECV=0,3,1500")
    head = b"\r\n+QSSLRECV: %s:443,TCP," % made_up(SSL_HOST).encode()
    assert answer.startswith(head) and answer.endswith(OK), answer[:80]


def test_ml302_pdp_deact_gives_close_only_and_pdp_deact_state(emulator, ml302_strict, server):
    """Faults: "`pdp_deact`: ... the ML302 manual documents no such URC: only
    `+QSSLURC: "close",<ssid>`, and AT+QSSLSTATE shows "PDP DEACT"."""
    host, _, _ = ml302_strict
    ml_open(host, 4)
    assert emulator.control("pdp_deact", cid=1)["ok"]
    assert host.read_until(b'"close",4\r\n') == b'\r\n+QSSLURC: "close",4\r\n'
    assert host.quiet_for(0.3) == b""
    answer = host.at("AT+QSSLSTATE")
    assert answer.startswith(b'\r\n+QSSLSTATE: "PDP DEACT"\r\n')
    assert b'+QSSLSTATE: 4,"TCP","%s",443,"REMOTE CLOSING",1\r\n' % made_up(SSL_HOST).encode() in answer


# =========================================================================================
# Logs and secrets
# =========================================================================================

def test_a_host_name_with_lf_and_esc_is_escaped_in_the_log(ec2x_strict, caplog):
    """Logs and secrets: "Everything the host sent that reaches a log line (... a host name
    ...) is escaped: printable ASCII stays, any other character is shown as `\\xNN` /
    `\\uNNNN`, so a host name containing LF cannot start a forged log line and an ESC cannot
    repaint the reader's terminal"."""
    host, _, _ = ec2x_strict
    assert host.at(b'AT+QSSLOPEN=1,1,0,"evil\nFORGED\x1b[2J",443,0') == OK
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 0,565\r\n"
    lines = [r.getMessage() for r in caplog.records if "FORGED" in r.getMessage()]
    assert lines
    for text in lines:
        assert "\n" not in text and "\x1b" not in text
        assert "evil\\x0aFORGED\\x1b[2J" in text


def test_key_material_never_reaches_the_log(ml302_strict, caplog):
    """Logs and secrets: "a rejected `AT+QSSLCFG="psk",<ctx>,...` is logged as
    `AT+QSSLCFG="psk",<ctx>,<redacted>`; data prompts (AT+QFUPL, AT+QSECWRITE, AT+QSSLSEND) log
    byte counts, never bytes, also when something fails on them"."""
    host, _, _ = ml302_strict
    host.write(b"AT+QSECWRITE=2\r")
    host.read_until(b"> ")
    host.write(b"TOPSECRETKEY" + b"\x1a")
    host.read_until(b"OK\r\n")
    host.write(b"AT+QSECWRITE=2\r")                          # refused: slot filled
    assert host.read_until(b"\r\n+CME ERROR: 3\r\n")
    host.write(b"AT+QSECWRITE=1\r")
    host.read_until(b"> ")
    host.write(b"CANCELLEDSECRET\x1b")                       # ESC: cancelled
    host.read_until(b"OK\r\n")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "TOPSECRETKEY" not in text and "CANCELLEDSECRET" not in text


def test_a_rejected_psk_line_is_logged_redacted(ec2x_strict, caplog):
    """Logs and secrets: "a rejected `AT+QSSLCFG="psk",<ctx>,...` is logged as
    `AT+QSSLCFG="psk",<ctx>,<redacted>`"."""
    host, _, _ = ec2x_strict
    assert host.at('AT+QSSLCFG="psk",9,"myident","0011SECRETKEY"') == ERROR
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert 'AT+QSSLCFG="psk",9,<redacted>' in text
    assert "myident" not in text and "SECRETKEY" not in text


# =========================================================================================
# Faults (control API)
# =========================================================================================

def test_dns_fail_count_is_shared_with_the_modems_own_lookups_and_skips_literals(emulator, ec2x_strict, server):
    """Faults: "`dns_fail` also fails the modem's own next name lookups (AT+QIDNSGIP ...:
    565), from the same count; an IP literal needs no lookup and does not take one"; "an open
    of an IP literal looks nothing up: it neither fails nor takes a `dns_fail`"."""
    host, _, _ = ec2x_strict
    emulator.router.add_map("127.0.0.1", 443, "127.0.0.1", server.port)
    assert emulator.control("dns_fail", count=2)["ok"]
    assert host.at('AT+QIDNSGIP=1,"echo.example"') == OK
    assert host.read_until(b'"dnsgip",565\r\n') == b'\r\n+QIURC: "dnsgip",565\r\n'
    assert ssl_open(host, 0, name="127.0.0.1") == b"\r\n+QSSLOPEN: 0,0\r\n"
    assert ssl_open(host, 1) == b"\r\n+QSSLOPEN: 1,565\r\n"
    assert ssl_open(host, 2) == b"\r\n+QSSLOPEN: 2,0\r\n"


def test_connect_refuse_counts_an_open_closed_on_its_own_line(emulator, ec2x_strict, server):
    """Faults: "`connect_refuse` ...: the next K opens fail as ... 566"; "An open takes its
    fault when the host's command is executed, so an open the host closes at once
    (AT+QSSLOPEN=...;+QSSLCLOSE=...) still counts"."""
    host, _, _ = ec2x_strict
    assert emulator.control("connect_refuse", count=2)["ok"]
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0;+QSSLCLOSE=0') == OK
    assert host.quiet_for(0.3) == b""                          # no +QSSLOPEN after its close
    assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,566\r\n"
    assert qigeterror(host) == err(566, "socket connection failed")
    assert host.at("AT+QSSLCLOSE=0") == OK
    assert ssl_open(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"


def test_handshake_stall_is_569_exactly_at_negotiatetime(emulator, ec2x_strict, server):
    """Faults: "`handshake_stall`: the next K opens fail as ... 569 ... (after negotiatetime;
    the server accepts TCP and nothing more comes back)"."""
    host, advance, _ = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    assert emulator.control("handshake_stall", count=1)["ok"]
    assert host.at('AT+QSSLOPEN=1,1,1,"echo.example",443,0') == OK
    advance(9.9)
    assert host.quiet_for(0.3) == b""
    advance(0.2)
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 1,569\r\n"
    assert qigeterror(host) == err(569, "operation timeout")


def test_send_fail_takes_the_next_k_sends_and_nothing_of_them_is_sent(emulator, ec2x_strict, server):
    """Faults: "`send_fail`: the next K AT+QSSLSEND on that socket answer SEND FAIL (nothing
    is sent)"."""
    host, advance, _ = ec2x_strict
    ssl_open(host, 0)
    conn = server.wait_handshake()
    assert emulator.control("send_fail", socket=0, count=2)["ok"]
    assert send(host, 0, b"s0") == b"\r\nSEND FAIL\r\n"
    assert send(host, 0, b"s1") == b"\r\nSEND FAIL\r\n"
    assert send(host, 0, b"s2") == b"\r\nSEND OK\r\n"
    advance(0.01)
    server.wait_for(lambda: len(conn.received) >= 2)
    assert bytes(conn.received) == b"s2"


def test_slow_delays_the_answer_on_the_modem_clock_and_urcs_wait_behind_it(emulator, ec2x_strict):
    """Faults: "`slow`: the command's information text and final result come `ms` later ...;
    the port is busy meanwhile and URCs wait behind the answer"."""
    host, advance, _ = ec2x_strict
    assert emulator.control("slow", command="+CGMR", ms=2000)["ok"]
    host.write(b"AT+CGMR\r")
    advance(0)
    assert emulator.control("urc", text="+TEST: 1")["ok"]
    host.write(b"AT+CGMI\r")                                     # waits: the port is busy
    advance(1.9)
    assert host.quiet_for(0.3) == b""
    advance(0.2)
    assert host.read_until(b"+TEST: 1\r\n") == (b"\r\nEC25EFAR06A06M4G\r\n" + OK +
                                                b"\r\n+TEST: 1\r\n")
    assert host.read_until(b"OK\r\n") == b"\r\nQuectel\r\n" + OK


def test_state_lists_a_listener_and_drop_and_send_fail_refuse_it(emulator, ec2x_strict, server):
    """Faults: "`state` lists every id of the socket pool in use: SSL sockets, AT+QIOPEN
    clients and "TCP LISTENER"s (state LISTENING; `drop`, `send_fail` and `net` refuse a
    listener: it has no connection)"."""
    host, _, _ = ec2x_strict
    ssl_open(host, 0)
    assert host.at('AT+QIOPEN=1,5,"TCP LISTENER","127.0.0.1",0,2020,0') == OK
    host.read_until(b"+QIOPEN: 5,0\r\n")
    sockets = {s["id"]: s for s in emulator.control("state")["sockets"]}
    assert sockets[0]["service_type"] == "SSL" and sockets[0]["state"] == "CONNECTED"
    assert sockets[5]["service_type"] == "TCP LISTENER" and sockets[5]["state"] == "LISTENING"
    for op, kw in (("drop", {"how": "rst"}), ("send_fail", {"count": 1}), ("net", {"latency_ms": 50})):
        answer = emulator.control(op, socket=5, **kw)
        assert answer["ok"] is False and "LISTENER" in answer["error"], (op, answer)


def test_blackhole_send_ok_up_to_send_buffer_then_fail_and_close_waits_its_timeout(emulator, ec2x_strict, server):
    """Faults: "`blackhole`: no packet moves either way ...; sends answer SEND OK until
    `ssl.send_buffer` bytes sit unacknowledged, then SEND FAIL; AT+QSSLCLOSE sends no FIN and
    answers after its full close timeout" (EC2x send_buffer 16384: 11 x 1460 fit, a 12th
    not)."""
    host, advance, _ = ec2x_strict
    ssl_open(host, 0)
    conn = server.wait_handshake()
    assert emulator.control("drop", socket=0, how="blackhole")["ok"]
    for i in range(11):
        assert send(host, 0, b"x" * 1460) == b"\r\nSEND OK\r\n", i
        advance(0.01)
    assert send(host, 0, b"x" * 1460) == b"\r\nSEND FAIL\r\n"
    assert send(host, 0, b"x" * 300) == b"\r\nSEND OK\r\n"            # 16360 still fits
    host.write(b"AT+QSSLCLOSE=0,5\r")
    advance(4.9)
    assert host.quiet_for(0.3) == b""
    assert not conn.client_eof and not conn.close_notify_received and not conn.received
    advance(0.2)
    assert host.read_until(b"OK\r\n") == OK
    assert not conn.close_notify_received


def test_reboot_fault_boot_urcs_at_ms_then_profile_offsets_and_one_set_only(emulator, ec2x_strict):
    """Faults: "`reboot`: ... the start-up URCs come from `ms` on (default 50: RDY then; the
    rest at the profile's `defaults.boot_urc_ms` offsets after it, so a test on manual time
    advances `ms` + 0.62 s for the EC2x's last, +QIND: PB DONE); a reboot ... before they came
    abandons that boot, so one set of start-up URCs comes, after the last"."""
    host, advance, _ = ec2x_strict
    assert emulator.control("reboot", ms=300)["ok"]
    advance(0.2)
    assert emulator.control("reboot")["ok"]                 # before the first boot's RDY
    advance(0.04)
    assert host.quiet_for(0.2) == b""
    advance(0.02)
    assert host.read_until(b"RDY\r\n") == b"\r\nRDY\r\n"
    advance(0.59)
    got = host.quiet_for(0.3)
    assert b"PB DONE" not in got
    advance(0.02)
    got += host.read_until(b"+QIND: PB DONE\r\n")
    assert got.endswith(b"\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n")
    advance(2)
    assert host.quiet_for(0.3) == b""
    assert host.transcript.count(b"RDY") == 1 and host.transcript.count(b"PB DONE") == 1


# =========================================================================================
# Scenario files
# =========================================================================================

def test_scenario_when_urc_goes_out_before_the_triggering_answer(emulator, ec2x_strict):
    """Scenario files: "`when` runs before the handler, so ... a URC it injects goes out
    before that command's answer"."""
    host, _, _ = ec2x_strict
    emulator.run_scenario({"step": [{"when": {"command": "+CGMI"}, "op": "urc", "text": "+WHEN: 1"}]})
    assert host.at("AT+CGMI") == b"\r\n+WHEN: 1\r\n\r\nQuectel\r\n" + OK
    assert host.at("AT+CGMI") == b"\r\nQuectel\r\n" + OK                  # fires once


def test_scenario_after_a_chain_fires_at_the_end_of_the_line(emulator, ec2x_strict):
    """Scenario files: "`after` runs once the port is idle again ...; for a `;` chain that is
    the end of the line"."""
    host, _, _ = ec2x_strict
    emulator.run_scenario({"step": [{"after": {"command": "+CGMI"}, "op": "urc", "text": "+AFTER: 1"}]})
    host.write(b"AT+CGMI;+CGMM\r")
    assert host.read_until(b"+AFTER: 1\r\n") == (b"\r\nQuectel\r\n\r\nEC25\r\n" + OK +
                                                 b"\r\n+AFTER: 1\r\n")


def test_scenario_an_errored_send_counts_and_the_socket_is_clientid_of_qsslopen(emulator, ec2x_strict, server):
    """Scenario files: "Triggers count every command ... and socket argument (EC2x
    AT+QSSLOPEN's third ...), whatever the answer; an AT+QSSLSEND answered ERROR is still a
    send"."""
    host, _, _ = ec2x_strict
    emulator.run_scenario({"step": [
        {"when": {"command": "+QSSLOPEN", "socket": 3}, "op": "urc", "text": "+OPEN3: 1"},
        {"when": {"command": "+QSSLSEND", "socket": 3, "count": 2}, "op": "send_fail", "socket": 3},
    ]})
    assert host.at('AT+QSSLOPEN=1,3,1,"echo.example",443,0') == OK          # ctx 3, id 1
    host.read_until(OPENED)
    assert host.at("AT+QSSLSEND=3,2") == ERROR                               # not open: a send
    assert host.at('AT+QSSLOPEN=1,1,3,"echo.example",443,0') == b"\r\n+OPEN3: 1\r\n" + OK
    assert host.read_until(OPENED) == b"\r\n+QSSLOPEN: 3,0\r\n"
    assert send(host, 3, b"ab") == b"\r\nSEND FAIL\r\n"                    # the 2nd send
    assert send(host, 3, b"cd") == b"\r\nSEND OK\r\n"


def test_scenario_a_step_that_cannot_run_is_recorded_and_the_rest_still_run(emulator, ec2x_strict, caplog):
    """Scenario files: "`at` counts from when the scenario starts ... on the modem's timers";
    "An op that cannot run when its time comes (the socket is not open) is logged as a warning
    and recorded; the other steps still run"."""
    host, advance, _ = ec2x_strict
    run = emulator.run_scenario({"step": [
        {"at": 1.0, "op": "drop", "socket": 4, "how": "rst"},
        {"at": 2.0, "op": "urc", "text": "+LATER: 1"},
    ]})
    advance(0.9)
    assert emulator.run(lambda: list(run.fired)) == []
    assert host.quiet_for(0.2) == b""
    advance(1.2)
    assert host.read_until(b"+LATER: 1\r\n") == b"\r\n+LATER: 1\r\n"
    fired = emulator.run(lambda: list(run.fired))
    assert [(f["op"], f["ok"]) for f in fired] == [("drop", False), ("urc", True)]
    assert "error" in fired[0]
    assert any(r.levelno == logging.WARNING and "step 1" in r.getMessage() for r in caplog.records)

