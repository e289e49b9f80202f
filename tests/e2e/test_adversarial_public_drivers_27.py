"""Adversarial tests: the Quectel BG96 "Arduino library" SSL / file API, in the bare-metal C port
a bike-lock firmware ships, replayed through the pty against loopback OpenSSL (Python ssl)
servers.  (Earlier files replayed other code; a search of tests/ for "BikeSuo", "Mobit",
"InitSSL", "SSLSocketRecvData", "SendAndSearch_multi", "WaitCheckSSLSocketEvent" and
"ca_cert.pem" finds nothing.)  The EC2x's SSL and FILE command sets are the BG96's.

- abc3240660/BikeSuo at 0917b08c2e15eb096367b4e2df424d1c74b1c351 ("MobitLock", a PIC24F
  firmware, "A library for Quectel BG96 Module ... Copyright (c) 2019 Mobit technology inc."),
  003_BG96.c (store id 7981806194) and 003_BG96.h: a C port of Quectel's BG96 Arduino library
  (_BG96_SSL / WisLTEBG96SSL in RAK's fork, same bodies).  What the model keeps, byte for byte:
  * SendATcommand(cmd): DelayMs(100); the RX ring read until empty (dropped); then THREE
    writes: "AT", the command ("+QSSLCFG=..."), "\\r\\n".
  * The receive side: bytes one at a time into rxBuffer[512] (bufferHead wraps mod 512);
    CleanBuffer() zeroes it before each wait.  SearchStrBuffer(s) = strstr(rxBuffer, s) only
    while strlen(rxBuffer) < 512 (so a NUL byte hides what follows it);
    SearchChrBuffer(c) = strrchr (the LAST c).
  * ReadResponseAndSearch_multi(ok, err, t): after each byte, ok found -> SUCCESS (1); err found
    -> 1 s more bytes read, then the first ": " in the buffer, copied up to "\\r\\n" and atoi()ed
    into errorCode -> FIAL (0); for err "SEND FAIL" a plain "ERROR" counts too; at the end of t:
    FIAL if anything came, else TIMEOUT (-1).  Callers write `if (SendAndSearch_multi(...))`,
    so TIMEOUT (-1) is TRUE for them -- only an explicit error is a failure.
  * SendAndSearch / SendAndSearchChr: up to 3 tries (command sent again) until the string / char;
    they return SUCCESS or TIMEOUT (-1), i.e. always true for `if (...)`.
  * SendDataAndCheck(data, ok, err, t): DelayMs(100), the ring dropped, the data written whole,
    ReadResponseAndSearch_multi.
  * UploadFiles(name, pem): AT+QFUPL="<name>",<strlen> for "CONNECT" / "ERROR" (5 s), then the
    PEM for "OK" (10 s).  InitSSL(1, ca, cert, key): SetSSLParameters -- AT+QSSLCFG=
    "sslversion",1,4 / "ciphersuite",1,0XFFFF / "negotiatetime",1,300 --; each file uploaded
    as "ca_cert.pem" / "client_cert.pem" / "client_key.pem", a 407 answer deleting it
    (AT+QFDEL="<name>") and uploading again; then SetSSLCertificate: "seclevel",1,1 + "cacert"
    (CA only) or "seclevel",1,2 + "cacert" + "clientcert" + "clientkey", then
    "ignorelocaltime",1,0 (validity_check false: dates checked at the modem clock).
  * OpenSSLSocket(1, 1, 0, host, port, mode): AT+QSSLOPEN=1,1,0,"<host>",<port>,<mode>; modes
    0/1 wait for "+QSSLOPEN" (150 s) -- the ECHO of the command matches it when echo is on --
    then read 2 s more and atoi() after the LAST ',' (0 = success, else errorCode); mode 2
    waits for "CONNECT".
  * SSLSocketSendData: AT+QSSLSEND=0,<strlen> for '>' (2 s, 3 tries), then SendDataAndCheck
    for "SEND OK" / "SEND FAIL" (30 s).  SSLSocketRecvData: AT+QSSLRECV=0,<len> for
    "\\r\\n\\r\\nOK" (30 s); the result = the buffer from the first ": " + 2 to that match
    ("<n>\\r\\n<data>").  CloseSSLSocket: AT+QSSLCLOSE=0 for OK (150 s).  QuerySSLSocketStatus:
    AT+QSSLSTATE=0 for OK (10 s), the text between the first ": " and "\\r\\n\\r\\nOK".
    WaitCheckSSLSocketEvent: ReadResponseAndSearch("+QSSLURC"); its 200 ms read loop has an
    inverted condition and never runs, so the buffer ends at "+QSSLURC".
  * BG96ATInitialize: ATE0 ("OK", 2 s), AT+CGATT? for "+CGATT: 1", AT+CGSN, AT+QCCID.
  Windows over 3 s are capped at 3 s (they end at their match, or the test expects them to run
  out).  Faithful C flaws not reproduced: SetSSLCertificate's buf[32] overflows by two bytes for
  ="clientcert",1,"client_cert.pem" (the intended string is sent); WaitCheckSSLSocketEvent's
  strcpy from strrchr()==NULL (the model stops there).

Every dialled name is routed to 127.0.0.1.

What the replay shows (no emulator fault found; every test passes): the module's bytes are the
manuals' at every step the driver takes -- uploads (CONNECT, "+QFUPL: <n>,<xor16>", 407 for an
existing file, a bundle over 10240 bytes), seclevel 1/2 verification (566 for a wrong CA or a
certificate not yet valid at the modem clock set by AT+CCLK, 552 for a deleted CA file, 565 for
an unresolvable name), the buffer-mode session, transparent mode (CONNECT, NO CARRIER, "+++" /
ATO), and a byte-paced UART.  The failures are the driver's own: the quoted AT+CGPADDR it
cannot read, its echo-matched open, its 3x resend and blind payload write after ERROR, the
512-byte / NUL-blind receive buffer, and WaitCheckSSLSocketEvent's inverted loop.
"""

from __future__ import annotations

import time

import pytest

from emulator.testing.peers import TlsServer
from emulator.testing.peers.pki import default_pki
from tests.e2e.socket_support import Uart

CAP = 3.0
HOST = "www.iottest.work"
PORT = 443

SUCCESS, FAIL, TIMEOUT, UNKNOWN = 1, 0, -1, -2
RX_BUFFER_LENGTH = 512
OK, CRLF_OK, ERROR, CONNECT = b"OK", b"\r\n\r\nOK", b"ERROR", b"CONNECT"
SEND_OK, SEND_FAIL = b"SEND OK", b"SEND FAIL"
CA_NAME, CERT_NAME, KEY_NAME = "ca_cert.pem", "client_cert.pem", "client_key.pem"


def window(seconds: float) -> float:
    return min(seconds, CAP)


