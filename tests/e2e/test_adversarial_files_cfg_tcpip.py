"""Adversarial: EC2x file commands (AT+QFUPL & co.), AT+QSSLCFG with its boundary values and
the certificate checks against AT+CCLK, and the TCP/IP commands (AT+QIOPEN & co.) with
AT+QIDNSGIP/QPING/QNTP, driven the way real host firmware and hostile servers do: CR LF line
ends, one byte at a time, no waiting for prompts, the port closed mid-command.  Every answer
is compared with the manuals' wire format (EC2x SSL note, docs/behaviour.md where silent)."""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from emulator.testing.peers.pki import utc
from tests.e2e.socket_support import TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, free_port, qiopen, qird, qisend
from tests.e2e.ssl_options_support import PORT, cfg, close, last_error, open_ssl, trust


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


def cs(data: bytes) -> str:
    return f"{xor16(data):x}"          # AT+QFUPL / QFDWL: no leading zeros


def upl_answer(data: bytes) -> bytes:
    return f"\r\n+QFUPL: {len(data)},{cs(data)}\r\n\r\nOK\r\n".encode()


def crlf(host: Host) -> None:
    """One CR LF line first: from here on the modem knows this host ends lines with CR LF
    (the fixtures' lines end with CR alone, after which a first-byte LF is data by design)."""
    host.write(b"AT\r\n")
    assert host.read_until(b"\r\nOK\r\n") == b"\r\nOK\r\n"


def reopen(host: Host) -> Host:
    """The host closes the device and opens it again (a firmware reset of the host MCU)."""
    path = host.path
    host.close()
    time.sleep(0.2)
    return Host(path)


# == AT+QFUPL / QFDWL / QFLST / QFDEL ===========================================================
def test_qfupl_byte_at_a_time_crlf_with_binary_data_starting_with_lf(modem):
    host, _, _ = modem
    data = b"\n\r\n\x00\x1a\x1b+++AT\r\n" + bytes(range(256))
    crlf(host)
    for b in f'AT+QFUPL="UFS:b.bin",{len(data)},5,0\r\n'.encode():
        host.write(bytes([b]))
    host.read_until(b"\r\nCONNECT\r\n")
    time.sleep(0.1)                       # past the LF window: a first-byte LF is data now
    for b in data:
        host.write(bytes([b]))
    assert host.read_until(b"\r\nOK\r\n") == upl_answer(data)
    host.write('AT+QFDWL="b.bin"\r\n')
    expected = b"\r\nCONNECT\r\n" + data + f"\r\n+QFDWL: {len(data)},{cs(data)}\r\n\r\nOK\r\n".encode()
    assert host.read_exactly(len(expected)) == expected


def test_qfupl_data_and_next_command_in_one_write(modem):
    """A host that never waits for CONNECT: the LF of its CR LF is the line's, exactly <size>
    bytes are data, what follows is the next command line."""
    host, _, _ = modem
    host.write(b'AT+QFUPL="RAM:x",4\r\n\r\nAB' + b'AT+QFLST="RAM:*"\r\n')
    out = host.read_until(b'OK\r\n', timeout=5)
    out += host.read_until(b'OK\r\n', timeout=5)
    assert out == (b"\r\nCONNECT\r\n" + upl_answer(b"\r\nAB")
                   + b'\r\n+QFLST: "RAM:x",4\r\n\r\nOK\r\n')


@pytest.mark.parametrize("size,acks", [(1023, 0), (1024, 0), (1025, 1), (2048, 1), (2049, 2), (3072, 2)])
def test_qfupl_ackmode_exact_block_boundaries_host_does_not_wait(modem, size, acks):
    host, _, _ = modem
    data = bytes((i * 7) & 0xFF for i in range(size))
    host.write(f'AT+QFUPL="ack{size}.bin",{size},5,1\r\n'.encode() + data)   # no waiting for "A"
    out = host.read_until(b"\r\nOK\r\n")
    assert out == b"\r\nCONNECT\r\n" + b"A" * acks + upl_answer(data)


