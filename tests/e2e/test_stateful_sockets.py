"""Model-based (stateful) tests of the socket services in buffer access mode, over the pty.

Two hypothesis RuleBasedStateMachines drive a fresh emulator (BackgroundEmulator, offline,
one modem) per example, as a host would: lines end with CR LF, some commands are written one
byte at a time, the answers are read in odd-sized chunks (pyserial on the pty).

Ec2xSockets -- EC2x SSL sockets (AT+QSSLOPEN=1,<ctx>,<id>,"<name>",<port>,0,
AT+QSSLSEND fixed and Ctrl+Z forms, ESC cancel, AT+QSSLRECV, AT+QSSLSTATE, AT+QSSLCLOSE,
+QSSLURC "recv"/"closed") and TCP sockets (AT+QIOPEN buffer mode, AT+QISEND, AT+QIRD and its
",0" query, AT+QISTATE, AT+QICLOSE, +QIURC) in the one id pool they share, against a Python
ssl (OpenSSL) echo server, a plain TCP echo server, a refused port and a TLS server that
accepts TCP but never answers the ClientHello (the handshake stalls), all on 127.0.0.1 and
reached through emulator.router; the servers close their side on demand.

Ml302Ssl -- the ML302 SSL commands (AT+QSSLOPEN=<ssid>,<ctx>,"<name>",443,0, AT+QSSLSEND
Ctrl+Z form and ESC cancel, AT+QSSLRECV=<cid>,<ssid>,<len>, AT+QSSLCLOSE, AT+QSSLSTATE's
six-socket table, +QSSLURC "recv",1,<ssid> / "close",<ssid>) against the same kinds of peers.

The model keeps, per socket, its state (opening / connected / closing after the peer's
close; closed = gone), every byte accepted by SEND OK (the echo server returns them all), the
bytes read back, and what is known of the modem's receive buffer (empty / non-empty /
unknown).  After every step it checks:
  * the exact answer the SSL note, the ML302 manual, the TCP/IP notes and docs/behaviour.md
    give (final result codes, the prompt, SEND OK, +QSSLRECV / +QIRD framing, the
    +QSSLSTATE / +QISTATE / ML302 state-table fields, AT+QIGETERROR codes 552 / 563 / 566 /
    571 / 572 for the failures);
  * every byte read back is the next unread byte sent, in order, never one more than was
    sent; a drain step reads until all of them came back exactly once (a byte lost shows as
    a "recv" URC that never comes);
  * URCs agree with the model: one "recv" per transition of the receive buffer from empty to
    non-empty (behaviour.md, SSL sockets: "reported when data arrive into an empty receive
    buffer ... the next arrival reports again") -- so no second "recv" before a read that
    could have emptied the buffer, no data read out of a buffer known empty without a
    "recv" first, no empty read after a "recv"; "closed"/"close" only after the server
    closed, after its data's "recv"; +QSSLOPEN / +QIOPEN exactly once per open (never for a
    stalled open closed by the host); nothing about a closed socket after its close;
  * ids are reusable after a close or a failed open, and the two EC2x services share the pool;
  * "AT" answers OK at the end of every step, and nothing but well-formed URCs ever arrives
    between answers; no log record carries a traceback or is an error.
The runs are deterministic (tests/conftest.py's derandomized profile); see SETTINGS.
"""
from __future__ import annotations

import logging
import re
import socket
import tempfile
import time

import pytest
import serial
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition, rule,
                                 run_state_machine_as_test)

from emulator.io.app import BackgroundEmulator
from emulator.testing.peers import TcpServer, TlsServer, default_pki

# 100 runs of up to 40 steps each per machine: about 17 s a machine on 2 CPUs (CI profile:
# derandomized, so every run draws the same steps; HYPOTHESIS_RANDOM=1 explores).
# No xfail cases: four randomized exploration runs found no divergence from the docs.
SETTINGS = settings(max_examples=100, stateful_step_count=40, deadline=None,
                    suppress_health_check=list(HealthCheck))

TIMEOUT = 10.0                       # no answer / URC expected takes longer (a loaded machine)
CHUNKS = (1, 3, 7, 2, 13, 5, 31, 4, 64, 9, 17, 250)       # odd read sizes, in turn
URC = re.compile(rb"\r\n(\+QSSLURC: [^\r\n]*|\+QIURC: [^\r\n]*|\+QSSLOPEN: [^\r\n]*|"
                 rb"\+QIOPEN: [^\r\n]*)\r\n")
OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
SSL_PORT, TCP_PORT = 443, 7000
EC2X_IDS = (0, 1, 2, 3, 11)
PICK = st.integers(0, 19)      # mostly an open socket, else any id (see Machine.pick)
ML302_IP = "106.12.79.254"


