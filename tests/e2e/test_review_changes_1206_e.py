"""Adversarial review of 4b8fa9a..71ca7ee: registration searching (stat 2) until a restart's
+CPIN: READY and the +CGEV: NW DETACH after it (emulator/modem/registration.py), the EC2x boot
URCs ending with +QIND: PB DONE, ATZ/AT&F on a paced port (--baud), plain AT log replay
(parse_at_log / at_log_payload), tls_engine _pump_read after WANT_READ (TLS and DTLS), AT+QIDNSGIP
answers reused by later opens (Router.remember_answer) and the connect_refuse lookup.

Bugs found (fixed since, their tests pass): AT+CREG/CGREG/CEREG=1 set during a restart's boot on a
modem whose registration nothing had read (no URC at +CPIN: READY: a lazy feature); sans-IO
Modem.reboot without the "sim_ready" event; ATZ / AT&FZ moving a fresh --baud port's pace to the
profile's default rate; at_log_payload taking the length from the line's last command, not its
prompt command; DTLS: two warning no_renegotiation alerts in a row (or an empty-record pair then
one) in a datagram: the data records behind them waited for the next datagram (_pump_read).
"""
from __future__ import annotations

import re

import pytest

OK = b"\r\nOK\r\n"
ATTACH = 'AT+QICSGP=1,1,"UNINET","","",1;+QIACT=1'


def _urc(line: bytes) -> bytes:
    return b"\r\n" + line + b"\r\n"


@pytest.fixture
def timed(emulator, open_modem):
    host, port = open_modem("ec2x", manual_time=True)
    return host, emulator.advancer(port, host), port


def _restart_to_rdy(host, advance, first: bool = True) -> None:
    """AT+CFUN=1,1, then its RDY (50 ms later) and ATE0: 0.05 s into the boot, SIM busy."""
    assert host.at("AT+CFUN=1,1").endswith(OK)
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("ATE0") == b"ATE0\r" + OK


def _to_sim_ready(host, advance, extra: bytes = b"") -> None:
    """From RDY (+0 s) to +CPIN: READY (+0.36 s): +CFUN: 1 then +CPIN: READY, then `extra`."""
    advance(0.36)
    got = host.read_until(b"+CPIN: READY\r\n" + extra, timeout=3)
    assert got == _urc(b"+CFUN: 1") + _urc(b"+CPIN: READY") + extra, got


def _to_end(host, advance) -> None:
    advance(0.3)
    got = host.read_until(b"PB DONE\r\n", timeout=3)
    assert got == _urc(b"+QUSIM: 1") + _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE"), got


def _nw_detach_reported(emulator, host, creg: bool = False) -> None:
    """CGEREP on, a context up, the network drops the module: the two +CGEV lines."""
    assert host.at('AT+CGEREP=2,0;' + ATTACH[2:]) == OK
    assert host.read_until(b"ACT 1\r\n", timeout=3) == _urc(b"+CGEV: ME PDN ACT 1")
    assert emulator.control("register", stat=0)["ok"]
    got = host.read_until(b"NW DETACH\r\n", timeout=3)
    assert got == (_urc(b"+CREG: 0") if creg else b"") + _urc(b"+CGEV: NW PDN DEACT 1") + _urc(b'+QIURC: "pdpdeact",1') + _urc(b"+CGEV: NW DETACH"), got


# -- registration while a restart's SIM is read -----------------------------------------------

def test_before_cpin_ready_searching_no_attach_then_registered(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG?;+CGREG?;+CEREG?") == (
        b"\r\n+CREG: 0,2\r\n\r\n+CGREG: 0,2\r\n\r\n+CEREG: 0,2\r\n" + OK)
    assert host.at("AT+CGATT?") == b"\r\n+CGATT: 0\r\n" + OK
    assert host.at("AT+COPS?") == b"\r\n+COPS: 0\r\n" + OK
    assert host.at(ATTACH) == b"\r\nERROR\r\n"
    assert host.at("AT+CGATT=1") == b"\r\nERROR\r\n"
    assert host.at("AT+CPIN?") == b"\r\n+CME ERROR: 14\r\n"
    _to_sim_ready(host, advance)
    assert host.at("AT+CREG?;+CGATT?") == b"\r\n+CREG: 0,1\r\n\r\n+CGATT: 1\r\n" + OK
    assert host.at(ATTACH) == OK


