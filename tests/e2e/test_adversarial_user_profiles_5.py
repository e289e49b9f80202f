"""User profiles, fifth round: a Quectel BG95-like third family member written as a user
would (a copy of ec2x.toml with 3 SSL contexts, 4 sockets in one pool with AT+QIOPEN, PDP
contexts 1-5, its own +QSSLOPEN error codes, AT+CMEE=2 by default, <at_port> "uart1", the BG96
option list with checkhost/ignorecertchain, two baud rates, a timing.response_delay_ms entry).

Angles the earlier rounds (test_adversarial_user_profiles{,_2,_3,_4}.py, test_ssl_profiles.py)
did not take: two modems of different profiles in ONE emulator process (both orders of
creation), compared byte for byte so nothing of one profile (ranges, codes, options, delays,
defaults, at_port, baud rates, settings written at run time) shows on the other; AT+QSSLSTATE of
a connected socket carrying the user's <at_port>; a trace recorded on the user's profile replays
on it and reports the first difference when the user then edits an error code; refusals of the
BG95 file (type, range, unknown key, "extends", a command the code lacks, empty tables), and a
duplicate key, which README promises to name.

Bugs this round found, fixed with these tests: a key given twice was refused with tomllib's
"Cannot overwrite a value (at line N, column M)", which does not name the key (profile.py
_toml_where now says "key identity.model is given twice"); timing.response_delay_ms did not
hold the answers the interpreter gives without a handler (AT+CGMM=? OK, AT+CGMM? ERROR came at
once; Interpreter._dispatch now delays every form)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, cli_factory, refused

EC2X = (PROFILE_DIR / "ec2x.toml").read_text()
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
PDP_UP = ('AT+QICSGP=1,1,"UNINET","","",1', "AT+QIACT=1")
NOWHERE = "nowhere.invalid"          # not routed: with --offline its lookup fails (the dns kind)


def derive(text: str, *edits: tuple[str, str]) -> str:
    for old, new in edits:
        assert old in text, f"anchor {old!r} is not in the profile any more"
        text = text.replace(old, new, 1)
    return text


BG95 = derive(
    EC2X,
    ('name = "ec2x"', 'name = "bg95-user"'),
    ('model = "EC25"', 'model = "BG95"'),
    ("contexts = 6                    # <SSL_ctxID> 0-5", "contexts = 3"),
    ("sockets = 12                    # <clientID> 0-11", "sockets = 4"),
    ("sockets = 12                    # <connectID> 0-11", "sockets = 4 #"),
    ('at_port = "usbmodem"            # <at_port>', 'at_port = "uart1" #'),
    ("dns = 565", "dns = 701"),
    ("connect = 566", "connect = 702"),
    ("unknown = 550", "unknown = 799"),
    ("send_max = 1460                 # AT+QSSLSEND", "send_max = 100 #"),
    ("last_id = 16", "last_id = 5"),
    ("cmee = 1", "cmee = 2"),
    ("baud_rates = [4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 3000000]",
     "baud_rates = [9600, 115200]"),
    ('"ignorelocaltime", "negotiatetime", "sni", "closetimemode", "ignoremulticertchainverify",\n'
     '  "ignoreinvalidcertsign", "psk", "dtls", "dtlsversion", "session_cache", "alpn", "renegotiation",',
     '"checkhost", "ignorecertchain",'),
    ("# [timing]", '[timing]\nresponse_delay_ms = { "+CGMM" = 400 }\n'),
)


def write(tmp_path: Path, text: str, name: str = "bg95.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def pdp_up(host: Host) -> None:
    for line in PDP_UP:
        assert host.at(line) == OK, line


def open_result(host: Host, client_id: int, server: str, timeout: float = 10) -> bytes:
    """AT+QSSLOPEN=1,1,<id>,<server>,443,0: OK, then the +QSSLOPEN URC line (bytes)."""
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{server}",443,0') == OK
    return host.read_until(re.compile(rb"\+QSSLOPEN: \d+,-?\d+\r\n"), timeout=timeout)


# What each profile answers, byte for byte (the user's and the built-in one).
EXPECT = {
    "bg95": {
        "AT+CGMM": b"\r\nBG95\r\n" + OK,
        "AT+CMEE?": b"\r\n+CMEE: 2\r\n" + OK,
        "AT+QSSLOPEN=?": b"\r\n+QSSLOPEN: (1-5),(0-2),(0-3),<serveraddr>,<server_port>,(0-2)\r\n" + OK,
        "AT+QSSLSEND=?": b"\r\n+QSSLSEND: (0-3),(1-100)\r\n" + OK,
        "AT+QIOPEN=?": b'\r\n+QIOPEN: (1-5),(0-3),"TCP/UDP/TCP LISTENER/UDP SERVICE",'
                       b'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)\r\n' + OK,
        "AT+IPR=?": b"\r\n+IPR: (0,9600,115200),(0)\r\n" + OK,
        'AT+QSSLCFG="checkhost",2': b'\r\n+QSSLCFG: "checkhost",2,1\r\n' + OK,
        'AT+QSSLCFG="sni",2': ERROR,
        'AT+QSSLCFG="seclevel",3': ERROR,
        "AT+IPR=19200": ERROR,
    },
    "ec2x": {
        "AT+CGMM": b"\r\nEC25\r\n" + OK,
        "AT+CMEE?": b"\r\n+CMEE: 1\r\n" + OK,
        "AT+QSSLOPEN=?": b"\r\n+QSSLOPEN: (1-16),(0-5),(0-11),<serveraddr>,<server_port>,(0-2)\r\n" + OK,
        "AT+QSSLSEND=?": b"\r\n+QSSLSEND: (0-11),(1-1460)\r\n" + OK,
        "AT+QIOPEN=?": b'\r\n+QIOPEN: (1-16),(0-11),"TCP/UDP/TCP LISTENER/UDP SERVICE",'
                       b'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)\r\n' + OK,
        "AT+IPR=?": b"\r\n+IPR: (0,4800,9600,19200,38400,57600,115200,230400,460800,921600,3000000),(0)\r\n" + OK,
        'AT+QSSLCFG="checkhost",2': ERROR,
        'AT+QSSLCFG="sni",2': b'\r\n+QSSLCFG: "sni",2,0\r\n' + OK,
        'AT+QSSLCFG="seclevel",3': b'\r\n+QSSLCFG: "seclevel",3,0\r\n' + OK,
        "AT+IPR=19200": OK,
    },
}


@pytest.fixture
def pair(open_modem, tmp_path, request):
    """{"bg95": Host, "ec2x": Host} in one emulator process, created in the order the param
    gives (a cache filled by whichever modem asks first would show)."""
    path = str(write(tmp_path, BG95))
    hosts = {}
    for which in request.param:
        hosts[which], _ = open_modem(path if which == "bg95" else "ec2x")
    return hosts


ORDERS = pytest.mark.parametrize("pair", [("bg95", "ec2x"), ("ec2x", "bg95")], indirect=True,
                                 ids=["user-first", "ec2x-first"])


@ORDERS
def test_two_profiles_in_one_process_answer_each_their_own(pair):
    for which in ("bg95", "ec2x", "bg95"):           # interleaved: no answer leaks across
        host = pair[which]
        for line, want in EXPECT[which].items():
            assert host.at(line) == want, (which, line)


@ORDERS
def test_run_time_settings_of_one_modem_do_not_reach_the_other(pair):
    bg, ec = pair["bg95"], pair["ec2x"]
    assert bg.at('AT+QSSLCFG="checkhost",0,0') == OK
    assert bg.at('AT+QSSLCFG="seclevel",0,2') == OK
    assert bg.at("AT+CMEE=0") == OK
    assert ec.at('AT+QSSLCFG="seclevel",0') == b'\r\n+QSSLCFG: "seclevel",0,0\r\n' + OK
    assert ec.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
    assert ec.at('AT+QSSLCFG="sni",0,1') == OK
    assert ec.at("AT+CMEE=2") == OK
    assert bg.at('AT+QSSLCFG="checkhost",0') == b'\r\n+QSSLCFG: "checkhost",0,0\r\n' + OK
    assert bg.at('AT+QSSLCFG="checkhost",1') == b'\r\n+QSSLCFG: "checkhost",1,1\r\n' + OK
    assert bg.at("AT+CMEE?") == b"\r\n+CMEE: 0\r\n" + OK
    assert bg.at('AT+QSSLCFG="sni",0,1') == ERROR       # still not a BG95 option


@ORDERS
def test_each_modem_reports_its_own_error_codes_and_socket_range(pair, emulator):
    bg, ec = pair["bg95"], pair["ec2x"]
    pdp_up(bg)
    pdp_up(ec)
    assert open_result(bg, 3, NOWHERE) == b"\r\n+QSSLOPEN: 3,701\r\n"
    assert open_result(ec, 3, NOWHERE) == b"\r\n+QSSLOPEN: 3,565\r\n"
    assert bg.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 701,")
    assert ec.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,DNS parse failed\r\n" + OK
    # clientID 4 is past the user's pool of 4, and a PDP context 6 past its 1-5
    assert bg.at(f'AT+QSSLOPEN=1,1,4,"{NOWHERE}",443,0') == ERROR
    assert bg.at("AT+QIGETERROR") == E552
    assert bg.at(f'AT+QSSLOPEN=6,1,2,"{NOWHERE}",443,0') == ERROR
    assert open_result(ec, 4, NOWHERE) == b"\r\n+QSSLOPEN: 4,565\r\n"
    # a refused TCP connect: the connect kind (702 vs 566)
    emulator.router.add_map("refused.example", 443, "127.0.0.1", _closed_port())
    assert open_result(bg, 0, "refused.example") == b"\r\n+QSSLOPEN: 0,702\r\n"
    assert open_result(ec, 0, "refused.example") == b"\r\n+QSSLOPEN: 0,566\r\n"


def _closed_port() -> int:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@ORDERS
def test_qsslstate_of_a_connected_socket_shows_each_profiles_at_port(pair, echo):
    for which, port_name in (("bg95", b'"uart1"'), ("ec2x", b'"usbmodem"')):
        host = pair[which]
        pdp_up(host)
        assert open_result(host, 3, "echo.example") == b"\r\n+QSSLOPEN: 3,0\r\n"
        state = host.at("AT+QSSLSTATE=3")
        assert re.fullmatch(rb'\r\n\+QSSLSTATE: 3,"SSLClient","echo\.example",443,\d+,2,1,3,0,'
                            + re.escape(port_name) + rb",1\r\n\r\nOK\r\n", state), (which, state)
        assert host.at("AT+QSSLSTATE") == state
        assert host.at("AT+QSSLCLOSE=3") == OK


@ORDERS
def test_the_response_delay_is_only_the_user_modems(pair):
    bg, ec = pair["bg95"], pair["ec2x"]
    t0 = time.monotonic()
    assert ec.at("AT+CGMM") == b"\r\nEC25\r\n" + OK
    fast = time.monotonic() - t0
    t0 = time.monotonic()
    assert bg.at("AT+CGMM") == b"\r\nBG95\r\n" + OK
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    assert bg.at("AT+CGMI") == b"\r\nQuectel\r\n" + OK      # only +CGMM is held back
    other = time.monotonic() - t0
    assert slow >= 0.38, slow
    assert fast < 0.3 and other < 0.3, (fast, other)


# ------------------------------------------------------------------ CLI, trace and replay

@pytest.fixture
def cli(tmp_path):
    yield from cli_factory(tmp_path)


def test_cli_records_the_user_profile_and_replay_notices_an_edited_code(cli, tmp_path):
    profile = write(tmp_path, BG95)
    trace = tmp_path / "bg95.trace"
    emu = cli("--profile", str(profile), "--trace", str(trace))
    host = Host(emu.dev)
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    assert host.at("AT+QSSLOPEN=?") == EXPECT["bg95"]["AT+QSSLOPEN=?"]
    pdp_up(host)
    assert open_result(host, 2, NOWHERE) == b"\r\n+QSSLOPEN: 2,701\r\n"
    assert host.at("AT+QSSLOPEN=1,1,4,\"x\",443,0") == ERROR
    host.close()
    emu.stop()

    def replay(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", "replay", str(trace), "--profile", str(path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=20)

    same = replay(profile)
    assert same.returncode == 0, (same.stdout, same.stderr)
    edited = write(tmp_path, derive(BG95, ("dns = 701", "dns = 703")), "bg95-edited.toml")
    diff = replay(edited)
    assert diff.returncode == 1, (diff.stdout, diff.stderr)
    out = diff.stdout + diff.stderr
    assert "701" in out and "703" in out, out


# ------------------------------------------------------------------ refusals

REFUSALS = [
    ("wrong-type", ("sockets = 4\n", 'sockets = "4"\n'), "key ssl.sockets: must be an integer"),
    ("float-count", ("sockets = 4\n", "sockets = 4.0\n"), "key ssl.sockets: must be an integer"),
    ("out-of-range", ("contexts = 3", "contexts = 65"), "key ssl.contexts: must be in 1..64"),
    ("unknown-key", ('model = "BG95"', 'model = "BG95"\nmodle = "BG95"'), "key identity.modle: unknown key"),
    ("extends", ('name = "bg95-user"', 'name = "bg95-user"\nextends = "ec2x"'), "key profile.extends: unknown key"),
    ("unknown-section", ("[timing]", "[inherit]\nfrom = \"ec2x\"\n\n[timing]"), "unknown section [inherit]"),
    ("command-the-code-lacks", ('"+QSSLOPEN" = "quectel"', '"+QSSLOPEN" = "quectel"\n"+QSSLCERT" = "*"'),
     'key commands."+QSSLCERT": no such command in the emulator'),
    ("unknown-variant", ('"+QSSLOPEN" = "quectel"', '"+QSSLOPEN" = "bg95"'),
     "key commands.\"+QSSLOPEN\": unknown variant 'bg95'"),
    ("delay-of-an-unlisted-command", ('"+CGMM" = 400', '"+QSSLCERT" = 400'),
     "key timing.response_delay_ms.\"+QSSLCERT\": not a command of the profile's [commands]"),
    ("negative-delay", ('"+CGMM" = 400', '"+CGMM" = -1'), "key timing.response_delay_ms: [+CGMM] must be in 0..600000"),
    ("unknown-timing-key", ("[timing]\n", "[timing]\nresponse_delay = 5\n"), "key timing.response_delay: unknown key"),
    ("error-code-type", ("dns = 701", 'dns = "701"'), "key ssl.errors: [dns] must be an integer"),
    ("error-code-range", ("dns = 701", "dns = 100000"), "key ssl.errors: [dns] must be in -1000..1000"),
    ("error-kind", ("dns = 701", "resolve = 701"), "key ssl.errors: 'resolve' is not a failure kind"),
    ("pool-mismatch", ("sockets = 4 #", "sockets = 5 #"),
     "key tcpip.sockets: 5, but SSL clientIDs and TCP/IP connectIDs are one pool of ssl.sockets = 4"),
    ("ipr-not-a-rate", ("ipr = 115200", "ipr = 19200"), "key defaults.ipr: 19200 is not 0 (auto-baud) or one of serial.baud_rates"),
    ("empty-baud-list", ("baud_rates = [9600, 115200]", "baud_rates = []"), "key serial.baud_rates: must have 1..10000 items"),
    ("empty-sub-table", ("[ssl.errors]", "[ssl.errors]\n[ssl.extra]"), "key ssl.extra: unknown key"),
    ("empty-profile-table", ('name = "bg95-user"', ""), "key profile.name: missing"),
    ("option-of-the-other-family", ('"checkhost", "ignorecertchain",', '"checkhost", "verifyhost",'),
     "key ssl.options: 'verifyhost' is not an AT+QSSLCFG option of dialect 'quectel'"),
]


@pytest.mark.parametrize("edit_, message", [pytest.param(e, m, id=i) for i, e, m in REFUSALS])
def test_a_broken_bg95_is_refused_naming_the_key(tmp_path, edit_, message):
    path = write(tmp_path, derive(BG95, edit_))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    text = str(info.value)
    assert "\n" not in text and str(path) in text and message in text, text


@pytest.mark.parametrize("edit_, message", [pytest.param(e, m, id=i) for i, e, m in REFUSALS[:6:2]])
def test_the_cli_refuses_a_broken_bg95_in_one_line(tmp_path, edit_, message):
    path = write(tmp_path, derive(BG95, edit_))
    code, out, err = refused("--offline", "--state-dir", str(tmp_path / "st"), "--link",
                             str(tmp_path / "modem"), "--profile", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (code, err)
    assert not (tmp_path / "st").exists() and not (tmp_path / "modem").exists()


# Was a bug, fixed (see the module docstring).
def test_a_duplicate_key_is_refused_naming_the_key(tmp_path):
    path = write(tmp_path, derive(BG95, ('model = "BG95"', 'model = "BG95"\nmodel = "BG96"')))
    code, out, err = refused("--offline", "--state-dir", str(tmp_path / "st"), "--link",
                             str(tmp_path / "modem"), "--profile", str(path))
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    assert "key identity.model is given twice" in err, err


# ------------------------------------------------------------------ cipher tables side by side

BG95_SUITES = derive(BG95, ("handshake_failed = 566", "handshake_failed = 703"),
                     ('dialect = "quectel"', 'cipher_suites = ["0X002F", "0X0035"]\ndialect = "quectel"'))


@pytest.mark.parametrize("first", ["user", "ec2x"])
def test_each_modem_offers_its_own_cipher_table(open_modem, emulator, tmp_path, pki, first):
    """0XFFFF is the profile's table: a server that takes only ECDHE-RSA-AES128-GCM-SHA256 is
    reached by the EC2x and refused by the BG95 (its 703), whichever modem was made first."""
    from emulator.testing.peers import TlsServer
    path = str(write(tmp_path, BG95_SUITES, "bg95-suites.toml"))
    order = ["user", "ec2x"] if first == "user" else ["ec2x", "user"]
    hosts = {w: open_modem(path if w == "user" else "ec2x")[0] for w in order}
    assert hosts["user"].at('AT+QSSLCFG="ciphersuite",1') == b'\r\n+QSSLCFG: "ciphersuite",1,0XFFFF\r\n' + OK
    with TlsServer(pki.server, max_version="TLSv1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256") as gcm, \
            TlsServer(pki.server, max_version="TLSv1.2", ciphers="AES256-SHA") as cbc:
        emulator.router.add_map("gcm.example", 443, "127.0.0.1", gcm.address[1])
        emulator.router.add_map("cbc.example", 443, "127.0.0.1", cbc.address[1])
        for w in order:
            pdp_up(hosts[w])
        assert open_result(hosts["user"], 1, "gcm.example") == b"\r\n+QSSLOPEN: 1,703\r\n"
        assert open_result(hosts["ec2x"], 1, "gcm.example") == b"\r\n+QSSLOPEN: 1,0\r\n"
        assert open_result(hosts["user"], 2, "cbc.example") == b"\r\n+QSSLOPEN: 2,0\r\n"
        assert open_result(hosts["ec2x"], 2, "cbc.example") == b"\r\n+QSSLOPEN: 2,0\r\n"


# ------------------------------------------------------------------ timing.response_delay_ms per form

# Was a bug, fixed (see the module docstring).
def test_the_response_delay_holds_every_form_of_the_command(open_modem, tmp_path):
    host, _ = open_modem(str(write(tmp_path, BG95)))
    for line, want in (("AT+CGMM", b"\r\nBG95\r\n" + OK), ("AT+CGMM=?", OK), ("AT+CGMM?", ERROR)):
        t0 = time.monotonic()
        assert host.at(line) == want, line
        assert time.monotonic() - t0 >= 0.38, line


def test_the_response_delay_holds_a_handled_error_and_test_form(open_modem, tmp_path):
    path = write(tmp_path, derive(BG95, ('"+CGMM" = 400', '"+CGMM" = 400, "+QSSLOPEN" = 300')))
    host, _ = open_modem(str(path))
    for line in ("AT+QSSLOPEN=?", "AT+QSSLOPEN?", 'AT+QSSLOPEN=1,1,9,"a",443,0'):
        t0 = time.monotonic()
        host.at(line)
        assert time.monotonic() - t0 >= 0.28, line
