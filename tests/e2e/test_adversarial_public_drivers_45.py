"""Adversarial tests: a forty-fifth set of public host code pointed at the pty -- an ESP-IDF
(FreeRTOS, C++) AT command handler for a Quectel module that earlier rounds did not replay (a
search of tests/ and /tmp/notes for "ATCommandHndlr", "openSSLSocket", "kOpenFormatCount",
"52486421884" finds nothing):

- ATCommandHndlr.cpp, an ESP-IDF C++ "ATCommandHndlr" class over its UARTDriver (store id
  52486421884; the store did not name the repository): send(), sendAndCapture(),
  openIPSocket() / openTCPSocket(), openSSLSocket(), sendSocketData(), readSocketData(),
  sendPayloadAndWaitResponse(), processResponse() / handleCompleteLine().  What the model
  keeps:
  * every command goes out as ONE write, `<cmd>\\r\\n` (writef("%s\\r\\n")); the driver never
    sends ATE0 (this file has no init), so the module's default ATE1 echo comes back first;
  * one byte at a time through readByte(), 1 ms sleeps when nothing is there; LF ends a line,
    CR is never stored (so a trailing CR is gone too), empty lines are skipped, a line of 255+
    bytes is thrown away;
  * send() without payload: a line equal to "ERROR" or holding "+CME ERROR" fails; a line
    holding <expect> (strstr) marks it; a line equal to "OK" ends it -- success only if
    <expect> was seen (an "OK" line holds "OK", so expect "OK" is met by the OK itself);
  * send() with payload: waitForPayloadReady() returns at the FIRST '>' byte anywhere in the
    stream (or a line holding <expect>, or fails on ERROR / +CME ERROR), the payload is
    written byte by byte, 100 ms, then sendPayloadAndWaitResponse(): "SEND OK" or "OK" lines
    are success, "SEND FAIL", "ERROR" or a line holding '+QIURC: "closed"' failure, 10 s;
  * openSSLSocket(host, port, ssl_ctx, connect_id, timeout): AT+QSSLCFG "sslversion",<ctx>,4,
    "seclevel",<ctx>,0, "sni",<ctx>,1 (each must succeed), "contextid",<ctx>,1 (a failure
    only logged), then SEVEN forms of AT+QSSLOPEN tried in turn -- <ctx>,<id>,"<host>",<port>,0
    / <ctx>,<id>,"<host>",<port> / <id>,"<host>",<port>,<ctx> / <ctx>,"<host>",<port>,0 /
    <ctx>,"<host>",<port> / <id>,"<host>",<port> / "<host>",<port> -- each read line by line:
    ERROR or +CME ERROR = "format variant rejected, trying next"; a line starting
    "+QSSLOPEN:" parsed with sscanf "+QSSLOPEN: %d,%d" (its id must be <connect_id>) or, that
    failing, "+QSSLOPEN: %d" (an error code alone); the OK line is not looked at;
  * openIPSocket(): AT+QIOPEN=<ctx>,<id>,"TCP","<host>",<port>,0,0 and "+QIOPEN: %d,%d" for
    <id>; sendSocketData(): AT+QISEND=<id>,<len> through send() with expect ">";
    readSocketData(): AT+QIRD=<id>,<min(max,1024)>, "+QIRD: %d" then exactly that many raw
    bytes, then lines until "OK"; a '+QIURC: "closed",<id>' line for its id fails the read.

None of the seven AT+QSSLOPEN forms is the EC2x's (SSL note 2.2.2: <pdpctxID>,<sslctxID>,
<clientID>,"<serveraddr>",<server_port>[,<access_mode>]): every one puts the host where an
integer belongs, so the driver cannot open an SSL socket on this module at all -- a driver
quirk, documented below, not an emulator bug.  The other tests run the driver's own line
machinery on an SSL socket opened in the manual's form (the open loop's body, the payload
path of send() on AT+QSSLSEND) and its plain-TCP path, each against a real OpenSSL / Python
peer.  Every dialled name is routed to 127.0.0.1.
"""
from __future__ import annotations

import re
import time

import pytest
import serial

from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT
from tests.e2e.ssl_options_support import HOST

LINE_MAX = 256          # char line_buf[256] in openSSLSocket; ResponseState's buffer is as big


