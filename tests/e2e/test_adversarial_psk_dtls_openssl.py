"""Adversarial round on the EC2x's PSK and DTLS paths (AT+QSSLCFG "psk", "dtls",
"dtlsversion", with "ciphersuite", "seclevel", "alpn" and the session cache) against
`openssl s_server` (DTLS and TLS, PSK-only, certificate + PSK, RSA-PSK) and UDP middleboxes
on 127.0.0.1 that coalesce, split and reverse datagrams, or put a new server process behind
the old one's port.

Ground not covered by test_adversarial_dtls_psk / _dtls_paths / _dtls_cert_review /
_udp_dtls_prompts / test_ssl_options_keylog_psk_dtls / test_adversarial_tls_options:
  * every PSK key exchange (PSK, DHE-PSK, ECDHE-PSK, RSA-PSK) and AEAD (GCM, CCM, CCM8,
    ChaCha20) configured as one id: offered alone (+ the SCSV), negotiated, data flow;
    a list's order is the offer's; a PSK suite without a PSK, or a TLS 1.2-only suite on
    DTLS 1.0, is not offered (what Mbed TLS 2.28 does) and the open fails at once;
  * an empty identity means "no PSK" (as Mbed TLS: no static PSK without an identity);
    identities with commas, semicolons and spaces reach the server intact; the key's text
    forms ("0x..", "00:11:..") are the host's bytes;
  * PSK with a CA at seclevel 1: a certificate suite the server picks is still verified,
    a PSK suite the server prefers opens; **RSA-PSK** (a suite WITH a server certificate)
    over DTLS is checked as over TLS (it skipped the certificate and name checks: fixed,
    tls_engine/session.py _on_handshake_over);
  * the wrong key: the server's bad_record_mac named in the log (TLS and DTLS 1.0);
  * ALPN in a DTLS ClientHello;
  * datagram framing: three records coalesced into one datagram, application data in the
    datagram of the server's Finished, data + close_notify in one datagram, a 4000-byte
    record read in buffer mode and pushed (1500 + 1500 + 1000), 30 datagrams left unread
    (one "recv" URC), 90 KiB unread past recv_buffer (nothing lost), 20 back-to-back
    1460-byte sends (one record per datagram, consecutive sequence numbers, bytes exact),
    a server flight split into single-record datagrams sent in reverse order (certificate
    check still right both ways);
  * transparent mode over DTLS: an 18000-byte burst arrives intact; "+++", AT+QSSLSEND in
    command mode, data waiting for ATO; the burst goes in datagrams of at most 1460 data
    bytes (it went as 16 KiB records, one per datagram: fixed, DTLS_WRITE_CHUNK);
  * a server process restarted behind the same port mid-session; the session cache (an
    identical "psk" write forgets it; another context's session is never borrowed);
  * the ML302 has neither option.
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.testing.peers import OpenSslServer, UdpMiddlebox
from emulator.testing.peers.dtls_wire import CT_ALERT, CT_APP, CT_CCS, is_client_hello, records
from emulator.testing.peers.openssl import OpenSslProcess, openssl_binary
from tests.e2e.socket_support import escape, wait_for
from tests.e2e.ssl_options_support import HOST, PORT, cfg, recv_all, trust

PSK_HEX = "00112233445566778899aabbccddeeff"
WRONG_HEX = "ffeeddccbbaa99887766554433221100"
OPENED = re.compile(rb"\+QSSLOPEN: (\d+),(-?\d+)\r\n")
OK = b"\r\nOK\r\n"
E566 = b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"


# -- peers ----------------------------------------------------------------------------------------
@pytest.fixture
def servers():
    started: list = []

    def keep(server):
        started.append(server)
        return server
    yield keep
    for server in started:
        server.stop()


def psk_server(*extra: str, version: str = "-dtls1_2", key: str = PSK_HEX, identity: str = "modem-1",
               cipher: str = "PSK:@SECLEVEL=0") -> OpenSslServer:
    return OpenSslServer(["-nocert", version, "-psk", key, "-psk_identity", identity, "-cipher", cipher, *extra])


def psk_server_on(port: int, *extra: str) -> OpenSslProcess:
    """A PSK DTLS s_server on a chosen UDP port (a server "restarted" behind the same address)."""
    proc = OpenSslProcess([openssl_binary(), "s_server", "-accept", f"127.0.0.1:{port}", "-nocert",
                           "-dtls1_2", "-psk", PSK_HEX, "-psk_identity", "modem-1",
                           "-cipher", "PSK:@SECLEVEL=0", *extra])
    proc.wait_for_output(rb"ACCEPT", 10)
    return proc


def offered(client_hello: bytes) -> list[int]:
    """The cipher suite ids of a DTLS ClientHello datagram."""
    body = records(client_hello)[0].payload[12:]
    pos = 34
    pos += 1 + body[pos]                  # session id
    pos += 1 + body[pos]                  # cookie
    n = int.from_bytes(body[pos:pos + 2], "big")
    return [int.from_bytes(body[pos + 2 + i:pos + 4 + i], "big") for i in range(0, n, 2)]


def hellos(box: UdpMiddlebox) -> list[list[int]]:
    return [offered(d) for d in box.sent("c2s") if is_client_hello(d)]


def split_records(datagram: bytes) -> list[bytes]:
    out, pos = [], 0
    for r in records(datagram):
        n = 13 + len(r.payload)
        out.append(datagram[pos:pos + n])
        pos += n
    return out


# -- pty helpers ----------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def crlf_host(request):
    for name in ("ec2x_strict", "ml302_strict"):
        if name in request.fixturenames:
            request.getfixturevalue(name)[0].line_end = b"\r\n"


def route(emulator, port: int, name: str = HOST) -> None:
    emulator.router.add_map(name, PORT, "127.0.0.1", port)


def start_open(host, client_id: int = 0, ctx: int = 0, name: str = HOST, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{client_id},"{name}",{PORT},{mode}') == OK


def answers(host, client_id: int = 0) -> list[int]:
    return [int(m.group(2)) for m in OPENED.finditer(bytes(host.transcript)) if int(m.group(1)) == client_id]


def one_answer(host, client_id: int = 0, timeout: float = 15) -> int:
    """The open's answer, and no second one; the transcript starts afresh after it."""
    wait_for(lambda: host._fill() or answers(host, client_id), timeout, "+QSSLOPEN")
    host.quiet_for(0.3)
    got = answers(host, client_id)
    assert len(got) == 1, got
    host.transcript.clear()
    host._consumed.clear()
    return got[0]


