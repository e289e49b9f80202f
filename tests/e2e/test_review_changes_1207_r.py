"""Review of f311aca: the start record's material.state is now the values the modem loaded,
in the form it saves them (Settings / DeviceConfig / DataCounter .saved_form), replay writes
them back (write_state_files), _material_problem checks names, dicts and size; read_plain
reads with os.read and closes its fd; DataCounter._load warns; lock_state_dir refuses any
.lock that is not a plain file.

Checked here: the bytes AT&W / AT+CTZU= / AT+QGDCNT=1 write (the format of 9164649),
damaged state files (replayed alike), values of wrong types and
deep nesting in a trace's state (exit 2 or a clean replay, never a traceback), a read-only
file system for the .lock (EROFS: a warning, as before), ML302 traces over a state dir with
nv.json / qgdcnt.json, the pytest plugin's traces.

Were bugs, fixed (each failed before): a trace's state nested just under the reader's limit
made _material_problem's json.dumps raise RecursionError (replay and trace show died); such a
settings.json, written back or on disk, made Settings.load raise it (no modem); tracing made
the modem load nv.json / qgdcnt.json at attach (warnings -- a profile without AT+QCFG, damaged
files -- that the same session untraced never gives): _state_forms now takes what a command
already loaded, else the file's own JSON object (known keys only), making nothing.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.tools.trace import replay_main, show_main
from tests.e2e.cli_support import ROOT
from tests.e2e.replay_support import records, replay, replays
from tests.e2e.test_review_changes_1207_q import SETTINGS, record, with_state

OK = b"\r\nOK\r\n"


def run_modem(state, commands, profile="ec2x", trace=None):
    """A modem on `state` (traced to `trace` if given) answering `commands`: the answers."""
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem(profile, state_dir=state, trace=None if trace is None else str(trace))
        host = Host(port.path)
        try:
            return [host.at(c) for c in commands]
        finally:
            host.close()


# -- the files the modem writes: the format of 9164649 ------------------------------------------
def test_atw_nv_and_qgdcnt_files_keep_the_previous_bytes(tmp_path):
    """saved_form moved the dicts out of save(): the bytes on disk are those the previous
    code wrote (json.dumps of asdict minus ipr_rates with string S-register keys; the NV
    numbers, qsimdet, items; sent, received), so files saved by either version load alike."""
    state = tmp_path / "st"
    state.mkdir()
    answers = run_modem(state, ["ATE0", "ATS7=42", "AT&W", "AT+CTZU=0", "AT+QGDCNT=1"])
    assert all(a.endswith(OK) for a in answers), answers
    assert (state / "qgdcnt.json").read_bytes() == b'{"sent": 0, "received": 0}'
    assert (state / "nv.json").read_bytes() == \
        b'{"ctzu": 0, "qsclk": 0, "qsimstat": 0, "qsimdet": [0, 0], "items": {}}'
    saved = (state / "settings.json").read_bytes()
    data = json.loads(saved)
    assert list(data) == ["echo", "verbose", "quiet", "cmee", "ipr", "ifc", "icf", "dcd", "dtr", "x", "sreg"] \
        or set(data) == set(SETTINGS), data
    assert "ipr_rates" not in data and data["echo"] is False and data["sreg"]["7"] == 42
    assert saved == json.dumps(data).encode()          # (json.dumps' own separators, one line)


# -- damaged state files: recorded as what the modem loaded, or as the file's known keys ------
@pytest.mark.parametrize("garbage", [b"\x00\xffgarbage", b"[1, 2]", b'{"sent": "x"}', b"{" * 5000])
def test_damaged_state_files_are_recorded_as_the_defaults_and_replay(tmp_path, capsys, garbage):
    """settings.json, nv.json and qgdcnt.json present but garbage: the modem starts on the
    defaults; the start record carries the settings it loaded (the defaults) and, for the NV
    items and counters no command had used at the start, the file's JSON object (its known
    keys) or nothing; the replay answers the same."""
    def prepare(st):
        for name in ("settings.json", "nv.json", "qgdcnt.json"):
            (st / name).write_bytes(garbage)
    trace, answers = record(tmp_path, "dmg", ["ATS7?", "AT+CTZU?", "AT+QGDCNT?"], prepare=prepare)
    assert answers[0].endswith(b"\r\n000\r\n\r\nOK\r\n"), answers
    assert answers[2].endswith(b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n"), answers
    state = records(trace)[0]["material"]["state"]
    assert state["settings.json"]["sreg"]["7"] == 0, state
    if garbage == b'{"sent": "x"}':
        assert state["qgdcnt.json"] == {"sent": "x"} and state["nv.json"] == {}, state
    else:
        assert set(state) == {"settings.json"}, state
    replays(capsys, trace)


def test_values_of_the_wrong_types_in_a_traces_state_replay_cleanly(tmp_path, capsys):
    """Strings for numbers, negative and huge counters, items of the wrong shape: each value
    the replaying modem refuses keeps its default (a warning), no traceback, no difference."""
    trace, _ = record(tmp_path, "types", ["ATS7?", "AT+CTZU?", "AT+QGDCNT?"])
    edited = with_state(tmp_path, trace, {
        "settings.json": {"echo": "yes", "cmee": 10 ** 400, "sreg": {"7": "42", "x": [1]}, "ifc": {}},
        "nv.json": {"ctzu": "1", "qsimdet": "on", "items": {"qcfg": {"nwscanmode": 5}, "nope": []}},
        "qgdcnt.json": {"sent": "5", "received": -1}})
    replays(capsys, edited)


def test_a_huge_counter_in_a_traces_state_is_shown_as_the_recording_would(tmp_path, capsys):
    """A counter of 4000 digits (json reads it): the replaying modem loads it as a saved
    counter; AT+QGDCNT? shows it, a difference from the recording (which had 0), not a crash."""
    trace, _ = record(tmp_path, "huge", ["AT+QGDCNT?"])
    edited = with_state(tmp_path, trace, {"qgdcnt.json": {"sent": 10 ** 3999, "received": 0}})
    code, out = replay(capsys, edited)
    assert code == 1 and "first difference: command 1" in out, out


def _shallow_replay(capsys, path, main=None) -> tuple:
    """replay() from a fresh thread: the stack of a command-line run (pytest's own frames
    would move the recursion limit the trace reader meets), any exception returned."""
    result: list = []

    def run() -> None:
        try:
            if main is None:
                result.append(replay(capsys, path))
            else:
                capsys.readouterr()
                code = main([str(path)])
                cap = capsys.readouterr()
                result.append((code, cap.out + cap.err))
        except BaseException as exc:           # noqa: B036 (reported by the caller)
            result.append(exc)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(20)
    return result[0]


def _deep_state(tmp_path, trace, name, key, depth):
    first, *rest = trace.read_text().splitlines(keepends=True)
    head = json.loads(first)
    head["material"]["state"] = "@@"
    deep = "[" * depth + "]" * depth
    path = tmp_path / f"deep_{name}_{depth}.trace"
    path.write_text(json.dumps(head).replace('"@@"', json.dumps({name: {key: "@@"}})).replace('"@@"', deep)
                    + "\n" + "".join(rest))
    return path


@pytest.mark.parametrize("name,key", [("nv.json", "items"), ("qgdcnt.json", "sent")])
def test_deeply_nested_nv_or_counter_state_far_from_the_limit(tmp_path, capsys, name, key):
    """Nesting 900 deep (the reader takes it; the modem's loader ignores it, a warning) or
    10000 deep (the reader refuses it: exit 2, one line): never a traceback."""
    trace, _ = record(tmp_path, "deep", ["ATS7?"])
    for depth, want in ((900, 0), (10000, 2)):
        got = _shallow_replay(capsys, _deep_state(tmp_path, trace, name, key, depth))
        assert isinstance(got, tuple) and got[0] == want, (depth, got)


@pytest.mark.parametrize("main", [replay_main, show_main], ids=["replay", "show"])
def test_deeply_nested_state_near_the_limit_is_exit_2_or_a_clean_replay(tmp_path, capsys, main):
    trace, _ = record(tmp_path, "deep", ["ATS7?"])
    for depth in range(975, 996):
        path = _deep_state(tmp_path, trace, "qgdcnt.json", "sent", depth)
        got = _shallow_replay(capsys, path, main)
        assert isinstance(got, tuple), (depth, got)
        code, out = got
        assert code in (0, 2) and "Traceback" not in out, (depth, out)


def test_deeply_nested_settings_state_is_exit_2_or_a_clean_replay(tmp_path, capsys):
    trace, _ = record(tmp_path, "deep", ["ATS7?"])
    for depth in list(range(960, 1000, 3)):
        got = _shallow_replay(capsys, _deep_state(tmp_path, trace, "settings.json", "sreg", depth))
        assert isinstance(got, tuple), (depth, got)
        code, out = got
        assert (code == 2 and "not a JSON line" in out) or (code == 0 and "no difference" in out), (depth, out)


def test_a_deeply_nested_settings_json_on_disk_reads_as_defaults(tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    (state / "settings.json").write_text("[" * 100000 + "]" * 100000)
    (state / "nv.json").write_text("[" * 100000 + "]" * 100000)
    try:
        answers = run_modem(state, ["ATS7?"])
    except RecursionError as exc:
        pytest.fail(f"the modem was not made: {exc!r}")
    assert answers[0].endswith(b"\r\n000\r\n\r\nOK\r\n"), answers


# -- a read-only file system for the .lock ----------------------------------------------------
def _in_readonly_tmpfs(tmp_path, setup: str, code: str) -> subprocess.CompletedProcess:
    """`code` (python) run in a private mount namespace where tmp_path/ro is a tmpfs
    prepared by `setup` (shell, in $D) and then remounted read-only."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f'set -e; D={ro}; mount -t tmpfs none "$D"; mkdir -m 700 "$D/st"; {setup}; '
              f'mount -o remount,ro "$D"; exec "$0" -c "$1"')
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, code],
                          capture_output=True, text=True, timeout=15, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if "mount:" in proc.stderr or "unshare:" in proc.stderr:
        pytest.skip(f"no private read-only mount here: {proc.stderr.strip()}")
    return proc


