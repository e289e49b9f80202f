"""Shared bits of the socket tests over the pty (tests/e2e/test_tcpip*.py,
test_adversarial_tcpip.py, test_transparent.py): the TCP(IP) commands as a host sends
them, the escape to command mode, a free loopback port, the process's connections to a port, a
host that reads in odd-sized chunks (OddHost).  The loopback peers these tests
dial are the fixtures tcp_echo / tcp_sink / udp_echo in tests/conftest.py, routed from
TCP_HOST:TCP_PORT and UDP_HOST:UDP_PORT."""
from __future__ import annotations

import fcntl
import os
import re
import random
import select
import socket
import struct
import termios
import threading
import time

from emulator.testing.host import Host

TCP_HOST, TCP_PORT = "tcp.example", 7000
UDP_HOST, UDP_PORT = "udp.example", 7001
RESULT = re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")


def qiopen(host, connect_id: int, kind: str = "TCP", addr: str = TCP_HOST, port: int = TCP_PORT,
           local_port: int = 0, mode: int = 0, code: int = 0, echo: bool = False) -> None:
    """AT+QIOPEN in buffer or push mode: OK, then +QIOPEN: <id>,<code> (echo: ATE1)."""
    line = f'AT+QIOPEN=1,{connect_id},"{kind}","{addr}",{port},{local_port},{mode}'
    assert host.at(line) == (line.encode() + b"\r" if echo else b"") + b"\r\nOK\r\n"
    assert host.seen(f"+QIOPEN: {connect_id},".encode()) + host.read_until(b"\r\n") == \
        f"+QIOPEN: {connect_id},{code}\r\n".encode()


def qisend(host, connect_id: int, data: bytes, fixed: bool = True, byte_at_a_time: bool = False,
           extra: str = "", eol: str = "\r") -> bytes:
    """AT+QISEND with a fixed length (or variable, ended by Ctrl+Z); returns the result
    (SEND OK / SEND FAIL / ERROR).  eol: how this host ends its lines (a modem learns it
    from the first line)."""
    line = f"AT+QISEND={connect_id},{len(data)}{extra}{eol}" if fixed else f"AT+QISEND={connect_id}{eol}"
    if byte_at_a_time:
        for b in line.encode():
            host.write(bytes([b]))
    else:
        host.write(line)
    assert host.read_until(re.compile(rb"> |\r\nERROR\r\n")).endswith(b"> ")
    host.write(data if fixed else data + b"\x1a")
    return host.read_until(RESULT)


def qird(host, connect_id: int, n: int = 1500) -> tuple[bytes, bytes]:
    """One AT+QIRD: (its head line with what came before it, the data; b"" for +QIRD: 0)."""
    host.write(f"AT+QIRD={connect_id},{n}\r")
    head = host.read_until(re.compile(rb"\+QIRD: \d+[^\r]*\r\n|\r\nERROR\r\n"))
    assert not head.endswith(b"ERROR\r\n"), head
    length = int(re.search(rb"\+QIRD: (\d+)", head).group(1))
    if length == 0:
        host.read_until(b"\r\nOK\r\n")
        return head, b""
    data = host.read_exactly(length)
    assert host.read_until(b"\r\nOK\r\n") == b"\r\n\r\nOK\r\n"
    return head, data


def escape(host, advance) -> bytes:
    """The note's sequence: 1 s silence, "+++", 1 s silence -> OK (advance: the modem's
    manual clock)."""
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    return host.read_until(re.compile(rb"\r\n(OK|ERROR)\r\n"))


def free_port(kind=socket.SOCK_STREAM) -> int:
    """A port free on 127.0.0.1 for TCP and UDP alike (`kind` is kept for the callers), taken
    below the kernel's ephemeral range (32768-60999): bind(0) hands out an ephemeral port,
    which another worker's next outgoing connection may take before the test binds it (the
    full run met a listener's 556 that way)."""
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randrange(20000, 32768)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fds() -> int:
    """Open file descriptors of this process (the emulator runs in a thread of it)."""
    return len(os.listdir("/proc/self/fd"))


def tcp_fds_to(port: int) -> int:
    """TCP sockets of this process (the emulator runs in a thread of it) whose peer is
    127.0.0.1:port, connecting, established or half-closed (our FIN sent, lingering)."""
    want = f":{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[2].endswith(want) and parts[2].startswith("0100007F"):
                inodes.add(parts[9])
    mine = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            mine.add(link[8:-1])
    return len(inodes & mine)


