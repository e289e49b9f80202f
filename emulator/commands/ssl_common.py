"""What the SSL command dialects share: both families speak Quectel's AT+QSSL*
commands (the ML302 copied them), so the EC2x ("quectel", ssl_ec2x.py) and the
ML302 ("onemo", ssl_ml302.py) handlers -- and the EC2x's TCP/IP ones (tcpip.py) -- share:

* service(modem): the modem's SSL state (one factory, emulator/sockets/service.py);
* fail(): ERROR with the code AT+QIGETERROR reports; done(): success clearing it (EC2x);
* socket_args(): a socket command's first steps (service, parameters, socket id);
* quectel_test(): a declarative test form that also clears AT+QIGETERROR (EC2x);
* server_address() and online_answer(): AT+QSSLOPEN's address check and transparent answer;
* send_request() / send_now(): the data phase of a send, and a send whose data came inline;
* AT+QIGETERROR itself.
"""
from __future__ import annotations

import binascii

from typing import Callable

from emulator.at.args import Args
from emulator.at.parser import EXEC
from emulator.at.registry import command, refusing
from emulator.at.responses import CommandError, DataRequest, Prompt, Response, Text, ok
from emulator.logsafe import get_logger
from emulator.sockets.service import ERROR_TEXT, SslService, ssl_service
from emulator.sockets.tcpip import ids_in_use

log = get_logger("emulator.ssl")

service = ssl_service


def fail(svc: SslService, code: int | None, why: str) -> CommandError:
    """ERROR (why: the log line); code: what AT+QIGETERROR reports next (None: the
    family has no AT+QIGETERROR, the last error stays)."""
    if code is not None:
        svc.set_error(code)
    return CommandError("ERROR", why)


def id_range(svc) -> str:
    """A service's socket ids as a test form shows them: "(0-11)"."""
    return f"(0-{svc.max_sockets - 1})"


@refusing
def no_such_form(modem, cmd):
    """"AT+QSSLSEND?", "AT+QISEND" and the like (EC2x): ERROR, and AT+QIGETERROR says 552
    (invalid parameter), as for any other socket command the module could not parse."""
    raise fail(service(modem), 552, f"AT{cmd.raw}: {cmd.kind} form not supported")


def done(svc: SslService, response: Response) -> Response:
    svc.set_error(0)
    return response


def close_nothing_open(modem, svc: SslService, client_id: int, closer: str) -> Response:
    """AT+QSSLCLOSE / AT+QICLOSE of an id its own service has no socket on (the two share one
    id pool): ERROR 572 when the other service's socket holds it (`closer` closes that one);
    an id with nothing open closes as it is, OK -- its failed open's answer still waiting for a
    busy port dropped, or it would read as the answer of the next open on the id."""
    if client_id in ids_in_use(modem):
        raise fail(svc, 572, f"id {client_id} is another command set's socket ({closer} closes it)")
    svc.drop_news(client_id)
    return done(svc, ok())


class SslArgs(Args):
    """Bad parameters of an SSL command: ERROR, with 552 for AT+QIGETERROR."""

    def __init__(self, modem, cmd, at_most: int | None = None, svc: SslService | None = None) -> None:
        self.svc = service(modem) if svc is None else svc
        super().__init__(cmd, at_most=at_most)

    def fail(self, why: str) -> CommandError:
        self.svc.set_error(552)
        return super().fail(why)


def socket_args(modem, cmd, at_most: int, *, index: int = 0, quectel: bool = True) -> tuple[SslService, Args, int]:
    """The first steps of a command on one socket: the service, the parameters (at most
    `at_most`; quectel: a bad one sets AT+QIGETERROR to 552) and the socket id at `index`."""
    svc = service(modem)
    args = SslArgs(modem, cmd, svc=svc) if quectel else Args(cmd)
    args.at_most(at_most)
    return svc, args, args.int(index, 0, svc.max_sockets - 1)


def quectel_test(lines: Callable[..., str | list[str]]) -> Callable:
    """`@command(..., test=quectel_test(lambda modem: ...))`: the test form's line(s), and
    AT+QIGETERROR says 0 afterwards, as after any SSL command that succeeded."""
    def answer(modem) -> str | list[str]:
        service(modem).set_error(0)
        return lines(modem)
    return answer


def server_address(args: Args, index: int) -> str:
    """AT+QSSLOPEN's <serveraddr> (a name or an IP literal), never empty."""
    host = args.str(index, max_len=150).strip()
    if not host:
        raise args.fail("empty server address")
    return host


