"""User profiles, third round: a user adds a third module as README ("--profile") says -- a
copy of ec2x.toml edited into a Quectel BG77-like module (LTE-M / NB-IoT: AcT 9, roaming,
PDP contexts 2-6, 3 SSL contexts, 7 sockets, smaller TCP/IP limits, its own boot URCs and
their timing, echo and verbose results off, CMEE 2, 9600 baud, UTC-5 clock, its own radio
figures, APN, DNS, address pool, +CGEV / +CEER wording, file limits, GNSS fix south of the
equator, an SSL error code of its own) -- and checks that every key it changed is what the
wire shows (test forms included), then writes broken profiles the first two rounds
(test_adversarial_user_profiles.py, _2.py) did not try.

Not repeated here: identity strings, the BG96 / EG800K / ML307 SSL ranges and option lists,
cipher lists, scenario checks, state-dir carry-over (those files)."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from tests.e2e import test_adversarial_user_profiles_2 as up2

EC2X = (PROFILE_DIR / "ec2x.toml").read_text()
OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
E552 = b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
derive = up2.derive

BOOT = 'boot_urcs = ["RDY", "+CPIN: READY", "APP RDY"]'
BOOT_MS = "boot_urc_ms = [0, 700, 1500]"

# A BG77-like module written from ec2x.toml (the user's copy)
BG77 = derive(
    ('name = "ec2x"', 'name = "bg77-user"'),
    ('model = "EC25"', 'model = "BG77"'),
    ("csq = [24, 99]", "csq = [11, 3]"),
    ('operator = "CHN-UNICOM"', 'operator = "Telstra"'),
    ('# plmn = "46001"', 'plmn = "50501"'),
    ("act = 7", "act = 9"),
    ("reg_stat = 1", "reg_stat = 5"),
    ('rat = "FDD LTE"', 'rat = "eMTC"'),
    ('band = "LTE BAND 3"', 'band = "LTE BAND 28"'),
    ("channel = 1650", "channel = 9410"),
    ('sms_center = "+8613010112500"', 'sms_center = "+61418706700"'),
    ('id = "8A21B03"', 'id = "1F2E3D"'), ('tac = "D5D5"', 'tac = "00A1"'),
    ("pci = 226 ", "pci = 17 "), ("band = 3 ", "band = 28 "),
    ("rsrp = -94 ", "rsrp = -110 "), ("rsrq = -9 ", "rsrq = -12 "),
    ("sinr = 8.4 ", "sinr = -3.2 "), ("srxlev = 30 ", "srxlev = 14 "),
    ("report = '\"{text}\"'", "report = '\"{text}\",0'"),
    ('none = "No cause information available"', 'none = "No report"'),
    ('deactivated = "Regular deactivation"', 'deactivated = "Bye bye"'),
    ('me_pdn_act = "+CGEV: ME PDN ACT {cid}"', 'me_pdn_act = "+CGEV: ME ACT {cid},X"'),
    ('me_pdn_deact = "+CGEV: ME PDN DEACT {cid}"', 'me_pdn_deact = "+CGEV: ME DEACT {cid},X"'),
    ('me_detach = "+CGEV: ME DETACH"', 'me_detach = "+CGEV: ME DETACH X"'),
    ('nw_pdn_deact = "+CGEV: NW PDN DEACT {cid}"', 'nw_pdn_deact = "+CGEV: NW DEACT {cid},X"'),
    ('nw_detach = "+CGEV: NW DETACH"', 'nw_detach = "+CGEV: NW DETACH X"'),
    ('radio_off = "Phone is offline"', 'radio_off = "Radio off here"'),
    ('no_service = "No service available"', 'no_service = "Nothing here"'),
    ('link_lost = "PDP lowerlayer error"', 'link_lost = "Link gone"'),
    ("deact_urc = '+QIURC: \"pdpdeact\",{cid}'", "deact_urc = '+QIURC: \"pdpdeact\",{cid},\"gone\"'"),
    ("battery = [0, 100, 3800]", "battery = [1, 42, 3300]"),
    ("echo = true", "echo = false"),
    ("verbose = true", "verbose = false"),
    ("cmee = 1", "cmee = 2"),
    ("ipr = 115200", "ipr = 9600"),
    ("timezone_quarters = 32", "timezone_quarters = -20"),
    ('boot_urcs = ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"]', BOOT),
    ("boot_urc_ms = [0, 130, 360, 380, 600, 620]", BOOT_MS),
    ("qpowd_power_on_ms = 1000", "qpowd_power_on_ms = 300"),
    ("baud_rates = [4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 3000000]",
     "baud_rates = [9600, 115200, 460800]"),
    ("line_max = 2048", "line_max = 600"),
    ("# [timing]", '[timing]\nresponse_delay_ms = { "at+cbc" = 400 }\n#'),
    ("first_id = 1", "first_id = 2"), ("last_id = 16", "last_id = 6"),
    ('address_pool = "10.7.157.1"', 'address_pool = "100.64.9.250"'),
    ('default_apn = ""', 'default_apn = "iot.m2m"'),
    ('dns = ["123.66.165.1", "123.66.165.2"]', 'dns = ["9.9.9.9", "149.112.112.112"]'),
    ("ufs_capacity = 11_000_000", "ufs_capacity = 300_000"),
    ("ram_capacity = 2_000_000", "ram_capacity = 0"),
    ("max_name_len = 80", "max_name_len = 12"),
    ("first_handle = 1027", "first_handle = 7"),
    ("max_open = 10", "max_open = 2"),
    ("contexts = 6 ", "contexts = 3 "),
    ("sockets = 12                    # <clientID>", "sockets = 7 #"),
    ("sockets = 12                    # <connectID>", "sockets = 7 #"),
    ("send_max = 1460                 # AT+QISEND", "send_max = 1000 #"),
    ("recv_max = 1500                 # AT+QIRD", "recv_max = 800 #"),
    ("sendex_max = 512 ", "sendex_max = 256 "),
    ('at_port = "usbmodem"            # <AT_port>', 'at_port = "uart1" #'),
    ("client_pair_required = false", "client_pair_required = true"),
    ("dns = 565 ", "dns = 561 "),
    ('"+CGSN" = "*"', '"+CGSN" = "27007"'),
    ('imei = "867698041234567"', 'imei = "867698041234567"\nsvn = "42"'),
    ("latitude = 31.12345", "latitude = -33.8688"), ("longitude = 121.54321", "longitude = 151.2093"),
    ("ttff = 30 ", "ttff = 1 "),
)


def write(tmp_path: Path, text: str | bytes, name: str = "bg77.toml") -> Path:
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


@pytest.fixture
def bg77(open_modem, tmp_path):
    """The user's BG77 in-process: echo off and numeric result codes from the profile."""
    host, port = open_modem(str(write(tmp_path, BG77)), echo=True)   # (no ATE0: the profile's own)
    host.at = lambda line, timeout=10: V0Host.at(host, line, timeout)
    host.port_ = port
    return host


