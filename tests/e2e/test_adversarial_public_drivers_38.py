"""Adversarial tests: a thirty-eighth set of public host code pointed at the pty -- two RTOS-grade C
drivers for the Quectel TCP(IP) socket commands that earlier rounds did not replay (a search of
tests/ for "kiso", "CellularSocket_", "QIMODE", "X-CUBE-CELLULAR" replays, "checkEndOfMsg",
"QIRD_Counter" and "SocketRxDataState" finds only a citation of ST's parser comments in
test_review_tcpip_manual.py): replayed through the pty with their own line endings, echo
handling, waits, byte counting and parsers against loopback TCP / UDP peers.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- eclipse-archived/kiso (Eclipse Kiso, formerly Bosch BCDS; EPL-2.0), the Quectel variant of the
  cellular driver (written for the UC20, whose TCP(IP) command set the EC2x / BG96 kept):
  core/connectivity/cellular/source/quectel/Socket.c, Command.h, Control.c, Urc.c at
  44433bb06cece0730fd7d4b822e830448e6e12d0 (the event parser from
  common/AtResponseParser.c at 0c1fe98c294f0f77a0748327c1abf7a3d727f826).  What the model keeps:
  * every command ends CR LF; the driver runs with ECHO ON (its default configuration line is
    `AT+QIMODE=0;+QURCCFG="urcport","uart1";E1`) and waits for each command's echo first
    (CellularEngine_SendAtCmdWaitEcho).  The event parser: a line holding '+' after a start
    that is not "AT" is a named command ("QIOPEN", the name without '+', up to ':') followed by
    its arguments split at every ',' and trimmed of spaces / CR / LF (quotes kept: the
    +QIURC handler memcmp()s `"recv"` WITH its quotes); a line starting "AT" that holds a '+'
    is an echo, ended by its CR ("AT" alone is miscellaneous content); a line that is a
    prefix of a result code name is a result code; anything else non-empty is miscellaneous
    content (empty lines are not queued: the queue's event mask).
  * StartupCellularCommon() after a reset: events for up to 20 s until +CFUN: 1
    (strtol-bounded 0..1), +CPIN: READY (memcmp "READY"), +QIND: SMS DONE and +QIND: PB DONE
    were all seen; ProbeCellularForResponsiveness(): "AT\\r\\n", misc content starting "AT"
    (its own echo), then OK.  The reset is the board's reset line there; AT+CFUN=1,1 here.
  * OpenSocket(): `AT+QIOPEN=<ctx>,<id>,"<type>","<ip>",<rport>[,<lport>]\\r\\n`, echo, OK, the
    named command "QIOPEN", then two arguments: the connectID (0..11) and the error, each
    strtol'd within bounds (-22..575); 0 opens, 568 is taken for "bind failed" and retried
    once after 1 s, any other value leaves the socket unopened (and returns OK).
  * SocketSendTo(): for a UDP SERVICE `AT+QISEND=<id>,<n>,"<ip>",<port>\\r\\n`; a custom parser
    reads the UART in 127-byte pieces until one holds '>' (what precedes it goes to the event
    parser, the rest of that piece is dropped), the data are written, then EXACTLY n + 2 bytes
    are read and thrown away (the echoed data and the CR LF that precedes the final line), and
    the next event must be misc content starting "SEND OK".
  * CellularSocketUrc_QIURC(): +QIURC, first argument compared with `"closed"` / `"recv"` /
    `"incoming"` / `"pdpdeact"`, the second strtol'd as the connectID (0..11) -- or, for
    "pdpdeact", as the context id (1..16), and every socket is invalidated --: "recv" marks
    data available; a "closed" for a socket it does not hold is RESPONSE_UNEXPECTED.
    SocketReceiveFrom(): `AT+QIRD=<id>,1500\\r\\n` (the 1500-byte buffer), a custom parser:
    pieces read until one holds "QIRD:" (such a piece never reaches the event parser),
    sscanf("QIRD: %u,\\"%16[^\\"]\\",%u") must give 3 fields (1 field or length 0 = no data),
    the data start after the first '\\n' of the header, length bytes are copied, and the rest
    of that piece is dropped.  The replay reads the echo as its own piece (on the UART it is
    back while the command is still being written) and the answer as one piece (the pty
    gives it at once); what the driver drops is checked byte for byte, not waited for.  (The
    driver then waits for an OK that it dropped if it came in the same piece: its own timing
    dependence, not the module's.)
  * CloseSocket(): `AT+QICLOSE=<id>\\r\\n`, echo, OK.

- STMicroelectronics X-CUBE-CELLULAR, the BG96 "modem socket" AT custom layer (the copy the
  store holds without its repository name; file ids 21180921781 for at_custom_modem_specific.c
  and 21215483536 for at_custom_modem_socket.c, "Copyright (c) 2020-2021 STMicroelectronics",
  LICENSE-file terms): ATCustom_BG96_checkEndOfMsgCallback() -- the byte-by-byte automaton that
  frames every message -- and the socket commands' build / analyze functions.  What the model
  keeps:
  * commands end with CR alone (the layer overrides the default terminator); echo off (ATE0).
  * the automaton (states WAITING_FOR_INIT_CR / _CR / _LF / _FIRST_CHAR / _SOCKET_DATA): bytes
    before the first CR are trash; a message ends at the LF of CR LF; a prompt '>' followed
    IMMEDIATELY by ' ' ends a message while an AT+QISEND waits for it (a '>' followed by
    anything else re-arms the wait); while a read waits for its header, a message whose first
    byte does not continue "+QIRD" is skipped to its LF, "+QIRD" then digits (up to a ',' --
    the UDP SERVICE form's address is left to the analyzer) and CR give the size, and from the
    byte after that header's LF exactly <size> bytes are counted blindly as data, after which
    the data message ends at the next CR LF.
  * fCmdBuild_QIOPEN_BG96: `AT+QIOPEN=<cid>,<id>,"TCP"|"UDP SERVICE","<ip>",<rport>,<lport>,0`
    (buffer access mode always); fRspAnalyze_QIOPEN_BG96: rank 2 the connectID, rank 3 the
    error, which must be 0 for the requested id.  fCmdBuild_QISEND_BG96: `=<id>,<len>` (or
    `,"<ip>",<port>` for a UDP SERVICE); the raw data after the prompt, then SEND OK.
  * fRspAnalyze_QIURC_BG96: rank 2 strstr "closed" / "recv" / ..., rank 3 the connectID.
  * the receive: AT+QIRD=<id>,0 (fRspAnalyze_QIRD_BG96, RequestSize: rank 4 = unread, capped to
    the client's max_buffer_size), then AT+QIRD=<id>,<that size> (RequestData_Header: rank 2
    the size, informative only; ranks 3 / 4 the remote address of a UDP SERVICE), the payload
    framed by the automaton; the application reads again while data remain.
  * fCmdBuild_QICLOSE_BG96: `AT+QICLOSE=<id>` (the loopback peer answers the module's FIN, so
    the close does not wait out its 10 s).

Not replayed: the same repository's later BG96 command layer (branch prototype/attransceiver of
ChiefGokhlayehBosch/kiso, AtQuectel.c at 17e055de35054ff8dbe4f12d9eacb960441b8ec5): a prototype
whose own unit tests feed ">" + echoed payload + "SEND OK" with command echo off -- no CR LF
before the prompt and no space after it -- so its AT+QISEND skips the wrong bytes on any module.
"""
from __future__ import annotations

