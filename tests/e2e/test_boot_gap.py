"""Between a restart and its RDY the module's UART is not up: what the host writes then is
lost -- not echoed, not answered, not run later (docs/behaviour.md, faults: reboot; AT+CFUN).

A real EC2x takes seconds to restart and says RDY when its port reads again; a driver that
polls "AT" meanwhile gets nothing, and lines it wrote right behind AT+CFUN=1,1 are gone.
The modems run on manual time: nothing here depends on the machine's speed."""
from __future__ import annotations

OK = b"\r\nOK\r\n"
RDY = b"\r\nRDY\r\n"


def test_lines_behind_cfun_reset_in_the_same_write_are_lost(ec2x_strict):
    host, advance, _ = ec2x_strict
    host.write(b"AT+CFUN=1,1\r\nAT+CGMR\r\nAT+CMEE?\r\n")
    assert host.read_until(OK) == OK
    advance(0.05)
    assert host.read_until(RDY) == RDY
    assert host.quiet_for(0.2) == b""               # neither line was run, before or after RDY
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK   # (AT&W's set: echo on)


def test_bytes_written_during_the_gap_are_lost_and_the_port_reads_again_at_rdy(emulator, ec2x_strict):
    host, advance, _ = ec2x_strict
    assert host.at("AT+CMEE=2") == OK                # (not saved: the restart puts back AT&W's)
    assert emulator.control("reboot", ms=500) == {"ok": True}
    advance(0.1)
    host.write(b"AT\r\nAT+CMEE=0\r\n")               # a driver's alive poll, and a setting
    advance(0.2)
    host.write(b"AT+C")                              # half a line, finished after RDY
    assert host.quiet_for(0.2) == b""
    advance(0.2)                                     # 0.5 s: RDY
    assert host.read_until(RDY) == RDY
    host.write(b"MEE?\r\n")                         # its start went in the gap: not a command
    assert host.quiet_for(0.3) == b"MEE?\r"          # (echoed: AT&W's set has echo on)
    assert host.at("AT+CMEE?") == b"AT+CMEE?\r\r\n+CMEE: 1\r\n" + OK    # AT+CMEE=0 never ran


def test_cfun_reset_with_echo_on_echoes_nothing_of_the_gap(ec2x_strict):
    """ATE1: the restarting module echoes none of the poll; the AT&W set (echo on) is back
    after RDY, so the next line is echoed."""
    host, advance, _ = ec2x_strict
    assert host.at("ATE1&W") == OK                  # (echo was off for this line)
    host.write(b"AT+CFUN=1,1\r\n")
    assert host.read_until(OK) == b"AT+CFUN=1,1\r" + OK
    host.write(b"AT\r\n")
    assert host.quiet_for(0.2) == b""
    advance(0.05)
    assert host.read_until(RDY) == RDY
    host.write(b"AT\r\n")
    assert host.read_until(OK) == b"AT\r" + OK


def test_ml302_restart_loses_the_gap_too(emulator, ml302_strict):
    """The ML302's first start-up line is +CPIN: READY (its profile's boot_urcs): the port
    reads again from it on."""
    host, advance, _ = ml302_strict
    assert host.at("AT+CMEE=2") == OK
    host.write(b"AT+CFUN=1,1\r\nAT+CMEE=0\r\n")
    assert host.read_until(OK) == OK
    host.write(b"AT\r\n")
    assert host.quiet_for(0.2) == b""
    advance(0.05)
    assert host.read_until(b"\r\n+CPIN: READY\r\n") == b"\r\n+CPIN: READY\r\n"
    assert host.quiet_for(0.2) == b""
    assert host.at("ATE0") == b"ATE0\r" + OK
    assert host.at("AT+CMEE?") == b"\r\n+CMEE: 1\r\n" + OK
