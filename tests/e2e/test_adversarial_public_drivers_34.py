"""Adversarial tests: a thirty-fourth set of public host code pointed at the pty -- three programs
that drive the EC2x SSL and file commands (AT+QFDEL "UFS:*", AT+QFUPL, AT+QSSLCFG "cacert" /
"clientcert" / "clientkey" given bare file names, "seclevel" / "sslversion" / "ciphersuite" /
"sni", AT+QSSLCLOSE of an id never opened, AT+QSSLOPEN in buffer mode, AT+QSSLSTATE=<id>,
AT+QSSLSEND's fixed-length form followed by stray bytes, binary data through it, +QSSLURC "recv" /
"closed", AT+QSSLRECV, AT+QICLOSE of an SSL client's id) with habits no earlier file imitated:
an interrupt-fed byte filter and latch, a WebSocket client whose reads never see a URC's end, and
a Python SDK that reads a UDP SERVICE's direct-push datagrams line by line.
Each is replayed through the pty with its own bytes, waits and parsers against loopback OpenSSL
(Python ssl) peers; every host name dialled is routed to 127.0.0.1.  (A search of tests/ for
"atCmdDevice", "cellModem", "extractBetween", "gsm_ws", "gsm_wss_connect", "gsm_collect_response"
"Sec-WebSocket", "aerismodsdk", "rmutils" and "udp_urcs_to_payloads" finds nothing.)

Programs replayed (public sources read through the reference store; paraphrased, not copied):
- connycommy/atCmdDevice at cd1704b6dcfd95ef0986ba3b4a07647cf7f0478e (2021-10-13; "cellModem
  2.0.8" over "atCmdDevice 1.0.1", Julian Bustamante Narvaez, an EC25/BG96 library from Colombia).
  src/atcmdDev/atCmdDevice.c: cmIsrRx(c) runs per received byte: bytes below 10 or above 122
  ('z') are dropped; after the three bytes "URC" (findStrCharByChar, a static counter) the rest
  of the line up to '\\n' is appended to an async-event buffer (never cleared between events)
  and asyncEvent set; unless `ready` is latched the byte is stored in the response buffer, and
  IsrStrResponseCmpManually() -- static pos/cont over "OK\\r\\n", "ERROR", ">" (only the first
  CM_MAX_NUM_RESPONSES_EXPECTED = 3 of cellModem.c's five responses) -- latches `ready` when one
  completes.  cmSendCmd(payload, expected, buf, ms): reset the buffer, write the payload, busy-
  wait until `ready` or more than `ms` ms of ticks; then strstr(buffer, expected) (NULL expected:
  OK once ready); after 5 non-OK calls in a row the 6th returns MAX_RETRIES at once.
  src/cellularModem/cellModem.c: every command ends "\\r" alone; "OK" is "\\r\\nOK\\r\\n";
  cellModem_SetApn (AT+QICSGP=1,1,"<apn>","<user>","<pwd>",3), SetContextProfile (AT+QIACT=<id>,
  150 s), SSLDeleteFileStorage (AT+QFDEL="UFS:*"), SSLUplCert (AT+QFUPL="<path>",<size>,60
  expecting "CONNECT", 300 ms -- the latch never fires on CONNECT, so it times out) and
  SSLSendFile (the file, expecting OK, 300 ms), SSLCfgPathCacert / ClientCert / ClientKeyCert
  ("cacert.pem" / "user_cert.pem" / "user_key.pem" by default), SSLCfgSecLevel, SSLCfgVersion,
  SSLCfgCipherSuite ("0X%04X"), SSLSocketOpen (AT+QSSLOPEN=<pdp>,<ssl>,<client>,"<addr>",<port>,
  <mode>, OK only), SSLSocketGetStatus (AT+QSSLSTATE=<client>, parsed with extractBetween: the
  id between ' ' and ',', the type between quotes, the address between the next quotes from 2
  past them, then ','-to-',' hops to the state and the serverID), SSLSocketConfigSendData
  (AT+QSSLSEND=<client>,<strlen> expecting ">", 300 ms), SSLSocketSendData (the data plus "\\r"
  with a 0 ms wait, then "\\x1A\\r" expecting "SEND OK\\r\\n", 4 s -- the fixed-length form with
  the variable form's Ctrl+Z after it), SSLSocketGetRecv (AT+QSSLRECV=<client>,1024, 2 s:
  strstr "+QSSLRECV:", the length between ' ' and '\\r', the data memcpy'd from 2 past that
  '\\r'), SSLSocketClose (AT+QICLOSE=<client>), UrcGetRecvConnection / UrcGetClosedConnection
  (strstr ': "recv"' / ': "closed"' in the async buffer, the id between ',' and '\\r').
- An ESP-IDF "gsm" component for a Quectel EC200U (whose SSL command set is the EC2x's), MIT:
  gsm_ws.c "WebSocket over TCP/SSL via Quectel AT commands (RFC 6455)" (store file id
  67477490001), gsm_core.c (67278923456), the SSL helpers (67446907288) and gsm_private.h
  (67128914876); the store did not name the repository.  gsm_uart_writeln: the command, then
  "\\r\\n".  gsm_read_response(buf, n, ms): one byte per 10 ms uart_read_bytes, stopping once the
  buffer holds "\\r\\nOK\\r\\n", "\\r\\nERROR\\r\\n", "\\r\\n> ", "+CME ERROR:" or a +QHTTP tag, or
  after `ms`; gsm_collect_response(buf, n, ms): 64-byte reads with a 50 ms timeout, stopping at
  "\\r\\nOK\\r\\n" / "\\r\\nERROR\\r\\n" or 500 ms of silence after data; gsm_send_at(cmd, expect,
  ms): writeln, read_response, strstr(expect) (no flush before: what waited is read first);
  gsm_expect_urc(tag, ms): read_response, strstr(tag) -- a URC matches no early exit, so it
  always waits `ms`.  gsm_ssl_upload_cert: AT+QFUPL="<path>",<strlen>,100 expecting "CONNECT"
  (3 s: no early exit either), the PEM, read_response 5 s, "OK".  gsm_wss_connect(host, port,
  path, ctx, sock): AT+QSSLCFG "sslversion",1,4 / "ciphersuite",1,0xFFFF / "cacert",1,
  "cacert.pem" / "seclevel",1,2 / "sni",1,1; AT+QSSLCLOSE=<sock> (its answer ignored);
  AT+QSSLOPEN=<ctx>,1,<sock>,"<host>",<port>,0 expecting OK (5 s), then gsm_expect_urc(
  "+QSSLOPEN: <sock>,0", 15 s); the upgrade request sent by ws_transport_send (AT+QSSLSEND=
  <sock>,<len> expecting "> " (2 s), the bytes, read_response 5 s, "SEND OK" -- "\\r\\nSEND OK"
  is no early exit, so every send waits its 5 s); ws_transport_recv: AT+QSSLRECV=<sock>,<min(
  room, 1460)>, collect 2 s, strstr "+QSSLRECV: ", atoi, data from 2 past the next "\\r\\n",
  0 -> 100 ms and again, fewer than asked -> done; "101" in the answer means upgraded.
  ws_send_frame: FIN + opcode, a masked length (7 bit / 126 + 16 bit), the 4-byte mask, the
  masked payload written in 256-byte pieces after the header, in one AT+QSSLSEND up to 1024
  bytes in all, else ws_transport_send pieces of 1024 (the header in the first).  gsm_ws_recv:
  one transport read of up to buf_len+15 bytes, a PING answered with a PONG of its payload (0
  returned), a CLOSE answered and -2, else the payload.  gsm_ws_close: a CLOSE frame with 1000,
  200 ms, AT+QSSLCLOSE=<sock> expecting OK (5 s).
  The component's fixed waits (3 s, 5 s, 15 s) always run out; they are scaled by WAIT_SCALE
  here (each still far above what the emulator takes to answer), so a test stays under 20 s.
- Aeris Communications' aerismodsdk (Apache-2.0, 2020; Python over pyserial): modules/quectel.py
  (store file id 434537680), utils/rmutils.py (128654258), modules/module.py (25625136); the store
  did not name the repository.  open_serial: 115200, timeout 1, rtscts and dsrdtr on, sendBreak,
  both buffers reset.  write(cmd, moredata, delay, timeout=1): cmd + "\r\n", the delay, up to 1 s
  for a first byte, then readline() while bytes are waiting (the first burst only), moredata
  after 1 s and 1 s more.  wait_urc(t, returnonvalue, returnbytes): every 0.5 s, the waiting
  bytes one by one, a line handed over only at its LF.  create_packet_session: AT+QICSGP=1,1,
  "<apn>","","",0, AT+QIACT? (parse_constate: the 4th comma field's quoted IP), AT+QIACT=1,
  AT+QIACT?.  udp_listen: AT+QIOPEN=1,1,"UDP SERVICE","127.0.0.1",0,<port>,1 (1 s), AT+QISTATE=1,1
  holding "UDP", wait_urc; udp_urcs_to_payloads: the '+QIURC: "recv",<id>,<len>,"<ip>",<port>'
  regex, <len> bytes after the CR LF, then "consume the trailing CRLF".  file_upload: AT+QFUPL=
  "<dst><name>",<size>, the file one byte per write(), wait_urc(5).  configure_mqtt's AT+QSSLCFG
  lines on context 3 (its AT+QMT* part needs commands the EC2x profile does not have).
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import select
import struct
import time
import tty

import pytest

from emulator.testing.peers import TlsServer, default_pki

# -- the pty as a UART ----------------------------------------------------------------------------
class Uart:
    """The host's end of the pty, raw, with the bytes the 'UART driver' holds (`pending`)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.fd)
        self.pending = bytearray()
        self.sent = bytearray()
        self.log = bytearray()                 # every byte the module sent

    def close(self) -> None:
        os.close(self.fd)

    def write(self, data: bytes) -> None:
        self.sent += data
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 0.05)
                continue
            view = view[n:]

    def pump(self, timeout: float = 0.0) -> int:
        r, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not r:
            return 0
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, OSError):
            return 0
        self.pending += data
        self.log += data
        return len(data)


