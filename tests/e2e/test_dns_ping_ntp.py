"""AT+QIDNSCFG, AT+QIDNSGIP, AT+QPING and AT+QNTP on the EC2x (emulator/commands/netutil.py)
through the pty: answers from the Router's --dns / route / --ping entries, offline
failures, every error code a host can reach, SNTP against emulator.testing.peers.sntp
and a certificate valid only at the NTP date (ignorelocaltime 0)."""
from __future__ import annotations

import re

import pytest

from emulator.io.network import Router
from emulator.testing.peers import TlsServer, utc
from emulator.testing.peers.sntp import SntpServer
from emulator.tools.cli import Refused, build_parser, load_config
from tests.e2e.cli_support import refused
from tests.e2e.ssl_options_support import cfg, close, last_error, open_ssl, trust

ACTIVATE = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
OK = b"\r\nOK\r\n"


def cme(code: int) -> bytes:
    return f"\r\n+CME ERROR: {code}\r\n".encode()


# -- AT+QIDNSGIP ------------------------------------------------------------------------
def test_qidnsgip_answers_from_dns_entries_routes_and_ip_literals(emulator, ec2x):
    emulator.router.add_dns("www.iottest.work", "106.12.79.254")
    emulator.router.add_map("svc.example", 443, "127.0.0.1", 9)       # routed, no --dns entry
    assert ec2x.at(ACTIVATE) == OK
    assert ec2x.at('AT+QIDNSGIP=1,"www.iottest.work"') == OK
    assert ec2x.read_until(b'+QIURC: "dnsgip","106.12.79.254"\r\n', timeout=3) == \
        b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","106.12.79.254"\r\n'
    assert ec2x.at('AT+QIDNSGIP=1,"220.180.239.212"') == OK          # an IP literal: itself, TTL 0
    assert ec2x.read_until(b'"220.180.239.212"\r\n', timeout=3) == \
        b'\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","220.180.239.212"\r\n'
    assert ec2x.at('AT+QIDNSGIP=1,"svc.example"') == OK               # the address shown elsewhere
    got = ec2x.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'), timeout=3)
    shown = emulator.router.display_address("svc.example")
    assert shown.startswith("198.1") and got.endswith(f'"dnsgip","{shown}"\r\n'.encode())
    assert last_error(ec2x) == 0


def test_qidnsgip_offline_is_565(emulator, ec2x):
    assert ec2x.at(ACTIVATE) == OK
    for name in ("nowhere.example", "a..b"):        # not known; no DNS query can carry the 2nd
        assert ec2x.at(f'AT+QIDNSGIP=1,"{name}"') == OK
        assert ec2x.read_until(b'+QIURC: "dnsgip",565\r\n', timeout=3) == b'\r\n+QIURC: "dnsgip",565\r\n'


def test_qidnsgip_errors(ec2x):
    assert ec2x.at('AT+QIDNSGIP=1,"www.iottest.work"') == cme(561)   # context not active
    assert last_error(ec2x) == 561
    assert ec2x.at(ACTIVATE) == OK
    for bad in ('AT+QIDNSGIP=1', 'AT+QIDNSGIP=17,"x.example"', 'AT+QIDNSGIP=1,""',
                'AT+QIDNSGIP=1,"x",2', 'AT+QIDNSGIP=a,"x"'):
        assert ec2x.at(bad) == cme(552), bad
    assert last_error(ec2x) == 552
    assert ec2x.at("AT+QIDNSGIP=?") == b"\r\n+QIDNSGIP: (1-16),<hostname>\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CMEE=2") == OK
    assert ec2x.at('AT+QIDNSGIP=2,"x.example"') == b"\r\n+CME ERROR: open PDP context failed\r\n"
    assert ec2x.at("AT+CMEE=0") == OK
    assert ec2x.at('AT+QIDNSGIP=2,"x.example"') == b"\r\nERROR\r\n"


