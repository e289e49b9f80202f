"""Hostile servers, twentieth round: what rounds 1-19 (test_adversarial_hostile_servers*.py),
the DTLS / PSK files and test_review_held_verdict_2.py do not do.

Peers: `TlsServer` (Python ssl) serving chains made here (a CA of this file, an intermediate
with a chosen validity window, RSA leaves with chosen keyUsage bits); test_adversarial_hostile_
servers_7's hand-made TLS 1.2 server whose Certificate message is shaped to the byte (through
test_review_held_verdict_2's _pty_flight).  Covered (EC2x):

* a chain whose INTERMEDIATE (not the leaf) has a window the modem clock (AT+CCLK) is outside
  of: expired -> 566, the server gets certificate_expired (45); not yet valid -> 566,
  certificate_unknown (46) (behaviour.md's precedence); inside the window -> 0; ignorelocaltime
  1 -> 0 at any clock; seclevel 0 never looks;
* a leaf whose keyUsage does not fit the key exchange (RFC 5246 7.4.2 / RFC 5280 4.2.1.3):
  keyEncipherment only with ECDHE_RSA (which needs digitalSignature), digitalSignature only
  with RSA key exchange (which needs keyEncipherment): 566 and unsupported_certificate (43) at
  seclevel 1 and 2, an open at seclevel 0 (Mbed TLS's VERIFY_NONE skips the usage check); the
  matching bits open at every level;
* a server Certificate message with an EMPTY certificate_list (a server with no certificate
  at all) at seclevel 0, 1 and 2: Mbed TLS's client refuses it while parsing (decode_error),
  whatever the authmode -- 566 once, AT+QIGETERROR 566, the id reusable;
* resumption by session id where the resumed ServerHello names another version (TLS 1.1 / 1.0
  / 0x0304) or the server holds another master secret for the id: 566 once, the modem's
  alert (bad_record_mac for the keys), the session forgotten, the next open a full handshake;
* RFC 5077 tickets: a NewSessionTicket that does not parse (ticket longer than the message,
  a truncated hint, trailing bytes) in a full handshake and in the resumed flight; a ticket
  accepted but the ServerHello echoing another session id / none: 566 once, decode_error,
  no ticket offered afterwards -- and the log's reason for the last two blamed a "Certificate
  handshake message" the server never sent (a bug, fixed: it names the ChangeCipherSpec);
* an ALPN answer that is not byte-for-byte an offered name (empty, other case, a prefix, a
  trailing NUL, the configured comma list itself): 566, handshake_failure (empty: decode_error);
* an ECDSA leaf whose extendedKeyUsage lacks serverAuth (anyExtendedKeyUsage counts);
* an expired intermediate sent next to its renewal (same name and key), in either order:
  the valid one is the parent, as in Mbed TLS's x509_crt_find_parent_in;
* SNI sent (sni 1), unrecognized_name as a fatal alert (566 at once, the reason not saying
  "none was sent"), as a warning followed by silence (569 at negotiatetime, nothing before)
  or by a normal flight (opens).

Checked each time: exact +QSSLOPEN codes, AT+QIGETERROR, the alert the server received, no
ERROR log record or traceback (ec2x_strict), AT answering afterwards.
"""
from __future__ import annotations

import datetime
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from emulator.testing.peers import TlsServer, make_cert, utc
from emulator.testing.peers.pki import Issued, ServerIdentity
from tests.e2e.hostile_support import open_answer
from tests.e2e.test_adversarial_hostile_servers_17 import cclk_text
from tests.e2e.test_ssl_options_verify import client_identity

OK = b"\r\nOK\r\n"
HOST = "www.iottest.work"
PORT = 8443
CA_FILE = "UFS:hs20ca.pem"
NOW = datetime.datetime.now(datetime.timezone.utc)

INTER_NB = utc(2030, 1, 1)
INTER_NA = utc(2030, 6, 1)


@pytest.fixture(scope="module")
def ca():
    return make_cert("hs20 root", None, ca=True, not_before=utc(2020, 1, 1), not_after=utc(2045, 1, 1))


@pytest.fixture(scope="module")
def windowed_chain(ca):
    inter = make_cert("hs20 inter", ca, ca=True, not_before=INTER_NB, not_after=INTER_NA)
    leaf = make_cert("hs20 leaf", inter, ca=False, names=[HOST], not_before=utc(2025, 1, 1),
                     not_after=utc(2040, 1, 1))
    return ServerIdentity(leaf, inter)


