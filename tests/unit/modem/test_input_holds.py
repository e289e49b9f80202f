"""Who holds the host's input back (Modem.pause_input / resume_input) and the AT+IFC output
hold of the interpreter, sans-IO: a sink, a fake backlog and a recorder of reading(on)."""
from __future__ import annotations

from emulator.io.transport import HIGH_WATER
from emulator.modem.modem import Modem
from emulator.modem.profile import load_profile
from emulator.testing.port import StubPort


def wired(backlog: list[int]):
    out = bytearray()
    modem = Modem(load_profile("ec2x"))
    port = StubPort(backlog=lambda: backlog[0])
    modem.attach(out.extend, port=port)
    return modem, out, port.reading


def test_input_is_read_again_only_when_no_owner_holds_it():
    modem, _, reading = wired([0])
    modem.pause_input("online")
    modem.pause_input("output")
    modem.resume_input("online")          # the connection has room; the host must still read
    assert reading == [False, False]
    modem.resume_input("output")
    assert reading[-1] is True
    modem.resume_input("output")          # (a resume by an owner that holds nothing: still on)
    assert reading[-1] is True


def test_ifc_flow_control_holds_command_input_until_the_host_reads():
    backlog = [0]
    modem, out, reading = wired(backlog)
    modem.feed(b"ATE0\r")
    modem.feed(b"AT+IFC=2,2\r")
    assert out.endswith(b"\r\nOK\r\n")
    out.clear()
    backlog[0] = HIGH_WATER + 1           # the host has not read 64 KiB of output
    modem.feed(b"AT+CGMI\r")
    assert out == b"" and reading == [False]
    backlog[0] = 0                        # it read them: the transport's drain callback
    modem.output_drained()
    assert out == b"\r\nQuectel\r\n\r\nOK\r\n" and reading == [False, True]


def test_without_flow_control_commands_run_whatever_waits_unread():
    backlog = [HIGH_WATER * 4]
    modem, out, reading = wired(backlog)
    modem.feed(b"ATE0\r")
    modem.feed(b"AT+CGMI\r")
    assert out.endswith(b"\r\nQuectel\r\n\r\nOK\r\n") and reading == []
