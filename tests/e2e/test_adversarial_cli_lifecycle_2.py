"""Adversarial CLI lifecycle, round 2: the `modem-emulator` process as CI systems and field
teams run it, after this session's stderr handler (emulator/tools/stderr_log.py), start-up
hints through it, --trace refusing pipes/terminals and one thread until a big send.

Covered here (not in test_adversarial_cli_lifecycle.py / test_review_perf_changes.py):
stdout a pipe already full (the device path line), a second stop signal while the exit
drains a full stderr pipe, more than 10,000 log lines into an unread pipe (the dropped count
exact, lines in order), a pty as stderr (script -c) with control characters in the host's
strings, nohup/setsid, --trace at /dev/stdout, /dev/tty, a socket and a directory.

Three bugs found, fixed since (2026-12-06): the device path's print to a stdout pipe already full
blocked the event loop (the paths now go through a non-blocking writer, drained at the exit);
a second stop signal while the exit drained a full stderr gave -15 / -1 or a hang (now only
noted); SIGHUP inherited ignored (nohup) was overridden (stop signals ignored at start stay so).
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from emulator.testing.host import Host
from tests.e2e.cli_support import ROOT, first_line, start
from tests.pipes import full_pipe, read_until_idle, threads

OK = b"\r\nOK\r\n"
F_SETPIPE_SZ = 1031
DROPPED = re.compile(rb"modem-emulator: (\d+) log lines dropped \(stderr was not read\)\n")
STAMP = re.compile(rb"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+: |modem-emulator: |  )")


def wait_for_link(path: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.islink(path):
        assert proc.poll() is None, f"emulator exited {proc.returncode}"
        assert time.monotonic() < deadline, "no link"
        time.sleep(0.05)


def in_exit_drain(proc: subprocess.Popen, timeout: float = 10) -> bool:
    """True once the process sleeps in StderrLog.drain()'s select(2) (wchan
    poll_schedule_timeout; the event loop waits in epoll_wait, do_epoll_wait)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            with open(f"/proc/{proc.pid}/wchan") as f:
                if f.read().startswith("poll_schedule_timeout"):
                    return True
        except OSError:
            return False
        time.sleep(0.005)
    return False


