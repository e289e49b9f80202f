"""DNS, ping and NTP of the EC2x (Quectel TCP/IP AT Commands Manual / LTE Standard
TCP/IP Application Note): AT+QIDNSCFG, AT+QIDNSGIP, AT+QPING, AT+QNTP.

Every answer comes from the emulator's network (emulator/io/network.py Router), never
from the host's own configuration:

* a name is resolved from a --dns entry (or, routed without one, the address the host is
  shown elsewhere: Router.display_address), then by the real resolver unless --offline
  (then 565, "DNS parse failed"); an IP literal resolves to itself;
* a host the Router knows (a route on any port, a --dns or --ping entry) answers echo
  requests after its --ping round-trip time (default 20 ms); an unknown one without raw
  sockets: with --offline every request times out (569), otherwise a TCP connection
  attempt to its port 80 stands in for the echo (SYN-ACK or RST = a reply, its time the RTT);
* AT+QNTP speaks SNTP (RFC 4330) over UDP to the routed server and moves the modem clock
  by the offset it measured (timestamps read across the 2036 era wrap; a reply whose times
  cannot be right, or dated outside the clock's 2000-2099, is ignored like an invalid one);
* a request whose PDP context goes away (AT+QIDEACT, AT+CGACT=0, AT+CGATT=0, AT+CFUN=0/4,
  the network) ends at once with 561 and sends nothing more.

Immediate failures answer `+CME ERROR: <err>` with the §5 codes (552 invalid parameter,
561 the context is not active, 568 a ping / NTP request still running), and
AT+QIGETERROR reports the same code.  Results come as URCs after OK, on the modem's timers
(manual time in tests moves them).
"""
from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import struct
import time
from datetime import datetime, timedelta, timezone

from emulator.at.args import Args
from emulator.at.parser import READ, WRITE
from emulator.at.registry import command
from emulator.at.responses import Cme, CommandError, ok
from emulator.commands.ssl_common import quectel_test
from emulator.io.network import NetworkError, Router, is_ip, name_problem, net_faults, open_udp
from emulator.logsafe import get_logger
from emulator.sockets.service import ssl_service

log = get_logger("emulator.netutil")

DNS_TTL = 600               # seconds; what a field log shows (+QIURC: "dnsgip",0,1,600)
PING_BYTES, PING_TTL = 32, 255          # field logs: +QPING: 0,"61.135.169.125",32,469,255
DNS_TIMEOUT = 60.0          # the real resolver, on the modem's timers
NTP_TIMEOUT = 125.0         # the note: "it will take at most 125 seconds to return the result"
NTP_RESEND = 5.0            # a lost request is sent again after this long
NTP_EPOCH = 2_208_988_800   # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)
ECHO_PORT = 80              # the TCP port an unknown host's "echo" is tried on


def set_error(modem, code: int) -> None:
    """What AT+QIGETERROR reports next (the one store of the last TCP/IP error)."""
    ssl_service(modem).set_error(code)


def _error(modem, code: int, why: str) -> CommandError:
    set_error(modem, code)
    return CommandError(Cme(code), why)


class NetArgs(Args):
    """A bad parameter: +CME ERROR: 552 ("invalid parameter"), also for AT+QIGETERROR."""

    def __init__(self, modem, cmd, at_most: int) -> None:
        self.modem = modem                   # (before: a refused count already sets 552)
        super().__init__(cmd, error=Cme(552), at_most=at_most)

    def fail(self, why: str) -> CommandError:
        set_error(self.modem, 552)
        return super().fail(why)


