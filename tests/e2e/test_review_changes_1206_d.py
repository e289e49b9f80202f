"""Review of bf8a028 (EC2x +QIND: PB DONE, AT+QINISTAT from the boot URCs), 55c8f62 (DTLS
record cap, RSA-PSK certificate check) and 8ebcd68 (AT log payload lengths, a restart's
restore of the saved settings)."""
from __future__ import annotations

import re

import pytest

from emulator.modem.profile import PROFILE_DIR
from emulator.tools.trace import at_log_payload

OK = b"\r\nOK\r\n"
EC2X = (PROFILE_DIR / "ec2x.toml").read_text()
ML302 = (PROFILE_DIR / "ml302.toml").read_text()
URCS = 'boot_urcs = ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"]'
OFFS = "boot_urc_ms = [0, 130, 360, 380, 600, 620]"


def _urc(line: bytes) -> bytes:
    return b"\r\n" + line + b"\r\n"


def qini(host, echo: bool = True) -> int:
    got = host.at("AT+QINISTAT")
    m = re.fullmatch(rb"(?:AT\+QINISTAT\r)?\r\n\+QINISTAT: (\d)\r\n\r\nOK\r\n", got)
    assert m, got
    assert got.startswith(b"AT+QINISTAT\r") == echo, got
    return int(m.group(1))


def user_profile(tmp_path, text: str) -> str:
    path = tmp_path / "user.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def manual(open_modem):
    return open_modem("ec2x", manual_time=True)


# -- (1) bf8a028: AT+QINISTAT through a restart ---------------------------------------------

def _walk_boot(emulator, port, host, first_delay: float):
    """Advance through the boot from its start; AT+QINISTAT at each moment (echo on)."""
    seen = []
    emulator.advance(port, first_delay)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    seen.append(qini(host))
    emulator.advance(port, 0.13)
    assert host.read_until(b"+CFUN: 1\r\n", timeout=3) == _urc(b"+CFUN: 1")
    seen.append(qini(host))
    emulator.advance(port, 0.229)
    seen.append(qini(host))                                  # 359 ms: SIM not ready
    emulator.advance(port, 0.001)
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"+CPIN: READY")
    seen.append(qini(host))
    emulator.advance(port, 0.02)
    assert host.read_until(b"+QUSIM: 1\r\n", timeout=3) == _urc(b"+QUSIM: 1")
    seen.append(qini(host))
    emulator.advance(port, 0.219)
    seen.append(qini(host))                                  # 599 ms
    emulator.advance(port, 0.001)
    assert host.read_until(b"SMS DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE")
    seen.append(qini(host))
    emulator.advance(port, 0.019)
    seen.append(qini(host))                                  # 619 ms
    emulator.advance(port, 0.001)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == _urc(b"+QIND: PB DONE")
    seen.append(qini(host))
    emulator.advance(port, 5)
    assert host.quiet_for(0.2) == b""
    seen.append(qini(host))
    return seen


EXPECTED_WALK = [0, 0, 0, 1, 1, 1, 3, 3, 7, 7]


def test_qinistat_is_7_when_up_and_at_every_moment_of_cfun_restart(emulator, manual):
    host, port = manual
    assert qini(host, echo=False) == 7
    assert host.at("AT+CFUN=1,1") == OK
    assert host.quiet_for(0.1) == b""
    assert _walk_boot(emulator, port, host, 0.05) == EXPECTED_WALK


def test_qinistat_through_the_control_apis_reboot(emulator, manual):
    host, port = manual
    assert emulator.control("reboot", ms=200)["ok"]
    host.write(b"AT+QINISTAT\r")                             # before RDY: lost
    assert host.quiet_for(0.2) == b""
    assert _walk_boot(emulator, port, host, 0.2) == EXPECTED_WALK


def test_qinistat_through_qpowd_power_on(emulator, manual):
    host, port = manual
    host.write(b"AT+QPOWD=1\r")
    got = host.read_until(b"POWERED DOWN\r\n", timeout=3)
    assert got.endswith(b"\r\nOK\r\n\r\nPOWERED DOWN\r\n"), got
    emulator.wait_received(port, host.written)
    assert _walk_boot(emulator, port, host, 1.0) == EXPECTED_WALK


