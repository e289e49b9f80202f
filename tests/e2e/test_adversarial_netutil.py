"""AT+QIDNSGIP / AT+QPING / AT+QNTP and the packet domain against impolite hosts and hostile
servers: each test here failed before the fix it names (emulator/commands/netutil.py,
emulator/testing/peers/sntp.py).  SNTP servers are emulator.testing.peers.sntp's, made
hostile with respond=; every test runs on the modem's manual time."""
from __future__ import annotations

import asyncio
import re
import socket
import threading
import time

import pytest

from emulator.testing.peers import TlsServer, utc
from emulator.testing.peers.sntp import SntpServer, ntp_stamp
from tests.e2e.ssl_options_support import cfg, close, last_error, open_ssl, trust

ACTIVATE = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
OK = b"\r\nOK\r\n"
NTP_DATE = utc(2019, 6, 1, 12, 0, 0)         # +QNTP / AT+CCLK show it at +08:00 (+32)
QNTP = re.compile(rb"\+QNTP: .*\r\n")


def _wait_requests(ntp: SntpServer, n: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while len(ntp.requests) < n:
        assert time.monotonic() < deadline, f"{len(ntp.requests)} SNTP requests of {n}"
        time.sleep(0.01)


def _ntp_result(host) -> bytes:
    return host.read_until(QNTP, timeout=5)


# -- NTP era (RFC 4330 §3: the seconds field wraps on 2036-02-07) ---------------------------
def test_qntp_with_the_modem_clock_past_2036_still_sets_the_servers_time(emulator, ec2x_on):
    """Our transmit timestamp wraps into era 1 after 2036; T1 read back as 1900+ made the
    offset half a century wrong (the clock went from 2040 to 2087 for a 2019 server)."""
    host, _ = ec2x_on
    assert host.at('AT+CCLK="40/01/01,00:00:00+32"') == OK
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        got = _ntp_result(host)
    assert re.fullmatch(rb'\r\n\+QNTP: 0,"2019/06/01,20:00:0\d\+32"\r\n', got), got
    assert re.fullmatch(rb'\r\n\+CCLK: "19/06/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', host.at("AT+CCLK?"))


def test_qntp_from_a_server_past_the_2036_rollover_and_a_certificate_of_then(emulator, ec2x, net, pki):
    """A server in era 1 (2040): its timestamps have the top bit clear; read as 1904 they set
    the clock to 1904 (and the test peer could not even encode a date past 2036)."""
    then = utc(2040, 3, 1, 12)
    leaf = pki.issue_window("ntp-2040", utc(2040, 1, 1), utc(2041, 1, 1))
    with TlsServer(leaf) as server, SntpServer(then) as ntp:
        net(server)
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        trust(ec2x, 0, pki.ca.cert_pem)
        cfg(ec2x, "ignorelocaltime", 0, 0)
        assert open_ssl(ec2x, 0) == 566                  # not yet valid at today's clock
        assert ec2x.at('AT+QNTP=1,"ntp.example"') == OK
        got = _ntp_result(ec2x)
        assert re.fullmatch(rb'\r\n\+QNTP: 0,"2040/03/01,20:00:0\d\+32"\r\n', got), got
        assert re.fullmatch(rb'\r\n\+CCLK: "40/03/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', ec2x.at("AT+CCLK?"))
        assert open_ssl(ec2x, 0) == 0                    # what the certificate check uses
        close(ec2x)


# -- hostile SNTP answers -------------------------------------------------------------------
def _bad_answers():
    """(name, f(server, request) -> the bad reply) that a client must not take."""
    def stamp(dt):
        return ntp_stamp(dt)
    return [
        ("receive timestamp zero", lambda s, r: s.reply(r, receive=bytes(8))),
        ("before 1970", lambda s, r: s.reply(r, when=utc(1969, 12, 31, 23))),
        ("past the clock's 2099", lambda s, r: s.reply(r, when=utc(2100, 6, 1))),
        ("transmitted before received", lambda s, r: s.reply(r, receive=stamp(utc(2019, 6, 2)))),
        ("held a year", lambda s, r: s.reply(r, receive=stamp(utc(2018, 6, 1)))),
    ]


@pytest.mark.parametrize("name,bad", _bad_answers(), ids=[n for n, _ in _bad_answers()])
def test_qntp_ignores_insane_answers_and_takes_the_next_good_one(emulator, ec2x_on, name, bad):
    """A reply whose times cannot be right is ignored like any invalid one (the request is
    sent again); before, each of these set the clock to nonsense (1969, 1904, half-way
    between two dates...).  The good answer then comes twice, flooded, and a forged one
    from another port first: the first good one counts, once."""
    host, port = ec2x_on
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))

    def respond(request):
        if len(ntp.requests) == 1:
            return [bad(ntp, request)]
        forger.sendto(ntp.reply(request, when=utc(2031, 1, 1)), ntp.clients[-1])  # other address
        time.sleep(0.05)
        return [ntp.reply(request)] * 20
    try:
        with SntpServer(NTP_DATE, respond=respond) as ntp:
            emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
            assert host.at('AT+QNTP=1,"ntp.example"') == OK
            _wait_requests(ntp, 1)
            assert host.quiet_for(0.3) == b"", name         # ignored: still waiting
            emulator.advance(port, 5)                       # sent again
            got = _ntp_result(host)
            assert re.fullmatch(rb'\r\n\+QNTP: 0,"2019/06/01,20:00:0\d\+32"\r\n', got), (name, got)
            assert host.quiet_for(0.3) == b""               # the rest of the flood: nothing
    finally:
        forger.close()
    assert re.fullmatch(rb'\r\n\+CCLK: "19/06/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', host.at("AT+CCLK?"))


