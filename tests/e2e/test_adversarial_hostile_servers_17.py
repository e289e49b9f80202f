"""Hostile servers, seventeenth round: what rounds 1-16 (test_adversarial_hostile_servers*.py),
test_ssl_options_verify.py, test_adversarial_cert_material.py and test_ml302_ssl.py do not do.

Peers: `TlsServer` (Python ssl) serving leaves with chosen validity windows; a raw socket that
accepts TCP, reads the ClientHello and never answers it (SilentServer); test_adversarial_
hostile_servers_2's server (OpenSSL over memory BIOs, records sealed by the test);
test_adversarial_hostile_servers_6's hand-made server (AES-128-GCM for the EC2x, AES128-SHA
for the ML302) with its leaf's validity re-encoded (test_adversarial_hostile_servers_13's
re-signing).  Covered (EC2x and ML302 where the commands exist):

* the edges of a certificate's validity window at the modem clock (AT+CCLK in local time,
  zones +32, -20, 0, +96, -96 quarters, the date line crossed): a minute outside refused (566 /
  -1), a minute inside accepted; seclevel 0 with ignorelocaltime 0 looks at no date; the very
  second of notAfter (RFC 5280 4.1.2.5: inclusive; Mbed TLS compares whole seconds) -- with a
  premise test on python-mbedtls (Mbed TLS 2.28.8) itself;
* notAfter encodings: GeneralizedTime before 2050 (both Mbed TLS and the modem read it, its
  date then decides), UTCTime without seconds / with an offset, GeneralizedTime with a
  fraction (Mbed TLS refuses them while parsing the Certificate message, at seclevel 0 too:
  566 and the modem's fatal bad_certificate);
* the modem's OWN client certificate out of its window at the modem clock (2099, 2001):
  still presented (Mbed TLS never dates its own certificate), the open answers 0;
* the server holding its first flight while the host moves AT+CCLK (past notAfter: 566; into
  the window: 0 -- the clock is read at the check) or writes ignorelocaltime (the open in
  flight keeps the context it started with);
* a ~40 KiB certificate chain (three records): ML302 "+QSSLOPEN: 0,-1" once (connectmode 1:
  then ERROR), EC2x transparent open: ERROR, QIGETERROR 566, no URC;
* a server sitting on the ClientHello, closed by the host (AT+QSSLCLOSE=<id>[,0|10]): OK at
  once without the modem clock moving, the server's connection ended, nothing but alerts after
  the ClientHello, no +QSSLOPEN ever (not at negotiatetime either), the id reusable; close and
  re-open of the id in one line or two: the first open's negotiatetime never answers for the
  second, which gets its own 569 at its own deadline; two ids waiting, one closed: the other
  answers 569 alone; AT+CCLK moved a year on / ten years back while the handshake waits: 569
  exactly at negotiatetime (a timer, not a date); ML302 (<timeout> 10): "OK", "<ssid>,CLOSE OK",
  no late "+QSSLOPEN: <ssid>,-1", the other ssid's -1 at 10 s;
* one TCP segment with a 3000-byte record, a record of exactly 2^14 plaintext bytes, one of
  2^14+1 (record_overflow) and a record behind it: direct push (framed pushes of the 19384
  bytes, one "closed"), transparent (the bytes, NO CARRIER), ML302 buffer (the bytes, one
  "+QSSLURC: "close",0", REMOTE CLOSING); the emulator's FIN, no warning alert;
* a HelloRequest and a line arriving when the host has typed half of its AT+QSSLSEND data:
  EC2x renegotiation 1 with the renegotiation left waiting (SEND OK, not a byte sealed under
  the old keys, the line's "recv", a fatal alert then: "closed" once); ML302 (one warning
  no_renegotiation alert, SEND OK, "recv", every byte at the server once).

Was a bug, fixed: a server certificate was refused as expired during the very second of its
notAfter (EC2x 566, ML302 -1, log "expired at modem clock 2030-06-01 00:00:00 (notAfter
2030-06-01 00:00:00)"), which Mbed TLS 2.28 -- and so a module built on it -- accepts:
tls_engine/verify.py _dated compared the sub-second modem clock (`now > not_valid_after_utc`)
where Mbed TLS's x509_check_time compares whole seconds (valid while now <= notAfter).

Checked each time: exact bytes on the pty, one answer per open, no ERROR log record or
traceback (ec2x_strict / ml302_strict), AT answering afterwards."""
from __future__ import annotations

import re
import socket
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from emulator.testing.peers import TlsServer, utc
from tests.e2e.hostile_support import open_answer

OK = b"\r\nOK\r\n"
HOST = "www.iottest.work"
PORT = 8443
NOT_BEFORE = utc(2030, 3, 1, 12, 0, 0)
NOT_AFTER = utc(2030, 6, 1, 0, 0, 0)


@pytest.fixture(scope="module")
def windowed(pki):
    """A leaf for www.iottest.work valid from NOT_BEFORE to NOT_AFTER (the shared CA's)."""
    return pki.issue_window("hs17-window", NOT_BEFORE, NOT_AFTER)


def cclk_text(moment: datetime, quarters: int) -> str:
    """AT+CCLK's "yy/MM/dd,hh:mm:ss±zz" for the UTC moment in a zone of `quarters`."""
    local = moment.astimezone(timezone.utc).replace(tzinfo=None) + timedelta(minutes=15 * quarters)
    sign = "+" if quarters >= 0 else "-"
    return local.strftime("%y/%m/%d,%H:%M:%S") + f"{sign}{abs(quarters):02d}"


def test_cclk_text_premise():
    assert cclk_text(utc(2030, 6, 1), 32) == "30/06/01,08:00:00+32"
    assert cclk_text(utc(2030, 6, 1), -20) == "30/05/31,19:00:00-20"


