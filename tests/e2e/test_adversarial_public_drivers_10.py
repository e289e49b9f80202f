"""Adversarial tests: a tenth set of public host code that drives a Quectel EC2x-class module, replayed
through the pty with each driver's own line endings, waits and parsers against loopback peers.
(Earlier files: test_adversarial_public_drivers.py .. _9.py; see _8.py's docstring for the list.)
Neither driver below was replayed before: the first is Rust (the `atat` crate), the second a C
library written for an SPI UART bridge.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- jcmendez/quectel-bg9x-atat at 3d82284 (v0.1.1, an async no_std Rust driver for BG95/BG96 built
  on FactbirdHQ/atat 0.24.1, replayed at tag atat-v0.24.1): src/driver.rs (configure_ssl_context:
  cacert / clientcert / clientkey when given, then seclevel, sslversion, ciphersuite "0x" + four
  upper-case hex digits unquoted, sni, checkhost, ignorelocaltime, stopping at the first error;
  activate_context: AT+QIACT=<id>, on an error AT+QIACT? and "already active" accepted, else
  AT+QIACT? must report state 1; network_attach: AT+QNWINFO polled every 500 ms until its <act>
  contains eMTC / CAT-M1 / NBIoT / CAT-NB1 / EDGE / GPRS / GSM, then AT+CEREG? or AT+CGREG?;
  get_nitz_time: AT+QLTS=<mode>; ntp_sync: AT+QNTP=<ctx>,"<server>" then the +QNTP URC;
  upload_file: AT+QFUPL="<name>",<size>,<timeout> whose own wait (1 s) is expected to time out,
  the CONNECT URC, the data in 256-byte writes 20 ms apart, the +QFUPL URC's size compared;
  list_files (AT+QFLST, at most 5 entries), open_file (AT+QFOPEN="<name>"), read_file
  (AT+QFREAD=<fh>,<n<=256>, parse_read_file(): after "CONNECT ", the length, CR LF, then at most
  that many bytes of what the response holds), close_file, delete_file), src/commands/*.rs (the
  timeouts of each command: 300 ms for most, 1 s QFUPL/QFLST/QFOPEN, 2 s QFREAD; the URC enum:
  APP RDY, RDY, POWERED DOWN, +CME ERROR, +QNTP, +QMT*, CONNECT, +QFUPL, +QFWRITE), src/time.rs
  (parse_timestamp: 2- or 4-digit year, the zone read and ignored).  atat 0.24.1:
  atat_derive (a command is "AT" + name + "=" + comma-separated args + "\\r"; strings quoted, a
  trailing None omitted), atat/src/digest.rs AtDigester::digest() (leading spaces dropped; an
  "echo" = everything before the first CR LF; then the URC parsers -- CR LF, the token, then ':'
  up to CR LF or CR LF at once, streaming tags that wait on a prefix --; success = everything up
  to the first "\\r\\nOK\\r\\n" or "\\r\\nCONNECT\\r\\n", trimmed of ASCII white space; a prompt
  = the first '>' (or '@') followed by nothing but white space; errors "\\r\\n+CME ERROR: <n>",
  "\\r\\nERROR\\r\\n", NO CARRIER...; CR LF + garbage retried from the garbage), ingress.rs (digest
  after every read until nothing is swallowed; a response while one is pending is dropped),
  asynch/client.rs (20 ms cooldown between commands, the slot reset before each write, a
  command's response waited for its timeout), serde_at (a "+NAME:" prefix skipped, fields split
  at commas, more values than fields is an error).
- LooUQ/LooUQ_LTEmC at fb9131b (v2.2.0, 2021-09-23, the C driver of LooUQ's BG96 "LTEm1"
  board, its UART behind an NXP SC16IS741A SPI bridge with a 64-byte FIFO): src/ltemc-atcmd.c
  (atcmd_tryInvoke*: the command, then "\\r" in a second write; atcmd_awaitResult() runs the
  command's parser over the whole response buffer on every pass: defaultResultParser (OK\\r\\n;
  else "+CME ERROR:" -> its number; else "ERROR\\r\\n"; an explicit terminator is looked for
  alone), serviceResponseParser (the landmark, then <n> commas, strtol; 200 + a value below 99 --
  and nothing else: no ERROR), txDataPromptParser ("> " or "ERROR")), src/ltemc-network.c
  (ntwk_activatePdpContext(): "AT+QICSGP=%d,%d,\\"%s\\"\\r" and "AT+QIACT=%d\\r" through
  atcmd_invokeReuseLock(), which adds its own "\\r"; the QIACT parser wants "OK\\r\\n" two bytes
  after a "+QIACT: " that need not be there; ntwk_fetchActivePdpCntxts() parses each "+QIACT: "
  by strtol/strchr offsets), src/ltemc-tls.c tls_configure() (sslversion, ciphersuite "0X%X",
  ignorelocaltime, seclevel -- on the socket's data context as SSL context), src/ltemc-sckt.c
  (sckt_open(): AT+QIOPEN=<pdp>,<ctx>,"TCP"|"UDP",...,<lclPort> and AT+QSSLOPEN=<pdp>,<ctx>,"SSL",
  "<host>",<port>,<lclPort> -- "SSL" where the module wants a client id; sckt_send(): AT+QISEND=
  <ctx>,<n>, the prompt, the bytes, "SEND OK\\r\\n"; S_scktDoWork() / S_requestIrdData():
  AT+QIRD=<ctx>,1500 (AT+QSSLRECV for SSL) sent with the IOP in data mode, the header read at
  fixed offsets -- byte 7 must be ':' and the length starts at byte 9 --, then that many bytes to
  the application, the rest of the page dropped; sckt_close()), src/ltemc-iop.c
  IOP_rxParseForUrcEvents() (a chunk read from the FIFO is a URC only if a '+' is in its first 6
  bytes; for '+QIURC: "recv' / '+QSSLURC: "recv' the id is strtol()ed at the chunk start plus
  the length of that prefix -- two bytes short, on the "cv" -- so every recv flags context 0),
  tests/LTEmC-7-sockets/LTEmC-7-sockets.ino (the sketch: context 0, local port 0, a 64-character
  buffer, a NUL written at 25, strlen() - 1 = 63 bytes sent, ltem_doWork() in loop()).

Every host name dialled is routed to 127.0.0.1.  Where a driver assumes something the module does
not do, the test asserts what the module does and names the driver's fault.
"""
from __future__ import annotations

import datetime
import re
import time
from collections import deque

import pytest
import serial

from emulator.testing.peers import TcpServer, TlsServer
from emulator.testing.peers.sntp import SntpServer

SLOW = 3                     # drivers' short waits widened for a loaded 2-core machine


