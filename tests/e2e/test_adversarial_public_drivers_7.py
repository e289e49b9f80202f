"""Adversarial tests: a seventh set of public host code, the first to drive the EC2x's GNSS
commands (AT+QGPS, AT+QGPSLOC polled until the fix, AT+QGPSEND, AT+QGPSCFG) and its
engineering-mode cell report (AT+QENG="servingcell"), replayed through the pty with its own
line endings, waits and parsers.  (Earlier files: test_adversarial_public_drivers.py --
TinyGSM's socket paths, Mbed, FreeRTOS; _2.py -- bg9x_ssl_zephyr, Azure EWF, Twilio; _3.py --
Hologram, Alibaba LinkSDK, Seeed WioLTE, mpy-wiolte; _4.py -- ThaiEasyElec, Quectel_EC21;
_5.py -- ghuvrons/quectel-ec25, Sixfab pico_lte's sockets; _6.py -- Sixfab RPi HAT, Kura,
MuditaOS; test_adversarial_rtthread_espmodem.py, test_adversarial_driver_init.py.)  None of
them sent a GNSS command or AT+QENG.

Drivers replayed (public sources read through the reference store; paraphrased, not copied):

- TinyGSM, vshymanskyy/TinyGSM at 4c55210 (TINY_GSM_MODEM_BG96, the class EC2x users pick),
  src/TinyGsmClientBG96.h enableGPSImpl() (AT+QGPS=1, waitResponse() == 1), disableGPSImpl()
  (AT+QGPSEND), getGPSrawImpl() (AT+QGPSLOC=2, waitResponse(10 s, "\\r\\n+QGPSLOC: "),
  readStringUntil('\\n'), waitResponse(), trim()), getGPSImpl() (the same wait -- "Will return
  an error if the position isn't fixed" -- then streamGetIntLength(2) hour, (2) minute,
  streamGetFloatBefore(',') seconds, latitude, longitude, HDOP ("accuracy"), altitude, three
  streamSkipUntil(',') (fix, COG, km/h), the knots as the speed, day/month by
  streamGetIntLength(2), the year by streamGetIntBefore(','), year += 2000, the satellites by
  streamGetIntBefore(','), streamSkipUntil('\\n'), a last waitResponse()); initImpl()'s
  AT+CMEE=0 (AT+CMEE=2 under TINY_GSM_DEBUG); src/TinyGsmModem.tpp sendAT() ("AT" ... "\\r\\n"),
  waitResponseImpl() (byte by byte, endsWith "OK\\r\\n" / "ERROR\\r\\n" / the caller's string;
  under TINY_GSM_DEBUG a "+CME ERROR:" ends the wait with 0 after readStringUntil('\\n')),
  streamGetIntBefore() (readBytesUntil(c, buf, 7): 7 bytes read is "an overflow" -> -9999),
  streamGetFloatBefore() (16), streamGetIntLength() (waits for n bytes, atoi), streamSkipUntil().
- Sixfab Pico LTE SDK, sixfab/pico_lte_micropython-sdk at 3ceb3c2: pico_lte/modules/gps.py
  set_priority() (AT+QGPSCFG="priority",<p>), turn_on(mode=1, accuracy=3, fix_count=0,
  fix_rate=1) (AT+QGPS=<mode>,<accuracy>,<fix_count>,<fix_rate> -- the BG95/BG77 syntax the
  board's module has), turn_off() (AT+QGPSEND), get_location() (AT+QGPSLOC=2, desired
  "+QGPSLOC: ", then pico_lte/utils/helpers.py get_desired_data(..., data_index=[1, 2]): the
  text after the prefix split at ',' and fields 1 and 2, quotes stripped by simplify());
  pico_lte/utils/atcom.py send_at_comm() (command + "\\r", 100 ms, get_response(): every
  100 ms whatever UART.any() holds, split at CR LF, empty pieces dropped; "OK" with a desired
  string is SUCCESS only if an earlier line contains it; "+CME ERROR:" / "ERROR" is ERROR);
  examples/gps/send_location_to_server.py (set_priority(0), 3 s, turn_on(), up to 45
  get_location() 2 s apart, ",".join(value), then set_priority(1), turn_off()).
- ROOter (OpenWrt firmware for EC25-class routers), ofmodemsandmen/RooterSource at a1752202:
  package/rooter-extra/ext-simplegps/files/usr/lib/gps/quectel.sh (AT+QGPS? and AT+QGPS=1 unless
  it shows "+QGPS: 1", AT+QCFG="gpsdrx" (",1" written when the answer holds a "0"),
  AT+QGPSCFG="outport","none", then AT+QGPSLOC=0 every refresh seconds, 5 s after an answer
  containing "ERROR") and processq.sh (the "+QGPSLOC:" line, ':' turned into ',', cut -d, fields
  2-12: time, latitude, longitude, HDOP, altitude, fix, COG, km/h, date, satellites; the latitude
  and longitude taken apart by position -- zero-padded to 11 characters when 10 or 9 long, then
  [0:3] degrees, [3:2] minutes, [6:4] decimals, [10:1] hemisphere, seconds = decimals * 6 / 1000
  -- and convert.lua's degrees + minutes / 60 + seconds / 3600, "%.4f"); every command goes
  through package/rooter/ext-rooter-basic/files/usr/lib/rooter/gcom/gcom-locked and
  run-at.gcom (gcom: waitquiet 1 0.2, senddelay 0.05 s a character, the command then "^m" (CR),
  `get 1 "^m"` pieces ending at CR, printed; done at "^jOK", "^jERROR", "^j+CME ERROR" ... or
  25 s).  It never sends ATE0: the module's echo stays on.
- ESP-IDF's first esp_modem component with a BG96 DCE, as in stackcare/lte_poc at 313afef
  components/modem/src/bg96.c bg96_get_servingcell() ("AT+QENG=\\"servingcell\\"\\r") and
  bg96_handle_servingcell() (OK / ERROR by strstr; any other line strtok()ed at ',' into
  char *p[17], rsrp = p[13], rsrq = p[14], rssi = p[15], the struct zeroed first) on
  components/modem/src/esp_modem.c esp_dte_handle_line() (UART pattern '\\n': a line with its
  CR LF; lines of 2 characters or fewer skipped).

Times the drivers sleep (TinyGSM's 1 s / 10 s waits, pico_lte's 2 s between polls, ROOter's
5 s retry) are replaced by moving the modem's manual clock: the fix comes gnss.ttff (30) s
after AT+QGPS=1, the profile's fix (31.12345 N, 121.54321 E, 12.5 m, HDOP 0.9, 3D, 9
satellites, standing), its time and date the modem clock's (AT+CCLK).  Only the pty is used."""
from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pytest

