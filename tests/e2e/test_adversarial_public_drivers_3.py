"""Adversarial tests: a third set of public host code that drives a Quectel EC2x (EC21/EC25, and
the EC200S whose SSL/TCP command set is the EC2x one) through AT+QIOPEN / AT+QISEND(EX) / AT+QIRD
/ AT+QSSLCFG / AT+QSSLOPEN / AT+QSSLSEND / AT+QFUPL, replayed through the pty with its own line
endings, waits and parsers against loopback peers (OpenSSL for TLS).  (Earlier files:
test_adversarial_public_drivers.py -- TinyGSM, Mbed, FreeRTOS; _2.py -- bg9x_ssl_zephyr, Azure
EWF, Twilio; test_adversarial_rtthread_espmodem.py -- RT-Thread, esp-modem, Zephyr in-tree;
test_adversarial_ml302_drivers.py -- ML302 hosts.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- Hologram's Python SDK, hologram-io/hologram-python: Hologram/Network/Modem/Modem.py
  (modemwrite(): "AT", the command, "=", the value and "\\r\\n" as separate flushed writes, a
  non-str value handed to pyserial as is; process_response(): pyserial readline() per line,
  "OK" / "ERROR" / "+CME ERROR:" final, a "+" line whose name is not the command's goes to
  handleURC(), an "AT<cmd>" line is echo; checkURC(): readline with timeout 0 while lines start
  with "+"; _command_result()) and the Quectel classes Hologram/Network/Modem/EC21.py and
  Quectel.py (init_serial_commands(): E0, +CMEE=2, +CPIN?, +CTZU=1, +CTZR=1, +CPMS, +CMGF=0,
  +CNMI=2,1, +CREG=2, +CGREG=2; _is_pdp_context_active() = CREG/CGREG registered and field 1 of
  "+QIACT: "; _set_up_pdp_context(): AT+QICSGP=1,1,"<apn>","","",1, AT+QIACT=1;
  connect_socket(): AT+QIOPEN=1,0,"TCP","<host>",<port>,0,1 (direct push); write_socket():
  AT+QISENDEX=<id>,"<hex>" in chunks of 510 hex digits, each expected to end in OK;
  handleURC(): "+QIOPEN: " -> write state, '+QIURC: "recv",<id>,<len>' -> the payload is the next
  readline(5), '+QIURC: "closed"'; close_socket(): AT+QICLOSE=<socket_identifier int>;
  _tear_down_pdp_context(): AT+QIACT=0).
- Alibaba Cloud IoT LinkSDK's AT adapter, as vendored in aqvq/ebike-positioning-system:
  firmware/libraries/LinkSDk/portfiles/aiot_port/at/aiot_at_api.c + aiot_at_api.h (commands end
  "\\r\\n"; core_at_hal_process(): UART chunks into a 128-byte line buffer, a line ends at the
  first "\\r\\n", else at ">" (2 bytes consumed), the data-URC prefix is matched with strstr and
  sscanf(fmt) only when no "\\r\\n" precedes it, then exactly <len> raw bytes go to the link's ring
  buffer; core_at_wait_resp(): success when strstr(all lines so far, item.rsp), failure when
  strstr(..., "ERROR"), 10 s; core_at_commands_send_sync(): a failed item is sent again, 3 tries
  in all, then the list stops; aiot_at_nwk_connect(): the SSL list first (its result ignored),
  then the open; aiot_at_nwk_send(): 1460-byte slices; AT_SOCKET_ID_START 1) with
  module/quectel_ec200s_ssl.c (AT+QSSLCFG sslversion 1,1 / ciphersuite 1,0X0035 / cacert
  1,"UFS:cacert.pem" / seclevel 1,1, then AT+QFOPEN="cacert.pem",1,1 + AT+QFWRITE=1,<len> +
  AT+QFCLOSE=1 to write the CA; AT+QSSLOPEN=1,1,<id>,"<host>",<port>,1 matched on "+QSSLOPEN";
  AT+QSSLSEND=<id>,<len> -> ">" -> data -> "SEND OK"; '+QSSLURC: "recv",%d,%d\\r\\n' data prefix;
  AT+QSSLCLOSE=<id>) and module/quectel_ec200s_tcp.c (AT+QIOPEN=1,<id>,"TCP",...,0,1 matched on
  "+QIOPEN", AT+QISEND, '+QIURC: "recv",%d,%d\\r\\n', AT+QICLOSE).
- Seeed's Wio LTE library (EC21), SeeedJP/WioLTEforArduino: src/Internal/AtSerial.cpp
  (WriteCommand(): command + CR; ReadResponse(): lines end at CR LF, lines that do not match the
  pattern are dropped, a pattern without "$" is also tried on the partial line after every byte,
  READ_BYTE_TIMEOUT 10 ms between the bytes of a line; ReadBinary(): exactly n bytes) and
  src/WioLTE.cpp (TurnOnOrReset(): AT until OK, Reset() -> "^RDY$", AT, ATE0,
  AT+QURCCFG="urcport","uart1", AT+QSCLK=1 "^(OK|ERROR)$", then ReadResponse("^\\\\+CPIN: READY$",
  10000); Activate(): AT+CGREG? / AT+CEREG?, AT+QICSGP only when not registered, AT+QIACT=1
  "^(OK|ERROR)$"; SocketOpen(): AT+QISTATE? for the lowest free connectID,
  AT+QIOPEN=1,<id>,"TCP","<host>",<port> (no local port, no access mode) -> "^OK$" ->
  "^\\\\+QIOPEN: <id>,0$"; SocketSend(): AT+QISEND=<id>,<n> -> "^>" -> bytes -> "^SEND OK$";
  SocketReceive(): AT+QIRD=<id> (no length) -> "^\\\\+QIRD: (.*)$" -> ReadBinary(n) -> "^OK$",
  polled every 100 ms; SocketClose(): AT+QICLOSE=<id>).  Its issue #5 holds a real EC21-J
  start-up log with millisecond stamps (RDY at 15317, +CFUN: 1 at 15445, AT+CPIN? answered
  +CME ERROR: 10 then 14 until +CPIN: READY at 15673, AT+QSCLK=1 answered ERROR).
- twilio/breakout-massive-iot at 7397ba0, src/modem/OwlModemSSLBG96.cpp -- the later version
  with `force` (test_adversarial_public_drivers_2.py replays the earlier one): setServerCA() /
  setDeviceCert() / setDevicePkey() first ask AT+QFOPEN="ssl_*.pem",2 (open read-only: an error
  when the file is missing) and, when it answers OK, take the handle from "+QFOPEN: " and send
  AT+QFCLOSE=<handle> instead of deleting and uploading the file again; then
  AT+QSSLCFG=...,0,"UFS:ssl_*.pem".  Line handling as src/modem/OwlModemAT.cpp (command +
  "\r\n", lines "\r\n...\r", data after CONNECT in 100-byte pieces, one per spin).
- A MicroPython EC21 driver for the same board, ciniml/mpy-wiolte wiolte.py (LTEModule:
  write_command(): command, then "\\r" as a second write; read_response_into(): a state machine
  that only takes a response framed CR LF <text> CR LF (a text with no leading CR LF is skipped);
  wait_response(prefix); execute_command() until a response equal to OK (or ERROR for
  AT+QSCLK=1); turn_on_or_reset(): RDY, AT, ATE0, AT+QURCCFG, AT+QSCLK=1, then AT+CPIN? every
  second until OK; activate(): AT+CGREG? split at ',', AT+QICSGP=1,1,...,1, AT+QIACT=1,
  AT+QIACT?; socket_open(): AT+QISTATE?, AT+QIOPEN=1,<id>,"TCP","<host>",<port>,0,0 ->
  "+QIOPEN: <id>,0"; socket_send(): wait_prompt(b"> ") byte by byte, then "SEND OK";
  socket_receive(): AT+QIRD=<id>,<len> -> "+QIRD: " -> readinto exactly n -> OK).

Every host name dialled is routed to 127.0.0.1."""
from __future__ import annotations

import binascii
import re
import threading
import time

import pytest
import serial

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import TCP_HOST, TCP_PORT

# The drivers' own waits are multiplied by this where they only bound an answer that comes at
# once: a loaded machine must not turn a late but exact answer into a driver timeout.  Waits a
# driver is expected to sit out (an answer it will never match) are scaled down instead, each
# saying so.
SLOW = 3

# Bytes a length-framed reader must pass through untouched (no NUL-free guarantee, no line ends).
TRICKY = (b"HTTP/1.1 200 OK\r\n\r\nOK\r\n+QIURC: \"recv\",0,3\r\nERROR\r\n> \x00\xff\x1a\x1b"
          + b"+QSSLURC: \"recv\",1,4\r\n+QIRD: 99\r\nSEND OK\r\n" + bytes(range(0x20, 0x7f)))


class WireLog:
    """What a driver wrote and read, for assertions on the exact bytes."""

    def __init__(self) -> None:
        self.tx = bytearray()
        self.rx = bytearray()


# =================================================================================================
# hologram-io/hologram-python: Modem.py + EC21.py / Quectel.py
# =================================================================================================
class NetworkError(Exception):
    """Exceptions.HologramError.NetworkError"""


