"""The device commands drivers send on start-up and while polling (emulator/commands/device.py):
exact answers, refusals, what survives AT+CFUN=1,1, and the AT+QCFG-style items as profile data.
The driver sequences that need them are replayed in test_adversarial_driver_init.py."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest

from emulator.commands.device import _canonical, form_groups
from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
EC2X = (PROFILE_DIR / "ec2x.toml").read_text()


def answer(*lines: str) -> bytes:
    """One command's information lines (one frame) and OK."""
    return b"\r\n" + "\r\n".join(lines).encode() + b"\r\n" + OK


def cme(code: int) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


def test_v250_hang_up_and_result_code_selection(ec2x):
    for line in ("ATH", "ATH0", "ATX", "ATX0", "ATX4", "ATE0H0X4"):
        assert ec2x.at(line) == OK, line
    for line in ("ATH1", "ATX5"):
        assert ec2x.at(line) == ERROR, line


def test_character_set(ec2x):
    assert ec2x.at("AT+CSCS=?") == answer('+CSCS: ("GSM","IRA","UCS2")')
    assert ec2x.at("AT+CSCS?") == answer('+CSCS: "GSM"')
    assert ec2x.at('AT+CSCS="ucs2"') == OK
    assert ec2x.at("AT+CSCS?") == answer('+CSCS: "UCS2"')
    assert ec2x.at('AT+CSCS="HEX"') == cme(50)
    assert ec2x.at("AT+CSCS=IRA") == cme(50)               # the character set is a quoted string
    assert ec2x.at("AT+CSCS?") == answer('+CSCS: "UCS2"')


def test_time_zone_update_and_reporting(ec2x):
    assert ec2x.at("AT+CTZU=?") == answer("+CTZU: (0,1,3)")
    assert ec2x.at("AT+CTZU?") == answer("+CTZU: 1")
    assert ec2x.at("AT+CTZU=3") == OK
    assert ec2x.at("AT+CTZU?") == answer("+CTZU: 3")
    assert ec2x.at("AT+CTZU=2") == cme(50)
    assert ec2x.at("AT+CTZR=?") == answer("+CTZR: (0-2)")
    assert ec2x.at("AT+CTZR=2;+CTZR?") == answer("+CTZR: 2")
    assert ec2x.at("AT+CTZR=3") == cme(50)


QLTS = re.compile(rb'\r\n\+QLTS: "(\d{4}/\d\d/\d\d,\d\d:\d\d:\d\d)([+-]\d\d),0"\r\n\r\nOK\r\n')


def qlts(host, line: str) -> tuple[datetime, str]:
    m = QLTS.fullmatch(host.at(line))
    assert m, line
    return datetime.strptime(m.group(1).decode(), "%Y/%m/%d,%H:%M:%S").replace(tzinfo=timezone.utc), m.group(2).decode()


def test_network_time_follows_the_modem_clock(ec2x):
    """AT+QLTS: GMT (modes 0, 1) or local time (2), with the zone in quarters and DST 0,
    from the modem clock AT+CCLK set."""
    assert ec2x.at('AT+CCLK="30/06/15,10:20:30+32"') == OK           # local 10:20:30 at UTC+8
    gmt, zone = qlts(ec2x, "AT+QLTS")
    assert zone == "+32"
    assert abs(gmt - datetime(2030, 6, 15, 2, 20, 30, tzinfo=timezone.utc)) < timedelta(seconds=5)
    assert abs(qlts(ec2x, "AT+QLTS=1")[0] - gmt) < timedelta(seconds=5)
    local, zone = qlts(ec2x, "AT+QLTS=2")
    assert zone == "+32" and abs(local - gmt - timedelta(hours=8)) < timedelta(seconds=5)
    assert ec2x.at('AT+CCLK="30/06/15,10:20:30-14"') == OK
    local, zone = qlts(ec2x, "AT+QLTS=2")
    assert zone == "-14" and abs(local - datetime(2030, 6, 15, 10, 20, 30, tzinfo=timezone.utc)) < timedelta(seconds=5)
    assert ec2x.at("AT+QLTS=3") == cme(50)
    assert ec2x.at("AT+QLTS=?") == answer("+QLTS: (0-2)")
    assert ec2x.at("AT+CFUN=4") == OK                                   # no network, no time
    assert ec2x.at("AT+QLTS=2") == answer('+QLTS: ""')


