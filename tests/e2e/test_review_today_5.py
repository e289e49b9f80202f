"""Review of the emulator changes of 7c0f325..1fcef96 (escape hold, abandoned-handshake
session forget, IPv4 name family, field-tools replay/route checks, net kbps, advance() check,
README promises): a test per defect found (each fixed since: "Was a bug, fixed"), and passing
tests where a changed behaviour had none.

* replay: a trace's "open" record whose host is no string (or whose port is a list), and a
  start record whose DNS table names an IP literal (or nothing), pass read_trace and
  scripts_of and then crash replay_records with a traceback (exit 1) -- the sibling fields
  of the "t" check (86d2d68);
* a unix socket at the --link's lock path (ENXIO) is read as "no lock can be made here"
  and the link is made unlocked -- the sibling of the EISDIR fix (1fcef96), against README's
  "a lock path that is ... not a plain file" being refused;
* Router.add_map (ModemHandle.route) checks the destination port only: a route for a dialled
  port of 70000 / -1 is taken silently, though README says route()'s port outside 0-65535 is
  ValueError (86d2d68);
* Timers.advance() refuses infinity but takes 1e300, which leaves the clock unable to count
  a 150 s timeout: every new timer fires at the next advance(0) -- the defect 0b05d22 meant
  to end;
* an abandoned handshake that offered NO session still discards the cache entry another
  socket saved meanwhile (Resumption.forget drops the key, whatever this handshake offered):
  docs/behaviour.md says it forgets "the session it offered" (9a58971);
* passing: a DTLS open (open_udp in SslSocket._open) to a name answering ::1 first reaches the
  IPv4 server on an IPv4 context (3e0267e changed that call, tested for TCP/UDP/TLS only).
"""
from __future__ import annotations

import io
import json
import re
import socket
from contextlib import redirect_stderr, redirect_stdout

import pytest

from emulator.io.network import Router
from emulator.io.transport import LinkError, make_link, remove_link
from emulator.modem.timers import Timers
from emulator.testing.peers import TcpServer, TlsServer, UdpEchoServer
from emulator.tools.trace import replay_main
from tests.e2e.ssl_options_support import HOST, PORT, close, open_ssl
from tests.e2e.socket_support import answer_ipv6_first

OK = b"\r\nOK\r\n"


# ---------------------------------------------------------------------------------------
# replay: fields of a record that crash replay_records

def _replay(tmp_path, records: list[dict]) -> tuple[int, str]:
    path = tmp_path / "damaged.trace"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path), "--max-gap", "0"])
    return rc, err.getvalue()


