"""Hostile and unusual NETWORK PEERS of the EC2x TCP(IP) sockets (AT+QIOPEN & co.): the host
behaves, the network does not.  What test_tcpip.py, test_adversarial_tcpip*.py,
test_review_tcpip_sockets.py and test_adversarial_close.py do not already do:

TCP clients
* a server that floods until the modem's window shuts, then resets (RST): every byte the
  modem's stack acknowledged reaches the host -- buffer mode (AT+QIRD after "closed"), direct
  push, transparent (then NO CARRIER) -- none lost, none twice, the end reported last;
* a server that resets with a little data the host has not read: "recv", "closed", the data
  still readable with AT+QIRD, AT+QIRD=<id>,0 and AT+QISTATE (state 4) right;
* the peer's FIN (it keeps reading) or RST while the host types into an AT+QISEND prompt: no
  URC inside the prompt, ERROR 567, nothing sent, "closed" after the answer;
* the peer's half-close and the host's AT+QISEND data handled in one loop turn: SEND OK for
  bytes that never leave (xfail: BUG); the same online (the bytes are not sent: silent spot);
* a peer with a zero window: SEND FAIL, then it reads: exactly the SEND OK bytes arrive, the
  AT+QISEND=<id>,0 counters agree, sends work again;
* a server that accepts and closes (FIN) or resets at once, in push and transparent mode;
* a blackhole (the server's accept queue full: its SYN is never answered): 569 after the
  notes' 150 s on the modem clock, nothing before; AT+QICLOSE while it hangs; transparent
  ERROR; no connection left behind;
* an RST while AT+QICLOSE lingers; data and an RST while the host sits in another socket's
  prompt (push mode);
* one-byte segments in push mode; a dripping server in buffer mode (one "recv" URC until
  the buffer was read empty); a TCP urgent (OOB) byte in the stream;
UDP
* a flood of datagrams at a push-mode "UDP" client whose host does not read the port:
  bounded memory, whole datagrams, in order, none twice;
* a "UDP" client's server host answering from another port; a 3000-byte datagram read in
  1500-byte pieces; an empty datagram;
* ICMP port unreachable, then the server comes up on that port (buffer and transparent
  mode): the socket just works on;
* a push-mode UDP SERVICE with three interleaved senders (one long datagram): each URC names
  the sender of the bytes after it;
TCP LISTENER
* forty clients at once with two ids free: two "incoming", the rest "incoming full" each once,
  every refused client cut off, nothing left open, a freed id taken by the next client;
* a client that pours 300 KB into a push-mode listener and leaves while the host is not
  reading the port: "incoming" first, every byte, "closed" last;
* a client that half-closes at once (no data, still reading): "closed", AT+QISEND 567, and the
  client sees the module's FIN when the host closes;
transparent mode
* a server streaming while the host escapes: OK once, not a byte between OK and ATO's
  CONNECT, every byte once;
* a server closing (FIN or RST) inside the guard time after "+++": its last bytes, NO
  CARRIER, no OK, "+++" never sent;
* a server sending "NO CARRIER", "OK", "+++", "CONNECT", "AT" as data: data, still online;
* a server pouring megabytes and closing while the host is in command mode after "+++":
  nothing reported; ATO gives CONNECT, every byte, then NO CARRIER.

Every test: exact answers and URCs (docs/behaviour.md "TCP/UDP sockets (EC2x)" and
"Transparent access mode"; the Quectel TCP(IP) notes' formats), no ERROR log record or
traceback (ec2x_strict), the port answering AT afterwards, the ids free again.  Timers run on
the modem's manual clock; waits are on bytes with timeouts.  A test marked xfail(strict)
reproduces a bug (its reason has the evidence)."""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import select
import socket
import struct
import termios
import threading
import time

import pytest

from emulator.testing.peers import TcpServer, UdpEchoServer
from tests.e2e.socket_support import (RESULT, TCP_HOST, TCP_PORT, UDP_HOST, UDP_PORT, DrivenPeer, error_code,
                                      escape, free_port, qiopen, qird, qisend, tcp_fds_to, wait_for)

OK = b"\r\nOK\r\n"
PUSH = re.compile(rb'\r\n\+QIURC: "recv",(\d+),(\d+)\r\n')
CONNECT_OR_ERROR = re.compile(rb"\r\n(CONNECT|ERROR|NO CARRIER)\r\n")


@pytest.fixture
def modem(ec2x_strict):
    """(host, advance, port): ec2x_strict (manual clock, PDP context 1 up, no ERROR log
    record), transparent mode sending at once (AT+QICFG="transwaittm",0)."""
    host = ec2x_strict[0]
    assert host.at('AT+QICFG="transwaittm",0') == OK
    return ec2x_strict


def tcpip(emulator, port):
    from emulator.sockets.tcpip import tcpip_service
    return emulator.run(tcpip_service, port.modem)


def sock_state(emulator, port, cid: int):
    svc = tcpip(emulator, port)
    return emulator.run(lambda: svc.sockets[cid].state if cid in svc.sockets else None)


