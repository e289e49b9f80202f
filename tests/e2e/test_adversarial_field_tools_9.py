"""Adversarial tests of the field tools, ninth pass (not repeating test_adversarial_field_tools.py,
_2 ... _8, _fuzz, test_control.py, test_adversarial_replay*.py, test_review_replay_changes*.py,
test_plugin.py, test_adversarial_plugin_users.py).

Covered here:

- twenty modems of one process opening TLS sockets to one OpenSSL server at the same moment,
  each with its own fault (refused, unresolved, stalled, slow link, SEND FAIL, reset, PDP loss,
  reboot, slow answers, UART noise): every other modem's session is byte-exact;
- the control socket of a CLI emulator: requests split across writes in odd places, several
  requests in one write, a UTF-8 BOM and CR LF line ends, and ops whose arguments are given
  with the wrong JSON types (strings for numbers, floats for ints, objects for strings);
- replaying a trace after the server's behaviour changed (edited plaintext, a peer close
  moved): the difference is named at the command that shows it;
- hand-written AT logs mixing ATE0/ATE1 stretches, CR-only line ends and logged echoes;
- the pytest plugin in a fresh project directory using control faults, a scenario given as a
  dict and a replay of its own trace inside the test (with and without its TOML twin);
- pdp_deact of one context of two: only its SSL and TCP sockets go;
- eight modems sharing one trace, opening TLS at once: each replays alone, an edited server
  answer of one is named by its replay only, `trace show --modem --socket` keeps them apart;
- a transparent session under uart_noise, a slow open and a per-socket shaped link replays clean;
- roaming and an injected URC while online wait for the escape; the connection stays.

No bug found in this pass (every test passes).

Every name dialled is routed to 127.0.0.1.
"""
from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from emulator.testing.host import Host
from emulator.tools.trace import replay_main

OK = b"\r\nOK\r\n"
HOST = "echo.example"
ROOT = Path(__file__).resolve().parents[2]


def _replay(path: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path), *args])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return rc, text


def _activate(host: Host) -> None:
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK


# == (1) twenty modems, concurrent TLS opens, one fault each ==========================================
def test_twenty_modems_open_tls_at_once_and_each_fault_stays_on_its_modem(emulator, open_modem, echo):
    n = 20
    modems = []
    for i in range(n):
        host, port = open_modem("ec2x", manual_time=(i == 1))
        _activate(host)
        modems.append((host, port))
    # faults armed before the opens
    assert modems[1][0].at('AT+QSSLCFG="negotiatetime",1,20') == OK
    assert emulator.control("handshake_stall", modem=1) == {"ok": True}
    assert emulator.control("connect_refuse", modem=2) == {"ok": True}
    assert emulator.control("dns_fail", modem=3) == {"ok": True}
    assert emulator.control("net", modem=7, latency_ms=150) == {"ok": True}
    assert emulator.control("slow", modem=8, command="+QSSLSEND", ms=300) == {"ok": True}
    assert emulator.control("uart_noise", modem=9, on=True, seed=9) == {"ok": True}

    opened: dict[int, bytes] = {}
    started: dict[int, float] = {}

    def dial(i: int) -> None:
        host = modems[i][0]
        started[i] = time.monotonic()
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",443,0\r')
        if i == 1:
            opened[i] = host.read_until(OK, timeout=10)
            return
        opened[i] = host.read_until(re.compile(rb"\+QSSLOPEN: 4,-?\d+\r\n"), timeout=10)
        started[i] = time.monotonic() - started[i]

    threads = [threading.Thread(target=dial, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    expect = {i: b"\r\nOK\r\n\r\n+QSSLOPEN: 4,0\r\n" for i in range(n)}
    expect[1] = OK
    expect[2] = b"\r\nOK\r\n\r\n+QSSLOPEN: 4,566\r\n"
    expect[3] = b"\r\nOK\r\n\r\n+QSSLOPEN: 4,565\r\n"
    assert opened == expect
    assert started[7] >= 0.3                                  # a round trip of 2 x 150 ms at least
    # the stalled handshake fails on modem 1's clock only
    assert b"+QSSLOPEN" not in modems[1][0].quiet_for(0.2)
    emulator.advance(modems[1][1], 21)
    assert modems[1][0].read_until(b"+QSSLOPEN: 4,569\r\n", timeout=5) == b"\r\n+QSSLOPEN: 4,569\r\n"

    # faults on connected sockets
    assert emulator.control("send_fail", modem=4, socket=4) == {"ok": True}
    assert emulator.control("drop", modem=5, socket=4, how="rst") == {"ok": True}
    assert emulator.control("pdp_deact", modem=6, cid=1) == {"ok": True}
    assert emulator.control("reboot", modem=10, ms=0) == {"ok": True}
    assert modems[5][0].read_until(b'+QSSLURC: "closed",4\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",4\r\n'
    assert modems[6][0].read_until(b'+QSSLURC: "closed",4\r\n', timeout=5) == \
        b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "closed",4\r\n'
    assert modems[10][0].read_until(b"RDY\r\n", timeout=5) == b"\r\nRDY\r\n"

    healthy = [i for i in range(n) if i not in (1, 2, 3, 4, 5, 6, 10)]
    results: dict[int, tuple] = {}

    def exchange(i: int) -> None:
        host = modems[i][0]
        payload = f"modem-{i:02d}-".encode() * 3
        sent = host.send_data(4, payload)
        if sent != b"\r\nSEND OK\r\n":
            results[i] = (sent,)
            return
        urc = host.read_until(b'+QSSLURC: "recv",4\r\n', timeout=5)
        got = host.at("AT+QSSLRECV=4,1500")
        results[i] = (sent, urc, got)

    threads = [threading.Thread(target=exchange, args=(i,)) for i in healthy + [4]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for i in healthy:
        payload = f"modem-{i:02d}-".encode() * 3
        assert results[i] == (b"\r\nSEND OK\r\n", b'\r\n+QSSLURC: "recv",4\r\n',
                              b"\r\n+QSSLRECV: %d\r\n%s\r\n\r\nOK\r\n" % (len(payload), payload)), i
    assert results[4] == (b"\r\nSEND FAIL\r\n",)
    # the server saw each healthy modem's bytes exactly, and nothing from the failed ones
    got = sorted(bytes(c.received) for c in echo.connections if c.received)
    assert got == sorted(f"modem-{i:02d}-".encode() * 3 for i in healthy)
    # state: each modem tells its own story
    for i in range(n):
        state = emulator.control("state", modem=i)
        sockets = {s["id"]: s["state"] for s in state["sockets"]}
        if i == 10:
            assert sockets == {} and state["pdp"][0]["active"] is False, state
        elif i == 6:
            assert state["pdp"][0]["active"] is False, state
        else:
            assert state["pdp"][0]["active"] is True, (i, state)


# == (2) the control socket: odd framing and wrong JSON types ========================================
@pytest.fixture
def cli(tmp_path):
    from tests.e2e.cli_support import cli_factory
    yield from cli_factory(tmp_path)


def _ctl_exchange(sock: socket.socket, data: bytes, lines: int, timeout: float = 5) -> list[dict]:
    sock.sendall(data)
    buf = b""
    deadline = time.monotonic() + timeout
    while buf.count(b"\n") < lines:
        assert time.monotonic() < deadline, buf
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, buf
        buf += chunk
    assert buf.count(b"\n") == lines, buf
    return [json.loads(line) for line in buf.splitlines()]


def test_control_socket_framing_and_wrong_types_get_one_clear_answer_each(cli, tmp_path):
    emu = cli("--control", str(tmp_path / "ctl"))
    host = Host(emu.dev)
    try:
        assert host.at("ATE0").endswith(OK)
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect(str(tmp_path / "ctl"))
        # a UTF-8 BOM (a Windows editor's file piped in) and CR LF line ends
        [a] = _ctl_exchange(ctl, b'\xef\xbb\xbf{"op": "state"}\r\n', 1)
        assert a["ok"] is True and a["profile"] == "ec2x"
        # a request split inside a name, then the rest with two more requests in one write
        ctl.sendall(b'{"op": "sta')
        time.sleep(0.2)
        answers = _ctl_exchange(ctl, b'te"}\n{"op":"urc","text":"+A: 1"}\n{"op":"urc","text":"+B: 2"}\n', 3)
        assert answers[0]["ok"] is True and answers[0]["mode"] == "COMMAND"
        assert answers[1:] == [{"ok": True}, {"ok": True}]
        assert host.read_until(b"+B: 2\r\n") == b"\r\n+A: 1\r\n\r\n+B: 2\r\n"
        # wrong JSON types: each refused, naming the key and the value
        wrong = [
            (b'{"op": "reboot", "ms": "50"}', "reboot: 'ms' must be an integer 0..600000, not '50'"),
            (b'{"op": "reboot", "ms": 50.0}', "reboot: 'ms' must be an integer 0..600000, not 50.0"),
            (b'{"op": "urc", "text": {"a": 1}}', "urc: 'text' must be a string, not {'a': 1}"),
            (b'{"op": "slow", "command": ["+CSQ"], "ms": 5}', "slow: 'command' must be a string, not ['+CSQ']"),
            (b'{"op": "net", "latency_ms": "10"}', "net: 'latency_ms' must be a number 0..600000, not '10'"),
            (b'{"op": "dtr", "level": true}', "dtr: 'level' must be an integer 0..1, not True"),
            (b'{"op": "state", "modem": "0"}', "no modem '0' (there are 1)"),
            (b'{"op": "state", "modem": null}', "no modem None (there are 1)"),
            (b'{"op": "slow", "command": "+CSQ=?", "ms": 5}', "slow: '+CSQ=?' is not a command of profile ec2x"),
        ]
        answers = _ctl_exchange(ctl, b"\n".join(w for w, _ in wrong) + b"\n", len(wrong))
        assert answers == [{"ok": False, "error": e} for _, e in wrong]
        # nothing of that reached the host, nor took a reboot
        assert host.quiet_for(0.3) == b""
        # "at+csq" is AT+CSQ's name in any spelling: its answer comes 400 ms late
        [a] = _ctl_exchange(ctl, b'{"op": "slow", "command": "at+csq", "ms": 400}\n', 1)
        assert a == {"ok": True}
        t0 = time.monotonic()
        assert host.at("AT+CSQ").endswith(OK)
        assert time.monotonic() - t0 >= 0.35
        ctl.close()
    finally:
        host.close()
    emu.stop()


# == (3) replaying a trace after the server's behaviour changed ======================================
@pytest.fixture
def echo_trace(emulator, open_modem, echo, tmp_path) -> list[dict]:
    """A traced session: two echoed words, then the server closes (close_notify)."""
    trace = tmp_path / "session.trace"
    host, _ = open_modem("ec2x", trace=str(trace))
    _activate(host)
    host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",443,0\r')
    host.read_until(b"+QSSLOPEN: 4,0\r\n", timeout=5)
    for word in (b"one", b"two"):
        assert host.send_data(4, word) == b"\r\nSEND OK\r\n"
        host.read_until(b'"recv",4\r\n', timeout=5)
        assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: 3\r\n%s\r\n\r\nOK\r\n" % word
    echo.connections[0].close()
    assert host.read_until(b'"closed",4\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",4\r\n'
    assert host.at("AT+QSSLCLOSE=4") == OK
    host.close()
    deadline = time.monotonic() + 5
    while '"kind": "hangup"' not in trace.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    return [json.loads(line) for line in trace.read_text().splitlines()]


def _edited(tmp_path: Path, records: list[dict], name: str) -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_a_trace_whose_server_changed_names_the_command_or_socket_that_shows_it(echo_trace, tmp_path):
    records = echo_trace
    rc, text = _replay(_edited(tmp_path, records, "same.trace"))
    assert rc == 0 and "no difference" in text, text
    # the server's second answer changed
    changed = [dict(r, data="TWO") if r["kind"] == "received" and r["data"] == "two" else r for r in records]
    rc, text = _replay(_edited(tmp_path, changed, "changed.trace"))
    assert rc == 1 and text.startswith(
        "first difference: command 7 (AT+QSSLRECV=4,1500) at ") and text.endswith(
        "  expected: \\r\\n+QSSLRECV: 3\\r\\ntwo\\r\\n\\r\\nOK\\r\\n\n"
        "  got:      \\r\\n+QSSLRECV: 3\\r\\nTWO\\r\\n\\r\\nOK\\r\\n\n"), text
    # the server added a byte after its first answer
    more = []
    for r in records:
        more.append(r)
        if r["kind"] == "received" and r["data"] == "one":
            more.append(dict(r, data="!", t=r["t"] + 0.0001))
    rc, text = _replay(_edited(tmp_path, more, "more.trace"))
    assert rc == 1 and text.startswith("first difference: command 5 (AT+QSSLRECV=4,1500) at ") and \
        "  got:      \\r\\n+QSSLRECV: 4\\r\\none!\\r\\n" in text, text
    # the server now expects other bytes from the modem: the socket is named
    other = [dict(r, data="tw0") if r["kind"] == "sent" and r["data"] == "two" else r for r in records]
    rc, text = _replay(_edited(tmp_path, other, "other.trace"))
    assert (rc, text) == (1, "first difference: socket 4 sent 'two', recorded 'tw0'\n"), text
    # what the host cannot see is no difference: the answer in two pieces, an RST for a close_notify
    split = []
    for r in records:
        if r["kind"] == "received" and r["data"] == "one":
            split += [dict(r, data="o"), dict(r, data="ne", t=r["t"] + 0.0001)]
        else:
            split.append(r)
    rc, text = _replay(_edited(tmp_path, split, "split.trace"))
    assert rc == 0 and "no difference" in text, text
    rst = [dict(r, reason="connection reset by peer", how="rst") if r["kind"] == "peer_closed" else r
           for r in records]
    rc, text = _replay(_edited(tmp_path, rst, "rst.trace"))
    assert rc == 0 and "no difference" in text, text


# == (4) the pytest plugin in a fresh project ========================================================
USER_PROJECT_TEST = r'''
import io
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import serial

from emulator.tools.trace import replay_main

SCENARIO = {
    "description": "field unit 17: the 2nd send fails, the link resets after the 3rd",
    "step": [
        {"when": {"command": "+QSSLSEND", "socket": 4, "count": 2}, "op": "send_fail", "socket": 4},
        {"after": {"command": "+QSSLSEND", "socket": 4, "count": 3}, "op": "drop", "socket": 4, "how": "rst"},
    ],
}
SCENARIO_TOML = """description = "field unit 17"
[[step]]
when = { command = "+QSSLSEND", socket = 4, count = 2 }
op = "send_fail"
socket = 4
[[step]]
after = { command = "+QSSLSEND", socket = 4, count = 3 }
op = "drop"
socket = 4
how = "rst"
"""


def at(ser, data, until=b"OK\r\n"):
    ser.write(data)
    return ser.read_until(until)


def replay(*args):
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        rc = replay_main([str(a) for a in args])
    return rc, out.getvalue()


def open_session(modem, tls_server):
    ser = serial.Serial(modem.path, 115200, timeout=5)
    at(ser, b'ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1\r')
    at(ser, b'AT+QFUPL="RAM:ca.pem",%d\r' % len(tls_server.ca_pem), b"CONNECT\r\n")
    at(ser, tls_server.ca_pem)
    at(ser, b'AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:ca.pem"\r')
    dial = b'AT+QSSLOPEN=1,1,4,"%s",%d\r' % (tls_server.host.encode(), tls_server.port)
    assert at(ser, dial, b"+QSSLOPEN: 4,\r\n"[:-2]) .endswith(b"+QSSLOPEN: 4,")
    assert ser.read_until(b"\r\n") == b"0\r\n"
    return ser


def test_scenario_dict_faults_then_the_trace_replays_with_its_toml(modem, tls_server, tmp_path):
    run = modem.scenario(SCENARIO)
    ser = open_session(modem, tls_server)
    results = []
    for word in (b"aaaaa", b"bbbbb", b"ccccc"):
        at(ser, b"AT+QSSLSEND=4,5\r", b"> ")
        at(ser, word, b"SEND ")
        results.append(ser.read_until(b"\r\n"))
    assert results == [b"OK\r\n", b"FAIL\r\n", b"OK\r\n"]
    assert b'+QSSLURC: "closed",4\r\n' in ser.read_until(b'"closed",4\r\n')
    assert tls_server.wait_received(10) == b"aaaaaccccc"
    state = modem.control("state")
    assert [s["id"] for s in state["sockets"]] == [4]
    assert modem.control("drop", socket=4, how="rst") == {
        "ok": False, "error": "drop: socket 4 is not connected (state CLOSING)"}
    assert modem.control("net", latency_ms=-1) == {
        "ok": False, "error": "net: 'latency_ms' must be a number 0..600000, not -1"}
    assert modem.emulator.run(lambda: len(run.fired)) == 2
    assert at(ser, b"AT+QSSLCLOSE=4\r") == b"\r\nOK\r\n"
    ser.close()
    time.sleep(0.3)
    scenario = tmp_path / "unit17.toml"
    scenario.write_text(SCENARIO_TOML)
    rc, text = replay(modem.trace, "--scenario", scenario)
    assert rc == 0 and "no difference" in text, text
    rc, text = replay(modem.trace)
    assert rc == 1 and text.startswith("first difference: command 6 (AT+QSSLSEND=4,5) at "), text
    assert text.endswith("  expected: \\r\\n> \\r\\nSEND FAIL\\r\\n\n"
                         "  got:      \\r\\n> \\r\\nSEND OK\\r\\n\n"), text


@pytest.mark.modem_manual_time
def test_a_stalled_handshake_on_manual_time(modem, tls_server):
    ser = serial.Serial(modem.path, 115200, timeout=5)
    at(ser, b'ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QSSLCFG="negotiatetime",1,30\r')
    assert modem.control("handshake_stall", count=1) == {"ok": True}
    dial = b'AT+QSSLOPEN=1,1,2,"%s",%d\r' % (tls_server.host.encode(), tls_server.port)
    assert at(ser, dial) == b"\r\nOK\r\n"
    ser.timeout = 0.3
    assert ser.read(100) == b""
    modem.advance(29)
    assert ser.read(100) == b""
    modem.advance(2)
    ser.timeout = 5
    assert ser.read_until(b"+QSSLOPEN: 2,569\r\n") == b"\r\n+QSSLOPEN: 2,569\r\n"
    with pytest.raises(ValueError):
        modem.advance(-1)
'''


def test_the_plugin_in_a_fresh_project_with_faults_scenarios_and_a_replay_of_its_trace(tmp_path):
    project = tmp_path / "user"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_unit17.py").write_text(USER_PROJECT_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:randomly", str(project)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"^2 passed in ", out, re.M), out


# == (5) hand-written AT logs: ATE switches, CR-only line ends, echoes and URCs ======================
LOGS = [
    # a >>/<< log whose echo is logged only while ATE1 holds, and a CR-only copy of it
    ("echo-switches", b">> AT\r\n<< AT\r\n<< OK\r\n>> ATE0\r\n<< ATE0\r\n<< OK\r\n>> AT+CSQ\r\n<< +CSQ: 24,99\r\n"
                      b"<< OK\r\n>> ATE1\r\n<< OK\r\n>> AT+CGMR\r\n<< AT+CGMR\r\n<< EC25EFAR06A06M4G\r\n<< OK\r\n",
     0, "replayed 5 lines: no difference\n"),
    ("echo-switches-cr", b">> ATE1\r<< ATE1\r<< OK\r>> AT+CSQ\r<< AT+CSQ\r<< +CSQ: 24,99\r<< OK\r>> ATE0\r"
                         b"<< ATE0\r<< OK\r>> AT+CGMR\r<< EC25EFAR06A06M4G\r<< OK\r",
     0, "replayed 4 lines: no difference\n"),
    # a terminal capture in CR only (an old terminal program's log), echo on
    ("terminal-cr", b"AT+CSQ\r\r+CSQ: 24,99\r\rOK\rATI\r\rQuectel\rEC25\rRevision: EC25EFAR06A06M4G\r\rOK\r",
     0, "replayed 2 lines: no difference\n"),
    # the revision changed after ATE1: named at its step with both answers
    ("changed-after-ate1", b">> AT\r\n<< AT\r\n<< OK\r\n>> ATE0\r\n<< ATE0\r\n<< OK\r\n>> AT+CSQ\r\n"
                           b"<< +CSQ: 24,99\r\n<< OK\r\n>> ATE1\r\n<< OK\r\n>> AT+CGMR\r\n<< AT+CGMR\r\n"
                           b"<< EC25EFAR06A07M4G\r\n<< OK\r\n",
     1, "first difference: step 5 (AT+CGMR):\n  expected: ['EC25EFAR06A07M4G', 'OK']\n"
        "  got:      ['EC25EFAR06A06M4G', 'OK']\n"),
    # a URC the field module wrote between the echo and the answer: the replay has none
    ("urc-in-echo", b">> ATE1\r\n<< ATE1\r\n<< OK\r\n>> AT+CSQ\r\n<< AT+CSQ\r\n<< +QIND: \"csq\",5,99\r\n"
                    b"<< +CSQ: 24,99\r\n<< OK\r\n",
     1, "first difference: step 2 (AT+CSQ):\n  expected: ['+QIND: \"csq\",5,99', '+CSQ: 24,99', 'OK']\n"
        "  got:      ['+CSQ: 24,99', 'OK']\n"),
    # an echo that is not the command sent (line noise in the capture): a difference, not skipped
    ("wrong-echo", b">> ATE1\r\n<< ATE1\r\n<< OK\r\n>> AT+CSQ\r\n<< AT+CSQ\r\n<< +CSQ: 24,99\r\n<< OK\r\n"
                   b">> AT+CSQ\r\n<< AT+CSX\r\n<< +CSQ: 24,99\r\n<< OK\r\n",
     1, "first difference: step 3 (AT+CSQ):\n  expected: ['AT+CSX', '+CSQ: 24,99', 'OK']\n"
        "  got:      ['+CSQ: 24,99', 'OK']\n"),
    # a capture in which, after ATE0, an answer shows whose command the terminal never echoed
    ("answer-without-command", b"AT\r\r\nOK\r\nATE0\r\r\nOK\r\n\r\n+CSQ: 24,99\r\n\r\nOK\r\n",
     1, "first difference: step 2 (ATE0):\n  expected: ['OK', '+CSQ: 24,99', 'OK']\n  got:      ['OK']\n"),
]


@pytest.mark.parametrize("name, log, rc, text", LOGS, ids=[entry[0] for entry in LOGS])
def test_hand_written_logs_with_echo_switches_and_cr_line_ends(tmp_path, name, log, rc, text):
    path = tmp_path / f"{name}.log"
    path.write_bytes(log)
    assert _replay(path) == (rc, text)


# == (6) one context of two lost: only its sockets go ================================================
def test_pdp_deact_of_one_context_of_two_closes_only_its_sockets(emulator, open_modem, echo, tcp_echo):
    from tests.e2e.socket_support import TCP_HOST, TCP_PORT
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QICSGP=2,1,"CMNET","","",1;+QIACT=2') == OK
    host.write(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0\r')
    assert host.read_until(b"+QSSLOPEN: 1,") + host.read_until(b"\r\n") == b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n"
    host.write(f'AT+QSSLOPEN=2,2,2,"{HOST}",443,0\r')
    assert host.read_until(b"+QSSLOPEN: 2,") + host.read_until(b"\r\n") == b"\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n"
    host.write(f'AT+QIOPEN=2,3,"TCP","{TCP_HOST}",{TCP_PORT},0,0\r')
    assert host.read_until(b"+QIOPEN: 3,") + host.read_until(b"\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 3,0\r\n"
    host.write(f'AT+QIOPEN=1,5,"TCP","{TCP_HOST}",{TCP_PORT},0,1\r')
    assert host.read_until(b"+QIOPEN: 5,") + host.read_until(b"\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 5,0\r\n"
    assert emulator.control("pdp_deact", cid=2) == {"ok": True}
    assert host.read_until(b'+QIURC: "closed",3\r\n', timeout=5) == (
        b'\r\n+QIURC: "pdpdeact",2\r\n\r\n+QSSLURC: "closed",2\r\n\r\n+QIURC: "closed",3\r\n')
    assert re.fullmatch(rb'\r\n\+QIACT: 1,1,1,"[0-9.]+"\r\n\r\nOK\r\n', host.at("AT+QIACT?"))
    # context 1's sockets go on: an SSL echo and a push-mode TCP echo
    assert host.send_data(1, b"still") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'"recv",1\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",1\r\n'
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 5\r\nstill\r\n\r\nOK\r\n"
    host.write(b"AT+QISEND=5,4\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"five")
    assert host.read_until(b"five\r\n", timeout=5) == b'\r\nSEND OK\r\n\r\n+QIURC: "recv",5,4\r\nfive\r\n'
    states = {s["id"]: (s["state"], s["pdp"]) for s in emulator.control("state")["sockets"]}
    assert states == {1: ("CONNECTED", 1), 2: ("CLOSING", 2), 3: ("CLOSING", 2), 5: ("CONNECTED", 1)}
    assert emulator.control("pdp_deact", cid=2) == {"ok": False, "error": "pdp_deact: PDP context 2 is not active"}
    assert emulator.control("send_fail", socket=2) == {
        "ok": False, "error": "send_fail: socket 2 is not connected (state CLOSING)"}


# == (7) many modems in one trace, opening TLS at once, each replayed alone ==========================
def test_concurrent_tls_sessions_of_eight_modems_in_one_trace_each_replay_alone(emulator, open_modem, echo,
                                                                                 tmp_path):
    trace = tmp_path / "fleet.trace"
    n = 8
    hosts = []
    for i in range(n):
        host, _ = open_modem("ec2x", trace=str(trace))
        _activate(host)
        hosts.append(host)
    assert emulator.control("connect_refuse", modem=2) == {"ok": True}
    assert emulator.control("net", modem=5, latency_ms=40) == {"ok": True}
    outcome: dict[int, bytes] = {}

    def session(i: int) -> None:
        host = hosts[i]
        host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",443,0\r')
        opened = host.read_until(re.compile(rb"\+QSSLOPEN: 4,\d+\r\n"), timeout=10)
        outcome[i] = opened
        if not opened.endswith(b"4,0\r\n"):
            return
        for k in range(3):
            word = f"m{i}-{k}".encode()
            assert host.send_data(4, word) == b"\r\nSEND OK\r\n"
            host.read_until(b'"recv",4\r\n', timeout=5)
            assert host.at("AT+QSSLRECV=4,1500") == b"\r\n+QSSLRECV: %d\r\n%s\r\n\r\nOK\r\n" % (len(word), word)
        assert host.at("AT+QSSLCLOSE=4") == OK

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert outcome == {i: b"\r\nOK\r\n\r\n+QSSLOPEN: 4,%s\r\n" % (b"566" if i == 2 else b"0") for i in range(n)}
    for host in hosts:
        host.close()
    deadline = time.monotonic() + 5
    while trace.read_text().count('"kind": "hangup"') < n and time.monotonic() < deadline:
        time.sleep(0.05)
    for m in (0, 2, 5, 7):
        rc, text = _replay(trace, "--modem", str(m))
        assert rc == 0 and text.endswith(": no difference\n"), (m, text)
    # modem 3's server changed its second answer: only modem 3's replay names it, at its command
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    edited = [dict(r, data="M3-1") if r.get("modem") == 3 and r["kind"] == "received" and r["data"] == "m3-1"
              else r for r in records]
    assert edited != records
    path = _edited(tmp_path, edited, "fleet-edited.trace")
    rc, text = _replay(path, "--modem", "3")
    assert rc == 1 and text.startswith("first difference: command 7 (AT+QSSLRECV=4,1500) at ") and text.endswith(
        "  expected: \\r\\n+QSSLRECV: 4\\r\\nm3-1\\r\\n\\r\\nOK\\r\\n\n"
        "  got:      \\r\\n+QSSLRECV: 4\\r\\nM3-1\\r\\n\\r\\nOK\\r\\n\n"), text
    for m in (4, 0):                 # (0: what `replay` checks with no --modem)
        rc, text = _replay(path, "--modem", str(m))
        assert rc == 0 and text.endswith(": no difference\n"), (m, text)
    # with no --modem, replay says which of the eight it checks (it said nothing: a clean exit
    # read as "the fleet replays" while modem 3 differed)
    rc, text = _replay(path)                      # (stdout, then stderr's note)
    assert rc == 0 and ": no difference\nmodem-emulator replay: " in text, text
    assert f"{path} holds 8 modems (0, 1, 2, 3, 4, 5, 6, 7): replaying modem 0 (--modem N replays another)" \
        in text, text
    # one modem's socket 4 alone in `trace show`: its own words only
    from emulator.tools.trace import show_main
    out = io.StringIO()
    with redirect_stdout(out):
        assert show_main([str(trace), "--modem", "6", "--socket", "4"]) == 0
    shown = out.getvalue()
    assert "|m6-0|" in shown and "|m6-2|" in shown and not re.search(r"\|m[0-57]-", shown), shown
    assert all(line.split()[1] == "m6" for line in shown.splitlines() if line.startswith("    +")), shown


# == (8) a noisy, slowed, shaped transparent session replays without a difference ====================
def test_a_transparent_session_under_noise_slow_and_a_shaped_link_replays_clean(emulator, open_modem, echo,
                                                                               tmp_path):
    trace = tmp_path / "noisy.trace"
    host, _ = open_modem("ec2x", trace=str(trace))
    _activate(host)
    assert emulator.control("uart_noise", on=True, seed=3) == {"ok": True}
    assert emulator.control("slow", command="+QSSLOPEN", ms=300) == {"ok": True}
    host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",443,2\r')
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"x" * 3000)
    assert host.read_exactly(3000, timeout=10) == b"x" * 3000
    time.sleep(1.1)
    host.write(b"+++")
    time.sleep(1.1)
    assert host.read_until(OK, timeout=5) == OK
    assert emulator.control("net", socket=4, latency_ms=50) == {"ok": True}
    host.write(b"ATO\r")
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"y" * 100)
    assert host.read_exactly(100, timeout=10) == b"y" * 100
    time.sleep(1.1)
    host.write(b"+++")
    time.sleep(1.1)
    assert host.read_until(OK, timeout=5) == OK
    assert host.at("AT+QSSLCLOSE=4") == OK
    host.close()
    deadline = time.monotonic() + 5
    while '"kind": "hangup"' not in trace.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    rc, text = _replay(trace, "--max-gap", "1.5")
    assert (rc, text) == (0, "replayed 5 commands, 3209 host bytes: no difference\n"), text


# == (9) roaming while online: the URCs wait for the escape, the connection stays ====================
def test_roaming_and_a_urc_while_online_wait_for_the_escape_and_the_stream_goes_on(emulator, open_modem, echo):
    host, _ = open_modem("ec2x")
    _activate(host)
    assert host.at("AT+CREG=1;+CGREG=1;+CEREG=1") == OK
    host.write(f'AT+QSSLOPEN=1,1,4,"{HOST}",443,2\r')
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"abc")
    assert host.read_until(b"abc", timeout=5) == b"abc"
    assert emulator.control("register", stat=5) == {"ok": True}            # roaming: the contexts stay
    assert emulator.control("urc", text="+QIND: X") == {"ok": True}
    host.write(b"def")
    assert host.read_until(b"def", timeout=5) + host.quiet_for(0.3) == b"def"   # nothing inside the stream
    time.sleep(1.1)
    host.write(b"+++")
    time.sleep(1.1)
    assert host.read_until(b"+QIND: X\r\n", timeout=5) == (
        b"\r\nOK\r\n\r\n+CREG: 5\r\n\r\n+CGREG: 5\r\n\r\n+CEREG: 5\r\n\r\n+QIND: X\r\n")
    assert host.at("AT+CREG?;+CGREG?;+CEREG?") == (
        b"\r\n+CREG: 1,5\r\n\r\n+CGREG: 1,5\r\n\r\n+CEREG: 1,5\r\n\r\nOK\r\n")
    state = emulator.control("state")
    assert [(s["id"], s["state"]) for s in state["sockets"]] == [(4, "CONNECTED")]
    assert state["registration"] == {"stat": 5, "attached": True}
    assert emulator.control("register", stat=1) == {"ok": True}
    assert host.read_until(b"+CEREG: 1\r\n", timeout=5) == b"\r\n+CREG: 1\r\n\r\n+CGREG: 1\r\n\r\n+CEREG: 1\r\n"
    host.write(b"ATO\r")
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"ghi")
    assert host.read_until(b"ghi", timeout=5) == b"ghi"
