"""Adversarial tests: an eleventh set of public host code that drives a Quectel module through
AT+QSSLCFG / AT+QSSLOPEN / AT+QSSLSEND / AT+QSSLRECV / AT+QSSLCLOSE and AT+QIOPEN / AT+QISEND /
AT+QIRD / AT+QISTATE, replayed through the pty with each driver's own line endings, waits and
parsers against loopback peers (OpenSSL for TLS).  (Earlier files: test_adversarial_public_drivers.py
.. _10.py; see _8.py's docstring for the list.)  None of the three drivers below was replayed before.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- FastBee-Arduino, kerwincui/FastBee-Arduino at 62aa083 (2026-07-29), an ESP32 IoT firmware whose
  cellular adapter talks to a Quectel EC801E-CN (the EC2x SSL command set): QuectelSslClient in
  src/network/CellularAdapter.cpp + include/network/CellularAdapter.h (instantiated as
  QuectelSslClient(Serial2, contextId 1, connectId 4, sslContextId 1), APN default "CMNET").
  Every command is "<cmd>" then "\\r\\n" in a second print(), after drainInput(20 ms) -- 20 ms in
  which whatever the module sent is read and thrown away (URCs included).  readLine(): '\\r'
  skipped, a line ends at '\\n', trimmed, empty lines skipped, 180 characters at most.
  sendCommandCollect(): the echo (a line equal to the command) skipped, "OK" true, "ERROR" /
  "+CME ERROR" / "+CMS ERROR" false.  connect(): stop() first (AT+QSSLCLOSE=4), then
  ensureInternetContext() (AT+QIACT? -- "+QIACT: 1," and the field between the first two commas
  must be "1" -- else AT+QICSGP=1,1,"CMNET","","",1 and AT+QIACT=1), configureSsl() (seclevel 0,
  sslversion 4 (3 as fallback), then ignorelocaltime 1, sni 1, ciphersuite 0XFFFF whose results
  are ignored), AT+QSSLOPEN=1,1,4,"<host>",<port>,0 and waitForOpenResult(): the last integer of
  the "+QSSLOPEN:" line must be 0.  write(): 1024-byte chunks, AT+QSSLSEND=4,<n>, the first '>'
  is the prompt, then the bytes, then a line "SEND OK" (or "OK").  available(): the driver's
  buffer, else -- at most every 120 ms unless a '+QSSLURC: "recv"' was seen -- fetchRx(768):
  AT+QSSLRECV=4,768, the "+QSSLRECV:" line's last integer, that many raw bytes, then lines up to
  "OK".  handleUrc(): "recv" sets the pending flag, "closed" / "pdpdeact" clear `connected`.
  CellularAdapter::begin() drives the rest of the start-up with TinyGSM (covered in earlier
  files) and never sends ATE0, so this client runs with the echo the module comes up with (ATE1).
- FruityMesh's EC21 cellular gateway, nishinohi/fruitymesh (a fork of mwaylabs/fruitymesh) branch
  cellular-blocking at 9bea8d6 (2020-12-15): src/utility/AtCommandController.cpp/.h,
  EcTwoOneModuleClient.cpp (an Arduino Client over AT+QIOPEN / AT+QISEND / AT+QIRD),
  PubSubClient.cpp (knolleary's MQTT client, MQTT 3.1.1, keepalive 15 s, socket timeout 15 s) and
  src/modules/CellularModule.cpp SendFiredNodeIdListByCellular() (TurnOnOrReset(), Activate(),
  connect("testId") to beam.soracom.io:1883, publish("beamdemo", "Hello ec21"), disconnect()).
  Commands end with a lone "\\r"; the nRF UART is read one byte at a time into the terminal's
  300-byte readBuffer, a line ending at CR LF (featureset github_nrf52: LineFeedCode::CRLF) with
  the CR dropped, an empty line ignored; a response matches when the line *starts with* the
  expected text ("OK|ERROR"-style alternatives), "ERROR" first; return codes are checked by
  Terminal::TokenizeLine() (split at ' ' and ',', NULs written into the buffer) and strtol(base 0)
  of the whole field.  TurnOnOrReset(): AT, ATE0, AT+QURCCFG="urcport","uart1".  Activate():
  AT+CGREG? / AT+CEREG? (field 2 must be 1 or 5), AT+QIACT=1 ("OK|ERROR" both fine),
  AT+QIGETERROR whose code must be 0.  SocketOpen(): AT+QISTATE -- every listed connectID is
  taken --, the lowest free id, AT+QIOPEN=1,<id>,"TCP","<host>",<port> (buffer mode), "OK", then
  "+QIOPEN: <id>,0" within ATCOMMAND_TIMEOUT_MS (300 ms).  SocketSend(): AT+QISEND=<id>,<n>, the
  prompt "> " matched byte by byte on a buffer that is never cleared, the data, "SEND OK", then a
  "+QIURC" line within 10 s (the driver expects the server to answer every write).
  SocketReceive(): AT+QIRD=<id> ("+QIRD" within 500 ms), the length, then the data read as *one
  line* and copied with strlen()+1, then "OK".  SocketClose(): "AT+CLOSE=<id>" -- not a Quectel
  command.  PubSubClient polls available() (one AT+QIRD each) in a busy loop, and read() calls
  available() again.
- Silicon Labs' Third Party Hardware Drivers Extension v3.0.1, SiliconLabs/
  third_party_hw_drivers_extension at 98f30fb, driver/public/mikroe/lte_iot2_bg96 (BG96 on
  Mikroe's LTE IoT 2 Click): src/at_parser_platform.c (every command + "\\r"; a line ends at '\\r';
  a CR or LF as a line's first byte is dropped; "> " as a line's first two bytes is a line of its
  own; line_counter restarts with each command), src/at_parser_core.c (one callback per command
  that judges the n-th line: at_imei_cb wants the echo first, at_ok_error_cb / at_ip_cb /
  at_open_cb / at_send_cb want no echo, at_data_cb wants the data's echo, "SEND OK", "+QIURC:",
  a line with '[' and a fifth line that is not a URC; any other line number is an error),
  src/mikroe_bg96.c (bg96_read_imei, bg96_read_infor, bg96_read_ip, bg96_nb_open_connection:
  AT+QIOPEN=1,<sock>,"TCP","<addr>",<port>,0,1 -- direct push --, bg96_nb_send_data: AT+QISEND=
  <sock>,<strlen> then the data sent as a "command", i.e. with "\\r" after it,
  bg96_nb_receive_data: AT+QIRD=11,100) and app/example/mikroe_lte_iot2_bg96/app_iostream_cli.c
  (socket 0 to cloudsocket.hologram.io:9999, the JSON payload, no ATE0 anywhere).

Every host name dialled is routed to 127.0.0.1.  Where a driver assumes something the module does
not do, the test asserts what the module does and names the driver's fault.
"""
from __future__ import annotations

import re
import time

import serial

from emulator.testing.peers import TcpServer, TlsServer

SLOW = 5                     # drivers' short waits widened for a loaded 2-core machine
CR, LF = 0x0D, 0x0A