class AtHndlr:
    """ATCommandHndlr over the pty (m_modem_uart = the pty, readByte = one byte or nothing)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.rx = bytearray()
        self.writes: list[bytes] = []
        self.lines: list[bytes] = []            # every completed non-empty line (printSanitizedRx)
        self.log: list[str] = []                # the driver's printf()s that matter here

    def close(self) -> None:
        self.ser.close()

    # --- UARTDriver ----------------------------------------------------------------------------
    def writef(self, text: str) -> None:
        data = (text + "\r\n").encode("latin-1")
        self.writes.append(data)
        self.ser.write(data)

    def write_byte(self, b: int) -> None:
        self.ser.write(bytes((b,)))

    def read_byte(self) -> int | None:
        if not self.rx:
            self.rx += self.ser.read(4096)
            if not self.rx:
                return None
        b = self.rx[0]
        del self.rx[0]
        return b

    @staticmethod
    def delay_ms(ms: int) -> None:
        time.sleep(ms / 1000)

    # --- the line assembler every loop of the file repeats --------------------------------------
    def _feed(self, buf: bytearray, c: int) -> bytes | None:
        """LF: the line (CR stripped -- never stored anyway), or None for an empty one; CR is
        dropped; a full buffer starts over."""
        if c == 0x0A:
            line = bytes(buf).rstrip(b"\r") if buf.endswith(b"\r") else bytes(buf)
            buf.clear()
            if line:
                self.lines.append(line)
                return line
            return None
        if c != 0x0D:
            if len(buf) < LINE_MAX - 1:
                buf.append(c)
            else:
                buf.clear()
        return None

    @staticmethod
    def _is_error(line: bytes) -> bool:
        return line == b"ERROR" or b"+CME ERROR" in line

    # --- send() ------------------------------------------------------------------------------------
    def send(self, cmd: str, expect: str, timeout_ms: int, payload: bytes | None = None) -> bool:
        self.writef(cmd)
        if payload:
            if not self._wait_for_payload_ready(expect, timeout_ms):
                self.log.append(f"Failed waiting for payload readiness after command: {cmd}")
                return False
            return self.send_payload_and_wait_response(payload)
        buf, got_expected = bytearray(), False
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if self._is_error(line):
                self.log.append(f"AT response error command: {cmd}")
                return False
            if expect.encode() in line:
                got_expected = True
            if line == b"OK":
                if not got_expected:
                    self.log.append(f"AT OK without expected response: {cmd}")
                return got_expected
        self.log.append(f"AT TIMEOUT: {cmd}")
        return False

    def _wait_for_payload_ready(self, expect: str, timeout_ms: int) -> bool:
        buf = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            if c == ord(">"):
                return True
            line = self._feed(buf, c)
            if line is None:
                continue
            if self._is_error(line):
                return False
            if expect and expect.encode() in line:
                return True
        return False

    def send_payload_and_wait_response(self, payload: bytes) -> bool:
        for b in payload:
            self.write_byte(b)
        self.delay_ms(100)
        buf = bytearray()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if line == b"SEND OK" or line == b"OK":
                return True
            if line in (b"SEND FAIL", b"ERROR") or b'+QIURC: "closed"' in line:
                self.log.append(f"payload failed at {line!r}")
                return False
        self.log.append("Timeout waiting for payload confirmation")
        return False

    def send_and_capture(self, cmd: str, expect: str, timeout_ms: int) -> bytes | None:
        self.writef(cmd)
        buf = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if self._is_error(line):
                return None
            if expect.encode() in line:
                return line[:LINE_MAX - 1]
        return None

    # --- sockets --------------------------------------------------------------------------------
    def open_ip_socket(self, protocol: str, host: str, port: int, context_id: int, connect_id: int,
                       timeout_ms: int) -> bool:
        self.writef(f'AT+QIOPEN={context_id},{connect_id},"{protocol}","{host}",{port},0,0')
        buf = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if self._is_error(line):
                return False
            if line.startswith(b"+QIOPEN:"):
                m = re.match(rb"\+QIOPEN: ?(-?\d+),\s*(-?\d+)", line)       # sscanf "%d,%d"
                if m and int(m.group(1)) == connect_id:
                    return int(m.group(2)) == 0
        self.log.append(f"QIOPEN timeout waiting for socket id {connect_id}")
        return False

    def qsslopen_variants(self, host: str, port: int, ssl_ctx: int, connect_id: int) -> list[str]:
        return [f'AT+QSSLOPEN={ssl_ctx},{connect_id},"{host}",{port},0',
                f'AT+QSSLOPEN={ssl_ctx},{connect_id},"{host}",{port}',
                f'AT+QSSLOPEN={connect_id},"{host}",{port},{ssl_ctx}',
                f'AT+QSSLOPEN={ssl_ctx},"{host}",{port},0',
                f'AT+QSSLOPEN={ssl_ctx},"{host}",{port}',
                f'AT+QSSLOPEN={connect_id},"{host}",{port}',
                f'AT+QSSLOPEN="{host}",{port}']

    def run_open_variant(self, cmd: str, connect_id: int, timeout_ms: int) -> tuple[str, int | None]:
        """The body of openSSLSocket()'s loop for one form: ("result", err) / ("rejected", None)
        / ("timeout", None)."""
        self.writef(cmd)
        buf = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if self._is_error(line):
                return "rejected", None
            if line.startswith(b"+QSSLOPEN:"):
                m = re.match(rb"\+QSSLOPEN: ?(-?\d+),\s*(-?\d+)", line)
                if m:
                    if int(m.group(1)) == connect_id:
                        return "result", int(m.group(2))
                    continue
                m = re.match(rb"\+QSSLOPEN: ?(-?\d+)", line)
                if m:
                    return "result", int(m.group(1))
        return "timeout", None

    def open_ssl_socket(self, host: str, port: int, ssl_ctx: int, connect_id: int,
                        timeout_ms: int) -> bool:
        for opt in ("sslversion", "seclevel", "sni"):
            value = {"sslversion": 4, "seclevel": 0, "sni": 1}[opt]
            if not self.send(f'AT+QSSLCFG="{opt}",{ssl_ctx},{value}', "OK", 5000):
                self.log.append(f"QSSLCFG {opt} failed")
                return False
        if not self.send(f'AT+QSSLCFG="contextid",{ssl_ctx},1', "OK", 5000):
            self.log.append("QSSLCFG contextid unsupported/failed, continuing")
        for idx, cmd in enumerate(self.qsslopen_variants(host, port, ssl_ctx, connect_id)):
            outcome, err = self.run_open_variant(cmd, connect_id, timeout_ms)
            if outcome == "result":
                return err == 0
            self.log.append(f"QSSLOPEN format variant {idx + 1} {outcome}")
        self.log.append("all QSSLOPEN variants failed")
        return False

    def send_socket_data(self, connect_id: int, payload: bytes, timeout_ms: int) -> bool:
        return self.send(f"AT+QISEND={connect_id},{len(payload)}", ">", timeout_ms, payload)

    def read_socket_data(self, connect_id: int, max_read: int, timeout_ms: int) -> tuple[bool, bytes]:
        self.writef(f"AT+QIRD={connect_id},{min(max_read, 1024)}")
        buf, out = bytearray(), bytearray()
        expected, remaining = -1, 0
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.read_byte()
            if c is None:
                self.delay_ms(1)
                continue
            if expected >= 0 and remaining > 0:
                out.append(c)
                remaining -= 1
                continue
            line = self._feed(buf, c)
            if line is None:
                continue
            if line == b"OK":
                return True, bytes(out)
            if self._is_error(line):
                return False, bytes(out)
            if b'+QIURC: "closed"' in line:
                m = re.match(rb'\+QIURC: "closed",(-?\d+)', line)
                if not m or int(m.group(1)) == connect_id:
                    return False, bytes(out)
            if line.startswith(b"+QIRD:"):
                m = re.match(rb"\+QIRD: ?(-?\d+)", line)
                if m and int(m.group(1)) > 0:
                    expected = remaining = int(m.group(1))
        return False, bytes(out)

    # --- the test's own reads (not the driver's) ------------------------------------------------
    def raw_until(self, marker: bytes, timeout: float = 10.0) -> bytes:
        data = bytes(self.rx)
        self.rx.clear()
        deadline = time.monotonic() + timeout
        while marker not in data and time.monotonic() < deadline:
            data += self.ser.read(4096)
            time.sleep(0.005)
        return data


@pytest.fixture
def drv(driver_path):
    d = AtHndlr(driver_path)
    yield d
    d.close()


def _activate(drv: AtHndlr) -> None:
    # Not in this file (the driver's bring-up lives elsewhere): the context through send().
    assert drv.send('AT+QICSGP=1,1,"UNINET","","",1', "OK", 5000)
    assert drv.send("AT+QIACT=1", "OK", 15000)


def test_open_ssl_socket_every_one_of_the_seven_forms_is_refused_at_once(drv, emulator, pki):
    """openSSLSocket(HOST, 443, ctx 1, id 0): sslversion / seclevel / sni take OK, "contextid"
    (not an EC2x option, SSL note 2.2.1) is ERROR and only logged; then each of the seven
    AT+QSSLOPEN forms is answered ERROR at once (the driver's "rejected, trying next", never
    its timeout), so the whole open fails in well under a second per form and no TCP
    connection is ever made; the module is left with no SSL socket.  A driver quirk: none of
    its forms is the manual's.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    _activate(drv)
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        t0 = time.monotonic()
        assert drv.open_ssl_socket(HOST, 443, ssl_ctx=1, connect_id=0, timeout_ms=5000) is False
        elapsed = time.monotonic() - t0
        assert elapsed < 6, elapsed
        assert srv.connections == []
    assert "QSSLCFG contextid unsupported/failed, continuing" in drv.log
    assert [entry for entry in drv.log if entry.startswith("QSSLOPEN format variant")] == [
        f"QSSLOPEN format variant {i} rejected" for i in range(1, 8)]
    sent = [w for w in drv.writes if w.startswith(b"AT+QSSLOPEN=")]
    assert len(sent) == 7 and all(w.endswith(b"\r\n") for w in sent)
    # each form's echo came back whole (ATE1, the driver never turns it off), then ERROR
    for w in sent:
        assert w[:-2] in drv.lines
    assert drv.lines.count(b"ERROR") == 8          # contextid + the seven opens
    # nothing was opened: AT+QSSLSTATE lists no client
    assert drv.send_and_capture("AT+QSSLSTATE", "OK", 3000) == b"OK"
    assert not any(line.startswith(b"+QSSLSTATE:") for line in drv.lines)


