"""A restart's start-up URCs come spaced as a real EC21 gives them (profile
defaults.boot_urc_ms), and the SIM answers +CME ERROR: 14 (SIM busy) until its
+CPIN: READY.  Manual time: each URC appears only once the modem's clock reaches it."""
from __future__ import annotations

import pytest

from emulator.modem.profile import PROFILE_DIR, ProfileError, load_profile

OK = b"\r\nOK\r\n"
BUSY = b"\r\n+CME ERROR: 14\r\n"


@pytest.fixture
def manual(open_modem):
    host, port = open_modem("ec2x", manual_time=True)
    return host, port


def _urc(line: bytes) -> bytes:
    return b"\r\n" + line + b"\r\n"


def test_urcs_follow_the_profiles_offsets_after_rdy(emulator, manual):
    host, port = manual
    assert host.at("AT+CFUN=1,1") == OK
    assert host.quiet_for(0.2) == b""                        # nothing before the clock moves
    emulator.advance(port, 0.05)                             # AT+CFUN=1,1's RDY delay
    assert host.read_until(b"RDY\r\n", timeout=3) == _urc(b"RDY")
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.129)
    assert host.quiet_for(0.2) == b""                        # +CFUN: 1 is due at 130 ms, not yet
    emulator.advance(port, 0.001)
    assert host.read_until(b"+CFUN: 1\r\n", timeout=3) == _urc(b"+CFUN: 1")
    emulator.advance(port, 0.23)                             # 360 ms
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"+CPIN: READY")
    emulator.advance(port, 0.02)
    assert host.read_until(b"+QUSIM: 1\r\n", timeout=3) == _urc(b"+QUSIM: 1")
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.22)                             # 600 ms
    assert host.read_until(b"DONE\r\n", timeout=3) == _urc(b"+QIND: SMS DONE")
    assert host.quiet_for(0.2) == b""                        # PB DONE is due at 620 ms, not yet
    emulator.advance(port, 0.02)
    assert host.read_until(b"DONE\r\n", timeout=3) == _urc(b"+QIND: PB DONE")
    emulator.advance(port, 10)
    assert host.quiet_for(0.2) == b""                        # one set, nothing more


def test_the_sim_is_busy_until_cpin_ready(emulator, manual):
    host, port = manual
    assert host.at("AT+CPIN?") == b"\r\n+CPIN: READY\r\n" + OK      # up at start
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.2)                       # RDY and +CFUN: 1, not the SIM yet
    host.read_until(b"+CFUN: 1\r\n", timeout=3)
    assert host.at("ATE0").endswith(OK)                      # echo is on again after the reboot
    for line in ("AT+CPIN?", "AT+CIMI", "AT+QCCID"):
        assert host.at(line) == BUSY, line
    assert host.at("AT+CGSN").startswith(b"\r\n86")           # the IMEI is the module's, not the SIM's
    assert host.at("AT+CMEE=2;+CPIN?") == b"\r\n+CME ERROR: SIM busy\r\n"
    emulator.advance(port, 0.16)
    host.read_until(b"+CPIN: READY\r\n", timeout=3)
    assert host.at("AT+CPIN?") == b"\r\n+CPIN: READY\r\n" + OK
    assert host.at("AT+CIMI").startswith(b"\r\n46")


def test_a_restart_during_the_boot_abandons_it(emulator, manual):
    host, port = manual
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05 + 0.2)
    host.read_until(b"+CFUN: 1\r\n", timeout=3)
    host.write(b"AT+CFUN=1,1\r")                             # before +CPIN: READY
    host.read_until(OK, timeout=3)
    emulator.advance(port, 0.04)                             # when the first boot's +CPIN would come
    assert host.quiet_for(0.2) == b""
    emulator.advance(port, 0.02)
    got = host.read_until(b"RDY\r\n", timeout=3)
    assert got == _urc(b"RDY")
    assert host.at("AT+CPIN?") == b"AT+CPIN?\r" + BUSY       # the new boot's SIM is not up either
    emulator.advance(port, 1)
    got = host.read_until(b"PB DONE\r\n", timeout=3)
    assert got.count(b"+CPIN: READY") == 1 and b"RDY" not in got


