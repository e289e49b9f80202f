"""Adversarial tests: a forty-first set of public host code pointed at the pty, through the
module's TCP/IP AT commands (AT+QIOPEN, AT+QISEND / AT+QISENDEX, AT+QIRD, '+QIURC: "recv"' /
"closed", AT+QICLOSE, AT+QIDEACT) against loopback peers:

- IljaK/async-GSM, an asynchronous Arduino (C++) GSM library whose Quectel socket manager was
  never replayed (a search of tests/ for "IljaK", "async-GSM", "QuectelGSMSocketManager",
  "SetExpectFixedLength" finds nothing): its echo-driven response engine, buffer-mode sockets,
  AT+QISEND with a trailing Ctrl-Z and the AT+QIRD loop with fixed-length reads.
- hologram-io/hologram-python at its newest commit.  NOTE: test_adversarial_public_drivers_3.py
  already replayed this SDK, from an earlier reading (its model waits for OK after AT+QISENDEX,
  so the send fails there, and tears down with AT+QIACT=0).  At 053c484 process_response() takes
  "SEND OK" as OK and EC21 tears down with AT+QIDEACT=1, which carries the SDK into paths _3.py
  never reached: the pushed answer, the tear-down, a SECOND message (where the bug below
  shows), a refused connection, and the BG96 class's tear-down.

Programs replayed (public sources read through the reference store; paraphrased, not copied):

- IljaK/async-GSM at b05f66f0019f8197e819120d782ca4bbf8fc5b60 (2025-02-20): src/GSMSerialModem.cpp
  / .h, src/GSMModemManager.cpp (OnModemResponse), src/quectel/QuectelGSMManager.cpp (OnGSMEvent:
  +QIURC), src/quectel/QuectelGSMSocketManager.cpp / .h, src/quectel/QuectelGPRSManager.cpp,
  src/socket/GSMSocketManager.cpp / .h, src/command/{BaseModemCMD, BaseStreamWriteModemCMD,
  SocketStreamWriteModemCMD, SocketConnectCMD2, SocketConnectContextCMD, ULong2ModemCMD}.h, with
  its line reader IljaK/arduino-helpers src/serial/SerialCharResponseHandler.cpp at
  09365f503354ee3879ddc607eeb92553bb7b87f2.  What the model keeps:
  * Send(): "AT", the command, "=" (setters) / "?" (checks), the arguments, println() "\\r\\n";
    one command pending; the next only when the port is idle (no pending command, 30 ms after
    the last line, an empty line buffer, no unread byte, no running timer).  ATE0 is never sent.
  * the reader: bytes one at a time, a line ends at "\\r\\n" (kept apart from a lone "\\r": the
    echo line is "AT...\\r"); in fixed-length mode the next <n> bytes are one response.
  * OnResponseReceived(): with a command pending an empty line is ignored; until the response
    has "started" a line of at least 2+len(cmd) bytes must begin "AT<cmd>" (the echo) -- any
    other line is an event that "collided"; after it OK / ERROR / +CME ERROR / +CMS ERROR
    (prefix match) are final, anything else DATA (timer restarted); the command timer's expiry
    is TIMEOUT, dropped by GSMModemManager (no debug port).  No command pending: an event;
    bytes left without a line end are flushed as an event after 100 ms.  Loop(): the pending
    write command's trigger (">") at the start of the line buffer, once started, fires.
  * APN: AT+CGDCONT=1,"IP","<apn>" -> AT+QICSGP=1,1,"<apn>","","",0 -> AT+QIACT=1 ->
    AT+QIACT? (field 4 unquoted is the address).  Connect(): AT+QIOPEN=1,<id>,"TCP","<a.b.c.d>",
    <port>,0,0 (buffer access); its OK waits for the "+QIOPEN: <id>,<err>" event (60 s -> 5 s).
    SendInternal(): AT+QISEND=<id>,<len> (10 s -> 0.6 s); at ">" the data then Ctrl-Z
    (EndStream()); OK sends the next packet, ERROR / ABORTED closes the socket; "SEND OK" is
    DATA, not final.  '+QIURC: "recv",<id>' (two fields) -> AT+QIRD=<id>,256; "+QIRD: <n>"
    with n > 0 -> fixed-length n and another AT+QIRD queued; '+QIURC: "closed",<id>' ->
    AT+QICLOSE=<id> unless already closing.

- hologram-io/hologram-python (MIT) at 053c4848ef83dc3a287017269acd1497874ebf76 (2023-12-21):
  Hologram/Network/Modem/Modem.py (the serial engine), Hologram/Network/Modem/Quectel.py (the
  Quectel socket layer), Hologram/Network/Modem/EC21.py (PDP tear-down) and Hologram/CustomCloud.py
  / HologramCloud.py (sendMessage(): open_send_socket() = create_socket() + connect_socket(
  "cloudsocket.hologram.io", 9999), send_message(), close_send_socket() = close_socket()).
  What the model keeps:
  * the port: pyserial Serial(device, 9600, 8N1, timeout=1 s, write_timeout=1 s) -- the real
    pyserial on the pty here.  _readline_from_serial_port(timeout): the port timeout swapped for
    the call, Serial.readline() (up to LF or the timeout, partial line on timeout), utf-8 decode.
  * modemwrite(): a command goes out as SEPARATE flushed writes: "AT", the command, "=" (or "?"),
    then the value and "\\r\\n" (value None: "AT", cmd, ["?"], "\\r\\n").  A value that is not a
    str is handed to Serial.write() as is -- the int socket id of AT+QICLOSE becomes
    bytes(bytearray(0)) = b"" (the SDK's slip: "AT+QICLOSE=\\r\\n" goes out).
  * command(): checkURC() first (readline with timeout 0, every line starting with "+" goes to
    handleURC(), the first other line -- or nothing -- ends it), the write, then process_response():
    readline() until "OK" / "SEND OK" (OK), "ERROR" / "+CME ERROR:" / "+CMS ERROR:" (error), an
    empty read (timeout); blank lines skipped; "+<cmd>: " lines kept; other "+" lines handled as
    URCs; lines starting with "AT<cmd>" (the echo) skipped; anything else kept.  One kept line
    is returned as a str, several as a list.
  * init_serial_commands(): ATE0, AT+CMEE=2, AT+CPIN?, AT+CTZU=1, AT+CTZR=1,
    AT+CPMS="ME","ME","ME", AT+CMGF=0, AT+CNMI=2,1, then (Quectel) AT+CREG=2 and AT+CEREG=2 --
    results ignored.
  * is_registered(): AT+CREG? (else AT+CEREG?); _check_registered_helper(): the last kept line,
    lstrip("+CREG") then lstrip(": "), split(","), field 1 must be 1 or 5.
  * _set_up_pdp_context(): AT+QIACT? -- lstrip("+QIACT: ").split(",")[1] == 1 means active;
    else AT+QICSGP=1,1,"hologram","","",1 and AT+QIACT=1 (timeout 30 s).
  * connect_socket(): AT+QIOPEN=1,0,"TCP","<host>",<port>,0,1 (direct push), result ignored.
  * send_message(): checkURC() until '+QIOPEN: ' (last field 0 -> socket id = first field; else
    NetworkError) -- the SDK spins with no time limit (the model stops after 8 s);
    write_socket(): the data hexlified, 510-hex-digit chunks, each AT+QISENDEX=<id>,"<hex>"
    (timeout 10 s), anything but OK ("SEND OK") -> NetworkError; then checkURC() every 50 ms
    until '+QIURC: "recv",<id>,<len>' whose handler reads the pushed data with ONE readline(5 s)
    (10 s overall: scaled down to 6 s), and returns it rstrip("\\r\\n").  '+QIURC: "closed",<id>'
    sets the closed state.
  * close_socket(): AT+QICLOSE=<id as above>, result only logged; the state set to closed;
    EC21._tear_down_pdp_context(): is_registered(), AT+QIACT?, AT+QIDEACT=1 (timeout 30 s).
  * the SDK's BG96 class (Hologram/Network/Modem/BG96.py, same commit): the same Quectel layer,
    its _tear_down_pdp_context() sends AT+QIACT=0 instead of AT+QIDEACT=1 (run here on the
    EC2x profile, whose TCP/IP command set the class uses unchanged).
  The logging of the SDK is kept as a list (the tests' strict_log watches the emulator's own).

Finding (fixed): AT+QIDEACT=<cid> left the context's AT+QIOPEN sockets allocated (an earlier
decision), while the TCP(IP) note's AT+QIDEACT "deactivates a specific context and close[s] all
TCP/IP connections set up in this context" (its "pdpdeact" note: AT+QIDEACT to "reset all
connections") -- the SDK, which never closes connectID 0 itself, could not send a second
message.  Now the ids are free after AT+QIDEACT.

Every host name dialled is routed to 127.0.0.1.  Where the SDK assumes something the module does
not do, the test asserts what the module does and names the SDK's fault.

What async-GSM meets is the module's behaviour, its faults its own (asserted as such): "SEND OK"
is no final result for it, so a '+QIURC: "recv"' that arrives before the AT+QISEND timer runs
out is eaten as response data and never read; and as the module echoes AT+QISEND data
(AT+QISDE default 1) under the echo the library keeps on, a payload holding CR LF "OK" CR LF
ends its AT+QISEND early.
"""
from __future__ import annotations