# == driver 1: connycommy/atCmdDevice (cellModem 2.0.8) ==========================================
CM_OK, CM_ERR_TIMEOUT, CM_ERR_WAITING, CM_ERR_INVALID_RESPONSE, CM_ERR_MAX_RETRIES = 0, 1, 2, 3, 4
RESPONSES = [b"OK\r\n", b"ERROR", b">"]          # CM_MAX_NUM_RESPONSES_EXPECTED = 3 of the five
LEN_RESPONSE = [len(r) - 1 for r in RESPONSES]
GENERAL = b"\r\nOK\r\n"                          # CELLMODEM_CMD_GENERAL_RESPONSE
CM_BUFFER_LEN_DEF = 1024


def c_string(buf: bytearray) -> bytes:
    end = buf.find(0)
    return bytes(buf if end < 0 else buf[:end])


def c_atoi(text: bytes) -> int:
    m = re.match(rb"\s*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


class AtCmdDevice:
    """atCmdDevice.c: the RX interrupt (cmIsrRx) and the blocking cmSendCmd."""

    def __init__(self, uart: Uart, buf_len: int = CM_BUFFER_LEN_DEF) -> None:
        self.uart = uart
        self.len = buf_len
        self.buffer = bytearray(buf_len)
        self.index = 0
        self.ready = 0
        self.async_buf = bytearray(CM_BUFFER_LEN_DEF + 2)
        self.async_index = 0
        self.ready_async = 0
        self.async_event = 0
        self.async_count = 0
        self.api_running = False
        self.retries = 0
        self.dropped = bytearray()               # bytes the ISR's filter threw away
        # statics of IsrStrResponseCmpManually / findStrCharByChar
        self._pos = self._cont = 0
        self._urc_cont = 0

    # -- the interrupt ------------------------------------------------------------------------
    def _find_urc(self, c: int) -> int:
        pattern = b"URC"
        if c == pattern[self._urc_cont]:
            if self._urc_cont == 2:
                self._urc_cont = 0
                return 1
            self._urc_cont += 1
            return 0
        self._urc_cont = 0
        return 0

    def _match(self, c: int) -> None:
        for _ in range(len(RESPONSES)):
            pattern = RESPONSES[self._pos]
            if c == pattern[self._cont]:
                if self._cont == LEN_RESPONSE[self._pos]:
                    self.ready = 1
                    self._pos = 0
                    self.index = 0
                    self._cont = 0
                else:
                    self._cont += 1
                break
            self._cont = 0
            self._pos = 0 if self._pos == len(RESPONSES) - 1 else self._pos + 1

    def isr(self, c: int) -> None:
        if c < 10 or c > 122:
            self.dropped.append(c)
            return
        if self.ready_async:
            self.async_buf[self.async_index] = c
            self.async_index += 1
            if self.async_index > CM_BUFFER_LEN_DEF:
                self.async_index = 0
            self.async_buf[self.async_index] = 0
            if c == 0x0A:
                self.ready_async = 0
                self.async_event = 1
                self.async_count += 1
        else:
            self.ready_async = self._find_urc(c)
        if self.ready:
            return
        self.buffer[self.index] = c
        self.index += 1
        if self.index >= self.len - 1:
            self.index = 0
        self.buffer[self.index] = 0
        self._match(c)

    def run_isr(self, timeout: float = 0.0) -> None:
        """Feed what the UART has to the interrupt handler, byte by byte."""
        self.uart.pump(timeout)
        data, self.uart.pending = bytes(self.uart.pending), bytearray()
        for c in data:
            self.isr(c)

    def idle(self, seconds: float) -> None:
        """The application doing something else while the interrupt keeps running."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.run_isr(min(0.02, max(end - time.monotonic(), 0)))

    # -- cmSendCmd --------------------------------------------------------------------------------
    def _reset(self) -> None:
        self.buffer[:] = bytes(self.len)
        self.index = 0
        self.ready = 0
        self.api_running = False

    def send_cmd(self, payload: bytes | None, expected: bytes | None, ms: int,
                 out: list | None = None) -> int:
        self.run_isr()                           # what came before the call went through the ISR
        ret = None
        if not self.api_running:
            self._reset()
            if payload is not None:
                self.uart.write(payload)
            self.api_running = True
            self.retries += 1
            if self.retries - 1 > 4:
                self.retries = 0
                ret = CM_ERR_MAX_RETRIES
        if ret is None:
            start = int(time.monotonic() * 1000)
            timed_out = False
            while True:                          # cmWaitBlock(cmWrapperWaitNonBlock)
                self.run_isr(0.0005)
                if int(time.monotonic() * 1000) - start > ms:
                    timed_out = True
                    self.api_running = False     # cmWaitNonBlock's timeout resets apiState
                    break
                if self.ready:
                    break
            if self.ready:
                text = c_string(self.buffer)
                match = CM_OK if expected is None or expected in text else CM_ERR_INVALID_RESPONSE
            else:
                match = CM_ERR_WAITING
            if match in (CM_OK, CM_ERR_INVALID_RESPONSE):
                ret = match
            elif timed_out:
                ret = CM_ERR_TIMEOUT
            else:
                ret = CM_ERR_WAITING
        if ret in (CM_ERR_INVALID_RESPONSE, CM_OK):
            if self.ready and ret == CM_OK:
                if out is not None:
                    out.append(c_string(self.buffer))
                self.retries = 0
            self.api_running = False
        return ret

    def async_text(self) -> bytes:
        return c_string(self.async_buf)


def extract_between(src: bytes | None, pos: int | None, init: bytes, end: bytes,
                    offset: int = 0) -> tuple[int | None, bytes | None]:
    """extractBetween(): (the new position -- the static `ret`, kept when nothing matched --,
    the bytes copied or None).  Positions index `src`."""
    if src is None or pos is None:
        return extract_between.last, None
    p_init = src.find(init, pos + offset)
    if p_init < 0:
        return extract_between.last, None
    p_end = src.find(end, p_init + 1)
    if p_end < 0:
        return extract_between.last, None
    extract_between.last = p_end
    return p_end, src[p_init + 1:p_end]


extract_between.last = None


class CellModem:
    """cellModem.c's functions used by an SSL application."""

    def __init__(self, dev: AtCmdDevice) -> None:
        self.dev = dev

    def set_apn(self, apn: str, user: str, pwd: str) -> int:
        cmd = f'AT+QICSGP=1,1,"{apn}","{user}","{pwd}",3\r'.encode()
        return self.dev.send_cmd(cmd, GENERAL, 500)

    def set_context_profile(self, context_id: int) -> int:
        return self.dev.send_cmd(f"AT+QIACT={context_id}\r".encode(), GENERAL, 150000)

    def ssl_delete_file_storage(self, name: str | None = None) -> int:
        return self.dev.send_cmd(f'AT+QFDEL="{name or "UFS:*"}"\r'.encode(), GENERAL, 300)

    def ssl_upl_cert(self, path: str, size: int) -> int:
        return self.dev.send_cmd(f'AT+QFUPL="{path}",{size},60\r'.encode(), b"CONNECT", 300)

    def ssl_send_file(self, data: bytes) -> int:
        return self.dev.send_cmd(data, GENERAL, 300)

    def ssl_cfg(self, name: str, ctx: int, value: str) -> int:
        return self.dev.send_cmd(f'AT+QSSLCFG="{name}",{ctx},{value}\r'.encode(), GENERAL, 300)

    def cfg_cacert(self, ctx: int, path: str | None = None) -> int:
        return self.ssl_cfg("cacert", ctx, f'"{path or "cacert.pem"}"')

    def cfg_client_cert(self, ctx: int, path: str | None = None) -> int:
        return self.ssl_cfg("clientcert", ctx, f'"{path or "user_cert.pem"}"')

    def cfg_client_key(self, ctx: int, path: str | None = None) -> int:
        return self.ssl_cfg("clientkey", ctx, f'"{path or "user_key.pem"}"')

    def cfg_sec_level(self, ctx: int, level: int) -> int:
        return self.ssl_cfg("seclevel", ctx, str(level))

    def cfg_version(self, ctx: int, version: int) -> int:
        return self.ssl_cfg("sslversion", ctx, str(version))

    def cfg_cipher_suite(self, ctx: int, suite: int) -> int:
        return self.ssl_cfg("ciphersuite", ctx, f"0X{suite:04X}")

    def socket_open(self, pdp: int, ssl_ctx: int, client: int, addr: str, port: str,
                    mode: int) -> int:
        cmd = f'AT+QSSLOPEN={pdp},{ssl_ctx},{client},"{addr}",{port},{mode}\r'.encode()
        return self.dev.send_cmd(cmd, GENERAL, 150000)

    def socket_get_status(self, client: int) -> tuple[int, dict]:
        out: list = []
        ret = self.dev.send_cmd(f"AT+QSSLSTATE={client}\r".encode(), GENERAL, 150000, out)
        info = {"clientID": client, "servAddr": b"", "state": 0, "serverID": 0}
        if ret == CM_OK:
            buf = out[0]
            p = buf.find(b"+QSSLSTATE:")
            if p >= 0:
                scratch = bytearray(32)

                def into(val):
                    if val is not None:
                        scratch[:len(val)] = val          # strncpy without a NUL
                    return c_string(scratch)
                p, v = extract_between(buf, p, b" ", b",")
                info["clientID"] = c_atoi(into(v))
                p, v = extract_between(buf, p, b'"', b'"')
                into(v)
                p, v = extract_between(buf, p, b'"', b'"', 2)
                info["servAddr"] = v if v is not None else b""
                p, _ = extract_between(buf, p, b",", b",")
                p, _ = extract_between(buf, p, b",", b",")
                p, v = extract_between(buf, p, b",", b",")
                info["state"] = c_atoi(into(v))
                p, _ = extract_between(buf, p, b",", b",")
                scratch[:] = bytes(32)
                p, v = extract_between(buf, p, b",", b",")
                info["serverID"] = c_atoi(into(v))
        return ret, info

    def socket_config_send_data(self, client: int, data: bytes) -> int:
        n = min(len(data), 1459)
        return self.dev.send_cmd(f"AT+QSSLSEND={client},{n}\r".encode(), b">", 300)

    def socket_send_data(self, data: bytes) -> int:
        self.dev.send_cmd(data + b"\r", None, 0)
        return self.dev.send_cmd(b"\x1a\r", b"SEND OK\r\n", 4000)

    def socket_get_recv(self, client: int) -> tuple[int, bytes]:
        out: list = []
        ret = self.dev.send_cmd(f"AT+QSSLRECV={client},{CM_BUFFER_LEN_DEF}\r".encode(), GENERAL,
                                2000, out)
        msg = b""
        if ret == CM_OK:
            buf = out[0]
            p = buf.find(b"+QSSLRECV:")
            if p >= 0:
                p, v = extract_between(buf, p, b" ", b"\r")
                n = c_atoi(v or b"")
                if n > 0:
                    msg = buf[p + 2:p + 2 + n]
        return ret, msg

    def socket_close(self, client: int) -> int:
        return self.dev.send_cmd(f"AT+QICLOSE={client}\r".encode(), GENERAL, 10000)

    def urc_recv_connection(self) -> int | None:
        return self._urc(b': "recv"')

    def urc_closed_connection(self) -> int | None:
        return self._urc(b': "closed"')

    def _urc(self, tag: bytes) -> int | None:
        if not self.dev.async_event:
            return None
        buf = self.dev.async_text()
        p = buf.find(tag)
        if p < 0:
            return None
        _, v = extract_between(buf, p, b",", b"\r")
        return c_atoi(v or b"")


# == driver 2: the EC200U ESP-IDF "gsm" component's WebSocket client ===============================
WAIT_SCALE = 0.2          # the component's always-expiring waits (3 s / 5 s / 15 s), scaled


class GsmModem:
    """gsm_core.c's AT engine over the pty (uart_read_bytes from the driver's RX buffer)."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.reads: list[bytes] = []

    def _take(self, n: int, timeout: float) -> bytes:
        """uart_read_bytes(port, buf, n, timeout): up to n bytes, returning when n are there
        or the timeout ran out."""
        end = time.monotonic() + timeout
        while len(self.uart.pending) < n:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.uart.pump(left)
        data = bytes(self.uart.pending[:n])
        del self.uart.pending[:n]
        return data

    def writeln(self, cmd: str) -> None:
        self.uart.write(cmd.encode() + b"\r\n")

    def read_response(self, timeout_ms: float, size: int = 512) -> bytes:
        buf = bytearray()
        end = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < end and len(buf) < size - 1:
            c = self._take(1, 0.010)
            if c:
                buf += c
                text = c_string(buf)
                if any(t in text for t in (b"\r\nOK\r\n", b"\r\nERROR\r\n", b"\r\n> ",
                                           b"+CME ERROR:", b"+QHTTPPOST:", b"+QHTTPGET:",
                                           b"+QHTTPREAD:")):
                    break
        self.reads.append(bytes(buf))
        return bytes(buf)

    def collect_response(self, timeout_ms: float, size: int) -> bytes:
        buf = bytearray()
        start = time.monotonic()
        got = False
        last = start
        while (time.monotonic() - start) * 1000 < timeout_ms and len(buf) < size - 1:
            data = self._take(64, 0.050)
            if data:
                buf += data[:size - 1 - len(buf)]
                got = True
                last = time.monotonic()
                text = c_string(buf)
                if b"\r\nOK\r\n" in text or b"\r\nERROR\r\n" in text:
                    break
                if any(t in text for t in (b"+QHTTPREAD:", b"+QHTTPPOST:", b"+QHTTPGET:")):
                    break
            elif got and (time.monotonic() - last) * 1000 > 500:
                break
        self.reads.append(bytes(buf))
        return bytes(buf)

    def send_at(self, cmd: str, expect: str = "OK", timeout_ms: float = 1000) -> bool:
        self.writeln(cmd)
        buf = self.read_response(timeout_ms)
        return expect.encode() in c_string(bytearray(buf))

    def expect_urc(self, tag: str, timeout_ms: float) -> bool:
        return tag.encode() in c_string(bytearray(self.read_response(timeout_ms)))

    def ssl_upload_cert(self, cert: bytes, path: str) -> bool:
        self.writeln(f'AT+QFUPL="{path}",{len(cert)},100')
        if b"CONNECT" not in c_string(bytearray(self.read_response(3000 * WAIT_SCALE))):
            return False
        self.uart.write(cert)
        return b"OK" in c_string(bytearray(self.read_response(5000, 128)))

    def ssl_configure(self, ctx: int, ca_path: str, verify: bool) -> bool:
        if not self.send_at(f'AT+QSSLCFG="cacert",{ctx},"{ca_path}"', "OK", 1000):
            return False
        return self.send_at(f'AT+QSSLCFG="seclevel",{ctx},{2 if verify else 0}', "OK", 1000)


WS_OP_TEXT, WS_OP_BIN, WS_OP_CLOSE, WS_OP_PING, WS_OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
WS_AT_SEND_MAX = 1024
WS_AT_RECV_MAX = 1460


class GsmWs:
    """gsm_ws.c over GsmModem (the SSL path)."""

    def __init__(self, modem: GsmModem, masks=None, keys=None) -> None:
        self.m = modem
        self.ssl = set()
        self._masks = list(masks or [])
        self._keys = list(keys or [])

    def _random4(self) -> bytes:
        return self._masks.pop(0) if self._masks else os.urandom(4)

    def transport_send(self, sock: int, data: bytes) -> bool:
        cmd = f"AT+QSSLSEND={sock},{len(data)}" if sock in self.ssl else f"AT+QISEND={sock},{len(data)}"
        if not self.m.send_at(cmd, "> ", 2000):
            return False
        self.m.uart.write(data)
        return b"SEND OK" in c_string(bytearray(self.m.read_response(5000 * WAIT_SCALE, 128)))

    def transport_recv(self, sock: int, buf_len: int, timeout_ms: float) -> bytes | int:
        resp_size = WS_AT_RECV_MAX + 64
        out = bytearray()
        deadline = time.monotonic() + timeout_ms / 1000
        while len(out) < buf_len - 1 and time.monotonic() < deadline:
            want = min(buf_len - 1 - len(out), WS_AT_RECV_MAX)
            self.m.writeln(f"AT+QSSLRECV={sock},{want}")
            resp = self.m.collect_response(2000, resp_size)
            text = c_string(bytearray(resp))
            tag = b"+QSSLRECV: "
            p = text.find(tag)
            if p < 0:
                return bytes(out) if out else -1
            p += len(tag)
            data_len = c_atoi(text[p:])
            if data_len <= 0:
                if out:
                    break
                time.sleep(0.1)
                continue
            q = text.find(b"\r\n", p)
            if q < 0:
                return bytes(out) if out else -1
            start = q + 2
            to_copy = min(data_len, buf_len - 1 - len(out))
            out += resp[start:start + to_copy]              # memcpy: from the raw buffer
            if data_len < want:
                break
        return bytes(out)

    def transport_close(self, sock: int) -> bool:
        if sock in self.ssl:
            self.ssl.discard(sock)
            return self.m.send_at(f"AT+QSSLCLOSE={sock}", "OK", 5000)
        return self.m.send_at(f"AT+QICLOSE={sock}", "OK", 5000)

    def send_frame(self, sock: int, opcode: int, payload: bytes) -> bool:
        n = len(payload)
        hdr = bytearray([0x80 | opcode])
        if n <= 125:
            hdr.append(0x80 | n)
        elif n <= 65535:
            hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            hdr += bytes([0x80 | 127, 0, 0, 0, 0]) + struct.pack(">I", n)
        mask = self._random4()
        hdr += mask
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        total = len(hdr) + n
        if total <= WS_AT_SEND_MAX:
            cmd = f"AT+QSSLSEND={sock},{total}" if sock in self.ssl else f"AT+QISEND={sock},{total}"
            if not self.m.send_at(cmd, "> ", 2000):
                return False
            self.m.uart.write(bytes(hdr))
            for i in range(0, n, 256):
                self.m.uart.write(masked[i:i + 256])
            return b"SEND OK" in c_string(bytearray(self.m.read_response(5000 * WAIT_SCALE, 128)))
        first = min(WS_AT_SEND_MAX - len(hdr), n)
        if not self.transport_send(sock, bytes(hdr) + masked[:first]):
            return False
        sent = first
        while sent < n:
            chunk = masked[sent:sent + WS_AT_SEND_MAX]
            if not self.transport_send(sock, chunk):
                return False
            sent += len(chunk)
        return True

    def handshake(self, host: str, path: str, sock: int) -> str:
        key = base64.b64encode(self._keys.pop(0) if self._keys else os.urandom(16)).decode()
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
               f"Sec-WebSocket-Version: 13\r\n\r\n").encode()
        if not self.transport_send(sock, req):
            return "GSM_ERR_TCP"
        resp = self.transport_recv(sock, 512, 5000)
        if isinstance(resp, int) or len(resp) <= 0:
            return "GSM_ERR_TIMEOUT"
        if b"101" not in c_string(bytearray(resp)):
            return "GSM_ERR_WS_HANDSHAKE"
        return "GSM_OK"

    def wss_connect(self, host: str, port: int, path: str, ctx_id: int, sock: int) -> str:
        ssl_ctx = 1
        self.m.send_at(f'AT+QSSLCFG="sslversion",{ssl_ctx},4', "OK", 1000)
        self.m.send_at(f'AT+QSSLCFG="ciphersuite",{ssl_ctx},0xFFFF', "OK", 1000)
        self.m.ssl_configure(ssl_ctx, "cacert.pem", True)
        self.m.send_at(f'AT+QSSLCFG="sni",{ssl_ctx},1', "OK", 1000)
        self.m.send_at(f"AT+QSSLCLOSE={sock}", "OK", 2000)
        self.ssl.discard(sock)
        if not self.m.send_at(f'AT+QSSLOPEN={ctx_id},{ssl_ctx},{sock},"{host}",{port},0', "OK", 5000):
            return "GSM_ERR_SSL"
        if not self.m.expect_urc(f"+QSSLOPEN: {sock},0", 15000 * WAIT_SCALE):
            self.m.send_at(f"AT+QSSLCLOSE={sock}", "OK", 2000)
            return "GSM_ERR_SSL"
        self.ssl.add(sock)
        err = self.handshake(host, path, sock)
        if err != "GSM_OK":
            self.transport_close(sock)
        return err

    def recv(self, sock: int, buf_len: int, timeout_ms: float):
        raw = self.transport_recv(sock, buf_len + 16, timeout_ms)
        if isinstance(raw, int) or len(raw) <= 0:
            return raw if isinstance(raw, int) else 0, b""
        if len(raw) < 2:
            return -1, b""
        opcode = raw[0] & 0x0F
        masked = bool(raw[1] & 0x80)
        plen = raw[1] & 0x7F
        off = 2
        if plen == 126:
            plen = struct.unpack(">H", raw[2:4])[0]
            off = 4
        elif plen == 127:
            plen = struct.unpack(">I", raw[6:10])[0]
            off = 10
        mask = b"\0\0\0\0"
        if masked:
            mask = raw[off:off + 4]
            off += 4
        if opcode == WS_OP_PING:
            self.send_frame(sock, WS_OP_PONG, raw[off:off + plen])
            return 0, b""
        if opcode == WS_OP_CLOSE:
            self.send_frame(sock, WS_OP_CLOSE, raw[off:off + min(plen, 2)])
            return -2, b""
        avail = max(len(raw) - off, 0)
        to_copy = min(plen, avail, buf_len - 1)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(raw[off:off + to_copy]))
        return to_copy, data

    def close(self, sock: int) -> bool:
        self.send_frame(sock, WS_OP_CLOSE, b"\x03\xe8")
        time.sleep(0.2)
        return self.transport_close(sock)


# == peers ====================================================================================
def ws_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Client frames (masked) decoded: [(opcode, payload)], and what is left over."""
    frames = []
    while len(data) >= 2:
        plen = data[1] & 0x7F
        off = 2
        if plen == 126:
            if len(data) < 4:
                break
            plen = struct.unpack(">H", data[2:4])[0]
            off = 4
        elif plen == 127:
            if len(data) < 10:
                break
            plen = struct.unpack(">Q", data[2:10])[0]
            off = 10
        masked = data[1] & 0x80
        mask = data[off:off + 4] if masked else b"\0\0\0\0"
        off += 4 if masked else 0
        if len(data) < off + plen:
            break
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[off:off + plen]))
        frames.append((data[0] & 0x0F, payload))
        data = data[off + plen:]
    return frames, data


