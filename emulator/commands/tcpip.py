"""Quectel TCP(IP) AT commands (EC2x TCP(IP) AT Commands Manual / Application Note):
AT+QIOPEN, AT+QICLOSE, AT+QISTATE, AT+QISEND, AT+QISENDEX, AT+QIRD, AT+QISDE, AT+QICFG
(emulator/sockets/qicfg.py) and AT+QISWTMD (which switches SSL sockets too: the ids are
one pool).

The sockets are emulator/sockets/tcpip.py's (the SSL socket machine over a plain
session).  Like the SSL commands they answer a plain ERROR and leave the reason for
AT+QIGETERROR (one store with the SSL commands); an open that fails after its OK
reports +QIOPEN: <connectID>,<err>.
"""
from __future__ import annotations

import binascii

from emulator.at.parser import EXEC, READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Raw, Response, ok
from emulator.commands.ssl_common import (SslArgs, close_nothing_open, done, fail, id_range, no_such_form,
                                          online_answer, quectel_test, send_now, send_request, server_address,
                                          service)
from emulator.io.network import udp_destination
from emulator.logsafe import get_logger
from emulator.sockets.qicfg import BY_NAME as QICFG_OPTIONS
from emulator.sockets.ssl_socket import CLOSE_TIMEOUT_DEFAULT, CLOSING, CONNECTED
from emulator.sockets.tcpip import SERVICE_TYPES, has_tcpip, ids_in_use, tcpip_service

log = get_logger("emulator.tcpip")


def _ids(modem) -> str:
    return id_range(tcpip_service(modem))


# -- AT+QIOPEN -----------------------------------------------------------------------
@command("+QIOPEN", WRITE, test=quectel_test(lambda modem: (
    f'+QIOPEN: ({modem.pdp.first}-{modem.pdp.last}),{_ids(modem)},"TCP/UDP/TCP LISTENER/UDP SERVICE",'
    f'"<IP_address>/<domain_name>",<remote_port>,<local_port>,(0-2)')))
def qiopen_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=7)
    pdp_id = args.int(0, modem.pdp.first, modem.pdp.last)
    connect_id = args.int(1, 0, svc.max_sockets - 1)
    service_type = args.str(2, max_len=16)
    if service_type not in SERVICE_TYPES:
        raise args.fail(f"unknown <service_type> {service_type!r}")
    host = server_address(args, 3)
    port = args.int(4, 0, 65535)
    local_port = args.int(5, 0, 65535, default=0)
    access_mode = args.int(6, 0, 2, default=0)
    server = service_type in ("TCP LISTENER", "UDP SERVICE")
    if not server and port == 0:
        raise args.fail("<remote_port> 0")
    if server and local_port == 0:
        raise args.fail(f"a {service_type} needs a <local_port>")
    if server and access_mode == 2:
        raise args.fail(f"a {service_type} has no transparent access mode")
    delivery = svc.delivery(access_mode)
    online = delivery.name == "online"

    def refuse(code: int, why: str) -> Response:
        # After a good command line the module says OK and reports the failure as
        # +QIOPEN: <id>,<err> (drivers match "\r\nOK\r\n\r\n+QIOPEN: 0,563\r\n");
        # in transparent mode the answer is ERROR.
        if online:
            raise fail(svc, code, why)
        svc.set_error(code)
        log.info("AT+QIOPEN of connectID %d refused (%d): %s", connect_id, code, why)
        # (news of the id, as an open's later answer is: an AT+QICLOSE of the id while the
        # port is busy drops it, or it would read as the answer of the next open on the id)
        modem.urc(svc.dialect.opened_urc.format(id=connect_id, code=code), about=svc.news(connect_id))
        return ok()

    if connect_id in ids_in_use(modem):
        return refuse(563, f"connectID {connect_id} is in use")
    if not modem.pdp.is_active(pdp_id):
        return refuse(561, f"PDP context {pdp_id} is not active (AT+QIACT={pdp_id} first)")
    if server and svc.port_taken(service_type, local_port):
        # (the module's own port: a --listen mapping to any free port binds again in the OS)
        return refuse(556, f"a {service_type} already has local port {local_port}")
    if service_type == "TCP LISTENER":
        svc.listen(connect_id, pdp_id=pdp_id, local_port=local_port, delivery=delivery)
        return done(svc, ok())
    sock = svc.open(connect_id, pdp_id=pdp_id, service_type=service_type, host=host, port=port,
                    local_port=local_port, delivery=delivery)
    if online:
        return online_answer(svc, sock, lambda code: Response([], "ERROR"))
    return done(svc, ok())


