"""Read-only sniffer of the server's clear-text handshake.

The engine verifies the server certificate itself (modem clock, relax flags), so it
needs the whole chain, while Mbed TLS only exposes the leaf. In TLS 1.2 / DTLS the
Certificate message travels unencrypted, so the sniffer parses inbound bytes BEFORE
they are fed to Mbed TLS and hands out complete handshake messages and alerts.

It copes with records split across reads, handshake messages split across records
(TLS) and fragmented / retransmitted handshake messages (DTLS: 13-byte record header,
12-byte handshake header with message_seq / fragment_offset). It stops looking at
a direction's handshake bytes once the server's ChangeCipherSpec has been seen (TLS)
or for records of epoch > 0 (DTLS): from there on everything is encrypted.
"""
from __future__ import annotations

from dataclasses import dataclass

CONTENT_CHANGE_CIPHER_SPEC = 20
CONTENT_ALERT = 21
CONTENT_HANDSHAKE = 22

HS_SERVER_HELLO = 2
HS_CERTIFICATE = 11

TLS_HEADER = 5
DTLS_HEADER = 13
DTLS_HS_HEADER = 12
_MAX_BUFFERED = 1 << 20  # a sane upper bound for a handshake message we reassemble


@dataclass
class HandshakeMessage:
    msg_type: int
    body: bytes


@dataclass
class Alert:
    level: int
    description: int


class SnifferError(Exception):
    """The byte stream is not TLS (Mbed TLS will say the same; we just stop looking)."""


class HandshakeSniffer:
    def __init__(self, dtls: bool) -> None:
        self.dtls = dtls
        self.encrypted = False          # TLS: server CCS seen
        self.broken = False             # unparseable input: stop sniffing
        self._pending = bytearray()     # TLS: partial record
        self._hs_stream = bytearray()   # TLS: handshake bytes not yet a full message
        self._dtls_msgs: dict[int, tuple[int, int, bytearray, set[tuple[int, int]]]] = {}
        self._dtls_done: set[int] = set()
        self._dtls_next = 0             # DTLS: the lowest message_seq not yet complete
        self._largest = 0               # TLS: the longest complete handshake message's length
        self.fragmented = False         # TLS: a handshake message continued in a later record

    def feed(self, data: bytes) -> tuple[list[HandshakeMessage], list[Alert]]:
        """Parse inbound bytes; return the handshake messages and alerts completed."""
        if self.broken or not data:
            return [], []
        if self.dtls:
            # Anyone can send the modem a datagram: one that is not DTLS is dropped, as
            # Mbed TLS drops it (RFC 6347 4.1.2.7), and the next ones are still read.
            return self._feed_datagram(bytes(data))
        return self._feed_stream(data)

    def largest_message(self) -> int:
        """The longest handshake message seen so far (TLS), counting one still being
        reassembled at the length its header announces."""
        pending = int.from_bytes(self._hs_stream[1:4], "big") if len(self._hs_stream) >= 4 else 0
        return max(self._largest, pending)

    # --- TLS -----------------------------------------------------------------

    def _feed_stream(self, data: bytes) -> tuple[list[HandshakeMessage], list[Alert]]:
        msgs: list[HandshakeMessage] = []
        alerts: list[Alert] = []
        self._pending += data
        try:
            self._parse_records(msgs, alerts)
        except SnifferError:
            # Not TLS from here on: stop looking, but keep what came before the junk (an
            # alert Mbed TLS read and failed on, the ServerHello's version).
            self.broken = True
            self._pending.clear()
        return msgs, alerts

    def _parse_records(self, msgs: list[HandshakeMessage], alerts: list[Alert]) -> None:
        while len(self._pending) >= TLS_HEADER:
            ctype = self._pending[0]
            length = int.from_bytes(self._pending[3:5], "big")
            if ctype not in (20, 21, 22, 23) or self._pending[1] != 3 or length > 18432:
                raise SnifferError("not a TLS record")
            if len(self._pending) < TLS_HEADER + length:
                break
            payload = bytes(self._pending[TLS_HEADER:TLS_HEADER + length])
            del self._pending[:TLS_HEADER + length]
            if self.encrypted:
                continue
            if ctype == CONTENT_CHANGE_CIPHER_SPEC:
                self.encrypted = True
            elif ctype == CONTENT_ALERT and len(payload) == 2:
                alerts.append(Alert(payload[0], payload[1]))
            elif ctype == CONTENT_HANDSHAKE:
                self._hs_stream += payload
                msgs.extend(self._split_tls_handshake())
                if self._hs_stream:     # (the record ended inside a message)
                    self.fragmented = True
        if self.encrypted:
            self._pending.clear()  # nothing more to learn; do not hoard app data

    def _split_tls_handshake(self) -> list[HandshakeMessage]:
        out = []
        while len(self._hs_stream) >= 4:
            length = int.from_bytes(self._hs_stream[1:4], "big")
            if length > _MAX_BUFFERED:
                raise SnifferError("handshake message too large")
            if len(self._hs_stream) < 4 + length:
                break
            out.append(HandshakeMessage(self._hs_stream[0], bytes(self._hs_stream[4:4 + length])))
            self._largest = max(self._largest, length)
            del self._hs_stream[:4 + length]
        return out

    # --- DTLS ----------------------------------------------------------------

    def _feed_datagram(self, datagram: bytes) -> tuple[list[HandshakeMessage], list[Alert]]:
        msgs: list[HandshakeMessage] = []
        alerts: list[Alert] = []
        pos = 0
        while pos + DTLS_HEADER <= len(datagram):
            ctype = datagram[pos]
            epoch = int.from_bytes(datagram[pos + 3:pos + 5], "big")
            length = int.from_bytes(datagram[pos + 11:pos + 13], "big")
            if ctype not in (20, 21, 22, 23) or datagram[pos + 1:pos + 3] not in _DTLS_VERSIONS:
                break                 # not DTLS 1.0/1.2: the rest of this datagram is dropped
            payload = datagram[pos + DTLS_HEADER:pos + DTLS_HEADER + length]
            pos += DTLS_HEADER + length
            if epoch != 0 or len(payload) != length:
                continue  # encrypted, or truncated datagram (DTLS drops those)
            if ctype == CONTENT_ALERT and length == 2:
                alerts.append(Alert(payload[0], payload[1]))
            elif ctype == CONTENT_HANDSHAKE:
                msgs.extend(self._dtls_fragments(payload))
        return msgs, alerts

    def _dtls_fragments(self, payload: bytes) -> list[HandshakeMessage]:
        out = []
        pos = 0
        while pos + DTLS_HS_HEADER <= len(payload):
            msg_type = payload[pos]
            total = int.from_bytes(payload[pos + 1:pos + 4], "big")
            seq = int.from_bytes(payload[pos + 4:pos + 6], "big")
            offset = int.from_bytes(payload[pos + 6:pos + 9], "big")
            frag_len = int.from_bytes(payload[pos + 9:pos + 12], "big")
            frag = payload[pos + DTLS_HS_HEADER:pos + DTLS_HS_HEADER + frag_len]
            pos += DTLS_HS_HEADER + frag_len
            if total > _MAX_BUFFERED or offset + frag_len > total or len(frag) != frag_len:
                break                 # a broken fragment: the rest of this record is dropped
            if seq in self._dtls_done or seq < self._dtls_next:
                continue  # retransmission of a message already delivered
            if seq >= self._dtls_next + _DTLS_MAX_BUFFERED_HS:
                continue  # beyond what Mbed TLS buffers ahead: it drops it, so does this
            if msg_type == 3:  # HelloVerifyRequest: the exchange restarts
                self._dtls_msgs.clear()
            entry = self._dtls_msgs.setdefault(seq, (msg_type, total, bytearray(total), set()))
            if entry[0] != msg_type or entry[1] != total:
                continue              # disagrees with an earlier fragment (one of them forged)
            entry[2][offset:offset + frag_len] = frag
            entry[3].add((offset, offset + frag_len))
            if _covers(entry[3], total):
                del self._dtls_msgs[seq]
                self._dtls_done.add(seq)
                while self._dtls_next in self._dtls_done:
                    self._dtls_next += 1
                out.append(HandshakeMessage(msg_type, bytes(entry[2])))
        return out


