"""Adversarial tests of the field tools, seventh pass (not repeating test_adversarial_field_tools.py,
_2 ... _6, _fuzz, test_adversarial_replay_fidelity*.py, test_review_replay_changes*.py,
test_adversarial_cli_lifecycle*.py, test_control.py, test_trace.py).

Covered here:

- host AT logs CAPTURED from a live modem in forms the earlier passes did not replay: an ATV0
  session with an AT+QFUPL upload (its CONNECT is the numeric `1`), a log whose lines end in
  CR only (an old terminal program's log) with a CR LF upload, a download, errors and an ATV0
  stretch, and a raw `cat` dump of an echo-on session where a URC came between a command's
  echo and its answer and a reboot came after a later answer (the field session's scenario
  replays it; without it the first difference is named);
- the modem clock as the control API shows it and as certificate checks use it: each modem of
  one process keeps its own AT+CCLK, a control `reboot` keeps it running and resets the
  AT+QSSLCFG settings (ignorelocaltime back to 1), so the same server passes, then fails at
  the 2099 clock once ignorelocaltime is 0 again, while the neighbour modem passes;
- `register` stat 0 / 1 aimed at one modem of three in one process: only its host sees the
  +CREG/+CGREG/+CEREG URCs, the "pdpdeact" and the socket's "closed"; the neighbours' sockets
  keep echoing and `state` tells each modem's registration apart;
- `send_fail` armed while the socket is online (transparent mode): the stream is untouched,
  the first AT+QSSLSEND after the escape answers SEND FAIL and its bytes never reach the
  server, the next one does (its echo waits for ATO);
- the CLI with --count 2, --control and --trace: a `send_fail` through the control socket on
  modem 1 only; `trace show --modem 1` shows it, `replay --modem 0` has no difference,
  `replay --modem 1` names the SEND FAIL, and with a scenario file standing for the fault
  it replays (README "From a field log to a test"); the same run under a --scenario file whose
  step names modem 1, replayed with --modem 1 and that file;
- a raw dump where a URC came between the echoed characters of a command (behaviour.md: written
  at once, `AT+CS` URC `Q`), replayed with the scenario that raised it;
- a trace across a host restart (AT+CFUN=1,1) with a transparent connection parked by "+++"
  and an AT+QSSLSEND echo still due, then a new buffer-mode connection: no difference, and an
  edited echo is named;
- `net` latency, `connect_refuse` and `dns_fail` aimed at one modem of three (manual time):
  only its echo waits for its clock, only its opens fail (565, then 566);
- an existing world-readable --trace file (`touch` under umask 022): it receives the plaintext
  and an uploaded key.

Bugs the round found, fixed (the tests pass now): an ATV0 host log's upload (CONNECT is `1`)
was not replayed as a payload; a capture with a URC between the echoed characters replayed a
command the host never sent; an existing 0644 --trace file stayed 0644 with no warning
(--keylog warns in that case: now the trace too); a --count run's scenario aimed at modem N
could not be given to `replay --modem N --scenario` (now its modem-N steps run).

Every name dialled is routed to 127.0.0.1.
"""
from __future__ import annotations

import datetime
import io
import json
import re
import socket
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


from emulator.testing.host import Host
from emulator.testing.peers import TcpServer, TlsServer
from emulator.tools.trace import replay_main, show_main
from tests.e2e.cli_support import start, stop
from tests.e2e.test_adversarial_public_drivers_27 import xor16 as _xor_checksum

OK = b"\r\nOK\r\n"


# == helpers =========================================================================================
def _replay(path: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path), *args])
    text = out.getvalue() + err.getvalue()
    assert "Traceback" not in text, text
    return rc, text