# -- AT+QIDNSCFG ------------------------------------------------------------------------
def test_qidnscfg_reads_the_network_servers_then_the_hosts(ec2x):
    assert ec2x.at("AT+QIDNSCFG=1") == cme(561)                       # not active: nothing to read
    assert ec2x.at(ACTIVATE) == OK
    assert ec2x.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QIDNSCFG=1,"8.8.8.8","1.1.1.1"') == OK
    assert ec2x.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"8.8.8.8","1.1.1.1"\r\n\r\nOK\r\n'
    assert ec2x.at('AT+QIDNSCFG=1,"9.9.9.9"') == OK                  # the secondary stays
    assert ec2x.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"9.9.9.9","1.1.1.1"\r\n\r\nOK\r\n'
    assert b'"9.9.9.9","1.1.1.1"' in ec2x.at("AT+CGCONTRDP=1")
    for bad in ('AT+QIDNSCFG=1,"8.8.8"', 'AT+QIDNSCFG=1,"8.8.8.8","x"', "AT+QIDNSCFG=0",
                'AT+QIDNSCFG=1,"8.8.8.8","1.1.1.1",3'):
        assert ec2x.at(bad) == cme(552), bad
    assert ec2x.at("AT+QIDNSCFG=?") == \
        b"\r\n+QIDNSCFG: (1-16),<pridnsaddr>,<secdnsaddr>\r\n\r\nOK\r\n"
    assert ec2x.at("AT+CFUN=1,1") == OK                               # not kept across a reboot
    ec2x.read_until(b"+QIND: PB DONE\r\n")
    assert ec2x.at("ATE0").endswith(OK)                               # the AT&W set has echo on
    assert ec2x.at(ACTIVATE) == OK
    assert ec2x.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n'


# -- AT+QPING ---------------------------------------------------------------------------
def test_qping_a_routed_host_answers_after_its_rtt(emulator, ec2x_on):
    host, port = ec2x_on
    emulator.router.add_dns("pinghost.example", "106.12.79.254")
    emulator.router.add_ping("pinghost.example", 35)
    assert host.at('AT+QPING=1,"pinghost.example",4,3') == OK
    assert host.quiet_for(0.2) == b""                                 # on the modem's time
    emulator.advance(port, 0.2)
    reply = b'\r\n+QPING: 0,"106.12.79.254",32,35,255\r\n'
    assert host.read_until(b"+QPING: 0,3,3,0,35,35,35\r\n", timeout=3) == reply * 3 + \
        b"\r\n+QPING: 0,3,3,0,35,35,35\r\n"
    # A routed host without a --ping entry: 20 ms, four requests by default.
    emulator.router.add_map("svc.example", 443, "127.0.0.1", 9)
    assert host.at('AT+QPING=1,"svc.example"') == OK
    emulator.advance(port, 1)
    shown = emulator.router.display_address("svc.example")
    assert host.read_until(b"+QPING: 0,4,4,0,20,20,20\r\n", timeout=3).count(
        f'+QPING: 0,"{shown}",32,20,255'.encode()) == 4


def test_qping_timeouts_are_569(emulator, ec2x_on):
    host, port = ec2x_on
    assert host.at('AT+QPING=1,"192.0.2.1",2,2') == OK                # unrouted, offline: no reply
    emulator.advance(port, 1.9)
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 2.2)
    assert host.read_until(b"+QPING: 0,2,0,2,0,0,0\r\n", timeout=3) == \
        b"\r\n+QPING: 569\r\n\r\n+QPING: 569\r\n\r\n+QPING: 0,2,0,2,0,0,0\r\n"
    emulator.router.add_ping("far.example", 3000)                     # slower than <timeout>
    assert host.at('AT+QPING=1,"far.example",2,1') == OK
    emulator.advance(port, 2)
    assert host.read_until(b"+QPING: 0,1,0,1,0,0,0\r\n", timeout=3).startswith(b"\r\n+QPING: 569\r\n")