class Uart:
    """The serial port as the firmware sees it: bytes taken one at a time from a receive FIFO;
    every write logged (tx), every byte taken logged (rx)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.tx = bytearray()
        self.rx = bytearray()
        self._fifo = bytearray()

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes | str) -> None:
        raw = data.encode("latin-1") if isinstance(data, str) else bytes(data)
        self.ser.write(raw)
        self.tx += raw

    def available(self) -> int:
        n = self.ser.in_waiting
        if n:
            self._fifo += self.ser.read(n)
        return len(self._fifo)

    def read(self) -> int:
        """One byte (the caller checked available())."""
        c = self._fifo.pop(0)
        self.rx.append(c)
        return c

    def read_blocking(self, seconds: float) -> int:
        """A read that blocks until a byte comes (firmware without a timeout); the test's own
        bound turns a hang into a failure."""
        deadline = time.monotonic() + seconds
        while not self.available():
            if time.monotonic() >= deadline:
                raise AssertionError(f"driver blocked {seconds} s on the UART; rx tail {bytes(self.rx[-80:])!r}")
            time.sleep(0.001)
        return self.read()


def wait_for(predicate, seconds: float = 10 * SLOW) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def commands(tx: bytes | bytearray, end: bytes) -> list[bytes]:
    """The AT command lines a driver wrote (lines split at its terminator)."""
    return [line for line in bytes(tx).split(end) if line.startswith(b"AT")]


# =================================================================================================
# FastBee-Arduino QuectelSslClient (EC801E-CN, EC2x SSL command set)
# =================================================================================================
class FastBeeQssl:
    RX_BUFFER_SIZE = 768

    def __init__(self, uart: Uart, context_id: int = 1, connect_id: int = 4, ssl_context_id: int = 1,
                 apn: str = "") -> None:
        self.uart = uart
        self.context_id, self.connect_id, self.ssl_context_id = context_id, connect_id, ssl_context_id
        self.apn = apn
        self._connected = False
        self.has_pending = False
        self.last_poll = 0.0
        self.rx_buffer = b""
        self.rx_pos = 0
        self.open_urc: bytes | None = None

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def millis() -> float:
        return time.monotonic() * 1000

    def drain_input(self, max_ms: float = 20) -> None:
        start = self.millis()
        while self.millis() - start < max_ms:
            had = False
            while self.uart.available():
                self.uart.read()
                had = True
            if not had:
                time.sleep(0.002)

    def read_line(self, timeout_ms: float) -> bytes:
        line = bytearray()
        start = self.millis()
        while self.millis() - start < timeout_ms:
            while self.uart.available():
                c = self.uart.read()
                if c == CR:
                    continue
                if c == LF:
                    s = bytes(line).strip()
                    if s:
                        return s
                    line.clear()        # (trim() left it empty)
                    continue
                line.append(c)
                if len(line) > 180:
                    return bytes(line).strip()
            time.sleep(0.002)
        return bytes(line).strip()

    def handle_urc(self, line: bytes) -> None:
        if b"+QSSLURC:" not in line:
            return
        if b'"recv"' in line:
            self.has_pending = True
        elif b'"closed"' in line or b'"pdpdeact"' in line:
            self._connected = False

    @staticmethod
    def parse_last_integer(line: bytes) -> int | None:
        m = re.search(rb"([-0-9]+)[^-0-9]*$", line)
        if m is None:
            return None
        digits = m.group(1)
        m2 = re.match(rb"-?\d+", digits)           # Arduino toInt(): the leading number
        return int(m2.group(0)) if m2 else 0

    def send_command_collect(self, cmd: str, timeout_ms: float = 5000) -> tuple[bool, bytes]:
        response = bytearray()
        self.drain_input()
        self.uart.write(cmd)
        self.uart.write("\r\n")
        start = self.millis()
        while self.millis() - start < timeout_ms:
            line = self.read_line(250)
            if not line:
                continue
            if line == cmd.encode():
                continue
            self.handle_urc(line)
            response += line + b"\n"
            if line == b"OK":
                return True, bytes(response)
            if line == b"ERROR" or line.startswith(b"+CME ERROR") or line.startswith(b"+CMS ERROR"):
                return False, bytes(response)
        return False, bytes(response)

    def wait_for_prompt(self, timeout_ms: float = 5000) -> bool:
        seen = bytearray()
        start = self.millis()
        while self.millis() - start < timeout_ms:
            while self.uart.available():
                c = self.uart.read()
                if c == ord(">"):
                    return True
                seen.append(c)
                if seen.endswith(b"ERROR\r\n") or seen.endswith(b"+CME ERROR"):
                    return False
                if len(seen) > 96:
                    seen = seen[-48:]
            time.sleep(0.005)
        return False

    def wait_for_send_done(self, timeout_ms: float = 15000) -> bool:
        start = self.millis()
        while self.millis() - start < timeout_ms:
            line = self.read_line(250)
            if not line:
                continue
            self.handle_urc(line)
            if line in (b"SEND OK", b"OK"):
                return True
            if line == b"ERROR" or line.startswith(b"+CME ERROR") or line.startswith(b"+CMS ERROR"):
                return False
        return False

    def wait_for_open_result(self, timeout_ms: float = 90000) -> bool:
        start = self.millis()
        while self.millis() - start < timeout_ms:
            line = self.read_line(500)
            if not line:
                continue
            self.handle_urc(line)
            if line == b"ERROR" or line.startswith(b"+CME ERROR") or line.startswith(b"+CMS ERROR"):
                return False
            if not line.startswith(b"+QSSLOPEN:"):
                continue
            self.open_urc = line
            return self.parse_last_integer(line) == 0
        return False

    # -- Client ---------------------------------------------------------------------------------
    def query_internet_context_active(self) -> bool:
        ok, response = self.send_command_collect("AT+QIACT?", 10000)
        if not ok:
            return False
        needle = b"+QIACT: %d," % self.context_id
        pos = response.find(needle)
        if pos < 0:
            return False
        first = response.find(b",", pos)
        second = response.find(b",", first + 1) if first >= 0 else -1
        if second < 0:
            return False
        return response[first + 1:second].strip() == b"1"

    def ensure_internet_context(self) -> bool:
        if self.query_internet_context_active():
            return True
        apn = self.apn.replace('"', "").strip() or "CMNET"
        configured, _ = self.send_command_collect(f'AT+QICSGP={self.context_id},1,"{apn}","","",1', 10000)
        activated, _ = self.send_command_collect(f"AT+QIACT={self.context_id}", 150000)
        if not activated and self.query_internet_context_active():
            return True
        return configured and (activated or self.query_internet_context_active())

    def configure_ssl(self) -> bool:
        c = self.ssl_context_id
        seclevel, _ = self.send_command_collect(f'AT+QSSLCFG="seclevel",{c},0', 10000)
        version, _ = self.send_command_collect(f'AT+QSSLCFG="sslversion",{c},4', 10000)
        if not version:
            version, _ = self.send_command_collect(f'AT+QSSLCFG="sslversion",{c},3', 10000)
        self.send_command_collect(f'AT+QSSLCFG="ignorelocaltime",{c},1', 5000)
        self.send_command_collect(f'AT+QSSLCFG="sni",{c},1', 5000)
        self.send_command_collect(f'AT+QSSLCFG="ciphersuite",{c},0XFFFF', 5000)
        return seclevel and version

    def connect(self, host: str, port: int) -> int:
        self.stop()
        self.reset_rx()
        host = host.replace('"', "").strip()
        self._connected = False
        self.has_pending = False
        if not self.ensure_internet_context():
            return 0
        if not self.configure_ssl():
            return 0
        self.drain_input()
        self.uart.write(f'AT+QSSLOPEN={self.context_id},{self.ssl_context_id},{self.connect_id},"{host}",{port},0')
        self.uart.write("\r\n")
        opened = self.wait_for_open_result(90000)
        self._connected = opened
        return 1 if opened else 0

    def write(self, buf: bytes) -> int:
        if not self._connected or not buf:
            return 0
        sent = 0
        while sent < len(buf) and self._connected:
            chunk = min(len(buf) - sent, 1024)
            self.drain_input()
            self.uart.write(f"AT+QSSLSEND={self.connect_id},{chunk}")
            self.uart.write("\r\n")
            if not self.wait_for_prompt(5000):
                self._connected = False
                break
            self.uart.write(buf[sent:sent + chunk])
            if not self.wait_for_send_done(20000):
                self._connected = False
                break
            sent += chunk
        return sent

    def buffered(self) -> int:
        return max(len(self.rx_buffer) - self.rx_pos, 0)

    def reset_rx(self) -> None:
        self.rx_buffer, self.rx_pos = b"", 0

    def fetch_rx(self, wanted: int, timeout_ms: float) -> bool:
        if not self._connected:
            return False
        self.reset_rx()
        request = wanted if 0 < wanted <= self.RX_BUFFER_SIZE else self.RX_BUFFER_SIZE
        self.drain_input()
        self.uart.write(f"AT+QSSLRECV={self.connect_id},{request}")
        self.uart.write("\r\n")
        start = self.millis()
        rx_len = -1
        while self.millis() - start < timeout_ms * SLOW:
            line = self.read_line(100)
            if not line:
                continue
            self.handle_urc(line)
            if line.startswith(b"+QSSLRECV:"):
                got = self.parse_last_integer(line)
                if got is not None:
                    rx_len = got
                break
            if line == b"ERROR" or line.startswith(b"+CME ERROR") or line.startswith(b"+CMS ERROR"):
                return False
        if rx_len <= 0:
            end_start = self.millis()
            while self.millis() - end_start < 300 * SLOW:
                line = self.read_line(50)
                if not line:
                    continue
                self.handle_urc(line)
                if line in (b"OK", b"ERROR"):
                    break
            return rx_len == 0
        to_read = min(rx_len, self.RX_BUFFER_SIZE)
        data = bytearray()
        data_start = self.millis()
        while len(data) < to_read and self.millis() - data_start < timeout_ms * SLOW:
            if self.uart.available():
                data.append(self.uart.read())
            else:
                time.sleep(0.002)
        self.rx_buffer, self.rx_pos = bytes(data), 0
        end_start = self.millis()
        while self.millis() - end_start < 500 * SLOW:
            line = self.read_line(50)
            if not line:
                continue
            self.handle_urc(line)
            if line in (b"OK", b"ERROR"):
                break
        return len(data) > 0

    def available(self) -> int:
        if self.buffered() > 0:
            return self.buffered()
        if not self._connected:
            return 0
        now = self.millis()
        if not self.has_pending and now - self.last_poll < 120:
            return 0
        self.last_poll = now
        self.fetch_rx(self.RX_BUFFER_SIZE, 1000 if self.has_pending else 250)
        self.has_pending = False
        return self.buffered()

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            if self.buffered() <= 0:
                if not self._connected or not self.fetch_rx(size - len(out), 1000):
                    break
                if self.buffered() <= 0:
                    break
            take = min(size - len(out), self.buffered())
            out += self.rx_buffer[self.rx_pos:self.rx_pos + take]
            self.rx_pos += take
            if self.rx_pos >= len(self.rx_buffer):
                self.reset_rx()
        return bytes(out)

    def stop(self) -> None:
        self.send_command_collect(f"AT+QSSLCLOSE={self.connect_id}", 5000)
        self._connected = False
        self.has_pending = False
        self.reset_rx()

    def connected(self) -> bool:
        return self._connected


def fastbee_read(client: FastBeeQssl, want: int, seconds: float = 30) -> bytes:
    """The application's loop(): available(), then read() what it says."""
    got = bytearray()
    deadline = time.monotonic() + seconds
    while len(got) < want and time.monotonic() < deadline:
        n = client.available()
        if n > 0:
            got += client.read(n)
        else:
            time.sleep(0.005)
    return bytes(got)


