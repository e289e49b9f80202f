"""Adversarial tests of the field tools, twelfth pass (not repeating test_adversarial_field_tools.py,
_2 ... _11, _fuzz, test_control.py, test_scenario.py, test_trace*.py, test_plugin.py,
test_adversarial_replay*.py, test_review_replay_changes*.py, test_adversarial_plugin_users.py).

Covered here:

- scenario triggers see commands only: text that looks like AT+CSQ / AT+QICLOSE carried as the
  payload of an AT+QISEND prompt or as a transparent-mode stream fires no `when`/`after` step;
  the control `state` shows the port's mode ("data prompt", "online data") meanwhile;
- the control socket's request size limit at its exact boundary (64 KiB without the newline
  answered, one byte more refused and that connection closed, the others untouched);
- control clients that flood requests and never read their answers, then SIGTERM: exit 0 at
  once, the socket file removed, the modem served its host meanwhile;
- two CLI emulators on one --control path after the first's socket file was removed (a CI
  job's cleanup): the first one's exit must not remove the second's socket (was a bug, fixed);
- a scenario `net` step with a `kbps` the op always refuses (0 < kbps < 0.1) passes the
  start-up checks and fails at its time with a WARNING (was a bug, fixed): every other argument
  the op refuses is a start-up error (exit 2, one line);
- an AT log captured live and saved with mixed line ends (LF, CRLF, CR, LF CR) in one file
  replays; an edited answer in it is named with exit 1;
- the plugin: a module-wide modem_profile marker silently overrides one test's indirect
  parametrization of `modem` (was a bug, fixed);
- a --trace file renamed by log rotation mid-run keeps the whole session (a control URC sent
  after the rename too), `trace show` lists it and it replays with the URC as a scenario;
- a control `urc` after a control `reboot`, or a scenario `after` step on AT+CFUN=1,1, reaches
  the host before RDY (was a bug, fixed);
- `after` steps on AT+QISWTMD=<id>,2 and ATO fire at the escape's OK, not inside the stream;
- `--trace /dev/stdout` with stdout redirected to a file: the trace's first record is
  overwritten by the device-path line (was a bug, fixed);
- a trace piped into `replay /dev/stdin` (`<(zcat trace.gz)`) is "no records", exit 2, while
  `trace show` and an AT log from a pipe work (was a bug, fixed).
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
from emulator.tools.control import MAX_REQUEST, ControlServer
from tests.e2e import replay_support as rs
from tests.e2e.cli_support import Cli, start
from tests.e2e.socket_support import qiopen, qird
from tests.e2e.test_adversarial_field_tools_2 import _escape

OK = b"\r\nOK\r\n"


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def _ask(path, request: bytes) -> tuple[dict | None, bytes]:
    """One request on a fresh connection: (its answer line as JSON, what followed until EOF
    or 0.3 s of silence)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(str(path))
    try:
        s.sendall(request)
        buf = b""
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return None, buf
            buf += chunk
        line, rest = buf.split(b"\n", 1)
        s.settimeout(0.3)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    rest += b"<EOF>"
                    break
                rest += chunk
        except socket.timeout:
            pass
        return json.loads(line), rest
    finally:
        s.close()


