"""README claims a new user acts on, tried as that user would (a docs walk-through).

Three tests ("Was a bug, fixed") are documented behaviour the program lacked when this was
written; the others pin README examples no other test runs in the form the README gives
them.  Each checks first that the README still says what it tests."""
from __future__ import annotations

import io
import re
import signal
import stat
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path


from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.tools.trace import replay_main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_says(snippet: str) -> None:
    squash = lambda s: re.sub(r"\s+", " ", s)          # noqa: E731
    assert squash(snippet) in squash(README), f"README no longer says {snippet!r}"


def fenced(after: str, lang: str) -> str:
    """The first ```<lang> block after `after` in README."""
    rest = README.split(after, 1)[1]
    return rest.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


# ----------------------------------------------------------------------------------------
# documented behaviour that does not work

# Was a bug, fixed: replay_main passed `ignore` to replay_records (traces) only; a host's AT
# log was compared verbatim, so --ignore did nothing for it.
def test_replay_ignore_applies_to_a_host_at_log(tmp_path):
    readme_says("A host's own log works too: `>> AT...` / `<< OK` lines")
    readme_says("`--ignore REGEX` skips text that changes from run to run (AT+CCLK)")
    log = tmp_path / "host.log"
    log.write_text('>> ATE0\n<< OK\n'
                   '>> AT+CCLK?\n<< +CCLK: "20/01/01,00:00:00+00"\n<< OK\n'
                   '>> AT+CGMM\n<< EC25\n<< OK\n')
    out = io.StringIO()
    with redirect_stdout(out):
        rc = replay_main([str(log), "--ignore", r'\+CCLK: "[^"]*"'])
    assert rc == 0, out.getvalue()


# Was a bug, fixed: a directory at the --link's lock path gave EISDIR, which _take_link_lock
# read as "no lock can be made here": the emulator started with no lock at all.
def test_a_directory_at_the_link_lock_path_is_refused(tmp_path):
    readme_says("and so is a lock path that is a symbolic link or not a plain file (never followed)")
    link = tmp_path / "modem"
    (tmp_path / ".modem.lock").mkdir()                 # not a plain file
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--link", str(link),
                             "--state-dir", str(tmp_path / "state")], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline().strip()          # a device path: it started anyway
        if first:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert first == "", f"started on {first} with a directory as its lock"
    assert rc == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "not a plain file" in lines[0], err


# Was a bug, fixed: with --count N the --state-dir itself was made as a parent of
# <state-dir>/<n> (Path.mkdir(parents=True): the umask's 0755), only the per-modem dirs 0700.
def test_state_dir_of_count_modems_is_created_0700(tmp_path):
    readme_says("`--state-dir` (created 0700) holds:")
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--count", "2",
                             "--link", str(tmp_path / "modem-{n}"), "--state-dir", str(state)],
                            cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == str(tmp_path / "modem-0")
        assert proc.stdout.readline().strip() == str(tmp_path / "modem-1")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (state, state / "0", state / "1")}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    assert modes == {"state": 0o700, "0": 0o700, "1": 0o700}, {k: oct(v) for k, v in modes.items()}


# ----------------------------------------------------------------------------------------
# README examples, as written

def test_first_session_pasted_at_once_answers_error_after_the_open(tmp_path):
    """README: "pasted all at once, the lines after the open reach a socket still opening and
    answer ERROR" (make run's emulator: --demo --offline)."""
    readme_says("pasted all at once, the lines after the open reach a socket still opening "
                "and answer ERROR")
    with BackgroundEmulator(offline=True, demo=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state")
        host = Host(port.path)
        try:
            host.write(b'AT+QICSGP=1,1,"UNINET","","",1\r\nAT+QIACT=1\r\nAT+QSSLCFG="seclevel",1,1\r\n'
                       b'AT+QSSLCFG="cacert",1,"UFS:demo-ca.pem"\r\n'
                       b'AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0\r\nAT+QSSLSEND=4,18\r\n')
            got = host.read_until(b"AT+QSSLSEND=4,18\r\r\nERROR\r\n", timeout=10)
            if b"+QSSLOPEN: 4," not in got:
                got += host.read_until(b"+QSSLOPEN: 4,0\r\n", timeout=10)
            assert b'8010,0\r\r\nOK\r\nAT+QSSLSEND=4,18\r\r\nERROR\r\n' in got, got
            assert got.endswith(b"\r\n+QSSLOPEN: 4,0\r\n"), got
            assert host.at("AT+QSSLCLOSE=4").endswith(b"OK\r\n")
        finally:
            host.close()


def test_readme_field_bug_test_then_replay_with_and_without_the_scenario(modem, tls_server, tmp_path,
                                                                          monkeypatch):
    """README "From a field log to a test": the scenario file and the test as printed, then
    `modem-emulator replay modem.trace --scenario field-bug-4411.toml` exits 0, and "without
    `--scenario` the 3rd send answers SEND OK and replay prints that first difference"."""
    readme_says("without `--scenario` the 3rd send answers SEND OK and replay prints that first "
                "difference")
    monkeypatch.chdir(tmp_path)                         # the README's relative scenario path
    (tmp_path / "field-bug-4411.toml").write_text(fenced("Write what the network did", "toml"))
    scope: dict = {}
    exec(compile(fenced("`modem-emulator --scenario field-bug-4411.toml` runs it", "python"),
                 "README.md", "exec"), scope)
    scope["test_third_send_fails"](modem, tls_server)
    modem.emulator.run(lambda: None)                    # the trace has the last records
    out = io.StringIO()
    with redirect_stdout(out):
        assert replay_main([str(modem.trace), "--scenario", "field-bug-4411.toml"]) == 0, out.getvalue()
    out = io.StringIO()
    started = time.monotonic()
    with redirect_stdout(out):
        assert replay_main([str(modem.trace)]) == 1
    text = out.getvalue()
    assert "first difference" in text and "AT+QSSLSEND=4,5" in text, text
    assert "expected: \\r\\n> \\r\\nSEND FAIL\\r\\n" in text and "got:      \\r\\n> \\r\\nSEND OK\\r\\n" in text, text
    assert time.monotonic() - started < 10
