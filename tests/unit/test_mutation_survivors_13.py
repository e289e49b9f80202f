"""Tests from a manual mutation-testing pass over the code changed in 103d93c..3f4d77c:
emulator/io/network.py (name_key, routes, reset_on_close), emulator/tools/trace.py (replay:
stand-ins, hold rules, schedule / --max-gap waits, the plain-TCP header), emulator/tools/
scenario.py (step checks against the profile), tls_engine/config.py (client key password,
the configuration cache key, the PSK limit), emulator/commands/ssl_ec2x.py ("clientkey"
<key_pwd>), and the same commits' logsafe / control / cli / interpreter / session changes.
Each test pins a behaviour a small change (the mutant named in its docstring) left the
existing tests passing on; expected values come from README.md, docs/behaviour.md and the
modules' docstrings, not from the emulator's output.  Hosts end their lines as the session
began (CR), typing byte by byte where it matters; every name the emulator dials is routed to
127.0.0.1, and local ports are free ones.

Mutants applied: 62.  Killed by existing tests: 46.  Killed by the tests below: 9.  Not
killed, no test (equivalent in practice, or no documented expectation): 7.

Killed by existing tests -- network: name_key without its IP-literal check, its lower(), its
bracket strip; parse_route / add_map without the empty-key refusal; lookup, add_map and
parse_route without name_key; reset_on_close with `!= SOCK_STREAM`, SO_LINGER (0,0); drop rst
without reset_on_close.  trace: can_hold False for TCP; the "pdp" hold without its same-host-
bytes exception; the cut-off hold without `not answered` and with any later restart; _wait_host
without the schedule extension, without the handshake count; moment() counting its own
handshake; the header's LF not taken back from AT+QGDCNT; a listener's client given a
ReplayPlainSession; the anchor never set; _output_tail shortened by --max-gap; ModemTrace not
counting handshakes; stand-ins grouped by host.lower(); a plain connect's head_at unset.
scenario: socket range `<=`; the trigger's socket unchecked; the last PDP id excluded; "slow"
unchecked; `step = []` accepted; every step judged by modem 0's profile; the cid check never
run.  config / ssl_ec2x / context: the password out of _config_key; the password never
passed; no retry for a clear key (test_ssl_options_verify); a 32-byte PSK refused; the PSK
limit dropped; the no-password error kind swapped; <key_pwd> taken for every path option;
4 parameters on every profile; a 3-parameter write keeping the old password
(test_ssl_options_verify).  Also: logsafe redacting from the 4th clientkey parameter; DTLS
silence taken as handshake_failed (session.py); drop close of a plain "UDP" socket allowed;
a reboot releasing the held "+"; a regular file at the --control path accepted.

Not killed, no test:
- T2 Script.can_hold always true: UDP and TCP INCOMING scripts never reach a hold that
  matters -- a UDP open is answered at once (its "hold" stand-in would never be asked for),
  a listener's client is played by _client whatever its header.
- T4 the close rule without `not (s.plain and s.answered)`: an answered failed AT+QIOPEN
  frees its connectID (AT+QICLOSE then answers ERROR and writes no "close" record), so no
  trace reaches it.
- T9 _scheduled ignoring --max-gap: it only lengthens how long a stand-in waits for a
  moment the replay never reaches; the host side's own tail wait (_output_tail, not
  shortened) ends at about the same time, so no host-visible difference without timing.
- T22 _RESTART without AT+CFUN=4: an AT+QIOPEN with AT+CFUN=4 in its host bytes is
  answered +QIOPEN: <id>,570 (an open_result, tried), so the cut-off rule never looks at
  the restarts for it.
- T25 ReplayPlainSession dropping bytes after the header line in the same read: the next
  step's moment always includes the modem's +QIOPEN: <id>,0 output, which the header
  causes, so nothing follows the header in the same read (a server greeting at accept was
  tried: it replays either way).
- S5 SslContext.reset keeping key_password: unobservable through AT commands -- the default
  clientkey path is empty after a reboot and every "clientkey" write sets the password.
- N11 _dns_key without strip(): only names with surrounding spaces differ; no document
  says what those are.
Killed by the tests below: N1, N9, R2, SC3, L2, T17, T19, X1, X4 (see each docstring).
No emulator bug was found: none of the survivors showed a behaviour that contradicts the
documents."""
from __future__ import annotations

import re
import socket

import pytest

from emulator.io.network import Router
from emulator.testing.peers import TcpServer
from tests.e2e import replay_support as rs
from tests.e2e.socket_support import free_port, qiopen

OK = b"\r\nOK\r\n"


