"""Adversarial tests: a thirty-second set of public host code pointed at the pty -- the first
Quectel OpenCPU ("QuecOpen") programs replayed here: applications that run on a Quectel GSM
module's own processor and drive its "GSM SSL" command set through the OpenCPU RIL
(Ql_RIL_SendATCmd), the command set the China Mobile OneMO ML302 copies (AT+QSSLCFG="<opt>",
<ctxindex>,<value> / AT+QSECWRITE / AT+QSECDEL / AT+QSECREAD / AT+QSSLOPEN=<ssid>,<ctxindex>,
"<host>",<port>,<connectmode> / AT+QSSLSEND / AT+QSSLRECV=<cid>,<ssid>,<len> / AT+QSSLSTATE /
AT+QSSLCLOSE, +QSSLURC).  Both are replayed against the ml302 profile, with real TLS to loopback
OpenSSL (Python ssl) servers; every host name is routed to 127.0.0.1.  (A search of tests/ for
"OpenCPU", "Ql_RIL", "RIL_SSL", "NVRAM:CA0", "SecureSocket" and "azure-devices-provisioning"
finds no earlier replay; test_adversarial_ml302_drivers.py replayed an STM32 M95 transport, and
test_packet_domain.py only quotes a UC15 session from an OpenCPU test program.)

Programs replayed (public sources read through the reference store; paraphrased, not copied;
the store did not name their repositories):
- Quectel's OpenCPU HTTPS/SSL example for the M66 (store id 28925629999, "#ifdef
  __TEST_HTTPS_OCPU__3", Quectel copyright header 2013, its own RIL_SSL_* functions):
  a 2000 ms timer state machine (SIM, network, GPRS context, APN + PDP, certificate delete,
  certificate write, SSL configuration, open, send -- repeated every tick while it returns
  >= 0 --, close, PDP close); ctxindex 0, sslversion 4, ciphersuite "0xFFFF", seclevel 2,
  ssid 0, mode 0 (buffer), HOST_NAME "https://freeiotcloud.in/hello.htm" (a URL where the
  open wants a host name), port 443; send data "123456"; on the RIL's URC_SSL_RECV_IND,
  RIL_SSL_QSSLRECV(ssid) with a 1024-byte buffer.  Commands (each ends "\\n"):
  AT+QSECDEL="NVRAM:CA0" / "NVRAM:CC0" / "NVRAM:CK0"; AT+QSECWRITE="NVRAM:CA0",<len>,100
  (data after "CONNECT" and a 1000 ms sleep); AT+QSSLCFG="ignorertctime",1, "sslversion",0,4,
  "ciphersuite",0,"0xFFFF", "seclevel",0,2, "cacert",0,"NVRAM:CA0", "clientcert",0,
  "NVRAM:CC0", "clientkey",0,"NVRAM:CK0" (no callback: the RIL's default OK/ERROR);
  AT+QSSLOPEN=0,0,"<host>",443,0; AT+QSSLSEND=0,<strlen> (the M66's fixed-length form);
  AT+QSSLRECV=<ctxindex>,<ssid>,1024; AT+QSSLCLOSE=0.  Handlers, as written: DEL/WRITE --
  "CONNECT" writes the certificate, "OK" success, "ERROR" failure with errCode RIL_AT_FAILED,
  "+CME ERROR:" sscanf'd (unreachable: "ERROR" is tested first); open -- a "+QSSLOPEN:" line
  gives atoi of the text from 4 past the ':' to the next CR LF (success either way), "OK"
  continues, "ERROR" fails; the function returns an error unless that number is 0; send --
  "\\r\\n>" writes strlen(data) bytes, "ERROR" fails, "SEND OK" succeeds; recv -- "\\r\\n+QSSLRECV:"
  continues, "ERROR" fails, "OK" succeeds, any other line is memcpy'd to the START of the
  buffer (each line over the last); close -- "CLOSE OK" succeeds, "ERROR:" fails, and so does
  ANY other line.
- An Azure IoT (DPS + IoT Hub) gateway's SecureSocket.c / SecureSocket.h for the same OpenCPU
  M66 (store ids 9028391315 and 8895420154, "Author: SAI", 2017-04-22): RIL_SSL_QSSLCFG() --
  AT+QSSLCFG="cacert",0,"NVRAM:CA0", "clientcert",0,"NVRAM:CC0", "clientkey",0,"NVRAM:CK0",
  "certchain",1, "ignorertctime",1, "sslversion",0,4, "seclevel",0,2, each only while the
  previous returned RIL_AT_SUCCESS, FLAG.SSL_CONFIGURED set only at the end;
  SSL_Check_SOC_State() -- AT+QSSLSTATE, a line with "\\r\\n+QSSLSTATE: <ssid>" mapped by the first
  of INITIAL / CONNECTING / CONNECTED / REMOTE CLOSING / CLOSING / CLOSED it holds
  (Enum_SSL_SOC_STATE 0..5), "ERROR" fails, "OK" succeeds; RIL_SSL_QSSLRECV((cid<<8)|ssid) --
  AT+QSSLRECV=<cid>,<ssid>,1460: lines with "HTTP" are counted, not stored (the comment: the
  status line holds "OK"), "Date:", "Content-Type:", "Transfer-Encoding:", "x-ms-request-id:",
  "Strict-Transport-Security:" lines skipped, a line with "OK" ends the read keeping all but its
  last 6 bytes ("<CR><LF>OK<CR><LF>"), any other line is appended to g_buf_recvd_data;
  SSL_Send_Data() -- the state check, then AT+QSSLSEND=<ssid>,<len> in 1460-byte pieces.
  CONNECT_MODE_TRANSPERENT is 0 (buffer mode, despite its name).

What the model of the OpenCPU RIL keeps (its core is Quectel's closed library; the examples'
own strings are the evidence):
* The application's command strings end in "\\n"; the RIL core gives the AT engine a whole
  command line.  Over the emulator's UART a line ends at S3, so the replay writes the
  application's bytes up to its "\\n" and then S3 (CR) -- except in the first test, which
  writes them exactly: an LF-ended line runs nothing on a UART until S3 is 10.
* The callback gets each response line as the core framed it, "\\r\\n<text>\\r\\n" (the
  examples match "\\r\\n>", "\\r\\n+QSSLRECV:", "\\r\\n+QSSLSTATE:" and look for the "\\r\\n" after
  "+QSSLOPEN:"); the data prompt comes as "\\r\\n> "; a callback's RIL_ATRSP_SUCCESS /
  RIL_ATRSP_FAILED ends the command (RIL_AT_SUCCESS 0 / RIL_AT_FAILED -1); lines after that
  are the RIL's URC traffic; a NULL callback succeeds at "OK" and fails at "ERROR".
* Echo is off (ATE0), as in a RIL-driven core.
* The timer period (2000 ms) is not waited for: ticks follow each other at once; RIL
  timeouts are shortened to 10 s (the examples pass 0, the RIL's default).
* The example's SIM / network / GPRS steps (RIL_NW_* in the SDK's ril_network.c, M66
  commands not in the store) are replaced by the ML302's bearer, AT+CGACT=1,1.

What happens on the ML302 is what its manual says (§2.2: AT+QSECWRITE=<crtflag> with a "> "
prompt; §2.6: OK, then "<ssid>,CLOSE OK"; §2.7: AT+QSSLSEND=<ssid> only, data ended by Ctrl+Z),
so the OpenCPU programs' failures on it are plain tests: a real ML302 answers the same."""
from __future__ import annotations