import re
import socket
import time

import pytest
import serial

from tests.e2e.socket_support import TCP_HOST, TCP_PORT

SLOW = 3


def close_on_eof(peer) -> None:
    """The loopback peer answers the module's FIN with its own (as a server that closes when
    its client does), so AT+QICLOSE's wait for the close ends at once, not at its 10 s."""
    import threading

    def run():
        if peer.eof.wait(30):
            peer.close()
    threading.Thread(target=run, daemon=True).start()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Uart:
    """The pty as a UART: reads take what is there (up to n bytes); a log of everything."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.pending = bytearray()
        self.rx = bytearray()
        self.tx = bytearray()

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes) -> None:
        self.tx += data
        self.ser.write(data)

    def _fill(self) -> None:
        chunk = self.ser.read(4096)
        if chunk:
            self.pending += chunk
            self.rx += chunk

    def read(self, n: int, timeout: float) -> bytes:
        """Cellular_ReadData(): whatever is available (at most n), waiting up to timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self._fill()
            if self.pending:
                out = bytes(self.pending[:n])
                del self.pending[:n]
                return out
            if time.monotonic() > deadline:
                return b""
            time.sleep(0.002)

    def getc(self, timeout: float) -> int | None:
        b = self.read(1, timeout)
        return b[0] if b else None


# =================================================================================================
# Eclipse Kiso, Quectel variant
# =================================================================================================
RESULT_CODES = ("ABORTED", "BUSY", "CONNECT", "ERROR", "NO ANSWER", "NO CARRIER", "NO DIALTONE",
                "OK", "RING")
WS = b" \r\n"