class HologramEC21:
    """Hologram's Modem with the Quectel EC21 overrides, on pyserial exactly as the SDK opens it
    (9600 baud, timeout 1 s, write_timeout 1 s).  ModemResult values as the SDK names them."""

    OK, ERROR, TIMEOUT, INVALID, NOMATCH = "OK", "Error", "Timeout", "Invalid", "NoMatch"
    SOCKET_INIT, SOCKET_WRITE_STATE, SOCKET_RECEIVE_READ, SOCKET_SEND_READ, SOCKET_CLOSED = range(5)

    def __init__(self, path: str, apn: str = "hologram", recv_line_timeout: float = 5,
                 send_timeout: float = 10) -> None:
        self.serial_port = serial.Serial(path, baudrate=9600, bytesize=8, parity="N", stopbits=1,
                                         timeout=1, write_timeout=1)
        self.timeout = 1
        self._apn = apn
        self.recv_line_timeout = recv_line_timeout        # handleURC's readline(5)
        self.send_timeout = send_timeout                  # write_socket's set(..., timeout=10)
        self.response: list[str] = []
        self.result = self.OK
        self.urc_state = self.SOCKET_INIT
        self.socket_identifier = 0
        self.last_read_payload_length = 0
        self.urc_response = ""
        self.unhandled_urcs: list[str] = []
        self.errors: list[str] = []                       # the SDK's logger.error lines
        self.wire = WireLog()

    def close(self) -> None:
        self.serial_port.close()

    # -- the three methods that touch the port ----------------------------------------------------
    def _readline(self, timeout=None) -> str:
        if timeout is not None:
            self.serial_port.timeout = timeout
        raw = self.serial_port.readline()
        self.wire.rx += raw
        if timeout is not None:
            self.serial_port.timeout = self.timeout
        return raw.decode("utf8")

    def _write_and_flush(self, message) -> None:
        # A str is encoded; anything else goes to pyserial as it is (serial.to_bytes: an int n is
        # bytes(bytearray(n)), i.e. n NUL bytes -- none for 0).
        raw = message.encode() if isinstance(message, str) else serial.to_bytes(message)
        self.wire.tx += raw
        self.serial_port.write(raw)
        self.serial_port.flush()

    # -- Modem.py ---------------------------------------------------------------------------------
    def modemwrite(self, cmd, at=False, seteq=False, read=False, end=False) -> None:
        if at:
            self._write_and_flush("AT")
        self._write_and_flush(cmd)
        if seteq:
            self._write_and_flush("=")
        if read:
            self._write_and_flush("?")
        if end:
            self._write_and_flush("\r\n")

    def checkURC(self) -> None:
        while True:
            line = self._readline(0)
            if line and line.startswith("+"):
                self.handleURC(line.rstrip("\r\n"))
            else:
                return

    def process_response(self, cmd: str, timeout=None) -> str:
        self.response = []
        while True:
            line = self._readline(timeout)
            if not line:
                return self.TIMEOUT
            line = line.rstrip("\r\n")
            if not line:
                continue
            if line == "ERROR":
                return self.ERROR
            if line.startswith(("+CME ERROR:", "+CMS ERROR:")):
                self.response.append(line)
                return self.ERROR
            if line == "OK":
                return self.OK
            if line.startswith("+"):
                if line.lower().startswith(cmd.lower() + ": "):
                    self.response.append(line)
                else:
                    self.handleURC(line)
            elif line.startswith("AT" + cmd):
                continue                                  # echo
            else:
                self.response.append(line)

    def _command_result(self):
        if self.result == self.OK and len(self.response) == 1:
            return self.result, self.response[0]
        return self.result, self.response

    def command(self, cmd="", value=None, timeout=None, read=False):
        seteq = False
        if cmd.endswith("?"):
            read = True
            if cmd.endswith("=?"):
                cmd, seteq = cmd[:-2], True
            else:
                cmd = cmd[:-1]
        self.checkURC()
        if value is None:
            self.modemwrite(cmd, at=True, read=read, end=True, seteq=seteq)
        elif read:
            self.result = self.INVALID
            return self._command_result()
        else:
            self.modemwrite(cmd, at=True, seteq=True)
            self.modemwrite(value, end=True)
        self.result = self.process_response(cmd, timeout)
        return self._command_result()

    def set(self, cmd, value, timeout=None):
        return self.command(cmd, value, timeout)

    def read(self, cmd):
        return self.command(cmd, None, read=True)

    def check_registered(self, cmd: str) -> bool:
        ok, r = self.read(cmd)
        if ok != self.OK:
            return False
        r = r[-1] if isinstance(r, list) else r
        fields = r.lstrip(cmd).lstrip(": ").split(",")
        return int(fields[1]) in (1, 5)

    # -- EC21.py / Quectel.py -----------------------------------------------------------------------
    def init_serial_commands(self) -> list:
        results = [self.command("E0"), self.command("+CMEE", "2"), self.command("+CPIN?"),
                   self.command("+CTZU", "1"), self.command("+CTZR", "1"),
                   self.command("+CPMS", '"ME","ME","ME"'), self.command("+CMGF", "0"),
                   self.command("+CNMI", "2,1"), self.command("+CREG", "2"),
                   self.command("+CGREG", "2")]
        return [ok for ok, _ in results]

    def is_registered(self) -> bool:
        return self.check_registered("+CREG") or self.check_registered("+CGREG")

    def _is_pdp_context_active(self) -> bool:
        if not self.is_registered():
            return False
        ok, r = self.command("+QIACT?")
        if ok == self.OK:
            try:
                return int(r.lstrip("+QIACT: ").split(",")[1]) == 1
            except (IndexError, ValueError, AttributeError):
                pass                                      # logged by the SDK
        return False

    def create_socket(self) -> None:
        if self._is_pdp_context_active():
            return
        self.set("+QICSGP", f'1,1,"{self._apn}","","",1')
        ok, _ = self.set("+QIACT", "1", timeout=30)
        if ok != self.OK:
            raise NetworkError("Failed PDP context setup")

    def connect_socket(self, host: str, port: int) -> None:
        self.command("+QIOPEN", '1,0,"TCP","%s",%d,0,1' % (host, port))

    def write_socket(self, data: bytes) -> None:
        hexdata = binascii.hexlify(data)
        for i in range(0, len(hexdata), 510):
            value = '%d,"%s"' % (self.socket_identifier, hexdata[i:i + 510].decode())
            ok, _ = self.set("+QISENDEX", value, timeout=self.send_timeout)
            if ok != self.OK:
                raise NetworkError("Failed to write to socket")

    def wait_open(self, deadline: float) -> None:
        """send_message()'s first loop: checkURC() until the open's URC put the write state."""
        while self.urc_state != self.SOCKET_WRITE_STATE:
            assert time.monotonic() < deadline, "the +QIOPEN URC never came"
            self.checkURC()
            time.sleep(0.001)

    def send_message(self, data: bytes, timeout: float = 10) -> str:
        self.wait_open(time.monotonic() + 10 * SLOW)
        self.write_socket(data)
        deadline = time.monotonic() + timeout
        while self.urc_state != self.SOCKET_SEND_READ:
            self.checkURC()
            if self.urc_state != self.SOCKET_SEND_READ:
                if time.monotonic() > deadline:
                    raise TimeoutError("Timeout occurred waiting for message status")
                time.sleep(0.05)
        return self.urc_response

    def close_socket(self) -> None:
        ok, _ = self.command("+QICLOSE", self.socket_identifier)
        if ok != self.OK:
            self.errors.append("Failed to close socket")
        self.urc_state = self.SOCKET_CLOSED
        self._tear_down_pdp_context()

    def _tear_down_pdp_context(self) -> None:
        if not self._is_pdp_context_active():
            return
        ok, _ = self.set("+QIACT", "0", timeout=30)
        if ok != self.OK:
            self.errors.append("PDP Context tear down failed")

    def handleURC(self, urc: str) -> None:
        if urc.startswith("+QIOPEN: "):
            fields = urc.lstrip("+QIOPEN: ").split(",")
            if int(fields[-1]) != 0:
                raise NetworkError("Failed to open socket")
            self.urc_state = self.SOCKET_WRITE_STATE
            self.socket_identifier = int(fields[0])
            return
        if urc.startswith("+QIURC: "):
            fields = urc.lstrip("+QIURC: ").split(",")
            if fields[0] == '"recv"':
                self.urc_state = self.SOCKET_SEND_READ
                self.socket_identifier = int(fields[1])
                self.last_read_payload_length = int(fields[2])
                self.urc_response = self._readline(self.recv_line_timeout)
            if fields[0] == '"closed"':
                self.urc_state = self.SOCKET_CLOSED
                self.socket_identifier = int(fields[-1])
            return
        self.unhandled_urcs.append(urc)


