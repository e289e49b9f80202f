"""EC2x SSL commands (SSL Application Note §2.2): AT+QSSLCFG, AT+QSSLOPEN,
AT+QSSLSEND, AT+QSSLRECV, AT+QSSLCLOSE, AT+QSSLSTATE, AT+QIGETERROR.

SSL commands answer a plain ERROR and leave the reason for AT+QIGETERROR
(§5), as the module does; the log says what was wrong.
"""
from __future__ import annotations


from emulator.at.args import Args
from emulator.at.parser import EXEC, READ, TEST, WRITE
from emulator.logsafe import get_logger
from emulator.at.registry import command
from emulator.at.responses import CommandError, DataRequest, Raw, Response, Text, ok
from emulator.sockets.context import OPTIONS, format_cipher_list, parse_cipher_list
from emulator.sockets.service import ERROR_TEXT, SslService
from emulator.sockets.ssl_socket import INITIAL, OPENING
from emulator.storage.vfs import FileError

log = get_logger("emulator.ssl")
V = "ec2x"


def _new_service(modem) -> SslService:
    svc = SslService(modem)

    def reboot() -> None:
        # The note: AT+QSSLCFG "takes effect immediately. The configurations will not be
        # saved." (AT+CFUN=1,1; the sockets are dropped by the service's own "reset" hook.)
        for ctx in svc.contexts.values():
            ctx.reset()
        svc.cache.clear()
        svc.set_error(0)
    modem.on("reset", reboot)
    return svc


def service(modem) -> SslService:
    return modem.feature("ssl", _new_service)


class _SslArgs(Args):
    """Bad parameters of an SSL command: ERROR, with 552 for AT+QIGETERROR."""

    def __init__(self, modem, cmd) -> None:
        super().__init__(cmd)
        self.svc = service(modem)

    def fail(self, why: str) -> CommandError:
        self.svc.set_error(552)
        return super().fail(why)


def _fail(svc: SslService, code: int, why: str) -> CommandError:
    svc.set_error(code)
    return CommandError("ERROR", why)


def _done(svc: SslService, response: Response) -> Response:
    svc.set_error(0)
    return response


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


@command("+QSSLCFG", TEST, variant=V)
def qsslcfg_test(modem, cmd):
    svc = service(modem)
    ctxs = f"(0-{len(svc.contexts) - 1})"
    suites = ",".join(modem.profile["ssl.cipher_suites"]) + ",0XFFFF"
    placeholders = {"cacert": "<cacertpath>", "cacertex": "<cacertpath>",
                    "clientcert": "<client_cert_path>", "clientkey": "<client_key_path>",
                    "psk": "<identity>,<key>", "alpn": "<alpn_name>", "ciphersuite": f"({suites})"}
    lines = [f'+QSSLCFG: "{name}",{ctxs},{placeholders.get(name) or opt.test_range()}'
             for name, opt in OPTIONS.items()]
    return _done(svc, ok(*lines))


