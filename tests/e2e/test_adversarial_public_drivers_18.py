"""Adversarial tests: an eighteenth set of public host code that drives a Quectel module through the
SSL and file commands (AT+QFUPL / AT+QFDEL, AT+QSSLCFG, AT+QSSLSTATE, AT+QSSLOPEN, AT+QSSLSEND,
AT+QSSLRECV, AT+QSSLCLOSE, AT+QIGETERROR) and the TCP(IP) commands (AT+QIOPEN, AT+QISEND,
AT+QIRD, AT+QICLOSE), replayed through the pty with each program's own line endings, waits, read
chunking and parsers against loopback peers (OpenSSL -- Python's ssl -- for TLS).  (Earlier files:
test_adversarial_public_drivers.py .. _17.py; see _8.py's and _16.py's docstrings for the drivers
already replayed.)  Neither driver below was replayed before.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- Libelium's Waspmote API, Libelium/waspmoteapi at 02591a229096 ("API v048"): libraries/BG96/
  WaspBG96.cpp (v3.3, the BG96 "4G / NB-IoT" radio of the Waspmote) with utility/BG96_constants.h
  (the command tables: every command ends with a lone "\\r"), on waspmote-api/WaspUART.cpp,
  driven as the store's "NB_IoT 15 - SSL sockets" example sketch does (store file id 81006018;
  the store did not name its repository).  What the model keeps: WaspUART::sendCommand() --
  serialFlush() of the RX buffer (whatever came and was not read, URCs included, is gone), the
  command, delay(100), then ONE byte per loop pass into the 512-byte _buffer (511 bytes at most:
  past that the bytes stay unread while the patterns are still checked until the timeout), the
  patterns looked for anywhere in the buffer after each byte, ans1 first ("OK", "ERROR:" --
  also inside "+CME ERROR:" and "+QIGETERROR:" -- "ERROR\\r\\n"); waitFor() the same without
  flush or write; the driver's data go through sendCommand() too (flush, printString() up to a
  NUL, delay).  WaspBG96: ON() (AT until OK, AT+CMEE=1, ATE0), contextActivation(1,5)
  (AT+QIACT=1 then delay(1000), AT+QIACT? -> _ip by strchr('"'), memmove, strtok),
  setDNSServer(), getErrorCode() (waitFor("\\r\\n") after "ERROR:", strtoul), getTCPErrorCode()
  (AT+QIGETERROR waited for "OK" | "ERROR:" -- the answer's own name holds "ERROR:", so it is 99
  and the code is never read), manageSSL(STORE, CA) (AT+QFUPL="ca.pem",<strlen>,5 for "CONNECT";
  +CME ERROR: 407 -> AT+QFDEL and AT+QFUPL again; the PEM sent, "OK" wanted, "+QFUPL: <n>" looked
  for and ignored), openSocketSSL() (SSL context 1: sslversion 4, ciphersuite 0XFFFF, seclevel
  1, cacert "ca.pem"; getSocketStatusSSL() must fail -- no socket -- else 5; AT+QSSLOPEN=1,1,
  <id>,"<host>",<port>,0 for "OK", waitFor("+QSSLOPEN: ") and waitFor("\\r"), strtok: the second
  field is _socketerror, printed and NOT returned: the function returns 0 either way),
  getSocketStatusSSL() (AT+QSSLSTATE=<id>, strtok of the line from "+QSSLSTATE: " -- the first
  call's delimiter set is every character of '+QSSLSTATE: ",\\r\\n' --, ten fields, remoteIp
  strncpy()d into 16 bytes), sendSSL() (a socket state check on the TCP table, never filled;
  AT+QSSLSEND=<id>,<n> for ">", the data for "SEND OK", then waitFor('+QSSLURC: "recv",', 10 s),
  delay(1000)), receiveSSL() (AT+QSSLRECV=<id> -- no <readlen> -- for "\\r\\nOK"),
  closeSocketSSL() (AT+QSSLSTATE: gone or state 4 -> 0 at once, without AT+QSSLCLOSE; else
  AT+QSSLCLOSE=<id> and AT+QSSLSTATE until the socket is gone).  The driver's delay(1000)s are
  SECOND here (nothing is read during them and the next command's flush drops what came).

- ST's "C2C" BG96 driver (MCD Application Team, a port of ST's ug96.c for the UG96), as carried by
  chrome777/STM32L476RC_BG96 at 79ace1c84656 Application/BG96/bg96_m.c + bg96_m.h + bg96_conf.h
  (BG96_MAX_SOCKETS 1, BG96_CMD_SIZE 256, 1460 / 1500 data buffers) over bg96_io.c (the UART
  interrupt fills a 1500-byte ring; IO_ReceiveOne() takes one byte; IO_FlushBuffer() empties
  it).  What the model keeps: every command + "\\r\\n"; AT_RetrieveData() -- one byte at a time
  from the ring; with a length, exactly that many bytes; without, each byte is fed to a naive
  matcher per keyword of ReturnKeywords[] (table order: "SEND OK\\r\\n", ">", "QIRD: ",
  "QISEND: ", "POWERED DOWN\\r\\n", 'closed"', 'recv"', 'incoming full"', 'incoming"',
  'pdpdeact"', 'dnsgip"', "ERROR\\r\\n", "CME ERROR:", "SEND FAIL\\r\\n", "OK\\r\\n", "OPEN:",
  "ready\\r\\n", "\\r\\n"; a mismatch resets the keyword's index to 0 before the byte is tried as
  its first character) and returns at the first keyword completed that the caller scans for, the
  rest left in the ring; the timeout raised to 2*(len+15)*8000/115200 ms; AT_ExecuteCommand(),
  AT_RetrieveUrc() (the URC scan; "recv": 3 bytes, the id by ParseNumber() from the second, one
  more byte for a two-digit id, then the LF), BG96_Init() (AT every 500 ms until OK, AT&F0,
  AT+IPR?, AT+IFC?, ATV1, ATE0, AT+CMEE=1, AT+GMI / GMM / GMR / GSN -- each the first line after
  the first CR LF, strncpy()d into 10 / 6 / 16 / 16 bytes --, 2 s, AT+CPIN? "+CPIN: READY",
  AT+CIMI, AT+QCCID, AT+CFUN=1), BG96_ConfigureAP(), BG96_Activate(), BG96_GetActiveIpAddresses()
  (ParseIP() after the first '"' past offset 2), BG96_OpenClientConnection() (flush; AT+QIOPEN=
  <ctx>,<id>,"TCP","<url>",<rport>,<lport>,<mode> scanned for "OPEN:" or ERROR; then exactly 6
  bytes, the error by ParseNumber() at their offset 3, 2 more bytes when it is not 0),
  BG96_SendData() (AT+QISEND=<id>,<n> for ">", the bytes, "SEND OK" | "SEND FAIL" | ERROR),
  BG96_ReceiveData() in buffer mode (UnreadLength left over: the request cut to it, no URC wait;
  else AT_RetrieveUrc() -- its result unused --; AT+QIRD=<id>,<n> for "QIRD: ", the length up to
  CR LF, exactly that many bytes, "OK\\r\\n", then AT+QIRD=<id>,0 whose three numbers ParseQIRD()
  writes through &ComulatedQirdData into the three consecutive uint16 fields ComulatedQirdData,
  HaveReadLength, UnreadLength), BG96_CloseClientConnection() (flush; AT+QISEND=<id>,0 until
  ParseQISEND()'s third number is 0, at most 5.5 s; AT+QICLOSE=<id>,15).  The driver's 50 ms /
  350 ms waits for answers that a module gives at once are widened by SLOW (a loaded test machine
  is slower than a BG96); the 2 s pause before AT+CPIN? is SECOND.

Every host name dialled is routed to 127.0.0.1; no test asserts an upper bound on time.  Where a
driver assumes something the module does not do, the test asserts what the module does and names
the driver's fault.
"""
from __future__ import annotations