class NetUtil:
    """One modem's DNS / ping / NTP requests in flight (asyncio tasks, cancelled at a
    reboot or shutdown without a word, as the module's power going would)."""

    def __init__(self, modem) -> None:
        self.modem = modem
        self.tasks: set[asyncio.Task] = set()
        self.dns: list[_DnsRequest] = []             # AT+QIDNSGIP not answered yet, in order
        self.ping_run: _PingLookup | _Pinger | None = None    # the AT+QPING running
        self.ntp: _SntpExchange | None = None        # the AT+QNTP running (AT+QNTP? shows it)
        # AT+QIDNSCFG per context id, kept here rather than on the context: setting a
        # context's DNS servers does not define the context (AT+CGDCONT?, AT+CGACT=1).
        self.servers: dict[int, tuple[str, str]] = {}
        modem.on("reset", self._reboot)
        modem.on("shutdown", self.cancel)
        modem.on("pdp_deactivated", self._pdp_lost)

    @property
    def router(self) -> Router:
        return self.modem.network if self.modem.network is not None else Router(offline=True)

    def spawn(self, coro, crashed: str, alive=lambda: True, answer=None) -> None:
        """Run a request's coroutine; an unexpected exception in it is logged with its
        traceback and answered with the URC `crashed` (550, "unknown error") unless the
        request already has its result line (alive() False): the host always gets exactly
        one.  answer: how that URC goes out (default modem.urc; a DNS lookup's goes through
        the in-order queue, or every later lookup would wait behind it for good)."""
        task = asyncio.ensure_future(coro, loop=self.modem.loop)
        self.tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, crashed, alive, answer))

    def _done(self, task: asyncio.Task, crashed: str, alive, answer) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            if alive():
                self.crashed(crashed, task.exception(), answer)
            else:
                log.error("DNS/ping/NTP request failed unexpectedly after its result",
                          exc_info=task.exception())

    def crashed(self, urc: str, exc: BaseException, answer=None) -> None:
        log.error("DNS/ping/NTP request failed unexpectedly; answered %s", urc, exc_info=exc)
        if urc.startswith("+QPING"):
            self.ping_run = None
        elif urc.startswith("+QNTP") and self.ntp is not None:
            self.ntp.abort()
            self.ntp = None
        (answer or self.modem.urc)(urc)

    def _pdp_lost(self, cid: int) -> None:
        """The context a request runs on went away (AT+QIDEACT, AT+CGACT=0, AT+CGATT=0,
        AT+CFUN=0/4, the network): its packets have no bearer any more, so it ends at once
        with 561, and nothing it had on the way (a lookup, an echo reply, an SNTP answer)
        is reported after that."""
        for request in [r for r in self.dns if r.cid == cid and r.lines is None]:
            log.warning("AT+QIDNSGIP %s failed (561): PDP context %d deactivated", request.host, cid)
            self.modem.trace("dns", host=request.host, code=561, reason="PDP context deactivated")
            self.dns_answer(request, ['+QIURC: "dnsgip",561'])
        if self.ping_run is not None and self.ping_run.cid == cid:
            log.warning("AT+QPING %s failed (561): PDP context %d deactivated", self.ping_run.host, cid)
            self.modem.trace("ping", host=self.ping_run.host, code=561)
            self.ping_run = None
            self.modem.urc("+QPING: 561")
        if self.ntp is not None and self.ntp.cid == cid:
            log.warning("AT+QNTP %s failed (561): PDP context %d deactivated", self.ntp.server, cid)
            self.ntp.finish(561)

    def dns_answer(self, request: "_DnsRequest", lines: list[str]) -> None:
        """A lookup's result URCs, written in the order the host asked: a `+QIURC:
        "dnsgip"` block names no host, so a later name's answer that overtook an earlier
        one would be taken for it.  A request ended already (reboot) says nothing."""
        if request not in self.dns or request.lines is not None:
            return
        request.lines = lines
        while self.dns and self.dns[0].lines is not None:
            for line in self.dns.pop(0).lines:
                self.modem.urc(line)

    def _reboot(self) -> None:
        """AT+CFUN=1,1: requests in flight end without a word; AT+QIDNSCFG is forgotten."""
        self.cancel()
        self.servers.clear()

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.dns.clear()
        self.ping_run = None
        if self.ntp is not None:
            self.ntp.abort()
            self.ntp = None

    async def lookup(self, host: str, cid: int, purpose: str = "") -> list[str]:
        """The addresses the modem's DNS answers for `host` (NetworkError "dns" if none);
        purpose: what asks ("dnsgip", "ping": NetFaults.take_lookup)."""
        router = self.router
        if is_ip(host):
            return [host.strip("[]")]
        if net_faults(self.modem).take_lookup(host, purpose):
            raise NetworkError("dns", f"cannot resolve {host!r}: DNS failure (fault injected)")
        if router.knows(host):
            return [router.display_address(host)]
        if router.offline:
            raise NetworkError("dns", f"cannot resolve {host!r}: not known and the emulator is --offline")
        return await self.resolve(host, cid)

    async def resolve(self, host: str, cid: int) -> list[str]:
        """The real resolver's addresses for a name (IPv4 only on an IP context), within
        DNS_TIMEOUT on the modem's time (NetworkError "dns" otherwise)."""
        problem = name_problem(host)
        if problem is not None:
            raise NetworkError("dns", f"cannot resolve {host!r}: {problem}")
        family = self.modem.pdp.get(cid).name_family
        try:
            infos = await self.modem.timers.wait_for(
                asyncio.get_running_loop().getaddrinfo(host, None, family=family, type=socket.SOCK_STREAM),
                DNS_TIMEOUT)
        except asyncio.TimeoutError:
            raise NetworkError("dns", f"cannot resolve {host!r}: no answer in {DNS_TIMEOUT:.0f} s") from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise NetworkError("dns", f"cannot resolve {host!r}: {exc}") from None
        addresses: list[str] = []
        for info in infos:
            if info[4][0] not in addresses:
                addresses.append(info[4][0])
        if not addresses:
            raise NetworkError("dns", f"cannot resolve {host!r}: no address")
        self.router.remember_answer(host, addresses[0])     # (what its opens show: AT+QISTATE)
        return addresses


