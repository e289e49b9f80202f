"""The one way out to the network: routing, name resolution, connections.

A host:port that the modem host dials (AT+QSSLOPEN) can be mapped to another
address ("--route www.iottest.work:443=127.0.0.1:8443"); the host still sees
its own name and port everywhere (QSSLSTATE, SNI, certificate checks).  With
offline=True an unrouted name fails like a DNS error and an unrouted IP address
like a connect error, instead of touching the real network.  Tests and CI route
every name they dial to loopback.  A name no DNS query can carry (an empty or
over-long label, which the resolver's IDNA step rejects) fails as a DNS error
before any resolver call.

Where a module prints the server's IP address (ML302 +QSSLRECV / +QSSLSTATE)
it shows what the *modem's DNS* answered, never the route: display_address().
"--dns www.iottest.work=106.12.79.254" (or a [dns] table) sets that answer for
a name, independently of where the emulator really connects.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import functools
import hashlib
import ipaddress
import math
import os
import random
import select
import socket
import struct
import termios
from collections import deque
from dataclasses import dataclass

from emulator.logsafe import get_logger

log = get_logger("emulator.network")


NETWORK_FAILURES = ("dns", "connect", "bind")      # NetworkError.kind values


class NetworkError(Exception):
    """kind: one of NETWORK_FAILURES; reason: a line for the log."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def is_port(value, lowest: int = 0) -> bool:
    """An int (not a bool) in lowest..65535: a port a socket can have."""
    return isinstance(value, int) and not isinstance(value, bool) and lowest <= value <= 65535


def _split_host_port(text: str, need_port: bool) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):                       # [v6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None
    if not host:
        raise ValueError(f"{text!r}: empty host")
    if port is None:
        if need_port:
            raise ValueError(f"{text!r}: a port is needed")
        return host, None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: bad port")
    return host, int(port)


def parse_route(spec: str) -> tuple[tuple[str, int | None], tuple[str, int | None]]:
    """"HOST:PORT=ADDR:PORT" or "HOST=ADDR" (any port, kept)."""
    left, sep, right = spec.partition("=")
    if not sep:
        raise ValueError(f"route {spec!r}: expected HOST:PORT=ADDR:PORT")
    src = _split_host_port(left, need_port=False)
    dst = _split_host_port(right, need_port=False)
    if (src[1] is None) != (dst[1] is None):
        raise ValueError(f"route {spec!r}: give a port on both sides or on neither")
    key = name_key(src[0])
    if not key:
        raise ValueError(f"route {spec!r}: no host name (the root '.' alone is none)")
    return (key, src[1]), dst


def parse_dns(spec: str) -> tuple[str, str]:
    """"NAME=IP" (the --dns form) -> (name, ip); add_dns() checks both."""
    name, sep, ip = spec.partition("=")
    if not sep:
        raise ValueError(f"dns {spec!r}: expected NAME=IP")
    return name.strip(), ip.strip()


def parse_ping(spec: str) -> tuple[str, float]:
    """"HOST=RTT_MS" (the --ping form) -> (host, ms); add_ping() checks both."""
    host, sep, rtt = spec.partition("=")
    if not sep:
        raise ValueError(f"ping {spec!r}: expected HOST=RTT_MS")
    try:
        ms = float(rtt.strip())
    except ValueError:
        raise ValueError(f"ping {spec!r}: {rtt.strip()!r} is not a number of milliseconds") from None
    return host.strip(), ms


# A name the modem's DNS has no entry for shows an address made up from the name in
# 198.18.0.0/15 (RFC 2544 benchmarking, never routed on the internet; the range fake-IP
# DNS proxies use for the same purpose): stable across runs, never the loopback route.
FAKE_NET = ipaddress.ip_network("198.18.0.0/15")

DEFAULT_RTT_MS = 20.0          # AT+QPING to a known host without a --ping entry


def made_up_address(name: str) -> str:
    """198.18-19.x.y (y 1-254) from SHA-256 of the lower-cased name."""
    n = int.from_bytes(hashlib.sha256(_dns_key(name).encode()).digest()[:4], "big")
    return str(FAKE_NET[((n >> 8) % 512) * 256 + 1 + n % 254])


def name_key(host: str) -> str:
    """How routes, --dns / --ping entries and the DNS side know a host: lower case, an IPv6
    literal without its brackets, a name without its root's dot ("x.example." is the
    absolute name of x.example) -- one dot only ("x.example.." is no name), and never one
    that would leave an IP literal ("::1." and "10.0.0.1." are neither that address nor a
    name a resolver finds)."""
    key = host.strip("[]").lower()
    if key.endswith(".") and not key.endswith("..") and not is_ip(key[:-1]):
        key = key[:-1]
    return key


def _dns_key(name: str) -> str:
    return name_key(name.strip())


