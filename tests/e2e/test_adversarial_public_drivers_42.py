"""Adversarial tests: a forty-second set of public host code pointed at the pty, through the
module's TCP/IP AT commands (AT+QIOPEN in direct-push and buffer access, AT+QISEND, AT+QIRD,
'+QIURC: "recv"' / "closed" / "dnsgip", AT+QISTATE, AT+QICLOSE, AT+QIDEACT) against loopback
peers.  None of the three was replayed before (a search of tests/ for "ec200x", "mo_netconn",
"at_parser_set_end_mark", "EG800KModem", "QuectelAT", "isRecvUrcSeen", "send_mms",
"_build_mms_pdu", "SMSHandler" finds nothing).  The reference store named none of the three
repositories; they are cited by store file id:

- store:26198243469 (OneOS molink ec200x_netconn.c) + store:26109139991 (ec200x.c) + store:39572723729 (molink parser/at_parser.c)
- store:53447338182 (EG800KModem.cpp) + store:53113687800 (QuectelAT.cpp) + store:53204627757 (QuectelAT.h)
- store:60877718205 (a Python SMS/MMS gateway's SMSHandler, "src.models.sms_message"; a later version is store:69478215466)

Programs replayed (public sources read through the reference store; paraphrased, not copied):

- China Mobile OneOS molink, EC200X module (Apache-2.0, "2020-03-25 OneOS Team"; the sibling
  ml302 module of flyghost/OneOS-V2.1.0 was replayed by test_adversarial_ml302_drivers.py).
  The parser file read is the molink at_parser.c whose exec takes an at_resp_t; ec200x_netconn.c
  is written against the older at_parser_set_resp() API of the same parser (same task,
  readline and response handling).  What the model keeps:
  * module_ec200x_create(): mo_object_init() -- at_parser_connect(): "AT\\r\\n" until an answer
    --, the "RDY" URC, ec200x_set_echo(off) = ATE0, then ec200x_netconn_init() ->
    ec200x_network_init(): AT+COPS? parsed with '+COPS: %*[^"]"%[^"]' (CHINA MOBILE -> CMNET,
    CHN-UNICOM -> UNINET, CHN-CT -> CTNET), AT+QICSGP=1,1,"<apn>","","",0, AT+QIDEACT=1 (40 s),
    AT+QIACT=1 (150 s), and only then the netconn URC table: prefix "SEND" / "+QIOPEN:" /
    "+QIURC:", suffix "\\r\\n".
  * at_parser: a command is the format's text then "\\r\\n" (two device writes); the parser task
    reads one byte at a time into a 512-byte line buffer (EC200X_RECV_BUFF_LEN; a longer line is
    dropped) and ends a line when the buffer starts with a URC prefix and ends with its suffix,
    at CR LF, or at the end mark's last character.  A URC line runs its handler in the parser
    task (which may read raw bytes with at_parser_recv()); else, with a response pending,
    at_parser_resp_handle(): an empty line (<= 2 bytes) is skipped, the line kept; "OK" (first
    two bytes, only with line_num 0 and no end mark) ends it OK, a line holding "ERROR" ends it
    ERROR, the line_num-th line ends it OK, a line ending in the end mark ends it OK.  A line
    with no response pending is dropped.  at_parser_get_line_by_kw() / get_data_by_kw() search
    the response lines.
  * ec200x_netconn_alloc(): the first free slot whose AT+QISTATE=1,<id> answer has no
    "+QISTATE:" line.  gethostbyname(): set_resp(128, 0, 300 ms), AT+QIDNSGIP=1,"<name>", then
    the DOMAIN_OK event (60 s): urc_qiurc_func() dispatches on data[9] ('c' closed, 'r' recv,
    'p' pdpdeact, 'd' dnsgip); the dnsgip handler takes a line with exactly three '.' and
    sscanf('+QIURC: "dnsgip","%[^"]').
  * connect(): set_resp(64, 0, 150 s), AT+QIOPEN=1,<id>,"TCP"|"UDP","<a.b.c.d>",<port>,0,1
    (direct push), then the socket's event bit (60 s) and CONN_OK / CONN_FAIL (1 s) from
    '+QIOPEN: %d,%d'.
  * send(): set_resp(128, 2, 5 s), end mark ">", 1460-byte pieces: AT+QISEND=<id>,<n>, the data
    (at_parser_send), then the socket's event bit (10 s) and SEND_OK / SEND_FAIL (1 s) raised by
    the "SEND" URC handler (strstr "SEND OK" / "SEND FAIL", for curr_connect), 10 ms between.
  * '+QIURC: "recv",%d,%d': at_parser_recv() of exactly <len> bytes, then 2 more ("handle
    \\r\\n"), the piece queued if the netconn is CONNECT.  '+QIURC: "closed",%d': state CLOSE,
    the data queue reset.  destroy(): AT+QICLOSE=<id> only in state INIT / CONNECT.
  * os_event_recv(OR | CLEAR) as OneOS (RT-Thread) does it: any requested bit, the requested
    bits cleared.  Timeouts over 10 s are scaled down (noted where).

- EG800KModem, an Arduino (ESP32) library for a Quectel EG800K, over its QuectelAT helper.
  What the model keeps:
  * QuectelAT::sendCommand(): print(cmd) then print("\\r\\n"); waitResponse(timeout, r1..r5)
    (defaults "OK\\r\\n", "ERROR\\r\\n"): one byte at a time from available()/read(), the
    first rN the collected text endsWith() wins (index 1..5, 0 = timeout); any text ending in
    '+QIURC: "recv"' sets the recv flag, as does processURC() (a 64-byte line buffer).
  * attachNetwork(): AT, ATE0 (results unused), AT+CPIN? until "+CPIN: READY" (then the OK),
    AT+CEREG? until "+CEREG: 0,1" / "0,5" / "1" / "5" (then the OK).  activatePDP():
    AT+QICSGP=1,1,"<apn>","","",0 (result unused), AT+QIACT=1 must give index 1 (150 s).
  * openSocket(): AT+QICLOSE=0 (2 s), AT+QIOPEN=1,0,"TCP","<host>",<port>,0,0 must answer OK
    (5 s), then waitResponse(150 s, "+QIOPEN: 0,0", "+QIOPEN:") -- per byte the shorter prefix
    matches first, so index 2 -- and the rest of the line to "\\r\\n": connected if it starts
    with "0,0" or holds ",0".  openSSLSocket(): AT+QSSLCFG="cacert",0,"<file>" (OK / ERROR,
    1 s), AT+QSSLOPEN=0,"<host>",<port> waiting for "CONNECT" / "ERROR" / "CLOSED".
  * send(): AT+QISEND=0,<len>, ">" (5 s), the bytes, "SEND OK\\r\\n" (10 s).  available():
    bytes left in its buffer, else (recv flag set or 100 ms since the last poll) AT+QIRD=0,0,
    "+QIRD: " (500 ms), the line's third field (unread), the OK.  receive(len): AT+QIRD=0,
    min(max(len, RX_BUFFER_SIZE), 1500), "+QIRD: " (1 s), the count line, that many bytes (at
    most RX_BUFFER_SIZE, 5 s), then "OK\\r\\n" / "OK"; served from its buffer.  RX_BUFFER_SIZE
    is in EG800KModem.h, not in the store: 512 assumed.  closeSocket(): AT+QICLOSE=0 (10 s).
  * the sketch loop modelled: processURC(); n = available(); receive(min(n, 256)).

- A Python SMS/MMS gateway for an EC25 (pyserial; SMSHandler): init_modem() and send_mms().
  * the port: Serial(port, 115200, timeout=2).  _read_until(markers, timeout): in_waiting bytes
    decoded as ASCII (errors ignored), returns as soon as any marker is in the text (0.1 s
    sleeps).  send_at(): reset_input_buffer(), "<cmd>\\r", until "\\nOK" / "\\nERROR" (3 s).
  * init_modem(): DTR toggle (skipped here: a pty has no modem-control lines, pyserial raises
    ENOTTY), ESC Ctrl-Z CR and ATE0 (answers flushed after 0.5 s / 1 s), AT (3 tries), AT+CPIN?
    until "+CPIN: READY", AT+CMGF=1, AT+CSCS="UCS2", AT+CPMS="SM","SM","SM", AT+CNMI=0,0,0,0,0,
    AT+CMGD=1,4, AT+CREG? until "+CREG: 1"/"5" or ",1"/",5", AT+CSQ, AT+CREG?, AT+CPMS?.
  * send_mms(): AT+QICSGP=<ctx 3>,1,"mms","","",1, AT+QIACT=3 (30 s), AT+QICLOSE=0, flush,
    AT+QIOPEN=3,0,"TCP","<mmsc>",<port>,0,0 then until "+QIOPEN:" / "\\nERROR" (30 s) and
    '\\+QIOPEN:\\s*\\d+,(\\d+)' must be 0; the HTTP POST (WAP m-send-req PDU) in 1460-byte pieces:
    "AT+QISEND=0,<n>\\r", until ">" / "ERROR" / "+QIURC:" (60 s) -- no ">" ends the loop --, the
    piece, until "SEND OK" / "SEND FAIL" / "ERROR" / "+QIURC:" (60 s; a URC ends the loop);
    then 2 s and up to 20 rounds of AT+QIRD=0,1500 until "\\nOK" / "\\nERROR" (10 s), the data
    from the line after "+QIRD:" to the last "\\r\\nOK", until the headers are complete; the
    status from 'HTTP/1\\.[01]\\s+(\\d+)'.  Always AT+QICLOSE=0 and AT+QIDEACT=3 (10 s each).

What the drivers meet is the module's behaviour, their faults their own (asserted as such:
OneOS never closes a connectID the peer closed, so the id stays "closing" in the module and the
next netconn takes the next id; EG800KModem's AT+QSSLOPEN has three arguments, a form the EC2x
does not have).  No emulator bug was found in this round: every test passes.
"""
from __future__ import annotations

