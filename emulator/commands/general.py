"""Commands a host driver sends on start-up: identity, SIM, signal, registration,
functionality, serial settings and the clock.  Values come from the profile."""
from __future__ import annotations

import functools

from emulator.at import framing
from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, Response, ok
from emulator.modem.registration import registration


ERR_SIM_BUSY = 14
ERR_SIM_FAILURE = 13


def _plain(key: str):
    def handler(modem, cmd):
        return ok(modem.profile[key])
    return handler


def _sim(handler):
    """A command the SIM answers: +CME ERROR: 14 (SIM busy) from a restart until the boot's
    +CPIN: READY (Modem.sim_ready), as a module whose SIM is still starting; +CME ERROR: 13
    (SIM failure) while AT+CFUN=0 has the SIM off (Modem.sim_off)."""
    @functools.wraps(handler)
    def guarded(modem, cmd):
        sim_not_ready(modem)
        return handler(modem, cmd)
    return guarded


def sim_not_ready(modem) -> None:
    """Raises the SIM's error unless it answers: 13 while AT+CFUN=0 has it off, 14 while
    it starts (after a restart or AT+CFUN=1 until its +CPIN: READY)."""
    if modem.sim_off:
        raise CommandError(Cme(ERR_SIM_FAILURE), "the SIM is off (AT+CFUN=0)")
    if not modem.sim_ready:
        raise CommandError(Cme(ERR_SIM_BUSY), "the SIM is not ready yet (it is starting)")


for _name, _key in (("+CGMI", "identity.manufacturer"), ("+GMI", "identity.manufacturer"),
                    ("+CGMM", "identity.model"), ("+GMM", "identity.model"),
                    ("+CGMR", "identity.revision"), ("+GMR", "identity.revision"),
                    ("+CGSN", "identity.imei"), ("+GSN", "identity.imei")):
    command(_name, EXEC)(_plain(_key))
command("+CIMI", EXEC)(_sim(_plain("identity.imsi")))


# 27.007 §5.4 AT+CGSN=<snt>, which hosts written for the ML302 use to read the IMEI
# (RT-Thread's and OneOS's ml302 drivers: AT+CGSN=1, "+CGSN: %s"); the EC2x's manual has
# the execute form only, so its profile keeps "*" (the write form answers ERROR there).
# No quotes around the values: the ML302 hosts take the 15 characters after "+CGSN: ".
@command("+CGSN", WRITE, variant="27007", test="+CGSN: (0-3)")
def cgsn_write(modem, cmd):
    snt = Args(cmd, at_most=1).int(0, 0, 3)
    imei = modem.profile["identity.imei"]
    svn = modem.profile.get("identity.svn", "01")   # (27.007: 2 digits)
    return ok(imei if snt == 0 else f"+CGSN: {(imei, imei[:14] + svn, svn)[snt - 1]}")


@command("+QCCID", EXEC)
@_sim
def qccid(modem, cmd):
    return ok(f"+QCCID: {modem.profile['identity.iccid']}")


@command("+CCID", EXEC)
@command("+CCID", READ)
@_sim
def ccid(modem, cmd):
    return ok(f"+CCID: {modem.profile['identity.iccid']}")


@command("+ICCID", EXEC)
@_sim
def iccid(modem, cmd):
    """The ML302's (China Mobile's OneOS ml302 driver: AT+ICCID, "+ICCID: %s")."""
    return ok(f"+ICCID: {modem.profile['identity.iccid']}")


@command("+CPIN", READ)
@_sim
def cpin(modem, cmd):
    return ok("+CPIN: READY")


@command("+CSQ", EXEC, test="+CSQ: (0-31,99),(0-7,99)")
def csq(modem, cmd):
    rssi, ber = modem.profile["network.csq"] if modem.cfun == 1 else (99, 99)
    return ok(f"+CSQ: {rssi},{ber}")


def _registration(name: str):
    def read(modem, cmd):
        # Location fields are fixed values: the emulator has no cell to report.
        return ok(registration(modem).line(name, modem.reg_urc[name]))

    def write(modem, cmd):
        args = Args(cmd, at_most=1)
        n = args.int(0, 0, 2, default=0)
        registration(modem)          # (follows the stat from now on: a change is reported)
        modem.reg_urc[name] = n
        return ok()

    command(name, READ)(read)
    command(name, WRITE, test=f"{name}: (0-2)")(write)