def state_of(host, client_id: int) -> int | None:
    answer = host.at(f"AT+QSSLSTATE={client_id}")
    m = re.search(rb'\+QSSLSTATE: %d,"SSLClient","[^"]*",\d+,\d+,(\d),' % client_id, answer)
    return int(m.group(1)) if m else None


def psk_ctx(host, ctx: int = 0, dtls: int = 1, identity: str = "modem-1", key: str = PSK_HEX) -> None:
    cfg(host, "dtls", ctx, dtls)
    cfg(host, "psk", ctx, f'"{identity}"', f'"{key}"')


def close(host, client_id: int = 0) -> None:
    assert host.at(f"AT+QSSLCLOSE={client_id}") == OK


def round_trip(host, server, up: bytes, down: bytes) -> None:
    mark = server.mark()
    assert host.send_data(0, up) == b"\r\nSEND OK\r\n"
    server.wait_for_output(re.escape(up.rstrip(b"\n")), 10, since=mark)
    server.write(down)
    assert recv_all(host, 0, len(down)) == down


# == every PSK key exchange and cipher, configured alone ============================================
PSK_SUITES = [
    (0x00A8, "PSK-AES128-GCM-SHA256"), (0x00A9, "PSK-AES256-GCM-SHA384"),
    (0xC0A4, "PSK-AES128-CCM"), (0xC0A8, "PSK-AES128-CCM8"), (0xCCAB, "PSK-CHACHA20-POLY1305"),
    (0x008C, "PSK-AES128-CBC-SHA"), (0x00AE, "PSK-AES128-CBC-SHA256"),
    (0xC037, "ECDHE-PSK-AES128-CBC-SHA256"), (0xCCAC, "ECDHE-PSK-CHACHA20-POLY1305"),
    (0x00AA, "DHE-PSK-AES128-GCM-SHA256"), (0xCCAD, "DHE-PSK-CHACHA20-POLY1305"),
]


@pytest.mark.parametrize("suite, name", PSK_SUITES, ids=[n for _, n in PSK_SUITES])
def test_each_psk_suite_configured_alone_is_offered_alone_and_negotiated(ec2x_strict, emulator, servers,
                                                                         suite, name):
    """AT+QSSLCFG="ciphersuite",0,0X<id> with a PSK set, DTLS 1.2, against an s_server that
    takes every PSK suite: the ClientHello offers exactly that id and the SCSV
    (docs/behaviour.md: "offers exactly the configured ids in order, plus 0x00FF"), the
    server negotiates it, a line goes up and one comes down."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(cipher="ALL:PSK:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        cfg(host, "ciphersuite", 0, f"0X{suite:04X}")
        start_open(host)
        assert one_answer(host) == 0
        assert hellos(box)[0] == [suite, 0x00FF]
        server.wait_for_output(rb"CIPHER is " + name.encode() + rb"\n", 10)
        round_trip(host, server, b"suite %04x up\n" % suite, b"suite down\n")
        close(host)


@pytest.mark.parametrize("suite, name", [(0x00A9, "PSK-AES256-GCM-SHA384"), (0xC0A8, "PSK-AES128-CCM8"),
                                         (0xCCAC, "ECDHE-PSK-CHACHA20-POLY1305"),
                                         (0x00AB, "DHE-PSK-AES256-GCM-SHA384")])
def test_psk_suites_over_tls_too(ec2x_strict, emulator, servers, suite, name):
    """The same over TLS 1.2 (dtls 0): the one configured suite is negotiated, data flow."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-tls1_2", cipher="ALL:PSK:@SECLEVEL=0"))
    route(emulator, server.port)
    psk_ctx(host, dtls=0)
    cfg(host, "ciphersuite", 0, f"0X{suite:04X}")
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is " + name.encode() + rb"\n", 10)
    round_trip(host, server, b"tls psk up\n", b"tls psk down\n")
    close(host)


