"""Quectel SSL commands ("quectel" variant; EC2x SSL Application Note §2.2):
AT+QSSLCFG, AT+QSSLOPEN, AT+QSSLSEND, AT+QSSLRECV, AT+QSSLCLOSE, AT+QSSLSTATE
(AT+QIGETERROR and the AT+QSSLSEND data phase: ssl_common.py; AT+QISWTMD, a TCP/IP
command that switches SSL sockets too: tcpip.py).

SSL commands answer a plain ERROR and leave the reason for AT+QIGETERROR
(§5), as the module does; the log says what was wrong.  The AT+QSSLCFG options
a module has are the profile's ssl.options (a BG95-style module lists fewer).
"""
from __future__ import annotations

from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Raw, Response, ok
from emulator.commands.ssl_common import (SslArgs, close_nothing_open, done, fail, id_range, no_such_form,
                                          online_answer, quectel_test, send_request, server_address, service,
                                          socket_args)
from emulator.sockets.context import OPTIONS, MaterialUnreadable, format_cipher_list, parse_cipher_list
from emulator.sockets.ssl_socket import CLOSE_TIMEOUT_DEFAULT, INITIAL, OPENING
from emulator.sockets.tcpip import ids_in_use
from emulator.storage.vfs import ERR_NOT_FOUND, FileError
from tls_engine.ciphers import ALL_SUITES_CODE

V = "quectel"


def _socket_range(modem) -> str:
    return id_range(service(modem))


# -- AT+QSSLCFG ------------------------------------------------------------------
# The note prints the cacertex write syntax once as "clientcertex" (in the cacertex row,
# described as the trusted CA path, answering +QSSLCFG: "cacertex"): the same option.
ALIASES = {"clientcertex": "cacertex"}


def _format_value(name: str, value) -> str:
    kind = OPTIONS[name].kind
    if kind in ("path", "alpn"):
        return f'"{value}"'
    if kind == "ciphers":
        return format_cipher_list(value)
    if kind == "psk":
        return f'"{value[0]}","{value[1]}"'
    return str(value)


def _qsslcfg_test(modem) -> list[str]:
    """One line per option of the profile's ssl.options, in its order."""
    svc = service(modem)
    ctxs = f"(0-{len(svc.contexts) - 1})"
    suites = ",".join(modem.profile["ssl.cipher_suites"] + [format_cipher_list((ALL_SUITES_CODE,))])
    placeholders = {"cacert": "<cacertpath>", "cacertex": "<cacertpath>",
                    "clientcert": "<client_cert_path>", "clientkey": "<client_key_path>",
                    "psk": "<identity>,<key>", "alpn": "<alpn_name>", "ciphersuite": f"({suites})"}
    return [f'+QSSLCFG: "{name}",{ctxs},{placeholders.get(name) or OPTIONS[name].test_range()}'
            for name in svc.options]