# == (1) scenario triggers and command text carried as data =========================================
def test_scenario_triggers_ignore_command_text_carried_as_data(emulator, ec2x_on, tcp_echo, strict_log):
    """Bytes that look like commands but are data -- the payload at an AT+QISEND prompt, a
    transparent-mode stream -- are no commands: `when`/`after` steps watching AT+CSQ and
    AT+QICLOSE do not fire on them, the data reaches the server and comes back byte for byte,
    and `state` shows the port's mode at the prompt and online.  The real commands then fire
    each step once, in its place."""
    host, port = ec2x_on
    run = emulator.run_scenario({"step": [
        {"when": {"command": "+CSQ"}, "op": "urc", "text": "+QIND: CSQ-WHEN"},
        {"after": {"command": "+QICLOSE"}, "op": "urc", "text": "+QIND: CLOSE-AFTER"},
    ]})
    qiopen(host, 0)
    host.write(b"AT+QISEND=0,20\r")
    assert host.read_until(b"> ", timeout=5) == b"\r\n> "
    assert emulator.control("state")["mode"] == "DATA"
    host.write(b"AT+CSQ\rAT+QICLOSE=0\r")
    assert host.read_until(b"SEND OK\r\n", timeout=5) == b"\r\nSEND OK\r\n"
    host.seen(b'+QIURC: "recv",0\r\n', timeout=5)
    assert qird(host, 0) == (b"\r\n+QIRD: 20\r\n", b"AT+CSQ\rAT+QICLOSE=0\r")
    assert host.at("AT+QISWTMD=0,2") == b"\r\nCONNECT\r\n"
    assert emulator.control("state")["mode"] == "ONLINE"
    host.write(b"AT+CSQ\r\nAT+QICLOSE=0\r\n")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.2)                       # (AT+QICFG "transwaittm" on manual time)
    assert host.read_until(b"AT+QICLOSE=0\r\n", timeout=5) == b"AT+CSQ\r\nAT+QICLOSE=0\r\n"
    assert _escape(emulator, port, host) == OK
    assert emulator.control("state")["mode"] == "COMMAND"
    assert emulator.run(lambda: list(run.fired)) == []
    assert tcp_echo.connections[-1].received == b"AT+CSQ\rAT+QICLOSE=0\rAT+CSQ\r\nAT+QICLOSE=0\r\n"
    got = host.at("AT+CSQ")
    assert re.fullmatch(rb"\r\n\+QIND: CSQ-WHEN\r\n\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", got), got
    assert host.at("AT+QICLOSE=0") == OK
    assert host.read_until(b"CLOSE-AFTER\r\n", timeout=5) == b"\r\n+QIND: CLOSE-AFTER\r\n"
    assert emulator.run(lambda: [(f["op"], f["ok"]) for f in run.fired]) == [("urc", True), ("urc", True)]


# == (2) the control socket's size limit at its boundary =============================================
def test_a_request_of_exactly_the_size_limit_is_answered_one_byte_more_is_refused(emulator, ec2x_on,
                                                                                   tmp_path, strict_log):
    """MAX_REQUEST (64 KiB) bytes of JSON before the newline are one request (its answer, the
    connection still open); one byte more is the one "request line too long" answer and that
    connection is closed; a request on another connection meanwhile is answered."""
    host, _ = ec2x_on
    path = tmp_path / "c.sock"
    server = ControlServer(emulator.emulator, path)
    emulator.call(server.start())
    try:
        head = b'{"op": "urc", "text": "+QIND: BIG"'
        fit = head + b" " * (MAX_REQUEST - len(head) - 1) + b"}"
        assert len(fit) == MAX_REQUEST == 65536
        answer, rest = _ask(path, fit + b"\n")
        assert (answer, rest) == ({"ok": True}, b"")
        assert host.read_until(b"BIG\r\n", timeout=5) == b"\r\n+QIND: BIG\r\n"
        over = head + b" " * (MAX_REQUEST - len(head)) + b"}"
        answer, rest = _ask(path, over + b"\n")
        assert (answer, rest) == ({"ok": False, "error": "request line too long"}, b"<EOF>")
        answer, rest = _ask(path, b'{"op": "urc", "text": "+QIND: AFTER"}\r\n')
        assert (answer, rest) == ({"ok": True}, b"")
        assert host.read_until(b"AFTER\r\n", timeout=5) == b"\r\n+QIND: AFTER\r\n"
        assert host.quiet_for(0.2) == b""              # the refused request did nothing
        assert host.at("AT") == OK
    finally:
        emulator.call(server.close())


# == (3) clients that never read, then SIGTERM =======================================================
def test_clients_that_never_read_their_answers_then_sigterm_exit_0_promptly(tmp_path):
    """Three control clients write requests until their socket buffers are full and never
    read an answer; the modem answers its host meanwhile; SIGTERM then ends the CLI with exit 0
    within a few seconds, the control socket file removed, no traceback or ERROR line."""
    ctl = tmp_path / "c.sock"
    cli = Cli(tmp_path, "--control", str(ctl))
    clients = []
    try:
        for _ in range(3):
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(ctl))
            s.setblocking(False)
            sent, quiet_since = 0, time.monotonic()
            while time.monotonic() - quiet_since < 0.3:
                try:
                    sent += s.send(b'{"op": "state"}\n' * 64)
                    quiet_since = time.monotonic()
                except BlockingIOError:
                    time.sleep(0.01)
            assert sent > 64 * 1024                       # more than one socket buffer
            clients.append(s)
        host = Host(cli.dev)
        try:
            assert host.at("ATE0").endswith(OK)
            assert re.fullmatch(rb"\r\n\+CSQ: \d+,\d+\r\n\r\nOK\r\n", host.at("AT+CSQ"))
        finally:
            host.close()
        began = time.monotonic()
        cli.stop()                                        # exit 0, no traceback, no ERROR line
        assert time.monotonic() - began < 5
        assert not ctl.exists()
    finally:
        for s in clients:
            s.close()
        cli.kill()


