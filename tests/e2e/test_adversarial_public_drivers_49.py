"""Adversarial tests: a forty-ninth set of public host code pointed at the pty -- three
drivers of the TCP/IP command set not replayed by earlier rounds (a search of tests/ and
/tmp/notes for the store ids below, "c4g_", "Enter_ec20_Transparent", "EC20_ReLink", "AP_LTE"
and "bridge_data" finds nothing; the store did not name any of the three repositories):
(1) a FreeRTOS EC20 "4G" task (Chinese comments, 2019-2021) that lives in transparent mode:
its state machine from power-on (ATE0 retried, AT+CPIN?, AT+QCCID, AT+CREG? / AT+CGREG? read
at fixed offsets, AT+CSQ, the operator from the ICCID's first six digits, AT+QICSGP, AT+QIACT,
the dummy AT+QIOPEN?, AT+QIOPEN=...,0,2 waiting for CONNECT) and its path after an MCU reset
with the module still online ("+++", AT+QISTATE=1,0 read at fixed offsets, AT+QICLOSE, ATO);
(2) an STM32 + FreeRTOS EC20 ground-station link ("Techx 2019-8-30, author WangD"): printf()
commands with fixed delays and strstr() on one receive buffer, a direct-push AT+QIOPEN, then
AT+QISWTMD=0,2 into transparent mode, binary packets, and its relink after "NO CARRIER"
("+++" sent in command state, AT+QICLOSE, AT+QIOPEN, AT+QISWTMD again), plus its AT+QISEND
variable-length send and AT+QISEND=0,0 query;
(3) an ArduPilot "AP_LTE" library (a MAVLink-over-LTE bridge): a UDP AT+QIOPEN with a local
port, AT+QISWTMD=0,1 (direct push, which the code calls "ENABLE_TRANSPARENT"), then raw
MAVLink bytes both ways.
Each is replayed through the pty with its own line endings, timings and parsers against
loopback TCP / UDP peers, every address the drivers dial routed to 127.0.0.1.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- store file id 16101787558 ("移远EC20，4g驱动", FreeRTOS, UART7; read whole, 36,436 characters).
  What the model keeps:
  * _uart7_send(&rx, cmd, len, callback_4g_recv) then c4g_sem_get(t): the callback gives the
    semaphore when a received frame (UART idle-line frame, modelled as bytes followed by 20 ms
    of silence) starts with CR LF; the step then reads that frame (rx->buf / rx->len).
    Checks: "OK" at rx->buf[len-4]; a prefix at rx->buf[2] ("+CPIN: READY", "+QCCID:",
    "+CSQ:", "CONNECT"); fixed offsets: AT+CREG? n/stat at 9/11, AT+CGREG? at 10/12, AT+QIACT?
    state at 12, the ICCID from 10 up to the CR, AT+QISTATE=1,0's fields from 12 split on
    commas (connectID, service, IP, remote port, local port, socket state, contextID,
    serverID, access mode, AT port).
  * main_task_4g(): ST_EXIT_TRANSPARTENT first ("+++" after 1 s, c4g_sem_get(1000), 1 s), on
    an answer tcp_exist = 1 -> ICCID -> CSQ -> operator -> ST_CHK_TCP (AT+QISTATE=1,0: state
    '2' -> ST_CLOSE_TCP on the first pass (AT+QICLOSE=0, "OK" at buf[2], 100 ms) or ATO
    (ST_ENTER_TRANSPARENT, "CONNECT" at buf[2]) later); with no answer -> AT+CPIN?, AT+QCCID
    -> ... -> AT+QIDEACT=1.  Power-on: ATE0 retried every 100 ms until "OK", AT+CPIN? (5 s),
    AT+QCCID, AT+CREG?, AT+CGREG?, AT+CSQ (a value above 20 ends the sampling), the operator
    from the ICCID prefix (898601 = China Unicom -> "UNINET"), AT+QICSGP=1,1,"UNINET","","",1,
    AT+QIACT=1 (15 s), AT+QIOPEN? (the author's filler between AT+QIACT and AT+QIOPEN: "the
    reply to the open sometimes had an extra leading 0x0D"; its result is ignored), then
    AT+QIOPEN=1,0,"TCP","<ip>",<port>,0,2 (153 s) wanting CONNECT at buf[2].  The commented-out
    server 120.55.115.113:5008 in the source is the address replayed.
- store file id 31330620150 ("Techx 2019-8-30 / author WangD", STM32 + FreeRTOS, printf() on
  USART1; read whole, 25,528 characters).  What the model keeps:
  * Every command is printf("...\r\n"), then a fixed delay_ms(), then strstr() on
    usart_4g.p_buf (the receive ISR's buffer, cleared by Clear_Buffer()).  Exit_ec20_
    Transparent() = "+++" then 1000 ms, no silence before it; Enter_ec20_Transparent() =
    AT+QISWTMD=0,2 then 500 ms (the answer is not read).
  * EC20_Init_Transparent(): AT until "OK" (500 ms each), ATE0, AT+IPR?, AT+CSQ, ATI, AT+CPIN?
    until "+CPIN: READY", AT+CREG? until "+CREG: 0,1" or 0,5, AT+CGREG? likewise, AT+COPS?,
    AT+QICLOSE=0, AT+QICSGP=1,1,"CMNET","","",0 (1000 ms, then "OK" polled), AT+QIDEACT=1,
    AT+QIACT=1 ("OK" polled), AT+QIACT?; then AT+QICLOSE=0 (1000 ms) and AT+QIOPEN=1,0,"TCP",
    "182.48.105.182",9090,0,1 (server_id 2) polled every 100 ms for "+QIOPEN: 0,0" (30 s).
    ec20_loop(): Exit, Init, 1 s, Enter, 1 s, the 34-byte start packet (EB 90 AC 0F ... EA 8F
    AA 0D) written raw.  (As published, ec20_loop() spins in `while(1){}` right after its
    "ITM test" prints, so none of this runs -- the replay runs what the code means.)
  * EC20_ReLink_Transparent() (after "NO CARRIER" / "+QIURC: \"closed\",0" / "ERROR" was seen
    in the buffer): Exit ("+++", 1000 ms), 500 ms, AT+QICLOSE=0 (2000 ms), AT+QIOPEN as above,
    Enter, then a new start packet.  EC20_Send_Str(): AT+QISEND=0, 20 ms, the text, 20 ms,
    Ctrl+Z, "SEND OK" polled, AT+QISEND=0,0 (2 ms; "+QISEND:" looked for).
  * The fixed delays of the bring-up are replayed 5x shorter; the "+++" waits are kept.
- store file id 58957850574 (ArduPilot libraries/AP_LTE/AP_LTE.cpp, "AP_LTE", MAVLink2 serial
  bridged to a Quectel on a scripting serial port; read whole, 8,645 characters).  What the
  model keeps:
  * send_at(cmd): _rx_idx = 0, the bytes as given ("...\r\n").  Each update() appends what
    the UART holds to _rx_buf; check_response(s) = strstr(_rx_buf, s).
  * WAIT_BOOT: "CPIN: READY" / "CFUN: 1" seen, or 8 s (replayed 0.5 s: the module is already
    up); AT (3 s), AT+CPIN? ("READY", 5 s), AT+CEREG? ("+CEREG: 0,1" / 0,5, 10 s),
    AT+QICSGP=1,1,"cmnet","","",0, AT+QIACT=1, AT+QIOPEN=1,0,"UDP","13.203.94.240",16550,6001,0
    ("+QIOPEN: 0,0", 15 s), AT+QISWTMD=0,1 ("OK") -> CONNECTED.
  * bridge_data(): MAVLink bytes (up to 256 per turn) written to the modem as they are; what
    the modem sends goes to the MAVLink port as it is, unless it holds 'QIURC: "closed"'.

What the replay shows (the emulator answered as the manuals say; nothing here is an emulator
bug -- every failure below is the driver's):
* (1) The answer to "+++" comes after the escape's trailing guard time (1 s, S12), so
  c4g_sem_get(1000) races it: the MCU-reset path usually takes the "no answer" branch and
  reopens the data call.  AT+QIOPEN? is no EC2x command (ERROR), as the author's filler
  needs nothing more.  AT+QISTATE=1,0's fixed-offset reader gets state 2 / access mode 2 /
  "uart1"; AT+QICLOSE's OK and ATO's CONNECT are where it looks.
* (2) A "+++" in command state is no command line (bytes outside one are dropped; behaviour.md
  "Command line"), so the relink's AT+QICLOSE runs; AT+QISWTMD=0,2 answers CONNECT and the
  binary packet reaches the server byte for byte, the server's bytes come back raw; a server
  close in transparent mode is "NO CARRIER".
* (3) Direct push is not transparent mode: the MAVLink bytes written in command state reach
  no one (and get no answer), and what the server sends reaches the MAVLink port wrapped in
  '+QIURC: "recv",0,<len>' lines -- the ground station gets AT text around its frames.
"""
from __future__ import annotations