def test_qfupl_ackmode_host_waits_for_each_a_in_odd_chunks(modem):
    host, _, _ = modem
    data = bytes(range(256)) * 10                   # 2560 bytes: "A" after 1024 and 2048
    host.write('AT+QFUPL="chunks.bin",2560,5,1\r\n')
    host.read_until(b"\r\nCONNECT\r\n")
    sent = 0
    for block in (data[:1024], data[1024:2048], data[2048:]):
        for i in range(0, len(block), 333):
            host.write(block[i:i + 333])
        sent += len(block)
        if sent < len(data):
            assert host.read_exactly(1) == b"A"
    assert host.read_until(b"\r\nOK\r\n") == upl_answer(data)


def test_qfupl_timeout_partial_in_ackmode_keeps_what_came(modem):
    host, advance, _ = modem
    data = bytes(range(200)) * 6                    # 1200 of 3000 bytes
    host.write('AT+QFUPL="part.bin",3000,3,1\r\n')
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(data)
    assert host.read_exactly(1) == b"A"
    advance(2.5)
    assert host.quiet_for(0.2) == b""
    advance(1.0)
    assert host.read_until(b"\r\nOK\r\n") == upl_answer(data)
    assert host.at('AT+QFLST="part.bin"') == b'\r\n+QFLST: "part.bin",1200\r\n\r\nOK\r\n'


def test_qfupl_port_closed_mid_upload_stores_nothing_and_next_host_is_in_command_state(modem):
    host, _, _ = modem
    host.write('AT+QFUPL="half.bin",100,60\r\n')
    host.read_until(b"\r\nCONNECT\r\n")
    host.write(b"x" * 50)
    time.sleep(0.1)
    host2 = reopen(host)
    try:
        assert host2.at("AT") == b"\r\nOK\r\n"
        assert host2.at('AT+QFLST="*"') == b"\r\nOK\r\n"
        # the name is free again: a full upload works
        assert host2.upload("half.bin", b"y" * 100) == upl_answer(b"y" * 100)
    finally:
        host2.close()
        modem[0].ser = host2.ser     # (the fixture's host object is closed; keep it closable)


@pytest.mark.parametrize("name,code", [
    ("../x.pem", 406), ("UFS:../x.pem", 406), ("RAM:/etc/passwd", 406), ("/etc/passwd", 406),
    ("C:x.pem", 406), ("UFS:RAM:x", 406), ("x\\y", 406), ("a" * 81, 406), ("UFS:" + "a" * 81, 406),
    (" lead.pem", 406), ("trail.pem ", 406), ("wild*.pem", 406), ("q?.pem", 406), ("..", 406),
    (".", 406), ("UFS:", 406), ("RAM:", 406),
])
def test_qfupl_bad_names_refused_before_connect(modem, name, code):
    host, _, _ = modem
    # the data a driver would send after CONNECT must stay a command line
    host.write(f'AT+QFUPL="{name}",2\r\n'.encode())
    assert host.read_until(re.compile(rb"\r\n(\+CME ERROR: \d+|CONNECT)\r\n")) == \
        f"\r\n+CME ERROR: {code}\r\n".encode()
    assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("name,listed", [
    ("a" * 80, "a" * 80), ("UFS:" + "b" * 80, "b" * 80), ("RAM:" + "c" * 80, "RAM:" + "c" * 80),
    ("ufs:lower.pem", "lower.pem"), ("Ram:mixed.pem", "RAM:mixed.pem"),
    ("a b,c;d.pem", "a b,c;d.pem"), ("ünï.pem", None),
])
def test_qfupl_edge_names(modem, name, listed):
    host, _, _ = modem
    host.write(f'AT+QFUPL="{name}",3\r\n'.encode("latin-1"))
    head = host.read_until(re.compile(rb"\r\n(\+CME ERROR: \d+|CONNECT)\r\n"))
    if listed is None:
        assert head == b"\r\n+CME ERROR: 406\r\n"
        return
    assert head == b"\r\nCONNECT\r\n"
    host.write(b"abc")
    assert host.read_until(b"\r\nOK\r\n") == upl_answer(b"abc")
    pattern = "RAM:*" if listed.startswith("RAM:") else "*"
    assert host.at(f'AT+QFLST="{pattern}"') == f'\r\n+QFLST: "{listed}",3\r\n\r\nOK\r\n'.encode("latin-1")
    assert host.at(f'AT+QFDEL="{name}"') == b"\r\nOK\r\n"


