"""Hostile servers, fifteenth round: what rounds 1-14 (test_adversarial_hostile_servers*.py) and
test_adversarial_tls_options.py do not do.

Peers: test_adversarial_hostile_servers_2's server (OpenSSL over memory BIOs) turned into a
TLS 1.0 / TLS 1.1 server with CBC suites, OpenSSL's CBC countermeasure ON (an empty
application record before every record of TLS 1.0: SSL_OP_DONT_INSERT_EMPTY_FRAGMENTS
cleared), its records cut into TCP segments as the test likes; raw-socket servers that answer
the ClientHello by hand (a ServerHello of an older version with a TLS 1.2-only suite, a
ServerHello echoing the offered session id followed by a full flight, a fatal alert);
`TlsServer` (Python ssl) choosing its certificate by SNI, with ALPN, with intermediates in
either order.  Covered (EC2x unless said):

* TLS 1.0 / 1.1 servers (sslversion pinned and 4): ~120 KB in writes of odd sizes, each
  behind OpenSSL's empty record, random TCP segments, close_notify + FIN: every byte once,
  read with AT+QSSLRECV of 1 / 7 / 1500, "closed" once after the data; the host's 1460-byte
  sends (Mbed TLS's 1/n-1 split) reach the server exact; the same in direct push (no empty
  push, each push framed), transparent mode, a full-duplex 1 MiB / 400 KB stream sealed in
  jobs (TLS 1.0 CBC draws no random: the worker seals it), and on the ML302 (buffer and
  connectmode 1);
* flow control (300 KB past ssl.recv_buffer) released by 300 pipelined one-byte reads;
  the "recv" URC after an exact read, never for empty records or warning alerts;
* a ServerHello choosing TLS 1.0 / 1.1 with a TLS 1.2-only suite: 566 once, the modem's
  fatal alert, no ClientKeyExchange (a legal TLS 1.0 suite: the ClientKeyExchange comes);
* a server echoing the cached session id then sending Certificate + ServerHelloDone:
  unexpected_message, 566 once, the session forgotten, a full handshake next;
* intermediates bottom-up / top-down / duplicated at seclevel 1 and 2, with and without
  ignoremulticertchainverify (top-down: 566, unknown_ca, as Mbed TLS);
* a server choosing its certificate by SNI (sni 1 opens; sni 0: the default certificate for
  another name, 566, bad_certificate; a context with sni 0 never resumes another context's
  session); a server refusing a ClientHello without SNI (fatal unrecognized_name): 566 once;
  the ML302 (SNI always sent) opens; an ALPN mismatch with a server that does not insist:
  opens, no protocol logged.

Failure reasons (all fixed; they were the round's bugs, in the log, none on the AT side): a
top-down chain's issuer, which the server did send, was said to be "not found among the
trusted or sent certificates" (now: sent before the certificate it signed, where Mbed TLS
does not look); a fatal unrecognized_name / no_application_protocol answering a ClientHello
that carried no SNI / no ALPN was explained as the server not knowing "the SNI name" / none
of "the offered" protocols (now: none was sent / offered).

Checked each time: exact bytes on the pty, one answer per open, one end report, no ERROR log
record or traceback (ec2x_strict / ml302_strict), AT answering afterwards.
"""
from __future__ import annotations

import os
import random
import re
import select
import socket
import ssl
import threading
import time
import warnings

import pytest

from tests.e2e import test_adversarial_hostile_servers_2 as h2
from tests.e2e import test_adversarial_hostile_servers_4 as h4
from tests.e2e import test_adversarial_hostile_servers_6 as h6
from tests.e2e import test_adversarial_hostile_servers_10 as h10
from tests.e2e.test_adversarial_hostile_servers_14 import read_pushed
from emulator.testing.peers import TlsServer
from tests.e2e.hostile_support import ScriptedServer, open_answer, recv
from tests.e2e.ssl_options_support import HOST, PORT, cfg, open_ssl, trust

Conn, pattern = h2.Conn, h2.pattern
NAME = h2.NAME
ssl_open, read_all, state, qigeterror = h2.ssl_open, h2.read_all, h2.state, h2.qigeterror
OK = b"\r\nOK\r\n"
DONT_INSERT_EMPTY_FRAGMENTS = 0x00000800
VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


@pytest.fixture
def ml(ml302_strict):
    return ml302_strict


class OldServer(h2.Server):
    """h2.Server speaking only `version` (TLS 1.0 or 1.1) with CBC suites; OpenSSL's empty
    fragment before each record (TLS 1.0's CBC countermeasure) switched on."""

    def __init__(self, script, emulator, version: str, name: str = NAME,
                 suites: str = "AES128-SHA:AES256-SHA:@SECLEVEL=0") -> None:
        super().__init__(script, emulator, name, suites=suites)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.ctx.minimum_version = VERSIONS[version]
            self.ctx.maximum_version = VERSIONS[version]
        self.ctx.options &= ~DONT_INSERT_EMPTY_FRAGMENTS
        assert not self.ctx.options & DONT_INSERT_EMPTY_FRAGMENTS


def write_chunks(c: Conn, data: bytes, rnd: random.Random) -> int:
    """data in OpenSSL writes of odd sizes (each its own record(s), behind an empty one in
    TLS 1.0), the wire cut into random TCP segments.  Returns the number of writes."""
    wire = bytearray()
    i = writes = 0
    while i < len(data):
        n = rnd.choice((1, 2, 3, 7, 100, 1499, 1500, 1501, 4000, 16384, 17000))
        piece = c.ossl_app(data[i:i + n])
        if c.tls.version() == "TLSv1":           # the premise: an empty record goes first
            recs, rest = h2.split_records(piece)
            assert len(recs) >= 2 and not rest, (n, len(recs))
        wire += piece
        i += n
        writes += 1
    j = 0
    while j < len(wire):
        k = rnd.choice((1, 5, 53, 1000, 4096, 30000))
        c.sock.sendall(bytes(wire[j:j + k]))
        j += k
        if rnd.random() < 0.05:
            time.sleep(0.002)
    return writes