def c_atoi(data: bytes) -> int:
    """C atoi(): leading white space, a sign, digits."""
    i = 0
    while i < len(data) and data[i:i + 1] in (b" ", b"\t", b"\n", b"\v", b"\f", b"\r"):
        i += 1
    sign = 1
    if i < len(data) and data[i:i + 1] in (b"+", b"-"):
        sign = -1 if data[i:i + 1] == b"-" else 1
        i += 1
    n = 0
    while i < len(data) and 48 <= data[i] <= 57:
        n = n * 10 + data[i] - 48
        i += 1
    return sign * n


class DriverCrash(Exception):
    """The C code would dereference NULL here."""


class PacedUart(Uart):
    """A PIC24 UART at 115200 baud: every byte its own write, about 87 us apart."""

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        for i in range(len(data)):
            Uart.write(self, data[i:i + 1])
            self.writes.pop()
            time.sleep(0.000087)


class BG96:
    """003_BG96.c's AT layer and SSL / file API over the pty (see the module docstring)."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.rx = bytearray(RX_BUFFER_LENGTH)
        self.head = 0
        self.error_code = -1
        self.sends: list[bytes] = []          # each SendATcommand's command (without AT/CRLF)
        self.dropped = bytearray()            # what the "read fifo till empty" loops threw away
        self.ip_views: list[bytes | None] = []
        self.qiact: list[int] = []

    # -- the ring and rxBuffer ------------------------------------------------------------
    def _available(self) -> bool:
        with self.uart.cond:
            return len(self.uart.rx) > 0

    def _drop_ring(self) -> None:
        while True:
            got = self.uart.read(1, 0)
            if not got:
                return
            self.dropped += got

    def clean(self) -> None:
        self.rx = bytearray(RX_BUFFER_LENGTH)
        self.head = 0

    def _byte_to_buffer(self) -> None:
        c = self.uart.read(1, 0)
        self.rx[self.head] = c[0]
        self.head = (self.head + 1) % RX_BUFFER_LENGTH

    def _strlen(self) -> int:
        n = self.rx.find(0)
        return RX_BUFFER_LENGTH if n < 0 else n

    def search(self, s: bytes) -> int | None:
        n = self._strlen()
        if n < RX_BUFFER_LENGTH:
            i = bytes(self.rx[:n]).find(s)
            return None if i < 0 else i
        return None

    def search_chr(self, c: bytes) -> int | None:
        n = self._strlen()
        if 0 < n < RX_BUFFER_LENGTH:
            i = bytes(self.rx[:n]).rfind(c)
            return None if i < 0 else i
        return None

    @property
    def text(self) -> bytes:
        return bytes(self.rx[:self._strlen()])

    def _poll(self, deadline: float) -> bool:
        """One turn of `while (!timeout) { if (available) ... }`: True when a byte is there."""
        with self.uart.cond:
            if self.uart.rx:
                return True
            self.uart.cond.wait(max(0.0, min(0.02, deadline - time.monotonic())))
            return bool(self.uart.rx)

    # -- commands ---------------------------------------------------------------------------
    def send_at(self, command: str) -> bool:
        time.sleep(0.1)
        self._drop_ring()
        self.uart.write(b"AT")
        self.uart.write(command.encode("latin-1"))
        self.sends.append(command.encode("latin-1"))
        self.uart.write(b"\r\n")
        return True

    def read_search_chr(self, c: bytes, timeout: float) -> int:
        deadline, got = time.monotonic() + window(timeout), 0
        self.clean()
        while time.monotonic() < deadline:
            if self._poll(deadline):
                self._byte_to_buffer()
                got += 1
                if self.search_chr(c) is not None:
                    return SUCCESS
        return UNKNOWN if got else TIMEOUT

    def read_search(self, s: bytes, timeout: float) -> int:
        deadline, got = time.monotonic() + window(timeout), 0
        self.clean()
        while time.monotonic() < deadline:
            if self._poll(deadline):
                self._byte_to_buffer()
                got += 1
                if self.search(s) is not None:
                    return SUCCESS
        return UNKNOWN if got else TIMEOUT

    def _error_tail(self) -> None:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            if self._poll(end):
                self._byte_to_buffer()
        at = self.search(b": ")
        if at is not None:
            tail = self.text[at + 2:]
            cut = tail.find(b"\r\n")
            if cut < 0:
                raise DriverCrash("strstr(err_code, \"\\r\\n\") is NULL")
            self.error_code = c_atoi(tail[:cut])

    def read_search_multi(self, ok: bytes, err: bytes, timeout: float) -> int:
        deadline, got = time.monotonic() + window(timeout), 0
        self.error_code = -1
        self.clean()
        while time.monotonic() < deadline:
            if self._poll(deadline):
                self._byte_to_buffer()
                got += 1
                if self.search(ok) is not None:
                    return SUCCESS
                if self.search(err) is not None:
                    self._error_tail()
                    return FAIL
                if err == SEND_FAIL and self.search(ERROR) is not None:
                    self._error_tail()
                    return FAIL
        return FAIL if got else TIMEOUT

    def send_and_search(self, command: str, s: bytes, timeout: float) -> int:
        for _ in range(3):
            if self.send_at(command) and self.read_search(s, timeout) == SUCCESS:
                return SUCCESS
        return TIMEOUT

    def send_and_search_chr(self, command: str, c: bytes, timeout: float) -> int:
        for _ in range(3):
            if self.send_at(command) and self.read_search_chr(c, timeout) == SUCCESS:
                return SUCCESS
        return TIMEOUT

    def send_and_search_multi(self, command: str, ok: bytes, err: bytes, timeout: float) -> int:
        self.send_at(command)
        return self.read_search_multi(ok, err, timeout)

    def send_data_and_check(self, data: bytes, ok: bytes, err: bytes, timeout: float) -> bool:
        time.sleep(0.1)
        self._drop_ring()
        self.uart.write(data)
        return bool(self.read_search_multi(ok, err, timeout))

    # -- API --------------------------------------------------------------------------------
    def at_initialize(self) -> bool:
        for _ in range(10):
            if self.send_and_search("E0", OK, 2):
                break
        for _ in range(9):
            if self.send_and_search("+CGATT?", b"+CGATT: 1", 2):
                break
        return True

    def init_apn(self, pdp: int, apn: str) -> tuple[bool, str]:
        """InitAPN(): AT+CPIN? for READY, AT+CGREG? (then AT+CEREG?) until 1/5, then for 3 s:
        AT+QICSGP; AT+CGPADDR (an address after the last ',' that strcmp()s above "0.0.0.0"
        means done), else AT+QIACT for OK / ERROR (150 s)."""
        self.send_and_search("+CPIN?", b"READY", 2)
        for cmd in ("+CGREG?", "+CEREG?"):
            if self.send_and_search(cmd, OK, 2):
                end = self.search(CRLF_OK)
                at = self.search_chr(b",")
                if end is not None and at is not None and c_atoi(self.text[at + 1:end]) in (1, 5):
                    break
        start, msg = time.monotonic(), ""
        while time.monotonic() - start < 3.0:
            if self.send_and_search(f'+QICSGP={pdp},1,"{apn}","","",3', OK, 2):
                self.ip_views.append(None)
                if self.send_and_search(f"+CGPADDR={pdp}", OK, 2):
                    end = self.search(CRLF_OK)
                    at = self.search_chr(b",")
                    if end is None or at is None:
                        raise DriverCrash("+CGPADDR answer without ',' / CRLF OK")
                    ip = self.text[at + 1:end]
                    self.ip_views[-1] = ip
                    if ip > b"0.0.0.0":
                        return True, f"APN OK: The IP address is {ip.decode()}"
                status = self.send_and_search_multi(f"+QIACT={pdp}", OK, ERROR, 150)
                self.qiact.append(status)
                if status == TIMEOUT:
                    return False, "APN ERROR: Please reset your device!"
            msg = "APN ERROR: Activate APN file!"
        return False, msg

    def dev_clock_read(self) -> bytes:
        """DevClock(READ_MODE): AT+CCLK? for OK (2 s, 3 tries); the text between the first
        ": " and "\r\n\r\nOK"."""
        self.send_and_search("+CCLK?", OK, 2)
        at, end = self.search(b": "), self.search(CRLF_OK)
        if at is None or end is None:
            raise DriverCrash("+CCLK answer without ': ' / CRLF OK")
        return self.text[at + 2:end]

    def dev_clock_write(self, clock: str) -> bool:
        return bool(self.send_and_search_multi(f'+CCLK="{clock}"', OK, ERROR, 2))

    def query_last_error(self) -> bytes:
        """QueryLastErrorCode(): AT+QIGETERROR for OK; everything after the first ": "."""
        self.send_and_search("+QIGETERROR", OK, 2)
        at = self.search(b": ")
        if at is None:
            raise DriverCrash("+QIGETERROR answer without ': '")
        return self.text[at + 2:]

    def delete_file(self, name: str) -> bool:
        return bool(self.send_and_search_multi(f'+QFDEL="{name}"', OK, ERROR, 2))

    def upload_file(self, name: str, pem: bytes) -> bool:
        if self.send_and_search_multi(f'+QFUPL="{name}",{len(pem)}', CONNECT, ERROR, 5):
            if self.send_data_and_check(pem, OK, ERROR, 10):
                return True
        return False

    def set_ssl_parameters(self, idx: int = 1) -> bool:
        for cmd in (f'+QSSLCFG="sslversion",{idx},4', f'+QSSLCFG="ciphersuite",{idx},0XFFFF',
                    f'+QSSLCFG="negotiatetime",{idx},300'):
            if not self.send_and_search_multi(cmd, OK, ERROR, 5):
                return False
        return True

    def set_ssl_certificate(self, idx: int, ca: str, cert: str, key: str) -> bool:
        if not ca and not cert and not key:
            cmds = [f'+QSSLCFG="seclevel",{idx},0']
        elif ca and not cert and not key:
            cmds = [f'+QSSLCFG="seclevel",{idx},1', f'+QSSLCFG="cacert",{idx},"{ca}"',
                    f'+QSSLCFG="ignorelocaltime",{idx},0']
        elif ca and cert and key:
            cmds = [f'+QSSLCFG="seclevel",{idx},2', f'+QSSLCFG="cacert",{idx},"{ca}"',
                    f'+QSSLCFG="clientcert",{idx},"{cert}"', f'+QSSLCFG="clientkey",{idx},"{key}"',
                    f'+QSSLCFG="ignorelocaltime",{idx},0']
        else:
            return False
        for cmd in cmds:
            if not self.send_and_search_multi(cmd, OK, ERROR, 5):
                return False
        return True

    def _upload_retry(self, name: str, pem: bytes) -> bool:
        start = time.monotonic()
        while not self.upload_file(name, pem):
            if self.error_code != -1:
                if self.error_code == 407:
                    start = time.monotonic()
                    while not self.delete_file(name):
                        if time.monotonic() - start > window(10):
                            return False
            elif time.monotonic() - start > window(30):
                return False
        return True

    def init_ssl(self, idx: int, ca: bytes, cert: bytes, key: bytes) -> tuple[bool, str]:
        if not self.set_ssl_parameters(idx):
            return False, "SSL ERROR: An error occurred while setting the ssl parameter."
        names = []
        for name, pem in ((CA_NAME, ca), (CERT_NAME, cert), (KEY_NAME, key)):
            if pem:
                if not self._upload_retry(name, pem):
                    return False, "SSL ERROR: Error uploading file"
                names.append(name)
        names += [""] * (3 - len(names))
        start = time.monotonic()
        while not self.set_ssl_certificate(idx, *names):
            if time.monotonic() - start > window(30):
                return False, "SSL ERROR: An error occurred while setting the ssl certificate."
        return True, "SSL OK: The ssl were successfully initialized."

    def open_ssl_socket(self, host: str, port: int, mode: int = 0, pdp: int = 1, ctx: int = 1,
                        sock: int = 0) -> bool:
        cmd = f'+QSSLOPEN={pdp},{ctx},{sock},"{host}",{port},{mode}'
        if mode in (0, 1):
            if self.send_and_search_multi(cmd, b"+QSSLOPEN", ERROR, 150) > 0:
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    if self._poll(end):
                        self._byte_to_buffer()
                at = self.search_chr(b",")
                self.error_code = -1
                if at is None:
                    raise DriverCrash("strrchr(rxBuffer, ',') is NULL")
                value = c_atoi(self.text[at + 1:])
                if value == 0:
                    return True
                self.error_code = value
            return False
        if mode == 2:
            return self.send_and_search_multi(cmd, CONNECT, ERROR, 150) > 0
        return False

    def ssl_send(self, data: bytes, sock: int = 0) -> bool:
        if self.send_and_search_chr(f"+QSSLSEND={sock},{len(data)}", b">", 2):
            if self.send_data_and_check(data, SEND_OK, SEND_FAIL, 30):
                return True
        return False

    def ssl_recv(self, length: int, sock: int = 0) -> bytes | None:
        if self.send_and_search_multi(f"+QSSLRECV={sock},{length}", CRLF_OK, ERROR, 30):
            end = self.search(CRLF_OK)
            if end is None:
                raise DriverCrash("*end_buf with end_buf NULL")
            body = self.text[:end]
            at = body.find(b": ")
            if at < 0:
                raise DriverCrash("strcpy from NULL + 2")
            return body[at + 2:]
        return None

    def close_ssl_socket(self, sock: int = 0) -> bool:
        return bool(self.send_and_search_multi(f"+QSSLCLOSE={sock}", OK, ERROR, 150))

    def query_ssl_state(self, sock: int = 0) -> bytes:
        self.send_and_search(f"+QSSLSTATE={sock}", OK, 10)
        at, end = self.search(b": "), self.search(CRLF_OK)
        if at is None or end is None:
            raise DriverCrash("+QSSLSTATE answer without ': ' or CRLF OK")
        return self.text[at + 2:end]

    def wait_ssl_event(self, timeout: float) -> int:
        if self.read_search(b"+QSSLURC", timeout) > 0:
            at = self.search_chr(b",")
            if at is None:
                raise DriverCrash("strcpy(event, strrchr(rxBuffer, ',') + 1) with NULL")
            if self.search(b"closed") is not None:
                return 2
            if self.search(b"recv") is not None:
                return 1
        return 0


# == fixtures ======================================================================================
@pytest.fixture
def bg96(driver_path):
    uart = Uart(driver_path)
    drv = BG96(uart)
    yield drv
    uart.close()


@pytest.fixture(scope="module")
def pki():
    return default_pki()


def _mark(drv: BG96) -> tuple[int, int]:
    drv.dropped.clear()
    return len(drv.uart.writes), len(drv.uart.wire_rx)


def _since(drv: BG96, mark: tuple[int, int]) -> tuple[bytes, bytes]:
    return b"".join(drv.uart.writes[mark[0]:]), bytes(drv.uart.wire_rx[mark[1]:])


def _seen(drv: BG96, at: int, needle: bytes, timeout: float = 10) -> None:
    """Wait until the module has written needle since wire offset `at` (instead of a fixed
    sleep that a loaded machine overruns)."""
    deadline = time.monotonic() + timeout
    while needle not in bytes(drv.uart.wire_rx[at:]):
        assert time.monotonic() < deadline, (needle, bytes(drv.uart.wire_rx[at:]))
        time.sleep(0.005)


def xor16(data: bytes) -> int:
    """The FILE manual's checksum: big-endian 16-bit words XORed, an odd last byte high."""
    if len(data) % 2:
        data += b"\x00"
    out = 0
    for k in range(0, len(data), 2):
        out ^= (data[k] << 8) | data[k + 1]
    return out


