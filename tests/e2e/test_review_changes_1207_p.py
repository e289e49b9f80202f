"""Review of 79d6f66, 75ada26 and 7204811 (main): the late-LF rule's forget_line_end, the
replay's one-read-at-a-time writes, URCs dropped while a module restarts, --trace refused when
it is the process's own stdout/stderr, replay of a FILE that is a pipe.

Each test checks one claim of a commit message / README.md / docs/behaviour.md in a case the
commit's own tests did not try.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.testing.host import Host
from emulator.testing.peers import TcpServer
from tests.e2e import replay_support as rs
from tests.e2e.answer_support import answer_is

ROOT = Path(__file__).resolve().parents[2]
OK = b"\r\nOK\r\n"
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


# == 79d6f66: forget_line_end when a data phase ends -------------------------------------------
# The commit: a data prompt "no longer leaves the lexer's 'last byte was S3' set through the data
# phase -- after the data the host's next LF was swallowed as that long-gone line's ending,
# unechoed".  Only the branches that leave no late-LF rule forget it; with a rule set, the first
# host byte after the prompt forgets it (_drop_late_lf).  A prompt that ends with NO host byte at
# all (AT+QFUPL's <timeout>) leaves it set.
# Was a bug, fixed: interpreter._abandon dropped _late_lf without lexer.forget_line_end.
def test_lf_after_an_upload_that_timed_out_with_no_data_is_echoed(open_modem, emulator):
    host, port = open_modem("ec2x", echo=True, manual_time=True)
    host.write(b'AT+QFUPL="t.txt",10,1\r')
    assert host.read_until(b"CONNECT\r\n") == b'AT+QFUPL="t.txt",10,1\r\r\nCONNECT\r\n'
    emulator.advance(port, 1.5)
    first = host.read_until(b"\r\n", timeout=5) + host.read_until(b"\r\n", timeout=5)
    assert first == b"\r\n+CME ERROR: 421\r\n", first          # (the upload's timeout)
    host.write(b"\nAT\r")
    answer_is(host, b"\nAT\r" + OK, timeout=1.5)


def _close_at_once(conn) -> None:
    conn.close()


def test_lf_after_a_transparent_connect_the_server_ended_at_once_is_echoed(open_modem, emulator):
    with TcpServer(behave=_close_at_once) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, _ = open_modem("ec2x", echo=True)
        assert host.at(ATTACH).endswith(OK)
        host.write(b'AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2\r')
        assert host.read_until(b"NO CARRIER\r\n", timeout=5).endswith(b"\r\nCONNECT\r\n\r\nNO CARRIER\r\n")
        assert host.quiet_for(0.2) == b""
        host.write(b"\nAT\r")
        answer_is(host, b"\nAT\r" + OK, timeout=1.5)


def test_lf_after_an_upload_whose_data_followed_the_prompt_is_echoed(open_modem):
    """The rule branch: the line alone, then its data after CONNECT; the LF after OK echoed."""
    host, _ = open_modem("ec2x", echo=True)
    host.write(b'AT+QFUPL="g.txt",3\r')
    assert host.read_until(b"CONNECT\r\n").endswith(b"\r\nCONNECT\r\n")
    host.write(b"abc")
    assert host.read_until(OK).endswith(b"+QFUPL: 3,262\r\n" + OK)
    host.write(b"\nAT\r")
    answer_is(host, b"\nAT\r" + OK, timeout=1.5)


# == 7204811: URCs dropped between a restart and RDY ------------------------------------------
EC2X_BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"


def test_a_urc_raised_right_after_rdy_is_written(open_modem, emulator):
    """The drop ends at RDY: a control urc raised once RDY is out reaches the host (after it)."""
    host, port = open_modem("ec2x", manual_time=True)
    assert emulator.control("reboot", ms=300) == {"ok": True}
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.3)
    assert host.read_until(b"RDY\r\n", timeout=5) == b"\r\nRDY\r\n"
    assert emulator.control("urc", text="+QIND: LATE") == {"ok": True}
    emulator.advance(port, 1.0)
    got = host.read_until(b"PB DONE\r\n", timeout=5)
    assert b"\r\n+QIND: LATE\r\n" in got, got


def test_a_ping_in_flight_across_a_restart_reports_nothing_after_rdy(open_modem, emulator):
    """AT+QPING answered OK, then AT+CFUN=1,1 before its result: the result (raised while
    booting or after) must not come out after RDY (a restarted module forgot the ping)."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at(ATTACH) == OK
    assert host.at('AT+QPING=1,"192.0.2.1",4,2') == OK
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05)
    for _ in range(12):
        emulator.advance(port, 0.5)
    got = host.read_until(b"PB DONE\r\n", timeout=5) + host.quiet_for(0.3)
    assert b"+QPING" not in got, got
    assert got == EC2X_BOOT, got


