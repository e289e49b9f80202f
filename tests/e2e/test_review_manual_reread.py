"""Independent review: both manuals re-read line by line, compared with what the pty answers.

Only what the existing conformance tests (test_manual_conformance.py, test_ssl_ec2x.py,
test_ml302_ssl.py, test_ssl_options_*.py, test_secstore_at.py, test_hardening_ssl_commands.py)
do not already check.  EC2x: "EC2x&EG9x&EG2x-G&EM05 Series SSL Application Note" V1.1 (the
note; OCR text).  ML302: the OneMO ML302 SSL AT command manual (Chinese).  Decisions where
they are silent: docs/behaviour.md.  Every peer is an OpenSSL server (Python ssl,
emulator.testing.peers.TlsServer) on 127.0.0.1 reached through a route.  No timing
assertions: waits are generous, and anything about time runs on the modem's manual clock.

Tests marked xfail(strict=True) are deviations from the manual (or from behaviour.md's own
rules) that no documented decision covers.
"""
from __future__ import annotations

import re
import threading
import time

import pytest

from emulator.sockets.service import ssl_service
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import escape

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
NOTE_HOST = "220.180.239.212"                       # the note's §3 server
ML_HOST, ML_IP = "www.iottest.work", "106.12.79.254"  # ML302 §3's server and its DNS answer


def qigeterror(host) -> bytes:
    return host.at("AT+QIGETERROR")


def err(code: int, text: str) -> bytes:
    return f"\r\n+QIGETERROR: {code},{text}\r\n".encode() + OK


def opened(host, cid: int, timeout: float = 30) -> bytes:
    return host.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,-?\d+\r\n" % cid), timeout)


def open_note(host, emulator, server, port: int, access_mode: int) -> None:
    """The note's §3 open on clientID 4 (SSL context 1) to NOTE_HOST:<port>, routed to
    `server`: OK, then +QSSLOPEN: 4,0."""
    emulator.router.add_map(NOTE_HOST, port, "127.0.0.1", server.port)
    assert host.at(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",{port},{access_mode}') == OK
    assert opened(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def inbox_len(emulator, port, cid: int) -> int:
    """Bytes the modem holds for AT+QSSLRECV on socket `cid` (read on the loop thread)."""
    def size() -> int:
        sock = ssl_service(port.modem).sockets.get(cid)
        return -1 if sock is None else len(sock.inbox)
    return emulator.run(size)


def ec2x_up(open_modem, **kw):
    host, port = open_modem("ec2x", **kw)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return host, port


def ml302_up(open_modem, **kw):
    host, port = open_modem("ml302", **kw)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
    return host, port


def route_ml(emulator, server) -> None:
    emulator.router.add_map(ML_HOST, 443, "127.0.0.1", server.port)
    emulator.router.add_dns(ML_HOST, ML_IP)


def ml_send(host, ssid: int, data: bytes) -> bytes:
    host.write(f"AT+QSSLSEND={ssid}\r")
    assert host.read_until(re.compile(rb"\r\n> |\r\nERROR\r\n")) == b"\r\n> "
    host.write(data + b"\x1a")
    return host.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR|OK)\r\n"))


# == EC2x ======================================================================================

def test_ec2x_3_4_1_direct_push_state_line_and_no_qsslrecv(open_modem, emulator, pki):
    # §3.4.1: AT+QSSLOPEN=1,1,4,"220.180.239.212",8011,1 / OK / +QSSLOPEN: 4,0 / AT+QSSLSTATE /
    #   +QSSLSTATE: 4,"SSLClient","220.180.239.212",8011,65047,2,1,4,1,"usbmodem",1 / OK
    # (<access_mode> 1 in the 9th field).  §2.2.4: AT+QSSLRECV reads the buffer of an
    # <access_mode> 0 connection; behaviour.md "SSL sockets": on a push socket it is ERROR,
    # AT+QIGETERROR 572.  §3.4.3: the data come pushed instead.
    host, _ = ec2x_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        open_note(host, emulator, server, 8011, 1)
        state = host.at("AT+QSSLSTATE")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8011,\d{1,5},2,1,4,1,'
                            rb'"usbmodem",1\r\n\r\nOK\r\n', state), state
        assert host.at("AT+QSSLRECV=4,1500") == ERROR
        assert qigeterror(host) == err(572, "operation not allowed")
        assert host.send_data(4, b"Test data from SSL") == b"\r\nSEND OK\r\n"
        assert host.seen(b'+QSSLURC: "recv",4,18\r\nTest data from SSL\r\n') == \
            b'+QSSLURC: "recv",4,18\r\nTest data from SSL\r\n'
        assert host.at("AT+QSSLCLOSE=4") == OK


