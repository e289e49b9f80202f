"""DTLS 1.2 on the wire (RFC 6347 4.1 records, 4.2.2 handshake fragments), by hand: for tests
that forge, damage or look into the datagrams between the emulator and a DTLS server
(through a UdpMiddlebox, or from a hostile UDP server).

Builders: record() puts a payload in a record header; fragment() / handshake() make a
handshake message (a fragment of one, or the whole); hello_verify_request() a whole
HelloVerifyRequest datagram; cert_body() / certificate_message() a Certificate message from
DER / PEM certificates (der() converts).  Nothing here encrypts: what it builds is epoch-0
clear text, which is what an attacker without the keys can send.

Parser: records() splits a datagram into its records' headers and payloads (it does not
decrypt); is_client_hello() tells the client's first flight.

    forged = record(CT_HANDSHAKE, certificate_message(pki.server.cert_pem, msg_seq=40), seq=20)
    [r.type for r in records(datagram)]    # e.g. [CT_HANDSHAKE, CT_CCS, CT_HANDSHAKE]
"""
from __future__ import annotations

from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APP = 20, 21, 22, 23     # record content types
DTLS12 = b"\xfe\xfd"                # record / protocol versions
DTLS10 = b"\xfe\xff"
RECORD_HEADER = 13                  # type(1) version(2) epoch(2) sequence_number(6) length(2)


class Record(NamedTuple):
    type: int           # content type (CT_*)
    epoch: int
    seq: int            # the record's sequence_number (48 bits)
    payload: bytes      # as far as the datagram has it (a truncated record's is short)


def records(datagram: bytes, *, whole: bool = False) -> list[Record]:
    """The DTLS records of a datagram, in order; a tail shorter than a header is skipped.

    whole=True: the datagram must be nothing but whole records (what one well-behaved peer
    sends), else AssertionError."""
    out, pos = [], 0
    while pos + RECORD_HEADER <= len(datagram):
        length = int.from_bytes(datagram[pos + 11:pos + 13], "big")
        out.append(Record(datagram[pos], int.from_bytes(datagram[pos + 3:pos + 5], "big"),
                          int.from_bytes(datagram[pos + 5:pos + 11], "big"),
                          datagram[pos + RECORD_HEADER:pos + RECORD_HEADER + length]))
        pos += RECORD_HEADER + length
    if whole and pos != len(datagram):
        raise AssertionError(f"a datagram that is not whole DTLS records: {datagram[:40].hex()}")
    return out


def is_client_hello(d: bytes) -> bool:
    """A datagram starting with a handshake record that holds a ClientHello (type 1)."""
    return len(d) > 25 and d[0] == CT_HANDSHAKE and d[13] == 1


def record(ctype: int, payload: bytes, *, epoch: int = 0, seq: int = 0, version: bytes = DTLS12) -> bytes:
    """One record: the header (with the payload's length), then the payload as it is."""
    return bytes([ctype]) + version + epoch.to_bytes(2, "big") + seq.to_bytes(6, "big") + \
        len(payload).to_bytes(2, "big") + payload


def fragment(msg_type: int, body: bytes, msg_seq: int, offset: int, length: int) -> bytes:
    """The fragment body[offset:offset + length] of handshake message msg_seq (its header
    says the whole message's length, len(body))."""
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + msg_seq.to_bytes(2, "big") + \
        offset.to_bytes(3, "big") + length.to_bytes(3, "big") + body[offset:offset + length]


def handshake(msg_type: int, body: bytes, msg_seq: int) -> bytes:
    """A whole handshake message: one fragment from offset 0 that carries all of body."""
    return fragment(msg_type, body, msg_seq, 0, len(body))


def hello_verify_request(cookie: bytes, msg_seq: int = 0, rec_seq: int = 0) -> bytes:
    """A HelloVerifyRequest datagram asking for `cookie`, in a DTLS 1.0 record (RFC 6347
    4.2.1: the server uses that version there, whatever it negotiates)."""
    body = DTLS12 + bytes([len(cookie)]) + cookie
    return record(CT_HANDSHAKE, handshake(3, body, msg_seq), seq=rec_seq, version=DTLS10)


def der(pem: bytes) -> bytes:
    """The DER form of a PEM certificate (what a Certificate message carries)."""
    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


def cert_body(*ders: bytes) -> bytes:
    """A Certificate message's body: the 24-bit length-prefixed list of the entries, each
    24-bit length-prefixed (DER certificates, or any bytes a forger puts there)."""
    chain = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return len(chain).to_bytes(3, "big") + chain


def certificate_message(*pems: bytes, msg_seq: int) -> bytes:
    """A whole Certificate handshake message (type 11) carrying the PEM certificates."""
    return handshake(11, cert_body(*map(der, pems)), msg_seq)
