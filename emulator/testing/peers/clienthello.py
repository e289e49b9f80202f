"""Parse a TLS or DTLS ClientHello from the raw bytes a client sent, before any TLS library
sees them.

The test servers record what the emulator offered (cipher suite ids in order, SNI, ALPN,
versions) from the wire itself: OpenSSL's API only tells what was negotiated, not what was
offered, and we want to check the emulator's AT+QSSLCFG="ciphersuite" / "sni" / "alpn"
settings byte for byte. The engine tests parse what a sans-IO session put out the same way.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HANDSHAKE_RECORD = 22
CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
EXT_SESSION_TICKET = 35
EXT_SUPPORTED_VERSIONS = 43


@dataclass
class ClientHello:
    record_version: int                 # version in the first record header, e.g. 0x0301
    client_version: int                 # legacy_version of the ClientHello, e.g. 0x0303
    session_id: bytes
    cipher_suites: list[int]            # in the client's order, SCSV/GREASE values included
    compression_methods: list[int]
    extensions: list[tuple[int, bytes]] = field(default_factory=list)   # (type, body) in order
    sni: str | None = None
    alpn: list[bytes] | None = None      # None when the extension is absent
    supported_versions: list[int] | None = None
    raw: bytes = b""                     # the handshake message itself (type + length + body)
    cookie: bytes | None = None          # DTLS only

    @property
    def extension_types(self) -> list[int]:
        return [ext_type for ext_type, _ in self.extensions]

    def has_extension(self, ext_type: int) -> bool:
        return ext_type in self.extension_types

    def extension(self, ext_type: int) -> bytes | None:
        """The body of the first extension of that type, None if absent."""
        return next((body for t, body in self.extensions if t == ext_type), None)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("ClientHello truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())

    def done(self) -> bool:
        return self.pos >= len(self.data)


def handshake_message(stream: bytes) -> bytes | None:
    """The first handshake message carried by the TLS records at the start of `stream`.

    Returns None while more bytes are needed; raises ValueError if the stream does not start
    with handshake records. A ClientHello may span several records, so fragments are joined.
    """
    payload, pos = b"", 0
    while True:
        if len(payload) >= 4:
            length = int.from_bytes(payload[1:4], "big")
            if len(payload) >= 4 + length:
                return payload[:4 + length]
        if len(stream) < pos + 5:
            return None
        content_type, _version, length = struct.unpack(">BHH", stream[pos:pos + 5])
        if content_type != HANDSHAKE_RECORD:
            raise ValueError(f"not a TLS handshake record (content type {content_type})")
        if len(stream) < pos + 5 + length:
            return None
        payload += stream[pos + 5:pos + 5 + length]
        pos += 5 + length


def dtls_handshake_message(datagram: bytes) -> bytes | None:
    """The first handshake message in a DTLS datagram, as a TLS-style message (type +
    length + body: the DTLS message_seq and fragment fields dropped, fragments joined).

    Returns None if the datagram holds only part of it."""
    body, total, msg_type, pos = b"", None, None, 0
    while len(datagram) >= pos + 13:
        content_type = datagram[pos]
        length = int.from_bytes(datagram[pos + 11:pos + 13], "big")
        record = datagram[pos + 13:pos + 13 + length]
        pos += 13 + length
        if content_type != HANDSHAKE_RECORD:
            raise ValueError(f"not a DTLS handshake record (content type {content_type})")
        if len(record) < 12:
            raise ValueError("DTLS handshake fragment truncated")
        msg_type, total = record[0], int.from_bytes(record[1:4], "big")
        offset = int.from_bytes(record[6:9], "big")
        fragment = record[12:12 + int.from_bytes(record[9:12], "big")]
        if offset == len(body):
            body += fragment
        if len(body) >= total:
            return bytes([msg_type]) + total.to_bytes(3, "big") + body[:total]
    return None


def parse_client_hello(stream: bytes, dtls: bool = False) -> ClientHello | None:
    """Parse the ClientHello at the start of the raw client->server byte stream (or of a
    DTLS datagram); None while incomplete."""
    message = dtls_handshake_message(stream) if dtls else handshake_message(stream)
    if message is None:
        return None
    if message[0] != CLIENT_HELLO:
        raise ValueError(f"first handshake message is type {message[0]}, not ClientHello")
    r = _Reader(message[4:])
    client_version = r.u16()
    r.take(32)                                         # random
    session_id = r.vec8()
    cookie = r.vec8() if dtls else None
    suites = r.vec16()
    hello = ClientHello(
        record_version=struct.unpack(">H", stream[1:3])[0], client_version=client_version,
        session_id=session_id,
        cipher_suites=[int.from_bytes(suites[i:i + 2], "big") for i in range(0, len(suites), 2)],
        compression_methods=list(r.vec8()), raw=message, cookie=cookie)
    if r.done():
        return hello                                   # TLS 1.0 clients may omit extensions
    extensions = _Reader(r.vec16())
    while not extensions.done():
        ext_type, body = extensions.u16(), extensions.vec16()
        hello.extensions.append((ext_type, body))
        _decode_extension(hello, ext_type, body)
    return hello


def _decode_extension(hello: ClientHello, ext_type: int, body: bytes) -> None:
    if ext_type == EXT_SERVER_NAME:
        names = _Reader(_Reader(body).vec16())
        while not names.done():
            name_type, name = names.u8(), names.vec16()
            if name_type == 0:                         # host_name
                hello.sni = name.decode("ascii", "replace")
    elif ext_type == EXT_ALPN:
        protocols = _Reader(_Reader(body).vec16())
        hello.alpn = []
        while not protocols.done():
            hello.alpn.append(protocols.vec8())
    elif ext_type == EXT_SUPPORTED_VERSIONS:
        versions = _Reader(body).vec8()
        hello.supported_versions = [int.from_bytes(versions[i:i + 2], "big")
                                    for i in range(0, len(versions), 2)]
