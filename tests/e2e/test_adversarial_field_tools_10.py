"""Adversarial tests of the field tools, tenth pass (not repeating test_adversarial_field_tools.py,
_2 ... _9, _fuzz, test_control.py, test_trace*.py, test_plugin.py, test_adversarial_plugin_users.py).

Covered here, as a firmware team uses the tools in CI and when reproducing field bugs:

- a trace that crosses a socket id used twice, the host closing the port while that id's
  data sits unread (the next program reads it), and an AT+CFUN=1,1 restart: `trace show
  --socket 0` lists both connections, the trace replays with no difference, and the same trace
  with the second connection's server answer changed is named by the replay (so the second
  connection is really compared, not skipped);
- a `--uart` modem (no hang-up line) whose host closes the port in the middle of an AT+QFUPL
  upload and a second program sends the rest: the file is whole, the trace has no hang-up
  record, and it replays with no difference;
- hand-written AT logs in LF, CR LF, CR and mixed line ends whose last line has no line end
  at all (a `<<` answer, a `>>` command cut short), lower-case commands: each replays, and the
  same log with its last answer changed names that step;
- the CLI with `--count 3 --control --trace`: requests naming a modem that does not exist or
  with the wrong JSON types each get one clear error, half a request followed by a hang-up and
  a megabyte of newline-free garbage from other clients do nothing; a reboot of modem 1 while
  modem 0 sits inside an AT+QFUPL upload and modem 2's host is halfway through typing a
  command leaves their bytes exact; after SIGTERM modems 0 and 2 replay from the shared trace,
  whose one control record is modem 1's reboot;
- the pytest plugin in a fresh project (subprocess pytest, tmp dir): the documented markers
  together (modem_manual_time + modem_uart on one test, tls_server with host and port),
  modem.advance() refusing what the README says is ValueError, modem.control() errors, and a
  failing test's report showing the `control` line of the operation it ran.

Bugs (strict xfails, the reason says input, expected, observed):
- the trace records output at the modem's sink, before the UART: what a control reboot
  (PtyPort.discard_output) or a host hang-up drops while it still waits to leave at --baud is in
  the trace as delivered (`trace show` shows an OK the host never got);
- a second `modem-emulator --trace T` refused with exit 1 (its --link, --state-dir or --control in
  use) truncates T first (cli.make_trace before those checks): the running emulator's trace gets
  a hole of NUL bytes and no longer shows or replays;
- modem.advance("5") / None / b"5" raise TypeError, where the README promises ValueError.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.testing.host import Host
from emulator.tools.trace import show_main
from tests.e2e import replay_support as rs
from tests.e2e.socket_support import qiopen, qisend

ROOT = Path(__file__).resolve().parents[2]
OK = b"\r\nOK\r\n"
BOOT = (b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n"
        b"\r\n+QIND: PB DONE\r\n")


def _checksum(data: bytes) -> bytes:
    from emulator.storage.checksum import format_checksum, xor16
    return format_checksum(xor16(data), pad=False).encode()


def _settle(emulator, path: Path, kind: str | None = None) -> None:
    """The trace complete: one loop round trip, and (kind) until such a record is there."""
    rs.flush(emulator)
    if kind is not None:
        deadline = time.monotonic() + 5
        while f'"kind": "{kind}"' not in path.read_text():
            assert time.monotonic() < deadline, f"no {kind} record"
            time.sleep(0.02)


# == (1) a socket id used twice, a hang-up with unread data, a restart ===============================
@pytest.fixture
def reuse_trace(emulator, open_modem, tcp_echo, tmp_path) -> Path:
    path = tmp_path / "reuse.trace"
    host, port = open_modem("ec2x", trace=str(path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    qiopen(host, 0)
    assert qisend(host, 0, b"first") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    assert host.at("AT+QIRD=0,100") == b"\r\n+QIRD: 5\r\nfirst\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=0") == OK
    qiopen(host, 0)                                      # the same id, a new connection
    assert qisend(host, 0, b"second") == b"\r\nSEND OK\r\n"
    assert host.read_until(b'+QIURC: "recv",0\r\n') == b'\r\n+QIURC: "recv",0\r\n'
    host.close()                                         # the data unread
    _settle(emulator, path, "hangup")
    nxt = Host(port.path)                                # the next program on the port
    emulator.run(port.port.look_for_host)
    assert nxt.quiet_for(0.2) == b""
    assert nxt.at("AT+QIRD=0,100") == b"\r\n+QIRD: 6\r\nsecond\r\n\r\nOK\r\n"
    assert nxt.at("AT+CFUN=1,1") == OK
    assert nxt.read_until(b"PB DONE\r\n") == BOOT
    assert nxt.at("ATE0") == b"ATE0\r\r\nOK\r\n"         # echo back on after the restart
    assert nxt.at("AT+QISTATE") == OK                    # the restart took the socket
    nxt.close()
    _settle(emulator, path)
    return path


def test_a_trace_across_an_id_reused_a_hang_up_with_unread_data_and_a_restart(reuse_trace, capsys):
    capsys.readouterr()
    assert show_main([str(reuse_trace), "--socket", "0"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("socket 0 open TCP tcp.example:7000") == 2, shown
    assert shown.count("socket 0 closed by the host") == 1, shown
    assert "|first|" in shown and "|second|" in shown, shown
    assert "the host closed the port" not in shown, shown           # --socket: that socket's lines only
    code, out = rs.replay(capsys, reuse_trace)
    assert (code, out.strip()) == (0, "replayed 12 commands, 239 host bytes: no difference"), out


def test_the_reused_ids_second_server_answer_changed_is_named(reuse_trace, tmp_path, capsys):
    changed = rs.changed(tmp_path, reuse_trace,
                         lambda r: r["kind"] == "received" and r.get("data") == "second",
                         lambda r: dict(r, data="SECOND"))
    code, out = rs.replay(capsys, changed)
    assert code == 1, out
    assert "first difference: " in out and "AT+QIRD=0,100" in out, out
    assert "SECOND" in out and "second" in out, out


# == (2) --uart: the host closes the port mid-upload, the next program sends the rest ================
def test_a_uart_modem_keeps_an_upload_across_a_port_close_and_the_trace_replays(emulator, open_modem, tmp_path,
                                                                                 capsys):
    path = tmp_path / "uart.trace"
    host, port = open_modem("ec2x", trace=str(path), hangup_on_close=False)
    host.write('AT+QFUPL="UFS:a.txt",10\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"hello")
    emulator.wait_received(port, 5 + 5 + len('AT+QFUPL="UFS:a.txt",10\r'))
    host.close()
    time.sleep(0.2)
    nxt = Host(port.path)
    emulator.run(port.port.look_for_host)
    nxt.write(b"world")
    assert nxt.read_until(b"OK\r\n") == b"\r\n+QFUPL: 10,6868\r\n\r\nOK\r\n"
    nxt.write('AT+QFDWL="UFS:a.txt"\r')
    assert nxt.read_until(b"OK\r\n").startswith(b"\r\nCONNECT\r\nhelloworld\r\n+QFDWL: 10,")
    nxt.close()
    _settle(emulator, path)
    kinds = [r["kind"] for r in rs.records(path)]
    assert "hangup" not in kinds                         # no hang-up line: nothing the modem saw
    code, out = rs.replay(capsys, path)
    assert code == 0 and "no difference" in out, out


# == (3) hand-written AT logs: line ends and a last line with none ===================================
SESSION = [">> ATE0", "<< OK", ">> at+csq", "<< +CSQ: 24,99", "<< OK", ">> AT+CGMM", "<< EC25", "<< OK"]


def _log(lines: list[str], style: str) -> bytes:
    if style == "mixed":
        ends = ["\r\n", "\n", "\r", "\r\r\n"]
        text = "".join(x + ends[i % 4] for i, x in enumerate(lines))
    else:
        end = {"lf": "\n", "crlf": "\r\n", "cr": "\r"}[style]
        text = end.join(lines)                         # the last line: no line end at all
    return text.rstrip("\r\n").encode()


@pytest.mark.parametrize("style", ["lf", "crlf", "cr", "mixed"])
def test_a_hand_written_log_whose_last_line_has_no_line_end_replays(tmp_path, capsys, style):
    path = tmp_path / "field.log"
    path.write_bytes(_log(SESSION, style))
    assert not path.read_bytes().endswith((b"\n", b"\r"))
    assert rs.replay(capsys, path) == (0, "replayed 3 lines: no difference\n")
    # the same log, its unterminated last answer changed: that step is named
    path.write_bytes(_log(SESSION[:-1] + ["<< ERROR"], style))
    code, out = rs.replay(capsys, path)
    assert code == 1
    assert out == ("first difference: step 3 (AT+CGMM):\n  expected: ['EC25', 'ERROR']\n"
                   "  got:      ['EC25', 'OK']\n"), out
    # cut after a command whose answer it never logged (no line end either): as far as it goes
    path.write_bytes(_log(SESSION + [">> AT+CGMR"], style))
    assert rs.replay(capsys, path)[0] == 0


# == (4) the CLI: three modems, one control socket, one trace ========================================
def _ask(ctl: socket.socket, request: bytes) -> dict:
    ctl.sendall(request + b"\n")
    buf = b""
    deadline = time.monotonic() + 5
    while not buf.endswith(b"\n"):
        assert time.monotonic() < deadline, buf
        chunk = ctl.recv(65536)
        assert chunk, buf
        buf += chunk
    return json.loads(buf)


def test_cli_three_modems_bad_requests_garbage_and_a_reboot_touch_only_their_modem(tmp_path):
    ctl_path, trace = tmp_path / "ctl", tmp_path / "three.trace"
    log = open(tmp_path / "emulator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--count", "3",
                             "--link", str(tmp_path / "m{n}"), "--state-dir", str(tmp_path / "state"),
                             "--control", str(ctl_path), "--trace", str(trace)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    hosts: list[Host] = []
    try:
        links = [proc.stdout.readline().strip() for _ in range(3)]
        assert links == [str(tmp_path / f"m{n}") for n in range(3)]
        hosts = [Host(link) for link in links]
        for h in hosts:
            assert h.at("ATE0").endswith(OK)
        ctl = socket.socket(socket.AF_UNIX)
        ctl.connect(str(ctl_path))
        # requests the modems cannot take: one clear answer each, the connection usable
        for request, error in [
            (b'{"op": "state", "modem": 3}', "no modem 3 (there are 3)"),
            (b'{"op": "reboot", "modem": -1}', "no modem -1 (there are 3)"),
            (b'{"op": "reboot", "modem": 1.0}', "no modem 1.0 (there are 3)"),
            (b'{"op": "reboot", "modem": "1"}', "no modem '1' (there are 3)"),
            (b'{"op": "reboot", "modem": true}', "no modem True (there are 3)"),
            (b'{"op": "urc", "modem": 2, "text": 5}', "urc: 'text' must be a string, not 5"),
            (b'{"op": "send_fail", "modem": 1, "socket": 0}', "send_fail: socket 0 is not open"),
            (b'{"op": "pdp_deact", "modem": 0, "cid": 1}', "pdp_deact: PDP context 1 is not active"),
            (b'{"op": "reboot", "modem": 1, "ms": 10, "force": true}', "reboot: unknown argument(s) 'force'"),
        ]:
            assert _ask(ctl, request) == {"ok": False, "error": error}, request
        # half a request, then a hang-up; a megabyte with no line end: neither runs anything
        half = socket.socket(socket.AF_UNIX)
        half.connect(str(ctl_path))
        half.sendall(b'{"op": "reboot", "modem": 0, "ms"')
        half.close()
        junk = socket.socket(socket.AF_UNIX)
        junk.connect(str(ctl_path))
        try:
            junk.sendall(b"\xff{reboot" * (1 << 17))
        except (BrokenPipeError, ConnectionResetError):
            pass
        junk.settimeout(5)
        try:
            answer = junk.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer in (b"", b'{"ok": false, "error": "request line too long"}\n'), answer
        junk.close()
        # modem 0 inside an upload, modem 2's host halfway through a command: reboot modem 1
        hosts[0].write('AT+QFUPL="UFS:f.bin",8\r')
        assert hosts[0].read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
        hosts[0].write(b"\x00\x01+++")
        hosts[2].write("AT+CG")
        time.sleep(0.1)
        assert _ask(ctl, b'{"op": "reboot", "modem": 1, "ms": 10}') == {"ok": True}
        assert hosts[1].read_until(b"PB DONE\r\n") == BOOT
        hosts[0].write(b"\r\n\x1a")
        assert hosts[0].read_until(b"OK\r\n") == b"\r\n+QFUPL: 8,%s\r\n\r\nOK\r\n" % _checksum(b"\x00\x01+++\r\n\x1a")
        hosts[2].write("MM\r")
        assert hosts[2].read_until(b"OK\r\n") == b"\r\nEC25\r\n\r\nOK\r\n"
        for n in (0, 2):
            assert hosts[n].quiet_for(0.2) == b""
        assert hosts[1].at("ATE0") == b"ATE0\r\r\nOK\r\n"
        states = [_ask(ctl, b'{"op": "state", "modem": %d}' % n) for n in range(3)]
        assert [s["name"] for s in states] == ["modem0", "modem1", "modem2"]
        assert all(s["mode"] == "COMMAND" and s["cfun"] == 1 for s in states), states
        ctl.close()
    finally:
        for h in hosts:
            h.close()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        log.close()
    text = (tmp_path / "emulator.log").read_text()
    assert rc == 0 and "Traceback" not in text, text[-3000:]
    for n in range(3):
        assert not os.path.lexists(tmp_path / f"m{n}")
    # the shared trace: modems 0 and 2 replay with no difference
    for n in (0, 2):
        out = subprocess.run([sys.executable, "-m", "emulator", "replay", str(trace), "--modem", str(n)],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and "no difference" in out.stdout, out.stdout + out.stderr
    # the trace holds one control record: modem 1's reboot (no refused request, nothing of the junk)
    controls = [(r["modem"], r["op"], r["args"]) for r in rs.records(trace) if r["kind"] == "control"]
    assert controls == [(1, "reboot", {"ms": 10})]


# == (5) the plugin in a fresh project ===============================================================
USER_TESTS = r'''
import math

import pytest
import serial


def at(ser, data, until=b"OK\r\n"):
    ser.write(data)
    return ser.read_until(until)


@pytest.mark.modem_manual_time
@pytest.mark.modem_uart
def test_manual_time_and_uart_together(modem):
    for bad in (-1, float("nan"), float("inf"), 1e9 + 1):
        with pytest.raises(ValueError):
            modem.advance(bad)
    assert modem.advance(0) == 0
    ser = serial.Serial(modem.path, 115200, timeout=5)
    assert at(ser, b"ATE0\r") == b"ATE0\r\r\nOK\r\n"
    assert at(ser, b'AT+QFUPL="UFS:u.txt",4\r', b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    ser.write(b"ab")
    ser.flush()
    ser.close()                                  # no hang-up line: the upload waits
    ser = serial.Serial(modem.path, 115200, timeout=5)
    assert at(ser, b"cd") == b"\r\n+QFUPL: 4,206\r\n\r\nOK\r\n"
    ser.close()


@pytest.mark.tls_server(mode="echo", host="api.example.com", port=8443)
def test_tls_server_with_its_host_and_port(modem, tls_server):
    assert (tls_server.host, tls_server.port) == ("api.example.com", 8443)
    ser = serial.Serial(modem.path, 115200, timeout=5)
    at(ser, b'ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1\r')
    at(ser, b'AT+QFUPL="RAM:ca.pem",%d\r' % len(tls_server.ca_pem), b"CONNECT\r\n")
    at(ser, tls_server.ca_pem)
    at(ser, b'AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:ca.pem"\r')
    assert at(ser, b'AT+QSSLOPEN=1,1,2,"api.example.com",8443\r', b"+QSSLOPEN: 2,") + ser.read_until(b"\r\n") \
        == b"\r\nOK\r\n\r\n+QSSLOPEN: 2,0\r\n"
    assert modem.control("send_fail", socket=2, count=1) == {"ok": True}
    assert modem.control("send_fail", socket=3) == {"ok": False, "error": "send_fail: socket 3 is not open"}
    assert modem.control("state", modem=1)["ok"] is False
    at(ser, b"AT+QSSLSEND=2,2\r", b"> ")
    assert at(ser, b"hi", b"SEND FAIL\r\n") == b"\r\nSEND FAIL\r\n"
    at(ser, b"AT+QSSLSEND=2,2\r", b"> ")
    assert at(ser, b"hi", b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
    assert tls_server.wait_received(2) == b"hi"
    ser.close()


def test_a_failure_shows_the_control_line(modem):
    assert modem.control("urc", text="+QIURC: \"field\",4411") == {"ok": True}
    ser = serial.Serial(modem.path, 115200, timeout=2)
    ser.write(b"AT+CSQ\r")
    got = ser.read_until(b"OK\r\n")
    ser.close()
    assert got == b"nothing like this"
'''


def test_the_plugin_with_its_markers_together_in_a_fresh_project(tmp_path):
    project = tmp_path / "fw"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_fw.py").write_text(USER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:randomly", str(project)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"^1 failed, 2 passed in ", out, re.M), out
    assert "PASSED test_fw.py::test_manual_time_and_uart_together" in out, out
    assert "PASSED test_fw.py::test_tls_server_with_its_host_and_port" in out, out
    assert "FAILED test_fw.py::test_a_failure_shows_the_control_line" in out, out
    # the failure's trace tail names the control operation, then the URC it wrote
    assert re.search(r"m0 control urc \{\"text\": \"\+QIURC: \\\"field\\\",4411\"\}", out), out
    assert "trace unreadable" not in out and "Traceback" not in out, out


# == (6) output cut at the UART (a power cut, a hang-up) while still leaving at --baud ==============
def _out_before_first_hangup(path: Path) -> tuple[bytes, bytes]:
    """(the output recorded before the first hang-up, the same without the runs a "lost"
    record says never reached the host)."""
    out, lost = b"", []
    for r in rs.records(path):
        if r["kind"] == "hangup":
            break
        if r["kind"] == "io" and r["dir"] == "out":
            out += r["data"].encode("latin-1")
        elif r["kind"] == "lost":
            lost.append((r["from"], r["from"] + r["bytes"]))
    delivered, at = b"", 0
    for start, end in sorted(lost):
        delivered += out[at:start]
        at = max(at, end)
    return out, delivered + out[at:]


# Was a bug, fixed: the trace recorded output a restart or a hang-up dropped (queued at --baud,
# or unread in the pty) as if the host had it; PtyPort.on_output_lost now adds a "lost" record
# naming that run of the output (trace show prints it).
@pytest.mark.parametrize("cut", ["control_reboot", "host_hangup"])
def test_the_trace_records_only_the_output_that_reached_the_host(emulator, open_modem, tmp_path, cut):
    path = tmp_path / "cut.trace"
    host, port = open_modem("ec2x", trace=str(path), baud=1200)      # 120 bytes/s
    host.write("ATI;+CGMR;+CGMM;+CGMI;+CGSN\r")                        # ~110 bytes: ~0.9 s to leave
    got = b"ATE0\r\r\nOK\r\n" + host.read_until(b"Quectel\r\n")
    assert got == b"ATE0\r\r\nOK\r\n\r\nQuectel\r\n"
    if cut == "control_reboot":                                       # the power goes mid-answer
        assert emulator.control("reboot", ms=10) == {"ok": True}
        boot = host.read_until(b"+QIND: PB DONE\r\n")
        # the rest of the answer: never -- but what left at 120 bytes/s before the control
        # request reached the loop (a few bytes under load: "EC2" in a full run) did
        assert boot.endswith(BOOT) and len(boot) - len(BOOT) < 12, boot
        assert b"EC25\r\nRevision".startswith(boot[:len(boot) - len(BOOT)]), boot
        host.close()
    else:                                                             # the host goes mid-answer
        host.close()
        _settle(emulator, path, "hangup")
        nxt = Host(port.path)
        emulator.run(port.port.look_for_host)
        assert nxt.quiet_for(1.2) == b""                              # nor to the next program
        nxt.close()
    _settle(emulator, path, "hangup")
    recorded, delivered = _out_before_first_hangup(path)
    if cut == "control_reboot":
        got += boot
    assert delivered == got
    assert len(recorded) > len(got) and b"\r\nOK\r\n" in recorded[len(got):]  # (the cut answer's OK)
    from emulator.tools.trace import read_trace, render
    shown = "\n".join(render(read_trace(path)))
    assert re.search(r"\d+ output bytes above \(from byte \d+\) never reached the host: "
                     + ("the modem restarted" if cut == "control_reboot" else "the host closed the port"), shown), shown


# == (7) a second emulator started by mistake on the same paths, refused ==============================
# Was a bug, fixed: cli.make_trace opened T with O_TRUNC before the checks; TraceWriter now locks a
# regular trace file (flock) before it truncates it, and a second writer is refused (exit 1).
@pytest.mark.parametrize("clash", ["--link", "--state-dir", "--control"])
def test_a_refused_second_start_leaves_the_running_emulators_trace_intact(tmp_path, clash):
    from tests.e2e.cli_support import first_line, start, stop
    trace, link, ctl, state = tmp_path / "field.trace", tmp_path / "modem", tmp_path / "ctl", tmp_path / "a"
    first = start("--offline", "--link", str(link), "--state-dir", str(state), "--control", str(ctl),
                  "--trace", str(trace))
    try:
        assert first_line(first) == str(link)
        host = Host(str(link))
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
        other = {"--link": str(tmp_path / "other"), "--state-dir": str(tmp_path / "b"),
                 "--control": str(tmp_path / "ctl2")}
        other[clash] = {"--link": str(link), "--state-dir": str(state), "--control": str(ctl)}[clash]
        second = subprocess.run([sys.executable, "-m", "emulator", "--offline", "--trace", str(trace),
                                 *[x for kv in other.items() for x in kv]],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert second.returncode == 1 and second.stdout == "", second.stderr
        assert len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"--trace {trace}: in use by another trace writer" in second.stderr   # (checked first)
        assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"         # the first one carries on
        host.close()
        time.sleep(0.2)
    finally:
        assert stop(first) == 0
    data = trace.read_bytes()
    assert b"\x00" not in data
    lines = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["line"] for r in lines if r["kind"] == "cmd"] == ["ATE0", "AT+CSQ", "AT+CGMM"]
    assert sum(r["kind"] == "start" for r in lines) == 1
    out = subprocess.run([sys.executable, "-m", "emulator", "replay", str(trace)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "no difference" in out.stdout, out.stdout + out.stderr


# == (8) modem.advance(): "seconds a number 0..1e9, else ValueError" (README) ==========================
@pytest.mark.modem_manual_time
def test_advance_refuses_out_of_range_numbers_with_value_error(modem):
    for bad in (-1, -1e-9, float("nan"), float("inf"), 1e9 + 1):
        with pytest.raises(ValueError):
            modem.advance(bad)
    assert modem.advance(0) == 0
    assert modem.advance(1e9) >= 0                         # the top of the range is taken


# Was a bug, fixed: Timers.advance compared before checking the type (TypeError).
@pytest.mark.modem_manual_time
@pytest.mark.parametrize("bad", ["5", None, b"5", True], ids=["str", "none", "bytes", "bool"])
def test_advance_of_something_that_is_no_number_is_value_error(modem, bad):
    with pytest.raises(ValueError):
        modem.advance(bad)


def test_the_trace_marks_output_the_host_left_unread_and_output_with_no_host(emulator, open_modem, tmp_path):
    """No --baud: an answer the host never read when it closed the port (it waits in the pty,
    flushed at the hang-up) and a URC written while nobody has the port open are in the trace
    as output, each followed by a "lost" record covering exactly those bytes."""
    path = tmp_path / "unread.trace"
    host, port = open_modem("ec2x", trace=str(path))
    host.write("AT+CSQ\r")
    answer = b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    deadline = time.monotonic() + 5
    while host.ser.in_waiting < len(answer):                    # there, and not read
        assert time.monotonic() < deadline
        time.sleep(0.01)
    host.close()
    _settle(emulator, path, "hangup")
    assert emulator.control("urc", text="+QIURC: \"nobody\",1") == {"ok": True}
    _settle(emulator, path, "lost")
    deadline = time.monotonic() + 5
    while path.read_text().count('"kind": "lost"') < 2:
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.02)
    records = rs.records(path)
    out = b"".join(r["data"].encode("latin-1") for r in records if r["kind"] == "io" and r["dir"] == "out")
    lost = [r for r in records if r["kind"] == "lost"]
    assert [(out[r["from"]:r["from"] + r["bytes"]], r["why"]) for r in lost] == [
        (answer, "the host closed the port"),
        (b'\r\n+QIURC: "nobody",1\r\n', "no host has the port open")]
