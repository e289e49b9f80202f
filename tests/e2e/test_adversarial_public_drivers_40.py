"""Adversarial tests: a fortieth set of public host code pointed at the pty -- two programs that
drive the EC2x SSL and file commands and that earlier rounds did not replay (a search of tests/
for "at_ssl_cacert_save", "_qsslopen", "QST_SSL_CA", "SocketSslOpen", "IoTHubRecieve" and
"890046f" finds nothing; test_adversarial_public_drivers_3.py replayed the SAME Wio LTE
repository's later TCP-only AtSerial code, not this branch's SSL functions nor its ModuleSerial),
replayed through the pty with each program's own line endings, waits and parsers against loopback
OpenSSL (Python ssl) peers; every host name / address dialled is routed to 127.0.0.1.

Programs replayed (public source read through the reference store; paraphrased, not copied):

- A Quectel "cat1" SSL example on RT-Thread's AT client (at_client_ssl.c, store file id
  26168736230; the store did not name its repository -- Quectel's own test CA for
  112.31.84.164:8381 and the APN "QUECTEL.VF.STD" are in it).  It runs over RT-Thread's
  components/net/at/src/at_client.c, modelled by test_adversarial_rtthread_espmodem.RtAtClient
  (imported: command + CR LF; a line ends at CR LF, at the end sign, or as soon as the bytes
  so far match a URC prefix+suffix; blank lines are counted; "OK" ends a line_num 0 response,
  any line holding "ERROR" fails it).  What the model keeps:
  * at_ssl_client_init(): at_client_init("uart1", 512, 512), one shared response of 512 bytes
    / 0 lines / 3000 ms, five counting semaphores and the URC table "+QSSLOPEN:" / "+QSSLURC:" /
    "+QFUPL:" / "RDY" / "POWERED DOWN" (all with suffix CR LF).  urc_func(): +QSSLOPEN releases
    its semaphore ONLY when data[13] is '0' (i.e. "+QSSLOPEN: 4,0"); any +QSSLURC (recv or
    closed) releases the other.
  * at_ssl_cacert_save(): AT+QFDEL="UFS:<name>" (its error ignored), then
    AT+QFUPL="<name>",<len>,100,0 on a response of TWO lines (the blank line and CONNECT), the
    PEM (CR LF lines, as its QST_SSL_CA) in one at_client_obj_send(), the +QFUPL URC within
    8 s.
  * at_ssl_connect(): the end sign set to '>' (and never reset), AT+QFOPEN="<name>",2 with line 2
    parsed "+QFOPEN: %d", AT+QFCLOSE=<handle>, AT+QIACT? (line 2 "+QIACT: %*d,%d"; anything
    but 1 -> AT+QIACT=1), AT+QSSLCFG "sslversion",1,4 / "ciphersuite",1,0XFFFF / "seclevel",1,0 /
    "cacert",1,"UFS:<name>", AT+QSSLOPEN=1,1,4,"<host>",<port>,0, the +QSSLOPEN semaphore
    (60 s, scaled to 6 s), AT+QSSLSTATE; any failure -> at_ssl_close().
  * at_ssl_send(): AT+QSSLSEND=4,<len> ended by the '>' end sign, then the bytes; SEND OK is
    left to the parser (a line nobody waits for).  at_ssl_check(): the +QSSLURC semaphore (8 s),
    AT+QSSLRECV=4,1024, line 3 scanned "%[^\\r\\n]" must contain "200 OK".  at_ssl_close():
    AT+QSSLCLOSE=4.
  * example_at_ssl() / example_at_ssl1() (save, connect, send "0123456789", check, close) and the
    cat1_* helpers: cat1_check_state() (AT up to 10 times, 1000 ms), cat1_enable_echo(0),
    cat1_set_network_config() (AT+QGMR, AT+CEREG=2, AT+QICSGP=1,1,"QUECTEL.VF.STD","","",1,
    AT+QIACT?), cat1_check_network() (AT+CEREG? line 2 "+CEREG: %d,%d", stat 1 or 5; 5 s between
    tries, scaled), cat1_qpowd() + cat1_wait_powered_down() + cat1_wait_rdy() (15 s each).

- SeeedJP/WioLTEforArduino at 890046f359ec7a30b97121ef2d27b8219e64b0c8 ("for Azure IoTHub",
  2018-02-19, an Azure IoT Hub branch for the Wio LTE's EC21 on v1.1.9): WioLTE.cpp
  (SetSSLCFG, IoTHubRecieve's DELETE, SocketSslOpen / SocketSslSend / SocketSslClose,
  TurnOnOrReset, Activate), ModuleSerial.cpp and ArgumentParser.cpp at the same commit, and
  examples/WioLTE_IoTHub_Recieve.  What the model keeps:
  * ModuleSerial: WriteCommand() = command + CR; ReadResponse(match, byte_timeout) -- bytes one
    at a time, giving up (NULL) when the next byte takes longer than 10 ms (the C then reads
    NULL[0]: the model counts such torn lines); a line ends at CR LF (returned without it); with
    WFR_WITHOUT_DELIM a response equal to the pattern (the "> " prompt) ends it too.
    WaitForResponse(): empty lines skipped; a line equal to waitResponse, or (pattern) equal /
    starting with the pattern, is returned; anything else dropped.
  * ArgumentParser: split at commas outside quotes, a quoted argument unquoted.
  * TurnOnOrReset() after RDY (AT every 500 ms until OK, ATE0, AT+QURCCFG="urcport","uart1",
    AT+QSCLK=1 OK or ERROR, AT+CPIN? until OK); Activate(): AT+CGREG? / AT+CEREG? ("+CGREG: "
    stripped, field 1 must be 1 or 5), AT+QICSGP=1,1,"soracom.io","sora","sora",1, AT+QIACT=1
    (OK or ERROR, 150 s).
  * SetSSLCFG(url) for "https:": AT+QHTTPCFG="sslctxid",1 then the three AT+QSSLCFG lines of
    context 1, each "OK" in 1000 ms -- a failure returns RET_ERR(-1), which the bool function
    turns into TRUE.
  * SocketSslOpen(): AT+QSSLSTATE, lines until "OK" (10 s); a line starting "+QSSLSTATE: "
    is parsed from its 10th byte (": <id>,..."): atoi() of field 0 is therefore always 0; the
    lowest id not marked used is taken; AT+QSSLOPEN=1,1,<id>,"<host>",<port> (NO access mode),
    "OK" (150 s) and then the exact line "+QSSLOPEN: <id>,0" (150 s; both scaled to 3 s).
  * SocketSslSend(): at most 1460 bytes, AT+QSSLSEND=<id>,<n>, the "> " prompt within 500 ms,
    the bytes, "SEND OK" within 5 s.  SocketSslClose(): AT+QSSLCLOSE=<id>, "OK" within 10 s.
  * IoTHubRecieve()'s second half: the DELETE request built from the URL / ETag / SAS by its
    String operations (into a 512-byte buffer), sent through a fresh SocketSslOpen(host, 443),
    then closed without reading the answer.  (Its first half and IoTHubSend() use AT+QHTTP*,
    which the emulator does not model: not replayed.)
  The 500 ms / 10 ms waits are widened by test_adversarial_rtthread_espmodem.SLOW for a loaded
  2-core machine; the minute-long ones are shortened (they only bound waits that end early).
"""
from __future__ import annotations

