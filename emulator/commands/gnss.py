"""The EC2x's GNSS commands (Quectel EC25&EC21 GNSS AT Commands Manual): AT+QGPS /
AT+QGPSEND switch the engine on and off, AT+QGPSLOC reports the fix (the path TinyGSM's
Quectel getGPS, Sixfab's and the MicroPython / Arduino EC25 GNSS examples take).
AT+QGPSCFG's "outport" and "nmeasrc" are profile items like AT+QCFG's
(emulator/commands/device.py, [qgpscfg]).

The engine gets its fix gnss.ttff seconds after AT+QGPS=1 on the modem's timers, at the
profile's [gnss] position; the fix's UTC time and date are the modem clock's (AT+CCLK), at
whole seconds (one fix a second).  A restart turns the engine off.  Decisions where the
manual is silent: docs/behaviour.md, "GNSS"."""
from __future__ import annotations

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, ok

# The GNSS error codes (the manual's summary of <errcode>s).
INVALID_PARAMETER, SESSION_ONGOING, SESSION_NOT_ACTIVE, NOT_FIXED = 501, 504, 505, 516

KNOTS_PER_KMH = 1 / 1.852
QGPS_TEST = "+QGPS: (1-4),(1-255),(1-1000),(0-1000),(1-65535)"


def gnss(modem) -> "Gnss":
    return modem.feature("gnss", Gnss)


class Gnss:
    def __init__(self, modem) -> None:
        self.modem = modem
        self._timer = None
        self._off()
        modem.on("reset", self._off)

    def _off(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self.on = False
        self.fixed = False

    def start(self, fixcount: int, fixrate: int) -> None:
        """AT+QGPS=1: a fix gnss.ttff s later; <fixcount> > 0: the engine goes off by itself
        after that many fixes, one each <fixrate> s from the first (the last one is reported
        until the next would have come)."""
        self.on, self.fixed = True, False
        ttff = self.modem.profile["gnss.ttff"]
        if ttff <= 0:        # fixed at once: not a timer that the host's next line could pass
            self._first_fix(fixcount, fixrate)
            return
        self._timer = self.modem.call_later(ttff, self._first_fix, fixcount, fixrate)

    def _first_fix(self, fixcount: int, fixrate: int) -> None:
        self.fixed = True
        self._timer = None
        if fixcount:
            self._timer = self.modem.call_later(fixcount * fixrate, self._off)

    def stop(self) -> None:
        self._off()


# -- AT+QGPS / AT+QGPSEND ---------------------------------------------------------------------
@command("+QGPS", WRITE, test=QGPS_TEST)
def qgps_write(modem, cmd):
    """AT+QGPS=<GNSSmode>[,<fixmaxtime>[,<fixmaxdist>[,<fixcount>[,<fixrate>]]]]: every
    <GNSSmode> is stand-alone here (no assistance server to ask)."""
    args = Args(cmd, error=Cme(INVALID_PARAMETER), at_most=5)
    args.int(0, 1, 4)
    args.int(1, 1, 255, default=30)
    args.int(2, 1, 1000, default=50)
    fixcount = args.int(3, 0, 1000, default=0)
    fixrate = args.int(4, 1, 65535, default=1)
    engine = gnss(modem)
    if engine.on:
        raise CommandError(Cme(SESSION_ONGOING), "AT+QGPS: the GNSS session is already on")
    engine.start(fixcount, fixrate)
    return ok()


@command("+QGPS", READ)
def qgps_read(modem, cmd):
    return ok(f"+QGPS: {int(gnss(modem).on)}")


@command("+QGPSEND", EXEC)
def qgpsend(modem, cmd):
    engine = gnss(modem)
    if not engine.on:
        raise CommandError(Cme(SESSION_NOT_ACTIVE), "AT+QGPSEND: no GNSS session")
    engine.stop()
    return ok()


# -- AT+QGPSLOC --------------------------------------------------------------------------------
@command("+QGPSLOC", EXEC, READ, WRITE, test="+QGPSLOC: (0-2)")
def qgpsloc(modem, cmd):
    """AT+QGPSLOC[=<mode>]: +QGPSLOC: <UTC>,<latitude>,<longitude>,<hdop>,<altitude>,<fix>,
    <cog>,<spkm>,<spkn>,<date>,<nsat>, <latitude>,<longitude> as <mode> says (0 ddmm.mmmmN,
    1 ddmm.mmmmmm,N, 2 signed decimal degrees).  AT+QGPSLOC? is <mode> 0 too: the form the
    GNSS manual's example and much public EC25 host code (ModemManager's mmcli users among
    them) send."""
    mode = Args(cmd, error=Cme(INVALID_PARAMETER), at_most=1).int(0, 0, 2, default=0)
    engine = gnss(modem)
    if not engine.on:
        raise CommandError(Cme(SESSION_NOT_ACTIVE), "AT+QGPSLOC: GNSS is off")
    if not engine.fixed:
        raise CommandError(Cme(NOT_FIXED), "AT+QGPSLOC: no fix yet")
    return ok("+QGPSLOC: " + location(modem, mode))


def location(modem, mode: int) -> str:
    p = modem.profile
    now = modem.clock.now()
    speed = p["gnss.speed"]
    fields = [now.strftime("%H%M%S") + ".000",
              *position(p["gnss.latitude"], p["gnss.longitude"], mode),
              f"{p['gnss.hdop']:.1f}", f"{p['gnss.altitude']:.1f}", str(p["gnss.fix"]),
              course(p["gnss.cog"]), f"{speed:.1f}", f"{speed * KNOTS_PER_KMH:.1f}",
              now.strftime("%d%m%y"), f"{p['gnss.nsat']:02d}"]
    return ",".join(fields)


def position(latitude: float, longitude: float, mode: int) -> list[str]:
    if mode == 2:
        return [f"{latitude:.5f}", f"{longitude:.5f}"]
    places = 4 if mode == 0 else 6
    lat = _degrees_minutes(latitude, 2, places), "N" if latitude >= 0 else "S"
    lon = _degrees_minutes(longitude, 3, places), "E" if longitude >= 0 else "W"
    if mode == 0:
        return [lat[0] + lat[1], lon[0] + lon[1]]
    return [lat[0], lat[1], lon[0], lon[1]]


def _degrees_minutes(value: float, width: int, places: int) -> str:
    """|value| as NMEA's (d)ddmm.mmmm: whole degrees then minutes, rounded as one number (no
    "60.0000" minutes)."""
    scale = 10 ** places
    total = round(abs(value) * 60 * scale)            # in 1/scale minutes
    degrees, minutes = divmod(total, 60 * scale)
    whole, fraction = divmod(minutes, scale)
    return f"{degrees:0{width}d}{whole:02d}.{fraction:0{places}d}"


def course(cog: float) -> str:
    """<cog> as the manual's ddd.mm: degrees, then minutes ("0.00" due north)."""
    total = round(cog * 60)
    degrees, minutes = divmod(total, 60)
    return f"{degrees % 360}.{minutes:02d}"
