"""Adversarial: an impatient, badly behaved host and hostile TLS servers against the ML302
profile (OneMO ML302 SSL AT manual, /caCrt.pem slots, "+QSSLURC: "recv",1,<ssid>" URCs).

The EC2x twin of this file is test_adversarial_chaos_host.py; the ML302 files
test_adversarial_ml302_{store,paths,drivers}.py cover single abuses one at a time.  Here the
abuses are chained: the port is closed and reopened at every point of an exchange (half a
command line, the AT+QSSLSEND prompt, half an AT+QSECWRITE, inside a +QSSLRECV payload, with
URCs raised while nobody holds the port), lines are written one byte at a time with CR, CR LF
and LF-only endings, answers are read in odd-sized chunks, commands are pipelined without
waiting, AT+QSECWRITE carries binary data checked with the manual's XOR checksum (§2.2) and
its slots are then used against `openssl s_server` that must really verify them, and
OpenSSL servers (Python ssl, sans-IO) stall, reset or close_notify in and right after the
handshake, or while the host sits at a prompt or in the middle of its reads.

After each disruption the next host must find a coherent module: exact answers in the
manual's framing, AT+QSSLSTATE (§2.9) showing what happened, unread data readable exactly
once (SHA-256 of what the server sent against what was read), nothing crossing sockets, no
traceback or error in the log.  What a hang-up drops by design (docs/behaviour.md, "Command
line and result codes": unread output is discarded, a half-entered prompt abandoned) is
asserted as such.
"""
from __future__ import annotations

import hashlib
import random
import re
import socket
import ssl
import threading
import time

import pytest

from emulator.storage.checksum import xor16
from emulator.testing.host import Host
from emulator.testing.peers import OpenSslServer, TlsServer, default_pki
from tests.e2e.hostile_support import BioPeer
from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.socket_support import OddHost, conn_of, read_exactly_all, wait_for, wait_received

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"

RECV_HEAD = re.compile(rb"\r\n\+QSSLRECV: ([0-9.]+):(\d+),TCP,(\d+)\r\n")
URC = re.compile(rb'\r\n\+QSSLURC: "(?:recv",1|close"),\d\r\n')
FINAL_SEND = re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR|OK)\r\n")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def payload(n: int, seed: int) -> bytes:
    """n seeded random bytes with the ML302's own framing sprinkled in."""
    rnd = random.Random(seed)
    nasty = (b'\r\nOK\r\n\r\n> \r\n+QSSLRECV: 106.12.79.254:443,TCP,5\r\n\x1a\x1b\x00\xff'
             b'\r\n+QSSLURC: "recv",1,0\r\n\r\nSEND OK\r\n0,CLOSE OK\r\n')
    out = bytearray()
    while len(out) < n:
        out += nasty if rnd.random() < 0.2 else rnd.randbytes(rnd.randint(1, 900))
    return bytes(out[:n])


def checksum(data: bytes) -> str:
    """§2.2 by hand: big-endian 16-bit words XORed, an odd tail padded with 0x00."""
    padded = data + b"\x00" * (len(data) % 2)
    value = 0
    for i in range(0, len(padded), 2):
        value ^= padded[i] << 8 | padded[i + 1]
    return f"{value:04x}"


def state_answer(lines: dict[int, str], ip_state: str = "IP PROCESSING") -> bytes:
    """AT+QSSLSTATE's whole answer; lines: ssid -> status (address HOST_IP:443)."""
    body = [f'+QSSLSTATE: "{ip_state}"']
    for i in range(6):
        body.append(f'+QSSLSTATE: {i},"TCP","{HOST_IP}",443,"{lines[i]}",1' if i in lines
                    else f'+QSSLSTATE: {i},"TCP","",0,"INITIAL",1')
    return ("\r\n" + "\r\n".join(body) + "\r\n\r\nOK\r\n").encode()


def finish_and_drain(peer: BioPeer, flight: bytes, received: bytearray) -> None:
    """Send the server's first flight (held back until now) and its last, then read the
    application data into `received` until the client stops (5 s quiet, EOF, reset)."""
    peer.sock.sendall(flight)
    peer.sock.sendall(peer.last_flight())
    peer.sock.settimeout(5)
    try:
        while True:
            peer.feed()
            try:
                while chunk := peer.tls.read(65536):
                    received.extend(chunk)
            except ssl.SSLWantReadError:
                pass
    except (EOFError, socket.timeout, ConnectionResetError, ssl.SSLError):
        pass
    peer.sock.close()


# == the rig =====================================================================================
class Rig:
    """One ML302 on manual time with PDP context 1 active, its current Host, the servers it
    dials (every name routed to 127.0.0.1, its DNS answer HOST_IP as in the manual's §3)."""

    def __init__(self, emulator, open_modem) -> None:
        self.emulator = emulator
        self.host, self.port = open_modem("ml302", manual_time=True)
        self.hosts = [self.host]
        self.servers: list = []
        assert self.host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert self.host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"

    # -- the port --------------------------------------------------------------------------------
    def reopen(self, cls=Host) -> Host:
        """Close the port, wait until the modem has seen the hang-up, open it again."""
        self.host.close()
        wait_for(lambda: not self.port.port.attached, 10, "the modem to see the hang-up")
        self.host = cls(self.port.path)
        self.hosts.append(self.host)
        self.emulator.run(self.port.port.look_for_host)
        return self.host

    def away(self) -> None:
        """Close the port and wait until the modem saw it (nobody holds it now)."""
        self.host.close()
        wait_for(lambda: not self.port.port.attached, 10, "the modem to see the hang-up")

    def back(self, cls=Host) -> Host:
        self.host = cls(self.port.path)
        self.hosts.append(self.host)
        self.emulator.run(self.port.port.look_for_host)
        return self.host

    def advance(self, seconds: float) -> None:
        self.emulator.wait_received(self.port, sum(h.written for h in self.hosts))
        self.emulator.advance(self.port, seconds)

    def close_all(self) -> None:
        for h in self.hosts:
            try:
                h.close()
            except Exception:
                pass
        for s in self.servers:
            s.close()

    # -- servers ------------------------------------------------------------------------------
    def route(self, name: str, port: int) -> None:
        self.emulator.router.add_map(name, 443, "127.0.0.1", port)
        self.emulator.router.add_dns(name, HOST_IP)

    def server(self, name: str = HOST, cert=None, **kw) -> TlsServer:
        kw.setdefault("mode", "sink")
        srv = TlsServer(cert or default_pki().server, session_cache=False, tickets=False,
                        ciphers="DEFAULT:@SECLEVEL=0", **kw)
        self.servers.append(srv)
        self.route(name, srv.port)
        return srv

    # -- commands ---------------------------------------------------------------------------------
    def connect(self, ssid: int):
        """A sink server, socket `ssid` opened to it, and the server's side of it."""
        srv = self.server()
        self.open(ssid)
        return conn_of(srv)

    def open(self, ssid: int, name: str = HOST, code: int = 0, extra: str = "", timeout: float = 20) -> None:
        assert self.host.at(f'AT+QSSLOPEN={ssid},0,"{name}",443,0{extra}') == OK
        self.opened(ssid, code, timeout)

    def opened(self, ssid: int, code: int = 0, timeout: float = 20) -> None:
        line = self.host.read_until(re.compile(rb"\+QSSLOPEN: %d,-?\d+\r\n" % ssid), timeout)
        assert line.endswith(b"+QSSLOPEN: %d,%d\r\n" % (ssid, code)), line
        assert URC.sub(b"", line) == b"\r\n+QSSLOPEN: %d,%d\r\n" % (ssid, code), line

    def close(self, ssid: int) -> None:
        self.host.write(f"AT+QSSLCLOSE={ssid}\r")
        got = self.host.read_until(f"{ssid},CLOSE OK\r\n".encode(), 30)
        assert URC.sub(b"", got) == OK + f"\r\n{ssid},CLOSE OK\r\n".encode(), got

    def state(self) -> bytes:
        answer = self.host.at("AT+QSSLSTATE")
        return URC.sub(b"", answer)

    def recv_answer(self, n: int = 1500) -> bytes:
        """The answer to one AT+QSSLRECV already written: before it nothing but URCs, the
        framing exact (§2.8: head, data, CR LF, OK; no data: OK alone)."""
        before = self.host.read_until(re.compile(RECV_HEAD.pattern + rb"|\r\nOK\r\n"), 20)
        m = RECV_HEAD.search(before)
        if m is None:
            assert URC.sub(b"", before) == OK, before
            return b""
        assert URC.sub(b"", before[:m.start()]) == b"", f"stale bytes before the answer: {before[:200]!r}"
        assert m.group(1) == HOST_IP.encode() and m.group(2) == b"443", before
        size = int(m.group(3))
        assert 1 <= size <= n
        data = self.host.read_exactly(size, timeout=20)
        assert self.host.read_exactly(8, timeout=20) == b"\r\n\r\nOK\r\n"
        return data

    def recv_once(self, ssid: int, n: int = 1500) -> bytes:
        self.host.write(f"AT+QSSLRECV=1,{ssid},{n}\r")
        return self.recv_answer(n)

    def recv_all(self, ssid: int, want: int, n: int = 1500, timeout: float = 30) -> bytes:
        """AT+QSSLRECV until `want` bytes came; then one more must be OK alone."""
        return read_exactly_all(lambda: self.recv_once(ssid, n), want, timeout)

    def send(self, ssid: int, data: bytes) -> bytes:
        self.host.write(f"AT+QSSLSEND={ssid}\r")
        got = self.host.read_until(re.compile(rb"\r\n> |\r\nERROR\r\n"))
        if got.endswith(ERROR):
            return ERROR
        assert URC.sub(b"", got) == b"\r\n> ", got
        self.host.write(data + CTRL_Z)
        return URC.sub(b"", self.host.read_until(FINAL_SEND, 20))

    def secwrite(self, slot: int, data: bytes, bytewise: bool = False) -> bytes:
        assert self.host.at(f"AT+QSECDEL={slot}") == OK
        line = f"AT+QSECWRITE={slot}\r".encode()
        for piece in ([line[i:i + 1] for i in range(len(line))] if bytewise else [line]):
            self.host.write(piece)
        assert self.host.read_until(b"> ") == b"\r\n> "
        body = data + CTRL_Z
        for piece in ([body[i:i + 1] for i in range(len(body))] if bytewise else [body]):
            self.host.write(piece)
        return self.host.read_until(re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: \d+)\r\n"), 30)