def test_qping_errors(emulator, ec2x_on):
    host, port = ec2x_on
    assert host.at('AT+QPING=1,"nowhere.example"') == OK               # offline, unknown name
    assert host.read_until(b"+QPING: 565\r\n", timeout=3) == b"\r\n+QPING: 565\r\n"
    assert host.at('AT+QPING=2,"192.0.2.1"') == cme(561)
    assert last_error(host) == 561
    for bad in ('AT+QPING=1,"192.0.2.1",0', 'AT+QPING=1,"192.0.2.1",256', 'AT+QPING=1,"192.0.2.1",4,0',
                'AT+QPING=1,"192.0.2.1",4,11', "AT+QPING=1", 'AT+QPING=1,"192.0.2.1",4,4,1'):
        assert host.at(bad) == cme(552), bad
    assert host.at('AT+QPING=1,"192.0.2.1",1,1') == OK
    assert host.at('AT+QPING=1,"192.0.2.1"') == cme(568)               # one ping at a time
    emulator.advance(port, 1)
    host.read_until(b"+QPING: 0,1,0,1,0,0,0\r\n", timeout=3)
    assert host.at("AT+QPING=?") == b"\r\n+QPING: (1-16),<host>,(1-255),(1-10)\r\n\r\nOK\r\n"
    assert last_error(host) == 0
    # The context goes away during a run: the rest is "+QPING: 561".
    emulator.router.add_ping("slow.example", 1000)
    assert host.at('AT+QPING=1,"slow.example",4,3') == OK
    emulator.advance(port, 1)
    host.read_until(b",32,1000,255\r\n", timeout=3)
    assert host.at("AT+QIDEACT=1") == OK
    emulator.advance(port, 1)
    assert host.read_until(b"+QPING: 561\r\n", timeout=3).endswith(b"\r\n+QPING: 561\r\n")


def test_ping_option_and_config_table(tmp_path):
    args = build_parser().parse_args(["--ping", "a.example=12.5", "--ping", "10.0.0.1=3"])
    assert args.ping == ["a.example=12.5", "10.0.0.1=3"]
    router = Router(ping={"b.example": 7})
    config = tmp_path / "net.toml"
    config.write_text('[ping]\n"c.example" = 40\n')
    load_config(str(config), router)
    assert router.ping_rtt("b.example") == 7 and router.ping_rtt("C.example") == 40
    assert router.knows("c.example") and not router.knows("d.example")
    config.write_text('[ping]\n"c.example" = "fast"\n')
    with pytest.raises(Refused, match="ping"):
        load_config(str(config), router)
    code, _, err = refused("--ping", "a.example")
    assert code != 0 and "--ping" in err


# -- AT+QNTP ----------------------------------------------------------------------------
NTP_DATE = utc(2019, 6, 1, 12, 0, 0)


def test_qntp_sets_the_modem_clock(emulator, ec2x):
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert ec2x.at(ACTIVATE) == OK
        assert ec2x.at('AT+QNTP=1,"ntp.example"') == OK
        got = ec2x.read_until(re.compile(rb"\+QNTP: .*\r\n"), timeout=5)
        assert re.fullmatch(rb'\r\n\+QNTP: 0,"2019/06/01,20:00:0\d\+32"\r\n', got), got   # +08:00
        request = ntp.requests[0]
        assert len(request) == 48 and request[0] == 0x23            # LI 0, VN 4, mode 3
    assert re.fullmatch(rb'\r\n\+CCLK: "19/06/01,20:00:\d\d\+32"\r\n\r\nOK\r\n', ec2x.at("AT+CCLK?"))
    assert last_error(ec2x) == 0


def test_qntp_autosettime_0_reports_without_setting_the_clock(emulator, ec2x):
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 4123, "127.0.0.1", ntp.port)
        assert ec2x.at(ACTIVATE) == OK
        assert ec2x.at('AT+QNTP=1,"ntp.example",4123,0') == OK
        assert b'+QNTP: 0,"2019/06/01,20:00:0' in ec2x.read_until(re.compile(rb"\+QNTP: .*\r\n"), timeout=5)
    assert b'"19/06/01' not in ec2x.at("AT+CCLK?")


