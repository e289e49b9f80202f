"""Hostile servers, seventh round: the handshake sniffer read late at seclevel 0 (commit d981121).

Since d981121 TlsClientSession, with no certificate to verify (seclevel 0, TLS), puts the
server's bytes aside (up to 64 KiB) and reads them after Mbed TLS has answered them: once the
next flight is taken (events()), when a failure's reason needs them (_fail_from_tls_error,
_on_transport_eof) or when peer_chain is asked for; seclevel >= 1 still reads them before
Mbed TLS.  Every test here plays the SAME server bytes to an open at seclevel 0 and then at
seclevel 1 (the CA configured, the certificate valid for the dialled name, so the two differ
only in when the sniffer reads) and requires the host to see exactly the same: the
+QSSLOPEN answer, the AT+QIGETERROR line and the reason in the log (expected text given);
then the id opens again against a well-behaved server and carries data.

The server is test_adversarial_hostile_servers_6's hand-made TLS 1.2 server (`cryptography`,
TLS_RSA_WITH_AES_128_GCM_SHA256), its first flight rearranged per test.  Covered:

* a fatal alert in the server's first flight: right after a valid ServerHello, after the
  Certificate, after a warning alert (separate segments), its last byte in a later segment,
  the whole flight up to it one byte per segment; a fatal alert answering the modem's flight
  (the first flight read at events(), the alert at the failure): the reason names the alert;
* records Mbed TLS 2.28 does not take: an alert split across two records, two alerts packed
  in one record, non-TLS bytes (an HTTP answer) after the ServerHello, application data
  before ServerHelloDone or before the server's CCS, a HelloRequest before the ServerHello or
  before the server's CCS: the same reason at both levels;
* a malformed Certificate message (list length wrong, an entry running past the end): the
  sniffer's reason at both levels, and no ClientKeyExchange ever leaves the modem;
* a certificate chain of ~20 KiB and ~70 KiB (past the 64 KiB put aside) in 16 KiB records,
  and a ServerHello / a Certificate split across records: Mbed TLS's "fragmentation not
  supported", the reason naming the message size or the split;
* a ServerHello choosing TLS 1.0 with sslversion 3: "server chose TLSv1.0";
* the server ending (FIN, RST) in the middle of its first flight, or after all of it; the whole
  first flight then close_notify and FIN in one segment;
* a whole handshake with both server flights and the data after them one byte per segment;
  data (1 KiB, and 100 KiB -- the receive, ~72 KiB, past the 64 KiB bound) right behind the server's
  Finished in the same segment, then close_notify and FIN: the open, every byte once, one end;
* (bugs found, fixed; both levels) two fatal alerts in one segment: the reason named the
  second, which Mbed TLS never read; a fatal alert followed by non-TLS bytes in one segment:
  the reason did not name the alert (the sniffer dropped what it parsed from a feed() that
  ended in junk).

Every test runs on ec2x_strict (no ERROR log record, no traceback); an autouse fixture checks
the premise (the seclevel 0 session read late, the seclevel 1 one at once); nothing waits on
the modem clock (negotiatetime is never reached: a hang fails at open_answer's timeout)."""
from __future__ import annotations

import os
import re
import socket
import struct
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding

from emulator.testing.peers import default_pki
from tls_engine.session import TlsClientSession
from tests.e2e.hostile_support import ScriptedServer, open_answer, recv
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
from tests.e2e.test_adversarial_hostile_servers_6 import (CT_ALERT, CT_APP, CT_CCS, CT_HANDSHAKE, EXT_RENEG, RSA_GCM,
                                                          ClientHello, Conn, ext, hs, identity, pattern, prf,
                                                          read_all, record)

NAME = "www.iottest.work"              # in the shared PKI's server certificate (seclevel 1)
CA_FILE = "UFS:hostile7ca.pem"
FATAL_HANDSHAKE_FAILURE = b"\x02\x28"
HANDSHAKE_FAILURE = "server sent fatal alert handshake_failure(40): no shared cipher suite or parameters"
INVALID_RECORD = "invalid TLS record received (mbedtls -0x7200)"
UNEXPECTED = "SSL - An unexpected message was received from our peer (mbedtls -0x7700)"
BAD_SERVER_HELLO = "bad ServerHello (unsupported cipher suite, version or extension chosen) (mbedtls -0x7980)"
SPLIT = ('the server split a handshake message across TLS records (legal, RFC 5246 6.2.1; Mbed TLS 2.28 '
         'reassembles none: "TLS handshake fragmentation not supported") (mbedtls -0x7080)')
