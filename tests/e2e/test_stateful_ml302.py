"""Model-based (hypothesis RuleBasedStateMachine) test of the ML302 as a whole, over the pty:
its SSL configuration, its certificate store and its SSL sockets together, with reboots
and a host that closes and reopens the port.

The model (``Ml302Model``) is what a host knows of the module from the ML302 SSL AT manual
(../shared/seeds/000_a5e6d6f2152828ea.txt) and docs/behaviour.md ("ML302 certificate store",
"ML302 SSL commands", "Certificate checks", "Command line and result codes", AT+CFUN=1,1):

* per SSL context 0-5: sslversion, seclevel, ciphersuite, cacert / clientcert / clientkey
  paths (the manual's slot paths, one with the manual's stray leading blank, or a path that
  names no slot); the global ignorertctime, https, httpsctxi.  Every write is answered OK or
  ERROR as predicted and read back with the option's query and with "ctxindex";
* the three AT+QSECWRITE slots: PEM certificates and keys (LF or CR LF line ends), a CA
  bundle, random bytes; written in random pieces (byte by byte sometimes), ended by Ctrl+Z
  or cancelled by ESC; the manual's XOR checksum computed here independently; filled slot
  (+CME ERROR: 3), empty write (50), over 16384 bytes (20), empty slot read (22), AT+CMEE 0/1;
* SSL sockets 0-5 on any context against loopback OpenSSL servers (Python ssl): an echo
  server, one that requires a client certificate from the CA, one whose certificate is valid
  in 2019 only, one that closes right after the handshake, the echo server under a name its
  certificate does not carry, and a listener that never answers (the open's <timeout> on the
  modem's manual clock).  The model predicts every "+QSSLOPEN: <ssid>,<code>" from the
  context, the slots (read at each open: no resumption), the modem clock (AT+CCLK) and
  ignorertctime; AT+QSSLSEND (Ctrl+Z, ESC, empty, too long), AT+QSSLRECV, AT+QSSLCLOSE,
  AT+QSSLSTATE's seven lines, +QSSLURC "recv"/"close"; data echoed by the servers come back
  exactly once and in order, and the servers got exactly what SEND OK accepted;
* ATE / AT+CMEE / AT&W / ATZ / AT&F, and AT+CFUN=1,1 (sockets dropped without URCs, the PDP
  context down, AT+QSSLCFG back to its defaults, ATE/CMEE back to the AT&W set, the slots
  kept, every ssid INITIAL again, +CPIN: READY);
* the host closing and reopening the port: idle, in the middle of an AT+QSECWRITE (nothing
  stored) or of an AT+QSSLSEND (nothing sent).

After every step "AT" answers OK, and nothing but well-formed, predicted URCs arrives
between answers (never inside a data prompt: the prompt's echo is matched byte for byte).
No log record may be an error or carry a traceback.  The hosts end lines with CR LF; echo
(ATE1) is matched including URCs a byte-by-byte line may get in the middle of its echo.
"""
from __future__ import annotations

import datetime
import logging
import re
import socket
import tempfile
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from emulator.io.app import BackgroundEmulator
from emulator.testing.peers import TlsServer, default_pki, utc
from tests.e2e.ml302_support import HOST, HOST_IP
from tests.e2e.test_stateful_sockets import URC, LogGuard, Wire, close_rig
from tls_engine import suite_offerable

SETTINGS = settings(max_examples=60, stateful_step_count=40, deadline=None,
                    suppress_health_check=list(HealthCheck))
TIMEOUT = 10.0
OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
CTRL_Z, ESC = b"\x1a", b"\x1b"
MAX_CERT = 16384
TABLE = (0x0035, 0x0005, 0x0004, 0x000A, 0x002F, 0x003D)      # ml302.toml ssl.cipher_suites
ALL = 0xFFFF
SLOT_PATHS = {"/caCrt.pem": 0, "/clientCrt.pem": 1, "/privateKey.pem": 2}
DEFAULT_PATHS = {"cacert": "/caCrt.pem", "clientcert": "/clientCrt.pem", "clientkey": "/privateKey.pem"}
PATH_VALUES = ["/caCrt.pem", "/clientCrt.pem", "/privateKey.pem", " /clientCrt.pem", "/other.pem"]

# name -> (host dialled, port dialled, <ipaddr> the modem shows)
PEERS = {"good": (HOST, 443, HOST_IP), "mtls": (HOST, 444, HOST_IP), "old": (HOST, 445, HOST_IP),
         "closer": (HOST, 446, HOST_IP), "wrongname": ("wrong.test", 443, "10.9.8.7"),
         "stall": ("stall.test", 443, "10.20.30.40")}


def xor_checksum(data: bytes) -> int:
    """The manual's §2.2 checksum: big-endian 16-bit words XORed, an odd last byte padded 0x00."""
    value = 0
    for i in range(0, len(data), 2):
        value ^= (data[i] << 8) | (data[i + 1] if i + 1 < len(data) else 0)
    return value


