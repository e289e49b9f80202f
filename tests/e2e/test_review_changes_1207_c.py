"""Review of b778c3e, c70ecd5, 6f44b05 and 4894b62 (2026-12-07, h_rev3): the replay of a
host's AT log across a restart (c70ecd5: waits for RDY, start-up URCs the log lacks not
compared) and the late LF's part in AT+QFUPL's "+++" guard time (4894b62) -- through the
CLI replay (emulator.tools.trace.replay_main) and the pty -- and the log's reason for a
failed renegotiation (b778c3e) against test_adversarial_hostile_servers_2's sealing server.

Bugs found, all fixed since: the replay's boot-URC filter hid a missing answer line whose
text is a boot URC (no restart needed); the line after a restart went out at RDY, before the
SIM was up (+CME ERROR: 14 for AT+CPIN?); a logged boot URC ahead of the E1 echo kept the
echo; unlogged boot URCs counted toward the lines awaited after a final result; the ML302's
+CPIN: READY URC doubled its answer; AT+QPOWD's power-on was not waited for; ATV0 steps
waited out 10 s each; AT+QFUPL's dropped late LF did not restart the inactivity timer; a
malformed Certificate where the first ServerHello is due was logged differently at
seclevel 0 and 1."""
from __future__ import annotations

import io
import threading
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest

from tests.e2e.hostile_support import open_answer
from tests.e2e.test_adversarial_ml302_chaos import checksum

OK = b"\r\nOK\r\n"
CONNECT = b"\r\nCONNECT\r\n"


def _replay_log(tmp_path, text: str, *args: str) -> tuple[int, str]:
    from emulator.tools.trace import replay_main
    path = tmp_path / "host.log"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = replay_main([str(path), *args])
    return rc, out.getvalue() + err.getvalue()


# == (2) c70ecd5: an AT log replayed across a restart ==============================================
def test_restart_inside_a_multi_command_line_replays(tmp_path, strict_log):
    """AT+CMEE=2;+CFUN=1,1;+CMEE=0: nothing after the reset runs; the next line (after RDY)
    reads the saved +CMEE: 1 -- no difference, exit 0."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CMEE=2;+CFUN=1,1;+CMEE=0\n<< OK\n"
                                     ">> AT+CMEE?\n<< +CMEE: 1\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_log_with_echo_lines_and_rdy_across_a_restart_replays(tmp_path, strict_log):
    """An ATE1 log that kept every echo and the RDY: exit 0."""
    rc, text = _replay_log(tmp_path, ">> ATE1\n<< ATE1\n<< OK\n>> AT+CFUN=1,1\n<< AT+CFUN=1,1\n<< OK\n"
                                     "<< RDY\n>> AT\n<< AT\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


@pytest.mark.parametrize("tail", ["<< OK\n", ""])
def test_log_ending_right_after_the_restart_replays(tmp_path, strict_log, tail):
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n" + tail)
    assert (rc, text.strip()) == (0, "replayed 2 lines: no difference")


def test_a_real_difference_after_a_restart_still_exits_1(tmp_path, strict_log):
    """The log says +CMEE: 2 after the restart; the modem restored +CMEE: 1: exit 1."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n"
                                     ">> AT+CMEE?\n<< +CMEE: 2\n<< OK\n")
    assert rc == 1
    assert "step 3 (AT+CMEE?)" in text and "['+CMEE: 1', 'OK']" in text


