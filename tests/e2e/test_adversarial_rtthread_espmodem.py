"""Adversarial tests: RT-Thread's at_device EC20 class, ESP-IDF esp-modem's BG96 socket
example and Zephyr's quectel-bg9x socket offload, replayed through the pty with their own
line endings, waits and parsers, against loopback peers.
(test_adversarial_driver_init.py replays start-ups only -- Zephyr's setup_cmds among them;
test_adversarial_public_drivers.py TinyGSM / Mbed / FreeRTOS; this file the three below.)

Drivers replayed (public sources read through the reference store):
- RT-Thread-packages/at_device (cea8ddf) class/ec20/at_device_ec20.c: ec20_init_thread_entry()
  (AT every 300 ms until OK, ATV1, ATE0, AT+CMEE=2, AT+IPR?, ATI, AT+GSN, AT+CPIN? read as two
  lines, AT+CIMI, AT+QCCID, AT+CSQ, AT+CREG?/AT+CGREG? "%s" == "0,1", AT+CEREG?, AT+COPS?
  picking the AT+QICSGP line by operator name, AT+CTZU=3, AT+CCLK?, AT+QIDEACT=1, AT+QIACT=1,
  AT+QIACT?), ec20_netdev_set_info() (AT+GSN line 2, AT+QIACT? `+QIACT: %*[^"]"%[^"]`,
  AT+QIDNSCFG=1 `+QIDNSCFG: 1,"%[^"]","%[^"]"`), the link thread (AT+CGREG? "%*d,%d"),
  ec20_netdev_ping() (AT+QPING=1,"<host>",<s>,1 read as four lines), ec20_netdev_set_dns_server();
  class/ec20/at_socket_ec20.c: ec20_socket_connect() (AT+QIOPEN=1,<id>,"TCP"|"UDP","<ip>",
  <port>,0,1 -- direct push -- then the +QIOPEN URC; on failure AT+QICLOSE=<id>,1 and one
  retry, the QICLOSE's ERROR ending it), ec20_socket_send() (1460-byte blocks, end sign '>',
  response of 2 lines, then the "SEND OK"/"SEND FAIL" URCs), ec20_domain_resolve()
  (AT+QIDNSGIP=1,"<name>", the IP taken from the "dnsgip" URC with three dots), the URC table
  {"SEND OK","SEND FAIL","+QIOPEN:","+QIURC:"} with urc_qiurc_func() dispatching on data[9]
  and urc_recv_func() reading <len> raw bytes after the URC line.
  RT-Thread/rt-thread components/net/at/src/at_client.c: at_obj_exec_cmd() (command + "\\r\\n"),
  at_recv_readline() (a line ends at CR LF, at the end sign, or as soon as the bytes so far
  match a URC prefix+suffix), client_parser() (OK = line starting "OK" when line_num is 0;
  error = any line containing "ERROR" or starting "FAIL"; else line_num lines, empty lines
  counted), at_client_obj_recv(), at_client_obj_wait_connect().
  (The package's ML302-like classes, class/ml305 and class/ml307, drive another command set --
  AT+MIPOPEN/AT+MIPSEND/AT+MDNSGIP -- that the ML302 profile, an SSL-command model, does not
  have: not replayed.)
- espressif/esp-protocols (940bf48) components/esp_modem/examples/modem_tcp_client/main/
  sock_commands_bg96.cpp and command/sock_dce.cpp: DCE::init() (sync "AT\\r", ATE0, AT+CGDCONT,
  net_open(): AT+QISTATE? through generic_get_string(), AT+QIACT=1 when it lists nothing;
  get_ip(): the 4th field of "+QIACT: 1"), Responder::start_connecting() (AT+QIOPEN=1,<id>,
  "TCP","<host>",<port> -- no local port, no access mode), connect() ("+QIOPEN: <id>,0" in a
  chunk), send() ('>' in one of three chunks, "SEND OK", then AT+QISEND=<id>,0 and its
  total/acked parse), check_urc() ('+QIURC: "recv",<id>', the "+QIRD: t,r,u" ",0" test,
  '+QIURC: "closed",<id>'), recv() ("+QIRD: " then '\\n' within 6 bytes, then the data;
  then AT+QIRD=<id>,0); every command ends "\\r"; the socket part sees raw UART chunks.
  components/esp_modem/src/esp_modem_command_library.cpp generic_command()/generic_get_string().
- zephyrproject-rtos/zephyr drivers/modem/quectel-bg9x.c: offload_connect() (AT+QIOPEN=1,<fd>,
  "TCP","<ip>",<port>,0,0, then "+QIOPEN: " with 2 args; any error: socket_close() =
  AT+QICLOSE=<fd>), send_socket_data() (AT+QISEND=<fd>,<len> -- a fixed length -- waits
  for ">", writes the data *and then a Ctrl+Z*, waits for SEND OK), offload_recvfrom()
  (AT+QIRD=<fd>,<len>, on_cmd_sockread_common(): find_len() up to '\\r', data after
  digits+2, needs digits+6+len bytes), unsol '+QIURC: "recv",' / '+QIURC: "closed",' (the
  latter sends AT+QICLOSE=<fd>); the handler's eol is "\\r\\n".

Every host name or address dialled is routed to 127.0.0.1."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest
import serial

from emulator.testing.peers import TcpServer, UdpEchoServer

# -- RT-Thread's AT client (components/net/at/src/at_client.c) over the pty ---------------------
RESP_OK, RESP_ERROR, RESP_TIMEOUT = "ok", "error", "timeout"
SLOW = 3                     # drivers' short waits (300 ms, 500 ms) widened for a loaded 2-core machine


class RtAtClient:
    """at_client.c's parser thread and at_obj_exec_cmd(), byte for byte."""

    def __init__(self, path: str, recv_bufsz: int = 512) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.005)
        self.recv_bufsz = recv_bufsz
        self.rx = bytearray()
        self.rx_cond = threading.Condition()
        self.urc_table: list[tuple[bytes, bytes, callable]] = []
        self.end_sign = 0
        self.lock = threading.Lock()                 # client->lock
        self.resp: dict | None = None
        self.resp_notice = threading.Event()
        self.dropped_lines: list[bytes] = []         # lines with no response waiting
        self.full_lines = 0
        self._stop = False
        threading.Thread(target=self._reader, daemon=True).start()
        threading.Thread(target=self._parser, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        time.sleep(0.05)
        self.ser.close()

    # the UART driver: bytes into the ring buffer, rx_notice
    def _reader(self) -> None:
        while not self._stop:
            try:
                chunk = self.ser.read(max(1, self.ser.in_waiting))
            except (serial.SerialException, OSError, TypeError):
                return
            if chunk:
                with self.rx_cond:
                    self.rx += chunk
                    self.rx_cond.notify_all()

    def getchar(self, timeout: float | None) -> int | None:
        with self.rx_cond:
            if not self.rx_cond.wait_for(lambda: self.rx or self._stop, timeout):
                return None
            if self._stop and not self.rx:
                return None
            b = self.rx[0]
            del self.rx[0]
            return b

    def obj_recv(self, size: int, timeout_ms: int) -> bytes:
        """at_client_obj_recv(): up to `size` raw bytes; gives up after `timeout_ms` of silence."""
        out = bytearray()
        with self.rx_cond:
            while len(out) < size:
                if self.rx:
                    take = min(size - len(out), len(self.rx))
                    out += self.rx[:take]
                    del self.rx[:take]
                    continue
                if not self.rx_cond.wait(timeout_ms / 1000):
                    break
        return bytes(out)

    def _get_urc(self, line: bytes):
        for prefix, suffix, func in self.urc_table:
            if len(line) < len(prefix) + len(suffix):
                continue
            if line.startswith(prefix) and line.endswith(suffix):
                return func
        return None

    def _readline(self):
        buf = bytearray()
        last = 0
        full = False
        while True:
            ch = self.getchar(None if not self._stop else 0)
            if ch is None:
                return None, None
            if len(buf) < self.recv_bufsz:
                buf.append(ch)
            else:
                full = True
            urc = self._get_urc(bytes(buf))
            if (ch == 0x0A and last == 0x0D) or (self.end_sign and ch == self.end_sign) or urc:
                if full:
                    self.full_lines += 1
                    return b"", None
                return bytes(buf), urc
            last = ch

    def _parser(self) -> None:
        while not self._stop:
            line, urc = self._readline()
            if line is None:
                return
            if not line:
                continue
            if urc is not None:
                urc(self, line)
                continue
            resp = self.resp
            if resp is None:
                self.dropped_lines.append(line)
                continue
            end_ch = line[-1]
            text = line[:-1]                         # recv_line_buf[len - 1] = '\0'
            if resp["len"] + len(line) < resp["size"]:
                resp["lines"].append(text)
                resp["len"] += len(line)
            else:
                resp["status"] = "buff_full"
            if self.end_sign and end_ch == self.end_sign and resp["line_num"] == 0:
                resp["status"] = RESP_OK
            elif text.startswith(b"OK") and resp["line_num"] == 0:
                resp["status"] = RESP_OK
            elif b"ERROR" in text.split(b"\0")[0] or text.startswith(b"FAIL"):
                resp["status"] = RESP_ERROR
            elif resp["line_num"] and len(resp["lines"]) == resp["line_num"]:
                resp["status"] = RESP_OK
            else:
                continue
            self.resp = None
            self.resp_notice.set()

    def exec_cmd(self, cmd: str, line_num: int = 0, timeout: float = 0.3, size: int = 128):
        """at_obj_exec_cmd(): (status, lines); lines are C strings (their last byte, the LF
        or the end sign, cut; a CR before it kept)."""
        with self.lock:
            resp = {"lines": [], "len": 0, "size": size, "line_num": line_num, "status": RESP_OK}
            self.resp_notice.clear()
            self.resp = resp
            self.ser.write(cmd.encode("latin-1") + b"\r\n")
            if not self.resp_notice.wait(timeout * SLOW):
                self.resp = None
                return RESP_TIMEOUT, resp["lines"]
            return resp["status"], resp["lines"]

    def send(self, data: bytes) -> int:                 # at_client_send()
        with self.lock:
            self.ser.write(data)
            return len(data)

    def wait_connect(self, timeout: float = 5) -> bool:
        """at_client_obj_wait_connect(): "AT\\r\\n" every 300 ms until a response ends."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while time.monotonic() < deadline:
                resp = {"lines": [], "len": 0, "size": 64, "line_num": 0, "status": RESP_OK}
                self.resp_notice.clear()
                self.resp = resp
                self.ser.write(b"AT\r\n")
                if self.resp_notice.wait(0.3 * SLOW):
                    return True
            self.resp = None
            return False


def _resp_line_by_kw(lines: list[bytes], kw: bytes) -> bytes | None:
    return next((line for line in lines if kw in line), None)


class RtEvent:
    """rt_event with RT_EVENT_FLAG_OR | RT_EVENT_FLAG_CLEAR receivers."""

    def __init__(self) -> None:
        self.set_bits = 0
        self.cond = threading.Condition()

    def send(self, bits: int) -> None:
        with self.cond:
            self.set_bits |= bits
            self.cond.notify_all()

    def recv(self, mask: int, timeout: float) -> int:
        with self.cond:
            if not self.cond.wait_for(lambda: self.set_bits & mask, timeout):
                return -2
            got = self.set_bits & mask
            self.set_bits &= ~mask
            return got


CONN_OK, SEND_OK, CONN_FAIL, SEND_FAIL, DOMAIN_OK = 1 << 0, 1 << 1, 1 << 4, 1 << 5, 1 << 6


def SET_EVENT(sock: int, event: int) -> int:
    return ((sock + 1) << 16) | event


class RtEc20:
    """class/ec20: the init thread, netdev ops and socket ops, mirroring the C."""

    def __init__(self, path: str) -> None:
        self.client = RtAtClient(path)
        self.event = RtEvent()
        self.user_data = 0                  # ec20->user_data: the socket being sent on
        self.socket_data: bytes | None = None
        self.recv: dict[int, bytearray] = {}
        self.closed: list[int] = []
        self.pdpdeact: list[int] = []
        self.logged: list[str] = []
        self.recv_failures: list[str] = []
        self.client.urc_table = [(b"SEND OK", b"\r\n", self._urc_send), (b"SEND FAIL", b"\r\n", self._urc_send),
                                 (b"+QIOPEN:", b"\r\n", self._urc_connect), (b"+QIURC:", b"\r\n", self._urc_qiurc)]

    def close(self) -> None:
        self.client.close()

    # -- URC handlers --------------------------------------------------------------------------
    def _urc_connect(self, client, data: bytes) -> None:
        m = re.match(rb"\+QIOPEN: (\d+),(\d+)", data)       # rt_sscanf("+QIOPEN: %d,%d")
        sock, result = int(m.group(1)), int(m.group(2))
        self.event.send(SET_EVENT(sock, CONN_OK if result == 0 else CONN_FAIL))
        if result:
            self.logged.append(f"qiopen {result}")

    def _urc_send(self, client, data: bytes) -> None:
        if b"SEND OK" in data:
            self.event.send(SET_EVENT(self.user_data, SEND_OK))
        elif b"SEND FAIL" in data:
            self.event.send(SET_EVENT(self.user_data, SEND_FAIL))

    def _urc_qiurc(self, client, data: bytes) -> None:
        kind = chr(data[9]) if len(data) > 9 else "?"
        if kind == "c":
            m = re.match(rb'\+QIURC: "closed",(\d+)', data)
            self.closed.append(int(m.group(1)))
        elif kind == "r":
            m = re.match(rb'\+QIURC: "recv",(\d+),(\d+)', data)
            sock, bfsz = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
            if sock < 0 or bfsz == 0:
                self.recv_failures.append(f"unparsed recv URC {data!r}")
                return
            got = client.obj_recv(bfsz, max(bfsz, 10))
            if len(got) != bfsz:
                self.recv_failures.append(f"receive size({bfsz}) data failed: {len(got)}")
                return
            self.recv.setdefault(sock, bytearray()).extend(got)
        elif kind == "p":
            m = re.match(rb'\+QIURC: "pdpdeact",(\d+)', data)
            self.pdpdeact.append(int(m.group(1)))
        elif kind == "d":
            if data.count(b".") == 3:
                m = re.match(rb'\+QIURC: "dnsgip","([^"]*)', data)
                self.socket_data = m.group(1)[:15]
                self.event.send(DOMAIN_OK)
            else:
                m = re.match(rb'\+QIURC: "dnsgip",(\d+),(\d+),(\d+)', data) or \
                    re.match(rb'\+QIURC: "dnsgip",(\d+)', data)
                if m and int(m.group(1)):
                    self.logged.append(f"dnsgip {int(m.group(1))}")
        else:
            self.logged.append(f"URC data : {data!r}")

    # -- ec20_init_thread_entry ----------------------------------------------------------------
    def init(self) -> dict:
        c, info = self.client, {}

        def send(cmd, line_num=0, timeout=0.3):
            status, lines = c.exec_cmd(cmd, line_num, timeout)
            assert status == RESP_OK, (cmd, status, lines)
            return lines

        assert c.wait_connect(5)
        send("ATV1")
        send("ATE0")
        send("AT+CMEE=2")
        lines = send("AT+IPR?")
        info["ipr"] = int(re.match(rb"\+IPR: (\d+)", _resp_line_by_kw(lines, b"+IPR:")).group(1))
        info["ati"] = send("ATI")
        send("AT+GSN")
        dropped = len(c.dropped_lines)
        lines = send("AT+CPIN?", line_num=2, timeout=5)
        assert _resp_line_by_kw(lines, b"READY"), lines
        # "waiting for dirty data" (10 ms): AT+CPIN?'s OK, after the two lines taken, comes and
        # is dropped -- on the module at once; the emulator writes it apart from +CPIN: READY,
        # and a loaded machine may deliver it later than 10 ms: wait for it (as long as SLOW s).
        deadline = time.monotonic() + SLOW
        while b"OK\r\n" not in c.dropped_lines[dropped:] and time.monotonic() < deadline:
            time.sleep(0.01)
        send("AT+CIMI")
        send("AT+QCCID")
        lines = send("AT+CSQ")
        info["csq"] = tuple(int(x) for x in re.match(rb"\+CSQ: (\d+),(\d+)", _resp_line_by_kw(lines, b"+CSQ:")).groups())
        assert info["csq"][0] != 99
        for cmd in ("AT+CREG?", "AT+CGREG?"):
            lines = send(cmd)
            kw = cmd[2:-1].encode() + b":"
            parsed = _resp_line_by_kw(lines, kw).split(b" ", 1)[1].split()[0]   # "%s"
            assert parsed in (b"0,1", b"0,5"), (cmd, lines)
        send("AT+CEREG?")
        lines = send("AT+COPS?")
        m = re.match(rb'\+COPS: [^"]*"([^"]*)', _resp_line_by_kw(lines, b"+COPS:"))
        info["operator"] = m.group(1) if m else b""
        apn = {b"CHINA MOBILE": "CMNET", b"CHN-UNICOM": "UNINET", b"CHN-CT": "CTNET"}.get(info["operator"])
        if apn:
            send(f'AT+QICSGP=1,1,"{apn}","","",0')
        send("AT+CTZU=3")
        send("AT+CCLK?")
        send("AT+QIDEACT=1", timeout=40)
        send("AT+QIACT=1", timeout=150)
        lines = send("AT+QIACT?", timeout=150)
        info["ip"] = re.match(rb'\+QIACT: [^"]*"([^"]*)', _resp_line_by_kw(lines, b"+QIACT:")).group(1)
        return info

    def netdev_set_info(self) -> dict:
        c, info = self.client, {}
        status, lines = c.exec_cmd("AT+GSN", 0, 0.3, 32)
        assert status == RESP_OK, lines
        info["imei"] = lines[1].split()[0]                  # at_resp_parse_line_args(resp, 2, "%s")
        status, lines = c.exec_cmd("AT+QIACT?", 0, 0.3, 64)
        assert status == RESP_OK, lines
        info["ip"] = re.match(rb'\+QIACT: [^"]*"([^"]*)', _resp_line_by_kw(lines, b"+QIACT:")).group(1)
        status, lines = c.exec_cmd("AT+QIDNSCFG=1", 0, 0.3, 96)
        assert status == RESP_OK, lines
        m = re.match(rb'\+QIDNSCFG: 1,"([^"]*)","([^"]*)"', _resp_line_by_kw(lines, b"+QIDNSCFG:"))
        assert m, lines
        info["dns"] = m.groups()
        status, lines = c.exec_cmd("AT+CGREG?", 0, 3, 64)   # ec20_check_link_status_entry
        assert status == RESP_OK, lines
        info["link_stat"] = int(re.match(rb"\+CGREG: \d+,(\d+)", _resp_line_by_kw(lines, b"+CGREG:")).group(1))
        return info

    # -- at_socket_ec20.c ----------------------------------------------------------------------
    def socket_close(self, sock: int) -> str:
        status, _ = self.client.exec_cmd(f"AT+QICLOSE={sock},1", 0, 5, 64)
        return status

    def socket_connect(self, sock: int, ip: str, port: int, kind: str = "TCP") -> int:
        retried = False
        while True:
            self.event.recv(SET_EVENT(sock, CONN_OK | CONN_FAIL), 0)
            status, _ = self.client.exec_cmd(f'AT+QIOPEN=1,{sock},"{kind}","{ip}",{port},0,1', 0, 5)
            if status != RESP_OK:
                return -1
            if self.event.recv(SET_EVENT(sock, 0), 10) < 0:
                return -2
            result = self.event.recv(CONN_OK | CONN_FAIL, 1)
            if result < 0:
                return -2
            if result & CONN_FAIL:
                if not retried:
                    if self.socket_close(sock) != RESP_OK:
                        return -1
                    retried = True
                    continue
                return -1
            return 0

    def socket_send(self, sock: int, buff: bytes) -> int:
        c = self.client
        sent = 0
        self.user_data = sock
        self.event.recv(SET_EVENT(sock, SEND_OK | SEND_FAIL), 0)
        c.end_sign = ord(">")
        try:
            while sent < len(buff):
                cur = min(1460, len(buff) - sent)
                status, lines = c.exec_cmd(f"AT+QISEND={sock},{cur}", 2, 5)
                if status != RESP_OK:
                    return -1
                if c.send(buff[sent:sent + cur]) == 0:
                    return -1
                if self.event.recv(SET_EVENT(sock, 0), 10) < 0:
                    return -2
                result = self.event.recv(SEND_OK | SEND_FAIL, 1)
                if result < 0:
                    return -2
                if result & SEND_FAIL:
                    return -1
                time.sleep(0.01)
                sent += cur
        finally:
            c.end_sign = 0
        return sent

    def domain_resolve(self, name: str, retries: int = 3, wait: float = 10) -> bytes | int:
        self.event.recv(DOMAIN_OK, 0)
        status, _ = self.client.exec_cmd(f'AT+QIDNSGIP=1,"{name}"', 0, 10)
        if status != RESP_OK:
            return -1
        for _ in range(retries):
            if self.event.recv(DOMAIN_OK, wait) < 0:
                continue
            if len(self.socket_data) < 8:
                continue
            return self.socket_data
        return -5


@pytest.fixture
def fresh(open_modem):
    """(pty path, ModemPort): an EC2x as powered up (ATE1, no context active); the fixture's
    Host is closed so that the driver opens the port itself."""
    host, port = open_modem("ec2x", echo=True)
    host.close()
    return host.path, port


def _wait(pred, timeout: float = 5, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what} not met in {timeout} s"
        time.sleep(0.01)


def _rtt_up(path) -> RtEc20:
    drv = RtEc20(path)
    info = drv.init()
    assert info["operator"] == b"CHN-UNICOM" and info["ip"] == b"10.7.157.1", info
    return drv


# -- RT-Thread at_device EC20 ----------------------------------------------------------------
def test_rtthread_ec20_init_netdev_info_link_ping_and_dns_server(fresh, emulator, strict_log):
    """The whole init thread with the at_client's line rules (AT+CPIN? closed after 2 lines,
    its OK then dropped as a line nobody waits for), then ec20_netdev_set_info(), the link
    thread's AT+CGREG? parse, a ping read as 4 lines, and AT+QIDNSCFG=1,"<ip>"."""
    path, _ = fresh
    emulator.router.add_dns("ping.example", "10.9.8.7")
    drv = RtEc20(path)
    try:
        info = drv.init()
        assert info["ipr"] == 115200 and info["csq"] == (24, 99)
        assert info["operator"] == b"CHN-UNICOM" and info["ip"] == b"10.7.157.1"
        assert info["ati"] == [b"\r", b"Quectel\r", b"EC25\r", b"Revision: EC25EFAR06A06M4G\r", b"\r", b"OK\r"]
        _wait(lambda: b"OK\r\n" in drv.client.dropped_lines, 2, "AT+CPIN?'s late OK dropped")
        net = drv.netdev_set_info()
        assert net == {"imei": b"867698041234567", "ip": b"10.7.157.1",
                       "dns": (b"123.66.165.1", b"123.66.165.2"), "link_stat": 1}
        # ec20_netdev_ping(): resp of 4 lines, timeout 5 s
        status, lines = drv.client.exec_cmd('AT+QPING=1,"ping.example",4,1', 4, 5)
        assert status == RESP_OK, lines
        line = _resp_line_by_kw(lines, b"+QPING:")
        assert int(re.match(rb"\+QPING:\s*(\d+)", line).group(1)) == 0
        m = re.match(rb'\+QPING:(\d+),"([^"]*)",(\d+),(\d+),(\d+)', line.replace(b": ", b":"))
        assert m and m.group(2) == b"10.9.8.7" and int(m.group(3)) == 32 and int(m.group(5)) == 255, line
        status, lines = drv.client.exec_cmd('AT+QIDNSCFG=1,"8.8.8.8"', 0, 0.3, 8)
        assert status == RESP_OK, lines
        assert drv.netdev_set_info()["dns"][0] == b"8.8.8.8"
        assert drv.client.full_lines == 0 and not drv.logged
    finally:
        drv.close()