# == 7204811: --trace refused when it is stdout/stderr's file -----------------------------------
def _start(tmp_path, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "state"),
                             "--link", str(tmp_path / "modem"), *args], cwd=ROOT, **kw)


def test_a_trace_path_that_is_a_symlink_to_the_stdout_file_is_refused(tmp_path):
    job = tmp_path / "job.log"
    job.write_text("")
    link = tmp_path / "trace-link"
    link.symlink_to(job)
    with open(job, "a") as out, open(tmp_path / "err.log", "w") as err:
        proc = _start(tmp_path, "--trace", str(link), stdout=out, stderr=err)
        try:
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    log = (tmp_path / "err.log").read_text()
    assert code == 2, log
    assert "stdout" in log and "Traceback" not in log, log
    assert job.read_text() == "" and not (tmp_path / "modem").exists()


def test_a_trace_to_the_stderr_file_via_dev_stderr_is_refused(tmp_path):
    err_path = tmp_path / "err.log"
    with open(tmp_path / "out.log", "w") as out, open(err_path, "w") as err:
        proc = _start(tmp_path, "--trace", "/dev/stderr", stdout=out, stderr=err)
        try:
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    log = err_path.read_text()
    assert code == 2 and "stderr" in log and "Traceback" not in log, log


@pytest.mark.parametrize("closed", ["1>&-", "1>&- 2>&-"])
def test_a_trace_with_stdout_closed_stays_whole(tmp_path, closed):
    """fd 1 (and 2) not open at start (a daemon's `>&-`): make_trace's fstat check skips them, the
    trace file then IS fd 1 (or 2) -- nothing may write the device path line or log lines into it."""
    trace = tmp_path / "t.trace"
    err = open(tmp_path / "err.log", "w")
    cmd = [sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "state"),
           "--link", str(tmp_path / "modem"), "--trace", str(trace)]
    proc = subprocess.Popen(["/bin/sh", "-c", f'exec "$@" {closed}', "sh", *cmd, "--log-level", "DEBUG"],
                            cwd=ROOT, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "modem").exists():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "err.log").read_text()
            time.sleep(0.05)
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
        err.close()
    log = (tmp_path / "err.log").read_text()
    assert "Traceback" not in log, log
    assert code == 0, log
    kinds = [json.loads(line)["kind"] for line in trace.read_text().splitlines()]
    assert kinds[0] == "start" and kinds[-1] == "stop", kinds


# == 75ada26: each recorded read written once the modem read the one before --------------------
def test_a_big_transparent_stream_replays_without_a_second_per_chunk(open_modem, emulator, tmp_path, capsys):
    """Transparent mode, 120 chunks of 2 KB to a server that reads everything: the replay
    writes each chunk once the modem has read the one before; it must not wait its 1 s per
    chunk (whole replay well under the chunk count in seconds)."""
    path = tmp_path / "flood.trace"
    collect = rs.Collect()
    payload = bytes(range(256)) * 8
    with TcpServer(behave=collect) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, advance, _ = rs.traced_modem(open_modem, emulator, path)
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
        for i in range(120):
            host.write(payload)
        advance(0.5)
        collect.wait_for(payload * 120)
        advance(1.2)
        host.write(b"+++")
        advance(1.2)
        assert host.read_until(OK) == OK
        rs.finish(emulator)
    reads = [r for r in rs.records(path) if r["kind"] == "io" and r["dir"] == "in"]
    assert len(reads) > 10
    t0 = time.monotonic()
    rs.replays(capsys, path)
    assert time.monotonic() - t0 < 12


