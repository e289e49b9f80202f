"""Adversarial tests: a thirty-sixth set of public host code pointed at the pty -- a Rust driver
built on the `atat` crate that drives the EC2x-family SSL and file commands (AT+QFUPL of a CA,
AT+QFLST, AT+QSSLCFG "cacert" / "seclevel" / "sslversion" / "ciphersuite" written 0xFFFF / "sni" /
"ignorelocaltime", AT+QSSLOPEN in buffer mode with the +QSSLOPEN URC polled off a pub-sub channel,
AT+QSSLSEND in 256-byte pieces written 100 ms after the command WITHOUT waiting for the previous
piece's SEND OK, AT+QSSLRECV framed by a length-prefix digester hook, AT+QSSLCLOSE=<id>,<timeout>)
and an RTOS's EC200T 4G adapter that drives the TCP(IP) commands in TRANSPARENT access mode
(AT+QIOPEN=1,<id>,"TCP",...,0,2 -> CONNECT, unframed data, "+++" written with no guard time at
all), replayed through the pty with their own line endings, timeouts, read chunking, threads and
parsers against loopback OpenSSL (Python ssl) and TCP peers.  (A search of tests/ for
"ModemManagerRs", "arthurbabu", "modem-manager-rs", "ssl_recv_digest_hook", "socket_poll_closed",
"xiuos", "XUOS", "ec200t", "EntmRecv" and "AtCmdConfigAndCheck" finds nothing:
test_adversarial_public_drivers_10.py replayed a different crate -- jcmendez/quectel-bg9x-atat
0.1.1 -- on the same atat 0.24.1.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- arthurbabu/ModemManagerRs (crate "quectel-bg9x-eh-driver" 0.4.2, MIT, a BG95/BG96/EG916U
  embedded-hal driver on atat 0.24.1; the EG916U and the EC2x share the SSL command set), at
  bdcf51a8da74 (src/cellular/socket.rs, src/cellular/digest.rs), 39e56df1968e
  (src/quectel_atat/mod.rs), 41110bbd7bda (src/quectel_atat/urc.rs, types.rs), 5c6766275599
  (src/tcp_std.rs).  What the model keeps:
  * atat 0.24.1's AtDigester (tests/e2e/test_adversarial_public_drivers_10.py's model of it:
    leading spaces dropped, an "echo" is everything before the first CR LF, URCs, success up to
    "\\r\\nOK\\r\\n", a prompt = a '>' followed by nothing but white space, the errors, CR LF +
    garbage retried) with this crate's two additions: its URC set (APP RDY, RDY, +UMWI,
    CONNECT, +QFUPL, +QFWRITE, +QNTP, +QMT*, +QSSLOPEN, +QSSLURC, POWERED DOWN, +CME ERROR) and
    `.with_custom_success(ssl_recv_digest_hook)` (digest.rs recv_digest_frame(): tried after the
    URC parsers and before the generic success parser; "+QSSLRECV: " found anywhere, the length
    up to the next CR LF -- no CR LF yet is Incomplete, a non-number is NoMatch --, exactly
    <len> payload bytes, then "OK\\r\\n" searched only AFTER the payload; the response handed on
    is header + length + payload).  The blocking Client (20 ms cooldown, the response slot
    reset before each write, a command's own timeout; EXPECTS_RESPONSE_CODE false: written and
    not waited for).  URCs go to a pub-sub channel: a subscriber sees only what is published
    after it subscribed.
  * SslOpen "AT+QSSLOPEN=1,<ssl_ctx>,<id>,\\"<host>\\",<port>,0\\r" (500 ms), the subscription taken
    BEFORE it and kept for the socket's life; then every 200 ms ONE message taken off it, a
    "+QSSLOPEN" for the id ends the wait (err 0 = open, else SocketOpenFailed), 30 s.
  * ssl_socket_send(): per 256-byte chunk "AT+QSSLSEND=<id>,<n>\\r" (1000 ms, any error ignored:
    "the > prompt is not a regular AT response"), 100 ms, the chunk written raw and NOT waited
    for (SendRawContents, EXPECTS_RESPONSE_CODE false) -- the next chunk's command follows 20 ms
    later, while the module may still be sending the previous one.
  * ssl_socket_recv(): "AT+QSSLRECV=<id>,<min(len,512)>\\r" (atat's default 1000 ms), parsed by
    SslRecv::parse (the header, the length up to CR LF, min(len, 512, payload) bytes copied).
  * ssl_socket_close(): "AT+QSSLCLOSE=<id>,10\\r" (10 s).  configure_ssl_context() with no
    certificate files: "seclevel", "sslversion", "ciphersuite" (SslCipherSuiteEnum::to_bytes():
    "0x{:04X}", a Bytes<6> that serde_at writes raw: 0xFFFF), "sni", then "ignorelocaltime"
    ("checkhost" is commented out in this version), each AT+QSSLCFG="<name>",<ctx>,<v> 300 ms.
  * tcp_std.rs QuectelTcpClient::connect() (client ids from 0) / QuectelTcpStream: write() =
    ssl_socket_send of the whole buffer; read() = blocking_read(): recv_once(); > 0 returns;
    else socket_poll_closed() -- a FRESH subscriber drained at once, so it sees only URCs
    published between its subscribe and its first try (never, in practice) --; then the idle
    read timeout (default 30 s, set_read_timeout() lowers it here) returns 0 (EOF); else 100 ms.

  * file.rs upload_file_to_internal_flash(): AT+QFUPL="<name>",<len>,3 (1000 ms, its error
    ignored: CONNECT is a URC to this digester), 300 ms, the data in 256-byte raw writes, then a
    subscriber taken only now polled every 500 ms for 3 s (Ok in any case);
    get_file_meta_from_internal_flash(): AT+QFLST="<name>" (1000 ms), the first entry.

- xuos/xiuos_part (XiUOS, Mulan PSL v2): APP_Framework/Framework/connection/4g/ec200t/ec200t.c
  at 117789121e39 (the AT flow identical at 275d2387d4c6) over the AT agent
  APP_Framework/Framework/connection/adapter_agent.c (0b1489cfedf2) and at_agent.h
  (REPLY_TIME_OUT 10 s, ENTM_RECV_MAX 256), driven as 4g/adapter_4g.c Adapter4GTest() does
  (socket 0, "Adapter_4G Test" sent, 256 bytes received).  What the model keeps:
  * The receive thread (ATAgentReceiveProcess / GetCompleteATReply): the UART read one byte at
    a time (the serial timeout 10 s, the old byte kept when a read times out); in AT_MODE every
    non-NUL byte is stored at the thread's OWN read_len (reset only when a reply completes) and
    the reply ends at the byte pair set by AtSetReplyEndChar ('O','K' for commands, 'C','T' for
    the open) -- "\r\nERROR\r\n" never ends one --; then the buffer is copied into the current
    reply (whatever waits or not) and rsp_sem posted; in ENTM_MODE bytes are stored until
    read_len, then entm_rx_notice posted; in DEFAULT_MODE bytes are read and dropped.
  * ATOrderSend(): AT_MODE, the buffers cleared (the thread's read_len is not), the reply set,
    the command written whole, rsp_sem waited REPLY_TIME_OUT (a NULL reply: written, no wait);
    AtCmdConfigAndCheck(): strstr(GetReplyText() -- a C string, up to the first NUL --, check).
    EntmSend(): ENTM_MODE, the bytes (<= 256).  EntmRecv(len, 6 s): read_len = len, the notice
    waited (a timeout drops what came).
  * Ec200tConnect(): AtSetReplyEndChar('O','K'); "+++" (NULL reply); then, ten tries each,
    AT+CCID ("OK"), AT+CPIN? ("READY"), AT+CREG? (",1"), AT+QICSGP=1,1,"CMNET","","",1,
    AT+QICLOSE=<id>, AT+QIDEACT=1, AT+QIACT=1 ("OK"), 'C','T', AT+QIOPEN=1,<id>,"TCP","<ip>",
    <port>,0,2 ("CONNECT"); every line ends CR LF.  Ec200tDisconnect(): 'O','K', "+++" and at
    once AT+QICLOSE=<id> ("OK").
  * The same repository's EC801E adapter (4g/ec801e/ec801e.c at 33523335e298, "v3.0",
    2024-12-25): "+++" with 1.5 s of silence before and after (Connect and Disconnect), ATI in
    place of AT+CCID, AT+QCCID=? after AT+CPIN?, 300 ms / 1 s pauses between the steps, AT+QPOWD
    after a failure; the rest as the EC200T.
  REPLY_TIME_OUT and EntmRecv's 6 s are scaled by TIME_SCALE (0.08) so that a test whose waits
  all run out stays under 20 s; each is still far above what the emulator takes to answer.

The PDP context is brought up before the Rust driver's socket calls (the crate's own bring-up runs
AT+QGMR / AT+CPIN? / band and RAT configuration that are not the subject here).  Every host name
dialled is routed to 127.0.0.1.
"""
from __future__ import annotations