# -- EC2x: validity edges at the modem clock -----------------------------------------------------
def ec2x_verify(host, pki, emulator, server, ignorelocaltime: int = 0, seclevel: int = 1) -> None:
    if b"UFS:hs17ca.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:hs17ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    for line in (f'AT+QSSLCFG="seclevel",1,{seclevel}', 'AT+QSSLCFG="cacert",1,"UFS:hs17ca.pem"',
                 'AT+QSSLCFG="session_cache",1,0', f'AT+QSSLCFG="ignorelocaltime",1,{ignorelocaltime}'):
        assert host.at(line) == OK, line
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)


def ec2x_open_at(host, moment: datetime, quarters: int) -> int:
    """AT+CCLK set to `moment` in the zone, then an open at once: its <err> (closed after)."""
    assert host.at(f'AT+CCLK="{cclk_text(moment, quarters)}"') == OK
    assert host.at(f'AT+QSSLOPEN=1,1,0,"{HOST}",{PORT},0') == OK
    code = open_answer(host, 0)
    if code == 0:
        assert host.at("AT+QSSLCLOSE=0,0") == OK
    return code


@pytest.mark.parametrize("quarters", [32, -20, 0, 96, -96])
def test_validity_edges_at_the_modem_clock_in_its_time_zone(ec2x_strict, emulator, pki, windowed, quarters):
    """A minute outside the window: 566 (expired / not yet valid); a minute inside: 0.  The
    clock is set in local time; a host setting "+32" must not shift the certificate check by
    eight hours (nor "-20", whose local date is the day before)."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed, ciphers="DEFAULT:@SECLEVEL=0") as server:
        ec2x_verify(host, pki, emulator, server)
        minute = timedelta(minutes=1)
        assert [ec2x_open_at(host, t, quarters) for t in
                (NOT_BEFORE - minute, NOT_BEFORE + minute, NOT_AFTER - minute, NOT_AFTER + minute)] \
            == [566, 0, 0, 566]


@pytest.mark.parametrize("level", [0, 1])
def test_expired_leaf_at_seclevel_0_with_dates_checked(ec2x_strict, emulator, pki, windowed, level):
    """seclevel 0 verifies nothing (behaviour.md: "any server certificate accepted"), so
    ignorelocaltime 0 does not bring the date check back; seclevel 1: 566."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed, ciphers="DEFAULT:@SECLEVEL=0") as server:
        ec2x_verify(host, pki, emulator, server, ignorelocaltime=0, seclevel=level)
        assert ec2x_open_at(host, NOT_AFTER + timedelta(days=30), 32) == (0 if level == 0 else 566)


# Was a bug, fixed: verify._dated compared the sub-second modem clock (whole seconds now, as Mbed TLS)
def test_the_second_of_not_after_is_inside_the_window(ec2x_strict, emulator, pki, windowed):
    """AT+CCLK set to notAfter's very second, the open at once (the handshake well inside
    that second): valid -- the EC2x SSL note 1.4 (refused only when the local time is "later
    than" Not after), RFC 5280 4.1.2.5 ("the validity period ... inclusive") and Mbed TLS
    (mbedtls_x509_time_is_past: whole seconds, notAfter < now) alike.  One second later: 566."""
    host, advance, port = ec2x_strict
    with TlsServer(windowed, ciphers="DEFAULT:@SECLEVEL=0") as server:
        ec2x_verify(host, pki, emulator, server)
        assert ec2x_open_at(host, NOT_AFTER + timedelta(seconds=1), 32) == 566
        assert ec2x_open_at(host, NOT_BEFORE, 32) == 0
        assert ec2x_open_at(host, NOT_AFTER, 32) == 0