LAT, LON, ALT, HDOP, NSAT = 31.12345, 121.54321, 12.5, 0.9, 9
CLOCK = datetime(2030, 6, 15, 2, 20, 30, tzinfo=timezone.utc)     # AT+CCLK below, in UTC
TTFF = 30


@pytest.fixture
def gnss_modem(open_modem, emulator):
    """factory(echo=False) -> (host, advance(seconds)) for an EC2x on manual time whose clock
    says 2030-06-15 02:20:30 UTC (10:20:30 at +08:00)."""
    def make(echo: bool = False):
        host, port = open_modem("ec2x", echo=echo, manual_time=True)
        got = host.at('AT+CCLK="30/06/15,10:20:30+32"')
        assert got.endswith(b"\r\nOK\r\n"), got

        advance = emulator.advancer(port, host)
        return host, advance
    return make


def near_clock(hour: int, minute: int, second: float) -> bool:
    """The fix's UTC time is the modem clock's: a few real seconds after 02:20:30."""
    t = CLOCK.replace(hour=hour, minute=minute, second=int(second))
    return timedelta(0) <= t - CLOCK < timedelta(seconds=60)


# =================================================================================================
# TinyGSM (TinyGsmClientBG96.h GPS functions)
# =================================================================================================
class ArduinoStream:
    """Arduino Stream over the pty: available()/read(), readBytesUntil() with the 1 s
    Stream timeout."""

    def __init__(self, host) -> None:
        self.host = host                # its pyserial port; writes counted for wait_received
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.host.write(data)

    def _fill(self) -> None:
        ser = self.host.ser
        self.buf += ser.read(max(1, ser.in_waiting))

    def available(self) -> int:
        self._fill()
        return len(self.buf)

    def read(self, timeout: float = 1.0) -> int:
        deadline = time.monotonic() + timeout
        while not self.buf:
            if time.monotonic() > deadline:
                return -1
            self._fill()
        b = self.buf[0]
        del self.buf[0]
        return b

    def readBytesUntil(self, c: bytes, length: int) -> bytes:
        out = bytearray()
        while len(out) < length:
            b = self.read(1.0)
            if b < 0 or b == c[0]:
                break
            out.append(b)
        return bytes(out)


