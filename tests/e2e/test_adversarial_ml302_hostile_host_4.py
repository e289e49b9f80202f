"""Adversarial, fourth round of hostile HOST programs against the ML302 profile (OneMO ML302
SSL AT manual §2.1-§2.10; docs/behaviour.md "Command line and result codes", "ML302 SSL
commands", "ML302 certificate store", "Transparent access mode"), aimed at what
test_adversarial_ml302_*.py, test_stateful_ml302.py, test_ssl_options_ml302.py,
test_ml302_ssl.py and test_secstore_at.py leave out.  Every host writes one byte per write()
and reads 1/3/7/4095 bytes at a time (hostile_host_2's Rig).

- ATQ1 (V.250: result codes suppressed, information text and URCs kept) through a whole
  session: +QSSLOPEN URC alone, "> ", SEND OK, the +QSSLRECV block without OK, ESC / ERROR /
  +CME ERROR silent, +QSECWRITE's line, "<ssid>,CLOSE OK"; connectmode 1 without CONNECT,
  "+++" without OK, a refused transparent open as its +QSSLOPEN line alone.
- ATE / ATV / ATQ switched inside the very line that opens an AT+QSSLSEND / AT+QSECWRITE
  prompt or runs AT+QSSLRECV / AT+QSSLCLOSE: the line's echo follows the setting it was typed
  under, the prompt, data echo and answers the new one.
- AT+QSSLCFG forms a careless host writes: an empty value (= the query), lower-case and
  duplicated suite ids, a quoted number, a global option given a context, a comma inside a
  path, a password on "clientkey", signs; the queries and "ctxindex" read them back.
- The slot path spelling decides whether AT+QSSLOPEN finds the AT+QSECWRITE material (case,
  missing '/', a trailing blank as the manual's leading one): -1 before any TCP otherwise.
- Duplicated suite ids on the wire.
- connectmode 1 left with "+++": AT+QSSLSEND still sends on it, the CA slot it was opened with is
  deleted and rewritten meanwhile, AT+QSSLRECV is ERROR, ATO brings the echo; a second
  transparent socket left the same way, and the first one's peer closing: its data come back
  through "recv" / "close" and AT+QSSLRECV although ATO now belongs to the other.
- Leading zeros in every numeric parameter of AT+QSSLOPEN / QSSLRECV / QSSLCLOSE: the URC and
  the answers print the plain numbers; a bad <closetype> leaves the socket alone.
"""
from __future__ import annotations

import socket
import time

import pytest

from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.test_adversarial_ml302_hostile_host_2 import (CTRL_Z, ERROR, ESC, OK, Rig, at_state,
                                                              checksum, written)
from tests.e2e.socket_support import conn_of, wait_received

GUARD = 1.15          # S12 = 50 (1 s) of silence, with a margin


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    yield r
    r.close_all()


def recv_block(data: bytes, port: int = 443) -> bytes:
    return f"\r\n+QSSLRECV: {HOST_IP}:{port},TCP,{len(data)}\r\n".encode() + data + b"\r\n"