def rsa_leaf(ca: Issued, *, digital_signature: bool, key_encipherment: bool) -> ServerIdentity:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                                         key_encipherment=key_encipherment, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return ServerIdentity(Issued(cert, key))


def setup(host, emulator, pki, ca: Issued, server, *, seclevel: int, ignorelocaltime: int = 1,
          suite: str = "0XFFFF") -> None:
    if CA_FILE.encode() not in host.at('AT+QFLST="*"'):
        assert host.upload(CA_FILE, ca.cert_pem).endswith(b"OK\r\n")
    if seclevel == 2:
        client_identity(host, pki, 1)
    for line in (f'"seclevel",1,{seclevel}', f'"cacert",1,"{CA_FILE}"', '"session_cache",1,0',
                 f'"ignorelocaltime",1,{ignorelocaltime}', f'"ciphersuite",1,{suite}',
                 '"negotiatetime",1,10'):
        assert host.at(f"AT+QSSLCFG={line}") == OK, line
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)


def qigeterror(host) -> bytes:
    return host.at("AT+QIGETERROR")


def open_once(host, cid: int = 0) -> int:
    assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{HOST}",{PORT},0') == OK
    code = open_answer(host, cid, timeout=15)
    if code == 0:
        assert host.at(f"AT+QSSLCLOSE={cid},0") == OK
    return code


def alert_seen(server) -> str:
    conn = server.wait_handshake(timeout=10)
    return " ".join(str(x) for x in (conn.handshake_error, conn.handshake_error_reason) if x)


# == (1) an intermediate outside its window at the modem clock ====================================
@pytest.mark.parametrize("moment,ignorelocaltime,code,alert", [
    (utc(2030, 3, 1), 0, 0, None),                              # inside the intermediate's window
    (INTER_NA + timedelta(days=30), 0, 566, "CERTIFICATE_EXPIRED"),
    (INTER_NB - timedelta(days=30), 0, 566, "CERTIFICATE_UNKNOWN"),
    (INTER_NA + timedelta(days=30), 1, 0, None),
    (INTER_NB - timedelta(days=30), 1, 0, None),
], ids=["inside", "expired", "not-yet-valid", "expired-ignored", "not-yet-ignored"])
def test_intermediate_outside_its_window_at_the_modem_clock(ec2x_strict, emulator, pki, ca, windowed_chain,
                                                            moment, ignorelocaltime, code, alert):
    """seclevel 1, chain root (trusted) -> intermediate [2030-01-01, 2030-06-01] -> leaf (valid
    2025..2040).  The modem clock decides the intermediate's fate just as a leaf's:
    ignorelocaltime 0 outside the window 566 (+ QIGETERROR 566) and Mbed TLS's alert for the
    fault; ignorelocaltime 1 opens."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed_chain, ciphers="DEFAULT:@SECLEVEL=0") as server:
        setup(host, emulator, pki, ca, server, seclevel=1, ignorelocaltime=ignorelocaltime)
        assert host.at(f'AT+CCLK="{cclk_text(moment, 32)}"') == OK
        assert open_once(host) == code
        seen = alert_seen(server)
        if alert:
            assert alert in seen.upper().replace(" ", "_"), seen
            assert b"+QIGETERROR: 566," in qigeterror(host)
        else:
            assert not seen, seen
        assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
        # the id is free: the same server opens with the dates ignored
        assert host.at('AT+QSSLCFG="ignorelocaltime",1,1') == OK
        assert open_once(host) == 0
    assert host.at("AT") == OK


@pytest.mark.parametrize("level", [0, 2])
def test_expired_intermediate_at_seclevel_0_and_2(ec2x_strict, emulator, pki, ca, windowed_chain, level):
    """seclevel 0 verifies nothing (the expired intermediate included); seclevel 2 checks the
    chain as seclevel 1 does (the client certificate set, the server does not ask for it)."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed_chain, ciphers="DEFAULT:@SECLEVEL=0") as server:
        setup(host, emulator, pki, ca, server, seclevel=level, ignorelocaltime=0)
        assert host.at(f'AT+CCLK="{cclk_text(INTER_NA + timedelta(days=1), 0)}"') == OK
        assert open_once(host) == (0 if level == 0 else 566)
    assert host.at("AT") == OK


