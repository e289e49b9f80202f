"""User profiles, fourth round: a BG96 written from scratch as a user would (not a copy of
ec2x.toml): only the required sections, no [cell]/[ceer]/[cgev]/[gnss]/[tcpip]/[timing], one
SSL context, one socket, one PDP context, one-byte send/recv sizes and buffers, the shortest
line (serial.line_max = 64), odd but legal error codes (a negative catch-all), a URC template
with literal braces, a lower-case command name, the BG96 option list with checkhost and
ignorecertchain.  Then broken variants of that same minimal file, refused at load (and by the
CLI with one line, exit 2).

Not repeated here: ec2x.toml-derived refusals of test_adversarial_user_profiles{,_2,_3}.py,
identity strings, cipher lists, BG77/EG800K/ML307 copies."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from emulator.modem.profile import ProfileError, load_profile
from tests.e2e.cli_support import refused

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"

BG96 = '''\
[profile]
name = "bg96-mine"

[identity]
manufacturer = "Quectel"
model = "BG96"
revision = "BG96MAR02A07M1G"
imei = "866425031234567"
imsi = "310260123456789"
iccid = "8901260123456789012"
ati = ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]

[network]
csq = [15, 99]
operator = "T-Mobile"
act = 8
reg_stat = 5

[defaults]
echo = true
verbose = true
cmee = 2
ipr = 115200
timezone_quarters = -20

[serial]
baud_rates = [9600, 115200]
line_max = 64

[pdp]
first_id = 1
last_id = 1
address_pool = "100.64.0.9"
default_apn = "fast.t-mobile.com"
deact_urc = '+QIURC: "pdpdeact",{cid} {{bg96}}'

[files]
ufs_capacity = 0
ram_capacity = 0
max_name_len = 8

[ssl]
contexts = 1
sockets = 1
send_max = 1
recv_max = 1
send_buffer = 1
recv_buffer = 1
options = ["sslversion", "ciphersuite", "cacert", "clientcert", "clientkey", "seclevel", "checkhost", "ignorecertchain"]

[ssl.errors]
unknown = 599
dns = 1000

[commands]
"E" = "*"
"+CMEE" = "*"
"+CGMM" = "*"
"+QICSGP" = "*"
"+QIACT" = "*"
"+QIDEACT" = "*"
"+qsslcfg" = "quectel"
"+QSSLOPEN" = "quectel"
"+QSSLSEND" = "quectel"
"+QSSLRECV" = "quectel"
"+QSSLCLOSE" = "quectel"
"+QSSLSTATE" = "quectel"
"+QIGETERROR" = "*"
'''


def edit(*edits: tuple[str, str], text: str = BG96) -> str:
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def write(tmp_path: Path, text: str, name: str = "bg96.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def bg96(open_modem, tmp_path):
    host, port = open_modem(str(write(tmp_path, BG96)))
    host.port_ = port
    return host


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ valid, odd values

def test_the_test_forms_show_one_context_one_socket_and_one_byte(bg96):
    assert bg96.at("AT+QSSLOPEN=?") == b"\r\n+QSSLOPEN: (1-1),(0-0),(0-0),<serveraddr>,<server_port>,(0-2)\r\n" + OK
    assert bg96.at("AT+QSSLSEND=?") == b"\r\n+QSSLSEND: (0-0),(1-1)\r\n" + OK
    assert bg96.at("AT+QSSLRECV=?") == b"\r\n+QSSLRECV: (0-0),(1-1)\r\n" + OK
    assert bg96.at("AT+QIACT=?") == b"\r\n+QIACT: (1-1)\r\n" + OK
    form = bg96.at("AT+QSSLCFG=?")
    names = [line.split(b'"')[1] for line in form.split(b"\r\n") if line.startswith(b"+QSSLCFG: ")]
    assert names == [b"sslversion", b"ciphersuite", b"cacert", b"clientcert", b"clientkey", b"seclevel",
                     b"checkhost", b"ignorecertchain"]
    assert b'"checkhost",(0-0),(0,1)' in form and b'"seclevel",(0-0),(0-2)' in form


def test_out_of_range_ids_are_552_and_the_one_context_works(bg96):
    for cmd in ('AT+QSSLCFG="seclevel",1', 'AT+QSSLCFG="checkhost",1,0', 'AT+QSSLOPEN=2,0,0,"a.b",443',
                'AT+QSSLOPEN=1,1,0,"a.b",443', 'AT+QSSLOPEN=1,0,1,"a.b",443', "AT+QSSLSEND=1,1",
                "AT+QSSLSEND=0,2", "AT+QSSLRECV=0,2", "AT+QSSLRECV=1,1", 'AT+QSSLCFG="sni",0,1'):
        assert bg96.at(cmd) == ERROR, cmd
        assert bg96.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n" + OK, cmd
    assert bg96.at('AT+QSSLCFG="ignorecertchain",0,1') == OK
    assert bg96.at('AT+QSSLCFG="ignorecertchain",0') == b'\r\n+QSSLCFG: "ignorecertchain",0,1\r\n' + OK


def test_commands_not_listed_answer_error_the_lower_case_one_is_served(bg96):
    for cmd in ("ATI", "AT+CSQ", "AT+CGMI", "AT+QISTATE?", "AT+QIOPEN=?", "AT+QFLST", "AT+QGPS=1", "AT&W"):
        assert bg96.at(cmd) == ERROR, cmd
    assert bg96.at('AT+qsslcfg="sslversion",0') == b'\r\n+QSSLCFG: "sslversion",0,4\r\n' + OK
    assert bg96.at("AT+CGMM") == b"\r\nBG96\r\n" + OK


def test_line_max_64_is_the_longest_line(bg96):
    """64 characters after the AT prefix run; 65 are ERROR (docs/behaviour.md: line_max
    counts the text after "AT")."""
    assert bg96.at('AT+QICSGP=1,1,"fast.t-mobile.com","","",1;+QIACT=1') == OK
    name = "a" * (64 - len('+QSSLOPEN=1,0,0,"",443'))
    line = f'AT+QSSLOPEN=1,0,0,"{name}",443'
    assert len(line) == 66
    assert bg96.at(line[:19] + "b" + line[19:]) == ERROR              # 65: no open at all
    assert bg96.at(line) == OK
    assert bg96.read_until(b"+QSSLOPEN: 0,", timeout=10) + bg96.read_until(b"\r\n", 5) == b"\r\n+QSSLOPEN: 0,1000\r\n"


def test_a_listed_code_is_what_the_open_and_qigeterror_report(bg96):
    assert bg96.at('AT+QICSGP=1,1,"fast.t-mobile.com","","",1;+QIACT=1') == OK
    assert bg96.at('AT+QSSLOPEN=1,0,0,"nowhere.invalid",443,0') == OK
    assert bg96.read_until(b"+QSSLOPEN: 0,", timeout=10) + bg96.read_until(b"\r\n", 5) == b"\r\n+QSSLOPEN: 0,1000\r\n"
    assert bg96.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 1000,unknown error\r\n" + OK


# Was a bug, fixed: a negative code (the loader took -1000..1000) was +QSSLOPEN's, but
# AT+QIGETERROR then said "0,operate successfully"; the quectel dialect now refuses it at load
# (REFUSED: negative-code-on-quectel) and the catch-all code is what both report.
def test_the_catch_all_code_is_what_the_open_and_qigeterror_report(bg96, emulator):
    assert bg96.at('AT+QICSGP=1,1,"fast.t-mobile.com","","",1;+QIACT=1') == OK
    emulator.router.add_map("refused.example", 443, "127.0.0.1", closed_port())
    assert bg96.at('AT+QSSLOPEN=1,0,0,"refused.example",443,0') == OK
    assert bg96.read_until(b"+QSSLOPEN: 0,", timeout=10) + bg96.read_until(b"\r\n", 5) == b"\r\n+QSSLOPEN: 0,599\r\n"
    assert bg96.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 599,")


def test_deact_urc_keeps_its_literal_braces(bg96, emulator):
    assert bg96.at('AT+QICSGP=1,1,"fast.t-mobile.com","","",1;+QIACT=1') == OK
    emulator.run(bg96.port_.modem.network_deactivated_pdp, 1)
    assert bg96.seen(b'+QIURC: "pdpdeact",1 {bg96}\r\n')


def test_one_socket_one_byte_at_a_time_through_an_echo_server(bg96, echo):
    """ssl.sockets = 1, send_max = recv_max = send_buffer = recv_buffer = 1: the one id is
    taken, data go and come back one byte a command, in order, none lost."""
    assert bg96.at('AT+QICSGP=1,1,"fast.t-mobile.com","","",1;+QIACT=1') == OK
    assert bg96.at('AT+QSSLOPEN=1,0,0,"echo.example",443,0') == OK
    assert bg96.read_until(b"+QSSLOPEN: 0,", timeout=10) + bg96.read_until(b"\r\n", 5) == b"\r\n+QSSLOPEN: 0,0\r\n"
    assert bg96.at('AT+QSSLOPEN=1,0,0,"echo.example",443,0') == ERROR         # the one id is in use
    assert bg96.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n" + OK
    state = bg96.at("AT+QSSLSTATE")
    assert state.count(b"+QSSLSTATE: ") == 1 and b'+QSSLSTATE: 0,"SSLClient","echo.example",443' in state
    # variable length: two bytes are more than send_max
    bg96.write(b"AT+QSSLSEND=0\r")
    bg96.read_until(b"> ")
    bg96.write(b"xy\x1a")
    assert bg96.read_until(re.compile(rb"\r\n(SEND OK|SEND FAIL|ERROR)\r\n")).endswith(ERROR)
    assert bg96.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n" + OK
    got = b""
    for byte in b"BG96":
        assert bg96.send_data(0, bytes([byte])) == b"\r\nSEND OK\r\n"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answer = bg96.at("AT+QSSLRECV=0,1")
            m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
            assert m, answer
            assert int(m.group(1)) <= 1
            got += answer[m.end():m.end() + int(m.group(1))]
            if int(m.group(1)):
                break
            time.sleep(0.02)
    assert got == b"BG96"
    assert bg96.at("AT+QSSLRECV=0,1") == b"\r\n+QSSLRECV: 0\r\n" + OK


def test_a_lower_case_at_prefixed_delay_key_holds_that_answer(open_modem, tmp_path):
    """timing.response_delay_ms = { "at+cgmm" = 300 }: README says command names are
    case-insensitive; the AT prefix is taken off (profile.command_name)."""
    text = edit(("[commands]", '[timing]\nresponse_delay_ms = { "at+cgmm" = 300 }\n\n[commands]'))
    host, _ = open_modem(str(write(tmp_path, text)))
    start = time.monotonic()
    assert host.at("AT+CGMM") == b"\r\nBG96\r\n" + OK
    assert time.monotonic() - start >= 0.29
    start = time.monotonic()
    assert host.at("AT+CMEE?") == b"\r\n+CMEE: 2\r\n" + OK          # defaults.cmee = 2, not held
    assert time.monotonic() - start < 0.25


def test_a_zero_capacity_drive_with_8_character_names(open_modem, tmp_path):
    """files.ufs_capacity = ram_capacity = 0, max_name_len = 8: the drives report 0 bytes, an
    8-character name is taken as far as the (full) drive lets it, a 9-character one is not."""
    text = edit(('"E" = "*"', '"E" = "*"\n"+QFUPL" = "*"\n"+QFLDS" = "*"\n"+QFLST" = "*"'))
    host, _ = open_modem(str(write(tmp_path, text)))
    assert host.at('AT+QFLDS="UFS"') == b"\r\n+QFLDS: 0,0\r\n" + OK
    assert host.at('AT+QFLDS="RAM"') == b"\r\n+QFLDS: 0,0\r\n" + OK
    assert host.at('AT+QFUPL="abcdefgh",1') == b"\r\n+CME ERROR: drive full\r\n"      # defaults.cmee = 2
    assert host.at('AT+QFUPL="RAM:abcdefgh",1') == b"\r\n+CME ERROR: drive full\r\n"
    assert host.at("AT+CMEE=1") == OK
    assert host.at('AT+QFUPL="abcdefgh",1') == b"\r\n+CME ERROR: 403\r\n"
    assert host.at('AT+QFUPL="abcdefghi",1') == b"\r\n+CME ERROR: 406\r\n"
    assert host.at("AT+QFLST") == OK


# ------------------------------------------------------------------ refused at load

SSL_OPTIONS = ('options = ["sslversion", "ciphersuite", "cacert", "clientcert", "clientkey", "seclevel", '
               '"checkhost", "ignorecertchain"]')
QCFG = [('"E" = "*"', '"E" = "*"\n"+QCFG" = "*"')]

REFUSED = [
    ("duplicate-command-by-case", [('"+CGMM" = "*"', '"+CGMM" = "*"\n"+cgmm" = "*"')],
     'key commands."+cgmm": listed twice (names are case-insensitive)'),
    ("at-prefixed-command-name", [('"+CGMM" = "*"', '"AT+CGMM" = "*"')],
     'key commands."AT+CGMM": no such command in the emulator'),
    ("negative-recv-buffer", [("recv_buffer = 1", "recv_buffer = -1")],
     "key ssl.recv_buffer: must be in 1..16777216, got -1"),
    ("zero-send-max", [("send_max = 1", "send_max = 0")], "key ssl.send_max: must be in 1..65535, got 0"),
    ("negative-contexts", [("contexts = 1", "contexts = -1")], "key ssl.contexts: must be in 1..64, got -1"),
    ("fractional-sockets", [("sockets = 1", "sockets = 1.5")], "key ssl.sockets: must be an integer, got 1.5"),
    ("line-max-below-64", [("line_max = 64", "line_max = 63")], "key serial.line_max: must be in 64..65536, got 63"),
    ("error-code-as-string", [("dns = 1000", 'dns = "565"')], "key ssl.errors: [dns] must be an integer, got '565'"),
    ("error-code-as-table", [("dns = 1000", "dns = { code = 1000 }")],
     "key ssl.errors: [dns] must be an integer, got {'code': 1000}"),
    ("error-code-below-range", [("unknown = 599", "unknown = -1001")],
     "key ssl.errors: [unknown] must be in -1000..1000, got -1001"),
    ("negative-code-on-quectel", [("unknown = 599", "unknown = -7")],
     "key ssl.errors.unknown: -7 is negative; the quectel dialect's codes are positive (AT+QIGETERROR reports them)"),
    ("error-table-misspelt", [("[ssl.errors]", "[ssl.error]")], "key ssl.error: unknown key"),
    ("template-empty-field", [("{cid} {{bg96}}", "{}")],
     "key pdp.deact_urc: '+QIURC: \"pdpdeact\",{}' must use only {cid}, each as it stands (got {})"),
    ("template-positional-field", [("{cid} {{bg96}}", "{0}")],
     "key pdp.deact_urc: '+QIURC: \"pdpdeact\",{0}' must use only {cid}, each as it stands (got {0})"),
    ("template-conversion", [("{cid} {{bg96}}", "{cid!s}")],
     "key pdp.deact_urc: '+QIURC: \"pdpdeact\",{cid!s}' must use only {cid}, each as it stands (got {cid!s})"),
    ("template-unclosed-brace", [("{cid} {{bg96}}", "{cid} {bg96")], "key pdp.deact_urc: "),
    ("item-range-lo-above-hi", QCFG + [("[commands]", '[qcfg]\n"band" = { value = ["3"], test = "(5-1)" }\n\n[commands]')],
     "key qcfg: [band] test '(5-1)'"),
    ("item-value-outside-its-range", QCFG + [("[commands]", '[qcfg]\n"band" = { value = ["9"], test = "(1-5)" }\n\n[commands]')],
     "key qcfg: [band] value '9' is not one the test form '(1-5)' allows"),
    ("qcfg-without-its-table", QCFG, "[commands] lists +QCFG, which needs qcfg"),
    ("csq-one-value", [("csq = [15, 99]", "csq = [15]")], "key network.csq: must have 2..2 items, got 1"),
    ("options-not-a-list", [(SSL_OPTIONS, 'options = "checkhost"')], "key ssl.options: must be a list, got 'checkhost'"),
    ("bg96-options-on-onemo", [("[ssl.errors]", 'dialect = "onemo"\n[ssl.errors]')],
     "key ssl.options: 'checkhost' is not an AT+QSSLCFG option of dialect 'onemo'"),
    ("no-ati-line", [('ati = ["Quectel", "BG96", "Revision: BG96MAR02A07M1G"]', "ati = []")],
     "key identity.ati: must have 1..32 items, got 0"),
    ("empty-variant", [('"+qsslcfg" = "quectel"', '"+qsslcfg" = ""')],
     "key commands.\"+QSSLCFG\": unknown variant '' (known: onemo, quectel)"),
    ("cme-text-negative-code", [("[commands]", '[cme_text]\n"-1" = "oops"\n\n[commands]')],
     "key cme_text: key '-1' is not a +CME ERROR code"),
    ("pdp-range-lo-above-hi", [("first_id = 1", "first_id = 2")], "key pdp.last_id: smaller than pdp.first_id"),
    ("verify-hostname-as-string", [("[ssl.errors]", 'verify_hostname = "no"\n[ssl.errors]')],
     "key ssl.verify_hostname: must be true or false, got 'no'"),
    ("boot-offsets-without-urcs", [("timezone_quarters = -20", "timezone_quarters = -20\nboot_urc_ms = [0]")],
     "key defaults.boot_urc_ms: 1 offsets for 0 defaults.boot_urcs (one each)"),
    ("commands-as-array-of-tables", [("[commands]", "[[commands]]")], "key commands: must be a table"),
]


@pytest.mark.parametrize("edits, message", [pytest.param(e, m, id=i) for i, e, m in REFUSED])
def test_a_broken_minimal_bg96_is_refused_naming_the_key(tmp_path, edits, message):
    path = write(tmp_path, edit(*edits))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"profile {path}: {message}"), text


@pytest.mark.parametrize("edits, message", [pytest.param(e, m, id=i) for i, e, m in REFUSED
                                            if i in ("duplicate-command-by-case", "negative-recv-buffer",
                                                     "template-positional-field", "item-range-lo-above-hi",
                                                     "error-code-as-string")])
def test_the_cli_refuses_a_broken_minimal_bg96_in_one_line(tmp_path, edits, message):
    path = write(tmp_path, edit(*edits))
    code, out, err = refused("--profile", str(path), "--state-dir", str(tmp_path / "s"), "--offline")
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"modem-emulator: profile {path}: {message}"), err
    assert not (tmp_path / "s").exists()


# Was a bug, fixed: the last of two delays for one command silently won
@pytest.mark.parametrize("table", ['{ "+CGMM" = 300, "AT+CGMM" = 5 }', '{ "+CGMM" = 300, "+cgmm" = 5 }'])
def test_a_delay_given_twice_for_one_command_is_refused(tmp_path, table):
    path = write(tmp_path, edit(("[commands]", f"[timing]\nresponse_delay_ms = {table}\n\n[commands]")))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert "timing.response_delay_ms" in str(info.value)


def test_the_built_in_profiles_cannot_be_extended(tmp_path):
    """README offers no inheritance ("Copy profiles/ec2x.toml, edit ..."): a user who writes an
    extends/include key on top of a partial file gets one line naming it, not a half profile."""
    for text, message in (('[profile]\nname = "bg96x"\nextends = "ec2x"\n', "key profile.extends: unknown key"),
                          ('include = "ec2x"\n[profile]\nname = "bg96x"\n', "unknown section [include]")):
        path = write(tmp_path, text)
        code, out, err = refused("--profile", str(path), "--state-dir", str(tmp_path / "s"), "--offline")
        assert (code, out, err) == (2, "", f"modem-emulator: profile {path}: {message}\n")