@pytest.mark.parametrize("profile", ["ec2x", "ml302"])
def test_answers_only_log_across_a_restart_replays(tmp_path, strict_log, profile):
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n>> AT\n<< OK\n",
                           "--profile", profile)
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_missing_answer_line_equal_to_a_boot_urc_is_a_difference(tmp_path, strict_log):
    """No restart at all: the log's AT+CPIN? got OK alone, the modem answers +CPIN: READY and
    OK -- a real difference (exit 1)."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CPIN?\n<< OK\n")
    assert rc == 1, text


@pytest.mark.parametrize("rdy", ["", "<< RDY\n"])
def test_sim_command_after_a_restart_replays(tmp_path, strict_log, rdy):
    """A host that waited for the SIM (its AT+CPIN? got READY) and logged answers only (or RDY
    only, not the later start-up URCs): the replay waits for the start-up to be over, so no
    difference.  (It wrote the line at RDY, 360 ms before +CPIN: READY: +CME ERROR: 14, a
    false difference -- a bug this review found, fixed since.)"""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n" + rdy +
                           ">> AT+CPIN?\n<< +CPIN: READY\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_sim_poll_during_the_start_up_is_a_difference_a_plain_log_cannot_time(tmp_path, strict_log):
    """A host that polled AT+CPIN? during the start-up (+CME ERROR: 14 once, then READY): a
    plain AT log has no timing, and the replay waits for the start-up to be over, so the poll
    gets READY -- reported as the difference it is (README: a trace keeps the timing)."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n<< RDY\n"
                           ">> AT+CPIN?\n<< +CME ERROR: 14\n>> AT+CPIN?\n<< +CPIN: READY\n<< OK\n")
    assert rc == 1 and "step 3 (AT+CPIN?)" in text and "+CPIN: READY" in text, text


def test_ml302_cpin_query_after_a_restart_replays(tmp_path, strict_log):
    rc, text = _replay_log(tmp_path, ">> AT+CFUN=1,1\n<< OK\n>> AT+CPIN?\n<< +CPIN: READY\n<< OK\n",
                           "--profile", "ml302")
    assert (rc, text.strip()) == (0, "replayed 2 lines: no difference")


def test_rdy_logged_with_the_next_answer_under_echo_replays(tmp_path, strict_log):
    rc, text = _replay_log(tmp_path, ">> AT+CFUN=1,1\n<< OK\n>> AT\n<< RDY\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 2 lines: no difference")


def test_some_boot_urcs_logged_after_the_next_answer_replays(tmp_path, strict_log):
    """The host logged RDY and +CPIN: READY, not +CFUN: 1: the AT right after RDY got OK, then
    +CPIN: READY came -- exit 0."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n<< OK\n<< RDY\n"
                                     ">> AT\n<< OK\n<< +CPIN: READY\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_log_across_qpowd_power_on_with_rdy_logged_replays(tmp_path, strict_log):
    """AT+QPOWD, POWERED DOWN, the EC2x's own power-on 1 s later and its RDY, all logged:
    the RDY is waited for, exit 0."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+QPOWD\n<< OK\n<< POWERED DOWN\n"
                                     "<< RDY\n>> AT\n<< AT\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_answers_only_log_across_qpowd_power_on_replays(tmp_path, strict_log):
    """The same host logging answers only (no RDY): its AT after the power-on got OK."""
    rc, text = _replay_log(tmp_path, ">> ATE0\n<< OK\n>> AT+QPOWD\n<< OK\n<< POWERED DOWN\n"
                                     ">> AT\n<< OK\n")
    assert (rc, text.strip()) == (0, "replayed 3 lines: no difference")


def test_atv0_log_replays_without_waiting_out_each_step(tmp_path, strict_log):
    t0 = time.monotonic()
    rc, text = _replay_log(tmp_path, ">> ATV0\n<< 0\n")
    assert (rc, text.strip()) == (0, "replayed 1 lines: no difference")
    assert time.monotonic() - t0 < 3


# == (3) 4894b62: a late LF in AT+QFUPL's data and the "+++" guard time ============================
def _bytewise(host, line: bytes, until: bytes) -> bytes:
    for b in line:
        host.write(bytes([b]))
        time.sleep(0.02)
    return host.read_until(until, 10)


def _fupl_answer(data: bytes) -> bytes:
    # (Quectel's AT+QFUPL checksum: lowercase hex without leading zeros, behaviour.md)
    return f"\r\n+QFUPL: {len(data)},{int(checksum(data), 16) if data else 0:x}\r\n\r\nOK\r\n".encode()