@pytest.mark.parametrize("order", ["0XC0A4:0X00A8", "0X00A8:0XC0A4"])
def test_psk_suite_list_order_is_the_offer_and_the_servers_pick(ec2x_strict, emulator, servers, order):
    """A list of two PSK suites: offered in the configured order (then the SCSV); s_server
    (client preference, its default) takes the first."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    ids = [int(x, 16) for x in order.split(":")]
    names = {0xC0A4: b"PSK-AES128-CCM", 0x00A8: b"PSK-AES128-GCM-SHA256"}
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        cfg(host, "ciphersuite", 0, order)
        assert host.at('AT+QSSLCFG="ciphersuite",0') == f'\r\n+QSSLCFG: "ciphersuite",0,{order}\r\n\r\nOK\r\n'.encode()
        start_open(host)
        assert one_answer(host) == 0
        assert hellos(box)[0] == ids + [0x00FF]
        server.wait_for_output(rb"CIPHER is " + names[ids[0]] + rb"\n", 10)
        close(host)


@pytest.mark.parametrize("case", ["psk_suite_without_psk", "tls12_suite_on_dtls10"])
def test_a_psk_suite_the_library_cannot_use_is_not_offered_and_the_open_fails_at_once(
        ec2x_strict, emulator, servers, caplog, case):
    """A PSK suite configured while no PSK is set, or PSK-AES128-GCM-SHA256 (TLS 1.2 only)
    with dtlsversion 0 (DTLS 1.0): Mbed TLS 2.28 leaves such a suite out of its
    ClientHello (only the SCSV is left), the server finds no shared cipher and answers
    handshake_failure: one +QSSLOPEN: 0,566 at once (no modem time passes), the log names it."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-dtls1" if case == "tls12_suite_on_dtls10" else "-dtls1_2",
                                cipher="ALL:PSK:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        if case == "tls12_suite_on_dtls10":
            cfg(host, "psk", 0, '"modem-1"', f'"{PSK_HEX}"')
            cfg(host, "dtlsversion", 0, 0)
        cfg(host, "ciphersuite", 0, "0X00A8")
        start_open(host)
        assert one_answer(host) == 566
        assert host.at("AT+QIGETERROR") == E566
        assert hellos(box) and all(h == [0x00FF] for h in hellos(box))
    server.wait_for_output(rb"no shared cipher", 5, stream="stderr")
    assert "server sent fatal alert handshake_failure(40)" in caplog.text
    assert state_of(host, 0) is None
    close(host)


# == identity and key forms ========================================================================
def test_an_empty_identity_with_a_key_is_no_psk(ec2x_strict, emulator, servers, pki):
    """AT+QSSLCFG="psk",0,"","<hex>": stored and read back as written, but without an
    identity there is no PSK (Mbed TLS 2.28 offers PSK suites only with a static PSK that has
    an identity): a PSK-only server answers handshake_failure, 566 at once; the same
    context still opens a certificate server (seclevel 0)."""
    host, advance, _ = ec2x_strict
    only_psk = servers(psk_server(cipher="ALL:PSK:@SECLEVEL=0"))
    with UdpMiddlebox(only_psk.address) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        assert host.at(f'AT+QSSLCFG="psk",0,"","{PSK_HEX}"') == OK
        assert host.at('AT+QSSLCFG="psk",0') == f'\r\n+QSSLCFG: "psk",0,"","{PSK_HEX}"\r\n\r\nOK\r\n'.encode()
        start_open(host)
        assert one_answer(host) == 566
        offer = hellos(box)[0]
        assert not any(s in (0x00A8, 0xC0A4, 0xCCAB, 0xCCAC, 0x008C) for s in offer) and 0x0035 in offer
    close(host)
    cert, key = pki.server.load_args
    with_cert = servers(OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "AES256-SHA"]))
    route(emulator, with_cert.port)
    start_open(host)
    assert one_answer(host) == 0
    with_cert.wait_for_output(rb"CIPHER is AES256-SHA\n", 10)
    round_trip(host, with_cert, b"no identity, no psk\n", b"cert ok\n")
    close(host)


