"""The 16-bit XOR checksum that both emulated modules print after a transfer.

The ML302 manual (AT+QSECWRITE, section 2.2) and Quectel's FILE manuals
(AT+QFUPL / AT+QFDWL) define the same checksum: the data is taken as
big-endian 16-bit words, all words are XORed together, and an odd trailing
byte counts as the high byte of a last word whose low byte is 0x00:

    checksum = (d[0]<<8 | d[1]) ^ (d[2]<<8 | d[3]) ^ ... ^ (d[n-1]<<8 | 0x00)

The ML302 prints it as four lowercase hex digits ("+QSECWRITE: 1388,384a"; its manual
shows no value below 0x1000, so the padding is a guess); Quectel's AT+QFUPL / AT+QFDWL
print it without leading zeros (a real BG96 log: "+QFUPL: 1675,372", next to
"+QFUPL: 1188,2d13" -- WIZnet's wiznet-iot-shield-mbed-kr AWS guide).
"""

from __future__ import annotations

__all__ = ["xor16", "format_checksum"]

_WORD_BITS = 16
_WORD_MASK = 0xFFFF


def xor16(data: bytes | bytearray | memoryview) -> int:
    """Return the modules' XOR-of-big-endian-words checksum of ``data``."""
    length = len(data)
    if length == 0:
        return 0
    # One big integer holds every word in order; XOR is position-independent,
    # so we can fold it in halves with C-speed bigint operations instead of a
    # per-word Python loop (about 20 folds for 1 MiB).
    value = int.from_bytes(data, "big")
    words = (length + 1) // 2
    if length % 2:
        # Odd length: the last byte is the high half of a word padded with 0x00.
        value <<= 8
    while words > 1:
        low_words = words // 2
        low_bits = low_words * _WORD_BITS
        # high has (words - low_words) words, low has low_words; both are
        # aligned on the least significant word, so XORing them keeps the
        # XOR-of-all-words invariant while halving the number of words.
        value = (value >> low_bits) ^ (value & ((1 << low_bits) - 1))
        words -= low_words
    return value & _WORD_MASK


def format_checksum(value: int, pad: bool = True) -> str:
    """Lowercase hex: four digits ("00ff", the ML302's AT+QSECWRITE / QSECREAD), or with
    pad=False no leading zeros ("ff", Quectel's AT+QFUPL / AT+QFDWL)."""
    if not 0 <= value <= _WORD_MASK:
        raise ValueError(f"checksum out of 16-bit range: {value!r}")
    return f"{value:04x}" if pad else f"{value:x}"