class KisoQuectel:
    """The Kiso engine + event queue + Quectel Socket.c/Urc.c/Control.c over the pty."""

    MAX_SOCKETS = 12
    PIECE = 127                       # CELLULAR_SOCKET_CMD_BUFFER_SIZE - 1
    TIMEOUT = 10.0                    # CELLULAR_SOCKET_RESPONSE_TIMEOUT

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.line = bytearray()
        self.events: list[tuple[str, bytes]] = []
        self.init_status: dict[str, int] = {}
        self.sockets: dict[int, dict] = {}
        self.unexpected: list[tuple[str, bytes]] = []
        self.unknown_socket_urcs: list[tuple[str, int]] = []
        self.pdpdeact: int | None = None

    # -- the event parser, line-wise ------------------------------------------------------------
    def parse(self, data: bytes) -> None:
        for b in data:
            self.line.append(b)
            if b == 0x0D and b"+" in self.line and self.line.lstrip(WS).startswith(b"AT"):
                self.events.append(("echo", bytes(self.line).strip(WS)))   # (echo ends at CR)
                self.line.clear()
            elif b == 0x0A:
                self._line_done(bytes(self.line))
                self.line.clear()

    def _line_done(self, line: bytes) -> None:
        if b"+" in line:
            head, _, rest = line.partition(b"+")
            if head.strip(WS).startswith(b"AT"):
                self.events.append(("echo", line.strip(WS)))
                return
            name, colon, args = rest.partition(b":")
            if not colon:                     # "+NAME\r\n": a command with no argument
                self.events.append(("cmd", name.strip(WS)))
                return
            self.events.append(("cmd", name.strip(WS)))
            for arg in args.split(b","):
                arg = arg.strip(WS)
                if arg:
                    self.events.append(("arg", arg))
            return
        text = line.strip(WS)
        if not text:
            return
        if any(code.startswith(text.decode("latin-1")) for code in RESULT_CODES):
            self.events.append(("code", text))
        elif text.startswith(b"AT"):
            self.events.append(("misc", line))      # (an "AT" echo has no '+': misc content)
        else:
            self.events.append(("misc", line))

    def pump(self, timeout: float) -> bool:
        data = self.uart.read(4096, timeout)
        if data:
            self.parse(data)
        return bool(data)

    def next_event(self, timeout: float | None = None) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + (self.TIMEOUT if timeout is None else timeout)
        while not self.events:
            if time.monotonic() > deadline:
                return None
            self.pump(0.05)
        return self.events.pop(0)

    def wait(self, kind: str, value: bytes | None = None, timeout: float | None = None) -> bytes:
        """AtResponseQueue_WaitFor*: the next event must be of that kind (and value)."""
        ev = self.next_event(timeout)
        assert ev is not None, f"no {kind} event (timeout)"
        assert ev[0] == kind, (kind, value, ev)
        if value is not None:
            assert ev[1] == value, (kind, value, ev)
        return ev[1]

    def send_wait_echo(self, cmd: bytes) -> None:
        self.uart.write(cmd)
        self.wait("echo", cmd.strip(WS))

    # -- URCs (Urc.c + Socket.c) ------------------------------------------------------------------
    def handle_urcs(self, stop_at_other: bool = False) -> None:
        """CellularUrc_HandleResponses(): misc RDY, +CFUN, +CPIN, +QUSIM, +QIND, +QIURC."""
        while self.events:
            kind, val = self.events[0]
            if kind == "misc" and val.startswith(b"RDY"):
                self.events.pop(0)
                self.init_status["rdy"] = 1
            elif kind == "cmd" and val in (b"CFUN", b"CPIN", b"QUSIM", b"QIND"):
                self.events.pop(0)
                arg = self.wait("arg", timeout=0.1)
                if val == b"CFUN":
                    self.init_status["cfun"] = self._strtol(arg, 0, 1)
                elif val == b"CPIN":
                    self.init_status["cpin"] = int(arg.startswith(b"READY"))
                elif val == b"QUSIM":
                    self.init_status["qusim"] = self._strtol(arg, 0, 1)
                elif arg.startswith(b"SMS DONE"):
                    self.init_status["sms"] = 1
                elif arg.startswith(b"PB DONE"):
                    self.init_status["pb"] = 1
            elif kind == "cmd" and val == b"QIURC":
                self.events.pop(0)
                what = self.wait("arg", timeout=0.1)
                which = {b'"closed"': "closed", b'"recv"': "recv", b'"incoming"': "incoming",
                         b'"pdpdeact"': "pdpdeact"}.get(what)
                arg = self.wait("arg", timeout=0.1)
                assert which is not None, what
                if which == "pdpdeact":
                    self.pdpdeact = self._strtol(arg, 1, 16)
                    self.sockets.clear()              # CellularSocket_InvalidateAll()
                    continue
                sid = self._strtol(arg, 0, self.MAX_SOCKETS - 1)
                if sid not in self.sockets:           # GetSocket() NULL: RESPONSE_UNEXPECTED
                    self.unknown_socket_urcs.append((which, sid))
                    continue
                if which == "closed":
                    del self.sockets[sid]
                else:
                    self.sockets[sid]["available"] = 1
            elif stop_at_other:
                return
            else:
                self.unexpected.append(self.events.pop(0))

    @staticmethod
    def _strtol(arg: bytes, lo: int, hi: int) -> int:
        assert re.fullmatch(rb"-?\d+", arg), arg
        value = int(arg)
        assert lo <= value <= hi, (arg, lo, hi)
        return value

    # -- Control.c ----------------------------------------------------------------------------
    def startup_after_reset(self) -> float:
        """StartupCellularCommon(): the four init flags within 20 s; returns the time taken."""
        self.events.clear()
        self.init_status.clear()
        t0 = time.monotonic()
        need = ("cfun", "cpin", "sms", "pb")
        while time.monotonic() - t0 < 20:
            self.pump(0.05)
            self.handle_urcs()
            if all(self.init_status.get(k) == 1 for k in need):
                return time.monotonic() - t0
        raise AssertionError(f"not all init URCs within 20 s: {self.init_status}")

    def probe(self) -> None:
        """ProbeCellularForResponsiveness(): AT, misc content "AT..." (the echo), then OK."""
        self.uart.write(b"AT\r\n")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            self.pump(0.02)
            while self.events:
                kind, val = self.events[0]
                if kind == "misc" and val.startswith(b"AT"):
                    self.events.pop(0)
                    self.wait("code", b"OK", timeout=0.1)
                    return
                before = len(self.events)
                self.handle_urcs(stop_at_other=True)
                if len(self.events) == before:
                    self.unexpected.append(self.events.pop(0))
        raise AssertionError("not responsive")

    # -- Socket.c ---------------------------------------------------------------------------------
    def open_socket(self, sock_type: str, ip: str, rport: int, lport: int = 0, ctx: int = 1) -> int:
        sid = next(i for i in range(self.MAX_SOCKETS) if i not in self.sockets)
        if lport:
            cmd = f'AT+QIOPEN={ctx},{sid},"{sock_type}","{ip}",{rport},{lport}\r\n'
        else:
            cmd = f'AT+QIOPEN={ctx},{sid},"{sock_type}","{ip}",{rport}\r\n'
        self.send_wait_echo(cmd.encode())
        self.wait("code", b"OK")
        self.wait("cmd", b"QIOPEN")
        connect_id = self._strtol(self.wait("arg"), 0, self.MAX_SOCKETS - 1)
        err = self._strtol(self.wait("arg"), -22, 575)
        self.last_open = (connect_id, err)
        if err == 0:
            self.sockets[connect_id] = {"type": sock_type, "available": 0}
            return connect_id
        return -1

    def send_to(self, sid: int, data: bytes, ip: str, port: int, before_data=None) -> list[bytes]:
        """SocketSendTo() with SendSocketDataParser(); returns the n + 2 bytes it swallowed."""
        if self.sockets[sid]["type"] == "UDP SERVICE":
            cmd = f'AT+QISEND={sid},{len(data)},"{ip}",{port}\r\n'.encode()
        else:
            cmd = f"AT+QISEND={sid},{len(data)}\r\n".encode()
        self.uart.write(cmd)
        # the custom parser: pieces until one holds '>'
        deadline = time.monotonic() + self.TIMEOUT
        while True:
            assert time.monotonic() < deadline, "no start data response received"
            piece = self.uart.read(self.PIECE, 0.25)
            if not piece:
                continue
            gt = piece.find(b">")
            self.parse(piece if gt < 0 else piece[:gt])
            if gt >= 0:
                self.dropped_after_prompt = piece[gt + 1:]
                break
        self.wait("echo", cmd.strip(WS))
        if before_data is not None:
            before_data()
        self.uart.write(data)
        swallowed = []
        remaining = len(data) + 2
        deadline = time.monotonic() + self.TIMEOUT
        while remaining:
            assert time.monotonic() < deadline, "not all data consumed"
            got = self.uart.read(min(remaining, self.PIECE + 1), 0.25)
            if got:
                swallowed.append(got)
                remaining -= len(got)
        status = self.wait("misc")
        assert status.startswith(b"SEND OK"), status
        return swallowed

    def receive_from(self, sid: int) -> tuple[bytes, str, int] | None:
        """SocketReceiveFrom() with ReceiveSocketDataParser().  The echo comes first, in a
        piece of its own (on the UART it is back while the command is still being written);
        the answer is then one piece: it holds "QIRD:", so none of it reaches the event parser
        -- what follows the data in it is dropped (self.after_data)."""
        cmd = f"AT+QIRD={sid},1500\r\n".encode()
        self.uart.write(cmd)
        echo = bytearray()
        while len(echo) < len(cmd) - 1:
            more = self.uart.read(len(cmd) - 1 - len(echo), self.TIMEOUT)
            assert more, "no echo"
            echo += more
        self.parse(bytes(echo))
        self.wait("echo", cmd.strip(WS))
        deadline = time.monotonic() + self.TIMEOUT
        while True:
            assert time.monotonic() < deadline, "no +QIRD"
            time.sleep(0.05)                  # (the answer all there: the pty gives it at once)
            piece = self.uart.read(self.PIECE, 0.25)
            if not piece:
                continue
            at = piece.find(b"QIRD:")
            if at >= 0:
                break
            self.parse(piece)
        text = piece[at:]
        m = re.match(rb'QIRD: (\d+)(?:,"([^"]{1,16})",(\d+))?', text)
        assert m, text
        length = int(m.group(1))
        if m.group(2) is None or length == 0:
            self.after_data = text[m.end():]
            return None
        assert length <= 1500 and int(m.group(3)) <= 65535
        nl = text.index(b"\n")
        data = bytearray(text[nl + 1:nl + 1 + length])
        self.after_data = text[nl + 1 + length:]
        while len(data) < length:
            more = self.uart.read(length - len(data), self.TIMEOUT)
            assert more, "no response within timeout"
            data += more
        return bytes(data), m.group(2).decode(), int(m.group(3))

    def close_socket(self, sid: int) -> None:
        self.send_wait_echo(f"AT+QICLOSE={sid}\r\n".encode())
        self.wait("code", b"OK")
        del self.sockets[sid]


