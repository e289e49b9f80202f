"""Adversarial tests: a thirty-ninth set of public host code pointed at the pty -- a portable C
"AT abstraction" library for the Quectel EC200 (whose SSL and file command sets are the EC2x
ones) that earlier rounds did not replay (a search of tests/ for "Banishgupta",
"ec200-at-abstraction", "ec200_ssl_socket" and "ec200_at_send_await_urc" finds nothing): its
transaction engine, its AT+QSSLCFG context set-up, its AT+QFUPL / AT+QFLST / AT+QFDEL
certificate management and its AT+QSSLOPEN / AT+QSSLSEND / AT+QSSLRECV / AT+QSSLCLOSE socket,
replayed through the pty with the library's own line endings, byte-by-byte line assembler,
waits and parsers against loopback OpenSSL (Python ssl) peers; and 1NCE's BG96 onboarding demo
(X-CUBE-CELLULAR direct commands: AT+QFDEL="*", three AT+QFUPL certificate uploads, the client
key sent twice, AT+QSSLCFG for mutual TLS; "nce_bg96" / "nce_onboarding" find nothing in tests/).

Drivers replayed (public source read through the reference store; paraphrased, not copied):

- Banishgupta123/ec200-at-abstraction (C99, MIT): src/ec200_at.c at
  004b93e94b4b7ac7bd0d4f98f72795622e908c15, include/ec200_at.h at
  25766afe58ef6a6847db3d564428f1f672d56268, src/ec200.c at 25766afe58ef..., src/ec200_ssl.c and
  src/ec200_file.c at 0d23f4b2d7ba5d3105bf72dd54523ed7609a123f, src/ec200_ssl_socket.c at
  0a885c209c8b9781f317c3ab595b8042cc4fb216.  What the model keeps:
  * at_transmit(): every command is `<cmd>\\r` (CR alone).  ec200_init(): "AT" (up to three
    tries, 500 ms apart) then "ATE0", each ec200_at_send() with the 1000 ms default budget.
  * the line assembler (rx_feed): bytes read ONE at a time in 100 ms slices (the budget is
    charged only for slices that time out); CR is dropped everywhere, LF ends a line; blank
    lines are skipped by every wait.  is_terminal(): "OK" / "ERROR" / "NO CARRIER" /
    "+CME ERROR:" / "+CMS ERROR:" (exact "OK" and "ERROR" only).  Registered URC prefixes
    are dispatched from inside any transaction.
  * ec200_at_send(): lines until a terminal.  ec200_at_send_wait(prefix): the first line with
    the prefix is kept, then lines until a terminal; "OK" without the prefix = PARSE error.
    ec200_at_send_expect(prefix): returns right after the prefixed line (raw data follows,
    left unread).  ec200_at_send_await_urc(): send_expect with the 1000 ms budget; a PARSE
    error there (the OK came first) -> ec200_at_wait_prefix() with the long budget (10 s);
    if the prefix came before any OK, wait_final() with 300 ms eats the OK.
  * ec200_at_send_prompt(): bytes until a '>' seen at the START of a line (assembler empty);
    the byte after it is read with a zero budget and, unless it is ' ', fed back to the
    assembler; a terminal line before it fails (OK -> PARSE).
  * ec200_at_read_exact(): first whatever sits in the assembler, then bulk reads in 100 ms
    slices until exactly n bytes.  ec200_at_parse_int_field(line, i): after the first ':',
    spaces skipped, i unquoted commas skipped, spaces skipped, atoi() (must start with '-'
    or a digit).
  * ec200_ssl_configure(): "sslversion" %u, "ciphersuite" "0X%04X", "seclevel" %u, then
    "cacert" / "clientcert" / "clientkey" "<file>" when set, "ignorelocaltime" %u, "sni" %u,
    each ec200_at_send() (1000 ms).
  * ec200_file_upload(): `AT+QFUPL="<name>",<len>,60`, send_expect "CONNECT" (1000 ms), the
    bytes in one write, wait_prefix "+QFUPL:" (10 s), checksum = parse_int_field(1) (an atoi of
    the module's HEX checksum: the driver's own mistake, identical on a real module), then
    wait_final (1000 ms).  file_exists()/file_size(): `AT+QFLST="<name>"`, send_wait
    "+QFLST:", field 1 = size; +CME ERROR / ERROR / OK-without-line = "does not exist".
    file_delete(): `AT+QFDEL="<name>"`.
  * ec200_ssl_socket_open(): `AT+QSSLOPEN=<pdp>,<ssl>,<id>,"<host>",<port>,0` through
    send_await_urc("+QSSLOPEN:"), field 1 must be 0.  _send(): `AT+QSSLSEND=<id>,<len>`,
    send_prompt (1000 ms), the bytes, wait_prefix "SEND" (10 s) which must be "SEND OK".
    _recv(): `AT+QSSLRECV=<id>,<max>`, send_expect "+QSSLRECV:", field 0 = actual (0..max),
    read_exact(actual), wait_final (1000 ms).  _close(): `AT+QSSLCLOSE=<id>` ec200_at_send
    (10 s).
  The data bring-up (ec200_network.c) is not replayed: AT+QICSGP / AT+QIACT go through the
  same engine.  Host names are routed to the loopback peers by the emulator's router.

- 1NCE GmbH's BG96 onboarding demo for STM32 X-CUBE-CELLULAR (2020; the store does not name its
  repository): nce_bg96_configuration.c (store id 23186334155) and nce_onboarding.c (id
  23416095540).  What the model keeps: direct commands = text + CR, each waited for until a
  final result or its cmd_timeout (10000 ms; the AT+QFUPL ones 10 / 30 ms, so the data follow
  at once); AT+QFDEL="*"; the two context set-ups (0 for onboarding, 1 for mutual TLS with
  "root.pem" / "clientcert.pem" / "clientkey.pem"); each AT+QFUPL="<name>",<n>,60 followed by
  sendToIPC() of the PEM; waitforprocessing(n) = n x "AT" and 500 ms; the client key sent
  TWICE by sendToIPC() (the demo's slip); AT+QSSLCLOSE on ids never opened, with and without
  the <timeout>.  The 10 s / 2 s HAL_Delay() pauses are shortened (idle time, no timer in the
  module depends on them); the onboarding download itself (X-CUBE socket layer) is not
  replayed: the PEMs are the test PKI's, the key converted to PKCS#1 as the demo expects
  ("-----END RSA PRIVATE KEY-----").

No public ML302 (OneMO) host driver for its SSL commands was found in the store (the hits for
AT+QSECWRITE are Quectel M95 / M66 / MC60 / BG96 code already replayed elsewhere).
"""
from __future__ import annotations