# == (2) a leaf whose keyUsage does not fit the key exchange =======================================
ECDHE_RSA = ("0XC02F", "ECDHE-RSA-AES128-GCM-SHA256")
RSA_KX = ("0X009C", "AES128-GCM-SHA256")


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("usage,kx,fits", [
    ((False, True), ECDHE_RSA, False),        # keyEncipherment only: no signature for ECDHE
    ((True, False), RSA_KX, False),           # digitalSignature only: no RSA key transport
    ((True, False), ECDHE_RSA, True),
    ((False, True), RSA_KX, True),
], ids=["kE-only-ecdhe", "dS-only-rsa", "dS-ecdhe", "kE-rsa"])
def test_leaf_key_usage_against_the_key_exchange(ec2x_strict, emulator, pki, ca, level, usage, kx, fits):
    """An RSA leaf with a critical keyUsage.  A usage that does not fit the suite's key
    exchange: 566 and unsupported_certificate (43) at seclevel 1 and 2 (behaviour.md: "the
    leaf's keyUsage (when present) fit for the key exchange"); seclevel 0 (Mbed TLS's VERIFY_NONE
    does not check usage) and a fitting usage open."""
    host, advance, port = ec2x_strict
    leaf = rsa_leaf(ca, digital_signature=usage[0], key_encipherment=usage[1])
    with TlsServer(leaf, ciphers=kx[1] + ":@SECLEVEL=0", max_version="TLSv1.2") as server:
        setup(host, emulator, pki, ca, server, seclevel=level, suite=kx[0])
        want = 0 if (fits or level == 0) else 566
        assert open_once(host) == want
        seen = alert_seen(server)
        if want:
            assert "UNSUPPORTED_CERTIFICATE" in seen.upper().replace(" ", "_"), seen
            assert b"+QIGETERROR: 566," in qigeterror(host)
        else:
            assert not seen, seen
            assert server.connections[-1].cipher_id == int(kx[0], 16)
    assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
    assert host.at("AT") == OK


# == (3) an empty certificate_list ================================================================
@pytest.mark.parametrize("level", [0, 1, 2])
def test_empty_certificate_list_at_each_seclevel(ec2x_strict, emulator, pki, level):
    """The hand-made server's Certificate message carries an empty list (3 zero bytes) then
    ServerHelloDone.  Mbed TLS 2.28's client parses the Certificate whatever its authmode and
    refuses an empty one (decode_error, 50): 566 once at seclevel 0, 1 and 2, QIGETERROR 566, no
    ClientKeyExchange (the server sees only the alert), the id reusable after."""
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    from tests.e2e.test_review_held_verdict_2 import _ec2x_setup, _pty_flight
    from tests.e2e.socket_support import wait_for
    host, advance, port = ec2x_strict
    _ec2x_setup(host)
    if level == 2:
        client_identity(host, pki, 1)
    assert host.at(f'AT+QSSLCFG="seclevel",1,{level}') == OK
    with h7.Server(emulator, _pty_flight(lambda der: [], False)) as server:
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{h7.NAME}",443,0') == OK
        assert open_answer(host, 2, timeout=15) == 566
        assert b"+QIGETERROR: 566," in qigeterror(host)
        wait_for(lambda: server.conns and hasattr(server.conns[0], "everything"), 15, "the connection ended")
        after = server.conns[0].everything
        assert after == [(21, b"\x02\x32")], after
        assert host.transcript.count(b"+QSSLOPEN: 2,") == 1
        # the id is free: the next connection (a good full handshake) opens
        assert host.at(f'AT+QSSLOPEN=1,1,2,"{h7.NAME}",443,0') == OK
        assert open_answer(host, 2, timeout=15) == 0
        assert host.at("AT+QSSLCLOSE=2,0") == OK
    assert host.at("AT") == OK


# == (4) resumption gone wrong (the hand-made server of test_adversarial_hostile_servers_6) ======
class _VersionRewriter:
    """c.sock for one connection: the first ServerHello written gets `version` as its
    server_version (the record header left at 0x0303)."""

    def __init__(self, sock, version: bytes) -> None:
        self._sock, self._version, self._done = sock, version, False

    def sendall(self, data: bytes) -> None:
        if not self._done and len(data) > 10 and data[0] == 22 and data[5] == 2:
            data = data[:9] + self._version + data[11:]
            self._done = True
        self._sock.sendall(data)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _h6_first_open_then(host, emulator, server, cid: int):
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
    h6.ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    h6.round_trip_and_close(host, cid)
    forget_answers(host, cid)
    return len(host.transcript)