FASTBEE_OPEN = [b'AT+QSSLCFG="seclevel",1,0', b'AT+QSSLCFG="sslversion",1,4',
                b'AT+QSSLCFG="ignorelocaltime",1,1', b'AT+QSSLCFG="sni",1,1',
                b'AT+QSSLCFG="ciphersuite",1,0XFFFF']


def test_fastbee_https_get_through_qsslrecv_polling_with_echo_on(driver_port, emulator, strict_log):
    """connect(): AT+QSSLCLOSE=4 on the idle id (OK: harmless), AT+QIACT? lists nothing, so
    AT+QICSGP=1,1,"CMNET","","",1 and AT+QIACT=1, the five AT+QSSLCFG (all OK on an EC2x), then
    AT+QSSLOPEN=1,1,4,"<host>",443,0 and "+QSSLOPEN: 4,0" -- with the module's echo on, which the
    driver skips line by line.  write() of a GET, the prompt's '>' found after the echoed command;
    the server's 1867-byte answer read through available()/read(): AT+QSSLRECV=4,768 polls, each
    "+QSSLRECV: <n>" then exactly n raw bytes (the last integer of the header line), so three reads
    carry 768 + 768 + the rest.  stop(): AT+QSSLCLOSE=4 sends close_notify."""
    path, _ = driver_port
    host = "iot.fastbee.example"
    body = b"".join(b"%04d:fastbee-4g-payload-line\n" % i for i in range(64))[:1800]
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    request = b"GET /api/device/config HTTP/1.1\r\nHost: iot.fastbee.example\r\nConnection: keep-alive\r\n\r\n"

    def handler(conn):
        req = b""
        while b"\r\n\r\n" not in req:
            chunk = conn.recv(4096, timeout=30)
            if not chunk:
                return
            req += chunk
        conn.sendall(response)
        while conn.recv(4096, timeout=60):
            pass

    with TlsServer(handler=handler) as server:
        emulator.router.add_map(host, 443, "127.0.0.1", server.port)
        uart = Uart(path)
        try:
            client = FastBeeQssl(uart)
            assert client.connect(host, 443) == 1
            assert client.open_urc == b"+QSSLOPEN: 4,0"
            sent = commands(uart.tx, b"\r\n")
            assert sent == [b"AT+QSSLCLOSE=4", b"AT+QIACT?", b'AT+QICSGP=1,1,"CMNET","","",1', b"AT+QIACT=1",
                            *FASTBEE_OPEN, b'AT+QSSLOPEN=1,1,4,"iot.fastbee.example",443,0']
            assert uart.rx.startswith(b"AT+QSSLCLOSE=4\r\r\nOK\r\n")              # echo on throughout
            conn = server.wait_handshake(timeout=10 * SLOW)
            assert conn.version == "TLSv1.2" and conn.sni == host
            assert client.write(request) == len(request)
            assert server.wait_received(len(request), timeout=10 * SLOW) == request
            got = fastbee_read(client, len(response))
            assert got == response
            recvs = re.findall(rb"\+QSSLRECV: (\d+)\r\n", bytes(uart.rx))
            assert [int(n) for n in recvs if int(n)] == [768, 768, len(response) - 1536]
            assert all(c == b"AT+QSSLRECV=4,768" for c in commands(uart.tx, b"\r\n") if c.startswith(b"AT+QSSLRECV"))
            client.stop()
            assert uart.tx.endswith(b"AT+QSSLCLOSE=4\r\n") and uart.rx.endswith(b"\r\nOK\r\n")
            assert server.wait_for(lambda: conn.close_notify_received, timeout=10 * SLOW)
        finally:
            uart.close()


