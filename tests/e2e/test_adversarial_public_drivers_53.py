"""Adversarial tests: a fifty-third set of public host code pointed at the pty -- an ESP-IDF
firmware that does mutual TLS to AWS IoT by hand (the CA, the client certificate and its key
uploaded with AT+QFUPL, SSL context 2 at seclevel 2 with SNI and ALPN, MQTT 3.1.1 packets carried
by AT+QSSLSEND / polled with AT+QSSLRECV), an Arduino "SSL" class of the ThaiEasyElec UC20 line
whose open re-sends AT+QSSLOPEN every second until it sees the URC, and a BG95 provisioning
state machine in C that uploads a CA / client certificate / key, checks each upload's checksum
and listing, and binds the pair to an SSL context.  (The store did not name the repository of
any of them; none of their store ids, nor "pothole", "ssl_recv_bytes", "SSL_CFG_OK",
"zs_bg95", "dioneya" appears in the earlier public_drivers files or the covered lists.)

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- store file id 55783188594: main.c of "Pothole LTE Firmware v1.0.0" (7Semi ESP32-S3 + Quectel
  EC200U-CN, whose SSL command set is the EC2x's; ESP-IDF, FreeRTOS; 51,689 characters, read
  from offset 0 to 40,000: the UART helpers, modem_init, lte_attach, the SSL/MQTT section).
  What the model keeps:
  * at_send(cmd, expected, timeout_ms, rx, len): uart_flush_input() (whatever waits is thrown
    away, URCs included), the command and "\\r\\n" in two uart_write_bytes(), then
    uart_read_bytes(remaining room, 50 ms) -- which returns when the room is full or 50 ms
    passed -- appended until `expected` or "ERROR" is in the text (strstr) or timeout_ms ran
    out; success = `expected` in the text.  at_ok(cmd) = at_send(cmd, "OK", 5000) into a
    static 512-byte buffer.
  * modem_init(): AT until OK, ATE0, AT+CMEE=2, AT+QURCCFG="urcport","uart1", AT+CIMI,
    AT+QCCID, AT+CNUM (logged).  The 3 s power-up wait is not replayed (the board's modem is
    up).  lte_attach(): AT+CGDCONT=1,"IP","<apn>", AT+QICSGP=1,1,"<apn>","","",1, AT+CEREG?
    until ",1"/",5" is in it, AT+QIACT=1 (30 s), 1 s, AT+QIACT? wanting "+QIACT:",
    AT+CGCONTRDP=1 and, from its sixth/seventh fields, AT+QIDNSCFG=0,.. / =1,.. (answers
    ignored).  The QPING diagnostics that follow only feed log lines and are not replayed.
  * mqtt_configure_tls(): per file AT+QFDEL="<name>" (answer ignored), 300 ms,
    AT+QFUPL="<name>",<len>,30 wanting "CONNECT" (10 s), the PEM in one write, then 3 s WITHOUT
    reading (the "+QFUPL: <len>,<cs>" / OK wait in the UART and go with the next flush); the
    names cacert.pem, client.pem, client_key.pem (and a delete of client.key).  Then, each
    wanting OK (else false): "sslversion",2,4; "ciphersuite",2,0xFFFF; "cacert",2,
    "UFS:cacert.pem"; "clientcert",2,"UFS:client.pem"; "clientkey",2,"UFS:client_key.pem";
    "seclevel",2,2; "ignorelocaltime",2,1; "sni",2,1.  ALPN: "alpn",2,1,"x-amzn-mqtt-ca"
    first, then "alpn",2,"x-amzn-mqtt-ca" (the SSL note's syntax); both refused -> port 8883.
    AT+QFLST (logged).  (The first test keeps the 3 s pauses; the others cut them to 0.3 s,
    by when the module has answered the upload: the answer is flushed unread either way.)
  * mqtt_open(): AT+QSSLCLOSE=0 (answer ignored), 500 ms, AT+QSSLOPEN=1,2,0,"<endpoint>",<port>,0
    wanting "+QSSLOPEN:" (60 s), sscanf("%d,%d") after it: result 0 or false.
  * ssl_send_bytes(): flush, AT+QSSLSEND=0,<len> + "\\r\\n", 50 ms reads until ">" is in the text
    (10 s), the bytes in one write, reads until "SEND OK" or "ERROR" (10 s).
  * ssl_recv_bytes(buf, max, timeout): per try flush, AT+QSSLRECV=0,<max>, 50 ms reads until
    "\\r\\nOK" or "ERROR" (3 s); "+QSSLRECV:" -> %d; > 0 -> the bytes after the CR LF that
    ends that line, min(len, what came, max); else 500 ms and again until `timeout`.
  * mqtt_connect(): CONNECT (MQTT 3.1.1, clean session, keepalive 120, the device id), then
    ssl_recv_bytes(8, 15 s) wanting 0x20 and return code 0; mqtt_publish(): PUBLISH QoS 0 to
    potholes/detection/<device>; mqtt_ping(): C0 00 and an 8-byte read (3 s).
  Driver faults that would hit a real module too (named, not asserted against the emulator):
  at_send() stops at the first chunk holding "+QSSLOPEN:", so a URC split across two 50 ms
  reads (a real UART at 115200 Bd can end a read mid-line) parses as result -1; ssl_recv_bytes()
  stops at "ERROR" or "\\r\\nOK" inside the payload, and a payload larger than what one 3 s
  read brings is cut.

- store file id 3393463068: ssl.cpp of an Arduino "SSL" class over a `gsm` UC20 object (the
  ThaiEasyElec UC20 line; the same family as NSB_UC20's ssl.cpp, store id 49181238805, covered
  in public_drivers_37, whose open() waits for OK and never re-sends; this one differs).  The
  UC20 object's wait_ok_ndb is as in store ids 49284151697 / 48981549489 (readStringUntil('\\n')
  lines until "OK" / "ERROR").  What the model keeps:
  * Open(pdp, ctx, id, host, port, mode): "AT+QSSLOPEN=" and every field in its own print()
    (eleven writes), println("") -> CR LF.  Then forever: one readStringUntil('\\n') (Stream
    timeout 1000 ms); a line holding "OK" sets ret; a line holding "+QSSLOPEN:" ends it:
    toInt() after its ',' and toInt() from the ',' (always 0) must both be 0; every 1000 ms
    (checked after each line) the WHOLE AT+QSSLOPEN command is written again.
  * StartSend(id, len): AT+QSSLSEND=<id>,<len>, bytes read one at a time until '>' (true) or
    the text holds "ERROR" / "NO CARRIER"; 3 s without it -> AT, wait_ok_ndb(1 s), the command
    again, three times at most.
  * StopSend(): 0x1A, waits for a byte, ONE readStringUntil('\\n'), "SEND OK" in it or false.
    Close(id): AT+QSSLCLOSE=<id>, then `while (gsm.available())` -- right after the write
    nothing has come yet, so the loop never runs and the function falls off its end (no
    return value: undefined; the model returns None) and the module's OK stays unread.
  Driver faults that would hit a real module too: a handshake longer than a second gets the
  open command again while the first is pending (the module refuses it, ERROR, clientID in
  use -- the loop ignores that ERROR and still takes the first open's URC); in access mode 2
  the module answers CONNECT and no URC, so Open() never returns and writes its AT+QSSLOPEN
  line into the TLS connection once a second; StopSend() reads the blank line in front of
  SEND OK (the module's answer starts with CR LF) and reports failure; Close() returns before
  the answer.

- store file id 68640858014: zs_bg95_provision.c (a BG95 provisioning state machine of a
  station firmware whose MQTT client ids read "dioneya-<station>-<boot>"; 9,627 characters,
  read whole), with its header zs_bg95_provision.h (store id 68786589881: MAX_FILES 3,
  NAME_MAX 31, UPLOAD_TIMEOUT_S 60, STEP_TIMEOUT_MS 5000, UPLOAD_TIMEOUT_MS 65000,
  CHUNK_BYTES 256) and its unit test (store id 68693219016, whose mock modem answers
  "+QFUPL: <size>,<checksum in decimal>").  What the model keeps:
  * send_line(): "<cmd>\r\n" in one uart_write, a 5 s step deadline.  Per file: DELETE
    (AT+QFDEL="<name>": OK or any error line goes on), UPLOAD_CMD (AT+QFUPL="<name>",<size>,60:
    a line equal to "CONNECT" -> data; an error line fails), UPLOAD_DATA (tick(): the file in
    256-byte writes), UPLOAD_RESULT ("+QFUPL:" -> sscanf(" %u,%u"): the size must match and
    the (uint16) checksum equal checksum16() -- XOR of big-endian 16-bit words, an odd last
    byte as a high byte -- then OK), LIST (AT+QFLST="<name>" -> '+QFLST: "<name>",<size>',
    the same bare name and size, then OK); then AT+QSSLCFG="clientcert",<ctx>,"<name>" and
    "clientkey" each OK -> DONE.  on_line() skips leading spaces / CR / LF and blank lines;
    "OK" must be the whole line, errors are lines starting ERROR / +CME ERROR / +CMS ERROR.
  * The line reader and the init of zs_bg95.c were not read: the model feeds CR/LF-split
    lines every 10 ms, then tick() with millis(), after an ATE0.
  Driver fault that hits a real module too: Quectel firmware prints the checksum in hex
  ("+QFUPL: 1188,2d13", a BG96 log), the driver's sscanf reads it as decimal and stops at the
  first a-f digit, so every upload whose checksum is 10 or more ends CHECKSUM_MISMATCH (the
  unit test's decimal mock hides it).

Every host name dialled is routed to 127.0.0.1, the servers are OpenSSL (Python's ssl).
Where a driver misreads what the module prints, the tests assert what the module prints and
name the driver's fault.  No emulator bug was found in this round.
"""
from __future__ import annotations