import re
import threading
import time

import pytest
import serial

from emulator.testing.peers import TlsServer
from emulator.testing.peers.tls_server import reply_after
from tests.e2e.test_adversarial_public_drivers_23 import atoi   # (C atoi(), as the programs call it)
from tests.e2e.test_adversarial_rtthread_espmodem import RESP_OK, SLOW, RtAtClient

QST_HOST, QST_PORT = "112.31.84.164", 8381
AWS_HOST = "quecs3demo.s3.eu-central-1.amazonaws.com"


def crlf_pem(pem: bytes) -> bytes:
    """The example's CA strings end every PEM line with CR LF."""
    return pem.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n").rstrip(b"\r\n")


# =================================================================================================
# The RT-Thread "cat1" SSL example (at_client_ssl.c, store id 26168736230)
# =================================================================================================
SEM_OPEN_WAIT = 6.0          # rt_sem_take(_qsslopen, 60000), scaled
SEM_URC_WAIT = 8.0           # rt_sem_take(_qsslurc / _qfupl, 8000)
SEM_POWER_WAIT = 15.0        # cat1_wait_rdy / cat1_wait_powered_down


def line_arg(lines: list[bytes], n: int, pattern: bytes):
    """at_resp_parse_line_args(resp, n, fmt): sscanf() of the n-th line (1-based); None when the
    line is missing or the conversion fails (return <= 0)."""
    if n > len(lines):
        return None
    return re.match(pattern, lines[n - 1])