def _atoi(raw: bytes) -> int:
    m = re.match(rb"\s*([+-]?\d+)", raw)
    return int(m.group(1)) if m else 0


def _atof(raw: bytes) -> float:
    m = re.match(rb"\s*([+-]?\d*\.?\d*)", raw)
    try:
        return float(m.group(1)) if m and m.group(1) not in (b"", b"+", b"-") else 0.0
    except ValueError:
        return 0.0


class TinyGsmGps:
    """TinyGsmBG96's GPS functions, each method mirroring the C++."""

    def __init__(self, host, debug: bool) -> None:
        self.stream = ArduinoStream(host)
        self.debug = debug                           # TINY_GSM_DEBUG defined or not
        self.waits: list[float] = []                 # (test's record) how long each wait took

    def sendAT(self, cmd: str) -> None:
        self.stream.write(b"AT" + cmd.encode() + b"\r\n")

    def waitResponse(self, timeout: float = 1.0, *rs: bytes) -> int:
        rs = (rs[0], b"ERROR\r\n") if rs else (b"OK\r\n", b"ERROR\r\n")
        data = bytearray()
        start = time.monotonic()
        try:
            while time.monotonic() - start < timeout:
                a = self.stream.read(max(0.0, timeout - (time.monotonic() - start)))
                if a <= 0:
                    continue
                data.append(a)
                for i, r in enumerate(rs):
                    if data.endswith(r):
                        return i + 1
                if self.debug and data.endswith(b"+CME ERROR:"):
                    self.stream.readBytesUntil(b"\n", 1 << 16)      # readStringUntil(AT_NL[1])
                    return 0
            return 0
        finally:
            self.waits.append(time.monotonic() - start)

    def streamGetIntLength(self, n: int) -> int:
        deadline = time.monotonic() + 1.0
        while self.stream.available() < n:
            if time.monotonic() > deadline:
                return -9999
        raw = bytes(self.stream.buf[:n])
        del self.stream.buf[:n]
        return _atoi(raw)

    def streamGetIntBefore(self, c: bytes) -> int:
        got = self.stream.readBytesUntil(c, 7)
        return _atoi(got) if got and len(got) < 7 else -9999

    def streamGetFloatBefore(self, c: bytes) -> float:
        got = self.stream.readBytesUntil(c, 16)
        return _atof(got) if got and len(got) < 16 else -9999.0

    def streamSkipUntil(self, c: bytes) -> bool:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if self.stream.read(max(0.0, deadline - time.monotonic())) == c[0]:
                return True
        return False

    def init_cmee(self) -> int:                      # initImpl()'s error-report setting
        self.sendAT("+CMEE=2" if self.debug else "+CMEE=0")
        return self.waitResponse()

    def enableGPS(self) -> bool:
        self.sendAT("+QGPS=1")
        return self.waitResponse() == 1

    def disableGPS(self) -> bool:
        self.sendAT("+QGPSEND")
        return self.waitResponse() == 1

    def getGPSraw(self) -> str:
        self.sendAT("+QGPSLOC=2")
        if self.waitResponse(10.0, b"\r\n+QGPSLOC: ") != 1:
            return ""
        res = self.stream.readBytesUntil(b"\n", 1 << 16)
        self.waitResponse()
        return res.decode().strip()

    def getGPS(self):
        self.sendAT("+QGPSLOC=2")
        if self.waitResponse(10.0, b"\r\n+QGPSLOC: ") != 1:
            return None
        hour = self.streamGetIntLength(2)
        minute = self.streamGetIntLength(2)
        second = self.streamGetFloatBefore(b",")
        lat = self.streamGetFloatBefore(b",")
        lon = self.streamGetFloatBefore(b",")
        accuracy = self.streamGetFloatBefore(b",")
        alt = self.streamGetFloatBefore(b",")
        self.streamSkipUntil(b",")
        self.streamSkipUntil(b",")
        self.streamSkipUntil(b",")
        speed = self.streamGetFloatBefore(b",")
        day = self.streamGetIntLength(2)
        month = self.streamGetIntLength(2)
        year = self.streamGetIntBefore(b",")
        usat = self.streamGetIntBefore(b",")
        self.streamSkipUntil(b"\n")
        if year < 2000:
            year += 2000
        last = self.waitResponse()                   # "Final OK" (its result is not used)
        return dict(lat=lat, lon=lon, speed=speed, alt=alt, usat=usat, accuracy=accuracy,
                    year=year, month=month, day=day, hour=hour, minute=minute,
                    second=int(second), last_wait=last)


