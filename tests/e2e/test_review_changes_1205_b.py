"""An independent review of the latest fixes on main (3981a7e, 11c629c, 92b02ad, 449f1aa,
64beb04), looking for regressions around them:

- user profiles in TOML with [commands] tables after check_commands stopped taking any name for
  a generic ('*') command: the shipped ec2x.toml / ml302.toml copied verbatim still load, a
  registered non-generic variant swapped in loads, an unregistered one is refused;
- `drop` rst now sets SO_LINGER 0: on a plain TCP socket in transparent mode, on a TLS socket,
  the server still reads what the network had taken, then sees a reset; the host sees
  NO CARRIER / the "closed" URC once;
- `drop` close/rst refused for a plain UDP socket only: a DTLS (AT+QSSLOPEN with dtls 1) socket
  still takes them, and its host sees the "closed" URC;
- replay of hand-written traces (tests/e2e/test_adversarial_field_tools_fuzz.py's
  _ssl_session) after the stand-in's wait became bounded by the moment's recorded time: "t"
  going backwards, all "t" zero, `--max-gap 0`, an open the trace's end cut (the post-loop
  hold stand-in) -- each replays with no difference;
- replay of recorded sessions: a server's data after a modem timer (AT+QPING's timeout) on
  manual time; a UDP SERVICE socket that never sent; an AT+QIOPEN that AT+CFUN=1,1 in the
  same host bytes cut before its connect, then a new socket to the same server (a bug, fixed: the
  post-loop hold stand-in of 3981a7e takes the new socket's connection); a modem timer's late
  output with --max-gap (an older bug, fixed: the tail was cut to max_gap);
- a "+" the escape detector held when the host closes the port (no power lost): it goes to the
  server (92b02ad must only drop it on a restart), ATO resumes;
- `drop` rst of a listener's client: accepted, the client sees a reset; the listener refuses.

The bugs found are fixed since ("Was a bug, fixed" above their tests).
Every name dialled is routed to 127.0.0.1."""
from __future__ import annotations

import re
import socket
import ssl
import threading
import time

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile
from tests.e2e.socket_support import qiopen
from tests.e2e.test_adversarial_dtls_paths import (dtls_ready, dtls_server, one_answer,  # noqa: F401
                                                   start_open)
from tests.e2e.test_adversarial_field_tools_fuzz import _replay_many, _ssl_session, _write_trace

EC2X = (PROFILE_DIR / "ec2x.toml").read_text()


# == [commands] variant names ====================================================================
@pytest.mark.parametrize("name", ["ec2x", "ml302"])
def test_a_shipped_profile_copied_as_a_user_profile_still_loads(tmp_path, name):
    path = tmp_path / f"my-{name}.toml"
    path.write_text((PROFILE_DIR / f"{name}.toml").read_text())
    profile = load_profile(str(path))
    assert profile is not None


def test_a_registered_non_generic_variant_swapped_in_loads(tmp_path):
    """ec2x.toml with "+CGSN" = "27007" and "+CGDCONT" = "*" (variants the code has, beside
    the shipped ones): it loads."""
    path = tmp_path / "swap.toml"
    assert '"+CGSN" = "*"' in EC2X and '"+CGDCONT" = "quectel"' in EC2X
    path.write_text(EC2X.replace('"+CGSN" = "*"', '"+CGSN" = "27007"', 1)
                    .replace('"+CGDCONT" = "quectel"', '"+CGDCONT" = "*"', 1))
    assert load_profile(str(path)) is not None