import binascii
import re
import threading
import time

import pytest
import serial

from emulator.testing.peers import TcpServer

CLOUD_HOST, CLOUD_PORT = "cloudsocket.hologram.io", 9999

OK, ERROR, TIMEOUT, NOMATCH, INVALID = "OK", "Error", "Timeout", "NoMatch", "Invalid"
SOCKET_INIT, SOCKET_WRITE_STATE, SOCKET_RECEIVE_READ, SOCKET_SEND_READ, SOCKET_CLOSED = range(5)


class SerialError(Exception):
    pass


class NetworkError(Exception):
    pass


class HologramEc21:
    """Hologram SDK: Modem + Quectel + EC21, host side only (no PPP, no SMS parsing)."""

    DEFAULT_SERIAL_TIMEOUT = 1
    DEFAULT_SEND_TIMEOUT = 6          # SDK: 10 s
    OPEN_WAIT_LIMIT = 8               # SDK: none (spins until the URC comes)
    RECV_READLINE_TIMEOUT = 5         # SDK: 5 s
    RETRY_DELAY = 0.05

    def __init__(self, device: str, apn: str = "hologram", pdp_context: int = 1) -> None:
        self.timeout = self.DEFAULT_SERIAL_TIMEOUT
        self.serial_port = serial.Serial(device, baudrate=9600, bytesize=8, parity="N",
                                         stopbits=1, timeout=self.timeout, write_timeout=1)
        self.apn, self.pdp_context = apn, pdp_context
        self.response: list[str] = []
        self.result = OK
        self.urc_state = SOCKET_INIT
        self.socket_identifier = 0
        self.last_read_payload_length = 0
        self.urc_response = ""
        self.log: list[str] = []
        self.unhandled_urcs: list[str] = []
        self.wire = bytearray()           # every byte the SDK wrote
        self.results: list[tuple[str, str, object]] = []
        self.init_serial_commands()

    def close(self) -> None:
        self.serial_port.close()

    # --- the three serial primitives -------------------------------------------------------
    def _readline(self, timeout=None) -> str:
        if timeout is not None:
            self.serial_port.timeout = timeout
        r = self.serial_port.readline().decode("utf8")
        if timeout is not None:
            self.serial_port.timeout = self.timeout
        return r

    def _write(self, message) -> None:
        data = message.encode() if isinstance(message, str) else serial.to_bytes(message)
        self.wire += data
        self.serial_port.write(message.encode() if isinstance(message, str) else message)
        self.serial_port.flush()

    def _read(self, timeout=None, size=256) -> bytes:
        if timeout is not None:
            self.serial_port.timeout = timeout
        r = self.serial_port.read(size)
        if timeout is not None:
            self.serial_port.timeout = self.timeout
        return r

    # --- Modem.py engine ---------------------------------------------------------------------
    def modemwrite(self, cmd, at=False, seteq=False, read=False, end=False) -> None:
        if at:
            self._write("AT")
        self._write(cmd)
        if seteq:
            self._write("=")
        if read:
            self._write("?")
        if end:
            self._write("\r\n")

    def checkURC(self) -> None:
        while True:
            response = self._readline(0)
            if len(response) > 0 and response.startswith("+"):
                self.handleURC(response.rstrip("\r\n"))
            else:
                return

    def process_response(self, cmd: str, timeout=None) -> str:
        self.response = []
        while True:
            response = self._readline(timeout)
            if len(response) == 0:
                return TIMEOUT
            response = response.rstrip("\r\n")
            if len(response) == 0:
                continue
            if response == "ERROR":
                return ERROR
            if response.startswith("+CME ERROR:") or response.startswith("+CMS ERROR:"):
                self.response.append(response)
                return ERROR
            if response == "OK" or response == "SEND OK":
                return OK
            if response.startswith("+"):
                if response.lower().startswith(cmd.lower() + ": "):
                    self.response.append(response)
                else:
                    self.handleURC(response)
            elif response.startswith("AT" + cmd):
                continue
            else:
                self.response.append(response)

    def _command_result(self):
        if self.result == OK and len(self.response) == 1:
            return self.result, self.response[0]
        return self.result, self.response

    def command(self, cmd="", value=None, expected=None, timeout=None, read=False):
        self.result = TIMEOUT
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
            self.result = INVALID
            return self._command_result()
        else:
            self.modemwrite(cmd, at=True, seteq=True)
            self.modemwrite(value, end=True)
        self.result = self.process_response(cmd, timeout)
        if self.result == OK and expected is not None:
            self.result = NOMATCH
            if any(s.startswith(expected) for s in self.response):
                self.result = OK
        out = self._command_result()
        self.results.append((cmd, str(value), out))
        return out

    def read(self, cmd, timeout=None):
        return self.command(cmd, None, None, timeout, read=True)

    def set(self, cmd, value, timeout=None):
        return self.command(cmd, value, None, timeout)

    def init_serial_commands(self) -> None:
        self.command("E0")
        self.command("+CMEE", "2")
        self.command("+CPIN?")
        self.command("+CTZU", "1")
        self.command("+CTZR", "1")
        self.command("+CPMS", '"ME","ME","ME"')
        self.command("+CMGF", "0")
        self.command("+CNMI", "2,1")
        self.command("+CREG", "2")           # Quectel.set_network_registration_status()
        self.command("+CEREG", "2")

    @staticmethod
    def _check_registered_helper(cmd, result) -> bool:
        if isinstance(result, list):
            if not result:
                raise SerialError("Internal error: input cannot be an empty list")
            r = result[-1]
        else:
            r = result
        response_list = r.lstrip(cmd).lstrip(": ").split(",")
        if len(response_list) < 2:
            raise SerialError("Unable to parse registration URC response")
        regstatus = int(response_list[1])
        return regstatus in (1, 5)

    def check_registered(self, cmd) -> bool:
        ok, r = self.read(cmd)
        if ok == OK:
            try:
                return self._check_registered_helper(cmd, r)
            except (IndexError, ValueError) as e:
                self.log.append(repr(e))
        return False

    # --- Quectel.py / EC21.py ----------------------------------------------------------------
    def is_registered(self) -> bool:
        return self.check_registered("+CREG") or self.check_registered("+CEREG")

    def _is_pdp_context_active(self) -> bool:
        if not self.is_registered():
            return False
        ok, r = self.command("+QIACT?")
        if ok == OK:
            try:
                return int(r.lstrip("+QIACT: ").split(",")[1]) == 1
            except (IndexError, ValueError, AttributeError) as e:
                self.log.append(repr(e))
        return False

    def _set_up_pdp_context(self) -> bool:
        if self._is_pdp_context_active():
            return True
        self.set("+QICSGP", f'{self.pdp_context},1,"{self.apn}","","",1')
        ok, _ = self.set("+QIACT", f"{self.pdp_context}", timeout=30)
        if ok != OK:
            raise NetworkError("Failed PDP context setup")
        self.log.append("PDP context active")
        return True

    def _tear_down_pdp_context(self) -> bool:
        if not self._is_pdp_context_active():
            return True
        ok, _ = self.set("+QIDEACT", "1", timeout=30)
        self.log.append("PDP context deactivated" if ok == OK else "PDP Context tear down failed")
        return ok == OK

    def create_socket(self) -> None:
        self._set_up_pdp_context()

    def connect_socket(self, host: str, port: int):
        return self.command("+QIOPEN", '1,0,"TCP","%s",%d,0,1' % (host, port))

    @staticmethod
    def _chunks(data, n):
        for i in range(0, len(data), n):
            yield data[i:i + n]

    def write_socket(self, data: bytes) -> None:
        hexdata = binascii.hexlify(data)
        for chunk in self._chunks(hexdata, 510):
            ok, _ = self.set("+QISENDEX", '%d,"%s"' % (self.socket_identifier, chunk.decode()),
                             timeout=10)
            if ok != OK:
                raise NetworkError("Failed to write to socket")

    def send_message(self, data: bytes, timeout=DEFAULT_SEND_TIMEOUT) -> str:
        limit = time.monotonic() + self.OPEN_WAIT_LIMIT
        while self.urc_state != SOCKET_WRITE_STATE:
            self.checkURC()
            if time.monotonic() > limit:
                raise AssertionError("model: no +QIOPEN URC (the SDK would spin forever)")
        self.write_socket(data)
        end = time.monotonic() + timeout
        while self.urc_state != SOCKET_SEND_READ:
            self.checkURC()
            if self.urc_state != SOCKET_SEND_READ:
                if time.monotonic() > end:
                    raise SerialError("Timeout occurred waiting for message status")
                time.sleep(self.RETRY_DELAY)
        return self.urc_response.rstrip("\r\n")

    def close_socket(self) -> None:
        ok, _ = self.command("+QICLOSE", self.socket_identifier)     # an int: the SDK's slip
        if ok != OK:
            self.log.append("Failed to close socket")
        self.urc_state = SOCKET_CLOSED
        self._tear_down_pdp_context()

    def handleURC(self, urc: str) -> None:
        if urc.startswith("+QIOPEN: "):
            fields = urc.lstrip("+QIOPEN: ").split(",")
            socket_identifier, err = int(fields[0]), int(fields[-1])
            if err == 0:
                self.urc_state = SOCKET_WRITE_STATE
                self.socket_identifier = socket_identifier
            else:
                raise NetworkError("Failed to open socket")
            return
        if urc.startswith("+QIURC: "):
            fields = urc.lstrip("+QIURC: ").split(",")
            if fields[0] == '"recv"':
                self.urc_state = SOCKET_SEND_READ
                self.socket_identifier = int(fields[1])
                self.last_read_payload_length = int(fields[2])
                t0 = time.monotonic()
                self.urc_response = self._readline(self.RECV_READLINE_TIMEOUT)
                self.recv_readline_seconds = time.monotonic() - t0
            if fields[0] == '"closed"':
                self.urc_state = SOCKET_CLOSED
                self.socket_identifier = int(fields[-1])
            return
        self.unhandled_urcs.append(urc)        # Modem.handleURC: only u-blox URCs known

    # --- CustomCloud.sendMessage() over AT sockets -------------------------------------------
    def cloud_send(self, message: bytes, host=CLOUD_HOST, port=CLOUD_PORT) -> str:
        self.create_socket()
        self.connect_socket(host, port)
        result = self.send_message(message)
        self.close_socket()
        return result