def ossl_read(c: Conn, n: int, timeout: float = 10) -> bytes:
    """The client's application bytes through OpenSSL (the session stays OpenSSL's)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < n:
        assert time.monotonic() < deadline, f"server got only {len(got)} of {n}"
        try:
            got += c.tls.read(65536)
            continue
        except ssl.SSLWantReadError:
            pass
        c.feed()
    return bytes(got)


def close_notify(c: Conn) -> bytes:
    try:
        c.tls.unwrap()
    except (ssl.SSLWantReadError, ssl.SSLError):
        pass
    return c.out.read()


def wait_closed_seen(host, cid: int, timeout: float = 10) -> None:
    host.seen(b'+QSSLURC: "closed",%d\r\n' % cid, timeout)


# == TLS 1.0 / 1.1 servers with OpenSSL's empty fragments ==========================================
@pytest.mark.parametrize("version, sslversion", [("TLSv1", 1), ("TLSv1", 4), ("TLSv1.1", 2),
                                                 ("TLSv1.1", 4)])
def test_old_version_server_with_empty_fragments_buffer_mode(modem, emulator, version, sslversion):
    """A TLS 1.0 / 1.1 server (AES128-SHA), OpenSSL's CBC countermeasure on: ~120 KB in writes
    of odd sizes (TLS 1.0: each behind an empty record), random TCP segments; the host reads
    with 1 / 7 / 1500 and sends three 1460-byte chunks (TLS 1.0: Mbed TLS's 1/n-1 split)
    which the server echoes in reverse; then close_notify + FIN.  Every byte once, in order;
    "closed" once, after the data; state 4."""
    host, advance, port = modem
    rnd = random.Random(f"{version}{sslversion}")
    data = pattern(120_000, 15)
    up = [bytes(rnd.getrandbits(8) for _ in range(1460)) for _ in range(3)]
    info = {}

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        info["version"], info["cipher"] = c.tls.version(), c.tls.cipher()[0]
        info["writes"] = write_chunks(c, data, rnd)
        got = ossl_read(c, 3 * 1460)
        info["up"] = got
        c.sock.sendall(c.ossl_app(got[::-1]))
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, version) as server:
        assert host.at(f'AT+QSSLCFG="sslversion",1,{sslversion}') == OK
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        got = read_all(host, 1, len(data), sizes=(1, 7, 1500, 1500, 1500, 1500), timeout=30)
        assert got == data
        for chunk in up:
            assert host.send_data(1, chunk) == b"\r\nSEND OK\r\n"
        back = read_all(host, 1, 3 * 1460, timeout=15)
        assert info["up"] == b"".join(up)
        assert back == b"".join(up)[::-1]
        wait_closed_seen(host, 1)
        assert recv(host, 1) == b""
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        assert info["version"] == version, info
        assert state(host, 1) == 4
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert not server.failures


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_old_version_server_with_empty_fragments_push_mode(modem, emulator, version):
    """Direct push, sslversion 4: 600 one-byte writes (TLS 1.0: 1200 records, every other one
    empty), then 60 KB in odd writes, then close_notify + FIN, all in random segments.  Each
    push framed `+QSSLURC: "recv",1,<1..1500>` CR LF data CR LF, never a push of 0 bytes;
    every byte once; "closed" once, after the last push; nothing after it."""
    host, advance, port = modem
    rnd = random.Random(version)
    small, big = pattern(600, 3), pattern(60_000, 4)

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        wire = b"".join(c.ossl_app(small[i:i + 1]) for i in range(len(small)))
        for j in range(0, len(wire), 37):
            c.sock.sendall(wire[j:j + 37])
        write_chunks(c, big, rnd)
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, version) as server:
        ssl_open(host, 1, mode=1)
        assert open_answer(host, 1) == 0
        assert read_pushed(host, 1, len(small) + len(big), timeout=20) == small + big
        tail = host.read_until(b'\r\n+QSSLURC: "closed",1\r\n', timeout=10)
        assert tail == b'\r\n+QSSLURC: "closed",1\r\n', tail[:200]
        assert host.at("AT") == OK
        assert b'"recv",1,0' not in host.transcript
        assert host.transcript.count(b'"closed",1') == 1
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert not server.failures


def ml302_recv(host, ssid: int, n: int) -> bytes:
    """h4.ml302_recv, the "recv" URC of a new arrival in front of the answer allowed."""
    answer = host.at(f"AT+QSSLRECV=1,{ssid},{n}")
    answer = re.sub(rb'^\r\n\+QSSLURC: "recv",1,%d\r\n' % ssid, b"", answer)
    if answer == OK:
        return b""
    m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
    assert m, answer[:200]
    size = int(m.group(1))
    assert 0 < size <= n and answer[m.end() + size:] == b"\r\n\r\nOK\r\n", answer[-40:]
    return answer[m.end():m.end() + size]


def test_ml302_tls10_server_with_empty_fragments(ml, emulator):
    """ML302, sslversion 4 (its default) against a TLS 1.0-only AES128-SHA server with the
    empty-record countermeasure: 40 KB in odd writes, read with AT+QSSLRECV=1,<ssid>,<n> of
    1 / 13 / 1500; the host's 1000-byte send reaches the server exact; close_notify + FIN:
    the data first, then the close URC once."""
    host, advance, port = ml
    rnd = random.Random("ml302")
    data = pattern(40_000, 8)
    up = bytes(rnd.choice(range(0x20, 0x7F)) for _ in range(1000))   # no Ctrl+Z / ESC
    info = {}

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        info["version"] = c.tls.version()
        write_chunks(c, data, rnd)
        info["up"] = ossl_read(c, len(up))
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, "TLSv1") as server:
        assert host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,0') == OK
        host.seen(b"+QSSLOPEN: 3,0\r\n")
        host.seen(b'+QSSLURC: "recv",1,3\r\n')
        got = bytearray()
        sizes = (1, 13, 1500, 1500)
        i = 0
        deadline = time.monotonic() + 30
        while len(got) < len(data):
            assert time.monotonic() < deadline, len(got)
            chunk = ml302_recv(host, 3, sizes[i % len(sizes)])
            i += 1
            if not chunk:
                time.sleep(0.01)
            got += chunk
        assert bytes(got) == data
        assert host.send_data(3, up, fixed=False) == b"\r\nSEND OK\r\n"
        server_deadline = time.monotonic() + 10
        while "up" not in info:
            assert time.monotonic() < server_deadline
            time.sleep(0.01)
        assert info["up"] == up
        assert info["version"] == "TLSv1"
        host.seen(re.compile(rb'\+QSSLURC: "close",3\r\n'), 10)
        assert ml302_recv(host, 3, 1500) == b""
        assert host.transcript.count(b'"close",3') == 1
        h4.ml302_close(host, 3)
        assert not server.failures


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_old_version_server_with_empty_fragments_transparent(modem, emulator, version):
    """Access mode 2, sslversion 4: the server writes 80 KB in odd writes (TLS 1.0: each behind
    an empty record) in random segments; the host then streams 30 KB online (no '+', 4 KiB
    writes; TLS 1.0: Mbed TLS's 1/n-1 split), which the server reads exact; then the server's
    close_notify + FIN.  The host sees `CONNECT`, exactly the server's bytes, `NO CARRIER`,
    nothing else; state 4."""
    host, advance, port = modem
    rnd = random.Random("transparent" + version)
    down = pattern(80_000, 5)
    up = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789\r\n") for _ in range(30_000))
    info = {}
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        go.wait(10)
        write_chunks(c, down, rnd)
        info["up"] = ossl_read(c, len(up), timeout=15)
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, version) as server:
        host.write(f'AT+QSSLOPEN=1,1,8,"{NAME}",443,2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
        go.set()
        assert host.read_exactly(len(down), timeout=15) == down
        for i in range(0, len(up), 4096):
            host.write(up[i:i + 4096])
        assert host.read_until(b"NO CARRIER\r\n", timeout=15) == b"\r\nNO CARRIER\r\n"
        assert info["up"] == up
        assert host.quiet_for(0.2) == b""
        assert state(host, 8) == 4
        assert host.at("AT+QSSLCLOSE=8") == OK
        assert not server.failures


@pytest.mark.parametrize("suite", ["AES128-SHA", "AES256-SHA"])
def test_tls10_full_duplex_stream_with_sealing_jobs(modem, emulator, suite, monkeypatch):
    """Access mode 2 against the TLS 1.0-only CBC server: TLS 1.0 CBC records draw no random
    bytes, so the modem seals the host's big online writes in jobs on its worker thread
    (tls_engine/session.py _records_draw_no_random) -- with TLS 1.0's chained IV and Mbed TLS's
    1/n-1 split.  The host writes 1 MiB in 64 KiB writes while the server, at the same time,
    sends 400 KB in odd writes (each behind an empty record) and reads.  Every byte reaches
    each side once and in order (the server's OpenSSL checks each record's MAC); then the
    server's close_notify: NO CARRIER."""
    import tls_engine.session as session_mod
    jobs = []
    real_job = session_mod.SealJob

    def counting_job(*args, **kwargs):
        jobs.append(1)
        return real_job(*args, **kwargs)
    monkeypatch.setattr(session_mod, "SealJob", counting_job)
    host, advance, port = modem
    rnd = random.Random("duplex" + suite)
    down = pattern(400_000, 11)
    up = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(1 << 20))
    info = {}
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        info["cipher"] = c.tls.cipher()[0]
        go.wait(10)
        c.sock.settimeout(30)
        got = bytearray()
        wire = bytearray()
        i = 0
        while i < len(down):
            n = rnd.choice((1, 7, 1500, 4000, 16384, 20000))
            wire += c.ossl_app(down[i:i + n])
            i += n
        sent = 0
        while len(got) < len(up) or sent < len(wire):
            want_w = [c.sock] if sent < len(wire) else []
            r, w, _ = select.select([c.sock], want_w, [], 20)
            assert r or w, f"stuck: got {len(got)}, sent {sent}"
            if w:
                sent += c.sock.send(bytes(wire[sent:sent + 8192]))
            if r:
                data = c.sock.recv(65536)
                assert data, f"client ended after {len(got)}"
                c.inc.write(data)
                while True:
                    try:
                        got += c.tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
        info["up"] = bytes(got)
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, "TLSv1", suites=suite + ":@SECLEVEL=0") as server:
        host.write(f'AT+QSSLOPEN=1,1,8,"{NAME}",443,2\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
        go.set()
        for i in range(0, len(up), 65536):
            host.write(up[i:i + 65536])
            host._fill()                       # (the host reads as it writes)
        assert host.read_exactly(len(down), timeout=30) == down
        assert host.read_until(b"NO CARRIER\r\n", timeout=30) == b"\r\nNO CARRIER\r\n"
        assert info["up"] == up
        assert info["cipher"] == suite
        assert len(jobs) >= 8, "the premise: the host's stream was sealed in jobs"
        assert state(host, 8) == 4
        assert host.at("AT+QSSLCLOSE=8") == OK
        assert not server.failures


def test_ml302_transparent_tls10_server_with_empty_fragments(ml, emulator):
    """ML302 connectmode 1 against the TLS 1.0-only server (empty record before each record):
    50 KB down in odd writes, 20 KB up online (1/n-1 split), then close_notify + FIN.  CONNECT,
    exactly the server's bytes, the server gets the host's bytes exact, NO CARRIER and nothing
    else; REMOTE CLOSING; AT+QSSLCLOSE answers."""
    host, advance, port = ml
    rnd = random.Random("ml302 transparent")
    down = pattern(50_000, 6)
    up = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(20_000))
    info = {}
    go = threading.Event()

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        go.wait(10)
        write_chunks(c, down, rnd)
        info["up"] = ossl_read(c, len(up), timeout=15)
        c.sock.sendall(close_notify(c))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    with OldServer(script, emulator, "TLSv1") as server:
        host.write(f'AT+QSSLOPEN=4,0,"{NAME}",443,1\r'.encode())
        assert host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n")) == b"\r\nCONNECT\r\n"
        go.set()
        assert host.read_exactly(len(down), timeout=15) == down
        for i in range(0, len(up), 2000):
            host.write(up[i:i + 2000])
        assert host.read_until(b"NO CARRIER\r\n", timeout=15) == b"\r\nNO CARRIER\r\n"
        assert info["up"] == up
        assert host.quiet_for(0.2) == b""
        assert h10.ml_state(host, 4) == "REMOTE CLOSING"
        h10.ml_close(host, 4)
        assert not server.failures
    assert host.at("AT") == OK


