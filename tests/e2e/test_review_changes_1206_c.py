"""Adversarial review of the 2026-12-06 commits on main (56e4bc2..16a550f), the emulator /
tls_engine changes only:

* 4b8fa9a emulator/io/network.py `_looked_up` + Router.remember_answer, netutil: a
  connect_refuse-faulted open looks its name up first; AT+QIDNSGIP's real answer is the
  address later opens show (AT+QISTATE);
* c5916d5 emulator/tools/trace.py parse_at_log / at_log_payload / replay_at_log: plain AT
  log replay (CR/LF-only lines, BOM, echo lines, multi-line payloads after CONNECT / '>',
  a log cut after its last command);
* fab6e0f tls_engine/session.py _pump_read: reads on after a WANT_READ while the input
  shrinks (warning alerts), the empty-record guard, native input_pending;
* 2f99550 emulator/modem/modem.py _restore: ATZ / AT&F emit "ipr" (a paced port switches).

Bugs found, fixed the same day (at_log_payload reads the length from its parameter, _LENGTH_PARAM,
and tries a one-line payload's line ends; _pump_read reads on while a read takes input or
gives data, the blind retries scale with the bytes fed; a restart's restore does not announce
its rate):
* emulator/tools/trace.py at_log_payload: the payload's length is looked for among ALL numbers
  after "=" (`sizes`), so AT+QFUPL's <timeout> or AT+QSSLSEND's connect id can be taken for it
  (a shorter join wins: 'ab\ncd' for AT+QFUPL="RAM:x",8,5 goes out as 5 bytes); and a one-line
  payload (`len(lines) == 1`) never gets the line end its command's size counts ('>> hello' for
  AT+QFUPL=...,6 is sent as 5 bytes) -- a captured upload then does not replay;
* tls_engine/session.py _pump_read, DTLS: Mbed TLS takes a whole datagram from the wrapper's
  input at once, so after a warning no_renegotiation alert (WANT_READ) input_pending is 0 and
  the loop stops -- the records behind the alert in the same datagram stay in Mbed TLS until
  the next datagram comes; without the private names (input_pending None) the 16 blind retries
  stop behind the 17th no_renegotiation alert of one TCP read;
* emulator/modem/modem.py _restore, called by Modem.reset after emit("reset"): a restart whose
  saved AT+IPR differs from the rate in force emits "ipr" and the port is paced at the saved
  rate, not --baud's (docs/behaviour.md: a restart puts the pace back to --baud's rate).

Passing (correct behaviour): a partial record behind a warning alert, an alert split across
segments, close_notify / a fatal alert right behind a warning alert, 200 empty-record +
alert pairs before a partial record, a HelloRequest refused (renegotiation 0) with data behind
it (TLS, buffer and push); DTLS: a warning user_canceled alert or a refused HelloRequest and two
data records in one datagram sealed with the session's keys (both delivered at once); ATZ /
AT&F with AT+IPR on the same line, a saved AT+IPR=0, the ML302; AT+QIDNSGIP's answer shown
for a refused open of the name in another case / with a trailing dot, a --dns entry added
later outranking it, an --offline refused open's made-up address; AT logs with echo lines,
lower-case commands, a cut inside a multi-line payload, an ML302 multi-line QSECWRITE.

Every name dialled is routed to 127.0.0.1, or is "localhost" resolved by the system resolver
(/etc/hosts) on an emulator that is not --offline.
"""
from __future__ import annotations

import contextlib
import re
import threading
import time

import pytest

from emulator.io.app import BackgroundEmulator
from emulator.testing.host import Host
from emulator.tools.trace import at_log_payload, parse_at_log
from tests.e2e import replay_support as rs

OK = b"\r\nOK\r\n"


# == plain AT log replay (c5916d5) =====================================================================
def _lines(out: bytes) -> list[str]:
    return [x for x in out.decode("latin-1").split("\r\n") if x.strip()]


def _write_log(tmp_path, name: str, lines: list[str], end: str = "\n"):
    path = tmp_path / name
    path.write_bytes("".join(x + end for x in lines).encode("latin-1"))
    return path