class HologramBg96(HologramEc21):
    """The SDK's BG96 class: the same Quectel layer, but its PDP tear-down sends AT+QIACT=0
    (the SDK's slip: context 0 is out of range) instead of AT+QIDEACT=1."""

    def _tear_down_pdp_context(self) -> bool:
        if not self._is_pdp_context_active():
            return True
        ok, _ = self.set("+QIACT", "0", timeout=30)
        self.log.append("PDP context deactivated" if ok == OK else "PDP Context tear down failed")
        return ok == OK


def _answering_server(answer: bytes, expect: int, close_after: bool = False):
    """Hologram's cloud socket as the SDK meets it: reads the message (expect bytes), answers."""
    def behave(conn):
        conn.sock.settimeout(10)
        while len(conn.received) < expect:
            data = conn.sock.recv(65536)
            if not data:
                break
            conn.add(data)
        conn.send(answer)
        if close_after:
            conn.close()
            return
        try:
            while True:
                data = conn.sock.recv(65536)
                if not data:
                    break
                conn.add(data)
        except OSError:
            pass
        conn.eof.set()
    return TcpServer(behave=behave)


def _message(n: int) -> bytes:
    body = ('{"k":"12345678","d":"%s","t":["TOPIC1"]}\r\r')
    filler = "".join(chr(0x41 + i % 26) for i in range(max(0, n - len(body % ""))))
    out = (body % filler).encode()
    assert len(out) == n
    return out