import os
import select
import time
import tty

import pytest

from emulator.testing.peers import default_pki
from tests.e2e.ml302_support import HOST, HOST_IP, routed_servers

RIL_AT_SUCCESS, RIL_AT_FAILED, RIL_AT_TIMEOUT = 0, -1, -2
RIL_ATRSP_FAILED, RIL_ATRSP_SUCCESS, RIL_ATRSP_CONTINUE = -1, 0, 1
OPENFAIL = "QL_RET_ERR_RIL_FTP_OPENFAIL"        # what the example's open returns on a code != 0
# Enum_SSL_SOC_STATE (SecureSocket.h)
SOC_INITIAL, SOC_CONNECTING, SOC_CONNECTED, SOC_REMOTECLOSING, SOC_CLOSING, SOC_CLOSED = range(6)
DPS_HOST = "global.azure-devices-provisioning.net"
URL_HOST = "https://freeiotcloud.in/hello.htm"   # the example's HOST_NAME
CTXINDEX, SSID = 0, 0


# == the OpenCPU RIL, as this file models it (see the docstring) ===================================
class Ril:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.rx = bytearray()
        self.sent: list[bytes] = []          # every command line as the application built it
        self.urcs: list[bytes] = []          # lines that reached no callback

    def close(self) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1)
                continue
            view = view[n:]

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if ready:
            try:
                self.rx += os.read(self.fd, 4096)
            except (BlockingIOError, OSError):
                pass

    def _next_line(self) -> bytes | None:
        """One framed line from rx, or None when none is complete yet."""
        lead = 0
        while self.rx[lead:lead + 2] == b"\r\n":
            lead += 2
        if lead and self.rx[lead:lead + 2] == b"> ":
            del self.rx[:lead + 2]
            return b"\r\n> "
        end = self.rx.find(b"\r\n", lead)
        if end < 0:
            return None
        text = bytes(self.rx[lead:end])
        del self.rx[:end + 2]
        return b"\r\n" + text + b"\r\n" if text else None

    def line(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            got = self._next_line()
            if got is not None:
                return got
            if time.monotonic() > deadline:
                return None
            self.pump(min(0.05, deadline - time.monotonic()))

    def settle(self, seconds: float = 0.3) -> list[bytes]:
        """Let whatever is on its way arrive; complete lines go to the URC list."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump(deadline - time.monotonic())
        while (got := self._next_line()) is not None:
            self.urcs.append(got)
        return self.urcs

    def send_at(self, cmd: str, callback=None, userdata=None, timeout: float = 10) -> int:
        """Ql_RIL_SendATCmd(cmd, len, callback, userdata, 0)."""
        assert cmd.endswith("\n")
        self.settle(0)
        raw = cmd.encode("latin-1")
        self.sent.append(raw)
        self.write(raw[:-1] + b"\r")
        deadline = time.monotonic() + timeout
        while True:
            got = self.line(deadline - time.monotonic())
            if got is None:
                return RIL_AT_TIMEOUT
            if callback is None:
                verdict = (RIL_ATRSP_SUCCESS if b"OK" in got else
                           RIL_ATRSP_FAILED if b"ERROR" in got else RIL_ATRSP_CONTINUE)
            else:
                verdict = callback(got, userdata)
            if verdict == RIL_ATRSP_SUCCESS:
                return RIL_AT_SUCCESS
            if verdict == RIL_ATRSP_FAILED:
                return RIL_AT_FAILED

    def write_data_to_core(self, data: bytes) -> None:
        """Ql_RIL_WriteDataToCore()."""
        self.write(data)

    def recv_urc_ssid(self, timeout: float = 10) -> int:
        """The RIL's URC_SSL_RECV_IND: msg.param2 = the ssid of '+QSSLURC: "recv",<cid>,<ssid>'."""
        deadline = time.monotonic() + timeout
        while True:
            for i, urc in enumerate(self.urcs):
                if urc.startswith(b'\r\n+QSSLURC: "recv",'):
                    del self.urcs[i]
                    return int(urc.strip().rsplit(b",", 1)[1])
            assert time.monotonic() < deadline, f"no recv URC: {self.urcs!r} {bytes(self.rx)!r}"
            self.settle(0.05)


# == Quectel's OpenCPU HTTPS example (store id 28925629999) =======================================
class OcpuHttpsExample:
    """The example's RIL_SSL_* functions and ATResponse_SSL_handler_* callbacks."""

    def __init__(self, ril: Ril, cert: bytes) -> None:
        self.ril = ril
        self.write_flag = 0
        self.cert = cert                        # (the example's own PEM texts, not copied)
        self.recv_data = bytearray(1024)

    # -- callbacks -------------------------------------------------------------------------
    @staticmethod
    def h_cert_del(line: bytes, err: list) -> int:
        if b"OK" in line:
            return RIL_ATRSP_SUCCESS
        if b"ERROR" in line:
            err[0] = RIL_AT_FAILED
            return RIL_ATRSP_FAILED
        if b"+CME ERROR:" in line:              # (never reached: "ERROR" matched above)
            err[0] = int(line.split(b":")[1])
            return RIL_ATRSP_FAILED
        return RIL_ATRSP_CONTINUE

    def h_cert_write(self, line: bytes, err: list) -> int:
        if b"CONNECT" in line:
            time.sleep(1.0)                     # Ql_Sleep(1000); "Do not move"
            self.ril.write_data_to_core(self.cert)
            return RIL_ATRSP_CONTINUE
        return self.h_cert_del(line, err)

    @staticmethod
    def h_open(line: bytes, param: dict) -> int:
        head = line.find(param["prefix"])
        if head >= 0:
            p1 = line.find(b":", head)
            p2 = line.find(b"\r\n", p1 + 1)
            if p1 >= 0 and p2 >= 0:
                param["data"] = c_atoi(line[p1 + 4:p2])
            return RIL_ATRSP_SUCCESS
        if b"OK" in line:
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            return RIL_ATRSP_FAILED
        return RIL_ATRSP_CONTINUE

    def h_send(self, line: bytes, data: bytes) -> int:
        if b"\r\n>" in line:
            self.ril.write_data_to_core(data)
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            return RIL_ATRSP_FAILED
        if b"SEND OK" in line:
            return RIL_ATRSP_SUCCESS
        return RIL_ATRSP_CONTINUE

    @staticmethod
    def h_recv(line: bytes, buf: bytearray) -> int:
        if b"\r\n+QSSLRECV:" in line:
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            return RIL_ATRSP_FAILED
        if b"OK" in line:
            return RIL_ATRSP_SUCCESS
        buf[:len(line)] = line                  # Ql_memcpy(userdata, line, len)
        return RIL_ATRSP_CONTINUE

    @staticmethod
    def h_close(line: bytes, _) -> int:
        if b"CLOSE OK" in line:
            return RIL_ATRSP_SUCCESS
        return RIL_ATRSP_FAILED                 # "ERROR:" and everything else alike

    # -- RIL_SSL_* ---------------------------------------------------------------------------
    def certificate_del(self) -> int:
        for name in ("CA0", "CC0", "CK0"):
            err = [RIL_AT_FAILED]
            ret = self.ril.send_at(f'AT+QSECDEL="NVRAM:{name}"\n', self.h_cert_del, err)
            if ret != RIL_AT_SUCCESS:
                return ret if err[0] == RIL_AT_FAILED else err[0]
        return RIL_AT_SUCCESS

    def certificate_write(self, timeout: int = 100) -> int:
        for flag, name in ((1, "CA0"), (2, "CC0"), (3, "CK0")):
            self.write_flag = flag
            err = [RIL_AT_FAILED]
            ret = self.ril.send_at(f'AT+QSECWRITE="NVRAM:{name}",{len(self.cert)},{timeout}\n',
                                   self.h_cert_write, err)
            if ret != RIL_AT_SUCCESS:
                return ret if err[0] == RIL_AT_FAILED else err[0]
        return RIL_AT_SUCCESS

    def cfg(self, ctxindex: int = CTXINDEX, ssl_version: int = 4, cipher_suite: str = "0xFFFF",
            sec_level: int = 2) -> int:
        for cmd in ('AT+QSSLCFG="ignorertctime",1\n',
                    f'AT+QSSLCFG="sslversion",{ctxindex},{ssl_version}\n',
                    f'AT+QSSLCFG="ciphersuite",{ctxindex},"{cipher_suite}"\n',
                    f'AT+QSSLCFG="seclevel",{ctxindex},{sec_level}\n',
                    f'AT+QSSLCFG="cacert",{ctxindex},"NVRAM:CA0"\n',
                    f'AT+QSSLCFG="clientcert",{ctxindex},"NVRAM:CC0"\n',
                    f'AT+QSSLCFG="clientkey",{ctxindex},"NVRAM:CK0"\n'):
            ret = self.ril.send_at(cmd)
            if ret != RIL_AT_SUCCESS:
                return ret
        return RIL_AT_SUCCESS

    def open(self, host: str, port: int = 443, ssid: int = SSID, ctxindex: int = CTXINDEX,
             mode: int = 0):
        param = {"prefix": b"+QSSLOPEN:", "data": 255}
        ret = self.ril.send_at(f'AT+QSSLOPEN={ssid},{ctxindex},"{host}",{port},{mode}\n',
                               self.h_open, param)
        if ret != RIL_AT_SUCCESS:
            return ret, param["data"]
        return (OPENFAIL if param["data"] != 0 else ret), param["data"]

    def send(self, ssid: int, data: bytes) -> int:
        return self.ril.send_at(f"AT+QSSLSEND={ssid},{len(data)}\n", self.h_send, data)

    def recv(self, ssid: int) -> int:
        self.recv_data[:] = bytes(1024)
        return self.ril.send_at(f"AT+QSSLRECV={CTXINDEX},{ssid},1024\n", self.h_recv, self.recv_data)

    def close(self, ssid: int) -> int:
        return self.ril.send_at(f"AT+QSSLCLOSE={ssid}\n", self.h_close)

    def run(self, host: str, send_data: bytes = b"123456", max_ticks: int = 12) -> list[str]:
        """Callback_Timer's states from STATE_SSL_CERTIFICATE_DEL (after the bearer) on, one
        tick after another; the states it went through."""
        state, trail = "CERTIFICATE_DEL", []
        for _ in range(max_ticks):
            trail.append(state)
            if state == "CERTIFICATE_DEL":
                self.certificate_del()
                state = "CERTIFICATE_WRITE"            # (written "either way")
            elif state == "CERTIFICATE_WRITE":
                state = "SSL_CFG" if self.certificate_write(100) == 0 else "TOTAL_NUM"
            elif state == "SSL_CFG":
                state = "SSL_OPEN" if self.cfg() == 0 else "TOTAL_NUM"
            elif state == "SSL_OPEN":
                state = "SSL_SEND" if self.open(host)[0] == 0 else "GPRS_DEACTIVATE"
            elif state == "SSL_SEND":
                if self.send(SSID, send_data) < 0:
                    state = "TOTAL_NUM"
            else:
                break                                   # TOTAL_NUM / GPRS_DEACTIVATE: done here
        return trail


def c_atoi(text: bytes) -> int:
    """C atoi(): leading spaces, a sign, digits; 0 when none."""
    s = text.lstrip(b" \t")
    sign = -1 if s[:1] == b"-" else 1
    s = s[1:] if s[:1] in (b"-", b"+") else s
    n = 0
    for ch in s:
        if not 48 <= ch <= 57:
            break
        n = n * 10 + ch - 48
    return sign * n


# == The Azure gateway's SecureSocket.c (store ids 9028391315, 8895420154) =========================
class AzureSecureSocket:
    def __init__(self, ril: Ril) -> None:
        self.ril = ril
        self.ssl_configured = False
        self.g_buf = bytearray()                 # g_buf_recvd_data / g_recvd_data_len

    def cfg(self, cid: int = 0) -> int:
        ret = RIL_AT_SUCCESS
        for cmd in (f'AT+QSSLCFG="cacert",{cid},"NVRAM:CA0"\n',
                    f'AT+QSSLCFG="clientcert",{cid},"NVRAM:CC0"\n',
                    f'AT+QSSLCFG="clientkey",{cid},"NVRAM:CK0"\n',
                    'AT+QSSLCFG="certchain",1\n',
                    'AT+QSSLCFG="ignorertctime",1\n',
                    f'AT+QSSLCFG="sslversion",{cid},4\n',
                    f'AT+QSSLCFG="seclevel",{cid},2\n'):
            if ret != RIL_AT_SUCCESS:
                break
            ret = self.ril.send_at(cmd)
        if ret == RIL_AT_SUCCESS:
            self.ssl_configured = True
        return ret

    @staticmethod
    def h_state(line: bytes, param: dict) -> int:
        if b"\r\n+QSSLSTATE:" in line:
            if f"\r\n+QSSLSTATE: {param['ssid']}".encode() in line:
                for word, state in ((b"INITIAL", SOC_INITIAL), (b"CONNECTING", SOC_CONNECTING),
                                    (b"CONNECTED", SOC_CONNECTED),
                                    (b"REMOTE CLOSING", SOC_REMOTECLOSING),
                                    (b"CLOSING", SOC_CLOSING), (b"CLOSED", SOC_CLOSED)):
                    if word in line:
                        param["state"] = state
                        break
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            return RIL_ATRSP_FAILED
        if b"OK" in line:
            return RIL_ATRSP_SUCCESS
        return RIL_ATRSP_CONTINUE

    def check_soc_state(self, ssid: int) -> int:
        param = {"ssid": ssid, "state": None}      # (sslSocState: uninitialised on the stack)
        ret = self.ril.send_at("AT+QSSLSTATE\n", self.h_state, param)
        return param["state"] if ret == 0 else ret

    def h_recv(self, line: bytes, param: dict) -> int:
        if b"\r\n+QSSLRECV:" in line:
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            param["err_state"] = True
            return RIL_ATRSP_FAILED
        if b"HTTP" in line:
            param["length"] += len(line)
            return RIL_ATRSP_CONTINUE
        for skip in (b"Date:", b"Content-Type:", b"Transfer-Encoding:", b"x-ms-request-id:",
                     b"Strict-Transport-Security:"):
            if skip in line:
                return RIL_ATRSP_CONTINUE
        if b"OK" in line:
            if len(line) < 6:
                param["length"] += 6 - len(line)
                del self.g_buf[len(self.g_buf) - (6 - len(line)):]
            else:
                param["length"] += len(line) - 6
                self.g_buf += line[:len(line) - 6]
            return RIL_ATRSP_SUCCESS
        param["length"] += len(line)
        self.g_buf += line
        return RIL_ATRSP_CONTINUE

    def recv(self, cid_ssid: int) -> tuple[int, dict]:
        self.g_buf = bytearray()
        param = {"length": 0, "err_state": False}
        ret = self.ril.send_at(f"AT+QSSLRECV={cid_ssid >> 8},{cid_ssid & 0xFF},1460\n",
                               self.h_recv, param)
        return ret, param

    @staticmethod
    def h_send(line: bytes, param: dict) -> int:
        if b"\r\n>" in line:
            param["ril"].write_data_to_core(param["data"])
            param["return_val"] = RIL_ATRSP_CONTINUE
            return RIL_ATRSP_CONTINUE
        if b"ERROR" in line:
            param["return_val"] = RIL_ATRSP_FAILED
            return RIL_ATRSP_FAILED
        if b"SEND OK" in line:
            param["return_val"] = RIL_ATRSP_SUCCESS
            return RIL_ATRSP_SUCCESS
        param["return_val"] = RIL_ATRSP_CONTINUE
        return RIL_ATRSP_CONTINUE

    def send_data(self, ssid: int, payload: bytes) -> tuple[int, list[int]]:
        """SSL_Send_Data(): state check, then 1460-byte AT+QSSLSEND pieces (1250 ms apart)."""
        states, offset, ret = [], 0, 0
        while True:
            piece = payload[offset:offset + 1460]
            states.append(self.check_soc_state(ssid))
            if states[-1] != SOC_CONNECTED:
                return RIL_AT_FAILED, states           # (the reconnect is not modelled)
            param = {"ril": self.ril, "data": piece, "return_val": None}
            ret = self.ril.send_at(f"AT+QSSLSEND={ssid},{len(piece)}\n", self.h_send, param)
            if ret != RIL_ATRSP_SUCCESS:
                return ret, states
            offset += len(piece)
            if offset >= len(payload):
                return ret, states
            time.sleep(1.25)


# == fixtures ========================================================================================
@pytest.fixture
def ril(emulator, tmp_path):
    """A fresh ML302 driven through the modelled RIL: echo off, bearer up (AT+CGACT=1,1)."""
    port = emulator.add_modem("ml302", state_dir=tmp_path / "state")
    r = Ril(port.path)
    r.write(b"ATE0\r")                       # (the ML302 comes up with echo on)
    deadline = time.monotonic() + 5
    while b"OK\r\n" not in r.rx:
        assert time.monotonic() < deadline, bytes(r.rx)
        r.pump(0.05)
    assert bytes(r.rx) == b"ATE0\r\r\nOK\r\n"
    r.rx.clear()
    assert r.send_at("AT+CGACT=1,1\n") == RIL_AT_SUCCESS
    r.settle(0.1)
    r.sent.clear()
    yield r
    r.close()


@pytest.fixture
def tls(emulator):
    """tls(name=HOST, **TlsServer kwargs) routed as <name>:443, DNS 106.12.79.254."""
    yield from routed_servers(emulator, default_pki().server, mode="echo",
                              ciphers="DEFAULT:@SECLEVEL=0")


def _seclevel_0(ril: Ril) -> None:
    assert ril.send_at('AT+QSSLCFG="seclevel",0,0\n') == RIL_AT_SUCCESS


def _http_server(tls, response: bytes, name: str = HOST):
    """A server that answers `response` at once, then waits for the client to close."""
    def handler(conn) -> None:
        conn.sendall(response)
        while conn.recv():
            pass
    return tls(name, handler=handler)


def _states(ril: Ril) -> bytes:
    ril.settle(0.05)
    ril.write(b"AT+QSSLSTATE\r")
    out = b""
    while b"\r\nOK\r\n" not in out:
        got = ril.line(5)
        assert got is not None, out
        out += got
    return out


# == the RIL's line endings over a UART ============================================================
def test_ril_lf_ended_lines_run_nothing_on_a_uart_until_s3_is_lf(ril):
    """The application's exact bytes: "AT+QSECDEL=...\\n" is no command line on a UART (S3 is
    CR, V.250 6.2.1): no answer comes; the next CR ends ONE line holding both texts (ERROR).
    With ATS3=10 the same bytes run, and every answer is framed with S3 S4 = LF LF."""
    ril.write(b'AT+QSECDEL="NVRAM:CA0"\n')
    assert ril.settle(0.6) == [] and ril.rx == b""
    ril.write(b"AT\r")
    assert ril.line(5) == b"\r\nERROR\r\n"
    ril.write(b"ATS3=10\r")
    ril.settle(0.3)
    assert bytes(ril.rx) == b"\n\nOK\n\n"
    ril.rx.clear()
    ril.write(b'AT+QSECDEL="NVRAM:CA0"\n')
    ril.settle(0.3)
    assert bytes(ril.rx) == b"\n\n+CME ERROR: 50\n\n"
    ril.rx.clear()
    ril.write(b'AT+QSSLCFG="ignorertctime",1\n')
    ril.settle(0.3)
    assert bytes(ril.rx) == b"\n\nOK\n\n"


# == Quectel's OpenCPU HTTPS example on the ML302 ==================================================
def test_example_certificate_steps_end_the_run_at_the_first_qsecwrite(ril, tls):
    """NVRAM:<name> files are the M66's; the ML302's AT+QSECDEL / AT+QSECWRITE take a slot
    number (0-2), so each gets +CME ERROR: 50.  The DEL handler matches "ERROR" before
    "+CME ERROR:", so the error code is never read and the delete stops at CA0; the write gets
    no CONNECT, writes no certificate, and the example stops (STATE_TOTAL_NUM): no open."""
    srv = tls()
    example = OcpuHttpsExample(ril, default_pki().ca.cert_pem)
    trail = example.run(HOST)
    assert trail == ["CERTIFICATE_DEL", "CERTIFICATE_WRITE", "TOTAL_NUM"]
    assert ril.sent == [b'AT+QSECDEL="NVRAM:CA0"\n',
                        f'AT+QSECWRITE="NVRAM:CA0",{len(example.cert)},100\n'.encode()]
    assert ril.settle(0.3) == []
    # the port is in command state (no prompt was opened), the CA slot still empty
    assert ril.send_at("AT+QSECREAD=0\n", lambda line, _: (
        RIL_ATRSP_FAILED if b"ERROR" in line else RIL_ATRSP_CONTINUE)) == RIL_AT_FAILED
    assert srv.connections == []


def test_example_qsslcfg_steps_all_pass_and_read_back(ril):
    """RIL_SSL_QSSLCFG(0, 4, "0xFFFF", 2): seven lines with the RIL's default callback, each
    OK on the ML302 (a quoted lower-case "0xFFFF" included; "ignorertctime" is its global
    form); the values read back as written (the cipher list in the query's 0XFFFF form)."""
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg() == RIL_AT_SUCCESS
    assert len(ril.sent) == 7
    got = {}
    for opt in ("sslversion", "ciphersuite", "seclevel", "cacert", "clientcert", "clientkey"):
        lines: list[bytes] = []
        assert ril.send_at(f'AT+QSSLCFG="{opt}",0\n', lambda line, acc: (
            acc.append(line) or (RIL_ATRSP_SUCCESS if line == b"\r\nOK\r\n"
                                 else RIL_ATRSP_CONTINUE)), lines) == RIL_AT_SUCCESS
        got[opt] = lines
    assert got == {"sslversion": [b'\r\n+QSSLCFG: "sslversion",4\r\n', b"\r\nOK\r\n"],
                   "ciphersuite": [b'\r\n+QSSLCFG: "ciphersuite",0XFFFF\r\n', b"\r\nOK\r\n"],
                   "seclevel": [b'\r\n+QSSLCFG: "seclevel",2\r\n', b"\r\nOK\r\n"],
                   "cacert": [b'\r\n+QSSLCFG: "cacert","NVRAM:CA0"\r\n', b"\r\nOK\r\n"],
                   "clientcert": [b'\r\n+QSSLCFG: "clientcert","NVRAM:CC0"\r\n', b"\r\nOK\r\n"],
                   "clientkey": [b'\r\n+QSSLCFG: "clientkey","NVRAM:CK0"\r\n', b"\r\nOK\r\n"]}


def test_example_open_at_seclevel_2_with_nvram_paths_fails_minus_1_without_dialling(ril, tls):
    """After the example's configuration (seclevel 2, certificates named NVRAM:*, which are
    no ML302 slots): OK, then "+QSSLOPEN: 0,-1"; the handler's atoi from 4 past ':' reads -1
    and the example's open returns its error (then STATE_GPRS_DEACTIVATE).  Nothing reached
    the server: the certificates are missing before any TCP."""
    srv = tls()
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg() == RIL_AT_SUCCESS
    assert example.open(HOST) == (OPENFAIL, -1)
    assert srv.connections == []
    assert b'+QSSLSTATE: 0,"TCP","",443,"CLOSED",1\r\n' in _states(ril)
    assert ril.settle(0.2) == []


def test_example_open_of_its_url_host_name_fails_minus_1(ril, tls):
    """The example dials HOST_NAME "https://freeiotcloud.in/hello.htm" -- a URL, which no DNS
    resolves (a real module fails the same way): OK, then "+QSSLOPEN: 0,-1" (here at
    seclevel 0, so only the name can fail).  The routed host alone opens."""
    srv = tls()
    _seclevel_0(ril)
    example = OcpuHttpsExample(ril, b"")
    t0 = time.monotonic()
    assert example.open(URL_HOST) == (OPENFAIL, -1)
    assert time.monotonic() - t0 < 5
    assert srv.connections == []
    assert example.open(HOST) == (RIL_AT_SUCCESS, 0)
    srv.wait_handshake()


def test_example_send_uses_the_length_form_the_ml302_refuses(ril, tls):
    """STATE_SSL_SEND: AT+QSSLSEND=0,6 is the M66's fixed-length form; the ML302 has only
    AT+QSSLSEND=<ssid> (manual §2.7), so ERROR: the send callback fails at once, "123456" is
    never written, the example ends (ret < 0 -> STATE_TOTAL_NUM) with the socket still
    CONNECTED and the server given nothing."""
    srv = tls()
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg(sec_level=0) == RIL_AT_SUCCESS
    assert example.open(HOST) == (RIL_AT_SUCCESS, 0)
    srv.wait_handshake()
    ril.rx.clear()
    assert example.send(SSID, b"123456") == RIL_AT_FAILED
    assert ril.sent[-1] == b"AT+QSSLSEND=0,6\n"
    assert ril.settle(0.3) == []
    assert bytes(srv.conn.received) == b""
    assert b'+QSSLSTATE: 0,"TCP","106.12.79.254",443,"CONNECTED",1\r\n' in _states(ril)


def test_example_state_machine_from_open_to_its_end_on_a_seclevel_0_context(ril, tls):
    """The example's ticks after its configuration, the certificates' steps left out (a user
    with seclevel 0): SSL_OPEN -> SSL_SEND -> TOTAL_NUM; exactly one send line was tried."""
    srv = tls()
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg(sec_level=0) == RIL_AT_SUCCESS
    ril.sent.clear()
    state, trail = "SSL_OPEN", []
    for _ in range(6):
        trail.append(state)
        if state == "SSL_OPEN":
            state = "SSL_SEND" if example.open(HOST)[0] == 0 else "GPRS_DEACTIVATE"
        elif state == "SSL_SEND":
            state = "TOTAL_NUM" if example.send(SSID, b"123456") < 0 else "SSL_SEND"
        else:
            break
    assert trail == ["SSL_OPEN", "SSL_SEND", "TOTAL_NUM"]
    assert ril.sent == [f'AT+QSSLOPEN=0,0,"{HOST}",443,0\n'.encode(), b"AT+QSSLSEND=0,6\n"]
    srv.wait_handshake()


def test_example_recv_stops_at_the_http_status_line(ril, tls):
    """A server's HTTP answer: the URC '+QSSLURC: "recv",1,0' gives ssid 0, the example reads
    AT+QSSLRECV=0,0,1024 (its ctxindex as <cid>; the ML302 keeps <cid> reserved).  The ML302's
    answer is exact; the callback ends at the status line, which holds "OK": the buffer stays
    empty and the rest of the answer -- headers, body, the real OK -- is left to the RIL's URC
    path."""
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    _http_server(tls, body)
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg(sec_level=0) == RIL_AT_SUCCESS
    assert example.open(HOST) == (RIL_AT_SUCCESS, 0)
    ssid = ril.recv_urc_ssid()
    assert ssid == 0
    assert example.recv(ssid) == RIL_AT_SUCCESS
    assert bytes(example.recv_data) == bytes(1024)
    assert ril.settle(0.3) == [b"\r\nContent-Length: 5\r\n", b"\r\nhello\r\n", b"\r\nOK\r\n"]


def test_example_recv_of_plain_lines_leaves_the_last_line_over_the_first(ril, tls):
    """Lines without "OK": each is copied to the start of the 1024-byte buffer, so what the
    example prints is the last line written over the longer first one.  The ML302's answer
    (exact): '+QSSLRECV: <ip>:<port>,TCP,<n>', the data, CR LF, then OK."""
    payload = b"first-and-longer-line\r\nlast"
    _http_server(tls, payload)
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg(sec_level=0) == RIL_AT_SUCCESS
    assert example.open(HOST) == (RIL_AT_SUCCESS, 0)
    ril.recv_urc_ssid()
    ril.settle(0.2)
    seen: list[bytes] = []

    def spy(line: bytes, buf: bytearray) -> int:
        seen.append(line)
        return OcpuHttpsExample.h_recv(line, buf)
    assert ril.send_at("AT+QSSLRECV=0,0,1024\n", spy, example.recv_data) == RIL_AT_SUCCESS
    assert seen == [f"\r\n+QSSLRECV: {HOST_IP}:443,TCP,{len(payload)}\r\n".encode(),
                    b"\r\nfirst-and-longer-line\r\n", b"\r\nlast\r\n", b"\r\nOK\r\n"]
    text = bytes(example.recv_data).rstrip(b"\0")
    assert text == b"\r\nlast\r\n" + b"\r\nfirst-and-longer-line\r\n"[len(b"\r\nlast\r\n"):]


def test_example_close_reports_failure_though_the_ml302_closed(ril, tls):
    """AT+QSSLCLOSE=0 on the ML302: OK, then "0,CLOSE OK" (manual §2.6).  The example's close
    callback fails on any line without "CLOSE OK", so it fails at the OK -- while the socket
    is closed (QSSLSTATE: CLOSED, the server sees the close) -- and the "0,CLOSE OK" line
    reaches the RIL as a URC."""
    srv = tls()
    example = OcpuHttpsExample(ril, b"")
    assert example.cfg(sec_level=0) == RIL_AT_SUCCESS
    assert example.open(HOST) == (RIL_AT_SUCCESS, 0)
    srv.wait_handshake()
    assert example.close(SSID) == RIL_AT_FAILED
    assert ril.settle(0.5) == [b"\r\n0,CLOSE OK\r\n"]
    srv.wait_done()
    assert b'+QSSLSTATE: 0,"TCP","106.12.79.254",443,"CLOSED",1\r\n' in _states(ril)


# == The Azure gateway's SecureSocket.c on the ML302 ================================================
def test_azure_cfg_stops_at_certchain_so_the_session_is_never_configured(ril):
    """RIL_SSL_QSSLCFG(): the three NVRAM paths are OK (the ML302 stores any path), then
    "certchain" -- no ML302 option -- is ERROR: ignorertctime, sslversion and seclevel are
    never sent and FLAG.SSL_CONFIGURED stays FALSE (Connect_Azure_IoT() gives up there)."""
    az = AzureSecureSocket(ril)
    assert az.cfg() == RIL_AT_FAILED
    assert az.ssl_configured is False
    assert ril.sent == [b'AT+QSSLCFG="cacert",0,"NVRAM:CA0"\n',
                        b'AT+QSSLCFG="clientcert",0,"NVRAM:CC0"\n',
                        b'AT+QSSLCFG="clientkey",0,"NVRAM:CK0"\n',
                        b'AT+QSSLCFG="certchain",1\n']
    assert ril.settle(0.2) == []


def test_azure_socket_state_through_the_ml302_state_list(ril, tls):
    """SSL_Check_SOC_State(0) over the ML302's AT+QSSLSTATE (its "+QSSLSTATE: <state>" first
    line matches no ssid): INITIAL before any open, CONNECTED after it, REMOTE CLOSING once
    the server closed (its URC '+QSSLURC: "close",0' goes to the RIL), CLOSED after
    AT+QSSLCLOSE."""
    def handler(conn) -> None:
        conn.recv()                  # wait for the test's go, then close (close_notify + FIN)
    srv = tls(DPS_HOST, handler=handler)
    az = AzureSecureSocket(ril)
    _seclevel_0(ril)
    assert az.check_soc_state(0) == SOC_INITIAL
    example = OcpuHttpsExample(ril, b"")        # (the gateway's open is the example's)
    assert example.open(DPS_HOST, ssid=0) == (RIL_AT_SUCCESS, 0)
    assert az.check_soc_state(0) == SOC_CONNECTED
    assert ril.send_at("AT+QSSLSEND=0\n", lambda line, _: (
        ril.write(b"go\x1a") or RIL_ATRSP_CONTINUE) if line == b"\r\n> " else (
        RIL_ATRSP_SUCCESS if b"SEND OK" in line else RIL_ATRSP_CONTINUE)) == RIL_AT_SUCCESS
    srv.wait_done()
    deadline = time.monotonic() + 5
    while b'\r\n+QSSLURC: "close",0\r\n' not in ril.settle(0.05):
        assert time.monotonic() < deadline, ril.urcs
    assert az.check_soc_state(0) == SOC_REMOTECLOSING
    assert ril.send_at("AT+QSSLCLOSE=0\n", lambda line, _: (
        RIL_ATRSP_SUCCESS if b"CLOSE OK" in line else RIL_ATRSP_CONTINUE)) == RIL_AT_SUCCESS
    assert az.check_soc_state(0) == SOC_CLOSED


def test_azure_recv_keeps_the_body_and_skips_the_http_headers(ril, tls):
    """An Azure DPS-style answer: the status line and every header are counted or skipped,
    the JSON body is kept, the final OK line (6 bytes as framed) adds nothing."""
    body = b'{"operationId":"4.abc","status":"assigning"}'
    answer = (b"HTTP/1.1 202 Accepted\r\nDate: Sat, 22 Apr 2017 10:00:00 GMT\r\n"
              b"Content-Type: application/json; charset=utf-8\r\nTransfer-Encoding: chunked\r\n"
              b"x-ms-request-id: 1234\r\nStrict-Transport-Security: max-age=31536000\r\n\r\n" + body)
    _http_server(tls, answer, DPS_HOST)
    _seclevel_0(ril)
    assert OcpuHttpsExample(ril, b"").open(DPS_HOST) == (RIL_AT_SUCCESS, 0)
    assert ril.recv_urc_ssid() == 0
    az = AzureSecureSocket(ril)
    ret, param = az.recv((0 << 8) | 0)
    assert ret == RIL_AT_SUCCESS and param["err_state"] is False
    assert ril.sent[-1] == b"AT+QSSLRECV=0,0,1460\n"
    assert bytes(az.g_buf) == b"\r\n" + body + b"\r\n"
    assert param["length"] == len(b"\r\nHTTP/1.1 202 Accepted\r\n") + len(body) + 4
    assert ril.settle(0.2) == []


def test_azure_recv_of_a_body_holding_ok_ends_early_and_cuts_it(ril, tls):
    """A body line holding "OK" (a JSON status) is taken for the final result: its last 6
    bytes are dropped, the read ends there, and the real OK reaches the RIL as a URC."""
    body = b'{"status":"OK","x":1}'
    _http_server(tls, b"HTTP/1.1 200 OK\r\n\r\n" + body, DPS_HOST)
    _seclevel_0(ril)
    assert OcpuHttpsExample(ril, b"").open(DPS_HOST) == (RIL_AT_SUCCESS, 0)
    assert ril.recv_urc_ssid() == 0
    az = AzureSecureSocket(ril)
    ret, _ = az.recv(0)
    assert ret == RIL_AT_SUCCESS
    framed = b"\r\n" + body + b"\r\n"
    assert bytes(az.g_buf) == framed[:-6]
    assert ril.settle(0.3) == [b"\r\nOK\r\n"]


def test_azure_send_data_passes_its_state_check_then_the_length_form_is_error(ril, tls):
    """SSL_Send_Data(0, 1500 bytes): AT+QSSLSTATE says CONNECTED, then the first 1460-byte
    piece's AT+QSSLSEND=0,1460 is ERROR on the ML302: nothing is written, the server gets
    nothing, the function returns the failure."""
    srv = tls(DPS_HOST)
    _seclevel_0(ril)
    assert OcpuHttpsExample(ril, b"").open(DPS_HOST) == (RIL_AT_SUCCESS, 0)
    srv.wait_handshake()
    az = AzureSecureSocket(ril)
    ret, states = az.send_data(0, b"P" * 1500)
    assert (ret, states) == (RIL_AT_FAILED, [SOC_CONNECTED])
    assert ril.sent[-2:] == [b"AT+QSSLSTATE\n", b"AT+QSSLSEND=0,1460\n"]
    assert ril.settle(0.3) == []
    assert bytes(srv.conn.received) == b""


def test_example_write_handler_on_the_ml302_prompt_leaves_the_port_in_it(ril):
    """The example's certificate write ported only in its command (AT+QSECWRITE=0, the ML302's
    CA slot): the ML302 answers its "> " prompt (manual §2.2), never the M66's CONNECT, so the
    write callback waits on and the RIL times out with nothing written.  The prompt has no
    inactivity timeout (docs/behaviour.md, ML302 certificate store): the example's next
    command is taken as certificate data and gets no answer either; an ESC ends the prompt
    with OK and stores nothing."""
    example = OcpuHttpsExample(ril, default_pki().ca.cert_pem)
    err = [RIL_AT_FAILED]
    assert ril.send_at("AT+QSECWRITE=0\n", example.h_cert_write, err, timeout=1) == RIL_AT_TIMEOUT
    assert ril.send_at('AT+QSSLCFG="ignorertctime",1\n', timeout=1) == RIL_AT_TIMEOUT
    assert bytes(ril.rx) == b""
    ril.write(b"\x1b")
    assert ril.line(5) == b"\r\nOK\r\n"
    assert ril.send_at("AT+QSECREAD=0\n", lambda line, _: (
        RIL_ATRSP_FAILED if b"ERROR" in line else RIL_ATRSP_CONTINUE)) == RIL_AT_FAILED
    assert ril.settle(0.2) == []
