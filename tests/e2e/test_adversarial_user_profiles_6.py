"""User profiles, sixth round: an EG800K-like third family member written as a copy of
ec2x.toml (2 SSL contexts, 3 sockets in one pool with AT+QIOPEN, PDP contexts 1-3, send_max
200, its own +QSSLOPEN codes, its own pdpdeact URC wording, AT+QSSLSTATE / AT+QISENDEX /
GNSS removed) driven end to end through a real OpenSSL echo peer; the profile file edited,
broken and deleted on disk while the emulator runs (in process and through the CLI: nothing
changes until a new modem is made from it, not even on AT+CFUN=1,1 or a control reboot);
non-ASCII [commands] names that Python's str.upper() folds onto ASCII commands.
Found and fixed: such names were taken for the ASCII command; a profile line that is a final
result code ("OK" as the model) loaded and ended answers early; --profile /dev/zero read all
memory; add_modem took no pathlib.Path profile.

Not repeated here: the BG77/BG95/BG96/ML307/A7670 copies and the refusals of rounds 1-5
(test_adversarial_user_profiles{,_2,_3,_4,_5}.py), two profiles in one process (round 5).
"""
from __future__ import annotations

import re
import time

import pytest

from emulator.modem.profile import ProfileError, load_profile
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, cli_factory
from tests.e2e.profile_support import EC2X
from tests.e2e.test_adversarial_user_profiles_5 import derive, write

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n" + OK

EG800K = derive(
    EC2X,
    ('name = "ec2x"', 'name = "eg800k-u6"'),
    ('model = "EC25"', 'model = "EG800K"'),
    ("contexts = 6                    # <SSL_ctxID> 0-5", "contexts = 2"),
    ("sockets = 12                    # <clientID> 0-11", "sockets = 3"),
    ("sockets = 12                    # <connectID> 0-11", "sockets = 3 #"),
    ("send_max = 1460                 # AT+QSSLSEND", "send_max = 200 #"),
    ("dns = 565", "dns = 611"),
    ("unknown = 550", "unknown = 612"),
    ("last_id = 16", "last_id = 3"),
    ("deact_urc = '+QIURC: \"pdpdeact\",{cid}'", "deact_urc = '+QIURC: PDP {cid} lost'"),
    ('"+QSSLSTATE" = "quectel"', ""),
    ('"+QISENDEX" = "*"', ""),
    ('"+QGPS" = "*"', ""),
    ('"+QGPSLOC" = "*"', ""),
    ('"+CGSN" = "*"', ""),                  # AT+GSN, its alias, stays
)


def _restart(host: Host) -> None:
    """AT+CFUN=1,1: OK, then the boot URCs up to the last (echo back on: ATE0 again)."""
    host.write(b"AT+CFUN=1,1\r")
    host.read_until(b"+QIND: PB DONE\r\n", timeout=10)
    assert host.at("ATE0").endswith(OK)


def _open(host: Host, ctx: int, cid: int, server: str) -> bytes:
    assert host.at(f'AT+QSSLOPEN=1,{ctx},{cid},"{server}",443,0') == OK
    return host.read_until(re.compile(rb"\+QSSLOPEN: \d+,-?\d+\r\n"), timeout=10)


def _recv_all(host: Host, cid: int, want: int, timeout: float = 8) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        answer = host.at(f"AT+QSSLRECV={cid},1500")
        m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
        assert m, answer
        got += answer[m.end():m.end() + int(m.group(1))]
        if not int(m.group(1)):
            time.sleep(0.05)
    return got


@pytest.fixture
def eg800k(open_modem, tmp_path):
    host, port = open_modem(str(write(tmp_path, EG800K, "eg800k.toml")))
    host.modem = port.modem
    return host


# ------------------------------------------------------------------ the third family end to end

def test_eg800k_ranges_and_removed_commands(eg800k):
    assert eg800k.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
    assert eg800k.at("AT+QSSLOPEN=?") == (b"\r\n+QSSLOPEN: (1-3),(0-1),(0-2),<serveraddr>,<server_port>,(0-2)\r\n"
                                          + OK)
    assert eg800k.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-2),(1-200)\r\n" + OK
    for removed in ("AT+QSSLSTATE", "AT+QSSLSTATE=?", "AT+QSSLSTATE=0", 'AT+QISENDEX=0,"41"',
                    "AT+QGPS=1", "AT+QGPSLOC=0"):
        assert eg800k.at(removed) == ERROR, removed
    assert eg800k.at("AT+CGSN") == ERROR
    assert eg800k.at("AT+GSN") == b"\r\n867698041234567\r\n" + OK
    for bad in ('AT+QSSLOPEN=1,2,0,"echo.example",443,0', 'AT+QSSLOPEN=1,1,3,"echo.example",443,0',
                'AT+QSSLOPEN=4,1,0,"echo.example",443,0', 'AT+QIOPEN=1,3,"TCP","127.0.0.1",80,0,0',
                'AT+QICSGP=4,1,"x","","",1', "AT+QIACT=4", 'AT+QSSLCFG="seclevel",2,0'):
        assert eg800k.at(bad) == ERROR, bad
        assert eg800k.at("AT+QIGETERROR") == E552, bad