def test_an_identity_with_an_empty_key_fails_every_open_552_before_any_datagram(ec2x_strict, emulator, servers,
                                                                               caplog):
    """AT+QSSLCFG="psk",0,"modem-1","" is written (the note's key length is 0-255) but a PSK
    of no bytes cannot be configured (Mbed TLS's mbedtls_ssl_conf_psk refuses length 0): the
    open answers +QSSLOPEN: 0,552 (a context that cannot work), AT+QIGETERROR 552, the log
    names the reason, and not one datagram leaves; a key written again opens."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        assert host.at('AT+QSSLCFG="psk",0,"modem-1",""') == OK
        start_open(host)
        assert one_answer(host) == 552
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
        assert "PSK configured with an empty key" in caplog.text
        time.sleep(0.2)
        assert box.sent("c2s") == []
        close(host)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        close(host)


def test_identity_with_commas_semicolons_and_spaces_reaches_the_server_intact(ec2x_strict, emulator, servers):
    """A quoted identity holding ',', ';' and spaces is one parameter: the query reads it
    back, and s_server (expecting another identity, which it only warns about) prints the
    one the modem sent, byte for byte; the session opens and carries data."""
    host, advance, _ = ec2x_strict
    identity = " dev,42; site=A b "
    server = servers(psk_server(identity="expected"))
    route(emulator, server.port)
    psk_ctx(host, identity=identity)
    assert host.at('AT+QSSLCFG="psk",0') == f'\r\n+QSSLCFG: "psk",0,"{identity}","{PSK_HEX}"\r\n\r\nOK\r\n'.encode()
    start_open(host)
    assert one_answer(host) == 0
    got = server.wait_for_output(rb"got '([^']*)' expected 'expected'", 10)
    assert got.group(1) == identity.encode()
    round_trip(host, server, b"odd identity\n", b"ok\n")
    close(host)


@pytest.mark.parametrize("text", ["0x00112233", "00:11:22:33", "0011-2233"])
def test_key_text_that_is_not_plain_hex_is_the_hosts_bytes(ec2x_strict, emulator, servers, text):
    """docs/behaviour.md: a key of hex digits only (even length) is its bytes, anything else
    the host's bytes: "0x00112233", "00:11:22:33" and "0011-2233" are 10, 11 and 9 ASCII
    bytes -- s_server holding exactly those bytes opens; one holding the 4 bytes a lenient
    hex reading would make (00 11 22 33) refuses (DTLS 1.0: its bad_record_mac, at once)."""
    host, advance, _ = ec2x_strict
    good = servers(psk_server(key=text.encode().hex(), version="-dtls1"))
    route(emulator, good.port)
    psk_ctx(host, key=text)
    cfg(host, "dtlsversion", 0, 0)
    start_open(host)
    assert one_answer(host) == 0
    round_trip(host, good, b"ascii key\n", b"yes\n")
    close(host)
    bad = servers(psk_server(key="00112233", version="-dtls1"))
    route(emulator, bad.port)
    start_open(host)
    assert one_answer(host) == 566                    # (DTLS 1.0: bad_record_mac at once)


@pytest.mark.parametrize("dtls, flag", [(0, "-tls1_2"), (1, "-dtls1")])
def test_wrong_key_is_566_with_the_servers_bad_record_mac_named(ec2x_strict, emulator, servers, caplog, dtls, flag):
    """The right identity, the wrong key: the server cannot decrypt the modem's Finished and
    sends a fatal bad_record_mac (OpenSSL over TLS 1.2 and DTLS 1.0): +QSSLOPEN: 0,566 at
    once, AT+QIGETERROR 566, the log names the server's alert; the id is free."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version=flag))
    route(emulator, server.port)
    psk_ctx(host, dtls=dtls, key=WRONG_HEX)
    cfg(host, "dtlsversion", 0, 0)
    start_open(host)
    assert one_answer(host) == 566
    assert host.at("AT+QIGETERROR") == E566
    assert "server sent fatal alert bad_record_mac(20)" in caplog.text
    server.wait_for_output(rb"decryption failed or bad record mac", 5, stream="stderr")
    assert state_of(host, 0) is None
    close(host)


# == PSK with a CA (seclevel 1) ====================================================================
def test_psk_with_a_ca_a_certificate_suite_is_still_verified_a_preferred_psk_suite_opens(
        ec2x_strict, emulator, servers, pki, caplog):
    """seclevel 1 + a CA + a PSK, 0XFFFF (the table, then the PSK suites), against a DTLS
    server with an untrusted certificate AND the PSK: with client preference it picks the
    table's first suite (AES256-SHA) and the certificate check refuses it (566, the log says
    why) -- a PSK does not switch the check off; with -serverpref and a PSK suite first the
    session is PSK, has no certificate to check, opens and carries data."""
    host, advance, _ = ec2x_strict
    cert, key = pki.wrong_server.load_args
    both = ["-cert", cert, "-key", key, "-psk", PSK_HEX, "-psk_identity", "modem-1", "-dtls1_2"]
    first = servers(OpenSslServer([*both, "-cipher", "ALL:@SECLEVEL=0"]))
    route(emulator, first.port)
    psk_ctx(host)
    trust(host, 0, pki.ca.cert_pem)
    start_open(host)
    assert one_answer(host) == 566
    assert "server certificate not signed by UFS:ca.pem" in caplog.text
    close(host)
    second = servers(OpenSslServer([*both, "-serverpref", "-cipher", "ECDHE-PSK-CHACHA20-POLY1305:ALL:@SECLEVEL=0"]))
    route(emulator, second.port)
    start_open(host)
    assert one_answer(host) == 0
    second.wait_for_output(rb"CIPHER is ECDHE-PSK-CHACHA20-POLY1305\n", 10)
    round_trip(host, second, b"psk beats cert\n", b"fine\n")
    close(host)