@pytest.mark.parametrize("suites,version", [
    ("0X009C", b"\x03\x02"), ("0X002F", b"\x03\x02"), ("0X002F", b"\x03\x01"), ("0X009C", b"\x03\x04")],
    ids=["gcm-tls11", "cbc-tls11", "cbc-tls10", "gcm-0x0304"])
def test_resumed_server_hello_with_another_version(ec2x_strict, emulator, caplog, suites, version):
    """sslversion 4 (TLS 1.0-1.2 allowed), a TLS 1.2 session established and cached (session
    ids).  On the next open the server echoes the session id (resumption) but its ServerHello
    says TLS 1.1 / 1.0 (RFC 5246 7.4.1.3 / 7.3: a resumed session keeps its version) or 0x0304
    without supported_versions: the session must not be resumed under another version -- 566
    once, QIGETERROR 566, the modem's fatal alert, no data; the next open a full handshake."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    host, advance, port = ec2x_strict
    for line in ('"sslversion",1,4', f'"ciphersuite",1,{suites}', '"negotiatetime",1,10'):
        assert host.at(f"AT+QSSLCFG={line}") == OK
    suite = int(suites, 16)

    def script(c) -> None:
        if len(c.server.conns) == 2:
            c.sock = _VersionRewriter(c.sock, version)
        try:
            c.handshake()
        except (AssertionError, OSError, EOFError, ValueError):
            try:
                while True:
                    ct, payload = c.read_record()
                    if ct == 21:
                        c.alerts.append(payload)
            except (OSError, EOFError):
                return
        c.echo()

    with h6.HandServer(emulator, script, suite=suite) as server:
        mark = _h6_first_open_then(host, emulator, server, 5)
        h6.ssl_open(host, 5)
        h6._expect_566_then_full_handshake(host, emulator, server, caplog, 5, "version", mark)
        assert server.hellos[1].session_id == server.conns[0].transcript[1][39:71]
        refused = server.conns[1]
        assert refused.alerts and refused.alerts[0][0] == 2, refused.alerts
    assert host.at("AT") == OK


def test_resumed_with_a_different_master_secret(ec2x_strict, emulator, caplog):
    """The server accepts the offered session id but has another master secret for it (a
    cluster node with a stale cache): its Finished, sealed under other keys, fails the modem's
    record check -- 566 once, QIGETERROR 566, the modem's fatal alert (bad_record_mac, 20) in
    clear, no data; the session forgotten, the next open a full handshake with data."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    with h6.HandServer(emulator) as server:
        mark = _h6_first_open_then(host, emulator, server, 6)
        for sid, (master, suite) in list(server.sessions.items()):
            server.sessions[sid] = (bytes(b ^ 0x5A for b in master), suite)
        h6.ssl_open(host, 6)
        h6._expect_566_then_full_handshake(host, emulator, server, caplog, 6, "master", mark)
        refused = server.conns[1]
        assert refused.resumed
        assert refused.alerts == [b"\x02\x14"], refused.alerts
    assert host.at("AT") == OK