for _name in ("+CREG", "+CGREG", "+CEREG"):
    _registration(_name)


def _cops_test(modem) -> str:
    reg = registration(modem)
    return (f'+COPS: (2,"{reg.operator(0)}","{reg.operator(1)}","{reg.operator(2)}",'
            f'{modem.profile["network.act"]}),,(0-4),(0-2)')


@command("+COPS", READ, test=_cops_test)
def cops(modem, cmd):
    reg = registration(modem)
    if not reg.registered():                     # radio off, deregistered, or dropped by the network
        return ok(f"+COPS: {reg.cops_mode}")
    return ok(f'+COPS: {reg.cops_mode},{reg.cops_format},"{reg.operator()}",{modem.profile["network.act"]}')


@command("+COPS", WRITE)
def cops_write(modem, cmd):
    """27.007 7.3: <mode> 0 automatic, 1 manual (<format>,<oper> must name this network),
    2 deregister, 3 only sets <format>, 4 manual then automatic (the one network there is
    is found either way); <AcT> is taken as given."""
    args = Args(cmd, error=Cme(50), at_most=4)
    reg = registration(modem)
    mode = args.int(0, 0, 4)
    fmt = args.int(1, 0, 2, default=None)
    if mode == 3:
        if fmt is None:
            raise CommandError(Cme(50), "AT+COPS=3 needs <format>")
        args.at_most(2)
        reg.cops_format = fmt
        return ok()
    if mode in (1, 4):
        if fmt is None or not args.present(2):
            raise CommandError(Cme(50), f"AT+COPS={mode} needs <format>,<oper>")
        args.int(3, 0, 9, default=None)
        oper = args.str(2, max_len=32)
        found = oper.upper() == reg.operator(fmt).upper()
        if mode == 1 and not found:
            raise CommandError(Cme(30), f"AT+COPS=1: no network {oper!r} here ({reg.operator(fmt)!r})")
        mode = 1 if found else 0                 # 4: manual when it works, else automatic
    elif len(args) > 2:
        raise CommandError(Cme(50), f"AT+COPS={mode} takes at most <format>")
    if fmt is not None:
        reg.cops_format = fmt
    if modem.cfun != 1 and mode != 2:
        raise CommandError(Cme(30), "the radio is off (AT+CFUN)")
    reg.select(mode)
    return ok()


def _qpowd(modem) -> Response:
    """AT+QPOWD[=<n>] (0 immediately, 1 normally, the EC25 AT manual; the same here): OK,
    then "POWERED DOWN", then the module is off -- no answer to anything -- until the control API's
    reboot (a PWRKEY pulse) starts it again with its start-up URCs."""
    def down() -> None:
        # Written at once, not queued as a URC: nothing the module held back comes after it.
        modem.write(framing.urc("POWERED DOWN", b"", modem.settings))
        modem.emit("restart")        # what SEND OK accepted leaves first
        modem.power_down()
    return Response([], "OK", then=down, ends_line=True)


@command("+QPOWD", EXEC)
def qpowd_exec(modem, cmd):
    return _qpowd(modem)


@command("+QPOWD", WRITE, test="+QPOWD: (0,1)")
def qpowd_write(modem, cmd):
    Args(cmd, at_most=1).int(0, 0, 1)                # <n>: checked, both act alike
    return _qpowd(modem)


@command("+CFUN", READ, test="+CFUN: (0,1,4),(0-1)")
def cfun_read(modem, cmd):
    return ok(f"+CFUN: {modem.cfun}")


