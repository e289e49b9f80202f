"""Issue 9, item 9: a hand-edited settings.json (AT&W's file in the state dir) never
makes the modem deaf.  Each key is checked on load; a bad one falls back to the
default with one warning naming it, and the good keys are kept."""
from __future__ import annotations

import json
import logging
import stat

import pytest

from emulator.modem.profile import load_profile
from emulator.modem.settings import Settings

FACTORY = Settings.factory(load_profile("ec2x"))


def saved(**changes) -> dict:
    """What AT&W writes, with echo off (a kept good key) and some keys changed."""
    data = {"echo": False, "verbose": True, "quiet": False, "cmee": 2, "ipr": 9600,
            "ifc": [2, 2], "icf": [3, 0], "dcd": 0, "dtr": 1,
            "sreg": {"0": 0, "3": 13, "4": 10, "5": 8, "6": 2, "7": 60, "8": 2, "10": 15, "12": 50}}
    for key, value in changes.items():
        if key.startswith("S"):
            if value is ...:
                del data["sreg"][key[1:]]
            else:
                data["sreg"][key[1:]] = value
        elif value is ...:
            del data[key]
        else:
            data[key] = value
    return data


def load(tmp_path, caplog, data) -> Settings:
    path = tmp_path / "settings.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emulator.settings"):
        return Settings.load(path, FACTORY)


def warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_good_file_loads_without_warnings(tmp_path, caplog):
    s = load(tmp_path, caplog, saved())
    assert warnings(caplog) == []
    assert (s.echo, s.cmee, s.ipr, s.ifc, s.icf, s.dcd, s.dtr, s.sreg[7]) == (
        False, 2, 9600, (2, 2), (3, 0), 0, 1, 60)


def test_a_file_saved_before_icf_existed_loads_without_warnings(tmp_path, caplog):
    """AT+ICF came later than AT&W's first files: a file without "icf" is an older AT&W's,
    not a hand-edited one -- the factory framing, quietly; every other missing key warns."""
    s = load(tmp_path, caplog, saved(icf=...))
    assert warnings(caplog) == []
    assert s.icf == FACTORY.icf == (3, 3) and s.echo is False and s.ifc == (2, 2)


@pytest.mark.parametrize("key, value", [
    ("S3", ...), ("S5", ...), ("S3", 200), ("S5", -1), ("S3", "13"), ("S5", 8.0), ("S3", None),
    ("S4", 128), ("S6", 1), ("S7", True),
])
def test_bad_or_missing_register_falls_back_alone(tmp_path, caplog, key, value):
    s = load(tmp_path, caplog, saved(**{key: value}))
    [message] = warnings(caplog)
    assert f"key {key}:" in message
    number = int(key[1:])
    assert s.sreg[number] == FACTORY.sreg[number]
    assert s.echo is False and s.sreg[7] == (60 if number != 7 else FACTORY.sreg[7])


@pytest.mark.parametrize("key, value", [
    ("echo", ...), ("echo", "no"), ("echo", 2), ("verbose", None), ("quiet", [1]),
    ("cmee", 3), ("cmee", -1), ("cmee", "2"), ("cmee", True), ("cmee", 1.5),
    ("ipr", 12345), ("ipr", -9600), ("ipr", "9600"),
    ("ifc", [2]), ("ifc", [2, 2, 2]), ("ifc", [0, 3]), ("ifc", [1, 1]), ("ifc", "22"), ("ifc", None),
    ("icf", [5, 1]), ("icf", [3, 4]), ("icf", [3]), ("icf", [3, 3, 3]), ("icf", "33"), ("icf", [3, True]),
    ("dcd", 2), ("dcd", "1"), ("dtr", 3), ("dtr", -1), ("sreg", ...), ("sreg", [13, 8]),
])
def test_bad_or_missing_key_falls_back_alone(tmp_path, caplog, key, value):
    s = load(tmp_path, caplog, saved(**{key: value}))
    [message] = warnings(caplog)
    assert f"key {key}:" in message
    assert getattr(s, key) == getattr(FACTORY, key)
    if key != "echo":
        assert s.echo is False                       # the good keys are kept
    if key != "sreg":
        assert s.sreg[7] == 60


def test_zero_and_one_are_accepted_for_flags(tmp_path, caplog):
    s = load(tmp_path, caplog, saved(echo=1, verbose=0, quiet=0))
    assert warnings(caplog) == []
    assert (s.echo, s.verbose, s.quiet) == (True, False, False)


def test_unknown_keys_and_registers_are_ignored_with_a_warning(tmp_path, caplog):
    s = load(tmp_path, caplog, saved(colour="red", S99=1))
    assert sorted(m.split(":")[1].strip() for m in warnings(caplog)) == ["key S99", "key colour"]
    assert 99 not in s.sreg and s.echo is False


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", "null", '"settings"'])
def test_unreadable_file_is_the_defaults(tmp_path, caplog, text):
    s = load(tmp_path, caplog, text)
    assert len(warnings(caplog)) == 1
    assert s == FACTORY


def test_saved_file_is_private_and_round_trips(tmp_path, caplog):
    path = tmp_path / "settings.json"
    s = FACTORY.copy()
    s.echo, s.sreg[7] = False, 99
    s.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]
    assert Settings.load(path, FACTORY) == s and warnings(caplog) == []


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_factory_values_saved_by_atw_load_without_warnings(tmp_path, caplog, profile):
    """The defaults themselves must survive AT&W + restart (S7's factory 0 was once below ATS7's range)."""
    factory = Settings.factory(load_profile(profile))
    path = tmp_path / "settings.json"
    factory.save(path)
    with caplog.at_level(logging.WARNING, logger="emulator.settings"):
        assert Settings.load(path, factory) == factory
    assert warnings(caplog) == []


def test_modem_with_damaged_settings_answers(open_modem, tmp_path):
    """End to end: S3 and S5 missing, a wrong echo type, an unsupported baud rate."""
    state = tmp_path / "state"
    state.mkdir()
    data = saved(S3=..., S5=..., echo="off", ipr=12345)
    data["verbose"] = 1
    (state / "settings.json").write_text(json.dumps(data))
    host, _ = open_modem("ec2x", echo=True, state_dir=state)
    assert host.at("AT", timeout=3) == b"AT\r\r\nOK\r\n"          # echo: the profile's default
    assert host.at("ATS3?;S5?", timeout=3) == b"ATS3?;S5?\r\r\n013\r\n\r\n008\r\n\r\nOK\r\n"
    assert host.at("AT+IPR?;+CMEE?", timeout=3).endswith(b"+IPR: 115200\r\n\r\n+CMEE: 2\r\n\r\nOK\r\n")