def netutil(modem) -> NetUtil:
    return modem.feature("netutil", NetUtil)


def dns_servers(modem, cid: int) -> tuple[str, str]:
    """(primary, secondary) DNS of a context: AT+QIDNSCFG's, else the network's."""
    return netutil(modem).servers.get(cid) or modem.pdp.network_dns


def _range(modem) -> str:
    return f"({modem.pdp.first}-{modem.pdp.last})"


def _active_cid(modem, args: NetArgs) -> int:
    cid = args.int(0, modem.pdp.first, modem.pdp.last)
    if not modem.pdp.is_active(cid):
        raise _error(modem, 561, f"PDP context {cid} is not active")
    return cid


def _host(args: NetArgs, i: int) -> str:
    host = args.str(i, max_len=255).strip()
    if not host:
        raise args.fail("empty host name")
    return host


# -- AT+QIDNSCFG ------------------------------------------------------------------
def _dns_address(args: NetArgs, i: int) -> str:
    text = args.str(i, max_len=64).strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise args.fail(f"{text!r} is not an IP address") from None
    if getattr(address, "scope_id", None):       # "fe80::1%eth0": the emulator's interface name
        raise args.fail(f"{text!r}: a DNS server address takes no zone index")
    return str(address)


@command("+QIDNSCFG", WRITE,
         test=quectel_test(lambda modem: f"+QIDNSCFG: {_range(modem)},<pridnsaddr>,<secdnsaddr>"))
def qidnscfg_write(modem, cmd):
    """AT+QIDNSCFG=<cid>,<pri>[,<sec>] sets a context's DNS servers (kept until a reboot;
    an omitted <sec> keeps the current one); AT+QIDNSCFG=<cid> reads them, which needs the
    context active (witnesses: a BG96 and an EC2x stand-in answer an error before AT+QIACT)."""
    args = NetArgs(modem, cmd, at_most=3)
    cid = args.int(0, modem.pdp.first, modem.pdp.last)
    if len(args) == 1:
        if not modem.pdp.is_active(cid):
            raise _error(modem, 561, f"PDP context {cid} is not active")
        pri, sec = dns_servers(modem, cid)
        set_error(modem, 0)
        return ok(f'+QIDNSCFG: {cid},"{pri}","{sec}"')
    pri = _dns_address(args, 1)
    sec = _dns_address(args, 2) if args.present(2) else dns_servers(modem, cid)[1]
    netutil(modem).servers[cid] = (pri, sec)          # forgotten at a reboot
    set_error(modem, 0)
    return ok()


