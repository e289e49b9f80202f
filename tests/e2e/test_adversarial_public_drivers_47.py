"""Adversarial tests: a forty-seventh set of public host code pointed at the pty -- a FreeRTOS
firmware's Quectel "lte_module" SSL layer (an MCU that also drives a BLE radio on the same
AT port: its receive splitter routes "+BLE..." / "+WRITE:" lines elsewhere), not replayed by
earlier rounds (a search of tests/ and the notes for "lte_module_driver", "lte_module_ssl",
"lte_module_send_queue", "w_cert_length" and the store ids below finds nothing).  Its
certificate upload (AT+QFUPL to RAM: with the length checked back from "+QFUPL: %d,%x"), its
context set-up (cacert / clientcert / clientkey / seclevel 2 / sslversion 4 / ciphersuite
0xFFFF / ignorelocaltime 1) and its engine's way of cutting the UART bursts into segments
are replayed byte for byte through the pty, then the configured context carries data to a
loopback OpenSSL (Python ssl) peer that requires the uploaded client certificate.

Driver replayed (public source read through the reference store; paraphrased, not copied):

- A FreeRTOS "lte_module" driver by Yao YiLiang (the store did not name the repository):
  lte_module_ssl_at_driver.c (store file id 24898682543) and the engine in its
  lte_module_driver_at_cmd_transmit() / lte_module_send_queue() file (store file id
  24571299024).  What the model keeps:
  * transmit: the command (every one ends "\\r\\n") is written in one go; then, per
    segment, a wait of w_receive_timeout (3000 ms for every SSL step; the budget restarts for
    each segment); the notify hook is NULL here, so each segment goes to the step's receive
    function: 1 = success, 0 = failure, 2 / 3 = drop the segment and wait for the next, 4 =
    transmit returns 2 (the caller's state machine then repeats the same step).  The
    segment queue outlives the command: what one command leaves is the next one's first.
  * lte_module_send_queue(): each UART burst (DMA + idle line; modelled as the bytes until
    15 ms of silence) is cut at every "\\r\\n" whose index is > 2 and is not the start of the
    current segment -- so a burst's leading "\\r\\n" stays with its first line
    ("\\r\\nOK\\r\\n" is one 6-byte segment) -- and after each cut the loop's own ++ skips one
    more byte.  A segment STARTING with '+' (only a second line of a burst can) swallows a
    following "\\r\\nOK\\r\\n" or "OK\\r\\n".  A segment with "+QIRD:" anywhere after it takes
    the whole burst length.  The tail (no "\\r\\n") is pushed unless exactly one byte past.
  * the receive functions: CONNECT step `len <= 11 && strstr("CONNECT")` (407 -> failure for
    the CA, -> 4 for the client certificate and key); data step `sscanf(strstr(seg,
    "+QFUPL:"), "+QFUPL: %d,%x\\r\\n")` with the size compared to the length it sent (the
    checksum is parsed and never checked), then strstr "OK" -> 1 else 2; every AT+QSSLCFG
    step `len <= 8 && strstr("OK")`; the unused delete step `len <= 11 &&
    strstr("+QFDEL: cacert.pem")`.  Segments are malloc'ed without a NUL: the model treats
    each as a C string that ends with it.
  * names "RAM:cacert.pem" / "RAM:client.pem" / "RAM:user_key.pem", AT+QFUPL <timeout> 100.
  The ATE0 of its bring-up and the socket layer (AT+QSSLOPEN / QSSLSEND / QSSLRECV, in a file
  the store does not hold) are not this file's: ATE0 goes through the same engine, and the
  data path is driven with plain commands through the same engine to prove the context the
  driver built.
"""
from __future__ import annotations

import time
from collections import deque

import pytest
import serial

from emulator.testing.peers import TlsServer

HOST = "www.iottest.work"   # (a name the test PKI's server certificate carries)
IDLE = 0.015              # UART idle-line gap that ends a DMA burst (modelled)

CA_FILE, CLIENT_FILE, KEY_FILE = "RAM:cacert.pem", "RAM:client.pem", "RAM:user_key.pem"


def xor16(data: bytes) -> int:
    """The FILE manuals' checksum, written out here (not the emulator's helper)."""
    if len(data) % 2:
        data += b"\0"
    c = 0
    for i in range(0, len(data), 2):
        c ^= (data[i] << 8) | data[i + 1]
    return c


