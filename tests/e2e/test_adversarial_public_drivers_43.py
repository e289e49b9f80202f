"""Adversarial tests: a forty-third set of public host code pointed at the pty, two drivers
earlier rounds did not replay (a search of tests/ and /tmp/notes for "bg36", "quactel_modem",
"forwardCommas", "FDonkers", "bg95_python_hal" finds nothing):

- A C "network_modem" layer of a WebSocket client (the store does not name its repository):
  the Quectel driver "bg36_driver" (its `USE_QUACTEL_BG36_DRIVER` switch; store id 367546870),
  the generic modem layer modem.c (store id 512032103), the AT engine at_handler.c (store id
  60089412) and at_handler.h (store id 949549960).  What the model keeps:
  * AT_handler_cmd(): the pending input is read into the line FIFO (1024 bytes, 20-byte
    reads) and thrown away, then the command text is written in ONE write and its "\\r\\n" in
    a SECOND write.  The first non-empty line after a command is taken as its ECHO whatever
    it says (the engine depends on ATE1, the module's default).
  * getLine(): CR and NUL dropped, LF ends a line, empty lines skipped; ONE line per poll;
    modem_do_command() polls every 10 ms, <timeout> polls in all (a timeout is an error even
    if the last poll finished the command).
  * check_result(): a line STARTING with OK, CONNECT, NO CARRIER, BUSY, NO ANSWER, +CME
    ERROR:, +CMS ERROR:, ERROR or +QSSLURC: "recv" ends the command ("SEND OK" does not: it
    is commented out in the source); everything else goes to the command's response handler.
    Before that, the driver's unsolicited() eats any line with "+QSSLURC: " and treats "NO
    CARRIER" / "DISCONNECTED" / "+QSSLOPEN: 4,1" as a lost connection.
  * channel-open '>': for AT+QSSLSEND, when no whole line waits and the byte at the FIFO's
    tail is '>', it is overwritten by '\\n' and the response handler gets ">": the payload
    minus its LAST byte is written, 20 ms pause, the echo is read raw (bypassing the FIFO)
    until 7 empty reads 5 ms apart, then the last byte alone, then one raw byte read (<=10
    tries, 1 ms apart).
  * setup_connection(): AT+QICSGP=1,1,"<apn>","","",0 (100 polls), AT+QIACT=1 (any
    result), then up to three times: AT+QSSLCLOSE=4 (any result), AT+QSSLOPEN=1,1,4,"<host>",
    <port>,0 (4000 polls), then up to 120 x (500 ms, AT+QSSLSTATE=4): the field after the
    5th comma of the +QSSLSTATE line, '2' = connected, '1' = still opening, anything else
    (or no line) = give up this try.  Then AT+CCLK?.
  * m_read(): "AT+QSSLRECV=4, <n>" (a SPACE after the comma), n = min(len, 400); the
    "+QSSLRECV: <len>" line's handler reads exactly <len> bytes out of the FIFO/port.
  * m_write(): AT+QSSLSEND=4,<n>, 2000 polls, three tries while an error is left.
  * modem_wakeup(): AT, ATI, AT+CPIN? (twice), AT+CSQ, AT+CGREG?, AT+COPS?, AT+CSQ,
    AT+CGREG=0, AT+CMEE=2.
  * the plain-TCP build (modem->crypted == 0): AT+QICLOSE=4, AT+QIOPEN=1,4,"TCP","<host>",
    <port>,0,0, AT+QISTATE=1,4 parsed by the same 5th-comma handler; AT+QISEND=4,<n> at the
    prompt writes the payload in 128-byte pieces, after each reading the echo raw until
    exactly that many bytes came (10 empty 10 ms reads end the wait); AT+QIRD=4,<n> and
    "+QIRD: <len>" then <len> bytes.
  The 20 s SEND budget (2000 polls) is shortened where noted (idle time only: nothing the
  module does depends on it).

- FDonkers/bg95_python_hal (Python 3 + pyserial, a BG95 HAL; SSL context set-up for its
  HTTPS client): bg95_serial.py at 6b10f06896b6446f7e7f59f14ab35cb3a0d55aa9 and
  bg95_atcmds.py (store id 5976289346, the revision with the "QUECTEL SSL FUNCTIONS").
  What the model keeps: a command is `<cmd>\\r`; the port is opened with timeout 0 but every
  read is a pyserial readline() with the command's timeout (5 s), decoded and strip()ped; the
  first line after a command is taken as the echo (unchecked); then lines are collected
  (non-empty ones joined with "\\n") until one starts with OK / CONNECT (success), +CME ERROR:
  (its code by regex) or ERROR.  A readline() timeout returns "" and the driver reads on
  forever: the replay bounds that loop (it would hang, never pass).  AT_CFUN(True) waits for
  "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE" in turn, reading lines until each.  The
  parsers are the source's regexes, re.search over the joined response.  AT+QSSLCFG:
  "sslversion",1,4 / "ciphersuite",1,0xFFFF (lower-case x) / "seclevel",1,0.  The HTTP
  commands (AT+QHTTP*) are not replayed: the emulator has no HTTP stack.  Its AT+CGPADDR
  regex (an unquoted address) does not fit the EC2x's documented quoted form
  (docs/behaviour.md) and is left out.

- S4IoT's "CM_Q03" SSL driver for NXP Kinetis (Mobile IoT Latam, 2018; a BG96-based board;
  the store does not name its repository): CM_Q03_SSL.c (store id 34614760101) over the
  CM_Q03 core (store id 34982921208: CM_Q03_Read, Character_finder, CM_Q03_Compare_short_
  response, CM_Q03_buffer_clean, CM_Q03_Get_Response).  What the model keeps: every command
  is built by concatenation and written in ONE write ending with CR alone; before it, a 50 ms
  Delay() and CM_Q03_buffer_clean() (everything received so far is discarded);
  CM_Q03_Read() skips bytes up to the first CR LF PAIR, copies the bytes up to the second
  CR LF pair (one framed line: with echo on, the echo's own CR is followed by CR, not LF, so
  the echo is skipped too) and needs at least 2 bytes buffered to look at a pair;
  Compare_short_response() is the source's substring scan.  The default configuration:
  "sslversion" 4, "ciphersuite" "0xFFFF" (lower-case x), "seclevel" 2, "ignorelocaltime" 1,
  "negotiatetime" 300.  CM_Q03_SSL_Open_Socket(): Read the "OK" line, then Read the next
  line and look only for "+QSSLOPEN: " in it -- the error code after it is never read.
  Get_Response(): a "+CME ERROR: " line gives its number.  (Dec_to_Ascii() of a 5-digit port
  into a 2-byte buffer overruns the C stack; the replay writes the digits as intended.)
"""
from __future__ import annotations

import re
import socket
import time

import pytest
import serial

from emulator.testing.peers import TlsServer

HOST = "ws.example.net"

# ---------------------------------------------------------------------------------------------
# The "bg36" network_modem driver over its at_handler.c engine
# ---------------------------------------------------------------------------------------------

IDLE, WAITING_ECHO, WAITING_RESULT = 0, 1, 2
MODEM_INIT, MODEM_ERROR, MODEM_DATA = 0, 1, 2
FIFO_LEN = 1024
ERROR_RESULT, ERROR_RESPONCE, ERROR_MODEM_TIMEOUT, ERROR_CMD_FAILED = 11, 12, 13, 14
RESULTS = (b"OK", b"CONNECT", b"NO CARRIER", b"BUSY", b"NO ANSWER", b"CONNECT",
           b"+CME ERROR:", b"+CMS ERROR:", b"ERROR", b'+QSSLURC: "recv"')


class Cmd:
    def __init__(self, text=None, func=None, channel_open=None, result=None, response=None):
        self.text, self.func, self.channel_open = text, func, channel_open
        self.result, self.response = result, response


def forward_commas(text: bytes, how_many: int) -> bytes | None:
    i = 0
    while i < len(text):
        if not how_many:
            return text[i:]
        if text[i:i + 1] == b",":
            how_many -= 1
        i += 1
    return None


