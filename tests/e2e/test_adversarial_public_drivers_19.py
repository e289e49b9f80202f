"""Adversarial tests: a nineteenth set of public host code that drives a Quectel module through the
SSL commands (AT+QSSLCFG, AT+QSSLOPEN without <access_mode>, AT+QSSLSEND, AT+QSSLRECV,
AT+QSSLCLOSE) and the PDP commands (AT+QICSGP, AT+QIACT), replayed through the pty with the
program's own line endings, waits, read chunking and parsers against loopback peers (OpenSSL --
Python's ssl -- for TLS).  (Earlier files: test_adversarial_public_drivers.py .. _18.py; see _8.py's
and _16.py's docstrings for the drivers already replayed.)  The driver below was not replayed
before.

Driver replayed (public sources read through the reference store; paraphrased, not copied):

- An ESP32 Arduino library for Quectel BG95/BGxx modules, class MODEMBGXX: esp32-BG95.cpp (store
  file id 7814121813) and esp32-BG95.hpp (id 8053887283); the store did not name its repository
  (a later fork renamed the class BG95AT, id 24569916475).  What the model keeps: AT_TERMINATOR is
  the multi-character constant '\\r\\n', which GCC makes 0x0D0A and readStringUntil(char) cuts to
  '\\n': every "line" is read up to a LF, with Arduino's Stream timeout of 1 s (a read that finds
  no LF returns what came in that second), then trim()med; send_command() = println() (the
  command + "\\r\\n"); the data go out byte by byte after send_command(data)'s own read of one
  line if anything is waiting.  check_command(cmd, ok, err) -- lines until one equals `ok` (kept),
  equals `err`, holds "+CME ERROR" or holds "OK"; check_command_no_ok() -- the same without the
  "OK" stop, true at `ok`; every line goes through parse_command_line() first: a line starting
  "AT+" makes it send ATE0; '+QSSLURC: "recv",' sets data_pending[substring(17).toInt()];
  '+QSSLURC: "closed",' takes its id from the member String `state` (not the line:
  state.substring(i+1, i+1) is empty, toInt() 0) -- so ANY closed URC closes socket 0 --, clears
  `connected` and runs tcp_close(0) (AT+QSSLCLOSE=0, 10 s) from inside the parser; "+QIACT: " sets
  apn[cid-1].connected from the state digit.  set_ssl(ctx): sslversion 4, ciphersuite 0XFFFF,
  seclevel 0, "SNI" (upper case) 1, cacert "cacert.pem" (never uploaded), each must be OK.
  tcp_connect_ssl(): AT+QSSLOPEN=<ctx>,<sslctx>,<id>,"<host>",<port> (no access mode: buffer) and
  `if (check_command_no_ok(cmd, "+QSSLOPEN: <id>,0", "ERROR"), wait)` -- a misplaced parenthesis:
  the comma operator makes the condition `wait` (10000), so the socket is "connected" whatever the
  open answered and AT+QIGETERROR is never sent.  tcp_send(): the waiting lines parsed, the rest
  of the RX buffer dropped, AT+QSSLSEND=<id>,<n> with check_command_no_ok(.., ">", "ERROR") --
  the prompt "> " has no LF, so it is the Stream timeout that hands ">" over --, the bytes, then
  lines for 10 s until one holds "SEND OK" or "OK".  tcp_read_buffer() (100 ms): every waiting
  line read and thrown away (URCs too), AT+QSSLRECV=<id>,<650 - buffered>, "+QSSLRECV: " ->
  toInt() of the rest, readBytes() of exactly that many bytes (1 s timeout); data_pending stays
  true while the DRIVER's buffer holds bytes; "OK" / "ERROR" end it; nothing is read when 10 bytes
  or fewer are free.  https_get() / http_wait_response() (check_messages() + tcp_check_data_pending()
  until the buffer holds bytes) / http_get_header_length() / tcp_recv().  CONNECTION_BUFFER is
  650, the library's default; the driver's 5 s check_command_no_ok() wait is NO_OK_WAIT here.

Every host name dialled is routed to 127.0.0.1; no test asserts an upper bound on time.  Where the
driver assumes something the module does not do, the test asserts what the module does and names
the driver's fault.
"""
from __future__ import annotations

import os
import select
import socket
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import raw_drain, raw_open

