"""DER surgery for the certificate-check tests: certificates cryptography will not build (a
version-1 certificate, an algorithm identifier swapped, a TBS signed again).  Elements are read
with the verifier's own reader (tls_engine.verify._tlv) and written with element()."""
from __future__ import annotations

from tls_engine.verify import _tlv


def element(tag: int, contents: bytes) -> bytes:
    """One DER element: tag, definite length, contents."""
    n = len(contents)
    if n < 0x80:
        return bytes([tag, n]) + contents
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + contents


def contents(der: bytes) -> bytes:
    """The contents of the element `der` starts with."""
    return _tlv(der, 0)[1]


def children(data: bytes) -> list[bytes]:
    """The elements (whole: tag, length, contents) one after another in `data`, e.g. a
    SEQUENCE's contents."""
    out, at = [], 0
    while at < len(data):
        _, _, end = _tlv(data, at)
        out.append(data[at:end])
        at = end
    return out
