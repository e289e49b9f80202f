"""Adversarial tests: a sixteenth set of public host code that drives a Quectel module through the
TCP(IP) commands (AT+QIOPEN "TCP" / "UDP SERVICE", AT+QISEND, AT+QIRD, AT+QICLOSE, AT+QIDNSGIP,
AT+QIGETERROR) and the SSL commands (AT+QSSLCFG / AT+QSSLOPEN / AT+QSSLSTATE / AT+QSSLSEND /
AT+QSSLRECV), replayed through the pty with each program's own line endings, waits and parsers
against loopback peers (OpenSSL -- Python's ssl -- for TLS).  (Earlier files:
test_adversarial_public_drivers.py .. _15.py; see _8.py's docstring for the list.)  Neither driver
below was replayed before: the first is written in Toit, the second is an Amazon FreeRTOS
secure-sockets port in C whose reader is timing-based.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- Toit's cellular package, toitware/cellular at fc8dc873f91a (2026-03-25, "Update readme. (#51)"):
  src/base/at.toit (Session: a reader TASK and the application task, cooperatively scheduled;
  write_command_() writes "AT", the name, "=", each parameter and each comma as separate writes,
  then s3 = CR; strings quoted, ints stringified; run_(): a token starting with '+' is "formatted"
  -- read up to the CR, the name up to ':', a ' ' skipped, a registered custom parser or
  parse_response() of the rest; the line is a response when its name is the pending command's,
  else a URC for the first handler whose prefix it starts with --; the data marker ('>' for
  Quectel) anywhere a token starts writes the pending command's data; any other printable token
  is a plain line up to the CR: "AT+..." is an echo and dropped, "OK" / "SEND OK" (ok) and "ERROR"
  / "SEND FAIL" / "+CME ERROR" / "+CMS ERROR" (error) end the command, the rest is a plain
  response (even "AT" and "ATE0", which lack the '+'); CR, LF and other control bytes are skipped;
  a response or URC moves the next write 20 ms later (command_delay); parse_response(): fields
  split at ',', quoted ones unquoted, ints parsed, others kept as strings),
  src/modules/quectel/quectel.toit (configure_at_(): +QIRD custom parser -- the count up to the
  CR, 0 alone, else the LF skipped and exactly that many raw bytes --, +QIGETERROR read plain;
  the +QIOPEN URC handler -- looks the socket up in sockets_, which tcp_connect() fills only
  AFTER the AT+QIOPEN command returned --, the +QIURC handler for "dnsgip" / "recv" / "closed" /
  "pdpdeact"; TcpSocket: AT+QIOPEN=<cid>,<id>,"TCP","<ip>",<port> (buffer mode, 150 s), connect_()
  through wait_for_urc_ (an "AT" with no check every second while nothing happens), read_() --
  the READ state set by "recv", AT+QIRD=<id>,1500 until "+QIRD: 0" clears it, a CLOSE state
  winning over data not yet read --, try_write_() (1460-byte pieces, AT+QISEND=<id>,<n> with the
  data written at '>', an UnavailableException from AT+QIGETERROR = sleep 100 ms and 0), close()
  (AT+QICLOSE=<id>,0 -- the manual's timeout 0 --); UdpSocket: AT+QIOPEN=<cid>,<id>,"UDP
  SERVICE","127.0.0.1",0,<port>,0 with port 16384 + n, AT+QISEND=<id>,<n>,"<ip>",<port>, receive()
  with AT+QIRD=<id> ("+QIRD: <n>,"<ip>",<port>" then the bytes); Interface_.resolve():
  AT+QIDNSGIP=1,"<host>" (70 s) and the "dnsgip" URC with a string; socket_id_(): the lowest of
  0..11 not in sockets_; last_error_(): AT+QIGETERROR, 0/568/553/572 = UnavailableException),
  src/base/base.toit (is_ready_(): "AT" with 250 ms and no check, 100 ms, ATE0, AT+CMEE=2;
  wait_for_urc_()), src/modules/quectel/bg96.toit (on_connected_(): AT+QICSGP=1 then AT+QIACT=1).
  The model keeps Toit's scheduling: one lock stands for the single Toit process; the reader task
  holds it while it parses the bytes it has, the application task while it runs, and each gives it
  up only where Toit blocks (the UART read, a monitor await, sleep).

- Infineon's "predictive maintenance" XMC4700 kit, Infineon/pred-main-xmc4700-kit at afe3afe9d75b
  (2021-07-06, firmware v1.2.0), the BG96 (Mikroe LTE IoT 2 click) behind Amazon FreeRTOS:
  amazon-freertos/vendors/infineon/boards/xmc4700_relaxkit/aws_demos/application_code/drivers/
  wireless/modem/aws_nbiot.c (+ aws_nbiot.h: MAX_PKT_LEN 1400, SSL_SOCKET_CHUNK_SIZE 128,
  NBIOT_IP_CHUNK_SIZE 128, MODEM_BUFFER_SIZE 2048) and ports/secure_sockets/nbiot_secure_sockets.c
  (NBIOT_MODE_TRANSPARENT undefined: buffer mode; TLS is mbedTLS on the MCU, over the modem's
  TCP socket).  Readers: prvAT_Recv() -- polls the UART's byte count every 2 ms tick until it
  stops growing, then takes EVERYTHING received; a burst is a result only when it ends in CR LF
  or is exactly "\\r\\n> ", any other burst is read and thrown away --, prvAT_RecvLine() -- byte
  by byte: everything up to the first CR LF dropped, then the line up to the next CR LF; "> "
  ends it at once --, prvAT_RecvData() -- exactly n bytes --; prvPperformCommand() -- the command
  + "\\r\\n", bursts until one holds a line STARTING with one of the wanted results; the non-OK
  lines of the last burst kept in xModemStatus.  NBIOT_lGetIpFromName() (AT+QIDNSGIP=1,"<name>";
  the address is pucValue[1] -- the second non-OK line of the burst that matched "+QIURC:" --
  from offset 18, its closing quote cut), NBIOT_lTcpOpenSocket() (AT+QIOPEN=<cid>,<s>,"TCP",
  "<ip>",<port>,0 waiting for "+QIOPEN: <s>,0"), NBIOT_lTcpSendSocket() (AT+QISEND=<s>,<n>, one
  "+QIURC:" line tolerated before "> ", the data, a burst with "SEND OK"), nbiot_tcp_recv_socket_
  next() (AT+QIRD=<s>,<n<=128>, one '+QIURC: "recv"' line tolerated before "+QIRD: <n>", n + 2
  bytes, the OK line), NBIOT_lTcpRecvSocket() (until the length mbedTLS asked for, 100 ms after an
  empty read), NBIOT_lTcpCloseSocket() (AT+QICLOSE=<s>), and the modem-SSL API of the same file:
  NBIOT_lConfigSsl() (sslversion, ciphersuite 0X0035, seclevel), NBIOT_lSslSocketState()
  (AT+QSSLSTATE=<s>: any non-OK line = busy), NBIOT_lSslOpenSocket() (AT+QSSLOPEN=<cid>,<ctx>,<s>,
  "<host>",<port>,0 waiting for "+QSSLOPEN: <s>,0"), NBIOT_lSslSendSocket() (the burst after
  AT+QSSLSEND must be exactly "\\r\\n> "), prvNbiot_SslNextRecvSocket() / NBIOT_lSslRecvSocket()
  (AT+QSSLRECV=<s>,128 until "+QSSLRECV: 0") and NBIOT_lSslCloseSocket() (no AT+QSSLCLOSE at all:
  AT+QIACT? then AT+QIDEACT=<s + 1>).  The MCU's mbedTLS (TLS 1.2) is played by OpenSSL through
  memory BIOs, fetching records the way mbedtls_ssl_fetch_input() does (5 header bytes, then the
  body) and sending each record with its own f_send.

Every host name dialled is routed to 127.0.0.1.  The drivers' tick-level timings (Toit's 20 ms
command delay, the C driver's 2 ms quiet gap) are kept or widened by SLOW where only a loaded
machine could stretch them; no test asserts an upper bound on time."""
from __future__ import annotations