import os
import re
import select
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from tests.e2e.socket_support import raw_drain, raw_open

SECOND = 0.25          # the drivers' delay(1000) / 2 s pauses: nothing is read during them
SLOW = 4               # ST's 50 ms / 350 ms answer waits, widened for a loaded machine


def cstr(data: bytes) -> bytes:
    """What the C string functions see of a buffer: up to its first NUL."""
    return bytes(data).split(b"\0", 1)[0]


class Strtok:
    """C strtok() with its hidden state (one per driver: the state survives between calls)."""

    def __init__(self) -> None:
        self.rest: bytes | None = None

    def __call__(self, s: bytes | None, delims: bytes) -> bytes | None:
        if s is not None:
            self.rest = cstr(s)
        if self.rest is None:
            return None
        i = 0
        while i < len(self.rest) and self.rest[i] in delims:
            i += 1
        if i == len(self.rest):
            self.rest = None
            return None
        j = i
        while j < len(self.rest) and self.rest[j] not in delims:
            j += 1
        token = self.rest[i:j]
        self.rest = self.rest[j + 1:] if j < len(self.rest) else None
        return token


def strtoul(s: bytes | None) -> int:
    m = re.match(rb"\s*[+-]?\d+", s or b"")
    return int(m.group(0)) if m else 0


# =================================================================================================
# Libelium waspmoteapi: WaspUART + WaspBG96 (v3.3)
# =================================================================================================
OK, ERROR_CODE, ERROR = b"OK", b"ERROR:", b"ERROR\r\n"     # sBG96_OK / sBG96_ERROR_CODE / sBG96_ERROR


class WaspBG96:
    """WaspUART + WaspBG96 over the pty.  `written` logs every command (not the data), `answers`
    each sendCommand()/waitFor() result, `dropped` what each serialFlush() threw away."""

    BUFFER_SIZE = 512                 # RADIO_BG96_UART_SIZE
    DEF_DELAY = 0.100                 # DEF_COMMAND_DELAY
    DEF_TIMEOUT = 5.0                 # DEF_COMMAND_TIMEOUT
    SEND_OK_WAIT = 5.0                # sendSSL(): the data's wait for "SEND OK"
    RECV_URC_WAIT = 10.0              # sendSSL(): the wait for the server's '+QSSLURC: "recv",'

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.rx = bytearray()          # the UART's RX buffer: arrived, not yet serialRead()
        self.buffer = b""              # _buffer (its _length bytes)
        self.strtok = Strtok()
        self.written: list[bytes] = []
        self.answers: list[tuple[bytes, int]] = []
        self.dropped: list[bytes] = []
        self.transcript = bytearray()  # every byte that came, for the tests
        self.error_code: int | None = None
        self.socket_error: int | None = None
        self.ip = b""
        self.file_verified: bool | None = None
        self.ssl_status: dict = {}
        self.tcp_state = 0             # socketStatus[id].state: only getSocketStatus() (TCP) sets it

    def close(self) -> None:
        os.close(self.fd)

    # -- WaspUART ------------------------------------------------------------------------------
    def _pull(self, wait: float = 0.0) -> None:
        chunk = raw_drain(self.fd, wait)
        self.rx += chunk
        self.transcript += chunk

    def _flush(self) -> None:                          # serialFlush(_uart)
        self._pull()
        if self.rx:
            self.dropped.append(bytes(self.rx))
        self.rx.clear()

    def _print(self, data: bytes) -> None:             # printString(): up to the NUL
        view = memoryview(cstr(data))
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)

    def _collect(self, answers: list[bytes], timeout: float) -> int:
        buf = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.rx:
                self._pull(0.002)
            if self.rx and len(buf) < self.BUFFER_SIZE - 1:
                buf.append(self.rx.pop(0))
            for n, answer in enumerate(answers, 1):
                if answer in buf:
                    self.buffer = bytes(buf)
                    return n
        self.buffer = bytes(buf)
        return 0

    def send_command(self, command: bytes | str, answers: list[bytes], timeout: float | None = None,
                     log: bool = True) -> int:
        raw = command.encode("latin-1") if isinstance(command, str) else command
        self._flush()
        self._print(raw)
        if log:
            self.written.append(raw)
        time.sleep(self.DEF_DELAY)
        answer = self._collect(answers, self.DEF_TIMEOUT if timeout is None else timeout)
        self.answers.append((raw if log else b"<data>", answer))
        return answer

    def wait_for(self, answers: list[bytes], timeout: float | None = None) -> int:
        answer = self._collect(answers, self.DEF_TIMEOUT if timeout is None else timeout)
        self.answers.append((b"<waitFor>", answer))
        return answer

    # -- WaspBG96 ------------------------------------------------------------------------------
    def get_error_code(self) -> int:
        if self.wait_for([b"\r\n"], 3.0) == 0:
            return 1
        self.error_code = strtoul(self.strtok(self.buffer, b" \r\n"))
        return 0

    def get_tcp_error_code(self) -> int:
        answer = self.send_command("AT+QIGETERROR\r", [OK, ERROR_CODE, ERROR], 2.0)
        return 0 if answer == 1 else 99

    def on(self) -> int:
        answer = 0
        for _ in range(15):
            answer = self.send_command("AT\r", [OK], 1.0)
            if answer:
                break
        if answer == 0:
            return 1
        for code, command in ((2, "AT+CMEE=1\r"), (3, "ATE0\r")):
            answer = 0
            for _ in range(3):
                answer = self.send_command(command, [OK, ERROR], 0.5)
                if answer:
                    break
            if answer != 1:
                return code
        return 0

    def context_activation(self, mode: int = 1, retries: int = 5) -> int:
        answer = 0
        while retries > 0 and answer != 1:
            answer = self.send_command(f"AT+QIACT={mode}\r", [OK, ERROR_CODE, ERROR], 5.0)
            retries -= 1
            time.sleep(SECOND)
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            return 1
        if mode == 1:
            if self.send_command("AT+QIACT?\r", [OK, ERROR_CODE, ERROR], 5.0) == 1:
                buf = cstr(self.buffer)
                quote = buf.find(b'"')
                if quote >= 0:                       # memmove() of strlen(pointer) bytes
                    tail = buf[quote + 1:]
                    buf = tail + buf[len(tail):]
                token = self.strtok(buf, b' "\r\n')
                if token is not None:
                    self.ip = token[:15]
        return 0

    def set_dns_server(self, primary: str, secondary: str) -> int:
        answer = self.send_command(f'AT+QIDNSCFG=1,"{primary}","{secondary}"\r', [OK, ERROR_CODE, ERROR], 2.0)
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            return 1
        return 0

    def manage_ssl_store_ca(self, data: bytes) -> int:
        """manageSSL(id, SSL_ACTION_STORE, SSL_TYPE_CA_CERT, data): the file is "ca.pem"."""
        name = "ca.pem"
        upload = f'AT+QFUPL="{name}",{len(cstr(data))},5\r'
        answer = self.send_command(upload, [b"CONNECT", ERROR_CODE, ERROR])
        if answer != 1 and answer == 2:
            self.get_error_code()
            if self.error_code == 407:
                if self.send_command(f'AT+QFDEL="{name}"\r', [OK, ERROR_CODE, ERROR]) == 1:
                    self.send_command(upload, [b"CONNECT", ERROR_CODE, ERROR])
        verify = b"+QFUPL: %d" % len(cstr(data))
        answer = self.send_command(data, [OK, ERROR_CODE, ERROR], log=False)
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            return 2
        self.file_verified = verify in self.buffer
        return 0

    def get_socket_status_ssl(self, socket_id: int) -> int:
        status = {"id": 0, "state": 0, "local_port": 0, "remote_port": 0, "remote_ip": b""}
        self.ssl_status = status
        answer = self.send_command(f"AT+QSSLSTATE={socket_id}\r", [OK, ERROR_CODE, ERROR])
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            elif answer == 3:
                self.get_tcp_error_code()
            return 1
        buf = cstr(self.buffer)
        at = buf.find(b"+QSSLSTATE: ")
        if at < 0:
            return 1                                  # "Socket not open"
        token = self.strtok(buf[at:], b'+QSSLSTATE: ",\r\n')
        for i in range(10):
            if token is None:
                return 1
            if i == 0:
                status["id"] = strtoul(token)
            elif i == 2:
                status["remote_ip"] = token[:16]      # strncpy(remoteIp, pointer, 16)
            elif i == 3:
                status["remote_port"] = strtoul(token)
            elif i == 4:
                status["local_port"] = strtoul(token)
            elif i == 5:
                status["state"] = strtoul(token)
            token = self.strtok(None, b' ",\r\n')
        return 0

    def open_socket_ssl(self, socket_id: int, host: str, port: int) -> int:
        for code, command in ((1, 'AT+QSSLCFG="sslversion",1,4\r'),
                              (2, 'AT+QSSLCFG="ciphersuite",1,0XFFFF\r'),
                              (3, 'AT+QSSLCFG="seclevel",1,1\r'),
                              (4, 'AT+QSSLCFG="cacert",1,"ca.pem"\r')):
            answer = self.send_command(command, [OK, ERROR_CODE, ERROR], 5.0)
            if answer != 1:
                if answer == 2:
                    self.get_error_code()
                return code
        if self.get_socket_status_ssl(socket_id) == 0:
            return 5                                  # "Socket is already opened"
        answer = self.send_command(f'AT+QSSLOPEN=1,1,{socket_id},"{host}",{port},0\r',
                                   [OK, ERROR_CODE, ERROR], 5.0)
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            return 6
        if self.wait_for([b"+QSSLOPEN: "], 15.0) == 0:
            return 7
        if self.wait_for([b"\r"], 5.0) == 0:
            return 8
        token = self.strtok(self.buffer, b",")
        for i in range(2):
            if token is None:
                return 99
            if i == 1:
                self.socket_error = strtoul(token)    # printed ("Error socket: ...") only
            token = self.strtok(None, b" ,\r\n")
        self.get_socket_status_ssl(socket_id)
        return 0

    def send_ssl(self, socket_id: int, data: bytes) -> int:
        if self.get_socket_status_ssl(socket_id) != 0:
            return 1
        if self.tcp_state in (1, 3, 4):               # socketStatus[], the TCP table
            return 2
        answer = self.send_command(f"AT+QSSLSEND={socket_id},{len(cstr(data))}\r",
                                   [b">", ERROR_CODE, ERROR], 2.0)
        if answer == 3:
            self.get_tcp_error_code()
        answer = self.send_command(data, [b"SEND OK", ERROR_CODE, ERROR], self.SEND_OK_WAIT, log=False)
        if answer == 3:
            self.get_tcp_error_code()
        self.wait_for([b'+QSSLURC: "recv",', ERROR_CODE, ERROR], self.RECV_URC_WAIT)
        time.sleep(SECOND)
        return 0

    def receive_ssl(self, socket_id: int) -> int:
        answer = self.send_command(f"AT+QSSLRECV={socket_id}\r", [b"\r\nOK", ERROR_CODE, ERROR], 5.0)
        if answer != 1:
            self.get_tcp_error_code()
        # (strstr() for "+QSSLRECV: " and strtok() of its length follow; on the buffer the
        # AT+QIGETERROR left there it finds nothing and strtok(NULL...) goes on from wherever
        # the last tokenization stopped: an undefined length, not modelled)
        return 0

    def close_socket_ssl(self, socket_id: int) -> int:
        answer = self.get_socket_status_ssl(socket_id)
        if answer == 1 or self.ssl_status["state"] == 4:
            return 0
        answer = self.send_command(f"AT+QSSLCLOSE={socket_id}\r", [OK, ERROR_CODE, ERROR], 12.0)
        if answer != 1:
            if answer == 2:
                self.get_error_code()
            return 1
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            answer = self.get_socket_status_ssl(socket_id)
            if answer != 1:
                return 2
            return 0
        return 3


