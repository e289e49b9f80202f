"""emulator.io.network.Router: what the host is shown for a server (never the route),
--dns / [dns], and the CLI wiring."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import subprocess
import sys

import pytest

from emulator.tools.cli import Refused, build_parser, load_config
from emulator.tools.demo_peer import IOTTEST_RESPONSE
from emulator.io.network import Router, made_up_address, parse_dns
from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, first_line, start, stop

FAKE_NET = ipaddress.ip_network("198.18.0.0/15")


# -- Router.display_address / add_dns ----------------------------------------------------
def test_ip_literals_show_themselves():
    router = Router(["220.180.239.212:8010=127.0.0.1:9000", "[2001:db8::5]:443=127.0.0.1:9001"])
    assert router.display_address("220.180.239.212") == "220.180.239.212"      # routed: still itself
    assert router.display_address("[2001:db8::5]") == "2001:db8::5"
    assert router.display_address("10.0.0.9") == "10.0.0.9"


def test_dns_entry_is_shown_not_the_route():
    router = Router(["www.iottest.work:443=127.0.0.1:8443"])
    router.add_dns("WWW.IoTTest.work.", "106.12.79.254")          # case and a trailing dot don't matter
    assert router.display_address("www.iottest.work") == "106.12.79.254"
    assert router.display_address("www.IOTTEST.work") == "106.12.79.254"
    assert router.lookup("www.iottest.work", 443) == ("127.0.0.1", 8443)   # routing unchanged
    router.add_dns("www.iottest.work", "2001:0db8::0001")         # replaced, written canonically
    assert router.display_address("www.iottest.work") == "2001:db8::1"
    assert Router(dns={"a.test": "192.0.2.1"}).display_address("a.test") == "192.0.2.1"


# Was a bug, fixed (found by the ML302 wire round): a name with its root's trailing dot
# ("www.iottest.work.", absolute) was shown the name's DNS answer but not routed: the open
# failed ("not routed") where a module's resolver takes the name as the same one.
def test_a_trailing_dot_names_the_same_host_for_routes_as_for_dns():
    router = Router(["www.iottest.work:443=127.0.0.1:8443", "any.example=127.0.0.1"])
    router.add_map("Map.Example", 8883, "127.0.0.1", 9001)
    router.add_map("dotted.example.", 443, "127.0.0.1", 9002)            # a route given absolute
    assert router.lookup("dotted.example", 443) == router.lookup("DOTTED.example.", 443) == ("127.0.0.1", 9002)
    assert Router(["abs.example.:443=127.0.0.1:9003"]).lookup("abs.example", 443) == ("127.0.0.1", 9003)
    assert router.lookup("www.iottest.work.", 443) == ("127.0.0.1", 8443)
    assert router.lookup("WWW.IOTTEST.WORK.", 443) == ("127.0.0.1", 8443)
    assert router.lookup("any.example.", 7) == ("127.0.0.1", 7)
    assert router.lookup("map.example.", 8883) == ("127.0.0.1", 9001)
    assert router.lookup("www.iottest.work..", 443) is None          # not a name: stays unrouted
    assert router.lookup("www.iottest.work.", 444) is None
    assert router.display_address("www.iottest.work.") == router.display_address("www.iottest.work")
    for spec in (".:443=127.0.0.1:1", "[]:443=127.0.0.1:1"):          # the root alone names no host
        with pytest.raises(ValueError, match="no host name|empty host"):
            Router([spec])
    with pytest.raises(ValueError, match="no host name"):
        router.add_map(".", 443, "127.0.0.1", 1)


def test_an_ssl_open_of_a_name_with_a_trailing_dot_reaches_its_route(open_modem, emulator, pki):
    from emulator.testing.peers import TlsServer
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLOPEN=1,1,2,"www.iottest.work.",443,0') == b"\r\nOK\r\n"
        assert host.read_until(b"+QSSLOPEN: 2,") + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 2,0\r\n"
        assert host.send_data(2, b"dot") == b"\r\nSEND OK\r\n"
        assert host.read_until(b'"recv",2\r\n') == b'\r\n+QSSLURC: "recv",2\r\n'      # the echo
        assert host.at("AT+QSSLRECV=2,10") == b"\r\n+QSSLRECV: 3\r\ndot\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2") == b"\r\nOK\r\n"


def test_other_names_get_a_stable_made_up_address():
    router = Router(["silent.test:443=127.0.0.1:9", "other.test=127.0.0.1"])
    shown = router.display_address("silent.test")
    assert shown == "198.19.10.130"                  # SHA-256 of the name: the same in every run
    assert shown == Router().display_address("Silent.Test.") == made_up_address("silent.test")
    names = [f"host{i}.example" for i in range(200)] + ["other.test", "www.iottest.work"]
    for name in names:
        address = ipaddress.ip_address(made_up_address(name))
        assert address in FAKE_NET and 0 < int(address) % 256 < 255
        assert not address.is_loopback
    assert len({made_up_address(name) for name in names}) > 190   # spread over the range


def test_real_dns_answer_is_shown_for_unrouted_names():
    async def scenario():
        loop = asyncio.get_running_loop()
        asked = []

        async def getaddrinfo(host, port, **kwargs):
            asked.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]
        loop.getaddrinfo = getaddrinfo
        router = Router(["routed.test:443=127.0.0.1:9"])
        assert await router.resolve("real.test", 443) == ("93.184.216.34", 443)
        assert await router.resolve("routed.test", 443) == ("127.0.0.1", 9)
        assert asked == ["real.test"]
        assert router.display_address("real.test") == "93.184.216.34"
        assert router.display_address("routed.test") == made_up_address("routed.test")
        router.add_dns("real.test", "198.51.100.7")                # an entry wins
        assert router.display_address("real.test") == "198.51.100.7"
    asyncio.run(scenario())


@pytest.mark.parametrize("name, ip, message", [
    ("www.iottest.work", "106.12.79", "is not an IP address"),
    ("www.iottest.work", "localhost", "is not an IP address"),
    ("www.iottest.work", 106, "is not an IP address"),
    ("1.2.3.4", "5.6.7.8", "needs no DNS entry"),
    ("", "5.6.7.8", "empty name"),
])
def test_add_dns_refuses_bad_entries(name, ip, message):
    router = Router()
    with pytest.raises(ValueError, match=message):
        router.add_dns(name, ip)
    assert router.dns == {}


def test_parse_dns():
    assert parse_dns(" www.iottest.work = 106.12.79.254 ") == ("www.iottest.work", "106.12.79.254")
    with pytest.raises(ValueError, match="expected NAME=IP"):
        parse_dns("www.iottest.work")


# -- --config [dns] and --dns --------------------------------------------------------------
def test_config_dns_table(tmp_path):
    config = tmp_path / "net.toml"
    config.write_text('offline = true\n[routes]\n"www.iottest.work:443" = "127.0.0.1:8443"\n'
                      '[dns]\n"www.iottest.work" = "106.12.79.254"\n"b.test" = "192.0.2.9"\n')
    router = Router()
    load_config(str(config), router)
    assert router.offline and router.lookup("www.iottest.work", 443) == ("127.0.0.1", 8443)
    assert router.display_address("www.iottest.work") == "106.12.79.254"
    assert router.display_address("b.test") == "192.0.2.9"


@pytest.mark.parametrize("text, message", [
    ('[dns]\n"a.test" = "not-an-ip"\n', "dns: dns 'a.test': 'not-an-ip' is not an IP address"),
    ('[dns]\n"a.test" = 5\n', "is not an IP address"),
    ('dns = "a.test=1.2.3.4"\n', "dns: expected a table"),
    ('routes = "a.test:443=127.0.0.1:8443"\n', "routes: expected a table"),
    ('listen = 5\n', "listen: expected a table"),
    # offline inside [routes] (where the README's wording puts it) was a route named "offline"
    # to "True", and the emulator went on to the real resolver
    ('[routes]\n"a.test:443" = "127.0.0.1:8443"\noffline = true\n',
     "routes: offline is a top-level key: put offline = true before the first table"),
    ('[routes]\n"a.test" = 5\n', "routes: 'a.test': expected a string"),
    # (where a parse error is, as a profile's says: a byte order mark, a key given twice)
    ('\ufeff[dns]\n"a.test" = "192.0.2.1"\n', "(at line 1, column 1): the file begins with a byte order mark"),
    ('[dns]\n"a.test" = "192.0.2.1"\n"a.test" = "192.0.2.2"\n', ": key dns.\"a.test\" is given twice"),
])
def test_config_dns_errors_name_the_file(tmp_path, text, message):
    config = tmp_path / "net.toml"
    config.write_text(text)
    with pytest.raises(Refused) as info:
        load_config(str(config), Router())
    assert str(config) in str(info.value) and message in str(info.value)


def test_dns_option_parses_repeatedly():
    args = build_parser().parse_args(["--dns", "a.test=192.0.2.1", "--dns", "b.test=192.0.2.2"])
    assert args.dns == ["a.test=192.0.2.1", "b.test=192.0.2.2"]
    assert build_parser().parse_args([]).dns == []


def test_bad_dns_option_stops_startup(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "emulator", "--dns", "a.test=nope",
                           "--state-dir", str(tmp_path / "s")],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and proc.stdout == ""
    assert "modem-emulator: --dns: dns 'a.test': 'nope' is not an IP address" in proc.stderr


REQUEST = (b"GET https://www.iottest.work/test.html HTTP/1.1\r\n"
           b"Host: www.iottest.work\r\nConnection: keep-alive\r\n\r\n")


@pytest.mark.parametrize("extra, shown", [((), "106.12.79.254"),                        # the demo's entry
                                          (("--dns", "www.iottest.work=203.0.113.7"), "203.0.113.7")])
def test_ml302_demo_shows_the_dns_answer_not_the_loopback_route(tmp_path, extra, shown):
    """`--profile ml302 --demo`: the manual's §3 host reaches the loopback peer, and the host
    is shown the manual's DNS answer (or the --dns one, which wins over the demo's)."""
    proc = start("--profile", "ml302", "--demo", "--offline", *extra, "--state-dir", str(tmp_path / "s"))
    try:
        host = Host(first_line(proc))
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
        assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
        assert host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == b"\r\nOK\r\n"
        assert host.seen(b"\r\n+QSSLOPEN: 0,0\r\n", 15)
        assert host.send_data(0, REQUEST, fixed=False) == b"\r\nSEND OK\r\n"
        host.seen(b'\r\n+QSSLURC: "recv",1,0\r\n')
        assert host.at("AT+QSSLRECV=1,0,1460") == (
            f"\r\n+QSSLRECV: {shown}:443,TCP,{len(IOTTEST_RESPONSE)}\r\n".encode()
            + IOTTEST_RESPONSE + b"\r\n\r\nOK\r\n")
        state = host.at("AT+QSSLSTATE")
        assert f'\r\n+QSSLSTATE: 0,"TCP","{shown}",443,"CONNECTED",1\r\n'.encode() in state
        assert b"127.0.0.1" not in state
        host.close()
    finally:
        assert stop(proc) == 0