def server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n <= 125:
        return bytes([0x80 | opcode, n]) + payload
    if n <= 65535:
        return bytes([0x80 | opcode, 126]) + struct.pack(">H", n) + payload
    return bytes([0x80 | opcode, 127]) + struct.pack(">Q", n) + payload


def ws_server(leaf, script, record: dict) -> TlsServer:
    """A wss:// server: reads the upgrade request, answers 101, then runs script(conn, take)
    where take(count) returns `count` decoded client frames."""

    def handler(conn) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(timeout=10)
            if not chunk:
                return
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        record["request"] = head + b"\r\n\r\n"
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", head).group(1)
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        pending = bytearray(rest)

        def take(count: int, timeout: float = 15) -> list[tuple[int, bytes]]:
            got: list[tuple[int, bytes]] = []
            end = time.monotonic() + timeout
            while len(got) < count:
                split = _split_frame(bytes(pending))
                if split is not None:
                    frame, used = split
                    got.append(frame)
                    del pending[:used]
                    continue
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    chunk = conn.recv(timeout=left)
                except TimeoutError:
                    break
                if not chunk:
                    break
                pending.extend(chunk)
            return got
        script(conn, take)
        try:
            while conn.recv(timeout=10):
                pass
        except Exception:                     # timeout, or the server stopping
            pass
    return TlsServer(leaf, handler=handler)