def test_qfupl_size_boundaries_against_free_space(modem):
    host, _, _ = modem
    free = int(re.search(rb"\+QFLDS: (\d+),", host.at('AT+QFLDS="RAM"')).group(1))
    assert host.at(f'AT+QFUPL="RAM:big",{free + 1}') == b"\r\n+CME ERROR: 403\r\n"
    for line in ('AT+QFUPL="x",0', 'AT+QFUPL="x",1,0', 'AT+QFUPL="x",1,65536', 'AT+QFUPL="x",1,1,2',
                 'AT+QFUPL="x",1,1,0,0', 'AT+QFUPL="x",-1', 'AT+QFUPL="x",+1'):
        assert host.at(line) == b"\r\n+CME ERROR: 400\r\n", line
    assert host.at("AT") == b"\r\nOK\r\n"


def test_qfupl_ate1_crlf_host_echo_then_connect(open_modem):
    host, _ = open_modem("ec2x", echo=True)
    host.write(b'AT+QFUPL="e.txt",3\r\n')
    assert host.read_until(b"\r\nCONNECT\r\n") == b'AT+QFUPL="e.txt",3\r\r\nCONNECT\r\n'
    host.write(b"\n\nX")
    assert host.read_until(b"\r\nOK\r\n") == upl_answer(b"\n\nX")