# == the "recv" URC after an exact read, an empty record, the end ==================================
def test_recv_urc_after_exact_reads_empty_records_and_the_end(modem, emulator):
    """docs/behaviour.md (Receiving): "recv" is reported when data arrive into an empty buffer,
    also when the host's last read took exactly what was there.  The server (records sealed by
    the test) sends 100 bytes; the host reads exactly 100 (no +QSSLRECV: 0); an EMPTY record
    then arrives: no URC (nothing arrived); one byte: one URC; the host reads 1; two empty
    records and a warning alert: no URC; 300 bytes then close_notify in one segment: one
    "recv", then "closed"; the host reads 7 + the rest after the end; +QSSLRECV: 0."""
    host, advance, port = modem
    steps = [threading.Event() for _ in range(4)]

    def script(c: Conn) -> None:
        c.handshake()
        c.sock.sendall(c.app(pattern(100, 1)))
        steps[0].wait(10)
        c.sock.sendall(c.seal(h2.CT_APP, b""))
        time.sleep(0.3)
        c.sock.sendall(c.app(b"Z"))
        steps[1].wait(10)
        c.sock.sendall(c.seal(h2.CT_APP, b"") + c.seal(h2.CT_APP, b"") + c.alert(1, 90))
        steps[2].wait(10)
        c.sock.sendall(c.app(pattern(300, 2)) + c.alert(1, 0))
        c.server.stall()

    urc = b'+QSSLURC: "recv",1\r\n'
    with h2.Server(script, emulator) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(urc)
        deadline = time.monotonic() + 5
        while h4.inbox_len(emulator, port, 1) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert recv(host, 1, 100) == pattern(100, 1)
        steps[0].set()
        host.seen(urc)                         # the one byte after the empty record
        assert recv(host, 1, 100) == b"Z"
        assert host.transcript.count(urc) == 2
        steps[1].set()
        assert host.quiet_for(0.5) == b""      # empty records and a warning: nothing
        steps[2].set()
        host.seen(urc)
        wait_closed_seen(host, 1)
        assert host.transcript.count(urc) == 3
        assert recv(host, 1, 7) == pattern(300, 2)[:7]
        assert recv(host, 1, 1500) == pattern(300, 2)[7:]
        assert recv(host, 1, 1500) == b""
        assert host.transcript.count(urc) == 3
        assert host.transcript.count(b'"closed",1') == 1
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert not server.failures