class Router:
    def __init__(self, routes: list[str] | dict[str, str] | None = None, offline: bool = False,
                 dns: dict[str, str] | None = None, ping: dict[str, float] | None = None) -> None:
        self.offline = offline
        self._routes: dict[tuple[str, int | None], tuple[str, int | None]] = {}
        # name -> the address the modem's DNS answers (--dns, [dns]); what the host is shown.
        self.dns: dict[str, str] = {}
        # name -> what the real DNS answered when an unrouted name was resolved.
        self._answered: dict[str, str] = {}
        # host -> round-trip time in ms of its echo replies (AT+QPING; --ping, [ping]);
        # a routed host or a --dns name without an entry answers after DEFAULT_RTT_MS.
        self.ping: dict[str, float] = {}
        # the module's <local_port> -> the loopback address a listener binds (--listen).
        self.listen: dict[int, tuple[str, int]] = {}
        items = routes.items() if isinstance(routes, dict) else ((r, None) for r in routes or ())
        for key, value in items:
            self.add(key if value is None else f"{key}={value}")
        for name, ip in (dns or {}).items():
            self.add_dns(name, ip)
        for host, ms in (ping or {}).items():
            self.add_ping(host, ms)

    def add(self, spec: str) -> None:
        src, dst = parse_route(spec)
        self._routes[src] = dst

    def add_map(self, host: str, port: int, addr: str, dst_port: int) -> None:
        if not is_port(dst_port):
            # (as --route refuses it: found at the first dial, it was a traceback in the log)
            raise ValueError(f"route {host}:{port}: bad destination port {dst_port!r} (0-65535)")
        if port is not None and not is_port(port):
            raise ValueError(f"route {host}:{port!r}: bad port (0-65535)")
        key = name_key(host) if isinstance(host, str) else ""
        if not key:
            raise ValueError(f"route {host!r}:{port}: no host name")
        self._routes[(key, port)] = (addr, dst_port)

    def add_listen(self, local_port: int, addr: str = "127.0.0.1", port: int = 0) -> None:
        """A "TCP LISTENER"/"UDP SERVICE" on the host's <local_port> really binds addr:port
        (loopback only; port 0: any free port, see listen_address)."""
        if not is_port(local_port, lowest=1):
            raise ValueError(f"listen {local_port!r}: the module's local port must be 1-65535")
        if not is_port(port):
            raise ValueError(f"listen {local_port}: bad port {port!r}")
        if not is_ip(addr) or not ipaddress.ip_address(addr.strip("[]")).is_loopback:
            raise ValueError(f"listen {local_port}: {addr!r} is not a loopback address")
        self.listen[local_port] = (addr.strip("[]"), port)

    def add_listen_spec(self, spec: str) -> None:
        """"<local_port>=127.0.0.1:<port>" (the --listen form)."""
        left, sep, right = spec.partition("=")
        if not sep or not left.strip().isdigit():
            raise ValueError(f"listen {spec!r}: expected LOCAL_PORT=127.0.0.1:PORT")
        addr, port = _split_host_port(right, need_port=True)
        self.add_listen(int(left), addr, port)

    def listen_address(self, local_port: int) -> tuple[str, int]:
        """Where a listener on the module's <local_port> binds: its --listen mapping, else
        127.0.0.1:<local_port> itself."""
        return self.listen.get(local_port, ("127.0.0.1", local_port))

    def add_dns(self, name: str, ip: str) -> None:
        """Let the modem's DNS answer `ip` for `name` (shown to the host; routing unchanged)."""
        if not isinstance(name, str) or not _dns_key(name):
            raise ValueError(f"dns {name!r}: empty name")
        if is_ip(name):
            raise ValueError(f"dns {name!r}: an IP address needs no DNS entry")
        if not isinstance(ip, str) or not is_ip(ip.strip()):
            raise ValueError(f"dns {name!r}: {ip!r} is not an IP address")
        self.dns[_dns_key(name)] = str(ipaddress.ip_address(ip.strip().strip("[]")))

    def add_ping(self, host: str, rtt_ms: float | None) -> None:
        """Echo replies from `host` (a name or an IP address) come after rtt_ms (AT+QPING);
        None: the host is known but never replies (every request times out: 569)."""
        if not isinstance(host, str) or not _dns_key(host):
            raise ValueError(f"ping {host!r}: empty host")
        if rtt_ms is None:
            self.ping[_dns_key(host)] = math.inf
            return
        if isinstance(rtt_ms, bool) or not isinstance(rtt_ms, (int, float)) or not 0 <= rtt_ms <= 255_000:
            raise ValueError(f"ping {host!r}: round-trip time {rtt_ms!r} must be 0..255000 ms")
        self.ping[_dns_key(host)] = float(rtt_ms)

    def knows(self, host: str) -> bool:
        """Whether the emulator's network has `host`: a route on any port, a --dns entry or
        a --ping entry (AT+QPING answers such a host; AT+QIDNSGIP resolves it offline)."""
        key = _dns_key(host)
        return (key in self.dns or key in self.ping
                or any(name == key for name, _ in self._routes)
                or bool(self._shown_for(key)))          # (each name it gives is known)

    def ping_rtt(self, host: str) -> float:
        """The round-trip time in ms of a known host's echo replies (an address the modem's
        DNS gave a name: the name's)."""
        key = _dns_key(host)
        if key not in self.ping:
            key = next((name for name in self._shown_for(key) if name in self.ping), key)
        return self.ping.get(key, DEFAULT_RTT_MS)

    def _shown_for(self, key: str) -> list[str]:
        """The names whose address the modem's DNS shows as the IP literal `key` (a --dns
        entry, else the made-up address of a routed or --ping name), in the order they were
        given; [] for any other key."""
        if not is_ip(key):
            return []
        ip = str(ipaddress.ip_address(key))
        names = [name for name, shown in self.dns.items() if shown == ip]
        if ipaddress.ip_address(ip) in FAKE_NET:
            known = [name for name, _ in self._routes] + list(self.ping)
            for name in dict.fromkeys(known):
                if not is_ip(name) and name not in self.dns and made_up_address(name) == ip:
                    names.append(name)
        return names

    def answered_address(self, host: str) -> str | None:
        """The address a name has been given -- a --dns entry, or the real DNS's answer --
        or an IP literal itself; None for a name nothing resolved (display_address would
        make one up)."""
        if is_ip(host):
            return host.strip("[]")
        key = _dns_key(host)
        return self.dns.get(key) or self._answered.get(key)

    def remember_answer(self, host: str, address: str) -> None:
        """The real DNS answered `address` for the name `host` (AT+QIDNSGIP's lookup): the
        modem's opens of it show that address, as after a lookup of their own."""
        if not is_ip(host):
            self._answered[_dns_key(host)] = address

    def display_address(self, host: str) -> str:
        """The server address the host is shown for a dialled `host` (never a route):
        an IP literal itself; a name with a DNS entry (add_dns) that entry; a name the real
        DNS resolved (not routed) the real answer; any other name made_up_address(name)."""
        return self.answered_address(host) or made_up_address(_dns_key(host))

    def lookup(self, host: str, port: int) -> tuple[str, int] | None:
        """Where a dial of host:port goes by the routes (None: no route).  An IP literal
        with no route of its own that the modem's DNS showed for a name (AT+QIDNSGIP's
        answer: the name's --dns entry or made-up address) takes the name's route, as on a
        real network the answer reaches the name's server."""
        key = name_key(host)
        dst = self._route(key, port) or next(
            (route for name in self._shown_for(key) if (route := self._route(name, port))), None)
        if dst is None:
            return None
        return dst[0], dst[1] if dst[1] is not None else port

    def _route(self, key: str, port: int):
        """The route of `key` for `port`, else its any-port route (None: neither)."""
        return self._routes.get((key, port)) or self._routes.get((key, None))

    def resolve_now(self, host: str, port: int) -> tuple[str, int] | None:
        """resolve() when it needs no DNS (a route, an IP literal, a name's --dns entry, an
        error --offline gives at once); None: a name the resolver has to look up."""
        routed = self.lookup(host, port)
        if routed is not None:
            return routed
        if is_ip(host):
            if self.offline:       # no DNS involved: nowhere to connect to
                raise NetworkError("connect", f"{host}:{port} is not routed and the emulator is --offline")
            return host.strip("[]"), port
        entry = self.dns.get(_dns_key(host))
        if entry is not None:      # the modem's DNS answers it: that address is dialled
            return self.resolve_now(entry, port)
        return None

    async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> tuple[str, int]:
        """family: the PDP context's (PdpContext.name_family): on an IPv4 context an AAAA
        answer is never dialled, as AT+QIDNSGIP on it shows none."""
        known = self.resolve_now(host, port)
        if known is not None:
            return known
        problem = name_problem(host)       # (first: offline too, the log says what is wrong)
        if problem is not None:
            raise NetworkError("dns", f"cannot resolve {host!r}: {problem}")
        if self.offline:
            raise NetworkError("dns", f"cannot resolve {host!r}: not routed and the emulator is --offline")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError) as exc:
            raise NetworkError("dns", f"cannot resolve {host!r}: {exc}") from None
        self.remember_answer(host, infos[0][4][0])
        return infos[0][4][0], port