RSA_PSK_CASES = [
    pytest.param(0, "wrong_ca", 566, id="tls-untrusted"),
    pytest.param(0, "wrong_name", 566, id="tls-wrong-name"),
    pytest.param(1, "trusted", 0, id="dtls-trusted"),
    pytest.param(1, "wrong_ca", 566, id="dtls-untrusted"),
    pytest.param(1, "wrong_name", 566, id="dtls-wrong-name"),
]


@pytest.mark.parametrize("dtls, problem, code", RSA_PSK_CASES)
def test_rsa_psk_suite_still_checks_the_servers_certificate(ec2x_strict, emulator, servers, pki, caplog,
                                                            dtls, problem, code):
    """RSA-PSK (RFC 4279 sec. 4) authenticates the server with its certificate AND the PSK:
    at seclevel 1 that certificate is checked like any other (docs/behaviour.md: "A
    Certificate sent in a certificate-less PSK suite is not checked" -- RSA-PSK is not one).
    AT+QSSLCFG="ciphersuite",0,0X00AC (TLS_RSA_PSK_WITH_AES_128_GCM_SHA256, offered as the
    docs' "library's other suites"): an untrusted chain or a dialled name the certificate
    does not carry is 566; the trusted server opens.  Over TLS it is; over DTLS it is not."""
    host, advance, _ = ec2x_strict
    leaf = pki.wrong_server if problem == "wrong_ca" else pki.server
    cert, key = leaf.load_args
    server = servers(OpenSslServer(["-cert", cert, "-key", key, "-psk", PSK_HEX, "-psk_identity", "modem-1",
                                    "-dtls1_2" if dtls else "-tls1_2",
                                    "-cipher", "RSA-PSK-AES128-GCM-SHA256:@SECLEVEL=0"]))
    name = "nobody.example" if problem == "wrong_name" else HOST
    route(emulator, server.port, name)
    psk_ctx(host, dtls=dtls)
    trust(host, 0, pki.ca.cert_pem)
    cfg(host, "ciphersuite", 0, "0X00AC")
    start_open(host, name=name)
    got = one_answer(host)
    if got == 0:
        server.wait_for_output(rb"CIPHER is RSA-PSK-AES128-GCM-SHA256\n", 10)
        close(host)
    assert got == code
    if code:
        assert host.at("AT+QIGETERROR") == E566
        assert ("server certificate not signed by" if problem == "wrong_ca"
                else "server certificate does not match 'nobody.example'") in caplog.text


# == ALPN in a DTLS ClientHello ====================================================================
def test_alpn_is_offered_in_a_dtls_psk_client_hello(ec2x_strict, emulator, servers):
    """AT+QSSLCFG="alpn",0,"x-other,coap" on a DTLS context: s_server -alpn coap sees both
    names in the ClientHello, in order, and selects coap; the session carries data."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server("-alpn", "coap"))
    route(emulator, server.port)
    psk_ctx(host)
    cfg(host, "alpn", 0, '"x-other,coap"')
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"ALPN protocols advertised by the client: x-other, coap\n", 10)
    round_trip(host, server, b"alpn dtls\n", b"coap ok\n")
    close(host)


# == datagram framing ==============================================================================
def test_three_records_coalesced_in_one_datagram_are_each_delivered_once(ec2x_strict, emulator, servers):
    """RFC 6347 4.1.1: several records may share a datagram.  A middlebox holds three
    application datagrams of the server and sends their records as one datagram: the host
    reads the three lines, in order, once each, then nothing."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    held: list[bytes] = []
    armed = [False]

    def rule(direction, index, data):
        if armed[0] and direction == "s2c" and records(data)[0].type == CT_APP:
            held.append(data)
            return [b"".join(held)] if len(held) == 3 else []
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        armed[0] = True
        for i in range(3):
            server.write(b"line %d\n" % i)
            wait_for(lambda: len(held) > i, 15, "the server's datagram")   # (5 s: missed once in a full run)
        assert recv_all(host, 0, 21) == b"line 0\nline 1\nline 2\n"
        time.sleep(0.3)
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        assert len([d for d in box.passed("s2c") if records(d.data)[0].type == CT_APP]) == 1
        close(host)