def cstr(seg: bytes) -> bytes:
    return seg.split(b"\0", 1)[0]


def c_sscanf_qfupl(s: bytes | None) -> tuple[int, int, int]:
    """sscanf(s, "+QFUPL: %d,%x\\r\\n", &a, &b) -> (count, a, b); count -1 = EOF.
    s None: strstr() found nothing and the driver passes NULL.  On its MCU address 0 is the
    vector table (initial SP, whose first byte is not '+'): modelled as a matching failure,
    0 conversions -- the only reading under which the author's upload ever succeeded."""
    if s is None:
        return 0, 0, 0
    s = cstr(s)
    lit = b"+QFUPL:"
    if not s:
        return -1, 0, 0
    if not s.startswith(lit):
        return 0, 0, 0
    i = len(lit)
    # " " in the format: any whitespace; then %d skips whitespace too
    while i < len(s) and s[i:i + 1] in b" \t\r\n":
        i += 1
    if i >= len(s):
        return -1, 0, 0
    j = i + (1 if s[i:i + 1] in b"+-" else 0)
    k = j
    while k < len(s) and s[k:k + 1].isdigit():
        k += 1
    if k == j:
        return 0, 0, 0
    a = int(s[i:k])
    if s[k:k + 1] != b",":
        return 1, a, 0
    i = k + 1
    while i < len(s) and s[i:i + 1] in b" \t\r\n":
        i += 1
    k = i
    while k < len(s) and s[k:k + 1] in b"0123456789abcdefABCDEF":
        k += 1
    if k == i:
        return 1, a, 0
    return 2, a, int(s[i:k], 16)


def split_burst(buf: bytes) -> list[bytes]:
    """lte_module_send_queue(): one UART burst -> the segments queued for the AT task."""
    n = len(buf)
    b = buf + b"\0" * 8          # (reads past the burst: the static buffer, zero here)
    segs: list[bytes] = []
    i = bk = 0
    while i < n:
        if b[i] == 0x0D and b[i + 1] == 0x0A and i != bk and i > 2:
            i += 2
            if b[bk] == ord("+"):
                if b[i:i + 6] == b"\r\nOK\r\n":
                    i += 6
                elif b[i:i + 4] == b"OK\r\n":
                    i += 4
                segs.append(b[bk:i])            # (+BLE / +WRITE: go to the BLE queue)
            elif b"+QIRD:" in cstr(b[bk:]):
                segs.append(b[bk:bk + n])       # w_data_len_in bytes from the segment
            else:
                segs.append(b[bk:i])
            bk = i
        i += 1
    if (i - bk) != 1 or (n - bk) != 0:
        segs.append(b[bk:i])
    return segs


class YlEngine:
    """lte_module_driver_at_cmd_transmit() over the pty."""

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.queue: deque[bytes] = deque()
        self.wire_tx = bytearray()
        self.wire_rx = bytearray()
        self.bursts: list[bytes] = []
        self.seen: list[bytes] = []         # segments handed to receive functions

    def close(self) -> None:
        self.ser.close()

    def _burst(self, wait: float) -> bytes:
        self.ser.timeout = wait
        first = self.ser.read(1)
        if not first:
            return b""
        data = bytearray(first)
        self.ser.timeout = IDLE
        while True:
            more = self.ser.read(4096)
            if not more:
                break
            data += more
        self.wire_rx += data
        self.bursts.append(bytes(data))
        return bytes(data)

    def write(self, data: bytes) -> None:
        self.wire_tx += data
        self.ser.write(data)
        self.ser.flush()

    def transmit(self, timeout_ms: int, send: bytes | None, receive) -> int:
        if send is not None:
            self.write(send)
        while True:
            deadline = time.monotonic() + timeout_ms / 1000
            while not self.queue:
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0
                burst = self._burst(min(left, 0.1))
                if burst:
                    self.queue.extend(split_burst(burst))
            seg = self.queue.popleft()
            self.seen.append(seg)
            r = receive(seg)
            if r in (5, 1):
                return 1
            if r == 4:
                return 2
            if r == 0:
                return 0
            # 2 / 3: dropped, wait for the next segment


# --- lte_module_ssl_at_driver.c, step by step ---------------------------------------------

