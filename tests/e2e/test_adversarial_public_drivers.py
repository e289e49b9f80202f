"""Adversarial tests: the SSL (and TCP/UDP) socket paths of public host drivers nobody on this
project wrote, replayed through the pty byte for byte -- their line endings, the order in
which they wait for answers, and their parsers -- against OpenSSL / plain loopback peers.
(test_adversarial_driver_init.py replays start-ups only; this file replays socket paths.)

Drivers replayed (public sources read through the reference store):
- TinyGSM v0.12.0, vshymanskyy/TinyGSM src/TinyGsmClientBG96.h (the class EC2x users pick):
  modemConnect() (SSL: AT+QSSLCFG on context 0, then AT+QSSLOPEN=1,1,<mux>,... i.e. SSL
  context 1; TCP: AT+QIOPEN=1,<mux>,"TCP",...,0,0), modemSend(), modemRead(),
  modemGetAvailable(), modemGetConnected(), handleURCs() (+QIURC only), GsmClientSecureBG96
  ::stop(); src/TinyGsmModem.tpp sendAT() ("AT" ... AT_NL = "\\r\\n"), waitResponseImpl()
  (byte by byte, data.endsWith(rN)), streamGetIntBefore() (readBytesUntil, < 7 bytes, atoi),
  streamSkipUntil().
- Mbed OS, ARMmbed/mbed-os connectivity/drivers/cellular/QUECTEL/BG96/
  QUECTEL_BG96_CellularStack.cpp: the constructor's AT+QSSLCLOSE=0..11, setsockopt()
  (TLS enable: seclevel, sslversion 4, ciphersuite 0xFFFF unquoted and lower-case x;
  SET_HOSTNAME: AT+QSSLCFG="checkhost"; SET_CACERT: set_to_modem_impl() = AT+QFDEL, AT+QFUPL
  =<name>,<size>, CONNECT, bytes, +QFUPL: read_int == size, AT+QSSLCFG="cacert"),
  socket_connect() (AT+QSSLOPEN=<cid>,0,<id>,"<ip>",<port>,0; on an error code
  socket_close_impl() then one retry), socket_sendto_impl() (1460-byte blocks, "SEND OK"
  compared as a string; TCP: AT+QISEND=<id>,0 before and after, sent = difference),
  socket_recvfrom_impl() (AT+QSSLRECV=<id>,<size<=1500>, AT+QIRD=<id> for UDP with
  "<ip>",<port> after the length), urc handlers '+QSSLURC: "recv' / '+QSSLURC: "close'.
  ATHandler writes "\\r" after each command.  connectivity/netsocket/source/
  InternetDatagramSocket.cpp recvfrom(): "Filter incomming packets using connected peer
  address" (a datagram whose sender is not the connected peer is dropped).
- FreeRTOS-Cellular-Interface modules/bg96/cellular_bg96_api.c (before the module moved out):
  buildSocketConnect() "AT+QIOPEN=%d,%ld,\\"%s\\",\\"%s\\",%d,%d,%d", Cellular_SocketSend()
  (socketSendDataPrefix(): the 2-byte line "> "), Cellular_SocketRecv() (AT+QIRD=<id>,<len>,
  socketRecvDataPrefix(): "+QIRD: <n>" then CR LF then the data), Cellular_SocketClose();
  cellular_bg96.c success tokens OK / CONNECT / SEND OK / ">".

Every host name dialled is routed to 127.0.0.1."""
from __future__ import annotations

import os
import re
import socket
import time

import pytest
import serial

from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer
from tests.e2e.socket_support import free_port

CID = 1
# TinyGSM's own waits (1 s mostly) are multiplied by this in the replay: the driver's timing
# is not what these tests are about, and a loaded machine must not turn a late but exact
# answer into a driver timeout.  (A wait the driver is expected to sit out -- an answer it
# does not match -- costs this many seconds.)
DRIVER_TIMEOUT_SCALE = 3


# -- an Arduino Stream over the pty (TinyGSM's view of the port) ------------------------------------
class Stream:
    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.005)
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def _fill(self) -> None:
        chunk = self.ser.read(max(1, self.ser.in_waiting))
        self.buf += chunk

    def read(self, timeout: float = 1.0) -> int:
        """Stream.read() after waiting for available(): one byte, or -1 at the timeout."""
        deadline = time.monotonic() + timeout
        while not self.buf:
            if time.monotonic() > deadline:
                return -1
            self._fill()
        b = self.buf[0]
        del self.buf[0]
        return b

    def close(self) -> None:
        self.ser.close()


def _atoi(raw: bytes) -> int:
    m = re.match(rb"\s*([+-]?\d+)", raw)
    return int(m.group(1)) if m else 0