def test_a_restart_after_sms_done_starts_qinistat_again_from_0(emulator, manual):
    host, port = manual
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.6)
    host.read_until(b"SMS DONE\r\n", timeout=3)
    assert qini(host) == 3
    assert host.at("AT+CFUN=1,1") == b"AT+CFUN=1,1\r" + OK
    emulator.advance(port, 0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert qini(host) == 0                                  # the old boot's bits are gone
    emulator.advance(port, 0.36)
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"+CFUN: 1") + _urc(b"+CPIN: READY")
    assert qini(host) == 1
    emulator.advance(port, 0.02 + 0.22)
    assert host.read_until(b"SMS DONE\r\n", timeout=3) == _urc(b"+QUSIM: 1") + _urc(b"+QIND: SMS DONE")
    assert qini(host) == 3
    emulator.advance(port, 0.02)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == _urc(b"+QIND: PB DONE")
    assert qini(host) == 7
    emulator.advance(port, 5)
    assert host.quiet_for(0.2) == b""


def test_ml302_qinistat(emulator, open_modem):
    host, port = open_modem("ml302", manual_time=True)
    before = host.at("AT+QINISTAT")
    assert before == b"\r\nERROR\r\n"                         # not an ML302 command
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05)
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"+CPIN: READY")
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+QINISTAT") == b"\r\nERROR\r\n"
    assert host.at("AT+CPIN?") == b"\r\n+CPIN: READY\r\n" + OK
    emulator.advance(port, 5)
    assert host.quiet_for(0.2) == b""


def test_user_profile_without_pb_done_is_7_after_sms_done(emulator, open_modem, tmp_path):
    text = EC2X.replace(URCS, URCS.replace(', "+QIND: PB DONE"', "")).replace(OFFS, "boot_urc_ms = [0, 130, 360, 380, 600]")
    host, port = open_modem(user_profile(tmp_path, text), manual_time=True)
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.599)
    host.read_until(b"+QUSIM: 1\r\n", timeout=3)
    assert qini(host) == 1
    emulator.advance(port, 0.001)
    assert host.read_until(b"DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE")
    assert qini(host) == 7                                   # the boot is over: all done
    emulator.advance(port, 5)
    assert host.quiet_for(0.2) == b""


def test_user_profile_with_pb_done_before_sms_done(emulator, open_modem, tmp_path):
    text = EC2X.replace(URCS, '"+QIND: PB DONE", "+QIND: SMS DONE"]'.join(URCS.rsplit('"+QIND: SMS DONE", "+QIND: PB DONE"]', 1)))
    host, port = open_modem(user_profile(tmp_path, text), manual_time=True)
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.6)
    assert host.read_until(b"PB DONE\r\n", timeout=3).endswith(_urc(b"+QIND: PB DONE"))
    assert qini(host) == 5
    emulator.advance(port, 0.02)
    assert host.read_until(b"SMS DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE")
    assert qini(host) == 7


# -- boot URCs and the host's state ---------------------------------------------------------

ALL_V0 = b"RDY\r\n+CFUN: 1\r\n+CPIN: READY\r\n+QUSIM: 1\r\n+QIND: SMS DONE\r\n+QIND: PB DONE\r\n"
ALL_V1 = b"".join(_urc(x) for x in (b"RDY", b"+CFUN: 1", b"+CPIN: READY", b"+QUSIM: 1",
                                    b"+QIND: SMS DONE", b"+QIND: PB DONE"))


def test_boot_urcs_with_a_saved_atv0_are_info_text_and_qinistat_too(emulator, manual):
    host, port = manual
    host.write(b"ATV0&W\r")
    assert host.read_until(b"0\r", timeout=3) == b"0\r"
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(b"0\r", timeout=3) == b"0\r"
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.05)
    emulator.advance(port, 1)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == ALL_V0
    host.write(b"AT+QINISTAT\r")
    assert host.read_until(b"0\r", timeout=3) == b"+QINISTAT: 7\r\n0\r"