def test_a_transparent_stream_over_a_slow_link_replays_in_about_its_recorded_time(open_modem, emulator,
                                                                                   tmp_path, capsys):
    """A scenario's `net kbps=400` (50 KB/s) after the transparent open: the modem stops reading
    the pty while the link is full (the "online" input hold) and reads on as it drains.  The
    replay, given the same scenario, must not add its 1 s wait per recorded read on top."""
    path = tmp_path / "slow_link.trace"
    scenario = tmp_path / "slow.toml"
    scenario.write_text('[[step]]\nwhen = { command = "+QIOPEN" }\nop = "net"\nkbps = 400\n')
    collect = rs.Collect()
    payload = bytes(range(256)) * 16                     # 4 KB
    with TcpServer(behave=collect) as server:
        emulator.router.add_map("tcp.example", 7000, "127.0.0.1", server.port)
        host, port = open_modem("ec2x", trace=str(path))
        emulator.run_scenario({"step": [{"when": {"command": "+QIOPEN"}, "op": "net", "kbps": 400}]})
        assert host.at(ATTACH) == OK
        assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
        t0 = time.monotonic()
        for _ in range(12):
            host.write(payload)
        collect.wait_for(payload * 12)
        recorded = time.monotonic() - t0
        time.sleep(1.2)
        host.write(b"+++")
        assert host.read_until(OK, timeout=5) == OK
        rs.finish(emulator)
    reads = [r for r in rs.records(path) if r["kind"] == "io" and r["dir"] == "in"]
    t0 = time.monotonic()
    rs.replays(capsys, path, "--scenario", str(scenario))
    took = time.monotonic() - t0
    assert recorded > 0.5 and took < recorded + 5, (took, recorded, len(reads))


def test_a_urc_queued_behind_a_slow_cfun_restart_does_not_come_between_ok_and_rdy(open_modem, emulator):
    """A URC raised while AT+CFUN=1,1 runs waits for the line's answer; then the module
    restarts: whatever the module writes after its OK and before RDY is output of a UART that
    is going down -- the host's bytes after the restart must start with RDY."""
    host, port = open_modem("ec2x", manual_time=True)
    assert emulator.control("slow", command="+CFUN", ms=500) == {"ok": True}
    host.write(b"AT+CFUN=1,1\r")
    time.sleep(0.1)
    assert emulator.control("urc", text="+QIND: QUEUED") == {"ok": True}
    emulator.advance(port, 0.5)
    before = host.read_until(OK, timeout=5)
    assert before == OK, before
    between = host.quiet_for(0.3)
    emulator.advance(port, 1.0)
    after = host.read_until(b"PB DONE\r\n", timeout=5)
    assert between + after in (EC2X_BOOT, EC2X_BOOT + b"\r\n+QIND: QUEUED\r\n"), between + after


def _learnt_cr_only(emulator, port):
    return emulator.run(lambda: port.modem.interpreter.lexer.crlf)


@pytest.mark.parametrize("first", [
    b'AT+QFUPL="a.txt",3\rabc',      # (was a regression of 79d6f66, fixed: _late_lf_rule learns CR-only)
    b'AT\rAT+QFUPL="a.txt",3\rabc'])
def test_a_cr_only_hosts_lf_first_payload_after_a_read_prompt(open_modem, emulator, first):
    """behaviour.md: "A host that has shown it ends its lines with CR alone (the byte after an
    earlier line's CR was not LF) ... its data may begin with LF however soon it comes after the
    prompt -- once it can have seen the prompt."  A fresh host (nothing learnt) whose first
    line is an upload with its data in the same write: the byte after that CR was 'a', not LF.
    Its next upload's prompt is read, then an LF alone and more data: the LF is data."""
    from tests.e2e.test_adversarial_ml302_hostile_host_2 import checksum
    host, port = open_modem("ec2x", echo=True)
    host.write(first)
    assert host.read_until(b"+QFUPL: 3,%x\r\n" % int(checksum(b"abc"), 16) + OK)
    host.write(b'AT+QFUPL="b.txt",3\r')
    assert host.read_until(b"CONNECT\r\n").endswith(b"\r\nCONNECT\r\n")
    host.write(b"\n")
    time.sleep(0.01)
    host.write(b"xyz")
    got = host.read_until(OK, timeout=5)
    assert b"+QFUPL: 3,%x\r\n" % int(checksum(b"\nxy"), 16) in got, (got, _learnt_cr_only(emulator, port))



# == 7204811: replay reads its FILE once (a named pipe, `<(zcat x.gz)`) --------------------------
def test_a_trace_replayed_from_a_named_pipe_replays_as_the_file_does(open_modem, emulator, tmp_path, capsys):
    import threading
    path = tmp_path / "field.trace"
    host, _ = open_modem("ec2x", trace=str(path))
    assert host.at("AT+CGMM") == b"\r\nEC25\r\n" + OK
    assert host.at("AT+CSQ") == b"\r\n+CSQ: 24,99\r\n" + OK
    rs.flush(emulator)
    code, from_file = rs.replay(capsys, path)
    assert code == 0 and from_file.endswith(": no difference\n"), from_file
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = path.read_bytes()

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(data)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    code, from_fifo = rs.replay(capsys, fifo)
    writer.join(5)
    assert (code, from_fifo) == (0, from_file.replace(str(path), str(fifo)))