R0 = b"0\r"                          # ATV0's OK
R4 = b"4\r"                          # ATV0's ERROR
_V0_FINAL = re.compile(rb"(?:^|[\r\n])\d\r(?!\n)|(?:^|\n)\+CME ERROR: [^\r\n]*\r\n|\r\n(?:OK|ERROR)\r\n")


class V0Host:
    """Host.at for a port answering ATV0 result codes (digit CR) as well as ATV1 ones."""

    @staticmethod
    def at(host, line: str, timeout: float = 10) -> bytes:
        host.write(line.encode("latin-1") + b"\r")
        deadline = time.monotonic() + timeout
        while True:
            host._fill()
            m = _V0_FINAL.search(host.pending)
            if m and m.end() == len(host.pending):
                time.sleep(0.03)                 # (a CR followed by LF is no V0 result)
                host._fill()
                m = _V0_FINAL.search(host.pending)
            if m and (m.end() < len(host.pending) or not host.pending.endswith(b"\r")
                      or m.group(0).endswith(b"\r")):
                out = bytes(host.pending[:m.end()])
                del host.pending[:m.end()]
                return out
            if time.monotonic() > deadline:
                raise AssertionError(f"no final result for {line!r}; got {bytes(host.pending)!r}")


# ============================================================ part 1: every change on the wire

def test_bg77_radio_figures_are_the_profiles(bg77):
    host = bg77
    for line, answer in (
            ("AT+CSQ", b"+CSQ: 11,3\r\n"),
            ("AT+CREG?", b"+CREG: 0,5\r\n"),
            ("AT+CEREG=2;+CEREG?", b'+CEREG: 2,5,"00A1","1F2E3D",9\r\n'),
            ("AT+COPS?", b'+COPS: 0,0,"Telstra",9\r\n'),
            ("AT+COPS=3,2;+COPS?", b'+COPS: 0,2,"50501",9\r\n'),
            ("AT+QNWINFO", b'+QNWINFO: "eMTC","50501","LTE BAND 28",9410\r\n'),
            # rssi -113 + 2 * 11 = -91; sinr (-3.2 + 20) * 5 = 84
            ("AT+QCSQ", b'+QCSQ: "LTE",-91,-110,84,-12\r\n'),
            ("AT+CSCA?", b'+CSCA: "+61418706700",145\r\n'),
            ("AT+CBC", b"+CBC: 1,42,3300\r\n"),
            ("AT+CEER", b'+CEER: "No report",0\r\n')):
        assert host.at(line) == answer + R0, line
    serving = host.at('AT+QENG="servingcell"')
    assert serving.endswith(R0), serving
    fields = serving[:-len(R0)].decode().split(",")
    # MCC, MNC, cell id (hex, no leading zeros), PCI, EARFCN, band, ..., TAC, RSRP, RSRQ, RSSI, SINR, srxlev
    assert fields[4:8] == ["505", "01", "1F2E3D", "17"], serving
    assert fields[8:10] == ["9410", "28"], serving
    assert fields[12:] == ["A1", "-110", "-12", "-91", "-3", "14\r\n"], serving