def name_problem(host: str) -> str | None:
    """Why `host` cannot go into a DNS query (None: it can).  The same IDNA step the
    resolver applies (socket.getaddrinfo raises UnicodeError for these), plus the
    253-character limit of a whole name, checked here so nothing reaches the network."""
    try:
        encoded = host.encode("idna")
    except UnicodeError as exc:
        return f"not a valid host name ({exc.__cause__ or exc})"
    if len(encoded.rstrip(b".")) > 253:
        return "not a valid host name (longer than 253 characters)"
    return None


def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 literal (brackets allowed), not a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


class NetFaults:
    """One modem's injected network faults for its next opens (the control API's
    "dns_fail", "connect_refuse", "handshake_stall"): counts of opens still to fail,
    taken in that order, one fault per open."""

    KINDS = ("dns", "refuse", "stall")

    def __init__(self, modem=None) -> None:
        self.pending = {kind: 0 for kind in self.KINDS}
        self.modem = modem
        self.conditions = NetConditions()      # the whole modem's (a socket's own wins)
        self.random = random.Random(0)

    def shaped(self, protocol_factory, conditions, datagram: bool):
        """A protocol factory whose links carry the network conditions (the control API's
        "net"): conditions() gives the NetConditions in force, asked at every packet."""
        timers = self.modem.timers
        return lambda: ShapedLink(protocol_factory(), conditions, timers, self.random, datagram)

    def take_open(self, host: str) -> str | None:
        """The fault the next open of `host` gets (one of its count taken), else None.  An
        IP literal needs no lookup: "dns" is not its (as for take_lookup)."""
        if not any(self.pending.values()):     # (every open asks: mostly none is due)
            return None
        literal = is_ip(host)
        for kind in self.KINDS:
            if kind == "dns" and literal:
                continue
            if self.pending[kind] > 0:
                self.pending[kind] -= 1
                return kind
        return None

    def failure_wait(self):
        """What the "refuse" / "dns" fault take_open just gave waits for before it fails the
        open (an awaitable; None: it fails at once, or a round trip later over a link with
        latency).  The replay's faults wait for the moment the recording's refusal came."""
        return None

    def connect_wait(self):
        """What a TCP connect take_open gave no fault waits for before it is complete (an
        awaitable; None: nothing).  The replay's faults wait for the moment the recording's
        SSL connect was made."""
        return None

    def nothing_in_the_way(self) -> bool:
        """An open now would take no fault, wait for no moment and cross no network
        conditions: its TCP connect may start before anything else is set up (the replay's
        faults, whose connects wait for their recorded moments, say False)."""
        return not any(self.pending.values()) and not self.conditions.active()

    def take_lookup(self, host: str = "", purpose: str = "") -> bool:
        """A name lookup of the modem's own (AT+QIDNSGIP, AT+QPING, AT+QNTP of a name:
        `purpose` "dnsgip", "ping", "ntp"): True when the "dns_fail" fault is to fail it (one
        of its count taken)."""
        if self.pending["dns"] > 0:
            self.pending["dns"] -= 1
            return True
        return False


