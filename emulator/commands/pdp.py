"""PDP contexts: Quectel's AT+QICSGP / AT+QIACT / AT+QIDEACT (EC2x note §3.1)
and 3GPP's AT+CGDCONT / AT+CGACT in the ML302 manual's format (§3) and, variant
"quectel", the EC25&EC21 AT Commands Manual's; AT+CGATT, AT+CGPADDR, AT+CGCONTRDP
(EC2x).  One PdpTable (emulator/modem/pdp.py) behind all of them, so a context
configured with AT+QICSGP reads back in AT+CGDCONT? and one activated with AT+CGACT
in AT+QIACT?; registration and attach are emulator/modem/registration.py."""
from __future__ import annotations

import ipaddress

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import CommandError, ok
from emulator.modem.packet_events import NO_SERVICE, RADIO_OFF, packet_events
from emulator.modem.pdp import PdpContext, data_counter
from emulator.modem.registration import registration

_TYPE_NAMES = {1: "IP", 2: "IPV6", 3: "IPV4V6"}
_TYPE_BY_NAME = {v: k for k, v in _TYPE_NAMES.items()}


def _cid(modem, args: Args, i: int = 0) -> int:
    return args.int(i, modem.pdp.first, modem.pdp.last)


def _range(modem) -> str:
    return f"({modem.pdp.first}-{modem.pdp.last})"


def _peek(modem, cid: int) -> PdpContext:
    """A context as a read shows it, without defining it: a query must not make it appear
    in AT+CGDCONT? / AT+CGACT? / AT+CGPADDR, nor be activated by AT+CGACT=1 (all defined)."""
    return modem.pdp.find(cid) or PdpContext(cid, apn=modem.profile["pdp.default_apn"])


def _activate(modem, cid: int):
    """Activate a context as AT+QIACT / AT+CGACT=1 do: the radio on, registered (the
    packet domain is attached first if the host detached it, as 27.007 §10.1.10 says).
    A refusal is AT+CEER's next cause; a context that comes up is reported
    (+CGEV: ME PDN ACT with AT+CGEREP)."""
    reg = _in_service(modem, "cannot activate")
    if not reg.attached():
        reg.attach(True)
    was_active = modem.pdp.is_active(cid)
    ctx = modem.pdp.activate(cid)
    if not was_active:
        packet_events(modem).activated(cid)
    return ctx


def _in_service(modem, refusal: str):
    """The registration, when the radio is on and registered; else ERROR, its cause (radio
    off, no service) AT+CEER's next answer.  (Context activation and AT+CGATT=1.)"""
    if modem.cfun != 1:
        packet_events(modem).refused(RADIO_OFF)
        raise CommandError("ERROR", f"{refusal}: radio is off (AT+CFUN)")
    reg = registration(modem)
    if not reg.registered():
        packet_events(modem).refused(NO_SERVICE)
        raise CommandError("ERROR", f"{refusal}: not registered (stat {reg.radio_stat()})")
    return reg


# -- Quectel ------------------------------------------------------------------
# AT+QGDCNT: the data counters (EC25&EC21 AT Commands Manual, packet domain).  Kura's Quectel
# support reads them for its Tx/Rx counters.  What is counted: emulator/modem/pdp.py DataCounter.
@command("+QGDCNT", READ)
def qgdcnt_read(modem, cmd):
    counter = data_counter(modem)
    return ok(f"+QGDCNT: {counter.sent},{counter.received}")


@command("+QGDCNT", WRITE, test="+QGDCNT: (0,1)")
def qgdcnt_write(modem, cmd):
    """=0 resets the counters, =1 saves them (they start from the saved values after a
    restart)."""
    action = Args(cmd, at_most=1).int(0, 0, 1)
    counter = data_counter(modem)
    if action == 0:
        counter.sent = counter.received = 0
    elif not counter.save():
        raise CommandError("ERROR", "AT+QGDCNT=1: the counters could not be saved")
    return ok()


@command("+QICSGP", WRITE,
         test=lambda modem: f"+QICSGP: {_range(modem)},(1-3),<APN>,<username>,<password>,(0-3)")