@pytest.mark.parametrize("old, new, known", [
    ('"+QIOPEN" = "*"', '"+QIOPEN" = "ec2x"', "*"),
    ('"E" = "*"', '"E" = "ml302"', "*"),
    ('"+QSSLOPEN" = "quectel"', '"+QSSLOPEN" = "Quectel"', "onemo, quectel"),
])
def test_an_unregistered_variant_name_is_refused_naming_the_known_ones(tmp_path, old, new, known):
    path = tmp_path / "bad.toml"
    assert old in EC2X
    path.write_text(EC2X.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert "unknown variant" in str(info.value) and f"(known: {known})" in str(info.value), str(info.value)


def test_command_names_in_lower_case_still_load_and_answer(tmp_path, emulator, open_modem):
    """README: "`[commands]` names are case-insensitive" -- with check_commands stricter now, a
    user profile whose [commands] keys are all lower case loads, and its modem answers."""
    head, sep, table = EC2X.partition("\n[commands]\n")
    assert sep
    lines = table.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("["):
            break
        m = re.match(r'^"([^"]+)"(\s*=.*)$', line)
        if m:
            lines[i] = f'"{m.group(1).lower()}"{m.group(2)}'
    path = tmp_path / "lower.toml"
    path.write_text(head + sep + "\n".join(lines))
    assert '"+qsslopen" = "quectel"' in path.read_text()
    assert load_profile(str(path)) is not None
    host, _ = open_modem(str(path))
    assert host.at("AT+QSSLCFG=\"sslversion\",1") == b'\r\n+QSSLCFG: "sslversion",1,4\r\n\r\nOK\r\n'


# == drop rst: the server reads what the network took, then a reset ===============================
def _read_to_end(conn) -> tuple[bytes, str]:
    got = b""
    try:
        while True:
            chunk = conn.recv(100)
            if not chunk:
                return got, "FIN"
            got += chunk
    except ConnectionResetError:
        return got, "RST"
    except ssl.SSLEOFError:
        return got, "EOF"


def test_drop_rst_in_transparent_mode_the_server_reads_the_bytes_then_a_reset(emulator, ec2x_strict):
    """AT+QIOPEN access mode 2 (transparent): bytes the host wrote online, taken by the network,
    reach the server before the reset; the host sees NO CARRIER and is back in command mode."""
    host, advance, port = ec2x_strict
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    try:
        emulator.router.add_map("drop.example", 9000, "127.0.0.1", listener.getsockname()[1])
        host.write(b'AT+QIOPEN=1,0,"TCP","drop.example",9000,0,2\r')
        assert host.read_until(b"CONNECT\r\n", timeout=10).endswith(b"CONNECT\r\n")
        conn, _ = listener.accept()
        conn.settimeout(10)
        for b in b"hello":
            host.write(bytes([b]))
        emulator.wait_received(port, host.written)
        got = b""
        conn.settimeout(0.2)
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:     # the network took them (the
            advance(0.1)                                         # packing timer: modem time)
            try:
                chunk = conn.recv(100)
            except socket.timeout:
                continue
            assert chunk, got
            got += chunk
        assert got == b"hello"
        conn.settimeout(10)
        assert emulator.control("drop", socket=0, how="rst")["ok"]
        assert host.read_until(b"NO CARRIER\r\n", timeout=10).endswith(b"NO CARRIER\r\n")
        rest, how = _read_to_end(conn)
        conn.close()
        assert (got + rest, how) == (b"hello", "RST")
        assert host.at("AT") == b"\r\nOK\r\n"
    finally:
        listener.close()


def test_drop_rst_on_a_tls_socket_the_server_reads_the_plaintext_then_a_reset(emulator, ec2x_strict, pki):
    """AT+QSSLOPEN to a TLS server; SEND OK for "abc", then drop rst: the server decrypts "abc"
    and then its connection is reset; the host sees +QSSLURC: "closed",1 once."""
    host, _, _ = ec2x_strict
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = pki.server.load_args
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)
    box: dict = {}

    def serve():
        # TLS over memory BIOs on the raw socket: how the TCP connection ended (FIN or RST)
        # is the raw socket's, not hidden by the ssl module's EOF handling
        try:
            raw, _ = listener.accept()
            raw.settimeout(20)
            box["conn"] = raw
            inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = ctx.wrap_bio(inc, out, server_side=True)
            plain = b""
            done = False
            while True:
                try:
                    if not done:
                        tls.do_handshake()
                        done = True
                    while True:
                        chunk = tls.read(100)
                        if not chunk:
                            box["result"] = (plain, "close_notify")
                            return
                        plain += chunk
                except ssl.SSLWantReadError:
                    pass
                if out.pending:
                    raw.sendall(out.read())
                try:
                    data = raw.recv(4096)
                except ConnectionResetError:
                    box["result"] = (plain, "RST")
                    return
                if not data:
                    box["result"] = (plain, "FIN")
                    return
                inc.write(data)
        except Exception as exc:          # noqa: BLE001 - reported below
            box["error"] = repr(exc)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        emulator.router.add_map("tls.example", 443, "127.0.0.1", listener.getsockname()[1])
        assert host.at('AT+QSSLOPEN=1,1,1,"tls.example",443,0') == b"\r\nOK\r\n"
        assert host.read_until(b"+QSSLOPEN: 1,", timeout=20).endswith(b"+QSSLOPEN: 1,")
        assert host.read_until(b"\r\n", timeout=5) == b"0\r\n"
        host.write(b"AT+QSSLSEND=1,3\r")
        host.read_until(b"> ", timeout=10)
        host.write(b"abc")
        assert host.read_until(b"SEND OK\r\n", timeout=10) == b"\r\nSEND OK\r\n"
        assert emulator.control("drop", socket=1, how="rst")["ok"]
        assert host.read_until(b'"closed",1\r\n', timeout=10) == b'\r\n+QSSLURC: "closed",1\r\n'
        t.join(30)
        assert "error" not in box, box
        assert box.get("result") == (b"abc", "RST"), box
        assert b"closed" not in host.quiet_for(0.3)
    finally:
        listener.close()
        if "conn" in box:
            box["conn"].close()


