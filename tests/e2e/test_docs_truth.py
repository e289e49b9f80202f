"""What README.md and docs/behaviour.md tell a user to try, tried.

Where a doc shows an example (a session, a synopsis, a control request, a scenario file, an
answer), the example is read from the doc text itself, so these tests break when docs and
code drift apart.  A known discrepancy stays as an xfail(strict=True) naming the doc line."""
from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from tests.conftest import modem_factory
from tests.e2e.answer_support import answer_is, collect

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
BEHAVIOUR = (ROOT / "docs" / "behaviour.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
PY = sys.executable


# ----------------------------------------------------------------------------------------
# helpers

def doc(snippet: str, text: str = BEHAVIOUR) -> str:
    """The snippet, after checking the doc still says it (whitespace-insensitive)."""
    squash = lambda s: re.sub(r"\s+", " ", s)          # noqa: E731
    assert squash(snippet) in squash(text), f"the doc no longer says {snippet!r}"
    return snippet


def code_block(after: str, text: str = README, fence: str = "```") -> str:
    """The first fenced block after the heading/marker `after`."""
    rest = text.split(after, 1)[1]
    start = rest.index(fence)
    body = rest[start + len(fence):]
    body = body.split("\n", 1)[1]                      # drop the fence's info string
    return body.split(fence, 1)[0]


def render(raw: bytes) -> list[str]:
    """What a terminal (miniterm) shows of the modem's output: one entry per line."""
    text = raw.replace(b"\r\n", b"\n").replace(b"\r", b"").decode("latin-1")
    lines = text.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _fill_until(host: Host, pred, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return
        host._fill()


def play_session(host: Host, block: str, guard: float = 1.15) -> tuple[list[str], list[str]]:
    """Play a miniterm transcript from the docs against an echoing modem.

    Lines starting with AT are typed (+ CR); `> data` waits for the prompt and types data;
    a line annotated `<- typed` is typed input (not shown on the screen); `+++` is typed
    with the guard time of silence around it.  Returns (expected screen lines, got)."""
    expected: list[str] = []
    inputs: list[tuple[int, str, str]] = []            # (expected lines before it, kind, text)
    for line in block.rstrip("\n").split("\n"):
        line = line.rstrip()
        if "<-" in line:
            typed = line.split("<-", 1)[0].strip()
            inputs.append((len(expected), "plus" if typed == "+++" else "typed", typed))
            continue
        if line.startswith("AT"):
            inputs.append((len(expected), "cmd", line))
        elif line.startswith("> "):
            inputs.append((len(expected), "data", line[2:]))
        expected.append(line)
    start = len(host.transcript)

    def got() -> list[str]:
        return render(bytes(host.transcript[start:]))
    for before, kind, text in inputs:
        # the screen shows every line up to this input (annotated input shows nothing)
        _fill_until(host, lambda: len([x for x in got() if x]) >= len([x for x in expected[:before] if x]))
        if kind == "cmd":
            host.write(text.encode() + b"\r")
        elif kind == "data":
            _fill_until(host, lambda: bytes(host.transcript).endswith(b"> "))
            host.write(text.encode())
        elif kind == "typed":
            host.write(text.encode() + b"\r\n")
        else:
            time.sleep(guard)
            host.write(b"+++")
            time.sleep(guard)
    _fill_until(host, lambda: len([x for x in got() if x]) >= len([x for x in expected if x]))
    time.sleep(0.2)
    host._fill()
    host.pending.clear()
    return expected, got()


@pytest.fixture(scope="module")
def demo():
    """The emulator `make run` starts: --demo --offline (in process)."""
    with BackgroundEmulator(offline=True, demo=True) as emu:
        yield emu


@pytest.fixture
def fresh(demo, tmp_path):
    """fresh(profile, echo=False) -> (Host, ModemPort) on the demo emulator."""
    yield from modem_factory(demo, tmp_path)


def ec2x_active(fresh):
    host, port = fresh("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    return host, port


def quiet(host: Host, seconds: float = 0.3) -> bytes:
    return host.quiet_for(seconds)


# ----------------------------------------------------------------------------------------
# README: the sessions it shows (make run's demo peer)

def test_readme_first_session_is_what_miniterm_shows(fresh):
    block = code_block("## A first session")
    assert "AT+QSSLOPEN=1,1,4" in block
    host, _ = fresh("ec2x", echo=True)                 # miniterm on a fresh modem: ATE1
    expected, got = play_session(host, block)
    assert got == expected


def test_readme_transparent_session(fresh):
    block = code_block("## Transparent access mode")
    host, _ = fresh("ec2x", echo=True)
    host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QSSLCFG="seclevel",1,1;'
            '+QSSLCFG="cacert",1,"UFS:demo-ca.pem"')
    expected, got = play_session(host, block)
    # miniterm shows blank lines where the doc puts its annotations; the local port is
    # the connection's real one (the doc's 51234 is an example)
    norm = lambda lines: [re.sub(r'(8011,)\d+(,2,1,4,2)', r"\1LPORT\2", x) for x in lines if x]  # noqa: E731
    assert norm(got) == norm(expected)
    time.sleep(1.15)
    host.write(b"+++")
    time.sleep(1.15)
    assert host.read_until(b"OK\r\n")
    assert host.at("AT+QSSLCLOSE=4").endswith(b"OK\r\n")


def test_readme_tcp_session(fresh):
    block = code_block("## TCP/UDP sockets, DNS, ping, NTP (EC2x)")
    host, _ = fresh("ec2x", echo=True)
    host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1')
    expected, got = play_session(host, block)
    assert got == expected


def test_readme_ml302_manual_section3_against_the_demo(fresh):
    """README: the ML302 manual's §3 works against "www.iottest.work",443, which serves the
    manual's test page; the demo CA is in /caCrt.pem, so seclevel 1 works too."""
    doc('`"www.iottest.work",443`, which serves the manual\'s test page', README)
    doc('so `AT+QSSLCFG="seclevel",0,1` works too', README)
    block = code_block("For the ML302 (`make run-ml302`)")
    commands = [line for line in block.splitlines() if line.startswith("AT")]
    assert commands == ["AT+CGACT=1,1", 'AT+QSSLCFG="seclevel",0,1',
                        'AT+QSSLOPEN=0,0,"www.iottest.work",443,0', "AT+QSSLSEND=0",
                        "AT+QSSLRECV=1,0,1460", "AT+QSSLCLOSE=0"]
    shown = [line for line in block.splitlines()           # what the block says comes back
             if line and not line.startswith(("AT", "> ", "...")) and "<-" not in line]
    host, _ = fresh("ml302")
    start = len(host.transcript)
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"   # §3
    assert host.at('AT+QSSLCFG="seclevel",0,1') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 0,") + host.read_until(b"\r\n") == b"\r\n+QSSLOPEN: 0,0\r\n"
    host.write(b"AT+QSSLSEND=0\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"GET /test.html HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n\x1a")   # (as README types it)
    assert host.read_until(b"SEND OK\r\n").endswith(b"\r\nSEND OK\r\n")
    assert host.seen(b'+QSSLURC: "recv",1,0\r\n')
    answer = host.at("AT+QSSLRECV=1,0,1460")
    assert answer.startswith(b"\r\n+QSSLRECV: 106.12.79.254:443,TCP,434\r\nHTTP/1.1 200 OK\r\n")
    assert b"Hello!This is an IOT test webpage!" in answer
    assert host.at("AT+QSSLCLOSE=0") == b"\r\nOK\r\n"
    assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"
    screen = iter(x for x in render(bytes(host.transcript[start:])) if x)
    assert all(line in screen for line in shown), (shown, render(bytes(host.transcript[start:])))


def test_readme_ml302_transparent_line(fresh):
    line = re.search(r"it is `(AT\+QSSLOPEN=0,0,\"www.iottest.work\",443,1)`", README).group(1)
    host, _ = fresh("ml302")
    host.at('AT+CGDCONT=1,"IP","CMNET";+CGACT=1,1')
    host.write(line.encode() + b"\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"GET /test.html HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n")
    assert b"Hello!This is an IOT test webpage!" in host.read_until(b"</html>")


def test_readme_sockets_share_one_pool_of_12_ids(fresh):
    doc("one pool of 12 ids (an id in use by either is error 563 to the other: AT+QSSLOPEN answers "
        "ERROR and AT+QIGETERROR then says 563; AT+QIOPEN answers OK, then `+QIOPEN: <id>,563`)", README)
    doc('drivers match `"\\r\\nOK\\r\\n\\r\\n+QIOPEN: 0,563\\r\\n"`')
    host, _ = ec2x_active(fresh)
    assert host.at('AT+QSSLOPEN=1,1,0,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
    assert host.seen(b"+QSSLOPEN: 0,0\r\n")
    host.pending.clear()
    host.write(b'AT+QIOPEN=1,0,"TCP","220.180.239.212",8009,0,0\r')
    assert host.read_until(b"+QIOPEN: 0,563\r\n") == b"\r\nOK\r\n\r\n+QIOPEN: 0,563\r\n"
    assert host.at('AT+QIOPEN=1,11,"TCP","220.180.239.212",8009,0,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 11,0\r\n").endswith(b"\r\n+QIOPEN: 11,0\r\n")
    assert host.at('AT+QSSLOPEN=1,1,11,"220.180.239.212",8010,0') == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 563,socket identity has been used\r\n\r\nOK\r\n"
    assert host.at('AT+QIOPEN=1,12,"TCP","220.180.239.212",8009,0,0').endswith(b"ERROR\r\n")


def test_readme_ml302_has_no_tcpip_commands(fresh):
    doc("(the ML302 does not: ERROR, as on\nthe module)", README)
    host, _ = fresh("ml302")
    for line in ['AT+QIOPEN=1,0,"TCP","1.2.3.4",80,0,0', "AT+QICLOSE=0", "AT+QISTATE?",
                 "AT+QIRD=0,10", "AT+QISDE?", "AT+QISWTMD=0,1"]:
        assert host.at(line) == b"\r\nERROR\r\n", line


def test_readme_listener_incoming_urc(demo, fresh):
    doc('`+QIURC: "incoming",<id>,<serverID>,"127.0.0.1",<port>` on the lowest free id', README)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    demo.router.add_listen(2020, "127.0.0.1", free)
    host, _ = ec2x_active(fresh)
    assert host.at('AT+QIOPEN=1,3,"TCP LISTENER","127.0.0.1",0,2020,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 3,0\r\n")
    with socket.create_connection(("127.0.0.1", free), timeout=10) as client:
        urc = host.seen(re.compile(rb'\+QIURC: "incoming",\d+,\d+,"[^"]*",\d+\r\n'))
        assert urc == b'+QIURC: "incoming",0,3,"127.0.0.1",%d\r\n' % client.getsockname()[1]


def test_readme_dns_entries_routed_names_and_offline(demo, fresh):
    doc("A routed name without an entry shows a made-up address from 198.18.0.0/15", README)
    doc("EC2x `AT+QIDNSGIP`\n  answers from these entries, then the real resolver (with `--offline`: error 565)",
        README)
    demo.router.add_dns("named.example", "203.0.113.9")
    demo.router.add_map("routed.example", 80, "127.0.0.1", 9)
    host, _ = ec2x_active(fresh)
    assert host.at('AT+QIDNSGIP=1,"named.example"') == b"\r\nOK\r\n"
    assert host.read_until(b'"203.0.113.9"\r\n') == \
        b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","203.0.113.9"\r\n'
    assert host.at('AT+QIDNSGIP=1,"routed.example"') == b"\r\nOK\r\n"
    ip = re.search(rb'\+QIURC: "dnsgip","([\d.]+)"', host.read_until(re.compile(rb'"dnsgip","[\d.]+"\r\n'))).group(1)
    a, b = (int(x) for x in ip.split(b".")[:2])
    assert (a, b) in ((198, 18), (198, 19))
    assert host.at('AT+QIDNSGIP=1,"www.iottest.work"') == b"\r\nOK\r\n"      # --demo's entry
    assert host.read_until(b'"106.12.79.254"\r\n').endswith(b'+QIURC: "dnsgip","106.12.79.254"\r\n')
    assert host.at('AT+QIDNSGIP=1,"unrouted.example"') == b"\r\nOK\r\n"
    assert host.read_until(b'"dnsgip",565\r\n') == b'\r\n+QIURC: "dnsgip",565\r\n'


def test_readme_ping_of_a_routed_host_after_20_ms(fresh):
    doc("a routed or `--dns` host without an entry\n  answers after 20 ms", README)
    doc('a reply is `+QPING: 0,"<ip>",32,<ms>,255`')
    host, _ = ec2x_active(fresh)
    assert host.at('AT+QPING=1,"220.180.239.212",4,1') == b"\r\nOK\r\n"
    got = host.read_until(re.compile(rb"\+QPING: 0,1,1,0,\d+,\d+,\d+\r\n"))
    m = re.search(rb'\r\n\+QPING: 0,"220.180.239.212",32,(\d+),255\r\n', got)
    assert m and 15 <= int(m.group(1)) <= 200, got


def test_readme_state_dir_modes(fresh, tmp_path):
    """README "The state dir": created 0700, settings.json 0600 (AT&W), ufs/ 0700, ufs/<name>
    0600, secstore/ 0700 with device.key and slots 0600."""
    host, _ = fresh("ec2x", state_dir=tmp_path / "ec")
    assert host.at("AT&W") == b"\r\nOK\r\n"
    assert host.upload("UFS:f.txt", b"abc").endswith(b"OK\r\n")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)   # noqa: E731
    assert mode(tmp_path / "ec") == 0o700
    assert mode(tmp_path / "ec" / "settings.json") == 0o600
    assert mode(tmp_path / "ec" / "ufs") == 0o700
    assert mode(tmp_path / "ec" / "ufs" / "f.txt") == 0o600
    ml, _ = fresh("ml302", state_dir=tmp_path / "ml")
    ml.write(b"AT+QSECWRITE=1\r")
    ml.read_until(b"> ")
    ml.write(b"-----BEGIN CERTIFICATE-----\n\x1a")
    assert ml.read_until(b"OK\r\n").endswith(b"OK\r\n")
    sec = tmp_path / "ml" / "secstore"
    assert mode(sec) == 0o700 and mode(sec / "device.key") == 0o600
    assert os.path.getsize(sec / "device.key") == 32
    assert mode(sec / "slot1.bin") == 0o600
    assert b"BEGIN CERTIFICATE" not in (sec / "slot1.bin").read_bytes()       # encrypted


def test_readme_baud_paces_output(fresh):
    """README: `--baud N` paces output as a UART at N baud (10 bits a byte); add_modem(baud=)."""
    doc("(10 bits a byte: 115200 baud =\n11520 bytes/s)", README)
    doc("In Python: `add_modem(..., baud=9600)`", README)
    host, _ = fresh("ec2x", baud=9600)
    t0 = time.monotonic()
    answer = host.at("AT+QSSLCFG=?", timeout=20)
    took = time.monotonic() - t0
    assert len(answer) > 900
    assert took >= 0.85 * len(answer) / 960, (len(answer), took)


# ----------------------------------------------------------------------------------------
# README: the command line

def _options(text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]*)", text))


def test_readme_synopsis_matches_the_cli_options():
    synopsis = code_block("## Running it yourself")
    main_lines = "\n".join(x for x in synopsis.splitlines() if "trace show" not in x and "replay" not in x)
    replay_line = next(x for x in synopsis.splitlines() if "replay FILE" in x)
    show_line = next(x for x in synopsis.splitlines() if "trace show FILE" in x)
    helps = {}
    for args in ([], ["replay"]):
        r = subprocess.run([PY, "-m", "emulator", *args, "--help"], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        helps[tuple(args)] = _options(r.stdout) - {"--help"}
    assert _options(main_lines) == helps[()]
    assert _options(replay_line) == helps[("replay",)]
    assert _options(show_line) == {"--socket", "--modem"}


def _start(*args, cwd):
    return subprocess.Popen([PY, "-m", "emulator", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc, sig=signal.SIGTERM) -> tuple[int, str]:
    proc.send_signal(sig)
    try:
        rc = proc.wait(20)
    finally:
        proc.kill()
    return rc, proc.stderr.read()


def _ctl(path, request: str) -> str:
    """The README's own client: socat - UNIX-CONNECT:PATH."""
    r = subprocess.run(["socat", "-", f"UNIX-CONNECT:{path}"], input=request + "\n",
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


@pytest.mark.skipif(not any(os.access(os.path.join(d, "socat"), os.X_OK)
                            for d in os.environ.get("PATH", "").split(os.pathsep)),
                    reason="socat not installed")
def test_readme_cli_session_control_trace_show_and_replay(tmp_path):
    """`modem-emulator --trace field.trace ...`, the control socket with socat, SIGTERM,
    `trace show`, `trace show --socket 1`, `replay` (exit 0)."""
    import json
    link, ctl, trace, keylog = (tmp_path / "modem", tmp_path / "modem.ctl", tmp_path / "field.trace",
                                tmp_path / "keys.log")
    proc = _start("--demo", "--offline", "--link", str(link), "--state-dir", str(tmp_path / "st"),
                  "--trace", str(trace), "--control", str(ctl), "--keylog", str(keylog),
                  "--dns", "named.example=203.0.113.7", cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == str(link)           # first line: the link
        host = Host(str(link))
        assert host.at("ATE0").endswith(b"OK\r\n")
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
        assert host.at('AT+QSSLOPEN=1,1,1,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
        assert host.read_until(b"+QSSLOPEN: 1,0\r\n")
        assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
        host.read_until(b'+QSSLURC: "recv",1\r\n')
        assert host.at("AT+QSSLRECV=1,1500") == b"\r\n+QSSLRECV: 5\r\nhello\r\n\r\nOK\r\n"
        assert host.at('AT+QIOPEN=1,2,"TCP","220.180.239.212",8009,0,0') == b"\r\nOK\r\n"
        assert host.read_until(b"+QIOPEN: 2,0\r\n")
        assert host.at('AT+QIDNSGIP=1,"named.example"') == b"\r\nOK\r\n"
        assert host.read_until(b'"203.0.113.7"\r\n')
        # README: `echo '{"op": "state"}' | socat - UNIX-CONNECT:/tmp/modem.ctl` (0600)
        request = re.search(r"echo '(\{[^']*\})' \| socat - UNIX-CONNECT:", README).group(1)
        assert stat.S_IMODE(os.stat(ctl).st_mode) == 0o600
        state = json.loads(_ctl(ctl, request))
        assert state["ok"] is True and state["mode"] == "COMMAND" and state["pdp"][0]["active"]
        assert sorted(s["id"] for s in state["sockets"]) == [1, 2]
        bad = json.loads(_ctl(ctl, '{"op": "no_such_op"}'))
        assert bad["ok"] is False and isinstance(bad["error"], str)
        host.close()
        rc, err = _stop(proc)
    finally:
        proc.kill()
    assert rc == 0 and not os.path.lexists(link) and not os.path.exists(ctl)
    # make run's hint, as README shows it
    assert f"python -m serial.tools.miniterm {link} 115200" in err
    assert stat.S_IMODE(os.stat(trace).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
    assert keylog.read_text().startswith("CLIENT_RANDOM ")
    show = subprocess.run([PY, "-m", "emulator", "trace", "show", str(trace)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert show.returncode == 0
    doc('a plain socket shows "connected (TCP, no TLS)"', README)
    assert "connected (TCP, no TLS)" in show.stdout
    assert "AT+QSSLSEND=1,5" in show.stdout and "|hello|" in show.stdout
    one = subprocess.run([PY, "-m", "emulator", "trace", "show", str(trace), "--socket", "1"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert one.returncode == 0 and "socket 1" in one.stdout
    assert "socket 2" not in one.stdout and ">> AT" not in one.stdout
    replay = subprocess.run([PY, "-m", "emulator", "replay", str(trace)], capture_output=True,
                            text=True, timeout=90, cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_readme_control_operations_are_the_known_ones(demo, fresh):
    ops_text = README.split("### Make the modem misbehave", 1)[1].split("### From a field log", 1)[0]
    documented = set(re.findall(r'"op": "([a-z_]+)"', ops_text))
    documented |= set(re.findall(r"also (connect_refuse), (handshake_stall)", ops_text)[0])
    fresh("ec2x")
    answer = demo.control("no_such_op")
    assert answer["ok"] is False
    known = set(re.search(r"known: ([a-z_, ]+)", answer["error"]).group(1).split(", "))
    assert documented == known
    # every "how" of drop the README names is taken (on an idle modem: no socket error,
    # never an unknown-how error)
    for how in re.search(r"# (close \| rst \| blackhole)", ops_text).group(1).split(" | "):
        err = demo.control("drop", socket=1, how=how)
        assert err["ok"] is False and "how" not in err["error"], err


def test_readme_count_and_link_pattern(tmp_path):
    doc("with `--count N`, the first N lines are the N devices, `--link` then needs a\n`{n}` pattern", README)
    proc = _start("--count", "2", "--offline", "--link", str(tmp_path / "m-{n}"),
                  "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    try:
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == [str(tmp_path / "m-0"), str(tmp_path / "m-1")]
        for n in (0, 1):                                  # <state-dir>/<n>
            host = Host(lines[n])
            assert host.at("ATE0;+CGMM").endswith(b"\r\nEC25\r\n\r\nOK\r\n")
            host.close()
        assert (tmp_path / "st" / "0").is_dir() and (tmp_path / "st" / "1").is_dir()
        rc, _ = _stop(proc, signal.SIGINT)
    finally:
        proc.kill()
    assert rc == 0 and not os.path.lexists(tmp_path / "m-0")
    r = subprocess.run([PY, "-m", "emulator", "--count", "2", "--link", str(tmp_path / "x"),
                        "--state-dir", str(tmp_path / "st2")], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_readme_refusals_are_one_line_with_exit_2_or_1(tmp_path):
    doc("A refused argument or input file (option, `--config`, profile, scenario, `--trace` or\n"
        "`--keylog` path) is one line and exit 2", README)
    (tmp_path / "typo.toml").write_text('ofline = true\n[routes]\n"a.example:443" = "127.0.0.1:1"\n')
    (tmp_path / "bad-profile.toml").write_text('[profile]\nname = "x y/z"\n')
    cases = [(["--route", "bad"], 2), (["--config", str(tmp_path / "typo.toml")], 2),
             (["--profile", str(tmp_path / "bad-profile.toml")], 2),
             (["--trace", str(tmp_path / "no" / "dir" / "t")], 2)]
    procs = [(subprocess.Popen([PY, "-m", "emulator", "--state-dir", str(tmp_path / f"s{i}"), *args],
                               cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
              code, args) for i, (args, code) in enumerate(cases)]
    errs = []
    for proc, code, args in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == code, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert out == ""
        errs.append(err)
    assert "ofline" in errs[1]                           # the typo is named
    assert "bad-profile.toml" in errs[2]                 # the file is named


# Was a bug, fixed: README.md:146-147 says a refused argument (option) is one line and exit 2;
# options refused by argparse itself (an unknown option, --baud 0, --count 0, --log-level FOO)
# print the 8-line usage and then the error line (exit 2)
@pytest.mark.parametrize("args", [["--no-such-option"], ["--baud", "0"]])
def test_readme_refused_option_is_one_line(tmp_path, args):
    r = subprocess.run([PY, "-m", "emulator", "--state-dir", str(tmp_path / "s"), *args],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_readme_link_of_a_running_emulator_and_state_dir_lock_are_exit_1(tmp_path):
    doc("a start-up the machine refuses (a `--link` in use, a state dir that\ncannot be made, "
        "too few file descriptors for `--count`, no pty left) is one line and exit 1", README)
    link = tmp_path / "modem"
    proc = _start("--offline", "--link", str(link), "--state-dir", str(tmp_path / "a"), cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == str(link)
        assert (tmp_path / ".modem.lock").exists()        # README: `.<name>.lock` beside the link
        second = subprocess.run([PY, "-m", "emulator", "--offline", "--link", str(link), "--state-dir",
                                 str(tmp_path / "b")], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        same_dir = subprocess.run([PY, "-m", "emulator", "--offline", "--link", str(tmp_path / "m2"),
                                   "--state-dir", str(tmp_path / "a")], capture_output=True, text=True,
                                  timeout=60)
        assert same_dir.returncode != 0 and len(same_dir.stderr.strip().splitlines()) == 1
        assert os.path.lexists(link)                      # the running one keeps its link
        rc, _ = _stop(proc, signal.SIGHUP)
    finally:
        proc.kill()
    assert rc == 0 and not os.path.lexists(link) and not (tmp_path / ".modem.lock").exists()


def test_readme_scenario_file_loads_and_runs_from_the_cli(tmp_path):
    toml = code_block("`field-bug-4411.toml`:", fence="```")
    assert 'op = "send_fail"' in toml
    path = tmp_path / "field-bug-4411.toml"
    path.write_text(toml)
    proc = _start("--offline", "--demo", "--scenario", str(path), "--link", str(tmp_path / "m"),
                  "--state-dir", str(tmp_path / "st"), cwd=tmp_path)
    try:
        dev = proc.stdout.readline().strip()
        assert dev == str(tmp_path / "m")
        host = Host(dev)
        host.at('ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1')
        assert host.at('AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0').endswith(b"OK\r\n")
        host.read_until(b"+QSSLOPEN: 4,0\r\n")
        results = [host.send_data(4, b"hello") for _ in range(3)]
        assert results == [b"\r\nSEND OK\r\n", b"\r\nSEND OK\r\n", b"\r\nSEND FAIL\r\n"]
        host.close()
        rc, _ = _stop(proc)
    finally:
        proc.kill()
    assert rc == 0
    # a bad file stops start-up with one line naming the file, the step and the key
    (tmp_path / "bad.toml").write_text(toml.replace("socket = 4 ", "sockt = 4 "))
    bad = subprocess.run([PY, "-m", "emulator", "--offline", "--scenario", str(tmp_path / "bad.toml"),
                          "--state-dir", str(tmp_path / "st3")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "bad.toml" in bad.stderr and "sockt" in bad.stderr and "step" in bad.stderr


def test_readme_replay_exit_2_cases(tmp_path):
    doc("Exit 2 (one line on stderr) is\ninput it cannot use: a missing or damaged file", README)
    (tmp_path / "damaged.trace").write_text('{"t": 0, "modem": 0, "kind": "start"}\nnot json\n')
    runs = [["replay", str(tmp_path / "missing.trace")], ["replay", str(tmp_path / "damaged.trace")],
            ["trace", "show", str(tmp_path / "damaged.trace")]]
    procs = [subprocess.Popen([PY, "-m", "emulator", *a], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for a in runs]
    for args, proc in zip(runs, procs):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and len(err.strip().splitlines()) == 1, (args, err)


def _record_demo_session(tmp_path) -> Path:
    """A --trace of README's first session (the host uses the demo's UFS:demo-ca.pem)."""
    trace = tmp_path / "demo.trace"
    with BackgroundEmulator(offline=True, demo=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "st", trace=str(trace))
        host = Host(port.path)
        host.at('ATE0;+QICSGP=1,1,"UNINET","","",1;+QIACT=1;+QSSLCFG="seclevel",1,1;'
                '+QSSLCFG="cacert",1,"UFS:demo-ca.pem"')
        assert host.at('AT+QSSLOPEN=1,1,4,"220.180.239.212",8010,0').endswith(b"OK\r\n")
        assert host.read_until(b"+QSSLOPEN: 4,0\r\n")
        assert b"+QSSLSTATE: 4," in host.at("AT+QSSLSTATE=4")
        host.close()
    return trace


# Was a bug, fixed: README.md:213-216 says a session recorded with `--trace` (against make run's
# --demo) replays with exit 0 ('no server, no network, no keys needed'); the replaying modem has
# no UFS:demo-ca.pem (--demo uploaded it, not the host), so the open fails 552 and replay exits 1
def test_readme_replay_of_a_demo_session_exits_0(tmp_path):
    from emulator.tools.trace import replay_main
    assert replay_main([str(_record_demo_session(tmp_path))]) == 0


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: command line and result codes

@pytest.mark.parametrize("line, answer", [
    (doc("AT+CMEE =1"), b"\r\nOK\r\n"),
    (doc("ATS3 ?"), b"\r\n013\r\n\r\nOK\r\n"),
    ('AT+QICSGP=1, 1,"UNINET" , "","",1', b"\r\nOK\r\n"),
    ("AT+CMEE=1 ", b"\r\nOK\r\n"),
    (doc("ATS3=1 3"), b"\r\nERROR\r\n"),
    (doc("ATE 0"), b"\r\nERROR\r\n"),
    ("AT+QSSLOPEN=1,1,4,\"a.example\",443 1,0", b"\r\nERROR\r\n"),
    ("AT+CMEE=\xa01", b"\r\nERROR\r\n"),
    (doc("ATS²?"), b"\r\nERROR\r\n"),
    (doc("AT+CMEE=²"), b"\r\nERROR\r\n"),
    ("AT+CMEE=+1", b"\r\nERROR\r\n"),
    ("AT+CMEE=-0", b"\r\nERROR\r\n"),
    (doc('AT+QSSLCFG="alpn",1,abc"'), b"\r\nERROR\r\n"),
    ("AT+QSSLCFG=\"alpn\",1,\"abc", b"\r\nERROR\r\n"),
    (doc("`ATSn?` answers three digits (`013`)").split("`")[1].replace("n", "3"), b"\r\n013\r\n\r\nOK\r\n"),
    ("ATS12?", b"\r\n050\r\n\r\nOK\r\n"),            # "S12 ... (default 50 = 1 s)"
    ("AT+CMEE?", b"\r\n+CMEE: 1\r\n\r\nOK\r\n"),     # "AT+CMEE: default 1"
    ("AT+NOSUCH", b"\r\nERROR\r\n"),
    ("AT+CMEE=2;+CSQ", b"\r\n+CSQ: 24,99\r\n\r\nOK\r\n"),
    ("AT+CMEE=2;+CFUN=7;+CMEE=0", b"\r\n+CME ERROR: incorrect parameters\r\n"),
    ("AT" + "E" * 2050, b"\r\nERROR\r\n"),
])
def test_command_line_syntax(fresh, line, answer):
    host, _ = fresh("ec2x")
    assert host.at(line.encode("latin-1")) == answer
    assert host.at("AT") == b"\r\nOK\r\n"             # the line after runs


def test_spaces_inside_unquoted_strings_are_kept(fresh):
    host, _ = fresh("ec2x")
    assert host.at('AT+QICSGP=1,1,my apn,"","",1') == b"\r\nOK\r\n"
    assert host.at("AT+QICSGP=1") == b'\r\n+QICSGP: 1,"my apn","","",1\r\n\r\nOK\r\n'
    doc("`AT+QIOPEN=1,0,TCP,a.example,80`")              # unquoted strings taken as quoted
    assert host.at("AT+QICSGP=2,1,CMNET,user,pw,1") == b"\r\nOK\r\n"
    assert host.at("AT+QICSGP=2") == b'\r\n+QICSGP: 1,"CMNET","user","pw",1\r\n\r\nOK\r\n'


def test_echo_crlf_and_a_slash(fresh):
    doc("A host sees\n  `AT\\r\\r\\nOK\\r\\n` whether it writes `AT\\r\\n` at once or one byte at a time.")
    host, _ = fresh("ec2x", echo=True)
    host.write(b"AT\r\n")
    answer_is(host, b"AT\r\r\nOK\r\n")
    for byte in b"AT\r\n":
        host.write(bytes([byte]))
        time.sleep(0.01)
    answer_is(host, b"AT\r\r\nOK\r\n")
    host.write(b"AT+CGMI\r")
    answer_is(host, b"AT+CGMI\r\r\nQuectel\r\n\r\nOK\r\n")
    host.write(b"A/")                                   # at once, without CR
    answer_is(host, b"A/\r\nQuectel\r\n\r\nOK\r\n")
    host.write(b"ATZ\x08X\r")                            # S5 deletes: ATX
    assert collect(host, lambda got: got.endswith(b"\r\nOK\r\n")).endswith(b"\r\nOK\r\n")


def test_s3_frames_every_answer(fresh):
    doc("after `ATS3=35` every answer, that line's OK included, is framed `#\\nOK#\\n`")
    host, _ = fresh("ec2x")
    host.write(b"ATS3=35\r")
    answer_is(host, b"#\nOK#\n")
    host.write(b"AT+CSQ#")
    answer_is(host, b"#\n+CSQ: 24,99#\n#\nOK#\n")


def test_atv0_and_atq1(fresh):
    doc("`ATV0`:\n  information text `text<CR><LF>`, result codes as digits followed by `<CR>` "
        "(OK 0, CONNECT 1,\n  NO CARRIER 3, ERROR 4)")
    doc("(`+CME ERROR: 50<CR><LF>`)")
    host, _ = fresh("ec2x")
    host.write(b"ATV0\r")
    answer_is(host, b"0\r")
    host.write(b"AT+CGMI\r")
    answer_is(host, b"Quectel\r\n0\r")
    host.write(b"AT+NOSUCH\r")
    answer_is(host, b"4\r")
    host.write(b"AT+CFUN=7\r")
    answer_is(host, b"+CME ERROR: 50\r\n")
    host.write(b"ATO\r")                                # no connection: NO CARRIER
    answer_is(host, b"3\r")
    host.write(b"AT+QSSLSEND=0\r")                      # not connected: plain ERROR
    answer_is(host, b"4\r")
    host.write(b"ATV1Q1\r")
    assert quiet(host) == b""
    host.write(b"AT+CGMI\r")
    answer_is(host, b"\r\nQuectel\r\n")            # information text stays
    host.write(b"AT+CFUN=7\r")
    assert quiet(host) == b""                           # +CME ERROR suppressed
    assert host.at("ATQ0") == b"\r\nOK\r\n"


def test_cmee_0_and_2(fresh):
    doc("With 0 every +CME error is a plain `ERROR`.")
    host, _ = fresh("ec2x")
    assert host.at("AT+CMEE=0;+CFUN=7") == b"\r\nERROR\r\n"
    assert host.at("AT+CMEE=2;+CFUN=7") == b"\r\n+CME ERROR: incorrect parameters\r\n"


def test_a_urc_while_the_host_types_a_line_comes_between_its_echoed_characters(fresh, demo):
    doc("A URC raised while the host is still typing a command line (no CR yet) is written at once,\n"
        "  between the echoed characters (`AT+CS` + URC + `Q` `CR`)")
    host, _ = fresh("ec2x", echo=True)
    index = len(demo.emulator.ports) - 1
    assert host.at("ATE1") == b"ATE1\r\r\nOK\r\n"
    host.write(b"AT+CS")
    assert host.read_exactly(5) == b"AT+CS"
    assert demo.control("urc", modem=index, text='+QIURC: "x"')["ok"]
    assert host.read_exactly(15) == b'\r\n+QIURC: "x"\r\n'
    host.write(b"Q\r")
    assert host.read_until(b"OK\r\n") == b"Q\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert quiet(host, 0.1) == b""


def test_atw_atz_atf(fresh):
    doc("`AT&W` saves ATE/ATV/ATQ/ATX/CMEE/IPR/IFC/ICF/&C/&D/S-registers to the state dir; `ATZ` restores the\n"
        "  saved set, `AT&F` the profile's factory set.")
    doc("`AT+IPR?` shows the stored setting")
    host, _ = fresh("ec2x")
    assert host.at("AT+CMEE=2;+IPR=9600;+ICF=3,1;S12=40;&W") == b"\r\nOK\r\n"
    assert host.at("AT+CMEE=0;+IPR=57600;+ICF=3,0;S12=20") == b"\r\nOK\r\n"
    assert host.at("ATZ") == b"\r\nOK\r\n"
    assert host.at("AT+CMEE?;+IPR?;+ICF?;S12?") == (
        b"\r\n+CMEE: 2\r\n\r\n+IPR: 9600\r\n\r\n+ICF: 3,1\r\n\r\n040\r\n\r\nOK\r\n")
    assert host.at("AT&F") == b"\r\nOK\r\n"
    assert host.at("ATE0").endswith(b"OK\r\n")                 # factory echo is on
    assert host.at("AT+CMEE?;+IPR?;+ICF?;S12?") == (
        b"\r\n+CMEE: 1\r\n\r\n+IPR: 115200\r\n\r\n+ICF: 3,3\r\n\r\n050\r\n\r\nOK\r\n")


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: identity, network, clock, device commands

@pytest.mark.parametrize("profile, line, answer", [
    ("ec2x", "AT+CREG=2;+CREG?", b'\r\n+CREG: 2,1,"D5D5","8A21B03",7\r\n\r\nOK\r\n'),
    ("ec2x", "AT+CGSN=1", b"\r\nERROR\r\n"),
    ("ec2x", "AT+ICCID", b"\r\nERROR\r\n"),
    ("ml302", "AT+CGSN=0", b"\r\n869523051234567\r\n\r\nOK\r\n"),
    ("ml302", "AT+CGSN=1", b"\r\n+CGSN: 869523051234567\r\n\r\nOK\r\n"),
    ("ml302", "AT+CGSN=3", b"\r\n+CGSN: 01\r\n\r\nOK\r\n"),
    ("ml302", "AT+ICCID", b"\r\n+ICCID: 898604A1192090123456\r\n\r\nOK\r\n"),
    ("ec2x", 'AT+CCLK="30/01/01,00:00:00+96"', b"\r\nOK\r\n"),
    ("ec2x", 'AT+CCLK="30/01/01,00:00:00-96"', b"\r\nOK\r\n"),
    ("ec2x", 'AT+CCLK="30/01/01,00:00:00+97"', b"\r\n+CME ERROR: 50\r\n"),
    ("ec2x", "ATH", b"\r\nOK\r\n"), ("ec2x", "ATH0", b"\r\nOK\r\n"), ("ml302", "ATH", b"\r\nOK\r\n"),
    ("ec2x", "ATX4", b"\r\nOK\r\n"), ("ec2x", "ATX0", b"\r\nOK\r\n"),
    ("ec2x", "AT+CSCS?", b'\r\n+CSCS: "GSM"\r\n\r\nOK\r\n'),
    ("ec2x", 'AT+CSCS="IRA"', b"\r\nOK\r\n"), ("ec2x", 'AT+CSCS="UCS2"', b"\r\nOK\r\n"),
    ("ec2x", 'AT+CSCS="HEX"', b"\r\n+CME ERROR: 50\r\n"),
    ("ec2x", "AT+CTZU=?", b"\r\n+CTZU: (0,1,3)\r\n\r\nOK\r\n"),
    ("ec2x", "AT+CTZU=2", b"\r\n+CME ERROR: 50\r\n"),
    ("ec2x", "AT+CTZR=2", b"\r\nOK\r\n"), ("ec2x", "AT+CTZR=3", b"\r\n+CME ERROR: 50\r\n"),
    ("ec2x", "AT+QNWINFO", b'\r\n+QNWINFO: "FDD LTE","46001","LTE BAND 3",1650\r\n\r\nOK\r\n'),
    ("ec2x", "AT+QCSQ", b'\r\n+QCSQ: "LTE",%d,-94,142,-9\r\n\r\nOK\r\n' % (-113 + 2 * 24)),
    ("ec2x", "AT+GCAP", b"\r\n+GCAP: +CGSM\r\n\r\nOK\r\n"),
    ("ec2x", "AT+QGMR", b"\r\nEC25EFAR06A06M4G_01.001.01.001\r\n\r\nOK\r\n"),
    ("ec2x", "AT+CPAS", b"\r\n+CPAS: 0\r\n\r\nOK\r\n"),
    ("ec2x", "AT+CPAS=?", b"\r\n+CPAS: (0,3,4)\r\n\r\nOK\r\n"),
    ("ec2x", "AT+CBC", b"\r\n+CBC: 0,100,3800\r\n\r\nOK\r\n"),
    ("ec2x", "AT+QSCLK=1;+QSCLK?", b"\r\n+QSCLK: 1\r\n\r\nOK\r\n"),
    ("ec2x", "ATD*99#", b"\r\nERROR\r\n"),
    ("ec2x", 'AT+QCFG="NWSCANMODE"', b'\r\n+QCFG: "nwscanmode",0\r\n\r\nOK\r\n'),
    ("ec2x", 'AT+QCFG="nosuchitem"', b"\r\nERROR\r\n"),
    ("ec2x", "AT+QICSGP?", b"\r\nERROR\r\n"),
    ("ec2x", 'AT+COPS=1,0,"NOPE"', b"\r\n+CME ERROR: 30\r\n"),
])
def test_identity_and_device_commands(fresh, profile, line, answer):
    host, _ = fresh(profile)
    assert host.at(line) == answer


def test_documented_answers_quoted_in_behaviour_md():
    """The answers the parametrised tests above compare are the ones behaviour.md prints."""
    for snippet in ['`"D5D5","8A21B03"`', "`+GCAP: +CGSM`", "`+CPAS: 0` (test `(0,3,4)`)",
                    "(`0,100,3800`", "`=?` lists `(0,1,3)`", "`EC25EFAR06A06M4G_01.001.01.001`",
                    "`{rssi}` = `-113 + 2 * <AT+CSQ rssi>` dBm", "`AT+QICSGP?` is ERROR",
                    "else +CME ERROR: 30", "AT+CCLK accepts time zones of -96..+96 quarters",
                    "`ATX<0-4>`: OK", "others +CME ERROR: 50", "Not emulated: PPP (`ATD*99#`)",
                    "on the EC2x `AT+CGSN=1` and `AT+ICCID` are ERROR"]:
        doc(snippet)


def test_qlts_gmt_and_local(fresh):
    doc('`+QLTS: "yyyy/MM/dd,hh:mm:ss±zz,0"` from the modem clock: GMT for modes 0\n  and 1')
    host, _ = fresh("ec2x")
    assert host.at('AT+CCLK="30/06/15,12:00:00+32"') == b"\r\nOK\r\n"
    assert host.at("AT+QLTS").startswith(b'\r\n+QLTS: "2030/06/15,04:00:0')
    assert host.at("AT+QLTS=1").startswith(b'\r\n+QLTS: "2030/06/15,04:00:0')
    assert host.at("AT+QLTS=2").startswith(b'\r\n+QLTS: "2030/06/15,12:00:0')
    assert host.at("AT+QLTS=2").endswith(b'+32,0"\r\n\r\nOK\r\n')


def test_not_registered_answers(demo, fresh):
    doc('Not registered: `+QLTS: ""`')
    doc("not\n  registered: `+QNWINFO: No Service`")
    doc('not registered: `+QCSQ: "NOSERVICE"`')
    doc("`AT+COPS?` reads\n  `+COPS: <mode>` while not registered")
    host, _ = fresh("ec2x")
    index = len(demo.emulator.ports) - 1
    assert demo.control("register", modem=index, stat=0)["ok"] is True
    time.sleep(0.2)
    host.pending.clear()
    assert host.at("AT+QLTS") == b'\r\n+QLTS: ""\r\n\r\nOK\r\n'
    assert host.at("AT+QNWINFO") == b"\r\n+QNWINFO: No Service\r\n\r\nOK\r\n"
    assert host.at("AT+QCSQ") == b'\r\n+QCSQ: "NOSERVICE"\r\n\r\nOK\r\n'
    assert host.at("AT+QSPN") == b"\r\n+CME ERROR: 30\r\n"
    assert host.at("AT+COPS?") == b"\r\n+COPS: 0\r\n\r\nOK\r\n"


def test_cfun_1_1_reboot(fresh):
    doc("`AT+CFUN=1,1` is a reboot: PDP contexts down,\n  sockets dropped without URCs, RAM files lost, "
        "settings back to the AT&W set")
    doc("`<rst>` 1 only with `<fun>` 1, as Quectel documents, else +CME ERROR: 50")
    doc("(EC2x: RDY, +CFUN: 1, +CPIN: READY, +QUSIM: 1, +QIND: SMS DONE,\n  +QIND: PB DONE")
    host, _ = ec2x_active(fresh)
    assert host.at("AT+CFUN=0,1") == b"\r\n+CME ERROR: 50\r\n"
    assert host.at("AT+CFUN=4,1") == b"\r\n+CME ERROR: 50\r\n"
    assert host.at('AT+QIOPEN=1,0,"TCP","220.180.239.212",8009,0,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 0,0\r\n")
    host.upload("RAM:r.txt", b"abc")
    host.upload("UFS:u.txt", b"abcd")
    assert host.at('AT+CREG=2;+COPS=3,2;+QSSLCFG="seclevel",1,2;+QSSLCFG="sni",1,1;+CMEE=2;+QISDE=0;'
                   '+CTZR=2;+CSCS="IRA";+CTZU=3;+QIDNSCFG=1,"1.1.1.1"') == b"\r\nOK\r\n"
    assert host.at("AT+QSSLSEND?") == b"\r\nERROR\r\n"                   # QIGETERROR 552 ...
    host.write(b"ATV0;+CFUN=1,1;+CGMI\r")
    out = host.read_until(b"+QIND: PB DONE\r\n")
    # its OK framed with the settings it was asked with (ATV0: 0<CR>); the rest of the line
    # (+CGMI) does not run; then the boot URCs, framed with the restored ATV1
    assert out == (b"0\r\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n"
                   b"+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n")
    assert quiet(host, 0.3) == b""                       # no socket URC
    # echo comes back: ATE1 is the factory (AT&W never ran)
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    assert host.at("AT+QIACT?") == b"\r\nOK\r\n"
    assert host.at("AT+QISTATE?") == b"\r\nOK\r\n"
    assert host.at('AT+QFLST="RAM:*"') == b"\r\nOK\r\n"
    assert b'\r\n+QFLST: "u.txt",4\r\n' in host.at('AT+QFLST="*"')                  # UFS stays
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n\r\nOK\r\n"
    assert host.at("AT+COPS?") == b'\r\n+COPS: 0,0,"CHN-UNICOM",7\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="seclevel",1') == b'\r\n+QSSLCFG: "seclevel",1,0\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="sni",1') == b'\r\n+QSSLCFG: "sni",1,0\r\n\r\nOK\r\n'
    assert host.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n\r\nOK\r\n"
    assert host.at("AT+QISDE?") == b"\r\n+QISDE: 1\r\n\r\nOK\r\n"      # "back to 1 at a reboot"
    assert host.at("AT+CTZR?") == b"\r\n+CTZR: 0\r\n\r\nOK\r\n"        # "start again from
    assert host.at("AT+CSCS?") == b'\r\n+CSCS: "GSM"\r\n\r\nOK\r\n'     #  their defaults"
    assert host.at("AT+CTZU?") == b"\r\n+CTZU: 3\r\n\r\nOK\r\n"         # NV: survives
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == b"\r\nOK\r\n"
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n'


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: PDP, packet domain, DNS/ping (EC2x and ML302)

def test_pdp_and_packet_domain_formats(fresh):
    doc("`AT+CGDCONT?` lists `\"0.0.0.0\",0,0,0,0` after the APN")
    doc('`+CGCONTRDP: <cid>,<cid+4>,"<apn>","<addr>.255.255.255.0",\n  "<gw>","<dns1>","<dns2>"`')
    doc('(`+CGPADDR: 1,"10.7.157.1"`, "0.0.0.0" while inactive)')
    doc('`+QIDNSCFG: <cid>,"<pri>","<sec>"`')
    doc('(EC2x\n  "123.66.165.1","123.66.165.2"')
    host, _ = fresh("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
    assert host.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"0.0.0.0"\r\n\r\nOK\r\n'
    assert host.at("AT+QIDNSCFG=1") == b"\r\n+CME ERROR: 561\r\n"      # inactive: 561
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"
    assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert host.at("AT+QIACT=1") == b"\r\nERROR\r\n"                   # active: ERROR
    assert host.at("AT+CGDCONT?") == b'\r\n+CGDCONT: 1,"IP","UNINET","0.0.0.0",0,0,0,0\r\n\r\nOK\r\n'
    assert host.at("AT+CGPADDR=1") == b'\r\n+CGPADDR: 1,"10.7.157.1"\r\n\r\nOK\r\n'
    assert host.at("AT+CGCONTRDP=1") == (b'\r\n+CGCONTRDP: 1,5,"UNINET","10.7.157.1.255.255.255.0",'
                                         b'"10.7.157.2","123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n')
    assert host.at("AT+QIDNSCFG=1") == b'\r\n+QIDNSCFG: 1,"123.66.165.1","123.66.165.2"\r\n\r\nOK\r\n'
    assert host.at('AT+QIDNSCFG=1,"fe80::1%eth0"') == b"\r\n+CME ERROR: 552\r\n"
    assert host.at("AT+CGACT=1,1") == b"\r\nOK\r\n"                    # "EC2x AT+CGACT answers OK only"


def test_ml302_pdp_and_qsslstate_first_line(fresh):
    doc("ML302 `AT+CGACT=1,1` answers `+CGACT: 1, 1, <ip>` (with the manual's spaces)")
    doc('`"IP INITIAL"` with no active PDP context; `"IP STATUS"` with one and no\n  socket')
    doc('never used → INITIAL `"",0`')
    host, _ = fresh("ml302")
    six = b"".join(b'+QSSLSTATE: %d,"TCP","",0,"INITIAL",1\r\n' % i for i in range(6))
    assert host.at("AT+QSSLSTATE") == b'\r\n+QSSLSTATE: "IP INITIAL"\r\n' + six + b"\r\nOK\r\n"
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == b"\r\nOK\r\n"
    assert host.at("AT+CGACT=1,1") == b"\r\n+CGACT: 1, 1, 10.127.79.43\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLSTATE") == b'\r\n+QSSLSTATE: "IP STATUS"\r\n' + six + b"\r\nOK\r\n"
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 1\r\n\r\nOK\r\n"
    assert host.at("AT+CGPADDR") == b'\r\n+CGPADDR: 1,"10.127.79.43"\r\n\r\nOK\r\n'


def test_dns_ping_error_forms(fresh):
    doc("Immediate failures of AT+QIDNSGIP / AT+QPING / AT+QNTP / AT+QIDNSCFG answer\n"
        "  `+CME ERROR: <err>` with the TCP/IP codes")
    doc('an IP\n  literal answers itself with TTL 0 (a field log: `+QIURC: "dnsgip",0,1,0`)')
    doc("a\n  failed lookup `+QPING: 565` alone")
    host, _ = fresh("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1') == b"\r\nOK\r\n"
    assert host.at('AT+QIDNSGIP=1,"1.2.3.4"') == b"\r\n+CME ERROR: 561\r\n"
    assert host.at('AT+QPING=1,"1.2.3.4"') == b"\r\n+CME ERROR: 561\r\n"
    assert host.at("AT+QIACT=1") == b"\r\nOK\r\n"
    assert host.at('AT+QPING=1,"1.2.3.4",0') == b"\r\n+CME ERROR: 552\r\n"     # timeout 1-255
    assert host.at('AT+QPING=1,"1.2.3.4",4,11') == b"\r\n+CME ERROR: 552\r\n"  # pingnum 1-10
    assert host.at("AT+CMEE=0") == b"\r\nOK\r\n"
    assert host.at('AT+QPING=1,"1.2.3.4",0') == b"\r\nERROR\r\n"
    assert host.at("AT+CMEE=1") == b"\r\nOK\r\n"
    assert host.at('AT+QIDNSGIP=1,"1.2.3.4"') == b"\r\nOK\r\n"
    assert host.read_until(b'"1.2.3.4"\r\n') == b'\r\n+QIURC: "dnsgip",0,1,0\r\n\r\n+QIURC: "dnsgip","1.2.3.4"\r\n'
    assert host.at('AT+QPING=1,"unrouted.example",1,1') == b"\r\nOK\r\n"
    assert host.read_until(b"+QPING: 565\r\n") == b"\r\n+QPING: 565\r\n"
    assert quiet(host, 0.3) == b""


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: files

def test_files(fresh):
    doc("(405 not found,\n  406 invalid name, 407 already exists")
    doc("`AT+QFDWL`: `CONNECT`, the bytes, CR LF, `+QFDWL: <size>,<checksum>`, OK.")
    host, _ = fresh("ec2x")
    assert host.upload("UFS:y.txt", b"abcd") == b"\r\n+QFUPL: 4,206\r\n\r\nOK\r\n"
    assert host.upload("RAM:x.txt", b"abc") == b"\r\n+QFUPL: 3,262\r\n\r\nOK\r\n"
    assert host.at('AT+QFUPL="y.txt",3') == b"\r\n+CME ERROR: 407\r\n"         # bare = UFS
    assert host.at('AT+QFDEL="nope"') == b"\r\n+CME ERROR: 405\r\n"
    for name in ("../x", "a/b", "a\\\\b", " x", "x ", "Q:x", "x" * 81):
        assert host.at(f'AT+QFUPL="{name}",3') == b"\r\n+CME ERROR: 406\r\n", name
    host.write(b'AT+QFDWL="y.txt"\r')
    assert host.read_until(b"OK\r\n") == b"\r\nCONNECT\r\nabcd\r\n+QFDWL: 4,206\r\n\r\nOK\r\n"


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: SSL (EC2x)

def test_qsslcfg_defaults_are_the_documented_ones(fresh):
    text = doc("Defaults are the note's underlined values: sslversion 4, ciphersuite 0XFFFF, seclevel 0,\n"
               "  ignorelocaltime 1, negotiatetime 300, sni 0, closetimemode 0, session_cache 1,\n"
               "  dtls 0, renegotiation 0, ignore* 0. dtlsversion has no legible default: 1 (DTLS 1.2).")
    host, _ = fresh("ec2x")
    pairs = dict(re.findall(r"([a-z_]+) (0XFFFF|\d+)", text))
    pairs.pop("legible", None)
    pairs["dtlsversion"] = "1"
    for name in ("ignoremulticertchainverify", "ignoreinvalidcertsign"):
        pairs[name] = "0"
    assert len(pairs) == 13
    for ctx in (0, 5):
        for name, value in pairs.items():
            assert host.at(f'AT+QSSLCFG="{name}",{ctx}') == \
                f'\r\n+QSSLCFG: "{name}",{ctx},{value}\r\n\r\nOK\r\n'.encode(), name
    assert host.at('AT+QSSLCFG="alpn",0') == b'\r\n+QSSLCFG: "alpn",0,""\r\n\r\nOK\r\n'   # **""**


def test_qsslcfg_documented_forms(fresh):
    doc("A list of cipher suites is written `0X0035:0XC02F` (':' — ';' would split the command line\n"
        "  unless quoted; quoted `\"0X0035;0XC02F\"` is accepted too) and read back with ':'.")
    doc("`0XFFFF` cannot be combined with other ids.")
    doc('`"clientcertex"` (the note\'s write syntax printed once in the cacertex row) is `cacertex`;\n'
        '  queries answer `"cacertex"`.')
    doc("`negotiatetime` | 10–**300** s", BEHAVIOUR)
    host, _ = fresh("ec2x")
    read = b'\r\n+QSSLCFG: "ciphersuite",1,0X0035:0XC02F\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X0035:0XC02F') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="ciphersuite",1') == read
    assert host.at('AT+QSSLCFG="ciphersuite",2,"0X0035;0XC02F"') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="ciphersuite",2') == read.replace(b",1,", b",2,")
    assert host.at('AT+QSSLCFG="ciphersuite",1,0XFFFF:0X0035') == b"\r\nERROR\r\n"
    assert host.at('AT+QSSLCFG="clientcertex",1,"UFS:a.pem"') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="cacertex",1') == b'\r\n+QSSLCFG: "cacertex",1,"UFS:a.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="cacertex"') == b"\r\n" + b"".join(
        b'+QSSLCFG: "cacertex",%d,%s\r\n' % (c, b'"UFS:a.pem"' if c == 1 else b'""') for c in range(6)
    ) + b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="alpn",1,"h2,http/1.1"') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="alpn",1') == b'\r\n+QSSLCFG: "alpn",1,"h2,http/1.1"\r\n\r\nOK\r\n'
    assert host.at(b'AT+QSSLCFG="alpn",1,"a\x00b"') == b"\r\nERROR\r\n"         # a NUL: 552
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    for value, answer in ((9, b"\r\nERROR\r\n"), (10, b"\r\nOK\r\n"), (300, b"\r\nOK\r\n"),
                          (301, b"\r\nERROR\r\n")):
        assert host.at(f'AT+QSSLCFG="negotiatetime",1,{value}') == answer
    assert host.at('AT+QSSLCFG="sslversion",6,1') == b"\r\nERROR\r\n"           # contexts 0-5
    test = host.at("AT+QSSLCFG=?")
    assert b'"ignoreinvalidcertsign",(0-5),(0,1)' in test and b'"renegotiation",(0-5),(0,1)' in test
    assert b"checkhost" not in test and b"ignorecertchain" not in test          # not in ec2x.toml


def test_qigeterror_after_forms_and_unsplittable_lines(fresh):
    doc("A form a command does not have (`AT+QSSLSEND?`, `AT+QSSLOPEN` without `=`) is `ERROR`, and\n"
        "  AT+QIGETERROR then says `552,invalid parameter`")
    doc("A line the parser cannot split at all (`AT+QSSLSEND=?x`) is a plain `ERROR`\n"
        "  that leaves AT+QIGETERROR alone")
    doc("Immediate ERRORs: bad\n  parameter (QIGETERROR 552), PDP context not active (561)")
    host, _ = fresh("ec2x")
    assert host.at('AT+QSSLOPEN=1,1,4,"a.example",443,0') == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLSEND=?x") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 561,open PDP context failed\r\n\r\nOK\r\n"
    for line in ("AT+QSSLSEND?", "AT+QSSLOPEN"):
        assert host.at(line) == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"


def test_ssl_open_failure_codes_and_texts(demo, fresh):
    doc("(`+QIGETERROR: 566,socket connection failed`")
    doc("an unrouted name with\n  `--offline`")
    doc("a context that cannot work (seclevel 1 without\n  `cacert`, a configured file that does not exist) 552")
    with socket.socket() as probe:                       # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    demo.router.add_map("refused.example", 443, "127.0.0.1", closed)
    host, _ = ec2x_active(fresh)
    cases = [('"refused.example",443', b"566", b"566,socket connection failed"),
             ('"unrouted.example",443', b"565", b"565,DNS parse failed"),
             ('"10.9.9.9",443', b"566", b"566,socket connection failed")]
    for target, code, text in cases:
        assert host.at(f"AT+QSSLOPEN=1,1,1,{target},0") == b"\r\nOK\r\n"
        assert host.read_until(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n")) == b"\r\n+QSSLOPEN: 1,%s\r\n" % code
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: %s\r\n\r\nOK\r\n" % text
        assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"                    # harmless
    assert host.at('AT+QSSLCFG="seclevel",2,1') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLOPEN=1,2,1,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
    assert host.read_until(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n")) == b"\r\n+QSSLOPEN: 1,552\r\n"


def test_ssl_send_prompt_cancel_and_limits(fresh):
    doc("`AT+QSSLSEND` prompts `<CR><LF>> ` (ATV0: `> `). Variable length ends at Ctrl+Z (at most 1460\n"
        "  bytes; more is ERROR/552) and ESC cancels (ERROR, QIGETERROR 571 \"cancel send\"); an empty\n"
        "  send is ERROR/552.")
    doc("`AT+QSSLRECV` on such a\n  socket is ERROR (QIGETERROR 572")
    host, _ = ec2x_active(fresh)
    assert host.at('AT+QSSLOPEN=1,1,1,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 1,0\r\n")
    host.write(b"AT+QSSLSEND=1\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc\x1b")
    assert host.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 571,cancel send\r\n\r\nOK\r\n"
    host.write(b"AT+QSSLSEND=1\r")
    host.read_until(b"> ")
    host.write(b"\x1a")
    assert host.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    host.write(b"AT+QSSLSEND=1\r")
    host.read_until(b"> ")
    host.write(b"x" * 1461 + b"\x1a")
    assert host.read_until(b"ERROR\r\n").endswith(b"\r\nERROR\r\n")
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    host.write(b"ATV0\r")
    assert host.read_until(b"0\r") == b"0\r"
    host.write(b"AT+QSSLSEND=1,3\r")
    assert host.read_until(b"> ") == b"> "
    host.write(b"\x1a\x1b!")                              # fixed length: binary-safe
    assert host.read_until(b"SEND OK\r\n") == b"SEND OK\r\n"
    # the peer echoes the 3 bytes: wait for their URC before the next command's answer is compared
    assert host.read_until(b'+QSSLURC: "recv",1\r\n').endswith(b'+QSSLURC: "recv",1\r\n')
    host.write(b"ATV1\r")
    host.read_until(b"OK\r\n")
    # direct push: AT+QSSLRECV is ERROR 572
    assert host.at('AT+QSSLOPEN=1,1,2,"220.180.239.212",8010,1') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 2,0\r\n")
    assert host.at("AT+QSSLRECV=2,100") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"
    assert host.send_data(2, b"hi") == b"\r\nSEND OK\r\n"
    doc('`+QSSLURC: "recv",<id>,<len><CR><LF><data><CR><LF>`')
    doc("real modules end the pushed data with CR LF")
    assert host.read_until(b'"recv",2,2\r\nhi\r\n') == b'\r\n+QSSLURC: "recv",2,2\r\nhi\r\n'


def test_tcpip_documented_answers(fresh):
    doc("`AT+QISWTMD=<id>,<mode>` (EC2x; test form `+QISWTMD: (0-11),(0-2)`)")
    doc("**AT+QISDE** `=0|1`, `?` → `+QISDE: <n>`")
    doc("An id with nothing open is OK too, as AT+QSSLCLOSE's")
    doc("A client\n  remote port 0, a listener without `<local_port>` or a listener in mode 2 are ERROR (552).")
    doc("an even number of hex digits (either case), at most 512 bytes,\n  else 552")
    doc("`+QIRD: 0` when empty")
    doc("`=<id>,0` answers `+QIRD: <total>,<read>,<unread>`")
    host, _ = ec2x_active(fresh)
    assert host.at("AT+QISWTMD=?") == b"\r\n+QISWTMD: (0-11),(0-2)\r\n\r\nOK\r\n"
    assert host.at("AT+QISDE?") == b"\r\n+QISDE: 1\r\n\r\nOK\r\n"
    assert host.at("AT+QICLOSE=3") == b"\r\nOK\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 0,operate successfully\r\n\r\nOK\r\n"
    for line in ('AT+QIOPEN=1,0,"TCP","127.0.0.1",0,0,0', 'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,0,0',
                 'AT+QIOPEN=1,0,"TCP LISTENER","127.0.0.1",0,2021,2'):
        assert host.at(line) == b"\r\nERROR\r\n", line
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at('AT+QIOPEN=1,0,"TCP","220.180.239.212",8009,0,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QIOPEN: 0,0\r\n")
    assert host.at("AT+QIRD=0") == b"\r\n+QIRD: 0\r\n\r\nOK\r\n"
    for bad in ("414", "41" * 513):
        assert host.at(f'AT+QISENDEX=0,"{bad}"') == b"\r\nERROR\r\n"
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 552,invalid parameter\r\n\r\nOK\r\n"
    assert host.at("AT+QISENDEX=0,4142") == b"\r\nSEND OK\r\n"                  # unquoted hex
    assert host.read_until(b'+QIURC: "recv",0\r\n')
    assert host.at("AT+QIRD=0,0") == b"\r\n+QIRD: 2,0,2\r\n\r\nOK\r\n"
    assert host.at("AT+QIRD=0,1500") == b"\r\n+QIRD: 2\r\nAB\r\n\r\nOK\r\n"
    # <local_port> 0: the port the stack chose, once connected
    assert re.fullmatch(rb'\r\n\+QISTATE: 0,"TCP","220\.180\.239\.212",8009,[1-9]\d*,2,1,0,0,"usbmodem"\r\n'
                        rb'\r\nOK\r\n', host.at("AT+QISTATE=1,0"))
    assert host.at("AT+QICLOSE=0") == b"\r\nOK\r\n"


# ----------------------------------------------------------------------------------------
# docs/behaviour.md: ML302

def test_ml302_qsslcfg_and_commands(fresh):
    doc('Query forms answer without the context id, as printed (`+QSSLCFG: "sslversion",4`); the\n'
        '  `clientkey` query answers `"clientkey"`')
    doc("`ciphersuite` accepts only the manual's six suites, joined by ':', or 0XFFFF alone.")
    doc("its test form prints\n  `(1,1500)`")
    doc("AT+QSSLCLOSE answers `OK` then `<ssid>,CLOSE OK` (§2.6 and §3), also for an idle ssid")
    doc("`ignorertctime` is global, default 1")
    host, _ = fresh("ml302")
    assert host.at('AT+QSSLCFG="sslversion",0') == b'\r\n+QSSLCFG: "sslversion",4\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="clientkey",0') == b'\r\n+QSSLCFG: "clientkey","/privateKey.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="cacert",0') == b'\r\n+QSSLCFG: "cacert","/caCrt.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="clientcert",0') == b'\r\n+QSSLCFG: "clientcert","/clientCrt.pem"\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="ciphersuite",0') == b'\r\n+QSSLCFG: "ciphersuite",0XFFFF\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="ciphersuite",0,0X0035:0X002F') == b"\r\nOK\r\n"
    assert host.at('AT+QSSLCFG="ciphersuite",0') == b'\r\n+QSSLCFG: "ciphersuite",0X0035:0X002F\r\n\r\nOK\r\n'
    assert host.at('AT+QSSLCFG="ciphersuite",0,0XC02F') == b"\r\nERROR\r\n"
    assert host.at('AT+QSSLCFG="ignorertctime"') == b'\r\n+QSSLCFG: "ignorertctime",1\r\n\r\nOK\r\n'
    assert host.at("AT+QSSLRECV=?") == b"\r\n+QSSLRECV: (0,1),(0-5),(1,1500)\r\n\r\nOK\r\n"
    assert host.at("AT+QSSLCLOSE=3") == b"\r\nOK\r\n"
    assert host.read_until(b"CLOSE OK\r\n") == b"\r\n3,CLOSE OK\r\n"


def test_ml302_ssl_errors_and_send(fresh):
    doc("-1 for everything else (no active PDP\n  context, DNS, TCP, TLS, certificates, SSL 3.0)")
    doc("ESC cancels with OK (as AT+QSECWRITE); an empty send\n  or a socket not connected is ERROR.")
    doc("`SEND OK` alone (§2.7's syntax and example, and the issue); §3's extra `OK` is not produced.")
    host, _ = fresh("ml302")
    assert host.at('AT+QSSLOPEN=0,0,"www.iottest.work",443,0') == b"\r\nOK\r\n"       # no PDP
    assert host.read_until(re.compile(rb"\+QSSLOPEN: 0,-?\d+\r\n")) == b"\r\n+QSSLOPEN: 0,-1\r\n"
    host.at('AT+CGDCONT=1,"IP","CMNET";+CGACT=1,1')
    assert host.at("AT+QSSLSEND=1") == b"\r\nERROR\r\n"                                # not connected
    assert host.at('AT+QSSLOPEN=1,0,"www.iottest.work",443,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 1,0\r\n")
    assert host.at('AT+QSSLOPEN=1,0,"www.iottest.work",443,0') == b"\r\nOK\r\n"
    assert host.read_until(re.compile(rb"\+QSSLOPEN: 1,-?\d+\r\n")) == b"\r\n+QSSLOPEN: 1,-2\r\n"
    host.write(b"AT+QSSLSEND=1\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc\x1b")
    assert host.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    host.write(b"AT+QSSLSEND=1\r")
    host.read_until(b"> ")
    host.write(b"\x1a")
    assert host.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
    host.write(b"AT+QSSLSEND=1\r")
    host.read_until(b"> ")
    host.write(b"GET /test.html HTTP/1.1\r\nHost: www.iottest.work\r\n\r\n\x1a")
    assert host.read_until(b"SEND OK\r\n").endswith(b"\r\nSEND OK\r\n")
    answer_is(host, b'\r\n+QSSLURC: "recv",1,1\r\n')                          # no extra OK
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"


def test_ml302_certificate_store(fresh):
    text = doc("A filled slot is refused before the prompt (+CME ERROR: 3); over 16384 bytes +CME ERROR: 20;\n"
               "  an empty write +CME ERROR: 50. `AT+QSECREAD` of an empty slot +CME ERROR: 22; `AT+QSECDEL`\n"
               "  of an empty slot OK.")
    assert text
    host, _ = fresh("ml302")
    assert host.at("AT+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"
    assert host.at("AT+QSECDEL=2") == b"\r\nOK\r\n"
    host.write(b"AT+QSECWRITE=2\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"\x1a")
    assert host.read_until(b"\r\n+CME ERROR: 50\r\n") == b"\r\n+CME ERROR: 50\r\n"
    host.write(b"AT+QSECWRITE=2\r")
    host.read_until(b"> ")
    host.write(b"x" * 16385 + b"\x1a")
    assert host.read_until(re.compile(rb"\r\n(\+CME ERROR: \d+|OK)\r\n"), timeout=20).endswith(b"\r\n+CME ERROR: 20\r\n")
    host.write(b"AT+QSECWRITE=2\r")
    host.read_until(b"> ")
    host.write(b"abc\x1b")                                                   # ESC: nothing, OK
    assert host.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    assert host.at("AT+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"
    host.write(b"AT+QSECWRITE=2\r")
    host.read_until(b"> ")
    host.write(b"abc\x1a")
    assert host.read_until(b"OK\r\n") == b"\r\n+QSECWRITE: 3,0262\r\n\r\nOK\r\n"
    assert host.at("AT+QSECWRITE=2") == b"\r\n+CME ERROR: 3\r\n"
    assert host.at("AT+QSECWRITE=?") == b"\r\n+QSECWRITE:(0~2)\r\n\r\nOK\r\n"    # the manual's spacing


# ----------------------------------------------------------------------------------------
# docs/behaviour.md / architecture.md: transparent mode, faults, scenario keys, layout

def test_transparent_ato_without_connection_and_qiswtmd(fresh):
    doc("`ATO` with no such connection (never\n  online, closed since, or ended by NO CARRIER) → `NO CARRIER`.")
    doc("A socket that is not connected → `ERROR`, QIGETERROR 572.")
    host, _ = ec2x_active(fresh)
    assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
    assert host.at("AT+QISWTMD=5,1") == b"\r\nERROR\r\n"
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 572,operation not allowed\r\n\r\nOK\r\n"
    assert host.at('AT+QSSLOPEN=1,1,4,"unrouted.example",443,2') == b"\r\nERROR\r\n"   # EC2x: ERROR
    assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: 565,DNS parse failed\r\n\r\nOK\r\n"


def test_pdp_deact_and_drop_faults(demo, fresh):
    doc('`pdp_deact`: EC2x `+QIURC: "pdpdeact",<cid>` then each socket\'s "closed" URC')
    doc('`drop` close/rst: reported like a peer close (`+QSSLURC: "closed"`')
    host, _ = ec2x_active(fresh)
    index = len(demo.emulator.ports) - 1
    assert host.at('AT+QSSLOPEN=1,1,1,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 1,0\r\n")
    assert demo.control("drop", modem=index, socket=1, how="rst") == {"ok": True}
    assert host.read_until(b'"closed",1\r\n') == b'\r\n+QSSLURC: "closed",1\r\n'
    assert host.at("AT+QSSLCLOSE=1") == b"\r\nOK\r\n"
    assert host.at('AT+QSSLOPEN=1,1,2,"220.180.239.212",8010,0') == b"\r\nOK\r\n"
    assert host.read_until(b"+QSSLOPEN: 2,0\r\n")
    assert demo.control("pdp_deact", modem=index, cid=1)["ok"] is True
    assert host.read_until(b'"closed",2\r\n') == b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "closed",2\r\n'
    assert host.at("AT+QIACT?") == b"\r\nOK\r\n"


def test_scenario_trigger_keys_are_the_documented_ones(tmp_path):
    from emulator.tools.scenario import ScenarioError, load_scenario
    text = README.split("Steps run `at = <seconds>`", 1)[1].split("### Timing", 1)[0]
    doc("a trigger takes `command`, and optionally\n`socket`, `kind` (write/read/test/exec) and `count`", README)
    for kind in ("write", "read", "test", "exec"):
        load_scenario({"step": [{"when": {"command": "+QSSLSEND", "socket": 1, "kind": kind, "count": 2},
                                 "op": "send_fail", "socket": 1, "delay": 0.5, "modem": 0}]})
    load_scenario({"step": [{"at": 1.0, "op": "state"}]})
    load_scenario({"step": [{"after": {"command": "+QSSLOPEN"}, "op": "state"}]})
    with pytest.raises(ScenarioError):
        load_scenario({"step": [{"when": {"command": "+QSSLSEND", "sockets": 1}, "op": "state"}]})
    doc("`reboot` cannot be a `when` step.")
    with pytest.raises(ScenarioError):
        load_scenario({"step": [{"when": {"command": "+QSSLSEND"}, "op": "reboot"}]})
    assert "description" in code_block("`field-bug-4411.toml`:")
    assert text


def test_architecture_tree_names_files_that_exist():
    tree = code_block("## The tree is the path of a byte", ARCHITECTURE)
    missing = []
    folder = None
    for line in tree.splitlines():
        m = re.match(r"^  ([a-z_]+/)", line)
        if m:
            folder = "emulator/" + m.group(1)
            continue
        if re.match(r"^[a-z_]+/", line):
            folder = line.split()[0] if line.startswith("tls_engine") else folder
            continue
        m = re.match(r"^    ((?:[a-z_]+\.py ?)+)", line)
        if m and folder:
            for name in m.group(1).split():
                if not (ROOT / folder / name).exists():
                    missing.append(folder + name)
    assert (ROOT / "emulator" / "logsafe.py").exists()
    assert not missing, missing
    for rel in ("tests/e2e/test_ssl_profiles.py", "tests/unit/tls_engine/test_boundary.py",
                "tests/e2e/test_adversarial_driver_init.py", "tests/e2e/test_scenario.py",
                "tests/e2e/test_plugin.py", "tests/e2e/test_fuzz_command_surface.py",
                "emulator/tools/scenario.py", "emulator/logsafe.py", "tls_engine/README.md"):
        assert (ROOT / rel).exists(), rel
    assert os.path.realpath(ROOT / "profiles" / "ec2x.toml") == \
        os.path.realpath(ROOT / "emulator" / "profiles" / "ec2x.toml")


def test_readme_makefile_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z0-9-]+)`", README):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
    assert "--link /tmp/modem-ec2x" in makefile or "LINK   ?= /tmp/modem-ec2x" in makefile
    assert "--demo --offline" in makefile


def test_readme_in_process_python_example_runs(tmp_path):
    """README "In Python, without pytest": the example, as printed, runs to its end in a
    fresh interpreter (imports, add_modem with manual time, routing, Host, control, advance,
    a modem call on the loop thread)."""
    doc("Calls into a\nmodem itself (`Modem.set_dtr`, its settings) run on the loop thread", README)
    script = tmp_path / "example.py"
    script.write_text(code_block("### In Python, without pytest", fence="```"))
    result = subprocess.run([PY, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "+QIOPEN: 0,0" in result.stdout and "'state': 'CONNECTED'" in result.stdout, result.stdout
