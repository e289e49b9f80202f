"""Hostile and broken TLS servers against the SSL sockets, through the pty as host software
(EC2x and ML302).  The servers are raw sockets driving Python ssl over memory BIOs, so a test
decides byte by byte what goes on the wire: garbage instead of a ServerHello, a handshake cut
(FIN, RST, full close) or stalled at each flight, a handshake sent one byte per TCP segment,
a handshake message announcing 16 MiB, data then an encrypted fatal alert / close_notify with
the TCP connection kept open / a broken or oversized record / a half-close / an RST, 16 KiB
records back to back faster than the host reads, a server that never reads, a dozen such
servers at once.  Checked: the exact AT answers, byte-exact data, one answer per open, the id
reusable afterwards, the emulator still answering AT."""
from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import threading
import time

import pytest

from tests.e2e.hostile_support import BioPeer, ScriptedServer, send_rst
from tests.e2e.hostile_support import open_answer as ec2x_answer
from tests.e2e.hostile_support import recv as ec2x_recv
from tests.e2e.socket_support import tcp_fds_to, wait_for

NAME = "hostile.example"
CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23


# -- the hostile server -----------------------------------------------------------------------
def tls_records(data: bytes) -> list[tuple[int, bytes]]:
    """(content type, whole record bytes) of a byte string made of whole TLS records."""
    out, pos = [], 0
    while pos + 5 <= len(data):
        length = struct.unpack(">H", data[pos + 3:pos + 5])[0]
        out.append((data[pos], data[pos:pos + 5 + length]))
        pos += 5 + length
    assert pos == len(data), "not whole records"
    return out


def handshake_messages(flight: bytes) -> list[bytes]:
    """The clear handshake messages (header included) of the server's first flight."""
    body = b"".join(rec[5:] for ct, rec in tls_records(flight) if ct == CT_HANDSHAKE)
    msgs, pos = [], 0
    while pos < len(body):
        length = int.from_bytes(body[pos + 1:pos + 4], "big")
        msgs.append(body[pos:pos + 4 + length])
        pos += 4 + length
    return msgs


def record(ct: int, payload: bytes) -> bytes:
    return bytes([ct, 3, 3]) + struct.pack(">H", len(payload)) + payload


