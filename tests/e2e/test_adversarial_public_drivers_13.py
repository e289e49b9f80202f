"""Adversarial tests: a thirteenth set of public host code that drives a Quectel module through
the TCP(IP), SSL and file commands, replayed through the pty with each program's own line endings,
waits and parsers against loopback peers (OpenSSL -- Python's ssl -- for TLS).  (Earlier files:
test_adversarial_public_drivers.py .. _12.py; see _8.py's docstring for the list.)  Neither program
below was replayed before; the first is Node.js (serialport), the second MicroPython.

Programs replayed (public sources read through the reference store; paraphrased, not copied):

- woowu/quectelcom (Node.js, serialport ^9.0.6, 2021-02-04), quectelcli.js and its test server
  quectelsvr.js, at two commits of the same day:
  * ba5b46c354ac (the last version that matches "+CSQ: " in capitals): a state machine driven by
    lines -- the port's 'data' chunks go through a PassThrough into readline.createInterface(),
    whose lines end at "\\n", "\\r" or "\\r\\n"; blank lines dropped; a line *starting* with "OK"
    emits 'ok', with "ERROR" emits 'error' on an EventEmitter that has no 'error' listener
    (Node then throws ERR_UNHANDLED_ERROR: the program dies), "+QIOPEN: " -> slice(9).split(',')
    (0 -> 'sock-opened', 567 -> 'sock-closed', else 'sock-error', falling through), '+QIURC:
    "recv",' -> 'sock-data' with +line.slice(15), "+CSQ: " -> 'csq'.  States: started ("at\\r"),
    waitRssi ("at+csq\\r", again 1 s later while rssi < 8), closing ("at+qiclose=5\\r", then a 3 s
    timer to connecting -- its OK is not listened to), connecting ('at+qiopen=1,5,"TCP",
    "116.6.51.98",9006,0,0\\r', buffer access mode), connected (logs "conn 5 recved data." per
    "recv" URC and never reads the data).  Commands end with a lone CR; the echo stays on.
  * d95b5d8e620f (HEAD): the same reader with "+csq: " in lower case, a 2 s retry of "at\\r",
    then waitReg (at+cereg?), checkSockStatus (at+qistate=1,5), closing (10 s), connecting,
    connected (at+qird=5,1500 per URC).
  quectelsvr.js (6db9e94 .. HEAD): a net.Server that writes one chunk at once and then every
  --intvl seconds: 3 x 9 x ('hellohell' + i) -- 270 bytes, although its comment says "make 300
  octets".
- insighio/insighioNode (MicroPython on an ESP32 with a Quectel BG600L-M3; the BG-class TCP/IP,
  SSL and file command sets): insighioNode/lib/networking/modem/modem_base.py at main cd9dd2f
  (send_at_cmd(): every line already waiting is read away with readline(); command + "\\r\\n";
  lines read with readline() (UART timeout 500 ms, timeout_char 100 ms), decoded and stripped;
  a line equal to the command is the echo; success = re.search("^([\\w\\s\\+]+)?" + condition),
  error = "(\\w+\\s+)?(ERROR|FAIL|(\\+CM[ES] ERROR))" anywhere in a line; once decided, the loop
  ends when no byte waits; 5 ms sleeps; init() sends ATE0) and modem_bg600.py: at main cd9dd2f
  get_file() -- AT+QFLST="<src>" (`\\+QFLST: ".*",(\\d+)` matched at lines[0]), AT+QFOPEN=
  "<src>",2 (`\\+QFOPEN:\\s+(\\d+)`), get_next_bytes_from_file(): AT+QFREAD=<fh>,<n <= 256> written
  by hand, "CONNECT <n>" exactly, then uart.read(n), lines to "OK" with 50 ms sleeps, AT+QFCLOSE
  -- and, for the SSL socket, the store's newer version of modem_bg600.py (41 211 characters, not
  in the mirrored snapshot, whose file still used AT+QHTTP*; store id 70959185175): the
  "persistent SSL socket" -- _ssl_configure_context() (context 1: sslversion 4, ciphersuite
  0xFFFF, seclevel 0, sni 1, "session" 1, ignorelocaltime 1, negotiatetime 300, results
  ignored), ssl_socket_is_connected() (AT+QSSLSTATE=6, `<socket_state>` must be 2),
  ssl_socket_connect() (reuse when host/port match and connected; else AT+QSSLCLOSE=6,10, the
  configuration, AT+QSSLOPEN=1,1,6,"<host>",443,0 waiting for "+QSSLOPEN: 6,<n>", n must be 0),
  _ssl_send_raw() (AT+QSSLSEND=6,<n> with ">" as success, the raw bytes, "SEND OK"),
  _ssl_recv_raw() (input flushed, AT+QSSLRECV=6,1500, "+QSSLRECV: <n>", n raw bytes, then "^OK"),
  _ssl_read_http_response() (polls every 200 ms on an empty read; Content-Length or chunked),
  _ssl_dechunk(), _ssl_http_request() (HTTP/1.1 keep-alive, one reconnect attempt),
  http_get_with_auth_header() / http_put_with_auth_header().

Every host name dialled is routed to 127.0.0.1.  Where a program assumes something the module does
not do, the test asserts what the module does and names the program's fault.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time

import serial

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e import socket_support
from tests.e2e.socket_support import activate_pdp

SLOW = 5                     # short waits widened for a loaded 2-core machine


def wait_for(predicate, what: str = "condition") -> None:
    socket_support.wait_for(predicate, timeout=10 * SLOW, what=what, every=0.005)


# =================================================================================================
# woowu/quectelcom quectelcli.js (Node.js)
# =================================================================================================
class NodeCrash(Exception):
    """Node's ERR_UNHANDLED_ERROR: emit('error') on an emitter with no 'error' listener."""