def test_boot_urcs_with_a_saved_atq1_still_come(emulator, manual):
    host, port = manual
    host.write(b"ATQ1&W\r")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.2) == b""
    host.write(b"AT+CFUN=1,1\r")
    emulator.wait_received(port, host.written)
    assert host.quiet_for(0.2) == b""                        # (no OK under Q1)
    emulator.advance(port, 0.05)
    emulator.advance(port, 0.38)
    assert host.read_until(b"+QUSIM: 1\r\n", timeout=3) == ALL_V1[:ALL_V1.index(b"\r\n+QIND")]
    host.write(b"AT+QINISTAT\r")
    assert host.read_until(b"+QINISTAT: 1\r\n", timeout=3) == b"\r\n+QINISTAT: 1\r\n"
    emulator.advance(port, 0.3)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE")
    assert host.quiet_for(0.2) == b""


def test_boot_urcs_due_during_an_upload_prompt_wait_for_its_end(emulator, manual):
    host, port = manual
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.38)
    assert host.read_until(b"+QUSIM: 1\r\n", timeout=3) == ALL_V1[:ALL_V1.index(b"\r\n+QIND")]
    host.write(b'ATE0;+QFUPL="RAM:a.txt",10\r')
    assert host.read_until(b"CONNECT\r\n", timeout=3) == b'ATE0;+QFUPL="RAM:a.txt",10\r\r\nCONNECT\r\n'
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.3)                                # SMS DONE and PB DONE due
    assert host.quiet_for(0.3) == b""
    host.write(b"0123456789")
    assert host.read_until(b"PB DONE\r\n", timeout=3) == (
        b"\r\n+QFUPL: 10,3839\r\n\r\nOK\r\n" + _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE"))
    assert host.at("AT+QINISTAT") == b"\r\n+QINISTAT: 7\r\n" + OK


def test_boot_urcs_due_in_transparent_mode_wait_for_the_escape(emulator, manual, tcp_echo):
    from tests.e2e.socket_support import escape
    host, port = manual
    advance = emulator.advancer(port, host)
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05 + 0.38)
    host.read_until(b"+QUSIM: 1\r\n", timeout=3)
    assert host.at("ATE0").endswith(OK)
    assert host.at('AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1') == OK
    assert host.at('AT+QIOPEN=1,0,"TCP","tcp.example",7000,0,2') == b"\r\nCONNECT\r\n"
    advance(0.3)                                               # SMS DONE and PB DONE due
    host.write(b"ping")
    for _ in range(20):
        advance(0.05)
        host._fill()
        if b"ping" in bytes(host.pending):
            break
    assert host.read_until(b"ping", timeout=3) == b"ping"      # only the echo, no URC inside
    assert escape(host, advance) == OK
    assert host.read_until(b"PB DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE")
    assert host.at("AT+QINISTAT") == b"\r\n+QINISTAT: 7\r\n" + OK


# -- (3) 8ebcd68: a restart's saved settings vs ATZ on a paced port ---------------------------

def _paced(emulator, port) -> int:
    return emulator.run(lambda: port.port.baud)