def test_hologram_ec21_session_qisendex_answer_and_close_with_an_int_id(emulator, driver_port, peer_factory):
    """Hologram's EC21 class from start-up to close against a TCP peer standing in for
    cloudsocket.hologram.io:9999.

    Disagreements, all the driver's (the emulator's answers are the module's):
    - AT+QISENDEX is answered `SEND OK` (BG96 TCP/IP Application Note §2.2.9, AT+QISENDEX: SEND OK
      / SEND FAIL / ERROR -- the set docs/behaviour.md follows), never `OK`; write_socket()
      expects OK, so process_response() reads on until its timeout and the SDK raises "Failed
      to write to socket" after the first 255-byte chunk -- which the module did send.
    - close_socket() hands pyserial the int socket_identifier: 0 becomes no bytes at all, so the
      line is `AT+QICLOSE=` with an empty <connectID>: ERROR, and the socket stays open.
    - _tear_down_pdp_context() sends AT+QIACT=0: context 0 does not exist (1-16): ERROR.
    - of the SMS set-up, +CMGF and +CNMI are answered OK (kept, read back), +CPMS ERROR: the
      emulator stores no messages (docs/behaviour.md); the SDK ignores those results."""
    path, _ = driver_port
    peer = peer_factory()
    emulator.router.add_map("cloudsocket.hologram.io", 9999, "127.0.0.1", peer.port)
    # send_timeout: the driver's 10 s wait for an OK that never comes, scaled down (it is sat
    # out whatever its length).
    drv = HologramEC21(path, send_timeout=1.0)
    try:
        # The first command goes out with the module's echo still on: the echo line is skipped.
        assert drv.init_serial_commands() == ["OK", "OK", "OK", "OK", "OK",
                                              "Error", "OK", "OK", "OK", "OK"]
        assert drv.wire.tx.startswith(b"ATE0\r\n")
        assert drv.command("+CPIN?") == ("OK", "+CPIN: READY")

        # Registered (AT+CREG? in the +CREG=2 form: field 1), context not active: "AT+QIACT?"
        # lists nothing, the SDK's parse of an empty list fails and counts as inactive.
        assert drv.is_registered()
        assert drv._is_pdp_context_active() is False
        drv.create_socket()
        assert drv._is_pdp_context_active() is True

        drv.connect_socket("cloudsocket.hologram.io", 9999)
        assert drv.result == "OK"
        message = bytes(range(256)) + b"A" * 44              # 300 bytes: two QISENDEX chunks
        mark = len(drv.wire.rx)
        with pytest.raises(NetworkError, match="Failed to write to socket"):
            drv.send_message(message)
        assert drv.socket_identifier == 0 and drv.urc_state == drv.SOCKET_WRITE_STATE
        # Only the first chunk went out: 510 hex digits, one line, answered SEND OK and no OK.
        sendex = [l for l in bytes(drv.wire.tx).split(b"\r\n") if l.startswith(b"AT+QISENDEX=")]
        assert sendex == [b'AT+QISENDEX=0,"' + binascii.hexlify(message[:255]) + b'"']
        assert bytes(drv.wire.rx[mark:]).endswith(b"\r\nSEND OK\r\n")
        assert b"OK\r\n" not in bytes(drv.wire.rx[mark:]).replace(b"SEND OK\r\n", b"")
        deadline = time.monotonic() + 5 * SLOW
        while len(peer.got) < 255 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        assert bytes(peer.got) == message[:255]

        mark = len(drv.wire.tx)
        drv.close_socket()
        tx = bytes(drv.wire.tx[mark:])
        assert b"AT+QICLOSE=\r\n" in tx                      # the int 0 wrote nothing
        assert b"AT+QIACT=0\r\n" in tx
        assert drv.errors == ["Failed to close socket", "PDP Context tear down failed"]
        # The connection is still there: the module was never asked to close it.
        ok, state = drv.command("+QISTATE", "1,0")
        assert ok == "OK" and re.fullmatch(
            r'\+QISTATE: 0,"TCP","[\d.]+",9999,\d+,2,1,0,1,"usbmodem"', state), state
        assert not peer.eof.is_set()
    finally:
        drv.close()


def test_hologram_push_payload_is_read_with_readline(emulator, driver_port, peer_factory):
    """Direct push (access mode 1): Hologram reads the payload of '+QIURC: "recv",0,<len>' with
    one readline(5).  The module ends the pushed data with CR LF, as real Quectel modules do
    (docs/behaviour.md, Direct push: `+QIURC: "recv",<id>,<len><CR><LF><data><CR><LF>`), so the
    readline ends at the payload's own CR LF at once -- the SDK's 5 s timeout is not sat out --
    and returns the payload with that CR LF: EC21.py hands it on as read ("[0,0]\r\n"),
    Quectel.py rstrip()s it.  A payload followed by the peer's close: the readline takes the
    payload and its CR LF only; checkURC() then meets the empty line in front of the "closed"
    URC and returns, and a later checkURC() reads the "closed" URC."""
    path, _ = driver_port
    peer = peer_factory()
    emulator.router.add_map("cloudsocket.hologram.io", 9999, "127.0.0.1", peer.port)
    drv = HologramEC21(path)                           # the SDK's readline(5): never sat out
    try:
        drv.command("E0")
        drv.create_socket()
        drv.connect_socket("cloudsocket.hologram.io", 9999)
        drv.wait_open(time.monotonic() + 10 * SLOW)
        assert drv.socket_identifier == 0

        peer.send(b"[0,0]")
        deadline = time.monotonic() + 5 * SLOW
        slowest = 0.0
        while drv.urc_state != drv.SOCKET_SEND_READ:
            assert time.monotonic() < deadline, bytes(drv.wire.rx)
            t0 = time.monotonic()
            drv.checkURC()
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.01)
        assert drv.last_read_payload_length == 5
        assert drv.urc_response == "[0,0]\r\n"            # the line, ended by the data's CR LF
        assert slowest < drv.recv_line_timeout            # ... not by the readline's timeout

        drv.urc_state = drv.SOCKET_WRITE_STATE
        peer.send(b"[1,0]")
        peer.close()
        deadline = time.monotonic() + 5 * SLOW
        while drv.urc_state != drv.SOCKET_CLOSED:
            assert time.monotonic() < deadline, bytes(drv.wire.rx)
            drv.checkURC()
            time.sleep(0.01)
        assert drv.urc_response == "[1,0]\r\n"            # its own CR LF, nothing of the close
        assert drv.socket_identifier == 0
        assert bytes(drv.wire.rx).endswith(b'[1,0]\r\n\r\n+QIURC: "closed",0\r\n')
        assert drv.unhandled_urcs == []
    finally:
        drv.close()


# =================================================================================================
# Alibaba Cloud LinkSDK AT adapter (aiot_at_api.c + quectel_ec200s_ssl.c / _tcp.c)
# =================================================================================================
def _cstr(buf: bytes | bytearray) -> bytes:
    """What strstr() sees of a char buffer: up to its first NUL."""
    return bytes(buf).split(b"\0", 1)[0]


def _scan_recv(head: bytes, prefix: bytes) -> tuple[int, int] | None:
    """sscanf(head, "<prefix>,%d,%d\\r\\n", &id, &len) == 2"""
    m = re.match(re.escape(prefix) + rb",\s*(-?\d+),\s*(-?\d+)", head)
    return (int(m.group(1)), int(m.group(2))) if m else None