STREAM_TIMEOUT = 1.0      # Arduino Stream::setTimeout() default
AT_WAIT_RESPONSE = 0.010
NO_OK_WAIT = 1.5          # check_command_no_ok()'s 5 s default, shortened
CONNECTION_BUFFER = 650
HOST = "api.bgxx-demo.example"


class ModemBGxx:
    """MODEMBGXX over the pty.  `written` logs each command line, `lines` every line read."""

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.rx = bytearray()
        self.written: list[bytes] = []
        self.lines: list[bytes] = []
        self.transcript = bytearray()
        self.apn_connected = False
        self.connected = [False, False]
        self.ssl = [False, False]
        self.data_pending = [False, False]
        self.buffers = [bytearray(), bytearray()]

    def close(self) -> None:
        os.close(self.fd)

    # -- HardwareSerial / Stream ----------------------------------------------------------------
    def _pull(self, wait: float = 0.0) -> None:
        chunk = raw_drain(self.fd, wait)
        self.rx += chunk
        self.transcript += chunk

    def available(self) -> int:
        self._pull()
        return len(self.rx)

    def read_string_until(self, stop: int = 0x0A) -> bytes:
        """Stream::readStringUntil(): up to `stop` (not kept) or a 1 s gap without it."""
        out = bytearray()
        deadline = time.monotonic() + STREAM_TIMEOUT
        while True:
            if self.rx:
                c = self.rx.pop(0)
                if c == stop:
                    break
                out.append(c)
                deadline = time.monotonic() + STREAM_TIMEOUT
                continue
            now = time.monotonic()
            if now >= deadline:
                break
            self._pull(min(0.01, deadline - now))
        return bytes(out)

    def read_line(self) -> bytes:
        line = self.read_string_until().strip()
        self.lines.append(line)
        return line

    def read_bytes(self, n: int) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + STREAM_TIMEOUT
        while len(out) < n and time.monotonic() < deadline:
            if not self.rx:
                self._pull(0.01)
                continue
            take = min(n - len(out), len(self.rx))
            out += self.rx[:take]
            del self.rx[:take]
            deadline = time.monotonic() + STREAM_TIMEOUT
        return bytes(out)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)

    # -- MODEMBGXX -----------------------------------------------------------------------------
    def send_command(self, command: str) -> None:
        raw = command.encode() + b"\r\n"            # println()
        self.written.append(raw)
        self._write(raw)

    def send_data(self, data: bytes) -> None:       # send_command(uint8_t*, size)
        if self.available():
            line = self.read_line()
            if line:
                self.parse_command_line(line)
        time.sleep(AT_WAIT_RESPONSE)
        self._write(data)

    def parse_command_line(self, line: bytes, set_data_pending: bool = True) -> bytes:
        if line.startswith(b"AT+"):
            self.send_command("ATE0")
        if line.startswith(b'+QSSLURC: "recv",'):
            cid = to_int(line[17:])
            if cid < 2 and set_data_pending:
                self.data_pending[cid] = True
            return b""
        if line.startswith(b'+QSSLURC: "closed",'):
            cid = to_int(b"")                          # state.substring(i+1, i+1): always 0
            self.connected[cid] = False
            self.tcp_close(cid)
            return line
        if line.startswith(b"+QIACT: "):
            rest = line[8:]
            if b"," in rest and to_int(rest.split(b",")[0]) == 1:
                self.apn_connected = rest.split(b",")[1][:1] == b"1"
            return line
        if line.startswith(b"OK"):
            return b""
        return line

    def _lines_for(self, wait: float):
        deadline = time.monotonic() + wait
        while time.monotonic() <= deadline:
            if self.available():
                line = self.read_line()
                if line:
                    yield line
                    continue
            time.sleep(AT_WAIT_RESPONSE)

    def check_command(self, command: str, ok: bytes, err: bytes = b"ERROR", wait: float = 5.0) -> bool:
        self.send_command(command)
        time.sleep(AT_WAIT_RESPONSE)
        expected = False
        for line in self._lines_for(wait):
            self.parse_command_line(line)
            if line == ok:
                expected = True
            if line == err or b"+CME ERROR" in line or b"OK" in line:
                break
        return expected

    def check_command_no_ok(self, command: str, ok: bytes, err: bytes = b"ERROR",
                            wait: float = NO_OK_WAIT) -> bool:
        self.send_command(command)
        time.sleep(AT_WAIT_RESPONSE)
        for line in self._lines_for(wait):
            self.parse_command_line(line)
            if line == ok:
                return True
            if line == err or b"+CME ERROR" in line:
                break
        return False

    def get_command(self, command: str, wait: float = 0.3) -> bytes:
        self.send_command(command)
        time.sleep(AT_WAIT_RESPONSE)
        data = b""
        for line in self._lines_for(wait):
            data += self.parse_command_line(line)
            if b"OK" in line:
                return data
            if b"ERROR" in line:
                return b"ERROR"
        return data

    def bring_up(self) -> bool:
        """config()'s ATE0, setup(1, "internet") and the activation; get_state()'s AT+QIACT?."""
        if not self.check_command("ATE0", b"OK"):
            return False
        if not self.check_command('AT+QICSGP=1,1,"internet","",""', b"OK"):
            return False
        self.check_command("AT+QIACT=1", b"OK", wait=15)
        self.get_command("AT+QIACT?", 15)
        return self.apn_connected

    def set_ssl(self, ctx: int) -> bool:
        for cmd in (f'AT+QSSLCFG="sslversion",{ctx},4', f'AT+QSSLCFG="ciphersuite",{ctx},0XFFFF',
                    f'AT+QSSLCFG="seclevel",{ctx},0', f'AT+QSSLCFG="SNI",{ctx},1',
                    f'AT+QSSLCFG="cacert",{ctx},"cacert.pem"'):
            if not self.check_command(cmd, b"OK"):
                return False
        return True

    def tcp_connect_ssl(self, ctx: int, ssl_ctx: int, cid: int, host: str, port: int) -> bool:
        if not self.apn_connected:
            return False
        self.ssl[cid] = True
        self.check_command_no_ok(f'AT+QSSLOPEN={ctx},{ssl_ctx},{cid},"{host}",{port}',
                                 b"+QSSLOPEN: %d,0" % cid)
        # `if (check_command_no_ok(...), wait)`: the comma operator -- always true
        self.connected[cid] = True
        return True

    def tcp_close(self, cid: int) -> bool:
        self.data_pending[cid] = False
        cmd = f"AT+QSSLCLOSE={cid}" if self.ssl[cid] else f"AT+QICLOSE={cid}"
        if self.check_command(cmd, b"OK", wait=10):
            self.connected[cid] = False
        return self.connected[cid]

    def tcp_send(self, cid: int, data: bytes) -> bool:
        if not self.connected[cid]:
            return False
        while self.available():
            self.parse_command_line(self.read_line())
        self.rx.clear()                                  # "delete garbage on buffer"
        if not self.check_command_no_ok(f"AT+QSSLSEND={cid},{len(data)}", b">"):
            return False
        self.send_data(data)
        time.sleep(AT_WAIT_RESPONSE)
        for line in self._lines_for(10):
            self.parse_command_line(line)
            if b"SEND OK" in line or b"OK" in line:
                return True
        return False

    def check_messages(self) -> None:
        while self.available():
            line = self.read_line()
            if line:
                self.parse_command_line(line)

    def tcp_read_buffer(self, cid: int, wait: float = 0.1) -> None:
        while self.available():
            self.read_line()                             # thrown away, URCs included
        left = CONNECTION_BUFFER - len(self.buffers[cid])
        if left <= 10:
            return
        self.send_command(f"AT+QSSLRECV={cid},{left}")
        time.sleep(AT_WAIT_RESPONSE)
        deadline = time.monotonic() + wait
        while time.monotonic() <= deadline:
            while self.available():
                info = self.read_line()
                if not info:
                    continue
                if info.startswith(b"+QSSLRECV: "):
                    n = to_int(info[11:])
                    if n > 0 and n + len(self.buffers[cid]) <= CONNECTION_BUFFER:
                        self.buffers[cid] += self.read_bytes(n)
                    self.data_pending[cid] = bool(self.buffers[cid])
                    break
                if info == b"OK":
                    return
                if info == b"ERROR":
                    self.data_pending[cid] = bool(self.buffers[cid])
                    return
                self.parse_command_line(info)
            time.sleep(AT_WAIT_RESPONSE)

    def tcp_check_data_pending(self) -> None:
        for cid in (0, 1):
            if self.data_pending[cid]:
                self.tcp_read_buffer(cid)

    def tcp_recv(self, cid: int, size: int) -> bytes:
        out = bytes(self.buffers[cid][:size])
        del self.buffers[cid][:size]
        return out

    def https_get(self, host: str, path: str, cid: int, ssl_ctx: int) -> bool:
        if not self.apn_connected:
            return False
        if not self.connected[cid] and self.tcp_connect_ssl(1, ssl_ctx, cid, host, 443):
            request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nCache-Control: no-cache\r\n"
                       "Connection: close\r\n\r\n").encode()
            if not self.tcp_send(cid, request):
                self.tcp_close(cid)
                return False
        return True

    def http_wait_response(self, cid: int, wait: float = 15.0) -> int:
        """Returns http_get_header_length() once the buffer holds bytes (0: none in time)."""
        deadline = time.monotonic() + wait
        while not self.buffers[cid] and time.monotonic() < deadline:
            self.check_messages()
            self.tcp_check_data_pending()
            time.sleep(0.005)
        end = bytes(self.buffers[cid]).find(b"\r\n\r\n")
        return end + 4 if end >= 0 else 0