def test_hologram_ec21_sends_a_cloud_message_and_reads_the_pushed_answer(driver_path, emulator):
    """The whole sendMessage() path: start-up commands (with the echo the module comes up with),
    AT+CREG? with <n>=2 parsed by _check_registered_helper(), the PDP context brought up,
    AT+QIOPEN in push mode (OK first, "+QIOPEN: 0,0" after it, picked up by checkURC()),
    one AT+QISENDEX answered "SEND OK", the answer pushed as '+QIURC: "recv",0,5' CR LF "[0,0]"
    CR LF read by ONE readline() at once, then the SDK's "AT+QICLOSE=" (the int id written as
    zero bytes) refused and AT+QIDEACT=1 accepted."""
    msg = _message(120)
    with _answering_server(b"[0,0]", len(msg)) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramEc21(driver_path)
        try:
            assert sdk.results[0][2] == (OK, [])                       # ATE0 (echo skipped)
            assert sdk.is_registered() is True
            sdk.create_socket()
            assert (("+QIACT", "1", (OK, [])) in sdk.results)
            res = sdk.connect_socket(CLOUD_HOST, CLOUD_PORT)
            assert res == (OK, [])                                      # no URC before the OK
            t0 = time.monotonic()
            answer = sdk.send_message(msg)
            took = time.monotonic() - t0
            assert answer == "[0,0]"
            assert sdk.last_read_payload_length == 5 and sdk.socket_identifier == 0
            assert sdk.recv_readline_seconds < 1.0, "pushed data not ended by CR LF"
            assert took < 4
            assert server.wait_connection().wait_received(len(msg)) == msg
            sends = [r for r in sdk.results if r[0] == "+QISENDEX"]
            assert sends == [("+QISENDEX", '0,"%s"' % binascii.hexlify(msg).decode(), (OK, []))]
            sdk.close_socket()
            assert b"AT+QICLOSE=\r\n" in sdk.wire
            close = [r for r in sdk.results if r[0] == "+QICLOSE"][0][2]
            assert close[0] == ERROR and "Failed to close socket" in sdk.log
            assert ("+QIDEACT", "1", (OK, [])) in sdk.results
            assert "PDP context deactivated" in sdk.log
            assert server.gone(timeout=5)              # AT+QIDEACT closed the connection
            assert sdk.unhandled_urcs == [] or all(u.startswith(("+CTZE", "+CREG", "+CEREG"))
                                                   for u in sdk.unhandled_urcs)
        finally:
            sdk.close()


def test_hologram_ec21_message_over_three_qisendex_chunks_answered_mid_send(driver_path, emulator):
    """A 600-byte message goes out as three AT+QISENDEX (255 + 255 + 90 bytes: 510-digit hex
    chunks); the cloud answers after the FIRST chunk, so '+QIURC: "recv",0,5' and its data
    come while chunks are still going out (taken by the checkURC() in front of the next
    command, or by process_response() as a URC, the data line by one readline()); the
    remaining chunks still get SEND OK and send_message() returns at once.  All 600 bytes
    reach the peer in order."""
    msg = _message(600)
    with _answering_server(b"[0,0]", 255) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramEc21(driver_path)
        try:
            sdk.create_socket()
            sdk.connect_socket(CLOUD_HOST, CLOUD_PORT)
            limit = time.monotonic() + 8
            while sdk.urc_state != SOCKET_WRITE_STATE and time.monotonic() < limit:
                sdk.checkURC()
            assert sdk.urc_state == SOCKET_WRITE_STATE
            hexmsg = binascii.hexlify(msg)
            sdk.set("+QISENDEX", '%d,"%s"' % (0, hexmsg[:510].decode()), timeout=10)
            server.wait_connection().wait_received(255)
            time.sleep(0.3)                      # the answer is pushed before the next chunk
            answer = sdk.send_message(msg[255:])
            assert answer == "[0,0]"
            sends = [r for r in sdk.results if r[0] == "+QISENDEX"]
            assert [len(r[1]) - 4 for r in sends] == [510, 510, 180]
            assert all(r[2] == (OK, []) for r in sends)
            assert server.wait_connection().wait_received(600) == msg
        finally:
            sdk.close()


