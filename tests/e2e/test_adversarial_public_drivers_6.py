"""Adversarial tests: a sixth set of public host code that drives a Quectel EC2x (EC25/EG25-G,
and the BG96 whose TCP(IP) command set is the EC25's), replayed through the pty with its own
line endings, port handling, waits and parsers against loopback peers.  (Earlier files:
test_adversarial_public_drivers.py -- TinyGSM, Mbed, FreeRTOS; _2.py -- bg9x_ssl_zephyr, Azure
EWF, Twilio; _3.py -- Hologram, Alibaba LinkSDK, Seeed WioLTE, mpy-wiolte, Twilio; _4.py --
ThaiEasyElec, darshanmirajkar/Quectel_EC21; _5.py -- ghuvrons/quectel-ec25(-rtos), Sixfab
pico_lte; test_adversarial_rtthread_espmodem.py, test_adversarial_driver_init.py -- which
replays MuditaOS's modemInit set, not its SIM checks.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- Sixfab's Raspberry Pi Cellular IoT HAT library (Quectel BG96),
  sixfab/Sixfab_RPi_CellularIoT_App_Shield cellulariot/cellulariot.py (at 0c1de2c):
  sendATCommOnce() opens the port if it is closed, builds "\\r\\n" + command + "\\r\\n" (a CR LF
  *before* the command too), calls reset_input_buffer() and writes it; sendATComm(command,
  desired) then loops: every pass starts an empty `response`, reads whatever in_waiting holds,
  and on `desired in response` closes the port and returns; after more than TIMEOUT (3) whole
  seconds (millis() is int(time.time())) it sends the command again.  It never sends ATE0, so
  the module's echo stays on.  activateContext(): AT+QICSGP=1 ("OK\\r\\n"), 1 s, AT+QIACT=1
  ("\\r\\n"); connectToServerTCP(): AT+QIOPEN=1,1,"TCP","<ip>",<port>,0,0 ("OK\\r\\n"), then
  AT+QISTATE=0,1 ("OK\\r\\n"); sendDataTCP(data): AT+QISEND=1,<len(data)> (">"), then the data
  through the same sendATComm -- so "\\r\\n" + data + "\\r\\n" -- waiting for "SEND OK";
  startUDPService(): AT+QIOPEN=1,1,"UDP SERVICE","<ip>",0,3005,0 ("OK\\r\\n"), AT+QISTATE=0,1
  ("\\r\\n"); sendDataUDP(data): AT+QISEND=1,<len>,"<ip>",<port> (">"), the wrapped data
  ("SEND OK"); closeConnection(): AT+QICLOSE=1 ("\\r\\n").  Its closing of the port between
  the "> " prompt and the data is what the emulator treats differently from the module (the
  HAT's UART carries no close): the strict xfail below.
- Eclipse Kura's Quectel modem support, eclipse-kura/kura
  kura/org.eclipse.kura.net.admin/src/main/java/org/eclipse/kura/net/admin/modem/quectel/
  generic/QuectelGeneric.java + QuectelGenericAtCommands.java (and the older ec25/QuectelEC25.java
  + QuectelEC25AtCommands.java, same SIM check), on hspa/HspaModem.java + HspaModemAtCommands.java
  and kura/org.eclipse.kura.core.comm/.../CommConnectionImpl.java: every query opens the AT
  port, runs isAtReachable() ("at\\r\\n" until a reply containing "OK", 3 tries), then
  sendCommand(cmd, 1000, 100): flushSerialBuffer() (whatever arrives within 50 ms is eaten),
  the command (lower case, "\\r\\n"), up to 1000 ms for a first byte, then bytes until 100 ms of
  silence; then the port is closed.  getResponseString() strips `^\\S*\\s*` and a trailing OK.
  isSimCardReady(): "at+qsimstat?", split at ',' and field 1 > 0; getMobileSubscriberIdentity()
  and getIntegratedCirquitCardId() ask AT+CIMI / AT+CCID only when the SIM is ready;
  getSignalStrength() "at+csq" (-113 + 2 * rssi); getRegistrationStatus() "at+cgreg?" (field 1);
  getCallTxCounter()/getCallRxCounter() "at+qgdcnt?" (split at ' ', then at ',').  The echo
  stays on (Kura never sends ATE0).
- MuditaOS (the Mudita Pure phone, a Quectel EC25), mudita/MuditaOS
  module-services/service-cellular/ServiceCellular.cpp: handle_sim_sanity_check() ->
  sim_check_hot_swap(): AT+QSIMDET? must answer a line containing "+QSIMDET: 1" and AT+QSIMSTAT?
  one containing "+QSIMSTAT: 1"; if either fails (an ERROR too: then AT+CEER is sent for the
  log) it sends AT+QSIMDET=1,0, AT+QSIMSTAT=1, AT&W, logs "Modem reboot required, Please remove
  battery!" and the state machine goes to ModemFatalFailure ("user will be promped about full
  shutdown"); commands end "\\r" (module-cellular/at/Commands.hpp).  The settings are saved by
  the module, so after the power cycle the check passes.

Evidence for the module's answers: the EC25&EC21 AT Commands Manual V1.3 (docs corpus,
cdn.shopify.com/.../Quectel_EC25_EC21_AT_Commands_Manual_V1.3.pdf) lists AT+QINISTAT,
AT+QSIMDET, AT+QSIMSTAT in its (U)SIM chapter and AT+QGDCNT in the packet domain chapter (the
CSDN summary of the EC20 R2.1 command set, blog.csdn.net/qq_42892705/article/details/103682033,
lists the same); their formats are quoted from the Quectel LTE Standard AT Commands Manual text
stored in the reference corpus (Chinese edition, ch. 5 "(U)SIM Related Commands": AT+QSIMDET?
-> "+QSIMDET: <enable>,<insert_level>", AT+QSIMSTAT? -> "+QSIMSTAT: <enable>,<inserted_status>"
with the example "+QSIMSTAT: 0,1", both "configuration saved automatically"; ch. 10.15
"AT+QGDCNT?" -> "+QGDCNT: <bytes_sent>,<bytes_recv>", example "+QGDCNT: 3832,4618"; the English
EG800Q&EG91xQ edition, §5.9-5.11 and §9.9, says the same).

Every host name or address dialled is routed to 127.0.0.1.  Where a driver assumes something the
module does not do, the test asserts what the module does and names the assumption; a strict
xfail is an emulator difference from a real EC2x, with the evidence in its reason.
"""
from __future__ import annotations

