"""Adversarial tests of the device commands (emulator/commands/device.py) and of the item
tables behind AT+QCFG / AT+QURCCFG / AT+QINDCFG (emulator/modem/profile.py `_item`):
hostile AT syntax, V.250 framing under ATV0 / ATQ1 / AT+CMEE=2, state across AT&F, ATZ,
AT+CFUN and several modems, and hostile user profiles.

Every test asserts exact bytes.  Tests marked "Was a bug, fixed" pinned the bugs this review
found (each says what was expected and what happened)."""
from __future__ import annotations

import logging

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"
EC2X = (PROFILE_DIR / "ec2x.toml").read_text()
ANCHOR = "[qurccfg]\n"          # the [qcfg] table ends here: extra items go before it


def answer(*lines: str) -> bytes:
    return b"\r\n" + "\r\n".join(lines).encode("latin-1") + b"\r\n" + OK


def cme(code: int | str) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


def no_traceback(caplog) -> None:
    """No log record may carry a traceback or be an error (checked in the test body, so
    that an xfail test fails on it, not its teardown)."""
    bad = [r.getMessage()[:200] for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, bad


@pytest.fixture
def clean_log(caplog):
    """no_traceback() at the end of the test."""
    caplog.set_level(logging.INFO)
    yield caplog
    no_traceback(caplog)


def user_profile(tmp_path, extra_items: str = "", edit: tuple[str, str] | None = None) -> str:
    """The EC2x profile with more [qcfg] items (and one textual edit), as a file."""
    assert ANCHOR in EC2X
    text = EC2X.replace(ANCHOR, extra_items + "\n" + ANCHOR, 1)
    if edit is not None:
        assert edit[0] in text
        text = text.replace(*edit, 1)
    path = tmp_path / "user.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_error(tmp_path, extra_items: str) -> str:
    path = user_profile(tmp_path, extra_items)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return str(info.value)


# =========================================================================================
# Hostile AT syntax on the built-in items: refused, and nothing changes
# =========================================================================================
HOSTILE_QCFG = [
    'AT+QCFG=""',                                  # empty item name
    "AT+QCFG=,",                                   # commas only
    "AT+QCFG=,,,,",
    'AT+QCFG=,"nwscanmode"',
    'AT+QCFG="nwscanmode',                         # unterminated quote
    'AT+QCFG="nwscanmode",3"',                     # stray quote after a value
    'AT+QCFG="nwscanmode""',
    'AT+QCFG=" nwscanmode",3',                     # spaces inside the quotes are part of the name
    'AT+QCFG="nwscanmode ",3',
    'AT+QCFG="nwscanmode",3,,,',                   # more parameters than value + <effect>
    'AT+QCFG="nwscanmode"' + ",1" * 300,           # hundreds of parameters
    'AT+QCFG="' + "n" * 65 + '",3',                # over-long item name
    'AT+QCFG="' + "n" * 2000 + '"',
    'AT+QCFG="nwscanmode",-1',                     # negative
    'AT+QCFG="nwscanmode",-0',
    'AT+QCFG="nwscanmode",+3',
    'AT+QCFG="nwscanmode",' + "9" * 40,            # huge
    'AT+QCFG="nwscanmode",3A',                     # letters in a numeric position
    'AT+QCFG="nwscanmode",0x3',
    'AT+QCFG="nwscanmode",3 1',                    # a space inside the number
    'AT+QCFG="nwscanmode",\xb3',                   # latin-1 '3' lookalike (superscript is below)
    'AT+QCFG="nwsc\xe1nmode",3',                   # non-ASCII item name
    'AT+QCFG="nwscanmode",""',                     # empty quoted value for a number
    'AT+QCFG="nwscanmode","3"',
    'AT+QCFG="nwscanmode",3,"1"',                  # <effect> quoted
    'AT+QCFG="nwscanmode",3,2',
    "AT+QCFG=nwscanmode,3",                        # item bare
    'AT+QCFG?', 'AT+QCFG', 'AT+QCFG="nwscanmode"?',
]


def test_hostile_qcfg_syntax_is_refused_and_changes_nothing(ec2x, clean_log):
    assert ec2x.at('AT+QCFG="nwscanmode",1') == OK
    for line in HOSTILE_QCFG:
        assert ec2x.at(line.encode("latin-1")) == ERROR, line
        assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",1'), line


HOSTILE_RING = [
    'AT+QCFG="urc/ri/ring",""',                    # empty quoted string
    'AT+QCFG="urc/ri/ring",pulse',                 # string given bare
    'AT+QCFG="urc/ri/ring","pulse",0',             # out of (1-2000)
    'AT+QCFG="urc/ri/ring","pulse",2001',
    'AT+QCFG="urc/ri/ring","pulse","120"',
    'AT+QCFG="urc/ri/ring","pul\xe9se"',
    'AT+QCFG="urc/ri/ring","pulse;"',
    'AT+QCFG="urc/ri/ring","pulse",120,1000,5000,"off",6',    # <pulsecount> out of (1-5)
    'AT+QCFG="urc/ri/ring","off",,,,,,',
    'AT+QCFG="urc/ri/ring","off",,,,"maybe"',
    'AT+QCFG="urc/ri/ring","wave",120,999',        # out of (1000-5000)
]


def test_hostile_values_for_a_mixed_item(ec2x, clean_log):
    before = answer('+QCFG: "urc/ri/ring","pulse",120,1000,5000,"off",1')
    assert ec2x.at('AT+QCFG="urc/ri/ring"') == before
    for line in HOSTILE_RING:
        assert ec2x.at(line.encode("latin-1")) == ERROR, line
        assert ec2x.at('AT+QCFG="urc/ri/ring"') == before, line


def test_leading_zeros_and_case_are_canonicalised(ec2x, clean_log):
    assert ec2x.at('AT+QCFG="nwscanmode",003') == OK
    assert ec2x.at('AT+QCFG="NWSCANMODE"') == answer('+QCFG: "nwscanmode",3')
    assert ec2x.at('AT+QCFG="urc/ri/ring","WAVE",0120,01000,' + "0" * 8 + '5000,"ON"') == OK
    # (at most 12 digits, as every number AT parameter: Args.parse_int)
    assert ec2x.at('AT+QCFG="urc/ri/ring","WAVE",0120,01000,' + "0" * 300 + '5000,"ON"') == ERROR
    assert ec2x.at('AT+QCFG="urc/ri/ring"') == answer('+QCFG: "urc/ri/ring","wave",120,1000,5000,"on",1')
    assert ec2x.at('AT+QCFG= "apready" , 1 , 1 , 0100') == OK        # V.250 spaces around the syntax
    assert ec2x.at('AT+QCFG="apready"') == answer('+QCFG: "apready",1,1,100')
    assert ec2x.at('AT+QURCCFG="urcport","UsbModem"') == OK
    assert ec2x.at('AT+QURCCFG="URCPORT"') == answer('+QURCCFG: "urcport","usbmodem"')


def test_omitted_values_keep_what_was_there(ec2x, clean_log):
    assert ec2x.at('AT+QCFG="apready",1,1,300') == OK
    assert ec2x.at('AT+QCFG="apready",,,') == OK
    assert ec2x.at('AT+QCFG="apready",,0') == OK
    assert ec2x.at('AT+QCFG="apready"') == answer('+QCFG: "apready",1,0,300')
    assert ec2x.at('AT+QINDCFG="csq",,1') == OK                           # only <savetonvram>
    assert ec2x.at('AT+QINDCFG="csq"') == answer('+QINDCFG: "csq",0')


# Was a bug, fixed: _canonical compares a non-digit token with every choice literally, so the
# text of a range in the test form ('0-3', '1-2000', '100-3000') is taken as a value:
# AT+QCFG="nwscanmode",0-3 answers OK and the read form then shows +QCFG: "nwscanmode",0-3
# (expected ERROR and 0 unchanged)
def test_the_text_of_a_range_is_no_value(ec2x):
    assert ec2x.at('AT+QCFG="nwscanmode",0-3') == ERROR
    assert ec2x.at('AT+QCFG="urc/ri/ring","pulse",1-2000') == ERROR
    assert ec2x.at('AT+QCFG="apready",0,0,100-3000') == ERROR
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",0')
    assert ec2x.at('AT+QCFG="urc/ri/ring"') == answer('+QCFG: "urc/ri/ring","pulse",120,1000,5000,"off",1')
    assert ec2x.at('AT+QCFG="apready"') == answer('+QCFG: "apready",0,0,500')


# Was a bug, fixed: _canonical tests token.isdigit(), which is True for latin-1 superscripts
# (\xb2 '²', \xb9 '¹'), then int('²') raises ValueError: ERROR comes with a 'handler for
# AT+QCFG=... failed' traceback in the log (expected a plain refusal, no traceback)
def test_superscript_digits_in_a_numeric_position(ec2x, caplog):
    assert ec2x.at(b'AT+QCFG="nwscanmode",\xb2') == ERROR
    assert ec2x.at(b'AT+QCFG="urc/ri/ring","pulse",\xb9\xb2') == ERROR
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",0')
    no_traceback(caplog)


# Was a bug, fixed: _canonical calls int(token) on any digit run; with a user profile's
# serial.line_max above ~4300 (allowed up to 65536) a 5000-digit value raises ValueError
# (Python's int-string digit limit): ERROR with a traceback in the log; Args.parse_int caps at
# 12 characters, _canonical does not
def test_a_number_longer_than_pythons_digit_limit(tmp_path, open_modem, caplog):
    host, _ = open_modem(user_profile(tmp_path, edit=("line_max = 2048", "line_max = 8192")))
    assert host.at('AT+QCFG="nwscanmode",' + "0" * 5000 + "1") == ERROR
    assert host.at('AT+QCFG="apready",1,1,' + "1" * 5000) == ERROR
    assert host.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",0')
    no_traceback(caplog)


# =========================================================================================
# ; chaining, V.250 framing under ATV0 / ATQ1 / AT+CMEE=2
# =========================================================================================
def test_chained_items_and_a_failure_in_the_middle(ec2x, clean_log):
    assert ec2x.at('AT+QCFG="nwscanmode";+QURCCFG="urcport";+QINDCFG="all";+CSQ') == (
        b'\r\n+QCFG: "nwscanmode",0\r\n\r\n+QURCCFG: "urcport","usbat"\r\n'
        b'\r\n+QINDCFG: "all",1\r\n\r\n+CSQ: 24,99\r\n' + OK)
    # executed up to the failing command, nothing after it (V.250 5.2.1)
    assert ec2x.at('AT+QCFG="nwscanmode",2;+QCFG="nwscanmode",9;+QCFG="nwscanmode",1') == ERROR
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",2')
    assert ec2x.at('AT+CTZU=0;+CTZU=2;+CTZU=1') == cme(50)
    assert ec2x.at("AT+CTZU?") == answer("+CTZU: 0")
    # basic commands strung together and then an extended one, lower case, empty commands
    assert ec2x.at('ATX4H0+CTZU?') == answer("+CTZU: 0")
    assert ec2x.at('ATH0;X3;;+QSCLK?;') == answer("+QSCLK: 0")
    assert ec2x.at('at+qcfg="NWSCANMODE",1;+qcfg="nwscanmode"') == answer('+QCFG: "nwscanmode",1')
    assert ec2x.at('AT+QCFG="nwscanmode",2') == OK
    # a quoted ';' is data, not a separator
    assert ec2x.at('AT+QCFG="nwscanmode;+QCFG=",1') == ERROR
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",2')


def test_numeric_framing_atv0(ec2x, clean_log):
    ec2x.write("ATV0\r")
    assert ec2x.read_until(b"0\r") == b"0\r"

    def v0(line: str, expect: bytes) -> None:
        ec2x.write(line + "\r")
        assert ec2x.read_until(expect, timeout=5) == expect, line
        assert ec2x.quiet_for(0.15) == b"", line

    v0('AT+QCFG="nwscanmode"', b'+QCFG: "nwscanmode",0\r\n0\r')
    v0("AT+QURCCFG=?", b'+QURCCFG: "urcport",("usbat","usbmodem","uart1")\r\n0\r')
    v0("AT+QINDCFG=?", b'+QINDCFG: "all",(0,1),(0,1)\r\n+QINDCFG: "csq",(0,1),(0,1)\r\n'
                       b'+QINDCFG: "smsfull",(0,1),(0,1)\r\n+QINDCFG: "ring",(0,1),(0,1)\r\n'
                       b'+QINDCFG: "smsincoming",(0,1),(0,1)\r\n0\r')
    v0('AT+QCFG="nwscanmode",9', b"4\r")
    v0('AT+QCFG="nwscanmode",3', b"0\r")
    v0("AT+CTZU?;+QSCLK?", b"+CTZU: 1\r\n+QSCLK: 0\r\n0\r")
    v0("ATH", b"0\r")
    v0("ATX5", b"4\r")
    v0('AT+CSCS="HEX"', b"+CME ERROR: 50\r\n")
    v0("AT+CFUN=4", b"0\r")
    v0("AT+QNWINFO", b"+QNWINFO: No Service\r\n0\r")
    v0("AT+QCSQ", b'+QCSQ: "NOSERVICE"\r\n0\r')
    v0("AT+QLTS", b'+QLTS: ""\r\n0\r')
    v0("AT+QSPN", b"+CME ERROR: 30\r\n")
    v0("ATV1", b"\r\nOK\r\n")
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",3')


def test_quiet_mode_shows_information_but_no_result(ec2x, clean_log):
    ec2x.write("ATQ1\r")
    assert ec2x.quiet_for(0.3) == b""
    ec2x.write('AT+QCFG="nwscanmode"\r')
    assert ec2x.read_until(b'\r\n+QCFG: "nwscanmode",0\r\n') == b'\r\n+QCFG: "nwscanmode",0\r\n'
    assert ec2x.quiet_for(0.3) == b""
    for line in ('AT+QCFG="nwscanmode",9', "AT+CTZU=2", 'AT+QCFG="nwscanmode",2', "ATH"):
        ec2x.write(line + "\r")
        assert ec2x.quiet_for(0.3) == b"", line
    ec2x.write("ATQ0\r")
    assert ec2x.read_until(OK) == OK
    assert ec2x.at('AT+QCFG="nwscanmode"') == answer('+QCFG: "nwscanmode",2')


def test_verbose_cme_errors(ec2x, clean_log):
    assert ec2x.at("AT+CMEE=2") == OK
    assert ec2x.at('AT+CSCS=""') == cme("incorrect parameters")
    assert ec2x.at("AT+CTZR=3") == cme("incorrect parameters")
    assert ec2x.at("AT+QLTS=,") == cme("incorrect parameters")
    assert ec2x.at('AT+QCFG="nwscanmode",9') == ERROR                  # the items answer plain ERROR
    assert ec2x.at("AT+QSCLK=2") == ERROR
    assert ec2x.at("AT+CFUN=4") == OK
    assert ec2x.at("AT+QSPN") == cme("no network service")
    assert ec2x.at("AT+CMEE=0") == OK
    assert ec2x.at("AT+QSPN") == ERROR
    assert ec2x.at('AT+CSCS="UTF-8"') == ERROR


def test_refused_simple_writes_change_nothing(ec2x, clean_log):
    assert ec2x.at('AT+CSCS="IRA";+CTZU=3;+CTZR=1;+QSCLK=1') == OK
    for line, final in (('AT+CSCS=""', cme(50)), ('AT+CSCS="GSM",', cme(50)),
                        ('AT+CSCS="GSM","IRA"', cme(50)), ("AT+CSCS=GSM", cme(50)),
                        ('AT+CSCS="G\xd3M"', cme(50)), ('AT+CSCS="' + "U" * 300 + '"', cme(50)),
                        ("AT+CTZU=2", cme(50)), ("AT+CTZU=-1", cme(50)), ("AT+CTZU=", cme(50)),
                        ("AT+CTZU=1,", cme(50)), ('AT+CTZU="1"', cme(50)), ("AT+CTZU=0x1", cme(50)),
                        ("AT+CTZR=" + "9" * 30, cme(50)), ("AT+CTZR=0,0", cme(50)),
                        ("AT+QSCLK=", ERROR), ("AT+QSCLK=0,", ERROR), ("AT+QSCLK=01a", ERROR),
                        ("ATH1", ERROR), ("ATH0000000000000001", ERROR), ("ATX5", ERROR)):
        assert ec2x.at(line.encode("latin-1")) == final, line
    assert ec2x.at("AT+CSCS?;+CTZU?;+CTZR?;+QSCLK?") == (
        b'\r\n+CSCS: "IRA"\r\n\r\n+CTZU: 3\r\n\r\n+CTZR: 1\r\n\r\n+QSCLK: 1\r\n' + OK)


def test_forms_a_command_does_not_have(ec2x, clean_log):
    for line in ("ATH?", "ATX?", "AT+QCSQ?", "AT+CPAS?", "AT+QLTS?", "AT+CBC?", "AT+GCAP?",
                 "AT+QCFG?", "AT+QURCCFG", "AT+QINDCFG?", "AT+QNWINFO=1", "AT+QSPN=0", "AT+CBC=1",
                 "AT+CPAS=0", "AT+QGMR=1", "AT+GCAP=1", "AT+CTZU", "AT+CSCS"):
        assert ec2x.at(line) == ERROR, line


# =========================================================================================
# State: AT&F, ATZ, AT&W, AT+CFUN, several modems
# =========================================================================================
def test_items_and_nv_settings_survive_factory_and_user_profile_restores(ec2x, clean_log):
    assert ec2x.at('AT+QCFG="nwscanmode",3;+QINDCFG="csq",1;+CTZU=0;+QSCLK=1') == OK
    assert ec2x.at("AT&W") == OK
    for line in ("AT&F", "ATZ", "AT&F0", "ATZ0"):
        ec2x.write(line + "\r")
        ec2x.read_until(OK)
        assert ec2x.at("ATE0").endswith(OK)
        assert ec2x.at('AT+QCFG="nwscanmode";+QINDCFG="csq";+CTZU?;+QSCLK?') == (
            b'\r\n+QCFG: "nwscanmode",3\r\n\r\n+QINDCFG: "csq",1\r\n\r\n+CTZU: 0\r\n\r\n+QSCLK: 1\r\n' + OK), line


def test_items_across_cfun_changes(ec2x, clean_log):
    assert ec2x.at("AT+CFUN=0") == OK
    assert ec2x.at('AT+QCFG="nwscanmode",2;+QURCCFG="urcport","uart1"') == OK   # settable offline
    assert ec2x.at("AT+QLTS;+QNWINFO;+QCSQ") == (
        b'\r\n+QLTS: ""\r\n\r\n+QNWINFO: No Service\r\n\r\n+QCSQ: "NOSERVICE"\r\n' + OK)
    assert ec2x.at("AT+CFUN=4") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")       # the SIM AT+CFUN=0 switched off starts again
    assert ec2x.at('AT+QCFG="apready",1,1,3000') == OK
    assert ec2x.at("AT+CFUN=1") == OK
    assert ec2x.at('AT+QCFG="nwscanmode";+QURCCFG="urcport";+QCFG="apready"') == (
        b'\r\n+QCFG: "nwscanmode",2\r\n\r\n+QURCCFG: "urcport","uart1"\r\n'
        b'\r\n+QCFG: "apready",1,1,3000\r\n' + OK)
    assert ec2x.at("AT+QCSQ") == answer('+QCSQ: "LTE",-65,-94,142,-9')
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0").endswith(OK)
    assert ec2x.at('AT+QCFG="nwscanmode";+QCFG="apready"') == (
        b'\r\n+QCFG: "nwscanmode",2\r\n\r\n+QCFG: "apready",1,1,3000\r\n' + OK)


def test_several_modems_keep_their_own_items(open_modem, clean_log):
    a, _ = open_modem("ec2x")
    b, _ = open_modem("ec2x")
    assert a.at('AT+QCFG="nwscanmode",3;+QCFG="urc/ri/ring","wave",7;+CTZU=0;+CSCS="UCS2"') == OK
    assert b.at('AT+QCFG="nwscanmode";+QCFG="urc/ri/ring";+CTZU?;+CSCS?') == (
        b'\r\n+QCFG: "nwscanmode",0\r\n\r\n+QCFG: "urc/ri/ring","pulse",120,1000,5000,"off",1\r\n'
        b'\r\n+CTZU: 1\r\n\r\n+CSCS: "GSM"\r\n' + OK)
    assert b.at('AT+QCFG="nwscanmode",1') == OK
    assert a.at('AT+QCFG="nwscanmode";+QCFG="urc/ri/ring"') == (
        b'\r\n+QCFG: "nwscanmode",3\r\n\r\n+QCFG: "urc/ri/ring","wave",7,1000,5000,"off",1\r\n' + OK)
    # a fresh modem on the same (cached) profile starts from the profile's values
    c, _ = open_modem("ec2x")
    assert c.at('AT+QCFG="nwscanmode";+QCFG="urc/ri/ring"') == (
        b'\r\n+QCFG: "nwscanmode",0\r\n\r\n+QCFG: "urc/ri/ring","pulse",120,1000,5000,"off",1\r\n' + OK)


# =========================================================================================
# Hostile user profiles: the item tables
# =========================================================================================
# Was a bug, fixed: an item name holding '.' loads, but DeviceConfig.item_values looks it up as
# profile[f'{table}.{item}'], which Profile.get splits on '.': KeyError 'qcfg.a.b', ERROR with a
# traceback on every read and write (expected +QCFG: "a.b",1, or the loader refusing the name)
def test_an_item_name_with_a_dot_is_refused_at_load(tmp_path):
    assert "item name 'a.b'" in load_error(tmp_path, '"a.b" = { value = ["1"], test = "(0,1)" }\n')


# Was a bug, fixed: item names are never checked (_table checks only the values): a name holding
# CR LF loads and AT+QCFG=? puts '+QCFG: "x\r\nOK",(0,1)' on the wire, a fake OK line, the very
# thing _wire exists to prevent (expected ProfileError naming the key)
def test_an_item_name_with_cr_lf_is_refused_at_load(tmp_path):
    assert "qcfg" in load_error(tmp_path, '"x\\r\\nOK" = { value = ["1"], test = "(0,1)" }\n')


# Was a bug, fixed: an item name holding a double quote loads; AT+QCFG=? shows '+QCFG:
# "q"q",(0,1)' (the quotes end early) and the item can never be addressed (expected
# ProfileError)
def test_an_item_name_with_a_quote_is_refused_at_load(tmp_path):
    assert "qcfg" in load_error(tmp_path, '"q\\"q" = { value = ["1"], test = "(0,1)" }\n')


# Was a bug, fixed: items are looked up case-insensitively but the loader accepts two names
# differing only by case ('Foo', 'foo'): AT+QCFG=? lists both, AT+QCFG="foo" answers the first
# (+QCFG: "Foo",1) and 'foo' can never be read or set; [commands] refuses the same thing as
# 'listed twice' (expected ProfileError)
def test_item_names_differing_only_by_case_are_refused_at_load(tmp_path):
    assert "qcfg" in load_error(tmp_path, '"Foo" = { value = ["1"], test = "(0,1)" }\n'
                                          '"foo" = { value = ["0"], test = "(0,1)" }\n')


# Was a bug, fixed: an item name outside latin-1 ('日') loads; AT+QCFG=? then fails in the
# framing (UnicodeEncodeError, 'modem failed on N input bytes' traceback) and the host gets no
# answer at all: a hang (expected the loader to refuse a name that is not printable ASCII)
def test_a_non_latin1_item_name_is_refused_at_load(tmp_path):
    assert "item name '\u65e5'" in load_error(tmp_path, '"\u65e5" = { value = ["1"], test = "(0,1)" }\n')


# Was a bug, fixed: an item name over 64 characters loads, is listed by AT+QCFG=?, but the write
# handler reads the name with Args.str(max_len=64): AT+QCFG="<70 chars>" answers ERROR; the
# loader should refuse what the command can never address
def test_an_item_name_longer_than_the_command_takes_is_refused_at_load(tmp_path):
    name = "l" * 70
    assert f"item name '{name}'" in load_error(tmp_path, f'"{name}" = {{ value = ["1"], test = "(0,1)" }}\n')


# Was a bug, fixed: a <placeholder> group takes any token for which str.isalnum() is True, non-
# ASCII included: AT+QCFG="band",\xe9 (and \xb2) answers OK and the read form puts the byte on
# the wire, a value the loader itself refuses in a profile ('letters and digits', isascii());
# expected ERROR and the value unchanged
def test_a_placeholder_takes_only_ascii_letters_and_digits(tmp_path, open_modem, caplog):
    host, _ = open_modem(user_profile(tmp_path, '"band" = { value = ["F"], test = "<mask>" }\n'))
    assert host.at('AT+QCFG="band",80000a') == OK
    assert host.at(b'AT+QCFG="band",\xe9') == ERROR
    assert host.at(b'AT+QCFG="band",\xb2') == ERROR
    assert host.at('AT+QCFG="band"') == answer('+QCFG: "band",80000a')
    no_traceback(caplog)


# Was a bug, fixed: a <placeholder> group takes any quoted string (_canonical:
# token.startswith('"')), so a quoted value at such a position can be set to control characters,
# ';' and latin-1 bytes ("a;b,\x07c\xff") and is shown on the wire as sent; behaviour.md says a
# placeholder takes letters and digits, and _wire keeps profile strings printable ASCII
def test_a_quoted_placeholder_value_stays_printable(tmp_path, open_modem, caplog):
    host, _ = open_modem(user_profile(tmp_path, '"apn" = { value = [\'"abc"\'], test = "<name>" }\n'))
    assert host.at('AT+QCFG="apn","xyz"') == OK
    assert host.at(b'AT+QCFG="apn","a;b,\x07c\xff"') == ERROR
    assert host.at('AT+QCFG="apn"') == answer('+QCFG: "apn","xyz"')
    no_traceback(caplog)


# Was a bug, fixed: a test form with an unbalanced parenthesis ('(0-3') or quote ('("off",on")')
# loads: form_groups falls back to groups that are no list, i.e. placeholders, so
# AT+QCFG="unb",zz answers OK and shows zz, and any quoted string is taken for the second
# (expected ProfileError for a malformed test form)
@pytest.mark.parametrize("item", [
    '"unb" = { value = ["1"], test = "(0-3" }\n',
    '"unb" = { value = [\'"on"\'], test = \'("off",on")\' }\n',
])
def test_an_unbalanced_test_form_is_refused_at_load(tmp_path, item):
    assert "unb" in load_error(tmp_path, item)


# Was a bug, fixed: a test form with fewer groups than values + extra loads; the values without
# a group take any letters and digits from the host (value 2 of 'few', profile '2', set to 'abc'
# with OK); behaviour.md: each value is checked against the test form's group at its position;
# expected ProfileError
def test_a_test_form_with_fewer_groups_than_values_is_refused_at_load(tmp_path):
    assert "few" in load_error(tmp_path, '"few" = { value = ["1", "2"], test = "(0,1)" }\n')


# Was a bug, fixed: a 0-length group '()' loads (it only has to accept the shown values): the
# <effect> it describes can never be written, every AT+QCFG="e",1,<x> is ERROR; expected
# ProfileError for a group that allows nothing
def test_an_empty_group_is_refused_at_load(tmp_path):
    assert "[e]" in load_error(tmp_path, '"e" = { value = ["1"], test = "(0,1),()", extra = 1 }\n')


# Was a bug, fixed: a range bound of 5000 digits in a test form makes _item -> _canonical call
# int() past Python's digit limit: load_profile raises a bare ValueError (a traceback at start-
# up) instead of ProfileError naming the file and key
def test_a_huge_range_bound_is_a_profile_error(tmp_path):
    load_error(tmp_path, '"big" = { value = ["1"], test = "(0-' + "9" * 5000 + ')" }\n')


def test_hostile_profiles_the_loader_does_refuse(tmp_path):
    cases = [
        ('"v" = { value = ["1;2"], test = "<x>" }\n', "is not one the test form"),
        ('"v" = { value = ["\\"a\\"b\\""], test = "<x>" }\n', "is not one the test form"),
        ('"v" = { value = ["0"], test = "(1-3)" }\n', "is not one the test form"),
        ('"v" = { value = ["007"], test = "(0-9)" }\n', "is not one the test form"),
        ('"v" = { value = ["5"], test = "(00-99)" }\n', "is not one the test form"),
        ('"v" = { value = [], test = "(0,1)" }\n', "must have 1..16 items"),
        ('"v" = { value = ["1"], test = "(0,1)", extra = 5 }\n', "must be in 0..4"),
        ('"v" = { value = ["1"], test = "(0,1)\\r\\nOK" }\n', "holds '\\r'"),
        ('"v" = 3\n', "must be a table"),
    ]
    for extra, message in cases:
        why = load_error(tmp_path, extra)
        assert "key qcfg: [v]" in why and message in why, (extra, why)


def test_a_zero_padded_range_and_a_quoted_comma_choice(tmp_path, open_modem, clean_log):
    host, _ = open_modem(user_profile(
        tmp_path, '"pad" = { value = ["05"], test = "(00-99)" }\n'
                  '"sep" = { value = [\'"a,b"\'], test = \'("a,b","c;d")\' }\n'))
    # zero-padded: as many digits as the bounds have, kept as given (a scan sequence "0201")
    assert host.at('AT+QCFG="pad",07;+QCFG="pad"') == answer('+QCFG: "pad",07')
    assert host.at('AT+QCFG="pad",7') == ERROR
    assert host.at('AT+QCFG="pad",0000099') == ERROR
    assert host.at('AT+QCFG="pad",99;+QCFG="pad"') == answer('+QCFG: "pad",99')
    assert host.at('AT+QCFG="pad",100') == ERROR
    assert host.at('AT+QCFG="sep","C;D";+QCFG="sep"') == answer('+QCFG: "sep","c;d"')
    assert host.at('AT+QCFG="sep","a"') == ERROR
    assert host.at('AT+QCFG="sep","b"') == ERROR
    assert host.at('AT+QCFG="sep"') == answer('+QCFG: "sep","c;d"')
