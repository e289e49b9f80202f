"""Adversarial tests: a fifty-second set of public host code pointed at the pty -- a Python
port scanner that drives a Quectel module's TCP/IP stack (Rapid7's "CatSocks"), a MicroPython
BG77 socket driver (the BG-class TCP/IP command set the EC2x shares) and an STM32 EC20 HTTP
upload over a direct-push socket with its own push-URC parser.  (The store did not name the
repository of any of the three; none of their store ids, names or functions appears in the
earlier public_drivers files or the covered lists.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- store file id 65807983314: "CatSocks Version 0.02" ("Tool for injecting AT socket commands via
  serial communication to conduct port scanning via an embedded Cellular module ... Tested on
  Quectel and Telit", Deral Heiland / Rapid7, Carlota Bindner, 2025-2026; Python 3 + pyserial,
  20,259 characters, read whole).  What the model keeps (class QuectelDriver, at_cmd(),
  read_until(), scan_tcp(), scan_udp(), main()'s loop):
  * serial.Serial(port, 115200, timeout=0.2).  at_cmd(): reset_input_buffer() (whatever waits is
    thrown away), cmd + "\\r\\n" in one write, read_until(): per turn ser.read(in_waiting or 1)
    decoded latin-1, stop when `until` is in the text or (no `until`) "OK" / "ERROR" is; then a
    0.15 s drain that goes on while bytes keep coming.  The module's echo is never turned off.
  * setup(): AT+CMEE=2.  check_context(): AT+QIACT? wanting '+QIACT:\\s*1,\\s*1'.
  * open(): AT+QIOPEN=1,0,"<TCP|UDP>","<ip>",<port>,0,0 until "+QIOPEN:" (10 s), twice at most;
    '\\+QIOPEN:\\s*\\d+,(\\d+)' -> (code == "0", code).  classify_tcp(): 0 open, "566" closed,
    anything else unknown; three unknowns before any valid answer on one IP -> the IP is DOWN.
  * close(): AT+QICLOSE=0,10 (stops on OK/ERROR), then AT+QISTATE? every 0.2 s until no
    '+QISTATE:\\s*0,' line.
  * send(): reset_input_buffer(), AT+QISEND=0,<len>\\r\\n, read_until(">", 5), the payload,
    read_until("SEND OK", 5).  scan_udp(): the per-port probe (NTP's 0x1b + 47 zeros for 123,
    4 zero bytes elsewhere), reply = what came with SEND OK, else read_until('"recv"', udp_wait);
    '"recv"' -> OPEN, '"closed"' / ERROR -> CLOSED, else AT+QISTATE? -> OPEN|FILTERED;
    read_data() (verbose): AT+QIRD=0,1500 until "\\r\\nOK\\r\\n", '\\+QIRD:\\s*(\\d+)\\r?\\n', the
    <n> characters after it, latin-1 back to bytes.
- store file id 18738733487: a MicroPython driver for a Quectel BG77 (classes BG77 and
  BG77Socket over machine.UART, Czech/Slovak operator table; 18,311 characters, read whole).
  What the model keeps:
  * sendCommand(cmd, exit_condition="OK\\r\\n", timeout=1): the command in one UART write, then
    __read(): serial.read(1) at a time, str(byte, "ascii") appended, until exit_condition is
    in the text or timeout s passed; the result .strip("b'\\r\\n") (a character set).
  * __init__: "AT\\r\\n" (OK in it), "ATE0\\r\\n", AT+CEREG=4 (its answer ignored).
    socket(): isRegistered() -- AT+CEREG?, .strip("+CEREG: ").split(","), registered when field
    1 is exactly '1' or '5' -- then BG77Socket(..., socket_num=1, ...).
  * connect(): AT+QIOPEN=1,1,"TCP","<ip>",<rport>,<lport>,<push mode> wanting "OK", then up to
    10 __read("\\r\\n") for a line with "+QIOPEN", .strip("+QIOPEN: ").split(","), field 1 '0'.
  * send(): AT+QISEND=1,<len> up to ">", the data (a str) up to "\\r\\n", then up to 10 lines for
    SEND OK / SEND FAIL / ERROR.
  * recv(n): __dataInBuffer() (AT+QIRD=1,0 -> field 2 of "+QIRD: a,b,c" non-zero, then the OK
    flushed), __readFromBuffer(n) (AT+QIRD=1,<n>, the "+QIRD: <len>" line, then ONE __read up
    to "\\r\\n" cut to [:len-1], then the OK flushed); else lines until one holding '"recv"' for
    this socket: push mode -> the next line cut to [:len-1]; buffer mode -> __readFromBuffer.
  * getStatus(): AT+QISTATE, lines .strip("+QISTATE: ").split(","), field 5 of this socket's.
  * close(): AT+QICLOSE=1 wanting OK.
  The BG77Socket methods call the BG77's double-underscore methods (self.modem.__read): that
  works on MicroPython, which does not mangle private names; the port calls them the same way
  (CPython would raise AttributeError).  MicroPython's time.time() counts whole seconds, so the
  driver's "1 s" waits really last 0-1 s; the port uses a fractional clock (the timeouts as
  written), as a port with a float time() would.
- store file id 5670323905 (an STM32F7 HAL + DMA test firmware's main file, at_send_func() /
  at_parse(), 13,972 characters, read whole) with its header ec20.h, store file id 6306721395
  (5,197 characters, read whole: TCPCONN_PUBLIC_DIR, DIR_OUTPU_1, QICLOSE).  What the model
  keeps:
  * EC20_Send_ATCMD(): strlen(data) bytes in one transmit (the lone 0x1A of send_0x1a[1] is
    not NUL-terminated in the source; the model sends the one byte).  The RX DMA/ISR appends
    everything to at_data.buf, which the code clears (memset, idx 0) before each command and
    reads as a C string.
  * at_send_func(): AT+QIOPEN=1,0,"TCP","101.200.44.18",53881,0,1 (direct push), then every
    100 ms (9 looks) strstr "+QIOPEN: 0,0"; AT+QISEND=0 (variable length), up to 49 looks
    100 ms apart for "\\r\\n> "; the request, then Ctrl+Z; then every 3 s (29 looks at most):
    strcpy into the 512-byte at_buf_copy and at_parse() -- 0 ends the wait; success or not,
    AT+QICLOSE=0, 100 ms, return.
  * at_parse(): from pos, find '+QIURC: "recv"'; the line's CR LF; the length from offset 17
    of the URC (one-digit connectID) to the CR (atoi); give up (-1) when strlen(copy) - end
    < len, else copy len bytes after the CR LF into recv_buf; pos moves past them; no more
    URCs -> 0 if recv_buf holds anything.

How they are driven: CatSocks through pyserial on the pty (its own timeouts and drains); the
BG77 driver on a raw non-blocking descriptor read one byte per call (as UART.read(1)), its
commands written in one piece each; the EC20 firmware through a reader thread standing for its
RX DMA (pieces of 1, 5, 3, 64 and 7 bytes) and one write per EC20_Send_ATCMD().  Every address
the tools dial is routed to loopback TCP/UDP peers; a port with no listener behind its route is
a refused connect.

What the replay shows (no emulator bug found; each failure below is the driver's own, on any
module that answers as the TCP/IP notes say):
* CatSocks on TCP: a listening port is OPEN (+QIOPEN: 0,0; the server sees the connection and
  its end after AT+QICLOSE=0,10), a refused one CLOSED (+QIOPEN: 0,566), one that accepts and
  closes at once still OPEN, AT+QISTATE? stops listing connectID 0 at once after the close.  With no PDP context, each open's URC is 561:
  three UNKNOWNs and the IP is reported DOWN, after check_context() has warned.
* CatSocks on UDP: the probe goes out as one datagram, the echo's '+QIURC: "recv",0' marks the
  port OPEN, AT+QIRD=0,1500 gives the datagram back byte for byte ("+QIRD: <n>" with no address
  on a plain "UDP" socket, which the tool's regex needs); a UDP port with nothing behind it is
  OPEN|FILTERED (no "closed" URC, the socket still listed) -- UDP has no connection to refuse.
* BG77 on an EC2x as it comes up: AT+CEREG=4 is outside the EC2x's <n> range (0-2: ERROR), so
  +CEREG: stays "0,1" and isRegistered()'s field 1 is "1\\r\\n\\r\\nOK": socket() refuses to open
  ("not registered").  With AT+CEREG=2 set by the board first, the driver works: open, send,
  buffer-mode recv through AT+QIRD=1,0 and AT+QIRD=1,<n>, AT+QISTATE's state 2, close.
* The driver's own cuts: __readFromBuffer() keeps data[:len-1] of ONE line, so a reply must end
  in a single "\\n" to come back whole (a reply without it loses its last byte, one holding
  "\\r\\n" is cut there, the rest eaten by the OK flush); push mode works when the host is already
  waiting in recv() as the data arrive (had the push come before recv()'s AT+QIRD=1,0, the
  driver's line loop there would swallow it).  A UDP socket works the same way.  close()
  waits 1 s for OK while AT+QICLOSE waits up to 10 s for a server that has not closed: the
  tests' servers close first.  getStatus() would crash (int() of a URC line) if a URC sat in
  AT+QISTATE's answer.
* EC20 firmware: the request reaches the server byte for byte (Ctrl+Z not sent on), the answer
  comes as one push per TCP segment ('+QIURC: "recv",0,17' CR LF "HTTP/1.1 200 OK" CR LF ...,
  the very shape of the source's comment) and at_parse() rebuilds it exactly.  Its own race:
  an answer whose rest arrives after the first 3 s look is cut to what came first (0 returned,
  the socket closed, the rest never read).  Its buffers hold 512 bytes: a longer answer (or
  the module's echo of the request, with ATE1) overflows at_buf_copy in the source.
"""
from __future__ import annotations