@pytest.fixture
def kiso(driver_port, emulator):
    """A Kiso driver on a fresh EC2x (echo on, as the module comes up), PDP context 1 active."""
    path, _ = driver_port
    uart = Uart(path)
    k = KisoQuectel(uart)
    try:
        k.send_wait_echo(b'AT+QICSGP=1,1,"internet","","",1\r\n')
        k.wait("code", b"OK")
        k.send_wait_echo(b"AT+QIACT=1\r\n")
        k.wait("code", b"OK", timeout=30)
        yield k
    finally:
        uart.close()


def test_kiso_default_configuration_line_and_reset_startup(kiso):
    """Control.c: the recovery line `AT+QIMODE=0;+QURCCFG="urcport","uart1";E1` (AT+QIMODE is
    not an EC2x command: one ERROR for the whole line, as on the module), then a reset and
    StartupCellularCommon(): +CFUN: 1, +CPIN: READY, +QIND: SMS DONE, +QIND: PB DONE all
    seen within the 20 s; RDY and +QUSIM: 1 handled on the way; ProbeCellularForResponsiveness()
    finds its echo "AT" and OK (echo is back on after the restart)."""
    k = kiso
    k.uart.write(b'AT+QIMODE=0;+QURCCFG="urcport","uart1";E1\r\n')
    k.wait("echo", b'AT+QIMODE=0;+QURCCFG="urcport","uart1";E1')
    k.wait("code", b"ERROR")
    k.send_wait_echo(b"AT+CFUN=1,1\r\n")
    k.wait("code", b"OK")
    took = k.startup_after_reset()
    assert took < 20
    assert k.init_status == {"rdy": 1, "cfun": 1, "cpin": 1, "qusim": 1, "sms": 1, "pb": 1}
    assert k.unexpected == []
    k.probe()
    assert k.unexpected == []