import queue
import re
import threading
import time

import pytest
import serial

from emulator.testing.peers import TcpServer, UdpEchoServer

ONEOS_HOST = "iot.oneos.example"
ONEOS_PORT = 6000
TRICKY = (b"\r\nSEND OK\r\n+QIURC: \"closed\",0\r\n> ERROR\r\nOK\r\n\x00\xff"
          + bytes(range(256)) + b"+QIOPEN: 0,0\r\n")


# == China Mobile OneOS molink: the AT parser ===================================================

RESP_NULL, RESP_OK, RESP_ERROR, RESP_TIMEOUT, RESP_BUFF_FULL = range(5)
DEFAULT_RESP = (256, 0, 5.0)          # at_parser_reset_resp(): AT_RESP_BUFF_SIZE_DEF, 0, 5 s


class OneOsEvent:
    """os_event: os_event_send() ORs bits in; os_event_recv(set, OR | CLEAR, timeout) waits for
    any bit of `set`, clears the requested bits and returns the ones that were set."""

    def __init__(self) -> None:
        self.bits = 0
        self.cond = threading.Condition()

    def send(self, bits: int) -> None:
        with self.cond:
            self.bits |= bits
            self.cond.notify_all()

    def recv(self, bits: int, timeout: float) -> int | None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.bits & bits, timeout):
                return None
            got = self.bits & bits
            self.bits &= ~bits
            return got


class Resp:
    def __init__(self, buff_size: int, line_num: int, timeout: float) -> None:
        self.buff_size, self.line_num, self.timeout = buff_size, line_num, timeout
        self.lines: list[bytes] = []
        self.curr_buff_len = 0
        self.stat = RESP_NULL


