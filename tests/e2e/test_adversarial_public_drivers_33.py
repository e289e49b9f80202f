"""Adversarial tests: a thirty-third set of public host code pointed at the pty -- two programs'
START-UP / RESET handling (boot URCs RDY / +CFUN: 1 / +CPIN: READY / +QUSIM: 1 / +QIND: SMS DONE /
+QIND: PB DONE after a restart, AT+QINISTAT and AT+CPIN? polled while they come) and then their
first TCP socket open (AT+QIOPEN in buffer and direct-push mode) against a loopback peer.
(Earlier files: test_adversarial_public_drivers.py .. _32.py; neither program below was
replayed there -- grep for "EG915N" / "mdm_wait_boot" / "sparkworks" / "moduleStateCheck".)
Programs replayed (public sources read through the reference store; paraphrased, not copied):
- An STM32 HAL "Quectel EG915N TCP socket driver for TFL_CONNECT_2" (modem.c, store file id
  53583933175; the store did not name its repository).  What the model keeps: a UART RX
  interrupt filling a ring buffer (RingBuf_Flush drops what is in it); mdm_getline() (bytes
  until '\\n', a '\\r' before it dropped, other '\\r' skipped, blank lines skipped when asked,
  a line cut by its timeout lost); mdm_cmd(cmd, expect, ms): flush, cmd + "\\r\\n", then lines:
  strstr(expect) -> 1, strstr("ERROR") -> -1, timeout -> 0; mdm_is_alive(): flush, "AT\\r\\n",
  wait for a line holding "OK" (1 s).  mdm_wait_boot(): lines (500 ms getline, blanks skipped)
  for up to 12 s until "RDY" (whole line) or one holding "+CFUN: 1" / "+QIND: SMS DONE", then
  mdm_is_alive() (3 tries, 1 s apart).  mdm_at_base_init(): ATE0, AT+CMEE=1, AT+CPIN? until
  "+CPIN: READY" (a miss: 2 s pause), AT+CREG=1, AT+CREG? polled (first non-blank line holding
  ",1" / ",5"), AT+CSQ (first line).  mdm_tcp_connect(): AT+QICLOSE=0, 500 ms, AT+QIDEACT=1,
  1 s, AT+QICSGP=1,1,"internet","","",1, AT+QIACT=1 (30 s), AT+QIACT? (first line), then
  AT+QIOPEN=1,0,"TCP","test.traffilog.co.il",30111,0,0 and lines (blanks kept) until one
  starting "+QIOPEN:" -- its number after the comma must be 0.
- sparkworks.id's "Quectel EC600K HTTP GET" ESP32 Arduino sketch (store file id 29894296835;
  repository not named): sendData(cmd, 1000): Serial2.println(cmd), then for 1000 ms, whenever
  bytes are there, response = Serial2.readString() (Stream: until 1000 ms of silence; it
  REPLACES the response); moduleStateCheck(): up to 15 x sendData("AT+QINISTAT", 1000), ready
  only if the answer holds "+QINISTAT: 1", else delay(1000); sendDataWaitResponse(cmd, wait,
  timeout, ln): println / print, then readString() calls until one holds `wait`; the sequence:
  AT+QICSGP=1,1,"internet","","",1 / AT+QIACT=1 / AT+QIOPEN=1,0,"TCP","sparkworks.id",43334,0,1
  (waits "+QIOPEN: 0,0") / AT+QISEND=0,<len> (">") / the GET request printed (waits "+QIURC:")
  / AT+QICLOSE=0 / AT+QIDEACT=1.
The module is restarted the way other files do it: AT+CFUN=1,1 or the control API's reboot.
"""
from __future__ import annotations

import re
import time

import pytest
import serial

from emulator.testing.peers import TcpServer