@pytest.mark.parametrize("debug", [False, True], ids=["cmee0", "debug-cmee2"])
def test_tinygsm_bg96_getgps_polls_until_the_fix_and_parses_it(gnss_modem, debug):
    host, advance = gnss_modem()
    gsm = TinyGsmGps(host, debug)
    assert gsm.init_cmee() == 1
    assert gsm.enableGPS()
    # No fix yet: AT+CMEE=0 turns "+CME ERROR: 516" into ERROR (waitResponse's r2: returns at
    # once); under TINY_GSM_DEBUG the "+CME ERROR:" verbose branch ends it.  Either way false,
    # quickly, and nothing of the answer is left in the stream for the next command.
    for _ in range(3):
        assert gsm.getGPS() is None
        assert gsm.waits[-1] < 5, gsm.waits       # not the 10 s timeout: the error was seen
        assert gsm.getGPSraw() == ""
        advance(TTFF / 3 - 0.5)
    advance(1.5)
    fix = gsm.getGPS()
    assert fix is not None
    assert abs(fix["lat"] - LAT) < 1e-6 and abs(fix["lon"] - LON) < 1e-6, fix
    assert (fix["alt"], fix["accuracy"], fix["speed"]) == (ALT, HDOP, 0.0), fix
    assert (fix["year"], fix["month"], fix["day"]) == (2030, 6, 15), fix
    assert near_clock(fix["hour"], fix["minute"], fix["second"]), fix
    # The driver's own quirk, the same on a real module: <nsat> is the line's last field, so
    # readBytesUntil(',', 7) reads "09\r\n\r\nO" -- 7 bytes, "an overflow" -- and usat is -9999;
    # streamSkipUntil('\n') then eats the rest of the OK, and the last waitResponse() times out.
    assert fix["usat"] == -9999 and fix["last_wait"] == 0, fix
    raw = gsm.getGPSraw()
    fields = raw.split(",")
    assert fields[1:10] == ["31.12345", "121.54321", "0.9", "12.5", "3", "0.00", "0.0", "0.0",
                            "150630"], raw
    assert re.fullmatch(r"\d{6}\.000", fields[0]) and fields[10] == "09", raw
    assert gsm.disableGPS()
    assert gsm.getGPS() is None                      # off again: 505, an error all the same
    assert gsm.disableGPS() is False                 # AT+QGPSEND when off: 505 too
    host.ser.reset_input_buffer()