def test_ml302_has_one_boot_urc_and_the_sim_is_ready_with_it(emulator, open_modem):
    host, port = open_modem("ml302", manual_time=True)
    assert host.at("AT+CFUN=1,1") == OK
    emulator.advance(port, 0.05)
    assert host.read_until(b"READY\r\n", timeout=3) == _urc(b"+CPIN: READY")
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+CPIN?") == b"\r\n+CPIN: READY\r\n" + OK


@pytest.mark.parametrize("offsets, why", [
    ("[0, 130]", "2 offsets for 6"),
    ("[0, 130, 100, 380, 600, 620]", "must not decrease"),
    ("[0, 130, 360, 380, 600, -1]", r"0\.\.600000, got -1"),
    ("[10, 130, 360, 380, 600, 620]", "the first is RDY's own"),
])
def test_profile_offsets_are_checked_at_load(tmp_path, offsets, why):
    text = (PROFILE_DIR / "ec2x.toml").read_text()
    assert "boot_urc_ms = [0, 130, 360, 380, 600, 620]" in text
    path = tmp_path / "mine.toml"
    path.write_text(text.replace("boot_urc_ms = [0, 130, 360, 380, 600, 620]", f"boot_urc_ms = {offsets}"))
    with pytest.raises(ProfileError, match=f"defaults.boot_urc_ms: .*{why}"):
        load_profile(str(path))


# Was a bug (found in review), fixed: a restart abandoned a pending answer but not the task
# behind it, so a "slow" command's own work ran after the restart, on the new module: a
# delayed AT+QICLOSE from before the power went set AT+QIGETERROR back to 0 seconds later.
def test_a_restart_cancels_a_slow_commands_work_not_only_its_answer(emulator, ec2x_on, tcp_echo):
    from tests.e2e.socket_support import qiopen
    host, port = ec2x_on
    qiopen(host, 0)
    assert emulator.control("slow", command="+QICLOSE", ms=3000)["ok"]
    host.write(b"AT+QICLOSE=0\r")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.1)
    assert emulator.control("reboot", ms=50)["ok"]
    emulator.advance(port, 1)
    host.read_until(b"PB DONE\r\n", timeout=3)
    assert host.at("ATE0").endswith(OK)
    assert host.at("AT+QISTATE=1,99") == b"\r\nERROR\r\n"          # sets AT+QIGETERROR to 552
    assert host.at("AT+QIGETERROR") == b'\r\n+QIGETERROR: 552,invalid parameter\r\n' + OK
    emulator.advance(port, 5)                                         # the old delay is over
    assert host.quiet_for(0.3) == b""                                 # no late OK either
    assert host.at("AT+QIGETERROR") == b'\r\n+QIGETERROR: 552,invalid parameter\r\n' + OK


# Was a risk (found in review), fixed: after a restart abandoned a pending answer nothing said
# "port_idle", so what waits for it (a scenario's `after` step) waited for the host's next
# command after the restart.
def test_a_restart_that_abandons_an_answer_says_port_idle(emulator, manual):
    host, port = manual
    seen = []

    async def listen():
        port.modem.on("port_idle", lambda **_: seen.append(port.modem.epoch))
    emulator.call(listen())
    assert emulator.control("slow", command="+CGMM", ms=5000)["ok"]
    host.write(b"AT+CGMM\r")
    emulator.wait_received(port, host.written)
    emulator.advance(port, 0.1)
    before = len(seen)
    assert emulator.control("reboot", ms=50)["ok"]
    assert len(seen) == before + 1 and seen[-1] == port.modem.epoch   # at the restart itself