class OneOsAtParser:
    """molink at_parser.c on the pty (see the module docstring)."""

    def __init__(self, path: str, recv_buff_len: int = 512) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.005)
        self.recv_buff_len = recv_buff_len
        self.rx = bytearray()
        self.rx_cond = threading.Condition()
        self.urc_table: list[tuple[bytes, bytes, callable]] = []
        self.end_mark = b""
        self.resp: Resp | None = None
        self.resp_cfg = DEFAULT_RESP
        self.resp_notice = threading.Semaphore(0)
        self.exec_lock = threading.RLock()
        self.wire_tx = bytearray()
        self.wire_rx = bytearray()
        self.dropped: list[bytes] = []           # lines read with no response pending
        self.full_lines = 0
        self._stop = False
        self._threads = [threading.Thread(target=self._reader, daemon=True),
                         threading.Thread(target=self._task, daemon=True)]
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self._stop = True
        for t in self._threads:
            t.join(1)
        self.ser.close()

    # the UART device: bytes into the driver's ring buffer, rx_notice
    def _reader(self) -> None:
        while not self._stop:
            try:
                chunk = self.ser.read(max(1, self.ser.in_waiting))
            except (serial.SerialException, OSError, TypeError):
                return
            if chunk:
                with self.rx_cond:
                    self.rx += chunk
                    self.wire_rx += chunk
                    self.rx_cond.notify_all()

    def device_write(self, data: bytes) -> None:
        self.wire_tx += data
        self.ser.write(data)

    def getchar(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.rx_cond:
            while not self.rx:
                if self._stop:
                    return None
                left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
                if left <= 0:
                    return None
                self.rx_cond.wait(left)
            c = self.rx[0]
            del self.rx[:1]
            return c

    def recv(self, size: int, timeout: float) -> bytes:
        """at_parser_recv(): exactly `size` bytes, each within `timeout`; b"" on a timeout."""
        out = bytearray()
        while len(out) < size:
            c = self.getchar(timeout)
            if c is None:
                return b""
            out.append(c)
        return bytes(out)

    def set_urc_table(self, table) -> None:
        self.urc_table.extend(table)

    def set_end_mark(self, mark: bytes) -> None:
        self.end_mark = mark

    def set_resp(self, buff_size: int, line_num: int, timeout: float) -> None:
        self.resp_cfg = (buff_size, line_num, timeout)

    def reset_resp(self) -> None:
        self.resp_cfg = DEFAULT_RESP

    def get_urc(self, buf: bytes):
        for prefix, suffix, func in self.urc_table:
            if len(buf) < len(prefix) + len(suffix):
                continue
            if buf.startswith(prefix) and buf.endswith(suffix):
                return func
        return None

    def readline(self) -> bytes | None:
        buf = bytearray()
        full = False
        prev = 0
        while True:
            c = self.getchar(None)
            if c is None:
                return None
            if len(buf) < self.recv_buff_len:
                buf.append(c)
            else:
                full = True
            if self.get_urc(bytes(buf)):
                break
            if c == 0x0A and prev == 0x0D:
                break
            if len(self.end_mark) == 1 and c == self.end_mark[0]:
                break
            if len(self.end_mark) == 2 and c == self.end_mark[1] and prev == self.end_mark[0]:
                break
            prev = c
        if full:
            self.full_lines += 1
            return b""
        return bytes(buf)

    def _resp_handle(self, buf: bytes) -> None:
        resp = self.resp
        if buf.endswith(b"\n"):
            if len(buf) <= 2:
                return                                  # the empty line
            line = buf[:-1]                             # "\n" -> NUL: the CR stays
            size = len(buf)
        else:
            line = buf                                  # ended by the end mark
            size = len(buf) + 1
        if resp.curr_buff_len + size <= resp.buff_size:
            resp.lines.append(line)
            resp.curr_buff_len += size
        else:
            resp.stat = RESP_BUFF_FULL
        if line[:2] == b"OK" and resp.line_num == 0 and not self.end_mark:
            resp.stat = RESP_OK
        elif b"ERROR" in line:
            resp.stat = RESP_ERROR
        elif resp.line_num and len(resp.lines) == resp.line_num:
            resp.stat = RESP_OK
        elif self.end_mark and line.endswith(self.end_mark):
            resp.stat = RESP_OK
        else:
            return
        self.resp = None
        self.resp_notice.release()

    def _task(self) -> None:
        while not self._stop:
            buf = self.readline()
            if not buf:
                continue
            func = self.get_urc(buf)
            if func is not None:
                func(buf)
            elif self.resp is not None:
                self._resp_handle(buf)
            else:
                self.dropped.append(buf)

    def exec_cmd(self, cmd: str) -> tuple[bool, Resp]:
        with self.exec_lock:
            resp = Resp(*self.resp_cfg)
            self.resp = resp
            self.device_write(cmd.encode("latin-1"))
            self.device_write(b"\r\n")
            if not self.resp_notice.acquire(timeout=resp.timeout):
                resp.stat = RESP_TIMEOUT
                self.resp = None
                return False, resp
            return resp.stat == RESP_OK, resp

    def connect(self, retries: int = 5) -> bool:
        """at_parser_connect(): "AT\\r\\n" until a response ends."""
        with self.exec_lock:
            for _ in range(retries):
                self.resp = Resp(256, 0, 1.0)
                self.device_write(b"AT\r\n")
                if self.resp_notice.acquire(timeout=1.0):
                    return True
            self.resp = None
            return False

    @staticmethod
    def line_by_kw(resp: Resp, kw: bytes) -> bytes | None:
        return next((ln for ln in resp.lines if kw in ln), None)


# == China Mobile OneOS molink: ec200x.c + ec200x_netconn.c =====================================

NETCONN_STAT_NULL, NETCONN_STAT_INIT, NETCONN_STAT_CONNECT, NETCONN_STAT_CLOSE = range(4)
EVENT_CONN_OK, EVENT_SEND_OK, EVENT_RECV_OK, EVENT_CLOSE_OK = 1, 2, 4, 8
EVENT_CONN_FAIL, EVENT_SEND_FAIL, EVENT_DOMAIN_OK = 16, 32, 64
SEND_DATA_MAX_SIZE = 1460
EC200X_NETCONN_NUM = 5


def set_event(socket_id: int, event: int) -> int:
    return ((socket_id + 1) << 16) | event


class Netconn:
    def __init__(self) -> None:
        self.stat = NETCONN_STAT_NULL
        self.connect_id = -1
        self.type = None
        self.data_queue: queue.Queue[bytes] = queue.Queue()
        self.dropped_pushes: list[bytes] = []      # "receive state error"


class OneOsEc200x:
    # scaled timeouts (the driver's in the comments)
    CONNECT_EVENT_WAIT = 10.0        # 60 s
    DNS_EVENT_WAIT = 5.0             # 60 s

    def __init__(self, path: str) -> None:
        self.parser = OneOsAtParser(path)
        self.evt = OneOsEvent()
        self.netconn = [Netconn() for _ in range(EC200X_NETCONN_NUM)]
        self.curr_connect = -1
        self.netconn_data: list[str] | None = None
        self.log: list[str] = []
        self.parser.set_urc_table([(b"RDY", b"\r\n", lambda d: None)])

    def close(self) -> None:
        self.parser.close()

    # module_ec200x_create()
    def create_module(self) -> bool:
        if not self.parser.connect():
            return False
        ok, _ = self.parser.exec_cmd("ATE0")              # ec200x_set_echo(OS_FALSE)
        if not ok:
            return False
        self.network_ok = self.network_init()
        self.parser.set_urc_table([(b"SEND", b"\r\n", self.urc_send_func),
                                   (b"+QIOPEN:", b"\r\n", self.urc_connect_func),
                                   (b"+QIURC:", b"\r\n", self.urc_qiurc_func)])
        return True

    def network_init(self) -> bool:
        p = self.parser
        ok, resp = p.exec_cmd("AT+COPS?")
        if not ok:
            return False
        line = p.line_by_kw(resp, b"+COPS:")
        m = re.match(rb'\+COPS: [^"]*"([^"]*)', line or b"")
        if not m:
            return False
        apn = {b"CHINA MOBILE": "CMNET", b"CHN-UNICOM": "UNINET", b"CHN-CT": "CTNET"}.get(m.group(1), "")
        ok, _ = p.exec_cmd(f'AT+QICSGP=1,1,"{apn}","","",0')
        if ok:
            p.set_resp(64, 0, 10.0)                       # 40 s
            ok, _ = p.exec_cmd("AT+QIDEACT=1")
        if ok:
            p.set_resp(64, 0, 10.0)                       # 150 s
            ok, _ = p.exec_cmd("AT+QIACT=1")
        p.reset_resp()
        return ok

    # ec200x_netconn_alloc() / create()
    def check_state(self, connect_id: int) -> bool:
        ok, resp = self.parser.exec_cmd(f"AT+QISTATE=1,{connect_id}")
        if not ok:
            return False
        return self.parser.line_by_kw(resp, b"+QISTATE:") is None

    def netconn_create(self, kind: str) -> Netconn | None:
        for i, nc in enumerate(self.netconn):
            if nc.stat == NETCONN_STAT_NULL and self.check_state(i):
                nc.connect_id = i
                nc.data_queue = queue.Queue()
                nc.stat = NETCONN_STAT_INIT
                nc.type = kind
                return nc
        return None

    def netconn_destroy(self, nc: Netconn) -> bool:
        if nc.stat in (NETCONN_STAT_INIT, NETCONN_STAT_CONNECT):
            ok, _ = self.parser.exec_cmd(f"AT+QICLOSE={nc.connect_id}")
            if not ok:
                return False
        nc.connect_id = -1
        nc.stat = NETCONN_STAT_NULL
        nc.type = None
        return True

    def gethostbyname(self, name: str) -> str | None:
        p = self.parser
        p.set_resp(128, 0, 0.3)
        self.evt.recv(EVENT_DOMAIN_OK, 0)
        self.netconn_data = []
        ok, _ = p.exec_cmd(f'AT+QIDNSGIP=1,"{name}"')
        got = self.evt.recv(EVENT_DOMAIN_OK, self.DNS_EVENT_WAIT) if ok else None
        addr = self.netconn_data[0] if self.netconn_data else None
        self.netconn_data = None
        p.reset_resp()
        return addr if got else None

    def netconn_connect(self, nc: Netconn, ip: str, port: int) -> bool:
        p = self.parser
        p.set_resp(64, 0, 10.0)                           # 150 s
        self.evt.recv(set_event(nc.connect_id, EVENT_CONN_OK | EVENT_CONN_FAIL), 0)
        ok, _ = p.exec_cmd(f'AT+QIOPEN=1,{nc.connect_id},"{nc.type}","{ip}",{port},0,1')
        result = False
        if ok and self.evt.recv(set_event(nc.connect_id, 0), self.CONNECT_EVENT_WAIT) is not None:
            got = self.evt.recv(EVENT_CONN_OK | EVENT_CONN_FAIL, 1.0)
            result = got is not None and not got & EVENT_CONN_FAIL
        if result:
            nc.stat = NETCONN_STAT_CONNECT
        p.reset_resp()
        return result

    def netconn_send(self, nc: Netconn, data: bytes) -> int:
        p = self.parser
        sent = 0
        self.curr_connect = nc.connect_id
        p.set_resp(128, 2, 5.0)
        p.set_end_mark(b">")
        ok = True
        while sent < len(data):
            size = min(len(data) - sent, SEND_DATA_MAX_SIZE)
            ok, _ = p.exec_cmd(f"AT+QISEND={nc.connect_id},{size}")
            if not ok:
                break
            p.device_write(data[sent:sent + size])             # at_parser_send()
            if self.evt.recv(set_event(nc.connect_id, 0), 10.0) is None:
                ok = False
                break
            got = self.evt.recv(EVENT_SEND_OK | EVENT_SEND_FAIL, 1.0)
            if got is None or got & EVENT_SEND_FAIL:
                ok = False
                break
            sent += size
            time.sleep(0.01)
        p.set_end_mark(b"")
        p.reset_resp()
        return sent if ok else 0

    def recv_all(self, nc: Netconn, want: int, timeout: float = 10.0) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            try:
                out += nc.data_queue.get(timeout=0.1)
            except queue.Empty:
                pass
        return bytes(out)

    # URC handlers (run in the parser task)
    def urc_connect_func(self, data: bytes) -> None:
        m = re.match(rb"\+QIOPEN: (-?\d+),(-?\d+)", data)
        cid, result = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        self.evt.send(set_event(cid, EVENT_CONN_OK if result == 0 else EVENT_CONN_FAIL))

    def urc_send_func(self, data: bytes) -> None:
        if b"SEND OK" in data:
            self.evt.send(set_event(self.curr_connect, EVENT_SEND_OK))
        elif b"SEND FAIL" in data:
            self.evt.send(set_event(self.curr_connect, EVENT_SEND_FAIL))

    def urc_qiurc_func(self, data: bytes) -> None:
        kind = data[9:10]
        if kind == b"c":
            m = re.match(rb'\+QIURC: "closed",(-?\d+)', data)
            nc = self.netconn[int(m.group(1)) if m else 0]
            self.log.append(f"closed {nc.connect_id}")
            nc.stat = NETCONN_STAT_CLOSE
            nc.data_queue = queue.Queue()                      # os_data_queue_reset()
        elif kind == b"r":
            m = re.match(rb'\+QIURC: "recv",(-?\d+),(-?\d+)', data)
            cid, size = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
            timeout = max(size, 10) / 1000 + 0.5          # ticks -> s, generous for the pty
            nc = self.netconn[cid]
            piece = self.parser.recv(size, timeout)
            if len(piece) != size:
                self.log.append(f"recv {size} failed")
                return
            self.parser.recv(2, timeout)                   # handle "\r\n"
            if nc.stat == NETCONN_STAT_CONNECT:
                nc.data_queue.put(piece)
            else:
                nc.dropped_pushes.append(piece)
        elif kind == b"p":
            self.log.append("pdpdeact")
        elif kind == b"d":
            if data.count(b".") == 3:
                m = re.match(rb'\+QIURC: "dnsgip","([^"]*)', data)
                if m and self.netconn_data is not None:
                    self.netconn_data.append(m.group(1).decode())
                self.evt.send(EVENT_DOMAIN_OK)
        else:
            self.log.append(f"urc {data!r}")


@pytest.fixture
def oneos(driver_path):
    drv = OneOsEc200x(driver_path)
    assert drv.create_module()
    yield drv
    drv.close()


def oneos_route(emulator, server, host: str = ONEOS_HOST, port: int = ONEOS_PORT) -> None:
    emulator.router.add_map(host, port, "127.0.0.1", server.port)


def test_oneos_ec200x_start_up_picks_the_apn_from_cops_and_activates(oneos):
    """module_ec200x_create() on the module as it boots (echo on): the AT probe answers, ATE0,
    the operator name read with '+COPS: %*[^"]"%[^"]' picks the APN from the driver's table,
    AT+QICSGP / AT+QIDEACT=1 / AT+QIACT=1 each end OK; nothing overflowed the 512-byte line
    buffer and no line went unclaimed but the echo of the probe."""
    tx = bytes(oneos.parser.wire_tx)
    assert oneos.network_ok
    m = re.search(rb'AT\+QICSGP=1,1,"([A-Z]*)","","",0\r\n', tx)
    assert m and m.group(1) in (b"CMNET", b"UNINET", b"CTNET"), tx
    assert tx.index(b"AT+QIDEACT=1\r\n") < tx.index(b"AT+QIACT=1\r\n")
    assert oneos.parser.full_lines == 0
    assert oneos.check_state(0)                          # no socket: no "+QISTATE:" line


def test_oneos_ec200x_dns_then_direct_push_tcp_echo_in_1460_byte_pieces(oneos, emulator):
    """gethostbyname() takes the address from the '+QIURC: "dnsgip","<ip>"' line (three dots),
    the TCP netconn (id 0: AT+QISTATE=1,0 has no "+QISTATE:") opens by that address in
    direct-push mode (OK, then '+QIOPEN: 0,0' through the URC table), 3300 bytes holding CR LF,
    "SEND OK", fake URCs, ">" and NULs go out as AT+QISEND pieces of 1460 / 1460 / 380, each ended
    by the "> " prompt (end mark) and the "SEND OK" URC; the echo comes back as '+QIURC: "recv"'
    pushes read by length and 2 bytes of CR LF, in order and unchanged; AT+QICLOSE=0 OK."""
    data = (TRICKY * 20)[:3300]
    with TcpServer("echo") as srv:
        oneos_route(emulator, srv)
        ip = oneos.gethostbyname(ONEOS_HOST)
        assert ip is not None and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", ip)
        nc = oneos.netconn_create("TCP")
        assert nc is not None and nc.connect_id == 0
        assert oneos.netconn_connect(nc, ip, ONEOS_PORT)
        assert oneos.netconn_send(nc, data) == len(data)
        tx = bytes(oneos.parser.wire_tx)
        assert [int(n) for n in re.findall(rb"AT\+QISEND=0,(\d+)\r\n", tx)] == [1460, 1460, 380]
        assert srv.wait_connection().wait_received(len(data)) == data
        assert oneos.recv_all(nc, len(data)) == data
        assert nc.dropped_pushes == [] and oneos.log == []
        assert oneos.netconn_destroy(nc)
    assert b"AT+QICLOSE=0\r\n" in bytes(oneos.parser.wire_tx)
    assert oneos.parser.full_lines == 0
    # what the parser dropped: at most the prompt's trailing blank before each "SEND OK"
    assert all(line.strip() == b"" for line in oneos.parser.dropped[1:]), oneos.parser.dropped


def test_oneos_ec200x_peer_close_leaves_id_busy_so_the_next_netconn_takes_id_1(oneos, emulator):
    """The peer answers and closes: the push is read, '+QIURC: "closed",0' sets CLOSE (and the
    driver resets the queue).  destroy() sends no AT+QICLOSE in state CLOSE -- the driver's
    fault -- so, as on a module, connectID 0 stays in the module's table (AT+QISTATE=1,0 lists
    it, state 4 "closing") and ec200x_netconn_alloc() skips to id 1, whose echo works."""
    def behave(conn):
        conn.add(conn.sock.recv(100))
        conn.send(b"bye!\r\n")
        conn.close()

    with TcpServer(behave=behave) as closing, TcpServer("echo") as echo:
        oneos_route(emulator, closing)
        oneos_route(emulator, echo, "echo.oneos.example", 6001)
        ip = oneos.gethostbyname(ONEOS_HOST)
        nc = oneos.netconn_create("TCP")
        assert nc.connect_id == 0 and oneos.netconn_connect(nc, ip, ONEOS_PORT)
        assert oneos.netconn_send(nc, b"hello") == 5
        deadline = time.monotonic() + 5
        while nc.stat != NETCONN_STAT_CLOSE and time.monotonic() < deadline:
            time.sleep(0.05)
        assert nc.stat == NETCONN_STAT_CLOSE
        assert oneos.log == ["closed 0"]
        assert b'+QIURC: "recv",0,6\r\nbye!\r\n\r\n' in bytes(oneos.parser.wire_rx)
        assert bytes(oneos.parser.wire_rx).index(b'"recv",0,6') < \
            bytes(oneos.parser.wire_rx).index(b'+QIURC: "closed",0')
        assert oneos.netconn_destroy(nc)
        assert b"AT+QICLOSE" not in bytes(oneos.parser.wire_tx)
        ok, resp = oneos.parser.exec_cmd("AT+QISTATE=1,0")
        line = oneos.parser.line_by_kw(resp, b"+QISTATE:")
        assert ok and line is not None and line.split(b",")[5] == b"4", resp.lines
        ip2 = oneos.gethostbyname("echo.oneos.example")
        nc2 = oneos.netconn_create("TCP")
        assert nc2 is not None and nc2.connect_id == 1
        assert oneos.netconn_connect(nc2, ip2, 6001)
        assert oneos.netconn_send(nc2, b"second life") == 11
        assert oneos.recv_all(nc2, 11) == b"second life"
        assert oneos.netconn_destroy(nc2)
        assert b"AT+QICLOSE=1\r\n" in bytes(oneos.parser.wire_tx)


def test_oneos_ec200x_refused_open_reports_conn_fail_and_the_id_is_reusable(oneos, emulator):
    """A route to a port nobody listens on: AT+QIOPEN answers OK, then '+QIOPEN: 0,<err>' with
    err != 0 raises CONN_FAIL (connect() fails within its wait); destroy() in state INIT sends
    AT+QICLOSE=0 (OK), after which AT+QISTATE=1,0 has no line and id 0 is allocated again."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    emulator.router.add_map("dead.oneos.example", 6002, "127.0.0.1", dead_port)
    ip = oneos.gethostbyname("dead.oneos.example")
    nc = oneos.netconn_create("TCP")
    t0 = time.monotonic()
    assert not oneos.netconn_connect(nc, ip, 6002)
    assert time.monotonic() - t0 < 8
    m = re.search(rb"\+QIOPEN: 0,(\d+)\r\n", bytes(oneos.parser.wire_rx))
    assert m and m.group(1) != b"0"
    assert nc.stat == NETCONN_STAT_INIT
    assert oneos.netconn_destroy(nc)
    assert b"AT+QICLOSE=0\r\n" in bytes(oneos.parser.wire_tx)
    again = oneos.netconn_create("TCP")
    assert again is not None and again.connect_id == 0


def test_oneos_ec200x_udp_netconn_echo_by_push(oneos, emulator):
    """A UDP netconn: AT+QIOPEN=1,0,"UDP","<ip>",<port>,0,1, two datagrams out (AT+QISEND
    each), each echo pushed as '+QIURC: "recv",0,<len>' (a UDP client's push names no sender:
    data[9] is 'r' and the %d,%d parse holds), read by length."""
    with UdpEchoServer() as srv:
        emulator.router.add_map("udp.oneos.example", 6003, "127.0.0.1", srv.port)
        ip = oneos.gethostbyname("udp.oneos.example")
        nc = oneos.netconn_create("UDP")
        assert oneos.netconn_connect(nc, ip, 6003)
        assert oneos.netconn_send(nc, b"first datagram") == 14
        assert oneos.recv_all(nc, 14, timeout=5) == b"first datagram"
        assert oneos.netconn_send(nc, b"\r\nOK\r\n") == 6
        assert oneos.recv_all(nc, 6, timeout=5) == b"\r\nOK\r\n"
        assert b'AT+QIOPEN=1,0,"UDP","' in bytes(oneos.parser.wire_tx)
        assert re.findall(rb'\+QIURC: "recv",0,(\d+)\r\n', bytes(oneos.parser.wire_rx)) == [b"14", b"6"]
        assert oneos.netconn_destroy(nc)


def test_oneos_ec200x_server_burst_of_5000_bytes_pushed_whole(oneos, emulator):
    """The server sends 5000 bytes at once: the pushes ('+QIURC: "recv",0,<n>', n <= 1500 each)
    are framed for a length reader -- header CR LF, n bytes, CR LF -- so the driver's queue
    gets the whole stream in order while the parser stays in step (the next command works)."""
    blob = bytes((i * 7 + 3) & 0xFF for i in range(5000))

    def behave(conn):
        conn.add(conn.sock.recv(100))
        conn.send(blob)
        while conn.sock.recv(100):                      # until the module's FIN
            pass
        conn.close()

    with TcpServer(behave=behave) as srv:
        oneos_route(emulator, srv)
        ip = oneos.gethostbyname(ONEOS_HOST)
        nc = oneos.netconn_create("TCP")
        assert oneos.netconn_connect(nc, ip, ONEOS_PORT)
        assert oneos.netconn_send(nc, b"go") == 2
        assert oneos.recv_all(nc, len(blob)) == blob
        sizes = [int(n) for n in re.findall(rb'\+QIURC: "recv",0,(\d+)\r\n', bytes(oneos.parser.wire_rx))]
        assert sum(sizes) == 5000 and max(sizes) <= 1500
        assert oneos.check_state(1)
        assert oneos.netconn_destroy(nc)


def test_oneos_ec200x_two_netconns_pushes_interleave_without_splitting(oneos, emulator):
    """Two TCP netconns (ids 0 and 1) to two echo servers, 12 KB through each, sends
    alternating: the pushes of the two sockets interleave on the port, but each
    '+QIURC: "recv",<id>,<len>' header is followed by exactly its <len> bytes and CR LF, so the
    driver's length reader files every byte under the right id, in order."""
    a_data = bytes((i * 5) & 0xFF for i in range(12000))
    b_data = bytes((255 - i * 3) & 0xFF for i in range(12000))
    with TcpServer("echo") as a, TcpServer("echo") as b:
        oneos_route(emulator, a)
        oneos_route(emulator, b, "b.oneos.example", 6004)
        ip_a = oneos.gethostbyname(ONEOS_HOST)
        ip_b = oneos.gethostbyname("b.oneos.example")
        nc_a = oneos.netconn_create("TCP")
        assert oneos.netconn_connect(nc_a, ip_a, ONEOS_PORT)
        nc_b = oneos.netconn_create("TCP")
        assert nc_b.connect_id == 1 and oneos.netconn_connect(nc_b, ip_b, 6004)
        for off in range(0, 12000, 3000):
            assert oneos.netconn_send(nc_a, a_data[off:off + 3000]) == 3000
            assert oneos.netconn_send(nc_b, b_data[off:off + 3000]) == 3000
        assert oneos.recv_all(nc_a, len(a_data)) == a_data
        assert oneos.recv_all(nc_b, len(b_data)) == b_data
        assert nc_a.dropped_pushes == [] and nc_b.dropped_pushes == [] and oneos.log == []
        assert oneos.netconn_destroy(nc_a) and oneos.netconn_destroy(nc_b)
    assert oneos.parser.full_lines == 0


# == EG800KModem + QuectelAT (Arduino) ==========================================================

EG_HOST, EG_PORT = "tcp.eg800k.example", 7100
EG_RX_BUFFER_SIZE = 512          # EG800KModem.h was not in the store: RX_BUFFER_SIZE assumed 512


class ArduinoSerial:
    """HardwareSerial on the pty: available() / read() one byte / print() / write()."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.buf = bytearray()
        self.wire_tx = bytearray()
        self.wire_rx = bytearray()

    def close(self) -> None:
        self.ser.close()

    def available(self) -> int:
        n = self.ser.in_waiting
        if n:
            chunk = self.ser.read(n)
            self.buf += chunk
            self.wire_rx += chunk
        return len(self.buf)

    def read(self) -> int:
        if not self.available():
            return -1
        c = self.buf[0]
        del self.buf[:1]
        return c

    def write(self, data: bytes) -> None:
        self.wire_tx += data
        self.ser.write(data)


def millis() -> int:
    return int(time.monotonic() * 1000)


class QuectelAT:
    """QuectelAT.cpp / QuectelAT.h (store ids 53113687800, 53204627757)."""

    def __init__(self, stream: ArduinoSerial) -> None:
        self.s = stream
        self.recv_urc_seen = False
        self.urc_buffer = b""

    def send_command(self, cmd: str) -> None:
        self.s.write(cmd.encode("latin-1"))
        self.s.write(b"\r\n")

    def wait_response(self, timeout_ms: int, *rs: str, data: list | None = None) -> int:
        rs = tuple(r.encode("latin-1") for r in rs) if rs else (b"OK\r\n", b"ERROR\r\n")
        got = bytearray()
        start = millis()
        index = 0
        while millis() - start < timeout_ms and not index:
            while self.s.available() > 0:
                got.append(self.s.read())
                if got.endswith(b'+QIURC: "recv"'):
                    self.recv_urc_seen = True
                index = next((i + 1 for i, r in enumerate(rs) if r and got.endswith(r)), 0)
                if index:
                    break
            if not index:
                time.sleep(0.001)
        if data is not None:
            data.append(bytes(got))
        return index

    def process_urc(self) -> None:
        while self.s.available() > 0:
            c = self.s.read()
            self.urc_buffer += bytes([c])
            if self.urc_buffer.endswith(b'+QIURC: "recv"'):
                self.recv_urc_seen = True
            if c == 0x0A or len(self.urc_buffer) > 64:
                self.urc_buffer = b""


class EG800KModem:
    """EG800KModem.cpp (store id 53447338182), the TCP part and its SSL open."""
    QIOPEN_URC_WAIT = 10_000         # 150 s

    def __init__(self, path: str) -> None:
        self.s = ArduinoSerial(path)
        self.at = QuectelAT(self.s)
        self.socket_connected = False
        self.rx_buffer = b""
        self.rx_pos = 0
        self.last_poll = 0
        self.open_urc_index = None

    def close(self) -> None:
        self.s.close()

    def attach_network(self) -> bool:
        at = self.at
        at.send_command("AT")
        at.wait_response(1000)
        at.send_command("ATE0")
        at.wait_response(1000)
        for _ in range(5):
            at.send_command("AT+CPIN?")
            if at.wait_response(2000, "+CPIN: READY\r\n", "+CPIN: READY") > 0:
                at.wait_response(1000)
                break
            time.sleep(1)
        for _ in range(30):
            at.send_command("AT+CEREG?")
            if at.wait_response(2000, "+CEREG: 0,1", "+CEREG: 0,5", "+CEREG: 1", "+CEREG: 5") > 0:
                at.wait_response(1000)
                return True
            time.sleep(1)
        return False

    def activate_pdp(self, apn: str) -> bool:
        self.at.send_command(f'AT+QICSGP=1,1,"{apn}","","",0')
        self.at.wait_response(5000)
        self.at.send_command("AT+QIACT=1")
        return self.at.wait_response(10_000) == 1          # 150 s

    def open_socket(self, host: str, port: int) -> bool:
        at = self.at
        self.socket_connected = False
        self.rx_buffer, self.rx_pos = b"", 0
        at.send_command("AT+QICLOSE=0")
        at.wait_response(2000)
        at.send_command(f'AT+QIOPEN=1,0,"TCP","{host}",{port},0,0')
        if at.wait_response(5000) != 1:
            return False
        resp: list = []
        res = at.wait_response(self.QIOPEN_URC_WAIT, "+QIOPEN: 0,0", "+QIOPEN:", data=resp)
        self.open_urc_index = res
        if res == 1:
            self.socket_connected = True
            return True
        if res == 2:
            line: list = []
            at.wait_response(1000, "\r\n", data=line)
            text = line[0].decode("latin-1")
            if text.startswith("0,0") or ",0" in text:
                self.socket_connected = True
                return True
        return False

    def open_ssl_socket(self, host: str, port: int, root_ca: str | None = None) -> bool:
        at = self.at
        self.socket_connected = False
        if root_ca:
            at.send_command(f'AT+QSSLCFG="cacert",0,"{root_ca}"')
            at.wait_response(1000, "OK", "ERROR")
        at.send_command(f'AT+QSSLOPEN=0,"{host}",{port}')
        self.socket_connected = at.wait_response(10_000, "CONNECT", "ERROR", "CLOSED") == 1
        return self.socket_connected

    def send(self, data: bytes) -> int:
        if not self.socket_connected:
            return 0
        self.at.send_command(f"AT+QISEND=0,{len(data)}")
        if self.at.wait_response(5000, ">") != 1:
            return 0
        self.s.write(data)
        return len(data) if self.at.wait_response(10_000, "SEND OK\r\n") > 0 else 0

    def available(self) -> int:
        if not self.socket_connected:
            return 0
        if len(self.rx_buffer) > self.rx_pos:
            return len(self.rx_buffer) - self.rx_pos
        if not self.at.recv_urc_seen and millis() - self.last_poll < 100:
            return 0
        self.last_poll = millis()
        self.at.recv_urc_seen = False
        self.at.send_command("AT+QIRD=0,0")
        if self.at.wait_response(500, "+QIRD: ") == 1:
            line: list = []
            self.at.wait_response(200, "\r\n", data=line)
            self.at.wait_response(200, "OK\r\n")
            text = line[0].decode("latin-1")
            fields = text.split(",")
            return arduino_to_int(fields[2] if len(fields) > 2 else fields[-1])
        return 0

    def receive(self, length: int) -> bytes:
        if not self.socket_connected or length == 0:
            return b""
        if len(self.rx_buffer) > self.rx_pos:
            out = self.rx_buffer[self.rx_pos:self.rx_pos + length]
            self.rx_pos += len(out)
            return out
        self.rx_buffer, self.rx_pos = b"", 0
        fetch = min(max(length, EG_RX_BUFFER_SIZE), 1500)
        self.at.send_command(f"AT+QIRD=0,{fetch}")
        if self.at.wait_response(1000, "+QIRD: ") != 1:
            return b""
        line: list = []
        self.at.wait_response(500, "\r\n", data=line)
        modem_len = arduino_to_int(line[0].decode("latin-1"))
        if modem_len <= 0:
            self.at.wait_response(500, "OK\r\n", "OK")
            return b""
        got = bytearray()
        start = millis()
        while len(got) < modem_len and len(got) < EG_RX_BUFFER_SIZE and millis() - start < 5000:
            if self.s.available():
                got.append(self.s.read())
        self.rx_buffer = bytes(got)
        self.at.wait_response(1000, "OK\r\n", "OK")
        out = self.rx_buffer[:length]
        self.rx_pos = len(out)
        return out

    def close_socket(self) -> bool:
        self.at.send_command("AT+QICLOSE=0")
        ok = self.at.wait_response(10_000) == 1
        self.socket_connected = False
        self.rx_buffer, self.rx_pos = b"", 0
        return ok

    # a sketch's loop(): processURC(), then available() / read(buf, sizeof(buf))
    def read_loop(self, want: int, bufsize: int = 256, timeout: float = 10.0) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while len(out) < want and time.monotonic() < deadline:
            self.at.process_urc()
            n = self.available()
            if n > 0:
                out += self.receive(min(n, bufsize))
            else:
                time.sleep(0.01)
        return bytes(out)


def arduino_to_int(text: str) -> int:
    """String::toInt() = atol(): leading blanks, a sign, digits; 0 if none."""
    m = re.match(r"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


@pytest.fixture
def eg800k(driver_path):
    m = EG800KModem(driver_path)
    assert m.attach_network()
    assert m.activate_pdp("iot.1nce.net")
    yield m
    m.close()


def test_eg800k_attach_pdp_open_send_and_poll_read_the_echo(eg800k, emulator):
    """attachNetwork() (AT, ATE0 on the booting module, "+CPIN: READY", "+CEREG: 0,1", each
    trailing OK cleared), activatePDP(), openSocket(): AT+QICLOSE=0 (OK: nothing open),
    AT+QIOPEN=1,0,"TCP","<host>",<port>,0,0 OK, then the URC caught by its "+QIOPEN:" prefix
    (index 2) and the rest of the line " 0,0" accepted by indexOf(",0"); send(): "> ", the data,
    "SEND OK\\r\\n"; the sketch's loop sees '+QIURC: "recv"', available() asks AT+QIRD=0,0 and
    takes the third field (unread), receive() reads AT+QIRD=0,512 by the "+QIRD: <n>" count;
    the 700 bytes (CR LF, "OK\\r\\n", a fake URC inside) come back unchanged; closeSocket() OK."""
    data = (b"line\r\nOK\r\n+QIURC: \"recv\",0\r\n" + bytes(range(32, 127))) * 6
    data = data[:700]
    with TcpServer("echo") as srv:
        emulator.router.add_map(EG_HOST, EG_PORT, "127.0.0.1", srv.port)
        assert eg800k.open_socket(EG_HOST, EG_PORT)
        assert eg800k.open_urc_index == 2
        assert eg800k.send(data) == len(data)
        assert srv.wait_connection().wait_received(len(data)) == data
        assert eg800k.read_loop(len(data)) == data
        tx = bytes(eg800k.s.wire_tx)
        assert b"AT+QIRD=0,0\r\n" in tx and b"AT+QIRD=0,512\r\n" in tx
        assert re.search(rb"\r\n\+QIRD: \d+,\d+,\d+\r\n", bytes(eg800k.s.wire_rx))
        assert eg800k.close_socket()
    assert b'AT+QIOPEN=1,0,"TCP","%s",%d,0,0\r\n' % (EG_HOST.encode(), EG_PORT) in bytes(eg800k.s.wire_tx)


def test_eg800k_peer_answers_and_closes_data_before_the_close_still_read(eg800k, emulator):
    """The server answers 1200 bytes and closes: '+QIURC: "recv",0' then '+QIURC: "closed",0'
    (the driver ignores "closed"); the bytes stay readable by AT+QIRD after the close, three
    512-byte fetches into the driver's buffer, served 256 at a time; closeSocket() OK."""
    reply = bytes((i * 13) & 0xFF for i in range(1200))

    def behave(conn):
        conn.add(conn.sock.recv(100))
        conn.send(reply)
        conn.close()

    with TcpServer(behave=behave) as srv:
        emulator.router.add_map(EG_HOST, EG_PORT, "127.0.0.1", srv.port)
        assert eg800k.open_socket(EG_HOST, EG_PORT)
        assert eg800k.send(b"GET") == 3
        deadline = time.monotonic() + 5
        while b'+QIURC: "closed",0' not in bytes(eg800k.s.wire_rx) and time.monotonic() < deadline:
            eg800k.at.process_urc()
            time.sleep(0.05)
        assert eg800k.read_loop(len(reply)) == reply
        assert eg800k.available() == 0
        assert eg800k.close_socket()


def test_eg800k_refused_open_is_not_taken_for_connected(eg800k, emulator):
    """A route to a port with no listener: OK, then '+QIOPEN: 0,<err>'; the line after the
    prefix (" 0,566") neither starts with "0,0" nor holds ",0": openSocket() is false."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead_port = s.getsockname()[1]
    s.close()
    emulator.router.add_map(EG_HOST, EG_PORT, "127.0.0.1", dead_port)
    assert not eg800k.open_socket(EG_HOST, EG_PORT)
    m = re.search(rb"\+QIOPEN: 0,(\d+)\r\n", bytes(eg800k.s.wire_rx))
    assert m and m.group(1) != b"0" and b",0" not in m.group(1)
    assert eg800k.close_socket()


def test_eg800k_ssl_open_with_three_arguments_is_an_error_no_handshake(eg800k, emulator, pki):
    """openSSLSocket() sends AT+QSSLCFG="cacert",0,"<file>" (OK: the context takes the name)
    and AT+QSSLOPEN=0,"<host>",<port> -- a form the EC2x's AT+QSSLOPEN (pdpctxID, sslctxID,
    clientID, host, port[, mode]) does not have: the module answers ERROR at once (the driver's
    fault), the library returns false, and no TLS connection reaches the server."""
    from emulator.testing.peers import TlsServer
    with TlsServer(pki.server, mode="echo") as srv:
        emulator.router.add_map(EG_HOST, 443, "127.0.0.1", srv.port)
        t0 = time.monotonic()
        assert not eg800k.open_ssl_socket(EG_HOST, 443, root_ca="UFS:cacert.pem")
        assert time.monotonic() - t0 < 3
        assert bytes(eg800k.s.wire_rx).endswith(b"\r\nOK\r\n\r\nERROR\r\n")
        time.sleep(0.3)
        assert srv.connections == []


# == A Python SMS/MMS gateway's SMSHandler (pyserial) ===========================================

MMSC_HOST, MMSC_PORT = "mmsc.carrier.example", 8002


class SmsGatewayHandler:
    """SMSHandler (store id 60877718205): init_modem() and send_mms(); see the docstring."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=2)
        self.wire_tx = bytearray()
        self.log: list[tuple[str, str]] = []
        self.mms_status: int | None = None
        self.init_modem()

    def close(self) -> None:
        self.ser.close()

    def _write(self, data: bytes) -> None:
        self.wire_tx += data
        self.ser.write(data)

    def _read_until(self, markers, timeout: float = 5) -> str:
        end = time.time() + timeout
        data = ""
        while time.time() < end:
            n = self.ser.in_waiting
            if n:
                data += self.ser.read(n).decode("ascii", errors="ignore")
                if any(m in data for m in markers):
                    return data
            else:
                time.sleep(0.1)
        return data

    def flush_serial(self) -> None:
        self.ser.reset_input_buffer()

    def send_at(self, command: str, timeout: float = 3) -> str:
        self.flush_serial()
        self._write((command + "\r").encode())
        return self._read_until(["\nOK", "\nERROR"], timeout=timeout)

    def init_modem(self) -> None:
        # (the DTR toggle is skipped: a pty has no modem-control lines, pyserial raises ENOTTY)
        self._write(b"\x1b\x1a\r")
        time.sleep(0.5)
        self.ser.reset_input_buffer()
        self._write(b"ATE0\r")
        time.sleep(1)
        self.ser.reset_input_buffer()
        for _ in range(3):
            if "OK" in self.send_at("AT", timeout=2):
                self.log.append(("info", "Modem ready"))
                break
        for _ in range(10):
            if "+CPIN: READY" in self.send_at("AT+CPIN?", timeout=3):
                self.log.append(("info", "SIM ready"))
                break
            time.sleep(2)
        self.send_at("AT+CMGF=1")
        if "OK" not in self.send_at('AT+CSCS="UCS2"'):
            self.log.append(("error", "AT+CSCS=UCS2 failed"))
        if "ERROR" in self.send_at('AT+CPMS="SM","SM","SM"'):
            self.log.append(("error", "Failed to set SIM storage"))
        self.send_at("AT+CNMI=0,0,0,0,0")
        self.send_at("AT+CMGD=1,4", timeout=5)
        for _ in range(30):
            resp = self.send_at("AT+CREG?", timeout=3)
            if "+CREG: 1" in resp or "+CREG: 5" in resp or ",1" in resp or ",5" in resp:
                self.log.append(("info", "Network registered"))
                break
            time.sleep(2)
        self.send_at("AT+CSQ", timeout=2)
        self.send_at("AT+CREG?", timeout=2)
        self.send_at("AT+CPMS?", timeout=2)

    def send_mms(self, pdu: bytes, mmsc_url: str, mms_apn: str = "mms", mms_context: int = 3) -> None:
        from urllib.parse import urlparse
        resp = self.send_at(f'AT+QICSGP={mms_context},1,"{mms_apn}","","",1')
        if "ERROR" in resp:
            self.log.append(("warning", "QICSGP " + resp.strip()))
        self.send_at(f"AT+QIACT={mms_context}", timeout=30)
        conn_id = 0
        try:
            parsed = urlparse(mmsc_url)
            host, port, path = parsed.hostname, parsed.port or 80, parsed.path or "/"
            http_req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                        f"Content-Type: application/vnd.wap.mms-message\r\n"
                        f"Content-Length: {len(pdu)}\r\n"
                        f"Accept: application/vnd.wap.mms-message\r\nConnection: close\r\n\r\n"
                        ).encode("ascii") + pdu
            self.send_at(f"AT+QICLOSE={conn_id}")
            self.flush_serial()
            self._write(f'AT+QIOPEN={mms_context},{conn_id},"TCP","{host}",{port},0,0\r'.encode())
            resp = self._read_until(["+QIOPEN:", "\nERROR"], timeout=30)
            m = re.search(r"\+QIOPEN:\s*\d+,(\d+)", resp)
            if not m or m.group(1) != "0":
                self.log.append(("error", "QIOPEN failed: " + resp.strip()))
                return
            chunk_size, offset, send_ok = 1460, 0, True
            while offset < len(http_req):
                chunk = http_req[offset:offset + chunk_size]
                self._write(f"AT+QISEND={conn_id},{len(chunk)}\r".encode())
                prompt = self._read_until([">", "ERROR", "+QIURC:"], timeout=60)
                if ">" not in prompt:
                    if "+QIURC:" in prompt:
                        self.log.append(("debug", f"urc at {offset} (no prompt)"))
                    else:
                        self.log.append(("error", f"QISEND at {offset}: {prompt.strip()}"))
                        send_ok = False
                    break
                self._write(chunk)
                sr = self._read_until(["SEND OK", "SEND FAIL", "ERROR", "+QIURC:"], timeout=60)
                if "+QIURC:" in sr:
                    self.log.append(("debug", f"urc during send at {offset}"))
                    break
                if "SEND OK" not in sr:
                    self.log.append(("error", f"QISEND failed at {offset}: {sr.strip()}"))
                    send_ok = False
                    break
                offset += len(chunk)
            self.sent_offset = offset
            if not send_ok:
                return
            time.sleep(2)
            text = ""
            for _ in range(20):
                self._write(f"AT+QIRD={conn_id},1500\r".encode())
                rd = self._read_until(["\nOK", "\nERROR"], timeout=10)
                m2 = re.search(r"\+QIRD:\s*(\d+)", rd)
                if not m2:
                    break
                if int(m2.group(1)) == 0:
                    if "\r\n\r\n" in text:
                        break
                    time.sleep(0.5)
                    continue
                start = rd.find("\r\n", rd.find("+QIRD:")) + 2
                ok_pos = rd.rfind("\r\nOK")
                text += rd[start:ok_pos] if ok_pos >= 0 else rd[start:]
                if "\r\n\r\n" in text:
                    break
            m3 = re.search(r"HTTP/1\.[01]\s+(\d+)", text)
            if m3:
                self.mms_status = int(m3.group(1))
                level = "info" if self.mms_status in (200, 206) else "error"
                self.log.append((level, f"MMSC HTTP {self.mms_status}"))
            else:
                self.log.append(("error", "no HTTP status: " + text[:300]))
        finally:
            self.close_answer = self.send_at(f"AT+QICLOSE={conn_id}", timeout=10)
            self.deact_answer = self.send_at(f"AT+QIDEACT={mms_context}", timeout=10)