MAX_LATENCY_MS = 600_000        # a link's one-way latency at most (the control op net, --latency)


@dataclass
class NetConditions:
    """A link's conditions: one-way latency, bandwidth (0 = unlimited) and packet loss
    (TCP: a lost segment is sent again after an RTO, max(200 ms, 2 x latency), and the
    stream waits behind it; DTLS: the datagram is gone)."""
    latency_ms: float = 0
    kbps: float = 0
    loss: float = 0

    def active(self) -> bool:
        return bool(self.latency_ms or self.kbps or self.loss)


class _Pipe:
    """One direction of a shaped link: packets leave in order, each at its due time
    on the modem's timers (so manual-time tests advance them)."""

    def __init__(self, conditions, timers, rng, datagram: bool) -> None:
        self.conditions, self.timers, self.random, self.datagram = conditions, timers, rng, datagram
        self.queue: deque = deque()          # (due, action)
        self.busy_until = 0.0                # the sender's bandwidth is used until then
        self.queued = 0                      # bytes waiting
        self._timer = None
        self.delivered = None                # called after due packets were handed on

    def push(self, size: int, action, *args) -> None:
        """action(*args) now when nothing waits and the link has no conditions, else at its
        due time (the arguments kept with it: a packet makes no closure of its own)."""
        cond = self.conditions()
        if not self.queue and not cond.active():
            action(*args)
            return
        if args:
            action = functools.partial(action, *args)
        now = self.timers.monotonic()
        extra = 0.0
        if size and cond.loss and self.random.random() < cond.loss:
            if self.datagram:
                return                       # a lost datagram
            extra = max(0.2, 2 * cond.latency_ms / 1000)     # retransmitted after an RTO
        start = max(now, self.busy_until)
        self.busy_until = start + (size * 8 / (cond.kbps * 1000) if cond.kbps else 0)
        due = self.busy_until + cond.latency_ms / 1000 + extra
        if self.queue:
            due = max(due, self.queue[-1][0])                # never overtakes
        elif due <= now:
            action()                         # (no delay on it -- loss only: not a timer's turn,
            return                           # which a manual clock would hold until advance())
        self.queue.append((due, size, action))
        self.queued += size
        if self._timer is None:
            self._arm()

    def _arm(self) -> None:
        if self.queue:
            self._timer = self.timers.call_later(self.queue[0][0] - self.timers.monotonic(), self._due)

    def _due(self) -> None:
        self._timer = None
        now = self.timers.monotonic()
        while self.queue and self.queue[0][0] <= now + 1e-9:
            _, size, action = self.queue.popleft()
            self.queued -= size
            action()
        self._arm()
        if self.delivered is not None:
            self.delivered()

    def clear(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queue.clear()
        self.queued = 0


# What one read takes from a connection at most (asyncio's own is 256 KiB): a socket's buffer
# (ssl.recv_buffer / tcpip.recv_buffer, 64 KiB on the EC2x) outgrows its limit by no more
# than one read before reading pauses, as a module's TCP window closes there; and the read's
# buffer stays under glibc's mmap threshold (no mmap / mremap / munmap for each read).
NETWORK_READ = 64 * 1024


def cap_reads(transport) -> None:
    """Bound each read of `transport` (or of the asyncio transport a ShapedTransport wraps)
    to NETWORK_READ bytes."""
    inner = transport.inner if isinstance(transport, ShapedTransport) else transport
    if isinstance(getattr(inner, "max_size", None), int):
        inner.max_size = NETWORK_READ


class ShapedTransport:
    """The transport a socket writes to, with the link's conditions on the way out."""

    def __init__(self, inner, pipe: _Pipe, writable, incoming: _Pipe | None = None) -> None:
        self._inner = inner
        self._pipe = pipe
        self._incoming = incoming            # the link's other way (abort() empties it too)
        self._writable = writable            # the protocol's resume_writing
        self._high = self._low = None
        self._over = False
        self._closing = False                # close() called: the FIN waits behind the queue
        # Reading: the owner's pause_reading(), or the receive window -- bytes on the link
        # towards the owner (incoming.queued) count as a TCP window does: the link stops
        # reading once they fill what the owner would still take (receive_window(), set by
        # the owner; None: no window).  Without it a link with latency read the whole flood
        # into its queue while the first packet was on its way, past any pause.
        self.receive_window = None
        self._owner_paused = False
        self._reading_paused = False         # the asyncio transport's, as set here

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def pause_reading(self) -> None:
        self._owner_paused = True
        self.window_check()

    def resume_reading(self) -> None:
        self._owner_paused = False
        self.window_check()

    def is_reading(self) -> bool:
        return not self._reading_paused and self._inner.is_reading()

    def window_check(self) -> None:
        """The asyncio transport reads iff the owner has not paused it and the bytes on the
        link towards it are fewer than its receive window."""
        incoming = self._incoming
        full = (incoming is not None and self.receive_window is not None
                and incoming.queued >= self.receive_window())
        paused = self._owner_paused or full
        if paused == self._reading_paused or self._inner.is_closing():
            return
        self._reading_paused = paused
        if paused:
            self._inner.pause_reading()
        else:
            self._inner.resume_reading()

    @property
    def inner(self):
        """The asyncio transport under the link's conditions."""
        return self._inner

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        """Bytes waiting on the shaped link count too: above `high` the writer holds
        back (it sees send_backlog(): the link's queue and asyncio's buffer together), at
        `low` it hears resume_writing again.  asyncio's own limits are what is left of
        `low` beside the queue (_retune), so asyncio says when its buffer has drained far
        enough for the total to be at `low` (inner_drained)."""
        self._high, self._low = high, low
        self._retune()

    def _retune(self) -> None:
        if self._low is not None:
            room = max(0, self._low - self._pipe.queued)
            self._inner.set_write_buffer_limits(high=room, low=room)

    def inner_drained(self) -> None:
        """asyncio's resume_writing: its buffer is down to `low`."""
        if not self._over:
            self._writable()
        else:
            self._resume_if_low()

    def _resume_if_low(self) -> bool:
        """The writer held back and the link's queue plus asyncio's buffer down to `low`:
        it hears resume_writing (True)."""
        if self._over and self.get_write_buffer_size() <= (self._low or 0):
            self._over = False
            self._writable()
            return True
        return False

    def _out(self, send, data: bytes) -> None:
        if self._closing:
            return                           # (asyncio ignores writes after close() too)
        self._pipe.push(len(data), self._go, send, data)
        if self._high is not None and self.get_write_buffer_size() > self._high:
            self._over = True
            self._retune()

    def _go(self, send, data: bytes) -> None:
        """A packet leaves (now, or at its due time on a shaped link)."""
        if not self._inner.is_closing():
            send(data)
        if self._over and not self._resume_if_low():
            self._retune()

    def write(self, data: bytes) -> None:
        self._out(self._inner.write, bytes(data))

    def sendto(self, data: bytes, addr=None) -> None:
        if addr is None:
            self._out(self._inner.sendto, bytes(data))
        else:
            self._out(lambda d: self._inner.sendto(d, addr), bytes(data))

    def write_eof(self) -> None:
        if not self._pipe.queue:
            self._inner.write_eof()
            return

        def go() -> None:
            try:
                if not self._inner.is_closing():
                    self._inner.write_eof()
            except OSError as exc:
                log.debug("no FIN after shaped data: %s", exc)
        self._pipe.push(0, go)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + self._pipe.queued

    def abort(self) -> None:
        # The connection is gone at once, both ways: what is still on the link towards the
        # socket never arrives (as with asyncio's abort(), no data_received after it; the
        # socket may already have told the host "closed": a drop fault, AT+QICLOSE=<id>,0).
        self._pipe.clear()
        if self._incoming is not None:
            self._incoming.clear()
            self._incoming.delivered = None  # (no window to keep: and no cycle left with it)
        self._inner.abort()

    @property
    def datagram(self) -> bool:
        return self._pipe.datagram

    def let_go(self) -> None:
        """The socket is done with its transport without a reset: a datagram link's
        packets still on their way leave at their due times and then it closes (UDP has no
        connection to tear down: what SEND OK accepted, and a DTLS close_notify, are already
        on the path); nothing more comes in.  A stream link, or nothing queued: abort()."""
        if not self._pipe.datagram or not self._pipe.queue:
            self.abort()
            return
        if self._incoming is not None:
            self._incoming.clear()
        self.close()

    def is_closing(self) -> bool:
        return self._closing or self._inner.is_closing()

    def close(self) -> None:
        """asyncio's close(): what was written leaves first, through the link's conditions,
        then the connection closes (abort() drops it all at once)."""
        if self._closing:
            return
        self._closing = True
        if not self._pipe.queue:
            self._inner.close()
            return

        def go() -> None:
            if not self._inner.is_closing():
                self._inner.close()
        self._pipe.push(0, go)


class ShapedLink(asyncio.Protocol):
    """Wraps a socket's protocol: what arrives passes the link's conditions first (the
    connection's end included, behind the data before it); its transport is shaped."""

    def __init__(self, inner, conditions, timers, rng, datagram: bool) -> None:
        self.inner = inner
        self.incoming = _Pipe(conditions, timers, rng, datagram)
        self.outgoing = _Pipe(conditions, timers, rng, datagram)
        self.shaped = None

    def connection_made(self, transport) -> None:
        self.shaped = ShapedTransport(transport, self.outgoing, self.inner.resume_writing, self.incoming)
        if not self.incoming.datagram:       # (a stream's window: see ShapedTransport)
            self.incoming.delivered = self.shaped.window_check
        self.inner.connection_made(self.shaped)

    def data_received(self, data: bytes) -> None:
        self.incoming.push(len(data), self.inner.data_received, data)
        if self.shaped is not None:
            self.shaped.window_check()

    def datagram_received(self, data: bytes, addr) -> None:
        self.incoming.push(len(data), self.inner.datagram_received, data, addr)

    def error_received(self, exc: Exception) -> None:
        self.inner.error_received(exc)

    def eof_received(self):
        # The peer's FIN crosses the link as its data do, behind them; asyncio keeps the
        # connection (the peer only half-closed and may read on).  The socket hears the end
        # when it arrives; what it wrote until then, and the close after that, leave through
        # the link's conditions in order (a close now would drop writes the socket makes
        # before it knows of the FIN, and the queue behind them).
        def arrived() -> None:
            if not self.inner.eof_received() and self.shaped is not None:
                self.shaped.close()
        self.incoming.push(0, arrived)
        return True

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.shaped is not None:
            self.shaped.inner_drained()
        else:
            self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        ending = getattr(self.inner, "ending", None)
        if ending is not None:
            ending()                         # (now: asyncio closes the socket after this call)
        self.outgoing.clear()
        self.incoming.delivered = None       # (the window's callback: a cycle with the transport)
        self.incoming.push(0, self.inner.connection_lost, exc)


def net_faults(modem) -> NetFaults:
    return modem.feature("net_faults", NetFaults)


async def _injected(fault: str | None, router: Router, host: str, port: int, family: int) -> None:
    """An open's injected fault that happens before any packet: the modem's DNS gives no
    answer, or the server refuses the connection -- after the name was looked up as for a
    real connect (the server refuses the address the DNS gave), so what the real DNS answered
    is the address the host is shown while the open fails (AT+QISTATE) and after.  A name
    that does not resolve is refused all the same: the fault is the refusal."""
    if fault == "dns":
        raise NetworkError("dns", f"cannot resolve {host!r}: DNS failure (fault injected)")
    if fault == "refuse":
        try:
            await router.resolve(host, port, family)
        except NetworkError:
            pass
        raise NetworkError("connect", f"connect to {host}:{port} refused (fault injected)")


class Dialled:
    """An open's TCP connect made at once, before any loop turn (dial_now): the socket,
    the address really dialled, and whether the connect is complete already (a server
    on this machine: a --route).  Until asyncio's transport has the socket, write()
    stands in for it, so the handshake's first flight leaves at once; open_tcp(dialled=)
    finishes the connect and makes the transport."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], done: bool) -> None:
        self.sock, self.address, self.done = sock, address, done
        self.pending = b""                   # what the socket did not take (handed on)
        self.taken = False                   # open_tcp has it: closing it is open_tcp's then

    def write(self, data: bytes) -> None:
        if not self.pending:
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                pass                         # reset at once: the transport reports it
        self.pending += bytes(data)

    def is_closing(self) -> bool:
        return self.sock.fileno() < 0

    def get_write_buffer_size(self) -> int:
        return len(self.pending)

    def abort(self) -> None:
        # Once open_tcp has the socket, its own cleanup closes it, in asyncio's order (a
        # close here could free the fd number while asyncio still has callbacks for it).
        if not self.taken:
            self.sock.close()


def reset_on_close(transport) -> None:
    """The TCP connection under `transport` (an asyncio transport or a ShapedTransport) ends
    with a RST when it is closed (SO_LINGER 0: the peer sees a reset, not a FIN); nothing
    for a datagram socket."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def tcp_unacked(transport) -> int | None:
    """The bytes a TCP connection's kernel holds that its peer has not acknowledged, sent or
    not yet (Linux SIOCOUTQ: write_seq - snd_una, still right after a reset until the socket
    is closed); None for a datagram socket, a closed one or no transport.  (Not TCP_INFO's
    bytes_acked: it counts the SYN of a connect.)  transport: an asyncio transport, a
    ShapedTransport or a Dialled."""
    if transport is None:
        return None
    sock = getattr(transport, "sock", None)
    if sock is None and hasattr(transport, "get_extra_info"):
        sock = transport.get_extra_info("socket")
    try:
        if sock is None or sock.type != socket.SOCK_STREAM or sock.fileno() < 0:
            return None
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, ValueError):
        return None


