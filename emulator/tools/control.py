"""The control API: faults and state of a running modem, in-process and over a unix socket.

In-process: `Emulator.control(op, modem=0, **kw)` (on the loop) or
`BackgroundEmulator.control(op, modem=0, **kw)` (from any thread) returns a dict,
`{"ok": True, ...}` or `{"ok": False, "error": "<why>"}`; bad input (an unknown op, a
bad argument, no such modem or socket) is never raised.

The socket: `ControlServer(emulator, path)`; `await server.start()` listens on the
unix socket `path` (mode 0600; never TCP), `await server.close()` stops and removes
the file.  Each request is one line of JSON, `{"op": "drop", "modem": 0, "socket": 1,
"how": "rst"}` ("modem" defaults to 0), and gets one line of JSON back; a line that is
not a JSON object gets `{"ok": false, "error": ...}` and the connection stays usable.

Every op is one small function in OPS and delegates to the layer where the real
fault happens (docs/architecture.md, "A fault"): the socket's link for drops
(SslSocket.drop), the modem's network faults for opens (io/network.NetFaults), the
socket's state for SEND FAIL, the interpreter for slow answers, the modem for PDP,
DTR, URCs and the reboot.

    state                                  profile, cfun, dtr, port mode, clock, PDP, sockets
                                           (SSL and AT+QIOPEN ones: service_type)
    drop        socket, how=close|rst|blackhole   (an SSL or a TCP/IP socket: one id pool)
    pdp_deact   cid                        the network deactivates a context
    dns_fail / connect_refuse / handshake_stall   count=K (the next K opens; 0 cancels; a
                                           TCP/UDP open's stall: its connect is never answered;
                                           dns_fail: also AT+QIDNSGIP/QPING/QNTP of a name)
    send_fail   socket, count=K            the next K AT+QSSLSEND / AT+QISEND answer SEND FAIL
    dtr         level=0|1
    urc         text                       any line, as a URC
    reboot      [ms=50]                    as AT+CFUN=1,1, start-up URCs after ms
    slow        command="+QSSLOPEN", ms    that command's answer comes ms later (0: off)
    net         latency_ms, kbps, loss, [socket], [seed]   network conditions of one socket
                                           or the whole modem (all 0: none)
    uart_noise  on=true|false, [seed]      output in 1-16 byte fragments, 1-5 ms apart
    register    stat=0..5                  the network's registration (27.007 <stat>): 1 home,
                                           5 roaming; 0/2/3/4 drop the module (PDP contexts
                                           lost as "pdp_deact"); +CREG/+CGREG/+CEREG URCs
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
from pathlib import Path
from typing import Callable

from emulator.logsafe import get_logger
from emulator.modem.profile import command_name

log = get_logger("emulator.control")

MAX_REQUEST = 64 * 1024          # one JSON line


class ControlError(Exception):
    """A request that cannot be done: its text is the answer's "error"."""


OPS: dict[str, Callable] = {}


def op(name: str):
    def register(func: Callable) -> Callable:
        OPS[name] = func
        return func
    return register


def run(emulator, name, modem=0, kw: dict | None = None, record: bool = True) -> dict:
    """One request against `emulator` (on its loop): never raises for bad input.  A done op
    that changes something is a "control" record of the modem's trace (record False: the
    caller records it its own way -- a scenario step)."""
    kw = kw or {}
    try:
        func = OPS.get(name) if isinstance(name, str) else None
        if func is None:
            raise ControlError(f"unknown op {name!r} (known: {', '.join(sorted(OPS))})")
        if isinstance(modem, bool) or not isinstance(modem, int) or not 0 <= modem < len(emulator.ports):
            raise ControlError(f"no modem {modem!r} (there are {len(emulator.ports)})")
        args = _Args(name, kw)
        args.port = emulator.ports[modem].port
        answer = func(emulator.ports[modem].modem, args)
    except ControlError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:          # a bug must not take the emulator (or the socket) down
        log.exception("control op %r failed", name)
        return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
    log.info("control: %s %s", name, kw)
    if record and name != "state":
        emulator.ports[modem].modem.trace("control", op=name, args=dict(kw))
    return {"ok": True, **(answer or {})}