def _show(path: Path, *args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = show_main([str(path), *args])
    return rc, out.getvalue() + err.getvalue()


def _log_lines(answer: bytes) -> list[str]:
    """What a logger of received lines writes for `answer`: one '<< ' line per non-empty line
    (lines end at CR or LF: an ATV0 result code ends in CR alone)."""
    text = answer.decode("latin-1").replace("\r", "\n")
    return ["<< " + x for x in text.split("\n") if x.strip()]


def _exchange(host: Host, data: bytes, until: re.Pattern) -> bytes:
    host.write(data)
    return host.read_until(until)


V0_FINAL = re.compile(rb"(?:^|\n)\d\r")           # an ATV0 result code: digits, then CR
V1_FINAL = re.compile(rb"\r\n(OK|ERROR|\+CME ERROR: [^\r]*)\r\n")


# == (1) an ATV0 log of an upload ===================================================================
def _upload_log(open_modem, v0: bool) -> tuple[list[str], bytes]:
    """A live EC2x session: (ATV0,) an AT+QFUPL of 'hello' + LF, AT+QFDEL; logged as a host
    logger writes it.  Returns the log lines and the upload's answer as the modem gave it."""
    host, _ = open_modem("ec2x")
    log = [">> ATE0", "<< OK"]                   # (open_modem's own first command)
    final = V1_FINAL
    if v0:
        got = _exchange(host, b"ATV0\r", V0_FINAL)
        assert got == b"0\r"
        log += [">> ATV0"] + _log_lines(got)
        final = V0_FINAL
    prompt = _exchange(host, b'AT+QFUPL="RAM:v0.txt",6\r', re.compile(rb"1\r|CONNECT\r\n"))
    log += ['>> AT+QFUPL="RAM:v0.txt",6'] + _log_lines(prompt)
    answer = _exchange(host, b"hello\n", final)
    log += [">> hello"] + _log_lines(answer)
    got = _exchange(host, b'AT+QFDEL="RAM:v0.txt"\r', final)
    log += ['>> AT+QFDEL="RAM:v0.txt"'] + _log_lines(got)
    return log, prompt + answer


def test_the_live_atv0_upload_answers_connect_as_1_and_the_v1_log_replays(tmp_path, open_modem):
    """The capture the next test replays, and the same session with ATV1 as the control case."""
    log, got = _upload_log(open_modem, v0=True)
    assert got == b"1\r+QFUPL: 6,6b03\r\n0\r", got          # V.250: CONNECT is result code 1
    log1, got1 = _upload_log(open_modem, v0=False)
    assert got1 == b"\r\nCONNECT\r\n\r\n+QFUPL: 6,6b03\r\n\r\nOK\r\n", got1
    path = tmp_path / "v1.log"
    path.write_text("\n".join(log1) + "\n")
    assert _replay(path) == (0, "replayed 4 lines: no difference\n")


def test_an_atv0_log_of_an_upload_replays(tmp_path, open_modem):
    log, _ = _upload_log(open_modem, v0=True)
    assert log == ['>> ATE0', '<< OK', '>> ATV0', '<< 0', '>> AT+QFUPL="RAM:v0.txt",6', '<< 1',
                   '>> hello', '<< +QFUPL: 6,6b03', '<< 0', '>> AT+QFDEL="RAM:v0.txt"', '<< 0']
    path = tmp_path / "v0.log"
    path.write_text("\n".join(log) + "\n")
    t0 = time.monotonic()
    assert _replay(path) == (0, "replayed 5 lines: no difference\n")
    assert time.monotonic() - t0 < 5


# == (2) a log whose lines end in CR only ===========================================================
def test_a_cr_only_log_of_a_live_session_replays_and_a_changed_answer_is_named(tmp_path, open_modem):
    """An old terminal program's log: every line ends in CR alone.  The session: an upload
    whose two lines end CR LF (its length says so), its download, ERROR, a +CME ERROR in
    verbose form, an ATV0 stretch and back."""
    host, _ = open_modem("ec2x")
    log = [">> ATE0", "<< OK"]
    payload = b"line1\r\nline2\r\n"          # (14: only CR LF after each line makes that length)
    for line, data in ((b"AT+CMEE=2", None),
                       (b'AT+QFUPL="RAM:two.txt",%d' % len(payload), payload),
                       (b'AT+QFDWL="RAM:two.txt"', None),
                       (b"AT+NOSUCH", None),
                       (b'AT+QFDEL="RAM:none.txt"', None),
                       (b"AT+CSQ", None)):
        if data is None:
            got = _exchange(host, line + b"\r", V1_FINAL)
            log += [">> " + line.decode()] + _log_lines(got)
        else:
            got = _exchange(host, line + b"\r", re.compile(rb"CONNECT\r\n"))
            log += [">> " + line.decode()] + _log_lines(got)
            got = _exchange(host, data, V1_FINAL)
            log += [">> line1", ">> line2"] + _log_lines(got)
    for line in (b"ATV0", b"AT+CGMR", b"AT+NOSUCH", b"ATV1"):
        got = _exchange(host, line + b"\r", V0_FINAL if line != b"ATV1" else V1_FINAL)
        log += [">> " + line.decode()] + _log_lines(got)
    assert log[log.index('>> AT+QFDWL="RAM:two.txt"'):][:6] == [
        '>> AT+QFDWL="RAM:two.txt"', "<< CONNECT", "<< line1", "<< line2",
        "<< +QFDWL: 14,%x" % _xor_checksum(payload), "<< OK"]
    assert "<< +CME ERROR: file not found" in log and "<< 4" in log
    path = tmp_path / "cr.log"
    path.write_bytes(("\r".join(log) + "\r").encode())
    rc, text = _replay(path)
    assert (rc, text) == (0, "replayed 12 lines: no difference\n"), (text, log)
    # the same log with the CSQ answer changed: named, exit 1
    changed = tmp_path / "cr-changed.log"
    changed.write_bytes(path.read_bytes().replace(b"<< +CSQ: 24,99", b"<< +CSQ: 31,99"))
    rc, text = _replay(changed)
    assert rc == 1 and text == ("first difference: step 8 (AT+CSQ):\n"
                                "  expected: ['+CSQ: 31,99', 'OK']\n"
                                "  got:      ['+CSQ: 24,99', 'OK']\n"), text


# == (3) a raw dump: a URC between echo and answer, and a reboot =====================================
SCENARIO = '''description = "a URC while AT+CGMR runs; the module resets after the 2nd AT+CSQ"

[[step]]
when = { command = "+CGMR" }
op = "urc"
text = '+CMTI: "SM",3'

[[step]]
after = { command = "+CSQ", count = 2 }
op = "reboot"
'''


def test_a_raw_dump_with_a_urc_inside_an_echoed_answer_and_a_reboot_replays_with_its_scenario(
        tmp_path, emulator, open_modem):
    scenario = tmp_path / "field.toml"
    scenario.write_text(SCENARIO)
    host, _ = open_modem("ec2x", echo=True)           # ATE1, as the module starts
    emulator.run_scenario(str(scenario))
    for line in ("AT", "AT+CSQ", "AT+CGMR", "AT+CSQ"):
        host.at(line)
    host.read_until(b"+QIND: PB DONE\r\n")
    host.at("AT+CPIN?")
    host.at("AT+CGMR")
    dump = bytes(host.transcript)
    assert dump == (b"AT\r\r\nOK\r\n"
                    b"AT+CSQ\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
                    b'AT+CGMR\r\r\n+CMTI: "SM",3\r\n\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n'
                    b"AT+CSQ\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
                    b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n"
                    b"\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"
                    b"AT+CPIN?\r\r\n+CPIN: READY\r\n\r\nOK\r\n"
                    b"AT+CGMR\r\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n"), dump
    path = tmp_path / "dump.log"
    path.write_bytes(dump)
    assert _replay(path, "--scenario", str(scenario)) == (0, "replayed 6 lines: no difference\n")
    rc, text = _replay(path)
    assert rc == 1 and text == ("first difference: step 3 (AT+CGMR):\n"
                                "  expected: ['+CMTI: \"SM\",3', 'EC25EFAR06A06M4G', 'OK']\n"
                                "  got:      ['EC25EFAR06A06M4G', 'OK']\n"), text


# == (4) the clock, a control reboot and certificate dates ==========================================
def _trust_and_open(host: Host, ca_pem: bytes, ignorelocaltime: int | None) -> bytes:
    if b"ca.pem" not in host.at('AT+QFLST="RAM:*"'):
        assert host.upload("RAM:ca.pem", ca_pem).endswith(OK)
    cfg = 'AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"RAM:ca.pem"'
    if ignorelocaltime is not None:
        cfg += ';+QSSLCFG="ignorelocaltime",1,%d' % ignorelocaltime
    assert host.at(cfg) == OK
    assert host.at('AT+QSSLOPEN=1,1,4,"www.iottest.work",443,0') == OK
    return host.read_until(re.compile(rb"\r\n\+QSSLOPEN: 4,-?\d+\r\n"))


def test_each_modem_keeps_its_own_clock_across_a_control_reboot_and_certificates_follow_it(
        emulator, open_modem, pki):
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = pki.issue_window("h7-window", now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
    with TlsServer(leaf, mode="echo") as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.address[1])
        (h0, _), (h1, _) = open_modem("ec2x"), open_modem("ec2x")
        assert h1.at('AT+CCLK="99/01/01,00:00:00+00"') == OK
        clocks = [emulator.control("state", modem=i)["clock"] for i in (0, 1)]
        assert clocks[1].startswith("99/01/01,00:00:0") and clocks[1].endswith("+00")
        assert not clocks[0].startswith("99/") and clocks[0].endswith("+32")     # the computer's, +08:00
        assert re.fullmatch(rb'\r\n\+CCLK: "\d\d/\d\d/\d\d,\d\d:\d\d:\d\d\+32"\r\n\r\nOK\r\n', h0.at("AT+CCLK?"))
        assert emulator.control("reboot", modem=1) == {"ok": True}
        assert h1.read_until(b"+QIND: PB DONE\r\n").startswith(b"\r\nRDY\r\n")
        assert h1.at("ATE0").endswith(OK)
        # the RTC ran on through the restart (behaviour.md "Identity, network, clock")
        assert re.fullmatch(rb'\r\n\+CCLK: "99/01/01,00:00:0\d\+00"\r\n\r\nOK\r\n', h1.at("AT+CCLK?"))
        assert emulator.control("state", modem=1)["clock"].startswith("99/01/01,00:00:0")
        for h in (h0, h1):
            assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        # the restart put AT+QSSLCFG back to its defaults: ignorelocaltime 1, the dates not looked at
        assert h1.at('AT+QSSLCFG="ignorelocaltime",1') == b'\r\n+QSSLCFG: "ignorelocaltime",1,1\r\n\r\nOK\r\n'
        assert _trust_and_open(h1, pki.ca.cert_pem, None) == b"\r\n+QSSLOPEN: 4,0\r\n"
        assert h1.at("AT+QSSLCLOSE=4") == OK
        # with the dates checked the leaf is expired at the modem's 2099 clock: 566 (reason not logged here)
        assert _trust_and_open(h1, pki.ca.cert_pem, 0) == b"\r\n+QSSLOPEN: 4,566\r\n"
        # the neighbour, at the computer's time, takes the very same server with the dates checked
        assert _trust_and_open(h0, pki.ca.cert_pem, 0) == b"\r\n+QSSLOPEN: 4,0\r\n"
        assert h0.at("AT+QSSLCLOSE=4") == OK


# == (5) registration lost on one modem of three ======================================================
def test_registration_lost_on_one_modem_of_three_is_seen_by_its_host_only(emulator, open_modem):
    with TcpServer("echo") as echo:
        emulator.router.add_map("tcp.example", 9000, "127.0.0.1", echo.port)
        hosts = [open_modem("ec2x")[0] for _ in range(3)]
        for h in hosts:
            assert h.at("AT+CREG=1;+CGREG=1;+CEREG=1") == OK
            assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert h.at('AT+QIOPEN=1,0,"TCP","tcp.example",9000,0,1') == OK
            assert h.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        assert emulator.control("register", modem=1, stat=0) == {"ok": True}
        assert hosts[1].read_until(b'+QIURC: "closed",0\r\n') == (
            b'\r\n+CREG: 0\r\n\r\n+CGREG: 0\r\n\r\n+CEREG: 0\r\n'
            b'\r\n+QIURC: "pdpdeact",1\r\n\r\n+QIURC: "closed",0\r\n')
        regs = [emulator.control("state", modem=i)["registration"] for i in range(3)]
        assert [r["stat"] for r in regs] == [1, 0, 1], regs
        assert emulator.control("register", modem=1, stat=1) == {"ok": True}
        assert hosts[1].read_until(b"+CEREG: 1\r\n") == b"\r\n+CREG: 1\r\n\r\n+CGREG: 1\r\n\r\n+CEREG: 1\r\n"
        assert hosts[1].at("AT+QIACT?") == OK                     # the context stays down
        for h in (hosts[0], hosts[2]):
            h.write(b"AT+QISEND=0,4\r")
            assert h.read_until(b"> ") == b"\r\n> "
            h.write(b"ping")
            assert h.read_until(b"ping") == b'\r\nSEND OK\r\n\r\n+QIURC: "recv",0,4\r\nping'
            assert h.quiet_for(0.2) == b"\r\n"
        assert hosts[1].quiet_for(0.2) == b""
        for h in (hosts[0], hosts[2]):
            assert h.transcript.count(b"REG") == 0


# == (6) send_fail armed while online ================================================================
def test_send_fail_armed_while_online_spares_the_stream_and_fails_the_next_send(emulator, open_modem, echo):
    host, _ = open_modem("ec2x")
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at('AT+QSSLOPEN=1,1,4,"echo.example",443,2') == b"\r\nCONNECT\r\n"
    assert emulator.control("send_fail", socket=4, count=1) == {"ok": True}
    host.write(b"online!")
    assert host.read_exactly(7) == b"online!"            # the stream is no AT+QSSLSEND: untouched
    time.sleep(1.1)
    host.write(b"+++")
    time.sleep(1.1)
    assert host.read_until(OK) == OK
    assert host.send_data(4, b"lost!") == b"\r\nSEND FAIL\r\n"
    assert host.send_data(4, b"kept!") == b"\r\nSEND OK\r\n"
    assert host.quiet_for(0.3) == b""                    # the echo waits for ATO
    assert host.at("ATO") == b"\r\nCONNECT\r\n"
    assert host.read_exactly(5) == b"kept!"
    assert host.quiet_for(0.3) == b""                    # "lost!" never reached the server
    conn = echo.connections[-1]
    assert bytes(conn.received) == b"online!kept!"


# == (7) the CLI: --count 2, --control, --trace =====================================================
def _ask(path: Path, request: dict) -> dict:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(path))
        client.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(4096)
            assert chunk, data
            data += chunk
    return json.loads(data)