def refused_name(rig: Rig, name: str = "refused.test") -> str:
    """A name routed to a loopback port nobody listens on (TCP refused: -1)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rig.emulator.router.add_map(name, 443, "127.0.0.1", port)
    return name


# == ATQ1 through a whole session ===============================================================
def test_atq1_hides_every_result_code_of_a_session_but_no_text(rig):
    srv = rig.server()
    h = rig.host
    h.write("ATQ1\r\n")
    assert h.quiet_for(0.3) == b""
    h.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,0\r\n')
    assert h.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"   # no OK before it
    conn = conn_of(srv)
    h.write("AT+QSSLSEND=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"hello" + CTRL_Z)
    assert h.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert h.read_until(b'"recv",1,0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n'
    h.write("AT+QSSLRECV=1,0,100\r\n")
    assert h.read_until(b"hello\r\n") == recv_block(b"hello")
    assert h.quiet_for(0.3) == b""                                    # no OK
    h.write("AT+QSSLSEND=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"never" + ESC)
    h.write("AT+QSSLSEND=3\r\n")                                      # not connected: ERROR
    h.write("AT+QSECREAD=1\r\n")                                      # empty slot: +CME ERROR: 22
    h.write("AT+QSSLCFG=\"seclevel\",0,9\r\n")                         # ERROR
    assert h.quiet_for(0.5) == b""
    assert bytes(conn.received) == b"hello"                           # ESC sent nothing
    h.write("AT+QSECWRITE=1\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"abc\r\n" + CTRL_Z)
    want = f"\r\n+QSECWRITE: 5,{checksum(b'abc' + bytes([13, 10]))}\r\n".encode()
    assert h.read_until(want) == want
    h.write("AT+QSSLCLOSE=0\r\n")
    assert h.read_until(b"0,CLOSE OK\r\n", 20) == b"\r\n0,CLOSE OK\r\n"
    assert h.quiet_for(0.2) == b""
    # connectmode 1: no CONNECT, the bytes flow, "+++" leaves without OK
    h.write(f'AT+QSSLOPEN=1,0,"{HOST}",443,1\r\n')
    conn1 = conn_of(srv, 1)
    assert h.quiet_for(0.3) == b""
    h.write(b"ping")
    assert h.read_exactly(4) == b"ping"                               # the server's echo, raw
    assert wait_received(conn1, 4) == b"ping"
    time.sleep(GUARD)
    h.write(b"+++")
    time.sleep(GUARD + 0.3)
    assert h.quiet_for(0.2) == b""
    assert bytes(conn1.received) == b"ping"                           # the escape was no data
    h.write("AT+QSSLSTATE\r\n")
    got = h.read_until(b'5,"TCP","",0,"INITIAL",1\r\n')
    assert at_state("CONNECTED") in got.decode() and got.startswith(b'\r\n+QSSLSTATE: "IP PROCESSING"\r\n')
    assert h.quiet_for(0.2) == b""
    # a refused transparent open: its +QSSLOPEN line, the ERROR hidden
    h.write(f'AT+QSSLOPEN=2,0,"{refused_name(rig)}",443,1,10\r\n')
    assert h.read_until(b"+QSSLOPEN: 2,-1\r\n", 20) == b"\r\n+QSSLOPEN: 2,-1\r\n"
    assert h.quiet_for(0.3) == b""
    h.write("ATQ0\r\n")
    assert h.read_until(OK) == OK
    rig.close(1)
    rig.alive()


# == ATE / ATV / ATQ switched in the line that opens a prompt ===================================
def test_echo_verbose_quiet_switched_inside_prompt_and_socket_lines(rig):
    srv = rig.server()
    h = rig.host
    rig.open(2)
    conn = conn_of(srv)
    h.write("ATE1V0;+QSSLSEND=2\r\n")             # typed with echo off: not echoed
    assert h.read_until(b"> ") == b"> "           # ATV0: the bare prompt
    h.write(b"data1" + CTRL_Z)                    # echo now on: the data echoed, not the Ctrl+Z
    assert h.read_until(b"SEND OK\r\n") == b"data1SEND OK\r\n"
    assert h.read_until(b'"recv",1,2\r\n') == b'+QSSLURC: "recv",1,2\r\n'
    assert wait_received(conn, 5) == b"data1"
    h.write("ATE0V1;+QSSLRECV=1,2,100\r\n")       # typed with echo on: echoed (its LF not)
    want = b"ATE0V1;+QSSLRECV=1,2,100\r" + recv_block(b"data1") + OK
    assert h.read_until(OK) == want
    h.write("ATQ1;+QSSLCLOSE=2\r\n")
    assert h.read_until(b"2,CLOSE OK\r\n", 20) == b"\r\n2,CLOSE OK\r\n"
    assert h.quiet_for(0.3) == b""
    h.write("ATQ0E1;+QSECWRITE=0\r\n")            # echo off while typed, on for the data
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(b"abc" + CTRL_Z)
    assert h.read_until(OK) == b"abc" + written(b"abc")
    h.write("ATE0;+QSECDEL=0\r\n")
    assert h.read_until(OK) == b"ATE0;+QSECDEL=0\r" + OK
    assert h.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert h.quiet_for(0.2) == b""


# == AT+QSSLCFG forms ================================================================================
CFG = [
    ('"sslversion",0,', b'\r\n+QSSLCFG: "sslversion",4\r\n\r\nOK\r\n'),   # empty value: the query
    ('"sslversion",0,"3"', ERROR),                                        # a number in quotes
    ('"sslversion",0,03', OK),
    ('"sslversion",0', b'\r\n+QSSLCFG: "sslversion",3\r\n\r\nOK\r\n'),
    ('"sslversion",,3', ERROR),
    ('"seclevel",0,+1', ERROR),
    ('"seclevel",0,1,', ERROR),
    ('"ciphersuite",0,0x0035', OK),
    ('"ciphersuite",0', b'\r\n+QSSLCFG: "ciphersuite",0X0035\r\n\r\nOK\r\n'),
    ('"ciphersuite",0,"0X002F:0X002F:0X0035"', OK),
    ('"ciphersuite",0', b'\r\n+QSSLCFG: "ciphersuite",0X002F:0X002F:0X0035\r\n\r\nOK\r\n'),
    ('"ciphersuite",0,""', ERROR),
    ('"ciphersuite",0,"0X0035:"', ERROR),
    ('"ciphersuite",0,"0xffff"', OK),
    ('"ciphersuite",0', b'\r\n+QSSLCFG: "ciphersuite",0XFFFF\r\n\r\nOK\r\n'),
    ('"https",0,1', ERROR),                                               # no context on a global
    ('"ignorertctime",0,0', ERROR),
    ('"ignorertctime",', b'\r\n+QSSLCFG: "ignorertctime",1\r\n\r\nOK\r\n'),
    ('"httpsctxi",05', OK),
    ('"httpsctxi"', b'\r\n+QSSLCFG: "httpsctxi",5\r\n\r\nOK\r\n'),
    ('"ctxindex",', ERROR),
    ('"ctxindex",0,1', ERROR),
    ('"cacert",0,"a,b"', OK),
    ('"cacert",0', b'\r\n+QSSLCFG: "cacert","a,b"\r\n\r\nOK\r\n'),
    ('"cacert",0,"a"b"', ERROR),
    ('"clientkey",0,"/privateKey.pem","pw"', ERROR),                      # the ML302 has no password
    ('"clientkey",0', b'\r\n+QSSLCFG: "clientkey","/privateKey.pem"\r\n\r\nOK\r\n'),
    ('"ctxindex",0', b'\r\n+QSSLCFG: 0,3,0,0XFFFF,"a,b","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'),
    ('"ctxindex",1', b'\r\n+QSSLCFG: 1,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'),
]


def test_qsslcfg_careless_forms_and_their_read_back(rig):
    for text, answer in CFG:
        assert rig.host.at(f"AT+QSSLCFG={text}") == answer, text
    assert rig.host.quiet_for(0.1) == b""
    rig.alive()


# == the slot path spelling ========================================================================
@pytest.mark.parametrize("path, code", [("/CACRT.PEM", -1), ("caCrt.pem", -1), ("a,b", -1),
                                        ("/caCrt.pem ", 0), ("/caCrt.pem", 0)])
def test_slot_path_spelling_decides_the_open(rig, path, code):
    srv = rig.server()
    assert rig.secwrite(0, rig.pki.ca.cert_pem) == written(rig.pki.ca.cert_pem)
    assert rig.host.at(f'AT+QSSLCFG="cacert",3,"{path}"') == OK
    assert rig.host.at('AT+QSSLCFG="seclevel",3,1') == OK
    rig.open(4, ctx=3, code=code)
    if code == 0:
        conn_of(srv)
        rig.close(4)
    else:
        time.sleep(0.3)
        assert srv.connections == []                  # failed before any TCP
        assert rig.host.at("AT+QSSLCLOSE=4") == OK
        assert rig.host.read_until(b"4,CLOSE OK\r\n") == b"\r\n4,CLOSE OK\r\n"
    rig.alive()


# == duplicated suite ids on the wire ===============================================================
def test_duplicated_suite_ids_are_offered_in_the_configured_order(rig):
    srv = rig.server()
    assert rig.host.at('AT+QSSLCFG="ciphersuite",1,"0X002F:0X002F:0X0035:0X002F"') == OK
    rig.open(0, ctx=1)
    conn = conn_of(srv)
    offered = conn.cipher_suites
    assert offered[-1] == 0x00FF                                    # (SCSV, Mbed TLS's)
    first_seen = list(dict.fromkeys(offered[:-1]))
    assert first_seen == [0x002F, 0x0035], offered
    assert rig.send(0, b"dup") == b"\r\nSEND OK\r\n"
    assert wait_received(conn, 3) == b"dup"
    assert rig.host.read_until(b'"recv",1,0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n'
    assert rig.recv(0) == b"dup"
    rig.close(0)


# == connectmode 1 left with +++ ==================================================================
def escape(h) -> None:
    time.sleep(GUARD)
    h.write(b"+++")
    assert h.read_until(OK, 5) == OK


def test_send_and_slot_rewrite_while_a_transparent_socket_is_escaped(rig):
    srv = rig.server()
    h = rig.host
    ca = rig.pki.ca.cert_pem
    assert rig.secwrite(0, ca) == written(ca)
    assert h.at('AT+QSSLCFG="seclevel",0,1') == OK
    h.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r\n')
    assert h.read_until(b"CONNECT\r\n", 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    h.write(b"ping")
    assert h.read_exactly(4) == b"ping"
    escape(h)
    assert h.at("AT+QSECDEL=0") == OK                               # the slot the socket used
    assert h.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert rig.send(0, b"via-send\r\n+++") == b"\r\nSEND OK\r\n"   # sent on the escaped socket
    assert wait_received(conn, 17) == b"pingvia-send\r\n+++"
    assert h.at("AT+QSSLRECV=1,0,100") == ERROR                     # its bytes wait for ATO
    assert rig.secwrite(0, ca) == written(ca)
    assert h.quiet_for(0.3) == b""                                  # no "recv" URC for them
    h.write("ATO\r\n")
    assert h.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    assert h.read_exactly(13, 10) == b"via-send\r\n+++"             # the echo, first
    h.write(b"more")
    assert h.read_exactly(4) == b"more"
    escape(h)
    rig.close(0)
    rig.open(1)                                                     # the rewritten CA verifies
    rig.close(1)
    rig.alive()


def test_first_escaped_socket_peer_closes_after_a_second_took_ato(rig):
    srv = rig.server()
    h = rig.host
    conns = []
    for ssid in (0, 1):
        h.write(f'AT+QSSLOPEN={ssid},0,"{HOST}",443,1\r\n')
        assert h.read_until(b"CONNECT\r\n", 20) == b"\r\nCONNECT\r\n"
        conns.append(conn_of(srv, ssid))
        h.write(f"s{ssid}".encode())
        assert h.read_exactly(2) == f"s{ssid}".encode()
        escape(h)
    conns[0].send(b"late-0")                                         # waits in socket 0
    time.sleep(0.3)
    assert h.quiet_for(0.2) == b""
    conns[0].close()                                                # peer of socket 0 goes
    got = h.read_until(b'"close",0\r\n', 20)
    assert got == b'\r\n+QSSLURC: "recv",1,0\r\n\r\n+QSSLURC: "close",0\r\n', got
    assert rig.recv(0) == b"late-0"
    assert rig.recv(0) == b""
    st = h.at("AT+QSSLSTATE")
    assert f'+QSSLSTATE: 0,"TCP",{at_state("REMOTE CLOSING")},1'.encode() in st, st
    assert f'+QSSLSTATE: 1,"TCP",{at_state("CONNECTED")},1'.encode() in st, st
    h.write("ATO\r\n")                                              # still socket 1's
    assert h.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    h.write(b"x1")
    assert h.read_exactly(2) == b"x1"
    assert wait_received(conns[1], 4) == b"s1x1"
    escape(h)
    rig.close(0)
    rig.close(1)
    rig.alive()


# == leading zeros ==================================================================================
def test_leading_zeros_in_every_number_of_the_socket_commands(rig):
    srv = rig.server()
    h = rig.host
    assert h.at(f'AT+QSSLOPEN=02,00,"{HOST}",0443,0,0010') == OK
    assert h.read_until(b"+QSSLOPEN: 2,0\r\n", 20) == b"\r\n+QSSLOPEN: 2,0\r\n"
    conn = conn_of(srv)
    assert rig.send(2, b"z") == b"\r\nSEND OK\r\n"
    assert h.read_until(b'"recv",1,2\r\n') == b'\r\n+QSSLURC: "recv",1,2\r\n'
    assert h.at("AT+QSSLRECV=01,002,0001") == recv_block(b"z") + OK
    assert h.at("AT+QSSLRECV=00,02,01500") == OK                    # nothing left
    assert h.at("AT+QSSLCLOSE=02,2") == ERROR                       # <closetype> 0-1
    assert rig.send(2, b"still") == b"\r\nSEND OK\r\n"              # the socket untouched
    assert wait_received(conn, 6) == b"zstill"
    assert h.read_until(b'"recv",1,2\r\n') == b'\r\n+QSSLURC: "recv",1,2\r\n'
    assert h.at("AT+QSSLCLOSE=002,01") == OK
    assert h.read_until(b"2,CLOSE OK\r\n", 20) == b"\r\n2,CLOSE OK\r\n"
    assert h.at("AT+QSSLRECV=1,2,1") == ERROR                       # closed
    rig.alive()


# == the rest of a line after a transparent open ======================================================
def test_commands_after_a_transparent_open_on_its_line_never_run(rig):
    """V.250 (as after D): CONNECT ends the command line; a failed transparent open's ERROR ends
    it too.  The second AT+QSSLOPEN / AT+QSSLCFG behind it never run, neither at CONNECT nor
    when the host comes back with "+++"."""
    srv = rig.server()
    h = rig.host
    h.write(f'AT+QSSLOPEN=3,0,"{HOST}",443,1;+QSSLOPEN=4,0,"{HOST}",443,0;+QSSLCFG="seclevel",0,2\r\n')
    assert h.read_until(b"CONNECT\r\n", 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv, 0)
    h.write(b"AT+QSSLSTATE\r\n")                             # online: data
    assert h.read_exactly(14, 10) == b"AT+QSSLSTATE\r\n"
    assert wait_received(conn, 14) == b"AT+QSSLSTATE\r\n"
    escape(h)
    assert h.quiet_for(0.5) == b""                           # no +QSSLOPEN: 4 ever
    assert len(srv.connections) == 1
    assert h.at('AT+QSSLCFG="seclevel",0') == b'\r\n+QSSLCFG: "seclevel",0\r\n\r\nOK\r\n'
    st = h.at("AT+QSSLSTATE")
    assert b'+QSSLSTATE: 4,"TCP","",0,"INITIAL",1' in st and at_state("CONNECTED").encode() in st
    # a refused transparent open ends its line with its ERROR (ATV0: "4<CR>")
    h.write("ATV0\r\n")
    assert h.read_until(b"0\r") == b"0\r"
    h.write(f'AT+QSSLOPEN=5,0,"{refused_name(rig)}",443,1,10;+QSSLOPEN=4,0,"{HOST}",443,0\r\n')
    assert h.read_until(b"4\r", 20) == b"+QSSLOPEN: 5,-1\r\n4\r"
    assert h.quiet_for(0.5) == b""
    assert len(srv.connections) == 1
    h.write("ATV1\r\n")
    assert h.read_until(OK) == OK                            # (framed as the new setting says)
    rig.close(3)
    rig.alive()


# == AT&F / ATZ in the middle of a session ==========================================================
def test_factory_and_saved_settings_mid_session_leave_sockets_slots_and_contexts(rig):
    """AT&F brings the profile's factory set back (the ML302's echo on), ATZ the AT&W set: the
    port's framing only -- the SSL contexts, the slots and the open sockets stay as they were."""
    srv = rig.server()
    h = rig.host
    assert rig.secwrite(0, b"slot-bytes") == written(b"slot-bytes")
    assert h.at('AT+QSSLCFG="sslversion",2,3;+QSSLCFG="ciphersuite",2,"0X002F"') == OK
    rig.open(1, ctx=2)
    conn = conn_of(srv)
    h.write("ATQ1V0E0&W\r\n")                                # saved: quiet, digits, no echo
    assert h.quiet_for(0.3) == b""
    h.write("AT&F\r\n")
    assert h.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    h.write("AT+QSSLSEND=1\r\n")                             # the factory echo is on
    assert h.read_until(b"> ") == b"AT+QSSLSEND=1\r\r\n> "
    h.write(b"after-f" + CTRL_Z)
    assert h.read_until(b"SEND OK\r\n") == b"after-f\r\nSEND OK\r\n"
    assert wait_received(conn, 7) == b"after-f"
    assert h.read_until(b'"recv",1,1\r\n') == b'\r\n+QSSLURC: "recv",1,1\r\n'
    h.write("ATZ\r\n")                                       # the saved set: ATQ1V0E0
    assert h.read_until(b"ATZ\r") == b"ATZ\r"                 # (typed while echo was on)
    assert h.quiet_for(0.3) == b""
    h.write("AT+QSSLRECV=1,1,100\r\n")
    assert h.read_until(b"after-f\r\n") == b"+QSSLRECV: 106.12.79.254:443,TCP,7\r\nafter-f\r\n"
    h.write('AT+QSSLCFG="ctxindex",2\r\n')
    want = b'+QSSLCFG: 2,3,0,0X002F,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n'
    assert h.read_until(want) == want
    h.write("AT+QSECREAD=0\r\n")
    assert h.read_until(b"\r\n") == f"+QSECREAD: 1,{checksum(b'slot-bytes')}\r\n".encode()
    h.write("AT+QSSLCLOSE=1\r\n")
    assert h.read_until(b"1,CLOSE OK\r\n", 20) == b"1,CLOSE OK\r\n"
    assert h.quiet_for(0.3) == b""
    h.write("ATQ0V1&W\r\n")
    assert h.read_until(OK) == OK
    rig.alive()