def test_qntp_then_a_certificate_valid_only_then_verifies(emulator, ec2x, net, pki):
    """A host syncing the clock before a TLS open with ignorelocaltime 0, as in the field."""
    old = pki.issue_window("ntp-2019", utc(2019, 1, 1), utc(2020, 1, 1))
    with TlsServer(old) as server, SntpServer(NTP_DATE) as ntp:
        net(server)
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        trust(ec2x, 0, pki.ca.cert_pem)
        cfg(ec2x, "ignorelocaltime", 0, 0)
        assert open_ssl(ec2x, 0) == 566                 # expired at the modem's clock (today)
        assert ec2x.at('AT+QNTP=1,"ntp.example"') == OK
        assert b'+QNTP: 0,"2019/06/01' in ec2x.read_until(re.compile(rb"\+QNTP: .*\r\n"), timeout=5)
        assert open_ssl(ec2x, 0) == 0                   # valid at the NTP date
        close(ec2x)


def test_qntp_errors(emulator, ec2x_on):
    host, port = ec2x_on
    assert host.at('AT+QNTP=2,"ntp.example"') == cme(561)
    assert last_error(host) == 561
    for bad in ("AT+QNTP=1", 'AT+QNTP=1,"ntp.example",0', 'AT+QNTP=1,"ntp.example",65536',
                'AT+QNTP=1,"ntp.example",123,2', 'AT+QNTP=1,""'):
        assert host.at(bad) == cme(552), bad
    assert host.at('AT+QNTP=1,"nowhere.example"') == OK                # offline: no DNS answer
    assert host.read_until(b"+QNTP: 565\r\n", timeout=3) == b"\r\n+QNTP: 565\r\n"
    with SntpServer(NTP_DATE, answer=False) as ntp:                     # a silent server
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        assert host.at("AT+QNTP?") == b'\r\n+QNTP: "ntp.example",123\r\n\r\nOK\r\n'
        assert host.at('AT+QNTP=1,"ntp.example"') == cme(568)          # one at a time
        _wait_requests(ntp, 1)
        emulator.advance(port, 124)
        _wait_requests(ntp, 25)                                         # sent again every 5 s
        assert b"QNTP" not in host.quiet_for(0.1)
        emulator.advance(port, 1)
        assert host.read_until(b"+QNTP: 569\r\n", timeout=3) == b"\r\n+QNTP: 569\r\n"
    assert host.at("AT+QNTP?") == OK
    with SntpServer(NTP_DATE, kiss=True) as ntp:                        # kiss-o'-death: not used
        emulator.router.add_map("kod.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QNTP=1,"kod.example"') == OK
        _wait_requests(ntp, 1)
        assert host.quiet_for(0.2) == b""
        emulator.advance(port, 125)
        assert host.read_until(b"+QNTP: 569\r\n", timeout=3) == b"\r\n+QNTP: 569\r\n"
    assert host.at("AT+QNTP=?") == b"\r\n+QNTP: (1-16),<server>,(1-65535),(0,1)\r\n\r\nOK\r\n"


def _wait_requests(ntp: SntpServer, n: int, timeout: float = 5) -> None:
    import time
    deadline = time.monotonic() + timeout
    while len(ntp.requests) < n:
        assert time.monotonic() < deadline, f"{len(ntp.requests)} SNTP requests of {n}"
        time.sleep(0.01)


# -- not --offline: the real resolver and sockets (loopback only) ------------------------
def test_online_the_real_resolver_a_tcp_probe_and_an_unrouted_ntp_server(tmp_path):
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host
    with BackgroundEmulator(offline=False) as emu, SntpServer(NTP_DATE) as ntp:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state")
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK) and host.at(ACTIVATE) == OK
            assert host.at('AT+QIDNSGIP=1,"localhost"') == OK         # /etc/hosts, IPv4 context
            head = host.read_until(re.compile(rb'\+QIURC: "dnsgip",\d+,\d+,\d+\r\n'), timeout=10)
            assert re.search(rb'"dnsgip",0,[1-9]\d*,600\r\n$', head), head
            host.seen(b'+QIURC: "dnsgip","127.0.0.1"\r\n', timeout=3)
            # No raw sockets: a TCP connection attempt to port 80 answers (SYN-ACK or RST).
            assert host.at('AT+QPING=1,"127.0.0.1",4,1') == OK
            got = host.read_until(re.compile(rb"\+QPING: 0,1,\d,\d,\d+,\d+,\d+\r\n"), timeout=10)
            assert re.search(rb'\+QPING: 0,"127.0.0.1",32,\d+,255\r\n', got) and \
                re.search(rb"\+QPING: 0,1,1,0,", got), got
            # An unrouted IP literal: the datagrams go there directly.
            assert host.at(f'AT+QNTP=1,"127.0.0.1",{ntp.port}') == OK
            assert b'+QNTP: 0,"2019/06/01,20:00:0' in host.read_until(re.compile(rb"\+QNTP: .*\r\n"), timeout=10)
        finally:
            host.close()