def _cloud(answers: list[bytes], expect: int, close_after: bool):
    """A cloud socket per connection: reads `expect` bytes, answers the next of `answers`,
    then closes (close_after) or keeps reading until the client goes."""
    lock = threading.Lock()

    def behave(conn):
        conn.sock.settimeout(10)
        while len(conn.received) < expect:
            data = conn.sock.recv(65536)
            if not data:
                break
            conn.add(data)
        with lock:
            conn.send(answers.pop(0))
        if close_after:
            conn.close()
            return
        try:
            while True:
                data = conn.sock.recv(65536)
                if not data:
                    break
                conn.add(data)
        except OSError:
            pass
        conn.eof.set()
    return TcpServer(behave=behave)


def test_hologram_ec21_answer_then_peer_close(driver_path, emulator):
    """The cloud answers and closes at once: the push and '+QIURC: "closed",0' follow each
    other; send_message() returns the answer, the "closed" URC is eaten by the checkURC() in
    front of "AT+QICLOSE=" (refused: the SDK's empty id) and AT+QIDEACT=1 is OK."""
    with _cloud([b"[0,0]"], 40, close_after=True) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramEc21(driver_path)
        try:
            assert sdk.cloud_send(_message(40)) == "[0,0]"
            assert server.wait_connection().wait_received(40) == _message(40)
            assert sdk.urc_state == SOCKET_CLOSED and sdk.socket_identifier == 0
            assert sdk.wire.count(b"AT+QICLOSE=\r\n") == 1
            assert [r[2] for r in sdk.results if r[0] == "+QIDEACT"] == [(OK, [])]
            assert sdk.unhandled_urcs == []
        finally:
            sdk.close()


@pytest.mark.parametrize("close_after", [True, False], ids=["peer-closed", "still-up"])
def test_hologram_ec21_second_message_after_qideact(driver_path, emulator, close_after):
    """CustomCloud.sendMessage() twice (HologramCloud's periodic messages do exactly this).
    The SDK never closes connectID 0 (its AT+QICLOSE goes out without the id) and relies on
    AT+QIDEACT=1, which per the TCP(IP) note closes every TCP/IP connection of the context.
    The second message finds the context inactive (AT+QIACT? lists nothing), brings it up
    again, opens connectID 0 again and must get '+QIOPEN: 0,0' and its own answer."""
    with _cloud([b"[0,0]", b"[0,1]"], 40, close_after) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramEc21(driver_path)
        try:
            first = sdk.cloud_send(_message(40))
            n_results = len(sdk.results)
            second = sdk.cloud_send(_message(40))
            assert (first, second) == ("[0,0]", "[0,1]")
            again = [r[0] for r in sdk.results[n_results:]]
            assert again[:6] == ["+CREG", "+QIACT", "+QICSGP", "+QIACT", "+QIOPEN", "+QISENDEX"]
            assert server.wait_connection(1).wait_received(40) == _message(40)
        finally:
            sdk.close()


def test_hologram_ec21_binary_payload_hex_chunks_byte_exact(driver_path, emulator):
    """write_socket() hexlifies (lower case) and cuts 510 digits: 256 bytes holding every
    byte value (CR, LF, NUL, Ctrl-Z, 0xFF included) go out as AT+QISENDEX of 255 bytes and of
    1 byte, both "SEND OK", and the peer receives exactly those 256 bytes."""
    msg = bytes(range(256))
    with _answering_server(b"[0,0]", len(msg)) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramEc21(driver_path)
        try:
            sdk.create_socket()
            sdk.connect_socket(CLOUD_HOST, CLOUD_PORT)
            assert sdk.send_message(msg) == "[0,0]"
            sends = [r for r in sdk.results if r[0] == "+QISENDEX"]
            assert [r[1] for r in sends] == ['0,"%s"' % msg[:255].hex(), '0,"ff"']
            assert all(r[2] == (OK, []) for r in sends)
            assert server.wait_connection().wait_received(256) == msg
        finally:
            sdk.close()


def test_hologram_ec21_refused_connection_raises_from_the_urc(driver_path, emulator):
    """A cloud port that refuses: AT+QIOPEN is OK, then '+QIOPEN: 0,<err>' with a non-zero
    <err> -- handleURC() raises NetworkError out of send_message()'s wait (the SDK never
    writes the data), and a fresh AT+QIOPEN on connectID 0 is accepted afterwards (the failed
    socket does not stay allocated)."""
    import socket as _s
    probe = _s.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", dead_port)
    sdk = HologramEc21(driver_path)
    try:
        sdk.create_socket()
        assert sdk.connect_socket(CLOUD_HOST, CLOUD_PORT) == (OK, [])
        with pytest.raises(NetworkError, match="Failed to open socket"):
            sdk.send_message(b"x" * 10)
        assert b"AT+QISENDEX" not in sdk.wire
        with _answering_server(b"[0,0]", 10) as server:
            emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
            sdk.urc_state = SOCKET_INIT
            assert sdk.connect_socket(CLOUD_HOST, CLOUD_PORT) == (OK, [])
            assert sdk.send_message(b"y" * 10) == "[0,0]"
    finally:
        sdk.close()


def test_hologram_bg96_class_never_frees_connectid_0(driver_path, emulator):
    """The SDK's BG96 class on the same command set: its tear-down "AT+QIACT=0" is refused
    (context 0 is out of range), so neither the context nor connectID 0 -- "closing" after the
    cloud's close, its AT+QICLOSE sent without the id -- is ever released.  The second
    message skips the PDP set-up (AT+QIACT? says active) and its AT+QIOPEN=1,0 is answered
    '+QIOPEN: 0,563' (socket identity used), as a module must: the SDK's fault, raised as
    NetworkError."""
    with _cloud([b"[0,0]", b"[0,1]"], 40, close_after=True) as server:
        emulator.router.add_map(CLOUD_HOST, CLOUD_PORT, "127.0.0.1", server.port)
        sdk = HologramBg96(driver_path)
        try:
            assert sdk.cloud_send(_message(40)) == "[0,0]"
            assert b"AT+QIACT=0\r\n" in sdk.wire
            assert [r[2][0] for r in sdk.results if r[0] == "+QIACT" and r[1] == "0"] == [ERROR]
            assert "PDP Context tear down failed" in sdk.log
            n_results = len(sdk.results)
            with pytest.raises(NetworkError, match="Failed to open socket"):
                sdk.cloud_send(_message(40))
            again = [r[0] for r in sdk.results[n_results:]]
            assert again == ["+CREG", "+QIACT", "+QIOPEN"]         # no QICSGP / QIACT=1
            assert len(server.connections) == 1
        finally:
            sdk.close()


