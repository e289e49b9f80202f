"""Adversarial tests of the field tools, second pass: faults in every socket state and
combined (slow link + reset, stalls + reboot), scenario triggers, the control socket's
half-closed clients, trace files recorded on user profiles / by several modems / cut or
edited, and replay of them.  Strict xfails are bugs (the reason says input, observed,
expected and where); the rest close gaps in the earlier tests."""
from __future__ import annotations

import json
import re
import socket

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.tools.control import ControlServer
from emulator.tools.trace import TraceWriter, read_trace, replay_main, show_main
from tests.e2e.cli_support import ROOT

HOST = "echo.example"           # routed to the `echo` fixture's server (tests/conftest.py)


def _open(host, client_id: int = 1, mode: int = 0, dial: str = HOST) -> None:
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{dial}",443,{mode}') == b"\r\nOK\r\n"
    host.seen(f"+QSSLOPEN: {client_id},0\r\n".encode(), timeout=3)


def _escape(emulator, port, host) -> bytes:
    """'+++' with its guard times (S12 default 1 s) on the modem's manual clock."""
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.1)
    host.write(b"+++")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.1)
    return host.read_until(b"\r\nOK\r\n", timeout=3)


def _write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# == faults combined, in every state ========================================================
def test_slow_link_then_reset_then_reopen_the_same_id_gets_no_stale_data(emulator, ec2x_on, echo):
    """The echo is on its way back through a 1 s link when the connection is reset: it is
    gone with the connection (no "recv" after "closed"), and a new connection on the same
    id never receives it."""
    host, port = ec2x_on
    _open(host, 1)
    assert emulator.control("net", latency_ms=1000) == {"ok": True}
    assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
    emulator.advance(port, 1.0)                        # the data reach the server
    echo.wait_received(5, timeout=3)
    assert host.quiet_for(0.2) == b""                  # the echo waits on the link
    assert emulator.control("drop", socket=1, how="rst") == {"ok": True}
    assert host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3) == b'\r\n+QSSLURC: "closed",1\r\n'
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    assert emulator.control("net") == {"ok": True}    # all 0: the link is clean again
    _open(host, 1)
    emulator.advance(port, 2)                          # when the stale echo would have come
    assert host.quiet_for(0.3) == b""
    (sock,) = emulator.control("state")["sockets"]
    assert (sock["id"], sock["bytes_received"], sock["unread"]) == (1, 0, 0)
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 0\r\n\r\nOK\r\n"