def test_kiso_udp_service_recvfrom_and_sendto_round_trip(kiso):
    """A UDP SERVICE bound to a local port (the server format with <local_port>), two
    datagrams from a loopback peer: each announced by +QIURC: "recv",<id> (exactly two
    arguments, `"recv"` with its quotes), read with AT+QIRD=<id>,1500 whose header the
    driver's sscanf reads as length, quoted IP and port, the payload copied byte for byte,
    then sent back with AT+QISEND=<id>,<n>,"<ip>",<port> -- with echo on, exactly n + 2
    bytes (the echoed data and a CR LF) come before "SEND OK"."""
    k = kiso
    lport = free_udp_port()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5 * SLOW)
    try:
        sid = k.open_socket("UDP SERVICE", "127.0.0.1", 0, lport)
        assert sid == 0 and k.last_open == (0, 0)
        for message in (b"kiso datagram 1", b"\x00\x01,\"quoted\",\r\nQIRD: 9\r\n>"):
            peer.sendto(message, ("127.0.0.1", lport))
            deadline = time.monotonic() + 5 * SLOW
            while not k.sockets[sid]["available"]:
                assert time.monotonic() < deadline, "no +QIURC recv"
                k.pump(0.05)
                k.handle_urcs()
            assert k.unexpected == []
            k.sockets[sid]["available"] = 0
            got = k.receive_from(sid)
            assert got == (message, "127.0.0.1", peer.getsockname()[1])
            assert k.after_data == b"\r\n\r\nOK\r\n"
            swallowed = b"".join(k.send_to(sid, message, "127.0.0.1", peer.getsockname()[1]))
            assert swallowed == message + b"\r\n"
            assert k.dropped_after_prompt == b" "
            assert peer.recvfrom(100) == (message, ("127.0.0.1", lport))
        assert k.receive_from(sid) is None            # "+QIRD: 0": one field, no data
        assert k.after_data == b"\r\n\r\nOK\r\n"
        k.close_socket(sid)
        assert k.unexpected == []
    finally:
        peer.close()


def test_kiso_second_service_on_the_same_port_is_a_bind_error_in_bounds(kiso):
    """OpenSocket() of a second UDP SERVICE on a port the first holds: +QIOPEN: 1,556 (socket
    bind failed) -- within the driver's -22..575 bounds, so the driver reports the socket
    unopened (it retries only 568) and the first service keeps working."""
    k = kiso
    lport = free_udp_port()
    assert k.open_socket("UDP SERVICE", "127.0.0.1", 0, lport) == 0
    assert k.open_socket("UDP SERVICE", "127.0.0.1", 0, lport) == -1
    assert k.last_open == (1, 556)
    assert list(k.sockets) == [0]
    k.close_socket(0)
    assert k.unexpected == []


def test_kiso_network_drop_pdpdeact_in_bounds_then_closed_of_the_invalidated_socket(kiso, emulator):
    """The network drops the module (registration lost): +QIURC: "pdpdeact",1 -- its context
    id strtol'd within the profile bounds 1..16 -- makes the driver invalidate every socket;
    the "closed" URC each socket then gets (docs/behaviour.md, emulator/modem/registration.py)
    finds no socket (the driver's RESPONSE_UNEXPECTED, handled), and AT+QIDEACT=1 is OK."""
    k = kiso
    lport = free_udp_port()
    sid = k.open_socket("UDP SERVICE", "127.0.0.1", 0, lport)
    assert emulator.control("register", stat=0) == {"ok": True}
    deadline = time.monotonic() + 5 * SLOW
    while k.pdpdeact is None or not k.unknown_socket_urcs:
        assert time.monotonic() < deadline, (k.pdpdeact, k.unknown_socket_urcs, k.unexpected)
        k.pump(0.05)
        k.handle_urcs()
    assert k.pdpdeact == 1 and k.sockets == {}
    assert k.unknown_socket_urcs == [("closed", sid)]
    assert emulator.control("register", stat=1) == {"ok": True}
    k.pump(0.3)
    k.handle_urcs()
    k.send_wait_echo(b"AT+QIDEACT=1\r\n")
    k.wait("code", b"OK")
    assert k.unexpected == []


# =================================================================================================
# ST X-CUBE-CELLULAR, BG96 AT custom layer (modem sockets)
# =================================================================================================
(WAITING_FOR_INIT_CR, WAITING_FOR_CR, WAITING_FOR_LF, WAITING_FOR_FIRST_CHAR,
 WAITING_FOR_SOCKET_DATA) = range(5)
RX_IDLE, RX_WAITING_HEADER, RX_RECEIVING_HEADER, RX_RECEIVING_DATA, RX_DATA_RECEIVED, RX_FINISHED = range(6)
SEND_IDLE, SEND_PROMPT1, SEND_PROMPT2, SEND_PROMPT_RECEIVED = range(4)


