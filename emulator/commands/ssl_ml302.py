"""OneMO SSL commands ("onemo" variant; ML302 SSL AT manual §2.1, §2.5-2.10, §3):
AT+QSSLCFG, AT+QSSLOPEN, AT+QSSLSEND, AT+QSSLRECV, AT+QSSLCLOSE, AT+QSSLSTATE.

Sockets, contexts and TLS are the EC2x ones (emulator/sockets/; the dialect
"onemo" in emulator/sockets/dialects.py holds the URC wording and the context
defaults); the AT+QSSLSEND data phase is shared (ssl_common.py).  Choices where the manual is silent or contradicts itself
(listed in docs/behaviour.md):

* Every failure is a plain ERROR (the manual lists no codes); the log says why.
  Syntax errors (a value out of range, a missing parameter) are ERROR at once;
  conditions of the connection (ssid in use, no active PDP context, DNS, TCP,
  TLS, certificates) are OK then "+QSSLOPEN: <ssid>,<connectcode>", as the
  manual's -2 ("socket in use") connectcode implies: -2 for in use, -1 else.
* AT+QSSLOPEN uses the first active PDP context (the ML302 has no <pdpctx>).
  <timeout> bounds DNS + TCP + handshake together.  connectmode 1
  (transparent): no OK, CONNECT once the handshake is done; a failure is the
  "+QSSLOPEN: <ssid>,<connectcode>" line then ERROR.
* Certificates come from the AT+QSECWRITE slots; a context's cacert /
  clientcert / clientkey start at the manual's fixed paths ("/caCrt.pem",
  "/clientCrt.pem", "/privateKey.pem"), so AT+QSSLCFG="seclevel",0,2 alone
  enables mutual authentication, as in the manual's §2.1 example.  No TLS
  session resumption (the manual has none, and a rewritten certificate slot
  must take effect at the next open); SNI is sent (an Mbed TLS firmware names
  the host for its certificate check, which also sends SNI).
* "ignorertctime" (global, default 1) is every context's ignore-local-time.
  AT+QSSLCFG settings are not kept across AT+CFUN=1,1 (the manual documents no
  saving; the AT+QSECWRITE store is what persists).
* <ipaddr> in +QSSLRECV / +QSSLSTATE is the address the modem's DNS answered
  for the host dialled (Router.display_address: --dns / [dns], else the real
  DNS answer, else a stable made-up address; an IP literal shows itself), never
  the routed address; shown once TCP is connected.  <port> is the port dialled.
* SEND OK alone after the data (§2.7; §3 also prints an OK: not copied).
  ESC cancels with OK (like AT+QSECWRITE).  AT+QSSLCLOSE of an idle ssid
  still answers OK and "<ssid>,CLOSE OK".
* Test forms as printed (placeholders and brackets included, "+ QSSLSEND"
  without the stray space); AT+QSSLRECV accepts <length> 1-1500 (profile
  ssl.recv_max): its test form prints (1,1500) and hosts copy it, although the
  parameter table and both examples say 1460.
* AT+QSSLSTATE starts with "+QSSLSTATE: <state>" (§2.9's syntax; its example
  lost that line): "IP INITIAL" without an active PDP context, "IP STATUS"
  with one and no socket, "IP PROCESSING" while a socket is opening, connected
  or remote-closing, "PDP DEACT" when the bearer went with sockets not yet
  closed by the host.
"""
from __future__ import annotations

from tls_engine import suite_offerable
from tls_engine.ciphers import ALL_SUITES_CODE

from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, WRITE
from emulator.logsafe import get_logger
from emulator.at.registry import command
from emulator.at.responses import Raw, Response, ok
from emulator.commands.ssl_common import (fail, id_range, online_answer, send_request, server_address, service,
                                          socket_args)
from emulator.sockets.context import OPTIONS, MaterialUnreadable, format_cipher_list, parse_cipher_list
from emulator.sockets.dialects import ONEMO_CONTEXT_OPTIONS
from emulator.sockets.service import SslService
from emulator.sockets.ssl_socket import CLOSING, CONNECTED, INITIAL, OPENING, SslSocket
from emulator.storage.secstore import SLOT_PATHS, SecStoreError, slot_for_path

log = get_logger("emulator.ssl")
V = "onemo"

CLOSE_TIMEOUT = 10.0      # seconds for close_notify + TCP close (the ML302 has no parameter)
STATUS = {OPENING: "CONNECTING", CONNECTED: "CONNECTED", CLOSING: "REMOTE CLOSING", INITIAL: "INITIAL"}


def _socket_range(modem) -> str:
    return id_range(service(modem))


def read_slot_material(modem):
    """read_material for to_tls_settings: the AT+QSSLCFG paths name secstore slots."""
    def read(path: str) -> bytes | None:
        slot = slot_for_path(path)
        if slot is None:
            log.warning("ML302 certificate path %r names no slot (they are %s)",
                        path, ", ".join(SLOT_PATHS.values()))
            return None
        try:
            return modem.secstore.load(slot)
        except SecStoreError as exc:        # (unreadable now: the open's failure says why)
            raise MaterialUnreadable(str(exc)) from None
    return read


