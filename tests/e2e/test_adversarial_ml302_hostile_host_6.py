"""Adversarial, sixth round of hostile HOST programs against the ML302 profile: conformance with
the OneMO ML302 SSL AT manual (/work/shared/seeds/000_*.txt, §2.1-§2.10) where rounds 1-5
(test_adversarial_ml302_*.py), test_ml302_ssl.py, test_ssl_options_ml302.py and
test_stateful_ml302.py leave gaps; docs/behaviour.md ("ML302 SSL commands", "ML302
certificate store", "TLS options / ML302 subset") for what the manual leaves open.

Hosts are hostile_host_2's: CR LF lines written one byte per write(), reads of 1/3/7/4095 bytes.

- §2.1 path options at the file-name limit (profile files.max_name_len, 80): 80 bytes kept and
  read back byte for byte in the option's query and in "ctxindex" (ASCII, UTF-8 Chinese,
  a high latin-1 byte), 81 bytes ERROR with the old value kept -- for cacert, clientcert and
  clientkey alike (only cacert's 81 was tested before).
- §2.1 "if the third (second) parameter is omitted, query": a trailing empty value is the query
  form for every context option and every global one, and changes nothing; an empty
  <ctxindex> or option name is ERROR.
- §2.1 <ciphersuite> spellings: short ids, lower case, all six in the table's order;
  an empty list, a trailing ':', five hex digits, no 0X prefix: ERROR, the old value kept.
- §2.2-§2.4 error texts with AT+CMEE=2 byte for byte (not found, incorrect parameters,
  operation not allowed, memory full) and AT+CMEE=0 plain ERROR; ESC at once / Ctrl+Z at once.
- §2.5 forms: quoted <port> / <connectmode> ERROR, an empty <connectmode> ERROR, an empty
  <timeout> the default; §2.6 <closetype> forms.
- §2.9 AT+QSSLSTATE for opens that fail before any TCP (a non-slot CA path at seclevel 1, a
  name nobody resolves, malformed IP literals): "",<dialled port>,"CLOSED",1 each, the first
  line "IP STATUS"; such an ssid answers AT+QSSLSEND / AT+QSSLRECV ERROR, closes with
  "OK" + "<ssid>,CLOSE OK" and opens again.
- §2.7 / §2.8 at one byte: a one-byte send, its echo read with <length> 1, then a bare OK.
- One context used by several ssids at once: AT+QSSLCFG writes to it while two sockets are
  connected change only the next open (suites and version seen by the server), the connected
  ones keep working, and a seclevel change that makes the next open fail (-1) leaves them up;
  the same context rewritten while an open on it waits in its handshake (that open keeps the
  settings of its own line, a second ssid on the context follows the new ones).
- §2.5 <timeout> left out or empty: 90 s on the modem's clock (91 one second later).
- §2.1 <sslversion> 4 is TLS 1.2 at most; pins against servers outside them: -1.
- ';' and ',' inside a quoted path are the path; a quote inside it is ERROR.

No test here found the emulator departing from the manual or docs/behaviour.md (every
candidate -- an omitted value read as the query, "" / 80-byte / non-ASCII paths, failed opens
showing "",<port>,"CLOSED" -- matched a documented decision or a consistent reading).
"""
from __future__ import annotations

import re
import time

import pytest

from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.socket_support import conn_of, wait_for, wait_received
from tests.e2e.test_adversarial_ml302_hostile_host_2 import (CTRL_Z, ERROR, ESC, OK, HeldHandshake, Rig, at_state,
                                                              written)

SCSV = 0x00FF


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    yield r
    r.close_all()


def ans(*lines: str | bytes, final: str = "OK") -> bytes:
    body = b"".join(b"\r\n" + (l.encode("latin-1") if isinstance(l, str) else l) + b"\r\n" for l in lines)
    return body + f"\r\n{final}\r\n".encode()


def at(rig, line: str | bytes) -> bytes:
    raw = line.encode("latin-1") if isinstance(line, str) else line
    return rig.host.at(raw)