def _checksum_line(data: bytes) -> str:
    from emulator.storage.checksum import format_checksum, xor16
    return f"+QFUPL: {len(data)},{format_checksum(xor16(data), pad=False)}"


def _upload_log(open_modem, command: str, data: bytes) -> list[str]:
    """A live EC2x (ATE0) uploads `data` with `command`; the host logger's lines: the command,
    CONNECT, the payload's lines (no line ends: a logger shows lines), the answer."""
    host, _ = open_modem("ec2x")
    host.write(command + "\r")
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(data)
    answer = host.read_until(re.compile(rb"(OK|ERROR)\r\n"))
    assert answer == b"\r\n" + _checksum_line(data).encode() + b"\r\n\r\nOK\r\n", answer
    log = [">> ATE0", "<< OK", ">> " + command, "<< CONNECT"]
    log += [">> " + x for x in data.decode("latin-1").splitlines()]
    return log + ["<< " + x for x in _lines(answer)]


def test_parse_joins_payload_lines_after_connect_and_keeps_the_next_command_apart():
    log = ('>> AT+QFUPL="RAM:a",8,5\r\n<< CONNECT\r\n>> ab\r\n>> cd\r\n<< +QFUPL: 8,1234\r\n<< OK\r\n'
           '>> AT+QFLST\r\n<< OK\r\n')
    assert parse_at_log(log) == [('AT+QFUPL="RAM:a",8,5', ["CONNECT"]), ("ab\ncd", ["+QFUPL: 8,1234", "OK"]),
                                 ("AT+QFLST", ["OK"])]


def test_payload_length_is_the_size_parameter_not_the_timeout():
    assert at_log_payload('AT+QFUPL="RAM:x",8,5', "ab\ncd") == b"ab\r\ncd\r\n"


def test_send_payload_length_is_the_length_parameter_not_the_connect_id():
    assert at_log_payload("AT+QSSLSEND=4,7", "ab\nc") == b"ab\r\nc\r\n"
    assert at_log_payload("AT+QSSLSEND=4,6", "ab\nc") == b"ab\nc\n"      # (no join is 6 long: LF after each)


def test_one_line_payload_gets_the_line_end_its_size_counts():
    assert at_log_payload('AT+QFUPL="RAM:x",6', "hello") == b"hello\n"
    assert at_log_payload('AT+QFUPL="RAM:x",7', "hello") == b"hello\r\n"


def test_replay_of_a_crlf_upload_whose_timeout_matches_a_shorter_join(tmp_path, capsys, open_modem):
    log = _upload_log(open_modem, 'AT+QFUPL="RAM:t.txt",8,5', b"ab\r\ncd\r\n")
    assert log[4:6] == [">> ab", ">> cd"]
    code, out = rs.replay(capsys, _write_log(tmp_path, "up.log", log))
    assert (code, out) == (0, "replayed 3 lines: no difference\n")


def test_replay_of_a_one_line_file_upload_with_its_newline(tmp_path, capsys, open_modem):
    log = _upload_log(open_modem, 'AT+QFUPL="RAM:h.txt",6,2', b"hello\n")
    assert log[4:] == [">> hello", "<< " + _checksum_line(b"hello\n"), "<< OK"]
    code, out = rs.replay(capsys, _write_log(tmp_path, "one.log", log))
    assert (code, out) == (0, "replayed 3 lines: no difference\n")


def test_replay_of_a_two_line_lf_upload_with_the_echo_lines_logged(tmp_path, capsys, open_modem):
    """A logger of every received line on an echo-on modem: the command's echo before CONNECT."""
    log = _upload_log(open_modem, 'AT+QFUPL="RAM:e.txt",12', b"line1\nline2\n")
    log.insert(3, '<< AT+QFUPL="RAM:e.txt",12')
    log[0:2] = []                                   # the modem stays at its power-on ATE1
    log += ['>> AT+QFLST="RAM:e.txt"', '<< AT+QFLST="RAM:e.txt"', '<< +QFLST: "RAM:e.txt",12', "<< OK"]
    code, out = rs.replay(capsys, _write_log(tmp_path, "echo.log", log, "\r\n"))
    assert (code, out) == (0, "replayed 3 lines: no difference\n")