# -- AT+QSSLCFG ------------------------------------------------------------------
def _format(name: str, value) -> str:
    if name == "ciphersuite":
        return format_cipher_list(value)
    if OPTIONS[name].kind == "path":
        return f'"{value}"'
    return str(value)


def _global_options(svc: SslService) -> dict[str, tuple[int, int, object]]:
    """name -> (lo, hi, current value) of the options that have no <ctxindex>."""
    return {"ignorertctime": (0, 1, svc.contexts[0]["ignorelocaltime"]),
            "https": (0, 1, svc.globals["https"]),
            "httpsctxi": (0, len(svc.contexts) - 1, svc.globals["httpsctxi"])}


@command("+QSSLCFG", WRITE, variant=V,
         test=lambda modem: f'+QSSLCFG: "type",(0-{len(service(modem).contexts) - 1}),"value"')
def qsslcfg_write(modem, cmd):
    svc = service(modem)
    args = Args(cmd)
    name = args.str(0, max_len=32).lower()
    if name != "ctxindex" and name not in svc.options:
        raise args.fail(f"unknown option {name!r}")
    globals_ = _global_options(svc)
    if name in globals_:
        args.at_most(2)
        lo, hi, current = globals_[name]
        if not args.present(1):
            return ok(f'+QSSLCFG: "{name}",{current}')
        value = args.int(1, lo, hi)
        if name == "ignorertctime":          # one switch for the module: mirror it in every context
            for ctx in svc.contexts.values():
                ctx["ignorelocaltime"] = value
        else:
            svc.globals[name] = value
        return ok()
    ctx = svc.contexts[args.int(1, 0, len(svc.contexts) - 1)]
    if name == "ctxindex":
        args.at_most(2)
        fields = ",".join(_format(n, ctx[n]) for n in ONEMO_CONTEXT_OPTIONS)   # (in "ctxindex"'s order)
        return ok(f"+QSSLCFG: {ctx.ctx_id},{fields}")
    args.at_most(3)
    if not args.present(2):                  # the manual's query answer names no context
        return ok(f'+QSSLCFG: "{name}",{_format(name, ctx[name])}')
    if name == "ciphersuite":
        ctx[name] = _parse_suites(modem, args)
    elif OPTIONS[name].kind == "path":
        path = args.str(2, max_len=modem.profile["files.max_name_len"])
        if slot_for_path(path) is None:
            level = 2 if name in ("clientcert", "clientkey") else 1
            log.warning("AT+QSSLCFG=\"%s\": %r is not a certificate slot path (%s): "
                        "AT+QSSLOPEN will fail at seclevel >= %d", name, path, ", ".join(SLOT_PATHS.values()),
                        level)
        ctx[name] = path
    else:
        ctx[name] = args.int(2, OPTIONS[name].lo, OPTIONS[name].hi)
    return ok()


def _parse_suites(modem, args: Args) -> tuple[int, ...]:
    suites = parse_cipher_list(args.str(2, max_len=200))
    table = {int(x, 16) for x in modem.profile["ssl.cipher_suites"]}
    if suites is None:
        raise args.fail("cipher suites must be hex ids like 0X0035, several joined by ':'")
    if suites == (ALL_SUITES_CODE,):
        return suites
    unknown = [f"0X{s:04X}" for s in suites if s not in table]
    if unknown:
        raise args.fail(f"{', '.join(unknown)} not in the ML302 suite list (or 0XFFFF alone)")
    return suites


# -- AT+QSSLOPEN --------------------------------------------------------------------
@command("+QSSLOPEN", WRITE, variant=V,
         test="+QSSLOPEN: <ssid>,<ctxindex>,<ipaddr/domainname>,<port>,<connectmode>[,<timeout>]")
def qsslopen_write(modem, cmd):
    svc = service(modem)
    args = Args(cmd, at_most=6)
    ssid = args.int(0, 0, svc.max_sockets - 1)
    ctx_id = args.int(1, 0, len(svc.contexts) - 1)
    host = server_address(args, 2)
    port = args.int(3, 1, 65535)
    delivery = svc.deliveries["online" if args.int(4, 0, 1) == 1 else "buffer"]   # <connectmode>
    timeout = args.int(5, 10, 300, default=90)
    online = delivery.name == "online"

    def refused(code: int) -> Response:
        # connectmode 1 has no OK before CONNECT: a failure is the manual's
        # "+QSSLOPEN: <ssid>,<connectcode>" line, then ERROR instead of CONNECT.
        if online:
            return Response([f"+QSSLOPEN: {ssid},{code}"], "ERROR")
        return Response([], "OK", after=[f"+QSSLOPEN: {ssid},{code}"])
    if ssid in svc.sockets:
        log.info("AT+QSSLOPEN: ssid %d is in use (AT+QSSLCLOSE=%d first): -2", ssid, ssid)
        return refused(-2)
    active = modem.pdp.active()
    if not active:
        code = svc.code("pdp")
        log.warning("AT+QSSLOPEN: no PDP context is active (AT+CGACT=1,<cid> first): %d", code)
        return refused(code)
    # 0XFFFF = the ML302 suites this TLS build can offer, rather than failing the open.
    offerable = tuple(int(x, 16) for x in modem.profile["ssl.cipher_suites"] if suite_offerable(int(x, 16)))
    sock = svc.open(ssid, pdp_id=active[0].cid, ctx_id=ctx_id, host=host, port=port, delivery=delivery,
                    read_material=read_slot_material(modem), timeout=float(timeout), allow_ciphers=offerable)
    if online:
        return online_answer(svc, sock, refused)
    return ok()