def test_ec2x_variable_length_send_is_at_most_1460_bytes(open_modem, emulator, pki):
    # §2.2.3 NOTE: "When sending variable-length data, the maximum length is 1460 bytes."
    # Write form "AT+QSSLSEND=<clientID>": "Tap CTRL+Z to send ... If connection has been
    # established and sending is successful: SEND OK"; "the parameter is incorrect: ERROR".
    # behaviour.md: more than 1460 before Ctrl+Z is ERROR/552, an empty send ERROR/552; nothing
    # of a refused send reaches the server.
    host, _ = ec2x_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="sink") as server:
        open_note(host, emulator, server, 8010, 0)
        full = bytes(b for b in range(0x20, 0x7F)) * 15 + b"-" * 35           # 1460, no ^Z/ESC
        assert len(full) == 1460
        assert host.send_data(4, full, fixed=False) == b"\r\nSEND OK\r\n"
        assert host.send_data(4, b"x" * 1461, fixed=False) == ERROR
        assert qigeterror(host) == err(552, "invalid parameter")
        assert host.send_data(4, b"", fixed=False) == ERROR
        assert qigeterror(host) == err(552, "invalid parameter")
        assert host.send_data(4, b"end", fixed=False) == b"\r\nSEND OK\r\n"
        wait_until(lambda: len(server.conn.received) >= 1463, "the server's bytes")
        assert bytes(server.conn.received) == full + b"end"
        assert host.at("AT+QSSLCLOSE=4") == OK


