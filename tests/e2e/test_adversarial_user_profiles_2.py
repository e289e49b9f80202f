"""User profiles, second round: a user writes profiles as README ("--profile") and
docs/behaviour.md ("Profiles and module families") tell them to, starts `python -m emulator
--profile my.toml` and drives the SSL commands over the pty against loopback OpenSSL servers.

Part 1 (CLI, end to end): a Quectel BG96-like profile (4 SSL contexts, 5 sockets, smaller
send/recv lengths, the BG96 option list, three cipher suites, its own identity), an EG800K-like
one (PDP contexts 1-3, a small receive buffer, its own error codes, no DTLS/PSK/ALPN), a lean
EC2x without AT+QIGETERROR, AT+QSSLSTATE, ATI and the TCP/IP commands, and an ML307R-like copy of
ml302.toml (onemo family) with fewer contexts and sockets and commands removed.  Every range a
profile narrows answers the error the docs promise (Quectel: ERROR and AT+QIGETERROR 552;
OneMO: a plain ERROR), every removed command is a plain ERROR (also with AT+CMEE=2), the socket
pool holds exactly the profile's count, identity strings are the profile's.
Part 2 (CLI): malformed and hostile profiles the earlier round (test_adversarial_user_profiles.py)
did not try: one line on stderr naming the file and the key, exit 2, no state dir made.
Part 3: what were bugs here, fixed: profiles that loaded and misbehaved later are refused."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from emulator.testing.host import Host
from emulator.testing.peers import TlsServer
from tests.e2e.cli_support import ROOT, Cli, cli_factory, refused

EC2X = (PROFILE_DIR / "ec2x.toml").read_text()
ML302 = (PROFILE_DIR / "ml302.toml").read_text()
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
HOST = "www.iottest.work"          # a name the shared PKI's server certificate carries
PDP_UP = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


def derive(*edits: tuple[str, str], text: str = EC2X) -> str:
    """`text` with each (old, new) replaced once (old must be there)."""
    for old, new in edits:
        assert old in text, f"anchor {old!r} is not in the profile any more"
        text = text.replace(old, new, 1)
    return text


def with_options(text: str, options: list[str]) -> str:
    listed = "options = [" + ", ".join(f'"{o}"' for o in options) + "]\n"
    out, n = re.subn(r"^options = \[.*?\]\n", listed, text, count=1, flags=re.M | re.S)
    assert n == 1
    return out


def without_commands(text: str, *names: str) -> str:
    for name in names:
        text, n = re.subn(r'^"%s" = "[^"]*".*\n' % re.escape(name), "", text, flags=re.M)
        assert n == 1, name
    return text


# -- the user's profiles ------------------------------------------------------------------

BG96_OPTIONS = ["sslversion", "ciphersuite", "cacert", "clientcert", "clientkey", "seclevel", "sni",
                "checkhost", "ignorecertchain", "ignorelocaltime", "negotiatetime"]
BG96 = with_options(derive(
    ('name = "ec2x"', 'name = "bg96-user"'),
    ('description = "Quectel EC25', 'description = "A BG96 written from the EC25'),
    ('model = "EC25"', 'model = "BG96"'),
    ('revision = "EC25EFAR06A06M4G"', 'revision = "BG96MAR02A07M1G"'),
    ('imei = "867698041234567"', 'imei = "866425031234567"'),
    ('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
     'ati = ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]'),
    ('firmware = "EC25EFAR06A06M4G_01.001.01.001"', 'firmware = "BG96MAR02A07M1G_01.016.01.016"'),
    ('imsi = "460011234567890"', 'imsi = "310260123456789"'),
    ('iccid = "89860119841234567890"', 'iccid = "8901260123456789012F"'),
    ('operator = "CHN-UNICOM"', 'operator = "T-Mobile"'),
    ('# plmn = "46001"', 'plmn = "310260"'),
    ("act = 7", "act = 8"),
    ("contexts = 6 ", "contexts = 4 "),
    ("sockets = 12                    # <clientID>", "sockets = 5                     # <clientID>"),
    ("sockets = 12                    # <connectID>", "sockets = 5                     # <connectID>"),
    ("send_max = 1460                 # AT+QSSLSEND", "send_max = 1000                 # AT+QSSLSEND"),
    ("recv_max = 1500                 # AT+QSSLRECV", "recv_max = 700                  # AT+QSSLRECV"),
    ('at_port = "usbmodem"            # <at_port> in AT+QSSLSTATE', 'at_port = "uart1"'),
    ('dialect = "quectel"', 'cipher_suites = ["0XC02F", "0X0035", "0X002F"]\ndialect = "quectel"'),
), BG96_OPTIONS)

EG800K_OPTIONS = ["sslversion", "ciphersuite", "cacert", "clientcert", "clientkey", "seclevel",
                  "ignorelocaltime", "negotiatetime", "sni", "closetimemode", "session_cache"]
EG800K = with_options(derive(
    ('name = "ec2x"', 'name = "eg800k-user"'),
    ('model = "EC25"', 'model = "EG800K"'),
    ('revision = "EC25EFAR06A06M4G"', 'revision = "EG800KEULCR07A07M04"'),
    ('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
     'ati = ["Quectel", "EG800K", "Revision: EG800KEULCR07A07M04"]'),
    ('firmware = "EC25EFAR06A06M4G_01.001.01.001"', 'firmware = "EG800KEULCR07A07M04_01.300.01.300"'),
    ('gcap = "+CGSM"', 'gcap = "+CGSM,+FCLASS,+DS"'),
    ("last_id = 16", "last_id = 3"),
    ("sockets = 12                    # <clientID>", "sockets = 6                     # <clientID>"),
    ("sockets = 12                    # <connectID>", "sockets = 6                     # <connectID>"),
    ("recv_max = 1500                 # AT+QSSLRECV", "recv_max = 1024                 # AT+QSSLRECV"),
    ("recv_buffer = 65536             # bytes held for AT+QSSLRECV", "recv_buffer = 2048 # AT+QSSLRECV"),
    ("handshake_failed = 566", "handshake_failed = 579"),
    ("verify_failed = 566", "verify_failed = 580"),
    ("bad_config = 552", "bad_config = 581"),
), EG800K_OPTIONS)

LEAN_REMOVED = ["+QSSLSTATE", "+QIGETERROR", "+QISWTMD", "I", "+QGMR", "+QIOPEN", "+QICLOSE", "+QISTATE",
                "+QISEND", "+QISENDEX", "+QIRD", "+QISDE", "+QICFG"]
_lean = without_commands(EC2X, *LEAN_REMOVED)
LEAN = derive(('name = "ec2x"', 'name = "ec25-lean"'),
              text=_lean[:_lean.index("\n[tcpip]")] + _lean[_lean.index("\n# AT+QCFG"):])

ML307 = derive(('name = "ml302"', 'name = "ml307-user"'),
               ('model = "ML302"', 'model = "ML307R"'),
               ('revision = "ML302-CNLM_MBRH0S00"', 'revision = "ML307R-DC_V1.0.0"'),
               ("contexts = 6 ", "contexts = 2 "), ("sockets = 6 ", "sockets = 3 "),
               ("send_max = 1460", "send_max = 512"), ("recv_max = 1500 ", "recv_max = 1000 "),
               text=without_commands(ML302, "+QSSLSTATE", "+QSECDEL", "+CEER", "I"))


def write(tmp_path: Path, text: str | bytes, name: str = "my.toml") -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.fixture
def cli(tmp_path):
    yield from cli_factory(tmp_path)


@pytest.fixture
def servers(pki):
    """servers(**kw) -> a TlsServer (echo unless a mode/handler is given); closed at the end."""
    started: list[TlsServer] = []

    def start(cert=None, **kw) -> TlsServer:
        kw.setdefault("mode", "echo")
        srv = TlsServer(cert or pki.server, **kw)
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.close()


def modem(cli, tmp_path, text: str, routes: dict[int, TlsServer] = (), *extra: str) -> Host:
    """`python -m emulator --profile <text as a file>`, HOST:<port> routed to each server; a
    Host on its link with ATE0 sent."""
    args = ["--profile", str(write(tmp_path, text))]
    for port, srv in dict(routes).items():
        args += ["--route", f"{HOST}:{port}=127.0.0.1:{srv.address[1]}"]
    emu = cli(*args, *extra)
    host = Host(emu.dev)
    host.emu = emu
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    return host


def opened(host, line: str, client_id: int, code: int = 0) -> None:
    """AT+QSSLOPEN ... answers OK, then exactly +QSSLOPEN: <id>,<code>."""
    assert host.at(line) == OK, line
    assert host.read_until(b"\r\n", timeout=10) == b"\r\n"
    assert host.read_until(b"\r\n", timeout=10) == f"+QSSLOPEN: {client_id},{code}\r\n".encode()


def refused_ssl(host, line: str) -> None:
    assert host.at(line) == ERROR, line
    assert host.at("AT+QIGETERROR") == E552, line


def recv(host, client_id: int, n: int) -> bytes:
    """One AT+QSSLRECV=<id>,<n>: the data (b"" for +QSSLRECV: 0), answer framing checked."""
    head = host.at(f"AT+QSSLRECV={client_id},{n}")
    m = re.match(rb"\r\n\+QSSLRECV: (\d+)\r\n", head)
    assert m, head
    size = int(m.group(1))
    if size == 0:
        assert head == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"
        return b""
    assert head[m.end() + size:] == b"\r\n\r\nOK\r\n", head[-40:]
    return head[m.end():m.end() + size]


# ============================================================ part 1: the user's modules

def test_bg96_identity_is_the_profiles(cli, tmp_path):
    host = modem(cli, tmp_path, BG96)
    for line, answer in (("ATI", b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"),
                         ("AT+CGMI", b"\r\nQuectel\r\n\r\nOK\r\n"), ("AT+GMI", b"\r\nQuectel\r\n\r\nOK\r\n"),
                         ("AT+CGMM", b"\r\nBG96\r\n\r\nOK\r\n"), ("AT+GMM", b"\r\nBG96\r\n\r\nOK\r\n"),
                         ("AT+CGMR", b"\r\nBG96MAR02A07M1G\r\n\r\nOK\r\n"),
                         ("AT+GMR", b"\r\nBG96MAR02A07M1G\r\n\r\nOK\r\n"),
                         ("AT+QGMR", b"\r\nBG96MAR02A07M1G_01.016.01.016\r\n\r\nOK\r\n"),
                         ("AT+CGSN", b"\r\n866425031234567\r\n\r\nOK\r\n"),
                         ("AT+GSN", b"\r\n866425031234567\r\n\r\nOK\r\n"),
                         ("AT+CIMI", b"\r\n310260123456789\r\n\r\nOK\r\n"),
                         ("AT+QCCID", b"\r\n+QCCID: 8901260123456789012F\r\n\r\nOK\r\n"),
                         ("AT+COPS?", b'\r\n+COPS: 0,0,"T-Mobile",8\r\n\r\nOK\r\n'),
                         ("AT+COPS=3,2;+COPS?", b'\r\n+COPS: 0,2,"310260",8\r\n\r\nOK\r\n')):
        assert host.at(line) == answer, line


BG96_QSSLCFG_TEST = (
    b'\r\n+QSSLCFG: "sslversion",(0-3),(0-4)\r\n'
    b'+QSSLCFG: "ciphersuite",(0-3),(0XC02F,0X0035,0X002F,0XFFFF)\r\n'
    b'+QSSLCFG: "cacert",(0-3),<cacertpath>\r\n'
    b'+QSSLCFG: "clientcert",(0-3),<client_cert_path>\r\n'
    b'+QSSLCFG: "clientkey",(0-3),<client_key_path>\r\n'
    b'+QSSLCFG: "seclevel",(0-3),(0-2)\r\n'
    b'+QSSLCFG: "sni",(0-3),(0,1)\r\n'
    b'+QSSLCFG: "checkhost",(0-3),(0,1)\r\n'
    b'+QSSLCFG: "ignorecertchain",(0-3),(0,1)\r\n'
    b'+QSSLCFG: "ignorelocaltime",(0-3),(0,1)\r\n'
    b'+QSSLCFG: "negotiatetime",(0-3),(10-300)\r\n\r\nOK\r\n')


def test_bg96_restarts_with_its_own_start_up_urcs(cli, tmp_path):
    import time
    text = derive(('boot_urcs = ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"]',
                   'boot_urcs = ["RDY", "APP RDY"]'),
                  ("boot_urc_ms = [0, 130, 360, 380, 600, 620]", "boot_urc_ms = [0, 300]"),
                  text=BG96)
    host = modem(cli, tmp_path, text)
    assert host.at("AT+CFUN=1,1") == OK
    assert host.read_until(b"RDY\r\n") == b"\r\nRDY\r\n"
    rdy = time.monotonic()
    assert host.read_until(b"APP RDY\r\n") == b"\r\nAPP RDY\r\n"
    assert time.monotonic() - rdy >= 0.25
    assert host.at("ATE0;+CGMM") == b"ATE0;+CGMM\r\r\nBG96\r\n\r\nOK\r\n"     # (AT&F set: echo on)
    assert host.quiet_for(0.3) == b""


def test_bg96_test_forms_show_the_profiles_ranges(cli, tmp_path):
    host = modem(cli, tmp_path, BG96)
    assert host.at("AT+QSSLOPEN=?") == \
        b"\r\n+QSSLOPEN: (1-16),(0-3),(0-4),<serveraddr>,<server_port>,(0-2)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-4),(1-1000)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLRECV=?") == b"\r\n+QSSLRECV: (0-4),(1-700)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=?") == b"\r\n+QSSLCLOSE: (0-4),(0-65535)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCFG=?") == BG96_QSSLCFG_TEST
    assert host.at("AT+QIOPEN=?") == (b'\r\n+QIOPEN: (1-16),(0-4),"TCP/UDP/TCP LISTENER/UDP SERVICE",'
                                      b'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)\r\n\r\nOK\r\n')


def test_bg96_every_narrowed_range_is_552(cli, tmp_path, servers):
    host = modem(cli, tmp_path, BG96, {443: servers()})
    assert host.at(PDP_UP) == OK
    for line in (f'AT+QSSLOPEN=1,4,0,"{HOST}",443,0',           # context 4 of 0-3
                 f'AT+QSSLOPEN=1,0,5,"{HOST}",443,0',           # clientID 5 of 0-4
                 'AT+QSSLCFG="seclevel",4,1', 'AT+QSSLCFG="seclevel",4',
                 'AT+QSSLCFG="cacertex",0,"UFS:ca.pem"',        # options the BG96 does not list
                 'AT+QSSLCFG="clientcertex",0,"UFS:ca.pem"', 'AT+QSSLCFG="dtls",0,1',
                 'AT+QSSLCFG="psk",0,"id","0102"', 'AT+QSSLCFG="alpn",0,"h2"',
                 'AT+QSSLCFG="session_cache",0,0', 'AT+QSSLCFG="closetimemode",0,1',
                 "AT+QSSLSEND=5,1", "AT+QSSLSEND=0,1001", "AT+QSSLRECV=5,1", "AT+QSSLRECV=0,701",
                 "AT+QSSLCLOSE=5"):
        refused_ssl(host, line)
    # the edges themselves are taken
    assert host.at('AT+QSSLCFG="seclevel",3') == b'\r\n+QSSLCFG: "seclevel",3,0\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="negotiatetime",3,10') == OK
    opened(host, f'AT+QSSLOPEN=1,3,4,"{HOST}",443,0', 4)
    assert host.send_data(4, b"e" * 1000) == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QSSLURC: "recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
    data = b""
    while len(data) < 1000:
        chunk = recv(host, 4, 700)
        assert 0 < len(chunk) <= 700
        data += chunk
    assert data == b"e" * 1000
    assert host.send_data(4, b"v" * 1001, fixed=False) == ERROR        # Ctrl+Z after 1001 bytes
    assert host.at("AT+QIGETERROR") == E552
    assert host.send_data(4, b"v" * 1000, fixed=False) == b"\r\nSEND OK\r\n"
    # the echo's "recv" URC first (the buffer was read empty): written while the next command
    # line is on its way, it would come before that command's OK
    assert host.read_until(b'+QSSLURC: "recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
    assert host.at("AT+QSSLCLOSE=4") == OK


def test_bg96_socket_pool_is_five_and_0xffff_offers_its_three_suites(cli, tmp_path, servers):
    server = servers()
    host = modem(cli, tmp_path, BG96, {443: server})
    assert host.at(PDP_UP) == OK
    for client_id in range(5):
        opened(host, f'AT+QSSLOPEN=1,{client_id % 4},{client_id},"{HOST}",443,0', client_id)
    assert [c.cipher_suites for c in server.wait_connections(5)] == [[0xC02F, 0x0035, 0x002F, 0x00FF]] * 5
    state = host.at("AT+QSSLSTATE")
    assert re.fullmatch(rb'\r\n(\+QSSLSTATE: \d,"SSLClient","www.iottest.work",443,\d+,2,1,\d,0,"uart1",\d\r\n){5}'
                        rb"\r\nOK\r\n", state), state
    assert [int(i) for i in re.findall(rb"\+QSSLSTATE: (\d),", state)] == [0, 1, 2, 3, 4]
    refused_ssl(host, f'AT+QSSLOPEN=1,0,5,"{HOST}",443,0')             # no sixth socket
    # one pool with the TCP/IP connectIDs: 4 is taken, 5 does not exist
    assert host.at('AT+QIOPEN=1,4,"TCP","127.0.0.1",9,0,0') == OK
    assert host.read_until(b"+QIOPEN: 4,563\r\n") == b"\r\n+QIOPEN: 4,563\r\n"
    refused_ssl(host, 'AT+QIOPEN=1,5,"TCP","127.0.0.1",9,0,0')
    assert host.at("AT+QSSLCLOSE=2") == OK
    opened(host, f'AT+QSSLOPEN=1,1,2,"{HOST}",443,0', 2)                 # a freed id is reused


def test_bg96_tcpip_commands_share_the_five_ids(cli, tmp_path):
    host = modem(cli, tmp_path, BG96)
    for line, answer in (("AT+QISWTMD=?", b"\r\n+QISWTMD: (0-4),(0-2)\r\n\r\nOK\r\n"),
                         ("AT+QIRD=?", b"\r\n+QIRD: (0-4),(0-1500)\r\n\r\nOK\r\n"),
                         ("AT+QICLOSE=?", b"\r\n+QICLOSE: (0-4),(0-65535)\r\n\r\nOK\r\n"),
                         ("AT+QISEND=?", b"\r\n+QISEND: (0-4),(0-1460)\r\n\r\nOK\r\n"),
                         ("AT+QSSLSTATE=4", OK), ("AT+QISTATE=1,4", OK)):
        assert host.at(line) == answer, line
    for line in ("AT+QISWTMD=5,0", "AT+QIRD=5", "AT+QICLOSE=5", "AT+QISEND=5,1"):
        refused_ssl(host, line)
    assert host.at("AT+QSSLSTATE=5") == ERROR
    assert host.at("AT+QISTATE=1,5") == ERROR


def test_bg96_push_mode_pieces_are_at_most_its_recv_max(cli, tmp_path, servers):
    payload = bytes(range(256)) * 8                                      # 2048 bytes in one write

    def handler(conn):
        conn.recv(4, timeout=5)
        conn.sendall(payload)
        conn.recv(1, timeout=5)
    host = modem(cli, tmp_path, BG96, {443: servers(handler=handler)})
    assert host.at(PDP_UP) == OK
    opened(host, f'AT+QSSLOPEN=1,0,1,"{HOST}",443,1', 1)
    assert host.send_data(1, b"go!\n") == b"\r\nSEND OK\r\n"
    got, sizes = b"", []
    while len(got) < len(payload):
        head = host.read_until(re.compile(rb'\r\n\+QSSLURC: "recv",1,(\d+)\r\n'))
        assert head.startswith(b'\r\n+QSSLURC: "recv",1,'), head
        size = int(re.search(rb",(\d+)\r\n$", head).group(1))
        sizes.append(size)
        got += host.read_exactly(size)
        assert host.read_exactly(2) == b"\r\n"                          # the push's end
    assert got == payload and max(sizes) <= 700 and len(sizes) >= 3, sizes


def test_eg800k_identity_and_pdp_range(cli, tmp_path):
    host = modem(cli, tmp_path, EG800K)
    assert host.at("ATI") == b"\r\nQuectel\r\nEG800K\r\nRevision: EG800KEULCR07A07M04\r\n\r\nOK\r\n"
    assert host.at("AT+GCAP") == b"\r\n+GCAP: +CGSM,+FCLASS,+DS\r\n\r\nOK\r\n"
    assert host.at("AT+QGMR") == b"\r\nEG800KEULCR07A07M04_01.300.01.300\r\n\r\nOK\r\n"
    assert host.at("AT+QIACT=?") == b"\r\n+QIACT: (1-3)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLOPEN=?") == \
        b"\r\n+QSSLOPEN: (1-3),(0-5),(0-5),<serveraddr>,<server_port>,(0-2)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLRECV=?") == b"\r\n+QSSLRECV: (0-5),(1-1024)\r\n\r\nOK\r\n"
    assert host.at('AT+QICSGP=4,1,"UNINET","","",1') == ERROR
    assert host.at("AT+QIACT=4") == ERROR
    assert host.at('AT+QICSGP=3,1,"UNINET","","",1;+QIACT=3') == OK
    assert host.at("AT+QIACT?") == b'\r\n+QIACT: 3,1,1,"10.7.157.1"\r\n\r\nOK\r\n'
    refused_ssl(host, f'AT+QSSLOPEN=4,0,0,"{HOST}",443,0')
    refused_ssl(host, f'AT+QSSLOPEN=3,0,6,"{HOST}",443,0')
    test_form = host.at("AT+QSSLCFG=?")
    assert re.findall(rb'\+QSSLCFG: "(\w+)",\(0-5\),', test_form) == [o.encode() for o in EG800K_OPTIONS]
    for line in ('AT+QSSLCFG="dtls",0,1', 'AT+QSSLCFG="dtlsversion",0', 'AT+QSSLCFG="alpn",0,"h2"',
                 'AT+QSSLCFG="renegotiation",0,1', 'AT+QSSLCFG="cacertex",0,"UFS:ca.pem"'):
        refused_ssl(host, line)


def test_eg800k_reports_its_own_error_codes(cli, tmp_path, servers, pki):
    host = modem(cli, tmp_path, EG800K, {443: servers(), 444: servers(pki.wrong_server)})
    assert host.at('AT+QICSGP=2,1,"UNINET","","",1;+QIACT=2') == OK
    assert host.at('AT+QSSLCFG="seclevel",1,1') == OK
    opened(host, f'AT+QSSLOPEN=2,1,0,"{HOST}",443,0', 0, 581)            # bad_config: no cacert
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 581,unknown error\r\n\r\nOK\r\n"
    assert host.upload("ca.pem", pki.ca.cert_pem).endswith(OK)
    assert host.at('AT+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK
    opened(host, f'AT+QSSLOPEN=2,1,0,"{HOST}",444,0', 0, 580)            # verify_failed
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 580,unknown error\r\n\r\nOK\r\n"
    opened(host, f'AT+QSSLOPEN=2,1,0,"{HOST}",443,0', 0)                 # the right server
    opened(host, 'AT+QSSLOPEN=2,1,1,"nowhere.invalid",443,0', 1, 565)   # dns: unchanged


def test_eg800k_small_receive_buffer_holds_data_back_and_drops_none(cli, tmp_path, servers):
    payload = os.urandom(5000)

    def handler(conn):
        conn.recv(5, timeout=5)
        conn.sendall(payload)
        conn.recv(1, timeout=10)
    host = modem(cli, tmp_path, EG800K, {443: servers(handler=handler)})
    assert host.at(PDP_UP) == OK
    opened(host, f'AT+QSSLOPEN=1,0,5,"{HOST}",443,0', 5)
    assert host.send_data(5, b"hello") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QSSLURC: "recv",5\r\n') == b'\r\n+QSSLURC: "recv",5\r\n'
    got = b""
    while len(got) < len(payload):
        chunk = recv(host, 5, 1024)
        assert len(chunk) <= 1024
        got += chunk
        if not chunk:
            host.read_until(b'+QSSLURC: "recv",5\r\n')
    assert got == payload


LEAN_ERRORS = ["ATI", "ATI0", "AT+QGMR", "AT+QGMR=?", "AT+QSSLSTATE", "AT+QSSLSTATE=?", "AT+QSSLSTATE=0",
               "AT+QSSLSTATE?", "AT+QIGETERROR", "AT+QIGETERROR=?", "AT+QISWTMD=0,1", "AT+QISWTMD=?",
               'AT+QIOPEN=1,0,"TCP","127.0.0.1",9,0,0', "AT+QIOPEN=?", "AT+QISTATE?", "AT+QISTATE",
               "AT+QICLOSE=0", "AT+QISEND=0,1", "AT+QISENDEX=0,\"41\"", "AT+QIRD=0", "AT+QISDE?",
               'AT+QICFG="dataformat"', "AT+QIGETERROR;+CSQ"]


def test_a_lean_ec25_answers_error_to_every_form_of_what_it_lacks(cli, tmp_path, servers):
    host = modem(cli, tmp_path, LEAN, {443: servers()})
    for cmee in (1, 2, 0):
        assert host.at(f"AT+CMEE={cmee}") == OK
        for line in LEAN_ERRORS:
            assert host.at(line) == ERROR, (cmee, line)
    assert host.at("AT+CSQ;+QIGETERROR") == b"\r\n+CSQ: 24,99\r\n\r\nERROR\r\n"
    assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    # what it has still works, end to end, with the whole clientID range of ssl.sockets
    assert host.at(PDP_UP) == OK
    assert host.at(f'AT+QSSLOPEN=1,0,12,"{HOST}",443,1') == ERROR
    opened(host, f'AT+QSSLOPEN=1,5,11,"{HOST}",443,1', 11)
    assert host.send_data(11, b"ping") == b"\r\nSEND OK\r\n"
    assert host.read_until(b"ping\r\n") == b'\r\n+QSSLURC: "recv",11,4\r\nping\r\n'
    assert host.at(f'AT+QSSLOPEN=1,5,11,"{HOST}",443,1') == ERROR      # in use (no QIGETERROR to ask)
    assert host.at("AT+QSSLCLOSE=11") == OK


def test_an_ml307_copy_of_ml302_has_its_ranges_and_lacks_its_removed_commands(cli, tmp_path, servers):
    server = servers(ciphers="DEFAULT:@SECLEVEL=0")
    host = modem(cli, tmp_path, ML307, {443: server}, "--dns", f"{HOST}=106.12.79.254")
    for line in ("ATI", "AT+QSSLSTATE", "AT+QSSLSTATE?", "AT+QSSLSTATE=?", "AT+QSECDEL=1", "AT+QSECDEL=?",
                 "AT+CEER"):
        assert host.at(line) == ERROR, line
    assert host.at("AT+CGMM") == b"\r\nML307R\r\n\r\nOK\r\n"
    assert host.at("AT+CGMR") == b"\r\nML307R-DC_V1.0.0\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCFG=?") == b'\r\n+QSSLCFG: "type",(0-1),"value"\r\n\r\nOK\r\n'
    assert host.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-2)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLRECV=?") == b"\r\n+QSSLRECV: (0,1),(0-2),(1,1000)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=?") == b"\r\n+QSSLCLOSE: (0-2)[,(0,1)]\r\n\r\nOK\r\n"
    for line in ('AT+QSSLCFG="seclevel",2,0', 'AT+QSSLCFG="ctxindex",2',
                 f'AT+QSSLOPEN=3,0,"{HOST}",443,0', f'AT+QSSLOPEN=0,2,"{HOST}",443,0'):
        assert host.at(line) == ERROR, line                               # OneMO: a plain ERROR
    assert host.at('AT+QSSLCFG="ctxindex",1') == \
        b'\r\n+QSSLCFG: 1,4,0,0XFFFF,"/caCrt.pem","/clientCrt.pem","/privateKey.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
    for ssid in (0, 1, 2):                                                # all three sockets
        assert host.at(f'AT+QSSLOPEN={ssid},{ssid % 2},"{HOST}",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: %d,0\r\n" % ssid) == b"\r\n+QSSLOPEN: %d,0\r\n" % ssid
    assert host.at(f'AT+QSSLOPEN=2,1,"{HOST}",443,0') == OK                # in use: -2 after OK
    assert host.read_until(b"+QSSLOPEN: 2,-2\r\n") == b"\r\n+QSSLOPEN: 2,-2\r\n"
    assert host.at("AT+QSSLRECV=1,2,1001") == ERROR
    host.write(b"AT+QSSLSEND=2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"z" * 513 + b"\x1a")                                      # one past send_max
    assert host.read_until(ERROR) == ERROR
    host.write(b"AT+QSSLSEND=2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"z" * 512 + b"\x1a")
    assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QSSLURC: "recv",1,2\r\n') == b'\r\n+QSSLURC: "recv",1,2\r\n'
    server.wait_received(512)
    assert host.at("AT+QSSLRECV=1,2,1000") == \
        b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,512\r\n" + b"z" * 512 + b"\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=2") == OK
    assert host.read_until(b"2,CLOSE OK\r\n") == b"\r\n2,CLOSE OK\r\n"


def test_a_state_dir_saved_by_ec2x_keeps_only_what_the_users_profile_can_take(tmp_path):
    """README (--state-dir): saved settings and NV items this profile cannot take fall back to
    its defaults with a warning; the rest carries over."""
    first = Cli(tmp_path, "--profile", "ec2x")
    host = Host(first.dev)
    for line in ("ATE0", "AT+IPR=921600;+CMEE=2;&W", 'AT+QCFG="nwscanmode",3',
                 'AT+QCFG="urc/ri/ring","always",2000,5000,5000,"on",5', "AT+QSIMDET=1,1"):
        assert host.at(line).endswith(OK), line
    host.close()
    first.stop()
    text = derive(("baud_rates = [4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 3000000]",
                   "baud_rates = [9600, 115200]"),
                  ('"nwscanmode" = { value = ["0"], test = "(0-3),(0,1)", extra = 1 }',
                   '"nwscanmode" = { value = ["0"], test = "(0-2),(0,1)", extra = 1 }'),
                  ('"urc/ri/ring" = ', '# "urc/ri/ring" = '), text=EG800K)
    second = Cli(tmp_path, "--profile", str(write(tmp_path, text)))       # the same --state-dir
    try:
        host = Host(second.dev)
        assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n\r\nOK\r\n"         # (ATE0 saved too)
        assert host.at("AT+CMEE?") == b"\r\n+CMEE: 2\r\n\r\nOK\r\n"
        assert host.at('AT+QCFG="nwscanmode"') == b'\r\n+QCFG: "nwscanmode",0\r\n\r\nOK\r\n'
        assert host.at('AT+QCFG="urc/ri/ring"') == ERROR                # no such item here
        assert host.at("AT+QSIMDET?") == b"\r\n+QSIMDET: 1,1\r\n\r\nOK\r\n"
        host.close()
        log = second.log()
        assert "key ipr: 921600 is not 0 or a supported baud rate; using the default 115200" in log
        assert "NV item qcfg 'nwscanmode' (['3']) does not fit this profile: its default is kept" in log
    finally:
        second.stop()


def test_a_profile_saved_with_crlf_line_ends_is_the_same_profile(cli, tmp_path):
    host = modem(cli, tmp_path, BG96.replace("\n", "\r\n"))
    assert host.at("ATI") == b"\r\nQuectel\r\nBG96\r\nRevision: BG96MAR02A07M1G\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCFG=?") == BG96_QSSLCFG_TEST


def test_a_user_profiles_trace_replays_only_on_that_profile(cli, tmp_path, servers):
    trace = tmp_path / "bg96.trace"
    host = modem(cli, tmp_path, BG96, {443: servers()}, "--trace", str(trace))
    assert host.at(PDP_UP) == OK
    opened(host, f'AT+QSSLOPEN=1,3,4,"{HOST}",443,0', 4)
    assert host.send_data(4, b"hi") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QSSLURC: "recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
    assert recv(host, 4, 700) == b"hi"
    assert host.at("AT+QSSLCLOSE=4") == OK
    host.close()
    host.emu.stop()                                  # (exit 0, no traceback: the trace complete)
    code, out, err = refused("replay", str(trace))
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    assert "recorded on profile 'bg96-user'" in err and "--profile" in err, err
    proc = subprocess.run([sys.executable, "-m", "emulator", "replay", str(trace), "--profile",
                           str(tmp_path / "my.toml")], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)



# A scenario (--scenario) is checked against the user's profile: its socket ids, PDP contexts
# and commands (emulator/tools/scenario.py _profile_problem).
@pytest.mark.parametrize("which, scenario, message", [
    pytest.param("BG96", '[[step]]\nat = 1\nop = "drop"\nsocket = 5\nhow = "close"\n',
                 "step 1: key socket: 5 is not a socket id of profile bg96-user (0-4)", id="bg96-socket-5"),
    pytest.param("BG96", '[[step]]\nafter = { command = "+QSSLSEND", socket = 5 }\nop = "send_fail"\nsocket = 0\n',
                 "step 1: key after.socket: 5 is not a socket id of profile bg96-user (0-4)", id="bg96-trigger-5"),
    pytest.param("EG800K", '[[step]]\nat = 1\nop = "pdp_deact"\ncid = 4\n',
                 "step 1: key cid: 4 is not a PDP context of profile eg800k-user (1-3)", id="eg800k-cid-4"),
    pytest.param("LEAN", '[[step]]\nat = 1\nop = "slow"\ncommand = "+QSSLSTATE"\nms = 1000\n',
                 "step 1: key command: '+QSSLSTATE' is not a command of profile ec25-lean", id="lean-slow-removed"),
    pytest.param("LEAN", '[[step]]\nafter = { command = "+QIGETERROR" }\nop = "reboot"\n',
                 "step 1: key after.command: AT+QIGETERROR is not a command of profile ec25-lean", id="lean-trigger"),
    pytest.param("ML307", '[[step]]\nwhen = { command = "+QSSLSEND", socket = 3 }\nop = "send_fail"\nsocket = 0\n',
                 "step 1: key when.socket: 3 is not a socket id of profile ml307-user (0-2)", id="ml307-socket-3"),
])
def test_a_scenario_is_held_to_the_users_profile(tmp_path, which, scenario, message):
    profile, path = write(tmp_path, globals()[which]), write(tmp_path, scenario, "scenario.toml")
    code, out, err = refused("--profile", str(profile), "--scenario", str(path), "--offline",
                             "--state-dir", str(tmp_path / "state"))
    assert (code, out, err) == (2, "", f"modem-emulator: scenario {path}: {message}\n")


def test_a_scenario_drops_the_last_socket_of_the_users_profile(cli, tmp_path, servers):
    scenario = write(tmp_path, '[[step]]\nafter = { command = "+QSSLSEND", socket = 4 }\nop = "drop"\n'
                               'socket = 4\nhow = "close"\n', "scenario.toml")
    host = modem(cli, tmp_path, BG96, {443: servers()}, "--scenario", str(scenario))
    assert host.at(PDP_UP) == OK
    opened(host, f'AT+QSSLOPEN=1,2,4,"{HOST}",443,0', 4)
    assert host.send_data(4, b"x") == b"\r\nSEND OK\r\n"
    assert host.seen(b'+QSSLURC: "closed",4\r\n') == b'+QSSLURC: "closed",4\r\n'

# ============================================================ part 2: refused at start-up

_CELL = EC2X[EC2X.index("\n[cell]"):EC2X.index("\n# AT+CEER")]
_QCSQ = "qcsq = '\"LTE\",{rssi},{rsrp},{sinr},{rsrq}'"
_GPRS = '"gprsattach" = { value = ["1"], test = "(0,1)" }'
_BOOT_MS = "boot_urc_ms = [0, 130, 360, 380, 600, 620]"
_DNS = 'dns = ["123.66.165.1", "123.66.165.2"]'
_DESCRIPTION = re.search(r'^description = .*$', EC2X, re.M).group(0)


def _options_string(text: str) -> str:
    return re.sub(r"^options = \[.*?\]\n", 'options = "sni"\n', text, count=1, flags=re.M | re.S)


def _commands_a_list(text: str) -> str:
    return 'commands = ["+CSQ"]\n' + text[:text.index("\n[commands]\n")]


# (id, the profile text, what follows "profile <path>: " on the one stderr line)
BAD = [
    ("ati-a-string", derive(('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]', 'ati = "Quectel EC25"')),
     "key identity.ati: must be a list, got 'Quectel EC25'"),
    ("ati-non-ascii", derive(('ati = ["Quectel", "EC25",', 'ati = ["Quectel\u2122", "EC25",')),
     "key identity.ati: item 0: 'Quectel\u2122' holds '\u2122': only printable ASCII goes on the wire"),
    ("ati-tab", derive(('ati = ["Quectel", "EC25",', 'ati = ["Quectel\\t", "EC25",')),
     "key identity.ati: item 0: 'Quectel\\t' holds '\\t': only printable ASCII goes on the wire"),
    ("csq-three-items", derive(("csq = [24, 99]", "csq = [24, 99, 1]")),
     "key network.csq: must have 2..2 items, got 3"),
    ("options-a-string", _options_string(EC2X), "key ssl.options: must be a list, got 'sni'"),
    ("suites-a-string", derive(('dialect = "quectel"', 'cipher_suites = "0X0035"\ndialect = "quectel"')),
     "key ssl.cipher_suites: must be a list, got '0X0035'"),
    ("suites-empty", derive(('dialect = "quectel"', 'cipher_suites = []\ndialect = "quectel"')),
     "key ssl.cipher_suites: must have 1..10000 items, got 0"),
    ("verify-hostname-yes", derive(("verify_hostname = true", 'verify_hostname = "yes"')),
     "key ssl.verify_hostname: must be true or false, got 'yes'"),
    ("error-code-float", derive(("dns = 565 ", "dns = 565.0 ")), "key ssl.errors: [dns] must be an integer, got 565.0"),
    ("qcfg-item-without-test", derive((_GPRS, '"gprsattach" = { value = ["1"] }')),
     "key qcfg: [gprsattach] test: missing"),
    ("qcfg-unknown-field", derive((_GPRS, '"gprsattach" = { value = ["1"], test = "(0,1)", save = 1 }')),
     "key qcfg: [gprsattach] unknown field 'save' (value, test, extra)"),
    ("qcfg-value-outside-test", derive((_GPRS, '"gprsattach" = { value = ["2"], test = "(0,1)" }')),
     "key qcfg: [gprsattach] value '2' is not one the test form '(0,1)' allows (as the module shows it)"),
    ("qcfg-name-twice", derive((_GPRS, _GPRS + '\n"GPRSATTACH" = { value = ["1"], test = "(0,1)" }')),
     "key qcfg: item name 'GPRSATTACH': listed twice (names are case-insensitive)"),
    ("boot-ms-one-short", derive((_BOOT_MS, "boot_urc_ms = [0, 130, 360, 380, 600]")),
     "key defaults.boot_urc_ms: 5 offsets for 6 defaults.boot_urcs (one each)"),
    ("boot-ms-first-not-0", derive((_BOOT_MS, "boot_urc_ms = [5, 130, 360, 380, 600, 620]")),
     "key defaults.boot_urc_ms: the first is RDY's own (the others count from it): 0, got 5"),
    ("boot-ms-decreasing", derive((_BOOT_MS, "boot_urc_ms = [0, 360, 130, 380, 600, 620]")),
     "key defaults.boot_urc_ms: offsets must not decrease"),
    ("boot-ms-huge", derive((_BOOT_MS, "boot_urc_ms = [0, 130, 360, 380, 600, 600001]")),
     "key defaults.boot_urc_ms: item 5: must be in 0..600000, got 600001"),
    ("boot-urc-escape", derive(('boot_urcs = ["RDY",', 'boot_urcs = ["\\u001b[2JRDY",')),
     "key defaults.boot_urcs: item 0: '\\x1b[2JRDY' holds '\\x1b': only printable ASCII goes on the wire"),
    ("pdp-dns-one", derive((_DNS, 'dns = ["123.66.165.1"]')), "key pdp.dns: must have 2..2 items, got 1"),
    ("pdp-dns-ipv6", derive((_DNS, 'dns = ["::1", "123.66.165.2"]')),
     "key pdp.dns: item 0: '::1' is not an IPv4 address"),
    ("pool-too-small", derive(('address_pool = "10.7.157.1"', 'address_pool = "255.255.255.250"')),
     "key pdp.address_pool: 255.255.255.250 leaves fewer than the 16 addresses its contexts take"),
    ("name-unicode", derive(('name = "ec2x"', 'name = "bg96-\u00fc"')),
     "key profile.name: must be 1-64 letters, digits, '.', '_' or '-' (it names the state folder), got 'bg96-\u00fc'"),
    ("name-space", derive(('name = "ec2x"', 'name = "my bg96"')),
     "key profile.name: must be 1-64 letters, digits, '.', '_' or '-' (it names the state folder), got 'my bg96'"),
    ("name-65-chars", derive(('name = "ec2x"', f'name = "{"b" * 65}"')),
     f"key profile.name: must be 1-64 letters, digits, '.', '_' or '-' (it names the state folder), got '{'b' * 65}'"),
    ("description-a-table", derive((_DESCRIPTION, "description = { text = \"BG96\" }")),
     "key profile.description: must be a string, got {'text': 'BG96'}"),
    ("plmn-arabic-digits", derive(('# plmn = "46001"', 'plmn = "\u0664\u0666\u0660\u0660\u0661"')),
     "key network.plmn: must be the MCC and MNC as 5 or 6 digits (\"46001\", \"310260\"), "
     "got '\u0664\u0666\u0660\u0660\u0661'"),
    ("iccid-arabic-zero", derive(('iccid = "89860119841234567890"', 'iccid = "8986011984123456789\u0660"')),
     "key identity.iccid: must be 18-22 hex digits, got '8986011984123456789\u0660'"),
    ("cell-duplex-lower", derive(('duplex = "FDD"', 'duplex = "fdd"')),
     "key cell.duplex: must be one of 'FDD', 'TDD', got 'fdd'"),
    ("cell-id-lower", derive(('id = "8A21B03"', 'id = "8a21b03"')),
     "key cell.id: must be 1-7 upper-case hex digits, got '8a21b03'"),
    ("sinr-1e308", derive(("sinr = 8.4 ", "sinr = 1e308 ")), "key cell.sinr: must be in -20..30, got 1e+308"),
    ("qeng-without-cell", derive((_CELL, "\n"), (_QCSQ, "qcsq = '\"LTE\",{rssi}'")),
     "[commands] lists +QENG, which needs cell.id"),
    ("qcsq-field-without-cell", derive((_CELL, "\n"), ('"+QENG" = "*"', '# "+QENG"')),
     "key network.qcsq: uses {rsrp}, which needs cell.rsrp"),
    ("gnss-key-missing", derive(("ttff = 30 ", "# ttff = 30 ")), "[commands] lists +QGPS, which needs gnss.ttff"),
    ("gnss-latitude-91", derive(("latitude = 31.12345", "latitude = 91.0")),
     "key gnss.latitude: must be in -90..90, got 91.0"),
    ("onemo-dialect-quectel-options", derive(('dialect = "quectel"', 'dialect = "onemo"')),
     "key ssl.options: 'cacertex' is not an AT+QSSLCFG option of dialect 'onemo' (known: sslversion, seclevel, "
     "ciphersuite, cacert, clientcert, clientkey, ignorertctime, https, httpsctxi)"),
    ("onemo-variant-in-quectel", derive(('"+QSSLSEND" = "quectel"', '"+QSSLSEND" = "onemo"')),
     "key commands.\"+QSSLSEND\": variant 'onemo' but ssl.dialect is 'quectel' (they name the same family)"),
    ("delay-600001", derive(("# [timing]", '[timing]\nresponse_delay_ms = { "+CSQ" = 600001 }\n#')),
     "key timing.response_delay_ms: [+CSQ] must be in 0..600000, got 600001"),
    ("lf-window-1001", derive(("lf_window_ms = 50", "lf_window_ms = 1001")),
     "key serial.lf_window_ms: must be in 0..1000, got 1001"),
    ("first-handle-huge", derive(("first_handle = 1027", "first_handle = 2147482624")),
     "key files.first_handle: must be in 0..2147482623, got 2147482624"),
    ("max-open-0", derive(("max_open = 10", "max_open = 0")), "key files.max_open: must be in 1..1024, got 0"),
    ("operator-quote", derive(('operator = "CHN-UNICOM"', "operator = 'CHN\"UNICOM'")),
     "key network.operator: 'CHN\"UNICOM' holds a double quote (the value is shown in quotes): only printable "
     "ASCII goes on the wire"),
    ("sendex-0", derive(("sendex_max = 512", "sendex_max = 0")), "key tcpip.sendex_max: must be in 1..65535, got 0"),
    ("include-another", derive(("[profile]\n", 'include = ["ml302.toml"]\n[profile]\n')), "unknown section [include]"),
    ("profile-base", derive(('name = "ec2x"', 'name = "mine"\nbase = "ec2x"')), "key profile.base: unknown key"),
    ("commands-a-list", _commands_a_list(EC2X), "key commands: must be a table, got ['+CSQ']"),
    ("bg96-with-a-typo", BG96.replace("ignorecertchain", "ignorecertchian"),
     "key ssl.options: 'ignorecertchian' is not an AT+QSSLCFG option of dialect 'quectel' (known: sslversion, "
     "ciphersuite, cacert, cacertex, clientcert, clientkey, seclevel, ignorelocaltime, negotiatetime, sni, "
     "closetimemode, ignoremulticertchainverify, ignoreinvalidcertsign, psk, dtls, dtlsversion, session_cache, "
     "alpn, renegotiation, checkhost, ignorecertchain)"),
    ("ml307-65-sockets", ML307.replace("sockets = 3 ", "sockets = 65 "), "key ssl.sockets: must be in 1..64, got 65"),
]
ONE_COMMAND = EC2X[:EC2X.index("\n[commands]\n")] + '\n[commands]\n"+QSSLOPEN" = "quectel"\n'   # legal


def _cli_refusal(tmp_path, path: Path) -> str:
    state = tmp_path / "state"
    code, out, err = refused("--profile", str(path), "--state-dir", str(state), "--offline",
                             "--link", str(tmp_path / "modem"))
    assert (code, out) == (2, ""), (code, out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err          # one line
    assert "Traceback" not in err
    assert not state.exists() and not (tmp_path / "modem").exists()  # nothing started
    return err[:-1]


@pytest.mark.parametrize("text, message", [pytest.param(t, m, id=i) for i, t, m in BAD])
def test_a_hostile_profile_stops_start_up_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    assert _cli_refusal(tmp_path, path) == f"modem-emulator: profile {path}: {message}"


def test_a_profile_with_one_command_loads_and_answers_error_to_the_rest(cli, tmp_path):
    host = Host(cli("--profile", str(write(tmp_path, ONE_COMMAND))).dev)
    for line in ("ATE0", "AT+CSQ", "ATI", "AT+QSSLCFG=?", "AT+QIGETERROR", "AT+CMEE=2"):
        assert host.at(line).endswith(ERROR), line
    assert host.at("AT") == b"AT\r\r\nOK\r\n"                           # (echo stays on: no ATE)
    assert host.at("AT+QSSLOPEN=?") == \
        b"AT+QSSLOPEN=?\r\r\n+QSSLOPEN: (1-16),(0-5),(0-11),<serveraddr>,<server_port>,(0-2)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLOPEN=1,0,0,\"x\",443,0") == b"AT+QSSLOPEN=1,0,0,\"x\",443,0\r\r\nERROR\r\n"


@pytest.mark.parametrize("content, message", [
    pytest.param(b"\xef\xbb\xbf" + EC2X.encode(), "not valid TOML: Invalid statement (at line 1, column 1): the file begins with a byte "
                 "order mark (U+FEFF, as some editors save UTF-8)", id="utf8-bom-as-notepad-saves"),
    pytest.param(EC2X.encode("utf-16"), "not valid TOML: 'utf-8' codec can't decode byte 0xff in position 0: "
                 "invalid start byte", id="utf-16"),
    pytest.param(b"# only a comment\n", "key profile.name: missing", id="comments-only"),
])
def test_an_editors_encoding_is_refused_in_one_line(tmp_path, content, message):
    path = write(tmp_path, content)
    assert _cli_refusal(tmp_path, path) == f"modem-emulator: profile {path}: {message}"


def test_a_profile_link_cycle_is_refused_in_one_line(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.symlink_to(b)
    b.symlink_to(a)
    assert _cli_refusal(tmp_path, a) == \
        f"modem-emulator: profile {a}: cannot read: Too many levels of symbolic links"


def test_a_profile_in_a_unicode_folder_loads(cli, tmp_path):
    folder = tmp_path / "профили ü"
    folder.mkdir()
    host = Host(cli("--profile", str(write(folder, BG96, "bg96 é.toml"))).dev)
    assert host.at("ATE0;+CGMM") == b"ATE0;+CGMM\r\r\nBG96\r\n\r\nOK\r\n"


def test_a_profile_cme_text_overrides_the_verbose_error(cli, tmp_path):
    text = derive(("[commands]\n", '[cme_text]\n"416" = "bad handle"\n\n[commands]\n'))
    host = modem(cli, tmp_path, text)
    assert host.at("AT+CMEE=2;+QFCLOSE=5") == b"\r\n+CME ERROR: bad handle\r\n"
    assert host.at("AT+CMEE=1;+QFCLOSE=5") == b"\r\n+CME ERROR: 416\r\n"


# ============================================================ part 3: were bugs, fixed
# Each of these loaded before and misbehaved later (a crash, a success code for a failure, a
# refusal split over lines, an answer cut, SEND FAIL on every long send); now the profile is
# refused at start-up with one line naming the key.

@pytest.mark.parametrize("old, new, shown", [
    pytest.param("[ssl]\n", '[ssl]\n"colour\\r\\nOK" = 1\n', "key ssl.colour\\r\\nOK: unknown key",
                 id="key-with-crlf"),
    pytest.param("[ssl]\n", '[ssl]\n"\\u001b[31mred" = 1\n', "key ssl.\\x1b[31mred: unknown key",
                 id="key-with-escape"),
    pytest.param("[profile]\n", '["a\\nb"]\nx = 1\n[profile]\n', "unknown section [a\\nb]", id="section-with-lf"),
    pytest.param('"+CSQ" = "*"', '"+CSQ\\n" = "*"', 'key commands."+CSQ\\n": no such command in the emulator',
                 id="command-with-lf"),
])
def test_a_hostile_key_name_is_refused_in_one_clean_line(tmp_path, old, new, shown):
    """Was a bug: the refusal printed the file's key as written -- CR LF split the "one line",
    an ESC drove the terminal.  Now control characters are shown escaped."""
    path = write(tmp_path, derive((old, new)))
    assert _cli_refusal(tmp_path, path) == f"modem-emulator: profile {path}: {shown}"


@pytest.mark.parametrize("key", ["fourteen", "O14", " 14", "0416", "-3", "70000"])
def test_a_cme_text_key_that_is_no_error_code_is_refused(tmp_path, key):
    """Was a bug: any [cme_text] key loaded and one that is no code was silently never used."""
    path = write(tmp_path, derive(("[commands]\n", f'[cme_text]\n"{key}" = "SIM busy"\n\n[commands]\n')))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == (f"profile {path}: key cme_text: key {key!r} is not a +CME ERROR code "
                                  f'(a number, 0-65535, as "416")')


@pytest.mark.parametrize("ids, message", [
    pytest.param('"0X_35"', "item 0: must be 0X and 1-4 hex digits, like \"0X0035\", got '0X_35'", id="underscore"),
    pytest.param('"0X000000035"', "item 0: must be 0X and 1-4 hex digits, like \"0X0035\", got '0X000000035'",
                 id="too-many-digits"),
    pytest.param('"0X002F", "0x2f"', "0X002F is listed twice", id="twice"),
])
def test_a_cipher_suite_id_the_module_would_not_take_is_refused(tmp_path, ids, message):
    """Was a bug: int(v, 16) took '0X_35' and '0X000000035', repeats were kept, and
    AT+QSSLCFG=? printed them as written."""
    path = write(tmp_path, derive(('dialect = "quectel"', f'cipher_suites = [{ids}]\ndialect = "quectel"')))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key ssl.cipher_suites: {message}"


def test_a_cipher_suite_id_is_shown_as_the_module_writes_it(cli, tmp_path):
    """A lower-case or short id is the module's "0X" and four upper-case digits on the wire."""
    text = derive(('dialect = "quectel"', 'cipher_suites = ["0x002f", "0X35", "0xc02F"]\ndialect = "quectel"'))
    host = modem(cli, tmp_path, text)
    assert b'+QSSLCFG: "ciphersuite",(0-5),(0X002F,0X0035,0XC02F,0XFFFF)\r\n' in host.at("AT+QSSLCFG=?")