def _split_frame(data: bytes):
    """((opcode, unmasked payload), bytes used) of the first whole client frame, or None."""
    frames, rest = ws_frames(data)
    if not frames:
        return None
    plen = data[1] & 0x7F
    off = 2 + (2 if plen == 126 else 8 if plen == 127 else 0) + (4 if data[1] & 0x80 else 0)
    return frames[0], off + len(frames[0][1])


# == fixtures =================================================================================
CM_HOST, CM_PORT = "mqtt.cm-example.co", 8883
WS_HOST, WS_PORT = "ws.gsm-example.net", 443


def _profile_with_send_delay(tmp_path) -> str:
    """The EC2x profile with a 30 ms answer delay on AT+QSSLSEND (what follows the data): a
    module takes its data into the TCP stack before SEND OK; cellModem's 0 ms wait after the data
    (one tick) must end before that answer, as it does on hardware."""
    from emulator.modem.profile import resolve_profile_path
    text = resolve_profile_path("ec2x").read_text()
    path = tmp_path / "ec2x-send-30ms.toml"
    path.write_text(text.replace("[pdp]\n", '[timing]\nresponse_delay_ms = { "+QSSLSEND" = 30 }\n\n[pdp]\n', 1))
    return str(path)


@pytest.fixture
def cm(open_modem, tmp_path, strict_log):
    host, port = open_modem(_profile_with_send_delay(tmp_path))      # ATE0 sent
    host.close()
    uart = Uart(port.path)
    dev = AtCmdDevice(uart)
    yield CellModem(dev), port
    uart.close()