def finish(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 5) -> int | None:
    """Send sig; the exit code, or None if it hung (then killed)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        return None


# --------------------------------------------------------------------------------------
# stdout: the device path line
# --------------------------------------------------------------------------------------

# Was a bug, fixed (2026-12-06): cli.run prints the device path with _say(sys.stdout) -- a blocking print on the event loop: stdout a full pipe blocks the loop in write(2) forever; the modem (link already made) never answers and SIGTERM cannot stop it
def test_stdout_a_full_pipe_from_the_start_modem_answers_and_sigterm_stops_it(tmp_path):
    """The stderr fix of cd47392, for stdout: a parent whose stdout pipe is full (a stalled
    CI log collector shared by many jobs) -- the link is made, the modem must answer, and a
    SIGTERM must end the run with 0 and remove the link."""
    r, w = full_pipe()
    link = str(tmp_path / "modem")
    with open(tmp_path / "err", "w") as err:
        proc = start("--offline", "--state-dir", str(tmp_path / "s"), "--link", link, stdout=w, stderr=err)
    answer, code = b"", None
    try:
        wait_for_link(link, proc)
        host = Host(link)
        try:
            answer = host.at("ATI", timeout=3)
        except AssertionError:
            pass
        finally:
            host.close()
        code = finish(proc, timeout=4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(w)
        os.close(r)
    assert (answer.endswith(OK), code, os.path.lexists(link)) == (True, 0, False)


def test_stdout_closed_and_stderr_closed_the_modem_still_answers(tmp_path):
    """>&- 2>&-: no device path line and no hints anywhere -- the link is the way in; the
    modem answers, one thread, exit 0 and the link removed."""
    link = str(tmp_path / "modem")
    shell = (f"exec {sys.executable} -m emulator --offline --log-level DEBUG --state-dir "
             f"{tmp_path / 's'} --link {link} >&- 2>&-")
    proc = subprocess.Popen(["sh", "-c", shell], cwd=ROOT)
    try:
        wait_for_link(link, proc)
        host = Host(link)
        try:
            assert host.at("ATE0;+QIACT=1").endswith(OK)
            assert host.at('AT+QSSLOPEN=1,1,0,"nowhere.example",443,0') == OK
            assert host.seen(re.compile(rb"\+QSSLOPEN: 0,[1-9]\d*\r\n"), 10)
            assert threads(proc.pid) == 1
        finally:
            host.close()
        assert finish(proc) == 0
        assert not os.path.lexists(link)
    finally:
        if proc.poll() is None:
            proc.kill()


# --------------------------------------------------------------------------------------
# stop signals while the exit drains a full stderr pipe
# --------------------------------------------------------------------------------------

# Was a bug, fixed (2026-12-06): cli.main drains stderr (handler.drain(1.0), up to 1 s with a full pipe) after asyncio.run closed the loop, which put SIG_DFL/default_int_handler back: a 2nd SIGTERM/SIGHUP kills the process (rc -15/-1), a 2nd SIGINT raises KeyboardInterrupt whose traceback blocks writing into the full pipe (hang)
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"])
def test_a_second_stop_signal_while_the_exit_drains_a_full_stderr(tmp_path, second):
    """Ctrl+C pressed twice, or `docker stop`/systemd repeating SIGTERM: the first stop was
    clean; the second, during the 1 s drain of lines a full stderr pipe holds back, must not
    turn it into a kill, a traceback or a hang (README: a stop signal at any moment exits 0)."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    link = str(tmp_path / "modem")
    proc = start("--offline", "--state-dir", str(tmp_path / "s"), "--link", link, stderr=w)
    code = None
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0;+QIACT=1").endswith(OK)
            for i in range(40):              # a WARNING line of ~250 bytes each: the pipe fills
                assert host.at(f'AT+QSSLOPEN=1,1,0,"nowhere{i:02d}{"x" * 100}.example",443,0') == OK
                assert host.seen(re.compile(rb"\+QSSLOPEN: 0,[1-9]\d*\r\n"), 10)
        finally:
            host.close()
        proc.send_signal(signal.SIGTERM)
        assert in_exit_drain(proc)             # the loop closed, drain() in select(2)
        code = finish(proc, second, timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(w)
    got = read_until_idle(r, 0.5)
    os.close(r)
    assert (code, b"Traceback" in got) == (0, False)


def test_one_stop_with_a_full_stderr_exits_0_and_a_late_reader_gets_whole_lines(tmp_path):
    """The same run with one SIGTERM: exit 0 after at most the drain's second, the link gone,
    and what the pipe held is whole lines (no line cut by the exit), no traceback."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    link = str(tmp_path / "modem")
    proc = start("--offline", "--state-dir", str(tmp_path / "s"), "--link", link, stderr=w)
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0;+QIACT=1").endswith(OK)
            for i in range(40):
                assert host.at(f'AT+QSSLOPEN=1,1,0,"nowhere{i:02d}{"y" * 100}.example",443,0') == OK
                assert host.seen(re.compile(rb"\+QSSLOPEN: 0,[1-9]\d*\r\n"), 10)
        finally:
            host.close()
        assert finish(proc, timeout=10) == 0
        assert not os.path.lexists(link)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(w)
    got = read_until_idle(r, 0.5)
    os.close(r)
    assert got.endswith(b"\n") and b"Traceback" not in got
    lines = got.split(b"\n")[:-1]
    assert all(STAMP.match(line) for line in lines), [x for x in lines if not STAMP.match(x)][:2]


# --------------------------------------------------------------------------------------
# more than MAX_WAITING lines into an unread pipe
# --------------------------------------------------------------------------------------

def test_a_flood_of_log_lines_into_an_unread_pipe_every_line_counted_and_in_order(tmp_path):
    """10,300 refused commands, one INFO line each, while nobody reads stderr (4 KiB pipe):
    every command answered at once; once a reader comes, the lines it gets plus the dropped
    count are exactly the lines logged, in order, each whole, the notice a line of its own."""
    n = 10_300
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    proc = start("--offline", "--state-dir", str(tmp_path / "s"), stderr=w)
    got = b""
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0").endswith(OK)
            batch = 100
            for start_i in range(0, n, batch):
                host.write(b"".join(b"AT+ZZ%d\r" % i for i in range(start_i, start_i + batch)))
                answers = b""
                while answers.count(b"\r\nERROR\r\n") < batch:
                    answers += host.read_until(b"\r\nERROR\r\n")
                assert answers == b"\r\nERROR\r\n" * batch
            assert threads(proc.pid) == 1
            got = read_until_idle(r, 1.0)          # a reader at last: the loop writes what waited
            assert host.at("AT").endswith(OK)
        finally:
            host.close()
        assert finish(proc, timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        os.close(w)
    got += read_until_idle(r, 0.5)
    os.close(r)
    lines = got.split(b"\n")
    assert lines[-1] == b""
    assert all(STAMP.match(line) for line in lines[:-1]), [x for x in lines if not STAMP.match(x)][:2]
    seen = [int(x) for x in re.findall(rb"ERROR: AT\+ZZ(\d+) is not a command", got)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    dropped = [int(x) for x in DROPPED.findall(got)]
    assert len(dropped) == 1
    assert len(seen) + dropped[0] == n
    # the dropped ones are one run: what waited (and the pipe held) came first, the rest after
    missing = sorted(set(range(n)) - set(seen))
    assert missing == list(range(missing[0], missing[0] + len(missing)))


# --------------------------------------------------------------------------------------
# a pty as stderr (script -c), nohup, setsid
# --------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux script")
def test_under_script_a_pty_stderr_gets_escaped_lines_and_one_thread(tmp_path):
    """`script -qfec CMD /dev/null`: stdin, stdout and stderr are a pty slave (a controlling
    terminal).  The handler writes through its own non-blocking description (one thread);
    a host name with ESC, a high byte (and a BEL that a backspace edits away) is escaped in the log line -- the
    field engineer's terminal is not repainted; SIGTERM ends it with 0."""
    link = str(tmp_path / "modem")
    cmd = (f"echo PID $$; exec {sys.executable} -m emulator --offline --state-dir {tmp_path / 's'} "
           f"--link {link}")
    proc = subprocess.Popen(["script", "-qfec", cmd, "/dev/null"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = bytearray()
    stop_reading = threading.Event()

    def reader() -> None:
        while not stop_reading.is_set():
            chunk = proc.stdout.read1(1 << 16)
            if not chunk:
                return
            out.extend(chunk)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    code = None
    try:
        deadline = time.monotonic() + 20
        while not re.search(rb"PID (\d+)", out) and time.monotonic() < deadline:
            time.sleep(0.02)
        pid = int(re.search(rb"PID (\d+)", out).group(1))
        wait_for_link(link, proc)
        host = Host(link)
        try:
            assert host.at("ATE0;+QIACT=1").endswith(OK)
            evil = b'AT+QSSLOPEN=1,1,0,"ev\x1b[2Jil\x07\x08\xff.example",443,0'
            assert host.at(evil) == OK
            assert host.seen(re.compile(rb"\+QSSLOPEN: 0,[1-9]\d*\r\n"), 10)
            deadline = time.monotonic() + 5
            while b"ev\\x1b[2Jil" not in out and time.monotonic() < deadline:
                time.sleep(0.02)
            assert threads(pid) == 1
        finally:
            host.close()
        os.kill(pid, signal.SIGTERM)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_reading.set()
    t.join(5)
    text = bytes(out)
    assert code == 0
    assert b"ev\\x1b[2Jil\\xff.example" in text      # (the backspace (S5) took the BEL: V.250 editing)
    assert b"\x1b[2J" not in text and b"\x07" not in text and b"Traceback" not in text
    assert link.encode() in text and b"stop with Ctrl+C" in text
    assert not os.path.lexists(link)


@pytest.mark.skipif(shutil.which("nohup") is None, reason="needs nohup")
# Was a bug, fixed (2026-12-06): emulator/__main__.run and cli.main install handlers for SIGHUP (and SIGINT) unconditionally, overriding an inherited SIG_IGN: under `nohup modem-emulator &` the ssh logout's SIGHUP stops the modem
def test_under_nohup_a_hang_up_is_ignored_as_nohup_asked(tmp_path):
    """A field team's `nohup modem-emulator --link /tmp/modem &` over ssh: nohup sets SIGHUP
    to SIG_IGN so the logout's hang-up does not end the job.  The modem must keep answering
    (SIGTERM still stops it cleanly)."""
    link = str(tmp_path / "modem")
    proc = subprocess.Popen(["nohup", sys.executable, "-m", "emulator", "--offline", "--state-dir",
                             str(tmp_path / "s"), "--link", link], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert first_line(proc) == link
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        alive = proc.poll() is None
        answer = b""
        if alive:
            host = Host(link)
            try:
                answer = host.at("ATI")
            finally:
                host.close()
        assert finish(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert (alive, answer.endswith(OK)) == (True, True)


@pytest.mark.skipif(shutil.which("setsid") is None, reason="needs setsid")
def test_setsid_no_controlling_tty_trace_to_dev_tty_refused_and_a_normal_run_works(tmp_path):
    """setsid -w (a new session, no controlling terminal, as a CI runner): --trace /dev/tty is
    refused, one line and exit 2 (not an ENXIO traceback); the same start without it comes up,
    answers on one thread and stops with 0 on SIGHUP."""
    base = [sys.executable, "-m", "emulator", "--offline", "--state-dir", str(tmp_path / "s")]
    out = subprocess.run(["setsid", "-w", *base, "--trace", "/dev/tty"], cwd=ROOT, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("modem-emulator: --trace /dev/tty: ")
    link = str(tmp_path / "modem")
    proc = subprocess.Popen(["setsid", "-w", *base, "--link", link], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first_line(proc) == link
        host = Host(link)
        try:
            assert host.at("ATI").endswith(OK)
        finally:
            host.close()
        pid = proc.pid                  # (not a group leader: setsid execs, no fork)
        assert os.getsid(pid) == pid
        assert threads(pid) == 1
        os.kill(pid, signal.SIGHUP)
        assert proc.wait(10) == 0
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert "Traceback" not in err and "stop with Ctrl+C" in err
    assert not os.path.lexists(link)


# --------------------------------------------------------------------------------------
# --trace: where it may not go
# --------------------------------------------------------------------------------------

def test_trace_to_dev_stdout_a_pipe_is_refused_but_dev_null_stdout_traces(tmp_path):
    """--trace /dev/stdout: stdout a pipe (the CLI's path line's own pipe) is refused, one
    line, exit 2, nothing on stdout; stdout /dev/null (a memory device) is accepted."""
    proc = start("--offline", "--state-dir", str(tmp_path / "s"), "--trace", "/dev/stdout")
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out) == (2, "")
    assert err.count("\n") == 1 and "--trace /dev/stdout: not a regular file" in err
    link = str(tmp_path / "modem")
    proc = start("--offline", "--state-dir", str(tmp_path / "s2"), "--trace", "/dev/stdout", "--link", link,
                 stdout=subprocess.DEVNULL)
    try:
        wait_for_link(link, proc)
        host = Host(link)
        try:
            assert host.at("ATI").endswith(OK)
        finally:
            host.close()
        assert finish(proc) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("kind", ["socket", "directory", "fifo-symlink"])
def test_trace_to_a_socket_a_directory_or_a_link_to_a_fifo_is_one_line_exit_2(tmp_path, kind):
    """Neither a unix socket's path (open: ENXIO), a directory nor a symlink to a FIFO is a
    trace file: one line, exit 2, no traceback, no hang, no link and nothing on stdout."""
    path = tmp_path / "t"
    held = None
    if kind == "socket":
        held = socket.socket(socket.AF_UNIX)
        held.bind(str(path))
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "fifo")
        path.symlink_to(tmp_path / "fifo")
    try:
        proc = start("--offline", "--state-dir", str(tmp_path / "s"), "--link", str(tmp_path / "modem"),
                     "--trace", str(path))
        out, err = proc.communicate(timeout=30)
    finally:
        if held is not None:
            held.close()
    assert (proc.returncode, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith(f"modem-emulator: --trace {path}: "), err
    assert not os.path.lexists(tmp_path / "modem")


# --------------------------------------------------------------------------------------
# --count 50 with a slow stderr reader; a reader that goes away mid-run
# --------------------------------------------------------------------------------------

def test_count_50_with_a_slow_stderr_reader_paths_hints_and_answers_in_order(tmp_path):
    """--count 50, stderr a 4 KiB pipe read 256 bytes every 5 ms: the 50 paths on stdout in
    index order, every modem answers, one thread, and the reader gets the 50 hint lines
    (#0..#49 in order, then connect/stop) whole; SIGTERM removes every link, exit 0."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    pattern = str(tmp_path / "m-{n}")
    proc = start("--offline", "--count", "50", "--state-dir", str(tmp_path / "s"), "--link", pattern, stderr=w)
    os.close(w)
    got = bytearray()
    done = threading.Event()

    def slow_reader() -> None:
        while not done.is_set():
            chunk = os.read(r, 256)
            if not chunk:
                return
            got.extend(chunk)
            time.sleep(0.005)
    t = threading.Thread(target=slow_reader, daemon=True)
    t.start()
    try:
        paths = [proc.stdout.readline().strip() for _ in range(50)]
        assert paths == [pattern.format(n=n) for n in range(50)]
        for path in paths[::7] + [paths[-1]]:
            host = Host(path)
            try:
                assert host.at("ATE0;+CGSN").endswith(OK)
            finally:
                host.close()
        assert threads(proc.pid) == 1
        assert finish(proc, timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    t.join(10)
    done.set()
    os.close(r)
    text = bytes(got)
    assert [int(x) for x in re.findall(rb"ec2x #(\d+) \(EC25\)", text)] == list(range(50))
    assert text.index(b"ec2x #49") < text.index(b"  connect: ") < text.index(b"  stop with Ctrl+C\n")
    assert text.endswith(b"\n") and b"Traceback" not in text and b"dropped" not in text
    assert not any(os.path.lexists(p) for p in paths)


def test_a_stderr_reader_that_goes_away_mid_flood_costs_nothing(tmp_path):
    """The log reader (a `| head -c` style consumer) reads a little, then closes its end
    while lines still wait: the waiting lines go nowhere (EPIPE, SIGPIPE ignored), the modem
    answers every later command, stays on one thread, and a SIGTERM exits 0."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    proc = start("--offline", "--state-dir", str(tmp_path / "s"), stderr=w)
    os.close(w)
    try:
        host = Host(first_line(proc))
        try:
            assert host.at("ATE0").endswith(OK)
            host.write(b"".join(b"AT+YY%d\r" % i for i in range(300)))
            answers = b""
            while answers.count(b"\r\nERROR\r\n") < 300:
                answers += host.read_until(b"\r\nERROR\r\n")
            head = os.read(r, 1000)
            assert STAMP.match(head)
            os.close(r)
            r = None
            for i in range(20):
                assert host.at(f"AT+YY{i};+CSQ") == b"\r\nERROR\r\n"
                assert host.at("AT+CSQ").endswith(OK)
            assert threads(proc.pid) == 1
        finally:
            host.close()
        assert finish(proc, timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if r is not None:
            os.close(r)