BOOT = [b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QUSIM: 1", b"+QIND: SMS DONE", b"+QIND: PB DONE"]
BOOT_TAIL = b"".join(b"\r\n" + u + b"\r\n" for u in BOOT[1:])


def _serial(path: str) -> serial.Serial:
    return serial.Serial(path, 115200, timeout=0)


# -- the EG915N STM32 driver ---------------------------------------------------------------------
class Eg915nDriver:
    """modem.c over the pty: a ring buffer fed by the 'RX interrupt' (reads of the pty)."""

    def __init__(self, path: str):
        self.ser = _serial(path)
        self.ring = bytearray()
        self.sent: list[bytes] = []
        self.lines: list[bytes] = []          # every line a getline / cmd returned or scanned

    def close(self) -> None:
        self.ser.close()

    # RingBuf
    def _pump(self) -> None:
        data = self.ser.read(4096)
        if data:
            self.ring += data

    def _get(self) -> int | None:
        self._pump()
        if not self.ring:
            time.sleep(0.001)
            return None
        b = self.ring[0]
        del self.ring[0]
        return b

    def flush(self) -> None:
        self._pump()
        self.ring.clear()

    def tx(self, data: bytes) -> None:
        self.sent.append(data)
        self.ser.write(data)

    def getline(self, timeout_ms: int, skip_blank: bool) -> bytes | None:
        start = time.monotonic()
        buf = bytearray()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            b = self._get()
            if b is None:
                continue
            if b == 0x0A:
                if buf and buf[-1] == 0x0D:
                    buf.pop()
                if skip_blank and not buf:
                    continue
                self.lines.append(bytes(buf))
                return bytes(buf)
            if b != 0x0D and len(buf) < 255:
                buf.append(b)
        return None

    def _scan(self, expect: bytes | None, timeout_ms: int) -> int:
        start = time.monotonic()
        line = bytearray()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            b = self._get()
            if b is None:
                continue
            if b == 0x0A:
                if line and line[-1] == 0x0D:
                    line.pop()
                text, line = bytes(line), bytearray()
                if not text:
                    continue
                self.lines.append(text)
                if expect is not None and expect in text:
                    return 1
                if b"ERROR" in text:
                    return -1
            elif b != 0x0D and len(line) < 255:
                line.append(b)
        return 0

    def cmd(self, cmd: bytes, expect: bytes, timeout_ms: int) -> int:
        self.flush()
        self.tx(cmd)
        self.tx(b"\r\n")
        return self._scan(expect, timeout_ms)

    def is_alive(self) -> bool:
        self.flush()
        self.tx(b"AT\r\n")
        return self._scan(b"OK", 1000) == 1

    def wait_boot(self) -> bool:
        start = time.monotonic()
        got = False
        while time.monotonic() - start < 12:
            line = self.getline(500, True)
            if line is not None and (line == b"RDY" or b"+CFUN: 1" in line or b"+QIND: SMS DONE" in line):
                got = True
                break
        self.boot_line = line if got else None
        for _ in range(3):
            if self.is_alive():
                return True
            time.sleep(1)
        return False

    def base_init(self) -> bool:
        if self.cmd(b"ATE0", b"OK", 3000) != 1:
            return False
        self.cmd(b"AT+CMEE=1", b"OK", 3000)
        self.cpin_tries = 0
        start = time.monotonic()
        ready = False
        while time.monotonic() - start < 30 and not ready:
            self.cpin_tries += 1
            if self.cmd(b"AT+CPIN?", b"+CPIN: READY", 3000) == 1:
                ready = True
            else:
                time.sleep(2)
        if not ready:
            return False
        self.cmd(b"AT+CREG=1", b"OK", 3000)
        self.creg_lines = []
        start = time.monotonic()
        registered = False
        while time.monotonic() - start < 60 and not registered:
            self.flush()
            self.tx(b"AT+CREG?\r\n")
            line = self.getline(2000, True)
            self.creg_lines.append(line)
            if line is not None and (b",1" in line or b",5" in line or line in (b"+CREG: 1", b"+CREG: 5")):
                registered = True
            if not registered:
                time.sleep(2)
        if not registered:
            return False
        self.flush()
        self.tx(b"AT+CSQ\r\n")
        self.csq_line = self.getline(2000, True)
        return True

    def tcp_connect(self) -> bool:
        self.cmd(b"AT+QICLOSE=0", b"OK", 5000)
        time.sleep(0.5)
        self.cmd(b"AT+QIDEACT=1", b"OK", 15000)
        time.sleep(1)
        if self.cmd(b'AT+QICSGP=1,1,"internet","","",1', b"OK", 5000) != 1:
            return False
        if self.cmd(b"AT+QIACT=1", b"OK", 30000) != 1:
            return False
        self.flush()
        self.tx(b"AT+QIACT?\r\n")
        self.ip_line = self.getline(3000, True)
        self.flush()
        self.tx(b'AT+QIOPEN=1,0,"TCP","test.traffilog.co.il",30111,0,0')
        self.tx(b"\r\n")
        self.open_lines = []
        start = time.monotonic()
        while time.monotonic() - start < 30:
            line = self.getline(500, False)
            if not line:
                continue
            self.open_lines.append(line)
            if line.startswith(b"+QIOPEN:"):
                err = line[8:].split(b",", 1)[1].strip()
                return int(err) == 0
        return False


@pytest.fixture
def eg915n(driver_port, emulator):
    path, _ = driver_port
    drv = Eg915nDriver(path)
    with TcpServer("echo") as server:
        emulator.router.add_map("test.traffilog.co.il", 30111, "127.0.0.1", server.port)
        try:
            yield drv, server
        finally:
            drv.close()


def test_eg915n_reset_boot_wait_base_init_and_first_tcp_open(eg915n, emulator, strict_log):
    """AT+CFUN=1,1 (the driver's PWRKEY power-on stands in): mdm_wait_boot() stops at "RDY",
    AT answers OK at once; ATE0 is echoed (echo is back on after the reset); AT+CPIN? sent
    before "+CPIN: READY" is out is refused with a CME error (a 2 s pause, then READY);
    AT+CREG? / AT+CSQ / AT+QIACT? first lines are their answers (all boot URCs are out by then),
    and the first socket opens: "OK" then "+QIOPEN: 0,0", the peer sees the connection."""
    drv, server = eg915n
    drv.tx(b"AT+CFUN=1,1\r\n")
    assert drv.wait_boot() is True
    assert drv.boot_line == b"RDY"
    assert drv.lines[:3] == [b"AT+CFUN=1,1", b"OK", b"RDY"]
    assert drv.base_init() is True
    assert drv.creg_lines == [b"+CREG: 1,1"]
    assert drv.csq_line.startswith(b"+CSQ: ")
    assert drv.tcp_connect() is True
    assert drv.ip_line.startswith(b'+QIACT: 1,1,1,"')
    assert drv.open_lines == [b"OK", b"+QIOPEN: 0,0"]
    conn = server.wait_connection(0, timeout=5)
    assert conn is not None
    drv.flush()
    drv.tx(b"AT+QISTATE=1,0\r\n")
    assert re.fullmatch(rb'\+QISTATE: 0,"TCP","[0-9.]+",30111,\d+,2,1,0,0,"usbmodem"', drv.getline(2000, True))
    assert drv.cpin_tries == 2
    assert drv.lines == [
        b"AT+CFUN=1,1", b"OK", b"RDY",                  # wait_boot: what came before RDY
        b"AT", b"OK", b"ATE0", b"OK", b"OK",            # is_alive, ATE0 (echoed), AT+CMEE=1
        b"+CME ERROR: 14",                              # AT+CPIN? before +CPIN: READY: SIM busy
        b"+CPIN: READY", b"OK",                         # 2 s later (the boot URCs flushed)
        b"+CREG: 1,1", b"+CSQ: 24,99",
        b"OK", b"OK", b"OK", b"OK",                     # QICLOSE=0, QIDEACT=1, QICSGP, QIACT=1
        drv.ip_line, b"", b"OK", b"", b"+QIOPEN: 0,0",
        drv.lines[-1]]
    assert drv.sent == [
        b"AT+CFUN=1,1\r\n", b"AT\r\n", b"ATE0", b"\r\n", b"AT+CMEE=1", b"\r\n",
        b"AT+CPIN?", b"\r\n", b"AT+CPIN?", b"\r\n", b"AT+CREG=1", b"\r\n", b"AT+CREG?\r\n",
        b"AT+CSQ\r\n", b"AT+QICLOSE=0", b"\r\n", b"AT+QIDEACT=1", b"\r\n",
        b'AT+QICSGP=1,1,"internet","","",1', b"\r\n", b"AT+QIACT=1", b"\r\n", b"AT+QIACT?\r\n",
        b'AT+QIOPEN=1,0,"TCP","test.traffilog.co.il",30111,0,0', b"\r\n", b"AT+QISTATE=1,0\r\n"]


# -- the sparkworks EC600K sketch ----------------------------------------------------------------
class SparkworksSketch:
    """The sketch's Serial2 helpers over the pty (Stream timeout 1000 ms)."""

    def __init__(self, path: str):
        self.ser = _serial(path)
        self.sent: list[bytes] = []
        self.responses: list[bytes] = []

    def close(self) -> None:
        self.ser.close()

    def _write(self, data: bytes) -> None:
        self.sent.append(data)
        self.ser.write(data)

    def read_string(self) -> bytes:
        buf = bytearray()
        last = time.monotonic()
        while True:
            data = self.ser.read(4096)
            if data:
                buf += data
                last = time.monotonic()
            elif time.monotonic() - last >= 1.0:
                return bytes(buf)
            else:
                time.sleep(0.002)

    def send_data(self, command: bytes, timeout_ms: int) -> bytes:
        response = b""
        self._write(command + b"\r\n")
        start = time.monotonic()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            if self.ser.in_waiting:
                response = self.read_string()
            else:
                time.sleep(0.002)
        self.responses.append(response)
        return response

    def send_wait(self, command: bytes, wait: bytes, timeout_ms: int, ln: bool = True) -> tuple[bytes, bool]:
        response = b""
        self._write(command + (b"\r\n" if ln else b""))
        start = time.monotonic()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            if self.ser.in_waiting:
                response = self.read_string()
                if wait in response:
                    self.responses.append(response)
                    return response, True
            else:
                time.sleep(0.002)
        self.responses.append(response)
        return response, False

    def module_state_check(self, tries: int = 15) -> bool:
        for _ in range(tries):
            msg = self.send_data(b"AT+QINISTAT", 1000)
            if b"+QINISTAT: 1" in msg:
                return True
            time.sleep(1)
        return False


@pytest.fixture
def sketch(driver_port, emulator):
    path, _ = driver_port
    drv = SparkworksSketch(path)
    with TcpServer("echo") as server:
        emulator.router.add_map("sparkworks.id", 43334, "127.0.0.1", server.port)
        try:
            yield drv, server
        finally:
            drv.close()


def test_sparkworks_qinistat_check_misses_a_finished_boot(sketch, emulator, strict_log):
    """The control API's reboot, "HTTP" typed 0.1 s later: the first AT+QINISTAT (after RDY,
    before +CFUN: 1) is answered 0, and the readString() that collects it runs on through the
    rest of the boot URCs; the second, a second later, is answered 7 (CPIN READY + SMS DONE +
    PB DONE) -- neither holds "+QINISTAT: 1", so on an EC2x the sketch's readiness test can
    only pass in the ~220 ms between +CPIN: READY and +QIND: SMS DONE (the 13 tries left are
    not replayed: the sketch goes on regardless)."""
    drv, _ = sketch
    assert emulator.control("reboot", ms=50) == {"ok": True}
    time.sleep(0.1)
    assert drv.module_state_check(tries=2) is False
    assert drv.responses == [
        b"\r\nRDY\r\nAT+QINISTAT\r\r\n+QINISTAT: 0\r\n\r\nOK\r\n" + BOOT_TAIL,
        b"AT+QINISTAT\r\r\n+QINISTAT: 7\r\n\r\nOK\r\n"]


def test_sparkworks_ready_window_then_direct_push_http_get(sketch, emulator, strict_log):
    """"HTTP" typed 0.5 s after the reboot, between +QUSIM: 1 and +QIND: SMS DONE: AT+QINISTAT
    says 1 (the check passes), then the sketch's direct-push (access mode 1) TCP socket:
    "+QIOPEN: 0,0", the fixed-length send's "> ", the GET printed with no line end, "SEND OK"
    and the echo pushed as +QIURC: "recv",0,<len> with the data and their closing CR LF;
    AT+QICLOSE=0 / AT+QIDEACT=1."""
    drv, server = sketch
    assert emulator.control("reboot", ms=50) == {"ok": True}
    time.sleep(0.5)
    assert drv.module_state_check() is True
    assert drv.responses == [
        b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
        b"AT+QINISTAT\r\r\n+QINISTAT: 1\r\n\r\nOK\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"]
    cmd = b'AT+QICSGP=1,1,"internet","","",1'
    assert drv.send_wait(cmd, b"OK", 5000) == (cmd + b"\r\r\nOK\r\n", True)
    assert drv.send_wait(b"AT+QIACT=1", b"OK", 150000) == (b"AT+QIACT=1\r\r\nOK\r\n", True)
    cmd = b'AT+QIOPEN=1,0,"TCP","sparkworks.id",43334,0,1'
    assert drv.send_wait(cmd, b"+QIOPEN: 0,0", 10000) == (cmd + b"\r\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n", True)
    get = (b"GET /check HTTP/1.1\r\nHost: sparkworks.id\r\nUser-Agent: quectel/ec600k\r\n"
           b"Accept: */*\r\nConnection: keep-alive\r\n\r\n")
    cmd = b"AT+QISEND=0,%d" % len(get)
    assert drv.send_wait(cmd, b">", 1000) == (cmd + b"\r\r\n> ", True)
    response, found = drv.send_wait(get, b"+QIURC:", 150000, ln=False)
    assert found
    # ATE1 and AT+QISDE's default 1: the data are echoed in the prompt, then SEND OK and the push
    # (its readString() runs on past the data: the push's closing CR LF is in the response too)
    assert response == get + b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0,%d\r\n' % len(get) + get + b"\r\n"
    assert server.wait_connection(0, timeout=5).wait_received(len(get), timeout=5) == get
    assert drv.send_wait(b"AT+QICLOSE=0", b"OK", 10000) == (b"AT+QICLOSE=0\r\r\nOK\r\n", True)
    assert drv.send_wait(b"AT+QIDEACT=1", b"OK", 10000) == (b"AT+QIDEACT=1\r\r\nOK\r\n", True)


def test_eg915n_second_run_after_cfun_reset_with_socket_0_open(eg915n, emulator, strict_log):
    """The driver's whole start-up run a second time (its "clean up any leftover socket" path):
    with socket 0 connected, AT+CFUN=1,1, then mdm_wait_boot() / base init / tcp connect
    again.  The reset drops socket 0 and PDP context 1 without a URC, so AT+QICLOSE=0 and
    AT+QIDEACT=1 are plain OKs, and the same connectID opens anew: "+QIOPEN: 0,0", a second
    connection at the peer; no "+QIURC" line is ever seen."""
    drv, server = eg915n
    drv.tx(b"AT+CFUN=1,1\r\n")
    assert drv.wait_boot() and drv.base_init() and drv.tcp_connect()
    server.wait_connection(0, timeout=5)
    drv.lines.clear()
    drv.cmd(b"AT+CFUN=1,1", b"OK", 3000)
    assert drv.wait_boot() is True
    assert drv.boot_line == b"RDY"
    assert drv.base_init() is True
    assert drv.tcp_connect() is True
    assert drv.open_lines == [b"OK", b"+QIOPEN: 0,0"]
    assert server.wait_connection(1, timeout=5) is not None
    assert drv.lines[:2] == [b"OK", b"RDY"]
    assert not [line for line in drv.lines if line.startswith(b"+QIURC")]
    assert b"+CME ERROR: 14" in drv.lines                      # echo was on again: ATE0 re-sent
    assert drv.lines[drv.lines.index(b"RDY") + 1:][:5] == [b"AT", b"OK", b"ATE0", b"OK", b"OK"]


def test_eg915n_alive_check_during_the_boot_gets_no_answer_before_rdy(eg915n, emulator, strict_log):
    """mdm_power_on(): the board powers the module (the control API's reboot: a PWRKEY pulse,
    RDY 1 s later), waits, then mdm_is_alive() -- flush, "AT\\r\\n", a line holding "OK" within
    1 s.  While the module boots nothing answers: is_alive() must fail (the driver then pulses
    PWRKEY and waits for the boot URCs), and the first line mdm_wait_boot() reads is RDY."""
    drv, _ = eg915n
    assert emulator.control("reboot", ms=1000) == {"ok": True}
    time.sleep(0.2)
    start = time.monotonic()
    alive = drv.is_alive()
    # (its 1 s scan may see the boot's first URCs, RDY at 1 s and +CFUN: 1 130 ms later)
    assert alive is False and drv.lines == BOOT[:len(drv.lines)], drv.lines
    assert time.monotonic() - start >= 0.8
    assert b"RDY" in drv.lines or drv.getline(2000, True) == b"RDY"


def test_qinistat_steps_through_1_3_7_as_the_sketch_polls_on_manual_time(ec2x_timed, strict_log):
    """The sketch's poll line ("AT+QINISTAT" + println's CR LF) at each step of an AT+CFUN=1,1
    boot on manual time: 0 after RDY, 1 once +CPIN: READY / +QUSIM: 1 are out, 3 in the 20 ms
    between +QIND: SMS DONE and +QIND: PB DONE, 7 after it -- the only step the sketch's
    '"+QINISTAT: 1"' test accepts is the second; AT+CPIN? is busy (+CME ERROR: 14) until
    +CPIN: READY."""
    host, advance, _ = ec2x_timed
    host.write(b"AT+CFUN=1,1\r\n")
    assert host.read_until(b"OK\r\n", timeout=3) == b"\r\nOK\r\n"
    poll = b"AT+QINISTAT\r\n"

    advance(0.06)
    assert host.read_until(b"RDY\r\n", timeout=3) == b"\r\nRDY\r\n"
    host.write(poll)
    assert host.read_until(b"OK\r\n", timeout=3) == b"AT+QINISTAT\r\r\n+QINISTAT: 0\r\n\r\nOK\r\n"
    host.write(b"AT+CPIN?\r\n")
    assert host.read_until(b"14\r\n", timeout=3) == b"AT+CPIN?\r\r\n+CME ERROR: 14\r\n"
    advance(0.39)
    assert host.read_until(b"+QUSIM: 1\r\n", timeout=3) == BOOT_TAIL[:BOOT_TAIL.index(b"\r\n+QIND")]
    host.write(poll)
    assert host.read_until(b"OK\r\n", timeout=3) == b"AT+QINISTAT\r\r\n+QINISTAT: 1\r\n\r\nOK\r\n"
    advance(0.21)
    assert host.read_until(b"SMS DONE\r\n", timeout=3) == b"\r\n+QIND: SMS DONE\r\n"
    host.write(poll)
    assert host.read_until(b"OK\r\n", timeout=3) == b"AT+QINISTAT\r\r\n+QINISTAT: 3\r\n\r\nOK\r\n"
    advance(0.02)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == b"\r\n+QIND: PB DONE\r\n"
    host.write(poll)
    assert host.read_until(b"OK\r\n", timeout=3) == b"AT+QINISTAT\r\r\n+QINISTAT: 7\r\n\r\nOK\r\n"
    assert host.quiet_for(0.2) == b""


def test_eg915n_registration_poll_while_the_sim_is_still_busy(eg915n, strict_log):
    """The driver's own primitives in the order a hurried variant uses them (CPIN? failing, go
    on): AT+CFUN=1,1, mdm_wait_boot() to RDY, then right away mdm_cmd("AT+CPIN?") -- busy --,
    AT+CREG=1, the AT+CREG? poll's first line and mdm_cmd("AT+QIACT=1", "OK").  With the SIM
    not ready, the module cannot be registered nor activate a context."""
    drv, _ = eg915n
    drv.tx(b"AT+CFUN=1,1\r\n")
    assert drv.wait_boot() and drv.boot_line == b"RDY"
    assert drv.cmd(b"ATE0", b"OK", 3000) == 1
    assert drv.cmd(b"AT+CPIN?", b"+CPIN: READY", 3000) == -1
    assert drv.lines[-1] == b"+CME ERROR: 14"
    assert drv.cmd(b"AT+CREG=1", b"OK", 3000) == 1
    drv.flush()
    drv.tx(b"AT+CREG?\r\n")
    line = drv.getline(2000, True)
    sim_still_busy = drv.cmd(b"AT+CIMI", b"OK", 3000) == -1
    assert sim_still_busy                                     # (the test's own precondition)
    assert line in (b"+CREG: 1,0", b"+CREG: 1,2")
    assert drv.cmd(b'AT+QICSGP=1,1,"internet","","",1', b"OK", 5000) == 1
    assert drv.cmd(b"AT+QIACT=1", b"OK", 30000) == -1