# -- premise: Mbed TLS 2.28 itself at the second of notAfter ----------------------------------
def _leaf_expiring_at(not_after: datetime):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from tests.unit.tls_engine.test_verify_differential import ECDHE_ECDSA, Built
    root_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hs17 edge root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1)
            .not_valid_before(not_after - timedelta(days=30)).not_valid_after(not_after + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(root_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(root_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(not_after - timedelta(days=1)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .sign(root_key, hashes.SHA256()))
    return Built(served=[leaf], leaf_key=leaf_key, anchors=[root], host=HOST, suite=ECDHE_ECDSA)


def test_premise_mbedtls_accepts_a_leaf_during_the_second_of_its_not_after(tmp_path):
    """python-mbedtls (Mbed TLS 2.28.8, VERIFY_REQUIRED, system clock) handshaking in memory
    with a leaf whose notAfter is the current second: verified; the emulator's ChainVerifier
    on the same chain at the same moment (system clock, clock=None): see the test below."""
    pytest.importorskip("mbedtls.tls")
    from tests.unit.tls_engine.test_verify_differential import mbedtls_verdict
    for _ in range(5):
        second = int(time.time()) + 1
        built = _leaf_expiring_at(datetime.fromtimestamp(second, timezone.utc))
        time.sleep(max(0.0, second + 0.05 - time.time()))      # inside notAfter's own second
        mbed = mbedtls_verdict(built, str(tmp_path))
        if int(time.time()) == second:                          # judged inside that second
            break
    else:
        pytest.skip("the machine never judged within one second")
    assert mbed.ok, mbed.describe()
    # one second later Mbed TLS says expired
    time.sleep(max(0.0, second + 1.05 - time.time()))
    later = mbedtls_verdict(built, str(tmp_path))
    assert not later.ok and later.flags and later.flags & 0x01, later.describe()   # BADCERT_EXPIRED


# Was a bug, fixed: verify._dated compared the sub-second modem clock (whole seconds now, as Mbed TLS)
def test_chain_verifier_agrees_with_mbedtls_during_the_second_of_not_after(tmp_path):
    from tests.unit.tls_engine.test_verify_differential import emulator_verdict
    second = int(time.time()) + 1
    built = _leaf_expiring_at(datetime.fromtimestamp(second, timezone.utc))
    time.sleep(max(0.0, second + 0.3 - time.time()))
    from cryptography.hazmat.primitives.serialization import Encoding
    problem = emulator_verdict(built, [built.served[0].public_bytes(Encoding.DER)])
    assert problem is None, problem.reason


# -- ML302: the same edges ---------------------------------------------------------------------
def ml_secwrite(host, slot: int, data: bytes) -> None:
    host.write(f"AT+QSECDEL={slot}\r")
    host.read_until(b"OK\r\n")
    host.write(f"AT+QSECWRITE={slot}\r")
    host.read_until(b"\r\n> ")
    host.write(data + b"\x1a")
    host.read_until(b"OK\r\n")


def ml_close(host, ssid: int = 0) -> None:
    host.write(f"AT+QSSLCLOSE={ssid}\r")
    want = b"\r\nOK\r\n\r\n%d,CLOSE OK\r\n" % ssid
    assert host.read_exactly(len(want), timeout=5) == want


def ml_open_at(host, moment: datetime, quarters: int) -> bytes:
    assert host.at(f'AT+CCLK="{cclk_text(moment, quarters)}"') == OK
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
    line = host.seen(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), 10)
    code = line[line.rindex(b"+QSSLOPEN"):]
    if code == b"+QSSLOPEN: 0,0\r\n":
        ml_close(host)
    return code


@pytest.fixture
def ml_verify(ml302_strict, emulator, pki, windowed):
    host, advance, port = ml302_strict
    server = TlsServer(windowed, ciphers="DEFAULT:@SECLEVEL=0")
    server.__enter__()
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    ml_secwrite(host, 0, pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    assert host.at('AT+QSSLCFG="ignorertctime",0') == OK
    yield host
    server.__exit__(None, None, None)


@pytest.mark.parametrize("quarters", [32, -20])
def test_ml302_validity_edges_at_the_modem_clock_in_its_time_zone(ml_verify, quarters):
    minute = timedelta(minutes=1)
    assert [ml_open_at(ml_verify, t, quarters) for t in
            (NOT_BEFORE - minute, NOT_BEFORE + minute, NOT_AFTER - minute, NOT_AFTER + minute)] \
        == [b"+QSSLOPEN: 0,-1\r\n", b"+QSSLOPEN: 0,0\r\n", b"+QSSLOPEN: 0,0\r\n", b"+QSSLOPEN: 0,-1\r\n"]


# Was a bug, fixed: verify._dated compared the sub-second modem clock (whole seconds now, as Mbed TLS)
def test_ml302_the_second_of_not_after_is_inside_the_window(ml_verify):
    """The ML302's firmware is Mbed TLS: notAfter's own second is valid."""
    assert ml_open_at(ml_verify, NOT_AFTER + timedelta(seconds=1), 32) == b"+QSSLOPEN: 0,-1\r\n"
    assert ml_open_at(ml_verify, NOT_AFTER, 32) == b"+QSSLOPEN: 0,0\r\n"


# -- a server that never answers the ClientHello, closed by the host -----------------------------
class SilentServer:
    """Accepts TCP, records what the client sends, never writes; `ended` once the client's
    side is gone (EOF or reset)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.accepted = threading.Event()
        self.ended = threading.Event()
        self.how = None
        self.sock = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            self.sock, _ = self.listener.accept()
        except OSError:
            return
        self.accepted.set()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.how = "fin"
                    break
                self.received += data
        except OSError as exc:
            self.how = f"error {exc}"
        self.ended.set()

    def close(self) -> None:
        self.listener.close()
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


def records(data: bytes) -> list[int]:
    """The content types of the whole TLS records in data."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        out.append(data[pos])
        pos += 5 + int.from_bytes(data[pos + 3:pos + 5], "big")
    assert pos == len(data), data
    return out


@pytest.fixture
def silent(emulator):
    server = SilentServer()
    emulator.router.add_map("silent.example", 443, "127.0.0.1", server.port)
    yield server
    server.close()


def wait_client_hello(server: SilentServer) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        data = bytes(server.received)
        if len(data) >= 5 and len(data) >= 5 + int.from_bytes(data[3:5], "big"):
            assert data[0] == 22 and data[5] == 1          # handshake, ClientHello
            return
        time.sleep(0.01)
    raise AssertionError(f"no ClientHello: {bytes(server.received)!r}")


@pytest.mark.parametrize("close_line", ["AT+QSSLCLOSE=0", "AT+QSSLCLOSE=0,10", "AT+QSSLCLOSE=0,0"])
def test_close_while_the_server_sits_on_the_client_hello(ec2x_strict, emulator, silent, echo, close_line):
    """OK at once (no linger on the modem clock: the manual time is not moved), the server's
    connection ended, nothing after the ClientHello but alerts, no +QSSLOPEN ever -- not at
    negotiatetime either --, and the id opens again."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    assert host.at('AT+QSSLOPEN=1,1,0,"silent.example",443,0') == OK
    wait_client_hello(silent)
    started = time.monotonic()
    assert host.at(close_line, timeout=3) == OK
    assert time.monotonic() - started < 2
    assert silent.ended.wait(3), "the server's connection is still up"
    hello_len = 5 + int.from_bytes(silent.received[3:5], "big")
    assert set(records(bytes(silent.received[hello_len:]))) <= {21}
    advance(15)
    assert host.quiet_for(0.5) == b""
    assert b"+QSSLOPEN" not in host.transcript
    assert host.at("AT+QSSLSTATE=0") == OK
    assert host.at('AT+QSSLOPEN=1,1,0,"echo.example",443,0') == OK
    assert open_answer(host, 0) == 0
    assert host.at("AT+QSSLCLOSE=0,0") == OK


def test_close_and_reopen_in_one_line_while_the_server_sits_on_the_client_hello(
        ec2x_strict, emulator, silent, echo):
    """AT+QSSLCLOSE=0;+QSSLOPEN=... of the same id: OK, one +QSSLOPEN: 0,0 (the new socket's),
    nothing for the old one at its negotiatetime."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    assert host.at('AT+QSSLOPEN=1,1,0,"silent.example",443,0') == OK
    wait_client_hello(silent)
    assert host.at('AT+QSSLCLOSE=0;+QSSLOPEN=1,1,0,"echo.example",443,0') == OK
    assert host.read_until(b"\r\n+QSSLOPEN: 0,0\r\n", timeout=10) == b"\r\n+QSSLOPEN: 0,0\r\n"
    assert silent.ended.wait(3)
    advance(15)
    assert host.quiet_for(0.5) == b""
    assert host.send_data(0, b"still mine") == b"\r\nSEND OK\r\n"
    # (the echo server sends it back: its "recv" URC, before the close -- the full run saw it
    # land in the close's answer when read together)
    urc = b'\r\n+QSSLURC: "recv",0\r\n'
    assert host.read_until(urc, timeout=10) == urc
    assert host.at("AT+QSSLCLOSE=0,0") == OK
    assert host.transcript.count(b"+QSSLOPEN:") == 1


def test_ml302_close_while_the_server_sits_on_the_client_hello(ml302_strict, emulator, silent):
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLOPEN=0,0,"silent.example",443,0') == OK
    wait_client_hello(silent)
    host.write("AT+QSSLCLOSE=0\r")
    assert host.read_exactly(len(b"\r\nOK\r\n\r\n0,CLOSE OK\r\n"), timeout=3) == b"\r\nOK\r\n\r\n0,CLOSE OK\r\n"
    assert silent.ended.wait(3)
    advance(200)
    assert host.quiet_for(0.5) == b""
    assert b"+QSSLOPEN" not in host.transcript
    assert host.at("AT") == OK


# -- a record one byte over 2^14 in direct push and transparent mode -----------------------------
@pytest.mark.parametrize("mode", [1, 2], ids=["push", "transparent"])
def test_record_over_the_limit_behind_a_full_record_push_and_transparent(ec2x_strict, emulator, mode):
    """One TCP segment: a 3000-byte record, a record of exactly 16384 plaintext bytes, then one
    of 16385 (record_overflow) and a record behind it.  Direct push: the 19384 bytes pushed
    (each push framed, at most 1500), then exactly one "closed", nothing of the big record or
    after; transparent: the 19384 bytes then NO CARRIER, state 4.  No warning alert, the emulator's
    FIN (the server reads EOF); the id reusable."""
    from tests.e2e.test_adversarial_hostile_servers_2 import (CT_APP, FATAL, Server, pattern, state,
                                                              still_usable)
    from tests.e2e.test_adversarial_hostile_servers_13 import read_pushed
    host, advance, port = ec2x_strict
    before, full, big = pattern(3000, 71), pattern(16384, 72), pattern(16385, 73)
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before) + c.seal(CT_APP, full) + c.seal(CT_APP, big) + c.app(b"after"))
        c.server.stall()

    cid = 4
    with Server(script, emulator) as server:
        if mode == 1:
            assert host.at(f'AT+QSSLOPEN=1,1,{cid},"hostile2.example",443,1') == OK
            assert open_answer(host, cid) == 0
            go.set()
            data, sizes = read_pushed(host, cid, len(before) + len(full))
            assert data == before + full
            assert host.read_until(b'\r\n+QSSLURC: "closed",%d\r\n' % cid, timeout=5) \
                == b'\r\n+QSSLURC: "closed",%d\r\n' % cid
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,{cid},"hostile2.example",443,2') == b"\r\nCONNECT\r\n"
            go.set()
            assert host.read_exactly(len(before) + len(full), timeout=10) == before + full
            assert host.read_until(b"\r\nNO CARRIER\r\n", timeout=5) == b"\r\nNO CARRIER\r\n"
        assert host.quiet_for(0.3) == b""
        assert state(host, cid) == 4
        conn = server.conns[0]
        wait_for_event(conn.eof, 5, "the emulator ends the connection")
        # Mbed TLS 2.28 sends no alert for a record_overflow (only bad_record_mac gets one):
        # nothing but a fatal alert, if anything, before the FIN
        assert all(a[0] == FATAL for a in conn.alerts()), conn.alerts()
        assert host.at(f"AT+QSSLCLOSE={cid}") == OK
        assert b"after" not in bytes(host.transcript)
        assert bytes(host.transcript).count(b"+QSSLURC: \"closed\"") == (1 if mode == 1 else 0)
    still_usable(host, emulator, cid)


def wait_for_event(event: threading.Event, timeout: float, what: str) -> None:
    assert event.wait(timeout), what


# -- the silent server and the clocks ------------------------------------------------------------
@pytest.mark.parametrize("jump", ["+366 days", "-3650 days"])
def test_cclk_jump_while_the_server_sits_on_the_client_hello_does_not_move_negotiatetime(
        ec2x_strict, emulator, silent, jump):
    """negotiatetime is a timer, not a date: AT+CCLK moved a year forward (or ten back) while
    the handshake waits gives no early (or late) 569: nothing at 9.5 s of modem time, then
    exactly "+QSSLOPEN: 0,569" at 10 s, and the server's connection aborted."""
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
    assert host.at('AT+QSSLOPEN=1,1,0,"silent.example",443,0') == OK
    wait_client_hello(silent)
    days = int(jump.split()[0])
    moved = datetime.now(timezone.utc) + timedelta(days=days)
    assert host.at(f'AT+CCLK="{cclk_text(moved, 32)}"') == OK
    advance(9.5)
    assert host.quiet_for(0.4) == b""
    assert not silent.ended.is_set()
    advance(1)
    assert host.read_until(b"\r\n+QSSLOPEN: 0,569\r\n", timeout=5) == b"\r\n+QSSLOPEN: 0,569\r\n"
    assert silent.ended.wait(3)
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"


def test_close_of_one_of_two_sockets_waiting_on_silent_servers(ec2x_strict, emulator):
    """Two ids wait on servers that never answer; the host closes one: OK, no answer for it
    ever; the other answers 569 at its negotiatetime, once, and only its server is aborted
    then."""
    host, advance, port = ec2x_strict
    a, b = SilentServer(), SilentServer()
    try:
        emulator.router.add_map("silent-a.example", 443, "127.0.0.1", a.port)
        emulator.router.add_map("silent-b.example", 443, "127.0.0.1", b.port)
        assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
        assert host.at('AT+QSSLOPEN=1,1,1,"silent-a.example",443,0') == OK
        assert host.at('AT+QSSLOPEN=1,1,2,"silent-b.example",443,0') == OK
        wait_client_hello(a)
        wait_client_hello(b)
        advance(5)
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert a.ended.wait(3)
        assert not b.ended.is_set()
        advance(4.9)
        assert host.quiet_for(0.3) == b""
        advance(0.2)
        assert host.read_until(b"\r\n+QSSLOPEN: 2,569\r\n", timeout=5) == b"\r\n+QSSLOPEN: 2,569\r\n"
        assert b.ended.wait(3)
        advance(30)
        assert host.quiet_for(0.3) == b""
        assert bytes(host.transcript).count(b"+QSSLOPEN") == 1
        assert host.at("AT+QSSLCLOSE=2") == OK
    finally:
        a.close()
        b.close()


# -- a HelloRequest in the middle of the host's AT+QSSLSEND data, renegotiation 1 ------------------
def test_hello_request_in_the_middle_of_the_send_data_with_renegotiation_1(ec2x_strict, emulator):
    """renegotiation 1; the host is half-way through AT+QSSLSEND=5,20's data when the server
    sends a HelloRequest and a line, then never answers the modem's renegotiating ClientHello.
    Nothing inside the prompt; the other 10 bytes: SEND OK; then the line's "recv" URC.  Not
    one of the 20 bytes is sealed under the old keys while the renegotiation waits (no
    application record reaches the server); a fatal alert then ends the session: "closed"
    once, the line still readable, state 4."""
    from tests.e2e.test_adversarial_hostile_servers_2 import (CT_APP, CT_HANDSHAKE, FATAL, Server, read_all,
                                                              state, still_usable)
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    line = b"line behind the hello request\n"
    go, end = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.hello_request() + c.app(line))
        end.wait(10)
        c.sock.sendall(c.alert(FATAL, 10))
        c.server.stall()

    with Server(script, emulator) as server:
        assert host.at('AT+QSSLOPEN=1,1,5,"hostile2.example",443,0') == OK
        assert open_answer(host, 5) == 0
        host.write("AT+QSSLSEND=5,20\r")
        assert host.read_exactly(4, timeout=5) == b"\r\n> "
        host.write(b"0123456789")
        go.set()
        conn = server.conns[0]
        with conn.changed:
            assert conn.changed.wait_for(
                lambda: any(ct == CT_HANDSHAKE and p[:1] == b"\x01" for ct, p in conn.records), 5), \
                "no renegotiating ClientHello"
        assert host.quiet_for(0.3) == b""
        host.write(b"abcdefghij")
        want = b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",5\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        assert read_all(host, 5, len(line)) == line
        time.sleep(0.3)
        assert [ct for ct, _ in conn.records if ct == CT_APP] == []
        end.set()
        assert host.read_until(b'\r\n+QSSLURC: "closed",5\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",5\r\n'
        assert state(host, 5) == 4
        assert conn.plaintext() == b""
        assert host.at("AT+QSSLCLOSE=5") == OK
        assert bytes(host.transcript).count(b'"closed"') == 1
    still_usable(host, emulator, 5)


def test_ml302_cclk_jump_and_a_close_while_two_opens_wait_on_silent_servers(ml302_strict, emulator):
    """ML302, <timeout> 10 on both: ssid 1 and 2 wait on servers that never answer; the host
    moves AT+CCLK a year on (no early -1), closes ssid 1 at 5 s (OK, "1,CLOSE OK", its server's
    connection ended, never a +QSSLOPEN for it); ssid 2 answers "+QSSLOPEN: 2,-1" at 10 s of
    modem time, once."""
    host, advance, port = ml302_strict
    a, b = SilentServer(), SilentServer()
    try:
        emulator.router.add_map("silent-a.example", 443, "127.0.0.1", a.port)
        emulator.router.add_map("silent-b.example", 443, "127.0.0.1", b.port)
        assert host.at('AT+QSSLOPEN=1,0,"silent-a.example",443,0,10') == OK
        assert host.at('AT+QSSLOPEN=2,0,"silent-b.example",443,0,10') == OK
        wait_client_hello(a)
        wait_client_hello(b)
        moved = datetime.now(timezone.utc) + timedelta(days=366)
        assert host.at(f'AT+CCLK="{cclk_text(moved, 32)}"') == OK
        advance(5)
        assert host.quiet_for(0.3) == b""
        ml_close(host, 1)
        assert a.ended.wait(3)
        assert not b.ended.is_set()
        advance(4.9)
        assert host.quiet_for(0.3) == b""
        advance(0.2)
        assert host.read_until(b"\r\n+QSSLOPEN: 2,-1\r\n", timeout=5) == b"\r\n+QSSLOPEN: 2,-1\r\n"
        assert b.ended.wait(3)
        advance(120)
        assert host.quiet_for(0.3) == b""
        assert bytes(host.transcript).count(b"+QSSLOPEN") == 1
    finally:
        a.close()
        b.close()


# -- the validity dates as encoded on the wire ---------------------------------------------------
NOT_BEFORE_DER = b"\x17\x0d250101000000Z"
NOT_AFTER_DER = {   # 2030-06-01 00:00:00 UTC, written as CAs (and broken CA tools) write it
    "utctime": b"\x17\x0d300601000000Z",
    "generalizedtime_before_2050": b"\x18\x0f20300601000000Z",      # DER says UTCTime; both parse it
    "utctime_without_seconds": b"\x17\x0b3006010000Z",              # both refuse it
    "utctime_with_an_offset": b"\x17\x11300601000000+0000",
    "generalizedtime_with_a_fraction": b"\x18\x1120300601000000.0Z",
}
PARSED = {"utctime", "generalizedtime_before_2050"}


def _dated_leaf(kind: str):
    from tests.e2e.test_adversarial_hostile_servers_13 import _ber_material
    from tests.unit.tls_engine.der_support import element
    leaf, key, resign, _ = _ber_material()
    return resign(leaf, lambda tc: tc[:4] + [element(0x30, NOT_BEFORE_DER + NOT_AFTER_DER[kind])] + tc[5:]), key


@pytest.mark.parametrize("kind", list(NOT_AFTER_DER))
def test_premise_mbedtls_parses_these_validity_encodings(kind):
    """python-mbedtls's X.509 parser (Mbed TLS 2.28.8, x509_get_time / x509_parse_time): a
    GeneralizedTime before 2050 is read (notAfter 2030-06-01 00:00:00); no seconds, an offset
    instead of Z, a fraction: "X509 - The date tag or value is invalid"."""
    from mbedtls import x509 as mbx509
    der, _ = _dated_leaf(kind)
    if kind in PARSED:
        assert str(mbx509.CRT.from_DER(der).not_after) == "2030-06-01 00:00:00"
    else:
        with pytest.raises(Exception, match="date tag or value is invalid"):
            mbx509.CRT.from_DER(der)


@pytest.fixture
def rsa_modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    return ec2x_strict


@pytest.mark.parametrize("level", [0, 1])
@pytest.mark.parametrize("kind", list(NOT_AFTER_DER))
def test_server_leaf_validity_encodings_against_the_modem_clock(rsa_modem, emulator, monkeypatch, kind, level):
    """The server's leaf (signed by the configured CA, for the dialled name) carries its
    notAfter in the encoding `kind`.  Mbed TLS parses the Certificate message at every
    seclevel (ssl_parse_certificate_chain; VERIFY_NONE too): an encoding it refuses is 566 at
    seclevel 0 and 1, the modem's fatal bad_certificate.  One it reads: opens at seclevel 0;
    at seclevel 1 with ignorelocaltime 0 the date is the one encoded -- the modem clock a day
    before it: opens; a day after: 566."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.test_adversarial_hostile_servers_13 import RewritingServer, seclevel
    host, advance, port = rsa_modem
    der, key = _dated_leaf(kind)
    monkeypatch.setattr(h6, "identity", lambda: (der, key))
    seclevel(host, level)
    assert host.at('AT+QSSLCFG="ignorelocaltime",1,0') == OK
    assert host.at('AT+QSSLCFG="session_cache",1,0') == OK
    with RewritingServer(emulator, None) as server:
        def opened(moment: datetime) -> int:
            assert host.at(f'AT+CCLK="{cclk_text(moment, 32)}"') == OK
            assert host.at('AT+QSSLOPEN=1,1,3,"www.iottest.work",443,0') == OK
            code = open_answer(host, 3)
            if code == 0:
                assert host.at("AT+QSSLCLOSE=3,0") == OK
            return code

        before, after = opened(NOT_AFTER - timedelta(days=1)), opened(NOT_AFTER + timedelta(days=1))
        if kind not in PARSED:
            assert (before, after) == (566, 566)
            for conn in server.conns:                       # the modem's alert, read by the
                deadline = time.monotonic() + 5             # server's own thread
                while not conn.alerts and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert conn.alerts == [b"\x02\x2a"], conn.alerts     # fatal bad_certificate
        elif level == 0:
            assert (before, after) == (0, 0)
        else:
            assert (before, after) == (0, 566)


@pytest.mark.parametrize("same_line", [False, True], ids=["two_lines", "one_line"])
def test_reopen_after_closing_a_waiting_open_gets_a_fresh_negotiatetime(ec2x_strict, emulator, same_line):
    """Id 0 waits 8 s (modem time) on a server that never answers; the host closes it and opens
    id 0 again to another such server.  The first open's negotiatetime (due at 10 s) must not
    answer for the second: nothing at 10 s or 17.9 s; "+QSSLOPEN: 0,569" at 18 s, once, and
    only then the second server's connection is aborted."""
    host, advance, port = ec2x_strict
    a, b = SilentServer(), SilentServer()
    try:
        emulator.router.add_map("silent-a.example", 443, "127.0.0.1", a.port)
        emulator.router.add_map("silent-b.example", 443, "127.0.0.1", b.port)
        assert host.at('AT+QSSLCFG="negotiatetime",1,10') == OK
        assert host.at('AT+QSSLOPEN=1,1,0,"silent-a.example",443,0') == OK
        wait_client_hello(a)
        advance(8)
        reopen = 'AT+QSSLOPEN=1,1,0,"silent-b.example",443,0'
        if same_line:
            assert host.at("AT+QSSLCLOSE=0;" + reopen[2:]) == OK
        else:
            assert host.at("AT+QSSLCLOSE=0") == OK
            assert host.at(reopen) == OK
        wait_client_hello(b)
        assert a.ended.wait(3)
        advance(2.5)                                   # the first open's deadline passes
        assert host.quiet_for(0.3) == b""
        assert not b.ended.is_set()
        advance(7.4)                                   # 17.9 s
        assert host.quiet_for(0.3) == b""
        advance(0.2)
        assert host.read_until(b"\r\n+QSSLOPEN: 0,569\r\n", timeout=5) == b"\r\n+QSSLOPEN: 0,569\r\n"
        assert b.ended.wait(3)
        advance(30)
        assert host.quiet_for(0.3) == b""
        assert bytes(host.transcript).count(b"+QSSLOPEN") == 1
    finally:
        a.close()
        b.close()


# -- the modem's own certificate and the modem clock ---------------------------------------------
@pytest.mark.parametrize("year", [2099, 2001])
def test_own_client_certificate_out_of_date_at_the_modem_clock_is_still_presented(
        ec2x_strict, emulator, pki, year):
    """seclevel 2, ignorelocaltime 0: the modem clock (2099, or 2001) puts the modem's OWN
    client certificate (valid for the computer's clock only) outside its window, the server's
    chain inside.  Mbed TLS never checks the dates of its own certificate (ssl_write_certificate
    sends the configured chain): the open answers 0 and the server gets that certificate; the
    server, which judges it at its own clock, accepts it."""
    host, advance, port = ec2x_strict
    now = datetime.now(timezone.utc)
    client = pki.issue("hs17-client", "hs17-client.test", not_before=now - timedelta(days=1),
                       not_after=now + timedelta(days=30))
    assert host.upload("UFS:hs17c.pem", client.cert_pem).endswith(b"OK\r\n")
    assert host.upload("UFS:hs17c.key", client.key_pem).endswith(b"OK\r\n")
    if b"UFS:hs17ca.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:hs17ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    for line in ('AT+QSSLCFG="seclevel",1,2', 'AT+QSSLCFG="cacert",1,"UFS:hs17ca.pem"',
                 'AT+QSSLCFG="clientcert",1,"UFS:hs17c.pem"', 'AT+QSSLCFG="clientkey",1,"UFS:hs17c.key"',
                 'AT+QSSLCFG="session_cache",1,0', 'AT+QSSLCFG="ignorelocaltime",1,0'):
        assert host.at(line) == OK, line
    with TlsServer(pki.server, client_ca=pki.ca.cert_pem, require_client_cert=True,
                   ciphers="DEFAULT:@SECLEVEL=0") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert ec2x_open_at(host, datetime(year, 6, 1, tzinfo=timezone.utc), 32) == 0
        conn = server.wait_handshake()
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        assert conn.handshake_done
        assert conn.client_cert_der == x509.load_pem_x509_certificate(client.cert_pem).public_bytes(Encoding.DER)


def test_ml302_record_over_the_limit_behind_a_full_record(ml302_strict, emulator):
    """ML302 (AES128-SHA): one TCP segment with a 3000-byte record, a record of exactly 16384
    plaintext bytes, one of 16385 (record_overflow) and a record behind it: the 19384 bytes
    readable once, then one "+QSSLURC: "close",0", nothing of the big record or after it,
    REMOTE CLOSING until AT+QSSLCLOSE; the emulator's FIN."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.test_adversarial_hostile_servers_10 import (ml_answer, ml_close, ml_open, ml_read_all, ml_recv,
                                                               ml_state)
    from tests.e2e.test_adversarial_hostile_servers_2 import pattern
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    before, full, big = pattern(3000, 81), pattern(16384, 82), pattern(16385, 83)
    go, eof = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.app(before) + c.tx.seal(23, full) + c.tx.seal(23, big) + c.app(b"after"))
        try:
            while c.sock.recv(65536):
                pass
        except OSError:
            pass
        eof.set()

    with h6.HandServer(emulator, script, suite=h6.RSA_CBC, name="over302.example"):
        ml_open(host, 0, "over302.example")
        assert ml_answer(host, 0) == 0
        go.set()
        host.seen(b'+QSSLURC: "close",0\r\n', 10)
        assert ml_read_all(host, 0, len(before) + len(full)) == before + full
        assert ml_recv(host, 0) == b""
        assert eof.wait(5), "the emulator never ended the connection"
        assert ml_state(host, 0) == "REMOTE CLOSING"
        assert host.quiet_for(0.2) == b""
        ml_close(host, 0)
        assert host.transcript.count(b'+QSSLURC: "close",0') == 1
        assert b"after" not in bytes(host.transcript)


def test_ml302_hello_request_in_the_middle_of_the_send_data(ml302_strict, emulator):
    """ML302 (no renegotiation): the host has typed half of its AT+QSSLSEND=0 data (Ctrl+Z
    ended) when the server sends an encrypted HelloRequest and a line.  The modem refuses it
    with one warning no_renegotiation alert while the prompt is out; nothing is written inside
    the prompt; the rest and Ctrl+Z: SEND OK, then the line's "recv" URC; every byte of the
    send reaches the server once, in order; the session goes on."""
    from tests.e2e import test_adversarial_hostile_servers_6 as h6
    from tests.e2e.test_adversarial_hostile_servers_10 import ml_answer, ml_close, ml_open, ml_read_all
    host, advance, port = ml302_strict
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X002F') == OK
    line = b"line behind the hello request\r\n"
    sent = b"first half, second half"
    go = threading.Event()
    conns = []

    def script(c) -> None:
        c.handshake()
        conns.append(c)
        threading.Thread(target=c.reader, daemon=True).start()
        go.wait(10)
        c.sock.sendall(c.tx.seal(22, b"\x00\x00\x00\x00") + c.app(line))
        deadline = time.monotonic() + 10
        while len(c.plain) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        c.sock.sendall(c.app(bytes(c.plain)[::-1]))
        c.eof.wait(20)                          # the modem's close_notify + FIN: close too
        c.sock.close()

    with h6.HandServer(emulator, script, suite=h6.RSA_CBC, name="hr302.example"):
        ml_open(host, 0, "hr302.example")
        assert ml_answer(host, 0) == 0
        host.write("AT+QSSLSEND=0\r")
        assert host.read_exactly(4, timeout=5) == b"\r\n> "
        host.write(sent[:11])
        go.set()
        deadline = time.monotonic() + 5
        while not (conns and conns[0].alerts) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert conns and conns[0].alerts == [b"\x01\x64"], conns and conns[0].alerts
        assert host.quiet_for(0.3) == b""
        host.write(sent[11:] + b"\x1a")
        want = b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",1,0\r\n'
        assert host.read_exactly(len(want), timeout=5) == want
        got = ml_read_all(host, 0, len(line) + len(sent))
        assert got == line + sent[::-1]
        assert bytes(conns[0].plain) == sent
        assert conns[0].alerts == [b"\x01\x64"]
        ml_close(host, 0)


# -- a 40 KiB certificate chain --------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain_40k(pki):
    """The shared PKI's RSA server leaf (www.iottest.work) followed by ~125 unrelated CA
    certificates: a Certificate message of about 40 KiB (three TLS records)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from emulator.testing.peers import ServerIdentity, make_cert
    from emulator.testing.peers.pki import Issued
    leaf = Issued(x509.load_pem_x509_certificate(pki.server.cert_pem),
                  serialization.load_pem_private_key(pki.server.key_pem, None))
    padding = [make_cert(f"hs17 padding {i}", None, ca=True) for i in range(125)]
    total = sum(len(p.cert.public_bytes(serialization.Encoding.DER)) for p in padding)
    assert 38_000 < total < 48_000, total
    return ServerIdentity(leaf, *padding)


@pytest.mark.parametrize("connectmode", [0, 1])
def test_ml302_40_kib_certificate_chain_is_minus_1_once(ml302_strict, emulator, pki, chain_40k, connectmode):
    """ML302, seclevel 0: a ~40 KiB chain (Mbed TLS 2.28 takes no handshake message split
    across records): "+QSSLOPEN: 0,-1" once (connectmode 1: then ERROR, no CONNECT); the
    server's connection ended; the ssid opens again to a normal server and fetches data."""
    host, advance, port = ml302_strict
    with TlsServer(chain_40k, ciphers="DEFAULT:@SECLEVEL=0") as big:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", big.port)
        if connectmode:
            host.write(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},1\r'.encode())
            got = host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n"), timeout=15)
            assert got == b"\r\n+QSSLOPEN: 0,-1\r\n\r\nERROR\r\n", got
        else:
            assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
            assert host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), timeout=15) == b"\r\n+QSSLOPEN: 0,-1\r\n"
        conn = big.wait_handshake()
        assert not conn.handshake_done
        assert host.quiet_for(0.3) == b""
    with TlsServer(pki.server, ciphers="DEFAULT:@SECLEVEL=0", mode="echo") as good:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", good.port)
        assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
        assert host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n"), timeout=10) == b"\r\n+QSSLOPEN: 0,0\r\n"
        ml_close(host, 0)
    assert bytes(host.transcript).count(b"+QSSLOPEN: 0,-1") == 1