def test_rtthread_ec20_tcp_push_resolve_connect_send_blocks_and_receive(fresh, emulator, strict_log):
    """ec20_domain_resolve() then a direct-push TCP socket; 4000 bytes that hold '>' (the send
    loop's end sign), CR LF, "SEND OK\\r\\n" and "+QIURC: " go out in 1460-byte blocks and come
    back as "recv" pushes read raw by length; then AT+QICLOSE=0,1."""
    path, _ = fresh
    payload = (b">>\r\nSEND OK\r\n+QIURC: \"closed\",0\r\n" + os.urandom(1500)) * 3
    payload = payload[:4000]
    with TcpServer("echo") as server:
        emulator.router.add_dns("iot.example", "10.20.30.40")
        emulator.router.add_map("10.20.30.40", 5683, "127.0.0.1", server.port)
        drv = _rtt_up(path)
        try:
            assert drv.domain_resolve("iot.example") == b"10.20.30.40"
            assert drv.socket_connect(0, "10.20.30.40", 5683) == 0
            assert drv.socket_send(0, payload) == len(payload)
            assert server.wait_connection().wait_received(len(payload)) == payload
            _wait(lambda: len(drv.recv.get(0, b"")) >= len(payload), 5, "echo pushed back")
            assert bytes(drv.recv[0]) == payload
            assert not drv.recv_failures and not drv.logged and not drv.closed
            assert drv.socket_close(0) == RESP_OK
            assert server.gone()
        finally:
            drv.close()