import re
import socket
import time

import pytest
import serial

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer

SLOW = 3                     # drivers' short waits widened for a loaded 2-core machine
SERVER_IP = "203.0.113.10"   # the IP the Sixfab sample is given (TEST-NET-3), routed to loopback
SERVER_PORT = 5000


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =================================================================================================
# Sixfab Cellular IoT HAT library (BG96): sixfab/Sixfab_RPi_CellularIoT_App_Shield
# =================================================================================================
class SixfabCellularIoT:
    """cellulariot.py's CellularIoT: one pyserial port, closed after every answered command."""

    TIMEOUT = 3     # seconds (the driver's own; millis() counts whole seconds)

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial()
        self.ser.port = path
        self.ser.baudrate = 115200
        self.ser.timeout = 0
        self.ip_address = ""
        self.port_number = ""
        self.sent: list[str] = []        # each composed write, resends included
        self.answers: list[str] = []     # the `response` of the pass that matched
        # everything read for a command, all its passes: the module's answer may come in more
        # than one read (its information line in one pass, OK in the next), so what a test
        # checks of the answer is here, not in the matching pass alone
        self.heard: list[str] = []
        self.resends = 0                 # commands sent again after TIMEOUT

    def close(self) -> None:
        if self.ser.is_open:
            self.ser.close()

    def send_once(self, command: str) -> None:
        """sendATCommOnce()."""
        if not self.ser.is_open:
            self.ser.open()
        compose = "\r\n" + str(command) + "\r\n"
        self.ser.reset_input_buffer()
        self.ser.write(compose.encode())
        self.sent.append(compose)

    def send(self, command: str, desired: str, give_up: float = 30) -> str:
        """sendATComm(): resend every > TIMEOUT whole seconds until one pass's bytes hold
        `desired`.  (The driver loops for ever; the test gives up after `give_up` s.)"""
        self.send_once(command)
        timer = int(time.time())
        deadline = time.monotonic() + give_up
        heard = ""
        while True:
            if int(time.time()) - timer > self.TIMEOUT:
                self.send_once(command)
                self.resends += 1
                timer = int(time.time())
            response = ""
            while self.ser.in_waiting:
                response += self.ser.read(self.ser.in_waiting).decode("utf-8")
            heard += response
            if response.find(desired) != -1:
                self.answers.append(response)
                self.heard.append(heard)
                self.ser.close()
                return response
            assert time.monotonic() < deadline, (command, desired, self.sent)
            time.sleep(0.001)            # the driver spins; a 1 ms nap keeps a 2-core box usable

    # -- the library's TCP/UDP functions ----------------------------------------------------------
    def activate_context(self) -> None:
        self.send("AT+QICSGP=1", "OK\r\n")
        time.sleep(1.0)                  # delay(1000)
        self.send("AT+QIACT=1", "\r\n")

    def connect_to_server_tcp(self) -> None:
        self.send(f'AT+QIOPEN=1,1,"TCP","{self.ip_address}",{self.port_number},0,0', "OK\r\n")
        self.send("AT+QISTATE=0,1", "OK\r\n")

    def send_data_tcp(self, data: str) -> None:
        self.send(f"AT+QISEND=1,{len(data)}", ">")
        self.send(data, "SEND OK")

    def start_udp_service(self) -> None:
        self.send(f'AT+QIOPEN=1,1,"UDP SERVICE","{self.ip_address}",0,3005,0', "OK\r\n")
        self.send("AT+QISTATE=0,1", "\r\n")

    def send_data_udp(self, data: str) -> None:
        self.send(f'AT+QISEND=1,{len(data)},"{self.ip_address}",{self.port_number}', ">")
        self.send(data, "SEND OK")

    def close_connection(self) -> None:
        self.send("AT+QICLOSE=1", "\r\n")