def js_num(s: str) -> float:
    """JavaScript's unary plus on a string: the number, NaN when it is not one."""
    try:
        return float(s.strip()) if s.strip() else 0.0
    except ValueError:
        return float("nan")


class NodeReadline:
    """readline.createInterface(): a line ends at "\\n", "\\r" or "\\r\\n" (one end, also when the
    CR and LF arrive in different chunks)."""

    def __init__(self) -> None:
        self._buf = ""
        self._saw_cr = False

    def feed(self, chunk: bytes) -> list[str]:
        lines = []
        for ch in chunk.decode("utf-8", "replace"):
            if ch == "\n" and self._saw_cr:
                self._saw_cr = False
                continue
            self._saw_cr = False
            if ch in "\r\n":
                lines.append(self._buf)
                self._buf = ""
                self._saw_cr = ch == "\r"
            else:
                self._buf += ch
        return lines


class QuectelCli:
    """quectelcli.js in one thread, as Node runs it: 'data' chunks of whatever size the tty gives,
    readline, the line handler, the state objects, setTimeout()."""

    def __init__(self, path: str, version: str) -> None:
        assert version in ("ba5b46c", "d95b5d8")
        self.version = version
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.tx = bytearray()
        self.rx = bytearray()
        self.log: list[str] = []
        self.crashed: str | None = None
        self.state: dict | None = None
        self._rl = NodeReadline()
        self._timers: list[list] = []          # [due, callback, alive]
        self._stop = False
        self._lock = threading.Lock()
        self.state = self.started_state()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    # -- the event loop ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop:
                now = time.monotonic()
                for t in [t for t in self._timers if t[2] and t[0] <= now]:
                    t[2] = False
                    t[1]()
                self._timers = [t for t in self._timers if t[2]]
                try:
                    n = self.ser.in_waiting
                    chunk = self.ser.read(n) if n else b""
                except (serial.SerialException, OSError, TypeError):
                    return
                if chunk:
                    self.rx += chunk
                    for line in self._rl.feed(chunk):
                        self.on_line(line)
                else:
                    time.sleep(0.002)
        except NodeCrash as crash:
            self.crashed = str(crash)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.ser.close()

    def write(self, s: str) -> None:
        raw = s.encode()
        self.ser.write(raw)
        self.tx += raw

    def set_timeout(self, fn, ms: int) -> list:
        t = [time.monotonic() + ms / 1000, fn, True]
        self._timers.append(t)
        return t

    @staticmethod
    def clear_timeout(t) -> None:
        if t:
            t[2] = False

    def emit(self, event: str, *args) -> None:
        if event == "error":           # em has listeners for everything but 'error'
            raise NodeCrash("ERR_UNHANDLED_ERROR: Unhandled error. (undefined)")
        handler = self.state.get(event) if self.state else None
        if handler:
            handler(*args)

    # -- the states ------------------------------------------------------------------------------
    def started_state(self) -> dict:
        me: dict = {}
        timer = None

        def ok():
            self.clear_timeout(timer)
            self.log.append("modem connected")
            self.state = self.wait_rssi_state()
        me["ok"] = ok
        self.write("at\r")
        if self.version == "d95b5d8":
            timer = self.set_timeout(lambda: self.write("at\r"), 2000)
        return me

    def wait_rssi_state(self) -> dict:
        me: dict = {}
        threshold = 8 if self.version == "ba5b46c" else 5

        def csq(rssi, _ber):
            self.log.append(f"rssi {rssi:g}")
            if rssi >= threshold:
                # (HEAD goes on to waitRegState; only ba5b46c's path is reachable on a module)
                self.state = self.closing_state()
                return
            self.set_timeout(lambda: self.write("at+csq\r"), 1000)
        me["csq"] = csq
        self.write("at+csq\r")
        return me

    def closing_state(self) -> dict:
        me: dict = {}
        timer = None

        def closed(cid):
            self.clear_timeout(timer)
            if cid == 5:
                self.state = self.connecting_state()
        me["sock-closed"] = closed
        me["sock-error"] = lambda cid, err: closed(cid)
        self.write("at+qiclose=5\r")

        def later():
            self.state = self.connecting_state()
        self.set_timeout(later, 3000)      # (ba5b46c keeps no handle to it)
        return me

    def connecting_state(self) -> dict:
        me: dict = {}

        def opened(cid):
            if cid == 5:
                self.state = self.connected_state(cid)
        me["sock-opened"] = opened
        self.write('at+qiopen=1,5,"TCP","116.6.51.98",9006,0,0\r')
        return me

    def connected_state(self, cid) -> dict:
        self.log.append(f"conn {cid:g} opened")

        def data(_id):
            if _id == cid:
                self.log.append(f"conn {cid:g} recved data.")
        return {"sock-data": data}

    # -- rl.on('line') -----------------------------------------------------------------------------
    def on_line(self, line: str) -> None:
        if not line.strip():
            return
        if line.startswith("OK"):
            self.emit("ok")
            return
        if line.startswith("ERROR"):
            self.emit("error")
            return
        if line.startswith("+QIOPEN: "):
            info = line[9:].split(",")
            cid = js_num(info[0])
            err = js_num(info[1]) if len(info) > 1 else float("nan")
            if err == 0:
                self.emit("sock-opened", cid)
                return
            if err == 567:
                self.emit("sock-closed", cid)
                return
            self.emit("sock-error", cid, err)
        if line.startswith('+QIURC: "recv",'):
            self.emit("sock-data", js_num(line[15:]))
            return
        csq_prefix = "+CSQ: " if self.version == "ba5b46c" else "+csq: "
        if line.startswith(csq_prefix):
            info = line[6:].split(",")
            self.emit("csq", js_num(info[0]), js_num(info[1]))
            return


