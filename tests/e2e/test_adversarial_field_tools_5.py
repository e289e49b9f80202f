"""Adversarial tests of the field tools, fifth pass: a firmware/backend team reproducing field
bugs with --control, --scenario, --trace / replay and --count (not repeating
test_adversarial_field_tools.py, _2.py, _3.py, _4.py, _fuzz.py, test_control.py,
test_scenario.py, test_adversarial_replay_fidelity*.py, test_review_perf_changes.py).

Covered here:

- the CLI with --count 20 and its stderr a 4 KiB pipe nobody reads, while six control clients
  flood modem 13 with 12,000 `urc` requests (each an INFO log line: past the 10,000 waiting
  lines they are dropped and counted): every request answered, modem 13's host gets every
  URC once and in each client's order, modems 0 and 19 answer exactly and see none of them, a
  60,000-byte URC line arrives whole, a late stderr reader gets whole lines, each client's in
  order, and the "dropped" notice; SIGTERM exits 0;
- a `slow` AT+QSSLOPEN whose connection is dropped while its OK is held back: OK, the open's
  result, then the close URC (EC2x and ML302), never the URC before the OK;
- scenario `when` / `after` triggers on commands pipelined in one write (several lines, a ";"
  chain): each fires on the right one, exact bytes, both profiles;
- control requests racing the host: `slow` switched on and off by four control clients while
  the host pipelines 60 commands in one write (every answer once, whole, in order); the
  control `urc` raised inside a slow ";" chain waits for the chain's OK;
- values JSON allows that Python reads as numbers no other client sends (NaN, Infinity, 1e400,
  1.0 as a modem index, huge integers): clear errors; a 60 KB URC line through the socket;
- a session under a scenario of faults (urc, drop rst after a read, register 0 then 1 with
  +CREG/+CGREG URCs on, reboot after a command) traced, shown with `trace show`, replayed with
  `--scenario` (no difference) and without it (a difference); an ML302 one (send_fail `when`
  the 2nd send, drop after it, a URC after AT+QSSLCLOSE) replayed with its scenario;
- faults while a TLS handshake's second flight is on its way (300 ms latency on the modem's
  clock): pdp_deact, the network dropping the module, the latency lifted -- EC2x buffer and
  transparent opens, ML302 buffer and transparent opens: one exact result, nothing later;

Three bugs found, all fixed since (2026-12-06): a scenario `after` step `reboot` discarded the
very answer it is "after" when output is paced (--baud) or noisy (uart_noise); a scenario `when`
step `urc` on the second command of a ";" chain wrote the URC between two answers of one command
line (a module answers the line first); `--trace` to a pipe whose reader does not read blocked
the event loop (such a path is now refused at start, exit 2).

Every name dialled is routed to 127.0.0.1."""
from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from emulator.testing.host import Host
from emulator.tools.control import ControlServer
from emulator.tools.trace import show_main
from tests.e2e import replay_support as rs
from tests.e2e.cli_support import start, stop
from tests.pipes import read_until_idle

HOST = "echo.example"           # routed to the `echo` fixture's server (tests/conftest.py)
OK = b"\r\nOK\r\n"
F_SETPIPE_SZ = 1031
EC2X_BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"