# =================================================================================================
# Sixfab Pico LTE SDK (pico_lte/modules/gps.py, utils/atcom.py, helpers.py)
# =================================================================================================
class PicoAtcom:
    """pico_lte.utils.atcom.ATCom over the pty (MicroPython UART.any()/read())."""

    def __init__(self, host) -> None:
        self.host = host

    def _read_any(self) -> str:
        ser = self.host.ser
        out = b""
        while ser.in_waiting:
            out += ser.read(ser.in_waiting)
        return out.decode("utf-8", "replace")

    def get_response(self, desired=None, fault=None, timeout: float = 5) -> dict:
        desired = [desired] if isinstance(desired, str) else desired
        fault = [fault] if isinstance(fault, str) else fault
        processed: list[str] = []
        start = time.monotonic()
        while True:
            time.sleep(0.1)
            if time.monotonic() - start >= timeout:
                return {"status": "TIMEOUT", "response": "timeout"}
            text = self._read_any()
            if text:
                processed.extend(x for x in text.split("\r\n") if x != "")
            for index, value in enumerate(processed):
                part = processed[:index + 1]
                if value == "OK":
                    if not desired:
                        return {"status": "SUCCESS", "response": part}
                    if index < 1:
                        return {"status": "ERROR", "response": part}
                    for line in processed[:index]:
                        if any(d in line for d in desired):
                            return {"status": "SUCCESS", "response": part}
                        if fault and any(f in line for f in fault):
                            return {"status": "ERROR", "response": part}
                elif "+CME ERROR:" in value or value == "ERROR":
                    return {"status": "ERROR", "response": part}

    def send_at_comm(self, command: str, desired=None, fault=None, timeout: float = 5) -> dict:
        self.host.write((command + "\r").encode())
        time.sleep(0.1)
        return self.get_response(desired, fault, timeout)


def get_desired_data(result: dict, prefix: str, separator: str = ",", data_index=0) -> dict:
    out = dict(result)
    if result.get("status") != "SUCCESS":
        result["value"] = None
        return result
    response = result["response"]
    valuable = None
    for index, value in enumerate(response):
        if value == "OK" and index > 0:
            valuable = response[:index]
    for line in valuable or []:
        at = line.find(prefix)
        if at != -1:
            data = line[at + len(prefix):].split(separator)
            idx = data_index[:len(data)]
            out["value"] = [data[i].replace('"', "").replace("'", "") for i in idx]
    return out


class PicoGps:
    def __init__(self, atcom: PicoAtcom) -> None:
        self.atcom = atcom

    def set_priority(self, priority: int) -> dict:
        return self.atcom.send_at_comm(f'AT+QGPSCFG="priority",{priority}')

    def turn_on(self, mode=1, accuracy=3, fix_count=0, fix_rate=1) -> dict:
        return self.atcom.send_at_comm(f"AT+QGPS={mode},{accuracy},{fix_count},{fix_rate}")

    def turn_off(self) -> dict:
        return self.atcom.send_at_comm("AT+QGPSEND")

    def get_location(self) -> dict:
        result = self.atcom.send_at_comm("AT+QGPSLOC=2", "+QGPSLOC: ")
        if result["status"] == "SUCCESS":
            return get_desired_data(result, "+QGPSLOC: ", data_index=[1, 2])
        return result


def test_pico_lte_gps_example_on_an_ec2x_never_turns_the_engine_on(gnss_modem):
    """The example's start as the SDK sends it.  Its AT+QGPS=1,3,0,1 is the BG95's
    <GNSS_mode>,<accuracy>,<fixcount>,<fix_rate>; an EC2x reads the same positions as
    <fixmaxtime>,<fixmaxdist>,<fixcount> (EC25 GNSS manual: AT+QGPS=<GNSSmode>[,<fixmaxtime>
    [,<fixmaxdist>[,<fixcount>[,<fixrate>]]]], <fixmaxdist> 1-1000 m), so fixmaxdist 0 is an
    invalid parameter (501); "priority" is not an EC2x AT+QGPSCFG item.  The example ignores
    both results and polls an engine that is off: 505 every time, never a location."""
    host, advance = gnss_modem()
    assert host.at("AT+CMEE=1").endswith(b"\r\nOK\r\n")
    gps = PicoGps(PicoAtcom(host))
    prio = gps.set_priority(0)
    assert prio["status"] == "ERROR" and prio["response"][-1] in ("ERROR", "+CME ERROR: 501"), prio
    on = gps.turn_on()
    assert on == {"status": "ERROR", "response": ["+CME ERROR: 501"]}, on
    assert host.at("AT+QGPS?") == b"\r\n+QGPS: 0\r\n\r\nOK\r\n"
    for _ in range(3):                               # the example's 45 polls, 2 s apart
        loc = gps.get_location()
        assert loc == {"status": "ERROR", "response": ["+CME ERROR: 505"]}, loc
        advance(TTFF)                                # time passes: still no engine, no fix