DEFAULT_PATHS = {"cacert": b"/caCrt.pem", "clientcert": b"/clientCrt.pem", "clientkey": b"/privateKey.pem"}


def ctxindex(ctx: int, sslversion=b"4", seclevel=b"0", suites=b"0XFFFF", paths=None) -> bytes:
    p = {**DEFAULT_PATHS, **(paths or {})}
    return ans(b"+QSSLCFG: %d,%s,%s,%s,\"%s\",\"%s\",\"%s\"" % (ctx, sslversion, seclevel, suites,
                                                                p["cacert"], p["clientcert"], p["clientkey"]))


# == §2.1 file names at the limit ================================================================
@pytest.mark.parametrize("option", ["cacert", "clientcert", "clientkey"])
def test_path_names_at_and_one_past_the_80_byte_limit(rig, option):
    ctx = 4
    ascii80 = b"/" + b"c" * 75 + b".pem"
    chinese80 = b"/" + "证书".encode() * 12 + b"abc.pem"      # 1 + 72 + 7 = 80 bytes, 32 characters
    latin80 = b"/" + b"\xe9" * 75 + b".pem"
    for name in (ascii80, chinese80, latin80):
        assert len(name) == 80
        assert at(rig, b'AT+QSSLCFG="%s",%d,"%s"' % (option.encode(), ctx, name)) == OK, name
        assert at(rig, b'AT+QSSLCFG="%s",%d' % (option.encode(), ctx)) == \
            ans(b'+QSSLCFG: "%s","%s"' % (option.encode(), name)), name
        assert at(rig, f'AT+QSSLCFG="ctxindex",{ctx}') == ctxindex(ctx, paths={option: name})
        for longer in (name + b"m", b"/x" + name[1:]):
            assert len(longer) == 81
            assert at(rig, b'AT+QSSLCFG="%s",%d,"%s"' % (option.encode(), ctx, longer)) == ERROR
            assert at(rig, b'AT+QSSLCFG="%s",%d' % (option.encode(), ctx)) == \
                ans(b'+QSSLCFG: "%s","%s"' % (option.encode(), name))
    # the manual's own path back again: the other contexts never saw any of it
    assert at(rig, f'AT+QSSLCFG="{option}",{ctx},"{DEFAULT_PATHS[option].decode()}"') == OK
    for other in range(6):
        assert at(rig, f'AT+QSSLCFG="ctxindex",{other}') == ctxindex(other)
    rig.alive()


def test_separators_inside_a_quoted_path_are_the_path(rig):
    """';' and ',' inside the quotes of a path are part of it (the line goes on after the
    closing quote); a quote inside the path is ERROR and the value before it stays."""
    assert at(rig, 'AT+QSSLCFG="clientkey",1,"/k;e,y.pem";+QSSLCFG="clientkey",1;+QSSLCFG="seclevel",1') == \
        b'\r\n+QSSLCFG: "clientkey","/k;e,y.pem"\r\n\r\n+QSSLCFG: "seclevel",0\r\n\r\nOK\r\n'
    assert at(rig, 'AT+QSSLCFG="ctxindex",1') == ctxindex(1, paths={"clientkey": b"/k;e,y.pem"})
    for bad in ('AT+QSSLCFG="clientkey",1,"/a\\"b"', 'AT+QSSLCFG="clientkey",1,"/a"b"',
                'AT+QSSLCFG="clientkey",1,/a"b', 'AT+QSSLCFG="clientkey",1,"/ab'):
        assert at(rig, bad) == ERROR, bad
    assert at(rig, 'AT+QSSLCFG="clientkey",1') == ans('+QSSLCFG: "clientkey","/k;e,y.pem"')
    rig.alive()


