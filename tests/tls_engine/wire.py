"""Just enough ClientHello parsing for tests to see which extensions went out."""
from __future__ import annotations


def client_hello_extensions(record: bytes, dtls: bool = False) -> dict[int, bytes]:
    """Extension type -> data, from a flight whose first record holds the ClientHello."""
    rec_header, hs_header = (13, 12) if dtls else (5, 4)
    assert record[0] == 22, "not a handshake record"
    body = record[rec_header + hs_header:]
    assert record[rec_header] == 1, "not a ClientHello"
    pos = 2 + 32                                   # client_version, random
    pos += 1 + body[pos]                           # session_id
    if dtls:
        pos += 1 + body[pos]                       # cookie
    pos += 2 + int.from_bytes(body[pos:pos + 2], "big")  # cipher_suites
    pos += 1 + body[pos]                           # compression_methods
    end = pos + 2 + int.from_bytes(body[pos:pos + 2], "big")
    pos += 2
    extensions = {}
    while pos < end:
        ext_type = int.from_bytes(body[pos:pos + 2], "big")
        length = int.from_bytes(body[pos + 2:pos + 4], "big")
        extensions[ext_type] = body[pos + 4:pos + 4 + length]
        pos += 4 + length
    return extensions


def client_hello_suites(record: bytes, dtls: bool = False) -> list[int]:
    rec_header, hs_header = (13, 12) if dtls else (5, 4)
    body = record[rec_header + hs_header:]
    pos = 2 + 32
    pos += 1 + body[pos]
    if dtls:
        pos += 1 + body[pos]
    length = int.from_bytes(body[pos:pos + 2], "big")
    raw = body[pos + 2:pos + 2 + length]
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