class SslDriver:
    def __init__(self, eng: YlEngine, ctx: int, certs: dict[str, bytes]) -> None:
        self.eng = eng
        self.ctx = ctx
        self.certs = certs               # what pfunc_ssl_cert_read() hands out
        self.w_cert_length = 0
        self.step2_parsed: list[tuple[int, int, int]] = []
        self.step1_loops = 0

    # AT+QFUPL="<name>",<len>,100 -> CONNECT
    def _step1(self, name: str, on_407: int) -> int:
        body = self.certs[name]
        self.w_cert_length = len(body)

        def rx(seg: bytes) -> int:
            if len(seg) <= 11 and b"CONNECT" in cstr(seg):
                return 1
            if b"+CME ERROR: 407" in cstr(seg):
                return on_407
            return 0
        return self.eng.transmit(3000, b'AT+QFUPL="%s",%d,100\r\n' % (name.encode(), len(body)), rx)

    def _rx_step2(self, seg: bytes) -> int:
        s = cstr(seg)
        p = s.find(b"+QFUPL:")
        cnt, size, csum = c_sscanf_qfupl(None if p < 0 else s[p:])
        if p >= 0:
            self.step2_parsed.append((cnt, size, csum))
        if cnt != 0 and size != self.w_cert_length:
            return 0
        return 1 if b"OK" in s else 2

    def _cfg(self, cmd: bytes) -> int:
        return self.eng.transmit(3000, cmd, lambda seg: 1 if len(seg) <= 8 and b"OK" in cstr(seg) else 0)

    def configure(self) -> bool:
        """lte_module_driver_ssl_configure()."""
        for name, key, on_407 in ((CA_FILE, "cacert", 0), (CLIENT_FILE, "clientcert", 4),
                                  (KEY_FILE, "clientkey", 4)):
            if not self.upload_file(name, key, on_407):
                return False
        for cmd in (b'AT+QSSLCFG="seclevel",%d,2\r\n', b'AT+QSSLCFG="sslversion",%d,4\r\n',
                    b'AT+QSSLCFG="ciphersuite",%d,0xFFFF\r\n',
                    b'AT+QSSLCFG="ignorelocaltime",%d,1\r\n'):
            if self._cfg(cmd % self.ctx) != 1:
                return False
        return True

    def upload_file(self, name: str, cfg_key: str, on_407: int, max_loops: int = 3) -> bool:
        self.step1_loops = 0
        while True:
            r = self._step1(name, on_407)
            self.step1_loops += 1
            if r == 1:
                break
            if r == 0 or self.step1_loops >= max_loops:     # (the driver has no such bound)
                return False
        # step2: the certificate bytes in one write (ssl_cert_read_content), then +QFUPL / OK
        if self.eng.transmit(3000, self.certs[name], self._rx_step2) != 1:
            return False
        # step3: AT+QSSLCFG="<key>",<ctx>,"<name>"
        return self._cfg(b'AT+QSSLCFG="%s",%d,"%s"\r\n' % (cfg_key.encode(), self.ctx,
                                                          name.encode())) == 1


# --- plain commands through the same engine (the socket layer is not in the store) -------

def wait_seg(eng: YlEngine, needle: bytes, timeout_ms: int = 10000) -> bytes | None:
    got: list[bytes] = []

    def rx(seg: bytes) -> int:
        if needle in seg:
            got.append(seg)
            return 1
        return 2
    return got[0] if eng.transmit(timeout_ms, None, rx) == 1 else None


def cmd_ok(eng: YlEngine, cmd: bytes, timeout_ms: int = 5000) -> bool:
    def rx(seg: bytes) -> int:
        s = cstr(seg)
        if b"OK" in s:
            return 1
        if b"ERROR" in s:
            return 0
        return 2
    return eng.transmit(timeout_ms, cmd, rx) == 1


@pytest.fixture
def eng(driver_path):
    e = YlEngine(driver_path)
    # the bring-up's ATE0 (not in this file): the echo "ATE0\r" and "\r\nOK\r\n" in one burst
    assert cmd_ok(e, b"ATE0\r\n")
    e.queue.clear()
    assert cmd_ok(e, b'AT+QICSGP=1,1,"CMNET","","",1\r\n')
    assert cmd_ok(e, b"AT+QIACT=1\r\n", 15000)
    yield e
    e.close()


def certs_of(pki) -> dict[str, bytes]:
    return {CA_FILE: pki.ca.cert_pem, CLIENT_FILE: pki.client.cert_pem, KEY_FILE: pki.client.key_pem}