def mms_pdu(media: bytes) -> bytes:
    """An m-send-req as _build_mms_pdu() lays it out (text part + image part)."""
    def uintvar(n: int) -> bytes:
        parts = []
        while True:
            parts.append(n & 0x7F)
            n >>= 7
            if not n:
                break
        parts.reverse()
        return bytes(b | (0x80 if i < len(parts) - 1 else 0) for i, b in enumerate(parts))
    text = "Hei på deg".encode()
    body = uintvar(2)
    for ct, data in ((b"\x83", text), (b"\x9e", media)):
        body += uintvar(len(ct)) + uintvar(len(data)) + ct + data
    head = (b"\x8c\x80" + b"\x98" + b"0123456789ab\x00" + b"\x8d\x92" + b"\x85\x04\x67\x00\x00\x00"
            + b"\x97" + b"+4799999999/TYPE=PLMN\x00" + b"\x89\x01\x81" + b"\x84\xa3")
    return head + body


def mmsc_behave(status: bytes, reject_early: bool, got: list):
    conf = b"\x8c\x81\x98" + b"0123456789ab\x00" + b"\x8d\x92\x92\x80"   # m-send-conf, Ok

    def behave(conn):
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        reply = (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/vnd.wap.mms-message\r\n"
                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(conf) + conf)
        if reject_early:
            conn.send(reply)
        while len(body) < length:
            chunk = conn.sock.recv(65536)
            if not chunk:
                break
            body += chunk
        got.append(head + b"\r\n\r\n" + body)
        if not reject_early:
            conn.send(reply)
        while conn.sock.recv(65536):                # until the module's FIN
            pass
        conn.close()
    return behave