@pytest.mark.parametrize("ack", ["", ",5,1"])
@pytest.mark.parametrize("echo", [False, True])
def test_qfupl_late_lf_alone_a_second_before_plus_plus_plus_still_escapes(ec2x_strict, ack, echo):
    """CR LF byte-by-byte host: the late LF alone 0.3 s after CONNECT, 1.1 s of silence,
    "+++", 1.1 s: an escape -- +QFUPL: 0,0, an empty file (ackmode 1 too); with ATE1 the
    data are not echoed."""
    host, advance, _ = ec2x_strict
    if echo:
        assert host.at("ATE1") == OK
        assert _bytewise(host, b"AT\r\n", OK) == b"AT\r" + OK
    else:
        assert _bytewise(host, b"AT\r\n", OK) == OK
    assert _bytewise(host, f'AT+QFUPL="lf1.bin",100{ack}\r'.encode(), CONNECT).endswith(CONNECT)
    advance(0.3)
    host.write(b"\n")
    advance(1.1)
    host.write(b"+++")
    advance(1.1)
    assert host.read_until(OK, 10) == _fupl_answer(b"")
    assert host.at("ATE0") == (b"ATE0\r" + OK if echo else OK)
    assert host.at('AT+QFLST="lf1.bin"') == b'\r\n+QFLST: "lf1.bin",0\r\n' + OK


@pytest.mark.parametrize("ack", ["", ",5,1"])
def test_qfupl_late_lf_alone_breaks_the_silence_before_plus_plus_plus(ec2x_strict, ack):
    """The late LF alone 0.6 s after CONNECT, "+++" 0.6 s later (1.2 s after CONNECT): the
    host was not silent a guard time before "+++": data; the rest completes the file."""
    host, advance, _ = ec2x_strict
    assert _bytewise(host, b"AT\r\n", OK) == OK
    assert _bytewise(host, f'AT+QFUPL="lf2.bin",6{ack}\r'.encode(), CONNECT) == CONNECT
    advance(0.6)
    host.write(b"\n")
    advance(0.6)
    host.write(b"+++")
    advance(1.5)
    assert host.quiet_for(0.2) == b""
    host.write(b"abc")
    assert host.read_until(OK, 10) == _fupl_answer(b"+++abc")


def test_qfupl_cr_only_host_lf_is_data_and_breaks_the_silence(ec2x_strict):
    """A host ending lines with CR alone: an LF 0.6 s after CONNECT is data, "+++" 0.6 s
    later is data too; the file is LF + "+++" + "ab"."""
    host, advance, _ = ec2x_strict
    assert host.at("AT") == OK
    host.write(b'AT+QFUPL="lf3.bin",6\r')
    assert host.read_until(CONNECT, 10) == CONNECT
    advance(0.6)
    host.write(b"\n")
    advance(0.6)
    host.write(b"+++")
    advance(1.5)
    assert host.quiet_for(0.2) == b""
    host.write(b"ab")
    assert host.read_until(OK, 10) == _fupl_answer(b"\n+++ab")


@pytest.mark.parametrize("ack", ["", ",5,1"])
def test_qfupl_late_lf_with_plus_plus_plus_in_one_write_is_data(ec2x_strict, ack):
    """"\n+++" in one write 1.1 s after CONNECT: the LF is the line's (dropped), "+++" is
    data (no silence before it); the file is "+++xy"."""
    host, advance, _ = ec2x_strict
    assert _bytewise(host, b"AT\r\n", OK) == OK
    assert _bytewise(host, f'AT+QFUPL="lf4.bin",5{ack}\r'.encode(), CONNECT) == CONNECT
    advance(1.1)
    host.write(b"\n+++")
    advance(1.5)
    assert host.quiet_for(0.2) == b""
    host.write(b"xy")
    assert host.read_until(OK, 10) == _fupl_answer(b"+++xy")


def test_qfupl_late_lf_restarts_the_inactivity_timeout(ec2x_strict):
    """AT+QFUPL with a 1 s inactivity timeout ("restarted by every byte", files.py): the late
    LF alone 0.8 s after CONNECT, "abc" 0.8 s after it -- within the timeout of the last
    byte: the file is "abc"."""
    host, advance, _ = ec2x_strict
    assert _bytewise(host, b"AT\r\n", OK) == OK
    assert _bytewise(host, b'AT+QFUPL="lf5.bin",3,1\r', CONNECT) == CONNECT
    advance(0.8)
    host.write(b"\n")
    advance(0.8)
    host.write(b"abc")
    assert host.read_until(OK, 3) == _fupl_answer(b"abc")


