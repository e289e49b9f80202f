"""The EC2x's GNSS commands (emulator/commands/gnss.py), which answered ERROR before: AT+QGPS,
AT+QGPSEND, AT+QGPSLOC in its three formats (TinyGSM's Quectel getGPS sends AT+QGPSLOC=2,
Sixfab's and the Arduino / MicroPython EC25 examples mode 0 or 1) and AT+QGPSCFG's
"outport" / "nmeasrc".  The fix comes gnss.ttff (30) s after AT+QGPS=1 on the modem's
manual time; its time and date are the modem clock's.  The ML302 has no GNSS: ERROR.
Exact bytes, as the host reads them (CR LF lines, ATE0)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from tests.e2e.profile_support import EC2X, load_error_of_edit

OK = b"\r\nOK\r\n"
ERROR = b"\r\nERROR\r\n"

# The profile's fix: 31.12345 N 121.54321 E, 12.5 m, HDOP 0.9, 3D, 9 satellites, standing still
MODE_0 = "3107.4070N,12132.5926E"
MODE_1 = "3107.407000,N,12132.592600,E"
MODE_2 = "31.12345,121.54321"
REST = "0.9,12.5,3,0.00,0.0,0.0"
QGPSLOC = re.compile(rb"\r\n\+QGPSLOC: (\d{6})\.000,(.*),(\d{6}),(\d\d)\r\n\r\nOK\r\n")


def answer(*lines: str) -> bytes:
    return b"\r\n" + "\r\n".join(lines).encode() + b"\r\n" + OK


def cme(code: int) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


@pytest.fixture
def gps(open_modem, emulator):
    """(host, advance(s)): an EC2x on manual time whose clock says 2030-06-15 02:20:30 UTC."""
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at('AT+CCLK="30/06/15,10:20:30+32"') == OK          # local 10:20:30 at UTC+8
    return host, advance


def fix(host, line: str) -> str:
    """The +QGPSLOC fields between the UTC time and the date, after checking that those two
    are the modem clock's (a few real seconds after 02:20:30 UTC on 15 June 2030)."""
    got = host.at(line)
    m = QGPSLOC.fullmatch(got)
    assert m, got
    utc = datetime.strptime(m[1].decode(), "%H%M%S").replace(2030, 6, 15, tzinfo=timezone.utc)
    assert timedelta(0) <= utc - datetime(2030, 6, 15, 2, 20, 30, tzinfo=timezone.utc) < timedelta(seconds=10)
    assert m[3] == b"150630" and m[4] == b"09"
    return m[2].decode()


def test_a_fix_comes_ttff_seconds_after_qgps_and_is_reported_in_the_three_formats(gps):
    host, advance = gps
    assert host.at("AT+QGPS?") == answer("+QGPS: 0")
    assert host.at("AT+QGPSLOC=2") == cme(505)                     # off: session not active
    assert host.at("AT+QGPS=1") == OK
    assert host.at("AT+QGPS?") == answer("+QGPS: 1")
    assert host.at("AT+QGPS=1") == cme(504)                        # already on: session ongoing
    assert host.at("AT+QGPSLOC=2") == cme(516)                     # not fixed now
    advance(29.5)
    assert host.at("AT+QGPSLOC") == cme(516)
    advance(0.5)
    assert fix(host, "AT+QGPSLOC") == f"{MODE_0},{REST}"           # <mode> 0 by default
    assert fix(host, "AT+QGPSLOC=0") == f"{MODE_0},{REST}"
    assert fix(host, "AT+QGPSLOC?") == f"{MODE_0},{REST}"           # (the manual example's form)
    assert fix(host, "AT+QGPSLOC=1") == f"{MODE_1},{REST}"
    assert fix(host, "AT+QGPSLOC=2") == f"{MODE_2},{REST}"
    assert host.at("AT+QGPSEND") == OK
    assert host.at("AT+QGPS?") == answer("+QGPS: 0")
    assert host.at("AT+QGPSLOC=2") == cme(505)
    assert host.at("AT+QGPSEND") == cme(505)
    assert host.at("AT+QGPS=1,30,50,0,1") == OK                    # every parameter, a new session:
    assert host.at("AT+QGPSLOC=2") == cme(516)                     # no fix until ttff again
    advance(30)
    assert fix(host, "AT+QGPSLOC=2") == f"{MODE_2},{REST}"


def test_the_fix_time_and_date_follow_the_modem_clock(gps):
    host, advance = gps
    assert host.at("AT+QGPS=1") == OK
    advance(30)
    assert host.at('AT+CCLK="31/01/02,23:59:58+00"') == OK
    got = host.at("AT+QGPSLOC=2")
    m = QGPSLOC.fullmatch(got)
    assert m and m[2] == f"{MODE_2},{REST}".encode(), got
    assert (m[1], m[3]) in ((b"235958", b"020131"), (b"235959", b"020131"), (b"000000", b"030131"))


def test_fixcount_ends_the_session_after_that_many_fixes(gps):
    host, advance = gps
    assert host.at("AT+QGPS=1,30,50,3,2") == OK                    # 3 fixes, one each 2 s
    advance(30)
    assert fix(host, "AT+QGPSLOC=2") == f"{MODE_2},{REST}"
    advance(5.5)
    assert host.at("AT+QGPS?") == answer("+QGPS: 1")
    advance(0.5)
    assert host.at("AT+QGPS?") == answer("+QGPS: 0")
    assert host.at("AT+QGPSLOC=2") == cme(505)