class AliyunAt:
    """aiot_at_api.c's engine: a UART receive path fed with the chunks the pty gives, and the
    command lists run synchronously (the receive path is pumped while a list waits)."""

    RSP_LEN_MAXIMUM = 128
    RX_TIMEOUT = 10.0
    RETRY = 3
    MAX_PACKAGE = 1460
    SOCKET_ID_START = 1
    RB_SIZE = 4096

    def __init__(self, path: str, device: dict) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.device = device
        self.rsp_buf = bytearray()                        # char rsp_buf[128] + its offset
        self.rsp_rb = bytearray()                         # lines written while a command waits
        self.cmd_content = None
        self.reader_link, self.reader_remain = 0, 0
        self.links = {i: {"status": "DISABLE", "rb": bytearray()} for i in range(5)}
        self.wire = WireLog()
        self.sent: list[bytes] = []                       # every command item written
        self.waits: list[tuple[bytes, str, bytes]] = []   # (item, result, what the wait saw)
        self.overflows: list[bytes] = []                  # answers past the 128-byte rsp[]
        self.lines: list[bytes] = []

    def close(self) -> None:
        self.ser.close()

    # -- receive path -----------------------------------------------------------------------------
    def pump(self) -> None:
        chunk = self.ser.read(self.ser.in_waiting or 1)
        if chunk:
            self.wire.rx += chunk
            self.hal_recv_handle(chunk)

    def hal_recv_handle(self, data: bytes) -> None:
        while data:
            used = self.hal_process(data)
            data = data[used:]

    def hal_process(self, data: bytes) -> int:
        size = len(data)
        res = size
        if self.reader_remain:
            n = min(self.reader_remain, size)
            rb = self.links[self.reader_link]["rb"]
            assert len(rb) + n <= self.RB_SIZE, "ring buffer overflow (the SDK drops the write)"
            rb += data[:n]
            self.reader_remain -= n
            return n
        size = min(size, self.RSP_LEN_MAXIMUM - len(self.rsp_buf))
        self.rsp_buf += data[:size]
        offset = len(self.rsp_buf)
        n = self.recv_prefix_match(bytes(self.rsp_buf))
        if n > 0:
            self.rsp_buf.clear()
            return n - (offset - size)
        text = _cstr(self.rsp_buf)
        end = text.find(b"\r\n")
        if end < 0:
            end = text.find(b">")
        if end >= 0:
            line_len = end + 2
            self.process_line(bytes(self.rsp_buf[:line_len]))
            self.rsp_buf.clear()
            res = line_len - (offset - size)
        return res

    def recv_prefix_match(self, buf: bytes) -> int:
        prefix, fmt = self.device["recv_prefix"], self.device["recv_prefix"] + b",%d,%d\r\n"
        text = _cstr(buf)
        head = text.find(prefix)
        if head < 0:
            return 0
        first_line_end = text.find(b"\r\n")
        if 0 <= first_line_end < head:
            return 0
        got = _scan_recv(buf[head:], prefix)
        if got is None:
            return 0
        body_len = len(fmt.replace(b"%d,%d", b"%d,%d" % got))
        if body_len > len(buf) - head:
            return 0
        self.reader_link, self.reader_remain = got[0] - self.SOCKET_ID_START, got[1]
        return body_len

    def process_line(self, line: bytes) -> None:
        self.lines.append(line)
        if self.cmd_content is not None:
            self.rsp_rb += line

    # -- command lists ------------------------------------------------------------------------------
    def wait_resp(self, item: dict) -> bool:
        rsp = bytearray()
        deadline = time.monotonic() + item.get("timeout", self.RX_TIMEOUT) * SLOW
        while time.monotonic() < deadline:
            self.pump()
            if not self.rsp_rb:
                time.sleep(0.005)
                continue
            rsp += self.rsp_rb
            self.rsp_rb.clear()
            if len(rsp) > self.RSP_LEN_MAXIMUM:
                self.overflows.append(bytes(rsp))
            handler = item.get("handler")
            if handler is not None:
                verdict = handler(bytes(rsp))
                if verdict is not None:
                    self.waits.append((item["cmd"], "ok" if verdict else "failed", bytes(rsp)))
                    return verdict
            if item["rsp"] in _cstr(rsp):
                self.waits.append((item["cmd"], "ok", bytes(rsp)))
                return True
            if b"ERROR" in _cstr(rsp):
                self.waits.append((item["cmd"], "failed", bytes(rsp)))
                return False
        self.waits.append((item["cmd"], "timeout", bytes(rsp)))
        return False

    def send_sync(self, items: list[dict]) -> bool:
        self.rsp_rb.clear()
        retry, i = self.RETRY, 0
        while i < len(items):
            item = items[i]
            self.cmd_content = item
            self.wire.tx += item["cmd"]
            self.sent.append(item["cmd"])
            self.ser.write(item["cmd"])
            if not self.wait_resp(item):
                retry -= 1
                if retry > 0:
                    continue
                self.cmd_content = None
                return False
            retry = self.RETRY
            self.cmd_content = None
            i += 1
        return True

    # -- the public API ------------------------------------------------------------------------------
    def bootstrap(self) -> bool:
        return self.send_sync(self.device["module_init"]) and self.send_sync(self.device["ip_init"])

    def nwk_open(self) -> int:
        for i, link in self.links.items():
            if link["status"] == "DISABLE":
                link["status"], link["rb"] = "DISCONN", bytearray()
                return i
        raise AssertionError("no free link")

    def set_ssl(self, link: int, ca_cert: bytes) -> bool:
        items = []
        for item in self.device["ssl"]:
            if "fmt" in item:
                item = dict(item, cmd=item["fmt"] % len(ca_cert))
            elif item["cmd"] is None:
                item = dict(item, cmd=ca_cert)
            items.append(item)
        ok = self.send_sync(items)
        if ok:
            self.links[link]["status"] = "CONN"
        return ok

    def nwk_connect(self, link: int, host: str, port: int, ca_cert: bytes = b"") -> bool:
        if self.device.get("ssl"):
            self.ssl_result = self.set_ssl(link + self.SOCKET_ID_START, ca_cert)   # ignored
        item = dict(self.device["open"], cmd=self.device["open"]["fmt"] % (
            link + self.SOCKET_ID_START, host.encode(), port))
        ok = self.send_sync([item])
        if ok:
            self.links[link]["status"] = "CONN"
        return ok

    def nwk_send(self, link: int, data: bytes) -> int:
        sent = 0
        while sent < len(data):
            piece = data[sent:sent + self.MAX_PACKAGE]
            if self.links[link]["status"] != "CONN":
                return -1
            first = dict(self.device["send"][0], cmd=self.device["send"][0]["fmt"] % (
                link + self.SOCKET_ID_START, len(piece)))
            second = dict(self.device["send"][1], cmd=piece)
            if not self.send_sync([first, second]):
                return -1
            sent += len(piece)
        return sent

    def nwk_recv(self, link: int, size: int, timeout: float) -> bytes:
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(out) < size:
            self.pump()
            rb = self.links[link]["rb"]
            take = min(len(rb), size - len(out))
            out += rb[:take]
            del rb[:take]
            if not take:
                time.sleep(0.005)
        return bytes(out)

    def nwk_close(self, link: int) -> None:
        if self.links[link]["status"] == "CONN":
            item = dict(self.device["close"], cmd=self.device["close"]["fmt"] % (
                link + self.SOCKET_ID_START))
            self.close_result = self.send_sync([item])
        self.links[link] = {"status": "DISABLE", "rb": bytearray()}


def _csq_handler(rsp: bytes):
    """at_csq_handler(): "+CSQ: %d,%d" -- rssi < 5 fails, else succeeds; waits otherwise."""
    m = re.search(rb"\+CSQ: (\d+),(\d+)", rsp)
    if m is None:
        return None
    return int(m.group(1)) >= 5


MODULE_INIT = [dict(cmd=c, rsp=b"OK") for c in (
    b"AT\r\n", b"ATE0\r\n", b"ATI\r\n", b"AT+CGSN\r\n", b"AT+CGMR\r\n", b"AT+CPIN?\r\n",
    b"AT+CIMI\r\n")] + [dict(cmd=b"AT+CSQ\r\n", rsp=b"OK", handler=_csq_handler)]
IP_INIT = [dict(cmd=b'AT+QICSGP=1,1,"UNINET","","",1\r\n', rsp=b"OK"),
           dict(cmd=b"AT+QIDEACT=1\r\n", rsp=b"OK"), dict(cmd=b"AT+QIACT=1\r\n", rsp=b"OK"),
           dict(cmd=b"AT+QIACT?\r\n", rsp=b"OK")]
EC200S_SSL = dict(
    module_init=MODULE_INIT, ip_init=IP_INIT,
    open=dict(fmt=b'AT+QSSLOPEN=1,1,%d,"%s",%d,1\r\n', rsp=b"+QSSLOPEN"),
    send=[dict(fmt=b"AT+QSSLSEND=%d,%d\r\n", rsp=b">"), dict(rsp=b"SEND OK")],
    close=dict(fmt=b"AT+QSSLCLOSE=%d\r\n", rsp=b"OK"),
    ssl=[dict(cmd=b'AT+QSSLCFG="sslversion",1,1\r\n', rsp=b"OK"),
         dict(cmd=b'AT+QSSLCFG="ciphersuite",1,0X0035\r\n', rsp=b"OK"),
         dict(cmd=b'AT+QSSLCFG="cacert",1,"UFS:cacert.pem"\r\n', rsp=b"OK"),
         dict(cmd=b'AT+QSSLCFG="seclevel",1,1\r\n', rsp=b"OK"),
         dict(cmd=b'AT+QFOPEN="cacert.pem",1,1\r\n', rsp=b"OK"),
         dict(fmt=b"AT+QFWRITE=1,%d\r\n", rsp=b"CONNECT"),
         dict(cmd=None, rsp=b"+QFWRITE:"),
         dict(cmd=b"AT+QFCLOSE=1\r\n", rsp=b"OK")],
    recv_prefix=b'+QSSLURC: "recv"')
EC200S_TCP = dict(
    module_init=MODULE_INIT, ip_init=IP_INIT,
    open=dict(fmt=b'AT+QIOPEN=1,%d,"TCP","%s",%d,0,1\r\n', rsp=b"+QIOPEN"),
    send=[dict(fmt=b"AT+QISEND=%d,%d\r\n", rsp=b">"), dict(rsp=b"SEND OK")],
    close=dict(fmt=b"AT+QICLOSE=%d\r\n", rsp=b"OK"),
    recv_prefix=b'+QIURC: "recv"')

ALIYUN_HOST, ALIYUN_PORT = "a1b2c3d4e5f.iot-as-mqtt.cn-shanghai.aliyuncs.com", 1883
MQTT_CONNECT = (b"\x10\x2c\x00\x04MQTT\x04\xc2\x00\x3c\x00\x0cdevice&a1b2c3"
                b"\x00\x06user01\x00\x08password")