# == an older version with a suite that version does not have ======================================
class RawHelloServer(ScriptedServer):
    """Reads the ClientHello, answers ServerHello(version, suite) + Certificate +
    ServerHelloDone (h6's RSA identity, records of `version`), then records what the client
    sends next: (content type, first payload bytes) in .answers."""

    close_when_done = True

    def __init__(self, emulator, version: int, suite: int, name: str = "oldhello.example",
                 echo_id: bool = False) -> None:
        self.version, self.suite, self.echo_id = version, suite, echo_id
        self.answers: list[tuple[int, bytes]] = []
        self.hellos: list = []
        super().__init__(self._script, emulator, name)

    def make_conn(self, sock):
        sock.settimeout(10)
        return type("C", (), {"sock": sock})()

    def _records(self, sock, buf: bytearray):
        while True:
            while len(buf) >= 5 and len(buf) >= 5 + int.from_bytes(buf[3:5], "big"):
                n = int.from_bytes(buf[3:5], "big")
                ct, payload = buf[0], bytes(buf[5:5 + n])
                del buf[:5 + n]
                yield ct, payload
            data = sock.recv(65536)
            if not data:
                return
            buf += data

    def _script(self, conn) -> None:
        sock = conn.sock
        recs = self._records(sock, bytearray())
        ct, body = next(recs)
        assert ct == 22 and body[0] == 1
        hello = h6.ClientHello(body[4:])
        self.hellos.append(hello)
        v = self.version.to_bytes(2, "big")
        sid = hello.session_id if self.echo_id else os.urandom(32)

        def rec(kind: int, payload: bytes) -> bytes:
            return bytes([kind]) + v + len(payload).to_bytes(2, "big") + payload

        cert_der, _key = h6.identity()
        exts = h6.ext(h6.EXT_RENEG, b"\x00")
        sh = h6.hs(2, v + os.urandom(32) + bytes([len(sid)]) + sid + self.suite.to_bytes(2, "big")
                   + b"\x00" + len(exts).to_bytes(2, "big") + exts)
        cert = h6.hs(11, (len(cert_der) + 3).to_bytes(3, "big") + len(cert_der).to_bytes(3, "big")
                     + cert_der)
        sock.sendall(rec(22, sh) + rec(22, cert) + rec(22, h6.hs(14, b"")))
        for ct, payload in recs:
            self.answers.append((ct, payload[:2]))
            if ct == 21 or len(self.answers) >= 3:
                break
        self.release.wait(10)