# --- tests ---------------------------------------------------------------------------------

def test_splitter_on_the_modules_framing():
    """lte_module_send_queue() on the bursts the SSL note prescribes: a burst's leading CR LF
    stays with its first line; "+QFUPL: ..." and its OK are two segments (the '+' merge only
    for a line that does not start the burst); one byte past a final cut pushes nothing."""
    assert split_burst(b"\r\nOK\r\n") == [b"\r\nOK\r\n"]
    assert split_burst(b"\r\nCONNECT\r\n") == [b"\r\nCONNECT\r\n"]
    assert split_burst(b"\r\n+QFUPL: 1288,3c1f\r\n\r\nOK\r\n") == [
        b"\r\n+QFUPL: 1288,3c1f\r\n", b"\r\nOK\r\n"]
    assert split_burst(b"\r\nOK\r\n+QSSLCFG: 1\r\n\r\nOK\r\n") == [
        b"\r\nOK\r\n", b"+QSSLCFG: 1\r\n\r\nOK\r\n"]
    assert split_burst(b"ATE0\r\r\nOK\r\n") == [b"ATE0\r\r\n", b"OK\r\n"]
    assert c_sscanf_qfupl(b"+QFUPL: 1288,3c1f\r\n") == (2, 1288, 0x3C1F)


def test_configure_uploads_three_pems_and_the_context_carries_mutual_tls(eng, emulator, pki):
    """lte_module_driver_ssl_configure() on context 0: every step's receive accepts the
    emulator's segments -- "\\r\\nCONNECT\\r\\n" is 11 bytes (<= 11), each "+QFUPL: <len>,<cs>"
    segment parses with sscanf to the length sent, each AT+QSSLCFG answer "\\r\\nOK\\r\\n" is 6
    bytes (<= 8).  The checksums (parsed, never checked by the driver) are the manual's XOR of
    the PEMs in lowercase hex.  Then the context (seclevel 2) opens to a peer that requires a
    client certificate: the handshake presents "modem client", 1000 bytes echo back intact."""
    d = SslDriver(eng, 0, certs_of(pki))
    assert d.configure() is True
    assert [(c, s) for c, s, _ in d.step2_parsed] == [(2, len(b)) for b in d.certs.values()]
    assert [cs for _, _, cs in d.step2_parsed] == [xor16(b) for b in d.certs.values()]
    for body in d.certs.values():
        assert (b"\r\n+QFUPL: %d,%x\r\n" % (len(body), xor16(body))) in bytes(eng.wire_rx)
    assert eng.seen.count(b"\r\nCONNECT\r\n") == 3
    # (the OK after +QFUPL reached the data step as its own segment: strstr(...,"+QFUPL:")
    # is NULL there and the driver hands sscanf a NULL pointer -- its quirk, not the module's)
    assert eng.seen.count(b"\r\nOK\r\n") >= 3 + 3 + 4
    assert b'AT+QSSLCFG="ciphersuite",0,0xFFFF\r\n' in bytes(eng.wire_tx)
    assert not eng.queue

    with TlsServer(pki.server, mode="echo", legacy=True, client_ca=pki.ca,
                   require_client_cert=True) as srv:
        emulator.router.add_map(HOST, 8883, "127.0.0.1", srv.port)
        assert cmd_ok(eng, b'AT+QSSLOPEN=1,0,2,"%s",8883,0\r\n' % HOST.encode())
        seg = wait_seg(eng, b"+QSSLOPEN:", 15000)
        assert seg is not None and cstr(seg).strip() == b"+QSSLOPEN: 2,0"
        conn = srv.wait_handshake()
        assert conn.client_cert is not None and "modem client" in conn.client_cert_subject
        data = bytes(range(256)) * 3 + b"yl-lte" * 38 + b"end!"
        assert len(data) == 1000
        prompt = []
        eng.transmit(3000, b"AT+QSSLSEND=2,%d\r\n" % len(data),
                     lambda s: (prompt.append(s), 1)[1] if b">" in s else 0)
        assert prompt and cstr(prompt[0]).endswith(b"> ")
        eng.write(data)
        assert wait_seg(eng, b"SEND OK") is not None
        assert srv.wait_received(len(data)) == data
        assert wait_seg(eng, b'+QSSLURC: "recv",2') is not None
        # read back with the engine; the payload is raw bytes after "+QSSLRECV: <n>\r\n"
        eng.queue.clear()
        got = bytearray()
        deadline = time.monotonic() + 10
        while len(got) < len(data) and time.monotonic() < deadline:
            start = len(eng.wire_rx)
            eng.write(b"AT+QSSLRECV=2,1500\r\n")
            while not bytes(eng.wire_rx[start:]).endswith(b"\r\nOK\r\n") and \
                    time.monotonic() < deadline:
                eng._burst(0.2)
            resp = bytes(eng.wire_rx[start:])
            head, _, rest = resp.partition(b"\r\n+QSSLRECV: ")
            n, _, body = rest.partition(b"\r\n")
            got += body[:int(n)]
        eng.queue.clear()
        assert bytes(got) == data
        assert cmd_ok(eng, b"AT+QSSLCLOSE=2\r\n", 10000)