@pytest.mark.parametrize("body", [
    b"\x00\x00\x01\x2c\x00\x64" + b"T" * 10,          # ticket_len 100, 10 bytes follow
    b"\x00\x00\x01",                                  # a truncated lifetime hint
    b"\x00\x00\x01\x2c\x00\x04tick" + b"junk",         # bytes after the ticket
], ids=["ticket-longer-than-message", "truncated-hint", "trailing-bytes"])
def test_malformed_new_session_ticket(ec2x_strict, emulator, caplog, body):
    """A NewSessionTicket (RFC 5077 3.3) whose body does not parse, in the server's last flight
    before its CCS: Mbed TLS refuses it (decode_error) -- 566 once, QIGETERROR 566, the id
    reusable; no ticket cached (the next open offers none, a full handshake works)."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.socket_support import tcp_fds_to, wait_for
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK

    def script(c) -> None:
        if len(c.server.conns) == 1:
            c._ticket = lambda issue, master, suite: h6.record(h6.CT_HANDSHAKE, h6.hs(4, body)) if issue else b""
        try:
            c.handshake()
        except (AssertionError, OSError, EOFError):
            pass
        c.echo() if c.tx is not None and not c.alerts else None
        try:
            while True:
                ct, payload = c.read_record()
                c.alerts.append(payload)
        except (OSError, EOFError):
            pass

    with h6.HandServer(emulator, script, tickets=True) as server:
        h6.ssl_open(host, 7)
        assert open_answer(host, 7) == 566
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 7,") == 1
        assert h6.qigeterror(host) == 566
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert server.conns[0].alerts == [b"\x02\x32"], server.conns[0].alerts   # decode_error
        h6.ssl_open(host, 7)
        assert open_answer(host, 7) == 0
        h6.round_trip_and_close(host, 7)
        assert not server.hellos[1].ticket, server.hellos[1].ticket
        assert not server.conns[1].resumed
    assert host.at("AT") == OK


# == (5) ALPN answers that are not among the offered names ========================================
@pytest.mark.parametrize("chosen,alert", [(b"", 50), (b"HTTP/1.1", 40), (b"http/1", 40), (b"http/1.1\x00", 40),
                                          (b"mqtt,http/1.1", 40)],
                         ids=["empty", "upper-case", "prefix", "trailing-nul", "whole-list"])
def test_alpn_answer_not_exactly_an_offered_name(ec2x_strict, emulator, caplog, chosen, alert):
    """alpn "mqtt,http/1.1"; the server's ALPN answer is one well-formed entry that is NOT
    byte-for-byte one of the offered names (RFC 7301 3.1: empty names are invalid; names are
    compared as bytes): an empty name, another case, a prefix, a trailing NUL, the configured
    string itself with its comma.  Mbed TLS 2.28 stops at the ServerHello with a fatal
    handshake_failure (40) in clear (the empty name: decode_error, 50, its length check): 566 once, QIGETERROR 566, no ClientKeyExchange; the log
    never says a protocol was negotiated."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.socket_support import tcp_fds_to, wait_for
    host, advance, port = ec2x_strict
    for line in ('"ciphersuite",1,0X009C', '"alpn",1,"mqtt,http/1.1"'):
        assert host.at(f"AT+QSSLCFG={line}") == OK

    def script(c) -> None:
        try:
            c.handshake()
        except (AssertionError, OSError, EOFError):
            return
        c.echo()

    with h6.HandServer(emulator, script, policy={"extra_ext": h6.alpn_ext(chosen)}) as server:
        h6.ssl_open(host, 8)
        assert open_answer(host, 8) == 566
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 8,") == 1
        assert h6.qigeterror(host) == 566
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert server.hellos[0].extensions[h6.EXT_ALPN] == b"\x00\x0e\x04mqtt\x08http/1.1"
        assert server.conns[0].alerts == [bytes([2, alert])], server.conns[0].alerts
        assert "ALPN" not in "\n".join(r.getMessage() for r in caplog.records if "connected" in r.getMessage())
        # the id is free: the server answering a real name opens
        server.policy["extra_ext"] = h6.alpn_ext(b"http/1.1")
        h6.ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        h6.round_trip_and_close(host, 8)
    assert host.at("AT") == OK


