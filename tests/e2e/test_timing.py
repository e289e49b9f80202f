"""Timing like a real module: output paced at a baud rate (--baud, AT+IPR switching
after its OK) and the profile's timing.response_delay_ms.  Pacing runs on real time,
so its tests assert only the lower bound a UART imposes (bytes cannot arrive faster
than baud / 10 a second), never the emulator's speed."""
from __future__ import annotations

import time

import pytest


def _urc_bytes(emulator, modem: int, total: int) -> bytes:
    """A URC of exactly `total` bytes on the wire (CR LF text CR LF)."""
    text = "+X: " + "y" * (total - 8)
    assert emulator.control("urc", modem, text=text)["ok"]
    return f"\r\n{text}\r\n".encode()


def _paced_urc(emulator, host, total: int) -> float:
    """Seconds from raising a `total`-byte URC until the host has all of it."""
    start = time.monotonic()
    expected = _urc_bytes(emulator, 0, total)
    assert host.read_exactly(total, timeout=3) == expected
    return time.monotonic() - start


def test_baud_paces_output_and_the_paced_bytes_count_as_backlog(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)                     # 960 bytes/s
    start = time.monotonic()
    expected = _urc_bytes(emulator, 0, 480)
    backlog = emulator.run(lambda: port.port.backlog)
    assert backlog > 400                                            # waiting in the port
    assert emulator.run(port.modem.output_backlog) == backlog       # what flow control reads
    assert host.read_exactly(480, timeout=3) == expected
    assert time.monotonic() - start >= 0.45                         # 480 bytes at 960 bytes/s
    assert emulator.run(lambda: port.port.backlog) == 0
    assert host.at("AT") == b"\r\nOK\r\n"


def test_unpaced_by_default_and_ipr_changes_no_timing(emulator, open_modem):
    host, port = open_modem("ec2x")
    assert host.at("AT+IPR=9600") == b"\r\nOK\r\n"
    assert host.at("AT+IPR?") == b"\r\n+IPR: 9600\r\n\r\nOK\r\n"
    assert emulator.run(lambda: port.port.baud) is None


def test_baud_with_uart_noise_keeps_every_byte_and_the_pace(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    assert emulator.control("uart_noise", on=True, seed=5)["ok"]
    start = time.monotonic()
    expected = _urc_bytes(emulator, 0, 480)
    got, reads = b"", 0
    while len(got) < len(expected) and time.monotonic() - start < 3:
        chunk = host.ser.read(max(1, host.ser.in_waiting))
        if chunk:
            reads += 1
            got += chunk
    assert got == expected and reads > 1
    assert time.monotonic() - start >= 0.45


def test_ipr_answer_goes_at_the_old_rate_then_the_pace_follows(emulator, open_modem):
    host, port = open_modem("ec2x", baud=115200)
    clean = host.at("AT+QSSLCFG=?")                                 # its length, quickly
    # The whole line's answer, OK included, leaves at 115200; only then 9600.
    host.write("AT+QSSLCFG=?;+IPR=9600\r")
    assert host.read_until(b"\r\nOK\r\n", timeout=3) == clean
    assert emulator.run(lambda: port.port.baud) == 9600
    assert _paced_urc(emulator, host, 480) >= 0.45
    assert host.at("AT+IPR?") == b"\r\n+IPR: 9600\r\n\r\nOK\r\n"


def test_ipr_up_keeps_the_old_rate_for_its_own_answer(emulator, open_modem):
    host, port = open_modem("ec2x", baud=9600)
    start = time.monotonic()
    host.write("AT+QSSLCFG=?;+IPR=115200\r")
    answer = host.read_until(b"\r\nOK\r\n", timeout=3)
    assert answer.startswith(b"\r\n+QSSLCFG: ") and len(answer) > 300
    assert time.monotonic() - start >= (len(answer) - 10) / 960      # still at 9600
    assert emulator.run(lambda: port.port.baud) == 115200
    assert host.at("AT+IPR=0") == b"\r\nOK\r\n"                      # auto-baud: rate kept
    assert emulator.run(lambda: port.port.baud) == 115200


def test_bad_baud_is_refused(emulator, tmp_path):
    with pytest.raises(ValueError):
        emulator.add_modem("ec2x", state_dir=tmp_path / "s", baud=0)
    with pytest.raises(ValueError):
        emulator.add_modem("ec2x", state_dir=tmp_path / "s", baud=-5)
