"""Conformance with the two manuals, command by command, for what the other tests do not
already check byte for byte.

EC2x: "EC2x&EG9x&EG2x-G&EM05 Series SSL Application Note" V1.1 (the note; §2.2.x commands,
§3 examples, §5 Table 5 error codes).  ML302: the OneMO ML302 SSL AT command manual
(§2.1 AT+QSSLCFG ... §2.10 +QSSLURC, §3 example).  Decisions where the manuals are
silent: docs/behaviour.md.  Every server is a loopback peer reached through a route.
"""
from __future__ import annotations

import re
import socket


from emulator.testing.peers import TlsServer

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
E561 = b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"
E572 = b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"
MANUAL_HOST = "220.180.239.212"          # the note's §3 server (a name of the shared PKI's server)
ML_HOST, ML_IP = "www.iottest.work", "106.12.79.254"     # ML302 §3's server and its DNS answer

# The note's Table 3 / §2.2.1 <cipher_suites> order (the test form lists it).
EC2X_SUITES = ("0X0035,0X002F,0X0005,0X0004,0X000A,0X003D,0XC002,0XC003,0XC004,0XC005,0XC007,"
               "0XC008,0XC009,0XC00A,0XC011,0XC012,0XC013,0XC014,0XC00C,0XC00D,0XC00E,0XC00F,"
               "0XC023,0XC024,0XC025,0XC026,0XC027,0XC028,0XC029,0XC02A,0XC02F,0XFFFF")


def xor16_reference(data: bytes) -> str:
    """ML302 §2.2 note, written out independently of emulator.storage.checksum:
    (d0<<8|d1) ^ (d2<<8|d3) ^ ... ; an odd last byte is (dx<<8|0x00); 4 lower-case hex digits
    ("+QSECWRITE: 1388,384a")."""
    value = 0
    for i in range(0, len(data), 2):
        hi = data[i]
        lo = data[i + 1] if i + 1 < len(data) else 0
        value ^= (hi << 8) | lo
    return f"{value:04x}"


def _opened(host, client_id: int) -> bytes:
    return host.seen(re.compile(rb"\r\n\+QSSLOPEN: %d,-?\d+\r\n" % client_id), 15)


# == EC2x §2.2.1 AT+QSSLCFG ================================================================
def test_ec2x_qsslcfg_test_form_every_option_exact(open_modem):
    # §2.2.1 Test Command: one "+QSSLCFG: "<option>",(range of <SSL_ctxID>s),..." line per
    # option in the table's order; ranges from the Parameter table (ctx 0-5, sslversion 0-4,
    # cipher list of Table 3 + 0XFFFF, seclevel 0-2, negotiatetime 10-300, flags 0/1);
    # paths, psk and alpn as the placeholders printed.
    host, _ = open_modem("ec2x")
    lines = [
        '"sslversion",(0-5),(0-4)', f'"ciphersuite",(0-5),({EC2X_SUITES})',
        '"cacert",(0-5),<cacertpath>', '"cacertex",(0-5),<cacertpath>',
        '"clientcert",(0-5),<client_cert_path>', '"clientkey",(0-5),<client_key_path>',
        '"seclevel",(0-5),(0-2)', '"ignorelocaltime",(0-5),(0,1)', '"negotiatetime",(0-5),(10-300)',
        '"sni",(0-5),(0,1)', '"closetimemode",(0-5),(0,1)', '"ignoremulticertchainverify",(0-5),(0,1)',
        '"ignoreinvalidcertsign",(0-5),(0,1)', '"psk",(0-5),<identity>,<key>', '"dtls",(0-5),(0,1)',
        '"dtlsversion",(0-5),(0,1)', '"session_cache",(0-5),(0,1)', '"alpn",(0-5),<alpn_name>',
        '"renegotiation",(0-5),(0,1)']
    expected = "\r\n" + "".join(f"+QSSLCFG: {line}\r\n" for line in lines) + "\r\nOK\r\n"
    assert host.at("AT+QSSLCFG=?") == expected.encode()


