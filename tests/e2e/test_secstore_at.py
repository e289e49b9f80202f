"""ML302 certificate slots (AT+QSECWRITE / QSECREAD / QSECDEL) over the pty."""
from __future__ import annotations

from pathlib import Path

from emulator.storage.checksum import xor16

CTRL_Z, ESC = b"\x1a", b"\x1b"


def pem(size: int) -> bytes:
    """PEM-like text of exactly `size` bytes (no Ctrl+Z / ESC inside)."""
    body = b"-----BEGIN CERTIFICATE-----\r\n"
    line = b"MIIDdzCCAl+gAwIBAgIEAgAAuTANBgkqhkiG9w0BAQUFADBaMQswCQYDVQQGEwJJ\r\n"
    while len(body) < size:
        body += line
    return body[:size - 1] + b"\n"


def cs(data: bytes) -> str:
    return f"{xor16(data):04x}"


def write_slot(host, slot: int, data: bytes) -> bytes:
    host.write(f"AT+QSECWRITE={slot}\r")
    assert host.read_until(b"> ") == b"\r\n> "
    host.write(data + CTRL_Z)
    return host.read_until(b"OK\r\n")


def test_manual_sized_upload_read_delete(ml302):
    cert = pem(1388)
    assert write_slot(ml302, 0, cert) == f"\r\n+QSECWRITE: 1388,{cs(cert)}\r\n\r\nOK\r\n".encode()
    assert ml302.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{cs(cert)}\r\n\r\nOK\r\n".encode()
    assert ml302.at("AT+QSECDEL=0") == b"\r\nOK\r\n"
    assert ml302.at("AT+QSECREAD=0") == b"\r\n+CME ERROR: 22\r\n"
    # Deleting an empty slot is harmless (hosts delete before writing).
    assert ml302.at("AT+QSECDEL=0") == b"\r\nOK\r\n"


def test_binary_bytes_and_odd_length_checksum(ml302):
    data = b"\x00\r\n\x12\x34\x56"     # NUL, CR, LF are certificate bytes like any other
    assert write_slot(ml302, 2, data) == f"\r\n+QSECWRITE: 6,{cs(data)}\r\n\r\nOK\r\n".encode()
    odd = b"\x12\x34\x56"              # odd length: last byte is a high byte, 0x1234 ^ 0x5600
    assert write_slot(ml302, 1, odd) == b"\r\n+QSECWRITE: 3,4434\r\n\r\nOK\r\n"
    assert ml302.at("AT+QSECREAD=1") == b"\r\n+QSECREAD: 1,4434\r\n\r\nOK\r\n"


def test_occupied_slot_refused_before_prompt(ml302):
    write_slot(ml302, 0, b"first")
    # No "> ": the refusal comes at once, and the next bytes are commands again.
    assert ml302.at("AT+QSECWRITE=0") == b"\r\n+CME ERROR: 3\r\n"
    assert ml302.at("AT") == b"\r\nOK\r\n"
    assert ml302.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{cs(b'first')}\r\n\r\nOK\r\n".encode()
    assert ml302.at("AT+CMEE=0") == b"\r\nOK\r\n"
    assert ml302.at("AT+QSECWRITE=0") == b"\r\nERROR\r\n"


def test_escape_cancels_and_stores_nothing(ml302):
    ml302.write("AT+QSECWRITE=1\r")
    ml302.read_until(b"> ")
    ml302.write(b"half a certificate" + ESC)
    assert ml302.read_until(b"OK\r\n") == b"\r\nOK\r\n"
    assert ml302.at("AT+QSECREAD=1") == b"\r\n+CME ERROR: 22\r\n"
    assert write_slot(ml302, 1, b"ok") == f"\r\n+QSECWRITE: 2,{cs(b'ok')}\r\n\r\nOK\r\n".encode()


def test_empty_and_oversized_uploads(ml302):
    ml302.write("AT+QSECWRITE=2\r")
    ml302.read_until(b"> ")
    ml302.write(CTRL_Z)
    assert ml302.read_until(b"\r\n+CME ERROR: 50\r\n")
    ml302.write("AT+QSECWRITE=2\r")
    ml302.read_until(b"> ")
    ml302.write(pem(16385) + CTRL_Z)
    assert ml302.read_until(b"\r\n+CME ERROR: 20\r\n")
    assert ml302.at("AT+QSECREAD=2") == b"\r\n+CME ERROR: 22\r\n"
    assert write_slot(ml302, 2, pem(16384)).startswith(b"\r\n+QSECWRITE: 16384,")


def test_bad_crtflag(ml302):
    for line in ("AT+QSECWRITE=3", "AT+QSECREAD=-1", "AT+QSECDEL=x", "AT+QSECREAD=0,1"):
        assert ml302.at(line) == b"\r\n+CME ERROR: 50\r\n", line


def test_test_forms_keep_the_manuals_spacing(ml302):
    assert ml302.at("AT+QSECWRITE=?") == b"\r\n+QSECWRITE:(0~2)\r\n\r\nOK\r\n"
    assert ml302.at("AT+QSECREAD=?") == b"\r\n+QSECREAD: (0~2)\r\n\r\nOK\r\n"
    assert ml302.at("AT+QSECDEL=?") == b"\r\n+QSECDEL:(0~2)\r\n\r\nOK\r\n"


def test_atv0_prompt(ml302):
    ml302.write("ATV0\r")
    assert ml302.read_exactly(2) == b"0\r"
    ml302.write("AT+QSECWRITE=0\r")
    assert ml302.read_exactly(2) == b"> "
    ml302.write(b"abcd" + CTRL_Z)
    assert ml302.read_until(b"0\r") == f"+QSECWRITE: 4,{cs(b'abcd')}\r\n0\r".encode()


def test_restart_persistence_and_tampering(open_modem, tmp_path):
    state = tmp_path / "ml302-state"
    host, _ = open_modem("ml302", state_dir=state)
    cert = pem(900)
    write_slot(host, 0, cert)
    write_slot(host, 1, b"client")
    host2, _ = open_modem("ml302", state_dir=state)
    assert host2.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{cs(cert)}\r\n\r\nOK\r\n".encode()
    slot_file = Path(state) / "secstore" / "slot0.bin"
    blob = bytearray(slot_file.read_bytes())
    blob[-20] ^= 0x01                       # one flipped ciphertext bit
    slot_file.write_bytes(bytes(blob))
    assert host2.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 0,{cs(cert)}\r\n\r\nOK\r\n".encode()
    (Path(state) / "secstore" / "slot1.bin").write_bytes(b"ML")      # truncated
    assert host2.at("AT+QSECREAD=1") == b"\r\n+QSECREAD: 0,0000\r\n\r\nOK\r\n"
    # Recovery as on the module: delete, then write again.
    assert host2.at("AT+QSECDEL=0") == b"\r\nOK\r\n"
    assert write_slot(host2, 0, cert).startswith(b"\r\n+QSECWRITE: 900,")
    assert host2.at("AT+QSECREAD=0") == f"\r\n+QSECREAD: 1,{cs(cert)}\r\n\r\nOK\r\n".encode()


def test_secstore_commands_absent_on_ec2x(ec2x):
    assert ec2x.at("AT+QSECREAD=0") == b"\r\nERROR\r\n"