def _qisend(host: Host, data: bytes) -> bytes:
    host.write(b"AT+QISEND=0,%d\r" % len(data))
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data)
    return host.read_until(re.compile(rb"SEND (OK|FAIL)\r\n"))


def test_cli_count_2_a_control_send_fail_on_modem_1_is_traced_shown_and_replayed(tmp_path):
    ctl, trace = tmp_path / "ctl.sock", tmp_path / "field.trace"
    with TcpServer("echo") as server:
        proc = start("--offline", "--count", "2", "--link", str(tmp_path / "m-{n}"),
                     "--state-dir", str(tmp_path / "st"), "--control", str(ctl), "--trace", str(trace),
                     "--route", f"collector.example:9000=127.0.0.1:{server.port}")
        hosts: list[Host] = []
        try:
            devs = [proc.stdout.readline().strip() for _ in range(2)]
            assert devs == [str(tmp_path / "m-0"), str(tmp_path / "m-1")], devs
            hosts = [Host(d) for d in devs]
            for h in hosts:
                h.write(b"ATE0\r")
                assert h.read_until(b"OK\r\n").endswith(b"\r\nOK\r\n")
                assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
                assert h.at('AT+QIOPEN=1,0,"TCP","collector.example",9000,0,1') == OK
                assert h.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            assert _ask(ctl, {"op": "send_fail", "modem": 1, "socket": 0, "count": 1}) == {"ok": True}
            assert _ask(ctl, {"op": "send_fail", "modem": 2, "socket": 0}) == {
                "ok": False, "error": "no modem 2 (there are 2)"}
            for h, first in ((hosts[0], b"\r\nSEND OK\r\n"), (hosts[1], b"\r\nSEND FAIL\r\n")):
                assert _qisend(h, b"first") == first
                if first.endswith(b"SEND OK\r\n"):
                    assert h.read_until(b"first\r\n") == b'\r\n+QIURC: "recv",0,5\r\nfirst\r\n'
                assert _qisend(h, b"again") == b"\r\nSEND OK\r\n"
                h.seen(b"again")
            assert hosts[0].transcript.count(b'+QIURC: "recv",0,5') == 2
            assert hosts[1].transcript.count(b'+QIURC: "recv",0,5') == 1
            for h in hosts:
                h.quiet_for(0.2)
                assert h.at("AT+QICLOSE=0") == OK
        finally:
            for h in hosts:
                h.close()
            rc = stop(proc)
        assert rc == 0
    # trace show: modem 1's SEND FAIL, modem 0's none
    code, shown1 = _show(trace, "--modem", "1")
    assert code == 0 and "SEND FAIL" in shown1
    code, shown0 = _show(trace, "--modem", "0")
    assert code == 0 and "SEND FAIL" not in shown0 and "SEND OK" in shown0
    # replay: modem 0 as recorded; modem 1's fault came from the control socket, which the trace
    # cannot replay: its first difference is that send; a scenario standing for it replays it
    rc, text = _replay(trace, "--modem", "0")
    assert rc == 0 and "no difference" in text, text
    rc, text = _replay(trace, "--modem", "1")
    assert rc == 1 and "SEND FAIL" in text and "SEND OK" in text, text
    scenario = tmp_path / "field.toml"
    scenario.write_text('[[step]]\nwhen = { command = "+QISEND", socket = 0 }\nop = "send_fail"\nsocket = 0\n')
    rc, text = _replay(trace, "--modem", "1", "--scenario", str(scenario))
    assert rc == 0 and "no difference" in text, text