class QuectelSvr:
    """quectelsvr.js: on each connection one 270-byte chunk at once, then one every `intvl` s;
    what the client sends is logged; the old-connection peer of a test is a second instance."""

    CHUNK = "".join("hellohell%d" % i for _ in range(3) for i in range(9)).encode()

    def __init__(self, intvl: float) -> None:
        self.intvl = intvl
        self.sent = bytearray()
        self.connections = 0
        self.eof = threading.Event()
        self.sending = True
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            conn, _ = self.lsock.accept()
        except OSError:
            return
        self.connections += 1
        threading.Thread(target=self._reader, args=(conn,), daemon=True).start()
        while self.sending:
            try:
                conn.sendall(self.CHUNK)
            except OSError:
                return
            self.sent += self.CHUNK
            time.sleep(self.intvl)

    def _reader(self, conn) -> None:
        conn.settimeout(120)
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        self.eof.set()
        self.sending = False

    def close(self) -> None:
        self.sending = False
        self.lsock.close()


def test_quectelcom_head_waits_for_a_lower_case_csq_line_no_module_sends(driver_path, strict_log):
    """quectelcli.js at HEAD (d95b5d8): "at\\r" -> the echo line "at" is ignored, "OK" -> 'modem
    connected' (its 2 s retry of "at\\r" cancelled); "at+csq\\r" -> the module answers
    "+CSQ: 24,99" in capitals as every Quectel module does, but this version looks for lines
    starting "+csq: " (commit 692bbd0 turned the regex to lower case), so 'csq' is never emitted
    and the OK that follows goes to a state with no 'ok' listener: the program writes nothing more,
    ever.  The program's fault on a real module too; the module's bytes are exact."""
    cli = QuectelCli(driver_path, "d95b5d8")
    try:
        wait_for(lambda: cli.rx.endswith(b"\r\nOK\r\n") and b"+CSQ" in cli.rx, what="the CSQ answer")
        time.sleep(2.5)                                    # past the (cancelled) 2 s retry timer
        assert bytes(cli.tx) == b"at\rat+csq\r"
        assert bytes(cli.rx) == b"at\r\r\nOK\r\nat+csq\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
        assert cli.log == ["modem connected"] and cli.crashed is None
    finally:
        cli.close()


def test_quectelcom_close_of_a_never_opened_id_is_ok_and_the_program_opens_its_socket(driver_path, emulator,
                                                                                    strict_log):
    """ba5b46c on a module with nothing open on connectID 5: at -> OK, at+csq -> "+CSQ: 24,99"
    (rssi 24 >= 8), then "at+qiclose=5\\r" -> OK: an id with nothing open closes as it is
    (docs/behaviour.md, AT+QICLOSE).  The OK is not listened to; 3 s later the program opens
    connectID 5 and logs 'conn 5 opened'.  (Was ERROR 572: the line handler emitted 'error' on
    an EventEmitter with no 'error' listener and Node threw ERR_UNHANDLED_ERROR -- the program
    died on every fresh module, which its author would have met at once on the hardware.)"""
    activate_pdp(driver_path)
    svr = QuectelSvr(intvl=3600)
    emulator.router.add_map("116.6.51.98", 9006, "127.0.0.1", svr.port)
    cli = QuectelCli(driver_path, "ba5b46c")
    try:
        wait_for(lambda: "conn 5 opened" in cli.log, what="the program's socket")
        assert cli.crashed is None
        assert bytes(cli.tx) == b'at\rat+csq\rat+qiclose=5\rat+qiopen=1,5,"TCP","116.6.51.98",9006,0,0\r'
        assert b"at+qiclose=5\r\r\nOK\r\n" in cli.rx
        assert cli.log[:3] == ["modem connected", "rssi 24", "conn 5 opened"]
    finally:
        cli.close()
        svr.close()