def test_ec2x_pdp_deactivation_reports_closed_and_the_id_stays_taken(open_modem, emulator, pki):
    # §2.3.2: "Disconnection can be caused by ... the state of GPRS PDP is deactivated. The SSL
    # connection state based on the specified socket will be "closing". In such case,
    # AT+QSSLCLOSE=<connectID> must be executed to change the SSL connection state to
    # "initial"."  §2.2.6 <socket_state> 4 "Closing".  behaviour.md: data received before the
    # loss stay readable; the clientID is in use (563) until AT+QSSLCLOSE.
    host, _ = ec2x_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        open_note(host, emulator, server, 8010, 0)
        assert host.send_data(4, b"kept") == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",4\r\n')
        assert host.at("AT+QIDEACT=1") == OK
        assert host.seen(b'\r\n+QSSLURC: "closed",4\r\n') == b'\r\n+QSSLURC: "closed",4\r\n'
        state = host.at("AT+QSSLSTATE=4")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8010,\d{1,5},4,1,4,0,'
                            rb'"usbmodem",1\r\n\r\nOK\r\n', state), state
        assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 4\r\nkept\r\n" + OK
        assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 0\r\n" + OK
        assert host.at("AT+QSSLSEND=4,1") == ERROR                 # "abnormally closed"
        assert host.at("AT+QIACT=1") == OK
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",8010,0') == ERROR
        assert qigeterror(host) == err(563, "socket identity has been used")
        assert host.at("AT+QSSLCLOSE=4") == OK
        assert host.at("AT+QSSLSTATE") == OK                      # back to "initial": not listed
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",8010,0') == OK
        assert opened(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"
        assert host.at("AT+QSSLCLOSE=4") == OK
    assert host.transcript.count(b'+QSSLURC: "closed",4') == 1


def test_ec2x_pdp_deactivated_while_opening_is_570(open_modem, emulator, pki):
    # §5 Table 5: "570 PDP context break down".  §2.2.2: "+QSSLOPEN: <clientID>,<err> <err> is 0
    # when SSL socket is opened successfully, otherwise <err> is not 0"; "the details of error
    # can be queried by AT+QIGETERROR".  behaviour.md: PDP deactivated while opening 570, after
    # the deactivating command's own OK; a failed open frees the clientID.
    host, _ = ec2x_up(open_modem)
    with TlsServer(pki.server, mode="silent") as server:
        emulator.router.add_map(NOTE_HOST, 8010, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=1,0,2,"{NOTE_HOST}",8010,0') == OK
        server.wait_for(lambda: server.connections and server.conn.client_hello, 20, "ClientHello")
        assert host.at("AT+QIDEACT=1") == OK
        assert opened(host, 2) == b"\r\n+QSSLOPEN: 2,570\r\n"
        assert qigeterror(host) == err(570, "PDP context break down")
        assert host.at("AT+QSSLSTATE") == OK
        assert host.at("AT+QSSLCLOSE=2") == OK                    # harmless on a freed id


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_recv_urc_only_when_data_arrive_into_an_empty_buffer(open_modem, emulator, pki, profile):
    # EC2x §2.2.4 / §2.3.1: "+QSSLURC: "recv",<clientID>" when the module "receives data from
    # the Internet"; ML302 §2.8 / §2.10 the same as "+QSSLURC: "recv",<cid>,<ssid>".  Neither
    # says whether more data arriving before the host read report again; behaviour.md "SSL
    # sockets" decides (for both profiles): reported when data arrive into an EMPTY receive
    # buffer; the next arrival after the host emptied it reports again.
    ec2x = profile == "ec2x"
    host, port = (ec2x_up if ec2x else ml302_up)(open_modem)
    cid = 4 if ec2x else 2
    urc = b'+QSSLURC: "recv",4\r\n' if ec2x else b'+QSSLURC: "recv",1,2\r\n'
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        if ec2x:
            emulator.router.add_map(NOTE_HOST, 8010, "127.0.0.1", server.port)
            assert host.at(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",8010,0') == OK
        else:
            route_ml(emulator, server)
            assert host.at(f'AT+QSSLOPEN=2,0,"{ML_HOST}",443,0') == OK
        assert opened(host, cid).endswith(b",0\r\n")
        server.wait_for(lambda: server.connections and server.conn.handshake_done, 20, "handshake")
        server.conn.send(b"abc")
        host.seen(urc, 30)
        server.conn.send(b"def")
        wait_until(lambda: inbox_len(emulator, port, cid) == 6, "both pieces in the modem")
        host.quiet_for(0.2)
        assert host.transcript.count(urc) == 1                    # the second came into a full buffer
        read = f"AT+QSSLRECV={cid},1500" if ec2x else f"AT+QSSLRECV=1,{cid},1500"
        head = b"\r\n+QSSLRECV: 6\r\n" if ec2x else f"\r\n+QSSLRECV: {ML_IP}:443,TCP,6\r\n".encode()
        assert host.at(read) == head + b"abcdef\r\n" + OK
        assert host.at(read) == (b"\r\n+QSSLRECV: 0\r\n" + OK if ec2x else OK)
        server.conn.send(b"ghi")
        host.seen(urc, 30)                                        # empty again: reported again
        assert host.transcript.count(urc) == 2
        assert host.at(f"AT+QSSLCLOSE={cid}").startswith(OK)


def test_ec2x_qigeterror_reports_the_last_ssl_command_only(open_modem):
    # §5: "If an ERROR is returned after executing SSL AT commands, the details of error can be
    # queried by AT+QIGETERROR. Please note that AT+QIGETERROR just returns error code of the
    # last SSL AT command."  Other commands (27.007, file, PDP) -- failing or not -- leave it;
    # the next SSL command that succeeds (a query, a test form, a close of a free id) clears it.
    host, _ = open_modem("ec2x")
    assert host.at("AT+QSSLSEND=0,0") == ERROR
    for line, answer in (("AT+CSQ", b"\r\n+CSQ: 24,99\r\n" + OK), ("AT+QIACT=1", OK),
                         ('AT+QFUPL="x",0', b"\r\n+CME ERROR: 400\r\n"), ("AT+QIACT=17", ERROR),
                         ("AT+QIGETERROR=?", OK)):
        assert host.at(line) == answer, line
        assert qigeterror(host) == err(552, "invalid parameter"), line
    for line in ('AT+QSSLCFG="sni",0', "AT+QSSLSTATE=?", "AT+QSSLSTATE", "AT+QSSLCLOSE=3"):
        assert host.at("AT+QSSLSEND=0,0") == ERROR
        assert host.at(line).endswith(OK), line
        assert qigeterror(host) == err(0, "operate successfully"), line


def test_ec2x_psk_needs_identity_and_key_together(open_modem):
    # §2.2.1: AT+QSSLCFG="psk",<SSL_ctxID>[,<identity>,<key>] -- both or neither; the query
    # answers "+QSSLCFG:"psk",<SSL_ctxID>,<identity>,<key>" (the note prints no space after the
    # colon; every other query has one, as the emulator prints: an OCR/typesetting slip).
    host, _ = open_modem("ec2x")
    for line in ('"psk",2,"id"', '"psk",2,"id",', '"psk",2,"id","k","x"'):
        assert host.at(f"AT+QSSLCFG={line}") == ERROR, line
        assert qigeterror(host) == err(552, "invalid parameter"), line
    assert host.at('AT+QSSLCFG="psk",2') == b'\r\n+QSSLCFG: "psk",2,"",""\r\n' + OK
    assert host.at('AT+QSSLCFG="psk",2,"id","k"') == OK
    assert host.at('AT+QSSLCFG="psk",2') == b'\r\n+QSSLCFG: "psk",2,"id","k"\r\n' + OK


def test_ec2x_close_timeout_default_is_10_seconds(open_modem, emulator, pki):
    # §2.2.5 <close_timeout> "Range: 0-65535. Default: 10"; with <close_time_mode> 0 (its
    # default, behaviour.md) the unit is seconds.  §3.3.4: "AT+QSSLCLOSE=4 //... the maximum
    # response time is 10 s."  A server that ignores close_notify and keeps TCP open: no answer
    # before 10 s of modem time, OK at 10 s (the connection is then aborted).
    release = threading.Event()

    def deaf(conn):
        release.wait(120)

    host, port = ec2x_up(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)

    with TlsServer(pki.server, legacy=True, handler=deaf) as server:
        emulator.router.add_map(NOTE_HOST, 8010, "127.0.0.1", server.port)
        try:
            assert host.at(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",8010,0') == OK
            assert opened(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"
            host.write(b"AT+QSSLCLOSE=4\r")
            advance(9.9)
            assert host.quiet_for(0.2) == b""                         # still lingering
            advance(0.2)
            assert host.read_until(b"\r\nOK\r\n", timeout=30) == OK
            assert host.at("AT+QSSLSTATE") == OK
        finally:
            release.set()


# Was a bug, fixed: ATO answered NO CARRIER for the connection that left transparent mode last
# once AT+QISWTMD had moved it to another access mode (SocketLink.alive required the online
# delivery); note §1.3: ATO changes that connection's access mode back and answers NO CARRIER
# only when no connection entered transparent mode before (SocketLink.resume now).
def test_ec2x_ato_returns_to_the_last_transparent_connection_after_qiswtmd(open_modem, emulator, pki):
    # §1.3 "Return to transparent access mode ... 2) By ATO. ATO will change the access mode of
    # connection that exits transparent access mode lately. If entering transparent access mode
    # successfully, CONNECT will be returned. If there is no connection entering transparent
    # access mode before, ATO will return NO CARRIER."
    host, port = ec2x_up(open_modem, manual_time=True)
    advance = emulator.advancer(port, host)

    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(NOTE_HOST, 8011, "127.0.0.1", server.port)
        host.write(f'AT+QSSLOPEN=1,1,4,"{NOTE_HOST}",8011,2\r')
        assert host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 30) == b"\r\nCONNECT\r\n"
        assert escape(host, advance) == OK
        assert host.at("AT+QISWTMD=4,0") == OK                   # still connection 4
        host.write(b"ATO\r")
        answer = host.read_until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n"), 30)
        if answer == b"\r\nCONNECT\r\n":                          # (leave online mode again)
            host.write(b"back")
            assert host.read_exactly(4, timeout=30) == b"back"
            assert escape(host, advance) == OK
            state = host.at("AT+QSSLSTATE=4")
            assert b',2,1,4,2,"usbmodem",1\r\n' in state, state
        assert host.at("AT+QSSLCLOSE=4") == OK
        assert answer == b"\r\nCONNECT\r\n"


# Was a bug, fixed: a cipher-suite id with a Python digit separator ('_') was taken as hex
# (parse_cipher_list used int(p, 16), which accepts "0X_35" == 0x35).
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_cipher_suite_ids_with_an_underscore_are_not_hex(open_modem, profile):
    # EC2x §2.2.1 <cipher_suites> "Numeric type in HEX format" (0X0035 ... 0XFFFF); ML302 §2.1
    # <ciphersuite> the 0X0035 ... 0XFFFF table.  behaviour.md "Command line": "Numbers are ASCII
    # digits only ... characters Python's isdigit() takes but no module does ... are ERROR".
    host, _ = open_modem(profile)
    for value in ("0X_35", "0X0_35", '"0X0035:0X_2F"', '"0X 35"', "0X+35", '"0X0035:0X"'):
        assert host.at(f'AT+QSSLCFG="ciphersuite",1,{value}') == ERROR, value
    query = host.at('AT+QSSLCFG="ciphersuite",1')
    assert query.endswith(b"0XFFFF\r\n" + OK), query


# == ML302 ======================================================================================

def test_ml302_seclevel_2_needs_the_client_certificate_and_key(open_modem, emulator, pki):
    # §2.1 备注: "如果设置了服务器和客户端身份验证，则需要配置客户端证书、服务器 CA 证书和客户端私钥"
    # (server and client authentication need the client certificate, the CA certificate and the
    # client key).  With only the CA slot written, seclevel 2 fails (+QSSLOPEN: <ssid>,-1, the
    # §2.5 <connectcode> "-1 错误") although the server asks for no client certificate; seclevel
    # 1 with the same slots works.  (The EC2x's 552 for the same case is in test_ssl_ec2x.py.)
    host, _ = ml302_up(open_modem)
    host.write(b"AT+QSECWRITE=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(pki.ca.cert_pem + b"\x1a")
    assert host.read_until(OK).startswith(b"\r\n+QSECWRITE: %d," % len(pki.ca.cert_pem))
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        route_ml(emulator, server)
        assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
        assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 0) == b"\r\n+QSSLOPEN: 0,-1\r\n"
        assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
        assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"\r\n0,CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"


def test_ml302_sslversion_0_ssl3_fails_the_open(open_modem, emulator, pki):
    # §1.1 lists SSL3.0 among the versions; §2.1 <sslversion> "0 SSL3.0".  behaviour.md
    # ("ML302 SSL commands"): SSL 3.0 is one of the failures reported as +QSSLOPEN: <ssid>,-1
    # after OK (the EC2x reports 555 for it, test_ssl_options_wire.py); the server never sees a
    # ClientHello.
    host, _ = ml302_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        route_ml(emulator, server)
        assert host.at('AT+QSSLCFG="sslversion",3,0') == OK
        assert host.at('AT+QSSLCFG="sslversion",3') == b'\r\n+QSSLCFG: "sslversion",0\r\n' + OK
        assert host.at(f'AT+QSSLOPEN=1,3,"{ML_HOST}",443,0') == OK
        assert opened(host, 1) == b"\r\n+QSSLOPEN: 1,-1\r\n"
        assert not any(c.client_hello for c in server.connections)


def test_ml302_close_while_connecting(open_modem, emulator, pki):
    # §2.6: AT+QSSLCLOSE=<ssid> "此命令用来关闭指定的加密连接" -> OK then "<ssid>,CLOSE OK" (the
    # §2.6/§3 example; behaviour.md).  On a socket still CONNECTING (§2.9 <socketstatus>) the
    # open is abandoned: no "+QSSLOPEN" afterwards, the line shows CLOSED, AT+QSSLRECV on it is
    # ERROR (§2.8 "失败: ERROR"), and the <state> line goes back to "IP STATUS".
    host, _ = ml302_up(open_modem)
    with TlsServer(pki.server, mode="silent") as server:
        route_ml(emulator, server)
        assert host.at(f'AT+QSSLOPEN=3,0,"{ML_HOST}",443,0') == OK
        server.wait_for(lambda: server.connections and server.conn.client_hello, 20, "ClientHello")
        assert b'+QSSLSTATE: 3,"TCP","106.12.79.254",443,"CONNECTING",1\r\n' in host.at("AT+QSSLSTATE")
        assert host.at("AT+QSSLRECV=1,3,100") == ERROR
        assert host.at("AT+QSSLCLOSE=3") == OK
        assert host.read_until(b"\r\n3,CLOSE OK\r\n") == b"\r\n3,CLOSE OK\r\n"
        server.wait_for(lambda: server.conn.closed, 20, "the modem's TCP close")
        assert host.quiet_for(0.3) == b""
        assert b"+QSSLOPEN: 3" not in host.transcript
        state = host.at("AT+QSSLSTATE")
        assert state.startswith(b'\r\n+QSSLSTATE: "IP STATUS"\r\n'), state
        assert b'+QSSLSTATE: 3,"TCP","106.12.79.254",443,"CLOSED",1\r\n' in state, state


def test_ml302_bearer_loss_pdp_deact_state_and_close_urc(open_modem, emulator, pki):
    # §2.10: '+QSSLURC: "close",<ssid>' "连接非主动断开" (not closed by the host).  §2.9 <state>
    # "PDP DEACT" "GPRS/CSD 场景异常关闭" (the context ended abnormally), <socketstatus>
    # "REMOTE CLOSING".  behaviour.md: "PDP DEACT" while sockets the bearer cut are not closed
    # by the host; data received before stay readable; the ssid is in use (-2) until
    # AT+QSSLCLOSE, after which the state is "IP INITIAL" (no active context).
    host, _ = ml302_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        route_ml(emulator, server)
        assert host.at(f'AT+QSSLOPEN=2,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 2) == b"\r\n+QSSLOPEN: 2,0\r\n"
        assert ml_send(host, 2, b"abc") == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",1,2\r\n', 30)
        assert host.at("AT+CGACT=0,1") == OK
        assert host.seen(b'\r\n+QSSLURC: "close",2\r\n') == b'\r\n+QSSLURC: "close",2\r\n'
        state = host.at("AT+QSSLSTATE")
        assert state.startswith(b'\r\n+QSSLSTATE: "PDP DEACT"\r\n'), state
        assert b'+QSSLSTATE: 2,"TCP","106.12.79.254",443,"REMOTE CLOSING",1\r\n' in state, state
        assert host.at("AT+QSSLRECV=1,2,100") == f"\r\n+QSSLRECV: {ML_IP}:443,TCP,3\r\nabc\r\n".encode() + OK
        assert host.at("AT+QSSLRECV=1,2,100") == OK
        assert host.at("AT+QSSLSEND=2") == ERROR
        assert host.at(f'AT+QSSLOPEN=2,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 2) == b"\r\n+QSSLOPEN: 2,-2\r\n"
        assert host.at("AT+QSSLCLOSE=2") == OK
        assert host.read_until(b"\r\n2,CLOSE OK\r\n") == b"\r\n2,CLOSE OK\r\n"
        state = host.at("AT+QSSLSTATE")
        assert state.startswith(b'\r\n+QSSLSTATE: "IP INITIAL"\r\n'), state
        assert b'+QSSLSTATE: 2,"TCP","106.12.79.254",443,"CLOSED",1\r\n' in state, state
        # no active PDP context: the next open fails with -1 (behaviour.md)
        assert host.at(f'AT+QSSLOPEN=2,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 2) == b"\r\n+QSSLOPEN: 2,-1\r\n"


def test_ml302_qsecwrite_with_echo_and_verbose_errors(open_modem):
    # §2.2: "AT+QSECWRITE=<crtflag> / > / 写入数据，ctrl+z 退出 / +QSECWRITE: <uploadsize>,<chacksum> /
    # OK"; failures "ERROR/+CME ERROR: <err>" (§2.2-§2.4).  behaviour.md: with ATE1 the data in a
    # "> " prompt are echoed (Ctrl+Z, which ends it, is not); ESC cancels with OK and stores
    # nothing; the codes 3/20/22/50 of behaviour.md "ML302 certificate store" appear verbose with
    # AT+CMEE=2 (27.007 texts) and as a plain ERROR with AT+CMEE=0.
    host, _ = open_modem("ml302", echo=True)
    host.write(b"AT+QSECWRITE=1\r")
    assert host.read_exactly(19, timeout=20) == b"AT+QSECWRITE=1\r\r\n> "
    host.write(b"ab\r\ncd\x1a")
    # (0x6162 ^ 0x0d0a ^ 0x6364 = 0x0f0c, the §2.2 备注's XOR of big-endian pairs)
    assert host.read_until(OK) == b"ab\r\ncd\r\n+QSECWRITE: 6,0f0c\r\n" + OK
    assert host.at("AT+CMEE=2") == b"AT+CMEE=2\r" + OK
    assert host.at("AT+QSECWRITE=1") == b"AT+QSECWRITE=1\r\r\n+CME ERROR: operation not allowed\r\n"
    assert host.at("AT+QSECREAD=2") == b"AT+QSECREAD=2\r\r\n+CME ERROR: not found\r\n"
    assert host.at("AT+QSECDEL=3") == b"AT+QSECDEL=3\r\r\n+CME ERROR: incorrect parameters\r\n"
    host.write(b"AT+QSECWRITE=2\r")
    assert host.read_exactly(19, timeout=20) == b"AT+QSECWRITE=2\r\r\n> "
    host.write(b"half\x1b")
    assert host.read_until(OK) == b"half" + OK
    assert host.at("AT+QSECREAD=2") == b"AT+QSECREAD=2\r\r\n+CME ERROR: not found\r\n"
    assert host.at("AT+CMEE=0") == b"AT+CMEE=0\r" + OK
    assert host.at("AT+QSECREAD=2") == b"AT+QSECREAD=2\r" + ERROR
    assert host.at("AT+QSECREAD=1") == b"AT+QSECREAD=1\r\r\n+QSECREAD: 1,0f0c\r\n" + OK


# == both profiles: the same decisions hold on each ==================================================

@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_atv0_data_prompt_and_send_ok(open_modem, emulator, pki, profile):
    # EC2x §2.2.3 / ML302 §2.7: ">" then the data, then "SEND OK".  behaviour.md "Command line":
    # in ATV0 information text is "text<CR><LF>", result codes digits + <CR>, texts such as
    # SEND OK keep their words; the prompt is "> " (no leading CR LF), on both modules alike.
    ec2x = profile == "ec2x"
    host, _ = (ec2x_up if ec2x else ml302_up)(open_modem)
    with TlsServer(pki.server, legacy=True, mode="sink") as server:
        if ec2x:
            emulator.router.add_map(NOTE_HOST, 8010, "127.0.0.1", server.port)
            assert host.at(f'AT+QSSLOPEN=1,1,0,"{NOTE_HOST}",8010,0') == OK
        else:
            route_ml(emulator, server)
            assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == OK
        assert opened(host, 0).endswith(b",0\r\n")
        host.write(b"ATV0\r")
        assert host.read_exactly(2, timeout=20) == b"0\r"
        host.write(b"AT+QSSLSEND=0,3\r" if ec2x else b"AT+QSSLSEND=0\r")
        assert host.read_exactly(2, timeout=20) == b"> "
        host.write(b"abc" if ec2x else b"abc\x1a")
        assert host.read_until(b"\r\n", timeout=20) == b"SEND OK\r\n"
        wait_until(lambda: bytes(server.conn.received) == b"abc", "the server's bytes")
        assert host.at("ATV1") == OK                 # ATV1's own answer already in the verbose form
        assert host.at("AT+QSSLCLOSE=0").startswith(OK)


def test_ec2x_direct_push_urc_lengths_frame_a_large_burst(open_modem, emulator, pki):
    # §1.3 / §2.3.1: in direct push mode the data are output "in the format of +QSSLURC:
    # "recv",<clientID>,<currectrecvlength><CR><LF><data>", <current_recvlength> "The length
    # of actual received data".  behaviour.md: at most recv_max (1500) bytes per URC, the data
    # followed by CR LF as real modules write them, every byte once and in order.  A 4000-byte
    # burst: each URC's length frames exactly its bytes, then its CR LF.
    burst = bytes((i * 7) & 0xFF for i in range(4000))
    host, _ = ec2x_up(open_modem)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        open_note(host, emulator, server, 8011, 1)
        server.wait_for(lambda: server.connections and server.conn.handshake_done, 20, "handshake")
        server.conn.send(burst)
        got = b""
        head = re.compile(rb'\r\n\+QSSLURC: "recv",4,(\d+)\r\n')
        while len(got) < len(burst):
            framed = host.read_until(head, 30)
            m = head.search(framed)
            assert m.start() == 0, framed                  # nothing between one URC's data and the next
            n = int(m.group(1))
            assert 1 <= n <= 1500, n
            got += host.read_exactly(n, timeout=30)
            assert host.read_exactly(2, timeout=30) == b"\r\n"     # the push's closing CR LF
        assert got == burst
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLCLOSE=4") == OK


# Was inconsistent, fixed: an empty last value (AT+QSSLCFG="seclevel",0,) was ERROR on the
# EC2x but the query on the ML302 (and the EC2x's AT+QSSLCLOSE=4, took it as omitted).
def test_empty_last_value_of_qsslcfg_is_the_query_on_both_profiles(open_modem):
    # EC2x §2.1.1: "When an optional parameter is omitted, the new value equals its previous
    # value or its default setting"; §2.2.1 "AT+QSSLCFG="seclevel",<SSL_ctxID>[,<seclevel>] ...
    # If the optional parameter is omitted, query ...".  ML302 §2.1: "AT+QSSLCFG="seclevel",
    # <ctxindex>，[<seclevel>] ... 如果省略第三个参数，则查询" (the comma printed outside the
    # brackets).  (V.250 takes a value left empty between or after commas as omitted.)
    ml302, _ = open_modem("ml302")
    assert ml302.at('AT+QSSLCFG="seclevel",0,') == b'\r\n+QSSLCFG: "seclevel",0\r\n' + OK
    ec2x, _ = open_modem("ec2x")
    assert ec2x.at("AT+QSSLCLOSE=4,") == OK                       # <close_timeout> omitted: 10
    assert ec2x.at('AT+QSSLCFG="seclevel",0,') == b'\r\n+QSSLCFG: "seclevel",0,0\r\n' + OK
    assert ec2x.at('AT+QSSLCFG="cacert",1,') == b'\r\n+QSSLCFG: "cacert",1,""\r\n' + OK
    assert ec2x.at('AT+QSSLCFG="ciphersuite",2,') == b'\r\n+QSSLCFG: "ciphersuite",2,0XFFFF\r\n' + OK
    assert ec2x.at('AT+QSSLCFG="seclevel",0,,') == ERROR             # (two omitted: too many)


def test_ec2x_send_on_a_socket_still_opening_is_572_and_after_a_peer_close_567(open_modem, emulator):
    # Note §5 Table 5: 567 "socket has been closed", 572 "operation not allowed".  A socket
    # whose handshake has not finished was never connected: 572 (as AT+QSSLRECV answers it);
    # 567 only once the peer closed a connected one (behaviour.md, SSL sockets).
    import socket as socket_module
    host, _ = ec2x_up(open_modem)
    listener = socket_module.create_server(("127.0.0.1", 0))
    try:
        emulator.router.add_map("stall.example", 443, "127.0.0.1", listener.getsockname()[1])
        assert host.at('AT+QSSLOPEN=1,1,4,"stall.example",443,0') == OK
        conn, _ = listener.accept()                  # accepted, and never answered
        try:
            assert host.at("AT+QSSLSEND=4,5") == ERROR
            assert qigeterror(host) == err(572, "operation not allowed")
            assert host.at("AT+QSSLRECV=4,10") == ERROR
            assert qigeterror(host) == err(572, "operation not allowed")
        finally:
            conn.close()
        assert opened(host, 4) == b"\r\n+QSSLOPEN: 4,566\r\n"   # (the server's FIN mid-handshake)
    finally:
        listener.close()
    with TlsServer(legacy=True, mode="echo") as server:
        open_note(host, emulator, server, 8010, 0)
        server.wait_handshake()
        server.conn.close()
        host.seen(b'+QSSLURC: "closed",4\r\n', timeout=30)
        assert host.at("AT+QSSLSEND=4,5") == ERROR
        assert qigeterror(host) == err(567, "socket has been closed")
        assert host.at("AT+QSSLCLOSE=4") == OK