def test_sixfab_tcp_open_state_and_close_with_a_port_closed_after_each_answer(driver_port, emulator):
    """activateContext(), connectToServerTCP(), closeConnection(): every line wrapped in CR LF,
    the port closed as soon as a pass holds the awaited text -- for AT+QIACT=1 and AT+QICLOSE=1
    that is the echo of the leading CR LF, before any answer -- and reopened (with its input
    flushed) for the next command.  The module still runs every command it was sent."""
    driver_path, modem_port = driver_port
    with TcpServer("echo") as server:
        emulator.router.add_map(SERVER_IP, SERVER_PORT, "127.0.0.1", server.port)
        d = SixfabCellularIoT(driver_path)
        try:
            d.ip_address, d.port_number = SERVER_IP, SERVER_PORT
            d.activate_context()
            d.connect_to_server_tcp()
            server.wait_connection(timeout=10 * SLOW)
            # AT+QISTATE's answer, up to the "OK\r\n" the driver waits for, lists the socket on
            # context 1 in buffer mode (0): "opening" (1) or already connected (2) -- the driver
            # asks right after AT+QIOPEN's OK, before +QIOPEN: 1,0, and does not read the line
            # anyway.  (Not only the pass that matched: CI once read the line and OK apart.)
            assert re.search(r'\+QISTATE: 1,"TCP","203\.0\.113\.10",5000,\d+,[12],1,1,0,"\w+"\r\n',
                             d.heard[-1]), d.heard[-1]
            d.close_connection()
            assert server.gone(timeout=10 * SLOW)            # AT+QICLOSE ran although the
        finally:                                             # driver closed the port at its echo
            d.close()
        assert d.resends == 0, d.sent
    # the next program to open the port meets a clean command state -- once the modem has seen
    # the driver go (a close and an open quicker than that are one program to it: a pty shows
    # no hang-up in between, and a loaded machine made the full run that quick once)
    deadline = time.monotonic() + 10
    while emulator.run(lambda: modem_port.port.attached) and time.monotonic() < deadline:
        time.sleep(0.005)
    with serial.Serial(driver_path, 115200, timeout=0) as ser:
        ser.reset_input_buffer()
        ser.write(b"AT\r")
        got, deadline = b"", time.monotonic() + 5 * SLOW
        while not got.endswith(b"OK\r\n") and time.monotonic() < deadline:
            got += ser.read(256)
            time.sleep(0.005)
        assert got == b"AT\r\r\nOK\r\n", got