import re
import socket
import ssl
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import Uart, activate_pdp
from tests.e2e.test_adversarial_public_drivers_23 import atoi
from tests.e2e.test_adversarial_public_drivers_37 import TonyStream

ENDPOINT = "www.iottest.work"       # the shared PKI's server certificate carries this name
AWS_IOT_PORT = 443
DEVICE_ID = "pothole-unit-01"
TOPIC = f"potholes/detection/{DEVICE_ID}"


# == driver 1: Pothole LTE Firmware (ESP-IDF, EC200U) ==========================================
class EspUart:
    """ESP-IDF's UART driver as main.c uses it, over the pty."""

    def __init__(self, path: str) -> None:
        self.u = Uart(path)

    def flush_input(self) -> None:
        time.sleep(0.005)                   # (let the RX thread take what the kernel holds)
        with self.u.cond:
            self.u.rx.clear()

    def write_bytes(self, data: bytes) -> None:
        self.u.write(data)

    def read_bytes(self, n: int, timeout: float) -> bytes:
        return self.u.read(n, timeout)

    def close(self) -> None:
        self.u.close()


class Pothole:
    def __init__(self, uart: EspUart, apn: str = "airtelgprs.com",
                 endpoint: str = ENDPOINT) -> None:
        self.uart = uart
        self.apn, self.endpoint = apn, endpoint
        self.mqtt_port = AWS_IOT_PORT
        self.log: list[tuple[str, bytes]] = []

    # -- MODEM UART HELPERS --------------------------------------------------------------------
    def at_send(self, cmd: str, expected: str, timeout_ms: int,
                rx_len: int = 512) -> tuple[bool, bytes]:
        self.uart.flush_input()
        self.uart.write_bytes(cmd.encode())
        self.uart.write_bytes(b"\r\n")
        rx = bytearray()
        remain = rx_len - 1
        deadline = time.monotonic() + timeout_ms / 1000
        exp = expected.encode()
        while time.monotonic() < deadline and remain > 0:
            got = self.uart.read_bytes(remain, 0.05)
            if got:
                rx += got
                remain -= len(got)
                if exp in rx or b"ERROR" in rx:
                    break
        self.log.append((cmd, bytes(rx)))
        return exp in rx, bytes(rx)

    def at_ok(self, cmd: str) -> bool:
        return self.at_send(cmd, "OK", 5000)[0]

    # -- MODEM INIT / LTE ATTACH ---------------------------------------------------------------
    def modem_init(self) -> bool:
        for _ in range(10):
            if self.at_ok("AT"):
                break
            time.sleep(0.5)
        else:
            return False
        self.at_ok("ATE0")
        self.at_ok("AT+CMEE=2")
        self.at_ok('AT+QURCCFG="urcport","uart1"')
        for cmd in ("AT+CIMI", "AT+QCCID", "AT+CNUM"):
            self.at_send(cmd, "OK", 5000, 128)
        return True

    def lte_attach(self) -> bool:
        self.at_ok(f'AT+CGDCONT=1,"IP","{self.apn}"')
        self.at_ok(f'AT+QICSGP=1,1,"{self.apn}","","",1')
        for i in range(60):
            ok, rx = self.at_send("AT+CEREG?", "+CEREG:", 5000, 256)
            if ok and (b",1" in rx or b",5" in rx):
                break
            time.sleep(1.0)
            if i == 59:
                return False
        self.at_send("AT+QIACT=1", "OK", 30000, 256)
        time.sleep(1.0)
        ok, _ = self.at_send("AT+QIACT?", "+QIACT:", 5000, 256)
        if not ok:
            return False
        _, pdp = self.at_send("AT+CGCONTRDP=1", "+CGCONTRDP:", 5000, 512)
        m = re.search(rb'\+CGCONTRDP: \d+,\d+,"[^"]+","[^"]+","[^"]+",'
                      rb'"([^"]{1,47})","([^"]{1,47})"', pdp)
        if m and len(m.group(1)) > 6:
            d1, d2 = m.group(1).decode(), m.group(2).decode()
            self.at_send(f'AT+QIDNSCFG=0,"{d1}","{d2}"', "OK", 5000, 256)
            self.at_send(f'AT+QIDNSCFG=1,"{d1}","{d2}"', "OK", 5000, 256)
        else:
            self.at_ok('AT+QIDNSCFG=0,"121.242.190.150","115.249.168.190"')
            self.at_ok('AT+QIDNSCFG=1,"121.242.190.150","115.249.168.190"')
        return True

    # -- SSL/MQTT ------------------------------------------------------------------------------
    def _upload(self, name: str, pem: bytes, pause: float) -> bool:
        if not self.at_send(f'AT+QFUPL="{name}",{len(pem)},30', "CONNECT", 10000, 512)[0]:
            return False
        self.uart.write_bytes(pem)
        time.sleep(pause)                   # vTaskDelay(3000): the answer is never read
        return True

    def mqtt_configure_tls(self, ca: bytes, cert: bytes, key: bytes, pause: float = 3.0) -> bool:
        self.at_send('AT+QFDEL="cacert.pem"', "OK", 3000)
        time.sleep(0.3)
        if not self._upload("cacert.pem", ca, pause):
            return False
        self.at_send('AT+QFDEL="client.pem"', "OK", 3000)
        time.sleep(0.3)
        if not self._upload("client.pem", cert, pause):
            return False
        self.at_send('AT+QFDEL="client.key"', "OK", 3000)
        self.at_send('AT+QFDEL="client_key.pem"', "OK", 3000)
        time.sleep(0.3)
        if not self._upload("client_key.pem", key, pause):
            return False
        for cmd in ('AT+QSSLCFG="sslversion",2,4', 'AT+QSSLCFG="ciphersuite",2,0xFFFF',
                    'AT+QSSLCFG="cacert",2,"UFS:cacert.pem"',
                    'AT+QSSLCFG="clientcert",2,"UFS:client.pem"',
                    'AT+QSSLCFG="clientkey",2,"UFS:client_key.pem"',
                    'AT+QSSLCFG="seclevel",2,2', 'AT+QSSLCFG="ignorelocaltime",2,1',
                    'AT+QSSLCFG="sni",2,1'):
            if not self.at_send(cmd, "OK", 5000)[0]:
                return False
        self.mqtt_port = AWS_IOT_PORT
        if not self.at_send('AT+QSSLCFG="alpn",2,1,"x-amzn-mqtt-ca"', "OK", 5000)[0]:
            if not self.at_send('AT+QSSLCFG="alpn",2,"x-amzn-mqtt-ca"', "OK", 5000)[0]:
                self.mqtt_port = 8883
        self.at_send("AT+QFLST", "OK", 5000, 256)
        return True

    def mqtt_open(self) -> tuple[bool, int]:
        self.at_send("AT+QSSLCLOSE=0", "OK", 5000, 256)
        time.sleep(0.5)
        ok, rx = self.at_send(f'AT+QSSLOPEN=1,2,0,"{self.endpoint}",{self.mqtt_port},0',
                              "+QSSLOPEN:", 60000, 256)
        if not ok:
            return False, -1
        m = re.match(rb"\s*(-?\d+),(-?\d+)", rx[rx.index(b"+QSSLOPEN:") + 10:])
        result = int(m.group(2)) if m else -1
        return result == 0, result

    def ssl_send_bytes(self, data: bytes) -> bool:
        cmd = f"AT+QSSLSEND=0,{len(data)}".encode()
        self.uart.flush_input()
        self.uart.write_bytes(cmd)
        self.uart.write_bytes(b"\r\n")
        rx = bytearray()
        dl = time.monotonic() + 10
        while time.monotonic() < dl and len(rx) < 127:
            got = self.uart.read_bytes(127 - len(rx), 0.05)
            if got:
                rx += got
                if b">" in rx:
                    break
        if b">" not in rx:
            return False
        self.uart.write_bytes(data)
        rx = bytearray()
        dl = time.monotonic() + 10
        while time.monotonic() < dl and len(rx) < 127:
            got = self.uart.read_bytes(127 - len(rx), 0.05)
            if got:
                rx += got
                if b"SEND OK" in rx or b"ERROR" in rx:
                    break
        self.log.append(("send", bytes(rx)))
        return b"SEND OK" in rx

    def ssl_recv_bytes(self, max_len: int, timeout_ms: int) -> bytes:
        cmd = f"AT+QSSLRECV=0,{max_len}".encode()
        outer = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < outer:
            self.uart.flush_input()
            self.uart.write_bytes(cmd)
            self.uart.write_bytes(b"\r\n")
            rx = bytearray()
            rd = time.monotonic() + 3
            while time.monotonic() < rd and len(rx) < 511:
                got = self.uart.read_bytes(511 - len(rx), 0.05)
                if got:
                    rx += got
                    if b"\r\nOK" in rx or b"ERROR" in rx:
                        break
            self.log.append(("recv", bytes(rx)))
            p = rx.find(b"+QSSLRECV:")
            if p >= 0:
                n = atoi(bytes(rx[p + 10:]))
                if n > 0:
                    ds = rx.find(b"\r\n", p + 10)
                    if ds >= 0:
                        ds += 2
                        cp = min(n, len(rx) - ds, max_len)
                        if cp > 0:
                            return bytes(rx[ds:ds + cp])
            time.sleep(0.5)
        return b""

    def mqtt_connect(self) -> tuple[bool, bytes]:
        if not self.ssl_send_bytes(mqtt_connect_pkt(DEVICE_ID)):
            return False, b""
        connack = self.ssl_recv_bytes(8, 15000)
        return len(connack) >= 4 and connack[0] == 0x20 and connack[3] == 0, connack

    def mqtt_publish(self, payload: str) -> bool:
        return self.ssl_send_bytes(mqtt_publish_pkt(TOPIC, payload))

    def mqtt_ping(self) -> bytes:
        self.ssl_send_bytes(b"\xc0\x00")
        return self.ssl_recv_bytes(8, 3000)


