"""Review of commit f8aa734 (emulator/tools/trace.py ReplayPeer): what the modem sends beyond a
socket's recorded sends is a difference ("socket N sent ... beyond the recording"; a TCP
stand-in's read after its last step, _UdpStandIn.played/_beyond for datagrams); a last send
made only in part is named by what came (`_read_into`, `came`); close() gives the stand-ins
50 ms for bytes already sent; an interrupted recording (`complete` False) keeps the prefix rule.

Sessions are recorded through the pty (manual time, loopback peers) and replayed
(`replay_main([path])`), see replay_support.py.

Covered:
* no false difference: a transparent socket's last bytes sent by the recording (transwaittm
  timer ran), SSL and plain; a listener's incoming client getting the last send; an
  interrupted trace (its last line cut) whose modem sends more than it holds;
* differences named: a listener's client and an SSL socket whose modem sends more than the
  recording at the end (the last "sent" record edited shorter);
* a recording that ends (its stop record, or a kill -9: no stop record) while the modem still
  holds transparent-mode bytes -- transwaittm not yet run out, or a "+++" whose guard time had
  not passed: the recording's modem never sent them (no "sent" record).

Bugs found (were strict xfails; fixed: ReplayPeer.host_done before the port closes, close()'s
grace plus the links' latency, _read_into keeping what came before a reset):
* such a recording now replays as "socket 0 sent 'held' beyond the recording" / "sent '+++'
  beyond the recording" (exit 1): replay_records closes the serial port (ser.close(), a
  hang-up: Interpreter._hangup releases what the escape detector held and ends online mode,
  which sends what transwaittm held) BEFORE peer.close(), and a stand-in now names what
  comes then.  Before f8aa734 the stand-in dropped it (no difference, as the recording);
* (left, older) a trace recorded under a `net` latency over ~1 s, replayed with its
  scenario: "never sent" (close() waits a fixed 1 s for pending expects);
* (left) a last send made in part, then reset by the scenario (drop rst): never named --
  the stand-in's StreamReader raises ConnectionResetError before the bytes it holds.
"""
from __future__ import annotations

import re
import socket

import pytest

from emulator.testing.peers import TcpServer
from emulator.tools.trace import _listening
from tests.e2e import replay_support as rs
from tests.e2e.replay_support import traced_modem as _modem, finish as _finish

OK = b"\r\nOK\r\n"
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
NAME = "www.iottest.work"
# HELD (was a bug, fixed): a recording ending while the modem holds transparent-mode bytes
# (transwaittm or a '+++' in its guard time) replayed as 'sent ... beyond the recording':
# trace.py replay_records closes the serial port (a hang-up: Interpreter._hangup sends what
# online mode held) before peer.close(), and ReplayPeer._play names bytes after the last step.


def _without_stop(tmp_path, path):
    """The same trace as a kill -9 leaves it: whole lines, no stop record."""
    return rs.save(tmp_path, "nostop.trace", [r for r in rs.records(path) if r["kind"] != "stop"])


def _sent(path) -> list[str]:
    return [r["data"] for r in rs.records(path) if r["kind"] == "sent"]


def _first_difference(out: str) -> str:
    m = re.search(r"first difference: (.*)", out)
    assert m, out
    return m.group(1)


# -- bytes the modem held when the recording ended: no false difference ------------------------------
def _held_session(open_modem, emulator, path, how: str, collect) -> None:
    """Transparent AT+QIOPEN; "first" sent by the recording's modem; then, as the recording
    ends: "held" behind transwaittm 20 (2 s, 0.5 s passed), or "+++" 0.3 s into its guard time."""
    with TcpServer(behave=collect) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        if how == "transwaittm":
            assert host.at('AT+QICFG="transwaittm",20') == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
        host.write(b"first")
        advance(2.5)
        collect.wait_for(b"first")
        if how == "transwaittm":
            host.write(b"held")
            advance(0.5)
        else:
            host.write(b"+++")
            advance(0.3)
        _finish(emulator)


@pytest.mark.parametrize("stop", [True, False], ids=["stop-record", "killed"])
@pytest.mark.parametrize("how", ["transwaittm", "escape"])
def test_the_recordings_own_transparent_sends_replay(open_modem, emulator, tmp_path, capsys, how, stop):
    """Guard: the same session, the held bytes (or the escape) given their time before the
    end: the recording has the send, the replay too -- no difference."""
    path = tmp_path / "flushed.trace"
    collect = rs.Collect()
    with TcpServer(behave=collect) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        if how == "transwaittm":
            assert host.at('AT+QICFG="transwaittm",20') == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
        host.write(b"first")
        advance(2.5)
        collect.wait_for(b"first")
        host.write(b"then")
        advance(2.5)
        collect.wait_for(b"then")
        if how == "escape":
            host.write(b"+++")
            advance(1.2)
            assert host.read_until(OK) == OK
        _finish(emulator)
    assert _sent(path) == ["first", "then"]
    rs.replays(capsys, path if stop else _without_stop(tmp_path, path))


