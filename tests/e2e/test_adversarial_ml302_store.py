"""Adversarial tests of the ML302 certificate store (AT+QSECWRITE / QSECREAD / QSECDEL)
and the SSL commands that use it, driven through the pty the way host firmware and
hostile servers do: byte-at-a-time writes, odd chunking, no waiting for answers, port
closed mid-command, binary data, wrong key material, out-of-range parameters.

Every answer is compared with the ML302 SSL AT manual's wire format (CR LF framing,
spaces, quotes) or, where the manual is silent, with docs/behaviour.md."""
from __future__ import annotations

import re
import time

import pytest
from cryptography.hazmat.primitives import serialization

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from emulator.testing.peers import default_pki
from tests.e2e.ml302_support import HOST, HOST_IP, routed_servers

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"


def cs(data: bytes) -> str:
    return f"{xor16(data):04x}"


def written(data: bytes) -> bytes:
    return f"\r\n+QSECWRITE: {len(data)},{cs(data)}\r\n\r\nOK\r\n".encode()


def dribble(host, data: bytes, pause: float = 0.0) -> None:
    """One byte per write(), as firmware that flushes per byte."""
    for i in range(len(data)):
        host.write(data[i:i + 1])
        if pause:
            time.sleep(pause)


def secwrite(host, slot: int, data: bytes) -> bytes:
    host.write(f"AT+QSECWRITE={slot}\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data + CTRL_Z)
    return host.read_until(re.compile(rb"OK\r\n|ERROR[^\r]*\r\n"))


def reopen(host: Host, port) -> Host:
    host.close()
    time.sleep(0.2)          # a close and reopen in the same instant is no close at all
    new = Host(port.path)
    return new


@pytest.fixture(scope="module")
def pki():
    return default_pki()


@pytest.fixture
def server(pki, emulator):
    """server(**kwargs) -> TlsServer routed as www.iottest.work:443 (DNS 106.12.79.254)."""
    yield from routed_servers(emulator, pki.server, mode="echo", ciphers="DEFAULT:@SECLEVEL=0")


def open_ssl(host, ssid: int = 0, code: int = 0, ctx: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN={ssid},{ctx},"{HOST}",443,0') == OK
    urc = f"\r\n+QSSLOPEN: {ssid},{code}\r\n".encode()
    assert host.read_until(urc, timeout=20) == urc


def close_ssl(host, ssid: int = 0) -> None:
    host.write(f"AT+QSSLCLOSE={ssid}\r")
    expected = f"\r\nOK\r\n\r\n{ssid},CLOSE OK\r\n".encode()
    assert host.read_until(b"CLOSE OK\r\n") == expected


def ec_key_der_without_control_bytes() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ec
    while True:
        der = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        if b"\x1a" not in der and b"\x1b" not in der:
            return der


# -- AT+QSECWRITE through the pty ---------------------------------------------------------
def test_secwrite_byte_at_a_time_with_crlf_nul_and_high_bytes(ml302_strict):
    host, _, _ = ml302_strict
    data = b"-----BEGIN\r\n\x00\xff\x80\n\r\r\n\x7f" * 7 + b"\x01"
    # The fixture's lines end with CR alone; this host ends its lines with CR LF, and says
    # so first (a host known to be CR-only may start its data with LF: docs/behaviour.md).
    dribble(host, b"AT\r\n")
    assert host.read_until(OK) == OK
    dribble(host, b"AT+QSECWRITE=1\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    dribble(host, data + CTRL_Z)
    assert host.read_until(b"OK\r\n") == written(data)
    assert host.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{cs(data)}\r\n\r\nOK\r\n".encode()


def test_secwrite_everything_in_one_write_without_waiting(ml302_strict):
    """Command, data, Ctrl+Z and the next two commands in a single write."""
    host, _, _ = ml302_strict
    data = b"\nstarts with LF\r\nAT+QSECDEL=0\r\n"
    host.write(b"AT+QSECWRITE=0\r\n" + data + CTRL_Z + b"AT+QSECREAD=0\r\nAT+QSECDEL=0\r\n")
    # The LF right after the CR belongs to the line; the data's own leading LF is data.
    expected = (b"\r\n> " + written(data) + f"\r\n+QSECREAD: 1,{cs(data)}\r\n\r\nOK\r\n".encode() + OK)
    assert host.read_exactly(len(expected)) == expected


def test_secwrite_echo_on(open_modem):
    host, _ = open_modem("ml302", echo=True)
    host.write(b"AT+QSECWRITE=2\r")
    assert host.read_until(b"> ") == b"AT+QSECWRITE=2\r\r\n> "
    host.write(b"key\r\n" + CTRL_Z)
    assert host.read_until(b"OK\r\n") == b"key\r\n" + written(b"key\r\n")


def test_port_closed_mid_secwrite_stores_nothing(open_modem):
    host, port = open_modem("ml302")
    host.write(b"AT+QSECWRITE=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"-----BEGIN CERTIFICATE-----\r\nMIIB")
    host = reopen(host, port)
    assert host.at("AT") == OK
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert secwrite(host, 0, b"new") == written(b"new")
    host.close()


def test_port_closed_mid_command_line(open_modem):
    """A half-typed line must not be joined with the next host's bytes."""
    host, port = open_modem("ml302")
    host.write(b"AT+QSECWR")
    host = reopen(host, port)
    host.write(b"ITE=0\r\n")
    assert host.quiet_for(0.3) == b""          # no AT prefix: not a command
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    host.close()


def test_oversize_then_escape_and_oversize_then_ctrl_z(ml302_strict):
    host, _, _ = ml302_strict
    host.write(b"AT+QSECWRITE=0\r\n")
    host.read_until(b"> ")
    host.write(b"A" * 20000 + ESC)
    assert host.read_until(b"OK\r\n") == OK
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert secwrite(host, 0, b"B" * 16385) == b"\r\n+CME ERROR: 20\r\n"
    assert host.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    assert host.at("AT") == OK
    assert secwrite(host, 0, b"C" * 16384) == written(b"C" * 16384)


def test_secwrite_crlf_host_data_starting_with_lf_after_window(ml302_strict):
    host, _, _ = ml302_strict
    host.write(b"AT\r\n")                # shows the host ends lines with CR LF
    assert host.read_until(OK) == OK
    host.write(b"AT+QSECWRITE=1\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"\n")       # this LF is the line's (within 50 ms)
    time.sleep(0.2)
    host.write(b"\nX" + CTRL_Z)      # a later LF is data
    assert host.read_until(b"OK\r\n") == written(b"\nX")


@pytest.mark.parametrize("line,answer", [
    ("AT+QSECWRITE", ERROR), ("AT+QSECWRITE?", ERROR), ("AT+QSECREAD", ERROR),
    ("AT+QSECDEL?", ERROR), ("AT+QSECWRITE=", b"\r\n+CME ERROR: 50\r\n"),
    ('AT+QSECWRITE="0"', b"\r\n+CME ERROR: 50\r\n"), ("AT+QSECREAD=0,", b"\r\n+CME ERROR: 50\r\n"),
    ("AT+QSECDEL=+1", b"\r\n+CME ERROR: 50\r\n"), ("AT+QSECDEL=99999999999999999999", b"\r\n+CME ERROR: 50\r\n"),
    ("AT+QSECREAD=1.0", b"\r\n+CME ERROR: 50\r\n"), ("AT+QSECREAD=0x0", b"\r\n+CME ERROR: 50\r\n"),
])
def test_bad_forms(ml302, line, answer):
    assert ml302.at(line) == answer


def test_cmee_2_and_atv0_errors(ml302):
    assert ml302.at("AT+CMEE=2") == OK
    ans = ml302.at("AT+QSECREAD=0")
    assert ans.startswith(b"\r\n+CME ERROR: ") and not ans[14:15].isdigit(), ans
    assert ml302.at("AT+CMEE=1") == OK
    ml302.write("ATV0\r")
    assert ml302.read_exactly(2) == b"0\r"
    ml302.write("AT+QSECREAD=0\r")
    assert ml302.read_until(b"\r\n") == b"+CME ERROR: 22\r\n"


# -- what the slots hold, as AT+QSSLOPEN uses it ------------------------------------------
def _client(pki):
    return pki.client


def _der(pem: bytes) -> bytes:
    from cryptography import x509
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _key(pem: bytes):
    return serialization.load_pem_private_key(pem, password=None)


@pytest.mark.parametrize("variant", ["crlf", "trailing_nul", "text_before", "bundle_wrong_first"])
def test_ca_slot_variants_that_work(ml302_strict, server, pki, variant):
    host, _, _ = ml302_strict
    server()
    ca = pki.ca.cert_pem
    data = {"crlf": ca.replace(b"\n", b"\r\n"),
            "trailing_nul": ca + b"\x00",
            "text_before": b"Bag Attributes\n    friendlyName: ca\nsubject=/CN=x\n" + ca,
            "bundle_wrong_first": pki.wrong_ca.cert_pem + ca}[variant]
    assert secwrite(host, 0, data) == written(data)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    open_ssl(host)
    close_ssl(host)


@pytest.mark.parametrize("variant", ["der", "garbage", "key_in_ca_slot", "wrong_ca"])
def test_ca_slot_variants_that_fail_cleanly(ml302_strict, server, pki, variant):
    host, _, _ = ml302_strict
    server()
    data = {"der": _der(pki.ca.cert_pem).replace(b"\x1a", b"").replace(b"\x1b", b""),
            "garbage": b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
            "key_in_ca_slot": pki.ca.key_pem,
            "wrong_ca": pki.wrong_ca.cert_pem}[variant]
    assert secwrite(host, 0, data) == written(data)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    open_ssl(host, code=-1)
    assert host.at("AT+QSSLSTATE").count(b'"CLOSED"') == 1


def _encrypted(key_pem: bytes) -> bytes:
    return _key(key_pem).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.BestAvailableEncryption(b"secret"))


def _pkcs1(key_pem: bytes) -> bytes:
    return _key(key_pem).private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption())


@pytest.mark.parametrize("variant", ["encrypted_key", "mismatched_key", "swapped", "empty_cert_slot", "der_key"])
def test_client_material_that_fails_cleanly(ml302_strict, server, pki, variant):
    host, _, _ = ml302_strict
    server(client_ca=pki.ca.cert_pem, require_client_cert=True)
    cert, key = pki.client.cert_pem, pki.client.key_pem
    other_key = pki.server.key_pem
    slots = {"encrypted_key": (cert, _encrypted(key)),
             "mismatched_key": (cert, other_key),
             "swapped": (key, cert),
             "empty_cert_slot": (None, key),
             "der_key": (cert, ec_key_der_without_control_bytes())}[variant]
    assert secwrite(host, 0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    for slot, data in zip((1, 2), slots):
        if data is not None:
            assert secwrite(host, slot, data) == written(data)
    assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
    open_ssl(host, code=-1)


def test_client_material_pkcs1_key_and_chain_work(ml302_strict, server, pki):
    host, _, _ = ml302_strict
    srv = server(client_ca=pki.ca.cert_pem, require_client_cert=True)
    assert secwrite(host, 0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    assert secwrite(host, 1, pki.client.chain_pem.replace(b"\n", b"\r\n")).startswith(b"\r\n+QSECWRITE: ")
    assert secwrite(host, 2, _pkcs1(pki.client.key_pem)).startswith(b"\r\n+QSECWRITE: ")
    assert host.at('AT+QSSLCFG="seclevel",0,2') == OK
    open_ssl(host)
    assert srv.wait_handshake().client_cert_der == _der(pki.client.cert_pem)


# -- AT+QSSLOPEN parameters -------------------------------------------------------------
@pytest.mark.parametrize("params", [
    '-1,0,"h",443,0', '0,-1,"h",443,0', '0,0,"h",-443,0', '0,0,"h",65536,0', '0,0,"h",443,-1',
    '99999999999999999999,0,"h",443,0', '0,0,"h",4294967739,0', '0,0,"h",443,0,4294967296',
    '0,0,"h","443",0', '"0",0,"h",443,0', '0,0,"h",443,"0"', '0,0,"h",443,0,"90"',
    '0,0,"h",443,0,90,1', '0,0,"h,443,0', '0,0,h",443,0', '0,0,"h"x,443,0', ',0,"h",443,0',
    '0,,"h",443,0', '0,0,,443,0', '0,0,"h",,0', '0,0,"h",443,', '0,0,"   ",443,0',
    '0,0,"' + "a" * 151 + '",443,0', '0,0,"h",443,0,0', '0,0,"h",443,0,10.5', '0,0,"h",0x1bb,0',
    '0,0,"h",443 1,0', '1 0,0,"h",443,0',
])
def test_qsslopen_bad_parameters_are_error_and_open_nothing(ml302_strict, params):
    host, _, _ = ml302_strict
    assert host.at(f"AT+QSSLOPEN={params}") == ERROR, params
    assert host.quiet_for(0.1) == b""
    assert b"CONNECTING" not in host.at("AT+QSSLSTATE")


def test_qsslopen_edge_values_accepted(ml302_strict, server):
    host, _, _ = ml302_strict
    server()
    for ssid, extra in ((0, ",10"), (5, ",300"), (3, "")):
        assert host.at(f'AT+QSSLOPEN={ssid},5,"{HOST}",443,0{extra}') == OK
        urc = f"\r\n+QSSLOPEN: {ssid},0\r\n".encode()
        assert host.read_until(urc, timeout=20) == urc
    # every one of them in use: -2, and the sockets are untouched
    for ssid in (0, 5, 3):
        open_ssl(host, ssid, code=-2)
    state = host.at("AT+QSSLSTATE")
    assert state.count(b'"CONNECTED"') == 3, state
    for ssid in (0, 5, 3):
        close_ssl(host, ssid)


def test_transparent_open_failures_and_in_use(ml302_strict, server, emulator):
    host, _, _ = ml302_strict
    server()
    open_ssl(host, 1)
    # in use, connectmode 1: the URC line, then ERROR instead of CONNECT
    assert host.at(f'AT+QSSLOPEN=1,0,"{HOST}",443,1') == b"\r\n+QSSLOPEN: 1,-2\r\n\r\nERROR\r\n"
    emulator.router.add_map("nobody.test", 443, "127.0.0.1", 1)     # refused
    assert host.at('AT+QSSLOPEN=2,0,"nobody.test",443,1', timeout=20) == b"\r\n+QSSLOPEN: 2,-1\r\n\r\nERROR\r\n"
    close_ssl(host, 1)


# -- sockets while the store is written, send / recv ----------------------------------------
def test_urcs_raised_during_secwrite_prompt_follow_its_answer(ml302_strict, server):
    host, _, _ = ml302_strict
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    host.write(b"AT+QSECWRITE=2\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"half")
    conn.send(b"pushed during the prompt")
    conn.close()
    time.sleep(0.5)
    assert host.quiet_for(0.2) == b""              # nothing may land inside the prompt
    host.write(b" a key\x08A/" + CTRL_Z)
    data = b"half a key\x08A/"
    expected = written(data) + b'\r\n+QSSLURC: "recv",1,0\r\n\r\n+QSSLURC: "close",0\r\n'
    assert host.read_exactly(len(expected)) == expected
    assert host.at("AT+QSSLRECV=0,0,1500") == (f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,24\r\n".encode()
                                                + b"pushed during the prompt\r\n\r\nOK\r\n")
    close_ssl(host)


def test_ca_replaced_while_socket_connected(ml302_strict, server, pki):
    host, _, _ = ml302_strict
    srv = server()
    assert secwrite(host, 0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    open_ssl(host)
    srv.wait_handshake()
    assert host.at("AT+QSECWRITE=0") == b"\r\n+CME ERROR: 3\r\n"      # filled
    assert host.at("AT+QSECDEL=0") == OK
    assert secwrite(host, 0, pki.wrong_ca.cert_pem) == written(pki.wrong_ca.cert_pem)
    # the connected socket is not affected
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"ping" + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'"recv",1,0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n'
    open_ssl(host, 1, code=-1)                  # the next open uses the new (wrong) CA
    close_ssl(host, 0)


def test_send_limits_and_binary(ml302_strict, server):
    host, _, _ = ml302_strict
    srv = server(mode="sink")             # (an echo's "recv" URC would race the later answers)
    open_ssl(host)
    srv.wait_handshake()
    body = bytes(b for b in range(256) if b not in (0x1A, 0x1B)) * 6
    body = body[:1460]
    host.write(b"AT+QSSLSEND=0\r\n")
    assert host.read_until(b"> ") == b"\r\n> "
    for i in range(0, len(body), 97):               # odd chunks
        host.write(body[i:i + 97])
    host.write(CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert bytes(srv.wait_received(1460))[:1460] == body
    host.write(b"AT+QSSLSEND=0\r")
    host.read_until(b"> ")
    host.write(CTRL_Z)                               # empty: ERROR (docs)
    assert host.read_until(b"ERROR\r\n") == ERROR
    host.write(b"AT+QSSLSEND=0\r")
    host.read_until(b"> ")
    host.write(b"y" * 1461 + CTRL_Z)
    assert host.read_until(b"ERROR\r\n") == ERROR
    assert host.at("AT") == OK
    close_ssl(host)


def test_port_closed_mid_send_sends_nothing(open_modem, server):
    host, port = open_modem("ml302")
    srv = server(mode="sink")             # (an echo's "recv" URC would race the close's answer)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    open_ssl(host)
    srv.wait_handshake()
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"shorter than the host meant")
    host = reopen(host, port)
    assert host.at("AT") == OK
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"after" + CTRL_Z)
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert bytes(srv.wait_received(5)) == b"after"
    close_ssl(host)
    host.close()


def test_big_download_through_flow_control(ml302_strict, server):
    host, _, _ = ml302_strict
    payload = bytes((i * 7 + i // 251) & 0xFF for i in range(200_000))
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    conn.send(payload)
    assert host.read_until(b'"recv",1,0\r\n', timeout=20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    got = bytearray()
    head = re.compile(rb"\r\n\+QSSLRECV: 106\.12\.79\.254:443,TCP,(\d+)\r\n")
    while len(got) < len(payload):
        host.write(b"AT+QSSLRECV=1,0,1500\r")
        first = host.read_until(re.compile(rb"\r\n\+QSSLRECV: [^\r]*\r\n|\r\nOK\r\n"))
        m = head.fullmatch(first)
        if not m:
            assert first == OK
            time.sleep(0.01)
            continue
        n = int(m.group(1))
        assert 1 <= n <= 1500
        got += host.read_exactly(n)
        assert host.read_exactly(8) == b"\r\n\r\nOK\r\n"
    assert bytes(got) == payload
    assert host.at("AT+QSSLRECV=1,0,1500") == OK
    conn.send(b"again")
    assert host.read_until(b'"recv",1,0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n'
    close_ssl(host)


def test_six_sockets_interleaved(ml302_strict, server):
    host, _, _ = ml302_strict
    server()
    for ssid in range(6):
        host.write(f'AT+QSSLOPEN={ssid},{ssid},"{HOST}",443,0\r')
    for ssid in range(6):
        host.seen(f"+QSSLOPEN: {ssid},0".encode(), timeout=30)
    for ssid in range(6):
        host.write(f"AT+QSSLSEND={ssid}\r")
        host.read_until(b"> ")
        host.write(f"hello {ssid}".encode() + CTRL_Z)
        host.read_until(b"SEND OK\r\n")
    for ssid in range(6):
        host.seen(f'+QSSLURC: "recv",1,{ssid}'.encode())
    for ssid in range(6):
        ans = host.at(f"AT+QSSLRECV=1,{ssid},1500")
        assert ans.endswith(f"TCP,7\r\nhello {ssid}\r\n\r\nOK\r\n".encode()), ans
    state = host.at("AT+QSSLSTATE")
    assert state == (b'\r\n+QSSLSTATE: "IP PROCESSING"\r\n' + b"".join(
        f'+QSSLSTATE: {i},"TCP","{HOST_IP}",443,"CONNECTED",1\r\n'.encode() for i in range(6)) + OK)
    for ssid in range(6):
        close_ssl(host, ssid)


def _online(host, srv, ssid: int = 0):
    assert host.at("ATS12=10") == OK                       # 0.2 s guard time
    host.write(f'AT+QSSLOPEN={ssid},0,"{HOST}",443,1\r')
    assert host.read_until(b"CONNECT\r\n", timeout=20) == b"\r\nCONNECT\r\n"
    return srv.wait_handshake()


def _escape(host) -> None:
    time.sleep(0.4)
    host.write(b"+++")
    assert host.read_until(OK, timeout=20).endswith(OK)     # (5 s ran out once under load)


# Was a bug, fixed: ML302 AT+QSSLRECV on a connectmode-1 (transparent) socket left with +++
# handed out the bytes that wait in the socket for ATO ('+QSSLRECV: 106.12.79.254:443,TCP,15'
# then ATO gave CONNECT with nothing); the EC2x handler refused the same read.
def test_transparent_socket_after_escape_keeps_its_bytes_for_ato(open_modem, server):
    host, _ = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    srv = server()
    conn = _online(host, srv)
    _escape(host)
    conn.send(b"waiting for ATO")
    time.sleep(0.3)
    assert host.quiet_for(0.1) == b""                       # no URC in transparent mode
    answer = host.at("AT+QSSLRECV=1,0,1500")
    host.write(b"ATO\r")
    after = host.read_until(b"waiting for ATO") + host.quiet_for(0.3)
    assert (answer, after) == (ERROR, b"\r\nCONNECT\r\nwaiting for ATO")


def test_transparent_peer_close_after_escape_falls_back_with_ml302_urcs(open_modem, server):
    host, _ = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    srv = server()
    conn = _online(host, srv, ssid=3)
    _escape(host)
    conn.send(b"parting words")
    conn.close()
    urcs = b'\r\n+QSSLURC: "recv",1,3\r\n\r\n+QSSLURC: "close",3\r\n'
    assert host.read_until(b'"close",3\r\n') == urcs
    assert host.at("AT+QSSLRECV=1,3,1500") == (f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,13\r\n".encode()
                                                + b"parting words\r\n\r\nOK\r\n")
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at(f'AT+QSSLOPEN=3,0,"{HOST}",443,1') == b"\r\n+QSSLOPEN: 3,-2\r\n\r\nERROR\r\n"
    close_ssl(host, 3)


def test_open_then_close_at_once_never_leaks_a_late_urc(ml302_strict, server):
    host, _, _ = ml302_strict
    server()
    for _ in range(8):
        host.write(f'AT+QSSLOPEN=2,0,"{HOST}",443,0;+QSSLCLOSE=2\r'.encode())
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\nOK\r\n\r\n2,CLOSE OK\r\n"
        open_ssl(host, 2)
        close_ssl(host, 2)
    assert host.quiet_for(0.3) == b""


def test_reboot_keeps_the_store_and_forgets_the_config(ml302_strict, pki):
    host, advance, _ = ml302_strict
    assert secwrite(host, 0, pki.ca.cert_pem) == written(pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="cacert",1,"/elsewhere.pem"') == OK
    assert host.at("AT+CFUN=1,1").endswith(OK)
    advance(1)
    host.read_until(b"+CPIN: READY\r\n")
    assert host.at("ATE0").endswith(OK)           # echo back to the profile's default
    assert host.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{cs(pki.ca.cert_pem)}\r\n\r\nOK\r\n".encode()
    assert host.at('AT+QSSLCFG="cacert",1') == b'\r\n+QSSLCFG: "cacert","/caCrt.pem"\r\n\r\nOK\r\n'


def test_atq1_secwrite(ml302):
    ml302.write(b"ATQ1\r")
    assert ml302.quiet_for(0.2) == b""
    ml302.write(b"AT+QSECWRITE=0\r")
    assert ml302.read_until(b"> ") == b"\r\n> "
    ml302.write(b"q1" + CTRL_Z)
    assert ml302.read_until(b"\r\n", timeout=5) == b"\r\n"
    line = ml302.read_until(b"\r\n")
    assert line == f"+QSECWRITE: 2,{cs(b'q1')}\r\n".encode()
    assert ml302.quiet_for(0.2) == b""


def test_escape_or_ctrl_z_followed_by_commands_in_the_same_write(ml302_strict):
    host, _, _ = ml302_strict
    host.write(b"AT+QSECWRITE=2\r\nabc" + ESC + b"AT+QSECREAD=2\r\nAT+QSECWRITE=2\r\nxy" + CTRL_Z
               + b"AT+QSECREAD=2\r\n")
    expected = (b"\r\n> " + OK + b"\r\n+CME ERROR: 22\r\n" + b"\r\n> " + written(b"xy")
                + f"\r\n+QSECREAD: 1,{cs(b'xy')}\r\n\r\nOK\r\n".encode())
    assert host.read_exactly(len(expected)) == expected


def test_server_closes_during_the_send_prompt(ml302_strict, server):
    host, _, _ = ml302_strict
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"too late")
    conn.close()
    srv.wait_done()
    time.sleep(0.3)
    host.write(CTRL_Z)
    # docs/behaviour.md: a socket not connected (or closed by the peer) is ERROR; the URC
    # raised during the prompt follows the answer.
    expected = ERROR + b'\r\n+QSSLURC: "close",0\r\n'
    assert host.read_exactly(len(expected)) == expected
    assert host.at("AT+QSSLRECV=1,0,1500") == OK
    close_ssl(host)


def test_recv_urc_raised_during_a_prompt_the_host_abandoned(open_modem, server):
    """The host hangs up inside a > prompt while data arrive; the next host must still be
    able to learn that data wait (by reading), and a later arrival must not be lost."""
    host, port = open_modem("ml302")
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    srv = server()
    open_ssl(host)
    conn = srv.wait_handshake()
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    conn.send(b"first")
    time.sleep(0.3)
    host = reopen(host, port)
    assert host.at("AT+QSSLRECV=1,0,1500").endswith(b"TCP,5\r\nfirst\r\n\r\nOK\r\n")
    conn.send(b"second")
    assert host.read_until(b'"recv",1,0\r\n') == b'\r\n+QSSLURC: "recv",1,0\r\n'
    close_ssl(host)
    host.close()