def mqtt_remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_connect_pkt(client_id: str) -> bytes:
    vh = b"\x00\x04MQTT\x04\x02\x00\x78"
    cid = client_id.encode()
    body = vh + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + mqtt_remaining(len(body)) + body


def mqtt_publish_pkt(topic: str, payload: str) -> bytes:
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + payload.encode()
    return b"\x30" + mqtt_remaining(len(body)) + body


class Broker:
    """The MQTT side of an AWS IoT endpoint, as a TlsServer handler: CONNECT -> CONNACK (after
    `delay` s), then PUBLISH / PINGREQ packets recorded (PINGRESP answered) until EOF."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.packets: list[bytes] = []
        self.raw = bytearray()
        self.done = threading.Event()

    def _packet(self, conn) -> bytes | None:
        def need(n: int) -> bool:
            while len(self.raw) < n:
                data = conn.recv(4096, timeout=20)
                if not data:
                    return False
                self.raw += data
            return True
        if not need(2):
            return None
        mult, length, i = 1, 0, 1
        while True:
            if not need(i + 1):
                return None
            b = self.raw[i]
            length += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
        if not need(i + length):
            return None
        pkt = bytes(self.raw[:i + length])
        del self.raw[:i + length]
        return pkt

    def __call__(self, conn) -> None:
        try:
            while True:
                pkt = self._packet(conn)
                if pkt is None:
                    return
                self.packets.append(pkt)
                if pkt[0] == 0x10:
                    time.sleep(self.delay)
                    conn.sendall(b"\x20\x02\x00\x00")
                elif pkt[0] == 0xC0:
                    conn.sendall(b"\xd0\x00")
        finally:
            self.done.set()


@pytest.fixture
def pothole(driver_path):
    uart = EspUart(driver_path)
    yield Pothole(uart)
    uart.close()


def test_pothole_mutual_tls_mqtt_over_qsslsend_qsslrecv(pothole, emulator, pki, strict_log):
    """The whole firmware path: the three PEMs go up by AT+QFUPL (CONNECT, bytes, the answer left
    unread and flushed by the next command), context 2 takes seclevel 2 + SNI, the first ALPN
    form is refused and the note's form accepted (so port 443 stays), the mutual-TLS open
    answers "+QSSLOPEN: 0,0", the broker sees the modem's client certificate, the SNI and the
    ALPN id, and the MQTT packets arrive byte for byte; CONNACK comes 0.8 s late, so the
    driver's first AT+QSSLRECV polls read 0 and a later one the 4 bytes; PINGRESP reads back."""
    broker = Broker(delay=0.8)
    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True,
                   alpn=["x-amzn-mqtt-ca"], handler=broker) as srv:
        emulator.router.add_map(ENDPOINT, AWS_IOT_PORT, "127.0.0.1", srv.port)
        assert pothole.modem_init()
        assert pothole.lte_attach()
        assert pothole.mqtt_configure_tls(pki.ca.cert_pem, pki.client.cert_pem,
                                          pki.client.key_pem, pause=3.0)
        log = dict(pothole.log)
        assert b"ERROR" in log['AT+QSSLCFG="alpn",2,1,"x-amzn-mqtt-ca"']
        assert log['AT+QSSLCFG="alpn",2,"x-amzn-mqtt-ca"'].endswith(b"OK\r\n")
        assert pothole.mqtt_port == AWS_IOT_PORT
        # the unread upload answers were flushed; the listing shows the three files' sizes
        flst = log["AT+QFLST"]
        for name, pem in (("cacert.pem", pki.ca.cert_pem), ("client.pem", pki.client.cert_pem),
                          ("client_key.pem", pki.client.key_pem)):
            assert f'+QFLST: "{name}",{len(pem)}'.encode() in flst, flst
        ok, result = pothole.mqtt_open()
        assert (ok, result) == (True, 0), pothole.log[-1]
        conn = srv.wait_handshake(timeout=5)
        assert conn.sni == ENDPOINT
        assert conn.alpn_selected == "x-amzn-mqtt-ca"
        assert "CN=modem client" in conn.client_cert_subject
        ok, connack = pothole.mqtt_connect()
        assert ok and connack == b"\x20\x02\x00\x00"
        polls = [rx for what, rx in pothole.log if what == "recv"]
        assert len(polls) >= 2 and b"+QSSLRECV: 0\r\n" in polls[0]
        payload = '{"event_id":"event_00","severity":"HIGH","peak_g":3.870,"has_gps":false}'
        assert pothole.mqtt_publish(payload)
        assert pothole.mqtt_ping() == b"\xd0\x00"
        assert pothole.at_send("AT+QSSLCLOSE=0", "OK", 5000)[0]
        assert broker.done.wait(5)
        assert broker.packets == [mqtt_connect_pkt(DEVICE_ID), mqtt_publish_pkt(TOPIC, payload),
                                  b"\xc0\x00"]