# == (6) ECDSA leaf extendedKeyUsage ===================================================
def ec_leaf(ca: Issued, *, usage: dict | None = None, eku=None) -> ServerIdentity:
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=300))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False))
    if usage is not None:
        bits = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False)
        bits.update(usage)
        b = b.add_extension(x509.KeyUsage(**bits), critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return ServerIdentity(Issued(b.sign(ca.key, hashes.SHA256()), key))


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("kind,fits", [
    ("clientAuth-eku", False),
    ("digitalSignature", True), ("serverAuth-eku", True), ("anyEKU", True)])
def test_ecdsa_leaf_usage_for_ecdhe_ecdsa(ec2x_strict, emulator, pki, ca, level, kind, fits):
    """ECDHE_ECDSA (0xC02B): an extendedKeyUsage without serverAuth (anyExtendedKeyUsage
    counts, as in Mbed TLS) is refused at seclevel 1 (566, unsupported_certificate 43); seclevel
    0 opens.  (A keyUsage without digitalSignature cannot be tried here: OpenSSL then refuses to
    serve the certificate for ECDSA suites at all, "no shared cipher".)"""
    from cryptography.x509.oid import ExtendedKeyUsageOID as E
    host, advance, port = ec2x_strict
    leaf = {
        "clientAuth-eku": lambda: ec_leaf(ca, eku=[E.CLIENT_AUTH]),
        "digitalSignature": lambda: ec_leaf(ca, usage={"digital_signature": True, "key_agreement": True}),
        "serverAuth-eku": lambda: ec_leaf(ca, eku=[E.CLIENT_AUTH, E.SERVER_AUTH]),
        "anyEKU": lambda: ec_leaf(ca, eku=[x509.ObjectIdentifier("2.5.29.37.0")]),
    }[kind]()
    with TlsServer(leaf, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256", max_version="TLSv1.2") as server:
        setup(host, emulator, pki, ca, server, seclevel=level, suite="0XC02B")
        want = 0 if (fits or level == 0) else 566
        assert open_once(host) == want
        seen = alert_seen(server)
        if want:
            assert "UNSUPPORTED_CERTIFICATE" in seen.upper().replace(" ", "_"), seen
        else:
            assert not seen, seen
            assert server.connections[-1].cipher_id == 0xC02B
    assert host.at("AT") == OK


# == (7) the RESUMED flight (RFC 5077 tickets) gone wrong, then the session forgotten ==============
class _HelloRewriter(_VersionRewriter):
    """c.sock whose first ServerHello record goes through `edit` (bytes -> bytes)."""

    def __init__(self, sock, edit) -> None:
        super().__init__(sock, b"")
        self._edit = edit

    def sendall(self, data: bytes) -> None:
        if not self._done and len(data) > 10 and data[0] == 22 and data[5] == 2:
            data = self._edit(data)
            self._done = True
        self._sock.sendall(data)


def _flip_session_id(data: bytes) -> bytes:
    assert data[43] == 32, data[43]                      # Mbed TLS offers a 32-byte id with a ticket
    return data[:44] + bytes([data[44] ^ 1]) + data[45:]


@pytest.mark.parametrize("kind", ["garbage-ticket-in-resumption", "other-session-id", "empty-session-id"])
def test_resumption_by_ticket_gone_wrong_is_forgotten(ec2x_strict, emulator, caplog, kind):
    """A ticket issued and cached; the next open offers it and the server accepts it, but:
    sends a NewSessionTicket that does not parse in the abbreviated flight; or answers with a
    session id other than the one the modem sent with the ticket (RFC 5077 3.4: echoing it is
    what says "resumed"), or none, then the abbreviated flight (CCS, Finished): Mbed TLS takes a
    new session and the CCS for an unexpected message.  566 once, QIGETERROR 566, the modem's
    fatal alert; the third open offers no ticket (the failed session forgotten, RFC 5246 7.2.2)
    and is a full handshake with data."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.socket_support import tcp_fds_to, wait_for
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK

    def script(c) -> None:
        if len(c.server.conns) == 2:
            if kind == "garbage-ticket-in-resumption":
                c._ticket = lambda issue, master, suite: h6.record(h6.CT_HANDSHAKE, h6.hs(4, b"\x00\x00\x01\x2c\x00\x64T"))
            elif kind == "other-session-id":
                c.sock = _HelloRewriter(c.sock, _flip_session_id)
            else:
                c.sock = _HelloRewriter(c.sock, lambda d: d[:3] + (int.from_bytes(d[3:5], "big") - 32).to_bytes(2, "big")
                                        + d[5:6] + (int.from_bytes(d[6:9], "big") - 32).to_bytes(3, "big")
                                        + d[9:43] + b"\x00" + d[76:])
        try:
            c.handshake()
        except (AssertionError, OSError, EOFError, ValueError):
            pass
        else:
            c.echo()
        try:
            while True:
                c.alerts.append(c.read_record()[1])
        except (OSError, EOFError):
            pass

    with h6.HandServer(emulator, script, tickets=True) as server:
        mark = _h6_first_open_then(host, emulator, server, 9)
        assert server.hellos[0].ticket is None and EXT_TICKET_OFFERED(server.hellos[0])
        h6.ssl_open(host, 9)
        assert open_answer(host, 9) == 566
        assert host.quiet_for(0.1) == b""
        assert host.transcript[mark:].count(b"+QSSLOPEN: 9,") == 1
        assert h6.qigeterror(host) == 566
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert server.hellos[1].ticket, "the second open offered the ticket"
        assert server.conns[1].resumed
        assert server.conns[1].alerts == [b"\x02\x32"], server.conns[1].alerts    # Mbed TLS: decode_error
        h6.ssl_open(host, 9)
        assert open_answer(host, 9) == 0
        h6.round_trip_and_close(host, 9)
        assert server.hellos[2].ticket is None or server.hellos[2].ticket == b"", server.hellos[2].ticket
        assert not server.conns[2].resumed
    assert host.at("AT") == OK


def EXT_TICKET_OFFERED(hello) -> bool:
    return 0x0023 in hello.extensions


# Was a bug, fixed (session._fail_from_tls_error: -0x7A00 with the server's CCS seen and no
# Certificate): the log reason said the Certificate message failed -- the server sent none.
@pytest.mark.parametrize("kind", ["other-session-id", "empty-session-id"])
def test_unconfirmed_resumption_reason_names_what_the_server_sent(ec2x_strict, emulator, caplog, kind):
    """docs/behaviour.md (SSL sockets): a failure's reason "never denies what the server did
    send, nor names what the modem did not offer" (and round 14 fixed a reason naming a
    ServerHello the server never sent).  Here the server's ServerHello does not echo the
    session id the modem sent with its ticket (a new session, RFC 5077 3.4), and a CCS follows
    where a Certificate is due; the server sent NO Certificate message.  The open is 566 (above);
    the log's reason should say a ChangeCipherSpec (an abbreviated flight for a session the
    ServerHello did not resume) came where the Certificate was due -- it says "Processing of the
    Certificate handshake message failed" instead, Mbed TLS's generic text for -0x7A00, which
    sends the person looking for a broken certificate the server never sent."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK

    def script(c) -> None:
        if len(c.server.conns) == 2:
            if kind == "other-session-id":
                c.sock = _HelloRewriter(c.sock, _flip_session_id)
            else:
                c.sock = _HelloRewriter(c.sock, lambda d: d[:3] + (int.from_bytes(d[3:5], "big") - 32).to_bytes(2, "big")
                                        + d[5:6] + (int.from_bytes(d[6:9], "big") - 32).to_bytes(3, "big")
                                        + d[9:43] + b"\x00" + d[76:])
        try:
            c.handshake()
        except (AssertionError, OSError, EOFError, ValueError):
            return
        c.echo()

    with h6.HandServer(emulator, script, tickets=True) as server:
        _h6_first_open_then(host, emulator, server, 9)
        caplog.clear()
        h6.ssl_open(host, 9)
        assert open_answer(host, 9) == 566
        lines = [r.getMessage() for r in caplog.records if "SSL open 9 " in r.getMessage() and "failed" in r.getMessage()]
        assert len(lines) == 1, lines
        reason = lines[0]
        assert "Certificate handshake message" not in reason, reason
        assert "ChangeCipherSpec" in reason or "resum" in reason.lower(), reason