# == (8) a raw dump with a URC between the echoed characters of a command ===========================
def test_a_raw_dump_with_a_urc_between_the_echoed_characters_replays_with_its_scenario(tmp_path, emulator, open_modem):
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("AT") == b"AT\r\r\nOK\r\n"
    host.write(b"AT+CS")
    assert host.read_until(b"AT+CS") == b"AT+CS"
    assert emulator.control("urc", text='+CMTI: "SM",3') == {"ok": True}
    assert host.read_until(b'+CMTI: "SM",3\r\n') == b'\r\n+CMTI: "SM",3\r\n'
    host.write(b"Q\r")
    assert host.read_until(OK) == b"Q\r\r\n+CSQ: 24,99\r\n\r\nOK\r\n"
    assert host.at("AT+CGMR") == b"AT+CGMR\r\r\nEC25EFAR06A06M4G\r\n\r\nOK\r\n"
    path = tmp_path / "dump.log"
    path.write_bytes(bytes(host.transcript))
    scenario = tmp_path / "urc.toml"        # the field URC, as the host's AT+CSQ arrives
    scenario.write_text('[[step]]\nwhen = { command = "+CSQ" }\nop = "urc"\ntext = \'+CMTI: "SM",3\'\n')
    assert _replay(path, "--scenario", str(scenario)) == (0, "replayed 3 lines: no difference\n")