# Was a bug (HELD), fixed: what comes after ReplayPeer.host_done is the hang-up's
@pytest.mark.parametrize("stop", [True, False], ids=["stop-record", "killed"])
@pytest.mark.parametrize("how", ["transwaittm", "escape"])
def test_bytes_the_modem_still_held_when_the_recording_ended_are_no_difference(
        open_modem, emulator, tmp_path, capsys, how, stop):
    """The recording's modem never sent them ("sent" has "first" only); its host never hung up.
    Before f8aa734 this replayed with no difference."""
    path = tmp_path / "held.trace"
    _held_session(open_modem, emulator, path, how, rs.Collect())
    assert _sent(path) == ["first"]
    rs.replays(capsys, path if stop else _without_stop(tmp_path, path))


# -- a listener's incoming client ----------------------------------------------------------------
def _listener_session(open_modem, emulator, path, last: bytes) -> None:
    host, advance, port = _modem(open_modem, emulator, path)
    assert host.at(ATTACH) == OK
    assert host.at('AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,8000,0') == OK
    assert host.read_until(b"+QIOPEN: 3,0\r\n") == b"\r\n+QIOPEN: 3,0\r\n"
    addr = emulator.run(lambda: _listening(port.modem, 3))
    client = socket.create_connection(addr, timeout=30)
    try:
        host.read_until(re.compile(rb'"incoming".*\r\n'))
        client.sendall(b"hi")
        assert host.read_until(b'"recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
        assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 2\r\nhi\r\n\r\nOK\r\n"
        rs.qisend(host, 0, last)
        got = b""
        while len(got) < len(last):
            got += client.recv(100)
        assert got == last
        _finish(emulator)
    finally:
        client.close()


def test_a_listeners_client_replays_and_more_sent_to_it_is_named(open_modem, emulator, tmp_path, capsys):
    path = tmp_path / "listener.trace"
    _listener_session(open_modem, emulator, path, b"bye for now")
    rs.replays(capsys, path)
    edited = rs.changed(tmp_path, path, lambda r: r["kind"] == "sent" and r["data"] == "bye for now",
                        lambda r: dict(r, data="bye"))
    code, out = rs.replay(capsys, edited)
    first = _first_difference(out)
    assert code == 1 and "socket 0" in first and "beyond the recording" in first and "for now" in first, out


# -- SSL: plaintext only; more than recorded is named, the recording's own sends are not --------------
@pytest.mark.parametrize("mode", ["buffer", "transparent"])
def test_an_ssl_socket_sending_more_than_recorded_is_named(open_modem, emulator, pki, tmp_path, capsys, mode):
    """EC2x AT+QSSLOPEN to an OpenSSL server that reads and answers nothing, the last send
    right before the end (buffer: AT+QSSLSEND; transparent: bytes then +++ after its guard
    time): replays (no close_notify or record bytes in the stand-in's plaintext); the last
    "sent" record edited shorter: the rest named as beyond the recording."""
    from emulator.testing.peers import TlsServer
    path = tmp_path / f"ssl_{mode}.trace"
    with TlsServer(pki.server, mode="sink") as tls:
        emulator.router.add_map(NAME, 443, "127.0.0.1", tls.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        assert host.at('AT+QSSLCFG="seclevel",1,0') == OK
        if mode == "buffer":
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,0') == OK
            assert host.read_until(b"+QSSLOPEN: 2,0\r\n") == b"\r\n+QSSLOPEN: 2,0\r\n"
            for data in (b"first", b"the last one"):
                assert host.send_data(2, data) == b"\r\nSEND OK\r\n"
        else:
            assert host.at(f'AT+QSSLOPEN=1,1,2,"{NAME}",443,2') == b"\r\nCONNECT\r\n"
            host.write(b"first")
            advance(1.2)
            host.write(b"the last one")
            advance(1.2)
            host.write(b"+++")
            advance(1.2)
            assert host.read_until(OK) == OK
        _finish(emulator)
    assert "".join(_sent(path)) == "firstthe last one"
    rs.replays(capsys, path)
    rs.replays(capsys, _without_stop(tmp_path, path))
    recs = rs.records(path)
    i = max(k for k, r in enumerate(recs) if r["kind"] == "sent")
    recs[i] = dict(recs[i], data=recs[i]["data"][:-4])
    code, out = rs.replay(capsys, rs.save(tmp_path, "shorter.trace", recs))
    first = _first_difference(out)
    assert code == 1 and "socket 2" in first and "beyond the recording" in first and "one" in first, out


# -- an interrupted recording keeps the prefix rule ----------------------------------------------------
def test_an_interrupted_recording_whose_modem_sends_more_is_no_difference(open_modem, emulator, tmp_path, capsys):
    """Host bytes with a CR after the last answer (a kill -9 between AT+QISEND's data and its
    answer -- the "sent" record and the answer cut off): the replay's modem sends the data,
    which the recording does not have: no difference (complete False)."""
    path = tmp_path / "killed.trace"
    with TcpServer(behave=rs.Collect()) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        rs.tcp_open(host, 0)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"kept")
        rs.qisend(host, 0, b"lost")
        _finish(emulator)
    recs = rs.records(path)
    last_sent = max(k for k, r in enumerate(recs) if r["kind"] == "sent")
    assert recs[last_sent]["data"] == "lost"
    # cut where the data's answer and its "sent" record would come: the host's bytes stay
    cmd = max(k for k, r in enumerate(recs) if r["kind"] == "cmd")
    kept = [r for k, r in enumerate(recs) if k < cmd or (r["kind"] == "io" and r["dir"] == "in")]
    kept = [r for r in kept if not (r["kind"] == "sent" and r["data"] == "lost")]
    rs.replays(capsys, rs.save(tmp_path, "cut.trace", kept))


# -- a trace recorded under a scenario with a slow link ------------------------------------------------
@pytest.mark.parametrize("ms", [
    400,
    3000,        # was a bug, fixed: close()'s grace counts the links' latency (ReplayPeer.link_delay)
])
def test_a_trace_recorded_with_net_latency_replays_with_its_scenario(open_modem, emulator, tmp_path, capsys, ms):
    """`net` latency_ms from the start (one way), two AT+QISEND as the host's last acts: the
    recording has both sends; replayed with the same scenario: exit 0."""
    path, scenario = tmp_path / "latency.trace", tmp_path / "latency.toml"
    scenario.write_text(f'[[step]]\nat = 0\nop = "net"\nlatency_ms = {ms}\n')
    with TcpServer(behave=rs.Collect()) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        emulator.run_scenario(scenario)
        assert host.at(ATTACH) == OK
        rs.tcp_open(host, 0)
        assert rs.advance_until(host, advance, b"+QIOPEN: 0,0\r\n").endswith(b"+QIOPEN: 0,0\r\n")
        rs.qisend(host, 0, b"one")
        rs.qisend(host, 0, b"last")
        _finish(emulator)
    assert _sent(path) == ["one", "last"]
    rs.replays(capsys, path, "--scenario", str(scenario))


# -- a socket the scenario resets right after the last send ---------------------------------------------
DROP_AFTER_SECOND_SEND = ('[[step]]\nafter = { command = "+QISEND", socket = 0, count = 2 }\n'
                          'op = "drop"\nsocket = 0\nhow = "rst"\n')


# Was a bug, fixed (_read_into keeps what came before a reset): a last send made in part and then
# reset (scenario drop rst) was never named: the stand-in's StreamReader raises
# ConnectionResetError before handing out the bytes it holds.
def test_a_partly_made_send_on_a_socket_reset_by_the_scenario_is_named(open_modem, emulator, tmp_path, capsys):
    """AT+QISEND "one", "last bytes", then the scenario resets the socket (its "closed" URC):
    replayed with the scenario, no difference; the last "sent" record edited longer ("last
    bytes and more": the modem made only part of it) must be named, exit 1."""
    path, scenario = tmp_path / "rst.trace", tmp_path / "rst.toml"
    scenario.write_text(DROP_AFTER_SECOND_SEND)
    with TcpServer(behave=rs.Collect()) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = _modem(open_modem, emulator, path)
        emulator.run_scenario(scenario)
        assert host.at(ATTACH) == OK
        rs.tcp_open(host, 0, mode=0)
        assert host.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        rs.qisend(host, 0, b"one")
        rs.qisend(host, 0, b"last bytes")
        assert host.read_until(b'"closed",0\r\n') == b'\r\n+QIURC: "closed",0\r\n'
        _finish(emulator)
    assert _sent(path) == ["one", "last bytes"]
    rs.replays(capsys, path, "--scenario", str(scenario))
    edited = rs.changed(tmp_path, path, lambda r: r["kind"] == "sent" and r["data"] == "last bytes",
                        lambda r: dict(r, data="last bytes and more"))
    code, out = rs.replay(capsys, edited, "--scenario", str(scenario))
    assert code == 1 and "socket 0" in _first_difference(out) and "last bytes" in out, out