class _Args:
    """An op's keyword arguments, checked; every unused one is an error."""

    def __init__(self, name: str, kw: dict) -> None:
        self.name = name
        self.kw = dict(kw)
        self.port = None              # the modem's PtyPort (ops on the UART)

    def int(self, key: str, lo: int, hi: int, default: int | None = None) -> int:
        value = self.kw.pop(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ControlError(f"{self.name}: {key!r} must be an integer {lo}..{hi}, not {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.kw.pop(key, None)
        if value not in choices:
            raise ControlError(f"{self.name}: {key!r} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def str(self, key: str) -> str:
        value = self.kw.pop(key, None)
        if not isinstance(value, str):
            raise ControlError(f"{self.name}: {key!r} must be a string, not {value!r}")
        return value

    def done(self) -> None:
        if self.kw:
            raise ControlError(f"{self.name}: unknown argument(s) {', '.join(map(repr, self.kw))}")


def _svc(modem):
    from emulator.sockets.service import ssl_service
    return ssl_service(modem)


def _services(modem) -> list:
    from emulator.sockets.tcpip import socket_services
    return socket_services(modem)


def _socket(modem, args: _Args, connected: bool = True):
    client_id = args.int("socket", 0, _svc(modem).max_sockets - 1)
    svc = next((s for s in _services(modem) if client_id in s.sockets), None)   # one id pool
    if svc is None:
        if any(client_id in getattr(s, "listeners", {}) for s in _services(modem)):
            raise ControlError(f"{args.name}: socket {client_id} is a TCP LISTENER: it has no connection")
        raise ControlError(f"{args.name}: socket {client_id} is not open")
    sock = svc.sockets[client_id]
    if connected and svc.connected(client_id) is None:
        raise ControlError(f"{args.name}: socket {client_id} is not connected (state {sock.state.name})")
    return sock


def _count(args: _Args) -> int:
    return args.int("count", 0, 1_000_000, default=1)


# -- ops ------------------------------------------------------------------------
@op("state")
def state(modem, args: _Args) -> dict:
    from emulator.sockets.tcpip import LISTENING
    args.done()
    sockets = []
    every = [s for service in _services(modem) for s in service.sockets.values()]
    for sock in sorted(every, key=lambda s: s.client_id):
        hs = sock.handshake
        plain = hasattr(sock, "service_type")           # an AT+QIOPEN socket
        sockets.append(_entry(sock, sock.state.name, sock.service_type if plain else "SSL") | {
            "bytes_sent": sock.bytes_sent, "bytes_received": sock.bytes_received,
            "unread": len(sock.inbox), "blackholed": sock.blackholed,
            "tls_version": hs.version if hs and not plain else None,
            "cipher": hs.cipher_name if hs and not plain else None,
        })
    for service in _services(modem):
        for listener in getattr(service, "listeners", {}).values():   # they hold ids of the pool too
            state_name = "LISTENING" if listener.state == LISTENING else "OPENING"
            sockets.append(_entry(listener, state_name, listener.service_type) | {
                "local_port": listener.shown_local_port,
                "bytes_sent": 0, "bytes_received": 0, "unread": 0, "blackholed": False,
                "tls_version": None, "cipher": None,
            })
    sockets.sort(key=lambda s: s["id"])
    return {
        "profile": modem.profile.name, "name": modem.name, "cfun": modem.cfun, "dtr": modem.dtr,
        "mode": modem.interpreter.mode.name,
        "clock": modem.clock.format_local(),
        "registration": _registration_state(modem),
        "pdp": [{"cid": c.cid, "active": c.active, "apn": c.apn, "address": c.address}
                for c in modem.pdp.defined()],
        "sockets": sockets,
    }


def _entry(sock, state_name: str, service_type: str) -> dict:
    """What `state` shows alike of a connection and a TCP/UDP listener (one id pool)."""
    return {
        "id": sock.client_id, "state": state_name, "state_code": int(sock.state), "service_type": service_type,
        "access_mode": sock.delivery.access_mode, "delivery": sock.delivery.name,
        "host": sock.host, "port": sock.port, "address": f"{sock.host}:{sock.port}",
        "pdp": sock.pdp_id, "ctx": sock.ctx_id,
    }


def _registration_state(modem) -> dict:
    from emulator.modem.registration import registration
    reg = registration(modem)
    return {"stat": reg.radio_stat(), "attached": reg.attached()}


@op("register")
def register(modem, args: _Args) -> dict:
    from emulator.modem.registration import registration
    stat = args.int("stat", 0, 5)
    args.done()
    registration(modem).set_network(stat)
    return {}


@op("drop")
def drop(modem, args: _Args) -> dict:
    sock = _socket(modem, args)
    how = args.choice("how", ("close", "rst", "blackhole"))
    args.done()
    if how != "blackhole" and getattr(sock, "service_type", "") in ("UDP", "UDP SERVICE"):
        # (no connection a network could close or reset; ICMP errors are ignored on them)
        raise ControlError(f"drop: socket {sock.client_id} is a UDP socket: it has no connection to "
                           f"{how} (how=\"blackhole\" stops its packets)")
    sock.drop(how)
    return {}


@op("pdp_deact")
def pdp_deact(modem, args: _Args) -> dict:
    cid = args.int("cid", modem.pdp.first, modem.pdp.last)
    args.done()
    if not modem.pdp.is_active(cid):
        raise ControlError(f"pdp_deact: PDP context {cid} is not active")
    modem.network_deactivated_pdp(cid)     # sockets on it report closed / fail their open
    return {}


def _open_fault(kind: str) -> Callable:
    def handler(modem, args: _Args) -> dict:
        from emulator.io.network import net_faults
        count = _count(args)
        args.done()
        net_faults(modem).pending[kind] = count
        return {}
    return handler


op("dns_fail")(_open_fault("dns"))
op("connect_refuse")(_open_fault("refuse"))
op("handshake_stall")(_open_fault("stall"))


@op("send_fail")
def send_fail(modem, args: _Args) -> dict:
    sock = _socket(modem, args)
    count = _count(args)
    args.done()
    sock.send_failures = count
    return {}


@op("dtr")
def dtr(modem, args: _Args) -> dict:
    level = args.int("level", 0, 1)
    args.done()
    modem.set_dtr(level)
    return {}


def urc_text_problem(text: str) -> str | None:
    """What is wrong with a "urc" op's text (None: nothing); scenario files check the same."""
    if not text:
        return "text is empty (a URC is one line of text)"
    if "\r" in text or "\n" in text:
        return "one line, without CR or LF"
    try:
        text.encode("latin-1")            # the port carries bytes: one char, one byte
    except UnicodeEncodeError:
        return "text must be characters U+0000-U+00FF (one byte each on the port)"
    return None


@op("urc")
def urc(modem, args: _Args) -> dict:
    text = args.str("text")
    args.done()
    problem = urc_text_problem(text)
    if problem:
        raise ControlError(f"urc: {problem}")
    modem.urc(text)
    return {}


@op("reboot")
def reboot(modem, args: _Args) -> dict:
    ms = args.int("ms", 0, 600_000, default=50)
    args.done()
    # Whatever the port was doing (a data prompt, a pending answer, online data) ends
    # without an answer, as when the module's power goes; output not sent yet is lost.
    modem.interpreter.hangup(power_lost=True)
    modem.reboot(ms / 1000)           # as AT+CFUN=1,1: sockets silently, PDP, settings, RAM
    modem.drop_held()
    if args.port is not None:         # (after: the dropped sockets queue nothing more)
        args.port.discard_output()
    return {}


@op("slow")
def slow(modem, args: _Args) -> dict:
    command = command_name(args.str("command"))
    ms = args.int("ms", 0, 600_000)
    args.done()
    if not command or modem.profile.command_variant(command) is None:
        raise ControlError(f"slow: {command!r} is not a command of profile {modem.profile.name}")
    if ms:
        modem.interpreter.delays[command] = ms / 1000
    else:
        modem.interpreter.delays.pop(command, None)
    return {}


@op("net")
def net(modem, args: _Args) -> dict:
    from emulator.io.network import MAX_LATENCY_MS, NetConditions, net_faults
    faults = net_faults(modem)
    sock = _socket(modem, args, connected=False) if "socket" in args.kw else None
    values = {}
    for key, hi in (("latency_ms", MAX_LATENCY_MS), ("kbps", 10_000_000)):
        value = args.kw.pop(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
            raise ControlError(f"net: {key!r} must be a number 0..{hi}, not {value!r}")
        if key == "kbps" and 0 < value < 0.1:
            # (a typo's 1e-6 would hold every byte in flight for days, past any clearing)
            raise ControlError(f"net: 'kbps' must be 0 (unpaced) or at least 0.1 (100 bit/s), not {value!r}")
        values[key] = value
    loss = args.kw.pop("loss", 0)
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0 <= loss <= 1:
        raise ControlError(f"net: 'loss' must be a fraction 0..1, not {loss!r}")
    seed = args.int("seed", 0, 2**63) if "seed" in args.kw else None
    args.done()                          # (a refused request changes nothing, the seed too)
    if seed is not None:
        faults.random.seed(seed)
    conditions = NetConditions(values["latency_ms"], values["kbps"], loss)
    if sock is not None:
        sock.net = conditions if conditions.active() else None
    else:
        faults.conditions = conditions
    return {}


@op("uart_noise")
def uart_noise(modem, args: _Args) -> dict:
    on = args.kw.pop("on", None)
    if not isinstance(on, bool):
        raise ControlError(f"uart_noise: 'on' must be true or false, not {on!r}")
    seed = args.int("seed", 0, 2**63, default=0)
    args.done()
    args.port.set_noise(on, seed)
    return {}


# -- the unix socket --------------------------------------------------------------
class ControlServer:
    """Newline-delimited JSON on a unix socket: one answer line per request line.

        server = ControlServer(emulator, "/tmp/modem.ctl")
        await server.start()          # on the emulator's loop
        ...
        await server.close()          # the socket file is removed
    """

    def __init__(self, emulator, path: str | os.PathLike) -> None:
        self.emulator = emulator
        self.path = Path(path)
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._bound: tuple[int, int] | None = None

    async def start(self) -> None:
        """OSError when the path cannot be bound, or another process is listening on it."""
        if self.path.is_socket():
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(self.path))
            except OSError:
                self.path.unlink()    # a stale socket of an earlier run
            else:
                raise OSError(errno.EADDRINUSE, f"{self.path}: another process listens there")
            finally:
                probe.close()
        old = os.umask(0o177)         # the socket file is 0600: only its user may drive faults
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old)
        st = self.path.stat()
        self._bound = (st.st_dev, st.st_ino)   # (close removes this file, never another's)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._clients):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        # Only the socket file this server bound: one removed meanwhile (a CI job's clean-up)
        # and bound again by another emulator is that one's.
        try:
            st = self.path.stat()
            if self._bound is not None and (st.st_dev, st.st_ino) == self._bound:
                self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "request line too long"}\n')
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                writer.write(json.dumps(self.handle(line)).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
        # A client gone before its answer (EPIPE) leaves that error in the stream's close
        # future: taken here (for a second at most: a client that does not read keeps the
        # transport open), or asyncio may log "Future exception was never retrieved", an
        # ERROR line, when the collector finds the future before its owner.
        try:
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass

    def handle(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return {"ok": False, "error": f"malformed JSON: {exc}"}
        except RecursionError:            # "[[[[..." nested past the parser's recursion limit
            return {"ok": False, "error": "malformed JSON: nested too deeply"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        name = request.pop("op", None)
        modem = request.pop("modem", 0)
        return run(self.emulator, name, modem, request)