# == (9) a trace across a host restart with a parked transparent connection =========================
def test_a_trace_across_a_restart_with_a_parked_transparent_connection_replays(
        tmp_path, emulator, open_modem, pki):
    from tests.e2e import replay_support as rs
    trace = tmp_path / "restart.trace"
    with TlsServer(pki.server, mode="echo") as server:
        emulator.router.add_map("www.iottest.work", 443, "127.0.0.1", server.address[1])
        host, _ = open_modem("ec2x", trace=str(trace))
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert host.upload("UFS:ca.pem", pki.ca.cert_pem).endswith(OK)
        cfg = 'AT+QSSLCFG="seclevel",1,1;+QSSLCFG="cacert",1,"UFS:ca.pem"'
        assert host.at(cfg) == OK
        assert host.at('AT+QSSLOPEN=1,1,4,"www.iottest.work",443,2') == b"\r\nCONNECT\r\n"
        host.write(b"hello")
        assert host.read_exactly(5) == b"hello"
        time.sleep(1.1)
        host.write(b"+++")
        time.sleep(1.1)
        assert host.read_until(OK) == OK
        assert host.send_data(4, b"parked") == b"\r\nSEND OK\r\n"      # its echo waits for ATO ...
        time.sleep(0.2)
        assert host.at("AT+CFUN=1,1") == OK                           # ... and the restart loses it
        assert host.read_until(b"+QIND: PB DONE\r\n").startswith(b"\r\nRDY\r\n")
        assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
        assert host.at("ATO") == b"\r\nNO CARRIER\r\n"
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        assert host.at(cfg) == OK                                     # (the restart reset them)
        assert host.at('AT+QSSLOPEN=1,1,4,"www.iottest.work",443,0') == OK
        assert host.read_until(b"+QSSLOPEN: 4,0\r\n") == b"\r\n+QSSLOPEN: 4,0\r\n"
        assert host.send_data(4, b"again") == b"\r\nSEND OK\r\n"
        assert host.read_until(b'"recv",4\r\n') == b'\r\n+QSSLURC: "recv",4\r\n'
        assert host.at("AT+QSSLRECV=4,100") == b"\r\n+QSSLRECV: 5\r\nagain\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=4") == OK
        rs.flush(emulator)
    rc, text = _replay(trace, "--max-gap", "1.5")
    assert rc == 0 and "no difference" in text, text
    # the second connection's echo edited: named
    changed = rs.changed(tmp_path, trace, lambda r: r.get("kind") == "received" and r.get("data") == "again",
                         lambda r: r | {"data": "agaiN"})
    rc, text = _replay(changed, "--max-gap", "1.5")
    assert rc == 1 and "first difference" in text and "agaiN" in text, text


