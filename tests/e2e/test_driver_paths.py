"""An EC2x host driver's whole life against the pty (issue 14's "done when"): start-up,
registration, PDP, DNS, ping, NTP, then TLS (certificate checked against the NTP time), TCP
and UDP, each against a loopback peer.

The host here is written the way independent drivers are (not with the test Host's
helpers): pyserial, CR LF line ends, a line reader that files URCs apart from the answer it
waits for, the next command sent as soon as the final result came (never waiting for URCs
first), and odd-sized reads.  Every answer is checked byte for byte against the formats in
docs/behaviour.md.
"""
from __future__ import annotations

import hashlib
import os
import re
import time

import serial

from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer, utc
from emulator.testing.peers.sntp import SntpServer

FINAL = {b"OK", b"ERROR", b"SEND OK", b"SEND FAIL", b"CONNECT", b"NO CARRIER"}
URC_PREFIXES = (b"+QIURC:", b"+QIOPEN:", b"+QSSLOPEN:", b"+QSSLURC:", b"+QPING:", b"+QNTP:",
                b"+CREG:", b"+CGREG:", b"+CEREG:", b"RDY", b"+CFUN:", b"+CPIN:", b"+QUSIM:", b"+QIND:")
NTP_DATE = utc(2019, 6, 1, 12, 0, 0)