def test_quectelcom_reconnects_id_5_and_gets_one_recv_urc_for_a_buffer_it_never_reads(driver_path, emulator,
                                                                                    strict_log):
    """ba5b46c where an earlier session left connectID 5 open (the case the close is for):
    "at+qiclose=5\\r" -> OK (the old peer sees EOF; the OK is not listened to), 3 s later
    'at+qiopen=1,5,"TCP","116.6.51.98",9006,0,0\\r' -> OK and "+QIOPEN: 5,0" -> 'conn 5 opened'.
    quectelsvr.js (--intvl 0.25) writes 270 bytes at once and every 250 ms: in buffer access
    mode the module reports '+QIURC: "recv",5' once, when the first chunk lands in the empty
    buffer, and not again while the program never reads -- so it logs "conn 5 recved data."
    exactly once.  Every byte waits in the module: read afterwards with AT+QIRD=5,1500 they are
    the server's chunks in order, none lost."""
    activate_pdp(driver_path)
    old = QuectelSvr(intvl=3600)
    svr = QuectelSvr(intvl=0.25)
    emulator.router.add_map("old.example", 9000, "127.0.0.1", old.port)
    emulator.router.add_map("116.6.51.98", 9006, "127.0.0.1", svr.port)
    host = Host(driver_path)
    try:
        assert host.at('AT+QIOPEN=1,5,"TCP","old.example",9000,0,0').endswith(b"\r\nOK\r\n")
        host.read_until(b"+QIOPEN: 5,0\r\n")
        host.read_until(b'+QIURC: "recv",5\r\n')
        assert host.at("AT+QIRD=5,1500").endswith(b"\r\nOK\r\n")        # the old session's data read
    finally:
        host.close()
    cli = QuectelCli(driver_path, "ba5b46c")
    try:
        wait_for(lambda: "conn 5 opened" in cli.log, what="the program's socket")
        assert old.eof.wait(10 * SLOW)                                  # the close reached the old peer
        wait_for(lambda: len(svr.sent) >= 4 * 270, what="four chunks from quectelsvr")
        time.sleep(0.3)
        assert cli.crashed is None
        assert bytes(cli.tx) == b'at\rat+csq\rat+qiclose=5\rat+qiopen=1,5,"TCP","116.6.51.98",9006,0,0\r'
        assert b"at+qiclose=5\r\r\nOK\r\n" in cli.rx
        assert b'at+qiopen=1,5,"TCP","116.6.51.98",9006,0,0\r\r\nOK\r\n' in cli.rx
        assert cli.rx.count(b'+QIURC: "recv",5\r\n') == 1
        assert cli.log == ["modem connected", "rssi 24", "conn 5 opened", "conn 5 recved data."]
    finally:
        cli.close()
    svr.sending = False
    time.sleep(0.4)
    sent = bytes(svr.sent)
    host = Host(driver_path)
    try:
        got = b""
        while True:
            ans = host.at("AT+QIRD=5,1500")
            m = re.search(rb"\+QIRD: (\d+)\r\n", ans)
            assert m, ans
            n = int(m.group(1))
            if n == 0:
                break
            got += ans[m.end():m.end() + n]
            assert ans[m.end() + n:] == b"\r\n\r\nOK\r\n"
        assert got == sent and len(sent) % 270 == 0
    finally:
        host.close()
        svr.close()
        old.close()


# =================================================================================================
# insighio/insighioNode modem_bg600.py (MicroPython)
# =================================================================================================
class MpyUart:
    """machine.UART(2, 115200, timeout=500, timeout_char=100) on the pty: readline() returns at
    "\\n", or what came when 500 ms pass without a first byte / 100 ms without the next (None when
    nothing); read(n) likewise, at most n bytes; any() counts the waiting bytes."""

    def __init__(self, path: str, timeout: float = 0.5, timeout_char: float = 0.1) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.timeout, self.timeout_char = timeout, timeout_char
        self.buf = bytearray()
        self.tx = bytearray()
        self.rx = bytearray()

    def close(self) -> None:
        self.ser.close()

    def _pull(self, wait: float) -> bool:
        deadline = time.monotonic() + wait
        while True:
            n = self.ser.in_waiting
            if n:
                data = self.ser.read(n)
                self.buf += data
                self.rx += data
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def any(self) -> int:
        self._pull(0)
        return len(self.buf)

    def _take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self) -> bytes | None:
        if not self.buf and not self._pull(self.timeout):
            return None
        while b"\n" not in self.buf:
            if not self._pull(self.timeout_char):
                return self._take(len(self.buf))
        return self._take(self.buf.index(b"\n") + 1)

    def read(self, n: int | None = None) -> bytes | None:
        if n is None:
            self._pull(0)
            return self._take(len(self.buf)) if self.buf else None
        if not self.buf and not self._pull(self.timeout):
            return None
        while len(self.buf) < n and self._pull(self.timeout_char):
            pass
        return self._take(min(n, len(self.buf)))

    def write(self, data: bytes | str) -> int:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self.ser.write(raw)
        self.tx += raw
        return len(raw)


def sleep_ms(ms: int) -> None:
    time.sleep(ms / 1000)


