"""The pytest plugin (emulator/testing/plugin.py, entry point pytest11 "modem_emulator") as a
firmware team's own test suite uses -- and misuses -- it.

Every case is a user project in a tmp directory outside this repository (its own pytest.ini
and conftest.py, nothing of tests/conftest.py), run by `python -m pytest` in a subprocess
with this venv's python.  The outcome is read as a user reads it: the junit xml (each test's
outcome and message), the summary line, the exit code, and what the child process still
held when pytest ended (a recorder conftest writes /proc/self/fd and the live threads after
every test's teardown and at pytest_unconfigure).

What plugin.py documents is asserted as documented; where it is silent, the test says what
a user would reasonably expect.  Each user session runs once (module fixture) and several
tests below read it, so the whole file stays well under a minute.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT = 60                      # one user session (2 cores, other suites running)


# --- running a user project ----------------------------------------------------------------------
RECORDER = '''\
"""The test harness's instrument (not the user's code): what the process holds after each
test's teardown and at the very end."""
import gc, json, os, sys, threading
import pytest

RECORD = os.environ["USER_RECORD"]


def snapshot(label):
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if not target.startswith("/proc/"):
            fds[name] = target
    with open(RECORD, "a") as out:
        out.write(json.dumps({"at": label, "fds": fds,
                              "threads": sorted(t.name for t in threading.enumerate())}) + "\\n")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        snapshot(item.nodeid)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # Every test and fixture is over.  (Not at unconfigure: an xdist worker tells the
    # controller it finished right after this hook, and a worker still busy 5 s after the
    # controller's shutdown -- a loaded machine -- is interrupted before its unconfigure.)
    # pytest keeps the last failure's exception (sys.last_traceback, for pdb): its frames hold
    # whatever that test had open.  Drop it so only real leaks remain.
    sys.last_type = sys.last_value = sys.last_traceback = None
    gc.collect()
    snapshot("<end>")
'''

PYTEST_INI = "[pytest]\naddopts = --strict-markers\n"


class Session:
    """One finished user pytest run."""

    def __init__(self, project: Path, proc_result, elapsed: float) -> None:
        self.project = project
        self.rc = proc_result.returncode
        self.out = proc_result.stdout + proc_result.stderr
        self.elapsed = elapsed
        junit = project / "junit.xml"
        self.cases: dict[str, dict] = {}
        if junit.exists():
            for case in ET.parse(junit).getroot().iter("testcase"):
                cls = case.get("classname", "").rsplit(".", 1)[-1]
                name = case.get("name")
                key = f"{cls}::{name}" if cls.startswith("Test") else name
                kinds = {child.tag: (child.get("message") or "") + "\n" + (child.text or "")
                         for child in case if child.tag in ("failure", "error", "skipped")}
                self.cases[key] = kinds
        self.records = []
        record = project / "record.jsonl"
        if record.exists():
            self.records = [json.loads(line) for line in record.read_text().splitlines()]

    def outcome(self, name: str) -> str:
        kinds = self.cases[name]
        return "+".join(sorted(kinds)) or "passed"

    def outcomes(self) -> dict[str, str]:
        return {name: self.outcome(name) for name in self.cases}

    def message(self, name: str, kind: str) -> str:
        return self.cases[name][kind]

    @property
    def end(self) -> dict:
        return self.records[-1]

    def dump(self) -> str:
        return f"rc={self.rc}\n{self.out[-6000:]}"


def child_env(project: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PYTHONPATH"))}   # no outer worker id, no repo path
    env["USER_RECORD"] = str(project / "record.jsonl")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def pytest_cmd(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
            f"--junitxml={project / 'junit.xml'}", "-o", "junit_family=xunit2",
            f"--basetemp={project / 'basetemp'}", *args]


def make_project(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    files = {"pytest.ini": PYTEST_INI, "conftest.py": RECORDER, **files}
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def run_project(root: Path, files: dict[str, str], *args: str) -> Session:
    project = make_project(root, files)
    start = time.monotonic()
    result = subprocess.run(pytest_cmd(project, *args), cwd=project, env=child_env(project),
                            text=True, capture_output=True, timeout=CHILD_TIMEOUT)
    return Session(project, result, time.monotonic() - start)


def summary_counts(out: str) -> dict[str, int]:
    """The final summary line's counts: {'passed': 12, 'failed': 2, ...}."""
    lines = [line for line in out.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    assert lines, out[-3000:]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", lines[-1])}


def pty_fds(record: dict) -> list[str]:
    return sorted(t for t in record["fds"].values() if t == "/dev/ptmx" or t.startswith("/dev/pts/"))


PLUGIN_THREADS = ("emulator", "tls-accept", "tls-conn", "asyncio")


def plugin_threads(record: dict) -> list[str]:
    return [name for name in record["threads"] if name.startswith(PLUGIN_THREADS)]


TEARDOWN_NOISE = ("Exception in thread", "Task was destroyed", "never awaited",
                  "Event loop is closed", "PytestUnraisableExceptionWarning",
                  "PytestUnhandledThreadExceptionWarning", "ResourceWarning",
                  "at teardown of")


# --- the user's helpers, as a driver team writes them --------------------------------------------
USER_HELPERS = '''\
"""The team's tiny AT helper (their real driver would be here)."""
import serial