import random
import re
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e import test_adversarial_public_drivers_10 as drivers10
from tests.e2e.test_adversarial_public_drivers_10 import (
    INCOMPLETE, AtatError, Pty, _urc_helper, at_fields)

HOST, PORT = "mmrs.example", 8443

# =================================================================================================
# atat 0.24.1 AtDigester with ModemManagerRs' URC enum and custom-success hook
# =================================================================================================
MMRS_URCS = (b"APP RDY", b"RDY", b"+UMWI", b"CONNECT", b"+QFUPL", b"+QFWRITE", b"+QNTP",
             b"+QMTOPEN", b"+QMTSTAT", b"+QMTCONN", b"+QMTPUB", b"+QMTDISC", b"+QMTCLOSE",
             b"+QSSLOPEN", b"+QSSLURC", b"POWERED DOWN", b"+CME ERROR")


def recv_digest_frame(buf: bytes, header: bytes):
    """digest.rs recv_digest_frame(): (response, consumed), INCOMPLETE, or None (NoMatch)."""
    hdr = buf.find(header)
    if hdr < 0:
        return None
    after = buf[hdr + len(header):]
    nl = after.find(b"\r\n")
    if nl < 0:
        return INCOMPLETE
    text = after[:nl].strip()
    if not text.isdigit():
        return None
    length = int(text)
    start = hdr + len(header) + nl + 2
    end = start + length
    if len(buf) < end:
        return INCOMPLETE
    ok = buf[end:].find(b"OK\r\n")
    if ok < 0:
        return INCOMPLETE
    return buf[hdr:end], end + ok + 4


def socket_recv_digest_hook(buf: bytes):
    got = recv_digest_frame(buf, b"+QSSLRECV: ")
    return recv_digest_frame(buf, b"+QIRD: ") if got is None else got


def _mmrs_urc(b: bytes):
    """The crate's URC enum, each parsed by atat's urc_helper in the enum's order."""
    for token in MMRS_URCS:
        urc = _urc_helper(b, token)
        if urc is not None:
            return urc
    return None


def mmrs_digest(buf: bytes):
    """AtDigester::digest() (atat 0.24.1, test_adversarial_public_drivers_10's model) with the
    crate's URCs and custom success hook: (kind, value, swallowed); kind None = nothing (yet)."""
    return drivers10.digest(buf, _mmrs_urc, socket_recv_digest_hook)


class ModemErr(Exception):
    def __init__(self, kind: str, detail=None) -> None:
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


class Atat(drivers10.Atat):
    """Ingress (digest after every read) + blocking Client (test_adversarial_public_drivers_10's
    atat model: pump, send) + the URC pub-sub channel (a log; a subscriber is an index into it)."""

    def __init__(self, pty: Pty, read_cap: int = 64) -> None:
        super().__init__(pty, read_cap)
        self.urc_log: list[tuple[bytes, list[bytes]]] = []

    def _advance(self) -> None:
        while self.buf:
            kind, value, n = mmrs_digest(bytes(self.buf))
            if kind == "urc":
                name = value.split(b":")[0]
                self.urc_log.append((name, at_fields(value) if b":" in value else []))
            elif kind in ("resp", "prompt"):
                entry = value if kind == "resp" else ("prompt", value)
                if self.slot is None:
                    self.slot = entry
                else:
                    self.dropped.append(entry)
            if n == 0:
                return
            del self.buf[:n]

    def sleep(self, seconds: float) -> None:
        """The caller sleeps; the ingress thread keeps digesting."""
        self.run_for(seconds)


class Subscriber:
    def __init__(self, at: Atat) -> None:
        self.at, self.pos = at, len(at.urc_log)

    def try_next_message_pure(self):
        if self.pos < len(self.at.urc_log):
            self.pos += 1
            return self.at.urc_log[self.pos - 1]
        return None