def test_identity_and_status_answers(ec2x):
    assert ec2x.at("AT+GCAP") == answer("+GCAP: +CGSM")
    assert ec2x.at("AT+QGMR") == answer("EC25EFAR06A06M4G_01.001.01.001")
    assert ec2x.at("AT+CPAS") == answer("+CPAS: 0")
    assert ec2x.at("AT+CPAS=?") == answer("+CPAS: (0,3,4)")
    assert ec2x.at("AT+CBC") == answer("+CBC: 0,100,3800")
    assert ec2x.at("AT+QSCLK=?") == answer("+QSCLK: (0,1)")
    assert ec2x.at("AT+QSCLK=1;+QSCLK?") == answer("+QSCLK: 1")
    assert ec2x.at("AT+QSCLK=2") == ERROR


def test_network_polls_registered_and_not(ec2x):
    assert ec2x.at("AT+QNWINFO") == answer('+QNWINFO: "FDD LTE","46001","LTE BAND 3",1650')
    assert ec2x.at("AT+QSPN") == answer('+QSPN: "CHN-UNICOM","CHN-UNICOM","",0,"46001"')
    # <rssi> from the profile's AT+CSQ 24: -113 + 2 * 24 dBm
    assert ec2x.at("AT+QCSQ") == answer('+QCSQ: "LTE",-65,-94,142,-9')
    assert ec2x.at("AT+CFUN=4") == OK
    assert ec2x.at("AT+QNWINFO") == answer("+QNWINFO: No Service")
    assert ec2x.at("AT+QSPN") == cme(30)
    assert ec2x.at("AT+QCSQ") == answer('+QCSQ: "NOSERVICE"')
    assert ec2x.at("AT+CFUN=1") == OK
    assert ec2x.at("AT+QNWINFO").startswith(b'\r\n+QNWINFO: "FDD LTE"')


QCFG_TEST = answer(
    '+QCFG: "gprsattach",(0,1)',
    '+QCFG: "nwscanmode",(0-3),(0,1)',
    '+QCFG: "nwscanseq",(00-0102030405),(0,1)',
    '+QCFG: "servicedomain",(0,1,2),(0,1)',
    '+QCFG: "roamservice",(1,2,255),(0,1)',
    '+QCFG: "urc/ri/ring",("off","pulse","always","auto","wave"),(1-2000),(1000-5000),(1000-5000),("off","on"),(1-5)',
    '+QCFG: "urc/ri/smsincoming",("off","pulse","always"),(1-2000),(1-5)',
    '+QCFG: "urc/ri/other",("off","pulse"),(1-2000),(1-5)',
    '+QCFG: "risignaltype",("respective","physical")',
    '+QCFG: "urc/delay",(0,1)',
    '+QCFG: "apready",(0,1),(0,1),(100-3000)',
    '+QCFG: "cmux/urcport",(0-4),(0,1)',
)


