"""The clear-text handshake sniffer, fed byte patterns a real network produces."""
from __future__ import annotations

from tls_engine.records import HandshakeSniffer, parse_certificate_list


def tls_record(ctype: int, payload: bytes) -> bytes:
    return bytes([ctype, 3, 3]) + len(payload).to_bytes(2, "big") + payload


def hs(msg_type: int, body: bytes) -> bytes:
    return bytes([msg_type]) + len(body).to_bytes(3, "big") + body


def cert_body(*ders: bytes) -> bytes:
    entries = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    return len(entries).to_bytes(3, "big") + entries


def dtls_record(ctype: int, payload: bytes, epoch: int = 0, seq: int = 0) -> bytes:
    return (bytes([ctype, 0xFE, 0xFD]) + epoch.to_bytes(2, "big") + seq.to_bytes(6, "big")
            + len(payload).to_bytes(2, "big") + payload)


def dtls_fragment(msg_type: int, body: bytes, msg_seq: int, offset: int, length: int) -> bytes:
    return (bytes([msg_type]) + len(body).to_bytes(3, "big") + msg_seq.to_bytes(2, "big")
            + offset.to_bytes(3, "big") + length.to_bytes(3, "big") + body[offset:offset + length])


def test_certificate_split_across_records_and_reads():
    body = cert_body(b"L" * 3000, b"I" * 2000)
    message = hs(2, b"\x03\x03" + b"r" * 40) + hs(11, body) + hs(14, b"")
    records = tls_record(22, message[:1000]) + tls_record(22, message[1000:4000]) + tls_record(22, message[4000:])
    sniffer = HandshakeSniffer(dtls=False)
    got = []
    for i in range(0, len(records), 7):  # 7-byte reads: headers split too
        msgs, _ = sniffer.feed(records[i:i + 7])
        got += msgs
    assert [m.msg_type for m in got] == [2, 11, 14]
    assert parse_certificate_list(got[1].body) == [b"L" * 3000, b"I" * 2000]


def test_stops_after_change_cipher_spec_and_reports_clear_alerts():
    sniffer = HandshakeSniffer(dtls=False)
    msgs, alerts = sniffer.feed(tls_record(21, b"\x02\x28"))
    assert alerts[0].level == 2 and alerts[0].description == 40
    sniffer.feed(tls_record(20, b"\x01"))
    msgs, alerts = sniffer.feed(tls_record(22, hs(20, b"x" * 12)) + tls_record(21, b"\x02\x14"))
    assert msgs == [] and alerts == []  # encrypted from here on


class Numbered:
    """DTLS records with fresh record numbers (the sender's sequence_number), as a real
    server's are: Mbed TLS takes each number once (anti-replay)."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self, ctype: int, payload: bytes, epoch: int = 0) -> bytes:
        self.number += 1
        return dtls_record(ctype, payload, epoch, self.number)


def test_dtls_fragments_out_of_order_and_retransmitted():
    body = cert_body(b"C" * 2500)
    frags = [dtls_fragment(11, body, 0, off, min(1000, len(body) - off))
             for off in range(0, len(body), 1000)]
    sniffer, record = HandshakeSniffer(dtls=True), Numbered()
    got = []
    for frag in (frags[2], frags[0], frags[0], frags[1]):
        msgs, _ = sniffer.feed(record(22, frag))
        got += msgs
    assert len(got) == 1 and parse_certificate_list(got[0].body) == [b"C" * 2500]
    msgs, _ = sniffer.feed(record(22, frags[0]) + record(22, frags[1]) + record(22, frags[2]))
    assert msgs == []  # a retransmitted flight is not delivered twice


def test_dtls_messages_are_taken_in_message_seq_order():
    """Mbed TLS handles message 1 after message 0, however they arrive: one ahead is held
    (MBEDTLS_SSL_MAX_BUFFERED_HS) until its turn."""
    sniffer, record = HandshakeSniffer(dtls=True), Numbered()
    cert = dtls_fragment(11, cert_body(b"C" * 40), 1, 0, 46)
    assert sniffer.feed(record(22, cert)) == ([], [])
    msgs, _ = sniffer.feed(record(22, dtls_fragment(2, b"hello", 0, 0, 5)))
    assert [(m.msg_type, m.body) for m in msgs] == [(2, b"hello"), (11, cert_body(b"C" * 40))]


def test_what_was_held_ahead_is_forgotten_at_the_end_of_a_server_flight():
    """A HelloVerifyRequest or ServerHelloDone ends one of the server's flights: Mbed TLS frees
    the messages it held ahead (mbedtls_ssl_recv_flight_completed), so a forged Certificate
    sent before the HelloVerifyRequest is not the one taken -- the server's later one is."""
    for end, ahead in ((3, 2), (14, 4)):
        sniffer, record = HandshakeSniffer(dtls=True), Numbered()
        for seq in range(end == 14 and 3 or 0):      # (ServerHelloDone: messages 0-2 first)
            sniffer.feed(record(22, dtls_fragment(22, b"m", seq, 0, 1)))
        first = 0 if end == 3 else 3
        forged = dtls_fragment(11, cert_body(b"F" * 10), ahead, 0, 16)
        half = dtls_fragment(11, cert_body(b"G" * 10), ahead + 1, 0, 8)
        assert sniffer.feed(record(22, forged) + record(22, half)) == ([], [])
        msgs, _ = sniffer.feed(record(22, dtls_fragment(end, b"", first, 0, 0)))
        assert [m.msg_type for m in msgs] == [end], (end, msgs)
        for seq in range(first + 1, ahead):
            sniffer.feed(record(22, dtls_fragment(2, b"h", seq, 0, 1)))
        real = dtls_fragment(11, cert_body(b"R" * 10), ahead, 0, 16)
        msgs, _ = sniffer.feed(record(22, real))
        assert [m.body for m in msgs] == [cert_body(b"R" * 10)], end