class QuectelBG9X:
    """src/cellular/socket.rs over Atat."""

    def __init__(self, at: Atat) -> None:
        self.at = at
        self.socket_sub: Subscriber | None = None

    def configure_ssl_context(self, ctx: int, seclevel: int, version: int = 3,
                              sni: int = 1, ignore_localtime: int = 1, ca: str = "") -> None:
        if ca:
            try:
                self.get_file_meta_from_internal_flash(ca)
            except ModemErr:
                raise ModemErr("SslCertificateNotFound") from None
            try:
                self.at.send(f'AT+QSSLCFG="cacert",{ctx},"{ca}"\r', 300)
            except AtatError as e:
                raise ModemErr("NotResponding", ("cacert", e.kind)) from None
        for name, value in (("seclevel", seclevel), ("sslversion", version),
                            ("ciphersuite", "0x%04X" % 0xFFFF), ("sni", sni),
                            ("ignorelocaltime", ignore_localtime)):
            try:
                self.at.send(f'AT+QSSLCFG="{name}",{ctx},{value}\r', 300)
            except AtatError as e:
                raise ModemErr("NotResponding", (name, e.kind)) from None

    def upload_file_to_internal_flash(self, filename: str, data: bytes) -> None:
        """file.rs: AT+QFUPL="<name>",<len>,3 (1000 ms; its error ignored -- CONNECT is a URC to
        this digester, so the wait always times out), 300 ms, the data in 256-byte raw writes
        (not waited for), then a subscriber taken NOW polled every 500 ms for 3 s; Ok(()) in
        any case (a "+QFUPL" with another size would be FileUploadFailed)."""
        try:
            self.at.send(f'AT+QFUPL="{filename}",{len(data)},3\r', 1000, scale=1)
        except AtatError:
            pass
        self.at.sleep(0.3)
        for i in range(0, len(data), 256):
            self.at.send(data[i:i + 256], 0, expects=False)
        sub = Subscriber(self.at)
        start = time.monotonic()
        while time.monotonic() - start < 3:
            self.at.sleep(0.5)
            msg = sub.try_next_message_pure()
            if msg and msg[0] == b"+QFUPL" and int(msg[1][0]) != len(data):
                raise ModemErr("FileUploadFailed")

    def get_file_meta_from_internal_flash(self, filename: str) -> tuple[bytes, int]:
        """AT+QFLST="<name>" (1000 ms): the first "+QFLST: <name>,<size>" entry, or an error."""
        try:
            resp = self.at.send(f'AT+QFLST="{filename}"\r', 1000)
        except AtatError as e:
            raise ModemErr("NotResponding", e.kind) from None
        lines = [ln for ln in resp.split(b"\r\n") if ln.strip()]
        if not lines:
            raise ModemErr("FileUploadFailed")
        f = at_fields(lines[0])
        return f[0], int(f[1])

    def ssl_socket_open(self, client_id: int, ssl_ctx: int, host: str, port: int) -> None:
        self.socket_sub = Subscriber(self.at)
        try:
            self.at.send(f'AT+QSSLOPEN=1,{ssl_ctx},{client_id},"{host}",{port},0\r', 500)
        except AtatError as e:
            raise ModemErr("SocketOpenFailed", e.kind) from None
        start = time.monotonic()
        while time.monotonic() - start < 30:
            self.at.sleep(0.2)
            msg = self.socket_sub.try_next_message_pure()
            if msg and msg[0] == b"+QSSLOPEN" and int(msg[1][0]) == client_id:
                if int(msg[1][1]) == 0:
                    return
                raise ModemErr("SocketOpenFailed", int(msg[1][1]))
        raise ModemErr("OperationTimeout")

    def ssl_socket_send(self, client_id: int, data: bytes) -> None:
        for i in range(0, len(data), 256):
            chunk = data[i:i + 256]
            try:
                self.at.send(f"AT+QSSLSEND={client_id},{len(chunk)}\r", 1000)
            except AtatError:
                pass                                  # "expected and ignored"
            self.at.sleep(0.1)
            self.at.send(chunk, 0, expects=False)

    def ssl_socket_recv(self, client_id: int, size: int) -> bytes:
        want = min(size, 512)
        if want == 0:
            return b""
        try:
            data = self.at.send(f"AT+QSSLRECV={client_id},{want}\r", 1000)
        except AtatError as e:
            raise ModemErr("SocketRecvFailed", (e.kind, e.detail)) from None
        header = b"+QSSLRECV: "
        start = data.find(header)
        if start < 0:
            raise ModemErr("SocketRecvFailed", "InvalidResponse")
        after = data[start + len(header):]
        crlf = after.find(b"\r\n")
        len_str, payload = (after[:crlf], after[crlf + 2:]) if crlf >= 0 else (after, b"")
        if not len_str.strip().isdigit():
            raise ModemErr("SocketRecvFailed", "InvalidResponse")
        n = min(int(len_str.strip()), 512, len(payload))
        return payload[:min(n, size)]

    def ssl_socket_close(self, client_id: int) -> None:
        try:
            self.at.send(f"AT+QSSLCLOSE={client_id},10\r", 10000)
        except AtatError as e:
            raise ModemErr("SocketCloseFailed", e.kind) from None

    def socket_poll_closed(self, client_id: int) -> bool:
        sub = Subscriber(self.at)                     # fresh: only what comes after now
        closed = False
        while (msg := sub.try_next_message_pure()) is not None:
            if msg[0] == b"+QSSLURC" and int(msg[1][1]) == client_id and b"closed" in msg[1][0]:
                closed = True
        return closed


class TlsStream:
    """tcp_std.rs QuectelTcpStream for Transport::Tls."""

    def __init__(self, modem: QuectelBG9X, client_id: int, read_timeout: float = 30.0) -> None:
        self.modem, self.client_id, self.read_timeout = modem, client_id, read_timeout
        self.closed = False

    def write(self, data: bytes) -> int:
        if data:
            self.modem.ssl_socket_send(self.client_id, data)
        return len(data)

    def read(self, size: int) -> bytes:
        start = time.monotonic()
        while True:
            data = self.modem.ssl_socket_recv(self.client_id, size)
            if data:
                return data
            if self.modem.socket_poll_closed(self.client_id):
                self.closed = True
                return self.modem.ssl_socket_recv(self.client_id, size)
            if self.read_timeout is not None and time.monotonic() - start >= self.read_timeout:
                return b""
            self.modem.at.sleep(0.1)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.modem.ssl_socket_close(self.client_id)


def connect(modem: QuectelBG9X, host: str, port: int, ssl_ctx: int = 2, client_id: int = 0,
            read_timeout: float = 30.0) -> TlsStream:
    modem.ssl_socket_open(client_id, ssl_ctx, host, port)
    return TlsStream(modem, client_id, read_timeout)


def bring_up(path: str, read_cap: int = 64) -> tuple[Pty, Atat, QuectelBG9X]:
    pty = Pty(path)
    at = Atat(pty, read_cap)
    at.send("ATE0\r", 300)                            # is_powered_on(): echo must be off
    at.send('AT+QICSGP=1,1,"iot.example","","",1\r', 300)
    at.send("AT+QIACT=1\r", 150000)
    return pty, at, QuectelBG9X(at)


def _traps(n: int, seed: int) -> bytes:
    """Payload bytes that look like the framing atat and the hook watch for."""
    rnd = random.Random(seed)
    traps = [b"\r\nOK\r\n", b"> ", b">", b"+QSSLRECV: 3\r\n", b'\r\n+QSSLURC: "closed",0\r\n',
             b"\x1a", b"\x1b",
             b"\r\nERROR\r\n", b"\r\nCONNECT\r\n", b"\r\n+CME ERROR: 1\r\n", b"SEND OK\r\n"]
    out = bytearray()
    while len(out) < n:
        out += rnd.choice(traps) if rnd.random() < 0.2 else bytes([rnd.randrange(256)])
    return bytes(out[:n])


def _read_exactly(stream: TlsStream, n: int, deadline: float = 15.0) -> bytes:
    got = bytearray()
    end = time.monotonic() + deadline
    while len(got) < n and time.monotonic() < end:
        got += stream.read(n - len(got))
    return bytes(got)