def test_qcfg_items_read_write_and_refusals(ec2x):
    assert ec2x.at("AT+QCFG=?") == QCFG_TEST
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",0')
    assert ec2x.at('AT+QCFG="nwscanmode",3,1') == OK                   # <effect> taken, not shown
    assert ec2x.at('AT+QCFG="NwScanMode"') == answer('+QCFG: "nwscanmode",3')
    assert ec2x.at('AT+QCFG="urc/ri/ring","OFF"') == OK                # the module's spelling kept
    assert ec2x.at('AT+QCFG="urc/ri/ring"') == answer('+QCFG: "urc/ri/ring","off",120,1000,5000,"off",1')
    assert ec2x.at('AT+QCFG="urc/ri/ring",,200,,,"on"') == OK          # omitted: unchanged
    assert ec2x.at('AT+QCFG="urc/ri/ring"') == answer('+QCFG: "urc/ri/ring","off",200,1000,5000,"on",1')
    assert ec2x.at('AT+QCFG="apready",1,1,200') == OK
    assert ec2x.at('AT+QCFG="apready"') == answer('+QCFG: "apready",1,1,200')
    for bad in ('AT+QCFG="nwscanmode",4',            # out of (0-3)
                'AT+QCFG="nwscanmode",1,2',          # <effect> out of (0,1)
                'AT+QCFG="nwscanmode",1,1,1',        # one value too many
                'AT+QCFG="nwscanmode","1"',          # a number given as a string
                'AT+QCFG="urc/ri/ring",pulse',       # a string given bare
                'AT+QCFG="urc/ri/ring","loud"',
                'AT+QCFG="apready",1,1,99',
                'AT+QCFG="band"',                    # no such item on this module
                "AT+QCFG=nwscanmode",                # the item is a quoted string
                "AT+QCFG?", "AT+QCFG"):
        assert ec2x.at(bad) == ERROR, bad
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",3')   # refusals changed nothing
    assert ec2x.at('AT+QCFG="apready"') == answer('+QCFG: "apready",1,1,200')


def test_qcfg_nwscanseq_is_a_sequence_of_rat_codes(ec2x):
    """AT+QCFG="nwscanseq": 00 (automatic) or a string of two-digit RAT codes 01-05 (GSM,
    TD-SCDMA, WCDMA, LTE, CDMA), each at most once -- not a number: 0403 (LTE, then WCDMA) and
    the real EC25's 0301020405 are taken and shown with their leading zero; mbed-os's EC2x
    driver and a BG77 driver write such sequences."""
    assert ec2x.at('AT+QCFG="nwscanseq"') == answer('+QCFG: "nwscanseq",00')
    assert ec2x.at('AT+QCFG="nwscanseq",0403,1') == OK
    assert ec2x.at('AT+QCFG="nwscanseq"') == answer('+QCFG: "nwscanseq",0403')
    assert ec2x.at('AT+QCFG="nwscanseq",0301020405') == OK
    assert ec2x.at('AT+QCFG="nwscanseq"') == answer('+QCFG: "nwscanseq",0301020405')
    for bad in ("4", "004", "0404", "0006", "0400", "06", "030102040501", "0", '"04"'):
        assert ec2x.at(f'AT+QCFG="nwscanseq",{bad}') == ERROR, bad
    assert ec2x.at('AT+QCFG="nwscanseq",00') == OK
    assert ec2x.at('AT+QCFG="nwscanseq"') == answer('+QCFG: "nwscanseq",00')
    assert ec2x.at('AT+QCFG="roamservice",2,1;+QCFG="roamservice"') == answer('+QCFG: "roamservice",2')
    assert ec2x.at('AT+QCFG="roamservice",3') == ERROR


def test_urc_port_and_indication_items(ec2x):
    assert ec2x.at("AT+QURCCFG=?") == answer('+QURCCFG: "urcport",("usbat","usbmodem","uart1")')
    assert ec2x.at('AT+QURCCFG="urcport"') == answer('+QURCCFG: "urcport","usbat"')
    assert ec2x.at('AT+QURCCFG="urcport","uart1"') == OK
    assert ec2x.at('AT+QURCCFG="urcport"') == answer('+QURCCFG: "urcport","uart1"')
    assert ec2x.at('AT+QURCCFG="urcport","uart2"') == ERROR
    assert ec2x.at('AT+QINDCFG="csq"') == answer('+QINDCFG: "csq",0')
    assert ec2x.at('AT+QINDCFG="csq",1,1') == OK
    assert ec2x.at('AT+QINDCFG="csq"') == answer('+QINDCFG: "csq",1')
    assert ec2x.at("AT+QINDCFG=?").startswith(b'\r\n+QINDCFG: "all",(0,1),(0,1)\r\n+QINDCFG: "csq",(0,1),(0,1)\r\n')