def wait_for(predicate, timeout: float = 10, what: str = "condition", every: float = 0.01) -> None:
    """Poll predicate() every `every` s until it is true; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout:g} s")
        time.sleep(every)


def activate_pdp(path: str) -> None:
    """What a board does before the driver under test runs: PDP context 1 up, through a host
    of its own on the pty (the module's echo left on), closed again."""
    host = Host(path)
    try:
        assert host.at('AT+QICSGP=1,1,"CMNET","","",1').endswith(b"\r\nOK\r\n")
        assert host.at("AT+QIACT=1").endswith(b"\r\nOK\r\n")
    finally:
        host.close()


class DrivenPeer:
    """A loopback TCP server with one connection the test drives: send(), shutdown_wr()
    (FIN, still reading), close(); what it reads is in .got (read continuously unless
    hold_reading is set, then from release_reading() on)."""

    def __init__(self, hold_reading: bool = False, rcvbuf: int | None = None) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.got = bytearray()
        self.eof = threading.Event()
        self.accepted = threading.Event()
        self._may_read = threading.Event()
        self._closed = False
        if not hold_reading:
            self._may_read.set()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        self.conn = conn
        self.accepted.set()
        if self._closed:                # close() came while accept() was returning (a loaded
            self._close_conn()          # machine): the connection still ends, with a FIN
            return
        self._may_read.wait()
        try:
            while True:
                data = self.conn.recv(65536)
                if not data:
                    break
                self.got += data
        except OSError:
            pass
        self.eof.set()

    def release_reading(self) -> None:
        self._may_read.set()

    def send(self, data: bytes) -> None:
        assert self.accepted.wait(10)
        self.conn.sendall(data)

    def shutdown_wr(self) -> None:
        assert self.accepted.wait(10)          # the modem's connect can complete before accept()
        self.conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)    # (wakes an accept() still blocked: a bare
        except OSError:                                # close() leaves it running on the fd)
            pass
        self._close_conn()
        try:
            self.listener.close()
        except OSError:
            pass

    def _close_conn(self) -> None:
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)    # (wakes the reading thread: a bare
            except OSError:                            # close() would send no FIN while it reads)
                pass
            try:
                self.conn.close()
            except OSError:
                pass


def ec2x_with_pdp(open_modem, **kw):
    host, port = open_modem("ec2x", **kw)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    return host, port


_PUSH_HEAD_0 = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+)\r\n')


def read_pushes(host, total: int, timeout: float = 30) -> bytes:
    """Direct-push URCs of socket 0 until `total` payload bytes came (nothing else between)."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < total:
        head = host.read_until(_PUSH_HEAD_0, timeout=max(0.1, deadline - time.monotonic()))
        m = _PUSH_HEAD_0.search(head)
        assert m.start() == 0, head[:200]           # nothing but push URCs meanwhile
        out += host.read_exactly(int(m.group(1)), timeout=max(0.1, deadline - time.monotonic()))
        assert host.read_exactly(2, timeout=max(0.1, deadline - time.monotonic())) == b"\r\n"   # its end
    return bytes(out)


def raw_open(path: str) -> int:
    """The pty as a host opening it without pyserial: non-blocking, no controlling tty."""
    return os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)


def raw_drain(fd: int, wait: float = 0.0) -> bytes:
    """Everything a raw_open()ed port holds now, after waiting up to `wait` s for something."""
    if wait:
        select.select([fd], [], [], wait)
    got = bytearray()
    while True:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


def raw_read_until(fd: int, end: bytes, timeout: float = 5) -> bytes:
    """What a raw_open()ed port gives until it ends with `end` (or `timeout` passed)."""
    got = b""
    deadline = time.monotonic() + timeout
    while not got.endswith(end) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                got += os.read(fd, 65536)
            except BlockingIOError:
                pass
    return got


class OddHost(Host):
    """A host that reads the port in odd-sized chunks (1, 3, 7, 4095 bytes, in turn)."""
    SIZES = (1, 3, 7, 4095)

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._turn = 0

    def _fill(self) -> None:
        size = self.SIZES[self._turn % len(self.SIZES)]
        self._turn += 1
        chunk = self.ser.read(size)
        if chunk:
            self.pending += chunk
            self.transcript += chunk


def conn_of(server, index: int = -1):
    """The server side (emulator.testing.peers.TlsServer) of a connection, its handshake done."""
    conn = server.wait_handshake(index, timeout=20)
    assert conn.handshake_done, conn
    return conn


def wait_received(conn, n: int, timeout: float = 20) -> bytes:
    """What a TLS server's connection received, once it holds at least n bytes."""
    deadline = time.monotonic() + timeout
    while len(conn.received) < n:
        assert time.monotonic() < deadline, f"the server received {len(conn.received)} of {n} bytes"
        time.sleep(0.01)
    return bytes(conn.received)