# == (8) an expired intermediate sent next to its renewal (same name, same key) ==================
@pytest.fixture(scope="module")
def renewed_pair(ca):
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    old = make_cert("hs20 inter2", ca, ca=True, key=key, not_before=utc(2020, 1, 1), not_after=INTER_NA)
    new = make_cert("hs20 inter2", ca, ca=True, key=key, not_before=INTER_NB, not_after=utc(2040, 1, 1))
    leaf = make_cert("hs20 leaf2", old, ca=False, names=[HOST], not_before=utc(2021, 1, 1),
                     not_after=utc(2045, 1, 1))
    return old, new, leaf


@pytest.mark.parametrize("order,moment,code", [
    ("old-new", INTER_NA + timedelta(days=30), 0),       # the old one expired: its renewal (sent after) is the parent
    ("new-old", INTER_NA + timedelta(days=30), 0),
    ("old-new", INTER_NB - timedelta(days=30), 0),       # the new one not yet valid: the old one is
    ("new-old", INTER_NB - timedelta(days=30), 0),
    ("old-new", utc(2030, 3, 1), 0),                      # both valid
    ("old-new", utc(2040, 6, 1), 566),                    # both expired (the leaf still valid)
], ids=["old-new-after-old", "new-old-after-old", "old-new-before-new", "new-old-before-new", "both-valid",
        "both-expired"])
