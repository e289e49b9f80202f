"""Hostile servers, sixth round: what test_adversarial_hostile_servers.py / _2 .. _5,
test_adversarial_network_fuzz, test_adversarial_tls_options, test_adversarial_open_answer and
test_adversarial_hostile_peers_tcpip do not do.

The server here is a TLS 1.2 server written by hand (raw socket, records and handshake made by
the test with `cryptography`: RSA key exchange, AES-128-GCM / AES-128-CBC-SHA, session ids and
RFC 5077 tickets), so it can do on demand what OpenSSL never does: answer a ServerHello field
the ClientHello did not ask for, issue a new single-use ticket on every resumption, claim a
resumption with another suite, pad a full record with 251 bytes.  Covered:

* session resumption: a server whose tickets are single-use and that issues a new one on
  every resumption (the cache must keep the newest: five opens, four resumed); a server issuing
  session ids (no tickets): every open after the first resumed by id;
* a resumption the server refuses rudely (fatal alert / RST to the ClientHello offering the
  session, as a load balancer that lost its ticket key): 566 once, and the next open offers
  no session (a failed session is forgotten) and succeeds with a full handshake; a server
  that never answers that ClientHello: 569 at negotiatetime on the modem clock, nothing before,
  the next open working;
* a ServerHello echoing the offered session id but naming another suite (resumption claimed,
  then an abbreviated flight): 566 once (Mbed TLS takes it for a new session and the CCS for
  an unexpected message), the session forgotten, the next open a full handshake;
* ServerHello fields the context did not allow: a suite not offered, compression DEFLATE, an
  ALPN answer with no ALPN offered, an ALPN protocol not offered: the modem's fatal alert in
  clear right after the server's first flight (no ClientKeyExchange), 566 once, QIGETERROR 566,
  a reason in the log, the connection released, the id reusable; an unsolicited server_name
  acknowledgement (SNI off) is ignored as Mbed TLS 2.28 ignores it; ALPN answered with an
  offered protocol is reported;
* data and close_notify right behind a RESUMED (abbreviated) handshake's Finished, which the
  server sends before the modem's, TCP left open, each access mode: one answer, the data, one
  end, the emulator's own FIN;
* records at the size limits under CBC: a 16384-byte plaintext with 251 bytes of padding
  (16677-byte record), an empty record with 251 bytes of padding, then data: every byte once;
* a flood past ssl.recv_buffer (the socket stops reading, the rest waits in the kernel) ended
  by an RST or a bare FIN: every whole record the modem's stack took before the end reaches
  the host (AT+QSSLRECV after the end), then one "closed", state 4, the id reusable.

Checked each time from the host's side: the exact answers and codes, one +QSSLOPEN per open,
one "closed" per socket, every byte once, AT answering, no ERROR log record or traceback
(ec2x_strict).  Timers run on the modem's manual clock."""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import select
import socket
import struct
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding as rsa_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography import x509

from emulator.testing.peers import default_pki
from tests.e2e.hostile_support import ScriptedServer, open_answer, recv, send_rst
from tests.e2e.socket_support import tcp_fds_to, wait_for
from tests.e2e.test_adversarial_hostile_peers_tcpip import outq
from tests.e2e.test_adversarial_hostile_servers_4 import forget_answers
from tests.unit.test_mutation_survivors_8 import prf_sha256 as prf      # RFC 5246 5: P_SHA256

NAME = "hostile6.example"
CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23
RSA_GCM, RSA_CBC = 0x009C, 0x002F          # TLS_RSA_WITH_AES_128_GCM_SHA256 / _CBC_SHA
EXT_SNI, EXT_ALPN, EXT_TICKET, EXT_RENEG = 0x0000, 0x0010, 0x0023, 0xFF01


def record(ct: int, payload: bytes) -> bytes:
    return bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(payload)) + payload


def hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def ext(kind: int, data: bytes) -> bytes:
    return struct.pack(">HH", kind, len(data)) + data