def test_nv_items_survive_a_reboot_and_the_rest_start_again(ec2x):
    assert ec2x.at('AT+QCFG="nwscanmode",3;+QURCCFG="urcport","uart1";+CTZU=0;+QSCLK=1') == OK
    assert ec2x.at('AT+CSCS="UCS2";+CTZR=1') == OK
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK                 # echo is on again after the reboot
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",3')
    assert ec2x.at('AT+QURCCFG="urcport"') == answer('+QURCCFG: "urcport","uart1"')
    assert ec2x.at("AT+CTZU?;+QSCLK?") == b"\r\n+CTZU: 0\r\n\r\n+QSCLK: 1\r\n" + OK   # a frame each
    assert ec2x.at("AT+CSCS?") == answer('+CSCS: "GSM"')
    assert ec2x.at("AT+CTZR?") == answer("+CTZR: 0")


def test_sms_set_up_is_kept_and_read_back_until_a_reboot(ec2x):
    """What driver start-ups set (Zerynth's BG96 init: AT+CMGF=1, AT+CSCA?, AT+CNMI=2,1,0,0,0)
    answers as an EC25 does; no message is ever sent or received."""
    assert ec2x.at("AT+CMGF=?") == answer("+CMGF: (0,1)")
    assert ec2x.at("AT+CMGF?") == answer("+CMGF: 0")
    assert ec2x.at("AT+CMGF=1") == OK
    assert ec2x.at("AT+CMGF?") == answer("+CMGF: 1")
    assert ec2x.at("AT+CMGF") == OK
    assert ec2x.at("AT+CMGF?") == answer("+CMGF: 0")
    for line in ("AT+CMGF=2", "AT+CMGF=1,0", 'AT+CMGF="1"x'):
        assert ec2x.at(line) == ERROR, line
    assert ec2x.at("AT+CSCA=?") == OK
    assert ec2x.at("AT+CSCA?") == answer('+CSCA: "+8613010112500",145')
    assert ec2x.at('AT+CSCA="+8613800100500"') == OK
    assert ec2x.at("AT+CSCA?") == answer('+CSCA: "+8613800100500",145')
    assert ec2x.at('AT+CSCA="10086",129') == OK
    assert ec2x.at("AT+CSCA?") == answer('+CSCA: "10086",129')
    for line in ("AT+CSCA=10086", 'AT+CSCA="call me"', 'AT+CSCA="+86",256'):
        assert ec2x.at(line) == ERROR, line
    assert ec2x.at("AT+CNMI=?") == answer("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
    assert ec2x.at("AT+CNMI?") == answer("+CNMI: 2,1,0,0,0")
    assert ec2x.at("AT+CNMI=1,2,2,1,1") == OK
    assert ec2x.at("AT+CNMI?") == answer("+CNMI: 1,2,2,1,1")
    assert ec2x.at("AT+CNMI=2") == OK                     # the others as they were
    assert ec2x.at("AT+CNMI?") == answer("+CNMI: 2,2,2,1,1")
    for line in ("AT+CNMI=3", "AT+CNMI=2,4", "AT+CNMI=2,1,1", "AT+CNMI=2,1,0,3", "AT+CNMI=2,1,0,0,2",
                 "AT+CNMI=2,1,0,0,0,0"):
        assert ec2x.at(line) == ERROR, line
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT+CMGF?;+CSCA?;+CNMI?") == (b'\r\n+CMGF: 0\r\n\r\n+CSCA: "+8613010112500",145\r\n'
                                                  b"\r\n+CNMI: 2,1,0,0,0\r\n" + OK)


def test_the_ml302_has_ath_but_not_the_quectel_items(ml302):
    assert ml302.at("ATH") == OK
    for line in ('AT+QCFG="nwscanmode"', "AT+QNWINFO", "AT+CTZU?", "AT+CBC", "AT+CMGF=1", "AT+CNMI?"):
        assert ml302.at(line) == ERROR, line