def test_the_open_loop_body_on_the_manuals_form_reads_the_urc_and_sni_reaches_the_peer(drv, emulator, pki):
    """The driver's per-form loop body run on the one form the EC2x takes (SSL note 2.2.2):
    the echo, "OK" (not looked at), then "+QSSLOPEN: 0,0" read by strncmp + sscanf
    "+QSSLOPEN: %d,%d" with id 0; the "sni",1,1 the driver set reaches the peer as the dialled
    name, with the "sslversion" 4 / "seclevel" 0 context.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    _activate(drv)
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        for opt, value in (("sslversion", 4), ("seclevel", 0), ("sni", 1)):
            assert drv.send(f'AT+QSSLCFG="{opt}",1,{value}', "OK", 5000)
        outcome = drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000)
        assert outcome == ("result", 0)
        conn = srv.wait_handshake()
        assert conn.sni == HOST
        assert b"OK" in drv.lines
        # the OK came before the URC, as the note's example shows
        assert drv.lines.index(b"OK") < drv.lines.index(b"+QSSLOPEN: 0,0")


def test_send_payload_path_on_qsslsend_goes_end_to_end_through_openssl(drv, emulator, pki):
    """send() with a payload used on AT+QSSLSEND (the driver's generic prompt path): the first
    '>' byte releases the payload (binary, CR LF and a '>' inside it), "SEND OK" ends it; the
    OpenSSL echo peer returns the bytes, announced by '+QSSLURC: "recv",0' and read back
    exactly by AT+QSSLRECV.  The data echo (ATE1, docs/behaviour.md) comes back as a line the
    driver passes over.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n>\x00\x01\xfe\xff" + bytes(range(32, 127))
    _activate(drv)
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        for opt, value in (("sslversion", 4), ("seclevel", 0), ("sni", 1)):
            assert drv.send(f'AT+QSSLCFG="{opt}",1,{value}', "OK", 5000)
        assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 0)
        srv.wait_handshake()
        assert drv.send(f"AT+QSSLSEND=0,{len(payload)}", ">", 5000, payload) is True
        assert drv.lines[-1] == b"SEND OK"
        urc = drv.raw_until(b'+QSSLURC: "recv",0\r\n')
        assert b'+QSSLURC: "recv",0\r\n' in urc
        drv.writef(f"AT+QSSLRECV=0,{len(payload)}")
        answer = drv.raw_until(b"\r\nOK\r\n")
        head = f"+QSSLRECV: {len(payload)}\r\n".encode()
        assert head in answer
        body = answer[answer.index(head) + len(head):]
        assert body[:len(payload)] == payload
        assert body[len(payload):] == b"\r\n\r\nOK\r\n"       # <data> CR LF, then OK