# == CA file replaced while a socket uses it; seclevel files ==================================
def test_ca_replaced_between_opens_and_while_connected(modem, net, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        net(server)
        trust(host, 0, pki.ca.cert_pem, name="RAM:ca.pem")
        assert open_ssl(host, 0) == 0
        # replace the CA while socket 0 is connected: delete + upload (what a driver does)
        assert host.at('AT+QFDEL="RAM:ca.pem"') == b"\r\nOK\r\n"
        assert host.upload("RAM:ca.pem", pki.wrong_ca.cert_pem) == upl_answer(pki.wrong_ca.cert_pem)
        assert host.send_data(0, b"still up") == b"\r\nSEND OK\r\n"
        server.wait_received(8)
        host.seen(b'+QSSLURC: "recv",0\r\n')
        assert host.at("AT+QSSLCLOSE=0").endswith(b"\r\nOK\r\n")
        assert open_ssl(host, 0, client_id=1) == 566          # the new (wrong) CA applies
        assert last_error(host) == 566


@pytest.mark.parametrize("content,code", [
    (None, 552),                                   # configured file missing
    (b"", None),                                   # (an empty upload is impossible: see below)
    (b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n", "fail"),
    (bytes(range(256)), "fail"),                   # binary garbage
])
def test_seclevel1_with_missing_or_garbage_ca(modem, net, pki, content, code):
    host, _, _ = modem
    if content == b"":
        # AT+QFUPL cannot make an empty file: CONNECT then timeout gives 421
        host.write('AT+QFUPL="empty.pem",1,1\r\n')
        host.read_until(b"\r\nCONNECT\r\n")
        modem[1](1.5)
        assert host.read_until(re.compile(rb"\r\n\+CME ERROR: \d+\r\n")) == b"\r\n+CME ERROR: 421\r\n"
        return
    with TlsServer(pki.server) as server:
        net(server)
        if content is not None:
            host.upload("bad.pem", content)
        cfg(host, "seclevel", 0, 1)
        cfg(host, "cacert", 0, '"bad.pem"')
        err = open_ssl(host, 0)
        if code == "fail":
            assert err == 552, err          # "a context that cannot work" (behaviour.md)
        else:
            assert err == code
        assert last_error(host) == err
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


def test_seclevel2_without_client_key_is_552_before_any_tcp(modem, net, pki):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        net(server)
        trust(host, 0, pki.ca.cert_pem, seclevel=2)
        host.upload("cli.pem", pki.client.cert_pem)
        cfg(host, "clientcert", 0, '"cli.pem"')
        cfg(host, "clientkey", 0, '"nokey.pem"')
        assert open_ssl(host, 0) == 552
        assert last_error(host) == 552
        time.sleep(0.2)
        assert server.connections == []                 # refused before any TCP


# == AT+QSSLCFG boundaries and query forms =====================================================
@pytest.mark.parametrize("line", [
    'AT+QSSLCFG="sslversion",0,5', 'AT+QSSLCFG="sslversion",6,1', 'AT+QSSLCFG="sslversion",0,-1',
    'AT+QSSLCFG="seclevel",0,3', 'AT+QSSLCFG="negotiatetime",0,9', 'AT+QSSLCFG="negotiatetime",0,301',
    'AT+QSSLCFG="sni",0,2', 'AT+QSSLCFG="sni",0,"1"', 'AT+QSSLCFG="sni",0,,', 'AT+QSSLCFG="sni",0,1,',
    'AT+QSSLCFG="ciphersuite",0,"0XFFFF:0X0035"', 'AT+QSSLCFG="ciphersuite",0,""',
    'AT+QSSLCFG="ciphersuite",0,"0X0035:"', 'AT+QSSLCFG="ciphersuite",0,"35"',
    'AT+QSSLCFG="ciphersuite",0,"0X10035"', 'AT+QSSLCFG="nosuch",0,1', 'AT+QSSLCFG="sni"',
    'AT+QSSLCFG="psk",0,"id"', 'AT+QSSLCFG="dtlsversion",0,2', 'AT+QSSLCFG="renegotiation",0,2',
    'AT+QSSLCFG="closetimemode",0,2', 'AT+QSSLCFG="ignorelocaltime",0,2', 'AT+QSSLCFG?', 'AT+QSSLCFG',
    'AT+QSSLCFG=""', 'AT+QSSLCFG="sni",1,1,1',
])
def test_qsslcfg_invalid_values_are_error_552(modem, line):
    host, _, _ = modem
    assert host.at(line) == b"\r\nERROR\r\n", line
    assert last_error(host) == 552


@pytest.mark.parametrize("option,default,new", [
    ("sslversion", "4", "0"), ("ciphersuite", "0XFFFF", "0X0035"), ("cacert", '""', '"RAM:c.pem"'),
    ("clientcert", '""', '"UFS:cc.pem"'), ("clientkey", '""', '"k.pem"'), ("seclevel", "0", "2"),
    ("ignorelocaltime", "1", "0"), ("negotiatetime", "300", "10"), ("sni", "0", "1"),
    ("closetimemode", "0", "1"), ("ignoremulticertchainverify", "0", "1"),
    ("ignoreinvalidcertsign", "0", "1"), ("psk", '"",""', '"id","0011"'), ("dtls", "0", "1"),
    ("dtlsversion", "1", "0"), ("session_cache", "1", "0"), ("alpn", '""', '"h2,http/1.1"'),
    ("renegotiation", "0", "1"),
])
def test_qsslcfg_query_forms_exact_bytes(modem, option, default, new):
    host, _, _ = modem
    assert host.at(f'AT+QSSLCFG="{option}",5') == f'\r\n+QSSLCFG: "{option}",5,{default}\r\nOK\r\n'.encode() \
        .replace(b"\r\nOK", b"\r\n\r\nOK")
    assert host.at(f'AT+QSSLCFG="{option}",5,{new}') == b"\r\nOK\r\n"
    assert host.at(f'AT+QSSLCFG="{option}",5') == f'\r\n+QSSLCFG: "{option}",5,{new}\r\n\r\nOK\r\n'.encode()
    # the other contexts are untouched
    assert host.at(f'AT+QSSLCFG="{option}",4') == f'\r\n+QSSLCFG: "{option}",4,{default}\r\n\r\nOK\r\n'.encode()


def test_qsslcfg_cacertex_all_contexts_and_reboot_forgets(modem):
    host, _, _ = modem
    assert host.at('AT+QSSLCFG="cacertex",2,"RAM:x.pem"') == b"\r\nOK\r\n"
    expected = b"\r\n" + b"".join(
        f'+QSSLCFG: "cacertex",{i},"{"RAM:x.pem" if i == 2 else ""}"\r\n'.encode() for i in range(6)) + b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="cacertex"') == expected
    assert host.at('AT+QSSLCFG="clientcertex"') == expected


def test_qsslcfg_unknown_cipher_id_is_refused_or_reported_as_unsupported(modem, net, pki):
    """0X1234 is no cipher suite at all (not in the note's table, not in the test form).
    Either the write is refused (ERROR/552) or the open fails as 'operation not supported'."""
    host, _, _ = modem
    answer = host.at('AT+QSSLCFG="ciphersuite",0,0X1234')
    if answer == b"\r\nERROR\r\n":
        assert last_error(host) == 552
        return
    with TlsServer(pki.server) as server:
        net(server)
        err = open_ssl(host, 0)
        assert err in (552, 555), err


# == certificate dates against AT+CCLK (time zones, exact edges) ==============================
def test_not_before_edge_uses_the_cclk_time_zone(modem, net, pki):
    """notBefore 2030-01-01 00:00 UTC.  AT+CCLK local time with +32 quarters (+08:00):
    08:00:30 local is 00:00:30 UTC (valid), 07:59:30 local is 23:59:30 UTC the day before."""
    host, _, _ = modem
    cert = pki.issue_window("adv-2030", utc(2030), utc(2031))
    with TlsServer(cert) as server:
        net(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "ignorelocaltime", 0, 0)
        assert host.at('AT+CCLK="30/01/01,07:59:30+32"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 566
        assert host.at('AT+CCLK="30/01/01,08:00:30+32"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 0
        close(host)
        # a negative zone: 29/12/31,20:00:30-16 is 2030-01-01 00:00:30 UTC
        assert host.at('AT+CCLK="29/12/31,20:00:30-16"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 0
        close(host)
        assert host.at('AT+CCLK="29/12/31,19:59:30-16"') == b"\r\nOK\r\n"
        assert open_ssl(host, 0) == 566
        cfg(host, "ignorelocaltime", 0, 1)
        assert open_ssl(host, 0) == 0
        close(host)


def test_not_after_edge_and_expired_ca(modem, net, pki):
    host, _, _ = modem
    cert = pki.issue_window("adv-2021", utc(2020), utc(2021))
    with TlsServer(cert) as server:
        net(server)
        trust(host, 0, pki.ca.cert_pem)
        cfg(host, "ignorelocaltime", 0, 0)
        assert host.at('AT+CCLK="21/01/01,07:59:30+32"') == b"\r\nOK\r\n"   # 2020-12-31 23:59:30Z
        assert open_ssl(host, 0) == 0
        close(host)
        assert host.at('AT+CCLK="21/01/01,08:00:30+32"') == b"\r\nOK\r\n"   # 2021-01-01 00:00:30Z
        assert open_ssl(host, 0) == 566


# == SNI with IP literals ======================================================================
@pytest.mark.parametrize("dial", ["127.0.0.1", "www.iottest.work"])
@pytest.mark.parametrize("sni", [0, 1])
def test_sni_on_off_with_names_and_ip_literals(modem, emulator, pki, dial, sni):
    host, _, _ = modem
    with TlsServer(pki.server) as server:
        emulator.router.add_map(dial, PORT, "127.0.0.1", server.address[1])
        cfg(host, "sni", 0, sni)
        assert open_ssl(host, 0, host=dial) == 0
        conn = server.wait_handshake()
        expect = dial if (sni and not dial[0].isdigit()) else None
        assert conn.sni == expect
        close(host)


# == TCP/IP ===================================================================================
def test_qiopen_id_range_and_refused_and_unroutable(modem, emulator):
    host, _, _ = modem
    assert host.at(f'AT+QIOPEN=1,12,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == b"\r\nERROR\r\n"
    assert last_error(host) == 552
    dead = free_port()
    emulator.router.add_map("refused.example", 80, "127.0.0.1", dead)
    qiopen(host, 11, addr="refused.example", port=80, code=566)
    assert last_error(host) == 566
    qiopen(host, 0, addr="10.255.255.1", port=80, code=566)     # --offline: unroutable IP
    qiopen(host, 1, addr="no.such.name.invalid", port=80, code=565)
    # all ids free again
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"


def test_qiopen_twelve_ids_then_a_thirteenth(modem, tcp_echo):
    host, _, _ = modem
    for i in range(12):
        qiopen(host, i)
    lines = host.at("AT+QISTATE?")
    assert lines.count(b"+QISTATE: ") == 12
    for i in range(12):
        assert re.search(rb'\+QISTATE: %d,"TCP","[0-9.]+",%d,\d+,2,1,%d,0,"usbmodem"\r\n' % (i, TCP_PORT, i), lines)
    qiopen(host, 5, code=563)
    assert host.at('AT+QSSLOPEN=1,0,7,"x.example",443') == b"\r\nERROR\r\n"
    assert last_error(host) == 563
    for i in range(12):
        assert host.at(f"AT+QICLOSE={i}") == b"\r\nOK\r\n"


def test_qisend_lengths_0_max_and_max_plus_1(modem, tcp_echo):
    host, _, _ = modem
    qiopen(host, 0)
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
    data = bytes(range(256)) * 5 + bytes(180)          # 1460
    assert qisend(host, 0, data) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')       # the echo's URC, before the next exact answer
    assert host.at("AT+QISEND=0,1461") == b"\r\nERROR\r\n"
    assert last_error(host) == 552
    got = b""
    while len(got) < 1460:
        got += qird(host, 0, 1000)[1]
    assert got == data
    assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: 1460,1460,0\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 1460,1460,0\r\n\r\nOK\r\n"
    for bad in ("AT+QIRD=0,1501", "AT+QIRD=0,-1", "AT+QIRD=0,", "AT+QISEND=0,", "AT+QISEND=0,-1",
                "AT+QISEND=0,0,1"):
        assert host.at(bad) == b"\r\nERROR\r\n", bad
        assert last_error(host) == 552, bad
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_qisend_variable_length_byte_at_a_time_with_crlf(modem, tcp_echo):
    host, _, _ = modem
    qiopen(host, 0)
    crlf(host)
    for b in b"AT+QISEND=0\r\n":
        host.write(bytes([b]))
    host.read_until(b"> ")
    time.sleep(0.1)
    for b in b"\nline\r\n\x1a":
        host.write(bytes([b]))
    assert host.read_until(re.compile(rb"\r\n(SEND OK|ERROR)\r\n")) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n')
    assert qird(host, 0)[1] == b"\nline\r\n"
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("hexs,ok_data", [
    ("414", None), ("4G", None), ("", None), ('"41 42"', None), ("0x41", None), ("4142", b"AB"),
    ("aBcD", b"\xab\xcd"), ("00" * 512, bytes(512)), ("00" * 513, None), ('"ÿÿ"', None),
])
def test_qisendex_odd_nonhex_and_limits(modem, tcp_echo, hexs, ok_data):
    host, _, _ = modem
    qiopen(host, 0)
    answer = host.at(f"AT+QISENDEX=0,{hexs}".encode("latin-1"))
    if ok_data is None:
        assert answer == b"\r\nERROR\r\n"
        assert last_error(host) == 552
    else:
        assert answer == b"\r\nSEND OK\r\n"
        host.seen(b'+QIURC: "recv",0\r\n')
        assert qird(host, 0)[1] == ok_data
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


def test_udp_datagrams_and_qird_partial(modem, udp_echo):
    host, _, _ = modem
    qiopen(host, 2, kind="UDP", addr=UDP_HOST, port=UDP_PORT)
    assert qisend(host, 2, b"0123456789") == b"\r\nSEND OK\r\n"
    assert qisend(host, 2, b"abc") == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",2\r\n')
    time.sleep(0.2)
    assert qird(host, 2, 4)[1] == b"0123"
    assert qird(host, 2, 100)[1] == b"456789"
    assert qird(host, 2, 100)[1] == b"abc"
    assert qird(host, 2, 100)[1] == b""
    state = host.at("AT+QISTATE=1,2")
    assert re.fullmatch(rb'\r\n\+QISTATE: 2,"UDP","[0-9.]+",%d,[1-9]\d*,2,1,2,0,"usbmodem"\r\n\r\nOK\r\n' % UDP_PORT,
                        state), state
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"


def test_qiclose_unused_and_qistate_unused(modem):
    host, _, _ = modem
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"                  # nothing open: OK
    assert last_error(host) == 0
    assert host.at("AT+QISTATE=1,3") == b"\r\nOK\r\n"
    assert host.at("AT+QISTATE=1,12") == b"\r\nERROR\r\n"
    assert host.at("AT+QISTATE=0,1") == b"\r\nOK\r\n"
    assert host.at("AT+QISTATE=2,1") == b"\r\nERROR\r\n"


# == AT+QIDNSGIP / AT+QPING / AT+QNTP ==========================================================
@pytest.mark.parametrize("name", ["no.such.invalid", "a..b", ".", "x" * 64 + ".example", "-"])
def test_qidnsgip_bad_names(modem, name):
    host, _, _ = modem
    assert host.at(f'AT+QIDNSGIP=1,"{name}"') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb'\+QIURC: "dnsgip",\d+[^\r]*\r\n'), 10) == b'+QIURC: "dnsgip",565\r\n'


def test_qidnsgip_empty_name_and_ip_literal(modem):
    host, _, _ = modem
    assert host.at('AT+QIDNSGIP=1,""') == b"\r\n+CME ERROR: 552\r\n"
    assert host.at('AT+QIDNSGIP=1,"10.1.2.3"') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb'\+QIURC: "dnsgip",0,\d+,\d+\r\n')) == b'+QIURC: "dnsgip",0,1,0\r\n'
    assert host.seen(re.compile(rb'\+QIURC: "dnsgip","[^"]*"\r\n')) == b'+QIURC: "dnsgip","10.1.2.3"\r\n'


def test_qping_unresolvable_and_unroutable(modem):
    host, advance, _ = modem
    assert host.at('AT+QPING=1,"no.such.invalid",1,1') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb"\+QPING: \d+[^\r]*\r\n"), 10) == b"+QPING: 565\r\n"
    assert host.at('AT+QPING=1,"10.255.255.1",1,2') == b"\r\nOK\r\n"
    for _ in range(4):
        advance(1.0)
    host.seen(b"+QPING: 0,2,0,2,0,0,0\r\n", 5)
    assert host.transcript.endswith(b"\r\n+QPING: 569\r\n\r\n+QPING: 569\r\n\r\n+QPING: 0,2,0,2,0,0,0\r\n")
    host.pending.clear()
    for bad in ('AT+QPING=1,"x",0', 'AT+QPING=1,"x",256', 'AT+QPING=1,"x",1,0', 'AT+QPING=1,"x",1,11',
                'AT+QPING=1,""'):
        assert host.at(bad) == b"\r\n+CME ERROR: 552\r\n", bad