def test_reconfigure_without_reboot_ca_step_fails_on_407(eng, pki):
    """Running lte_module_driver_ssl_configure() a second time (RAM: files survive until a
    restart): the CA step's AT+QFUPL is refused before CONNECT with "+CME ERROR: 407" (file
    already exists, FILE manual; docs/behaviour.md "delete first") and that receive maps 407
    to failure -- the whole configure returns FALSE at once, no certificate byte is sent."""
    d = SslDriver(eng, 1, certs_of(pki))
    assert d.configure() is True
    sent = len(eng.wire_tx)
    d2 = SslDriver(eng, 1, certs_of(pki))
    assert d2.configure() is False
    assert bytes(eng.wire_tx[sent:]) == b'AT+QFUPL="RAM:cacert.pem",%d,100\r\n' % len(pki.ca.cert_pem)
    assert eng.seen[-1] == b"\r\n+CME ERROR: 407\r\n"


def test_ca_deleted_but_client_cert_left_makes_the_client_step_repeat_on_407(eng, pki):
    """The driver's delete step for the CA (AT+QFDEL="RAM:cacert.pem") gets the manual's bare
    "\\r\\nOK\\r\\n" -- its receive wants len <= 11 AND "+QFDEL: cacert.pem", which no module
    prints (and which is 18 bytes), so it reports failure although the file is gone.  The next
    configure uploads the CA again, then the client certificate's AT+QFUPL meets 407, which
    that step maps to 4: transmit returns 2 and the state machine sends the same AT+QFUPL
    again, for ever (bounded to 3 here).  The module answers each one 407 the same way and
    never enters data mode, so the host's loop at least costs no stray data."""
    d = SslDriver(eng, 0, certs_of(pki))
    assert d.configure() is True
    r = eng.transmit(3000, b'AT+QFDEL="RAM:cacert.pem"\r\n',
                     lambda seg: 1 if len(seg) <= 11 and b"+QFDEL: cacert.pem" in cstr(seg) else 0)
    assert r == 0
    assert eng.seen[-1] == b"\r\nOK\r\n"
    d2 = SslDriver(eng, 0, certs_of(pki))
    assert d2.upload_file(CA_FILE, "cacert", 0) is True
    assert d2.upload_file(CLIENT_FILE, "clientcert", 4) is False
    assert d2.step1_loops == 3
    assert eng.seen[-3:] == [b"\r\n+CME ERROR: 407\r\n"] * 3
    # still in command mode: the next command is answered normally
    assert cmd_ok(eng, b"AT\r\n")
    assert not eng.queue


def test_echo_left_on_breaks_the_first_qsslcfg_step(driver_path):
    """Without the bring-up's ATE0 (the module boots with echo on) the echo "AT+QSSLCFG=...\\r"
    and the result arrive in one burst; the splitter makes the echo (+ CR CR LF) the first
    segment, longer than 8 bytes, and the step fails at once.  Module behaviour as the
    manuals describe (V.25ter echo), the driver's precondition."""
    e = YlEngine(driver_path)
    try:
        cmd = b'AT+QSSLCFG="seclevel",0,2\r\n'
        r = e.transmit(3000, cmd, lambda seg: 1 if len(seg) <= 8 and b"OK" in cstr(seg) else 0)
        assert r == 0
        assert e.seen[0].startswith(b'AT+QSSLCFG="seclevel",0,2\r')
    finally:
        e.close()