# -- AT+QSSLSEND ----------------------------------------------------------------------
@command("+QSSLSEND", WRITE, variant=V, test=lambda modem: f"+QSSLSEND: {_socket_range(modem)}")
def qsslsend_write(modem, cmd):
    svc, _, ssid = socket_args(modem, cmd, 1, quectel=False)
    if svc.connected(ssid) is None:
        raise fail(svc, None, f"ssid {ssid} is not connected")
    return send_request(modem, svc, ssid, None, cancelled=ok())


# -- AT+QSSLRECV ----------------------------------------------------------------------
def _address(modem, sock: SslSocket) -> str:
    """<ipaddr>: what the modem's DNS answered for the host dialled (never the route)."""
    return modem.network.display_address(sock.host) if sock.remote else ""


@command("+QSSLRECV", WRITE, variant=V,
         test=lambda modem: f"+QSSLRECV: (0,1),{_socket_range(modem)},(1,{modem.profile['ssl.recv_max']})")
def qsslrecv_write(modem, cmd):
    svc, args, ssid = socket_args(modem, cmd, 3, index=1, quectel=False)
    args.int(0, 0, 1)                        # <cid>: reserved
    length = args.int(2, 1, modem.profile["ssl.recv_max"])
    sock = svc.sockets.get(ssid)
    if sock is None or sock.state in (INITIAL, OPENING):
        raise fail(svc, None, f"ssid {ssid} is not connected")
    if not sock.delivery.host_reads:        # transparent, left with "+++": its bytes wait for ATO
        raise fail(svc, None, f"ssid {ssid} is in {sock.delivery.name} mode: its data "
                              f"are not read with AT+QSSLRECV (ATO returns to them)")
    data = sock.read(length)
    if not data:
        return ok()
    return ok(f"+QSSLRECV: {_address(modem, sock)}:{sock.port},TCP,{len(data)}", Raw(data))


# -- AT+QSSLCLOSE ---------------------------------------------------------------------
@command("+QSSLCLOSE", WRITE, variant=V, test=lambda modem: f"+QSSLCLOSE: {_socket_range(modem)}[,(0,1)]")
def qsslclose_write(modem, cmd):
    svc, args, ssid = socket_args(modem, cmd, 2, quectel=False)
    args.int(1, 0, 1, default=0)             # <closetype>: reserved
    done = Response([], "OK", after=[f"{ssid},CLOSE OK"])
    if ssid not in svc.sockets:
        svc.drop_news(ssid)                        # (a failed open's answer still waiting)
        return done

    closing = svc.close(ssid, CLOSE_TIMEOUT)            # the socket is gone from now on

    async def close() -> Response:
        await closing
        return done
    return Response([], None, pending=close())


# -- AT+QSSLSTATE ---------------------------------------------------------------------
def _ip_state(modem, svc: SslService) -> str:
    """<state> of the first +QSSLSTATE line (the manual's list comes from Quectel's older
    TCP/IP stack). AT+CGACT is synchronous here, so the steps of an activation ("IP START",
    "IP CONFIG", "IP IND", "IP GPRSACT") are never seen."""
    if not modem.pdp.active():
        # Sockets left without a bearer are those AT+CGACT=0 (or AT+CFUN) cut: the
        # connection scene ended abnormally until the host closes them.
        return "PDP DEACT" if svc.sockets else "IP INITIAL"
    return "IP PROCESSING" if svc.sockets else "IP STATUS"   # data phase / local IP only


@command("+QSSLSTATE", EXEC, variant=V, test=[])
def qsslstate_exec(modem, cmd):
    svc = service(modem)
    lines = [f'+QSSLSTATE: "{_ip_state(modem, svc)}"']
    for ssid in range(svc.max_sockets):
        sock = svc.sockets.get(ssid)
        status = STATUS.get(sock.state, "INITIAL") if sock else "CLOSED"
        sock = sock or svc.dialled.get(ssid)
        if sock is None:
            lines.append(f'+QSSLSTATE: {ssid},"TCP","",0,"INITIAL",1')
        else:
            lines.append(f'+QSSLSTATE: {ssid},"TCP","{_address(modem, sock)}",{sock.port},"{status}",1')
    return ok(*lines)


def _read_form_is_ok(modem, cmd):
    """The manual prints a bare OK for every read form ("AT+QSSLSEND?")."""
    return ok()


for _name in ("+QSSLOPEN", "+QSSLSEND", "+QSSLRECV", "+QSSLCLOSE", "+QSSLSTATE"):
    command(_name, READ, variant=V)(_read_form_is_ok)