def dial_now(router: Router, host: str, port: int) -> Dialled | None:
    """open_tcp's connect started synchronously, when no name has to be looked up: an
    IPv4 route or literal.  None: open_tcp does it all (a DNS name, IPv6).  Raises
    NetworkError as open_tcp would (refused at once, --offline)."""
    known = router.resolve_now(host, port)
    if known is None or not _is_ipv4(known[0]):
        return None
    try:
        return _dial_ipv4(known)                                  # EMFILE, ENOBUFS: 566 too
    except OSError as exc:
        raise NetworkError("connect", f"TCP connect to {known[0]}:{known[1]} failed: {_why(exc)}") from None


def _dial_ipv4(address: tuple[str, int]) -> Dialled:
    """A non-blocking socket connecting to an IPv4 address (OSError: it failed at once)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        done = _connect_started(sock, address)
        if done:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return Dialled(sock, address, done)


def _connect_started(sock: socket.socket, address: tuple[str, int]) -> bool:
    """connect() on a non-blocking socket: True when it is complete already (else the
    loop waits for it); OSError when it failed at once.  ECONNRESET is a connect that was
    made and reset by the server since (see _connect_dialled): complete."""
    try:
        sock.connect(address)
        return True
    except (BlockingIOError, InterruptedError):
        poll = select.poll()
        poll.register(sock, select.POLLOUT)
        if not poll.poll(0):
            return False
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err and err != errno.ECONNRESET:
            raise OSError(err, f"Connect call failed {address}") from None
        return True


async def open_tcp(router: Router, host: str, port: int, protocol_factory, fault: str | None = None,
                   dialled: Dialled | None = None, family: int = socket.AF_UNSPEC):
    """Resolve through the router and connect; returns (transport, protocol, (addr, port)).
    The caller bounds it (the SSL socket, on the modem's time).  fault: NetFaults.take_open().
    dialled: the connect dial_now() started (the transport is made on its socket).  family:
    of a name's answers (Router.resolve)."""
    loop = asyncio.get_running_loop()
    if dialled is not None:
        addr, real_port = dialled.address
    else:
        await _injected(fault, router, host, port, family)
        addr, real_port = await router.resolve(host, port, family)
    try:
        if dialled is None and _is_ipv4(addr):
            # (not loop.create_connection: it spends two loop turns, a writer callback and
            # the task resuming, even when the connect is done at once, as to a --route)
            dialled = _dial_ipv4((addr, real_port))
        if dialled is not None:
            transport, protocol = await _connect_dialled(loop, protocol_factory, dialled)
        else:
            transport, protocol = await loop.create_connection(protocol_factory, addr, real_port)
    except OSError as exc:
        raise NetworkError("connect", f"TCP connect to {addr}:{real_port} failed: {_why(exc)}") from None
    sock = transport.get_extra_info("socket")
    if sock is not None and not transport.is_closing():
        # Handshake flights are written whole; Nagle would hold each back ~40 ms.
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass            # closed meanwhile (the socket's owner went away): nothing to tune
    log.info("connected %s:%d via %s:%d", host, port, addr, real_port)
    return transport, protocol, (addr, real_port)


def _why(exc: OSError) -> str:
    """An OSError as the log and the control API say it: the system's words for its errno
    ("Connection refused"), not asyncio's "Connect call failed (addr)"."""
    if exc.errno:
        try:
            return os.strerror(exc.errno)
        except ValueError:
            pass
    return exc.strerror or str(exc)


@functools.lru_cache(maxsize=256)
def _is_ipv4(addr: str) -> bool:
    # (cached: every open asks it of its routed address, and ipaddress parses in Python)
    try:
        return isinstance(ipaddress.ip_address(addr), ipaddress.IPv4Address)
    except ValueError:
        return False


async def _connect_dialled(loop, protocol_factory, dialled: Dialled):
    sock = dialled.sock
    dialled.taken = True
    try:
        if sock.fileno() < 0:
            raise OSError(errno.ECONNABORTED, "the connection was dropped")
        if not dialled.done:
            try:
                await loop.sock_connect(sock, dialled.address)
            except ConnectionResetError:
                # The server accepted and reset the connection before this looked: the
                # connect was made (a refusal is ECONNREFUSED), so the open succeeds as on the
                # module, and the transport reads the end at once ("closed" / a failed handshake).
                pass
        return await loop.create_connection(protocol_factory, sock=sock)
    except BaseException:
        sock.close()
        raise


async def open_udp(router: Router, host: str, port: int, protocol_factory, fault: str | None = None,
                   family: int = socket.AF_UNSPEC):
    loop = asyncio.get_running_loop()
    await _injected(fault, router, host, port, family)
    addr, real_port = await router.resolve(host, port, family)
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            protocol_factory, remote_addr=(addr, real_port))
    except OSError as exc:
        raise NetworkError("connect", f"UDP socket to {addr}:{real_port} failed: {_why(exc)}") from None
    return transport, protocol, (addr, real_port)