# == §2.1 an omitted value is the query ===========================================================
def test_an_empty_trailing_value_is_the_query_and_changes_nothing(rig):
    writes = {"sslversion": "2", "seclevel": "1", "ciphersuite": '"0X002F:0X0035"', "cacert": '"/caCrt.pem"',
              "clientcert": '"/x.pem"', "clientkey": '"/y.pem"'}
    shown = {"sslversion": "2", "seclevel": "1", "ciphersuite": "0X002F:0X0035", "cacert": '"/caCrt.pem"',
             "clientcert": '"/x.pem"', "clientkey": '"/y.pem"'}
    for name, value in writes.items():
        assert at(rig, f'AT+QSSLCFG="{name}",3,{value}') == OK
    for name in writes:
        for line in (f'AT+QSSLCFG="{name}",3,', f'AT+QSSLCFG="{name}",3, ', f'AT+QSSLCFG = "{name}" , 3 ,'):
            assert at(rig, line) == ans(f'+QSSLCFG: "{name}",{shown[name]}'), line
    assert at(rig, 'AT+QSSLCFG="ctxindex",3') == ctxindex(3, b"2", b"1", b"0X002F:0X0035",
                                                          {"clientcert": b"/x.pem", "clientkey": b"/y.pem"})
    for name, value in (("ignorertctime", 0), ("https", 1), ("httpsctxi", 5)):
        assert at(rig, f'AT+QSSLCFG="{name}",{value}') == OK
        assert at(rig, f'AT+QSSLCFG="{name}",') == ans(f'+QSSLCFG: "{name}",{value}')
        assert at(rig, f'AT+QSSLCFG="{name}",,') == ERROR
    for line in ('AT+QSSLCFG="ctxindex",3,', 'AT+QSSLCFG="ctxindex",', 'AT+QSSLCFG="seclevel",,1',
                 'AT+QSSLCFG=,3', 'AT+QSSLCFG="",3', 'AT+QSSLCFG="seclevel",3,,', 'AT+QSSLCFG=,'):
        assert at(rig, line) == ERROR, line
    assert at(rig, 'AT+QSSLCFG="seclevel",3') == ans('+QSSLCFG: "seclevel",1')
    rig.alive()


# == §2.1 <ciphersuite> spellings ================================================================
def test_ciphersuite_spellings_and_refusals_keep_the_old_list(rig):
    for value, shown in (('"0X35"', "0X0035"), ("0x3d", "0X003D"), ('"0xffff"', "0XFFFF"),
                         ('"0X0035:0X0005:0X0004:0X000A:0X002F:0X003D"',
                          "0X0035:0X0005:0X0004:0X000A:0X002F:0X003D"),
                         ('"0x2f:0X5"', "0X002F:0X0005")):
        assert at(rig, f'AT+QSSLCFG="ciphersuite",2,{value}') == OK, value
        assert at(rig, 'AT+QSSLCFG="ciphersuite",2') == ans(f'+QSSLCFG: "ciphersuite",{shown}'), value
    for bad in ('""', '"0X002F:"', '":0X002F"', '"0X002F::0X0035"', '"0X0002F"', "002F", '"0X"',
                '"0XFFFF:0XFFFF"', '"0X002F,0X0035"', '"0X002G"'):
        assert at(rig, f'AT+QSSLCFG="ciphersuite",2,{bad}') == ERROR, bad
    assert at(rig, 'AT+QSSLCFG="ciphersuite",2') == ans('+QSSLCFG: "ciphersuite",0X002F:0X0005')
    rig.alive()