class StBg96:
    """ATCustom_BG96_checkEndOfMsgCallback() + the socket build / analyze functions."""

    def __init__(self, uart: Uart, max_buffer_size: int = 1500) -> None:
        self.uart = uart
        self.syntax = WAITING_FOR_INIT_CR
        self.rx_state = RX_IDLE
        self.send_state = SEND_IDLE
        self.qird_counter = 0
        self.header_digits = bytearray()
        self.header_complete = False
        self.expected = 0
        self.count = 0
        self.msg = bytearray()
        self.messages: list[bytes] = []
        self.max_buffer_size = max_buffer_size
        self.pending_recv: set[int] = set()
        self.closed_by_remote: set[int] = set()
        self.urcs: list[bytes] = []

    # -- the automaton ---------------------------------------------------------------------------
    def check_end_of_msg(self, c: int) -> bool:
        last = False
        if self.syntax == WAITING_FOR_INIT_CR:
            if c == 0x0D:
                self.syntax = WAITING_FOR_LF
        elif self.syntax == WAITING_FOR_CR:
            if c == 0x0D:
                self.syntax = WAITING_FOR_LF
        elif self.syntax == WAITING_FOR_LF:
            if c == 0x0A:
                self.syntax = WAITING_FOR_FIRST_CHAR
                last = True
                self.qird_counter = 0
        elif self.syntax == WAITING_FOR_FIRST_CHAR:
            if self.rx_state == RX_WAITING_HEADER:
                if c == b"+QIRD"[self.qird_counter]:
                    self.qird_counter += 1
                    if self.qird_counter == 5:
                        self.header_digits.clear()
                        self.header_complete = False
                        self.rx_state = RX_RECEIVING_HEADER
                else:
                    self.header_digits.clear()
                    self.header_complete = False
                    self.syntax = WAITING_FOR_LF
                    self.rx_state = RX_WAITING_HEADER
            if self.rx_state == RX_RECEIVING_HEADER:
                if c == 0x0D:
                    size = int(self.header_digits or b"0")
                    if size != self.expected:
                        self.expected = size
                    self.syntax = WAITING_FOR_LF
                    self.rx_state = RX_RECEIVING_DATA
                elif 0x30 <= c <= 0x39:
                    if not self.header_complete and len(self.header_digits) < 4:
                        self.header_digits.append(c)
                elif c == 0x2C:
                    self.header_complete = True
            elif self.rx_state == RX_RECEIVING_DATA:
                self.count += 1
                self.syntax = WAITING_FOR_SOCKET_DATA
                if self.count == self.expected:
                    self.rx_state = RX_DATA_RECEIVED
                    self.syntax = WAITING_FOR_CR
            elif c == 0x0D:
                self.syntax = WAITING_FOR_LF
        elif self.syntax == WAITING_FOR_SOCKET_DATA:
            self.count += 1
            if self.count == self.expected:
                self.rx_state = RX_DATA_RECEIVED
                self.syntax = WAITING_FOR_CR
        if not last and self.send_state != SEND_IDLE:
            if self.send_state == SEND_PROMPT1:
                if c == 0x3E:
                    self.send_state = SEND_PROMPT2
            elif self.send_state == SEND_PROMPT2:
                if c == 0x20:
                    self.send_state = SEND_PROMPT_RECEIVED
                    last = True
                else:
                    self.send_state = SEND_PROMPT1
        return last

    def next_message(self, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.messages:
            c = self.uart.getc(0.05)
            if c is None:
                assert time.monotonic() < deadline, f"no message; partial {bytes(self.msg)!r}"
                continue
            self.msg.append(c)
            if self.check_end_of_msg(c):
                self.messages.append(bytes(self.msg))
                self.msg.clear()
        return self.messages.pop(0)

    @staticmethod
    def body(msg: bytes) -> bytes:
        """extractElement's start: a leading CR LF is jumped over; the trailing one is not data."""
        if msg.startswith(b"\r\n"):
            msg = msg[2:]
        return msg[:-2] if msg.endswith(b"\r\n") else msg

    @staticmethod
    def elements(body: bytes) -> list[bytes]:
        """Parameters: the first ':' separates the name; ',' outside quotes separates fields."""
        name, _, rest = body.partition(b":")
        out = [name]
        field, quoted = bytearray(), False
        for ch in rest.strip(b" "):
            if ch == 0x22:
                quoted = not quoted
                continue
            if ch == 0x2C and not quoted:
                out.append(bytes(field))
                field = bytearray()
                continue
            field.append(ch)
        out.append(bytes(field))
        return out

    def _urc(self, body: bytes) -> bool:
        if body.startswith(b"+QIURC:"):
            el = self.elements(body)
            self.urcs.append(body)
            if b"recv" in el[1]:
                self.pending_recv.add(int(el[2]))
            elif b"closed" in el[1]:
                self.closed_by_remote.add(int(el[2]))
            return True
        return False

    def command(self, cmd: bytes, final=(b"OK", b"ERROR"), timeout: float = 10.0) -> list[bytes]:
        """One AT command (CR alone), its message bodies up to a final result (URCs aside)."""
        self.uart.write(cmd + b"\r")
        bodies = []
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next_message(max(0.1, deadline - time.monotonic()))
            body = self.body(msg)
            if not body or self._urc(body):
                continue
            bodies.append(body)
            if body in final or body.startswith(b"+CME ERROR"):
                return bodies

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                msg = self.next_message(0.05)
            except AssertionError:
                continue
            body = self.body(msg)
            if body and not self._urc(body):
                raise AssertionError(f"unexpected message {msg!r}")

    def wait_urc(self, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, "URC not seen"
            self.poll(0.1)

    # -- socket SIDs ----------------------------------------------------------------------------
    def dial(self, sid: int, service: str, ip: str, rport: int, lport: int = 0) -> None:
        bodies = self.command(f'AT+QIOPEN=1,{sid},"{service}","{ip}",{rport},{lport},0'.encode())
        assert bodies == [b"OK"], bodies
        while True:
            body = self.body(self.next_message(150))
            if not body or self._urc(body):
                continue
            el = self.elements(body)
            assert el[0] == b"+QIOPEN", body
            assert int(el[1]) == sid and int(el[2]) == 0, body
            return

    def send(self, sid: int, data: bytes, ip: str | None = None, port: int | None = None) -> None:
        if ip is None:
            cmd = f"AT+QISEND={sid},{len(data)}"
        else:
            cmd = f'AT+QISEND={sid},{len(data)},"{ip}",{port}'
        self.send_state = SEND_PROMPT1
        self.uart.write(cmd.encode() + b"\r")
        while True:
            msg = self.next_message()
            body = self.body(msg)
            if not body or self._urc(body):
                continue
            assert body == b"> ", msg
            break
        self.send_state = SEND_IDLE
        self.uart.write(data)
        while True:
            body = self.body(self.next_message())
            if not body or self._urc(body):
                continue
            assert body == b"SEND OK", body
            return

    def receive(self, sid: int) -> tuple[bytes, tuple[str, int] | None]:
        """SID_CS_RECEIVE_DATA: AT+QIRD=<id>,0 for the size, then AT+QIRD=<id>,<size>."""
        bodies = self.command(f"AT+QIRD={sid},0".encode())
        assert bodies[-1] == b"OK", bodies
        el = self.elements(bodies[0])
        assert el[0] == b"+QIRD" and len(el) == 4, bodies
        unread = int(el[3])
        if unread == 0:
            return b"", None
        self.expected = min(unread, self.max_buffer_size)
        self.count = 0
        self.rx_state = RX_WAITING_HEADER
        self.uart.write(f"AT+QIRD={sid},{self.expected}".encode() + b"\r")
        header = data = None
        while True:
            msg = self.next_message()
            body = self.body(msg)
            if header is None:
                if not body or self._urc(body):
                    continue
                assert body.startswith(b"+QIRD"), msg
                header = self.elements(body)
                continue
            if data is None:
                assert self.rx_state == RX_DATA_RECEIVED, (self.rx_state, msg)
                self.rx_state = RX_FINISHED
                assert msg[self.count:] == b"\r\n", msg
                data = msg[:self.count]
                continue
            if not body or self._urc(body):
                continue
            assert body == b"OK", msg
            break
        self.rx_state = RX_IDLE
        assert int(header[1]) == len(data)
        addr = (header[2].decode(), int(header[3])) if len(header) >= 4 else None
        return data, addr


@pytest.fixture
def st(driver_port, emulator):
    """The ST layer's start: ATE0 (echo off), AT+CMEE=1, the PDP context, AT+QIACT=1."""
    path, _ = driver_port
    uart = Uart(path)
    m = StBg96(uart)
    try:
        assert m.command(b"ATE0")[-1] == b"OK"
        assert m.command(b"AT+CMEE=1") == [b"OK"]
        assert m.command(b'AT+QICSGP=1,1,"","","",0') == [b"OK"]
        assert m.command(b"AT+QIACT=1", timeout=30) == [b"OK"]
        yield m
    finally:
        uart.close()


def test_st_bg96_tcp_client_send_and_two_step_reads_of_adversarial_payloads(st, peer_factory):
    """A TCP client in buffer mode: the prompt framed by '>' + ' ', the data, SEND OK; the
    peer's bytes announced by +QIURC: "recv",0, sized with AT+QIRD=0,0 and read with
    AT+QIRD=0,<unread>, whose payload the automaton counts blindly -- payloads holding CR LF,
    "+QIRD: 9", "OK" lines and a '>' then space come back byte for byte, none left over."""
    peer = peer_factory()
    m = st
    m.dial(0, "TCP", TCP_HOST, TCP_PORT)
    assert peer.accepted.wait(10)
    out = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n> not a prompt\r\nOK\r\n"
    m.send(0, out)
    deadline = time.monotonic() + 10
    while bytes(peer.got) != out:
        assert time.monotonic() < deadline, bytes(peer.got)
        time.sleep(0.01)
    for payload in (b"HTTP/1.1 200 OK\r\n\r\n+QIRD: 9\r\nhello\r\n\r\nOK\r\n",
                    b"\r\n+QIURC: \"closed\",0\r\n> \x00\xff" * 3):
        m.pending_recv.clear()
        peer.send(payload)
        m.wait_urc(lambda: 0 in m.pending_recv, 10)
        got = bytearray()
        while True:
            data, addr = m.receive(0)
            if not data:
                break
            assert addr is None
            got += data
        assert bytes(got) == payload
    close_on_eof(peer)
    assert m.command(b"AT+QICLOSE=0") == [b"OK"]
    assert not m.closed_by_remote


def test_st_bg96_reads_capped_to_the_client_buffer_drain_in_order(st, peer_factory):
    """max_buffer_size 100: 250 unread bytes are read as 100 + 100 + 50 (each AT+QIRD=0,0
    then AT+QIRD=0,<min(unread,100)>), the header's size always the one asked for, and the
    third AT+QIRD=0,0 after them reports 250,250,0."""
    peer = peer_factory()
    m = st
    m.max_buffer_size = 100
    m.dial(0, "TCP", TCP_HOST, TCP_PORT)
    payload = bytes(range(250))
    peer.send(payload)
    m.wait_urc(lambda: 0 in m.pending_recv, 10)
    time.sleep(0.2)                               # all 250 bytes in the module's buffer
    sizes, got = [], bytearray()
    while True:
        data, _ = m.receive(0)
        if not data:
            break
        sizes.append(len(data))
        got += data
    assert sizes == [100, 100, 50] and bytes(got) == payload
    bodies = m.command(b"AT+QIRD=0,0")
    assert bodies == [b"+QIRD: 250,250,0", b"OK"]
    close_on_eof(peer)
    assert m.command(b"AT+QICLOSE=0") == [b"OK"]


def test_st_bg96_remote_close_urc_then_qiclose(st, peer_factory):
    """The peer sends and closes: +QIURC: "recv",0 and +QIURC: "closed",0 (rank 3 the id);
    the data are still read afterwards (buffer mode keeps them), then AT+QICLOSE=0 is OK."""
    peer = peer_factory()
    m = st
    m.dial(0, "TCP", TCP_HOST, TCP_PORT)
    peer.send(b"bye now")
    peer.close()
    m.wait_urc(lambda: 0 in m.closed_by_remote, 10)
    assert 0 in m.pending_recv
    data, _ = m.receive(0)
    assert data == b"bye now"
    assert m.receive(0) == (b"", None)
    assert m.command(b"AT+QICLOSE=0") == [b"OK"]
    assert [u for u in m.urcs] == [b'+QIURC: "recv",0', b'+QIURC: "closed",0']


def test_st_bg96_udp_service_header_with_address(st):
    """A UDP SERVICE (fCmdBuild_QIOPEN_BG96's server branch, <local_port> given, buffer mode):
    the datagram's header '+QIRD: <n>,"<ip>",<port>' -- the automaton stops its size at the
    ',' and the analyzer takes ranks 3 / 4 as the sender --, then AT+QISEND=<id>,<n>,"<ip>",<port>
    back to it."""
    m = st
    lport = free_udp_port()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5 * SLOW)
    try:
        m.dial(1, "UDP SERVICE", "127.0.0.1", 0, lport)
        message = b"12345,\"6\",7\r\n+QIRD: 3\r\n"
        peer.sendto(message, ("127.0.0.1", lport))
        m.wait_urc(lambda: 1 in m.pending_recv, 10)
        data, addr = m.receive(1)
        assert (data, addr) == (message, peer.getsockname())
        m.send(1, data, *addr)
        assert peer.recvfrom(100) == (message, ("127.0.0.1", lport))
        assert m.command(b"AT+QICLOSE=1") == [b"OK"]
    finally:
        peer.close()


def test_kiso_fixed_length_send_of_control_bytes_with_a_datagram_during_the_prompt(kiso):
    """SocketSendTo() counts n + 2 bytes blindly after writing the data: a payload of Ctrl+Z,
    ESC, BS, DEL, NUL, CR LF (data, in a fixed-length send) must be echoed whole -- none taken
    as an end, none dropped -- and a datagram that arrives while the prompt waits must not put
    its +QIURC between "> " and the echo: it follows SEND OK, and the driver reads it then."""
    k = kiso
    lport = free_udp_port()
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5 * SLOW)
    try:
        sid = k.open_socket("UDP SERVICE", "127.0.0.1", 0, lport)
        payload = b"a\x1ab\x1bc\x08d\x7fe\r\nf\x00>\x1a"

        def datagram_now():
            peer.sendto(b"arrived during the prompt", ("127.0.0.1", lport))
            time.sleep(0.3)

        swallowed = b"".join(k.send_to(sid, payload, "127.0.0.1", peer.getsockname()[1],
                                       before_data=datagram_now))
        assert swallowed == payload + b"\r\n"
        assert peer.recvfrom(100) == (payload, ("127.0.0.1", lport))
        deadline = time.monotonic() + 5 * SLOW
        while not k.sockets[sid]["available"]:
            assert time.monotonic() < deadline, "no +QIURC recv"
            k.pump(0.05)
            k.handle_urcs()
        assert k.unexpected == []
        assert k.receive_from(sid) == (b"arrived during the prompt", "127.0.0.1", peer.getsockname()[1])
        k.close_socket(sid)
    finally:
        peer.close()