def test_pico_lte_get_location_parses_an_ec2x_fix(gnss_modem):
    """With the engine started the EC2x way (AT+QGPS=1 through the SDK's own send_at_comm),
    get_location() fails with 516 until the fix and then yields [lat, lon] from the mode-2
    line; the example's ",".join() makes its message of them.  turn_off() is AT+QGPSEND: OK."""
    host, advance = gnss_modem()
    atcom = PicoAtcom(host)
    gps = PicoGps(atcom)
    assert atcom.send_at_comm("AT+QGPS=1") == {"status": "SUCCESS", "response": ["OK"]}
    loc = gps.get_location()
    assert loc["status"] == "ERROR" and loc["response"][-1] in ("+CME ERROR: 516", "ERROR"), loc
    advance(TTFF)
    loc = gps.get_location()
    assert loc["status"] == "SUCCESS", loc
    assert loc["value"] == ["31.12345", "121.54321"], loc
    assert ",".join(loc["value"]) == "31.12345,121.54321"
    assert loc["response"][-1] == "OK" and loc["response"][0].startswith("+QGPSLOC: "), loc
    assert gps.set_priority(1)["status"] == "ERROR"
    assert gps.turn_off() == {"status": "SUCCESS", "response": ["OK"]}


# =================================================================================================
# ROOter simplegps (quectel.sh + processq.sh + convert.lua, through gcom's run-at.gcom)
# =================================================================================================
class Gcom:
    """gcom running run-at.gcom on the pty: what `OX=$(gcom-locked ...)` captures."""

    SENDDELAY = 0.05
    TIMEOUT = 25                                     # f: TIMEOUT is not set by gcom-locked

    def __init__(self, host) -> None:
        self.host = host
        self.buf = bytearray()

    def _fill(self, wait: float) -> bool:
        ser = self.host.ser
        ser.timeout = wait
        chunk = ser.read(max(1, ser.in_waiting))
        ser.timeout = 0.02
        self.buf += chunk
        return bool(chunk)

    def _waitquiet(self, most: float = 1.0, quiet: float = 0.2) -> None:
        end = time.monotonic() + most
        while time.monotonic() < end and self._fill(quiet):
            pass
        self.buf.clear()

    def _get(self, timeout: float = 1.0) -> str:
        """get 1 "^m" $s: the characters up to a CR (not kept), or what came in 1 s."""
        end = time.monotonic() + timeout
        while b"\r" not in self.buf and time.monotonic() < end:
            self._fill(min(0.05, max(0.0, end - time.monotonic())))
        if b"\r" in self.buf:
            i = self.buf.index(b"\r")
            piece, self.buf[:] = bytes(self.buf[:i]), self.buf[i + 1:]
        else:
            piece, self.buf[:] = bytes(self.buf), b""
        return piece.decode("latin-1")

    def run(self, atcmd: str) -> str:
        self._waitquiet()
        for ch in atcmd + "\r":                       # send $x; send "^m" (senddelay each char)
            self.host.write(ch.encode("latin-1"))
            time.sleep(self.SENDDELAY)
        deadline = time.monotonic() + self.TIMEOUT
        printed = []
        while True:
            s = self._get()
            if s:
                printed.append(s)
            if s == "\nOK" or s[:6] == "\nERROR" or s[:8] in ("\nCONNECT", "\nCOMMAND") \
                    or s[:11] in ("\n+CME ERROR", "\n+CMS ERROR"):
                break
            if time.monotonic() > deadline:
                printed.append("\rTIMEOUT ERROR")
                break
        return "".join(printed)


def convert_lua(deg: str, minutes: str, decimals: str, hemi: str) -> str:
    value = int(deg) + int(minutes) / 60 + (int(decimals) * 6 / 1000) / 3600
    if hemi in ("S", "W"):
        value = -value
    return "%.4f" % value