# == (10) an existing, world-readable --trace file ===================================================
def test_an_existing_world_readable_trace_file_is_made_private_or_warned_about(tmp_path):
    import stat as st_mod

    from tests.e2e.cli_support import Cli
    trace, keylog = tmp_path / "field.trace", tmp_path / "keys.log"
    for path in (trace, keylog):
        path.write_text("")
        path.chmod(0o644)                    # made by `touch` under umask 022, or copied
    cli = Cli(tmp_path, "--trace", str(trace), "--keylog", str(keylog))
    host = Host(cli.dev)
    try:
        host.write(b"ATE0\r")
        assert host.read_until(b"OK\r\n").endswith(b"\r\nOK\r\n")
        key = b"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"
        assert host.upload("UFS:client.key", key) == b"\r\n+QFUPL: %d,%x\r\n\r\nOK\r\n" % (len(key), _xor_checksum(key))
    finally:
        host.close()
        cli.stop()
    log = cli.log_path.read_text(errors="replace")
    assert re.search(r"key log \S+ has mode 0644", log), log        # the key log's case: warned
    assert "SECRET" in trace.read_text()
    mode = st_mod.S_IMODE(trace.stat().st_mode)
    warned = re.search(r"trace \S+ has mode 0644", log)
    assert mode & 0o077 == 0 or warned, (oct(mode), log)