def rst(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def outq(sock: socket.socket) -> int:
    """Bytes in the socket's send queue not yet acknowledged by the other side (SIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]


class Listener:
    """A loopback TCP server the test drives by hand: accept() the modem's connection."""

    def __init__(self, emulator, backlog: int = 4, host: str = TCP_HOST, port: int = TCP_PORT) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        emulator.router.add_map(host, port, "127.0.0.1", self.port)
        self.conns: list[socket.socket] = []

    def accept(self, timeout: float = 10) -> socket.socket:
        self.sock.settimeout(timeout)
        conn, _ = self.sock.accept()
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def flood_until_stalled(conn: socket.socket, total: int = 32 << 20, stall: float = 0.5) -> tuple[bytes, int]:
    """Send random bytes without blocking until the receiver's window has stayed shut for
    `stall` s (or `total` went); then wait until the unacknowledged count is steady.
    Returns (what was written, how many of them the modem's stack acknowledged)."""
    data = bytearray()
    conn.setblocking(False)
    block = os.urandom(65536)
    while len(data) < total:
        try:
            n = conn.send(block)
            data += block[:n]
        except BlockingIOError:
            if not select.select([], [conn], [], stall)[1]:
                break
    last = -1
    for _ in range(100):
        now = outq(conn)
        if now == last:
            break
        last = now
        time.sleep(0.1)
    else:
        raise AssertionError("the send queue never settled")
    return bytes(data), len(data) - last


def read_pushes(host, cid: int, total: int, timeout: float = 60) -> bytes:
    """Direct-push data of socket cid until `total` bytes came (nothing else in between; each
    push's data end with CR LF)."""
    got = bytearray()
    buf = host.pending
    deadline = time.monotonic() + timeout
    while len(got) < total:
        assert time.monotonic() < deadline, (len(got), total)
        m = PUSH.match(buf)
        if m and len(buf) >= m.end() + int(m.group(2)) + 2:
            assert int(m.group(1)) == cid, m.group(0)
            n = int(m.group(2))
            assert 0 < n <= 1500, m.group(0)
            got += buf[m.end():m.end() + n]
            assert buf[m.end() + n:m.end() + n + 2] == b"\r\n", bytes(buf[m.end() + n:m.end() + n + 20])
            del buf[:m.end() + n + 2]
            continue
        assert m or len(buf) < 40, bytes(buf[:80])
        host._fill()
    assert len(got) == total, (len(got), total)
    return bytes(got)


def qird_all(host, cid: int, want: int, timeout: float = 60) -> bytes:
    """AT+QIRD=<cid>,1500 until `want` bytes came (URC lines between answers are taken out)."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want:
        assert time.monotonic() < deadline, (len(got), want)
        head, chunk = qird(host, cid)
        assert re.fullmatch(rb'(\r\n\+QIURC: "(recv|closed)",%d\r\n)*\r\n\+QIRD: %d\r\n' % (cid, len(chunk)),
                            head), head[:120]
        got += chunk
        if not chunk:
            time.sleep(0.01)
    return bytes(got)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def still_usable(host, emulator, cid: int = 0) -> None:
    """The id opens again against an echo server and carries data; the port answers AT."""
    with TcpServer("echo") as server:
        emulator.router.add_map("again.example", 9, "127.0.0.1", server.port)
        assert host.at(f'AT+QIOPEN=1,{cid},"TCP","again.example",9,0,1') == OK
        assert host.read_until(b"+QIOPEN: %d," % cid) + host.read_until(b"\r\n") == b"\r\n+QIOPEN: %d,0\r\n" % cid
        assert qisend(host, cid, b"again") == b"\r\nSEND OK\r\n"
        assert host.read_until(b"again\r\n").endswith(b'+QIURC: "recv",%d,5\r\nagain\r\n' % cid)
        assert host.at(f"AT+QICLOSE={cid}") == OK
    assert host.at("AT") == OK


# == a server that resets with data the host has not read ============================================
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_flood_until_the_window_shuts_then_rst_every_acknowledged_byte_reaches_the_host(modem, emulator, mode):
    """The server sends until the modem stops reading (buffer: past tcpip.recv_buffer; push and
    transparent: 64 KiB of output waiting for a host that does not read the port), so its
    window shuts; then it resets.  Every byte the modem's stack acknowledged before the RST
    was the module's (a module's TCP stack acks what it buffered), so all of them reach the
    host, in order, once; then "closed" (buffer and push mode) or NO CARRIER (transparent)."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        if mode == 2:
            host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
            assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        else:
            qiopen(host, 0, mode=mode)
        conn = srv.accept()
        data, acked = flood_until_stalled(conn)
        assert 65536 < acked <= len(data), (acked, len(data))
        rst(conn)
        want = data[:acked]
        if mode == 0:
            host.seen(b'+QIURC: "recv",0\r\n')
            got = qird_all(host, 0, len(want))
            host.seen(b'+QIURC: "closed",0\r\n')            # the reset, seen once the host read
            assert qird(host, 0) == (b"\r\n+QIRD: 0\r\n", b"")
            assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: %d,%d,0\r\n\r\nOK\r\n" % (acked, acked)
        elif mode == 1:
            got = read_pushes(host, 0, len(want))
            assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
        else:
            got = host.read_exactly(len(want), timeout=60)
            assert host.read_until(b"NO CARRIER\r\n") == b"\r\nNO CARRIER\r\n"
        assert sha(got) == sha(want), (len(got), len(want))
        assert host.quiet_for(0.1) == b""
        assert re.search(rb'\+QISTATE: 0,"TCP","[0-9.]+",%d,\d+,4,1,0,%d,"usbmodem"' % (TCP_PORT, mode),
                         host.at("AT+QISTATE=1,0")), host.transcript[-200:]
        assert host.at("AT+QICLOSE=0") == OK
    still_usable(host, emulator)