import os
import re
import select
import threading
import time

import pytest
import serial

from emulator.testing.peers import TcpServer, UdpEchoServer
from tests.e2e.socket_support import activate_pdp, free_port, raw_open

SCAN_IP = "203.0.113.7"            # the scanned host (TEST-NET-3), routed port by port


# --- CatSocks (store id 65807983314) -----------------------------------------------------------

VERBOSE = True                      # scan_udp() reads the reply only in verbose mode


def read_until(ser, until, timeout, stop_on_status=False, drain=0.15):
    deadline = time.time() + timeout
    buf = ""
    while time.time() < deadline:
        n = ser.in_waiting
        chunk = ser.read(n if n else 1).decode("latin-1")
        buf += chunk
        if until and until in buf:
            break
        if stop_on_status and ("OK" in buf or "ERROR" in buf):
            break
    if drain:
        quiet_until = time.time() + drain
        while time.time() < quiet_until:
            n = ser.in_waiting
            if n:
                buf += ser.read(n).decode("latin-1")
                quiet_until = time.time() + drain
            else:
                time.sleep(0.02)
    return buf


class Wire:
    """The serial port with a log of every at_cmd() (command, answer)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, baudrate=115200, timeout=0.2)
        self.log: list[tuple[str, str]] = []

    def close(self) -> None:
        self.ser.close()

    def answer(self, prefix: str) -> str:
        return next(a for c, a in self.log if c.startswith(prefix))


def at_cmd(wire: Wire, cmd, until=None, timeout=5):
    ser = wire.ser
    ser.reset_input_buffer()
    ser.write((cmd + "\r\n").encode())
    response = read_until(ser, until, timeout, stop_on_status=(until is None))
    wire.log.append((cmd, response))
    return response


class QuectelDriver:
    name = "quectel"
    conn = 0
    context = 1
    recv_token = '"recv"'

    def setup(self, ser):
        at_cmd(ser, "AT+CMEE=2", until="OK", timeout=5)

    def check_context(self, ser):
        state = at_cmd(ser, "AT+QIACT?", until="OK", timeout=5)
        if re.search(rf"\+QIACT:\s*{self.context},\s*1", state):
            return True, None
        return False, state.strip() or "no +QIACT: response"

    def open(self, ser, proto, ip, port, timeout=10):
        for _ in range(2):
            resp = at_cmd(ser, f'AT+QIOPEN={self.context},{self.conn},"{proto}","{ip}",{port},0,0',
                          until="+QIOPEN:", timeout=timeout)
            m = re.search(r"\+QIOPEN:\s*\d+,(\d+)", resp)
            if m:
                return m.group(1) == "0", m.group(1)
            self.close(ser)
        return False, None

    def classify_tcp(self, established, code):
        if established:
            return "open"
        if code == "566":
            return "closed"
        return "unknown"

    def send(self, wire, payload):
        ser = wire.ser
        ser.reset_input_buffer()
        ser.write((f"AT+QISEND={self.conn},{len(payload)}" + "\r\n").encode())
        prompt = read_until(ser, ">", timeout=5)
        ser.write(payload)
        response = read_until(ser, "SEND OK", timeout=5)
        wire.log.append(("AT+QISEND", prompt + "|" + response))
        return response

    def has_pending_data(self, ser):
        return False

    def read_data(self, ser):
        resp = at_cmd(ser, f"AT+QIRD={self.conn},1500", until="\r\nOK\r\n", timeout=5)
        m = re.search(r"\+QIRD:\s*(\d+)\r?\n", resp)
        if not m:
            return None
        n = int(m.group(1))
        return resp[m.end():m.end() + n].encode("latin-1") if n else None

    def is_udp_closed(self, reply):
        return '"closed"' in reply or "ERROR" in reply

    def is_socket_open(self, ser):
        state = at_cmd(ser, "AT+QISTATE?", until="OK", timeout=3)
        return bool(re.search(rf'\+QISTATE:\s*{self.conn},', state))

    def close(self, ser, timeout=10):
        at_cmd(ser, f"AT+QICLOSE={self.conn},10", timeout=timeout)
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = at_cmd(ser, "AT+QISTATE?", until="OK", timeout=3)
            if not re.search(rf'\+QISTATE:\s*{self.conn},', state):
                return
            time.sleep(0.2)


UDP_PAYLOADS = {123: b"\x1b" + b"\x00" * 47}
DEFAULT_UDP_PAYLOAD = b"\x00\x00\x00\x00"
DOWN_AFTER = 3


def scan_tcp(driver, ser, ip, port, seen_valid, unknowns, out):
    established, code = driver.open(ser, "TCP", ip, port)
    driver.close(ser)
    cls = driver.classify_tcp(established, code)
    if cls == "open":
        out.append((ip, port, "tcp", "OPEN", code))
        return True, 0
    if cls == "closed":
        out.append((ip, port, "tcp", "CLOSED", code))
        return True, 0
    unknowns += 1
    out.append((ip, port, "tcp", "UNKNOWN", code))
    if not seen_valid and unknowns >= DOWN_AFTER:
        out.append((ip, None, "tcp", "DOWN", code))
        return None
    return seen_valid, unknowns


def scan_udp(driver, wire, ip, port, udp_wait, out, replies):
    payload = UDP_PAYLOADS.get(port, DEFAULT_UDP_PAYLOAD)
    established, code = driver.open(wire, "UDP", ip, port)
    if not established:
        driver.close(wire)
        out.append((ip, port, "udp", "SOCKET-FAIL", code))
        return
    sent = driver.send(wire, payload) or ""
    if driver.recv_token in sent:
        reply = sent
    else:
        reply = sent + read_until(wire.ser, driver.recv_token, timeout=udp_wait)
    if driver.recv_token in reply:
        state = "OPEN"
    elif driver.is_udp_closed(reply):
        state = "CLOSED"
    elif driver.has_pending_data(wire):
        state = "OPEN"
    elif not driver.is_socket_open(wire):
        state = "CLOSED"
    else:
        state = "OPEN|FILTERED"
    if state == "OPEN" and VERBOSE:
        replies[port] = driver.read_data(wire)
    driver.close(wire)
    out.append((ip, port, "udp", state, code))


def catsocks_main(path, ips, ports, protos=("TCP",), udp_wait=3.0, delay=0.5):
    """main() without argparse: the results as (ip, port, proto, state, code) rows."""
    driver = QuectelDriver()
    wire = Wire(path)
    out: list[tuple] = []
    replies: dict[int, bytes | None] = {}
    try:
        driver.setup(wire)
        ok, detail = driver.check_context(wire)
        for ip in ips:
            seen_valid, unknowns, host_down = False, 0, False
            for port in ports:
                for proto in protos:
                    if proto == "TCP":
                        result = scan_tcp(driver, wire, ip, int(port), seen_valid, unknowns, out)
                        if result is None:
                            host_down = True
                            break
                        seen_valid, unknowns = result
                    else:
                        scan_udp(driver, wire, ip, int(port), udp_wait, out, replies)
                    time.sleep(delay)
                if host_down:
                    break
    finally:
        wire.close()
    return {"context": (ok, detail), "results": out, "replies": replies, "log": wire.log}


def closed_port() -> int:
    """A loopback TCP port nothing listens on (a connect is refused)."""
    return free_port()


def test_catsocks_tcp_scan_open_and_closed_ports(driver_path, emulator, strict_log):
    """Four ports of one IP: 80 and 8443 routed to listening loopback servers, 23 routed to a
    port nothing listens on, 25 to a server that accepts and closes at once.  OPEN, CLOSED
    (566), OPEN, OPEN in the port order (the last one's '+QIURC: "closed",0' thrown away by
    the next at_cmd()'s reset_input_buffer()); each open server sees one connection which ends
    after AT+QICLOSE=0,10; AT+QISTATE? lists no connectID 0 at the first poll after each close
    (the echo of the module's ATE1 left in every answer)."""
    activate_pdp(driver_path)
    with TcpServer("echo") as web, TcpServer("echo") as tls, TcpServer("close") as smtp:
        emulator.router.add_map(SCAN_IP, 80, "127.0.0.1", web.port)
        emulator.router.add_map(SCAN_IP, 8443, "127.0.0.1", tls.port)
        emulator.router.add_map(SCAN_IP, 23, "127.0.0.1", closed_port())
        emulator.router.add_map(SCAN_IP, 25, "127.0.0.1", smtp.port)
        run = catsocks_main(driver_path, [SCAN_IP], ["80", "23", "8443", "25"], delay=0.1)
        assert run["context"] == (True, None)
        assert [(r[1], r[3], r[4]) for r in run["results"]] == [
            (80, "OPEN", "0"), (23, "CLOSED", "566"), (8443, "OPEN", "0"),
            (25, "OPEN", "0")], run["log"]
        assert len(smtp.connections) == 1      # accepted, then closed at once by the server
        for server in (web, tls):
            assert len(server.connections) == 1
            assert server.gone(0, timeout=5)
        opens = [a for c, a in run["log"] if c.startswith("AT+QIOPEN=")]
        assert opens[1].endswith("\r\nOK\r\n\r\n+QIOPEN: 0,566\r\n"), opens
        polls = [a for c, a in run["log"] if c == "AT+QISTATE?"]
        assert len(polls) == 4 and all("+QISTATE: 0," not in p for p in polls), polls
        closes = [a for c, a in run["log"] if c.startswith("AT+QICLOSE=0,10")]
        assert all(a.endswith("\r\nOK\r\n") for a in closes), closes


def test_catsocks_without_pdp_context_reports_the_host_down(driver_path, emulator, strict_log):
    """The module as it comes up (no AT+QIACT): check_context() sees no '+QIACT: 1,1' and the
    tool warns; every open answers OK then '+QIOPEN: 0,561', an UNKNOWN each, and after the
    third the IP is reported DOWN and the fourth port is never tried."""
    with TcpServer("sink") as web:
        for port in (21, 22, 80, 443):
            emulator.router.add_map(SCAN_IP, port, "127.0.0.1", web.port)
        run = catsocks_main(driver_path, [SCAN_IP], ["21", "22", "80", "443"], delay=0.05)
        ok, detail = run["context"]
        assert not ok and detail.endswith("OK"), detail
        assert [(r[1], r[3], r[4]) for r in run["results"]] == [
            (21, "UNKNOWN", "561"), (22, "UNKNOWN", "561"), (80, "UNKNOWN", "561"),
            (None, "DOWN", "561")], run["log"]
        assert not any(c.startswith('AT+QIOPEN=1,0,"TCP","203.0.113.7",443') for c, _ in run["log"])
        assert web.connections == []


def test_catsocks_udp_scan_reads_the_reply_back_byte_for_byte(driver_path, emulator, strict_log):
    """UDP 123 routed to an echo server: the NTP probe (0x1b and 47 zero bytes) leaves as one
    datagram; the echo's '+QIURC: "recv",0' comes with or after SEND OK -> OPEN; the verbose
    read AT+QIRD=0,1500 answers "+QIRD: 48" CR LF and the 48 bytes, which the tool's regex
    and latin-1 round trip give back exactly.  UDP 9 routed to a port with no listener gives
    no "recv" within udp_wait and no "closed" URC: the socket is still listed by AT+QISTATE?,
    so OPEN|FILTERED."""
    activate_pdp(driver_path)
    with UdpEchoServer() as ntp:
        emulator.router.add_map(SCAN_IP, 123, "127.0.0.1", ntp.port)
        emulator.router.add_map(SCAN_IP, 9, "127.0.0.1", free_port())
        run = catsocks_main(driver_path, [SCAN_IP], ["123", "9"], protos=("UDP",), udp_wait=1.5,
                            delay=0.1)
        assert [(r[1], r[3], r[4]) for r in run["results"]] == [
            (123, "OPEN", "0"), (9, "OPEN|FILTERED", "0")], run["log"]
        probe = b"\x1b" + b"\x00" * 47
        assert [d for _, d in ntp.wait_datagrams(1)] == [probe]
        assert run["replies"][123] == probe
        qird = run["log"][[c for c, _ in run["log"]].index("AT+QIRD=0,1500")][1]
        assert "\r\n+QIRD: 48\r\n" in qird and qird.endswith("\r\nOK\r\n"), qird
        sends = [a for c, a in run["log"] if c == "AT+QISEND"]
        assert all("\r\n> " in s.split("|")[0] and "SEND OK" in s for s in sends), sends


# --- BG77 MicroPython driver (store id 18738733487) --------------------------------------------

AF_INET, SOCK_STREAM, SOCK_DGRAM = 0, 0, 1
SOCK_CLIENT, SOCK_SERVER = 0, 1
SOCK_PUSH_BUFFER, SOCK_PUSH_TERMINAL = 0, 1


class Uart:
    """machine.UART on the pty: write() in one piece, read(1) -> one byte or None."""

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.wire = bytearray()
        self.tx: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.tx.append(bytes(data))
        os.write(self.fd, data)
        return len(data)

    def read(self, n: int):
        if not select.select([self.fd], [], [], 0.002)[0]:
            return None
        try:
            b = os.read(self.fd, n)
        except BlockingIOError:
            return None
        self.wire += b
        return b or None

    def close(self) -> None:
        os.close(self.fd)


def ticks_ms() -> int:
    return int(time.monotonic() * 1000)


class BG77:
    echo = True
    rat = 0
    socket_mounted = False

    def __init__(self, serial, verbose=False, radio=True) -> None:
        self.serial = serial
        self.verbose = verbose
        if not self.testAT():
            raise OSError("BG77 Init: Cannot get the response from the device.")
        if self.setEcho(False):
            self.echo = False
        else:
            raise OSError("BG77 Init: Could not configure Echo.")
        if not self.setCEREG(4):
            raise OSError("BG77 Error setting CEREG")

    # MicroPython does not mangle __read: BG77Socket's self.modem.__read reaches it there.
    def read_(self, exit_condition="OK\r\n", timeout=1) -> str:
        time_start = time.time()
        data_out = ""
        while time.time() < (time_start + timeout):
            data_tmp = self.serial.read(1)
            if data_tmp:
                data_out = data_out + str(data_tmp, "ascii")
            if exit_condition in data_out:
                break
        return data_out

    def write_(self, cmd: str) -> None:
        self.serial.write(bytes(cmd, "ascii"))

    def sendCommand(self, cmd: str, exit_condition="OK\r\n", timeout=1) -> str:
        self.write_(cmd)
        return self.read_(exit_condition, timeout).strip("b'\r\n")

    def testAT(self) -> bool:
        return "OK" in self.sendCommand("AT\r\n")

    def setEcho(self, echo: bool) -> bool:
        return "OK" in self.sendCommand("ATE1\r\n" if echo else "ATE0\r\n")

    def setCEREG(self, mode: int) -> bool:
        if mode in (0, 1, 2, 4):
            self.sendCommand(f"AT+CEREG={mode}\r\n")
        else:
            raise OSError("BG77 Invalid CEREG mode.")
        return True

    def isRegistered(self) -> bool:
        ret = self.sendCommand("AT+CEREG?\r\n")
        if "+CEREG" in ret:
            data = ret.strip("+CEREG: ").split(",")
            if data[1] == "1" or data[1] == "5":
                if data[0] == "4":
                    if data[4] == "8":
                        self.rat = 0
                    elif data[4] == "9":
                        self.rat = 1
                return True
        return False

    def socket(self, socket_class, socket_protocol, socket_mode=SOCK_CLIENT,
               socket_push_mode=SOCK_PUSH_BUFFER):
        if not self.isRegistered():
            return False, None
        if not socket_class == AF_INET:
            return False, None
        if socket_protocol != SOCK_DGRAM and socket_protocol != SOCK_STREAM:
            return False, None
        return True, BG77Socket(self, 1, socket_class, socket_protocol, socket_mode, socket_push_mode)


class BG77Socket:
    timeout = -1

    def __init__(self, bg77, socket_num, socket_class, socket_protocol, socket_mode,
                 socket_push_mode) -> None:
        self.modem = bg77
        self.socket_num = socket_num
        self.socket_class = socket_class
        self.socket_protocol = socket_protocol
        self.socket_mode = socket_mode
        self.socket_push_mode = socket_push_mode
        self.sock_open = False

    def settimeout(self, to):
        self.timeout = to * 1000 if to > 0 else -1

    def connect(self, ip="127.0.0.1", remote_port=0, local_port=0):
        proto = ""
        if self.socket_mode == SOCK_CLIENT:
            proto = '"UDP"' if self.socket_protocol == SOCK_DGRAM else '"TCP"'
        cmd = (f'AT+QIOPEN=1,{self.socket_num},{proto},"{ip}",{remote_port},{local_port},'
               f'{self.socket_push_mode}\r\n')
        ret = self.modem.sendCommand(cmd)
        if "OK" not in ret:
            return False
        retry_num = 0
        while retry_num < 10:
            ret = self.modem.read_(exit_condition="\r\n").strip("\r\n")
            if "+QIOPEN" in ret:
                args_split = ret.strip("+QIOPEN: ").split(",")
                if args_split[1] == "0":
                    self.sock_open = True
                    return True
                return False
            retry_num += 1
        return False

    def close(self):
        return "OK" in self.modem.sendCommand(f"AT+QICLOSE={self.socket_num}\r\n")

    def send(self, data, rai=0):
        if len(data) > 1460:
            return False
        self.modem.sendCommand(f"AT+QISEND={self.socket_num},{len(data)}\r\n", exit_condition=">")
        self.modem.sendCommand(f"{data}", exit_condition="\r\n")
        retry_num = 0
        while retry_num < 10:
            ret = self.modem.read_("\r\n")
            if "SEND OK" in ret:
                return True
            elif "SEND FAIL" in ret:
                return False
            elif "ERROR" in ret:
                return False
            retry_num += 1
        return False

    def recv(self, num_bytes=100):
        if self.dataInBuffer():
            return self.readFromBuffer(num_bytes)
        if self.timeout == -1:
            raise AssertionError("the tests always set a timeout (the driver would wait forever)")
        start = ticks_ms()
        while ticks_ms() < start + self.timeout:
            ret = self.modem.read_(exit_condition="\r\n")
            if '"recv"' in ret:
                ret = ret.strip('+QIURC: "recv",').strip("\r\n")
                ret_split = ret.split(",")
                if int(ret_split[0]) == self.socket_num:
                    if self.socket_push_mode == SOCK_PUSH_TERMINAL:
                        data_len = int(ret_split[1])
                        message_response = self.modem.read_(exit_condition="\r\n")
                        return data_len, message_response[:data_len - 1]
                    elif self.socket_mode == SOCK_PUSH_BUFFER:      # (sic: socket_mode)
                        return self.readFromBuffer(num_bytes)
        return 0, None

    def getStatus(self):
        ret = self.modem.sendCommand("AT+QISTATE\r\n")
        if "+QISTATE: " in ret:
            ret = ret.strip("\r\nOK\r\n")
            for open_connection in ret.split("\r\n"):
                in_data_split = open_connection.strip("+QISTATE: ").split(",")
                if int(in_data_split[0]) == self.socket_num:
                    return int(in_data_split[5])
        return -1

    def dataInBuffer(self) -> bool:
        ret = self.modem.sendCommand(f"AT+QIRD={self.socket_num},0\r\n", exit_condition="\r\n")
        retry_num = 0
        while "+QIRD" not in ret:
            ret = self.modem.read_(exit_condition="\r\n")
            retry_num += 1
            if retry_num > 9:
                return False
        ret_split = ret.strip("\r\n").strip("+QIRD: ").split(",")
        self.modem.read_()
        return ret_split[2] != "0"

    def readFromBuffer(self, data_size):
        ret = self.modem.sendCommand(f"AT+QIRD={self.socket_num},{data_size}\r\n",
                                     exit_condition="\r\n")
        retry_num = 0
        while "+QIRD" not in ret:
            ret = self.modem.read_(exit_condition="\r\n")
            retry_num += 1
            if retry_num > 9:
                return False
        data_len = int(ret.strip("\r\n").strip("+QIRD: "))
        message_raw = self.modem.read_(exit_condition="\r\n")
        message = message_raw[:data_len - 1]
        self.modem.read_()
        return data_len, message


@pytest.fixture
def uart(driver_path):
    u = Uart(driver_path)
    yield u
    u.close()


def board_setup(path: str, cereg: int | None) -> None:
    """What the board did before the driver runs: PDP up (and AT+CEREG=<n> if given)."""
    activate_pdp(path)
    if cereg is not None:
        from emulator.testing.host import Host
        h = Host(path)
        try:
            assert h.at(f"AT+CEREG={cereg}").endswith(b"\r\nOK\r\n")
        finally:
            h.close()


def test_bg77_on_an_ec2x_as_it_comes_up_refuses_to_open(uart, driver_path, strict_log):
    """The constructor's AT, ATE0 pass (the echo of "AT" is still on, "OK" is in it);
    AT+CEREG=4 is outside the EC2x's <n> range (0-2): ERROR, ignored by the driver.  socket()
    asks AT+CEREG? and gets "+CEREG: 0,1": field 1 after the driver's split is "1\\r\\n\\r\\nOK",
    not "1", so the driver says "not registered" and returns (False, None) -- the driver's
    BG77 assumption (an <n> of 4 whose answer has more fields), not the module's."""
    activate_pdp(driver_path)
    bg = BG77(uart)
    wire = bytes(uart.wire)
    assert b"AT\r\r\nOK\r\n" in wire and b"ATE0\r\r\nOK\r\n" in wire
    assert b"AT+CEREG=4\r\n" in uart.tx
    assert wire.endswith(b"ATE0\r\r\nOK\r\n\r\nERROR\r\n"), wire
    ok, sock = bg.socket(AF_INET, SOCK_STREAM)
    assert (ok, sock) == (False, None)
    assert bytes(uart.wire).endswith(b"\r\n+CEREG: 0,1\r\n\r\nOK\r\n")
    assert not any(t.startswith(b"AT+QIOPEN") for t in uart.tx)


def test_bg77_tcp_round_trip_in_buffer_mode(uart, driver_path, emulator, strict_log):
    """With AT+CEREG=2 set by the board, the whole socket life: AT+QIOPEN=1,1,"TCP",... ->
    OK and '+QIOPEN: 1,0' (found on the second line read), AT+QISEND=1,16 up to ">", the data,
    SEND OK; recv(): AT+QIRD=1,0 -> "+QIRD: 16,0,16" (unread 16), AT+QIRD=1,100 -> 16 bytes,
    the line cut to [:15] (the server's "\\n" dropped, as the driver means); AT+QISTATE's
    field 5 is 2 (connected); AT+QICLOSE=1 -> OK and the server sees the end."""
    board_setup(driver_path, cereg=2)
    with TcpServer("echo") as srv:
        emulator.router.add_map("10.11.12.13", 7000, "127.0.0.1", srv.port)
        bg = BG77(uart)
        ok, sock = bg.socket(AF_INET, SOCK_STREAM)
        assert ok
        assert sock.connect("10.11.12.13", 7000) is True
        assert sock.send("hello from bg77\n") is True
        assert srv.wait_connection().wait_received(16) == b"hello from bg77\n"
        time.sleep(0.3)                                  # the echo is back in the module
        sock.settimeout(3)
        assert sock.recv(100) == (16, "hello from bg77")
        assert b"\r\n+QIRD: 16,0,16\r\n\r\nOK\r\n" in uart.wire
        assert b"\r\n+QIRD: 16\r\nhello from bg77\n\r\n\r\nOK\r\n" in uart.wire
        assert sock.getStatus() == 2
        assert sock.close() is True
        assert srv.gone(0, timeout=5)


def test_bg77_read_cuts_the_last_byte_of_a_reply_without_newline(uart, driver_path, emulator, strict_log):
    """The driver's own framing: __readFromBuffer() keeps ONE line cut to [:len-1].  A reply
    without a trailing "\\n" loses its last byte ("PONG!" -> "PONG", the count still 5), and a
    reply holding "\\r\\n" is cut at it, the rest eaten by the OK flush (the next read finds
    nothing).  The module framed both as the note says ("+QIRD: <n>" CR LF, n bytes, CR LF OK)."""
    board_setup(driver_path, cereg=2)
    replies = [b"PONG!", b"line1\r\nline2\n"]

    def behave(conn):
        for r in replies:
            conn.sock.recv(100)
            conn.sock.sendall(r)
        conn.close()                    # (else AT+QICLOSE waits up to 10 s for the FIN)
    with TcpServer(behave=behave) as srv:
        emulator.router.add_map("10.11.12.13", 7001, "127.0.0.1", srv.port)
        bg = BG77(uart)
        ok, sock = bg.socket(AF_INET, SOCK_STREAM)
        assert ok and sock.connect("10.11.12.13", 7001)
        sock.settimeout(3)
        assert sock.send("ping") is True
        assert sock.recv(100) in ((5, "PONG"),)
        assert b"\r\n+QIRD: 5\r\nPONG!\r\n\r\nOK\r\n" in uart.wire
        assert sock.send("ping") is True
        assert sock.recv(100) == (13, "line1\r\n")
        assert b"\r\n+QIRD: 13\r\nline1\r\nline2\n\r\n\r\nOK\r\n" in uart.wire
        assert sock.dataInBuffer() is False                 # the rest went with the flush
        assert sock.close()


def test_bg77_push_mode_when_the_host_waits_first(uart, driver_path, emulator, strict_log):
    """Push mode (AT+QIOPEN ...,1): the host is in recv() (AT+QIRD=1,0 answers "+QIRD: 0,0,0"
    at once, the driver then reads lines) when the server's delayed reply arrives as
    '+QIURC: "recv",1,12' CR LF and the data: the URC's fields give the length, the next line
    the data cut to [:11]."""
    board_setup(driver_path, cereg=2)

    def behave(conn):
        conn.sock.recv(100)
        time.sleep(0.8)
        conn.sock.sendall(b"pushed data\n")
        time.sleep(0.3)
        conn.close()
    with TcpServer(behave=behave) as srv:
        emulator.router.add_map("10.11.12.13", 7002, "127.0.0.1", srv.port)
        bg = BG77(uart)
        ok, sock = bg.socket(AF_INET, SOCK_STREAM, socket_push_mode=SOCK_PUSH_TERMINAL)
        assert ok and sock.connect("10.11.12.13", 7002)
        assert b'AT+QIOPEN=1,1,"TCP","10.11.12.13",7002,0,1\r\n' in uart.tx
        sock.settimeout(4)
        assert sock.send("go") is True
        assert sock.recv(100) == (12, "pushed data")
        assert b"\r\n+QIRD: 0,0,0\r\n\r\nOK\r\n" in uart.wire
        assert b'\r\n+QIURC: "recv",1,12\r\npushed data\n\r\n' in uart.wire
        assert sock.close()


# --- STM32 + DMA EC20 HTTP upload over a direct-push socket (store ids 5670323905, 6306721395) ---

TCPCONN_PUBLIC_DIR = b'AT+QIOPEN=1,0,"TCP","101.200.44.18",53881,0,1\r\n'
DIR_OUTPU_1 = b"AT+QISEND=0\r\n"
QICLOSE = b"AT+QICLOSE=0\r\n"
SEND_0X1A = b"\x1a"
TEST_EC20 = (b"POST /te-1/v1/alarmEvents HTTP/1.1\r\nUser-Agent: Mozilla/4.0 (compatible; MSIE 5.00; "
             b"Windows 98)\r\nContent-Type: application/json\r\nHost: 192.168.3.135\r\n"
             b"Content-Length: 213\r\n\r\n"
             b'{"code":"12345678","link":1,"data":[{"controller_type_code":14,"controller_num":1,'
             b'"equipment_num":4,"module_num":0,"loop_num":1,"addr_num":4,"chan_num":0,'
             b'"dev_code":18,"datetime":"20200624184145","evt_code":296}]}')


class DmaUart:
    """USART2 with its receive DMA/ISR: a thread appends every byte the module sends to
    at_data.buf (read in odd-sized pieces); the main loop clears it (memset, idx = 0) and looks
    at it as a C string.  EC20_Send_ATCMD() transmits strlen(data) bytes in one piece."""

    SIZES = (1, 5, 3, 64, 7)

    def __init__(self, path: str) -> None:
        self.fd = raw_open(path)
        self.buf = bytearray()
        self.wire = bytearray()
        self.tx = bytearray()
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._isr, daemon=True)
        self._thread.start()

    def _isr(self) -> None:
        turn = 0
        while not self._stop:
            if not select.select([self.fd], [], [], 0.01)[0]:
                continue
            try:
                chunk = os.read(self.fd, self.SIZES[turn % len(self.SIZES)])
            except (BlockingIOError, OSError):
                continue
            turn += 1
            with self._lock:
                self.buf += chunk
                self.wire += chunk

    def clear(self) -> None:
        with self._lock:
            self.buf.clear()

    def text(self) -> bytes:
        with self._lock:
            return bytes(self.buf).split(b"\0", 1)[0]

    def send_atcmd(self, data: bytes) -> None:
        data = data.split(b"\0", 1)[0]
        self.tx += data
        os.write(self.fd, data)

    def close(self) -> None:
        self._stop = True
        self._thread.join(1)
        os.close(self.fd)


def find_pattern(msg: bytes, pattern: bytes) -> int:
    return msg.split(b"\0", 1)[0].find(pattern)


def c_atoi(raw: bytes) -> int:
    m = re.match(rb"\s*([+-]?\d+)", raw)
    return int(m.group(1)) if m else 0


def at_parse(at_buf_copy: bytes) -> tuple[int, bytes]:
    """at_parse() over the 512-byte copy (zeros after the string): (ret_code, recv_buf as a
    C string)."""
    copy = at_buf_copy + b"\0" * (1024 - len(at_buf_copy))
    out = bytearray()
    ret, pos = -1, 0
    while True:
        start = find_pattern(copy[pos:], b'+QIURC: "recv"')
        if start == -1:
            ret = 0 if out.split(b"\0", 1)[0] else -1
            break
        end = find_pattern(copy[start + pos:], b"\r\n")
        if end == -1:
            break
        n = c_atoi(copy[start + pos + 17:start + pos + 17 + max(end - 17, 0)])
        if len(at_buf_copy) - end < n:
            break
        for i in range(n):
            out.append(copy[start + pos + end + i + 2])
        pos = start + end + n + 2 + pos
    return ret, bytes(out).split(b"\0", 1)[0]


def at_send_func(uart: DmaUart, send_buf: bytes, first_wait: float = 3.0) -> tuple[int, bytes]:
    """at_send_func(): (return code, recv_buf)."""
    uart.clear()
    uart.send_atcmd(TCPCONN_PUBLIC_DIR)
    count, ok = 0, True
    while True:
        count += 1
        time.sleep(0.1)
        if count >= 10:
            ok = False
            break
        if b"+QIOPEN: 0,0" in uart.text():
            break
    if ok:
        uart.clear()
        uart.send_atcmd(DIR_OUTPU_1)
        count = 0
        while True:
            count += 1
            if count >= 50:
                ok = False
                break
            if b"\r\n> " in uart.text():
                break
            time.sleep(0.1)
    recv = b""
    if ok:
        uart.clear()
        uart.send_atcmd(send_buf)
        uart.send_atcmd(SEND_0X1A)
        count, ok = 0, False
        while True:
            time.sleep(first_wait)
            count += 1
            if count >= 30:
                break
            at_buf_copy = uart.text()
            assert len(at_buf_copy) < 512, "strcpy() into the 512-byte at_buf_copy would overflow"
            ret, recv = at_parse(at_buf_copy)
            if ret == 0:
                ok = True
                break
    uart.clear()
    uart.send_atcmd(QICLOSE)
    time.sleep(0.1)
    return (0 if ok else -1), recv


@pytest.fixture
def ec20_dma(open_modem):
    host, _ = open_modem("ec2x")                    # EC20_Init(): ATE0 among its commands
    assert host.at('AT+QICSGP=1,1,"CMNET","","",0;+QIACT=1') == b"\r\nOK\r\n"
    host.close()
    uart = DmaUart(host.path)
    yield uart
    uart.close()


HTTP_HEAD = b"HTTP/1.1 200 OK\r\n"
HTTP_REST = (b"Content-Type: application/json\r\nContent-Length: 61\r\n\r\n"
             b'{"code": 0, "data": {"datetime": "20200521111111"}, "ok": 1}\n')


def http_peer(gap: float):
    """The server: reads the whole request (up to its 213-byte body), answers the status line,
    then after `gap` s the rest, and closes."""
    def behave(conn):
        want = len(TEST_EC20)
        got = b""
        while len(got) < want:
            chunk = conn.sock.recv(4096)
            if not chunk:
                break
            got += chunk
            conn.add(chunk)
        conn.sock.sendall(HTTP_HEAD)
        time.sleep(gap)
        conn.sock.sendall(HTTP_REST)
        time.sleep(0.2)
        conn.close()
    return behave


def test_ec20_dma_http_post_over_direct_push(ec20_dma, emulator, strict_log):
    """The whole at_send_func(): the open in push mode is seen within its 1 s of polls, the
    variable-length AT+QISEND=0 prompt "\\r\\n> " found, the request and a lone Ctrl+Z sent;
    the server gets the request byte for byte (no 0x1A).  Its answer comes as two pushes
    ('+QIURC: "recv",0,17' and '+QIURC: "recv",0,<n>', as in the driver's own comment),
    both in the buffer at the first 3 s look: at_parse() takes each length from offset 17 of
    its URC line and the bytes after its CR LF -- recv_buf is the response exactly.  Then
    AT+QICLOSE=0 (the server had closed: '+QIURC: "closed",0' came first)."""
    with TcpServer(behave=http_peer(0.3)) as srv:
        emulator.router.add_map("101.200.44.18", 53881, "127.0.0.1", srv.port)
        rc, recv = at_send_func(ec20_dma, TEST_EC20)
        assert rc == 0, bytes(ec20_dma.wire)
        assert recv == HTTP_HEAD + HTTP_REST
        conn = srv.wait_connection()
        assert bytes(conn.received) == TEST_EC20
        wire = bytes(ec20_dma.wire)
        assert b"\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n" in wire
        assert f'\r\n+QIURC: "recv",0,{len(HTTP_HEAD)}\r\n'.encode() + HTTP_HEAD in wire
        assert f'\r\n+QIURC: "recv",0,{len(HTTP_REST)}\r\n'.encode() + HTTP_REST in wire
        assert b'\r\n+QIURC: "closed",0\r\n' in wire
        assert ec20_dma.tx.endswith(TEST_EC20 + SEND_0X1A + QICLOSE)
        time.sleep(0.3)
        assert bytes(ec20_dma.wire).endswith(b"\r\nOK\r\n")      # the close's answer


def test_ec20_dma_first_look_takes_a_partial_answer(ec20_dma, emulator, strict_log):
    """The case the driver's comment leaves untested: the rest of the answer arrives after
    the first 3 s look.  at_parse() succeeds with what it has (the status line), the driver
    closes at once and the body pushed later is never read -- the driver's own race, the
    module pushing each piece as it came."""
    with TcpServer(behave=http_peer(4.0)) as srv:
        emulator.router.add_map("101.200.44.18", 53881, "127.0.0.1", srv.port)
        rc, recv = at_send_func(ec20_dma, TEST_EC20)
        assert (rc, recv) == (0, HTTP_HEAD), bytes(ec20_dma.wire)
        conn = srv.wait_connection()
        assert bytes(conn.received) == TEST_EC20
        assert HTTP_REST not in bytes(ec20_dma.wire)
        assert ec20_dma.tx.endswith(QICLOSE)


def test_bg77_udp_socket_round_trip(uart, driver_path, emulator, strict_log):
    """SOCK_DGRAM: AT+QIOPEN=1,1,"UDP",... -> '+QIOPEN: 1,0'; one datagram out; the echo is
    read in buffer mode as "+QIRD: 10" CR LF (no address on a plain "UDP" socket, so the
    driver's int() of the header works) and cut to [:9]; the peer saw the datagram whole."""
    board_setup(driver_path, cereg=2)
    with UdpEchoServer() as peer:
        emulator.router.add_map("10.11.12.14", 5683, "127.0.0.1", peer.port)
        bg = BG77(uart)
        ok, sock = bg.socket(AF_INET, SOCK_DGRAM)
        assert ok and sock.connect("10.11.12.14", 5683)
        assert b'AT+QIOPEN=1,1,"UDP","10.11.12.14",5683,0,0\r\n' in uart.tx
        sock.settimeout(3)
        assert sock.send("datagram\r\n") is True
        assert [d for _, d in peer.wait_datagrams(1)] == [b"datagram\r\n"]
        assert sock.recv(100) == (10, "datagram\r")
        assert b"\r\n+QIRD: 10\r\ndatagram\r\n\r\n\r\nOK\r\n" in uart.wire
        assert sock.getStatus() == 2
        assert sock.close()
