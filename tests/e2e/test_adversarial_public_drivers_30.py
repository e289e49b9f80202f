"""Adversarial tests: a thirtieth set of public host code that drives a Quectel module through the
SSL commands, replayed through the pty with the program's own writes, waits, buffer handling and
parsers against loopback OpenSSL (Python ssl) peers.  (A search of tests/ for "QuectelBG96",
"getRecvPayload2", "ATCommandFlow", "SetGPRSDevice" and "ValidateReg" finds no earlier replay;
test_adversarial_ml302_drivers.py replayed the SAME author's M95.cpp TLS flow on the ML302 --
this file takes the BG96.cpp half, which speaks the EC2x/BG96 SSL command set, and the shared
Transceiver engine.)

Driver (public sources read through the reference store; paraphrased, not copied; the store did
not name the repository): an STM32 HAL gateway firmware by "juanra" (2018): BG96.cpp (store id
20475039757: QuectelBG96::ConnectTLS(), getRecvPayload2(), the urcs[] / recvfmts[] tables),
Transceiver.cpp (id 20241671751: executeCommand(), ATCommandFlow(), Transceiver::TRANSCEIVER(),
SendData(), GetData(), DisConnect()), Transceiver.h (id 20251472546: CmdProps) and utils.c
(id 35496678843: SetGPRSDevice(), SetIdSIM2(), SetIMEI(), ValidateReg(), SetLocalIP2(),
SetDateTime(), SetGeneric()).  What the model keeps:

* Every command ends with a bare CR ("ATE0\\r", "AT+QSSLRECV=1,%d\\r"); "+++" goes out with no
  terminator at all.
* executeCommand(): per try, note Stock() (bytes in the RX ring), sleep `pre` in 100 ms slices,
  transmit, then sleep `recv` in 100 ms slices -- for a step with a match string only until the
  ring holds strlen(match) bytes more than before (any bytes!), for one without, the whole
  window --, then `post`.  ATMATCH: Lookup(match) anywhere in the ring; found or not, the ring
  is Reset() (URCs go with it).  ATGET: the whole ring is taken (a NUL-terminated copy) and
  given to the handler: > 0 is success, -1 one more try (uncounted), 0 the next try.
* ATCommandFlow(): steps in order until the "END" step; the first failing step (no onfail
  labels are used) ends the flow and its index is returned (ConnectTLS returns -i).
* Transceiver::TRANSCEIVER(): "+++" (pre 1000, recv 200, post 1000), AT+QICLOSE=1, ATE0 (3
  tries, match "\\r\\nOK\\r\\n"), AT+GMM with SetGPRSDevice(): strcmp against exactly
  "\\r\\nBG96\\r\\n\\r\\nOK\\r\\n", otherwise (also "Quectel_M95") the M95 class.
* ConnectTLS() as listed in BG96.cpp (every step, its match, windows and tries), with the
  parsers: ValidateReg() sscanf("\\r\\n+%s %d,%d") -> 1 for 0,1 / 0,5, -1 for 0,2;
  SetDateTime() sscanf(reply+2, "+%s \\"%d/%d/%d,%d:%d:%d+%d") must convert 8 fields.
* SendData(sock != 1): "AT+QSSLSEND=1,<len>\\r" matching "\\r\\n> " (3000 ms), then the data
  matching "\\r\\nSEND OK\\r\\n" (3000 ms).
* GetData(count): wait up to 20 x 50 ms for strlen(urc) bytes; if the ring starts with
  "\\r\\n+QSSLURC: \\"recv\\",1\\r\\n" skip it; then "AT+QSSLRECV=1,<count>\\r" as an ATGET with a
  200 ms window and getRecvPayload2(): "\\r\\nOK\\r\\n" -> 0, else sscanf("\\r\\n+QSSLRECV: %d")
  and nbytes from just after the first CR LF found from reply+3, else "UNEXPECTED" -> 0.
* DisConnect(): "+++" (1000/1000/1000), "AT+QICLOSE\\r", "AT+QIDEACT\\r", all ATGET/SetGeneric.

Deviations: the malformed ignorelocaltime step is taken out for the tests that go on to the
open (and the GNSS steps 2-6 for those past the xfail; ATE0 is kept; the two that open leave
out the six informational ATGETs too, each a fixed 1 s window); the read windows under 1000 ms (200, 500 ms) are widened by SLOW = 5 so a loaded
machine does not starve them (a window with a match string still ends as soon as enough bytes
came); the 1000 ms and longer windows and the guard times are kept.

Findings.  BUG: AT+QGPSCFG="gnssconfig",1 answers ERROR (docs/behaviour.md leaves every
AT+QGPSCFG item but "outport" and "nmeasrc" unemulated); a BG96 / EC25 answers OK, and this
firmware's ConnectTLS() is an ATMATCH on that OK with one try and no onfail: the whole TLS
connect dies at step 6, before the bearer or any SSL command.  The driver's own bugs, which a
real module trips the same way (not emulator bugs): SetGPRSDevice() picks the M95 class for
anything but a module that says exactly "BG96" (an EC25 says "EC25"); the step
AT+QSSLCFG="ignorelocaltime"1,1 lacks its comma (ERROR) and, even with the comma, waits for a
"+QSSLCFG: ..." line that a set command never prints, so ConnectTLS() as published can never
reach AT+QSSLOPEN; it configures SSL context 1 (seclevel 1, TLS 1.1, a CA file it never
writes: its AT+QSECWRITE / AT+QSECDEL strings are built and not used) but opens on SSL context 2
("AT+QSSLOPEN=1,2,1,..."), i.e. on the defaults: no verification, any version; GetData()'s
ATGET copies the whole ring into a 128-byte stack buffer (reads are kept at 100 bytes here);
DisConnect() never closes the SSL client (AT+QICLOSE / AT+QIDEACT without a parameter are ERROR).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import Uart

HOST, PORT = "mqtt.juanra.example", 8883
APN = "CMNET"
SLOW = 5
TIMESLICE = 0.1
ATMATCH, ATGET = 1, 2


# =================================================================================================
# The Transceiver engine (Transceiver.cpp) and its reply handlers (utils.c)
# =================================================================================================
@dataclass
class Step:
    type: int
    request: bytes | None
    match: bytes | None = None
    handler: Callable[[bytes], int] | None = None
    recv: int = 1000
    pre: int = 0
    post: int = 0
    nretries: int = 1
    id: str = ""


def END() -> Step:
    return Step(ATMATCH, None, id="END")


class Firmware:
    """executeCommand() / ATCommandFlow() over the pty; `seen` records (request, ring) per try."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.vars: dict[str, str] = {}
        self.seen: list[tuple[bytes, bytes]] = []

    # -- circular.h -------------------------------------------------------------------------------
    def stock(self) -> int:
        with self.uart.cond:
            return len(self.uart.rx)

    def ring(self) -> bytes:
        with self.uart.cond:
            return bytes(self.uart.rx)

    def reset(self) -> None:
        with self.uart.cond:
            self.uart.rx.clear()

    def take_all(self) -> bytes:
        with self.uart.cond:
            out = bytes(self.uart.rx)
            self.uart.rx.clear()
            return out

    def skip(self, n: int) -> None:
        with self.uart.cond:
            del self.uart.rx[:n]

    @staticmethod
    def _slices(ms: int) -> None:
        for _ in range(ms // 100):
            time.sleep(TIMESLICE)

    # -- executeCommand() -------------------------------------------------------------------------
    def execute(self, step: Step) -> int:
        tries = 0
        while tries < step.nretries:
            tries += 1
            initial = self.stock()
            if step.pre:
                self._slices(step.pre)
            self.uart.write(step.request)
            recv = step.recv if step.recv >= 1000 else step.recv * SLOW
            timeout = recv // 100
            while timeout > 0:
                timeout -= 1
                time.sleep(TIMESLICE)
                if step.match and self.stock() >= initial + len(step.match):
                    break
            if step.post:
                self._slices(step.post)
            if step.type == ATMATCH:
                ring = self.ring()
                self.seen.append((step.request, ring))
                self.reset()
                if step.match in ring:
                    return 1
            else:
                if step.match and step.match not in self.ring():
                    continue
                dest = self.take_all()
                self.seen.append((step.request, dest))
                if step.handler is None:
                    return 1
                rc = step.handler(dest)
                if rc > 0:
                    return rc
                if rc == -1:
                    tries -= 1
        return 0

    def flow(self, steps: list[Step]) -> int:
        i = 0
        while steps[i].request is not None:
            if self.execute(steps[i]):
                i += 1
            else:
                break
        return i

    def answer_to(self, request: bytes) -> bytes:
        """The ring as the engine saw it after the last try of `request`."""
        return [ring for req, ring in self.seen if req == request][-1]

    # -- utils.c handlers -------------------------------------------------------------------------
    @staticmethod
    def set_generic(_: bytes) -> int:
        return 1

    def set_gprs_device(self, txt: bytes) -> int:
        self.vars["GPRSDEVICE"] = "BG96" if txt == b"\r\nBG96\r\n\r\nOK\r\n" else "M95"
        return 1

    def set_id_sim2(self, txt: bytes) -> int:
        self.vars["IDSIM"] = txt[10:].split(b"\r")[0].decode()
        return 1

    def set_imei(self, txt: bytes) -> int:
        self.vars["IMEI"] = txt[2:22].split(b"\r")[0].decode()
        return 1

    @staticmethod
    def validate_reg(reply: bytes) -> int:
        m = re.match(rb"\r\n\+(\S+)\s+(\d+),(\d+)", reply)
        if not m:
            return 0
        n, stat = int(m.group(2)), int(m.group(3))
        if n == 0 and stat in (1, 5):
            return 1
        return -1 if n == 0 and stat == 2 else 0

    def set_local_ip2(self, reply: bytes) -> int:
        m = re.match(rb'\+QIACT: 1,1,1,"(\S+)', reply[2:])
        if m:
            self.vars["LOCALIP"] = m.group(1).split(b'"')[0].decode()
        return 1

    def set_date_time(self, reply: bytes) -> int:
        m = re.match(rb'\+(\S+)\s+"(\d+)/(\d+)/(\d+),(\d+):(\d+):(\d+)\+(\d+)', reply[2:])
        if not m:
            return 0
        self.vars["CCLK"] = m.group(0).decode()
        return 1


# =================================================================================================
# The BG96 class (BG96.cpp) and the Transceiver methods it inherits
# =================================================================================================
URC = b'\r\n+QSSLURC: "recv",1\r\n'
RECVFMT = "AT+QSSLRECV=1,%d\r"


def get_recv_payload2(reply: bytes) -> bytes | None:
    """0 bytes for "\\r\\nOK\\r\\n"; sscanf("\\r\\n+QSSLRECV: %d"), then nbytes from just after the
    first CR LF searched from reply+3; None for the "UNEXPECTED" branch."""
    if reply == b"\r\nOK\r\n":
        return b""
    m = re.match(rb"\r\n\+QSSLRECV:\s*(\d+)", reply)
    if not m:
        return None
    start = reply.index(b"\r\n", 3) + 2
    return reply[start:start + int(m.group(1))]


class QuectelBG96(Firmware):
    def factory(self) -> int:
        steps = [
            Step(ATGET, b"+++", handler=self.set_generic, recv=200, pre=1000, post=1000),
            Step(ATGET, b"AT+QICLOSE=1\r", handler=self.set_generic),
            Step(ATMATCH, b"ATE0\r", b"\r\nOK\r\n", nretries=3),
            Step(ATGET, b"AT+GMM\r", handler=self.set_gprs_device),
            END(),
        ]
        return self.flow(steps)

    def tls_flow(self, host: str, port: int, apn: str) -> list[Step]:
        """ConnectTLS()'s TLSFlow, step for step (SYNC_ALL off)."""
        g = self.set_generic
        return [
            Step(ATGET, b"+++", handler=g, recv=200, pre=1000, post=1000),
            Step(ATMATCH, b"ATE0\r", b"\r\nOK\r\n", nretries=3),
            Step(ATGET, b"AT+QICLOSE=1\r", handler=g),
            Step(ATGET, b"AT+QIDEACT=1\r", handler=g),
            Step(ATGET, b"AT+QGPSEND\r", handler=g),
            Step(ATMATCH, b"AT+QGPS=1\r", b"\r\nOK\r\n", recv=500),
            Step(ATMATCH, b'AT+QGPSCFG="gnssconfig",1\r', b"\r\nOK\r\n", recv=500),
            Step(ATMATCH, f"AT+QICSGP=1,1,{apn},1\r".encode(), b"\r\nOK\r\n", recv=500),
            Step(ATGET, b"AT+QCCID\r", handler=self.set_id_sim2),
            Step(ATGET, b"AT+GSN\r", handler=self.set_imei),
            Step(ATGET, b"AT+CREG?\r", handler=self.validate_reg),
            Step(ATGET, b"AT+CGREG?\r", handler=self.validate_reg),
            Step(ATMATCH, b"AT+QIACT=1\r", b"\r\nOK\r\n", recv=2000),
            Step(ATGET, b"AT+QIACT?\r", handler=self.set_local_ip2),
            Step(ATGET, b"AT+CCLK?\r", handler=self.set_date_time),
            Step(ATMATCH, b'AT+QSSLCFG="seclevel",1,1\r', b"\r\nOK\r\n"),
            Step(ATMATCH, b'AT+QSSLCFG="sslversion",1,2\r', b"\r\nOK\r\n"),
            Step(ATMATCH, b'AT+QSSLCFG="ignorelocaltime"1,1\r',
                 b'\r\n+QSSLCFG: "ignorelocaltime",1,1\r\n', id="ignorelocaltime"),
            Step(ATMATCH, b'AT+QSSLCFG="ciphersuite",1,0XFFFF\r', b"\r\nOK\r\n"),
            Step(ATMATCH, b'AT+QSSLCFG="cacert",1,"RAM:ca_cert.pem"\r', b"\r\nOK\r\n"),
            Step(ATMATCH, f'AT+QSSLOPEN=1,2,1,"{host}",{port},0\r'.encode(),
                 b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n", recv=4000, id="open"),
            END(),
        ]

    def connect_tls(self, steps: list[Step]) -> int:
        i = self.flow(steps)
        return 1 if steps[i].id == "END" else -i

    def send_data(self, data: bytes) -> int:
        steps = [
            Step(ATMATCH, f"AT+QSSLSEND=1,{len(data)}\r".encode(), b"\r\n> ", recv=3000),
            Step(ATMATCH, data, b"\r\nSEND OK\r\n", recv=3000),
            END(),
        ]
        return 1 if steps[self.flow(steps)].id == "END" else 0

    def get_data(self, count: int) -> tuple[int, bytes, bool]:
        """(num, bytes, urc_skipped)."""
        if count == 0:
            return 0, b"", False
        timeout = 20
        while self.stock() < len(URC) and timeout > 0:
            timeout -= 1
            time.sleep(0.05)
        skipped = False
        if self.stock() and self.ring().startswith(URC):
            self.skip(len(URC))
            skipped = True
        out: list[bytes] = []

        def handler(reply: bytes) -> int:
            payload = get_recv_payload2(reply)
            out.append(payload if payload is not None else b"")
            return len(out[-1])

        step = Step(ATGET, (RECVFMT % count).encode(), handler=handler, recv=200)
        num = self.execute(step)
        return num, (out[-1][:num] if num else b""), skipped

    def disconnect(self) -> int:
        g = self.set_generic
        steps = [
            Step(ATGET, b"+++", handler=g, recv=1000, pre=1000, post=1000),
            Step(ATGET, b"AT+QICLOSE\r", handler=g),
            Step(ATGET, b"AT+QIDEACT\r", handler=g),
            END(),
        ]
        return 1 if steps[self.flow(steps)].id == "END" else 0


def index_of(steps: list[Step], request_start: bytes) -> int:
    return next(i for i, s in enumerate(steps) if s.request and s.request.startswith(request_start))


# == fixtures =====================================================================================
@pytest.fixture
def fw(driver_port):
    path, _ = driver_port
    uart = Uart(path)
    yield QuectelBG96(uart)
    uart.close()


def _echo_after(delay: float = 0.5) -> TlsServer:
    """Echoes what it gets after a short pause (the URC then lands after SEND OK's Reset())."""
    def handler(conn):
        while True:
            try:
                data = conn.recv(timeout=15)
            except TimeoutError:
                return
            if not data:
                return
            time.sleep(delay)
            conn.sendall(data)
    return TlsServer(handler=handler, ciphers="DEFAULT:@SECLEVEL=0")


# == tests ========================================================================================
def test_factory_plus_plus_plus_in_command_mode_then_ate0_and_gmm_picks_m95_on_an_ec25(fw):
    """(Source: Transceiver.cpp Transceiver::TRANSCEIVER(), utils.c SetGPRSDevice().)
    On a module just up (echo on) the guarded "+++" is no escape -- command state -- and, being
    outside any command line, is only echoed; AT+QICLOSE=1 on nothing open is OK (echoed,
    CR-only line); ATE0 answers its echo then OK (found by Lookup); AT+GMM answers exactly
    "\\r\\nEC25\\r\\n\\r\\nOK\\r\\n", so SetGPRSDevice() -- which knows "BG96" only -- files the module
    as an M95 (the driver's bug: a real EC25 answers the same)."""
    assert fw.factory() == 4
    assert fw.answer_to(b"+++") == b"+++"
    assert fw.answer_to(b"AT+QICLOSE=1\r") == b"AT+QICLOSE=1\r\r\nOK\r\n"
    assert fw.answer_to(b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    assert fw.answer_to(b"AT+GMM\r") == b"\r\nEC25\r\n\r\nOK\r\n"
    assert fw.vars["GPRSDEVICE"] == "M95"
    assert [req for req, _ in fw.seen] == [b"+++", b"AT+QICLOSE=1\r", b"ATE0\r", b"AT+GMM\r"]


@pytest.mark.xfail(strict=True, reason='NOT MODELLED (docs/behaviour.md, GNSS: "the other AT+QGPSCFG items '
                   '(ERROR)"): AT+QGPSCFG="gnssconfig",1 answers ERROR where a BG96/EC25 answers OK; the BG96 '
                   "firmware's ConnectTLS() flow dies at that step")
def test_connect_tls_as_published_runs_to_its_own_malformed_ignorelocaltime_step(fw):
    """(Source: BG96.cpp QuectelBG96::ConnectTLS(), Transceiver.cpp executeCommand().)
    The flow exactly as published, on a module just up.  On a real BG96/EC25 it gets past the
    GNSS steps (AT+QGPSEND: 505 is only an ATGET; AT+QGPS=1 OK; AT+QGPSCFG="gnssconfig",1 OK),
    the bearer, the registration parsers and AT+CCLK?, sets seclevel and sslversion and stops at
    the driver's own malformed AT+QSSLCFG="ignorelocaltime"1,1 (ERROR): ConnectTLS() returns -17.
    The emulator stops it at step 6 instead."""
    steps = fw.tls_flow(HOST, PORT, APN)
    rc = fw.connect_tls(steps)
    assert fw.answer_to(b'AT+QGPSCFG="gnssconfig",1\r') == b"\r\nOK\r\n"
    assert rc == -index_of(steps, b'AT+QSSLCFG="ignorelocaltime"') == -17
    assert fw.answer_to(b'AT+QSSLCFG="ignorelocaltime"1,1\r') == b"\r\nERROR\r\n"


def test_gnss_steps_of_connect_tls_answers(fw):
    """(Source: BG96.cpp ConnectTLS() steps 0-6.)  The exact answers the flow meets up to its GNSS
    steps: "+++" with echo on is echoed and nothing else; ATE0 echoed then OK; AT+QICLOSE=1 and
    AT+QIDEACT=1 OK; AT+QGPSEND with GNSS off "+CME ERROR: 505" (an ATGET: fine); AT+QGPS=1 OK.
    (Step 6, AT+QGPSCFG="gnssconfig",1, is the xfail above.)"""
    steps = fw.tls_flow(HOST, PORT, APN)
    i = fw.flow(steps[:6] + [END()])
    assert i == 6
    assert fw.seen == [
        (b"+++", b"+++"),
        (b"ATE0\r", b"ATE0\r\r\nOK\r\n"),
        (b"AT+QICLOSE=1\r", b"\r\nOK\r\n"),
        (b"AT+QIDEACT=1\r", b"\r\nOK\r\n"),
        (b"AT+QGPSEND\r", b"\r\n+CME ERROR: 505\r\n"),
        (b"AT+QGPS=1\r", b"\r\nOK\r\n"),
    ]


def _bearer_and_tls_steps(fw: QuectelBG96, host: str, port: int) -> list[Step]:
    """ConnectTLS() from step 7 (after the GNSS steps) on, ATE0 first as its step 1 does."""
    steps = fw.tls_flow(host, port, APN)
    return [steps[1]] + steps[7:]


def test_bearer_parsers_and_the_malformed_ignorelocaltime_end_the_flow(fw):
    """(Source: BG96.cpp ConnectTLS() steps 7-17, utils.c ValidateReg(), SetIdSIM2(), SetIMEI(),
    SetLocalIP2(), SetDateTime().)  The bare APN is taken (OK); SetIdSIM2() finds the ICCID 10
    bytes in; SetIMEI() the IMEI 2 bytes in; ValidateReg() reads "+CREG: 0,1" / "+CGREG: 0,1"
    through sscanf("\\r\\n+%s %d,%d") -> registered; SetLocalIP2() the address after
    "+QIACT: 1,1,1,"; SetDateTime() converts all 8 fields of +CCLK (a '+' zone); seclevel 1 and
    sslversion 2 OK; then the step written without its comma is ERROR and ends the flow -- and a
    set command with the comma would only say OK, never the "+QSSLCFG: ..." line the step waits
    for: the driver's bug, a real module's answer too."""
    steps = _bearer_and_tls_steps(fw, HOST, PORT)
    rc = fw.connect_tls(steps)
    assert rc == -index_of(steps, b'AT+QSSLCFG="ignorelocaltime"')
    assert fw.answer_to(b'AT+QSSLCFG="ignorelocaltime"1,1\r') == b"\r\nERROR\r\n"
    assert fw.answer_to(f"AT+QICSGP=1,1,{APN},1\r".encode()) == b"\r\nOK\r\n"
    assert re.fullmatch(r"\d{19,20}", fw.vars["IDSIM"])
    assert re.fullmatch(r"\d{15}", fw.vars["IMEI"])
    assert fw.answer_to(b"AT+CREG?\r") == b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    assert fw.answer_to(b"AT+CGREG?\r") == b"\r\n+CGREG: 0,1\r\n\r\nOK\r\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", fw.vars["LOCALIP"])
    assert fw.vars["CCLK"].startswith('+CCLK: "')
    for line in (b'AT+QSSLCFG="seclevel",1,1\r', b'AT+QSSLCFG="sslversion",1,2\r'):
        assert fw.answer_to(line) == b"\r\nOK\r\n"
    # with the comma: OK, which is not what the step looks for
    step = Step(ATMATCH, b'AT+QSSLCFG="ignorelocaltime",1,1\r',
                b'\r\n+QSSLCFG: "ignorelocaltime",1,1\r\n')
    assert fw.execute(step) == 0
    assert fw.answer_to(step.request) == b"\r\nOK\r\n"


def _without_ignorelocaltime(fw: QuectelBG96, host: str, port: int) -> list[Step]:
    """ATE0, AT+QICSGP, AT+QIACT=1 and the SSL steps, the malformed one taken out; the six
    fixed-window ATGETs (AT+QCCID .. AT+CCLK?, 1 s each, checked above) are left out too."""
    steps = _bearer_and_tls_steps(fw, host, port)
    return [s for s in steps if s.id != "ignorelocaltime" and s.type == ATMATCH
            or s.request is None]


def _connected_without_the_broken_step(fw: QuectelBG96, emulator, server) -> None:
    """ConnectTLS() to `server` with the malformed step taken out: 1, the open matched as
    "\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n" in the ring, TLS 1.2 at the server."""
    emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
    steps = _without_ignorelocaltime(fw, HOST, PORT)
    assert fw.connect_tls(steps) == 1
    assert fw.answer_to(steps[index_of(steps, b"AT+QSSLOPEN=")].request) == \
        b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n"
    assert server.wait_handshake().version == "TLSv1.2"


def test_open_uses_ssl_context_2_so_the_context_1_settings_and_missing_ca_do_not_apply(fw, emulator):
    """(Source: BG96.cpp ConnectTLS(): seclevel / sslversion / ciphersuite / cacert are set on SSL
    context 1, but OPEN_TX is "AT+QSSLOPEN=1,2,1,..." -- <pdpctxID> 1, <sslctxID> 2, <clientID>
    1, whatever its comment says.)  With the broken step taken out, the open therefore runs on
    context 2's defaults: seclevel 0 (the CA file "RAM:ca_cert.pem", never written, is not
    needed), sslversion 4 (TLS 1.2 negotiated, not context 1's TLS 1.1); the open's ATMATCH
    finds "\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n" in the ring and ConnectTLS() returns 1.  The
    driver's bug: a real module reads the same parameters the same way."""
    with TlsServer(mode="echo") as server:
        _connected_without_the_broken_step(fw, emulator, server)
        for query, want in ((b'AT+QSSLCFG="sslversion",1\r', b'+QSSLCFG: "sslversion",1,2'),
                            (b'AT+QSSLCFG="sslversion",2\r', b'+QSSLCFG: "sslversion",2,4'),
                            (b'AT+QSSLCFG="seclevel",1\r', b'+QSSLCFG: "seclevel",1,1'),
                            (b'AT+QSSLCFG="seclevel",2\r', b'+QSSLCFG: "seclevel",2,0')):
            fw.uart.write(query)
            deadline = time.monotonic() + 5
            while not fw.ring().endswith(b"OK\r\n") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fw.take_all() == b"\r\n" + want + b"\r\n\r\nOK\r\n"


def test_open_send_getdata_qsslrecv_parser_and_a_disconnect_that_leaves_ssl_open(fw, emulator):
    """(Source: BG96.cpp ConnectTLS() open, getRecvPayload2(); Transceiver.cpp SendData(),
    GetData(), DisConnect().)  The broken step taken out, the open (on SSL context 2, see above)
    matches "\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n" in the ring.  SendData(): "AT+QSSLSEND=1,<n>\\r" -> "\\r\\n> ", the
    bytes -> "\\r\\nSEND OK\\r\\n".  GetData(100): the echo's URC '+QSSLURC: "recv",1' sits at the
    head of the ring and is skipped; "AT+QSSLRECV=1,100\\r" answers "+QSSLRECV: <n>" and the n
    bytes (CR LF, "OK" and a fake URC inside them untouched); the next GetData() meets
    "+QSSLRECV: 0" -> 0.  DisConnect(): the guarded "+++" is nothing in command state, the
    parameterless AT+QICLOSE / AT+QIDEACT are ERROR, and the SSL client stays connected (the
    driver's bug: it never sends AT+QSSLCLOSE)."""
    payload = b'{"t":1}\r\nOK\r\n+QSSLURC: "closed",1\r\n\x00\xff'
    with _echo_after(0.5) as server:
        _connected_without_the_broken_step(fw, emulator, server)
        assert fw.send_data(payload) == 1
        assert fw.seen[-2] == (f"AT+QSSLSEND=1,{len(payload)}\r".encode(), b"\r\n> ")
        assert fw.seen[-1] == (payload, b"\r\nSEND OK\r\n")
        num, data, skipped = fw.get_data(100)
        assert skipped
        assert (num, data) == (len(payload), payload)
        assert fw.seen[-1] == (b"AT+QSSLRECV=1,100\r", b"\r\n+QSSLRECV: %d\r\n" % len(payload)
                               + payload + b"\r\n\r\nOK\r\n")
        assert fw.get_data(100) == (0, b"", False)
        assert fw.seen[-1] == (b"AT+QSSLRECV=1,100\r", b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n")
        assert fw.disconnect() == 1
        assert fw.seen[-3:] == [(b"+++", b""), (b"AT+QICLOSE\r", b"\r\nERROR\r\n"),
                                (b"AT+QIDEACT\r", b"\r\nERROR\r\n")]
        fw.uart.write(b"AT+QSSLSTATE=1\r")
        time.sleep(0.5)
        state = fw.take_all()
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 1,"SSLClient","%s",%d,\d+,2,1,1,0,"\w+",2\r\n'
                            rb"\r\nOK\r\n" % (HOST.encode(), PORT), state), state


def test_urc_reset_away_with_send_ok_then_150_bytes_in_100_byte_getdata_reads(fw, emulator):
    """(Source: Transceiver.cpp SendData(), GetData(), executeCommand()'s Reset(); BG96.cpp
    getRecvPayload2().)  An echo peer that answers at once: the '+QSSLURC: "recv",1' URC may land
    in the SEND OK step's ring, which that ATMATCH Reset()s away; GetData() then waits its 1 s
    for a URC that never comes ("Other...." when anything else is at the head) and reads
    anyway.  150 bytes come back as 100 (the request's count: +QSSLRECV: 100), then 50, then
    "+QSSLRECV: 0" -> 0; no URC is printed again while unread data remain, so the later reads
    find nothing to skip.  (The C copies each whole reply into a 128-byte stack buffer: the
    100-byte read overflows it -- the driver's bug, not modelled.)"""
    payload = bytes(range(256))[100:250]
    with TlsServer(mode="echo") as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        assert fw.connect_tls(_without_ignorelocaltime(fw, HOST, PORT)) == 1
        server.wait_handshake()
        assert fw.send_data(payload) == 1
        assert fw.seen[-1][0] == payload
        assert fw.seen[-1][1] in (b"\r\nSEND OK\r\n", b"\r\nSEND OK\r\n" + URC)
        first = fw.get_data(100)
        assert first[:2] == (100, payload[:100])
        assert fw.seen[-1][1] == b"\r\n+QSSLRECV: 100\r\n" + payload[:100] + b"\r\n\r\nOK\r\n"
        assert fw.get_data(100) == (50, payload[100:], False)
        assert fw.seen[-1][1] == b"\r\n+QSSLRECV: 50\r\n" + payload[100:] + b"\r\n\r\nOK\r\n"
        assert fw.get_data(100) == (0, b"", False)
        assert fw.seen[-1][1] == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