SERVER_CLOSED = "server closed the connection during the handshake"


# == the server ====================================================================================
class Flight:
    """The server's full handshake in pieces a test rearranges: its making reads the ClientHello and
    makes ServerHello / Certificate / ServerHelloDone (in the transcript, not sent); finish()
    reads the modem's flight and returns the server's CCS + Finished (not sent)."""

    def __init__(self, c: Conn, cert_body: bytes | None = None, version: bytes = b"\x03\x03") -> None:
        self.c = c
        body = c.read_handshake()
        assert body[0] == 1, body[:4].hex()
        c.transcript.append(body)
        c.hello = ClientHello(body[4:])
        self.sr = os.urandom(32)
        exts = ext(EXT_RENEG, b"\x00")
        self.sh = hs(2, version + self.sr + b"\x00" + struct.pack(">H", RSA_GCM) + b"\x00"
                     + struct.pack(">H", len(exts)) + exts)          # (no session id: never resumed)
        der, self.key = identity()
        self.cert = hs(11, certificate_body([der]) if cert_body is None else cert_body)
        self.done = hs(14, b"")
        c.transcript += [self.sh, self.cert, self.done]

    def records(self) -> bytes:
        return b"".join(record(CT_HANDSHAKE, m) for m in (self.sh, self.cert, self.done))

    def finish(self) -> bytes:
        c = self.c
        cke = c.read_handshake()
        assert cke[0] == 16, cke[:4].hex()
        c.transcript.append(cke)
        pre = self.key.decrypt(cke[6:], rsa_padding.PKCS1v15())
        master = prf(pre, b"master secret", c.hello.random + self.sr, 48)
        c._keys(master, c.hello.random, self.sr, RSA_GCM)
        c._client_finished(master)
        return record(CT_CCS, b"\x01") + c._finished(master, b"server finished")


def certificate_body(ders: list[bytes]) -> bytes:
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return len(entries).to_bytes(3, "big") + entries


def hold(c: Conn) -> None:
    """Keep the connection until the modem ends it, recording each record it sends."""
    c.after = []
    try:
        while True:
            c.after.append(c.read_record())
    except (OSError, EOFError):
        pass


def good(c: Conn) -> None:
    f = Flight(c)
    c.sock.sendall(f.records())
    c.sock.sendall(f.finish())
    c.echo()


class Server(ScriptedServer):
    """Connection n runs scripts[n]; a good full handshake and an echo once none is left."""

    def __init__(self, emulator, *scripts) -> None:
        self.scripts = list(scripts)
        super().__init__(self._dispatch, emulator, NAME)

    def _dispatch(self, c: Conn) -> None:
        (self.scripts.pop(0) if self.scripts else good)(c)

    def make_conn(self, sock: socket.socket) -> Conn:
        return Conn(self, sock)


def send_bytewise(sock: socket.socket, data: bytes) -> None:
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        time.sleep(0.0002)


# == the host ======================================================================================
@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    if CA_FILE.encode() not in host.at('AT+QFLST="*"'):
        assert host.upload(CA_FILE, default_pki().ca.cert_pem).endswith(b"OK\r\n")
    for line in ('"ciphersuite",1,0X009C', f'"cacert",1,"{CA_FILE}"', '"negotiatetime",1,10'):
        assert host.at(f"AT+QSSLCFG={line}") == b"\r\nOK\r\n"
    return ec2x_strict


def log_reasons(caplog, cid: int) -> list[tuple[int, str]]:
    out = []
    for r in caplog.records:
        m = re.match(r"SSL open %d to \S+ failed \((\d+) [^)]*\): (.*)" % cid, r.getMessage(), re.S)
        if m:
            out.append((int(m.group(1)), m.group(2)))
    return out


def qigeterror(host) -> bytes:
    answer = host.at("AT+QIGETERROR")
    m = re.search(rb"\+QIGETERROR: [^\r]*", answer)
    assert m, answer
    return m.group(0)