# What Mbed TLS takes of a datagram, so that the sniffer sees no message it drops: record
# versions DTLS 1.2 and 1.0, and handshake messages no further ahead of the next expected
# message_seq than it buffers (MBEDTLS_SSL_MAX_BUFFERED_HS).
_DTLS_VERSIONS = (b"\xfe\xfd", b"\xfe\xff")
_DTLS_MAX_BUFFERED_HS = 4


def _covers(ranges: set[tuple[int, int]], total: int) -> bool:
    reached = 0
    for start, end in sorted(ranges):
        if start > reached:
            return False
        reached = max(reached, end)
    return reached >= total


def parse_certificate_list(body: bytes) -> list[bytes]:
    """TLS 1.2 Certificate message body -> DER certificates, leaf first."""
    if len(body) < 3:
        raise ValueError("Certificate message too short")
    total = int.from_bytes(body[:3], "big")
    if total != len(body) - 3:
        raise ValueError("Certificate message length mismatch")
    certs = []
    pos = 3
    while pos < len(body):
        if pos + 3 > len(body):
            raise ValueError("truncated certificate entry")
        length = int.from_bytes(body[pos:pos + 3], "big")
        pos += 3
        if pos + length > len(body):
            raise ValueError("truncated certificate entry")
        certs.append(body[pos:pos + length])
        pos += length
    return certs


# mbedtls_x509_crt_parse_der's error for a signature algorithm it does not know
# (MBEDTLS_ERR_X509_UNKNOWN_SIG_ALG + MBEDTLS_ERR_OID_NOT_FOUND).
_UNKNOWN_SIG_ALG = 0x262E


def outer_tlv(der: bytes) -> bytes:
    """The certificate's outer SEQUENCE alone: Mbed TLS's X.509 parser ignores bytes after it
    (x509_crt_parse_der_core keeps raw = that SEQUENCE), in a CA file's block as in a
    Certificate message's entry."""
    if len(der) < 2 or der[0] != 0x30:
        return der
    length, at = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        length, at = int.from_bytes(der[2:2 + count], "big"), 2 + count
    return der[:at + length]


def chain_mbedtls_keeps(ders: list[bytes]) -> list[bytes]:
    """The entries of a server's Certificate list that Mbed TLS 2.28 keeps as its chain:
    ssl_parse_certificate_chain ignores one whose signature algorithm its parser does not
    know ("maybe a prior certificate was already trusted"), so the next entry is its leaf.
    Any other parse error fails the handshake there; those entries stay, for the checks to
    report.  A list of nothing but such entries leaves none: Mbed TLS then fails its check
    with bad_certificate, as the engine's check of an empty chain does.  An entry it parses is
    kept as it keeps it: its outer SEQUENCE, without bytes after it (outer_tlv)."""
    import mbedtls.x509 as mbx509
    from mbedtls.exceptions import TLSError

    kept = []
    for der in ders:
        try:
            mbx509.CRT.from_DER(der)
        except TLSError as exc:
            if getattr(exc, "err", 0) == _UNKNOWN_SIG_ALG:
                continue
        except ValueError:
            pass
        else:
            der = outer_tlv(der)
        kept.append(der)
    return kept