# -- the items are data ---------------------------------------------------------------------
def test_a_user_profile_brings_its_own_items(tmp_path, open_modem):
    assert "[qurccfg]\n" in EC2X
    text = EC2X.replace("[qurccfg]\n",
                        '"iotopmode" = { value = ["2"], test = "(0-2),(0,1)", extra = 1 }\n'
                        '"band" = { value = ["0xf", "0x100002000000000f0e189f", "0x10004200000000090e189f"], '
                        'test = "<gsmbandval>,<emtcbandval>,<nbiotbandval>,(0,1)", extra = 1 }\n\n[qurccfg]\n', 1)
    path = tmp_path / "bg96ish.toml"
    path.write_text(text)
    host, _ = open_modem(str(path))
    assert host.at('AT+QCFG="iotopmode",0,1;+QCFG="iotopmode"') == answer('+QCFG: "iotopmode",0')
    assert host.at('AT+QCFG="band",F,80000,80000,1') == OK                # hex masks: any letters/digits
    assert host.at('AT+QCFG="band"') == answer('+QCFG: "band",F,80000,80000')
    assert host.at('AT+QCFG="band",F,80000,80000,2') == ERROR             # <effect> out of (0,1)


@pytest.mark.parametrize("edit, message", [
    (('"+QCFG" = "*"\n', '"+QCFG" = "*"\n'), None),                               # (the file loads)
    (("[qcfg]\n", "[qcfgx]\n"), "unknown section [qcfgx]"),
    (('"nwscanmode" = { value = ["0"],', '"nwscanmode" = { value = ["5"],'),
     "key qcfg: [nwscanmode] value '5' is not one the test form '(0-3),(0,1)' allows"),
    (('"nwscanmode" = { value = ["0"],', '"nwscanmode" = { value = ["0"], colour = 1,'),
     "key qcfg: [nwscanmode] unknown field 'colour' (value, test, extra)"),
    (('"nwscanmode" = { value = ["0"], test = "(0-3),(0,1)", extra = 1 }', '"nwscanmode" = { value = ["0"] }'),
     "key qcfg: [nwscanmode] test: missing"),
    (('"risignaltype" = { value = [\'"respective"\']', '"risignaltype" = { value = ["\\"resp\\r\\nOK\\""]'),
     "key qcfg: [risignaltype] item 0: '\"resp\\r\\nOK\"' holds '\\r'"),
    (("channel = 1650\n", ""), "[commands] lists +QNWINFO, which needs network.channel"),
    (("battery = [0, 100, 3800]", "# battery"), "[commands] lists +CBC, which needs device.battery"),
])
def test_item_tables_and_command_needs_are_checked_at_load(tmp_path, edit, message):
    path = tmp_path / "user.toml"
    old, new = edit
    assert old in EC2X
    path.write_text(EC2X.replace(old, new, 1))
    if message is None:
        assert load_profile(str(path)).name == "ec2x"
        return
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value).startswith(f"profile {path}: {message}"), str(info.value)


def test_a_profile_without_the_item_table_cannot_list_its_command(tmp_path):
    start, end = EC2X.index("[qcfg]\n"), EC2X.index("[qurccfg]\n")
    path = tmp_path / "user.toml"
    path.write_text(EC2X[:start] + EC2X[end:])
    with pytest.raises(ProfileError, match=r"\[commands\] lists \+QCFG, which needs qcfg"):
        load_profile(str(path))


def test_test_form_groups_and_values():
    assert form_groups('("off","pulse"),(1-2000),<x>,(0,1)') == [['"off"', '"pulse"'], ["1-2000"], None, ["0", "1"]]
    assert form_groups('("a,b","c")') == [['"a,b"', '"c"']]
    assert _canonical('"PULSE"', ['"off"', '"pulse"']) == '"pulse"'
    assert _canonical("2000", ["1-2000"]) == "2000"
    assert _canonical("2001", ["1-2000"]) is None
    assert _canonical("007", ["0-9"]) == "7"
    assert _canonical("0201", ["00-0403"]) == "0201"         # a scan sequence: digits as given
    assert _canonical("00", ["00-0403"]) == "00" and _canonical("5", ["00-0403"]) is None
    assert _canonical('"1"', ["0", "1"]) is None
    assert _canonical("0x1F", None) == "0x1F"
    assert _canonical("1;2", None) is None