# -- AT+QIDNSGIP ------------------------------------------------------------------
@command("+QIDNSGIP", WRITE, test=quectel_test(lambda modem: f"+QIDNSGIP: {_range(modem)},<hostname>"))
def qidnsgip_write(modem, cmd):
    args = NetArgs(modem, cmd, at_most=2)
    host = _host(args, 1)
    cid = _active_cid(modem, args)
    util = netutil(modem)
    request = _DnsRequest(cid, host)
    util.dns.append(request)
    util.spawn(_dnsgip(modem, request), crashed='+QIURC: "dnsgip",550',
               alive=lambda: request in util.dns and request.lines is None,
               answer=lambda urc: util.dns_answer(request, [urc]))
    set_error(modem, 0)
    return ok()


class _DnsRequest:
    """One AT+QIDNSGIP in flight (in NetUtil.dns until its result URCs are out)."""

    def __init__(self, cid: int, host: str) -> None:
        self.cid, self.host = cid, host
        self.lines: list[str] | None = None          # its URCs, once known


async def _dnsgip(modem, request: _DnsRequest) -> None:
    util, host = netutil(modem), request.host
    try:
        addresses = await util.lookup(host, request.cid, "dnsgip")
    except NetworkError as exc:
        if request.lines is None:
            log.warning("AT+QIDNSGIP %s failed (565 DNS parse failed): %s", host, exc.reason)
            modem.trace("dns", host=host, code=565, reason=exc.reason)
        util.dns_answer(request, ['+QIURC: "dnsgip",565'])
        return
    except Exception as exc:                         # never a lookup without its result
        if request in util.dns and request.lines is None:
            log.error("AT+QIDNSGIP %s failed unexpectedly; answered 550", host, exc_info=exc)
        util.dns_answer(request, ['+QIURC: "dnsgip",550'])
        return
    if request.lines is None:
        modem.trace("dns", host=host, code=0, addresses=addresses)
    ttl = 0 if is_ip(host) else DNS_TTL         # a field log: an IP literal answers 0,1,0
    util.dns_answer(request, [f'+QIURC: "dnsgip",0,{len(addresses)},{ttl}']
                    + [f'+QIURC: "dnsgip","{address}"' for address in addresses])


# -- AT+QPING ----------------------------------------------------------------------
@command("+QPING", WRITE,
         test=quectel_test(lambda modem: f"+QPING: {_range(modem)},<host>,(1-255),(1-10)"))
def qping_write(modem, cmd):
    args = NetArgs(modem, cmd, at_most=4)
    host = _host(args, 1)
    timeout = args.int(2, 1, 255, default=4)
    count = args.int(3, 1, 10, default=4)
    cid = _active_cid(modem, args)
    util = netutil(modem)
    if util.ping_run is not None:
        raise _error(modem, 568, "AT+QPING: a ping is still running")
    token = util.ping_run = _PingLookup(cid, host)
    util.spawn(_ping(modem, token, cid, host, timeout, count), crashed="+QPING: 550",
               alive=lambda: util.ping_run is token)
    set_error(modem, 0)
    return ok()


class _PingLookup:
    """AT+QPING while its host is looked up (NetUtil.ping_run until a _Pinger takes over)."""

    def __init__(self, cid: int, host: str) -> None:
        self.cid, self.host = cid, host


async def _ping(modem, token: _PingLookup, cid: int, host: str, timeout: int, count: int) -> None:
    util = netutil(modem)
    try:
        address = (await util.lookup(host, cid, "ping"))[0]
    except NetworkError as exc:
        if util.ping_run is not token:
            return                                   # ended already (context lost, reboot)
        log.warning("AT+QPING %s failed (565 DNS parse failed): %s", host, exc.reason)
        util.ping_run = None
        modem.urc("+QPING: 565")
        return
    if util.ping_run is token:
        util.ping_run = _Pinger(util, cid, host, address, timeout, count)
        util.ping_run.request()