import os
import random
import re
import select
import socket
import ssl
import struct
import threading
import time

import pytest

from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer, default_pki

SLOW = 5                     # short waits widened for a loaded 2-core machine
LINK_LATENCY_MS = 60         # one way: a connect's round trip is 120 ms, as on a cellular link


def _binary(n: int, seed: int) -> bytes:
    """Payload bytes that look like the framing the parsers watch for."""
    rnd = random.Random(seed)
    traps = [b"\r\nOK\r\n", b"> ", b"\r\n+QIURC: \"recv\",0\r\n", b"+QIRD: 9\r\n", b"\r\nERROR\r\n",
             b"SEND OK", b"\x00\xff\r", b">"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(traps) if rnd.random() < 0.2 else bytes([rnd.randrange(256)])
    return bytes(out[:n])


# =================================================================================================
# toitware/cellular src/base/at.toit + src/modules/quectel/quectel.toit (Toit)
# =================================================================================================
CR = 13
DATA_MARKER = ord(">")


class ToitEOF(Exception):
    pass


class ToitTimeout(Exception):
    pass


class UnavailableException(Exception):
    pass


class ToitCommand:
    ACTION, READ, SET = "", "?", "="
    DEFAULT_TIMEOUT = 2.0

    def __init__(self, name: str, type_: str, parameters=(), data: bytes | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        self.name, self.type, self.parameters, self.data, self.timeout = name, type_, list(parameters), data, timeout


def parse_response(line: bytes, plain: bool = False) -> list:
    """at.toit parse_response()."""
    parts: list = []
    index, size = 0, len(line)
    while size > 0 and line[size - 1] == 0x20:
        size -= 1
    while index < size:
        while line[index] == 0x20:
            index += 1
        end = line.find(b",", index)
        if end == -1:
            end = size
        if end <= index:
            parts.append(None)
        elif line[index] == ord('"'):
            parts.append(line[index + 1:end - 1].decode("latin-1"))
        elif plain:
            parts.append(line[index:end].decode("latin-1"))
        elif b"." in line[index:end]:
            parts.append(float(line[index:end]))
        else:
            text = line[index:end].decode("latin-1")
            parts.append(int(text) if re.fullmatch(r"-?\d+", text) else text)
        index = end + 1
    return parts


class ToitSession:
    """at.toit Session over the pty; `lock` is the Toit process (see the module docstring)."""

    def __init__(self, path: str, command_delay: float = 0.020) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.cond = threading.Condition(threading.RLock())
        self.buf = bytearray()
        self.command_delay = command_delay
        self.ok_terms = [b"OK", b"SEND OK"]
        self.error_terms = [b"ERROR", b"SEND FAIL", b"+CME ERROR", b"+CMS ERROR"]
        self.urc_handlers: dict = {}
        self.parsers: dict = {}
        self.command: ToitCommand | None = None
        self.command_deadline = 0.0
        self.can_write_at = 0.0
        self.responses: list = []
        self.result = None
        self.error: str | None = None
        self.stop = False
        self.written: list[bytes] = []          # every command line as written (joined pieces)
        self.results: list[tuple[bytes, str, list]] = []
        self.urcs: list[tuple[str, list]] = []
        self.rx = bytearray()
        self.thread = threading.Thread(target=self._task, daemon=True, name="toit-at-reader")
        self.thread.start()

    # -- the reader task ----------------------------------------------------------------------
    def _more(self) -> None:
        self.cond.notify_all()
        self.cond.release()
        try:
            while True:
                if self.stop:
                    raise ToitEOF()
                r, _, _ = select.select([self.fd], [], [], 0.05)
                if r:
                    try:
                        data = os.read(self.fd, 4096)
                    except BlockingIOError:
                        continue
                    if data:
                        self.rx += data
                        self.buf += data
                        return
        finally:
            self.cond.acquire()

    def peek_byte(self) -> int:
        while not self.buf:
            self._more()
        return self.buf[0]

    def index_of(self, byte: int, to: int | None = None) -> int:
        while True:
            end = len(self.buf) if to is None else min(to, len(self.buf))
            i = self.buf.find(bytes([byte]), 0, end)
            if i >= 0 or (to is not None and len(self.buf) >= to):
                return i
            self._more()

    def read_bytes(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def skip(self, n: int) -> None:
        self.read_bytes(n)

    def read_bytes_up_to(self, byte: int) -> bytes:
        i = self.index_of(byte)
        out = self.read_bytes(i)
        self.skip(1)
        return out

    def _task(self) -> None:
        with self.cond:
            try:
                self._run()
            except ToitEOF:
                pass
            except Exception as exc:      # abort_: every later command fails
                self.error = repr(exc)
                self.cond.notify_all()

    def _run(self) -> None:
        while True:
            c = self.peek_byte()
            if c == ord("+"):
                self._read_formatted()
            elif c == DATA_MARKER:
                self.skip(1)
                if self.command is not None and self.command.data is not None:
                    self._write(self.command.data)
                    continue
            elif c >= 32:
                if self.command is None:
                    self.read_bytes_up_to(CR)          # discarded (no on_unhandled_line)
                else:
                    self._read_plain()
            else:
                self.skip(1)

    def _is_ok(self, line: bytes) -> bool:
        return line in self.ok_terms or self._prefixed(line, self.ok_terms)

    def _is_error(self, line: bytes) -> bool:
        return line in self.error_terms or self._prefixed(line, self.error_terms)

    @staticmethod
    def _prefixed(line: bytes, terms: list[bytes]) -> bool:
        comma = line.find(b", ")
        return comma >= 0 and line[comma + 2:] in terms

    def _read_formatted(self) -> None:
        line_end = self.index_of(CR)
        cmd_end = self.index_of(ord(":"), to=line_end)
        if cmd_end < 0:
            cmd = self.read_bytes(line_end).decode("latin-1")
            self._dispatch(cmd, [])
            return
        cmd_bytes = bytes(self.buf[:cmd_end])
        if self._is_ok(cmd_bytes) or self._is_error(cmd_bytes):
            line = self.read_bytes(line_end)
            self.skip(1)
            self._complete(line.decode("latin-1"))
            return
        cmd = cmd_bytes.decode("latin-1")
        cmd_end += 1
        while len(self.buf) <= cmd_end:
            self._more()
        if self.buf[cmd_end] == 0x20:
            cmd_end += 1
        self.skip(cmd_end)
        parser = self.parsers.get(cmd)
        if parser is not None:
            parsed = parser(self)
        else:
            data = self.read_bytes(line_end - cmd_end)
            self.skip(1)
            parsed = parse_response(data)
        if self.command is not None and self.command.name == cmd:
            self.responses.append(parsed)
        else:
            self._dispatch(cmd, parsed)

    def _read_plain(self) -> None:
        line = self.read_bytes_up_to(CR)
        if not line:
            return
        if len(line) >= 3 and line[:3] == b"AT+":
            return
        if self._is_ok(line) or self._is_error(line):
            self._complete(line.decode("latin-1"))
            return
        if self.command is not None:
            self.responses.append(parse_response(line, plain=True))

    def _dispatch(self, urc: str, response: list) -> None:
        self.can_write_at = time.monotonic() + self.command_delay
        self.urcs.append((urc, response))
        for prefix, handler in list(self.urc_handlers.items()):
            if urc.startswith(prefix):
                handler(response)
                return

    def _complete(self, code: str) -> None:
        self.can_write_at = time.monotonic() + self.command_delay
        self.command_deadline = 0.0
        if self.command is not None:
            self.command = None
            self.result = (code, self.responses)

    def _write(self, data: bytes) -> None:
        os.write(self.fd, data)          # (a UART write: no yield)

    # -- the application task ------------------------------------------------------------------
    def sleep(self, seconds: float) -> None:
        with self.cond:
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                self.cond.wait(left)

    def await_(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def send(self, command: ToitCommand, check: bool = True):
        with self.cond:
            while True:
                if self.error:
                    raise RuntimeError(self.error)
                now = time.monotonic()
                ready_at = max(self.can_write_at, self.command_deadline)
                if ready_at <= now:
                    break
                self.sleep(min(0.25, ready_at - now) + 0.001)
            now = time.monotonic()
            if self.command_deadline > now:
                raise RuntimeError("COMMAND ALREADY IN PROGRESS")
            self.command = command
            self.command_deadline = now + command.timeout
            self.responses = []
            self.result = None
            pieces = [b"AT", command.name.encode(), command.type.encode()]
            for i, p in enumerate(command.parameters):
                if i:
                    pieces.append(b",")
                if p is None:
                    continue
                pieces.append(b'"%s"' % p.encode() if isinstance(p, str) else str(p).encode())
            pieces.append(bytes([CR]))
            for piece in pieces:
                self._write(piece)
            self.written.append(b"".join(pieces))
            got = self.cond.wait_for(lambda: self.result is not None or self.error is not None,
                                     max(0.0, self.command_deadline - time.monotonic()))
            if not got or self.result is None:
                if check:
                    raise ToitTimeout(b"".join(pieces))
                return None
            code, responses = self.result
            self.results.append((b"".join(pieces), code, responses))
            if not self._is_ok(code.encode("latin-1")):
                if check:
                    raise RuntimeError(f"{code} {responses}")
                return None
            return code, responses

    def action(self, name: str, timeout: float = ToitCommand.DEFAULT_TIMEOUT, check: bool = True):
        return self.send(ToitCommand(name, ToitCommand.ACTION, timeout=timeout), check)

    def set(self, name: str, params, data: bytes | None = None, timeout: float = ToitCommand.DEFAULT_TIMEOUT,
            check: bool = True):
        return self.send(ToitCommand(name, ToitCommand.SET, params, data, timeout), check)

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        os.close(self.fd)


CONNECTED_STATE, READ_STATE, CLOSE_STATE = 1, 2, 4


class ToitSocketState:
    """quectel.toit SocketState_ (a monitor: its methods run under the session lock)."""

    def __init__(self, session: ToitSession) -> None:
        self.s, self.state, self.dirty = session, 0, False

    def wait_for(self, state: int, timeout: float, error_state: int = CLOSE_STATE) -> int | None:
        bits = state | error_state
        if not self.s.await_(lambda: self.state & bits != 0, timeout):
            return None
        self.dirty = False
        return self.state & bits

    def set_state(self, state: int) -> None:
        self.dirty = True
        self.state |= state
        self.s.cond.notify_all()

    def clear(self, state: int) -> None:
        if not self.dirty:
            self.state &= ~state


class ToitQuectel:
    """QuectelCellular + BG96 + Interface_ (the socket layer), as far as the tests go."""
    MAX_SIZE = 1460
    FREE_PORT_RANGE = 1 << 14

    def __init__(self, path: str, test_deadline: float) -> None:
        self.at = ToitSession(path)
        self.cid = 1
        self.sockets: dict[int, object] = {}
        self.resolve_latch: list | None = None
        self.free_port = 0
        self.pings = 0
        self.test_deadline = test_deadline          # (the test's own bound: Toit waits forever)
        s = self.at
        s.urc_handlers["+QIOPEN"] = self._on_qiopen
        s.urc_handlers["+QIURC"] = self._on_qiurc
        s.parsers["+QIRD"] = self._parse_qird
        s.parsers["+QIGETERROR"] = self._parse_qigeterror

    # configure_at_ parsers / URC handlers (run in the reader task)
    @staticmethod
    def _parse_qird(r: ToitSession) -> list:
        line = r.read_bytes_up_to(CR)
        parts = parse_response(line)
        if parts[0] == 0:
            return [0]
        r.skip(1)                                    # the LF
        parts.append(r.read_bytes(parts[0]))
        return parts

    @staticmethod
    def _parse_qigeterror(r: ToitSession) -> list:
        values = parse_response(r.read_bytes_up_to(CR), plain=True)
        values[0] = int(values[0])
        return values

    def _on_qiopen(self, args: list) -> None:
        sock = self.sockets.get(args[0])
        if sock is None:
            return
        if args[1] == 0:
            if sock.error == 0:
                sock.state.set_state(CONNECTED_STATE)
        else:
            sock.error = args[1]
            sock.state.set_state(CLOSE_STATE)

    def _on_qiurc(self, it: list) -> None:
        if it[0] == "dnsgip":
            if isinstance(it[1], int) and it[1] != 0:
                if self.resolve_latch is not None:
                    self.resolve_latch.append(RuntimeError(f"RESOLVE FAILED: {it[1]}"))
            elif isinstance(it[1], str):
                if self.resolve_latch is not None:
                    self.resolve_latch.append(it[1])
            self.at.cond.notify_all()
        elif it[0] in ("recv", "closed", "pdpdeact"):
            sock = self.sockets.get(it[1])
            if sock is None:
                return
            if it[0] == "pdpdeact":
                sock.should_pdp_deact = True
            sock.state.set_state(READ_STATE if it[0] == "recv" else CLOSE_STATE)

    # base.toit
    def is_ready(self) -> bool:
        if self.at.action("", timeout=0.25, check=False) is None:
            self.at.sleep(0.01)
            return False
        self.at.sleep(0.1)
        self.at.action("E0")
        self.at.set("+CMEE", [2])
        return True

    def select_baud(self, count: int = 5, rates: int = 2) -> bool:
        """base.toit select_baud_(): is_ready_ at each of the BG96's two rates, five rounds (the
        pty has no rate: every try is the same)."""
        for _ in range(count * rates):
            if self.is_ready():
                return True
        return False

    def on_connected(self) -> None:
        self.at.set("+QICSGP", [self.cid])
        self.at.set("+QIACT", [self.cid], timeout=150)

    def wait_for_urc(self, block) -> object:
        while True:
            if time.monotonic() > self.test_deadline:
                raise AssertionError("the driver is still waiting (the test's bound)")
            result = block(1.0)
            if result is not None:
                return result
            self.pings += 1
            self.at.action("", check=False)            # "Ping every second"

    # socket layer
    def socket_call(self, call):
        try:
            return call()
        except UnavailableException:
            raise
        except Exception as exc:
            raise self.last_error(str(exc)) from None

    def last_error(self, original: str) -> Exception:
        _, responses = self.at.action("+QIGETERROR")
        error, message = responses[-1][0], responses[-1][1]
        if error == 0:
            return UnavailableException(original)
        if error in (568, 553, 572):
            return UnavailableException(message)
        return RuntimeError(f"SOCKET ERROR {error} ({message} - {original})")

    def resolve(self, host: str) -> list[str]:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
            return [host]
        self.resolve_latch = []
        try:
            self.at.set("+QIDNSGIP", [1, host], timeout=70)

            def block(timeout):
                if self.at.await_(lambda: bool(self.resolve_latch), timeout):
                    return self.resolve_latch[0]
                return None
            result = self.wait_for_urc(block)
            if isinstance(result, Exception):
                raise result
            return [result]
        finally:
            self.resolve_latch = None

    def socket_id(self) -> int:
        for i in range(12):
            if i not in self.sockets:
                return i
        raise RuntimeError("no more sockets available")

    def tcp_connect(self, host: str, port: int) -> "ToitTcpSocket":
        ip = self.resolve(host)[0]
        sid = self.socket_id()
        sock = ToitTcpSocket(self, sid, (ip, port))
        self.sockets[sid] = sock
        try:
            sock.connect_()
        except Exception:
            sock.error = 1
            raise
        return sock

    def udp_open(self, port: int | None = None) -> "ToitUdpSocket":
        sid = self.socket_id()
        if not port:
            port = self.FREE_PORT_RANGE + self.free_port % self.FREE_PORT_RANGE
            self.free_port += 1
        sock = ToitUdpSocket(self, sid, port)
        self.sockets[sid] = sock
        return sock

    def close(self) -> None:
        self.at.close()


class ToitTcpSocket:
    def __init__(self, cell: ToitQuectel, sid: int, peer: tuple[str, int]) -> None:
        self.cell, self.id, self.peer = cell, sid, peer
        self.state = ToitSocketState(cell.at)
        self.error = 0
        self.should_pdp_deact = False
        cell.socket_call(lambda: cell.at.set("+QIOPEN", [cell.cid, sid, "TCP", peer[0], peer[1]], timeout=150))

    def connect_(self) -> None:
        st = self.cell.wait_for_urc(lambda t: self.state.wait_for(CONNECTED_STATE, t))
        if st & CONNECTED_STATE:
            return
        raise RuntimeError(f"CONNECT_FAILED: {self.error}")

    def read(self) -> bytes | None:
        while True:
            st = self.cell.wait_for_urc(lambda t: self.state.wait_for(READ_STATE, t))
            if st & CLOSE_STATE:
                return None
            _, responses = self.cell.socket_call(
                lambda: self.cell.at.set("+QIRD", [self.id, 1500], timeout=5))
            if len(responses) != 1:
                raise RuntimeError(f"FORMAT_ERROR: {responses}")
            out = responses[0]
            if out[0] > 0:
                return out[1]
            with self.cell.at.cond:
                self.state.clear(READ_STATE)

    def try_write(self, data: bytes) -> int:
        if not data:
            return 0
        data = data[:self.MAX]
        try:
            self.cell.socket_call(lambda: self.cell.at.set("+QISEND", [self.id, len(data)], data=data, timeout=5))
            return len(data)
        except UnavailableException:
            self.cell.at.sleep(0.1)
            return 0

    MAX = ToitQuectel.MAX_SIZE

    def write_all(self, data: bytes) -> list[int]:
        sizes = []
        while data:
            n = self.try_write(data)
            sizes.append(n)
            data = data[n:]
        return sizes

    def close(self) -> None:
        if self.id is None:
            return
        sid, self.id = self.id, None
        with self.cell.at.cond:
            self.state.set_state(CLOSE_STATE)
        try:
            if self.should_pdp_deact:
                self.cell.at.set("+QIDEACT", [sid], timeout=40)
            if not self.cell.at.error:
                self.cell.at.set("+QICLOSE", [sid, 0], timeout=ToitCommand.DEFAULT_TIMEOUT + 0)
        finally:
            self.cell.sockets.pop(sid, None)


class ToitUdpSocket:
    def __init__(self, cell: ToitQuectel, sid: int, port: int) -> None:
        self.cell, self.id = cell, sid
        self.state = ToitSocketState(cell.at)
        self.error = 0
        self.should_pdp_deact = False
        cell.socket_call(lambda: cell.at.set(
            "+QIOPEN", [cell.cid, sid, "UDP SERVICE", "127.0.0.1", 0, port, 0], timeout=150))

    def send(self, address: tuple[str, int], data: bytes) -> int:
        if len(data) > 1460:
            raise RuntimeError("PAYLOAD_TO_LARGE")
        self.cell.socket_call(lambda: self.cell.at.set(
            "+QISEND", [self.id, len(data), address[0], address[1]], data=data, timeout=5))
        return len(data)

    def receive(self, timeout: float) -> tuple[bytes, tuple[str, int]] | None:
        while True:
            st = self.state.wait_for(READ_STATE, timeout)       # (no ping here; the test's bound)
            assert st is not None, "no datagram announced"
            if st & CLOSE_STATE:
                return None
            _, responses = self.cell.socket_call(lambda: self.cell.at.set("+QIRD", [self.id], timeout=5))
            res = responses[0]
            if res[0] > 0:
                return res[3], (res[1], res[2])
            with self.cell.at.cond:
                self.state.clear(READ_STATE)

    def close(self) -> None:
        if self.id is None:
            return
        self.cell.at.set("+QICLOSE", [self.id, 0])
        with self.cell.at.cond:
            self.state.set_state(CLOSE_STATE)
        self.cell.sockets.pop(self.id, None)
        self.id = None


TOIT_HOST, TOIT_IP, TOIT_PORT = "toit.example", "10.9.8.7", 7000


@pytest.fixture
def toit(driver_path, emulator, strict_log):
    """A Toit BG96 driver on a fresh module (echo on, no context), past is_ready_ and
    on_connected_; a 60 ms link each way (see test_toit_qiopen_urc_...)."""
    assert emulator.control("net", latency_ms=LINK_LATENCY_MS)["ok"]
    emulator.router.add_dns(TOIT_HOST, TOIT_IP)
    cell = ToitQuectel(driver_path, time.monotonic() + 30 * SLOW)
    try:
        assert cell.select_baud()
        cell.on_connected()
        yield cell
    finally:
        cell.close()


def test_toit_bg96_start_dns_tcp_write_read_close_and_reuse_id_0(toit, emulator):
    """is_ready_ on the fresh module: "AT" (echo on: the echoed "AT" has no '+', so Toit keeps it
    as a plain response line), ATE0 (its echo too), AT+CMEE=2; on_connected_: AT+QICSGP=1 read as a
    response (type 1), AT+QIACT=1.  resolve("toit.example"): AT+QIDNSGIP, OK, the two "dnsgip"
    URCs, the string one giving the address.  tcp_connect: AT+QIOPEN in buffer mode written in
    pieces, OK, then the +QIOPEN URC a round trip later (by then the socket is in sockets_).
    1560 bytes full of AT framing written as 1460 + 100 (AT+QISEND, the bytes written at '>'
    -- the prompt's ' ' and the CR before SEND OK are a blank plain response to Toit --, SEND OK);
    the echo read by "recv" + AT+QIRD=0,1500 until "+QIRD: 0", byte for byte.  close():
    AT+QICLOSE=0,0 OK; the next tcp_connect takes id 0 again and gets +QIOPEN: 0,0 (not 563)."""
    payload = _binary(1560, 16)
    with TcpServer("echo") as server:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server.port)
        s = toit.at
        k = s.written.index(b"ATE0\r")
        assert k >= 1 and s.written[:k] == [b"AT\r"] * k
        assert s.written[k:k + 4] == [b"ATE0\r", b"AT+CMEE=2\r", b"AT+QICSGP=1\r", b"AT+QIACT=1\r"]
        if k == 1:      # (a first "AT" past its 250 ms on a loaded machine shifts the answers: Toit's own race)
            assert s.results[0][1:] == ("OK", [["AT"]])
            assert s.results[1][1:] == ("OK", [["ATE0"]])
            assert s.results[2][1:] == ("OK", [])
            assert s.results[3][1] == "OK" and s.results[3][2][0][0] == 1
            assert s.results[4][1:] == ("OK", [])
        n = len(s.written)

        sock = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert sock.id == 0
        assert s.written[n:n + 2] == [b'AT+QIDNSGIP=1,"toit.example"\r', b'AT+QIOPEN=1,0,"TCP","10.9.8.7",7000\r']
        assert ("+QIURC", ["dnsgip", TOIT_IP]) in s.urcs
        assert ("+QIOPEN", [0, 0]) in s.urcs
        n = len(s.written)
        assert sock.write_all(payload) == [1460, 100]
        assert [w for w in s.written[n:] if w != b"AT\r"] == [b"AT+QISEND=0,1460\r", b"AT+QISEND=0,100\r"]
        assert [r[1:] for r in s.results if r[0].startswith(b"AT+QISEND")] == [("SEND OK", [[]])] * 2
        got = b""
        while len(got) < len(payload):
            chunk = sock.read()
            assert chunk is not None, got
            got += chunk
        assert got == payload
        assert server.connections[0].wait_received(len(payload)) == payload
        sock.close()
        assert s.results[-1][0] == b"AT+QICLOSE=0,0\r" and s.results[-1][1] == "OK"

        again = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert again.id == 0 and s.written[-1] == b'AT+QIOPEN=1,0,"TCP","10.9.8.7",7000\r'
        assert again.write_all(b"second") == [6]
        assert again.read() == b"second"
        again.close()
        assert s.results[-1][1] == "OK"
        assert s.error is None


def test_toit_pings_at_every_second_while_the_server_is_silent(toit, emulator):
    """A server that answers 2.5 s after the request: Toit's read_ waits through wait_for_urc_,
    writing "AT\\r" (no check) after each silent second; every ping is answered OK, the
    "recv" URC arriving between pings or while one is pending is dispatched (its name is not the
    pending command's), and the answer is read whole."""
    answer = b"late answer \r\n> +QIRD: 1\r\n"

    def behave(conn):
        conn.sock.recv(100)
        time.sleep(2.5)
        conn.send(answer)
        while conn.sock.recv(100):
            pass

    with TcpServer(behave=behave) as server:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server.port)
        r0 = len(toit.at.results)
        sock = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        pings_before = toit.pings
        assert sock.write_all(b"GET") == [3]
        got = b""
        while len(got) < len(answer):
            chunk = sock.read()
            assert chunk is not None
            got += chunk
        assert got == answer
        assert toit.pings - pings_before >= 1
        pings = [r for r in toit.at.results[r0:] if r[0] == b"AT\r"]
        assert pings and all(code == "OK" and responses == [] for _, code, responses in pings)
        assert ("+QIURC", ["recv", 0]) in toit.at.urcs
        sock.close()
        assert toit.at.results[-1][1] == "OK"


def test_toit_peer_close_then_qiclose_0_and_the_id_opens_again(toit, emulator):
    """The server answers and closes at once.  Toit's read_ returns None as soon as the CLOSE state
    is set -- before or after the data were read (its own race: "recv" and "closed" come back to
    back and CLOSE wins over READ), so the answer may be lost by the driver.  close() then sends
    AT+QICLOSE=0,0, which must be OK on a socket the peer closed (state 4 until the host closes,
    BG96 AN §2.2.5), and id 0 opens again at once (+QIOPEN: 0,0)."""
    def behave(conn):
        conn.sock.recv(100)
        conn.send(b"bye")
        conn.close()

    with TcpServer(behave=behave) as server:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server.port)
        sock = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert sock.write_all(b"hi") == [2]
        reads = []
        while True:
            chunk = sock.read()
            reads.append(chunk)
            if chunk is None:
                break
        assert reads in ([b"bye", None], [None])
        assert ("+QIURC", ["closed", 0]) in toit.at.urcs
        sock.close()
        assert toit.at.results[-1][0] == b"AT+QICLOSE=0,0\r" and toit.at.results[-1][1] == "OK"

    with TcpServer("echo") as server2:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server2.port)
        again = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert again.id == 0
        assert again.write_all(b"ping") == [4] and again.read() == b"ping"
        again.close()