# == (4) two emulators, one --control path ===========================================================
# Was a bug, fixed: an emulator whose --control socket file was removed and taken by a second
# emulator unlinks the second's socket when it exits (ControlServer.close unlinks the path
# unconditionally)
def test_an_exiting_emulator_leaves_another_emulators_control_socket_alone(tmp_path):
    """CI job 1 runs an emulator with --control P; a cleanup step removes P; job 2 starts its
    emulator with --control P (a fresh bind: allowed).  When job 1's emulator then exits, job 2's
    control socket must still be there and answer: job 1 owns a socket file no longer."""
    ctl = tmp_path / "shared.sock"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = Cli(tmp_path / "a", "--control", str(ctl))
    second = None
    try:
        os.unlink(ctl)                                    # the CI cleanup
        second = Cli(tmp_path / "b", "--control", str(ctl), "--profile", "ml302")
        answer, _ = _ask(ctl, b'{"op": "state"}\n')
        assert answer["profile"] == "ml302"
        first.stop()                                      # exit 0, clean log
        assert ctl.is_socket(), "the second emulator's control socket was removed by the first"
        answer, _ = _ask(ctl, b'{"op": "state"}\n')
        assert answer["profile"] == "ml302"
    finally:
        first.kill()
        if second is not None:
            second.kill()


# == (5) a scenario argument the op always refuses ===================================================
def _run_briefly(tmp_path: Path, *args: str, wait: float = 0.8) -> tuple[int | None, str, str]:
    """Start the CLI: (its exit code, stdout, stderr) when it refuses to start; (None, stdout,
    stderr) when it came up (its device line printed): stopped by SIGTERM `wait` s later."""
    proc = start("--offline", "--state-dir", str(tmp_path / "state"), "--link", str(tmp_path / "modem"),
                 *args)
    try:
        first = proc.stdout.readline()                 # the device line, or "" at its exit
        if first:
            time.sleep(wait)
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        return (None if first else proc.returncode), first + out, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_scenario_arguments_the_op_refuses_are_start_up_errors(tmp_path):
    """The start-up checks of a scenario file do what the op itself would refuse: a PDP context
    or socket id the profile does not have, a slow command it does not know, a latency out of
    range -- each is exit 2 with one line naming the step and key, before a device is made."""
    cases = {
        'op = "pdp_deact"\ncid = 17\n': "step 1: key cid: 17 is not a PDP context of profile ec2x (1-16)",
        'op = "send_fail"\nsocket = 12\n': "step 1: key socket: 12 is not a socket id of profile ec2x (0-11)",
        'op = "slow"\ncommand = "+NOPE"\nms = 5\n': "step 1: key command: '+NOPE' is not a command of profile ec2x",
        'op = "net"\nlatency_ms = 600001\n': "step 1: key latency_ms: must be in 0..600000, got 600001",
    }
    for n, (body, message) in enumerate(cases.items()):
        f = tmp_path / f"s{n}.toml"
        f.write_text("[[step]]\nat = 0.5\n" + body)
        code, out, err = _run_briefly(tmp_path, "--scenario", str(f))
        assert (code, out, err) == (2, "", f"modem-emulator: scenario {f}: {message}\n")


# Was a bug, fixed: a scenario net step with 0 < kbps < 0.1 (refused by the control op) passes
# the start-up checks and only fails with a WARNING when it fires (scenario.ARGS['net'] checks
# kbps as 0..10_000_000)
def test_a_scenario_net_step_with_a_kbps_the_op_refuses_is_a_start_up_error(tmp_path):
    f = tmp_path / "slowlink.toml"
    f.write_text('[[step]]\nat = 0.2\nop = "net"\nkbps = 0.05\n')
    code, out, err = _run_briefly(tmp_path, "--scenario", str(f), "--log-level", "INFO")
    _no_traceback(err)
    assert "WARNING" not in err, err
    assert (code, out) == (2, "")
    assert err.startswith(f"modem-emulator: scenario {f}: step 1: key kbps: "), err


# == (6) an AT log with every line-end style in one file =============================================
MIXED_STEPS = ["AT+CMEE=2", "AT+CGMM", "AT+CGMI", 'AT+QSSLCFG="sslversion",1', "AT+QSSLCLOSE=99",
               "AT+CPIN?", "AT+CMEE=0", "AT+QSSLCLOSE=99", "ATI"]