LIBELIUM_HOST = "test.libelium.com"
FRAME = b"<=>\x80\x03#35690394121#NB_IOT_TCP#0#TIME:10-20-30#"
REQUEST = (b"GET /getpost_frame_parser.php?frame=" + FRAME.hex().upper().encode()
           + b" HTTP/1.1\r\nHost: test.libelium.com\r\nContent-Length: 0\r\n\r\n")
REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nframe: ok"
_CERTS: dict = {}


def libelium_cert(pki, wrong: bool = False):
    """A server certificate for test.libelium.com from the run's CA (or from the wrong CA)."""
    key = "wrong" if wrong else "right"
    if key not in _CERTS:
        _CERTS[key] = pki.issue(f"libelium-{key}", LIBELIUM_HOST, ca=pki.wrong_ca if wrong else None)
    return _CERTS[key]


def http_server(close_after: bool):
    """Reads one request up to its blank line, answers REPLY; then waits for the client's end
    (or sends close_notify and closes at once)."""
    def handler(conn):
        while b"\r\n\r\n" not in conn.received:
            if not conn.recv(timeout=10):
                return
        conn.sendall(REPLY)
        if close_after:
            conn.send_close_notify()
            return
        while conn.recv():
            pass
    return handler


@pytest.fixture
def wasp(driver_path, strict_log):
    """The sketch's BG96 object on a fresh module (echo on) after ON(), contextActivation(1,5)
    and setDNSServer("8.8.8.8","8.8.4.4")."""
    node = WaspBG96(driver_path)
    try:
        assert node.on() == 0
        assert node.context_activation(1, 5) == 0
        assert node.set_dns_server("8.8.8.8", "8.8.4.4") == 0
        yield node
    finally:
        node.close()