class TinyGsmBG96:
    """TinyGsmBG96 (v0.12.0) as far as its socket paths go; every method mirrors the C++."""

    def __init__(self, path: str) -> None:
        self.stream = Stream(path)
        self.got_data: dict[int, bool] = {}
        self.sock_connected: dict[int, bool] = {}
        self.unhandled: list[bytes] = []           # what waitResponse() dropped ("### Unhandled")
        self.skipped: list[bytes] = []             # (test's record) what it passed over before a match

    def sendAT(self, *parts) -> None:              # TinyGsmModem.tpp: "AT", cmd..., AT_NL
        self.stream.write(b"AT" + b"".join(p if isinstance(p, bytes) else str(p).encode() for p in parts) + b"\r\n")

    def waitResponse(self, timeout: float = 1.0, *rs: bytes) -> int:
        rs = rs or (b"OK\r\n", b"ERROR\r\n")
        data = bytearray()
        deadline = time.monotonic() + timeout * DRIVER_TIMEOUT_SCALE
        while time.monotonic() < deadline:
            a = self.stream.read(max(0.0, deadline - time.monotonic()))
            if a <= 0:                             # "Skip 0x00 bytes, just in case"
                continue
            data.append(a)
            for i, r in enumerate(rs):
                if data.endswith(r):
                    if data[:-len(r)].strip():
                        self.skipped.append(bytes(data[:-len(r)].strip()))
                    return i + 1
            if self.handleURCs(data):
                data = bytearray()
        if data.strip():
            self.unhandled.append(bytes(data.strip()))
        return 0

    def streamSkipUntil(self, c: bytes, timeout: float = 1.0) -> bool:
        deadline = time.monotonic() + timeout * DRIVER_TIMEOUT_SCALE
        while time.monotonic() < deadline:
            if self.stream.read(max(0.0, deadline - time.monotonic())) == c[0]:
                return True
        return False

    def readBytesUntil(self, c: bytes, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            b = self.stream.read(1.0 * DRIVER_TIMEOUT_SCALE)    # Stream's default 1 s timeout
            if b < 0 or b == c[0]:
                break
            out.append(b)
        return bytes(out)

    def streamGetIntBefore(self, c: bytes) -> int:
        got = self.readBytesUntil(c, 7)
        return _atoi(got) if got and len(got) < 7 else -9999

    def readStringUntil(self, c: bytes) -> bytes:
        return self.readBytesUntil(c, 1 << 20)

    def handleURCs(self, data: bytearray) -> bool:
        if data.endswith(b"\r\n+QIURC:"):
            self.streamSkipUntil(b'"')
            urc = self.readStringUntil(b'"')
            self.streamSkipUntil(b",")
            if urc == b"recv":
                self.got_data[self.streamGetIntBefore(b"\n")] = True
            elif urc == b"closed":
                self.sock_connected[self.streamGetIntBefore(b"\n")] = False
            else:
                self.streamSkipUntil(b"\n")
            return True
        return False

    # -- client related functions ---------------------------------------------------------------
    def modemConnect(self, host: str, port: int, mux: int, ssl: bool, certificate: str = "",
                     timeout_s: int = 75) -> bool:
        if ssl:
            for cfg in (b'+QSSLCFG="sslversion",0,3', b'+QSSLCFG="ciphersuite",0,0X0035',
                        b'+QSSLCFG="seclevel",0,1'):
                self.sendAT(cfg)
                if self.waitResponse(5) != 1:
                    return False
            if certificate:
                self.sendAT(b'+QSSLCFG="cacert",0,"', certificate, b'"')
                if self.waitResponse(5) != 1:
                    return False
            self.sendAT(b"+QSSLOPEN=1,1,", mux, b',"', host, b'",', port, b",0")
            self.waitResponse()
            if self.waitResponse(timeout_s, b"\r\n+QSSLOPEN:") != 1:
                return False
            if self.streamGetIntBefore(b",") != mux:
                return False
            return self.streamGetIntBefore(b"\n") == 0
        self.sendAT(b"+QIOPEN=1,", mux, b',"TCP","', host, b'",', port, b",0,0")
        self.waitResponse()
        if self.waitResponse(timeout_s, b"\r\n+QIOPEN:") != 1:
            return False
        if self.streamGetIntBefore(b",") != mux:
            return False
        return self.streamGetIntBefore(b"\n") == 0

    def modemSend(self, data: bytes, mux: int, ssl: bool) -> int:
        self.sendAT(b"+QSSLSEND=" if ssl else b"+QISEND=", mux, b",", len(data))
        if self.waitResponse(1, b">") != 1:
            return 0
        self.stream.write(data)
        if self.waitResponse(1, b"\r\nSEND OK") != 1:
            return 0
        return len(data)

    def modemRead(self, size: int, mux: int, ssl: bool) -> tuple[bytes, int]:
        """(the bytes moved, the code of the driver's last waitResponse: 1 = OK after the
        data, 2 = ERROR, 0 = no "+QSSLRECV:"/"+QIRD:" head came).  The C++ returns the count
        only and ignores that code; the tests check it."""
        if ssl:
            self.sendAT(b"+QSSLRECV=", mux, b",", size)
            if self.waitResponse(1, b"+QSSLRECV:") != 1:
                return b"", 0
        else:
            self.sendAT(b"+QIRD=", mux, b",", size)
            if self.waitResponse(1, b"+QIRD:") != 1:
                return b"", 0
        n = self.streamGetIntBefore(b"\n")
        out = bytearray()
        for _ in range(max(n, 0)):                  # moveCharFromStreamToFifo()
            b = self.stream.read(5 * DRIVER_TIMEOUT_SCALE)
            assert b >= 0, f"modemRead: {len(out)} of {n} bytes came"
            out.append(b)
        return bytes(out), self.waitResponse()

    def modemGetAvailable(self, mux: int, ssl: bool) -> int:
        result = 0
        self.sendAT(b"+QSSLRECV=" if ssl else b"+QIRD=", mux, b",0")
        if self.waitResponse(1, b"+QSSLRECV:" if ssl else b"+QIRD:") == 1:
            self.streamSkipUntil(b",")                 # Skip total received
            self.streamSkipUntil(b",")                 # Skip have read
            result = self.streamGetIntBefore(b"\n")
            self.waitResponse()
        if not result:
            self.sock_connected[mux] = self.modemGetConnected(mux, ssl)
        return result

    def modemGetConnected(self, mux: int, ssl: bool) -> bool:
        self.sendAT(b"+QSSLSTATE=1," if ssl else b"+QISTATE=1,", mux)
        if self.waitResponse(1, b"+QSSLSTATE:" if ssl else b"+QISTATE:") != 1:
            return False
        for _ in range(5):
            self.streamSkipUntil(b",")
        res = self.streamGetIntBefore(b",")
        self.waitResponse()
        return res == 2


@pytest.fixture
def modem(open_modem):
    """(pty path, ModemPort): an EC2x with PDP context 1 active; the fixture's Host is closed
    so that the driver under test opens the port itself, as a program does."""
    host, port = open_modem("ec2x")
    assert host.at(f'AT+QICSGP={CID},1,"UNINET","","",1;+QIACT={CID}') == b"\r\nOK\r\n"
    host.close()
    return host.path, port


# -- TinyGSM ---------------------------------------------------------------------------------
def test_tinygsm_bg96_secure_client_connect_send_read_stop(modem, emulator, strict_log):
    """GsmClientSecureBG96 on an EC2x: the AT+QSSLCFG lines go to SSL context 0 (with a CA
    name that does not exist) while AT+QSSLOPEN names context 1 -- the module must take the
    open's own context (defaults: seclevel 0), so the open succeeds.  modemSend() waits for
    ">" then "\\r\\nSEND OK"; modemRead() parses "+QSSLRECV:" with streamGetIntBefore('\\n')
    and moves exactly n bytes, then waitResponse() must find OK."""
    path, _ = modem
    with TlsServer(mode="echo") as server:
        emulator.router.add_map("tinygsm.example", 443, "127.0.0.1", server.address[1])
        d = TinyGsmBG96(path)
        assert d.modemConnect("tinygsm.example", 443, 0, ssl=True, certificate="UFS:never-uploaded.pem")
        payloads = [os.urandom(1000), b"\r\nOK\r\n+QSSLURC: \"closed\",0\r\n" + bytes(range(256)), os.urandom(1460)]
        for p in payloads:
            assert d.modemSend(p, 0, ssl=True) == len(p)
        want = b"".join(payloads)
        assert server.wait_received(len(want)) == want
        got = bytearray()
        deadline = time.monotonic() + 10
        while len(got) < len(want):
            assert time.monotonic() < deadline, (len(got), d.unhandled)
            data, code = d.modemRead(1500, 0, ssl=True)
            assert code == 1, (data, d.unhandled)
            got += data
        assert bytes(got) == want
        assert d.modemRead(1500, 0, ssl=True) == (b"", 1)     # "+QSSLRECV: 0" -> 0 bytes, then OK
        # the "recv" URCs are +QSSLURC, which handleURCs() does not know: passed over as text
        # while the driver waits for something else, never mistaken for an answer; nothing
        # else was passed over (no +QSSLRECV head, no data)
        lines = [line for s in d.skipped for line in s.split(b"\r\n") if line]
        assert lines and set(lines) == {b'+QSSLURC: "recv",0'}, d.skipped
        assert d.unhandled == []
        d.sendAT(b"+QSSLCLOSE=", 0)                          # GsmClientSecureBG96::stop()
        assert d.waitResponse(15) == 1
        assert server.wait_done().close_notify_received            # AT+QSSLCLOSE: close_notify
        d.stream.close()


def test_tinygsm_bg96_secure_client_available_checks_get_error_on_ec2x(modem, emulator, strict_log):
    """TinyGSM's available() check-in (TINY_GSM_BUFFER_READ_AND_CHECK_SIZE): modemGetAvailable()
    sends AT+QSSLRECV=<mux>,0 and modemGetConnected() AT+QSSLSTATE=1,<mux> (the BG96 TCP
    forms).  The EC2x note (§2.2.4: <readlen> 1-1500; §2.2.6: AT+QSSLSTATE=<clientID>) has
    neither form: both are ERROR, so the driver decides the socket is gone.  This pins the
    module's answers (exact bytes) and that the socket itself stays usable after them."""
    path, _ = modem
    with TlsServer(mode="echo") as server:
        emulator.router.add_map("tinygsm.example", 443, "127.0.0.1", server.address[1])
        d = TinyGsmBG96(path)
        assert d.modemConnect("tinygsm.example", 443, 3, ssl=True)
        assert d.modemSend(b"hello", 3, ssl=True) == 5
        assert server.wait_received(5) == b"hello"
        # the echo's URC (after the rest of SEND OK's line), so that it precedes no answer below
        assert _read_until(d.stream, b'+QSSLURC: "recv",3\r\n') == b'\r\n\r\n+QSSLURC: "recv",3\r\n'
        d.stream.write(b"AT+QSSLRECV=3,0\r\n")
        assert _read_until(d.stream, b"ERROR\r\n") == b"\r\nERROR\r\n"
        assert d.unhandled == []
        assert d.modemGetAvailable(3, ssl=True) == 0
        assert d.sock_connected[3] is False                 # what TinyGSM concludes on an EC2x
        # ... because both of its checks were answered ERROR, which neither wait matches
        assert d.unhandled == [b"ERROR", b"ERROR"]
        d.stream.write(b"AT+QSSLSTATE=3\r\n")               # the note's form works
        state = _read_until(d.stream, b"OK\r\n")
        assert re.search(rb'\r\n\+QSSLSTATE: 3,"SSLClient","tinygsm\.example",443,\d+,2,1,3,0,"usbmodem",1\r\n\r\nOK\r\n$',
                         state), state
        assert d.modemRead(1500, 3, ssl=True) == (b"hello", 1)
        d.sendAT(b"+QSSLCLOSE=", 3)
        assert d.waitResponse(15) == 1
        d.stream.close()


def test_tinygsm_bg96_tcp_client_urcs_available_read_and_peer_close(modem, emulator, strict_log):
    """GsmClientBG96 (TCP): +QIOPEN parsed after OK, handleURCs() takes '+QIURC: "recv",<mux>'
    (streamGetIntBefore('\\n') must give the mux) while waiting for SEND OK, modemGetAvailable()
    reads the third field of AT+QIRD=<mux>,0, modemRead() the data, modemGetConnected() the
    sixth field of AT+QISTATE=1,<mux> (2 while open); the peer's close arrives as
    '+QIURC: "closed",<mux>' and the state reads 4."""
    path, _ = modem
    with TcpServer("echo") as server:
        emulator.router.add_map("tcp.tinygsm.example", 7000, "127.0.0.1", server.port)
        d = TinyGsmBG96(path)
        assert d.modemConnect("tcp.tinygsm.example", 7000, 5, ssl=False)
        payload = os.urandom(1200) + b"\r\n+QIURC: \"recv\",5\r\n"
        assert d.modemSend(payload, 5, ssl=False) == len(payload)
        conn = server.wait_connection()
        conn.wait_received(len(payload))
        deadline = time.monotonic() + 10
        while not d.got_data.get(5):
            assert time.monotonic() < deadline, d.unhandled
            d.waitResponse(0.05, b"\x00never")                # maintain(): waitResponse(15, NULL, NULL)
        avail = 0
        while avail < len(payload):
            assert time.monotonic() < deadline
            avail = d.modemGetAvailable(5, ssl=False)
        assert avail == len(payload)
        assert d.modemGetConnected(5, ssl=False) is True
        assert d.modemRead(1500, 5, ssl=False) == (payload, 1)
        assert d.modemGetAvailable(5, ssl=False) == 0
        assert d.sock_connected[5] is True
        assert d.unhandled == []                             # every wait matched (no ERROR)
        conn.close()
        while d.sock_connected.get(5) is not False:
            assert time.monotonic() < deadline, d.unhandled
            d.waitResponse(0.05, b"\x00never")
        d.sendAT(b"+QISTATE=1,", 5)
        assert d.waitResponse(1, b"+QISTATE:") == 1
        # a dialled name shows as the modem's DNS answer (docs/behaviour.md, AT+QISTATE)
        assert re.fullmatch(rb' 5,"TCP","198\.1[89]\.\d+\.\d+",7000,[1-9]\d*,4,1,5,0,"usbmodem"\r',
                            d.readStringUntil(b"\n"))
        assert d.waitResponse() == 1
        d.sendAT(b"+QICLOSE=", 5)
        assert d.waitResponse(15) == 1
        d.stream.close()


def _read_until(stream: Stream, end: bytes, timeout: float = 5) -> bytes:
    out = bytearray()
    deadline = time.monotonic() + timeout
    while not out.endswith(end):
        b = stream.read(max(0.0, deadline - time.monotonic()))
        assert b >= 0, f"timed out; got {bytes(out)!r}"
        out.append(b)
    return bytes(out)


# -- Mbed OS QUECTEL_BG96_CellularStack ----------------------------------------------------------
class MbedAT:
    """The parts of Mbed's ATHandler the BG96 stack uses: commands end with "\\r", a response
    is scanned for a prefix, URCs are matched by prefix wherever a line starts."""
    URCS = (b'+QSSLURC: "recv', b'+QSSLURC: "close', b'+QIURC: "recv', b'+QIURC: "close',
            b'+QIURC: "dnsgip",')

    def __init__(self, path: str) -> None:
        self.stream = Stream(path)
        self.urcs: list[bytes] = []

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.stream.buf:
            assert time.monotonic() < deadline, f"no line; have {bytes(self.stream.buf)!r}"
            self.stream._fill()
        line, _, rest = bytes(self.stream.buf).partition(b"\r\n")
        self.stream.buf = bytearray(rest)
        return line

    def cmd(self, line: bytes) -> None:
        self.stream.write(line + b"\r")

    def resp(self, prefix: bytes | None = None, timeout: float = 10) -> bytes | str:
        """Lines until `prefix` (returns the rest of that line) or a final result (returns
        "OK"/"ERROR"/"+CME ERROR: n"); URC lines are filed."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._line(deadline)
            if prefix is not None and got.startswith(prefix):
                return got[len(prefix):]
            if got in (b"OK", b"ERROR") or got.startswith(b"+CME ERROR"):
                return got.decode()
            if got.startswith(self.URCS):
                self.urcs.append(got)

    def discard(self, line: bytes, timeout: float = 10) -> str:
        """at_cmd_discard(): the command, then its final result."""
        self.cmd(line)
        while True:
            got = self.resp(timeout=timeout)
            if isinstance(got, str):
                return got

    def prompt(self, token: bytes, timeout: float = 10) -> None:
        """resp_start(">") / resp_start("CONNECT"): read until the token."""
        deadline = time.monotonic() + timeout
        while token not in self.stream.buf:
            assert time.monotonic() < deadline, bytes(self.stream.buf)
            self.stream._fill()
        before, _, rest = bytes(self.stream.buf).partition(token)
        for line in before.split(b"\r\n"):          # URCs met on the way go to their handlers
            assert line == b"" or line.startswith(self.URCS), before
            if line:
                self.urcs.append(line)
        self.stream.buf = bytearray(rest)

    def wait_urc(self, prefix: bytes, timeout: float = 10) -> None:
        """Idle between commands (a URC handler's wake-up) until a URC with `prefix` came."""
        deadline = time.monotonic() + timeout
        while not any(u.startswith(prefix) for u in self.urcs):
            line = self._line(deadline)
            assert line == b"" or line.startswith(self.URCS), f"not a URC: {line!r}"
            if line:
                self.urcs.append(line)

    def read_bytes(self, n: int, timeout: float = 10) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.stream.buf) < n:
            assert time.monotonic() < deadline
            self.stream._fill()
        out = bytes(self.stream.buf[:n])
        del self.stream.buf[:n]
        return out


def _mbed_send(at: MbedAT, cmd: bytes, sock_id: int, data: bytes) -> None:
    """socket_sendto_impl() for TCP/TLS: 1460-byte blocks, each "SEND OK"."""
    for i in range(0, len(data), 1460):
        blk = data[i:i + 1460]
        at.cmd(b"AT%s=%d,%d" % (cmd, sock_id, len(blk)))
        at.prompt(b">")
        at.stream.write(blk)
        # resp_start(); set_stop_tag("\r\n"); read_string(): the line after "> "
        line = at._line(time.monotonic() + 10)
        while line.strip() in (b"",):
            line = at._line(time.monotonic() + 10)
        assert line.lstrip(b" ") == b"SEND OK", line


def _mbed_recv_tls(at: MbedAT, sock_id: int, size: int = 1500) -> bytes | None:
    """socket_recvfrom_impl() for TLS: None for NSAPI_ERROR_WOULD_BLOCK (+QSSLRECV: 0)."""
    at.cmd(b"AT+QSSLRECV=%d,%d" % (sock_id, min(size, 1500)))
    head = at.resp(b"+QSSLRECV:")
    assert isinstance(head, bytes), head
    n = int(head)
    data = at.read_bytes(n) if n > 0 else b""
    assert at.resp() == "OK"
    return data or None


def test_mbed_bg96_offloaded_tls_socket_cert_upload_connect_send_recv_close(modem, emulator, pki, strict_log):
    """The Mbed BG96 stack's offloaded TLSSocket on an EC2x: start-up closes 0..11; the CA is
    uploaded with AT+QFUPL=<name>,<size> (no timeout: the 5 s default) after a failing
    AT+QFDEL; ciphersuite is written 0xFFFF (lower-case x, unquoted); "checkhost" (a BG96
    option the EC2x note does not have) is ERROR; the open dials an IP literal whose
    certificate carries that IP; 3000 bytes go out in 1460-byte blocks and come back intact;
    close is AT+QSSLCLOSE then seclevel 0."""
    path, _ = modem
    ip = "93.184.216.34"
    cert = pki.issue("mbed-ip", ip)
    with TlsServer(cert, mode="echo") as server:
        emulator.router.add_map(ip, 443, "127.0.0.1", server.address[1])
        at = MbedAT(path)
        for i in range(12):                                   # the constructor's quick hack
            assert at.discard(b"AT+QSSLCLOSE=%d" % i) == "OK"
        # NSAPI_TLSSOCKET_SET_CACERT -> set_to_modem_impl("cacert.pem", "cacert", ...)
        ca = pki.ca.cert_pem
        assert at.discard(b'AT+QFDEL="cacert.pem"') == "+CME ERROR: 405"     # cleared, ignored
        at.cmd(b'AT+QFUPL="cacert.pem",%d' % len(ca))
        at.prompt(b"CONNECT")
        at.stream.write(ca)
        rest = at.resp(b"+QFUPL:")
        assert isinstance(rest, bytes) and int(rest.split(b",")[0]) == len(ca), rest
        assert at.resp() == "OK"
        assert at.discard(b'AT+QSSLCFG="cacert",0,"cacert.pem"') == "OK"
        # NSAPI_TLSSOCKET_ENABLE (at connect, _tls_sec_level 1 by now)
        assert at.discard(b'AT+QSSLCFG="seclevel",0,1') == "OK"
        assert at.discard(b'AT+QSSLCFG="sslversion",0,4') == "OK"
        assert at.discard(b'AT+QSSLCFG="ciphersuite",0,0xFFFF') == "OK"
        # NSAPI_TLSSOCKET_SET_HOSTNAME: the BG96's "checkhost"; the EC2x note has no such option
        assert at.discard(b'AT+QSSLCFG="checkhost",0,"' + ip.encode() + b'"') == "ERROR"
        # socket_connect(): at_cmd_discard, then handle_open_socket_response()
        assert at.discard(b'AT+QSSLOPEN=1,0,0,"%s",443,0' % ip.encode()) == "OK"
        assert at.resp(b"+QSSLOPEN:") == b" 0,0"
        data = b"\n" + os.urandom(2998) + b"\r"                # LF first: a CR-only host's data
        _mbed_send(at, b"+QSSLSEND", 0, data)
        assert server.wait_received(len(data)) == data
        got = bytearray()
        deadline = time.monotonic() + 10
        while len(got) < len(data):
            assert time.monotonic() < deadline
            got += _mbed_recv_tls(at, 0) or b""
        assert bytes(got) == data
        assert _mbed_recv_tls(at, 0) is None
        assert any(u.startswith(b'+QSSLURC: "recv",0') for u in at.urcs), at.urcs
        # socket_close_impl()
        assert at.discard(b"AT+QSSLCLOSE=0") == "OK"
        assert at.discard(b'AT+QSSLCFG="seclevel",0,0') == "OK"
        assert server.wait_done().close_notify_received            # AT+QSSLCLOSE: close_notify
        at.stream.close()


def test_mbed_bg96_tls_open_failure_close_and_retry(modem, emulator, strict_log):
    """socket_connect(): a non-zero +QSSLOPEN error makes the driver call socket_close_impl()
    (AT+QSSLCLOSE, AT+QSSLCFG="seclevel",0,0) and send the same AT+QSSLOPEN once more.  The
    first open is refused (nothing listens: 566); the id must be free again and the retry,
    with a server now listening, must connect; a peer close then comes as
    '+QSSLURC: "closed",<id>' (handler prefix '+QSSLURC: "close') after the data."""
    path, _ = modem
    ip = "198.51.100.7"
    with TlsServer(mode="sink") as dead:
        dead_port = dead.address[1]
    emulator.router.add_map(ip, 8443, "127.0.0.1", dead_port)
    at = MbedAT(path)
    assert at.discard(b'AT+QSSLCFG="seclevel",0,0') == "OK"
    assert at.discard(b'AT+QSSLOPEN=1,0,2,"%s",8443,0' % ip.encode()) == "OK"
    assert at.resp(b"+QSSLOPEN:") == b" 2,566"
    assert at.discard(b"AT+QSSLCLOSE=2") == "OK"
    assert at.discard(b'AT+QSSLCFG="seclevel",0,0') == "OK"

    def last_words(conn):
        while len(conn.received) < 4 and conn.recv():
            pass
        conn.sendall(b"bye!")
    with TlsServer(handler=last_words) as server:
        emulator.router.add_map(ip, 8443, "127.0.0.1", server.address[1])
        assert at.discard(b'AT+QSSLOPEN=1,0,2,"%s",8443,0' % ip.encode()) == "OK"
        assert at.resp(b"+QSSLOPEN:") == b" 2,0"
        _mbed_send(at, b"+QSSLSEND", 2, b"ping")
        at.wait_urc(b'+QSSLURC: "close')
        assert [u for u in at.urcs if u.startswith(b"+QSSLURC")] == [b'+QSSLURC: "recv",2', b'+QSSLURC: "closed",2']
        assert _mbed_recv_tls(at, 2) == b"bye!"
        assert _mbed_recv_tls(at, 2) is None
        assert at.discard(b"AT+QSSLCLOSE=2") == "OK"
    at.stream.close()


def test_mbed_bg96_tcp_send_counts_from_qisend_query(modem, emulator, strict_log):
    """socket_sendto_impl() for TCP: sent = (+QISEND: <total>,...) after - before; the driver
    returns exactly that to the application, so it must equal what was sent (2000 bytes in
    1460 + 540 blocks).  Reads are AT+QIRD=<id>,<size>."""
    path, _ = modem
    ip = "203.0.113.9"
    with TcpServer("echo") as server:
        emulator.router.add_map(ip, 7, "127.0.0.1", server.port)
        at = MbedAT(path)
        assert at.discard(b'AT+QIOPEN=1,4,"TCP","%s",7,0,0' % ip.encode()) == "OK"
        assert at.resp(b"+QIOPEN:") == b" 4,0"
        data = os.urandom(2000)
        for rnd in range(2):
            at.cmd(b"AT+QISEND=4,0")
            before = at.resp(b"+QISEND:")
            assert at.resp() == "OK"
            _mbed_send(at, b"+QISEND", 4, data)
            at.cmd(b"AT+QISEND=4,0")
            after = at.resp(b"+QISEND:")
            assert at.resp() == "OK"
            assert int(after.split(b",")[0]) - int(before.split(b",")[0]) == len(data), (before, after)
            got = bytearray()
            deadline = time.monotonic() + 10
            while len(got) < len(data):
                assert time.monotonic() < deadline
                at.cmd(b"AT+QIRD=4,1500")
                n = int(at.resp(b"+QIRD:"))
                got += at.read_bytes(n) if n else b""
                assert at.resp() == "OK"
            assert bytes(got) == data
        assert at.discard(b"AT+QICLOSE=4") == "OK"
        at.stream.close()


def test_mbed_bg96_udp_service_reply_comes_from_the_address_sent_to(modem, emulator, strict_log):
    """Mbed's UDPSocket on the BG96 stack is a UDP SERVICE: AT+QIOPEN=1,<id>,"UDP SERVICE",
    "127.0.0.1",0,<local port>,0; sendto() is AT+QISEND=<id>,<len>,"<ip>",<port>; recvfrom()
    is AT+QIRD=<id> and takes the sender from '+QIRD: <len>,"<ip>",<port>'.  A connected
    UDPSocket (connect() then send()/recv(), e.g. an NTP or CoAP client) keeps only datagrams
    whose sender equals the peer it sent to; the echo server's reply must therefore read as
    "8.8.8.8",53, both in buffer mode and in a direct-push URC.  (Was a bug, fixed: the
    reply read as from the route's loopback target, '+QIRD: 4,"127.0.0.1",<its port>'.)"""
    path, _ = modem
    with UdpEchoServer() as udp:
        emulator.router.add_map("8.8.8.8", 53, "127.0.0.1", udp.port)
        at = MbedAT(path)
        local1, local2 = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_DGRAM)
        assert at.discard(b'AT+QIOPEN=1,1,"UDP SERVICE","127.0.0.1",0,%d,0' % local1) == "OK"
        assert at.resp(b"+QIOPEN:") == b" 1,0"
        at.cmd(b'AT+QISEND=1,4,"8.8.8.8",53')
        at.prompt(b">")
        at.stream.write(b"ping")
        assert at.resp(b"SEND OK") == b""
        assert [data for _, data in udp.wait_datagrams(1)] == [b"ping"]
        at.wait_urc(b'+QIURC: "recv",1')
        at.cmd(b"AT+QIRD=1")
        head = at.resp(b"+QIRD:")
        data = at.read_bytes(4)
        assert at.resp() == "OK"
        assert (head, data) == (b' 4,"8.8.8.8",53', b"ping")
        # Direct push (access mode 1): the URC names the same sender.
        assert at.discard(b"AT+QICLOSE=1") == "OK"
        assert at.discard(b'AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,%d,1' % local2) == "OK"
        assert at.resp(b"+QIOPEN:") == b" 2,0"
        at.cmd(b'AT+QISEND=2,4,"8.8.8.8",53')
        at.prompt(b">")
        at.stream.write(b"pong")
        assert at.resp(b"SEND OK") == b""
        assert [data for _, data in udp.wait_datagrams(2)] == [b"ping", b"pong"]
        at.wait_urc(b'+QIURC: "recv",2,4,"8.8.8.8",53')
        assert at.read_bytes(4) == b"pong"
        assert at.discard(b"AT+QICLOSE=2") == "OK"
        at.stream.close()