# -- NV: what the module keeps across a power cycle -------------------------------------------
def test_nv_values_survive_a_restart_of_the_emulator(open_modem, tmp_path):
    state = tmp_path / "nv-state"
    first, _ = open_modem("ec2x", state_dir=state)
    assert first.at('AT+QCFG="nwscanmode",3,1;+QURCCFG="urcport","uart1";+CTZU=3;+QSCLK=1') == OK
    assert first.at('AT+QINDCFG="csq",1;+CTZR=2;+CSCS="UCS2"') == OK
    first.close()
    again, _ = open_modem("ec2x", state_dir=state)          # the same state dir: a power cycle
    assert again.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",3')
    assert again.at('AT+QURCCFG="urcport"') == answer('+QURCCFG: "urcport","uart1"')
    assert again.at('AT+QINDCFG="csq"') == answer('+QINDCFG: "csq",1')
    assert again.at("AT+CTZU?;+QSCLK?") == b"\r\n+CTZU: 3\r\n\r\n+QSCLK: 1\r\n" + OK
    assert again.at("AT+CTZR?;+CSCS?") == b'\r\n+CTZR: 0\r\n\r\n+CSCS: "GSM"\r\n' + OK   # not NV


def test_a_damaged_or_foreign_nv_file_keeps_the_defaults_it_cannot_use(open_modem, tmp_path, caplog):
    state = tmp_path / "nv-state"
    state.mkdir()
    (state / "nv.json").write_text(
        '{"ctzu": 2, "qsclk": 1, "items": {"qcfg": {"nwscanmode": ["9"], "apready": ["1", "1", "200"],'
        ' "band": ["F"]}, "qurccfg": {"urcport": "uart1"}, "nope": {"x": ["1"]}}}')
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("AT+CTZU?;+QSCLK?") == b"\r\n+CTZU: 1\r\n\r\n+QSCLK: 1\r\n" + OK     # 2 is no CTZU
    assert host.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",0')          # 9 out of range
    assert host.at('AT+QCFG="apready"') == answer('+QCFG: "apready",1,1,200')
    assert host.at('AT+QURCCFG="urcport"') == answer('+QURCCFG: "urcport","usbat"')
    warned = [r.getMessage() for r in caplog.records if "does not fit this profile" in r.getMessage()]
    assert len(warned) == 4, warned               # nwscanmode, band, urcport, the unknown table
    assert not [r for r in caplog.records if r.exc_info]
    (state / "nv.json").write_bytes(b"\x00garbage")
    other, _ = open_modem("ec2x", state_dir=state)
    assert other.at('AT+QCFG="apready"') == answer('+QCFG: "apready",0,0,500')


def test_identity_forms_ml302_hosts_use_and_the_ec2x_lacks(ml302, ec2x):
    """AT+CGSN=<snt> (27.007 §5.4) and AT+ICCID: RT-Thread's and OneOS's ml302 drivers read
    the IMEI and ICCID with them (tests/e2e/test_adversarial_ml302_drivers.py); the EC2x
    manual has the execute form of AT+CGSN only."""
    assert ml302.at("AT+CGSN") == answer("869523051234567")
    assert ml302.at("AT+CGSN=0") == answer("869523051234567")
    assert ml302.at("AT+CGSN=1") == answer("+CGSN: 869523051234567")
    assert ml302.at("AT+CGSN=2") == answer("+CGSN: 8695230512345601")    # IMEISV: 14 digits + SVN
    assert ml302.at("AT+CGSN=3") == answer("+CGSN: 01")
    assert ml302.at("AT+CGSN=?") == answer("+CGSN: (0-3)")
    for bad in ("AT+CGSN=4", "AT+CGSN=1,1", "AT+CGSN=x"):
        assert ml302.at(bad) == ERROR, bad
    assert ml302.at("AT+ICCID") == answer("+ICCID: 898604A1192090123456")
    assert ml302.at("AT+CCID") == answer("+CCID: 898604A1192090123456")
    assert ec2x.at("AT+CGSN=1") == ERROR and ec2x.at("AT+ICCID") == ERROR
    assert ec2x.at("AT+CGSN") == answer(load_profile("ec2x")["identity.imei"])


