"""Isolation between many modems in one process (--count N) under hostile hosts and servers.

The promise attacked here: one asyncio loop drives all modems; one modem's host or server
never breaks, starves, corrupts or crashes another modem, and nothing a host sends kills the
process.  The emulator runs as the CLI (`python -m emulator --count N`), a subprocess whose
pid we watch (/proc/<pid>/status VmRSS, /proc/<pid>/fd).  Modem 0 does a byte-exact TLS echo
transfer in buffer mode (AT+QSSLSEND / AT+QSSLRECV, binary data full of CR LF, "OK", "+++",
Ctrl+Z, ESC) against a Python ssl (OpenSSL) echo server on 127.0.0.1, and probes AT between
chunks, while the other modems' hosts attack: garbage and control bytes one byte at a time,
100 KB lines without CR, the port opened and closed hundreds of times (mid-line, mid-prompt,
mid-upload), a data prompt held open, "+++" at odd times, AT+CFUN=1,1 and control reboots in
a loop, every socket opened to a server that stalls the handshake, direct-push sockets fed
16 KiB records by a flooding server while the host never reads.

Hosts are raw os.read/os.write on the pty (raw termios, odd read sizes), lines end with CR or
CR LF.  Waits are bounded polls on conditions; no timing is asserted beyond generous
timeouts."""
from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tty


from tests.e2e.cli_support import ROOT

SERVER_NAME = "www.iottest.work"
ECHO_PORT, FLOOD_PORT, STALL_PORT, SINK_PORT = 443, 8443, 9443, 7443
AT_TIMEOUT = 15.0            # generous: a 2-core machine shared with other test sessions
READ_SIZES = (1, 7, 13, 61, 257, 1021, 4093, 3, 509)


# -- TLS servers (Python ssl = OpenSSL, blocking sockets in threads) ----------------------------
def _server_context() -> ssl.SSLContext:
    from emulator.testing.peers import default_pki
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_TICKET
    default_pki().server.configure_cert(ctx)
    return ctx


PERIOD = 65521                   # a prime: the flood stream never lines up with its records
_HOSTILE_TAIL = b"\r\nOK\r\n+QSSLURC: \"recv\",0,5\r\n+++NO CARRIER\r\n"
_STREAM = (random.Random(5).randbytes(PERIOD - len(_HOSTILE_TAIL)) + _HOSTILE_TAIL) * 2


def pattern(offset: int, n: int) -> bytes:
    """The flood servers' byte stream [offset, offset + n) (n <= PERIOD): a random block of
    PERIOD bytes repeated, so any stretch can be checked where it lands."""
    start = offset % PERIOD
    return _STREAM[start:start + n]