def test_libelium_nb_iot_15_ssl_sockets_sketch_end_to_end(wasp, emulator, pki):
    """The sketch's loop() once: manageSSL() stores the CA as "ca.pem" (AT+QFUPL ..., CONNECT, the
    PEM, "+QFUPL: <n>,<sum>" then OK), openSocketSSL(0, "test.libelium.com", 443) verifies the
    server with it (seclevel 1) and gets +QSSLOPEN: 0,0; getSocketStatusSSL() reads the module's
    AT+QSSLSTATE line field by field: client 0, the name as dialled (cut to 16 bytes by the
    driver's strncpy()), 443, the local port the server really sees, state 2.  sendSSL() sends
    the HTTP frame request (the server gets exactly it) and finds the '+QSSLURC: "recv",' of the
    reply.  receiveSSL(): AT+QSSLRECV=0 without <readlen> is ERROR and AT+QIGETERROR's own name
    holds "ERROR:", so the driver stops reading at "+QIGETERROR:"; the module's full answer
    (552, invalid parameter, OK) is what the next command's flush throws away.  The reply was
    never read -- the driver's fault --; closeSocketSSL(): state 2, AT+QSSLCLOSE=0 OK, then
    AT+QSSLSTATE empty: 0, and the server sees close_notify."""
    node = wasp
    assert node.ip and re.fullmatch(rb"\d+\.\d+\.\d+\.\d+", node.ip)
    with TlsServer(libelium_cert(pki), handler=http_server(close_after=False)) as server:
        emulator.router.add_map(LIBELIUM_HOST, 443, "127.0.0.1", server.port)
        assert node.manage_ssl_store_ca(pki.ca.cert_pem) == 0
        assert node.file_verified is True
        assert re.search(rb"\r\n\+QFUPL: %d,[0-9a-f]+\r\n\r\nOK$" % len(pki.ca.cert_pem), node.buffer)

        assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 0
        assert node.socket_error == 0
        conn = server.wait_handshake()
        assert conn.handshake_done and conn.sni is None          # ("sni" left at its default 0)
        assert node.ssl_status == {"id": 0, "state": 2, "remote_ip": b"test.libelium.co",
                                   "remote_port": 443, "local_port": conn.address[1]}

        assert node.send_ssl(0, REQUEST) == 0
        assert server.wait_received(len(REQUEST)) == REQUEST
        assert node.answers[-2:] == [(b"<data>", 1), (b"<waitFor>", 1)]
        assert node.buffer.endswith(b'+QSSLURC: "recv",')

        assert node.receive_ssl(0) == 0
        assert node.answers[-2:] == [(b"AT+QSSLRECV=0\r", 3), (b"AT+QIGETERROR\r", 2)]
        assert node.buffer == b"\r\n+QIGETERROR:"

        assert node.close_socket_ssl(0) == 0
        assert any(d.startswith(b" 552,invalid parameter\r\n\r\nOK\r\n") for d in node.dropped)
        assert server.wait_done().close_notify_received
    assert node.written == [
        b"AT\r", b"AT+CMEE=1\r", b"ATE0\r", b"AT+QIACT=1\r", b"AT+QIACT?\r",
        b'AT+QIDNSCFG=1,"8.8.8.8","8.8.4.4"\r',
        b'AT+QFUPL="ca.pem",%d,5\r' % len(pki.ca.cert_pem),
        b'AT+QSSLCFG="sslversion",1,4\r', b'AT+QSSLCFG="ciphersuite",1,0XFFFF\r',
        b'AT+QSSLCFG="seclevel",1,1\r', b'AT+QSSLCFG="cacert",1,"ca.pem"\r', b"AT+QSSLSTATE=0\r",
        b'AT+QSSLOPEN=1,1,0,"test.libelium.com",443,0\r', b"AT+QSSLSTATE=0\r",
        b"AT+QSSLSTATE=0\r", b"AT+QSSLSEND=0,%d\r" % len(REQUEST),
        b"AT+QSSLRECV=0\r", b"AT+QIGETERROR\r",
        b"AT+QSSLSTATE=0\r", b"AT+QSSLCLOSE=0\r", b"AT+QSSLSTATE=0\r"]


def test_libelium_second_boot_finds_ca_pem_407_deletes_and_uploads_it_again(driver_path, emulator, pki,
                                                                             strict_log):
    """The sketch on a module an earlier run left "ca.pem" in -- here another CA's, so only a
    real replacement lets the open verify.  AT+QFUPL="ca.pem",... is +CME ERROR: 407 (AT+CMEE=1
    from ON()): sendCommand() stops at "ERROR:", getErrorCode()'s waitFor("\\r\\n") reads
    " 407\\r\\n" and strtoul() gives 407; AT+QFDEL="ca.pem" OK; AT+QFUPL again CONNECT; the PEM,
    "+QFUPL: <n>,<sum>".  openSocketSSL() then verifies the server with the new file:
    +QSSLOPEN: 0,0, state 2."""
    host = Host(driver_path)
    try:
        assert host.upload("ca.pem", pki.wrong_ca.cert_pem, ",5").endswith(b"\r\nOK\r\n")
    finally:
        host.close()
    node = WaspBG96(driver_path)
    try:
        assert node.on() == 0
        assert node.context_activation(1, 5) == 0
        with TlsServer(libelium_cert(pki), handler=http_server(close_after=False)) as server:
            emulator.router.add_map(LIBELIUM_HOST, 443, "127.0.0.1", server.port)
            assert node.manage_ssl_store_ca(pki.ca.cert_pem) == 0
            assert node.error_code == 407
            assert node.file_verified is True
            assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 0
            assert node.socket_error == 0
            assert node.ssl_status["state"] == 2
            assert server.wait_handshake().handshake_done
            assert node.close_socket_ssl(0) == 0
        upload = b'AT+QFUPL="ca.pem",%d,5\r' % len(pki.ca.cert_pem)
        assert node.written[5:8] == [upload, b'AT+QFDEL="ca.pem"\r', upload]
        assert node.answers[5:9] == [(upload, 2), (b"<waitFor>", 1), (b'AT+QFDEL="ca.pem"\r', 1), (upload, 1)]
    finally:
        node.close()


def test_libelium_open_that_fails_verification_still_returns_0_and_send_never_prompts(wasp, emulator, pki):
    """The server's certificate is from another CA: +QSSLOPEN: 0,566 (socket connection failed;
    the module drops the client id).  openSocketSSL() parses 566 into _socketerror, prints it and
    returns 0 -- the driver's fault --; its closing AT+QSSLSTATE=0 is "OK" alone.  sendSSL():
    getSocketStatusSSL() finds no "+QSSLSTATE: " line, so it returns 1 before any AT+QSSLSEND;
    the server saw a failed handshake and no application data."""
    node = wasp
    with TlsServer(libelium_cert(pki, wrong=True), handler=http_server(close_after=False)) as server:
        emulator.router.add_map(LIBELIUM_HOST, 443, "127.0.0.1", server.port)
        assert node.manage_ssl_store_ca(pki.ca.cert_pem) == 0
        assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 0
        assert node.socket_error == 566
        assert node.buffer == b"\r\nOK"                      # the AT+QSSLSTATE=0 after it
        assert node.send_ssl(0, REQUEST) == 1
        conn = server.wait_done()
        assert not conn.handshake_done and conn.received == b""
    assert not any(cmd.startswith(b"AT+QSSLSEND") for cmd in node.written)
    assert node.written[-3:] == [b'AT+QSSLOPEN=1,1,0,"test.libelium.com",443,0\r', b"AT+QSSLSTATE=0\r",
                                 b"AT+QSSLSTATE=0\r"]