class _Pinger:
    """One AT+QPING run: each request, then the next one as soon as it is answered or timed
    out.  Replies of known hosts and offline timeouts are timer callbacks on the modem's
    time, each scheduling the next, so one advance() over the whole run fires them all."""

    def __init__(self, util: NetUtil, cid: int, host: str, address: str, timeout: int, count: int) -> None:
        self.util, self.cid, self.host, self.address = util, cid, host, address
        self.timeout, self.count = timeout, count
        self.times: list[int] = []
        self.sent = 0
        router = util.router
        self.known = host if router.knows(host) else address if router.knows(address) else None

    def request(self) -> None:
        try:
            self._request()
        except Exception as exc:                     # never a ping without its last line
            self.util.crashed("+QPING: 550", exc)

    def _request(self) -> None:
        modem, timers = self.util.modem, self.util.modem.timers
        if self.util.ping_run is not self:
            return                                   # cancelled (reboot, shutdown)
        if self.sent == self.count:
            self.finish()
            return
        if not modem.pdp.is_active(self.cid):
            self.util.ping_run = None
            modem.urc("+QPING: 561")                 # the context went away meanwhile
            return
        self.sent += 1
        router = self.util.router
        if self.known is not None:
            rtt = router.ping_rtt(self.known)
            if rtt / 1000 > self.timeout:
                timers.call_later(self.timeout, self.answered, None)
            else:
                timers.call_later(rtt / 1000, self.answered, round(rtt))
        elif router.offline:
            timers.call_later(self.timeout, self.answered, None)   # nowhere to send it
        else:
            self.util.spawn(self._probe(), crashed="+QPING: 550", alive=lambda: self.util.ping_run is self)

    async def _probe(self) -> None:
        """No raw sockets: a TCP connection attempt to port 80 stands in for the echo
        request; a SYN-ACK or an RST is the reply, its time the round trip."""
        timers = self.util.modem.timers
        start = timers.monotonic()
        try:
            _, writer = await timers.wait_for(asyncio.open_connection(self.address, ECHO_PORT), self.timeout)
            writer.transport.abort()
        except ConnectionRefusedError:
            pass
        except (OSError, asyncio.TimeoutError):
            await timers.sleep(max(0.0, self.timeout - (timers.monotonic() - start)))
            self.answered(None)
            return
        self.answered(max(1, round((timers.monotonic() - start) * 1000)))

    def answered(self, rtt: int | None) -> None:
        if self.util.ping_run is not self:
            return
        try:
            self._answered(rtt)
        except Exception as exc:
            self.util.crashed("+QPING: 550", exc)

    def _answered(self, rtt: int | None) -> None:
        modem = self.util.modem
        if rtt is None:
            modem.urc("+QPING: 569")
        else:
            self.times.append(rtt)
            modem.urc(f'+QPING: 0,"{self.address}",{PING_BYTES},{rtt},{PING_TTL}')
        self._request()

    def finish(self) -> None:
        self.util.ping_run = None
        t = self.times
        self.util.modem.trace("ping", host=self.host, address=self.address, sent=self.count, times=t)
        stats = f"{min(t)},{max(t)},{round(sum(t) / len(t))}" if t else "0,0,0"
        self.util.modem.urc(f"+QPING: 0,{self.count},{len(t)},{self.count - len(t)},{stats}")


# -- AT+QNTP -----------------------------------------------------------------------
@command("+QNTP", WRITE,
         test=quectel_test(lambda modem: f"+QNTP: {_range(modem)},<server>,(1-65535),(0,1)"))
def qntp_write(modem, cmd):
    args = NetArgs(modem, cmd, at_most=4)
    server = _host(args, 1)
    port = args.int(2, 1, 65535, default=123)
    autoset = args.int(3, 0, 1, default=1)
    cid = _active_cid(modem, args)
    util = netutil(modem)
    if util.ntp is not None:
        raise _error(modem, 568, "AT+QNTP: a synchronisation is still running")
    exchange = util.ntp = _SntpExchange(util, cid, server, port, bool(autoset))
    util.spawn(_ntp(exchange), crashed="+QNTP: 550", alive=lambda: util.ntp is exchange)
    set_error(modem, 0)
    return ok()