# -- AT+QICLOSE ----------------------------------------------------------------------
@command("+QICLOSE", WRITE, test=quectel_test(lambda modem: f"+QICLOSE: {_ids(modem)},(0-65535)"))
def qiclose_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=2)
    connect_id = args.int(0, 0, svc.max_sockets - 1)
    timeout = args.int(1, 0, 65535, default=CLOSE_TIMEOUT_DEFAULT)
    if svc.entry(connect_id) is None:
        return close_nothing_open(modem, svc, connect_id, "AT+QSSLCLOSE")

    closing = svc.close(connect_id, float(timeout))     # the socket is gone from now on

    async def close() -> Response:
        await closing
        return done(svc, ok())
    return Response([], None, pending=close())


# -- AT+QISTATE ----------------------------------------------------------------------
def _ip(modem, entry) -> str:
    if entry.service_type in ("TCP LISTENER", "UDP SERVICE"):
        return "127.0.0.1"
    if entry.service_type == "TCP INCOMING":
        return entry.host
    return modem.network.display_address(entry.host)


def _state_line(modem, entry) -> str:
    svc = tcpip_service(modem)
    # A listener and a UDP SERVICE have no remote end: "127.0.0.1",0 (the <remote_port> a UDP
    # SERVICE's AT+QIOPEN carries is not shown).
    port = 0 if entry.service_type in ("TCP LISTENER", "UDP SERVICE") else entry.port
    # <local_port> 0 is "assigned automatically" (the TCP(IP) notes): once connected, the
    # port the stack chose is shown (a real EC25: ...,1234,8412,2,...), as AT+QSSLSTATE does.
    local = entry.shown_local_port or getattr(entry, "local_port", 0)
    return (f'+QISTATE: {entry.client_id},"{entry.service_type}","{_ip(modem, entry)}",{port},'
            f'{local},{int(entry.state)},{entry.pdp_id},{entry.server_id},'
            f'{entry.delivery.access_mode},"{svc.at_port}"')


def _entries(svc) -> list:
    return [svc.entry(i) for i in sorted(set(svc.sockets) | set(svc.listeners))]


@command("+QISTATE", READ, EXEC)
def qistate_read(modem, cmd):
    """AT+QISTATE? or AT+QISTATE: every socket service (the TCP/IP note's Read/Execution form)."""
    svc = tcpip_service(modem)
    return done(svc, ok(*(_state_line(modem, e) for e in _entries(svc))))


@command("+QISTATE", WRITE, test=quectel_test(lambda modem: []))
def qistate_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=2)
    query_type = args.int(0, 0, 1)
    if query_type == 0:
        cid = args.int(1, modem.pdp.first, modem.pdp.last)
        return done(svc, ok(*(_state_line(modem, e) for e in _entries(svc) if e.pdp_id == cid)))
    entry = svc.entry(args.int(1, 0, svc.max_sockets - 1))
    return done(svc, ok(_state_line(modem, entry)) if entry is not None else ok())


# -- AT+QISEND / AT+QISENDEX -------------------------------------------------------------
def _sendable(svc, connect_id: int):
    """The connected socket data go to (ERROR with the reason otherwise)."""
    entry = svc.entry(connect_id)
    if entry is None:
        raise fail(svc, 572, f"connectID {connect_id} is not open")
    if entry.service_type == "TCP LISTENER":
        raise fail(svc, 572, f"connectID {connect_id} is a TCP LISTENER: nothing to send to")
    if entry.state is not CONNECTED:
        raise fail(svc, 567, f"connectID {connect_id} is not connected")
    return entry


@command("+QISEND", WRITE, test=quectel_test(
    lambda modem: f"+QISEND: {_ids(modem)},(0-{tcpip_service(modem).send_max})"))