def test_bg77_defaults_come_back_with_atf_and_a_restart(bg77):
    host = bg77
    assert host.at("AT") == R0                                        # no echo, numeric OK
    assert host.at("AT+CMEE?") == b"+CMEE: 2\r\n" + R0
    assert host.at("AT+IPR?") == b"+IPR: 9600\r\n" + R0
    assert host.at("AT+IPR=?") == b"+IPR: (0,9600,115200,460800),(0)\r\n" + R0
    assert re.fullmatch(rb'\+CCLK: "\d\d/\d\d/\d\d,\d\d:\d\d:\d\d-20"\r\n0\r', host.at("AT+CCLK?"))
    assert host.at("AT+QNOPE") == R4
    assert host.at("ATE1V1+CMEE=0") == OK
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 0\r\n\r\nOK\r\n"
    assert host.at("AT&F") == b"AT&F\r" + R0                        # the profile's factory set
    assert host.at("AT+CMEE?") == b"+CMEE: 2\r\n" + R0
    assert host.at("ATE1V1+CMEE=1") == OK
    assert host.at("AT+CFUN=1,1") == b"AT+CFUN=1,1\r\r\nOK\r\n"
    assert host.read_until(b"APP RDY\r\n", timeout=5).endswith(b"APP RDY\r\n")
    assert host.at("AT+CMEE?") == b"+CMEE: 2\r\n" + R0               # echo off, V0 again


def test_bg77_pdp_contexts_are_2_to_6_in_every_command(bg77):
    host = bg77
    for line, answer in (
            ("AT+QICSGP=?", b"+QICSGP: (2-6),(1-3),<APN>,<username>,<password>,(0-3)\r\n"),
            ("AT+QIACT=?", b"+QIACT: (2-6)\r\n"), ("AT+QIDEACT=?", b"+QIDEACT: (2-6)\r\n"),
            ("AT+QIDNSCFG=?", b"+QIDNSCFG: (2-6),<pridnsaddr>,<secdnsaddr>\r\n"),
            ("AT+QIDNSGIP=?", b"+QIDNSGIP: (2-6),<hostname>\r\n"),
            ("AT+QPING=?", b"+QPING: (2-6),<host>,(1-255),(1-10)\r\n"),
            ("AT+QNTP=?", b"+QNTP: (2-6),<server>,(1-65535),(0,1)\r\n"),
            ("AT+QSSLOPEN=?", b"+QSSLOPEN: (2-6),(0-2),(0-6),<serveraddr>,<server_port>,(0-2)\r\n"),
            ("AT+QIOPEN=?", b'+QIOPEN: (2-6),(0-6),"TCP/UDP/TCP LISTENER/UDP SERVICE",'
                            b'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)\r\n')):
        assert host.at(line) == answer + R0, line
    assert host.at("AT+CGDCONT=?").startswith(b'+CGDCONT: (2-6),"IP",')
    cme = b"+CME ERROR: invalid parameter\r\n"                          # (CMEE 2 from the profile)
    for cid in (1, 7):
        for line, answer in ((f'AT+QICSGP={cid},1,"x","","",1', R4), (f"AT+QIACT={cid}", R4),
                             (f"AT+QIDEACT={cid}", R4), (f"AT+CGACT=1,{cid}", R4), (f'AT+CGDCONT={cid},"IP","x"', R4),
                             (f"AT+CGPADDR={cid}", R4), (f'AT+QIOPEN={cid},0,"TCP","1.2.3.4",80', R4),
                             (f'AT+QSSLOPEN={cid},0,0,"a.b",443', R4), (f"AT+QIDNSCFG={cid}", cme),
                             (f'AT+QIDNSGIP={cid},"a.b"', cme), (f'AT+QPING={cid},"a.b"', cme),
                             (f'AT+QNTP={cid},"a.b"', cme)):
            assert host.at(line) == answer, line
    # the profile's APN (a context never configured), pool, DNS and +CGEV wording
    assert host.at("AT+CGEREP=2") == R0
    assert host.at("AT+CGACT=1,4") == R0
    assert host.seen(b"+CGEV: ME ACT 4,X\r\n")
    assert host.at("AT+CGDCONT?") == b'+CGDCONT: 4,"IP","iot.m2m","0.0.0.0",0,0,0,0\r\n' + R0
    assert host.at("AT+CGPADDR=4") == b'+CGPADDR: 4,"100.64.9.250"\r\n' + R0
    assert host.at("AT+QIDNSCFG=4") == b'+QIDNSCFG: 4,"9.9.9.9","149.112.112.112"\r\n' + R0
    assert host.at("AT+CGACT=1,6").endswith(R0)
    assert host.seen(b"+CGEV: ME ACT 6,X\r\n")
    assert host.at("AT+CGPADDR=6") == b'+CGPADDR: 6,"100.64.9.251"\r\n' + R0
    assert host.at("AT+CGACT=0,4") == R0
    assert host.seen(b"+CGEV: ME DEACT 4,X\r\n")
    assert host.at("AT+CEER").endswith(b'+CEER: "Bye bye",0\r\n' + R0)
    assert host.at("AT+CGATT=0") == R0
    assert host.seen(b"+CGEV: ME DETACH X\r\n")