# -----------------------------------------------------------------------------------------------
# IljaK/async-GSM: the Quectel socket manager on its echo-driven response engine
# -----------------------------------------------------------------------------------------------
CTRL_Z = b"\x1a"
EV, TRIGGER, EXPECT_DATA, DATA, R_OK, R_ERROR, R_TIMEOUT = (
    "EVENT", "EXTRA_TRIGGER", "EXPECT_DATA", "DATA", "OK", "ERROR", "TIMEOUT")
FINAL = {R_OK, R_ERROR, R_TIMEOUT}


class Cmd:
    """BaseModemCMD: "AT" + cmd [+ "="] [+ "?"] + args + println() ("\\r\\n")."""

    def __init__(self, cmd: str, args: str = "", timeout: float = 1.0, check=False, modifier=True,
                 trigger: str | None = None, payload: bytes = b"", **info) -> None:
        self.cmd, self.args, self.timeout = cmd, args, timeout
        self.check, self.modifier, self.trigger, self.payload = check, modifier, trigger, payload
        self.resp_started = False
        self.info = info

    def line(self) -> bytes:
        return ("AT" + self.cmd + ("=" if self.modifier else "") + ("?" if self.check else "")
                + self.args + "\r\n").encode()


class AsyncGsmQuectel:
    """GSMSerialModem + SerialCharResponseHandler + QuectelGSMManager's socket and APN paths."""

    SOCKET_CMD_TIMEOUT = 0.6           # library: 10 s
    SOCKET_CONNECTION_TIMEOUT = 5.0    # library: 60 s
    MODEM_COMMAND_TIMEOUT = 1.0        # library: 1 s
    BUFFER_FILL_TIMEOUT = 0.1          # library: 100 ms
    COLLISION_DELAY = 0.03             # library: 30 ms
    SOCKET_BUFFER_SIZE = 256

    def __init__(self, path: str, apn: str = "internet") -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.apn = apn
        self.buffer = bytearray()
        self.expect_fixed = 0
        self.pending: Cmd | None = None
        self.queue: list[Cmd] = []
        self.timer_end: float | None = None
        self.release_end = 0.0
        self.tx = bytearray()
        self.events: list[bytes] = []
        self.collided: list[bytes] = []
        self.results: list[tuple[str, str, str, bytes]] = []   # (cmd, args, type, line)
        self.device_addr = ""
        self.apn_active = False
        self.sockets: dict[int, dict] = {}
        self.received: dict[int, bytearray] = {}

    def close(self) -> None:
        self.ser.close()

    # --- GSMSerialModem::Send / the command queue ---------------------------------------------
    def add(self, cmd: Cmd) -> None:
        self.queue.append(cmd)

    def force(self, cmd: Cmd) -> None:
        self.queue.insert(0, cmd)

    def _busy(self) -> bool:
        return (self.pending is not None or time.monotonic() < self.release_end
                or len(self.buffer) != 0 or self.timer_end is not None or self.ser.in_waiting > 0)

    def _send(self, cmd: Cmd) -> None:
        self.pending = cmd
        data = cmd.line()
        self.tx += data
        self.ser.write(data)
        self.timer_end = time.monotonic() + cmd.timeout

    # --- SerialCharResponseHandler::Loop + GSMSerialModem::Loop --------------------------------
    def loop(self) -> None:
        while True:
            b = self.ser.read(1)
            if not b:
                break
            if self._load(b[0]):
                break
        if self.pending is not None:
            if self.pending.trigger and self.pending.resp_started:
                if self.buffer.startswith(self.pending.trigger.encode()):
                    self.pending.trigger = None
                    self._on_response(self.pending, bytes(self.buffer), TRIGGER)
                    self._reset()
        elif self.buffer and self.timer_end is None:
            self.timer_end = time.monotonic() + self.BUFFER_FILL_TIMEOUT
        if self.timer_end is not None and time.monotonic() >= self.timer_end:
            self.timer_end = None
            self._line_detected(timeout=True)
        if not self._busy() and self.queue:
            self._send(self.queue.pop(0))

    def _load(self, symbol: int) -> bool:
        if self.expect_fixed:
            self.buffer.append(symbol)
            if len(self.buffer) >= self.expect_fixed:
                self.expect_fixed = 0
                self._line_detected()
                return True
            return False
        self.buffer.append(symbol)
        if self.buffer.endswith(b"\r\n"):
            del self.buffer[-2:]
            self._line_detected()
            return True
        return False

    def _reset(self) -> None:
        self.buffer = bytearray()

    def _line_detected(self, timeout: bool = False) -> None:
        line = bytes(self.buffer)
        self._reset()
        self._on_received(line, timeout)

    # --- GSMSerialModem::OnResponseReceived -----------------------------------------------------
    def _on_received(self, line: bytes, timeout: bool) -> None:
        self.timer_end = None if timeout else self.timer_end
        if not timeout:
            self.release_end = time.monotonic() + self.COLLISION_DELAY
        if getattr(self, "_fixed_pending", False):
            self._fixed_pending = False
            self._on_response(self.pending, line, EXPECT_DATA)
            return
        cmd = self.pending
        if not timeout and cmd is not None:
            if not line:
                return
            if not cmd.resp_started and len(line) >= 2 + len(cmd.cmd):
                if line.startswith(b"AT" + cmd.cmd.encode()):
                    cmd.resp_started = True
                    return
                self.collided.append(line)
                self.timer_end = time.monotonic() + cmd.timeout
                self._on_event(line)
                return
        if cmd is not None and (cmd.resp_started or timeout):
            kind = self._type(line, timeout)
            if kind in FINAL:
                self.pending = None
                self.timer_end = None
            else:
                self.timer_end = time.monotonic() + cmd.timeout
            self.results.append((cmd.cmd, cmd.args, kind, line))
            if kind == R_TIMEOUT:
                return                          # GSMModemManager: dropped (no debugPrint)
            self._on_response(cmd, line, kind)
        else:
            self._on_event(line)

    @staticmethod
    def _type(line: bytes, timeout: bool) -> str:
        if timeout:
            return R_TIMEOUT
        if line.startswith(b"OK"):
            return R_OK
        if line.startswith(b"ERROR") or line.startswith(b"+CME ERROR:") or line.startswith(b"+CMS ERROR:"):
            return R_ERROR
        return DATA

    def set_expect_fixed(self, n: int) -> None:
        self._fixed_pending = True
        self.expect_fixed = n

    # --- QuectelGSMManager::OnGSMEvent ------------------------------------------------------------
    def _on_event(self, line: bytes) -> None:
        self.events.append(line)
        text = line.decode("latin-1")
        if text.startswith("+QIOPEN:"):
            args = text[len("+QIOPEN") + 2:].split(",")
            sid, err = int(args[0]), int(args[1])
            self.sockets.setdefault(sid, {})["state"] = "connected" if err == 0 else "failed"
            return
        if text.startswith("+QISEND:"):
            return
        if text.startswith("+QIURC:"):
            args = [a.strip('"') for a in text[len("+QIURC") + 2:].split(",")[:8]]
            if args[0] == "closed" and len(args) >= 2:
                self._on_socket_closed(int(args[1]))
            elif args[0] == "recv" and len(args) == 2:
                self.add(Cmd("+QIRD", f"{int(args[1])},{self.SOCKET_BUFFER_SIZE}", sid=int(args[1])))

    # --- QuectelGSMSocketManager / QuectelGPRSManager::OnGSMResponse ------------------------------
    def _on_response(self, cmd: Cmd, line: bytes, kind: str) -> None:
        if cmd.cmd == "+QIOPEN":
            if kind in (R_ERROR, R_TIMEOUT):
                self.sockets.setdefault(cmd.info["sid"], {})["state"] = "failed"
        elif cmd.cmd == "+QIRD":
            if kind == DATA:
                n = int(re.match(rb"\s*(\d*)", line[len(b"+QIRD") + 2:]).group(1) or 0)
                if n > 0:
                    self.set_expect_fixed(n)
                    self.add(Cmd("+QIRD", f"{cmd.info['sid']},{self.SOCKET_BUFFER_SIZE}", sid=cmd.info["sid"]))
            elif kind == EXPECT_DATA:
                self.received.setdefault(cmd.info["sid"], bytearray()).extend(line)
            elif kind != R_OK:
                self.close_socket(cmd.info["sid"])
        elif cmd.cmd == "+QISEND":
            if kind == TRIGGER:
                out = cmd.payload + CTRL_Z               # WriteSteamContent(): data, EndStream()
                self.tx += out
                self.ser.write(out)
            elif kind not in (R_OK, DATA):
                self.close_socket(cmd.info["sid"])
        elif cmd.cmd == "+QICLOSE":
            if kind in FINAL:
                self.sockets.pop(cmd.info["sid"], None)
        elif cmd.cmd == "+CGDCONT" and kind == R_OK:
            self.force(Cmd("+QICSGP", f'1,1,"{self.apn}","","",0'))
        elif cmd.cmd == "+QICSGP" and kind == R_OK:
            self.force(Cmd("+QIACT", "1", timeout=5.0))
        elif cmd.cmd == "+QIACT":
            if cmd.check:
                if kind == DATA:
                    args = line.decode()[len("+QIACT") + 2:].split(",", 3)
                    self.device_addr = args[3].strip('"') if len(args) > 3 else ""
                elif kind == R_OK:
                    self.apn_active = bool(re.fullmatch(r"\d+\.\d+\.\d+\.\d+", self.device_addr))
            elif kind == R_OK:
                self.force(Cmd("+QIACT", modifier=False, check=True))

    def _on_socket_closed(self, sid: int) -> None:
        sock = self.sockets.get(sid)
        if sock is None:
            return
        if sock.get("state") != "closing":
            self.close_socket(sid)

    # --- public API (GPRSManager / GSMSocketManager) -----------------------------------------------
    def activate_pdp(self) -> None:
        self.force(Cmd("+CGDCONT", f'1,"IP","{self.apn}"'))

    def connect(self, sid: int, ip: str, port: int) -> None:
        self.sockets[sid] = {"state": "connecting"}
        self.add(Cmd("+QIOPEN", f'1,{sid},"TCP","{ip}",{port},0,0',
                     timeout=self.SOCKET_CONNECTION_TIMEOUT, sid=sid))

    def send(self, sid: int, data: bytes) -> None:
        self.add(Cmd("+QISEND", f"{sid},{len(data)}", timeout=self.SOCKET_CMD_TIMEOUT,
                     trigger=">", payload=data, sid=sid))

    def close_socket(self, sid: int) -> None:
        sock = self.sockets.get(sid)
        if sock is not None:
            sock["state"] = "closing"
        self.add(Cmd("+QICLOSE", str(sid), timeout=self.SOCKET_CONNECTION_TIMEOUT, sid=sid))

    def run_until(self, predicate, seconds: float) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.loop()
            if predicate():
                return True
            time.sleep(0.002)
        return predicate()

    def idle(self) -> bool:
        return self.pending is None and not self.queue and not self.buffer