def test_sixfab_udp_service_open_state_and_close(driver_path, emulator):
    """startUDPService(): the UDP SERVICE on local port 3005 (bound elsewhere on loopback
    through the listen map) shows in AT+QISTATE=0,1 as "UDP SERVICE" on local port 3005,
    state 1 or 2 (the driver asks right after OK, maybe before +QIOPEN: 1,0); closeConnection()
    frees it (a second startUDPService() opens id 1 again).  (sendDataUDP() meets the same
    closed-port prompt as sendDataTCP(): see the strict xfail below.)"""
    emulator.router.add_listen(3005, "127.0.0.1", free_udp_port())
    d = SixfabCellularIoT(driver_path)
    try:
        d.ip_address, d.port_number = SERVER_IP, SERVER_PORT
        d.activate_context()
        d.send(f'AT+QIOPEN=1,1,"UDP SERVICE","{d.ip_address}",0,3005,0', "OK\r\n")
        # The test's own AT+QISTATE waits for the end of a +QISTATE line ('"' CR LF), not for
        # "OK": the driver closes the port at a command's first CR LF and reopens it at once,
        # which the modem cannot tell from no close (docs/behaviour.md), so the tail of the
        # previous answer (its OK) may come first at the next open on a loaded machine.
        d.send("AT+QISTATE=0,1", '"\r\n')    # (the driver waits for "\r\n"; the line shows the list)
        assert re.search(r'\+QISTATE: 1,"UDP SERVICE","127\.0\.0\.1",0,3005,[12],1,1,0,"\w+"\r\n',
                         d.heard[-1]), d.heard[-1]
        d.close_connection()
        d.start_udp_service()
        d.send("AT+QISTATE=0,1", '"\r\n')
        assert '+QISTATE: 1,"UDP SERVICE"' in d.heard[-1], d.heard[-1]
        d.close_connection()
    finally:
        d.close()
    assert d.resends == 0, d.sent


@pytest.mark.xfail(strict=True, reason=(
    "Sixfab's cellulariot.py sendDataTCP()/sendDataUDP() send AT+QISEND=1,<len>, close the port "
    "as soon as '>' arrives (sendATComm closes it after every match), reopen it and write the "
    "data ('\\r\\n'+data+'\\r\\n'). The emulator takes the host's close as the end of the "
    "data prompt (docs/behaviour.md: 'a half-entered data prompt is abandoned'), so the data "
    "land in command state, no SEND OK ever comes and the driver resends the data line every "
    "3-4 s for ever. The HAT wires the module's UART to the Pi's /dev/ttyS0: closing that port "
    "sends the module nothing (no DTR, no hang-up), so a real BG96/EC25 keeps its '> ' prompt, "
    "takes the next <len> bytes (CR LF + 'hel') and answers SEND OK -- which is how Sixfab's own "
    "ThingSpeak/basicUDP samples work on the hardware (TCP(IP) AT Commands Manual AT+QISEND: "
    "'> ' then exactly <send_length> bytes, then SEND OK). Started with --uart (a close is "
    "no hang-up) the emulator does the same: the test after this one"))
def test_sixfab_send_data_tcp_after_the_port_was_closed_at_the_prompt(driver_path, emulator):
    """sendDataTCP() with the driver's close/reopen between the '>' and the data; the reopen
    comes a little after the close (the driver prints each response to the console first), so
    the close is always seen.  The module counts bytes: the server must get CR LF + "hel", and
    "lo" + CR LF is a stray line.  (With the emulator's default, a close is a hang-up.)"""
    sixfab_send_after_a_close(driver_path, emulator)


@pytest.fixture
def uart_port_path(open_modem):
    """driver_path's EC2x on a port where the host's close is no hang-up (the CLI's --uart:
    the HAT's UART, no DTR wired)."""
    host, _ = open_modem("ec2x", echo=True, hangup_on_close=False)
    host.close()
    return host.path


def test_sixfab_send_data_tcp_after_a_close_on_a_uart_port(uart_port_path, emulator):
    """The same driver against a modem started as the HAT wires it (--uart): the close at the
    prompt is not seen, the prompt takes the next 5 bytes (CR LF + "hel") and SEND OK reaches
    the reopened port."""
    sixfab_send_after_a_close(uart_port_path, emulator)