def test_libelium_peer_close_leaves_state_4_and_the_next_loop_writes_its_request_in_command_mode(
        wasp, emulator, pki):
    """The server answers and closes (close_notify, FIN).  sendSSL() finds the recv URC; the
    "closed" URC behind it goes with a later flush.  closeSocketSSL(): AT+QSSLSTATE=0 shows state
    4 (the note, 2.3.2: "closing" until AT+QSSLCLOSE), so the driver returns 0 WITHOUT closing.
    The sketch's next loop(): openSocketSSL(0) finds the id listed and returns 5 ("already
    opened") without an AT+QSSLOPEN, and the sketch goes on to sendSSL(): the id is listed, the
    state check looks at the (empty) TCP table, AT+QSSLSEND=0,<n> is ERROR (AT+QIGETERROR: 567,
    socket has been closed -- read only by the flush), and sendSSL() writes the HTTP request
    anyway, into command mode: its lines hold no "AT" and the module answers nothing (no ERROR,
    no SEND OK, no URC: the driver's 5 s and 10 s waits, which nothing ends, are cut to 0.5 s
    here).  The module still holds the reply for AT+QSSLRECV=0,1500 (sent through the driver's
    own sendCommand()), and AT+QSSLCLOSE=0 frees the id: the open after it succeeds on a second
    connection."""
    node = wasp
    with TlsServer(libelium_cert(pki), handler=http_server(close_after=True)) as server:
        emulator.router.add_map(LIBELIUM_HOST, 443, "127.0.0.1", server.port)
        assert node.manage_ssl_store_ca(pki.ca.cert_pem) == 0
        assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 0 and node.socket_error == 0
        assert node.send_ssl(0, REQUEST) == 0
        assert server.wait_done().close_reason
        assert node.receive_ssl(0) == 0
        assert node.close_socket_ssl(0) == 0
        assert node.ssl_status["state"] == 4
        assert node.written[-1] == b"AT+QSSLSTATE=0\r"

        assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 5
        assert node.ssl_status["state"] == 4
        assert node.written.count(b'AT+QSSLOPEN=1,1,0,"test.libelium.com",443,0\r') == 1
        node.SEND_OK_WAIT = node.RECV_URC_WAIT = 0.5
        n = len(node.answers)
        assert node.send_ssl(0, REQUEST) == 0
        assert node.answers[n:] == [(b"AT+QSSLSTATE=0\r", 1), (b"AT+QSSLSEND=0,%d\r" % len(REQUEST), 3),
                                    (b"AT+QIGETERROR\r", 2), (b"<data>", 0), (b"<waitFor>", 0)]
        assert node.dropped[-1].startswith(b" 567,socket has been closed\r\n\r\nOK\r\n")
        assert node.buffer == b""                     # nothing at all after the request's lines
        assert b'\r\n+QSSLURC: "closed",0\r\n' in node.transcript

        assert node.send_command("AT+QSSLRECV=0,1500\r", [b"\r\nOK", ERROR_CODE, ERROR]) == 1
        assert node.buffer == b"\r\n+QSSLRECV: %d\r\n%s\r\n\r\nOK" % (len(REPLY), REPLY)
        assert node.send_command("AT+QSSLCLOSE=0\r", [OK, ERROR_CODE, ERROR], 12.0) == 1
        assert node.open_socket_ssl(0, LIBELIUM_HOST, 443) == 0
        assert node.socket_error == 0 and node.ssl_status["state"] == 2
        assert server.wait_handshake(1).handshake_done
        assert node.close_socket_ssl(0) == 0
        assert node.written[-2:] == [b"AT+QSSLCLOSE=0\r", b"AT+QSSLSTATE=0\r"]
        assert [bytes(c.received) for c in server.connections] == [REQUEST, b""]


# =================================================================================================
# ST's C2C BG96 driver (bg96_m.c, from ug96.c)
# =================================================================================================
RET_NONE, RET_CRLF, RET_OK, RET_SIM_READY, RET_ARROW = 0x0, 0x1, 0x2, 0x4, 0x8
RET_SENT, RET_OPEN, RET_ERROR, RET_URC_CLOSED, RET_URC_RECV = 0x10, 0x20, 0x40, 0x80, 0x100
RET_URC_IN_FULL, RET_URC_INCOM, RET_URC_PDPDEACT, RET_URC_DNS = 0x200, 0x400, 0x800, 0x1000
RET_BUF_FULL, RET_READ, RET_CME_ERROR, RET_POWERED_DOWN, RET_SEND = 0x2000, 0x4000, 0x8000, 0x20000, 0x40000
KEYWORDS = [
    (RET_SENT, b"SEND OK\r\n"), (RET_ARROW, b">"), (RET_READ, b"QIRD: "), (RET_SEND, b"QISEND: "),
    (RET_POWERED_DOWN, b"POWERED DOWN\r\n"), (RET_URC_CLOSED, b'closed"'), (RET_URC_RECV, b'recv"'),
    (RET_URC_IN_FULL, b'incoming full"'), (RET_URC_INCOM, b'incoming"'), (RET_URC_PDPDEACT, b'pdpdeact"'),
    (RET_URC_DNS, b'dnsgip"'), (RET_ERROR, b"ERROR\r\n"), (RET_CME_ERROR, b"CME ERROR:"),
    (RET_BUF_FULL, b"SEND FAIL\r\n"), (RET_OK, b"OK\r\n"), (RET_OPEN, b"OPEN:"),
    (RET_SIM_READY, b"ready\r\n"), (RET_CRLF, b"\r\n")]
TOUT_SHORT, TOUT_300, TOUT_ATSYNC = 50 * SLOW, 350 * SLOW, 500
TOUT_5000, TOUT_15000, TOUT_150000 = 5500, 16500, 156000
INIT_OK, RECEIVE_OK, RECEIVE_INCOMPLETE, RECEIVE_COM_ERR = RET_OK, RET_OK, 0x01, 0x08
BUFFER_MODE = 0


def parse_number(buf: bytes, at: int = 0) -> tuple[int, int]:
    """ParseNumber(): (value, characters used)."""
    i, minus, total = at, False, 0
    if i < len(buf) and buf[i:i + 1] == b"-":
        minus, i = True, i + 1
    while i < len(buf) and 0x30 <= buf[i] <= 0x39:
        total = total * 10 + buf[i] - 0x30
        i += 1
    return (-total if minus else total), i - at


def parse_qird(buf: bytes, arr: list[int]) -> None:
    """ParseQIRD(): up to three numbers into arr (uint16), stopping at a CR."""
    buf, i, n = cstr(buf), 0, 0
    while i < len(buf):
        used = 1
        if buf[i:i + 1] != b",":
            value, used = parse_number(buf, i)
            arr[n] = value & 0xFFFF
            n += 1
        i += used
        if buf[i:i + 1] == b"\r" or n == 3:
            return


def parse_qisend_unacked(buf: bytes, unacked: int) -> int:
    """ParseQISEND(): the third number, if there is one."""
    buf, i, n = cstr(buf), 0, 0
    while i < len(buf):
        used = 1
        if buf[i:i + 1] != b",":
            value, used = parse_number(buf, i)
            n += 1
            if n == 3:
                unacked = value
        i += used
        if buf[i:i + 1] == b"\r" or n == 3:
            return unacked
    return unacked


