"""Adversarial tests: a twenty-fifth set of public host code pointed at the pty -- two programs using
the Quectel SSL and file commands that earlier rounds did not imitate (grep for "nicslabdev",
"Bg96NbIot", "johncobb" and "catm1_bg96" finds nothing in tests/): an Arduino library that does
mutual TLS on a BG96 with the module's echo left on, every string (data included) followed by
CR LF and every answer found with indexOf() in whatever arrived, and a Python (pyserial)
provisioning tool that uploads three PEMs and configures SSL context 2 from a JSON command table,
reading whole lines while bytes wait and sending two commands without their CR.  Each is replayed
through the pty with its own write pieces, waits and parsers against a loopback OpenSSL peer
(Python's ssl) that asks for the client certificate.

Programs replayed (public sources read through the reference store; paraphrased, not copied):

- nicslabdev/BG96-NB-IoT-Arduino-Library (MOTAM project, "BG96 NB-IoT Arduino library V 2.1",
  2019), libraries/Bg96NbIot/Bg96NbIot.cpp at e3a38916c522 (store id 35319871639) with
  Bg96NbIot.h at 5517d962140 (networkOperator "21401", LOCAL_PORT 16000) and
  BG96_NB-IoT_test/BG96_NB-IoT_test.ino; README.md: "TLS functions will work only if you
  previously load CA certificate and client certificate (with its private key) on FILE memory
  of BG96 module ... TLS connection requires client and server authentication by default."
  What the model keeps:
  * sendIt(s): BG96.print(s + "\\r\\n") -- for commands AND for socket data; never ATE0, so
    every answer comes after its echo.  receiveIt(): every byte available now.  Each
    checkResp*() starts a fresh String, appends receiveIt() in a busy loop and tests it with
    indexOf() until its match or its window: checkRespForOk(t) "\\r\\nOK\\r\\n" (stops on
    "\\r\\nERROR\\r\\n"); checkRespForOpSelection() OK or "\\r\\n+CME ERROR:" (180 s);
    checkRespForReg() "+CEREG: 0,5" (300 ms: only a roaming registration passes);
    checkRespForIp() never sets its flag, so it always reads its whole 300 ms and takes what
    follows the FIRST comma of the response up to CR LF once OK and "\\r\\n+CGPADDR:" are in;
    checkRespForImei() substring(2) -- "the firsts chars received are \\r\\n", but with the echo
    on they are "AT" -- up to the first CR LF; checkRespForSslSocket() OK and
    "+QSSLOPEN: <socket>,0" (150 s); checkRespIfInputDataChar() "\\r\\n> " (300 ms);
    checkRespIfDataSent() "\\r\\nSEND OK\\r\\n" (stops on SEND FAIL / ERROR, 10 s);
    checkRespIfDataReceivedBySsl() '\\r\\n+QSSLURC: "recv",<socket>\\r\\n' (5 s);
    checkRespForHostResponseBySsl() until OK / ERROR (10 s), then substring from
    "+QSSLRECV: ", from after its CR LF up to "\\r\\n\\r\\n\\r\\nOK\\r\\n" (Arduino's
    substring() swaps its bounds and clips them, so a -1 bound means "to the end").
  * begin(): isAlive() ("AT", 1 s, repeated until OK), AT+CGDCONT=1,"IP","" (500 ms),
    AT+CFUN=1 (15 s), AT+COPS=1,2,"21401",9, AT+CEREG?, AT+CGPADDR, AT+CGSN.  The module is
    given a profile on that network (PLMN 21401, registered roaming, AcT 9).
  * openSocket() (the example sketch's path): AT+QIACT=1 (150 s), then
    AT+QIOPEN=1,0,"TCP","<host>",<port>,16000,0 until OK and "+QIOPEN: 0,0"; sendData():
    AT+QISEND=0,<length>, "\r\n> ", the data + CR LF, SEND OK; receiveData():
    '\r\n+QIURC: "recv",0\r\n' (5 s), AT+QIRD=0, the same cut as for SSL after "+QIRD: "
    (1 s); shutdown(): AT+CFUN=0 (15 s), AT+QPOWD=1 and "\r\nOK\r\nPOWERED DOWN\r\n" (300 ms).
  * openSslSocket(): with socket = 0 as both the SSL context and the client id:
    "sslversion",0,3 / "ciphersuite",0,0XFFFF / "seclevel",0,2 / "cacert",0,"ca.crt" /
    "clientcert",0,"trafficLight.crt" / "clientkey",0,"trafficLight.key" (300 ms each), then
    AT+QSSLOPEN=1,0,0,"<host>",<port>,0.  sendDataBySsl(): AT+QSSLSEND=0,<length>, "\\r\\n> ",
    then sendIt(data) -- the data AND a CR LF the length did not count.  receiveDatabySsl():
    the "recv" URC, then AT+QSSLRECV=0 -- no <readlen>.  closeSslSocket(): AT+QSSLCLOSE=0.
    openSslSocket() activates nothing: the tests run openSocket()'s AT+QIACT=1 first (the
    module answers AT+QSSLOPEN with ERROR while context 1 is down).

- johncobb/catm1_bg96 (a BG96 Cat-M1 "Configuration Utility", Python 3 + pyserial),
  utils/provisioning.py at 7bd9af58c2e8 (store id 11391801122) driven by its command table
  utils/quec.config.json at bf83e7968c24 (store id 11490651091).  What the model keeps:
  * Serial(device, 115200, no timeout): readline() blocks until LF.  send(cmd):
    ser.write(cmd.encode()) -- the table's own text, so "AT" (twice, without CR) goes out bare.
  * prov_tick(cmd_ts, rsp, cmd_to): a fresh buffer; until cmd_to seconds after the command:
    while in_waiting > 0 read a line and test rsp in buffer (str.find); if found, done;
    else sleep 100 ms.  A time-out is printed and the table goes on; nothing ever fails.
  * cfg_handler(): "file: <path>" rows read the PEM in text mode (size = sum of len(line));
    the next AT+QFUPL row gets {size}; after the row's wait the PEM is written whole and
    "QFUPL:" awaited -- whether or not CONNECT came.  The table: ATE0, AT, AT, AT+CPIN?,
    AT+QSIMSTAT?, AT+COPS?, AT+CGREG?, AT+CSQ, AT+QNWINFO, AT+QSPN, AT+QFDEL="*",
    AT+QFUPL="ufs:root.crt",<n>,2000 / "ufs:client.crt" / "ufs:key.pem",
    "ciphersuite",2,0XFFFF / "sslversion",2,4 / "cacert",2,"ufs:root.crt" / "clientcert" /
    "clientkey" / "seclevel",2,2 / AT+QSSLCFG="ignorelocaltime",1 (a query of context 1,
    "+QSSLCFG: " awaited).  The rest of the table is MQTT (AT+QMTCFG / QMTOPEN / QMTCONN /
    QMTPUB): the emulator implements the SSL note, not the MQTT one, so the replay stops before
    it and the tests open the configured context 2 with AT+QSSLOPEN instead.

Every dialled name is routed to 127.0.0.1.  Windows shorter than 2 s (the library's 300 ms ones)
are widened to 2 s -- they end at their match, so only a loaded machine can tell -- and the
150 s / 180 s ones are capped at 10 s; the provisioning tool's 1 s / 5 s waits are its own.
Where a program assumes something the module does not do, the test asserts what the module does
(per the SSL note and docs/behaviour.md) and names the program's fault: the library's
AT+QSSLRECV=0 (no <readlen>: ERROR), its "IMEI" read from the echo, its CR LF after counted data
(an empty command line, harmless), its POWERED DOWN match without the blank line; the tool's bare
"AT"s (no CR: they prefix its next command, which is then ERROR).  No behaviour of the emulator
was found wrong by these programs (every test passes).
"""
from __future__ import annotations