class Pty:
    """The UART: every write logged (tx), every byte read logged (rx); read_chunk() returns what
    one read of the device gives, capped (a FIFO's size, or 1 for byte-at-a-time)."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.tx = bytearray()
        self.rx = bytearray()
        self._held = bytearray()

    def close(self) -> None:
        self.ser.close()

    def write(self, data: bytes | str) -> None:
        raw = data.encode("latin-1") if isinstance(data, str) else data
        self.ser.write(raw)
        self.tx += raw

    def read_chunk(self, cap: int) -> bytes:
        if not self._held:
            n = self.ser.in_waiting
            if n:
                self._held += self.ser.read(n)
        out = bytes(self._held[:cap])
        del self._held[:cap]
        self.rx += out
        return out


# =================================================================================================
# atat 0.24.1 (AtDigester + Ingress + asynch::Client) and quectel-bg9x-atat 0.1.1
# =================================================================================================
URC_TOKENS = (b"APP RDY", b"RDY", b"POWERED DOWN", b"+CME ERROR", b"+QNTP", b"+QMTOPEN",
              b"+QMTSTAT", b"+QMTCONN", b"+QMTPUB", b"+QMTDISC", b"+QMTCLOSE", b"CONNECT",
              b"+QFUPL", b"+QFWRITE")
INCOMPLETE = "incomplete"


def _stag(data: bytes, tag: bytes):
    """nom streaming tag: the rest, INCOMPLETE (data a strict prefix of tag) or None."""
    if data.startswith(tag):
        return data[len(tag):]
    if len(data) < len(tag) and tag.startswith(data):
        return INCOMPLETE
    return None


def _urc_helper(buf: bytes, token: bytes):
    if buf.startswith(b"\r\n"):
        le = 2
    elif buf.startswith(b"\n"):
        le = 1
    else:
        return None
    rest = buf[le:]
    after = _stag(rest, token)                        # branch 1: token ':' ... CR LF
    if after is INCOMPLETE:
        return INCOMPLETE
    if after is not None:
        colon = _stag(after, b":")
        if colon is INCOMPLETE:
            return INCOMPLETE
        if colon is not None:
            end = colon.find(b"\r\n")
            if end >= 0:
                line = rest[:len(token) + 1 + end + 2]
                return line.strip(), le + len(line)
        crlf = _stag(after, b"\r\n")                  # branch 2: token CR LF
        if crlf is INCOMPLETE:
            return INCOMPLETE
        if crlf is not None:
            return token, le + len(token) + 2
    return None


def _urc_parse(buf: bytes):
    for token in URC_TOKENS:                          # alt(): the first non-error answer
        got = _urc_helper(buf, token)
        if got is not None:
            return got
    return None


def _numeric_error(buf: bytes, token: bytes):
    i = buf.find(token)
    if i < 0:
        return None
    j = i + len(token)
    while j < len(buf) and buf[j:j + 1] in (b" ", b"\t", b"\r", b"\n"):
        j += 1
    k = j
    while k < len(buf) and buf[k:k + 1].isdigit():
        k += 1
    if k == j:
        return None
    if buf[k:k + 2] == b"\r\n":
        return int(buf[j:k]), k + 2
    if buf[k:k + 1] == b"\n":
        return int(buf[j:k]), k + 1
    return None


def digest(buf: bytes, urc_parse=None, custom_success=None) -> tuple[str | None, object, int]:
    """AtDigester::digest(): (kind, value, swallowed); kind None = nothing (yet).  urc_parse:
    the crate's URC parser (default this driver's); custom_success: a crate's success hook
    ((response, swallowed), INCOMPLETE or None), tried after the URCs."""
    urc_parse = urc_parse or _urc_parse
    b = buf.lstrip(b" ")
    se = len(buf) - len(b)
    if len(b) >= 2:
        i = b.find(b"\r\n")
        if i > 0:
            b, se = b[i:], se + i                     # the "echo"
    urc = urc_parse(b)
    if urc is INCOMPLETE:
        return None, None, se
    if urc is not None:
        return "urc", urc[0], urc[1] + se
    custom = custom_success(b) if custom_success is not None else None
    if custom is INCOMPLETE:
        return None, None, se
    if custom is not None:
        return "resp", ("ok", custom[0]), custom[1] + se
    for tag in (b"\r\nOK\r\n", b"\r\nCONNECT\r\n"):
        i = b.find(tag)
        if i >= 0:
            return "resp", ("ok", b[:i].strip()), i + len(tag) + se
    for p in b">@":
        i = b.find(bytes([p]))
        if i >= 0 and b[i + 1:].strip(b" \t\r\n") == b"":
            return "prompt", p, len(b) + se
    for token, kind in ((b"\r\n+CME ERROR:", "cme"), (b"\r\n+CMS ERROR:", "cms"), (b"\r\nMODEM ERROR:", "cme")):
        got = _numeric_error(b, token)
        if got:
            return "resp", (kind, got[0]), got[1] + se
    for tag, kind in ((b"\r\nERROR\r\n", "error"), (b"\r\nCOMMAND NOT SUPPORT\r\n", "error"),
                      (b"\r\nNO CARRIER\r\n", "conn"), (b"\r\nBUSY\r\n", "conn"),
                      (b"\r\nNO ANSWER\r\n", "conn"), (b"\r\nNO DIALTONE\r\n", "conn"),
                      (b"\r\nNA\r\n", "cme")):
        i = b.find(tag)
        if i >= 0:
            return "resp", (kind, None), i + len(tag) + se
    if b.startswith(b"\r\n") and len(b) > 4:
        kind, value, n = digest(b[2:], urc_parse, custom_success)
        if kind is not None:
            return kind, value, se + 2 + n
    return None, None, se


def at_fields(resp: bytes) -> list[bytes]:
    """serde_at, enough for these responses: a '+NAME:' prefix skipped, comma-separated values,
    quotes stripped from strings."""
    s = resp.strip()
    if s.startswith(b"+") and b":" in s:
        s = s[s.index(b":") + 1:].strip()
    out, cur, quoted = [], bytearray(), False
    for c in s:
        if c == 0x22:
            quoted = not quoted
        elif c == 0x2C and not quoted:
            out.append(bytes(cur))
            cur = bytearray()
        else:
            cur.append(c)
    out.append(bytes(cur))
    return out


class AtatError(Exception):
    """atat::Error (Timeout, Parse, Error, CmeError...), which the driver maps to ModemError."""

    def __init__(self, kind: str, detail=None) -> None:
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class ModemError(Exception):
    def __init__(self, kind: str, detail=None) -> None:
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class Atat:
    """The Ingress task and the Client; the ingress runs whenever the client waits."""

    def __init__(self, pty: Pty, read_cap: int = 64) -> None:
        self.pty, self.read_cap = pty, read_cap
        self.buf = bytearray()
        self.urcs: deque[tuple[bytes, list[bytes]]] = deque()
        self.urc_failed: list[bytes] = []
        self.slot = None
        self.dropped: list[object] = []               # "a response is already pending"
        self.cooldown_until = 0.0

    def pump(self) -> bool:
        got = False
        while True:
            chunk = self.pty.read_chunk(self.read_cap)
            if not chunk:
                return got
            got = True
            self.buf += chunk
            self._advance()

    def _advance(self) -> None:
        while self.buf:
            kind, value, n = digest(bytes(self.buf))
            if kind == "urc":
                name = value.split(b":")[0]
                if name in URC_TOKENS:
                    self.urcs.append((name, at_fields(value) if b":" in value else []))
                else:
                    self.urc_failed.append(value)
            elif kind in ("resp", "prompt"):
                entry = value if kind == "resp" else ("prompt", value)
                if self.slot is None:
                    self.slot = entry
                else:
                    self.dropped.append(entry)
            if n == 0:
                return
            del self.buf[:n]

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.pump():
                time.sleep(0.002)

    def settle(self, quiet: float = 0.3) -> None:
        """The ingress task has digested what the module sent (it runs concurrently)."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            if self.pump():
                last = time.monotonic()
            time.sleep(0.002)

    def send(self, command: bytes | str, timeout_ms: int, expects: bool = True, scale: float = SLOW):
        """Client::send(): cooldown, slot reset, write, the response or Timeout (the command's
        timeout widened by `scale` for a loaded machine, unless the wait is meant to expire)."""
        while time.monotonic() < self.cooldown_until:
            self.pump()
            time.sleep(0.002)
        self.pump()
        self.slot = None
        self.pty.write(command)
        self.cooldown_until = time.monotonic() + 0.020
        if not expects:
            return None
        deadline = time.monotonic() + timeout_ms / 1000 * scale
        while self.slot is None:
            if time.monotonic() >= deadline:
                raise AtatError("Timeout")
            if not self.pump():
                time.sleep(0.002)
        kind, value = self.slot
        if kind == "ok":
            return value
        if kind == "prompt":
            return b""                                # Response::Prompt -> Ok(&[])
        raise AtatError(kind, value)

    def next_urc(self, deadline: float):
        while not self.urcs:
            if time.monotonic() >= deadline:
                return None
            if not self.pump():
                time.sleep(0.002)
        return self.urcs.popleft()