def test_a_restart_with_a_saved_other_rate_keeps_baud_and_ipr_query_tells_the_port(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=115200;&W") == OK
    assert _paced(emulator, port) == 115200
    host.write(b"AT+CFUN=1,1\r")
    assert host.read_until(b"PB DONE\r\n", timeout=10) == OK + ALL_V1
    assert _paced(emulator, port) == 9600                    # documented: --baud's rate again
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK  # the saved setting (documented)


def test_z_after_a_restart_leaves_the_pace_the_host_talks_at(emulator, open_modem, strict_log):
    """After a restart the port paces at --baud's rate whatever AT+IPR? says; ATZ brings back
    the rate the setting already holds: the host, talking at 9600, keeps its link (behaviour.md:
    only a rate the restore changes the setting to moves the pace)."""
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=115200;&W") == OK
    host.write(b"AT+CFUN=1,1\r")
    host.read_until(b"PB DONE\r\n", timeout=10)
    assert host.at("ATE0").endswith(OK)
    assert host.at("ATZ") == OK
    assert host.at("AT+IPR?") == b"\r\n+IPR: 115200\r\n" + OK
    assert _paced(emulator, port) == 9600


def test_z_before_any_restart_switches_to_the_saved_rate(emulator, open_modem, strict_log):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=115200;&W") == OK
    assert host.at("AT+IPR=19200") == OK
    assert _paced(emulator, port) == 19200
    assert host.at("ATZ") == OK
    assert _paced(emulator, port) == 115200


# -- (3) 8ebcd68: at_log_payload's length parameter -------------------------------------------

@pytest.mark.parametrize("command, data, sent", [
    ("AT+QISEND=0,7", "ab\nc", b"ab\r\nc\r\n"),
    ("AT+QISEND=0,4", "ab\nc", b"ab\nc"),
    ("AT+QISEND=3,5,\"10.0.0.1\",7", "hello", b"hello"),           # UDP service's remote after
    ("AT+QFWRITE=1,6,5", "hello", b"hello\n"),
    ("AT+QFWRITE=5,7", "hello", b"hello\r\n"),
    ('AT+QSECWRITE="RAM:k",7,5', "ab\nc", b"ab\r\nc\r\n"),
    ("AT+QHTTPPOST=6,80,80", "ab\ncd", b"ab\ncd\n"),
    ("at+qsslsend=1,6", "hello", b"hello\n"),
    ('AT+QFUPL="RAM:a,b",8,6', "abc\nd", b"abc\r\nd\r\n"),               # comma inside the quoted name
    ("AT+QSSLSEND=2", "hello", b"hello"),                             # variable length: as logged
    ("AT+QSSLSEND=2", "ab\ncd", b"ab\ncd\n"),
])
def test_at_log_payload_takes_the_length_parameter(command, data, sent):
    assert at_log_payload(command, data) == sent


# -- traces recorded across a reboot replay ------------------------------------------------------

def test_a_trace_with_qinistat_through_restarts_replays(emulator, open_modem, tmp_path, capsys):
    from tests.e2e import replay_support as rs
    path = tmp_path / "boot.trace"
    host, advance, port = rs.traced_modem(open_modem, emulator, path)
    assert host.at("AT+QINISTAT") == b"\r\n+QINISTAT: 7\r\n" + OK
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05 + 0.13)
    assert host.read_until(b"+CFUN: 1\r\n", timeout=3) == _urc(b"RDY") + _urc(b"+CFUN: 1")
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 0\r\n" + OK
    advance(0.23)
    host.read_until(b"READY\r\n", timeout=3)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 1\r\n" + OK
    advance(0.24)
    host.read_until(b"SMS DONE\r\n", timeout=3)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 3\r\n" + OK
    # (a control API reboot is not in a trace -- documented -- a restart by command is)
    assert host.at("AT+CFUN=1,1") == b"AT+CFUN=1,1\r" + OK      # before PB DONE
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")   # (the port reads from RDY on)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 0\r\n" + OK
    advance(0.6)
    host.read_until(b"SMS DONE\r\n", timeout=3)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 3\r\n" + OK
    advance(0.02)
    host.read_until(b"PB DONE\r\n", timeout=3)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 7\r\n" + OK
    host.write(b"AT+QPOWD=1\r\n")
    assert host.read_until(b"POWERED DOWN\r\n", timeout=3) == b"AT+QPOWD=1\r" + OK + _urc(b"POWERED DOWN")
    advance(1.0 + 0.36)                                      # power on after 1 s, +CPIN: READY
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"RDY") + _urc(b"+CFUN: 1") + _urc(b"+CPIN: READY")
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 1\r\n" + OK
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=3) == _urc(b"+QUSIM: 1") + _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE")
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 7\r\n" + OK
    rs.finish(emulator)
    rs.replays(capsys, path)


# -- (2) 55c8f62: DTLS record cap, RSA-PSK certificate check ------------------------------------

def _psk():
    from tests.e2e import test_adversarial_psk_dtls_openssl as p
    return p