def test_rtthread_ec20_udp_push_datagrams_and_two_sockets_interleaved(fresh, emulator, strict_log):
    """A UDP client in push mode beside a TCP one: '+QIURC: "recv",<id>,<len>' for a UDP client
    has no address (sscanf "+QIURC: \\"recv\\",%d,%d"); each datagram arrives whole."""
    path, _ = fresh
    with UdpEchoServer() as udp, TcpServer("echo") as tcp:
        emulator.router.add_map("10.0.0.5", 9000, "127.0.0.1", udp.port)
        emulator.router.add_map("10.0.0.6", 9001, "127.0.0.1", tcp.port)
        drv = _rtt_up(path)
        try:
            assert drv.socket_connect(3, "10.0.0.5", 9000, "UDP") == 0
            assert drv.socket_connect(4, "10.0.0.6", 9001, "TCP") == 0
            grams = [b"\x00\r\n" + bytes([i]) * (100 + i) for i in range(5)]
            tcp_data = b""
            for i, g in enumerate(grams):
                assert drv.socket_send(3, g) == len(g)
                chunk = b"T%d>" % i * 50
                tcp_data += chunk
                assert drv.socket_send(4, chunk) == len(chunk)
            _wait(lambda: len(drv.recv.get(3, b"")) >= sum(map(len, grams))
                  and len(drv.recv.get(4, b"")) >= len(tcp_data), 5, "all pushed back")
            assert bytes(drv.recv[3]) == b"".join(grams)
            assert bytes(drv.recv[4]) == tcp_data
            assert not drv.recv_failures and not drv.logged
            assert drv.socket_close(3) == RESP_OK and drv.socket_close(4) == RESP_OK
        finally:
            drv.close()