@pytest.fixture
def gsm(open_modem, strict_log):
    host, port = open_modem("ec2x")                                    # initialize_modem's ATE0
    host.close()
    uart = Uart(port.path)
    yield GsmModem(uart), port
    uart.close()


@pytest.fixture(scope="module")
def leaves():
    pki = default_pki()
    return {"cm": pki.issue("drv34_cm", CM_HOST), "ws": pki.issue("drv34_ws", WS_HOST), "pki": pki}


def _cm_bring_up(c: CellModem) -> None:
    assert c.set_apn("internet", "", "") == CM_OK
    assert c.set_context_profile(1) == CM_OK


def _cm_upload(c: CellModem, path: str, data: bytes) -> None:
    assert c.ssl_upl_cert(path, len(data)) == CM_ERR_TIMEOUT       # CONNECT never latches
    assert c_string(c.dev.buffer) == b"\r\nCONNECT\r\n"
    assert c.ssl_send_file(data) == CM_OK


def _cm_open(c: CellModem, emulator, server, seclevel: int = 1) -> dict:
    emulator.router.add_map(CM_HOST, CM_PORT, "127.0.0.1", server.port)
    assert c.cfg_cacert(1) == CM_OK
    assert c.cfg_sec_level(1, seclevel) == CM_OK
    assert c.cfg_version(1, 4) == CM_OK
    assert c.cfg_cipher_suite(1, 0xFFFF) == CM_OK
    assert c.socket_open(1, 1, 1, CM_HOST, str(CM_PORT), 0) == CM_OK
    info = {}
    for _ in range(50):                                            # the application polls
        ret, info = c.socket_get_status(1)
        assert ret == CM_OK
        if info["state"] == 2:
            break
        c.dev.idle(0.1)
    return info


# == tests: cellModem ============================================================================
def test_cm_upload_cfg_open_and_state_parse(cm, emulator, leaves):
    """SSLDeleteFileStorage("UFS:*"), SSLUplCert (times out: the latch never fires on CONNECT,
    but the module is in data mode), SSLSendFile (the +QFUPL line then OK latch), the bare
    "cacert.pem" (UFS) in AT+QSSLCFG, "0XFFFF", then AT+QSSLOPEN (OK only) and AT+QSSLSTATE
    polled until extractBetween's hops find state 2 and the quoted address."""
    c, _ = cm
    _cm_bring_up(c)
    pki = leaves["pki"]
    assert c.ssl_delete_file_storage() == CM_OK
    _cm_upload(c, "UFS:cacert.pem", pki.ca.cert_pem)
    with TlsServer(leaves["cm"], mode="sink") as server:
        info = _cm_open(c, emulator, server)
        assert info["state"] == 2
        assert info["clientID"] == 1
        assert info["servAddr"] == CM_HOST.encode()
        assert info["serverID"] == 1
        conn = server.wait_handshake()
        assert conn.handshake_done
    assert c.dev.dropped == b""


def test_cm_fixed_length_send_then_stray_cr_and_ctrl_z(cm, emulator, leaves):
    """SSLSocketSendData: "<data>\\r" after AT+QSSLSEND=1,<strlen>, then "\\x1A\\r" expecting
    SEND OK: the module takes exactly <strlen> bytes (the CR is not sent to the server), the CR
    and "\\x1A\\r" lines outside any AT line are dropped without an answer, and SEND OK reaches
    the latch after the second call's reset.  Nothing else comes after it."""
    c, _ = cm
    _cm_bring_up(c)
    _cm_upload(c, "UFS:cacert.pem", leaves["pki"].ca.cert_pem)
    with TlsServer(leaves["cm"], mode="sink") as server:
        assert _cm_open(c, emulator, server)["state"] == 2
        data = b"temp=21.5;hum=40"
        assert c.socket_config_send_data(1, data) == CM_OK
        mark = len(c.dev.uart.log)
        assert c.socket_send_data(data) == CM_OK
        assert c_string(c.dev.buffer) == b"\r\nSEND OK\r\n"
        assert server.wait_received(len(data)) == data
        c.dev.idle(0.4)
        assert bytes(c.dev.uart.log[mark:]) == b"\r\nSEND OK\r\n"
        assert bytes(server.connections[-1].received) == data
        ret, info = c.socket_get_status(1)                        # the next command is clean
        assert ret == CM_OK and info["state"] == 2