def ssl_open(host, cid: int, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{NAME}",443,{mode}') == b"\r\nOK\r\n"


def failed_open(host, caplog, server, cid: int, seclevel: int) -> tuple[int, bytes, str]:
    """Open cid at seclevel against the server's next script, which must make it fail:
    (answer, QIGETERROR line, the log's reason); one answer, one reason, nothing else on the
    pty, the TCP connection released."""
    assert host.at(f'AT+QSSLCFG="seclevel",1,{seclevel}') == b"\r\nOK\r\n"
    forget_answers(host, cid)
    before = len(log_reasons(caplog, cid))
    mark = len(host.transcript)
    ssl_open(host, cid)
    code = open_answer(host, cid)
    assert code != 0, f"seclevel {seclevel}: the open succeeded"
    assert host.quiet_for(0.05) == b""
    assert bytes(host.transcript[mark:]).count(b"+QSSLOPEN: %d," % cid) == 1
    assert b"+QSSLURC" not in bytes(host.transcript[mark:])
    err = qigeterror(host)
    reasons = log_reasons(caplog, cid)[before:]
    assert len(reasons) == 1 and reasons[0][0] == code, reasons
    wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    return code, err, reasons[0][1]


def usable(host, cid: int) -> None:
    """The id opens again (seclevel 1: the well-behaved server verifies) and carries data."""
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    assert host.send_data(cid, b"again") == b"\r\nSEND OK\r\n"
    assert read_all(host, cid, 5) == b"again"
    assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


@pytest.fixture(autouse=True)
def premise(monkeypatch):
    """Each test's first open (seclevel 0) reads the server's bytes late, its second
    (seclevel 1) at once: what the comparison is about."""
    lazy: list[bool] = []
    start = TlsClientSession.start

    def recording(session):
        start(session)
        lazy.append(session._lazy_sniff)
    monkeypatch.setattr(TlsClientSession, "start", recording)
    yield
    assert lazy[:2] == [True, False], lazy


def same_failure(host, caplog, emulator, script, cid: int) -> tuple[str, list[Conn]]:
    """The script's server bytes at seclevel 0, then at seclevel 1: the same 566, the same
    QIGETERROR line, the same reason (returned, with the two connections); the id reusable."""
    with Server(emulator, script, script) as server:
        lazy = failed_open(host, caplog, server, cid, 0)
        eager = failed_open(host, caplog, server, cid, 1)
        assert lazy == eager, (lazy, eager)
        assert lazy[:2] == (566, b"+QIGETERROR: 566,socket connection failed")
        usable(host, cid)
        return lazy[2], server.conns[:2]



# == a fatal alert in the first flight ===============================================================
def _alert_after_hello(c):
    f = Flight(c)
    c.sock.sendall(record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE))
    hold(c)


def _alert_after_certificate(c):
    f = Flight(c)
    c.sock.sendall(record(CT_HANDSHAKE, f.sh) + record(CT_HANDSHAKE, f.cert) + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE))
    hold(c)


def _warning_then_fatal(c):
    f = Flight(c)
    c.sock.sendall(record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, b"\x01\x70"))     # unrecognized_name
    time.sleep(0.02)
    c.sock.sendall(record(CT_ALERT, FATAL_HANDSHAKE_FAILURE))
    hold(c)


def _alert_last_byte_later(c):
    f = Flight(c)
    wire = record(CT_HANDSHAKE, f.sh) + record(CT_HANDSHAKE, f.cert) + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE)
    c.sock.sendall(wire[:-1])
    time.sleep(0.05)
    c.sock.sendall(wire[-1:])
    hold(c)


def _flight_and_alert_bytewise(c):
    f = Flight(c)
    send_bytewise(c.sock, record(CT_HANDSHAKE, f.sh) + record(CT_HANDSHAKE, f.cert)
                  + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE))
    hold(c)


def _alert_after_modem_flight(c):
    f = Flight(c)
    c.sock.sendall(f.records())
    f.finish()                                       # (the modem's whole flight read)
    c.sock.sendall(record(CT_ALERT, b"\x02\x33"))     # decrypt_error instead of CCS + Finished
    hold(c)


@pytest.mark.parametrize("script", [_alert_after_hello, _alert_after_certificate, _warning_then_fatal,
                                    _alert_last_byte_later, _flight_and_alert_bytewise,
                                    _alert_after_modem_flight],
                         ids=["after_hello", "after_certificate", "warning_then_fatal", "last_byte_later",
                              "bytewise", "after_modem_flight"])