def online_answer(svc: SslService, sock, failed: Callable[[int], Response]) -> Response:
    """AT+QSSLOPEN in transparent access mode: no OK, the port waits for the handshake;
    then CONNECT and online data mode, or failed(code) (the dialect's failure answer)."""
    delivery = svc.deliveries["online"]
    future = delivery.wait_open(sock)

    async def answer() -> Response:
        code = await future
        if code != 0:
            return failed(code)
        return Response([], None, online=delivery.link(sock))
    return Response([], None, pending=answer())


def send_now(svc, sock, data: bytes, send_buffer: int, to: tuple[str, int] | None = None) -> Response:
    """Hand data to a connected socket: SEND OK, or SEND FAIL when its send buffer is full
    (or the control API's "send_fail" is due).  to: a UDP SERVICE's destination."""
    injected = sock.take_send_failure()       # the control API's "send_fail"
    if injected or sock.send_backlog() + len(data) > send_buffer:
        log.info("%s socket %d: %s, SEND FAIL", svc.kind, sock.client_id,
                 "send failure injected" if injected else "send buffer full")
        svc.set_error(0)
        return Response([], Text("SEND FAIL"))
    svc.set_error(0)
    if to is not None:
        sock.send(data, to)
        return Response([], Text("SEND OK"))
    # SEND OK says the data are in the send buffer (decided above, on the backlog before
    # them): the host reads it while the socket encrypts and writes them, right after (once
    # the host's next command, if it came meanwhile, has been read: transmit_soon).
    sock.account_send(data)
    return Response([], Text("SEND OK"), then=lambda: sock.transmit_soon(data))


def send_request(modem, svc: SslService, client_id: int, length: int | None,
                 cancelled: Response | None = None, *, send_max: int | None = None,
                 send_buffer: int | None = None, echo: bool = True,
                 to: Callable[[], tuple[str, int] | None] | None = None, hex_data: bool = False) -> Response:
    """The data phase of AT+QSSLSEND (EC2x and ML302) and AT+QISEND: "> ", the data
    (length bytes, or up to Ctrl+Z where ESC cancels), then SEND OK / SEND FAIL.
    cancelled: the answer to ESC (None = ERROR, the EC2x choice).  send_max/send_buffer:
    the service's limits (default: the profile's ssl.*); echo: the data are echoed (with
    ATE1; AT+QISDE); to(): a UDP SERVICE's destination, looked up when the data are in;
    hex_data: the host types hex digits, two per byte (AT+QICFG="dataformat",1,x): a fixed
    length counts the bytes sent, so twice as many digits are taken."""
    send_max = modem.profile["ssl.send_max"] if send_max is None else send_max
    send_buffer = modem.profile["ssl.send_buffer"] if send_buffer is None else send_buffer

    def finish(data: bytes, reason: str) -> Response:
        sock = svc.connected(client_id)
        if reason == "cancel":
            if cancelled is not None:
                log.info("%s socket %d: send cancelled with ESC", svc.kind, client_id)
                return cancelled
            raise fail(svc, 571, "send cancelled with ESC")
        if reason == "overflow":
            raise fail(svc, 552, f"more than {send_max} bytes before Ctrl+Z")
        if reason == "timeout":
            raise fail(svc, 569, "data not complete in time")
        if sock is None:
            raise fail(svc, 567, f"socket {client_id} closed while data was entered")
        if hex_data:
            try:
                data = binascii.unhexlify(data)      # (no whitespace, unlike bytes.fromhex)
            except (binascii.Error, ValueError):
                raise fail(svc, 552, "the data are not pairs of hex digits") from None
        if not data:
            raise fail(svc, 552, "nothing to send")
        dest = None
        if to is not None:
            dest = to()
            if dest is None:
                log.info("%s socket %d: destination not reachable, SEND FAIL", svc.kind, client_id)
                svc.set_error(0)
                return Response([], Text("SEND FAIL"))
        return send_now(svc, sock, data, send_buffer, dest)

    prompt = Prompt.DATA          # "\r\n> " in ATV1, "> " in ATV0: the interpreter frames it
    if hex_data:
        length = None if length is None else 2 * length
        send_max = 2 * send_max
    return Response([], None, data=DataRequest(finish, prompt=prompt, length=length, max_length=send_max,
                                               escape_cancels=length is None, echo=echo))


@command("+QIGETERROR", EXEC)
def qigeterror(modem, cmd):
    code = service(modem).last_error
    return ok(f"+QIGETERROR: {code},{ERROR_TEXT.get(code, 'unknown error')}")