def test_an_internal_error_still_ends_each_request_with_its_result_line(emulator, ec2x_on, monkeypatch, caplog):
    """A bug inside the emulator must not leave the host waiting: 550 "unknown error"."""
    from emulator.commands import netutil

    def broken(*args, **kwargs):
        raise RuntimeError("injected")
    host, port = ec2x_on
    monkeypatch.setattr(netutil.NetUtil, "lookup", broken)
    assert host.at('AT+QIDNSGIP=1,"x.example"') == OK
    assert host.read_until(b'+QIURC: "dnsgip",550\r\n', timeout=3) == b'\r\n+QIURC: "dnsgip",550\r\n'
    monkeypatch.undo()
    monkeypatch.setattr(Router, "ping_rtt", broken)
    emulator.router.add_ping("p.example", 5)
    assert host.at('AT+QPING=1,"p.example"') == OK
    assert host.read_until(b"+QPING: 550\r\n", timeout=3) == b"\r\n+QPING: 550\r\n"
    monkeypatch.undo()
    assert host.at('AT+QPING=1,"p.example",4,1') == OK               # not stuck "busy"
    emulator.advance(port, 1)
    host.read_until(b"+QPING: 0,1,1,0,5,5,5\r\n", timeout=3)
    monkeypatch.setattr(netutil, "_valid_reply", broken)
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        assert host.read_until(b"+QNTP: 550\r\n", timeout=3) == b"\r\n+QNTP: 550\r\n"
    assert "injected" in caplog.text


def test_a_lookup_failing_after_its_answer_came_does_not_hold_the_next_ones(emulator, ec2x_on, monkeypatch):
    """An internal error after the lookup (here: the trace record) is answered 550 through
    the in-order queue: it went out beside it, the failed request stayed first in the
    queue, and every later AT+QIDNSGIP's answer waited behind it for good."""
    from emulator.modem.modem import Modem
    host, port = ec2x_on
    real = Modem.trace

    def trace(self, kind, **fields):
        if kind == "dns" and fields.get("host") == "bad.example":
            raise RuntimeError("injected")
        return real(self, kind, **fields)
    monkeypatch.setattr(Modem, "trace", trace)
    emulator.router.add_dns("bad.example", "192.0.2.7")
    assert host.at('AT+QIDNSGIP=1,"bad.example"') == OK
    assert host.read_until(b'+QIURC: "dnsgip",550\r\n', timeout=3) == b'\r\n+QIURC: "dnsgip",550\r\n'
    assert host.at('AT+QIDNSGIP=1,"9.9.9.9"') == OK
    assert host.read_until(b'"9.9.9.9"\r\n', timeout=3) == \
        b'\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","9.9.9.9"\r\n'
    assert host.at("AT+QIDEACT=1") == OK
    assert b"dnsgip" not in host.quiet_for(0.2)                   # no second result for it