# == drop close/rst of a DTLS socket still works ==================================================
@pytest.mark.parametrize("how", ["close", "rst"])
def test_drop_close_or_rst_of_a_dtls_socket_is_still_accepted(emulator, ec2x, net, dtls_server, how):
    """A DTLS socket (AT+QSSLOPEN with dtls 1) is an SSL socket, not a plain UDP one: drop
    close/rst ends it as a peer close would (+QSSLURC: "closed",0), as before 92b02ad."""
    server = dtls_server()
    dtls_ready(ec2x, emulator, server.address[1])
    start_open(ec2x)
    assert one_answer(ec2x) == 0
    answer = emulator.control("drop", socket=0, how=how)
    assert answer == {"ok": True}, answer
    assert ec2x.read_until(b'"closed",0\r\n', timeout=10) == b'\r\n+QSSLURC: "closed",0\r\n'
    assert ec2x.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"


# == replay of hand-written traces ================================================================
def _replay(tmp_path, items, *args):
    path = str(tmp_path / "hand.trace")
    _write_trace(path, items)
    if args:
        from tests.e2e import test_adversarial_field_tools_fuzz as fz
        import io
        import sys
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err = io.StringIO(), io.StringIO()
        try:
            rc = fz.replay_main([path, *args])
        finally:
            sys.stdout, sys.stderr = saved
        return dict(rc=rc, out=out.getvalue(), err=err.getvalue())
    result, = _replay_many([path])
    return result


def test_hand_written_session_with_time_going_backwards_replays(tmp_path):
    """The handshake and the open's answer recorded with a time before the host's last chunk
    (a clock stepped back): the stand-in's wait is not cut short by it; no difference."""
    records = _ssl_session()
    for r in records:
        if r["kind"] in ("handshake", "open_result") or (r["kind"] == "io" and "+QSSLOPEN" in r.get("data", "")):
            r["t"] = 0.0
    result = _replay(tmp_path, records)
    assert result["rc"] == 0 and "no difference" in result["out"], result


def test_hand_written_session_with_every_time_zero_replays(tmp_path):
    records = _ssl_session()
    for r in records:
        r["t"] = 0
    result = _replay(tmp_path, records)
    assert result["rc"] == 0 and "no difference" in result["out"], result


def test_hand_written_session_with_a_slow_handshake_and_max_gap_0_replays(tmp_path):
    """The server's handshake recorded 30 s after the host's last byte: with --max-gap 0 the
    replay still gets +QSSLOPEN: 1,0 (the moment's wait bounded, not skipped)."""
    records = _ssl_session()
    seen = False
    for r in records:
        if r["kind"] == "handshake":
            seen = True
        if seen:
            r["t"] = r["t"] + 30
    result = _replay(tmp_path, records, "--max-gap", "0")
    assert result["rc"] == 0 and "no difference" in result["out"], result


def test_hand_written_open_cut_by_the_traces_end_replays_with_no_difference(tmp_path):
    """The trace ends after AT+QSSLOPEN's OK (no handshake, no answer recorded): its server is
    held (the post-loop hold stand-in): no +QSSLOPEN answer comes in the replay either."""
    records = [r for r in _ssl_session() if r["kind"] not in ("handshake", "open_result")
               and not (r["kind"] == "io" and "+QSSLOPEN: 1" in r.get("data", ""))]
    result = _replay(tmp_path, records)
    assert result["rc"] == 0 and "no difference" in result["out"], result
    assert not re.search(r"QSSLOPEN: 1,\d", result["out"]), result