def test_data_in_the_datagram_of_the_servers_finished_is_delivered_at_once(ec2x_strict, emulator, servers):
    """The server's CCS/Finished datagram is held until s_server has written a line, then
    both go as ONE datagram (Finished, then the application record): the open answers 0 and
    the line is reported and readable at once -- not left inside the handshake's last
    datagram until some later datagram arrives; a later line follows normally."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    held: list[bytes] = []

    def rule(direction, index, data):
        types = [r.type for r in records(data)]
        if direction == "s2c" and CT_CCS in types and not held:
            held.append(data)
            server.write(b"with the finished\n")
            return []
        if direction == "s2c" and types == [CT_APP] and len(held) == 1:
            held.append(data)
            return [held[0] + data]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        wait_for(lambda: host._fill() or answers(host), 10, "+QSSLOPEN")
        host.seen(b'+QSSLURC: "recv",0\r\n', 2)
        assert len(held) == 2
        assert answers(host) == [0]
        assert host.at("AT+QSSLRECV=0,1500").endswith(b"\r\n+QSSLRECV: 18\r\nwith the finished\n\r\n\r\nOK\r\n")
        server.write(b"second\n")
        assert recv_all(host, 0, 7) == b"second\n"
        close(host)


def test_data_and_close_notify_in_one_datagram_data_first_then_closed(ec2x_strict, emulator, servers):
    """DTLS 1.0: the server's last line and its close_notify reach the modem in one datagram
    (a middlebox joins them): "recv" then exactly one "closed", the line stays readable, state
    4 until AT+QSSLCLOSE."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-dtls1"))
    held: list[bytes] = []
    armed = [False]

    def rule(direction, index, data):
        types = [r.type for r in records(data)]
        if armed[0] and direction == "s2c" and types == [CT_APP] and not held:
            held.append(data)
            return []
        if armed[0] and direction == "s2c" and types == [CT_ALERT] and held:
            return [held[0] + data]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        psk_ctx(host)
        cfg(host, "dtlsversion", 0, 0)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        armed[0] = True
        server.write(b"last words\n")
        wait_for(lambda: held, 5, "the held line")
        server.write(b"q\n")
        host.seen(b'+QSSLURC: "closed",0\r\n', 10)
        host.quiet_for(0.3)
        t = bytes(host.transcript)
        assert t.count(b'+QSSLURC: "closed",0') == 1 and t.count(b'+QSSLURC: "recv",0') == 1
        assert t.index(b'"recv",0') < t.index(b'"closed",0')
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 11\r\nlast words\n\r\n\r\nOK\r\n"
        assert state_of(host, 0) == 4
        close(host)
        assert state_of(host, 0) is None


def test_a_4000_byte_record_read_in_buffer_mode_then_pushed_in_1500_byte_urcs(ec2x_strict, emulator, servers):
    """One 4000-byte application record (one datagram) from s_server: in buffer mode
    AT+QSSLRECV=0,1500 gives 1500, 1500, 1000 bytes then 0; on a push-mode socket the same
    datagram comes as three +QSSLURC: "recv",1,<len> of 1500, 1500, 1000 bytes (recv_max),
    byte for byte."""
    host, advance, _ = ec2x_strict
    data = (bytes(range(0x21, 0x7F)) * 50)[:3999] + b"\n"
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        before = len(box.sent("s2c"))
        server.write(data)
        host.seen(b'+QSSLURC: "recv",0\r\n', 10)
        assert len(box.sent("s2c")) - before == 1
        got = b""
        for size in (1500, 1500, 1000):
            answer = host.at("AT+QSSLRECV=0,1500")
            assert answer == b"\r\n+QSSLRECV: %d\r\n" % size + data[len(got):len(got) + size] + b"\r\n\r\nOK\r\n"
            got += data[len(got):len(got) + size]
        assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        close(host)
    pushed = servers(psk_server())
    route(emulator, pushed.port)
    start_open(host, client_id=1, mode=1)
    assert one_answer(host, 1) == 0
    pushed.wait_for_output(rb"CIPHER is", 10)
    pushed.write(data)
    want = b"".join(b'\r\n+QSSLURC: "recv",1,%d\r\n' % n + data[o:o + n] + b"\r\n"
                    for o, n in ((0, 1500), (1500, 1500), (3000, 1000)))
    assert host.read_until(data[-40:] + b"\r\n", 10).endswith(want)
    assert host.quiet_for(0.3) == b""
    close(host, 1)


def test_thirty_unread_datagrams_one_urc_then_every_byte_in_order(ec2x_strict, emulator, servers):
    """30 server lines (about 30 datagrams, 30 KiB, under recv_buffer) while the host reads
    nothing: exactly one +QSSLURC: "recv" (the buffer was empty once), then AT+QSSLRECV
    gives every byte, in order, none twice."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    lines = [b"%02d:" % i + bytes([0x41 + i % 26]) * 996 + b"\n" for i in range(30)]
    for line in lines:
        server.write(line)
        time.sleep(0.01)
    want = b"".join(lines)
    host.seen(b'+QSSLURC: "recv",0\r\n', 10)
    time.sleep(1.0)                       # (everything in before the first read)
    host._fill()
    assert bytes(host.transcript).count(b'+QSSLURC: "recv",0') == 1
    got = b""
    while len(got) < len(want):
        answer = host.at("AT+QSSLRECV=0,1500")
        m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", answer)
        assert m and int(m.group(1)) > 0, (answer, len(got))
        got += answer[m.end():m.end() + int(m.group(1))]
    assert got == want
    assert host.at("AT+QSSLRECV=0,1500") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
    close(host)


def test_twenty_1460_byte_sends_are_twenty_datagrams_in_order(ec2x_strict, emulator, servers):
    """20 AT+QSSLSEND of 1460 bytes each (the maximum) as fast as the host can: each is one
    datagram of one application record, record sequence numbers consecutive, and s_server
    prints the 29200 bytes exactly, in order (no record lost, doubled or reordered by the
    sealing path)."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        start_open(host)
        assert one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        mark, before = server.mark(), len(box.sent("c2s"))
        chunks = [(b"%02d" % i) * 730 for i in range(20)]
        for chunk in chunks:
            assert host.send_data(0, chunk) == b"\r\nSEND OK\r\n"
        want = b"".join(chunks)
        wait_for(lambda: len(server.stdout) - mark >= len(want), 10, "the 29200 bytes at the server")
        assert server.stdout[mark:] == want
        app = [records(d) for d in box.sent("c2s")[before:]]
        assert [len(r) for r in app] == [1] * 20
        assert all(r[0].type == CT_APP and len(r[0].payload) > 1460 for r in app)
        seqs = [r[0].seq for r in app]
        assert seqs == list(range(seqs[0], seqs[0] + 20))
        close(host)