def test_cm_echo_urc_then_recv_and_peer_close(cm, emulator, leaves):
    """The echo's +QSSLURC: "recv",1 goes to the async buffer (after "URC"), GetRecv's strstr/
    extractBetween/memcpy gets the bytes, then the peer's close gives +QSSLURC: "closed",1
    appended to the same buffer."""
    c, _ = cm
    _cm_bring_up(c)
    _cm_upload(c, "UFS:cacert.pem", leaves["pki"].ca.cert_pem)

    def handler(conn):
        got = conn.recv(timeout=10)
        conn.sendall(b"ack:" + got)
        time.sleep(0.5)
        conn.close()
    with TlsServer(leaves["cm"], handler=handler) as server:
        assert _cm_open(c, emulator, server)["state"] == 2
        data = b"ping-1"
        assert c.socket_config_send_data(1, data) == CM_OK
        assert c.socket_send_data(data) == CM_OK
        c.dev.idle(0.3)
        assert c.urc_recv_connection() == 1
        ret, msg = c.socket_get_recv(1)
        assert ret == CM_OK
        assert msg == b"ack:ping-1"
        c.dev.idle(1.0)
        assert c.dev.async_text() == b': "recv",1\r\n: "closed",1\r\n'
        assert c.urc_closed_connection() == 1
        ret, info = c.socket_get_status(1)
        assert ret == CM_OK and info["state"] == 4


def test_cm_close_with_qiclose_is_refused_and_the_session_stays(cm, emulator, leaves):
    """SSLSocketClose sends AT+QICLOSE=<clientID>: an SSL client's id is ERROR there (the
    emulator's documented decision), so the latch fires on ERROR (INVALID_RESPONSE) and the
    TLS session stays up: the server sees no close, AT+QSSLSTATE still says 2."""
    c, _ = cm
    _cm_bring_up(c)
    _cm_upload(c, "UFS:cacert.pem", leaves["pki"].ca.cert_pem)
    with TlsServer(leaves["cm"], mode="sink") as server:
        assert _cm_open(c, emulator, server)["state"] == 2
        assert c.socket_close(1) == CM_ERR_INVALID_RESPONSE
        assert c_string(c.dev.buffer) == b"\r\nERROR"
        c.dev.idle(0.3)
        conn = server.connections[-1]
        assert not conn.client_eof and not conn.close_notify_received
        ret, info = c.socket_get_status(1)
        assert ret == CM_OK and info["state"] == 2


def test_cm_client_certificate_from_default_names(cm, emulator, leaves):
    """seclevel 2 with the library's default names: "UFS:user_cert.pem" / "UFS:user_key.pem"
    uploaded, AT+QSSLCFG "clientcert" / "clientkey" given "user_cert.pem" / "user_key.pem"
    (bare, UFS): the server that requires a client certificate sees the pki's client."""
    c, _ = cm
    _cm_bring_up(c)
    pki = leaves["pki"]
    _cm_upload(c, "UFS:cacert.pem", pki.ca.cert_pem)
    _cm_upload(c, "UFS:user_cert.pem", pki.client.cert_pem)
    _cm_upload(c, "UFS:user_key.pem", pki.client.key_pem)
    assert c.cfg_client_cert(1) == CM_OK
    assert c.cfg_client_key(1) == CM_OK
    with TlsServer(leaves["cm"], mode="sink", client_ca=pki.ca, require_client_cert=True) as server:
        assert _cm_open(c, emulator, server, seclevel=2)["state"] == 2
        conn = server.wait_handshake()
        assert conn.client_cert_subject is not None
        assert "modem client" in conn.client_cert_subject


# == tests: the EC200U WebSocket component =========================================================
def _ws_prepare(g: GsmModem, emulator, leaves, server) -> None:
    assert g.send_at('AT+QICSGP=1,1,"internet","","",1', "OK", 1000)
    assert g.send_at("AT+QIACT=1", "OK", 5000)
    assert g.ssl_upload_cert(leaves["pki"].ca.cert_pem, "cacert.pem")
    emulator.router.add_map(WS_HOST, WS_PORT, "127.0.0.1", server.port)