# == a stand-in's moment behind a modem timer, with --max-gap ====================================
def _record_ping_then_server_data(open_modem, emulator, peer_factory, path) -> None:
    """Manual time: a TCP socket in push mode; the host's last bytes are AT+QPING of an unknown
    host (--offline: no reply, "+QPING: 569" after its 15 s timeout, a timer of the modem's);
    after that URC the server sends "hi" (its push URC comes after the ping's in the recording)."""
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    peer = peer_factory()
    host, port = open_modem("ec2x", trace=str(path), manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    qiopen(host, 0, "TCP", TCP_HOST, TCP_PORT, mode=1)
    assert peer.accepted.wait(10)
    assert host.at('AT+QPING=1,"10.9.9.9",15,1') == b"\r\nOK\r\n"
    advance(16)
    got = host.read_until(b"+QPING: 569\r\n", timeout=10)
    assert got.endswith(b"\r\n+QPING: 569\r\n"), got
    host.quiet_for(0.3)
    peer.send(b"hi")
    assert host.read_until(b"hi\r\n", timeout=10).endswith(b'+QIURC: "recv",0,2\r\nhi\r\n')
    host.quiet_for(0.3)
    emulator.run(lambda: None)
    emulator.stop()


def test_a_server_step_after_a_modem_timer_replays(open_modem, emulator, peer_factory, tmp_path, capsys):
    """The control: without --max-gap the stand-in's "hi" waits for the ping's URC (its
    moment's place in the schedule is the recorded 16 s after the host's last bytes)."""
    from tests.e2e import replay_support as rs
    path = tmp_path / "ping.trace"
    _record_ping_then_server_data(open_modem, emulator, peer_factory, path)
    rs.replays(capsys, path)


# Was a bug, fixed (older than these commits: emulator/tools/trace.py _after_host / _output_tail): with --max-gap
# the wait for output after the host's last byte is cut to max_gap, as if it were a pause of the
# host's; but a modem timer (AT+QPING's timeout here; an upload's inactivity, negotiatetime) takes
# its full time in the replay: the replay stops listening 1 s after max_gap and reports the
# ping's URCs as missing ("got" ends at the ping's OK).  README: "output that came long after
# the host's last byte (an upload's inactivity timeout) is waited for".
# Was a bug, fixed (_output_tail is not shortened by --max-gap): with --max-gap a modem timer's output
# after the host's last byte was not waited for (_after_host shortened the tail).
def test_a_modem_timers_late_output_replays_with_max_gap(open_modem, emulator, tmp_path, capsys):
    from tests.e2e import replay_support as rs
    path = tmp_path / "ping5.trace"
    host, port = open_modem("ec2x", trace=str(path), manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at('AT+QPING=1,"10.9.9.9",5,1') == b"\r\nOK\r\n"
    advance(6)
    got = host.read_until(b"+QPING: 0,1,0,1,0,0,0\r\n", timeout=10)
    assert got == b"\r\n+QPING: 569\r\n\r\n+QPING: 0,1,0,1,0,0,0\r\n", got
    emulator.run(lambda: None)
    emulator.stop()
    rs.replays(capsys, path)                          # (the control: it replays without --max-gap)
    rs.replays(capsys, path, "--max-gap", "2")


# == a held "+" when the host closes the port (no power lost: 92b02ad must not take it) ===========
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_held_plus_goes_into_the_connection_when_the_host_closes_the_port(emulator, open_modem, echo, profile,
                                                                           strict_log):
    """docs/behaviour.md: when online mode ends before the guard time has told -- "a DTR drop,
    the host closing the port -- the held "+" are data and go into the connection first"; the
    connection stays open (ATO after reopening: the echo of the "+" comes)."""
    from emulator.testing.host import Host
    from tests.e2e.test_adversarial_field_tools_4 import _online_with_a_held_plus
    host, port, sid = _online_with_a_held_plus(emulator, open_modem, profile)
    host.close()
    assert echo.wait_received(3, timeout=10) == b"hi+"
    again = Host(port.path)
    try:
        emulator.run(port.port.look_for_host)
        assert again.at("AT").endswith(b"OK\r\n")
        again.write(b"ATO\r")
        got = again.read_until(b"CONNECT\r\n", timeout=10)
        assert got.endswith(b"CONNECT\r\n"), got
        assert again.read_exactly(1, timeout=10) == b"+"              # the server's echo of it
    finally:
        again.close()


# == UDP SERVICE in a replay ========================================================================
def test_a_udp_service_that_never_sent_replays_with_no_difference(open_modem, emulator, tmp_path, capsys):
    """11c629c makes every recorded UDP SERVICE *send* a replay difference; a UDP SERVICE socket
    the host opened, queried and closed without sending still replays."""
    from tests.e2e import replay_support as rs
    path = tmp_path / "udpsvc.trace"
    host, port = open_modem("ec2x", trace=str(path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at('AT+QIOPEN=1,2,"UDP SERVICE","127.0.0.1",0,3030,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 2,0\r\n", timeout=10).endswith(b"+QIOPEN: 2,0\r\n")
    assert host.at("AT+QISTATE=1,2").startswith(b'\r\n+QISTATE: 2,"UDP SERVICE"')
    assert host.at("AT+QICLOSE=2") == b"\r\nOK\r\n"
    rs.flush(emulator)
    emulator.stop()
    rs.replays(capsys, path)


# == an open a restart cut before its connect was made ==============================================
def _echo_close(conn) -> None:
    while data := conn.sock.recv(4096):
        conn.sock.sendall(data)
    conn.sock.close()


# Was a bug (a regression of 3981a7e), fixed (the restart's host bytes are looked for): scripts_of's post-loop (emulator/tools/trace.py:746-751) gives
# every TCP open with no end recorded a "hold" stand-in ("a restart took it"), without the check
# 3981a7e added for a "pdp" failure in the same host bytes as the AT+QIOPEN (opened_in): an
# AT+QIOPEN's connect starts a loop turn after its command, so AT+CFUN=1,1 written with it
# restarts the modem before any connect -- in the recording and in the replay.  The hold script
# stays first in the server's queue and ReplayPeer._serve gives it the next socket's connection:
# +QIOPEN: 1,0 never comes and AT+QISEND=1,5 answers ERROR where the recording had SEND OK.
@pytest.mark.parametrize("how", ["two lines written at once", "one command line"])
def test_an_open_a_restart_cut_before_its_connect_then_a_new_socket_replays(open_modem, emulator, tmp_path,
                                                                            capsys, how):
    """AT+QIOPEN and AT+CFUN=1,1 in the same host bytes: the restart comes before the open's
    connect (it starts a loop turn after the command), the recorded server never saw it.  After
    the boot a new socket to the same server echoes.  The trace must replay: the post-loop
    "hold" stand-in (3981a7e) must not take the new socket's connection."""
    from emulator.testing.peers import TcpServer
    from tests.e2e import replay_support as rs
    path = tmp_path / "restart-first.trace"
    with TcpServer(behave=_echo_close) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        open0 = 'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,1'
        if how == "one command line":
            host.write(open0 + ";+CFUN=1,1\r\n")
        else:
            host.write(open0 + "\r\nAT+CFUN=1,1\r\n")
        got = host.read_until(b"+QIND: PB DONE\r\n", timeout=20)
        assert b"+QIOPEN: 0" not in got, got
        host.quiet_for(0.3)
        host.write(b"ATE0\r\n")
        assert host.read_until(b"OK\r\n", timeout=10).endswith(b"OK\r\n")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,1,"TCP","tcp.example",7000,0,1') == b"\r\nOK\r\n"
        assert host.read_until(b"+QIOPEN: 1,0\r\n", timeout=10) == b"\r\n+QIOPEN: 1,0\r\n"
        rs.qisend(host, 1, b"again")
        assert host.read_until(b"again\r\n", timeout=10) == b'\r\n+QIURC: "recv",1,5\r\nagain\r\n'
        assert host.at("AT+QICLOSE=1") == b"\r\nOK\r\n"
        rs.flush(emulator)
        emulator.stop()
    assert len(server.connections) == 1                  # (the premise: socket 0 never connected)
    from emulator.tools.trace import scripts_of
    first = [s for s in scripts_of(rs.records(path)) if s.socket == 0]
    assert [s.header for s in first] == [{}]              # (no hold: the open never connected)
    rs.replays(capsys, path)


# == drop of a listener's client (a TCP connection: still accepted after 92b02ad) ===================
def test_drop_rst_of_a_listeners_client_is_accepted_and_the_client_sees_a_reset(open_modem, emulator, strict_log):
    from emulator.tools.trace import _listening
    host, port = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at('AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,8000,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 3,0\r\n", timeout=10) == b"\r\n+QIOPEN: 3,0\r\n"
    addr = emulator.run(lambda: _listening(port.modem, 3))
    client = socket.create_connection(addr, timeout=10)
    try:
        got = host.read_until(re.compile(rb'"incoming".*\r\n'), timeout=10)
        m = re.search(rb'\+QIURC: "incoming",(\d+),3,', got)
        assert m, got
        sid = int(m.group(1))
        assert emulator.control("drop", socket=sid, how="rst") == {"ok": True}
        assert host.read_until(b'"closed",%d\r\n' % sid, timeout=10) == b'\r\n+QIURC: "closed",%d\r\n' % sid
        assert _read_to_end(client) == (b"", "RST")
        answer = emulator.control("drop", socket=3, how="rst")      # the listener: no connection
        assert answer["ok"] is False, answer
    finally:
        client.close()