@pytest.fixture
def servers():
    started = []

    def keep(server):
        started.append(server)
        return server
    yield keep
    for server in started:
        server.stop()


def _rsa_psk_server(servers, leaf, dtls: bool, *extra: str):
    from emulator.testing.peers import OpenSslServer
    p = _psk()
    cert, key = leaf.load_args
    return servers(OpenSslServer(["-cert", cert, "-key", key, "-psk", p.PSK_HEX, "-psk_identity", "modem-1",
                                  "-dtls1_2" if dtls else "-tls1_2",
                                  "-cipher", "RSA-PSK-AES128-GCM-SHA256:@SECLEVEL=0", *extra]))


@pytest.mark.parametrize("dtls", [0, 1])
def test_rsa_psk_at_seclevel_0_opens_an_untrusted_server(ec2x_strict, emulator, servers, pki, dtls):
    from tests.e2e.ssl_options_support import cfg
    p = _psk()
    host, advance, _ = ec2x_strict
    server = _rsa_psk_server(servers, pki.wrong_server, dtls)
    p.route(emulator, server.port)
    p.psk_ctx(host, dtls=dtls)
    cfg(host, "seclevel", 0, 0)
    cfg(host, "ciphersuite", 0, "0X00AC")
    p.start_open(host)
    assert p.one_answer(host) == 0
    server.wait_for_output(rb"CIPHER is RSA-PSK-AES128-GCM-SHA256\n", 10)
    p.round_trip(host, server, b"rsa-psk no check\n", b"ok\n")
    p.close(host)


@pytest.mark.parametrize("dtls", [0, 1])
def test_rsa_psk_resumed_session_with_a_trusted_server(ec2x_strict, emulator, servers, pki, dtls):
    from tests.e2e.ssl_options_support import cfg, trust
    p = _psk()
    host, advance, _ = ec2x_strict
    server = _rsa_psk_server(servers, pki.server, dtls)
    p.route(emulator, server.port)
    p.psk_ctx(host, dtls=dtls)
    trust(host, 0, pki.ca.cert_pem)
    cfg(host, "ciphersuite", 0, "0X00AC")
    cfg(host, "session_cache", 0, 1)
    reused = []
    for _ in range(2):
        mark = server.mark()
        p.start_open(host)
        assert p.one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is RSA-PSK-AES128-GCM-SHA256\n", 10, since=mark)
        p.round_trip(host, server, b"again\n", b"yes\n")
        reused.append(b"Reused session-id" in server.stdout[mark:])
        p.close(host)
    assert reused == [False, True]


def test_dtls_buffer_sends_1460_fixed_and_variable_one_datagram_1461_refused(ec2x_strict, emulator, servers):
    from emulator.testing.peers import UdpMiddlebox
    from emulator.testing.peers.dtls_wire import CT_APP, records
    p = _psk()
    host, advance, _ = ec2x_strict
    server = servers(p.psk_server(cipher="PSK-AES128-CBC-SHA:@SECLEVEL=0"))
    with UdpMiddlebox(server.address) as box:
        p.route(emulator, box.port)
        p.psk_ctx(host)
        p.start_open(host)
        assert p.one_answer(host) == 0
        server.wait_for_output(rb"CIPHER is", 10)
        mark, before = server.mark(), len(box.sent("c2s"))
        a, b = b"A" * 1460, b"b" * 1460
        assert host.send_data(0, a) == b"\r\nSEND OK\r\n"
        assert host.send_data(0, b, fixed=False) == b"\r\nSEND OK\r\n"
        assert host.at("AT+QSSLSEND=0,1461") == b"\r\nERROR\r\n"
        p.wait_for(lambda: len(server.stdout) - mark >= 2920, 10, "the 2920 bytes")
        assert server.stdout[mark:] == a + b
        app = [[r for r in records(d) if r.type == CT_APP] for d in box.sent("c2s")[before:]]
        assert [len(x) for x in app] == [1, 1]
        p.close(host)