ENDS = ["\n", "\r\n", "\r", "\n\r"]


def test_a_live_at_log_saved_with_mixed_line_ends_replays_and_an_edited_answer_is_named(open_modem, tmp_path,
                                                                                      capsys):
    """A log written by tools that disagree on line ends (a logger's LF, a terminal's CRLF, a
    CR-only serial monitor, LF CR) in ONE file, taken from a live EC2x session: it replays with
    no difference; the same file with the AT+CGMM answer edited names that step, exit 1."""
    from tests.e2e.test_adversarial_field_tools_6 import _capture
    host, _ = open_modem("ec2x")
    lines = [">> ATE0", "<< OK"] + _capture(host, MIXED_STEPS)
    assert lines[lines.index(">> AT+CGMM"):][:3] == [">> AT+CGMM", "<< EC25", "<< OK"]
    body = "".join(x + ENDS[i % len(ENDS)] for i, x in enumerate(lines))
    path = tmp_path / "mixed.log"
    path.write_bytes(body.encode("latin-1"))
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, f"replayed {len(MIXED_STEPS) + 1} lines: no difference\n")
    edited = tmp_path / "edited.log"
    edited.write_bytes(body.replace("<< EC25", "<< EC21", 1).encode("latin-1"))
    code, out = rs.replay(capsys, edited)
    assert (code, out) == (1, "first difference: step 3 (AT+CGMM):\n"
                              "  expected: ['EC21', 'OK']\n  got:      ['EC25', 'OK']\n")