def test_expired_intermediate_sent_with_its_renewal(ec2x_strict, emulator, pki, ca, renewed_pair, order,
                                                    moment, code):
    """seclevel 1, ignorelocaltime 0: the server sends its leaf, then BOTH versions of its
    intermediate (same subject, same key, one expired at the modem clock, one valid), as a
    server mid-rotation does.  Mbed TLS 2.28 (x509_crt_find_parent_in) takes a parent that is
    valid at the time over one that is not (the out-of-date one only as a fallback), whatever
    their order: the open succeeds.  With both out of date: 566."""
    old, new, leaf = renewed_pair
    chain = (old, new) if order == "old-new" else (new, old)
    host, advance, port = ec2x_strict
    with TlsServer(ServerIdentity(leaf, *chain), ciphers="DEFAULT:@SECLEVEL=0") as server:
        setup(host, emulator, pki, ca, server, seclevel=1, ignorelocaltime=0)
        assert host.at(f'AT+CCLK="{cclk_text(moment, 32)}"') == OK
        assert open_once(host) == code
        conn = server.wait_handshake(timeout=10)
        assert conn.handshake_done == (code == 0), conn.handshake_error
        if code:
            assert "CERTIFICATE_EXPIRED" in alert_seen(server).upper().replace(" ", "_")
    assert host.at("AT") == OK


# == (9) SNI: unrecognized_name as a warning vs as a fatal alert (sni 1: the name WAS sent) ======
@pytest.mark.parametrize("how", ["fatal", "warning-then-silence", "warning-then-flight"])
def test_unrecognized_name_warning_vs_fatal_with_sni_sent(ec2x_strict, emulator, caplog, how):
    """sni 1, the ClientHello carries server_name.  The server answers it with
    unrecognized_name (112): FATAL -> 566 at once (no negotiatetime wait), QIGETERROR 566, the
    reason naming the alert as the server not knowing the name (not "none was sent");
    a WARNING then nothing (RFC 6066 3 lets a server go on) -> no answer before negotiatetime,
    then 569 once, QIGETERROR 569; a WARNING right before a normal flight -> opens, data."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    host, advance, port = ec2x_strict
    for line in ('"ciphersuite",1,0X009C', '"negotiatetime",1,10', '"sni",1,1'):
        assert host.at(f"AT+QSSLCFG={line}") == OK

    def script(c) -> None:
        if how == "warning-then-flight":
            c.sock = _HelloRewriter(c.sock, lambda d: h6.record(h6.CT_ALERT, b"\x01\x70") + d)
            c.handshake()
            c.echo()
            return
        hello = c.read_handshake()
        c.server.hellos.append(h6.ClientHello(hello[4:]))
        c.sock.sendall(h6.record(h6.CT_ALERT, b"\x02\x70" if how == "fatal" else b"\x01\x70"))
        try:
            while True:
                c.alerts.append(c.read_record()[1])
        except (OSError, EOFError):
            pass

    with h6.HandServer(emulator, script) as server:
        h6.ssl_open(host, 1)
        if how == "warning-then-flight":
            assert open_answer(host, 1) == 0
            h6.round_trip_and_close(host, 1)
            assert server.hellos[0].extensions[h6.EXT_SNI][5:] == h6.NAME.encode()
            return
        from tests.e2e.socket_support import wait_for
        wait_for(lambda: len(server.hellos) == 1, 5, "the ClientHello")
        assert server.hellos[0].extensions[h6.EXT_SNI][5:] == h6.NAME.encode()
        if how == "fatal":
            assert open_answer(host, 1, timeout=5) == 566
            assert h6.qigeterror(host) == 566
            reason = [r.getMessage() for r in caplog.records if "SSL open 1 " in r.getMessage()]
            assert len(reason) == 1 and "unrecognized_name(112)" in reason[0], reason
            assert "none was sent" not in reason[0], reason
        else:
            assert host.quiet_for(0.5) == b""
            advance(9.5)
            assert host.quiet_for(0.3) == b""
            advance(1)
            assert open_answer(host, 1, timeout=5) == 569
            assert h6.qigeterror(host) == 569
        assert host.quiet_for(0.2) == b""
        assert host.transcript.count(b"+QSSLOPEN: 1,") == 1
    assert host.at("AT") == OK