def test_ec2x_qsslcfg_defaults_on_ctx_0_and_5(open_modem):
    # §2.2.1 Parameter table, underlined defaults (docs/behaviour.md "AT+QSSLCFG (EC2x)"):
    # query form "+QSSLCFG: "<option>",<SSL_ctxID>,<value>" on both edges of 0-5.
    host, _ = open_modem("ec2x")
    defaults = {"sslversion": "4", "ciphersuite": "0XFFFF", "cacert": '""', "cacertex": '""',
                "clientcert": '""', "clientkey": '""', "seclevel": "0", "ignorelocaltime": "1",
                "negotiatetime": "300", "sni": "0", "closetimemode": "0",
                "ignoremulticertchainverify": "0", "ignoreinvalidcertsign": "0", "psk": '"",""',
                "dtls": "0", "dtlsversion": "1", "session_cache": "1", "alpn": '""', "renegotiation": "0"}
    for ctx in (0, 5):
        for name, value in defaults.items():
            assert host.at(f'AT+QSSLCFG="{name}",{ctx}') == \
                f'\r\n+QSSLCFG: "{name}",{ctx},{value}\r\n\r\nOK\r\n'.encode(), (name, ctx)
    # the cacertex row's "all optional parameters omitted" form: one line per context 0..5
    assert host.at('AT+QSSLCFG="cacertex"') == (
        b"\r\n" + b"".join(b'+QSSLCFG: "cacertex",%d,""\r\n' % i for i in range(6)) + OK)


def test_ec2x_qsslcfg_range_edges_and_552(open_modem):
    # §2.2.1 Parameter: <SSL_ctxID> 0-5, <SSL_version> 0-4, <seclevel> 0-2,
    # <negotiate_time> 10-300, <identity>/<key> "length is 0-255".  §2.2.1 "OK Or ERROR";
    # §5: an ERROR's reason via AT+QIGETERROR (552 invalid parameter).
    host, _ = open_modem("ec2x")
    good = [("sslversion", 0, "0"), ("sslversion", 5, "4"), ("seclevel", 0, "2"), ("seclevel", 5, "0"),
            ("negotiatetime", 0, "10"), ("negotiatetime", 5, "300"),
            ("psk", 0, '"' + "i" * 255 + '","' + "k" * 255 + '"'), ("psk", 5, '"",""')]
    for name, ctx, value in good:
        assert host.at(f'AT+QSSLCFG="{name}",{ctx},{value}') == OK, (name, ctx, value)
        assert host.at(f'AT+QSSLCFG="{name}",{ctx}') == \
            f'\r\n+QSSLCFG: "{name}",{ctx},{value}\r\n\r\nOK\r\n'.encode()
    bad = ['"sslversion",6,4', '"sslversion",0,5', '"seclevel",0,3', '"negotiatetime",0,9',
           '"negotiatetime",0,301', '"psk",0,"' + "i" * 256 + '","k"', '"psk",0,"i","' + "k" * 256 + '"',
           '"cacertex",6', '"sni",6']
    for text in bad:
        assert host.at(f"AT+QSSLCFG={text}") == ERROR, text
        assert host.at("AT+QIGETERROR") == E552, text


# == EC2x §2.2.2-§2.2.6 test forms and parameter ranges ========================================
def test_ec2x_socket_commands_test_forms_exact(open_modem):
    # §2.2.2 +QSSLOPEN: (<pdp_ctxID> 1-16),(<SSL_ctxID> 0-5),(<clientID> 0-11),<serveraddr>,
    #        <server_port>[,(<access_mode> 0-2)]
    # §2.2.3 +QSSLSEND: (0-11)[,(<sendlen> 1-1460)]   §2.2.4 +QSSLRECV: (0-11),(<readlen> 1-1500)
    # §2.2.5 +QSSLCLOSE: (0-11),(<close_timeout> 0-65535)   §2.2.6 AT+QSSLSTATE=? -> OK
    host, _ = open_modem("ec2x")
    for line, answer in (
            ("AT+QSSLOPEN=?", b"+QSSLOPEN: (1-16),(0-5),(0-11),<serveraddr>,<server_port>,(0-2)"),
            ("AT+QSSLSEND=?", b"+QSSLSEND: (0-11),(1-1460)"),
            ("AT+QSSLRECV=?", b"+QSSLRECV: (0-11),(1-1500)"),
            ("AT+QSSLCLOSE=?", b"+QSSLCLOSE: (0-11),(0-65535)")):
        assert host.at(line) == b"\r\n" + answer + b"\r\n" + OK, line
    assert host.at("AT+QSSLSTATE=?") == OK
    # §2.2.6 execution form with no socket: an empty list, then OK
    assert host.at("AT+QSSLSTATE") == OK