def qicsgp_write(modem, cmd):
    args = Args(cmd, at_most=6)
    cid = _cid(modem, args)
    if len(args) == 1:                         # AT+QICSGP=<cid>: query
        ctx = _peek(modem, cid)
        return ok(f'+QICSGP: {ctx.type},"{ctx.apn}","{ctx.user}","{ctx.password}",{ctx.auth}')
    ctx_type = args.int(1, 1, 3)
    apn = args.str(2, default="", max_len=99)
    user = args.str(3, default="", max_len=127)
    password = args.str(4, default="", max_len=127)
    auth = args.int(5, 0, 3, default=_peek(modem, cid).auth)
    ctx = modem.pdp.get(cid)                   # a refused line defines nothing
    ctx.type, ctx.apn, ctx.user, ctx.password, ctx.auth = ctx_type, apn, user, password, auth
    return ok()


@command("+QIACT", READ, test=lambda modem: f"+QIACT: {_range(modem)}")
def qiact_read(modem, cmd):
    return ok(*(f'+QIACT: {c.cid},1,{c.type},"{c.address}"' for c in modem.pdp.active()))


@command("+QIACT", WRITE)
def qiact_write(modem, cmd):
    args = Args(cmd, at_most=1)
    cid = _cid(modem, args)
    if modem.pdp.is_active(cid):
        raise CommandError("ERROR", f"PDP context {cid} is already active")
    _activate(modem, cid)
    return ok()


@command("+QIDEACT", WRITE, test=lambda modem: f"+QIDEACT: {_range(modem)}")
def qideact_write(modem, cmd):
    args = Args(cmd, at_most=1)
    cid = _cid(modem, args)
    # After +QIURC "pdpdeact" the host "must execute AT+QIDEACT to deactivate the context and
    # reset all connections" (TCP(IP) note): the context's SSL connections that had ended
    # already (the network's deactivation, a peer's close) are reset, their ids free for the
    # next open (SslService.pdp_reset); the ones still up end now as the SSL note says a PDP
    # deactivation ends them: "closed", state 4 (data received before it readable) until
    # AT+QSSLCLOSE.  AT+QIOPEN's, which the command "close[s]" (TCP(IP) note), all go: their
    # ids free once they have ended (TcpipService.pdp_reset).
    modem.emit("pdp_reset", cid=cid)
    modem.deactivate_pdp(cid)
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
    cid = _cid(modem, args)
    if len(args) == 1:
        # 27.007 §10.1.1: the context becomes undefined (AT+QICSGP=<cid> then reads the
        # defaults); an active context cannot be: ERROR.
        if not modem.pdp.undefine(cid):
            raise CommandError("ERROR", f"PDP context {cid} is active (AT+CGACT=0,{cid} first)")
        return ok()
    type_name = args.str(1, default="IP", max_len=8).upper()
    if type_name not in _TYPE_BY_NAME:
        raise CommandError("ERROR", f"PDP type {type_name!r}")
    apn = args.str(2, default="", max_len=99)
    ctx = modem.pdp.get(cid)                   # a refused line defines nothing
    ctx.type, ctx.apn = _TYPE_BY_NAME[type_name], apn
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
        ctx = _activate(modem, cid)
        # The manual's §3 format, spaces included: "+CGACT: 1, 1, 10.127.79.43".
        lines.append(f"+CGACT: {cid}, 1, {ctx.address}")
    return ok(*lines)


# -- 3GPP (EC2x: EC25&EC21 AT Commands Manual) ----------------------------------
# A context's <PDP_addr> in AT+CGDCONT? is the one configured (none: zeros), as an EC25
# answers after AT+QICSGP=1,1,"UNINET": +CGDCONT: 1,"IP","UNINET","0.0.0.0",0,0,0,0.
_ZERO_ADDR = {1: "0.0.0.0", 2: ".".join(["0"] * 16), 3: ".".join(["0"] * 16)}


def _cgdcont_test_ec2x(modem) -> list[str]:
    return [f'+CGDCONT: {_range(modem)},"{name}",,,(0-2),(0-4),(0-1),(0-1)'
            for name in _TYPE_NAMES.values()]