@pytest.mark.parametrize("dtls", [0, 1])
@pytest.mark.parametrize("leaf, code", [("server", 0), ("wrong_server", 566)])
def test_rsa_psk_at_seclevel_2_checks_the_servers_certificate(
        ec2x_strict, emulator, servers, pki, dtls, leaf, code):
    """seclevel 2 with a client identity configured; the server asks for none (Mbed TLS takes
    no CertificateRequest in an RSA-PSK handshake: an s_server with -Verify is 566 whatever)."""
    from tests.e2e.ssl_options_support import cfg, trust
    p = _psk()
    host, advance, _ = ec2x_strict
    server = _rsa_psk_server(servers, getattr(pki, leaf), dtls)
    p.route(emulator, server.port)
    p.psk_ctx(host, dtls=dtls)
    assert host.upload("UFS:cli.pem", pki.client.cert_pem).endswith(OK)
    assert host.upload("UFS:cli.key", pki.client.key_pem).endswith(OK)
    cfg(host, "clientcert", 0, '"UFS:cli.pem"')
    cfg(host, "clientkey", 0, '"UFS:cli.key"')
    trust(host, 0, pki.ca.cert_pem, seclevel=2)
    cfg(host, "ciphersuite", 0, "0X00AC")
    p.start_open(host)
    got = p.one_answer(host)
    if got == 0:
        server.wait_for_output(rb"CIPHER is RSA-PSK-AES128-GCM-SHA256\n", 10)
        p.round_trip(host, server, b"mutual\n", b"both\n")
    p.close(host)
    assert got == code


def test_a_reboot_while_powered_down_is_one_boot_and_qinistat_walks_it(emulator, manual):
    host, port = manual
    host.write(b"AT+QPOWD=1\r")
    assert host.read_until(b"POWERED DOWN\r\n", timeout=3) == OK + _urc(b"POWERED DOWN")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.5)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("reboot", ms=200)["ok"]          # the PWRKEY before the board's own
    assert _walk_boot(emulator, port, host, 0.2) == EXPECTED_WALK
    emulator.advance(port, 3)                                # the abandoned power-on is no second boot
    assert host.quiet_for(0.3) == b""
    assert qini(host) == 7


def test_user_profile_that_stays_off_after_qpowd_until_reboot(emulator, open_modem, tmp_path):
    text = EC2X.replace("qpowd_power_on_ms = 1000", "qpowd_power_on_ms = 0")
    host, port = open_modem(user_profile(tmp_path, text), manual_time=True)
    host.write(b"AT+QPOWD=1\r")
    assert host.read_until(b"POWERED DOWN\r\n", timeout=3) == OK + _urc(b"POWERED DOWN")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 30)
    host.write(b"AT+QINISTAT\r")                              # nobody answers a module that is off
    assert host.quiet_for(0.3) == b""
    assert emulator.control("reboot", ms=100)["ok"]
    assert _walk_boot(emulator, port, host, 0.1) == EXPECTED_WALK


def test_a_scenario_reboot_between_sms_done_and_pb_done_replays_with_its_scenario(emulator, open_modem, tmp_path,
                                                                                   capsys):
    from tests.e2e import replay_support as rs
    path, scenario = tmp_path / "sc.trace", tmp_path / "sc.toml"
    scenario.write_text('[[step]]\nafter = { command = "+CGMR" }\nop = "reboot"\nms = 100\n')
    host, advance, port = rs.traced_modem(open_modem, emulator, path)
    emulator.run_scenario(scenario)
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05 + 0.6)
    host.read_until(b"SMS DONE\r\n", timeout=3)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 3\r\n" + OK
    assert host.at("AT+CGMR").startswith(b"AT+CGMR\r\r\nEC25")     # the reboot follows its answer
    rs.flush(emulator)
    advance(0.1)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")   # (the port reads from RDY on)
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 0\r\n" + OK
    advance(0.62)
    assert _urc(b"RDY") + host.read_until(b"PB DONE\r\n", timeout=3) == ALL_V1   # one set: the old PB DONE never came
    assert host.at("AT+QINISTAT") == b"AT+QINISTAT\r\r\n+QINISTAT: 7\r\n" + OK
    rs.finish(emulator)
    rs.replays(capsys, path, "--scenario", str(scenario))