def test_fatal_alert_in_the_handshake_is_named_alike(modem, emulator, caplog, script):
    """A fatal alert in the server's first flight after a valid ServerHello, however it is cut
    into segments, or answering the modem's flight: 566, QIGETERROR 566, the reason names the
    alert -- at seclevel 0 (read after Mbed TLS) exactly as at seclevel 1 (read before)."""
    host, advance, port = modem
    reason, conns = same_failure(host, caplog, emulator, script, 1)
    if script is _alert_after_modem_flight:
        assert reason == "server sent fatal alert decrypt_error(51): wrong PSK key or bad signature"
    else:
        assert reason == HANDSHAKE_FAILURE
    for conn in conns:                               # the modem never went past the alert
        assert [ct for ct, _ in conn.after] in ([], [CT_ALERT]), conn.after


# == records Mbed TLS 2.28 does not take ================================================================
def _alert_in_two_records(f):
    return record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, b"\x02") + record(CT_ALERT, b"\x28")


def _alerts_packed(f):
    return record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, b"\x01\x70" + FATAL_HANDSHAKE_FAILURE)


def _http_after_hello(f):
    return record(CT_HANDSHAKE, f.sh) + b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"


def _app_data_before_done(f):
    return (record(CT_HANDSHAKE, f.sh) + record(CT_HANDSHAKE, f.cert) + record(CT_APP, b"early")
            + record(CT_HANDSHAKE, f.done))


def _hello_request_first(f):
    return record(CT_HANDSHAKE, hs(0, b"")) + f.records()


ODD_FIRST_FLIGHTS = {
    "alert_in_two_records": (_alert_in_two_records, INVALID_RECORD),
    "two_alerts_in_one_record": (_alerts_packed, INVALID_RECORD),
    "http_after_server_hello": (_http_after_hello, INVALID_RECORD),
    "app_data_before_done": (_app_data_before_done, UNEXPECTED),
    "hello_request_before_server_hello": (_hello_request_first, BAD_SERVER_HELLO),
    "hello_request_before_ccs": (None, UNEXPECTED),
    "app_data_before_ccs": (None, UNEXPECTED),
}


@pytest.mark.parametrize("kind", list(ODD_FIRST_FLIGHTS))
def test_records_mbedtls_refuses_are_reported_alike(modem, emulator, caplog, kind):
    """Records Mbed TLS 2.28 refuses in the handshake (some legal in TLS 1.2, as an alert split
    across records): the same 566 and the same reason at seclevel 0 and 1; the modem sends
    no Finished of its own after what it refused."""
    host, advance, port = modem
    make, want = ODD_FIRST_FLIGHTS[kind]

    def script(c):
        f = Flight(c)
        if make is not None:
            c.sock.sendall(make(f))
        else:                                         # the odd record before the server's CCS
            c.sock.sendall(f.records())
            last = f.finish()
            odd = record(CT_HANDSHAKE, hs(0, b"")) if kind == "hello_request_before_ccs" else record(CT_APP, b"x")
            c.sock.sendall(odd + last)
        hold(c)

    reason, conns = same_failure(host, caplog, emulator, script, 3)
    assert reason == want
    for conn in conns:
        assert all(ct == CT_ALERT for ct, _ in conn.after), conn.after


# == the Certificate message ===========================================================================
def _list_length_wrong():
    der, _ = identity()
    body = certificate_body([der])
    return (len(body) - 2).to_bytes(3, "big") + body[3:]


def _entry_past_the_end():
    der, _ = identity()
    body = certificate_body([der])
    return body[:3] + (len(der) + 5).to_bytes(3, "big") + body[6:]


@pytest.mark.parametrize("make, detail", [(_list_length_wrong, "Certificate message length mismatch"),
                                          (_entry_past_the_end, "truncated certificate entry")],
                         ids=["list_length", "entry_length"])
def test_malformed_certificate_message(modem, emulator, caplog, make, detail):
    """A Certificate message whose lengths do not add up: at seclevel 0 Mbed TLS now sees it
    first (and refuses it), at seclevel 1 the sniffer does; the host sees the same 566 and the
    log the sniffer's reason at both, and no ClientKeyExchange ever leaves the modem."""
    host, advance, port = modem

    def script(c):
        f = Flight(c, make())
        c.sock.sendall(f.records())
        hold(c)

    reason, conns = same_failure(host, caplog, emulator, script, 4)
    assert reason == f"malformed server Certificate message: {detail}"
    for conn in conns:
        assert [ct for ct, _ in conn.after] in ([], [CT_ALERT]), conn.after


def _ca_der() -> bytes:
    return x509.load_pem_x509_certificate(default_pki().ca.cert_pem).public_bytes(serialization.Encoding.DER)