def test_registration_urcs_enabled_during_boot_come_with_cpin_ready(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG=1;+CGREG=1;+CEREG=1") == OK
    _to_sim_ready(host, advance, _urc(b"+CREG: 1") + _urc(b"+CGREG: 1") + _urc(b"+CEREG: 1"))


def test_registration_urcs_enabled_during_boot_after_a_read_come_with_cpin_ready(emulator, timed):
    """The same once something read the registration (here AT+CREG? before the restart)."""
    host, advance, _ = timed
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG=1;+CGREG=1;+CEREG=1") == OK
    _to_sim_ready(host, advance, _urc(b"+CREG: 1") + _urc(b"+CGREG: 1") + _urc(b"+CEREG: 1"))
    _to_end(host, advance)
    assert host.quiet_for(0.2) == b""


def test_cfun0_during_boot_then_cfun1_then_network_detach_is_reported(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CFUN=0") == OK
    advance(1)                          # the SIM is off: the start-up's URCs still due do not come
    assert host.quiet_for(0.2) == b""
    assert host.at("AT+CREG?;+CGATT?") == b"\r\n+CREG: 0,0\r\n\r\n+CGATT: 0\r\n" + OK
    assert host.at(ATTACH) == b"\r\nERROR\r\n"
    assert host.at("AT+CPIN?;+QINISTAT") == b"\r\n+CME ERROR: 13\r\n"
    assert host.at("AT+CFUN=1") == OK
    assert host.at("AT+CREG?;+CPIN?") == b"\r\n+CREG: 0,2\r\n\r\n+CME ERROR: 14\r\n"   # searching, SIM busy
    advance(0.5)
    got = host.read_until(b"PB DONE\r\n", timeout=3)
    assert got == _urc(b"+CPIN: READY") + _urc(b"+QUSIM: 1") + _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE"), got
    assert host.at("AT+CREG?;+CGATT?") == b"\r\n+CREG: 0,1\r\n\r\n+CGATT: 1\r\n" + OK
    _nw_detach_reported(emulator, host)


@pytest.mark.parametrize("fun", [0, 4])
def test_cfun_off_and_on_before_cpin_ready_stays_searching_then_registers(emulator, timed, fun):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at(f"AT+CREG=1;+CFUN={fun}") == OK
    assert host.read_until(b"+CREG: 0\r\n", timeout=3) == _urc(b"+CREG: 0")
    assert host.at("AT+CFUN=1") == OK
    assert host.read_until(b"+CREG: 2\r\n", timeout=3) == _urc(b"+CREG: 2")
    assert host.at("AT+CREG?") == b"\r\n+CREG: 1,2\r\n" + OK
    if fun == 0:
        # AT+CFUN=0 switched the SIM off and ended the start-up; AT+CFUN=1 starts the SIM
        # again: its URCs, without the start-up's +CFUN: 1
        advance(0.5)
        got = host.read_until(b"PB DONE\r\n", timeout=3)
        assert got == (_urc(b"+CPIN: READY") + _urc(b"+CREG: 1") + _urc(b"+QUSIM: 1")
                       + _urc(b"+QIND: SMS DONE") + _urc(b"+QIND: PB DONE")), got
    else:
        _to_sim_ready(host, advance, _urc(b"+CREG: 1"))
    _nw_detach_reported(emulator, host, creg=True)


def test_two_restarts_quickly_one_boot_then_detach_reported(emulator, timed):
    host, advance, _ = timed
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("AT+CFUN=1,1") == b"AT+CFUN=1,1\r" + OK       # (echo: the restart's E1)
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("ATE0") == b"ATE0\r" + OK
    _to_sim_ready(host, advance)
    _to_end(host, advance)
    advance(2)
    assert host.quiet_for(0.2) == b""
    _nw_detach_reported(emulator, host)


def test_restart_after_sim_ready_before_pb_done_searches_again(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    _to_sim_ready(host, advance)
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,2\r\n" + OK
    _to_sim_ready(host, advance)
    _to_end(host, advance)
    _nw_detach_reported(emulator, host)


def test_control_register_0_during_boot_then_1_after(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG=1") == OK
    assert emulator.control("register", stat=0)["ok"]
    assert host.quiet_for(0.1) == b""                         # searching -> still not registered:
    assert host.at("AT+CREG?") == b"\r\n+CREG: 1,2\r\n" + OK      # (the SIM not read yet)
    _to_sim_ready(host, advance, _urc(b"+CREG: 0"))
    assert host.at(ATTACH) == b"\r\nERROR\r\n"
    assert emulator.control("register", stat=1)["ok"]
    assert host.read_until(b"+CREG: 1\r\n", timeout=3) == _urc(b"+CREG: 1")
    _to_end(host, advance)
    _nw_detach_reported(emulator, host, creg=True)


def test_control_register_roaming_during_boot_waits_for_the_sim(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG=1") == OK
    assert emulator.control("register", stat=5)["ok"]
    assert host.quiet_for(0.1) == b""
    assert host.at("AT+CREG?") == b"\r\n+CREG: 1,2\r\n" + OK
    _to_sim_ready(host, advance, _urc(b"+CREG: 5"))
    assert host.at("AT+CREG?") == b"\r\n+CREG: 1,5\r\n" + OK
    _nw_detach_reported(emulator, host, creg=True)


def test_atz_during_boot_changes_nothing_of_the_registration(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CREG=1;+CREG?") == b"\r\n+CREG: 1,2\r\n" + OK
    assert host.at("ATZ") == OK                             # (its own echo: E0 when read)
    assert host.at("ATE0") == b"ATE0\r" + OK                  # echo back (the saved E1)
    assert host.at("AT+CPIN?") == b"\r\n+CME ERROR: 14\r\n"
    _to_sim_ready(host, advance, _urc(b"+CREG: 1"))
    _to_end(host, advance)
    _nw_detach_reported(emulator, host, creg=True)


def test_cgatt0_during_boot_then_qiact_attaches_and_detach_is_reported(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+CGATT=0") == OK
    _to_sim_ready(host, advance)
    assert host.at("AT+CREG?;+CGREG?;+CGATT?") == (
        b"\r\n+CREG: 0,1\r\n\r\n+CGREG: 0,0\r\n\r\n+CGATT: 0\r\n" + OK)
    _nw_detach_reported(emulator, host)


def test_qpowd_power_on_searches_until_sim_then_detach_reported(emulator, timed):
    host, advance, port = timed
    host.write(b"AT+QPOWD=1\r")
    assert host.read_until(b"POWERED DOWN\r\n", timeout=3) == OK + _urc(b"POWERED DOWN")
    advance(1.0)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,2\r\n" + OK
    _to_sim_ready(host, advance)
    _nw_detach_reported(emulator, host)


def test_control_status_during_boot_says_searching(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    state = emulator.control("state")
    assert state["registration"] == {"stat": 2, "attached": False}, state
    _to_sim_ready(host, advance)
    assert emulator.control("state")["registration"] == {"stat": 1, "attached": True}


# -- a restart without an event loop (sans-IO) -------------------------------------------------

def _sans_io():
    from emulator.modem.modem import Modem
    from emulator.modem.profile import load_profile
    out: list[bytes] = []
    modem = Modem(load_profile("ec2x"))
    modem.attach(out.append)

    def at(line: str) -> bytes:
        out.clear()
        modem.feed(line.encode() + b"\r")
        return b"".join(out)
    assert at("ATE0") == b"ATE0\r" + OK
    assert at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK         # (the registration exists)
    return at


def test_sans_io_restart_then_cops0_gives_no_creg_urc():
    at = _sans_io()
    assert at("AT+CFUN=1,1") == OK
    assert at("ATE0") == b"ATE0\r" + OK
    assert at("AT+CREG=1;+CREG?") == b"\r\n+CREG: 1,1\r\n" + OK
    assert at("AT+COPS=0") == OK                               # still registered: no URC


def test_sans_io_restart_then_cfun0_reports_me_detach():
    at = _sans_io()
    assert at("AT+CFUN=1,1") == OK
    assert at("ATE0") == b"ATE0\r" + OK
    assert at("AT+CGEREP=2,0") == OK
    assert at("AT+CFUN=0") == OK + _urc(b"+CGEV: ME DETACH")


def test_sans_io_detach_without_a_restart_is_reported():
    at = _sans_io()
    assert at("AT+CGEREP=2,0") == OK
    assert at("AT+CFUN=0") == OK + _urc(b"+CGEV: ME DETACH")


# -- ATZ / AT&F on a paced port (--baud) --------------------------------------------------------

def _paced(emulator, port) -> int:
    return emulator.run(lambda: port.port.baud)


def test_ipr_then_z_on_one_line_ends_at_the_saved_rate(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=19200;Z") == OK
    assert _paced(emulator, port) == 115200
    assert host.at("AT+IPR?") == b"AT+IPR?\r\r\n+IPR: 115200\r\n" + OK      # (Z: E1 again)


def test_z_then_ipr_on_one_line_ends_at_the_ipr_rate(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("ATZ;+IPR=19200") == OK
    assert _paced(emulator, port) == 19200
    assert host.at("ATE0;+IPR?") == b"ATE0;+IPR?\r\r\n+IPR: 19200\r\n" + OK


def test_z_during_a_restarts_boot_keeps_the_restarts_pace(emulator, open_modem):
    """ATZ brings back the saved 57600 the restart's settings already hold: the pace stays at
    --baud's, the rate the host hears the boot URCs at (behaviour.md)."""
    host, port = open_modem("ec2x", baud=9600, manual_time=True)
    advance = emulator.advancer(port, host)
    assert host.at("AT+IPR=57600;&W") == OK
    assert _paced(emulator, port) == 57600
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert _paced(emulator, port) == 9600                   # --baud's after a restart
    assert host.at("ATZ") == OK                             # (the saved E0)
    assert _paced(emulator, port) == 9600
    advance(1)
    assert host.read_until(b"PB DONE\r\n", timeout=3).endswith(_urc(b"+QIND: PB DONE"))
    assert _paced(emulator, port) == 9600


def test_and_f_after_a_restart_with_a_saved_rate_goes_to_the_factory_rate(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=57600;&W") == OK
    host.write(b"AT+CFUN=1,1\r")
    host.read_until(b"PB DONE\r\n", timeout=10)
    assert _paced(emulator, port) == 9600
    assert host.at("AT&F") == OK                            # (the saved E0 until then)
    assert _paced(emulator, port) == 115200
    assert host.at("AT+IPR?") == b"AT+IPR?\r\r\n+IPR: 115200\r\n" + OK


def test_ipr_0_then_z_keeps_the_port_rate_when_the_saved_rate_is_0(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at("AT+IPR=0;&W") == OK
    assert host.at("AT+IPR=19200") == OK
    assert _paced(emulator, port) == 19200
    assert host.at("ATZ") == OK
    assert _paced(emulator, port) == 19200                  # (0: auto-baud, the rate is kept)
    assert host.at("AT+IPR?") == b"\r\n+IPR: 0\r\n" + OK


# -- plain AT log replay --------------------------------------------------------------------------

def _log(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    return path


BOOT_LINES = ["RDY", "+CFUN: 1", "+CPIN: READY", "+QUSIM: 1", "+QIND: SMS DONE", "+QIND: PB DONE"]


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r", "\r\r\n"])
def test_a_log_with_a_restart_replays(tmp_path, capsys, end):
    from tests.e2e import replay_support as rs
    lines = [">> ATE0", "<< OK", ">> AT+CFUN=1,1", "<< OK"] + ["<< " + x for x in BOOT_LINES]
    lines += [">> AT+CPIN?", "<< AT+CPIN?", "<< +CPIN: READY", "<< OK", ">> AT+CREG?", "<< AT+CREG?",
              "<< +CREG: 0,1", "<< OK"]
    path = _log(tmp_path, "restart.log", "\ufeff".encode().decode("latin-1") + end.join(lines) + end)
    assert rs.replay(capsys, path) == (0, "replayed 4 lines: no difference\n")


def test_a_log_with_mixed_line_ends_and_a_restart_in_a_terminal_capture_replays(tmp_path, capsys):
    from tests.e2e import replay_support as rs
    text = ("ATE1\r\nOK\r\nAT+CFUN=1,1\rOK\n" + "\r\n".join(BOOT_LINES) + "\r"
            "AT+QINISTAT\r\r\n+QINISTAT: 7\r\n\r\nOK\r\n")
    path = _log(tmp_path, "term.log", text)
    assert rs.replay(capsys, path) == (0, "replayed 3 lines: no difference\n")


def test_a_log_cut_right_after_a_restart_command_replays_as_far_as_it_goes(tmp_path, capsys):
    from tests.e2e import replay_support as rs
    path = _log(tmp_path, "cut.log", ">> ATE0\n<< OK\n>> AT+CFUN=1,1\n")
    assert rs.replay(capsys, path) == (0, "replayed 2 lines: no difference\n")


def test_an_upload_payload_with_an_empty_line_replays(open_modem, tmp_path, capsys):
    """A PEM chain with a blank line between its two certificates, uploaded with CR LF."""
    from tests.e2e import replay_support as rs
    from tests.e2e.test_review_changes_1206_c import _checksum_line, _lines
    data = b"-----A-----\r\nxyz\r\n\r\n-----B-----\r\n"
    host, _ = open_modem("ec2x")
    host.write(f'AT+QFUPL="RAM:c.pem",{len(data)},5\r'.encode())
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(data)
    answer = host.read_until(re.compile(rb"(OK|ERROR)\r\n"))
    assert answer == b"\r\n" + _checksum_line(data).encode() + b"\r\n" + OK
    log = [">> ATE0", "<< OK", f'>> AT+QFUPL="RAM:c.pem",{len(data)},5', "<< CONNECT"]
    log += [">> " + x for x in data.decode().split("\r\n")[:-1]] + ["<< " + x for x in _lines(answer)]
    path = _log(tmp_path, "blank.log", "\n".join(log) + "\n")
    assert rs.replay(capsys, path) == (0, "replayed 3 lines: no difference\n")


def test_a_data_prompt_command_ends_the_line_live(open_modem):
    """What the next two tests rely on: the rest of a line after AT+QFUPL is not run."""
    from tests.e2e.test_review_changes_1206_c import _checksum_line
    host, _ = open_modem("ec2x")
    host.write(b'AT+QFUPL="RAM:t.txt",8,5;+CMEE=2\r')
    assert host.read_until(b"CONNECT\r\n") == b"\r\nCONNECT\r\n"
    host.write(b"ab\r\ncd\r\n")
    assert host.read_until(re.compile(rb"(OK|ERROR)\r\n")) == (
        b"\r\n" + _checksum_line(b"ab\r\ncd\r\n").encode() + b"\r\n" + OK)


def test_at_log_payload_of_a_prompt_command_not_last_on_its_line():
    from emulator.tools.trace import at_log_payload
    assert at_log_payload('AT+QFUPL="RAM:t.txt",8,5;+CMEE=2', "ab\ncd") == b"ab\r\ncd\r\n"


def test_replay_of_an_upload_not_last_on_its_line(tmp_path, capsys):
    from tests.e2e import replay_support as rs
    from tests.e2e.test_review_changes_1206_c import _checksum_line
    log = [">> ATE0", "<< OK", '>> AT+QFUPL="RAM:t.txt",8,1;+CMEE=2', "<< CONNECT", ">> ab", ">> cd",
           "<< " + _checksum_line(b"ab\r\ncd\r\n"), "<< OK"]
    path = _log(tmp_path, "notlast.log", "\n".join(log) + "\n")
    assert rs.replay(capsys, path) == (0, "replayed 3 lines: no difference\n")


# -- tls_engine _pump_read: a warning alert and what follows it split across TCP segments -------

def _hs11():
    from tests.e2e import test_adversarial_hostile_servers_11 as h11
    return h11


def _blind(monkeypatch, names: str) -> None:
    if names == "public-fallback":               # (what native.input_pending says then)
        import tls_engine.native
        import tls_engine.session
        tls_engine.session._bind_library()       # (else the undo puts back an unbound None)
        for module in (tls_engine.native, tls_engine.session):
            monkeypatch.setattr(module, "input_pending", lambda buffer: None)


@pytest.fixture
def hmodem(ec2x_strict):
    host, advance, port = ec2x_strict
    assert host.at('AT+QSSLCFG="ciphersuite",1,0X009C') == OK
    return ec2x_strict


@pytest.mark.parametrize("names", ["private", "public-fallback"])
@pytest.mark.parametrize("cut", ["in_the_alert", "in_the_record_behind"])
def test_warning_alert_and_data_split_across_segments_all_delivered(hmodem, emulator, monkeypatch, names, cut):
    """Data, a warning no_renegotiation alert, data -- cut inside the alert or inside the record
    behind it, the rest 300 ms later; the server then waits: every byte reaches the host once,
    the session stays up."""
    import threading
    import time as _time
    h11 = _hs11()
    _blind(monkeypatch, names)
    host, advance, port = hmodem
    sent = threading.Event()

    def script(c) -> None:
        c.handshake()
        head, alert, tail = c.app(b"before|"), c.tx.seal(h11.CT_ALERT, b"\x01\x64"), c.app(b"|behind")
        wire = head + alert + tail
        at = len(head) + (len(alert) // 2 if cut == "in_the_alert" else len(alert) + len(tail) // 2)
        c.sock.sendall(wire[:at])
        _time.sleep(0.3)
        c.sock.sendall(wire[at:])
        sent.set()
        c.echo()

    with h11.Hand(emulator, script):
        h11.ssl_open(host, 1)
        assert h11.open_answer(host, 1) == 0
        assert sent.wait(5)
        assert h11.read_all(host, 1, 14, timeout=5) == b"before||behind"
        assert host.quiet_for(0.2) == b""
        assert h11.state(host, 1) == 2
        assert h11.at(host, "AT+QSSLCLOSE=1,0") == OK


@pytest.mark.parametrize("names", ["private", "public-fallback"])
def test_forty_warning_alerts_then_close_notify_in_later_segment(hmodem, emulator, monkeypatch, names):
    """40 warning alerts then data in one segment, a close_notify 300 ms later: the data, then
    one "closed", state 4."""
    import time as _time
    h11 = _hs11()
    _blind(monkeypatch, names)
    host, advance, port = hmodem

    def script(c) -> None:
        c.handshake()
        c.sock.sendall(b"".join(c.tx.seal(h11.CT_ALERT, b"\x01\x64") for _ in range(40)) + c.app(b"after 40"))
        _time.sleep(0.3)
        c.sock.sendall(c.tx.seal(h11.CT_ALERT, b"\x01\x00"))
        c.reader()

    with h11.Hand(emulator, script):
        h11.ssl_open(host, 1)
        assert h11.open_answer(host, 1) == 0
        host.seen(b'+QSSLURC: "closed",1\r\n', timeout=5)
        assert h11.recv(host, 1) == b"after 40"
        assert h11.recv(host, 1) == b""
        assert host.transcript.count(b'"closed",1') == 1
        assert h11.state(host, 1) == 4
        assert h11.at(host, "AT+QSSLCLOSE=1") == OK


# -- more of the boot: what the status commands say while the SIM is read ---------------------

def test_status_commands_before_cpin_ready_say_no_service(emulator, timed):
    host, advance, _ = timed
    _restart_to_rdy(host, advance)
    assert host.at("AT+QNWINFO") == b"\r\n+QNWINFO: No Service\r\n" + OK
    assert host.at('AT+QENG="servingcell"') == b'\r\n+QENG: "servingcell","SEARCH"\r\n' + OK
    assert host.at("AT+QCSQ") == b'\r\n+QCSQ: "NOSERVICE"\r\n' + OK
    assert host.at("AT+QLTS") == b'\r\n+QLTS: ""\r\n' + OK
    assert host.at("AT+COPS=2") == OK                       # deregistered from the start
    _to_sim_ready(host, advance)
    assert host.at("AT+CREG?;+COPS?") == b"\r\n+CREG: 0,0\r\n\r\n+COPS: 2\r\n" + OK
    assert host.at("AT+COPS=0") == OK
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK
    assert host.at("AT+QNWINFO") == b'\r\n+QNWINFO: "FDD LTE","46001","LTE BAND 3",1650\r\n' + OK
    _nw_detach_reported(emulator, host)


# -- connect_refuse: the name is looked up first, a refusal all the same ------------------------

def test_connect_refuse_of_an_unrouted_name_offline_is_566_then_565(emulator, timed):
    from tests.e2e.socket_support import error_code, qiopen
    host, advance, _ = timed
    assert host.at(ATTACH) == OK
    assert emulator.control("connect_refuse", count=1)["ok"]
    qiopen(host, 0, addr="nowhere.example", port=7000, code=566)
    assert error_code(host) == 566
    assert host.at("AT+QICLOSE=0") == OK
    qiopen(host, 1, addr="nowhere.example", port=7000, code=565)     # no fault left: offline DNS
    assert host.at("AT+QICLOSE=1") == OK


def test_connect_refuse_of_a_name_the_idna_step_refuses_is_566(emulator, timed):
    from tests.e2e.socket_support import qiopen
    host, advance, _ = timed
    assert host.at(ATTACH) == OK
    assert emulator.control("connect_refuse", count=1)["ok"]
    qiopen(host, 0, addr="a" * 70 + ".example", port=7000, code=566)   # (a label over 63)
    assert host.at("AT+QICLOSE=0") == OK


def test_qidnsgip_answer_is_the_address_of_later_opens_on_the_real_network(tmp_path):
    """On the real network (only "localhost" looked up): AT+QIDNSGIP's answer is what
    AT+QISTATE shows for a later open of the name refused by connect_refuse, also when the name
    is written in another case."""
    from emulator.io.app import BackgroundEmulator
    from emulator.testing.host import Host
    from tests.e2e.test_review_replay_changes_5 import QISTATE_ADDR
    from tests.e2e.replay_support import advance_until
    with BackgroundEmulator(offline=False) as emu:
        port = emu.add_modem("ec2x", state_dir=tmp_path / "state", manual_time=True)
        host = Host(port.path)
        try:
            emu.run(port.port.look_for_host)
            assert host.at("ATE0").endswith(OK)
            advance = emu.advancer(port, host)
            assert host.at(ATTACH) == OK
            assert emu.run(emu.router.answered_address, "localhost") is None
            assert host.at('AT+QIDNSGIP=1,"LocalHost"') == OK
            got = advance_until(host, advance, b'+QIURC: "dnsgip","127.0.0.1"\r\n', step=0.1)
            assert got.endswith(b'+QIURC: "dnsgip","127.0.0.1"\r\n'), got
            assert emu.run(emu.router.answered_address, "localhost") == "127.0.0.1"
            assert emu.control("net", latency_ms=300)["ok"]
            assert emu.control("connect_refuse", count=1)["ok"]
            assert host.at('AT+QIOPEN=1,0,"TCP","localhost",7000,0,1') == OK
            advance(0.2)
            m = QISTATE_ADDR.fullmatch(host.at("AT+QISTATE=1,0"))
            assert m and m.group(1) == b"127.0.0.1" and m.group(3) == b"1", m
            assert advance_until(host, advance, b"+QIOPEN: 0,566\r\n") == b"\r\n+QIOPEN: 0,566\r\n"
            assert host.at("AT+QICLOSE=0") == OK
        finally:
            host.close()


@pytest.mark.parametrize("line", ["ATZ", "AT&FZ"])
def test_z_on_a_fresh_paced_port_keeps_its_rate(emulator, open_modem, line):
    host, port = open_modem("ec2x", baud=9600)
    assert host.at(line) == OK
    assert _paced(emulator, port) == 9600


def test_a_log_polling_the_sim_during_a_restart_replays(tmp_path, capsys):
    """The host asks AT+CPIN? right after RDY (SIM busy: +CME ERROR: 14), the boot URCs follow."""
    from tests.e2e import replay_support as rs
    lines = [">> ATE0", "<< OK", ">> AT+CFUN=1,1", "<< OK", "<< RDY", ">> AT+CPIN?", "<< AT+CPIN?",
             "<< +CME ERROR: 14"] + ["<< " + x for x in BOOT_LINES[1:]]
    lines += [">> AT+QINISTAT", "<< AT+QINISTAT", "<< +QINISTAT: 7", "<< OK"]
    path = _log(tmp_path, "poll.log", "\r\n".join(lines) + "\r\n")
    assert rs.replay(capsys, path) == (0, "replayed 4 lines: no difference\n")


def test_a_trace_with_registration_urcs_through_a_restart_replays(emulator, open_modem, tmp_path, capsys):
    from tests.e2e import replay_support as rs
    path = tmp_path / "reg.trace"
    host, advance, port = rs.traced_modem(open_modem, emulator, path)
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,1\r\n" + OK
    assert host.at("AT+CFUN=1,1") == OK
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("AT+CEREG=1;+CEREG?") == b"AT+CEREG=1;+CEREG?\r\r\n+CEREG: 1,2\r\n" + OK
    assert host.at(ATTACH) == ATTACH.encode() + b"\r\r\nERROR\r\n"
    advance(0.36)
    assert host.read_until(b"+CEREG: 1\r\n", timeout=3) == (
        _urc(b"+CFUN: 1") + _urc(b"+CPIN: READY") + _urc(b"+CEREG: 1"))
    assert host.at(ATTACH) == ATTACH.encode() + b"\r" + OK
    advance(1)
    host.read_until(b"PB DONE\r\n", timeout=3)
    assert host.at("AT+CGATT=0") == b"AT+CGATT=0\r" + OK
    assert host.read_until(b"+CEREG: 0\r\n", timeout=3) == _urc(b"+CEREG: 0")
    rs.finish(emulator)
    rs.replays(capsys, path)


def test_an_ml302_log_with_a_multi_line_prompt_upload_replays(tmp_path, capsys):
    """AT+QSECWRITE (ML302: a '>' prompt, no length, Ctrl+Z): the >> lines after '>' are one
    payload, LF after each line (README: no length given -> LF)."""
    from tests.e2e import replay_support as rs
    log = ">> ATE0\n<< OK\n>> AT+QSECWRITE=0\n<< >\n>> -----BEGIN X-----\n>> abc\n>> -----END X-----\n" \
          "<< +QSECWRITE: 38,4022\n<< OK\n>> AT+QSECREAD=0\n<< +QSECREAD: 1,4022\n<< OK\n"
    path = _log(tmp_path, "ml.log", log)
    assert rs.replay(capsys, path, "--profile", "ml302") == (0, "replayed 4 lines: no difference\n")


# -- DTLS: records behind TWO warning alerts in one datagram ---------------------------------------

NO_RENEG = b"\x01\x64"


@pytest.mark.parametrize("layout", [
    "alert_alert_data_data",
    "data_alert_alert_data",
    "empty_empty_alert_data_data",
    "alert_data_data",
    "data_alert_data",
    "alert_empty_empty_data_data",
])
def test_dtls_records_behind_warning_alerts_in_one_datagram(tmp_path, pki, layout):
    """One datagram sealed with the session's keys: no_renegotiation alerts (Mbed TLS's
    WANT_READ) and data records in the order `layout` names; every data record reaches the host
    at once (docs/behaviour.md: the records behind such an alert reach the host at once)."""
    from tests.e2e.test_review_changes_1206_c import dtls_session_with_injector
    pieces = {"alert": (21, NO_RENEG)}
    data = [b"one\n", b"two\n"]
    wire = []
    for part in layout.split("_"):
        if part == "empty":
            wire.append((23, b""))
        else:
            wire.append(pieces["alert"] if part == "alert" else (23, data.pop(0)))
    with dtls_session_with_injector(tmp_path, pki) as (host, server, box, inject):
        inject(wire)
        try:
            got = host.read_until(b"two\n\r\n", 3)
        except AssertionError:            # (stalled: the next datagram moves them on)
            inject([(23, b"next\n")], first=10)
            got = b"STALLED " + host.read_until(b"next\n\r\n", 3)
        if layout == "data_alert_alert_data":   # (the first record may go on its own)
            got = got.replace(b'\r\n+QSSLURC: "recv",4,4\r\none\n\r\n\r\n+QSSLURC: "recv",4,4\r\n',
                              b'\r\n+QSSLURC: "recv",4,8\r\none\n')
        assert got == b'\r\n+QSSLURC: "recv",4,8\r\none\ntwo\n\r\n', got
        assert host.quiet_for(0.2) == b""
        assert host.send_data(4, b"still up\n") == b"\r\nSEND OK\r\n"
        server.wait_for_output(rb"still up", 10)
        assert host.at("AT+QSSLCLOSE=4,0") == OK


@pytest.mark.parametrize("names", ["private", "public-fallback"])
def test_tls_two_warning_alerts_in_a_row_then_data_in_one_segment(hmodem, emulator, monkeypatch, names):
    """The TLS counterpart of the DTLS case: TLS reads a record at a time from the input, so the
    data behind two alerts in a row come at once."""
    import threading
    h11 = _hs11()
    _blind(monkeypatch, names)
    host, advance, port = hmodem
    sent = threading.Event()

    def script(c) -> None:
        c.handshake()
        wire = c.app(b"one|")                                     # (sealed in order: sequence numbers)
        wire += c.tx.seal(h11.CT_ALERT, NO_RENEG)
        wire += c.tx.seal(h11.CT_ALERT, NO_RENEG)
        c.sock.sendall(wire + c.app(b"two"))
        sent.set()
        c.echo()

    with h11.Hand(emulator, script):
        h11.ssl_open(host, 1, 1)                                  # direct push
        assert h11.open_answer(host, 1) == 0
        assert sent.wait(5)
        assert h11.push_read(host, 1, 7, timeout=3)[0] == b"one|two"
        assert h11.state(host, 1) == 2
        assert h11.at(host, "AT+QSSLCLOSE=1,0") == OK


def test_two_restarts_before_the_first_rdy_one_boot_then_detach_reported(emulator, timed):
    host, advance, _ = timed
    assert host.at("AT+CFUN=1,1") == OK
    host.write(b"AT+CFUN=1,1\r")                               # before RDY: lost (the port is not up)
    assert host.quiet_for(0.2) == b""
    assert emulator.control("reboot", ms=50)["ok"]             # a second restart before the first RDY
    advance(0.05)
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+CREG?") == b"\r\n+CREG: 0,2\r\n" + OK
    _to_sim_ready(host, advance)
    _to_end(host, advance)
    advance(2)
    assert host.quiet_for(0.2) == b""
    _nw_detach_reported(emulator, host)


@pytest.mark.parametrize("command, data, sent", [
    ('AT+QFUPL="RAM:a;b.txt",8', "ab\ncd", b"ab\r\ncd\r\n"),            # a ';' inside the quoted name
    ('ATE0;+CMEE=2;+QFUPL="RAM:x",0008,5', "ab\ncd", b"ab\r\ncd\r\n"),  # leading zeros
    ('AT+QFUPL="RAM:x",3', "abc", b"abc"),                             # one line, no line end
    ('AT+QFUPL="RAM:x",5', "abc", b"abc\r\n"),
    ('AT+QFUPL="RAM:x",4', "abc", b"abc\n"),
    ('AT+QFUPL="RAM:x",5', "a\n\nb", b"a\n\nb\n"),                      # an empty line inside
])
def test_at_log_payload_more_shapes(command, data, sent):
    from emulator.tools.trace import at_log_payload
    assert at_log_payload(command, data) == sent


def test_parse_at_log_with_a_bom_cr_only_lines_and_echo_lines():
    from emulator.tools.trace import parse_at_log
    text = "\xef\xbb\xbf>> AT\r<< AT\r<< OK\r>> AT+QFUPL=\"RAM:p\",8\r<< CONNECT\r>> ab\r>> cd\r<< +QFUPL: 8,1\r<< OK\r"
    assert parse_at_log(text) == [("AT", ["AT", "OK"]), ('AT+QFUPL="RAM:p",8', ["CONNECT"]),
                                  ("ab\ncd", ["+QFUPL: 8,1", "OK"])]