def qisend_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=4)
    connect_id = args.int(0, 0, svc.max_sockets - 1)
    if len(args) >= 2 and not args.present(1):
        raise args.fail("empty <send_length>")
    length = args.int(1, 0, svc.send_max, default=None)
    if length == 0:                                   # the query of sent/acked/unacked bytes
        args.at_most(2)
        entry = svc.entry(connect_id)
        if entry is None or entry.service_type == "TCP LISTENER":
            raise fail(svc, 572, f"connectID {connect_id} is not open")
        # <ackedbytes>: acknowledged by the peer's TCP, as on the module (a peer that stops
        # reading leaves them unacked, in the kernel as much as in the modem's queue)
        acked = entry.acked() if entry.state in (CONNECTED, CLOSING) else entry.bytes_sent
        return done(svc, ok(f"+QISEND: {entry.bytes_sent},{acked},{entry.bytes_sent - acked}"))
    sock = _sendable(svc, connect_id)
    to = None
    if sock.service_type == "UDP SERVICE":
        if len(args) != 4 or length is None:
            raise args.fail('a UDP SERVICE sends with AT+QISEND=<id>,<len>,"<ip>",<port>')
        ip = args.str(2, max_len=64).strip()
        if not ip:
            raise args.fail("empty <remoteIP>")
        port = args.int(3, 1, 65535)
        router = modem.network

        def destination() -> tuple[str, int] | None:
            dest = udp_destination(router, ip, port)
            if dest is not None and dest != (ip, port):      # routed: its replies read as
                sock.peer_names[dest] = (router.display_address(ip), port)    # from ip:port
            elif dest is not None:                           # sent to as itself: its own name
                sock.peer_names.pop(dest, None)
            return dest
        to = destination
    elif len(args) > 2:
        raise args.fail("<remoteIP>,<remote_port> only for a UDP SERVICE")
    return send_request(modem, svc, connect_id, length, send_max=svc.send_max, send_buffer=svc.send_buffer,
                        echo=bool(svc.data_echo), to=to, hex_data=svc.qicfg.send_hex)


@command("+QISENDEX", WRITE, test=quectel_test(lambda modem: f"+QISENDEX: {_ids(modem)},<hex_string>"))
def qisendex_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=2)
    connect_id = args.int(0, 0, svc.max_sockets - 1)
    text = args.str(1, max_len=2 * svc.sendex_max)
    try:
        data = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise args.fail("<hex_string> is not an even number of hex digits") from None
    if not data:
        raise args.fail("empty <hex_string>")
    sock = _sendable(svc, connect_id)
    if sock.service_type == "UDP SERVICE":
        raise fail(svc, 572, "AT+QISENDEX cannot send on a UDP SERVICE (no destination)")
    return send_now(svc, sock, data, svc.send_buffer)


# -- AT+QIRD -------------------------------------------------------------------------
@command("+QIRD", WRITE, test=quectel_test(
    lambda modem: f"+QIRD: {_ids(modem)},(0-{tcpip_service(modem).recv_max})"))
def qird_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd, at_most=2)
    connect_id = args.int(0, 0, svc.max_sockets - 1)
    if len(args) == 2 and not args.present(1):
        raise args.fail("empty <read_length>")          # "AT+QIRD=1," (as AT+QISEND=1,)
    length = args.int(1, 0, svc.recv_max, default=svc.recv_max)
    sock = svc.sockets.get(connect_id)
    if sock is None or sock.state not in (CONNECTED, CLOSING):
        raise fail(svc, 572, f"connectID {connect_id} is not connected")
    if length == 0:
        unread = len(sock.inbox)
        return done(svc, ok(f"+QIRD: {sock.bytes_received},{sock.bytes_received - unread},{unread}"))
    if not sock.delivery.host_reads:
        raise fail(svc, 572, f"connectID {connect_id} is in {sock.delivery.name} access mode: "
                             f"its data are not read with AT+QIRD")
    data = sock.read(length)
    if not data:
        return done(svc, ok("+QIRD: 0"))
    if sock.service_type == "UDP SERVICE" and sock.last_from:
        head = f'+QIRD: {len(data)},"{sock.last_from[0]}",{sock.last_from[1]}'
    else:
        head = f"+QIRD: {len(data)}"
    qicfg = svc.qicfg
    if qicfg.recv_hex:                                  # AT+QICFG="dataformat",x,1
        data = data.hex().encode()
    if qicfg.one_line:                                  # AT+QICFG="viewmode",1
        return done(svc, ok(Raw(head.encode() + b"," + data)))
    return done(svc, ok(head, Raw(data)))