def test_a_record_number_already_taken_is_skipped():
    """Anti-replay (RFC 6347 4.1.2.6, on in Mbed TLS's client): a number taken before, or more
    than 63 below the highest, is skipped -- the record only; the next in the datagram is read."""
    sniffer = HandshakeSniffer(dtls=True)
    cert = dtls_fragment(11, cert_body(b"C" * 10), 0, 0, 16)
    other = dtls_fragment(22, b"x", 0, 0, 1)
    assert sniffer.feed(dtls_record(22, other, seq=40)[:-1]) == ([], [])      # truncated: not taken
    assert sniffer.feed(dtls_record(22, dtls_fragment(0, b"", 30, 0, 0), seq=40)) == ([], [])
    assert sniffer.feed(dtls_record(22, other, seq=40)) == ([], [])          # 40 again
    assert sniffer.feed(dtls_record(22, other, seq=200)) != ([], [])         # (taken: message 0)
    sniffer = HandshakeSniffer(dtls=True)
    sniffer.feed(dtls_record(22, dtls_fragment(0, b"", 30, 0, 0), seq=200))
    assert sniffer.feed(dtls_record(22, cert, seq=136)) == ([], [])          # 64 below 200
    msgs, _ = sniffer.feed(dtls_record(22, cert, seq=200) + dtls_record(22, cert, seq=137))
    assert [m.msg_type for m in msgs] == [11]                               # 200 skipped, 137 read


def test_dtls_record_versions_and_lengths_mbed_tls_refuses_are_dropped():
    """Configured for DTLS 1.0 only, Mbed TLS drops DTLS 1.2 records (a version above its
    maximum); a clear record longer than 16384 bytes ends its datagram."""
    from tls_engine.records import dtls_record_versions

    cert = dtls_fragment(11, cert_body(b"C" * 10), 0, 0, 16)
    sniffer = HandshakeSniffer(dtls=True, dtls_versions=dtls_record_versions(True))
    assert sniffer.feed(dtls_record(22, cert, seq=1)) == ([], [])            # fe fd
    msgs, _ = sniffer.feed(bytes([22, 0xFE, 0xFF]) + dtls_record(22, cert, seq=2)[3:])
    assert [m.msg_type for m in msgs] == [11]
    sniffer = HandshakeSniffer(dtls=True, dtls_versions=dtls_record_versions(True))
    msgs, _ = sniffer.feed(bytes([22, 0xFE, 0xFE]) + dtls_record(22, cert, seq=2)[3:])
    assert [m.msg_type for m in msgs] == [11]                                 # fe fe: 1.0 to Mbed TLS
    sniffer = HandshakeSniffer(dtls=True)
    filler = dtls_fragment(0, bytes(16385 - 12 - 16), 3, 0, 16385 - 12 - 16)
    big = dtls_record(22, cert + filler, seq=1)
    assert sniffer.feed(big + dtls_record(22, cert, seq=2)) == ([], [])      # the whole datagram
    msgs, _ = sniffer.feed(dtls_record(22, cert, seq=3))
    assert [m.msg_type for m in msgs] == [11]