class Driver:
    """A minimal line-oriented modem driver, as firmware teams write them."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0.01)
        self.buf = b""
        self.urcs: list[bytes] = []
        self.sizes = iter([7, 1, 64, 3, 1500, 13] * 10_000)      # odd-sized reads

    def _line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            assert time.monotonic() < deadline, f"no line; have {self.buf!r}, URCs {self.urcs!r}"
            self.buf += self.ser.read(next(self.sizes))
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, line: str, timeout: float = 10) -> list[bytes]:
        """Send a command; return the information lines of its answer (final result OK),
        URCs that arrive meanwhile filed in self.urcs."""
        self.ser.write(line.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        info: list[bytes] = []
        while True:
            got = self._line(deadline)
            if got in FINAL or got.startswith(b"+CME ERROR"):
                assert got == b"OK", (line, got, info)
                return info
            if got.startswith(URC_PREFIXES) and not got.startswith(_answer_prefix(line)):
                self.urcs.append(got)
            elif got:
                info.append(got)

    def urc(self, prefix: bytes, timeout: float = 10) -> bytes:
        """The next URC starting with prefix (already filed or still to come)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, got in enumerate(self.urcs):
                if got.startswith(prefix):
                    return self.urcs.pop(i)
            got = self._line(deadline)
            if got:
                self.urcs.append(got)

    def data(self, line: str, payload: bytes, timeout: float = 10) -> None:
        """AT+QISEND / AT+QSSLSEND with a fixed length: wait for "> ", send, SEND OK."""
        self.ser.write(line.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while b"> " not in self.buf:
            assert time.monotonic() < deadline, self.buf
            self.buf += self.ser.read(next(self.sizes))
        self.buf = self.buf.split(b"> ", 1)[1]
        self.ser.write(payload)
        while True:
            got = self._line(deadline)
            if got in FINAL:
                assert got == b"SEND OK", got
                return
            if got:
                self.urcs.append(got)

    def read(self, line: str, head: re.Pattern, timeout: float = 10) -> bytes:
        """AT+QIRD / AT+QSSLRECV: the header line, exactly <n> bytes of data, OK."""
        self.ser.write(line.encode() + b"\r\n")
        deadline = time.monotonic() + timeout
        while True:
            got = self._line(deadline)
            match = head.match(got)
            if match:
                break
            if got:
                self.urcs.append(got)
        n = int(match.group(1))
        if n == 0:                                   # "+QIRD: 0" CR LF CR LF "OK"
            assert self._line(deadline) == b"" and self._line(deadline) == b"OK"
            return b""
        while len(self.buf) < n:
            assert time.monotonic() < deadline
            self.buf += self.ser.read(next(self.sizes))
        data, self.buf = self.buf[:n], self.buf[n:]
        assert self._line(deadline) == b"" and self._line(deadline) == b"" and self._line(deadline) == b"OK"
        return data


def _answer_prefix(line: str) -> bytes:
    """"AT+CREG?" answers "+CREG: ..." itself: that is not a URC (a read form's lines are
    its answer; "+QIOPEN: ..." after AT+QIOPEN=... is a URC)."""
    m = re.match(r"AT(\+[A-Z]+)\?$", line.upper())
    return (m.group(1) + ":").encode() if m else b"\x00"


def test_an_ec2x_driver_runs_its_startup_dns_ping_ntp_ssl_tcp_and_udp_paths(emulator, open_modem, pki):
    router = emulator.router
    tls_cert = pki.issue_window("driver-2019", utc(2019, 1, 1), utc(2020, 1, 1))
    with TlsServer(tls_cert, mode="echo") as tls, TcpServer("echo") as tcp, UdpEchoServer() as udp, \
            SntpServer(NTP_DATE) as ntp:
        router.add_map("www.iottest.work", 443, "127.0.0.1", tls.address[1])
        router.add_map("tcp.iottest.work", 7000, "127.0.0.1", tcp.port)
        router.add_map("udp.iottest.work", 7001, "127.0.0.1", udp.port)
        router.add_map("pool.ntp.org", 123, "127.0.0.1", ntp.port)
        router.add_dns("www.iottest.work", "106.12.79.254")
        router.add_ping("www.iottest.work", 35)
        host, _ = open_modem("ec2x", echo=True)
        host.close()                                 # the driver opens the port itself
        d = Driver(host.path)

        # -- start-up, as drivers probe a module ---------------------------------------
        assert d.cmd("ATE0") in ([b"ATE0\r"], [b"ATE0"], [])
        assert d.cmd("AT+CMEE=2") == []
        assert d.cmd("ATI") == [b"Quectel", b"EC25", b"Revision: EC25EFAR06A06M4G"]
        assert d.cmd("AT+CPIN?") == [b"+CPIN: READY"]
        assert d.cmd("AT+CSQ") == [b"+CSQ: 24,99"]
        assert d.cmd("AT+CEREG=2") == []
        assert d.cmd("AT+CREG?") == [b"+CREG: 0,1"]
        assert d.cmd("AT+CGREG?") == [b"+CGREG: 0,1"]
        assert re.fullmatch(rb'\+CEREG: 2,1,"[0-9A-F]+","[0-9A-F]+",7', d.cmd("AT+CEREG?")[0])
        assert d.cmd("AT+COPS?") == [b'+COPS: 0,0,"CHN-UNICOM",7']
        assert d.cmd("AT+CGATT?") == [b"+CGATT: 1"]

        # -- PDP -----------------------------------------------------------------------------
        assert d.cmd('AT+QICSGP=1,1,"UNINET","","",1') == []
        assert d.cmd("AT+QIACT=1") == []
        assert d.cmd("AT+QIACT?") == [b'+QIACT: 1,1,1,"10.7.157.1"']
        assert d.cmd("AT+CGPADDR=1") == [b'+CGPADDR: 1,"10.7.157.1"']
        assert d.cmd("AT+CGACT?")[0] == b"+CGACT: 1,1"

        # -- DNS and ping, the next command sent before the URCs come ---------------------
        assert d.cmd('AT+QIDNSGIP=1,"www.iottest.work"') == []
        assert d.cmd('AT+QPING=1,"www.iottest.work",4,2') == []
        assert d.urc(b'+QIURC: "dnsgip",0') == b'+QIURC: "dnsgip",0,1,600'
        assert d.urc(b'+QIURC: "dnsgip","') == b'+QIURC: "dnsgip","106.12.79.254"'
        replies = [d.urc(b"+QPING: 0,\"") for _ in range(2)]
        for reply in replies:
            assert re.fullmatch(rb'\+QPING: 0,"106\.12\.79\.254",32,\d+,255', reply), reply
            assert int(reply.rsplit(b",", 2)[1]) >= 35
        assert re.fullmatch(rb"\+QPING: 0,2,2,0,\d+,\d+,\d+", d.urc(b"+QPING: 0,2,"))

        # -- NTP sets the clock the certificate check uses ---------------------------------
        assert d.cmd('AT+QNTP=1,"pool.ntp.org"') == []
        assert d.urc(b"+QNTP:").startswith(b'+QNTP: 0,"2019/06/01,')
        assert d.cmd("AT+CCLK?")[0].startswith(b'+CCLK: "19/06/01,')

        # -- TLS with the certificate checked at the NTP date -------------------------------
        ca = pki.ca.cert_pem
        d.ser.write(f'AT+QFUPL="UFS:ca.pem",{len(ca)},10\r\n'.encode())
        while b"CONNECT\r\n" not in d.buf:
            d.buf += d.ser.read(64)
        d.buf = b""
        d.ser.write(ca)
        assert d._line(time.monotonic() + 10) == b""
        assert d._line(time.monotonic() + 10).startswith(b"+QFUPL: %d," % len(ca))
        assert d._line(time.monotonic() + 10) == b""
        assert d._line(time.monotonic() + 10) == b"OK"
        for option in ('"seclevel",1,1', '"cacert",1,"UFS:ca.pem"', '"ignorelocaltime",1,0',
                       '"sslversion",1,3', '"ciphersuite",1,0XFFFF'):
            assert d.cmd(f"AT+QSSLCFG={option}") == []
        assert d.cmd('AT+QSSLOPEN=1,1,4,"www.iottest.work",443,0') == []
        assert d.urc(b"+QSSLOPEN: 4,") == b"+QSSLOPEN: 4,0"
        tls_payload = os.urandom(1000)
        d.data("AT+QSSLSEND=4,1000", tls_payload)
        assert d.urc(b'+QSSLURC: "recv",4') == b'+QSSLURC: "recv",4'
        got = b""
        while len(got) < len(tls_payload):
            got += d.read("AT+QSSLRECV=4,1500", re.compile(rb"\+QSSLRECV: (\d+)$"))
        assert got == tls_payload

        # -- TCP and UDP beside the TLS socket (one id pool) -------------------------------
        assert d.cmd('AT+QIOPEN=1,4,"TCP","tcp.iottest.work",7000,0,0') == []
        assert d.urc(b"+QIOPEN: 4,") == b"+QIOPEN: 4,563"             # id 4 is the TLS socket's
        assert d.cmd('AT+QIOPEN=1,0,"TCP","tcp.iottest.work",7000,0,0') == []
        assert d.cmd('AT+QIOPEN=1,1,"UDP","udp.iottest.work",7001,0,0') == []
        assert sorted([d.urc(b"+QIOPEN: 0,"), d.urc(b"+QIOPEN: 1,")]) == [b"+QIOPEN: 0,0", b"+QIOPEN: 1,0"]
        tcp_payload = os.urandom(60_000)
        sent, received = hashlib.sha256(tcp_payload), hashlib.sha256()
        total = 0
        for i in range(0, len(tcp_payload), 1460):
            d.data(f"AT+QISEND=0,{len(tcp_payload[i:i + 1460])}", tcp_payload[i:i + 1460])
            while True:
                chunk = d.read("AT+QIRD=0,1500", re.compile(rb"\+QIRD: (\d+)$"))
                if not chunk:
                    break
                received.update(chunk)
                total += len(chunk)
        deadline = time.monotonic() + 10
        while total < len(tcp_payload):
            assert time.monotonic() < deadline
            chunk = d.read("AT+QIRD=0,1500", re.compile(rb"\+QIRD: (\d+)$"))
            received.update(chunk)
            total += len(chunk)
        assert received.hexdigest() == sent.hexdigest()
        assert d.cmd("AT+QISEND=0,0") == [b"+QISEND: %d,%d,0" % (len(tcp_payload), len(tcp_payload))]

        datagrams = [os.urandom(n) for n in (1, 512, 1460)]
        for dgram in datagrams:
            d.data(f"AT+QISEND=1,{len(dgram)}", dgram)
        echoed = []
        deadline = time.monotonic() + 10
        while len(echoed) < len(datagrams):
            assert time.monotonic() < deadline
            chunk = d.read("AT+QIRD=1,1500", re.compile(rb"\+QIRD: (\d+)$"))
            if chunk:
                echoed.append(chunk)
        assert echoed == datagrams                                      # boundaries kept

        states = d.cmd("AT+QISTATE?")
        assert states[0].startswith(b'+QISTATE: 0,"TCP","')
        assert states[1].startswith(b'+QISTATE: 1,"UDP","')
        for cid in (0, 1):
            assert d.cmd(f"AT+QICLOSE={cid}") == []
        assert d.cmd("AT+QSSLCLOSE=4") == []
        assert d.cmd("AT+QIGETERROR") == [b"+QIGETERROR: 0,operate successfully"]

        # -- detach: nothing left open ------------------------------------------------------
        assert d.cmd("AT+CGATT=0") == []
        assert d.cmd("AT+QIACT?") == []
        assert d.cmd("AT+QISTATE?") == [] and d.cmd("AT+QSSLSTATE") == []
        d.ser.close()