# -- the host's side of the pty ---------------------------------------------------------------
class Wire:
    """pyserial on the pty.  The output is a sequence of whole units (answers, URCs); every
    URC unit met at a unit boundary goes to on_urc(line) at once, so the model sees it in
    stream order with the answers before it already applied."""

    def __init__(self, path: str, on_urc) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.01)
        self.buf = bytearray()
        self.transcript = bytearray()
        self.on_urc = on_urc
        self._n = 0

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes, bytewise: bool = False) -> None:
        if bytewise:
            for b in data:
                self.ser.write(bytes([b]))
                time.sleep(0.0003)
        else:
            self.ser.write(data)

    def _fill(self, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out (hang?); pending {bytes(self.buf[:300])!r}; "
                                 f"transcript tail {bytes(self.transcript[-400:])!r}")
        k = CHUNKS[self._n % len(CHUNKS)]
        self._n += 1
        waiting = self.ser.in_waiting
        chunk = self.ser.read(min(k, waiting) if waiting else 1)
        self.buf += chunk
        self.transcript += chunk

    def _urc_at_head(self, deadline: float | None) -> bool | None:
        """Is a whole URC unit at the head?  None: not enough bytes to tell (deadline None)."""
        while True:
            if len(self.buf) >= 3 and bytes(self.buf[:3]) != b"\r\n+":
                return False
            if len(self.buf) >= 3 and self.buf.find(b"\r\n", 2) >= 0:
                return URC.match(self.buf) is not None
            if deadline is None:
                return None
            self._fill(deadline)

    def skip_urcs(self, deadline: float | None) -> None:
        while self._urc_at_head(deadline):
            m = URC.match(bytes(self.buf))
            del self.buf[:m.end()]
            self.on_urc(m.group(1))

    def expect(self, exact: bytes, what: str = "", timeout: float = TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        self.skip_urcs(deadline)
        while len(self.buf) < len(exact) and bytes(self.buf) == exact[:len(self.buf)]:
            self._fill(deadline)
        got = bytes(self.buf[:len(exact)])
        assert got == exact, f"{what}: expected {exact!r}, got {bytes(self.buf[:len(exact) + 80])!r}"
        del self.buf[:len(exact)]

    def line(self, regex: re.Pattern, what: str = "", timeout: float = TIMEOUT) -> re.Match:
        """The next unit's first line ("\\r\\n<line>\\r\\n" or, regex permitting, a line of
        an answer already begun) must match regex (anchored at the head)."""
        deadline = time.monotonic() + timeout
        self.skip_urcs(deadline)
        while self.buf.find(b"\r\n", 2) < 0:
            self._fill(deadline)
        m = regex.match(bytes(self.buf))
        assert m, f"{what}: {regex.pattern!r} does not match {bytes(self.buf[:200])!r}"
        del self.buf[:m.end()]
        return m

    def exactly(self, n: int, timeout: float = TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def wait_urcs(self, predicate, what: str, timeout: float = TIMEOUT) -> None:
        """Process URCs until predicate() holds; anything else arriving is a failure."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self.skip_urcs(None)
            if predicate():
                return
            if self.buf and self._urc_at_head(None) is False:
                raise AssertionError(f"{what}: stray output {bytes(self.buf[:200])!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not seen in {timeout} s; transcript tail "
                                     f"{bytes(self.transcript[-400:])!r}")
            self._fill(deadline + 1)

    def settle(self, seconds: float) -> None:
        """Read for `seconds`: only URCs may come."""
        end = time.monotonic() + seconds
        self.wait_urcs(lambda: time.monotonic() > end, "settle", seconds + 1)


# -- peers ---------------------------------------------------------------------------------------
def _tcp_echo(conn) -> None:
    """Echo every byte, counting it as received only once echoed (a settle then knows that
    everything the peer took is on its way back)."""
    while True:
        data = conn.sock.recv(65536)
        if not data:
            break
        conn.sock.sendall(data)
        conn.add(data)
    conn.eof.set()
    conn.close()                      # the client's FIN: close ours (AT+QICLOSE waits for it)


class Peers:
    """The loopback servers of one test: a TLS echo server, a plain TCP echo server, a TLS
    'server' that accepts TCP and never answers the ClientHello, and a refused port."""

    def __init__(self) -> None:
        pki = default_pki()
        self.tls = TlsServer(pki.server, mode="echo", ciphers="DEFAULT:@SECLEVEL=0")
        self.tcp = TcpServer(behave=_tcp_echo)
        self.stall = socket.create_server(("127.0.0.1", 0), backlog=256)   # never accept()ed
        # Bound, never listening: refused, and kept so for the whole test.  (A port only found
        # free and let go could be a listener's of another test by the time a later example
        # dials it -- two parallel runs did: +QIOPEN: <id>,0 and a "recv" URC on "tcprefused".)
        self.refused = socket.socket()
        self.refused.bind(("127.0.0.1", 0))
        self.refused_port = self.refused.getsockname()[1]                  # nothing listens

    def route(self, emu: BackgroundEmulator) -> None:
        r = emu.router
        r.add_map("echo.test", SSL_PORT, "127.0.0.1", self.tls.port)
        r.add_map("stall.test", SSL_PORT, "127.0.0.1", self.stall.getsockname()[1])
        r.add_map("refused.test", SSL_PORT, "127.0.0.1", self.refused_port)
        r.add_map("tcp.test", TCP_PORT, "127.0.0.1", self.tcp.port)
        r.add_map("tcprefused.test", TCP_PORT, "127.0.0.1", self.refused_port)
        r.add_dns("echo.test", ML302_IP)
        r.add_dns("stall.test", "10.20.30.40")
        r.add_dns("refused.test", "10.20.30.41")

    # (a connection from that port accepted since the socket's open began, `start` being the
    # count before it: over a long run the kernel hands out a local port again, and the newest
    # match alone was once an earlier example's connection -- the server's accept thread, on a
    # loaded machine, had not yet listed this one)
    def tls_conn(self, local_port: int, start: int):
        return self.tls.wait_for(lambda: next((c for c in reversed(list(self.tls.connections)[start:])
                                               if c.address[1] == local_port), None),
                                 TIMEOUT, f"server side of local port {local_port}")

    def tcp_conn(self, local_port: int, start: int):
        deadline = time.monotonic() + TIMEOUT
        while True:
            for c in reversed(list(self.tcp.connections)[start:]):
                if c.addr[1] == local_port:
                    return c
            assert time.monotonic() < deadline, f"no TCP peer connection from {local_port}"
            time.sleep(0.01)

    def close(self) -> None:
        self.tls.close()
        self.tcp.close()
        self.stall.close()
        self.refused.close()


class LogGuard(logging.Handler):
    """Collects log records that carry a traceback or are errors."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(record.getMessage())


# -- payloads -----------------------------------------------------------------------------------
TRICKY = [b"\r\n", b"\r", b"\n", b"OK", b"\r\nOK\r\n", b"+++", b"\x1a", b"\x1b", b"\x00", b"AT\r\n",
          b"ERROR", b'\r\n+QSSLURC: "recv",0\r\n', b"> ", b"\x08", b"\x7f", b"\xff\xfe", b"\x11\x13"]


def payloads(max_size: int = 1460, variable: bool = False):
    parts = st.one_of(st.binary(min_size=1, max_size=40), st.sampled_from(TRICKY))
    small = st.lists(parts, min_size=1, max_size=12).map(b"".join)
    big = st.integers(min(200, max_size), max_size).map(lambda n: (bytes(range(256)) * 8)[:n])
    out = st.one_of(small, small, small, big).map(lambda b: b[:max_size])
    if variable:      # Ctrl+Z ends it and ESC cancels it; backspace left out (no doc says)
        out = out.map(lambda b: b.replace(b"\x1a", b"Z").replace(b"\x1b", b"E").replace(b"\x08", b"B"))
    return out


class Sock:
    def __init__(self, kind: str, target: str, ctx: int = 0) -> None:
        self.kind, self.target, self.ctx = kind, target, ctx
        self.state = "opening"          # opening, connected, closing (peer closed); closed: gone
        self.open_code: int | None = None
        self.sent = bytearray()         # accepted by SEND OK; the echo server returns all of it
        self.read = 0                   # bytes read back
        self.buffer = "empty"           # the modem's receive buffer: empty / nonempty / unknown
        self.local_port: int | None = None
        self.closed_urc = False
        self.conns_before = 0           # the server's connection count when the open began


# -- the EC2x machine ---------------------------------------------------------------------------
def close_rig(machine) -> None:
    """A state machine's end: its wire and emulator stopped, its log guard removed, its state
    dir gone; then no log record may have been an error or carried a traceback."""
    try:
        machine.wire.close()
        machine.emu.stop()
    finally:
        logging.getLogger().removeHandler(machine.guard)
        machine.state_dir.cleanup()
    assert not machine.guard.bad, machine.guard.bad


class Ec2xSockets(RuleBasedStateMachine):
    peers: Peers = None              # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.emu = BackgroundEmulator(offline=True)
        self.emu.start()
        self.guard = LogGuard()
        logging.getLogger().addHandler(self.guard)
        self.peers.route(self.emu)
        self.state_dir = tempfile.TemporaryDirectory()
        self.port = self.emu.add_modem(self.profile, state_dir=self.state_dir.name)
        self.socks: dict[int, Sock] = {}
        self.wire = Wire(self.port.path, self.on_urc)
        self.emu.run(self.port.port.look_for_host)
        self.setup()

    profile = "ec2x"
    ids = EC2X_IDS

    def pick(self, p: int) -> int:
        """PICK's draw: mostly a socket the model has (an open one first), else any id."""
        live = sorted(self.socks, key=lambda c: (self.socks[c].state == "opening", c))
        if live and p < 15:
            return live[p % len(live)] if p < 12 else live[0]
        return self.ids[p % len(self.ids)]

    def setup(self) -> None:
        self.cmd("ATE0", b"ATE0\r\r\nOK\r\n")
        self.cmd('AT+QICSGP=1,1,"UNINET","","",1', OK)
        self.cmd("AT+QIACT=1", OK)

    def teardown(self) -> None:
        close_rig(self)

    # -- plumbing
    def cmd(self, line: str, answer: bytes | None = None, bytewise: bool = False) -> None:
        self.wire.write(line.encode() + b"\r\n", bytewise)
        if answer is not None:
            self.wire.expect(answer, line)

    def last_error(self, code: int, after: str) -> None:
        texts = {552: "invalid parameter", 563: "socket identity has been used",
                 566: "socket connection failed", 567: "socket has been closed",
                 571: "cancel send", 572: "operation not allowed"}
        self.cmd("AT+QIGETERROR", f"\r\n+QIGETERROR: {code},{texts[code]}\r\n\r\nOK\r\n".encode())

    def on_urc(self, line: bytes) -> None:
        text = line.decode("latin-1")
        m = re.fullmatch(r'\+(QSSLURC|QIURC): "(recv|closed)",(\d+)', text)
        if m:
            family, what, cid = m.group(1), m.group(2), int(m.group(3))
            s = self.socks.get(cid)
            kind = "ssl" if family == "QSSLURC" else "tcp"
            assert s is not None and s.kind == kind, f"{text}: no such {kind} socket ({self.socks})"
            self.urc(s, what, text)
            return
        m = re.fullmatch(r"\+(QSSLOPEN|QIOPEN): (\d+),(\d+)", text)
        assert m, f"unexpected URC {text!r}"
        kind = "ssl" if m.group(1) == "QSSLOPEN" else "tcp"
        cid, code = int(m.group(2)), int(m.group(3))
        if (kind, cid) == getattr(self, "awaiting_refusal", None):
            self.refusal = code
            return
        s = self.socks.get(cid)
        assert s is not None and s.kind == kind and s.state == "opening" and s.open_code is None, \
            f"{text}: no {kind} open under way on {cid}"
        assert s.target != "stall", f"{text}: the stalled handshake cannot have ended"
        s.open_code = code

    def urc(self, s: Sock, what: str, text: str) -> None:
        assert s.state in ("connected", "closing"), f"{text} on a socket {s.state}"
        if what == "recv":
            assert not s.closed_urc, f'{text} after "closed"'
            assert s.buffer != "nonempty", f"{text}: a second recv URC with no read in between"
            assert s.read < len(s.sent), f"{text}: data arrived that were never sent"
            s.buffer = "nonempty"
        else:
            assert getattr(self, "closing_peer", None) is s, f"{text} but the server did not close"
            assert not s.closed_urc, f"{text} twice"
            s.closed_urc = True
            s.state = "closing"

    def took(self, s: Sock, asked: int, data: bytes, what: str) -> None:
        """A read gave `data` for `asked` bytes: the model's checks and update."""
        expected = bytes(s.sent[s.read:s.read + len(data)])
        assert data == expected, (f"{what}: read {data[:80]!r}... ({len(data)}), expected the next "
                                  f"unread bytes {expected[:80]!r}... ({len(s.sent) - s.read} unread)")
        if data:
            assert s.buffer != "empty", f"{what}: {len(data)} bytes from a buffer left empty, no recv URC"
        else:
            assert s.buffer != "nonempty", f'{what}: nothing to read after a "recv" URC'
        s.read += len(data)
        s.buffer = "empty" if len(data) < asked else "unknown"

    # -- opens
    @initialize(ssl_id=st.sampled_from(EC2X_IDS), tcp_id=st.sampled_from(EC2X_IDS), ctx=st.integers(0, 5))
    def start_with_two(self, ssl_id, tcp_id, ctx):
        """Every run starts with an SSL and (on another id) a TCP echo connection."""
        self.open_ssl(ssl_id, "echo", ctx, False)
        if tcp_id != ssl_id:
            self.open_tcp(tcp_id, "tcp", True)

    @rule(cid=st.sampled_from(EC2X_IDS), peer=st.sampled_from(["echo", "echo", "echo", "refused", "stall"]),
          ctx=st.integers(0, 5), bytewise=st.booleans())
    def open_ssl(self, cid, peer, ctx, bytewise):
        target = peer
        line = f'AT+QSSLOPEN=1,{ctx},{cid},"{target}.test",{SSL_PORT},0'
        if cid in self.socks:
            self.cmd(line, ERROR, bytewise)
            self.last_error(563, line)
            return
        s = self.socks[cid] = Sock("ssl", target, ctx)
        s.conns_before = len(self.peers.tls.connections)
        self.cmd(line, OK, bytewise)
        if target == "stall":
            self.wire.settle(0.05)
            self.check_ssl_state(cid)
            return
        self.wire.wait_urcs(lambda: s.open_code is not None, f"+QSSLOPEN: {cid}")
        if target == "refused":
            assert s.open_code == 566, f"refused port: +QSSLOPEN: {cid},{s.open_code}, not 566"
            del self.socks[cid]
            self.last_error(566, "refused")
            self.cmd(f"AT+QSSLSTATE={cid}", OK)           # a failed open frees the id
            return
        assert s.open_code == 0, f"+QSSLOPEN: {cid},{s.open_code}"
        s.state = "connected"
        self.check_ssl_state(cid)

    @rule(cid=st.sampled_from(EC2X_IDS), peer=st.sampled_from(["tcp", "tcp", "tcprefused"]),
          bytewise=st.booleans())
    def open_tcp(self, cid, peer, bytewise):
        target = peer
        line = f'AT+QIOPEN=1,{cid},"TCP","{target}.test",{TCP_PORT},0,0'
        if cid in self.socks:             # in use: OK, then +QIOPEN: <id>,563 (behaviour.md)
            self.awaiting_refusal, self.refusal = ("tcp", cid), None
            self.cmd(line, OK, bytewise)
            self.wire.wait_urcs(lambda: self.refusal is not None, f"+QIOPEN: {cid},563")
            self.awaiting_refusal = None
            assert self.refusal == 563, f"+QIOPEN: {cid},{self.refusal} on an id in use"
            return
        s = self.socks[cid] = Sock("tcp", "refused" if target == "tcprefused" else "echo")
        s.conns_before = len(self.peers.tcp.connections)
        self.cmd(line, OK, bytewise)
        self.wire.wait_urcs(lambda: s.open_code is not None, f"+QIOPEN: {cid}")
        if s.target == "refused":
            assert s.open_code == 566, f"refused port: +QIOPEN: {cid},{s.open_code}, not 566"
            del self.socks[cid]
            self.cmd(f"AT+QISTATE=1,{cid}", OK)
            return
        assert s.open_code == 0, f"+QIOPEN: {cid},{s.open_code}"
        s.state = "connected"
        self.check_tcp_state(cid)

    # -- state queries
    def check_ssl_state(self, cid: int) -> None:
        s = self.socks[cid]
        code = {"opening": 1, "connected": 2, "closing": 4}[s.state]
        self._write(f"AT+QSSLSTATE={cid}")
        m = self.wire.line(re.compile(
            rb'\r\n\+QSSLSTATE: %d,"SSLClient","%s\.test",%d,(\d+),%d,1,%d,0,"usbmodem",%d\r\n'
            % (cid, s.target.encode(), SSL_PORT, code, cid, s.ctx)), f"AT+QSSLSTATE={cid}")
        lport = int(m.group(1))
        if s.state != "opening":
            assert lport > 0, "local port 0 on a connected socket"
            if s.local_port is None:
                s.local_port = lport
            assert lport == s.local_port, "the local port changed"
        self.wire.expect(b"\r\nOK\r\n", f"AT+QSSLSTATE={cid}")

    def _write(self, line: str) -> bool:
        self.wire.write(line.encode() + b"\r\n")
        return True

    def check_tcp_state(self, cid: int) -> None:
        s = self.socks[cid]
        code = {"opening": 1, "connected": 2, "closing": 4}[s.state]
        ip = self.emu.router.display_address("tcp.test").encode()
        self._write(f"AT+QISTATE=1,{cid}")
        m = self.wire.line(re.compile(rb'\r\n\+QISTATE: %d,"TCP","%s",%d,(\d+),%d,1,%d,0,"usbmodem"\r\n'
                                      % (cid, re.escape(ip), TCP_PORT, code, cid)), f"AT+QISTATE=1,{cid}")
        lport = int(m.group(1))
        assert lport > 0
        if s.local_port is None:
            s.local_port = lport
        assert lport == s.local_port, "the local port changed"
        self.wire.expect(b"\r\nOK\r\n", f"AT+QISTATE=1,{cid}")

    @rule(cid=PICK)
    def state_one(self, cid):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None:
            self.cmd(f"AT+QSSLSTATE={cid}", OK)
            self.cmd(f"AT+QISTATE=1,{cid}", OK)
        elif s.kind == "ssl":
            self.check_ssl_state(cid)
            self.cmd(f"AT+QISTATE=1,{cid}", None)      # (one layer: not asserted either way)
            self.wire.line(re.compile(rb"\r\n(\+QISTATE: [^\r\n]*\r\n\r\n)?OK\r\n"), "QISTATE of an SSL id")
        else:
            self.check_tcp_state(cid)
            self.cmd(f"AT+QSSLSTATE={cid}", OK)         # "can only query the SSL connection status"

    @rule()
    def state_all(self):
        self._write("AT+QSSLSTATE")
        for cid in sorted(c for c, s in self.socks.items() if s.kind == "ssl"):
            s = self.socks[cid]
            code = {"opening": 1, "connected": 2, "closing": 4}[s.state]
            m = self.wire.line(re.compile(
                rb'(?:\r\n)?\+QSSLSTATE: %d,"SSLClient","%s\.test",%d,(\d+),%d,1,%d,0,"usbmodem",%d\r\n'
                % (cid, s.target.encode(), SSL_PORT, code, cid, s.ctx)), "AT+QSSLSTATE")
            if s.local_port is not None:
                assert int(m.group(1)) == s.local_port
        self.wire.expect(b"\r\nOK\r\n" if any(s.kind == "ssl" for s in self.socks.values()) else OK,
                         "AT+QSSLSTATE end")

    # -- sending
    def backlog_ok(self) -> bool:
        return all(len(s.sent) - s.read < 24000 for s in self.socks.values())

    @precondition(lambda self: self.backlog_ok())
    @rule(cid=PICK, data=payloads(), bytewise=st.booleans(),
          tcp_form=st.booleans())
    def send_fixed(self, cid, data, bytewise, tcp_form):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        kind = s.kind if s else ("tcp" if tcp_form else "ssl")
        line = (f"AT+QSSLSEND={cid},{len(data)}" if kind == "ssl" else f"AT+QISEND={cid},{len(data)}")
        if s is None or s.state != "connected":
            self.cmd(line, ERROR, bytewise)
            if kind == "ssl":           # 567 only once the peer closed it; opening: 572
                self.last_error(567 if s is not None and s.state == "closing" else 572, line)
            return
        self.cmd(line, b"\r\n> ", bytewise)
        self.wire.write(data)
        self.wire.expect(b"\r\nSEND OK\r\n", f"{line} data")
        s.sent += data

    @precondition(lambda self: self.backlog_ok())
    @rule(cid=PICK, data=payloads(variable=True), bytewise=st.booleans())
    def send_variable(self, cid, data, bytewise):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected":
            return
        line = f"AT+QSSLSEND={cid}" if s.kind == "ssl" else f"AT+QISEND={cid}"
        self.cmd(line, b"\r\n> ", bytewise)
        self.wire.write(data + b"\x1a", bytewise and len(data) < 40)
        self.wire.expect(b"\r\nSEND OK\r\n", f"{line} data + Ctrl+Z")
        s.sent += data

    @rule(cid=PICK, data=payloads(200, variable=True))
    def send_cancelled(self, cid, data):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected":
            return
        line = f"AT+QSSLSEND={cid}" if s.kind == "ssl" else f"AT+QISEND={cid}"
        self.cmd(line, b"\r\n> ")
        self.wire.write(data + b"\x1b")
        self.wire.expect(ERROR, f"{line} data + ESC")
        self.last_error(571, "ESC")

    @rule(cid=PICK, n=st.sampled_from([0, 1461]))
    def send_variable_bad(self, cid, n):
        """Ctrl+Z alone, or 1461 bytes before it: ERROR (SSL: 552), nothing sent."""
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected":
            return
        line = f"AT+QSSLSEND={cid}" if s.kind == "ssl" else f"AT+QISEND={cid}"
        self.cmd(line, b"\r\n> ")
        self.wire.write(b"x" * n + b"\x1a")
        self.wire.expect(ERROR, f"{line} with {n} bytes")
        if s.kind == "ssl":
            self.last_error(552, "variable length out of range")

    @rule(cid=PICK, n=st.sampled_from([0, 1461]), tcp=st.booleans())
    def send_bad_length(self, cid, n, tcp):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        kind = s.kind if s else ("tcp" if tcp else "ssl")
        if kind == "tcp" and n == 0:
            return                          # AT+QISEND=<id>,0 is the query form
        self.cmd(f"AT+QSSLSEND={cid},{n}" if kind == "ssl" else f"AT+QISEND={cid},{n}", ERROR)
        if kind == "ssl":
            self.last_error(552, "bad <sendlen>")

    # -- receiving
    @rule(cid=PICK, n=st.one_of(st.integers(1, 40), st.integers(1, 1500)),
          bytewise=st.booleans(), tcp=st.booleans())
    def recv(self, cid, n, bytewise, tcp):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        kind = s.kind if s else ("tcp" if tcp else "ssl")
        line = f"AT+QSSLRECV={cid},{n}" if kind == "ssl" else f"AT+QIRD={cid},{n}"
        if s is None or s.state == "opening":
            self.cmd(line, ERROR, bytewise)
            if kind == "ssl":
                self.last_error(572, line)
            return
        self.read_once(s, cid, n, bytewise)

    def read_once(self, s: Sock, cid: int, n: int, bytewise: bool = False) -> int:
        tag = b"QSSLRECV" if s.kind == "ssl" else b"QIRD"
        line = f"AT+QSSLRECV={cid},{n}" if s.kind == "ssl" else f"AT+QIRD={cid},{n}"
        self.cmd(line, None, bytewise)
        m = self.wire.line(re.compile(rb"\r\n\+%s: (\d+)\r\n" % tag), line)
        k = int(m.group(1))
        assert k <= n, f"{line}: {k} bytes for {n} asked"
        data = self.wire.exactly(k)
        self.wire.expect((b"\r\n" if k else b"") + b"\r\nOK\r\n", f"{line} end")
        self.took(s, n, data, line)
        return k

    @rule(cid=PICK, n=st.sampled_from([1, 7, 1500]))
    def drain(self, cid, n):
        cid = self.pick(cid)
        """Read until every byte sent came back: a lost byte is a "recv" URC that never comes."""
        s = self.socks.get(cid)
        if s is None or s.state == "opening":
            return
        if s.state == "connected" and s.kind == "tcp" and len(s.sent) > s.read and n == 1:
            n = 7
        for _ in range(3000):
            if s.read == len(s.sent):
                break
            if s.buffer == "empty":
                self.wire.wait_urcs(lambda: s.buffer != "empty",
                                    f'"recv" URC for the {len(s.sent) - s.read} bytes still due on {cid}')
            self.read_once(s, cid, n)
        assert s.read == len(s.sent)
        if s.kind == "tcp":
            self.cmd(f"AT+QIRD={cid},0", f"\r\n+QIRD: {s.read},{s.read},0\r\n\r\nOK\r\n".encode())

    @rule(cid=PICK)
    def qird_query(self, cid):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.kind != "tcp":
            return
        self._write(f"AT+QIRD={cid},0")
        m = self.wire.line(re.compile(rb"\r\n\+QIRD: (\d+),(\d+),(\d+)\r\n"), "AT+QIRD=<id>,0")
        total, read, unread = map(int, m.groups())
        assert read == s.read, f"+QIRD read {read}, the host read {s.read}"
        assert read <= total <= len(s.sent) and unread == total - read, m.group(0)
        self.wire.expect(b"\r\nOK\r\n", "AT+QIRD=<id>,0")

    @rule(cid=PICK, n=st.sampled_from([0, 1501]))
    def recv_bad_length(self, cid, n):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is not None and s.kind == "tcp":
            if n == 0:
                return
            self.cmd(f"AT+QIRD={cid},{n}", ERROR)
            return
        self.cmd(f"AT+QSSLRECV={cid},{n}", ERROR)
        self.last_error(552, "bad <readlen>")

    # -- closing
    @rule(cid=PICK, timeout=st.sampled_from([None, 0, 1]),
          bytewise=st.booleans(), tcp=st.booleans())
    def close(self, cid, timeout, bytewise, tcp):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        kind = s.kind if s else ("tcp" if tcp else "ssl")
        suffix = "" if timeout is None else f",{timeout}"
        if kind == "ssl":
            self.cmd(f"AT+QSSLCLOSE={cid}{suffix}", OK, bytewise)     # also for a free id
        elif s is None:
            self.cmd(f"AT+QICLOSE={cid}{suffix}", OK, bytewise)       # nothing open: OK
            return
        else:
            self.cmd(f"AT+QICLOSE={cid}{suffix}", OK, bytewise)
        self.socks.pop(cid, None)

    @rule(cid=PICK)
    def server_closes(self, cid):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected" or s.target != "echo":
            return
        if s.local_port is None:
            (self.check_ssl_state if s.kind == "ssl" else self.check_tcp_state)(cid)
        if s.kind == "ssl":
            conn = self.peers.tls_conn(s.local_port, s.conns_before)
            self.peers.tls.wait_for(lambda: len(conn.received) >= len(s.sent), TIMEOUT, "echo settled")
            assert bytes(conn.received) == bytes(s.sent), "the server got other bytes than SEND OK took"
            conn.close(close_notify=True)
        else:
            conn = self.peers.tcp_conn(s.local_port, s.conns_before)
            got = conn.wait_received(len(s.sent), TIMEOUT)
            assert got == bytes(s.sent), "the server got other bytes than SEND OK took"
            conn.close()
        self.closing_peer = s
        self.wire.wait_urcs(lambda: s.closed_urc, f'"closed" URC of {cid}')
        self.closing_peer = None
        (self.check_ssl_state if s.kind == "ssl" else self.check_tcp_state)(cid)
        self.send_fixed_refused(s, cid)

    def send_fixed_refused(self, s: Sock, cid: int) -> None:
        line = f"AT+QSSLSEND={cid},3" if s.kind == "ssl" else f"AT+QISEND={cid},3"
        self.cmd(line, ERROR)

    # the data path weighs more: hypothesis picks among rules evenly
    send_fixed_too, recv_too, drain_too, open_ssl_too = send_fixed, recv, drain, open_ssl

    # -- every step
    @invariant()
    def at_answers_ok(self):
        self._n_inv = getattr(self, "_n_inv", 0) + 1
        self.cmd("AT", OK, bytewise=self._n_inv % 3 == 0)


# -- the ML302 machine --------------------------------------------------------------------------
class Ml302Ssl(RuleBasedStateMachine):
    peers: Peers = None

    def __init__(self) -> None:
        super().__init__()
        self.emu = BackgroundEmulator(offline=True)
        self.emu.start()
        self.guard = LogGuard()
        logging.getLogger().addHandler(self.guard)
        self.peers.route(self.emu)
        self.state_dir = tempfile.TemporaryDirectory()
        self.port = self.emu.add_modem("ml302", state_dir=self.state_dir.name)
        self.socks: dict[int, Sock] = {}
        self.last_addr: dict[int, str] = {}        # CLOSED shows the last address
        self.closing_peer = None
        self.conn_of: dict[int, object] = {}
        self.wire = Wire(self.port.path, self.on_urc)
        self.emu.run(self.port.port.look_for_host)
        self.cmd("ATE0", b"ATE0\r\r\nOK\r\n")
        self.cmd('AT+CGDCONT=1,"IP","CMNET"', OK)
        self.cmd("AT+CGACT=1,1", b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n")

    ids = tuple(range(6))
    pick = Ec2xSockets.pick
    teardown = Ec2xSockets.teardown
    cmd = Ec2xSockets.cmd
    took = Ec2xSockets.took

    def on_urc(self, line: bytes) -> None:
        text = line.decode("latin-1")
        m = re.fullmatch(r'\+QSSLURC: "recv",1,(\d)', text) or re.fullmatch(r'\+QSSLURC: "close",(\d)', text)
        if m:
            cid = int(m.group(1))
            s = self.socks.get(cid)
            assert s is not None and s.state in ("connected", "closing"), f"{text}: socket {s and s.state}"
            if "recv" in text:
                assert not s.closed_urc, f'{text} after "close"'
                assert s.buffer != "nonempty", f"{text}: a second recv URC with no read in between"
                assert s.read < len(s.sent), f"{text}: data arrived that were never sent"
                s.buffer = "nonempty"
            else:
                assert self.closing_peer is s and not s.closed_urc, f"{text} unexpected"
                s.closed_urc, s.state = True, "closing"
            return
        m = re.fullmatch(r"\+QSSLOPEN: (\d),(-?\d+)", text)
        assert m, f"unexpected URC {text!r}"
        cid, code = int(m.group(1)), int(m.group(2))
        if cid == getattr(self, "awaiting_refusal", None):
            self.refusal = code
            return
        s = self.socks.get(cid)
        assert s is not None and s.state == "opening" and s.open_code is None and s.target != "stall", \
            f"{text}: no open under way on {cid}"
        s.open_code = code

    @initialize(cid=st.integers(0, 5))
    def start_with_one(self, cid):
        self.open(cid, "echo", False)

    @rule(cid=st.integers(0, 5), peer=st.sampled_from(["echo", "echo", "echo", "refused", "stall"]),
          bytewise=st.booleans())
    def open(self, cid, peer, bytewise):
        target = peer
        line = f'AT+QSSLOPEN={cid},0,"{target}.test",{SSL_PORT},0'
        if cid in self.socks:                     # in use (remote closing included): OK, then -2
            self.awaiting_refusal, self.refusal = cid, None
            self.cmd(line, OK, bytewise)
            self.wire.wait_urcs(lambda: self.refusal is not None, f"+QSSLOPEN: {cid},-2")
            self.awaiting_refusal = None
            assert self.refusal == -2, f"+QSSLOPEN: {cid},{self.refusal} on an ssid in use"
            return
        s = self.socks[cid] = Sock("ssl", target)
        before = len(self.peers.tls.connections)
        self.cmd(line, OK, bytewise)
        if target == "stall":
            self.wire.settle(0.05)
            return
        self.wire.wait_urcs(lambda: s.open_code is not None, f"+QSSLOPEN: {cid}")
        if target == "refused":
            assert s.open_code == -1, f"refused: +QSSLOPEN: {cid},{s.open_code}"
            del self.socks[cid]
            self.last_addr[cid] = "refused"
            return
        assert s.open_code == 0, f"+QSSLOPEN: {cid},{s.open_code}"
        s.state = "connected"
        self.last_addr[cid] = ML302_IP
        self.conn_of[cid] = self.peers.tls.wait_connections(before + 1, TIMEOUT)[before]

    @rule()
    def state(self):
        self.wire.write(b"AT+QSSLSTATE\r\n")
        busy = bool(self.socks)
        self.wire.expect(f'\r\n+QSSLSTATE: "{"IP PROCESSING" if busy else "IP STATUS"}"\r\n'.encode(), "state line")
        for cid in range(6):
            s = self.socks.get(cid)
            if s is None:
                last = self.last_addr.get(cid)
                if last is None:
                    want = rb'"",0,"INITIAL"'
                elif last in ("refused", "stall"):
                    ip = b"10\\.20\\.30\\.41" if last == "refused" else b"10\\.20\\.30\\.40"
                    want = rb'"(?:|%s)",%d,"CLOSED"' % (ip, SSL_PORT)
                else:
                    want = rb'"%s",%d,"CLOSED"' % (re.escape(last.encode()), SSL_PORT)
            elif s.state == "opening":
                want = rb'"(?:|10\.20\.30\.40)",%d,"CONNECTING"' % SSL_PORT
            else:
                status = b"CONNECTED" if s.state == "connected" else b"REMOTE CLOSING"
                want = rb'"%s",%d,"%s"' % (re.escape(ML302_IP.encode()), SSL_PORT, status)
            self.wire.line(re.compile(rb'\+QSSLSTATE: %d,"TCP",%s,1\r\n' % (cid, want)), f"state of {cid}")
        self.wire.expect(b"\r\nOK\r\n", "AT+QSSLSTATE end")

    def backlog_ok(self) -> bool:
        return all(len(s.sent) - s.read < 24000 for s in self.socks.values())

    @precondition(lambda self: self.backlog_ok())
    @rule(cid=PICK, data=payloads(variable=True), bytewise=st.booleans())
    def send(self, cid, data, bytewise):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        line = f"AT+QSSLSEND={cid}"
        if s is None or s.state != "connected":
            self.cmd(line, ERROR, bytewise)
            return
        self.cmd(line, b"\r\n> ", bytewise)
        self.wire.write(data + b"\x1a", bytewise and len(data) < 40)
        self.wire.expect(b"\r\nSEND OK\r\n", f"{line} data + Ctrl+Z")
        s.sent += data

    @rule(cid=PICK, data=payloads(100, variable=True))
    def send_cancelled(self, cid, data):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected":
            return
        self.cmd(f"AT+QSSLSEND={cid}", b"\r\n> ")
        self.wire.write(data + b"\x1b")
        self.wire.expect(OK, "ESC")             # ML302: ESC cancels with OK (behaviour.md)

    def read_once(self, s: Sock, cid: int, n: int, pdp: int = 1, bytewise: bool = False) -> int:
        line = f"AT+QSSLRECV={pdp},{cid},{n}"
        self.cmd(line, None, bytewise)
        m = self.wire.line(re.compile(rb"\r\n(?:OK\r\n|\+QSSLRECV: %s:%d,TCP,(\d+)\r\n)"
                                      % (re.escape(ML302_IP.encode()), SSL_PORT)), line)
        if m.group(1) is None:
            self.took(s, n, b"", line)
            return 0
        k = int(m.group(1))
        assert 0 < k <= n, f"{line}: {k} bytes"
        data = self.wire.exactly(k)
        self.wire.expect(b"\r\n\r\nOK\r\n", f"{line} end")
        self.took(s, n, data, line)
        return k

    @rule(cid=PICK, n=st.one_of(st.integers(1, 40), st.integers(1, 1500)),
          pdp=st.integers(0, 1), bytewise=st.booleans())
    def recv(self, cid, n, pdp, bytewise):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state == "opening":
            self.cmd(f"AT+QSSLRECV={pdp},{cid},{n}", ERROR, bytewise)
            return
        self.read_once(s, cid, n, pdp, bytewise)

    @rule(cid=PICK, n=st.sampled_from([3, 1500]))
    def drain(self, cid, n):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state == "opening":
            return
        for _ in range(3000):
            if s.read == len(s.sent):
                break
            if s.buffer == "empty":
                self.wire.wait_urcs(lambda: s.buffer != "empty",
                                    f'"recv" URC for the {len(s.sent) - s.read} bytes still due on {cid}')
            self.read_once(s, cid, n)
        assert s.read == len(s.sent)

    @rule(cid=PICK, bytewise=st.booleans(), closetype=st.sampled_from(["", ",0", ",1"]))
    def close(self, cid, bytewise, closetype):
        cid = self.pick(cid)
        self.cmd(f"AT+QSSLCLOSE={cid}{closetype}", f"\r\nOK\r\n\r\n{cid},CLOSE OK\r\n".encode(), bytewise)
        s = self.socks.pop(cid, None)
        if s is not None and s.target == "stall":
            self.last_addr[cid] = "stall"
        elif s is not None:
            self.last_addr[cid] = ML302_IP

    @rule(cid=PICK)
    def server_closes(self, cid):
        cid = self.pick(cid)
        s = self.socks.get(cid)
        if s is None or s.state != "connected":
            return
        conn = self.find_conn(cid)
        self.peers.tls.wait_for(lambda: len(conn.received) >= len(s.sent), TIMEOUT, "echo settled")
        assert bytes(conn.received) == bytes(s.sent), "the server got other bytes than SEND OK took"
        conn.close(close_notify=True)
        self.closing_peer = s
        self.wire.wait_urcs(lambda: s.closed_urc, f'"close" URC of {cid}')
        self.closing_peer = None
        self.cmd(f"AT+QSSLSEND={cid}", ERROR)

    def find_conn(self, cid: int):
        """The server's side of ssid cid: the ML302 shows no local port, so the model keeps
        the connection that appeared at its open."""
        return self.conn_of[cid]

    send_too, recv_too, drain_too, open_too = send, recv, drain, open

    @invariant()
    def at_answers_ok(self):
        self._n_inv = getattr(self, "_n_inv", 0) + 1
        self.cmd("AT", OK, bytewise=self._n_inv % 3 == 0)


# -- the tests ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def peers():
    p = Peers()
    yield p
    p.close()


def test_ec2x_ssl_and_tcp_sockets_model(peers):
    machine = type("Ec2xRun", (Ec2xSockets,), {"peers": peers})
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_ml302_ssl_sockets_model(peers):
    machine = type("Ml302Run", (Ml302Ssl,), {"peers": peers})
    run_state_machine_as_test(machine, settings=SETTINGS)