def test_send_socket_data_qisend_on_the_ssl_client_id_is_refused(drv, emulator, pki):
    """sendSocketData() is the driver's only send: AT+QISEND=<id>,<n>.  On an id that holds an
    SSL client (one pool with the AT+QIOPEN connectIDs) the module has no TCP connection to
    send on: ERROR, which waitForPayloadReady() takes as failure -- nothing reaches the peer.
    (A driver quirk: its SSL socket, had it opened, could not carry data through this call.)

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    _activate(drv)
    with TlsServer(pki.server, mode="sink", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 0)
        conn = srv.wait_handshake()
        assert drv.send_socket_data(0, b"hello", 3000) is False
        assert "Failed waiting for payload readiness after command: AT+QISEND=0,5" in drv.log
        assert drv.lines[-1] == b"ERROR"
        time.sleep(0.5)
        assert bytes(conn.received) == b""
        assert srv.errors == []


def test_plain_tcp_path_open_send_read_through_the_drivers_parsers(drv, emulator):
    """openTCPSocket() + sendSocketData() + readSocketData() on a TCP echo: "+QIOPEN: 1,0"
    read for id 1 past the OK; the '>' prompt, the payload written byte by byte, "SEND OK";
    AT+QIRD=1,1024 read by count after "+QIRD: <n>" (CR LF and bytes >= 0x80 inside), then the
    "OK" line.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    payload = b"line one\r\nline two\r\n\x80\x81OK\r\nERRORless"
    _activate(drv)
    with TcpServer("echo") as srv:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.port)
        assert drv.open_ip_socket("TCP", TCP_HOST, TCP_PORT, 1, 1, 10000) is True
        assert drv.send_socket_data(1, payload, 5000) is True
        drv.raw_until(b'+QIURC: "recv",1\r\n', timeout=5)
        ok, data = drv.read_socket_data(1, 1500, 5000)
        assert ok is True
        assert data == payload