def _cmd(text: str) -> bytes:
    """What SendATcommand() puts on the wire for one command: three writes."""
    return b"AT" + text.encode() + b"\r\n"


def _ready(drv: BG96) -> None:
    """BG96ATInitialize() and the context up (ActivateDevAPN(1), as InitAPN's first turn does;
    its 3 s of retries are the first test's)."""
    assert drv.at_initialize() is True
    assert drv.send_and_search_multi("+QIACT=1", OK, ERROR, 150) == SUCCESS
    drv.uart.writes.clear()


def _uart_at(uart: Uart, line: bytes, timeout: float = 5) -> bytes:
    """The test's own command on the driver's UART: everything up to OK / ERROR."""
    time.sleep(0.05)
    with uart.cond:
        del uart.rx[:]
    return uart.command(line, timeout)


def _reply_server(reply: bytes, got: list, *, close_after: bool = False, **kw) -> TlsServer:
    def handler(conn):
        data = conn.recv(timeout=20)
        got.append(data)
        conn.sendall(reply)
        if close_after:
            conn.close()
            return
        while conn.recv(timeout=15):
            pass
    return TlsServer(handler=handler, **kw)


# == tests =========================================================================================
def test_start_up_apn_bytes_and_the_quoted_cgpaddr_the_driver_cannot_read(bg96):
    """BG96ATInitialize + InitAPN: every command goes out as "AT", body, CR LF (three writes);
    echo is on until ATE0 (the module's "ATE0\\r\\r\\nOK"); AT+CGPADDR answers 27.007's quoted
    string, so the driver's strcmp('"10.7.157.1"', "0.0.0.0") <= 0 and it never sees an address:
    it activates (OK), then for the rest of its 3 s keeps asking AT+QIACT=1, refused with a
    plain ERROR each time (context already active), and gives up "Activate APN file!"."""
    drv = bg96
    assert drv.at_initialize() is True
    ok, msg = drv.init_apn(1, "internet")
    assert (ok, msg) == (False, "APN ERROR: Activate APN file!")
    assert drv.ip_views[0] == b'"0.0.0.0"'
    assert set(drv.ip_views[1:]) == {b'"10.7.157.1"'} and len(drv.ip_views) >= 2
    assert drv.qiact[0] == SUCCESS and set(drv.qiact[1:]) <= {FAIL}
    assert drv.error_code == -1                        # "ERROR" has no ": " to read a code from
    w = drv.uart.writes
    assert w[:6] == [b"AT", b"E0", b"\r\n", b"AT", b"+CGATT?", b"\r\n"]
    rx = bytes(drv.uart.wire_rx)
    assert rx.startswith(b"ATE0\r\r\nOK\r\n\r\n+CGATT: 1\r\n\r\nOK\r\n\r\n+CPIN: READY\r\n\r\nOK\r\n"
                         b"\r\n+CGREG: 0,1\r\n\r\nOK\r\n\r\nOK\r\n\r\n+CGPADDR: 1,\"0.0.0.0\"\r\n\r\nOK"
                         b"\r\n\r\nOK\r\n\r\nOK\r\n\r\n+CGPADDR: 1,\"10.7.157.1\"\r\n\r\nOK\r\n"
                         b"\r\nERROR\r\n")
    assert b"".join(w) .startswith(
        _cmd("E0") + _cmd("+CGATT?") + _cmd("+CPIN?") + _cmd("+CGREG?")
        + _cmd('+QICSGP=1,1,"internet","","",3') + _cmd("+CGPADDR=1") + _cmd("+QIACT=1")
        + _cmd('+QICSGP=1,1,"internet","","",3') + _cmd("+CGPADDR=1") + _cmd("+QIACT=1"))