def default_ctx() -> dict:
    return {"sslversion": 4, "seclevel": 0, "ciphersuite": (ALL,), **DEFAULT_PATHS}


def fmt_suites(ids: tuple[int, ...]) -> str:
    return ":".join(f"0X{i:04X}" for i in ids)


# -- the servers (one set for the whole test) --------------------------------------------------
class Servers:
    def __init__(self) -> None:
        pki = self.pki = default_pki()
        old = pki.issue_window("ml302-stateful-2019", utc(2019, 1, 1), utc(2019, 12, 31))
        self.tls = {"good": TlsServer(pki.server, mode="echo", legacy=True),
                    "mtls": TlsServer(pki.server, mode="echo", legacy=True, client_ca=pki.ca,
                                      require_client_cert=True),
                    "old": TlsServer(old, mode="echo", legacy=True),
                    "closer": TlsServer(pki.server, mode="close", legacy=True)}
        self.server_suites = {c["id"] & 0xFFFF for c in self.tls["good"].context.get_ciphers()}
        self.stall = socket.create_server(("127.0.0.1", 0), backlog=256)     # never accept()ed
        self.material = {
            "ca": pki.ca.cert_pem, "wrong_ca": pki.wrong_ca.cert_pem,
            "bundle": pki.wrong_ca.cert_pem + pki.ca.cert_pem,      # order does not matter
            "client": pki.client.cert_pem, "key": pki.client.key_pem, "otherkey": pki.server.key_pem}

    def route(self, emu: BackgroundEmulator) -> None:
        r = emu.router
        for name, (host, port, ip) in PEERS.items():
            target = {"wrongname": "good"}.get(name, name)
            dst = self.stall.getsockname()[1] if name == "stall" else self.tls[target].port
            r.add_map(host, port, "127.0.0.1", dst)
            r.add_dns(host, ip)

    def close(self) -> None:
        for srv in self.tls.values():
            srv.close()
        self.stall.close()