@command("+CFUN", WRITE)
def cfun_write(modem, cmd):
    args = Args(cmd, error=Cme(50), at_most=2)
    fun = args.int(0, 0, 127)
    if fun not in (0, 1, 4):
        raise CommandError(Cme(50), f"AT+CFUN={fun}: only 0, 1 and 4")
    reset = args.int(1, 0, 1, default=0)
    if reset:
        if fun != 1:        # (Quectel: <rst> 1 "is available only for <fun>=1")
            raise CommandError(Cme(50), f"AT+CFUN={fun},1: a reset only with <fun> 1")

        def reboot() -> None:
            modem.emit("restart")    # what SEND OK accepted leaves first
            modem.reboot(0.05)       # its start-up URCs a moment after OK
        # OK first, framed as the host asked (ATV0, ATQ1...); then the module restarts with
        # its AT&W set, and the rest of the line is not run.
        return Response([], "OK", then=reboot, ends_line=True)
    reg = registration(modem)                  # knows the stats before the change
    if fun != 1:
        for cid in [c.cid for c in modem.pdp.active()]:
            modem.deactivate_pdp(cid)
    if fun == 0 and not modem.sim_off:
        modem.sim_power_down()
    elif fun != 0 and modem.sim_off:
        modem.sim_power_up()                   # its URCs after this OK
    modem.cfun = fun
    reg.refresh()                              # +CREG/+CGREG/+CEREG URCs if enabled
    reg.note_attach("host")                    # +CGEV: ME DETACH if AT+CGEREP asks
    return ok()


def _ipr_test(modem) -> str:
    rates = ",".join(str(r) for r in modem.profile["serial.baud_rates"])
    return f"+IPR: (0,{rates}),(0)"


@command("+IPR", READ, test=_ipr_test)
def ipr_read(modem, cmd):
    return ok(f"+IPR: {modem.settings.ipr}")


@command("+IPR", WRITE)
def ipr_write(modem, cmd):
    args = Args(cmd, at_most=1)
    rate = args.int(0, 0, 4_000_000)
    if rate != 0 and rate not in modem.profile["serial.baud_rates"]:
        raise CommandError("ERROR", f"baud rate {rate} not supported by {modem.profile.name}")
    modem.settings.ipr = rate
    # A paced port (--baud) switches to the new rate once this answer has gone out
    # at the old one (emulator/io/app.py listens); 0 (auto-baud) keeps the rate.
    modem.emit("ipr", rate=rate)
    return ok()


@command("+IFC", READ, test="+IFC: (0,2),(0,2)")
def ifc_read(modem, cmd):
    dce_by_dte, dte_by_dce = modem.settings.ifc
    return ok(f"+IFC: {dce_by_dte},{dte_by_dce}")


@command("+IFC", WRITE)
def ifc_write(modem, cmd):
    args = Args(cmd, at_most=2)
    a = args.int(0, 0, 2, default=0)
    b = args.int(1, 0, 2, default=0)
    if 1 in (a, b):
        raise CommandError("ERROR", "AT+IFC: only 0 (none) and 2 (RTS/CTS)")
    modem.settings.ifc = (a, b)
    return ok()


@command("+ICF", READ, test="+ICF: (3),(0-3)")
def icf_read(modem, cmd):
    """AT+ICF (V.250 character framing; the EC25 AT manual's serial interface commands):
    a pty carries 8-bit bytes with no framing, so <format> 3 (8 data, 0 parity, 1 stop,
    the module's default) is the only one taken; <parity> 0-3 is kept (ignored with 3)."""
    fmt, parity = modem.settings.icf
    return ok(f"+ICF: {fmt},{parity}")


@command("+ICF", WRITE)
def icf_write(modem, cmd):
    args = Args(cmd, at_most=2)
    fmt = args.int(0, 0, 6)
    if fmt != 3:
        raise CommandError("ERROR", f"AT+ICF={fmt}: only format 3 (8 data, no parity, 1 stop) on a pty")
    parity = args.int(1, 0, 3, default=modem.settings.icf[1])
    modem.settings.icf = (fmt, parity)
    return ok()


@command("+CCLK", READ)           # AT+CCLK=? answers a bare OK: the table's default
def cclk_read(modem, cmd):
    return ok(f'+CCLK: "{modem.clock.format_local()}"')


@command("+CCLK", WRITE)
def cclk_write(modem, cmd):
    args = Args(cmd, error=Cme(50), at_most=1)
    if not modem.clock.set_local(args.str(0, quoted=True, max_len=20)):
        raise CommandError(Cme(50), "AT+CCLK wants \"yy/MM/dd,hh:mm:ss+zz\"")
    return ok()
