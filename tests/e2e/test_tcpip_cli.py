"""--listen and the [listen] table of --config: where the CLI's TCP LISTENER / UDP
SERVICE really bind (loopback only); bad mappings are refused at start.  --latency: every
socket's link from the start."""
from __future__ import annotations

import re
import socket
import time

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer
from tests.e2e.cli_support import first_line, refused, start, stop
from tests.e2e.socket_support import free_port


def test_listen_flag_and_config_table_map_the_modules_ports(tmp_path):
    tcp_real, udp_real = free_port(), free_port(socket.SOCK_DGRAM)
    config = tmp_path / "net.toml"
    config.write_text(f'[listen]\n3030 = "127.0.0.1:{udp_real}"\n')
    proc = start("--profile", "ec2x", "--offline", "--state-dir", str(tmp_path / "state"),
                 "--listen", f"2020=127.0.0.1:{tcp_real}", "--config", str(config))
    try:
        host = Host(first_line(proc))
        assert host.at("ATE0").endswith(b"OK\r\n")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,1,"TCP LISTENER","127.0.0.1",0,2020,0') == b"\r\nOK\r\n"
        host.seen(b"+QIOPEN: 1,0\r\n")
        assert host.at('AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,3030,0') == b"\r\nOK\r\n"
        host.seen(b"+QIOPEN: 2,0\r\n")
        with socket.create_connection(("127.0.0.1", tcp_real)):
            host.seen(re.compile(rb'\+QIURC: "incoming",0,1,"127\.0\.0\.1",\d+\r\n'))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"hi", ("127.0.0.1", udp_real))
            host.seen(b'+QIURC: "recv",2\r\n')
        host.close()
    finally:
        assert stop(proc) == 0


@pytest.mark.parametrize("spec", ["2020=10.0.0.1:5000", "0=127.0.0.1:5000", "x=127.0.0.1:1", "2020"])
def test_bad_listen_is_refused(spec):
    code, _, err = refused("--profile", "ec2x", "--listen", spec)
    assert code != 0 and "--listen" in err and "Traceback" not in err


def test_router_listen_api_checks_its_input():
    from emulator.io.network import Router
    router = Router()
    router.add_listen(2020, "127.0.0.1", 5000)
    router.add_listen(3030)                                             # any free port
    assert router.listen_address(2020) == ("127.0.0.1", 5000)
    assert router.listen_address(3030) == ("127.0.0.1", 0)
    assert router.listen_address(4040) == ("127.0.0.1", 4040)          # no mapping: the port itself
    for bad in ((0, "127.0.0.1", 1), (70000, "127.0.0.1", 1), (2020, "10.0.0.1", 1), (2020, "127.0.0.1", -1),
                (True, "127.0.0.1", 1), (2020, "localhost", 1)):
        with pytest.raises(ValueError):
            router.add_listen(*bad)


def test_latency_flag_holds_each_connect_a_round_trip_and_each_packet_its_way(tmp_path):
    """--latency 150: the modem starts with the control op net's latency_ms 150, so a TCP
    open's +QIOPEN comes a round trip (300 ms) after its OK -- never in the same read, which
    drivers that read the OK and then wait for the URC need -- and an echo takes two more
    ways; a control "net" later replaces it as usual.  (Lower bounds only.)"""
    with TcpServer("echo") as server:
        proc = start("--profile", "ec2x", "--offline", "--state-dir", str(tmp_path / "state"),
                     "--route", f"echo.example:7=127.0.0.1:{server.port}", "--latency", "150",
                     "--control", str(tmp_path / "ctl"))
        try:
            host = Host(first_line(proc))
            assert host.at("ATE0").endswith(b"OK\r\n")
            assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
            start_at = time.monotonic()
            assert host.at('AT+QIOPEN=1,0,"TCP","echo.example",7,0,0') == b"\r\nOK\r\n"
            if time.monotonic() - start_at < 0.2:       # (this host was not held up 300 ms)
                assert host.pending == b""               # the URC did not come with the OK
            host.seen(b"+QIOPEN: 0,0\r\n")
            assert time.monotonic() - start_at >= 0.3
            start_at = time.monotonic()
            host.write(b"AT+QISEND=0,4\r")
            host.read_until(b"> ")
            host.write(b"ping")
            host.read_until(b"SEND OK\r\n")
            host.seen(b'+QIURC: "recv",0\r\n')
            assert time.monotonic() - start_at >= 0.3
            assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 4\r\nping\r\n\r\nOK\r\n"
            with socket.socket(socket.AF_UNIX) as control:  # a control "net" replaces it
                control.connect(str(tmp_path / "ctl"))
                control.sendall(b'{"op": "net", "latency_ms": 0}\n')
                assert b'"ok": true' in control.recv(4096)
            start_at = time.monotonic()
            host.write(b"AT+QISEND=0,4\r")
            host.read_until(b"> ")
            host.write(b"pong")
            host.read_until(b"SEND OK\r\n")
            host.seen(b'+QIURC: "recv",0\r\n')
            assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 4\r\npong\r\n\r\nOK\r\n"
            assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"
            host.close()
        finally:
            assert stop(proc) == 0


@pytest.mark.parametrize("value", ["-1", "600001", "nan", "inf", "fast", ""])
def test_bad_latency_is_refused(value):
    code, _, err = refused("--profile", "ec2x", "--latency", value)
    assert code == 2 and "--latency" in err and "Traceback" not in err