def test_fastbee_2500_byte_write_in_1024_byte_chunks_echoed_back(driver_port, emulator, strict_log):
    """write() of 2 500 bytes: AT+QSSLSEND=4,1024 twice and AT+QSSLSEND=4,452, each waiting for
    its prompt and SEND OK (the echoed data lines -- ATE1 echoes in the prompt, docs/behaviour.md
    -- are neither "OK" nor "ERROR", so the driver reads past them).  The OpenSSL echo server's
    answer comes back whole through the 768-byte QSSLRECV polls, although the driver's
    drainInput() may throw a '+QSSLURC: "recv",4' away before a command: its 120 ms poll finds
    the data anyway.  A second connect() finds the PDP context active (no QICSGP / QIACT)."""
    path, _ = driver_port
    host = "echo.fastbee.example"
    payload = b"".join(b'{"seq":%04d,"temp":21.5,"hum":40}\r\n' % i for i in range(80))[:2500]
    assert len(payload) == 2500
    with TlsServer(mode="echo") as server:
        emulator.router.add_map(host, 8883, "127.0.0.1", server.port)
        uart = Uart(path)
        try:
            client = FastBeeQssl(uart)
            assert client.connect(host, 8883) == 1
            assert client.write(payload) == 2500
            assert re.findall(rb"AT\+QSSLSEND=\d+,\d+\r\n", bytes(uart.tx)) == [     # (a chunk's data
                b"AT+QSSLSEND=4,1024\r\n", b"AT+QSSLSEND=4,1024\r\n", b"AT+QSSLSEND=4,452\r\n"]  # ends mid-line)
            assert uart.rx.count(b"\r\nSEND OK\r\n") == 3
            assert server.wait_received(2500, timeout=10 * SLOW) == payload
            assert fastbee_read(client, 2500) == payload
            # reconnect: stop() closes the first session, the context is found active
            mark = len(uart.tx)
            assert client.connect(host, 8883) == 1
            again = commands(uart.tx[mark:], b"\r\n")
            assert again == [b"AT+QSSLCLOSE=4", b"AT+QIACT?", *FASTBEE_OPEN,
                             b'AT+QSSLOPEN=1,1,4,"echo.fastbee.example",8883,0']
            first = server.wait_connections(2, timeout=10 * SLOW)[0]
            assert server.wait_for(lambda: first.close_notify_received, timeout=10 * SLOW)
            assert server.wait_handshake(index=1, timeout=10 * SLOW).version == "TLSv1.2"
            client.stop()
        finally:
            uart.close()


def test_fastbee_open_of_an_unresolvable_name_reports_565(driver_port, strict_log):
    """waitForOpenResult(): the "+QSSLOPEN:" line's last integer must be 0.  A name no route or
    DNS answers gives "+QSSLOPEN: 4,565" (SSL note §5: 565 DNS parse failed) after OK, so
    connect() returns 0; AT+QIGETERROR (typed afterwards) names the same code."""
    path, _ = driver_port
    uart = Uart(path)
    try:
        client = FastBeeQssl(uart)
        assert client.connect("nowhere.fastbee.invalid", 443) == 0
        assert client.open_urc == b"+QSSLOPEN: 4,565"
        ok, response = client.send_command_collect("AT+QIGETERROR")
        assert ok and response.startswith(b"+QIGETERROR: 565,")
    finally:
        uart.close()


# =================================================================================================
# FruityMesh AtCommandController + EcTwoOneModuleClient + PubSubClient (EC21, Soracom)
# =================================================================================================
ATCOMMAND_TIMEOUT_MS = 300
CONNECTION_WAIT_MS = 10000
CONNECT_ID_NUM = 12
READ_BUFFER_LENGTH = 300          # Terminal.h TERMINAL_READ_BUFFER_LENGTH


def strtol_whole(field: bytes) -> int | None:
    """Utility::StringToLong(): strtol(str, &end, 0) with the whole string consumed."""
    m = re.fullmatch(rb"[ \t\n\v\f\r]*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", field)
    if m is None:
        return None
    sign = -1 if m.group(1) == b"-" else 1
    digits = m.group(2)
    if digits[:2].lower() == b"0x":
        return sign * int(digits[2:], 16)
    if digits.startswith(b"0") and len(digits) > 1:
        return sign * int(digits, 8)
    return sign * int(digits)