def test_ml302_attach_and_address_as_its_drivers_read_them(ml302, emulator, echo):
    """AT+CGATT and AT+CGPADDR on the ML302 (RT-Thread's ml302 start-up waits for
    "+CGATT: 1" and reads its address from AT+CGPADDR=1); a detach ends its SSL socket
    with the ML302's "close" URC."""
    assert ml302.at("AT+CGATT?") == answer("+CGATT: 1")
    assert ml302.at("AT+CGPADDR=1") == answer('+CGPADDR: 1,"0.0.0.0"')
    assert ml302.at("AT+CGACT=1,1") == answer("+CGACT: 1, 1, 10.127.79.43")
    assert ml302.at("AT+CGPADDR=1") == answer('+CGPADDR: 1,"10.127.79.43"')
    assert ml302.at('AT+QSSLOPEN=2,0,"echo.example",443,0') == OK
    assert ml302.read_until(b"+QSSLOPEN: 2,0\r\n", timeout=5).endswith(b"+QSSLOPEN: 2,0\r\n")
    assert ml302.at("AT+CGATT=0") == OK
    assert ml302.read_until(b'+QSSLURC: "close",2\r\n', timeout=3) == b'\r\n+QSSLURC: "close",2\r\n'
    assert ml302.at("AT+CGATT?") == answer("+CGATT: 0")
    assert ml302.at("AT+CGPADDR=1") == answer('+CGPADDR: 1,"0.0.0.0"')