@pytest.mark.parametrize("line", ["AT+QGPS=0", "AT+QGPS=5", "AT+QGPS=1,0", "AT+QGPS=1,256",
                                  "AT+QGPS=1,30,0", "AT+QGPS=1,30,1001", "AT+QGPS=1,30,50,1001",
                                  "AT+QGPS=1,30,50,0,0", "AT+QGPS=1,30,50,0,65536",
                                  "AT+QGPS=1,30,50,0,1,1", 'AT+QGPS="1"', "AT+QGPS=",
                                  "AT+QGPSLOC=3", "AT+QGPSLOC=0,0", 'AT+QGPSLOC="2"'])
def test_bad_parameters_are_invalid_parameter(gps, line):
    host, _ = gps
    assert host.at(line) == cme(501)
    assert host.at("AT+QGPS?") == answer("+QGPS: 0")


def test_forms_the_module_lacks_and_the_test_forms(gps):
    host, _ = gps
    assert host.at("AT+QGPS") == ERROR
    assert host.at("AT+QGPSEND=1") == ERROR
    assert host.at("AT+QGPS=?") == answer("+QGPS: (1-4),(1-255),(1-1000),(0-1000),(1-65535)")
    assert host.at("AT+QGPSLOC=?") == answer("+QGPSLOC: (0-2)")
    assert host.at("AT+QGPSEND=?") == OK


def test_verbose_errors_carry_the_manuals_texts(gps):
    host, advance = gps
    assert host.at("AT+CMEE=2;+QGPSEND") == b"\r\n+CME ERROR: Session not active\r\n"
    assert host.at("AT+QGPS=1;+QGPSLOC") == b"\r\n+CME ERROR: Not fixed now\r\n"
    assert host.at("AT+QGPS=1") == b"\r\n+CME ERROR: Session is ongoing\r\n"
    assert host.at("AT+QGPSLOC=9") == b"\r\n+CME ERROR: Invalid parameter\r\n"
    assert host.at("AT+CMEE=0;+QGPS=1") == ERROR


def test_qgpscfg_outport_and_nmeasrc(gps):
    host, _ = gps
    assert host.at('AT+QGPSCFG="outport"') == answer('+QGPSCFG: "outport","usbnmea"')
    assert host.at('AT+QGPSCFG="outport","uartdebug"') == OK
    assert host.at('AT+QGPSCFG="OUTPORT"') == answer('+QGPSCFG: "outport","uartdebug"')
    assert host.at('AT+QGPSCFG="outport","usb"') == ERROR
    assert host.at('AT+QGPSCFG="nmeasrc",1;+QGPSCFG="nmeasrc"') == answer('+QGPSCFG: "nmeasrc",1')
    assert host.at('AT+QGPSCFG="nmeasrc",2') == ERROR
    assert host.at('AT+QGPSCFG="gnssconfig"') == ERROR
    assert host.at("AT+QGPSCFG=?") == answer('+QGPSCFG: "outport",("none","usbnmea","uartdebug")',
                                             '+QGPSCFG: "nmeasrc",(0,1)')


def test_a_restart_turns_gnss_off(ec2x):
    assert ec2x.at("AT+QGPS=1") == OK
    assert ec2x.at("AT+CFUN=1,1") == OK
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0") == b"ATE0\r" + OK
    assert ec2x.at("AT+QGPS?") == answer("+QGPS: 0")
    assert ec2x.at("AT+QGPSLOC=2") == cme(505)
    assert ec2x.at("AT+QGPS=1") == OK                              # not "session is ongoing"


@pytest.mark.parametrize("line", ["AT+QGPS=1", "AT+QGPS?", "AT+QGPS=?", "AT+QGPSEND",
                                  "AT+QGPSLOC=2", "AT+QGPSLOC", 'AT+QGPSCFG="outport"'])
def test_the_ml302_has_no_gnss(ml302, line):
    assert ml302.at(line) == ERROR


def test_southern_and_western_positions(tmp_path, open_modem, emulator):
    path = tmp_path / "south.toml"
    path.write_text(EC2X.replace("latitude = 31.12345", "latitude = -33.868821")
                    .replace("longitude = 121.54321", "longitude = -5.5")
                    .replace("ttff = 30", "ttff = 0"))
    host, _ = open_modem(str(path))
    assert host.at("AT+QGPS=1") == OK
    got = host.at("AT+QGPSLOC=0")                                  # (real time: ttff 0 is due at once)
    assert b",3352.1293S,00530.0000W,0.9," in got, got
    assert b",3352.129260,S,00530.000000,W,0.9," in host.at("AT+QGPSLOC=1")
    assert b",-33.86882,-5.50000,0.9," in host.at("AT+QGPSLOC=2")


@pytest.mark.parametrize("edit, message", [
    (("latitude = 31.12345", "latitude = 91"), "key gnss.latitude: must be in -90..90"),
    (("fix = 3 ", "fix = 1 "), "key gnss.fix: must be in 2..3"),
    (("ttff = 30", "# ttff = 30"), "[commands] lists +QGPS, which needs gnss.ttff"),
])
def test_the_gnss_table_is_checked_at_load(tmp_path, edit, message):
    error = load_error_of_edit(tmp_path, *edit)
    assert error.startswith(message), error