async def listen_tcp(router: Router, local_port: int, protocol_factory):
    """A TCP LISTENER's server on router.listen_address(local_port) (loopback only), bound
    but not yet accepting: the caller starts it (server.start_serving()) once the host has
    been told the listener is up."""
    addr, port = router.listen_address(local_port)
    try:
        server = await asyncio.get_running_loop().create_server(protocol_factory, addr, port,
                                                                start_serving=False)
    except OSError as exc:
        raise NetworkError("bind", f"cannot listen on {addr}:{port}: {_why(exc)}") from None
    log.info("listening on %s:%d for the module's port %d", addr, server.sockets[0].getsockname()[1], local_port)
    return server


async def bind_udp(router: Router, local_port: int, protocol_factory):
    """A UDP SERVICE's socket on router.listen_address(local_port); returns
    (transport, protocol, None) like open_udp (no remote address)."""
    addr, port = router.listen_address(local_port)
    try:
        transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
            protocol_factory, local_addr=(addr, port))
    except OSError as exc:
        raise NetworkError("bind", f"cannot bind UDP {addr}:{port}: {_why(exc)}") from None
    return transport, protocol, None


def udp_destination(router: Router, host: str, port: int) -> tuple[str, int] | None:
    """Where a UDP SERVICE's datagram to host:port goes (None: nowhere): a route, else the
    address itself when it is an IP literal and the emulator is online or it is loopback
    (the peers a listener hears from on this machine).  The service's socket is bound to
    127.0.0.1: an IPv6 destination is out of its reach (None: SEND FAIL, never a datagram
    counted as sent and lost)."""
    routed = router.lookup(host, port)
    if routed is not None:
        return routed if _is_ipv4(routed[0]) else None
    if not is_ip(host):
        return None
    ip = ipaddress.ip_address(host.strip("[]"))
    if ip.version != 4 or (router.offline and not ip.is_loopback):
        return None
    return str(ip), port