PEER_IP, PEER_PORT = "10.44.0.7", 7001


def _bring_up(gsm: AsyncGsmQuectel, emulator, server) -> None:
    emulator.router.add_map(PEER_IP, PEER_PORT, "127.0.0.1", server.port)
    gsm.activate_pdp()
    assert gsm.run_until(lambda: gsm.apn_active, 8), gsm.results
    gsm.connect(0, PEER_IP, PEER_PORT)
    assert gsm.run_until(lambda: gsm.sockets[0].get("state") == "connected", 8), (gsm.results, gsm.events)


def test_async_gsm_buffer_mode_send_and_late_answer_read_in_256_byte_qird(driver_path, emulator):
    """async-GSM with the echo the module starts with (the library never sends ATE0 and needs
    it: a response only "starts" at the echoed "AT<cmd>" line).  APN bring-up, AT+QIOPEN in
    buffer mode with its OK first and '+QIOPEN: 0,0' as an event, AT+QISEND=0,<n> whose "> "
    triggers the data plus the library's Ctrl-Z (the module takes exactly <n> bytes: the peer
    gets no 0x1A), "SEND OK" not final for the library (the command ends at its timeout).  The
    peer answers later, 600 binary bytes: '+QIURC: "recv",0' -> AT+QIRD=0,256 -> "+QIRD: 256"
    + 256 raw bytes (the fixed-length read) ... until "+QIRD: 0": byte-exact."""
    msg = b"\x1a\x03\x1b" + bytes(range(256))
    answer = bytes((i * 7 + 3) % 256 for i in range(600))
    release = threading.Event()

    def behave(conn):
        conn.sock.settimeout(10)
        while len(conn.received) < len(msg):
            data = conn.sock.recv(65536)
            if not data:
                return
            conn.add(data)
        release.wait(10)
        conn.send(answer)
        try:
            while True:
                data = conn.sock.recv(65536)
                if not data:
                    break
                conn.add(data)
        except OSError:
            pass
    with TcpServer(behave=behave) as server:
        gsm = AsyncGsmQuectel(driver_path)
        try:
            _bring_up(gsm, emulator, server)
            assert gsm.device_addr and gsm.collided == []
            gsm.send(0, msg)
            conn = server.wait_connection()
            assert gsm.run_until(lambda: len(conn.received) >= len(msg), 5), (gsm.results[-4:], gsm.events)
            assert gsm.run_until(lambda: gsm.idle() and gsm.timer_end is None, 5)
            sends = [r for r in gsm.results if r[0] == "+QISEND"]
            assert [r[2] for r in sends] == [DATA, DATA, R_TIMEOUT]   # echo, "SEND OK" not final
            assert sends[0][3] == msg and sends[1][3] == b"SEND OK"       # AT+QISDE default 1
            time.sleep(0.3)
            assert bytes(conn.received) == msg                            # no Ctrl-Z came through
            release.set()
            assert gsm.run_until(lambda: len(gsm.received.get(0, b"")) >= 600 and gsm.idle(), 8), \
                (gsm.results[-6:], gsm.events[-4:])
            assert bytes(gsm.received[0]) == answer
            reads = [r[3] for r in gsm.results if r[0] == "+QIRD" and r[2] == DATA]
            assert reads == [b"+QIRD: 256", b"+QIRD: 256", b"+QIRD: 88", b"+QIRD: 0"]
            assert gsm.events.count(b'+QIURC: "recv",0') == 1
        finally:
            gsm.close()