def _mqtt_publish(payload: bytes) -> bytes:
    body = b"\x00\x05/a/b/" + payload
    n, length = len(body), bytearray()
    while True:
        n, digit = divmod(n, 128)
        length.append(digit | (0x80 if n else 0))
        if not n:
            return b"\x30" + bytes(length) + body


def _aliyun_bootstrap(drv: AliyunAt) -> None:
    assert drv.bootstrap(), drv.waits
    assert [w[1] for w in drv.waits] == ["ok"] * 12
    assert drv.overflows == []                            # every answer fits its rsp[128]


def test_aliyun_linksdk_ec200s_ssl_direct_push_with_a_provisioned_ca(emulator, driver_port, pki):
    """The LinkSDK SSL adapter end to end: its SSL list configures context 1 (TLS 1.0 only,
    TLS_RSA_WITH_AES_256_CBC_SHA, seclevel 1, cacert UFS:cacert.pem) and then tries to write the
    CA with AT+QFOPEN="cacert.pem",1,1 -- three parameters where the FILE notes have
    AT+QFOPEN=<filename>[,<mode>] (BG96 FILE AT Commands Manual §2.6): +CME ERROR: 400 (what a
    real EC2x answers to it is not known), tried 3 times, the list stops before QFWRITE and
    aiot_at_nwk_connect() ignores that.  With the CA provisioned beforehand (AT+QFUPL, the
    factory's way) the open, the MQTT CONNECT through "> " and the broker's pushed CONNACK and
    PUBLISH (several push URCs, bytes that look like URCs inside) reach the SDK's ring buffer
    exactly, and the server saw TLS 1.0 with AES256-SHA."""
    path, _ = driver_port
    cert = pki.issue("aliyun", ALIYUN_HOST)
    publish = _mqtt_publish(TRICKY * 20)                   # ~2.3 KB: more than one push URC
    got_connect = []

    def broker(conn) -> None:
        data = b""
        while len(data) < len(MQTT_CONNECT):
            chunk = conn.recv(timeout=10 * SLOW)
            if not chunk:
                return
            data += chunk
        got_connect.append(data)
        conn.sendall(b"\x20\x02\x00\x00" + publish)
        conn.recv(timeout=10 * SLOW)                       # until the modem closes

    with TlsServer(cert, legacy=True, handler=broker) as server:
        emulator.router.add_map(ALIYUN_HOST, ALIYUN_PORT, "127.0.0.1", server.port)
        # The factory's provisioning, before the firmware runs (as a host does it: AT+QFUPL).
        with serial.Serial(path, 115200, timeout=5 * SLOW) as factory:
            factory.write(b'AT+QFUPL="cacert.pem",%d\r' % len(pki.ca.cert_pem))
            assert factory.read_until(b"CONNECT\r\n").endswith(b"CONNECT\r\n")
            factory.write(pki.ca.cert_pem)
            assert factory.read_until(b"\r\nOK\r\n").endswith(b"\r\nOK\r\n")

        drv = AliyunAt(path, EC200S_SSL)
        try:
            _aliyun_bootstrap(drv)
            link = drv.nwk_open()
            assert drv.nwk_connect(link, ALIYUN_HOST, ALIYUN_PORT, ca_cert=pki.ca.cert_pem)
            assert drv.ssl_result is False
            qfopen = [w for w in drv.waits if w[0].startswith(b"AT+QFOPEN")]
            assert [w[1] for w in qfopen] == ["failed"] * 3
            assert not any(c.startswith((b"AT+QFWRITE", b"AT+QFCLOSE")) for c in drv.sent)
            assert drv.waits[-1][2] == b'\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n'

            assert drv.nwk_send(link, MQTT_CONNECT) == len(MQTT_CONNECT)
            assert drv.sent[-2:] == [b"AT+QSSLSEND=1,%d\r\n" % len(MQTT_CONNECT), MQTT_CONNECT]
            # The prompt's wait saw "\r\n" and "> " (a ">" line: 2 bytes); the SEND OK wait may
            # also hold the empty lines in front of the push URCs read in the same UART chunk.
            assert drv.waits[-2][2] == b"\r\n> "
            assert re.fullmatch(rb"\r\nSEND OK\r\n(\r\n)*", drv.waits[-1][2]), drv.waits[-1]
            want = b"\x20\x02\x00\x00" + publish
            assert drv.nwk_recv(link, len(want), 10 * SLOW) == want
            assert drv.reader_remain == 0
            heads = re.findall(rb'\+QSSLURC: "recv",1,(\d+)\r\n', bytes(drv.wire.rx))
            assert len(heads) >= 2 and max(map(int, heads)) <= 1500
            assert drv.nwk_recv(link, 1, 0.3) == b""       # nothing more than was sent

            drv.nwk_close(link)
            assert drv.close_result and drv.waits[-1][2] == b"\r\nOK\r\n"
            assert got_connect == [MQTT_CONNECT]
            conn = server.wait_handshake()
            assert (conn.version, conn.cipher) == ("TLSv1", "AES256-SHA")
        finally:
            drv.close()


def test_aliyun_linksdk_ec200s_ssl_without_the_ca_counts_a_failed_open_as_connected(emulator, driver_port, pki):
    """The same adapter on a modem that never got the CA: the QFOPEN write fails as above, so
    seclevel 1 names a file that does not exist and the open fails: `+QSSLOPEN: 1,552`
    (docs/behaviour.md, SSL sockets: a configured file that does not exist is 552).  The SDK
    matches "+QSSLOPEN" as a substring and takes the failure for a connection (its bug); its
    send then meets ERROR for the freed clientID, three times, and reports the failure."""
    path, _ = driver_port
    with TlsServer(pki.issue("aliyun-noca", ALIYUN_HOST), legacy=True) as server:
        emulator.router.add_map(ALIYUN_HOST, ALIYUN_PORT, "127.0.0.1", server.port)
        drv = AliyunAt(path, EC200S_SSL)
        try:
            _aliyun_bootstrap(drv)
            link = drv.nwk_open()
            assert drv.nwk_connect(link, ALIYUN_HOST, ALIYUN_PORT, ca_cert=pki.ca.cert_pem)
            assert drv.waits[-1][2] == b"\r\nOK\r\n\r\n+QSSLOPEN: 1,552\r\n"
            assert server.connections == []               # refused before any TCP
            assert drv.links[link]["status"] == "CONN"     # the SDK's verdict
            assert drv.nwk_send(link, MQTT_CONNECT) == -1
            assert drv.sent[-3:] == [b"AT+QSSLSEND=1,%d\r\n" % len(MQTT_CONNECT)] * 3
            assert [w[1:] for w in drv.waits[-3:]] == [("failed", b"\r\nERROR\r\n")] * 3
            assert MQTT_CONNECT not in bytes(drv.wire.tx)
        finally:
            drv.close()


def test_aliyun_linksdk_ec200s_tcp_push_reassembly_and_peer_close(emulator, driver_port, peer_factory):
    """The LinkSDK TCP adapter (AT+QIOPEN ...,0,1 direct push): a payload full of look-alike
    URCs, "> " and "ERROR" crosses as raw bytes behind its header; the peer's close arrives as an
    ordinary line ('+QIURC: "closed",1'), which this adapter registers no handler for; its close
    (AT+QICLOSE=1) is still answered OK."""
    path, _ = driver_port
    peer = peer_factory()
    drv = AliyunAt(path, EC200S_TCP)
    try:
        _aliyun_bootstrap(drv)
        link = drv.nwk_open()
        assert drv.nwk_connect(link, TCP_HOST, TCP_PORT)
        assert drv.waits[-1][2] == b"\r\nOK\r\n\r\n+QIOPEN: 1,0\r\n"
        assert drv.nwk_send(link, b"hello\r\nAT\r\n") == 11
        deadline = time.monotonic() + 5 * SLOW
        while bytes(peer.got) != b"hello\r\nAT\r\n":
            assert time.monotonic() < deadline, bytes(peer.got)
            time.sleep(0.01)

        peer.send(TRICKY)
        assert drv.nwk_recv(link, len(TRICKY), 10 * SLOW) == TRICKY
        peer.close()
        deadline = time.monotonic() + 5 * SLOW
        while b'+QIURC: "closed",1\r\n' not in drv.lines:
            assert time.monotonic() < deadline, drv.lines
            drv.pump()
            time.sleep(0.01)
        assert drv.nwk_recv(link, 1, 0.2) == b""
        drv.nwk_close(link)
        assert drv.close_result and drv.waits[-1][2] == b"\r\nOK\r\n"
    finally:
        drv.close()