class Server:
    """A TLS server on 127.0.0.1:<ephemeral>.  kind:
    echo  -- echoes every byte, records what each connection received;
    flood -- after the handshake writes the pattern() stream in 16 KiB records as fast as the
             client takes it, up to `cap` bytes per connection, counting what went out;
    stall -- accepts TCP, reads the ClientHello and never answers (handshake stalled);
    sink  -- handshakes, then reads and records, never writes."""

    def __init__(self, kind: str, cap: int = 1 << 30) -> None:
        self.kind, self.cap = kind, cap
        self.ctx = _server_context()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.received: list[bytearray] = []
        self.sent: list[int] = []
        self.socks: list[socket.socket] = []
        self.handshakes = 0
        self.errors: list[str] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self.closed.is_set():
                    sock.close()
                    return
                index = len(self.received)
                self.received.append(bytearray())
                self.sent.append(0)
                self.socks.append(sock)
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.kind == "stall":
                sock.settimeout(None)
                while sock.recv(4096):          # the ClientHello, then nothing back, ever
                    pass
                return
            sock.settimeout(30)
            tls = self.ctx.wrap_socket(sock, server_side=True)
            with self.lock:
                self.socks[index] = tls
                self.handshakes += 1
            if self.kind in ("echo", "sink"):
                while True:
                    data = tls.recv(65536)
                    if not data:
                        return
                    with self.lock:
                        self.received[index] += data
                    if self.kind == "echo":
                        tls.sendall(data)
            elif self.kind == "flood":
                tls.settimeout(None)
                offset = 0
                while offset < self.cap and not self.closed.is_set():
                    chunk = pattern(offset, min(16384, self.cap - offset))
                    tls.sendall(chunk)
                    offset += len(chunk)
                    with self.lock:
                        self.sent[index] = offset
        except (OSError, ssl.SSLError, ValueError) as exc:
            if not self.closed.is_set():
                with self.lock:
                    self.errors.append(f"#{index}: {exc!r}")
        finally:                                  # the client's close_notify / FIN: close too
            with self.lock:
                conn = self.socks[index]
            with contextlib.suppress(OSError):
                conn.close()

    def total_sent(self) -> int:
        with self.lock:
            return sum(self.sent)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            socks = list(self.socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.close()


# -- the emulator process ---------------------------------------------------------------------
class Emulator:
    """`python -m emulator --count N ...` with stderr drained by a thread (kept for the
    traceback check), the N device paths, and its pid's /proc figures."""

    def __init__(self, tmp_path, count: int, routes: dict[int, int], control: bool = False) -> None:
        args = ["--count", str(count), "--state-dir", str(tmp_path / "state"), "--offline",
                "--log-level", "WARNING"]
        for port, real in routes.items():
            args += ["--route", f"{SERVER_NAME}:{port}=127.0.0.1:{real}"]
        self.ctl = None
        if control:
            self.ctl = str(tmp_path / "modem.ctl")
            args += ["--control", self.ctl]
        self.proc = subprocess.Popen([sys.executable, "-m", "emulator", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.paths = [self.proc.stdout.readline().decode().strip() for _ in range(count)]
        self.stderr = bytearray()
        threading.Thread(target=self._drain, daemon=True).start()
        if not all(self.paths):
            self.proc.kill()
            raise AssertionError(f"no device paths: {self.paths}")
        if control:
            deadline = time.monotonic() + 10
            while not os.path.exists(self.ctl):
                assert time.monotonic() < deadline, "control socket never appeared"
                time.sleep(0.01)

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr += line

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def fds(self) -> list[str]:
        out = []
        for fd in os.listdir(f"/proc/{self.pid}/fd"):
            with contextlib.suppress(OSError):
                out.append(os.readlink(f"/proc/{self.pid}/fd/{fd}"))
        return out

    def control(self, request: dict) -> dict:
        import json
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(AT_TIMEOUT)
            sock.connect(self.ctl)
            sock.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(sock.makefile("rb").readline())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)

    def check_log(self) -> None:
        text = self.stderr.decode("utf-8", "replace")
        assert "Traceback" not in text, text[-4000:]


@contextlib.contextmanager
def emulator(tmp_path, count: int, routes: dict[int, int], control: bool = False):
    emu = Emulator(tmp_path, count, routes, control)
    try:
        yield emu
    finally:
        code = emu.stop()
        emu.check_log()
        assert code == 0, f"exit {code}; stderr tail {bytes(emu.stderr[-3000:])!r}"


# -- a host on the pty: raw os.read / os.write, odd read sizes ---------------------------------
class PtyHost:
    def __init__(self, path: str, eol: bytes = b"\r") -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.eol = eol
        self.buf = bytearray()
        self.sizes = itertools.cycle(READ_SIZES)
        self.slowest = 0.0           # the longest an at() waited for its final result

    def note(self, started: float, what) -> None:
        took = time.monotonic() - started
        if took > self.slowest:
            self.slowest, self.slowest_what = took, (what, time.strftime("%H:%M:%S"))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def write(self, data: bytes, timeout: float = AT_TIMEOUT) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.fd, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"pty write blocked for {timeout} s ({len(view)} left)")
                select.select([], [self.fd], [], 0.05)

    def fill(self, wait: float = 0.05) -> int:
        r, _, _ = select.select([self.fd], [], [], wait)
        if not r:
            return 0
        got = 0
        for _ in range(64):
            try:
                chunk = os.read(self.fd, next(self.sizes))
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            self.buf += chunk
            got += len(chunk)
        return got

    def until(self, pattern: bytes | re.Pattern, timeout: float = AT_TIMEOUT) -> re.Match:
        """Consume the buffer up to and including the first match; return the match (whose
        string is what was consumed)."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.buf)
            if m:
                consumed = bytes(self.buf[:m.end()])
                del self.buf[:m.end()]
                return regex.match(consumed, m.start())
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out ({timeout} s) waiting for {regex.pattern!r}; "
                                     f"buffer tail {bytes(self.buf[-300:])!r}")
            self.fill()

    def exactly(self, n: int, timeout: float = AT_TIMEOUT) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {n} bytes; have {len(self.buf)}")
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def at(self, line: str | bytes, final: bytes | re.Pattern = re.compile(
            rb"\r\n(OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n"), timeout: float = AT_TIMEOUT) -> bytes:
        raw = line.encode() if isinstance(line, str) else line
        started = time.monotonic()
        self.write(raw + self.eol)
        m = self.until(final, timeout)
        self.note(started, raw)
        return m.string

    def resync(self, timeout: float = AT_TIMEOUT) -> None:
        """Get back to a known state after an attack: whatever half line or prompt it left
        ended, echo off, then a unique marker whose answer proves that every earlier answer
        (a previous host's included) is behind us."""
        marker = f"R{random.randrange(10**9)}"
        self.write(b"\x1b\r\nATE0V1Q0" + self.eol)
        self.write(f'AT+QICSGP=2,1,"{marker}","","",1;+QICSGP=2'.encode() + self.eol)
        self.until(f'+QICSGP: 1,"{marker}","","",1\r\n\r\nOK\r\n'.encode(), timeout)
        assert self.at("AT") == b"\r\nOK\r\n"


def prepare(host: PtyHost, ca_pem: bytes | None = None) -> None:
    """ATE0, PDP up, the CA uploaded and SSL context 1 verifying the server."""
    host.at("ATE0")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(b"\r\nOK\r\n")
    if ca_pem is not None:
        host.write(f'AT+QFUPL="RAM:ca.pem",{len(ca_pem)}'.encode() + host.eol)
        host.until(b"\r\nCONNECT\r\n")
        host.write(ca_pem)
        host.until(b"\r\nOK\r\n")
        assert host.at('AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:ca.pem"') \
            .endswith(b"\r\nOK\r\n")


OPENED = re.compile(rb'\+QSSLOPEN: (\d+),(-?\d+)\r\n')


def ssl_open(host: PtyHost, cid: int, port: int, mode: int = 0, ctx: int = 1) -> None:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{SERVER_NAME}",{port},{mode}') == b"\r\nOK\r\n"
    m = host.until(re.compile(rb'\+QSSLOPEN: %d,(-?\d+)\r\n' % cid), timeout=30)
    assert m.group(1) == b"0", m.string


# -- modem 0's job: a byte-exact TLS echo in buffer mode ---------------------------------------
HOSTILE_BYTES = b"\r\nOK\r\n+++AT\r\x1a\x1b\r\nERROR\r\n+QSSLURC: \"recv\",0\r\n\x00\xff"


def echo_payload(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += HOSTILE_BYTES if rng.random() < 0.3 else rng.randbytes(rng.randrange(1, 200))
    return bytes(out[:size])


RECV_HEAD = re.compile(rb"\+QSSLRECV: (\d+)\r\n")


def recv_some(host: PtyHost, cid: int, n: int = 1500) -> bytes:
    host.write(f"AT+QSSLRECV={cid},{n}".encode() + host.eol)
    started = time.monotonic()
    m = host.until(re.compile(rb"\+QSSLRECV: (\d+)\r\n|\r\nERROR\r\n"))
    assert m.group(1) is not None, f"AT+QSSLRECV answered {m.string[-200:]!r}"
    length = int(m.group(1))
    data = host.exactly(length) if length else b""
    tail = host.until(b"\r\nOK\r\n").string
    assert tail == (b"\r\n\r\nOK\r\n" if length else b"\r\nOK\r\n"), tail
    host.note(started, f"AT+QSSLRECV={cid},{n}")
    return data


def send_chunk(host: PtyHost, cid: int, data: bytes) -> bytes:
    started = time.monotonic()
    host.write(f"AT+QSSLSEND={cid},{len(data)}".encode() + host.eol)
    host.until(re.compile(rb"> |\r\nERROR\r\n"))
    host.write(data)
    result = host.until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")).group(1)
    host.note(started, f"AT+QSSLSEND={cid},{len(data)}")
    return result


def echo_transfer(host: PtyHost, cid: int, payload: bytes, stop_early: threading.Event | None = None,
                  probe_every: int = 8) -> bytes:
    """Send `payload` in chunks of odd sizes up to 1460 and read the echo back as it comes,
    with an AT probe every few chunks; returns what came back."""
    got = bytearray()
    sent = 0
    sizes = itertools.cycle((1460, 1, 977, 1459, 64, 1300, 733))
    for i in itertools.count():
        if sent >= len(payload):
            break
        chunk = payload[sent:sent + next(sizes)]
        result = send_chunk(host, cid, chunk)
        if result == b"SEND FAIL":           # the send buffer is full: read, then retry
            got += recv_some(host, cid)
            continue
        assert result == b"SEND OK", result
        sent += len(chunk)
        got += recv_some(host, cid)
        if i % probe_every == 0:
            assert host.at("AT").endswith(b"\r\nOK\r\n")
            assert got == payload[:len(got)], f"echo corrupted at byte {_first_diff(got, payload)}"
    deadline = time.monotonic() + 30
    while len(got) < len(payload):
        assert time.monotonic() < deadline, f"echo stalled: {len(got)} of {len(payload)}"
        piece = recv_some(host, cid)
        if not piece:
            host.fill(0.02)
        got += piece
    return bytes(got)


def _first_diff(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def run_modem0(path: str, ca_pem: bytes, payload_size: int, start: threading.Event,
               result: dict, seed: int = 1) -> None:
    """Modem 0's whole session in a thread; result: 'data', 'payload', 'slowest', 'error'."""
    host = PtyHost(path, eol=b"\r\n")
    try:
        prepare(host, ca_pem)
        start.wait(30)
        ssl_open(host, 0, ECHO_PORT)
        payload = echo_payload(payload_size, seed)
        result["payload"] = payload
        result["data"] = echo_transfer(host, 0, payload)
        assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
        # a second, fresh connection still works (handshakes are not starved)
        ssl_open(host, 5, ECHO_PORT)
        small = echo_payload(3000, seed + 1)
        assert echo_transfer(host, 5, small) == small
        assert host.at("AT+QSSLCLOSE=5") == b"\r\nOK\r\n"
        result["slowest"] = (host.slowest, host.slowest_what)
    except BaseException as exc:      # reported by the test, with the modem
        result["error"] = exc
        result["slowest"] = (host.slowest, getattr(host, "slowest_what", None))
    finally:
        host.close()


# -- the attacks (each a function of its modem's pty path, run in a thread) ----------------------
def attack_garbage_bytewise(path: str, stop: threading.Event, seed: int = 7) -> dict:
    """Random bytes and control bytes one os.write() per byte, echo on, never reading while
    it writes, with "AT" fragments, S5 backspaces, A/ and lone CR/LF mixed in.  Letters, '&'
    and '/' appear only in the fragments, so no random state-changing command (ATV0, ATS3=,
    AT&F...) can form."""
    rng = random.Random(seed)
    host = PtyHost(path)
    alphabet = bytes(b for b in range(256) if not (65 <= b <= 90 or 97 <= b <= 122) and b not in b"&/")
    fragments = [b"AT", b"AT\x08\x08", b"\r", b"\n", b"\r\n", b"AT+QSSLSEND=\r", b"AT+QSSLRECV=0,\xff\r",
                 b"at+qsslopen=1,1,0,\"\x00\"\r", b"AT+CSQ\r", b"\x1a", b"\x1b", b"\x03", b"\x11\x13",
                 b"AT" + b"9" * 3000 + b"\r", b"+++", b"A/"]
    written = 0
    try:
        while (not stop.is_set() or written < 20000) and written < 2_000_000:
            piece = rng.choice(fragments) if rng.random() < 0.2 else bytes(
                rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
            for b in piece:
                host.write(bytes([b]))
                written += 1
            if rng.random() < 0.05:                  # read a little now and then, odd sizes
                host.fill(0)
                host.buf.clear()
        host.write(b"\x13")                          # an XOFF left on the line for good measure
        host.resync()
        return {"written": written}
    finally:
        host.close()


def attack_long_lines(path: str, stop: threading.Event) -> dict:
    """100 KB lines with no CR (with and without the AT prefix), echo on, each echoed byte
    checked; written in pieces of 997 bytes, the next when the last one's echo is back, then
    the CR: ERROR for the AT line (over line_max), nothing for the other, and the next AT
    answers."""
    host = PtyHost(path)
    lines = 0
    try:
        host.resync()
        assert host.at("ATE1") == b"\r\nOK\r\n"          # (resync left echo off)
        while (not stop.is_set() or lines < 2) and lines < 200:
            body = (b'AT+QSSLCFG="sni",1,' + b"7" * 100_000) if lines % 2 == 0 else b"x" * 100_000
            for i in range(0, len(body), 997):
                piece = body[i:i + 997]
                host.write(piece)
                assert host.exactly(len(piece)) == piece, "echo of a long line differs"
            host.write(b"\r")
            if lines % 2 == 0:
                assert host.until(b"\r\nERROR\r\n").string == b"\r\r\nERROR\r\n"
            else:
                assert host.exactly(1) == b"\r"
            assert host.at("AT") == b"AT\r\r\nOK\r\n"
            lines += 1
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        return {"lines": lines}
    finally:
        host.close()


def attack_port_churn(path: str, stop: threading.Event, rounds: int = 5000) -> dict:
    """Open and close the port hundreds of times, leaving it mid-line, right after a
    command, mid-prompt and mid-upload; then a host must get exactly its own answers."""
    done = 0
    for i in range(rounds):
        if stop.is_set() and i >= 100:
            break
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            tty.setraw(fd)
            what = i % 5
            if what == 0:
                os.write(fd, b"AT+CGMR")                       # half a line
            elif what == 1:
                os.write(fd, b"AT\r")                          # a command, gone before its answer
            elif what == 2:
                os.write(fd, b'AT+QFUPL="RAM:churn.bin",100\r')  # mid-upload
                with contextlib.suppress(OSError):
                    select.select([fd], [], [], 0.01)
                    os.read(fd, 7)
                os.write(fd, b"abc")
            elif what == 3:
                os.write(fd, b"ATE1\r\n")
                with contextlib.suppress(OSError):
                    select.select([fd], [], [], 0.01)
                    os.read(fd, 3)
            else:
                pass                                            # open and close, nothing else
        finally:
            os.close(fd)
        done += 1
    host = PtyHost(path)
    try:
        host.resync()
        assert host.at("AT") == b"\r\nOK\r\n"
    finally:
        host.close()
    return {"rounds": done}


def attack_reboots(path: str, stop: threading.Event, ca_pem: bytes, rounds: int = 500) -> dict:
    """Sockets open, then AT+CFUN=1,1 over and over, sometimes with a command right behind
    it in the same write, sometimes one byte at a time."""
    host = PtyHost(path, eol=b"\r\n")
    done = 0
    try:
        prepare(host, ca_pem)
        ssl_open(host, 1, ECHO_PORT)
        ssl_open(host, 2, ECHO_PORT, mode=1)
        for i in range(rounds):
            if stop.is_set() and i >= 3:
                break
            if i % 3 == 0:
                for b in b"AT+CFUN=1,1\r\n":
                    host.write(bytes([b]))
            elif i % 3 == 1:
                host.write(b"AT+CFUN=1,1\r\nAT\r\n")
            else:
                host.write(b"AT+CFUN=1,1\r")
            host.until(b"+QIND: PB DONE\r\n", timeout=30)   # (the last boot URC)
            done += 1
        host.buf.clear()
        host.resync()
        # after the storm the modem is fresh: PDP down, ids free, a new open works
        prepare(host, ca_pem)
        ssl_open(host, 1, ECHO_PORT)
        assert send_chunk(host, 1, b"after reboots") == b"SEND OK"
        got = b""
        deadline = time.monotonic() + AT_TIMEOUT
        while len(got) < 13 and time.monotonic() < deadline:
            got += recv_some(host, 1)
            if len(got) < 13:
                host.fill(0.02)
        assert got == b"after reboots"
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
        return {"reboots": done}
    finally:
        host.close()


def attack_stalled_handshakes(path: str, stop: threading.Event) -> dict:
    """All 12 ids opened to a server that takes the ClientHello and never answers; the host
    keeps asking AT+QSSLSTATE meanwhile, then closes them all."""
    host = PtyHost(path)
    try:
        prepare(host)
        for cid in range(12):
            assert host.at(f'AT+QSSLOPEN=1,1,{cid},"{SERVER_NAME}",{STALL_PORT},{cid % 2}') \
                == b"\r\nOK\r\n"
        polls = 0
        while (not stop.is_set() or polls < 50) and polls < 100_000:
            answer = host.at("AT+QSSLSTATE")
            assert answer.endswith(b"\r\nOK\r\n") and answer.count(b"+QSSLSTATE: ") == 12, answer
            assert OPENED.search(answer) is None, answer          # none opened, none failed yet
            polls += 1
        for cid in range(12):
            assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"
        assert b"+QSSLSTATE:" not in host.at("AT+QSSLSTATE")
        return {"polls": polls}
    finally:
        host.close()


def attack_held_prompt(path: str, stop: threading.Event, ca_pem: bytes, sink: Server) -> dict:
    """A data prompt ('> ' of AT+QSSLSEND) held open: half the data, then nothing until
    modem 0 is done; then the rest.  The server must get exactly the bytes."""
    host = PtyHost(path)
    try:
        prepare(host, ca_pem)
        ssl_open(host, 3, SINK_PORT)
        data = echo_payload(1400, 99)
        host.write(b"AT+QSSLSEND=3,1400\r")
        host.until(b"> ")
        host.write(data[:700] + b"+++")
        stop.wait(60)
        host.write(data[703:])
        assert host.until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")).group(1) == b"SEND OK"
        deadline = time.monotonic() + AT_TIMEOUT
        while True:
            with sink.lock:
                got = bytes(sink.received[-1]) if sink.received else b""
            if len(got) >= 1400 or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert got == data[:700] + b"+++" + data[703:]
        assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
        return {"held": True}
    finally:
        host.close()


def attack_never_reads_push(path: str, stop: threading.Event, ca_pem: bytes, cap: int,
                            count: int = 4) -> dict:
    """Direct-push sockets fed 16 KiB records by the flood server while the host never reads
    (the pty fills up); when told, the host reads, and every pushed byte must be the stream,
    in order, then each socket's "closed"."""
    host = PtyHost(path)
    try:
        prepare(host, ca_pem)
        line = ";".join(f'+QSSLOPEN=1,1,{cid},"{SERVER_NAME}",{FLOOD_PORT},1' for cid in range(count))
        assert host.at("AT" + line) == b"\r\nOK\r\n"   # one line: its OK before any URC
        stop.wait(90)                                # never read meanwhile
        verified = read_push(host, range(count), cap)
        for cid in range(count):
            assert host.at(f"AT+QSSLCLOSE={cid}") == b"\r\nOK\r\n"
        return {"verified": verified}
    finally:
        host.close()


PUSH = re.compile(rb'\+QSSLURC: "recv",(\d+),(\d+)\r\n')
NOISE = re.compile(rb'(\r\n|\+QSSLOPEN: \d+,0\r\n|\+QSSLURC: "closed",\d+\r\n)*')


def read_push(host: PtyHost, cids, total_each: int) -> int:
    """Read direct-push URCs until every socket in `cids` delivered `total_each` bytes and
    reported "closed", each socket's stream checked against pattern(); only open and close
    URCs may stand between pushes.  Returns the bytes checked."""
    offsets = dict.fromkeys(cids, 0)
    closed: set[int] = set()
    closed_re = re.compile(rb'\+QSSLURC: "closed",(\d+)\r\n')
    deadline = time.monotonic() + 40
    while min(offsets.values()) < total_each:
        assert time.monotonic() < deadline, f"push stalled at {offsets}"
        m = host.until(PUSH, timeout=AT_TIMEOUT)
        before = m.string[:m.start()]
        assert NOISE.fullmatch(before), f"unexpected output before a push URC: {before[:200]!r}"
        closed |= {int(c) for c in closed_re.findall(before)}
        cid, n = int(m.group(1)), int(m.group(2))
        assert cid in offsets and cid not in closed and 0 < n <= 1500, m.group(0)
        data = host.exactly(n)
        assert data == pattern(offsets[cid], n), f"socket {cid}: pushed bytes differ at {offsets[cid]}"
        offsets[cid] += n
        assert offsets[cid] <= total_each
    deadline = time.monotonic() + AT_TIMEOUT
    while closed != set(cids):
        assert time.monotonic() < deadline, f"closed URCs: {closed}"
        m = host.until(closed_re)
        assert NOISE.fullmatch(m.string), m.string[:200]
        closed.add(int(m.group(1)))
    return sum(offsets.values())


# -- the tests --------------------------------------------------------------------------------
def _check(results: dict) -> None:
    errors = {k: v for k, v in results.items() if isinstance(v, BaseException)}
    assert not errors, "\n".join(f"{k}: {v!r}" for k, v in errors.items())


def _run(name: str, results: dict, fn, *args) -> threading.Thread:
    def body():
        started = time.monotonic()
        try:
            results[name] = fn(*args)
            if os.environ.get("ISO_DEBUG"):
                print(f"{name}: {time.monotonic() - started:.1f} s {results[name]}", file=sys.stderr)
        except BaseException as exc:      # reported by _check with the attack's name
            results[name] = exc
    t = threading.Thread(target=body, daemon=True, name=name)
    t.start()
    return t


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout:g} s")
        time.sleep(0.02)


def socket_fds(emu: Emulator) -> int:
    return sum(1 for link in emu.fds() if link.startswith("socket:["))


def test_echo_on_modem_0_stays_exact_while_seven_hosts_attack_their_modems(tmp_path, pki):
    """--count 8.  Modem 0: 256 KiB byte-exact TLS echo with AT probes.  Modems 1-7 at the
    same time: garbage bytewise, 100 KB lines, port churn, reboot storm, 12 stalled
    handshakes, a held data prompt, a never-reading host fed by a push flood.  Afterwards
    every modem answers, the held prompt's bytes arrive exactly, the pushed bytes are exact,
    the process is alive, and with everything closed no socket fd is left."""
    cap = 512 * 1024
    echo, flood, stall, sink = Server("echo"), Server("flood", cap), Server("stall"), Server("sink")
    try:
        with emulator(tmp_path, 8, {ECHO_PORT: echo.port, FLOOD_PORT: flood.port,
                                    STALL_PORT: stall.port, SINK_PORT: sink.port}) as emu:
            base_sockets, base_fds = socket_fds(emu), len(emu.fds())
            ca = pki.ca.cert_pem
            go, stop, results = threading.Event(), threading.Event(), {}
            m0: dict = {}
            t0 = threading.Thread(target=run_modem0, args=(emu.paths[0], ca, 1024 * 1024, go, m0))
            t0.start()
            attackers = [
                _run("garbage", results, attack_garbage_bytewise, emu.paths[1], stop),
                _run("long lines", results, attack_long_lines, emu.paths[2], stop),
                _run("port churn", results, attack_port_churn, emu.paths[3], stop),
                _run("reboots", results, attack_reboots, emu.paths[4], stop, ca),
                _run("stalled handshakes", results, attack_stalled_handshakes, emu.paths[5], stop),
                _run("held prompt", results, attack_held_prompt, emu.paths[6], stop, ca, sink),
            ]
            push_result: dict = {}
            push_stop = threading.Event()
            attackers.append(_run("never reads", push_result, attack_never_reads_push,
                                  emu.paths[7], push_stop, ca, cap))
            go.set()
            t_go = time.monotonic()
            t0.join(90)
            if os.environ.get("ISO_DEBUG"):
                print(f"modem 0 done at {time.monotonic() - t_go:.1f} s, slowest AT {m0.get('slowest')}",
                      file=sys.stderr)
            assert not t0.is_alive(), "modem 0's session hung"
            stop.set()
            assert "error" not in m0, f"modem 0 failed: {m0['error']!r}"
            assert m0["data"] == m0["payload"], \
                f"modem 0's echo differs at byte {_first_diff(m0['data'], m0['payload'])}"
            with echo.lock:                                         # the server got it exactly
                assert m0["payload"] in [bytes(r) for r in echo.received]
            for t in attackers[:-1]:
                t.join(60)
            push_stop.set()
            attackers[-1].join(60)
            _check(results)
            _check(push_result)
            assert not any(t.is_alive() for t in attackers)
            assert emu.alive()
            assert results["port churn"]["rounds"] >= 100
            # after the storm: every modem answers its own AT, in turn, from fresh hosts
            for path in emu.paths:
                host = PtyHost(path, eol=b"\r\n")
                try:
                    host.resync()
                    assert host.at("AT+QSSLSTATE").endswith(b"\r\nOK\r\n")
                finally:
                    host.close()
            assert push_result["never reads"]["verified"] == 4 * cap
            flood.close()
            stall.close()
            wait_until(lambda: socket_fds(emu) <= base_sockets and len(emu.fds()) <= base_fds, 15,
                       f"fds back to {base_fds} ({base_sockets} sockets); now {emu.fds()}")
            assert emu.alive()
    finally:
        for s in (echo, flood, stall, sink):
            s.close()


def test_a_3000_byte_upload_written_at_once_completes_while_a_neighbour_host_types(tmp_path):
    """--count 2.  Modem 1's host types without pause (a chatty driver); modem 0's host
    uploads 3000-byte files with AT+QFUPL, each file's bytes in one write after CONNECT, as
    drivers do.  Every upload must be answered.  (Found by this file: a read of 2 KiB or more
    held while the port stepped aside for another modem's host was stranded until the host
    wrote again -- the upload ended in +CME ERROR: 421 and its bytes later ran as command
    input; fixed in 605fd17, emulator/io/transport.py PtyPort._read_some.)"""
    with emulator(tmp_path, 2, {}) as emu:
        stop = threading.Event()

        def typist() -> None:
            host = PtyHost(emu.paths[1])
            try:
                sizes = itertools.cycle((1, 3, 200, 1, 700))
                while not stop.is_set():
                    host.write(b"x" * next(sizes))    # no line end: echoed, never answered
                    host.fill(0)                  # (its echo read, so it can go on typing)
                    host.buf.clear()
            finally:
                host.close()
        t = threading.Thread(target=typist, daemon=True)
        t.start()
        host = PtyHost(emu.paths[0], eol=b"\r\n")
        try:
            host.at("ATE0")
            for k in range(60):
                blob = random.Random(k).randbytes(3000)
                host.write(f'AT+QFUPL="RAM:f{k}.bin",3000'.encode() + host.eol)
                host.until(b"\r\nCONNECT\r\n")
                host.write(blob)                      # one write, as a driver sends a file
                answer = host.until(re.compile(rb"\r\nOK\r\n|ERROR[^\r]*\r\n"), timeout=8).string
                assert b"+QFUPL: 3000," in answer, (k, answer)
        finally:
            stop.set()
            t.join(10)
            host.close()
        assert emu.alive()


def _flood_stalled(server: Server, quiet: float, timeout: float) -> int:
    """Wait until the flood server's total has not grown for `quiet` s (the emulator's flow
    control holds it back) and return that total; AssertionError if it never stalls."""
    deadline = time.monotonic() + timeout
    last, since = server.total_sent(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"the flood never stalled: {server.total_sent()} bytes sent"
        time.sleep(0.05)
        now = server.total_sent()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_rss_stays_bounded_when_hosts_never_read_and_modem_0_keeps_working(tmp_path, pki):
    """--count 4.  Modem 1: 12 direct-push sockets fed 16 KiB records without end (each
    connection capped at 48 MiB: 576 MiB in all if nothing held the servers back) while its
    host never reads.  Modem 2: a host that writes 4 MiB of echo-on garbage and never reads.
    Meanwhile modem 0 does a byte-exact 256 KiB echo with AT probes.

    The bound assumed: RSS may grow by at most 64 MiB over the process's size once the
    modems are up.  What the design keeps is far less: per socket ssl.recv_buffer (64 KiB),
    one network read (256 KiB) and two TLS records, plus 64 KiB of push output waiting; per
    port serial.output_backlog (1 MiB) -- about 6 MiB for all of this; 64 MiB leaves room for
    the allocator and the loaded TLS sessions, and is still far below what buffering the
    floods would take (hundreds of MiB).  Also checked: the floods stall well before their
    cap, and afterwards modem 1's new host gets exact pushed data, the sockets close and
    every socket fd is gone."""
    cap = 48 << 20
    echo, flood = Server("echo"), Server("flood", cap)
    try:
        with emulator(tmp_path, 4, {ECHO_PORT: echo.port, FLOOD_PORT: flood.port}) as emu:
            base_fds = len(emu.fds())
            ca = pki.ca.cert_pem
            host1 = PtyHost(emu.paths[1])
            prepare(host1, ca)
            # warm-up (TLS and the pty path loaded) before the baseline, then the floods
            host0 = PtyHost(emu.paths[0])
            prepare(host0, ca)
            ssl_open(host0, 0, ECHO_PORT)
            warm = echo_payload(20000, 3)
            assert echo_transfer(host0, 0, warm) == warm
            base_rss = emu.rss_kib()
            line = ";".join(f'+QSSLOPEN=1,1,{cid},"{SERVER_NAME}",{FLOOD_PORT},1' for cid in range(12))
            assert host1.at("AT" + line) == b"\r\nOK\r\n"
            flood_conns = lambda: len(flood.sent)
            wait_until(lambda: flood_conns() == 12, AT_TIMEOUT, "12 flood connections")

            def garbage_never_read() -> None:
                h = PtyHost(emu.paths[2])
                try:
                    for _ in range(4096):
                        h.write(b"x" * 1024)     # echoed back, never read
                finally:
                    h.close()
            results: dict = {}
            g = _run("garbage", results, garbage_never_read)
            payload = echo_payload(256 * 1024, 4)
            assert echo_transfer(host0, 0, payload) == payload
            g.join(60)
            _check(results)
            stalled_at = _flood_stalled(flood, quiet=1.0, timeout=40)
            assert stalled_at < 12 * cap // 4, stalled_at
            grown = emu.rss_kib() - base_rss
            if os.environ.get("ISO_DEBUG"):
                print(f"flood stalled at {stalled_at} bytes; RSS {base_rss} KiB + {grown} KiB",
                      file=sys.stderr)
            assert grown < 64 * 1024, f"RSS grew by {grown} KiB while the hosts did not read"
            # modem 0 still answers at once-ish, modem 2 answers after its host left
            assert host0.at("AT") == b"\r\nOK\r\n"
            assert host0.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
            host2 = PtyHost(emu.paths[2])
            host2.resync()
            host2.close()
            # modem 1's host finally reads: the pushed bytes are the stream, in order
            checked = 0
            offsets = dict.fromkeys(range(12), 0)
            while checked < 2 << 20:
                m = host1.until(PUSH)
                before = m.string[:m.start()]
                assert NOISE.fullmatch(before), before[:200]
                cid, n = int(m.group(1)), int(m.group(2))
                data = host1.exactly(n)
                assert data == pattern(offsets[cid], n), f"socket {cid} differs at {offsets[cid]}"
                offsets[cid] += n
                checked += n
            host1.close()
            host1 = PtyHost(emu.paths[1])
            host1.write(b"AT" + ";".join(f"+QSSLCLOSE={cid},0" for cid in range(12)).encode() + b"\r")
            host1.resync()
            assert b"+QSSLSTATE:" not in host1.at("AT+QSSLSTATE")
            host1.close()
            host0.close()
            wait_until(lambda: len(emu.fds()) <= base_fds, 15,
                       f"fds back to {base_fds}; now {emu.fds()}")
            assert emu.alive()
    finally:
        echo.close()
        flood.close()


def test_transparent_escapes_and_control_reboots_next_door_leave_modem_0_exact(tmp_path, pki):
    """--count 3 with --control.  Modem 1: a transparent (access mode 2) echo connection
    whose data are full of "+++" without guard time (data, echoed exactly), then a real
    escape (1 s silence, "+++", 1 s silence) -> OK, AT answered, ATO -> CONNECT, more data
    exact.  Modem 2: control reboots in a loop while its host sits in an AT+QFUPL CONNECT and
    writes "+++" at odd moments.  Modem 0 meanwhile: a byte-exact 512 KiB echo."""
    echo = Server("echo")
    try:
        with emulator(tmp_path, 3, {ECHO_PORT: echo.port}, control=True) as emu:
            ca = pki.ca.cert_pem
            go, stop, results, m0 = threading.Event(), threading.Event(), {}, {}
            t0 = threading.Thread(target=run_modem0, args=(emu.paths[0], ca, 512 * 1024, go, m0))
            t0.start()

            def transparent() -> dict:
                host = PtyHost(emu.paths[1])
                try:
                    prepare(host, ca)
                    host.write(f'AT+QSSLOPEN=1,1,7,"{SERVER_NAME}",{ECHO_PORT},2\r'.encode())
                    assert host.until(re.compile(rb"\r\n(CONNECT|ERROR)\r\n"), 30).group(1) == b"CONNECT"
                    burst = b"".join(b"+++" + echo_payload(300 + k, 50 + k) + b"++" + b"+++AT\r"
                                     for k in range(40))
                    for i in range(0, len(burst), 331):           # a burst of odd writes
                        host.write(burst[i:i + 331])
                    assert host.exactly(len(burst), 30) == burst   # echoed, nothing eaten
                    sent = len(burst)
                    for _ in range(2):
                        time.sleep(1.2)                       # the guard time: silence is the protocol
                        host.write(b"+++")
                        time.sleep(1.2)
                        assert host.until(re.compile(rb"\r\n(OK|ERROR)\r\n")).string == b"\r\nOK\r\n"
                        assert host.at("AT+QSSLSTATE=7").endswith(b"\r\nOK\r\n")
                        host.write(b"ATO\r")
                        assert host.until(re.compile(rb"\r\n(CONNECT|NO CARRIER)\r\n")).group(1) == b"CONNECT"
                        more = echo_payload(5000, 77) + b"+++"
                        host.write(more)
                        assert host.exactly(len(more)) == more
                    time.sleep(1.2)
                    host.write(b"+++")
                    time.sleep(1.2)
                    assert host.until(re.compile(rb"\r\n(OK|ERROR)\r\n")).string == b"\r\nOK\r\n"
                    assert host.at("AT+QSSLCLOSE=7") == b"\r\nOK\r\n"
                    return {"bytes": sent}
                finally:
                    host.close()

            def reboots() -> dict:
                host = PtyHost(emu.paths[2])
                n = 0
                try:
                    while not stop.is_set() or n < 20:
                        host.write(b'AT+QFUPL="RAM:x.bin",100\r')
                        host.until(b"CONNECT\r\n")
                        host.write(b"+++" + b"a" * (n % 50))
                        assert emu.control({"op": "reboot", "modem": 2}) == {"ok": True}
                        host.until(b"+QIND: PB DONE\r\n", 30)   # (the last boot URC)
                        host.write(b"+++")                    # in command state: dropped
                        n += 1
                    host.resync()
                    return {"reboots": n}
                finally:
                    host.close()

            t1 = _run("transparent", results, transparent)
            t2 = _run("reboots", results, reboots)
            go.set()
            t0.join(90)
            stop.set()
            t1.join(60)
            t2.join(60)
            assert not t0.is_alive() and "error" not in m0, m0.get("error")
            assert m0["data"] == m0["payload"]
            _check(results)
            assert results["reboots"]["reboots"] >= 3
            assert emu.alive()
    finally:
        echo.close()