def parse_timestamp(s: str) -> int | None:
    """src/time.rs parse_timestamp(): the wall-clock fields as UTC, the zone ignored."""
    b = s.encode()
    if len(b) >= 5 and b[4:5] == b"/":
        year, off = int(b[:4]), 5
    elif len(b) >= 3 and b[2:3] == b"/":
        year, off = 2000 + int(b[:2]), 3
    else:
        return None
    if len(b) < off + 17 or b[off + 14:off + 15] not in (b"+", b"-"):
        return None
    when = datetime.datetime(year, int(b[off:off + 2]), int(b[off + 3:off + 5]), int(b[off + 6:off + 8]),
                             int(b[off + 9:off + 11]), int(b[off + 12:off + 14]), tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


class Bg9x:
    """quectel-bg9x-atat's Bg9xModem + MqttModem methods replayed over Atat."""

    def __init__(self, at: Atat) -> None:
        self.at = at

    def _send(self, command: str, timeout_ms: int):
        try:
            return self.at.send(command, timeout_ms)
        except AtatError as e:                        # From<atat::Error> for ModemError
            raise ModemError("NotResponding", e.kind) from None

    def set_echo(self, on: bool) -> None:
        self._send(f"ATE{int(on)}\r", 1000)

    def sim_ready(self) -> bool:
        code = at_fields(self._send("AT+CPIN?\r", 1000))[0]
        if b"READY" in code:
            return True
        if b"SIM PIN" in code or b"SIM PUK" in code:
            raise ModemError("SimError")
        return False

    def get_imei(self) -> bytes:
        return at_fields(self._send("AT+GSN\r", 300))[0][:15]

    def get_iccid(self) -> bytes:
        return at_fields(self._send("AT+QCCID\r", 300))[0][:20]

    def get_signal_strength(self) -> tuple:
        f = at_fields(self._send("AT+QCSQ\r", 300))
        return (f[0].decode(),) + tuple(int(x) for x in f[1:5])

    def configure_context(self, ctx: int, apn: str) -> None:
        self._send(f'AT+QICSGP={ctx},1,"{apn}","","",0\r', 300)

    def _pdp_info(self) -> list[bytes]:
        f = at_fields(self._send("AT+QIACT?\r", 300))
        if len(f) > 4:
            raise ModemError("NotResponding", "Parse")   # TrailingCharacters
        return f

    def activate_context(self, ctx: int) -> list[bytes]:
        try:
            self.at.send(f"AT+QIACT={ctx}\r", 150000)
        except AtatError:
            try:
                info = self._pdp_info()
            except ModemError:
                raise ModemError("NoContext") from None
            if int(info[0]) == ctx and int(info[1]) == 1:
                return info
            raise ModemError("NoContext") from None
        info = self._pdp_info()
        if int(info[1]) != 1:
            raise ModemError("NoContext")
        return info

    def configure_ssl_context(self, ctx: int, ca: str | None = None) -> None:
        if ca is not None:
            self._send(f'AT+QSSLCFG="cacert",{ctx},"{ca}"\r', 300)
        for name, value in (("seclevel", 1), ("sslversion", 3), ("ciphersuite", "0xFFFF"), ("sni", 1),
                            ("checkhost", 0), ("ignorelocaltime", 1)):
            self._send(f'AT+QSSLCFG="{name}",{ctx},{value}\r', 300)

    def network_attach(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            act = at_fields(self._send("AT+QNWINFO\r", 300))[0].decode()
            for keys, rat in ((("eMTC", "CAT-M1"), "Ltem"), (("NBIoT", "CAT-NB1"), "NbIot"),
                              (("EDGE",), "Edge"), (("GPRS",), "Gprs"), (("GSM",), "Gsm")):
                if any(k in act for k in keys):
                    return rat
            if time.monotonic() >= deadline:
                raise ModemError("OperationTimeout")
            self.at.run_for(0.5)

    def get_nitz_time(self, mode: int) -> int:
        text = at_fields(self._send(f"AT+QLTS={mode}\r", 300))[0].decode()
        ts = parse_timestamp(text)
        if ts is None:
            raise ModemError("TimeParseFailed", text)
        return ts

    def wait_urc(self, deadline: float, matcher):
        while True:
            urc = self.at.next_urc(deadline)
            if urc is None:
                raise ModemError("OperationTimeout")
            result = matcher(urc)
            if result is not None:
                return result

    def ntp_sync(self, ctx: int, server: str, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        self.at.urcs.clear()                          # drain_stale_urcs()
        self._send(f'AT+QNTP={ctx},"{server}"\r', 300)

        def match(urc):
            name, f = urc
            if name != b"+QNTP":
                return None
            if int(f[0]) != 0:
                raise ModemError("NtpRequestFailed", int(f[0]))
            ts = parse_timestamp(f[1].decode())
            if ts is None:
                raise ModemError("TimeParseFailed", f[1])
            return ts
        return self.wait_urc(deadline, match)

    def upload_file(self, name: str, data: bytes, timeout: float) -> bytes:
        self.at.urcs.clear()                          # drain_stale_urcs()
        secs = max(1, min(65535, int(timeout)))
        try:
            self.at.send(f'AT+QFUPL="{name}",{len(data)},{secs}\r', 1000, scale=1)
        except AtatError as e:
            if e.kind != "Timeout":
                raise ModemError("NotResponding", e.kind) from None
        deadline = time.monotonic() + timeout
        self.wait_urc(deadline, lambda u: True if u[0] == b"CONNECT" else None)
        for i in range(0, len(data), 256):
            self.at.send(data[i:i + 256], 0, expects=False)

        def done(urc):
            if urc[0] != b"+QFUPL":
                return None
            if int(urc[1][0]) != len(data):
                raise ModemError("FileTransferFailed")
            return urc[1][1][:4]
        return self.wait_urc(deadline, done)

    def list_files(self, pattern: str) -> list[tuple[str, int]]:
        try:
            resp = self.at.send(f'AT+QFLST="{pattern}"\r', 1000)
        except AtatError as e:
            raise ModemError("NotResponding", e.kind) from None
        entries = []
        for line in resp.split(b"\r\n") if resp else []:
            f = at_fields(line)
            entries.append((f[0].decode(), int(f[1])))
        if len(entries) > 5:
            raise ModemError("TooManyFiles")
        return entries

    def open_file(self, name: str) -> int:
        return int(at_fields(self._send(f'AT+QFOPEN="{name}"\r', 1000))[0])

    def read_file(self, fh: int, length: int = 256) -> bytes:
        resp = self._send(f"AT+QFREAD={fh},{min(length, 256)}\r", 2000)
        start = resp.find(b"CONNECT ")
        if start < 0:
            raise ModemError("NotResponding", "Parse")
        after = resp[start + 8:]
        crlf = after.find(b"\r\n")
        if crlf < 0:
            raise ModemError("NotResponding", "Parse")
        claimed = int(after[:crlf].strip())
        binary = after[crlf + 2:]
        return binary[:min(claimed, len(binary), 256)]

    def close_file(self, fh: int) -> None:
        self._send(f"AT+QFCLOSE={fh}\r", 1000)

    def delete_file(self, name: str) -> None:
        self._send(f'AT+QFDEL="{name}"\r', 300)


def bg9x(path: str, read_cap: int = 64) -> tuple[Pty, Atat, Bg9x]:
    pty = Pty(path)
    at = Atat(pty, read_cap)
    modem = Bg9x(at)
    return pty, at, modem


def test_atat_bring_up_identity_and_pdp_context_idempotent(driver_port, strict_log):
    """set_echo(false) with echo on ("ATE0\\r" echoed: the digester's "echo" is everything before
    the first CR LF), sim_ready (+CPIN: READY), IMEI (AT+GSN's bare number), ICCID (+QCCID),
    AT+QCSQ's five fields, configure_context (AT+QICSGP=1,1,"<apn>","","",0), activate_context
    (OK, then AT+QIACT? with exactly four fields: serde_at would refuse a fifth) and again --
    the module answers the second AT+QIACT=1 ERROR (already active, docs/behaviour.md), which
    the driver takes as "maybe already up" and confirms with AT+QIACT?."""
    path, _ = driver_port
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        assert pty.rx.startswith(b"ATE0\r\r\nOK\r\n")
        assert modem.sim_ready() is True
        imei, iccid = modem.get_imei(), modem.get_iccid()
        assert re.fullmatch(rb"\d{15}", imei) and re.fullmatch(rb"\d{19,20}", iccid)
        mode, rssi, rsrp, sinr, rsrq = modem.get_signal_strength()
        assert mode == "LTE" and rssi < 0 and rsrp < 0 and rsrq < 0
        modem.configure_context(1, "iot.example")
        first = modem.activate_context(1)
        assert first[:3] == [b"1", b"1", b"1"] and re.fullmatch(rb"\d+\.\d+\.\d+\.\d+", first[3])
        again = modem.activate_context(1)
        assert again == first
        assert pty.tx.count(b"AT+QIACT=1\r") == 2 and pty.tx.count(b"AT+QIACT?\r") == 2
        assert pty.rx.count(b"\r\nERROR\r\n") == 1                 # the second activation
        assert at.urc_failed == [] and at.dropped == []
    finally:
        pty.close()


def test_atat_network_attach_never_recognises_an_lte_cat1_act(driver_port, strict_log):
    """network_attach() polls AT+QNWINFO until <act> names a BG9x RAT (eMTC, CAT-M1, NBIoT,
    CAT-NB1, EDGE, GPRS, GSM); an EC2x camped on LTE answers "FDD LTE" (EC25 manual,
    AT+QNWINFO), which matches none, so the driver times out although the module is registered
    (+CEREG: 0,1) -- the driver's BG9x-only table, not the module."""
    path, _ = driver_port
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        with pytest.raises(ModemError) as err:
            modem.network_attach(timeout=1.2)
        assert err.value.kind == "OperationTimeout"
        polls = re.findall(rb'\r\n\+QNWINFO: "([^"]*)","(\d+)","([^"]*)",(\d+)\r\n\r\nOK\r\n', bytes(pty.rx))
        assert len(polls) >= 2 and all(p[0] in (b"FDD LTE", b"TDD LTE") for p in polls)
        assert pty.tx.count(b"AT+QNWINFO\r") == len(polls)
        assert b"AT+CEREG?" not in pty.tx                          # never reached
        assert at.send("AT+CEREG?\r", 300) == b"+CEREG: 0,1"     # registered all along
    finally:
        pty.close()


def test_atat_configure_ssl_context_stops_at_checkhost_on_an_ec2x(driver_port, pki, strict_log):
    """configure_ssl_context() with a CA file: cacert, seclevel 1, sslversion 3, ciphersuite
    written "0xFFFF" (lower-case x, unquoted -- serde_at writes Bytes raw), sni 1, then
    "checkhost" -- a BG95/BG96 option no EC2x document lists (docs/behaviour.md "BG96 options":
    not in ec2x.toml) -- ERROR, so the driver returns NotResponding and never sends
    ignorelocaltime.  What was set before stays: the read-back shows 0XFFFF, sni 1, seclevel 1."""
    path, _ = driver_port
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        modem.upload_file("ca.pem", pki.ca.cert_pem, timeout=10 * SLOW)
        with pytest.raises(ModemError) as err:
            modem.configure_ssl_context(2, ca="ca.pem")
        assert err.value.kind == "NotResponding" and err.value.detail == "error"
        sent = re.findall(rb"AT\+QSSLCFG=[^\r]*", bytes(pty.tx))
        assert sent == [b'AT+QSSLCFG="cacert",2,"ca.pem"', b'AT+QSSLCFG="seclevel",2,1',
                        b'AT+QSSLCFG="sslversion",2,3', b'AT+QSSLCFG="ciphersuite",2,0xFFFF',
                        b'AT+QSSLCFG="sni",2,1', b'AT+QSSLCFG="checkhost",2,0']
        for name, want in (("ciphersuite", b"0XFFFF"), ("sni", b"1"), ("seclevel", b"1"),
                           ("sslversion", b"3"), ("cacert", b'"UFS:ca.pem"')):
            got = at.send(f'AT+QSSLCFG="{name}",2\r', 300)
            assert got.startswith(f'+QSSLCFG: "{name}",2,'.encode()), got
            assert got.split(b",", 2)[2] in (want, want.replace(b"UFS:", b"")), got
    finally:
        pty.close()


def test_atat_upload_list_read_back_a_pem_loses_its_last_newline(driver_port, pki, strict_log):
    """upload_file() of a CA certificate (> 256 bytes, so several 256-byte writes 20 ms apart):
    AT+QFUPL's own 1 s wait times out as the driver expects (CONNECT is a URC to atat), the
    +QFUPL URC reports the full size and a 16-bit checksum that fits Bytes<4>; list_files("*")
    parses '+QFLST: "ca.pem",<size>'; open_file + read_file in 256-byte steps: each QFREAD
    answer is "CONNECT <n>\\r\\n<data>\\r\\nOK\\r\\n" (docs/behaviour.md) and atat trims the
    response's trailing white space, so the PEM's final "\\n" is lost (the driver's fault);
    the read after the end is +CME ERROR: 402, which atat takes as a URC (its enum has
    "+CME ERROR"), so the command itself times out (NotResponding); close_file OK."""
    path, _ = driver_port
    pem = pki.ca.cert_pem
    assert len(pem) > 512 and pem.endswith(b"\n")
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        checksum = modem.upload_file("ca.pem", pem, timeout=10 * SLOW)
        assert re.fullmatch(rb"[0-9a-fA-F]{1,4}", checksum)
        assert pty.tx.count(b'AT+QFUPL="ca.pem",%d,%d\r' % (len(pem), 10 * SLOW)) == 1
        at.settle()
        assert modem.list_files("*") == [("ca.pem", len(pem))]
        fh = modem.open_file("ca.pem")
        got = bytearray()
        while True:
            chunk = modem.read_file(fh, 256)
            got += chunk
            if len(chunk) < 256:
                break
        assert bytes(got) == pem.rstrip(b"\n")
        assert len(got) == len(pem) - 1
        with pytest.raises(ModemError) as err:
            modem.read_file(fh, 256)
        assert err.value.detail == "Timeout"
        assert (b"+CME ERROR", [b"402"]) in at.urcs
        modem.close_file(fh)
    finally:
        pty.close()


def test_atat_second_upload_of_a_name_is_407_swallowed_as_a_urc(driver_port, strict_log):
    """The driver's doc says upload_file "creates or overwrites the file itself"; the EC2x
    answers AT+QFUPL on an existing name +CME ERROR: 407 (file already exists).  atat parses
    "+CME ERROR" as a URC, so the QFUPL send times out as it does on success, and the driver then
    waits for a CONNECT that never comes (OperationTimeout).  The file keeps its first content;
    delete_file + upload_file is what works."""
    path, _ = driver_port
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        modem.upload_file("cfg.json", b'{"v":1}', timeout=5)
        at.settle()
        with pytest.raises(ModemError) as err:
            modem.upload_file("cfg.json", b'{"v":22}', timeout=2)
        assert err.value.kind == "OperationTimeout"
        assert pty.rx.endswith(b"\r\n+CME ERROR: 407\r\n")
        assert b'{"v":22}' not in pty.tx                          # no CONNECT, nothing sent
        at.settle()
        assert modem.list_files("cfg.json") == [("cfg.json", 7)]
        modem.delete_file("cfg.json")
        at.settle()
        modem.upload_file("cfg.json", b'{"v":22}', timeout=5)
        at.settle()
        assert modem.list_files("*") == [("cfg.json", 8)]
        with pytest.raises(ModemError):                           # 405 -> a URC -> timeout
            modem.delete_file("nothing.here")
        assert pty.rx.endswith(b"\r\n+CME ERROR: 405\r\n")
    finally:
        pty.close()


def test_atat_list_files_refuses_a_sixth_entry(driver_port, strict_log):
    """list_files() keeps at most five entries (heapless Vec<_, 5>): with six files on UFS the
    module lists all six (one "+QFLST: " line each) and the driver reports TooManyFiles; a
    pattern naming one file still works."""
    path, _ = driver_port
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        for i in range(6):
            modem.upload_file(f"f{i}.bin", bytes([i]) * (i + 1), timeout=5)
            at.settle()
        with pytest.raises(ModemError) as err:
            modem.list_files("*")
        assert err.value.kind == "TooManyFiles"
        listing = re.findall(rb'\+QFLST: "(f\d\.bin)",(\d+)\r\n', bytes(pty.rx))
        assert sorted(listing) == [(b"f%d.bin" % i, b"%d" % (i + 1)) for i in range(6)]
        assert modem.list_files("f3.bin") == [("f3.bin", 4)]
    finally:
        pty.close()


def test_atat_read_file_byte_at_a_time_sees_a_prompt_in_html(driver_port, strict_log):
    """With the ingress fed one byte per read (a UART read returning as soon as a byte is
    there), AT+QFREAD of "<p>x</p>..." makes the digester's prompt rule fire at the first '>'
    (the buffer then ends in '>'): the client gets Response::Prompt = Ok(&[]), parse_read_file
    finds no "CONNECT " and fails, and the real "\\r\\nOK\\r\\n" is dropped as "already
    pending" -- the driver's (atat's) fault: the module sent "CONNECT <n>", the bytes and OK,
    which a read of the same file with whole-chunk reads gets intact."""
    path, _ = driver_port
    page = b"<p>x</p>\r\n<b>bold</b> tail"
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        modem.upload_file("index.html", page, timeout=5)
        at.settle()
        fh = modem.open_file("index.html")
        at.read_cap = 1
        with pytest.raises(ModemError) as err:
            modem.read_file(fh, 256)
        assert err.value.detail == "Parse"
        at.settle()
        assert ("ok", b"") in at.dropped                         # the OK after the data
        assert pty.rx.endswith(b"\r\nCONNECT %d\r\n" % len(page) + page + b"\r\nOK\r\n")
        modem.close_file(fh)
        at.read_cap = 4096
        fh = modem.open_file("index.html")
        assert modem.read_file(fh, 256) == page
        modem.close_file(fh)
    finally:
        pty.close()


def test_atat_nitz_and_ntp_times_are_read_as_utc(driver_port, emulator, strict_log):
    """get_nitz_time(CurrentGmtTime): AT+QLTS=1 -> +QLTS: "<yyyy/MM/dd,hh:mm:ss±zz,dst>" (a
    4-digit year, as the driver's CHANGELOG found on hardware), parsed; ntp_sync(): AT+QNTP=1,
    "<server>" -> OK, then +QNTP: 0,"<local time ±zz>" as a URC (docs/behaviour.md: local time,
    the zone in quarters); parse_timestamp() ignores the zone, so the driver's Unix time is the
    NTP time shifted by the zone (+8 h here) -- the driver's fault, not the module's."""
    path, _ = driver_port
    ntp_date = datetime.datetime(2019, 6, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)
    pty, at, modem = bg9x(path)
    try:
        modem.set_echo(False)
        before = time.time()
        gmt = modem.get_nitz_time(1)
        assert abs(gmt - before) < 120, (gmt, before)
        modem.configure_context(1, "iot.example")
        modem.activate_context(1)
        with SntpServer(ntp_date) as ntp:
            emulator.router.add_map("time.example", 123, "127.0.0.1", ntp.port)
            ts = modem.ntp_sync(1, "time.example", timeout=10 * SLOW)
        m = re.search(rb'\r\n\+QNTP: 0,"(\d{4}/\d\d/\d\d,\d\d:\d\d:\d\d)([+-]\d\d)"\r\n', bytes(pty.rx))
        assert m, bytes(pty.rx[-200:])
        zone_s = int(m.group(2)) * 15 * 60
        assert 0 <= ts - int(ntp_date.timestamp()) - zone_s < 10
        assert zone_s == 8 * 3600
    finally:
        pty.close()


# =================================================================================================
# LooUQ LTEmC v2.2.0 (fb9131b)
# =================================================================================================
PENDING, SUCCESS, INTERNAL_ERROR, TIMEOUT = "pending", 200, 500, 408


def strtol(s: bytes) -> tuple[int, int]:
    """C strtol(s, &end, 10): (value, end offset); (0, 0) when no digits."""
    i = 0
    while i < len(s) and s[i:i + 1] in b" \t\r\n\v\f":
        i += 1
    j = i + 1 if s[i:i + 1] in (b"+", b"-") else i
    k = j
    while k < len(s) and s[k:k + 1].isdigit():
        k += 1
    if k == j:
        return 0, 0
    return int(s[i:k]), k


def cstr(b: bytes | bytearray) -> bytes:
    """What strstr() sees of a buffer: up to its first NUL."""
    b = bytes(b)
    return b[:b.index(0)] if 0 in b else b


def default_result_parser(resp: bytes, preamble: bytes = b"", gap: int = 0, terminator: bytes | None = None):
    resp = cstr(resp)
    start = 0
    if preamble:
        at = resp.find(preamble)
        start = at + len(preamble) if at >= 0 else 0
    if terminator is not None:
        t = resp.find(terminator, start)
    else:
        t = resp.find(b"OK\r\n", start)
        if t < 0:
            c = resp.find(b"+CME ERROR:", start)
            if c >= 0:
                return strtol(resp[c + 11:])[0]
            if resp.find(b"ERROR\r\n", start) >= 0 or resp.find(b"FAIL\r\n", start) >= 0:
                return INTERNAL_ERROR
    if t >= 0:
        return SUCCESS if start + gap <= t else INTERNAL_ERROR
    return PENDING


def service_response_parser(resp: bytes, landmark: bytes, index: int):
    resp = cstr(resp)
    at = resp.find(landmark)
    if at < 0:
        return PENDING
    nxt = at + len(landmark)
    for _ in range(index):
        comma = resp.find(b",", nxt)
        nxt = (comma if comma >= 0 else len(resp)) + 1
    value = strtol(resp[nxt:])[0]
    return SUCCESS + value if value < 99 else value


def prompt_parser(resp: bytes):
    resp = cstr(resp)
    if b"> " in resp:
        return SUCCESS
    if b"ERROR" in resp:
        return INTERNAL_ERROR
    return PENDING


class Ltem:
    """atcmd + IOP (the SC16IS741A's 64-byte FIFO read per interrupt) + sckt + ntwk + tls."""

    FIFO = 64

    def __init__(self, pty: Pty) -> None:
        self.pty = pty
        self.core = bytearray()                       # the core (command) RX buffer
        self.stream: int | None = None                # IOP data mode: the IRD's context
        self.sbuf = bytearray()
        self.ird_remaining = -1
        self.ird_at = 0.0
        self.open: dict[int, dict] = {}               # scktMap + streamPeers
        self.locked = False
        self.received: dict[int, bytearray] = {}      # what each recv callback got
        self.faults: list[str] = []
        self.contexts: list[tuple[int, int, bytes]] = []

    # -- IOP ----------------------------------------------------------------------------------------
    def isr(self) -> bool:
        chunk = self.pty.read_chunk(self.FIFO)
        if not chunk:
            return False
        if self.stream is not None:
            self.sbuf += chunk
            return True
        self.core += chunk
        plus = chunk[:6].find(b"+")
        if plus >= 0:
            urc = chunk[plus:]
            for prefix in (b'+QSSLURC: "recv', b'+QIURC: "recv'):
                if self.open and urc.startswith(prefix):
                    ctx = strtol(chunk[len(prefix):])[0]          # from the chunk start
                    if ctx not in self.open:
                        self.faults.append(f"streamPeers[{ctx}] is NULL")
                    else:
                        self.open[ctx]["pending"] = True
                    del self.core[len(self.core) - len(chunk):]    # the chunk is dropped
                    break
        return True

    def _pump(self) -> None:
        if not self.isr():
            time.sleep(0.001)

    # -- atcmd --------------------------------------------------------------------------------------
    def invoke(self, command: str) -> None:
        self.core.clear()
        self.locked = True
        self.pty.write(command)
        self.pty.write("\r")

    def await_result(self, parser, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            self.isr()
            result = parser(bytes(self.core))
            if result != PENDING:
                self.locked = False
                return result
            if time.monotonic() >= deadline:
                self.locked = False
                return TIMEOUT
            time.sleep(0.001)

    def command(self, command: str, parser=default_result_parser, timeout: float = 0.8 * SLOW):
        self.invoke(command)
        return self.await_result(parser, timeout)

    # -- qbg / ntwk / tls ---------------------------------------------------------------------------
    def start(self) -> bool:
        return self.command("ATE0") == SUCCESS

    def fetch_active_pdp_contexts(self) -> int:
        result = self.command("AT+QIACT?", lambda r: default_result_parser(r, b"+QIACT: ", 2, b"OK\r\n"))
        self.contexts = []
        if result != SUCCESS:
            return 0xFF
        resp = cstr(self.core)
        at = resp.find(b"+QIACT: ")
        while at >= 0 and len(resp) > 8:
            ctx, end = strtol(resp[at + 8:])
            p = at + 8 + end
            p = resp.find(b",", p + 1)                                  # skip context_state
            proto, end = strtol(resp[p + 1:])
            p = p + 1 + end
            ip_end = resp.find(b'"', p + 2)
            self.contexts.append((ctx, proto, resp[p + 2:ip_end]))
            at = resp.find(b"+QIACT: ", at + 8)
        return len(self.contexts)

    def activate_pdp_context(self, ctx: int, proto: int, apn: str) -> bool:
        if self.contexts:
            return True
        if self.command(f'AT+QICSGP={ctx},{proto},"{apn}"\r') == SUCCESS:
            if self.command(f"AT+QIACT={ctx}\r", lambda r: default_result_parser(r, b"+QIACT: ", 2, b"OK\r\n"),
                            timeout=10 * SLOW) == SUCCESS:
                self.fetch_active_pdp_contexts()
        return bool(self.contexts)

    def tls_configure(self, ctx: int, version: int, cipher: int, expiration: int, seclevel: int) -> bool:
        for command in (f'AT+QSSLCFG="sslversion",{ctx},{version}', f'AT+QSSLCFG="ciphersuite",{ctx},0X{cipher:X}',
                        f'AT+QSSLCFG="ignorelocaltime",{ctx},{expiration}', f'AT+QSSLCFG="seclevel",{ctx},{seclevel}'):
            if self.command(command) != SUCCESS:
                return False
        return True

    # -- sckt ---------------------------------------------------------------------------------------
    def sckt_open(self, ctx: int, protocol: str, host: str, port: int, timeout: float = 60.0):
        if protocol == "SSL":
            command = f'AT+QSSLOPEN=1,{ctx},"SSL","{host}",{port},0'
            parser = lambda r: service_response_parser(r, b"+QSSLOPEN: ", 1)   # noqa: E731
        else:
            command = f'AT+QIOPEN=1,{ctx},"{protocol}","{host}",{port},0'
            parser = lambda r: service_response_parser(r, b"+QIOPEN: ", 1)     # noqa: E731
        result = self.command(command, parser, timeout)
        if result == SUCCESS:
            self.open[ctx] = {"protocol": protocol, "pending": False}
            self.received.setdefault(ctx, bytearray())
        return result

    def sckt_send(self, ctx: int, data: bytes):
        self.invoke(f"AT+QISEND={ctx},{len(data)}")
        result = self.await_result(prompt_parser, 0.8 * SLOW)
        if result != SUCCESS:
            return result
        for i in range(0, len(data), self.FIFO):
            self.pty.write(data[i:i + self.FIFO])
        return self.await_result(lambda r: default_result_parser(r, terminator=b"SEND OK\r\n"), 0.8 * SLOW)

    def sckt_close(self, ctx: int):
        proto = self.open[ctx]["protocol"]
        result = self.command(f"AT+QSSLCLOSE={ctx}" if proto == "SSL" else f"AT+QICLOSE={ctx}", timeout=10 * SLOW)
        if result == SUCCESS:
            del self.open[ctx]
        return result

    def do_work(self) -> None:
        """ltem_doWork() -> S_scktDoWork()."""
        self.isr()
        if self.stream is not None:
            if self.ird_remaining == -1 and len(self.sbuf) > 9:
                if self.sbuf[7:8] != b":":
                    self.faults.append("ASSERT: IRD header byte 7 is not ':'")
                    self.stream, self.locked = None, False
                    return
                self.ird_remaining, end = strtol(bytes(self.sbuf[9:]))
                del self.sbuf[:9 + end + 2]
            if self.ird_remaining > 0 and self.sbuf:
                take = min(len(self.sbuf), self.ird_remaining)
                self.received[self.stream] += self.sbuf[:take]
                self.ird_remaining -= take
                self.sbuf.clear()                     # page delivered: reset
            if self.ird_remaining == 0:
                self.open[self.stream]["pending"] = False
                self.stream, self.locked = None, False
                self.sbuf.clear()
            elif time.monotonic() - self.ird_at > 10:
                self.faults.append("IRD timeout")
                self.stream, self.locked = None, False
            return
        if not self.locked:
            for ctx in sorted(self.open):
                if self.open[ctx]["pending"]:
                    self.stream, self.ird_remaining, self.ird_at = ctx, -1, time.monotonic()
                    self.sbuf.clear()
                    self.locked = True
                    verb = "AT+QSSLRECV" if self.open[ctx]["protocol"] == "SSL" else "AT+QIRD"
                    self.pty.write(f"{verb}={ctx},1500")
                    self.pty.write("\r")
                    return

    def loop_until(self, condition, timeout: float = 10 * SLOW) -> None:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            self.do_work()
            time.sleep(0.001)


def ltem(path: str) -> tuple[Pty, Ltem]:
    pty = Pty(path)
    return pty, Ltem(pty)


SKETCH = bytearray(b"01234567890ABCDEFGHIJKLMNOPQRSTUVWXYZ0abcdefghijklmnopqrstuvwxyz")
SKETCH[25] = 0
SKETCH = bytes(SKETCH[:len(SKETCH) - 1])       # strlen() - 1 bytes, the NUL at 25 included


def delayed_echo(conn) -> None:
    """An echo server that answers 0.5 s later (the sketch's server is across a network), so
    that '+QIURC: "recv"' reaches the FIFO on its own."""
    conn.sock.settimeout(60)
    while True:
        data = conn.sock.recv(65536)
        if not data:
            break
        conn.add(data)
        time.sleep(0.5)
        conn.sock.sendall(data)
    conn.eof.set()
    conn.close()


def test_ltemc_pdp_activation_with_doubled_cr_then_tcp_echo_through_ird(driver_port, emulator, strict_log):
    """The sketch LTEmC-7-sockets: ltem_start() (ATE0 with echo on), ntwk_fetchActivePdpCntxts()
    (none active: "\\r\\nOK\\r\\n" passes the 2-byte gap), ntwk_activatePdpContext(1, IPV4, ""):
    "AT+QICSGP=1,1,\\"\\"\\r" + "\\r" and "AT+QIACT=1\\r" + "\\r" -- each second CR an empty
    line the module ignores (no extra result code) --, the "+QIACT: " list parsed by offsets;
    sckt_open(TCP, context 0, local port 0) -> OK then +QIOPEN: 0,0 (200); sckt_send() of the
    sketch's 63 bytes with a NUL at 25, in 64-byte FIFO writes after "> ", "SEND OK"; the echo's
    '+QIURC: "recv",0' alone in a FIFO read flags context 0; doWork's AT+QIRD=0,1500 answer has
    ':' at byte 7 and the length at byte 9, and exactly the 63 bytes reach the callback; then
    sckt_close() (AT+QICLOSE=0) OK and the peer sees the FIN."""
    path, _ = driver_port
    with TcpServer(behave=delayed_echo) as server:
        emulator.router.add_map("echo.loouq.example", 7001, "127.0.0.1", server.port)
        pty, lt = ltem(path)
        try:
            assert lt.start()
            assert lt.fetch_active_pdp_contexts() == 0
            assert lt.activate_pdp_context(1, 1, "")
            assert len(lt.contexts) == 1 and lt.contexts[0][:2] == (1, 1)
            assert re.fullmatch(rb"\d+\.\d+\.\d+\.\d+", lt.contexts[0][2])
            assert b'AT+QICSGP=1,1,""\r\r' in pty.tx and b"AT+QIACT=1\r\r" in pty.tx
            assert re.fullmatch(rb'ATE0\r\r\nOK\r\n(\r\nOK\r\n){3}\r\n\+QIACT: 1,1,1,"[\d.]+"\r\n\r\nOK\r\n',
                                bytes(pty.rx))                # no answer to either lone CR
            assert lt.sckt_open(0, "TCP", "echo.loouq.example", 7001, timeout=10 * SLOW) == SUCCESS
            assert b'AT+QIOPEN=1,0,"TCP","echo.loouq.example",7001,0\r' in pty.tx
            assert lt.sckt_send(0, SKETCH) == SUCCESS
            conn = server.wait_connection()
            assert conn.wait_received(len(SKETCH)) == SKETCH
            lt.loop_until(lambda: len(lt.received[0]) >= len(SKETCH))
            assert bytes(lt.received[0]) == SKETCH
            # The driver is done with the 63 bytes; the answer's final OK is a write of its own,
            # which a loaded machine may deliver after them: read on until it is there.
            answer = rb'\r\n\+QIRD: 63\r\n' + re.escape(SKETCH) + rb"\r\n\r\nOK\r\n"
            lt.loop_until(lambda: re.search(answer, bytes(pty.rx)))
            assert pty.tx.count(b"AT+QIRD=0,1500\r") == 1
            assert re.search(answer, bytes(pty.rx))
            assert lt.faults == []
            assert lt.sckt_close(0) == SUCCESS
            assert conn.eof.wait(10 * SLOW)
        finally:
            pty.close()


def test_ltemc_recv_on_context_1_is_flagged_on_context_0(driver_port, emulator, strict_log):
    """Two TCP sockets (contexts 0 and 1).  The echo for context 1 comes as
    '+QIURC: "recv",1'; IOP_rxParseForUrcEvents() strtol()s two bytes too early ("cv\\",1"), so
    context 0 is flagged: doWork asks AT+QIRD=0,1500, the module answers "+QIRD: 0" (nothing
    for 0) and the driver is done -- context 1's bytes stay in the module, which reports no
    second "recv" while they wait (buffer mode), and AT+QIRD=1,1500 typed afterwards gets them
    whole.  The driver's fault."""
    path, _ = driver_port
    with TcpServer("sink") as quiet, TcpServer(behave=delayed_echo) as server:
        emulator.router.add_map("quiet.loouq.example", 7000, "127.0.0.1", quiet.port)
        emulator.router.add_map("echo.loouq.example", 7001, "127.0.0.1", server.port)
        pty, lt = ltem(path)
        try:
            assert lt.start()
            lt.fetch_active_pdp_contexts()
            assert lt.activate_pdp_context(1, 1, "")
            assert lt.sckt_open(0, "TCP", "quiet.loouq.example", 7000, timeout=10 * SLOW) == SUCCESS
            assert lt.sckt_open(1, "TCP", "echo.loouq.example", 7001, timeout=10 * SLOW) == SUCCESS
            assert lt.sckt_send(1, b"for context one") == SUCCESS
            lt.loop_until(lambda: b"+QIRD: 0\r\n" in pty.rx)
            lt.loop_until(lambda: lt.stream is None and not lt.locked, 5)
            assert b'\r\n+QIURC: "recv",1\r\n' in pty.rx
            assert pty.tx.count(b"AT+QIRD=0,1500\r") == 1 and b"AT+QIRD=1" not in pty.tx
            assert lt.received == {0: bytearray(), 1: bytearray()}
            lt.loop_until(lambda: False, 1.0)                    # nothing more happens
            assert pty.rx.count(b'+QIURC: "recv"') == 1
            assert lt.command("AT+QIRD=1,1500", lambda r: default_result_parser(r)) == SUCCESS
            assert bytes(lt.core) == b"\r\n+QIRD: 15\r\nfor context one\r\n\r\nOK\r\n"
            assert lt.sckt_close(1) == SUCCESS and lt.sckt_close(0) == SUCCESS
        finally:
            pty.close()


def test_ltemc_ssl_open_with_clientid_ssl_is_error_the_driver_waits_on(driver_port, emulator, pki, strict_log):
    """tls_configure(0, TLS 1.2, 0XFFFF, ignore expiry, no authentication): four AT+QSSLCFG on
    SSL context 0, each OK.  sckt_open(SSL) sends AT+QSSLOPEN=1,0,"SSL","<host>",443,0 -- a
    string where the note's syntax has <clientID> (0-11) -- and the module answers ERROR at once
    and dials nothing; the driver's parser only looks for "+QSSLOPEN: ", so it would wait out
    its 60 s (here: still pending after 2 s).  With the client id the note wants, the same open
    succeeds, but sckt_send() then writes AT+QISEND=0,<n> for the SSL socket -- ERROR (no TCP
    connectID 0), which the prompt parser returns as an error -- and the server's data, flagged
    by '+QSSLURC: "recv",0', is asked for with AT+QSSLRECV=0,1500 whose header has 'R', not ':',
    at byte 7 (the driver ASSERTs)."""
    path, _ = driver_port

    def handler(conn):                     # echo 0.5 s later: the URC gets a FIFO read of its own
        data = conn.recv(4, timeout=30)
        time.sleep(0.5)
        conn.sendall(data)
        conn.recv(1, timeout=60)

    with TlsServer(pki.server, handler=handler) as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.address[1])
        pty, lt = ltem(path)
        try:
            assert lt.start()
            lt.fetch_active_pdp_contexts()
            assert lt.activate_pdp_context(1, 1, "")
            assert lt.tls_configure(0, 3, 0xFFFF, 1, 0)
            assert re.findall(rb'AT\+QSSLCFG="(\w+)",0,(\w+)\r', bytes(pty.tx)) == [
                (b"sslversion", b"3"), (b"ciphersuite", b"0XFFFF"), (b"ignorelocaltime", b"1"),
                (b"seclevel", b"0")]
            assert lt.sckt_open(0, "SSL", "www.iottest.work", 443, timeout=2.0) == TIMEOUT
            assert pty.rx.endswith(b"\r\nERROR\r\n") and b"+QSSLOPEN" not in pty.rx
            assert server.connections == []                           # nothing dialled
            assert lt.command('AT+QSSLOPEN=1,0,0,"www.iottest.work",443,0',
                              lambda r: service_response_parser(r, b"+QSSLOPEN: ", 1), 20 * SLOW) == SUCCESS
            lt.open[0] = {"protocol": "SSL", "pending": False}
            lt.received[0] = bytearray()
            assert lt.sckt_send(0, b"ping") == INTERNAL_ERROR
            assert pty.rx.endswith(b"\r\n+QSSLOPEN: 0,0\r\n\r\nERROR\r\n")   # echo off: the QISEND's ERROR
            assert server.wait_handshake(timeout=10 * SLOW).version
            assert lt.command("AT+QSSLSEND=0,4", prompt_parser) == SUCCESS
            pty.write(b"ping")
            lt.loop_until(lambda: bool(lt.faults))
            assert lt.faults == ["ASSERT: IRD header byte 7 is not ':'"]
            deadline = time.monotonic() + 10 * SLOW                  # the driver halted: read on
            while not pty.rx.endswith(b"\r\nOK\r\n") and time.monotonic() < deadline:
                if not pty.read_chunk(64):
                    time.sleep(0.01)
            assert pty.tx.endswith(b"AT+QSSLRECV=0,1500\r")
            assert lt.received[0] == b""
            assert server.wait_received(4, timeout=10 * SLOW) == b"ping"
            assert re.search(rb"\r\n\+QSSLRECV: 4\r\nping\r\n\r\nOK\r\n$", bytes(pty.rx))
        finally:
            pty.close()


def test_ltemc_send_over_1460_is_refused_and_a_2000_byte_reply_stalls_at_1500(driver_port, emulator, strict_log):
    """sckt_send() has no size check: AT+QISEND=0,1461 is ERROR (the EC2x's limit is 1460, TCP/IP
    manual AT+QISEND), which txDataPromptParser returns as an error, and nothing is sent; 1460
    goes through.  The server then answers 2000 bytes at once: one '+QIURC: "recv",0', the
    driver's AT+QIRD=0,1500 gets 1500, and it clears dataPending -- no second read; the module
    reports "recv" again only once a read has emptied its buffer (docs/behaviour.md), so 500
    bytes wait in the module, where a typed AT+QIRD=0,1500 finds them."""
    path, _ = driver_port
    reply = bytes((i * 13 + 7) % 256 for i in range(2000))

    def behave(conn):
        conn.sock.settimeout(60)
        got = b""
        while len(got) < 1460:
            data = conn.sock.recv(65536)
            if not data:
                return
            got += data
            conn.add(data)
        time.sleep(0.5)
        conn.sock.sendall(reply)
        conn.sock.recv(1)

    with TcpServer(behave=behave) as server:
        emulator.router.add_map("bulk.loouq.example", 7002, "127.0.0.1", server.port)
        pty, lt = ltem(path)
        try:
            assert lt.start()
            lt.fetch_active_pdp_contexts()
            assert lt.activate_pdp_context(1, 1, "")
            assert lt.sckt_open(0, "TCP", "bulk.loouq.example", 7002, timeout=10 * SLOW) == SUCCESS
            assert lt.sckt_send(0, b"x" * 1461) == INTERNAL_ERROR
            assert pty.rx.endswith(b"\r\nERROR\r\n") and b"> " not in pty.rx[-20:]
            block = bytes(range(256)) * 5 + bytes(180)
            assert lt.sckt_send(0, block) == SUCCESS
            assert server.wait_connection().wait_received(1460) == block
            lt.loop_until(lambda: len(lt.received[0]) >= 1500)
            lt.loop_until(lambda: False, 1.5)                       # doWork has nothing to do
            assert bytes(lt.received[0]) == reply[:1500]
            assert pty.tx.count(b"AT+QIRD=0,1500\r") == 1 and pty.rx.count(b'+QIURC: "recv",0') == 1
            pty.write("AT+QIRD=0,1500\r")                            # typed, read raw (NULs)
            want = b"\r\n+QIRD: 500\r\n" + reply[1500:] + b"\r\n\r\nOK\r\n"
            got = bytearray()
            deadline = time.monotonic() + 10 * SLOW
            while len(got) < len(want) and time.monotonic() < deadline:
                chunk = pty.read_chunk(4096)
                got += chunk
                if not chunk:
                    time.sleep(0.01)
            assert bytes(got) == want
        finally:
            pty.close()