def test_pothole_wrong_ca_fails_the_open_and_the_broker_sees_no_client(pothole, emulator, pki,
                                                                       strict_log):
    """The CA slot holds another CA: the seclevel-2 open ends "+QSSLOPEN: 0,566" (TLS failure,
    the SSL note's connect-failed code), mqtt_open() reads result 566 and gives up; AT+QIGETERROR
    names the failure; the broker never gets an application byte."""
    broker = Broker()
    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True,
                   alpn=["x-amzn-mqtt-ca"], handler=broker) as srv:
        emulator.router.add_map(ENDPOINT, AWS_IOT_PORT, "127.0.0.1", srv.port)
        activate_pdp_via(pothole)
        assert pothole.mqtt_configure_tls(pki.wrong_ca.cert_pem, pki.client.cert_pem,
                                          pki.client.key_pem, pause=0.3)
        assert pothole.mqtt_open() == (False, 566)
        ok, rx = pothole.at_send("AT+QIGETERROR", "OK", 5000)
        assert b"+QIGETERROR: 566," in rx
        assert not broker.packets
        assert not any(c.handshake_done and c.received for c in srv.connections)


def activate_pdp_via(drv: Pothole) -> None:
    assert drv.modem_init()
    assert drv.at_ok('AT+QICSGP=1,1,"airtelgprs.com","","",1')
    assert drv.at_send("AT+QIACT=1", "OK", 30000)[0]


def test_pothole_recv_poll_with_a_burst_larger_than_max_len(pothole, emulator, pki, strict_log):
    """ssl_recv_bytes(8, ...) against a broker that answers CONNACK and a retained PUBLISH in one
    write (4 + 30 bytes): each AT+QSSLRECV=0,8 takes at most 8, the module keeps the rest in
    order, and successive polls give the bytes back exactly; the last read of the burst leaves
    "+QSSLRECV: 0"."""
    retained = mqtt_publish_pkt("potholes/cmd", "reset-01")

    def handler(conn):
        pkt = conn.recv(4096, timeout=10)
        assert pkt == mqtt_connect_pkt(DEVICE_ID)
        conn.sendall(b"\x20\x02\x00\x00" + retained)
        conn.recv(4096, timeout=10)

    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True,
                   handler=handler) as srv:
        emulator.router.add_map(ENDPOINT, AWS_IOT_PORT, "127.0.0.1", srv.port)
        activate_pdp_via(pothole)
        assert pothole.mqtt_configure_tls(pki.ca.cert_pem, pki.client.cert_pem,
                                          pki.client.key_pem, pause=0.3)
        assert pothole.mqtt_open() == (True, 0)
        ok, connack = pothole.mqtt_connect()
        assert ok
        got = bytearray(connack)
        while len(got) < 4 + len(retained):
            chunk = pothole.ssl_recv_bytes(8, 3000)
            assert chunk, bytes(got)
            assert len(chunk) <= 8
            got += chunk
        assert bytes(got) == b"\x20\x02\x00\x00" + retained
        _, rx = pothole.at_send("AT+QSSLRECV=0,8", "OK", 3000)
        assert b"+QSSLRECV: 0\r\n" in rx
        assert pothole.at_send("AT+QSSLCLOSE=0", "OK", 5000)[0]


def test_pothole_connack_stays_readable_after_the_broker_closes(pothole, emulator, pki, strict_log):
    """The broker answers CONNACK, sends close_notify and closes before the firmware's first
    poll: the poll's flush throws the "recv" / "closed" URCs away, yet AT+QSSLRECV=0,8 still
    returns the 4 CONNACK bytes (data received before a close stay readable), the next poll
    reads 0, and a PUBLISH's AT+QSSLSEND=0,<len> is refused with ERROR, no prompt (on which
    ssl_send_bytes() would sit out its 10 s prompt wait: it stops only at ">")."""
    def handler(conn):
        assert conn.recv(4096, timeout=10) == mqtt_connect_pkt(DEVICE_ID)
        conn.sendall(b"\x20\x02\x00\x00")
        conn.send_close_notify()

    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True,
                   handler=handler) as srv:
        emulator.router.add_map(ENDPOINT, AWS_IOT_PORT, "127.0.0.1", srv.port)
        activate_pdp_via(pothole)
        assert pothole.mqtt_configure_tls(pki.ca.cert_pem, pki.client.cert_pem,
                                          pki.client.key_pem, pause=0.3)
        assert pothole.mqtt_open() == (True, 0)
        assert pothole.ssl_send_bytes(mqtt_connect_pkt(DEVICE_ID))
        srv.wait_done(timeout=5)
        time.sleep(0.3)
        assert pothole.ssl_recv_bytes(8, 3000) == b"\x20\x02\x00\x00"
        _, rx = pothole.at_send("AT+QSSLRECV=0,8", "OK", 3000)
        assert b"+QSSLRECV: 0\r\n" in rx
        # (ssl_send_bytes() would wait its full 10 s for a ">" that never comes: its prompt
        # loop does not stop at ERROR; the command alone shows the refusal)
        ok, rx = pothole.at_send("AT+QSSLSEND=0,2", ">", 3000)
        assert not ok and rx.endswith(b"ERROR\r\n")
        assert pothole.at_send("AT+QSSLCLOSE=0", "OK", 5000)[0]


# == driver 2: the UC20-line "SSL" class with the re-sending Open() ============================
class Uc20Ssl:
    def __init__(self, stream: TonyStream) -> None:
        self.gsm = stream
        self.opens_written = 0

    def _open_cmd(self, pdp: int, ctx: int, cid: int, host: str, port: str, mode: int) -> None:
        for piece in ("AT+QSSLOPEN=", str(pdp), ",", str(ctx), ",", str(cid), ',"', host, '",',
                      port, ","):
            self.gsm.print(piece.encode())
        self.gsm.print(str(mode).encode())
        self.gsm.println(b"")
        self.opens_written += 1

    def open(self, pdp: int, ctx: int, cid: int, host: str, port: str, mode: int,
             give_up: float = 30.0) -> bool | None:
        """`give_up` bounds the driver's endless loop (the source has none): None then."""
        ret = False
        self._open_cmd(pdp, ctx, cid, host, port, mode)
        prev = time.monotonic()
        end = prev + give_up
        while time.monotonic() < end:
            req = self.gsm.read_string_until(0x0A)
            if b"OK" in req:
                ret = True
            if b"+QSSLOPEN:" in req:
                index = req.index(b",")
                ret_, ret_2 = atoi(req[index + 1:]), atoi(req[index:])
                return ret_ == 0 and ret_2 == 0
            if time.monotonic() - prev >= 1.0:
                self._open_cmd(pdp, ctx, cid, host, port, mode)
                prev = time.monotonic()
        self.ok_seen = ret                   # (the source keeps it, then loops forever)
        return None

    def start_send(self, cid: int, length: int) -> bool:
        def cmd():
            self.gsm.print(b"AT+QSSLSEND=")
            self.gsm.print(str(cid).encode())
            self.gsm.print(b",")
            self.gsm.println(str(length).encode())
        cmd()
        buf = bytearray()
        prev = time.monotonic()
        retry = 0
        while True:
            if self.gsm.available():
                c = self.gsm.read()
                if c == ord(">"):
                    return True
                buf.append(c)
                if b"ERROR" in buf or b"NO CARRIER" in buf:
                    return False
            else:
                time.sleep(0.001)
            if time.monotonic() - prev >= 3.0:
                retry += 1
                self.gsm.println(b"AT")
                self.wait_ok_ndb(1.0)
                cmd()
                prev = time.monotonic()
                if retry >= 3:
                    return False

    def wait_ok_ndb(self, t: float) -> bool:
        prev = time.monotonic()
        while True:
            req = self.gsm.read_string_until(0x0A)
            if b"OK" in req:
                return True
            if b"ERROR" in req:
                return False
            if time.monotonic() - prev >= t:
                return False

    def stop_send(self) -> bool:
        self.gsm.write(b"\x1a")
        prev, cnt = time.monotonic(), 0
        while not self.gsm.available():
            if time.monotonic() - prev >= 3.0:
                self.gsm.write(b"\x1a")
                cnt += 1
                if cnt > 3:
                    return False
            time.sleep(0.001)
        return b"SEND OK" in self.gsm.read_string_until(0x0A)

    def close(self, cid: int):
        # available() runs microseconds after print() filled the TX buffer, before the module
        # has even received the line: what it sees is what was waiting before the write
        waiting = self.gsm.available()
        self.gsm.print(b"AT+QSSLCLOSE=")
        self.gsm.println(str(cid).encode())
        while waiting:                       # nothing had come: never entered
            req = self.gsm.read_string_until(0x0A)
            return b"OK" in req
        return None                          # (falls off the end: undefined in C++)


class SlowTlsServer:
    """Accepts one TCP connection, waits `delay` s, then does the TLS handshake (OpenSSL) and
    records what the client sends until EOF."""

    def __init__(self, cert, delay: float) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.set_ciphers("DEFAULT")
        cert.configure_cert(self.ctx)
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = bytearray()
        self.accepted_at: float | None = None
        self.handshake_at: float | None = None
        self.accepts = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.listener.settimeout(20)
            raw, _ = self.listener.accept()
            self.accepts += 1
            self.accepted_at = time.monotonic()
            time.sleep(self.delay)
            tls = self.ctx.wrap_socket(raw, server_side=True)
            self.handshake_at = time.monotonic()
            tls.settimeout(20)
            while True:
                try:
                    data = tls.recv(4096)
                except (ssl.SSLError, OSError):
                    break
                if not data:
                    break
                self.received += data
            tls.close()
        finally:
            self.done.set()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def uc20(driver_path):
    activate_pdp(driver_path)                  # the sketch's QICSGP / QIACT, already done
    uart = Uart(driver_path)
    yield Uc20Ssl(TonyStream(uart)), uart
    uart.close()


def test_uc20_open_resent_during_a_slow_handshake_still_gets_one_urc(uc20, emulator, pki,
                                                                    strict_log):
    """The server holds the handshake for 2.3 s: the driver writes AT+QSSLOPEN again about
    every second (echo on, as the module comes up); each repeat is refused with ERROR at once
    (clientID 0 in use) and causes no second connection, and exactly one "+QSSLOPEN: 0,0"
    arrives after the handshake, which Open() takes as success.  Then a fixed-length send of
    39 bytes reaches the server byte for byte; StopSend()'s Ctrl+Z after a fixed-length send
    is a lone byte on the command line (the driver's misuse) and its single-line read sees no
    SEND OK; Close() returns before the answer, whose OK the next wait still finds."""
    drv, uart = uc20
    srv = SlowTlsServer(pki.server, delay=2.3)
    try:
        emulator.router.add_map(ENDPOINT, 443, "127.0.0.1", srv.port)
        t0 = time.monotonic()
        assert drv.open(1, 0, 0, ENDPOINT, "443", 0) is True
        took = time.monotonic() - t0
        assert 2.0 < took < 6.0
        assert drv.opens_written >= 2
        wire = bytes(uart.wire_rx)
        assert wire.count(b"+QSSLOPEN: 0,0\r\n") == 1
        assert not re.search(rb"\+QSSLOPEN: \d+,(?!0\r)", wire), wire
        # every repeat written before the URC got its own immediate ERROR
        urc_at = wire.index(b"+QSSLOPEN: 0,0")
        assert wire[:urc_at].count(b"\r\nERROR\r\n") == drv.opens_written - 1, wire
        assert srv.accepts == 1
        payload = b"GET /status HTTP/1.1\r\nHost: iottest\r\n\r\n"[:39]
        assert drv.start_send(0, len(payload))
        uart.write(payload)
        assert drv.wait_ok_ndb(2.0) is True            # "SEND OK" holds "OK"
        assert drv.stop_send() is False                 # the Ctrl+Z alone: see the docstring
        assert drv.close(0) is None
        assert drv.wait_ok_ndb(3.0) is True             # Close()'s answer, read by the next wait
        assert srv.done.wait(5)
        assert bytes(srv.received) == payload
    finally:
        srv.close()


def test_uc20_transparent_open_never_returns_and_writes_its_command_as_data(uc20, emulator, pki,
                                                                           strict_log):
    """Access mode 2: the module answers CONNECT (no +QSSLOPEN URC), so Open() loops on, and
    once a second writes the whole AT+QSSLOPEN line again -- now into the TLS connection: the
    server receives those lines as application data, byte for byte, none of them answered by
    the module (no ERROR, no second connection).  "+++" after a second of silence returns the
    port to command mode with OK."""
    drv, uart = uc20
    with TlsServer(pki.server, mode="sink") as srv:
        emulator.router.add_map(ENDPOINT, 443, "127.0.0.1", srv.port)
        assert drv.open(1, 0, 0, ENDPOINT, "443", 2, give_up=3.2) is None
        line = f'AT+QSSLOPEN=1,0,0,"{ENDPOINT}",443,2\r\n'.encode()
        repeats = drv.opens_written - 1
        assert repeats >= 2
        conn = srv.wait_handshake(timeout=5)
        srv.wait_for(lambda: len(conn.received) >= repeats * len(line), timeout=5)
        assert bytes(conn.received) == line * repeats
        wire = bytes(uart.wire_rx)
        assert b"CONNECT\r\n" in wire and b"ERROR" not in wire and b"+QSSLOPEN:" not in wire
        assert len(srv.connections) == 1
        time.sleep(1.1)
        uart.write(b"+++")
        assert drv.wait_ok_ndb(3.0) is True
        drv.gsm.println(b"AT+QSSLCLOSE=0")
        assert drv.wait_ok_ndb(3.0) is True


# == driver 3: zs_bg95_provision (C state machine, BG95) =========================================
IDLE, DELETE, UPLOAD_CMD, UPLOAD_DATA, UPLOAD_RESULT, LIST, BIND_CERT, BIND_KEY, DONE, FAILED = range(10)
ERR_NONE, ERR_INVALID, ERR_UART, ERR_TIMEOUT, ERR_MODEM, ERR_SIZE, ERR_CHECKSUM, ERR_LIST = range(8)
ROLE_CA, ROLE_CERT, ROLE_KEY = range(3)
STEP_TIMEOUT_MS, UPLOAD_TIMEOUT_S, UPLOAD_TIMEOUT_MS, CHUNK = 5000, 60, 65000, 256


def checksum16(data: bytes) -> int:
    """zs_bg95_provision_checksum16(): XOR of big-endian 16-bit words, an odd last byte high."""
    s, i = 0, 0
    while i + 1 < len(data):
        s ^= (data[i] << 8) | data[i + 1]
        i += 2
    if i < len(data):
        s ^= data[i] << 8
    return s


def c_scan_uu(text: bytes) -> tuple[int, ...]:
    """sscanf(text, " %u,%u"): the values it converts (a hex digit a-f stops %u)."""
    m = re.match(rb"\s*(\d+)(?:,\s*(\d+))?", text)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


class ZsProvision:
    def __init__(self, uart: Uart, ssl_context: int) -> None:
        self.uart = uart
        self.ssl_context = ssl_context
        self.files: list[tuple[str, bytes, int]] = []
        self.state, self.error = IDLE, ERR_NONE
        self.file_index = self.sent = 0
        self.deadline = 0
        self.result_seen = False
        self.client_cert_name = self.client_key_name = ""
        self.lines: list[bytes] = []
        self._pending = bytearray()

    def add_file(self, name: str, data: bytes, role: int) -> bool:
        if self.state != IDLE or len(self.files) >= 3 or not re.fullmatch(r"[A-Za-z0-9._-]{1,31}", name):
            return False
        if any(r == role or n == name for n, _, r in self.files):
            return False
        self.files.append((name, data, role))
        if role == ROLE_CERT:
            self.client_cert_name = name
        if role == ROLE_KEY:
            self.client_key_name = name
        return True

    def _send_line(self, command: str, now: int, timeout: int) -> None:
        self.uart.write(command.encode() + b"\r\n")          # one uart_write of the frame
        self.deadline = now + timeout
        self.result_seen = False

    def _fail(self, err: int) -> None:
        self.state, self.error = FAILED, err

    def _enter(self, state: int, now: int) -> None:
        name, data, _ = self.files[self.file_index]
        self.state = state
        cmd = {DELETE: f'AT+QFDEL="{name}"',
               UPLOAD_CMD: f'AT+QFUPL="{name}",{len(data)},{UPLOAD_TIMEOUT_S}',
               LIST: f'AT+QFLST="{name}"',
               BIND_CERT: f'AT+QSSLCFG="clientcert",{self.ssl_context},"{self.client_cert_name}"',
               BIND_KEY: f'AT+QSSLCFG="clientkey",{self.ssl_context},"{self.client_key_name}"'}[state]
        self._send_line(cmd, now, STEP_TIMEOUT_MS)

    def start(self, now: int) -> bool:
        roles = {r for _, _, r in self.files}
        if roles != {ROLE_CA, ROLE_CERT, ROLE_KEY}:
            self._fail(ERR_INVALID)
            return False
        self.file_index = 0
        self._enter(DELETE, now)
        return True

    def tick(self, now: int) -> None:
        if self.state == UPLOAD_DATA:
            _, data, _ = self.files[self.file_index]
            while self.sent < len(data):
                chunk = min(len(data) - self.sent, CHUNK)
                self.uart.write(data[self.sent:self.sent + chunk])
                self.sent += chunk
            self.state = UPLOAD_RESULT
            self.deadline = now + UPLOAD_TIMEOUT_MS
            self.result_seen = False
        elif self.state not in (IDLE, DONE, FAILED) and now - self.deadline > 0:
            self._fail(ERR_TIMEOUT)

    def on_line(self, line: bytes, now: int) -> None:
        line = line.lstrip(b" \r\n")
        if not line:
            return
        ok = line == b"OK"
        err = line.startswith((b"ERROR", b"+CME ERROR", b"+CMS ERROR"))
        name, data, _ = self.files[self.file_index]
        st = self.state
        if st == DELETE:
            if ok or err:
                self._enter(UPLOAD_CMD, now)
        elif st == UPLOAD_CMD:
            if line == b"CONNECT":
                self.state, self.sent = UPLOAD_DATA, 0
            elif err:
                self._fail(ERR_MODEM)
        elif st == UPLOAD_RESULT:
            if line.startswith(b"+QFUPL:"):
                vals = c_scan_uu(line[7:])
                if len(vals) != 2 or vals[0] != len(data):
                    self._fail(ERR_SIZE)
                elif vals[1] & 0xFFFF != checksum16(data):
                    self._fail(ERR_CHECKSUM)
                else:
                    self.result_seen = True
            elif ok:
                if self.result_seen:
                    self._enter(LIST, now)
                else:
                    self._fail(ERR_MODEM)
            elif err:
                self._fail(ERR_MODEM)
        elif st == LIST:
            if line.startswith(b"+QFLST:"):
                m = re.match(rb'\s*"([^"]{1,31})",(\d+)', line[7:])
                if m and m.group(1).decode() == name and int(m.group(2)) == len(data):
                    self.result_seen = True
                else:
                    self._fail(ERR_LIST)
            elif ok:
                if self.result_seen:
                    if self.file_index + 1 < len(self.files):
                        self.file_index += 1
                        self._enter(DELETE, now)
                    else:
                        self._enter(BIND_CERT, now)
                else:
                    self._fail(ERR_LIST)
            elif err:
                self._fail(ERR_MODEM)
        elif st == BIND_CERT:
            if ok:
                self._enter(BIND_KEY, now)
            elif err:
                self._fail(ERR_MODEM)
        elif st == BIND_KEY:
            if ok:
                self.state = DONE
            elif err:
                self._fail(ERR_MODEM)

    def run(self, limit: float = 15.0) -> None:
        """The firmware's main loop: lines off the UART (CR/LF-split, blank ones skipped by
        on_line) to on_line(), then tick(), every 10 ms, with millis()."""
        t0 = time.monotonic()
        while self.state not in (DONE, FAILED) and time.monotonic() - t0 < limit:
            got = self.uart.read(4096, 0.01)
            self._pending += got
            now = int(time.monotonic() * 1000)
            while True:
                cut = min((i for i in (self._pending.find(b"\r"), self._pending.find(b"\n")) if i >= 0),
                          default=-1)
                if cut < 0:
                    break
                line = bytes(self._pending[:cut])
                del self._pending[:cut + 1]
                if line:
                    self.lines.append(line)
                self.on_line(line, now)
            self.tick(now)


def tune_checksum(pem: bytes, target: int) -> bytes:
    """pem with four printable characters and a CR LF put IN FRONT (RFC 7468 lets text precede
    the BEGIN line) so that its checksum16 is `target`: the last two are solved for."""
    chars = range(0x30, 0x7B)
    for a in chars:
        for b in chars:
            need = checksum16(bytes([a, b, 0, 0]) + b"\r\n" + pem) ^ target
            c, d = need >> 8, need & 0xFF
            if 0x30 <= c <= 0x7A and 0x30 <= d <= 0x7A:
                out = bytes([a, b, c, d]) + b"\r\n" + pem
                assert checksum16(out) == target
                return out
    raise AssertionError("no printable tuning found")


@pytest.fixture
def zs_uart(driver_path):
    h = Host(driver_path)
    assert h.at("ATE0").endswith(b"OK\r\n")             # the zs_bg95 driver's init (not read)
    h.close()
    uart = Uart(driver_path)
    yield uart
    if not uart._stop:
        uart.close()


def test_zs_provision_checksum_printed_in_hex_fails_the_drivers_decimal_parse(zs_uart, pki, strict_log):
    """Real PEMs (the CA made odd-length): the first upload's answer is
    "+QFUPL: <size>,<checksum16 in lowercase hex>" -- the driver's own checksum16, odd last byte
    as the high byte, printed as Quectel firmware prints it --, which the driver's sscanf
    ("%u,%u") reads as a decimal number cut at the first a-f digit: CHECKSUM_MISMATCH, on a
    real module too (its unit test's mock modem prints the checksum in decimal)."""
    ca = pki.ca.cert_pem if len(pki.ca.cert_pem) % 2 else pki.ca.cert_pem + b"\n"
    while checksum16(ca) < 10:                              # (hex and decimal would agree)
        ca += b"\n\n"
    assert len(ca) % 2 == 1
    drv = ZsProvision(zs_uart, 1)
    assert drv.add_file("dioneya-root", ca, ROLE_CA)
    assert drv.add_file("station.crt", pki.client.cert_pem, ROLE_CERT)
    assert drv.add_file("station.key", pki.client.key_pem, ROLE_KEY)
    assert drv.start(int(time.monotonic() * 1000))
    drv.run()
    expected = f"+QFUPL: {len(ca)},{checksum16(ca):x}".encode()
    assert expected in drv.lines, drv.lines
    assert b"+CME ERROR: 405" in drv.lines                 # the delete of a file not there
    assert (drv.state, drv.error) == (FAILED, ERR_CHECKSUM)
    assert bytes(zs_uart.wire_tx).count(b"AT+QFUPL=") == 1


def test_zs_provision_full_sequence_then_mutual_tls(zs_uart, driver_path, emulator, pki, strict_log):
    """Each file tuned (four letters and CR LF before its BEGIN line) to a checksum of one
    decimal digit, where hex and decimal agree: DELETE (+CME ERROR: 405 for a missing file),
    QFUPL with the data in 256-byte writes, "+QFUPL: <size>,<digit>" + OK, AT+QFLST="<name>"
    -> exactly '+QFLST: "<name>",<size>' + OK, for the three files, then the clientcert /
    clientkey bindings OK: DONE, nothing else written.  The files the module now holds then
    serve a seclevel-2 open (the CA bound and the open made by a test host) that the server
    accepts with the modem's client certificate."""
    files = [("dioneya-root", tune_checksum(pki.ca.cert_pem, 7), ROLE_CA),
             ("station.crt", tune_checksum(pki.client.cert_pem, 3), ROLE_CERT),
             ("station.key", tune_checksum(pki.client.key_pem, 9), ROLE_KEY)]
    drv = ZsProvision(zs_uart, 1)
    for f in files:
        assert drv.add_file(*f)
    assert drv.start(int(time.monotonic() * 1000))
    drv.run()
    assert (drv.state, drv.error) == (DONE, ERR_NONE), drv.lines
    for name, data, _ in files:
        assert f"+QFUPL: {len(data)},{checksum16(data)}".encode() in drv.lines
        assert f'+QFLST: "{name}",{len(data)}'.encode() in drv.lines
    assert bytes(zs_uart.wire_tx).endswith(b'AT+QSSLCFG="clientkey",1,"station.key"\r\n')
    assert max(len(w) for w in zs_uart.writes if not w.startswith(b"AT")) <= CHUNK
    zs_uart.close()
    with TlsServer(pki.server, client_ca=pki.ca, require_client_cert=True) as srv:
        emulator.router.add_map(ENDPOINT, 8883, "127.0.0.1", srv.port)
        h = Host(driver_path)
        try:
            assert h.at('AT+QICSGP=1,1,"internet","","",1;+QIACT=1').endswith(b"OK\r\n")
            assert h.at('AT+QSSLCFG="cacert",1,"dioneya-root"').endswith(b"OK\r\n")
            assert h.at('AT+QSSLCFG="seclevel",1,2').endswith(b"OK\r\n")
            assert h.at(f'AT+QSSLOPEN=1,1,2,"{ENDPOINT}",8883,0').endswith(b"OK\r\n")
            assert h.read_until(b"+QSSLOPEN: 2,", 10) is not None
            assert h.read_until(b"\r\n", 2).startswith(b"0")
            conn = srv.wait_handshake(timeout=5)
            assert "CN=modem client" in conn.client_cert_subject
            assert h.at("AT+QSSLCLOSE=2").endswith(b"OK\r\n")
        finally:
            h.close()