import re
import time

from emulator.testing.peers import TcpServer, UdpEchoServer
from tests.e2e.socket_support import Uart, wait_for

IDLE = 0.02          # an idle-line UART frame ends after this much silence


def shorter(ms: int) -> float:
    """A bring-up delay_ms() replayed 5x shorter (the "+++" waits are not)."""
    return ms / 1000 / 5


# --------------------------------------------------------------------------------------
# (1) the FreeRTOS "4G" task (store 16101787558)
# --------------------------------------------------------------------------------------
class Uart7Task:
    """_uart7_send() / c4g_sem_get() over the pty: the semaphore fires on a frame that starts
    with CR LF; other frames (an echo) are dropped."""

    def __init__(self, path: str) -> None:
        self.uart = Uart(path)
        self.log: list[tuple[bytes, bytes | None]] = []

    def close(self) -> None:
        self.uart.close()

    def frame(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        current = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0 and not current:
                return None
            chunk = self.uart.read(1 << 16, IDLE if current else max(0.0, min(left, IDLE)))
            if chunk:
                current += chunk
                continue
            if current:
                if current.startswith(b"\r\n"):
                    return current
                current = b""                   # (echo: the callback gives nothing)
            elif time.monotonic() >= deadline:
                return None

    def send(self, cmd: bytes, timeout_ms: int) -> bytes | None:
        self.uart.flush_input()
        self.uart.write(cmd)
        rx = self.frame(timeout_ms / 1000)
        self.log.append((cmd, rx))
        return rx

    @staticmethod
    def ok_at_end(rx: bytes | None) -> bool:
        return rx is not None and rx[-4:-2].upper() == b"OK"

    @staticmethod
    def at2(rx: bytes | None, what: bytes) -> bool:
        return rx is not None and rx[2:2 + len(what)].upper() == what.upper()

    # --- the steps -----------------------------------------------------------------------
    def close_cmd_echo(self) -> bool:
        return self.ok_at_end(self.send(b"ATE0\r\n", 300))

    def chk_sim(self):
        rx = self.send(b"AT+CPIN?\r\n", 5000)
        if self.at2(rx, b"+CPIN: READY"):
            return True
        return 2 if self.at2(rx, b"+CME ERROR: 10") else False

    def chk_iccid(self) -> bytes | None:
        rx = self.send(b"AT+QCCID\r\n", 300)
        if self.at2(rx, b"+QCCID:") and self.ok_at_end(rx):
            return rx[10:].split(b"\r", 1)[0][:20]
        return None

    def reg(self, cmd: bytes, first: int):
        rx = self.send(cmd, 300)
        if not self.ok_at_end(rx):
            return None
        return chr(rx[first]), chr(rx[first + 2])

    def quality(self) -> int | None:
        rx = self.send(b"AT+CSQ\r\n", 300)
        if self.at2(rx, b"+CSQ:") and self.ok_at_end(rx):
            return int(rx[7:].split(b",", 1)[0].replace(b" ", b""))
        return None

    def qistate(self) -> tuple[int, dict | None]:
        rx = self.send(b"AT+QISTATE=1,0\r\n", 15000)
        if not self.ok_at_end(rx):
            return (2 if rx is not None else False), None
        if len(rx) <= 6:
            return True, None
        fields = rx[12:].split(b"\r", 1)[0].split(b",")
        info = dict(zip(("connectID", "service", "ip", "remote_port", "local_port", "state",
                         "contextID", "serverID", "access_mode", "at_port"), fields))
        state = info["state"]
        if state == b"4":
            return 4, info
        if state in (b"1", b"2", b"3"):
            return 3, info
        return True, info


def _serve(emulator, host: str, port: int, mode: str = "echo") -> TcpServer:
    server = TcpServer(mode).__enter__()
    emulator.router.add_map(host, port, "127.0.0.1", server.port)
    return server


def test_4g_task_power_on_path_reaches_transparent_mode(emulator, driver_path):
    """Power-on to CONNECT, every step judged as the task judges it, then data both ways."""
    server = _serve(emulator, "120.55.115.113", 5008)
    task = Uart7Task(driver_path)
    try:
        tries = 0
        while not task.close_cmd_echo():          # ST_CLOSE_CMD_ECHO, every 100 ms
            tries += 1
            assert tries < 5, task.log
            time.sleep(0.1)
        assert task.chk_sim() is True
        iccid = task.chk_iccid()
        assert iccid == b"89860119841234567890"
        assert task.log[-1][1] == b"\r\n+QCCID: 89860119841234567890\r\n\r\nOK\r\n"
        assert task.reg(b"AT+CREG?\r\n", 9) == ("0", "1")
        assert task.reg(b"AT+CGREG?\r\n", 10) == ("0", "1")
        assert task.quality() > 20                # one sample ends the loop
        assert iccid[:6] == b"898601"             # China Unicom -> "UNINET"
        assert task.ok_at_end(task.send(b'AT+QICSGP=1,1,"UNINET","","",1\r\n', 300))
        assert task.ok_at_end(task.send(b"AT+QIACT=1\r\n", 15000))
        # the filler: no read form in the TCP/IP manual -> ERROR (result ignored by the task)
        assert task.send(b"AT+QIOPEN?\r\n", 300) == b"\r\nERROR\r\n"
        rx = task.send(b'AT+QIOPEN=1,0,"TCP","120.55.115.113",5008,0,2\r\n', 153000)
        assert rx == b"\r\nCONNECT\r\n"
        assert task.at2(rx, b"CONNECT")
        conn = server.wait_connection()
        packet = bytes(range(256)) + b"+++AT\r\n"
        task.uart.write(packet)
        assert conn.wait_received(len(packet), 10) == packet
        assert task.uart.read(len(packet), 10) == packet   # the echo, raw
    finally:
        task.close()
        server.__exit__(None, None, None)


def test_4g_task_mcu_reset_path_while_the_module_is_online(emulator, driver_path):
    """The task restarts with the module in transparent mode: "+++" (answered only after the
    1 s trailing guard, so the task's 1 s wait races it), AT+QISTATE=1,0 read at fixed
    offsets, AT+QICLOSE=0 on the first pass; later passes return with ATO."""
    server = _serve(emulator, "120.55.115.113", 5008)
    task = Uart7Task(driver_path)
    try:
        # the board before the MCU reset: online on connection 0
        assert task.uart.command(b"ATE0").endswith(b"OK\r\n")
        assert task.uart.command(b'AT+QICSGP=1,1,"UNINET","","",1').endswith(b"OK\r\n")
        assert task.uart.command(b"AT+QIACT=1").endswith(b"OK\r\n")
        assert task.send(b'AT+QIOPEN=1,0,"TCP","120.55.115.113",5008,0,2\r\n', 10000) == \
            b"\r\nCONNECT\r\n"
        conn = server.wait_connection()
        # main_task_4g() after the reset: 3 s + 1 s of silence, then "+++"
        time.sleep(1.2)
        sent = time.monotonic()
        rx = task.send(b"+++", 1000)
        if rx is None:                             # what the task usually meets
            rx = task.frame(2.0)
        took = time.monotonic() - sent
        assert rx == b"\r\nOK\r\n"
        assert took >= 0.9, took                   # after the guard time, as S12 says
        time.sleep(1.0)
        assert task.chk_iccid() == b"89860119841234567890"
        code, info = task.qistate()
        assert code == 3, task.log[-1]
        assert info["connectID"] == b"0" and info["service"] == b'"TCP"'
        assert info["remote_port"] == b"5008"
        assert info["state"] == b"2" and info["contextID"] == b"1"
        assert info["access_mode"] == b"2"
        assert info["at_port"] in (b'"uart1"', b'"usbmodem"')
        # the server talks while the port is in command mode: nothing on the port until ATO
        conn.send(b"queued while offline")
        assert task.frame(0.5) is None
        # a later pass (work_state 1): ATO back to the connection, CONNECT at buf[2], the
        # waiting bytes right behind it (one idle-line frame or two)
        task.uart.flush_input()
        task.uart.write(b"ATO\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 31 and time.monotonic() < deadline:
            got += task.uart.read(1 << 16, 0.05)
        assert got == b"\r\nCONNECT\r\nqueued while offline"
        assert task.at2(got, b"CONNECT")
        task.uart.write(b"after ATO")
        assert conn.wait_received(9, 10) == b"after ATO"
        assert task.uart.read(9, 10) == b"after ATO"
        # the first pass instead: "+++" again, then AT+QICLOSE=0 with "OK" at buf[2]
        time.sleep(1.2)
        task.uart.write(b"+++")
        assert task.frame(3.0) == b"\r\nOK\r\n"
        rx = task.send(b"AT+QICLOSE=0\r\n", 10000)
        assert task.at2(rx, b"OK"), rx
        assert server.gone(0, 5)
    finally:
        task.close()
        server.__exit__(None, None, None)


# --------------------------------------------------------------------------------------
# (2) the Techx EC20 link (store 31330620150)
# --------------------------------------------------------------------------------------
TECHX_IP, TECHX_PORT = "182.48.105.182", 9090
OPEN_LINE = f'AT+QIOPEN=1,0,"TCP","{TECHX_IP}",{TECHX_PORT},0,1\r\n'.encode()


def start_pack(sn: int) -> bytes:
    pack = bytearray(34)
    pack[0:4] = b"\xEB\x90\xAC\x0F"
    pack[4], pack[5], pack[6], pack[7] = 26, 0, sn, 0x04
    pack[8:20] = b"TECHX-ES-001"
    pack[20], pack[21] = 0x35, 0x12                # EarthStation_ID 0x1235, little endian
    pack[22], pack[23] = 0x01, 2                   # start pack, EC20_MODE_TRANSPARENT
    total = sum(pack[4:28])
    pack[28], pack[29] = total & 0xFF, total >> 8
    pack[30:34] = b"\xEA\x8F\xAA\x0D"
    return bytes(pack)


class TechxLink:
    """printf() + delay_ms() + strstr(usart_4g.p_buf) over the pty."""

    def __init__(self, path: str) -> None:
        self.uart = Uart(path)
        self.buf = bytearray()

    def close(self) -> None:
        self.uart.close()

    def _take(self) -> None:
        with self.uart.cond:
            self.buf += self.uart.rx
            self.uart.rx.clear()

    def printf(self, text: bytes) -> None:
        self.uart.write(text)

    def delay(self, seconds: float) -> None:
        time.sleep(seconds)
        self._take()

    def clear(self) -> None:
        self._take()
        self.buf.clear()

    def has(self, s: bytes) -> bool:
        self._take()
        return s in self.buf

    def poll(self, s: bytes, every: float, tries: int) -> bool:
        for _ in range(tries):
            if self.has(s):
                return True
            time.sleep(every)
        return self.has(s)

    def exit_transparent(self) -> None:
        self.printf(b"+++")
        self.delay(1.0)

    def enter_transparent(self) -> None:
        self.printf(b"AT+QISWTMD=0,2\r\n")
        self.delay(0.5)

    def init_transparent(self) -> None:
        self.printf(b"AT\r\n")
        self.delay(shorter(500))
        while not self.has(b"OK"):
            self.clear()
            self.printf(b"AT\r\n")
            self.delay(shorter(500))
        for line in (b"ATE0", b"AT+IPR?"):
            self.printf(line + b"\r\n")
            self.delay(shorter(500))
            self.clear()
        for line in (b"AT+CSQ", b"ATI"):
            self.printf(line + b"\r\n")
            self.delay(shorter(500))
        for line, wants in ((b"AT+CPIN?", (b"+CPIN: READY",)),
                            (b"AT+CREG?", (b"+CREG: 0,1", b"+CREG: 0,5")),
                            (b"AT+CGREG?", (b"+CGREG: 0,1", b"+CGREG: 0,5"))):
            self.printf(line + b"\r\n")
            self.delay(shorter(500))
            for _ in range(20):
                if any(self.has(w) for w in wants):
                    break
                self.clear()
                self.printf(line + b"\r\n")
                self.delay(shorter(500))
            else:
                raise AssertionError((line, bytes(self.buf)))
            self.clear()
        self.printf(b"AT+COPS?\r\n")
        self.delay(shorter(500))
        self.clear()
        self.printf(b"AT+QICLOSE=0\r\n")
        self.delay(shorter(500))
        self.clear()
        for line, wait in ((b'AT+QICSGP=1,1,"CMNET","","",0', 1000), (b"AT+QIDEACT=1", 500),
                           (b"AT+QIACT=1", 500)):
            self.printf(line + b"\r\n")
            self.delay(shorter(wait))
            assert self.poll(b"OK", shorter(500), 100), (line, bytes(self.buf))
            self.clear()
        self.printf(b"AT+QIACT?\r\n")
        self.delay(shorter(500))
        self.clear()
        self.link()

    def link(self, close_wait: float = 1.0) -> None:
        """The `while(state_4g.linked != true)` loop, one pass expected."""
        self.printf(b"AT+QICLOSE=0\r\n")
        self.delay(close_wait)
        self.clear()
        self.printf(OPEN_LINE)
        assert self.poll(b"+QIOPEN: 0,0", 0.1, 300), bytes(self.buf)
        self.clear()


def test_techx_link_enters_transparent_mode_with_qiswtmd(emulator, driver_path):
    """Init (direct push open), AT+QISWTMD=0,2 -> CONNECT, the start packet raw, the server's
    bytes back raw; the EC20_Send_Str() path before it, in push mode."""
    server = _serve(emulator, TECHX_IP, TECHX_PORT)
    link = TechxLink(driver_path)
    try:
        link.exit_transparent()                   # ec20_loop(): the module is in command state
        assert link.buf == b"+++"                 # no command line: its echo (ATE1), no answer
        link.init_transparent()
        conn = server.wait_connection()
        # EC20_Send_Str() in push mode (the echo comes back as a "recv" URC)
        link.printf(b"AT+QISEND=0\r\n")
        link.delay(0.02)
        link.printf(b"^techx&")
        link.delay(0.02)
        link.printf(b"\x1a")
        assert link.poll(b"SEND OK", 0.002, 2500), bytes(link.buf)
        assert link.poll(b'+QIURC: "recv",0,7\r\n^techx&\r\n', 0.01, 500), bytes(link.buf)
        link.clear()
        link.printf(b"AT+QISEND=0,0\r\n")
        assert link.poll(b"\r\n+QISEND: 7,7,0\r\n\r\nOK\r\n", 0.01, 500), bytes(link.buf)
        assert conn.wait_received(7, 5) == b"^techx&"
        link.clear()
        # ec20_loop(): 1 s, Enter, 1 s, the start packet
        link.delay(shorter(1000))
        link.enter_transparent()
        assert link.buf == b"\r\nCONNECT\r\n", bytes(link.buf)
        link.delay(shorter(1000))
        link.clear()
        pack = start_pack(0)
        link.printf(pack)
        assert conn.wait_received(7 + len(pack), 10)[7:] == pack
        assert link.poll(pack, 0.01, 1000), bytes(link.buf)
        assert bytes(link.buf) == pack            # raw: no URC, no framing
    finally:
        link.close()
        server.__exit__(None, None, None)


def test_techx_relink_after_no_carrier(emulator, driver_path):
    """The server closes while online: NO CARRIER; EC20_ReLink_Transparent() writes "+++" in
    command state, AT+QICLOSE=0 (which runs: the "+++" is no command line), a new open, and
    AT+QISWTMD=0,2 -> CONNECT again; the new start packet reaches the new connection."""
    server = _serve(emulator, TECHX_IP, TECHX_PORT)
    link = TechxLink(driver_path)
    try:
        link.init_transparent()
        first = server.wait_connection(0)
        link.enter_transparent()
        assert link.buf == b"\r\nCONNECT\r\n", bytes(link.buf)
        link.clear()
        link.printf(start_pack(0))
        assert first.wait_received(34, 10) == start_pack(0)
        assert link.poll(start_pack(0), 0.01, 1000)
        link.clear()
        first.close()                              # kicked by the server
        assert link.poll(b"NO CARRIER", 0.01, 1000), bytes(link.buf)
        assert bytes(link.buf) == b"\r\nNO CARRIER\r\n"
        link.clear()
        # EC20_ReLink_Transparent()
        link.exit_transparent()
        assert link.buf == b"", bytes(link.buf)    # command state: "+++" gets nothing
        link.delay(0.5)
        link.printf(b"AT+QICLOSE=0\r\n")
        link.delay(2.0)
        assert bytes(link.buf) == b"\r\nOK\r\n"
        link.clear()
        link.printf(OPEN_LINE)
        assert link.poll(b"+QIOPEN: 0,0", 0.1, 300), bytes(link.buf)
        assert bytes(link.buf) == b"\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n"
        link.clear()
        second = server.wait_connection(1)
        link.enter_transparent()
        assert link.buf == b"\r\nCONNECT\r\n", bytes(link.buf)
        link.clear()
        link.printf(start_pack(1))
        assert second.wait_received(34, 10) == start_pack(1)
    finally:
        link.close()
        server.__exit__(None, None, None)


# --------------------------------------------------------------------------------------
# (3) ArduPilot AP_LTE (store 58957850574)
# --------------------------------------------------------------------------------------
AP_IP, AP_PORT, AP_LOCAL = "13.203.94.240", 16550, 6001
# a MAVLink 2 HEARTBEAT (len 9, seq 0, sys 1, comp 1, msg 0) with its CRC bytes
HEARTBEAT = bytes.fromhex("fd09000000010100000000000000020c5103034e1e")


class ApLte:
    """AP_LTE::update() steps over the pty."""

    def __init__(self, path: str) -> None:
        self.uart = Uart(path)
        self.rx = bytearray()
        self.mavlink_out = bytearray()

    def close(self) -> None:
        self.uart.close()

    def send_at(self, cmd: bytes) -> None:
        self.rx.clear()
        self.uart.write(cmd)

    def wait(self, expected: tuple[bytes, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.rx += self.uart.read(1 << 16, 0.01)
            if any(e in self.rx for e in expected):
                return True
        return False

    def connect(self) -> list[bytes]:
        steps = []
        # WAIT_BOOT: nothing comes from a module already up; the 8 s fallback (0.5 s here)
        assert not self.wait((b"CPIN: READY", b"CFUN: 1"), 0.5)
        for cmd, expected, timeout in (
                (b"AT\r\n", (b"OK",), 3),
                (b"AT+CPIN?\r\n", (b"READY",), 5),
                (b"AT+CEREG?\r\n", (b"+CEREG: 0,1", b"+CEREG: 0,5"), 10),
                (b'AT+QICSGP=1,1,"cmnet","","",0\r\n', (b"OK",), 5),
                (b"AT+QIACT=1\r\n", (b"OK",), 10),
                (f'AT+QIOPEN=1,0,"UDP","{AP_IP}",{AP_PORT},{AP_LOCAL},0\r\n'.encode(),
                 (b"+QIOPEN: 0,0",), 15),
                (b"AT+QISWTMD=0,1\r\n", (b"OK",), 5)):
            self.send_at(cmd)
            assert self.wait(expected, timeout), (cmd, bytes(self.rx))
            steps.append(bytes(self.rx))
        return steps

    def bridge(self, mavlink_in: bytes, turns: int = 50) -> None:
        if mavlink_in:
            for i in range(0, len(mavlink_in), 256):
                self.uart.write(mavlink_in[i:i + 256])
        for _ in range(turns):
            got = self.uart.read(256, 0.01)
            if got:
                assert b'QIURC: "closed"' not in got
                self.mavlink_out += got


def test_ap_lte_bridge_in_direct_push_mode(emulator, driver_path):
    """The state machine reaches CONNECTED; the MAVLink bytes written in command state reach
    no one, and the server's datagram reaches the MAVLink port inside a push URC."""
    with UdpEchoServer(echo=False) as server:
        emulator.router.add_map(AP_IP, AP_PORT, "127.0.0.1", server.port)
        lte = ApLte(driver_path)
        try:
            steps = lte.connect()
            assert steps[0] == b"AT\r\r\nOK\r\n"           # the module's echo is on
            assert steps[-2].endswith(b"\r\nOK\r\n\r\n+QIOPEN: 0,0\r\n")
            assert steps[-1].endswith(b"AT+QISWTMD=0,1\r\r\nOK\r\n")
            lte.bridge(HEARTBEAT * 3, turns=50)
            # no command line, so no answer -- but the driver never sent ATE0: the module's
            # echo hands the ground station its own frames back (behaviour.md "Echo")
            assert bytes(lte.mavlink_out) == HEARTBEAT * 3
            lte.mavlink_out.clear()
            time.sleep(0.3)
            assert server.log == []                         # and nothing went out
            # the test's own probe (not the driver's): one datagram up, so that the server
            # knows where the module is, then the ground station's reply
            lte.uart.flush_input()
            lte.uart.write(b"AT+QISEND=0,5\r\n")
            wait_for(lambda: lte.uart.rx.endswith(b"> "), 5, "the prompt")
            lte.uart.write(b"probe")
            addr = server.wait_datagrams(1, 5)[0][0]
            assert server.log[0][1] == b"probe"
            wait_for(lambda: b"SEND OK" in lte.uart.rx, 5, "SEND OK")
            lte.uart.flush_input()
            dgram = bytes(range(0x80, 0x80 + 30)) + HEARTBEAT
            server.sock.sendto(dgram, addr)
            want = f'\r\n+QIURC: "recv",0,{len(dgram)}\r\n'.encode() + dgram + b"\r\n"
            deadline = time.monotonic() + 5
            while len(lte.mavlink_out) < len(want) and time.monotonic() < deadline:
                lte.bridge(b"", turns=5)
            assert bytes(lte.mavlink_out) == want
            # the module still answers commands: the socket is in push mode, not transparent
            state = lte.uart.command(b"AT+QISTATE=1,0")
            assert re.search(rb'\+QISTATE: 0,"UDP","13\.203\.94\.240",16550,6001,2,1,0,1,', state), state
        finally:
            lte.close()