# == (1) b778c3e: the log's reason for a failed renegotiation ======================================
def _renegotiation_answered_with(host, emulator, answer: bytes):
    """renegotiation 1: the server's HelloRequest; once the modem's ClientHello is in, `answer`
    (a handshake message, sealed under the session keys) where the ServerHello is due."""
    from tests.e2e import test_adversarial_hostile_servers_2 as h2
    from tests.e2e import test_adversarial_hostile_servers_14 as h14
    assert host.at('AT+QSSLCFG="renegotiation",1,1') == OK
    go = threading.Event()

    def script(c) -> None:
        c.handshake()
        go.wait(10)
        c.sock.sendall(c.seal(h2.CT_HANDSHAKE, h14.HELLO_REQUEST))
        h14._asked(c)
        c.sock.sendall(c.seal(h2.CT_HANDSHAKE, answer))
        c.server.stall()

    with h2.Server(script, emulator) as server:
        h2.ssl_open(host, 2)
        assert open_answer(host, 2) == 0
        go.set()
        host.seen(b'+QSSLURC: "closed",2\r\n', timeout=5)
        conn = server.conns[0]
        assert conn.eof.wait(5), "the emulator did not close its side"
        assert host.at("AT+QSSLCLOSE=2,0").endswith(OK)
    return conn


def _hs(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


@pytest.mark.parametrize("answer", [
    _hs(11, b"\x00" * 40),                                            # a Certificate
    # ServerHellos Mbed TLS refuses in a renegotiation: no renegotiation_info extension
    _hs(2, b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\xc0\x2f" + b"\x00"),
    _hs(2, b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\x00\x9c" + b"\x00"),
], ids=["certificate", "no_reneg_info", "other_suite"])
def test_renegotiation_answered_by_no_server_hello_mbedtls_takes_names_the_renegotiation(
        ec2x_strict, emulator, caplog, answer):
    """The renegotiation's ServerHello slot holds another message, or a ServerHello without the
    renegotiation_info extension (its suite the session's or another): decode_error / the modem's fatal alert, one "closed",
    and the log's reason says it was the renegotiation (not "chosen" by a first ServerHello)."""
    host, advance, _ = ec2x_strict
    conn = _renegotiation_answered_with(host, emulator, answer)
    assert len(conn.alerts()) == 1 and conn.alerts()[0][:1] == b"\x02"
    assert bytes(host.transcript).count(b'+QSSLURC: "closed",2') == 1
    text = "\n".join(r.getMessage() for r in caplog.records if "TLS failure" in r.getMessage())
    assert "in a renegotiation" in text and "-0x7980" in text, text
    assert host.at("AT") == OK


@pytest.mark.parametrize("kind", [
    "hello_request", "certificate_first",
    "malformed_certificate_first"])
def test_first_handshake_bad_server_hello_keeps_its_old_reason(ec2x_strict, emulator, caplog, kind):
    """Not a renegotiation: a HelloRequest (or a Certificate) where the first ServerHello is
    due -- 566 and the first handshake's reason, at seclevel 0 and 1; nothing says
    "renegotiation"."""
    from tests.e2e import test_adversarial_hostile_servers_7 as h7
    host, advance, _ = ec2x_strict
    if h7.CA_FILE.encode() not in host.at('AT+QFLST="*"'):
        assert host.upload(h7.CA_FILE, h7.default_pki().ca.cert_pem).endswith(b"OK\r\n")
    for line in ('"ciphersuite",1,0X009C', f'"cacert",1,"{h7.CA_FILE}"', '"negotiatetime",1,10'):
        assert host.at(f"AT+QSSLCFG={line}") == OK
    def script(c):
        f = h7.Flight(c)
        first = {"hello_request": h7.hs(0, b""), "certificate_first": f.cert,
                 "malformed_certificate_first": h7.hs(11, b"\x00" * 40)}[kind]
        c.sock.sendall(h7.record(h7.CT_HANDSHAKE, first) + f.records())
        h7.hold(c)

    reason, _ = h7.same_failure(host, caplog, emulator, script, 3)
    assert reason == h7.BAD_SERVER_HELLO