# A data-prompt command may end a line of several (docs/behaviour.md: "A command that enters a
# data prompt ends the line"); before 8ebcd68 any number on the line was a candidate length.
@pytest.mark.parametrize("command, data, sent", [
    ("AT+CMEE=2;+QSSLSEND=1,7", "ab\nc", b"ab\r\nc\r\n"),
    ('ATE0;+QFUPL="RAM:a",8,5', "ab\ncd", b"ab\r\ncd\r\n"),
])
def test_at_log_payload_of_a_prompt_command_last_on_a_line_of_several(command, data, sent):
    assert at_log_payload(command, data) == sent


def test_replay_of_an_upload_last_on_a_line_of_several(tmp_path, capsys, open_modem):
    from tests.e2e import replay_support as rs
    from tests.e2e.test_review_changes_1206_c import _checksum_line, _lines
    host, _ = open_modem("ec2x")
    host.write(b'AT+CMEE=2;+QFUPL="RAM:t.txt",8,5\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"ab\r\ncd\r\n")
    answer = host.read_until(re.compile(rb"(OK|ERROR)\r\n"))
    assert answer == b"\r\n" + _checksum_line(b"ab\r\ncd\r\n").encode() + b"\r\n\r\nOK\r\n"
    log = [">> ATE0", "<< OK", '>> AT+CMEE=2;+QFUPL="RAM:t.txt",8,5', "<< CONNECT", ">> ab", ">> cd"]
    log += ["<< " + x for x in _lines(answer)]
    path = tmp_path / "multi.log"
    path.write_bytes("".join(x + "\n" for x in log).encode("latin-1"))
    code, out = rs.replay(capsys, path)
    assert (code, out) == (0, "replayed 3 lines: no difference\n")


def test_qinistat_walk_on_a_paced_port(emulator, open_modem):
    host, port = open_modem("ec2x", manual_time=True, baud=9600)
    assert host.at("AT+CFUN=1,1") == OK
    assert _walk_boot(emulator, port, host, 0.05) == EXPECTED_WALK


def test_qinistat_walk_ml302_style_user_profile_with_the_ec2x_urcs(emulator, open_modem, tmp_path):
    """An ML302 profile given the EC2x's boot URCs and offsets: AT+QINISTAT (if the user adds it)
    follows them the same way."""
    text = ML302.replace('boot_urcs = ["+CPIN: READY"]', URCS + "\n" + OFFS)
    if '"+QINISTAT"' not in text:
        text = text.replace('"+QSECWRITE" = "*"', '"+QSECWRITE" = "*"\n"+QINISTAT" = "*"')
    host, port = open_modem(user_profile(tmp_path, text), manual_time=True)
    assert qini(host, echo=False) == 7
    assert host.at("AT+CFUN=1,1") == OK
    assert _walk_boot(emulator, port, host, 0.05) == EXPECTED_WALK


def test_a_reboot_while_held_boot_urcs_wait_behind_a_prompt_drops_them(emulator, manual):
    host, port = manual
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.38)
    host.read_until(b"+QUSIM: 1\r\n", timeout=3)
    host.write(b'ATE0;+QFUPL="RAM:a.txt",10\r')
    assert host.read_until(b"CONNECT\r\n", timeout=3) == b'ATE0;+QFUPL="RAM:a.txt",10\r\r\nCONNECT\r\n'
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.3)                                # SMS DONE and PB DONE held
    assert host.quiet_for(0.2) == b""
    assert emulator.control("reboot", ms=100)["ok"]
    assert host.quiet_for(0.2) == b""                        # not the old boot's held URCs
    emulator.advance(port, 0.1)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")   # (the port reads from RDY on)
    assert qini(host) == 0
    emulator.advance(port, 0.62)
    assert _urc(b"RDY") + host.read_until(b"PB DONE\r\n", timeout=3) == ALL_V1
    assert qini(host) == 7
    emulator.advance(port, 5)
    assert host.quiet_for(0.2) == b""