# =================================================================================================
# SeeedJP/WioLTEforArduino: AtSerial.cpp + WioLTE.cpp
# =================================================================================================
class WioAtSerial:
    """AtSerial over the pty.  READ_BYTE_TIMEOUT, the library's 10 ms between two bytes of a
    line, is multiplied by BYTE_GAP_SCALE: what is tested is that a line arrives whole, not how
    fast a loaded machine delivers it."""

    READ_BYTE_TIMEOUT = 0.010
    # 20 (200 ms) was too little under CPU load: the echo "ATE0\r" and its "\r\nOK", or the
    # prompt's " " and "\r\nSEND OK", came more than 200 ms apart (1 run in ~25 with 3 busy
    # loops on 2 CPUs) and the line read gave up.  No test here relies on a gap ending a line.
    BYTE_GAP_SCALE = 100
    RESPONSE_MAX_LENGTH = 1024

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.buf = bytearray()
        self.wire = WireLog()
        self.dropped: list[bytes] = []                    # lines ReadResponse() skipped

    def close(self) -> None:
        self.ser.close()

    def _fill(self) -> None:
        chunk = self.ser.read(self.ser.in_waiting or 1)
        if chunk:
            self.wire.rx += chunk
            self.buf += chunk

    def _wait_available(self, start: float, timeout: float) -> bool:
        while not self.buf:
            if time.monotonic() - start >= timeout:
                return False
            self._fill()
            if not self.buf:
                time.sleep(0.0005)
        return True

    def write_command(self, command: str) -> None:
        raw = command.encode() + b"\r"
        self.wire.tx += raw
        self.ser.write(raw)

    def write_binary(self, data: bytes) -> None:
        self.wire.tx += data
        self.ser.write(data)

    def read_binary(self, n: int, timeout: float) -> bytes | None:
        out = bytearray()
        for _ in range(n):
            if not self._wait_available(time.monotonic(), timeout):
                return None
            out.append(self.buf.pop(0))
        return bytes(out)

    def _read_internal(self, pattern: str | None) -> bytes | None:
        response = bytearray()
        while True:
            if len(response) >= self.RESPONSE_MAX_LENGTH + 2:
                return None
            if not self._wait_available(time.monotonic(), self.READ_BYTE_TIMEOUT * self.BYTE_GAP_SCALE):
                return None
            response.append(self.buf.pop(0))
            if response.endswith(b"\r\n"):
                return bytes(response[:-2])
            if pattern is not None and re.search(pattern.encode(), bytes(response)):
                return bytes(response)

    def read_response(self, pattern: str, timeout: float) -> bytes | None:
        """The capture group 1 (or the line) on success, None on failure."""
        internal = None if pattern.endswith("$") else pattern
        start = time.monotonic()
        while True:
            if not self._wait_available(start, timeout):
                return None
            line = self._read_internal(internal)
            if line is None:
                return None
            m = re.search(pattern.encode(), line)
            if m:
                return m.group(1) if m.groups() else line
            self.dropped.append(line)

    def command(self, command: str, pattern: str, timeout: float) -> bytes | None:
        self.write_command(command)
        return self.read_response(pattern, timeout)


class WioLTE:
    """WioLTE.cpp's methods used here (connectIDs 0-11, polling interval 100 ms)."""

    CONNECT_ID_NUM = 12

    def __init__(self, path: str) -> None:
        self.at = WioAtSerial(path)

    def close(self) -> None:
        self.at.close()

    def is_respond(self) -> bool:
        start = time.monotonic()
        while self.at.command("AT", "^OK$", 0.5) is None:
            if time.monotonic() - start >= 2:
                return False
        return True

    def wait_rdy(self) -> bool:
        """Reset()'s second half (after the RESET pulse): "^RDY$" in 100 ms reads, 12 s."""
        start = time.monotonic()
        while self.at.read_response("^RDY$", 0.1) is None:
            if time.monotonic() - start >= 12:
                return False
        return True

    def after_reset(self, cpin_timeout: float = 10) -> dict:
        """TurnOnOrReset() from RDY on; which steps succeeded."""
        steps = {"rdy": self.wait_rdy()}
        start = time.monotonic()
        # the library's 500 ms answer waits widened (SLOW) like the socket methods': one answer
        # came later than 0.5 s under CPU load (1 run in 30); a URC in between is dropped alike
        while self.at.command("AT", "^OK$", 0.5 * SLOW) is None:
            if time.monotonic() - start >= 10:
                steps["at"] = False
                return steps
        steps["at"] = True
        steps["ate0"] = self.at.command("ATE0", "^OK$", 0.5 * SLOW) is not None
        steps["urcport"] = self.at.command('AT+QURCCFG="urcport","uart1"', "^OK$", 0.5 * SLOW) is not None
        steps["qsclk"] = self.at.command("AT+QSCLK=1", "^(OK|ERROR)$", 0.5 * SLOW) is not None
        steps["dropped_before_cpin_wait"] = list(self.at.dropped)
        steps["cpin"] = self.at.read_response("^\\+CPIN: READY$", cpin_timeout) is not None
        return steps

    def _reg_status(self, cmd: str, prefix: str):
        got = self.at.command(cmd, f"^\\+{prefix}: (.*)$", 0.5)
        if got is None:
            return None
        status = int(got.split(b",")[1])
        if self.at.read_response("^OK$", 0.5) is None:
            return None
        return status

    def wait_for_ps_registration(self) -> bool:
        for cmd, prefix in (("AT+CGREG?", "CGREG"), ("AT+CEREG?", "CEREG")):
            status = self._reg_status(cmd, prefix)
            if status in (1, 5):
                return True
            if status in (None, 0):
                return False
        return False

    def activate(self, apn: str, user: str, password: str) -> bool:
        if not self.wait_for_ps_registration():
            if self.at.command(f'AT+QICSGP=1,1,"{apn}","{user}","{password}",3', "^OK$", 0.5) is None:
                return False
        start = time.monotonic()
        while True:
            self.at.write_command("AT+QIACT=1")
            got = self.at.read_response("^(OK|ERROR)$", 150)
            if got is None:
                return False
            if got == b"OK":
                return True
            self.at.command("AT+QIGETERROR", "^OK$", 0.5)
            if time.monotonic() - start >= 15:            # the library's 150 s, scaled down
                return False
            time.sleep(0.1)

    def socket_open(self, host: str, port: int) -> int:
        used = set()
        self.at.write_command("AT+QISTATE?")
        while True:
            line = self.at.read_response("^(OK|\\+QISTATE: .*)$", 10)
            assert line is not None, "AT+QISTATE? unanswered"
            if line.startswith(b"+QISTATE: "):
                used.add(int(line[10:].split(b",")[0]))
            if line == b"OK":
                break
        connect_id = next(i for i in range(self.CONNECT_ID_NUM) if i not in used)
        if self.at.command(f'AT+QIOPEN=1,{connect_id},"TCP","{host}",{port}', "^OK$", 150) is None:
            return -1
        if self.at.read_response(f"^\\+QIOPEN: {connect_id},0$", 150) is None:
            return -1
        return connect_id

    def socket_send(self, connect_id: int, data: bytes) -> bool:
        assert len(data) <= 1460
        self.at.write_command(f"AT+QISEND={connect_id},{len(data)}")
        if self.at.read_response("^>", 0.5 * SLOW) is None:
            return False
        self.at.write_binary(data)
        return self.at.read_response("^SEND OK$", 5 * SLOW) is not None

    def socket_receive(self, connect_id: int, size: int) -> int | bytes:
        self.at.write_command(f"AT+QIRD={connect_id}")
        got = self.at.read_response("^\\+QIRD: (.*)$", 0.5 * SLOW)
        if got is None:
            return -1
        n = int(re.match(rb"\d+", got).group(0))          # atoi()
        data = b""
        if n >= 1:
            if n > size:
                return -1
            data = self.at.read_binary(n, 0.5 * SLOW)
            if data is None:
                return -1
        if self.at.read_response("^OK$", 0.5 * SLOW) is None:
            return -1
        return data

    def socket_receive_wait(self, connect_id: int, size: int, timeout: float) -> bytes:
        start = time.monotonic()
        while True:
            got = self.socket_receive(connect_id, size)
            assert got != -1, bytes(self.at.wire.rx[-300:])
            if got:
                return got
            if time.monotonic() - start >= timeout:
                return b""
            time.sleep(0.1)

    def socket_close(self, connect_id: int) -> bool:
        return self.at.command(f"AT+QICLOSE={connect_id}", "^OK$", 10) is not None