# -- helpers ---------------------------------------------------------------------------------
def _wait(pred, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _sock_state(emulator, sid: int, modem: int = 0):
    state = emulator.control("state", modem)
    return next((s["state"] for s in state["sockets"] if s["id"] == sid), None)


def _index(emulator) -> int:
    return len(emulator.emulator.ports) - 1


class Ctl:
    """A control-socket client reading answers a line at a time."""

    def __init__(self, path) -> None:
        self.s = socket.socket(socket.AF_UNIX)
        self.s.settimeout(20)
        self.s.connect(str(path))
        self.buf = b""

    def line(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, f"control socket closed; had {self.buf[:200]!r}"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def ask(self, request: bytes) -> dict:
        self.s.sendall(request + b"\n")
        return self.line()

    def close(self) -> None:
        self.s.close()


@pytest.fixture
def ctl_path(emulator, tmp_path):
    """A ControlServer on the `emulator` fixture's loop (add modems before using it)."""
    path = tmp_path / "c.sock"
    server = ControlServer(emulator.emulator, path)
    emulator.call(server.start())
    yield path
    emulator.call(server.close())


# == --count 20, stderr never read, the control socket flooded =================================
CGMR = {"ec2x": b"\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n", "ml302": b"\r\nML302-CNLM_MBRH0S00\r\n\r\nOK\r\n"}


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_count_20_control_flood_with_an_unread_stderr_pipe(tmp_path, profile):
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    ctl = tmp_path / "c.sock"
    proc = start("--offline", "--count", "20", "--state-dir", str(tmp_path / "st"),
                 "--link", str(tmp_path / "m-{n}"), "--control", str(ctl), "--log-level", "INFO",
                 "--profile", profile, stderr=w)
    hosts: dict[int, Host] = {}
    clients, per_client = 6, 2000
    try:
        devs = [proc.stdout.readline().strip() for _ in range(20)]
        assert devs == [str(tmp_path / f"m-{n}") for n in range(20)], devs
        hosts = {n: Host(devs[n]) for n in (0, 13, 19)}
        for h in hosts.values():
            assert h.at("ATE0").endswith(OK)
        failures: list = []

        def client(c: int) -> None:
            try:
                s = Ctl(ctl)
                for b in range(per_client // 200):
                    s.s.sendall(b"".join(json.dumps({"op": "urc", "modem": 13,
                                                     "text": f"+FLOOD: {c},{b * 200 + i}"}).encode() + b"\n"
                                         for i in range(200)))
                    for _ in range(200):
                        answer = s.line()
                        if answer != {"ok": True}:
                            failures.append(answer)
                s.close()
            except Exception as exc:          # (reported below, not lost in the thread)
                failures.append(repr(exc))

        stop_reading = threading.Event()

        def reader() -> None:                 # modem 13's host reads as it comes
            while not stop_reading.is_set():
                hosts[13]._fill()

        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        rt = threading.Thread(target=reader)
        rt.start()
        for t in threads:
            t.start()
        rounds = 0
        while any(t.is_alive() for t in threads) or rounds < 3:
            for n in (0, 19):
                assert hosts[n].at("AT+CGMR") == CGMR[profile]
            rounds += 1
        for t in threads:
            t.join(30)
        assert not failures, failures[:3]
        # one URC line of 60,000 bytes, through the same socket
        big = "+BIG: " + "x" * 60_000
        c = Ctl(ctl)
        assert c.ask(json.dumps({"op": "urc", "modem": 13, "text": big}).encode()) == {"ok": True}
        assert c.ask(b'{"op": "state", "modem": 13}')["ok"] is True
        c.close()
        _wait(lambda: big.encode() in hosts[13].pending, "the 60 KB URC")
        stop_reading.set()
        rt.join(10)
        text = bytes(hosts[13].pending)
        got = re.findall(rb"\r\n\+FLOOD: (\d+),(\d+)\r\n", text)
        assert len(got) == clients * per_client
        for k in range(clients):
            assert [int(i) for c_, i in got if int(c_) == k] == list(range(per_client))
        assert text.endswith(b"\r\n" + big.encode() + b"\r\n")
        assert re.sub(rb"\r\n\+FLOOD: \d+,\d+\r\n", b"", text) == b"\r\n" + big.encode() + b"\r\n"
        for n in (0, 19):                                   # nothing of modem 13's reached them
            assert hosts[n].quiet_for(0.2) == b""
            assert hosts[n].at("AT") == OK
        err = read_until_idle(r, 1.0)                                 # a reader comes late: whole lines
        assert hosts[0].at("AT") == OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        for h in hosts.values():
            h.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(w)
    err += read_until_idle(r, 0.2)
    os.close(r)
    lines = err.split(b"\n")
    assert lines[-1] == b""
    stamp = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: |modem-emulator: |  )")
    assert all(stamp.match(line) for line in lines[:-1]), [x for x in lines if not stamp.match(x)][:3]
    assert b"Traceback" not in err and b" ERROR " not in err
    dropped = [int(n) for n in re.findall(rb"modem-emulator: (\d+) log lines dropped \(stderr was not read\)", err)]
    assert dropped and sum(dropped) > 0
    logged = re.findall(rb"control: urc \{'text': '\+FLOOD: (\d+),(\d+)'\}", err)
    assert len(set(logged)) == len(logged)                  # no line written twice
    for k in range(clients):                                # each client's lines in its order
        mine = [int(i) for c_, i in logged if int(c_) == k]
        assert mine == sorted(mine)
    assert len(logged) + sum(dropped) >= clients * per_client


# == faults at awkward moments ====================================================================
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_drop_while_a_slow_opens_ok_is_held_comes_after_the_ok_and_the_result(emulator, open_modem, echo,
                                                                                profile, strict_log):
    host, port = open_modem(profile, manual_time=True)
    m = _index(emulator)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        sid, line, closed = 1, f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0', b'\r\n+QSSLURC: "closed",1\r\n'
    else:
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert host.at("AT+CGACT=1,1").endswith(OK)
        sid, line, closed = 0, f'AT+QSSLOPEN=0,0,"{HOST}",443,0', b'\r\n+QSSLURC: "close",0\r\n'
    assert emulator.control("slow", m, command="+QSSLOPEN", ms=2000) == {"ok": True}
    host.write(line + "\r")
    _wait(lambda: _sock_state(emulator, sid, m) == "CONNECTED", "the handshake")
    assert emulator.control("drop", m, socket=sid, how="rst") == {"ok": True}
    assert host.quiet_for(0.3) == b""                          # the OK is still held: nothing yet
    emulator.advance(port, 2.1)
    want = OK + b"\r\n+QSSLOPEN: %d,0\r\n" % sid + closed
    assert host.read_until(closed, timeout=5) == want
    assert host.quiet_for(0.2) == b""
    assert host.at("AT") == OK


# == scenario triggers on pipelined commands ======================================================
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_scenario_triggers_on_commands_pipelined_in_one_write(emulator, open_modem, profile, strict_log):
    host, port = open_modem(profile, manual_time=True)
    m = _index(emulator)
    run = emulator.run_scenario({"step": [
        {"after": {"command": "+CGMR", "count": 1}, "op": "urc", "text": "+A1", "modem": m},
        {"when": {"command": "+CGMR", "count": 2}, "op": "urc", "text": "+W2", "modem": m},
        {"after": {"command": "+CGMR", "count": 3}, "op": "urc", "text": "+A3", "modem": m},
        {"when": {"command": "+CSQ", "count": 2}, "op": "slow", "command": "+CSQ", "ms": 1000, "modem": m},
        {"after": {"command": "+CSQ", "count": 1}, "op": "urc", "text": "+ACHAIN", "modem": m},
    ]})
    cgmr = host.at("AT+CGMR")[:-len(OK)]                       # the 1st: step 1 after its answer
    assert host.read_until(b"+A1\r\n", timeout=5) == b"\r\n+A1\r\n"
    csq = re.escape(b"\r\n+CSQ: ") + rb"\d+,99\r\n"
    host.write(b"AT+CGMR\rAT+CGMR\r\nAT+CSQ;+CSQ;+CGMR\r")
    got = host.read_until(re.compile(csq), timeout=5)           # the chain's first +CSQ
    got += host.quiet_for(0.3)                                 # the second +CSQ is slow
    assert re.fullmatch(re.escape(b"\r\n+W2\r\n" + cgmr + OK + cgmr + OK + b"\r\n+A3\r\n") + csq, got), got
    emulator.advance(port, 1.1)
    got = host.read_until(b"+ACHAIN\r\n", timeout=5)
    assert re.fullmatch(csq + re.escape(cgmr + OK + b"\r\n+ACHAIN\r\n"), got), got
    assert emulator.control("slow", m, command="+CSQ", ms=0) == {"ok": True}   # (the step's slow stays)
    assert host.at("AT+CSQ;+CGMR").endswith(OK)                # every step fired once: no more
    assert host.quiet_for(0.2) == b""
    assert emulator.run(lambda: [f["step"] for f in run.fired]) == [1, 2, 3, 4, 5]


# Found here: scenario.ScenarioRun._command / _due fire a `when` step at once, in the middle of a
# ";" chain; the control op `urc` (modem.urc) writes at once when the interpreter is between
# two commands of one line instead of waiting for the line's final result as it does for a
# URC raised while a command runs (see the next test).
# Was a bug, fixed (2026-12-06): a scenario `when` step `urc` on the 2nd command of a ';' chain writes the URC between two answers of ONE command line (AT+CSQ;+CSQ -> +CSQ, URC, +CSQ, OK); a control urc and a real module wait for the line's final result (emulator/tools/scenario.py ScenarioRun._command/_fire -> control.urc)
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_scenario_when_urc_inside_a_chain_waits_for_the_lines_final_result(emulator, open_modem, profile,
                                                                          strict_log):
    host, port = open_modem(profile, manual_time=True)
    m = _index(emulator)
    emulator.run_scenario({"step": [
        {"when": {"command": "+CSQ", "count": 2}, "op": "urc", "text": "+WCSQ", "modem": m}]})
    host.write(b"AT+CSQ;+CSQ\r")
    got = host.read_until(b"+WCSQ\r\n", timeout=5)
    got += host.quiet_for(0.2)
    assert re.fullmatch(rb"(\r\n\+CSQ: \d+,99\r\n){2}\r\nOK\r\n\r\n\+WCSQ\r\n", got), got


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_a_control_urc_raised_inside_a_slow_chain_waits_for_its_ok(emulator, open_modem, profile, strict_log):
    host, port = open_modem(profile, manual_time=True)
    m = _index(emulator)
    assert emulator.control("slow", m, command="+CGMR", ms=1000) == {"ok": True}
    host.write(b"AT+CSQ;+CGMR;+CSQ\r")
    first = host.read_until(re.compile(rb"\r\n\+CSQ: \d+,99\r\n"), timeout=5)
    assert re.fullmatch(rb"\r\n\+CSQ: \d+,99\r\n", first), first
    assert emulator.control("urc", m, text="+MID") == {"ok": True}
    assert host.quiet_for(0.3) == b""
    emulator.advance(port, 1.1)
    got = host.read_until(b"+MID\r\n", timeout=5)
    assert re.fullmatch(rb"\r\n[^\r\n]+\r\n\r\n\+CSQ: \d+,99\r\n\r\nOK\r\n\r\n\+MID\r\n", got), got


# Found here: control.reboot (called by ScenarioRun._fire) ends with port.discard_output(),
# which throws away what the pacer (--baud) or the noise (uart_noise) has not written yet --
# the answer the `after` step waited for is among it.
# Was a bug, fixed (2026-12-06): a scenario `after` step `reboot` discards the very answer it is after when output is paced (--baud) or noisy (uart_noise): the host gets '\r\n' or '\r\nEC25EF' and then RDY (emulator/tools/scenario.py ScenarioRun._idle fires on port_idle before the port's output left; control.reboot -> port.discard_output)
@pytest.mark.parametrize("profile, how", [("ec2x", "baud"), ("ml302", "noise")])
def test_scenario_after_reboot_lets_the_answer_it_follows_reach_the_host(emulator, open_modem, profile, how):
    host, port = open_modem(profile, baud=9600 if how == "baud" else None)
    m = _index(emulator)
    if how == "noise":
        assert emulator.control("uart_noise", m, on=True, seed=3) == {"ok": True}
    cgmr = host.at("AT+CGMR")                                  # (not counted: no scenario yet)
    emulator.run_scenario({"step": [{"after": {"command": "+CGMR"}, "op": "reboot", "ms": 50, "modem": m}]})
    host.write(b"AT+CGMR\r")
    got = host.read_until(b"+CPIN: READY\r\n", timeout=5)
    assert got.startswith(cgmr), got


# == control requests racing the host ============================================================
def test_slow_toggled_by_four_clients_while_the_host_pipelines_sixty_commands(emulator, ec2x_on, ctl_path,
                                                                             strict_log):
    host, port = ec2x_on                                       # (manual time: slow answers wait)
    want = b""
    lines = b""
    for i in range(60):
        lines += b"AT+CGMR\r" if i % 2 else b"AT+CSQ\r"
    stop = threading.Event()
    errors: list = []

    def toggler(k: int) -> None:
        c = Ctl(ctl_path)
        try:
            n = 0
            while not stop.is_set():
                cmd = "+CGMR" if k % 2 else "+CSQ"
                ms = 300 if n % 2 == 0 else 0
                answer = c.ask(json.dumps({"op": "slow", "command": cmd, "ms": ms}).encode())
                if answer != {"ok": True}:
                    errors.append(answer)
                n += 1
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            c.close()

    threads = [threading.Thread(target=toggler, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        host.write(lines)
        got = b""
        deadline = time.monotonic() + 15
        while got.count(b"OK\r\n") < 60 and time.monotonic() < deadline:
            emulator.advance(port, 0.35)                       # any slow answer comes
            got += host.quiet_for(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not errors, errors[:3]
    emulator.run(lambda: (port.modem.interpreter.delays.clear()))
    got += host.quiet_for(0.2)
    for i in range(60):
        want += (b"\r\nEC25EFAR06A06M4G\r\n" if i % 2 else b"\r\n+CSQ: 24,99\r\n") + OK
    assert got == want
    assert host.at("AT") == OK


# == values of JSON no ordinary client sends ====================================================
def test_json_nan_infinity_and_odd_numbers_get_clear_errors_and_change_nothing(emulator, ec2x_on, ctl_path,
                                                                              strict_log):
    host, port = ec2x_on
    c = Ctl(ctl_path)
    try:
        for req in (b'{"op": "net", "latency_ms": NaN}', b'{"op": "net", "latency_ms": Infinity}',
                    b'{"op": "net", "kbps": -Infinity}', b'{"op": "net", "loss": NaN}',
                    b'{"op": "net", "latency_ms": 1e400}', b'{"op": "state", "modem": 1.0}',
                    b'{"op": "state", "modem": NaN}', b'{"op": "reboot", "ms": 1e2}',
                    b'{"op": "slow", "command": "+CSQ", "ms": 100000000000000000000000000000}',
                    b'{"op": "dns_fail", "count": -1}', b'{"op": "urc", "text": null}',
                    b'{"op": "net", "seed": 18446744073709551616}', b'{"op": "uart_noise", "on": 1}'):
            answer = c.ask(req)
            assert answer["ok"] is False and answer["error"], (req, answer)
            assert "internal error" not in answer["error"], (req, answer)
        state = c.ask(b'{"op": "state"}')
        assert state["ok"] is True and state["mode"] == "COMMAND"
        assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n" + OK      # nothing slow, nothing noisy
        assert emulator.run(lambda: port.modem.interpreter.delays) == {}
    finally:
        c.close()


# == a traced session under a scenario of faults, shown and replayed =============================
SCENARIO = '''
description = "field log: URC, reset after the first read, network lost and back, a power cut"
[[step]]
after = { command = "+QSSLOPEN" }
op = "urc"
text = "+QIND: \\"hello\\""
[[step]]
after = { command = "+QSSLRECV", count = 1 }
op = "drop"
socket = 1
how = "rst"
[[step]]
after = { command = "+QSSLCLOSE" }
op = "register"
stat = 0
[[step]]
after = { command = "+CREG", kind = "read" }
op = "register"
stat = 1
[[step]]
after = { command = "+CGMR" }
op = "reboot"
ms = 100
'''


def test_a_session_under_a_fault_scenario_is_traced_shown_and_replayed(emulator, open_modem, echo, tmp_path,
                                                                     capsys, strict_log):
    path, scenario = tmp_path / "field.trace", tmp_path / "field.toml"
    scenario.write_text(SCENARIO)
    host, port = open_modem("ec2x", trace=str(path))
    run = emulator.run_scenario(scenario)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at("AT+CREG=2;+CGREG=2") == OK
    assert host.at(f'AT+QSSLOPEN=1,1,1,"{HOST}",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 1,0\r\n", timeout=5) == b'\r\n+QIND: "hello"\r\n\r\n+QSSLOPEN: 1,0\r\n'
    assert host.send_data(1, b"hi0") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'"recv",1\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",1\r\n'
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 3\r\nhi0\r\n" + OK
    assert host.read_until(b'"closed",1\r\n', timeout=5) == b'\r\n+QSSLURC: "closed",1\r\n'
    assert host.at("AT+QSSLCLOSE=1") == OK
    assert host.read_until(b'"pdpdeact",1\r\n', timeout=5) == \
        b'\r\n+CREG: 0\r\n\r\n+CGREG: 0\r\n\r\n+QIURC: "pdpdeact",1\r\n'
    assert host.at("AT+CREG?") == b"\r\n+CREG: 2,0\r\n" + OK
    cgmr = host.at("AT+CGMR")
    assert re.fullmatch(rb'\r\n\+CREG: 1,"[0-9A-F]+","[0-9A-F]+",7\r\n\r\n\+CGREG: 1,"[0-9A-F]+","[0-9A-F]+",7\r\n'
                        rb"\r\nEC25EFAR06A06M4G\r\n" + re.escape(OK), cgmr), cgmr
    assert host.read_until(b"PB DONE\r\n", timeout=5) == EC2X_BOOT
    assert host.at("AT+CREG?") == b"AT+CREG?\r\r\n+CREG: 0,1\r\n" + OK      # (echo back on: a restart)
    rs.flush(emulator)
    assert emulator.run(lambda: [(f["op"], f["ok"]) for f in run.fired]) == \
        [("urc", True), ("drop", True), ("register", True), ("register", True), ("reboot", True)]
    assert [r["op"] for r in rs.records(path) if r["kind"] == "scenario"] == \
        ["urc", "drop", "register", "register", "reboot"]
    capsys.readouterr()
    assert show_main([str(path)]) == 0
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err and "reboot" in shown.out and "drop" in shown.out
    rs.replays(capsys, path, "--scenario", str(scenario))
    code, out = rs.replay(capsys, path)                    # without the faults: a difference, named
    assert code == 1 and "difference" in out, out


ML302_SCENARIO = '''
description = "ML302 field log: the 2nd send fails, the server resets after it, a URC"
[[step]]
when = { command = "+QSSLSEND", count = 2 }
op = "send_fail"
socket = 0
[[step]]
after = { command = "+QSSLSEND", count = 2 }
op = "drop"
socket = 0
how = "rst"
[[step]]
after = { command = "+QSSLCLOSE" }
op = "urc"
text = "+FIELD: done"
'''


def test_an_ml302_session_under_a_fault_scenario_replays_with_it(emulator, open_modem, echo, tmp_path, capsys,
                                                                 strict_log):
    path, scenario = tmp_path / "ml302.trace", tmp_path / "ml302.toml"
    scenario.write_text(ML302_SCENARIO)
    host, port = open_modem("ml302", trace=str(path))
    run = emulator.run_scenario(scenario)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 0,0\r\n", timeout=5) == b"\r\n+QSSLOPEN: 0,0\r\n"
    for i, result in ((0, b"SEND OK"), (1, b"SEND FAIL")):
        host.write("AT+QSSLSEND=0\r")
        assert host.read_until(b"> ", timeout=5) == b"\r\n> "
        host.write(b"hi%d\x1a" % i)
        got = host.read_until(result + b"\r\n", timeout=5)
        assert got.endswith(b"\r\n" + result + b"\r\n"), got
        if i == 0:      # the echo's URC, before the next prompt (it may come before the next command)
            assert host.read_until(b'+QSSLURC: "recv",1,0\r\n', timeout=5) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    got = host.read_until(b'"close",0\r\n', timeout=5)
    assert got.endswith(b'\r\n+QSSLURC: "close",0\r\n'), got
    close = host.at("AT+QSSLCLOSE=0")
    assert close == OK, close
    assert host.read_until(b"+FIELD: done\r\n", timeout=5) == b"\r\n0,CLOSE OK\r\n\r\n+FIELD: done\r\n"
    assert host.at("AT") == OK
    rs.flush(emulator)
    assert emulator.run(lambda: [(f["op"], f["ok"]) for f in run.fired]) == \
        [("send_fail", True), ("drop", True), ("urc", True)]
    capsys.readouterr()
    assert show_main([str(path), "--socket", "0"]) == 0
    assert "Traceback" not in capsys.readouterr().out
    rs.replays(capsys, path, "--scenario", str(scenario))


# == faults during a handshake's second flight ===================================================
HANDSHAKE_FAULTS = {
    # (profile, access mode, fault): what the host sees once the open started
    ("ec2x", 0, "pdp_deact"): b'\r\nOK\r\n\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLOPEN: 1,570\r\n',
    ("ec2x", 0, "register"): b'\r\nOK\r\n\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLOPEN: 1,570\r\n',
    ("ec2x", 0, "net"): b"\r\nOK\r\n\r\n+QSSLOPEN: 1,0\r\n",
    ("ec2x", 2, "pdp_deact"): b'\r\nERROR\r\n\r\n+QIURC: "pdpdeact",1\r\n',
    ("ec2x", 2, "register"): b'\r\nERROR\r\n\r\n+QIURC: "pdpdeact",1\r\n',
    ("ec2x", 2, "net"): b"\r\nCONNECT\r\n",
    ("ml302", 0, "pdp_deact"): b"\r\nOK\r\n\r\n+QSSLOPEN: 0,-1\r\n",
    ("ml302", 0, "register"): b"\r\nOK\r\n\r\n+QSSLOPEN: 0,-1\r\n",
    ("ml302", 0, "net"): b"\r\nOK\r\n\r\n+QSSLOPEN: 0,0\r\n",
    ("ml302", 1, "pdp_deact"): b"\r\n+QSSLOPEN: 0,-1\r\n\r\nERROR\r\n",
    ("ml302", 1, "register"): b"\r\n+QSSLOPEN: 0,-1\r\n\r\nERROR\r\n",
    ("ml302", 1, "net"): b"\r\nCONNECT\r\n",
}


@pytest.mark.parametrize("profile, mode, fault", list(HANDSHAKE_FAULTS))
def test_a_fault_while_the_handshakes_second_flight_is_on_its_way(emulator, open_modem, echo, profile, mode,
                                                                  fault, strict_log):
    """Latency 300 ms each way on the modem's clock: the connect takes 0.6 s, the ClientHello
    and the server's flight 0.3 s each; at 1.2 s the client's second flight is on its way.
    Then the context goes (pdp_deact / the network drops the module) or the latency is lifted
    (the bytes in flight still arrive): one result, nothing later."""
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        sid, line = 1, f'AT+QSSLOPEN=1,1,1,"{HOST}",443,{mode}\r'
    else:
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert host.at("AT+CGACT=1,1").endswith(OK)
        sid, line = 0, f'AT+QSSLOPEN=0,0,"{HOST}",443,{mode}\r'
    m = _index(emulator)
    assert emulator.control("net", m, latency_ms=300) == {"ok": True}
    host.write(line)
    for _ in range(4):
        emulator.wait_received(port, host.written)
        emulator.advance(port, 0.3)
        time.sleep(0.15)                                       # (the loopback server answers)
    assert _sock_state(emulator, sid, m) == "OPENING"
    answer = {"pdp_deact": lambda: emulator.control("pdp_deact", m, cid=1),
              "register": lambda: emulator.control("register", m, stat=0),
              "net": lambda: emulator.control("net", m)}[fault]()
    assert answer == {"ok": True}
    want = HANDSHAKE_FAULTS[(profile, mode, fault)]
    got = b""
    for _ in range(20):
        emulator.advance(port, 0.3)
        got += host.quiet_for(0.05)
        if len(got) >= len(want):
            break
    assert got == want
    emulator.advance(port, 90)                                 # past every timeout: nothing more
    assert host.quiet_for(0.2) == b""
    if fault == "net":
        assert _sock_state(emulator, sid, m) == "CONNECTED"
    else:
        assert _sock_state(emulator, sid, m) is None
        assert host.at("AT") == OK


# == --trace to a pipe nobody reads ==============================================================
# Found here: trace.TraceWriter wrote each record with a blocking write(2) on the event loop; a
# --trace path that is a pipe (/dev/stderr, /dev/stdout, a FIFO, bash's >(...)) whose reader did
# not keep up blocked the loop: every modem stopped answering and SIGTERM was never handled (and a
# FIFO with no reader blocked the start-up in open(2)).  Fixed (2026-12-06): such a path is
# refused, one line and exit 2 (README: a refused --trace path), before anything is opened.
def test_trace_to_a_pipe_or_fifo_is_refused_at_start_and_a_regular_file_works(tmp_path):
    r, w = os.pipe()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    try:
        for target, stderr in (("/dev/stderr", w), (str(fifo), subprocess.PIPE)):
            proc = start("--offline", "--state-dir", str(tmp_path / "st"), "--link", str(tmp_path / "m"),
                         "--trace", target, stderr=stderr)
            try:
                out, err = proc.communicate(timeout=20)         # (a FIFO nobody reads: no hang)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            assert proc.returncode == 2 and out == ""
            if stderr is w:
                os.set_blocking(r, False)
                err = os.read(r, 65536).decode()
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "--trace" in lines[0] and "not a regular file" in lines[0], err
            assert not os.path.exists(tmp_path / "m")
    finally:
        os.close(w)
        os.close(r)
    trace = tmp_path / "ok.trace"
    proc = start("--offline", "--state-dir", str(tmp_path / "st2"), "--link", str(tmp_path / "m2"),
                 "--trace", str(trace))
    host = None
    try:
        assert proc.stdout.readline().strip() == str(tmp_path / "m2")
        host = Host(str(tmp_path / "m2"))
        assert host.at("AT+CGMR", timeout=3).endswith(OK)
    finally:
        if host is not None:
            host.close()
        assert stop(proc) == 0
    assert '"AT+CGMR' in trace.read_text() or "CGMR" in trace.read_text()