def test_rtthread_ec20_peer_close_and_pdp_deactivation_urcs_dispatch_on_byte_9(fresh, emulator, strict_log):
    """urc_qiurc_func() switches on data[9] ('c' closed, 'p' pdpdeact): one space after the
    colon, the quote at [8]. A peer's close, then the app's AT+QICLOSE=<id>,1 (OK); then the
    network drops the context: "pdpdeact" with the cid and "closed" for the open socket."""
    path, _ = fresh
    with TcpServer("echo") as server:
        emulator.router.add_map("10.0.0.7", 7777, "127.0.0.1", server.port)
        drv = _rtt_up(path)
        try:
            assert drv.socket_connect(1, "10.0.0.7", 7777) == 0
            assert drv.socket_send(1, b"bye") == 3
            _wait(lambda: bytes(drv.recv.get(1, b"")) == b"bye", 5, "echo")
            server.wait_connection(0).close()
            _wait(lambda: drv.closed == [1], 5, '"closed",1')
            assert drv.socket_close(1) == RESP_OK
            assert drv.socket_connect(2, "10.0.0.7", 7777) == 0
            assert emulator.control("pdp_deact", cid=1)["ok"]
            _wait(lambda: drv.pdpdeact == [1] and drv.closed == [1, 2], 5, "pdpdeact, closed")
            assert drv.socket_close(2) == RESP_OK
            assert not drv.logged and not drv.recv_failures
        finally:
            drv.close()