def wait_unread(emulator, ssid: int, n: int, timeout: float = 20) -> None:
    """Until the modem holds n unread bytes of ssid (the control API's state)."""
    def unread():
        for s in emulator.control("state")["sockets"]:
            if s["id"] == ssid:
                return s["unread"]
        return -1
    wait_for(lambda: unread() >= n, timeout, f"{n} unread bytes on ssid {ssid}")


@pytest.fixture
def rig(emulator, open_modem, strict_log):
    r = Rig(emulator, open_modem)
    r.caplog = strict_log
    yield r
    r.close_all()


# == closing the port at every point ===========================================================
def test_half_line_then_bytewise_lines_with_cr_crlf_and_lf_endings(rig):
    """A host leaves in the middle of "AT+QSSLRECV=1,0,15"; the next one writes byte by
    byte, its lines ending CR, CR LF and (a sloppy one) LF alone, which ends nothing: the
    LF-ended line is not run on its own.  Every byte the server sent is read exactly once."""
    stream = payload(6000, 1)
    conn = rig.connect(0)
    conn.send(stream)
    assert rig.host.read_until(b'\r\n+QSSLURC: "recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    wait_unread(rig.emulator, 0, len(stream))
    got = bytearray(rig.recv_once(0, 700))
    rig.host.write(b"AT+QSSLRECV=1,0,15")                 # half a line, no CR
    rig.reopen()

    def bytewise(line: bytes) -> None:
        for b in line:
            rig.host.write(bytes([b]))
    bytewise(b"\r")                                       # does not end the departed host's line
    assert rig.host.quiet_for(0.3) == b""
    bytewise(b"AT+QSSLSTATE\r")
    assert rig.host.read_until(b"\r\nOK\r\n") == state_answer({0: "CONNECTED"})
    for end in (b"\r", b"\r\n", b"\r", b"\r\n"):
        bytewise(b"AT+QSSLRECV=1,0,611" + end)
        got += rig.recv_answer(611)
    bytewise(b"AT+QSSLRECV=1,0,1500\n")                   # LF alone: the line goes on
    assert rig.host.quiet_for(0.3) == b""
    bytewise(b"AT+QSSLRECV=1,0,1500\n")
    assert rig.host.quiet_for(0.3) == b""
    # ... until a CR ends it: one line with LFs inside, one ERROR (docs: only S3 ends a
    # line, a control character is no space), and no byte taken from the socket
    bytewise(b"\r")
    assert rig.host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n")) == ERROR
    assert rig.host.quiet_for(0.2) == b""
    rig.host.write(b"AT\r\n")
    assert rig.host.read_until(OK) == OK
    got += rig.recv_all(0, len(stream) - len(got))
    assert sha(bytes(got)) == sha(stream)
    assert rig.state() == state_answer({0: "CONNECTED"})


def test_close_at_the_qsslsend_prompt_while_urcs_are_held_then_news_and_data_once(rig):
    """The host sits at "> " of socket 1 with half its data typed; meanwhile socket 0's
    server sends and closes (its URCs are held: the prompt) and the host leaves.  The next
    host meets command state: nothing of the half send went out, socket 0 is REMOTE
    CLOSING with its data readable once, socket 1 still CONNECTED and usable."""
    news = payload(5000, 2)
    srv0 = rig.server("zero.test")
    srv1 = rig.server("one.test")
    rig.open(0, "zero.test")
    c0 = conn_of(srv0)
    rig.open(1, "one.test")
    c1 = conn_of(srv1)
    rig.host.write(b"AT+QSSLSEND=1\r")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.write(b"half of what I meant to send")
    c0.send(news)
    c0.close(close_notify=True)
    wait_for(lambda: c0.done.is_set(), 20, "server 0 closed")
    wait_unread(rig.emulator, 0, len(news))
    assert rig.host.quiet_for(0.2) == b""                # nothing inside the prompt
    rig.reopen()
    assert rig.host.at("AT") == OK
    assert rig.state() == state_answer({0: "REMOTE CLOSING", 1: "CONNECTED"})
    assert rig.recv_all(0, len(news)) == news
    assert rig.send(0, b"too late") == ERROR
    assert rig.send(1, b"fresh") == b"\r\nSEND OK\r\n"
    assert wait_received(c1, 5) == b"fresh"
    time.sleep(0.2)
    assert bytes(c1.received) == b"fresh"
    rig.host.write(b'AT+QSSLOPEN=0,0,"zero.test",443,0\r')   # still in use until closed: -2
    assert rig.host.read_until(b"+QSSLOPEN: 0,-2\r\n", 20) == OK + b"\r\n+QSSLOPEN: 0,-2\r\n"
    rig.close(0)
    rig.close(1)
    assert rig.state() == state_answer({0: "CLOSED", 1: "CLOSED"}, "IP STATUS")


def test_close_mid_qsslrecv_payload_in_odd_chunks_drops_that_answer_only(rig):
    """The host reads a +QSSLRECV answer 1, 3, 7 bytes at a time and leaves inside its
    data: that answer's rest is gone (docs: unread output is discarded), the next host
    gets nothing stale in front of its first answer and the stream's tail exactly once."""
    stream = payload(9000, 3)
    conn = rig.connect(0)
    rig.away()
    rig.back(OddHost)
    assert rig.host.at("AT") == OK
    conn.send(stream)
    wait_unread(rig.emulator, 0, len(stream))
    rig.host.read_until(b'\r\n+QSSLURC: "recv",1,0\r\n', 20)
    got = bytearray(rig.recv_once(0, 1000))
    rig.host.write(b"AT+QSSLRECV=1,0,1500\r")
    head = rig.host.read_until(RECV_HEAD, 20)
    assert head == b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,1500\r\n"
    part = rig.host.read_exactly(101)
    assert part == stream[1000:1101]
    rig.reopen(OddHost)                                   # 1399 bytes, CR LF, OK never read
    assert rig.host.at("AT") == OK
    rest = rig.recv_all(0, len(stream) - 2500, n=997)
    assert sha(bytes(got) + part + rest) == sha(stream[:1101] + stream[2500:])
    assert rig.state() == state_answer({0: "CONNECTED"})


def test_urcs_raised_while_nobody_holds_the_port_then_one_fresh_recv_urc(rig):
    """Data arrive on three sockets and one server closes while the port is closed (their
    URCs go to nobody); the next host polls with AT+QSSLRECV and AT+QSSLSTATE, reads every
    stream once; new data into an emptied socket raises a fresh "recv" URC."""
    streams = {ssid: payload(2500 + 700 * ssid, 10 + ssid) for ssid in (0, 3, 5)}
    conns = {}
    for ssid in streams:
        srv = rig.server(f"s{ssid}.test")
        rig.open(ssid, f"s{ssid}.test")
        conns[ssid] = conn_of(srv)
    rig.away()
    for ssid, data in streams.items():
        conns[ssid].send(data)
    conns[3].close(close_notify=True)
    for ssid, data in streams.items():
        wait_unread(rig.emulator, ssid, len(data))
    wait_for(lambda: conns[3].done.is_set(), 20, "server 3 closed")
    rig.back()
    assert rig.host.at("AT") == OK
    wait_for(lambda: rig.host.at("AT+QSSLSTATE").count(b"REMOTE CLOSING") == 1, 20, "the close seen")
    assert rig.state() == state_answer({0: "CONNECTED", 3: "REMOTE CLOSING", 5: "CONNECTED"})
    for ssid in (5, 3, 0):
        assert sha(rig.recv_all(ssid, len(streams[ssid]))) == sha(streams[ssid])
    assert rig.host.quiet_for(0.2) == b""                 # no late URC for what was read
    conns[5].send(b"after")
    assert rig.host.read_until(b'\r\n+QSSLURC: "recv",1,5\r\n', 20) == b'\r\n+QSSLURC: "recv",1,5\r\n'
    assert rig.recv_all(5, 5) == b"after"
    for ssid in streams:
        rig.close(ssid)


# == AT+QSECWRITE abuse, then the slots used for real ===========================================
def test_secwrite_binary_bytewise_checksum_and_a_hangup_mid_data(rig):
    """§2.2: the answer's <uploadsize> and <checksum> are those of the bytes sent (NUL,
    0xFF, CR, LF, an odd length: the manual's 0x00 pad), written one byte at a time or in
    one go; a host that leaves in the middle of the data stores nothing (the slot reads
    +CME ERROR: 22), and the next write is not joined to the abandoned one."""
    blob = bytes(range(256)).replace(CTRL_Z, b"").replace(ESC, b"") * 3 + b"\x00\xff\x00"
    assert len(blob) % 2 == 1
    assert rig.secwrite(1, blob, bytewise=True) == \
        f"\r\n+QSECWRITE: {len(blob)},{checksum(blob)}\r\n\r\nOK\r\n".encode()
    assert checksum(blob) == f"{xor16(blob):04x}"
    assert rig.host.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{checksum(blob)}\r\n\r\nOK\r\n".encode()
    # a hang-up in the middle of the data: nothing stored
    assert rig.host.at("AT+QSECDEL=1") == OK
    rig.host.write(b"AT+QSECWRITE=1\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.write(blob[:300])
    rig.reopen()
    assert rig.host.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    tail = b"\xff\xfe\x00\r\n"
    assert rig.secwrite(1, tail) == f"\r\n+QSECWRITE: 5,{checksum(tail)}\r\n\r\nOK\r\n".encode()
    assert rig.host.at("AT+QSECREAD=1") == f"\r\n+QSECREAD: 1,{checksum(tail)}\r\n\r\nOK\r\n".encode()
    # "a timeout mid-data": the prompt has none (docs); an hour of modem time, then Ctrl+Z
    assert rig.host.at("AT+QSECDEL=2") == OK
    rig.host.write(b"AT+QSECWRITE=2\r")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    rig.host.write(b"\x00\x01")
    rig.advance(3600)
    assert rig.host.quiet_for(0.2) == b""
    rig.host.write(b"\x02" + CTRL_Z)
    three = checksum(b"\x00\x01\x02")
    assert three == "0201"                                # 0x0001 ^ 0x0200
    assert rig.host.read_until(OK) == f"\r\n+QSECWRITE: 3,{three}\r\n\r\nOK\r\n".encode()


def test_host_detects_a_corrupted_upload_by_checksum_and_rewrites_before_a_verified_open(rig, tmp_path):
    """A host uploads its CA, compares the answer's checksum with its own (§2.2) and finds
    it wrong (a byte flipped on the line: the test sends a corrupted copy); it deletes and
    rewrites with CR LF line endings, one byte at a time.  `openssl s_server` (-Verify:
    a client certificate required) then must really check the slots: seclevel 2 with the
    right CA, client certificate and key connects and the server sees the modem's client
    certificate; the corrupted CA had failed the open (-1) and left the module coherent."""
    pki = default_pki()
    ca = pki.ca.cert_pem
    corrupt = ca.replace(b"MII", b"MIJ", 1)
    answer = rig.secwrite(0, corrupt)
    assert answer == f"\r\n+QSECWRITE: {len(corrupt)},{checksum(corrupt)}\r\n\r\nOK\r\n".encode()
    assert checksum(corrupt) != checksum(ca)                  # the host notices
    for slot, data in ((1, pki.client.cert_pem), (2, pki.client.key_pem)):
        assert rig.secwrite(slot, data) == f"\r\n+QSECWRITE: {len(data)},{checksum(data)}\r\n\r\nOK\r\n".encode()
    assert rig.host.at('AT+QSSLCFG="seclevel",0,2') == OK
    args = ["-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path),
            "-CAfile", str(pki.ca.cert_path), "-Verify", "1", "-tls1_2", "-cipher", "ALL:@SECLEVEL=0"]
    with OpenSslServer(args) as server:
        rig.route(HOST, server.port)
        rig.open(0, code=-1)                               # the corrupted CA verifies nothing
        assert rig.state() == state_answer({0: "CLOSED"}, "IP STATUS")
        crlf = ca.replace(b"\n", b"\r\n")
        assert rig.secwrite(0, crlf, bytewise=True) == \
            f"\r\n+QSECWRITE: {len(crlf)},{checksum(crlf)}\r\n\r\nOK\r\n".encode()
        assert rig.host.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{checksum(crlf)}\r\n\r\nOK\r\n".encode()
        mark = server.mark()
        rig.open(0)
        server.wait_for_output(rb"CIPHER is", 20, since=mark)
        assert b"modem client" in server.stdout[mark:] or b"modem client" in server.stderr, server.stdout[mark:]
        assert rig.send(0, b"verified both ways\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"verified both ways", 20, since=mark)
        server.write(b"from s_server\n")
        assert rig.host.read_until(b'\r\n+QSSLURC: "recv",1,0\r\n', 20) == b'\r\n+QSSLURC: "recv",1,0\r\n'
        assert rig.recv_all(0, 14) == b"from s_server\n"
        rig.close(0)


def test_wrong_ca_and_swapped_slots_against_s_server_fail_cleanly_then_right_material_works(rig):
    """The slots are written in the wrong order (key in the certificate slot), then a wrong
    CA: each open against `openssl s_server` fails with -1 (no traceback, the ssid CLOSED
    and reusable at once); the right material then connects on the same ssid."""
    pki = default_pki()
    args = ["-cert", str(pki.server.cert_path), "-key", str(pki.server.key_path),
            "-CAfile", str(pki.ca.cert_path), "-Verify", "1", "-tls1_2", "-cipher", "ALL:@SECLEVEL=0"]
    with OpenSslServer(args) as server:
        rig.route(HOST, server.port)
        assert rig.host.at('AT+QSSLCFG="seclevel",0,2') == OK
        for ca, cert, key in ((pki.ca.cert_pem, pki.client.key_pem, pki.client.cert_pem),
                              (pki.wrong_ca.cert_pem, pki.client.cert_pem, pki.client.key_pem)):
            for slot, data in enumerate((ca, cert, key)):
                assert rig.secwrite(slot, data).endswith(b"\r\n\r\nOK\r\n")
            rig.open(4, code=-1)
            assert rig.state() == state_answer({4: "CLOSED"}, "IP STATUS")
        assert rig.secwrite(0, pki.ca.cert_pem).endswith(b"\r\n\r\nOK\r\n")
        rig.route("not-the-name.test", server.port)          # right CA, another name dialled
        rig.open(4, "not-the-name.test", code=-1)
        mark = server.mark()
        rig.open(4)
        server.wait_for_output(rb"CIPHER is", 20, since=mark)
        assert rig.state() == state_answer({4: "CONNECTED"})
        rig.close(4)


# == hostile servers around the handshake ======================================================
class RawServer:
    """A TCP listener whose one connection a test thread drives by hand (BioPeer)."""

    def __init__(self, rig: Rig, name: str, script) -> None:
        self.lst = socket.create_server(("127.0.0.1", 0))
        rig.route(name, self.lst.getsockname()[1])
        self.error: BaseException | None = None
        self.done = threading.Event()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        default_pki().server.configure_cert(ctx)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

        def run() -> None:
            try:
                self.lst.settimeout(20)
                sock, _ = self.lst.accept()
                self.peer = BioPeer(ctx, sock)
                script(self.peer)
            except BaseException as exc:        # (the test checks it)
                self.error = exc
            finally:
                self.done.set()
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.lst.close()
        self.done.wait(5)


CLOSE_NOTIFY_ALERT = b"\x15\x03\x03\x00\x02\x01\x00"      # an unencrypted warning close_notify


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


@pytest.mark.parametrize("how", ["reset_after_hello", "close_notify_after_hello", "fin_after_first_flight",
                                 "reset_after_first_flight", "close_notify_in_first_flight"])
def test_server_dies_mid_handshake_is_minus_1_once_and_the_ssid_is_reusable(rig, how):
    """Hostile servers in the middle of the handshake: RST or a clear close_notify right
    after the ClientHello, FIN / RST after the server's first flight, a close_notify glued to
    it.  §2.5: OK then "+QSSLOPEN: <ssid>,-1", exactly once, long before <timeout>; the ssid
    shows CLOSED (§2.9), a socket already connected on another ssid is untouched, and the
    same ssid opens again at once."""
    good = rig.server("good.test")
    rig.open(2, "good.test")
    gconn = conn_of(good)

    def script(peer: BioPeer) -> None:
        flight = peer.first_flight()
        if how == "reset_after_hello":
            reset(peer.sock)
        elif how == "close_notify_after_hello":
            peer.sock.sendall(CLOSE_NOTIFY_ALERT)
            peer.sock.shutdown(socket.SHUT_WR)
            time.sleep(1)
            peer.sock.close()
        elif how == "fin_after_first_flight":
            peer.sock.sendall(flight)
            peer.sock.shutdown(socket.SHUT_WR)
            time.sleep(1)
            peer.sock.close()
        elif how == "reset_after_first_flight":
            peer.sock.sendall(flight)
            try:
                peer.feed()                    # the client's key exchange
            except EOFError:
                pass
            reset(peer.sock)
        else:
            peer.sock.sendall(flight + CLOSE_NOTIFY_ALERT)
            time.sleep(1)
            peer.sock.close()
    raw = RawServer(rig, "hostile.test", script)
    try:
        assert rig.host.at('AT+QSSLOPEN=0,0,"hostile.test",443,0,60') == OK
        rig.opened(0, -1, timeout=20)                     # real time, no advance: not the timeout
        assert raw.done.wait(10) and raw.error is None, raw.error
        assert rig.host.quiet_for(0.3) == b""
        assert rig.host.at("AT+QSSLSTATE") == state_answer({0: "CLOSED", 2: "CONNECTED"})
        rig.advance(61)                                   # the <timeout> passes: nothing more
        assert rig.host.quiet_for(0.3) == b""
        gconn.send(b"still here")
        assert rig.host.read_until(b'\r\n+QSSLURC: "recv",1,2\r\n', 20) == b'\r\n+QSSLURC: "recv",1,2\r\n'
        assert rig.recv_all(2, 10) == b"still here"
        srv = rig.server("again.test")
        rig.open(0, "again.test")
        conn_of(srv)
        assert rig.state() == state_answer({0: "CONNECTED", 2: "CONNECTED"})
        rig.close(0)
        rig.close(2)
    finally:
        raw.close()


def test_timeout_bounds_a_server_that_stalls_after_its_first_flight(rig):
    """The server answers the ClientHello and then stalls (never reads the client's key
    exchange, never closes).  <timeout> 10 on the modem's clock: nothing at 9.9 s, -1 at
    10 s, once; the stalled TCP connection is closed by the modem; the host was free to
    use the port meanwhile (pipelined commands answered in order)."""
    release = threading.Event()

    def script(peer: BioPeer) -> None:
        peer.sock.sendall(peer.first_flight())
        release.wait(30)
        peer.sock.settimeout(10)
        try:                                   # the modem's key exchange, then its FIN / RST
            while peer.sock.recv(65536):
                pass
        except (ConnectionResetError, socket.timeout):
            pass
    raw = RawServer(rig, "stall.test", script)
    try:
        assert rig.host.at('AT+QSSLOPEN=1,0,"stall.test",443,0,10') == OK
        wait_for(lambda: b'"CONNECTING"' in rig.host.at("AT+QSSLSTATE"), 20, "CONNECTING")
        time.sleep(0.5)                                   # (its key exchange left: nothing comes back)
        rig.host.write(b"AT+QSSLSTATE\rAT+QSECREAD=0\rAT\r")
        expected = state_answer({1: "CONNECTING"}) + b"\r\n+CME ERROR: 22\r\n" + OK
        assert rig.host.read_exactly(len(expected)) == expected
        rig.advance(9.9)
        assert rig.host.quiet_for(0.2) == b""
        rig.advance(0.1)
        rig.opened(1, -1)
        release.set()
        assert raw.done.wait(15) and raw.error is None, raw.error
        assert rig.host.quiet_for(0.3) == b""
        assert rig.state() == state_answer({1: "CLOSED"}, "IP STATUS")
    finally:
        release.set()
        raw.close()


def test_server_sends_and_close_notifies_right_after_the_handshake(rig):
    """A server whose data and close_notify come with its last handshake flight: the open's
    "+QSSLOPEN: 0,0" first, then "recv", then "close" (§2.10), each once; the data readable
    exactly once; REMOTE CLOSING until AT+QSSLCLOSE."""
    parting = payload(3000, 20)
    for i in range(4):
        srv = rig.server(f"brief{i}.test", mode="send_then_close", payload=parting)
        assert rig.host.at(f'AT+QSSLOPEN={i},0,"brief{i}.test",443,0') == OK
        expected = (f'\r\n+QSSLOPEN: {i},0\r\n\r\n+QSSLURC: "recv",1,{i}\r\n'
                    f'\r\n+QSSLURC: "close",{i}\r\n').encode()
        assert rig.host.read_exactly(len(expected), timeout=20) == expected
        assert rig.recv_all(i, len(parting)) == parting
        assert b"REMOTE CLOSING" in rig.state()
        rig.close(i)
        srv.wait_done(timeout=10)
        assert rig.host.quiet_for(0.2) == b""
    rig.advance(91)                         # every open's default <timeout> (90 s) passes
    assert rig.host.quiet_for(0.3) == b""
    assert rig.state() == state_answer({i: "CLOSED" for i in range(4)}, "IP STATUS")


# == server close / reset while the host is at a prompt or mid read ===============================
@pytest.mark.parametrize("how", ["close_notify", "fin", "reset"])
def test_peer_gone_at_the_prompt_and_mid_pipelined_reads(rig, how):
    """Socket 0's server goes while the host sits at the AT+QSSLSEND prompt with data
    typed, and while ten pipelined AT+QSSLRECV are being answered: the send is ERROR or
    SEND FAIL (never SEND OK: the connection is gone), one "close" URC after the answer, the
    data received before the close are read exactly once, in order, with every answer framed;
    a second socket's data never cross over."""
    stream = payload(8000, 30 + len(how))
    other = payload(4000, 40)
    srv0, srv1 = rig.server("a.test"), rig.server("b.test")
    rig.open(0, "a.test")
    c0 = conn_of(srv0)
    rig.open(1, "b.test")
    c1 = conn_of(srv1)
    c0.send(stream)
    c1.send(other)
    wait_unread(rig.emulator, 0, len(stream))
    wait_unread(rig.emulator, 1, len(other))
    rig.host.write(b"AT+QSSLSEND=0\r")
    assert rig.host.read_until(b"> ", 20).endswith(b"\r\n> ")
    rig.host.write(b"typed before the server went")
    c0.close(close_notify=how == "close_notify", reset=how == "reset")
    wait_for(lambda: c0.done.is_set(), 20, "server 0 gone")
    wait_for(lambda: any(s["id"] == 0 and s["state"] == "CLOSING"
                         for s in rig.emulator.control("state")["sockets"]), 20, "socket 0 closing")
    rig.host.write(CTRL_Z)
    result = rig.host.read_until(FINAL_SEND, 20)
    assert URC.sub(b"", result) in (ERROR, b"\r\nSEND FAIL\r\n"), result
    rig.host.write(b"AT+QSSLRECV=1,0,333\rAT+QSSLRECV=1,1,444\r" * 5)
    got0, got1 = bytearray(), bytearray()
    for _ in range(5):
        got0 += rig.recv_answer(333)
        got1 += rig.recv_answer(444)
    if how != "reset":
        got0 += rig.recv_all(0, len(stream) - len(got0))
        assert sha(bytes(got0)) == sha(stream)
    else:                                     # an RST may destroy what was not read: a prefix
        assert stream.startswith(bytes(got0))
    got1 += rig.recv_all(1, len(other) - len(got1))
    assert sha(bytes(got1)) == sha(other)
    assert rig.host.transcript.count(b'+QSSLURC: "close",0') == 1
    assert b'+QSSLURC: "close",1' not in rig.host.transcript
    assert rig.state() == state_answer({0: "REMOTE CLOSING", 1: "CONNECTED"})
    assert bytes(c0.received) == b""                      # nothing of the abandoned send
    rig.close(0)
    rig.close(1)


# == several sockets at once, pipelined, in odd chunks =============================================
def test_six_sockets_pipelined_both_ways_never_cross(rig):
    """Six ssids to six echo-less servers; each round the host writes, without waiting, one
    AT+QSSLSEND (data, Ctrl+Z) per socket and one AT+QSSLRECV per socket, then reads the
    answers in odd chunks while the servers keep sending.  What each server got and what the
    host read per ssid are compared by SHA-256 with what was sent."""
    rig.away()
    rig.back(OddHost)
    assert rig.host.at("AT") == OK
    conns = {}
    for ssid in range(6):
        srv = rig.server(f"six{ssid}.test")
        rig.open(ssid, f"six{ssid}.test")
        conns[ssid] = conn_of(srv)
    down = {ssid: payload(6000, 50 + ssid) for ssid in range(6)}
    up = {ssid: payload(2920, 60 + ssid).replace(CTRL_Z, b"Z").replace(ESC, b"E") for ssid in range(6)}
    got = {ssid: bytearray() for ssid in range(6)}
    for rnd in range(4):
        for ssid in range(6):
            conns[ssid].send(down[ssid][rnd * 1500:(rnd + 1) * 1500])
        chunk = {ssid: up[ssid][rnd * 730:(rnd + 1) * 730] for ssid in range(6)}
        rig.host.write(b"".join(b"AT+QSSLSEND=%d\r" % s + chunk[s] + CTRL_Z for s in range(6)))
        for ssid in range(6):
            answer = rig.host.read_until(b"SEND OK\r\n", 20)
            assert URC.sub(b"", answer) == b"\r\n> \r\nSEND OK\r\n", answer
        rig.host.write(b"".join(b"AT+QSSLRECV=1,%d,1021\r" % s for s in range(6)))
        for ssid in range(6):
            got[ssid] += rig.recv_answer(1021)
    for ssid in range(6):
        got[ssid] += rig.recv_all(ssid, len(down[ssid]) - len(got[ssid]))
        assert sha(bytes(got[ssid])) == sha(down[ssid]), ssid
        assert sha(wait_received(conns[ssid], len(up[ssid]))) == sha(up[ssid]), ssid
    time.sleep(0.2)
    for ssid in range(6):
        assert bytes(conns[ssid].received) == up[ssid]
    assert rig.state() == state_answer({i: "CONNECTED" for i in range(6)})
    rig.host.write(b"".join(b"AT+QSSLCLOSE=%d\r" % s for s in range(6)))
    expected = b"".join(OK + b"\r\n%d,CLOSE OK\r\n" % s for s in range(6))
    assert rig.host.read_exactly(len(expected), 60) == expected


def test_pipelined_open_send_recv_close_in_one_write_then_a_hangup_mid_answer(rig):
    """One write: AT+QSSLOPEN, AT+QSSLSTATE, AT+QSSLSEND with its data, AT+QSSLRECV; the
    echo's answer arrives while the host reads; then the same again and the host hangs up
    right after writing (its answers go to nobody).  The next host finds the second
    socket CONNECTED, the echo of its send waiting, exactly once."""
    srv = rig.server(mode="echo")
    rig.host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,0\rAT+QSSLSTATE\r'.encode())
    assert rig.host.read_until(OK) == OK
    state = rig.host.read_until(b"\r\nOK\r\n", 20)
    assert state in (state_answer({0: "CONNECTING"}), state_answer({0: "CONNECTED"})), state
    rig.opened(0)
    conn_of(srv)
    rig.host.write(b"AT+QSSLSEND=0\rping 0" + CTRL_Z + b"AT+QSSLSTATE\r")
    got = rig.host.read_until(b"\r\nOK\r\n", 20)
    assert URC.sub(b"", got) == b"\r\n> \r\nSEND OK\r\n" + state_answer({0: "CONNECTED"}), got
    wait_unread(rig.emulator, 0, 6)
    assert rig.recv_all(0, 6) == b"ping 0"
    rig.open(3)
    conn_of(srv)
    rig.host.write(b"AT+QSSLSEND=3\rping 3" + CTRL_Z + b"AT+QSSLSTATE\r")
    rig.emulator.wait_received(rig.port, sum(h.written for h in rig.hosts))
    rig.reopen()
    wait_unread(rig.emulator, 3, 6)
    # The echo of "ping 3" may come in before or after the new host attached (a loaded
    # machine): its "recv",1,3 URC then reaches the new host ahead of this OK, or is lost with
    # the old host's unread output (docs/behaviour.md, hang-up).  Either is allowed.
    assert URC.sub(b"", rig.host.at("AT")) == OK
    assert rig.state() == state_answer({0: "CONNECTED", 3: "CONNECTED"})
    assert rig.recv_all(3, 6) == b"ping 3"
    assert rig.recv_once(0) == b""
    assert srv.connections[1].received == bytearray(b"ping 3")
    rig.close(0)
    rig.close(3)


# == transparent mode (connectmode 1) =============================================================
def test_transparent_host_leaves_online_then_ato_gets_what_came_meanwhile(rig):
    """connectmode 1: the host streams up, leaves while online; the server sends while
    nobody holds the port.  The next host: AT works, AT+QSSLRECV is ERROR (the bytes wait
    for ATO, docs), ATO gives them first and exactly once, every byte the hosts wrote
    reached the server, once."""
    up1, up2, down1, down2 = (payload(n, 70 + i).replace(b"+", b"-")
                              for i, n in enumerate((3000, 2000, 4000, 150_000)))
    assert rig.host.at("ATS12=10") == OK
    srv = rig.server()
    rig.host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r'.encode())
    assert rig.host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    rig.host.write(up1)
    conn.send(down1)
    assert rig.host.read_exactly(len(down1), 20) == down1
    assert wait_received(conn, len(up1)) == up1
    rig.host.write(up2)
    rig.away()
    assert wait_received(conn, len(up1) + len(up2)) == up1 + up2
    conn.send(down2)                            # past ssl.recv_buffer: TCP reading pauses
    wait_unread(rig.emulator, 0, 60_000)
    rig.back()
    assert rig.host.at("AT") == OK
    assert rig.host.at("AT+QSSLRECV=1,0,1500") == ERROR
    assert rig.state() == state_answer({0: "CONNECTED"})
    assert rig.host.at("ATO") == b"\r\nCONNECT\r\n"
    assert rig.host.read_exactly(len(down2), 20) == down2
    assert rig.host.quiet_for(0.3) == b""
    rig.advance(0.3)
    rig.host.write(b"+++")
    rig.advance(0.3)
    assert rig.host.read_until(OK, 10) == OK
    rig.close(0)
    time.sleep(0.2)
    assert sha(bytes(conn.received)) == sha(up1 + up2)


# == hang-ups while a command is still pending =====================================================
def test_host_leaves_during_a_transparent_open_then_the_next_host_meets_command_state(rig):
    """AT+QSSLOPEN with connectmode 1 has no OK: the port waits for the handshake.  The host
    gives up and closes the port while the server holds its first flight back; the handshake
    then completes while nobody holds the port.  docs/behaviour.md: a pending command's
    answer is not written after its host left, and the next host meets command state -- its
    "AT" must be answered OK, never be sent into the TLS connection as online data; the
    connection stays open (as a host closing the device while online) and ATO returns to it."""
    release = threading.Event()
    received = bytearray()

    def script(peer: BioPeer) -> None:
        flight = peer.first_flight()
        release.wait(30)
        finish_and_drain(peer, flight, received)
    raw = RawServer(rig, "late.test", script)
    try:
        assert rig.host.at("ATS12=10") == OK
        rig.host.write(b'AT+QSSLOPEN=2,0,"late.test",443,1\r')
        wait_for(lambda: getattr(raw, "peer", None) is not None and raw.peer.raw_in, 20, "the ClientHello")
        assert rig.host.quiet_for(0.3) == b""
        rig.away()
        release.set()
        wait_for(lambda: any(s["id"] == 2 and s["state"] == "CONNECTED"
                             for s in rig.emulator.control("state")["sockets"]), 20, "connected")
        time.sleep(0.3)
        rig.back()
        assert rig.host.at("AT", timeout=15) == OK
        assert rig.state() == state_answer({2: "CONNECTED"})
        assert bytes(received) == b""
        assert rig.host.at("ATO") == b"\r\nCONNECT\r\n"
        rig.host.write(b"online at last")
        wait_for(lambda: bytes(received) == b"online at last", 20, "the online bytes")
        rig.advance(0.3)
        rig.host.write(b"+++")
        rig.advance(0.3)
        assert rig.host.read_until(OK, 10) == OK
        rig.close(2)
    finally:
        release.set()
        raw.close()


def test_host_leaves_during_a_lingering_close_and_the_next_host_gets_no_stale_answer(rig):
    """AT+QSSLCLOSE to a server that never answers close_notify nor closes: the close
    lingers 10 s of modem time and the port is busy.  The host leaves meanwhile; the next
    one writes AT+QSSLSTATE, which waits behind the close: after the 10 s its answer comes
    alone (no stale "OK" / "0,CLOSE OK" of the departed host in front of it, docs), the
    socket CLOSED, and another socket's data received meanwhile are read once."""
    hold = threading.Event()

    def deaf(conn) -> None:
        while conn.recv():
            pass
        hold.wait(30)
    deaf_srv = rig.server("deaf.test", handler=deaf)
    other = rig.server("other.test")
    news = payload(3000, 80)
    try:
        rig.open(0, "deaf.test")
        dconn = conn_of(deaf_srv)
        rig.open(1, "other.test")
        oconn = conn_of(other)
        rig.host.write(b"AT+QSSLCLOSE=0\r")
        wait_for(lambda: dconn.close_notify_received, 20, "close_notify")
        assert rig.host.quiet_for(0.2) == b""
        rig.away()
        oconn.send(news)
        rig.back()
        rig.host.write(b"AT+QSSLSTATE\r")
        assert rig.host.quiet_for(0.3) == b""
        rig.advance(10)
        answer = rig.host.read_until(b"\r\nOK\r\n", 20)
        assert URC.sub(b"", answer) == state_answer({0: "CLOSED", 1: "CONNECTED"}), answer
        wait_unread(rig.emulator, 1, len(news))
        assert rig.recv_all(1, len(news)) == news
        assert b"CLOSE OK" not in rig.host.transcript
        rig.close(1)
    finally:
        hold.set()


def test_big_stream_through_flow_control_with_hangups_inside_answers(rig):
    """200 KB from the server (past ssl.recv_buffer: the modem pauses TCP reading and goes
    on as the host reads); the host reads with AT+QSSLRECV=1,0,1500 and hangs up inside
    every 12th answer.  What it read is the stream minus exactly the rest of each
    interrupted answer: no byte duplicated, reordered or lost elsewhere."""
    stream = payload(200_000, 90)
    conn = rig.connect(0)
    conn.send(stream)
    rig.host.read_until(b'\r\n+QSSLURC: "recv",1,0\r\n', 20)
    got = bytearray()
    expected = bytearray()
    pos = 0
    deadline = time.monotonic() + 120
    count = 0
    while pos < len(stream):
        assert time.monotonic() < deadline, (pos, len(stream))
        count += 1
        if count % 12:
            chunk = rig.recv_once(0, 1500)
            got += chunk
            expected += stream[pos:pos + len(chunk)]
            pos += len(chunk)
            if not chunk:
                time.sleep(0.02)
            continue
        rig.host.write(b"AT+QSSLRECV=1,0,1500\r")
        head = rig.host.read_until(re.compile(RECV_HEAD.pattern + rb"|\r\nOK\r\n"), 20)
        m = RECV_HEAD.search(head)
        if m is None:
            continue
        size = int(m.group(3))
        k = count % 5 * 300 % size
        part = rig.host.read_exactly(k)
        got += part
        expected += stream[pos:pos + k]
        pos += size                                      # the rest went with the hang-up
        rig.reopen()
        assert rig.host.at("AT") == OK
    assert rig.recv_once(0) == b""
    assert sha(bytes(got)) == sha(bytes(expected))
    assert rig.state() == state_answer({0: "CONNECTED"})
    rig.close(0)


def test_lf_learnt_from_a_departed_host_is_forgotten_at_the_next_send_prompt(rig):
    """docs/behaviour.md: what was learnt of a host's line endings is forgotten when it
    closes the port.  Host A ends lines with CR alone; host B, a CR LF host writing whole
    lines, opens the AT+QSSLSEND prompt with "...\\r\\n" in one write: that LF is the
    line's, not data; its payload starting with LF, written after it read the prompt, is
    data -- the server gets exactly the payload."""
    conn = rig.connect(0)
    for _ in range(3):
        assert rig.host.at("AT") == OK                   # CR alone
    rig.reopen()
    rig.host.write(b"AT\r\n")
    assert rig.host.read_until(OK) == OK
    rig.host.write(b"AT+QSSLSEND=0\r\n")
    assert rig.host.read_until(b"> ") == b"\r\n> "
    time.sleep(0.3)
    body = b"\n{\"proto\": \"starts with LF\"}\r\n"
    rig.host.write(body + CTRL_Z)
    assert rig.host.read_until(FINAL_SEND, 20) == b"\r\nSEND OK\r\n"
    assert wait_received(conn, len(body)) == body
    time.sleep(0.2)
    assert bytes(conn.received) == body
    rig.close(0)


def test_echo_on_hangup_mid_prompt_echo_then_exact_answers(open_modem, emulator, strict_log):
    """ATE1 (the ML302's default, §3's session): the data typed at the AT+QSSLSEND prompt
    are echoed; the host leaves after half of them.  The next host (echo still on: a module
    setting) sees its own line echoed and the exact answer, nothing of the old echo; the
    half send never went out."""
    host, port = open_modem("ml302", echo=True)
    with TlsServer(default_pki().server, mode="sink", session_cache=False,
                   ciphers="DEFAULT:@SECLEVEL=0") as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        emulator.router.add_dns(HOST, HOST_IP)
        assert host.at('AT+CGDCONT=1,"IP","CMNET"').endswith(OK)
        assert host.at("AT+CGACT=1,1").endswith(OK)
        line = f'AT+QSSLOPEN=0,0,"{HOST}",443,0'
        assert host.at(line) == line.encode() + b"\r" + OK
        assert host.read_until(b"+QSSLOPEN: 0,0\r\n", 20) == b"\r\n+QSSLOPEN: 0,0\r\n"
        conn = conn_of(srv)
        host.write(b"AT+QSSLSEND=0\r")
        assert host.read_until(b"> ") == b"AT+QSSLSEND=0\r\r\n> "
        host.write(b"GET /half HTTP/1.1\r\n")
        assert host.read_exactly(20) == b"GET /half HTTP/1.1\r\n"     # echoed data
        host.close()
        wait_for(lambda: not port.port.attached, 10, "hang-up seen")
        host2 = Host(port.path)
        try:
            emulator.run(port.port.look_for_host)
            assert host2.at("AT+QSSLSTATE") == b"AT+QSSLSTATE\r" + state_answer({0: "CONNECTED"})
            host2.write(b"AT+QSSLSEND=0\r")
            assert host2.read_until(b"> ") == b"AT+QSSLSEND=0\r\r\n> "
            host2.write(b"whole" + CTRL_Z)
            assert host2.read_until(FINAL_SEND, 20) == b"whole\r\nSEND OK\r\n"
            assert wait_received(conn, 5) == b"whole"
            time.sleep(0.2)
            assert bytes(conn.received) == b"whole"
            assert host2.at("AT+QSSLCLOSE=0") == b"AT+QSSLCLOSE=0\r" + OK
            assert host2.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"
        finally:
            host2.close()


# == more hostile servers and impatient hosts =====================================================
@pytest.mark.parametrize("ifc", ["AT+IFC=0,0", "AT+IFC=0,2"])
def test_a_hundred_and_fifty_pipelined_reads_written_at_once_read_in_odd_chunks(rig, ifc):
    """The server has sent 200 KB; the host writes 150 AT+QSSLRECV=1,0,1500 lines in one go
    and only then starts reading, 1/3/7/4095 bytes at a time.  Each answer is framed (§2.8),
    every byte comes once and in order, whatever AT+IFC says (the backlog holds 225 KB;
    with AT+IFC=0,2 the modem holds the host's lines back instead)."""
    stream = payload(200_000, 100)
    assert rig.host.at(ifc) == OK
    conn = rig.connect(0)
    rig.away()
    rig.back(OddHost)
    assert rig.host.at("AT") == OK
    conn.send(stream)
    wait_unread(rig.emulator, 0, 60_000)
    rig.host.write(b"AT+QSSLRECV=1,0,1500\r" * 150)
    got = bytearray()
    for _ in range(150):
        got += rig.recv_answer(1500)
    got += rig.recv_all(0, len(stream) - len(got))
    assert sha(bytes(got)) == sha(stream)
    rig.close(0)


def test_host_leaves_online_and_the_server_closes_meanwhile_then_buffer_fallback(rig):
    """connectmode 1; the host closes the port while online (the connection stays open,
    docs); the server sends and close_notifies while nobody holds the port.  ATO could only
    answer NO CARRIER, so the socket falls back to buffer mode (docs, "Transparent access
    mode"): the next host finds REMOTE CLOSING, reads the data once with AT+QSSLRECV, ATO
    answers NO CARRIER, AT+QSSLCLOSE frees the ssid."""
    down = payload(7000, 110)
    assert rig.host.at("ATS12=10") == OK
    srv = rig.server()
    rig.host.write(f'AT+QSSLOPEN=4,0,"{HOST}",443,1\r'.encode())
    assert rig.host.read_until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 20) == b"\r\nCONNECT\r\n"
    conn = conn_of(srv)
    rig.host.write(b"bye")
    assert wait_received(conn, 3) == b"bye"
    rig.away()
    conn.send(down)
    conn.close(close_notify=True)
    wait_for(lambda: any(s["id"] == 4 and s["state"] == "CLOSING"
                         for s in rig.emulator.control("state")["sockets"]), 20, "the close seen")
    rig.back()
    assert rig.host.at("AT") == OK
    assert rig.state() == state_answer({4: "REMOTE CLOSING"})
    assert rig.recv_all(4, len(down)) == down
    assert rig.host.at("ATO") == b"\r\nNO CARRIER\r\n"
    rig.close(4)
    assert rig.state() == state_answer({4: "CLOSED"}, "IP STATUS")
    assert bytes(conn.received) == b"bye"


def test_fatal_alert_after_data_mid_session_keeps_the_data_and_reports_one_close(rig):
    """A server sends 5000 bytes, then a fatal alert in the clear (a broken peer): the data
    before it are read exactly once, one "close" URC, REMOTE CLOSING; the TLS error is a
    log line, not a traceback; the ssid is reusable after AT+QSSLCLOSE."""
    data = payload(5000, 120)

    def script(peer: BioPeer) -> None:
        peer.sock.sendall(peer.first_flight())
        peer.sock.sendall(peer.last_flight())
        peer.tls.write(data)
        peer.sock.sendall(peer.out.read())
        time.sleep(0.3)
        peer.sock.sendall(b"\x15\x03\x03\x00\x02\x02\x50")      # fatal internal_error, unencrypted
        time.sleep(1)
        peer.sock.close()
    raw = RawServer(rig, "broken.test", script)
    try:
        rig.open(3, "broken.test")
        assert raw.done.wait(20) and raw.error is None, raw.error
        rig.host.seen(b'+QSSLURC: "close",3\r\n', 20)
        got = rig.recv_all(3, len(data))
        assert got == data
        assert rig.host.transcript.count(b'+QSSLURC: "close",3') == 1
        assert rig.host.transcript.count(b'+QSSLURC: "recv",1,3') == 1
        assert rig.state() == state_answer({3: "REMOTE CLOSING"})
        rig.close(3)
        srv = rig.server("after.test")
        rig.open(3, "after.test")
        conn_of(srv)
        rig.close(3)
    finally:
        raw.close()


@pytest.mark.parametrize("outcome", ["handshake_completes", "timeout_passes"])
def test_next_host_types_while_the_departed_hosts_transparent_open_is_pending(rig, outcome):
    """Host A writes AT+QSSLOPEN=...,1 (no OK: the port waits for the handshake) and leaves;
    host B arrives while that open is still pending and writes "AT" at once (its input waits
    behind the pending command, docs).  Whatever the open's end -- the handshake completes,
    or its <timeout> 10 passes on the modem's clock -- its answer (CONNECT / +QSSLOPEN: 2,-1
    ERROR) is not written to host B, and host B's "AT" is a command answered OK, never bytes
    sent into the TLS connection as online data."""
    release = threading.Event()
    received = bytearray()

    def script(peer: BioPeer) -> None:
        flight = peer.first_flight()
        release.wait(30)
        if outcome == "timeout_passes":
            peer.sock.settimeout(10)
            try:
                while peer.sock.recv(65536):
                    pass
            except (OSError, socket.timeout):
                pass
            return
        finish_and_drain(peer, flight, received)
    raw = RawServer(rig, "pending.test", script)
    try:
        assert rig.host.at("ATS12=10") == OK
        rig.host.write(b'AT+QSSLOPEN=2,0,"pending.test",443,1,10\r')
        wait_for(lambda: getattr(raw, "peer", None) is not None and raw.peer.raw_in, 20, "the ClientHello")
        rig.away()
        rig.back()
        rig.host.write(b"AT\r")
        if outcome == "timeout_passes":
            rig.advance(10)
        else:
            release.set()
            wait_for(lambda: any(s["id"] == 2 and s["state"] == "CONNECTED"
                                 for s in rig.emulator.control("state")["sockets"]), 20, "connected")
        answer = rig.host.read_until(re.compile(rb"\r\n(OK|ERROR|CONNECT)\r\n"), 20)
        time.sleep(0.3)
        assert (answer, bytes(received)) == (OK, b"")
        if outcome == "timeout_passes":
            assert rig.state() == state_answer({2: "CLOSED"}, "IP STATUS")
        else:
            assert rig.state() == state_answer({2: "CONNECTED"})
            rig.close(2)
    finally:
        release.set()
        raw.close()


def test_server_trickles_handshake_records_and_close_notify_in_tiny_segments(rig):
    """A server that writes everything -- both handshake flights, 3 KB of data in records
    of 16 KB / 1 KB / 1 byte, and its close_notify -- in 1-to-7-byte TCP segments, while the
    host polls AT+QSSLRECV=1,1,97 without waiting for URCs: the open succeeds, no partial
    record ever shows as data, every byte is read exactly once, one "close" URC at the end."""
    data = payload(3000, 130)
    rnd = random.Random(7)

    def trickle(sock: socket.socket, blob: bytes) -> None:
        i = 0
        while i < len(blob):
            n = rnd.randint(1, 7)
            sock.sendall(blob[i:i + n])
            i += n
            time.sleep(0.0005)

    def script(peer: BioPeer) -> None:
        trickle(peer.sock, peer.first_flight())
        trickle(peer.sock, peer.last_flight())
        for piece in (data[:1], data[1:1025], data[1025:]):
            peer.tls.write(piece)
            trickle(peer.sock, peer.out.read())
        try:
            peer.tls.unwrap()
        except ssl.SSLError:
            pass
        trickle(peer.sock, peer.out.read())
        peer.sock.shutdown(socket.SHUT_WR)
        peer.sock.settimeout(10)
        try:
            while peer.sock.recv(65536):
                pass
        except OSError:
            pass
        peer.sock.close()
    raw = RawServer(rig, "trickle.test", script)
    try:
        rig.open(1, "trickle.test")
        got = bytearray()
        deadline = time.monotonic() + 30
        while len(got) < len(data):
            assert time.monotonic() < deadline, len(got)
            got += rig.recv_once(1, 97)
        assert bytes(got) == data
        assert raw.done.wait(20) and raw.error is None, raw.error
        rig.host.seen(b'+QSSLURC: "close",1\r\n', 20)
        assert rig.recv_once(1, 97) == b""
        assert rig.host.transcript.count(b'"close",1') == 1
        assert rig.state() == state_answer({1: "REMOTE CLOSING"})
        rig.close(1)
    finally:
        raw.close()


def test_transparent_open_to_a_server_that_sends_and_closes_with_its_last_flight(rig):
    """connectmode 1 to a server whose data and close_notify follow its Finished at once
    (docs, "Transparent access mode"): CONNECT, its bytes, then NO CARRIER -- no "close"
    URC, no fall-back to buffer mode behind the CONNECT; REMOTE CLOSING until AT+QSSLCLOSE;
    the bytes went online, once (AT+QSSLRECV takes nothing of such a socket: ERROR)."""
    parting = payload(2500, 140).replace(b"+", b"-")
    for i in range(3):
        rig.server(f"brief-online{i}.test", mode="send_then_close", payload=parting)
        rig.host.write(f'AT+QSSLOPEN={i},0,"brief-online{i}.test",443,1\r'.encode())
        expected = b"\r\nCONNECT\r\n" + parting + b"\r\nNO CARRIER\r\n"
        assert rig.host.read_exactly(len(expected), 20) == expected
        assert rig.host.quiet_for(0.3) == b""
        assert rig.state().count(b'"REMOTE CLOSING"') == 1
        # a connectmode 1 socket's bytes are never read with AT+QSSLRECV (docs): ERROR
        assert rig.host.at(f"AT+QSSLRECV=1,{i},1500") == ERROR
        assert rig.host.at("ATO") == b"\r\nNO CARRIER\r\n"
        rig.close(i)
    assert b"+QSSLURC" not in rig.host.transcript