import threading
import time

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.profile_support import EC2X
from tests.e2e.socket_support import Uart

NB_HOST = "www.iottest.work"        # a name in the test PKI's server certificate
NB_PORT = 4443


def window(ms: int) -> float:
    """A library window in seconds: at least 2 s, at most 10 s (see the module docstring)."""
    return min(max(ms / 1000, 2.0), 10.0)


def a_sub(s: str, left: int, right: int | None = None) -> str:
    """Arduino String::substring(): unsigned bounds (-1 is huge), swapped if reversed, clipped."""
    n, m = len(s), 1 << 32
    left = left % m
    right = n if right is None else right % m
    if left > right:
        left, right = right, left
    if left >= n:
        return ""
    return s[left:min(right, n)]


# == program 1: nicslabdev's Bg96NbIot ==========================================================
class Bg96NbIot:
    """Bg96NbIot.cpp over the Arduino's Serial1 (a Uart on the pty)."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart
        self.socket = 0
        self.ip = ""
        self.imei = ""
        self.responses: list[str] = []        # every checkResp*() String, in order

    def send_it(self, text: str) -> None:
        self.uart.write((text + "\r\n").encode("latin-1"))

    def receive_it(self) -> str:
        return self.uart.read(1 << 20, 0).decode("latin-1")

    def _loop(self, ms: int, ok, error=lambda r: False) -> tuple[str, bool]:
        response, good, bad = "", False, False
        start = time.monotonic()
        limit = window(ms)
        while not bad and not good and time.monotonic() - start <= limit:
            response += self.receive_it()
            good, bad = ok(response), error(response)
            if not good and not bad:
                time.sleep(0.002)
        self.responses.append(response)
        return response, good

    # -- the checkResp*() family ---------------------------------------------------------------
    def check_ok(self, ms: int) -> bool:
        return self._loop(ms, lambda r: "\r\nOK\r\n" in r, lambda r: "\r\nERROR\r\n" in r)[1]

    def check_op_selection(self) -> bool:
        return self._loop(180000, lambda r: "\r\nOK\r\n" in r, lambda r: "\r\n+CME ERROR:" in r)[1]

    def check_reg(self) -> bool:
        return self._loop(300, lambda r: "+CEREG: 0,5" in r)[1]

    def check_ip(self) -> str:
        got = {"ip": ""}

        def never(r: str) -> bool:            # the flag is never set: the whole window is read
            if "\r\nOK\r\n" in r and "\r\n+CGPADDR:" in r:
                ip = a_sub(r, 1 + r.find(","))
                got["ip"] = a_sub(ip, 0, ip.find("\r\n"))
            return False
        self._loop(300, never)
        return got["ip"]

    def check_imei(self) -> str:
        response, _ = self._loop(300, lambda r: "\r\nOK\r\n" in r)
        if "\r\nOK\r\n" not in response:
            return ""
        imei = a_sub(response, 2)
        return a_sub(imei, 0, imei.find("\r\n"))

    def check_ssl_socket(self) -> bool:
        return self._loop(150000, lambda r: "\r\nOK\r\n" in r and f"+QSSLOPEN: {self.socket},0" in r)[1]

    def check_input_char(self) -> bool:
        return self._loop(300, lambda r: "\r\n> " in r)[1]

    def check_data_sent(self) -> bool:
        return self._loop(10000, lambda r: "\r\nSEND OK\r\n" in r,
                          lambda r: "\r\nSEND FAIL\r\n" in r or "\r\nERROR\r\n" in r)[1]

    def check_received_by_ssl(self) -> bool:
        return self._loop(5000, lambda r: f'\r\n+QSSLURC: "recv",{self.socket}\r\n' in r)[1]

    def check_host_response_by_ssl(self) -> str:
        response, _ = self._loop(10000, lambda r: "\r\nOK\r\n" in r or "\r\nERROR\r\n" in r)
        response = a_sub(response, response.find("+QSSLRECV: "))
        start = response.find("\r\n") + 2
        end = response.find("\r\n\r\n\r\nOK\r\n")
        return a_sub(response, start, end)

    # -- the public API ----------------------------------------------------------------------------
    def begin(self) -> bool:
        self.send_it("AT")
        while not self.check_ok(1000):
            self.send_it("AT")
        self.send_it('AT+CGDCONT=1,"IP",""')
        flag = self.check_ok(500)
        if flag:
            self.send_it("AT+CFUN=1")
            flag = self.check_ok(15000)
        if flag:
            self.send_it('AT+COPS=1,2,"21401",9')
            flag = self.check_op_selection()
        if flag:
            self.send_it("AT+CEREG?")
            flag = self.check_reg()
        if flag:
            self.send_it("AT+CGPADDR")
            ip = self.check_ip()
            flag = bool(ip)
            if flag:
                self.ip = ip
        if flag:
            self.send_it("AT+CGSN")
            imei = self.check_imei()
            flag = bool(imei)
            if flag:
                self.imei = imei
        return flag

    def check_socket(self) -> bool:
        return self._loop(150000, lambda r: "\r\nOK\r\n" in r and f"+QIOPEN: {self.socket},0" in r)[1]

    def check_received(self) -> bool:
        return self._loop(5000, lambda r: f'\r\n+QIURC: "recv",{self.socket}\r\n' in r)[1]

    def check_host_response(self) -> str:
        response, _ = self._loop(1000, lambda r: "\r\nOK\r\n" in r or "\r\nERROR\r\n" in r)
        response = a_sub(response, response.find("+QIRD: "))
        start = response.find("\r\n") + 2
        end = response.find("\r\n\r\n\r\nOK\r\n")
        return a_sub(response, start, end)

    def check_powered_down(self) -> bool:
        return self._loop(300, lambda r: "\r\nOK\r\nPOWERED DOWN\r\n" in r)[1]

    def open_socket(self, address: str, port: int) -> bool:
        self.send_it("AT+QIACT=1")
        flag = self.check_ok(150000)
        if flag:
            self.send_it(f'AT+QIOPEN=1,{self.socket},"TCP","{address}",{port},16000,0')
            flag = self.check_socket()
        return flag

    def send_data(self, data: str) -> bool:
        self.send_it(f"AT+QISEND={self.socket},{len(data)}")
        if not self.check_input_char():
            return False
        self.send_it(data)
        return self.check_data_sent()

    def receive_data(self) -> str:
        if not self.check_received():
            return ""
        self.send_it(f"AT+QIRD={self.socket}")
        return self.check_host_response()

    def shutdown(self) -> bool:
        self.send_it("AT+CFUN=0")
        flag = self.check_ok(15000)
        if flag:
            self.send_it("AT+QPOWD=1")
            flag = self.check_powered_down()
        return flag

    def activate(self) -> bool:
        """openSocket()'s first step, the library's only AT+QIACT (openSslSocket() has none)."""
        self.send_it("AT+QIACT=1")
        return self.check_ok(150000)

    def open_ssl_socket(self, address: str, port: int) -> bool:
        s = self.socket
        for cmd in (f'AT+QSSLCFG="sslversion",{s},3', f'AT+QSSLCFG="ciphersuite",{s},0XFFFF',
                    f'AT+QSSLCFG="seclevel",{s},2', f'AT+QSSLCFG="cacert",{s},"ca.crt"',
                    f'AT+QSSLCFG="clientcert",{s},"trafficLight.crt"',
                    f'AT+QSSLCFG="clientkey",{s},"trafficLight.key"'):
            self.send_it(cmd)
            if not self.check_ok(300):
                return False
        self.send_it(f'AT+QSSLOPEN=1,{s},{s},"{address}",{port},0')
        return self.check_ssl_socket()

    def send_data_by_ssl(self, data: str) -> bool:
        self.send_it(f"AT+QSSLSEND={self.socket},{len(data)}")
        if not self.check_input_char():
            return False
        self.send_it(data)
        return self.check_data_sent()

    def receive_data_by_ssl(self) -> str:
        if not self.check_received_by_ssl():
            return ""
        self.send_it(f"AT+QSSLRECV={self.socket}")
        return self.check_host_response_by_ssl()

    def close_ssl_socket(self) -> bool:
        self.send_it(f"AT+QSSLCLOSE={self.socket}")
        return self.check_ok(30000)


def roaming_profile(tmp_path) -> str:
    """ec2x.toml on the Vodafone Spain network the library hard-codes, registered roaming (stat
    5, what its checkRespForReg() insists on), NB-IoT access technology (AcT 9)."""
    text = (EC2X.replace('operator = "CHN-UNICOM"', 'operator = "vodafone ES"', 1)
                .replace('# plmn = "46001"', 'plmn = "21401"', 1)
                .replace("reg_stat = 1", "reg_stat = 5", 1)
                .replace("act = 7", "act = 9", 1))
    assert text.count("21401") == 1 and "reg_stat = 5" in text and "act = 9" in text
    path = tmp_path / "bg96-roaming.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def nbiot(open_modem, tmp_path, pki):
    """A fresh module on the roaming profile with echo on (the library never sends ATE0); the
    three files its README says to load beforehand are uploaded first, by another host."""
    host, port = open_modem(roaming_profile(tmp_path), echo=True)
    assert host.at("ATE0").endswith(b"OK\r\n")
    for name, data in (("ca.crt", pki.ca.cert_pem), ("trafficLight.crt", pki.client.cert_pem),
                       ("trafficLight.key", pki.client.key_pem)):
        assert host.upload(name, data).endswith(b"OK\r\n")
    assert host.at("ATE1").endswith(b"OK\r\n")
    host.close()
    uart = Uart(host.path)
    yield Bg96NbIot(uart)
    uart.close()


def _uart_at(uart: Uart, line: bytes, timeout: float = 10) -> bytes:
    """The test's own command on the library's UART: the line, then everything up to OK/ERROR."""
    return uart.command(line, timeout)


def test_bg96nbiot_begin_with_echo_on_roaming_registration_and_its_ip_and_imei_parsers(nbiot, strict_log):
    """begin() end to end: every command echoed (the library never sends ATE0); AT+COPS=1 on
    "21401" with AcT 9 is OK on that network; AT+CEREG? reads "+CEREG: 0,5"; the IP is what
    follows the first comma of the AT+CGPADDR answer -- the quoted address of the context the
    library just defined (27.007: "0.0.0.0" while inactive; the library never activates it
    before openSocket()); the "IMEI" is the library's misreading of the echoed answer:
    substring(2) of "AT+CGSN\\r\\r\\n<imei>..." up to the first CR LF is "+CGSN\\r" -- non-empty,
    so begin() succeeds (the real IMEI is in the response, after the echo)."""
    drv = nbiot
    assert drv.begin() is True
    written = [w.decode() for w in drv.uart.writes]
    assert written == ["AT\r\n", 'AT+CGDCONT=1,"IP",""\r\n', "AT+CFUN=1\r\n",
                       'AT+COPS=1,2,"21401",9\r\n', "AT+CEREG?\r\n", "AT+CGPADDR\r\n", "AT+CGSN\r\n"]
    assert drv.responses[0] == "AT\r\r\nOK\r\n"
    assert drv.responses[3] == 'AT+COPS=1,2,"21401",9\r\r\nOK\r\n'
    assert drv.responses[4].startswith("AT+CEREG?\r\r\n+CEREG: 0,5\r\n")
    assert drv.ip == '"0.0.0.0"'
    assert drv.responses[5] == 'AT+CGPADDR\r\r\n+CGPADDR: 1,"0.0.0.0"\r\n\r\nOK\r\n'
    assert drv.imei == "+CGSN\r"                          # the library's fault, not the module's
    assert drv.responses[6].startswith("AT+CGSN\r\r\n") and drv.responses[6].endswith("\r\n\r\nOK\r\n")
    imei = drv.responses[6].split("\r\n")[1]
    assert imei.isdigit() and len(imei) == 15


def test_bg96nbiot_example_sketch_http_get_over_tcp_and_shutdown(nbiot, emulator, strict_log):
    """BG96_NB-IoT_test.ino as written: begin(), openSocket("hook.io", 80) -- AT+QIACT=1, then
    AT+QIOPEN=1,0,"TCP","hook.io",80,16000,0 -> OK and "+QIOPEN: 0,0" --, sendData(the GET)
    with its uncounted CR LF (the server gets the request alone), receiveData(): the
    '+QIURC: "recv",0' URC, AT+QIRD=0 (no length: the TCP(IP) note makes it optional) and the
    library's cut -- from after "+QIRD: <n>\r\n" to "\r\n\r\n\r\nOK" -- gives the reply without
    its last CR LF.  shutdown(): AT+CFUN=0 OK (the socket's "closed" URC after it), then AT+QPOWD=1, whose answer is OK and the
    "POWERED DOWN" URC on its own line ("\r\nOK\r\n\r\nPOWERED DOWN\r\n", as every URC comes
    framed by CR LF); the library looks for "\r\nOK\r\nPOWERED DOWN\r\n" -- no blank line --
    and reports failure (its fault)."""
    from emulator.testing.peers.plain import TcpServer
    drv = nbiot
    request = "GET /examples/echo/testing HTTP/1.1\r\nHost: hook.io\r\nConnection: keep-alive\r\n\r\n"
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n"
    go = threading.Event()

    def behave(conn):
        conn.sock.settimeout(15)
        while len(conn.received) < len(request):
            data = conn.sock.recv(4096)
            if not data:
                return
            conn.add(data)
        if go.wait(15):
            conn.send(reply)
        while conn.sock.recv(4096):
            pass

    with TcpServer(behave=behave) as server:
        emulator.router.add_map("hook.io", 80, "127.0.0.1", server.port)
        assert drv.begin() is True
        assert drv.open_socket("hook.io", 80) is True, drv.responses
        assert drv.responses[-1] == ('AT+QIOPEN=1,0,"TCP","hook.io",80,16000,0\r\r\nOK\r\n'
                                     "\r\n+QIOPEN: 0,0\r\n")
        assert drv.send_data(request) is True, drv.responses
        conn = server.wait_connection()
        assert conn.wait_received(len(request)) == request.encode()
        go.set()
        got = drv.receive_data()
        assert drv.responses[-1] == ("AT+QIRD=0\r\r\n+QIRD: %d\r\n" % len(reply) + reply.decode()
                                     + "\r\n\r\nOK\r\n")
        assert got.encode() == reply[:-2]
        assert bytes(conn.received) == request.encode()       # not the extra CR LF
        assert drv.shutdown() is False
        assert drv.responses[-2].startswith("AT+CFUN=0\r\r\nOK\r\n")    # (+QIURC "closed" may follow)
        assert "AT+QPOWD=1\r\r\nOK\r\n\r\nPOWERED DOWN\r\n" in drv.responses[-1], drv.responses[-1]


def _nb_server(pki, request: bytes, reply: bytes, go: threading.Event, got: list):
    """Mutual TLS (the client certificate required); reads `request`, waits for `go` (so the
    "recv" URC cannot share a read with SEND OK), answers `reply`, then reads until the end."""
    def handler(conn):
        data = b""
        while len(data) < len(request):
            chunk = conn.recv(timeout=10)
            if not chunk:
                break
            data += chunk
        got.append(data)
        if not go.wait(15):
            return
        conn.sendall(reply)
        while conn.recv(timeout=15):
            pass
    return TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True, handler=handler)


def test_bg96nbiot_mutual_tls_send_with_trailing_crlf_then_a_recv_without_readlen(nbiot, emulator, pki, strict_log):
    """openSslSocket(): the six AT+QSSLCFG on context 0 with the uploaded "ca.crt" /
    "trafficLight.crt" / "trafficLight.key" (bare names: UFS), AT+QSSLOPEN=1,0,0 -> OK and
    "+QSSLOPEN: 0,0"; the server sees the client certificate.  sendDataBySsl(): the prompt is
    found as "\\r\\n> "; the request goes with a CR LF the length did not count: the module takes
    exactly <length> bytes (the server gets the request alone) and the CR LF after them is an
    empty command line (no answer; the next command works).  receiveDatabySsl(): the URC is
    '\\r\\n+QSSLURC: "recv",0\\r\\n'; then the library's AT+QSSLRECV=0 -- the SSL note §2.10 gives
    AT+QSSLRECV=<clientID>,<readlen> with <readlen> not optional -- is ERROR, so the library
    returns "" (its fault); the reply stays buffered and AT+QSSLRECV=0,1500 returns it whole.
    closeSslSocket(): OK, and the server sees close_notify."""
    drv = nbiot
    request = ("GET /examples/echo/testing HTTP/1.1\r\nHost: " + NB_HOST
               + "\r\nConnection: keep-alive\r\n\r\n")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    go, got = threading.Event(), []
    with _nb_server(pki, request.encode(), reply, go, got) as server:
        emulator.router.add_map(NB_HOST, NB_PORT, "127.0.0.1", server.port)
        assert drv.activate() is True
        assert drv.open_ssl_socket(NB_HOST, NB_PORT) is True, drv.responses
        assert drv.responses[-1] == (f'AT+QSSLOPEN=1,0,0,"{NB_HOST}",{NB_PORT},0\r\r\nOK\r\n'
                                     "\r\n+QSSLOPEN: 0,0\r\n")
        deadline = time.monotonic() + 10
        while not server.connections:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        conn = server.connections[0]
        assert drv.send_data_by_ssl(request) is True, drv.responses
        prompt = drv.responses[-2]
        assert prompt == f"AT+QSSLSEND=0,{len(request)}\r\r\n> "
        deadline = time.monotonic() + 10
        while not got:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert got == [request.encode()]                 # not one byte of the extra CR LF
        assert "modem client" in (conn.client_cert_subject or "")
        # with ATE1 the data come back as echo (docs/behaviour.md), then SEND OK; the CR LF
        # after the data was an empty line: its CR echoed, no ERROR for it
        sent = drv.responses[-1]
        assert sent.startswith(request + "\r\nSEND OK\r\n")
        echoed = sent[len(request) + len("\r\nSEND OK\r\n"):]
        assert "ERROR" not in sent
        go.set()
        assert drv.receive_data_by_ssl() == ""           # AT+QSSLRECV=0 without <readlen>
        # (that echoed CR is in the driver's next read when it came after its last one)
        assert echoed + drv.responses[-2] == '\r\r\n+QSSLURC: "recv",0\r\n'
        assert drv.responses[-1] == "AT+QSSLRECV=0\r\r\nERROR\r\n"
        # what the library should have sent: the reply was kept for it
        assert _uart_at(drv.uart, b"AT+QSSLRECV=0,1500") == (
            b"AT+QSSLRECV=0,1500\r\r\n+QSSLRECV: %d\r\n" % len(reply) + reply + b"\r\n\r\nOK\r\n")
        assert drv.close_ssl_socket() is True
        assert drv.responses[-1] == "AT+QSSLCLOSE=0\r\r\nOK\r\n"
        conn = server.wait_done(timeout=10)
        assert conn.close_notify_received


def test_bg96nbiot_recv_parser_on_a_reply_ending_in_crlf(nbiot, emulator, pki, strict_log):
    """checkRespForHostResponseBySsl() cut at "\\r\\n\\r\\n\\r\\nOK\\r\\n", i.e. it expects the data
    to end in CR LF and the module to add CR LF, a blank line and OK (the SSL note's
    "+QSSLRECV: <have_readlen><CR><LF><data> OK", docs/behaviour.md "<data><CR><LF> then OK").
    Fed the module's real answer to a correct read (the library cannot send one), its parser
    returns the data without the CR LF it ended in; its own AT+QSSLRECV=0 stays ERROR."""
    drv = nbiot
    reply = b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"
    go, got = threading.Event(), []
    with _nb_server(pki, b"ping", reply, go, got) as server:
        emulator.router.add_map(NB_HOST, NB_PORT, "127.0.0.1", server.port)
        assert drv.activate() is True
        assert drv.open_ssl_socket(NB_HOST, NB_PORT) is True
        assert drv.send_data_by_ssl("ping") is True
        go.set()
        assert drv.check_received_by_ssl() is True
        drv.send_it("AT+QSSLRECV=0,1500")                # (the test's line, the library's parser)
        parsed = drv.check_host_response_by_ssl()
        assert parsed.encode() == reply[:-2]
        assert drv.responses[-1] == ("AT+QSSLRECV=0,1500\r\r\n+QSSLRECV: %d\r\n" % len(reply)
                                     + reply.decode() + "\r\n\r\nOK\r\n")
        drv.send_it("AT+QSSLRECV=0")
        assert drv.check_host_response_by_ssl() == ""
        assert drv.responses[-1] == "AT+QSSLRECV=0\r\r\nERROR\r\n"
        assert drv.close_ssl_socket() is True


def test_bg96nbiot_open_without_the_client_key_file_waits_out_its_window(nbiot, emulator, pki, strict_log):
    """The README's warning, as the module answers it: with "trafficLight.key" deleted, the six
    AT+QSSLCFG are still OK (a path is stored, docs/behaviour.md's `seclevel` row: "a set path
    whose file is missing = 552 before any TCP") and AT+QSSLOPEN answers OK, then
    "+QSSLOPEN: 0,552" (the note's error table: 552 invalid parameter); no connection reaches
    the server.  checkRespForSslSocket() knows no failure: it reads its whole window for
    "+QSSLOPEN: 0,0" and returns false."""
    drv = nbiot
    assert _uart_at(drv.uart, b'AT+QFDEL="trafficLight.key"').endswith(b"\r\nOK\r\n")
    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True) as server:
        emulator.router.add_map(NB_HOST, NB_PORT, "127.0.0.1", server.port)
        assert drv.activate() is True
        t0 = time.monotonic()
        assert drv.open_ssl_socket(NB_HOST, NB_PORT) is False
        assert time.monotonic() - t0 >= window(150000) - 0.5     # the whole (capped) window
        sent = [w.decode() for w in drv.uart.writes]
        assert sent[-1] == f'AT+QSSLOPEN=1,0,0,"{NB_HOST}",{NB_PORT},0\r\n'
        assert all(r.endswith("\r\nOK\r\n") for r in drv.responses[-7:-1]), drv.responses
        assert drv.responses[-1] == (f'AT+QSSLOPEN=1,0,0,"{NB_HOST}",{NB_PORT},0\r\r\nOK\r\n'
                                     "\r\n+QSSLOPEN: 0,552\r\n")
        assert server.connections == []


# == program 2: johncobb/catm1_bg96's provisioning tool =========================================
class PySerialPort:
    """pyserial's Serial(no timeout) on the pty: in_waiting, a blocking readline(), write()."""

    def __init__(self, uart: Uart) -> None:
        self.uart = uart

    @property
    def in_waiting(self) -> int:
        with self.uart.cond:
            return len(self.uart.rx)

    def readline(self) -> bytes:
        line = b""
        deadline = time.monotonic() + 20               # (no timeout in the tool: a hang guard)
        while not line.endswith(b"\n"):
            assert time.monotonic() < deadline, line
            line += self.uart.read(1, 0.5)
        return line

    def write(self, data: bytes) -> None:
        self.uart.write(data)


class Provisioning:
    """provisioning.py's cfg_handler() / prov_tick() / send()."""

    def __init__(self, ser: PySerialPort) -> None:
        self.ser = ser
        self.callbacks: list[str] = []          # modemDataReceived(buffer): the matched buffers
        self.timeouts: list[str] = []           # the rsp of every "Modem timeout waiting response."

    def send(self, cmd: str) -> None:
        self.ser.write(cmd.encode())

    def prov_tick(self, cmd_ts: float, rsp: str, cmd_to: float) -> None:
        buffer = ""
        delimeter_found = False
        while True:
            elapsed = time.time() - cmd_ts
            if elapsed > cmd_to:
                self.timeouts.append(rsp)
                break
            while self.ser.in_waiting > 0:
                line = self.ser.readline().decode("utf-8")
                buffer += line
                delimeter_found = buffer.find(rsp) > -1
            if delimeter_found:
                self.callbacks.append(buffer)
                break
            time.sleep(.1)

    def cfg_handler(self, cfg: dict) -> None:
        cert_filename = ""
        cert_filedata = ""
        cert_filesize = 0
        for key in cfg["cfg"]:
            cmd, rsp, cmd_to = key[0], key[1], float(key[2])
            data, byte = "", 0
            if cmd.find("file:") > -1:
                cert_filepath = cmd.replace("file:", "").strip()
                cert_filename = cert_filepath.split("/")[-1]
                with open(cert_filepath) as file:
                    for line in file.readlines():
                        data += line
                        byte += len(line)
                    cert_filedata, cert_filesize = data, byte
                continue
            if cmd.find("AT+QFUPL") > -1:
                cmd = cmd.replace("{file}", cert_filename).replace("{size}", str(cert_filesize))
                cert_filename = ""
            cmd_ts = time.time()
            self.send(cmd)
            self.prov_tick(cmd_ts, rsp, cmd_to)
            if cert_filedata and cert_filesize > 0:
                cmd_ts = time.time()
                self.send(cert_filedata)
                self.prov_tick(cmd_ts, "QFUPL:", cmd_to)
                cert_filedata, cert_filesize = "", 0


def quec_config(root: str, client: str, key: str) -> dict:
    """quec.config.json up to its first MQTT row, the three PEM paths the test's own."""
    rows = [["ATE0\r", "OK", 1.0], ["AT", "OK", 1.0], ["AT", "OK", 1.0],
            ["AT+CPIN?\r", "+CPIN:", 1.0], ["AT+QSIMSTAT?\r", "+QSIMSTAT:", 1.0],
            ["AT+COPS?\r", "+COPS:", 1.0], ["AT+CGREG?\r", "+CGREG:", 1.0],
            ["AT+CSQ\r", "+CSQ:", 1.0], ["AT+QNWINFO\r", "+QNWINFO:", 1.0],
            ["AT+QSPN\r", "+QSPN:", 1.0], ['AT+QFDEL="*"\r', "OK", 1.0],
            [f"file: {root}", "{file} {data} {size}", 1.0],
            ['AT+QFUPL="ufs:root.crt",{size},2000\r', "CONNECT", 5.0],
            [f"file: {client}", "{file} {data} {size}", 1.0],
            ['AT+QFUPL="ufs:client.crt",{size},2000\r', "CONNECT", 1.0],
            [f"file: {key}", "{file} {data} {size}", 1.0],
            ['AT+QFUPL="ufs:key.pem",{size},2000\r', "CONNECT", 1.0],
            ['AT+QSSLCFG="ciphersuite",2,0XFFFF\r', "OK", 1.0],
            ['AT+QSSLCFG="sslversion",2,4\r', "OK", 1.0],
            ['AT+QSSLCFG="cacert",2,"ufs:root.crt"\r', "OK", 1.0],
            ['AT+QSSLCFG="clientcert",2,"ufs:client.crt"\r', "OK", 1.0],
            ['AT+QSSLCFG="clientkey",2,"ufs:key.pem"\r', "OK", 1.0],
            ['AT+QSSLCFG="seclevel",2,2\r', "OK", 1.0],
            ['AT+QSSLCFG="ignorelocaltime",1\r', "+QSSLCFG: ", 1.0]]
    return {"cfg": rows}


@pytest.fixture
def provisioning(driver_path, emulator, tmp_path, pki):
    """A fresh module (echo on, as it comes up) whose UFS already holds a stale "root.crt" of the
    wrong CA (AT+QFDEL="*" must clear it, or AT+QFUPL would be 407); the tool on its port."""
    from emulator.testing.host import Host
    host = Host(driver_path)
    assert host.at("ATE0").endswith(b"OK\r\n")
    assert host.upload("root.crt", pki.wrong_ca.cert_pem).endswith(b"OK\r\n")
    assert host.at("ATE1").endswith(b"OK\r\n")
    host.close()
    uart = Uart(driver_path)
    tool = Provisioning(PySerialPort(uart))
    yield tool
    uart.close()


def _write_pems(tmp_path, pki, crlf: bool) -> tuple[str, str, str]:
    paths = []
    for name, pem in (("AmazonRootLeg.pem", pki.ca.cert_pem), ("certificate.pem.crt", pki.client.cert_pem),
                      ("private.pem.key", pki.client.key_pem)):
        path = tmp_path / name
        path.write_bytes(pem.replace(b"\n", b"\r\n") if crlf else pem)
        paths.append(str(path))
    return paths[0], paths[1], paths[2]


def _verify_context_2(uart: Uart, emulator, pki) -> None:
    """What the table configured, checked with the module's own queries, then used: an
    AT+QSSLOPEN on context 2 verifies the server with root.crt and sends client.crt."""
    assert _uart_at(uart, b'AT+QSSLCFG="seclevel",2') == b'\r\n+QSSLCFG: "seclevel",2,2\r\n\r\nOK\r\n'
    assert _uart_at(uart, b'AT+QSSLCFG="cacert",2') == b'\r\n+QSSLCFG: "cacert",2,"ufs:root.crt"\r\n\r\nOK\r\n'
    assert _uart_at(uart, b"AT+QIACT=1") == b"\r\nOK\r\n"      # (the table never activates)
    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True) as server:
        emulator.router.add_map(NB_HOST, NB_PORT, "127.0.0.1", server.port)
        uart.write(f'AT+QSSLOPEN=1,2,3,"{NB_HOST}",{NB_PORT},0\r\n'.encode())
        got = b""
        deadline = time.monotonic() + 15
        while b"+QSSLOPEN: 3," not in got or not got.endswith(b"\r\n"):
            assert time.monotonic() < deadline, got
            got += uart.read(1 << 16, 0.05)
        assert got.endswith(b"\r\nOK\r\n\r\n+QSSLOPEN: 3,0\r\n"), got
        assert _uart_at(uart, b"AT+QSSLCLOSE=3").endswith(b"\r\nOK\r\n")
        conn = server.wait_done(timeout=10)
        assert "modem client" in (conn.client_cert_subject or "")


def test_catm1_provisioning_table_uploads_three_pems_and_configures_context_2(provisioning, emulator, pki, tmp_path, strict_log):
    """The table as the tool runs it.  ATE0 (echo on until then) is OK; the two bare "AT"s are
    no command lines -- nothing answers, both 1 s waits run out -- and they prefix the next
    line: the module reads "ATATAT+CPIN?" and answers ERROR, so "+CPIN:" also times out (the
    tool's fault: a real module does the same); every later row finds its answer.
    AT+QFDEL="*" removes the stale root.crt, each AT+QFUPL="ufs:<name>" is CONNECT then
    "+QFUPL: <size>,<checksum>" with the size the tool counted, the six AT+QSSLCFG are OK and
    the ignorelocaltime query of context 1 answers "+QSSLCFG: ".  The files and context 2 then
    work: AT+QFLST shows the three sizes, and AT+QSSLOPEN on context 2 passes mutual TLS."""
    tool = provisioning
    root, client, key = _write_pems(tmp_path, pki, crlf=False)
    tool.cfg_handler(quec_config(root, client, key))
    assert tool.timeouts == ["OK", "OK", "+CPIN:"]
    uart = tool.ser.uart
    wire = bytes(uart.wire_rx).decode("latin-1")
    assert wire.startswith("ATE0\r\r\nOK\r\n\r\nERROR\r\n")         # the echo of ATE0, then ATATAT+CPIN?
    sizes = [len(pki.ca.cert_pem), len(pki.client.cert_pem), len(pki.client.key_pem)]
    uploads = [b for b in tool.callbacks if "+QFUPL:" in b]
    assert [int(b.split("+QFUPL: ")[1].split(",")[0]) for b in uploads] == sizes
    assert len(tool.callbacks) == 1 + 7 + 3 * 2 + 7
    assert tool.callbacks[-1].startswith('\r\n+QSSLCFG: "ignorelocaltime",1,')
    listing = _uart_at(uart, b'AT+QFLST="*"')
    for name, size in zip(("root.crt", "client.crt", "key.pem"), sizes):
        assert f'+QFLST: "{name}",{size}\r\n'.encode() in listing
    assert listing.count(b"+QFLST: ") == 3
    _verify_context_2(uart, emulator, pki)


def test_catm1_provisioning_with_crlf_pem_files_counts_what_it_sends(provisioning, emulator, pki, tmp_path, strict_log):
    """PEMs saved with CR LF line ends (a Windows copy): the tool reads them in text mode, so
    both its {size} and the bytes it writes have LF only -- consistent; the module stores
    exactly what came (+QFUPL sizes = the LF-only lengths) and the certificates still parse."""
    tool = provisioning
    root, client, key = _write_pems(tmp_path, pki, crlf=True)
    tool.cfg_handler(quec_config(root, client, key))
    sizes = [len(pki.ca.cert_pem), len(pki.client.cert_pem), len(pki.client.key_pem)]
    uploads = [b for b in tool.callbacks if "+QFUPL:" in b]
    assert [int(b.split("+QFUPL: ")[1].split(",")[0]) for b in uploads] == sizes
    _verify_context_2(tool.ser.uart, emulator, pki)