class InsighioBg600:
    """modem_base.Modem.send_at_cmd() + ModemBG600's file and persistent-SSL-socket code."""

    def __init__(self, uart: MpyUart) -> None:
        self.uart = uart
        self.commands: list[str] = []
        self.errors: list[str] = []            # logging.error() lines
        self._ssl_pdp_context_id, self._ssl_context_id, self._ssl_client_id = 1, 1, 6
        self._ssl_socket_host = self._ssl_socket_port = None
        self._ssl_context_configured = False

    # -- modem_base.py -------------------------------------------------------------------------
    def send_at_cmd(self, command, timeoutms=30000, success_condition="OK", extra_error_condition=""):
        status = None
        lines: list[str] = []
        while self.uart.any():
            self.uart.readline()
        self.commands.append(command)
        self.uart.write(command + "\r\n")
        deadline = time.monotonic() + timeoutms / 1000
        success_regex = "^([\\w\\s\\+]+)?" + success_condition
        error_regex = "(\\w+\\s+)?(ERROR|FAIL|(\\+CM[ES] ERROR)" + (
            "|({}))".format(extra_error_condition) if extra_error_condition else ")")
        while True:
            remaining = self.uart.any()
            if time.monotonic() >= deadline:
                if status is None:
                    status = False
                break
            if status is not None and remaining == 0:
                break
            elif remaining:
                line = self.uart.readline()
                line = line if line is None else line.decode("utf8", "ignore").strip()
                if line:
                    if line == command:
                        pass                                  # "command echo is on - ignoring"
                    else:
                        lines.append(line)
                        if re.search(success_regex, line) is not None:
                            status = True
                        elif re.search(error_regex, line) is not None:
                            status = False
            sleep_ms(5)
        return bool(status), lines

    @staticmethod
    def _match_regex(regex, lines):
        for line in lines:
            m = re.search(regex, line)
            if m is not None:
                return m
        return None

    # -- files (main cd9dd2f) ------------------------------------------------------------------
    def get_next_bytes_from_file(self, file_handle, num_of_bytes, timeout_ms=2000):
        while self.uart.any():
            self.uart.readline()
        status = None
        buffer = None
        deadline = time.monotonic() + timeout_ms / 1000
        success_regex = "^([\\w\\s\\+]+)?OK$"
        error_regex = "^((\\w+\\s+)?(ERROR|FAIL)$)|(\\+CM[ES] ERROR)"
        command = "AT+QFREAD={},{}".format(file_handle, num_of_bytes)
        self.commands.append(command)
        self.uart.write(command + "\r\n")
        while True:
            remaining = self.uart.any()
            if time.monotonic() >= deadline:
                if status is None:
                    status = False
                break
            if status is not None and remaining == 0:
                break
            line = self.uart.readline()
            try:
                line = line if line is None else line.decode("utf8").strip()
            except UnicodeDecodeError:
                self.errors.append("! " + str(line))
                line = ""
            if line == command:
                pass
            elif line == "CONNECT " + str(num_of_bytes):
                buffer = self.uart.read(num_of_bytes)
            elif line is not None:
                if re.search(success_regex, line) is not None:
                    status = True
                elif re.search(error_regex, line) is not None:
                    status = False
            sleep_ms(50)
        return buffer if status else None

    def get_file_size(self, source):
        _, lines = self.send_at_cmd('AT+QFLST="' + source + '"')
        res = re.match(r'\+QFLST: ".*",(\d+)', lines[0])
        return int(res.group(1)) if res else None

    def open_file_read_only(self, source):
        _, lines = self.send_at_cmd('AT+QFOPEN="' + source + '",2')
        res = re.match(r"\+QFOPEN:\s+(\d+)", lines[0])
        return res.group(1) if res else None

    def get_file(self, source, destination: bytearray) -> bool:
        file_size = self.get_file_size(source)
        if not file_size:
            return False
        file_handle = self.open_file_read_only(source)
        data_read = 0
        while data_read < file_size:
            remaining = file_size - data_read
            n = 256 if remaining >= 256 else remaining
            buffer = self.get_next_bytes_from_file(file_handle, n)
            if not buffer:
                self.errors.append("error reading file from modem")
                return False
            destination += buffer
            data_read += n
            sleep_ms(10)
        self.send_at_cmd("AT+QFCLOSE=" + file_handle)
        return data_read == file_size

    # -- the persistent SSL socket (the store's newer modem_bg600.py) ---------------------------
    def _ssl_configure_context(self):
        if self._ssl_context_configured:
            return
        ctx = self._ssl_context_id
        for key, value in (("sslversion", "4"), ("ciphersuite", "0xFFFF"), ("seclevel", "0"), ("sni", "1"),
                           ("session", "1"), ("ignorelocaltime", "1"), ("negotiatetime", "300")):
            self.send_at_cmd('AT+QSSLCFG="{}",{},{}'.format(key, ctx, value))
        self._ssl_context_configured = True

    def ssl_socket_is_connected(self):
        status, lines = self.send_at_cmd("AT+QSSLSTATE={}".format(self._ssl_client_id), 5000)
        if not status:
            return False
        m = self._match_regex(r'\+QSSLSTATE:\s*{},"[^"]*","[^"]*",\d+,\d+,(\d+)'.format(self._ssl_client_id), lines)
        return m is not None and m.group(1) == "2"

    def ssl_socket_connect(self, host, port=443, timeout_ms=150000):
        if self._ssl_socket_host == host and self._ssl_socket_port == port and self.ssl_socket_is_connected():
            return True
        self.ssl_socket_close()
        self._ssl_configure_context()
        status, lines = self.send_at_cmd(
            'AT+QSSLOPEN={},{},{},"{}",{},0'.format(self._ssl_pdp_context_id, self._ssl_context_id,
                                                   self._ssl_client_id, host, port),
            timeout_ms, r"\+QSSLOPEN:\s*{},\d+".format(self._ssl_client_id))
        m = self._match_regex(r"\+QSSLOPEN:\s*{},(\d+)".format(self._ssl_client_id), lines)
        if not status or m is None or m.group(1) != "0":
            self.errors.append("SSL socket open to {}:{} failed: {}".format(host, port, lines))
            self.ssl_socket_close()
            return False
        self._ssl_socket_host, self._ssl_socket_port = host, port
        return True

    def ssl_socket_close(self):
        self._ssl_socket_host = self._ssl_socket_port = None
        status, _ = self.send_at_cmd("AT+QSSLCLOSE={},10".format(self._ssl_client_id), 15000)
        return status

    def _wait_for_uart_response(self, regex, timeout_ms):
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            line = self.uart.readline()
            if line is None:
                sleep_ms(5)
                continue
            text = line.decode("utf8", "ignore").strip()
            if not text:
                continue
            if re.search(regex, text) is not None:
                return True
            if re.search(r"(ERROR|FAIL)", text) is not None:
                return False
        return False

    def _ssl_send_raw(self, payload):
        if isinstance(payload, str):
            payload = payload.encode("utf8")
        ready, _ = self.send_at_cmd("AT+QSSLSEND={},{}".format(self._ssl_client_id, len(payload)), 10000, ">")
        if not ready:
            self.errors.append("SSL socket not ready to send")
            return False
        self.uart.write(payload)
        return self._wait_for_uart_response(r"SEND OK", 30000)

    def _ssl_recv_raw(self, max_bytes=1500, timeout_ms=10000):
        while self.uart.any():
            self.uart.read()
        command = "AT+QSSLRECV={},{}".format(self._ssl_client_id, max_bytes)
        self.commands.append(command)
        self.uart.write(command + "\r\n")
        deadline = time.monotonic() + timeout_ms / 1000
        length = None
        while length is None and time.monotonic() < deadline:
            line = self.uart.readline()
            if line is None:
                sleep_ms(5)
                continue
            text = line.decode("utf8", "ignore").strip()
            if not text:
                continue
            m = re.search(r"\+QSSLRECV:\s*(\d+)", text)
            if m is not None:
                length = int(m.group(1))
            elif re.search(r"(ERROR|FAIL)", text) is not None:
                self.errors.append("SSL socket read error: " + text)
                return None
        if length is None:
            return None
        data = b""
        while len(data) < length and time.monotonic() < deadline:
            chunk = self.uart.read(length - len(data))
            if chunk:
                data += chunk
            else:
                sleep_ms(5)
        self._wait_for_uart_response(r"^OK", 5000)
        return data if len(data) == length else None

    @staticmethod
    def _ssl_dechunk(body):
        result = b""
        while True:
            index = body.find(b"\r\n")
            if index < 0:
                break
            try:
                size = int(body[:index].split(b";")[0].decode("utf8", "ignore"), 16)
            except ValueError:
                break
            if size == 0:
                break
            result += body[index + 2:index + 2 + size]
            body = body[index + 4 + size:]
        return result

    def _ssl_read_http_response(self, timeout_ms):
        raw = b""
        header_end = -1
        content_length = None
        chunked = False
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            chunk = self._ssl_recv_raw()
            if chunk is None:
                return None, None
            if not chunk:
                sleep_ms(200)
                continue
            raw += chunk
            if header_end < 0:
                header_end = raw.find(b"\r\n\r\n")
                if header_end < 0:
                    continue
                for line in raw[:header_end].decode("utf8", "ignore").split("\r\n"):
                    low = line.lower()
                    if low.startswith("content-length:"):
                        try:
                            content_length = int(line.split(":", 1)[1].strip())
                        except ValueError:
                            content_length = None
                    elif low.startswith("transfer-encoding:") and "chunked" in low:
                        chunked = True
            body = raw[header_end + 4:]
            if chunked:
                if not body.endswith(b"0\r\n\r\n"):
                    continue
                body = self._ssl_dechunk(body)
            elif content_length is not None:
                if len(body) < content_length:
                    continue
                body = body[:content_length]
            m = re.search(r"HTTP/1\.[01]\s+(\d+)", raw[:header_end].decode("utf8", "ignore"))
            return (int(m.group(1)) if m else None), body.decode("utf8", "ignore")
        self.errors.append("SSL socket: timed out waiting for HTTP response")
        return None, None

    def _ssl_http_request(self, method, url_base, route, auth_token, body=None, timeout_ms=60000):
        if body is None:
            body_str = ""
        elif isinstance(body, (dict, list)):
            body_str = json.dumps(body)
        else:
            body_str = str(body)
        request = (method + " " + route + " HTTP/1.1\r\n"
                   "Host: " + url_base + "\r\n"
                   "Authorization: " + auth_token + "\r\n"
                   "Content-Type: application/json\r\n"
                   "Connection: keep-alive\r\n"
                   "Content-Length: " + str(len(body_str)) + "\r\n"
                   "\r\n" + body_str)
        for attempt in range(0, 2):
            if not self.ssl_socket_connect(url_base):
                return None, None
            if not self._ssl_send_raw(request):
                self.errors.append("SSL socket send failed, attempt {}".format(attempt + 1))
                self.ssl_socket_close()
                continue
            status_code, response_body = self._ssl_read_http_response(timeout_ms)
            if status_code is not None:
                return status_code, response_body
            self.ssl_socket_close()
        return None, None

    def http_get_with_auth_header(self, url_base, route, auth_token, timeout_ms=60000):
        status_code, body = self._ssl_http_request("GET", url_base, route, auth_token, None, timeout_ms)
        if status_code is None or status_code >= 300:
            return None
        return body

    def http_put_with_auth_header(self, url_base, route, auth_token, post_body, timeout_ms=60000):
        status_code, _ = self._ssl_http_request("PUT", url_base, route, auth_token, post_body, timeout_ms)
        return status_code is not None and status_code < 300