def test_init_ssl_uploads_the_ca_and_configures_seclevel_1(bg96, pki):
    """InitSSL(1, ca, "", ""): the three parameters, AT+QFUPL="ca_cert.pem",<n> -> CONNECT, the
    PEM written whole 100 ms later, "+QFUPL: <n>,<xor16 hex>" OK; then seclevel 1, cacert,
    ignorelocaltime 0.  The module holds exactly what was sent (AT+QFDWL) and the context
    reads back as configured."""
    drv = bg96
    _ready(drv)
    ca = pki.ca.cert_pem
    mark = _mark(drv)
    assert drv.init_ssl(1, ca, b"", b"") == (True, "SSL OK: The ssl were successfully initialized.")
    sent, got = _since(drv, mark)
    assert sent == (_cmd('+QSSLCFG="sslversion",1,4') + _cmd('+QSSLCFG="ciphersuite",1,0XFFFF')
                    + _cmd('+QSSLCFG="negotiatetime",1,300')
                    + _cmd(f'+QFUPL="ca_cert.pem",{len(ca)}') + ca
                    + _cmd('+QSSLCFG="seclevel",1,1') + _cmd('+QSSLCFG="cacert",1,"ca_cert.pem"')
                    + _cmd('+QSSLCFG="ignorelocaltime",1,0'))
    assert got == (b"\r\nOK\r\n" * 3 + b"\r\nCONNECT\r\n"
                   + f"\r\n+QFUPL: {len(ca)},{xor16(ca):x}\r\n\r\nOK\r\n".encode()
                   + b"\r\nOK\r\n" * 3)
    assert drv.dropped == b"\r\n" * 8    # the CR LF after each match (QIACT's first), dropped
    down = _uart_at(drv.uart, b'AT+QFDWL="ca_cert.pem"')
    assert down == (b"\r\nCONNECT\r\n" + ca
                    + f"\r\n+QFDWL: {len(ca)},{xor16(ca):x}\r\n\r\nOK\r\n".encode())
    assert _uart_at(drv.uart, b'AT+QSSLCFG="cacert",1') == \
        b'\r\n+QSSLCFG: "cacert",1,"ca_cert.pem"\r\n\r\nOK\r\n'
    assert _uart_at(drv.uart, b'AT+QSSLCFG="seclevel",1') == \
        b'\r\n+QSSLCFG: "seclevel",1,1\r\n\r\nOK\r\n'
    assert _uart_at(drv.uart, b'AT+QSSLCFG="ciphersuite",1') == \
        b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n\r\nOK\r\n'