def test_ninety_kib_unread_past_recv_buffer_nothing_lost(ec2x_strict, emulator, servers):
    """90 lines of 1000 bytes (one datagram each) while the host reads nothing: past
    ssl.recv_buffer (64 KiB) the socket stops reading, the rest waits in the UDP socket;
    reading then gives all 90000 bytes, in order, each line once, and the socket still
    takes new data afterwards."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is", 10)
    lines = [b"%03d:" % i + bytes([0x41 + i % 26]) * 995 + b"\n" for i in range(90)]
    for line in lines:
        server.write(line)
        time.sleep(0.005)
    time.sleep(1.0)
    want = b"".join(lines)
    got = b""
    deadline = time.monotonic() + 15
    while len(got) < len(want) and time.monotonic() < deadline:
        answer = host.at("AT+QSSLRECV=0,1500")
        m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
        n = int(m.group(1))
        got += answer[m.end():m.end() + n]
        if n == 0:
            time.sleep(0.05)
    assert got == want
    host.transcript.clear()
    host._consumed.clear()
    server.write(b"still reading\n")
    assert recv_all(host, 0, 14) == b"still reading\n"
    close(host)


@pytest.mark.parametrize("which, code", [("server", 0), ("wrong_server", 566)])
def test_server_flights_split_into_single_records_and_reversed(ec2x_strict, emulator, servers, pki, caplog,
                                                                which, code):
    """Every server datagram of several records is split into one datagram per record, sent
    last record first (10 ms apart): Mbed TLS buffers the messages that come early and the
    emulator's own certificate check (its sniffer) must follow -- seclevel 1: the trusted
    server opens and carries data, the untrusted one is refused (566, the reason logged)."""
    host, advance, _ = ec2x_strict
    cert, key = getattr(pki, which).load_args
    server = servers(OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2",
                                    "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]))
    reversed_flights = []

    def rule(direction, index, data):
        parts = split_records(data)
        if direction == "s2c" and len(parts) > 1:
            reversed_flights.append(index)
            return [(0.01 * i, part) for i, part in enumerate(reversed(parts))]
        return [data]

    with UdpMiddlebox(server.address, rule) as box:
        route(emulator, box.port)
        cfg(host, "dtls", 0, 1)
        trust(host, 0, pki.ca.cert_pem)
        start_open(host)
        assert one_answer(host) == code
        assert len(reversed_flights) >= 2
        if code == 0:
            round_trip(host, server, b"reversed ok\n", b"down\n")
        else:
            assert host.at("AT+QIGETERROR") == E566
            assert "server certificate not signed by UFS:ca.pem" in caplog.text
        close(host)


# == transparent mode over DTLS ====================================================================
def test_transparent_dtls_burst_escape_send_in_command_mode_and_ato(ec2x_strict, emulator, servers):
    """Access mode 2 over DTLS + PSK: 18000 bytes written at once reach s_server whole and in
    order; a 4000-byte line comes back unframed; "+++" (guard times on modem time) answers OK
    with the socket still in mode 2; AT+QSSLSEND works in command mode; a server line
    arriving meanwhile waits (no URC) and comes first after ATO's CONNECT."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server())
    route(emulator, server.port)
    psk_ctx(host)
    assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT},2') == b"\r\nCONNECT\r\n"
    server.wait_for_output(rb"CIPHER is", 10)
    mark = server.mark()
    burst = (bytes(range(0x21, 0x7F)) * 200)[:18000]
    host.write(burst)
    wait_for(lambda: len(server.stdout) - mark >= len(burst), 10, "the burst at the server")
    assert server.stdout[mark:] == burst
    down = b"y" * 3999 + b"\n"
    server.write(down)
    assert host.read_until(b"\n", 10) == down
    assert escape(host, advance) == OK
    assert state_of(host, 0) == 2
    assert host.send_data(0, b"from command mode\n") == b"\r\nSEND OK\r\n"
    server.wait_for_output(rb"from command mode", 10)
    server.write(b"waiting for ATO\n")
    time.sleep(0.5)
    assert host.quiet_for(0.2) == b""
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    assert host.read_until(b"waiting for ATO\n", 10) == b"waiting for ATO\n"
    assert escape(host, advance) == OK
    close(host)