class Bg36:
    """at_handler.c + modem.c + the bg36 driver over the pty."""

    def __init__(self, path: str, apn: str = "CMNET") -> None:
        self.path = path
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.fifo = bytearray()
        self.state = IDLE
        self.cmd: Cmd | None = None
        self.cmd_done = 0
        self.error = 0
        self.writes: list[bytes] = []
        self.echoes: list[bytes] = []
        self.responses: list[bytes] = []
        self.results: list[bytes] = []
        self.urcs: list[bytes] = []
        self.apn = apn
        # quactel_modem
        self.mstate = MODEM_INIT
        self.connected = 0
        self.send_data: bytes | None = None
        self.send_len = 0
        self.receive = bytearray()
        self.receive_len = 0
        self.qsslstate_lines: list[bytes] = []
        self.server = ("", 0)
        self.send_budget = 2000

    def close(self) -> None:
        self.ser.close()

    def reopen(self) -> None:
        self.ser.close()
        time.sleep(0.15)
        self.ser = serial.Serial(self.path, 115200, timeout=0)

    # --- transport ---------------------------------------------------------------------------
    def read_at(self, n: int) -> bytes:
        return self.ser.read(n) if n > 0 else b""

    def write_at(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        self.ser.write(data)
        return len(data)

    # --- at_handler.c --------------------------------------------------------------------------
    def _add_to_fifo(self) -> None:
        while True:
            space = FIFO_LEN - 1 - len(self.fifo)
            data = self.read_at(min(20, space))
            if not data:
                return
            self.fifo += data

    def _line_copy(self) -> tuple[int, bytes]:
        if b"\n" not in self.fifo:
            return -1, b""
        out = bytearray()
        while True:
            byte = self.fifo[0]
            del self.fifo[0]
            if len(out) + 1 >= FIFO_LEN:
                return 0, b""
            if byte == 0x0A:
                return len(out), bytes(out)
            if byte not in (0, 0x0D):
                out.append(byte)

    def _get_line(self) -> bytes | None:
        self._add_to_fifo()
        while True:
            n, line = self._line_copy()
            if n > 0:
                return line
            if n < 0:
                return None

    def poll(self) -> None:
        line = self._get_line()
        if line is None:
            if (self.state == WAITING_RESULT and self.cmd.channel_open and self.fifo
                    and self.fifo[0] == ord(self.cmd.channel_open)):
                self.fifo[0] = 0x0A
                self.cmd.response(b">")
            return
        if self.unsolicited(line):
            return
        if self.state == WAITING_ECHO:
            self.echoes.append(line)
            self.state = WAITING_RESULT
        elif self.state == WAITING_RESULT:
            if any(line.startswith(r) for r in RESULTS):
                self.results.append(line)
                self.state = IDLE
                self.cmd.result(line)
                return
            self.responses.append(line)
            if self.cmd.response:
                self.cmd.response(line)

    def handler_cmd(self, cmd: Cmd) -> int:
        if self.state != IDLE:
            return -1
        self.cmd = cmd
        self.state = WAITING_ECHO
        self._add_to_fifo()
        self.fifo.clear()
        if cmd.func:
            cmd.func()
        else:
            self.write_at(cmd.text)
        if self.state == WAITING_ECHO:
            self.write_at(b"\r\n")
        return 0

    def read_from_fifo(self, n: int) -> bytes:
        self._add_to_fifo()
        out = bytes(self.fifo[:n])
        del self.fifo[:n]
        return out

    # --- modem.c ---------------------------------------------------------------------------
    def do(self, cmd: Cmd, timeout: int) -> int:
        self.cmd_done = 0
        if self.handler_cmd(cmd):
            self.error = ERROR_CMD_FAILED
            return -ERROR_CMD_FAILED
        while not self.cmd_done and timeout:
            timeout -= 1
            time.sleep(0.01)
            self.poll()
            if not timeout:
                self.error = ERROR_MODEM_TIMEOUT
                self.state = IDLE
                return -ERROR_MODEM_TIMEOUT
        time.sleep(0.001)
        return self.cmd_done

    def gen_result(self, result: bytes) -> None:        # the driver's own
        if b"ERROR" in result:
            self.error = ERROR_RESULT
            self.mstate = MODEM_ERROR
        self.cmd_done = 1

    def modem_gen_result(self, result: bytes) -> None:  # modem.c's
        self.cmd_done = 1
        if b"ERROR" in result:
            self.error = ERROR_RESULT

    def ignorant_result(self, result: bytes) -> None:
        self.cmd_done = 1

    def gen_response(self, line: bytes) -> None:
        self.error = ERROR_RESPONCE

    def unsolicited(self, line: bytes) -> int:
        if b"NO CARRIER" in line or b"DISCONNECTED" in line or b"+QSSLOPEN: 4,1" in line:
            self.connected = 2
            self.mstate = MODEM_ERROR
            self.urcs.append(line)
            return 1
        if b"+QSSLURC: " not in line:
            return 0
        self.urcs.append(line)
        return 1

    def ok_or_ret(self, cmd: Cmd, timeout: int) -> bool:
        return not (self.do(cmd, timeout) <= 0 or self.error)

    # --- modem_wakeup() / init() -------------------------------------------------------------
    def modem_wakeup(self) -> int:
        g = self.modem_gen_result
        self.error = 0
        if not self.ok_or_ret(Cmd(b"AT", result=g, response=self.gen_response), 300):
            return -1
        if not self.ok_or_ret(Cmd(b"ATI", result=g, response=lambda l: None), 300):
            return -1

        def cpin(line: bytes) -> None:
            if b"READY" not in line:
                self.error = 99
            else:
                self.error = 0
        self.error = 0
        self.do(Cmd(b"AT+CPIN?", result=g, response=cpin), 300)
        self.error = 0
        self.do(Cmd(b"AT+CPIN?", result=g, response=cpin), 300)
        if self.error:
            return -1
        self.registered = False

        def csq(line: bytes) -> None:
            m = re.match(rb"\+CSQ: ?(\d+),(\d+)", line)
            self.csq = int(m.group(1)) if m else -1

        def cgreg(line: bytes) -> None:
            m = re.match(rb"\+CGREG: ?(\d+),(\d+)", line)
            stat = int(m.group(2)) if m else 1000
            if stat in (1, 5):
                self.registered = True
            else:
                self.error = 77

        def cops(line: bytes) -> None:
            self.network = line.split(b'"')[1] if b'"' in line else b"N/A"
        if not self.ok_or_ret(Cmd(b"AT+CSQ", result=g, response=csq), 300):
            return -1
        self.do(Cmd(b"AT+CGREG?", result=g, response=cgreg), 300)
        self.error = 0
        if not self.registered:
            return -1
        for cmd in (Cmd(b"AT+COPS?", result=g, response=cops), Cmd(b"AT+CSQ", result=g, response=csq),
                    Cmd(b"AT+CGREG=0", result=g, response=self.gen_response),
                    Cmd(b"AT+CMEE=2", result=g, response=self.gen_response)):
            if not self.ok_or_ret(cmd, 300):
                return -1
        return 0

    def init(self) -> int:
        self.mstate = MODEM_INIT
        wait = 20
        while True:
            self.do(Cmd(b"AT", result=self.gen_result, response=self.gen_response), 100)
            if not self.error:
                break
            self.error = 0
            wait -= 1
            if wait < 0:
                return -1
        self.iccid = None

        def qccid(line: bytes) -> None:
            i = line.find(b"+QCCID: ")
            if i >= 0:
                self.iccid = line[i + 8:]
        self.do(Cmd(b"AT+QCCID", result=self.gen_result, response=qccid), 100)
        self.error = 0
        if self.modem_wakeup():
            return -1
        if not self.ok_or_ret(Cmd(b"AT+QCCID", result=self.gen_result, response=qccid), 100):
            return -1
        self.mstate = MODEM_INIT
        return 0

    # --- setup_connection() ------------------------------------------------------------------
    def qsslstate(self, line: bytes) -> None:
        self.qsslstate_lines.append(line)
        st = forward_commas(line, 5)
        if st and st[:1] == b"2":
            self.connected = 1
        elif st and st[:1] == b"1":
            self.connected = 0
        else:
            self.connected = 2

    def setup_connection(self, host: str, port: int, poll_tries: int = 120,
                         crypted: bool = True) -> int:
        self.server = (host, port)
        self.crypted = crypted
        r, g = self.ignorant_result, self.gen_result
        qicsgp = b'AT+QICSGP=1,1,"%s","","",0' % self.apn.encode()
        if not self.ok_or_ret(Cmd(qicsgp, result=g, response=self.gen_response), 100):
            self.mstate = MODEM_ERROR
            return -1
        if not self.ok_or_ret(Cmd(b"AT+QIACT=1", result=r, response=self.gen_response), 4000):
            self.mstate = MODEM_ERROR
            return -1
        self.connected = 0
        j = 0
        while j < 3 and self.connected != 1:
            j += 1
            close = b"AT+QSSLCLOSE=4" if crypted else b"AT+QICLOSE=4"
            if not self.ok_or_ret(Cmd(close, result=r, response=self.gen_response), 4000):
                self.mstate = MODEM_ERROR
                return -1
            if crypted:
                opn = b'AT+QSSLOPEN=1,1,4,"%s",%d,0' % (host.encode(), port)
            else:
                opn = b'AT+QIOPEN=1,4,"TCP","%s",%d,0,0' % (host.encode(), port)
            if not self.ok_or_ret(Cmd(opn, result=g, response=self.gen_response), 4000):
                self.mstate = MODEM_ERROR
                return -1
            self.connected = 0
            i = 0
            while i < poll_tries and self.connected == 0:
                i += 1
                time.sleep(0.5)
                self.connected = 2
                state = b"AT+QSSLSTATE=4" if crypted else b"AT+QISTATE=1,4"
                if not self.ok_or_ret(Cmd(state, result=g, response=self.qsslstate), 100):
                    self.mstate = MODEM_ERROR
                    return -1
        self.tries = j
        if not self.ok_or_ret(Cmd(b"AT+CCLK?", result=g, response=lambda l: None), 100):
            self.mstate = MODEM_ERROR
            return -1
        if self.connected == 1:
            self.mstate = MODEM_DATA
        return 0

    # --- m_write() / m_read() ----------------------------------------------------------------
    def _sslsend_response(self, line: bytes) -> None:
        if not self.send_data or self.send_len < 1:
            return
        if line[:1] != b">":
            return
        self.write_at(self.send_data[:self.send_len - 1])
        time.sleep(0.02)
        timeout = 6
        self.manual_echo = bytearray()
        while True:
            got = self.read_at(100)
            if not got:
                timeout -= 1
            else:
                timeout = 2
                self.manual_echo += got
            time.sleep(0.005)
            if timeout < 0:
                break
        self.write_at(self.send_data[self.send_len - 1:self.send_len])
        for _ in range(10):
            b = self.read_at(1)
            if b:
                self.manual_echo += b
                break
            time.sleep(0.001)
        self.send_data = None

    def m_write(self, data: bytes) -> int:
        if self.mstate != MODEM_DATA:
            return -1
        sent = 0
        while sent < len(data):
            transfer = min(len(data) - sent, 1200)
            for _ in range(3):
                self.send_data = data[sent:sent + transfer]
                self.send_len = transfer
                self.error = 0
                if getattr(self, "crypted", True):
                    cmd = Cmd(func=lambda: self.write_at(b"AT+QSSLSEND=4,%d" % self.send_len),
                              channel_open=">", result=self.gen_result, response=self._sslsend_response)
                else:
                    cmd = Cmd(func=lambda: self.write_at(b"AT+QISEND=4,%d" % self.send_len),
                              channel_open=">", result=self.gen_result, response=self._qisend_response)
                self.do(cmd, self.send_budget)
                if not self.error:
                    break
            if self.error:
                self.mstate = MODEM_ERROR
                return -20
            sent += transfer
        self.mstate = MODEM_ERROR if self.send_len < 0 else MODEM_DATA
        return sent

    def _qisend_response(self, line: bytes) -> None:
        if not self.send_data or self.send_len < 1:
            return
        if line[:1] != b">":
            return
        self.echo_counts = []
        sent = 0
        while sent < self.send_len:
            n = min(self.send_len - sent, 128)
            self.write_at(self.send_data[sent:sent + n])
            sent += n
            echo, timeout = 0, 10
            while echo < n:
                got = self.read_at(n - echo)
                if not got:
                    timeout -= 1
                    time.sleep(0.01)
                else:
                    timeout = 2
                if timeout < 0:
                    break
                echo += len(got)
            self.echo_counts.append(echo)
        self.send_data = None

    def _sslrecv_response(self, line: bytes) -> None:
        tag = b"+QSSLRECV:" if getattr(self, "crypted", True) else b"+QIRD: "
        if tag not in line:
            return
        m = re.match(rb"\+(?:QSSLRECV|QIRD): (\d+)", line[line.find(tag):])
        n = int(m.group(1)) if m else 0
        got = bytearray()
        timeout = 1000
        while len(got) < n:
            got += self.read_from_fifo(n - len(got))
            if len(got) < n:
                time.sleep(0.001)
            timeout -= 1
            if timeout < 0:
                self.mstate = MODEM_ERROR
                self.receive_len = -1
                return
        self.receive = got
        self.receive_len = len(got)

    def m_read(self, n: int) -> tuple[int, bytes]:
        n = min(1200, n)
        if self.mstate != MODEM_DATA:
            return -1, b""
        self.receive = bytearray()
        self.receive_len = min(n, 400)

        def func() -> None:
            if getattr(self, "crypted", True):
                self.write_at(b"AT+QSSLRECV=4, %d" % self.receive_len)
            else:
                self.write_at(b"AT+QIRD=4,%d" % self.receive_len)
            self.receive_len = -42
        if not self.ok_or_ret(Cmd(func=func, result=self.gen_result, response=self._sslrecv_response), 4000):
            self.mstate = MODEM_ERROR
            return -1, b""
        self.mstate = MODEM_ERROR if self.receive_len < 0 else MODEM_DATA
        return self.receive_len, bytes(self.receive)


def dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def bg36(driver_path):
    drv = Bg36(driver_path)
    yield drv
    drv.close()


def test_bg36_init_and_setup_polls_qsslstate_until_socket_state_2(bg36, emulator, pki):
    """bg36 init() + setup_connection() (store ids 367546870, 512032103, 60089412): every
    command goes out as two writes (text, then "\\r\\n"); the engine takes the first line as
    the echo and it is the command itself; the AT+QSSLSTATE=4 line has the socket state
    after its 5th comma ('2') so the driver reaches MODEM_DATA on the first try.

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    assert drv.init() == 0
    assert drv.iccid and drv.iccid.isdigit()
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0
        assert drv.mstate == MODEM_DATA and drv.tries == 1
        assert drv.qsslstate_lines and drv.qsslstate_lines[-1].startswith(b'+QSSLSTATE: 4,"SSLClient","')
        assert forward_commas(drv.qsslstate_lines[-1], 5)[:1] == b"2"
        srv.wait_handshake()
    # every command its own two writes; every echo the command's text
    cmds = [w for w in drv.writes if w.startswith(b"AT")]
    for c in cmds:
        i = drv.writes.index(c)
        assert drv.writes[i + 1] == b"\r\n"
    assert drv.echoes and all(e.startswith(b"AT") for e in drv.echoes), drv.echoes
    assert b'AT+QSSLOPEN=1,1,4,"ws.example.net",443,0' in drv.echoes
    assert drv.error == 0


def test_bg36_read_with_space_after_comma_loops_until_zero(bg36, emulator, pki):
    """m_read() writes "AT+QSSLRECV=4, 400" (a space after the comma, which V.250 and the
    emulator ignore): a 1000-byte server greeting (bytes 0x00-0xFF, CR/LF included) comes back
    in 400/400/200 pieces read by count out of the line FIFO, then "+QSSLRECV: 0"; the
    "+QSSLURC: \\"recv\\",4" line (flushed by the next command or eaten by unsolicited()) is
    never taken for data or a response.

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    greeting = bytes((i * 37 + 10) & 0xFF for i in range(1000))

    def handler(conn):
        conn.sendall(greeting)
        conn.recv(4096, timeout=10)

    assert drv.init() == 0
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        time.sleep(0.3)
        got = bytearray()
        sizes = []
        for _ in range(6):
            n, data = drv.m_read(1200)
            assert n >= 0, (n, drv.responses[-3:])
            sizes.append(n)
            got += data
            if n == 0:
                break
        assert bytes(got) == greeting
        assert sizes == [400, 400, 200, 0]
        assert b"AT+QSSLRECV=4, 400" in drv.writes
        assert drv.echoes[-1] == b"AT+QSSLRECV=4, 400"
        assert not any(b"QSSLURC" in r for r in drv.responses), drv.responses


def test_bg36_send_payload_split_before_last_byte_and_send_ok_never_ends_it(bg36, emulator, pki):
    """m_write() of 300 bytes: after the "\\r\\n> " prompt ('>' found at the FIFO tail with no
    line end) 299 bytes are written, the echo read raw, then byte 300 alone ~55 ms later: the
    peer gets the 300 bytes as one whole send per try; the module answers SEND OK, which the
    engine does not count as a result, so each try times out (budget shortened from 2000 to
    150 polls) and m_write retries: three whole copies reach the server, -20 comes back (as on
    a real module).  The data echo (ATE1) is the payload itself.

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    drv.send_budget = 150
    payload = bytes(65 + (i % 26) for i in range(300))
    assert drv.init() == 0
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        assert drv.m_write(payload) == -20
        assert srv.wait_received(900, timeout=8) == payload * 3
    sends = [w for w in drv.writes if w.startswith(b"AT+QSSLSEND")]
    assert sends == [b"AT+QSSLSEND=4,300"] * 3
    assert drv.writes.count(payload[:299]) == 3 and drv.writes.count(payload[299:]) >= 3
    assert payload[:299] in bytes(drv.manual_echo)
    assert b"SEND OK" in drv.responses
    assert drv.error == ERROR_MODEM_TIMEOUT


class SlowRelay:
    """Accepts a TCP connection, holds it for <delay> s (the ClientHello unanswered), then
    relays it both ways to 127.0.0.1:<target>: a server whose handshake takes <delay> s."""

    def __init__(self, target: int, delay: float) -> None:
        import threading
        self.target, self.delay = target, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import select
        try:
            a, _ = self.listener.accept()
        except OSError:
            return
        time.sleep(self.delay)
        b = socket.create_connection(("127.0.0.1", self.target))
        self.socks += [a, b]
        peers = {a: b, b: a}
        try:
            while True:
                r, _, _ = select.select([a, b], [], [], 10)
                if not r:
                    return
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    peers[s].sendall(data)
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for s in self.socks:
            s.close()


def test_bg36_qsslstate_shows_1_while_the_handshake_runs_then_2(bg36, emulator, pki):
    """A server whose TLS handshake takes 1.3 s: the driver's 500 ms AT+QSSLSTATE=4 polls see
    socket state '1' (opening) after the 5th comma -- and keep polling --, then '2'; one try,
    MODEM_DATA.  (A module that listed the socket as connected before the handshake ended, or
    not at all, would make the driver give up or reopen.)

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    assert drv.init() == 0
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        relay = SlowRelay(srv.port, 1.3)
        try:
            emulator.router.add_map(HOST, 443, "127.0.0.1", relay.port)
            assert drv.setup_connection(HOST, 443) == 0
            states = [forward_commas(line, 5)[:1] for line in drv.qsslstate_lines]
            assert drv.mstate == MODEM_DATA and drv.tries == 1, drv.qsslstate_lines
            assert states[0] == b"1" and states[-1] == b"2" and set(states) == {b"1", b"2"}, states
        finally:
            relay.close()


def test_bg36_refused_open_three_tries_then_gives_up(bg36, emulator):
    """setup_connection() against a port where nothing listens: each try is AT+QSSLCLOSE=4
    (any result), AT+QSSLOPEN OK, 500 ms, AT+QSSLSTATE=4 -- whose answer must not say
    '1' (opening) or '2' (connected) after the open failed, or the driver would poll for
    a minute; three tries, then no MODEM_DATA (m_write refuses).

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    assert drv.init() == 0
    emulator.router.add_map(HOST, 443, "127.0.0.1", dead_port())
    t0 = time.monotonic()
    assert drv.setup_connection(HOST, 443, poll_tries=6) == 0
    assert time.monotonic() - t0 < 12
    assert drv.tries == 3 and drv.connected == 2
    assert drv.mstate != MODEM_DATA
    opens = [w for w in drv.writes if w.startswith(b"AT+QSSLOPEN")]
    closes = [w for w in drv.writes if w == b"AT+QSSLCLOSE=4"]
    assert len(opens) == 3 and len(closes) == 3
    for line in drv.qsslstate_lines:
        st = forward_commas(line, 5)
        assert st is None or st[:1] not in (b"1", b"2"), drv.qsslstate_lines
    assert drv.m_write(b"x") == -1


def test_bg36_peer_close_urc_eaten_data_still_read_then_zero(bg36, emulator, pki):
    """The server answers and closes (close_notify + FIN): "+QSSLURC: \\"closed\\",4" is eaten
    by unsolicited() (no disconnect flag: it is neither "NO CARRIER" nor "+QSSLOPEN: 4,1"),
    m_read still returns the answer whole, then 0; AT+QSSLSTATE=4 then shows the socket no
    longer connected (field 6 is not '2').

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n" + b"\x81\x05hello"

    def handler(conn):
        time.sleep(1.5)                 # (after the driver's first AT+QSSLSTATE poll)
        conn.sendall(answer)
        conn.send_close_notify()

    assert drv.init() == 0
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(b'"closed",4' in u for u in drv.urcs):
            drv.poll()
            time.sleep(0.01)
        assert any(u == b'+QSSLURC: "closed",4' for u in drv.urcs), drv.urcs
        assert drv.mstate == MODEM_DATA
        n, data = drv.m_read(1200)
        assert (n, data) == (len(answer), answer)
        assert drv.m_read(1200) == (0, b"")
        drv.qsslstate_lines.clear()
        assert drv.do(Cmd(b"AT+QSSLSTATE=4", result=drv.gen_result, response=drv.qsslstate), 100) == 1
        assert drv.qsslstate_lines and forward_commas(drv.qsslstate_lines[0], 5)[:1] != b"2"


def test_bg36_port_reopened_mid_session_then_same_id_reconnects(bg36, emulator, pki):
    """The host process goes away mid-session (the pty closed with a socket open and an
    answer unread) and starts again: init() (AT loop: echo still on, so the engine's echo
    rule still holds), setup_connection(): AT+QSSLCLOSE=4 closes the old socket, AT+QSSLOPEN
    on id 4 opens a second TLS connection, which echoes; the first answer is never mixed into
    the second session's reads.

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    assert drv.init() == 0
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        conn1 = srv.wait_handshake()
        conn1.send(b"stale-data-from-first-session")
        time.sleep(0.3)
        drv.reopen()
        drv.fifo.clear()
        drv.state = IDLE
        drv.echoes.clear()
        assert drv.init() == 0
        assert drv.echoes[0] == b"AT"
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        assert len(srv.connections) == 2
        # the second connection echoes: m_write (its three tries, SEND OK never a result: see
        # the send test), then m_read until 0 -- after the application's reset of the error
        # state (modem_cmd(CMD_MODEM_CONNECT)'s reset_modem_state() clears This->error)
        drv.send_budget = 60
        assert drv.m_write(b"second") == -20
        time.sleep(0.3)
        drv.error, drv.mstate = 0, MODEM_DATA
        got = bytearray()
        for _ in range(5):
            n, data = drv.m_read(400)
            assert n >= 0
            got += data
            if n == 0:
                break
        assert bytes(got) == b"second" * 3


# ---------------------------------------------------------------------------------------------
# FDonkers/bg95_python_hal
# ---------------------------------------------------------------------------------------------

SERIAL_OK, SERIAL_TIMEOUT_ERROR, SERIAL_ECHO_ERROR, SERIAL_UNDEFINED = -1, -2, -3, -4


class Bg95Hal:
    """bg95_serial + bg95_atcmds (the subset replayed)."""
    DEFAULT_TIMEOUT = 5

    def __init__(self, path: str) -> None:
        self._ser = serial.Serial(port=path, baudrate=115200, timeout=0)
        self._connected = self._ser.is_open
        self.wire_tx = bytearray()
        self.echoes: list[str] = []

    def close(self) -> None:
        self._ser.close()

    def _write_line(self, command: str) -> bool:
        data = command.encode("utf-8") + b"\r"
        self._ser.write(data)
        self.wire_tx += data
        return True

    def _read_line(self, timeout=0):
        self._ser.timeout = timeout
        return True, self._ser.readline().decode().strip()

    def _AT_send_cmd(self, cmd: str, timeout=DEFAULT_TIMEOUT):
        cmd_response = ""
        self._write_line(cmd)
        self.echoes.append(self._read_line(timeout)[1])
        empty = 0
        while True:
            _, line = self._read_line(timeout)
            code = None
            if len(line) > 0:
                cmd_response += line + "\n"
                empty = 0
            else:
                empty += 1
                assert empty < 4, f"the driver would read on forever after {cmd!r}: {cmd_response!r}"
            if line.startswith(("OK", "CONNECT")):
                code = SERIAL_OK
            elif line.startswith("+CME ERROR:"):
                code = int(re.search(r'\+CME ERROR: (?P<error>\d+)', line).group('error'))
            elif line.startswith("ERROR"):
                code = SERIAL_UNDEFINED
            if code is not None:
                return code == SERIAL_OK, cmd_response, {"CME_ERROR_CODE": code}

    def _AT_wait_for_urc(self, urc: str, timeout=DEFAULT_TIMEOUT):
        response = ""
        for _ in range(30):
            _, line = self._read_line(timeout)
            if len(line) > 0:
                response += line + "\n"
            if line.startswith(urc):
                return True, response
        raise AssertionError(f"{urc!r} never came: {response!r}")

    # --- the replayed methods ------------------------------------------------------------------
    def ATI(self):
        ok, resp, _ = self._AT_send_cmd("ATI")
        m = re.search(r'(?P<man>\w+)(\r\n|\r|\n)(?P<mod>[\w\-]+)(\r\n|\r|\n)Revision: (?P<rev>\w+)(\r\n|\r|\n)OK', resp)
        return ok, {"Manufacturer": m.group('man'), "Model": m.group('mod'), "Revision": m.group('rev')}

    def simple(self, cmd: str):
        return self._AT_send_cmd(cmd)

    def regex(self, cmd: str, pattern: str):
        ok, resp, res = self._AT_send_cmd(cmd)
        return ok, (re.search(pattern, resp) if ok else None), res

    def AT_CFUN(self, radio_on: bool):
        cmd = "AT+CFUN=1" if radio_on else "AT+CFUN=0"
        ok, resp, _ = self._AT_send_cmd(cmd)
        seen = []
        if ok and radio_on:
            for urc in ["+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE"]:
                seen.append(self._AT_wait_for_urc(urc, timeout=10)[1])
        return ok, seen


@pytest.fixture
def hal(driver_path):
    h = Bg95Hal(driver_path)
    yield h
    h.close()


def test_bg95hal_identity_and_network_regexes(hal):
    """bg95_atcmds.py (store id 5976289346): ATI's three-line regex, AT+GSN / AT+CIMI (\\d+),
    AT+QCCID, AT+CREG? / AT+CEREG? / AT+CGREG? ("\\+CREG: (\\d+),(\\d+)", stat 1 or 5), AT+CSQ,
    AT+CGATT?, AT+CGPADDR=1, AT+QIACT=1 then AT+QIACT?'s regex, AT+CCLK?'s regex -- each
    answer is found where the source looks for it, with echo on (the first line read is the
    echo).

    - FDonkers/bg95_python_hal bg95_serial.py (6b10f06896b6), bg95_atcmds.py (store id 5976289346)
    """
    h = hal
    assert h.simple("AT")[0]
    ok, ident = h.ATI()
    assert ok and ident == {"Manufacturer": "Quectel", "Model": "EC25", "Revision": ident["Revision"]}
    assert re.fullmatch(r"\w+", ident["Revision"])
    assert h.simple("ATE1")[0]
    ok, m, _ = h.regex("AT+GSN", r'(?P<imei>\d+)')
    assert ok and len(m.group('imei')) == 15
    ok, m, _ = h.regex("AT+CIMI", r'(?P<imsi>\d+)')
    assert ok and len(m.group('imsi')) == 15
    ok, m, _ = h.regex("AT+QCCID", r'\+QCCID: (?P<ccid>\w+)')
    assert ok and len(m.group('ccid')) >= 19
    for cmd, name in (("AT+CREG?", "CREG"), ("AT+CEREG?", "CEREG"), ("AT+CGREG?", "CGREG")):
        ok, m, _ = h.regex(cmd, r'\+%s: (?P<n>\d+),(?P<stat>\d+)' % name)
        assert ok and int(m.group('stat')) in (1, 5), cmd
    ok, m, _ = h.regex("AT+CSQ", r'\+CSQ: (?P<rssi>\d+),(?P<ber>\d+)')
    assert ok and 0 < int(m.group('rssi')) < 32
    ok, m, _ = h.regex("AT+CGATT?", r'\+CGATT: (?P<ps_attach>\d+)')
    assert ok and m.group('ps_attach') == "1"
    assert h.simple('AT+QICSGP=1,1,"internet.m2m","","",1')[0]
    assert h.simple("AT+QIACT=1")[0]
    ok, m, _ = h.regex("AT+QIACT?", r'\+QIACT: (?P<cid>\d+),(?P<state>\d+),(?P<type>\d+),"(?P<ip>[\w.]+)"')
    assert ok and m.group('cid') == "1" and m.group('state') == "1"
    ok, m, _ = h.regex("AT+CCLK?", r'\+CCLK: \"(?P<date>[0-9/]*),(?P<time>[0-9:+]*)\"')
    assert ok and re.fullmatch(r"\d\d/\d\d/\d\d", m.group('date')) and m.group('time').endswith("+32")
    assert h.simple("AT+QIDEACT=1")[0]
    assert all(e.startswith("AT") for e in h.echoes), h.echoes


def test_bg95hal_cfun_cycle_waits_for_three_urcs_and_the_leftover_pb_done(hal):
    """AT_CFUN(False) then AT_CFUN(True): OK, then lines read until "+CPIN: READY", "+QUSIM: 1"
    and "+QIND: SMS DONE" in turn (the module's order after AT+CFUN=1); the "+QIND: PB DONE"
    left unread is swallowed by the next command's echo/response read and that command
    (AT+CGEREP?) still ends on its own OK.  modem_connect_to_network()'s registration loop:
    AT+CREG? reads stat 0 while the radio is off (the driver's "ERROR" result), then polled
    every 100 ms after AT+CFUN=1 it reaches 1, and AT+CGATT? reads 1.

    - FDonkers/bg95_python_hal bg95_serial.py (6b10f06896b6), bg95_atcmds.py (store id 5976289346)
    """
    h = hal
    creg = r'\+CREG: (?P<n>\d+),(?P<stat>\d+)'
    ok, _ = h.AT_CFUN(False)
    assert ok
    ok, m, _ = h.regex("AT+CREG?", creg)
    assert ok and m.group('stat') == "0"
    ok, seen = h.AT_CFUN(True)
    assert ok and len(seen) == 3
    assert seen[0].splitlines()[-1] == "+CPIN: READY"
    assert seen[1].splitlines()[-1] == "+QUSIM: 1"
    assert seen[2].splitlines()[-1] == "+QIND: SMS DONE"
    time.sleep(0.5)
    ok, resp, _ = h._AT_send_cmd("AT+CGEREP?")
    assert ok and "+CGEREP: " in resp
    assert "+QIND: PB DONE" in resp or h.echoes[-1] == "+QIND: PB DONE"
    for _ in range(50):
        ok, m, _ = h.regex("AT+CREG?", creg)
        if ok and m.group('stat') in ("1", "5"):
            break
        time.sleep(0.1)
    assert m.group('stat') in ("1", "5")
    ok, m, _ = h.regex("AT+CGATT?", r'\+CGATT: (?P<ps_attach>\d+)')
    assert ok and m.group('ps_attach') == "1"


def test_bg95hal_ssl_context_config_lowercase_hex_cipher(hal):
    """AT_QSSLCFG_SSLVERSION / _CIPHERSUITE / _SECLEVEL: `AT+QSSLCFG="ciphersuite",1,0xFFFF`
    is written with a lower-case x; all three answer OK and the context reads back
    sslversion 4, ciphersuite 0XFFFF, seclevel 0 (a hex number's "0x" prefix in either case).

    - FDonkers/bg95_python_hal bg95_serial.py (6b10f06896b6), bg95_atcmds.py (store id 5976289346)
    """
    h = hal
    for cmd in ('AT+QSSLCFG="sslversion",1,4', 'AT+QSSLCFG="ciphersuite",1,0xFFFF',
                'AT+QSSLCFG="seclevel",1,0'):
        ok, resp, res = h._AT_send_cmd(cmd)
        assert ok and resp == "OK\n", (cmd, resp, res)
    ok, resp, _ = h._AT_send_cmd('AT+QSSLCFG="ciphersuite",1')
    assert ok and '+QSSLCFG: "ciphersuite",1,0XFFFF' in resp
    ok, resp, _ = h._AT_send_cmd('AT+QSSLCFG="sslversion",1')
    assert ok and '+QSSLCFG: "sslversion",1,4' in resp


def test_bg95hal_gnss_no_fix_cme_516_and_the_powd_typo(hal):
    """AT_QGPS_ON (AT+QGPS=1,1), AT_QGPS_STATUS_REQUEST (AT+QGPS? -> "+QGPS: 1"),
    AT_QGPSLOC_REQUEST before the first fix: "+CME ERROR: 516" parsed by the driver's regex
    into code 516 ("No fix"); AT_QGPS_END; AT_POWERDOWN's "AT+POWD=1" (the source's typo for
    AT+QPOWD) is a plain ERROR (_SERIAL_UNDEFINED) and the module stays up.

    - FDonkers/bg95_python_hal bg95_serial.py (6b10f06896b6), bg95_atcmds.py (store id 5976289346)
    """
    h = hal
    ok, _, res = h._AT_send_cmd("AT+QGPS=1,1")
    assert ok, res
    ok, m, _ = h.regex("AT+QGPS?", r'\+QGPS: (?P<at_status>\d+)')
    assert ok and m.group('at_status') == "1"
    ok, resp, res = h._AT_send_cmd("AT+QGPSLOC?")
    assert not ok and res["CME_ERROR_CODE"] == 516 and "+QGPSLOC: " not in resp
    assert h._AT_send_cmd("AT+QGPSEND")[0]
    ok, resp, res = h._AT_send_cmd("AT+POWD=1")
    assert not ok and res["CME_ERROR_CODE"] == SERIAL_UNDEFINED and resp == "ERROR\n"
    assert h._AT_send_cmd("AT")[0]


# ---------------------------------------------------------------------------------------------
# S4IoT CM_Q03 SSL driver
# ---------------------------------------------------------------------------------------------

CM_SUCCESS, CM_TIMEOUT, CM_NOT_SIMILAR = 0, 1, 3


class CmQ03:
    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.buf = bytearray()
        self.writes: list[bytes] = []
        self.lines: list[bytes] = []

    def close(self) -> None:
        self.ser.close()

    def _fill(self) -> None:
        data = self.ser.read(4096)
        if data:
            self.buf += data

    def buffer_clean(self) -> None:
        self._fill()
        self.buf.clear()

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.ser.write(data)

    def read(self, timeout_us: int) -> tuple[int, bytes]:
        deadline = time.monotonic() + timeout_us / 1e6
        found, out = 0, bytearray()
        while found != 2:
            while len(self.buf) < 2:
                if time.monotonic() > deadline:
                    return CM_TIMEOUT, bytes(out)
                self._fill()
                if len(self.buf) < 2:
                    time.sleep(0.002)
            if self.buf[0] == 0x0D and self.buf[1] == 0x0A:
                found += 1
                del self.buf[:2]
            elif found == 1:
                out.append(self.buf[0])
                del self.buf[0]
            else:
                del self.buf[0]
        self.lines.append(bytes(out))
        return CM_SUCCESS, bytes(out)

    @staticmethod
    def compare_short(buf: bytes, pat: bytes) -> int:
        count_size = cv = i = j = 0
        while len(buf) - count_size >= len(pat) or cv:
            b = buf[i] if i < len(buf) else 0
            if b == pat[j]:
                cv += 1
                if cv == len(pat):
                    return CM_SUCCESS
                count_size += 1
                i += 1
                j += 1
            elif pat[0] == pat[j]:
                count_size += 1
                i += 1
            else:
                cv = 0
                j = 0
        return CM_NOT_SIMILAR

    @staticmethod
    def get_response(rx: bytes) -> int | str:
        k = rx.find(b"+CME ERROR: ")
        if k >= 0:
            digits = rx[k + 12:k + 15]
            return int(digits) if digits.isdigit() else "ERROR"
        return "ERROR"

    def _cmd_ok(self, cmd: bytes, timeout_us: int = 500000):
        time.sleep(0.05)
        self.buffer_clean()
        self.write(cmd + b"\r")
        _, rx = self.read(timeout_us)
        if self.compare_short(rx, b"OK") != 0:
            return self.get_response(rx)
        return CM_SUCCESS

    def ssl_configuration(self, ctx: int, version=4, cipher=b"0xFFFF", seclevel=2,
                          ignorelocaltime=1, negotiatetime=300):
        for cmd in (b'AT+QSSLCFG="sslversion",%d,%d' % (ctx, version),
                    b'AT+QSSLCFG="ciphersuite",%d,%s' % (ctx, cipher),
                    b'AT+QSSLCFG="seclevel",%d,%d' % (ctx, seclevel),
                    b'AT+QSSLCFG="ignorelocaltime",%d,%d' % (ctx, ignorelocaltime),
                    b'AT+QSSLCFG="negotiatetime",%d,%d' % (ctx, negotiatetime)):
            st = self._cmd_ok(cmd)
            if st != 0:
                return st
        return CM_SUCCESS

    def ssl_path(self, what: bytes, ctx: int, path: bytes):
        return self._cmd_ok(b'AT+QSSLCFG="%s",%d,"%s"' % (what, ctx, path))

    def ssl_open(self, pdp: int, ctx: int, client: int, host: bytes, port: int, mode: int = 0,
                 negotiatetime: int = 300):
        time.sleep(0.05)
        self.buffer_clean()
        self.write(b'AT+QSSLOPEN=%d,%d,%d,"%s",%d,%d\r' % (pdp, ctx, client, host, port, mode))
        _, rx = self.read((150 + negotiatetime) * 1000000)
        st = self.compare_short(rx, b"CONNECT" if mode == 2 else b"OK")
        if st == 2:
            return self.get_response(rx)
        _, rx = self.read((150 + negotiatetime) * 1000000)
        if self.compare_short(rx, b"+QSSLOPEN: ") != 0:
            return self.get_response(rx)
        return CM_SUCCESS


def upload(path: str, name: str, data: bytes) -> None:
    """The certificates are put in UFS beforehand (the CM_Q03 SSL file only names them)."""
    with serial.Serial(path, 115200, timeout=5) as s:
        s.write(b'AT+QFUPL="%s",%d,60\r\n' % (name.encode(), len(data)))
        got = b""
        while b"CONNECT" not in got:
            chunk = s.read(1)
            assert chunk, got
            got += chunk
        s.read_until(b"\n")
        s.write(data)
        got = s.read_until(b"OK\r\n")
        assert b"+QFUPL: %d" % len(data) in got, got
    time.sleep(0.15)


@pytest.fixture
def cmq03(driver_path, pki):
    for name, body in (("cacert.pem", pki.ca.cert_pem), ("client.pem", pki.client.cert_pem),
                       ("user_key.pem", pki.client.key_pem)):
        upload(driver_path, name, body)
    drv = CmQ03(driver_path)
    for cmd in (b'AT+QICSGP=1,1,"internet.itelcel.com","","",1', b"AT+QIACT=1"):
        assert drv._cmd_ok(cmd) == CM_SUCCESS
    yield drv
    drv.close()


def test_cmq03_default_config_and_mutual_tls_open(cmq03, emulator, pki):
    """CM_Q03_SSL_Configuration(1, Default_Configuration) + CA / client cert / key paths +
    CM_Q03_SSL_Open_Socket(1, 1, 2, "www.iottest.work", 4443, 0): five AT+QSSLCFG lines each
    one write ending in CR (echo on: CM_Q03_Read skips the echo, whose CR is followed by CR);
    "0xFFFF" with a lower-case x accepted; the mutual-TLS server sees the client certificate
    (and no SNI: the driver never sets "sni", default 0); the second Read is "+QSSLOPEN: 2,0".

    - (repository not named by the store) S4IoT CM_Q03_SSL.c, store id 34614760101; CM_Q03
      core, store id 34982921208
    """
    drv = cmq03
    assert drv.ssl_configuration(1) == CM_SUCCESS
    assert b'AT+QSSLCFG="ciphersuite",1,0xFFFF\r' in drv.writes
    assert drv.ssl_path(b"cacert", 1, b"UFS:cacert.pem") == CM_SUCCESS
    assert drv.ssl_path(b"clientcert", 1, b"UFS:client.pem") == CM_SUCCESS
    assert drv.ssl_path(b"clientkey", 1, b"UFS:user_key.pem") == CM_SUCCESS
    with TlsServer(pki.server, mode="echo", legacy=True, client_ca=pki.ca,
                   require_client_cert=True) as srv:
        emulator.router.add_map("www.iottest.work", 4443, "127.0.0.1", srv.port)
        assert drv.ssl_open(1, 1, 2, b"www.iottest.work", 4443) == CM_SUCCESS
        assert drv.lines[-2:] == [b"OK", b"+QSSLOPEN: 2,0"]
        conn = srv.wait_handshake()
        assert conn.client_cert is not None and conn.sni is None     # (sni left at its default 0)
    assert all(w.endswith(b"\r") and not w.endswith(b"\r\n") for w in drv.writes)
    assert all(line in (b"OK", b"+QSSLOPEN: 2,0") for line in drv.lines), drv.lines


def test_cmq03_wrong_ca_open_reports_5xx_which_the_driver_never_reads(cmq03, emulator, pki):
    """seclevel 2 against a server whose chain is not the uploaded CA: AT+QSSLOPEN OK, then
    "+QSSLOPEN: 3,<err>" with a non-zero SSL error (5xx) -- the driver's compare only looks
    for "+QSSLOPEN: " and reports success (its flaw, the same on a real module); the socket id
    is free again (AT+QSSLCLOSE=3 OK through the same engine), and a bad ctx path value gives
    the driver a "+CME ERROR: <n>" number through Get_Response().

    - (repository not named by the store) S4IoT CM_Q03_SSL.c, store id 34614760101; CM_Q03
      core, store id 34982921208
    """
    drv = cmq03
    assert drv.ssl_configuration(1) == CM_SUCCESS
    for what, name in ((b"cacert", b"UFS:cacert.pem"), (b"clientcert", b"UFS:client.pem"),
                       (b"clientkey", b"UFS:user_key.pem")):
        assert drv.ssl_path(what, 1, name) == CM_SUCCESS
    with TlsServer(pki.wrong_server, mode="echo", legacy=True) as srv:
        emulator.router.add_map("www.iottest.work", 4443, "127.0.0.1", srv.port)
        assert drv.ssl_open(1, 1, 3, b"www.iottest.work", 4443) == CM_SUCCESS
        line = drv.lines[-1]
        m = re.fullmatch(rb"\+QSSLOPEN: 3,(\d+)", line)
        assert m and 500 <= int(m.group(1)) < 600, drv.lines
    assert drv._cmd_ok(b"AT+QSSLCLOSE=3") == CM_SUCCESS
    st = drv._cmd_ok(b'AT+QSSLCFG="sslversion",9,4')
    assert st != CM_SUCCESS and (isinstance(st, int) or st == "ERROR"), st


def test_bg36_host_dies_inside_the_send_prompt_nothing_sent_next_host_starts_clean(bg36, emulator, pki):
    """The host process dies in the middle of m_write(): AT+QSSLSEND=4,10 was answered with
    the prompt ('>' taken at the FIFO tail) and 5 of the 10 bytes were written, then the pty is
    closed.  The half-entered prompt is abandoned (docs/behaviour.md): the server receives
    nothing; the restarted driver's init() gets "AT" echoed and OK (not 5 bytes of payload
    completing a send), its setup_connection() closes and reopens id 4, and the new socket
    works (its echo read back with m_read).

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    assert drv.init() == 0
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        first = srv.wait_handshake()
        half = []

        def dies(line: bytes) -> None:
            if line[:1] == b">":
                drv.write_at(b"HELLO")
                half.append(True)
        drv.handler_cmd(Cmd(func=lambda: drv.write_at(b"AT+QSSLSEND=4,10"), channel_open=">",
                            result=drv.gen_result, response=dies))
        deadline = time.monotonic() + 3
        while not half and time.monotonic() < deadline:
            drv.poll()
            time.sleep(0.01)
        assert half
        drv.reopen()
        drv.fifo.clear()
        drv.state = IDLE
        drv.echoes.clear()
        drv.results.clear()
        assert drv.init() == 0
        assert drv.echoes[0] == b"AT" and drv.results[0] == b"OK"
        time.sleep(0.3)
        assert bytes(first.received) == b""
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        assert len(srv.connections) == 2
        drv.send_budget = 60
        assert drv.m_write(b"0123456789") == -20          # (SEND OK never a result: 3 tries)
        time.sleep(0.3)
        drv.error, drv.mstate = 0, MODEM_DATA
        n, data = drv.m_read(400)
        assert (n, data) == (30, b"0123456789" * 3)
    assert bytes(first.received) == b"" and b"HELLO" not in bytes(srv.connections[1].received)


def test_cmq03_custom_config_tls12_rsa_aes256_pinned(cmq03, emulator, pki):
    """CM_Q03_SSL_Configuration(4, {version 3, ciphersuite rsa_with_aes_256_sha, seclevel 0,
    ignorelocaltime 1, negotiatetime 10}, Custom): "0x0035" (lower-case x, the driver's table)
    is the only suite offered and the one negotiated, over TLS 1.2.

    - (repository not named by the store) S4IoT CM_Q03_SSL.c, store id 34614760101; CM_Q03
      core, store id 34982921208
    """
    drv = cmq03
    assert drv.ssl_configuration(4, version=3, cipher=b"0x0035", seclevel=0,
                                 negotiatetime=10) == CM_SUCCESS
    assert b'AT+QSSLCFG="negotiatetime",4,10\r' in drv.writes
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map("www.iottest.work", 4443, "127.0.0.1", srv.port)
        assert drv.ssl_open(1, 4, 5, b"www.iottest.work", 4443, negotiatetime=10) == CM_SUCCESS
        assert drv.lines[-1] == b"+QSSLOPEN: 5,0"
        conn = srv.wait_handshake()
        assert conn.version == "TLSv1.2" and conn.cipher_id == 0x0035
        assert [c for c in conn.cipher_suites if c != 0x00FF] == [0x0035]
    assert drv._cmd_ok(b"AT+QSSLCLOSE=5") == CM_SUCCESS


def test_cmq03_silent_server_negotiatetime_10_gives_569_after_10_s(cmq03, emulator):
    """negotiatetime 10 (the driver's lower bound) against a server that accepts TCP and never
    answers the ClientHello: the open's second Read (budget (150 + 10) s) gets
    "+QSSLOPEN: 6,569" about 10 s after the OK -- not at once, not after the 300 s default --
    and the driver, which only looks for "+QSSLOPEN: ", calls it a success.

    - (repository not named by the store) S4IoT CM_Q03_SSL.c, store id 34614760101; CM_Q03
      core, store id 34982921208
    """
    drv = cmq03
    assert drv.ssl_configuration(2, seclevel=0, negotiatetime=10) == CM_SUCCESS
    listener = socket.create_server(("127.0.0.1", 0))
    held = []
    import threading

    def accept():
        try:
            held.append(listener.accept()[0])
        except OSError:
            pass
    threading.Thread(target=accept, daemon=True).start()
    try:
        emulator.router.add_map("www.iottest.work", 4443, "127.0.0.1", listener.getsockname()[1])
        t0 = time.monotonic()
        assert drv.ssl_open(1, 2, 6, b"www.iottest.work", 4443, negotiatetime=10) == CM_SUCCESS
        elapsed = time.monotonic() - t0
        assert drv.lines[-2:] == [b"OK", b"+QSSLOPEN: 6,569"], drv.lines
        assert 9.0 <= elapsed <= 13.0, elapsed
        assert held, "the TCP connection was never made"
    finally:
        listener.close()
        for s in held:
            s.close()



def test_bg36_plain_tcp_build_qistate_list_chunked_send_with_echo_and_qird(bg36, emulator):
    """The driver built without TLS: AT+QIOPEN=1,4,"TCP",...,0,0 (OK, then +QIOPEN), polled
    with AT+QISTATE=1,4 whose socket state after the 5th comma is '2'; m_write of 300 bytes
    writes 128 + 128 + 44 at the prompt and finds each piece's echo (ATE1 / AT+QISDE default
    on) before the next -- exactly 128, 128, 44 bytes; SEND OK is again no result (three
    tries with the shortened budget); m_read's AT+QIRD=4,400 returns the echo server's three
    copies in order, then "+QIRD: 0".

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    from emulator.testing.peers import TcpServer
    drv = bg36
    assert drv.init() == 0
    payload = bytes((i * 11) & 0xFF for i in range(300)).replace(b"\r", b"r")
    with TcpServer("echo") as srv:
        emulator.router.add_map(HOST, 8080, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 8080, crypted=False) == 0
        assert drv.mstate == MODEM_DATA and drv.tries == 1
        line = drv.qsslstate_lines[-1]
        assert line.startswith(b'+QISTATE: 4,"TCP","') and forward_commas(line, 5)[:1] == b"2"
        drv.send_budget = 80
        assert drv.m_write(payload) == -20
        assert drv.echo_counts == [128, 128, 44]
        assert [w for w in drv.writes if w.startswith(b"AT+QISEND")] == [b"AT+QISEND=4,300"] * 3
        time.sleep(0.3)
        drv.error, drv.mstate = 0, MODEM_DATA
        got = bytearray()
        sizes = []
        for _ in range(8):
            n, data = drv.m_read(400)
            assert n >= 0, drv.responses[-4:]
            sizes.append(n)
            got += data
            if n == 0:
                break
        assert bytes(got) == payload * 3
        assert sizes[-1] == 0 and sum(sizes) == 900
        assert b"AT+QIRD=4,400" in drv.writes


def test_bg36_host_dies_right_after_a_recv_command_next_host_sees_no_stale_answer(bg36, emulator, pki):
    """The driver writes "AT+QSSLRECV=4, 400" + "\\r\\n" and its process dies before reading
    the answer (the pty closed at once).  The module ran the command -- 400 bytes left its
    buffer -- but the answer is not written to the next host (docs/behaviour.md): the
    restarted driver's init() sees "AT" as the first line (its echo rule would otherwise take
    a line of stale payload for the echo), and its reads return exactly bytes 400.. of the
    server's 1200, then 0.

    - (repository not named by the store) bg36 driver, store id 367546870; modem.c, store id
      512032103; at_handler.c, store id 60089412
    """
    drv = bg36
    greeting = b"".join(b"%04d|" % i + b"x" * 15 for i in range(60))     # 1200 bytes, no CR/LF
    assert len(greeting) == 1200

    def handler(conn):
        conn.sendall(greeting)
        conn.recv(4096, timeout=10)

    assert drv.init() == 0
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        time.sleep(0.3)
        drv.handler_cmd(Cmd(func=lambda: drv.write_at(b"AT+QSSLRECV=4, 400"),
                            result=drv.gen_result, response=drv._sslrecv_response))
        drv.reopen()
        drv.fifo.clear()
        drv.state = IDLE
        drv.echoes.clear()
        drv.responses.clear()
        assert drv.init() == 0
        assert drv.echoes[0] == b"AT", drv.echoes[:3]
        assert not any(b"|xxxx" in r for r in drv.responses), drv.responses[:5]
        drv.mstate = MODEM_DATA
        got = bytearray()
        for _ in range(6):
            n, data = drv.m_read(400)
            assert n >= 0
            got += data
            if n == 0:
                break
        assert bytes(got) == greeting[400:]



def test_bg36_host_dies_between_command_text_and_its_crlf_the_half_line_is_dropped(bg36, emulator, pki):
    """AT_handler_cmd() writes the command text and its "\\r\\n" in two writes; the process dies
    between them ("AT+QSSLRECV=4, 400" written, no CR).  The hang-up drops the half line: the
    next host's first "AT" + "\\r\\n" runs as AT (echo "AT", OK -- not
    "AT+QSSLRECV=4, 400AT" and ERROR), and no data were consumed: the reads return all 1200
    bytes.

    - (repository not named by the store) bg36 driver, store id 367546870; at_handler.c,
      store id 60089412
    """
    drv = bg36
    greeting = b"".join(b"%04d|" % i + b"y" * 15 for i in range(60))

    def handler(conn):
        conn.sendall(greeting)
        conn.recv(4096, timeout=10)

    assert drv.init() == 0
    with TlsServer(pki.server, handler=handler, legacy=True) as srv:
        emulator.router.add_map(HOST, 443, "127.0.0.1", srv.port)
        assert drv.setup_connection(HOST, 443) == 0 and drv.mstate == MODEM_DATA
        time.sleep(0.3)
        drv.write_at(b"AT+QSSLRECV=4, 400")
        drv.reopen()
        drv.fifo.clear()
        drv.state = IDLE
        drv.echoes.clear()
        drv.results.clear()
        assert drv.init() == 0
        assert drv.echoes[0] == b"AT" and drv.results[0] == b"OK", (drv.echoes[:2], drv.results[:2])
        drv.mstate = MODEM_DATA
        got = bytearray()
        for _ in range(6):
            n, data = drv.m_read(400)
            assert n >= 0
            got += data
            if n == 0:
                break
        assert bytes(got) == greeting