# =================================================================================================
# tests
# =================================================================================================
def test_mmrs_tls_echo_of_binary_data_in_256_byte_pieces(driver_port, emulator, strict_log):
    """configure_ssl_context(ctx 2, seclevel 0) writes exactly the five AT+QSSLCFG lines (0xFFFF
    raw, no "checkhost") and each is OK; connect() opens id 0 in buffer mode and sees
    "+QSSLOPEN: 0,0" on the subscription; write() of 700 bytes that carry "\\r\\nOK\\r\\n", "> ",
    "+QSSLRECV: 3\\r\\n", a fake "+QSSLURC" and CONNECT goes out as 256 + 256 + 188, each
    piece's command sent while the previous SEND OK may still be pending -- the module answers
    three SEND OKs and the server gets the 700 bytes in order; read() gets them back whole
    through AT+QSSLRECV=0,<=512 (the hook frames each answer by its length, so nothing in the
    payload is taken for a prompt, an OK or a URC); AT+QSSLCLOSE=0,10 is OK."""
    path, _ = driver_port
    payload = _traps(700, 36)
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.configure_ssl_context(2, seclevel=0)
            assert re.findall(rb"AT\+QSSLCFG=[^\r]*\r", bytes(pty.tx)) == [
                b'AT+QSSLCFG="seclevel",2,0\r', b'AT+QSSLCFG="sslversion",2,3\r',
                b'AT+QSSLCFG="ciphersuite",2,0xFFFF\r', b'AT+QSSLCFG="sni",2,1\r',
                b'AT+QSSLCFG="ignorelocaltime",2,1\r']
            stream = connect(modem, HOST, PORT)
            assert b'AT+QSSLOPEN=1,2,0,"mmrs.example",8443,0\r' in pty.tx
            assert (b"+QSSLOPEN", [b"0", b"0"]) in at.urc_log
            conn = server.wait_handshake()
            assert conn.sni == HOST and conn.version == "TLSv1.2"
            mark = len(pty.rx)
            assert stream.write(payload) == 700
            assert server.wait_received(700) == payload
            at.sleep(0.3)
            assert bytes(pty.rx[mark:]).count(b"\r\nSEND OK\r\n") == 3
            sends = re.findall(rb"AT\+QSSLSEND=0,(\d+)\r", bytes(pty.tx))
            assert sends == [b"256", b"256", b"188"]
            echoed = _read_exactly(stream, 700)
            assert echoed == payload
            reads = re.findall(rb"AT\+QSSLRECV=0,(\d+)\r", bytes(pty.tx))
            assert all(int(r) <= 512 for r in reads) and reads[0] == b"512"
            stream.close()
            assert pty.tx.endswith(b"AT+QSSLCLOSE=0,10\r")
            assert at.dropped == []
        finally:
            pty.close()


