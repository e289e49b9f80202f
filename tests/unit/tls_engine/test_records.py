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


def test_dtls_fragments_out_of_order_and_retransmitted():
    body = cert_body(b"C" * 2500)
    message_seq = 1
    frags = [dtls_fragment(11, body, message_seq, off, min(1000, len(body) - off))
             for off in range(0, len(body), 1000)]
    sniffer = HandshakeSniffer(dtls=True)
    got = []
    for frag in (frags[2], frags[0], frags[0], frags[1]):
        msgs, _ = sniffer.feed(dtls_record(22, frag))
        got += msgs
    assert len(got) == 1 and parse_certificate_list(got[0].body) == [b"C" * 2500]
    msgs, _ = sniffer.feed(dtls_record(22, frags[0]) + dtls_record(22, frags[1]) + dtls_record(22, frags[2]))
    assert msgs == []  # a retransmitted flight is not delivered twice


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
    sniffer = HandshakeSniffer(dtls=True)
    assert sniffer.feed(b"\x00junk" * 20) == ([], [])
    assert sniffer.feed(bytes([21, 3, 3]) + bytes(8) + b"\x00\x02\x01\x00") == ([], [])   # TLS version
    body = cert_body(b"C" * 50)
    forged = dtls_fragment(11, cert_body(b"F" * 80), 1, 0, 20)       # same seq, other length
    assert sniffer.feed(dtls_record(22, forged)) == ([], [])
    msgs, _ = sniffer.feed(dtls_record(22, dtls_fragment(11, body, 1, 0, len(body))))
    assert msgs == [] and not sniffer.broken          # disagrees with the first: not taken
    msgs, _ = sniffer.feed(dtls_record(22, dtls_fragment(11, body, 2, 0, len(body))))
    assert [parse_certificate_list(m.body) for m in msgs] == [[b"C" * 50]]


def test_the_dtls_sniffer_takes_only_what_mbed_tls_takes():
    """Record versions DTLS 1.2/1.0 only, and messages at most MBEDTLS_SSL_MAX_BUFFERED_HS (4)
    ahead of the next expected message_seq: a forged Certificate outside that is dropped by
    Mbed TLS, and must not be checked in place of the server's (test_adversarial_dtls_cert_review)."""
    body = cert_body(b"C" * 30)
    sniffer = HandshakeSniffer(dtls=True)
    odd_version = bytes([22, 0xFE, 0xFC]) + dtls_record(22, dtls_fragment(11, body, 0, 0, len(body)))[3:]
    assert sniffer.feed(odd_version) == ([], [])
    assert sniffer.feed(dtls_record(22, dtls_fragment(11, body, 40, 0, len(body)))) == ([], [])
    assert sniffer.feed(dtls_record(22, dtls_fragment(11, body, 4, 0, len(body)))) == ([], [])   # 0 + 4
    msgs, _ = sniffer.feed(dtls_record(22, dtls_fragment(11, body, 3, 0, len(body))))
    assert len(msgs) == 1                                       # within the window
    for seq in (0, 1, 2):
        sniffer.feed(dtls_record(22, dtls_fragment(2, b"h", seq, 0, 1)))
    msgs, _ = sniffer.feed(dtls_record(22, dtls_fragment(11, body, 7, 0, len(body))))
    assert len(msgs) == 1                                       # next is 4 now: 7 is in