LOCK = ("import sys; from pathlib import Path; from emulator.tools.cli import lock_state_dir, StateDirBusy\n"
        "try:\n    print('fd', lock_state_dir(Path(sys.argv[1])))\n"
        "except StateDirBusy as exc:\n    print('busy', exc)\n")


@pytest.mark.parametrize("setup", [":", 'touch "$D/st/.lock"'], ids=["no-lock", "plain-lock"])
def test_a_read_only_file_system_for_the_lock_still_only_warns(tmp_path, setup):
    """EROFS on <state-dir>/.lock (absent, or a plain file): served as a read-only state dir,
    one warning, as before f311aca -- not refused as 'not a plain file'."""
    proc = _in_readonly_tmpfs(tmp_path, setup, LOCK.replace("sys.argv[1]", repr(str(tmp_path / "ro" / "st"))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "fd None", proc.stdout + proc.stderr
    assert "Read-only file system" in proc.stderr and "not a plain file" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("setup", ['mkdir "$D/st/.lock"', 'mkfifo "$D/st/.lock"'], ids=["dir", "fifo"])
def test_a_non_plain_lock_on_a_read_only_file_system_is_still_refused(tmp_path, setup):
    proc = _in_readonly_tmpfs(tmp_path, setup, LOCK.replace("sys.argv[1]", repr(str(tmp_path / "ro" / "st"))))
    assert proc.stdout.startswith("busy") and "not a plain file" in proc.stdout, proc.stdout + proc.stderr


# -- ML302 over a state dir another profile wrote --------------------------------------------
def test_an_ml302_trace_with_ec2x_nv_and_counters_replays(tmp_path, capsys):
    """A state dir an EC2x used (nv.json with a QCFG item, qgdcnt.json) then an ML302 traced
    on it: the start record carries what the ML302 loaded, and the trace replays."""
    def prepare(st):
        run_modem(st, ['AT+QCFG="nwscanmode",3', "AT+CTZU=0", "AT+QGDCNT=1"])
    trace, answers = record(tmp_path, "ml", ["AT", "ATS7?"], profile="ml302", prepare=prepare)
    assert all(a.endswith(OK) for a in answers), answers
    replays(capsys, trace)
    replays(capsys, trace, "--profile", "ec2x")


def test_tracing_an_ml302_adds_no_warnings(tmp_path, caplog):
    state = tmp_path / "st"
    state.mkdir()
    run_modem(state, ['AT+QCFG="nwscanmode",3'])
    caplog.set_level(logging.INFO)
    caplog.clear()
    run_modem(state, ["AT", "ATS7?"], profile="ml302")
    untraced = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    run_modem(state, ["AT", "ATS7?"], profile="ml302", trace=tmp_path / "ml.trace")
    traced = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert traced == untraced


# -- the pytest plugin's traces -----------------------------------------------------------------
def test_the_pytest_plugins_trace_after_a_saved_profile_replays(tmp_path):
    """A user's test (the plugin's `modem` fixture) saving ATE0 + S7 with AT&W, then a second
    test on a state dir with those files: each trace replays (the plugin's state dir is
    per test; a trace on saved settings carries them)."""
    test = tmp_path / "test_user.py"
    test.write_text(
        "from emulator.testing.host import Host\n"
        "def test_saved(modem):\n"
        "    host = Host(modem.path)\n"
        "    assert host.at('ATS7=42;&W').endswith(b'OK\\r\\n')\n"
        "    assert host.at('ATZ').endswith(b'OK\\r\\n')\n"
        "    assert host.at('ATS7?').endswith(b'042\\r\\n\\r\\nOK\\r\\n')\n"
        "    host.close()\n"
        "    print('TRACE', modem.trace)\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist",
                           "-p", "no:cacheprovider", "-s", str(test)],
                          capture_output=True, text=True, timeout=20, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    trace = next(line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("TRACE "))
    replayed = subprocess.run([sys.executable, "-m", "emulator", "replay", trace], capture_output=True,
                              text=True, timeout=20, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert replayed.returncode == 0 and "no difference" in replayed.stdout + replayed.stderr, \
        replayed.stdout + replayed.stderr


def test_tracing_an_ec2x_adds_no_warnings_for_state_it_never_uses(tmp_path, caplog):
    state = tmp_path / "st"
    state.mkdir()
    (state / "nv.json").write_text("garbage")
    (state / "qgdcnt.json").write_text("garbage")
    caplog.set_level(logging.INFO)
    caplog.clear()
    run_modem(state, ["AT"])
    untraced = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    run_modem(state, ["AT"], trace=tmp_path / "ec.trace")
    traced = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert traced == untraced


def test_an_ec2x_trace_with_nv_items_replayed_as_ml302_is_no_traceback(tmp_path, capsys, caplog):
    """nv.json items of tables the replay's --profile (ml302) lacks: the replaying modem keeps
    its defaults (a warning naming the item) and the trace's AT replays."""
    def prepare(st):
        run_modem(st, ['AT+QCFG="nwscanmode",3', 'AT+QINDCFG="csq",1'])
    trace, _ = record(tmp_path, "ec", ["AT"], prepare=prepare)
    items = records(trace)[0]["material"]["state"]["nv.json"]["items"]
    assert items["qcfg"]["nwscanmode"] == ["3"] and items["qindcfg"]["csq"] == ["1"], items
    caplog.set_level(logging.INFO)
    code, out = replay(capsys, trace, "--profile", "ml302")
    assert code == 0 and "no difference" in out, out
    # (the ML302 has no AT+QCFG: its modem never loads nv.json, traced or not)
    assert not any("does not fit this profile" in r.getMessage() for r in caplog.records), caplog.records
