"""Review of 9164649 (crash consistency 2): state files read non-blocking and plain only
(storage.atomic_file.read_plain, used by Settings.load, DeviceConfig._load, DataCounter._load),
a .lock that is a directory refused (cli.lock_state_dir), and the start record's material
carrying the state files (trace.STATE_FILES, material_of / _material_problem /
write_state_files) so that a replay starts from the settings the recording started from.

Checked here: names outside STATE_FILES and path traversal in a trace's "state", a text
that cannot be written back, an old trace without "state", saved ATV0/S7/CMEE/S3 and an
AT&W during the recording, a hand-written qgdcnt.json, a --count 2 recording (each modem's
own state), an ML302 trace replayed with --profile ec2x, a symlinked settings.json, a UTF-16
or a big settings.json the modem loads, FIFOs / directories at the state paths (the warning
behaviour.md promises), read_plain during atomic replacement, a .lock that is a socket.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.storage.atomic_file import atomic_write, read_plain
from emulator.testing.host import Host
from emulator.tools.trace import show_main
from tests.e2e.cli_support import ROOT
from tests.e2e.replay_support import records, replay, replays, save
from tests.e2e.test_adversarial_crash_consistency import emus  # noqa: F401

OK = b"\r\nOK\r\n"
SETTINGS = {"echo": False, "verbose": True, "quiet": False, "cmee": 2, "ipr": 115200, "ifc": [0, 0],
            "icf": [3, 3], "dcd": 1, "dtr": 2, "x": 4,
            "sreg": {"0": 0, "3": 13, "4": 10, "5": 8, "6": 2, "7": 42, "8": 2, "10": 15, "12": 50}}
S7_CMEE = b"\r\n042\r\n\r\n+CMEE: 2\r\n\r\nOK\r\n"


def record(tmp_path, name: str, commands: list[str], profile: str = "ec2x", prepare=None,
           line_end: bytes = b"\r") -> tuple:
    """A modem on state dir tmp_path/name (prepare(state) first) tracing to
    tmp_path/name.trace while `commands` are sent: (trace path, answers)."""
    state = tmp_path / name
    state.mkdir()
    if prepare is not None:
        prepare(state)
    trace = tmp_path / f"{name}.trace"
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem(profile, state_dir=state, trace=str(trace))
        host = Host(port.path)
        host.line_end = line_end
        try:
            answers = []
            for c in commands:
                if isinstance(c, tuple):           # (raw line, what its answer ends with)
                    host.write(c[0])
                    answers.append(host.read_until(c[1], timeout=5))
                else:
                    answers.append(host.at(c))
        finally:
            host.close()
    return trace, answers


def shown(capsys, path) -> tuple[int, str]:
    capsys.readouterr()
    code = show_main([str(path)])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def with_state(tmp_path, trace, state) -> object:
    recs = records(trace)
    recs[0] = dict(recs[0], material=dict(recs[0].get("material") or {}, state=state))
    return save(tmp_path, "edited.trace", recs)


# -- what works -------------------------------------------------------------------------------
@pytest.mark.parametrize("state", [
    {"../settings.json": "{}"}, {"/tmp/x": "{}"}, {"ufs/a.bin": "x"}, {"settings.json/": "{}"},
    {"settings.json": 5}, {"settings.json": None}, ["settings.json"], "settings.json",
    {"settings.json": "x" * (1 << 16 + 1)},
])
def test_a_state_outside_state_files_is_a_damaged_trace_for_show_and_replay(tmp_path, capsys, state):
    """A "state" naming anything but settings.json/nv.json/qgdcnt.json (a traversal, an
    absolute path, a UFS name), or not texts, or a text over STATE_FILE_MAX: exit 2 with
    one line naming the record (README), for `trace show` and `replay`, and nothing is
    written outside the replay's state dir."""
    trace, _ = record(tmp_path, "st", ["AT"])
    edited = with_state(tmp_path, trace, state)
    code, out = replay(capsys, edited)
    assert code == 2 and "edited.trace:1: not a trace record" in out, out
    code, out = shown(capsys, edited)
    assert code == 2 and "edited.trace:1" in out, out
    assert not (tmp_path / "x").exists()


def test_a_trace_without_state_still_replays(tmp_path, capsys):
    """A fresh modem has no state files: no "state" in its material (as an old trace), and
    it replays on factory settings; the same trace with "state" removed from a recording
    made on saved settings replays on factory settings and differs at the first query."""
    trace, answers = record(tmp_path, "fresh", ["ATE0", "ATS7?"])
    assert "state" not in records(trace)[0]["material"]
    replays(capsys, trace)
    saved = lambda st: (st / "settings.json").write_text(json.dumps(SETTINGS))   # noqa: E731
    trace, answers = record(tmp_path, "saved", ["ATS7?;+CMEE?"], prepare=saved)
    assert answers == [S7_CMEE]
    replays(capsys, trace)
    recs = records(trace)
    recs[0]["material"].pop("state")
    code, out = replay(capsys, save(tmp_path, "old.trace", recs))
    assert code == 1 and "first difference: command 1" in out, out


def test_saved_atv0_echo_and_an_atw_inside_the_recording_replay(tmp_path, capsys):
    """Saved ATV0 + ATE1 + S7 (the first command's answer is numeric and echoed), then an
    AT&W of other values and an ATZ inside the recording: the replay starts from the
    pre-AT&W file, does the AT&W again, and finds no difference; `trace show` exits 0."""
    def prepare(state):
        (state / "settings.json").write_text(json.dumps(dict(SETTINGS, echo=True, verbose=False)))
    trace, answers = record(tmp_path, "v0", [(b"ATS7?\r", b"\r\n0\r"), "ATV1;S7=9;E0;&W", "ATZ", "ATS7?;+CMEE?"],
                            prepare=prepare)
    assert answers[0] == b"ATS7?\r042\r\n0\r"
    assert answers[3] == b"\r\n009\r\n\r\n+CMEE: 2\r\n\r\nOK\r\n"
    assert records(trace)[0]["material"]["state"]["settings.json"]["sreg"]["7"] == 42
    replays(capsys, trace)
    code, out = shown(capsys, trace)
    assert code == 0 and "ATS7?" in out, out


def test_saved_s3_lf_host_replays(tmp_path, capsys):
    """S3=10 saved: the host ends its lines with LF; the replay's modem must hear them
    (it starts from the recorded S3, not factory 13, which would leave it deaf)."""
    def prepare(state):
        (state / "settings.json").write_text(json.dumps(dict(SETTINGS, sreg=dict(SETTINGS["sreg"], **{"3": 10}))))
    trace, answers = record(tmp_path, "s3", [(b"ATS3?\n", b"OK\n\n"), (b"ATS7?\n", b"OK\n\n")],
                             prepare=prepare)
    assert answers == [b"\n\n010\n\n\n\nOK\n\n", b"\n\n042\n\n\n\nOK\n\n"], answers
    replays(capsys, trace)


def test_nv_and_counters_in_the_state_replay(tmp_path, capsys):
    """nv.json (AT+CTZU=0) and a qgdcnt.json with counters: both in the start record, and
    AT+CTZU? / AT+QGDCNT? replay with no difference."""
    def prepare(state):
        (state / "nv.json").write_text('{"ctzu": 0, "qsclk": 0, "qsimstat": 0, "qsimdet": [0, 0], "items": {}}')
        (state / "qgdcnt.json").write_text('{"sent": 1234, "received": 5678}')
    trace, answers = record(tmp_path, "nv", ["ATE0", "AT+CTZU?", "AT+QGDCNT?"], prepare=prepare)
    assert answers[1:] == [b"\r\n+CTZU: 0\r\n\r\nOK\r\n", b"\r\n+QGDCNT: 1234,5678\r\n\r\nOK\r\n"]
    assert set(records(trace)[0]["material"]["state"]) == {"nv.json", "qgdcnt.json"}
    replays(capsys, trace)


def test_an_ml302_trace_with_saved_ipr_replays_with_either_profile(tmp_path, capsys):
    """An ML302 recorded after AT+IPR=9600;S7=33;&W replays as itself and with --profile
    ec2x (the rate is valid for both: no warning, no difference)."""
    first, _ = record(tmp_path, "ml", ["ATS7=33;+IPR=9600;&W"], profile="ml302")
    saved = (tmp_path / "ml" / "settings.json").read_text()
    trace, answers = record(tmp_path, "ml2", ["ATS7?", "AT+IPR?"], profile="ml302",
                            prepare=lambda st: (st / "settings.json").write_text(saved))
    assert answers == [b"ATS7?\r\r\n033\r\n\r\nOK\r\n", b"AT+IPR?\r\r\n+IPR: 9600\r\n\r\nOK\r\n"]
    replays(capsys, trace)
    replays(capsys, trace, "--profile", "ec2x")


def test_an_ec2x_only_rate_saved_replayed_as_ml302_is_a_difference_not_a_traceback(tmp_path, capsys):
    """AT+IPR=4800 saved on an EC2x (not an ML302 rate): replay --profile ml302 takes the
    factory rate with a warning (behaviour.md: a bad key) and reports the difference."""
    first, _ = record(tmp_path, "ec", ["ATE0;+IPR=4800;&W"])
    saved = (tmp_path / "ec" / "settings.json").read_text()
    trace, answers = record(tmp_path, "ec2", ["AT+IPR?"], prepare=lambda st: (st / "settings.json").write_text(saved))
    assert answers == [b"\r\n+IPR: 4800\r\n\r\nOK\r\n"]
    replays(capsys, trace)
    code, out = replay(capsys, trace, "--profile", "ml302")
    assert code == 1 and "got:      \\r\\n+IPR: 115200" in out, out


def test_count_2_each_start_record_carries_its_own_modems_state(tmp_path, emus):  # noqa: F811
    """--count 2 --state-dir S: modem n's state is S/n; each start record carries its own
    modem's files and `replay --modem n` of each finds no difference."""
    state, trace = tmp_path / "st", tmp_path / "t.trace"
    emu = emus(state, "--count", "2", count=2, link=str(tmp_path / "m-{n}"))
    assert emu.host(0).at("ATS7=11;+CTZU=0;&W") == OK
    assert emu.host(1).at("ATS7=22;&W") == OK
    emu.end(signal.SIGTERM)
    emu = emus(state, "--count", "2", "--trace", str(trace), count=2, link=str(tmp_path / "m-{n}"))
    h0, h1 = Host(emu.paths[0]), Host(emu.paths[1])
    emu.hosts += [h0, h1]
    assert h0.at("ATS7?;+CTZU?") == b"\r\n011\r\n\r\n+CTZU: 0\r\n\r\nOK\r\n"
    assert h1.at("ATS7?;+CTZU?") == b"\r\n022\r\n\r\n+CTZU: 1\r\n\r\nOK\r\n"
    emu.end(signal.SIGTERM)
    starts = {r["modem"]: r["material"]["state"] for r in records(trace) if r["kind"] == "start"}
    assert starts[0]["settings.json"]["sreg"]["7"] == 11 and "nv.json" in starts[0]
    assert starts[1]["settings.json"]["sreg"]["7"] == 22 and "nv.json" not in starts[1]
    for n in ("0", "1"):
        done = subprocess.run([sys.executable, "-m", "emulator", "replay", str(trace), "--modem", n],
                              cwd=ROOT, capture_output=True, text=True, timeout=20)
        assert done.returncode == 0 and "no difference" in done.stdout, (n, done.stdout, done.stderr)


@pytest.mark.parametrize("name", ["settings.json", "nv.json"])
@pytest.mark.parametrize("kind", ["fifo", "dir", "socket"])
def test_a_non_plain_settings_or_nv_file_reads_as_defaults_with_a_warning(tmp_path, caplog, name, kind):
    """settings.json / nv.json a FIFO, a directory or a socket: the modem answers at once
    with defaults, one warning names the file (behaviour.md), the trace has no "state" for
    it, and the replay finds no difference."""
    caplog.set_level(logging.INFO)

    def prepare(state):
        path = state / name
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        else:
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(path))
            sock.close()
    trace, answers = record(tmp_path, "st", ["ATE0", "ATS7?;+CTZU?"], prepare=prepare)
    assert answers[1] == b"\r\n000\r\n\r\n+CTZU: 1\r\n\r\nOK\r\n"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and name in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]
    assert name not in (records(trace)[0]["material"].get("state") or {})


def test_read_plain_during_atomic_replacement_sees_one_whole_version(tmp_path):
    """read_plain racing atomic_write's rename: always one whole old or new text."""
    path = tmp_path / "settings.json"
    texts = [json.dumps(dict(SETTINGS, cmee=i % 3, pad="x" * (i * 37 % 5000))).encode() for i in range(50)]
    atomic_write(path, texts[0])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            atomic_write(path, texts[i % len(texts)])
            i += 1
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = [read_plain(path) for _ in range(2000)]
    finally:
        stop.set()
        thread.join()
    assert all(s in texts for s in seen)


# -- were bugs, fixed (each failed before: the trace now carries the values the modem loaded,
# in the form it saves them, never the files' bytes; qgdcnt.json's read warns; a .lock that
# is no plain file is refused whatever open says; read_plain closes what it opened) -------------
def test_a_state_text_that_cannot_be_written_back_is_exit_2_not_a_traceback(tmp_path, capsys):
    trace, _ = record(tmp_path, "st", ["AT"])
    edited = with_state(tmp_path, trace, {"settings.json": "\ud800"})
    try:
        code, out = replay(capsys, edited)
    except UnicodeError as exc:
        pytest.fail(f"replay raised {exc!r}")
    assert code == 2 and "edited.trace:1" in out, out


def test_a_symlinked_settings_json_does_not_leak_its_target_into_the_trace(tmp_path):
    secret = tmp_path / "device.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n")
    trace, answers = record(tmp_path, "st", ["ATS7?"], prepare=lambda st: (st / "settings.json").symlink_to(secret))
    assert answers == [b"ATS7?\r\r\n000\r\n\r\nOK\r\n"]          # (the modem: factory settings)
    assert "PRIVATE KEY" not in trace.read_text()


def test_a_utf16_settings_json_the_modem_loads_is_in_the_trace(tmp_path, capsys):
    trace, answers = record(tmp_path, "st", ["ATS7?;+CMEE?"],
                            prepare=lambda st: (st / "settings.json").write_bytes(json.dumps(SETTINGS).encode("utf-16")))
    assert answers == [S7_CMEE]
    replays(capsys, trace)


def test_a_big_settings_json_the_modem_loads_is_in_the_trace(tmp_path, capsys):
    trace, answers = record(tmp_path, "st", ["ATS7?;+CMEE?"],
                            prepare=lambda st: (st / "settings.json").write_text(json.dumps(SETTINGS) + " " * 70000))
    assert answers == [S7_CMEE]
    replays(capsys, trace)


@pytest.mark.parametrize("kind", [
    "fifo", "dir",
])
def test_a_non_plain_qgdcnt_json_reads_as_no_counters_with_a_warning(tmp_path, caplog, kind):
    caplog.set_level(logging.INFO)

    def prepare(state):
        (os.mkfifo if kind == "fifo" else os.mkdir)(state / "qgdcnt.json")
    trace, answers = record(tmp_path, "st", ["ATE0", "AT+QGDCNT?"], prepare=prepare)
    assert answers[1] == b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n"
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "qgdcnt.json" in r.getMessage()]
    assert len(warned) == 1, [r.getMessage() for r in caplog.records]


def test_a_lock_that_is_a_socket_keeps_a_second_emulator_out(tmp_path, emus):  # noqa: F811
    state = tmp_path / "st"
    state.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(state / ".lock"))
    try:
        try:
            first = emus(state)
        except AssertionError:
            return                               # refused at once: as good as a lock
        first.host().close()
        try:
            emus(state, link=str(tmp_path / "second"))
        except AssertionError as exc:
            assert "not a plain file" in str(exc) or "in use" in str(exc), exc
            return
        pytest.fail("a second emulator runs on the same state dir beside the first")
    finally:
        sock.close()


def _held(state) -> list[str]:
    """The paths under `state` this process holds a descriptor on."""
    held = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(f"{state}/"):
            held.append(target)
    return held


def test_read_plain_of_a_fifo_leaks_no_descriptor(tmp_path):
    os.mkfifo(tmp_path / "settings.json")
    for _ in range(20):
        with pytest.raises(OSError):
            read_plain(tmp_path / "settings.json")
    assert _held(tmp_path) == []


def test_a_directory_state_file_leaks_no_descriptor_across_reboots(tmp_path):
    state = tmp_path / "st"
    state.mkdir()
    (state / "qgdcnt.json").mkdir()
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=state)
        host = Host(port.path)
        try:
            assert host.at("ATE0;+QGDCNT?") == b"ATE0;+QGDCNT?\r\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n"
            for _ in range(20):
                host.write(b"AT+CFUN=1,1\r")
                host.read_until(b"RDY", timeout=10)
            assert host.at("AT+QGDCNT?").endswith(b"\r\n+QGDCNT: 0,0\r\n\r\nOK\r\n")
            held = _held(state)
        finally:
            host.close()
    assert held == [], f"{len(held)} descriptors held: {sorted(set(held))}"