def test_mmrs_each_piece_follows_the_prompt_and_the_module_answers_in_order(driver_port, emulator,
                                                                            strict_log):
    """The wire of one write() of 600 bytes: every AT+QSSLSEND=0,<n> gets "\\r\\n> " before its
    bytes (the driver waits for atat's prompt, then 100 ms), and the module's output is the
    three prompts and three SEND OKs interleaved in command order -- no ERROR, no prompt lost
    while the previous piece was still being sent (the driver writes the next command 20 ms
    after a piece, never waiting for its SEND OK)."""
    path, _ = driver_port
    payload = bytes(range(256)) * 2 + b"z" * 88
    with TlsServer(mode="sink", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.configure_ssl_context(2, seclevel=0)
            stream = connect(modem, HOST, PORT)
            mark = len(pty.rx)
            stream.write(payload)
            assert server.wait_received(600) == payload
            at.sleep(0.5)
            out = bytes(pty.rx[mark:])
            assert re.sub(rb'\r\n\+QSSLURC: "recv",0\r\n', b"", out) == \
                b"\r\n> \r\nSEND OK\r\n" * 3
            assert at.dropped == []
        finally:
            pty.close()


def test_mmrs_peer_close_is_eof_only_by_the_idle_timeout(driver_port, emulator, strict_log):
    """The server sends a reply and closes.  read() takes the reply (one AT+QSSLRECV), then
    polls: AT+QSSLRECV on the peer-closed socket answers "+QSSLRECV: 0" (docs/behaviour.md:
    data before the close stay readable, the socket is in state 4 until AT+QSSLCLOSE), and
    socket_poll_closed()'s fresh subscriber never sees the "+QSSLURC: \\"closed\\",0" that was
    published before it subscribed -- so EOF comes from the idle timeout (lowered to 1 s with
    set_read_timeout), not from the close.  The driver's own flaw; the module did report the
    close (it is on the channel), and AT+QSSLCLOSE=0,10 then frees the id."""
    path, _ = driver_port
    reply = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    with TlsServer(mode="send_then_close", payload=reply, legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.configure_ssl_context(2, seclevel=0)
            stream = connect(modem, HOST, PORT, read_timeout=1.0)
            server.wait_done()
            at.sleep(0.5)
            assert (b"+QSSLURC", [b"closed", b"0"]) in at.urc_log
            assert _read_exactly(stream, len(reply)) == reply
            t0 = time.monotonic()
            assert stream.read(512) == b""
            assert time.monotonic() - t0 >= 1.0
            assert stream.closed is False             # the close was never noticed
            assert b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n" in pty.rx
            stream.close()
            assert at.send("AT+QSSLSTATE=0\r", 300) == b""
            assert at.dropped == []
        finally:
            pty.close()


def test_mmrs_open_failure_is_reported_from_the_urc(driver_port, emulator, strict_log):
    """seclevel 1 with no CA file configured and a server whose certificate cannot be verified
    against anything: AT+QSSLOPEN answers OK, then "+QSSLOPEN: 0,<err>" with err != 0, which
    ssl_socket_open() turns into SocketOpenFailed(err); the id is free again (a second open of
    id 0 is not refused 563)."""
    path, _ = driver_port
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.configure_ssl_context(2, seclevel=1)
            with pytest.raises(ModemErr) as err:
                connect(modem, HOST, PORT)
            assert err.value.kind == "SocketOpenFailed"
            code = err.value.detail
            assert isinstance(code, int) and code != 0
            assert (b"+QSSLOPEN", [b"0", str(code).encode()]) in at.urc_log
            modem.configure_ssl_context(2, seclevel=0)
            stream = connect(modem, HOST, PORT)
            stream.write(b"ping")
            assert _read_exactly(stream, 4) == b"ping"
            stream.close()
        finally:
            pty.close()


# =================================================================================================
# xuos/xiuos_part: the EC200T 4G adapter over the XiUOS AT agent (a byte-reading thread)
# =================================================================================================
TIME_SCALE = 0.08            # REPLY_TIME_OUT (10 s) and EntmRecv's 6 s scaled: 0.8 s / 0.48 s
REPLY_TIME_OUT = 10 * TIME_SCALE
SERIAL_TIMEOUT = 10.0        # Ec200tIoctl: serial_cfg.serial_timeout = 10000 (ms), not scaled
DEFAULT_MODE, ENTM_MODE, AT_MODE = 0, 1, 2
ENTM_RECV_MAX = 256
TRY_TIMES = 10


class ATReply:
    def __init__(self, reply_max_len: int) -> None:
        self.reply_max_len = reply_max_len
        self.reply_buffer = bytearray(reply_max_len)
        self.reply_len = 0

    def text(self) -> bytes:
        """GetReplyText(): a C string -- up to the first NUL."""
        return bytes(self.reply_buffer).split(b"\x00", 1)[0]


class ATAgent:
    """adapter_agent.c: InitATAgent() (maintain_max 512) and its receive thread."""

    def __init__(self, path: str, maintain_max: int = 512) -> None:
        import os as _os
        import threading
        import tty
        self.fd = _os.open(path, _os.O_RDWR | _os.O_NOCTTY)
        tty.setraw(self.fd)
        self.tx = bytearray()
        self.rx = bytearray()
        self.lock = threading.RLock()
        self.rsp_sem = threading.Semaphore(0)
        self.entm_rx_notice = threading.Semaphore(0)
        self.maintain_max = maintain_max
        self.maintain_buffer = bytearray(maintain_max)
        self.maintain_len = 0
        self.entm_recv_buf = bytearray(ENTM_RECV_MAX)
        self.entm_recv_len = 0
        self.read_len = 0
        self.receive_mode = DEFAULT_MODE
        self.reply: ATReply | None = None
        self.reply_lr_end = 0
        self.reply_end_last_char = 0
        self.reply_end_char = 0
        self.reply_char_num = 0
        self._stop = False
        self.thread = threading.Thread(target=self._receive_process, daemon=True)
        self.thread.start()

    def close(self) -> None:
        import os as _os
        self._stop = True
        self.thread.join(2)
        _os.close(self.fd)

    # -- the UART ---------------------------------------------------------------------------------
    def _priv_read(self, ch: int) -> tuple[int, int]:
        """PrivRead(fd, &ch, 1) with the serial timeout: (res, ch) -- ch unchanged on a timeout."""
        import os as _os
        import select
        deadline = time.monotonic() + SERIAL_TIMEOUT
        while not self._stop:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    b = _os.read(self.fd, 1)
                except OSError:                       # the emulator went away (teardown)
                    b = b""
                if not b:
                    break
                self.rx += b
                return 1, b[0]
            if time.monotonic() >= deadline:
                return 0, ch
        raise SystemExit

    def priv_write(self, data: bytes) -> None:
        import os as _os
        self.tx += data
        view = memoryview(data)
        while view:
            n = _os.write(self.fd, view)
            view = view[n:]

    # -- the receive thread -----------------------------------------------------------------------
    def _get_complete_at_reply(self) -> int:
        read_len, ch, last_ch, is_full = 0, 0, 0, False
        with self.lock:
            self.maintain_buffer[:] = bytes(self.maintain_max)
            self.maintain_len = 0
            self.entm_recv_buf[:] = bytes(ENTM_RECV_MAX)
            self.entm_recv_len = 0
        while True:
            res, ch = self._priv_read(ch)
            with self.lock:
                if self.receive_mode == ENTM_MODE:
                    if self.entm_recv_len < ENTM_RECV_MAX:
                        self.entm_recv_buf[self.entm_recv_len] = ch      # (res not checked)
                        self.entm_recv_len += 1
                        if self.entm_recv_len < self.read_len:
                            continue
                        self.receive_mode = DEFAULT_MODE
                        self.entm_rx_notice.release()
                elif self.receive_mode == AT_MODE:
                    if read_len < self.maintain_max:
                        if ch != 0:
                            self.maintain_buffer[read_len] = ch
                            read_len += 1
                            self.maintain_len = read_len
                    else:
                        is_full = True
                    if ((ch == 0x0A and self.reply_lr_end)
                            or (ch == self.reply_end_char and self.reply_end_char
                                and last_ch == self.reply_end_last_char
                                and self.reply_end_last_char)
                            or (read_len == self.reply_char_num and self.reply_char_num)):
                        if is_full:
                            self.maintain_buffer[:] = bytes(self.maintain_max)
                            self.maintain_len = 0
                            return -1
                        self.receive_mode = DEFAULT_MODE
                        return read_len
                    last_ch = ch

    def _receive_process(self) -> None:
        try:
            while True:
                if self._get_complete_at_reply() > 0:
                    with self.lock:
                        if self.reply is not None:
                            reply = self.reply
                            n = self.maintain_len
                            if n <= reply.reply_max_len:
                                reply.reply_buffer[:] = bytes(reply.reply_max_len)
                                reply.reply_buffer[:n] = self.maintain_buffer[:n]
                                reply.reply_len = n
                            self.rsp_sem.release()
        except SystemExit:
            return

    # -- the API ----------------------------------------------------------------------------------
    def at_set_reply_end_char(self, last_ch: int, end_ch: int) -> None:
        self.reply_end_last_char, self.reply_end_char = last_ch, end_ch

    def at_order_send(self, timeout_s: float, reply: ATReply | None, cmd: bytes) -> int:
        with self.lock:
            self.receive_mode = AT_MODE
            self.maintain_buffer[:] = bytes(self.maintain_max)
            self.maintain_len = 0
            self.entm_recv_buf[:] = bytes(ENTM_RECV_MAX)
            self.entm_recv_len = 0
            self.reply = reply
        if reply is not None:
            with self.lock:
                reply.reply_len = 0
                self.priv_write(cmd)
            if not self.rsp_sem.acquire(timeout=timeout_s):
                return -2
            return 0
        with self.lock:
            self.priv_write(cmd)
        return 0

    def at_cmd_config_and_check(self, cmd: bytes, check: bytes) -> int:
        reply = ATReply(256)
        if self.at_order_send(REPLY_TIME_OUT, reply, cmd) < 0:
            return -1
        return 0 if check in reply.text() else -1

    def entm_send(self, data: bytes) -> int:
        if len(data) > 256:
            return -1
        with self.lock:
            self.receive_mode = ENTM_MODE
            self.priv_write(data)
        return 0

    def entm_recv(self, buffer_len: int, timeout_s: float) -> bytes | int:
        if buffer_len > ENTM_RECV_MAX:
            return -1
        with self.lock:
            self.receive_mode = ENTM_MODE
            self.read_len = buffer_len
        if not self.entm_rx_notice.acquire(timeout=timeout_s):
            self.entm_recv_len = 0
            return -1
        with self.lock:
            data = bytes(self.entm_recv_buf[:self.entm_recv_len])
            self.entm_recv_buf[:] = bytes(ENTM_RECV_MAX)
            self.entm_recv_len = 0
            self.read_len = 0
        return data


class Ec200t:
    """ec200t.c (connect / send / recv / disconnect) with adapter->socket.socket_id."""

    def __init__(self, agent: ATAgent, socket_id: int = 0) -> None:
        self.agent, self.socket_id = agent, socket_id
        self.failed_step: int | None = None

    def _retry(self, cmd: bytes, check: bytes) -> int:
        ret = -1
        for _ in range(TRY_TIMES):
            ret = self.agent.at_cmd_config_and_check(cmd, check)
            if ret == 0:
                break
        return ret

    def connect(self, ip: str, port: str, skip_ccid: bool = False) -> int:
        a = self.agent
        a.at_set_reply_end_char(0x4F, 0x4B)                         # 'O','K'
        a.at_order_send(REPLY_TIME_OUT, None, b"+++")                 # step 1
        steps = [(2, b"AT+CCID\r\n", b"OK"), (3, b"AT+CPIN?\r\n", b"READY"),
                 (4, b"AT+CREG?\r\n", b",1"),
                 (5, b'AT+QICSGP=1,1,"CMNET","","",1\r\n', b"OK"),
                 (6, b"AT+QICLOSE=%d\r\n" % self.socket_id, b"OK"),
                 (7, b"AT+QIDEACT=1\r\n", b"OK"), (8, b"AT+QIACT=1\r\n", b"OK")]
        for step, cmd, check in steps:
            if step == 2 and skip_ccid:
                continue
            if self._retry(cmd, check) < 0:
                self.failed_step = step
                return -1                                             # (Ec200tPowerSet)
        cmd = b'AT+QIOPEN=1,%d,"TCP","%s",%s,0,2\r\n' % (self.socket_id, ip.encode(), port.encode())
        a.at_set_reply_end_char(0x43, 0x54)                         # 'C','T'
        if self._retry(cmd, b"CONNECT") < 0:
            self.failed_step = 9
            return -1
        return 0

    def send(self, data: bytes) -> int:
        self.agent.entm_send(data)
        return 0

    def recv(self, length: int) -> bytes | int:
        return self.agent.entm_recv(length, 6 * TIME_SCALE)

    def disconnect(self) -> int:
        a = self.agent
        a.at_set_reply_end_char(0x4F, 0x4B)
        a.at_order_send(REPLY_TIME_OUT, None, b"+++")
        if a.at_cmd_config_and_check(b"AT+QICLOSE=%d\r\n" % self.socket_id, b"OK") < 0:
            return -1                                                 # (Ec200tPowerSet)
        return 0


def test_xiuos_ec200t_connect_stops_at_at_ccid_on_an_ec2x(driver_port, strict_log):
    """Ec200tConnect() as written: "+++" (no reply awaited), then AT+CCID until "OK" (the
    agent's reply ends at the byte pair 'O','K'), ten tries.  The EC2x has no AT+CCID (its
    ICCID command is AT+QCCID; docs/behaviour.md: AT+CCID / AT+ICCID are ERROR at any time),
    so every try is answered "ERROR" -- which never contains the 'O','K' pair, so each try
    runs out its whole REPLY_TIME_OUT -- and the driver gives up at step 2 (it would power-cycle
    the module).  The driver's fault against this module; the module's bytes are exact: the
    "+++" echoed as command-state garbage (dropped, no answer), each AT+CCID echoed with its
    CR and answered ERROR."""
    path, _ = driver_port
    agent = ATAgent(path)
    try:
        ec = Ec200t(agent)
        assert ec.connect("tcp.example", "7000") == -1
        assert ec.failed_step == 2
        assert bytes(agent.tx) == b"+++" + b"AT+CCID\r\n" * TRY_TIMES
        time.sleep(0.2)
        assert bytes(agent.rx) == b"+++" + b"AT+CCID\r\r\nERROR\r\n" * TRY_TIMES
    finally:
        agent.close()


def _answer_after(peer, n: int, payload: bytes, delay: float) -> None:
    import threading

    def run() -> None:
        end = time.monotonic() + 10
        while len(peer.got) < n and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(delay)
        peer.send(payload)
    threading.Thread(target=run, daemon=True).start()


def test_xiuos_ec200t_transparent_session_and_a_disconnect_without_guard_times(driver_port,
                                                                               peer_factory,
                                                                               strict_log):
    """Ec200tConnect() from step 3 on (as on a module that knows AT+CCID): "+++" echoed as
    garbage, AT+CPIN? until "READY", AT+CREG? until ",1", AT+QICSGP=1,1,"CMNET","","",1,
    AT+QICLOSE=0 and AT+QIDEACT=1 (both OK with nothing open / nothing active), AT+QIACT=1, then
    AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2 with the reply ending at 'C','T' -- the module
    answers CONNECT (transparent access mode) and the port is online.  Adapter4GTest's message
    "Adapter_4G Test" goes out unframed (EntmSend); the server answers 256 bytes 200 ms later
    (a cellular round trip: EntmRecv sets its read length before they come) holding "OK",
    "CONNECT", "+++", "\\r\\nERROR\\r\\n" -- EntmRecv(256) returns them exactly, nothing added.
    Ec200tDisconnect() writes "+++" and at once "AT+QICLOSE=0\\r\\n": no guard time after the
    escape, so the module (EC2x TCP/IP manual; docs/behaviour.md "Transparent access mode")
    sends all of it to the server as data and answers nothing; the driver's wait for "OK" times
    out (it would power-cycle the module).  The driver's fault; a real escape afterwards (1 s
    silence, "+++", 1 s silence) gets OK and AT+QICLOSE=0 closes the socket."""
    path, _ = driver_port
    peer = peer_factory()
    reply = (b"OK\r\nCONNECT\r\n+++\r\nERROR\r\n" + bytes(range(256)))[:256]
    agent = ATAgent(path)
    try:
        ec = Ec200t(agent)
        assert ec.connect("tcp.example", "7000", skip_ccid=True) == 0
        assert peer.accepted.wait(5)
        time.sleep(0.2)                     # the receive thread drops the LF after CONNECT
        assert agent.rx.endswith(b'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r\r\nCONNECT\r\n')
        # AT+CPIN? is written twice only when the receive thread read the "+++" echo before
        # ATOrderSend() cleared the buffer: its local read_len then puts the reply after three
        # NULs and GetReplyText() is "" (the agent's own race); either way the module's bytes:
        cpin = agent.tx.count(b"AT+CPIN?\r\n")
        assert cpin in (1, 2)
        cmds = [b"AT+CPIN?\r\n"] * cpin + [
            b"AT+CREG?\r\n", b'AT+QICSGP=1,1,"CMNET","","",1\r\n', b"AT+QICLOSE=0\r\n",
            b"AT+QIDEACT=1\r\n", b"AT+QIACT=1\r\n", b'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r\n']
        assert bytes(agent.tx) == b"+++" + b"".join(cmds)
        answers = {b"AT+CPIN?": b"\r\n+CPIN: READY\r\n\r\nOK\r\n",
                   b"AT+CREG?": b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"}
        assert bytes(agent.rx) == b"+++" + b"".join(
            c[:-1] + answers.get(c[:-2], b"\r\nCONNECT\r\n" if b"QIOPEN" in c else b"\r\nOK\r\n")
            for c in cmds)
        _answer_after(peer, 15, reply, 0.2)
        mark = len(agent.rx)
        assert ec.send(b"Adapter_4G Test") == 0
        got = ec.recv(256)
        assert got == reply
        assert bytes(agent.rx[mark:]) == reply
        assert ec.disconnect() == -1
        end = time.monotonic() + 5
        want = b"Adapter_4G Test+++AT+QICLOSE=0\r\n"
        while bytes(peer.got) != want and time.monotonic() < end:
            time.sleep(0.02)
        assert bytes(peer.got) == want
        assert bytes(agent.rx[mark + 256:]) == b""                # no OK, no echo: still online
        time.sleep(1.2)
        agent.priv_write(b"+++")
        time.sleep(1.2)
        end = time.monotonic() + 3
        while b"\r\nOK\r\n" not in agent.rx[mark + 256:] and time.monotonic() < end:
            time.sleep(0.02)
        assert bytes(agent.rx[mark + 256:]) == b"\r\nOK\r\n"
        assert bytes(peer.got) == want                             # the escape is not data
        agent.priv_write(b"AT+QICLOSE=0\r\n")
        end = time.monotonic() + 5
        while not peer.eof.is_set() and time.monotonic() < end:
            time.sleep(0.02)
        assert peer.eof.is_set()
        peer.close()                        # AT+QICLOSE's OK waits for the server's FIN (or 10 s)
        end = time.monotonic() + 3
        while not agent.rx.endswith(b"OK\r\n") and time.monotonic() < end:
            time.sleep(0.02)
        assert bytes(agent.rx[mark + 256:]) == b"\r\nOK\r\nAT+QICLOSE=0\r\r\nOK\r\n"
    finally:
        agent.close()


def test_mmrs_ca_upload_then_seclevel_1_open_verifies_the_server(driver_port, emulator, pki,
                                                                 strict_log):
    """upload_file_to_internal_flash("ca.pem", <the CA's PEM>): AT+QFUPL="ca.pem",<len>,3 --
    the module's "\r\nCONNECT\r\n" is a URC to this digester, so the command's 1 s wait runs out
    as the driver expects --, 300 ms, the PEM in 256-byte raw writes, and the module ends the
    upload with "+QFUPL: <len>,<checksum>" and OK.  configure_ssl_context(ctx 2, seclevel 1,
    ca "ca.pem"): AT+QFLST="ca.pem" lists it (the size uploaded), AT+QSSLCFG="cacert",2,
    "ca.pem" is OK, then the five options.  The open verifies the server's chain against the
    uploaded CA and the dialled name (the EC2x checks it at seclevel 1: docs/behaviour.md
    ssl.verify_hostname) -- +QSSLOPEN: 0,0 -- and data flow both ways."""
    path, _ = driver_port
    pem = pki.ca.cert_pem
    with TlsServer(pki.issue("mmrs", HOST), mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.upload_file_to_internal_flash("ca.pem", pem)
            assert f'AT+QFUPL="ca.pem",{len(pem)},3\r'.encode() in pty.tx
            assert re.search(rb"\r\nCONNECT\r\n", bytes(pty.rx))
            m = re.search(rb"\r\n\+QFUPL: (\d+),([0-9a-f]+)\r\n\r\nOK\r\n", bytes(pty.rx))
            assert m and int(m.group(1)) == len(pem)
            assert (b"CONNECT", []) in at.urc_log
            modem.configure_ssl_context(2, seclevel=1, ca="ca.pem")
            name, size = modem.get_file_meta_from_internal_flash("ca.pem")
            assert size == len(pem) and name.endswith(b"ca.pem")
            stream = connect(modem, HOST, PORT)
            stream.write(b"verified")
            assert _read_exactly(stream, 8) == b"verified"
            stream.close()
        finally:
            pty.close()


def test_mmrs_four_kib_echo_while_recv_urcs_interleave_with_the_prompts(driver_port, emulator,
                                                                       strict_log):
    """One write() of 4096 bytes (16 pieces of 256) to an echo server: the echoed records come
    back while the pieces are still going out, so "+QSSLURC: \\"recv\\",0" URCs fall between a
    SEND OK and the next command's prompt.  The module writes each URC whole, never inside a
    command's answer or a prompt, so the digester files every one as a URC and takes every
    "> " as the prompt it waits for: no response is dropped, all 16 pieces are SEND OK, and the
    4096 bytes come back exactly through AT+QSSLRECV=0,512 reads."""
    path, _ = driver_port
    payload = _traps(4096, 3636)
    with TlsServer(mode="echo", legacy=True) as server:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", server.port)
        pty, at, modem = bring_up(path)
        try:
            modem.configure_ssl_context(2, seclevel=0)
            stream = connect(modem, HOST, PORT)
            mark = len(pty.rx)
            stream.write(payload)
            assert server.wait_received(4096, timeout=10) == payload
            at.sleep(0.3)
            out = bytes(pty.rx[mark:])
            assert out.count(b"\r\nSEND OK\r\n") == 16 and out.count(b"\r\n> ") == 16
            assert re.sub(rb'\r\n\+QSSLURC: "recv",0\r\n', b"", out) == \
                b"\r\n> \r\nSEND OK\r\n" * 16
            assert sum(1 for u in at.urc_log if u[0] == b"+QSSLURC") >= 1
            assert _read_exactly(stream, 4096) == payload
            assert at.dropped == []
            stream.close()
        finally:
            pty.close()


def test_xiuos_ec200t_refused_transparent_open_is_error_ten_times(driver_port, emulator,
                                                                 strict_log):
    """Ec200tConnect() (from step 3) to a port nobody listens on: AT+QIOPEN=...,0,2 in
    transparent access mode answers ERROR (the TCP/IP manual: CONNECT on success, ERROR
    otherwise -- no +QIOPEN URC in this mode), and the id stays free, so each of the ten tries
    gets the same "ERROR" again (never a 563 "socket identity has been used").  The agent's
    reply for this command ends only at the 'C','T' pair, so every try waits its whole
    REPLY_TIME_OUT before the next -- the driver's flaw."""
    from tests.e2e.socket_support import free_port
    path, _ = driver_port
    emulator.router.add_map("tcp.example", 7000, "127.0.0.1", free_port())
    agent = ATAgent(path)
    try:
        ec = Ec200t(agent)
        assert ec.connect("tcp.example", "7000", skip_ccid=True) == -1
        assert ec.failed_step == 9
        time.sleep(0.2)
        cmd = b'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r\n'
        assert agent.tx.count(cmd) == TRY_TIMES and agent.tx.endswith(cmd * TRY_TIMES)
        assert bytes(agent.rx).endswith(b"AT+QIACT=1\r\r\nOK\r\n"
                                        + (cmd[:-1] + b"\r\nERROR\r\n") * TRY_TIMES)
    finally:
        agent.close()


class Ec801e(Ec200t):
    """ec801e.c (v3.0, 2024-12-25): the same agent; "+++" with 1.5 s of silence on each side,
    ATI instead of AT+CCID, AT+QCCID=? after AT+CPIN?, 300 ms / 1 s pauses between steps."""

    def connect(self, ip: str, port: str, skip_ccid: bool = False) -> int:
        a = self.agent
        a.at_set_reply_end_char(0x4F, 0x4B)
        time.sleep(1.5)
        a.at_order_send(REPLY_TIME_OUT, None, b"+++")
        time.sleep(1.5)
        steps = [(1, b"ATI\r\n", b"OK", 0.3), (2, b"AT+CPIN?\r\n", b"READY", 0.3),
                 (3, b"AT+QCCID=?\r\n", b"OK", 1.0), (4, b"AT+CREG?\r\n", b",1", 0.3),
                 (5, b'AT+QICSGP=1,1,"CMNET","","",1\r\n', b"OK", 0.3),
                 (6, b"AT+QICLOSE=%d\r\n" % self.socket_id, b"OK", 0.3),
                 (7, b"AT+QIDEACT=1\r\n", b"OK", 0.3), (8, b"AT+QIACT=1\r\n", b"OK", 0.0)]
        for step, cmd, check, pause in steps:
            if self._retry(cmd, check) < 0:
                self.failed_step = step
                self.agent.at_cmd_config_and_check(b"AT+QPOWD\r\n", b"OK")
                return -1
            time.sleep(pause)
        cmd = b'AT+QIOPEN=1,%d,"TCP","%s",%s,0,2\r\n' % (self.socket_id, ip.encode(), port.encode())
        a.at_set_reply_end_char(0x43, 0x54)
        if self._retry(cmd, b"CONNECT") < 0:
            self.failed_step = 9
            return -1
        return 0

    def disconnect(self) -> int:
        a = self.agent
        a.at_set_reply_end_char(0x4F, 0x4B)
        time.sleep(1.5)
        a.at_order_send(REPLY_TIME_OUT, None, b"+++")
        time.sleep(1.5)
        if a.at_cmd_config_and_check(b"AT+QICLOSE=%d\r\n" % self.socket_id, b"OK") < 0:
            a.at_cmd_config_and_check(b"AT+QPOWD\r\n", b"OK")
            return -1
        return 0


def test_xiuos_ec801e_guarded_escape_leaves_transparent_mode_and_closes(driver_port, peer_factory,
                                                                       strict_log):
    """The same repository's EC801E adapter (APP_Framework/Framework/connection/4g/ec801e/
    ec801e.c at 33523335e298), which waits 1.5 s before and after each "+++".  Connect: the
    "+++" is echoed as command-state garbage (no answer); the receive thread stores that echo
    and keeps its read_len, so the first ATI's reply lands after three NULs and reads as "" --
    the agent's own race, certain here because of the 1.5 s pause -- and ATI is sent again (OK);
    then AT+CPIN?, AT+QCCID=? (the test form: OK), AT+CREG?, AT+QICSGP, AT+QICLOSE=0,
    AT+QIDEACT=1, AT+QIACT=1 and the transparent AT+QIOPEN (CONNECT).  Data both ways as for
    the EC200T.  Disconnect: 1.5 s of silence, "+++", 1.5 s -- a real escape: the module answers
    OK and nothing reaches the server -- then AT+QICLOSE=0 answers OK once the server has
    closed its side."""
    path, _ = driver_port
    peer = peer_factory()
    reply = bytes(range(256))[::-1]
    agent = ATAgent(path)
    try:
        ec = Ec801e(agent)
        assert ec.connect("tcp.example", "7000") == 0
        assert peer.accepted.wait(5)
        time.sleep(0.2)
        assert bytes(agent.tx).startswith(b"+++ATI\r\nATI\r\nAT+CPIN?\r\nAT+QCCID=?\r\n")
        assert bytes(agent.rx).startswith(b"+++ATI\r\r\n")
        assert b"AT+QCCID=?\r\r\nOK\r\n" in agent.rx
        assert agent.rx.endswith(b'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r\r\nCONNECT\r\n')
        _answer_after(peer, 15, reply, 0.2)
        mark = len(agent.rx)
        ec.send(b"Adapter_4G Test")
        assert ec.recv(256) == reply

        def close_peer_on_eof() -> None:
            peer.eof.wait(10)
            peer.close()
        import threading
        threading.Thread(target=close_peer_on_eof, daemon=True).start()
        assert ec.disconnect() == 0
        assert bytes(peer.got) == b"Adapter_4G Test"
        time.sleep(0.2)                     # the receive thread drops the CR LF after OK
        assert bytes(agent.rx[mark + 256:]) == b"\r\nOK\r\nAT+QICLOSE=0\r\r\nOK\r\n"
    finally:
        agent.close()


def test_xiuos_ec801e_disconnect_after_the_server_closed_powers_the_module_down(driver_port,
                                                                                peer_factory,
                                                                                strict_log):
    """The server answers and closes while the port is online: the module leaves transparent
    mode by itself with "\\r\\nNO CARRIER\\r\\n" (the agent, in DEFAULT_MODE after EntmRecv,
    reads and drops it).  Ec801eDisconnect() then writes its guarded "+++" into command state --
    echoed as garbage, no answer -- and AT+QICLOSE=0, which the module answers OK.  But the
    receive thread stored the "+++" echo and kept its read_len, so that OK reply reads as ""
    and the driver takes the close as failed and sends AT+QPOWD (OK, POWERED DOWN): the
    agent's race, certain here because of the 1.5 s pauses, turns a clean close into a
    power-down.  The module's bytes are exact."""
    path, _ = driver_port
    peer = peer_factory()
    reply = b"bye\r\n" + bytes(range(11))
    agent = ATAgent(path)
    try:
        ec = Ec801e(agent)
        assert ec.connect("tcp.example", "7000") == 0
        assert peer.accepted.wait(5)
        time.sleep(0.2)
        _answer_after(peer, 15, reply, 0.2)
        mark = len(agent.rx)
        ec.send(b"Adapter_4G Test")
        assert ec.recv(16) == reply
        peer.close()
        end = time.monotonic() + 5
        while b"NO CARRIER" not in agent.rx[mark:] and time.monotonic() < end:
            time.sleep(0.02)
        assert ec.disconnect() == -1
        end = time.monotonic() + 5
        while not agent.rx.endswith(b"POWERED DOWN\r\n") and time.monotonic() < end:
            time.sleep(0.02)
        assert bytes(agent.tx).endswith(b"Adapter_4G Test+++AT+QICLOSE=0\r\nAT+QPOWD\r\n")
        assert bytes(agent.rx[mark:]) == reply + (
            b"\r\nNO CARRIER\r\n+++AT+QICLOSE=0\r\r\nOK\r\nAT+QPOWD\r\r\nOK\r\n\r\nPOWERED DOWN\r\n")
    finally:
        agent.close()
