"""DTLS output framing. The wrapper funnels every datagram Mbed TLS sends into one
byte ring buffer, so datagram boundaries are lost; DTLS records carry their own
length, so the stream is cut back into whole records and packed into datagrams."""
from __future__ import annotations

DTLS_RECORD_HEADER = 13
DATAGRAM_BUDGET = 1400  # below a typical path MTU; one bigger record still goes alone


def pack_datagrams(data: bytes, budget: int = DATAGRAM_BUDGET) -> list[bytes]:
    records = []
    pos = 0
    while pos + DTLS_RECORD_HEADER <= len(data):
        end = pos + DTLS_RECORD_HEADER + int.from_bytes(data[pos + 11:pos + 13], "big")
        records.append(data[pos:end])
        pos = end
    if pos < len(data):
        records.append(data[pos:])  # should not happen; never drop bytes
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > budget:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams
