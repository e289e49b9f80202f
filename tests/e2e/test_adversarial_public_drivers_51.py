"""Adversarial tests: a fifty-first set of public host code pointed at the pty -- two TLS
connection flows of one STM32 + HAL firmware family ("Transceiver.cpp", "Author: juanra",
2018; a C++ "Transceiver" factory choosing a QuectelM95 or a QuectelBG96 class from AT+GMM,
and its older C "Cmdflows.c"), both built on the same table-driven AT engine (CmdProps rows
{ATMATCH|ATGET, label, request, reply, {recv, pre, post} ms, retries}).

OVERLAP (found after this file was written): the BG96 ConnectTLS() flow and the Transceiver
engine are also replayed by test_adversarial_public_drivers_30.py (same store ids 20475039757 /
20241671751), and the M95 TLS part of the same author's code by
test_adversarial_ml302_drivers.py (AT+QSSLCFG rows + the open).  What this file adds: the
engine's CmdProps.timeouts order taken from Transceiver.h ({recv, pre, post}), DisConnect()
followed by the next ConnectTLS()'s AT+QICLOSE=1 / AT+QIDEACT=1 / AT+QIACT=1 / open (client 1
still held), the wrong-CA server and the negotiated version on context 2, and Cmdflows.c's own
rows (store id 3036049006, not replayed before): the "+++" preamble, AT+QSECDEL / AT+QSECWRITE /
AT+QSECREAD with "RAM:" file names and QSendFlow()'s AT+QSSLSEND=1,<len> on the ML302.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- store file id 20475039757 (BG96.cpp, class QuectelBG96, 8,404 characters: ConnectTLS() read
  whole) + store file id 20241671751 (Transceiver.cpp, 16,287 characters, read whole: the
  engine executeCommand() / ATCommandFlow(), SendData()).  What the model keeps:
  * CmdProps.timeouts is {recv, pre, post} (store file id 20251472546, Transceiver.h).
  * executeCommand(): per try (cmd->nretries), initialCounter = the bytes the RX ring holds,
    then <pre> ms in 100 ms slices, the request written in one HAL_UART_Transmit (its length,
    or strlen), then <recv> ms in 100 ms slices -- with a reply string, the wait ends early at
    the first slice where the ring holds initialCounter + strlen(reply) bytes --, then <post>
    ms.  ATMATCH: Lookup(ring, reply) (a substring search) -> ring emptied, 1; else the ring
    is emptied and the next try runs.  ATGET without a reply string: everything in the ring
    goes to the handler (SetGeneric & co., taken as accepting); 0 after the last try.
  * ATCommandFlow(): rows in order; a row that fails with no onfail label ends the flow; the
    index reached is returned; ConnectTLS() is 1 if that row is "END", else -index.
  * ConnectTLS() (BUILD_TLS, SYNC_ALL undefined): "+++" (ATGET, recv 200, 1000 ms silence
    before and after), ATE0\\r
    (ATMATCH "\\r\\nOK\\r\\n", 3 tries), AT+QICLOSE=1\\r, AT+QIDEACT=1\\r, AT+QGPSEND\\r (ATGET),
    AT+QGPS=1\\r, AT+QICSGP=1,1,<apn>,1\\r, AT+QCCID\\r, AT+GSN\\r, AT+CREG?\\r, AT+CGREG?\\r,
    AT+QIACT=1\\r (2000), AT+QIACT?\\r, AT+CCLK?\\r, then SSL context 1: "seclevel",1,1 /
    "sslversion",1,2 / 'AT+QSSLCFG="ignorelocaltime"1,1' (sic: no comma) wanting
    '\\r\\n+QSSLCFG: "ignorelocaltime",1,1\\r\\n' / "ciphersuite",1,0XFFFF /
    "cacert",1,"RAM:ca_cert.pem", then AT+QSSLOPEN=1,2,1,"<host>",<port>,0 (SSL context 2,
    client 1) wanting "\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n" in 4000 ms.
  * SendData(sock != 1): "AT+QSSLSEND=1,<len>\\r" ATMATCH "\\r\\n> " (3000 ms), then the data
    ATMATCH "\\r\\nSEND OK\\r\\n" (3000 ms); 1 when the flow reaches "END".
- store file id 3036049006 (Cmdflows.c, M95ConnectTLSFlow() "LIKE QUECTEL" and QSendFlow(),
  12,503 characters, read whole; same engine).  Written for the Quectel M95, whose SSL
  commands the ML302 copies (AT+QSSLOPEN=<ssid>,<ctxindex>,"<host>",<port>,<connectmode>,
  AT+QSECWRITE / AT+QSECREAD, "ignorertctime"), so it is replayed against the ML302 profile:
  AT+QSECDEL="RAM:ca_cert.pem" (ATGET), AT+QSECWRITE="RAM:ca_cert.pem",<n>,100 wanting
  "\\r\\nCONNECT\\r\\n", the PEM wanting "\\r\\n+QSECWRITE:", ... AT+QSSLCFG="seclevel",0,1 /
  "ignorertctime",1 / "sslversion",0,2 / "ciphersuite",0,"0XFFFF" / AT+QSECREAD="RAM:..."
  wanting "\\r\\n+QSECREAD: 1" / "cacert",0,"RAM:ca_cert.pem" / AT+QSSLOPEN=1,0,"<host>",
  <port>,0 wanting "\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n"; QSendFlow(): "AT+QSSLSEND=1,<len>\\r"
  wanting "\\r\\n> ", the data wanting "\\r\\nSEND OK\\r\\n".

Timings: the engine's 100 ms slice is replayed as 50 ms (all waits halved, to stay under the
suite's per-test budget) in the full ConnectTLS() flow, in DisConnect() and in the M95
preamble; everything else keeps 100 ms.  Every name the drivers dial is routed to a loopback
OpenSSL (Python ssl) server.

What the replay shows (no emulator bug found; each failure is the driver's, on any module that
answers as the manuals say):
* BG96 ConnectTLS(): "+++" in command state then "ATE0\\r" is OK at the first try; the PDP
  rows pass; 'AT+QSSLCFG="ignorelocaltime"1,1' (no comma) is ERROR, so the flow ends there and
  AT+QSSLOPEN is never sent -- this ConnectTLS() cannot succeed on an EC2x/BG96.
* Its open names SSL context 2 while context 1 was configured: context 2's defaults apply
  (seclevel 0, TLS up to 1.2), so a server signed by another CA is accepted and TLS 1.2 is
  negotiated.  The open's "\\r\\nOK\\r\\n" and "\\r\\n+QSSLOPEN: 1,0\\r\\n" arrive as the
  one contiguous string the ATMATCH wants; SendData()'s "\\r\\n> " / "\\r\\nSEND OK\\r\\n"
  match and the payload reaches the server.
* DisConnect() closes nothing (AT+QICLOSE / AT+QIDEACT without ids: ERROR); the next
  ConnectTLS()'s AT+QIDEACT=1 ends the live connection ('+QSSLURC: "closed",1', client 1
  held until AT+QSSLCLOSE, which the driver never sends), so the reconnect's open is ERROR.
* M95 flow on the ML302: the file-name forms AT+QSECWRITE="RAM:..." and AT+QSECREAD="RAM:..."
  are ERROR (the ML302 has slots 0-2), ending the flow; the open alone succeeds at TLS 1.1
  ("sslversion",0,2), but QSendFlow()'s AT+QSSLSEND=1,<len> is ERROR (the ML302's
  AT+QSSLSEND=<ssid> has no length: Ctrl+Z ends the data) and nothing is sent.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest

from emulator.testing.peers import TlsServer
from tests.e2e.socket_support import activate_pdp, raw_drain, raw_open

ATMATCH, ATGET = "ATMATCH", "ATGET"
HOST, PORT = "iot.transceiver.example", 8883


@dataclass
class Row:
    kind: str
    request: bytes | None
    reply: bytes | None = None
    timeouts: tuple[int, int, int] = (1000, 0, 0)
    retries: int = 1
    label: str = ""


END = Row(ATMATCH, None, label="END")


class CmdFlowEngine:
    """Transceiver.cpp's executeCommand() / ATCommandFlow() over the pty (the UART ISR's
    ring is self.ring, filled whenever the engine sleeps)."""

    def __init__(self, path: str, slice_s: float = 0.1) -> None:
        self.fd = raw_open(path)
        self.slice = slice_s
        self.ring = bytearray()
        self.wire = bytearray()
        self.log: list[tuple[bytes, bytes, int]] = []   # (request, ring at the decision, result)

    def close(self) -> None:
        os.close(self.fd)

    def pump(self) -> None:
        got = raw_drain(self.fd)
        self.ring += got
        self.wire += got

    def _slices(self, ms: int) -> None:
        for _ in range(ms // 100):
            time.sleep(self.slice)
            self.pump()

    def execute(self, row: Row) -> int:
        recv, pre, post = row.timeouts                    # CmdProps.timeouts order
        tries = 0
        while tries < row.retries:
            tries += 1
            self.pump()
            initial = len(self.ring)
            self._slices(pre)
            os.write(self.fd, row.request)
            if row.reply:
                n = recv // 100
                while n > 0:
                    n -= 1
                    time.sleep(self.slice)
                    self.pump()
                    if len(self.ring) >= initial + len(row.reply):
                        break
            else:
                self._slices(recv)
            self._slices(post)
            seen = bytes(self.ring)
            if row.kind == ATMATCH:
                ok = row.reply in seen
                self.ring.clear()
                self.log.append((row.request, seen, int(ok)))
                if ok:
                    return 1
            else:
                if row.reply is None or row.reply in seen:
                    self.ring.clear()
                    self.log.append((row.request, seen, 1))
                    return 1                          # SetGeneric & co.: accepted
                self.log.append((row.request, seen, 0))
        return 0

    def flow(self, rows: list[Row]) -> int:
        i = 0
        while rows[i].request is not None:
            if self.execute(rows[i]):
                i += 1
            else:
                break
        return i

    def answer_to(self, prefix: bytes) -> bytes:
        for req, seen, _ in self.log:
            if req.startswith(prefix):
                return seen
        raise AssertionError(f"{prefix!r} never sent")


# --- QuectelBG96::ConnectTLS() / Transceiver::SendData() -------------------------------------

def bg96_tls_flow(host: str, port: int, apn: str = '"CMNET"') -> list[Row]:
    g = lambda cmd, t=(1000, 0, 0): Row(ATGET, cmd, None, t)                 # noqa: E731
    m = lambda cmd, r=b"\r\nOK\r\n", t=(1000, 0, 0), n=1: Row(ATMATCH, cmd, r, t, n)  # noqa: E731
    return [
        g(b"+++", (200, 1000, 1000)),
        m(b"ATE0\r", n=3),
        g(b"AT+QICLOSE=1\r"),
        g(b"AT+QIDEACT=1\r"),
        g(b"AT+QGPSEND\r"),
        m(b"AT+QGPS=1\r", t=(500, 0, 0)),
        m(f"AT+QICSGP=1,1,{apn},1\r".encode(), t=(500, 0, 0)),
        g(b"AT+QCCID\r"),
        g(b"AT+GSN\r"),
        g(b"AT+CREG?\r"),
        g(b"AT+CGREG?\r"),
        m(b"AT+QIACT=1\r", t=(2000, 0, 0)),
        g(b"AT+QIACT?\r"),
        g(b"AT+CCLK?\r"),
    ] + bg96_ssl_rows(host, port) + [END]


def bg96_ssl_rows(host: str, port: int) -> list[Row]:
    m = lambda cmd, r=b"\r\nOK\r\n", t=(1000, 0, 0): Row(ATMATCH, cmd, r, t)   # noqa: E731
    return [
        m(b'AT+QSSLCFG="seclevel",1,1\r'),
        m(b'AT+QSSLCFG="sslversion",1,2\r'),
        m(b'AT+QSSLCFG="ignorelocaltime"1,1\r', b'\r\n+QSSLCFG: "ignorelocaltime",1,1\r\n'),
        m(b'AT+QSSLCFG="ciphersuite",1,0XFFFF\r'),
        m(b'AT+QSSLCFG="cacert",1,"RAM:ca_cert.pem"\r'),
        open_row(host, port),
    ]


def open_row(host: str, port: int) -> Row:
    return Row(ATMATCH, f'AT+QSSLOPEN=1,2,1,"{host}",{port},0\r'.encode(),
               b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n", (4000, 0, 0))


def send_rows(data: bytes) -> list[Row]:
    return [Row(ATMATCH, f"AT+QSSLSEND=1,{len(data)}\r".encode(), b"\r\n> ", (3000, 0, 0)),
            Row(ATMATCH, data, b"\r\nSEND OK\r\n", (3000, 0, 0)),
            END]


ATE0_ROW = Row(ATMATCH, b"ATE0\r", b"\r\nOK\r\n", (1000, 0, 0), 3)


@pytest.fixture
def bg96(driver_path):
    d = CmdFlowEngine(driver_path)
    yield d
    d.close()


def test_bg96_connect_tls_stops_at_its_own_ignorelocaltime_typo(bg96, emulator, pki):
    """The whole ConnectTLS() flow (waits halved): the preamble and the PDP steps pass, then
    'AT+QSSLCFG="ignorelocaltime"1,1' (no comma) is ERROR -- as on a BG96/EC2x, where a
    malformed write is a syntax error -- the ATMATCH for the echo-like "+QSSLCFG:" line fails
    and the flow ends there: ConnectTLS() returns -16 and AT+QSSLOPEN is never sent."""
    bg96.slice = 0.05
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        rows = bg96_tls_flow(HOST, PORT)
        i = bg96.flow(rows)
        typo = next(k for k, r in enumerate(rows) if r.request and b"ignorelocaltime" in r.request)
        assert i == typo, (i, bg96.log)
        answer = bg96.answer_to(b'AT+QSSLCFG="ignorelocaltime"')
        assert answer.endswith(b"ERROR\r\n") and b"+QSSLCFG" not in answer, answer
        # every row before it did pass (ATE0 after the "+++" in command mode, the PDP steps)
        assert all(ok for _, _, ok in bg96.log[:-1]), bg96.log
        assert bg96.answer_to(b"AT+QIACT=1").endswith(b"\r\nOK\r\n")
        assert b"+QSSLOPEN" not in bytes(bg96.wire)
        time.sleep(0.2)
        assert srv.connections == []


def test_bg96_open_on_context_2_ignores_the_configured_ca(bg96, driver_path, emulator, pki):
    """The SSL rows with the context-1 configuration as written, then the open on SSL context
    2 (the driver's "SSLID 1" comment notwithstanding): context 2 keeps its defaults
    (seclevel 0), so the certificate check the driver set up on context 1 is never applied
    and a server signed by another CA is accepted; the open's OK and URC arrive as the one
    contiguous string the ATMATCH looks up."""
    activate_pdp(driver_path)
    assert bg96.flow([ATE0_ROW, END]) == 1
    with TlsServer(pki.wrong_server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        rows = [r for r in bg96_ssl_rows(HOST, PORT) if b"ignorelocaltime" not in r.request]
        assert bg96.flow(rows + [END]) == len(rows), bg96.log
        conn = srv.wait_handshake(timeout=5)
        assert conn.version == "TLSv1.2"      # context 1's "sslversion",1,2 (TLS 1.1) unused too
        assert bg96.answer_to(b"AT+QSSLOPEN").startswith(b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n")


def test_bg96_send_data_prompt_and_send_ok(bg96, driver_path, emulator, pki):
    """SendData(): the prompt wait ends at the first slice holding 4 bytes ("\\r\\n> "), the
    ring is emptied, the payload is written in one piece and "\\r\\nSEND OK\\r\\n" is found;
    the echo server's answer then comes as '+QSSLURC: "recv",1'."""
    activate_pdp(driver_path)
    assert bg96.flow([ATE0_ROW, END]) == 1
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        assert bg96.flow([open_row(HOST, PORT), END]) == 1, bg96.log
        payload = b'{"id":"transceiver","v":[1,2,3]}\r\n'
        rows = send_rows(payload)
        assert bg96.flow(rows) == 2, bg96.log
        assert bg96.answer_to(b"AT+QSSLSEND=1,") == b"\r\n> "
        assert srv.wait_received(len(payload), timeout=5) == payload
        deadline = time.monotonic() + 5
        while b'+QSSLURC: "recv",1\r\n' not in bg96.wire and time.monotonic() < deadline:
            time.sleep(0.05)
            bg96.pump()
        assert b'\r\n+QSSLURC: "recv",1\r\n' in bg96.wire


# --- Cmdflows.c M95ConnectTLSFlow() / QSendFlow() on the ML302 ------------------------------

CA_NAME = "RAM:ca_cert.pem"


def m95_ssl_rows(cert: bytes, host: str, port: int) -> list[Row]:
    m = lambda cmd, r=b"\r\nOK\r\n", t=(1000, 0, 0): Row(ATMATCH, cmd, r, t)   # noqa: E731
    return [
        Row(ATGET, f'AT+QSECDEL="{CA_NAME}"\r'.encode()),
        m(f'AT+QSECWRITE="{CA_NAME}",{len(cert)},100\r'.encode(), b"\r\nCONNECT\r\n"),
        m(cert, b"\r\n+QSECWRITE:"),
    ]


def m95_cfg_rows(host: str, port: int) -> list[Row]:
    m = lambda cmd, r=b"\r\nOK\r\n", t=(1000, 0, 0): Row(ATMATCH, cmd, r, t)   # noqa: E731
    return [
        m(b'AT+QSSLCFG="seclevel",0,1\r'),
        m(b'AT+QSSLCFG="ignorertctime",1\r'),
        m(b'AT+QSSLCFG="sslversion",0,2\r'),
        m(b'AT+QSSLCFG="ciphersuite",0,"0XFFFF"\r'),
        m(f'AT+QSECREAD="{CA_NAME}"\r'.encode(), b"\r\n+QSECREAD: 1", (2000, 0, 0)),
        m(f'AT+QSSLCFG="cacert",0,"{CA_NAME}"\r'.encode()),
        m(f'AT+QSSLOPEN=1,0,"{host}",{port},0\r'.encode(), b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n",
          (4000, 0, 0)),
    ]


@pytest.fixture
def m95(open_modem):
    host, port = open_modem("ml302", echo=True)
    assert host.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    host.close()
    d = CmdFlowEngine(host.path)
    assert d.flow([ATE0_ROW, END]) == 1
    yield d
    d.close()


def test_m95_flow_certificate_upload_stops_on_the_ml302(m95, pki):
    """The flow's preamble ("+++" with its guard times in command state, then ATE0 with up to
    3 tries, AT+QICLOSE / AT+QIDEACT taken as they come) passes on the ML302 (waits halved).
    AT+QSECWRITE="RAM:ca_cert.pem",<n>,100 is the M95's file form; the ML302 takes a slot
    number (AT+QSECWRITE=<crtflag>) and answers ERROR, so the flow ends at that row and the
    PEM is never written (the driver sends nothing of it)."""
    g = lambda cmd, t=(1000, 0, 0): Row(ATGET, cmd, None, t)                 # noqa: E731
    preamble = [g(b"+++", (200, 1000, 1000)), ATE0_ROW, g(b"AT+QICLOSE\r"), g(b"AT+QIDEACT\r")]
    rows = preamble + m95_ssl_rows(pki.ca.cert_pem, HOST, PORT) + [END]
    m95.slice = 0.05
    assert m95.flow(rows) == len(preamble) + 1, m95.log
    assert m95.answer_to(b"ATE0").endswith(b"\r\nOK\r\n"), m95.log
    assert b"ERROR" in m95.answer_to(b"AT+QSECWRITE="), m95.log
    assert not any(req == pki.ca.cert_pem for req, _, _ in m95.log)


def test_m95_flow_ssl_rows_and_qsendflow_on_the_ml302(m95, emulator, pki):
    """The configuration and open rows on the ML302: the context options are accepted as the
    M95 wrote them (the quoted "0XFFFF" suite list included) up to AT+QSECREAD="RAM:...",
    which the ML302 (slot numbers) refuses, so on this module the flow ends before the open.
    The open alone works as the M95 flow expects ("\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 1,0\\r\\n"), but
    QSendFlow()'s AT+QSSLSEND=1,<len> is the M95 form: the ML302's AT+QSSLSEND=<ssid> takes
    no length (the data end at Ctrl+Z), so it is ERROR and nothing reaches the server."""
    rows = m95_cfg_rows(HOST, PORT)
    secread = next(k for k, r in enumerate(rows) if r.request.startswith(b"AT+QSECREAD"))
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        assert m95.flow(rows + [END]) == secread, m95.log
        assert b"ERROR" in m95.answer_to(b"AT+QSECREAD="), m95.log
        assert srv.connections == []
        # the open alone (seclevel back to 0: no CA could be stored), then QSendFlow()
        m95.log.clear()
        assert m95.flow([Row(ATMATCH, b'AT+QSSLCFG="seclevel",0,0\r', b"\r\nOK\r\n"),
                         rows[-1], END]) == 2, m95.log
        assert m95.answer_to(b"AT+QSSLOPEN=") == b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n"
        conn = srv.wait_handshake(timeout=5)
        assert conn.version == "TLSv1.1"      # the flow's "sslversion",0,2 on context 0
        payload = b"GET /t HTTP/1.1\r\nHost: x\r\n\r\n"
        assert m95.flow(send_rows(payload)) == 0, m95.log
        assert m95.answer_to(b"AT+QSSLSEND=1,") == b"\r\nERROR\r\n"
        time.sleep(0.3)
        assert conn.received == b""


def disconnect_rows() -> list[Row]:
    """Transceiver::DisConnect(): "+++" then AT+QICLOSE / AT+QIDEACT without ids (ATGET)."""
    g = lambda cmd, t=(1000, 0, 0): Row(ATGET, cmd, None, t)                 # noqa: E731
    return [g(b"+++", (1000, 1000, 1000)), g(b"AT+QICLOSE\r"), g(b"AT+QIDEACT\r"), END]


def test_bg96_disconnect_then_reconnect_finds_client_1_still_taken(bg96, driver_path, emulator,
                                                                  pki):
    """DisConnect() leaves SSL client 1 open (its AT+QICLOSE / AT+QIDEACT carry no ids:
    ERROR).  The next ConnectTLS() begins with AT+QICLOSE=1 (a TCP/IP connectID: ERROR, SSL
    client 1 is not touched) and AT+QIDEACT=1: the context goes down and the live TLS
    connection ends as the SSL note's §2.3.2 says -- OK, then '+QSSLURC: "closed",1', the
    client id held ("closing") until AT+QSSLCLOSE, which this driver never sends (docs/
    behaviour.md, AT+QIDEACT).  So after AT+QIACT=1 the open of client 1 is ERROR and the
    reconnect ends there: ConnectTLS() would return -3 of these rows (-(index) in the flow)."""
    activate_pdp(driver_path)
    assert bg96.flow([ATE0_ROW, END]) == 1
    with TlsServer(pki.server, mode="echo", legacy=True) as srv:
        emulator.router.add_map(HOST, PORT, "127.0.0.1", srv.port)
        assert bg96.flow([open_row(HOST, PORT), END]) == 1, bg96.log
        srv.wait_handshake(timeout=5)
        bg96.slice = 0.05
        assert bg96.flow(disconnect_rows()) == 3
        assert bg96.answer_to(b"AT+QICLOSE\r").endswith(b"ERROR\r\n")
        assert bg96.answer_to(b"AT+QIDEACT\r").endswith(b"ERROR\r\n")
        bg96.slice = 0.1
        bg96.log.clear()
        g = lambda cmd: Row(ATGET, cmd, None, (1000, 0, 0))                     # noqa: E731
        rows = [g(b"AT+QICLOSE=1\r"), g(b"AT+QIDEACT=1\r"),
                Row(ATMATCH, b"AT+QIACT=1\r", b"\r\nOK\r\n", (2000, 0, 0)),
                open_row(HOST, PORT), END]
        assert bg96.flow(rows) == 3, bg96.log
        assert bg96.answer_to(b"AT+QICLOSE=1") == b"\r\nERROR\r\n"
        assert bg96.answer_to(b"AT+QIDEACT=1") == b'\r\nOK\r\n\r\n+QSSLURC: "closed",1\r\n'
        assert bg96.answer_to(b"AT+QSSLOPEN=").endswith(b"ERROR\r\n")
        assert len(srv.connections) == 1