def test_dtls_epoch1_records_are_ignored():
    sniffer = HandshakeSniffer(dtls=True)
    msgs, _ = sniffer.feed(dtls_record(22, dtls_fragment(11, cert_body(b"x"), 1, 0, 7), epoch=1))
    assert msgs == []


def test_garbage_stops_sniffing_without_raising():
    sniffer = HandshakeSniffer(dtls=False)
    assert sniffer.feed(b"HTTP/1.1 400 Bad Request\r\n\r\n") == ([], [])
    assert sniffer.broken


def test_a_junk_or_inconsistent_datagram_is_dropped_and_the_next_ones_still_read():
    """Anyone can send the modem a datagram (RFC 6347 4.1.2.7: invalid records are dropped
    silently): one junk datagram used to stop DTLS sniffing for good, so the real
    Certificate was never checked and a verified open failed (test_adversarial_dtls_paths)."""
    sniffer, record = HandshakeSniffer(dtls=True), Numbered()
    assert sniffer.feed(b"\x00junk" * 20) == ([], [])
    assert sniffer.feed(bytes([21, 3, 3]) + bytes(8) + b"\x00\x02\x01\x00") == ([], [])   # TLS version
    body = cert_body(b"C" * 50)
    msgs, _ = sniffer.feed(record(22, dtls_fragment(11, body, 0, 0, len(body))))
    assert [parse_certificate_list(m.body) for m in msgs] == [[b"C" * 50]]
    forged = dtls_fragment(11, cert_body(b"F" * 80), 1, 0, 20)       # same seq, other length
    assert sniffer.feed(record(22, forged)) == ([], [])
    msgs, _ = sniffer.feed(record(22, dtls_fragment(11, body, 1, 0, len(body))))
    assert msgs == [] and not sniffer.broken          # disagrees with the first: not taken


def test_the_dtls_sniffer_takes_only_what_mbed_tls_takes():
    """Record versions DTLS 1.2/1.0 only, and messages at most MBEDTLS_SSL_MAX_BUFFERED_HS (4)
    ahead of the next expected message_seq: a forged Certificate outside that is dropped by
    Mbed TLS, and must not be checked in place of the server's (test_adversarial_dtls_cert_review)."""
    body = cert_body(b"C" * 30)
    sniffer, record = HandshakeSniffer(dtls=True), Numbered()
    odd_version = bytes([22, 0xFE, 0xFC]) + record(22, dtls_fragment(11, body, 0, 0, len(body)))[3:]
    assert sniffer.feed(odd_version) == ([], [])
    assert sniffer.feed(record(22, dtls_fragment(11, body, 40, 0, len(body)))) == ([], [])
    assert sniffer.feed(record(22, dtls_fragment(11, body, 4, 0, len(body)))) == ([], [])   # 0 + 4
    assert sniffer.feed(record(22, dtls_fragment(11, body, 3, 0, len(body)))) == ([], [])   # held
    got = []
    for seq in (0, 1, 2):
        got += sniffer.feed(record(22, dtls_fragment(2, b"h", seq, 0, 1)))[0]
    assert [m.msg_type for m in got] == [2, 2, 2, 11]           # 3 was within the window
    assert sniffer.feed(record(22, dtls_fragment(11, body, 8, 0, len(body)))) == ([], [])   # 4 + 4
    assert sniffer.feed(record(22, dtls_fragment(11, body, 7, 0, len(body)))) == ([], [])   # held
    got = []
    for seq in (4, 5, 6):
        got += sniffer.feed(record(22, dtls_fragment(2, b"h", seq, 0, 1)))[0]
    assert [m.msg_type for m in got] == [2, 2, 2, 11]           # next was 4: 7 was in