@command("+QSSLCFG", WRITE, variant=V, test=quectel_test(_qsslcfg_test))
def qsslcfg_write(modem, cmd):
    svc = service(modem)
    args = SslArgs(modem, cmd)
    name = args.str(0, max_len=32).lower()
    name = ALIASES.get(name, name)
    if name not in svc.options:
        raise fail(svc, 552, f"unknown option {name!r}" if name not in OPTIONS
                   else f"option {name!r} is not in this module's ssl.options")
    last_ctx = len(svc.contexts) - 1
    if name == "cacertex" and len(args) == 1:           # query every context at once
        return done(svc, ok(*(f'+QSSLCFG: "cacertex",{i},"{c["cacertex"]}"' for i, c in svc.contexts.items())))
    ctx = svc.contexts[args.int(1, 0, last_ctx)]
    if len(args) == 2 or (len(args) == 3 and not args.present(2)):   # "<opt>",<ctx>, : omitted
        return done(svc, ok(f'+QSSLCFG: "{name}",{ctx.ctx_id},{_format_value(name, ctx[name])}'))
    opt = OPTIONS[name]
    if opt.kind == "int":
        args.at_most(3)
        value = args.int(2, opt.lo, opt.hi)
    elif opt.kind == "ciphers":
        args.at_most(3)
        value = parse_cipher_list(args.str(2, max_len=600))
        if value is None:
            raise args.fail("cipher suites must be hex ids like 0X0035, several joined by ':'")
        if ALL_SUITES_CODE in value and len(value) > 1:
            raise args.fail("0XFFFF cannot be combined with other suites")
    elif opt.kind == "path":
        # "clientkey",<ctx>,<path>[,<key_pwd>]: a real EG25-G's form (its test form), on a
        # profile with ssl.clientkey_password; a write without it sets no password.
        with_password = name == "clientkey" and modem.profile.get("ssl.clientkey_password", False)
        args.at_most(4 if with_password else 3)
        value = args.str(2, max_len=modem.profile["files.max_name_len"] + 4)
        if with_password:
            ctx.key_password = args.str(3, max_len=255) if len(args) > 3 and args.present(3) else ""
    elif opt.kind == "alpn":
        args.at_most(3)
        value = args.str(2, max_len=255)
        # Names are the host's bytes, passed on unchanged (non-ASCII included); only a NUL
        # cannot be carried (Mbed TLS takes C strings and would cut the name there).
        if "\0" in value:
            raise args.fail("an ALPN name cannot contain a NUL byte")
    else:                                                   # psk: identity, key
        args.at_most(4)
        value = (args.str(2, max_len=255), args.str(3, max_len=255))
    ctx[name] = value
    # A resumed session skips certificate checks: changing a context forgets its sessions.
    svc.cache.discard_matching(lambda key: key[0] == ctx.ctx_id)
    return done(svc, ok())


# -- AT+QSSLOPEN --------------------------------------------------------------------
def read_file_material(modem):
    def read(path: str) -> bytes | None:
        try:
            return modem.files.read(path)
        except FileError as exc:
            if exc.code != ERR_NOT_FOUND:   # there, but unreadable: the open's failure says why
                raise MaterialUnreadable(exc.detail or str(exc)) from None
            return None
    return read


@command("+QSSLOPEN", WRITE, variant=V, test=quectel_test(lambda modem: (
    f"+QSSLOPEN: ({modem.pdp.first}-{modem.pdp.last}),(0-{len(service(modem).contexts) - 1}),"
    f"{_socket_range(modem)},<serveraddr>,<server_port>,(0-2)")))
def qsslopen_write(modem, cmd):
    svc = service(modem)
    args = SslArgs(modem, cmd, at_most=6)
    pdp_id = args.int(0, modem.pdp.first, modem.pdp.last)
    ctx_id = args.int(1, 0, len(svc.contexts) - 1)
    client_id = args.int(2, 0, svc.max_sockets - 1)
    host = server_address(args, 3)
    port = args.int(4, 1, 65535)
    delivery = svc.delivery(args.int(5, 0, 2, default=0))     # <access_mode>: 0 buffer, 1 push, 2 online
    if not modem.pdp.is_active(pdp_id):
        raise fail(svc, 561, f"PDP context {pdp_id} is not active (AT+QIACT={pdp_id} first)")
    if client_id in ids_in_use(modem):          # one pool with the AT+QIOPEN connectIDs
        raise fail(svc, 563, f"clientID {client_id} is in use")
    sock = svc.open(client_id, pdp_id=pdp_id, ctx_id=ctx_id, host=host, port=port, delivery=delivery,
                    read_material=read_file_material(modem))
    if delivery.name == "online":
        # §3.5: no OK; CONNECT once the handshake is done, else ERROR (AT+QIGETERROR says why).
        return online_answer(svc, sock, lambda code: Response([], "ERROR"))
    return done(svc, ok())


# -- AT+QSSLSEND ----------------------------------------------------------------------
@command("+QSSLSEND", WRITE, variant=V, test=quectel_test(
    lambda modem: f"+QSSLSEND: {_socket_range(modem)},(1-{modem.profile['ssl.send_max']})"))