@pytest.fixture
def sms_gateway(driver_path):
    h = SmsGatewayHandler(driver_path)
    yield h
    h.close()


def test_sms_gateway_init_modem_on_the_booting_module(sms_gateway):
    """init_modem() against the module as it boots (echo on): the ESC / Ctrl-Z / CR flush line and
    ATE0 (answers thrown away), "AT" answers OK at the first try, "+CPIN: READY", AT+CSCS="UCS2"
    OK, registration found in AT+CREG?.  The only error the gateway logs is AT+CPMS's: SMS
    storage is not emulated (docs/behaviour.md: SMS set-up only)."""
    infos = [m for lvl, m in sms_gateway.log if lvl == "info"]
    assert infos == ["Modem ready", "SIM ready", "Network registered"], sms_gateway.log
    assert ("error", "AT+CSCS=UCS2 failed") not in sms_gateway.log
    assert [m for lvl, m in sms_gateway.log if lvl == "error"] in ([], ["Failed to set SIM storage"])


def test_sms_gateway_send_mms_posts_the_pdu_in_1460_byte_pieces_over_context_3(sms_gateway, emulator):
    """send_mms(): AT+QICSGP=3,1,"mms","","",1 and AT+QIACT=3 (the MMS bearer beside the
    default context), AT+QICLOSE=0 (nothing open: OK), AT+QIOPEN=3,0,"TCP","<mmsc>",8002,0,0 --
    "+QIOPEN: 0,0" parsed from the first read holding "+QIOPEN:" --, the HTTP POST of a 6 KB
    binary PDU in AT+QISEND pieces of 1460 bytes, each after ">" and ended by "SEND OK"; the
    MMSC's 200 answer read with AT+QIRD=0,1500 ("+QIRD: <n>", data up to the last "\\r\\nOK");
    AT+QICLOSE=0 and AT+QIDEACT=3 both answer OK.  The MMSC got the request byte for byte."""
    media = bytes((i * 31 + 7) & 0xFF for i in range(6000))
    pdu = mms_pdu(media)
    got: list[bytes] = []
    with TcpServer(behave=mmsc_behave(b"200 OK", False, got)) as srv:
        emulator.router.add_map(MMSC_HOST, MMSC_PORT, "127.0.0.1", srv.port)
        sms_gateway.send_mms(pdu, f"http://{MMSC_HOST}:{MMSC_PORT}/mms")
    assert sms_gateway.mms_status == 200, sms_gateway.log
    tx = bytes(sms_gateway.wire_tx)
    assert b'AT+QICSGP=3,1,"mms","","",1\r' in tx and b"AT+QIACT=3\r" in tx
    assert b'AT+QIOPEN=3,0,"TCP","%s",%d,0,0\r' % (MMSC_HOST.encode(), MMSC_PORT) in tx
    sizes = [int(n) for n in re.findall(rb"AT\+QISEND=0,(\d+)\r", tx)]
    assert sizes[:-1] == [1460] * (len(sizes) - 1) and sum(sizes) == len(got[0])
    assert got[0].endswith(pdu) and got[0].startswith(b"POST /mms HTTP/1.1\r\nHost: %s\r\n" % MMSC_HOST.encode())
    assert "\nOK" in sms_gateway.close_answer and "\nOK" in sms_gateway.deact_answer