def test_eg800k_sockets_through_an_openssl_echo_peer(eg800k, echo, emulator):
    """The three ids of the pool carry data byte-exact; a fourth is refused; the 200-byte
    send limit holds; an unresolvable name reports the profile's own 611."""
    assert eg800k.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    for cid, ctx in ((0, 0), (1, 1), (2, 1)):
        assert _open(eg800k, ctx, cid, "echo.example") == f"\r\n+QSSLOPEN: {cid},0\r\n".encode()
    payload = bytes(range(256))[:200]
    for cid in range(3):
        data = bytes([(b + cid) % 256 for b in payload])
        eg800k.write(f"AT+QSSLSEND={cid},200\r".encode())
        eg800k.read_until(b"> ")
        eg800k.write(data)
        assert eg800k.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")).endswith(b"SEND OK\r\n")
        assert _recv_all(eg800k, cid, 200) == data, cid
    assert eg800k.at("AT+QSSLSEND=1,201") == ERROR
    assert eg800k.at("AT+QIGETERROR") == E552
    # the pool is full (TCP/IP shares it): every id is in use
    assert eg800k.at('AT+QIOPEN=1,2,"TCP","127.0.0.1",80,0,0') == OK     # docs: OK, then 563
    assert eg800k.read_until(b"+QIOPEN: 2,563\r\n", timeout=5).endswith(b"\r\n+QIOPEN: 2,563\r\n")
    assert eg800k.at("AT+QSSLCLOSE=0") == OK
    # the network takes context 1 down: its sockets close, the URC is the profile's wording
    emulator.run(eg800k.modem.network_deactivated_pdp, 1)
    eg800k.read_until(b"+QIURC: PDP 1 lost\r\n", timeout=5)
    for cid in (1, 2):
        assert eg800k.seen(f'+QSSLURC: "closed",{cid}\r\n'.encode()), cid
    assert b"pdpdeact" not in eg800k.transcript
    for cid in (1, 2):
        assert eg800k.at(f"AT+QSSLCLOSE={cid}") == OK
    assert eg800k.at("AT+QIACT=1") == OK
    assert _open(eg800k, 0, 1, "nowhere.invalid") == b"\r\n+QSSLOPEN: 1,611\r\n"
    assert eg800k.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 611,")


# ------------------------------------------------------------------ the file changed on disk

def test_a_profile_edited_on_disk_does_not_reach_a_running_modem(emulator, open_modem, tmp_path):
    path = write(tmp_path, EG800K, "live.toml")
    host, _ = open_modem(str(path))
    before = {cmd: host.at(cmd) for cmd in ("AT+CGMM", "AT+QSSLOPEN=?", "AT+QSSLSTATE", "ATI")}
    assert before["AT+CGMM"] == b"\r\nEG800K\r\n" + OK
    path.write_text(derive(EG800K, ('model = "EG800K"', 'model = "EDITED"'),
                           ("contexts = 2", "contexts = 5"), ('"+QSSLSEND" = "quectel"', "")))
    _restart(host)                                              # AT+CFUN=1,1
    assert emulator.control("reboot", modem=0)["ok"]            # a PWRKEY pulse
    host.read_until(b"+QIND: PB DONE\r\n", timeout=10)
    assert host.at("ATE0").endswith(OK)
    assert {cmd: host.at(cmd) for cmd in before} == before
    assert host.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-2),(1-200)\r\n" + OK
    # a new modem from the same path takes the edited file
    fresh, _ = open_modem(str(path))
    assert fresh.at("AT+CGMM") == b"\r\nEDITED\r\n" + OK
    assert fresh.at("AT+QSSLSEND=?") == ERROR
    assert host.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
    # broken, then gone: the running modems do not notice
    path.write_text("this is [not toml")
    _restart(host)
    assert host.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
    path.unlink()
    _restart(fresh)
    assert fresh.at("AT+CGMM") == b"\r\nEDITED\r\n" + OK
    with pytest.raises(ProfileError):
        load_profile(str(path))


@pytest.fixture
def cli(tmp_path):
    yield from cli_factory(tmp_path)