def test_rst_with_a_few_unread_bytes_keeps_them_readable(modem, emulator):
    """Buffer mode: 1000 bytes the host has not read, then the server's RST: "recv", then
    "closed"; AT+QIRD=0,0 and AT+QIRD still give those bytes (the note: the host reads the
    buffer, then AT+QICLOSE), AT+QISTATE shows state 4 meanwhile."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        payload = os.urandom(1000)
        conn.sendall(payload)
        wait_for(lambda: outq(conn) == 0, what="acknowledged")
        rst(conn)
        assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n'
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 1000,0,1000\r\n\r\nOK\r\n"
        assert b',4,1,0,0,"usbmodem"' in host.at("AT+QISTATE=1,0")
        assert qird(host, 0, 600) == (b"\r\n+QIRD: 600\r\n", payload[:600])
        assert qird(host, 0, 600) == (b"\r\n+QIRD: 400\r\n", payload[600:])
        assert qird(host, 0) == (b"\r\n+QIRD: 0\r\n", b"")
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 1000,1000,0\r\n\r\nOK\r\n"
        assert host.at("AT+QISEND=0,3") == b"\r\nERROR\r\n"
        assert error_code(host) == 567
        assert host.at("AT+QICLOSE=0") == OK
        assert host.at("AT+QISTATE?") == OK


# == the peer's end while the host is in a data prompt ===============================================
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_peer_end_while_the_host_types_into_a_send_prompt(modem, emulator, how):
    """The host has "> " and is typing when the server half-closes (FIN; it still reads) or
    resets.  Nothing is written inside the prompt (no URC between "> " and the answer); the
    data then answer ERROR (567: the socket is closed by the peer) and nothing of them reaches
    the server; "closed" comes after that answer; AT+QICLOSE ends it (the half-closed server
    sees the module's FIN)."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        host.write(b"AT+QISEND=0,10\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"12345")
        if how == "fin":
            conn.shutdown(socket.SHUT_WR)
        else:
            rst(conn)
        wait_for(lambda: sock_state(emulator, port, 0) != 2, what="the peer's end seen")
        assert host.quiet_for(0.1) == b""                  # nothing inside the prompt
        host.write(b"67890")
        assert host.read_until(RESULT) == b"\r\nERROR\r\n"
        assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
        assert error_code(host) == 567
        assert host.at("AT+QICLOSE=0") == OK
        if how == "fin":
            conn.settimeout(5)
            assert conn.recv(100) == b""                  # the module's FIN, not a byte before it
        assert host.at("AT+QISTATE?") == OK


class LoopBlocked:
    """The emulator's loop kept busy (as by another modem's TLS work) until release(): what
    happens meanwhile on its sockets and pty is handled in one turn, in the order it came."""

    def __init__(self, emulator) -> None:
        self.started, self.released = threading.Event(), threading.Event()

        def block() -> None:
            self.started.set()
            self.released.wait(10)
        emulator.loop.call_soon_threadsafe(block)
        assert self.started.wait(10)

    def release(self) -> None:
        self.released.set()


def send_answer_and_closed(host, closed: bytes) -> bytes:
    """A send's answer (SEND OK, or ERROR with QIGETERROR 567) and the socket's "closed" URC,
    which comes before the answer when the FIN was seen before the command line, after it
    when the data prompt was already open.  Returns the answer."""
    out = host.read_until(RESULT)
    if closed not in out:
        out += host.read_until(closed)
    answer = out.replace(closed, b"", 1)
    assert answer in (b"\r\nSEND OK\r\n", b"\r\nERROR\r\n"), out
    if answer == b"\r\nERROR\r\n":
        assert error_code(host) == 567
    return answer


# Was a bug, fixed: SEND OK for bytes that never left.  The peer's FIN and the host's data came
# in one loop turn: asyncio closed the transport at the FIN while the socket stayed CONNECTED
# until connection_lost ran a turn later, so the data got SEND OK, were held by transmit_soon()
# and dropped ("N bytes accepted (SEND OK) but the connection ended before they left").  The
# socket now learns of the FIN in eof_received itself (after sending what SEND OK accepted
# before it): a send behind the FIN is ERROR 567, as after any peer close.
@pytest.mark.parametrize("command", ["qisend", "qisendex"])
def test_send_ok_in_the_turn_the_peers_half_close_arrives_is_delivered(modem, emulator, command):
    """The server half-closes (it keeps reading) just before the host's AT+QISEND data (or
    its AT+QISENDEX line) reach the modem, both handled in one loop turn: the answer is SEND
    OK -- then the still-reading server must get the bytes -- or ERROR (567) and it gets
    none."""
    host, advance, port = modem
    for i in range(3):
        peer = DrivenPeer()
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
        try:
            qiopen(host, 0)
            assert peer.accepted.wait(10)
            payload = b"race%04d" % i
            if command == "qisend":
                host.write(b"AT+QISEND=0,8\r")
                assert host.read_until(b"> ") == b"\r\n> "
            busy = LoopBlocked(emulator)
            peer.shutdown_wr()                 # (on loopback the FIN is there when this returns)
            host.write(payload if command == "qisend" else b'AT+QISENDEX=0,"%s"\r' % payload.hex().encode())
            busy.release()
            answer = send_answer_and_closed(host, b'\r\n+QIURC: "closed",0\r\n')
            assert host.at("AT+QICLOSE=0") == OK
            assert peer.eof.wait(5)
            if answer == b"\r\nSEND OK\r\n":
                assert bytes(peer.got) == payload, (answer, bytes(peer.got))
            else:
                assert bytes(peer.got) == b"", answer
        finally:
            peer.close()


def test_qsslsend_in_the_turn_the_tls_peers_half_close_arrives(modem, emulator):
    """The same race on an SSL socket: the TLS server sends its FIN without close_notify (and
    reads on) while the emulator's loop is busy, then the host's AT+QSSLSEND data come; both are
    handled in one turn.  SEND OK only if the server then gets the bytes (decrypted); else
    ERROR with QIGETERROR 567 and it gets none -- never SEND OK for bytes that are dropped."""
    from emulator.testing.peers import TlsServer
    host, advance, port = modem
    for i in range(3):
        with TlsServer(mode="echo") as server:
            emulator.router.add_map("tls.example", 443, "127.0.0.1", server.port)
            assert host.at('AT+QSSLOPEN=1,1,0,"tls.example",443,0') == OK
            assert host.read_until(b"+QSSLOPEN: 0,0\r\n", timeout=10).endswith(b"+QSSLOPEN: 0,0\r\n")
            conn = server.wait_handshake(timeout=10)
            payload = b"tls-race%02d" % i
            host.write(b"AT+QSSLSEND=0,%d\r" % len(payload))
            assert host.read_until(b"> ") == b"\r\n> "
            busy = LoopBlocked(emulator)
            conn.close(close_notify=False, fin=True)           # FIN only; it reads on
            server.wait_for(lambda: conn.close_reason is not None, 10, "the server's close")
            time.sleep(0.05)                    # (its shutdown follows at once, on loopback)
            host.write(payload)
            busy.release()
            answer = send_answer_and_closed(host, b'\r\n+QSSLURC: "closed",0\r\n')
            assert host.at("AT+QSSLCLOSE=0") == OK
            server.wait_for(lambda: conn.client_eof, 10, "the emulator's FIN")
            assert bytes(conn.received) == (payload if answer == b"\r\nSEND OK\r\n" else b""), \
                (answer, bytes(conn.received))


def test_zero_window_peer_then_it_reads_exactly_the_send_ok_bytes(modem, emulator):
    """A server that reads nothing (its window shuts): AT+QISEND answers SEND OK until the
    modem's send buffer is full, then SEND FAIL; AT+QISEND=0,0 counts exactly the SEND OK
    bytes (sent = acked + unacked).  Then the server reads: it gets exactly the SEND OK bytes,
    in order, not the SEND FAIL ones; unacked drains to 0; sends work again."""
    host, advance, port = modem
    peer = DrivenPeer(hold_reading=True, rcvbuf=4096)
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", peer.port)
    try:
        qiopen(host, 0)
        ok_bytes = bytearray()
        for i in range(20000):
            chunk = i.to_bytes(4, "big") + os.urandom(1456)
            answer = qisend(host, 0, chunk)
            if answer == b"\r\nSEND FAIL\r\n":
                break
            assert answer == b"\r\nSEND OK\r\n", answer
            ok_bytes += chunk
        else:
            raise AssertionError("never SEND FAIL")
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
        sent, acked, unacked = map(int, re.fullmatch(rb"\r\n\+QISEND: (\d+),(\d+),(\d+)\r\n\r\nOK\r\n",
                                                     host.at("AT+QISEND=0,0")).groups())
        assert sent == len(ok_bytes) and acked + unacked == sent and unacked > 0, (sent, acked, unacked)
        peer.release_reading()
        wait_for(lambda: len(peer.got) >= len(ok_bytes), timeout=30, what="the server read everything")
        time.sleep(0.05)
        assert sha(bytes(peer.got)) == sha(bytes(ok_bytes)), (len(peer.got), len(ok_bytes))
        assert host.at("AT+QISEND=0,0") == b"\r\n+QISEND: %d,%d,0\r\n\r\nOK\r\n" % (sent, sent)
        assert qisend(host, 0, b"after") == b"\r\nSEND OK\r\n"
        wait_for(lambda: bytes(peer.got).endswith(b"after"), what="the send after the SEND FAIL")
        assert len(peer.got) == len(ok_bytes) + 5
        host.write(b"AT+QICLOSE=0\r")          # lingers for the server's own FIN
        assert peer.eof.wait(5)
        peer.close()
        assert host.read_until(OK) == OK
        assert host.at("AT+QISTATE?") == OK
    finally:
        peer.close()


# == servers that accept and go at once ==============================================================
@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("mode", [1, 2])
def test_server_that_accepts_and_goes_at_once(modem, emulator, mode, how):
    """A server that closes (FIN) or resets every connection the moment it accepts it, before
    the +QIOPEN answer can be written.  Push mode: "+QIOPEN: 0,0" then "closed" (no "recv");
    a reset may instead fail the open with 566.  Transparent mode: CONNECT then NO CARRIER
    (behaviour.md: the close belongs to the online link, never a "closed" URC), or ERROR
    with 566 for a reset; ATO afterwards answers NO CARRIER.  Either way one answer, the id
    free after AT+QICLOSE."""
    host, advance, port = modem

    def behave(conn):
        if how == "rst":
            conn.reset()
        else:
            conn.close()

    with TcpServer(behave=behave) as server:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", server.port)
        for _ in range(5):
            if mode == 1:
                assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,1') == OK
                answer = host.seen(re.compile(rb"\+QIOPEN: 0,\d+\r\n"))
                if answer == b"+QIOPEN: 0,566\r\n" and how == "rst":
                    assert host.at("AT+QISTATE?") == OK
                    continue
                assert answer == b"+QIOPEN: 0,0\r\n", answer
                assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
            else:
                host.write(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
                answer = host.read_until(CONNECT_OR_ERROR)
                if answer == b"\r\nERROR\r\n" and how == "rst":
                    assert error_code(host) == 566
                    assert host.at("AT+QISTATE?") == OK
                    continue
                assert answer == b"\r\nCONNECT\r\n", answer
                assert host.read_until(CONNECT_OR_ERROR) == b"\r\nNO CARRIER\r\n"
                assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
            assert host.quiet_for(0.05) == b""
            assert b',4,1,0,%d,"usbmodem"' % mode in host.at("AT+QISTATE=1,0")
            assert host.at("AT+QICLOSE=0") == OK
            assert host.at("AT+QISTATE?") == OK
        assert b"recv" not in host.transcript
    still_usable(host, emulator)


# == refused and never answered ======================================================================
def test_blackholed_syn_is_569_after_150_s_and_leaves_nothing(modem, emulator):
    """The server's accept queue is full, so its kernel drops the modem's SYN: the connect is
    never answered.  No +QIOPEN within the notes' 150 s ("maximum network response time"),
    then "+QIOPEN: 0,569" (AT+QIGETERROR 569); AT+QICLOSE on a second such open while it hangs
    answers OK at once and no +QIOPEN ever comes for it; in transparent mode the open
    answers ERROR (569) after 150 s.  No connection attempt is left behind.  (A bound port
    nobody listens on is 566 at once: test_tcpip.py.)"""
    host, advance, port = modem
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    filler = socket.create_connection(srv.getsockname())        # the one the queue holds
    emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.getsockname()[1])
    try:
        assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
        assert host.at(f'AT+QIOPEN=1,1,"TCP","{TCP_HOST}",{TCP_PORT},0,1') == OK
        advance(60)
        assert host.quiet_for(0.2) == b""
        assert re.search(rb'\+QISTATE: 1,"TCP",.*,1,1,1,1,"usbmodem"', host.at("AT+QISTATE=1,1"))   # opening
        assert host.at("AT+QICLOSE=1") == OK
        advance(89)
        assert host.quiet_for(0.2) == b""
        advance(2)
        assert host.read_until(b"+QIOPEN: 0,569\r\n") == b"\r\n+QIOPEN: 0,569\r\n"
        assert error_code(host) == 569
        advance(200)
        assert host.quiet_for(0.2) == b""                           # nothing for id 1, ever
        assert host.at("AT+QISTATE?") == OK
        host.write(f'AT+QIOPEN=1,2,"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
        advance(149)
        assert host.quiet_for(0.2) == b""
        advance(2)
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nERROR\r\n"
        assert error_code(host) == 569
        wait_for(lambda: tcp_fds_to(srv.getsockname()[1]) == 1, what="the connects released")   # (the filler)
    finally:
        filler.close()
        srv.close()
    assert host.at("AT+QISTATE?") == OK
    still_usable(host, emulator)





# == odd bytes in the stream =========================================================================
def test_urgent_byte_in_the_stream_leaves_the_rest_in_order(modem, emulator):
    """A server that sends a TCP urgent byte (MSG_OOB) between its data: the bytes around it
    arrive in order, once, and the socket carries on.  (The emulator's kernel keeps the urgent
    byte out of band, so the host gets "abcdef"; a module's stack most likely passes it inline,
    "abcXdef", as RFC 6093 recommends -- behaviour.md says nothing: either is accepted here.)"""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        conn.sendall(b"abc")
        conn.send(b"X", socket.MSG_OOB)
        conn.sendall(b"def")
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        got = bytearray()
        deadline = time.monotonic() + 10
        while not got.endswith(b"def"):
            assert time.monotonic() < deadline, bytes(got)
            got += qird(host, 0)[1]
        assert bytes(got) in (b"abcdef", b"abcXdef"), bytes(got)
        assert qisend(host, 0, b"ok?") == b"\r\nSEND OK\r\n"
        conn.settimeout(5)
        assert conn.recv(10) == b"ok?"
        conn.sendall(b"more")
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert qird(host, 0) == (b"\r\n+QIRD: 4\r\n", b"more")
        assert host.at("AT+QICLOSE=0,0") == OK


def test_one_byte_segments_in_push_mode(modem, emulator):
    """A server that trickles 400 one-byte segments (TCP_NODELAY, a pause between): every
    byte once, in order, each push URC framed whole, and nothing but push URCs."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0, mode=1)
        conn = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = bytes(range(256)) + bytes(range(144))
        for b in data:
            conn.send(bytes([b]))
            time.sleep(0.0005)
        assert read_pushes(host, 0, len(data)) == data
        conn.close()
        assert host.read_until(b'+QIURC: "closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
        assert host.at("AT+QICLOSE=0") == OK


# == UDP =============================================================================================
def test_udp_push_flood_while_the_host_does_not_read_the_port(modem, emulator):
    """4000 datagrams of 1000 bytes at a push-mode "UDP" socket whose host reads nothing for a
    while: memory stays bounded (receive buffer and output backlog); what the host then gets
    is whole datagrams, one push URC each, in the order sent, none twice (UDP may drop the
    ones no buffer had room for)."""
    from emulator.io.transport import HIGH_WATER
    host, advance, port = modem
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT, mode=1)
        assert qisend(host, 0, b"hi") == b"\r\nSEND OK\r\n"
        (me, _), = server.wait_datagrams(1)
        sent = [i.to_bytes(4, "big") + os.urandom(996) for i in range(4000)]
        for d in sent:
            server.sock.sendto(d, me)
        time.sleep(0.3)
        svc = tcpip(emulator, port)
        held = emulator.run(lambda: len(svc.sockets[0].inbox))
        backlog = emulator.run(port.modem.output_backlog)
        assert held <= svc.recv_buffer + 65507, held
        assert backlog <= HIGH_WATER + 1600, backlog
        got = []
        buf = host.pending
        while True:
            m = PUSH.match(buf)
            if m and len(buf) >= m.end() + int(m.group(2)) + 2:
                assert m.group(1) == b"0" and m.group(2) == b"1000", m.group(0)
                got.append(bytes(buf[m.end():m.end() + 1000]))
                assert buf[m.end() + 1000:m.end() + 1002] == b"\r\n", bytes(buf[m.end() + 1000:m.end() + 1020])
                del buf[:m.end() + 1002]
                continue
            assert m or len(buf) < 40, bytes(buf[:80])
            before = len(buf)
            deadline = time.monotonic() + 0.5
            while len(buf) == before and time.monotonic() < deadline:
                host._fill()
            if len(buf) == before:
                break
        assert buf == b""
        idx = [int.from_bytes(g[:4], "big") for g in got]
        assert len(got) >= 60 and idx == sorted(set(idx)), idx[:20]
        assert all(g == sent[i] for g, i in zip(got, idx))
        assert qisend(host, 0, b"still") == b"\r\nSEND OK\r\n"
        assert host.at("AT+QICLOSE=0") == OK


def test_udp_client_ignores_another_sender_and_splits_a_long_datagram(modem, emulator):
    """A "UDP" client (buffer mode) whose server's host also answers from another port: only
    the server's own datagrams are the socket's (the emulator's "UDP" socket is connected;
    behaviour.md does not say).  A 3000-byte datagram reads as 1500 + 1500 (AT+QIRD takes at
    most 1500), an empty one is nothing, the next datagram comes alone; AT+QIRD=0,0 counts
    bytes."""
    host, advance, port = modem
    with UdpEchoServer(echo=False) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", server.port)
        qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
        assert qisend(host, 0, b"hi") == b"\r\nSEND OK\r\n"
        (me, _), = server.wait_datagrams(1)
        big = os.urandom(3000)
        other.sendto(b"spoofed", me)
        server.sock.sendto(big, me)
        other.sendto(b"spoofed again", me)
        server.sock.sendto(b"", me)
        server.sock.sendto(b"0123456789", me)
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        wait_for(lambda: b"+QIRD: 3010," in host.at("AT+QIRD=0,0"), what="both datagrams in")
        assert qird(host, 0) == (b"\r\n+QIRD: 1500\r\n", big[:1500])
        assert qird(host, 0, 1000) == (b"\r\n+QIRD: 1000\r\n", big[1500:2500])
        assert qird(host, 0) == (b"\r\n+QIRD: 500\r\n", big[2500:])
        assert qird(host, 0) == (b"\r\n+QIRD: 10\r\n", b"0123456789")
        assert qird(host, 0) == (b"\r\n+QIRD: 0\r\n", b"")
        assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 3010,3010,0\r\n\r\nOK\r\n"
        assert host.quiet_for(0.1) == b""
        assert host.at("AT+QICLOSE=0") == OK


def test_udp_port_unreachable_then_the_server_comes_up(modem, emulator):
    """A "UDP" client sends to a port nobody has bound (ICMP port unreachable each time):
    SEND OK, no "closed", the socket stays; then a server binds that port: the next datagram
    reaches it -- the one SEND OK'd after the ICMP errors is not lost to a stale socket
    error -- and its answer reaches the host."""
    host, advance, port = modem
    udp_port = free_port(socket.SOCK_DGRAM)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", udp_port)
    qiopen(host, 0, "UDP", UDP_HOST, UDP_PORT)
    for _ in range(5):
        assert qisend(host, 0, b"anyone?") == b"\r\nSEND OK\r\n"
    assert host.quiet_for(0.2) == b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", udp_port))
        server.settimeout(5)
        assert qisend(host, 0, b"hello") == b"\r\nSEND OK\r\n"
        data, me = server.recvfrom(100)
        assert data == b"hello"
        server.sendto(b"welcome", me)
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert qird(host, 0) == (b"\r\n+QIRD: 7\r\n", b"welcome")
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.recvfrom(100)                           # (the ones before went nowhere)
    assert re.search(rb'\+QISTATE: 0,"UDP",.*,2,1,0,0,"usbmodem"', host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QICLOSE=0") == OK


# == TCP LISTENER ====================================================================================
def test_forty_clients_at_once_with_two_ids_free(modem, emulator):
    """Ids 1-9 are UDP SERVICEs, a TCP LISTENER is 0: forty clients connect at once.  Two
    become "incoming" (ids 10 and 11, the lowest free), each of the 38 others is one
    "+QIURC: "incoming full"" (BG96 §2.3.3) and is cut off (EOF or RST, never left hanging);
    the two carry data; once one is closed a new client gets its id; nothing is left open."""
    from tests.e2e.socket_support import fds
    host, advance, port = modem
    before = fds()
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    for i in range(1, 10):
        qiopen(host, i, "UDP SERVICE", "127.0.0.1", 0, local_port=free_port(socket.SOCK_DGRAM))
    clients = [socket.create_connection(("127.0.0.1", lport), timeout=5) for _ in range(40)]
    try:
        found = [host.seen(re.compile(rb'\+QIURC: "incoming",(10|11),0,"127\.0\.0\.1",(\d+)\r\n'))
                 for _ in range(2)]
        for _ in range(38):
            host.seen(b'+QIURC: "incoming full"\r\n')
        assert host.quiet_for(0.2).count(b"incoming") == 0
        assert host.transcript.count(b'"incoming full"') == 38
        by_port = {int(re.search(rb",(\d+)\r\n$", f).group(1)): int(f.split(b",")[1]) for f in found}
        alive = {}
        for c in clients:
            if c.getsockname()[1] in by_port:
                alive[by_port[c.getsockname()[1]]] = c
                continue
            try:
                assert c.recv(1) == b""
            except ConnectionResetError:
                pass
        assert sorted(alive) == [10, 11]
        for cid, c in alive.items():
            c.sendall(b"id %d" % cid)
        for cid in (10, 11):
            host.seen(b'+QIURC: "recv",%d\r\n' % cid)
            assert qird(host, cid)[1] == b"id %d" % cid
        alive[10].close()
        host.seen(b'+QIURC: "closed",10\r\n')
        assert host.at("AT+QICLOSE=10") == OK
        with socket.create_connection(("127.0.0.1", lport), timeout=5) as late:
            host.seen(b'+QIURC: "incoming",10,0,"127.0.0.1",%d\r\n' % late.getsockname()[1])
        host.seen(b'+QIURC: "closed",10\r\n')
    finally:
        for c in clients:
            c.close()
    host.seen(b'+QIURC: "closed",11\r\n')
    for i in range(12):
        assert host.at(f"AT+QICLOSE={i}") == OK
    assert host.at("AT+QISTATE?") == OK
    wait_for(lambda: fds() <= before, what="every socket released")


def test_client_pours_into_a_push_listener_while_the_host_does_not_read(modem, emulator):
    """A client connects to a push-mode listener, sends 300 KB and closes while the host is
    not reading the port: "incoming" first, then every byte in push URCs, "closed" last."""
    host, advance, port = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport, mode=1)
    data = os.urandom(300_000)
    done = threading.Event()

    def client():
        with socket.create_connection(("127.0.0.1", lport)) as c:
            me.append(c.getsockname()[1])
            c.sendall(data)
        done.set()
    me: list[int] = []
    threading.Thread(target=client, daemon=True).start()
    time.sleep(0.5)                                     # the host reads nothing meanwhile
    assert host.read_until(b'"incoming",') == b'\r\n+QIURC: "incoming",'
    assert host.read_until(b"\r\n") == b'1,0,"127.0.0.1",%d\r\n' % me[0]
    assert sha(read_pushes(host, 1, len(data))) == sha(data)
    assert done.wait(10)
    assert host.read_until(b'+QIURC: "closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at("AT+QICLOSE=0") == OK


def test_client_that_half_closes_at_once_then_reads(modem, emulator):
    """A client connects and shuts its sending side at once (it keeps reading): "incoming",
    then "closed"; AT+QISEND to it is ERROR 567; AT+QICLOSE gives it the module's FIN with
    nothing before; the listener still takes the next client."""
    host, advance, port = modem
    lport = free_port()
    qiopen(host, 0, "TCP LISTENER", "127.0.0.1", 0, local_port=lport)
    with socket.create_connection(("127.0.0.1", lport), timeout=5) as c:
        c.shutdown(socket.SHUT_WR)
        assert host.read_until(b'"closed",1\r\n') == (
            b'\r\n+QIURC: "incoming",1,0,"127.0.0.1",%d\r\n\r\n+QIURC: "closed",1\r\n' % c.getsockname()[1])
        assert host.at("AT+QISEND=1,3") == b"\r\nERROR\r\n"
        assert error_code(host) == 567
        assert qird(host, 1) == (b"\r\n+QIRD: 0\r\n", b"")
        assert host.at("AT+QICLOSE=1") == OK
        assert c.recv(10) == b""
    with socket.create_connection(("127.0.0.1", lport), timeout=5) as c2:
        c2.sendall(b"next")
        host.seen(b'+QIURC: "incoming",1,0,"127.0.0.1",%d\r\n' % c2.getsockname()[1])
        host.seen(b'+QIURC: "recv",1\r\n')
        assert qird(host, 1)[1] == b"next"
    assert host.read_until(b'+QIURC: "closed",1\r\n') == b'\r\n+QIURC: "closed",1\r\n'   # (seen() would
    # find the first "closed",1 again: read_until took it, seen() never marked it)
    assert host.at("AT+QICLOSE=1") == OK
    assert host.at("AT+QICLOSE=0") == OK


# == transparent mode ================================================================================
def online(host, emulator, srv: Listener, cid: int = 0) -> socket.socket:
    """AT+QIOPEN in transparent mode to srv: CONNECT; the server's side of the connection."""
    host.write(f'AT+QIOPEN=1,{cid},"TCP","{TCP_HOST}",{TCP_PORT},0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    return srv.accept()


HEX = b"0123456789abcdef"


def test_server_streaming_while_the_host_escapes(modem, emulator):
    """The server streams without pause (letters and digits: no CR LF in it) while the host
    leaves with "+++": the escape's OK comes once, inside the stream; not a byte after it
    until ATO's CONNECT (the bytes wait in the socket); then the rest; every byte once, in
    order; the server's close after it is NO CARRIER."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        conn = online(host, emulator, srv)
        stop = threading.Event()
        sent = bytearray()

        def stream():
            block = bytes(HEX[b & 15] for b in os.urandom(8192))
            while not stop.is_set():
                try:
                    n = conn.send(block)
                except socket.timeout:
                    continue                              # (the window is shut: try again)
                sent.extend(block[:n])
        conn.settimeout(0.2)
        t = threading.Thread(target=stream, daemon=True)
        t.start()
        got = bytearray(host.read_exactly(200_000, timeout=20))
        out = escape(host, advance)
        assert out.endswith(b"\r\nOK\r\n") and out.count(b"\r\n") == 2, out[-100:]
        got += out[:-6]
        assert host.quiet_for(0.3) == b""                 # nothing while in command mode
        assert host.at("AT") == OK
        stop.set()
        t.join(10)
        assert not t.is_alive()
        total = len(sent)
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        got += host.read_exactly(total - len(got), timeout=30)
        conn.close()
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nNO CARRIER\r\n"
        assert sha(bytes(got)) == sha(bytes(sent))
        assert host.at("AT+QICLOSE=0") == OK


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_server_ends_inside_the_guard_time_after_plus_plus_plus(modem, emulator, how):
    """The host has written "+++" and waits out the guard time; the server sends its last
    bytes and half-closes (or resets) before it has passed (behaviour.md: "A peer close during
    the guard time after "+++" ...: the connection's end wins -- NO CARRIER, no OK, and the held
    "+++" is never sent"): the bytes, NO CARRIER, no OK even after the guard time; ATO is NO
    CARRIER; the half-closed server, still reading, gets nothing but the module's FIN when the
    host closes."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        conn = online(host, emulator, srv)
        host.write(b"data")
        conn.settimeout(5)
        assert conn.recv(10) == b"data"
        advance(1.1)
        host.write(b"+++")
        advance(0.4)                                      # (the modem has read "+++")
        conn.sendall(b"bye")
        if how == "fin":
            conn.shutdown(socket.SHUT_WR)
        else:
            wait_for(lambda: outq(conn) == 0, what="acknowledged")
            rst(conn)
        assert host.read_until(CONNECT_OR_ERROR) == b"bye\r\nNO CARRIER\r\n"
        advance(1.1)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT") == OK
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert b',4,1,0,2,"usbmodem"' in host.at("AT+QISTATE=1,0")
        assert host.at("AT+QICLOSE=0") == OK
        if how == "fin":
            assert conn.recv(10) == b""                   # no "+++" ever reached the server
    still_usable(host, emulator)


def test_server_sends_modem_words_as_data(modem, emulator):
    """A server whose data look like the modem's own words ("NO CARRIER", "OK", "+++",
    "CONNECT", "ERROR", "AT"): the host gets them as they are, the link stays online (its
    bytes still reach the server), "+++" with guard times is OK, ATO is CONNECT again."""
    host, advance, port = modem
    words = (b"\r\nNO CARRIER\r\n", b"\r\nOK\r\n", b"+++", b"\r\nCONNECT\r\n", b"\r\nERROR\r\n", b"AT\r",
             b'\r\n+QIURC: "closed",0\r\n', b"+++")
    with Listener(emulator) as srv:
        conn = online(host, emulator, srv)
        conn.settimeout(5)
        want = b""
        for w in words:
            conn.sendall(w)
            want += w
            assert host.read_exactly(len(w)) == w
        advance(1.5)
        assert host.quiet_for(0.1) == b""
        host.write(b"still online")
        assert conn.recv(100) == b"still online"
        assert escape(host, advance) == OK
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        conn.sendall(b"NO CARRIER")
        assert host.read_exactly(10) == b"NO CARRIER"
        host.write(b"back")
        assert conn.recv(100) == b"back"
        assert escape(host, advance) == OK
        assert host.at("AT+QICLOSE=0,0") == OK


def test_megabytes_then_close_while_escaped_come_after_ato(modem, emulator):
    """In command mode after "+++" the server sends 4 MB, more than the socket's buffer, and
    closes: the socket stops reading, so its end is not seen yet and nothing is reported (no
    URC in command mode); ATO gives CONNECT, every byte once, in order, then NO CARRIER."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        conn = online(host, emulator, srv)
        assert escape(host, advance) == OK
        data = os.urandom(4 << 20)
        done = threading.Event()

        def pour():
            conn.sendall(data)
            conn.close()
            done.set()
        threading.Thread(target=pour, daemon=True).start()
        assert host.quiet_for(0.5) == b""
        assert not done.is_set()
        assert host.at("AT+QIRD=0,0").endswith(OK)       # the `,0` query works in every mode
        host.write(b"ATO\r")
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
        got = host.read_exactly(len(data), timeout=60)
        assert sha(got) == sha(data)
        assert host.read_until(CONNECT_OR_ERROR) == b"\r\nNO CARRIER\r\n"
        assert done.wait(10)
        assert b',4,1,0,2,"usbmodem"' in host.at("AT+QISTATE=1,0")
        assert host.at("AT+QICLOSE=0") == OK



def test_host_bytes_meeting_the_peers_half_close_online(modem, emulator):
    """Online, the server half-closes (it reads on) and the host's bytes reach the modem in
    the same loop turn, after the FIN: NO CARRIER, and the server gets those bytes whole or
    not at all (here: not at all -- behaviour.md does not say; a module's stack in CLOSE_WAIT
    would likely still send them, see the report), never a part; the id closes cleanly."""
    host, advance, port = modem
    for _ in range(3):
        with Listener(emulator) as srv:
            conn = online(host, emulator, srv)
            conn.settimeout(5)
            busy = LoopBlocked(emulator)
            conn.shutdown(socket.SHUT_WR)
            host.write(b"last words")
            busy.release()
            assert host.read_until(CONNECT_OR_ERROR) == b"\r\nNO CARRIER\r\n"
            got = b""
            while chunk := conn.recv(100):
                got += chunk
            assert got in (b"", b"last words"), got
            assert host.at("AT+QICLOSE=0") == OK
    assert host.at("AT+QISTATE?") == OK


def test_rst_during_the_close_linger_ends_it_at_once(modem, emulator):
    """AT+QICLOSE=0,60 lingers for a server that does not close; the server then resets:
    OK at once (no need to wait out the 60 s), no "closed" URC after it, the id free."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        conn.sendall(b"unread")
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        host.write(b"AT+QICLOSE=0,60\r")
        conn.settimeout(5)
        assert conn.recv(10) == b""                       # the module's FIN: lingering now
        advance(5)
        assert host.quiet_for(0.1) == b""
        rst(conn)
        assert host.read_until(OK) == OK
        advance(60)
        assert host.quiet_for(0.2) == b""
        assert host.at("AT+QISTATE?") == OK


def test_push_data_and_reset_while_the_host_sits_in_another_sockets_prompt(modem, emulator):
    """Socket 0 in push mode; the host is in socket 1's AT+QISEND prompt when socket 0's
    server sends and resets: nothing inside the prompt; after SEND OK the push URC with the
    data, then "closed"."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0, mode=1)
        c0 = srv.accept()
        qiopen(host, 1)
        c1 = srv.accept()
        host.write(b"AT+QISEND=1,4\r")
        assert host.read_until(b"> ") == b"\r\n> "
        c0.sendall(b"pushed")
        wait_for(lambda: outq(c0) == 0, what="acknowledged")
        rst(c0)
        wait_for(lambda: sock_state(emulator, port, 0) != 2, what="the reset seen")
        assert host.quiet_for(0.1) == b""
        host.write(b"data")
        assert host.read_until(b'"closed",0\r\n') == (
            b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0,6\r\npushed\r\n\r\n+QIURC: "closed",0\r\n')
        c1.settimeout(5)
        assert c1.recv(10) == b"data"
        assert host.at("AT+QICLOSE=0") == OK
        assert host.at("AT+QICLOSE=1,0") == OK


def test_udp_service_push_from_interleaved_senders_while_the_host_does_not_read(modem, emulator):
    """A push-mode UDP SERVICE; three senders interleave 60 datagrams each (one of 2000 bytes)
    while the host is not reading the port: every push URC names the sender of the datagram
    whose bytes follow it (a long one: two URCs, both with its sender), in order per sender."""
    host, advance, port = modem
    lport = free_port(socket.SOCK_DGRAM)
    qiopen(host, 0, "UDP SERVICE", "127.0.0.1", 0, local_port=lport, mode=1)
    peers = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for p in peers:
            p.bind(("127.0.0.1", 0))
        sent = []
        for i in range(60):
            for k, p in enumerate(peers):
                d = b"%d:%03d:" % (k, i) + (os.urandom(1990) if (i, k) == (30, 1) else os.urandom(50))
                p.sendto(d, ("127.0.0.1", lport))
                sent.append((p.getsockname()[1], d))
        time.sleep(0.3)
        head = re.compile(rb'\r\n\+QIURC: "recv",0,(\d+),"127\.0\.0\.1",(\d+)\r\n')
        got = []
        total = sum(len(d) for _, d in sent)
        n = 0
        while n < total:
            m = head.match(host.read_until(head))
            assert m, host.transcript[-100:]
            size, sender = int(m.group(1)), int(m.group(2))
            data = host.read_exactly(size)
            assert host.read_exactly(2) == b"\r\n"              # the push's closing CR LF
            if got and got[-1][0] == sender and len(got[-1][1]) == 1500 and size == len(sent[len(got) - 1][1]) - 1500:
                got[-1] = (sender, got[-1][1] + data)           # the rest of the long one
            else:
                got.append((sender, data))
            n += size
        assert got == sent
        assert host.quiet_for(0.1) == b""
    finally:
        for p in peers:
            p.close()
    assert host.at("AT+QICLOSE=0") == OK



def test_udp_transparent_to_a_closed_port_stays_online(modem, emulator):
    """A transparent "UDP" socket whose server's port is closed (ICMP port unreachable for
    each datagram): no NO CARRIER, the link stays; once a server binds the port the host's
    next bytes reach it as a datagram and its answer comes to the port."""
    host, advance, port = modem
    udp_port = free_port(socket.SOCK_DGRAM)
    emulator.router.add_map(UDP_HOST, UDP_PORT, "127.0.0.1", udp_port)
    host.write(f'AT+QIOPEN=1,0,"UDP","{UDP_HOST}",{UDP_PORT},0,2\r')
    assert host.read_until(CONNECT_OR_ERROR) == b"\r\nCONNECT\r\n"
    for _ in range(5):
        host.write(b"anyone?")
        advance(0.01)
    assert host.quiet_for(0.2) == b""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", udp_port))
        server.settimeout(5)
        host.write(b"hello")
        data, me = server.recvfrom(100)
        assert data == b"hello"
        server.sendto(b"welcome", me)
        assert host.read_exactly(7) == b"welcome"
        assert escape(host, advance) == OK
    assert host.at("AT+QICLOSE=0") == OK


def test_buffer_mode_recv_urc_only_into_an_empty_buffer_with_a_dripping_server(modem, emulator):
    """A server dripping 50 small segments: one "recv" URC (the BG96 note: no new URC until
    the host has read the buffer empty); a partial read and more data: still none; read
    empty, then the next segment: one URC again."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(50):
            conn.send(b"%02d" % i)
            time.sleep(0.002)
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        wait_for(lambda: b"+QIRD: 100," in host.at("AT+QIRD=0,0"), what="all in")
        assert qird(host, 0, 30) == (b'\r\n+QIRD: 30\r\n',
                                     b"".join(b"%02d" % i for i in range(15)))
        conn.sendall(b"more")
        wait_for(lambda: b"+QIRD: 104,30," in host.at("AT+QIRD=0,0"), what="more in")
        assert qird(host, 0)[1] == b"".join(b"%02d" % i for i in range(15, 50)) + b"more"
        assert qird(host, 0) == (b"\r\n+QIRD: 0\r\n", b"")
        assert host.transcript.count(b'"recv",0') == 1
        conn.sendall(b"again")
        assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert qird(host, 0) == (b"\r\n+QIRD: 5\r\n", b"again")
        assert host.at("AT+QICLOSE=0,0") == OK



def test_peer_fin_with_unread_data_then_a_switch_to_push_is_refused(modem, emulator):
    """The server sends and half-closes; the host, told "recv" and "closed", tries to have the
    data pushed: AT+QISWTMD on a socket that is not connected is ERROR 572 (behaviour.md), in
    any mode; the data stay readable with AT+QIRD, once."""
    host, advance, port = modem
    with Listener(emulator) as srv:
        qiopen(host, 0)
        conn = srv.accept()
        conn.sendall(b"unread")
        conn.shutdown(socket.SHUT_WR)
        assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "recv",0\r\n\r\n+QIURC: "closed",0\r\n'
        for mode in (1, 0, 2):
            assert host.at(f"AT+QISWTMD=0,{mode}") == b"\r\nERROR\r\n"
            assert error_code(host) == 572
        assert host.quiet_for(0.1) == b""
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 6\r\nunread\r\n\r\nOK\r\n"
        assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
        assert host.at("AT+QICLOSE=0") == OK