def test_echoed_payload_holding_an_error_line_makes_the_driver_report_a_send_that_happened(drv, emulator, pki):
    """With ATE1 (the driver never sends ATE0) the module echoes the data typed after "> "
    (docs/behaviour.md); sendPayloadAndWaitResponse() reads that echo as lines, so a payload
    holding a CR LF "ERROR" CR LF line ends the wait with failure -- yet the module sent the
    bytes ("SEND OK" follows) and the OpenSSL peer has them.  A driver quirk, not a module
    fault: the echo is what the module does in the prompt.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    payload = b"status\r\nERROR\r\nend"
    _activate(drv)
    with TlsServer(pki.server, mode="sink", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 0)
        srv.wait_handshake()
        assert drv.send(f"AT+QSSLSEND=0,{len(payload)}", ">", 5000, payload) is False
        assert drv.log[-1] == "payload failed at b'ERROR'"
        rest = drv.raw_until(b"SEND OK\r\n", timeout=5)
        assert rest.endswith(b"end\r\nSEND OK\r\n")
        assert srv.wait_received(len(payload)) == payload


def test_the_open_loop_body_on_a_refused_port_parses_the_error_code(drv, emulator):
    """The manual's form to a port nobody listens on: OK, then "+QSSLOPEN: 0,566" (the note's
    section 5 code the profile gives a refused connection) -- parsed by the driver's sscanf
    "+QSSLOPEN: %d,%d" for id 0, so it would report "QSSLOPEN failed with modem error code:
    566" rather than its timeout; the client id is free again afterwards.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    _activate(drv)
    emulator.router.add_map(HOST, 443, "127.0.0.1", dead)
    t0 = time.monotonic()
    assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 566)
    assert time.monotonic() - t0 < 5
    assert drv.send("AT+QSSLCLOSE=0", "OK", 10000) is True
    assert drv.send_and_capture("AT+QSSLSTATE", "OK", 3000) == b"OK"