# Was a bug, fixed: the start-up URCs came in one burst (Modem._booted wrote every
# defaults.boot_urcs line at once).  A real EC21 reports RDY first and +CFUN: 1 / +CPIN: READY
# only after its SIM is up (SeeedJP/WioLTEforArduino issue #5: RDY at 15317 ms, +CFUN: 1 at
# 15445, +CPIN: READY at 15673, AT+CPIN? answered +CME ERROR: 10 / 14 meanwhile), so Seeed's
# TurnOnOrReset() -- AT, ATE0, AT+QURCCFG, AT+QSCLK=1 after RDY, only then the wait for
# +CPIN: READY -- dropped the URC while reading AT's OK and failed after 10 s.  Now the profile's
# defaults.boot_urc_ms spaces them.
def test_wiolte_turn_on_or_reset_waits_for_cpin_ready_after_its_commands(emulator, open_modem):
    """SeeedJP/WioLTEforArduino TurnOnOrReset() on a module that answers: IsRespond(), then
    Reset() (the RESET pin pulse, here the control API's reboot), RDY, four commands, and the
    wait for +CPIN: READY.  The emulator's RDY comes after its `ms` (here 300 ms, a module's is
    seconds); what matters is +CPIN: READY arriving after the four commands' answers, as on the
    module (the commands take ~20 ms there, the SIM ~350 ms).  On the modem's manual clock:
    RDY's moment, then the SIM's once the module has the four commands (on real time a driver
    slowed by a loaded machine took over 360 ms for them and dropped the URC, as a slow real
    host would: the flake hunt's one open case)."""
    host, port = open_modem("ec2x", echo=True, manual_time=True)
    host.close()
    wio = WioLTE(host.path)
    steps: dict = {}
    driver = threading.Thread(target=lambda: steps.update(wio.after_reset(cpin_timeout=3 * SLOW)), daemon=True)
    try:
        assert wio.is_respond()
        sent = len(wio.at.wire.tx)
        assert emulator.control("reboot", ms=300)["ok"]
        driver.start()
        emulator.advance(port, 0.3)                     # RDY, and nothing due after it yet
        deadline = time.monotonic() + 10 * SLOW
        while b"AT+QSCLK=1\r" not in bytes(wio.at.wire.tx[sent:]):   # the driver's fourth command
            assert driver.is_alive() and time.monotonic() < deadline, steps
            time.sleep(0.01)
        emulator.wait_received(port, len(wio.at.wire.tx))   # (all the driver wrote: the modem has it)
        emulator.advance(port, 0.4)                     # +CFUN: 1, +CPIN: READY, +QUSIM: 1
        driver.join(10 * SLOW)
        assert {k: steps.get(k) for k in ("rdy", "at", "ate0", "urcport", "qsclk")} == dict.fromkeys(
            ("rdy", "at", "ate0", "urcport", "qsclk"), True), steps
        assert b"+CPIN: READY" not in steps["dropped_before_cpin_wait"] and steps["cpin"], (
            "+CPIN: READY came in the RDY burst and was dropped while the driver read AT's OK: "
            f"{steps['dropped_before_cpin_wait']}")
    finally:
        wio.close()
        driver.join(5)


def test_wiolte_tcp_sockets_open_send_poll_receive_close(emulator, driver_port, tcp_echo):
    """WioLTE's socket API on the pty: Activate() on a registered module skips AT+QICSGP and
    activates context 1 with its default APN; SocketOpen() picks the lowest connectID AT+QISTATE?
    does not list (0, then 1 for a second socket); SocketSend() takes "^>" from the partial line
    "> " -- the space stays in the buffer and makes an unmatched line " " before SEND OK;
    SocketReceive() (AT+QIRD=<id>, the module's default length) reads "+QIRD: <n>", exactly n raw
    bytes, then OK, polled until data come; the buffer-mode '+QIURC: "recv",<id>' URCs are lines
    it drops."""
    path, _ = driver_port
    wio = WioLTE(path)
    try:
        assert wio.at.command("AT", "^OK$", 0.5 * SLOW) is not None
        assert wio.at.command("ATE0", "^OK$", 0.5 * SLOW) is not None
        assert wio.activate("soracom.io", "sora", "sora")
        assert not any(l.startswith(b"AT+QICSGP") for l in bytes(wio.at.wire.tx).split(b"\r"))

        first = wio.socket_open(TCP_HOST, TCP_PORT)
        second = wio.socket_open(TCP_HOST, TCP_PORT)
        assert (first, second) == (0, 1)
        assert b'AT+QIOPEN=1,1,"TCP","tcp.example",7000\r' in bytes(wio.at.wire.tx)

        # The second payload starts with LF, written the moment "^>" matched: this host ends its
        # lines with CR alone, so that LF is data (docs/behaviour.md, Command line: a CR-only host).
        for connect_id, payload in ((0, TRICKY), (1, b"\nsecond socket\r\n" * 40)):
            wio.at.dropped.clear()
            assert wio.socket_send(connect_id, payload)
            assert b" " in wio.at.dropped                  # the prompt's space, a line of its own
            got = b""
            while len(got) < len(payload):
                more = wio.socket_receive_wait(connect_id, 1500, 5 * SLOW)
                assert more, f"echo of connectID {connect_id} stopped at {len(got)} bytes"
                got += more
            assert got == payload
            assert f'+QIURC: "recv",{connect_id}'.encode() in wio.at.dropped
        assert wio.socket_receive(0, 1500) == b""          # "+QIRD: 0", then OK
        assert wio.socket_close(0) and wio.socket_close(1)
        assert len(tcp_echo.connections) == 2
    finally:
        wio.close()