def processq(ox: str) -> dict:
    """processq.sh (convert=1, datefor=0) on quectel.sh's AT+QGPSLOC=0 output."""
    lines = [line for line in ox.split("\n") if "+QGPSLOC:" in line]
    assert lines, ox
    o = " ".join(" ".join(lines).split()) + " "      # echo $O" " (unquoted: spaces collapse)
    f = o.replace(":", ",").split(",")                # tr ":" ","; cut -d, -f<n> is f[n - 1]
    time_, lat, lon, hop, alt, fix, cog, hspd, date, nsat = (f[1], f[2], f[3], f[4], f[5], f[6],
                                                              f[7], f[8], f[10], f[11])
    time_ = time_.lstrip(" ")
    hr, mn, sec = time_[0:2], time_[2:4], time_[4:6]
    apm = "AM" if int(hr) < 12 else "PM"
    day, mon, year = date[0:2], date[2:4], date[4:6]
    parts = []
    for value in (lat, lon):
        if len(value) == 10:
            value = "0" + value
        if len(value) == 9:
            value = "00" + value
        parts.append((value[0:3], value[3:5], value[6:10], value[10:11]))
    (latdeg, latmin, latsec, lathemi), (londeg, lonmin, lonsec, lonhemi) = parts
    return {
        "date": f"20{year}-{mon}-{day} {hr}:{mn}:{sec} {apm} (UTC)",
        "altitude": f"{alt} M",
        "numsat": nsat.lstrip("0").strip(),
        "horizp": hop,
        "fix": "2D Fix" if fix == "2" else "3D Fix",
        "heading": f"{cog} Deg from North",
        "hspd": f"{hspd} Km/h",
        "delatitude": f"{int(latdeg)} Deg {int(latmin)} Min {int(latsec) * 6 // 1000} Sec "
                      f"{'South' if lathemi == 'S' else 'North'}",
        "delongitude": f"{int(londeg)} Deg {int(lonmin)} Min {int(lonsec) * 6 // 1000} Sec "
                       f"{'East' if lonhemi == 'E' else 'West'}",
        "dlatitude": convert_lua(latdeg, latmin, latsec, lathemi),
        "dlongitude": convert_lua(londeg, lonmin, lonsec, lonhemi),
    }


def test_rooter_quectel_gps_script_through_gcom(gnss_modem):
    host, advance = gnss_modem(echo=True)            # ROOter never sends ATE0
    gcom = Gcom(host)
    ox = gcom.run("AT+QGPS?")
    assert ox == "AT+QGPS?\n+QGPS: 0\n\nOK", repr(ox)
    assert "+QGPS: 1" not in ox
    ox = gcom.run("AT+QGPS=1")
    assert ox == "AT+QGPS=1\nOK", repr(ox)
    drx = gcom.run('AT+QCFG="gpsdrx"')                # the script writes ",1" only if a "0" shows
    if "0" in drx:
        gcom.run('AT+QCFG="gpsdrx",1')
    ox = gcom.run('AT+QGPSCFG="outport","none"')
    assert ox == 'AT+QGPSCFG="outport","none"\nOK', repr(ox)
    assert host.at('AT+QGPSCFG="outport"').endswith(b'+QGPSCFG: "outport","none"\r\n\r\nOK\r\n')

    tries = 0
    while True:                                       # the polling loop
        tries += 1
        assert tries <= 8, "no fix"
        ox = gcom.run("AT+QGPSLOC=0")
        if "ERROR" not in ox:
            break
        assert "TIMEOUT ERROR" not in ox, repr(ox)    # ended by its "+CME ERROR" piece, not 25 s
        assert ox.startswith("AT+QGPSLOC=0\n+CME ERROR: 516"), repr(ox)
        advance(5)                                   # sleep 5
    assert tries == 7, tries                          # 6 polls in 30 s of no fix, the 7th has it
    data = processq(ox)
    m = re.fullmatch(r"2030-06-15 (\d\d):(\d\d):(\d\d) (AM|PM) \(UTC\)", data["date"])
    assert m and m[4] == "AM" and near_clock(int(m[1]), int(m[2]), int(m[3])), data
    assert data["altitude"] == "12.5 M" and data["numsat"] == "9" and data["horizp"] == "0.9", data
    assert data["fix"] == "3D Fix" and data["heading"] == "0.00 Deg from North", data
    assert data["hspd"] == "0.0 Km/h", data
    # Mode 0's ddmm.mmmmN / dddmm.mmmmE are what the position slicing needs (10 or 11 long)
    assert data["delatitude"] == "31 Deg 7 Min 24 Sec North", data
    assert data["delongitude"] == "121 Deg 32 Min 35 Sec East", data
    assert abs(float(data["dlatitude"]) - LAT) <= 0.00006, data
    assert abs(float(data["dlongitude"]) - LON) <= 0.00006, data