INSIGHIO_CFG = ['AT+QSSLCFG="sslversion",1,4', 'AT+QSSLCFG="ciphersuite",1,0xFFFF', 'AT+QSSLCFG="seclevel",1,0',
                'AT+QSSLCFG="sni",1,1', 'AT+QSSLCFG="session",1,1', 'AT+QSSLCFG="ignorelocaltime",1,1',
                'AT+QSSLCFG="negotiatetime",1,300']
CONSOLE = "console.insigh.io"
TOKEN = "Thing 5de93307-344f-48f2-a66d-1d2f7e359504"


def read_http_request(conn) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 request off a keep-alive TLS connection: (head, body), None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096, timeout=60)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(body) < need:
        chunk = conn.recv(4096, timeout=60)
        if not chunk:
            return None
        body += chunk
    assert len(body) == need
    return head, body


def test_insighio_get_file_reads_a_binary_file_through_256_byte_qfreads(driver_path, strict_log):
    """get_file(): AT+QFLST="ota.bin" -> '+QFLST: "ota.bin",700' (lines[0], the echo skipped),
    AT+QFOPEN="ota.bin",2 -> handle, then AT+QFREAD=<fh>,256 / 256 / 188 -- each answered
    "CONNECT <n>" exactly as the driver compares it, n raw bytes taken with uart.read(n), then
    "OK" -- and AT+QFCLOSE=<fh>.  The file holds CR LF, "OK", "CONNECT 256" and NUL bytes at chunk
    edges: the length-counted read keeps them whole.  The driver runs with the echo on until its
    init()'s ATE0 (whose own echo, equal to the command, is skipped)."""
    blob = bytearray()
    for i in range(700):
        blob.append((i * 37 + 11) % 256)
    blob[250:262] = b"\r\nOK\r\nERROR\r"
    blob[500:513] = b"CONNECT 256\r\n"
    blob[512] = 0
    blob = bytes(blob)
    host = Host(driver_path)
    try:
        assert re.search(rb"\+QFUPL: 700,[0-9a-f]+\r\n\r\nOK\r\n$", host.upload("ota.bin", blob))
    finally:
        host.close()
    uart = MpyUart(driver_path)
    try:
        drv = InsighioBg600(uart)
        assert drv.send_at_cmd("ATE0") == (True, ["OK"])
        out = bytearray()
        assert drv.get_file("ota.bin", out) is True
        assert bytes(out) == blob
        fh = re.search(rb"\+QFOPEN: (\d+)", uart.rx).group(1).decode()
        assert drv.commands == ["ATE0", 'AT+QFLST="ota.bin"', 'AT+QFOPEN="ota.bin",2', f"AT+QFREAD={fh},256",
                                f"AT+QFREAD={fh},256", f"AT+QFREAD={fh},188", f"AT+QFCLOSE={fh}"]
        assert uart.rx.count(b"\r\nCONNECT 256\r\n") == 2 and b"\r\nCONNECT 188\r\n" in uart.rx
        assert drv.errors == []
    finally:
        uart.close()