def test_bg77_network_events_use_the_profiles_wording(bg77, emulator):
    from emulator.modem.registration import registration
    host, modem = bg77, bg77.port_.modem
    assert host.at("AT+CGEREP=2") == R0
    assert host.at("AT+CGACT=1,3") == R0
    assert host.seen(b"+CGEV: ME ACT 3,X\r\n")
    emulator.run(modem.network_deactivated_pdp, 3)                    # the network, still registered
    assert host.seen(b"+CGEV: NW DEACT 3,X\r\n")
    assert host.seen(b'+QIURC: "pdpdeact",3,"gone"\r\n')
    assert host.at("AT+CEER").endswith(b'+CEER: "Bye bye",0\r\n' + R0)
    assert host.at("AT+CGACT=1,5") == R0
    assert host.seen(b"+CGEV: ME ACT 5,X\r\n")
    emulator.run(registration(modem).set_network, 0)                  # the registration lost
    assert host.seen(b"+CGEV: NW DETACH X\r\n")
    assert host.at("AT+CGACT?").endswith(b"+CGACT: 5,0\r\n" + R0)
    assert host.at("AT+CEER").endswith(b'+CEER: "Link gone",0\r\n' + R0)
    assert host.at("AT+CGACT=1,5") == R4                              # no service
    assert host.at("AT+CEER").endswith(b'+CEER: "Nothing here",0\r\n' + R0)
    emulator.run(registration(modem).set_network, 5)
    assert host.at("AT+CFUN=4") .endswith(R0)
    assert host.at("AT+CGACT=1,5") == b"+CGEV: ME DETACH X\r\n" + R4   # radio off
    assert host.at("AT+CEER").endswith(b'+CEER: "Radio off here",0\r\n' + R0)
    assert host.at("AT+CFUN=1").endswith(R0)
    assert host.at("AT+CEREG?").endswith(b"+CEREG: 0,5\r\n" + R0)


def test_bg77_boot_urcs_come_at_the_profiles_offsets_and_hold_the_sim(bg77):
    host = bg77
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(b"0\r") == b"0\r"
    assert host.read_until(b"RDY\r\n") == b"RDY\r\n"                  # (V0: text CR LF)
    rdy = time.monotonic()
    busy = host.at("AT+CPIN?")                                       # before +CPIN: READY (700 ms)
    assert busy == b"+CME ERROR: SIM busy\r\n", busy
    assert host.at("AT+QINISTAT") == b"+QINISTAT: 0\r\n" + R0
    assert host.read_until(b"+CPIN: READY\r\n", timeout=3) == b"+CPIN: READY\r\n"
    assert 0.6 <= time.monotonic() - rdy <= 1.2
    assert host.at("AT+CPIN?") == b"+CPIN: READY\r\n" + R0
    assert host.at("AT+QINISTAT") == b"+QINISTAT: 1\r\n" + R0            # no SMS/PB DONE yet
    assert host.read_until(b"APP RDY\r\n", timeout=3) == b"APP RDY\r\n"
    assert 1.4 <= time.monotonic() - rdy <= 2.2
    assert host.at("AT+QINISTAT") == b"+QINISTAT: 7\r\n" + R0            # its boot is over
    assert host.quiet_for(0.3) == b""                                # nothing of the EC2x's six


def test_bg77_powers_on_again_after_its_own_qpowd_delay(bg77):
    host = bg77
    host.write(b"AT+QPOWD\r")
    assert host.read_until(b"POWERED DOWN\r\n") == b"0\rPOWERED DOWN\r\n"
    down = time.monotonic()
    assert host.read_until(b"RDY\r\n", timeout=3) == b"RDY\r\n"
    assert 0.2 <= time.monotonic() - down <= 0.8                       # 300 ms, not the EC2x's 1 s


def test_bg77_file_limits_are_the_profiles(bg77):
    host = bg77
    assert host.at('AT+QFLDS="UFS"') == b"+QFLDS: 300000,300000\r\n" + R0
    assert host.at('AT+QFLDS="RAM"') == b"+QFLDS: 0,0\r\n" + R0
    assert host.at('AT+QFOPEN="abcdefghijklm",0').startswith(b"+CME ERROR")    # 13 > max_name_len 12
    assert host.at('AT+QFOPEN="abcdefghijkl",0') == b"+QFOPEN: 7\r\n" + R0    # first_handle 7
    assert host.at('AT+QFOPEN="x1",0') == b"+QFOPEN: 8\r\n" + R0
    assert host.at('AT+QFOPEN="x2",0') == \
        b"+CME ERROR: reach the max number of file allowed to be opened\r\n"  # max_open 2
    assert host.at("AT+QFCLOSE=7") == R0
    assert host.at('AT+QFOPEN="x2",0') == b"+QFOPEN: 7\r\n" + R0


def test_bg77_line_max_svn_and_response_delay(bg77):
    host = bg77
    body = "V0" * 300                                                 # 600 bytes after AT
    assert host.at("AT" + body) == R0
    assert host.at("AT" + body + "V") == R4
    assert host.at("AT+CGSN=2") == b"+CGSN: 8676980412345642\r\n" + R0
    assert host.at("AT+CGSN=3") == b"+CGSN: 42\r\n" + R0
    start = time.monotonic()
    assert host.at("AT+CBC") == b"+CBC: 1,42,3300\r\n" + R0              # key written "at+cbc"
    assert time.monotonic() - start >= 0.35
    start = time.monotonic()
    assert host.at("AT+CSQ") == b"+CSQ: 11,3\r\n" + R0
    assert time.monotonic() - start < 0.3