def to_int(s: bytes) -> int:
    """Arduino String::toInt(): atol() of the leading digits."""
    s = s.strip()
    digits = b""
    for i, c in enumerate(s):
        if chr(c).isdigit() or (i == 0 and c in b"+-"):
            digits += bytes([c])
        else:
            break
    try:
        return int(digits)
    except ValueError:
        return 0


REPLY_BODY = b"{\"ok\":true}\r\n\x00\x1a\r\nOK\r\n"     # CR LF, NUL, Ctrl+Z and a fake "OK" inside
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(REPLY_BODY) + REPLY_BODY


GET_REQUEST = (b"GET /v1/ping HTTP/1.1\r\nHost: " + HOST.encode()
               + b"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")


def http_server(reply: bytes, close_after: bool):
    def handler(conn):
        while b"\r\n\r\n" not in conn.received:
            if not conn.recv(timeout=10):
                return
        conn.sendall(reply)
        if close_after:
            conn.send_close_notify()
            return
        while conn.recv():
            pass
    return handler


@pytest.fixture
def bgxx(driver_path, strict_log):
    node = ModemBGxx(driver_path)
    try:
        assert node.bring_up()
        yield node
    finally:
        node.close()


def test_bgxx_https_get_end_to_end_prompt_by_stream_timeout_and_binary_reply(bgxx, emulator):
    """set_ssl(1) (upper-case "SNI" included) is all OK; https_get() opens client 0 without an
    access mode (+QSSLOPEN: 0,0), AT+QSSLSEND=0,<n>: the prompt "\\r\\n> " carries no LF, so the
    driver gets ">" from its Stream timeout, then writes the request (the server gets exactly
    it) and finds SEND OK.  The reply (CR LF, NUL, Ctrl+Z and "\\r\\nOK\\r\\n" in its body) comes
    as '+QSSLURC: "recv",0'; AT+QSSLRECV=0,650 answers "+QSSLRECV: <n>" and exactly the bytes."""
    node = bgxx
    assert node.set_ssl(1)
    with TlsServer(handler=http_server(REPLY, close_after=False)) as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        assert node.https_get(HOST, "/v1/ping", 0, 1)
        conn = server.wait_handshake()
        assert conn.handshake_done
        assert conn.sni == HOST
        request = server.wait_received(len(GET_REQUEST))
        header_len = node.http_wait_response(0)
        assert header_len == REPLY.index(b"\r\n\r\n") + 4
        assert node.tcp_recv(0, 1000) == REPLY
        assert request == GET_REQUEST
    assert b"\r\n> " in node.transcript
    assert b">" in node.lines
    assert b"+QSSLOPEN: 0,0" in node.lines
    assert b"+QSSLRECV: %d" % len(REPLY) in node.lines
    assert node.written[:4] == [b"ATE0\r\n", b'AT+QICSGP=1,1,"internet","",""\r\n', b"AT+QIACT=1\r\n",
                                b"AT+QIACT?\r\n"]
    assert b'AT+QSSLOPEN=1,1,0,"%s",443\r\n' % HOST.encode() in node.written
    assert b"AT+QSSLRECV=0,650\r\n" in node.written