def test_qntp_unresolvable_and_bad_port(modem):
    host, _, _ = modem
    assert host.at('AT+QNTP=1,"no.such.invalid",123') == b"\r\nOK\r\n"
    assert host.seen(re.compile(rb"\+QNTP: \d+[^\r]*\r\n"), 10) == b"+QNTP: 565\r\n"
    for bad in ('AT+QNTP=1,"x",0', 'AT+QNTP=1,"x",65536', 'AT+QNTP=1,""', 'AT+QNTP=1,"x",123,2'):
        assert host.at(bad) == b"\r\n+CME ERROR: 552\r\n", bad


def test_qisend_prompt_abandoned_by_a_port_close_sends_nothing(modem, tcp_sink):
    host, _, _ = modem
    qiopen(host, 0)
    host.write("AT+QISEND=0,10\r")
    host.read_until(b"> ")
    host.write(b"12345")
    time.sleep(0.1)
    host2 = reopen(host)
    try:
        assert host2.at("AT") == b"\r\nOK\r\n"
        assert host2.at("AT+QISEND=0,0") == b"\r\n+QISEND: 0,0,0\r\n\r\nOK\r\n"
        assert host2.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"
    finally:
        host2.close()


@pytest.mark.parametrize("line", [
    "AT+QICLOSE=0,65536", "AT+QICLOSE=0,-1", "AT+QICLOSE=12", 'AT+QIOPEN=1,0,"TCP","1.2.3.4",0',
    'AT+QIOPEN=1,0,"TCP"," ",80', 'AT+QIOPEN=1,0,"TCP","",80', 'AT+QIOPEN=1,0,"TCP","1.2.3.4",65536',
    'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,0,0', 'AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,5000,2',
    'AT+QIOPEN=1,0,"SCTP","1.2.3.4",80', 'AT+QIOPEN=0,0,"TCP","1.2.3.4",80', 'AT+QIOPEN=17,0,"TCP","1.2.3.4",80',
    'AT+QIOPEN=1,0,"TCP","1.2.3.4",80,0,3', 'AT+QIOPEN=1,0,"TCP","1.2.3.4",80,65536',
    "AT+QISENDEX=0", "AT+QISENDEX=12,41", "AT+QIRD=12", "AT+QISDE=2",
])
def test_tcpip_bad_parameters_are_error_552(modem, line):
    host, _, _ = modem
    assert host.at(line) == b"\r\nERROR\r\n", line
    assert last_error(host) == 552, line