def qsslsend_write(modem, cmd):
    svc, args, client_id = socket_args(modem, cmd, 2)
    if len(args) == 2 and not args.present(1):
        raise args.fail("empty <sendlen>")          # "AT+QSSLSEND=4," is not variable length
    length = args.int(1, 1, modem.profile["ssl.send_max"], default=None)
    if svc.connected(client_id) is None:
        sock = svc.sockets.get(client_id)
        if sock is not None and sock.state is not OPENING:       # closed by the peer (state 4)
            raise fail(svc, 567, f"socket {client_id} has been closed by the peer")
        raise fail(svc, 572, f"socket {client_id} is not connected")    # none, or still opening
    return send_request(modem, svc, client_id, length)


# -- AT+QSSLRECV ----------------------------------------------------------------------
@command("+QSSLRECV", WRITE, variant=V, test=quectel_test(
    lambda modem: f"+QSSLRECV: {_socket_range(modem)},(1-{modem.profile['ssl.recv_max']})"))
def qsslrecv_write(modem, cmd):
    svc, args, client_id = socket_args(modem, cmd, 2)
    length = args.int(1, 1, modem.profile["ssl.recv_max"])
    sock = svc.sockets.get(client_id)
    if sock is None or sock.state in (INITIAL, OPENING):
        raise fail(svc, 572, f"socket {client_id} is not connected")
    if not sock.delivery.host_reads:
        raise fail(svc, 572, f"socket {client_id} is in {sock.delivery.name} access mode: its data "
                             f"are not read with AT+QSSLRECV, there is nothing to read")
    data = sock.read(length)
    if not data:
        return done(svc, ok("+QSSLRECV: 0"))
    return done(svc, ok(f"+QSSLRECV: {len(data)}", Raw(data)))


# -- AT+QSSLCLOSE ---------------------------------------------------------------------
@command("+QSSLCLOSE", WRITE, variant=V, test=quectel_test(
    lambda modem: f"+QSSLCLOSE: {_socket_range(modem)},(0-65535)"))
def qsslclose_write(modem, cmd):
    svc, args, client_id = socket_args(modem, cmd, 2)
    timeout = args.int(1, 0, 65535, default=CLOSE_TIMEOUT_DEFAULT)
    sock = svc.sockets.get(client_id)
    if sock is None:
        return close_nothing_open(modem, svc, client_id, "AT+QICLOSE")
    # <close_timeout> is in seconds, or in ms with AT+QSSLCFG="closetimemode",<ctx>,1 (§2.2.5).
    unit = 0.001 if svc.contexts[sock.ctx_id]["closetimemode"] == 1 else 1.0

    closing = svc.close(client_id, timeout * unit)     # the socket is gone from now on

    async def close() -> Response:
        await closing
        return done(svc, ok())
    return Response([], None, pending=close())


# -- AT+QSSLSTATE ---------------------------------------------------------------------
def _state_line(modem, sock) -> str:
    at_port = service(modem).at_port
    # <serverID> is "reserved"; the note's example shows the clientID there.
    return (f'+QSSLSTATE: {sock.client_id},"SSLClient","{sock.host}",{sock.port},{sock.local_port},'
            f'{int(sock.state)},{sock.pdp_id},{sock.client_id},{sock.delivery.access_mode},"{at_port}",'
            f'{sock.ctx_id}')


@command("+QSSLSTATE", EXEC, variant=V, test=quectel_test(lambda modem: []))
def qsslstate_all(modem, cmd):
    svc = service(modem)
    return done(svc, ok(*(_state_line(modem, s) for _, s in sorted(svc.sockets.items()))))


@command("+QSSLSTATE", WRITE, variant=V)
def qsslstate_one(modem, cmd):
    svc, _, client_id = socket_args(modem, cmd, 1)
    sock = svc.sockets.get(client_id)
    return done(svc, ok(_state_line(modem, sock)) if sock else ok())


# -- forms a command does not have ------------------------------------------------------
for _name, _kinds in (("+QSSLCFG", (READ, EXEC)), ("+QSSLOPEN", (READ, EXEC)), ("+QSSLSEND", (READ, EXEC)),
                      ("+QSSLRECV", (READ, EXEC)), ("+QSSLCLOSE", (READ, EXEC)), ("+QSSLSTATE", (READ,))):
    command(_name, *_kinds, variant=V)(no_such_form)