# =================================================================================================
# ciniml/mpy-wiolte: wiolte.py LTEModule (MicroPython, EC21)
# =================================================================================================
class MpyUart:
    """pyb.UART(baudrate=115200, timeout=5000, timeout_char=1000) over the pty."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.buf = bytearray()
        self.wire = WireLog()
        self.timeout, self.timeout_char = 5.0, 1.0
        self._first = True

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes) -> None:
        self.wire.tx += data
        self.ser.write(data)

    def _get(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while not self.buf:
            chunk = self.ser.read(self.ser.in_waiting or 1)
            if chunk:
                self.wire.rx += chunk
                self.buf += chunk
                break
            if time.monotonic() >= deadline:
                return -1
            time.sleep(0.0005)
        return self.buf.pop(0)

    def readchar(self) -> int:
        return self._get(self.timeout)

    def readinto(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            c = self._get(self.timeout if not out else self.timeout_char)
            if c < 0:
                break
            out.append(c)
        return bytes(out)


class MpyLTEModule:
    CR, LF = 0x0D, 0x0A

    def __init__(self, path: str) -> None:
        self.uart = MpyUart(path)
        self.skipped: list[bytes] = []

    def close(self) -> None:
        self.uart.close()

    def write_command(self, command: bytes) -> None:
        self.uart.write(command)
        self.uart.write(b"\r")

    def read_response(self) -> bytes | None:
        """read_response_into(): only a response framed CR LF <text> CR LF is returned."""
        out, state = bytearray(), 0
        while True:
            c = self.uart.readchar()
            if c < 0:
                return None
            if state == 0 and c == self.CR:
                state = 1
            elif state == 1 and c == self.LF:
                state = 2
            elif state == 1 and c == self.CR:
                state = 1
            elif state == 1:
                out.clear()
                state = 0
            elif state == 2 and c == self.CR:
                state = 1 if not out else 4
            elif state == 2:
                out.append(c)
                if len(out) == 1024:
                    state = 3
            elif state == 3 and c == self.CR:
                state = 4
            elif state == 4 and c == self.LF:
                return bytes(out)

    def wait_response(self, expected: bytes) -> bytes | None:
        while True:
            response = self.read_response()
            if response is None:
                return None
            if response.startswith(expected):
                return response
            self.skipped.append(response)

    def write_command_wait(self, command: bytes, expected: bytes) -> bool:
        self.write_command(command)
        return self.wait_response(expected) is not None

    def execute_command(self, command: bytes, expected=(b"OK",)) -> tuple[bool, list[bytes]]:
        self.write_command(command)
        responses = []
        while True:
            response = self.read_response()
            if response is None:
                return False, responses
            responses.append(response)
            if response in expected:
                return True, responses

    def single_response(self, command: bytes, starts_with: bytes) -> bytes | None:
        ok, responses = self.execute_command(command)
        if not ok:
            return None
        return next((r for r in responses if r.startswith(starts_with)), None)

    def wait_prompt(self, prompt: bytes) -> bool:
        index = 0
        while True:
            c = self.uart.readchar()
            if c < 0:
                return False
            if prompt[index] == c:
                index += 1
                if index == len(prompt):
                    return True
            else:
                index = 0

    # -- the driver's operations ------------------------------------------------------------------
    def turn_on_or_reset_after_rdy(self) -> bool:
        if not self.write_command_wait(b"AT", b"OK"):
            return False
        if not self.write_command_wait(b"ATE0", b"OK"):
            return False
        if not self.write_command_wait(b'AT+QURCCFG="urcport","uart1"', b"OK"):
            return False
        if not self.execute_command(b"AT+QSCLK=1", (b"OK", b"ERROR"))[0]:
            return False
        for _ in range(10):                               # the driver loops forever, 1 s apart
            ok, responses = self.execute_command(b"AT+CPIN?")
            if not responses:
                return False
            if ok:
                return True
            time.sleep(1)
        return False

    def activate(self, apn: str, user: str, password: str) -> bool:
        for cmd, prefix in ((b"AT+CGREG?", b"+CGREG:"), (b"AT+CEREG?", b"+CEREG:")):
            response = self.single_response(cmd, prefix)
            assert response is not None, "Failed to get registration status."
            stat = response.decode().split(",")[:2][1]
            if stat in ("0", "4"):
                raise AssertionError("Invalid registration status.")
            if stat in ("1", "5"):
                break
        command = f'AT+QICSGP=1,1,"{apn}","{user}","{password}",1'.encode()
        return (self.write_command_wait(command, b"OK") and self.write_command_wait(b"AT+QIACT=1", b"OK")
                and self.write_command_wait(b"AT+QIACT?", b"OK"))

    def socket_open(self, host: str, port: int) -> int:
        ok, responses = self.execute_command(b"AT+QISTATE?")
        assert ok, "Failed to get socket status"
        in_use = {int(r[10:].split(b",", 1)[0]) for r in responses if r.startswith(b"+QISTATE: ")}
        connect_id = next(i for i in range(12) if i not in in_use)
        command = f'AT+QIOPEN=1,{connect_id},"TCP","{host}",{port},0,0'.encode()
        assert self.write_command_wait(command, b"OK"), "Failed to open socket."
        assert self.wait_response(f"+QIOPEN: {connect_id},0".encode()) is not None
        return connect_id

    def socket_send(self, connect_id: int, data: bytes) -> bool:
        self.write_command(f"AT+QISEND={connect_id},{len(data)}".encode())
        if not self.wait_prompt(b"> "):
            return False
        self.uart.write(data)
        return self.wait_response(b"SEND OK") is not None

    def socket_receive(self, connect_id: int, length: int) -> bytes | None:
        self.write_command(f"AT+QIRD={connect_id},{length}".encode())
        response = self.wait_response(b"+QIRD: ")
        if response is None:
            return None
        n = int(response[7:].decode())
        if n == 0:
            return b"" if self.wait_response(b"OK") is not None else None
        data = self.uart.readinto(n)
        if len(data) == n and self.wait_response(b"OK") is not None:
            return data
        return None


def test_mpy_wiolte_reset_polls_cpin_then_socket_round_trip(emulator, driver_port, tcp_echo):
    """ciniml/mpy-wiolte after a reset: its parser needs every response framed CR LF ... CR LF
    (the echo "AT\\r" of a module just restarted with ATE1 is skipped by it), it polls AT+CPIN?
    (so it does not depend on catching the +CPIN: READY URC, unlike Seeed's C++ library), activates the
    context with AT+QICSGP/AT+QIACT, opens with explicit ",0,0", sends after matching "> " byte by
    byte and reads AT+QIRD=<id>,<len> with readinto() of exactly the announced length."""
    path, _ = driver_port
    lte = MpyLTEModule(path)
    try:
        assert emulator.control("reboot", ms=100)["ok"]
        assert lte.wait_response(b"RDY") == b"RDY"
        assert lte.turn_on_or_reset_after_rdy()
        # +CPIN: READY comes ~360 ms after RDY: during the commands or the AT+CPIN? poll
        # (answered +CME ERROR: 14 until then, which the driver retries a second later)
        assert b"\r\n+CPIN: READY\r\n" in bytes(lte.uart.wire.rx)
        assert lte.uart.wire.rx.count(b"AT\r\r\nOK\r\n") == 1  # the one echoed command
        assert lte.activate("soracom.io", "sora", "sora")
        connect_id = lte.socket_open(TCP_HOST, TCP_PORT)
        assert connect_id == 0
        payload = b"\n" + TRICKY * 5                      # CR-only host: a leading LF is data
        for start in range(0, len(payload), 1000):
            assert lte.socket_send(connect_id, payload[start:start + 1000])
        got = b""
        deadline = time.monotonic() + 10 * SLOW
        while len(got) < len(payload):
            assert time.monotonic() < deadline, (len(got), bytes(lte.uart.wire.rx[-200:]))
            more = lte.socket_receive(connect_id, 1460)
            assert more is not None, bytes(lte.uart.wire.rx[-200:])
            got += more
            if not more:
                time.sleep(0.1)
        assert got == payload
        assert lte.socket_receive(connect_id, 1460) == b""
        assert lte.write_command_wait(b"AT+QICLOSE=0", b"OK")
    finally:
        lte.close()


# =================================================================================================
# twilio/breakout-massive-iot (7397ba0): OwlModemSSLBG96.cpp with the AT+QFOPEN existence check
# =================================================================================================
class OwlAt:
    """OwlModemAT: command + CR LF; a line is CR LF <text> CR; "OK" / "ERROR" / "+CME ERROR..." /
    "CONNECT" are result codes, other lines the response; after CONNECT the data go out 100
    bytes per spin (AT_DATA_CHUNK_SIZE)."""

    SPIN = 0.05

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.buf = bytearray()
        self.sent: list[bytes] = []

    def close(self) -> None:
        self.ser.close()

    def _next_line(self) -> bytes | None:
        while True:
            start = self.buf.find(b"\r\n")
            if start < 0:
                return None
            end = self.buf.find(b"\r", start + 2)
            if end < 0:
                return None
            line = bytes(self.buf[start + 2:end])
            del self.buf[:end]
            if line:
                return line

    def do(self, command: bytes, timeout_ms: int, data: bytes | None = None):
        self.sent.append(command)
        self.ser.write(command + b"\r\n")
        waiting_connect = data is not None
        remaining = bytearray(data or b"")
        response: list[bytes] = []
        deadline = time.monotonic() + timeout_ms / 1000 * SLOW
        while time.monotonic() < deadline:
            time.sleep(self.SPIN)
            self.buf += self.ser.read(4096)
            while (line := self._next_line()) is not None:
                if line in (b"OK", b"ERROR") or line.startswith(b"+CME ERROR"):
                    return line.decode(), response
                if line == b"CONNECT" and waiting_connect:
                    waiting_connect, response = False, []
                    continue
                response.append(line)
            if not waiting_connect and remaining:
                self.ser.write(bytes(remaining[:100]))
                del remaining[:100]
        return "timeout", response


def _owl_set_server_ca(owl: OwlAt, ca: bytes, force: bool = False) -> bool:
    """OwlModemSSLBG96::setServerCA()."""
    write_ca = True
    if not force:
        code, lines = owl.do(b'AT+QFOPEN="ssl_cacert.pem",2', 1000)
        if code == "OK":
            handle = next((l[len(b"+QFOPEN: "):] for l in lines if l.startswith(b"+QFOPEN: ")), b"")
            fdesc = int(re.match(rb"-?\d*", handle).group(0) or 0)      # str_to_long_int
            owl.do(b"AT+QFCLOSE=%d" % fdesc, 1000)
            write_ca = False
    if write_ca:
        owl.do(b'AT+QFDEL="ssl_cacert.pem"', 1000)                        # result ignored
        if owl.do(b'AT+QFUPL="ssl_cacert.pem",%d,100' % len(ca), 10_000, ca)[0] != "OK":
            return False
    return owl.do(b'AT+QSSLCFG="cacert",0,"UFS:ssl_cacert.pem"', 1000)[0] == "OK"


# Was a bug, fixed: AT+QFOPEN / AT+QFCLOSE (EC2x&EG2x&EG9x&EM05 FILE notes; BG96 FILE AT
# Commands Manual §2.6: AT+QFOPEN=<filename>[,<mode>] -> +QFOPEN: <filehandle>, mode 2 read-only)
# were answered ERROR (emulator/commands/files.py had QFUPL/QFDWL/QFDEL/QFLST/QFLDS only), so
# Twilio's setServerCA(force=false) never found the certificate already on the module and deleted
# and uploaded it again at every start.  Now emulator/storage/handles.py holds open files.
def test_twilio_owl_set_server_ca_finds_the_certificate_already_on_the_module(driver_port, pki):
    """The CA went onto the module at an earlier start (ssl_cacert.pem); this start calls
    setServerCA(ca, force=false), which asks AT+QFOPEN="ssl_cacert.pem",2 whether it is there.
    A module with the file answers "+QFOPEN: <handle>" OK, the driver closes the handle and does
    not touch the file; the context is configured either way."""
    path, _ = driver_port
    ca = pki.ca.cert_pem
    with serial.Serial(path, 115200, timeout=5 * SLOW) as earlier_start:
        earlier_start.write(b'ATE0\r')
        assert earlier_start.read_until(b"OK\r\n").endswith(b"OK\r\n")
        earlier_start.write(b'AT+QFUPL="ssl_cacert.pem",%d,100\r' % len(ca))
        assert earlier_start.read_until(b"CONNECT\r\n").endswith(b"CONNECT\r\n")
        earlier_start.write(ca)
        assert earlier_start.read_until(b"\r\nOK\r\n").endswith(b"\r\nOK\r\n")
    owl = OwlAt(path)
    try:
        for cmd in (b"ATV1", b"ATQ0", b"ATE0", b"AT+CMEE=2", b"ATS3=13", b"ATS4=10"):
            assert owl.do(cmd, 1000)[0] == "OK", cmd
        mark = len(owl.sent)
        assert _owl_set_server_ca(owl, ca)                 # the driver's end result holds either way
        sent = owl.sent[mark:]
        assert sent[0] == b'AT+QFOPEN="ssl_cacert.pem",2'
        assert sent[-1] == b'AT+QSSLCFG="cacert",0,"UFS:ssl_cacert.pem"'
        assert not any(c.startswith((b"AT+QFDEL", b"AT+QFUPL")) for c in sent), (
            f"the certificate on the module was not found (AT+QFOPEN answered ERROR): {sent}")
        assert sent[1] == b"AT+QFCLOSE=1027", sent          # the EC2x profile's first handle
        assert owl.do(b"AT+QFOPEN?", 1000) == ("OK", [])    # closed again: none listed
    finally:
        owl.close()