# == S3 set to the prompts' own control bytes =====================================================
def test_s3_set_to_ctrl_z_esc_and_nul_the_prompts_still_end_by_their_own_bytes(rig):
    """A hostile host makes the line terminator (S3) Ctrl+Z, then ESC, then NUL: in command
    state that byte ends the line and frames every answer (V.250 6.2.1); inside the
    AT+QSSLSEND / AT+QSECWRITE prompts Ctrl+Z still sends / stores and ESC still cancels, and a
    CR in the data is data."""
    srv = rig.server()
    h = rig.host
    rig.open(0)
    conn = conn_of(srv)
    h.write("ATS3=26\r")
    assert h.read_until(b"OK\x1a\n") == b"\x1a\nOK\x1a\n"
    h.write(b"AT+QSSLSEND=0\x1a")
    assert h.read_until(b"> ") == b"\x1a\n> "
    h.write(b"ab\rc\x1a")
    assert h.read_until(b"SEND OK\x1a\n") == b"\x1a\nSEND OK\x1a\n"
    assert h.read_until(b'"recv",1,0\x1a\n') == b'\x1a\n+QSSLURC: "recv",1,0\x1a\n'
    h.write(b"AT+QSSLRECV=1,0,100\x1a")
    assert h.read_until(b"OK\x1a\n") == \
        b"\x1a\n+QSSLRECV: 106.12.79.254:443,TCP,4\x1a\nab\rc\x1a\n\x1a\nOK\x1a\n"
    h.write(b"AT+QSECWRITE=0\x1a")
    assert h.read_until(b"> ") == b"\x1a\n> "
    h.write(b"x\ry\x1a")
    assert h.read_until(b"OK\x1a\n") == f"\x1a\n+QSECWRITE: 3,{checksum(b'x' + bytes([13]) + b'y')}\x1a\n\x1a\nOK\x1a\n".encode()
    h.write(b"ATS3=27\x1a")
    assert h.read_until(b"OK\x1b\n") == b"\x1b\nOK\x1b\n"
    h.write(b"AT+QSSLSEND=0\x1b")
    assert h.read_until(b"> ") == b"\x1b\n> "
    h.write(b"no\x1b")                                       # ESC: cancelled, as ever
    assert h.read_until(b"OK\x1b\n") == b"\x1b\nOK\x1b\n"
    h.write(b"AT+QSSLSEND=0\x1b")
    assert h.read_until(b"> ") == b"\x1b\n> "
    h.write(b"zz\x1a")
    assert h.read_until(b"SEND OK\x1b\n") == b"\x1b\nSEND OK\x1b\n"
    assert h.read_until(b'"recv",1,0\x1b\n') == b'\x1b\n+QSSLURC: "recv",1,0\x1b\n'
    assert wait_received(conn, 6) == b"ab\rczz"
    h.write(b"ATS3=0\x1b")
    assert h.read_until(b"OK\x00\n") == b"\x00\nOK\x00\n"
    h.write(b"AT+QSSLRECV=1,0,100\x00")
    assert h.read_until(b"OK\x00\n") == b"\x00\n+QSSLRECV: 106.12.79.254:443,TCP,2\x00\nzz\x00\n\x00\nOK\x00\n"
    h.write(b"AT+QSECREAD=0\x00")
    assert h.read_until(b"OK\x00\n") == \
        f"\x00\n+QSECREAD: 1,{checksum(b'x' + bytes([13]) + b'y')}\x00\n\x00\nOK\x00\n".encode()
    h.write(b"ATS3=13\x00")
    assert h.read_until(OK) == OK
    assert bytes(conn.received) == b"ab\rczz"                # "no" never sent
    rig.close(0)
    rig.alive()