def test_ec2x_transparent_open_meeting_a_40_kib_chain_is_error_then_566(ec2x_strict, emulator, chain_40k):
    """EC2x, access mode 2, seclevel 0: no CONNECT, exactly "ERROR", QIGETERROR 566, no
    +QSSLOPEN URC, command mode."""
    host, advance, port = ec2x_strict
    with TlsServer(chain_40k, ciphers="DEFAULT:@SECLEVEL=0") as big:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", big.port)
        host.write(f'AT+QSSLOPEN=1,1,2,"{HOST}",{PORT},2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n"), timeout=15) == b"\r\nERROR\r\n"
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 566,socket connection failed\r\n\r\nOK\r\n"
        assert b"+QSSLOPEN" not in bytes(host.transcript)
        assert not big.wait_handshake().handshake_done
    assert host.at("AT") == OK


# -- the host changes the clock / the context while the server holds its first flight ------------
@pytest.mark.parametrize("case", ["clock_moved_past_not_after", "clock_moved_into_the_window",
                                  "ignorelocaltime_0_written", "ignorelocaltime_1_written"])
def test_clock_or_context_changed_while_the_server_holds_its_first_flight(ec2x_strict, emulator, pki, windowed,
                                                                          case):
    """The server (valid 2030-03-01 12:00 .. 2030-06-01 00:00) holds its first flight while the
    host changes something, then sends it.  The modem clock is read when the chain is checked
    (Mbed TLS reads the time in x509 verify): moved past notAfter -> 566, moved into the window
    -> 0.  A context option written meanwhile does not change the open in flight (the context
    is taken at AT+QSSLOPEN, as a module configures its TLS session there): ignorelocaltime 0
    written after an open with 1 -> still 0; 1 written after an open with 0 (clock outside) ->
    still 566."""
    from tests.e2e.test_adversarial_hostile_servers_2 import Server
    host, advance, port = ec2x_strict
    inside, outside = NOT_AFTER - timedelta(days=10), NOT_AFTER + timedelta(days=10)
    start_clock, start_ignore, change, expected = {
        "clock_moved_past_not_after": (inside, 0, f'AT+CCLK="{cclk_text(outside, 32)}"', 566),
        "clock_moved_into_the_window": (outside, 0, f'AT+CCLK="{cclk_text(inside, 32)}"', 0),
        "ignorelocaltime_0_written": (outside, 1, 'AT+QSSLCFG="ignorelocaltime",1,0', 0),
        "ignorelocaltime_1_written": (outside, 0, 'AT+QSSLCFG="ignorelocaltime",1,1', 566),
    }[case]
    if b"UFS:hs17ca.pem" not in host.at('AT+QFLST="*"'):
        assert host.upload("UFS:hs17ca.pem", pki.ca.cert_pem).endswith(b"OK\r\n")
    for line in ('AT+QSSLCFG="seclevel",1,1', 'AT+QSSLCFG="cacert",1,"UFS:hs17ca.pem"',
                 'AT+QSSLCFG="session_cache",1,0', f'AT+QSSLCFG="ignorelocaltime",1,{start_ignore}',
                 'AT+QSSLCFG="sni",1,1'):
        assert host.at(line) == OK, line
    go, holding = threading.Event(), threading.Event()

    def hold(flight: bytes) -> bytes:
        holding.set()
        go.wait(10)
        return flight

    def script(c) -> None:
        c.handshake(reshape=hold)
        c.server.stall()

    with Server(script, emulator, name=HOST) as server:
        windowed.configure_cert(server.ctx)
        assert host.at(f'AT+CCLK="{cclk_text(start_clock, 32)}"') == OK
        assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
        assert holding.wait(10)
        assert host.at(change) == OK
        go.set()
        assert open_answer(host, 1) == expected
        if expected == 0:
            assert host.at("AT+QSSLCLOSE=1,0") == OK
    assert bytes(host.transcript).count(b"+QSSLOPEN: 1,") == 1