def test_sms_gateway_mmsc_rejects_before_the_body_is_sent(sms_gateway, emulator):
    """The MMSC answers 413 as soon as it has the headers (and drains the rest): the gateway
    meets '+QIURC: "recv",0' while it is still sending, stops (or finishes the piece it had a
    prompt for), and reads the 413 with AT+QIRD; the tear-down answers OK."""
    pdu = mms_pdu(bytes(range(256)) * 40)
    got: list[bytes] = []
    with TcpServer(behave=mmsc_behave(b"413 Request Entity Too Large", True, got)) as srv:
        emulator.router.add_map(MMSC_HOST, MMSC_PORT, "127.0.0.1", srv.port)
        sms_gateway.send_mms(pdu, f"http://{MMSC_HOST}:{MMSC_PORT}/mms")
    assert sms_gateway.mms_status == 413, sms_gateway.log
    assert any(lvl == "debug" and m.startswith("urc") for lvl, m in sms_gateway.log), sms_gateway.log
    assert "\nOK" in sms_gateway.close_answer and "\nOK" in sms_gateway.deact_answer


def test_eg800k_one_byte_lf_payloads_after_a_cr_lf_command_line(eg800k, emulator):
    """QuectelAT writes a command and its "\\r\\n" as two prints, then the payload the moment
    ">" is read: payloads b"\\n", b"\\n", b"\\r\\n", b"\\nabc" are data (the line's LF came with its
    CR), each answered "SEND OK", and the peer receives them all, in order."""
    with TcpServer("echo") as srv:
        emulator.router.add_map(EG_HOST, EG_PORT, "127.0.0.1", srv.port)
        assert eg800k.open_socket(EG_HOST, EG_PORT)
        payloads = (b"\n", b"\n", b"\r\n", b"\nabc")
        for payload in payloads:
            assert eg800k.send(payload) == len(payload)
        want = b"".join(payloads)
        assert srv.wait_connection().wait_received(len(want)) == want
        assert eg800k.read_loop(len(want)) == want
        assert eg800k.close_socket()