def test_bgxx_failed_open_is_still_connected_send_is_error_and_close_is_ok(bgxx, emulator):
    """Nothing listens behind the route: the module answers AT+QSSLOPEN with OK and then
    "+QSSLOPEN: 0,<err>" (err != 0), which check_command_no_ok() does not match -- but the
    misplaced parenthesis makes tcp_connect_ssl() true anyway (the driver's fault): tcp_send()
    sends AT+QSSLSEND=0,<n>, which the module refuses with ERROR (no socket 0) -- no prompt, no
    bytes taken as data --, https_get() then runs tcp_close(0): AT+QSSLCLOSE=0 is OK and the
    module is still in command mode (AT answers OK)."""
    node = bgxx
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    emulator.router.add_map(HOST, 443, "127.0.0.1", dead_port)
    assert node.set_ssl(1)
    assert node.https_get(HOST, "/v1/ping", 0, 1) is False
    opened = [ln for ln in node.lines if ln.startswith(b"+QSSLOPEN: 0,")]
    assert len(opened) == 1 and opened[0] != b"+QSSLOPEN: 0,0", node.lines
    assert b"ERROR" in node.lines[node.lines.index(opened[0]):]
    i = node.written.index(b"AT+QSSLSEND=0,%d\r\n" % len(GET_REQUEST))
    assert node.written[i + 1] == b"AT+QSSLCLOSE=0\r\n"
    assert b"> " not in node.transcript
    assert node.check_command("AT", b"OK")