@command("+QSSLCFG", WRITE, variant=V)
def qsslcfg_write(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    name = args.str(0, max_len=32).lower()
    name = ALIASES.get(name, name)
    if name not in OPTIONS:
        raise _fail(svc, 552, f"unknown option {name!r}")
    last_ctx = len(svc.contexts) - 1
    if name == "cacertex" and len(args) == 1:           # query every context at once
        return _done(svc, ok(*(f'+QSSLCFG: "cacertex",{i},"{c["cacertex"]}"' for i, c in svc.contexts.items())))
    ctx = svc.contexts[args.int(1, 0, last_ctx)]
    if len(args) == 2:
        return _done(svc, ok(f'+QSSLCFG: "{name}",{ctx.ctx_id},{_format_value(name, ctx[name])}'))
    opt = OPTIONS[name]
    if opt.kind == "int":
        args.at_most(3)
        value = args.int(2, opt.lo, opt.hi)
    elif opt.kind == "ciphers":
        args.at_most(3)
        value = parse_cipher_list(args.str(2, max_len=600))
        if value is None:
            raise args.fail("cipher suites must be hex ids like 0X0035, several joined by ':'")
        if 0xFFFF in value and len(value) > 1:
            raise args.fail("0XFFFF cannot be combined with other suites")
    elif opt.kind == "path":
        args.at_most(3)
        value = args.str(2, max_len=modem.profile["files.max_name_len"] + 4)
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
    return _done(svc, ok())


# -- AT+QSSLOPEN --------------------------------------------------------------------
@command("+QSSLOPEN", TEST, variant=V)
def qsslopen_test(modem, cmd):
    svc = service(modem)
    return _done(svc, ok(f"+QSSLOPEN: ({modem.pdp.first}-{modem.pdp.last}),(0-{len(svc.contexts) - 1}),"
                         f"(0-{svc.max_sockets - 1}),<serveraddr>,<server_port>,(0-2)"))


def read_file_material(modem):
    def read(path: str) -> bytes | None:
        try:
            return modem.files.read(path)
        except FileError:
            return None
    return read


@command("+QSSLOPEN", WRITE, variant=V)
def qsslopen_write(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    args.at_most(6)
    pdp_id = args.int(0, modem.pdp.first, modem.pdp.last)
    ctx_id = args.int(1, 0, len(svc.contexts) - 1)
    client_id = args.int(2, 0, svc.max_sockets - 1)
    host = args.str(3, max_len=150).strip()
    port = args.int(4, 1, 65535)
    mode = args.int(5, 0, 2, default=0)
    if not host:
        raise args.fail("empty server address")
    if mode == 2:
        log.warning("AT+QSSLOPEN access mode 2 (transparent) is not implemented yet: ERROR")
        raise _fail(svc, 555, "transparent access mode not implemented yet")
    if not modem.pdp.is_active(pdp_id):
        raise _fail(svc, 561, f"PDP context {pdp_id} is not active (AT+QIACT={pdp_id} first)")
    if client_id in svc.sockets:
        raise _fail(svc, 563, f"clientID {client_id} is in use")
    svc.open(client_id, pdp_id=pdp_id, ctx_id=ctx_id, host=host, port=port, access_mode=mode,
             read_material=read_file_material(modem))
    return _done(svc, ok())


# -- AT+QSSLSEND ----------------------------------------------------------------------
@command("+QSSLSEND", TEST, variant=V)
def qsslsend_test(modem, cmd):
    svc = service(modem)
    return _done(svc, ok(f"+QSSLSEND: (0-{svc.max_sockets - 1}),(1-{modem.profile['ssl.send_max']})"))


@command("+QSSLSEND", WRITE, variant=V)
def qsslsend_write(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    args.at_most(2)
    client_id = args.int(0, 0, svc.max_sockets - 1)
    if len(args) == 2 and not args.present(1):
        raise args.fail("empty <sendlen>")          # "AT+QSSLSEND=4," is not variable length
    length = args.int(1, 1, modem.profile["ssl.send_max"], default=None)
    if svc.connected(client_id) is None:
        raise _fail(svc, 567 if client_id in svc.sockets else 572, f"socket {client_id} is not connected")
    return send_request(modem, svc, client_id, length)


def send_request(modem, svc: SslService, client_id: int, length: int | None,
                 cancelled: Response | None = None) -> Response:
    """The data phase of AT+QSSLSEND, shared by EC2x and ML302: "> ", the data
    (length bytes, or up to Ctrl+Z where ESC cancels), then SEND OK / SEND FAIL.
    cancelled: the answer to ESC (None = ERROR, the EC2x choice)."""
    send_max = modem.profile["ssl.send_max"]

    def finish(data: bytes, reason: str) -> Response:
        sock = svc.connected(client_id)
        if reason == "cancel":
            if cancelled is not None:
                log.info("SSL socket %d: send cancelled with ESC", client_id)
                return cancelled
            raise _fail(svc, 571, "send cancelled with ESC")
        if reason == "overflow":
            raise _fail(svc, 552, f"more than {send_max} bytes before Ctrl+Z")
        if reason == "timeout":
            raise _fail(svc, 569, "data not complete in time")
        if sock is None:
            raise _fail(svc, 567, f"socket {client_id} closed while data was entered")
        if not data:
            raise _fail(svc, 552, "nothing to send")
        if sock.send_backlog() + len(data) > modem.profile["ssl.send_buffer"]:
            log.info("SSL socket %d: send buffer full, SEND FAIL", client_id)
            svc.set_error(0)
            return Response([], Text("SEND FAIL"))
        sock.send(data)
        svc.set_error(0)
        return Response([], Text("SEND OK"))

    prompt = b"\r\n> " if modem.settings.verbose else b"> "
    return Response([], None, data=DataRequest(finish, prompt=prompt, length=length, max_length=send_max,
                                               escape_cancels=length is None))


# -- AT+QSSLRECV ----------------------------------------------------------------------
@command("+QSSLRECV", TEST, variant=V)
def qsslrecv_test(modem, cmd):
    svc = service(modem)
    return _done(svc, ok(f"+QSSLRECV: (0-{svc.max_sockets - 1}),(1-{modem.profile['ssl.recv_max']})"))


@command("+QSSLRECV", WRITE, variant=V)
def qsslrecv_write(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    args.at_most(2)
    client_id = args.int(0, 0, svc.max_sockets - 1)
    length = args.int(1, 1, modem.profile["ssl.recv_max"])
    sock = svc.sockets.get(client_id)
    if sock is None or sock.state in (INITIAL, OPENING):
        raise _fail(svc, 572, f"socket {client_id} is not connected")
    if sock.access_mode == 1:
        raise _fail(svc, 572, f"socket {client_id} is in direct push mode: its data come with "
                              f'+QSSLURC: "recv",{client_id},<len>, there is nothing to read')
    data = sock.read(length)
    if not data:
        return _done(svc, ok("+QSSLRECV: 0"))
    return _done(svc, ok(f"+QSSLRECV: {len(data)}", Raw(data)))


# -- AT+QSSLCLOSE ---------------------------------------------------------------------
@command("+QSSLCLOSE", TEST, variant=V)
def qsslclose_test(modem, cmd):
    svc = service(modem)
    return _done(svc, ok(f"+QSSLCLOSE: (0-{svc.max_sockets - 1}),(0-65535)"))


@command("+QSSLCLOSE", WRITE, variant=V)
def qsslclose_write(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    args.at_most(2)
    client_id = args.int(0, 0, svc.max_sockets - 1)
    timeout = args.int(1, 0, 65535, default=10)
    sock = svc.sockets.get(client_id)
    if sock is None:
        return _done(svc, ok())
    # <close_timeout> is in seconds, or in ms with AT+QSSLCFG="closetimemode",<ctx>,1 (§2.2.5).
    unit = 0.001 if svc.contexts[sock.ctx_id]["closetimemode"] == 1 else 1.0

    async def close() -> Response:
        await svc.close(client_id, timeout * unit)
        return _done(svc, ok())
    return Response([], None, pending=close())


# -- AT+QSSLSTATE ---------------------------------------------------------------------
def _state_line(modem, sock) -> str:
    at_port = modem.profile.get("ssl.at_port", "usbmodem")
    # <serverID> is "reserved"; the note's example shows the clientID there.
    return (f'+QSSLSTATE: {sock.client_id},"SSLClient","{sock.host}",{sock.port},{sock.local_port},'
            f'{sock.state},{sock.pdp_id},{sock.client_id},{sock.access_mode},"{at_port}",{sock.ctx_id}')


@command("+QSSLSTATE", EXEC, variant=V)
def qsslstate_all(modem, cmd):
    svc = service(modem)
    return _done(svc, ok(*(_state_line(modem, s) for _, s in sorted(svc.sockets.items()))))


@command("+QSSLSTATE", WRITE, variant=V)
def qsslstate_one(modem, cmd):
    svc = service(modem)
    args = _SslArgs(modem, cmd)
    args.at_most(1)
    sock = svc.sockets.get(args.int(0, 0, svc.max_sockets - 1))
    return _done(svc, ok(_state_line(modem, sock)) if sock else ok())


@command("+QSSLSTATE", TEST, variant=V)
def qsslstate_test(modem, cmd):
    return _done(service(modem), ok())


# -- AT+QIGETERROR --------------------------------------------------------------------
@command("+QIGETERROR", EXEC)
def qigeterror(modem, cmd):
    code = service(modem).last_error
    return ok(f"+QIGETERROR: {code},{ERROR_TEXT.get(code, 'unknown error')}")


# -- forms a command does not have ------------------------------------------------------
def _no_such_form(modem, cmd):
    """"AT+QSSLSEND?" and the like: ERROR, and AT+QIGETERROR says 552 (invalid parameter),
    as for any other SSL command the module could not parse."""
    raise _fail(service(modem), 552, f"AT{cmd.raw}: {cmd.kind} form not supported")


for _name, _kinds in (("+QSSLCFG", (READ, EXEC)), ("+QSSLOPEN", (READ, EXEC)), ("+QSSLSEND", (READ, EXEC)),
                      ("+QSSLRECV", (READ, EXEC)), ("+QSSLCLOSE", (READ, EXEC)), ("+QSSLSTATE", (READ,))):
    command(_name, *_kinds, variant=V)(_no_such_form)