def test_a_log_cut_in_the_middle_of_a_multi_line_payload_replays_as_far_as_it_goes(tmp_path, capsys):
    path = tmp_path / "cut.log"
    path.write_bytes(b'>> ATE0\n<< OK\n>> AT+QFUPL="RAM:c.txt",100\n<< CONNECT\n>> first line\n>> second')
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 3 lines: no difference\n")


def test_lowercase_command_with_its_echo_logged_replays(tmp_path, capsys):
    path = _write_log(tmp_path, "lower.log", [">> at+cmee=2", "<< at+cmee=2", "<< OK",
                                              '>> at+qfdel="RAM:none"', '<< at+qfdel="RAM:none"',
                                              "<< +CME ERROR: file not found"])
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 2 lines: no difference\n")


def test_ml302_multi_line_certificate_ended_by_ctrl_z_replays(tmp_path, capsys, open_modem):
    """ML302 AT+QSECWRITE: '> ', a variable-length PEM ended by Ctrl+Z, logged as lines."""
    host, _ = open_modem("ml302")
    pem = b"-----BEGIN CERTIFICATE-----\nMIIBxyzabc\nDEF0123==\n-----END CERTIFICATE-----\n"
    host.write("AT+QSECWRITE=1\r")
    prompt = host.read_until(b"> ")
    host.write(pem + b"\x1a")
    answer = host.read_until(re.compile(rb"(OK|ERROR)\r\n"))
    assert _lines(answer)[0].startswith(f"+QSECWRITE: {len(pem)},"), answer
    log = [">> ATE0", "<< OK", ">> AT+QSECWRITE=1"] + ["<< " + x for x in _lines(prompt)]
    log += [">> " + x for x in pem.decode().splitlines()] + ["<< " + x for x in _lines(answer)]
    read = host.at("AT+QSECREAD=1")
    log += [">> AT+QSECREAD=1"] + ["<< " + x for x in _lines(read)]
    code, out = rs.replay(capsys, _write_log(tmp_path, "sec.log", log), "--profile", "ml302")
    assert (code, out) == (0, "replayed 4 lines: no difference\n")


# == refused opens look the name up; AT+QIDNSGIP's answer is remembered (4b8fa9a) =======================
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'
QISTATE_ADDR = re.compile(rb'\r\n\+QISTATE: 0,"TCP","([\d.]+)",(\d+),\d+,(\d),1,\d+,\d,"usbmodem"\r\n\r\nOK\r\n')


def _online_modem(emu, tmp_path):
    port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
    host = Host(port.path)
    host.line_end = b"\r\n"
    emu.run(port.port.look_for_host)
    assert host.at("ATE0").endswith(OK)
    assert host.at(ATTACH) == OK
    return host, emu.advancer(port, host)


def _refused_open_polled(emu, host, advance, name: str) -> bytes:
    """connect_refuse over a 600 ms round trip on an open of `name`; AT+QISTATE while it opens
    (the address shown), then the 566."""
    assert emu.control("net", latency_ms=300)["ok"]
    assert emu.control("connect_refuse", count=1)["ok"]
    assert host.at(f'AT+QIOPEN=1,0,"TCP","{name}",7000,0,1') == OK
    advance(0.2)
    m = QISTATE_ADDR.fullmatch(host.at("AT+QISTATE=1,0"))
    assert m and m.group(2) == b"7000" and m.group(3) == b"1", m
    assert rs.advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
    assert host.at("AT+QICLOSE=0") == OK
    return m.group(1)


@pytest.mark.parametrize("asked, opened", [("LOCALHOST", "localhost."), ("LocalHost", "LOCALHOST")])
def test_qidnsgip_answer_is_shown_for_a_refused_open_of_the_name_in_another_spelling(tmp_path, asked, opened):
    with BackgroundEmulator(offline=False) as emu:
        host, advance = _online_modem(emu, tmp_path)
        try:
            assert host.at(f'AT+QIDNSGIP=1,"{asked}"') == OK
            got = rs.advance_until(host, advance, b'+QIURC: "dnsgip","127.0.0.1"\r\n', step=0.1)
            assert got == b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","127.0.0.1"\r\n', got
            assert emu.run(emu.router.answered_address, "localhost") == "127.0.0.1"
            assert _refused_open_polled(emu, host, advance, opened) == b"127.0.0.1"
        finally:
            host.close()