def test_ec2x_parameter_ranges_and_error_codes(open_modem):
    # §2.2.2 <pdp_ctxID> 1-16 (17 and 0: 552; 16 valid but not active: 561 "Open PDP context
    # failed"), <access_mode> 0-2; §2.2.3 <sendlen> 1-1460 (0 is not a length: 552);
    # §2.2.4 <readlen> 1-1500; §2.2.5 <close_timeout> 0-65535; §2.2.6 <clientID> 0-11.
    host, _ = open_modem("ec2x")
    assert host.at("AT+QIACT=1") == OK
    for line, err in (('AT+QSSLOPEN=0,0,0,"a.example",443', E552),
                      ('AT+QSSLOPEN=17,0,0,"a.example",443', E552),
                      ('AT+QSSLOPEN=16,0,0,"a.example",443', E561),
                      ('AT+QSSLOPEN=1,0,0,"a.example",443,3', E552),
                      ('AT+QSSLOPEN=1,0,0,"a.example",65536', E552),
                      ("AT+QSSLSEND=0,0", E552),
                      ("AT+QSSLRECV=0,0", E552),
                      ("AT+QSSLCLOSE=0,65536", E552),
                      ("AT+QSSLCLOSE=12", E552),
                      ("AT+QSSLSTATE=12", E552)):
        assert host.at(line) == ERROR, line
        assert host.at("AT+QIGETERROR") == err, line
    # edges that are in range: a close with nothing open is harmless; a state query of an
    # unused id lists nothing
    assert host.at("AT+QSSLCLOSE=11,65535") == OK
    assert host.at("AT+QSSLCLOSE=0,0") == OK
    assert host.at("AT+QSSLSTATE=11") == OK
    assert host.at("AT+QSSLSTATE=0") == OK


def test_ec2x_edges_on_a_live_socket(open_modem, emulator, pki):
    # §2.2.2 on the ends of every range: <pdp_ctxID> 16, <SSL_ctxID> 5, <clientID> 11,
    # <server_port> 65535; §2.2.6 write and execution forms (the §3.3.1 line layout:
    # <clientID>,"SSLClient",<ip>,<rport>,<lport>,<state>,<pdp>,<serverID>,<mode>,"usbmodem",
    # <SSL_ctxID>); §2.2.3 <sendlen> 1460 (max) and 1; §2.2.4 <readlen> 1 and 1500;
    # §2.3.1 the "recv" URC; §2.2.5 close.
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=16,1,"UNINET","","",1;+QIACT=16') == OK
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(MANUAL_HOST, 65535, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=16,5,11,"{MANUAL_HOST}",65535,0') == OK
        assert _opened(host, 11) == b"\r\n+QSSLOPEN: 11,0\r\n"
        one = host.at("AT+QSSLSTATE=11")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 11,"SSLClient","220\.180\.239\.212",65535,\d{1,5},2,16,11,0,'
                            rb'"usbmodem",5\r\n\r\nOK\r\n', one), one
        assert host.at("AT+QSSLSTATE") == one
        payload = bytes(range(256)) * 5 + b"x" * 180            # 1460 bytes, binary
        assert len(payload) == 1460
        assert host.send_data(11, payload) == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",11\r\n')
        # the echo may arrive in pieces: read 1 byte first, then the rest at <readlen> 1500
        got = b""
        first = host.at("AT+QSSLRECV=11,1")
        assert first == b"\r\n+QSSLRECV: 1\r\n" + payload[:1] + b"\r\n" + OK, first
        got += payload[:1]
        for _ in range(50):
            answer = host.at("AT+QSSLRECV=11,1500")
            m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
            n = int(m.group(1))
            if n == 0:
                assert answer == b"\r\n+QSSLRECV: 0\r\n" + OK
                if len(got) == 1460:
                    break
                host.seen(b'+QSSLURC: "recv",11\r\n')
                continue
            assert answer == m.group(0) + answer[m.end():m.end() + n] + b"\r\n" + OK
            got += answer[m.end():m.end() + n]
        assert got == payload
        assert host.send_data(11, b"z") == b"\r\nSEND OK\r\n"    # <sendlen> 1
        host.seen(b'+QSSLURC: "recv",11\r\n')
        assert host.at("AT+QSSLRECV=11,1500") == b"\r\n+QSSLRECV: 1\r\nz\r\n" + OK
        assert host.at("AT+QSSLCLOSE=11,0") == OK
        assert host.at("AT+QSSLSTATE=11") == OK