import re
import time

import pytest
import serial

from emulator.testing.peers import TlsServer
from tests.e2e.test_adversarial_public_drivers_23 import atoi   # (C atoi(), as the libraries call it)

HOST = "www.iottest.work"

OK, TIMEOUT, IO, PARSE, CME, CMS, MODULE, OVERFLOW, NOT_READY = (
    "OK", "TIMEOUT", "IO", "PARSE", "CME", "CMS", "MODULE", "OVERFLOW", "NOT_READY")

TIMEOUT_DEFAULT, TIMEOUT_SHORT, TIMEOUT_LONG = 1000, 300, 10000
MAX_LINES, POLL_SLICE = 64, 100


class Ec200:
    """ec200_at.c's engine over the pty (pyserial), reads with the library's slices."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.1)
        self.rx_buf = bytearray()
        self.line = b""
        self.cme = -1
        self.cms = -1
        self.urc_table: list[tuple[bytes, object]] = []
        self.wire_tx = bytearray()
        self.wire_rx = bytearray()
        self.lines: list[bytes] = []

    def close(self) -> None:
        self.ser.close()

    # --- transport callbacks (read: "up to len bytes within timeout") ---------------------
    def _read(self, n: int, slice_ms: int) -> bytes:
        self.ser.timeout = slice_ms / 1000.0
        data = self.ser.read(n)
        self.wire_rx += data
        return data

    def write_raw(self, data: bytes) -> str:
        self.wire_tx += data
        self.ser.write(data)
        self.ser.flush()
        return OK

    # --- internals ----------------------------------------------------------------------
    def _getc(self, budget: list[int]) -> bytes | None:
        while True:
            sl = min(budget[0], POLL_SLICE)
            b = self._read(1, sl)
            if b:
                return b
            if budget[0] == 0:
                return None
            budget[0] -= sl

    def _feed(self, ch: bytes) -> bool:
        if ch == b"\r":
            return False
        if ch == b"\n":
            self.line = bytes(self.rx_buf)
            self.rx_buf.clear()
            self.lines.append(self.line)
            return True
        if len(self.rx_buf) < 255:
            self.rx_buf += ch
        return False

    def _rx_line(self, budget: list[int]) -> bool:
        while True:
            ch = self._getc(budget)
            if ch is None:
                return False
            if self._feed(ch):
                return True

    def _terminal(self, line: bytes) -> int:
        if line in (b"OK",):
            return 1
        if line in (b"ERROR", b"NO CARRIER"):
            return 2
        if line.startswith(b"+CME ERROR:"):
            self.cme = atoi(line[11:])
            return 2
        if line.startswith(b"+CMS ERROR:"):
            self.cms = atoi(line[11:])
            return 2
        return 0

    def _err(self) -> str:
        return CME if self.cme >= 0 else CMS if self.cms >= 0 else MODULE

    def _dispatch(self, line: bytes) -> bool:
        for prefix, handler in self.urc_table:
            if line.startswith(prefix):
                handler(line)
                return True
        return False

    def _transmit(self, cmd: bytes) -> str:
        self.cme = self.cms = -1
        return self.write_raw(cmd + b"\r")

    def _transaction(self, prefix: bytes | None, stop: bool, timeout: int) -> tuple[str, bytes]:
        budget = [timeout]
        body: list[bytes] = []
        matched = None
        for _ in range(MAX_LINES):
            if not self._rx_line(budget):
                return TIMEOUT, b""
            line = self.line
            if not line:
                continue
            if prefix is not None and matched is None and line.startswith(prefix):
                matched = line
                if stop:
                    return OK, line
                continue
            t = self._terminal(line)
            if t == 1:
                if prefix is not None and matched is None:
                    return PARSE, b""
                return OK, matched if prefix is not None else b"\n".join(body)
            if t == 2:
                return self._err(), b""
            if self._dispatch(line):
                continue
            if prefix is None:
                body.append(line)
        return OVERFLOW, b""

    # --- public engine ----------------------------------------------------------------------
    def send(self, cmd: bytes, timeout: int = TIMEOUT_DEFAULT) -> tuple[str, bytes]:
        self._transmit(cmd)
        return self._transaction(None, False, timeout)

    def send_wait(self, cmd: bytes, prefix: bytes, timeout: int = TIMEOUT_DEFAULT):
        self._transmit(cmd)
        return self._transaction(prefix, False, timeout)

    def send_expect(self, cmd: bytes, prefix: bytes, timeout: int = TIMEOUT_DEFAULT):
        self._transmit(cmd)
        return self._transaction(prefix, True, timeout)

    def send_await_urc(self, cmd: bytes, prefix: bytes, ok_timeout: int, urc_timeout: int):
        self._transmit(cmd)
        st, line = self._transaction(prefix, True, ok_timeout)
        if st == OK:
            self.wait_final(TIMEOUT_SHORT)
            return OK, line
        if st != PARSE:
            return st, b""
        return self.wait_prefix(prefix, urc_timeout)

    def send_prompt(self, cmd: bytes, timeout: int = TIMEOUT_DEFAULT) -> str:
        self._transmit(cmd)
        budget = [timeout]
        while True:
            ch = self._getc(budget)
            if ch is None:
                return TIMEOUT
            if ch == b">" and not self.rx_buf:
                sp = self._getc([0])
                if sp is not None and sp != b" ":
                    self._feed(sp)
                return OK
            if self._feed(ch):
                line = self.line
                if not line:
                    continue
                t = self._terminal(line)
                if t == 2:
                    return self._err()
                if t == 1:
                    return PARSE
                self._dispatch(line)

    def wait_prefix(self, prefix: bytes, timeout: int) -> tuple[str, bytes]:
        budget = [timeout]
        for _ in range(MAX_LINES):
            if not self._rx_line(budget):
                return TIMEOUT, b""
            line = self.line
            if not line:
                continue
            if line.startswith(prefix):
                return OK, line
            t = self._terminal(line)
            if t == 2:
                return self._err(), b""
            if t == 1:
                continue
            self._dispatch(line)
        return OVERFLOW, b""

    def wait_final(self, timeout: int) -> str:
        budget = [timeout]
        for _ in range(MAX_LINES):
            if not self._rx_line(budget):
                return TIMEOUT
            line = self.line
            if not line:
                continue
            t = self._terminal(line)
            if t == 1:
                return OK
            if t == 2:
                return self._err()
            self._dispatch(line)
        return OVERFLOW

    def read_exact(self, n: int, timeout: int) -> tuple[str, bytes]:
        got = bytearray(self.rx_buf[:n])
        del self.rx_buf[:n]
        budget = timeout
        while len(got) < n:
            sl = min(budget, POLL_SLICE)
            chunk = self._read(n - len(got), sl)
            if chunk:
                got += chunk
                continue
            if budget == 0:
                return TIMEOUT, bytes(got)
            budget -= sl
        return OK, bytes(got)

    def register_urc(self, prefix: bytes, handler) -> None:
        self.urc_table.append((prefix, handler))

    def poll_urc(self, timeout: int) -> None:
        budget = [timeout]
        for _ in range(MAX_LINES):
            if not self._rx_line(budget):
                return
            if self.line:
                self._dispatch(self.line)


def parse_int_field(line: bytes, index: int) -> int | None:
    c = line.find(b":")
    p = c + 1 if c >= 0 else 0
    while p < len(line) and line[p:p + 1] == b" ":
        p += 1
    field, quoted = 0, False
    while field < index:
        if p >= len(line):
            return None
        if line[p:p + 1] == b'"':
            quoted = not quoted
        elif line[p:p + 1] == b"," and not quoted:
            field += 1
        p += 1
    while p < len(line) and line[p:p + 1] == b" ":
        p += 1
    if p >= len(line) or not (line[p:p + 1] == b"-" or 48 <= line[p] <= 57):
        return None
    return atoi(line[p:])


# --- ec200.c / ec200_ssl.c / ec200_file.c / ec200_ssl_socket.c -----------------------------

def ec200_init(h: Ec200) -> str:
    st = TIMEOUT
    for _ in range(3):
        st, _ = h.send(b"AT")
        if st == OK:
            break
        time.sleep(0.5)
    if st != OK:
        return TIMEOUT
    return h.send(b"ATE0")[0]


def ssl_configure(h: Ec200, ctx: int, version: int, ciphersuite: int, seclevel: int,
                  cacert: str = "", clientcert: str = "", clientkey: str = "",
                  ignore_localtime: bool = True, sni: bool = True) -> str:
    cmds = [b'AT+QSSLCFG="sslversion",%d,%d' % (ctx, version),
            b'AT+QSSLCFG="ciphersuite",%d,0X%04X' % (ctx, ciphersuite),
            b'AT+QSSLCFG="seclevel",%d,%d' % (ctx, seclevel)]
    for key, f in ((b"cacert", cacert), (b"clientcert", clientcert), (b"clientkey", clientkey)):
        if f:
            cmds.append(b'AT+QSSLCFG="%s",%d,"%s"' % (key, ctx, f.encode()))
    cmds += [b'AT+QSSLCFG="ignorelocaltime",%d,%d' % (ctx, int(ignore_localtime)),
             b'AT+QSSLCFG="sni",%d,%d' % (ctx, int(sni))]
    for c in cmds:
        st, _ = h.send(c)
        if st != OK:
            return st
    return OK


def file_upload(h: Ec200, name: str, data: bytes) -> tuple[str, int | None, bytes]:
    st, _ = h.send_expect(b'AT+QFUPL="%s",%d,60' % (name.encode(), len(data)), b"CONNECT")
    if st != OK:
        return st, None, b""
    h.write_raw(data)
    st, resp = h.wait_prefix(b"+QFUPL:", TIMEOUT_LONG)
    if st != OK:
        return st, None, b""
    crc = parse_int_field(resp, 1)
    return h.wait_final(TIMEOUT_DEFAULT), (crc if crc is not None else 0), resp


def file_delete(h: Ec200, name: str) -> str:
    return h.send(b'AT+QFDEL="%s"' % name.encode())[0]


def qflst_size(h: Ec200, name: str) -> tuple[str, int | None]:
    st, resp = h.send_wait(b'AT+QFLST="%s"' % name.encode(), b"+QFLST:")
    if st != OK:
        return st, None
    sz = parse_int_field(resp, 1)
    if sz is None or sz < 0:
        return PARSE, None
    return OK, sz


def file_exists(h: Ec200, name: str) -> tuple[str, bool | None]:
    st, _ = qflst_size(h, name)
    if st == OK:
        return OK, True
    if st in (CME, MODULE, PARSE):
        return OK, False
    return st, None


def ssl_open(h: Ec200, pdp: int, ssl_ctx: int, cid: int, host: str, port: int) -> str:
    st, resp = h.send_await_urc(b'AT+QSSLOPEN=%d,%d,%d,"%s",%d,0'
                                % (pdp, ssl_ctx, cid, host.encode(), port),
                                b"+QSSLOPEN:", TIMEOUT_DEFAULT, TIMEOUT_LONG)
    if st != OK:
        return st
    err = parse_int_field(resp, 1)
    if err is None:
        return PARSE
    return OK if err == 0 else MODULE


def ssl_send(h: Ec200, cid: int, data: bytes) -> str:
    st = h.send_prompt(b"AT+QSSLSEND=%d,%d" % (cid, len(data)))
    if st != OK:
        return st
    h.write_raw(data)
    st, resp = h.wait_prefix(b"SEND", TIMEOUT_LONG)
    if st != OK:
        return st
    return OK if resp == b"SEND OK" else MODULE


def ssl_recv(h: Ec200, cid: int, max_len: int, timeout: int = 5000) -> tuple[str, bytes]:
    st, hdr = h.send_expect(b"AT+QSSLRECV=%d,%d" % (cid, max_len), b"+QSSLRECV:", timeout)
    if st != OK:
        return st, b""
    actual = parse_int_field(hdr, 0)
    if actual is None or actual < 0 or actual > max_len:
        return PARSE, b""
    data = b""
    if actual > 0:
        st, data = h.read_exact(actual, timeout)
        if st != OK:
            return st, data
    return h.wait_final(TIMEOUT_DEFAULT), data


def ssl_close(h: Ec200, cid: int) -> str:
    return h.send(b"AT+QSSLCLOSE=%d" % cid, TIMEOUT_LONG)[0]


# --- fixtures / helpers ----------------------------------------------------------------------

@pytest.fixture
def ec200(driver_path):
    """ec200_init() on the freshly booted module (echo on), then the PDP context up."""
    h = Ec200(driver_path)
    h.urcs = []
    h.register_urc(b"+QSSLURC:", h.urcs.append)
    assert ec200_init(h) == OK
    assert h.lines[:2] == [b"AT", b"OK"]            # the echo "AT\r" + "\r\nOK" -> one line
    assert h.send(b'AT+QICSGP=1,1,"CMNET","","",1')[0] == OK
    assert h.send(b"AT+QIACT=1", TIMEOUT_LONG)[0] == OK
    yield h
    h.close()


def route(emulator, srv, port: int = 443) -> None:
    emulator.router.add_map(HOST, port, "127.0.0.1", srv.port)


def wait_urc(h: Ec200, text: bytes, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in u for u in h.urcs):
            return True
        h.poll_urc(200)
    return any(text in u for u in h.urcs)


def recv_all(h: Ec200, cid: int, want: int, max_len: int = 1500, timeout: float = 10.0) -> bytes:
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        st, data = ssl_recv(h, cid, max_len)
        assert st == OK, st
        got += data
        if not data:
            h.poll_urc(200)
    return bytes(got)


# --- tests -----------------------------------------------------------------------------------

def test_ec200_ca_upload_listed_configured_and_verified_echo_roundtrip(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction src/ec200_file.c + ec200_ssl.c + ec200_ssl_socket.c
    (commits in the module docstring): file_exists("ca.pem") is false before the upload
    (AT+QFLST of a missing file is not a "+QFLST:" line); ec200_file_upload() gets CONNECT, the
    PEM, "+QFUPL: <len>,<checksum>" and OK; file_size() reads the length back; the context
    (TLS 1.2, 0XFFFF, seclevel 1, cacert "ca.pem", ignorelocaltime 1, sni 1) takes every line
    with OK; the open (buffer mode, id 0) reports 0 through the OK-then-URC path; a 1200-byte
    send answers "> " then SEND OK; the echo's "+QSSLURC: \"recv\",0" is dispatched by the
    URC table and AT+QSSLRECV=0,1500 hands back the exact bytes framed for read_exact();
    AT+QSSLCLOSE OK.  The peer saw SNI = the host name and the bytes unchanged."""
    h = ec200
    assert file_exists(h, "ca.pem") == (OK, False)
    pem = pki.ca.cert_pem
    st, crc, resp = file_upload(h, "ca.pem", pem)
    assert st == OK
    assert resp.startswith(b"+QFUPL: %d," % len(pem))
    # (the driver reads the checksum with atoi: "a41" -- lowercase hex, as the module prints it
    # -- reads as no number, which file_upload returns as 0; "3f2" as 3)
    assert crc == (parse_int_field(resp, 1) or 0)
    assert qflst_size(h, "ca.pem") == (OK, len(pem))
    assert ssl_configure(h, 1, 3, 0xFFFF, 1, cacert="ca.pem") == OK
    assert b'AT+QSSLCFG="ciphersuite",1,0XFFFF\r' in h.wire_tx
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 0, HOST, 443) == OK
        conn = srv.wait_handshake()
        assert conn.version == "TLSv1.2"
        assert conn.sni == HOST
        data = bytes(range(256)) * 4 + b"tail" * 44
        assert len(data) == 1200
        assert ssl_send(h, 0, data) == OK
        assert srv.wait_received(len(data)) == data
        assert wait_urc(h, b'+QSSLURC: "recv",0')
        assert recv_all(h, 0, len(data)) == data
        assert b"\r\n+QSSLRECV: " in bytes(h.wire_rx)
        assert ssl_close(h, 0) == OK
    assert h.rx_buf == b""