# -- emulator/io/network.py: routes ---------------------------------------------------------------
def test_a_name_with_two_trailing_dots_is_not_the_route_of_the_one_dot_spelling():
    """Mutant N1 (name_key without `not key.endswith("..")`: "x.." loses one dot and becomes
    the key "x.").  docs/behaviour.md (Routing): one root dot only -- "x.example.." has an
    empty label, it is no name; "10.0.0.1." is neither that address nor a name.  So a dialled
    "10.0.0.1.." is not the route given for "10.0.0.1." (nor for 10.0.0.1), and the two-dot
    spelling of a name matches no route of the name."""
    router = Router(["10.0.0.1.:443=127.0.0.1:1001", "10.0.0.1:443=127.0.0.1:1002",
                     "b.example:443=127.0.0.1:1003"])
    assert router.lookup("10.0.0.1.", 443) == ("127.0.0.1", 1001)
    assert router.lookup("10.0.0.1", 443) == ("127.0.0.1", 1002)
    assert router.lookup("10.0.0.1..", 443) is None
    assert router.lookup("b.example..", 443) is None
    assert router.lookup("B.Example.", 443) == ("127.0.0.1", 1003)


def test_a_route_for_the_dialled_port_wins_over_the_hosts_any_port_route():
    """Mutant N9 (Router.lookup trying the HOST=ADDR any-port route before HOST:PORT=ADDR:PORT).
    README --route: HOST:PORT=ADDR:PORT maps what the host dials to where the emulator
    connects; "HOST=ADDR" is any port (kept).  With both for one host, the port the host
    dialled has its own route: the any-port one is for the other ports (the more specific
    entry wins, as in any routing table), in whichever order they were given."""
    for specs in (["a.example=127.0.0.2", "a.example:8883=127.0.0.1:9001"],
                  ["a.example:8883=127.0.0.1:9001", "a.example=127.0.0.2"]):
        router = Router(specs)
        assert router.lookup("a.example", 8883) == ("127.0.0.1", 9001), specs
        assert router.lookup("A.example.", 443) == ("127.0.0.2", 443), specs
    router = Router()
    router.add_map("m.example", 1883, "127.0.0.1", 9002)
    router.add("m.example=127.0.0.3")
    assert router.lookup("m.example", 1883) == ("127.0.0.1", 9002)
    assert router.lookup("m.example", 1884) == ("127.0.0.3", 1884)