@pytest.mark.parametrize("version, suite, ok", [
    (0x0302, 0x009C, False),      # TLS 1.1 + TLS_RSA_WITH_AES_128_GCM_SHA256 (TLS 1.2 only)
    (0x0301, 0x003C, False),      # TLS 1.0 + TLS_RSA_WITH_AES_128_CBC_SHA256 (TLS 1.2 only)
    (0x0301, 0x002F, True),       # TLS 1.0 + TLS_RSA_WITH_AES_128_CBC_SHA: legal (control)
], ids=["tls11_gcm", "tls10_sha256", "tls10_sha_control"])
def test_server_hello_version_without_the_chosen_suite(modem, emulator, caplog, version, suite, ok):
    """sslversion 4 (TLS 1.0-1.2 offered): a ServerHello choosing an older version together
    with a suite defined only for TLS 1.2 (RFC 5246 A.5 / RFC 5288: "MUST NOT be negotiated
    in older versions").  Mbed TLS refuses it at the ServerHello: its fatal alert, no
    ClientKeyExchange, "+QSSLOPEN: 2,566" once, QIGETERROR 566, the id reusable.  The same
    version with a suite it has (control): the modem answers with its ClientKeyExchange."""
    host, advance, port = modem
    with RawHelloServer(emulator, version, suite) as server:
        assert host.at('AT+QSSLOPEN=1,1,2,"oldhello.example",443,0') == OK
        if ok:
            deadline = time.monotonic() + 10
            while not server.answers:
                assert time.monotonic() < deadline, "no answer to the server's flight"
                time.sleep(0.01)
            assert server.answers[0] == (22, b"\x10\x00"), server.answers
            assert host.at("AT+QSSLCLOSE=2").endswith(OK)
            assert host.quiet_for(0.2) == b""
            assert b"+QSSLOPEN: 2," not in host.transcript
            return
        assert open_answer(host, 2) == 566
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b"+QSSLOPEN: 2,") == 1
        assert qigeterror(host) == 566
        assert server.answers and server.answers[0][0] == 21, server.answers
        assert server.answers[0][1][:1] == b"\x02", server.answers
        assert not [a for a in server.answers if a[0] == 22], server.answers
        assert "SSL open 2" in h2.log_text(caplog)
        assert state(host, 2) is None