@pytest.mark.parametrize("ident,key,ok_", [
    ("i" * 255, "k" * 255, True), ("i" * 256, "k", False), ("i", "k" * 256, False), ("", "", True),
])
def test_qsslcfg_psk_length_limits(modem, ident, key, ok_):
    host, _, _ = modem
    answer = host.at(f'AT+QSSLCFG="psk",1,"{ident}","{key}"')
    assert answer == (b"\r\nOK\r\n" if ok_ else b"\r\nERROR\r\n")
    if ok_:
        assert host.at('AT+QSSLCFG="psk",1') == f'\r\n+QSSLCFG: "psk",1,"{ident}","{key}"\r\n\r\nOK\r\n'.encode()


def test_qsslcfg_path_of_84_characters_and_85(modem):
    host, _, _ = modem
    ok_path = "RAM:" + "p" * 80
    assert host.at(f'AT+QSSLCFG="cacert",0,"{ok_path}"') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="cacert",0') == f'\r\n+QSSLCFG: "cacert",0,"{ok_path}"\r\n\r\nOK\r\n'.encode()
    assert host.at(f'AT+QSSLCFG="cacert",0,"{ok_path}p"') == b"\r\nERROR\r\n"


def test_qistate_of_a_listener_shows_remote_port_0(modem):
    host, _, _ = modem
    lport = free_port()
    assert host.at(f'AT+QIOPEN=1,0,"TCP LISTENER","8.8.8.8",80,{lport},0') == b"\r\nOK\r\n"
    host.seen(b"+QIOPEN: 0,0\r\n")
    assert host.at("AT+QISTATE=1,0") == \
        f'\r\n+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,{lport},3,1,0,0,"usbmodem"\r\n\r\nOK\r\n'.encode()
    assert host.at("AT+QICLOSE=0,0") == b"\r\nOK\r\n"


