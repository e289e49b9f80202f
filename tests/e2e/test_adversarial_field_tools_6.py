"""Adversarial tests of the field tools, sixth pass (not repeating test_adversarial_field_tools.py,
_2 ... _5, _fuzz, test_adversarial_replay_fidelity*.py, test_review_replay_changes*.py,
test_adversarial_plugin_users.py, test_adversarial_many_modems_isolation.py).

Covered here:

- host AT logs (`>> AT` / `<< OK`) CAPTURED from a live modem (EC2x and ML302) and written in
  the odd forms real loggers produce: LF, CR LF, CR CR LF with blank "<<" lines and trailing
  blanks, a raw `cat` dump of an echo-on ML302, the echo lines a logger of every received line
  keeps, binary upload payloads, a multi-line PEM upload, a UTF-8 BOM, a log cut after its last
  command, a line missing in the middle, timestamps / TX-RX prefixes / junk (exit 2), an ML302
  log replayed on the default (EC2x) profile, a log replayed with a scenario and --ignore;
- the control socket: a client that floods requests and never reads its answers (a second
  client and the host are not held up), a request written across two clients' writes
  byte-interleaved, a client that hangs up mid-request (nothing of the half request runs),
  forty clients resetting (SO_LINGER 0) right after their requests;
- faults at awkward moments: `send_fail` across an ESC-cancelled send and a refused send;
  `drop` and `pdp_deact` while "+++" waits for its closing guard time (EC2x), a `drop` of an
  ML302 transparent connection in the same place, ML302 `send_fail` and `drop` in buffer mode,
  `dns_fail` / `connect_refuse` on a transparent open (both profiles: exact failure answers);
- twenty modems in one process: one rebooted in the middle of an upload, one whose host
  hangs up in a data prompt, one in uart_noise, one faulted with `slow` -- the other sixteen
  answer exactly, and `state` of each names its own;
- the pytest plugin used by a third-party ML302 test file (a tmp_path project run by a
  subprocess pytest): QSECWRITE of the fixture's CA, an open to `tls_server`, a `send_fail`
  and a `drop` from `modem.control`, exact bytes; a failing test shows the ML302 trace tail.

Bugs found, fixed in emulator/tools/trace.py parse_at_log / replay_at_log (the plain AT log
replay): echo lines in a log, payload bytes str.splitlines() breaks on, a multi-line upload
(at_log_payload gives its lines the line ends the command's length says), a UTF-8 BOM, a log
cut after its last command.

Every name dialled is routed to 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.tools.control import ControlServer
from tests.e2e import replay_support as rs

ROOT = Path(__file__).resolve().parents[2]
HOST = "echo.example"           # routed to the `echo` fixture's server (tests/conftest.py)
OK = b"\r\nOK\r\n"


# == helpers =========================================================================================
def _lines(out: bytes) -> list[str]:
    return [x for x in out.decode("latin-1").split("\r\n") if x.strip()]


def _capture(host, steps) -> list[str]:
    """Run `steps` on a live modem and write what a host logger writes: '>> <sent>' then one
    '<< <line>' per answer line.  A step is a command line, or (command, data) for a data
    phase: the prompt line, then the data line (Ctrl+Z appended for a "> " prompt)."""
    log: list[str] = []
    for step in steps:
        if isinstance(step, tuple):
            command, data = step
            host.write(command + "\r")
            prompt = host.read_until(re.compile(rb"> |CONNECT\r\n"))
            log.append(">> " + command)
            log += ["<< " + x for x in _lines(prompt)]
            host.write(data + (b"\x1a" if prompt.endswith(b"> ") else b""))
            out = host.read_until(re.compile(rb"(OK|ERROR)\r\n"))
            log.append(">> " + data.decode("latin-1"))
        else:
            out = host.at(step)
            log.append(">> " + step)
        out += host.quiet_for(0.15)          # (URCs after the final result: ML302 CLOSE OK)
        log += ["<< " + x for x in _lines(out)]
    return log


ML302_STEPS = [
    "AT+QSECDEL=0",
    ("AT+QSECWRITE=0", b"-----BEGIN CERTIFICATE-----MIIBxyz"),
    "AT+QSECREAD=0",
    "AT+QSSLCLOSE=0",
    "AT+QSSLSTATE",
    "AT+QSECWRITE=?",
    'AT+QSSLCFG="sslversion",0,4',
    'AT+QSSLCFG="sslversion",0',
    "AT+CGMM",
]


@pytest.fixture
def ml302_log(open_modem):
    """An ML302 session's host log, as captured: ATE0 (its echo not logged), then ML302_STEPS."""
    host, _ = open_modem("ml302", echo=True)
    first = host.at("ATE0")
    assert first == b"ATE0\r\r\nOK\r\n"           # the echo, then the answer
    return [">> ATE0", "<< OK"] + _capture(host, ML302_STEPS)


