"""PDP contexts: Quectel's AT+QICSGP / AT+QIACT / AT+QIDEACT (EC2x note §3.1)
and 3GPP's AT+CGDCONT / AT+CGACT in the ML302 manual's format (§3)."""
from __future__ import annotations

from emulator.at.args import Args
from emulator.at.parser import READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import CommandError, ok

_TYPE_NAMES = {1: "IP", 2: "IPV6", 3: "IPV4V6"}
_TYPE_BY_NAME = {v: k for k, v in _TYPE_NAMES.items()}


def _cid(modem, args: Args, i: int = 0) -> int:
    return args.int(i, modem.pdp.first, modem.pdp.last)


def _range(modem) -> str:
    return f"({modem.pdp.first}-{modem.pdp.last})"


# -- Quectel ------------------------------------------------------------------
@command("+QICSGP", WRITE,
         test=lambda modem: f"+QICSGP: {_range(modem)},(1-3),<APN>,<username>,<password>,(0-3)")
def qicsgp_write(modem, cmd):
    args = Args(cmd, at_most=6)
    cid = _cid(modem, args)
    ctx = modem.pdp.get(cid)
    if len(args) == 1:                         # AT+QICSGP=<cid>: query
        return ok(f'+QICSGP: {ctx.type},"{ctx.apn}","{ctx.user}","{ctx.password}",{ctx.auth}')
    ctx_type = args.int(1, 1, 3)
    apn = args.str(2, default="", max_len=99)
    user = args.str(3, default="", max_len=127)
    password = args.str(4, default="", max_len=127)
    auth = args.int(5, 0, 3, default=ctx.auth)
    ctx.type, ctx.apn, ctx.user, ctx.password, ctx.auth = ctx_type, apn, user, password, auth
    return ok()


@command("+QIACT", READ, test=lambda modem: f"+QIACT: {_range(modem)}")
def qiact_read(modem, cmd):
    return ok(*(f'+QIACT: {c.cid},1,{c.type},"{c.address}"' for c in modem.pdp.active()))


@command("+QIACT", WRITE)
def qiact_write(modem, cmd):
    args = Args(cmd, at_most=1)
    cid = _cid(modem, args)
    if modem.cfun != 1:
        raise CommandError("ERROR", "radio is off (AT+CFUN)")
    if modem.pdp.is_active(cid):
        raise CommandError("ERROR", f"PDP context {cid} is already active")
    modem.pdp.activate(cid)
    return ok()


@command("+QIDEACT", WRITE, test=lambda modem: f"+QIDEACT: {_range(modem)}")
def qideact_write(modem, cmd):
    args = Args(cmd, at_most=1)
    modem.deactivate_pdp(_cid(modem, args))
    return ok()


# -- 3GPP (ML302) -------------------------------------------------------------
@command("+CGDCONT", READ,
         test=lambda modem: f'+CGDCONT: {_range(modem)},("IP","IPV6","IPV4V6"),,,(0-2),(0-4)')
def cgdcont_read(modem, cmd):
    return ok(*(f'+CGDCONT: {c.cid},"{_TYPE_NAMES[c.type]}","{c.apn}","{c.address or "0.0.0.0"}",0,0'
                for c in modem.pdp.defined()))


@command("+CGDCONT", WRITE)
def cgdcont_write(modem, cmd):
    args = Args(cmd, at_most=6)
    ctx = modem.pdp.get(_cid(modem, args))
    if len(args) == 1:
        return ok()
    type_name = args.str(1, default="IP", max_len=8).upper()
    if type_name not in _TYPE_BY_NAME:
        raise CommandError("ERROR", f"PDP type {type_name!r}")
    ctx.type = _TYPE_BY_NAME[type_name]
    ctx.apn = args.str(2, default="", max_len=99)
    return ok()


@command("+CGACT", READ, test="+CGACT: (0,1)")
def cgact_read(modem, cmd):
    return ok(*(f"+CGACT: {c.cid},{int(c.active)}" for c in modem.pdp.defined()))


@command("+CGACT", WRITE)
def cgact_write(modem, cmd):
    args = Args(cmd, at_most=2)
    state = args.int(0, 0, 1)
    cids = [_cid(modem, args, 1)] if args.present(1) else [c.cid for c in modem.pdp.defined()]
    lines = []
    for cid in cids:
        if state == 0:
            modem.deactivate_pdp(cid)
            continue
        if modem.cfun != 1:
            raise CommandError("ERROR", "radio is off (AT+CFUN)")
        ctx = modem.pdp.activate(cid)
        # The manual's §3 format, spaces included: "+CGACT: 1, 1, 10.127.79.43".
        lines.append(f"+CGACT: {cid}, 1, {ctx.address}")
    return ok(*lines)