def sixfab_send_after_a_close(path, emulator) -> None:
    with TcpServer("echo") as server:
        emulator.router.add_map(SERVER_IP, SERVER_PORT, "127.0.0.1", server.port)
        d = SixfabCellularIoT(path)
        try:
            d.ip_address, d.port_number = SERVER_IP, SERVER_PORT
            d.activate_context()
            d.connect_to_server_tcp()
            conn = server.wait_connection(timeout=10 * SLOW)
            d.send("AT+QISEND=1,5", ">")
            time.sleep(0.5)
            d.send("hello", "SEND OK", give_up=5)      # (past one resend: already wrong)
            assert conn.wait_received(5, timeout=10 * SLOW) == b"\r\nhel"
        finally:
            d.close()
        assert d.resends == 0, d.sent


# =================================================================================================
# Eclipse Kura: QuectelGeneric / HspaModem over CommConnectionImpl
# =================================================================================================
class KuraQuectel:
    """The parts of QuectelGeneric/HspaModem that talk to the module (see the docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _send(self, ser: serial.Serial, command: str) -> bytes:
        """CommConnectionImpl.sendCommand(command, 1000, 100)."""
        eat = time.monotonic() + 0.05            # flushSerialBuffer(): 50 ms of input eaten
        while time.monotonic() < eat:
            ser.read(4096)
            time.sleep(0.005)
        ser.write(command.encode())
        buf = bytearray()
        first = time.monotonic() + 1.0 * SLOW    # up to 1000 ms for a first byte
        while not buf and time.monotonic() < first:
            buf += ser.read(4096)
            time.sleep(0.002)
        quiet = time.monotonic() + 0.1 * SLOW    # then until 100 ms of silence
        while time.monotonic() < quiet:
            more = ser.read(4096)
            if more:
                buf += more
                quiet = time.monotonic() + 0.1 * SLOW
            time.sleep(0.002)
        return bytes(buf)

    def _query(self, command: str) -> bytes:
        """A freshly opened port: isAtReachable() ("at\\r\\n" until OK, 3 tries), the
        command, the port closed."""
        ser = serial.Serial(self.path, 115200, timeout=0)
        try:
            for _ in range(3):
                if b"OK" in self._send(ser, "at\r\n"):
                    break
            else:
                raise AssertionError("Modem not available for AT commands")
            return self._send(ser, command)
        finally:
            ser.close()

    def _answer(self, command: str) -> str:
        """HspaModem.getResponseString(): the echo (first word) and a trailing OK stripped."""
        text = self._query(command).decode("latin-1")
        text = re.sub(r"^\S*\s*", "", text)
        return re.sub(r"\s*(OK)?\s*$", "", text)

    def serial_number(self) -> str:
        return self._answer("at+cgsn\r\n").replace("#CGSN:", "").strip()

    def model(self) -> str:
        return self._answer("at+gmm\r\n")

    def manufacturer(self) -> str:
        return self._answer("at+gmi\r\n")

    def revision(self) -> str:
        return self._answer("at+gmr\r\n")

    def signal_strength(self) -> int:
        answer = self._answer("at+csq\r\n")
        assert answer.startswith("+CSQ:"), answer
        return -113 + 2 * int(answer[len("+CSQ:"):].split(",")[0])

    def registration_status(self) -> str:
        stat = int(self._answer("at+cgreg?\r\n").split(",")[1])
        return {0: "NOT_REGISTERED", 1: "REGISTERED_HOME", 3: "REGISTRATION_DENIED",
                5: "REGISTERED_ROAMING"}.get(stat, "UNKNOWN")

    def is_sim_card_ready(self) -> bool:
        fields = self._answer("at+qsimstat?\r\n").split(",")
        return len(fields) > 1 and fields[1].strip().isdigit() and int(fields[1]) > 0

    def imsi(self) -> str:
        return self._answer("at+cimi\r\n").replace("+CIMI:", "").strip()

    def data_counters(self) -> tuple[int, int]:
        """getCallTxCounter() / getCallRxCounter() (one read here for both)."""
        answer = self._answer("at+qgdcnt?\r\n")
        tx, rx = answer.split(" ")[1].split(",")
        return int(tx), int(rx)


def test_kura_identity_signal_and_registration(driver_path):
    """The constructor's reads that work: IMEI, model, manufacturer, revision, RSSI, and the
    registration poll -- each on a port opened, probed with "at" and closed again, echo on."""
    k = KuraQuectel(driver_path)
    assert k.serial_number() == "867698041234567"
    assert k.model() == "EC25"
    assert k.manufacturer() == "Quectel"
    assert k.revision() == "EC25EFAR06A06M4G"
    assert k.signal_strength() == -113 + 2 * 24
    assert k.registration_status() == "REGISTERED_HOME"


# Was a bug, fixed: Kura's QuectelGeneric/QuectelEC25.isSimCardReady() sends 'at+qsimstat?' and
# needs field 1 of the answer > 0; the emulator answered ERROR, so Kura took the SIM as absent and
# never read the IMSI or ICCID. A real EC25 answers '+QSIMSTAT: <enable>,<inserted_status>' then
# OK, e.g. '+QSIMSTAT: 0,1' with a SIM in (EC25&EC21 AT Commands Manual V1.3 (U)SIM chapter;
# Quectel LTE Standard AT manual ch. 5.11: <inserted_status> 0 removed, 1 inserted, 2 unknown).
def test_kura_quectel_sim_ready_then_imsi(driver_path):
    k = KuraQuectel(driver_path)
    assert k.is_sim_card_ready()
    assert k.imsi() == "460011234567890"


# Was a bug, fixed: Kura's QuectelGeneric.getCallTxCounter()/getCallRxCounter() send
# 'at+qgdcnt?\r\n' and take the numbers after '+QGDCNT: '; the emulator answers ERROR, so Kura
# reports 0 bytes sent and received for ever. A real EC25 answers '+QGDCNT:
# <bytes_sent>,<bytes_recv>' then OK (e.g. '+QGDCNT: 3832,4618'; EC25&EC21 AT Commands Manual V1.3
# packet domain chapter, AT+QGDCNT Packet Data Counter; Quectel LTE Standard AT manual ch. 10.15)
def test_kura_quectel_data_counters_after_traffic(driver_path, emulator):
    """Some TCP traffic through AT+QIOPEN/AT+QISEND first, so the counters have something to
    count; Kura's parse must then yield numbers, the sent one at least the payload."""
    with TcpServer("echo") as server:
        emulator.router.add_map(SERVER_IP, SERVER_PORT, "127.0.0.1", server.port)
        host = Host(driver_path)
        try:
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at('AT+QICSGP=1,1,"internet","","",1;+QIACT=1') == b"\r\nOK\r\n"
            assert host.at(f'AT+QIOPEN=1,0,"TCP","{SERVER_IP}",{SERVER_PORT},0,0') == b"\r\nOK\r\n"
            host.seen(b"+QIOPEN: 0,0", timeout=10 * SLOW)
            host.write("AT+QISEND=0,10\r")
            host.read_until(b"> ")
            host.write(b"0123456789")
            host.read_until(b"SEND OK\r\n")
            server.wait_connection(timeout=10 * SLOW).wait_received(10, timeout=10 * SLOW)
        finally:
            host.close()
    reply = KuraQuectel(driver_path)._query("at+qgdcnt?\r\n")
    assert re.search(rb"\+QGDCNT: \d+,\d+\r\n\r\nOK\r\n$", reply), reply
    tx, rx = KuraQuectel(driver_path).data_counters()
    assert tx >= 10 and rx >= 0