# -- drop close / rst: what the server sees -------------------------------------------------------
def _drop_seen_by_the_server(emulator, host, how: str) -> tuple[bytes, str]:
    """A TCP socket 0 to a raw loopback server; "abc" sent (typed byte by byte) and taken
    (SEND OK), then the control API's drop `how`: (what the server read, how its
    connection ended: "FIN" or "RST")."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    try:
        emulator.router.add_map("drop13.example", 9000, "127.0.0.1", listener.getsockname()[1])
        qiopen(host, 0, "TCP", "drop13.example", 9000)
        conn, _ = listener.accept()
        conn.settimeout(30)
        for b in b"AT+QISEND=0,3\r":
            host.write(bytes([b]))
        host.read_until(b"> ")
        for b in b"abc":
            host.write(bytes([b]))
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert emulator.control("drop", socket=0, how=how) == {"ok": True}
        assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
        got = b""
        try:
            while True:
                chunk = conn.recv(7)
                if not chunk:
                    return got, "FIN"
                got += chunk
        except ConnectionResetError:
            return got, "RST"
        finally:
            conn.close()
    finally:
        listener.close()


def test_drop_close_ends_the_servers_connection_with_a_fin_not_a_reset(emulator, ec2x_strict):
    """Mutant R2 (SslSocket.drop calling reset_on_close for "close" as for "rst").  The
    control API has two ways a connection ends, `close | rst` (README "Make the modem
    misbehave"); SslSocket.drop: "close" the connection is ended (FIN), "rst" it is reset.
    The server, after the bytes SEND OK accepted (docs/behaviour.md Faults), reads an
    orderly end for close -- a reset only for rst."""
    host, _, _ = ec2x_strict
    assert _drop_seen_by_the_server(emulator, host, "close") == (b"abc", "FIN")
    assert host.at("AT+QICLOSE=0") == OK


# -- emulator/tools/trace.py: replay stand-ins ----------------------------------------------------
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


def test_a_udp_service_that_sent_a_datagram_is_reported_as_a_replay_difference(
        open_modem, emulator, tmp_path, capsys):
    """Mutant T17 (ReplayPeer.start without its UDP SERVICE check: a recorded UDP SERVICE's
    sends silently not replayed).  README (replay): "A UDP SERVICE is not replayed (its first
    send makes replay report a difference)".  A UDP SERVICE here sends one datagram to a
    loopback peer (AT+QISEND=<id>,<len>,"<ip>",<port>, typed byte by byte): the replay of
    that trace must not say "no difference" -- it exits non-zero naming the UDP SERVICE."""
    path = tmp_path / "udpsvc-sent.trace"
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(30)
    try:
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        local = free_port(socket.SOCK_DGRAM)          # (a port nobody else binds)
        assert host.at(f'AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,{local},0') == OK
        assert host.read_until(b"+QIOPEN: 2,0\r\n").endswith(b"+QIOPEN: 2,0\r\n")
        for b in f'AT+QISEND=2,3,"127.0.0.1",{peer.getsockname()[1]}\r'.encode():
            host.write(bytes([b]))
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"udp")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        data, _ = peer.recvfrom(100)
        assert data == b"udp"                       # (the premise: it really left)
        assert host.at("AT+QICLOSE=2") == OK
        rs.flush(emulator)
        emulator.stop()
    finally:
        peer.close()
    code, out = rs.replay(capsys, path)
    assert code != 0 and "no difference" not in out, out
    assert "UDP SERVICE" in out, out


# -- emulator/tools/scenario.py: steps checked against the modem's profile -------------------------
def test_a_pdp_deact_step_of_the_profiles_first_context_runs_and_one_below_it_is_refused(emulator, ec2x_on):
    """Mutant SC3 (_profile_problem's `first <= cid` as `first < cid`: the profile's first PDP
    context refused).  The EC2x profile's contexts are 1-16 (pdp.first_id / last_id); a step
    is refused at start-up only when it "could never run" (scenario.py, Scenario.check).  So
    a step deactivating context 1 -- the one every driver activates -- starts and fires (the
    README's `{"op": "pdp_deact", "cid": 1}`: +QIURC: "pdpdeact",1), and cid 0 is refused
    naming the key."""
    from emulator.tools.scenario import ScenarioError
    host, port = ec2x_on
    with pytest.raises(ScenarioError, match=r"step 1: key cid: 0 is not a PDP context"):
        emulator.run_scenario({"step": [{"at": 0, "op": "pdp_deact", "cid": 0}]})
    emulator.run_scenario({"step": [{"after": {"command": "+QIACT", "kind": "read"}, "op": "pdp_deact", "cid": 1}]})
    assert host.at("AT+QIACT?").startswith(b"\r\n+QIACT: 1,1,")
    assert host.read_until(b'"pdpdeact",1\r\n') == b'\r\n+QIURC: "pdpdeact",1\r\n'
    assert host.at("AT+QIACT?") == OK


# -- emulator/logsafe.py: a refused clientkey line -------------------------------------------------
def test_a_refused_clientkey_line_is_logged_with_its_path_and_the_password_redacted(ec2x, caplog):
    """Mutant L2 (logsafe's clientkey form redacting from the 3rd parameter on: the path
    hidden too).  docs/behaviour.md (Logs and secrets): a "clientkey" line with its <key_pwd>
    is logged as `AT+QSSLCFG="clientkey",<ctx>,<path>,<redacted>` -- the path stays (it is
    what the reader of the log needs), the password never shows."""
    import logging
    caplog.set_level(logging.DEBUG)
    assert ec2x.at('AT+QSSLCFG="clientkey",1,"UFS:h13.key","H13-Pw-x",7') == b"\r\nERROR\r\n"
    lines = [r.getMessage() for r in caplog.records if "clientkey" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    assert all("H13-Pw-x" not in line for line in lines), lines
    assert any(re.search(r'clientkey"?,1,"UFS:h13\.key",<redacted>', line) for line in lines), lines


# -- emulator/tools/control.py: drop of a UDP SERVICE ----------------------------------------------
@pytest.mark.parametrize("how", ["close", "rst"])
def test_drop_close_or_rst_of_a_udp_service_is_refused_and_it_still_sends(emulator, ec2x_on, how, strict_log):
    """Mutant X1 (control drop's UDP check naming "UDP" alone: a UDP SERVICE "closed" by a
    fault).  docs/behaviour.md (Faults): 'A plain UDP socket (AT+QIOPEN "UDP" / "UDP
    SERVICE") has no connection a network could close or reset: close/rst are refused
    there (`blackhole` works)'.  So the op answers ok false naming UDP, the host sees no
    "closed", and the service still sends (SEND OK, the datagram arrives)."""
    host, _ = ec2x_on
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(30)
    try:
        local = free_port(socket.SOCK_DGRAM)
        assert host.at(f'AT+QIOPEN=1,3,"UDP SERVICE","127.0.0.1",0,{local},0') == OK
        assert host.read_until(b"+QIOPEN: 3,0\r\n").endswith(b"+QIOPEN: 3,0\r\n")
        answer = emulator.control("drop", socket=3, how=how)
        assert answer["ok"] is False and "UDP" in answer["error"], answer
        assert host.quiet_for(0.3) == b""
        assert host.at("AT+QISTATE=1,3").startswith(b'\r\n+QISTATE: 3,"UDP SERVICE"')
        for b in f'AT+QISEND=3,2,"127.0.0.1",{peer.getsockname()[1]}\r'.encode():
            host.write(bytes([b]))
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(b"ok")
        assert host.read_until(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert peer.recvfrom(100)[0] == b"ok"
        assert emulator.control("drop", socket=3, how="blackhole") == {"ok": True}
        assert host.at("AT+QICLOSE=3") == OK
    finally:
        peer.close()


# -- emulator/tools/cli.py: --control path length --------------------------------------------------
def test_a_control_path_of_107_bytes_serves_and_one_of_108_is_refused(tmp_path):
    """Mutant X4 (check_control_path's `> UNIX_PATH_MAX` as `>=`).  A unix socket's sun_path
    holds 108 bytes on Linux, its NUL included (unix(7)): a 107-byte --control path can be
    bound and must serve (README: --control PATH serves a unix socket); 108 bytes can never
    be one, a refused argument (exit 2, one line naming the path)."""
    import json
    import tempfile
    from tests.e2e.cli_support import start, stop
    base = tempfile.mkdtemp(prefix="h13-", dir="/tmp")
    try:
        fits = f"{base}/" + "c" * (107 - len(base) - 1)
        too_long = fits + "d"
        assert len(fits.encode()) == 107
        proc = start("--control", fits, "--state-dir", str(tmp_path / "s1"), "--offline")
        try:
            line = proc.stdout.readline().strip()
            assert line, proc.stderr.read() if proc.poll() is not None else "no device path"
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(30)
                c.connect(fits)
                c.sendall(json.dumps({"op": "state"}).encode() + b"\n")
                assert json.loads(c.makefile("rb").readline())["ok"] is True
        finally:
            assert stop(proc) == 0
        proc = start("--control", too_long, "--state-dir", str(tmp_path / "s2"), "--offline")
        try:
            assert proc.stdout.readline().strip() == ""
            assert proc.wait(30) == 2
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert len(err.strip().splitlines()) == 1 and too_long in err, err
    finally:
        import shutil
        shutil.rmtree(base, ignore_errors=True)


# -- emulator/tools/trace.py: a stand-in ends the connection as the recorded server did ------------
def _echo_then_reset(conn) -> None:
    """TcpServer behaviour: echo one chunk, then reset the connection (RST)."""
    data = conn.sock.recv(4096)
    conn.sock.sendall(data)
    conn.reset()


def test_a_server_reset_is_replayed_as_a_reset(open_modem, emulator, tmp_path, capsys, caplog):
    """Mutant T19 (ReplayPeer._play ending an "end rst" step without reset_on_close: the
    stand-in closes with a FIN).  README (Record, read, replay): the trace records each peer
    close as close_notify / FIN / RST, and replay "stands in for every server" with what it
    recorded; docs/behaviour.md (Peer close) has the modem log how the peer closed.  A server
    that echoes "boom" then resets: the recording's modem logs "connection reset by peer
    (RST)", and so must the replay's modem -- its stand-in resets as the server did (and the
    host's bytes replay with no difference)."""
    import logging
    path = tmp_path / "rst.trace"
    with TcpServer(behave=_echo_then_reset) as server:
        emulator.router.add_map("rst13.example", 7000, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","rst13.example",7000,0,1') == OK
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"boom")
        assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "recv",0,4\r\nboom\r\n\r\n+QIURC: "closed",0\r\n'
        assert host.at("AT+QICLOSE=0") == OK
        rs.flush(emulator)
        emulator.stop()
    assert [r["how"] for r in rs.records(path) if r["kind"] == "peer_closed"] == ["rst"]
    caplog.clear()
    caplog.set_level(logging.INFO)
    rs.replays(capsys, path)
    closes = [r.getMessage() for r in caplog.records if "peer" in r.getMessage() or "RST" in r.getMessage()]
    assert any("connection reset by peer (RST)" in m for m in closes), closes