def test_tcp_greeting_then_close_the_closed_urc_fails_the_read_before_the_data(drv, emulator):
    """A TCP peer that sends a greeting and closes: in buffer mode the module says
    '+QIURC: "recv",1' and '+QIURC: "closed",1' unasked; readSocketData() meets the "closed"
    line for its own id before its "+QIRD:" answer and gives up (false, nothing read), leaving
    that answer -- the greeting, still readable after "closed" as the TCP(IP) note keeps it --
    unread in the UART, where the NEXT readSocketData() takes it for its own.  A driver quirk
    (data one call late), not a module fault.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    greeting = b"220 hello\r\n"

    def behave(conn):
        conn.send(greeting)
        time.sleep(0.2)
        conn.close()

    _activate(drv)
    with TcpServer(behave=behave) as srv:
        emulator.router.add_map(TCP_HOST, TCP_PORT, "127.0.0.1", srv.port)
        assert drv.open_ip_socket("TCP", TCP_HOST, TCP_PORT, 1, 1, 10000) is True
        time.sleep(1.0)                         # the driver's task does other things meanwhile
        assert drv.read_socket_data(1, 1500, 5000) == (False, b"")
        assert drv.lines[-2:] == [b'+QIURC: "recv",1', b'+QIURC: "closed",1']
        # the first AT+QIRD's answer is read by the second call
        assert drv.read_socket_data(1, 1500, 5000) == (True, greeting)
        assert drv.lines[-2] == b"+QIRD: %d" % len(greeting)
        assert drv.raw_until(b"\r\nOK\r\n", timeout=3).endswith(b"+QIRD: 0\r\n\r\nOK\r\n")


def test_full_size_qsslsend_written_byte_by_byte_with_echo_on(drv, emulator, pki):
    """The driver's writeByte() loop at the note's maximum, 1460 bytes, each byte its own
    write into the "> " prompt with ATE1: every byte echoed, "SEND OK", and the OpenSSL peer
    receives exactly the 1460 bytes (0x00-0xFF, CR / LF / Ctrl+Z / ESC among them -- a fixed
    length prompt takes them all as data).

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    payload = bytes((i * 7 + 3) & 0xFF for i in range(1460))
    assert b"\x1a" in payload and b"\x1b" in payload
    _activate(drv)
    with TlsServer(pki.server, mode="sink", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 0)
        srv.wait_handshake()
        assert drv.send(f"AT+QSSLSEND=0,{len(payload)}", ">", 5000, payload) is True
        assert drv.lines[-1] == b"SEND OK"
        assert srv.wait_received(len(payload), timeout=10) == payload


def test_after_the_peer_closes_the_prompt_wait_fails_on_error_and_the_data_stay_readable(drv, emulator, pki):
    """The OpenSSL peer sends "bye" and close_notify: '+QSSLURC: "recv",0' then
    '+QSSLURC: "closed",0' (a URC the driver's loops never look for -- they know only
    '+QIURC: "closed"').  The next send() of AT+QSSLSEND=0,5 meets the module's ERROR (SSL
    note 2.2.3: the connection is closed) in waitForPayloadReady() and fails without writing
    the payload; AT+QSSLSTATE=0 shows state 4 (closing) and "bye" is still readable, then
    "+QSSLRECV: 0"; AT+QSSLCLOSE=0 frees the id.

    - (repository not named by the store) ATCommandHndlr.cpp, store id 52486421884
    """
    def handler(conn):
        conn.sendall(b"bye")
        conn.send_close_notify()

    _activate(drv)
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.run_open_variant(f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0', 0, 10000) == ("result", 0)
        time.sleep(1.0)
        assert drv.send("AT+QSSLSEND=0,5", ">", 3000, b"hello") is False
        assert drv.lines[-4:] == [b'+QSSLURC: "recv",0', b'+QSSLURC: "closed",0', b"AT+QSSLSEND=0,5",
                                  b"ERROR"]
        state = drv.send_and_capture("AT+QSSLSTATE=0", "+QSSLSTATE:", 3000)
        assert state is not None and state.split(b",")[5] == b"4"
        assert drv.raw_until(b"\r\nOK\r\n", 3).endswith(b"\r\nOK\r\n")
        drv.writef("AT+QSSLRECV=0,100")
        assert drv.raw_until(b"\r\nOK\r\n", 3).endswith(b"+QSSLRECV: 3\r\nbye\r\n\r\nOK\r\n")
        drv.writef("AT+QSSLRECV=0,100")
        assert drv.raw_until(b"\r\nOK\r\n", 3).endswith(b"+QSSLRECV: 0\r\n\r\nOK\r\n")
        assert drv.send("AT+QSSLCLOSE=0", "OK", 10000) is True