def test_a_reboot_ends_requests_in_flight_without_a_word(emulator, ec2x_on):
    host, port = ec2x_on
    emulator.router.add_ping("p.example", 500)
    with SntpServer(NTP_DATE, answer=False) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert host.at('AT+QPING=1,"p.example",4,4;+QNTP=1,"ntp.example"') == OK
        _wait_requests(ntp, 1)
        assert host.at("AT+CFUN=1,1") == OK
        emulator.advance(port, 130)
        host.read_until(b"+QIND: PB DONE\r\n", timeout=3)
        assert b"QPING" not in host.quiet_for(0.2) and b"QNTP" not in host.transcript
    assert host.at("ATE0").endswith(OK) and host.at(ACTIVATE) == OK
    assert host.at('AT+QPING=1,"p.example",4,1') == OK                 # neither is "busy"
    emulator.advance(port, 1)
    host.read_until(b"+QPING: 0,1,1,0,500,500,500\r\n", timeout=3)
    assert host.at("AT+QNTP?") == OK


def test_the_trace_records_lookups_pings_syncs_and_registration(emulator, open_modem, tmp_path):
    import json
    trace = tmp_path / "trace.jsonl"
    host, port = open_modem("ec2x", manual_time=True, trace=trace)
    emulator.router.add_ping("p.example", 7)
    assert host.at(ACTIVATE + ";+CEREG=1") == OK
    assert host.at('AT+QIDNSGIP=1,"nowhere.example";+QPING=1,"p.example",4,1') == OK
    emulator.advance(port, 1)
    host.read_until(b"+QPING: 0,1,1,0,7,7,7\r\n", timeout=3)
    assert emulator.control("register", stat=2)["ok"]
    host.read_until(b"+CEREG: 2\r\n", timeout=3)
    emulator.stop()
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    kinds = {r["kind"]: r for r in records if r["kind"] in ("dns", "ping", "registration")}
    assert kinds["dns"]["code"] == 565 and kinds["ping"]["times"] == [7]
    assert kinds["registration"]["command"] == "+CEREG" and kinds["registration"]["stat"] == 2


def test_the_dns_fail_fault_fails_the_modems_own_lookups_too(emulator, ec2x_on):
    """Control op dns_fail count=K: the next K name lookups fail, the modem's own
    (AT+QIDNSGIP, AT+QPING, AT+QNTP of a name) as well as socket opens; IP literals need no
    lookup; once K are taken, names resolve again."""
    host, port = ec2x_on
    emulator.router.add_dns("known.example", "106.12.79.254")
    emulator.router.add_ping("known.example", 5)
    with SntpServer(NTP_DATE) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        assert emulator.control("dns_fail", count=3)["ok"]
        assert host.at('AT+QIDNSGIP=1,"106.12.79.254"') == OK              # a literal: no lookup
        assert host.read_until(b'"106.12.79.254"\r\n', timeout=3) == (
            b'\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","106.12.79.254"\r\n')
        assert host.at('AT+QIDNSGIP=1,"known.example"') == OK
        assert host.read_until(b'+QIURC: "dnsgip",565\r\n', timeout=3) == b'\r\n+QIURC: "dnsgip",565\r\n'
        assert host.at('AT+QPING=1,"known.example",1,1') == OK
        assert host.read_until(b"+QPING: 565\r\n", timeout=3) == b"\r\n+QPING: 565\r\n"
        assert host.at('AT+QNTP=1,"ntp.example"') == OK
        assert host.read_until(b"+QNTP: 565\r\n", timeout=3) == b"\r\n+QNTP: 565\r\n"
        assert ntp.requests == []
        assert host.at('AT+QIDNSGIP=1,"known.example"') == OK              # the count is spent
        assert host.read_until(b'"106.12.79.254"\r\n', timeout=3) == (
            b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","106.12.79.254"\r\n')