# -- (U)SIM status, PIN counters, data counters (EC2x) ---------------------------------------------
def test_sim_status_detection_init_and_pin_counters(open_modem, emulator):
    # on manual time: what the SIM answers between RDY and +CPIN: READY is under test, and
    # on a loaded machine a real-time boot may run ahead of the host
    ec2x, port = open_modem("ec2x", manual_time=True)
    assert ec2x.at("AT+QSIMSTAT=?") == answer("+QSIMSTAT: (0,1)")
    assert ec2x.at("AT+QSIMSTAT?") == answer("+QSIMSTAT: 0,1")          # a SIM is in
    assert ec2x.at("AT+QSIMSTAT=1;+QSIMSTAT?") == answer("+QSIMSTAT: 1,1")
    assert ec2x.at("AT+QSIMSTAT=2") == cme(50)
    assert ec2x.at("AT+QSIMDET=?") == answer("+QSIMDET: (0,1),(0,1)")
    assert ec2x.at("AT+QSIMDET?") == answer("+QSIMDET: 0,0")
    assert ec2x.at("AT+QSIMDET=1,0;+QSIMDET?") == answer("+QSIMDET: 1,0")
    for line in ("AT+QSIMDET=1", "AT+QSIMDET=1,2", "AT+QSIMDET=1,0,0"):
        assert ec2x.at(line) == cme(50), line
    assert ec2x.at("AT+QSIMDET?") == answer("+QSIMDET: 1,0")
    assert ec2x.at("AT+QINISTAT=?") == answer("+QINISTAT: (0-7)")
    assert ec2x.at("AT+QINISTAT") == answer("+QINISTAT: 7")
    assert ec2x.at("AT+QPINC=?") == answer('+QPINC: ("SC","P2")')
    assert ec2x.at("AT+QPINC?") == answer('+QPINC: "SC",3,10', '+QPINC: "P2",3,10')
    assert ec2x.at('AT+QPINC="p2"') == answer('+QPINC: "P2",3,10')
    assert ec2x.at('AT+QPINC="PN"') == cme(50)
    # a restart: the SIM starts again (busy, then ready) and both switches are kept (NV)
    assert ec2x.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05)                             # the reboot's RDY delay
    ec2x.read_until(b"RDY\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK                 # echo is on again after the reboot
    assert ec2x.at("AT+QINISTAT") == answer("+QINISTAT: 0")
    assert ec2x.at("AT+QSIMSTAT?") == answer("+QSIMSTAT: 1,2")          # not known yet
    assert ec2x.at("AT+QPINC?") == cme(14)
    emulator.advance(port, 0.365)                            # +CPIN: READY at 360 ms, +QUSIM at 380
    ec2x.read_until(b"+CPIN: READY\r\n")
    assert ec2x.at("AT+QINISTAT") == answer("+QINISTAT: 1")             # SMS DONE still to come
    emulator.advance(port, 0.3)                              # SMS DONE at 600 ms
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("AT+QINISTAT") == answer("+QINISTAT: 7")
    assert ec2x.at("AT+QSIMSTAT?;+QSIMDET?") == b"\r\n+QSIMSTAT: 1,1\r\n\r\n+QSIMDET: 1,0\r\n" + OK


def test_sim_switches_survive_a_restart_of_the_emulator(open_modem, tmp_path):
    state = tmp_path / "nv-sim"
    first, _ = open_modem("ec2x", state_dir=state)
    assert first.at("AT+QSIMSTAT=1;+QSIMDET=1,1") == OK
    first.close()
    again, _ = open_modem("ec2x", state_dir=state)
    assert again.at("AT+QSIMSTAT?;+QSIMDET?") == b"\r\n+QSIMSTAT: 1,1\r\n\r\n+QSIMDET: 1,1\r\n" + OK


QGDCNT = re.compile(rb"\r\n\+QGDCNT: (\d+),(\d+)\r\n\r\nOK\r\n")


def counters(host) -> tuple[int, int]:
    m = QGDCNT.search(host.at("AT+QGDCNT?"))       # (a "recv" URC may come first)
    assert m, "not a +QGDCNT answer"
    return int(m.group(1)), int(m.group(2))


def counted(host, want: tuple[int, int]) -> bool:
    deadline = time.monotonic() + 10
    while counters(host) != want:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_data_counters_count_socket_traffic_reset_and_save(open_modem, emulator, tmp_path):
    from emulator.testing.peers import TcpServer
    state = tmp_path / "qgdcnt"
    host, _ = open_modem("ec2x", state_dir=state)
    assert host.at("AT+QGDCNT=?") == answer("+QGDCNT: (0,1)")
    assert counters(host) == (0, 0)
    with TcpServer("echo") as server:
        emulator.router.add_map("count.example", 7000, "127.0.0.1", server.port)
        assert host.at('AT+QICSGP=1,1,"internet","","",1;+QIACT=1') == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","count.example",7000,0,0') == OK
        host.read_until(b"+QIOPEN: 0,0\r\n")
        host.write(b"AT+QISEND=0,100\r")
        host.read_until(b"> ")
        host.write(b"x" * 100)
        host.read_until(b"SEND OK\r\n")
        assert counted(host, (100, 100))                               # plain TCP: the payload,
                                                                       # and its echo
        assert host.at("AT+QGDCNT=1") == OK                            # saved
        host.write(b"AT+QISEND=0,20\r")
        host.read_until(b"> ")
        host.write(b"y" * 20)
        host.read_until(b"SEND OK\r\n")
        assert counted(host, (120, 120))
        assert host.at("AT+QGDCNT=2") == ERROR
        assert host.at("AT+CFUN=1,1") == OK                            # a restart: the saved ones
        host.read_until(b"+QIND: PB DONE\r\n")
        assert host.at("ATE0") == b"ATE0\r" + OK
        assert counters(host) == (100, 100)
        assert host.at("AT+QGDCNT=0") == OK
        assert counters(host) == (0, 0)