# =================================================================================================
# MuditaOS (Mudita Pure, EC25): ServiceCellular::handle_sim_sanity_check()
# =================================================================================================
FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r\n]*)\r\n")


class MuditaChannel:
    """DLC_channel::cmd(): the command (its "\\r" included), lines until OK / ERROR / +CME ERROR;
    `response` holds the lines (echo lines dropped), `ok` the final result."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.log: list[str] = []

    def close(self) -> None:
        self.ser.close()

    def cmd(self, command: str, timeout: float = 5) -> tuple[bool, list[str]]:
        self.ser.write(command.encode())
        self.log.append(command)
        buf, deadline = bytearray(), time.monotonic() + timeout * SLOW
        while not FINAL.search(buf):
            assert time.monotonic() < deadline, (command, bytes(buf))
            buf += self.ser.read(4096)
            time.sleep(0.002)
        m = FINAL.search(buf)
        lines = [ln for ln in bytes(buf[:m.start()]).decode("latin-1").split("\r\n")
                 if ln and not ln.upper().startswith("AT")]
        return m.group(1) == b"OK", lines + [m.group(1).decode()]


def mudita_sim_check_hot_swap(ch: MuditaChannel) -> bool:
    """sim_check_hot_swap(): True when no reboot is needed."""
    reboot_needed = False
    ok, resp = ch.cmd("AT+QSIMDET?\r")                       # is_SIM_detection_enabled()
    if not (ok and "+QSIMDET: 1" in resp[0]):
        if not ok:
            ch.cmd("AT+CEER\r")                              # log_last_AT_error()
        reboot_needed = True
    ok, resp = ch.cmd("AT+QSIMSTAT?\r")                      # is_SIM_status_enabled()
    if not (ok and "+QSIMSTAT: 1" in resp[0]):
        if not ok:
            ch.cmd("AT+CEER\r")
        reboot_needed = True
    if reboot_needed:
        for command in ("AT+QSIMDET=1,0\r", "AT+QSIMSTAT=1\r", "AT&W\r"):
            ok, _ = ch.cmd(command)
            if not ok:
                ch.cmd("AT+CEER\r")
    return not reboot_needed


def _wait_booted(ch: MuditaChannel) -> None:
    """After the power cycle: AT until OK, then AT+CPIN? until READY (the SIM is busy until
    +CPIN: READY)."""
    deadline = time.monotonic() + 20 * SLOW
    while time.monotonic() < deadline:
        ch.ser.reset_input_buffer()
        ch.ser.write(b"AT\r")
        time.sleep(0.2)
        if b"OK\r\n" in ch.ser.read(4096):
            break
    while time.monotonic() < deadline:
        ok, resp = ch.cmd("AT+CPIN?\r")
        if ok and "+CPIN: READY" in resp[0]:
            return
        time.sleep(0.2)
    raise AssertionError("the module did not come back")


# Was a bug, fixed: MuditaOS handle_sim_sanity_check() sends AT+QSIMDET? and AT+QSIMSTAT? and
# needs lines containing '+QSIMDET: 1' and '+QSIMSTAT: 1'; otherwise it sends AT+QSIMDET=1,0,
# AT+QSIMSTAT=1, AT&W and goes to ModemFatalFailure ('Modem reboot required, Please remove
# battery!'). The emulator answers ERROR to all four (and to AT+CEER, which it sends to log the
# error), so the phone fails its sanity check on every boot. A real EC25 answers '+QSIMDET:
# <enable>,<insert_level>' / '+QSIMSTAT: <enable>,<inserted_status>' then OK, takes AT+QSIMDET=1,0
# and AT+QSIMSTAT=1 with OK and keeps both ("configuration saved automatically"), so after the
# power cycle the answers are '+QSIMDET: 1,0' and '+QSIMSTAT: 1,1' (EC25&EC21 AT Commands Manual
# V1.3 (U)SIM chapter; formats from the Quectel LTE Standard AT manual ch. 5.10/5.11)
def test_muditaos_sim_hot_swap_sanity_check_passes_after_the_power_cycle(open_modem):
    host, _ = open_modem("ec2x")                 # echo off: MuditaOS's modemInit sent ATE0
    host.close()
    ch = MuditaChannel(host.path)
    try:
        first_boot = mudita_sim_check_hot_swap(ch)
        assert "AT+CEER\r" not in ch.log, ch.log  # no command failed
        assert not first_boot                    # detection off by default: enable, reboot
        assert ch.log[-3:] == ["AT+QSIMDET=1,0\r", "AT+QSIMSTAT=1\r", "AT&W\r"], ch.log
        ch.cmd("AT+CFUN=1,1\r")                  # the battery pulled and put back
        _wait_booted(ch)
        assert mudita_sim_check_hot_swap(ch), ch.log
    finally:
        ch.close()