def test_the_cli_keeps_its_profile_when_the_file_is_broken_and_deleted(cli, tmp_path):
    path = write(tmp_path, EG800K, "cli.toml")
    emu = cli("--profile", str(path))
    host = Host(emu.dev)
    try:
        assert host.at("ATE0").endswith(OK)
        assert host.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
        path.write_text(EG800K.replace("[ssl]", "[ssl]\nbogus = 1", 1))
        _restart(host)
        assert host.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
        assert host.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-2),(1-200)\r\n" + OK
        path.unlink()
        _restart(host)
        assert host.at("AT+QSSLOPEN=?").startswith(b"\r\n+QSSLOPEN: (1-3),(0-1),(0-2),")
        assert "bogus" not in emu.log(), emu.log()
    finally:
        host.close()
    emu.stop()                  # exit 0, no traceback, no ERROR record (cli_support.Cli.stop)


# ------------------------------------------------------------------ unicode command names

# (were strict xfails, BUG, fixed: profile.validate refuses a non-ASCII [commands] name; _wire
# refuses a whole-line string that reads as a final result code; load_profile reads at most
# PROFILE_MAX bytes; Emulator.add_modem loads a pathlib.Path profile as a str one)


@pytest.mark.parametrize("old, new", [
    pytest.param('"+QIOPEN" = "*"', '"+Q\u0131OPEN" = "*"', id="dotless-i"),
    pytest.param('"+QSSLOPEN" = "quectel"', '"+Q\u017fSLOPEN" = "quectel"', id="long-s"),
    pytest.param('"+CGMM" = "*"', '"+CGMM\ufe0f" = "*"', id="variation-selector"),
    pytest.param('"+CGMM" = "*"', '"+\uff23GMM" = "*"', id="fullwidth-c"),
])
def test_a_non_ascii_command_name_is_not_taken_for_an_ascii_one(tmp_path, old, new):
    """README: "[commands] names are case-insensitive" -- AT command names are ASCII; a key
    no host can type must be refused naming it, not folded by str.upper() onto a command."""
    path = write(tmp_path, derive(EC2X, (old, new)), "uni.toml")
    try:
        profile = load_profile(str(path))
    except ProfileError as exc:
        assert "commands." in str(exc) and "\n" not in str(exc)
        return
    pytest.fail(f"loaded; its commands hold {sorted(k for k in profile.data['commands'] if 'OPEN' in k or 'CGMM' in k)}")


# ------------------------------------------------------------------ a value that is a result code

@pytest.mark.parametrize("old, new", [
    ('model = "EC25"', 'model = "OK"'),
    ('ati = ["Quectel", "EC25",', 'ati = ["Quectel", "OK",'),
    ('manufacturer = "Quectel"', 'manufacturer = "ERROR"'),
    ('boot_urcs = ["RDY", "+CFUN: 1",', 'boot_urcs = ["RDY", "OK",'),
    ('revision = "EC25EFAR06A06M4G"', 'revision = "OK"'),
    ('me_detach = "+CGEV: ME DETACH"', 'me_detach = "OK"'),
], ids=["model", "ati", "manufacturer", "boot-urc", "revision", "cgev-urc"])
def test_a_line_that_is_a_final_result_code_is_refused(tmp_path, old, new):
    """profile.py _wire: a profile string must not "break a response's framing (CR, LF: a
    line of its own, a fake OK)" -- a value shown as a line of its own that IS "OK" or
    "ERROR" is that fake final result."""
    path = write(tmp_path, derive(EC2X, (old, new)), "fake_ok.toml")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert new.split(" = ")[0].strip('"') in str(info.value)



# ------------------------------------------------------------------ a profile with no end

@pytest.mark.parametrize("option", ["--profile", "--config", "--scenario"])
def test_a_settings_file_that_never_ends_is_refused_in_one_line(tmp_path, option):
    """README: a refused profile is one line and exit 2.  Under a 1.5 GB address-space limit
    (so the test cannot starve the machine) the CLI must refuse a profile path that is a
    character device / never reaches its end, not read it until memory runs out."""
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    proc = subprocess.run([sys.executable, "-m", "emulator", "--offline", option, "/dev/zero",
                           "--state-dir", str(tmp_path / "state"), "--link", str(tmp_path / "modem")],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=20, preexec_fn=limit)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "/dev/zero" in lines[0], (proc.returncode,
                                                                                  proc.stderr[-500:])


# ------------------------------------------------------------------ the in-process API and a Path

def test_add_modem_takes_a_pathlib_path_or_says_what_is_wrong(emulator, tmp_path):
    """state_dir and link take a Path; a user passing the profile's path the same way gets
    that profile, or an error at the call that names the profile argument."""
    path = write(tmp_path, EG800K, "as_path.toml")
    try:
        port = emulator.add_modem(path, state_dir=tmp_path / "state")
    except (TypeError, ValueError, ProfileError) as exc:
        assert "profile" in str(exc).lower(), repr(exc)
        return
    host = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        assert host.at("ATE0").endswith(OK)
        assert host.at("AT+CGMM") == b"\r\nEG800K\r\n" + OK
    finally:
        host.close()