def test_a_stalled_transparent_open_is_error_569_and_a_reboot_abandons_another(emulator, ec2x_on, echo):
    host, port = ec2x_on
    assert host.at('AT+QSSLCFG="negotiatetime",1,20') == b"\r\nOK\r\n"
    assert emulator.control("handshake_stall", count=2) == {"ok": True}
    host.write(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,2\r')
    emulator.wait_received(port, host.written)
    echo.wait_connections(1, timeout=3)
    emulator.advance(port, 19)
    assert host.quiet_for(0.2) == b""                  # no OK, no CONNECT: the port waits
    emulator.advance(port, 1.5)
    assert host.read_until(b"\r\nERROR\r\n", timeout=3) == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 569,operation timeout\r\n\r\nOK\r\n"
    assert emulator.control("state")["sockets"] == []
    # the second stalled open: the power goes while it waits
    host.write(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,2\r')
    emulator.wait_received(port, host.written)
    echo.wait_connections(2, timeout=3)
    assert emulator.control("reboot", ms=0) == {"ok": True}
    emulator.advance(port, 25)                         # past the open's negotiatetime
    got = host.read_until(b"+QIND: PB DONE\r\n", timeout=3)
    assert got.startswith(b"\r\nRDY\r\n") and b"ERROR" not in got
    assert b"ERROR" not in host.quiet_for(0.2)
    assert host.at("AT") == b"AT\r\r\nOK\r\n"         # echo back on after the reboot
    state = emulator.control("state")
    assert state["sockets"] == [] and state["mode"] == "COMMAND"


def test_registration_lost_while_online_is_no_carrier_then_the_held_urcs(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    assert host.at("AT+CREG=1") == b"\r\nOK\r\n"
    _open(host, 1)
    host.write(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=3)
    assert emulator.control("register", stat=0) == {"ok": True}
    got = host.read_until(b'+QSSLURC: "closed",1\r\n', timeout=3)
    assert got == (b'\r\nNO CARRIER\r\n\r\n+CREG: 0\r\n\r\n+QIURC: "pdpdeact",1\r\n'
                   b'\r\n+QSSLURC: "closed",1\r\n'), got
    assert emulator.control("state")["mode"] == "COMMAND"
    assert host.at("AT+QIACT?") == b"\r\nOK\r\n"
    for cid in (1, 2):
        assert host.at(f"AT+QSSLCLOSE={cid},0") == b"\r\nOK\r\n"


# Was a bug, fixed: the control op reboot schedules the start-up URCs (modem.call_later(ms/1000, _boot_urcs))
# and nothing cancels them; a second reboot (control or AT+CFUN=1,1) before they came does not
# abandon the first boot, so the host sees the first boot's RDY... at the first boot's time, though
# the module was power-cycled again since, and then a second RDY block.
def test_a_second_reboot_abandons_the_first_boot(emulator, ec2x_on):
    host, port = ec2x_on
    assert emulator.control("reboot", ms=1000) == {"ok": True}
    emulator.advance(port, 0.5)
    assert emulator.control("reboot", ms=1000) == {"ok": True}
    emulator.advance(port, 0.6)                        # 1.1 s after the first, 0.6 s after the second
    early = host.quiet_for(0.3)
    emulator.advance(port, 0.5)
    late = host.read_until(b"RDY\r\n", timeout=5) + host.quiet_for(0.3)
    assert (early, late.count(b"RDY")) == (b"", 1), (early, late)


# Was a bug, fixed: "dns_fail": an AT+QIDNSGIP of an IP literal does not take the count (behaviour.md: "an IP
# literal needs no lookup and does not take one"), but an AT+QSSLOPEN/AT+QIOPEN of an IP literal
# takes it and fails 565 with "cannot resolve '10.1.1.1'".
def test_dns_fail_spares_an_ip_literal_open(emulator, ec2x_on, echo):
    host, _ = ec2x_on
    emulator.router.add_map("10.1.1.1", 443, "127.0.0.1", echo.address[1])
    assert emulator.control("dns_fail", count=1) == {"ok": True}
    assert host.at('AT+QSSLOPEN=1,1,1,"10.1.1.1",443,0') == b"\r\nOK\r\n"
    first = host.read_until(re.compile(rb"\+QSSLOPEN: 1,\d+\r\n"), timeout=3)
    assert host.at(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,0') == b"\r\nOK\r\n"
    second = host.read_until(re.compile(rb"\+QSSLOPEN: 2,\d+\r\n"), timeout=3)
    assert (first, second) == (b"\r\n+QSSLOPEN: 1,0\r\n", b"\r\n+QSSLOPEN: 2,565\r\n")


# == scenarios ================================================================================
def test_after_a_transparent_open_fires_when_online_mode_ends(emulator, ec2x_on, echo):
    """behaviour.md: `after` a transparent-mode AT+QSSLOPEN runs when online mode ends."""
    host, port = ec2x_on
    run = emulator.run_scenario({"step": [{"after": {"command": "+QSSLOPEN"}, "op": "urc", "text": "+AFTER: 1"}]})
    host.write(f'AT+QSSLOPEN=1,1,2,"{HOST}",443,2\r')
    host.read_until(b"\r\nCONNECT\r\n", timeout=3)
    host.write(b"+AFTER")                             # data that looks like the URC
    assert host.read_exactly(6, timeout=3) == b"+AFTER"
    assert host.quiet_for(0.2) == b"" and emulator.run(lambda: run.fired) == []
    assert _escape(emulator, port, host) == b"\r\nOK\r\n"
    assert host.read_until(b"+AFTER: 1\r\n", timeout=3) == b"\r\n+AFTER: 1\r\n"
    assert emulator.run(lambda: run.fired) == [{"step": 1, "op": "urc", "ok": True}]
    assert host.at("AT+QSSLCLOSE=2,0") == b"\r\nOK\r\n"


def test_a_when_step_on_one_ssl_open_stalls_that_open_only(emulator, ec2x_on, echo):
    """The trigger's socket is AT+QSSLOPEN's third argument (the clientID), and `when` runs
    before the handler, so the very open it names takes the fault."""
    host, port = ec2x_on
    assert host.at('AT+QSSLCFG="negotiatetime",1,20') == b"\r\nOK\r\n"
    emulator.run_scenario({"step": [{"when": {"command": "+QSSLOPEN", "socket": 3},
                                     "op": "handshake_stall", "count": 1}]})
    _open(host, 1)                                     # context 1, client 1: not the trigger's
    assert host.at(f'AT+QSSLOPEN=1,1,3,"{HOST}",443,0') == b"\r\nOK\r\n"
    emulator.wait_received(port, host.written)
    echo.wait_connections(2, timeout=3)
    assert b"QSSLOPEN" not in host.quiet_for(0.2)
    emulator.advance(port, 20.5)
    assert host.read_until(b"+QSSLOPEN: 3,569\r\n", timeout=3).endswith(b"+QSSLOPEN: 3,569\r\n")
    _open(host, 4)                                     # the stall was used once


# Was a bug, fixed: the scenario trigger's socket for AT+QIOPEN is taken from its first argument, the
# <contextID>; the socket is the second, <connectID> (AT+QIOPEN=<contextID>,<connectID>,...).
def test_a_scenario_trigger_on_a_tcp_open_names_its_connect_id(emulator, ec2x_on, tcp_echo):
    host, _ = ec2x_on
    run = emulator.run_scenario({"step": [{"when": {"command": "+QIOPEN", "socket": 2},
                                           "op": "connect_refuse", "count": 1}]})
    results = []
    for connect_id in (1, 2):
        assert host.at(f'AT+QIOPEN=1,{connect_id},"TCP","tcp.example",7000,0,0') == b"\r\nOK\r\n"
        results.append(host.read_until(re.compile(rb"\+QIOPEN: %d,\d+\r\n" % connect_id), timeout=3))
    assert results == [b"\r\n+QIOPEN: 1,0\r\n", b"\r\n+QIOPEN: 2,566\r\n"]
    assert emulator.run(lambda: run.fired) == [{"step": 1, "op": "connect_refuse", "ok": True}]


# == the control socket ========================================================================
def test_a_client_that_half_closes_after_its_requests_gets_every_answer(tmp_path):
    """A script's `printf '...' | socat - UNIX-CONNECT:` shuts its writing side after the
    last request, which may lack its newline: both requests are answered, in order."""
    path = tmp_path / "ctl.sock"
    with BackgroundEmulator(offline=True) as emu:
        emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        server = ControlServer(emu.emulator, path)
        emu.call(server.start())
        try:
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(5)
                client.connect(str(path))
                client.sendall(b'{"op": "state"}\n{"op": "dtr", "level": 1}')
                client.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := client.recv(65536):
                    data += chunk
            answers = [json.loads(line) for line in data.splitlines()]
            assert [a["ok"] for a in answers] == [True, True] and answers[1] == {"ok": True}
            assert data.endswith(b"\n") and answers[0]["profile"] == "ec2x"
        finally:
            emu.call(server.close())


# == trace and replay ============================================================================
def _custom_profile(tmp_path) -> str:
    text = (ROOT / "emulator" / "profiles" / "ec2x.toml").read_text()
    text, n = re.subn(r'^name = "ec2x"$', 'name = "acme-ec25"', text, count=1, flags=re.M)
    assert n == 1
    return _write(tmp_path, "acme-ec25.toml", text)


# Was a bug, fixed: a trace records the profile's [profile] name; replay without --profile loads that name as a
# built-in profile, and a user profile's name is not one.
def test_replay_of_a_trace_recorded_on_a_user_profile_needs_profile(open_modem, emulator, tmp_path, capsys):
    profile = _custom_profile(tmp_path)
    trace = tmp_path / "acme.trace"
    host, _ = open_modem(profile, trace=str(trace))
    assert host.at("AT+CSQ").endswith(b"OK\r\n")
    emulator.run(lambda: None)
    assert read_trace(trace)[0]["profile"] == "acme-ec25"
    assert replay_main([str(trace), "--profile", profile]) == 0       # with --profile it replays
    capsys.readouterr()
    assert replay_main([str(trace)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modem-emulator replay: ") and "acme-ec25" in err


_START = '{"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0}\n'
_AT_IN = '{"t": 0.1, "modem": 0, "kind": "io", "dir": "in", "data": "AT\\r", "in": 3, "out": 0}\n'
EDITED = {
    "start dns entry not an address": (
        '{"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "dns": {"x.example": "nowhere"}, '
        '"in": 0, "out": 0}\n' + _AT_IN),
    "start dns not a table": (
        '{"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "dns": "x", "in": 0, "out": 0}\n' + _AT_IN),
    "start profile not a name": (
        '{"t": 0, "modem": 0, "kind": "start", "profile": 7, "in": 0, "out": 0}\n' + _AT_IN),
    "io record without data": (
        _START + '{"t": 0.1, "modem": 0, "kind": "io", "dir": "in", "in": 3, "out": 0}\n'),
    "byte count not a number": (
        _START + '{"t": 0.1, "modem": 0, "kind": "io", "dir": "in", "data": "AT\\r", "in": 3, "out": "x"}\n'),
    "cmd record without answer": (
        _START + '{"t": 0.1, "modem": 0, "kind": "cmd", "line": "AT", "in": 3, "out": 0}\n' + _AT_IN),
}


# Was a bug, fixed (the same family as the fixed 'corrupted records' ones): hand-edited records whose fields
# read_trace does not check make replay die with a traceback and exit 1, which means 'a difference'.
@pytest.mark.parametrize("what", sorted(EDITED))
def test_replay_of_an_edited_record_is_exit_2(tmp_path, capsys, what):
    path = _write(tmp_path, "edited.trace", EDITED[what])
    assert replay_main([path, "--max-gap", "0"]) == 2
    assert capsys.readouterr().err.startswith("modem-emulator replay: ")


# Was a bug, fixed: a recording killed mid-line is accepted ("the last line is cut short ... left out"), but the
# replay then reports the cut-off tail as a difference: the command whose answer was being
# recorded is "not in the trace", exit 1.
def test_replay_of_an_interrupted_recording_compares_what_was_recorded(open_modem, emulator, tmp_path, capsys):
    trace = tmp_path / "full.trace"
    host, _ = open_modem("ec2x", trace=str(trace))
    for line in ("AT+CSQ", "AT+CGMM"):
        assert host.at(line).endswith(b"OK\r\n")
    emulator.run(lambda: None)
    lines = trace.read_text().splitlines(keepends=True)
    last_out = max(i for i, line in enumerate(lines) if '"dir": "out"' in line)
    cut = _write(tmp_path, "cut.trace", "".join(lines[:last_out]) + lines[last_out][:40])
    code = replay_main([cut])
    said = capsys.readouterr()
    assert "cut short" in said.err
    assert code == 0, said.out


def test_replay_of_a_recording_stopped_before_an_answer_compares_what_was_recorded(
        open_modem, emulator, tmp_path, capsys):
    """Records are written whole, so a kill -9 mostly leaves whole lines: here the trace
    ends with the host's "AT+CGMM\r", its answer never recorded.  Was a bug, fixed: replay
    said "command 3 (AT+CGMM): not in the trace" (exit 1) unless a line happened to be cut."""
    trace = tmp_path / "full.trace"
    host, _ = open_modem("ec2x", trace=str(trace))
    for line in ("AT+CGMI", "AT+CGMM"):
        assert host.at(line).endswith(b"OK\r\n")
    emulator.run(lambda: None)
    lines = trace.read_text().splitlines(keepends=True)
    sent = max(i for i, line in enumerate(lines) if '"dir": "in"' in line and "CGMM" in line)
    cut = _write(tmp_path, "cut.trace", "".join(lines[:sent + 1]))
    code = replay_main([cut])
    assert code == 0, capsys.readouterr().out


def _two_modem_trace() -> str:
    """Modem 0 has a plain TCP socket 0, modem 1 a TLS socket 0; both servers close."""
    rows = [
        {"t": 0, "modem": 0, "kind": "start", "profile": "ec2x"},
        {"t": 0, "modem": 1, "kind": "start", "profile": "ec2x"},
        {"t": 0.1, "modem": 1, "kind": "open", "socket": 0, "host": "tls.example", "port": 443, "dtls": False},
        {"t": 0.1, "modem": 0, "kind": "open", "socket": 0, "host": "tcp.example", "port": 7000, "dtls": False,
         "service": "tcpip", "type": "TCP"},
        {"t": 0.2, "modem": 1, "kind": "handshake", "socket": 0, "version": "TLSv1.2", "cipher": "X"},
        {"t": 0.2, "modem": 0, "kind": "handshake", "socket": 0, "version": "TCP", "cipher": ""},
        {"t": 0.3, "modem": 1, "kind": "peer_closed", "socket": 0, "how": "fin", "reason": "FIN from the server"},
        {"t": 0.3, "modem": 0, "kind": "peer_closed", "socket": 0, "how": "fin", "reason": "FIN from the server"},
    ]
    return "".join(json.dumps({**r, "in": 0, "out": 0}) + "\n" for r in rows)


# Was a bug, fixed: trace show keeps "which socket is a plain TCP/IP one" by socket id alone, across modems.
def test_trace_show_keeps_two_modems_sockets_apart(tmp_path, capsys):
    path = _write(tmp_path, "two.trace", _two_modem_trace())
    for argv in ([path], [path, "--modem", "1"]):
        assert show_main(argv) == 0
        out = capsys.readouterr().out
        assert re.search(r"m1 socket 0 peer closed \(fin\): FIN from the server$", out, re.M), out
        if "--modem" not in argv:
            assert re.search(r"m0 socket 0 peer closed \(FIN\)$", out, re.M), out


# Was a bug, fixed: add_modem(trace=PATH) opens its own TraceWriter per call (O_TRUNC, its own offset); two
# modems given the same path overwrite each other's lines.
def test_two_modems_traced_to_the_same_path_give_a_readable_trace(emulator, open_modem, tmp_path, capsys):
    path = tmp_path / "same.trace"
    hosts = [open_modem(profile, trace=str(path))[0] for profile in ("ec2x", "ml302")]
    for _ in range(4):
        for host in hosts:
            assert host.at("AT+CSQ").endswith(b"OK\r\n")
    emulator.run(lambda: None)
    assert show_main([str(path)]) == 0, capsys.readouterr().err
    records = read_trace(path)
    assert {r["modem"] for r in records if r["kind"] == "start"} == {0, 1}
    assert sum(1 for r in records if r["kind"] == "cmd" and r["line"] == "AT+CSQ") == 8


def test_an_ec2x_and_an_ml302_sharing_one_trace_each_replay(emulator, open_modem, echo, tmp_path, capsys):
    """Many modems, both profiles, one TraceWriter (as --count does): each modem's TLS session
    replays alone with --modem N; their sockets (both id 0, one server) do not mix."""
    path = tmp_path / "both.trace"
    writer = TraceWriter(path)
    ec2x, _ = open_modem("ec2x", trace=writer)
    ml302, _ = open_modem("ml302", trace=writer)
    assert ec2x.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert ml302.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert ml302.at("AT+CGACT=1,1").endswith(b"OK\r\n")
    assert ml302.at('AT+QSSLCFG="seclevel",0,0') == b"\r\nOK\r\n"
    _open(ec2x, 0)
    assert ml302.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == b"\r\nOK\r\n"
    ml302.seen(b"+QSSLOPEN: 0,0\r\n", timeout=3)
    assert ec2x.send_data(0, b"from the ec2x") == b"\r\nSEND OK\r\n"
    ec2x.seen(b'+QSSLURC: "recv",0\r\n', timeout=3)
    assert ml302.send_data(0, b"ml302 here", fixed=False).endswith(b"SEND OK\r\n")
    ml302.seen(b'+QSSLURC: "recv",1,0\r\n', timeout=3)
    assert ec2x.at("AT+QSSLRECV=0,100") == b"\r\n+QSSLRECV: 13\r\nfrom the ec2x\r\n\r\nOK\r\n"
    assert re.search(rb"\+QSSLRECV: [\d.]+:443,TCP,10\r\nml302 here\r\n", ml302.at("AT+QSSLRECV=1,0,1460"))
    assert ec2x.at("AT+QSSLCLOSE=0,0") == b"\r\nOK\r\n"
    ml302.write("AT+QSSLCLOSE=0\r")
    ml302.read_until(b"0,CLOSE OK\r\n", timeout=3)
    emulator.run(lambda: None)
    sent = {(r["modem"], r["data"]) for r in read_trace(path) if r["kind"] == "sent"}
    assert sent == {(0, "from the ec2x"), (1, "ml302 here")}
    capsys.readouterr()
    for n in (0, 1):
        assert replay_main([str(path), "--modem", str(n), "--max-gap", "0.2"]) == 0, capsys.readouterr().out
        assert "no difference" in capsys.readouterr().out


# Was a bug, fixed: the control op `state` lists SSL sockets and AT+QIOPEN clients but not an AT+QIOPEN
# "TCP LISTENER", which holds an id of the one pool (AT+QISTATE shows it, state 3 listening).
def test_state_lists_a_tcp_listener(emulator, ec2x_on):
    host, _ = ec2x_on
    emulator.router.add_listen(2020, "127.0.0.1", 0)
    assert host.at('AT+QIOPEN=1,2,"TCP LISTENER","127.0.0.1",0,2020,0') == b"\r\nOK\r\n"
    host.read_until(b"\r\n+QIOPEN: 2,0\r\n", timeout=3)
    assert host.at("AT+QISTATE").startswith(b'\r\n+QISTATE: 2,"TCP LISTENER",')
    sockets = emulator.control("state")["sockets"]
    assert [(s["id"], s["service_type"]) for s in sockets] == [(2, "TCP LISTENER")]