class StBg96:
    """BG96Object_t and its functions; `written` logs every command (not the data), `urcs`
    AT_RetrieveUrc()'s results, `dropped` what each IO_FlushBuffer() emptied."""

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.ring = bytearray()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.reader = threading.Thread(target=self._irq, daemon=True, name="bg96-uart-irq")
        self.reader.start()
        self.cmd_resp = b""
        self.transcript = bytearray()    # every byte the interrupt took, for the tests' waits
        self.written: list[bytes] = []
        self.urcs: list[int] = []
        self.dropped: list[bytes] = []
        self.info: dict = {}
        self.sock = {"type": 0, "mode": BUFFER_MODE, "qird": [0, 0, 0], "uart_remaining": 0}
        self.ap_state = 0

    def close(self) -> None:
        self.stop.set()
        self.reader.join(2)
        os.close(self.fd)

    # -- bg96_io.c -----------------------------------------------------------------------------
    def _irq(self) -> None:                          # the RX interrupt filling the ring
        while not self.stop.is_set():
            readable, _, _ = select.select([self.fd], [], [], 0.02)
            if not readable:
                continue
            try:
                chunk = os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                continue
            with self.lock:
                self.ring += chunk
                self.transcript += chunk

    def receive_one(self) -> int | None:
        with self.lock:
            return self.ring.pop(0) if self.ring else None

    def flush(self) -> None:
        with self.lock:
            if self.ring:
                self.dropped.append(bytes(self.ring))
            self.ring.clear()

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)

    # -- bg96_m.c ------------------------------------------------------------------------------
    def retrieve(self, length: int, scan: int, timeout_ms: float, to_cmd_resp: bool = True):
        """AT_RetrieveData(): (return value, the bytes read into pData)."""
        timeout_ms = max(timeout_ms, 2 * (length + 15) * 8 * 1000 // 115200)
        if length == 0 and scan == RET_NONE:
            return 0, b""
        index = [0] * len(KEYWORDS)
        data = bytearray()
        ret = -1
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            c = self.receive_one()
            if c is None:
                time.sleep(0.0005)
                continue
            data.append(c)
            if length:
                if len(data) >= length:
                    ret = len(data)
                    break
                continue
            hit = None
            for x, (value, word) in enumerate(KEYWORDS):
                if index[x] >= len(word) or c != word[index[x]]:
                    index[x] = 0
                if c == word[index[x]]:
                    index[x] += 1
                    if index[x] >= len(word) and scan & value:
                        hit = value
                        break
            if hit is not None:
                ret = hit
                break
        else:
            if length and data:
                ret = len(data)
        if to_cmd_resp:
            self.cmd_resp = bytes(data)
        return ret, bytes(data)

    def execute(self, timeout_ms: float, cmd: str, resp: int) -> int:
        raw = cmd.encode("latin-1")
        self.written.append(raw)
        self.send(raw)
        return self.retrieve(0, resp, timeout_ms)[0]

    def retrieve_urc(self, timeout_ms: float) -> int:
        expected = (RET_URC_CLOSED | RET_URC_RECV | RET_URC_IN_FULL | RET_URC_INCOM | RET_URC_PDPDEACT
                    | RET_URC_DNS)
        check = self.retrieve(0, expected, timeout_ms)[0]
        if check in (RET_URC_CLOSED, RET_URC_PDPDEACT):
            self.retrieve(0, RET_CRLF, TOUT_SHORT)
        elif check == RET_URC_RECV:
            ret, _ = self.retrieve(3, RET_NONE, TOUT_SHORT)
            if ret > 0 and parse_number(self.cmd_resp, 1)[1] == 2:
                self.retrieve(1, RET_NONE, TOUT_SHORT)
            self.retrieve(1, RET_NONE, TOUT_SHORT)     # buffer mode: the LF
        elif check not in (RET_URC_IN_FULL, RET_URC_INCOM):
            check = -1                                  # (dnsgip not used here)
        self.urcs.append(check)
        return check

    def first_line(self) -> bytes:
        """strstr(CmdResp, "\\r\\n") + 2, then strtok(..., "\\r\\n")."""
        resp = cstr(self.cmd_resp)
        return Strtok()(resp[resp.find(b"\r\n") + 2:], b"\r\n") or b""

    def init(self) -> int:
        self.flush()
        ret, sync, tick = -1, 0, time.monotonic()
        while sync < 10 and ret != RET_OK:
            if time.monotonic() - tick > TOUT_ATSYNC / 1000:
                ret = self.execute(TOUT_SHORT, "AT\r\n", RET_OK | RET_ERROR)
                sync += 1
                tick = time.monotonic()
            time.sleep(0.001)
        fret = 0x20                                     # BG96_INIT_OTHER_ERR
        if ret != RET_OK:
            fret = 0x04                                 # BG96_INIT_RET_AT_ERR
        else:
            ret = self.execute(TOUT_300, "AT&F0\r\n", RET_OK | RET_ERROR)
            ret |= self.get_uart_config()
            ret |= self.execute(TOUT_SHORT, "ATV1\r\n", RET_OK | RET_ERROR)
            ret |= self.execute(TOUT_SHORT, "ATE0\r\n", RET_OK | RET_ERROR)
            ret |= self.execute(TOUT_300, "AT+CMEE=1\r\n", RET_OK | RET_ERROR)
        if ret == RET_OK:
            for key, cmd, size in (("manufacturer", "AT+GMI\r\n", 10), ("product", "AT+GMM\r\n", 6),
                                   ("firmware", "AT+GMR\r\n", 16), ("imei", "AT+GSN\r\n", 16)):
                ret = self.execute(TOUT_SHORT if key != "imei" else TOUT_300, cmd, RET_OK | RET_ERROR)
                if ret == RET_OK:
                    self.info[key] = self.first_line()[:size]
        if ret == RET_OK:
            time.sleep(SECOND)                          # "A tempo is required to get the SIM ready"
            ret = self.execute(TOUT_5000, "AT+CPIN?\r\n", RET_OK | RET_ERROR | RET_CME_ERROR)
            if ret == RET_OK and b"+CPIN: READY" in cstr(self.cmd_resp):
                self.info["sim"] = "ready"
                if self.execute(TOUT_300, "AT+CIMI\r\n", RET_OK | RET_ERROR | RET_CME_ERROR) == RET_OK:
                    self.info["imsi"] = self.first_line()[:16]
                if self.execute(TOUT_300, "AT+QCCID\r\n", RET_OK | RET_ERROR) == RET_OK:
                    resp = cstr(self.cmd_resp)
                    at = resp.find(b"+QCCID:") + len(b"+QCCID:") + 1      # + sizeof("+QCCID:")
                    self.info["iccid"] = (Strtok()(resp[at:], b"\r\n") or b"")[:20]
                fret = INIT_OK
        if self.execute(TOUT_15000, "AT+CFUN=1\r\n", RET_OK | RET_ERROR | RET_CME_ERROR) != RET_OK:
            fret = 0x20
        return fret

    def get_uart_config(self) -> int:
        ret = self.execute(TOUT_300, "AT+IPR?\r\n", RET_OK | RET_ERROR)
        if ret == RET_OK:
            resp = cstr(self.cmd_resp)
            self.info["baud"] = parse_number(resp, resp.find(b"+IPR:") + 6)[0]
        ret = self.execute(TOUT_300, "AT+IFC?\r\n", RET_OK | RET_ERROR)
        if ret == RET_OK:
            resp = cstr(self.cmd_resp)
            at = resp.find(b"+IFC:") + 6                                  # sizeof("+IPR:")
            rts, cts = parse_number(resp, at)[0], parse_number(resp, at + 2)[0]
            self.info["flow"] = (1 if rts == 2 else 0) | (2 if cts == 2 else 0)
        return ret

    def configure_ap(self, apn: str) -> int:
        ret = self.execute(TOUT_SHORT, f'AT+QICSGP=1,1,"{apn}","","",0\r\n', RET_OK | RET_ERROR)
        if ret == RET_OK:
            self.ap_state = 1
        return ret

    def activate(self) -> int:
        ret = RET_ERROR
        if self.ap_state == 1:
            ret = self.execute(TOUT_150000, "AT+QIACT=1\r\n", RET_OK | RET_ERROR)
            if ret == RET_OK:
                self.ap_state = 2
        return ret

    def get_active_ip(self) -> tuple[int, list[int]]:
        ret = self.execute(TOUT_150000, "AT+QIACT?\r\n", RET_OK | RET_ERROR)
        ip = [0, 0, 0, 0]
        if ret == RET_OK:
            resp = cstr(self.cmd_resp)
            text = resp[resp.find(b"+QIACT:") + 8:][:40]
            at = 2
            while True:
                at += 1
                if text[at:at + 1] == b'"' or at > 40:
                    break
            n, i = 0, at + 1
            while i < len(text) and n < 4:           # ParseIP(): numbers until the closing quote
                used = 1
                if text[i:i + 1] != b".":
                    ip[n], used = parse_number(text, i)
                    n += 1
                i += used
                if text[i:i + 1] == b'"':
                    break
        return ret, ip

    def open_client(self, conn_id: int, url: str, rport: int, lport: int = 0) -> int:
        self.flush()
        self.sock.update(type=0, mode=BUFFER_MODE, qird=[0, 0, 0], uart_remaining=0)
        cmd = f'AT+QIOPEN=1,{conn_id},"TCP","{url}",{rport},{lport},{BUFFER_MODE}\r\n'
        self.open_error = None
        if self.execute(TOUT_150000 // 2, cmd, RET_OPEN | RET_ERROR) == RET_OPEN:
            recv, _ = self.retrieve(6, RET_NONE, TOUT_SHORT)
            if recv > 0:
                self.open_error = parse_number(self.cmd_resp, 3)[0]
                if self.open_error != 0:
                    self.retrieve(2, RET_NONE, TOUT_SHORT)
                else:
                    return RET_OK
        return RET_ERROR

    def close_client(self, conn_id: int) -> int:
        self.flush()
        start, unacked = time.monotonic(), 1
        while time.monotonic() - start < TOUT_5000 / 1000 and unacked != 0:
            self.execute(TOUT_300, f"AT+QISEND={conn_id},0\r\n", RET_ERROR | RET_SEND)
            self.retrieve(0, RET_CRLF, TOUT_300)
            unacked = parse_qisend_unacked(self.cmd_resp, unacked)
            self.retrieve(0, RET_OK, TOUT_SHORT)
        self.unacked = unacked
        return self.execute(TOUT_5000, f"AT+QICLOSE={conn_id},15\r\n", RET_OK | RET_ERROR)

    def send_data(self, sock: int, data: bytes, timeout_ms: int = 1000) -> tuple[int, int]:
        ret = RET_ERROR
        if len(data) <= 1460:
            prompt = self.execute(timeout_ms, f"AT+QISEND={sock},{len(data)}\r\n", RET_ERROR | RET_ARROW)
            if prompt == RET_ARROW:
                self.send(data)
                ret = self.retrieve(0, RET_SENT | RET_BUF_FULL | RET_ERROR, timeout_ms)[0]
        return ret, (len(data) if ret == RET_SENT else 0)

    def receive_data(self, sock: int, requested: int, timeout_ms: int = 2000) -> tuple[int, bytes]:
        info = self.sock
        if requested > 1500:
            return 0x04, b""
        unread = info["qird"][2]
        if unread > 0:
            requested = min(requested, unread)
        else:
            self.retrieve_urc(timeout_ms)
        ret = self.execute(TOUT_300, f"AT+QIRD={sock},{requested}\r\n", RET_ERROR | RET_READ)
        if ret < 0 or ret == RET_ERROR:
            return RECEIVE_COM_ERR, b""
        self.retrieve(0, RET_CRLF, TOUT_300)
        parsed = parse_number(self.cmd_resp)[0]
        rcvlen, data = self.retrieve(parsed, RET_NONE, timeout_ms, to_cmd_resp=False)
        if rcvlen < 0:
            return RECEIVE_COM_ERR, b""
        if rcvlen != parsed:
            info["uart_remaining"] = parsed - rcvlen
            info["qird"][2] = (info["qird"][2] - rcvlen) & 0xFFFF
            return RECEIVE_INCOMPLETE, data
        info["uart_remaining"] = 0
        self.retrieve(0, RET_OK, TOUT_SHORT)
        self.execute(TOUT_300, f"AT+QIRD={sock},0\r\n", RET_ERROR | RET_READ)
        self.retrieve(0, RET_CRLF, TOUT_300)
        parse_qird(self.cmd_resp, info["qird"])
        self.retrieve(0, RET_OK, TOUT_SHORT)
        return RECEIVE_OK, data


C2C_HOST, C2C_PORT = "c2c.example", 5000        # bg96.h's BG96_SERVER_PORT


@pytest.fixture
def c2c(driver_path, strict_log):
    """ST's driver object on a fresh module (echo on), after BG96_Init(), BG96_ConfigureAP(),
    BG96_Activate()."""
    node = StBg96(driver_path)
    try:
        assert node.init() == INIT_OK
        assert node.configure_ap("internet") == RET_OK
        assert node.activate() == RET_OK
        yield node
    finally:
        node.close()


def test_st_c2c_init_reads_identity_uart_and_ip_as_the_module_reports_them(driver_path, strict_log):
    """BG96_Init() on the module as it comes up (echo on): the first AT after 500 ms, OK with its
    echo; AT&F0, AT+IPR? (115200), AT+IFC? (0,0: no flow control), ATV1, ATE0, AT+CMEE=1 all OK;
    the identity lines cut by the driver's own sizes (AT+GMR's 16 characters fill FW_Rev with no
    room for a NUL), AT+CPIN? READY, AT+CIMI, AT+QCCID (the value after "+QCCID: "), AT+CFUN=1.
    Then AT+QICSGP, AT+QIACT=1 and AT+QIACT? whose address ParseIP() takes apart.  Every value
    is the module's own answer to a plain host afterwards."""
    node = StBg96(driver_path)
    try:
        assert node.init() == INIT_OK
        assert node.configure_ap("internet") == RET_OK
        assert node.activate() == RET_OK
        ret, ip = node.get_active_ip()
        assert ret == RET_OK
    finally:
        node.close()
    assert node.written == [b"AT\r\n", b"AT&F0\r\n", b"AT+IPR?\r\n", b"AT+IFC?\r\n", b"ATV1\r\n",
                            b"ATE0\r\n", b"AT+CMEE=1\r\n", b"AT+GMI\r\n", b"AT+GMM\r\n", b"AT+GMR\r\n",
                            b"AT+GSN\r\n", b"AT+CPIN?\r\n", b"AT+CIMI\r\n", b"AT+QCCID\r\n", b"AT+CFUN=1\r\n",
                            b'AT+QICSGP=1,1,"internet","","",0\r\n', b"AT+QIACT=1\r\n", b"AT+QIACT?\r\n"]
    host = Host(driver_path)
    try:
        def value(cmd: str, prefix: bytes = b"") -> bytes:
            return re.search(rb"\r\n" + re.escape(prefix) + rb"([^\r\n]+)\r\n", host.at(cmd)).group(1)
        assert host.at("ATE0").endswith(b"OK\r\n")
        assert node.info == {
            "baud": int(value("AT+IPR?", b"+IPR: ")), "flow": 0,
            "manufacturer": value("AT+GMI")[:10], "product": value("AT+GMM")[:6],
            "firmware": value("AT+GMR")[:16], "imei": value("AT+GSN")[:16], "sim": "ready",
            "imsi": value("AT+CIMI")[:16], "iccid": value("AT+QCCID", b"+QCCID: ")[:20]}
        assert len(node.info["firmware"]) == 16 and node.info["product"] == b"EC25"
        assert ip == [int(x) for x in value("AT+QIACT?", b'+QIACT: 1,1,1,"').rstrip(b'"').split(b".")]
    finally:
        host.close()


AT_LOOKALIKE = b'{"t":1}\r\nOK\r\n> recv",0\r\n+QIRD: 5\r\nSEND OK\r\nclosed"\x00\xff\x1a\x1bERROR\r\n'


def test_st_c2c_tcp_echo_by_length_and_the_qird_bookkeeping(c2c, emulator):
    """BG96_OpenClientConnection(): the flush, AT+QIOPEN=1,0,"TCP",...,0,0, "OPEN:" matched in
    "+QIOPEN:" and the six bytes " 0,0\\r\\n" (error 0).  BG96_SendData() of bytes that look like
    the module's own framing (OK, '> ', 'recv"', "+QIRD: 5", SEND OK, 'closed"', NUL, Ctrl+Z,
    ESC, ERROR): '>' of the prompt, the bytes, SEND OK; the server gets them exactly.
    BG96_ReceiveData(1500): the URC scan stops at 'recv"' of '+QIURC: "recv",0', AT+QIRD=0,1500,
    "<n>\\r\\n", exactly n bytes -- the echo, byte for byte --, OK, then AT+QIRD=0,0 gives
    (n, n, 0) to ComulatedQirdData / HaveReadLength / UnreadLength.  Then a full 1460-byte block
    (the driver's BG96_TX_DATABUF_SIZE; 1461 it refuses itself): AT+QISEND=0,1460 takes it, and
    its echo -- in as many reads as the module has it in pieces, UnreadLength leading them -- is
    the block, the counters the sum of both exchanges with nothing unread.
    BG96_CloseClientConnection(): AT+QISEND=0,0's third number is 0 at once, AT+QICLOSE=0,15 OK;
    the server sees the end of the connection."""
    node = c2c
    with TcpServer("echo") as server:
        emulator.router.add_map(C2C_HOST, C2C_PORT, "127.0.0.1", server.port)
        n = len(node.written)
        assert node.open_client(0, C2C_HOST, C2C_PORT) == RET_OK and node.open_error == 0
        assert node.send_data(0, AT_LOOKALIKE) == (RET_SENT, len(AT_LOOKALIKE))
        assert server.wait_connection().wait_received(len(AT_LOOKALIKE), 5) == AT_LOOKALIKE
        assert node.receive_data(0, 1500) == (RECEIVE_OK, AT_LOOKALIKE)
        assert node.urcs == [RET_URC_RECV]
        assert node.sock["qird"] == [len(AT_LOOKALIKE)] * 2 + [0]

        block = bytes((i * 131 + 17) % 256 for i in range(1460))      # BG96_TX_DATABUF_SIZE
        assert node.send_data(0, block) == (RET_SENT, 1460)
        assert node.send_data(0, block + b"!") == (RET_ERROR, 0)      # refused by the driver itself
        echoed = b""
        for _ in range(8):                    # the echo may come in pieces: UnreadLength follows them
            ret, data = node.receive_data(0, 1500)
            assert ret == RECEIVE_OK
            echoed += data
            if len(echoed) >= len(block):
                break
        assert echoed == block
        total = len(AT_LOOKALIKE) + len(block)
        assert node.sock["qird"] == [total, total, 0]
        assert node.close_client(0) == RET_OK and node.unacked == 0
        assert server.gone(0)
        assert node.written[n:n + 4] == [
            b'AT+QIOPEN=1,0,"TCP","c2c.example",5000,0,0\r\n', b"AT+QISEND=0,%d\r\n" % len(AT_LOOKALIKE),
            b"AT+QIRD=0,1500\r\n", b"AT+QIRD=0,0\r\n"]
        assert node.written[n + 4] == b"AT+QISEND=0,1460\r\n"
        assert node.written[-2:] == [b"AT+QISEND=0,0\r\n", b"AT+QICLOSE=0,15\r\n"]


def test_st_c2c_reads_a_burst_in_256_byte_pieces_following_qird_unread(c2c, emulator):
    """The application reads with Requestedlen 256.  The server answers "GIVE" with 700 bytes:
    the first BG96_ReceiveData() waits for the URC, AT+QIRD=0,256, then AT+QIRD=0,0 says
    700,256,444; the next two skip the URC wait (UnreadLength) and ask for 256 and then exactly
    188 (the request cut to what is unread), the counters 700,512,188 and 700,700,0.  "MORE"
    brings 50 bytes: a new recv URC (the buffer had been emptied), AT+QIRD=0,256 gives 50 and
    AT+QIRD=0,0 750,750,0.  The 750 bytes arrive whole and in order."""
    node = c2c
    burst = bytes((i * 7 + 3) % 256 for i in range(700))
    more = b"\r\n+QIRD: 9\r\nOK\r\n" + bytes(range(34))

    def behave(conn):
        for request, answer in ((b"GIVE", burst), (b"MORE", more)):
            got = b""
            while len(got) < len(request):
                chunk = conn.sock.recv(64)
                if not chunk:
                    return
                got += chunk
            conn.add(got)
            conn.send(answer)
        while conn.sock.recv(64):
            pass
        conn.close()                  # (after the module's FIN: AT+QICLOSE waits for ours)

    with TcpServer(behave=behave) as server:
        emulator.router.add_map(C2C_HOST, C2C_PORT, "127.0.0.1", server.port)
        assert node.open_client(0, C2C_HOST, C2C_PORT) == RET_OK
        assert node.send_data(0, b"GIVE")[0] == RET_SENT
        pieces, counters = [], []
        for _ in range(3):
            ret, data = node.receive_data(0, 256)
            assert ret == RECEIVE_OK
            pieces.append(data)
            counters.append(list(node.sock["qird"]))
        assert [len(p) for p in pieces] == [256, 256, 188]
        assert b"".join(pieces) == burst
        assert counters == [[700, 256, 444], [700, 512, 188], [700, 700, 0]]
        assert node.urcs == [RET_URC_RECV]
        assert node.send_data(0, b"MORE")[0] == RET_SENT
        assert node.receive_data(0, 256) == (RECEIVE_OK, more)
        assert node.sock["qird"] == [750, 750, 0]
        assert node.urcs == [RET_URC_RECV, RET_URC_RECV]
        assert [c for c in node.written if c.startswith(b"AT+QIRD")] == [
            b"AT+QIRD=0,256\r\n", b"AT+QIRD=0,0\r\n", b"AT+QIRD=0,256\r\n", b"AT+QIRD=0,0\r\n",
            b"AT+QIRD=0,188\r\n", b"AT+QIRD=0,0\r\n", b"AT+QIRD=0,256\r\n", b"AT+QIRD=0,0\r\n"]
        assert node.close_client(0) == RET_OK


def test_st_c2c_peer_close_reopen_without_close_is_563_then_close_and_open_again(c2c, emulator):
    """The server answers once and closes.  BG96_ReceiveData() reads the answer (URC 'recv"').
    The application then reconnects without closing: BG96_OpenClientConnection() flushes the
    waiting '+QIURC: "closed",0' away, AT+QIOPEN on id 0 -- still held by the module until
    AT+QICLOSE -- gives OK then +QIOPEN: 0,563 (six bytes " 0,563", then the CR LF): ERROR.
    A BG96_ReceiveData() now finds no URC and its AT+QIRD=0,1500 on the peer-closed socket is
    "+QIRD: 0" (nothing left).  BG96_CloseClientConnection(): AT+QISEND=0,0 still answers with
    nothing unacknowledged, AT+QICLOSE=0,15 OK; the next open is +QIOPEN: 0,0 on a new
    connection."""
    node = c2c

    def once(conn):
        data = conn.sock.recv(4096)
        conn.add(data)
        conn.send(b"BYE " + data)
        conn.close()

    with TcpServer(behave=once) as server:
        emulator.router.add_map(C2C_HOST, C2C_PORT, "127.0.0.1", server.port)
        assert node.open_client(0, C2C_HOST, C2C_PORT) == RET_OK
        assert node.send_data(0, b"hello")[0] == RET_SENT
        assert node.receive_data(0, 1500) == (RECEIVE_OK, b"BYE hello")
        assert node.sock["qird"] == [9, 9, 0]
        # (the test waits for the "closed" URC to be in; the driver's scans skip it wherever it
        # lands -- inside ReceiveData()'s own waits or in the flush below)
        deadline = time.monotonic() + 5
        while b'\r\n+QIURC: "closed",0\r\n' not in bytes(node.transcript) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert b'\r\n+QIURC: "closed",0\r\n' in node.transcript

        assert node.open_client(0, C2C_HOST, C2C_PORT) == RET_ERROR
        assert node.open_error == 563
        assert node.receive_data(0, 1500, timeout_ms=300) == (RECEIVE_OK, b"")
        assert node.urcs == [RET_URC_RECV, -1]
        assert node.close_client(0) == RET_OK and node.unacked == 0
        assert node.open_client(0, C2C_HOST, C2C_PORT) == RET_OK and node.open_error == 0
        assert server.wait_connection(1)
        assert node.send_data(0, b"again")[0] == RET_SENT
        assert node.receive_data(0, 1500) == (RECEIVE_OK, b"BYE again")
        assert node.close_client(0) == RET_OK
        assert [c for c in node.written if c.startswith((b"AT+QIOPEN", b"AT+QICLOSE"))] == [
            b'AT+QIOPEN=1,0,"TCP","c2c.example",5000,0,0\r\n'] * 2 + [b"AT+QICLOSE=0,15\r\n",
            b'AT+QIOPEN=1,0,"TCP","c2c.example",5000,0,0\r\n', b"AT+QICLOSE=0,15\r\n"]