class Peer(BioPeer):
    """One accepted connection: the socket, an ssl object over memory BIOs, helpers."""

    def __init__(self, server: "Hostile", sock: socket.socket) -> None:
        super().__init__(server.ctx, sock)
        self.server = server
        self.plain_in = bytearray()

    def handshake(self, bytewise: bool = False) -> None:
        self.send(self.first_flight(), bytewise)
        self.send(self.last_flight(), bytewise)
        self.server.handshaken.release()

    def app(self, data: bytes) -> bytes:
        """Application data records (at most 16 KiB of plaintext each), encrypted, not sent."""
        for i in range(0, len(data), 16384):
            self.tls.write(data[i:i + 16384])
        return self.out.read()

    def close_notify(self) -> bytes:
        try:
            self.tls.unwrap()
        except ssl.SSLError:
            pass
        return self.out.read()

    def fatal_alert(self) -> bytes:
        """A real encrypted fatal alert (bad_record_mac): fed a forged record, OpenSSL answers
        with its alert under the session's keys."""
        self.inc.write(record(CT_APP, b"\x00" * 40))
        try:
            self.tls.read(100)
        except ssl.SSLError:
            pass
        return self.out.read()

    def send(self, data: bytes, bytewise: bool = False) -> None:
        if not bytewise:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            self.sock.send(data[i:i + 1])
            time.sleep(0.0002)

    def fin(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def rst(self) -> None:
        send_rst(self.sock)

    def drain(self) -> None:
        """Read (and decrypt what can be) until the client's EOF.  What is in the BIO already
        (records that came behind the client's Finished) is decrypted before the next read."""
        while True:
            try:
                while True:
                    chunk = self.tls.read(65536)
                    if not chunk:
                        break
                    self.plain_in += chunk
            except (ssl.SSLWantReadError, ssl.SSLError):
                pass
            try:
                self.feed()
            except (EOFError, OSError):
                return

    def echo(self) -> None:
        """Echo until the client's end; the BIO is read before the socket (records that came
        behind the client's Finished -- a resumed handshake -- are in it already)."""
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                try:
                    self.feed()
                except (EOFError, OSError):
                    return
                continue
            except ssl.SSLError:
                return
            if not chunk:
                return
            self.sock.sendall(self.app(chunk))


class Hostile(ScriptedServer):
    """A TLS 1.2 server on 127.0.0.1: script(peer) runs on each accepted connection, whose
    socket is closed when the script returns."""

    close_when_done = True
    stall_limit = 60.0

    def __init__(self, script, tickets: bool = False) -> None:
        from emulator.testing.peers import default_pki
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:ALL:@SECLEVEL=0")
        if not tickets:
            self.ctx.options |= ssl.OP_NO_TICKET
        default_pki().server.configure_cert(self.ctx)
        self.errors: list[str] = []
        self.handshaken = threading.Semaphore(0)
        super().__init__(script)

    @property
    def peers(self) -> list[Peer]:
        return self.conns

    def make_conn(self, sock: socket.socket) -> Peer:
        return Peer(self, sock)

    def on_end(self, exc: BaseException) -> None:
        if not self.release.is_set():
            self.errors.append(repr(exc))        # the connection's end: the test's subject


def pattern(n: int, seed: int = 0) -> bytes:
    """n bytes in which every 4-byte word is its own offset: a loss, a duplicate or a reorder
    shows at the exact place."""
    words = (n + 3) // 4
    return b"".join(struct.pack(">I", (i + seed) & 0xFFFFFFFF) for i in range(words))[:n]


# -- host side helpers ------------------------------------------------------------------------
def route(emulator, server, name: str = NAME, port: int = 443) -> None:
    emulator.router.add_map(name, port, "127.0.0.1", server.port)


def ec2x_open(host, cid: int, name: str = NAME, port: int = 443, ctx: int = 1, mode: int = 0) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{name}",{port},{mode}') == b"\r\nOK\r\n"


def ec2x_read_all(host, cid: int, want: int, timeout: float = 20) -> bytes:
    """AT+QSSLRECV until `want` bytes came; a +QSSLRECV: 0 waits for the next "recv" URC."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while len(data) < want:
        assert time.monotonic() < deadline, f"only {len(data)} of {want} bytes"
        chunk = ec2x_recv(host, cid)
        assert len(chunk) <= 1500
        if chunk:
            data += chunk
        else:
            host.seen(b'+QSSLURC: "recv",%d\r\n' % cid, timeout)
    return bytes(data)


def ec2x_state(host, cid: int) -> bytes:
    return host.at(f"AT+QSSLSTATE={cid}")


STATE = rb'\r\n\+QSSLSTATE: %d,"SSLClient","hostile\.example",443,\d+,%d,1,%d,0,"usbmodem",1\r\n\r\nOK\r\n'


def qigeterror(host) -> int:
    return int(re.search(rb"\+QIGETERROR: (\d+),", host.at("AT+QIGETERROR")).group(1))


def good_open_and_echo(host, emulator, cid: int) -> None:
    """The id is usable again: a well-behaved server, a round trip, a close."""
    with Hostile(lambda p: (p.handshake(), p.echo())) as good:
        route(emulator, good, "good.example")
        ec2x_open(host, cid, "good.example")
        assert ec2x_answer(host, cid) == 0
        assert host.send_data(cid, b"still alive") == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",%d\r\n' % cid)
        assert ec2x_recv(host, cid) == b"still alive"
        assert host.at(f"AT+QSSLCLOSE={cid}") == b"\r\nOK\r\n"


@pytest.fixture
def modem(ec2x_strict):
    return ec2x_strict


@pytest.fixture
def ml(ml302_strict):
    return ml302_strict


# == the handshake cut at each flight ============================================================
def cut_script(stage: str, ending: str):
    """A server that plays the handshake up to `stage`, then ends by `ending`."""
    def script(p: Peer) -> None:
        if stage == "garbage":
            p.feed()
            p.send(b"\x00\xffNOT TLS AT ALL\r\n" * 8)
        elif stage == "garbage_record_header":          # a handshake record announcing 64 KiB
            p.feed()
            p.send(b"\x16\x03\x03\xff\xff" + b"\x02" * 100)
        else:
            flight = p.first_flight()
            msgs = handshake_messages(flight)
            assert msgs[0][0] == 2 and msgs[-1][0] == 14        # ServerHello .. ServerHelloDone
            if stage == "partial_server_hello":
                p.send(flight[:20])
            elif stage == "server_hello":
                p.send(record(CT_HANDSHAKE, msgs[0]))
            elif stage == "no_server_hello_done":
                p.send(record(CT_HANDSHAKE, b"".join(msgs[:-1])))
            else:
                p.send(flight)
                if stage != "first_flight":
                    last = p.last_flight()                     # the client's Finished is in
                    if stage == "ccs":
                        recs = tls_records(last)
                        upto = [ct for ct, _ in recs].index(CT_CCS)
                        p.send(b"".join(rec for _, rec in recs[:upto + 1]))
                    elif stage == "finished_cut":              # half the encrypted Finished
                        p.send(last[:len(last) - 10])
        if ending == "fin":
            p.fin()
            p.drain()
        elif ending == "rst":
            p.rst()
        elif ending == "close":
            p.sock.close()
        else:
            p.server.stall()
    return script


CUT_STAGES = ["garbage", "partial_server_hello", "server_hello", "no_server_hello_done",
              "first_flight", "client_finished", "ccs", "finished_cut"]


@pytest.mark.parametrize("ending", ["fin", "rst", "close"])
@pytest.mark.parametrize("stage", CUT_STAGES)
def test_handshake_cut_at_each_flight_is_566_and_the_id_is_free(modem, emulator, stage, ending):
    host, advance, port = modem
    with Hostile(cut_script(stage, ending)) as server:
        route(emulator, server)
        ec2x_open(host, 5)
        assert ec2x_answer(host, 5) == 566
        assert host.quiet_for(0.05) == b""                  # one answer, nothing after it
        assert qigeterror(host) == 566
        assert ec2x_state(host, 5) == b"\r\nOK\r\n"            # the failed open freed the id
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    good_open_and_echo(host, emulator, 5)


@pytest.mark.parametrize("stage", ["garbage", "garbage_record_header", "server_hello",
                                   "no_server_hello_done", "first_flight", "ccs", "finished_cut"])
def test_handshake_stalled_at_each_flight_times_out_569_on_negotiatetime(modem, emulator, stage):
    """Garbage that never completes a record, or a flight cut with the TCP connection held:
    nothing until negotiatetime (10 s on the modem clock), then 569; the id is free."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    with Hostile(cut_script(stage, "stall")) as server:
        route(emulator, server)
        ec2x_open(host, 2)
        if stage in ("garbage", "garbage_record_header"):
            # garbage, or a record header no TLS record can have, fails the open at once
            # (566) with the TCP connection still held: no wait for the timer
            assert ec2x_answer(host, 2) == 566
            wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
            return
        wait_for(lambda: server.peers and len(server.peers[0].raw_in) > 0, what="ClientHello")
        time.sleep(0.2)
        assert re.fullmatch(STATE % (2, 1, 2), ec2x_state(host, 2)), ec2x_state(host, 2)
        advance(9.5)
        assert b"+QSSLOPEN" not in host.quiet_for(0.2)
        advance(1)
        assert ec2x_answer(host, 2) == 569
        assert qigeterror(host) == 569
        assert ec2x_state(host, 2) == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
    good_open_and_echo(host, emulator, 2)


def test_handshake_message_announcing_16_mib_fails_without_waiting(modem, emulator):
    """ServerHello, then a Certificate message whose length is 2**24-1, streamed as full
    16 KiB handshake records for as long as the client reads: the open fails (566) without
    the host's clock moving, and the emulator does not read on forever."""
    host, advance, port = modem
    sent = {"n": 0}

    def script(p: Peer) -> None:
        msgs = handshake_messages(p.first_flight())
        p.send(record(CT_HANDSHAKE, msgs[0]))
        first = b"\x0b\xff\xff\xff" + b"\x00" * (16384 - 4)
        p.send(record(CT_HANDSHAKE, first))
        chunk = record(CT_HANDSHAKE, b"\x30" * 16384)
        p.sock.settimeout(5)
        while sent["n"] < 64 * 1024 * 1024:
            p.send(chunk)
            sent["n"] += len(chunk)

    with Hostile(script) as server:
        route(emulator, server)
        ec2x_open(host, 1)
        assert ec2x_answer(host, 1) == 566
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
        assert sent["n"] < 16 * 1024 * 1024
    assert host.at("AT") == b"\r\nOK\r\n"


def test_handshake_and_data_one_byte_per_tcp_segment(modem, emulator):
    """Every byte of the server's flights and of its data records in its own TCP segment."""
    host, advance, port = modem
    payload = pattern(700)

    def script(p: Peer) -> None:
        p.handshake(bytewise=True)
        p.send(p.app(payload), bytewise=True)
        p.echo()

    with Hostile(script) as server:
        route(emulator, server)
        ec2x_open(host, 0)
        assert ec2x_answer(host, 0) == 0
        host.seen(b'+QSSLURC: "recv",0\r\n')
        assert ec2x_read_all(host, 0, len(payload)) == payload
        assert ec2x_recv(host, 0) == b""
        assert host.send_data(0, b"up") == b"\r\nSEND OK\r\n"
        host.seen(b'+QSSLURC: "recv",0\r\n')
        assert ec2x_recv(host, 0) == b"up"
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


# == hostile endings after data ==================================================================
ENDINGS = ["close_notify_tcp_open", "close_notify_then_junk", "fatal_alert_tcp_open",
           "forged_record", "oversized_record", "plaintext_hello_request", "fin_half_close", "rst"]


def ending_bytes(p: Peer, ending: str) -> bytes:
    if ending == "close_notify_tcp_open":
        return p.close_notify()
    if ending == "close_notify_then_junk":
        return p.close_notify() + b"\x17\x03\x03\x00\x20" + b"J" * 32
    if ending == "fatal_alert_tcp_open":
        alert = p.fatal_alert()
        assert alert[:1] == bytes([CT_ALERT]), alert
        return alert
    if ending == "forged_record":
        return record(CT_APP, b"\x01" * 64)
    if ending == "oversized_record":                       # 2**14 + 2048 + 1: record_overflow
        return b"\x17\x03\x03\x48\x01" + b"\x00" * 100
    if ending == "plaintext_hello_request":                # a renegotiation request in clear
        return record(CT_HANDSHAKE, b"\x00\x00\x00\x00")
    return b""


def ending_script(ending: str, payload: bytes, go: threading.Event, one_segment: bool):
    def script(p: Peer) -> None:
        p.handshake()
        data = p.app(payload)
        tail = ending_bytes(p, ending)
        if one_segment:
            p.send(data + tail)
        else:
            p.send(data)
            go.wait(10)
            p.send(tail)
        if ending == "fin_half_close":
            p.fin()
        elif ending == "rst":
            p.rst()
            return
        p.drain()                          # TCP kept open: wait for the emulator's side
    return script


@pytest.mark.parametrize("ending,one_segment",
                         [(e, False) for e in ENDINGS] + [(e, True) for e in ENDINGS if e != "rst"])
def test_data_then_hostile_ending_keeps_the_data_and_reports_closed(modem, emulator, ending, one_segment):
    """(An RST in the data's own segment may make the kernel drop the unread data: not asked.)"""
    host, advance, port = modem
    payload = pattern(5000, seed=7)
    go = threading.Event()
    with Hostile(ending_script(ending, payload, go, one_segment)) as server:
        route(emulator, server)
        ec2x_open(host, 3)
        assert ec2x_answer(host, 3) == 0
        host.seen(b'+QSSLURC: "recv",3\r\n')
        go.set()
        host.seen(b'+QSSLURC: "closed",3\r\n')
        # data received before the end stay readable, byte-exact, once
        assert ec2x_read_all(host, 3, len(payload)) == payload
        assert ec2x_recv(host, 3) == b""
        assert re.fullmatch(STATE % (3, 4, 3), ec2x_state(host, 3)), ec2x_state(host, 3)
        assert host.at("AT+QSSLSEND=3,4") == b"\r\nERROR\r\n"
        if ending in ("close_notify_tcp_open", "close_notify_then_junk", "fin_half_close"):
            # the emulator closes its side without waiting for the host
            wait_for(lambda: server.peers[0].eof.is_set(), what="server sees EOF")
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        assert ec2x_state(host, 3) == b"\r\nOK\r\n"
        rest = host.quiet_for(0.1)
        assert b"+QSSLURC" not in rest, rest
        assert host.transcript.count(b'+QSSLURC: "closed",3') == 1
        assert host.transcript.count(b'+QSSLURC: "recv",3') == 1
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("ending", ["close_notify_tcp_open", "fatal_alert_tcp_open", "fin_half_close"])
def test_ml302_data_then_hostile_ending(ml, emulator, ending):
    host, advance, port = ml
    payload = pattern(3000, seed=3)
    go = threading.Event()
    with Hostile(ending_script(ending, payload, go, False)) as server:
        route(emulator, server)
        assert host.at(f'AT+QSSLOPEN=2,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 2,0\r\n")
        host.seen(b'+QSSLURC: "recv",1,2\r\n')
        go.set()
        host.seen(b'+QSSLURC: "close",2\r\n')
        data = bytearray()
        for _ in range(5):
            answer = host.at("AT+QSSLRECV=1,2,1500")
            m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
            if not m:
                assert answer == b"\r\nOK\r\n", answer
                break
            n = int(m.group(1))
            data += answer[m.end():m.end() + n]
            assert answer[m.end() + n:] == b"\r\n\r\nOK\r\n"
        assert bytes(data) == payload
        state = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 2,"TCP","[0-9.]+",443,"REMOTE CLOSING",1\r\n', state), state
        assert host.at("AT+QSSLSEND=2") == b"\r\nERROR\r\n"
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"
        assert host.read_until(b"2,CLOSE OK\r\n") == b"\r\n2,CLOSE OK\r\n"
        assert host.transcript.count(b'+QSSLURC: "close",2') == 1
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    assert host.at("AT") == b"\r\nOK\r\n"


@pytest.mark.parametrize("stage,ending", [("server_hello", "rst"), ("ccs", "fin"),
                                          ("garbage", "close"), ("finished_cut", "close")])
def test_ml302_handshake_cut_is_minus_1(ml, emulator, stage, ending):
    host, advance, port = ml
    with Hostile(cut_script(stage, ending)) as server:
        route(emulator, server)
        assert host.at(f'AT+QSSLOPEN=4,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        assert host.seen(re.compile(rb"\+QSSLOPEN: 4,-?\d+\r\n")) == b"+QSSLOPEN: 4,-1\r\n"
        assert host.quiet_for(0.05) == b""
        state = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 4,"TCP","[0-9.]+",443,"CLOSED",1\r\n', state), state
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection released")
    assert host.at("AT") == b"\r\nOK\r\n"


def test_ml302_server_hello_then_stall_times_out_at_its_timeout(ml, emulator):
    host, advance, port = ml
    with Hostile(cut_script("server_hello", "stall")) as server:
        route(emulator, server)
        assert host.at(f'AT+QSSLOPEN=1,0,"{NAME}",443,0,10') == b"\r\nOK\r\n"
        wait_for(lambda: server.peers and len(server.peers[0].raw_in) > 0, what="ClientHello")
        time.sleep(0.2)
        state = host.at("AT+QSSLSTATE")
        assert re.search(rb'\+QSSLSTATE: 1,"TCP","[0-9.]*",443,"CONNECTING",1\r\n', state), state
        advance(9.5)
        assert b"+QSSLOPEN" not in host.quiet_for(0.2)
        advance(1)
        assert host.seen(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n")) == b"+QSSLOPEN: 1,-1\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        assert host.read_until(b"1,CLOSE OK\r\n") == b"\r\n1,CLOSE OK\r\n"
    assert host.at("AT") == b"\r\nOK\r\n"


# Was a bug, fixed: a fatal TLS error on a connected socket (the server's fatal alert, a
# record failing its MAC, an oversized record, a cleartext HelloRequest) was reported closed
# but the TCP connection stayed open until AT+QSSLCLOSE; now the alert (if any) then a FIN
# leave at once (RFC 5246 7.2.2; SslSocket._close_after_fatal).
@pytest.mark.parametrize("ending", ["fatal_alert_tcp_open", "forged_record", "oversized_record",
                                    "plaintext_hello_request"])
def test_fatal_tls_error_after_connect_closes_the_tcp_connection(modem, emulator, ending):
    host, advance, port = modem
    go = threading.Event()
    with Hostile(ending_script(ending, b"x" * 100, go, False)) as server:
        route(emulator, server)
        ec2x_open(host, 3)
        assert ec2x_answer(host, 3) == 0
        host.seen(b'+QSSLURC: "recv",3\r\n')
        go.set()
        host.seen(b'+QSSLURC: "closed",3\r\n')
        try:
            wait_for(lambda: server.peers[0].eof.is_set(), timeout=2, what="server sees EOF")
        finally:
            assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"


def test_fatal_error_on_a_shaped_link_still_sends_what_was_queued(modem, emulator):
    """Under network conditions (control "net": 16 kbit/s) the bytes SEND OK accepted and
    Mbed TLS's fatal alert are still on the slow link when a forged record ends the
    session: they leave, then the FIN.  Was a bug, fixed: ShapedTransport.close() emptied
    the link's queue, so the server got a bare FIN and none of the data."""
    host, advance, port = modem
    go = threading.Event()
    mark = {}

    def script(p: Peer) -> None:
        p.handshake()
        go.wait(30)
        mark["before"] = len(p.raw_in)
        p.send(record(CT_APP, b"\x00" * 40))              # fails the modem's MAC check
        p.drain()

    with Hostile(script) as server:
        route(emulator, server)
        ec2x_open(host, 3)
        assert ec2x_answer(host, 3) == 0
        assert emulator.control("net", socket=3, kbps=16)["ok"]
        payload = pattern(1000, seed=3)
        assert host.send_data(3, payload) == b"\r\nSEND OK\r\n"
        go.set()
        # Small steps of the modem's clock until the forged record has come in and closed the
        # session: that must happen while the 1000 bytes (0.5 s at 16 kbit/s) are still on
        # the slow link, or the close would find the queue empty and prove nothing.
        moved = 0.0
        while b'+QSSLURC: "closed",3' not in bytes(host.transcript) + host.quiet_for(0.02):
            assert moved < 0.4, "the session did not end while the data were on the link"
            advance(0.02)
            moved += 0.02
        advance(5)                      # the data, the alert and the FIN leave
        peer = server.peers[0]
        wait_for(peer.eof.is_set, timeout=5, what="server sees EOF")
        assert bytes(peer.plain_in) == payload
        types = [ct for ct, _ in tls_records(bytes(peer.raw_in[mark["before"]:]))]
        assert types == [CT_APP, CT_ALERT], types
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"


# == floods: 16 KiB records back to back, faster than the host reads ==============================
def flood_script(total: int, progress: dict, seed: int = 0):
    data = pattern(total, seed)

    def script(p: Peer) -> None:
        p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)   # no kernel autotuning
        p.handshake()
        wire = p.app(data)
        progress["wire"] = len(wire)
        for _, rec in tls_records(wire):
            p.sock.sendall(rec)
            progress["sent"] = progress.get("sent", 0) + len(rec)
        p.server.stall()
    return script, data


@contextlib.contextmanager
def flooded(emulator, host, cid: int, total: int, seed: int = 0, mode: int = 0):
    """An EC2x socket <cid> open (access mode <mode>) to a server that floods `total` bytes
    of records at once after the handshake: yields (server, data, progress)."""
    progress: dict = {}
    script, data = flood_script(total, progress, seed=seed)
    with Hostile(script) as server:
        route(emulator, server)
        ec2x_open(host, cid, mode=mode)
        assert ec2x_answer(host, cid) == 0
        yield server, data, progress


def test_flood_of_16k_records_is_held_back_and_read_byte_exact(modem, emulator):
    """4 MiB in full-size records, sent at once after the handshake (before the host asked):
    one "recv" URC while the data wait unread, the server held back (TCP flow control past
    ssl.recv_buffer, nothing dropped), then 256 KiB read with AT+QSSLRECV=<id>,1500 arrive
    in order, each answer at most 1500 bytes, no byte lost or repeated."""
    host, advance, port = modem
    with flooded(emulator, host, 6, 4 * 1024 * 1024) as (server, data, progress):
        host.seen(b'+QSSLURC: "recv",6\r\n')
        time.sleep(0.8)
        assert host.quiet_for(0.2) == b""                 # no repeated "recv" URC meanwhile
        held = progress.get("sent", 0)
        assert held < 2 * 1024 * 1024, f"the server pushed {held} bytes into a host that reads nothing"
        got = ec2x_read_all(host, 6, 256 * 1024)
        assert got == data[:len(got)]
        assert host.at("AT+QSSLCLOSE=6,0") == b"\r\nOK\r\n"
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection aborted")
        assert b"+QSSLURC" not in host.quiet_for(0.1)
    assert host.at("AT") == b"\r\nOK\r\n"


def test_flood_drained_completely_then_quiet(modem, emulator):
    """160 KiB in 16 KiB records: read to the last byte, then +QSSLRECV: 0, no further URC."""
    host, advance, port = modem
    with flooded(emulator, host, 7, 160 * 1024, seed=99) as (server, data, progress):
        host.seen(b'+QSSLURC: "recv",7\r\n')
        assert ec2x_read_all(host, 7, len(data)) == data
        wait_for(lambda: progress.get("sent") == progress.get("wire"), what="all sent")
        assert ec2x_recv(host, 7) == b""
        assert b"+QSSLURC" not in host.quiet_for(0.2)
        assert host.at("AT+QSSLCLOSE=7,0") == b"\r\nOK\r\n"


def test_push_mode_flood_every_urc_framed_and_byte_exact(modem, emulator):
    host, advance, port = modem
    urc = re.compile(rb'\r\n\+QSSLURC: "recv",8,(\d+)\r\n')
    with flooded(emulator, host, 8, 200 * 1024, seed=5, mode=1) as (server, data, progress):
        got = bytearray()
        while len(got) < len(data):
            line = host.read_until(urc, timeout=10)
            m = urc.fullmatch(line)
            assert m, line[:80]
            n = int(m.group(1))
            assert 0 < n <= 1500
            got += host.read_exactly(n, timeout=10)
            assert host.read_exactly(2, timeout=10) == b"\r\n"       # the push's closing CR LF
        assert bytes(got) == data
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QSSLCLOSE=8,0") == b"\r\nOK\r\n"


def ml302_read_all(host, ssid: int, want: int) -> bytes:
    data = bytearray()
    deadline = time.monotonic() + 20
    while len(data) < want:
        assert time.monotonic() < deadline, f"only {len(data)} of {want}"
        answer = host.at(f"AT+QSSLRECV=1,{ssid},1500")
        m = re.match(rb"\r\n\+QSSLRECV: [0-9.]+:443,TCP,(\d+)\r\n", answer)
        if not m:
            assert answer == b"\r\nOK\r\n", answer[:80]
            host.seen(b'+QSSLURC: "recv",1,%d\r\n' % ssid)
            continue
        n = int(m.group(1))
        assert 0 < n <= 1500
        data += answer[m.end():m.end() + n]
        assert answer[m.end() + n:] == b"\r\n\r\nOK\r\n"
    return bytes(data)


def test_ml302_flood_of_16k_records_read_byte_exact(ml, emulator):
    host, advance, port = ml
    progress: dict = {}
    script, data = flood_script(1024 * 1024, progress, seed=11)
    with Hostile(script) as server:
        route(emulator, server)
        assert host.at(f'AT+QSSLOPEN=3,0,"{NAME}",443,0') == b"\r\nOK\r\n"
        host.seen(b"+QSSLOPEN: 3,0\r\n")
        host.seen(b'+QSSLURC: "recv",1,3\r\n')
        time.sleep(0.5)
        assert host.quiet_for(0.2) == b""
        got = ml302_read_all(host, 3, 128 * 1024)
        assert got == data[:len(got)]
        server.release.set()                  # the server closes: the close's linger ends
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        host.read_until(b"3,CLOSE OK\r\n")
        wait_for(lambda: tcp_fds_to(server.port) == 0, what="connection closed")
    assert host.at("AT") == b"\r\nOK\r\n"


# == a dozen hostile servers at once ===============================================================
def test_twelve_hostile_servers_at_once_each_id_answered_once(modem, emulator):
    """All twelve ids opened on one command line, each to its own server: three good ones,
    garbage, cuts by RST / FIN / close at several flights, a stall, a 16 MiB handshake
    message, data ended by close_notify (TCP open), by a fatal alert, by an RST.  Each id gets
    exactly one +QSSLOPEN with its own code; the data are exact; nothing is left behind."""
    host, advance, port = modem
    assert host.at('AT+QSSLCFG="negotiatetime",1,10') == b"\r\nOK\r\n"
    go = threading.Event()
    payloads = {i: pattern(1000 + 100 * i, seed=i) for i in range(12)}   # a send takes <= 1460

    def huge(p: Peer) -> None:
        msgs = handshake_messages(p.first_flight())
        p.send(record(CT_HANDSHAKE, msgs[0]) + record(CT_HANDSHAKE, b"\x0b\xff\xff\xff" + b"\x00" * 16380))
        for _ in range(1000):
            p.send(record(CT_HANDSHAKE, b"\x30" * 16384))

    scripts = {
        0: lambda p: (p.handshake(), p.echo()),
        1: lambda p: (p.handshake(), p.echo()),
        2: lambda p: (p.handshake(), p.echo()),
        3: cut_script("garbage", "close"),
        4: cut_script("server_hello", "rst"),
        5: cut_script("first_flight", "fin"),
        6: cut_script("ccs", "close"),
        7: cut_script("server_hello", "stall"),
        8: ending_script("close_notify_tcp_open", payloads[8], go, False),
        9: ending_script("fatal_alert_tcp_open", payloads[9], go, False),
        10: ending_script("rst", payloads[10], go, False),
        11: huge,
    }
    codes = {0: 0, 1: 0, 2: 0, 3: 566, 4: 566, 5: 566, 6: 566, 7: 569, 8: 0, 9: 0, 10: 0, 11: 566}
    servers = {i: Hostile(script) for i, script in scripts.items()}
    try:
        for i, server in servers.items():
            route(emulator, server, f"h{i}.example")
        line = ";".join(f'+QSSLOPEN=1,1,{i},"h{i}.example",443,0' for i in range(12))
        assert host.at("AT" + line) == b"\r\nOK\r\n"
        for i in codes:
            if i != 7:
                assert ec2x_answer(host, i) == codes[i], i
        for i in (8, 9, 10):
            host.seen(b'+QSSLURC: "recv",%d\r\n' % i)
        go.set()
        for i in (8, 9, 10):
            host.seen(b'+QSSLURC: "closed",%d\r\n' % i)
            got = ec2x_read_all(host, i, len(payloads[i]))
            assert got == payloads[i], i
            assert ec2x_recv(host, i) == b""
        assert b"+QSSLOPEN: 7," not in host.transcript
        advance(11)
        assert ec2x_answer(host, 7) == 569
        for i in (0, 1, 2):
            assert host.send_data(i, payloads[i]) == b"\r\nSEND OK\r\n"
        for i in (0, 1, 2):
            host.seen(b'+QSSLURC: "recv",%d\r\n' % i)
            assert ec2x_read_all(host, i, len(payloads[i])) == payloads[i], i
        for i in range(12):
            assert host.transcript.count(b"+QSSLOPEN: %d," % i) == 1, i
        for i in (0, 1, 2, 8, 9, 10):
            assert host.at(f"AT+QSSLCLOSE={i},0") == b"\r\nOK\r\n"
        assert host.at("AT+QSSLSTATE") == b"\r\nOK\r\n"
        for server in servers.values():
            wait_for(lambda: tcp_fds_to(server.port) == 0, what="connections released")
        assert host.at("AT") == b"\r\nOK\r\n"
    finally:
        for server in servers.values():
            server.close()


# == DTLS: garbage and corrupted datagrams in the middle of a session ==============================
def test_dtls_garbage_and_corrupted_datagrams_are_discarded_silently(ec2x, net, emulator, pki):
    """A relay in front of `openssl s_server -dtls1_2` sends, before each server datagram, a
    datagram of junk, and before each application datagram a copy of it with its last byte
    flipped (fails the record's MAC).
    DTLS discards invalid records (RFC 6347 4.1.2.7): the handshake completes, each line
    reaches the host once and exactly, the socket stays connected."""
    import select
    from emulator.testing.peers import OpenSslServer
    from tests.e2e.ssl_options_support import cfg, open_ssl, HOST, PORT
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "ALL:@SECLEVEL=0"])
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.connect(server.address)
    stop = threading.Event()
    client = {}

    def relay() -> None:
        while not stop.is_set():
            ready, _, _ = select.select([front, back], [], [], 0.05)
            if front in ready:
                data, client["addr"] = front.recvfrom(65536)
                back.send(data)
            if back in ready and "addr" in client:
                try:
                    data = back.recv(65536)
                except OSError:
                    continue
                front.sendto(b"\x17\xfe\xfd" + b"\xee" * 40, client["addr"])
                if data[0] == CT_APP:              # under the session's keys: a MAC failure
                    front.sendto(data[:-1] + bytes([data[-1] ^ 1]), client["addr"])
                front.sendto(data, client["addr"])

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", front.getsockname()[1])
        cfg(ec2x, "dtls", 0, 1)
        assert open_ssl(ec2x, 0, 0, timeout=20) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        server.write(b"first line\n")
        ec2x.seen(b'+QSSLURC: "recv",0\r\n')
        assert ec2x_recv(ec2x, 0) == b"first line\n"
        server.write(b"second line\n")
        ec2x.seen(b'+QSSLURC: "recv",0\r\n')
        assert ec2x_recv(ec2x, 0) == b"second line\n"
        time.sleep(0.2)
        assert ec2x_recv(ec2x, 0) == b""
        assert b"closed" not in ec2x.transcript
        assert ec2x.send_data(0, b"up after junk\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"up after junk", 10)
        assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    finally:
        stop.set()
        thread.join(2)
        front.close()
        back.close()
        server.stop()