# == (7) the plugin: a profile marker and an indirect parametrization on one test ====================
def _run_project(tmp_path: Path, files: dict[str, str], *args: str) -> tuple[int, str]:
    project = tmp_path / "fw"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (project / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "-p", "no:randomly", *args, str(project)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


CONFLICT_TESTS = '''
import pytest
import serial

pytestmark = pytest.mark.modem_profile("ec2x")          # the module's default


@pytest.mark.parametrize("modem", ["ml302"], indirect=True)   # this one test: the ML302
def test_the_ml302_test_of_an_ec2x_module(modem):
    ser = serial.Serial(modem.path, 115200, timeout=3)
    ser.write(b"ATE0\\r")
    ser.read_until(b"OK\\r\\n")
    ser.write(b"AT+CGMM\\r")
    got = ser.read_until(b"OK\\r\\n")
    ser.close()
    assert (modem.profile, got) == ("ml302", b"\\r\\nML302\\r\\n\\r\\nOK\\r\\n")
'''


# Was a bug, fixed: the plugin's `modem` fixture silently ignores an explicit indirect
# parametrization when a modem_profile marker applies too (module pytestmark): a test with id
# [ml302] runs an EC2x (plugin.py:_profile_of prefers the marker)
def test_an_indirect_profile_parameter_is_not_silently_overridden_by_a_module_marker(tmp_path):
    plain = CONFLICT_TESTS.replace('pytestmark = pytest.mark.modem_profile("ec2x")', "").replace(
        "test_the_ml302_test_of_an_ec2x_module", "test_the_ml302_test")
    code, out = _run_project(tmp_path, {"test_fw.py": CONFLICT_TESTS, "test_plain.py": plain}, "-p", "no:xdist")
    _no_traceback(out)
    assert "PASSED test_plain.py::test_the_ml302_test[ml302]" in out, out      # (the check itself is right)
    assert code == 0, out
    assert "PASSED test_fw.py::test_the_ml302_test_of_an_ec2x_module[ml302]" in out, out


# == (8) a trace rotated away (mv) while the emulator writes it =====================================
def test_a_trace_renamed_mid_run_by_log_rotation_keeps_the_whole_session(tmp_path, capsys):
    """A CI job's log rotation renames the --trace file while the emulator runs (mv T T.1, no
    copytruncate): the emulator goes on writing the same file, so T.1 holds the whole session
    -- a control URC sent after the rename too -- `trace show` lists it and it replays with the
    URC as a scenario step; no new T appears."""
    trace, ctl = tmp_path / "field.trace", tmp_path / "c.sock"
    cli = Cli(tmp_path, "--trace", str(trace), "--control", str(ctl))
    try:
        host = Host(cli.dev)
        try:
            assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
            assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
            os.rename(trace, tmp_path / "field.trace.1")
            assert host.at("AT+CGMI") == b"\r\nQuectel\r\n\r\nOK\r\n"
            answer, _ = _ask(ctl, b'{"op": "urc", "text": "+QIND: ROTATED"}\n')
            assert answer == {"ok": True}
            assert host.read_until(b"ROTATED\r\n", timeout=5) == b"\r\n+QIND: ROTATED\r\n"
            assert host.at("AT+QSSLCLOSE=99") == b"\r\nERROR\r\n"
        finally:
            host.close()
        cli.stop()
    finally:
        cli.kill()
    rotated = tmp_path / "field.trace.1"
    assert not trace.exists()
    capsys.readouterr()
    from emulator.tools.trace import show_main
    assert show_main([str(rotated)]) == 0
    shown = capsys.readouterr().out
    for line in ("== AT+CGMM -> \\r\\nEC25\\r\\n\\r\\nOK\\r\\n", "== AT+CGMI -> \\r\\nQuectel\\r\\n\\r\\nOK\\r\\n",
                 "== AT+QSSLCLOSE=99 -> \\r\\nERROR\\r\\n", "the modem stopped (the recording ends)"):
        assert line in shown, shown
    assert re.search(r'm0 control urc \{"text": "\+QIND: ROTATED"\}', shown), shown
    scenario = tmp_path / "rotated.toml"
    scenario.write_text('[[step]]\nafter = { command = "+CGMI" }\nop = "urc"\ntext = "+QIND: ROTATED"\n')
    code, out = rs.replay(capsys, rotated, "--scenario", str(scenario))
    assert (code, out) == (0, "replayed 4 commands, 37 host bytes: no difference\n")


# == (9) a URC injected while the module restarts (before RDY) =======================================
EC2X_BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"


# Was a bug, fixed: a control/scenario `urc` raised between a restart and its RDY (control
# reboot, AT+CFUN=1,1 + a scenario `after` step) is written to the host before RDY, while the
# module's UART is not up (Modem.urc only checks self.powered)
@pytest.mark.parametrize("how", ["control_reboot", "scenario_after_cfun"])
def test_a_urc_raised_before_rdy_never_precedes_rdy(emulator, open_modem, how, strict_log):
    """After a restart nothing comes out of the module before RDY (the UART is not up; the
    start-up URCs are its first output).  A URC a field scenario injects right after AT+CFUN=1,1
    (an `after` step) or a control `urc` sent right after a control `reboot` must not reach the
    host ahead of RDY: the host's first bytes after the restart are RDY's."""
    host, port = open_modem("ec2x", manual_time=True)
    if how == "control_reboot":
        assert emulator.control("reboot", ms=300) == {"ok": True}
        assert emulator.control("urc", text="+QIND: EARLY") == {"ok": True}
    else:
        emulator.run_scenario({"step": [{"after": {"command": "+CFUN", "kind": "write"}, "op": "urc",
                                         "text": "+QIND: EARLY"}]})
        assert host.at("AT+CFUN=1,1") == OK
    before_rdy = host.quiet_for(0.3)
    emulator.advance(port, 1.0)
    after = host.read_until(b"PB DONE\r\n", timeout=5)
    assert before_rdy + after in (EC2X_BOOT, EC2X_BOOT.replace(b"\r\nRDY\r\n", b"\r\nRDY\r\n\r\n+QIND: EARLY\r\n"),
                                  EC2X_BOOT + b"\r\n+QIND: EARLY\r\n"), before_rdy + after
    assert host.at("AT") == b"AT\r\r\nOK\r\n"              # (the restart brought echo back)


# == (10) `after` steps on the commands that enter online mode =======================================
def test_after_steps_on_qiswtmd_and_ato_fire_when_online_mode_ends(emulator, ec2x_on, tcp_echo, strict_log):
    """AT+QISWTMD=<id>,2 and ATO answer CONNECT and put the port online: an `after` step on them
    waits until the port is idle again -- the escape's OK -- as one on a transparent open does;
    the stream in between reaches the server untouched and nothing is written into it."""
    host, port = ec2x_on
    qiopen(host, 0)
    run = emulator.run_scenario({"step": [
        {"after": {"command": "+QISWTMD"}, "op": "urc", "text": "+QIND: SWITCHED"},
        {"after": {"command": "O", "kind": "exec"}, "op": "urc", "text": "+QIND: RESUMED"}]})
    fired = lambda: emulator.run(lambda: [f["step"] for f in run.fired])   # noqa: E731
    assert host.at("AT+QISWTMD=0,2") == b"\r\nCONNECT\r\n"
    host.write(b"one")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.2)
    assert host.read_until(b"one", timeout=5) == b"one"
    assert (host.quiet_for(0.2), fired()) == (b"", [])
    assert _escape(emulator, port, host) == OK
    assert host.read_until(b"SWITCHED\r\n", timeout=5) == b"\r\n+QIND: SWITCHED\r\n"
    host.write(b"ATO\r")
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"two")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.2)
    assert host.read_until(b"two", timeout=5) == b"two"
    assert (host.quiet_for(0.2), fired()) == (b"", [1])
    assert _escape(emulator, port, host) == OK
    assert host.read_until(b"RESUMED\r\n", timeout=5) == b"\r\n+QIND: RESUMED\r\n"
    assert fired() == [1, 2]
    assert tcp_echo.connections[-1].received == b"onetwo"