def read_exactly_all(read_once, want: int, timeout: float = 30) -> bytes:
    """read_once() (one AT+QSSLRECV / AT+QIRD answer's data, b"" when none) until `want`
    bytes came, polling; then one more read must bring nothing (none lost, none twice)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, f"only {len(got)} of {want} bytes"
        chunk = read_once()
        got += chunk
        if not chunk:
            time.sleep(0.02)
    assert len(got) == want, (len(got), want)
    assert read_once() == b""
    return bytes(got)


def error_code(host) -> int:
    """What AT+QIGETERROR says now (its <err>)."""
    return int(re.search(rb"\+QIGETERROR: (\d+),", host.at("AT+QIGETERROR")).group(1))


def udp_peer() -> socket.socket:
    """A UDP socket on 127.0.0.1 (any port), 5 s timeout: a peer of a UDP SERVICE."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    return s


def answer_ipv6_first(monkeypatch, name: str) -> None:
    """The loop's resolver (patched: nothing leaves this machine) answers `name` with ::1 first,
    then 127.0.0.1, as a dual-stack name often does; a family asked for is honoured."""
    import asyncio
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def resolver(self, host, port, *args, family=0, type=0, proto=0, flags=0):
        if host != name:
            return await real(self, host, port, *args, family=family, type=type, proto=proto, flags=flags)
        answers = []
        if family in (socket.AF_UNSPEC, socket.AF_INET6):
            answers.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port or 0, 0, 0)))
        if family in (socket.AF_UNSPEC, socket.AF_INET):
            answers.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port or 0)))
        return answers
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", resolver)


# -- AT+QISEND=<id>,0: what the peer's TCP acknowledged ----------------------------------------
QISEND_COUNTS = re.compile(rb"\r\n\+QISEND: (\d+),(\d+),(\d+)\r\n\r\nOK\r\n")


def qisend_counts(host, cid: int = 0) -> tuple[int, int, int]:
    """AT+QISEND=<cid>,0: (sent, acked, unacked), checked to add up (only "recv"/"closed"
    URCs may come before the answer)."""
    answer = host.at(f"AT+QISEND={cid},0")
    m = QISEND_COUNTS.search(answer)
    assert m and m.end() == len(answer), answer
    assert re.fullmatch(rb'(\r\n\+QIURC: "(?:recv|closed)",\d+\r\n)*', answer[:m.start()]), answer
    sent, acked, unacked = (int(x) for x in m.groups())
    assert sent == acked + unacked and acked >= 0 and unacked >= 0, (sent, acked, unacked)
    return sent, acked, unacked


def rx_queued(conn: socket.socket) -> int:
    """Bytes in a socket's receive queue (what its TCP acknowledged, not read yet)."""
    return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0" * 4))[0]


def acks_settled(host, conn: socket.socket, cid: int = 0, timeout: float = 10) -> tuple[int, int, int, int]:
    """(held by the server, sent, acked, unacked) once the server's queue and the query agree
    twice over 0.2 s: a window closes within a few round trips, and the kernel may still
    squeeze a segment in (a window update after it compacts its queue)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = (rx_queued(conn), *qisend_counts(host, cid))
        if (now == last and now[0] == now[2]) or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.2)


class Uart:
    """The pty as a microcontroller's UART: a receive thread fills a ring (the RX interrupt),
    writes go out whole (each also kept in `writes`); driver models read it as their HAL does."""

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.rx = bytearray()
        self.cond = threading.Condition()
        self.wire_rx = bytearray()
        self.wire_tx = bytearray()
        self.writes: list[bytes] = []
        self._stop = False
        self.thread = threading.Thread(target=self._pump, daemon=True, name="uart-rx")
        self.thread.start()

    def _pump(self) -> None:
        while not self._stop:
            try:
                ready = select.select([self.fd], [], [], 0.05)[0]
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            if chunk:
                with self.cond:
                    self.rx += chunk
                    self.wire_rx += chunk
                    self.cond.notify_all()

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.wire_tx += data
        view = memoryview(bytes(data))
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)

    def read(self, n: int, timeout: float) -> bytes:
        """uart_read_bytes(): up to n bytes, returning when n came or the wait ran out."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.rx) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            out = bytes(self.rx[:n])
            del self.rx[:n]
            return out

    def getchar(self, timeout: float) -> int | None:
        got = self.read(1, timeout)
        return got[0] if got else None

    def flush_input(self) -> None:
        with self.cond:
            self.rx.clear()

    def command(self, line: bytes, timeout: float = 10) -> bytes:
        """A test's own command line on the driver's UART (CR LF added): what comes up to
        and including OK / ERROR."""
        self.write(line + b"\r\n")
        got = b""
        deadline = time.monotonic() + timeout
        while not (got.endswith(b"OK\r\n") or got.endswith(b"ERROR\r\n")):
            assert time.monotonic() < deadline, got
            got += self.read(1 << 16, 0.05)
        return got

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        os.close(self.fd)
