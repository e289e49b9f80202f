"""Tests for emulator.storage.checksum: the modules' 16-bit XOR checksum (its speed is a
bench/ figure, not a test)."""

import os
import random

import pytest

from emulator.storage.checksum import format_checksum, xor16


def naive_xor16(data: bytes) -> int:
    """The manual's formula, written as literally as possible."""
    if len(data) % 2:
        data = data + b"\x00"
    value = 0
    for i in range(0, len(data), 2):
        value ^= (data[i] << 8) | data[i + 1]
    return value


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0x0000),  # no words at all
        (b"\x12", 0x1200),  # odd byte is the HIGH half: 0x12<<8 | 0x00
        (b"\x12\x34", 0x1234),  # one word
        (b"\x12\x34\x56", 0x4434),  # 0x1234 ^ 0x5600 = 0x4434
        (b"\x12\x34\x56\x78", 0x444C),  # 0x1234 ^ 0x5678 = 0x444c
        (b"\xff\xff\xff\xff", 0x0000),  # a word XORed with itself vanishes
        (b"\x00\xff", 0x00FF),  # leading zero digits must survive formatting
        (b"AB", 0x4142),  # ASCII text, one word
        (b"ABC", 0x0242),  # 0x4142 ^ 0x4300
    ],
)
def test_known_vectors(data, expected):
    assert xor16(data) == expected


def test_odd_length_pads_low_byte_not_high_byte():
    # If the padding went on the wrong side, b"\x01" would give 0x0001.
    assert xor16(b"\x01") == 0x0100
    assert xor16(b"\x00\x00\x01") == 0x0100


def test_accepts_bytearray_and_memoryview():
    data = b"\x12\x34\x56"
    assert xor16(bytearray(data)) == xor16(memoryview(data)) == 0x4434


def test_matches_naive_implementation_at_every_small_length_and_the_kib_edges():
    # Each length folds differently (odd/even word counts at each halving).
    for length in [*range(0, 40), 1023, 1024, 1025, 4097]:
        rng = random.Random(length)
        data = bytes(rng.getrandbits(8) for _ in range(length))
        assert xor16(data) == naive_xor16(data), length


def test_matches_naive_on_many_random_inputs():
    rng = random.Random(0x384A)
    for _ in range(300):
        data = os.urandom(rng.randrange(0, 600))
        assert xor16(data) == naive_xor16(data), data.hex()


@pytest.mark.parametrize("extra", [0, 1])
def test_one_mebibyte_even_and_odd(extra):
    data = os.urandom(1024 * 1024 + extra)
    assert xor16(data) == naive_xor16(data)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0x384A, "384a"), (0x00FF, "00ff"), (0, "0000"), (0xFFFF, "ffff"), (0x553F, "553f")],
)
def test_format_checksum(value, text):
    # "384a" and "553f" are the ML302 manual's example outputs.
    assert format_checksum(value) == text
    assert format_checksum(value, pad=False) == text.lstrip("0").rjust(1, "0")


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_format_checksum_rejects_out_of_range(bad):
    with pytest.raises(ValueError):
        format_checksum(bad)