# =================================================================================================
# ESP-IDF esp_modem (v1) BG96 DCE, stackcare/lte_poc bg96.c
# =================================================================================================
class EspModemBg96:
    """esp_dte_handle_line() feeding bg96_handle_servingcell()."""

    def __init__(self, host) -> None:
        self.host = host
        self.servingcell = {"rsrp": "", "rsrq": "", "rssi": ""}
        self.tokens: list[list[str]] = []             # (test's record) each line's strtok pieces

    def _lines(self, timeout: float = 5.0):
        buf = bytearray()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ser = self.host.ser
            buf += ser.read(max(1, ser.in_waiting))
            while b"\n" in buf:
                i = buf.index(b"\n")
                line, buf[:] = bytes(buf[:i + 1]), buf[i + 1:]
                yield line.decode("latin-1")
        raise AssertionError(f"no final line; left {bytes(buf)!r}")

    def handle_servingcell(self, line: str):
        if "OK" in line:
            return "SUCCESS"
        if "ERROR" in line:
            return "FAIL"
        self.servingcell = {"rsrp": "", "rsrq": "", "rssi": ""}       # memset
        p = [t for t in line.split(",") if t]                          # strtok(",")
        self.tokens.append(p)
        for key, index in (("rsrp", 13), ("rsrq", 14), ("rssi", 15)):
            if index < len(p):
                self.servingcell[key] = p[index]
        return None

    def get_servingcell(self) -> str:
        self.host.write(b'AT+QENG="servingcell"\r')
        for line in self._lines():
            if len(line) > 2:                         # pure "\r\n" lines skipped
                state = self.handle_servingcell(line)
                if state:
                    return state


def test_esp_modem_bg96_servingcell_reads_rsrp_rsrq_rssi(open_modem):
    host, _ = open_modem("ec2x")
    qcsq = host.at("AT+QCSQ")
    m = re.search(rb'\+QCSQ: "LTE",(-?\d+),(-?\d+),\d+,(-?\d+)', qcsq)
    assert m, qcsq
    dce = EspModemBg96(host)
    assert dce.get_servingcell() == "SUCCESS"
    assert dce.servingcell == {"rsrp": m[2].decode(), "rsrq": m[3].decode(), "rssi": m[1].decode()}
    assert dce.servingcell == {"rsrp": "-94", "rsrq": "-9", "rssi": "-65"}
    # The driver keeps the pieces in char *p[17]; the EC2x's (and the BG96's) LTE line has 18
    # comma fields (<srxlev> last, with its CR LF), so strtok's 18th piece lands past the end of
    # the array on a real module too: a driver bug, not the module's.
    assert len(dce.tokens[-1]) == 18 and dce.tokens[-1][17] == "30\r\n", dce.tokens
    assert dce.tokens[-1][:4] == ['+QENG: "servingcell"', '"NOCONN"', '"LTE"', '"FDD"']
    # Radio off: the module reports no cell ("SEARCH", two fields): the struct stays zeroed.
    assert host.at("AT+CFUN=4").endswith(b"OK\r\n")
    assert dce.get_servingcell() == "SUCCESS"
    assert dce.tokens[-1] == ['+QENG: "servingcell"', '"SEARCH"\r\n'], dce.tokens
    assert dce.servingcell == {"rsrp": "", "rsrq": "", "rssi": ""}
    assert host.at("AT+CFUN=1").endswith(b"OK\r\n")
    host.quiet_for(0.5)
    assert dce.get_servingcell() == "SUCCESS"
    assert dce.servingcell["rsrp"] == "-94", dce.servingcell