# == (11) a --count run's scenario aimed at modem 1, replayed with --modem 1 ========================
def test_a_count_runs_scenario_aimed_at_modem_1_replays_that_modems_trace(tmp_path):
    trace, scenario = tmp_path / "field.trace", tmp_path / "field.toml"
    scenario.write_text('[[step]]\nwhen = { command = "+QISEND", socket = 0 }\nmodem = 1\n'
                        'op = "send_fail"\nsocket = 0\n')
    with TcpServer("echo") as server:
        proc = start("--offline", "--count", "2", "--link", str(tmp_path / "m-{n}"),
                     "--state-dir", str(tmp_path / "st"), "--scenario", str(scenario), "--trace", str(trace),
                     "--route", f"collector.example:9000=127.0.0.1:{server.port}")
        hosts: list[Host] = []
        try:
            hosts = [Host(proc.stdout.readline().strip()) for _ in range(2)]
            for h in hosts:
                h.write(b"ATE0\r")
                assert h.read_until(b"OK\r\n").endswith(b"\r\nOK\r\n")
                assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
                assert h.at('AT+QIOPEN=1,0,"TCP","collector.example",9000,0,1') == OK
                assert h.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
            for h, first in ((hosts[0], b"\r\nSEND OK\r\n"), (hosts[1], b"\r\nSEND FAIL\r\n")):
                assert _qisend(h, b"first") == first
                if first.endswith(b"SEND OK\r\n"):
                    assert h.read_until(b"first\r\n") == b'\r\n+QIURC: "recv",0,5\r\nfirst\r\n'
                assert _qisend(h, b"again") == b"\r\nSEND OK\r\n"
                h.seen(b"again")
                h.quiet_for(0.2)
        finally:
            for h in hosts:
                h.close()
            rc = stop(proc)
        assert rc == 0
    rc, text = _replay(trace, "--modem", "1")              # without the fault: named
    assert rc == 1 and "SEND FAIL" in text, text
    rc, text = _replay(trace, "--modem", "1", "--scenario", str(scenario))
    assert rc == 0 and "no difference" in text, text