def pattern(n: int, seed: int = 0) -> bytes:
    return b"".join(struct.pack(">I", (i + seed) & 0xFFFFFFFF) for i in range((n + 3) // 4))[:n]


class ClientHello:
    def __init__(self, body: bytes) -> None:
        self.random = body[2:34]
        n = body[34]
        self.session_id = body[35:35 + n]
        pos = 35 + n
        m = struct.unpack(">H", body[pos:pos + 2])[0]
        self.suites = [struct.unpack(">H", body[pos + 2 + i:pos + 4 + i])[0] for i in range(0, m, 2)]
        pos += 2 + m
        pos += 1 + body[pos]
        self.extensions: dict[int, bytes] = {}
        if pos < len(body):
            end = pos + 2 + struct.unpack(">H", body[pos:pos + 2])[0]
            pos += 2
            while pos < end:
                kind, size = struct.unpack(">HH", body[pos:pos + 4])
                self.extensions[kind] = body[pos + 4:pos + 4 + size]
                pos += 4 + size

    @property
    def ticket(self) -> bytes | None:
        return self.extensions.get(EXT_TICKET) or None


class Keys:
    """One direction's record protection (GCM or CBC-SHA, TLS 1.2)."""

    def __init__(self, suite: int, key: bytes, iv_or_mac: bytes) -> None:
        self.suite, self.key, self.extra, self.seq = suite, key, iv_or_mac, 0

    def seal(self, ct: int, payload: bytes, pad: int | None = None) -> bytes:
        seq = struct.pack(">Q", self.seq)
        self.seq += 1
        if self.suite == RSA_GCM:
            aad = seq + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(payload))
            return record(ct, seq + AESGCM(self.key).encrypt(self.extra + seq, payload, aad))
        mac = hmac.new(self.extra, seq + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(payload)) + payload,
                       hashlib.sha1).digest()
        body = payload + mac
        if pad is None:
            pad = 15 - len(body) % 16
        body += bytes([pad]) * (pad + 1)
        assert len(body) % 16 == 0, (len(payload), pad)
        iv = os.urandom(16)
        enc = Cipher(algorithms.AES(self.key), modes.CBC(iv)).encryptor()
        return record(ct, iv + enc.update(body) + enc.finalize())

    def open(self, ct: int, payload: bytes) -> bytes:
        seq = struct.pack(">Q", self.seq)
        self.seq += 1
        if self.suite == RSA_GCM:
            body = payload[8:]
            aad = seq + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(body) - 16)
            return AESGCM(self.key).decrypt(self.extra + payload[:8], body, aad)
        dec = Cipher(algorithms.AES(self.key), modes.CBC(payload[:16])).decryptor()
        body = dec.update(payload[16:]) + dec.finalize()
        body = body[:len(body) - body[-1] - 1]
        plain, mac = body[:-20], body[-20:]
        want = hmac.new(self.extra, seq + bytes([ct]) + b"\x03\x03" + struct.pack(">H", len(plain)) + plain,
                        hashlib.sha1).digest()
        assert hmac.compare_digest(mac, want), "client record MAC"
        return plain


_IDENTITY = None


def identity():
    """(certificate DER, RSA private key) of the shared PKI's server."""
    global _IDENTITY
    if _IDENTITY is None:
        files = default_pki().server
        cert = x509.load_pem_x509_certificate(files.cert_pem)
        key = serialization.load_pem_private_key(files.key_pem, None)
        _IDENTITY = (cert.public_bytes(serialization.Encoding.DER), key)
    return _IDENTITY