def test_ec200_mutual_tls_with_uploaded_client_cert_and_key(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction src/ec200_ssl.c ec200_ssl_configure() with
    seclevel 2 (commit 0d23f4b2d7ba): three uploads (CA, client certificate, client key), the
    context lines for all three files, then a server that REQUIRES a client certificate from
    the CA: the open reports 0, the peer saw the "modem client" certificate, data flow."""
    h = ec200
    for name, body in (("ca.pem", pki.ca.cert_pem), ("client.pem", pki.client.cert_pem),
                       ("user_key.pem", pki.client.key_pem)):
        st, _, resp = file_upload(h, name, body)
        assert st == OK and resp.startswith(b"+QFUPL: %d," % len(body))
    assert ssl_configure(h, 2, 4, 0xFFFF, 2, cacert="ca.pem", clientcert="client.pem",
                         clientkey="user_key.pem") == OK
    with TlsServer(pki.server, mode="echo", legacy=True, client_ca=pki.ca,
                   require_client_cert=True) as srv:
        route(emulator, srv, 8883)
        assert ssl_open(h, 1, 2, 3, HOST, 8883) == OK
        conn = srv.wait_handshake()
        assert conn.handshake_done and conn.client_cert is not None
        assert "modem client" in conn.client_cert_subject
        assert ssl_send(h, 3, b"PING\r\n") == OK
        assert wait_urc(h, b'+QSSLURC: "recv",3')
        assert recv_all(h, 3, 6) == b"PING\r\n"
        assert ssl_close(h, 3) == OK


def test_ec200_verified_open_against_a_foreign_ca_reports_a_module_error(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction src/ec200_ssl_socket.c ec200_ssl_socket_open()
    (commit 0a885c209c8b): with seclevel 1 and the right CA a server signed by ANOTHER CA makes
    "+QSSLOPEN: 1,<err>" with err != 0 -> EC200_ERR_MODULE (not a timeout, not a parse
    error); the close that follows still answers OK and the engine's assembler is empty."""
    h = ec200
    assert file_upload(h, "ca.pem", pki.ca.cert_pem)[0] == OK
    assert ssl_configure(h, 1, 4, 0xFFFF, 1, cacert="ca.pem") == OK
    with TlsServer(pki.wrong_server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 1, HOST, 443) == MODULE
        last = [ln for ln in h.lines if ln.startswith(b"+QSSLOPEN:")][-1]
        assert last.startswith(b"+QSSLOPEN: 1,") and parse_int_field(last, 1) != 0
        assert ssl_close(h, 1) == OK
    assert h.rx_buf == b""


def test_ec200_upload_over_an_existing_file_fails_delete_then_reupload(ec200, pki):
    """Banishgupta123/ec200-at-abstraction src/ec200_file.c (commit 0d23f4b2d7ba): a second
    AT+QFUPL of the same name fails before CONNECT with a +CME ERROR (-> EC200_ERR_CME, the
    file exists); ec200_file_delete() OK; file_exists() false; the upload then succeeds and
    file_size() gives the new length."""
    h = ec200
    assert file_upload(h, "ca.pem", pki.ca.cert_pem)[0] == OK
    st, _, _ = file_upload(h, "ca.pem", pki.wrong_ca.cert_pem)
    assert st == CME and h.cme == 407
    assert file_delete(h, "ca.pem") == OK
    assert file_exists(h, "ca.pem") == (OK, False)
    assert file_upload(h, "ca.pem", pki.wrong_ca.cert_pem)[0] == OK
    assert qflst_size(h, "ca.pem") == (OK, len(pki.wrong_ca.cert_pem))


def test_ec200_large_answer_read_in_1500_byte_pieces_then_zero(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_recv() (commit 0a885c209c8b): a
    5000-byte answer read with AT+QSSLRECV=2,1500 pieces (read_exact of each header's count,
    then wait_final), the last read "+QSSLRECV: 0" (no raw phase, straight to OK); the bytes
    are whole and in order."""
    h = ec200
    payload = bytes((i * 7) & 0xFF for i in range(5000))

    def handler(conn):
        got = bytearray()
        while b"GO" not in got:
            chunk = conn.recv(4096, timeout=10)
            if not chunk:
                return
            got += chunk
        conn.sendall(payload)
        conn.recv(4096, timeout=10)

    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 2, HOST, 443) == OK
        assert ssl_send(h, 2, b"GO") == OK
        assert wait_urc(h, b'+QSSLURC: "recv",2')
        time.sleep(0.5)
        got = recv_all(h, 2, len(payload))
        assert got == payload
        assert ssl_recv(h, 2, 1500) == (OK, b"")
        assert b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n" in bytes(h.wire_rx)
        assert ssl_close(h, 2) == OK


def test_ec200_peer_close_urc_dispatched_data_still_readable(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction (ec200_at.c 004b93e94b4b, ec200_ssl_socket.c
    0a885c209c8b): the server answers and closes; "+QSSLURC: \"recv\",4" and
    "+QSSLURC: \"closed\",4" both reach the URC table (never mis-filed as response data); the
    answer still reads back after the close; AT+QSSLCLOSE=4 OK."""
    h = ec200
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"

    def handler(conn):
        got = bytearray()
        while b"\r\n\r\n" not in got:
            chunk = conn.recv(4096, timeout=10)
            if not chunk:
                return
            got += chunk
        conn.sendall(answer)
        conn.send_close_notify()

    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 4, HOST, 443) == OK
        req = b"GET / HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n"
        assert ssl_send(h, 4, req) == OK
        assert wait_urc(h, b'+QSSLURC: "closed",4')
        assert any(b'"recv",4' in u for u in h.urcs)
        assert recv_all(h, 4, len(answer)) == answer
        assert ssl_close(h, 4) == OK


def test_ec200_tls10_pinned_cipher_0x0035_without_sni(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction src/ec200_ssl.c (commit 0d23f4b2d7ba): the
    ciphersuite line is written "0X%04X" -- `AT+QSSLCFG="ciphersuite",5,0X0035` (leading
    zeros, capital X) --, sslversion 1 and sni 0: the peer negotiates TLS 1.0 with
    TLS_RSA_WITH_AES_256_CBC_SHA and sees no server_name; data flow both ways."""
    h = ec200
    assert ssl_configure(h, 5, 1, 0x0035, 0, sni=False) == OK
    assert b'AT+QSSLCFG="ciphersuite",5,0X0035\r' in h.wire_tx
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 5, 6, HOST, 443) == OK
        conn = srv.wait_handshake()
        assert conn.version == "TLSv1"
        assert conn.cipher_id == 0x0035
        assert conn.sni is None
        assert ssl_send(h, 6, b"x" * 1460) == OK
        assert wait_urc(h, b'+QSSLURC: "recv",6')
        assert recv_all(h, 6, 1460) == b"x" * 1460
        assert ssl_close(h, 6) == OK


def test_ec200_send_of_1461_bytes_fails_before_the_prompt(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_send() (commit 0a885c209c8b) with
    one byte over the SSL note's 1460 limit: AT+QSSLSEND=0,1461 answers ERROR instead of the
    prompt -> send_prompt() fails (EC200_ERR_MODULE) and nothing is sent; the socket still
    takes a 1460-byte send after it."""
    h = ec200
    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 0, HOST, 443) == OK
        assert ssl_send(h, 0, b"y" * 1461) == MODULE
        assert ssl_send(h, 0, b"z" * 1460) == OK
        assert srv.wait_received(1460) == b"z" * 1460
        assert ssl_close(h, 0) == OK


def test_ec200_two_sockets_urcs_never_split_a_recv_payload(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_recv() (commit 0a885c209c8b): the
    driver reads exactly the header's count right after the "+QSSLRECV:" line (read_exact),
    so any URC put between a header and its data, or inside the data, would be taken as
    payload.  Socket 0's server trickles 120 records of 37 bytes 5 ms apart while socket 1
    is driven with 1400-byte sends and reads in turn: both streams come back whole and in
    order, with "+QSSLURC: \"recv\",0" lines dispatched in between."""
    h = ec200
    trickle = b"".join(b"%04d:" % i + bytes([65 + i % 26]) * 32 for i in range(120))

    def handler(conn):
        got = bytearray()
        while b"GO" not in got:
            chunk = conn.recv(4096, timeout=10)
            if not chunk:
                return
            got += chunk
        for i in range(120):
            conn.sendall(trickle[i * 37:(i + 1) * 37])
            time.sleep(0.005)
        conn.recv(4096, timeout=15)

    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, handler=handler, legacy=True) as a, \
            TlsServer(pki.server, mode="echo", legacy=True) as b:
        route(emulator, a, 443)
        route(emulator, b, 444)
        assert ssl_open(h, 1, 1, 0, HOST, 443) == OK
        assert ssl_open(h, 1, 1, 1, HOST, 444) == OK
        assert ssl_send(h, 0, b"GO") == OK
        got_a = bytearray()
        echoed = bytearray()
        sent = bytearray()
        deadline = time.monotonic() + 12
        i = 0
        while (len(got_a) < len(trickle) or len(echoed) < len(sent)) and time.monotonic() < deadline:
            if len(sent) < 14000:
                block = bytes((i * 31 + k) & 0xFF for k in range(1400))
                assert ssl_send(h, 1, block) == OK
                sent += block
                i += 1
            st, d = ssl_recv(h, 1, 1500)
            assert st == OK
            echoed += d
            st, d = ssl_recv(h, 0, 1500)
            assert st == OK
            got_a += d
        assert bytes(got_a) == trickle
        assert bytes(echoed) == bytes(sent)
        assert sum(1 for u in h.urcs if u == b'+QSSLURC: "recv",0') >= 1
        assert ssl_close(h, 0) == OK and ssl_close(h, 1) == OK


def test_ec200_ca_bundle_upload_verifies_a_chained_server(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_file_upload() (commit 0d23f4b2d7ba): the
    whole bundle in ONE write after CONNECT (three CA certificates, the right one last, about
    3.5 KB), "+QFUPL: <len>,..." then OK; with that file as "cacert" and seclevel 1 a server
    whose leaf is signed by an intermediate (sent in its chain) verifies: open 0, data flow."""
    h = ec200
    bundle = pki.wrong_ca.cert_pem + pki.intermediate.cert_pem + pki.ca.cert_pem
    st, _, resp = file_upload(h, "bundle.pem", bundle)
    assert st == OK and resp.startswith(b"+QFUPL: %d," % len(bundle))
    assert ssl_configure(h, 0, 4, 0xFFFF, 1, cacert="bundle.pem") == OK
    with TlsServer(pki.chained, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 0, 11, HOST, 443) == OK
        assert ssl_send(h, 11, b"chain ok") == OK
        assert wait_urc(h, b'+QSSLURC: "recv",11')
        assert recv_all(h, 11, 8) == b"chain ok"
        assert ssl_close(h, 11) == OK


def test_ec200_open_on_an_id_in_use_reports_563_through_the_urc_path(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_open() (commit 0a885c209c8b):
    a second open on client id 0 while it is connected answers ERROR at once (docs/behaviour.md:
    an id in use is an immediate ERROR, AT+QIGETERROR then 563 "Socket identity has been
    used"), which send_await_urc()'s first phase maps to EC200_ERR_MODULE without waiting for a
    URC; no second +QSSLOPEN line comes; the first connection still carries data."""
    h = ec200
    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 0, HOST, 443) == OK
        assert ssl_open(h, 1, 1, 0, HOST, 443) == MODULE
        assert bytes(h.wire_rx).endswith(b"\r\nERROR\r\n")
        assert [ln for ln in h.lines if ln.startswith(b"+QSSLOPEN:")] == [b"+QSSLOPEN: 0,0"]
        st, body = h.send(b"AT+QIGETERROR")
        assert st == OK and body.startswith(b"+QIGETERROR: 563,")
        assert ssl_send(h, 0, b"still") == OK
        assert wait_urc(h, b'+QSSLURC: "recv",0')
        assert recv_all(h, 0, 5) == b"still"
        assert ssl_close(h, 0) == OK


def test_ec200_send_fail_then_rst_then_pdp_deact_through_the_engine(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_send()/_recv()/_close() (commit
    0a885c209c8b) under the emulator's control faults: send_fail -> "> " then, after the data,
    "SEND FAIL" -> EC200_ERR_MODULE (nothing reaches the peer) and the next send is SEND OK;
    a reset from the peer's side (drop rst) -> "+QSSLURC: \"closed\",7" dispatched, what was
    read before stays readable, a send then is ERROR (MODULE); pdp_deact -> the
    "+QIURC: \"pdpdeact\",1" line is no registered URC (the engine hands it to nobody) and the
    close still answers OK."""
    h = ec200
    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 7, HOST, 443) == OK
        srv.wait_handshake()
        assert emulator.control("send_fail", socket=7, count=1)["ok"]
        assert ssl_send(h, 7, b"lost") == MODULE
        assert h.lines[-1] == b"SEND FAIL"
        assert ssl_send(h, 7, b"kept") == OK
        assert srv.wait_received(4) == b"kept"
        assert wait_urc(h, b'+QSSLURC: "recv",7')
        time.sleep(0.2)
        assert emulator.control("drop", socket=7, how="rst")["ok"]
        assert wait_urc(h, b'+QSSLURC: "closed",7')
        assert recv_all(h, 7, 4) == b"kept"
        assert ssl_send(h, 7, b"late") == MODULE
        assert h.lines[-1] == b"ERROR"
        assert emulator.control("pdp_deact", cid=1)["ok"]
        h.poll_urc(500)
        assert b'+QIURC: "pdpdeact",1' in h.lines
        assert ssl_close(h, 7) == OK
    assert bytes(srv.connections[0].received) == b"kept"


def test_ec200_refused_and_unresolvable_opens_report_within_the_driver_budget(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_socket_open() (commit 0a885c209c8b): the
    result URC must come within send_await_urc()'s 10 s; connect_refuse -> OK then
    "+QSSLOPEN: 8,566" and dns_fail -> "+QSSLOPEN: 8,565", each EC200_ERR_MODULE well inside
    the budget; the id is free afterwards (the next open on it succeeds)."""
    h = ec200
    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        for fault, code in (("connect_refuse", 566), ("dns_fail", 565)):
            assert emulator.control(fault, count=1)["ok"]
            t0 = time.monotonic()
            assert ssl_open(h, 1, 1, 8, HOST, 443) == MODULE
            assert time.monotonic() - t0 < 10
            assert [ln for ln in h.lines if ln.startswith(b"+QSSLOPEN:")][-1] == \
                b"+QSSLOPEN: 8,%d" % code
        assert ssl_open(h, 1, 1, 8, HOST, 443) == OK
        assert ssl_close(h, 8) == OK


def test_ec200_library_defaults_check_dates_and_readlen_range(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction ec200_ssl_configure() with the library's memset
    defaults (tests/test_secure.c base_cfg() at 0a885c209c8b: ignore_localtime false, sni
    false -> `"ignorelocaltime",3,0` and `"sni",3,0`) at seclevel 1: a server certificate that
    expired in 2020 fails at the modem's (current) clock -> "+QSSLOPEN: 9,566" ->
    EC200_ERR_MODULE; a valid one opens.  ec200_ssl_socket_recv() passes any max_len up to
    65535: AT+QSSLRECV=9,1501 is outside the note's 1-1500 <readlen> range -> ERROR ->
    EC200_ERR_MODULE before any raw phase, and the data wait for a 1500 read."""
    import datetime as dt
    h = ec200
    assert file_upload(h, "ca.pem", pki.ca.cert_pem)[0] == OK
    assert ssl_configure(h, 3, 3, 0xFFFF, 1, cacert="ca.pem", ignore_localtime=False,
                         sni=False) == OK
    assert b'AT+QSSLCFG="ignorelocaltime",3,0\r' in h.wire_tx
    old = pki.issue_window("ec200_expired", dt.datetime(2019, 1, 1, tzinfo=dt.timezone.utc),
                           dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc))
    with TlsServer(old, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 3, 9, HOST, 443) == MODULE
        assert [ln for ln in h.lines if ln.startswith(b"+QSSLOPEN:")][-1] == b"+QSSLOPEN: 9,566"
        assert ssl_close(h, 9) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 3, 9, HOST, 443) == OK
        assert ssl_send(h, 9, b"dates ok") == OK
        assert wait_urc(h, b'+QSSLURC: "recv",9')
        assert ssl_recv(h, 9, 1501) == (MODULE, b"")
        assert h.lines[-1] == b"ERROR"
        assert ssl_recv(h, 9, 1500) == (OK, b"dates ok")
        assert ssl_close(h, 9) == OK


# =============================================================================================
# 1NCE's BG96 onboarding demo (X-CUBE-CELLULAR direct commands)
# =============================================================================================

class XCubeDirect:
    """The wire side of X-CUBE-CELLULAR's osCDS_direct_cmd() / sendToIPC() as the 1NCE demo
    uses them: each direct command is its text + CR (the BG96 layer's terminator, echo off),
    waited for until a final result line or cmd_timeout (ms); sendToIPC(0, buf, n) writes raw
    bytes to the UART with no wait.  Everything the module sends is logged, in order."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.05)
        self.rx = bytearray()

    def close(self) -> None:
        self.ser.close()

    def _pump(self) -> None:
        self.rx += self.ser.read(4096)

    def direct_cmd(self, cmd: bytes, cmd_timeout_ms: int) -> bytes:
        start = len(self.rx)
        self.ser.write(cmd + b"\r")
        deadline = time.monotonic() + cmd_timeout_ms / 1000
        while time.monotonic() < deadline:
            self._pump()
            tail = bytes(self.rx[start:])
            if tail.endswith((b"\r\nOK\r\n", b"\r\nERROR\r\n")) or b"+CME ERROR:" in tail:
                break
        return bytes(self.rx[start:])

    def send_to_ipc(self, data: bytes) -> None:
        self.ser.write(data)

    def waitforprocessing(self, n: int, pause: float = 0.5) -> None:
        for _ in range(n):
            self.direct_cmd(b"AT", 10000)
        time.sleep(pause)

    def settle(self, quiet: float = 0.3) -> None:
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            before = len(self.rx)
            self._pump()
            if len(self.rx) != before:
                end = time.monotonic() + quiet


def pkcs1(key_pem: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(key_pem, None)
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def test_1nce_bg96_onboarding_uploads_double_key_then_mutual_tls(driver_path, emulator, pki):
    """1NCE's BG96 demo on STM32 X-CUBE-CELLULAR (1NCE GmbH, "Authors: Mohammed Abdelmaksoud &
    Hatim Jamali", 2020; the store did not name the repository: nce_bg96_configuration.c store
    id 23186334155, nce_onboarding.c id 23416095540; a search of tests/ for "nce_bg96" and
    "nce_onboarding" finds nothing), replayed on the wire: nce_reset_modem_fs()
    `AT+QFDEL="*"`; nce_configure_onboarding_socket() (context 0: seclevel 0, sslversion 4,
    ciphersuite 0xFFFF, ignorelocaltime 1, `AT+QSSLCLOSE=1` on a socket never opened);
    nce_prepare_and_upload_certificates(): `AT+QFUPL="root.pem",<n>,60` (cmd_timeout 10 ms)
    and the PEM by sendToIPC, waitforprocessing(10) (ten "AT", 500 ms); the client
    certificate the same way (30 ms); ten "AT"; `AT+QFUPL="clientkey.pem",<n>,60` and the
    PKCS#1 key sent by sendToIPC TWICE (the demo's own slip: the second copy is command-state
    input), 10 s (here 1 s), ten "AT"; then nce_configure_ssl_socket() on context 1
    (cacert/clientcert/clientkey, seclevel 2, sslversion 4, 0xFFFF, ignorelocaltime 1,
    `AT+QSSLCLOSE=1,10` and `=2,10`), each followed by HAL_Delay(2000) (here 0.2 s; the
    onboarding download over the X-CUBE socket layer is not replayed: the material is the
    test PKI's).  Expected on the wire: every line OK, three CONNECT / "+QFUPL: <n>,<ck>" / OK
    with the exact sizes; the key's second copy is input without CR until the next "AT\\r",
    and "PRIVATE" holds "AT", so V.250 makes that one line "ATE KEY-----...AT" -> exactly ONE
    ERROR, and the nine AT after it OK.  The files are whole (QFLST sizes; QFDEL "*" removed
    the file that was there) and context 1 reaches a server that requires the client
    certificate."""
    x = XCubeDirect(driver_path)
    try:
        assert x.direct_cmd(b"ATE0", 1000).endswith(b"\r\nOK\r\n")
        assert x.direct_cmd(b'AT+QFUPL="old.pem",3,60', 100) == b"\r\nCONNECT\r\n"
        x.send_to_ipc(b"old")
        x.settle(0.2)
        assert re.search(rb"\r\n\+QFUPL: 3,[0-9a-f]+\r\n\r\nOK\r\n$", bytes(x.rx))
        x.rx.clear()
        root = pki.ca.cert_pem
        cert = pki.client.cert_pem
        key = pkcs1(pki.client.key_pem)
        assert key.startswith(b"-----BEGIN RSA PRIVATE KEY-----") and key.endswith(b"KEY-----\n")
        cmds_a = [b'AT+QFDEL="*"', b'AT+QSSLCFG="seclevel",0,0', b'AT+QSSLCFG="sslversion",0,4',
                  b'AT+QSSLCFG="ciphersuite",0,0xFFFF', b'AT+QSSLCFG="ignorelocaltime",0,1',
                  b"AT+QSSLCLOSE=1"]
        for c in cmds_a:
            x.direct_cmd(c, 10000)
        x.direct_cmd(b'AT+QFUPL="root.pem",%d,60' % len(root), 10)
        x.send_to_ipc(root)
        x.waitforprocessing(10)
        x.direct_cmd(b'AT+QFUPL="clientcert.pem",%d,60' % len(cert), 30)
        x.send_to_ipc(cert)
        x.waitforprocessing(10)
        x.direct_cmd(b'AT+QFUPL="clientkey.pem",%d,60' % len(key), 30)
        x.send_to_ipc(key)
        x.send_to_ipc(key)
        time.sleep(1.0)
        x.waitforprocessing(10)
        cmds_b = [b'AT+QSSLCFG="cacert",1,"root.pem"', b'AT+QSSLCFG="clientcert",1,"clientcert.pem"',
                  b'AT+QSSLCFG="clientkey",1,"clientkey.pem"', b'AT+QSSLCFG="seclevel",1,2',
                  b'AT+QSSLCFG="sslversion",1,4', b'AT+QSSLCFG="ciphersuite",1,0xFFFF',
                  b'AT+QSSLCFG="ignorelocaltime",1,1', b"AT+QSSLCLOSE=1,10", b"AT+QSSLCLOSE=2,10"]
        for c in cmds_b:
            x.direct_cmd(c, 10000)
            time.sleep(0.2)
        x.settle(0.3)
        ok = b"\r\nOK\r\n"

        def upl(n: int) -> bytes:
            return rb"\r\nCONNECT\r\n\r\n\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK\r\n" % n
        want = (re.escape(ok * len(cmds_a)) + upl(len(root)) + re.escape(ok * 10)
                + upl(len(cert)) + re.escape(ok * 10) + upl(len(key))
                + re.escape(b"\r\nERROR\r\n" + ok * 9 + ok * len(cmds_b)))
        assert re.fullmatch(want, bytes(x.rx)), bytes(x.rx)
        for name, n in ((b"root.pem", len(root)), (b"clientcert.pem", len(cert)),
                        (b"clientkey.pem", len(key))):
            assert x.direct_cmd(b'AT+QFLST="%s"' % name, 2000) == \
                b'\r\n+QFLST: "%s",%d\r\n\r\nOK\r\n' % (name, n)
        assert b"old.pem" not in x.direct_cmd(b'AT+QFLST="*"', 2000)
        assert x.direct_cmd(b'AT+QICSGP=1,1,"iot.1nce.net","","",1', 2000).endswith(ok)
        assert x.direct_cmd(b"AT+QIACT=1", 10000).endswith(ok)
        with TlsServer(pki.server, mode="echo", client_ca=pki.ca, require_client_cert=True) as srv:
            route(emulator, srv, 8883)
            got = x.direct_cmd(b'AT+QSSLOPEN=1,1,0,"%s",8883,0' % HOST.encode(), 1000)
            deadline = time.monotonic() + 10
            while b"+QSSLOPEN:" not in x.rx and time.monotonic() < deadline:
                x._pump()
            assert b"\r\n+QSSLOPEN: 0,0\r\n" in bytes(x.rx), (got, bytes(x.rx[-200:]))
            conn = srv.wait_handshake()
            assert "modem client" in conn.client_cert_subject
            assert x.direct_cmd(b"AT+QSSLCLOSE=0", 10000).endswith(ok)
    finally:
        x.close()


def test_1nce_double_send_of_a_4096_bit_sized_key_costs_one_error(driver_path):
    """The same 1NCE slip (nce_onboarding.c, store id 23416095540: sendToIPC() of the client
    key twice) with a key the size of an RSA-4096 PKCS#1 PEM (3243 bytes, 64-column base64):
    the second copy is a command-state "line" from the "AT" of "PRIVATE" to the next CR --
    longer than the 2048-byte line limit -- and must cost exactly one ERROR (at that CR, the
    first "AT" of waitforprocessing), the nine AT after it OK, the upload itself whole."""
    import base64
    body = base64.b64encode(bytes((i * 37 + 11) & 0xFF for i in range(2349)))
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    key = (b"-----BEGIN RSA PRIVATE KEY-----\n" + b"\n".join(lines) + b"\n"
           b"-----END RSA PRIVATE KEY-----\n")
    assert len(key) > 3000
    x = XCubeDirect(driver_path)
    try:
        assert x.direct_cmd(b"ATE0", 1000).endswith(b"\r\nOK\r\n")
        x.rx.clear()
        x.direct_cmd(b'AT+QFUPL="clientkey.pem",%d,60' % len(key), 30)
        x.send_to_ipc(key)
        x.send_to_ipc(key)
        time.sleep(0.5)
        x.waitforprocessing(10, pause=0.1)
        x.settle(0.3)
        assert re.fullmatch(rb"\r\nCONNECT\r\n\r\n\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK\r\n"
                            rb"\r\nERROR\r\n(\r\nOK\r\n){9}" % len(key), bytes(x.rx)), bytes(x.rx)
        assert x.direct_cmd(b'AT+QFLST="clientkey.pem"', 2000) == \
            b'\r\n+QFLST: "clientkey.pem",%d\r\n\r\nOK\r\n' % len(key)
    finally:
        x.close()


def test_ec200_cr_only_host_data_starting_with_lf_is_data(ec200, emulator, pki):
    """Banishgupta123/ec200-at-abstraction (ec200_at.c 004b93e94b4b: at_transmit() ends every
    command with CR alone; ec200_ssl_socket_send() writes the payload the moment '>' is seen):
    a host that has only ever ended its lines with CR sends a payload whose FIRST byte is LF --
    within milliseconds of its command's CR.  That LF cannot belong to the command line (this
    host never sends one): AT+QSSLSEND=0,6 must take "\\nhello" whole (SEND OK, the peer gets 6
    bytes), and AT+QFUPL of a PEM bundle that starts with a blank line must store every byte."""
    h = ec200
    bundle = b"\n" + pki.ca.cert_pem
    st, _, resp = file_upload(h, "lf.pem", bundle)
    assert st == OK and resp.startswith(b"+QFUPL: %d," % len(bundle))
    assert qflst_size(h, "lf.pem") == (OK, len(bundle))
    assert ssl_configure(h, 1, 4, 0xFFFF, 0) == OK
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        route(emulator, srv)
        assert ssl_open(h, 1, 1, 0, HOST, 443) == OK
        assert ssl_send(h, 0, b"\nhello") == OK
        assert srv.wait_received(6) == b"\nhello"
        assert ssl_close(h, 0) == OK