def test_bgxx_closed_urc_of_client_1_closes_client_0_and_client_1_stays_readable(bgxx, emulator):
    """Two clients (0 and 1) on two servers; server 1 answers and closes.  The module reports
    '+QSSLURC: "recv",1' then '+QSSLURC: "closed",1'.  The driver's closed handler reads its id
    from the wrong String and closes client 0 (AT+QSSLCLOSE=0: server 0 sees close_notify) --
    the driver's fault.  The module keeps client 1's received bytes after the peer's close:
    tcp_check_data_pending() (recv,1 set data_pending[1]) reads the whole reply with
    AT+QSSLRECV=1,650."""
    node = bgxx
    assert node.set_ssl(1)
    with TlsServer(handler=http_server(b"keep", close_after=False)) as s0, \
            TlsServer(handler=http_server(REPLY, close_after=True)) as s1:
        emulator.router.add_map("zero.example", 443, "127.0.0.1", s0.port)
        emulator.router.add_map("one.example", 443, "127.0.0.1", s1.port)
        assert node.tcp_connect_ssl(1, 1, 0, "zero.example", 443)
        assert node.tcp_connect_ssl(1, 1, 1, "one.example", 443)
        assert s0.wait_handshake().handshake_done and s1.wait_handshake().handshake_done
        assert node.tcp_send(1, GET_REQUEST)
        s1.wait_done()
        deadline = time.monotonic() + 10
        while not node.buffers[1] and time.monotonic() < deadline:
            node.check_messages()
            node.tcp_check_data_pending()
            time.sleep(0.005)
        assert b'+QSSLURC: "closed",1' in node.lines
        assert b"AT+QSSLCLOSE=0\r\n" in node.written
        assert b"AT+QSSLCLOSE=1\r\n" not in node.written
        assert s0.wait_done().close_notify_received
        assert bytes(node.buffers[1]) == REPLY
        assert node.connected == [False, True]
    

def test_bgxx_reply_larger_than_the_driver_buffer_is_read_650_then_the_rest(bgxx, emulator):
    """A 1000-byte reply: AT+QSSLRECV=0,650 gives exactly 650 bytes; with 0 free the driver
    asks for nothing; after tcp_recv() empties it, AT+QSSLRECV=0,650 gives the other 350, and the
    next "+QSSLRECV: 0" (data_pending is cleared only when the driver's buffer is empty)."""
    node = bgxx
    body = bytes(range(256)) * 3 + b"\r\n" * 116
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    reply = reply[:1000]
    assert node.set_ssl(1)
    with TlsServer(handler=http_server(reply, close_after=False)) as server:
        emulator.router.add_map(HOST, 443, "127.0.0.1", server.port)
        assert node.https_get(HOST, "/v1/ping", 0, 1)
        assert node.http_wait_response(0) > 0
        assert len(node.buffers[0]) == 650
        assert b"+QSSLRECV: 650" in node.lines
        n = len(node.written)
        node.tcp_check_data_pending()                 # 0 bytes free: nothing is asked
        assert len(node.written) == n
        got = node.tcp_recv(0, 650)
        node.tcp_check_data_pending()
        got += node.tcp_recv(0, 650)
        assert got == reply
        assert b"+QSSLRECV: 350" in node.lines
        node.tcp_check_data_pending()
        assert node.lines[-1] == b"OK" and b"+QSSLRECV: 0" in node.lines[-4:]
        assert node.data_pending[0] is False