def test_an_at_cclk_while_the_ntp_request_is_out_does_not_skew_the_result(emulator, ec2x_on):
    """T1 on the old clock and T4 on the new one put half of what AT+CCLK moved into the
    offset (a 2030 AT+CCLK during the round trip gave 2024 instead of 2019)."""
    host, _ = ec2x_on
    go = threading.Event()

    def respond(request):
        go.wait(5)
        return [ntp.reply(request)]
    with SntpServer(NTP_DATE, respond=respond) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        _wait_requests(ntp, 1)
        assert host.at('AT+CCLK="30/01/01,00:00:00+32"') == OK
        go.set()
        got = _ntp_result(host)
    assert re.fullmatch(rb'\r\n\+QNTP: 0,"2019/06/01,20:00:0\d\+32"\r\n', got), got
    assert re.fullmatch(rb'\r\n\+CCLK: "19/06/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', host.at("AT+CCLK?"))


# -- the context goes while a request runs --------------------------------------------------
DROPS = ["AT+QIDEACT=1", "AT+CGATT=0", "AT+CGACT=0,1", "AT+CFUN=4"]


def _reactivate(host, drop: str) -> None:
    if drop == "AT+CFUN=4":
        assert host.at("AT+CFUN=1") == OK
    assert host.at("AT+QIACT=1") == OK


@pytest.mark.parametrize("drop", DROPS)
def test_a_context_dropped_in_the_same_line_ends_every_request_with_561(emulator, ec2x_on, drop):
    """AT+QIDNSGIP answered a lookup made after its context was gone, and AT+QNTP sent
    SNTP requests without a bearer for 125 s before answering 569."""
    host, port = ec2x_on
    emulator.router.add_ping("p.example", 10)
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        line = f'AT+QIDNSGIP=1,"p.example";+QPING=1,"p.example";+QNTP=1,"ntp.example";{drop[2:]}'
        assert host.at(line) == OK
        assert host.read_until(b"+QNTP: 561\r\n", timeout=3) == \
            b'\r\n+QIURC: "dnsgip",561\r\n\r\n+QPING: 561\r\n\r\n+QNTP: 561\r\n'
        emulator.advance(port, 200)
        assert host.quiet_for(0.3) == b""
        assert ntp.requests == []                          # nothing left without a bearer
        _reactivate(host, drop)
        assert host.at('AT+QPING=1,"p.example",4,1;+QNTP=1,"ntp.example"') == OK   # none busy
        host.seen(b'+QNTP: 0,"2019/06/01', timeout=5)
        emulator.advance(port, 1)
        host.seen(b"+QPING: 0,1,1,0,10,10,10\r\n", timeout=3)


@pytest.mark.parametrize("drop", DROPS + ["register"])
def test_a_context_dropped_mid_run_ends_ping_and_ntp_at_once(emulator, ec2x_on, drop):
    """No echo reply after the bearer is gone (a reply line came before +QPING: 561), no
    SNTP request either (they went on every 5 s until 569)."""
    host, port = ec2x_on
    emulator.router.add_ping("p.example", 1000)
    with SntpServer(NTP_DATE, answer=False) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QPING=1,"p.example",4,3;+QNTP=1,"ntp.example"') == OK
        _wait_requests(ntp, 1)
        emulator.advance(port, 1)
        host.read_until(b'+QPING: 0,"', timeout=3)
        host.read_until(b"\r\n", timeout=3)
        if drop == "register":
            assert emulator.control("register", stat=2)["ok"]
            host.read_until(b'+QIURC: "pdpdeact",1\r\n', timeout=3)
        else:
            assert host.at(drop) == OK
        sent = len(ntp.requests)
        got = host.read_until(b"+QNTP: 561\r\n", timeout=3)
        assert got == b"\r\n+QPING: 561\r\n\r\n+QNTP: 561\r\n", got
        emulator.advance(port, 200)
        time.sleep(0.2)
        assert host.quiet_for(0.2) == b"" and len(ntp.requests) == sent