@pytest.mark.parametrize("total", [20000, 70000], ids=["20k", "70k"])
def test_certificate_chain_larger_than_a_record(modem, emulator, caplog, total):
    """A valid leaf followed by copies of the CA until the Certificate message is ~20 KiB /
    ~70 KiB (the latter past the 64 KiB seclevel 0 puts aside), in 16 KiB records: Mbed TLS
    takes no handshake message larger than a record; the reason names the message's exact
    size at both levels."""
    host, advance, port = modem
    sizes = []

    def script(c):
        der, _ = identity()
        ders = [der]
        while sum(len(d) + 3 for d in ders) < total:
            ders.append(_ca_der())
        f = Flight(c, certificate_body(ders))
        sizes.append(len(f.cert) - 4)
        wire = record(CT_HANDSHAKE, f.sh)
        wire += b"".join(record(CT_HANDSHAKE, f.cert[i:i + 16384]) for i in range(0, len(f.cert), 16384))
        c.sock.sendall(wire + record(CT_HANDSHAKE, f.done))
        hold(c)

    reason, _ = same_failure(host, caplog, emulator, script, 5)
    assert sizes[0] == sizes[1] > total - 10
    assert reason == (f"a server handshake message of {sizes[0]} bytes (its certificate chain?) is more than "
                      f"Mbed TLS takes (16380: it reassembles none larger than one record) (mbedtls -0x7080)")


@pytest.mark.parametrize("cut", ["server_hello", "certificate"])
def test_handshake_message_split_across_records(modem, emulator, caplog, cut):
    """A ServerHello (at byte 20) or a Certificate (at byte 500) continued in the next record,
    legal in TLS 1.2: the reason says Mbed TLS 2.28 reassembles none, at both levels."""
    host, advance, port = modem

    def script(c):
        f = Flight(c)
        if cut == "server_hello":
            wire = record(CT_HANDSHAKE, f.sh[:20]) + record(CT_HANDSHAKE, f.sh[20:] + f.cert + f.done)
        else:
            wire = (record(CT_HANDSHAKE, f.sh) + record(CT_HANDSHAKE, f.cert[:500])
                    + record(CT_HANDSHAKE, f.cert[500:]) + record(CT_HANDSHAKE, f.done))
        c.sock.sendall(wire)
        hold(c)

    reason, _ = same_failure(host, caplog, emulator, script, 6)
    assert reason == SPLIT


def test_server_hello_version_outside_sslversion(modem, emulator, caplog):
    """sslversion 3 (TLS 1.2 only) and a ServerHello choosing TLS 1.0: the reason names the
    version the server chose, read from its ServerHello -- late at seclevel 0, as at 1."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="sslversion",1,3') == b"\r\nOK\r\n"

    def script(c):
        f = Flight(c, version=b"\x03\x01")
        c.sock.sendall(f.records())
        hold(c)

    reason, _ = same_failure(host, caplog, emulator, script, 7)
    assert reason == "server chose TLSv1.0, outside the configured sslversion (mbedtls -0x6E80)"


# == the server's end in the handshake ==================================================================
@pytest.mark.parametrize("how", ["fin_mid_flight", "rst_mid_flight", "fin_after_flight", "close_notify_fin"])
def test_server_end_in_the_first_flight(modem, emulator, caplog, how):
    """The server ends after 300 bytes of its first flight (FIN; RST), after all of it (FIN), or
    sends all of it, close_notify and FIN in one segment: the same 566 and reason at both
    levels; where the flight was whole the modem's ClientKeyExchange went out first."""
    host, advance, port = modem

    def script(c):
        f = Flight(c)
        wire = f.records()
        if how == "rst_mid_flight":
            c.sock.sendall(wire[:300])
            time.sleep(0.05)
            c.rst()
            return
        if how == "close_notify_fin":
            c.sock.sendall(wire + record(CT_ALERT, b"\x01\x00"))
        else:
            c.sock.sendall(wire[:300] if how == "fin_mid_flight" else wire)
        c.sock.shutdown(socket.SHUT_WR)
        hold(c)

    reason, conns = same_failure(host, caplog, emulator, script, 8)
    if how == "close_notify_fin":
        assert reason == "SSL - The peer notified us that the connection is going to be closed (mbedtls -0x7880)"
    else:
        assert reason == SERVER_CLOSED
    if how in ("fin_after_flight", "close_notify_fin"):
        for conn in conns:
            assert conn.after[:1] and conn.after[0][0] == CT_HANDSHAKE and conn.after[0][1][0] == 16, conn.after