class FruityAt:
    """AtCommandController over the Terminal's readBuffer (CRLF line feed code)."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.buf = bytearray(READ_BUFFER_LENGTH)
        self.off = 0
        self.args: list[int] = []                  # TokenizeLine's argument start offsets
        self.connect_ids = [False] * CONNECT_ID_NUM

    def response(self) -> bytes:
        """The readBuffer as a C string."""
        end = self.buf.find(0)
        return bytes(self.buf if end < 0 else self.buf[:end])

    def arg(self, i: int) -> bytes:
        start = self.args[i]
        end = self.buf.find(0, start)
        return bytes(self.buf[start:end if end >= 0 else len(self.buf)])

    def tokenize(self) -> int:
        """Terminal::TokenizeLine(response, strlen, " ,"): a separator counts when the next
        byte is printable and not '!' / '~'; it is overwritten with NUL."""
        length = len(self.response())
        self.args = [0]
        for i in range(length):
            nxt = self.buf[i + 1] if i + 1 < READ_BUFFER_LENGTH else 0
            if nxt <= ord("!") or nxt >= ord("~"):
                continue
            if self.buf[i] not in b" ,":
                continue
            if len(self.args) >= 15:
                return -1
            self.args.append(i + 1)
            self.buf[i] = 0
        return len(self.args)

    def _line_feed(self, b: int) -> bool:
        if self.off > 0:
            return (b == LF and self.buf[self.off - 1] == CR) or self.off >= READ_BUFFER_LENGTH - 2
        return b == LF or self.off >= READ_BUFFER_LENGTH - 1

    def read_line(self) -> bool:
        """ReadLine(): one byte (blocking); True when it ended a non-empty line."""
        c = self.uart.read_blocking(30)
        if not self._line_feed(c):
            self.buf[self.off] = c
            self.off += 1
            return False
        self.off = (self.off - 1) & 0xFF           # setReadBufferOffset(u8 offset - 1)
        self.buf[self.off] = 0
        if self.off <= 0:
            return False
        self.off = 0
        return True

    @staticmethod
    def multi(response: bytes, check: str) -> bool:
        return any(response.startswith(alt.encode()) for alt in check.split("|"))

    def check_return_codes(self, codes: tuple[int, ...]) -> bool:
        n = self.tokenize()
        if n == -1 or n < len(codes) + 1:
            return False
        for i, code in enumerate(codes, start=1):
            if code == -1:
                continue
            value = strtol_whole(self.arg(i))
            if value is None or value != code:
                return False
        return True

    def read_response_and_check(self, timeout_ms: float = ATCOMMAND_TIMEOUT_MS * SLOW, success: str = "OK",
                                error: str = "ERROR", wait_line_feed: bool = True, codes: tuple[int, ...] = ()) -> bool:
        start = time.monotonic()
        self.off = 0                                # ClearReadBufferOffset()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            if not self.uart.available():
                time.sleep(0.0005)
                continue
            if not self.read_line() and wait_line_feed:
                continue
            response = self.response()
            if self.multi(response, error):
                return False
            if self.multi(response, success):
                if not codes:
                    return True
                return self.check_return_codes(codes)
        return False

    def read_response_ok(self) -> bool:
        return self.read_response_and_check()

    def send(self, command: str, timeout_ms: float = ATCOMMAND_TIMEOUT_MS * SLOW, success: str = "OK",
             error: str = "ERROR", wait_line_feed: bool = True, codes: tuple[int, ...] = ()) -> bool:
        self.uart.write(command + "\r")
        return self.read_response_and_check(timeout_ms, success, error, wait_line_feed, codes)

    # -- AtCommandController ------------------------------------------------------------------
    def turn_on_or_reset(self) -> bool:
        if self.send("AT"):
            return self.send("ATE0") and self.send('AT+QURCCFG="urcport","uart1"')
        raise AssertionError("the module is powered: AT must answer")

    def wait_for_ps_registration(self, timeout_ms: float) -> bool:
        def registered() -> bool:
            if self.tokenize() < 3:
                return False
            value = strtol_whole(self.arg(2))
            return value in (1, 5)
        start = time.monotonic()
        while (time.monotonic() - start) * 1000 < timeout_ms:
            if not self.send("AT+CGREG?", success="+CGREG"):
                return False
            result = registered()
            if not self.read_response_ok():
                return False
            if result:
                return True
            if not self.send("AT+CEREG?", success="+CEREG"):
                return False
            result = registered()
            if not self.read_response_ok():
                return False
            if result:
                return True
        return False

    def activate(self, apn: str = "soracom.io", user: str = "sora", password: str = "sora") -> bool:
        if not self.wait_for_ps_registration(2000):
            if not self.send(f'AT+QICSGP=1,1,"{apn}","{user}","{password}",3'):
                return False
            if not self.wait_for_ps_registration(CONNECTION_WAIT_MS):
                return False
        if not self.send("AT+QIACT=1", 15000, "OK|ERROR", "NON"):
            return False
        if not self.send("AT+QIGETERROR", success="+QIGETERROR", codes=(0,)):
            return False
        return self.read_response_ok()

    def socket_open(self, host: str, port: int) -> int:
        if not self.send("AT+QISTATE", CONNECTION_WAIT_MS, "OK|+QISTATE"):
            return -1
        while not self.response().startswith(b"OK"):
            if self.tokenize() < 2:
                return -1
            cid = strtol_whole(self.arg(1))
            if cid is None or not 0 <= cid < CONNECT_ID_NUM:
                return -1
            self.connect_ids[cid] = True
            if not self.read_response_and_check(CONNECTION_WAIT_MS, "OK|+QISTATE"):
                return -1
        cid = -1
        for i in range(CONNECT_ID_NUM):
            cid = i
            if not self.connect_ids[i]:
                break
        if not self.send(f'AT+QIOPEN=1,{cid},"TCP","{host}",{port}', CONNECTION_WAIT_MS, "OK"):
            return -1
        if not self.read_response_and_check(ATCOMMAND_TIMEOUT_MS * SLOW, "+QIOPEN", codes=(cid, 0)):
            return -1
        return cid

    def socket_close(self, cid: int) -> bool:
        if not self.send(f"AT+CLOSE={cid}", CONNECTION_WAIT_MS):
            return False
        self.connect_ids[cid] = False
        return True

    def socket_receive(self, cid: int, data: bytearray) -> int:
        if not self.send(f"AT+QIRD={cid}", 500 * SLOW, "+QIRD"):
            return -1
        if self.tokenize() < 2:
            return -1
        length = strtol_whole(self.arg(1))
        if length is None or len(data) < length:
            return -1
        if length == 0:
            return 0 if self.read_response_ok() else -1
        start = time.monotonic()
        while time.monotonic() - start < 1.0 * SLOW:
            if self.read_line():
                break
        line = self.response()
        data[:len(line) + 1] = line + b"\0"         # CheckedMemcpy(data, response, strlen + 1)
        if not self.read_response_ok():
            return -1
        return length

    def socket_send(self, cid: int, payload: bytes) -> bool:
        if not self.send(f"AT+QISEND={cid},{len(payload)}", success="> ", wait_line_feed=False):
            return False
        self.uart.write(payload)
        if not self.read_response_and_check(CONNECTION_WAIT_MS, "SEND OK"):
            return False
        return self.read_response_and_check(CONNECTION_WAIT_MS, "+QIURC")


class EcTwoOneClient:
    """EcTwoOneModuleClient: the Arduino Client PubSubClient writes to."""

    def __init__(self, at: FruityAt) -> None:
        self.at = at
        self.connect_id = -1
        self.receive_buffer = bytearray(1500)       # a member of a static object: zeroed once
        self.queue = bytearray()

    def connect(self, host: str, port: int) -> int:
        if self.connected():
            return -4
        cid = self.at.socket_open(host, port)
        if cid < 0:
            return -2
        self.connect_id = cid
        return 1

    def write(self, data: bytes) -> int:
        if not self.connected():
            return 0
        return len(data) if self.at.socket_send(self.connect_id, data) else 0

    def available(self) -> int:
        if not self.connected():
            return 0
        size = self.at.socket_receive(self.connect_id, self.receive_buffer)
        if size > 0:
            self.queue += self.receive_buffer[:size]
        return len(self.queue)

    def read(self) -> int:
        if not self.connected():
            return -1
        if self.available() <= 0:
            return -1
        return self.queue.pop(0)

    def stop(self) -> bool | None:
        if not self.connected():
            return None
        closed = self.at.socket_close(self.connect_id)
        self.connect_id = -1
        self.queue.clear()
        return closed

    def connected(self) -> bool:
        return self.connect_id >= 0


class PubSub:
    """PubSubClient (MQTT 3.1.1) as FruityMesh carries it."""

    def __init__(self, client: EcTwoOneClient, domain: str, port: int) -> None:
        self.client, self.domain, self.port = client, domain, port
        self.state = -1
        self.buffer = bytearray(512)

    def _write(self, header: int, length: int) -> bool:
        digits, n = [], length
        while True:
            d, n = n % 128, n // 128
            digits.append(d | (0x80 if n else 0))
            if not n:
                break
        llen = len(digits)
        self.buffer[4 - llen] = header
        self.buffer[5 - llen:5] = bytes(digits)
        packet = bytes(self.buffer[4 - llen:5 + length])
        return self.client.write(packet) == 1 + llen + length

    def _write_string(self, s: bytes, pos: int) -> int:
        self.buffer[pos:pos + 2] = len(s).to_bytes(2, "big")
        self.buffer[pos + 2:pos + 2 + len(s)] = s
        return pos + 2 + len(s)

    def _read_byte(self) -> int | None:
        start = time.monotonic()
        while not self.client.available():
            if time.monotonic() - start >= 15:
                return None
        return self.client.read()

    def _read_packet(self) -> int:
        first = self._read_byte()
        if first is None:
            return 0
        self.buffer[0] = first
        length, multiplier, pos = 0, 1, 1
        while True:
            digit = self._read_byte()
            if digit is None:
                return 0
            self.buffer[pos] = digit
            pos += 1
            length += (digit & 127) * multiplier
            multiplier *= 128
            if not digit & 128:
                break
        for _ in range(length):
            digit = self._read_byte()
            if digit is None:
                return 0
            if pos < 512:
                self.buffer[pos] = digit
            pos += 1
        return pos

    def connected(self) -> bool:
        rc = self.client.connected()
        if not rc and self.state == 0:
            self.state = -3
            self.client.stop()
        return rc

    def connect(self, client_id: str) -> bool:
        if self.connected():
            return True
        if self.client.connect(self.domain, self.port) != 1:
            self.state = -2
            return False
        pos = 5
        self.buffer[pos:pos + 7] = b"\x00\x04MQTT\x04"
        pos += 7
        self.buffer[pos:pos + 3] = b"\x02\x00\x0f"          # clean session, keepalive 15
        pos += 3
        pos = self._write_string(client_id.encode(), pos)
        self._write(0x10, pos - 5)
        start = time.monotonic()
        while not self.client.available():
            if time.monotonic() - start >= 15:
                self.state = -4
                self.client.stop()
                return False
        if self._read_packet() == 4:
            if self.buffer[3] == 0:
                self.state = 0
                return True
            self.state = self.buffer[3]
        self.client.stop()
        return False

    def publish(self, topic: str, payload: bytes) -> bool:
        if not self.connected():
            return False
        pos = self._write_string(topic.encode(), 5)
        self.buffer[pos:pos + len(payload)] = payload
        pos += len(payload)
        return self._write(0x30, pos - 5)

    def disconnect(self) -> bool | None:
        self.buffer[0:2] = b"\xe0\x00"
        self.client.write(bytes(self.buffer[0:2]))
        self.state = -1
        return self.client.stop()


def mqtt_broker(log: list):
    """A broker that answers CONNECT with CONNACK 0, keeps PUBLISH (QoS 0: no answer) and closes
    on DISCONNECT, as Soracom Beam / mosquitto do; `log` gets each packet."""
    def behave(conn):
        conn.sock.settimeout(60)
        pending = b""
        while True:
            data = conn.sock.recv(4096)
            if not data:
                return
            conn.add(data)
            pending += data
            while len(pending) >= 2 and len(pending) >= 2 + pending[1]:
                packet, pending = pending[:2 + pending[1]], pending[2 + pending[1]:]
                log.append(packet)
                if packet[0] == 0x10:
                    conn.sock.sendall(b"\x20\x02\x00\x00")
                elif packet[0] == 0xE0:
                    conn.close()
                    return
    return behave


CONNECT_PACKET = b"\x10\x12\x00\x04MQTT\x04\x02\x00\x0f\x00\x06testId"
PUBLISH_PACKET = b"\x30\x14\x00\x08beamdemoHello ec21"


def test_fruitymesh_soracom_beam_mqtt_publish_then_a_second_button_press(driver_port, emulator, strict_log):
    """SendFiredNodeIdListByCellular() as the button runs it.  TurnOnOrReset() with the echo on
    (the first AT's echo "AT\\r" is a line that is neither OK nor ERROR), ATE0, QURCCFG OK;
    Activate(): +CGREG: 0,1 (registered, QICSGP skipped), AT+QIACT=1 OK, +QIGETERROR: 0.
    connect("testId"): AT+QISTATE lists nothing -> id 0, OK then "+QIOPEN: 0,0"; the CONNECT
    reaches the broker byte for byte; SocketSend() then waits for "+QIURC" ('+QIURC: "recv",0':
    the CONNACK); PubSubClient's busy polling issues one AT+QIRD=0 per available(): the first
    returns "+QIRD: 4" and the CONNACK, the others "+QIRD: 0".  publish(): the PUBLISH arrives,
    but a QoS 0 publish gets no answer, so the driver's wait for "+QIURC" runs its 10 s out and
    publish() is false (the firmware's inverted `if` then goes on to disconnect()).  The
    DISCONNECT makes the broker close: '+QIURC: "closed",0' ends that wait.  stop(): "AT+CLOSE=0"
    is no Quectel command -- ERROR -- so the module keeps connectID 0 in state 4 (closing).
    A second press: AT+QIACT=1 is ERROR now (already active), accepted by "OK|ERROR"; the
    AT+QIGETERROR after it must say 0 for Activate() to go on, and the emulator does say
    "+QIGETERROR: 0,operate successfully" there (the SSL note ties AT+QIGETERROR to SSL commands
    only; what a real EC21 reports after a refused AT+QIACT is not documented);
    AT+QISTATE lists id 0, so the driver opens id 1 and MQTT connects again."""
    path, _ = driver_port
    log: list[bytes] = []
    with TcpServer(behave=mqtt_broker(log)) as broker:
        emulator.router.add_map("beam.soracom.io", 1883, "127.0.0.1", broker.port)
        uart = Uart(path)
        try:
            at = FruityAt(uart)
            client = EcTwoOneClient(at)
            mqtt = PubSub(client, "beam.soracom.io", 1883)
            assert at.turn_on_or_reset()
            assert uart.rx.startswith(b"AT\r\r\nOK\r\nATE0\r\r\nOK\r\n\r\nOK\r\n")
            assert at.activate()
            assert mqtt.connect("testId") is True and mqtt.state == 0
            assert log == [CONNECT_PACKET]
            qird = re.findall(rb"\+QIRD: (\d+)\r\n", bytes(uart.rx))
            assert qird[0] == b"4" and set(qird[1:]) == {b"0"} and len(qird) >= 9
            assert uart.tx.count(b"AT+QIRD=0\r") == len(qird)
            assert mqtt.publish("beamdemo", b"Hello ec21") is False        # no "+QIURC" within 10 s
            assert broker.wait_connection().wait_received(len(CONNECT_PACKET) + len(PUBLISH_PACKET))
            wait_for(lambda: len(log) == 2)
            assert log == [CONNECT_PACKET, PUBLISH_PACKET]
            assert mqtt.disconnect() is False                              # AT+CLOSE=0 -> ERROR
            assert log[-1] == b"\xe0\x00"
            assert uart.tx.endswith(b"AT+CLOSE=0\r") and uart.rx.endswith(b"\r\nERROR\r\n")
            assert b'+QIURC: "closed",0' in uart.rx
            # the module still holds connectID 0 (the driver never sent AT+QICLOSE); <AT_port> is the
            # port the socket was opened on (the profile's "usbmodem"), not QURCCFG's URC port
            at.uart.write("AT+QISTATE=1,0\r")
            assert at.read_response_and_check(ATCOMMAND_TIMEOUT_MS * SLOW, "+QISTATE")
            assert re.match(rb'\+QISTATE: 0,"TCP","[^"]+",1883,\d+,4,1,0,0,"usbmodem"$', at.response())
            assert at.read_response_ok()
            # second press
            mark = len(uart.tx)
            assert at.turn_on_or_reset()
            assert at.activate()
            assert mqtt.connect("testId") is True
            second = commands(uart.tx[mark:], b"\r")
            assert second[:8] == [b"AT", b"ATE0", b'AT+QURCCFG="urcport","uart1"', b"AT+CGREG?", b"AT+QIACT=1",
                                  b"AT+QIGETERROR", b"AT+QISTATE", b'AT+QIOPEN=1,1,"TCP","beam.soracom.io",1883']
            assert at.connect_ids[0] is True and client.connect_id == 1
            assert broker.wait_connection(1).wait_received(len(CONNECT_PACKET)) == CONNECT_PACKET
        finally:
            uart.close()


def test_fruitymesh_qird_data_read_as_one_line_loses_what_follows_a_cr_lf(driver_port, emulator, strict_log):
    """SocketReceive() takes AT+QIRD's data as one CR LF-terminated line and copies it with
    strlen()+1: a server answer "abc\\r\\ndef" (8 bytes, "+QIRD: 8") becomes "abc", a NUL, and three
    bytes left in receiveBuffer from before -- the driver's fault, the same on a real EC21; the
    "def" line is skipped by ReadResponseOK(), which finds the OK after it.  The module's answer
    itself is exact: "+QIRD: 8\\r\\nabc\\r\\ndef\\r\\n\\r\\nOK\\r\\n"."""
    path, _ = driver_port

    def behave(conn):
        conn.sock.settimeout(60)
        data = conn.sock.recv(64)
        conn.add(data)
        conn.sock.sendall(b"abc\r\ndef")
        conn.sock.recv(64)

    with TcpServer(behave=behave) as server:
        emulator.router.add_map("harvest.soracom.io", 8514, "127.0.0.1", server.port)
        uart = Uart(path)
        try:
            at = FruityAt(uart)
            client = EcTwoOneClient(at)
            assert at.turn_on_or_reset() and at.activate()
            assert client.connect("harvest.soracom.io", 8514) == 1
            assert client.write(b"ping") == 4                     # SEND OK, then '+QIURC: "recv",0'
            assert server.wait_connection().wait_received(4) == b"ping"
            assert client.available() == 8
            assert bytes(client.queue) == b"abc\x00\x00\x00\x00\x00"
            assert uart.rx.endswith(b"\r\n+QIRD: 8\r\nabc\r\ndef\r\n\r\nOK\r\n")
            assert client.available() == 8                        # "+QIRD: 0": nothing new
            assert uart.rx.endswith(b"\r\n+QIRD: 0\r\n\r\nOK\r\n")
        finally:
            uart.close()


# =================================================================================================
# Silicon Labs third_party_hw_drivers_extension, mikroe lte_iot2_bg96 (line-counting parser)
# =================================================================================================
class SilabsBg96:
    """at_parser_platform.c + at_parser_core.c: a command queue whose head command's callback
    judges every line by its number."""

    IN_BUFFER_SIZE = 300

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.line = bytearray()
        self.line_counter = 0
        self.queue: list[tuple[bytes, str, float]] = []
        self.state = "ready"            # ready / sending / processed / error
        self.error_code = 0
        self.response_data = b""
        self.lines: list[tuple[int, bytes]] = []
        self.deadline = 0.0
        self._data_available = False

    # -- platform -----------------------------------------------------------------------------
    def _send_cmd(self, cmd: bytes, timeout_ms: float) -> None:
        self.uart.write(cmd + b"\r")
        self.line_counter = 0
        self.deadline = time.monotonic() + timeout_ms / 1000

    def _process_byte(self, c: int) -> None:
        if not self.line:
            if c in (CR, LF):
                return
            self.line.append(c)
            return
        if len(self.line) == 1:
            if c == ord(" ") and self.line[0] == ord(">"):
                self.line.append(c)
                self._deliver(bytes(self.line))
                return
            self.line.append(c)
            return
        if c == CR:
            self._deliver(bytes(self.line))
            return
        if len(self.line) < self.IN_BUFFER_SIZE - 1:
            self.line.append(c)
        else:
            self._deliver(bytes(self.line))

    def _deliver(self, line: bytes) -> None:
        self.line = bytearray()
        self.line_counter += 1
        if self.queue and self.state == "sending":
            self.lines.append((self.line_counter, line))
            getattr(self, "_cb_" + self.queue[0][1])(line, self.line_counter)

    # -- core ---------------------------------------------------------------------------------
    def _next(self) -> None:
        self.state = "processed"

    def _error(self, code: str = "FAIL") -> None:
        self.error_code = code
        self.state = "error"

    def _report(self, line: bytes) -> None:
        self.response_data = line

    def run(self, cmds: list[tuple[bytes, str, float]], seconds: float = 30) -> tuple[str | int, bytes]:
        """at_parser_add_cmd_to_q() for each, at_parser_start_scheduler(), then the main loop
        (at_parser_process(), at_platform_process()) until the scheduler is ready again."""
        self.queue = list(cmds)
        self.error_code, self.response_data = 0, b""
        self.state = "sending"
        self._send_cmd(self.queue[0][0], self.queue[0][2])
        limit = time.monotonic() + seconds
        while time.monotonic() < limit:
            if self.state == "processed":
                self.queue.pop(0)
                if self.queue:
                    self._send_cmd(self.queue[0][0], self.queue[0][2])
                    self.state = "sending"
                else:
                    self.state = "ready"
                    return 0, self.response_data
            elif self.state == "error":
                self.queue.clear()
                self.state = "ready"
                return self.error_code, self.response_data
            elif self.state == "sending" and time.monotonic() >= self.deadline:
                self._error("TIMEOUT")
                continue
            if self.uart.available():
                self._process_byte(self.uart.read())
            else:
                time.sleep(0.001)
        raise AssertionError("scheduler never finished")

    def drain_until(self, suffix: bytes, seconds: float = 10 * SLOW) -> None:
        """The main loop keeps reading while no command runs (the lines go nowhere) -- here
        until the module's output so far ends with `suffix`."""
        limit = time.monotonic() + seconds
        while not self.uart.rx.endswith(suffix):
            if time.monotonic() >= limit:
                raise AssertionError(f"no {suffix!r}; rx tail {bytes(self.uart.rx[-120:])!r}")
            if self.uart.available():
                self._process_byte(self.uart.read())
            else:
                time.sleep(0.002)

    # -- line callbacks ---------------------------------------------------------------------
    def _cb_imei(self, line, n):
        if n == 1:
            if b"AT+GSN" not in line:
                self._error()
        elif n == 2:
            self._report(line)
        elif n == 3:
            self._next() if b"OK" in line else self._error()
        else:
            self._error()

    def _cb_infor(self, line, n):
        if n == 1:
            if b"ATI" not in line:
                self._error()
        elif n in (2, 3):
            pass
        elif n == 4:
            self._report(line) if b"Revision:" in line else self._error()
        elif n == 5:
            self._next() if b"OK" in line else self._error()
        else:
            self._error()

    def _cb_ok_error(self, line, n):
        if n == 1:
            if b"OK" in line:
                self._report(line)
                self._next()
            if b"ERROR" in line:
                self._report(line)
                self._error()
        else:
            self._error()

    def _cb_ip(self, line, n):
        if n == 1:
            if b"+QIACT:" in line:
                first = line.find(b'"')
                second = line.find(b'"', first + 1)
                self._report(line[first + 1:second - 1])      # ip_length-- : one short
            else:
                self._error()
        elif n == 2:
            self._next() if b"OK" in line else self._error()
        else:
            self._error()

    def _cb_open(self, line, n):
        if n == 1:
            if b"OK" not in line:
                self._error()
        elif n == 2:
            self._report(line)
            if b"+QIOPEN:" in line:
                comma = line.find(b",")
                m = re.match(rb"\s*[-+]?\d+", line[comma + 1:]) if comma >= 0 else None
                code = int(m.group(0)) if m else 0
                self._error() if comma < 0 or code != 0 else self._next()
            else:
                self._error()
        else:
            self._error()

    def _cb_qistate(self, line, n):
        if n == 1:
            self._report(line)
            if b"+QISTATE:" not in line:
                self._error()
        elif n == 2:
            self._next() if b"OK" in line else self._error()
        else:
            self._error()

    def _cb_send(self, line, n):
        if n == 1 and b">" in line:
            self._next()
        else:
            self._error()

    def _cb_data(self, line, n):
        if n == 1:
            if b" " not in line:
                self._error()
        elif n == 2:
            if b"SEND OK" not in line:
                self._error()
        elif n == 3:
            if b"+QIURC:" not in line:
                self._error()
        elif n == 4:
            if b"[" not in line:
                self._report(line)
                self._error()
        elif n == 5:
            self._next() if b"+QIURC:" not in line else self._error()
        else:
            self._error()

    def _cb_recv(self, line, n):
        if n == 1:
            if b"+QIRD:" not in line:
                self._report(line)
                self._error()
            else:
                space = line.find(b" ")
                m = re.match(rb"\s*[-+]?\d+", line[space + 1:]) if space >= 0 else None
                if space < 0:
                    self._error()
                elif m and int(m.group(0)) > 0:
                    self._data_available = True
        elif n == 2:
            if self._data_available:
                self._report(line)
            else:
                self._next() if b"OK" in line else self._error()
            self._data_available = False
        elif n == 3:
            self._next() if b"OK" in line else self._error()
        else:
            self._error()

    # -- mikroe_bg96.c ------------------------------------------------------------------------
    def read_imei(self):
        return self.run([(b"AT+GSN", "imei", 15000)])

    def read_infor(self):
        return self.run([(b"ATI", "infor", 15000)])

    def read_ip(self):
        return self.run([(b"AT+QIACT?", "ip", 15000)])

    def open_tcp(self, sock: int, addr: str, port: int):
        return self.run([(b'AT+QIOPEN=1,%d,"TCP","%s",%d,0,1' % (sock, addr.encode(), port), "open", 6000)])

    def send_data(self, sock: int, data: bytes, seconds: float = 30):
        return self.run([(b"AT+QISEND=%d,%d" % (sock, len(data)), "send", 15000), (data, "data", 20000)], seconds)

    def receive(self):
        return self.run([(b"AT+QIRD=11,100", "recv", 15000)])


SILABS_PAYLOAD = b'{"k":"Tm}hswZ8","d":"Hello Silabs!","t":"my_topic"}'


def test_silabs_bg96_callbacks_split_on_the_echo_the_module_starts_with(driver_port, emulator, strict_log):
    """The example never sends ATE0, and the module starts with the echo on.  Then "imei" and
    "infor" work -- their callbacks want the echo as line 1 (AT+GSN's number is line 2, ATI's
    "Revision:" line 4) --, while "ip" (line 1 must hold "+QIACT:") and "open" (line 1 must hold
    "OK") fail on the echoed command: the module opened socket 0 all the same, reported by the
    "+QIOPEN: 0,0" that arrives after the driver gave up (the driver's fault, as on a BG96)."""
    path, _ = driver_port
    with TcpServer("sink") as server:
        emulator.router.add_map("cloudsocket.hologram.io", 9999, "127.0.0.1", server.port)
        uart = Uart(path)
        try:
            bg = SilabsBg96(uart)
            err, imei = bg.read_imei()
            assert err == 0 and re.fullmatch(rb"\d{15}", imei)
            err, rev = bg.read_infor()
            assert err == 0 and rev.startswith(b"Revision: EC25")
            assert bg.lines[-5:] == [(1, b"ATI"), (2, b"Quectel"), (3, b"EC25"), (4, rev), (5, b"OK")]
            assert bg.run([(b'AT+QICSGP=1,1,"hologram","","",1', "ok_error", 15000)]) == ("FAIL", b"")
            assert bg.lines[-1] == (2, b"OK")                        # echo was line 1: "OK" too late
            bg.uart.write(b"AT+QIACT=1\r")                            # (the CLI has no command for it)
            bg.drain_until(b"AT+QIACT=1\r\r\nOK\r\n")
            err, _ = bg.read_ip()
            assert err == "FAIL" and bg.lines[-1] == (1, b"AT+QIACT?")
            bg.drain_until(b'\r\n+QIACT: 1,1,1,"10.7.157.1"\r\n\r\nOK\r\n')
            err, _ = bg.open_tcp(0, "cloudsocket.hologram.io", 9999)
            assert err == "FAIL" and bg.lines[-1][1].startswith(b'AT+QIOPEN=1,0,"TCP"')
            bg.drain_until(b"\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n")
            server.wait_connection(timeout=10 * SLOW)
        finally:
            uart.close()


def test_silabs_bg96_echo_off_opens_direct_push_but_send_cannot_succeed(driver_port, emulator, strict_log):
    """With the echo off (ATE0 typed first), "ip" reports the address one character short
    (at_parser_get_ip's ip_length--), "open" gets OK then "+QIOPEN: 0,0" (direct push), and "send"
    gets its "> " line -- the prompt parsed as a line of its own at a line's start.  The data go
    out as a "command" (the JSON, then "\\r": the module takes exactly 52 bytes and drops the
    stray CR in command state) and reach the server whole.  at_data_cb then wants the data's
    echo as line 1, which only an echoing module gives, so "SEND OK" is line 1 and the push URC
    '+QIURC: "recv",0,5' line 2, where "SEND OK" is wanted: FAIL -- although the server got the
    data and answered "[0,0]" (Hologram's reply), pushed as '+QIURC: "recv",0,5' CR LF "[0,0]"
    with no CR LF after it (BG96 TCP/IP note).  "recv" asks AT+QIRD=11,100 of a socket that was
    never opened: ERROR, reported as the response."""
    path, _ = driver_port

    def behave(conn):
        conn.sock.settimeout(60)
        got = b""
        while len(got) < len(SILABS_PAYLOAD):
            data = conn.sock.recv(256)
            if not data:
                return
            got += data
            conn.add(data)
        conn.sock.sendall(b"[0,0]")
        conn.sock.recv(16)

    with TcpServer(behave=behave) as server:
        emulator.router.add_map("cloudsocket.hologram.io", 9999, "127.0.0.1", server.port)
        uart = Uart(path)
        try:
            bg = SilabsBg96(uart)
            uart.write(b"ATE0\r")
            bg.drain_until(b"ATE0\r\r\nOK\r\n")
            uart.write(b'AT+QICSGP=1,1,"hologram","","",1;+QIACT=1\r')
            bg.drain_until(b"ATE0\r\r\nOK\r\n\r\nOK\r\n")
            err, ip = bg.read_ip()
            assert err == 0 and ip == b"10.7.157."                  # "10.7.157.1", one short
            err, urc = bg.open_tcp(0, "cloudsocket.hologram.io", 9999)
            assert err == 0 and urc == b"+QIOPEN: 0,0"
            err, _ = bg.send_data(0, SILABS_PAYLOAD)
            assert err == "FAIL"
            assert bg.lines[-3:] == [(1, b"> "), (1, b"SEND OK"), (2, b'+QIURC: "recv",0,5')]
            assert server.wait_connection().wait_received(len(SILABS_PAYLOAD)) == SILABS_PAYLOAD
            assert uart.tx.endswith(SILABS_PAYLOAD + b"\r")
            bg.drain_until(b'\r\n+QIURC: "recv",0,5\r\n[0,0]')
            assert uart.rx.endswith(b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0,5\r\n[0,0]')
            assert bytes(bg.line) == b"[0,0]"                       # no CR yet: a line still open
            err, response = bg.receive()
            assert err == "FAIL" and response == b"[0,0]" and bg.lines[-1] == (1, b"[0,0]")
            bg.drain_until(b"\r\nERROR\r\n")                      # the AT+QIRD=11,100 answer
        finally:
            uart.close()


def test_silabs_bg96_listener_opened_on_0_and_closed_on_11(driver_port, strict_log):
    """The CLI's "opens" / "closes" (echo off): bg96_nb_open_connection() with "TCP LISTENER"
    sends AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,2020,0 (OK, "+QIOPEN: 0,0") and then
    AT+QISTATE=0,1, whose first line is reported: the listener in state 3 on local port 2020.
    close_server() builds its descriptor with socket 11, so AT+QICLOSE=11 closes nothing (OK:
    nothing open there) -- the listener on 0 stays (the example's fault, the same on a BG96)."""
    path, _ = driver_port
    uart = Uart(path)
    try:
        bg = SilabsBg96(uart)
        uart.write(b'ATE0;+QICSGP=1,1,"hologram","","",1;+QIACT=1\r')
        bg.drain_until(b"\r\nOK\r\n")
        err, state = bg.run([(b'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,2020,0', "open", 6000),
                             (b"AT+QISTATE=0,1", "qistate", 15000)])
        assert err == 0
        assert state == b'+QISTATE: 0,"TCP LISTENER","127.0.0.1",0,2020,3,1,0,0,"usbmodem"'
        err, response = bg.run([(b"AT+QICLOSE=11", "ok_error", 6000)])
        assert err == 0 and response == b"OK"
        err, state = bg.run([(b"AT+QISTATE=0,1", "qistate", 15000)])
        assert err == 0 and state.startswith(b'+QISTATE: 0,"TCP LISTENER"')
    finally:
        uart.close()