class Conn:
    """One accepted connection of HandServer, on its own thread."""

    def __init__(self, server: "HandServer", sock: socket.socket) -> None:
        self.server, self.sock = server, sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(20)
        self.buf = bytearray()
        self.transcript: list[bytes] = []
        self.hello: ClientHello | None = None
        self.resumed = False
        self.tx = self.rx = None
        self.plain = bytearray()          # the client's application data
        self.alerts: list[bytes] = []     # the client's alerts (clear or not)
        self.eof = threading.Event()
        self.sent = 0                     # bytes of the wire written (flood)

    # -- wire --
    def read_record(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 5:
                size = struct.unpack(">H", self.buf[3:5])[0]
                if len(self.buf) >= 5 + size:
                    ct, payload = self.buf[0], bytes(self.buf[5:5 + size])
                    del self.buf[:5 + size]
                    return ct, payload
            data = self.sock.recv(65536)
            if not data:
                self.eof.set()
                raise EOFError
            self.buf += data

    def read_handshake(self) -> bytes:
        ct, payload = self.read_record()
        if ct == CT_ALERT:
            self.alerts.append(payload)
            raise EOFError(f"client alert {payload.hex()}")
        assert ct == CT_HANDSHAKE, (ct, payload[:8].hex())
        return payload

    # -- handshake --
    def handshake(self) -> None:
        server, policy = self.server, self.server.policy
        body = self.read_handshake()
        assert body[0] == 1, body[:4].hex()
        self.transcript.append(body)
        self.hello = hello = ClientHello(body[4:])
        server.hellos.append(hello)
        saved = None
        if hello.ticket is not None:
            saved = server.tickets.get(hello.ticket)
            if saved is not None and server.single_use:
                del server.tickets[hello.ticket]
        elif hello.session_id:
            saved = server.sessions.get(hello.session_id)
        if saved is not None and policy.get("on_resume") in ("alert", "rst"):
            if policy["on_resume"] == "alert":
                self.sock.sendall(record(CT_ALERT, b"\x02\x28"))        # handshake_failure
                self.eof.wait(5)
            else:
                self.rst()
            raise EOFError
        exts = ext(EXT_RENEG, b"\x00") + policy.get("extra_ext", b"")
        issue_ticket = server.use_tickets and EXT_TICKET in hello.extensions
        if issue_ticket:
            exts += ext(EXT_TICKET, b"")
        sr = os.urandom(32)
        if saved is not None:
            self.resumed = True
            master, suite = saved
            session_id = hello.session_id
            suite = policy.get("resume_suite", suite)
        else:
            suite = policy.get("suite", server.suite)
            assert suite in hello.suites or "suite" in policy, [hex(s) for s in hello.suites]
            session_id = b"" if server.use_tickets else os.urandom(32)
        comp = policy.get("compression", 0)
        sh = hs(2, b"\x03\x03" + sr + bytes([len(session_id)]) + session_id + struct.pack(">H", suite)
                + bytes([comp]) + struct.pack(">H", len(exts)) + exts)
        self.transcript.append(sh)
        if saved is not None:
            out = record(CT_HANDSHAKE, sh)
            out += self._ticket(issue_ticket, master, suite)
            self._keys(master, hello.random, sr, suite)
            out += record(CT_CCS, b"\x01") + self._finished(master, b"server finished")
            tail = policy.get("resume_tail")
            self.sock.sendall(out + (tail(self) if tail else b""))
            self._client_finished(master)
            return
        cert_der, key = identity()
        cert = hs(11, (len(cert_der) + 3).to_bytes(3, "big") + len(cert_der).to_bytes(3, "big") + cert_der)
        done = hs(14, b"")
        self.transcript += [cert, done]
        self.sock.sendall(record(CT_HANDSHAKE, sh) + record(CT_HANDSHAKE, cert) + record(CT_HANDSHAKE, done))
        cke = self.read_handshake()
        assert cke[0] == 16, cke[:4].hex()
        self.transcript.append(cke)
        pre = key.decrypt(cke[6:], rsa_padding.PKCS1v15())
        master = prf(pre, b"master secret", hello.random + sr, 48)
        self._keys(master, hello.random, sr, suite)
        self._client_finished(master)
        out = self._ticket(issue_ticket, master, suite)
        out += record(CT_CCS, b"\x01") + self._finished(master, b"server finished")
        if not server.use_tickets:
            server.sessions[session_id] = (master, suite)
        self.sock.sendall(out)

    def _ticket(self, issue: bool, master: bytes, suite: int) -> bytes:
        if not issue:
            return b""
        ticket = os.urandom(48)
        self.server.tickets[ticket] = (master, suite)
        msg = hs(4, struct.pack(">IH", 300, len(ticket)) + ticket)
        self.transcript.append(msg)
        return record(CT_HANDSHAKE, msg)

    def _keys(self, master: bytes, cr: bytes, sr: bytes, suite: int) -> None:
        if suite == RSA_GCM:
            kb = prf(master, b"key expansion", sr + cr, 40)
            self.rx, self.tx = Keys(suite, kb[0:16], kb[32:36]), Keys(suite, kb[16:32], kb[36:40])
        else:
            kb = prf(master, b"key expansion", sr + cr, 72)
            self.rx, self.tx = Keys(suite, kb[40:56], kb[0:20]), Keys(suite, kb[56:72], kb[20:40])

    def _verify_data(self, master: bytes, label: bytes) -> bytes:
        return prf(master, label, hashlib.sha256(b"".join(self.transcript)).digest(), 12)

    def _finished(self, master: bytes, label: bytes) -> bytes:
        msg = hs(20, self._verify_data(master, label))
        self.transcript.append(msg)
        return self.tx.seal(CT_HANDSHAKE, msg)

    def _client_finished(self, master: bytes) -> None:
        ct, payload = self.read_record()
        if ct == CT_ALERT:
            self.alerts.append(payload)
            raise EOFError(f"client alert {payload.hex()}")
        assert (ct, payload) == (CT_CCS, b"\x01"), (ct, payload)
        ct, payload = self.read_record()
        msg = self.rx.open(ct, payload)
        assert msg == hs(20, self._verify_data(master, b"client finished")), "client Finished"
        self.transcript.append(msg)

    # -- after the handshake --
    def app(self, data: bytes, size: int = 16384) -> bytes:
        return b"".join(self.tx.seal(CT_APP, data[i:i + size]) for i in range(0, len(data), size))

    def reader(self) -> None:
        """The client's records, decrypted, until its end (on a thread)."""
        try:
            while True:
                ct, payload = self.read_record()
                plain = self.rx.open(ct, payload)
                if ct == CT_APP:
                    self.plain += plain
                elif ct == CT_ALERT:
                    self.alerts.append(plain)
        except (OSError, EOFError):
            pass
        except Exception as exc:              # noqa: BLE001 - a bad client record
            self.server.failures.append(f"client record: {type(exc).__name__}: {exc}")
        self.eof.set()

    def echo(self) -> None:
        """Echo each application record back until the client's end."""
        try:
            while True:
                ct, payload = self.read_record()
                plain = self.rx.open(ct, payload)
                if ct == CT_APP:
                    self.sock.sendall(self.tx.seal(CT_APP, plain))
                elif ct == CT_ALERT:
                    self.alerts.append(plain)
        except (OSError, EOFError):
            pass
        self.eof.set()

    def rst(self) -> None:
        send_rst(self.sock)


class HandServer(ScriptedServer):
    """The hand-made TLS 1.2 server on 127.0.0.1; script(conn) runs per connection (thread).
    policy: suite, on_resume ("alert" / "rst"), resume_suite, compression, extra_ext."""

    def __init__(self, emulator, script=None, *, suite: int = RSA_GCM, tickets: bool = False,
                 single_use: bool = False, name: str = NAME, policy: dict | None = None) -> None:
        self.suite, self.use_tickets, self.single_use = suite, tickets, single_use
        self.policy = dict(policy or {})
        self.sessions: dict[bytes, tuple] = {}
        self.tickets: dict[bytes, tuple] = {}
        self.hellos: list[ClientHello] = []
        super().__init__(script or (lambda c: (c.handshake(), c.echo())), emulator, name)

    def make_conn(self, sock: socket.socket) -> Conn:
        return Conn(self, sock)


# == host side ======================================================================================
@pytest.fixture
def modem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == b"\r\nOK\r\n"
    return ec2x_strict


def cfg(host, option: str, value) -> None:
    assert host.at(f'AT+QSSLCFG="{option}",1,{value}') == b"\r\nOK\r\n"


def ssl_open(host, cid: int, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{NAME}",443,{mode}') == b"\r\nOK\r\n"


def qigeterror(host) -> int:
    return int(re.search(rb"\+QIGETERROR: (\d+),", host.at("AT+QIGETERROR")).group(1))


def state(host, cid: int) -> int | None:
    answer = host.at(f"AT+QSSLSTATE={cid}")
    m = re.search(rb'\+QSSLSTATE: %d,"SSLClient","[^"]*",\d+,\d+,(\d),' % cid, answer)
    return int(m.group(1)) if m else None


def read_all(host, cid: int, want: int, n: int = 1500, timeout: float = 20) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < want:
        assert time.monotonic() < deadline, f"only {len(data)} of {want} bytes"
        chunk = recv(host, cid, n)
        if chunk:
            data += chunk
        else:
            host.seen(b'+QSSLURC: "recv",%d\r\n' % cid, 5)
    return bytes(data)


def open_count(host, cid: int, mark: int = 0) -> int:
    return bytes(host.transcript[mark:]).count(b"+QSSLOPEN: %d," % cid)


def round_trip_and_close(host, cid: int, payload: bytes = b"ping") -> None:
    assert host.send_data(cid, payload) == b"\r\nSEND OK\r\n"
    assert read_all(host, cid, len(payload)) == payload
    assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


def log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# == resumption ====================================================================================
def test_single_use_tickets_renewed_on_every_resumption(modem, emulator, caplog):
    """RFC 5077 tickets, each usable once, a new one issued in every handshake (resumptions
    too): the modem must offer the newest each time -- five opens, the last four resumed."""
    host, advance, port = modem
    with HandServer(emulator, tickets=True, single_use=True) as server:
        for i in range(5):
            forget_answers(host, 2)
            ssl_open(host, 2)
            assert open_answer(host, 2) == 0
            round_trip_and_close(host, 2, b"n%d" % i)
        assert [c.resumed for c in server.conns] == [False, True, True, True, True]
        assert all(h.ticket is not None for h in server.hellos[1:])
    assert log_text(caplog).count("resumed") >= 4


def test_session_ids_resumed_on_every_later_open(modem, emulator, caplog):
    """A server with session ids and no tickets (it ignores the ticket extension): every open
    after the first offers the id the last full handshake gave, and is resumed by it."""
    host, advance, port = modem
    with HandServer(emulator) as server:
        for i in range(3):
            forget_answers(host, 1)
            ssl_open(host, 1)
            assert open_answer(host, 1) == 0
            round_trip_and_close(host, 1, b"id%d" % i)
        assert [c.resumed for c in server.conns] == [False, True, True]
        first_id = server.conns[0].transcript[1][39:71]
        assert server.hellos[1].session_id == server.hellos[2].session_id == first_id


def _expect_566_then_full_handshake(host, emulator, server, caplog, cid: int, what: str, mark: int) -> None:
    """The open refused: exactly one 566, QIGETERROR 566, a reason in the log, the connection
    released; then the same id opens again offering no session (a failed one is forgotten,
    RFC 5246 7.2.2) and a full handshake carries data."""
    assert open_answer(host, cid) == 566
    assert host.quiet_for(0.1) == b""
    assert open_count(host, cid, mark) == 1
    assert qigeterror(host) == 566
    assert state(host, cid) is None
    assert f"SSL open {cid}" in log_text(caplog), what
    wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    server.policy.clear()
    forget_answers(host, cid)
    ssl_open(host, cid)
    assert open_answer(host, cid) == 0
    round_trip_and_close(host, cid)
    last = server.hellos[-1]
    assert last.ticket is None and last.session_id == b"", (what, last.session_id.hex())
    assert not server.conns[-1].resumed


@pytest.mark.parametrize("how", ["alert", "rst"])
def test_resumption_refused_rudely_is_566_then_a_full_handshake(modem, emulator, caplog, how):
    """The server's ClientHello handling chokes on the offered ticket (a fatal alert, or an RST,
    as a load balancer that lost its ticket key does): 566 once; the session is not offered
    again, the next open is a full handshake that works."""
    host, advance, port = modem
    with HandServer(emulator, tickets=True) as server:
        ssl_open(host, 3)
        assert open_answer(host, 3) == 0
        round_trip_and_close(host, 3)
        server.policy["on_resume"] = how
        forget_answers(host, 3)
        mark = len(host.transcript)
        ssl_open(host, 3)
        _expect_566_then_full_handshake(host, emulator, server, caplog, 3, how, mark)
        assert server.hellos[1].ticket is not None          # (the refused open did offer it)


def test_resumption_stalled_by_the_server_is_569_then_a_full_handshake(modem, emulator, caplog):
    """The server reads the ClientHello offering the ticket and never answers (a middlebox
    choking on it): nothing before negotiatetime (10 s on the modem clock), then 569 once;
    the next open, to a server that answers again, offers no session (a handshake abandoned
    forgets it, as one that failed: a path that swallows ClientHellos carrying a ticket would
    otherwise time out every open) and works."""
    host, advance, port = modem
    cfg(host, "negotiatetime", 10)
    release = threading.Event()

    def script(c: Conn) -> None:
        if len(c.server.conns) == 2:
            c.server.hellos.append(ClientHello(c.read_handshake()[4:]))
            release.wait(20)
            return
        c.handshake()
        c.echo()

    with HandServer(emulator, script, tickets=True) as server:
        ssl_open(host, 10)
        assert open_answer(host, 10) == 0
        round_trip_and_close(host, 10)
        forget_answers(host, 10)
        mark = len(host.transcript)
        ssl_open(host, 10)
        wait_for(lambda: len(server.hellos) == 2, 5, "the ClientHello offering the ticket")
        assert server.hellos[1].ticket is not None
        advance(9.5)
        assert host.quiet_for(0.2) == b""
        advance(1)
        assert open_answer(host, 10) == 569
        assert open_count(host, 10, mark) == 1
        assert qigeterror(host) == 569
        release.set()
        forget_answers(host, 10)
        ssl_open(host, 10)
        assert open_answer(host, 10) == 0
        assert len(server.hellos) == 3 and server.hellos[2].ticket is None
        round_trip_and_close(host, 10)
        assert server.failures == []


def test_resumption_claimed_with_another_suite_fails_and_is_forgotten(modem, emulator, caplog):
    """The ServerHello echoes the offered session id but names another suite, then sends the
    abbreviated flight (CCS, Finished).  Mbed TLS 2.28 takes such a ServerHello for a new
    session and the CCS for an unexpected message: 566 once, the modem's fatal alert in clear;
    the session forgotten, the next open a full handshake."""
    host, advance, port = modem
    cfg(host, "ciphersuite", '"0X009C:0X002F"')
    with HandServer(emulator) as server:
        ssl_open(host, 4)
        assert open_answer(host, 4) == 0
        round_trip_and_close(host, 4)
        server.policy["resume_suite"] = RSA_CBC
        forget_answers(host, 4)
        mark = len(host.transcript)
        ssl_open(host, 4)
        _expect_566_then_full_handshake(host, emulator, server, caplog, 4, "other suite", mark)
        refused = server.conns[1]
        assert refused.alerts and refused.alerts[0][0] == 2, refused.alerts
        assert server.hellos[1].session_id == server.conns[0].transcript[1][39:71]


# == ServerHello fields the context did not allow ===================================================
def alpn_ext(name: bytes) -> bytes:
    return ext(EXT_ALPN, struct.pack(">HB", len(name) + 1, len(name)) + name)


# kind: (AT+QSSLCFG writes, server policy, the modem's alert description)
HOSTILE_HELLOS = {
    "suite_not_offered": ([], {"suite": 0xC02F}, 47),                       # illegal_parameter
    "compression_deflate": ([], {"compression": 1}, 47),
    "alpn_unsolicited": ([], {"extra_ext": alpn_ext(b"h2")}, 110),          # unsupported_extension
    "alpn_not_offered": ([("alpn", '"mqtt,http/1.1"')], {"extra_ext": alpn_ext(b"h2")}, 40),
}


@pytest.mark.parametrize("kind", list(HOSTILE_HELLOS))
def test_server_hello_field_not_allowed_is_566_with_the_modems_alert(modem, emulator, caplog, kind):
    """A ServerHello choosing what the ClientHello did not offer: Mbed TLS (the modules' TLS)
    stops at the ServerHello with a fatal alert in clear instead of a ClientKeyExchange; the
    host gets exactly one 566 (QIGETERROR 566), the log a reason, the connection is released
    and the id opens again."""
    host, advance, port = modem
    writes, policy, alert = HOSTILE_HELLOS[kind]
    for option, value in writes:
        cfg(host, option, value)
    with HandServer(emulator, policy=policy) as server:
        mark = len(host.transcript)
        ssl_open(host, 5)
        assert open_answer(host, 5) == 566
        assert host.quiet_for(0.1) == b""
        assert open_count(host, 5, mark) == 1
        assert qigeterror(host) == 566
        assert "SSL open 5" in log_text(caplog)
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        conn = server.conns[0]
        assert conn.alerts == [bytes([2, alert])], conn.alerts
        assert [m[0] for m in conn.transcript] == [1, 2, 11, 14]     # no ClientKeyExchange came
        server.policy.clear()
        forget_answers(host, 5)
        ssl_open(host, 5)
        assert open_answer(host, 5) == 0
        round_trip_and_close(host, 5)


@pytest.mark.parametrize("kind", ["sni_ack_unsolicited", "alpn_chosen"])
def test_server_hello_extensions_mbedtls_accepts(modem, emulator, caplog, kind):
    """An empty server_name acknowledgement although the modem sent no SNI (sni 0): ignored, as
    Mbed TLS 2.28 ignores an extension it does not parse there; an ALPN answer naming one of the
    configured protocols: the open succeeds and the log names the protocol."""
    host, advance, port = modem
    if kind == "alpn_chosen":
        cfg(host, "alpn", '"mqtt,x-iot"')
        extra = alpn_ext(b"x-iot")
    else:
        extra = ext(EXT_SNI, b"")
    with HandServer(emulator, policy={"extra_ext": extra}) as server:
        ssl_open(host, 6)
        assert open_answer(host, 6) == 0
        round_trip_and_close(host, 6)
        hello = server.hellos[0]
        if kind == "alpn_chosen":
            assert hello.extensions[EXT_ALPN] == b"\x00\x0b\x04mqtt\x05x-iot"
            assert "ALPN x-iot" in log_text(caplog)
        else:
            assert EXT_SNI not in hello.extensions


# == records at the size limits ====================================================================
def test_cbc_records_with_maximum_padding(modem, emulator):
    """AES-128-CBC-SHA: a full 16384-byte plaintext with 251 bytes of padding (a 16677-byte
    record, within RFC 5246's 2^14 + 2048), an empty record padded with 251 bytes, then a
    small record; then the server echoes.  Every byte reaches the host once, in order."""
    host, advance, port = modem
    cfg(host, "ciphersuite", "0X002F")
    big, small = pattern(16384, 5), pattern(700, 9)

    def script(c: Conn) -> None:
        c.handshake()
        wire = c.tx.seal(CT_APP, big, pad=251)
        assert len(wire) == 5 + 16 + 16384 + 20 + 252
        wire += c.tx.seal(CT_APP, b"", pad=251) + c.tx.seal(CT_APP, small, pad=255 - 16 * 5)
        c.sock.sendall(wire)
        c.echo()

    with HandServer(emulator, script, suite=RSA_CBC):
        ssl_open(host, 7)
        assert open_answer(host, 7) == 0
        assert read_all(host, 7, len(big) + len(small)) == big + small
        assert recv(host, 7) == b""
        round_trip_and_close(host, 7, b"cbc ok")
    assert host.transcript.count(b'+QSSLURC: "recv",7') == 2          # (once, then the echo)


# == the end behind data held back by flow control ====================================================
@pytest.mark.parametrize("end", ["rst", "fin"])
def test_end_behind_a_flood_held_back_by_flow_control(modem, emulator, end):
    """The server floods full records while the host reads nothing: past ssl.recv_buffer the
    modem stops reading and the rest waits in its kernel (or the window shuts).  Then the
    server resets (RST) or half-closes without close_notify (FIN).  What the modem's stack
    took before the end was the module's: every whole record of it reaches the host, in
    order, once (AT+QSSLRECV after the end, as docs/behaviour.md's "data received before the
    close stay readable"), then one "closed" URC, state 4, AT+QSSLSEND 567, the id reusable."""
    host, advance, port = modem
    data = pattern(16384 * 40, 13)
    info: dict = {}
    ready = threading.Event()

    def script(c: Conn) -> None:
        c.handshake()
        if c is not c.server.conns[0]:
            c.echo()                          # (the id opened again: a plain echo)
            return
        wire = c.app(data)
        c.sock.setblocking(False)
        sent = 0
        while sent < len(wire):
            try:
                sent += c.sock.send(wire[sent:sent + 65536])
            except BlockingIOError:
                if not select.select([], [c.sock], [], 0.5)[1]:
                    break
        last = -1
        for _ in range(100):
            now = outq(c.sock)
            if now == last:
                break
            last = now
            time.sleep(0.1)
        info["sent"], info["acked"] = sent, sent - last
        if end == "rst":
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.sock.close()
        else:
            c.sock.shutdown(socket.SHUT_WR)
        ready.set()
        if end == "fin":
            c.sock.setblocking(True)
            c.echo()

    with HandServer(emulator, script) as server:
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        host.seen(b'+QSSLURC: "recv",8\r\n')
        assert ready.wait(15)
        took = info["acked"] if end == "rst" else info["sent"]
        record_wire = 5 + 8 + 16384 + 16
        whole = min(took // record_wire * 16384, len(data))
        assert whole > 65536 + 16384, info                      # past recv_buffer: held back
        got = read_all(host, 8, whole, timeout=30)
        assert got == data[:whole], (len(got), whole)
        host.seen(b'+QSSLURC: "closed",8\r\n', 10)
        assert recv(host, 8) == b""
        assert host.quiet_for(0.1) == b""
        assert host.transcript.count(b'+QSSLURC: "closed",8') == 1
        assert state(host, 8) == 4
        assert host.at("AT+QSSLSEND=8,1") == b"\r\nERROR\r\n"
        assert qigeterror(host) == 567
        assert host.at("AT+QSSLCLOSE=8") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        forget_answers(host, 8)          # (before the open: its answer may come with its OK)
        ssl_open(host, 8)
        assert open_answer(host, 8) == 0
        round_trip_and_close(host, 8)


# == the end in the flight of a RESUMED handshake's Finished ==========================================
@pytest.mark.parametrize("mode", [0, 1, 2], ids=["buffer", "push", "transparent"])
def test_data_and_close_notify_behind_an_abbreviated_handshake(modem, emulator, mode):
    """A resumed handshake: the server's ServerHello, CCS and Finished come FIRST (before the
    modem's Finished), and this server puts data and close_notify right behind them in the same
    segment, its TCP left open.  The open is answered once (resumed), then the data, then the
    end (buffer: "recv", "closed", the bytes readable; push: the bytes pushed; transparent:
    CONNECT, the bytes, NO CARRIER); the emulator closes its side by itself."""
    host, advance, port = modem
    data = pattern(1200, 17)
    with HandServer(emulator, tickets=True) as server:
        ssl_open(host, 9)
        assert open_answer(host, 9) == 0
        round_trip_and_close(host, 9)
        server.policy["resume_tail"] = lambda c: c.app(data) + c.tx.seal(CT_ALERT, b"\x01\x00")
        forget_answers(host, 9)
        mark = len(host.transcript)
        host.write(f'AT+QSSLOPEN=1,1,9,"{NAME}",443,{mode}\r'.encode())
        if mode == 2:
            want = b"\r\nCONNECT\r\n" + data + b"\r\nNO CARRIER\r\n"
            got = host.read_until(b"\r\nNO CARRIER\r\n", timeout=5)
            assert got.endswith(want), got[-120:]
        else:
            out = host.read_until(b'+QSSLURC: "closed",9\r\n', timeout=5)
            recv_urc = (b'\r\n+QSSLURC: "recv",9\r\n' if mode == 0
                        else b'\r\n+QSSLURC: "recv",9,%d\r\n' % len(data) + data + b"\r\n")
            assert out.endswith(b"\r\nOK\r\n\r\n+QSSLOPEN: 9,0\r\n" + recv_urc + b'\r\n+QSSLURC: "closed",9\r\n'), out
            if mode == 0:
                assert read_all(host, 9, len(data), n=999) == data
                assert recv(host, 9) == b""
            assert state(host, 9) == 4
        conn = server.conns[1]
        assert conn.resumed
        wait_for(conn.eof.is_set, 5, "the emulator's FIN, sent by itself")
        assert host.at("AT+QSSLCLOSE=9") == b"\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
        assert open_count(host, 9, mark) == (0 if mode == 2 else 1)
        assert bytes(host.transcript[mark:]).count(b"closed") + bytes(host.transcript[mark:]).count(b"NO CARRIER") == 1
