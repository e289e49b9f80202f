"""AT+ICF (V.250 character framing) on both profiles: the EC25's default 3,3; a pty carries
8-bit bytes with no framing, so only <format> 3 is taken, <parity> 0-3 kept; AT&W saves it,
ATZ restores it, AT&F puts the factory value back (docs/behaviour.md, AT+ICF)."""
from __future__ import annotations

import pytest

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_read_test_and_write_forms(open_modem, profile):
    host, _ = open_modem(profile)
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,3\r\n" + OK
    assert host.at("AT+ICF=?") == b"\r\n+ICF: (3),(0-3)\r\n" + OK
    assert host.at("AT+ICF=3,0") == OK
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK
    assert host.at("AT+ICF=3") == OK                     # <parity> left as it was
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK
    for bad in ("AT+ICF=5,1", "AT+ICF=2", "AT+ICF=3,4", "AT+ICF=7", "AT+ICF=3,1,1", "AT+ICF=,2",
                "AT+ICF=x", "AT+ICF"):
        assert host.at(bad) == ERROR, bad
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,0\r\n" + OK  # (a refused write changes nothing)
    assert host.at("AT+ICF=3,2;+ICF?") == b"\r\n+ICF: 3,2\r\n" + OK


def test_atw_saves_it_atz_restores_it_atf_resets_it_and_a_restart_keeps_the_saved(open_modem, emulator):
    host, port = open_modem("ec2x")
    assert host.at("AT+ICF=3,1") == OK
    assert host.at("AT&W") == OK
    assert host.at("AT+ICF=3,2") == OK
    assert host.at("ATZ") == OK
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,1\r\n" + OK
    assert host.at("AT&F") == OK                          # (echo on again: the factory set)
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,3\r\n" + OK
    assert host.at("AT+CFUN=1,1") == OK                   # the module restarts with AT&W's set
    host.read_until(b"+QIND: PB DONE\r\n", timeout=10)  # (the last start-up URC)
    assert host.at("AT+ICF?") == b"\r\n+ICF: 3,1\r\n" + OK
