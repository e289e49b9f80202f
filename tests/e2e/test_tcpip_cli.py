"""--listen and the [listen] table of --config: where the CLI's TCP LISTENER / UDP
SERVICE really bind (loopback only); bad mappings are refused at start."""
from __future__ import annotations

import re
import socket

import pytest

from emulator.testing.host import Host
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
