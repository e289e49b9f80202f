"""Review of the change set 04cd902..7b657ca (replay's AT+QPING / AT+QNTP stand-ins,
_CommandWatch): the bugs it found, each pinned by a test (all fixed since)."""
from __future__ import annotations

import datetime
import json
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from emulator.testing.peers.sntp import SntpServer
from emulator.tools.trace import replay_main

ROOT = Path(__file__).resolve().parents[2]
UTC = datetime.timezone.utc


def sntp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sntp-server"]


def record_one_ntp_sync(open_modem, emulator, path: Path) -> None:
    """A traced session: the PDP context up, one AT+QNTP to ntp.example (2019-06-01 12:00 UTC)."""
    with SntpServer(datetime.datetime(2019, 6, 1, 12, 0, 0, tzinfo=UTC)) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QNTP=1,"ntp.example"') == b"\r\nOK\r\n"
        host.read_until(b'+QNTP: 0,"2019/06/01,20:00:', timeout=5)
        host.read_until(b"\r\n", timeout=5)
        emulator.run(lambda: None)


# Was a bug, fixed: _stand_in_ntp serves the first recorded server_time for every later AT+QNTP to
#  the same server, so a session that synced twice replays with a +QNTP difference
def test_two_syncs_with_the_same_server_replay_with_no_difference(open_modem, emulator, tmp_path, capsys):
    """A real NTP server's time moves on between two syncs (here by an hour, as a device
    syncing hourly sees it).  The trace's two `ntp` records keep both server_times; the
    replay must answer each sync with its own, or the second +QNTP URC (and the clock
    after it) differs although the modem behaves the same."""
    path = tmp_path / "twice.trace"
    with SntpServer(datetime.datetime(2019, 6, 1, 12, 0, 0, tzinfo=UTC)) as ntp:
        emulator.router.add_map("ntp.example", 123, "127.0.0.1", ntp.port)
        host, _ = open_modem("ec2x", trace=str(path))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        for hour in (12, 13):
            ntp.when = datetime.datetime(2019, 6, 1, hour, 0, 0, tzinfo=UTC)
            assert host.at('AT+QNTP=1,"ntp.example"') == b"\r\nOK\r\n"
            host.read_until(b'+QNTP: 0,"2019/06/01,%d:00:' % (hour + 8), timeout=5)
            host.read_until(b"\r\n", timeout=5)
        emulator.run(lambda: None)
    times = [json.loads(line).get("server_time") for line in path.read_text().splitlines()
             if json.loads(line)["kind"] == "ntp"]
    assert len(times) == 2 and abs(times[1] - times[0] - 3600) < 1      # the trace has both
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


# Was a bug, fixed: _stand_in_pings skips a `ping` record with no times (every echo timed out), so
#  the replay's offline modem does not know the host: +QPING: 565 instead of 569
def test_a_ping_whose_every_reply_timed_out_replays_with_no_difference(open_modem, emulator, tmp_path, capsys):
    """--ping slow.example=3000 and AT+QPING with a 1 s timeout: +QPING: 569, then the
    summary "0,1,0,1,0,0,0"; the `ping` record has times [].  The replay must time out the
    same way, not fail the host's lookup."""
    path = tmp_path / "lost.trace"
    emulator.router.add_ping("slow.example", 3000)
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at('AT+QPING=1,"slow.example",1,1') == b"\r\nOK\r\n"
    assert host.read_until(b"+QPING: 0,1,0,1,0,0,0\r\n", timeout=8).endswith(b"\r\n+QPING: 569\r\n"
                                                                            b"\r\n+QPING: 0,1,0,1,0,0,0\r\n")
    emulator.run(lambda: None)
    capsys.readouterr()
    assert replay_main([str(path)]) == 0, capsys.readouterr().out


# Was a bug, fixed: a damaged ntp record (offset 1e300, NaN or -1e12, no server_time) makes the
#  SNTP stand-in's respond() raise on its thread: a traceback on stderr
@pytest.mark.parametrize("offset", ["1e300", "NaN", "-1e12"])
def test_a_damaged_ntp_offset_prints_no_traceback(open_modem, emulator, tmp_path, offset):
    """replay never answers bad input with a traceback (one line, or a difference)."""
    path = tmp_path / "ntp.trace"
    record_one_ntp_sync(open_modem, emulator, path)
    lines = []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "ntp":
            r.pop("server_time")
            r["offset"] = json.loads(offset)
        lines.append(json.dumps(r))
    path.write_text("\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, "-m", "emulator.tools.trace", "replay", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr


# Was a bug, fixed: replay_records starts the SNTP stand-ins before its try/finally: a scenario
#  that does not fit (ScenarioError, exit 2) leaves their threads and sockets running
def test_a_refused_scenario_leaves_no_sntp_stand_in_running(tmp_path, capsys):
    before = len(sntp_threads())
    path = tmp_path / "t.trace"
    records = [{"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0},
               {"t": 0.1, "modem": 0, "kind": "ntp", "server": "ntp.example", "port": 123, "code": 0,
                "offset": 1.0, "server_time": 1559390400.0, "in": 0, "out": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    scenario = tmp_path / "s.toml"
    scenario.write_text('[[step]]\nat = 1\nop = "urc"\ntext = "x"\nmodem = 1\n')   # no modem 1
    assert replay_main([str(path), "--scenario", str(scenario)]) == 2
    assert "there is no modem 1" in capsys.readouterr().err
    try:
        assert len(sntp_threads()) == before
    finally:
        for t in sntp_threads()[before:]:                 # (do not leave it to the next test)
            server = getattr(t, "_target", None)
            owner = getattr(server, "__self__", None)
            if owner is not None:
                owner.close()


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


# Was a bug, fixed: one SNTP stand-in (a thread and a socket) per distinct server of the trace,
#  however many: a hand-made trace with more servers than file descriptors tracebacks (EMFILE)
def test_a_trace_with_more_ntp_servers_than_descriptors_prints_no_traceback(tmp_path):
    path = tmp_path / "many.trace"
    records = [{"t": 0, "modem": 0, "kind": "start", "profile": "ec2x", "in": 0, "out": 0}]
    records += [{"t": 0.1, "modem": 0, "kind": "ntp", "server": f"ntp{i}.example", "port": 123,
                 "code": 569, "offset": 0, "in": 0, "out": 0} for i in range(300)]
    records += [{"t": 0.2, "modem": 0, "kind": "io", "dir": "in", "data": "AT\r", "in": 0, "out": 0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = subprocess.run([sys.executable, "-m", "emulator.tools.trace", "replay", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            preexec_fn=_low_fd_limit)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
