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
    def __init__(self, dtls: bool, dtls_versions: tuple[bytes, ...] | None = None) -> None:
        """dtls_versions: the record versions Mbed TLS takes (those up to the configured
        maximum: dtls_record_versions()); default both."""
        self.dtls = dtls
        self._dtls_versions = _DTLS_VERSIONS if dtls_versions is None else dtls_versions
        self.encrypted = False          # TLS: server CCS seen
        self.broken = False             # unparseable input: stop sniffing
        self._pending = bytearray()     # TLS: partial record
        self._hs_stream = bytearray()   # TLS: handshake bytes not yet a full message
        # DTLS, as Mbed TLS takes handshake messages: in message_seq order from _dtls_next on,
        # those ahead (up to _DTLS_MAX_BUFFERED_HS) reassembled (_dtls_msgs) or complete
        # (_dtls_ready) and held until their turn, all of them forgotten at the end of each
        # of the server's flights (mbedtls_ssl_recv_flight_completed); and records only once
        # (its anti-replay window over epoch 0's record numbers, RFC 6347 4.1.2.6).
        self._dtls_msgs: dict[int, tuple[int, int, bytearray, set[tuple[int, int]]]] = {}
        self._dtls_ready: dict[int, HandshakeMessage] = {}
        self._dtls_next = 0             # DTLS: the message_seq Mbed TLS expects next
        self._replay_top = -1           # DTLS: the highest epoch-0 record number taken
        self._replay_window = 0         # and the 64 below it (bit i: top - i taken)
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
            if ctype not in (20, 21, 22, 23) or datagram[pos + 1:pos + 3] not in self._dtls_versions:
                break                 # a version Mbed TLS does not take: the rest of this datagram is dropped
            payload = datagram[pos + DTLS_HEADER:pos + DTLS_HEADER + length]
            number = int.from_bytes(datagram[pos + 5:pos + 11], "big")
            pos += DTLS_HEADER + length
            if len(payload) != length:
                break                 # truncated: the datagram goes (DTLS drops those)
            if epoch != 0:
                continue              # encrypted
            if not 0 < length <= DTLS_MAX_CONTENT:
                break                 # a length Mbed TLS refuses in clear: the datagram goes
            if self._replayed(number):
                continue              # a record number already taken: Mbed TLS skips it
            self._taken(number)
            if ctype == CONTENT_ALERT and length == 2:
                alerts.append(Alert(payload[0], payload[1]))
            elif ctype == CONTENT_HANDSHAKE:
                msgs.extend(self._dtls_fragments(payload))
        return msgs, alerts

    def _replayed(self, number: int) -> bool:
        """mbedtls_ssl_dtls_replay_check: a number at or below the top, already taken or
        more than 63 below it."""
        if number > self._replay_top:
            return False
        bit = self._replay_top - number
        return bit >= 64 or bool(self._replay_window >> bit & 1)

    def _taken(self, number: int) -> None:
        """mbedtls_ssl_dtls_replay_update."""
        if number > self._replay_top:
            shift = number - self._replay_top
            self._replay_window = 1 if shift >= 64 else (self._replay_window << shift | 1) & _WINDOW_MASK
            self._replay_top = number
        else:
            self._replay_window |= 1 << (self._replay_top - number)

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
            if seq < self._dtls_next or seq in self._dtls_ready:
                continue  # retransmission of a message already taken, or complete ahead
            if seq >= self._dtls_next + _DTLS_MAX_BUFFERED_HS:
                continue  # beyond what Mbed TLS buffers ahead: it drops it, so does this
            entry = self._dtls_msgs.setdefault(seq, (msg_type, total, bytearray(total), set()))
            if entry[0] != msg_type or entry[1] != total:
                continue              # disagrees with an earlier fragment (one of them forged)
            entry[2][offset:offset + frag_len] = frag
            entry[3].add((offset, offset + frag_len))
            if _covers(entry[3], total):
                del self._dtls_msgs[seq]
                self._dtls_ready[seq] = HandshakeMessage(msg_type, bytes(entry[2]))
                self._take_ready(out)
        return out

    def _take_ready(self, out: list[HandshakeMessage]) -> None:
        """The complete messages whose turn it is, in order; at the end of one of the
        server's flights (HelloVerifyRequest, ServerHelloDone) what was held for later is
        forgotten, as Mbed TLS frees its buffering then."""
        while self._dtls_next in self._dtls_ready:
            msg = self._dtls_ready.pop(self._dtls_next)
            self._dtls_next += 1
            out.append(msg)
            if msg.msg_type in _FLIGHT_ENDS:
                self._dtls_ready.clear()
                self._dtls_msgs.clear()


# What Mbed TLS takes of a datagram, so that the sniffer sees no message it drops: record
# versions DTLS 1.2 and 1.0 -- fe fe too, which mbedtls_ssl_read_version reads as 1.0 --, and
# handshake messages no further ahead of the next expected message_seq than it buffers
# (MBEDTLS_SSL_MAX_BUFFERED_HS).
_DTLS_VERSIONS = (b"\xfe\xfd", b"\xfe\xfe", b"\xfe\xff")
_DTLS_MAX_BUFFERED_HS = 4
_FLIGHT_ENDS = (3, 14)          # HelloVerifyRequest, ServerHelloDone
_WINDOW_MASK = (1 << 64) - 1
# The most of one datagram Mbed TLS reads (MBEDTLS_SSL_IN_BUFFER_LEN as python-mbedtls 2.10.1
# builds it: 13 + 16384 + 320; probed), and the longest record content it takes before the
# handshake's keys (a longer one fails it with MBEDTLS_ERR_SSL_INVALID_RECORD, or goes with a
# datagram cut short).
DTLS_MAX_DATAGRAM = 16717
DTLS_MAX_CONTENT = 16384


def dtls_record_versions(max_version_is_1_0: bool) -> tuple[bytes, ...]:
    """The record versions Mbed TLS takes: any up to the configured maximum (it checks
    no minimum in the record layer)."""
    return (b"\xfe\xfe", b"\xfe\xff") if max_version_is_1_0 else _DTLS_VERSIONS


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