def test_a_dns_entry_outranks_the_real_answer_of_qidnsgip_and_of_a_refused_open(tmp_path):
    """A --dns entry added after the real DNS answered the name: the entry is what AT+QIDNSGIP
    and a refused open show from then on (docs/behaviour.md: the entry before the real answer)."""
    with BackgroundEmulator(offline=False) as emu:
        host, advance = _online_modem(emu, tmp_path)
        try:
            assert host.at('AT+QIDNSGIP=1,"localhost"') == OK
            rs.advance_until(host, advance, b'+QIURC: "dnsgip","127.0.0.1"\r\n', step=0.1)
            emu.run(emu.router.add_dns, "localhost", "106.12.79.254")
            assert host.at('AT+QIDNSGIP=1,"localhost"') == OK
            got = rs.advance_until(host, advance, b'+QIURC: "dnsgip","106.12.79.254"\r\n', step=0.1)
            assert got.endswith(b'\r\n+QIURC: "dnsgip",0,1,600\r\n\r\n+QIURC: "dnsgip","106.12.79.254"\r\n'), got
            assert _refused_open_polled(emu, host, advance, "localhost") == b"106.12.79.254"
        finally:
            host.close()


def test_offline_refused_open_of_an_unknown_name_keeps_its_made_up_address(open_modem, emulator):
    """--offline: the refused open's lookup fails quietly; the host is shown the stable made-up
    address (198.18.0.0/15), the open's answer is the refusal's 566 (not a DNS 565)."""
    from emulator.io.network import made_up_address
    host, port = open_modem("ec2x", manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at(ATTACH) == OK
    shown = _refused_open_polled(emulator, host, advance, "nowhere.example")
    assert shown == made_up_address("nowhere.example").encode()
    assert emulator.run(emulator.router.answered_address, "nowhere.example") is None


# == ATZ / AT&F move a paced port's rate (2f99550) ======================================================
def _paced(emulator, port) -> int:
    return emulator.run(lambda: port.port.baud)


def test_ipr_then_z_on_one_line_ends_at_the_restored_rate(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x", baud=115200)
    assert host.at("AT&W") == OK                        # saved: 115200
    host.write(b"AT+IPR=9600;Z\r")
    assert host.read_until(OK, 10) == OK
    assert host.at("ATE0") == OK                        # (ATZ brought back the saved E0)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK
    assert _paced(emulator, port) == 115200


def test_z_bringing_back_a_saved_autobaud_keeps_the_pace(emulator, open_modem, strict_log):
    """AT+IPR=0 saved (auto-baud), then AT+IPR=9600, then ATZ: AT+IPR? says 0 and the port stays
    at 9600 (docs/behaviour.md: a rate they bring back that is not 0 switches the pace)."""
    host, port = open_modem("ec2x", baud=115200)
    assert host.at("AT+IPR=0;&W") == OK
    assert _paced(emulator, port) == 115200
    assert host.at("AT+IPR=9600") == OK
    assert _paced(emulator, port) == 9600
    assert host.at("ATZ") == OK
    assert host.at("AT+IPR?") == b"\r\n+IPR: 0\r\n" + OK
    assert _paced(emulator, port) == 9600


def test_ml302_factory_reset_moves_the_pace_back(emulator, open_modem, strict_log):
    host, port = open_modem("ml302", baud=115200)
    assert host.at("AT+IPR=9600") == OK
    assert _paced(emulator, port) == 9600
    host.write(b"AT&F\r")
    assert host.read_until(OK, 10).endswith(OK)
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK
    assert _paced(emulator, port) == 115200


# == TLS reading after a warning alert (fab6e0f) ========================================================
from tests.e2e import test_adversarial_hostile_servers_10 as h10   # noqa: E402
from tests.e2e.socket_support import wait_for                       # noqa: E402

CT_ALERT, CT_APP = 21, 23
NO_RENEG, USER_CANCELED, CLOSE_NOTIFY = b"\x01\x64", b"\x01\x5a", b"\x01\x00"
modem = h10.modem
tls_at, ssl_open, recv, push_read = h10.at, h10.ssl_open, h10.recv, h10.push_read


def _open_answer(host, cid: int) -> int:
    line = host.seen(re.compile(rb"\+QSSLOPEN: %d,(-?\d+)\r\n" % cid), 10)
    return int(re.search(rb",(-?\d+)\r\n", line).group(1))


def _state(host, cid: int) -> int | None:
    m = re.search(rb'\+QSSLSTATE: %d,"SSLClient","[^"]*",\d+,\d+,(\d),' % cid, tls_at(host, f"AT+QSSLSTATE={cid}"))
    return int(m.group(1)) if m else None


def _drain(host, cid: int) -> bytes:
    got = bytearray()
    while True:
        chunk = recv(host, cid)
        if not chunk:
            return bytes(got)
        got += chunk


@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_a_partial_record_behind_a_warning_alert_waits_and_the_whole_records_go_at_once(modem, emulator, mode):
    """Data, a warning no_renegotiation, data, and the first 10 bytes of a third record in one
    segment; the rest of that record 0.8 s later.  The two whole records reach the host at
    once (before the rest comes), the third after it; every byte once, the session up."""
    host, advance, port = modem
    first, rest = threading.Event(), threading.Event()

    def script(c) -> None:
        c.handshake()
        wire = c.app(b"first") + c.tx.seal(CT_ALERT, NO_RENEG) + c.app(b"|second")   # (sealed in order)
        third = c.app(b"|third record")
        c.sock.sendall(wire + third[:10])
        first.set()
        time.sleep(0.8)
        c.sock.sendall(third[10:])
        rest.set()
        c.echo()

    with h10.Hand(emulator, script):
        ssl_open(host, 1, mode)
        assert _open_answer(host, 1) == 0
        assert first.wait(5)
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",1\r\n', timeout=0.6)
            assert not rest.is_set()
            assert recv(host, 1) == b"first|second"
            assert rest.wait(5)
            host.seen(b'+QSSLURC: "recv",1\r\n', timeout=3)
            time.sleep(0.1)
            assert recv(host, 1) == b"|third record"
        else:
            assert push_read(host, 1, 12, timeout=0.6)[0] == b"first|second"
            assert not rest.is_set()
            assert push_read(host, 1, 13, timeout=3)[0] == b"|third record"
        assert host.quiet_for(0.2) == b""
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


def test_a_warning_alert_split_across_segments_then_data(modem, emulator):
    """Data and the first 3 bytes of a warning alert's record; 0.3 s later the rest of it and
    more data: both reach the host, nothing twice, no spin (the session stays up)."""
    host, advance, port = modem
    sent = threading.Event()

    def script(c) -> None:
        c.handshake()
        head = c.app(b"head")
        alert = c.tx.seal(CT_ALERT, NO_RENEG)
        c.sock.sendall(head + alert[:3])
        time.sleep(0.3)
        c.sock.sendall(alert[3:] + c.app(b"|tail"))
        sent.set()
        c.echo()

    with h10.Hand(emulator, script):
        ssl_open(host, 1)
        assert _open_answer(host, 1) == 0
        assert sent.wait(5)
        time.sleep(0.3)
        assert _drain(host, 1) == b"head|tail"
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


@pytest.mark.parametrize("behind", ["close_notify", "fatal_alert"])
def test_an_end_right_behind_a_warning_alert_in_one_segment(modem, emulator, behind):
    """Data, a warning no_renegotiation, and at once a close_notify (or a fatal alert), nothing
    between: the data readable, one "closed", state 4, the emulator's FIN."""
    host, advance, port = modem

    def script(c) -> None:
        c.handshake()
        end = CLOSE_NOTIFY if behind == "close_notify" else b"\x02\x50"
        c.sock.sendall(c.app(b"all there is") + c.tx.seal(CT_ALERT, NO_RENEG) + c.tx.seal(CT_ALERT, end))
        c.reader()

    with h10.Hand(emulator, script) as server:
        ssl_open(host, 1)
        assert _open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=3)
        assert _drain(host, 1) == b"all there is"
        assert host.transcript.count(b'+QSSLURC: "closed",1') == 1
        assert _state(host, 1) == 4
        wait_for(server.conns[0].eof.is_set, 3, "the emulator's FIN")
        assert tls_at(host, "AT+QSSLCLOSE=1") == OK


def test_a_warning_alert_last_in_a_read_then_data_later(modem, emulator):
    """A warning alert alone at the end of what came: nothing for the host, no end; data
    0.4 s later arrives as usual."""
    host, advance, port = modem
    later = threading.Event()

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(c.app(b"one") + c.tx.seal(CT_ALERT, NO_RENEG))
        time.sleep(0.4)
        later.set()                  # (before the send: the host may read "|two" before sendall returns)
        c.sock.sendall(c.tx.seal(CT_ALERT, NO_RENEG) + c.app(b"|two"))
        c.echo()

    with h10.Hand(emulator, script):
        ssl_open(host, 1, 1)
        assert _open_answer(host, 1) == 0
        assert push_read(host, 1, 3, timeout=3)[0] == b"one"
        assert push_read(host, 1, 4, timeout=3)[0] == b"|two"
        assert later.is_set()
        assert host.quiet_for(0.2) == b""
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


def test_many_warning_alerts_with_empty_records_and_a_partial_record_at_the_end(modem, emulator):
    """200 x (empty record, warning alert), data, then half a record: the data at once, the
    rest when it comes; no "closed" (the empty-record guard counts only reads taking nothing)."""
    host, advance, port = modem
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        wire = b"".join(c.tx.seal(CT_APP, b"") + c.tx.seal(CT_ALERT, NO_RENEG) for _ in range(200))
        wire += c.app(b"data")
        last = c.app(b"|end")
        c.sock.sendall(wire + last[:7])
        go.wait(5)
        c.sock.sendall(last[7:])
        c.echo()

    with h10.Hand(emulator, script):
        ssl_open(host, 1, 1)
        assert _open_answer(host, 1) == 0
        assert push_read(host, 1, 4, timeout=3)[0] == b"data"
        go.set()
        assert push_read(host, 1, 4, timeout=3)[0] == b"|end"
        assert b'"closed",1' not in host.transcript
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


# == DTLS: a warning alert and data records in one datagram =============================================
def _p_sha256(secret: bytes, seed: bytes, size: int) -> bytes:
    import hashlib
    import hmac
    out, a = b"", seed
    while len(out) < size:
        a = hmac.new(secret, a, hashlib.sha256).digest()
        out += hmac.new(secret, a + seed, hashlib.sha256).digest()
    return out[:size]


class _ServerSealer:
    """Seals DTLS 1.2 records as the server (TLS_RSA_WITH_AES_128_GCM_SHA256, epoch 1), from
    the emulator's key log line and the ServerHello's random."""

    def __init__(self, keylog_line: str, server_random: bytes) -> None:
        _, client_random, master = keylog_line.split()
        block = _p_sha256(bytes.fromhex(master), b"key expansion" + server_random + bytes.fromhex(client_random), 40)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        self.aead, self.salt = AESGCM(block[16:32]), block[36:40]

    def seal(self, ctype: int, plaintext: bytes, seq: int) -> bytes:
        seqnum = (1).to_bytes(2, "big") + seq.to_bytes(6, "big")
        aad = seqnum + bytes([ctype]) + b"\xfe\xfd" + len(plaintext).to_bytes(2, "big")
        body = seqnum + self.aead.encrypt(self.salt + seqnum, plaintext, aad)
        return bytes([ctype]) + b"\xfe\xfd" + seqnum + len(body).to_bytes(2, "big") + body


@contextlib.contextmanager
def dtls_session_with_injector(tmp_path, pki):
    """An EC2x whose DTLS socket 4 (push mode, TLS_RSA_WITH_AES_128_GCM_SHA256) is open to
    `openssl s_server -dtls1_2` behind a UdpMiddlebox, the server's first push ("first") read.
    Yields (host, server, box, inject): inject([(type, payload), ...], first=1) slips one
    datagram of those records into the path, sealed with the session's keys (the emulator's
    key log) at the server's next sequence numbers from `first` on."""
    from emulator.testing.peers import OpenSslServer, UdpMiddlebox
    from emulator.testing.peers.dtls_wire import records as dtls_records
    keylog: list[str] = []
    cert, key = pki.server.load_args
    server = OpenSslServer(["-cert", cert, "-key", key, "-dtls1_2", "-cipher", "AES128-GCM-SHA256"])
    try:
        with UdpMiddlebox(server.address) as box, BackgroundEmulator(keylog=keylog.append) as emu:
            port = emu.add_modem("ec2x", state_dir=tmp_path / "state")
            host = Host(port.path)
            try:
                emu.run(port.port.look_for_host)
                assert host.at("ATE0").endswith(OK)
                assert host.at(ATTACH) == OK
                emu.router.add_map("dtls.example", 4433, "127.0.0.1", box.port)
                assert host.at('AT+QSSLCFG="dtls",2,1') == OK
                assert host.at('AT+QSSLCFG="ciphersuite",2,0X009C') == OK
                assert host.at('AT+QSSLOPEN=1,2,4,"dtls.example",4433,1') == OK
                assert host.read_until(b"+QSSLOPEN: 4,0\r\n", 20).endswith(b"\r\n+QSSLOPEN: 4,0\r\n")
                server.wait_for_output(rb"CIPHER is", 10)
                server.write(b"first\n")
                assert host.read_until(b'+QSSLURC: "recv",4,6\r\nfirst\n\r\n', 5).endswith(b"first\n\r\n")
                hello = next(r for d in box.sent("s2c") for r in dtls_records(d) if r.type == 22 and r.payload[:1] == b"\x02")
                sealer = _ServerSealer(next(x for x in keylog if x.startswith("CLIENT_RANDOM")),
                                       hello.payload[12 + 2:12 + 34])
                top = max(r.seq for d in box.sent("s2c") for r in dtls_records(d) if r.epoch == 1)

                def inject(wire, first: int = 1) -> None:
                    box.inject(b"".join(sealer.seal(t, p, top + first + i) for i, (t, p) in enumerate(wire)))
                yield host, server, box, inject
            finally:
                host.close()
    finally:
        server.stop()


@pytest.mark.parametrize("alert", [
    NO_RENEG,
    "hello_request", USER_CANCELED, None], ids=["no_renegotiation", "hello_request", "user_canceled", "no_alert"])
def test_dtls_records_behind_a_warning_alert_in_one_datagram(tmp_path, pki, alert):
    """`openssl s_server -dtls1_2` behind a middlebox; once the session is up the path slips in
    one datagram sealed with the session's keys (the emulator's key log): [a warning
    alert (no_renegotiation: Mbed TLS's WANT_READ; user_canceled: read on inside), or a
    HelloRequest the modem refuses (renegotiation 0),] "behind the alert", "and more" (three records, one datagram).  Mbed
    TLS ignores the warning; the records behind it reach the host at once, as for TLS
    (docs/behaviour.md), not only when the next datagram comes."""
    from emulator.testing.peers.dtls_wire import records as dtls_records
    with dtls_session_with_injector(tmp_path, pki) as (host, server, box, inject):
        if alert == "hello_request":           # (DTLS handshake header: type 0, empty)
            wire = [(22, b"\x00" + bytes(3) + b"\x00\x00" + bytes(6))]
        else:
            wire = [(21, alert)] if alert else []
        wire += [(23, b"behind the alert\n"), (23, b"and more\n")]
        inject(wire)
        try:
            got = host.read_until(b"and more\n\r\n", 3)
        except AssertionError:            # (stalled: the next datagram moves them on)
            inject([(23, b"next\n")], first=10)
            got = b"STALLED " + host.read_until(b"next\n\r\n", 3)
        assert got == b'\r\n+QSSLURC: "recv",4,26\r\nbehind the alert\nand more\n\r\n', got
        assert host.quiet_for(0.2) == b""
        if alert == "hello_request":
            # the modem's refusal: one encrypted alert record (OpenSSL, which never
            # asked, ends its session on it: no round trip checked here)
            box.wait_for(lambda: any(r.type == 21 and r.epoch == 1 for d in box.sent("c2s")
                                     for r in dtls_records(d)), 3)
        else:
            assert host.send_data(4, b"still up\n") == b"\r\nSEND OK\r\n"
            server.wait_for_output(rb"still up", 10)
        assert host.at("AT+QSSLCLOSE=4,0") == OK


# == without the wrapper's private names (native.input_pending None: blind retries) =====================
def _blind(monkeypatch) -> None:
    import tls_engine.native
    import tls_engine.session
    tls_engine.session._bind_library()       # (else the undo puts back an unbound None)
    for module in (tls_engine.native, tls_engine.session):
        monkeypatch.setattr(module, "input_pending", lambda buffer: None)


@pytest.mark.parametrize("alerts", [
    8,
    20,
])
def test_blind_reading_behind_many_warning_alerts_in_one_segment(modem, emulator, monkeypatch, alerts):
    """`alerts` warning no_renegotiation alerts then data, one segment, the server then quiet:
    the data reach the host at once (push mode), as with the private names."""
    _blind(monkeypatch)
    host, advance, port = modem

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(b"".join(c.tx.seal(CT_ALERT, NO_RENEG) for _ in range(alerts)) + c.app(b"behind them"))
        c.echo()

    with h10.Hand(emulator, script):
        ssl_open(host, 1, 1)
        assert _open_answer(host, 1) == 0
        assert push_read(host, 1, 11, timeout=3)[0] == b"behind them"
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


# == a HelloRequest the modem refuses (renegotiation 0), data behind it ==================================
@pytest.mark.parametrize("mode", [0, 1], ids=["buffer", "push"])
def test_refused_hello_request_then_data_in_one_segment(modem, emulator, mode):
    """renegotiation 0 (the default): data, an encrypted HelloRequest, data, one segment.  Mbed
    TLS answers the request with a warning no_renegotiation alert and says WANT_READ; the data
    behind the request reach the host at once, the server gets exactly that one alert and the
    session stays up (data both ways)."""
    host, advance, port = modem
    got: list = []

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(c.app(b"before|") + c.tx.seal(22, b"\x00\x00\x00\x00") + c.app(b"behind the request"))
        h10.client_records(c, got)

    with h10.Hand(emulator, script):
        ssl_open(host, 1, mode)
        assert _open_answer(host, 1) == 0
        want = b"before|behind the request"
        if mode == 0:
            host.seen(b'+QSSLURC: "recv",1\r\n', timeout=3)
            time.sleep(0.3)
            assert _drain(host, 1) == want
        else:
            assert push_read(host, 1, len(want), timeout=3)[0] == want
        wait_for(lambda: got, 3, "the modem's alert")
        assert got[0] == (CT_ALERT, NO_RENEG), got
        assert host.send_data(1, b"hello") == b"\r\nSEND OK\r\n"
        wait_for(lambda: (CT_APP, b"hello") in got, 3, "the host's data")
        assert [x for x in got if x[0] != CT_APP] == [(CT_ALERT, NO_RENEG)], got
        assert _state(host, 1) == 2
        assert tls_at(host, "AT+QSSLCLOSE=1,0") == OK


@pytest.mark.parametrize("then", [
    "",
    "AT+IPR=19200",
])
def test_a_restart_paces_at_the_baud_rate_whatever_was_saved(emulator, open_modem, strict_log, then):
    """docs/behaviour.md: a restart (AT+CFUN=1,1) puts the pace back to --baud's rate, as at
    start -- whether or not the rate in force before it was the saved one."""
    host, port = open_modem("ec2x", baud=115200)
    assert host.at("AT+IPR=9600;&W") == OK
    if then:
        assert host.at(then) == OK
        assert _paced(emulator, port) == 19200
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(b"\r\n+QIND: PB DONE\r\n", timeout=10).startswith(OK)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 9600\r\n" + OK          # (the saved setting)
    assert _paced(emulator, port) == 115200