START = {"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0}


def _opened(host, port) -> list[dict]:
    return [START,
            {"t": 0.1, "modem": 0, "kind": "open", "socket": 0, "host": host, "port": port},
            {"t": 0.2, "modem": 0, "kind": "handshake", "socket": 0, "version": "TLSv1.2",
             "cipher": "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256"}]


# Was a bug, fixed (each): _record_problem never checked an "open" record's host and port, nor
# _start_problem the DNS table's names, so replay_records crashed on them (host.lower() on a
# number, a list as a dict key, add_dns's ValueError for an IP or an empty name): a
# traceback, exit 1.  Both now say what is wrong: exit 2 naming the line.
@pytest.mark.parametrize("records", [
    pytest.param(_opened(5, 443), id="open-host-not-a-string"),
    pytest.param(_opened("a.example", [443]), id="open-port-a-list"),
    pytest.param([dict(START, dns={"1.2.3.4": "5.6.7.8"})], id="dns-names-an-ip"),
    pytest.param([dict(START, dns={"": "5.6.7.8"})], id="dns-empty-name"),
])
def test_replay_of_a_record_it_cannot_use_is_exit_2_naming_the_line(tmp_path, records):
    """docs/behaviour.md: "A damaged record (a field replay needs missing or of the wrong
    type ...) is exit 2 naming the line"."""
    rc, err = _replay(tmp_path, records)
    assert rc == 2, err
    assert re.search(r"damaged\.trace:\d+: not a trace record", err), err


# ---------------------------------------------------------------------------------------
# the --link's lock: a path that is no plain file

# Was a bug, fixed: a unix socket at the lock path (ENXIO) was read as "no lock can be made here".
def test_a_unix_socket_at_the_link_lock_path_is_refused(tmp_path):
    link = tmp_path / "modem"
    planted = socket.socket(socket.AF_UNIX)
    planted.bind(str(tmp_path / ".modem.lock"))
    lock = None
    try:
        with pytest.raises(LinkError, match="not a plain file"):
            lock = make_link(link, "/dev/pts/999999")
    finally:
        planted.close()
        if link.is_symlink():
            remove_link(link, "/dev/pts/999999", lock)
    assert not link.is_symlink()


# ---------------------------------------------------------------------------------------
# route(): the dialled port

# Was a bug, fixed: Router.add_map checked the destination port only.
@pytest.mark.parametrize("dialled", [70000, -1])
def test_a_route_for_a_dialled_port_no_socket_can_have_is_refused(dialled):
    with pytest.raises(ValueError):
        Router().add_map("collector.example", dialled, "127.0.0.1", 9000)


# ---------------------------------------------------------------------------------------
# manual time: a span the clock cannot count past

# Was a bug, fixed: advance(1e300) was taken; every new timer then fired at the next advance(0).
def test_advance_refuses_a_span_the_clock_cannot_count_past():
    timers = Timers(None, manual=True)
    with pytest.raises(ValueError, match="0..1e"):
        timers.advance(1e300)                 # refused: the clock stays where it was
    timers.advance(1e9)                       # (the bound itself is taken)
    fired = []
    timers.call_later(150, fired.append, "150 s timeout")
    timers.advance(0)
    assert fired == []


# ---------------------------------------------------------------------------------------
# session cache: an abandoned handshake that offered nothing

@pytest.mark.needs_native
# Was a bug, fixed: Resumption.forget dropped the cache key whatever this handshake offered.
def test_an_abandoned_handshake_that_offered_nothing_keeps_another_sockets_session(ec2x, net, pki):
    with TlsServer(pki.server) as server, TcpServer("sink") as sink:
        net(sink)                               # HOST:PORT swallows socket 1's ClientHello
        assert ec2x.at(f'AT+QSSLOPEN=1,0,1,"{HOST}",{PORT}') == OK     # handshaking, no session offered
        net(server)
        assert open_ssl(ec2x, 0, client_id=0) == 0                     # full handshake: session saved
        server.wait_handshake()
        close(ec2x, 0)
        close(ec2x, 1)                          # socket 1's handshake abandoned
        assert open_ssl(ec2x, 0, client_id=2) == 0
        server.wait_handshake()
        close(ec2x, 2)
        assert [c.session_reused for c in server.connections] == [False, True]


# ---------------------------------------------------------------------------------------
# IPv4 family: the DTLS open (passing)

def test_a_dtls_open_to_a_name_answering_ipv6_first_goes_over_ipv4(monkeypatch, tmp_path, strict_log):
    """3e0267e: SslSocket._open's open_udp (settings.dtls) takes the context's family too; the
    resolver (patched) answers ::1 first, the DTLS server listens on 127.0.0.1 only: the
    ClientHello (a DTLS handshake record, content type 22) must reach it."""
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host

    answer_ipv6_first(monkeypatch, "dual.example")
    with BackgroundEmulator(offline=False) as emu, UdpEchoServer(echo=False) as server:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            assert host.at("ATE0").endswith(OK)
            assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert host.at('AT+QSSLCFG="dtls",1,1') == OK
            assert host.at(f'AT+QSSLOPEN=1,1,0,"dual.example",{server.port},0') == OK
            (sender, hello), = server.wait_datagrams(1, timeout=5)
            assert sender[0] == "127.0.0.1" and hello[:1] == b"\x16", (sender, hello[:16])
            assert host.at("AT+QSSLCLOSE=0") == OK
        finally:
            host.close()