def test_insighio_keep_alive_https_requests_share_one_ssl_socket(driver_path, emulator, strict_log):
    """http_get_with_auth_header() then http_put_with_auth_header() then a GET answered chunked,
    all to console.insigh.io:443 (an OpenSSL keep-alive server).  The first request finds no
    socket: AT+QSSLCLOSE=6,10 (OK: nothing open), the seven AT+QSSLCFG (the EC2x has no "session"
    key -- ERROR, ignored as the driver ignores every result), AT+QSSLOPEN=1,1,6,... and its
    "+QSSLOPEN: 6,0"; each later one asks AT+QSSLSTATE=6, finds <socket_state> 2 and sends at
    once.  AT+QSSLSEND=6,<n>: the prompt "> " (no line end: readline() returns it after 100 ms of
    silence), the request, "SEND OK".  The 2 000-byte JSON body comes back through two
    AT+QSSLRECV=6,1500 (1500 + the rest, empty reads polled every 200 ms); the chunked answer,
    sent in two pieces 300 ms apart, is dechunked whole.  One TLS connection serves all three."""
    activate_pdp(driver_path)
    channels = [{"id": "ch-%03d" % i, "name": "channel %d" % i, "metadata": {"k": "v" * (i % 7)}} for i in range(40)]
    body1 = json.dumps(channels).encode()[:2000]
    body1 = body1[:-1] + b"]" if not body1.endswith(b"]") else body1
    resp1 = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body1) + body1
    resp2 = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    parts = [b"a" * 700, b"B" * 1200, b"tail\r\n0\r\n"]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    resp3a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked[:900]
    resp3b = chunked[900:]
    requests: list[tuple[bytes, bytes]] = []

    def handler(conn):
        while True:
            req = read_http_request(conn)
            if req is None:
                return
            requests.append(req)
            if len(requests) == 1:
                conn.sendall(resp1)
            elif len(requests) == 2:
                conn.sendall(resp2)
            else:
                conn.sendall(resp3a)
                time.sleep(0.3)
                conn.sendall(resp3b)

    with TlsServer(handler=handler) as server:
        emulator.router.add_map(CONSOLE, 443, "127.0.0.1", server.port)
        uart = MpyUart(driver_path)
        try:
            drv = InsighioBg600(uart)
            assert drv.send_at_cmd("ATE0")[0] is True
            got = drv.http_get_with_auth_header(CONSOLE, "/mf-rproxy/channels/list", TOKEN)
            assert got == body1.decode()
            sent = [c for c in drv.commands if not c.startswith("AT+QSSLRECV")]
            assert sent == ["ATE0", "AT+QSSLCLOSE=6,10", *INSIGHIO_CFG, f'AT+QSSLOPEN=1,1,6,"{CONSOLE}",443,0',
                            "AT+QSSLSEND=6,%d" % len(requests[0][0] + b"\r\n\r\n")]
            assert b'AT+QSSLCFG="session",1,1' not in uart.rx           # echo off
            assert uart.rx.count(b"\r\nERROR\r\n") == 1                    # the "session" key alone
            assert b"\r\n+QSSLOPEN: 6,0\r\n" in uart.rx
            assert re.findall(rb"\+QSSLRECV: ([1-9]\d*)\r\n", uart.rx)[:2] == [b"1500", b"%d" % (len(resp1) - 1500)]
            assert requests[0][0].startswith(b"GET /mf-rproxy/channels/list HTTP/1.1\r\nHost: console.insigh.io\r\n"
                                             b"Authorization: " + TOKEN.encode())
            conn = server.wait_handshake(timeout=10 * SLOW)
            assert conn.sni == CONSOLE

            n_before = len(drv.commands)
            reading = {"thingId": "5de93307", "temp": 21.5, "vbat": 3.71}
            assert drv.http_put_with_auth_header(CONSOLE, "/mf-rproxy/things/5de93307", TOKEN, reading) is True
            assert drv.commands[n_before:n_before + 2] == ["AT+QSSLSTATE=6", "AT+QSSLSEND=6,%d" % (
                len(requests[1][0]) + 4 + len(requests[1][1]))]
            assert requests[1][1] == json.dumps(reading).encode()
            assert re.search(rb'\+QSSLSTATE: 6,"SSLClient","console\.insigh\.io",443,\d+,2,', uart.rx)

            got3 = drv.http_get_with_auth_header(CONSOLE, "/ota/manifest", TOKEN)
            assert got3 == (b"".join(parts)).decode()
            assert len(server.connections) == 1 and len(requests) == 3
            assert drv.errors == []
        finally:
            uart.close()