# == handshakes that succeed ==============================================================================
def test_whole_handshake_one_byte_per_segment(modem, emulator):
    """Both server flights and the data behind the Finished sent one byte per TCP segment:
    the open succeeds at seclevel 0 and 1, the data reach the host once, the echo works."""
    host, advance, port = modem
    data = pattern(300, 3)

    def script(c):
        f = Flight(c)
        send_bytewise(c.sock, f.records())
        send_bytewise(c.sock, f.finish() + c.app(data))
        c.echo()

    with Server(emulator, script, script):
        for cid, seclevel in ((9, 0), (9, 1)):
            assert host.at(f'AT+QSSLCFG="seclevel",1,{seclevel}') == b"\r\nOK\r\n"
            forget_answers(host, cid)
            ssl_open(host, cid)
            assert open_answer(host, cid) == 0
            assert read_all(host, cid, len(data)) == data
            assert recv(host, cid) == b""
            assert host.send_data(cid, b"echo") == b"\r\nSEND OK\r\n"
            assert read_all(host, cid, 4) == b"echo"
            assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


@pytest.mark.parametrize("size", [1024, 100 * 1024], ids=["1k", "100k"])
def test_data_and_end_in_the_segment_of_the_finished(modem, emulator, size):
    """The server's CCS + Finished, application data, close_notify in one segment, then FIN
    (100 KiB: the receive carrying the last flight is past the 64 KiB that seclevel 0 puts
    aside).  At seclevel 0 and 1 alike: +QSSLOPEN 0, every byte once and in order, one
    "closed", AT+QSSLSTATE gone after the close, the id reusable."""
    host, advance, port = modem
    data = pattern(size, 11)

    def script(c):
        f = Flight(c)
        c.sock.sendall(f.records())
        c.sock.sendall(f.finish() + c.app(data) + c.tx.seal(CT_ALERT, b"\x01\x00"))
        c.sock.shutdown(socket.SHUT_WR)
        hold(c)

    cid = 10
    with Server(emulator, script, script) as server:
        for seclevel in (0, 1):
            assert host.at(f'AT+QSSLCFG="seclevel",1,{seclevel}') == b"\r\nOK\r\n"
            forget_answers(host, cid)
            mark = len(host.transcript)
            ssl_open(host, cid)
            assert open_answer(host, cid) == 0
            assert read_all(host, cid, size) == data, seclevel
            host.seen(b'+QSSLURC: "closed",%d\r\n' % cid, 10)
            assert recv(host, cid) == b""
            assert host.quiet_for(0.05) == b""
            seen = bytes(host.transcript[mark:])
            assert seen.count(b'+QSSLURC: "closed",%d' % cid) == 1 and seen.count(b"+QSSLOPEN:") == 1
            assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"
            wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        usable(host, cid)


# == reasons that name the wrong alert, or none (both levels) ========================================
# Was a bug, fixed: the reason named the LAST fatal alert the sniffer saw (TlsClientSession.
# _sniff_now overwrote _fatal_alert for each one); Mbed TLS stops at the first.
def test_two_fatal_alerts_in_one_segment_name_the_first(modem, emulator, caplog):
    """ServerHello, fatal handshake_failure, fatal protocol_version in one segment: Mbed TLS
    stops at the first alert; the reason must name it (at both levels)."""
    host, advance, port = modem

    def script(c):
        f = Flight(c)
        c.sock.sendall(record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE)
                       + record(CT_ALERT, b"\x02\x46"))
        hold(c)

    reason, _ = same_failure(host, caplog, emulator, script, 11)
    assert reason == HANDSHAKE_FAILURE


# Was a bug, fixed: HandshakeSniffer.feed() returned ([], []) on the junk, dropping the alert
# (and messages) parsed before it in the same call: the reason did not name the alert.
def test_fatal_alert_then_junk_in_one_segment_names_the_alert(modem, emulator, caplog):
    """ServerHello, fatal handshake_failure, then an HTTP error page in the same segment:
    Mbed TLS stops at the alert; the reason must name it (at both levels)."""
    host, advance, port = modem

    def script(c):
        f = Flight(c)
        c.sock.sendall(record(CT_HANDSHAKE, f.sh) + record(CT_ALERT, FATAL_HANDSHAKE_FAILURE)
                       + b"HTTP/1.1 400 Bad Request\r\n\r\n")
        hold(c)

    reason, _ = same_failure(host, caplog, emulator, script, 0)
    assert reason == HANDSHAKE_FAILURE