def test_second_boot_upload_gets_407_deletes_and_uploads_again(bg96, pki):
    """The next boot's InitSSL finds ca_cert.pem already there: AT+QFUPL is "+CME ERROR: 407"
    (no CONNECT, the PEM not swallowed), the driver reads 407 after the ": " and runs
    AT+QFDEL="ca_cert.pem" (OK), then uploads again -- the new file replaces the old one."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    new_ca = pki.wrong_ca.cert_pem
    mark = _mark(drv)
    assert drv.init_ssl(1, new_ca, b"", b"")[0] is True
    sent, got = _since(drv, mark)
    up = _cmd(f'+QFUPL="ca_cert.pem",{len(new_ca)}')
    assert sent == (_cmd('+QSSLCFG="sslversion",1,4') + _cmd('+QSSLCFG="ciphersuite",1,0XFFFF')
                    + _cmd('+QSSLCFG="negotiatetime",1,300')
                    + up + _cmd('+QFDEL="ca_cert.pem"') + up + new_ca
                    + _cmd('+QSSLCFG="seclevel",1,1') + _cmd('+QSSLCFG="cacert",1,"ca_cert.pem"')
                    + _cmd('+QSSLCFG="ignorelocaltime",1,0'))
    assert got == (b"\r\nOK\r\n" * 3 + b"\r\n+CME ERROR: 407\r\n" + b"\r\nOK\r\n"
                   + b"\r\nCONNECT\r\n"
                   + f"\r\n+QFUPL: {len(new_ca)},{xor16(new_ca):x}\r\n\r\nOK\r\n".encode()
                   + b"\r\nOK\r\n" * 3)
    down = _uart_at(drv.uart, b'AT+QFDWL="ca_cert.pem"')
    assert down.startswith(b"\r\nCONNECT\r\n" + new_ca + b"\r\n+QFDWL: ")


def test_seclevel_1_open_send_event_recv_state_close(bg96, emulator, pki):
    """The whole SSL session against a server holding the CA's certificate for the dialled name:
    AT+QSSLOPEN=1,1,0,"www.iottest.work",443,0 -> OK then "+QSSLOPEN: 0,0" (the driver: atoi
    after the last ',' = 0); AT+QSSLSEND=0,18 -> "> ", the bytes, SEND OK; the server's reply
    raises +QSSLURC "recv" (WaitCheckSSLSocketEvent's buffer ends at "+QSSLURC": the rest of the
    line stays in the ring); AT+QSSLRECV=0,100 gives the driver "<n>\\r\\n<data>"; QSSLSTATE
    state 2 on context 1; AT+QSSLCLOSE=0 OK and the server sees the close."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    got: list = []
    reply = b"HTTP/1.0 200 OK\r\n\r\nhi"
    with _reply_server(reply, got, cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        mark = _mark(drv)
        assert drv.open_ssl_socket(HOST, PORT) is True
        assert drv.text == b"\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n"
        conn = server.wait_handshake()
        assert conn.sni is None                    # sni 0, the default
        assert drv.ssl_send(b"GET / HTTP/1.0\r\n\r\n") is True
        sent, rx = _since(drv, mark)
        assert sent == (_cmd(f'+QSSLOPEN=1,1,0,"{HOST}",443,0') + _cmd("+QSSLSEND=0,18")
                        + b"GET / HTTP/1.0\r\n\r\n")
        assert rx.startswith(b"\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n\r\n> \r\nSEND OK\r\n")
        assert drv.dropped == b"\r\n "    # the last OK's CR LF; the prompt's space before the data
        assert server.wait_received(18) == b"GET / HTTP/1.0\r\n\r\n"
        with pytest.raises(DriverCrash):               # strrchr(',') is NULL: no comma yet
            drv.wait_ssl_event(5)
        assert drv.text == b"\r\n\r\n+QSSLURC"    # SEND OK's CR LF, then the URC's
        time.sleep(0.2)
        with drv.uart.cond:
            assert bytes(drv.uart.rx) == b': "recv",0\r\n'
        assert drv.ssl_recv(100) == b"%d\r\n%s" % (len(reply), reply)
        assert drv.ssl_recv(100) == b"0"
        assert drv.query_ssl_state() == (b'0,"SSLClient","www.iottest.work",443,'
                                         + drv.query_ssl_state().split(b",")[4]
                                         + b',2,1,0,0,"usbmodem",1')
        assert drv.close_ssl_socket() is True
        assert drv.text == b"\r\nOK"
        server.wait_done()


def test_wrong_ca_server_open_fails_566_and_the_id_is_free_again(bg96, emulator, pki):
    """seclevel 1 with ca_cert.pem = our CA, the server's certificate from another CA: OK, then
    "+QSSLOPEN: 0,566" (the EC2x's handshake failure); the driver keeps 566 in errorCode and
    returns false; the server sees the handshake fail; the client id is free: QSSLSTATE empty,
    and the same open against the right server then succeeds."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    with TlsServer(cert=pki.wrong_server) as bad:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", bad.port)
        mark = _mark(drv)
        assert drv.open_ssl_socket(HOST, PORT) is False
        assert drv.error_code == 566
        assert drv.text == b"\r\nOK\r\n\r\n+QSSLOPEN: 0,566\r\n"
        assert _since(drv, mark)[0] == _cmd(f'+QSSLOPEN=1,1,0,"{HOST}",443,0')
        conn = bad.wait_done()
        assert conn.handshake_done is False
    assert _uart_at(drv.uart, b"AT+QSSLSTATE=0") == b"\r\nOK\r\n"
    with TlsServer(cert=pki.server) as good:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", good.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        good.wait_handshake()
        assert drv.close_ssl_socket() is True


def test_seclevel_2_uploads_three_files_and_presents_the_client_certificate(bg96, emulator, pki):
    """InitSSL(1, ca, cert, key): three uploads, then seclevel 2, cacert, clientcert, clientkey,
    ignorelocaltime 0; a server that requires a client certificate from our CA sees
    "modem client"; data goes up and comes back."""
    drv = bg96
    _ready(drv)
    ca, cert, key = pki.ca.cert_pem, pki.client.cert_pem, pki.client.key_pem
    mark = _mark(drv)
    assert drv.init_ssl(1, ca, cert, key)[0] is True
    sent, got = _since(drv, mark)
    assert sent == (_cmd('+QSSLCFG="sslversion",1,4') + _cmd('+QSSLCFG="ciphersuite",1,0XFFFF')
                    + _cmd('+QSSLCFG="negotiatetime",1,300')
                    + _cmd(f'+QFUPL="ca_cert.pem",{len(ca)}') + ca
                    + _cmd(f'+QFUPL="client_cert.pem",{len(cert)}') + cert
                    + _cmd(f'+QFUPL="client_key.pem",{len(key)}') + key
                    + _cmd('+QSSLCFG="seclevel",1,2') + _cmd('+QSSLCFG="cacert",1,"ca_cert.pem"')
                    + _cmd('+QSSLCFG="clientcert",1,"client_cert.pem"')
                    + _cmd('+QSSLCFG="clientkey",1,"client_key.pem"')
                    + _cmd('+QSSLCFG="ignorelocaltime",1,0'))
    ups = b"".join(b"\r\nCONNECT\r\n" + f"\r\n+QFUPL: {len(x)},{xor16(x):x}\r\n\r\nOK\r\n".encode()
                   for x in (ca, cert, key))
    assert got == b"\r\nOK\r\n" * 3 + ups + b"\r\nOK\r\n" * 5
    got_data: list = []
    with _reply_server(b"pong", got_data, cert=pki.server, client_ca=pki.ca,
                       require_client_cert=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        conn = server.wait_handshake()
        assert "modem client" in conn.client_cert_subject
        at = len(drv.uart.wire_rx)
        assert drv.ssl_send(b"ping") is True
        server.wait_for(lambda: got_data)
        assert got_data == [b"ping"]
        _seen(drv, at, b'+QSSLURC: "recv",0')             # (the reply is in)
        assert drv.ssl_recv(64) == b"4\r\npong"
        assert drv.close_ssl_socket() is True


def test_echo_on_open_reads_its_own_echo_as_success(bg96, emulator, pki):
    """Without ATE0 (InitSSL run before BG96ATInitialize) the module echoes each command; the
    open waits for "+QSSLOPEN" and the ECHO "AT+QSSLOPEN=1,1,0,..." matches it at once.  Against
    a server that accepts TCP and never answers, the 2 s read holds only the echo's tail and OK:
    the last ',' is the mode's, atoi("0\\r\\r\\n...") = 0, and the driver reports success.  The
    module meanwhile is still negotiating (QSSLSTATE state 1, opening) and AT+QSSLCLOSE=0 ends
    it with OK, no +QSSLOPEN afterwards."""
    import socket
    drv = bg96
    assert drv.init_apn(1, "internet")[0] is False     # (its own quoted-address blindness)
    assert drv.qiact[0] == SUCCESS
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    try:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", lst.getsockname()[1])
        mark = _mark(drv)
        assert drv.open_ssl_socket(HOST, PORT) is True
        cmd = f'AT+QSSLOPEN=1,1,0,"{HOST}",443,0'.encode()
        assert drv.text == cmd + b"\r\r\nOK\r\n"
        peer, _ = lst.accept()
        state = _uart_at(drv.uart, b"AT+QSSLSTATE=0")
        assert state.startswith(b'AT+QSSLSTATE=0\r\r\n+QSSLSTATE: 0,"SSLClient","www.iottest.work",443,')
        assert b',1,1,0,0,"usbmodem",1\r\n\r\nOK\r\n' in state
        assert drv.close_ssl_socket() is True
        assert drv.text == b"AT+QSSLCLOSE=0\r\r\nOK"
        time.sleep(1.0)
        assert b"+QSSLOPEN" not in bytes(drv.uart.wire_rx[mark[1] + len(cmd):])
        peer.settimeout(3)
        assert peer.recv(4096)[:1] == b"\x16"          # the ClientHello went out
        peer.close()
    finally:
        lst.close()


def test_server_close_then_send_retries_three_times_and_writes_data_in_command_mode(
        bg96, emulator, pki):
    """The server answers and closes: +QSSLURC "closed",0.  The driver's next SSLSocketSendData
    sends AT+QSSLSEND=0,5 three times (each ERROR: no '>' within 2 s), then writes "hello"
    anyway, into command state, and waits for SEND OK (capped); nothing answers the bare bytes,
    its TIMEOUT counts as success.  The module drops them ("bytes outside a command line"): the
    next AT+QSSLRECV=0,100 still reads the 4 bytes kept after the close, then AT+QSSLCLOSE=0
    is OK and the id is free."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    got: list = []
    with _reply_server(b"bye!", got, close_after=True, cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        assert drv.ssl_send(b"x") is True
        server.wait_done()
        time.sleep(0.5)
        mark = _mark(drv)
        assert drv.ssl_send(b"hello") is True
        sent, rx = _since(drv, mark)
        assert sent == _cmd("+QSSLSEND=0,5") * 3 + b"hello"
        assert rx == b"\r\nERROR\r\n" * 3
        assert drv.ssl_recv(100) == b"4\r\nbye!"
        assert drv.close_ssl_socket() is True
    assert _uart_at(drv.uart, b"AT+QSSLSTATE=0") == b"\r\nOK\r\n"
    assert b'+QSSLURC: "recv",0\r\n' in bytes(drv.uart.wire_rx)
    assert b'+QSSLURC: "closed",0\r\n' in bytes(drv.uart.wire_rx)


def test_transparent_open_connect_raw_bytes_and_no_carrier(bg96, emulator, pki):
    """OpenSSLSocket(..., TRANSPARENT_MODE): AT+QSSLOPEN=...,2 waits for "CONNECT"; then the
    application's raw bytes go straight to the server and the server's come back raw; when the
    server closes, the module leaves data mode with "NO CARRIER" and answers AT again."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    got: list = []
    with _reply_server(b"raw-reply", got, close_after=True, cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        mark = _mark(drv)
        assert drv.open_ssl_socket(HOST, PORT, mode=2) is True
        assert drv.text == b"\r\nCONNECT"
        time.sleep(0.1)
        drv.uart.write(b"raw-up")
        server.wait_done()
        assert got == [b"raw-up"]
        deadline = time.monotonic() + 5
        while b"NO CARRIER\r\n" not in bytes(drv.uart.wire_rx[mark[1]:]):
            assert time.monotonic() < deadline, bytes(drv.uart.wire_rx[mark[1]:])
            time.sleep(0.05)
        rx = bytes(drv.uart.wire_rx[mark[1]:])
        assert rx == b"\r\nCONNECT\r\nraw-reply\r\nNO CARRIER\r\n"
    assert _uart_at(drv.uart, b"AT") == b"\r\nOK\r\n"
    state = _uart_at(drv.uart, b"AT+QSSLSTATE=0")
    assert state.startswith(b'\r\n+QSSLSTATE: 0,"SSLClient","www.iottest.work",443,')
    assert state.endswith(b',4,1,0,2,"usbmodem",1\r\n\r\nOK\r\n')    # closing, transparent
    assert drv.close_ssl_socket() is True
    assert _uart_at(drv.uart, b"AT+QSSLSTATE=0") == b"\r\nOK\r\n"


def test_recv_of_more_than_its_buffer_and_a_nul_byte_lose_the_answer(bg96, emulator, pki):
    """rxBuffer holds 512 bytes and strstr() stops at NUL: a 600-byte reply read with
    AT+QSSLRECV=0,1500 overruns it (strlen never < 512, the "\\r\\n\\r\\nOK" search never
    succeeds: FIAL after the window); the module delivered it exactly, and the next read is
    "+QSSLRECV: 0".  A reply holding a NUL hides its OK the same way."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    big = bytes((65 + i % 26) for i in range(600))
    got: list = []

    def handler(conn):
        got.append(conn.recv(timeout=10))
        conn.sendall(big)
        got.append(conn.recv(timeout=10))
        conn.sendall(b"ab\x00cd")
        while conn.recv(timeout=15):
            pass
    with TlsServer(cert=pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        at = len(drv.uart.wire_rx)
        assert drv.ssl_send(b"1") is True
        _seen(drv, at, b'+QSSLURC: "recv",0')
        time.sleep(0.2)                  # (the rest of the reply behind the first record)
        mark = _mark(drv)
        assert drv.ssl_recv(1500) is None
        assert _since(drv, mark)[1].endswith(b"\r\n+QSSLRECV: 600\r\n" + big + b"\r\n\r\nOK\r\n")
        assert drv.ssl_recv(1500) == b"0"
        at = len(drv.uart.wire_rx)
        assert drv.ssl_send(b"2") is True
        _seen(drv, at, b'+QSSLURC: "recv",0')
        time.sleep(0.2)                  # (the rest of the reply behind the first record)
        mark = _mark(drv)
        assert drv.ssl_recv(100) is None
        assert drv.text == b"\r\n+QSSLRECV: 5\r\nab"
        assert _since(drv, mark)[1].endswith(b"\r\n+QSSLRECV: 5\r\nab\x00cd\r\n\r\nOK\r\n")
        assert drv.close_ssl_socket() is True


def test_byte_paced_uart_whole_session_keeps_every_byte_where_it_belongs(driver_path, emulator, pki):
    """The same code on a real 115200-baud UART: every byte arrives on its own, ~87 us apart, so
    the LF of each "\\r\\n" comes after the CR that opened CONNECT / the "> " prompt.  The LF is
    the command line's, never data: the uploaded ca_cert.pem is exactly the PEM (AT+QFDWL), the
    server gets exactly "GET /\\r\\n" and nothing else, and the whole session works."""
    uart = PacedUart(driver_path)
    drv = BG96(uart)
    try:
        _ready(drv)
        ca = pki.ca.cert_pem
        assert drv.init_ssl(1, ca, b"", b"")[0] is True
        assert (f"\r\n+QFUPL: {len(ca)},{xor16(ca):x}\r\n".encode()) in bytes(uart.wire_rx)
        got: list = []
        with _reply_server(b"ok", got, cert=pki.server) as server:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
            assert drv.open_ssl_socket(HOST, PORT) is True
            at = len(drv.uart.wire_rx)
            assert drv.ssl_send(b"GET /\r\n") is True
            server.wait_for(lambda: got)
            assert got == [b"GET /\r\n"]
            _seen(drv, at, b'+QSSLURC: "recv",0')
            assert drv.ssl_recv(10) == b"2\r\nok"
            assert drv.close_ssl_socket() is True
            conn = server.wait_done()
            assert bytes(conn.received) == b"GET /\r\n"
        down = _uart_at(uart, b'AT+QFDWL="ca_cert.pem"')
        assert down == (b"\r\nCONNECT\r\n" + ca
                        + f"\r\n+QFDWL: {len(ca)},{xor16(ca):x}\r\n\r\nOK\r\n".encode())
    finally:
        uart.close()


def test_module_errors_dns_busy_id_and_missing_ca_file(bg96, emulator, pki):
    """The open's error paths as the driver sees them.  An unresolvable name: OK then
    "+QSSLOPEN: 0,565" (errorCode 565).  A second open on client 0 while it is connected: a
    plain ERROR (no ": ", errorCode stays -1; QIGETERROR 563).  cacert naming a file that was
    deleted: the open is OK then "+QSSLOPEN: 0,552", no TCP connection made."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    assert drv.open_ssl_socket("no-such-host.invalid", 443) is False
    assert drv.error_code == 565
    assert drv.text == b"\r\nOK\r\n\r\n+QSSLOPEN: 0,565\r\n"
    with _reply_server(b"R", [], cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        assert drv.open_ssl_socket(HOST, PORT) is False
        assert (drv.text, drv.error_code) == (b"\r\nERROR\r\n", -1)   # + its 1 s tail
        assert _uart_at(drv.uart, b"AT+QIGETERROR") == \
            b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
        assert drv.close_ssl_socket() is True
        assert drv.delete_file(CA_NAME) is True
        assert drv.open_ssl_socket(HOST, PORT) is False
        assert drv.error_code == 552
        assert drv.text == b"\r\nOK\r\n\r\n+QSSLOPEN: 0,552\r\n"
        assert len(server.connections) == 1                # no TCP for the missing file


def test_send_lengths_0_and_1461_are_refused_and_the_payload_is_dropped(bg96, emulator, pki):
    """AT+QSSLSEND=0,1461 is ERROR (range 1-1460; so is =0,0, what an empty payload's strlen
    gives): the driver resends it 3 times, then writes the payload into command state anyway (its
    TIMEOUT waiting for SEND OK counts as success); the module drops those bytes, and the
    session still works: the next 2-byte send arrives alone."""
    drv = bg96
    _ready(drv)
    assert drv.set_ssl_certificate(1, "", "", "") is True            # seclevel 0
    got: list = []
    with _reply_server(b"R", got, cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        mark = _mark(drv)
        assert drv.ssl_send(b"z" * 1461) is True
        sent, rx = _since(drv, mark)
        assert sent == _cmd("+QSSLSEND=0,1461") * 3 + b"z" * 1461
        assert rx == b"\r\nERROR\r\n" * 3
        assert _uart_at(drv.uart, b"AT+QSSLSEND=0,0") == b"\r\nERROR\r\n"     # 0: out of range too
        assert drv.ssl_send(b"ok") is True
        server.wait_for(lambda: got)
        assert got == [b"ok"]
        assert drv.close_ssl_socket() is True
        assert bytes(server.wait_done().received) == b"ok"


def test_ca_bundle_over_the_default_upload_size_verifies_the_server(bg96, emulator, pki):
    """A CA bundle (the trusted CA after other CAs, 10 certificates, over QFUPL's 10240-byte
    default) uploaded the driver's way, AT+QFUPL="ca_cert.pem",<n> with no timeout: the
    <file_size> given is the size, the file is whole, and the open verifies the server against
    the CA at the end of the bundle."""
    drv = bg96
    _ready(drv)
    bundle = pki.wrong_ca.cert_pem * 9 + pki.ca.cert_pem
    assert len(bundle) > 10240
    mark = _mark(drv)
    assert drv.init_ssl(1, bundle, b"", b"")[0] is True
    assert f"\r\nCONNECT\r\n\r\n+QFUPL: {len(bundle)},{xor16(bundle):x}\r\n\r\nOK\r\n".encode() \
        in _since(drv, mark)[1]
    with _reply_server(b"v", [], cert=pki.server) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is True
        server.wait_handshake()
        assert drv.close_ssl_socket() is True


def test_modem_clock_set_by_devclock_decides_the_certificate_dates(bg96, emulator, pki):
    """validity_check false = "ignorelocaltime",1,0: certificate dates are checked at the modem
    clock.  DevClock(WRITE) puts it in 2019 (AT+CCLK="19/02/20,10:00:00+32" OK; DevClock(READ)
    gives back the quoted string): the server's certificate (valid from yesterday) is not valid
    yet, +QSSLOPEN: 0,566, and QueryLastErrorCode reads "566,socket connection failed".  The
    clock set back to now (the computer's time in +32 quarters, as read before) and the same open succeeds."""
    drv = bg96
    _ready(drv)
    assert drv.init_ssl(1, pki.ca.cert_pem, b"", b"")[0] is True
    now = drv.dev_clock_read()
    assert now.startswith(b'"') and now.endswith(b'+32"') and len(now) == 22
    assert drv.dev_clock_write("19/02/20,10:00:00+32") is True
    assert drv.dev_clock_read()[:12] == b'"19/02/20,10'
    import datetime
    utc_now = datetime.datetime.now(datetime.timezone.utc)
    recent = pki.issue_window("h_drv2_recent", utc_now - datetime.timedelta(days=1),
                              utc_now + datetime.timedelta(days=30))
    with _reply_server(b"t", [], cert=recent) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT) is False
        assert drv.error_code == 566
        assert drv.text == b"\r\nOK\r\n\r\n+QSSLOPEN: 0,566\r\n"
        assert drv.query_last_error() == b"566,socket connection failed\r\n\r\nOK"
        assert drv.dev_clock_write(now.strip(b'"').decode()) is True
        assert drv.open_ssl_socket(HOST, PORT) is True
        server.wait_handshake()
        assert drv.close_ssl_socket() is True


def test_transparent_escape_then_driver_commands_and_ato(bg96, emulator, pki):
    """The application leaves transparent mode the only way this library allows, by writing
    "+++" with 1 s of silence either side (it has no escape function): OK, the connection stays.
    QuerySSLSocketStatus then shows state 2, access mode 2; the server's bytes that come now
    wait (no URC) and SSLSocketSendData still works from command state ("> ", SEND OK, the
    server gets them); ATO returns: CONNECT, then the waiting bytes first."""
    drv = bg96
    _ready(drv)
    assert drv.set_ssl_certificate(1, "", "", "") is True            # seclevel 0
    got: list = []

    def handler(conn):
        got.append(conn.recv(timeout=15))
        got.append(conn.recv(timeout=15))
        conn.sendall(b"while-away")
        while conn.recv(timeout=15):
            pass
    with TlsServer(cert=pki.server, handler=handler) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert drv.open_ssl_socket(HOST, PORT, mode=2) is True
        drv.uart.write(b"online")
        server.wait_for(lambda: got)
        time.sleep(1.2)
        mark = _mark(drv)
        drv.uart.write(b"+++")
        _seen(drv, mark[1], b"\r\nOK\r\n")
        time.sleep(0.1)
        assert _since(drv, mark)[1] == b"\r\nOK\r\n"
        state = drv.query_ssl_state()
        assert state.startswith(b'0,"SSLClient","www.iottest.work",443,')
        assert state.endswith(b',2,1,0,2,"usbmodem",1')
        assert drv.ssl_send(b"cmd-mode") is True
        server.wait_for(lambda: len(got) >= 2)
        assert got == [b"online", b"cmd-mode"]
        time.sleep(0.5)
        mark = _mark(drv)
        assert b"QSSLURC" not in bytes(drv.uart.wire_rx)
        assert drv.send_and_search_multi("O", CONNECT, ERROR, 3) == SUCCESS
        time.sleep(0.5)
        rx = _since(drv, mark)[1]
        assert rx == b"\r\nCONNECT\r\nwhile-away"
        drv.uart.write(b"bye")
        assert server.wait_received(len(b"onlinecmd-modebye")) == b"onlinecmd-modebye"


@pytest.mark.parametrize("paced", [False, True], ids=["whole-writes", "byte-paced"])
def test_fixed_length_send_keeps_lf_ctrl_z_esc_at_and_plus_as_data(driver_path, emulator, pki,
                                                                   paced):
    """SSLSocketSendData(strlen) of a payload that starts with LF and holds Ctrl+Z, ESC, "AT",
    CR LF and "+++": in fixed-length mode all 11 bytes are data, written whole or byte by byte
    100 ms after the prompt; the server gets exactly them, the host "> " then SEND OK."""
    uart = (PacedUart if paced else Uart)(driver_path)
    drv = BG96(uart)
    try:
        _ready(drv)
        assert drv.set_ssl_certificate(1, "", "", "") is True
        payload = b"\n\x1a\x1bAT\r\n+++\r"
        got: list = []

        def handler(conn):
            data = b""
            while len(data) < len(payload):
                more = conn.recv(timeout=10)
                if not more:
                    break
                data += more
            got.append(data)
            while conn.recv(timeout=15):
                pass
        with TlsServer(cert=pki.server, handler=handler) as server:
            emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
            assert drv.open_ssl_socket(HOST, PORT) is True
            mark = _mark(drv)
            assert drv.ssl_send(payload) is True
            assert _since(drv, mark) == (_cmd("+QSSLSEND=0,11") + payload,
                                         b"\r\n> \r\nSEND OK\r\n")
            server.wait_for(lambda: got)
            assert got == [payload]
            assert drv.close_ssl_socket() is True
    finally:
        uart.close()