# Was a bug, fixed: a UDP SERVICE opened with a non-zero <remote_port> showed that port in
# AT+QISTATE (docs: a listener and a UDP SERVICE show "127.0.0.1" and 0).
def test_qistate_of_a_udp_service_shows_remote_port_0(modem):
    host, _, _ = modem
    lport = free_port(socket.SOCK_DGRAM)
    assert host.at(f'AT+QIOPEN=1,1,"UDP SERVICE","8.8.8.8",81,{lport},0') == b"\r\nOK\r\n"
    host.seen(b"+QIOPEN: 1,0\r\n")
    assert host.at("AT+QISTATE=1,1") == \
        f'\r\n+QISTATE: 1,"UDP SERVICE","127.0.0.1",0,{lport},2,1,1,0,"usbmodem"\r\n\r\nOK\r\n'.encode()


def test_file_count_limit_is_403_before_connect(modem):
    host, _, _ = modem
    n = 0
    while True:
        host.write(f'AT+QFUPL="RAM:f{n}",1\r')
        head = host.read_until(re.compile(rb"\r\n(CONNECT|\+CME ERROR: \d+)\r\n"))
        if head != b"\r\nCONNECT\r\n":
            break
        host.write(b"x")
        host.read_until(b"\r\nOK\r\n")
        n += 1
        assert n <= 200
    assert head == b"\r\n+CME ERROR: 403\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"
    assert host.at('AT+QFDEL="RAM:f0"') == b"\r\nOK\r\n"
    assert host.upload("RAM:again", b"z") == upl_answer(b"z")