@pytest.mark.parametrize("code", [0, -0])
def test_a_failure_cannot_be_mapped_to_the_success_code(tmp_path, code):
    """Was a bug: dns = 0 loaded, and an open to an unknown name reported '+QSSLOPEN: 2,0'
    (success) and AT+QIGETERROR '0,operate successfully'."""
    path = write(tmp_path, derive(("dns = 565 ", f"dns = {code} ")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key ssl.errors: [dns] must not be 0 (the success code)"


def test_a_profile_string_longer_than_a_module_line_is_refused(tmp_path):
    """Was a bug: an ati line of 300,000 characters loaded and ATI, written whole, lost its
    start past a 256 KiB output backlog although the host read all the time."""
    path = write(tmp_path, derive(('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
                                   f'ati = ["{"A" * 2049}"]')))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key identity.ati: item 0: 2049 characters: at most 2048"
    path = write(tmp_path, derive(('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
                                   "ati = [" + ", ".join(['"x"'] * 33) + "]")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key identity.ati: must have 1..32 items, got 33"


def test_the_longest_ati_line_a_profile_takes_reaches_the_host_whole(cli, tmp_path):
    line = "B" * 2048
    host = modem(cli, tmp_path, derive(('ati = ["Quectel", "EC25", "Revision: EC25EFAR06A06M4G"]',
                                        f'ati = ["{line}", "{line}"]')))
    assert host.at("ATI") == f"\r\n{line}\r\n{line}\r\n\r\nOK\r\n".encode()


@pytest.mark.parametrize("table, old, new, message", [
    pytest.param("ssl", "send_buffer = 16384             # bytes queued towards the network before SEND FAIL\nrecv_buffer",
                 "send_buffer = 100\nrecv_buffer",
                 "key ssl.send_buffer: 100 is less than ssl.send_max = 1460 (a send that long could never be queued)",
                 id="ssl"),
    pytest.param("tcpip", "send_buffer = 16384             # bytes queued towards the network before SEND FAIL\n"
                          "recv_buffer = 65536             # bytes held for AT+QIRD",
                 "send_buffer = 1000\nrecv_buffer = 65536             # bytes held for AT+QIRD",
                 "key tcpip.send_buffer: 1000 is less than tcpip.send_max = 1460 (a send that long could never "
                 "be queued)", id="tcpip"),
])
def test_a_send_buffer_smaller_than_the_largest_send_is_refused(tmp_path, table, old, new, message):
    """Was a bug: send_buffer = 100 loaded; AT+QSSLSEND=? offered (1-1460) and every send over
    100 bytes on an idle connection was SEND FAIL."""
    path = write(tmp_path, derive((old, new)))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: {message}"


def _no_error_table(text: str, next_section: str) -> str:
    return text[:text.index("\n[ssl.errors]")] + text[text.index(next_section):]


@pytest.mark.parametrize("family", ["onemo", "quectel"])
def test_leaving_out_the_error_table_is_refused(tmp_path, family):
    """Was a bug: without [ssl.errors] every failed open reported 550 -- an ML302 copy
    '+QSSLOPEN: 0,550' where the OneMO family has only -1."""
    text = _no_error_table(ML307, "\n[commands]") if family == "onemo" else _no_error_table(EC2X, "\n[tcpip]")
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key ssl.errors: missing"


def test_an_error_table_without_its_catch_all_is_refused(tmp_path):
    path = write(tmp_path, derive(("unknown = 550\n", "")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == (f'profile {path}: key ssl.errors: no "unknown" (the code of every failure '
                                  f"kind the table does not list)")


def test_a_long_cipher_suite_list_is_refused(tmp_path):
    """Was a bug: 9,001 ids (repeats) loaded and the first 0XFFFF open killed the emulator
    with SIGSEGV inside python-mbedtls (over ~170 cipher names) or failed 566."""
    suites = ", ".join(['"0X002F"'] * 9000 + ['"0XC02F"'])
    path = write(tmp_path, derive(('dialect = "quectel"', f"cipher_suites = [{suites}]\ndialect = \"quectel\"")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key ssl.cipher_suites: 0X002F is listed twice"


def test_a_baud_rate_of_zero_is_refused(tmp_path):
    """AT+IPR=? adds 0 (auto-baud) itself: a 0 in serial.baud_rates showed it twice."""
    path = write(tmp_path, derive(("baud_rates = [", "baud_rates = [0, ")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key serial.baud_rates: item 0: must be in 1..4000000, got 0"


def test_a_baud_rate_listed_twice_is_refused(tmp_path):
    path = write(tmp_path, derive(("baud_rates = [", "baud_rates = [9600, ")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert str(refusal.value) == f"profile {path}: key serial.baud_rates: 9600 is listed twice"