def test_server_echoing_the_session_id_then_a_full_handshake(modem, emulator, caplog):
    """Session cache on: a full handshake with h6's server (session ids) is cached.  The next
    server (a load balancer's other node) echoes the offered session id -- a resumption, RFC
    5246 7.4.1.3 -- but goes on with Certificate + ServerHelloDone as in a full handshake.
    Mbed TLS takes the echo for a resumption and the Certificate for an unexpected message:
    its fatal alert, "+QSSLOPEN: 1,566" once, QIGETERROR 566; the session is forgotten, so the
    next open (to a fresh server) offers no session id and opens with a full handshake."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    with h6.HandServer(emulator) as first:
        h6.ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        h6.round_trip_and_close(host, 1, b"one")
    first_id = first.conns[0].transcript[1][39:71]
    assert len(first_id) == 32
    with RawHelloServer(emulator, 0x0303, h6.RSA_GCM, name=h6.NAME, echo_id=True) as liar:
        mark = len(host.transcript)
        h6.ssl_open(host, 1)
        assert open_answer(host, 1) == 566
        assert liar.hellos[0].session_id == first_id, "the premise: the cached id was offered"
        assert host.quiet_for(0.1) == b""
        assert h6.open_count(host, 1, mark) == 1
        assert qigeterror(host) == 566
        assert liar.answers and liar.answers[0][0] == 21, liar.answers
        assert liar.answers[0][1] == b"\x02\x0a", liar.answers      # fatal unexpected_message
    with h6.HandServer(emulator) as third:
        mark = len(host.transcript)
        h6.ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        assert third.hellos[0].session_id != first_id
        assert not third.conns[0].resumed
        h6.round_trip_and_close(host, 1, b"three")
        assert h6.open_count(host, 1, mark) == 1


# == intermediates in the wrong order =================================================================
@pytest.fixture(scope="module")
def two_level():
    from emulator.testing.peers import make_cert
    root = make_cert("H15 Root", None, ca=True)
    top = make_cert("H15 Top Inter", root, ca=True)
    bottom = make_cert("H15 Bottom Inter", top, ca=True)
    leaf = make_cert("h15 leaf", bottom, ca=False, names=(HOST,))
    return {"root": root, "top": top, "bottom": bottom, "leaf": leaf}


@pytest.mark.parametrize("order, relax, expect", [
    ("bottom_up", 0, 0),            # leaf, bottom, top: RFC 5246's order
    ("top_down", 0, 566),           # leaf, top, bottom: Mbed TLS looks for an issuer only
                                    # among the certificates sent AFTER a certificate
    ("top_down", 1, 0),             # ignoremulticertchainverify 1: only the leaf's link
    ("bottom_twice", 0, 0),         # leaf, bottom, bottom, top: a duplicate on the way
], ids=["bottom_up", "top_down", "top_down_relaxed", "duplicate"])
@pytest.mark.parametrize("seclevel", [1, 2])
def test_intermediates_order_at_seclevel_1_and_2(modem, emulator, two_level, caplog, order, relax,
                                                 expect, seclevel):
    """root -> top -> bottom -> leaf, only the root in cacert.  docs/behaviour.md ("Certificate
    checks"): a certificate's issuer is looked for among the trusted ones, then among those
    the server sent after it -- intermediates sent top-down fail (566, the modem's unknown_ca
    alert at the server) as on a module built on Mbed TLS; bottom-up, or with a duplicate,
    opens; ignoremulticertchainverify 1 verifies the leaf's own link only.  seclevel 2 with no
    client pair set behaves as 1 (the server asks for no certificate)."""
    host, advance, port = modem
    c = two_level
    chain = {"bottom_up": (c["bottom"], c["top"]), "top_down": (c["top"], c["bottom"]),
             "bottom_twice": (c["bottom"], c["bottom"], c["top"])}[order]
    from emulator.testing.peers import ServerIdentity
    with TlsServer(ServerIdentity(c["leaf"], *chain)) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        trust(host, 0, c["root"].cert_pem, name="UFS:h15root.pem", seclevel=seclevel)
        cfg(host, "ignoremulticertchainverify", 0, relax)
        assert open_ssl(host, 0) == expect
        conn = server.wait_handshake()
        assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
        if expect == 0:
            assert conn.handshake_done
            assert host.send_data(0, b"chain") == b"\r\nSEND OK\r\n"
            assert server.wait_received(5) == b"chain"
            assert host.at("AT+QSSLCLOSE=0").endswith(OK)
            return
        assert not conn.handshake_done
        assert "UNKNOWN_CA" in (conn.handshake_error or "").upper(), conn.handshake_error
        assert qigeterror(host) == 566
        assert state(host, 0) is None
    assert "SSL open 0" in h2.log_text(caplog)


def failure_reason(caplog, cid: int) -> str:
    lines = [r.getMessage() for r in caplog.records if f"SSL open {cid} " in r.getMessage()
             and "failed" in r.getMessage()]
    assert len(lines) == 1, lines
    return lines[0]


def test_top_down_chain_reason_does_not_deny_what_the_server_sent(modem, emulator, two_level, caplog):
    """docs/behaviour.md (SSL sockets): each failure is logged "with a reason a person can act
    on".  Top-down intermediates (leaf, top, bottom) fail as in Mbed TLS (566, above); the
    issuer of the bottom intermediate (top) WAS sent -- before it, where Mbed TLS does not
    look.  A reason saying it was not among the sent certificates sends the person to
    add a certificate the server already sends; it must not deny it (and should say the
    order is the fault)."""
    host, advance, port = modem
    c = two_level
    from emulator.testing.peers import ServerIdentity
    with TlsServer(ServerIdentity(c["leaf"], c["top"], c["bottom"])) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        trust(host, 0, c["root"].cert_pem, name="UFS:h15root.pem")
        assert open_ssl(host, 0) == 566
        server.wait_handshake()
    reason = failure_reason(caplog, 0)
    assert "H15 Top Inter" in reason, reason
    assert "not found among the trusted or sent certificates" not in reason, reason


# == a server that chooses its certificate by SNI ==================================================
def sni_server(pki, *, refuse_unknown: bool) -> TlsServer:
    """TlsServer whose default certificate is for another name (default.example, same CA); a
    ClientHello naming HOST gets pki.server (valid for HOST).  refuse_unknown: a ClientHello
    without that name gets a fatal unrecognized_name(112) alert instead."""
    default = pki.issue("sni-default", "default.example")
    named = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    named.maximum_version = ssl.TLSVersion.TLSv1_2
    named.set_ciphers("DEFAULT")            # (as TlsServer's: RSA key exchange for the ML302)
    pki.server.configure_cert(named)

    def hook(ctx: ssl.SSLContext) -> None:
        seen = ctx.sni_callback

        def pick(obj, server_name, c):
            seen(obj, server_name, c)
            if server_name == HOST:
                obj.context = named
                return None
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if refuse_unknown else None
        ctx.sni_callback = pick

    return TlsServer(default, max_version="TLSv1.2", context_hook=hook)


@pytest.mark.parametrize("sni", [1, 0])
def test_sni_dependent_certificate_at_seclevel_1(modem, emulator, pki, caplog, sni):
    """seclevel 1 (the CA configured): a server that serves the dialled name's certificate
    only to a ClientHello naming it.  sni 1: opens, data both ways.  sni 0 (the default):
    the default certificate (default.example) fails the name check -- "+QSSLOPEN: 0,566"
    once, QIGETERROR 566, the server sees the modem's bad_certificate alert; the id opens
    again once sni is 1."""
    host, advance, port = modem
    with sni_server(pki, refuse_unknown=False) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        trust(host, 0, pki.ca.cert_pem, name="UFS:sni_ca.pem")
        cfg(host, "sni", 0, sni)
        answer = open_ssl(host, 0)
        conn = server.wait_handshake()
        if sni:
            assert answer == 0
            assert conn.sni == HOST and conn.handshake_done
            assert host.send_data(0, b"ping") == b"\r\nSEND OK\r\n"
            assert server.wait_received(4) == b"ping"
            assert host.at("AT+QSSLCLOSE=0").endswith(OK)
            return
        assert answer == 566
        assert conn.sni is None and not conn.handshake_done
        assert "BAD_CERTIFICATE" in (conn.handshake_error or "").upper(), conn.handshake_error
        assert qigeterror(host) == 566
        assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
        assert state(host, 0) is None
        cfg(host, "sni", 0, 1)
        assert open_ssl(host, 0) == 0
        assert server.wait_handshake(1).sni == HOST
        assert host.at("AT+QSSLCLOSE=0").endswith(OK)
    assert "default.example" in h2.log_text(caplog) or "name" in h2.log_text(caplog)


def test_sni_session_of_one_context_never_serves_another(modem, emulator, pki):
    """Two SSL contexts, both seclevel 1 with the CA and session_cache 1: context 2 with sni 1,
    context 3 with sni 0 (the default), same host.  Context 2 opens (verified, cached); then
    context 3's open must not resume context 2's session (a resumed session is not verified
    again): its ClientHello offers none, the default certificate fails the name check, 566.
    Context 2 then resumes its own."""
    host, advance, port = modem
    with sni_server(pki, refuse_unknown=False) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        for ctx in (2, 3):
            trust(host, ctx, pki.ca.cert_pem, name="sni_ca.pem", session_cache=False)
        cfg(host, "sni", 2, 1)
        assert host.at(f'AT+QSSLOPEN=1,2,4,"{HOST}",{PORT},0') == OK
        assert open_answer(host, 4) == 0
        assert host.at("AT+QSSLCLOSE=4") == OK
        assert host.at(f'AT+QSSLOPEN=1,3,5,"{HOST}",{PORT},0') == OK
        assert open_answer(host, 5) == 566
        second = server.wait_handshake(1)
        assert second.client_hello is not None
        assert not second.session_reused and not second.handshake_done
        assert host.at(f'AT+QSSLOPEN=1,2,4,"{HOST}",{PORT},0') == OK
        host.seen(b"+QSSLOPEN: 4,0\r\n")
        third = server.wait_handshake(2)
        assert third.handshake_done and third.session_reused
        assert host.at("AT+QSSLCLOSE=4") == OK


def test_server_refusing_a_hello_without_sni_with_unrecognized_name(modem, emulator, pki, caplog):
    """A server that answers a ClientHello without server_name with a FATAL unrecognized_name
    (112) alert (a strict SNI-only front end).  seclevel 0, sni 0: "+QSSLOPEN: 0,566" once, at
    once (no negotiatetime wait), QIGETERROR 566, the log naming the alert; no ClientKeyExchange
    left the modem; with sni 1 the same server opens."""
    host, advance, port = modem
    with sni_server(pki, refuse_unknown=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert open_ssl(host, 0, timeout=5) == 566
        conn = server.wait_handshake()
        assert not conn.handshake_done
        assert qigeterror(host) == 566
        assert host.transcript.count(b"+QSSLOPEN: 0,") == 1
        reason = failure_reason(caplog, 0)
        assert "unrecognized_name" in reason, reason
        cfg(host, "sni", 0, 1)
        assert open_ssl(host, 0) == 0
        assert server.wait_handshake(1).handshake_done
        assert host.at("AT+QSSLCLOSE=0").endswith(OK)
        assert host.at("AT") == OK


# == flow control released by one-byte reads =========================================================
def read_pipelined_ones(host, cid: int, count: int, timeout: float = 20) -> bytes:
    """count AT+QSSLRECV=<cid>,1 lines written at once; each answer parsed in turn (no URC
    may come in between: the buffer is never empty here)."""
    host.write(f"AT+QSSLRECV={cid},1\r" * count)
    head = b"\r\n+QSSLRECV: 1\r\n"
    got = bytearray()
    for _ in range(count):
        assert host.read_exactly(len(head), timeout) == head
        got += host.read_exactly(1, timeout)
        assert host.read_exactly(8, timeout) == b"\r\n\r\nOK\r\n"
    return bytes(got)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1"])
def test_flow_control_released_by_one_byte_reads(modem, emulator, version):
    """The server writes 300 KB at once (full records; TLS 1.0: each behind an empty record)
    and a close_notify + FIN behind them while the host reads nothing: past ssl.recv_buffer the
    socket stops reading.  The host then writes 300 AT+QSSLRECV=1,1 lines in one go (each
    answer one byte, in order), then reads the rest with 1500: every byte once, no second
    "recv" URC while bytes wait, "closed" once, after the last byte."""
    host, advance, port = modem
    data = pattern(300_000, 21)

    def script(c: Conn) -> None:
        c.handshake(seal=False)
        wire = bytearray()
        for i in range(0, len(data), 16384):
            wire += c.ossl_app(data[i:i + 16384])
        wire += close_notify(c)
        c.sock.sendall(bytes(wire))
        c.sock.shutdown(socket.SHUT_WR)
        c.server.stall()

    make = (lambda s, e: OldServer(s, e, "TLSv1")) if version == "TLSv1" else (
        lambda s, e: h2.Server(s, e, suites="AES128-SHA"))
    with make(script, emulator) as server:
        ssl_open(host, 1)
        assert open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "recv",1\r\n')
        deadline = time.monotonic() + 10
        while h4.inbox_len(emulator, port, 1) < 65536:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        held = h4.inbox_len(emulator, port, 1)
        assert held < len(data), "the premise: flow control holds some back"
        first = read_pipelined_ones(host, 1, 300)
        assert first == data[:300]
        rest = read_all(host, 1, len(data) - 300, timeout=30)
        assert first + rest == data
        wait_closed_seen(host, 1)
        assert recv(host, 1) == b""
        assert host.transcript.count(b'+QSSLURC: "recv",1\r\n') == 1
        assert host.transcript.count(b'+QSSLURC: "closed",1\r\n') == 1
        assert host.at("AT+QSSLCLOSE=1") == OK
        assert not server.failures


def test_unrecognized_name_without_sni_reason_says_no_name_was_sent(modem, emulator, pki, caplog):
    """docs/behaviour.md: a failure's reason is one "a person can act on".  sni 0 (the default)
    and a server that requires SNI: the fix is AT+QSSLCFG="sni",<ctx>,1.  The reason claims
    the server did not know "the SNI name", as if one had been sent (with sni 1 and a name
    the server does not serve that text is right); here it should say none was sent / sni
    is off."""
    host, advance, port = modem
    with sni_server(pki, refuse_unknown=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert open_ssl(host, 0, timeout=5) == 566
        server.wait_handshake()
    reason = failure_reason(caplog, 0)
    assert "unrecognized_name" in reason, reason
    assert re.search(r"no SNI|without SNI|no server.name|sni (is )?(0|off)|SNI (is )?(off|disabled)",
                     reason, re.I), reason


def test_ml302_sni_dependent_certificate_at_seclevel_1(ml, emulator, pki):
    """ML302 (docs/behaviour.md: SNI is always sent, as firmware built on Mbed TLS sets the
    host name): seclevel 1 with the CA in slot 0, the SNI-choosing server: the dialled name's
    certificate comes, "+QSSLOPEN: 0,0", data reach the server; the server saw the name."""
    from tests.e2e.test_adversarial_cert_material import secwrite
    host, advance, port = ml
    secwrite(host, 0, pki.ca.cert_pem)
    assert host.at('AT+QSSLCFG="seclevel",0,1') == OK
    with sni_server(pki, refuse_unknown=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",{PORT},0') == OK
        host.seen(b"+QSSLOPEN: 0,0\r\n")
        conn = server.wait_handshake()
        assert conn.sni == HOST and conn.handshake_done
        assert host.send_data(0, b"ml302 sni", fixed=False) == b"\r\nSEND OK\r\n"
        assert server.wait_received(9) == b"ml302 sni"
        host.seen(b'+QSSLURC: "recv",1,0\r\n')           # (the server's echo)
        assert host.at("AT+QSSLCLOSE=0") == OK
        assert host.read_until(b"\r\n0,CLOSE OK\r\n", timeout=5) == b"\r\n0,CLOSE OK\r\n"
    assert host.at("AT") == OK


@pytest.mark.parametrize("server_alpn, expect", [(["h2"], None), (["h2", "mqtt"], "mqtt")],
                         ids=["mismatch", "match"])
def test_alpn_mismatch_with_a_server_that_does_not_insist(modem, emulator, pki, caplog,
                                                          server_alpn, expect):
    """alpn "mqtt,x-iot"; an OpenSSL server speaking only h2 answers without the extension (RFC
    7301 3.2 leaves it to the server): Mbed TLS does not insist, the open succeeds (0) and data
    flow; the connected log line names no protocol.  A server that has mqtt picks it and the
    log names it."""
    host, advance, port = modem
    with TlsServer(pki.server, alpn=server_alpn, max_version="TLSv1.2") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        cfg(host, "alpn", 0, '"mqtt,x-iot"')
        assert open_ssl(host, 0) == 0
        conn = server.wait_handshake()
        assert conn.client_hello is not None
        assert conn.alpn_selected == expect
        assert host.send_data(0, b"alpn") == b"\r\nSEND OK\r\n"
        assert server.wait_received(4) == b"alpn"
        assert host.at("AT+QSSLCLOSE=0").endswith(OK)
    connected = [r.getMessage() for r in caplog.records if "SSL socket 0 connected" in r.getMessage()]
    assert len(connected) == 1, connected
    assert ("ALPN mqtt" in connected[0]) == (expect == "mqtt"), connected
    assert "ALPN h2" not in connected[0], connected


class HelloAlertServer(ScriptedServer):
    """Reads the ClientHello (kept in .hellos) and answers one fatal alert in clear."""

    close_when_done = True

    def __init__(self, emulator, description: int, name: str) -> None:
        self.description = description
        self.hellos: list = []
        super().__init__(self._script, emulator, name)

    def make_conn(self, sock):
        sock.settimeout(10)
        return type("C", (), {"sock": sock})()

    def _script(self, conn) -> None:
        buf = bytearray()
        while len(buf) < 5 or len(buf) < 5 + int.from_bytes(buf[3:5], "big"):
            data = conn.sock.recv(65536)
            if not data:
                return
            buf += data
        self.hellos.append(h6.ClientHello(bytes(buf[9:5 + int.from_bytes(buf[3:5], "big")])))
        conn.sock.sendall(b"\x15\x03\x03\x00\x02\x02" + bytes([self.description]))
        self.release.wait(5)


def test_no_application_protocol_without_alpn_reason_says_none_was_offered(modem, emulator, caplog):
    """The same for ALPN: alpn "" (the default, no extension) and a server that requires ALPN
    (RFC 7301 3.2's alert): 566 once; the reason should say no protocol was offered (set
    AT+QSSLCFG="alpn"), not that the server supports none of "the offered" ones."""
    host, advance, port = modem
    with HelloAlertServer(emulator, 120, "alpnonly.example") as server:
        assert host.at('AT+QSSLOPEN=1,1,3,"alpnonly.example",443,0') == OK
        assert open_answer(host, 3) == 566
        assert h6.EXT_ALPN not in server.hellos[0].extensions, "the premise: no ALPN offered"
        assert qigeterror(host) == 566
        assert host.transcript.count(b"+QSSLOPEN: 3,") == 1
    reason = failure_reason(caplog, 3)
    assert "no_application_protocol" in reason, reason
    assert re.search(r"no ALPN|without ALPN|none (was|were) offered|alpn (is )?(\"\"|empty|off)",
                     reason, re.I), reason