OK = b"OK\\r\\n"


def at(ser, line, until=OK):
    ser.write(line + b"\\r")
    return ser.read_until(until)


def upload(ser, name, data):
    got = at(ser, b'AT+QFUPL="RAM:%s",%d' % (name.encode(), len(data)), b"CONNECT\\r\\n")
    assert got.endswith(b"CONNECT\\r\\n"), got
    ser.write(data)
    got = ser.read_until(OK)
    assert b"+QFUPL: %d," % len(data) in got, got


def open_tls(ser, tls_server, seclevel=1, client=None):
    """PDP up, the CA (and a client pair) uploaded, socket 4 opened: returns the open's URC."""
    assert at(ser, b'ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1').endswith(OK)
    upload(ser, "ca.pem", tls_server.ca_pem)
    cfg = b'AT+QSSLCFG="seclevel",1,%d;+QSSLCFG="cacert",1,"RAM:ca.pem"' % seclevel
    if client is not None:
        upload(ser, "cli.pem", client.cert_pem)
        upload(ser, "cli.key", client.key_pem)
        cfg += b';+QSSLCFG="clientcert",1,"RAM:cli.pem";+QSSLCFG="clientkey",1,"RAM:cli.key"'
    assert at(ser, cfg).endswith(OK)
    dial = b'AT+QSSLOPEN=1,1,4,"%s",%d' % (tls_server.host.encode(), tls_server.port)
    got = at(ser, dial, b"\\r\\n+QSSLOPEN: 4,")
    assert got.endswith(b"+QSSLOPEN: 4,"), got
    return got + ser.read_until(b"\\r\\n")


def echo(ser, tls_server, data):
    assert at(ser, b"AT+QSSLSEND=4,%d" % len(data), b"> ").endswith(b"> ")
    ser.write(data)
    got = ser.read_until(b'+QSSLURC: "recv",4\\r\\n')
    assert got.startswith(b"\\r\\nSEND OK"), got
    got = at(ser, b"AT+QSSLRECV=4,1500")
    assert b"+QSSLRECV: %d\\r\\n%s\\r\\n" % (len(data), data) in got, got