class QlCat1Ssl:
    """at_client_ssl.c on RT-Thread's AT client."""

    def __init__(self, path: str) -> None:
        self.c = RtAtClient(path, recv_bufsz=512)
        self.urcs: list[bytes] = []
        self.wire_tx = bytearray()
        self._sems_init()

    def close(self) -> None:
        self.c.close()

    def _sems_init(self) -> None:
        self.sem = {k: threading.Semaphore(0)
                    for k in ("qsslopen", "qsslurc", "qfupl", "rdy", "powered_down")}

    def _urc(self, client, data: bytes) -> None:
        self.urcs.append(data)
        if data.startswith(b"+QSSLOPEN") and data[13:14] == b"0":
            self.sem["qsslopen"].release()
        elif data.startswith(b"+QSSLURC"):
            self.sem["qsslurc"].release()
        elif data.startswith(b"+QFUPL"):
            self.sem["qfupl"].release()
        elif data.startswith(b"RDY"):
            self.sem["rdy"].release()
        elif data.startswith(b"POWERED DOWN"):
            self.sem["powered_down"].release()

    def exec(self, cmd: str, line_num: int = 0, timeout: float = 3.0, size: int = 512):
        self.wire_tx += cmd.encode() + b"\r\n"
        return self.c.exec_cmd(cmd, line_num, timeout, size)

    # --- cat1_* helpers ------------------------------------------------------------------------
    def check_state(self) -> bool:
        for _ in range(10):
            if self.exec("AT", 0, 1.0)[0] == RESP_OK:
                return True
        return False

    def enable_echo(self, enable: int) -> bool:
        return self.exec("ATE1" if enable else "ATE0", 0, 3.0, 128)[0] == RESP_OK

    def set_network_config(self) -> bool:
        for cmd in ("AT+QGMR", "AT+CEREG=2", 'AT+QICSGP=1,1,"QUECTEL.VF.STD","","",1', "AT+QIACT?"):
            if self.exec(cmd, 0, 3.0, 128)[0] != RESP_OK:
                return False
        return True

    def check_network(self, retry_times: int) -> bool:
        for _ in range(retry_times):
            _, lines = self.exec("AT+CEREG?", 0, 3.0, 128)
            m = line_arg(lines, 2, rb"\+CEREG:\s*([-+]?\d+),\s*([-+]?\d+)")
            if m and int(m.group(2)) in (1, 5):
                return True
            time.sleep(0.05)                                 # rt_thread_mdelay(5000), scaled
        return False

    def qpowd(self) -> str:
        return self.exec("AT+QPOWD", 0, 5.0)[0]

    # --- the SSL functions -----------------------------------------------------------------------
    def client_init(self) -> None:
        self._sems_init()
        self.c.urc_table = [(p, b"\r\n", self._urc) for p in
                            (b"+QSSLOPEN:", b"+QSSLURC:", b"+QFUPL:", b"RDY", b"POWERED DOWN")]

    def cacert_save(self, name: str, data: bytes) -> bool:
        self.exec(f'AT+QFDEL="UFS:{name}"')                 # (its error only logged)
        if self.exec(f'AT+QFUPL="{name}",{len(data)},100,0', 2, 3.0)[0] != RESP_OK:
            return False
        self.wire_tx += data
        self.c.send(data)
        return self.sem["qfupl"].acquire(timeout=SEM_URC_WAIT)

    def connect(self, cacert: str, host: str, port: int) -> bool:
        self.c.end_sign = ord(">")
        ok = self._connect(cacert, host, port)
        if not ok:
            self.ssl_close()
        return ok

    def _connect(self, cacert: str, host: str, port: int) -> bool:
        st, lines = self.exec(f'AT+QFOPEN="{cacert}",2')
        if st != RESP_OK:
            return False
        m = line_arg(lines, 2, rb"\+QFOPEN:\s*([-+]?\d+)")
        if not m:
            return False
        self.file_handle = int(m.group(1))
        if self.exec(f"AT+QFCLOSE={self.file_handle}")[0] != RESP_OK:
            return False
        st, lines = self.exec("AT+QIACT?")
        if st != RESP_OK:
            return False
        m = line_arg(lines, 2, rb"\+QIACT:\s*[-+]?\d+,\s*([-+]?\d+)")
        self.pdp_status = int(m.group(1)) if m else 0
        if self.pdp_status != 1:
            self.pdp_status = 0
        if self.pdp_status == 0 and self.exec("AT+QIACT=1")[0] != RESP_OK:
            return False
        for cmd in ('AT+QSSLCFG="sslversion",1,4', 'AT+QSSLCFG="ciphersuite",1,0XFFFF',
                    'AT+QSSLCFG="seclevel",1,0', f'AT+QSSLCFG="cacert",1,"UFS:{cacert}"',
                    f'AT+QSSLOPEN=1,1,4,"{host}",{port},0'):
            if self.exec(cmd)[0] != RESP_OK:
                return False
        if not self.sem["qsslopen"].acquire(timeout=SEM_OPEN_WAIT):
            return False
        st, self.state_lines = self.exec("AT+QSSLSTATE")
        return st == RESP_OK

    def ssl_send(self, data: bytes) -> bool:
        if self.exec(f"AT+QSSLSEND=4,{len(data)}")[0] != RESP_OK:
            return False
        self.wire_tx += data
        return self.c.send(data) == len(data)

    def ssl_check(self) -> bool:
        self.recv_lines = None
        if not self.sem["qsslurc"].acquire(timeout=SEM_URC_WAIT):
            return False
        st, lines = self.exec("AT+QSSLRECV=4,1024")
        self.recv_status, self.recv_lines = st, lines
        if st != RESP_OK:
            return False
        m = line_arg(lines, 3, rb"([^\r\n]+)")
        return bool(m) and b"200 OK" in m.group(1)

    def ssl_close(self) -> bool:
        self.exec("AT+QSSLCLOSE=4")
        return True

    def example(self, name: str, ca: bytes, host: str, port: int) -> tuple[bool, str]:
        """example_at_ssl() / example_at_ssl1(): (ok, the step that failed)."""
        self.client_init()
        for step, fn in (("save", lambda: self.cacert_save(name, ca)),
                         ("connect", lambda: self.connect(name, host, port)),
                         ("send", lambda: self.ssl_send(b"0123456789")),
                         ("check", self.ssl_check),
                         ("close", self.ssl_close)):
            if not fn():
                return False, step
        return True, ""


def rtt_split(wire: bytes, end_sign: int, size: int) -> tuple[list[bytes], bytes]:
    """What at_client.c stores for a line_num 0 response whose bytes are `wire`: lines cut at
    CR LF or at the end sign, the last byte of each cut, appended while the 512-byte buffer has
    room; the response ENDS at the first line ending in the end sign (or starting "OK").
    Returns (stored lines, the bytes left for the parser's later lines)."""
    lines, buf, last, used = [], bytearray(), 0, 0
    for i, ch in enumerate(wire):
        buf.append(ch)
        if (ch == 0x0A and last == 0x0D) or ch == end_sign:
            if used + len(buf) < size:
                lines.append(bytes(buf[:-1]))
                used += len(buf)
            if ch == end_sign or buf.startswith(b"OK"):
                return lines, wire[i + 1:]
            buf.clear()
            last = 0
            continue
        last = ch
    return lines, b""