# -- FreeRTOS-Cellular-Interface modules/bg96 --------------------------------------------------
def test_freertos_bg96_tcp_socket_connect_send_recv_close(modem, emulator, strict_log):
    """FreeRTOS's BG96 port: commands end "\\r" (source/cellular_pktio.c); the connect is
    AT+QIOPEN=<ctx>,<id>,"TCP","<ip>",<port>,0,0 answered OK then the +QIOPEN URC
    (_Cellular_ProcessSocketOpen); Cellular_SocketSend() waits for the 2-byte line "> "
    (socketSendDataPrefix) and then SEND OK; Cellular_SocketRecv() sends AT+QIRD=<id>,1500
    and socketRecvDataPrefix() takes "+QIRD: <n>" up to the CR LF and n bytes after it.
    Payload bytes that look like answers ("\\r\\nOK\\r\\n", "+QIRD: 9") must stay data."""
    path, _ = modem
    ip = "192.0.2.44"
    with TcpServer("echo") as server:
        emulator.router.add_map(ip, 1883, "127.0.0.1", server.port)
        s = Stream(path)
        s.write(b'AT+QIOPEN=1,2,"TCP","%s",1883,0,0\r' % ip.encode())
        assert _read_until(s, b"+QIOPEN: 2,0\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 2,0\r\n"
        payload = b"\r\nOK\r\n+QIRD: 9\r\n" + os.urandom(1444)
        s.write(b"AT+QISEND=2,%d\r" % len(payload))
        assert _read_until(s, b"> ") == b"\r\n> "
        s.write(payload)
        assert _read_until(s, b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert _read_until(s, b'+QIURC: "recv",2\r\n') == b'\r\n+QIURC: "recv",2\r\n'
        got = bytearray()
        deadline = time.monotonic() + 10
        while len(got) < len(payload):
            assert time.monotonic() < deadline
            s.write(b"AT+QIRD=2,1500\r")
            head = _read_until(s, b"\r\n", 5)
            while head == b"\r\n":
                head = _read_until(s, b"\r\n", 5)
            m = re.fullmatch(rb"\+QIRD: (\d+)\r\n", head)
            assert m, head
            n = int(m.group(1))
            for _ in range(n):
                b = s.read(5)
                assert b >= 0
                got.append(b)
            assert _read_until(s, b"OK\r\n") == (b"\r\n\r\nOK\r\n" if n else b"\r\nOK\r\n")
        assert bytes(got) == payload
        s.write(b"AT+QICLOSE=2\r")
        assert _read_until(s, b"OK\r\n") == b"\r\nOK\r\n"
        assert server.gone()
        s.close()