@command("+QNTP", READ)
def qntp_read(modem, cmd):
    """While a synchronisation runs: +QNTP: "<server>",<port> (the note's read form)."""
    running = netutil(modem).ntp
    return ok(f'+QNTP: "{running.server}",{running.port}') if running else ok()


ERA = 2**32                 # NTP seconds wrap every 2**32 s (RFC 4330 §3: era 1 from 2036-02-07)
# The years the modem clock can hold: AT+CCLK's two-digit year is 2000 + yy.
CLOCK_YEARS = (2000, 2099)


def _ntp_stamp(unix: float) -> bytes:
    """Our transmit timestamp: Unix seconds as NTP seconds modulo the era, and fraction."""
    seconds = unix + NTP_EPOCH
    whole = math.floor(seconds)
    return struct.pack("!II", whole % ERA, int((seconds - whole) * ERA) % ERA)


def _ntp_seconds(stamp: bytes) -> float:
    """Unix seconds of a server's timestamp.  RFC 4330 §3: with the top bit set it is in
    1968-2036 (era 0), without it in 2036-2104 (era 1, after the seconds wrapped)."""
    whole, fraction = struct.unpack("!II", stamp)
    if not whole & 0x8000_0000:
        whole += ERA
    return whole - NTP_EPOCH + fraction / ERA


def _valid_reply(data: bytes, sent) -> bool:
    """RFC 4330 §5: a server reply (mode 4), synchronised (LI != 3, stratum 1-15; 0 is a
    kiss-o'-death), to one of our requests (originate = our transmit timestamp), with
    receive and transmit timestamps."""
    if len(data) < 48:
        return False
    li, mode, stratum = data[0] >> 6, data[0] & 7, data[1]
    return (mode == 4 and li != 3 and 1 <= stratum <= 15
            and data[24:32] in sent and data[32:40] != bytes(8) and data[40:48] != bytes(8))


async def _ntp(exchange: "_SntpExchange") -> None:
    util, server, port = exchange.util, exchange.server, exchange.port
    router = util.router
    try:
        target = server
        if not is_ip(server) and net_faults(util.modem).take_lookup(server, "ntp"):
            raise NetworkError("dns", f"cannot resolve {server!r}: DNS failure (fault injected)")
        if router.lookup(server, port) is None and not is_ip(server) and not router.offline:
            # An unrouted name: the modem's resolver (IPv4 on an IP context, DNS_TIMEOUT).
            target = (await util.resolve(server, exchange.cid))[0]
        await open_udp(router, target, port, lambda: exchange)
    except NetworkError as exc:
        if exc.kind == "dns":
            log.warning("AT+QNTP %s failed (565 DNS parse failed): %s", server, exc.reason)
            exchange.finish(565)
            return
        log.warning("AT+QNTP %s:%d: %s; no reply can come", server, port, exc.reason)