'''


# --- 1. a pure user project: many tests, failures mid-session, leaks, timeouts, overrides --------
MAIN_FILES = {
    "userdrv.py": USER_HELPERS,
    # Many tests each taking a modem; each must find a module fresh from power-on.
    "test_a_many.py": '''\
        import pytest, serial
        from userdrv import at, upload

        @pytest.mark.parametrize("i", range(10))
        def test_fresh_modem(modem, i):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"ATE0").endswith(b"OK\\r\\n")
                assert b"+QFLST" not in at(ser, b'AT+QFLST="RAM:*"')     # nothing left by others
                upload(ser, "mine.txt", b"%03d" % i)
                assert b'+QFLST: "RAM:mine.txt",3' in at(ser, b'AT+QFLST="RAM:*"')
            state = modem.control("state")
            assert state["ok"] and state["sockets"] == [] and state["profile"] == "ec2x"
    ''',
    # A test that raises with a TLS socket open (and its port never closed), one that fails
    # inside a data prompt; the next test must get a clean modem and a new server.
    "test_b_midsession.py": '''\
        import pytest, serial
        from userdrv import at, echo, open_tls

        def test_raises_with_a_tls_socket_open(modem, tls_server):
            ser = serial.Serial(modem.path, 115200, timeout=5)        # never closed
            assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
            echo(ser, tls_server, b"hello")
            raise ConnectionError("driver gave up mid-session")

        def test_fails_inside_a_data_prompt(modem, tls_server):
            ser = serial.Serial(modem.path, 115200, timeout=5)
            assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
            assert at(ser, b"AT+QSSLSEND=4,100", b"> ").endswith(b"> ")
            ser.write(b"only ten b")                                  # 90 bytes still owed
            assert False, "the driver lost count of its bytes"

        def test_next_test_gets_a_clean_modem(modem, tls_server):
            assert modem.control("state")["sockets"] == []
            assert tls_server.connections == []
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"ATE0").endswith(b"OK\\r\\n")
                assert b"+QFLST" not in at(ser, b'AT+QFLST="RAM:*"')
                assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
                echo(ser, tls_server, b"again")
                assert at(ser, b"AT+QSSLCLOSE=4").endswith(b"OK\\r\\n")
    ''',
    # The port left open by pyserial beyond the test (a module global): the user's leak.
    "test_c_leaky.py": '''\
        import time
        import pytest, serial
        from userdrv import at

        LEAKED = []

        def test_leaves_the_port_open(modem):
            ser = serial.Serial(modem.path, 115200, timeout=5)
            assert at(ser, b"AT").endswith(b"OK\\r\\n")
            LEAKED.append((modem.path, ser))

        def test_after_a_leaked_port(modem):
            old_path, old = LEAKED[0]
            assert modem.path != old_path           # the held device is not handed out again
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"AT+CGMM").endswith(b"EC25\\r\\n\\r\\nOK\\r\\n")
            start = time.monotonic()                # the old modem is gone: the old port fails
            with pytest.raises(serial.SerialException):   # at once, it does not hang
                old.write(b"AT\\r")
                old.read(10)
            assert time.monotonic() - start < 3
    ''',
    # A hang cut by SIGALRM (what pytest-timeout's signal method does) with a socket open.
    "test_d_timeout.py": '''\
        import signal
        import pytest, serial
        from userdrv import at, open_tls

        @pytest.fixture
        def alarm():
            def on_alarm(signum, frame):
                pytest.fail("Timeout (>1.0s) from the team's SIGALRM guard", pytrace=False)
            previous = signal.signal(signal.SIGALRM, on_alarm)
            yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

        def test_driver_waits_forever(modem, tls_server, alarm):
            ser = serial.Serial(modem.path, 115200)                  # no timeout: blocks
            assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
            alarm(1.0)
            ser.read_until(b'+QSSLURC: "recv",4')                     # the echo never speaks first

        def test_after_the_timeout(modem):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"AT").endswith(b"OK\\r\\n")
            assert modem.control("state")["sockets"] == []
    ''',
    # Profiles: the indirect parameter, the marker, a profile .toml of the team's own.
    "test_e_profiles.py": '''\
        import pytest, serial
        from userdrv import at

        MODEL = {"ec2x": b"EC25", "ml302": b"ML302"}

        @pytest.mark.parametrize("modem", ["ec2x", "ml302"], indirect=True)
        def test_both_modules(modem):
            assert modem.control("state")["profile"] == modem.profile
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"AT+CGMM").endswith(b"\\r\\n%s\\r\\n\\r\\nOK\\r\\n" % MODEL[modem.profile])

        @pytest.mark.modem_profile("acme.toml")
        def test_own_profile_file(modem):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"AT+CGMM").endswith(b"\\r\\nEG25\\r\\n\\r\\nOK\\r\\n")
    ''',
    # The plugin's fixtures in classes: setup_method/teardown_method, a class-level marker.
    "test_f_classes.py": '''\
        import pytest, serial
        from userdrv import at

        class TestDriverSession:
            def setup_method(self, method):
                self.ser = None
                self.log = [method.__name__]

            def teardown_method(self, method):
                if self.ser is not None:                 # (runs after the modem's teardown)
                    self.ser.close()

            def test_open_in_the_test(self, modem):
                self.ser = serial.Serial(modem.path, 115200, timeout=5)
                assert at(self.ser, b"ATI").endswith(b"OK\\r\\n") and self.log == ["test_open_in_the_test"]

            @pytest.mark.modem_profile("ml302")
            def test_marker_on_a_method(self, modem):
                self.ser = serial.Serial(modem.path, 115200, timeout=5)
                assert at(self.ser, b"AT+CGMM").endswith(b"ML302\\r\\n\\r\\nOK\\r\\n")

        @pytest.mark.modem_profile("ml302")
        class TestMarkedClass:
            @pytest.fixture(autouse=True)
            def port(self, modem):
                self.modem = modem
                with serial.Serial(modem.path, 115200, timeout=5) as self.ser:
                    yield

            def test_first(self):
                assert self.modem.profile == "ml302"
                assert at(self.ser, b"AT+CGMM").endswith(b"ML302\\r\\n\\r\\nOK\\r\\n")

            def test_second_is_a_new_modem(self):
                assert self.modem.control("state")["sockets"] == []
    ''',
    # tls_server asking for a client certificate (TlsServer's client_ca / require_client_cert
    # through the marker, as the plugin documents: "**TlsServer options").
    "test_g_client_cert.py": '''\
        import pytest, serial
        from emulator.testing.peers import default_pki
        from userdrv import echo, open_tls

        PKI = default_pki()

        @pytest.mark.tls_server(client_ca=PKI.ca, require_client_cert=True)
        def test_client_certificate_presented(modem, tls_server):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert open_tls(ser, tls_server, seclevel=2, client=PKI.client).endswith(b"+QSSLOPEN: 4,0\\r\\n")
                conn = tls_server.server.wait_handshake()
                assert conn.handshake_done and conn.client_cert is not None
                subject = dict(item for rdn in conn.client_cert["subject"] for item in rdn)
                assert subject["commonName"] == "modem client"
                echo(ser, tls_server, b"authenticated")

        @pytest.mark.tls_server(client_ca=PKI.ca, require_client_cert=True)
        def test_no_client_certificate_is_refused(modem, tls_server):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                got = open_tls(ser, tls_server, seclevel=1)
                assert not got.endswith(b"+QSSLOPEN: 4,0\\r\\n"), got
                conn = tls_server.server.wait_handshake()
                assert conn.handshake_error and not conn.handshake_done

        @pytest.mark.tls_server(client_ca=PKI.wrong_ca, require_client_cert=True)
        def test_client_certificate_of_another_ca_is_refused(modem, tls_server):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                got = open_tls(ser, tls_server, seclevel=2, client=PKI.client)
                assert not got.endswith(b"+QSSLOPEN: 4,0\\r\\n"), got
                assert tls_server.server.wait_handshake().handshake_error
    ''',
    # Without the marker the plugin's modem runs on real time: advance() says so at once;
    # with @pytest.mark.modem_manual_time its clock moves only with modem.advance().
    "test_h_plugin_clock.py": '''\
        import pytest
        import serial

        def test_advance_on_the_plugins_modem(modem):
            with pytest.raises(RuntimeError, match="manual time"):
                modem.emulator.advance(modem.port, 30)

        @pytest.mark.modem_manual_time
        def test_the_manual_time_marker(modem):
            assert modem.emulator.run(lambda: modem.port.modem.timers.manual)
            # (a wait for the answer, not a 0.3 s read: a loaded machine answered later)
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                ser.write(b"AT+QSCLK=1\\r\\n")
                assert ser.read_until(b"OK\\r\\n").endswith(b"OK\\r\\n")
                assert modem.advance(1.0) >= 0
    ''',
    # A sub-directory whose conftest overrides `modem` with the team's own (manual time);
    # the plugin's tls_server must then use the override.
    "manual/conftest.py": '''\
        import pytest
        from emulator.io.app import BackgroundEmulator
        from emulator.testing.plugin import ModemHandle

        @pytest.fixture
        def modem(tmp_path):
            """The team's modem: on manual time, so a 30 s timeout costs nothing."""
            trace, state = tmp_path / "modem.trace", tmp_path / "state"
            with BackgroundEmulator(offline=True) as emu:
                port = emu.add_modem("ec2x", state_dir=state, trace=str(trace), manual_time=True)
                yield ModemHandle(emu, port, "ec2x", trace, state)
    ''',
    "manual/test_manual_time.py": '''\
        import serial
        from userdrv import at, echo, open_tls

        def test_scenario_on_the_manual_clock(modem):
            modem.scenario({"step": [{"at": 30, "op": "urc", "text": "+HELLO: 30"}]})
            # ATE0's answer waited for up to 5 s (0.3 s was once too short under load: the
            # session's one failure); only the "not yet" read is 0.3 s
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"ATE0").endswith(b"OK\\r\\n")
                ser.timeout = 0.3
                modem.emulator.advance(modem.port, 29.5)
                assert ser.read(64) == b""                       # 29.5 s of modem time: not yet
                modem.emulator.advance(modem.port, 1)
                ser.timeout = 5
                assert ser.read_until(b"+HELLO: 30\\r\\n").endswith(b"+HELLO: 30\\r\\n")

        def test_plugin_tls_server_routes_into_the_override(modem, tls_server):
            assert modem.emulator.run(lambda: modem.port.modem.timers.manual)
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
                echo(ser, tls_server, b"manual")
    ''',
}

MAIN_EXPECTED = {
    **{f"test_fresh_modem[{i}]": "passed" for i in range(10)},
    "test_raises_with_a_tls_socket_open": "failure",
    "test_fails_inside_a_data_prompt": "failure",
    "test_next_test_gets_a_clean_modem": "passed",
    "test_leaves_the_port_open": "passed",
    "test_after_a_leaked_port": "passed",
    "test_driver_waits_forever": "failure",
    "test_after_the_timeout": "passed",
    "test_both_modules[ec2x]": "passed",
    "test_both_modules[ml302]": "passed",
    "test_own_profile_file": "passed",
    "TestDriverSession::test_open_in_the_test": "passed",
    "TestDriverSession::test_marker_on_a_method": "passed",
    "TestMarkedClass::test_first": "passed",
    "TestMarkedClass::test_second_is_a_new_modem": "passed",
    "test_client_certificate_presented": "passed",
    "test_no_client_certificate_is_refused": "passed",
    "test_client_certificate_of_another_ca_is_refused": "passed",
    "test_advance_on_the_plugins_modem": "passed",
    "test_the_manual_time_marker": "passed",
    "test_scenario_on_the_manual_clock": "passed",
    "test_plugin_tls_server_routes_into_the_override": "passed",
}


@pytest.fixture(scope="module")
def main_session(tmp_path_factory) -> Session:
    acme = (ROOT / "emulator" / "profiles" / "ec2x.toml").read_text()
    assert 'model = "EC25"' in acme
    files = {**MAIN_FILES, "acme.toml": acme.replace('model = "EC25"', 'model = "EG25"')}
    return run_project(tmp_path_factory.mktemp("user-main"), files, "-W", "default")


def test_main_session_every_outcome_is_the_expected_one(main_session):
    s = main_session
    assert s.outcomes() == MAIN_EXPECTED, s.dump()
    expected_failed = sum(v == "failure" for v in MAIN_EXPECTED.values())
    assert summary_counts(s.out) == {"failed": expected_failed,
                                     "passed": len(MAIN_EXPECTED) - expected_failed}, s.dump()
    assert s.rc == 1, s.dump()


def test_main_session_failures_say_what_the_user_did_and_show_the_trace(main_session):
    s = main_session
    assert "driver gave up mid-session" in s.message("test_raises_with_a_tls_socket_open", "failure")
    assert "lost count of its bytes" in s.message("test_fails_inside_a_data_prompt", "failure")
    assert "Timeout (>1.0s)" in s.message("test_driver_waits_forever", "failure")
    # the documented extra: a failing test's report carries its modem's trace tail
    assert s.out.count("modem-emulator trace (") == 3, s.dump()
    assert "AT+QSSLOPEN" in s.out


def test_main_session_teardown_is_silent(main_session):
    s = main_session
    for noise in TEARDOWN_NOISE:
        assert noise not in s.out, (noise, s.dump())
    assert not any("error" in kinds for kinds in s.cases.values())


def test_main_session_no_modem_outlives_its_test(main_session):
    """After each test's teardown: no emulator loop thread, no TLS server thread, and no pty
    master (/dev/ptmx) left; the only pty the process still holds at the end is the slave
    the user leaked on purpose (test_c_leaky's module global)."""
    s = main_session
    per_test = [r for r in s.records if r["at"] != "<end>"]
    assert len(per_test) == len(MAIN_EXPECTED), s.dump()
    for record in per_test:
        assert plugin_threads(record) == [], record
        assert "/dev/ptmx" not in record["fds"].values(), record
    assert plugin_threads(s.end) == [] and len(s.end["threads"]) == 1, s.end
    leaked = [t for t in pty_fds(s.end)]
    assert len(leaked) == 1 and leaked[0].startswith("/dev/pts/"), s.end


def test_main_session_descriptors_do_not_grow_with_tests(main_session):
    """Ten modem tests in a row: the descriptor count after each teardown stays flat (the
    first one warms up imports and the shared PKI)."""
    s = main_session
    counts = [len(r["fds"]) for r in s.records if r["at"].startswith("test_a_many.py")]
    assert len(counts) == 10 and len(set(counts[1:])) == 1, counts
    sockets = [t for t in s.end["fds"].values() if t.startswith(("socket:", "anon_inode:"))]
    first = s.records[0]
    first_sockets = [t for t in first["fds"].values() if t.startswith(("socket:", "anon_inode:"))]
    assert len(sockets) <= len(first_sockets), (first, s.end)


# --- 2. misuse: the messages a user sees ------------------------------------------------------------
MISUSE_FILES = {
    # First file: the plugin is loaded, and costs nothing (its docstring's promise).
    "test_0_cost.py": '''\
        import sys

        def test_plugin_loaded_but_nothing_heavy_imported():
            assert "emulator.testing.plugin" in sys.modules
            heavy = ("emulator.io.app", "emulator.modem.modem", "mbedtls", "trustme",
                     "emulator.testing.peers")
            assert [m for m in heavy if m in sys.modules] == []
    ''',
    "test_misuse.py": '''\
        import time
        import pytest

        @pytest.mark.modem_profile()
        def test_profile_marker_without_a_name(modem):
            pass

        @pytest.mark.modem_profile("ec25")
        def test_unknown_profile(modem):
            pass

        @pytest.mark.tls_server(mode="smtp")
        def test_unknown_server_mode(tls_server):
            pass

        @pytest.fixture(scope="session")
        def shared_modem(modem):
            return modem

        def test_one_modem_for_the_whole_session(shared_modem):
            pass

        def test_missing_scenario_file(modem):
            modem.scenario("field-bug-missing.toml")

        KEPT = []

        def test_keeps_its_handle(modem):
            KEPT.append(modem)

        def test_uses_a_handle_from_an_earlier_test():
            start = time.monotonic()
            try:
                KEPT[0].control("state")
            finally:
                assert time.monotonic() - start < 5, "a stale handle must fail fast, not hang"
    ''',
    "test_positional.py": '''\
        import pytest

        @pytest.mark.tls_server("http")
        def test_positional_mode(tls_server):
            assert tls_server.server.mode == "http"
    ''',
}


@pytest.fixture(scope="module")
def misuse_session(tmp_path_factory) -> Session:
    return run_project(tmp_path_factory.mktemp("user-misuse"), MISUSE_FILES)


def test_misuse_plugin_costs_nothing_until_used(misuse_session):
    assert misuse_session.outcome("test_plugin_loaded_but_nothing_heavy_imported") == "passed", \
        misuse_session.dump()


def test_misuse_messages_name_the_mistake(misuse_session):
    s = misuse_session
    assert s.outcome("test_profile_marker_without_a_name") == "error", s.dump()
    assert 'modem_profile("ml302")' in s.message("test_profile_marker_without_a_name", "error")
    assert s.outcome("test_unknown_profile") == "error"
    assert "no built-in profile 'ec25' (they are ec2x, ml302" in s.message("test_unknown_profile", "error")
    assert s.outcome("test_unknown_server_mode") == "error"
    assert "mode must be one of" in s.message("test_unknown_server_mode", "error")
    assert s.outcome("test_one_modem_for_the_whole_session") == "error"
    assert "ScopeMismatch" in s.message("test_one_modem_for_the_whole_session", "error")
    assert s.outcome("test_missing_scenario_file") == "failure"
    assert "scenario field-bug-missing.toml: cannot read" in s.message("test_missing_scenario_file", "failure")


def test_misuse_a_stale_handle_fails_fast(misuse_session):
    """plugin.py is silent on a handle kept past its test; a user expects an exception at
    once (not a 30 s hang on a stopped loop)."""
    s = misuse_session
    assert s.outcome("test_keeps_its_handle") == "passed"
    assert s.outcome("test_uses_a_handle_from_an_earlier_test") == "failure", s.dump()
    assert "stale handle must fail fast" not in s.message("test_uses_a_handle_from_an_earlier_test", "failure")


def test_misuse_failed_setups_leave_nothing_running(misuse_session):
    s = misuse_session
    assert all(plugin_threads(r) == [] and pty_fds(r) == [] for r in s.records), s.records
    assert "Exception in thread" not in s.out and "Task was destroyed" not in s.out


# Was a bug, fixed: a handle used after its test raised asyncio's bare "Event loop is closed" and
# left the coroutine built for the call unawaited ("never awaited" warning after the summary;
# under -W error a PytestUnraisableExceptionWarning).  The call now closes it and says the
# modem was stopped with its test.
def test_misuse_a_stale_handle_leaves_no_never_awaited_warning(misuse_session):
    s = misuse_session
    assert s.outcome("test_uses_a_handle_from_an_earlier_test") == "failure", s.dump()
    assert "never awaited" not in s.out, s.dump()
    assert "BackgroundEmulator is stopped" in s.out, s.dump()


# Was a bug, fixed: @pytest.mark.tls_server("http") (the mode positionally, as the registered
# signature allows) was silently ignored: an echo server, no error.  The mode may come first.
def test_misuse_positional_tls_server_mode_is_not_silently_dropped(misuse_session):
    s = misuse_session
    assert s.outcome("test_positional_mode") == "passed", s.dump()


# --- 3. Ctrl-C in the middle of a test ---------------------------------------------------------------
KBINT_FILES = {
    "userdrv.py": USER_HELPERS,
    "test_kbint.py": '''\
        import os
        import serial
        from userdrv import at, open_tls

        def test_before(modem):
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert at(ser, b"AT").endswith(b"OK\\r\\n")

        def test_interrupted_while_waiting(modem, tls_server):
            ser = serial.Serial(modem.path, 115200)                 # blocks forever
            assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
            open(os.environ["USER_READY"], "w").close()
            ser.read_until(b"never")

        def test_never_runs(modem):
            pass
    ''',
}


@pytest.fixture(scope="module")
def kbint_session(tmp_path_factory) -> Session:
    project = make_project(tmp_path_factory.mktemp("user-kbint"), KBINT_FILES)
    env = child_env(project)
    ready = project / "ready"
    env["USER_READY"] = str(ready)
    start = time.monotonic()
    proc = subprocess.Popen(pytest_cmd(project), cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        time.sleep(0.2)                                        # well inside the blocking read
        proc.send_signal(signal.SIGINT)                        # the user presses Ctrl-C
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    class Result:
        returncode, stdout, stderr = proc.returncode, out, err
    return Session(project, Result, time.monotonic() - start)


def test_ctrl_c_ends_the_run_and_tears_the_modem_down(kbint_session):
    s = kbint_session
    assert s.rc == 2, s.dump()                                # pytest: interrupted
    assert "KeyboardInterrupt" in s.out, s.dump()
    assert summary_counts(s.out).get("passed") == 1, s.dump()
    assert "test_never_runs" not in s.cases
    assert s.end["at"] == "<end>"
    assert plugin_threads(s.end) == [], s.end
    # the modem's side of the pty is closed; the user's own serial.Serial, still referenced
    # by the interrupted frame (pytest keeps the KeyboardInterrupt's traceback), is at most
    # one slave of a pty that no longer exists
    assert "/dev/ptmx" not in s.end["fds"].values(), s.end
    assert all(t.endswith("(deleted)") for t in pty_fds(s.end)) and len(pty_fds(s.end)) <= 1, s.end
    for noise in ("Exception in thread", "Task was destroyed", "never awaited"):
        assert noise not in s.out, (noise, s.dump())


# --- 4. two xdist workers ------------------------------------------------------------------------------
XDIST_FILES = {
    "userdrv.py": USER_HELPERS,
    "test_parallel.py": '''\
        import json, os, time
        import pytest, serial
        from userdrv import at, echo, open_tls

        @pytest.mark.parametrize("n", range(6))
        def test_worker_modem(modem, tls_server, n, tmp_path):
            worker = os.environ.get("PYTEST_XDIST_WORKER", "none")
            token = b"%s-%d" % (worker.encode(), n)
            start = time.time()
            with serial.Serial(modem.path, 115200, timeout=5) as ser:
                assert open_tls(ser, tls_server).endswith(b"+QSSLOPEN: 4,0\\r\\n")
                echo(ser, tls_server, token)
                time.sleep(0.3)                                   # overlap with the other worker
                assert modem.control("state")["sockets"][0]["bytes_sent"] == len(token)
                assert at(ser, b"AT+QSSLCLOSE=4").endswith(b"OK\\r\\n")
            assert bytes(tls_server.connections[0].received) == token
            assert len(tls_server.connections) == 1
            record = {"worker": worker, "n": n, "path": modem.path, "start": start,
                      "end": time.time(), "trace": str(modem.trace), "pid": os.getpid()}
            with open(os.environ["USER_RECORD"] + ".xdist", "a") as out:
                out.write(json.dumps(record) + "\\n")
    ''',
}


@pytest.fixture(scope="module")
def xdist_session(tmp_path_factory) -> Session:
    return run_project(tmp_path_factory.mktemp("user-xdist"), XDIST_FILES, "-n", "2")


def test_xdist_two_workers_no_cross_talk(xdist_session):
    s = xdist_session
    assert s.rc == 0 and summary_counts(s.out) == {"passed": 6}, s.dump()
    runs = [json.loads(line) for line in
            Path(str(s.project / "record.jsonl") + ".xdist").read_text().splitlines()]
    assert len(runs) == 6 and {r["worker"] for r in runs} == {"gw0", "gw1"}, runs
    assert len({r["pid"] for r in runs}) == 2
    for a in runs:                       # two modems alive at once never share a device
        for b in runs:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["path"] != b["path"], (a, b)
    for r in runs:                       # each trace has its own token and no other's
        trace = Path(r["trace"]).read_bytes()
        mine = f'{r["worker"]}-{r["n"]}'
        others = [f'{o["worker"]}-{o["n"]}' for o in runs if o is not r]
        assert mine.encode() in trace and not any(o.encode() in trace for o in others), r
    assert len({r["trace"] for r in runs}) == 6
    assert any(a["worker"] != b["worker"] and a["start"] < b["end"] and b["start"] < a["end"]
               for a in runs for b in runs), runs      # (the workers did run at the same time)


def test_xdist_workers_leave_nothing(xdist_session):
    s = xdist_session
    ends = [r for r in s.records if r["at"] == "<end>"]
    assert len(ends) == 3, s.records                 # the controller and both workers
    for end in ends:
        assert plugin_threads(end) == [] and pty_fds(end) == [], end
    for noise in TEARDOWN_NOISE:
        assert noise not in s.out, (noise, s.dump())


# --- 5. the plugin disabled with -p no:modem_emulator ---------------------------------------------------
DISABLED_FILES = {
    "pytest.ini": "[pytest]\n",                       # (no --strict-markers: see the warning)
    "test_disabled.py": '''\
        import sys
        import pytest

        def test_plain():
            assert "emulator.testing.plugin" not in sys.modules

        def test_wants_a_modem(modem):
            pass

        @pytest.mark.modem_profile("ml302")
        def test_marked():
            pass
    ''',
}


@pytest.fixture(scope="module")
def disabled_session(tmp_path_factory) -> Session:
    return run_project(tmp_path_factory.mktemp("user-disabled"), DISABLED_FILES,
                       "-p", "no:modem_emulator", "-W", "default")


def test_disabled_plugin_is_really_off(disabled_session):
    s = disabled_session
    assert s.outcomes() == {"test_plain": "passed", "test_wants_a_modem": "error",
                            "test_marked": "passed"}, s.dump()
    assert "fixture 'modem' not found" in s.message("test_wants_a_modem", "error")
    assert "Unknown pytest.mark.modem_profile" in s.out, s.dump()


# --- 6. the plugin listed again in pytest_plugins (it is already loaded by its entry point) ----------
def test_plugin_listed_twice_stops_with_a_message_naming_it(tmp_path):
    """Not documented either way; pytest refuses a module registered under two names.  A user
    must at least see which plugin, and `-p no:modem_emulator` must make that conftest work."""
    files = {"conftest.py": RECORDER + 'pytest_plugins = ["emulator.testing.plugin"]\n',
             "test_twice.py": "def test_modem(modem):\n    assert modem.control('state')['ok']\n"}
    twice = run_project(tmp_path / "twice", files)
    assert twice.rc != 0 and "emulator.testing.plugin" in twice.out, twice.dump()
    assert "already registered" in twice.out, twice.dump()
    once = run_project(tmp_path / "once", files, "-p", "no:modem_emulator")
    assert once.rc == 0 and once.outcomes() == {"test_modem": "passed"}, once.dump()