# -- AT+QICFG ------------------------------------------------------------------------
# Plain ERROR for anything refused (the BG95/EC200U notes: "If there is any error: ERROR"),
# AT+QIGETERROR 552 then, as after the other TCP/IP commands' bad parameters.
@command("+QICFG", WRITE, test=quectel_test(lambda modem: tcpip_service(modem).qicfg.test_lines()))
def qicfg_write(modem, cmd):
    svc = tcpip_service(modem)
    args = SslArgs(modem, cmd)
    name = args.str(0, max_len=32).lower()
    if name not in QICFG_OPTIONS:
        raise args.fail(f"no AT+QICFG option {name!r}")
    if len(args) == 1:
        return done(svc, ok(svc.qicfg.read_line(name)))
    values = [args.int(i, 0, 2**31 - 1) for i in range(1, len(args))]
    if not svc.qicfg.write(name, values):
        raise args.fail(f"AT+QICFG={name!r}: {values} refused")
    return done(svc, ok())


# -- AT+QISDE ------------------------------------------------------------------------
@command("+QISDE", WRITE, test=quectel_test(lambda modem: "+QISDE: (0,1)"))
def qisde_write(modem, cmd):
    svc = tcpip_service(modem)
    svc.data_echo = SslArgs(modem, cmd, at_most=1).int(0, 0, 1)
    return done(svc, ok())


@command("+QISDE", READ)
def qisde_read(modem, cmd):
    svc = tcpip_service(modem)
    return done(svc, ok(f"+QISDE: {svc.data_echo}"))


# -- AT+QISWTMD ----------------------------------------------------------------------
def _swtmd_ids(modem) -> str:
    return id_range(service(modem))


@command("+QISWTMD", WRITE, variant="quectel", test=quectel_test(lambda modem: f"+QISWTMD: {_swtmd_ids(modem)},(0-2)"))
def qiswtmd_write(modem, cmd):
    """Switch an open connection's access mode, SSL (AT+QSSLOPEN) or TCP/IP (AT+QIOPEN):
    0 buffer (a "recv" URC if data wait), 1 direct push (waiting data are pushed), OK;
    2 transparent: CONNECT, the waiting data first."""
    ssl = service(modem)
    args = SslArgs(modem, cmd, at_most=2)
    client_id = args.int(0, 0, ssl.max_sockets - 1)
    mode = args.int(1, 0, 2)
    svc, sock = ssl, ssl.sockets.get(client_id)
    if sock is None and has_tcpip(modem):
        svc = tcpip_service(modem)
        sock = svc.sockets.get(client_id)
    if sock is None or sock.state is not CONNECTED:
        raise fail(ssl, 572, f"socket {client_id} is not connected")
    delivery = svc.delivery(mode)
    if delivery.name == "online" and getattr(sock, "service_type", "") == "UDP SERVICE":
        raise fail(ssl, 572, "a UDP SERVICE has no transparent access mode")
    delivery.adopt(sock)
    if delivery.name == "online":
        ssl.set_error(0)
        return Response([], None, online=delivery.link(sock))
    return done(ssl, ok())


# -- forms a command does not have ------------------------------------------------------
for _name, _kinds in (("+QIOPEN", (READ, EXEC)), ("+QICLOSE", (READ, EXEC)),
                      ("+QISEND", (READ, EXEC)), ("+QISENDEX", (READ, EXEC)), ("+QIRD", (READ, EXEC)),
                      ("+QISDE", (EXEC,)), ("+QICFG", (READ, EXEC)), ("+QISWTMD", (READ, EXEC))):
    command(_name, *_kinds)(no_such_form)