def test_ec2x_qsslsend_length_0_is_not_a_query_on_a_live_socket(open_modem, emulator, pki):
    # §2.2.3: <sendlen> "Range: 1-1460"; the note has no "=<clientID>,0" query form (that is
    # AT+QISEND of the TCP(IP) note): ERROR, no "> " prompt, QIGETERROR 552.
    host, _ = open_modem("ec2x")
    assert host.at("AT+QIACT=1") == OK
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(MANUAL_HOST, 8010, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{MANUAL_HOST}",8010,0') == OK
        assert _opened(host, 0) == b"\r\n+QSSLOPEN: 0,0\r\n"
        assert host.at("AT+QSSLSEND=0,0") == ERROR
        assert host.at("AT+QIGETERROR") == E552
        assert host.at("AT+QSSLSEND=0,1461") == ERROR
        assert host.at("AT+QIGETERROR") == E552
        assert host.at("AT+QSSLRECV=0,1501") == ERROR
        assert host.at("AT+QSSLRECV=0,0") == ERROR
        assert host.at("AT+QIGETERROR") == E552
        assert host.at("AT+QSSLCLOSE=0") == OK


# Was a bug, fixed: 566 read "socket connect failed" (the TCP/IP manuals' wording), not the
# SSL note's Table 5 "Socket connection failed" that behaviour.md's rule names.
def test_ec2x_qigeterror_566_text_is_table_5s(open_modem, emulator):
    # §5 Table 5: "566 Socket connection failed".  A refused TCP connect: +QSSLOPEN: <id>,566.
    host, _ = open_modem("ec2x")
    assert host.at("AT+QIACT=1") == OK
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        emulator.router.add_map("refused.example", 443, "127.0.0.1", closed.getsockname()[1])
        assert host.at('AT+QSSLOPEN=1,0,0,"refused.example",443') == OK
        assert _opened(host, 0) == b"\r\n+QSSLOPEN: 0,566\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n" + OK


def test_ec2x_qiswtmd_ranges_and_codes(open_modem):
    # §1.3: AT+QISWTMD switches <access_mode> (TCP(IP) note; behaviour.md "Transparent access
    # mode"): test form (0-11),(0-2); an id or mode out of range 552; a socket that is not
    # connected 572; no read form.
    host, _ = open_modem("ec2x")
    assert host.at("AT+QISWTMD=?") == b"\r\n+QISWTMD: (0-11),(0-2)\r\n" + OK
    for line, err in (("AT+QISWTMD=12,0", E552), ("AT+QISWTMD=0,3", E552), ("AT+QISWTMD=11,1", E572)):
        assert host.at(line) == ERROR, line
        assert host.at("AT+QIGETERROR") == err, line
    assert host.at("AT+QISWTMD?") == ERROR


def test_cclk_write_and_read_exact_both_profiles(open_modem):
    # §1.4 (note) and ML302 ignorertctime: AT+CCLK sets the module time; 27.007 format
    # "yy/MM/dd,hh:mm:ss±zz" read back as +CCLK: "<time>" (a modem on manual time: no tick).
    for profile in ("ec2x", "ml302"):
        host, _ = open_modem(profile, manual_time=True)
        for value in ("19/10/12,09:05:55+32", "00/01/01,00:00:00-96", "99/12/31,23:59:59+96",
                      "26/06/01,00:00:00+00"):
            assert host.at(f'AT+CCLK="{value}"') == OK, value
            assert host.at("AT+CCLK?") == f'\r\n+CCLK: "{value}"\r\n'.encode() + OK, value
        assert host.at("AT+CCLK=?") == OK
        for bad in ('"19/10/12,09:05:55+97"', '"19/10/12,24:00:00+32"', '"19/02/30,00:00:00+32"'):
            assert host.at(f"AT+CCLK={bad}") == b"\r\n+CME ERROR: 50\r\n", (profile, bad)


# == ML302 ==================================================================================
def test_ml302_qsslcfg_each_option_on_ctx_0_and_5(open_modem):
    # §2.1: query "+QSSLCFG: "<option>",<value>" (no context id), defaults: sslversion 4
    # (全部支持 listed last, the decision in behaviour.md), ciphersuite 0XFFFF (默认), seclevel 0,
    # the fixed paths of the 备注; "ctxindex" answers every field of a context; <ctxindex> 0-5.
    host, _ = open_modem("ml302")
    for ctx in (0, 5):
        for name, value in (("sslversion", "4"), ("ciphersuite", "0XFFFF"), ("seclevel", "0"),
                            ("cacert", '"/caCrt.pem"'), ("clientcert", '"/clientCrt.pem"'),
                            ("clientkey", '"/privateKey.pem"')):
            assert host.at(f'AT+QSSLCFG="{name}",{ctx}') == \
                f'\r\n+QSSLCFG: "{name}",{value}\r\n\r\nOK\r\n'.encode(), (name, ctx)
    assert host.at('AT+QSSLCFG="sslversion",5,3;+QSSLCFG="seclevel",5,2;+QSSLCFG="ciphersuite",5,0X003D') == OK
    assert host.at('AT+QSSLCFG="ctxindex",5') == \
        b'\r\n+QSSLCFG: 5,3,2,0X003D,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n' + OK
    # §2.1 示例
    assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
    assert host.at('AT+QSSLCFG="seclevel",0') == b'\r\n+QSSLCFG: "seclevel",2\r\n' + OK


def test_ml302_qsecwrite_prompt_and_checksums_computed_independently(open_modem):
    # §2.2: AT+QSECWRITE=<crtflag> -> ">" prompt, data, Ctrl+Z -> "+QSECWRITE: <uploadsize>,
    # <checksum>" OK, checksum per the 备注 (16-bit XOR of big-endian pairs, odd tail padded
    # 0x00), printed as the example "384a": four lower-case hex digits (leading zeros kept).
    # §2.3 "+QSECREAD: <good>,<checksum>"; §2.4 AT+QSECDEL=<crtflag> -> OK.
    host, _ = open_modem("ml302")
    cases = {0: b"\x00\x01", 1: b"\x0a\xbc\x00\x00\x00", 2: bytes(b for b in range(256) if b not in (0x1A, 0x1B)) * 5 + b"\x80"}   # odd, 1271
    for slot, data in cases.items():
        host.write(f"AT+QSECWRITE={slot}\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(data + b"\x1a")
        cs = xor16_reference(data)
        assert host.read_until(OK) == f"\r\n+QSECWRITE: {len(data)},{cs}\r\n".encode() + OK, slot
        assert host.at(f"AT+QSECREAD={slot}") == f"\r\n+QSECREAD: 1,{cs}\r\n".encode() + OK
    assert xor16_reference(cases[0]) == "0001" and xor16_reference(cases[1]) == "0abc"
    for slot in (0, 1, 2):
        assert host.at(f"AT+QSECDEL={slot}") == OK
        assert host.at(f"AT+QSECREAD={slot}") == b"\r\n+CME ERROR: 22\r\n"


def test_ml302_edges_on_a_live_socket(open_modem, emulator, pki):
    # §2.5 <ssid> 5, <ctxindex> 5, <timeout> 10 (lower end); §2.8 <cid> 0 and 1 ("保留参数,
    # 对命令无影响": either works), <length> 1 and 1500 (the test form's (1,1500));
    # "+QSSLRECV: <ipaddr>:<port>,TCP,<actuallength><CR><LF><data>" OK, no data: OK alone;
    # §2.9 the socket's line; §2.10 "+QSSLURC: "recv",<cid>,<ssid>"; §2.6 <closetype> 1:
    # OK then "<ssid>,CLOSE OK".
    host, _ = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n" + OK
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", server.port)
        emulator.router.add_dns(ML_HOST, ML_IP)
        assert host.at(f'AT+QSSLOPEN=5,5,"{ML_HOST}",443,0,10') == OK
        assert host.read_until(b"\r\n+QSSLOPEN: 5,0\r\n", 15) == b"\r\n+QSSLOPEN: 5,0\r\n"
        state = host.at("AT+QSSLSTATE")
        expected = (b'\r\n+QSSLSTATE: "IP PROCESSING"\r\n'
                    + b"".join(b'+QSSLSTATE: %d,"TCP","",0,"INITIAL",1\r\n' % i for i in range(5))
                    + b'+QSSLSTATE: 5,"TCP","106.12.79.254",443,"CONNECTED",1\r\n' + OK)
        assert state == expected
        host.write("AT+QSSLSEND=5\r")
        assert host.read_exactly(4) == b"\r\n> "
        host.write(b"hello\x1a")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert host.read_until(b'\r\n+QSSLURC: "recv",1,5\r\n', 10) == b'\r\n+QSSLURC: "recv",1,5\r\n'
        got = host.at("AT+QSSLRECV=0,5,1")
        assert got == b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,1\r\nh\r\n" + OK, got
        rest = b""
        for _ in range(50):
            answer = host.at("AT+QSSLRECV=1,5,1500")
            if answer == OK:
                if rest == b"ello":
                    break
                host.quiet_for(0.05)
                continue
            m = re.match(rb"\r\n\+QSSLRECV: 106\.12\.79\.254:443,TCP,(\d+)\r\n", answer)
            n = int(m.group(1))
            assert answer == m.group(0) + answer[m.end():m.end() + n] + b"\r\n" + OK
            rest += answer[m.end():m.end() + n]
        assert rest == b"ello"
        assert host.at("AT+QSSLCLOSE=5,1") == OK
        assert host.read_until(b"\r\n5,CLOSE OK\r\n") == b"\r\n5,CLOSE OK\r\n"


# == defaults that only show over time (modem on manual time) ===================================
def _advance(emulator, host, port, seconds: float) -> None:
    emulator.wait_received(port, host.written)
    emulator.advance(port, seconds)


def test_ec2x_negotiatetime_default_300_s(open_modem, emulator, pki):
    # §2.2.1/§2.2.2 <negotiate_time> "Range: 10-300. Default: 300. Unit: second": a server that
    # never answers the ClientHello: state 1 ("Opening", §2.2.6) until 300 s, then
    # +QSSLOPEN: <id>,569 (§5 "Operation timeout").
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at("AT+QIACT=1") == OK
    with TlsServer(pki.server, mode="silent") as server:
        emulator.router.add_map(MANUAL_HOST, 8010, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=1,2,3,"{MANUAL_HOST}",8010') == OK
        server.wait_for(lambda: server.connections and server.conn.client_hello, 5, "ClientHello")
        _advance(emulator, host, port, 299.9)
        state = host.at("AT+QSSLSTATE=3")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 3,"SSLClient","220\.180\.239\.212",8010,\d+,1,1,3,0,"usbmodem",2'
                            rb"\r\n\r\nOK\r\n", state), state
        assert b"+QSSLOPEN" not in host.transcript
        _advance(emulator, host, port, 0.1)
        assert _opened(host, 3) == b"\r\n+QSSLOPEN: 3,569\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n" + OK


def test_ml302_qsslopen_timeout_default_90_s(open_modem, emulator, pki):
    # ML302 §2.5 <timeout> "10-300（s，默认 90s）": omitted, an unanswered handshake ends at 90 s
    # with "+QSSLOPEN: <ssid>,-1" (<connectcode> -1 错误), CONNECTING until then (§2.9).
    host, port = open_modem("ml302", manual_time=True)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    with TlsServer(pki.server, mode="silent") as server:
        emulator.router.add_map(ML_HOST, 443, "127.0.0.1", server.port)
        emulator.router.add_dns(ML_HOST, ML_IP)
        assert host.at(f'AT+QSSLOPEN=0,0,"{ML_HOST}",443,0') == OK
        server.wait_for(lambda: server.connections and server.conn.client_hello, 5, "ClientHello")
        _advance(emulator, host, port, 89.9)
        assert b'+QSSLSTATE: 0,"TCP","106.12.79.254",443,"CONNECTING",1\r\n' in host.at("AT+QSSLSTATE")
        assert b"+QSSLOPEN" not in host.transcript
        _advance(emulator, host, port, 0.1)
        assert host.read_until(b"\r\n+QSSLOPEN: 0,-1\r\n", 15) == b"\r\n+QSSLOPEN: 0,-1\r\n"


# == echo on: the examples as a terminal shows them ========================================
def test_ec2x_3_3_2_and_3_4_2_sends_with_echo(open_modem, emulator, pki):
    # §3.3.2.1 / §3.3.2.2 (and §3.4.2, the same lines in push mode) with ATE1, as the examples
    # are a terminal's log: the command echoed, ">" prompt, the data echoed (behaviour.md: data
    # in a "> " prompt are echoed; Ctrl+Z ends it and is not data), SEND OK.  The ML302 §3
    # replay shows the same on its side (test_ml302_ssl.py).
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("AT+QIACT=1") == b"AT+QIACT=1\r" + OK
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(MANUAL_HOST, 8011, "127.0.0.1", server.port)
        line = f'AT+QSSLOPEN=1,1,4,"{MANUAL_HOST}",8011,1'
        assert host.at(line) == line.encode() + b"\r" + OK
        assert host.read_until(b"\r\n+QSSLOPEN: 4,0\r\n") == b"\r\n+QSSLOPEN: 4,0\r\n"
        host.write(b"AT+QSSLSEND=4\r")
        assert host.read_exactly(18) == b"AT+QSSLSEND=4\r\r\n> "
        host.write(b"Test data from SSL\x1a")
        assert host.read_until(b"SEND OK\r\n") == b"Test data from SSL\r\nSEND OK\r\n"
        # §3.4.3: the echo server's answer is pushed
        assert host.read_until(b"from SSL\r\n") == b'\r\n+QSSLURC: "recv",4,18\r\nTest data from SSL\r\n'
        host.write(b"AT+QSSLSEND=4,18\r")
        assert host.read_exactly(21) == b"AT+QSSLSEND=4,18\r\r\n> "
        host.write(b"Test data from SSL")
        assert host.read_until(b"SEND OK\r\n") == b"Test data from SSL\r\nSEND OK\r\n"
        assert host.read_until(b"from SSL\r\n") == b'\r\n+QSSLURC: "recv",4,18\r\nTest data from SSL\r\n'
        assert host.at("AT+QSSLCLOSE=4") == b"AT+QSSLCLOSE=4\r" + OK


def test_ml302_reboot_forgets_the_global_options(open_modem):
    # ML302 §2.1: "ignorertctime" (default 1 per behaviour.md), "https", "httpsctxi" (0-5) are
    # module-wide; behaviour.md: AT+QSSLCFG settings are back to their defaults after
    # AT+CFUN=1,1 (only the AT+QSECWRITE store persists).
    host, _ = open_modem("ml302")
    for line in ('"https",1', '"httpsctxi",5', '"ignorertctime",0', '"sslversion",5,1'):
        assert host.at(f"AT+QSSLCFG={line}") == OK
    assert host.at("AT+CFUN=1,1") == OK
    host.read_until(b"+CPIN: READY\r\n")
    assert host.at("ATE0").endswith(OK)
    for name, value in (("https", 0), ("httpsctxi", 0), ("ignorertctime", 1)):
        assert host.at(f'AT+QSSLCFG="{name}"') == f'\r\n+QSSLCFG: "{name}",{value}\r\n'.encode() + OK
    assert host.at('AT+QSSLCFG="sslversion",5') == b'\r\n+QSSLCFG: "sslversion",4\r\n' + OK


# == ML302 §2.2 / §2.3 examples verbatim ========================================================
def _with_checksum(size: int, checksum: int) -> bytes:
    """PEM-looking bytes of `size` (even) whose §2.2 checksum is `checksum`: the last word
    is chosen to make the XOR come out (and is neither Ctrl+Z nor ESC)."""
    body = bytearray(b"-----BEGIN CERTIFICATE-----\n")
    line = b"MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\n"
    while len(body) < size - 2:
        body += line
    del body[size - 2:]
    need = int(xor16_reference(bytes(body)), 16) ^ checksum
    last = bytes([need >> 8, need & 0xFF])
    assert not set(last) & {0x1A, 0x1B}
    data = bytes(body) + last
    assert len(data) == size and xor16_reference(data) == f"{checksum:04x}"
    return data


def test_ml302_2_2_to_2_4_examples_verbatim(open_modem):
    # §2.2 示例: AT+QSECWRITE=0 / > / <data> / +QSECWRITE: 1388,384a / OK
    # §2.3 示例: AT+QSECREAD=0 / +QSECREAD: 1,553f / OK (another certificate: written first)
    # §2.4 示例: AT+QSECDEL=0 / OK  (the §2.2 description: delete before writing again)
    host, _ = open_modem("ml302", echo=True)
    host.write(b"AT+QSECWRITE=0\r")
    assert host.read_exactly(19) == b"AT+QSECWRITE=0\r\r\n> "
    host.write(_with_checksum(1388, 0x384A) + b"\x1a")
    out = host.read_until(b"\r\nOK\r\n")
    assert out.endswith(b"\r\n+QSECWRITE: 1388,384a\r\n\r\nOK\r\n"), out[-60:]
    assert host.at("AT+QSECDEL=0") == b"AT+QSECDEL=0\r" + OK
    assert host.at("ATE0") == b"ATE0\r" + OK
    host.write(b"AT+QSECWRITE=0\r")
    assert host.read_exactly(4) == b"\r\n> "
    host.write(_with_checksum(1200, 0x553F) + b"\x1a")
    assert host.read_until(b"\r\nOK\r\n") == b"\r\n+QSECWRITE: 1200,553f\r\n" + OK
    assert host.at("AT+QSECREAD=0") == b"\r\n+QSECREAD: 1,553f\r\n" + OK
    assert host.at("AT+QSECDEL=0") == OK


# == AT+QSSLSTATE with and without an id, both profiles ========================================
def test_ec2x_qsslstate_lists_only_ssl_sockets(open_modem, emulator, pki, tcp_echo):
    # §2.2.6: "can only query the SSL connection status": a TCP/IP socket (AT+QIOPEN, the same
    # id pool per behaviour.md) is not listed, neither by the execution form nor by =<id>.
    from tests.e2e.socket_support import qiopen
    host, _ = open_modem("ec2x")
    assert host.at("AT+QIACT=1") == OK
    qiopen(host, 0)
    with TlsServer(pki.server, legacy=True, mode="echo") as server:
        emulator.router.add_map(MANUAL_HOST, 8010, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=1,1,4,"{MANUAL_HOST}",8010,0') == OK
        assert _opened(host, 4) == b"\r\n+QSSLOPEN: 4,0\r\n"
        all_ = host.at("AT+QSSLSTATE")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 4,"SSLClient","220\.180\.239\.212",8010,\d+,2,1,4,0,"usbmodem",1'
                            rb"\r\n\r\nOK\r\n", all_), all_
        assert host.at("AT+QSSLSTATE=4") == all_
        assert host.at("AT+QSSLSTATE=0") == OK
        assert host.at("AT+QSSLCLOSE=4") == OK
    assert host.at("AT+QICLOSE=0") == OK


def test_ml302_qsslstate_has_no_write_form(open_modem):
    # ML302 §2.9 documents the test, read and execution forms only ("此命令用于查询所有连接状态"):
    # AT+QSSLSTATE=<n> is ERROR, the read and test forms a bare OK, the execution form the
    # <state> line then all six sockets.
    host, _ = open_modem("ml302")
    for line in ("AT+QSSLSTATE=0", "AT+QSSLSTATE=5"):
        assert host.at(line) == ERROR, line
    assert host.at("AT+QSSLSTATE?") == OK
    assert host.at("AT+QSSLSTATE=?") == OK
    assert host.at("AT+QSSLSTATE") == (b'\r\n+QSSLSTATE: "IP INITIAL"\r\n' + b"".join(
        b'+QSSLSTATE: %d,"TCP","",0,"INITIAL",1\r\n' % i for i in range(6)) + OK)