def test_transparent_dtls_burst_goes_in_datagrams_of_at_most_1460_data_bytes(ec2x_strict, emulator, servers):
    """The burst above on the wire: no application datagram carries more than send_max
    (1460) bytes of data (its record no more than 1460 + the AEAD's 16-byte tag + the
    8-byte explicit nonce), as AT+QSSLSEND's datagrams don't."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(cipher="PSK-AES128-GCM-SHA256:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        route(emulator, box.port)
        psk_ctx(host)
        assert host.at(f'AT+QSSLOPEN=1,0,0,"{HOST}",{PORT},2') == b"\r\nCONNECT\r\n"
        server.wait_for_output(rb"CIPHER is", 10)
        mark, before = server.mark(), len(box.sent("c2s"))
        burst = (bytes(range(0x21, 0x7F)) * 200)[:18000]
        host.write(burst)
        wait_for(lambda: len(server.stdout) - mark >= len(burst), 10, "the burst at the server")
        sizes = [len(r.payload) for d in box.sent("c2s")[before:] for r in records(d) if r.type == CT_APP]
        assert escape(host, advance) == OK
        close(host)
    assert max(sizes) <= 1460 + 24, sizes


# == a server restarted behind the same port; the session cache ====================================
def test_server_restarted_behind_the_same_port_mid_session(ec2x_strict, emulator, servers):
    """s_server is killed mid-session and a new one binds the same UDP port: the new process
    has no association, so the modem's application datagram is ignored -- the host sees SEND
    OK (UDP cannot know), no URC, the socket stays connected (state 2).  AT+QSSLCLOSE, then a
    new open reaches the new server with a full handshake (the old session unknown there,
    no "Reused session-id") and data flow both ways."""
    host, advance, _ = ec2x_strict
    first = psk_server()
    port = first.port
    route(emulator, port)
    psk_ctx(host)
    start_open(host)
    assert one_answer(host) == 0
    round_trip(host, first, b"before restart\n", b"first server\n")
    first.proc.kill()
    first.stop()
    second = psk_server_on(port)
    try:
        mark = second.mark()
        assert host.send_data(0, b"into the void\n") == b"\r\nSEND OK\r\n"
        time.sleep(0.5)
        assert host.quiet_for(0.3) == b""
        assert b"into the void" not in second.stdout[mark:]
        assert state_of(host, 0) == 2
        close(host)
        start_open(host)
        assert one_answer(host) == 0
        second.wait_for_output(rb"CIPHER is", 10, since=mark)
        assert b"Reused session-id" not in second.stdout[mark:]
        round_trip(host, second, b"after restart\n", b"second server\n")
        close(host)
    finally:
        second.stop()


def test_session_cache_an_identical_psk_write_forgets_and_contexts_never_share(ec2x_strict, emulator, servers):
    """DTLS 1.0 + PSK, session_cache 1: the second open resumes ("Reused session-id"); an
    AT+QSSLCFG="psk" write of the very same identity and key forgets the session
    (docs/behaviour.md: any AT+QSSLCFG write does), so the third open is a full handshake,
    the fourth resumes again; context 1, same server, same identity but the wrong key, never
    borrows context 0's session: 566 (the server's bad_record_mac), not 0."""
    host, advance, _ = ec2x_strict
    server = servers(psk_server(version="-dtls1"))
    route(emulator, server.port)
    for ctx in (0, 1):
        cfg(host, "dtlsversion", ctx, 0)
    psk_ctx(host, 0)
    psk_ctx(host, 1, key=WRONG_HEX)
    reused = []
    for round_ in range(4):
        if round_ == 2:
            cfg(host, "psk", 0, '"modem-1"', f'"{PSK_HEX}"')
        mark = server.mark()
        start_open(host)
        assert one_answer(host) == 0, round_
        close(host)
        server.wait_for_output(rb"DONE", 10, since=mark)
        reused.append(b"Reused session-id" in server.stdout[mark:])
    assert reused == [False, True, False, True]
    mark = server.mark()
    start_open(host, client_id=1, ctx=1)
    assert one_answer(host, 1) == 566
    assert b"Reused session-id" not in server.stdout[mark:]
    close(host, 1)


# == the ML302 has neither ===========================================================================
def test_ml302_has_no_dtls_or_psk_option(ml302_strict):
    """The ML302 manual's AT+QSSLCFG has no "dtls", "dtlsversion" or "psk" (profile
    ssl.options): writes and queries of them are ERROR, and the test form lists none."""
    host, advance, _ = ml302_strict
    for line in ('AT+QSSLCFG="dtls",0,1', 'AT+QSSLCFG="dtlsversion",0,1', f'AT+QSSLCFG="psk",0,"id","{PSK_HEX}"',
                 'AT+QSSLCFG="dtls"', 'AT+QSSLCFG="psk"'):
        assert host.at(line) == b"\r\nERROR\r\n", line
    test_form = host.at("AT+QSSLCFG=?")
    assert test_form.endswith(OK) and b"dtls" not in test_form and b"psk" not in test_form
    assert host.at("AT") == OK