def test_toit_pdpdeact_marks_the_socket_named_by_the_context_id(toit, emulator):
    """Two sockets (ids 0 and 1) open when the network deactivates context 1: the module writes
    '+QIURC: "pdpdeact",1' then each socket's "closed" URC.  Toit's handler looks the pdpdeact's
    field up in sockets_ as a SOCKET id, so socket 1 (not the context) gets should_pdp_deact;
    both read() calls return None.  close() of socket 0 is AT+QICLOSE=0,0 (OK on a socket the
    context took down); close() of socket 1 first sends AT+QIDEACT=1 -- its socket id, by chance
    the context -- which must be OK on a context already inactive, then AT+QICLOSE=1,0 (OK)."""
    with TcpServer("echo") as server:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server.port)
        a = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        b = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert (a.id, b.id) == (0, 1)
        assert a.write_all(b"a") == [1] and a.read() == b"a"
        assert emulator.control("pdp_deact", cid=1)["ok"]
        assert a.read() is None and b.read() is None
        # b.read() returns None on the pdpdeact alone (should_pdp_deact): socket 1's "closed"
        # URC, written right after, may still be on its way to the driver's reader thread.
        def teardown_urcs():
            return [u for u in toit.at.urcs if u[0] == "+QIURC" and u[1][0] in ("pdpdeact", "closed")]
        deadline = time.monotonic() + 10
        while len(teardown_urcs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        urcs = teardown_urcs()
        assert urcs[0] == ("+QIURC", ["pdpdeact", 1])
        assert sorted(u[1][1] for u in urcs[1:]) == [0, 1]
        assert (a.should_pdp_deact, b.should_pdp_deact) == (False, True)
        a.close()
        assert toit.at.results[-1][0] == b"AT+QICLOSE=0,0\r" and toit.at.results[-1][1] == "OK"
        b.close()
        assert [r[:2] for r in toit.at.results[-2:]] == [(b"AT+QIDEACT=1\r", "OK"), (b"AT+QICLOSE=1,0\r", "OK")]


def test_toit_refused_connect_leaves_id_0_to_the_driver_and_id_1_works(toit, emulator):
    """A refused connect: AT+QIOPEN OK, then +QIOPEN: 0,566 a round trip later: Toit sets error_ 566
    and the CLOSE state, connect_ throws CONNECT_FAILED: 566 (tcp_connect sets error_ 1); the
    socket stays in sockets_ (the driver never closes it), so the next tcp_connect takes id 1 --
    which the module opens normally."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", dead_port)
    with pytest.raises(RuntimeError, match="CONNECT_FAILED: 566"):
        toit.tcp_connect(TOIT_HOST, TOIT_PORT)
    assert ("+QIOPEN", [0, 566]) in toit.at.urcs
    assert 0 in toit.sockets and toit.sockets[0].error == 1
    with TcpServer("echo") as server:
        emulator.router.add_map(TOIT_IP, TOIT_PORT, "127.0.0.1", server.port)
        sock = toit.tcp_connect(TOIT_HOST, TOIT_PORT)
        assert sock.id == 1 and toit.at.written[-1] == b'AT+QIOPEN=1,1,"TCP","10.9.8.7",7000\r'
        assert sock.write_all(b"x" * 10) == [10] and sock.read() == b"x" * 10
        sock.close()


def test_toit_udp_service_send_and_receive_with_the_sender(toit, emulator):
    """udp_open(): AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,16384,0 (the driver's first "free"
    port; the emulator binds it where add_listen maps it); two datagrams sent with
    AT+QISEND=0,<n>,"10.9.8.6",7001 (Toit quotes the IP: it is a string), both echoed; receive()
    waits for "recv" and reads AT+QIRD=0 -> [n, "10.9.8.6", 7001, bytes] twice, one datagram each,
    the sender shown as the address dialled; then "+QIRD: 0" clears the READ state."""
    udp_ip, udp_port = "10.9.8.6", 7001
    emulator.router.add_listen(16384, "127.0.0.1", 0)
    with UdpEchoServer() as server:
        emulator.router.add_map(udp_ip, udp_port, "127.0.0.1", server.port)
        sock = toit.udp_open()
        assert toit.at.written[-1] == b'AT+QIOPEN=1,0,"UDP SERVICE","127.0.0.1",0,16384,0\r'
        assert toit.at.results[-1][1] == "OK"
        d1, d2 = _binary(300, 1), b"\r\nOK\r\n>"
        assert sock.send((udp_ip, udp_port), d1) == 300
        assert toit.at.written[-1] == b'AT+QISEND=0,300,"10.9.8.6",7001\r'
        deadline = time.monotonic() + 5 * SLOW
        while len(server.log) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sock.send((udp_ip, udp_port), d2) == 7
        while len(server.log) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [data for _, data in server.log] == [d1, d2]
        assert sock.receive(5 * SLOW) == (d1, (udp_ip, udp_port))
        assert sock.receive(5 * SLOW) == (d2, (udp_ip, udp_port))
        with pytest.raises(AssertionError, match="no datagram announced"):
            sock.receive(0.5)
        assert toit.at.results[-1][0] == b"AT+QIRD=0\r" and toit.at.results[-1][1:] == ("OK", [[0]])
        sock.close()
        assert toit.at.results[-1][0] == b"AT+QICLOSE=0,0\r" and toit.at.results[-1][1] == "OK"


# =================================================================================================
# Infineon/pred-main-xmc4700-kit amazon-freertos/.../modem/aws_nbiot.c + nbiot_secure_sockets.c
# =================================================================================================
TICK = 0.001                  # configTICK_RATE_HZ 1000
QUIET_GAP = 2 * TICK * SLOW   # prvAT_Recv's "wait last byte and time pause after it" (2 ticks)
MAX_PKT_LEN, CHUNK = 1400, 128


class NbiotUart:
    """UART_MODEM_*: the XMC's receive FIFO is the pty; nothing is read before the driver asks."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.fifo = bytearray()
        self.rx = bytearray()
        self.tx: list[bytes] = []

    def _pull(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return
            if not data:
                return
            self.fifo += data
            self.rx += data

    def count(self) -> int:
        self._pull()
        return len(self.fifo)

    def take(self, n: int) -> bytes:
        self._pull()
        out = bytes(self.fifo[:n])
        del self.fifo[:n]
        return out

    def transmit(self, data: bytes) -> None:
        self.tx.append(bytes(data))
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)


class NbiotBg96:
    """aws_nbiot.c's readers, prvPperformCommand and the socket functions."""

    def __init__(self, path: str) -> None:
        self.uart = NbiotUart(path)
        self.status: list[bytes] = []            # xModemStatus
        self.bursts: list[bytes] = []            # every burst prvAT_Recv returned
        self.fifo: dict[int, bytearray] = {}     # xSsockRcvFifo

    # -- readers ------------------------------------------------------------------------------
    def recv_burst(self, limit: int, timeout: float) -> bytes | None:
        """prvAT_Recv: None = -1."""
        deadline = time.monotonic() + timeout
        prev = 0
        while time.monotonic() <= deadline:
            while True:
                time.sleep(QUIET_GAP)
                n = self.uart.count()
                grew, prev = n - prev, n
                if grew <= 0:
                    break
            if n == 0:
                continue
            got = self.uart.take(min(n, limit))
            prev = self.uart.count()
            if (len(got) > 2 and got.endswith(b"\r\n")) or got == b"\r\n> ":
                self.bursts.append(got)
                return got
            if len(got) == limit:
                return None
            # any other burst is thrown away (memset at the next pass)
        return None

    def recv_line(self, limit: int, timeout: float) -> bytes | None:
        """prvAT_RecvLine."""
        deadline = time.monotonic() + timeout
        buf = bytearray()
        first = False
        while time.monotonic() <= deadline:
            if not self.uart.count():
                time.sleep(TICK)
            while self.uart.count() and len(buf) < limit:
                buf += self.uart.take(1)
                if len(buf) >= 2:
                    if buf[-2:] == b"> ":
                        return bytes(buf)
                    if buf[-2:] == b"\r\n":
                        if not first:
                            first = True
                            buf.clear()
                        else:
                            return bytes(buf[:-2])
                    elif not first:
                        buf[:] = buf[1:2]
        return None

    def recv_data(self, n: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while time.monotonic() <= deadline and len(buf) < n:
            if not self.uart.count():
                time.sleep(TICK)
            buf += self.uart.take(n - len(buf))
        return bytes(buf)

    @staticmethod
    def lines(burst: bytes) -> list[bytes]:
        return [x for x in re.split(rb"[\r\n]+", burst) if x]

    def look_for_unsolicited(self, burst: bytes) -> None:
        self.status = [x for x in self.lines(burst) if not x.startswith(b"OK")]

    def find_result(self, burst: bytes, results: list[bytes]) -> int:
        for line in self.lines(burst):
            for i, r in enumerate(results):
                if line.startswith(r):
                    return i
        return -1

    def perform(self, command: str, results: list[bytes], timeout: float) -> int:
        """prvPperformCommand."""
        self.uart.transmit(command.encode() + b"\r\n")
        time.sleep(TICK)
        start = time.monotonic()
        burst = self.recv_burst(2047, timeout)
        if burst is None:
            return -1
        self.look_for_unsolicited(burst)
        ret = self.find_result(burst, results)
        while ret < 0 and time.monotonic() - start <= timeout:
            burst = self.recv_burst(2047, 1.0 * SLOW)
            if burst:
                self.look_for_unsolicited(burst)
                ret = self.find_result(burst, results)
        return ret

    STD = [b"OK", b"+CME ERROR:", b"ERROR"]

    # -- DNS, TCP ------------------------------------------------------------------------------
    def get_ip_from_name(self, cid: int, name: str) -> str | None:
        ret = self.perform(f'AT+QIDNSGIP={cid},"{name}"',
                           [b'+QIURC: "pdpdeact"', b"+QIURC:", b"+CME ERROR:", b"ERROR"], 60)
        if ret != 1:
            return None
        line = self.status[1] if len(self.status) > 1 else b""
        prefix = len(b'+QIURC: "dnsgip","')
        return line[prefix:prefix + len(line) - prefix - 1].decode()

    def tcp_open(self, cid: int, s: int, ip: str, port: int) -> int:
        return self.perform(f'AT+QIOPEN={cid},{s},"TCP","{ip}",{port},0',
                            [b"+QIOPEN: %d,0" % s, b"+CME ERROR:", b"ERROR"], 100)

    def tcp_send(self, s: int, data: bytes) -> int:
        if len(data) > MAX_PKT_LEN:
            return -1
        results = [b"SEND OK", b"SEND FAIL", b"ERROR", b"+QIURC:"]
        self.uart.transmit(b"AT+QISEND=%d,%d\r\n" % (s, len(data)))
        time.sleep(TICK)
        line = self.recv_line(255, 1.0 * SLOW)
        if line is None:
            return -1
        if line.startswith(b"+QIURC:"):
            time.sleep(3 * TICK)
            line = self.recv_line(255, 1.0 * SLOW)
            if line is None:
                return -1
        if line.startswith(b"ERROR"):
            return -20                                   # NBIOT_ERROR_NO_CONNECTION
        if line in (b"> ", b"\r\n> "):
            self.uart.transmit(data)
            start = time.monotonic()
            burst = None
            while time.monotonic() < start + 0.1 * SLOW:
                burst = self.recv_burst(255, 1.0 * SLOW)
                if burst:
                    break
            if burst is None:
                return -1
            self.look_for_unsolicited(burst)
            ret = self.find_result(burst, results)
            if ret == 0:
                return len(data)
            if ret == 1:
                return -21
        return -1

    def tcp_recv_next(self, s: int, max_len: int, timeout: float) -> int | bytes:
        """nbiot_tcp_recv_socket_next (the extra-data buffer never fills: n <= max_len)."""
        self.uart.transmit(b"AT+QIRD=%d,%d\r\n" % (s, max_len))
        time.sleep(3 * TICK)
        line = self.recv_line(MAX_PKT_LEN - 1, timeout)
        if line is None:
            return -1
        if line.startswith(b'+QIURC: "recv"'):
            time.sleep(3 * TICK)
            line = self.recv_line(MAX_PKT_LEN - 1, timeout)
            if line is None:
                return -1
        elif line.startswith(b"ERROR"):
            return -20
        m = re.match(rb"\+QIRD: (\d+)", line)
        if not m:
            raise AssertionError(f"cannot extract the amount of data: {line!r}")
        n = int(m.group(1))
        data = b""
        if n:
            raw = self.recv_data(n + 2, timeout)
            assert len(raw) == n + 2, (n, raw)
            data = raw[:n]
        ok = self.recv_line(MAX_PKT_LEN - 1, timeout)          # "Reading the OK answer"
        assert ok == b"OK", ok
        return data

    def tcp_recv(self, s: int, want: int, timeout: float) -> bytes:
        """NBIOT_lTcpRecvSocket: until `want` bytes or the timeout."""
        start = time.monotonic()
        out = b""
        while len(out) < want and time.monotonic() - start < timeout:
            got = self.tcp_recv_next(s, min(CHUNK, want - len(out)), timeout)
            assert not isinstance(got, int), got
            out += got
            if len(out) >= want:
                break
            time.sleep(0.1 if not got else 0.015)
        return out

    def tcp_close(self, s: int) -> int:
        return self.perform(f"AT+QICLOSE={s}", self.STD, 100)

    # -- the modem's own SSL -------------------------------------------------------------------
    def config_ssl(self, ctx: int, version: int, seclevel: int) -> int:
        ret = self.perform(f'AT+QSSLCFG="sslversion",{ctx},{version}', self.STD, 1 * SLOW)
        if ret == 0:
            ret = self.perform(f'AT+QSSLCFG="ciphersuite",{ctx},0X0035', self.STD, 1 * SLOW)
        if ret == 0:
            ret = self.perform(f'AT+QSSLCFG="seclevel",{ctx},{seclevel}', self.STD, 1 * SLOW)
        return ret

    def ssl_state(self, s: int) -> int:
        ret = self.perform(f"AT+QSSLSTATE={s}", self.STD, 10)
        return -1 if ret == 0 and self.status else 0

    def ssl_open(self, cid: int, ctx: int, s: int, host: str, port: int) -> int:
        return self.perform(f'AT+QSSLOPEN={cid},{ctx},{s},"{host}",{port},0',
                            [b"+QSSLOPEN: %d,0" % s, b"+CME ERROR:", b"ERROR"], 150)

    def ssl_send(self, s: int, data: bytes) -> int:
        if len(data) > MAX_PKT_LEN:
            return -1
        self.uart.transmit(b"AT+QSSLSEND=%d,%d\r\n" % (s, len(data)))
        burst = self.recv_burst(255, 1.0 * SLOW)
        if burst is None:
            return -1
        if burst == b"\r\n> ":
            self.uart.transmit(data)
            burst = self.recv_burst(255, 1.0 * SLOW)
            if burst is None:
                return -1
            self.look_for_unsolicited(burst)
            if self.find_result(burst, [b"SEND OK", b"SEND FAIL", b"ERROR"]) == 0:
                return len(data)
        return -1

    def ssl_next_recv(self, s: int, max_len: int, timeout: float) -> int:
        self.uart.transmit(b"AT+QSSLRECV=%d,%d\r\n" % (s, max_len))
        time.sleep(3 * TICK)
        line = self.recv_line(MAX_PKT_LEN - 1, timeout)
        if line is None:
            return -1
        if line.startswith(b'+QSSLURC: "recv"'):
            time.sleep(3 * TICK)
            line = self.recv_line(MAX_PKT_LEN - 1, timeout)
            if line is None:
                return -1
        elif line.startswith(b"ERROR"):
            return -20
        m = re.match(rb"\+QSSLRECV: (\d+)", line)
        n = int(m.group(1)) if m else 0
        if n:
            raw = self.recv_data(n + 2, timeout)
            assert len(raw) == n + 2, (n, raw)
            self.fifo.setdefault(s, bytearray()).extend(raw[:n])
        self.last_ok = self.recv_line(MAX_PKT_LEN - 1, timeout)
        return n

    def ssl_recv(self, s: int, max_len: int) -> int | bytes:
        fifo = self.fifo.setdefault(s, bytearray())
        if not fifo:
            while (res := self.ssl_next_recv(s, CHUNK, 150)) > 0:
                assert self.last_ok == b"OK", self.last_ok
            if res < 0:
                return res
        out = bytes(fifo[:max_len])
        del fifo[:max_len]
        return out

    def ssl_close(self, s: int) -> int:
        """NBIOT_lSslCloseSocket = prvModemContextDeactivate(s + 1)."""
        cid = s + 1
        if self.perform("AT+QIACT?", self.STD, 100) == 0 and any(
                x[len(b"+QIACT: "):].startswith(b"%d,1" % cid) for x in self.status):
            return self.perform(f"AT+QIDEACT={cid}", self.STD, 60)
        return 0

    def close(self) -> None:
        self.uart.close()


class MbedTlsOverNbiot:
    """The MCU's mbedTLS (TLS 1.2) played by OpenSSL through memory BIOs: prvNetworkSend per
    record (MAX_PKT_LEN pieces, 5 tries on SEND FAIL), prvNetworkRecv fetching a record's 5
    header bytes, then its body, as mbedtls_ssl_fetch_input() asks."""

    def __init__(self, modem: NbiotBg96, s: int, server_name: str, recv_timeout: float) -> None:
        self.m, self.s, self.recv_timeout = modem, s, recv_timeout
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_verify_locations(cadata=default_pki().ca.cert_pem.decode())
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=server_name)
        self.sends: list[int] = []

    def _network_send(self, data: bytes) -> None:
        sent, tries = 0, 5
        while tries and sent < len(data):
            n = self.m.tcp_send(self.s, data[sent:sent + MAX_PKT_LEN])
            if n > 0:
                sent += n
                tries = 5
                self.sends.append(n)
            elif n == -21:
                tries -= 1
                time.sleep(0.2)
            else:
                raise AssertionError(f"prvNetworkSend: {n}")
        assert sent == len(data)

    def _flush(self) -> None:
        pending = self.out.read()
        while pending:                      # one f_send per record, as mbedTLS writes them
            size = 5 + struct.unpack(">H", pending[3:5])[0]
            self._network_send(pending[:size])
            pending = pending[size:]

    def _fetch_record(self) -> None:
        head = self.m.tcp_recv(self.s, 5, self.recv_timeout)
        assert len(head) == 5, head
        body = self.m.tcp_recv(self.s, struct.unpack(">H", head[3:5])[0], self.recv_timeout)
        self.inc.write(head + body)

    def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush()
                self._fetch_record()

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self._flush()

    def recv(self, n: int) -> bytes:
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                self._fetch_record()


MQTT_HOST, MQTT_IP, MQTT_PORT = "a1b2c3-ats.iot.eu-central-1.amazonaws.example", "10.20.30.40", 8883


@pytest.fixture
def nbiot(driver_path, emulator, strict_log):
    """The BG96 port after NBIOT_bInit's ATE0 / AT+CMEE=2 (the rest of its start-up asks for a
    GSM registration, which is not what these tests are about), PDP context 1 made active by the
    test (USE_APN_SETTINGS 0: the driver never activates one itself)."""
    m = NbiotBg96(driver_path)
    try:
        assert m.perform("AT", m.STD, 1 * SLOW) == 0
        assert m.perform("ATE0", m.STD, 1 * SLOW) == 0
        assert m.perform("AT+CMEE=2", m.STD, 1 * SLOW) == 0
        assert m.perform('AT+QICSGP=1,1,"UNINET","","",1', m.STD, 1 * SLOW) == 0
        assert m.perform("AT+QIACT=1", m.STD, 100) == 0
        yield m
    finally:
        m.close()


def test_infineon_secure_sockets_mqtt_tls_over_a_buffer_mode_tcp_socket(nbiot, emulator):
    """SOCKETS_GetHostByName(): AT+QIDNSGIP=1,"<endpoint>" -- the OK burst has no "+QIURC:", the
    URC burst does, and its second line holds the address --; SOCKETS_Connect(): AT+QIOPEN=1,0,
    "TCP","10.20.30.40",8883,0 until "+QIOPEN: 0,0", then mbedTLS's handshake over
    AT+QISEND (a record per f_send, "> " read by prvAT_RecvLine after at most one URC line) and
    AT+QIRD=0,<5 | <=128> (a '+QIURC: "recv",0' line skipped when it comes first, n + 2 bytes, the
    OK line); a 3000-byte MQTT-like publish through an OpenSSL echo server comes back whole;
    SOCKETS_Close(): AT+QICLOSE=0 -> OK.  Every QIRD answer has its exact framing: any URC
    wedged inside one, or a missing CR LF after the data, fails the driver."""
    payload = _binary(3000, 7)
    with TlsServer(mode="echo", max_version="TLSv1.2") as server:
        emulator.router.add_dns(MQTT_HOST, MQTT_IP)
        emulator.router.add_map(MQTT_IP, MQTT_PORT, "127.0.0.1", server.port)
        ip = nbiot.get_ip_from_name(1, MQTT_HOST)
        assert ip == MQTT_IP
        assert nbiot.uart.tx[-1] == b'AT+QIDNSGIP=1,"%s"\r\n' % MQTT_HOST.encode()
        assert nbiot.tcp_open(1, 0, ip, MQTT_PORT) == 0
        assert nbiot.uart.tx[-1] == b'AT+QIOPEN=1,0,"TCP","10.20.30.40",8883,0\r\n'
        tls = MbedTlsOverNbiot(nbiot, 0, "www.iottest.work", recv_timeout=10)
        tls.handshake()
        assert tls.tls.version() == "TLSv1.2"
        tls.send(payload)
        assert max(tls.sends) <= MAX_PKT_LEN and MAX_PKT_LEN in tls.sends
        got = b""
        while len(got) < len(payload):
            got += tls.recv(len(payload) - len(got))
        assert got == payload
        qirds = [t for t in nbiot.uart.tx if t.startswith(b"AT+QIRD=")]
        assert qirds and all(int(t[len(b"AT+QIRD=0,"):-2]) <= CHUNK for t in qirds)
        assert nbiot.tcp_close(0) == 0
        assert nbiot.uart.tx[-1] == b"AT+QICLOSE=0\r\n"


def test_infineon_modem_ssl_api_exact_prompt_burst_and_qsslrecv_loop(nbiot, emulator):
    """NBIOT_lConfigSsl(1, 3, 0): sslversion 3, ciphersuite 0X0035 (TLS_RSA_WITH_AES_256_CBC_SHA),
    seclevel 0, each OK; NBIOT_lSslSocketState(0) free (a bare OK); NBIOT_lSslOpenSocket(1, 1, 0,
    "secure.example", 443) until "+QSSLOPEN: 0,0" (the server agrees on AES256-SHA); the state is
    then busy (a +QSSLSTATE line).  NBIOT_lSslSendSocket(): the burst after AT+QSSLSEND=0,<n>
    must be exactly "\\r\\n> " -- nothing before or after it --, then SEND OK; 1400 bytes
    (MAX_PKT_LEN) and 9 bytes are echoed and read back by NBIOT_lSslRecvSocket() (AT+QSSLRECV=0,128
    until "+QSSLRECV: 0", each read's n + 2 bytes and OK line).  NBIOT_lSslCloseSocket(0):
    AT+QIACT? shows "1,1", AT+QIDEACT=1 is OK; the SSL client then waits in state 4 (closing)
    until an AT+QSSLCLOSE the driver never sends (docs/behaviour.md: PDP deactivation leaves it
    as a peer close does)."""
    with TlsServer(mode="echo", ciphers="AES256-SHA", max_version="TLSv1.2") as server:
        emulator.router.add_map("secure.example", 443, "127.0.0.1", server.port)
        assert nbiot.config_ssl(1, 3, 0) == 0
        assert nbiot.uart.tx[-3:] == [b'AT+QSSLCFG="sslversion",1,3\r\n',
                                      b'AT+QSSLCFG="ciphersuite",1,0X0035\r\n',
                                      b'AT+QSSLCFG="seclevel",1,0\r\n']
        assert nbiot.ssl_state(0) == 0
        assert nbiot.ssl_open(1, 1, 0, "secure.example", 443) == 0
        assert nbiot.ssl_state(0) == -1
        assert nbiot.status[0].startswith(b'+QSSLSTATE: 0,"SSLClient","secure.example",443,')
        for data in (_binary(MAX_PKT_LEN, 3), b"\r\n> 9 by"):
            assert nbiot.ssl_send(0, data) == len(data)
            assert nbiot.bursts[-2] == b"\r\n> "
            got = b""
            deadline = time.monotonic() + 5 * SLOW
            while len(got) < len(data) and time.monotonic() < deadline:
                chunk = nbiot.ssl_recv(0, 4096)
                assert not isinstance(chunk, int), chunk
                got += chunk
                if not chunk:
                    time.sleep(0.05)
            assert got == data
        assert server.connections[0].cipher == "AES256-SHA"
        assert nbiot.ssl_close(0) == 0
        assert nbiot.uart.tx[-2:] == [b"AT+QIACT?\r\n", b"AT+QIDEACT=1\r\n"]
        assert nbiot.ssl_state(0) == -1
        assert re.match(rb'\+QSSLSTATE: 0,"SSLClient","secure.example",443,\d+,4,', nbiot.status[0])