def http_200(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@pytest.fixture
def cat1(driver_path):
    drv = QlCat1Ssl(driver_path)
    yield drv
    drv.close()


def cat1_up(drv: QlCat1Ssl) -> None:
    """The bring-up the example's board runs: AT, ATE0, the network config (context NOT
    activated there: AT+QIACT? only), AT+CEREG? until registered."""
    assert drv.check_state()
    assert drv.enable_echo(0)
    assert drv.set_network_config()
    assert drv.check_network(3)


def test_cat1_example_uploads_ca_activates_opens_sends_and_finds_200_ok(cat1, emulator, pki):
    """at_client_ssl.c example_at_ssl() against Quectel's test address (routed to a loopback
    OpenSSL peer that answers an HTTP 200 once it got the ten bytes): AT+QFDEL of the missing
    file fails and is ignored; AT+QFUPL's two-line response is the blank line + CONNECT; the PEM
    (CR LF lines) is taken byte-exact (size and XOR checksum in "+QFUPL: <len>,<cks>", which is
    dispatched as a URC); QFOPEN's line 2 gives a
    handle that QFCLOSE accepts; the context is not active (no "+QIACT:" line 2) so the example
    activates it; the open's "+QSSLOPEN: 4,0" has '0' at byte 13; the '>' end sign ends the
    send prompt; the peer gets exactly "0123456789"; the recv URC releases the semaphore and
    line 3 of AT+QSSLRECV=4,1024 is the status line; AT+QSSLCLOSE=4 OK."""
    drv = cat1
    cat1_up(drv)
    ca = crlf_pem(pki.ca.cert_pem)
    body = b"quectel ssl test ok"
    with TlsServer(pki.server, handler=reply_after(10, http_200(body)), legacy=True) as srv:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", srv.address[1])
        ok, step = drv.example("cacert_st.pem", ca, QST_HOST, QST_PORT)
        assert ok, (step, drv.urcs, drv.c.dropped_lines)
        assert srv.wait_received(10) == b"0123456789"
        conn = srv.wait_handshake()
        assert conn.version in ("TLSv1.2", "TLSv1.1", "TLSv1")
    # The file holds exactly the PEM (the command's CR LF ended it; the LF is no data byte):
    # "+QFUPL: <size>,<checksum>" with the file note's XOR of 16-bit big-endian words, in hex.
    padded = ca + b"\0" * (len(ca) % 2)
    xor = 0
    for k in range(0, len(padded), 2):
        xor ^= padded[k] << 8 | padded[k + 1]
    assert b"+QFUPL: %d,%x\r\n" % (len(ca), xor) in drv.urcs, drv.urcs
    assert drv.pdp_status == 0                      # "+QIACT:" absent -> AT+QIACT=1 was sent
    assert b"AT+QIACT=1\r\n" in drv.wire_tx
    assert drv.file_handle > 0
    assert b"+QSSLOPEN: 4,0\r\n" in drv.urcs
    assert any(u.startswith(b'+QSSLURC: "recv",4') for u in drv.urcs), drv.urcs
    assert drv.recv_lines[1].startswith(b"+QSSLRECV: %d" % len(http_200(body)))
    assert drv.recv_lines[2] == b"HTTP/1.1 200 OK\r"
    assert any(ln.startswith(b"+QSSLSTATE: 4,") for ln in drv.state_lines), drv.state_lines
    # SEND OK reached the parser as a line nobody waited for, and no line was too long.
    assert any(ln.startswith(b"SEND OK") for ln in drv.c.dropped_lines), drv.c.dropped_lines
    assert drv.c.full_lines == 0


def test_cat1_second_example_reuses_the_file_name_with_the_end_sign_left_on(cat1, emulator, pki):
    """example_at_ssl() then example_at_ssl1() (a second CA file, AWS's host on 443) on the same
    client: the end sign '>' set by the first connect is never cleared, so the second upload's
    CONNECT and every later answer go through it; the second run's QIACT? now reports context 1
    active (no second AT+QIACT=1); no SNI is sent (the example never sets "sni", default 0);
    the first id 4 socket, closed by the first run, opens again.
    Then example_at_ssl() once more: AT+QFDEL of the file it uploaded first now answers OK,
    and the new upload (another size) replaces it -- QFOPEN/QFCLOSE and the run succeed."""
    drv = cat1
    cat1_up(drv)
    ca = crlf_pem(pki.ca.cert_pem)
    with TlsServer(pki.server, handler=reply_after(10, http_200(b"a")), legacy=True) as a, \
            TlsServer(pki.server, handler=reply_after(10, http_200(b"b" * 300)), legacy=True) as b:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", a.address[1])
        emulator.router.add_map(AWS_HOST, 443, "127.0.0.1", b.address[1])
        assert drv.example("cacert_st.pem", ca, QST_HOST, QST_PORT) == (True, "")
        assert drv.c.end_sign == ord(">")
        assert drv.example("cacert1.pem", ca + b"\r\n", AWS_HOST, 443) == (True, "")
        assert drv.pdp_status == 1
        assert drv.wire_tx.count(b"AT+QIACT=1\r\n") == 1
        assert b.wait_received(10) == b"0123456789"
        assert b.wait_handshake().sni is None        # ("sni" never configured: default 0)
        mark = len(drv.wire_tx)
        assert drv.example("cacert_st.pem", ca + b"\r\n\r\n", QST_HOST, QST_PORT) == (True, "")
        assert a.wait_received(10, index=-1) == b"0123456789"
    assert b'AT+QFDEL="UFS:cacert_st.pem"\r\n' in drv.wire_tx[mark:]
    assert any(u.startswith(b"+QFUPL: %d," % (len(ca) + 4)) for u in drv.urcs)
    assert [u for u in drv.urcs if u.startswith(b"+QSSLOPEN:")] == [b"+QSSLOPEN: 4,0\r\n"] * 3


def test_cat1_check_reads_an_html_answer_cut_at_its_first_angle_bracket(cat1, emulator, pki):
    """A peer that answers with 1.7 KB of HTML: at_ssl_check()'s AT+QSSLRECV=4,1024 is parsed
    with the end sign '>' still on, so the response ENDS at the payload's first '>' (a line
    ending in the end sign completes a line_num 0 response): the stored lines must be exactly
    "+QSSLRECV: <n>", the HTTP head and "<html", line 3 is the status line so the check
    passes, and every later byte of the n -- and the CR LF CR LF OK after them -- reaches the
    parser as lines nobody waits for, in order and byte-exact (rebuilt from them, the wire
    is "+QSSLRECV: <n>" CR LF + the answer's first n bytes + CR LF CR LF OK CR LF).  The
    answer's remaining bytes stay in the module; AT+QSSLCLOSE=4 and a plain AT still work, and
    the next example run on id 4 reads only its own new answer."""
    drv = cat1
    cat1_up(drv)
    rows = b"".join(b"<tr><td>%04d</td><td>value-%04d</td></tr>\r\n" % (i, i) for i in range(40))
    answer = http_200(b"<html><body><table>\r\n" + rows + b"</table></body></html>\r\n")
    assert len(answer) > 1500
    with TlsServer(pki.server, handler=reply_after(10, answer), legacy=True) as srv:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", srv.address[1])
        drv.client_init()
        assert drv.cacert_save("cacert_st.pem", crlf_pem(pki.ca.cert_pem))
        assert drv.connect("cacert_st.pem", QST_HOST, QST_PORT)
        assert drv.ssl_send(b"0123456789")
        time.sleep(0.5)                              # (the whole answer in the module first)
        mark = len(drv.c.dropped_lines)
        assert drv.ssl_check(), drv.recv_lines
        m = re.match(rb"\+QSSLRECV: (\d+)\r$", drv.recv_lines[1])
        assert m, drv.recv_lines[:3]
        n = int(m.group(1))
        assert n == 1024
        wire = b"\r\n+QSSLRECV: %d\r\n" % n + answer[:n] + b"\r\n\r\nOK\r\n"
        expect, rest = rtt_split(wire, ord(">"), 512)
        assert drv.recv_lines == expect
        assert expect[-1] == b"<html" and drv.recv_status == RESP_OK
        deadline = time.monotonic() + 3
        while not (drv.c.dropped_lines and drv.c.dropped_lines[-1] == b"OK\r\n"):
            assert time.monotonic() < deadline, drv.c.dropped_lines[-3:]
            time.sleep(0.02)
        assert b"".join(drv.c.dropped_lines[mark:]) == rest
        assert drv.ssl_close()
        assert drv.exec("AT")[0] == RESP_OK
    # The next run opens id 4 again: nothing of the closed connection's unread ~700 bytes may
    # come back on it -- the new answer is read from its first byte.
    fresh_answer = http_200(b"fresh")
    with TlsServer(pki.server, handler=reply_after(10, fresh_answer), legacy=True) as srv2:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", srv2.address[1])
        assert drv.example("cacert_st.pem", crlf_pem(pki.ca.cert_pem), QST_HOST, QST_PORT) == (True, "")
        assert drv.recv_lines[1] == b"+QSSLRECV: %d\r" % len(fresh_answer)
        assert drv.recv_lines[2] == b"HTTP/1.1 200 OK\r"


def test_cat1_failed_check_leaves_id_4_open_next_run_fails_to_open_and_cleans_up(cat1, emulator, pki):
    """The board's loop with a server that answers 404: CHECK_FUNC_RUN() returns at the failed
    at_ssl_check() WITHOUT at_ssl_close(), so id 4 stays connected.  The next run's
    AT+QSSLOPEN=1,1,4,... must fail at once (ERROR: the clientID is in use) -- not open a second
    connection and not report through a URC -- and its ssl_end path's AT+QSSLCLOSE=4 frees the
    id (the old connection is closed at the peer).  The third run succeeds on id 4 again with a
    peer that closes right after its answer (close_notify, FIN): that only adds a "closed" URC
    (which releases the same counting semaphore); the data before it is still what
    AT+QSSLRECV returns after the "closed", and AT+QSSLCLOSE=4 answers OK."""
    drv = cat1
    cat1_up(drv)
    ca = crlf_pem(pki.ca.cert_pem)
    not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    with TlsServer(pki.server, handler=reply_after(10, not_found), legacy=True) as bad:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", bad.address[1])
        assert drv.example("cacert_st.pem", ca, QST_HOST, QST_PORT) == (False, "check")
        assert drv.recv_lines[2] == b"HTTP/1.1 404 Not Found\r"
        assert drv.example("cacert_st.pem", ca, QST_HOST, QST_PORT) == (False, "connect")
        assert drv.wire_tx.endswith(b'AT+QSSLOPEN=1,1,4,"%s",%d,0\r\nAT+QSSLCLOSE=4\r\n'
                                    % (QST_HOST.encode(), QST_PORT))
        assert len(bad.connections) == 1
        bad.wait_for(lambda: bad.connections[0].client_eof or bad.connections[0].close_notify_received,
                     5, "the first connection closed by the module")
    def answer_then_close(conn):
        while len(conn.received) < 10 and conn.recv():
            pass
        conn.sendall(http_200(b"bye"))
        conn.send_close_notify()
    with TlsServer(pki.server, handler=answer_then_close, legacy=True) as good:
        emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", good.address[1])
        urcs_before = len(drv.urcs)
        drv.client_init()
        assert drv.cacert_save("cacert_st.pem", ca)
        assert drv.connect("cacert_st.pem", QST_HOST, QST_PORT)
        assert drv.ssl_send(b"0123456789")
        assert good.wait_received(10) == b"0123456789"
        # (both URCs in before the check: the example's own race -- a "closed" URC whose
        # leading CR LF reaches the parser after AT+QSSLRECV went out is counted as a response
        # line and shifts line 3 -- is not what this test is about)
        deadline = time.monotonic() + 5
        while b'+QSSLURC: "closed",4\r\n' not in drv.urcs[urcs_before:]:
            assert time.monotonic() < deadline, drv.urcs[urcs_before:]
            time.sleep(0.02)
        assert drv.ssl_check(), drv.recv_lines
        assert drv.recv_lines[1] == b"+QSSLRECV: %d\r" % len(http_200(b"bye"))
        assert drv.ssl_close()
    opens = [u for u in drv.urcs if u.startswith(b"+QSSLOPEN:")]
    assert opens == [b"+QSSLOPEN: 4,0\r\n"] * 2, opens
    assert b'+QSSLURC: "recv",4\r\n' in drv.urcs[urcs_before:]


def test_cat1_refused_open_never_releases_the_semaphore_and_closes(cat1, emulator):
    """at_ssl_connect() to an address where nothing listens: AT+QSSLOPEN answers OK, the URC
    that follows carries an error (byte 13 is not '0') so urc_func() releases nothing, the wait
    runs out, the example closes the socket (AT+QSSLCLOSE=4 OK) -- the URC must come (not be
    swallowed) and must be the open's own "+QSSLOPEN: 4,<err>" with a non-zero err."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    drv = cat1
    cat1_up(drv)
    emulator.router.add_map(QST_HOST, QST_PORT, "127.0.0.1", dead)
    drv.client_init()
    assert drv.cacert_save("cacert_st.pem",
                           b"-----BEGIN CERTIFICATE-----\r\nAA==\r\n-----END CERTIFICATE-----")
    t0 = time.monotonic()
    assert not drv.connect("cacert_st.pem", QST_HOST, QST_PORT)
    assert time.monotonic() - t0 >= SEM_OPEN_WAIT - 0.5
    opens = [u for u in drv.urcs if u.startswith(b"+QSSLOPEN:")]
    assert len(opens) == 1 and opens[0].startswith(b"+QSSLOPEN: 4,") and opens[0][13:14] != b"0", opens
    assert atoi(opens[0][13:]) != 0
    assert drv.wire_tx.endswith(b"AT+QSSLCLOSE=4\r\n")
    assert drv.exec("AT+QSSLSTATE")[0] == RESP_OK


def test_cat1_qpowd_then_powered_down_and_rdy_urcs(cat1):
    """cat1_qpowd(): AT+QPOWD answered OK; cat1_wait_powered_down() gets its semaphore from the
    "POWERED DOWN" URC line, cat1_wait_rdy() from the RDY of the power-on that follows
    (docs/behaviour.md: a board whose PWRKEY is held low); then cat1_check_state() talks to the
    module again."""
    drv = cat1
    assert drv.check_state()
    drv.client_init()
    assert drv.qpowd() == RESP_OK
    assert drv.sem["powered_down"].acquire(timeout=SEM_POWER_WAIT)
    assert drv.sem["rdy"].acquire(timeout=SEM_POWER_WAIT)
    assert drv.check_state()
    assert b"POWERED DOWN\r\n" in drv.urcs and b"RDY\r\n" in drv.urcs


# =================================================================================================
# SeeedJP/WioLTEforArduino @ 890046f ("for Azure IoTHub"): ModuleSerial + WioLTE SSL functions
# =================================================================================================
WFR_WITHOUT_DELIM, WFR_START_WITH, WFR_REMOVE_START_WITH, WFR_GET_NULL_STRING, WFR_TIMEOUT_FOR_BYTE = \
    0x01, 0x02, 0x04, 0x08, 0x10
CONNECT_ID_NUM = 12
LONG_WAIT = 3.0              # the 150000 ms waits, scaled


def argument_parse(s: bytes) -> list[bytes]:
    """ArgumentParser::Parse()."""
    commas, in_string = [], False
    for i, ch in enumerate(s):
        if not in_string:
            if ch == 0x2C:
                commas.append(i)
            elif ch == 0x22:
                in_string = True
        elif ch == 0x22:
            in_string = False
    out = []
    for i in range(len(commas) + 1):
        begin = 0 if i == 0 else commas[i - 1] + 1
        end = commas[i] if i < len(commas) else len(s)
        if end - begin >= 2 and s[begin] == 0x22 and s[end - 1] == 0x22:
            begin, end = begin + 1, end - 1
        out.append(s[begin:end])
    return out


class WioModuleSerial:
    BYTE_GAP = 0.010 * SLOW

    def __init__(self, path: str) -> None:
        self.ser = serial.Serial(path, 115200, timeout=0)
        self.rx = bytearray()
        self.wire_tx = bytearray()
        self.lines: list[bytes] = []
        self.torn = 0

    def close(self) -> None:
        self.ser.close()

    def _fill(self, timeout: float) -> None:
        self.ser.timeout = timeout
        b = self.ser.read(1)
        if b:
            self.rx += b
            n = self.ser.in_waiting
            if n:
                self.rx += self.ser.read(n)

    def _wait_available(self, start: float, timeout: float) -> bool:
        while not self.rx:
            rem = timeout - (time.monotonic() - start)
            if rem <= 0:
                return False
            self._fill(min(rem, 0.05))
        return True

    def write(self, data: bytes) -> None:
        self.wire_tx += data
        self.ser.write(data)

    def write_command(self, cmd: str) -> None:
        self.write(cmd.encode() + b"\r")

    def read_response(self, match: bytes | None, byte_timeout: float) -> bytes | None:
        resp = bytearray()
        while True:
            if not self._wait_available(time.monotonic(), byte_timeout):
                return None
            resp.append(self.rx.pop(0))
            if len(resp) >= 2 and resp[-2:] == b"\r\n":
                line = bytes(resp[:-2])
                self.lines.append(line)
                return line
            if match is not None and bytes(resp) == match:
                self.lines.append(bytes(resp))
                return bytes(resp)

    def wait_for_response(self, wait_response: bytes | None, timeout: float,
                          pattern: bytes | None = None, flags: int = 0) -> bytes | None:
        start = time.monotonic()
        while True:
            if not self._wait_available(start, timeout):
                return None
            r = self.read_response(pattern if flags & WFR_WITHOUT_DELIM else None,
                                   timeout if flags & WFR_TIMEOUT_FOR_BYTE else self.BYTE_GAP)
            if r is None:                            # the C reads NULL[0]: the line is lost
                self.torn += 1
                continue
            r = r.split(b"\0")[0]                    # (C strings)
            if not flags & WFR_GET_NULL_STRING and r == b"":
                continue
            if wait_response is not None and r == wait_response:
                return r
            if pattern is not None:
                if pattern == b"":
                    return r
                if flags & WFR_START_WITH:
                    if r.startswith(pattern):
                        return r[len(pattern):] if flags & WFR_REMOVE_START_WITH else r
                elif r == pattern:
                    return r[len(pattern):] if flags & WFR_REMOVE_START_WITH else r

    def command(self, cmd: str, response: bytes, timeout: float) -> bytes | None:
        self.write_command(cmd)
        return self.wait_for_response(response, timeout)


class WioLteIotHub:
    """WioLTE.cpp at 890046f: the functions IoTHubRecieve() runs, and the set-up before them."""

    def __init__(self, path: str) -> None:
        self.m = WioModuleSerial(path)
        self.sslcfg_sent = 0

    def close(self) -> None:
        self.m.close()

    def turn_on_or_reset_after_rdy(self) -> bool:
        m = self.m
        start = time.monotonic()
        while m.command("AT", b"OK", 0.5 * SLOW) is None:
            if time.monotonic() - start >= 10:
                return False
        if m.command("ATE0", b"OK", 0.5 * SLOW) is None:
            return False
        if m.command('AT+QURCCFG="urcport","uart1"', b"OK", 0.5 * SLOW) is None:
            return False
        m.write_command("AT+QSCLK=1")
        if m.wait_for_response(b"OK", 0.5 * SLOW, b"ERROR") is None:
            return False
        start = time.monotonic()
        while True:
            m.write_command("AT+CPIN?")
            r = m.wait_for_response(b"OK", 5, b"+CME ERROR: ", WFR_START_WITH)
            if r is None:
                return False
            if r == b"OK":
                return True
            if time.monotonic() - start >= 10:
                return False
            time.sleep(0.1)

    def activate(self, apn: str, user: str, password: str) -> bool:
        m = self.m
        while True:
            status = 0
            for cmd, prefix in (("AT+CGREG?", b"+CGREG: "), ("AT+CEREG?", b"+CEREG: ")):
                m.write_command(cmd)
                p = m.wait_for_response(None, 0.5 * SLOW, prefix, WFR_START_WITH | WFR_REMOVE_START_WITH)
                if p is None:
                    return False
                args = argument_parse(p)
                if len(args) < 2:
                    return False
                status = atoi(args[1])
                if m.wait_for_response(b"OK", 0.5 * SLOW) is None:
                    return False
                if status == 0:
                    return False
                if status in (1, 5):
                    break
            if status in (1, 5):
                break
        if m.command(f'AT+QICSGP=1,1,"{apn}","{user}","{password}",1', b"OK", 0.5 * SLOW) is None:
            return False
        while True:
            m.write_command("AT+QIACT=1")
            r = m.wait_for_response(b"OK", LONG_WAIT, b"ERROR")
            if r is None:
                return False
            if r == b"OK":
                return True
            if m.command("AT+QIGETERROR", b"OK", 0.5 * SLOW) is None:
                return False

    def set_sslcfg(self, url: str) -> bool:
        if url.startswith("https:"):
            for cmd in ('AT+QHTTPCFG="sslctxid",1', 'AT+QSSLCFG="sslversion",1,4',
                        'AT+QSSLCFG="ciphersuite",1,0XFFFF', 'AT+QSSLCFG="seclevel",1,0'):
                if self.m.command(cmd, b"OK", 1.0 * SLOW) is None:
                    return bool(-1)                  # RET_ERR(-1, ...) in a bool function
                self.sslcfg_sent += cmd.startswith("AT+QSSLCFG")
        return True

    def socket_ssl_open(self, host: str, port: int) -> int:
        m = self.m
        used = [False] * CONNECT_ID_NUM
        m.write_command("AT+QSSLSTATE")
        while True:
            r = m.wait_for_response(b"OK", 10, b"+QSSLSTATE: ", WFR_START_WITH)
            if r is None:
                return -1
            if r[:10] == b"+QSSLSTATE: "[:10]:
                args = argument_parse(r[10:])
                if args:
                    cid = atoi(args[0])
                    if not 0 <= cid < CONNECT_ID_NUM:
                        return -1
                    used[cid] = True
            if r == b"OK":
                break
        cid = next((i for i in range(CONNECT_ID_NUM) if not used[i]), CONNECT_ID_NUM)
        if cid >= CONNECT_ID_NUM:
            return -1
        if m.command(f'AT+QSSLOPEN=1,1,{cid},"{host}",{port}', b"OK", LONG_WAIT) is None:
            return -1
        if m.wait_for_response(b"+QSSLOPEN: %d,0" % cid, LONG_WAIT) is None:
            return -1
        return cid

    def socket_ssl_send(self, cid: int, data: bytes) -> bool:
        if cid >= CONNECT_ID_NUM or len(data) > 1460:
            return False
        self.m.write_command(f"AT+QSSLSEND={cid},{len(data)}")
        if self.m.wait_for_response(None, 0.5 * SLOW, b"> ", WFR_WITHOUT_DELIM) is None:
            return False
        self.m.write(data)
        return self.m.wait_for_response(b"SEND OK", 5) is not None

    def socket_ssl_close(self, cid: int) -> bool:
        if cid >= CONNECT_ID_NUM:
            return False
        return self.m.command(f"AT+QSSLCLOSE={cid}", b"OK", 10) is not None


def iothub_delete_request(url: str, etag: str, sas: str) -> tuple[str, bytes]:
    """IoTHubRecieve()'s String arithmetic for the DELETE of a received message: (host, the
    bytes SocketSslSend() gets from its 512-byte buffer)."""
    host_str = url[url.index(":") + 3:]
    host_address = host_str[:host_str.index("/")]
    host_str = host_str[host_str.index("/") + 1:]
    send_address = "/" + host_str[:host_str.index("?")] + "/"
    api_ver = host_str[host_str.index("?"):]
    req = (f"DELETE {send_address}{etag}{api_ver} HTTP/1.1\r\n" f"Host: {host_address}\r\n"
           f"Authorization:{sas}\r\n\r\n\r\n")
    return host_address, req.encode()[:511]


IOTHUB_URL = "https://hub.example/devices/wio1/messages/deviceBound?api-version=2016-11-14"
IOTHUB_SAS = ("SharedAccessSignature sr=hub.example%2Fdevices%2Fwio1&sig=" + "A" * 43 + "%3D&se=1519000000")


@pytest.fixture
def wio(driver_path):
    w = WioLteIotHub(driver_path)
    yield w
    w.close()


def wio_up(w: WioLteIotHub) -> None:
    assert w.turn_on_or_reset_after_rdy()
    assert w.activate("soracom.io", "sora", "sora")
    assert w.set_sslcfg(IOTHUB_URL)


def test_wiolte_iothub_delete_over_ssl_open_without_access_mode(wio, emulator, pki):
    """The IoTHub_Recieve sketch's path after the HTTP GET: TurnOnOrReset() (after RDY),
    Activate(), SetSSLCFG() -- true whatever AT+QHTTPCFG answers (the RET_ERR(-1) of a bool
    function) --, then SocketSslOpen(): AT+QSSLSTATE lists nothing (OK alone) so id 0 is
    taken; AT+QSSLOPEN=1,1,0,"hub.example",443 WITHOUT access mode answers OK then
    "+QSSLOPEN: 0,0" as its own line; SocketSslSend() of the DELETE (prompt "> " matched
    without a line end, SEND OK); the peer gets the request byte for byte with SNI unset or the
    host; its "204" answer comes as a buffer-mode "+QSSLURC: \"recv\",0" that SocketSslClose()
    skips on its way to OK.  No line was torn by a >10 ms gap inside it."""
    w = wio
    wio_up(w)
    host, req = iothub_delete_request(IOTHUB_URL, "6a1c-ETAG-77", IOTHUB_SAS)
    assert host == "hub.example"
    assert req.startswith(b"DELETE /devices/wio1/messages/deviceBound/6a1c-ETAG-77?api-version=")
    answer = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    with TlsServer(pki.server, handler=reply_after(len(req), answer), legacy=True) as srv:
        emulator.router.add_map(host, 443, "127.0.0.1", srv.address[1])
        cid = w.socket_ssl_open(host, 443)
        assert cid == 0, w.m.lines[-6:]
        assert b'AT+QSSLOPEN=1,1,0,"hub.example",443\r' in w.m.wire_tx
        assert w.socket_ssl_send(cid, req), w.m.lines[-6:]
        assert srv.wait_received(len(req)) == req
        time.sleep(0.3)
        assert w.socket_ssl_close(cid)
    assert b'+QSSLURC: "recv",0' in w.m.lines
    assert b"> " in w.m.lines and b"SEND OK" in w.m.lines
    assert w.m.torn == 0


def test_wiolte_second_open_takes_the_next_id_then_the_parse_quirk_collides(wio, emulator, pki):
    """SocketSslOpen()'s id scan reads "+QSSLSTATE: " lines from byte 10, so field 0 is
    ": <id>" and atoi() makes every listed socket id 0.  A then B: QSSLSTATE lists id 0 -> B
    gets 1 (right by luck).  After closing A, C: QSSLSTATE lists only id 1, parsed as 0 -> the
    driver picks 1, which is in use: the module answers ERROR at once (563, docs/behaviour.md
    "SSL sockets"), a line the driver's wait for "OK" drops, so it returns -1 when that wait
    runs out; nothing was dialled for C, and the failed open must leave B's connection alone:
    B still sends and the server gets the bytes."""
    w = wio
    wio_up(w)
    with TlsServer(pki.server, mode="echo", legacy=True) as a, \
            TlsServer(pki.server, mode="echo", legacy=True) as b, \
            TlsServer(pki.server, mode="echo", legacy=True) as c:
        emulator.router.add_map("a.example", 443, "127.0.0.1", a.address[1])
        emulator.router.add_map("b.example", 443, "127.0.0.1", b.address[1])
        emulator.router.add_map("c.example", 443, "127.0.0.1", c.address[1])
        assert w.socket_ssl_open("a.example", 443) == 0
        assert w.socket_ssl_open("b.example", 443) == 1
        assert w.socket_ssl_close(0)
        assert w.socket_ssl_open("c.example", 443) == -1
        assert b'AT+QSSLOPEN=1,1,1,"c.example",443\r' in w.m.wire_tx
        assert [ln for ln in w.m.lines if ln.startswith(b"+QSSLOPEN:")] == [b"+QSSLOPEN: 0,0",
                                                                           b"+QSSLOPEN: 1,0"]
        assert w.m.lines[-1] == b"ERROR", w.m.lines[-4:]     # dropped: the driver waits for OK
        assert not c.connections
        assert w.socket_ssl_send(1, b"still B\r\n")
        assert b.wait_received(9) == b"still B\r\n"
        assert w.socket_ssl_close(1)
    assert w.m.torn == 0


def test_wiolte_full_1460_byte_binary_send_and_oversize_refused_by_the_driver(wio, emulator, pki):
    """SocketSslSend() at its limit: 1460 bytes of every byte value (CR, LF, '>' and Ctrl+Z
    among them) after the "> " prompt reach the peer unchanged with one SEND OK; 1461 bytes are
    refused by the driver before anything is written; the socket still works afterwards."""
    w = wio
    wio_up(w)
    data = (bytes(range(256)) * 6)[:1460]
    with TlsServer(pki.server, mode="sink", legacy=True) as srv:
        emulator.router.add_map("hub.example", 443, "127.0.0.1", srv.address[1])
        cid = w.socket_ssl_open("hub.example", 443)
        assert cid == 0
        assert w.socket_ssl_send(cid, data)
        assert srv.wait_received(1460) == data
        before = len(w.m.wire_tx)
        assert not w.socket_ssl_send(cid, data + b"x")
        assert len(w.m.wire_tx) == before
        assert w.socket_ssl_send(cid, b"end")
        assert srv.wait_received(1463) == data + b"end"
        assert w.socket_ssl_close(cid)
    assert w.m.lines.count(b"SEND OK") == 2
    assert w.m.torn == 0


def test_wiolte_ten_quick_open_close_cycles_keep_ok_before_the_open_urc(wio, emulator, pki):
    """SocketSslOpen() waits for "OK" and only THEN for the exact "+QSSLOPEN: <id>,0" line,
    dropping every other line: a loopback handshake finishes in about a millisecond, and the URC
    must still come after the command's OK, every time.  Ten open / send / close cycles on id 0,
    each a new handshake at the peer with the driver's bytes."""
    w = wio
    wio_up(w)
    with TlsServer(pki.server, mode="sink", legacy=True) as srv:
        emulator.router.add_map("hub.example", 443, "127.0.0.1", srv.address[1])
        for i in range(10):
            assert w.socket_ssl_open("hub.example", 443) == 0, (i, w.m.lines[-5:])
            assert w.socket_ssl_send(0, b"cycle %d\r\n" % i)
            assert srv.wait_received(len(b"cycle %d\r\n" % i), index=i) == b"cycle %d\r\n" % i
            assert w.socket_ssl_close(0)
        assert len(srv.connections) == 10
    assert w.m.torn == 0

