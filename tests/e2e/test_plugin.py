"""The pytest plugin (emulator/testing/plugin.py, entry point pytest11 "modem_emulator") as a
user meets it: test files in a directory outside this repository, run by pytest in a
subprocess, with nothing but the installed package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# README's example, read from README.md itself (the block under "As a test in your own
# repository"), so the two cannot drift apart.
_README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
USER_TEST = _README.split("### As a test in your own repository", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]

MORE_TESTS = '''\
import pytest
import serial


def ask(modem, line):
    with serial.Serial(modem.path, 115200, timeout=5) as ser:
        ser.write(b"ATE0\\r"); ser.read_until(b"OK\\r\\n")
        ser.write(line + b"\\r")
        return ser.read_until(b"OK\\r\\n")


def test_ec2x_by_default(modem):
    assert modem.profile == "ec2x" and ask(modem, b"AT+CGMM") == b"\\r\\nEC25\\r\\n\\r\\nOK\\r\\n"
    assert modem.control("state")["profile"] == "ec2x"
    assert modem.trace.exists()


@pytest.mark.modem_profile("ml302")
def test_marker_picks_the_profile(modem):
    assert ask(modem, b"AT+CGMM") == b"\\r\\nML302\\r\\n\\r\\nOK\\r\\n"


@pytest.mark.parametrize("modem", ["ec2x", "ml302"], indirect=True)
def test_indirect_parametrisation(modem):
    assert modem.control("state")["profile"] == modem.profile


def test_control_reaches_the_host(modem):
    with serial.Serial(modem.path, 115200, timeout=5) as ser:
        ser.write(b"AT\\r"); ser.read_until(b"OK\\r\\n")     # the port has seen its host
        assert modem.control("urc", text="+HELLO: 1") == {"ok": True}
        assert ser.read_until(b"+HELLO: 1\\r\\n").endswith(b"+HELLO: 1\\r\\n")
    assert modem.control("no_such_op")["ok"] is False


@pytest.mark.tls_server(mode="http", host="api.example.com", port=8443)
def test_tls_server_marker(modem, tls_server):
    assert (tls_server.host, tls_server.port) == ("api.example.com", 8443)
    assert tls_server.server.mode == "http" and tls_server.ca_pem.startswith(b"-----BEGIN")


def test_a_failure_shows_the_trace(modem):
    assert ask(modem, b"AT+CSQ") == b"something else"


@pytest.mark.parametrize("uart", [False, pytest.param(True, marks=pytest.mark.modem_uart)])
def test_uart_marker_keeps_a_data_prompt_across_a_close(modem, uart):
    import time
    with serial.Serial(modem.path, 115200, timeout=5) as ser:
        ser.write(b"ATE0\\r"); ser.read_until(b"OK\\r\\n")
        ser.write(b'AT+QFUPL="RAM:u.txt",2\\r'); ser.read_until(b"CONNECT\\r\\n")
    deadline = time.monotonic() + 10
    while modem.emulator.run(lambda: modem.port.port.attached):     # the close seen
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with serial.Serial(modem.path, 115200, timeout=2) as ser:
        modem.emulator.run(modem.port.port.look_for_host)
        ser.write(b"ok")
        got = ser.read_until(b"OK\\r\\n")
    # --uart: the prompt took the two bytes; the default: a hang-up ended it, "ok" is no line
    assert got.startswith(b"\\r\\n+QFUPL: 2,") if uart else got == b"", got
'''


def run_pytest(directory, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=directory, env=env, text=True, capture_output=True, timeout=120)


def test_the_readme_example_passes_as_a_users_test_outside_this_repository(tmp_path):
    (tmp_path / "test_user.py").write_text(USER_TEST)
    (tmp_path / "test_more.py").write_text(MORE_TESTS)
    result = run_pytest(tmp_path, "-q", "-rf")
    out = result.stdout
    assert "1 failed, 9 passed" in out, out + result.stderr
    assert "FAILED test_more.py::test_a_failure_shows_the_trace" in out
    # the failing test's report ends with the last lines of its modem's trace
    assert "modem-emulator trace (" in out
    assert "== AT+CSQ -> \\r\\n+CSQ: " in out