def test_insighio_idle_socket_dropped_by_the_server_is_reopened(driver_path, emulator, strict_log):
    """The console closes the keep-alive socket after its first answer (close_notify + FIN).  The
    next http_get_with_auth_header(): AT+QSSLSTATE=6 no longer shows <socket_state> 2 (the module
    keeps the closed socket, state 4, until the host closes it), so the driver closes it
    (AT+QSSLCLOSE=6,10 -> OK), configures nothing again (already done) and opens a new one:
    a second TLS connection that serves the request; the '+QSSLURC: "closed",6' was read away
    with the input the driver flushes before each command."""
    activate_pdp(driver_path)
    served: list[bytes] = []

    def handler(conn):
        req = read_http_request(conn)
        if req is None:
            return
        served.append(req[0].split(b"\r\n")[0])
        body = b'{"n":%d}' % len(served)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        if len(served) == 1:
            conn.send_close_notify()
            return                                  # the server then closes TCP
        while conn.recv(4096, timeout=60):
            pass

    with TlsServer(handler=handler) as server:
        emulator.router.add_map(CONSOLE, 443, "127.0.0.1", server.port)
        uart = MpyUart(driver_path)
        try:
            drv = InsighioBg600(uart)
            assert drv.send_at_cmd("ATE0")[0] is True
            assert drv.http_get_with_auth_header(CONSOLE, "/a", TOKEN) == '{"n":1}'
            wait_for(lambda: b'+QSSLURC: "closed",6' in uart.rx or uart.any() and b"closed" in uart.buf,
                     what="the close URC")
            n_before = len(drv.commands)
            assert drv.http_get_with_auth_header(CONSOLE, "/b", TOKEN) == '{"n":2}'
            later = [c for c in drv.commands[n_before:] if not c.startswith("AT+QSSLRECV")]
            assert later[:3] == ["AT+QSSLSTATE=6", "AT+QSSLCLOSE=6,10", f'AT+QSSLOPEN=1,1,6,"{CONSOLE}",443,0']
            assert later[3].startswith("AT+QSSLSEND=6,")
            assert re.search(rb'\+QSSLSTATE: 6,"SSLClient","console\.insigh\.io",443,\d+,4,', uart.rx)
            assert served == [b"GET /a HTTP/1.1", b"GET /b HTTP/1.1"]
            assert len(server.connections) == 2 and drv.errors == []
        finally:
            uart.close()