def test_rtthread_ec20_dns_failure_urc_is_an_error_code_without_dots(fresh, emulator, strict_log):
    """A name the modem cannot resolve: OK, then '+QIURC: "dnsgip",565' -- no dots, so the
    driver logs the TCP/IP error (at_tcp_ip_errcode_parse 565 "DNS parse failed") and never
    takes an address from it."""
    path, _ = fresh
    drv = _rtt_up(path)
    try:
        assert drv.domain_resolve("nowhere.invalid", retries=1, wait=3) == -5
        assert drv.logged == ["dnsgip 565"]
        assert drv.socket_data is None
    finally:
        drv.close()


def test_rtthread_ec20_refused_connect_is_closed_and_retried(fresh, emulator, strict_log):
    """ec20_socket_connect() on "+QIOPEN: 0,566": "the socket was not be closed and now will
    connect retry" -- AT+QICLOSE=0,1, then AT+QIOPEN once more.  The failed open leaves nothing
    open and AT+QICLOSE of an id with nothing open is OK (docs/behaviour.md, AT+QICLOSE; it
    was ERROR 572, which the driver took as fatal: no retry), so the driver retries once, is
    refused again and gives up (-1); a second connect to a live server then works."""
    path, _ = fresh
    with TcpServer("echo") as server:
        emulator.router.add_map("10.0.0.8", 1, "127.0.0.1", 1)       # nothing listens: refused
        emulator.router.add_map("10.0.0.8", 80, "127.0.0.1", server.port)
        drv = _rtt_up(path)
        try:
            assert drv.socket_connect(0, "10.0.0.8", 1) == -1
            assert drv.logged == ["qiopen 566", "qiopen 566"]        # closed, retried once
            assert drv.socket_connect(0, "10.0.0.8", 80) == 0
            assert drv.socket_send(0, b"x") == 1
            _wait(lambda: bytes(drv.recv.get(0, b"")) == b"x", 5, "echo")
            assert drv.socket_close(0) == RESP_OK
        finally:
            drv.close()