# == (12) network faults aimed at one modem of three ==================================================
def test_net_latency_and_open_faults_on_modem_1_leave_its_neighbours_at_loopback_speed(emulator, open_modem):
    """All three on manual time: modem 1's modem-wide 300 ms latency holds its echo until its own
    clock moves 0.6 s; modems 0 and 2 (whose clocks never move) get theirs at once.  Then
    connect_refuse and dns_fail for modem 1: its next two opens fail 566 / 565, the neighbours'
    opens of the same name succeed."""
    with TcpServer("echo") as server:
        emulator.router.add_map("tcp.example", 9000, "127.0.0.1", server.port)
        modems = [open_modem("ec2x", manual_time=True) for _ in range(3)]
        hosts = [h for h, _ in modems]
        for h in hosts:
            assert h.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
            assert h.at('AT+QIOPEN=1,0,"TCP","tcp.example",9000,0,1') == OK
            assert h.read_until(b"+QIOPEN: 0,0\r\n") == b"\r\n+QIOPEN: 0,0\r\n"
        assert emulator.control("net", modem=1, latency_ms=300) == {"ok": True}
        for h in hosts:
            assert _qisend(h, b"ping") == b"\r\nSEND OK\r\n"
        for h in (hosts[0], hosts[2]):
            assert h.read_until(b"ping") == b'\r\n+QIURC: "recv",0,4\r\nping'
        assert hosts[1].quiet_for(0.3) == b""
        advance = emulator.advancer(modems[1][1], hosts[1])
        advance(0.3)
        assert hosts[1].quiet_for(0.2) == b""                         # the echo is on its way back
        advance(0.3)
        assert hosts[1].read_until(b"ping") == b'\r\n+QIURC: "recv",0,4\r\nping'
        for h in hosts:
            assert h.quiet_for(0.1) == b"\r\n"                        # (the pushed data's line end)
        assert emulator.control("net", modem=1) == {"ok": True}
        assert emulator.control("connect_refuse", modem=1) == {"ok": True}
        assert emulator.control("dns_fail", modem=1) == {"ok": True}
        for cid in (1, 2):
            for i, h in enumerate(hosts):
                assert h.at('AT+QIOPEN=1,%d,"TCP","tcp.example",9000,0,0' % cid) == OK
                want = {0: b"0", 1: b"565" if cid == 1 else b"566", 2: b"0"}[i]   # (dns first: the name)
                assert h.read_until(re.compile(rb"\+QIOPEN: %d,\d+\r\n" % cid)).endswith(
                    b"+QIOPEN: %d,%s\r\n" % (cid, want)), (i, cid)