def test_bg77_ssl_contexts_error_code_and_client_pair(bg77):
    host = bg77
    assert host.at("ATV1") == OK
    assert host.at('AT+QICSGP=2,1,"x","","",1;+QIACT=2') == OK
    assert host.at('AT+QSSLCFG="seclevel",3,1') == ERROR                 # contexts 0-2
    assert host.at("AT+QIGETERROR") == E552
    assert host.at('AT+QSSLCFG="seclevel",2') == b'\r\n+QSSLCFG: "seclevel",2,0\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLOPEN=2,0,7,"nowhere.invalid",443,0') == ERROR  # sockets 0-6
    assert host.at('AT+QSSLOPEN=2,0,6,"nowhere.invalid",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 6,561\r\n") == b"\r\n+QSSLOPEN: 6,561\r\n"   # errors.dns
    assert host.at("AT+QIGETERROR").startswith(b"\r\n+QIGETERROR: 561,")
    # client_pair_required: seclevel 2 with a CA and no client pair fails before any DNS/TCP
    assert host.upload("ca.pem", b"-----BEGIN CERTIFICATE-----\n") .endswith(OK)
    assert host.at('AT+QSSLCFG="seclevel",1,2;+QSSLCFG="cacert",1,"UFS:ca.pem"') == OK
    assert host.at('AT+QSSLOPEN=2,1,5,"nowhere.invalid",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 5,552\r\n") == b"\r\n+QSSLOPEN: 5,552\r\n"


def test_bg77_tcpip_limits_and_at_port(bg77, tcp_echo):
    from emulator.testing.host import Host
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    host = bg77
    assert host.at("ATV1") == OK
    host.at = lambda line, timeout=10: Host.at(host, line, timeout)      # (V1 from here)
    for line, answer in (("AT+QISEND=?", b"+QISEND: (0-6),(0-1000)"), ("AT+QIRD=?", b"+QIRD: (0-6),(0-800)")):
        assert host.at(line) == b"\r\n" + answer + b"\r\n\r\nOK\r\n", line
    assert host.at('AT+QICSGP=2,1,"x","","",1;+QIACT=2') == OK
    assert host.at(f'AT+QIOPEN=2,6,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 6,0\r\n") == b"\r\n+QIOPEN: 6,0\r\n"
    state = host.at("AT+QISTATE=1,6")
    assert re.fullmatch(rb'\r\n\+QISTATE: 6,"TCP","[^"]+",\d+,\d+,2,2,6,0,"uart1"\r\n\r\nOK\r\n', state), state
    for line in ("AT+QISEND=6,1001", 'AT+QISENDEX=6,"' + "41" * 257 + '"', "AT+QIRD=6,801"):
        assert host.at(line) == ERROR, line
        assert host.at("AT+QIGETERROR") == E552, line
    assert host.at('AT+QISENDEX=6,"' + "42" * 256 + '"') == b"\r\nSEND OK\r\n"
    assert host.seen(b'+QIURC: "recv",6\r\n')
    data = host.at("AT+QIRD=6,800")
    assert data == b"\r\n+QIRD: 256\r\n" + b"B" * 256 + b"\r\n\r\nOK\r\n", data
    assert host.at("AT+QICLOSE=6") == OK
    # direct push mode: pieces of at most tcpip.recv_max (800)
    assert host.at(f'AT+QIOPEN=2,3,"TCP","{TCP_HOST}",{TCP_PORT},0,1') == OK
    assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
    payload = bytes(range(250)) * 8
    got, sizes = b"", []
    for end in (1000, 2000):
        host.write(b"AT+QISEND=3,1000\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(payload[end - 1000:end])
        assert host.read_until(b"\r\nSEND OK\r\n") == b"\r\nSEND OK\r\n"
        # the echo's pushes before the next command line: written while it is on its way,
        # they would come before its prompt
        while len(got) < end:
            head = host.read_until(re.compile(rb'\+QIURC: "recv",3,(\d+)\r\n'))
            assert head.startswith(b"\r\n+QIURC: "), head
            size = int(re.search(rb",(\d+)\r\n$", head).group(1))
            sizes.append(size)
            got += host.read_exactly(size)
            assert host.read_exactly(2) == b"\r\n"
    assert got == payload and max(sizes) == 800, sizes


def test_bg77_gnss_fix_south_and_east(bg77):
    host = bg77
    assert host.at("AT+QGPS=1") == R0
    time.sleep(1.3)                                                   # ttff 1 s
    fix = host.at("AT+QGPSLOC=2")
    assert re.fullmatch(rb"\+QGPSLOC: \d{6}\.000,-33\.86880,151\.20930,0\.9,12\.5,3,0\.00,0\.0,0\.0,\d{6},09\r\n0\r",
                        fix), fix
    assert b",3352.1280S,15112.5580E," in host.at("AT+QGPSLOC=0")


def test_bg77_through_the_cli_with_its_link_and_identity(tmp_path):
    """The same file with `python -m emulator --profile`: the user's way in."""
    from emulator.testing.host import Host
    from tests.e2e.cli_support import Cli
    emu = Cli(tmp_path, "--profile", str(write(tmp_path, BG77)))
    try:
        host = Host(emu.dev)
        assert V0Host.at(host, "AT+CGMM") == b"BG77\r\n0\r"
        assert V0Host.at(host, "AT+QSSLCFG=?").count(b",(0-2),") == 19
        host.close()
    finally:
        emu.stop()


# (was a BUG, fixed: network.csq = [50, 42] loads (schema 0..199 each); AT+CSQ answers +CSQ:
# 50,42, outside its own test form (0-31,99),(0-7,99))
def test_a_signal_the_modules_test_form_excludes_is_refused_or_not_shown(open_modem, tmp_path):
    text = derive(("csq = [24, 99]", "csq = [50, 42]"))
    try:
        load_profile(str(write(tmp_path, text, "check.toml")))
    except ProfileError:
        return                                                         # refused at load: fine
    host, _ = open_modem(str(write(tmp_path, text)))
    assert host.at("AT+CSQ=?") == b"\r\n+CSQ: (0-31,99),(0-7,99)\r\n\r\nOK\r\n"
    rssi, ber = map(int, re.search(rb"\+CSQ: (\d+),(\d+)", host.at("AT+CSQ")).groups())
    assert (rssi <= 31 or rssi == 99) and (ber <= 7 or ber == 99), (rssi, ber)


# (was a BUG, fixed: [qcfg] takes any number of items (ATI is held to 32 lines for this), so
# AT+QCFG=? can outgrow serial.output_backlog: 250 items of 1.6 KB load (backlog 256 KiB) and a
# host reading all the time gets 189 of the 261 lines)
def test_an_item_table_whose_test_form_outgrows_the_backlog_is_refused_or_answered_whole(open_modem, tmp_path):
    group = "(" + ",".join(str(i) for i in range(420)) + ")"             # 1,571 characters: under 2048
    items = "\n".join(f'"item{i:04d}" = {{ value = ["0"], test = "{group}" }}' for i in range(250))
    text = derive(("output_backlog = 1_048_576", "output_backlog = 262_144"),
                  ("[qurccfg]\n", items + "\n\n[qurccfg]\n"))
    try:
        load_profile(str(write(tmp_path, text, "check.toml")))
    except ProfileError:
        return                                                         # refused at load: fine
    host, _ = open_modem(str(write(tmp_path, text)))
    answer = host.at("AT+QCFG=?", timeout=15)
    assert answer.count(b"+QCFG: ") == 11 + 250 and answer.endswith(b"\r\n\r\nOK\r\n"), \
        (len(answer), answer.count(b"+QCFG: "))


# ------------------------------------------------ a SIMCom-A76xx-like copy: Quectel's own commands gone

A76_REMOVED = ["E", "S", "&F", "Z", "+CMEE", "+QCCID", "+QGMR", "+QNWINFO", "+QSPN", "+QCSQ", "+QENG", "+QCFG",
               "+QURCCFG", "+QINDCFG", "+QSIMSTAT", "+QSIMDET", "+QINISTAT", "+QPINC", "+QGDCNT", "+QPOWD",
               "+QSCLK", "+QLTS", "+QGPS", "+QGPSEND", "+QGPSLOC", "+QGPSCFG", "+CFUN", "+CGEREP", "+QFUPL",
               "+QFDEL", "+QIDNSGIP", "+QPING", "+QNTP"]
A76 = derive(('name = "ec2x"', 'name = "a7670-user"'), ('manufacturer = "Quectel"', 'manufacturer = "SIMCOM INCORPORATED"'),
             ('model = "EC25"', 'model = "A7670E"'), ("cmee = 1", "cmee = 2"),
             text=up2.without_commands(EC2X, *A76_REMOVED))
A76_LINES = ["ATE0", "ATE1", "ATS3?", "ATS3=13", "AT&F", "ATZ", "AT+CMEE=2", "AT+CMEE?", "AT+CMEE=?", "AT+QPOWD",
             "AT+QPOWD=1", "AT+CFUN=1,1", "AT+CFUN?", "AT+CFUN=?", 'AT+QFDEL="*"', "AT+QFUPL=?", "AT+CGEREP?",
             "AT+CGEREP=2", "AT+QCCID", "AT+QGPS?", "AT+QGPS=1", 'AT+QIDNSGIP=1,"x"', "AT+QPING=?", "AT+QNTP?",
             'AT+QENG="servingcell"', "AT+QCSQ", 'AT+QCFG="nwscanmode"', "AT+QLTS=2", "AT+QSCLK=1"]


def test_an_a7670_copy_answers_error_to_what_it_lacks_in_every_result_format(open_modem, tmp_path):
    host, _ = open_modem(str(write(tmp_path, A76)), echo=True)
    at = lambda line: V0Host.at(host, line)                            # noqa: E731
    assert at("AT+CGMI") == b"AT+CGMI\r\r\nSIMCOM INCORPORATED\r\n\r\nOK\r\n"    # echo stays: no ATE
    for line in A76_LINES:                                             # CMEE 2 from the profile: still plain
        assert at(line) == line.encode() + b"\r\r\nERROR\r\n", line
    assert at("AT+CSQ;+QCCID") == b"AT+CSQ;+QCCID\r\r\n+CSQ: 24,99\r\n\r\nERROR\r\n"
    assert at("AT+QCCID;+CSQ") == b"AT+QCCID;+CSQ\r\r\nERROR\r\n"
    assert at("ATV0") == b"ATV0\r0\r"
    for line in A76_LINES:
        assert at(line) == line.encode() + b"\r4\r", line
    host.write(b"ATV1Q1\r")                                             # quiet: no result at all
    assert host.quiet_for(0.3) == b"ATV1Q1\r"
    host.write(b"AT+QCCID\r")
    assert host.quiet_for(0.3) == b"AT+QCCID\r"
    host.write(b"ATQ0\r")
    assert host.read_until(b"OK\r\n") == b"ATQ0\r\r\nOK\r\n"


# ------------------------------------------------ the smallest receive buffers a profile takes

TCPIP_RECV_BUFFER = "recv_buffer = 65536             # bytes held for AT+QIRD before the socket stops reading"
SSL_RECV_BUFFER = "recv_buffer = 65536             # bytes held for AT+QSSLRECV before the socket stops reading"


def _tcp_round_trip(host) -> bytes:
    """AT+QIOPEN (buffer mode) to the TCP echo peer, 10 bytes sent: what AT+QIRD reads within 3 s."""
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    assert host.at('AT+QICSGP=1,1,"x","","",1;+QIACT=1') == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    host.write(b"AT+QISEND=0,10\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"0123456789")
    assert host.read_until(b"\r\nSEND OK\r\n") == b"\r\nSEND OK\r\n"
    got, deadline = b"", time.monotonic() + 3
    while len(got) < 10 and time.monotonic() < deadline:
        answer = host.at("AT+QIRD=0,1500")
        m = re.search(rb"\+QIRD: (\d+)\r\n", answer)
        got += answer[m.end():m.end() + int(m.group(1))]
        time.sleep(0.05)
    return got


@pytest.mark.parametrize("size", [2, 3, 100])
def test_a_small_tcpip_receive_buffer_still_delivers(open_modem, tmp_path, tcp_echo, size):
    host, _ = open_modem(str(write(tmp_path, derive((TCPIP_RECV_BUFFER, f"recv_buffer = {size}")))))
    assert _tcp_round_trip(host) == b"0123456789"


# (was a BUG, fixed: tcpip.recv_buffer = 1 loads, but the socket never reads: AT+QIRD answers
# +QIRD: 0 forever and no recv URC comes)
def test_a_one_byte_tcpip_receive_buffer_delivers_or_is_refused(open_modem, tmp_path, tcp_echo):
    text = derive((TCPIP_RECV_BUFFER, "recv_buffer = 1"))
    try:
        load_profile(str(write(tmp_path, text, "check.toml")))
    except ProfileError:
        return                                                         # refused at load: fine too
    host, _ = open_modem(str(write(tmp_path, text)))
    assert _tcp_round_trip(host) == b"0123456789"


# (was a BUG, fixed: ssl.recv_buffer = 1 loads, but after the first piece the socket never reads
# again (resume needs inbox < 1 // 2 = 0))
def test_a_one_byte_ssl_receive_buffer_delivers_or_is_refused(open_modem, tmp_path, echo, emulator):
    text = derive((SSL_RECV_BUFFER, "recv_buffer = 1"))
    try:
        load_profile(str(write(tmp_path, text, "check.toml")))
    except ProfileError:
        return
    host, _ = open_modem(str(write(tmp_path, text)))
    assert host.at('AT+QICSGP=1,1,"x","","",1;+QIACT=1') == OK
    assert host.at('AT+QSSLOPEN=1,0,0,"echo.example",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 0,0\r\n", timeout=10) == b"\r\n+QSSLOPEN: 0,0\r\n"
    for piece in (b"first-piece", b"second-piece", b"third-piece"):      # one TLS record each
        assert host.send_data(0, piece) == b"\r\nSEND OK\r\n"
        got, deadline = b"", time.monotonic() + 3
        while len(got) < len(piece) and time.monotonic() < deadline:
            answer = host.at("AT+QSSLRECV=0,1500")
            m = re.search(rb"\+QSSLRECV: (\d+)\r\n", answer)
            got += answer[m.end():m.end() + int(m.group(1))]
            time.sleep(0.05)
        assert got == piece


# ============================================================ part 2: refused at start-up

# (was a BUG, fixed: serial.line_max = 64 with tcpip.sendex_max = 512 loads, though
# AT+QISENDEX=<id>,"<1024 hex digits>" can never fit a command line (AT+QISENDEX=0 of more
# than 25 bytes is ERROR))
def test_a_line_too_short_for_the_largest_qisendex_is_refused(tmp_path):
    """The send_buffer rule (README: a send the command takes must fit) applied to the line
    that carries the send: AT+QISENDEX=0,"<2 * sendex_max hex digits>" is 14 + 2 * 512
    bytes after AT, so line_max 64 leaves every AT+QISENDEX=0 over 25 bytes an ERROR."""
    path = write(tmp_path, derive(("line_max = 2048", "line_max = 64")))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    assert "line_max" in str(refusal.value) and "sendex_max" in str(refusal.value)


def test_a_short_line_with_a_sendex_max_that_fits_it_takes_the_longest(open_modem, tmp_path, tcp_sink):
    """line_max 64 loads with sendex_max 24 (AT+QISENDEX=11,"<48 hex digits>": 63 characters
    after AT): 24 bytes are sent; 25 are ERROR (over sendex_max).  With sendex_max 25 the
    loader refuses it: connectID 11's longest send would be 65 characters."""
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    host, _ = open_modem(str(write(tmp_path, derive(("line_max = 2048", "line_max = 64"),
                                                    ("sendex_max = 512", "sendex_max = 24")))))
    assert host.at('AT+QICSGP=1,1,"x","","",1;+QIACT=1') == OK
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{TCP_HOST}",{TCP_PORT},0,0') == OK
    assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
    assert host.at('AT+QISENDEX=0,"' + "41" * 24 + '"') == b"\r\nSEND OK\r\n"
    assert host.at('AT+QISENDEX=0,"' + "41" * 25 + '"') == ERROR

_B = BOOT
BAD = [
    ("toml-date-for-int", derive(("cmee = 2", "cmee = 1979-05-27"), text=BG77),
     "key defaults.cmee: must be an integer, got datetime.date(1979, 5, 27)"),
    ("boot-ms-without-urcs", derive((_B, "# no boot_urcs"), text=BG77),
     "key defaults.boot_urc_ms: 3 offsets for 0 defaults.boot_urcs (one each)"),
    ("no-commands-table", BG77[:BG77.index("\n[commands]")], "key commands: missing"),
    ("error-code-a-string", derive(("dns = 561 ", 'dns = "561" '), text=BG77),
     "key ssl.errors: [dns] must be an integer, got '561'"),
    ("csq-float", derive(("csq = [11, 3]", "csq = [11, 3.0]"), text=BG77),
     "key network.csq: item 1: must be an integer, got 3.0"),
    ("first-id-negative", derive(("first_id = 2", "first_id = -1"), text=BG77),
     "key pdp.first_id: must be in 0..255, got -1"),
    ("last-id-300", derive(("last_id = 6", "last_id = 300"), text=BG77), "key pdp.last_id: must be in 0..255, got 300"),
    ("pdp-reversed", derive(("first_id = 2", "first_id = 7"), text=BG77), "key pdp.last_id: smaller than pdp.first_id"),
    ("tz-minus-97", derive(("timezone_quarters = -20", "timezone_quarters = -97"), text=BG77),
     "key defaults.timezone_quarters: must be in -96..96, got -97"),
    ("ipr-not-listed", derive(("ipr = 9600", "ipr = 921600"), text=BG77),
     "key defaults.ipr: 921600 is not 0 (auto-baud) or one of serial.baud_rates"),
    ("delay-for-removed-command", derive(('"+CBC" = "*"\n', ""), text=BG77),
     'key timing.response_delay_ms."at+cbc": not a command of the profile\'s [commands]'),
    ("errors-array-of-tables", derive(("[ssl.errors]", "[[ssl.errors]]"), text=BG77),
     "key ssl.errors: must be a table, got [{"),
    ("tcpip-pool-split", derive(("sockets = 7 #", "sockets = 6 #"), text=BG77),
     "key tcpip.sockets: 7, but SSL clientIDs and TCP/IP connectIDs are one pool of ssl.sockets = 6"),
    ("extends-top-level", 'extends = "ec2x"\n' + BG77, "unknown section [extends]"),
]


@pytest.mark.parametrize("text, message", [pytest.param(t, m, id=i) for i, t, m in BAD])
def test_a_broken_bg77_stops_start_up_with_one_line(tmp_path, text, message):
    path = write(tmp_path, text)
    line = up2._cli_refusal(tmp_path, path)
    assert line.startswith(f"modem-emulator: profile {path}: {message}"), line


def test_a_non_utf8_byte_in_a_comment_is_refused(tmp_path):
    path = write(tmp_path, b"# caf\xe9 BG77 profile\n" + BG77.encode())
    line = up2._cli_refusal(tmp_path, path)
    assert line.startswith(f"modem-emulator: profile {path}: not valid TOML: 'utf-8' codec can't decode byte 0xe9")


# (was a BUG, fixed: a {field} in a template that takes none is refused with the garbled 'must
# use only , each as it stands (got {cid})')
def test_a_field_in_a_template_without_fields_is_refused_clearly(tmp_path):
    path = write(tmp_path, derive(('me_detach = "+CGEV: ME DETACH X"', 'me_detach = "+CGEV: ME DETACH {cid}"'),
                                  text=BG77))
    with pytest.raises(ProfileError) as refusal:
        load_profile(str(path))
    message = str(refusal.value)
    assert message.startswith(f"profile {path}: key cgev.me_detach: "), message
    assert "only ," not in message and "{cid}" in message, message