def test_st_bg96_udp_service_two_senders_one_datagram_per_read(st):
    """Two datagrams from two senders queued (one +QIURC: "recv": the buffer was empty only
    before the first): AT+QIRD=<id>,0 reports both as unread, the read asks for all of them, and
    each answer carries ONE datagram with its own sender -- the automaton takes the header's
    smaller size over the one it asked for -- until 0 are unread."""
    m = st
    lport = free_udp_port()
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        m.dial(2, "UDP SERVICE", "127.0.0.1", 0, lport)
        a.sendto(b"first,from a", ("127.0.0.1", lport))
        m.wait_urc(lambda: 2 in m.pending_recv, 10)
        b.sendto(b"second\r\nfrom b", ("127.0.0.1", lport))
        time.sleep(0.3)
        reads = []
        while True:
            data, addr = m.receive(2)
            if not data:
                break
            reads.append((data, addr))
        assert reads == [(b"first,from a", a.getsockname()), (b"second\r\nfrom b", b.getsockname())]
        assert m.urcs == [b'+QIURC: "recv",2']
        assert m.command(b"AT+QICLOSE=2") == [b"OK"]
    finally:
        a.close()
        b.close()


def test_st_bg96_peer_streams_while_the_driver_reads(st, peer_factory):
    """The peer writes 80 pieces of 45 bytes, 2 ms apart, while the driver drains with
    AT+QIRD=0,0 / AT+QIRD=0,<n> (max buffer 200): whatever arrives during an answer must not
    come between a header and its data (the automaton counts it as payload) -- every byte
    arrives once, in order, and each "+QIURC: "recv"" stands between messages."""
    import threading
    peer = peer_factory()
    m = st
    m.max_buffer_size = 200
    m.dial(0, "TCP", TCP_HOST, TCP_PORT)
    assert peer.accepted.wait(10)
    pieces = [bytes([0x30 + i % 10]) * 43 + b"\r\n" for i in range(80)]
    want = b"".join(pieces)

    def stream():
        for p in pieces:
            peer.send(p)
            time.sleep(0.002)
    t = threading.Thread(target=stream, daemon=True)
    t.start()
    got = bytearray()
    deadline = time.monotonic() + 15
    while len(got) < len(want):
        assert time.monotonic() < deadline, len(got)
        if 0 not in m.pending_recv:
            m.poll(0.05)
            continue
        m.pending_recv.discard(0)
        while True:
            data, _ = m.receive(0)
            if not data:
                break
            assert len(data) <= 200
            got += data
    t.join(5)
    assert bytes(got) == want
    close_on_eof(peer)
    assert m.command(b"AT+QICLOSE=0") == [b"OK"]