# -- ESP-IDF esp-modem, modem_tcp_client BG96 commands -----------------------------------------
class EspDte:
    """esp_modem's DTE over the pty: command() accumulates chunks and calls the callback at each
    '\\n'; the socket layer gets raw chunks (dte->on_read)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.002)

    def close(self) -> None:
        self.ser.close()

    def chunk(self) -> bytes:
        """One UART event: what came, plus what follows within 2 ms (the ESP-IDF driver's RX
        timeout ends an event after a short idle gap; one burst of the modem is one event)."""
        if not self.ser.in_waiting:
            time.sleep(0.001)
            if not self.ser.in_waiting:
                return b""
        data = bytearray()
        while True:
            data += self.ser.read(self.ser.in_waiting)
            time.sleep(0.002)
            if not self.ser.in_waiting:
                return bytes(data)

    def command(self, cmd: bytes, got_line, timeout: float) -> str:
        self.ser.write(cmd)
        buf = bytearray()
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            c = self.chunk()
            if not c:
                continue
            buf += c
            if b"\n" in c:
                res = got_line(bytes(buf))
                if res != "TIMEOUT":
                    return res
        return "TIMEOUT"

    def generic_command(self, cmd: bytes, ok: bytes, fail: bytes, timeout: float) -> str:
        return self.command(cmd, lambda r: "OK" if ok in r else "FAIL" if fail in r else "TIMEOUT", timeout)

    def generic_get_string(self, cmd: bytes, timeout: float) -> tuple[str, bytes]:
        out = [b""]

        def cb(response: bytes) -> str:
            while b"\n" in response:
                pos = response.index(b"\n")
                token = response[:pos].rstrip(b"\r\n")
                if b"OK" in token:
                    return "OK"
                if b"ERROR" in token:
                    return "FAIL"
                if len(token) > 2:
                    out[0] = token
                response = response[pos + 1:]
            return "TIMEOUT"
        return self.command(cmd, cb, timeout), out[0]


class EspBg96Link:
    """sock_dce::Responder (BG96 flavour) plus DCE::perform_at(), one link."""

    BUF = 512

    def __init__(self, dte: EspDte, link_id: int) -> None:
        self.dte, self.link_id = dte, link_id
        self.state = "IDLE"
        self.send_stat = 0
        self.data_to_send = b""
        self.data_to_recv = 0
        self.data_ready = 0
        self.to_sock = bytearray()               # what the local socket got (on_read)
        self.failures: list[str] = []
        self.qisend_queries: list[bytes] = []
        self.seen = bytearray()                  # every chunk perform_at() got

    def send_cmd(self, cmd: str) -> None:
        self.dte.ser.write(cmd.encode())

    # DCE::connect + Responder::connect
    def connect(self, host: str, port: int, timeout: float = 5) -> bool:
        self.send_cmd(f'AT+QIOPEN=1,{self.link_id},"TCP","{host}",{port}\r')
        self.state = "CONNECTING"
        self.pump(lambda: self.state != "CONNECTING", timeout)
        return self.state == "IDLE"

    def start_sending(self, data: bytes) -> None:
        self.data_to_send, self.send_stat, self.state = data, 0, "SENDING"
        self.send_cmd(f"AT+QISEND={self.link_id},{len(data)}\r")

    def start_receiving(self, n: int) -> None:
        self.send_cmd(f"AT+QIRD={self.link_id},{n}\r")

    def check_urc(self, r: bytes) -> str:
        if b'+QIURC: "recv",%d' % self.link_id in r:
            self.data_ready += 1
        elif b"+QIRD: " in r:
            r = r[r.index(b"+QIRD: ") + 7:]
            cr = r.find(b"\r")
            if cr >= 0:
                if cr < 2:
                    return "IN_PROGRESS"
                if b",0" not in r[cr - 2:cr - 2 + cr]:
                    self.data_ready += 1
        elif b'+QIURC: "closed",%d' % self.link_id in r:
            self.failures.append("Connection closed")
            return "FAIL"
        return "IN_PROGRESS"

    def recv(self, data: bytes) -> str:
        if self.data_to_recv == 0:
            at = data.find(b"+QIRD: ")
            if at < 0:
                return "IN_PROGRESS"
            nl = data.find(b"\n", at + 7, at + 7 + 6)
            if nl < 0:
                self.failures.append("no new line found")
                return "FAIL"
            m = re.match(rb"\d+", data[at + 7:nl])
            if not m:
                self.failures.append("cannot convert")
                return "FAIL"
            actual = int(m.group(0))
            if actual == 0:
                return "OK"
            if actual > self.BUF:
                self.failures.append("TOO BIG")
                return "FAIL"
            start = nl + 1
            first = len(data) - start
            if actual > first:
                self.to_sock += data[start:]
                self.data_to_recv = actual - first
                return "NEED_MORE_DATA"
            self.to_sock += data[start:start + actual]
            recv_at = start
        elif self.data_to_recv > len(data):
            self.to_sock += data
            self.data_to_recv -= len(data)
            return "NEED_MORE_DATA"
        else:
            actual = self.data_to_recv
            self.to_sock += data[:actual]
            recv_at = 0
        if actual + 1 + 2 > len(data):                     # "OK" after the data
            tail = data[recv_at + 1 + actual:recv_at + 1 + actual + 6]
            o = tail.find(b"O")
            if o < 0 or tail[o + 1:o + 2] != b"K":
                self.data_to_recv = 0
                self.failures.append("no OK after data")
                return "FAIL"
        self.start_receiving(0)
        self.data_to_recv = 0
        return "OK"

    def send_prompt(self, data: bytes) -> str:            # Responder::send(uint8_t*, len)
        if self.send_stat < 3:
            if b">" not in data:
                self.send_stat += 1
                if self.send_stat <= 2:
                    return "NEED_MORE_DATA"
                self.failures.append("Missed >")
                return "FAIL"
            self.dte.ser.write(self.data_to_send)
            self.send_stat = 3
        return "IN_PROGRESS"

    def send_result(self, r: bytes) -> str:               # Responder::send(string_view)
        if self.send_stat == 3:
            if b"SEND OK" in r:
                self.send_cmd(f"AT+QISEND={self.link_id},0\r")
                self.send_stat = 4
            elif b"SEND FAIL" in r or b"ERROR" in r:
                self.failures.append(f"send: {r!r}")
                return "FAIL"
        elif self.send_stat == 4:
            if b"+QISEND: " in r:
                fields = r[r.index(b"+QISEND: ") + 9:].split(b"\r")[0]
                self.qisend_queries.append(fields)
                total, ack, _unack = (int(x) for x in fields.split(b","))
                if total - ack > 64:
                    return "NEED_MORE_TIME"
                self.send_stat = 0
                return "OK"
            if b"ERROR" in r:
                self.failures.append("Failed to check sending")
                return "FAIL"
        return "IN_PROGRESS"

    def perform_at(self, data: bytes) -> None:
        self.seen += data
        if self.state != "RECEIVING":
            self.check_urc(data)                           # its result is not looked at
            if self.state == "IDLE":
                return
        res = {"SENDING": self.send_prompt, "RECEIVING": self.recv}.get(self.state, lambda d: "IN_PROGRESS")(data)
        if res in ("OK", "FAIL"):
            self.state = "IDLE" if res == "OK" else "FAILED"
            return
        if res == "NEED_MORE_DATA":
            return
        if res == "NEED_MORE_TIME":
            self.state = "PENDING"
            return
        if self.state == "SENDING":
            res = self.send_result(data)
        elif self.state == "CONNECTING":
            if b"+QIOPEN: %d,0" % self.link_id in data:
                res = "OK"
            elif b"ERROR" in data:
                res = "FAIL"
        if res in ("OK", "FAIL"):
            self.state = "IDLE" if res == "OK" else "FAILED"
        elif res == "NEED_MORE_TIME":
            self.state = "PENDING"

    def pump(self, until, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, (self.state, self.failures, bytes(self.to_sock[-80:]))
            assert self.state != "FAILED", self.failures
            if self.state == "PENDING":                    # perform_sock(): 500 ms, pending()
                time.sleep(0.5)
                self.send_cmd(f"AT+QISEND={self.link_id},0\r")
                self.state = "SENDING"
            c = self.dte.chunk()
            if c:
                self.perform_at(c)


def _esp_init(dte: EspDte) -> bytes:
    """DCE::init(): sync, setup_data_mode (ATE0, AT+CGDCONT), net_open, get_ip."""
    assert dte.generic_command(b"AT\r", b"OK", b"ERROR", 0.5) == "OK"
    assert dte.generic_command(b"ATE0\r", b"OK", b"ERROR", 0.5) == "OK"
    assert dte.generic_command(b'AT+CGDCONT=1,"IP","internet"\r', b"OK", b"ERROR", 1) == "OK"
    res, out = dte.generic_get_string(b"AT+QISTATE?\r", 1)
    assert res == "OK" and out == b"", (res, out)           # nothing open: "out.empty()"
    assert dte.generic_command(b"AT+QIACT=1\r", b"OK", b"ERROR", 150) == "OK"
    res, out = dte.generic_get_string(b"AT+QIACT?\r", 5)
    assert res == "OK"
    pos = out.find(b"+QIACT: 1")
    prop = 0
    while pos >= 0:
        if prop == 3:
            ip = out[pos + 1:]
            q1, q2 = ip.find(b'"'), ip.rfind(b'"')
            return ip[q1 + 1:q1 + 1 + q2 - 1] if q1 >= 0 and q2 >= 0 else ip
        prop += 1
        pos = out.find(b",", pos + 1)
    raise AssertionError(f"get_ip: {out!r}")


def test_esp_modem_bg96_init_connect_send_receive_close(fresh, emulator, strict_log):
    """DCE::init() then one link: connect (AT+QIOPEN without local port or access mode, so
    buffer mode), data both ways in 512-byte pieces through the Responder's chunk parsers,
    the AT+QISEND=<id>,0 accounting after each SEND OK and the AT+QIRD=<id>,0 follow-up."""
    path, _ = fresh
    to_modem = os.urandom(1200) + b"\r\n+QIRD: 5\r\nOK\r\n>"
    with TcpServer("sink") as server:
        emulator.router.add_map("broker.example", 8883, "127.0.0.1", server.port)
        dte = EspDte(path)
        try:
            assert _esp_init(dte) == b"10.7.157.1"
            link = EspBg96Link(dte, 0)
            assert link.connect("broker.example", 8883)
            conn = server.wait_connection()
            for i in range(0, len(to_modem), 512):          # sock_to_at(): recv(buf, 512)
                link.start_sending(to_modem[i:i + 512])
                link.pump(lambda: link.state == "IDLE", 5)
            assert conn.wait_received(len(to_modem)) == to_modem
            totals = [tuple(map(int, q.split(b","))) for q in link.qisend_queries]
            assert all(t == a + u for t, a, u in totals), totals        # total = acked + unacked
            assert totals[-1] == (len(to_modem), len(to_modem), 0), totals
            from_server = bytes(range(256)) * 5 + b"+QIRD: 3\r\n"
            conn.send(from_server)
            link.pump(lambda: link.data_ready, 5)
            while len(link.to_sock) < len(from_server):     # at_to_sock()
                link.data_ready = 0
                link.state = "RECEIVING"
                link.start_receiving(link.BUF)
                link.pump(lambda: link.state == "IDLE", 5)
                link.pump(lambda: link.data_ready or len(link.to_sock) >= len(from_server), 5)
            assert bytes(link.to_sock) == from_server
            assert not link.failures
            assert dte.generic_command(b"AT+QICLOSE=0\r", b"OK", b"ERROR", 10) == "OK"
            assert server.gone()
        finally:
            dte.close()


def test_esp_modem_bg96_peer_close_then_send_error_and_net_close(fresh, emulator, strict_log):
    """A server that closes at once: '+QIURC: "closed",0' reaches check_urc() (logged only --
    perform_at() ignores its result) and the link still counts as connected; the next send's
    AT+QISEND=0,<n> is answered ERROR (the TCP/IP manual: ERROR when the connection is not
    established or abnormally closed), no '>' ever comes (the Responder would stall until
    DCE's 5 s idle wait gives up); close_sock() then runs net_close(): AT+QICLOSE=0 (OK),
    AT+QIDEACT=1 (OK), and init() again finds AT+QISTATE? empty and activates anew."""
    path, _ = fresh
    with TcpServer("close") as server:
        emulator.router.add_map("broker.example", 1883, "127.0.0.1", server.port)
        dte = EspDte(path)
        try:
            _esp_init(dte)
            link = EspBg96Link(dte, 0)
            assert link.connect("broker.example", 1883)
            link.pump(lambda: link.failures, 5)
            assert link.failures == ["Connection closed"]
            link.start_sending(b"\x10\x0c\x00\x04MQTT")
            got = b""
            deadline = time.monotonic() + 3
            while b"ERROR\r\n" not in got:
                assert time.monotonic() < deadline, got
                c = dte.chunk()
                if c:
                    got += c
                    link.perform_at(c)
            assert got == b"\r\nERROR\r\n"
            assert link.state == "SENDING" and link.send_stat == 1       # waiting for a '>'
            assert dte.generic_command(b"AT+QICLOSE=0\r", b"OK", b"ERROR", 10) == "OK"
            assert dte.generic_command(b"AT+QIDEACT=1\r", b"OK", b"ERROR", 40) == "OK"
            res, out = dte.generic_get_string(b"AT+QISTATE?\r", 1)
            assert (res, out) == ("OK", b"")
            assert dte.generic_command(b"AT+QIACT=1\r", b"OK", b"ERROR", 150) == "OK"
        finally:
            dte.close()


# -- Zephyr quectel-bg9x socket offload -----------------------------------------------------
def _z_line(ser, buf: bytearray, deadline: float) -> bytes:
    """modem_cmd_handler: the next non-empty line ending "\\r\\n" (eol)."""
    while True:
        while b"\r\n" not in buf:
            assert time.monotonic() < deadline, bytes(buf)
            buf += ser.read(max(1, ser.in_waiting))
        line, rest = bytes(buf).split(b"\r\n", 1)
        buf[:] = rest
        if line:
            return line


def test_zephyr_bg9x_fixed_length_send_with_trailing_ctrl_z_then_qird(open_modem, emulator, strict_log):
    """send_socket_data(): AT+QISEND=<fd>,<len> (fixed length), '>' , the data, then a Ctrl+Z
    the fixed-length prompt does not need -- a stray byte in command state that must neither
    reach the server nor spoil the next command. offload_recvfrom(): AT+QIRD=<fd>,<len> and
    on_cmd_sockread_common()'s length rules; '+QIURC: "closed",' makes it send AT+QICLOSE."""
    host, _ = open_modem("ec2x")
    host.close()
    with TcpServer("echo") as server:
        emulator.router.add_map("192.0.2.9", 4000, "127.0.0.1", server.port)
        ser = serial.Serial(host.path, 115200, timeout=0.005)
        buf = bytearray()
        try:
            dl = time.monotonic() + 10
            ser.write(b'AT+QICSGP=1,1,"internet","", "",1\r\n')
            assert _z_line(ser, buf, dl) == b"OK"
            ser.write(b"AT+QIACT=1\r\n")
            assert _z_line(ser, buf, dl) == b"OK"
            ser.write(b'AT+QIOPEN=1,2,"TCP","192.0.2.9",4000,0,0\r\n')
            assert _z_line(ser, buf, dl) == b"OK"
            assert _z_line(ser, buf, dl) == b"+QIOPEN: 2,0"
            received = b""
            for payload in (b"\x1a\x1bAB\r\n", os.urandom(1460), b"last>"):
                ser.write(b"AT+QISEND=2,%d\r\n" % len(payload))
                while b">" not in buf:                       # MODEM_CMD_DIRECT(">")
                    assert time.monotonic() < dl, bytes(buf)
                    buf += ser.read(max(1, ser.in_waiting))
                assert bytes(buf) == b"\r\n> "
                buf.clear()
                ser.write(payload)
                ser.write(b"\x1a")                           # the driver's ctrlz
                assert _z_line(ser, buf, dl) == b"SEND OK"
                received += payload
                assert server.wait_connection().wait_received(len(received)) == received
                assert _z_line(ser, buf, dl) == b'+QIURC: "recv",2'
                ser.write(b"AT+QIRD=2,%d\r\n" % 1500)
                head = _z_line(ser, buf, dl)
                assert head.startswith(b"+QIRD: "), head
                n = int(head[7:])
                while len(buf) < n + 6:                      # digits + 6 + len, less the header
                    assert time.monotonic() < dl
                    buf += ser.read(max(1, ser.in_waiting))
                assert bytes(buf[:n]) == payload and n == len(payload)
                del buf[:n]
                assert _z_line(ser, buf, dl) == b"OK"
            time.sleep(0.05)
            assert server.wait_connection().wait_received(len(received)) == received   # no 0x1A extra
            assert len(server.wait_connection().received) == len(received)
            server.wait_connection().close()
            assert _z_line(ser, buf, dl) == b'+QIURC: "closed",2'
            ser.write(b"AT+QICLOSE=2\r\n")
            assert _z_line(ser, buf, dl) == b"OK"
        finally:
            ser.close()