# -- a resolver that never answers ----------------------------------------------------------
def test_a_resolver_that_never_answers_ends_qntp_with_565(monkeypatch, tmp_path):
    """AT+QNTP looked an unrouted name up with no time limit and armed its 125 s only once
    the socket existed: a hung resolver left it running (568 to every later AT+QNTP)."""
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host

    async def never(self, *args, **kwargs):
        await asyncio.get_running_loop().create_future()
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", never)
    with BackgroundEmulator(offline=False) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK) and host.at(ACTIVATE) == OK
            assert host.at('AT+QNTP=1,"hang.example";+QIDNSGIP=1,"hang.example";'
                           '+QPING=1,"hang.example"') == OK
            time.sleep(0.2)
            emu.advance(port, 59)
            assert host.quiet_for(0.2) == b""
            emu.advance(port, 2)                               # the resolver's 60 s
            got = host.read_until(b"+QPING: 565\r\n", timeout=3)
            assert sorted(re.findall(rb"\+Q[^\r]*", got)) == \
                [b"+QIURC: \"dnsgip\",565", b"+QNTP: 565", b"+QPING: 565"], got
            assert host.at("AT+QNTP?") == OK
            assert last_error(host) == 0
        finally:
            host.close()


# -- reading or refusing a context must not define it ----------------------------------------
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_query_or_a_refused_line_does_not_define_a_context(open_modem, profile):
    """AT+QICSGP=<cid> (a driver's start-up reads all 16), AT+CGDCONT=<cid> and lines
    refused for a bad value defined the context: it then showed in AT+CGDCONT? /
    AT+CGACT? / AT+CGPADDR, and AT+CGACT=1 (every defined context) activated it."""
    host, _ = open_modem(profile)
    lines = ["AT+CGDCONT=3", 'AT+CGDCONT=4,"X25"', 'AT+CGDCONT=5,"IP","' + "a" * 100 + '"']
    if profile == "ec2x":
        lines += ["AT+QICSGP=2", 'AT+QICSGP=6,1,"x","","",9', 'AT+QICSGP=7,4']
    for line in lines:
        host.at(line)
    assert host.at("AT+CGDCONT?") == OK
    assert host.at("AT+CGACT?") == OK
    if profile == "ec2x":
        assert host.at("AT+QICSGP=2") == b'\r\n+QICSGP: 1,"","","",0\r\n\r\nOK\r\n'
        assert host.at("AT+CGACT=1") == OK and host.at("AT+QIACT?") == OK
        assert host.at("AT+CGPADDR") == OK


def test_lookups_answer_in_the_order_the_host_asked(monkeypatch, tmp_path):
    """A +QIURC: "dnsgip" block names no host: two AT+QIDNSGIP sent back to back must be
    answered in that order, or the host takes one name's addresses for the other's (a
    slow first lookup was overtaken by a fast second one)."""
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host

    async def resolver(self, host, *args, **kwargs):
        slow = host.startswith("slow")
        await asyncio.sleep(0.5 if slow else 0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.1" if slow else "192.0.2.2", 0))]
    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", resolver)
    with BackgroundEmulator(offline=False) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK) and host.at(ACTIVATE) == OK
            assert host.at('AT+QIDNSGIP=1,"slow.example";+QIDNSGIP=1,"fast.example";'
                           '+QIDNSGIP=1,"192.0.2.9"') == OK
            got = b""
            while got.count(b'"dnsgip","') < 3:
                got += host.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'), timeout=5)
            assert got == (b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","192.0.2.1"\r\n'
                           b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","192.0.2.2"\r\n'
                           b'\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","192.0.2.9"\r\n'), got
        finally:
            host.close()


def test_qidnscfg_refuses_an_address_with_a_zone_index(ec2x_on):
    """Python's ipaddress takes "fe80::1%eth0" (a zone is the emulator machine's interface
    name, nothing a module's DNS setting holds); it was stored and read back with it."""
    host, _ = ec2x_on
    for bad in ('AT+QIDNSCFG=1,"fe80::1%eth0"', 'AT+QIDNSCFG=1,"8.8.8.8","fe80::1%1"'):
        assert host.at(bad) == b"\r\n+CME ERROR: 552\r\n", bad
        assert last_error(host) == 552
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n'
    assert host.at('AT+QIDNSCFG=1,"FE80::0001","8.8.8.8"') == OK
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"fe80::1","8.8.8.8"\r\n\r\nOK\r\n'


def test_qidnscfg_does_not_define_the_context(ec2x_on):
    """AT+QIDNSCFG=<cid>,... on a context the host never defined created it: it showed in
    AT+CGDCONT? / AT+CGACT?, and AT+CGACT=1 (every defined context) activated it."""
    host, _ = ec2x_on
    assert host.at('AT+QIDNSCFG=2,"8.8.8.8"') == OK
    assert host.at("AT+CGACT?") == b"\r\n+CGACT: 1,1\r\n\r\nOK\r\n"
    assert host.at("AT+CGACT=1") == OK and host.at("AT+CGPADDR=2") == b'\r\n+CGPADDR: 2,"0.0.0.0"\r\n\r\nOK\r\n'
    assert host.at("AT+QIACT=2") == OK                                  # still configured
    assert host.at("AT+QIDNSCFG=2") == b'\r\n+QIDNSCFG: 2,"8.8.8.8","123.66.165.2"\r\n\r\nOK\r\n'
    assert b'"8.8.8.8","123.66.165.2"' in host.at("AT+CGCONTRDP=2")