class EchoWire(Wire):
    """test_stateful_sockets' Wire, counting what it wrote, with the echo of a command line
    matched while URC units (a byte-by-byte line may get one in the middle) are taken out."""

    def __init__(self, path, on_urc) -> None:
        super().__init__(path, on_urc)
        self.written = 0

    def write(self, data: bytes, bytewise: bool = False) -> None:
        super().write(data, bytewise)
        self.written += len(data)

    def expect_raw(self, exact: bytes, what: str) -> None:
        """The next bytes, URC-looking or not (a data prompt's echo: no URC may come in it)."""
        deadline = time.monotonic() + TIMEOUT
        while len(self.buf) < len(exact) and bytes(self.buf) == exact[:len(self.buf)]:
            self._fill(deadline)
        got = bytes(self.buf[:len(exact)])
        assert got == exact, f"{what}: expected {exact!r}, got {bytes(self.buf[:len(exact) + 80])!r}"
        del self.buf[:len(exact)]

    def expect_echo(self, exact: bytes, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        i = 0
        while i < len(exact):
            if self._urc_at_head(deadline):
                m = URC.match(bytes(self.buf))
                del self.buf[:m.end()]
                self.on_urc(m.group(1))
                continue
            assert self.buf[0] == exact[i], \
                f"{what}: echo {exact!r} differs at {i}: got {bytes(self.buf[:80])!r}"
            del self.buf[:1]
            i += 1


@dataclass
class Sock:
    peer: str
    ctx: int
    state: str = "opening"           # opening / connected / closing (the peer closed)
    open_code: int | None = None
    sent: bytearray = field(default_factory=bytearray)
    read: int = 0
    buffer: str = "empty"            # the modem's receive buffer: empty / nonempty / unknown
    closed_urc: bool = False
    conn: object = None
    deadline: float = 0.0            # a stalled open's <timeout> on the model clock


# -- strategies ---------------------------------------------------------------------------------
def _clean(b: bytes) -> bytes:
    """No Ctrl+Z / ESC (they end the prompt) / backspace, and no LF first (docs/behaviour.md:
    a byte-by-byte CR LF host's first-byte LF after a prompt is its line's)."""
    b = b.replace(CTRL_Z, b"Z").replace(ESC, b"E").replace(b"\x08", b"B")
    return b"x" + b[1:] if b[:1] == b"\n" else b


payloads = st.one_of(st.binary(min_size=1, max_size=60), st.binary(min_size=1, max_size=1460),
                     st.sampled_from([b"\r\nOK\r\n", b'\r\n+QSSLURC: "recv",1,0\r\n', b"> ", b"AT\r",
                                      b"\x00\xff", b"+++"])).map(_clean)
pieces = st.lists(st.sampled_from([1, 2, 3, 7, 64, 500, 4096]), min_size=1, max_size=3)
CTX = st.sampled_from([0, 0, 1, 5])      # the contexts opens and seclevel writes favour
KINDS = ["ca", "wrong_ca", "bundle", "client", "key", "otherkey", "junk"]
SUITE_VALUES = [("0XFFFF", (ALL,)), ('"0XFFFF"', (ALL,)), ('"0X0035"', (0x35,)), ('"0x002f:0X0035"', (0x2F, 0x35)),
                ('"0X003D"', (0x3D,)), ('"0X0005"', (0x05,)), ('"0X000A:0X0004"', (0x0A, 0x04)),
                ('"0X003D:0X0005"', (0x3D, 0x05)), ("0X002F", (0x2F,)),
                ('"0XC02F"', None), ('"0X0035:0XFFFF"', None), ('"AES256-SHA"', None), ('""', None)]


class Ml302Model(RuleBasedStateMachine):
    servers: Servers = None          # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.emu = BackgroundEmulator(offline=True)
        self.emu.start()
        self.guard = LogGuard()
        logging.getLogger().addHandler(self.guard)
        self.servers.route(self.emu)
        self.state_dir = tempfile.TemporaryDirectory()
        self.port = self.emu.add_modem("ml302", manual_time=True, state_dir=self.state_dir.name)
        self.wire = EchoWire(self.port.path, self.on_urc)
        self.written_before = 0          # what earlier wires wrote (the port counts every host's)
        self.emu.run(self.port.port.look_for_host)
        # the host's settings, the AT&W set and the factory set (ml302.toml: echo on, CMEE 1)
        self.echo, self.cmee = True, 1
        self.saved = (True, 1)
        self.reset_ssl()
        self.slots: dict[int, tuple[str, bytes]] = {}
        self.pdp = False
        self.socks: dict[int, Sock] = {}
        self.last: dict[int, tuple[str, int, bool]] = {}     # ssid -> (ip, port, ip maybe "")
        self.clock_2019 = False
        self.now = 0.0                   # manual seconds advanced
        self.closing_peer: Sock | None = None
        self.steps_since_reboot = 0
        self.awaiting_refusal: int | None = None
        self.refusal: int | None = None
        self.cmd("ATE0", OK)
        self.cmd('AT+CGDCONT=1,"IP","CMNET"', OK)
        self.activate()

    def reset_ssl(self) -> None:
        self.ctx = {i: default_ctx() for i in range(6)}
        self.ignorertctime, self.https, self.httpsctxi = 1, 0, 0

    def teardown(self) -> None:
        close_rig(self)

    # -- plumbing -------------------------------------------------------------------------------
    def cmd(self, line: str, answer: bytes | None, bytewise: bool = False) -> None:
        """Write `line` CR LF; match its echo (ATE1) and then `answer` (None: the caller reads)."""
        self.wire.write(line.encode("latin-1") + b"\r\n", bytewise)
        if self.echo:
            self.wire.expect_echo(line.encode("latin-1") + b"\r", line)
        if line.upper().startswith("ATE"):
            self.echo = line[3:4] == "1"
        if answer is not None:
            self.wire.expect(answer, line)

    def cme(self, code: int) -> bytes:
        return b"\r\n+CME ERROR: %d\r\n" % code if self.cmee else ERROR

    def advance(self, seconds: float) -> None:
        self.emu.wait_received(self.port, self.written_before + self.wire.written)
        self.emu.advance(self.port, seconds)
        self.now += seconds

    def activate(self) -> None:
        self.cmd("AT+CGACT=1,1", b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n")
        self.pdp = True

    def on_urc(self, line: bytes) -> None:
        text = line.decode("latin-1")
        m = re.fullmatch(r'\+QSSLURC: "recv",1,(\d)', text) or re.fullmatch(r'\+QSSLURC: "close",(\d)', text)
        if m:
            ssid = int(m.group(1))
            s = self.socks.get(ssid)
            assert s is not None and s.state in ("connected", "closing"), f"{text}: socket {s and s.state}"
            if "recv" in text:
                assert not s.closed_urc, f'{text} after "close"'
                assert s.buffer != "nonempty", f"{text}: a second recv URC with no read in between"
                assert s.read < len(s.sent), f"{text}: data arrived that were never sent"
                s.buffer = "nonempty"
            else:
                assert not s.closed_urc, f"{text} twice"
                assert self.closing_peer is s or s.peer == "closer", f"{text}: the server did not close"
                s.closed_urc, s.state = True, "closing"
                # the peer's close follows its data (one TLS stream): everything echoed is in
                s.buffer = "nonempty" if s.read < len(s.sent) else "empty"
            return
        m = re.fullmatch(r"\+QSSLOPEN: (\d),(-?\d+)", text)
        assert m, f"unexpected URC {text!r}"
        ssid, code = int(m.group(1)), int(m.group(2))
        if ssid == self.awaiting_refusal:
            self.refusal = code
            return
        s = self.socks.get(ssid)
        assert s is not None and s.state == "opening" and s.open_code is None, f"{text}: no open under way"
        if s.peer == "stall":
            assert code == -1 and self.now >= s.deadline, \
                f"{text}: the stalled open ended before its timeout ({self.now} < {s.deadline})"
        s.open_code = code
        if code == 0:
            s.state = "connected"         # (a "close" may follow in the same read)

    # -- the model's predictions -------------------------------------------------------------
    def material(self, path: str) -> str | None:
        slot = SLOT_PATHS.get(path.strip())
        return None if slot is None or slot not in self.slots else self.slots[slot][0]

    def predict(self, ctx_id: int, peer: str) -> int:
        c = self.ctx[ctx_id]
        if c["sslversion"] == 0:                      # SSL 3.0: not in the TLS library
            return -1
        offered = [x for x in TABLE if suite_offerable(x)] if c["ciphersuite"] == (ALL,) else c["ciphersuite"]
        usable = [x for x in offered if x in self.servers.server_suites
                  and (x != 0x3D or c["sslversion"] in (3, 4))]           # SHA-256 suites: TLS 1.2
        if not usable:
            return -1
        level = c["seclevel"]
        if level >= 1:
            if self.material(c["cacert"]) not in ("ca", "bundle"):
                return -1
            if peer == "wrongname":
                return -1
            if not self.ignorertctime and peer == "old" and not self.clock_2019:
                return -1                              # expired at the modem clock
        if level == 2:
            # the pair is loaded (parsed, the key matched to the certificate) at every open,
            # asked for or not (tls_engine/config.py; the manual is silent)
            if (self.material(c["clientcert"]), self.material(c["clientkey"])) != ("client", "key"):
                return -1
        elif peer == "mtls":
            return -1                                  # the server insists on a client certificate
        return 0

    @initialize(ca=st.sampled_from(["ca", "ca", "bundle", "wrong_ca", None]), client=st.booleans(),
                ssid=st.integers(0, 5), ctx=CTX, level=st.integers(0, 2), rtc=st.booleans(),
                peer=st.sampled_from(["good", "mtls", "old"]), ready=st.booleans())
    def start(self, ca, client, ssid, ctx, level, rtc, peer, ready):
        """Most runs start with the CA (and the client's pair) stored and a context at some
        seclevel, and one socket opened on it (half of them ready for mutual authentication)."""
        if ready:
            ca, client, level = "ca", True, 2
        if ca is not None:
            self.secwrite(0, ca, False, b"", [4096], "z", False)
        if client:
            self.secwrite(1, "client", True, b"", [64], "z", False)
            self.secwrite(2, "key", False, b"", [1], "z", True)
        self.cfg_int("seclevel", ctx, level, False)
        if not rtc:
            self.cfg_global("ignorertctime", 0)
        self.open(ssid, ctx, peer, None, False)

    # -- AT+QSSLCFG -------------------------------------------------------------------------------
    @rule(name=st.sampled_from(["sslversion", "seclevel", "seclevel"]), ctx=st.one_of(CTX, st.just(6)),
          value=st.integers(0, 5), bytewise=st.booleans())
    def cfg_int(self, name, ctx, value, bytewise):
        hi = 4 if name == "sslversion" else 2
        good = ctx <= 5 and value <= hi
        self.cmd(f'AT+QSSLCFG="{name}",{ctx},{value}', OK if good else ERROR, bytewise)
        if good:
            self.ctx[ctx][name] = value

    @rule(ctx=st.integers(0, 5), value=st.sampled_from(SUITE_VALUES))
    def cfg_suites(self, ctx, value):
        text, ids = value
        self.cmd(f'AT+QSSLCFG="ciphersuite",{ctx},{text}', OK if ids else ERROR)
        if ids:
            self.ctx[ctx]["ciphersuite"] = ids

    @rule(name=st.sampled_from(list(DEFAULT_PATHS)), ctx=st.integers(0, 5),
          path=st.sampled_from(PATH_VALUES + ["/" + "p" * 81]))
    def cfg_path(self, name, ctx, path):
        good = len(path) <= 80
        self.cmd(f'AT+QSSLCFG="{name}",{ctx},"{path}"', OK if good else ERROR)
        if good:
            self.ctx[ctx][name] = path

    @rule(name=st.sampled_from(["sslversion", "seclevel", "ciphersuite", "cacert", "clientcert", "clientkey",
                                "ctxindex"]), ctx=st.integers(0, 5), bytewise=st.booleans())
    def cfg_query(self, name, ctx, bytewise):
        c = self.ctx[ctx]
        show = {"sslversion": str(c["sslversion"]), "seclevel": str(c["seclevel"]),
                "ciphersuite": fmt_suites(c["ciphersuite"]),
                **{k: f'"{c[k]}"' for k in DEFAULT_PATHS}}
        if name == "ctxindex":
            line = f"+QSSLCFG: {ctx}," + ",".join(show[k] for k in ("sslversion", "seclevel", "ciphersuite",
                                                                     "cacert", "clientcert", "clientkey"))
        else:
            line = f'+QSSLCFG: "{name}",{show[name]}'
        self.cmd(f'AT+QSSLCFG="{name}",{ctx}', f"\r\n{line}\r\n\r\nOK\r\n".encode(), bytewise)

    @rule(name=st.sampled_from(["ignorertctime", "https", "httpsctxi"]),
          value=st.one_of(st.none(), st.integers(0, 6)))
    def cfg_global(self, name, value):
        attr = name
        if value is None:
            self.cmd(f'AT+QSSLCFG="{name}"', f'\r\n+QSSLCFG: "{name}",{getattr(self, attr)}\r\n\r\nOK\r\n'.encode())
            return
        good = value <= (5 if name == "httpsctxi" else 1)
        self.cmd(f'AT+QSSLCFG="{name}",{value}', OK if good else ERROR)
        if good:
            setattr(self, attr, value)

    @rule(line=st.sampled_from(['AT+QSSLCFG="sni",0,1', 'AT+QSSLCFG="negotiatetime",0,10',
                                'AT+QSSLCFG="ignorelocaltime",0,1', 'AT+QSSLCFG="ctxindex"', "AT+QSSLCFG?",
                                'AT+QSSLCFG="seclevel",0,1,1']))
    def cfg_refused(self, line):
        """Options the ML302 does not have (behaviour.md: its subset) and bad forms: ERROR."""
        self.cmd(line, ERROR)

    # -- the certificate store --------------------------------------------------------------
    @rule(slot=st.integers(0, 2), kind=st.sampled_from(KINDS), crlf=st.booleans(),
          junk=st.binary(min_size=1, max_size=300), split=pieces, ending=st.sampled_from(["z", "z", "z", "esc"]),
          bytewise=st.booleans())
    def secwrite(self, slot, kind, crlf, junk, split, ending, bytewise):
        data = _clean(junk) if kind == "junk" else self.servers.material[kind]
        if crlf and kind != "junk":
            data = data.replace(b"\n", b"\r\n")
        self.cmd(f"AT+QSECWRITE={slot}", None, bytewise)
        if slot in self.slots:
            self.wire.expect(self.cme(3), "QSECWRITE on a filled slot")
            return
        self.wire.expect(b"\r\n> ", "QSECWRITE prompt")
        self.write_pieces(data, split)
        self.write_pieces(CTRL_Z if ending == "z" else ESC, [1])
        if self.echo:
            self.wire.expect_raw(data, "QSECWRITE data echo")
        if ending == "esc":
            self.wire.expect(OK, "QSECWRITE cancelled")
            return
        self.wire.expect(f"\r\n+QSECWRITE: {len(data)},{xor_checksum(data):04x}\r\n\r\nOK\r\n".encode(),
                         "QSECWRITE")
        self.slots[slot] = (kind, data)

    def write_pieces(self, data: bytes, split: list[int]) -> None:
        at, k = 0, 0
        while at < len(data):
            n = split[k % len(split)]
            self.wire.write(data[at:at + n])
            at, k = at + n, k + 1

    @rule(slot=st.integers(0, 2), oversize=st.booleans())
    def secwrite_empty_or_oversize(self, slot, oversize):
        self.cmd(f"AT+QSECWRITE={slot}", None)
        if slot in self.slots:
            self.wire.expect(self.cme(3), "QSECWRITE on a filled slot")
            return
        self.wire.expect(b"\r\n> ", "QSECWRITE prompt")
        data = b"M" * (MAX_CERT + 1) if oversize else b""
        self.wire.write(data + CTRL_Z)
        if self.echo:
            self.wire.expect_raw(data, "echo")
        self.wire.expect(self.cme(20 if oversize else 50), "QSECWRITE too much / nothing")

    @rule(slot=st.integers(0, 2), bytewise=st.booleans())
    def secread(self, slot, bytewise):
        if slot in self.slots:
            want = f"\r\n+QSECREAD: 1,{xor_checksum(self.slots[slot][1]):04x}\r\n\r\nOK\r\n".encode()
        else:
            want = self.cme(22)
        self.cmd(f"AT+QSECREAD={slot}", want, bytewise)

    @rule(slot=st.integers(0, 3))
    def secdel(self, slot):
        self.cmd(f"AT+QSECDEL={slot}", OK if slot <= 2 else self.cme(50))
        self.slots.pop(slot, None)

    # -- sockets ----------------------------------------------------------------------------------
    def pick(self, p: int) -> int:
        live = sorted(self.socks)
        return live[p % len(live)] if live and p < 14 else p % 6

    @rule(ssid=st.integers(0, 5), ctx=CTX,
          peer=st.sampled_from(["good", "good", "mtls", "mtls", "old", "closer", "wrongname", "stall"]),
          timeout=st.sampled_from([None, 10, 300]), bytewise=st.booleans())
    def open(self, ssid, ctx, peer, timeout, bytewise):
        host, port, ip = PEERS[peer]
        line = f'AT+QSSLOPEN={ssid},{ctx},"{host}",{port},0' + ("" if timeout is None else f",{timeout}")
        if ssid in self.socks or not self.pdp:         # in use (-2) / no PDP context (-1): after OK
            self.awaiting_refusal, self.refusal = ssid, None
            self.cmd(line, OK, bytewise)
            self.wire.wait_urcs(lambda: self.refusal is not None, f"+QSSLOPEN: {ssid} refused")
            self.awaiting_refusal = None
            assert self.refusal == (-2 if ssid in self.socks else -1), f"{line}: +QSSLOPEN: {ssid},{self.refusal}"
            return
        if peer == "stall" and self.predict(ctx, "good") != 0:
            peer, (host, port, ip) = "good", PEERS["good"]       # (a stall only where the config is sound)
            line = f'AT+QSSLOPEN={ssid},{ctx},"{host}",{port},0' + ("" if timeout is None else f",{timeout}")
        want = self.predict(ctx, peer)
        s = self.socks[ssid] = Sock(peer, ctx, deadline=self.now + (timeout or 90))
        srv = self.servers.tls.get({"wrongname": "good"}.get(peer, peer))
        before = len(srv.connections) if srv else 0
        self.cmd(line, OK, bytewise)
        if peer == "stall":
            self.last[ssid] = (ip, port, True)
            return
        self.wire.wait_urcs(lambda: s.open_code is not None, f"+QSSLOPEN: {ssid}")
        self.last[ssid] = (ip, port, want != 0)       # (a failure may come before TCP connects)
        assert s.open_code == want, (f"{line}: +QSSLOPEN: {ssid},{s.open_code}, the model says {want} "
                                     f"(ctx {self.ctx[ctx]}, slots {[(k, v[0]) for k, v in self.slots.items()]}, "
                                     f"ignorertctime {self.ignorertctime}, 2019 {self.clock_2019})")
        if want != 0:
            del self.socks[ssid]
            return
        s.conn = srv.wait_connections(before + 1, TIMEOUT)[before]
        if peer == "closer":
            self.wire.wait_urcs(lambda: s.closed_urc, f'"close" URC of {ssid} (the server closed)')

    @precondition(lambda self: any(s.peer == "stall" and s.state == "opening" for s in self.socks.values()))
    @rule()
    def stall_times_out(self):
        """The earliest stalled open's <timeout> passes on the modem clock: -1, then CLOSED."""
        stalled = [s for s in self.socks.values() if s.peer == "stall" and s.state == "opening"]
        first = min(s.deadline for s in stalled)
        self.advance(first - self.now)
        due = [s for s in stalled if s.deadline <= self.now]
        self.wire.wait_urcs(lambda: all(s.open_code is not None for s in due), "stalled opens' -1")
        for ssid in [i for i, s in self.socks.items() if s in due]:
            del self.socks[ssid]
        for s in stalled:
            if s not in due:
                assert s.open_code is None, "a stalled open ended before its timeout"

    @rule()
    def state(self):
        if self.pdp:
            head = "IP PROCESSING" if self.socks else "IP STATUS"
        else:
            head = "PDP DEACT" if self.socks else "IP INITIAL"
        self.cmd("AT+QSSLSTATE", f'\r\n+QSSLSTATE: "{head}"\r\n'.encode())
        for ssid in range(6):
            s = self.socks.get(ssid)
            if s is None:
                last = self.last.get(ssid)
                if last is None:
                    want = rb'"",0,"INITIAL"'
                else:
                    ip, port, maybe_empty = last
                    ip_re = re.escape(ip.encode()) + (b"|" if maybe_empty else b"")
                    want = rb'"(?:%s)",%d,"CLOSED"' % (ip_re, port)
            else:
                host, port, ip = PEERS[s.peer]
                if s.state == "opening":
                    want = rb'"(?:|%s)",%d,"CONNECTING"' % (re.escape(ip.encode()), port)
                else:
                    status = b"CONNECTED" if s.state == "connected" else b"REMOTE CLOSING"
                    want = rb'"%s",%d,"%s"' % (re.escape(ip.encode()), port, status)
            self.wire.line(re.compile(rb'\+QSSLSTATE: %d,"TCP",%s,1\r\n' % (ssid, want)), f"state of {ssid}")
        self.wire.expect(OK, "AT+QSSLSTATE end")

    @precondition(lambda self: all(len(s.sent) - s.read < 20000 for s in self.socks.values()))
    @rule(p=st.integers(0, 19), data=payloads, split=pieces, bytewise=st.booleans())
    def send(self, p, data, split, bytewise):
        ssid = self.pick(p)
        s = self.socks.get(ssid)
        line = f"AT+QSSLSEND={ssid}"
        if s is None or s.state != "connected":
            self.cmd(line, ERROR, bytewise)
            return
        self.cmd(line, b"\r\n> ", bytewise)
        self.write_pieces(data + CTRL_Z, split)
        self.wire.expect_raw((data if self.echo else b"") + b"\r\nSEND OK\r\n", f"{line} data + Ctrl+Z")
        s.sent += data
        if s.buffer == "empty":                       # the echo will arrive into an empty buffer
            self.wire.wait_urcs(lambda: s.buffer != "empty", f'"recv" URC of {ssid} for the echo')

    @rule(p=st.integers(0, 19), how=st.sampled_from(["esc", "empty", "long"]), data=payloads)
    def send_refused(self, p, how, data):
        """ESC cancels with OK; Ctrl+Z alone or 1461 bytes: ERROR; nothing is sent."""
        ssid = self.pick(p)
        s = self.socks.get(ssid)
        if s is None or s.state != "connected":
            return
        self.cmd(f"AT+QSSLSEND={ssid}", b"\r\n> ")
        body = {"esc": data[:200], "empty": b"", "long": b"y" * 1461}[how]
        self.wire.write(body + (ESC if how == "esc" else CTRL_Z))
        self.wire.expect_raw((body if self.echo else b"") + (OK if how == "esc" else ERROR), f"send {how}")

    def took(self, s: Sock, asked: int, data: bytes, what: str) -> None:
        expected = bytes(s.sent[s.read:s.read + len(data)])
        assert data == expected, (f"{what}: read {data[:60]!r} ({len(data)}), expected the next unread "
                                  f"bytes {expected[:60]!r} ({len(s.sent) - s.read} unread)")
        if data:
            assert s.buffer != "empty", f"{what}: {len(data)} bytes out of a buffer left empty, no recv URC"
        else:
            assert s.buffer != "nonempty", f'{what}: nothing to read after a "recv" URC'
        s.read += len(data)
        if s.read == len(s.sent):
            s.buffer = "empty"
        else:
            s.buffer = "empty" if len(data) < asked else "unknown"

    def read_once(self, ssid: int, n: int, cid: int = 1, bytewise: bool = False) -> int:
        s = self.socks[ssid]
        line = f"AT+QSSLRECV={cid},{ssid},{n}"
        _, port, ip = PEERS[s.peer]
        self.cmd(line, None, bytewise)
        m = self.wire.line(re.compile(rb"\r\n(?:OK\r\n|\+QSSLRECV: %s:%d,TCP,(\d+)\r\n)"
                                      % (re.escape(ip.encode()), port)), line)
        if m.group(1) is None:
            self.took(s, n, b"", line)
            return 0
        k = int(m.group(1))
        assert 0 < k <= n, f"{line}: {k} bytes"
        data = self.wire.exactly(k)
        self.wire.expect(b"\r\n\r\nOK\r\n", f"{line} end")
        self.took(s, n, data, line)
        if s.buffer == "empty" and s.read < len(s.sent) and s.state == "connected":
            # the rest is on its way into an empty buffer: its "recv" URC will come
            self.wire.wait_urcs(lambda: s.buffer != "empty", f'"recv" URC of {ssid} for the rest')
        return k

    @rule(p=st.integers(0, 19), n=st.one_of(st.integers(1, 40), st.integers(1, 1500)),
          cid=st.integers(0, 1), bytewise=st.booleans())
    def recv(self, p, n, cid, bytewise):
        ssid = self.pick(p)
        s = self.socks.get(ssid)
        if s is None or s.state == "opening":
            self.cmd(f"AT+QSSLRECV={cid},{ssid},{n}", ERROR, bytewise)
            return
        self.read_once(ssid, n, cid, bytewise)

    @rule(p=st.integers(0, 19), n=st.sampled_from([5, 1500]))
    def drain(self, p, n):
        """Read until every byte sent came back exactly once: a lost byte is a URC never seen."""
        ssid = self.pick(p)
        s = self.socks.get(ssid)
        if s is None or s.state == "opening":
            return
        for _ in range(5000):
            if s.read == len(s.sent):
                break
            if s.buffer == "empty":
                self.wire.wait_urcs(lambda: s.buffer != "empty", f'"recv" URC for the {len(s.sent) - s.read} '
                                                                 f"bytes still due on {ssid}")
            self.read_once(ssid, n)
        assert s.read == len(s.sent)

    @rule(p=st.integers(0, 19), closetype=st.sampled_from(["", ",0", ",1"]), bytewise=st.booleans())
    def close(self, p, closetype, bytewise):
        ssid = self.pick(p)
        self.cmd(f"AT+QSSLCLOSE={ssid}{closetype}", f"\r\nOK\r\n\r\n{ssid},CLOSE OK\r\n".encode(), bytewise)
        s = self.socks.pop(ssid, None)
        if s is not None and s.conn is not None and s.peer != "closer":
            srv = self.servers.tls[{"wrongname": "good"}.get(s.peer, s.peer)]
            srv.wait_for(s.conn.done.is_set, TIMEOUT, "the server's end of the closed socket")
            assert bytes(s.conn.received) == bytes(s.sent), "the server got other bytes than SEND OK took"
        if s is not None:
            _, port, ip = PEERS[s.peer]
            self.last[ssid] = (ip, port, s.state == "opening")

    @rule(p=st.integers(0, 19))
    def server_closes(self, p):
        ssid = self.pick(p)
        s = self.socks.get(ssid)
        if s is None or s.state != "connected" or s.peer == "closer":
            return
        srv = self.servers.tls[{"wrongname": "good"}.get(s.peer, s.peer)]
        srv.wait_for(lambda: len(s.conn.received) >= len(s.sent), TIMEOUT, "the server has all SEND OK took")
        assert bytes(s.conn.received) == bytes(s.sent), "the server got other bytes than SEND OK took"
        s.conn.close(close_notify=True)
        self.closing_peer = s
        self.wire.wait_urcs(lambda: s.closed_urc, f'"close" URC of {ssid}')
        self.closing_peer = None
        self.cmd(f"AT+QSSLSEND={ssid}", ERROR)

    # -- clock, settings, reboots, the port ---------------------------------------------------
    @rule(year_2019=st.booleans())
    def cclk(self, year_2019):
        if year_2019:
            self.cmd('AT+CCLK="19/06/15,12:00:00+32"', OK)
        else:
            now = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8)))
            self.cmd(f'AT+CCLK="{now:%y/%m/%d,%H:%M:%S}+32"', OK)
        self.clock_2019 = year_2019

    @rule(on=st.booleans())
    def ate(self, on):
        self.cmd(f"ATE{int(on)}", OK)

    @rule(value=st.integers(0, 1))
    def cmee_set(self, value):
        self.cmd(f"AT+CMEE={value}", OK)
        self.cmee = value

    @rule(what=st.sampled_from(["AT&W", "ATZ", "AT&F"]))
    def settings_cmd(self, what):
        self.cmd(what, OK)
        if what == "AT&W":
            self.saved = (self.echo, self.cmee)
        else:
            self.echo, self.cmee = self.saved if what == "ATZ" else (True, 1)

    @precondition(lambda self: self.steps_since_reboot >= 10)
    @rule()
    def cfun_reboot(self):
        """AT+CFUN=1,1: the OK in the old settings, then +CPIN: READY; what a reboot keeps."""
        self.cmd("AT+CFUN=1,1", OK)
        self.advance(1.0)
        self.wire.expect(b"\r\n+CPIN: READY\r\n", "the restart's URC")
        self.steps_since_reboot = 0
        self.echo, self.cmee = self.saved
        self.reset_ssl()
        self.socks.clear()
        self.last.clear()                     # the ML302 forgets what it dialled
        self.pdp = False

    @precondition(lambda self: not self.pdp)
    @rule()
    def cgact(self):
        self.activate()

    @rule(during=st.sampled_from(["idle", "secwrite", "send"]), data=payloads)
    def reopen_port(self, during, data):
        """The host closes the port and a new one opens it: a half-done prompt is abandoned."""
        if during == "secwrite" and len(self.slots) < 3:
            slot = min(set(range(3)) - set(self.slots))
            self.cmd(f"AT+QSECWRITE={slot}", b"\r\n> ")
            self.wire.write(data[:100])
        elif during == "send" and any(s.state == "connected" for s in self.socks.values()):
            ssid = next(i for i, s in sorted(self.socks.items()) if s.state == "connected")
            self.cmd(f"AT+QSSLSEND={ssid}", b"\r\n> ")
            self.wire.write(data[:100])
        self.emu.wait_received(self.port, self.written_before + self.wire.written)
        self.written_before += self.wire.written
        self.wire.close()
        deadline = time.monotonic() + TIMEOUT
        while self.emu.run(lambda: self.port.port.attached):
            assert time.monotonic() < deadline, "the emulator never saw the host close the port"
            time.sleep(0.005)
        self.wire = EchoWire(self.port.path, self.on_urc)
        self.emu.run(self.port.port.look_for_host)
        for s in self.socks.values():                 # a "recv" URC may have gone with the host
            if s.read < len(s.sent) and s.state == "connected":
                s.buffer = "unknown"

    # the socket paths weigh more: hypothesis picks among rules evenly
    open_too, open_again, send_too, recv_too, cfg_int_too = open, open, send, recv, cfg_int

    @invariant()
    def at_answers_ok(self):
        self._n = getattr(self, "_n", 0) + 1
        self.steps_since_reboot += 1
        self.cmd("AT", OK, bytewise=self._n % 3 == 0)


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    s.close()


def test_ml302_model(servers, strict_log):
    machine = type("Ml302Run", (Ml302Model,), {"servers": servers})
    run_state_machine_as_test(machine, settings=SETTINGS)