# == (11) --trace /dev/stdout with stdout redirected to a file =======================================
# Was a bug, fixed: --trace /dev/stdout (stdout redirected to a file, as in a CI job) reopens
# that file with its own offset (not O_APPEND): the device-path line overwrites the trace's
# first record, which is left corrupt (TraceWriter.__init__ / cli trace checks)
def test_a_trace_to_dev_stdout_redirected_to_a_file_is_refused_or_kept_whole(tmp_path):
    """`modem-emulator --trace /dev/stdout > job.log`: stdout is a regular file, so the pipe
    check lets it through.  Either it is refused at start (exit 2, one line), or job.log holds
    the device path line and then whole trace records -- never a record cut by the other
    writer."""
    job = tmp_path / "job.log"
    with open(job, "w") as out, open(tmp_path / "err.log", "w") as err:
        proc = start("--offline", "--state-dir", str(tmp_path / "state"), "--link", str(tmp_path / "modem"),
                     "--trace", "/dev/stdout", stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 20
            while proc.poll() is None and not job.read_text().startswith(str(tmp_path / "modem") + "\n"):
                assert time.monotonic() < deadline, job.read_text()
                time.sleep(0.05)
            if proc.poll() is None:
                host = Host(str(tmp_path / "modem"))
                try:
                    assert host.at("AT+CGMM") == b"AT+CGMM\r\r\nEC25\r\n\r\nOK\r\n"
                finally:
                    host.close()
                proc.send_signal(signal.SIGTERM)
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    log = (tmp_path / "err.log").read_text()
    _no_traceback(log)
    if code == 2:                                         # refused: one line, nothing started
        assert job.read_text() == "" and len(log.splitlines()) == 1 and "/dev/stdout" in log, log
        return
    assert code == 0, log
    first, *records = job.read_text().splitlines()
    assert first == str(tmp_path / "modem")
    kinds = [json.loads(line)["kind"] for line in records]          # every record whole
    assert kinds[0] == "start" and kinds[-1] == "stop", kinds


# == (12) a trace replayed from a pipe (`replay <(zcat field.trace.gz)`) ============================
# Was a bug, fixed: `replay /dev/stdin` (or <(zcat trace.gz)) of a trace is exit 2 'no modem 0
# in the trace (it has: no records)': replay_main reads the file once to sniff it, then
# read_trace opens it again and a pipe is empty by then (trace show and an AT log from a pipe
# work)
def test_a_trace_piped_into_replay_replays_as_the_file_does(open_modem, emulator, tmp_path, capsys):
    """CI keeps traces compressed and replays them through a pipe.  `trace show /dev/stdin` and
    an AT log piped in work; a trace piped in must replay as the file itself does."""
    path = tmp_path / "field.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=99") == b"\r\nERROR\r\n"
    rs.flush(emulator)
    code, from_file = rs.replay(capsys, path)
    assert code == 0 and from_file.endswith(": no difference\n"), from_file
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def piped(*argv: str, data: bytes) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "emulator", *argv], input=data, capture_output=True,
                              env=env, timeout=60)
    shown = piped("trace", "show", "/dev/stdin", data=path.read_bytes())
    assert shown.returncode == 0 and b"== AT+CGMM -> \\r\\nEC25\\r\\n\\r\\nOK\\r\\n" in shown.stdout, shown
    log = piped("replay", "/dev/stdin", data=b">> AT+CGMM\n<< AT+CGMM\n<< EC25\n<< OK\n")
    assert (log.returncode, log.stdout, log.stderr) == (0, b"replayed 1 lines: no difference\n", b"")
    got = piped("replay", "/dev/stdin", data=path.read_bytes())
    _no_traceback(got.stderr.decode())
    assert (got.returncode, got.stdout.decode() + got.stderr.decode()) == (0, from_file)