def test_ws_wss_connect_text_echo_and_close(gsm, emulator, leaves):
    """gsm_wss_connect: the upload (CONNECT read for the whole wait), the QSSLCFG steps with
    "sni" 1, AT+QSSLCLOSE of the id never opened (OK), AT+QSSLOPEN then the whole-wait read
    that must hold "+QSSLOPEN: 2,0"; the upgrade request through AT+QSSLSEND (SEND OK read
    for the whole wait) and the 101 through AT+QSSLRECV; a text frame each way; gsm_ws_close."""
    g, _ = gsm
    record: dict = {}

    def script(conn, take):
        frames = take(1)
        record["frames"] = frames
        conn.sendall(server_frame(WS_OP_TEXT, b"echo:" + frames[0][1]))
        record["close"] = take(1)
        conn.sendall(server_frame(WS_OP_CLOSE, b"\x03\xe8"))
    with ws_server(leaves["ws"], script, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        ws = GsmWs(g, keys=[b"0123456789abcdef"])
        assert ws.wss_connect(WS_HOST, WS_PORT, "/live", 1, 2) == "GSM_OK"
        conn = server.wait_handshake()
        assert conn.sni == WS_HOST
        assert record["request"] == (
            b"GET /live HTTP/1.1\r\nHost: " + WS_HOST.encode() + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert ws.send_frame(2, WS_OP_TEXT, b"hello wss")
        n, data = ws.recv(2, 256, 3000)
        assert (n, data) == (14, b"echo:hello wss")
        assert ws.close(2)
        deadline = time.monotonic() + 5
        while "close" not in record and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record["frames"] == [(WS_OP_TEXT, b"hello wss")]
        assert record["close"] == [(WS_OP_CLOSE, b"\x03\xe8")]


def test_ws_binary_frame_with_control_bytes_through_fixed_length(gsm, emulator, leaves):
    """A binary frame whose bytes on the wire hold Ctrl+Z, ESC, NUL, CR LF, "+++" and 0xFF
    (mask 0): AT+QSSLSEND=<sock>,<len> takes them as data, the server unmasks them exactly."""
    g, _ = gsm
    record: dict = {}
    payload = b"\x1a\x1b\x00\r\n+++\xff\xfeAT\r\x1a" * 5

    def script(conn, take):
        record["frames"] = take(1)
    with ws_server(leaves["ws"], script, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        ws = GsmWs(g, masks=[b"\0\0\0\0"])
        assert ws.wss_connect(WS_HOST, WS_PORT, "/bin", 1, 0) == "GSM_OK"
        ws._masks = [b"\0\0\0\0"]
        assert ws.send_frame(0, WS_OP_BIN, payload)
        deadline = time.monotonic() + 5
        while "frames" not in record and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record["frames"] == [(WS_OP_BIN, payload)]
        assert g.send_at("AT+QSSLSTATE=0", "OK", 1000)
        assert b',2,1,0,0,"usbmodem",1\r\n' in g.reads[-1]


def test_ws_large_frame_in_1024_byte_sends_and_large_server_frame(gsm, emulator, leaves):
    """A 2500-byte text frame: header and 1016 bytes, then 1024, then 460, each its own
    AT+QSSLSEND; the server's 2000-byte binary frame read back through AT+QSSLRECV=<sock>,1460
    then the rest (data_len < want ends the loop), reassembled exactly."""
    g, _ = gsm
    record: dict = {}
    big = bytes((i * 7) % 251 for i in range(2500)).replace(b"\0", b"\x01")
    reply = bytes(range(1, 256)) * 8                           # 2040 bytes, NUL-free

    def script(conn, take):
        record["frames"] = take(1)
        conn.sendall(server_frame(WS_OP_BIN, reply))
    with ws_server(leaves["ws"], script, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        ws = GsmWs(g)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/big", 1, 3) == "GSM_OK"
        mark = len(g.uart.sent)
        assert ws.send_frame(3, WS_OP_TEXT, big)
        sends = re.findall(rb"AT\+QSSLSEND=3,(\d+)\r\n", bytes(g.uart.sent[mark:]))
        assert sends == [b"1024", b"1024", b"460"]
        deadline = time.monotonic() + 5
        while "frames" not in record and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record["frames"] == [(WS_OP_TEXT, big)]
        time.sleep(0.3)
        n, data = ws.recv(3, 2100, 5000)
        assert n == len(reply) and data == reply


def test_ws_server_ping_gets_pong_with_its_payload(gsm, emulator, leaves):
    """gsm_ws_recv on a PING: ws_send_frame(PONG, the PING's payload), 0 returned."""
    g, _ = gsm
    record: dict = {}

    def script(conn, take):
        time.sleep(2.0)        # after the handshake's read (what shares the 101's read is dropped)
        conn.sendall(server_frame(WS_OP_PING, b"are-you-there"))
        record["frames"] = take(1)
    with ws_server(leaves["ws"], script, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        ws = GsmWs(g)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/p", 1, 1) == "GSM_OK"
        assert ws.recv(1, 256, 3000) == (0, b"")
        deadline = time.monotonic() + 5
        while "frames" not in record and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record.get("frames") == [(WS_OP_PONG, b"are-you-there")]


def test_cm_over_long_data_tail_runs_as_a_command_line(cm, emulator, leaves):
    """SSLSocketConfigSendData caps the length at 1459 but SSLSocketSendData writes all of
    strlen(data) plus "\\r": the module takes exactly 1459 bytes, then the tail is command state
    -- bytes before its "at" dropped, `at home"}` a command line (spaces ignored: H, then O with
    no connection left online: NO CARRIER, which ends the line) answered after the SEND OK (the
    latch has fired by then, so the driver still returns OK)."""
    c, _ = cm
    _cm_bring_up(c)
    _cm_upload(c, "UFS:cacert.pem", leaves["pki"].ca.cert_pem)
    data = b"B" * 1450 + b'{"where":"at home"}'
    assert len(data) > 1459
    with TlsServer(leaves["cm"], mode="sink") as server:
        assert _cm_open(c, emulator, server)["state"] == 2
        assert c.socket_config_send_data(1, data) == CM_OK
        assert bytes(c.dev.uart.sent).endswith(b"AT+QSSLSEND=1,1459\r")
        mark = len(c.dev.uart.log)
        assert c.socket_send_data(data) == CM_OK
        assert server.wait_received(1459) == data[:1459]
        c.dev.idle(0.4)
        assert bytes(c.dev.uart.log[mark:]) == b"\r\nSEND OK\r\n\r\nNO CARRIER\r\n"
        assert bytes(server.connections[-1].received) == data[:1459]


def _ws_reads_after(g: GsmModem, mark: int) -> list[bytes]:
    return g.reads[mark:]


def test_ws_connect_steps_answers(gsm, emulator, leaves):
    """What each of gsm_wss_connect's ignored answers was: the five AT+QSSLCFG lines (the
    ciphersuite written "0xFFFF") OK, AT+QSSLCLOSE of the never-opened id OK, AT+QSSLOPEN OK,
    and the whole 15 s (scaled) read holding exactly the +QSSLOPEN URC."""
    g, _ = gsm
    record: dict = {}
    with ws_server(leaves["ws"], lambda conn, take: None, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        mark = len(g.reads)
        ws = GsmWs(g)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/s", 1, 4) == "GSM_OK"
        reads = _ws_reads_after(g, mark)
        assert reads[:8] == [b"\r\nOK\r\n"] * 7 + [b"\r\n+QSSLOPEN: 4,0\r\n"]
        assert g.send_at('AT+QSSLCFG="ciphersuite",1', "OK", 1000)
        assert g.reads[-1] == b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n\r\nOK\r\n'


def test_ws_reconnect_after_server_close_reuses_the_id(gsm, emulator, leaves):
    """The server sends CLOSE and drops TCP; gsm_ws_recv answers the CLOSE (-2); the
    application connects again on the same id: the leftover-socket AT+QSSLCLOSE frees the
    closed socket (OK) and AT+QSSLOPEN on it gives +QSSLOPEN: 5,0 again."""
    g, _ = gsm
    record: dict = {}

    def script(conn, take):
        time.sleep(1.5)
        conn.sendall(server_frame(WS_OP_CLOSE, b"\x03\xe9"))
        record["reply"] = take(1, timeout=5)
    with ws_server(leaves["ws"], script, record) as server:
        _ws_prepare(g, emulator, leaves, server)
        ws = GsmWs(g)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/r", 1, 5) == "GSM_OK"
        assert ws.recv(5, 64, 4000) == (-2, b"")
        deadline = time.monotonic() + 5
        while "reply" not in record and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record["reply"] == [(WS_OP_CLOSE, b"\x03\xe9")]
        time.sleep(0.5)
        mark = len(g.reads)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/r", 1, 5) == "GSM_OK"
        assert len(server.connections) == 2
        assert any(b"+QSSLOPEN: 5,0" in r for r in g.reads[mark:])


def test_ws_failed_open_then_close_frees_the_id(gsm, emulator, leaves):
    """A server whose certificate is not for the host: +QSSLOPEN: 6,566 in the whole read, the
    component's AT+QSSLCLOSE=6 (OK, the socket never connected), GSM_ERR_SSL; the next
    connect on id 6 to the right server succeeds."""
    g, _ = gsm
    record: dict = {}
    pki = leaves["pki"]
    with TlsServer(pki.server, mode="sink") as wrong, \
            ws_server(leaves["ws"], lambda conn, take: None, record) as right:
        _ws_prepare(g, emulator, leaves, wrong)
        ws = GsmWs(g)
        mark = len(g.reads)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/f", 1, 6) == "GSM_ERR_SSL"
        assert g.reads[mark + 7] == b"\r\n+QSSLOPEN: 6,566\r\n"
        assert g.reads[mark + 8] == b"\r\nOK\r\n"
        emulator.router.add_map(WS_HOST, WS_PORT, "127.0.0.1", right.port)
        assert ws.wss_connect(WS_HOST, WS_PORT, "/f", 1, 6) == "GSM_OK"


# == driver 3: Aeris Communications' aerismodsdk (Python, pyserial), BG96 / EC25 module =============
class Rmutils:
    """aerismodsdk/utils/rmutils.py over pyserial (open_serial's settings)."""

    def __init__(self, path: str) -> None:
        import serial
        self.ser = serial.Serial(port=path, baudrate=115200, parity=serial.PARITY_NONE,
                                 stopbits=serial.STOPBITS_ONE, bytesize=serial.EIGHTBITS,
                                 timeout=1, xonxoff=False, rtscts=True, dsrdtr=True)
        self.ser.send_break()                  # sendBreak(): 0.25 s of BREAK
        self.ser.reset_input_buffer()
        self.ser.reset_output_buffer()

    def close(self) -> None:
        self.ser.close()

    def write(self, cmd: str, moredata: str | None = None, delay: float = 0,
              timeout: float = 1.0) -> str:
        ser = self.ser
        out = ""
        ser.write((cmd + "\r\n").encode())
        if delay > 0:
            time.sleep(delay)
        start = time.time()
        while ser.in_waiting == 0 and time.time() - start < timeout:
            time.sleep(0.005)
        while ser.in_waiting > 0:
            out += ser.readline().decode("utf-8", errors="replace")
        if moredata is not None:
            time.sleep(1)
            ser.write(moredata.encode())
            time.sleep(1)
        return out

    def wait_urc(self, timeout: float, returnonvalue=False, returnbytes: bool = False):
        ser = self.ser
        line = bytearray()
        final = b"" if returnbytes else ""
        start = time.time()
        while time.time() - start < timeout:
            while ser.in_waiting > 0:
                b = ser.read()[0]
                line.append(b)
                if b == 10:
                    one = bytes(line) if returnbytes else line.decode("utf-8")
                    final = final + one
                    if returnonvalue and one.find(returnonvalue) > -1:
                        return final
                    line = bytearray()
            time.sleep(0.5)
        return final


class AerisQuectel:
    """aerismodsdk/modules/quectel.py's QuectelModule: the packet and UDP parts."""

    def __init__(self, rm: Rmutils, apn: str = "lpiot.aer.net") -> None:
        self.rm = rm
        self.apn = apn
        self.my_ip = None

    def parse_constate(self, constate: str):
        if len(constate) < len("+QIACT: "):
            return False
        vals = constate.split(",")
        if len(vals) < 4:
            return False
        self.my_ip = vals[3].split('"')[1]
        return self.my_ip

    def create_packet_session(self) -> bool:
        self.rm.write('AT+QICSGP=1,1,"' + self.apn + '","","",0')
        constate = self.rm.write("AT+QIACT?")
        if not self.parse_constate(constate):
            self.rm.write("AT+QIACT=1")
            constate = self.rm.write("AT+QIACT?")
            if not self.parse_constate(constate):
                return False
        return True

    def udp_listen(self, listen_port, listen_wait, returnbytes: bool = False):
        read_sock = "1"
        if not self.create_packet_session():
            return False
        cmd = 'AT+QIOPEN=1,' + read_sock + ',"UDP SERVICE","127.0.0.1",0,' + str(listen_port) + ",1"
        self.rm.write(cmd, delay=1)
        sostate = self.rm.write("AT+QISTATE=1," + read_sock)
        if "UDP" not in sostate:
            sostate = self.rm.write("AT+QISTATE=1," + read_sock, delay=1)
            if "UDP" not in sostate:
                return False
        if listen_wait > 0:
            return self.rm.wait_urc(listen_wait, returnbytes=returnbytes)
        return True

    @staticmethod
    def udp_urcs_to_payloads(urcs: bytes) -> tuple[list[bytes], list[str]]:
        """(payloads, the log lines it printed) -- as written, IndexError included."""
        log: list[str] = []
        head_tag = b'+QIURC: "recv",'
        urc_regex = re.compile(rb'\+QIURC: "recv",(?P<connectID>\d+),(?P<currentrecvlength>\d+),'
                               rb'"(?P<remoteIP>[^"]+)",(?P<remotePort>\d+)')
        payloads: list[bytes] = []
        cur = urcs
        while len(cur) > 0:
            if cur[:len(head_tag)] == head_tag:
                cr = cur.find(b"\x0D")
                if cr == -1:
                    log.append("Error: no carriage returns after an URC")
                m = urc_regex.search(cur[:cr])
                if not m:
                    log.append("Error: failed to parse QIURC")
                length = m.group("currentrecvlength")
                cur = cur[cr:]
                if not (cur[0] == 13 and cur[1] == 10):
                    log.append("Sanity: the two bytes after the length were not a CRLF")
                cur = cur[2:]
                payload = cur[:int(length)]
                cur = cur[int(length):]
                if len(payload) != int(length):
                    log.append(f"Sanity: the packet extracted from the buffer was not {int(length)} bytes")
                    continue
                payloads.append(payload)
                if not (cur[0] == 13 and cur[1] == 10):
                    log.append("Sanity: the two characters after the payload were not a CRLF")
                cur = cur[2:]
            else:
                nl = cur.find(b"\n")
                if nl == -1:
                    log.append("Warning: no newline at end of unexpected URC")
                    cur = b""
                else:
                    if cur[:nl] != b"\x0D":
                        log.append("Warning: found unexpected URC")
                    cur = cur[nl + 1:]
        return payloads, log

    def file_upload(self, data: bytes, dst_path: str, filename: str) -> bool:
        self.rm.write('AT+QFUPL="' + dst_path + filename + '",' + str(len(data)))
        for i in range(len(data)):
            self.rm.ser.write(data[i:i + 1])           # putc(f.read(1))
        self.last_urcs = self.rm.wait_urc(5)
        return True


@pytest.fixture
def aeris(open_modem, strict_log):
    host, port = open_modem("ec2x")
    host.close()
    rm = Rmutils(port.path)
    yield AerisQuectel(rm), port
    rm.close()


def _free_udp_port() -> int:
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_aeris_udp_service_push_ends_with_crlf(aeris, emulator):
    """udp_listen(3030, 2 s, returnbytes): AT+QIOPEN=1,1,"UDP SERVICE","127.0.0.1",0,3030,1
    (direct push), AT+QISTATE=1,1 holding "UDP", then wait_urc collects whole LINES (bytes up to
    each LF) for 2 s; udp_urcs_to_payloads() takes each '+QIURC: "recv",<id>,<len>,"<ip>",<port>'
    line, the <len> bytes after its CR LF, then "consume the trailing CRLF".  Two datagrams come
    from a loopback sender.  A real module ends pushed data with CR LF: the Amazon FreeRTOS
    BG96 reference port (FreeRTOS/FreeRTOS-Cellular-Interface-Reference-Quectel-BG96,
    source/cellular_bg96_urc_handler.c, Cellular_BG96UrcDataCallback: suffixLength = 2, a URC is
    complete only with prefix + data + 2 bytes, and all of them are consumed), this SDK
    (aerismodsdk/modules/quectel.py udp_urcs_to_payloads, "consume the trailing CRLF", written
    for its BG96 "shoulder tap" datagrams) and the EC800E driver of _12.py all rely on it.  The
    emulator writes it too (docs/behaviour.md, "Direct push"): each datagram's bytes end a line,
    wait_urc hands both over, and the SDK gets both payloads with nothing left in its log.  (Was
    a strict xfail while the emulator wrote no CR LF after pushed data: the second datagram then
    ended no line and was lost.)"""
    a, _ = aeris
    import socket
    bound = _free_udp_port()
    emulator.router.add_listen(3030, "127.0.0.1", bound)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    sender = tx.getsockname()[1]

    def later():
        time.sleep(1.8)
        tx.sendto(b"tap-1:wake", ("127.0.0.1", bound))
        time.sleep(0.3)
        tx.sendto(b"tap-2:sleep", ("127.0.0.1", bound))
    import threading
    t = threading.Thread(target=later, daemon=True)
    t.start()
    try:
        urcs = a.udp_listen(3030, 2, returnbytes=True)
    finally:
        t.join()
        tx.close()
    assert a.my_ip
    urcs += a.rm.wait_urc(1, returnbytes=True)
    payloads, log = a.udp_urcs_to_payloads(urcs)
    assert urcs == (b'\r\n+QIURC: "recv",1,10,"127.0.0.1",%d\r\ntap-1:wake\r\n'
                    b'\r\n+QIURC: "recv",1,11,"127.0.0.1",%d\r\ntap-2:sleep\r\n' % (sender, sender))
    assert payloads == [b"tap-1:wake", b"tap-2:sleep"]
    assert log == []


def test_aeris_file_upload_byte_per_write_then_tls_with_it(aeris, emulator, leaves):
    """file_upload(): AT+QFUPL="<dst><name>",<size> (no timeout parameter), its first answer
    burst read ("CONNECT"), then the file written ONE BYTE PER write() with no pause, then
    wait_urc(5) for "+QFUPL: <size>,<checksum>" and OK.  The CA so uploaded through
    configure_mqtt()'s SSL lines (context 3: "cacert", "seclevel" 2, "sslversion" 4,
    "ciphersuite" 0xFFFF, "ignorelocaltime" 1) verifies a real server."""
    a, _ = aeris
    ca = leaves["pki"].ca.cert_pem
    assert a.create_packet_session()
    a.file_upload(ca, "UFS:", "aeris_ca.pem")
    assert a.last_urcs.startswith("\r\n+QFUPL: %d," % len(ca))
    assert a.last_urcs.endswith("\r\n\r\nOK\r\n")
    for line in ('AT+QSSLCFG="cacert",3,"UFS:aeris_ca.pem"', 'AT+QSSLCFG="seclevel",3,2',
                 'AT+QSSLCFG="sslversion",3,4', 'AT+QSSLCFG="ciphersuite",3,0xFFFF',
                 'AT+QSSLCFG="ignorelocaltime",3,1'):
        assert a.rm.write(line) == "\r\nOK\r\n"
    with TlsServer(leaves["cm"], mode="sink") as server:
        emulator.router.add_map(CM_HOST, CM_PORT, "127.0.0.1", server.port)
        assert a.rm.write(f'AT+QSSLOPEN=1,3,0,"{CM_HOST}",{CM_PORT},0', delay=1) == \
            "\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n"
        assert server.wait_handshake().handshake_done