def test_async_gsm_answer_during_pending_qisend_is_swallowed(driver_path, emulator):
    """An echo peer answers at once: '+QIURC: "recv",0' comes while AT+QISEND is still pending
    for the library (its "SEND OK" is not a final result), after the echo started the response,
    so the URC is handed to the QISEND handler as response data and dropped -- the library
    never reads (its fault; a module does the same).  The module keeps the data: AT+QIRD=0,0
    reports them all unread."""
    with TcpServer("echo") as server:
        gsm = AsyncGsmQuectel(driver_path)
        try:
            _bring_up(gsm, emulator, server)
            gsm.send(0, b"ping-0123456789")
            assert gsm.run_until(lambda: gsm.idle() and gsm.timer_end is None, 5)
            time.sleep(0.2)
            gsm.loop()
            datas = [r[3] for r in gsm.results if r[0] == "+QISEND" and r[2] == DATA]
            assert b'+QIURC: "recv",0' in datas and b'+QIURC: "recv",0' not in gsm.events
            assert 0 not in gsm.received
            gsm.add(Cmd("+QIRD", "0,0", sid=0))
            gsm.run_until(lambda: gsm.idle(), 3)
            qird = [r[3] for r in gsm.results if r[0] == "+QIRD" and r[2] == DATA]
            assert qird == [b"+QIRD: 15,0,15"]
        finally:
            gsm.close()


def test_async_gsm_peer_close_event_closes_the_socket(driver_path, emulator):
    """The peer closes: '+QIURC: "closed",0' is an event (no command pending); the socket
    manager answers it with AT+QICLOSE=0, OK, and forgets the socket; AT+QISTATE then lists
    nothing for it."""
    with TcpServer("close") as server:
        gsm = AsyncGsmQuectel(driver_path)
        try:
            _bring_up(gsm, emulator, server)
            assert gsm.run_until(lambda: 0 not in gsm.sockets and gsm.idle(), 5), \
                (gsm.results[-4:], gsm.events)
            assert b'+QIURC: "closed",0' in gsm.events
            assert [r[2] for r in gsm.results if r[0] == "+QICLOSE"] == [R_OK]
            assert b"AT+QICLOSE=0\r\n" in gsm.tx
            gsm.add(Cmd("+QISTATE", "1,0"))
            gsm.run_until(lambda: gsm.idle(), 3)
            assert [r[3] for r in gsm.results if r[0] == "+QISTATE" and r[2] == DATA] == []
        finally:
            gsm.close()


def test_async_gsm_payload_echo_holding_ok_ends_qisend_early(driver_path, emulator):
    """The module echoes the AT+QISEND data (AT+QISDE defaults to 1) and the library, which
    leaves the echo on, reads that echo as response lines: a payload holding CR LF "OK" CR LF
    gives the pending AT+QISEND an early final OK (the library's fault -- it never sends
    AT+QISDE=0); the rest of the echo and the real "SEND OK" then arrive as events.  The peer
    still gets exactly the payload, without the library's trailing Ctrl-Z."""
    msg = b"hello\r\nOK\r\nworld"
    with TcpServer("sink") as server:
        gsm = AsyncGsmQuectel(driver_path)
        try:
            _bring_up(gsm, emulator, server)
            gsm.send(0, msg)
            conn = server.wait_connection()
            assert gsm.run_until(lambda: len(conn.received) >= len(msg) and gsm.idle(), 5)
            gsm.run_until(lambda: False, 0.3)
            sends = [(r[2], r[3]) for r in gsm.results if r[0] == "+QISEND"]
            assert sends == [(DATA, b"hello"), (R_OK, b"OK")]
            assert b"SEND OK" in gsm.events and b"world" in gsm.events
            assert bytes(conn.received) == msg
        finally:
            gsm.close()