class _SntpExchange(asyncio.DatagramProtocol):
    """One AT+QNTP: a 48-byte mode 3 request, sent again every NTP_RESEND s until a valid
    reply comes or NTP_TIMEOUT s passed since the command (569, the lookup included).
    The clock is set to T3 + delay / 2 (RFC 4330's offset ((T2 - T1) + (T3 - T4)) / 2
    applied at T4), with the round trip T4 - T1 timed on a monotonic clock: an AT+CCLK
    while the request is out moves T1 and T4 apart by whatever it set, not by the time
    that passed.  Timer callbacks on the modem's time, so one advance() runs the whole
    timeout."""

    def __init__(self, util: NetUtil, cid: int, server: str, port: int, autoset: bool) -> None:
        self.util, self.cid, self.server, self.port, self.autoset = util, cid, server, port, autoset
        self.transport = None
        self.sent: dict[bytes, float] = {}           # our transmit timestamp -> time.monotonic()
        self.resend = None
        self.done = False
        self.ignored = 0
        self.deadline = util.modem.timers.call_later(NTP_TIMEOUT, self.timed_out)

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.done:                                # aborted while the socket was made
            transport.close()
            return
        self.send()

    def send(self) -> None:
        if self.done or self.transport is None or self.transport.is_closing():
            return
        stamp = _ntp_stamp(self.util.modem.clock.now().timestamp())
        self.sent[stamp] = time.monotonic()
        # LI 0, VN 4, mode 3 (client); all zero but the transmit timestamp (T1).
        self.transport.sendto(bytes([0x23]) + bytes(39) + stamp)
        self.resend = self.util.modem.timers.call_later(NTP_RESEND, self.send)

    def datagram_received(self, data: bytes, addr) -> None:
        if self.done:
            return
        try:
            self._received(data)
        except Exception as exc:                     # never an AT+QNTP without its result
            if self.util.ntp is self:
                self.util.crashed("+QNTP: 550", exc)

    def _ignore(self, why: str) -> None:
        self.ignored += 1                            # a flood is one line in the log
        (log.info if self.ignored == 1 else log.debug)(
            "AT+QNTP %s: ignored a reply (%s); %d so far", self.server, why, self.ignored)

    def _received(self, data: bytes) -> None:
        if not _valid_reply(data, self.sent):
            self._ignore("not a valid SNTP answer to our request")
            return
        round_trip = time.monotonic() - self.sent[data[24:32]]
        t2, t3 = _ntp_seconds(data[32:40]), _ntp_seconds(data[40:48])
        if not 0 <= t3 - t2 <= round_trip + 1.0:
            self._ignore(f"the server says it held the request {t3 - t2:.3f} s of a {round_trip:.3f} s round trip")
            return
        now = t3 + max(0.0, round_trip - (t3 - t2)) / 2
        modem = self.util.modem
        year = datetime.fromtimestamp(now + 900 * modem.clock.quarters, timezone.utc).year
        if not CLOCK_YEARS[0] <= year <= CLOCK_YEARS[1]:
            self._ignore(f"a time in {year}, which the modem clock (AT+CCLK, "
                         f"{CLOCK_YEARS[0]}-{CLOCK_YEARS[1]}) cannot hold")
            return
        self.finish(0, now - modem.clock.now().timestamp(), t3)

    def error_received(self, exc: Exception) -> None:
        log.info("AT+QNTP %s: %s", self.server, exc)   # port unreachable: the request is lost

    def timed_out(self) -> None:
        log.warning("AT+QNTP %s:%d failed (569 operation timeout): no valid reply in %.0f s",
                    self.server, self.port, NTP_TIMEOUT)
        self.finish(569)

    def abort(self) -> None:
        """Stop: no more requests, the socket closed, nothing reported."""
        self.done = True
        for handle in (self.deadline, self.resend):
            if handle is not None:
                handle.cancel()
        if self.transport is not None:
            self.transport.close()

    def finish(self, code: int, offset: float = 0.0, server_time: float | None = None) -> None:
        """server_time: the server's transmit timestamp (Unix seconds), for the trace:
        replay's SNTP stand-in sends it again, and the replaying modem adds its own half
        round trip as this one did."""
        if self.done:
            return
        self.abort()
        util, modem = self.util, self.util.modem
        if util.ntp is not self:
            return                                   # cancelled (reboot, shutdown)
        util.ntp = None
        if code == 0 and not modem.pdp.is_active(self.cid):
            code = 561                               # the context went away meanwhile
        modem.trace("ntp", server=self.server, port=self.port, code=code, offset=offset,
                    autosettime=self.autoset,
                    **({"server_time": round(server_time, 6)} if code == 0 and server_time else {}))
        if code != 0:
            modem.urc(f"+QNTP: {code}")
            return
        if self.autoset:
            modem.clock.adjust(offset)
        synced = modem.clock.now() + timedelta(seconds=0 if self.autoset else offset)
        quarters = modem.clock.quarters
        local = (synced + timedelta(minutes=15 * quarters)).replace(tzinfo=None)
        sign = "+" if quarters >= 0 else "-"
        log.info("AT+QNTP %s:%d: offset %+.3f s%s", self.server, self.port, offset,
                 "" if self.autoset else " (clock not set: autosettime 0)")
        modem.urc(f'+QNTP: 0,"{local:%Y/%m/%d,%H:%M:%S}{sign}{abs(quarters):02d}"')