# == §2.2-§2.4 error texts ======================================================================
def test_store_errors_verbose_numeric_and_plain(rig):
    h = rig.host
    cases = (("AT+QSECREAD=0", 22, "not found"), ("AT+QSECWRITE=3", 50, "incorrect parameters"),
             ("AT+QSECDEL=-1", 50, "incorrect parameters"), ("AT+QSECREAD=", 50, "incorrect parameters"))
    for cmee in (2, 1, 0):
        assert at(rig, f"AT+CMEE={cmee}") == OK
        for line, code, text in cases:
            want = {2: f"\r\n+CME ERROR: {text}\r\n", 1: f"\r\n+CME ERROR: {code}\r\n", 0: "\r\nERROR\r\n"}[cmee]
            assert at(rig, line) == want.encode(), (cmee, line)
        # Ctrl+Z at once: nothing to store (50); ESC at once: cancelled, OK, nothing stored
        h.write("AT+QSECWRITE=1\r\n")
        assert h.read_until(b"> ") == b"\r\n> "
        h.write(CTRL_Z)
        want = {2: b"\r\n+CME ERROR: incorrect parameters\r\n", 1: b"\r\n+CME ERROR: 50\r\n", 0: ERROR}[cmee]
        assert h.read_until(re.compile(rb"\r\n(ERROR|\+CME ERROR: [^\r]+)\r\n")) == want
        h.write("AT+QSECWRITE=1\r\n")
        assert h.read_until(b"> ") == b"\r\n> "
        h.write(ESC)
        assert h.read_until(OK) == OK
        assert at(rig, "AT+QSECREAD=1") == {2: b"\r\n+CME ERROR: not found\r\n",
                                           1: b"\r\n+CME ERROR: 22\r\n", 0: ERROR}[cmee]
    assert at(rig, "AT+CMEE=2") == OK
    assert rig.secwrite(2, b"k") == written(b"k")
    assert at(rig, "AT+QSECWRITE=2") == b"\r\n+CME ERROR: operation not allowed\r\n"
    h.write("AT+QSECWRITE=0\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.whole(b"x" * 16385 + CTRL_Z)
    assert h.read_until(b"full\r\n", 20) == b"\r\n+CME ERROR: memory full\r\n"
    assert at(rig, "AT+QSECREAD=0") == b"\r\n+CME ERROR: not found\r\n"
    assert at(rig, "AT+QSECDEL=0") == OK                   # missing: OK all the same
    assert at(rig, "AT+QSECREAD=2") == b"\r\n+QSECREAD: 1,6b00\r\n\r\nOK\r\n"
    rig.alive()


# == §2.5 / §2.6 forms =============================================================================
def test_open_and_close_parameter_forms(rig):
    srv = rig.server(mode="echo")
    for line in (f'AT+QSSLOPEN=0,0,"{HOST}","443",0', f'AT+QSSLOPEN=0,0,"{HOST}",443,"0"',
                 f'AT+QSSLOPEN=0,0,"{HOST}",443,', f'AT+QSSLOPEN=0,0,"{HOST}",443,,90',
                 f'AT+QSSLOPEN="0",0,"{HOST}",443,0', f'AT+QSSLOPEN=0,"0","{HOST}",443,0',
                 f'AT+QSSLOPEN=0,0,"{HOST}",443,0,"90"', f'AT+QSSLOPEN=,0,"{HOST}",443,0',
                 f'AT+QSSLOPEN=0,0,"{HOST}",443,0,90,1', f'AT+QSSLOPEN=0,0,"{HOST}",-443,0'):
        assert at(rig, line) == ERROR, line
    assert rig.host.quiet_for(0.3) == b""
    assert srv.connections == []
    rig.open(0, extra=",")                                  # an empty <timeout>: the default 90 s
    for line in ("AT+QSSLCLOSE=,1", "AT+QSSLCLOSE=0,-1", 'AT+QSSLCLOSE=0,"0"', "AT+QSSLCLOSE=0,0,0"):
        assert at(rig, line) == ERROR, line
    assert rig.host.at("AT+QSSLSTATE") == rig.state({0: at_state("CONNECTED")})
    rig.host.write("AT+QSSLCLOSE=0,\r\n")                   # an empty <closetype>
    assert rig.host.read_until(b"0,CLOSE OK\r\n", 20) == OK + b"\r\n0,CLOSE OK\r\n"
    wait_for(lambda: conn_of(srv).client_eof, 10, "the server to see the close")
    rig.open(0, extra=",10")
    rig.host.write("AT+QSSLCLOSE=0,1\r\n")
    assert rig.host.read_until(b"0,CLOSE OK\r\n", 20) == OK + b"\r\n0,CLOSE OK\r\n"
    assert rig.host.at("AT+QSSLSTATE") == rig.state({0: at_state("CLOSED")}, "IP STATUS")
    rig.alive()


# == §2.9 opens that fail before any TCP ============================================================
def test_state_of_opens_that_fail_before_tcp_and_their_ssids_afterwards(rig):
    srv = rig.server(mode="echo")
    assert at(rig, 'AT+QSSLCFG="cacert",1,"/notaslot.pem"') == OK
    assert at(rig, 'AT+QSSLCFG="seclevel",1,1') == OK
    rig.open(1, ctx=1, code=-1)                              # a CA path that names no slot
    rig.open(2, name="nobody.invalid", code=-1, port=8443)   # nobody resolves it
    rig.open(3, name="256.1.1.1", code=-1)
    rig.open(4, name="1.2.3.4.5", code=-1, port=1)
    assert srv.connections == []
    failed = {1: '"",443,"CLOSED"', 2: '"",8443,"CLOSED"', 3: '"",443,"CLOSED"', 4: '"",1,"CLOSED"'}
    assert rig.host.at("AT+QSSLSTATE") == rig.state(failed, "IP STATUS")
    for ssid in failed:
        assert at(rig, f"AT+QSSLSEND={ssid}") == ERROR
        assert at(rig, f"AT+QSSLRECV=1,{ssid},1500") == ERROR
    rig.close(2)
    assert rig.host.at("AT+QSSLSTATE") == rig.state(failed, "IP STATUS")   # still CLOSED, as it was
    rig.open(1, ctx=0)                                       # failed ssids open again at once
    rig.open(2)
    assert rig.host.at("AT+QSSLSTATE") == rig.state(
        {**failed, 1: at_state("CONNECTED"), 2: at_state("CONNECTED")})
    rig.close(1)
    rig.close(2)
    rig.alive()


# == §2.7 / §2.8 at one byte ======================================================================
def test_one_byte_send_and_one_byte_reads(rig):
    srv = rig.server(mode="echo")
    rig.open(5, ctx=5)
    conn = conn_of(srv)
    h = rig.host
    h.write("AT+QSSLSEND = 5\r\n")
    assert h.read_until(b"> ") == b"\r\n> "
    h.write(CTRL_Z)                                          # nothing typed: ERROR, nothing sent
    assert h.read_until(ERROR) == ERROR
    assert rig.send(5, b"") == ERROR
    for line in ("AT+QSSLSEND=5,", 'AT+QSSLSEND="5"', "AT+QSSLSEND=5,1", "AT+QSSLSEND=-5"):
        assert at(rig, line) == ERROR, line
    time.sleep(0.2)
    assert bytes(conn.received) == b""
    assert rig.send(5, b"\x00") == b"\r\nSEND OK\r\n"
    urc = b'\r\n+QSSLURC: "recv",1,5\r\n'
    assert h.read_until(urc, 20) == urc
    assert wait_received(conn, 1) == b"\x00"
    h.write("AT+QSSLRECV=0,5,1\r\n")
    assert h.read_until(b"\r\nOK\r\n", 10) == f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,1\r\n".encode() + b"\x00" + b"\r\n\r\nOK\r\n"
    assert at(rig, "AT+QSSLRECV=1,5,1") == OK
    assert rig.send(5, b"ab") == b"\r\nSEND OK\r\n"
    assert h.read_until(urc, 20) == urc                      # the buffer was empty: a new URC
    wait_for(lambda: any(s["id"] == 5 and s["unread"] >= 2
                         for s in rig.emulator.control("state")["sockets"]), 10, "both bytes in")
    for byte in (b"a", b"b"):
        h.write("AT+QSSLRECV=1,5,1\r\n")
        assert h.read_until(b"\r\nOK\r\n", 10) == f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,1\r\n".encode() + byte + b"\r\n\r\nOK\r\n"
    assert at(rig, "AT+QSSLRECV=1,5,1500") == OK
    assert h.quiet_for(0.3) == b""
    rig.close(5)
    rig.alive()


# == one context, several sockets ==============================================================
def test_cfg_writes_to_a_context_in_use_change_only_the_next_open(rig):
    srv = rig.server(mode="echo", min_version="TLSv1", max_version="TLSv1.2")
    assert at(rig, 'AT+QSSLCFG="ciphersuite",3,"0X002F";+QSSLCFG="sslversion",3,3') == OK
    rig.open(0, ctx=3)
    rig.open(1, ctx=3)
    first, second = conn_of(srv, 0), conn_of(srv, 1)
    for conn in (first, second):
        assert conn.cipher_suites == [0x002F, SCSV] and conn.version == "TLSv1.2"
    assert at(rig, 'AT+QSSLCFG="ciphersuite",3,"0X0035:0X002F";+QSSLCFG="sslversion",3,1') == OK
    assert rig.send(0, b"zero") == b"\r\nSEND OK\r\n"        # the connected ones are untouched
    assert rig.host.read_until(b'"recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    assert rig.send(1, b"one") == b"\r\nSEND OK\r\n"
    assert rig.host.read_until(b'"recv",1,1\r\n', 20) == b'\r\n+QSSLURC: "recv",1,1\r\n'
    assert wait_received(first, 4) == b"zero" and wait_received(second, 3) == b"one"
    assert rig.recv_all(1, 3) == b"one"
    assert rig.recv_all(0, 4) == b"zero"
    rig.open(2, ctx=3)
    third = conn_of(srv, 2)
    assert third.cipher_suites == [0x0035, 0x002F, SCSV] and third.version == "TLSv1"
    # seclevel 1 with the CA slot empty: the next open on the context fails, the others stay
    assert at(rig, 'AT+QSSLCFG="seclevel",3,1') == OK
    rig.open(3, ctx=3, code=-1)
    assert len(srv.connections) == 3
    assert rig.host.at("AT+QSSLSTATE") == rig.state(
        {0: at_state("CONNECTED"), 1: at_state("CONNECTED"), 2: at_state("CONNECTED"),
         3: '"",443,"CLOSED"'})
    assert rig.send(0, b"-again") == b"\r\nSEND OK\r\n"
    assert rig.host.read_until(b'"recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    assert wait_received(first, 10) == b"zero-again"
    assert rig.recv_all(0, 6) == b"-again"
    assert rig.recv(1) == b"" and rig.recv(2) == b""
    for ssid in (0, 1, 2):
        rig.close(ssid)
    rig.alive()


def test_context_rewritten_while_an_open_on_it_waits_in_its_handshake(rig):
    """ssid 0 opens on context 2 ("0X002F", seclevel 0) to a server that holds its handshake;
    meanwhile the host rewrites context 2 (another suite, seclevel 1, a CA that did not issue
    the server's certificate) and ssid 1 opens on the same context to another server: ssid 1
    follows the new settings (-1), ssid 0 finishes with the settings of its own line
    (AES128-SHA, no verification), once."""
    held = HeldHandshake(rig, "held.test")
    srv = rig.server()
    h = rig.host
    try:
        assert at(rig, 'AT+QSSLCFG="ciphersuite",2,"0X002F"') == OK
        h.write('AT+QSSLOPEN=0,2,"held.test",443,0\r\n')
        assert h.read_until(OK) == OK
        assert held.accepted.wait(10)
        assert rig.secwrite(0, rig.pki.client.cert_pem) == written(rig.pki.client.cert_pem)
        assert at(rig, 'AT+QSSLCFG="ciphersuite",2,"0X0035";+QSSLCFG="seclevel",2,1') == OK
        rig.open(1, ctx=2, code=-1)                           # wrong CA: the new settings
        rig.open(3, ctx=3)                                    # another context: unaffected
        assert srv.wait_handshake(0).cipher_suites == [0x0035, SCSV]          # ssid 1: the new suite
        assert 0x002F in conn_of(srv, 1).cipher_suites                         # ssid 3: 0XFFFF
        assert rig.host.at("AT+QSSLSTATE") == rig.state(
            {0: at_state("CONNECTING"), 1: at_state("CLOSED"), 3: at_state("CONNECTED")})
        assert h.quiet_for(0.3) == b""
        tls = held.release()
        assert h.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert tls.cipher()[0] == "AES128-SHA"
        assert rig.send(0, b"held") == b"\r\nSEND OK\r\n"
        tls.settimeout(10)
        assert tls.recv(100) == b"held"
        held.closed_by_host(rig, 0)
        rig.close(3)
        assert h.transcript.count(b"+QSSLOPEN: 0,") == 1
        rig.alive()
    finally:
        held.close()


@pytest.fixture
def rig_manual(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem, manual_time=True)
    yield r
    r.close_all()


def test_omitted_and_empty_timeout_are_the_default_90_seconds(rig_manual):
    """§2.5: <timeout> 10-300 s, default 90: left out, or given empty, the open ends at 90 s of
    the modem's clock (servers that accept TCP and never answer the ClientHello); 91 a
    second later; all three CLOSED with their address, the port answering throughout."""
    rig = rig_manual
    held = [HeldHandshake(rig, f"held{i}.test") for i in range(3)]
    h = rig.host
    try:
        for ssid, extra in ((0, ""), (1, ","), (2, ",91")):
            assert h.at(f'AT+QSSLOPEN={ssid},0,"held{ssid}.test",443,0{extra}') == OK
        for srv in held:
            assert srv.accepted.wait(10)
        rig.advance(89.9)
        assert h.quiet_for(0.2) == b""
        assert h.at("AT+QSSLSTATE") == rig.state({i: at_state("CONNECTING") for i in range(3)})
        rig.advance(0.1)
        want = b"\r\n+QSSLOPEN: 0,-1\r\n\r\n+QSSLOPEN: 1,-1\r\n"
        got = h.read_until(b"1,-1\r\n", 20)
        assert sorted(got.split(b"\r\n\r\n")) == sorted(want.split(b"\r\n\r\n")), got
        assert h.quiet_for(0.2) == b""
        rig.advance(0.9)
        assert h.quiet_for(0.2) == b""
        rig.advance(0.1)
        assert h.read_until(b"2,-1\r\n", 20) == b"\r\n+QSSLOPEN: 2,-1\r\n"
        assert h.at("AT+QSSLSTATE") == rig.state({i: at_state("CLOSED") for i in range(3)}, "IP STATUS")
        rig.alive()
    finally:
        for srv in held:
            srv.close()


def test_sslversion_4_is_tls_1_2_at_most_and_pins_fail_against_servers_outside_them(rig):
    """§1.1 / §2.1: SSL3.0-TLS1.2, 4 = all of them: against a TLS 1.0-1.3 server sslversion 4
    gets TLS 1.2 (the ML302 has no TLS 1.3), a TLS 1.3-only server is -1; 1 (TLS 1.0)
    against a TLS 1.2-only server is -1; 0 (SSL 3.0) is -1."""
    wide = rig.server(name="wide.test", min_version="TLSv1", max_version="TLSv1.3")
    only13 = rig.server(name="only13.test", min_version="TLSv1.3", max_version="TLSv1.3")
    only12 = rig.server(name="only12.test", min_version="TLSv1.2", max_version="TLSv1.2")
    assert at(rig, 'AT+QSSLCFG="sslversion",1,1;+QSSLCFG="sslversion",2,0;+QSSLCFG="sslversion",0') == \
        ans('+QSSLCFG: "sslversion",4')
    rig.open(0, name="wide.test")
    assert conn_of(wide).version == "TLSv1.2"
    rig.open(1, name="only13.test", code=-1)
    rig.open(2, ctx=1, name="only12.test", code=-1)
    rig.open(3, ctx=1, name="wide.test")
    assert conn_of(wide, 1).version == "TLSv1"
    rig.open(4, ctx=2, name="wide.test", code=-1)
    rig.open(5, ctx=0, name="only12.test")
    assert conn_of(only12).version == "TLSv1.2"
    assert all(not c.handshake_done for c in only13.connections)
    for ssid in (0, 3, 5):
        rig.close(ssid)
    rig.alive()