@command("+CGDCONT", READ, variant="quectel", test=_cgdcont_test_ec2x)
def cgdcont_read_ec2x(modem, cmd):
    return ok(*(f'+CGDCONT: {c.cid},"{_TYPE_NAMES[c.type]}","{c.apn}","{_ZERO_ADDR[c.type]}",0,0,0,0'
                for c in modem.pdp.defined()))


@command("+CGACT", WRITE, variant="quectel")
def cgact_write_ec2x(modem, cmd):
    """AT+CGACT=<state>[,<cid>]: OK alone (no +CGACT line, unlike the ML302); an active
    context activated again or an inactive one deactivated is OK (27.007)."""
    args = Args(cmd, at_most=2)
    state = args.int(0, 0, 1)
    cids = [_cid(modem, args, 1)] if args.present(1) else [c.cid for c in modem.pdp.defined()]
    for cid in cids:
        if state == 0:
            if modem.pdp.is_active(cid):
                modem.deactivate_pdp(cid)
        elif not modem.pdp.is_active(cid):
            _activate(modem, cid)
    return ok()


@command("+CGATT", READ, test="+CGATT: (0,1)")
def cgatt_read(modem, cmd):
    return ok(f"+CGATT: {int(registration(modem).attached())}")


@command("+CGATT", WRITE)
def cgatt_write(modem, cmd):
    """AT+CGATT=0 deactivates every PDP context (sockets report "closed"; no "pdpdeact":
    the host asked for it); AT+CGATT=1 needs the radio on and a registration."""
    args = Args(cmd, at_most=1)
    state = args.int(0, 0, 1)
    reg = _in_service(modem, "cannot attach") if state == 1 else registration(modem)
    reg.attach(bool(state))
    return ok()


def _cgpaddr_line(modem, cid: int) -> str:
    ctx = _peek(modem, cid)
    address = ctx.address if ctx.active else _ZERO_ADDR[ctx.type]
    return f'+CGPADDR: {cid},"{address}"'


def _defined_list(modem) -> str:
    return "(" + ",".join(str(c.cid) for c in modem.pdp.defined()) + ")"


@command("+CGPADDR", EXEC, test=lambda modem: f"+CGPADDR: {_defined_list(modem)}")
def cgpaddr_exec(modem, cmd):
    return ok(*(_cgpaddr_line(modem, c.cid) for c in modem.pdp.defined()))


@command("+CGPADDR", WRITE)
def cgpaddr_write(modem, cmd):
    """AT+CGPADDR=<cid>[,<cid>...]: +CGPADDR: <cid>,"<address>" ("0.0.0.0" while inactive)."""
    args = Args(cmd, at_most=modem.pdp.last - modem.pdp.first + 1)
    return ok(*(_cgpaddr_line(modem, _cid(modem, args, i)) for i in range(len(args))))


def _contrdp_line(modem, ctx) -> str:
    """27.007 §10.1.23: cid, bearer id, APN, "<address>.<mask>", gateway, DNS (the
    network's or AT+QIDNSCFG's).  The bearer of the default EPS bearer starts at 5."""
    net = ipaddress.ip_network(f"{ctx.address}/24", strict=False)
    gateway = net[1] if str(net[1]) != ctx.address else net[2]
    from emulator.commands.netutil import dns_servers
    pri, sec = dns_servers(modem, ctx.cid)
    return (f'+CGCONTRDP: {ctx.cid},{ctx.cid + 4},"{ctx.apn}","{ctx.address}.{net.netmask}",'
            f'"{gateway}","{pri}","{sec}"')


@command("+CGCONTRDP", EXEC, test=lambda modem: f"+CGCONTRDP: {_defined_list(modem)}")
def cgcontrdp_exec(modem, cmd):
    return ok(*(_contrdp_line(modem, c) for c in modem.pdp.active()))


@command("+CGCONTRDP", WRITE)
def cgcontrdp_write(modem, cmd):
    """AT+CGCONTRDP=<cid>: the line of an active context; an inactive one: OK alone."""
    args = Args(cmd, at_most=1)
    cid = _cid(modem, args)
    return ok(*(_contrdp_line(modem, c) for c in modem.pdp.active() if c.cid == cid))