def _write_log(tmp_path, name: str, lines: list[str], end: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(("".join(x + end for x in lines)).encode("latin-1"))
    return path


# == plain AT logs ===================================================================================
def test_the_captured_ml302_log_is_what_the_manual_shows(ml302_log):
    """The capture itself (the other log tests rely on it)."""
    assert ml302_log[:8] == [">> ATE0", "<< OK", ">> AT+QSECDEL=0", "<< OK", ">> AT+QSECWRITE=0", "<< > ",
                             ">> -----BEGIN CERTIFICATE-----MIIBxyz", "<< +QSECWRITE: 34,1e58"]
    assert ml302_log[ml302_log.index(">> AT+QSSLCLOSE=0"):][:3] == [">> AT+QSSLCLOSE=0", "<< OK", "<< 0,CLOSE OK"]
    assert '<< +QSSLSTATE: "IP INITIAL"' in ml302_log


@pytest.mark.parametrize("style", ["lf", "crlf", "cr_cr_lf_blank_lines_and_trailing_blanks"])
def test_a_captured_ml302_log_in_each_line_end_style_replays(tmp_path, capsys, ml302_log, style):
    if style == "lf":
        path = _write_log(tmp_path, "ml302.log", ml302_log)
    elif style == "crlf":
        path = _write_log(tmp_path, "ml302.log", ml302_log, "\r\n")
    else:
        # a logger that appends "\n" to a line still ending in "\r", logs empty lines, pads
        lines = []
        for x in ml302_log:
            lines.append(x + ("   " if x.startswith("<<") else "") + "\r\r")
            if x.startswith("<< OK"):
                lines.append("<< ")
        path = _write_log(tmp_path, "ml302.log", lines)
    code, out = rs.replay(capsys, path, "--profile", "ml302")
    assert (code, out.strip()) == (0, f"replayed {len(ML302_STEPS) + 2} lines: no difference")


def test_a_raw_serial_dump_of_an_echo_on_ml302_replays(tmp_path, capsys, open_modem):
    """`cat /dev/ttyUSB2 > dump` of a session at the power-on ATE1: echoes ending in CR CR LF,
    multi-line answers, a URC-like line after OK (CLOSE OK): a terminal capture."""
    host, _ = open_modem("ml302", echo=True)
    raw = b""
    for command in ("AT+CMEE=2", "AT+QSECREAD=1", "ATI", "AT+QSSLCLOSE=1", 'AT+QSSLCFG="sslversion",1'):
        raw += host.at(command) + host.quiet_for(0.15)
    assert raw.startswith(b"AT+CMEE=2\r\r\nOK\r\nAT+QSECREAD=1\r\r\n+CME ERROR: not found\r\nATI\r\r\n")
    assert b"AT+QSSLCLOSE=1\r\r\nOK\r\n\r\n1,CLOSE OK\r\n" in raw
    path = tmp_path / "dump.txt"
    path.write_bytes(raw)
    code, out = rs.replay(capsys, path, "--profile", "ml302")
    assert (code, out) == (0, "replayed 5 lines: no difference\n")


def test_an_ml302_log_replayed_on_the_default_profile_names_its_first_ml302_command(tmp_path, capsys, ml302_log):
    path = _write_log(tmp_path, "ml302.log", ml302_log)
    code, out = rs.replay(capsys, path)
    assert code == 1
    assert out == ("first difference: step 2 (AT+QSECDEL=0):\n"
                   "  expected: ['OK']\n  got:      ['ERROR']\n")


def test_a_log_that_keeps_the_echo_lines_replays(tmp_path, capsys, ml302_log):
    lines = list(ml302_log)
    lines.insert(1, "<< ATE0")                   # the echo of the first command (E1 at power-on)
    path = _write_log(tmp_path, "ml302-echo.log", lines)
    code, out = rs.replay(capsys, path, "--profile", "ml302")
    assert (code, out.strip()) == (0, f"replayed {len(ML302_STEPS) + 2} lines: no difference")


UPLOAD_OK = [b"\x01\x05x\x07yz", b"\x00\xff\x80\x1bA\x7f", b"\t\x7f\xa0\xfe\x1a "]
UPLOAD_SPLIT = [b"\x01\x85x\x0cyz", b"ab\x0bcd\x1c", b"\x1d\x1e\x00\x00"]   # str.splitlines()'s other line breaks


def _upload_log(open_modem, payload: bytes) -> list[str]:
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    return [">> ATE0", "<< OK"] + _capture(host, [
        (f'AT+QFUPL="RAM:blob.bin",{len(payload)}', payload), 'AT+QFLST="RAM:*"'])


@pytest.mark.parametrize("payload", UPLOAD_OK, ids=["ctrl", "nul_ff_esc", "tab_ctrlz"])
def test_a_log_of_a_binary_upload_replays(tmp_path, capsys, open_modem, payload):
    lines = _upload_log(open_modem, payload)
    assert lines[3] == "<< CONNECT" and lines[5].startswith(f"<< +QFUPL: {len(payload)},")
    code, out = rs.replay(capsys, _write_log(tmp_path, "upload.log", lines))
    assert (code, out.strip()) == (0, "replayed 4 lines: no difference")


@pytest.mark.parametrize("payload", UPLOAD_SPLIT, ids=["nel_ff", "vt_fs", "gs_rs"])
def test_a_log_of_a_binary_upload_with_other_line_break_bytes_replays(tmp_path, capsys, open_modem, payload):
    lines = _upload_log(open_modem, payload)
    assert lines[5].startswith(f"<< +QFUPL: {len(payload)},")
    code, out = rs.replay(capsys, _write_log(tmp_path, "upload.log", lines))
    assert (code, out.strip()) == (0, "replayed 4 lines: no difference")


CMEE_LOG = b'>> AT+CMEE=2\r\n<< OK\r\n>> AT+QFDEL="RAM:nofile"\r\n<< +CME ERROR: file not found\r\n'


def test_a_crlf_log_whose_first_command_changes_the_error_format_replays(tmp_path, capsys):
    path = tmp_path / "cmee.log"
    path.write_bytes(CMEE_LOG)
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 2 lines: no difference\n")


def test_a_log_saved_with_a_utf8_bom_replays_its_first_command(tmp_path, capsys):
    path = tmp_path / "cmee-bom.log"
    path.write_bytes(b"\xef\xbb\xbf" + CMEE_LOG)
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 2 lines: no difference\n")


def test_a_log_replayed_with_the_field_sessions_scenario_and_an_ignore(tmp_path, capsys):
    """A URC the field network sent as AT+CSQ arrived (a scenario `when` step) and a clock
    that differs run to run (--ignore): no difference; without the scenario the URC is named."""
    log = tmp_path / "field.log"
    log.write_text('>> ATE0\n<< OK\n>> AT+CSQ\n<< +QIND: "csq",24\n<< +CSQ: 24,99\n<< OK\n'
                   '>> AT+CCLK?\n<< +CCLK: "26/11/30,10:42:07+00"\n<< OK\n')
    scenario = tmp_path / "field.toml"
    scenario.write_text('description = "csq urc"\n[[step]]\nwhen = { command = "+CSQ" }\nop = "urc"\n'
                        'text = "+QIND: \\"csq\\",24"\n')
    ignore = r'"\d\d/\d\d/\d\d,[0-9:+-]+"'
    code, out = rs.replay(capsys, log, "--scenario", str(scenario), "--ignore", ignore)
    assert (code, out) == (0, "replayed 3 lines: no difference\n")
    code, out = rs.replay(capsys, log, "--ignore", ignore)
    assert code == 1
    assert out == ("first difference: step 2 (AT+CSQ):\n"
                   "  expected: ['+QIND: \"csq\",24', '+CSQ: 24,99', 'OK']\n"
                   "  got:      ['+CSQ: 24,99', 'OK']\n")


def test_a_log_missing_an_answer_line_in_the_middle_names_that_step(tmp_path, capsys):
    path = _write_log(tmp_path, "gap.log", [">> ATE0", "<< OK", ">> AT+CMEE=2",   # its OK was lost
                                            ">> AT+CSQ", "<< +CSQ: 24,99", "<< OK"])
    code, out = rs.replay(capsys, path)
    assert code == 1
    assert out == ("first difference: step 2 (AT+CMEE=2):\n"
                   "  expected: []\n  got:      ['OK']\n")


def test_a_log_cut_after_its_last_command_replays_as_far_as_it_goes(tmp_path, capsys):
    path = tmp_path / "cut.log"
    path.write_bytes(b">> ATE0\n<< OK\n>> AT+CMEE=2\n<< OK\n>> AT+CSQ")     # no line end either
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 3 lines: no difference\n")
    # the same log with a wrong answer before the cut still differs there
    path.write_bytes(b">> ATE0\n<< OK\n>> AT+CMEE=2\n<< ERROR\n>> AT+CSQ")
    code, out = rs.replay(capsys, path)
    assert (code, out) == (1, "first difference: step 2 (AT+CMEE=2):\n"
                              "  expected: ['ERROR']\n  got:      ['OK']\n")


@pytest.mark.parametrize("data, command, sent", [
    ("ab\ncd", 'AT+QFUPL="RAM:x",6', b"ab\ncd\n"),
    ("ab\ncd", 'AT+QFUPL="RAM:x",8', b"ab\r\ncd\r\n"),
    ("a\nb\nc", 'AT+QFUPL="RAM:x",7,60', b"a\r\nb\r\nc"),
    ("ab\ncd", 'AT+QFUPL="RAM:x",5', b"ab\ncd"),
    ("ab\ncd", 'AT+QSSLSEND=1', b"ab\ncd\n"),            # no length: LF after each line
    ("\x01\x85x", 'AT+QFUPL="RAM:x",9', b"\x01\x85x"),   # one line: as logged
])
def test_a_logged_payload_gets_the_line_ends_its_length_says(data, command, sent):
    from emulator.tools.trace import at_log_payload
    assert at_log_payload(command, data) == sent


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_log_of_a_multi_line_pem_upload_replays(tmp_path, capsys, open_modem, pki, eol):
    """A PEM CA uploaded with AT+QFUPL, one '>>' line per PEM line (README's own upload), its
    line ends LF (a Linux host) or CR LF (a Windows host): the log shows the same lines."""
    pem = pki.ca.cert_pem.replace(b"\n", eol)
    host, _ = open_modem("ec2x", echo=True)
    assert host.at("ATE0") == b"ATE0\r\r\nOK\r\n"
    host.write(f'AT+QFUPL="RAM:ca.pem",{len(pem)}\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(pem)
    answer = host.read_until(b"OK\r\n")
    assert answer == b"\r\n" + _checksum_line(pem) + b"\r\n\r\nOK\r\n"
    lines = [">> ATE0", "<< OK", f'>> AT+QFUPL="RAM:ca.pem",{len(pem)}', "<< CONNECT"]
    lines += [">> " + x for x in pem.decode().splitlines()]
    lines += ["<< " + x for x in _lines(answer)] + ['>> AT+QFLST="RAM:ca.pem"',
                                                    f'<< +QFLST: "RAM:ca.pem",{len(pem)}', "<< OK"]
    code, out = rs.replay(capsys, _write_log(tmp_path, "pem.log", lines, eol.decode()))
    assert (code, out) == (0, "replayed 4 lines: no difference\n")


@pytest.mark.parametrize("text", [
    "[10:42:07.311] >> ATE0\n[10:42:07.320] << OK\n",
    "2026-11-30 10:42:07,311 TX: ATE0\n2026-11-30 10:42:07,320 RX: OK\n",
    "\x00\x00\x00\n\xff\xfe\n",
    "",
])
def test_a_log_in_a_format_replay_cannot_read_is_exit_2_with_one_line(tmp_path, capsys, text):
    path = tmp_path / "odd.log"
    path.write_bytes(text.encode("latin-1"))
    code, out = rs.replay(capsys, path)
    assert (code, out) == (2, "modem-emulator replay: no commands found (expected '>> AT...' / '<< OK' "
                              "lines or a terminal capture)\n")


# == the control socket ===============================================================================
@pytest.fixture
def ctl(tmp_path):
    """(BackgroundEmulator with one EC2x on manual time, its control socket's path, a Host)."""
    path = tmp_path / "ctl.sock"
    with BackgroundEmulator(offline=True) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        emu.run(port.port.look_for_host)
        assert host.at("ATE0").endswith(OK)
        server = ControlServer(emu.emulator, path)
        emu.call(server.start())
        try:
            yield emu, path, host
        finally:
            host.close()
            emu.call(server.close())


def _client(path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    return s


def _answer(s: socket.socket, buf: bytearray) -> dict:
    while b"\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"closed; had {bytes(buf[:200])!r}"
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def test_a_client_that_floods_and_never_reads_holds_up_nobody(ctl):
    """20,000 `state` requests (answers far past any socket buffer) from a client that never
    reads: its own handler waits on drain; a second client, the host and the modem go on."""
    emu, path, host = ctl
    flooder = _client(path)
    flooder.setblocking(False)
    blob = b'{"op": "state"}\n' * 20000
    sent = 0
    deadline = time.monotonic() + 5
    while sent < len(blob) and time.monotonic() < deadline:
        try:
            sent += flooder.send(blob[sent:])
        except BlockingIOError:
            time.sleep(0.01)
    assert sent > 64 * 1024                     # the server has taken far more than one answer's worth
    other = _client(path)
    buf = bytearray()
    try:
        t0 = time.monotonic()
        other.sendall(b'{"op": "urc", "text": "+QIND: \\"while flooded\\""}\n{"op": "dtr", "level": 1}\n')
        assert _answer(other, buf) == {"ok": True}
        assert _answer(other, buf) == {"ok": True}
        assert time.monotonic() - t0 < 3
        assert host.read_until(b'"while flooded"\r\n', timeout=3) == b'\r\n+QIND: "while flooded"\r\n'
        assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
        # the flooder hangs up in the middle of a request line: nothing of it runs
        flooder.setblocking(True)
        flooder.sendall(b'{"op": "urc", "text": "+HALF')
        flooder.close()
        other.sendall(b'{"op": "state"}\n')
        state = _answer(other, buf)
        assert state["ok"] is True and state["dtr"] == 1 and state["mode"] == "COMMAND", state
        assert host.quiet_for(0.3) == b""
    finally:
        other.close()
        flooder.close()


def test_two_clients_interleaving_their_bytes_each_get_their_own_answer(ctl):
    """A's request arrives in three pieces around B's whole one: B's URC goes out first (its
    line ended first), then A's; each client reads only its own answer."""
    emu, path, host = ctl
    a, b = _client(path), _client(path)
    abuf, bbuf = bytearray(), bytearray()
    try:
        a.sendall(b'{"op": "urc", ')
        time.sleep(0.05)
        b.sendall(b'{"op": "urc", "text": "+B: 1"}\n')
        assert _answer(b, bbuf) == {"ok": True}
        a.sendall(b'"text": "+A')
        time.sleep(0.05)
        b.sendall(b'{"op": "nope"}\n')
        assert _answer(b, bbuf)["ok"] is False
        a.sendall(b': 2"}\n')
        assert _answer(a, abuf) == {"ok": True}
        assert host.read_until(b"+A: 2\r\n", timeout=3) == b"\r\n+B: 1\r\n\r\n+A: 2\r\n"
        a.settimeout(0.2)
        with pytest.raises(socket.timeout):
            a.recv(100)                           # exactly one answer for A
    finally:
        a.close()
        b.close()


def test_clients_that_reset_the_connection_right_after_a_request_leave_no_error(ctl, strict_log):
    """Forty clients each write a request and reset their connection at once (SO_LINGER 0):
    each request runs or not, nothing is logged as an error (no "Future exception was never
    retrieved"), and a well-behaved client and the host go on."""
    import struct
    emu, path, host = ctl
    for i in range(40):
        s = _client(path)
        s.sendall(b'{"op": "state"}\n' * 50 + b'{"op": "urc", "text": "+R: %d"}\n' % i)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    good = _client(path)
    buf = bytearray()
    try:
        good.sendall(b'{"op": "urc", "text": "+LAST"}\n')
        assert _answer(good, buf) == {"ok": True}
    finally:
        good.close()
    got = host.read_until(b"+LAST\r\n", timeout=5)
    urcs = re.findall(rb"\r\n\+R: (\d+)\r\n", got)
    assert got == b"".join(b"\r\n+R: %s\r\n" % n for n in urcs) + b"\r\n+LAST\r\n"
    assert [int(n) for n in urcs] == sorted(int(n) for n in urcs)      # in the clients' order
    assert host.at("AT+CGMM") == b"\r\nEC25\r\n\r\nOK\r\n"
    time.sleep(1.2)                      # (the handlers' 1 s wait for a closed stream is over)


# == faults at awkward moments ========================================================================
@pytest.fixture
def ec2x_tls(emulator, open_modem, echo):
    """(host, port): an EC2x on manual time, PDP context 1 active, echo.example routed."""
    host, port = open_modem("ec2x", manual_time=True)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    return host, port


def _open(host, client_id: int, mode: int = 0) -> bytes:
    if mode == 2:
        host.write(f'AT+QSSLOPEN=1,1,{client_id},"{HOST}",443,2\r')
        return host.read_until(re.compile(rb"CONNECT\r\n|ERROR\r\n"), timeout=5)
    assert host.at(f'AT+QSSLOPEN=1,1,{client_id},"{HOST}",443,{mode}') == OK
    return host.read_until(re.compile(f"\\+QSSLOPEN: {client_id},".encode() + rb"-?\d+\r\n"), timeout=5)


def _guarded_plus(emulator, port, host) -> None:
    """The guard time before '+++' (S12, 1 s) passed and '+++' read by the modem; the closing
    guard time not yet."""
    emulator.wait_received(port, host.written)
    emulator.advance(port, 1.1)
    host.write(b"+++")
    emulator.wait_received(port, host.written)


def test_send_fail_survives_an_esc_cancelled_send_and_a_refused_one(emulator, ec2x_tls, echo):
    host, port = ec2x_tls
    assert _open(host, 1) == b"\r\n+QSSLOPEN: 1,0\r\n"
    assert emulator.control("send_fail", socket=1, count=1) == {"ok": True}
    host.write(b"AT+QSSLSEND=1\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"abc\x1b")                                   # ESC: the EC2x cancels with ERROR
    assert host.read_until(b"ERROR\r\n") == b"\r\nERROR\r\n"
    assert host.at("AT+QSSLSEND=1,0") == b"\r\nERROR\r\n"     # no query form on the SSL send
    host.write(b"AT+QSSLSEND=1,3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"one")
    assert host.read_until(b"FAIL\r\n") == b"\r\nSEND FAIL\r\n"
    host.write(b"AT+QSSLSEND=1,3\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(b"two")
    assert host.read_until(b'"recv",1\r\n') == b'\r\nSEND OK\r\n\r\n+QSSLURC: "recv",1\r\n'
    assert echo.wait_received(3) == b"two"
    assert host.at("AT+QSSLRECV=1,100") == b"\r\n+QSSLRECV: 3\r\ntwo\r\n\r\nOK\r\n"


def test_a_drop_while_plus_plus_plus_waits_for_its_guard_time(emulator, ec2x_tls, echo):
    """The connection ends with '+++' read and the closing guard time running: NO CARRIER once,
    no escape OK later, the '+'s never reach the server; the socket waits for QSSLCLOSE."""
    host, port = ec2x_tls
    assert _open(host, 2, mode=2) == b"\r\nCONNECT\r\n"
    host.write(b"data")
    assert echo.wait_received(4) == b"data"
    assert host.read_until(b"data") == b"data"               # the echo server's answer, online
    _guarded_plus(emulator, port, host)
    assert emulator.control("drop", socket=2, how="rst") == {"ok": True}
    assert host.read_until(b"NO CARRIER\r\n", timeout=3) == b"\r\nNO CARRIER\r\n"
    emulator.advance(port, 1.5)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT") == OK
    assert host.at("AT+QSSLSTATE=2").startswith(b'\r\n+QSSLSTATE: 2,"SSLClient","echo.example",443,')
    assert host.at("AT+QSSLSTATE=2").endswith(b',4,1,2,2,"usbmodem",1\r\n\r\nOK\r\n')
    assert bytes(echo.conn.received) == b"data"
    assert host.at("AT+QSSLCLOSE=2") == OK
    assert emulator.control("state")["sockets"] == []


def test_pdp_loss_while_plus_plus_plus_waits_beside_a_buffer_mode_socket(emulator, ec2x_tls, echo):
    host, port = ec2x_tls
    assert _open(host, 1) == b"\r\n+QSSLOPEN: 1,0\r\n"
    assert _open(host, 3, mode=2) == b"\r\nCONNECT\r\n"
    _guarded_plus(emulator, port, host)
    assert emulator.control("pdp_deact", cid=1) == {"ok": True}
    assert host.read_until(b'"closed",1\r\n', timeout=3) == (
        b'\r\nNO CARRIER\r\n\r\n+QIURC: "pdpdeact",1\r\n\r\n+QSSLURC: "closed",1\r\n')
    emulator.advance(port, 1.5)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+QIACT?") == OK
    assert host.at("AT+QSSLCLOSE=1;+QSSLCLOSE=3") == OK
    # the escape that never completed left nothing behind: a new online session works
    assert host.at("AT+QIACT=1") == OK
    assert _open(host, 4, mode=2) == b"\r\nCONNECT\r\n"
    host.write(b"again")
    assert host.read_until(b"again") == b"again"


@pytest.fixture
def ml302_tls(emulator, open_modem, echo):
    host, port = open_modem("ml302", manual_time=True)
    assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
    assert host.at("AT+CGACT=1,1").endswith(OK)
    return host, port


def test_ml302_send_fail_then_drop_in_buffer_mode(emulator, ml302_tls, echo):
    host, port = ml302_tls
    assert host.at(f'AT+QSSLOPEN=0,0,"{HOST}",443,0') == OK
    assert host.read_until(b"+QSSLOPEN: 0,0\r\n", timeout=5) == b"\r\n+QSSLOPEN: 0,0\r\n"
    assert emulator.control("send_fail", socket=0, count=1) == {"ok": True}
    for data, answer in ((b"one", b"\r\nSEND FAIL\r\n"), (b"two", b"\r\nSEND OK\r\n")):
        host.write(b"AT+QSSLSEND=0\r")
        assert host.read_until(b"> ") == b"\r\n> "
        host.write(data + b"\x1a")
        assert host.read_until(re.compile(rb"SEND (OK|FAIL)\r\n")) == answer
    assert echo.wait_received(3) == b"two"
    assert host.read_until(b'"recv",1,0\r\n', timeout=3) == b'\r\n+QSSLURC: "recv",1,0\r\n'
    assert emulator.control("drop", socket=0, how="close") == {"ok": True}
    assert host.read_until(b'"close",0\r\n', timeout=3) == b'\r\n+QSSLURC: "close",0\r\n'
    # the data that came before the close is still there to read
    got = host.at("AT+QSSLRECV=1,0,100")
    assert re.fullmatch(rb'\r\n\+QSSLRECV: [0-9.]+:443,TCP,3\r\ntwo\r\n\r\nOK\r\n', got), got
    assert host.at("AT+QSSLCLOSE=0") == OK
    assert host.read_until(b"CLOSE OK\r\n") == b"\r\n0,CLOSE OK\r\n"


def test_ml302_drop_while_plus_plus_plus_waits_for_its_guard_time(emulator, ml302_tls, echo):
    host, port = ml302_tls
    host.write(f'AT+QSSLOPEN=0,0,"{HOST}",443,1\r')
    assert host.read_until(b"CONNECT\r\n", timeout=5).endswith(b"CONNECT\r\n")
    host.write(b"ping")
    assert host.read_until(b"ping") == b"ping"
    _guarded_plus(emulator, port, host)
    assert emulator.control("drop", socket=0, how="rst") == {"ok": True}
    assert host.read_until(b"NO CARRIER\r\n", timeout=3) == b"\r\nNO CARRIER\r\n"
    emulator.advance(port, 1.5)
    assert host.quiet_for(0.3) == b""
    assert host.at("AT+CGMM").endswith(OK)
    assert bytes(echo.conn.received) == b"ping"


# == twenty modems in one process =====================================================================
EC2X_BOOT = b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"
N_MODEMS = 20
REBOOTED, HUNG_UP, NOISY, SLOW = 5, 9, 13, 17


def _checksum_line(data: bytes) -> bytes:
    from emulator.storage.checksum import format_checksum, xor16
    return f"+QFUPL: {len(data)},{format_checksum(xor16(data), pad=False)}".encode()


def _upload(host, name: str, data: bytes) -> bytes:
    host.write(f'AT+QFUPL="RAM:{name}",{len(data)}\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(data)
    return host.read_until(b"OK\r\n")


def test_twenty_modems_one_rebooted_one_hung_up_one_noisy_one_slow_the_rest_exact(tmp_path, strict_log):
    with BackgroundEmulator(offline=True) as emu:
        ports = [emu.add_modem("ml302" if i % 4 == 3 else "ec2x", state_dir=tmp_path / f"s{i}")
                 for i in range(N_MODEMS)]
        hosts = [Host(p.path) for p in ports]
        try:
            for p, h in zip(ports, hosts):
                emu.run(p.port.look_for_host)
                assert h.at("ATE0") == b"ATE0\r\r\nOK\r\n"
            # modem REBOOTED: in the middle of an upload; HUNG_UP: its host leaves inside one
            hosts[REBOOTED].write('AT+QFUPL="RAM:half.bin",100\r')
            assert hosts[REBOOTED].read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
            hosts[REBOOTED].write(b"x" * 40)
            hosts[HUNG_UP].write('AT+QFUPL="RAM:gone.bin",100\r')
            assert hosts[HUNG_UP].read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
            hosts[HUNG_UP].write(b"y" * 40)
            emu.wait_received(ports[REBOOTED], hosts[REBOOTED].written)
            emu.wait_received(ports[HUNG_UP], hosts[HUNG_UP].written)
            assert emu.control("uart_noise", NOISY, on=True, seed=3) == {"ok": True}
            assert emu.control("slow", SLOW, command="+CGMM", ms=300) == {"ok": True}
            errors: list[str] = []

            def work(i: int) -> None:
                try:
                    h = hosts[i]
                    model = b"ML302" if i % 4 == 3 else b"EC25"
                    for k in range(8):
                        got = h.at("AT+CGMM")
                        if got != b"\r\n" + model + b"\r\n\r\nOK\r\n":
                            errors.append(f"modem {i} round {k}: {got!r}")
                            return
                        if i % 4 != 3:                  # (the ML302 has no AT+QFUPL)
                            data = bytes((i * 31 + k * 7 + j * j) % 256 for j in range(11 + i))
                            got = _upload(h, f"m{i}-{k}.bin", data)
                            if got != b"\r\n" + _checksum_line(data) + b"\r\n\r\nOK\r\n":
                                errors.append(f"modem {i} upload {k}: {got!r}")
                                return
                except Exception as exc:            # (reported below, with the modem's number)
                    errors.append(f"modem {i}: {exc!r}")

            threads = [threading.Thread(target=work, args=(i,)) for i in range(N_MODEMS)
                       if i not in (REBOOTED, HUNG_UP)]
            for t in threads:
                t.start()
            assert emu.control("reboot", REBOOTED, ms=0) == {"ok": True}
            hosts[HUNG_UP].close()
            for t in threads:
                t.join(30)
            assert errors == []
            # the rebooted one: its upload gone without an answer, the boot lines, echo back on
            assert hosts[REBOOTED].read_until(b"PB DONE\r\n", timeout=5) == EC2X_BOOT
            assert hosts[REBOOTED].at("AT+QFLST=\"RAM:*\"") == b'AT+QFLST="RAM:*"\r\r\nOK\r\n'
            # the hung-up one: a new host finds command state, the half upload not stored
            hosts[HUNG_UP] = Host(ports[HUNG_UP].path)
            emu.run(ports[HUNG_UP].port.look_for_host)
            assert hosts[HUNG_UP].at("AT+QFLST=\"RAM:*\"") == b"\r\nOK\r\n"
            # each modem's control state is its own; uploads landed where they were made
            for i in range(N_MODEMS):
                state = emu.control("state", i)
                assert state["ok"] is True and state["profile"] == ("ml302" if i % 4 == 3 else "ec2x")
            listing = hosts[2].at('AT+QFLST="RAM:*"')
            assert listing == b"\r\n" + b"\r\n".join(
                f'+QFLST: "RAM:m2-{k}.bin",13'.encode() for k in range(8)) + b"\r\n\r\nOK\r\n"
            assert emu.control("state", N_MODEMS) == {"ok": False, "error": f"no modem {N_MODEMS} (there are {N_MODEMS})"}
        finally:
            for h in hosts:
                h.close()


# == the pytest plugin in a third-party project ========================================================
USER_TEST = '''
import re
import pytest
import serial


def at(ser, data, until=b"OK\\r\\n"):
    ser.write(data)
    return ser.read_until(until)


@pytest.mark.modem_profile("ml302")
def test_ml302_user_session(modem, tls_server):
    ser = serial.Serial(modem.path, 115200, timeout=5)
    assert at(ser, b"ATE0\\r") == b"ATE0\\r\\r\\nOK\\r\\n"
    assert at(ser, b"AT+QSECWRITE=0\\r", b"> ") == b"\\r\\n> "
    assert at(ser, tls_server.ca_pem + b"\\x1a").startswith(b"\\r\\n+QSECWRITE: %d," % len(tls_server.ca_pem))
    assert at(ser, b'AT+CGDCONT=1,"IP","CMNET";+CGACT=1,1\\r').endswith(b"OK\\r\\n")
    assert at(ser, b'AT+QSSLCFG="seclevel",0,1\\r') == b"\\r\\nOK\\r\\n"
    dial = b'AT+QSSLOPEN=2,0,"%s",%d,0\\r' % (tls_server.host.encode(), tls_server.port)
    assert at(ser, dial, b"+QSSLOPEN: 2,0\\r\\n") == b"\\r\\nOK\\r\\n\\r\\n+QSSLOPEN: 2,0\\r\\n"
    assert modem.control("send_fail", socket=2, count=1) == {"ok": True}
    assert at(ser, b"AT+QSSLSEND=2\\r", b"> ") == b"\\r\\n> "
    assert at(ser, b"lost\\x1a", b"FAIL\\r\\n") == b"\\r\\nSEND FAIL\\r\\n"
    assert at(ser, b"AT+QSSLSEND=2\\r", b"> ") == b"\\r\\n> "
    assert at(ser, b"hello\\x1a", b'"recv",1,2\\r\\n') == b'\\r\\nSEND OK\\r\\n\\r\\n+QSSLURC: "recv",1,2\\r\\n'
    assert tls_server.wait_received(5) == b"hello"
    got = at(ser, b"AT+QSSLRECV=1,2,100\\r")
    assert re.fullmatch(rb"\\r\\n\\+QSSLRECV: [0-9.]+:443,TCP,5\\r\\nhello\\r\\n\\r\\nOK\\r\\n", got), got
    assert modem.control("drop", socket=2, how="rst") == {"ok": True}
    assert ser.read_until(b'"close",2\\r\\n') == b'\\r\\n+QSSLURC: "close",2\\r\\n'
    assert modem.control("drop", socket=2, how="rst")["ok"] is False
    assert at(ser, b"AT+QSSLCLOSE=2\\r", b"CLOSE OK\\r\\n") == b"\\r\\nOK\\r\\n\\r\\n2,CLOSE OK\\r\\n"
    state = modem.control("state")
    assert state["profile"] == "ml302" and state["sockets"] == []
    ser.close()


@pytest.mark.modem_profile("ml302")
def test_ml302_failure_shows_the_trace(modem):
    ser = serial.Serial(modem.path, 115200, timeout=5)
    assert at(ser, b"AT+QSECREAD=1\\r", b"\\r\\n") == b"nothing like this"
'''


def test_the_plugin_in_a_third_party_ml302_project(tmp_path):
    project = tmp_path / "user"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")
    (project / "test_user_ml302.py").write_text(USER_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                           "-p", "no:randomly", str(project)],
                          cwd=project, env=env, capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert re.search(r"^1 failed, 1 passed in ", out, re.M), out
    # the failure shows the trace's tail: the ML302's answer to the command that failed
    assert re.search(r"modem-emulator trace \(\S+modem\.trace, last \d+ lines\)", out), out
    assert re.search(r"m0 start ml302 \(modem0\)", out), out
    assert r"m0 == AT+QSECREAD=1 -> \r\n+CME ERROR: 22\r\n" in out, out
    assert "FAILED test_user_ml302.py::test_ml302_failure_shows_the_trace" in out, out
    assert "trace unreadable" not in out and "Traceback" not in out, out


# == open faults on a transparent-mode open, both profiles ===========================================
@pytest.mark.parametrize("fault, code", [("dns_fail", 565), ("connect_refuse", 566)])
@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_an_open_fault_on_a_transparent_open_then_the_next_open_goes_online(emulator, open_modem, echo,
                                                                            profile, fault, code):
    """EC2x: ERROR and AT+QIGETERROR's code; ML302: `+QSSLOPEN: <ssid>,-1` then ERROR
    (behaviour.md, "Transparent access mode"); the fault counted once, the next open online."""
    host, port = open_modem(profile, manual_time=True)
    if profile == "ec2x":
        assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
        dial = f'AT+QSSLOPEN=1,1,2,"{HOST}",443,2\r'
        failed = b"\r\nERROR\r\n"
    else:
        assert host.at('AT+CGDCONT=1,"IP","CMNET"') == OK
        assert host.at("AT+CGACT=1,1").endswith(OK)
        dial = f'AT+QSSLOPEN=2,0,"{HOST}",443,1\r'
        failed = b"\r\n+QSSLOPEN: 2,-1\r\n\r\nERROR\r\n"
    assert emulator.control(fault, count=1) == {"ok": True}
    host.write(dial)
    assert host.read_until(b"ERROR\r\n", timeout=5) == failed
    if profile == "ec2x":
        errors = {565: b"565,DNS parse failed", 566: b"566,socket connection failed"}
        assert host.at("AT+QIGETERROR") == b"\r\n+QIGETERROR: " + errors[code] + b"\r\n\r\nOK\r\n"
        assert host.at("AT+QSSLCLOSE=2") == OK
    else:
        assert host.at("AT+QSSLCLOSE=2") == OK
        assert host.read_until(b"CLOSE OK\r\n") == b"\r\n2,CLOSE OK\r\n"
    host.write(dial)
    assert host.read_until(b"CONNECT\r\n", timeout=5) == b"\r\nCONNECT\r\n"
    host.write(b"online")
    assert host.read_until(b"online") == b"online"
    assert emulator.control("state")["mode"] == "ONLINE"
